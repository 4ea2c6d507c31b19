#!/usr/bin/env bash
# Ingest with the `nats` state backend: on one pre-filled stream, per round, a bare async-nats
# consumer that only acks, one blocker on the embedded backend, one on the `nats` backend and
# three `nats` replicas (only the lease holder consumes). Medians per case. Writes
# bench/results/ingest_ha.json.
#
#   bench/ingest_ha.sh                       50k reports, 3 rounds
#   REPORTS=200000 ROUNDS=5 bench/ingest_ha.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPORTS="${REPORTS:-50000}"
ROUNDS="${ROUNDS:-3}"
OUT="$ROOT/bench/results/ingest_ha.json"
mkdir -p "$ROOT/bench/results"

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }

command -v nats-server >/dev/null || { log "nats-server missing: run scripts/setup.sh"; exit 1; }
cargo bench -p palisade-blocker --bench ingest --no-run >&2

STORE="$(mktemp -d /tmp/palisade-bench-nats.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$STORE" >/dev/null 2>&1 &
NATS_PID=$!
cleanup() { kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; rm -rf "$STORE"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

log "ingest ha: $REPORTS reports, $ROUNDS rounds (nats-server on 127.0.0.1:$PORT)"
cargo bench -q -p palisade-blocker --bench ingest -- \
    ha --nats-url "nats://127.0.0.1:$PORT" --reports "$REPORTS" --rounds "$ROUNDS" > "$OUT.tmp"

python3 - "$OUT" "$(nats-server --version)" <<'PY'
import json, sys, platform, os, datetime
out, nats = sys.argv[1], sys.argv[2]
res = {
    "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg": os.getloadavg()},
    "nats_server": nats,
    "ingest_ha": json.load(open(out + ".tmp")),
}
json.dump(res, open(out, "w"), indent=2)
os.remove(out + ".tmp")
print(json.dumps(res, indent=2))
PY
