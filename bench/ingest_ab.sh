#!/usr/bin/env bash
# Ingest before/after: the ingest benchmark of an earlier revision and of the working tree, each
# on a fresh nats-server, alternating, in one run. Shows what a change did to the blocker/bare
# ratio with the machine's drift shared by both sides. Writes bench/results/ingest_ab.json.
#
#   bench/ingest_ab.sh 7abd5e4              3 alternations of 3 rounds, 200k reports
#   PAIRS=5 REPORTS=100000 bench/ingest_ab.sh HEAD~3
#
# The earlier revision is built in a git worktree with its own target directory,
# target/ingest-ab-base/ (kept between runs, so only the first run compiles every dependency
# again). Sharing target/ would uplift the old revision's binaries over target/release/, where a
# later `cargo build` of the working tree, finding its own units fresh, would leave them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASE_REV="${1:?usage: bench/ingest_ab.sh <git revision to compare with>}"
PAIRS="${PAIRS:-3}"
REPORTS="${REPORTS:-200000}"
ROUNDS="${ROUNDS:-3}"
OUT="$ROOT/bench/results/ingest_ab.json"

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }
command -v nats-server >/dev/null || { log "nats-server missing: run scripts/setup.sh"; exit 1; }

REV="$(git rev-parse --short "$BASE_REV")"
TREE="$(mktemp -d /tmp/palisade-ab.XXXXXX)"
STORE="$(mktemp -d /tmp/palisade-ab-nats.XXXXXX)"
NATS_PID=""
cleanup() {
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
    git -C "$ROOT" worktree remove --force "$TREE" 2>/dev/null || rm -rf "$TREE"
    rm -rf "$STORE"
}
trap cleanup EXIT

# bench_bin DIR TARGET: build the ingest bench in DIR, print the executable's path.
bench_bin() {
    CARGO_TARGET_DIR="$2" cargo bench --manifest-path "$1/Cargo.toml" -p palisade-blocker \
        --bench ingest --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ingest" and m.get("executable"):
        print(m["executable"])'
}
log "building the ingest bench at $REV (worktree $TREE)"
git worktree add -q --detach "$TREE" "$REV"
BASE_BIN="$(bench_bin "$TREE" "$ROOT/target/ingest-ab-base")"
log "building the ingest bench of the working tree"
NEW_BIN="$(bench_bin "$ROOT" "$ROOT/target")"
if [ ! -x "$BASE_BIN" ] || [ ! -x "$NEW_BIN" ]; then log "build failed"; exit 1; fi

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# run LABEL BIN: one ingest measurement on a fresh server; appends its JSON to $STORE/results.
run() {
    rm -rf "$STORE/js"
    nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$STORE/js" >/dev/null 2>&1 &
    NATS_PID=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    "$2" --bench ingest --nats-url "nats://127.0.0.1:$PORT" --reports "$REPORTS" --rounds "$ROUNDS" \
        2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]=sys.argv[1]; print(json.dumps(r))' "$1" \
        >>"$STORE/results"
    kill "$NATS_PID"; wait "$NATS_PID" 2>/dev/null || true; NATS_PID=""
    log "$1: $(tail -n 1 "$STORE/results" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("bare", r["bare_median"], "blocker", r["blocker_median"], "ratio", r["ratio"])')"
}
for _ in $(seq 1 "$PAIRS"); do
    run "$REV" "$BASE_BIN"
    run "working tree" "$NEW_BIN"
done

python3 - "$STORE/results" "$OUT" "$REV" <<'PY'
import json, sys, os, statistics, datetime, platform
rows = [json.loads(l) for l in open(sys.argv[1])]
rev = sys.argv[3]
def side(label):
    rs = [r for r in rows if r["label"] == label]
    return {"runs": [{k: r[k] for k in ("bare_median", "blocker_median", "ratio")} for r in rs],
            "median_ratio": statistics.median(r["ratio"] for r in rs),
            "median_blocker": statistics.median(r["blocker_median"] for r in rs)}
res = {
    "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg": os.getloadavg()},
    "base_revision": rev, "base": side(rev), "working_tree": side("working tree"),
}
json.dump(res, open(sys.argv[2], "w"), indent=2)
print(json.dumps(res, indent=2))
PY
log "wrote $OUT"
