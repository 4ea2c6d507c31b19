#!/usr/bin/env bash
# Profile-guided build of the sensor: builds an instrumented detector, runs it over training
# traffic written by bench/pgo/training_corpus.py (never the corpus the benchmarks measure),
# merges the profile, then runs the given cargo command with the profile applied.
#
#   scripts/pgo-build.sh cargo deb --profile dist -p palisade-sensor
#   scripts/pgo-build.sh cargo build --profile dist -p palisade-sensor --example eval_corpus
#
# The command runs with CARGO_TARGET_DIR=$PGO_DIR/target (default target/pgo/target), so the
# profile's flags never invalidate the ordinary target directory: the package lands in
# target/pgo/target/debian/, the harness in target/pgo/target/dist/examples/.
#
# The instrumented build uses the `dist` profile, and the command should too: a profile is
# matched to functions as the compiler saw them before optimizing, which depends on how the
# crate was cut into codegen units (a profile taken from a `release` build changed nothing
# measurable in a `dist` build). Both builds take about 6 minutes on 2 cores.
#
# Needs llvm-profdata of rustc's LLVM major version: installed from Debian's `llvm-N` package
# when missing (Debian 12 carries llvm-22 in bookworm-security). PGO_REFRESH=1 retrains even when a
# profile for the current sources exists.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGO_DIR=${PGO_DIR:-$ROOT/target/pgo}
CRS_DIR=${CRS_DIR:-/usr/share/modsecurity-crs}

die() { echo "pgo-build: $*" >&2; exit 1; }
[[ $# -gt 0 ]] || die "usage: scripts/pgo-build.sh CARGO_COMMAND... (see the script's header)"
[[ -d $CRS_DIR/rules ]] || die "no CRS rules in $CRS_DIR (scripts/setup.sh installs Debian's modsecurity-crs; or set CRS_DIR)"

# llvm-profdata must read the raw profiles of the LLVM inside rustc
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[[ -n $major ]] || die "cannot read rustc's LLVM version from 'rustc -vV'"
profdata=$(command -v "llvm-profdata-$major" || true)
[[ -n $profdata ]] || { [[ -x /usr/lib/llvm-$major/bin/llvm-profdata ]] && profdata=/usr/lib/llvm-$major/bin/llvm-profdata; }
if [[ -z $profdata ]]; then
  [[ $(id -u) -eq 0 ]] || die "llvm-profdata $major is missing: install Debian's llvm-$major (as root: apt-get install llvm-$major)"
  echo "pgo-build: installing llvm-$major for llvm-profdata (rustc's LLVM is $major)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "llvm-$major" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q "llvm-$major" >/dev/null; } ||
    die "apt-get install llvm-$major failed: is it in this machine's Debian sources?"
  profdata=/usr/lib/llvm-$major/bin/llvm-profdata
fi

# a profile is for one state of the code: the key hashes what goes into the sensor (its sources
# and harness, the crates of this workspace it links, manifests, lock file), the training
# generator and the compiler; tests and docs leave it alone
paths=(sensor/src sensor/rules sensor/examples sensor/build.rs sensor/Cargo.toml sensor-common wire
  Cargo.toml Cargo.lock bench/pgo)
key=$( {
  (cd "$ROOT" && find "${paths[@]}" -type f -not -path '*/target/*' -print0 | sort -z |
    xargs -0 sha256sum)
  rustc -V
} | sha256sum | cut -c1-16)
merged=$PGO_DIR/sensor-$key.profdata
if [[ ! -s $merged || ${PGO_REFRESH:-0} == 1 ]]; then
  raw=$PGO_DIR/raw
  rm -rf "$raw"
  mkdir -p "$raw"
  echo "pgo-build: 1/3 instrumented build ($PGO_DIR/instrumented)" >&2
  (cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR=$PGO_DIR/instrumented \
    cargo build --profile dist -p palisade-sensor --example eval_corpus >&2)
  # only the training run's profiles: the build scripts above wrote theirs too
  rm -f "$raw"/*.profraw
  echo "pgo-build: 2/3 training run (bench/pgo/training_corpus.py; CRS at PL1 and PL2)" >&2
  python3 "$ROOT/bench/pgo/training_corpus.py" --out "$PGO_DIR/train" >&2
  harness=$PGO_DIR/instrumented/dist/examples/eval_corpus
  "$harness" --corpus "$PGO_DIR/train" --crs-dir "$CRS_DIR" --paranoia 1 --mode combined \
    --out "$PGO_DIR/train/pl1.json" >&2
  "$harness" --corpus "$PGO_DIR/train" --crs-dir "$CRS_DIR" --paranoia 2 --mode crs \
    --out "$PGO_DIR/train/pl2.json" >&2
  compgen -G "$raw/*.profraw" >/dev/null || die "the training run wrote no profile into $raw"
  "$profdata" merge -o "$merged.tmp" "$raw"/*.profraw
  mv "$merged.tmp" "$merged"
fi

echo "pgo-build: 3/3 $* (profile $merged)" >&2
cd "$ROOT"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$merged" CARGO_TARGET_DIR=$PGO_DIR/target "$@"
