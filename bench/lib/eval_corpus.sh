# shellcheck shell=bash
# Shared by the CRS benchmarks (detector_vs_modsec.sh, crs_agreement.sh): the eval_corpus
# harness, built unless EVAL names one, and linked to Debian's PCRE2.
#
#   eval_corpus_build      sets EVAL (builds the example with the EVAL_PROFILE profile, release
#                          by default, when EVAL is unset; `pgo`: the `dist` profile guided by
#                          scripts/pgo-build.sh's training run, as `make packages` ships it)
#   pcre2_is_debians BIN   true when BIN loads the system libpcre2-8 (libmodsecurity's)
#
# The pcre2 crate links the system PCRE2 when pkg-config finds libpcre2-dev at its build, and
# otherwise its own bundled copy, a newer PCRE2 (10.43 and later read `{,n}` as a quantifier,
# 10.42 as text). cargo keeps that choice: a target directory whose pcre2-sys was built before
# scripts/setup.sh installed libpcre2-dev goes on linking the bundled copy. The comparison
# with libmodsecurity needs its PCRE2, so a harness built here that links the bundled one is
# rebuilt once pcre2-sys is cleaned.

pcre2_is_debians() { ldd "$1" 2>/dev/null | grep -q 'libpcre2-8\.so'; }

eval_corpus_build() {
  if [[ -n ${EVAL:-} ]]; then
    pcre2_is_debians "$EVAL" ||
      echo "warning: $EVAL links a bundled PCRE2, not libmodsecurity's (see bench/lib/eval_corpus.sh)" >&2
    return 0
  fi
  local profile=${EVAL_PROFILE:-release} build=() target=$ROOT/target
  if [[ $profile == pgo ]]; then
    # the `dist` profile with the training run's profile applied (scripts/pgo-build.sh), as
    # `make packages` builds the sensor
    profile=dist
    build=("$ROOT/scripts/pgo-build.sh")
    target=${PGO_DIR:-$ROOT/target/pgo}/target
  fi
  (cd "$ROOT" && "${build[@]}" cargo build --profile "$profile" -p palisade-sensor --example eval_corpus >&2)
  EVAL=$target/$profile/examples/eval_corpus
  if ! pcre2_is_debians "$EVAL"; then
    echo "eval_corpus links pcre2-sys's bundled PCRE2: rebuilding it against Debian's" >&2
    (cd "$ROOT" && CARGO_TARGET_DIR=$target cargo clean --profile "$profile" -p pcre2-sys >&2 &&
      "${build[@]}" cargo build --profile "$profile" -p palisade-sensor --example eval_corpus >&2)
    pcre2_is_debians "$EVAL" || { echo "eval_corpus still links a bundled PCRE2: is libpcre2-dev installed?" >&2; exit 1; }
  fi
}
