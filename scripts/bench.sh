#!/usr/bin/env bash
# make bench: every benchmark in bench/, one after another; each writes bench/results/*.json.
# The peer comparisons need extra packages: scripts/bench-deps.sh installs them.
# BENCH="ingest time_to_block" picks a subset.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
all="aws_calls time_to_block ingest sensor_overhead mirror_overhead sensor_flows log_mode detector_vs_modsec"
for name in ${BENCH:-$all}; do
    case "$name" in
        log_mode|detector_vs_modsec|sensor_overhead) scripts/bench-deps.sh ;;
    esac
    echo "=== bench/$name.sh" >&2
    "bench/$name.sh"
done
echo "results in bench/results/; the table is in BENCHMARKS.md" >&2
