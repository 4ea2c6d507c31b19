#!/usr/bin/env bash
# Checks the real palisade-blocker and palisade-sensor against what their units promise systemd,
# without systemd (this also runs in containers where systemd is not PID 1):
#
# 1. Type=notify + WatchdogSec=: each binary, started with a NOTIFY_SOCKET and WATCHDOG_USEC as
#    systemd would, sends READY=1, then WATCHDOG=1 pings at least every WatchdogSec/2, and
#    STOPPING=1 on SIGTERM, after which it exits 0 within the unit's TimeoutStopSec.
# 2. SystemCallFilter=: run under strace through their main paths, they make no system call
#    outside the filters of their units (the units return EPERM for anything else, which would
#    break the service in production but not in tests that run without systemd).
#
#   config/systemd/check-services.sh            build (debug) and check; exit 1 on a failure
#   BIN_DIR=target/release config/systemd/check-services.sh   check prebuilt binaries
#
# Needs: strace, nats-server, curl, python3, systemd-analyze (for the syscall groups). As root,
# everything runs inside a private network namespace and the sensor is also checked in eBPF mode
# (attached to the namespace's loopback); otherwise on 127.0.0.1 in log mode only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
UNITS="$ROOT/config/systemd"
log() { printf '\033[1;34m[check-services]\033[0m %s\n' "$*" >&2; }

for tool in strace nats-server curl python3 systemd-analyze; do
    command -v "$tool" >/dev/null || { echo "check-services: $tool is required" >&2; exit 2; }
done

if [ -z "${BIN_DIR:-}" ]; then
    log "building palisade-blocker and palisade-sensor (debug)"
    (cd "$ROOT" && cargo build -q -p palisade-blocker -p palisade-sensor \
        --bin palisade-blocker --bin palisade-sensor)
    BIN_DIR="$ROOT/target/debug"
fi

WORK="$(mktemp -d)"
NS=""
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$NS" ]; then ip netns del "$NS" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Copies, so that a concurrent rebuild cannot swap the binaries mid-run.
cp "$BIN_DIR/palisade-blocker" "$BIN_DIR/palisade-sensor" "$WORK/"

RUN=()
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
    NS="palisade-services-$$"
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
    RUN=(ip netns exec "$NS")
fi
# Runs a command in the namespace (or here). Background jobs use "${RUN[@]}" directly, so that
# $! is the command itself and not a subshell.
in_ns() { "${RUN[@]}" "$@"; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NATS_PORT=$(free_port); ADMIN_PORT=$(free_port); METRICS_PORT=$(free_port); HTTP_PORT=$(free_port)
TOKEN="syscall-check-token-0123456789"

# Stops the traced program (strace's child) with SIGTERM, as systemd does, and waits for it.
stop_traced() {
    local tracer=$1 child
    child=$(pgrep -P "$tracer" || true)
    [ -n "$child" ] && kill -TERM "$child"
    for _ in $(seq 1 100); do kill -0 "$tracer" 2>/dev/null || return 0; sleep 0.1; done
    echo "check-services: pid $tracer did not stop within 10 s of SIGTERM" >&2
    return 1
}

"${RUN[@]}" nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do in_ns curl -s "http://127.0.0.1:$NATS_PORT" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5

cat >"$WORK/blocker.toml" <<TOML
[nats]
url = "nats://127.0.0.1:$NATS_PORT"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "$TOKEN"
[state]
dir = "$WORK/state"
TOML

# The sd_notify protocol, as systemd speaks it: a datagram socket in NOTIFY_SOCKET, the watchdog
# interval in WATCHDOG_USEC (3 s here, so that pings are due every 1.5 s).
notify_check() {
    local name=$1; shift
    log "$name: READY=1, WATCHDOG=1 pings and STOPPING=1 over NOTIFY_SOCKET"
    "${RUN[@]}" python3 - "$WORK/$name.notify" "$@" <<'PY'
import os, signal, socket, subprocess, sys, time

path, argv = sys.argv[1], sys.argv[2:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(0.2)
env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="3000000")
log = open(path + ".log", "w")
# systemd sets WATCHDOG_PID to the main process; `exec` keeps the shell's PID for the binary.
wrapped = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + argv
proc = subprocess.Popen(wrapped, env=env, stdout=log, stderr=subprocess.STDOUT)
events, start, stop_sent = [], time.monotonic(), None
while True:
    now = time.monotonic() - start
    try:
        for line in sock.recv(4096).decode().splitlines():
            events.append((now, line))
    except socket.timeout:
        pass
    ready = [t for t, e in events if e == "READY=1"]
    if stop_sent is None and ready and now - ready[0] > 7:
        proc.send_signal(signal.SIGTERM)
        stop_sent = now
    if proc.poll() is not None or now > 40:
        break
if proc.poll() is None:
    proc.kill()
    sys.exit(f"{argv[0]} did not exit within {40 - (stop_sent or 40):.0f} s of SIGTERM")
ready = [t for t, e in events if e == "READY=1"]
pings = [t for t, e in events if e == "WATCHDOG=1" and ready and t > ready[0] and t < stop_sent]
gaps = [b - a for a, b in zip([ready[0]] + pings, pings + [stop_sent])] if ready else []
stopping = [t for t, e in events if e == "STOPPING=1"]
problems = []
if not ready:
    problems.append("no READY=1")
if len(pings) < 3:
    problems.append(f"only {len(pings)} WATCHDOG=1 pings in 7 s")
if gaps and max(gaps) > 1.5 + 0.5:
    problems.append(f"a watchdog gap of {max(gaps):.2f} s (interval 3 s, expected <= 1.5 s)")
if not stopping:
    problems.append("no STOPPING=1 after SIGTERM")
if proc.returncode != 0:
    problems.append(f"exit status {proc.returncode} after SIGTERM")
name = os.path.basename(argv[0])
if problems:
    sys.exit(f"{name}: " + "; ".join(problems))
print(f"{name}: READY=1 after {ready[0]:.2f} s, {len(pings)} watchdog pings "
      f"(largest gap {max(gaps):.2f} s), STOPPING=1, exit 0 "
      f"{time.monotonic() - start - stop_sent:.2f} s after SIGTERM")
PY
}

notify_check blocker "$WORK/palisade-blocker" --config "$WORK/blocker.toml" --state-dir "$WORK/notify-state"
printf '%s\n' '203.0.113.10 - - [25/Nov/2026:02:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8" "-"' \
    >"$WORK/notify-access.log"
notify_check sensor "$WORK/palisade-sensor" --source log --log-file "$WORK/notify-access.log" \
    --log-format nginx --sensor-id notify --nats-url "nats://127.0.0.1:$NATS_PORT"

log "blocker: start, /readyz, /metrics, manual block and release, SIGTERM"
"${RUN[@]}" strace -f -qq -o "$WORK/blocker.strace" "$WORK/palisade-blocker" --config "$WORK/blocker.toml" \
    >"$WORK/blocker.log" 2>&1 &
BLOCKER=$!; PIDS+=("$BLOCKER")
for _ in $(seq 1 100); do in_ns curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.2; done
in_ns curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { cat "$WORK/blocker.log" >&2; exit 1; }
in_ns curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" >/dev/null
in_ns curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"cidr": "8.8.8.0/24", "ttl_secs": 60}' "http://127.0.0.1:$ADMIN_PORT/v1/blocks" >/dev/null
in_ns curl -sf -X DELETE -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/v1/blocks/8.8.8.0%2F24"
sleep 1.5
stop_traced "$BLOCKER"

log "sensor (log mode): one attack line, publish, /metrics, SIGTERM"
printf '%s\n' '203.0.113.9 - - [25/Nov/2026:02:00:00 +0000] "GET /?q=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1" 200 5 "-" "curl/8" "-"' \
    >"$WORK/access.log"
"${RUN[@]}" strace -f -qq -o "$WORK/sensor-log.strace" "$WORK/palisade-sensor" --source log \
    --log-file "$WORK/access.log" --log-format nginx --log-from-start --sensor-id syscalls \
    --nats-url "nats://127.0.0.1:$NATS_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    >"$WORK/sensor-log.log" 2>&1 &
SENSOR=$!; PIDS+=("$SENSOR")
sleep 3
in_ns curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^palisade_sensor_reports_published_total 1' \
    || { echo "check-services: the log-mode sensor published nothing" >&2; cat "$WORK/sensor-log.log" >&2; exit 1; }
stop_traced "$SENSOR"

TRACES=("blocker:$WORK/blocker.strace" "sensor:$WORK/sensor-log.strace")
if [ -n "$NS" ]; then
    notify_check sensor-ebpf "$WORK/palisade-sensor" --source ebpf --interface lo \
        --port "$HTTP_PORT" --sensor-id notify-ebpf --nats-url "nats://127.0.0.1:$NATS_PORT"
    log "sensor (eBPF mode on the namespace's loopback): one attack request, SIGTERM"
    "${RUN[@]}" python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 >/dev/null 2>&1 &
    PIDS+=($!)
    "${RUN[@]}" strace -f -qq -o "$WORK/sensor-ebpf.strace" "$WORK/palisade-sensor" --source ebpf \
        --interface lo --port "$HTTP_PORT" --sensor-id syscalls-ebpf \
        --nats-url "nats://127.0.0.1:$NATS_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
        >"$WORK/sensor-ebpf.log" 2>&1 &
    SENSOR=$!; PIDS+=("$SENSOR")
    # Attached once it logs its startup summary; the HTTP server must answer too.
    for _ in $(seq 1 100); do grep -q "sensor started" "$WORK/sensor-ebpf.log" && break; sleep 0.2; done
    for _ in $(seq 1 50); do in_ns curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/" && break; sleep 0.1; done
    in_ns curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"
    sleep 2
    in_ns curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^palisade_sensor_detections_total' \
        || { echo "check-services: the eBPF sensor detected nothing" >&2; cat "$WORK/sensor-ebpf.log" >&2; exit 1; }
    stop_traced "$SENSOR"
    TRACES+=("sensor:$WORK/sensor-ebpf.strace")
else
    log "not root: the sensor's eBPF mode is not checked"
fi

python3 - "$UNITS" "${TRACES[@]}" <<'PY'
import re, subprocess, sys

units_dir, traces = sys.argv[1], sys.argv[2:]
cache = {}

def expand(name):
    """Syscalls of a name: a group (@...) expanded by systemd-analyze, or a plain syscall."""
    if not name.startswith("@"):
        return {name}
    if name not in cache:
        out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", name],
                             capture_output=True, text=True, check=True).stdout
        calls = set()
        for line in out.splitlines()[1:]:
            word = line.strip()
            if word.startswith("@"):
                calls |= expand(word.split()[0])
            elif re.fullmatch(r"[a-z0-9_]+", word):
                calls.add(word)
        cache[name] = calls
    return cache[name]

def allowed(unit):
    """Applies the unit's SystemCallFilter= lines in order (allow list, then ~deny lists)."""
    calls = None
    for line in open(f"{units_dir}/palisade-{unit}.service"):
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1].strip()
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        if deny:
            calls = (calls if calls is not None else set()) - names
        else:
            calls = (calls or set()) | names
    return calls

failed = False
for spec in traces:
    unit, path = spec.split(":", 1)
    used = set()
    for line in open(path):
        m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
        if m:
            used.add(m.group(1))
    # execve is the exec systemd itself performs after installing the filter; allowed anyway.
    outside = sorted(used - allowed(unit) - {"execve"})
    print(f"{path.rsplit('/', 1)[1]}: {len(used)} distinct system calls, "
          f"outside palisade-{unit}.service's filter: {', '.join(outside) or 'none'}")
    failed |= bool(outside)
sys.exit(1 if failed else 0)
PY
