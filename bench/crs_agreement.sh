#!/usr/bin/env bash
# Agreement of Palisade's CRS engine with libmodsecurity 3 + the same CRS on a whole corpus:
# every request of requests.jsonl through both (ModSecurity in DetectionOnly mode through
# bench/modsec/crs_driver.c, Palisade through sensor/examples/eval_corpus.rs --mode crs), at
# each paranoia level, then bench/crs_compare.py: exact agreement on the set of matched rule ids
# and the anomaly score, and every kind of disagreement.
#
#   bench/crs_agreement.sh                 # PL1 and PL2 on $PALISADE_CORPUS (../shared/corpus)
#   PLS="1 2 3" CRS_DIR=/usr/share/modsecurity-crs bench/crs_agreement.sh
#
# Needs libmodsecurity-dev, modsecurity-crs, gcc, pkg-config (scripts/setup.sh installs them).
# Writes bench/results/crs_agreement.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-${PALISADE_CORPUS:-$ROOT/../shared/corpus}}
CRS_DIR=${CRS_DIR:-/usr/share/modsecurity-crs}
SETUP=${SETUP:-/etc/modsecurity/crs/crs-setup.conf}
PLS=${PLS:-1 2}
OUT=${OUT:-$ROOT/bench/results/crs_agreement.json}
WORK=$(mktemp -d /tmp/palisade-crs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

pkg-config --exists modsecurity || { echo "libmodsecurity-dev missing: run scripts/setup.sh" >&2; exit 1; }
[[ -f $CRS_DIR/rules/REQUEST-901-INITIALIZATION.conf ]] || { echo "no CRS in $CRS_DIR" >&2; exit 1; }
[[ -f $CORPUS/requests.jsonl ]] || { echo "no requests.jsonl in $CORPUS (set CORPUS)" >&2; exit 1; }

gcc -O2 -Wall -o "$WORK/crs_driver" "$ROOT/bench/modsec/crs_driver.c" $(pkg-config --cflags --libs modsecurity)
python3 "$ROOT/bench/modsec/convert.py" "$CORPUS/requests.jsonl" "$WORK/requests.bin" >&2
# EVAL=path skips the build (e.g. while other builds hold cargo's lock)
# shellcheck source=lib/eval_corpus.sh
source "$ROOT/bench/lib/eval_corpus.sh"
eval_corpus_build

echo "{" >"$WORK/summary"
first=1
for pl in $PLS; do
  echo "PL$pl: libmodsecurity" >&2
  "$WORK/crs_driver" -p "$pl" -c "$CRS_DIR/rules" -s "$SETUP" "$WORK/requests.bin" \
    >"$WORK/modsec.$pl.jsonl" 2>"$WORK/modsec.$pl.err"
  echo "PL$pl: palisade" >&2
  "$EVAL" --corpus "$CORPUS" --crs-dir "$CRS_DIR" --paranoia "$pl" --mode crs \
    --verdicts "$WORK/ours.$pl.jsonl" --out "$WORK/eval.$pl.json" >/dev/null
  echo "== PL$pl" >&2
  set +e
  python3 "$ROOT/bench/crs_compare.py" "$WORK/ours.$pl.jsonl" "$WORK/modsec.$pl.jsonl" \
    --requests "$CORPUS/requests.jsonl" --min 0 | tee "$WORK/compare.$pl.txt"
  set -e
  agree=$(grep -m1 -oE '[0-9.]+ ?%' "$WORK/compare.$pl.txt" | tr -d ' %' || echo 0)
  ((first)) || echo "," >>"$WORK/summary"
  first=0
  printf '"pl%s": {"agreement_pct": %s}' "$pl" "${agree:-0}" >>"$WORK/summary"
done
echo "}" >>"$WORK/summary"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/summary" "$OUT"
cat "$OUT"
