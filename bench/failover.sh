#!/usr/bin/env bash
# Failover of the blocker on the nats state backend: three replicas against the AWS emulator
# behind the limits proxy; the lease holder is SIGKILLed ten times mid-stream. Prints the
# median and longest takeover (kill -> another replica answers as holder) and whether the IP
# sets converged to exactly the decided blocks plus foreign entries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -p palisade-blocker --bins
cargo test -p palisade-tests --test failover -- --ignored takeover_time_over_ten_kills --nocapture 2>&1 |
    grep -E '^failover|test result'
