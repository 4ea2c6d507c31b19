#!/usr/bin/env bash
# Comparison 2: Palisade's detector vs libmodsecurity3 + OWASP CRS 3.3.4 (paranoia level 1,
# blocking mode, anomaly threshold 5) on the same requests (the dev corpus requests.jsonl,
# attack and benign halves). Single thread, each process pinned to one core (taskset -c $CORE).
#
#   bench/detector_vs_modsec.sh             # 3 runs of each
#   RUNS=5 CORPUS=/path/to/corpus bench/detector_vs_modsec.sh  # default: $PALISADE_CORPUS
#   CORE=0 bench/detector_vs_modsec.sh      # pin to core 0 instead of 1
#   SKIP_CRS=1 bench/detector_vs_modsec.sh  # leave out Palisade's CRS engine
#   EVAL_PROFILE=dist bench/detector_vs_modsec.sh     # `dist` without the profile-guided pass
#   EVAL_PROFILE=release bench/detector_vs_modsec.sh  # the release build `make demo` runs
#   CRS_BASE_EVAL=/path/to/eval_corpus bench/detector_vs_modsec.sh
#       # a further contender: the CRS engine of another build (e.g. the last release), in the
#       # same runs: before/after of an engine change beside ModSecurity
#
# With CRS, the engine also runs a second time with its value memo off (`--no-value-memo`):
# every request's values decoded, scanned and matched afresh, what traffic of values never
# seen before costs (the memo's gain depends on how often values recur).
#
# Three contenders: Palisade's built-in rules, Palisade's CRS engine running the same CRS as
# ModSecurity (Debian's 3.3.4, PL1, threshold 5; `--mode crs`: a request counts as detected
# when its attack-family rules reach the threshold), and libmodsecurity3 + CRS.
#
# Palisade side: sensor/examples/eval_corpus.rs (parse + inspect timed inside, one pass), built
# as `make packages` builds the sensor: the `dist` profile (release optimized across crates)
# guided by a profile of a training run (scripts/pgo-build.sh, on traffic written by
# bench/pgo/training_corpus.py, not this corpus). The first build takes about 13 minutes.
# ModSecurity side: bench/modsec/driver.c (transaction timed inside; wall and thread CPU time).
# Both are also measured from outside with /usr/bin/time (whole process CPU, peak RSS).
# Within a run the contenders go one after another, in an order that turns around every other
# run. The ratios come as ratios of the medians and, run by run, as medians of the ratios of
# each run (what a drift of the machine's speed across runs moves least): with CRS_BASE_EVAL
# set to a build of the same code, `crs_engine_vs_base` shows how far two equal engines differ.
# Writes bench/results/detector_vs_modsec.json and prints a summary.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
CORE=${CORE:-1}
CORPUS=${CORPUS:-${PALISADE_CORPUS:-$ROOT/../shared/corpus}}
OUT=${OUT:-$ROOT/bench/results/detector_vs_modsec.json}
MS_PASSES=${MS_PASSES:-1}
PY=${PY:-python3}
WORK=$(mktemp -d /tmp/palisade-modsec.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

for bin in gcc pkg-config /usr/bin/time taskset cargo; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/bench-deps.sh" >&2; exit 1; }
done
pkg-config --exists modsecurity || { echo "libmodsecurity-dev missing: run scripts/bench-deps.sh" >&2; exit 1; }
[[ -f /usr/share/modsecurity-crs/rules/REQUEST-949-BLOCKING-EVALUATION.conf ]] ||
  { echo "modsecurity-crs missing: run scripts/bench-deps.sh" >&2; exit 1; }

# build both sides before measuring
gcc -O2 -Wall -Wextra -o "$WORK/driver" "$ROOT/bench/modsec/driver.c" $(pkg-config --cflags --libs modsecurity)
"$PY" "$ROOT/bench/modsec/convert.py" "$CORPUS/requests.jsonl" "$WORK/requests.bin" >&2
# EVAL=path skips the build (e.g. while other builds hold cargo's lock)
# shellcheck source=lib/eval_corpus.sh
source "$ROOT/bench/lib/eval_corpus.sh"
EVAL_PROFILE=${EVAL_PROFILE:-pgo}
# which build of the harness the figures are for (recorded in the results)
BUILD=${EVAL:+given: $EVAL}
eval_corpus_build
export BUILD=${BUILD:-$EVAL_PROFILE profile: ${EVAL#"$ROOT"/}} CRS_BASE_EVAL=${CRS_BASE_EVAL:-}
if [[ -n ${CRS_BASE_EVAL:-} ]] && ! pcre2_is_debians "$CRS_BASE_EVAL"; then
  echo "warning: $CRS_BASE_EVAL links a bundled PCRE2, not libmodsecurity's (see bench/lib/eval_corpus.sh)" >&2
fi

: >"$WORK/runs.jsonl"
# measure TAG LABEL COMMAND...: one contender's run, pinned, timed from outside into
# $WORK/TAG.$run.time; the harness writes its own figures to $WORK/TAG.$run.json
measure() {
  local tag=$1 label=$2
  shift 2
  echo "run $run/$RUNS: $label" >&2
  /usr/bin/time -v -o "$WORK/$tag.$run.time" taskset -c "$CORE" "$@" >"$WORK/$tag.$run.out"
}
crs_args=(--corpus "$CORPUS" --crs-dir /usr/share/modsecurity-crs --paranoia 1 --mode crs)
run_palisade() { measure p "palisade detector" "$EVAL" --corpus "$CORPUS" --out "$WORK/p.$run.json"; }
run_crs() { measure c "palisade crs engine" "$EVAL" "${crs_args[@]}" --out "$WORK/c.$run.json"; }
run_crs_nomemo() {
  measure n "palisade crs engine, value memo off" "$EVAL" "${crs_args[@]}" --no-value-memo \
    --out "$WORK/n.$run.json"
}
run_crs_base() {
  measure b "palisade crs engine, base build ($CRS_BASE_EVAL)" "$CRS_BASE_EVAL" "${crs_args[@]}" \
    --out "$WORK/b.$run.json"
}
# the driver prints its figures: they go to m.$run.out, read as its JSON below
run_modsec() {
  measure m "modsecurity + crs" "$WORK/driver" "$ROOT/bench/modsec/modsecurity.conf" \
    "$WORK/requests.bin" "$MS_PASSES" "$WORK/m.$run.verdicts"
}
# One contender per function, run in this order in odd runs and in the reverse order in even
# runs: this machine's speed drifts between neighbouring processes by more than a 5-10 %
# change, and a fixed order would hand one contender the same neighbours and the same place in
# every run.
order=(run_palisade)
if [[ -z ${SKIP_CRS:-} ]]; then
  order+=(run_crs run_crs_nomemo)
  [[ -n ${CRS_BASE_EVAL:-} ]] && order+=(run_crs_base)
fi
order+=(run_modsec)
for run in $(seq "$RUNS"); do
  if (( run % 2 )); then
    for f in "${order[@]}"; do "$f"; done
  else
    for ((i = ${#order[@]} - 1; i >= 0; i--)); do "${order[$i]}"; done
  fi
  "$PY" - "$WORK" "$run" >>"$WORK/runs.jsonl" <<'EOF'
import json, sys
work, run = sys.argv[1:]
def gnu_time(path):
    v = {}
    for line in open(path):
        k, _, val = line.strip().rpartition(": ")
        v[k] = val
    return {"process_cpu_s": float(v["User time (seconds)"]) + float(v["System time (seconds)"]),
            "max_rss_kib": int(v["Maximum resident set size (kbytes)"])}
import os
p = json.load(open(f"{work}/p.{run}.json"))
m = json.load(open(f"{work}/m.{run}.out"))
pt, mt = gnu_time(f"{work}/p.{run}.time"), gnu_time(f"{work}/m.{run}.time")
def ours(p, pt):
    return {"requests": p["requests"], "attacks_detected": p["attacks"]["detected"],
            "attacks_total": p["attacks"]["total"], "tpr": p["attacks"]["tpr"],
            "benign_detected": p["benign"]["false_positives"], "benign_total": p["benign"]["total"],
            "fpr": p["benign"]["fpr"], "parse_errors": p["parse_errors"],
            "requests_per_s": p["throughput_unwarmed"]["requests_per_s"],
            "requests_per_process_cpu_s": p["requests"] / pt["process_cpu_s"], **pt}
extra = {}
if os.path.exists(f"{work}/c.{run}.json"):
    extra["palisade_crs"] = ours(json.load(open(f"{work}/c.{run}.json")), gnu_time(f"{work}/c.{run}.time"))
if os.path.exists(f"{work}/n.{run}.json"):
    extra["palisade_crs_nomemo"] = ours(json.load(open(f"{work}/n.{run}.json")), gnu_time(f"{work}/n.{run}.time"))
if os.path.exists(f"{work}/b.{run}.json"):
    extra["palisade_crs_base"] = ours(json.load(open(f"{work}/b.{run}.json")), gnu_time(f"{work}/b.{run}.time"))
print(json.dumps({"run": int(run), **extra,
  "palisade": {"requests": p["requests"], "attacks_detected": p["attacks"]["detected"],
               "attacks_total": p["attacks"]["total"], "tpr": p["attacks"]["tpr"],
               "benign_detected": p["benign"]["false_positives"], "benign_total": p["benign"]["total"],
               "fpr": p["benign"]["fpr"], "parse_errors": p["parse_errors"],
               "requests_per_s": p["throughput_unwarmed"]["requests_per_s"],
               "requests_per_process_cpu_s": p["requests"] / pt["process_cpu_s"], **pt},
  "modsecurity": {"requests": m["requests"], "attacks_detected": m["attacks"]["detected"],
               "attacks_total": m["attacks"]["total"], "tpr": m["attacks"]["tpr"],
               "benign_detected": m["benign"]["false_positives"], "benign_total": m["benign"]["total"],
               "fpr": m["benign"]["fpr"], "requests_per_s": m["requests_per_s"],
               "requests_per_cpu_s": m["requests_per_cpu_s"],
               "requests_per_process_cpu_s": m["requests"] * m["passes"] / mt["process_cpu_s"],
               "rules_load_s": m["rules_load_s"], "version": m["modsecurity"], **mt}}))
EOF
done

"$PY" - "$WORK/runs.jsonl" "$OUT" "$CORE" "$CORPUS" <<'EOF'
import json, os, platform, statistics, subprocess, sys
rows_path, out, core, corpus = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path)]
def med(side, key):
    return statistics.median(r[side][key] for r in rows)
keys = ("requests_per_s", "requests_per_process_cpu_s", "process_cpu_s", "max_rss_kib")
sides = (["palisade"] + (["palisade_crs"] if "palisade_crs" in rows[0] else [])
         + (["palisade_crs_nomemo"] if "palisade_crs_nomemo" in rows[0] else [])
         + (["palisade_crs_base"] if "palisade_crs_base" in rows[0] else []) + ["modsecurity"])
medians = {side: {k: med(side, k) for k in keys} for side in sides}
medians["modsecurity"]["requests_per_cpu_s"] = med("modsecurity", "requests_per_cpu_s")
last = rows[-1]
det = {side: {k: last[side][k] for k in ("attacks_detected", "attacks_total", "tpr",
              "benign_detected", "benign_total", "fpr")} for side in sides}
P, M = medians["palisade"], medians["modsecurity"]
ratios = {
    "requests_per_s_timed_inside": round(P["requests_per_s"] / M["requests_per_s"], 1),
    "requests_per_process_cpu_s": round(P["requests_per_process_cpu_s"] / M["requests_per_process_cpu_s"], 1),
    "max_rss": round(P["max_rss_kib"] / M["max_rss_kib"], 3),
}
if "palisade_crs" in medians:
    C = medians["palisade_crs"]
    ratios["crs_engine_requests_per_s_timed_inside"] = round(C["requests_per_s"] / M["requests_per_s"], 1)
    ratios["crs_engine_requests_per_s_vs_modsec_thread_cpu"] = round(C["requests_per_s"] / M["requests_per_cpu_s"], 1)
    ratios["crs_engine_requests_per_process_cpu_s"] = round(C["requests_per_process_cpu_s"] / M["requests_per_process_cpu_s"], 1)
if "palisade_crs_nomemo" in medians:
    N = medians["palisade_crs_nomemo"]
    ratios["crs_engine_no_memo_requests_per_s_timed_inside"] = round(N["requests_per_s"] / M["requests_per_s"], 1)
if "palisade_crs_base" in medians:
    B = medians["palisade_crs_base"]
    ratios["crs_base_requests_per_s_timed_inside"] = round(B["requests_per_s"] / M["requests_per_s"], 1)
    ratios["crs_engine_vs_base_requests_per_s"] = round(medians["palisade_crs"]["requests_per_s"] / B["requests_per_s"], 2)
# the same ratios run by run (contenders of one run ran minutes apart at most), and their
# medians: steadier than a ratio of medians when the machine's speed drifts across runs
per_run = {}
if "palisade_crs" in medians:
    per_run["crs_engine_vs_modsec_thread_cpu"] = [
        round(r["palisade_crs"]["requests_per_s"] / r["modsecurity"]["requests_per_cpu_s"], 1) for r in rows]
    per_run["crs_engine_vs_modsec_timed_inside"] = [
        round(r["palisade_crs"]["requests_per_s"] / r["modsecurity"]["requests_per_s"], 1) for r in rows]
if "palisade_crs_base" in medians:
    per_run["crs_engine_vs_base"] = [
        round(r["palisade_crs"]["requests_per_s"] / r["palisade_crs_base"]["requests_per_s"], 3) for r in rows]
for k, v in list(per_run.items()):
    ratios["median_of_runs_" + k] = round(statistics.median(v), 3 if k.endswith("base") else 1)
targets = {
    "throughput_10x": ratios["requests_per_process_cpu_s"] >= 10 and ratios["requests_per_s_timed_inside"] >= 10,
    "attack_detection_at_least_modsec": det["palisade"]["tpr"] >= det["modsecurity"]["tpr"],
    "fewer_benign_detections": det["palisade"]["benign_detected"] < det["modsecurity"]["benign_detected"],
}
if "palisade_crs" in medians:
    targets["crs_engine_50x"] = ratios["crs_engine_requests_per_s_vs_modsec_thread_cpu"] >= 50
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
crs = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "modsecurity-crs"], capture_output=True, text=True).stdout
lib = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libmodsecurity3"], capture_output=True, text=True).stdout
doc = {"benchmark": "detector_vs_modsec", "script": "bench/detector_vs_modsec.sh",
       "corpus": corpus + "/requests.jsonl",
       "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                   "pinned_core": int(core), "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
                   "note": "shared machine, other engineers compiling during the run; compare ratios"},
       "palisade_build": os.environ.get("BUILD", "?"),
       "crs_base_build": os.environ.get("CRS_BASE_EVAL") or None,
       "versions": {"libmodsecurity3": lib, "modsecurity-crs": crs,
                    "crs_config": "Debian crs-setup.conf defaults: anomaly scoring, PL1, inbound threshold 5; SecRuleEngine On"},
       "order": "contenders one after another within a run, the order reversed every other run",
       "medians": medians, "detection": det, "ratios": ratios, "per_run_ratios": per_run,
       "targets_met": targets, "runs": rows}
json.dump(doc, open(out, "w"), indent=1)
for side in sides:
    d, m = det[side], medians[side]
    print(f"{side:19} attacks {d['attacks_detected']}/{d['attacks_total']} ({d['tpr']:.3f})  "
          f"benign {d['benign_detected']}/{d['benign_total']} ({d['fpr']:.4f})  "
          f"{m['requests_per_s']:.0f} req/s timed inside, {m['requests_per_process_cpu_s']:.0f} req/process-CPU-s, "
          f"rss {m['max_rss_kib']/1024:.1f} MiB")
for k, v in per_run.items():
    print(f"per run, {k}: {' '.join(str(x) for x in v)}")
print(json.dumps({"ratios": ratios, "targets_met": targets}))
print(f"wrote {out}")
EOF
