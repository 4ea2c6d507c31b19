#!/usr/bin/env bash
# The sensor's cost on traffic, next to an inline WAF: wrk requests/s and p99 latency against
# nginx in three configurations, measured in the same run, alternating (the order rotates each
# round):
#   (a) none      nginx alone;
#   (b) sensor    the same nginx with the eBPF sensor's TC programs attached to the interface
#                 the requests arrive on (--source ebpf);
#   (b') sensor_cgroup  the same nginx with the sensor's default source: its cgroup_skb program
#                 at the cgroup v2 root (--source cgroup, no interface);
#   (c) modsec    a second nginx with ModSecurity inline (libnginx-mod-http-modsecurity +
#                 OWASP CRS 3.3.4, paranoia level 1, Debian's default crs-setup.conf, the rule
#                 file of bench/modsec/modsecurity.conf), sensor not attached.
#
#   bench/sensor_overhead.sh            (root; writes bench/results/sensor_overhead.json)
#   ROUNDS=5 DURATION=10 CONNECTIONS=64 bench/sensor_overhead.sh
#
# Options (environment):
#   BASE_REV=<git rev>   adds (d) sensor_base: the sensor built from that revision (in
#                        target/overhead-base, so the tree's own build is untouched), measured in
#                        the same rounds: before/after of a change in one run. With CRS on, also
#                        (e') sensor_crs_base: that build with the CRS engine on.
#   BODY_BYTES=N         wrk POSTs a JSON body of N bytes (the sensor inspects bodies) instead of
#                        a GET; nginx serves the file for POST too (error_page 405 =200).
#   SKIP_MODSEC=1        leave out (c).
#   SKIP_CGROUP=1        leave out (b').
#   SKIP_CRS=1           leave out (e) sensor_crs: the same sensor with the OWASP CRS engine on
#                        (--crs-dir $CRS_DIR, default Debian's /usr/share/modsecurity-crs, PL1),
#                        measured in the same rounds as built-in only.
#   OUT=path             where the JSON goes.
#
# Needs scripts/setup.sh (nginx-light, wrk, nats-server) and scripts/bench-deps.sh (ModSecurity).
#
# Topology: a network namespace (the "load balancer") runs wrk; a veth pair carries its
# requests to nginx outside it, on 10.199.N.2 (port 8080: plain nginx, port 8081: nginx +
# ModSecurity); the sensor attaches to that veth end. Only addresses of this private /30 are
# used. Everything is removed on exit.
#
# All three serve the same 3-byte static file. Not `return 200`: the rewrite module's `return`
# answers before ModSecurity-nginx's handlers run, so ModSecurity would inspect nothing.
# wrk sends a host name, a User-Agent and an Accept header, as browsers and load balancers do:
# with wrk's bare defaults (numeric Host, no User-Agent) CRS would score and log every request.
set -Eeuo pipefail
trap 'echo "sensor_overhead: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
PORT=8080
MODSEC_PORT=8081
MODSEC_MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so
MODSEC_RULES="$ROOT/bench/modsec/modsecurity.conf"
OUT="${OUT:-$ROOT/bench/results/sensor_overhead.json}"
BASE_REV="${BASE_REV:-}"
BODY_BYTES="${BODY_BYTES:-0}"
SKIP_MODSEC="${SKIP_MODSEC:-0}"
SKIP_CRS="${SKIP_CRS:-0}"
SKIP_CGROUP="${SKIP_CGROUP:-0}"
CRS_DIR="${CRS_DIR:-/usr/share/modsecurity-crs}"

log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }
die() { printf 'sensor_overhead: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (eBPF, network namespaces)"
for cmd in nginx wrk nats-server ip curl python3; do
    command -v "$cmd" >/dev/null || die "$cmd missing (run scripts/setup.sh)"
done
[ -f "$MODSEC_MODULE" ] || die "$MODSEC_MODULE missing (run scripts/bench-deps.sh: libnginx-mod-http-modsecurity)"
[ -f /etc/modsecurity/crs/crs-setup.conf ] || die "OWASP CRS missing (run scripts/bench-deps.sh: modsecurity-crs)"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"

log "building the sensor (release)"
cargo build --release -q -p palisade-sensor
SENSOR="$ROOT/target/release/palisade-sensor"
BASE_SENSOR=""
if [ -n "$BASE_REV" ]; then
    log "building the sensor at $BASE_REV (release, target/overhead-base)"
    BASE_TREE="$ROOT/target/overhead-base/src"
    rm -rf "$BASE_TREE"; mkdir -p "$BASE_TREE"
    git -C "$ROOT" archive "$BASE_REV" | tar -x -C "$BASE_TREE"
    CARGO_TARGET_DIR="$ROOT/target/overhead-base" cargo build --release -q \
        --manifest-path "$BASE_TREE/Cargo.toml" -p palisade-sensor
    BASE_SENSOR="$ROOT/target/overhead-base/release/palisade-sensor"
fi

# shellcheck source=bench/lib/netns.sh
. "$ROOT/bench/lib/netns.sh"
NGINX_PID=""; MODSEC_PID=""; NATS_PID=""; SENSOR_PID=""
cleanup_procs() {
    stop_pid "$SENSOR_PID"
    stop_pid "$NGINX_PID"
    stop_pid "$MODSEC_PID"
    stop_pid "$NATS_PID"
}
netns_up

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www" # nginx workers run as nobody
printf 'ok\n' >"$WORK/www/index.html"
# nginx_conf NAME PORT [EXTRA_MAIN] [EXTRA_HTTP]: identical servers but for the extra lines.
nginx_conf() {
    local name=$1 port=$2 main=${3:-} http=${4:-}
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name/nginx.conf" <<NGINX
$main
worker_processes auto;
daemon off;
pid $WORK/$name/nginx.pid;
error_log $WORK/$name/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/$name/body;
    proxy_temp_path $WORK/$name/proxy;
    fastcgi_temp_path $WORK/$name/fastcgi;
    uwsgi_temp_path $WORK/$name/uwsgi;
    scgi_temp_path $WORK/$name/scgi;
    $http
    server {
        listen $HOST_ADDR:$port;
        location / { root $WORK/www; error_page 405 =200 \$uri; }
    }
}
NGINX
}
nginx_conf plain "$PORT"
nginx_conf modsec "$MODSEC_PORT" "load_module $MODSEC_MODULE;" \
    "modsecurity on; modsecurity_rules_file $MODSEC_RULES;"
nginx -t -q -c "$WORK/plain/nginx.conf" || die "nginx rejected its configuration"
# ModSecurity-nginx prints its version and rule count while the configuration is parsed.
MODSEC_TEST="$(nginx -t -c "$WORK/modsec/nginx.conf" 2>&1)" ||
    die "nginx rejected the ModSecurity configuration: $MODSEC_TEST"
RULES_LOADED="$(grep -o 'ModSecurity-nginx v[0-9.]* (rules loaded inline/local/remote: [0-9/]*)' \
    <<<"$MODSEC_TEST" | head -n1)" || die "no ModSecurity-nginx line in nginx -t: $MODSEC_TEST"
nginx -c "$WORK/plain/nginx.conf" &
NGINX_PID=$!
nginx -c "$WORK/modsec/nginx.conf" 2>/dev/null & # stderr: the same ModSecurity-nginx line again
MODSEC_PID=$!

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT="$(free_port)"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >/dev/null 2>&1 &
NATS_PID=$!
METRICS_PORT="$(free_port)"

HEADERS=(-H "Host: palisade-bench.test" -H "User-Agent: palisade-bench/1.0 (wrk)" -H "Accept: */*")
# status PORT PATH_AND_QUERY: the HTTP status of one request from the namespace, same headers as wrk.
status() {
    ip netns exec "$NS" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${HEADERS[@]}" \
        "http://$HOST_ADDR:$1$2" || true
}
for port in "$PORT" "$MODSEC_PORT"; do
    for _ in $(seq 100); do
        [ "$(status "$port" /)" = 200 ] && break
        sleep 0.1
    done
    [ "$(status "$port" /)" = 200 ] || die "nginx on port $port does not answer 200"
done

# ModSecurity must really run: the same benign request passes, a SQL injection is refused.
ATTACK="/index.html?id=1%27%20union%20select%201--"
BENIGN="/index.html?id=42"
[ "$(status "$MODSEC_PORT" "$BENIGN")" = 200 ] ||
    die "nginx + ModSecurity does not answer 200 to the benign request $BENIGN (see $WORK/modsec/error.log)"
code="$(status "$MODSEC_PORT" "$ATTACK")"
[ "$code" = 403 ] || {
    cat "$WORK/modsec/error.log" >&2
    die "ModSecurity is not blocking: $ATTACK got $code, expected 403 (module not loaded or rules not applied?)"
}
code="$(status "$PORT" "$ATTACK")"
[ "$code" = 200 ] || die "plain nginx answered $code to $ATTACK, expected 200"
log "ModSecurity check: $ATTACK -> 403, $BENIGN -> 200 ($RULES_LOADED)"
modsec_lines() { grep -c 'ModSecurity: ' "$WORK/modsec/error.log" || true; }

# run_wrk PORT NAME: one wrk run; its output is kept as $WORK/NAME.txt.
WRK_SCRIPT=()
if [ "$BODY_BYTES" -gt 0 ]; then
    python3 - "$BODY_BYTES" >"$WORK/post.lua" <<'PY'
import sys
n = int(sys.argv[1])
body = '{"comment":"' + "a" * max(0, n - 15) + '"}'
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print('wrk.body = "' + body.replace('"', '\\"') + '"')
PY
    WRK_SCRIPT=(-s "$WORK/post.lua")
fi
run_wrk() {
    ip netns exec "$NS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${HEADERS[@]}" \
        "${WRK_SCRIPT[@]}" "http://$HOST_ADDR:$1$BENIGN" >"$WORK/$2.txt"
}
# parse_wrk FILE CONFIG ROUND [EXTRA_JSON...]: one JSON line with wrk's figures.
parse_wrk() {
    python3 - "$@" <<'PY'
import json, re, sys
path, config, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])
extra = {}
for a in sys.argv[4:]:
    extra.update(json.loads(a))
text = open(path).read()
def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        sys.exit(f"cannot read latency {v!r} in {path}")
    return round(float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m[2]], 3)
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
total = re.search(r"(\d+) requests in", text)
if not rps or "99" not in pct or not total:
    sys.exit(f"cannot read wrk output {path}:\n{text}")
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
row = {"round": rnd, "config": config, "rps": float(rps[1]), "p50_ms": ms(pct["50"]),
       "p99_ms": ms(pct["99"]), "requests": int(total[1]),
       "non_2xx": int(non2xx[1]) if non2xx else 0,
       "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0}
row.update(extra)
print(json.dumps(row))
PY
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
vm_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# start_sensor BIN [ARGS...]: TC on the veth unless ARGS name another source.
start_sensor() {
    local bin="${1:-$SENSOR}"
    shift || true
    local source=(--source ebpf --interface "$HOST_IF")
    if [ "${1:-}" = --source ]; then source=(); fi
    "$bin" "${source[@]}" --port "$PORT" --sensor-id bench \
        --nats-url "nats://127.0.0.1:$NATS_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
        "$@" >"$WORK/sensor.log" 2>&1 &
    SENSOR_PID=$!
    for _ in $(seq 100); do
        status "$PORT" /warmup >/dev/null
        if [ "$(metric palisade_sensor_requests_parsed_total 2>/dev/null)" -ge 1 ] 2>/dev/null; then return 0; fi
        if ! kill -0 "$SENSOR_PID" 2>/dev/null; then cat "$WORK/sensor.log" >&2; die "the sensor exited"; fi
        sleep 0.1
    done
    cat "$WORK/sensor.log" >&2
    die "the sensor did not start (no request parsed within 10 s)"
}
stop_sensor() { kill "$SENSOR_PID"; wait "$SENSOR_PID" 2>/dev/null || true; SENSOR_PID=""; }

HZ="$(getconf CLK_TCK)"
ROWS="$WORK/rounds.jsonl"
: >"$ROWS"

# Contention, to read each round against: CPU used on the machine during a wrk run besides the
# benchmark's own processes (wrk, the nginx workers, the sensor), from /proc/stat.
# cpu_snapshot PID...: user+nice+system, irq+softirq, steal, total (ticks, all CPUs), the PIDs' ticks.
cpu_snapshot() {
    local p t=0
    for p in "$@"; do t=$(( t + $(cpu_ticks "$p") )); done
    awk -v t="$t" 'NR == 1 {print $2 + $3 + $4, $7 + $8, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, t}' /proc/stat
}
# child_times VAR: the user and system CPU of the shell's waited-for children (bash `times`,
# second line, "0m1.500s 0m0.250s") into VAR. Runs `times` in this shell: a command substitution
# would fork and see none of them.
child_times() {
    times >"$WORK/times"
    printf -v "$1" '%s' "$(sed -n 2p "$WORK/times")"
}
# contention S0 S1 WRK0 WRK1 [SENSOR_TICKS]: the JSON fields from two snapshots and two
# child_times; SENSOR_TICKS, the sensor's share of the snapshots' PID ticks, is left out of nginx's.
contention() {
    python3 -c 'import json,sys
a, b = [list(map(float, x.split())) for x in sys.argv[1:3]]
secs = lambda t: sum(float(m) * 60 + float(x) for m, x in (v.rstrip("s").split("m") for v in t.split()))
w0, w1, sensor, hz = secs(sys.argv[3]), secs(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
d = [y - x for x, y in zip(a, b)]
usr, soft, steal, total, ours = d
wrk = w1 - w0
others = max(0.0, usr / hz - ours / hz - wrk)
print(json.dumps({"wrk_cpu_s": round(wrk, 2), "nginx_cpu_s": round((ours - sensor) / hz, 2),
    "machine_busy_percent": round(100 * (usr + soft) / total, 1),
    "softirq_percent": round(100 * soft / total, 1), "steal_percent": round(100 * steal / total, 1),
    "others_cpu_percent": round(100 * others / (total / hz), 1)}))' "$1" "$2" "$3" "$4" "${5:-0}" "$HZ"
}

# measure CONFIG ROUND: one wrk run in that configuration, appended to $ROWS.
measure() {
    local config=$1 r=$2 extra port=$PORT inst=$NGINX_PID s0 s1 w0 w1 pids sensor_ticks=0
    if [ "$config" = modsec ]; then port=$MODSEC_PORT; inst=$MODSEC_PID; fi
    case "$config" in
        sensor) start_sensor "$SENSOR" ;;
        sensor_base) start_sensor "$BASE_SENSOR" ;;
        sensor_crs) start_sensor "$SENSOR" --crs-dir "$CRS_DIR" ;;
        sensor_crs_base) start_sensor "$BASE_SENSOR" --crs-dir "$CRS_DIR" ;;
        sensor_cgroup) start_sensor "$SENSOR" --source cgroup ;;
    esac
    mapfile -t pids < <(pgrep -P "$inst")
    [ "${#pids[@]}" -gt 0 ] || die "no nginx worker under pid $inst"
    case "$config" in
        none)
            s0="$(cpu_snapshot "${pids[@]}")"; child_times w0
            run_wrk "$port" "$config-$r"
            child_times w1; s1="$(cpu_snapshot "${pids[@]}")"
            extra='{}'
            ;;
        sensor | sensor_base | sensor_crs | sensor_crs_base | sensor_cgroup)
            local c0 c1 drops captured parsed hwm crs_in crs_shed
            s0="$(cpu_snapshot "${pids[@]}")"; child_times w0
            c0="$(cpu_ticks "$SENSOR_PID")"
            run_wrk "$port" "$config-$r"
            c1="$(cpu_ticks "$SENSOR_PID")"
            child_times w1; s1="$(cpu_snapshot "${pids[@]}")"
            # the sensor's CPU is the benchmark's own, not contention
            s0="${s0% *} $(( ${s0##* } + c0 ))"; s1="${s1% *} $(( ${s1##* } + c1 ))"
            sensor_ticks=$(( c1 - c0 ))
            sleep 1.5 # the kernel counters reach /metrics once a second
            drops="$(metric palisade_sensor_ring_drops_total)"
            captured="$(metric palisade_sensor_packets_captured_total)"
            parsed="$(metric palisade_sensor_requests_parsed_total)"
            crs_in="$(metric palisade_sensor_crs_inspected_total)"
            crs_shed="$(metric palisade_sensor_crs_shed_total)"
            hwm="$(vm_kib "$SENSOR_PID" VmHWM)"
            if [ -z "$drops" ] || [ -z "$parsed" ]; then die "the sensor's metrics endpoint did not answer"; fi
            stop_sensor
            extra="$(python3 -c 'import json,sys; a=sys.argv[1:]; print(json.dumps({
                "sensor_cpu_s": round((int(a[1]) - int(a[0])) / int(a[2]), 2),
                "sensor_cpu_percent": round(100 * (int(a[1]) - int(a[0])) / int(a[2]) / int(a[3]), 1),
                "ring_drops": int(a[4]), "segments_captured": int(a[5]), "requests_parsed": int(a[6]),
                "sensor_vmhwm_kib": int(a[7]), "crs_inspected": int(a[8] or 0),
                "crs_shed": int(a[9] or 0)}))' \
                "$c0" "$c1" "$HZ" "$DURATION" "$drops" "$captured" "$parsed" "$hwm" "${crs_in:-0}" "${crs_shed:-0}")"
            ;;
        modsec)
            local l0 l1
            l0="$(modsec_lines)"
            s0="$(cpu_snapshot "${pids[@]}")"; child_times w0
            run_wrk "$port" "$config-$r"
            child_times w1; s1="$(cpu_snapshot "${pids[@]}")"
            l1="$(modsec_lines)"
            extra="{\"modsec_log_lines\": $((l1 - l0))}"
            ;;
    esac
    parse_wrk "$WORK/$config-$r.txt" "$config" "$r" "$extra" "$(contention "$s0" "$s1" "$w0" "$w1" "$sensor_ticks")" >>"$ROWS"
    local row; row="$(tail -n1 "$ROWS")"
    log "round $r $config: $row"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(1 if r["non_2xx"] else 0)' "$row" || {
        cat "$WORK/$config-$r.txt" >&2
        [ "$config" = modsec ] && tail -n 5 "$WORK/modsec/error.log" >&2
        die "$config: wrk got non-2xx responses (above); the measurement would not be of the benign request"
    }
}

log "warm-up (${WARMUP}s each)"
for port in "$PORT" "$MODSEC_PORT"; do
    ip netns exec "$NS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${HEADERS[@]}" \
        "http://$HOST_ADDR:$port$BENIGN" >/dev/null
done

CONFIGS=(none sensor)
[ "$SKIP_CGROUP" = 1 ] || CONFIGS+=(sensor_cgroup)
[ -n "$BASE_SENSOR" ] && CONFIGS+=(sensor_base)
[ "$SKIP_CRS" = 1 ] || CONFIGS+=(sensor_crs)
[ "$SKIP_CRS" = 1 ] || [ -z "$BASE_SENSOR" ] || CONFIGS+=(sensor_crs_base)
[ "$SKIP_MODSEC" = 1 ] || CONFIGS+=(modsec)
for r in $(seq "$ROUNDS"); do
    for k in $(seq 0 $(( ${#CONFIGS[@]} - 1 ))); do
        measure "${CONFIGS[$(( (r - 1 + k) % ${#CONFIGS[@]} ))]}" "$r"
    done
done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_END="$(uptime)"
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
VERSIONS="$(python3 -c 'import json,sys; a=sys.argv[1:]; print(json.dumps(dict(zip(a[::2], a[1::2]))))' \
    palisade-sensor "$("$SENSOR" --version)" \
    nginx "$(nginx -v 2>&1 | sed 's|.*nginx/||')" \
    nginx-light "$(pkgver nginx-light)" \
    libnginx-mod-http-modsecurity "$(pkgver libnginx-mod-http-modsecurity)" \
    modsecurity-nginx "$RULES_LOADED" \
    libmodsecurity3 "$(pkgver libmodsecurity3)" \
    modsecurity-crs "$(pkgver modsecurity-crs)" \
    wrk "$(pkgver wrk)")"

python3 - "$OUT" "$ROWS" "$DURATION" "$CONNECTIONS" "$THREADS" "$VERSIONS" \
    "$LOAD_START" "$LOAD_END" "$UPTIME_START" "$UPTIME_END" "$BASE_REV" "$BODY_BYTES" <<'PY'
import json, os, platform, statistics, sys
out, rows_path, duration, conns, threads, versions = sys.argv[1:7]
load_start, load_end, uptime_start, uptime_end, base_rev, body_bytes = sys.argv[7:13]
rows = [json.loads(l) for l in open(rows_path)]
configs = [c for c in ["none", "sensor", "sensor_cgroup", "sensor_base", "sensor_crs", "sensor_crs_base", "modsec"] if any(r["config"] == c for r in rows)]
others = [c for c in configs if c != "none"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
med = lambda xs: round(statistics.median(xs), 3) if xs else None
by = {c: [r for r in rows if r["config"] == c] for c in configs}
medians = {c: {"rps": med([r["rps"] for r in by[c]]), "p99_ms": med([r["p99_ms"] for r in by[c]]),
               "p50_ms": med([r["p50_ms"] for r in by[c]]),
               "others_cpu_percent": med([r["others_cpu_percent"] for r in by[c]])} for c in configs}
for c in ("sensor", "sensor_cgroup", "sensor_base", "sensor_crs", "sensor_crs_base"):
    s = by.get(c, [])
    if s:
        medians[c].update({
            "sensor_cpu_s": med([r["sensor_cpu_s"] for r in s]),
            "sensor_cpu_percent": med([r["sensor_cpu_percent"] for r in s]),
            "sensor_vmhwm_kib": med([r["sensor_vmhwm_kib"] for r in s]),
        })
base = medians["none"]
ratios = {c: {"rps": round(medians[c]["rps"] / base["rps"], 4),
              "p99": round(medians[c]["p99_ms"] / base["p99_ms"], 4)} for c in others}
rounds = {}
for r in rows:
    rounds.setdefault(r["round"], {"round": r["round"], "order": []})
    rounds[r["round"]]["order"].append(r["config"])
    rounds[r["round"]][r["config"]] = {k: v for k, v in r.items() if k not in ("round", "config")}
for rd in rounds.values():
    b = rd["none"]
    rd["ratio_rps"] = {c: round(rd[c]["rps"] / b["rps"], 4) for c in others}
    rd["ratio_p99"] = {c: round(rd[c]["p99_ms"] / b["p99_ms"], 4) for c in others}
# The same ratios paired within each round (less sensitive to load drifting between rounds).
ratios_paired = {c: {"rps": med([rd["ratio_rps"][c] for rd in rounds.values()]),
                     "p99": med([rd["ratio_p99"][c] for rd in rounds.values()])}
                 for c in others}
result = {
    "benchmark": "sensor_overhead",
    "script": "bench/sensor_overhead.sh",
    "what": "wrk req/s and p99 latency to nginx through a veth pair: (none) nginx alone, (sensor) with "
            "the eBPF sensor's TC programs on the veth, (sensor_cgroup) with its cgroup_skb program at "
            "the cgroup v2 root, (modsec) nginx + ModSecurity inline, sensor not attached; "
            "alternating rounds, order rotated each round",
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "mem_kib": int(mem), "kernel": platform.release(),
                "loadavg_at_start": load_start.split(), "loadavg_at_end": load_end.split(),
                "uptime_at_start": uptime_start.strip(), "uptime_at_end": uptime_end.strip(),
                "note": "shared machine; compare ratios within this file"},
    "versions": json.loads(versions),
    "setup": {
        "duration_secs": int(duration), "connections": int(conns), "wrk_threads": int(threads),
        "nginx": "worker_processes auto, static 3-byte file, keep-alive, access_log off",
        "request": ("GET" if int(body_bytes) == 0 else f"POST with a {body_bytes}-byte JSON body,")
                   + " /index.html?id=42 with Host: palisade-bench.test, User-Agent, Accept: */*",
        "sensor_base": f"the sensor built from {base_rev}" if base_rev else None,
        "modsec_config": "bench/modsec/modsecurity.conf: SecRuleEngine On, request body access, Debian "
                         "crs-setup.conf defaults (anomaly scoring, paranoia level 1, inbound threshold 5), "
                         "CRS 3.3.4 rules; checked before measuring: SQLi request -> 403, benign -> 200",
        "sensor": "palisade-sensor --source ebpf on the host veth end, port 8080, built-in rules",
        "sensor_cgroup": "palisade-sensor --source cgroup (at the cgroup2 mount), port 8080, built-in rules",
        "contention": "per run, from /proc/stat: others_cpu_percent = user+nice+system CPU not used by "
                      "wrk, the nginx workers or the sensor, in % of the whole machine (approximate: "
                      "softirq is reported apart in softirq_percent)",
    },
    "rounds": [rounds[k] for k in sorted(rounds)],
    "medians": medians,
    "ratios_to_none": ratios,
    "median_of_round_ratios_to_none": ratios_paired,
    "target_ratio_sensor_rps": 0.95,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(json.dumps({"medians": medians, "ratios_to_none": ratios,
                  "median_of_round_ratios_to_none": ratios_paired,
                  "loadavg": [load_start, load_end]}, indent=1))
PY
log "wrote $OUT"
