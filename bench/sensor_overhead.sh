#!/usr/bin/env bash
# The sensor's cost on traffic: wrk requests/s against nginx with and without the eBPF sensor
# attached to the interface the requests arrive on, measured in the same run, alternating.
#
#   bench/sensor_overhead.sh            (root; writes bench/results/sensor_overhead.json)
#   ROUNDS=3 DURATION=10 CONNECTIONS=64 bench/sensor_overhead.sh
#
# Topology: a network namespace (the "load balancer") runs wrk; a veth pair carries its
# requests to nginx outside it, on 10.199.N.2:8080; the sensor attaches to that veth end.
# Only addresses of this private /30 are used. Everything is removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
PORT=8080
OUT="$ROOT/bench/results/sensor_overhead.json"

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "sensor_overhead: needs root (eBPF, network namespaces)" >&2
    exit 1
fi
for cmd in nginx wrk nats-server ip; do
    command -v "$cmd" >/dev/null || { echo "sensor_overhead: $cmd missing (run scripts/setup.sh)" >&2; exit 1; }
done

log "building the sensor (release)"
cargo build --release -q -p palisade-sensor
SENSOR="$ROOT/target/release/palisade-sensor"

WORK="$(mktemp -d /tmp/palisade-bench.XXXXXX)"
TAG="$(printf '%x' $(( $$ % 0xfffff )))"
NS="palisade-bench-$TAG"
HOST_IF="pbh$TAG"
NS_IF="pbn$TAG"
N=""
for i in $(seq 200 250); do
    if ! ip -o -4 addr show | grep -q " 10.199.$i\."; then N=$i; break; fi
done
[ -n "$N" ] || { echo "no free 10.199.N.0/30" >&2; exit 1; }
HOST_ADDR="10.199.$N.2"
NS_ADDR="10.199.$N.1"
NGINX_PID=""; NATS_PID=""; SENSOR_PID=""

cleanup() {
    set +e
    [ -n "$SENSOR_PID" ] && kill "$SENSOR_PID" 2>/dev/null && wait "$SENSOR_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    ip link del "$HOST_IF" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

log "namespace $NS, veth $HOST_IF ($HOST_ADDR) <-> $NS_IF ($NS_ADDR)"
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NS"
ip addr add "$HOST_ADDR/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip netns exec "$NS" ip addr add "$NS_ADDR/30" dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" up
ip netns exec "$NS" ip link set lo up

cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    server {
        listen $HOST_ADDR:$PORT;
        location / { return 200 "ok\n"; }
    }
}
NGINX
nginx -c "$WORK/nginx.conf" &
NGINX_PID=$!

NATS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >/dev/null 2>&1 &
NATS_PID=$!
METRICS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

for _ in $(seq 50); do
    ip netns exec "$NS" curl -s -o /dev/null "http://$HOST_ADDR:$PORT/" && break
    sleep 0.1
done

URL="http://$HOST_ADDR:$PORT/index.html?id=42"
run_wrk() {
    ip netns exec "$NS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL" >"$WORK/wrk.txt"
    awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start_sensor() {
    "$SENSOR" --source ebpf --interface "$HOST_IF" --port "$PORT" --sensor-id bench \
        --nats-url "nats://127.0.0.1:$NATS_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
        >"$WORK/sensor.log" 2>&1 &
    SENSOR_PID=$!
    for _ in $(seq 100); do
        ip netns exec "$NS" curl -s -o /dev/null "http://$HOST_ADDR:$PORT/warmup" || true
        if [ "$(metric palisade_sensor_requests_parsed_total 2>/dev/null)" -ge 1 ] 2>/dev/null; then return 0; fi
        if ! kill -0 "$SENSOR_PID" 2>/dev/null; then cat "$WORK/sensor.log" >&2; exit 1; fi
        sleep 0.1
    done
    echo "sensor did not start" >&2; cat "$WORK/sensor.log" >&2; exit 1
}
stop_sensor() { kill "$SENSOR_PID"; wait "$SENSOR_PID" 2>/dev/null || true; SENSOR_PID=""; }

HZ="$(getconf CLK_TCK)"
base=(); with=(); cpu=(); drops=(); captured=(); parsed=()
log "warm-up"; run_wrk >/dev/null
for r in $(seq "$ROUNDS"); do
    b="$(run_wrk)"; base+=("$b")
    start_sensor
    c0="$(cpu_ticks "$SENSOR_PID")"
    w="$(run_wrk)"; with+=("$w")
    c1="$(cpu_ticks "$SENSOR_PID")"
    cpu+=("$(python3 -c "print(round(100 * ($c1 - $c0) / $HZ / $DURATION, 1))")")
    drops+=("$(metric palisade_sensor_ring_drops_total)")
    captured+=("$(metric palisade_sensor_packets_captured_total)")
    parsed+=("$(metric palisade_sensor_requests_parsed_total)")
    stop_sensor
    log "round $r: without ${b} req/s, with ${w} req/s, sensor CPU ${cpu[-1]}%, ring drops ${drops[-1]}, requests parsed ${parsed[-1]}"
done

python3 - "$OUT" "$DURATION" "$CONNECTIONS" "$THREADS" \
    "${base[*]}" "${with[*]}" "${cpu[*]}" "${drops[*]}" "${captured[*]}" "${parsed[*]}" <<'PY'
import json, statistics, sys, platform, os
out, duration, conns, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
nums = lambda s: [float(x) for x in s.split()]
base, with_, cpu, drops, captured, parsed = (nums(s) for s in sys.argv[5:11])
mb, mw = statistics.median(base), statistics.median(with_)
result = {
    "benchmark": "sensor_overhead",
    "what": "wrk req/s to nginx through a veth pair, without and with the eBPF sensor attached (alternating rounds)",
    "duration_secs": duration, "connections": conns, "wrk_threads": threads,
    "kernel": platform.release(), "cpus": os.cpu_count(),
    "rounds": [{"without_rps": b, "with_rps": w, "ratio": round(w / b, 4), "sensor_cpu_percent": c,
                "ring_drops": int(d), "segments_captured": int(k), "requests_parsed": int(p)}
               for b, w, c, d, k, p in zip(base, with_, cpu, drops, captured, parsed)],
    "median_without_rps": mb, "median_with_rps": mw,
    "ratio": round(mw / mb, 4), "target_ratio": 0.95,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
print(json.dumps({k: result[k] for k in ("median_without_rps", "median_with_rps", "ratio")}))
PY
log "wrote $OUT"
