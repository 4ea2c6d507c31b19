#!/usr/bin/env bash
# What the Fargate sources cost the application: wrk requests/s and p99 latency, each pair
# measured in the same run, alternating (the order rotates each round):
#   nginx          wrk -> nginx -> app                       (the pod without Palisade)
#   nginx_mirror   wrk -> nginx + the shipped mirror snippet -> app, mirror -> palisade-sensor
#                  --source mirror
#   app            wrk -> app                                (an app with no proxy in the pod)
#   app_proxy      wrk -> palisade-sensor --source proxy -> app
#
#   bench/mirror_overhead.sh          (no root; writes bench/results/mirror_overhead.json)
#   ROUNDS=5 DURATION=10 CONNECTIONS=64 bench/mirror_overhead.sh
#
# Options (environment): ROUNDS (3), DURATION seconds per run (10), WARMUP seconds (2),
# CONNECTIONS (64), THREADS (2), BODY_BYTES=N (wrk POSTs a form body of N bytes instead of a
# GET; 0), OUT (where the JSON goes).
#
# "app" is an nginx answering `return 200` (the cheapest app there is, so the figures are the
# worst case: a real app's own work dilutes them). Every process runs on loopback on the same
# machine, wrk included: on a 2-core machine they compete for the cores, as a pod's containers
# do. Needs nginx, wrk and nats-server (scripts/setup.sh) and builds the release sensor.
set -Eeuo pipefail
trap 'echo "mirror_overhead: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
BODY_BYTES="${BODY_BYTES:-0}"
OUT="${OUT:-$ROOT/bench/results/mirror_overhead.json}"

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }
die() { printf 'mirror_overhead: %s\n' "$*" >&2; exit 1; }

for cmd in nginx wrk nats-server curl python3; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || die "$cmd not found (run scripts/setup.sh)"
done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

log "building the release sensor"
cargo build --release -p palisade-sensor >&2
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SENSOR="$TARGET_DIR/release/palisade-sensor"
[ -x "$SENSOR" ] || die "no $SENSOR"

WORK="$(mktemp -d /tmp/palisade-mirror-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT="$(free_port)"
FRONT_PORT="$(free_port)"
MIRROR_FRONT_PORT="$(free_port)"
MIRROR_PORT="$(free_port)"
PROXY_PORT="$(free_port)"
NATS_PORT="$(free_port)"
MIRROR_METRICS="$(free_port)"
PROXY_METRICS="$(free_port)"

# nginx_conf NAME PORT HTTP SERVER: one single-process nginx in $WORK/NAME.
nginx_conf() {
    local d="$WORK/$1"
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    $3
    server {
        listen 127.0.0.1:$2;
        $4
    }
}
EOF
    "$NGINX" -t -q -c "$d/nginx.conf" -p "$d" -e "$d/error.log" || die "nginx $1: bad configuration"
    "$NGINX" -c "$d/nginx.conf" -p "$d" -e "$d/error.log" &
    PIDS+=($!)
}

APP_UPSTREAM="upstream app { server 127.0.0.1:$APP_PORT; keepalive 32; }"
FRONT_LOCATION="location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
MIRROR_UPSTREAM="$(sed "s/127.0.0.1:9099/127.0.0.1:$MIRROR_PORT/" config/nginx/palisade-mirror-upstream.conf)"

nginx_conf app "$APP_PORT" "" 'location / { return 200 "ok\n"; }'
nginx_conf front "$FRONT_PORT" "$APP_UPSTREAM" "$FRONT_LOCATION"
nginx_conf front_mirror "$MIRROR_FRONT_PORT" "$APP_UPSTREAM
$MIRROR_UPSTREAM" "include $ROOT/config/nginx/palisade-mirror.conf;
        $FRONT_LOCATION"

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >/dev/null 2>&1 &
PIDS+=($!)
COMMON=(--nats-url "nats://127.0.0.1:$NATS_PORT" --trusted-proxy 127.0.0.0/8
    --client-ip-header x-forwarded-for --report-special 198.18.0.0/15)
RUST_LOG=warn "$SENSOR" --source mirror --mirror-listen "127.0.0.1:$MIRROR_PORT" --sensor-id bench-mirror \
    --metrics-listen "127.0.0.1:$MIRROR_METRICS" "${COMMON[@]}" &
PIDS+=($!)
MIRROR_SENSOR_PID=$!
RUST_LOG=warn "$SENSOR" --source proxy --proxy-listen "127.0.0.1:$PROXY_PORT" \
    --proxy-upstream "127.0.0.1:$APP_PORT" --sensor-id bench-proxy \
    --metrics-listen "127.0.0.1:$PROXY_METRICS" "${COMMON[@]}" &
PIDS+=($!)
PROXY_SENSOR_PID=$!

HEADERS=(-H "Host: palisade-bench.test" -H "User-Agent: palisade-bench/1.0 (wrk)" -H "Accept: */*"
    -H "X-Forwarded-For: 198.18.0.7")
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${HEADERS[@]}" "http://127.0.0.1:$1$2" || true; }
for port in "$APP_PORT" "$FRONT_PORT" "$MIRROR_FRONT_PORT" "$PROXY_PORT"; do
    for _ in $(seq 100); do
        [ "$(status "$port" /)" = 200 ] && break
        sleep 0.1
    done
    [ "$(status "$port" /)" = 200 ] || die "port $port does not answer 200"
done
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# The mirror really inspects: an attack through nginx reaches the sensor's detector.
status "$MIRROR_FRONT_PORT" "/index.html?id=1%27%20union%20select%20password%20from%20users--" >/dev/null
status "$PROXY_PORT" "/index.html?id=1%27%20union%20select%20password%20from%20users--" >/dev/null
sleep 1
[ "$(metric "$MIRROR_METRICS" palisade_sensor_mirror_inspected_total)" -ge 1 ] || die "the mirror inspected nothing"
curl -s "http://127.0.0.1:$MIRROR_METRICS/metrics" | grep -q 'palisade_sensor_detections_total{' ||
    die "the mirror sensor detected nothing"
curl -s "http://127.0.0.1:$PROXY_METRICS/metrics" | grep -q 'palisade_sensor_detections_total{' ||
    die "the proxy sensor detected nothing"
log "mirror and proxy sensors inspect and detect"

SCRIPT=()
if [ "$BODY_BYTES" -gt 0 ]; then
    python3 - "$BODY_BYTES" >"$WORK/post.lua" <<'EOF'
import sys
n = int(sys.argv[1])
body = ("q=" + "summer+sale+" * (n // 12 + 1))[:n]
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"')
print('wrk.body = "' + body + '"')
EOF
    SCRIPT=(-s "$WORK/post.lua")
fi

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# run NAME PORT ROUND: one wrk run, one JSON line on stdout.
run() {
    local name="$1" port="$2" round="$3" before after sensor_pid=""
    case "$name" in
        nginx_mirror) sensor_pid=$MIRROR_SENSOR_PID ;;
        app_proxy) sensor_pid=$PROXY_SENSOR_PID ;;
    esac
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${HEADERS[@]}" "${SCRIPT[@]}" \
        "http://127.0.0.1:$port/" >/dev/null
    before=0
    [ -n "$sensor_pid" ] && before="$(cpu_ticks "$sensor_pid")"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${HEADERS[@]}" "${SCRIPT[@]}" \
        "http://127.0.0.1:$port/" >"$WORK/$name-$round.txt"
    after=0
    [ -n "$sensor_pid" ] && after="$(cpu_ticks "$sensor_pid")"
    python3 - "$WORK/$name-$round.txt" "$name" "$round" "$((after - before))" "$DURATION" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
ticks, duration = int(sys.argv[4]), float(sys.argv[5])
print(json.dumps({
    "config": sys.argv[2], "round": int(sys.argv[3]), "rps": rps,
    "p50_ms": ms(*p50.groups()), "p99_ms": ms(*p99.groups()),
    "non_2xx": int(errors.group(1)) if errors else 0,
    "socket_errors": sum(map(int, sock.groups())) if sock else 0,
    "sensor_cpu_pct": round(100.0 * ticks / 100.0 / duration, 1),
}))
EOF
}

CONFIGS=("nginx:$FRONT_PORT" "nginx_mirror:$MIRROR_FRONT_PORT" "app:$APP_PORT" "app_proxy:$PROXY_PORT")
: >"$WORK/runs.jsonl"
for round in $(seq "$ROUNDS"); do
    n=${#CONFIGS[@]}
    for i in $(seq 0 $((n - 1))); do
        entry="${CONFIGS[$(((i + round - 1) % n))]}"
        log "round $round: ${entry%%:*}"
        run "${entry%%:*}" "${entry##*:}" "$round" | tee -a "$WORK/runs.jsonl" >&2
    done
done

MIRRORED="$(metric "$MIRROR_METRICS" palisade_sensor_mirror_requests_total)"
MIRROR_DROPPED="$(metric "$MIRROR_METRICS" palisade_sensor_mirror_dropped_total)"
MIRROR_INSPECTED="$(metric "$MIRROR_METRICS" palisade_sensor_mirror_inspected_total)"
COPIES_DROPPED="$(metric "$PROXY_METRICS" palisade_sensor_proxy_copies_dropped_total)"
PROXY_IN="$(metric "$PROXY_METRICS" palisade_sensor_proxy_bytes_in_total)"
mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/runs.jsonl" "$OUT" <<EOF
import json, statistics, sys, datetime, platform, os
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(config, key):
    return statistics.median(r[key] for r in runs if r["config"] == config)
summary = {c: {k: med(c, k) for k in ("rps", "p50_ms", "p99_ms", "sensor_cpu_pct")}
           for c in ("nginx", "nginx_mirror", "app", "app_proxy")}
ratios = {
    "nginx_mirror_rps_vs_nginx": round(summary["nginx_mirror"]["rps"] / summary["nginx"]["rps"], 3),
    "nginx_mirror_p99_vs_nginx": round(summary["nginx_mirror"]["p99_ms"] / summary["nginx"]["p99_ms"], 3),
    "app_proxy_rps_vs_app": round(summary["app_proxy"]["rps"] / summary["app"]["rps"], 3),
    "app_proxy_p99_vs_app": round(summary["app_proxy"]["p99_ms"] / summary["app"]["p99_ms"], 3),
}
out = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "load": os.getloadavg()},
    "settings": {"rounds": $ROUNDS, "duration_s": $DURATION, "connections": $CONNECTIONS,
                 "threads": $THREADS, "body_bytes": $BODY_BYTES},
    "medians": summary, "ratios": ratios,
    "sensor_counters": {"mirror_requests": int("${MIRRORED:-0}"), "mirror_inspected": int("${MIRROR_INSPECTED:-0}"),
                        "mirror_dropped": int("${MIRROR_DROPPED:-0}"),
                        "proxy_copies_dropped": int("${COPIES_DROPPED:-0}"), "proxy_bytes_in": int("${PROXY_IN:-0}")},
    "runs": runs,
}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print(json.dumps({"medians": summary, "ratios": ratios, "sensor_counters": out["sensor_counters"]}, indent=2))
EOF
log "results in $OUT"
