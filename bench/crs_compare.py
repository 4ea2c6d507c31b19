#!/usr/bin/env python3
"""Compare our CRS engine's per-request verdicts with libmodsecurity's (bench/modsec/crs_driver).

Both inputs are JSON lines {"id": "...", "rules": [ids...], "score": N, ...}; they are joined by
id. A request agrees exactly when both the set of matched rule ids and the score are equal.

Prints: requests compared, exact agreement (% and count), then the disagreements grouped by rule
id (ids matched only by ours / only by modsec, with counts and 3 example request ids each), then
the requests whose rule sets agree but whose scores differ. With --requests requests.jsonl (the
corpus file, keyed by "id"), the examples also show method and uri.

Usage: crs_compare.py ours.jsonl modsec.jsonl [--requests requests.jsonl] [--min 99.0]
Exit status: 0 when agreement >= --min, 1 below it, 2 on bad input.
"""

import argparse
import collections
import json
import sys


def load(path):
    """Map id -> (frozenset of rule ids, score) from a verdict JSON-lines file."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                rid = str(r["id"])
                rules = frozenset(int(x) for x in r.get("rules", []))
                score = int(r.get("score", 0))
            except (ValueError, KeyError, TypeError) as e:
                sys.stderr.write(f"{path}:{lineno}: bad verdict line: {e}\n")
                sys.exit(2)
            if rid in out:
                sys.stderr.write(f"{path}:{lineno}: duplicate id {rid}\n")
                sys.exit(2)
            out[rid] = (rules, score)
    return out


def load_requests(path):
    """Map id -> short description (method and uri) from the corpus requests.jsonl."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                uri = r.get("uri", "")
                out[str(r["id"])] = f'{r.get("method", "?")} {uri[:100]}'
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ours")
    ap.add_argument("modsec")
    ap.add_argument("--requests", help="corpus requests.jsonl, to describe the examples")
    ap.add_argument("--min", type=float, default=99.0, help="minimum exact agreement in %%")
    args = ap.parse_args()

    ours, ref = load(args.ours), load(args.modsec)
    desc = load_requests(args.requests) if args.requests else {}
    common = [i for i in ref if i in ours]
    only_ours_ids = len(set(ours) - set(ref))
    only_ref_ids = len(set(ref) - set(ours))

    agree = 0
    only_ours = collections.defaultdict(list)  # rule id -> request ids
    only_ref = collections.defaultdict(list)
    score_only = []  # (request id, our score, modsec score)
    score_diffs = 0
    for rid in common:
        (r_ours, s_ours), (r_ref, s_ref) = ours[rid], ref[rid]
        if r_ours == r_ref and s_ours == s_ref:
            agree += 1
            continue
        for rule in r_ours - r_ref:
            only_ours[rule].append(rid)
        for rule in r_ref - r_ours:
            only_ref[rule].append(rid)
        if s_ours != s_ref:
            score_diffs += 1
            if r_ours == r_ref:
                score_only.append((rid, s_ours, s_ref))

    n = len(common)
    pct = 100.0 * agree / n if n else 0.0
    print(f"requests compared: {n}")
    if only_ours_ids or only_ref_ids:
        print(f"  (ids only in ours: {only_ours_ids}, only in modsec: {only_ref_ids}; not compared)")
    print(f"exact agreement: {pct:.2f}% ({agree}/{n})")
    print(f"score differences: {score_diffs} ({len(score_only)} with identical rule sets)")

    def example(rid):
        return f"{rid} [{desc[rid]}]" if rid in desc else rid

    def section(title, groups):
        if not groups:
            return
        print(f"\n{title}:")
        for rule, rids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(f"  {rule}: {len(rids)}")
            for rid in rids[:3]:
                print(f"      {example(rid)}")

    section("rules matched only in ours", only_ours)
    section("rules matched only in modsec", only_ref)
    if score_only:
        print("\nscore-only differences (ours vs modsec):")
        for rid, a, b in score_only[:20]:
            print(f"  {example(rid)}: {a} vs {b}")
        if len(score_only) > 20:
            print(f"  ... {len(score_only) - 20} more")

    if n == 0 or pct < args.min:
        print(f"\nFAIL: agreement {pct:.2f}% below {args.min}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
