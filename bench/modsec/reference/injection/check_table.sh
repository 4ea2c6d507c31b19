#!/bin/sh
# Compares the SQLi keyword/fingerprint table of src/injection/sqli/data.rs (from libinjectionrs
# 0.1.1, generated from libinjection's sqlparse_data.json) with the one inside
# libmodsecurity 3.0.9 (libinjection 3.9.2). Candidate words: every entry of the crate's table
# plus every upper-case-like string found in libmodsecurity.so.3 (covers C-only entries).
set -e
cd "$(dirname "$0")/.."
sed -n 's/^ *Keyword { word: "\(.*\)", token_type: b.\(.\). },$/\1	\2/p' src/injection/sqli/data.rs \
  | sed 's/\\\\/\\/g' > /tmp/tbl_rs.tsv
{ cut -f1 /tmp/tbl_rs.tsv; strings -n 1 /usr/lib/x86_64-linux-gnu/libmodsecurity.so.3 | grep -E '^[A-Z0-9_$@!%&*+<>=|^~:;.,(){}?\\-]+$'; } \
  | sort -u | ./ref/table_c > /tmp/tbl_c.out
grep '^F' /tmp/tbl_c.out | cut -f2 | sort -u > /tmp/fp_c.txt
awk -F'\t' '$2=="F"{print $1}' /tmp/tbl_rs.tsv | sort -u > /tmp/fp_rs.txt
echo "fingerprints: C $(wc -l < /tmp/fp_c.txt), crate $(wc -l < /tmp/fp_rs.txt), differing:"
diff /tmp/fp_c.txt /tmp/fp_rs.txt | grep '^[<>]' | head -20 || true
grep '^W' /tmp/tbl_c.out | cut -f2,3 | grep -v '	F$' | sort -u > /tmp/w_c.txt
awk -F'\t' '$2!="F"' /tmp/tbl_rs.tsv | sort -u > /tmp/w_rs.txt
echo "words: C $(wc -l < /tmp/w_c.txt), crate $(wc -l < /tmp/w_rs.txt), differing:"
diff /tmp/w_c.txt /tmp/w_rs.txt | grep '^[<>]' | head -40 || true
