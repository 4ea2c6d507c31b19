#!/usr/bin/env bash
# UpdateIPSet calls per 10,000 new attackers (coalesced vs naive one-call-per-IP) and
# apply-to-visible latency at 1 write/s, against moto behind the test fault proxy.
# Writes bench/results/aws_calls.json. Takes about a minute (the naive sample runs at 1 write/s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo bench -p palisade-providers --bench aws_calls
