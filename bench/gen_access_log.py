#!/usr/bin/env python3
"""Generate a large nginx `combined` access log with attackers mixed into ordinary traffic.

The request part of every line (request line, status, size, Referer, User-Agent) is sampled from
the labelled development corpus (access.log + access.labels.tsv in the directory --corpus or
$PALISADE_CORPUS names; the corpus is not shipped with the project): benign lines
are real replayed traffic and per-UA requests, attack lines carry payloads in the request line,
User-Agent or Referer. Lines are re-addressed and re-timed:

* benign clients: addresses drawn from 198.18.0.0/15 (RFC 2544, reserved for benchmarking), a
  heavy-tailed number of requests each, spread over one day;
* attackers: addresses from the same range, each sends a burst of 1..60 attack lines (one or a few
  categories, like a scanner or a manual attempt) over a few minutes, mixed with benign lines of its
  own (attackers also browse).

Ground truth (which addresses are attackers, how many attack lines each sent, categories) is written
next to the log as JSON. Deterministic: the same seed and corpus give byte-identical output.

Usage: gen_access_log.py [--lines N] [--seed S] [--corpus DIR] --out FILE [--truth FILE]
"""

import argparse
import csv
import ipaddress
import json
import os
import random
import re
import sys
from datetime import datetime, timedelta, timezone

LINE_RE = re.compile(r"^(\S+) (\S+) (\S+) \[([^\]]+)\] (.*)$")
BASE = int(ipaddress.IPv4Address("198.18.0.0"))
SPAN = 1 << 17  # 198.18.0.0/15
START = datetime(2025, 3, 10, 0, 0, 0, tzinfo=timezone.utc)
DAY_SECS = 86_400


def load_corpus(corpus):
    """Return (benign_tails, attacks_by_category) where a tail is the text after the timestamp."""
    with open(f"{corpus}/access.labels.tsv", newline="") as f:
        labels = list(csv.DictReader(f, delimiter="\t"))
    with open(f"{corpus}/access.log", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(labels) != len(lines):
        sys.exit(f"labels ({len(labels)}) and log lines ({len(lines)}) differ")
    benign, attacks = [], {}
    for label, line in zip(labels, lines):
        m = LINE_RE.match(line)
        if not m:
            sys.exit(f"line {label['line']} is not nginx combined: {line[:120]}")
        tail = m.group(5)
        if label["class"] == "attack":
            attacks.setdefault(label["category"], []).append(tail)
        else:
            benign.append(tail)
    return benign, attacks


def fmt_time(t):
    return (START + timedelta(seconds=t)).strftime("%d/%b/%Y:%H:%M:%S +0000")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", default="palisade-bench-1")
    ap.add_argument(
        "--corpus",
        default=os.environ.get(
            "PALISADE_CORPUS",
            os.path.normpath(
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpus")
            ),
        ),
    )
    ap.add_argument("--attackers", type=int, default=2_000)
    ap.add_argument("--benign-clients", type=int, default=60_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--truth")
    args = ap.parse_args()
    for name in ("access.log", "access.labels.tsv"):
        if not os.path.isfile(os.path.join(args.corpus, name)):
            sys.exit(
                f"gen_access_log: no {name} in {args.corpus}: name the dev corpus directory "
                "with --corpus or PALISADE_CORPUS"
            )
    if args.attackers + args.benign_clients > SPAN:
        sys.exit("more clients than addresses in 198.18.0.0/15")

    rng = random.Random(args.seed)
    benign, attacks = load_corpus(args.corpus)
    categories = sorted(attacks)
    # Category weights follow the corpus' own mix (path traversal and RFI scanners dominate).
    cat_weights = [len(attacks[c]) for c in categories]

    addrs = rng.sample(range(SPAN), args.attackers + args.benign_clients)
    ips = [str(ipaddress.IPv4Address(BASE + a)) for a in addrs]
    attacker_ips, benign_ips = ips[: args.attackers], ips[args.attackers :]

    events = []  # (time, ip, tail, is_attack)
    truth = {}
    for ip in attacker_ips:
        # burst size: many one-shot probes, some short sweeps, a few long scans
        r = rng.random()
        n = 1 if r < 0.3 else rng.randint(2, 8) if r < 0.75 else rng.randint(9, 60)
        cats = rng.choices(categories, weights=cat_weights, k=rng.randint(1, 2))
        t0 = rng.uniform(0, DAY_SECS - 900)
        span = rng.uniform(1, 600)
        sent = {}
        for _ in range(n):
            c = rng.choice(cats)
            events.append((t0 + rng.uniform(0, span), ip, rng.choice(attacks[c]), True))
            sent[c] = sent.get(c, 0) + 1
        for _ in range(rng.randint(0, 10)):  # attackers also browse
            events.append((t0 + rng.uniform(0, span), ip, rng.choice(benign), False))
        truth[ip] = {"attack_lines": n, "categories": sent}

    remaining = args.lines - len(events)
    if remaining < len(benign_ips):
        sys.exit(f"--lines {args.lines} too small for the attack traffic ({len(events)} lines)")
    # heavy-tailed benign request counts (Pareto weights), at least one request per client
    weights = [rng.paretovariate(1.2) for _ in benign_ips]
    extra = rng.choices(range(len(benign_ips)), weights=weights, k=remaining - len(benign_ips))
    counts = [1] * len(benign_ips)
    for i in extra:
        counts[i] += 1
    for ip, k in zip(benign_ips, counts):
        t0 = rng.uniform(0, DAY_SECS)
        for _ in range(k):
            events.append(((t0 + rng.expovariate(1 / 1800)) % DAY_SECS, ip, rng.choice(benign), False))

    events.sort(key=lambda e: e[0])
    with open(args.out, "w", encoding="utf-8") as out:
        for lineno, (t, ip, tail, is_attack) in enumerate(events, 1):
            out.write(f"{ip} - - [{fmt_time(t)}] {tail}\n")
            if is_attack and "first_attack_line" not in truth[ip]:
                # lets a benchmark score a tool that only read a prefix of the log
                truth[ip]["first_attack_line"] = lineno

    attack_lines = sum(v["attack_lines"] for v in truth.values())
    summary = {
        "generator": "bench/gen_access_log.py",
        "seed": args.seed,
        "corpus": args.corpus,
        "lines": len(events),
        "attack_lines": attack_lines,
        "attackers": len(truth),
        "benign_clients": len(benign_ips),
        "address_range": "198.18.0.0/15",
        "attacker_ips": truth,
    }
    truth_path = args.truth or args.out + ".truth.json"
    with open(truth_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print(
        json.dumps({k: v for k, v in summary.items() if k != "attacker_ips"}, sort_keys=True),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
