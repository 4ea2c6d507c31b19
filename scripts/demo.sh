#!/usr/bin/env bash
# make demo: build the binaries, then run Palisade end to end (see tests/src/demo.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root (it creates a network namespace and attaches an eBPF program)" >&2
    exit 1
fi
cargo build --release --bins -p palisade-blocker -p palisade-sensor -p palisade-tests -p palisade-cli
exec target/release/palisade-demo "$@"
