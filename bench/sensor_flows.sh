#!/usr/bin/env bash
# The sensor's memory with many concurrent flows: VmRSS / VmHWM of palisade-sensor with 0 flows,
# with FLOWS (10,000) TCP connections held open mid-request-head, and after they close.
#
#   bench/sensor_flows.sh               (root; writes bench/results/sensor_flows.json)
#   FLOWS=10000 ROUNDS=2 bench/sensor_flows.sh
#
# Topology as bench/sensor_overhead.sh: a network namespace runs the client
# (bench/hold_flows.py), a veth pair carries its connections to nginx outside it on
# 10.199.N.2:8080, the eBPF sensor is attached to that veth end. Every connection sends a request
# line and headers without the final blank line and is then held open, so that the sensor's
# reassembly keeps one flow per connection, each in the middle of a request head. nginx holds
# them (client_header_timeout raised). The sensor's palisade_sensor_flows gauge proves that
# the flows were tracked. Only addresses of this private /30 are used; everything is removed
# on exit.
set -Eeuo pipefail
trap 'echo "sensor_flows: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FLOWS="${FLOWS:-10000}"
ROUNDS="${ROUNDS:-2}"
PORT=8080
OUT="$ROOT/bench/results/sensor_flows.json"
# The sensor's default reassembly bounds (sensor/src/config.rs) are max_flows = 65536 and
# flow_idle_secs = 120. max_flows is kept unless FLOWS needs more; the idle timeout is raised
# so that a slow connect phase on a loaded machine cannot expire the first flows before the
# measurement.
MAX_FLOWS=65536
if [ "$FLOWS" -ge "$MAX_FLOWS" ]; then MAX_FLOWS=$(( FLOWS * 2 )); fi
FLOW_IDLE_SECS=600
HOLD_TIMEOUT=900

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }
die() { printf 'sensor_flows: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (eBPF, network namespaces)"
for cmd in nginx nats-server ip curl python3; do
    command -v "$cmd" >/dev/null || die "$cmd missing (run scripts/setup.sh)"
done
# One descriptor per connection in the client, and in the nginx worker that accepts it (at most
# all of them), plus slack. Separate processes: the limit applies to each.
NOFILE=$(( FLOWS + 2048 ))
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$NOFILE" ]; then
    ulimit -Sn "$NOFILE" 2>/dev/null ||
        die "cannot raise the open-file limit to $NOFILE (hard limit $(ulimit -Hn); raise it or lower FLOWS)"
fi

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"

log "building the sensor (release)"
cargo build --release -q -p palisade-sensor
SENSOR="$ROOT/target/release/palisade-sensor"

# shellcheck source=bench/lib/netns.sh
. "$ROOT/bench/lib/netns.sh"
NGINX_PID=""; NATS_PID=""; SENSOR_PID=""; CLIENT_PID=""
cleanup_procs() {
    stop_pid "$CLIENT_PID"
    stop_pid "$SENSOR_PID"
    stop_pid "$NGINX_PID"
    stop_pid "$NATS_PID"
}
netns_up
# Enough source ports for FLOWS connections to one address (this namespace only).
ip netns exec "$NS" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000"

cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections $(( FLOWS + 1024 )); }
http {
    access_log off;
    client_header_timeout ${HOLD_TIMEOUT}s;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    server {
        listen $HOST_ADDR:$PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
NGINX
nginx -t -q -c "$WORK/nginx.conf" || die "nginx rejected its configuration"
nginx -c "$WORK/nginx.conf" &
NGINX_PID=$!


free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT="$(free_port)"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >/dev/null 2>&1 &
NATS_PID=$!
METRICS_PORT="$(free_port)"
# Everything in the file: the sensor validates the file on its own, before flags apply.
cat >"$WORK/sensor.toml" <<TOML
sensor_id = "bench"
source = "ebpf"
metrics_listen = "127.0.0.1:$METRICS_PORT"

[ebpf]
interfaces = ["$HOST_IF"]
ports = [$PORT]

[reassembly]
max_flows = $MAX_FLOWS
flow_idle_secs = $FLOW_IDLE_SECS

[nats]
url = "nats://127.0.0.1:$NATS_PORT"
TOML

status() {
    ip netns exec "$NS" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$HOST_ADDR:$PORT$1" || true
}
for _ in $(seq 100); do
    [ "$(status /)" = 200 ] && break
    sleep 0.1
done
[ "$(status /)" = 200 ] || die "nginx on $HOST_ADDR:$PORT does not answer 200"

metric() { curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

log "starting the sensor (max_flows $MAX_FLOWS, flow_idle_secs $FLOW_IDLE_SECS)"
"$SENSOR" --config "$WORK/sensor.toml" >"$WORK/sensor.log" 2>&1 &
SENSOR_PID=$!
started=""
for _ in $(seq 100); do
    status /warmup >/dev/null
    if [ "$(metric palisade_sensor_requests_parsed_total 2>/dev/null)" -ge 1 ] 2>/dev/null; then started=1; break; fi
    kill -0 "$SENSOR_PID" 2>/dev/null || { cat "$WORK/sensor.log" >&2; die "the sensor exited"; }
    sleep 0.1
done
[ -n "$started" ] || { cat "$WORK/sensor.log" >&2; die "the sensor did not start (no request parsed within 10 s)"; }

# wait_flows OP N SECS: wait until the flows gauge is OP N (ge/le); prints the last value.
wait_flows() {
    local op=$1 n=$2 secs=$3 f=""
    for _ in $(seq $(( secs * 5 ))); do
        f="$(metric palisade_sensor_flows)"
        case "$op" in
            ge) if [ -n "$f" ] && [ "$f" -ge "$n" ]; then echo "$f"; return 0; fi ;;
            le) if [ -n "$f" ] && [ "$f" -le "$n" ]; then echo "$f"; return 0; fi ;;
            *) die "wait_flows: unknown operator $op" ;;
        esac
        sleep 0.2
    done
    echo "${f:-none}"
    return 1
}

ROWS="$WORK/phases.jsonl"
: >"$ROWS"
# sample ROUND PHASE [CLIENT_STATUS_FILE]: the sensor's memory and metrics, one JSON line.
sample() {
    local m
    m="$(curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics")"
    [ -n "$m" ] || die "the sensor's metrics endpoint did not answer"
    python3 - "$1" "$2" "/proc/$SENSOR_PID/status" "$m" "${3:-}" >>"$ROWS" <<'PY'
import json, sys
rnd, phase, status_path, metrics, client = sys.argv[1:6]
mem = {}
for line in open(status_path):
    k, _, v = line.partition(":")
    if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
        mem[k.lower() + "_kib"] = int(v.split()[0])
vals = dict(l.split()[:2] for l in metrics.splitlines() if l and not l.startswith("#") and "{" not in l)
get = lambda k: int(float(vals.get(k, "nan"))) if k in vals else None
row = {"round": int(rnd), "phase": phase, **mem,
       "flows_gauge": get("palisade_sensor_flows"),
       "reassembly_bytes": get("palisade_sensor_reassembly_bytes"),
       "flows_evicted_total": get("palisade_sensor_flows_evicted_total"),
       "ring_drops_total": get("palisade_sensor_ring_drops_total"),
       "segments_captured_total": get("palisade_sensor_packets_captured_total"),
       "requests_parsed_total": get("palisade_sensor_requests_parsed_total")}
if client:
    row["client"] = json.load(open(client))
print(json.dumps(row))
PY
    log "round $1 $2: $(tail -n1 "$ROWS")"
}

for r in $(seq "$ROUNDS"); do
    f="$(wait_flows le 0 30)" || die "round $r: the sensor still tracks $f flows before the round"
    sleep 2
    sample "$r" baseline_0_flows

    rm -f "$WORK/client.json" "$WORK/release"
    log "round $r: opening $FLOWS connections, each holding a partial request head"
    ip netns exec "$NS" python3 "$ROOT/bench/hold_flows.py" --host "$HOST_ADDR" --port "$PORT" \
        --flows "$FLOWS" --status "$WORK/client.json" --release "$WORK/release" \
        --timeout "$HOLD_TIMEOUT" 2>"$WORK/client.log" &
    CLIENT_PID=$!
    for _ in $(seq 1500); do
        [ -f "$WORK/client.json" ] && break
        kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$WORK/client.log" >&2; die "round $r: the client exited early"; }
        sleep 0.2
    done
    [ -f "$WORK/client.json" ] || die "round $r: the client did not open its connections within 300 s"
    connected="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$WORK/client.json")"
    [ "$connected" -eq "$FLOWS" ] || { cat "$WORK/client.log" >&2; die "round $r: only $connected of $FLOWS connections opened"; }
    f="$(wait_flows ge "$FLOWS" 60)" ||
        die "round $r: the sensor's flows gauge reached only $f of $FLOWS (flows not tracked? see $WORK/sensor.log)"
    sleep 2
    sample "$r" "held_${FLOWS}_flows" "$WORK/client.json"

    touch "$WORK/release"
    client_rc=0
    wait "$CLIENT_PID" || client_rc=$?
    CLIENT_PID=""
    [ "$client_rc" -eq 0 ] || { cat "$WORK/client.log" >&2; die "round $r: connections were closed by the server before release"; }
    f="$(wait_flows le 0 60)" || die "round $r: the sensor still tracks $f flows 60 s after the connections closed"
    sleep 2
    sample "$r" after_close "$WORK/client.json"
done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_END="$(uptime)"
VERSIONS="$(python3 -c 'import json,sys; print(json.dumps({"palisade-sensor": sys.argv[1], "nginx": sys.argv[2]}))' \
    "$("$SENSOR" --version)" "$(nginx -v 2>&1 | sed 's|.*nginx/||')")"

python3 - "$OUT" "$ROWS" "$FLOWS" "$MAX_FLOWS" "$FLOW_IDLE_SECS" "$VERSIONS" \
    "$LOAD_START" "$LOAD_END" "$UPTIME_START" "$UPTIME_END" <<'PY'
import json, os, platform, statistics, sys
out, rows_path, flows, max_flows, idle, versions = sys.argv[1:7]
load_start, load_end, uptime_start, uptime_end = sys.argv[7:11]
flows = int(flows)
rows = [json.loads(l) for l in open(rows_path)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
rounds = {}
for r in rows:
    rounds.setdefault(r["round"], {"round": r["round"]})[r["phase"]] = {k: v for k, v in r.items()
                                                                       if k not in ("round", "phase")}
held_key = f"held_{flows}_flows"
for rd in rounds.values():
    b, h = rd["baseline_0_flows"], rd[held_key]
    rd["rss_growth_kib"] = h["vmrss_kib"] - b["vmrss_kib"]
    rd["bytes_per_flow"] = round(1024 * rd["rss_growth_kib"] / flows)
first = rounds[min(rounds)]
summary = {
    "baseline_0_flows_vmrss_kib": first["baseline_0_flows"]["vmrss_kib"],
    "held_vmrss_kib": statistics.median(rd[held_key]["vmrss_kib"] for rd in rounds.values()),
    "held_vmhwm_kib_max": max(rd[held_key]["vmhwm_kib"] for rd in rounds.values()),
    "after_close_vmrss_kib_last": rounds[max(rounds)]["after_close"]["vmrss_kib"],
    "vmhwm_kib_at_end": rounds[max(rounds)]["after_close"]["vmhwm_kib"],
    "flows_gauge_held": [rd[held_key]["flows_gauge"] for rd in rounds.values()],
    "reassembly_bytes_held": [rd[held_key]["reassembly_bytes"] for rd in rounds.values()],
    "flows_evicted_total_at_end": rounds[max(rounds)]["after_close"]["flows_evicted_total"],
    "ring_drops_total_at_end": rounds[max(rounds)]["after_close"]["ring_drops_total"],
    "rss_growth_kib_first_round": first["rss_growth_kib"],
    "bytes_per_flow_first_round": first["bytes_per_flow"],
}
result = {
    "benchmark": "sensor_flows",
    "script": "bench/sensor_flows.sh",
    "what": f"palisade-sensor memory (/proc/PID/status) with 0 flows, with {flows} concurrent TCP "
            "connections each holding a partial HTTP request head (tracked by reassembly), and after "
            "they close; eBPF capture on a veth in front of nginx",
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "mem_kib": int(mem), "kernel": platform.release(),
                "loadavg_at_start": load_start.split(), "loadavg_at_end": load_end.split(),
                "uptime_at_start": uptime_start.strip(), "uptime_at_end": uptime_end.strip(),
                "note": "shared machine"},
    "versions": json.loads(versions),
    "setup": {
        "flows": flows,
        "sensor_reassembly": {"max_flows": int(max_flows), "flow_idle_secs": int(idle),
                              "note": "defaults are max_flows 65536 (above the flow count, kept) and "
                                      "flow_idle_secs 120 (raised so no flow expires during the hold)"},
        "client": "bench/hold_flows.py: one request line + 4 headers, no blank line, then held open",
        "server": "nginx, client_header_timeout raised so it holds the connections",
    },
    "rounds": [rounds[k] for k in sorted(rounds)],
    "summary": summary,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(json.dumps(summary, indent=1))
PY
log "wrote $OUT"
