#!/usr/bin/env bash
# Time to block: report published -> address visible in the WAF IP set (GetIPSet), p50/p99, at
# the AWS write budget of 1 UpdateIPSet/s, for 1, 100 and 10,000 new attackers, with the
# UpdateIPSet calls per case next to the naive one-call-per-IP count.
# Writes bench/results/time_to_block.json. Env: CASES (default 1,100,10000), RUNS (default 3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --release -q -p palisade-blocker -p palisade-tests --bins
exec target/release/palisade-time-to-block --cases "${CASES:-1,100,10000}" --runs "${RUNS:-3}" \
    --out bench/results/time_to_block.json
