#!/bin/sh
# Differential test: random inputs through libmodsecurity 3.0.9 (ref/direct.cc) and through
# this crate (examples/ref_dump.rs); prints the first mismatches per transformation.
#   ref/diff.sh [seed] [inputs per transformation] [max tokens per input]
set -e
cd "$(dirname "$0")/.."
g++ -O1 ref/direct.cc -o target/direct -lmodsecurity
cargo build -q -j1 --offline --example ref_dump
python3 ref/gen.py "${1:-1}" "${2:-2000}" "${3:-14}" > target/diff-in.txt
target/direct < target/diff-in.txt > target/diff-c.txt
target/debug/examples/ref_dump < target/diff-in.txt > target/diff-rs.txt
sed 's/ /\t/' target/diff-in.txt | paste -d'\t' - target/diff-c.txt target/diff-rs.txt |
    awk -F'\t' '{ if ($3 != $4) { bad[$1]++; if (bad[$1] <= 3) print "MISMATCH", $1, "in=" $2, "c=" $3, "rs=" $4 } n[$1]++ }
         END { for (k in n) printf "%-20s %6d inputs %6d mismatches\n", k, n[k], bad[k] + 0 }' | sort
