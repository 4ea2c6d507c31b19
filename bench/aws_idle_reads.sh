#!/usr/bin/env bash
# GetIPSet calls per minute of an idle reconciler (status + entries every second, nothing to
# apply) with 1 and with 5 IP sets, before the read cache (refresh 0: read every time) and after
# (60 s refresh), the four cases at once, against moto behind the test limits proxy.
# Writes bench/results/aws_idle_reads.json. Takes DURATION_SECS (default 60) plus startup.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
# Counting calls needs no optimized build: the dev profile reuses the test build.
cargo bench --profile dev -p palisade-providers --bench aws_idle_reads
