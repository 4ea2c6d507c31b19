#!/usr/bin/env bash
# Blocker ingest benchmark: the blocker's ingest rate next to a bare async-nats consumer that
# only acks, on the same pre-filled stream, in the same run; then peak RSS with 10k, 100k and
# 1M distinct clients tracked by the pipeline (one process each), and with 100k blocked.
# Writes bench/results/ingest.json.
#
#   bench/ingest.sh                      200k reports, 3 rounds
#   REPORTS=50000 ROUNDS=1 TRACKED="10000 100000" BLOCKED=10000 bench/ingest.sh     quick run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPORTS="${REPORTS:-200000}"
ROUNDS="${ROUNDS:-3}"
TRACKED="${TRACKED:-10000 100000 1000000}"
BLOCKED="${BLOCKED:-100000}"
OUT="$ROOT/bench/results/ingest.json"
mkdir -p "$ROOT/bench/results"

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }

command -v nats-server >/dev/null || { log "nats-server missing: run scripts/setup.sh"; exit 1; }
BENCH=(cargo bench -q -p palisade-blocker --bench ingest --)
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

log "ingest: $REPORTS reports, $ROUNDS rounds (nats-server on 127.0.0.1:$PORT)"
"${BENCH[@]}" ingest --nats-url "nats://127.0.0.1:$PORT" --reports "$REPORTS" --rounds "$ROUNDS" > "$OUT.ingest.tmp"
for n in $TRACKED; do
    log "rss: $n distinct clients tracked (below threshold)"
    "${BENCH[@]}" rss --clients "$n" --mode tracked > "$OUT.rss-$n.tmp"
done
log "rss: $BLOCKED distinct clients blocked (persisted)"
"${BENCH[@]}" rss --clients "$BLOCKED" --mode blocked > "$OUT.rssb.tmp"

python3 - "$OUT" $TRACKED <<'PY'
import json, sys, platform, os, datetime
out, tracked = sys.argv[1], sys.argv[2:]
res = {
    "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg": os.getloadavg()},
    "ingest": json.load(open(out + ".ingest.tmp")),
    "rss_tracked": [json.load(open(f"{out}.rss-{n}.tmp")) for n in tracked],
    "rss_blocked": json.load(open(out + ".rssb.tmp")),
}
json.dump(res, open(out, "w"), indent=2)
for s in [".ingest.tmp", ".rssb.tmp"] + [f".rss-{n}.tmp" for n in tracked]:
    os.remove(out + s)
print(json.dumps(res, indent=2))
PY
