#!/usr/bin/env bash
# Comparison 1: Palisade's sensor in log mode vs CrowdSec (replay mode) vs fail2ban-regex on the
# same large nginx access log. Measures lines/s, CPU seconds (user+sys), peak RSS (/usr/bin/time -v)
# and which attacker addresses each tool flagged (precision/recall against the generator's ground
# truth). Every measured process is pinned to one core (taskset -c $CORE).
#
#   bench/log_mode.sh                  # 1,000,000 lines, 3 runs per tool
#   RUNS=5 LINES=2000000 bench/log_mode.sh
#   CROWDSEC_LINES=1000000 bench/log_mode.sh   # CrowdSec on the whole log (slow: see below)
#
# CrowdSec 1.4.6 replays at a few hundred lines per CPU second here, so by default it reads only
# the first $CROWDSEC_LINES lines of the same log (its precision/recall are scored against the
# attackers whose first attack line lies in that prefix); lines/s and CPU/line stay comparable.
#
# Writes bench/results/log_mode.json (all runs + medians + ratios) and prints a summary.
# Needs: scripts/bench-deps.sh (fail2ban, crowdsec unpacked under /opt/palisade-bench, GNU time,
# nats-server, nats-py in .venv) and `cargo build --release -p palisade-sensor`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
LINES=${LINES:-1000000}
CORE=${CORE:-1}
SEED=${SEED:-palisade-bench-1}
DATA=${DATA:-$ROOT/bench/data}
OUT=${OUT:-$ROOT/bench/results/log_mode.json}
CROWDSEC_PREFIX=${CROWDSEC_PREFIX:-/opt/palisade-bench/crowdsec}
PY=${PY:-$ROOT/.venv/bin/python}
SENSOR=${SENSOR:-$ROOT/target/release/palisade-sensor}
CROWDSEC_LINES=${CROWDSEC_LINES:-20000}
F2B_FILTERS=${F2B_FILTERS:-nginx-botsearch php-url-fopen apache-badbots nginx-bad-request}

LOG=$DATA/access-${LINES}.log
TRUTH=$LOG.truth.json
WORK=$(mktemp -d /tmp/palisade-logmode.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP:-} ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}
# time_run NAME RUN CMD...: runs CMD pinned to $CORE under GNU time; stdout/stderr to files.
time_run() {
  local name=$1 run=$2
  shift 2
  /usr/bin/time -v -o "$WORK/$name.$run.time" taskset -c "$CORE" "$@" \
    >"$WORK/$name.$run.out" 2>"$WORK/$name.$run.err"
}

for bin in "$SENSOR" "$CROWDSEC_PREFIX/usr/bin/crowdsec" /usr/bin/fail2ban-regex /usr/bin/time nats-server; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/bench-deps.sh / cargo build --release -p palisade-sensor" >&2; exit 1; }
done

mkdir -p "$DATA" "$(dirname "$OUT")"
if [[ ! -s $LOG || ! -s $TRUTH ]]; then
  python3 "$ROOT/bench/gen_access_log.py" --lines "$LINES" --seed "$SEED" --out "$LOG" --truth "$TRUTH"
fi
# warm the page cache so the first run does not pay for disk reads
cat "$LOG" >/dev/null

# ---------------------------------------------------------------- CrowdSec: private config
CS_LINES=$((CROWDSEC_LINES < LINES ? CROWDSEC_LINES : LINES))
CS_LOG=$LOG
if ((CS_LINES < LINES)); then
  CS_LOG=$WORK/access-prefix-$CS_LINES.log
  head -n "$CS_LINES" "$LOG" >"$CS_LOG"
fi
CS=$WORK/crowdsec
CS_HUB=$CROWDSEC_PREFIX/usr/share/crowdsec/hub
mkdir -p "$CS/etc/parsers/s00-raw" "$CS/etc/parsers/s01-parse" "$CS/etc/parsers/s02-enrich" \
  "$CS/etc/scenarios" "$CS/etc/postoverflows" "$CS/etc/collections" "$CS/data" "$CS/hub"
for item in blockers collections parsers postoverflows scenarios .index.json; do
  ln -s "$CS_HUB/$item" "$CS/hub/$item"
done
cp "$CROWDSEC_PREFIX"/usr/share/crowdsec/data/* "$CS/data/"
# the package ships sec-lists' web/path_traversal.txt under its source name; the
# http-path-traversal-probing scenario loads it as dest_file http_path_traversal.txt
cp "$CS/data/path_traversal.txt" "$CS/data/http_path_traversal.txt"
cp -r "$CROWDSEC_PREFIX/etc/crowdsec/patterns" "$CS/etc/patterns"
cp "$CROWDSEC_PREFIX/etc/crowdsec/profiles.yaml" "$CROWDSEC_PREFIX/etc/crowdsec/simulation.yaml" "$CS/etc/"
# The items the Debian package enables for nginx (its postinst list), minus ssh/apache/geoip:
# raw (syslog + non-syslog), nginx-logs, dateparse/http-logs/whitelists, and the
# crowdsecurity/base-http-scenarios + crowdsecurity/http-cve collections' scenarios.
# Installed items are symlinks <config_dir>/<type>/[<stage>/]<basename> -> hub file, as cscli makes.
ln -sf "$CS_HUB/parsers/s00-raw/crowdsecurity/syslog-logs.yaml" "$CS/etc/parsers/s00-raw/"
ln -sf "$CS_HUB/parsers/s01-parse/crowdsecurity/nginx-logs.yaml" "$CS/etc/parsers/s01-parse/"
for p in dateparse-enrich http-logs whitelists; do
  ln -sf "$CS_HUB/parsers/s02-enrich/crowdsecurity/$p.yaml" "$CS/etc/parsers/s02-enrich/"
done
CS_SCENARIOS=()
for coll in base-http-scenarios http-cve nginx; do
  while read -r s; do CS_SCENARIOS+=("$s"); done < <(
    sed -n '/^scenarios:/,/^[a-z]/p' "$CS_HUB/collections/crowdsecurity/$coll.yaml" | sed -n 's/^ *- *//p')
done
for s in "${CS_SCENARIOS[@]}"; do
  ln -sf "$CS_HUB/scenarios/$s.yaml" "$CS/etc/scenarios/$(basename "$s").yaml"
done
CS_PORT=$(free_port)
cat >"$CS/config.yaml" <<EOF
common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: $CS/etc/
  data_dir: $CS/data/
  simulation_path: $CS/etc/simulation.yaml
  hub_dir: $CS/hub/
  index_path: $CS/hub/.index.json
  notification_dir: $CS/etc/notifications/
  plugin_dir: $CROWDSEC_PREFIX/usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: $CS/etc/acquis.yaml
  parser_routines: 1
cscli:
  output: human
db_config:
  log_level: info
  type: sqlite
  db_path: $CS/data/crowdsec.db
api:
  client:
    insecure_skip_verify: false
    credentials_path: $CS/etc/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:$CS_PORT
    profiles_path: $CS/etc/profiles.yaml
    trusted_ips: [127.0.0.1]
prometheus:
  enabled: false
EOF
: >"$CS/etc/acquis.yaml"
CSCLI=("$CROWDSEC_PREFIX/usr/bin/cscli" -c "$CS/config.yaml")
CS_VERSION=$("$CROWDSEC_PREFIX/usr/bin/crowdsec" -version 2>&1 | sed -n 's/.*version: //p' | head -1)

# ---------------------------------------------------------------- scoring helper
score() { # score NAME FILE_WITH_IPS -> JSON {flagged,tp,fp,fn,precision,recall}
  "$PY" - "$TRUTH" "$2" <<'EOF'
import json, sys
import os
prefix = int(os.environ.get("PREFIX", "0"))
truth = {ip for ip, t in json.load(open(sys.argv[1]))["attacker_ips"].items()
         if not prefix or t["first_attack_line"] <= prefix}
flagged = {l.strip() for l in open(sys.argv[2]) if l.strip()}
tp = len(flagged & truth); fp = len(flagged - truth); fn = len(truth - flagged)
print(json.dumps({"flagged": len(flagged), "tp": tp, "fp": fp, "fn": fn,
    "precision": tp / len(flagged) if flagged else 0.0, "recall": tp / len(truth)}))
EOF
}
time_json() { # time_json FILE -> {"cpu_s","wall_s","max_rss_kib"}
  "$PY" - "$1" <<'EOF'
import json, sys
v = {}
for line in open(sys.argv[1]):
    k, _, val = line.strip().rpartition(": ")
    v[k] = val
wall = 0.0
for part in v["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":"):
    wall = wall * 60 + float(part)
cpu = float(v["User time (seconds)"]) + float(v["System time (seconds)"])
print(json.dumps({"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                  "max_rss_kib": int(v["Maximum resident set size (kbytes)"])}))
EOF
}

RESULTS=$WORK/runs.jsonl
: >"$RESULTS"
record() { # record TOOL RUN TIMEFILE SCOREJSON EXTRAJSON
  "$PY" - "$1" "$2" "$(time_json "$3")" "$4" "$5" "${LINES_READ:-$LINES}" >>"$RESULTS" <<'EOF'
import json, sys
tool, run, t, s, extra, lines = sys.argv[1:]
t = json.loads(t)
row = {"tool": tool, "run": int(run), **t, **json.loads(s), **json.loads(extra)}
row["lines_read"] = int(lines)
row["lines_per_s"] = round(int(lines) / t["wall_s"], 1)
row["lines_per_cpu_s"] = round(int(lines) / t["cpu_s"], 1)
print(json.dumps(row))
EOF
}

# ---------------------------------------------------------------- Palisade
palisade_run() {
  local run=$1 port sd
  port=$(free_port)
  sd=$WORK/nats.$run
  mkdir -p "$sd"
  taskset -c 0 nats-server -js -a 127.0.0.1 -p "$port" -sd "$sd" >"$sd/log" 2>&1 &
  local npid=$!
  PIDS+=("$npid")
  wait_port "$port"
  time_run palisade "$run" "$SENSOR" --source log --log-file "$LOG" --log-format nginx \
    --log-from-start --exit-at-eof --nats-url "nats://127.0.0.1:$port" --sensor-id bench
  # the reports as the blocker would see them: read the stream back
  "$PY" - "nats://127.0.0.1:$port" >"$WORK/palisade.$run.sev" <<'EOF'
import asyncio, json, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    js = nc.jetstream()
    info = await js.stream_info("PALISADE_REPORTS")
    total = info.state.messages
    sub = await js.subscribe("palisade.reports.>", ordered_consumer=True)
    rank = {"low": 1, "medium": 2, "high": 3, "critical": 4}
    ips, seen = {}, 0  # client_ip -> highest severity reported
    while seen < total:
        msg = await sub.next_msg(timeout=10)
        r = json.loads(msg.data)
        ips[r["client_ip"]] = max(ips.get(r["client_ip"], 0), rank.get(r["severity"], 0))
        seen += 1
    await nc.close()
    for ip in sorted(ips):
        print(f"{ip}\t{ips[ip]}")
    print(json.dumps({"reports": total}), file=sys.stderr)

asyncio.run(main())
EOF
  kill "$npid"
  wait "$npid" 2>/dev/null || true
  cut -f1 "$WORK/palisade.$run.sev" >"$WORK/palisade.$run.ips"
  # what a blocker policy that ignores low (or low+medium) severity reports would act on
  awk -F'\t' '$2 >= 2 {print $1}' "$WORK/palisade.$run.sev" >"$WORK/palisade.$run.ips.medium"
  awk -F'\t' '$2 >= 3 {print $1}' "$WORK/palisade.$run.sev" >"$WORK/palisade.$run.ips.high"
  local summary
  summary=$(tail -n 1 "$WORK/palisade.$run.out")
  record palisade "$run" "$WORK/palisade.$run.time" "$(score palisade "$WORK/palisade.$run.ips")" \
    "$("$PY" -c 'import json,sys; s=json.loads(sys.argv[1]); print(json.dumps({"reports": s["reports_published"], "line_errors": s["log"]["line_errors"], "min_severity_medium": json.loads(sys.argv[2]), "min_severity_high": json.loads(sys.argv[3])}))' \
      "$summary" "$(score palisade "$WORK/palisade.$run.ips.medium")" "$(score palisade "$WORK/palisade.$run.ips.high")")"
}

# ---------------------------------------------------------------- CrowdSec
crowdsec_run() {
  local run=$1
  rm -f "$CS/data/crowdsec.db"
  "${CSCLI[@]}" machines add bench --password "bench-$run-$RANDOM$RANDOM" --force \
    -f "$CS/etc/local_api_credentials.yaml" --url "http://127.0.0.1:$CS_PORT" >/dev/null 2>&1
  # local API only (no agent, no Central API) on core 0; the measured agent runs -no-api
  taskset -c 0 "$CROWDSEC_PREFIX/usr/bin/crowdsec" -c "$CS/config.yaml" -no-cs >"$WORK/lapi.$run.log" 2>&1 &
  local lpid=$!
  PIDS+=("$lpid")
  wait_port "$CS_PORT"
  time_run crowdsec "$run" "$CROWDSEC_PREFIX/usr/bin/crowdsec" -c "$CS/config.yaml" \
    -dsn "file://$CS_LOG" -type nginx -no-api
  sleep 2 # alerts are pushed asynchronously
  "${CSCLI[@]}" alerts list -o json --limit 0 >"$WORK/crowdsec.$run.alerts.json"
  kill "$lpid"
  wait "$lpid" 2>/dev/null || true
  "$PY" - "$WORK/crowdsec.$run.alerts.json" >"$WORK/crowdsec.$run.ips" 2>"$WORK/crowdsec.$run.extra" <<'EOF'
import collections, json, sys
alerts = json.load(open(sys.argv[1])) or []
ips = {a["source"]["ip"] for a in alerts if a.get("source", {}).get("ip")}
by = collections.Counter(a.get("scenario", "?") for a in alerts)
print("\n".join(sorted(ips)))
print(json.dumps({"alerts": len(alerts), "alerts_by_scenario": dict(by.most_common())}), file=sys.stderr)
EOF
  LINES_READ=$CS_LINES record crowdsec "$run" "$WORK/crowdsec.$run.time" \
    "$(PREFIX=$CS_LINES score crowdsec "$WORK/crowdsec.$run.ips")" "$(cat "$WORK/crowdsec.$run.extra")"
}

# ---------------------------------------------------------------- fail2ban-regex
fail2ban_run() {
  local run=$1 f
  : >"$WORK/fail2ban.$run.all"
  # one process per filter, run back to back; CPU, wall time and lines are summed over filters
  local cpu=0 wall=0 rss=0
  for f in $F2B_FILTERS; do
    time_run "fail2ban-$f" "$run" fail2ban-regex -o ip "$LOG" "/etc/fail2ban/filter.d/$f.conf"
    grep -E '^[0-9a-fA-F.:]+$' "$WORK/fail2ban-$f.$run.out" | sed "s/^/$f /" >>"$WORK/fail2ban.$run.all" || true
  done
  cut -d' ' -f2 "$WORK/fail2ban.$run.all" | sort -u >"$WORK/fail2ban.$run.ips"
  # a combined GNU-time-like file: summed user/sys/wall, max RSS
  "$PY" - "$WORK" "$run" $F2B_FILTERS >"$WORK/fail2ban.$run.time" <<'EOF'
import sys
work, run, *filters = sys.argv[1:]
user = sys_ = wall = 0.0; rss = 0
for f in filters:
    v = {}
    for line in open(f"{work}/fail2ban-{f}.{run}.time"):
        k, _, val = line.strip().rpartition(": ")
        v[k] = val
    user += float(v["User time (seconds)"]); sys_ += float(v["System time (seconds)"])
    w = 0.0
    for part in v["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":"):
        w = w * 60 + float(part)
    wall += w
    rss = max(rss, int(v["Maximum resident set size (kbytes)"]))
print(f"User time (seconds): {user}\nSystem time (seconds): {sys_}")
m, s = divmod(wall, 60)
print(f"Elapsed (wall clock) time (h:mm:ss or m:ss): {int(m)}:{s:.2f}")
print(f"Maximum resident set size (kbytes): {rss}")
EOF
  # fail2ban bans after `maxretry` matches within `findtime` (jail.conf: 5, nginx-botsearch 2;
  # findtime 10 min); attackers' bursts in the generated log last at most 10 minutes.
  "$PY" - "$WORK/fail2ban.$run.all" "$TRUTH" >"$WORK/fail2ban.$run.extra" <<'EOF'
import collections, json, sys
maxretry = {"nginx-botsearch": 2}
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
per = collections.Counter((f, ip) for f, ip in rows)
ban = {ip for (f, ip), n in per.items() if n >= maxretry.get(f, 5)}
truth = set(json.load(open(sys.argv[2]))["attacker_ips"])
tp = len(ban & truth)
print(json.dumps({"matched_lines": len(rows),
                  "matches_by_filter": dict(collections.Counter(f for f, _ in rows)),
                  "would_ban": {"flagged": len(ban), "tp": tp, "fp": len(ban - truth),
                                "recall": tp / len(truth),
                                "precision": tp / len(ban) if ban else 0.0}}))
EOF
  record fail2ban "$run" "$WORK/fail2ban.$run.time" "$(score fail2ban "$WORK/fail2ban.$run.ips")" \
    "$(cat "$WORK/fail2ban.$run.extra")"
}

for run in $(seq "$RUNS"); do
  [[ -n ${ONLY:-} ]] && { "${ONLY}_run" "$run"; continue; }
  echo "run $run/$RUNS: palisade" >&2
  palisade_run "$run"
  echo "run $run/$RUNS: crowdsec" >&2
  crowdsec_run "$run"
  echo "run $run/$RUNS: fail2ban-regex" >&2
  fail2ban_run "$run"
done

"$PY" - "$RESULTS" "$OUT" "$TRUTH" "$LINES" "$CORE" "$CS_VERSION" "$F2B_FILTERS" "${CS_SCENARIOS[*]}" <<'EOF'
import json, platform, statistics, subprocess, sys, os
rows_path, out, truth_path, lines, core, cs_version, f2b_filters, cs_scen = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path)]
truth = json.load(open(truth_path))
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
tools = {}
for tool in ("palisade", "crowdsec", "fail2ban"):
    rs = [r for r in rows if r["tool"] == tool]
    if not rs:
        continue
    med = {k: statistics.median(r[k] for r in rs)
           for k in ("lines_per_s", "lines_per_cpu_s", "cpu_s", "wall_s", "max_rss_kib")}
    med["lines_read"] = rs[-1]["lines_read"]
    last = rs[-1]
    detection = {k: last[k] for k in ("flagged", "tp", "fp", "fn", "precision", "recall")}
    for k in ("min_severity_medium", "min_severity_high", "would_ban", "alerts_by_scenario",
              "matches_by_filter"):
        if k in last:
            detection[k] = last[k]
    tools[tool] = {"median": med, "detection": detection, "runs": rs}
ratios = {}
for peer in ("crowdsec", "fail2ban"):
    if "palisade" not in tools or peer not in tools:
        continue
    p, q = tools["palisade"]["median"], tools[peer]["median"]
    ratios[f"palisade_vs_{peer}"] = {
        "lines_per_s": round(p["lines_per_s"] / q["lines_per_s"], 2),
        "lines_per_cpu_s": round(p["lines_per_cpu_s"] / q["lines_per_cpu_s"], 2),
        "max_rss": round(p["max_rss_kib"] / q["max_rss_kib"], 3),
    }
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
doc = {
    "benchmark": "log_mode", "script": "bench/log_mode.sh",
    "log": {"file": os.path.basename(truth_path).removesuffix(".truth.json"), "lines": int(lines), "attack_lines": truth["attack_lines"], "attackers": truth["attackers"],
            "benign_clients": truth["benign_clients"], "seed": truth["seed"]},
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                "pinned_core": int(core), "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
                "note": "shared machine, other engineers compiling during the run; compare ratios"},
    "versions": {"palisade-sensor": sh(os.environ.get("SENSOR", "target/release/palisade-sensor"), "--version"),
                 "crowdsec": cs_version, "fail2ban": sh("fail2ban-regex", "--version")},
    "config": {"crowdsec_scenarios": cs_scen.split(), "fail2ban_filters": f2b_filters.split(),
               "palisade": "built-in rules, --source log --log-format nginx"},
    "tools": tools, "ratios": ratios,
}
json.dump(doc, open(out, "w"), indent=1)
print(f"{'tool':10} {'lines':>8} {'lines/s':>10} {'lines/cpu-s':>11} {'cpu s':>8} {'rss MiB':>8} {'flagged':>8} {'prec':>6} {'recall':>6}")
for t, v in tools.items():
    m, d = v["median"], v["detection"]
    print(f"{t:10} {m['lines_read']:>8} {m['lines_per_s']:>10.0f} {m['lines_per_cpu_s']:>11.0f} {m['cpu_s']:>8.2f} {m['max_rss_kib']/1024:>8.1f} "
          f"{d['flagged']:>8} {d['precision']:>6.3f} {d['recall']:>6.3f}")
print(json.dumps(ratios))
print(f"wrote {out}")
EOF
