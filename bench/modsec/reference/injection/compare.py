#!/usr/bin/env python3
"""Compares two verdict files ("<sqli> <fp> <xss>" per record) over the same input file and
prints agreement rates for SQLi (verdict + fingerprint) and XSS, overall and per input source,
plus sample disagreements. Usage: compare.py inputs.bin ref.txt test.txt [samples]"""
import collections, struct, sys

def records(path):
    data = open(path, "rb").read()
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        yield data[pos + 4:pos + 4 + n]
        pos += 4 + n

inputs = list(records(sys.argv[1]))
tags = open(sys.argv[1] + ".tags").read().split()
ref = open(sys.argv[2]).read().splitlines()
got = open(sys.argv[3]).read().splitlines()
nsamp = int(sys.argv[4]) if len(sys.argv) > 4 else 10
assert len(inputs) == len(ref) == len(got) == len(tags), (len(inputs), len(ref), len(got))
tot = collections.Counter()
bad = collections.defaultdict(list)
for inp, tag, r, g in zip(inputs, tags, ref, got):
    rs, rf, rx = r.split(" ")
    gs, gf, gx = g.split(" ")
    tot[tag] += 1
    if (rs, rf) != (gs, gf):
        cls = "sqli ref=%s got=%s" % (rs, gs) if rs != gs else "sqli fingerprint"
        bad[("sqli", tag)].append((cls, inp, rf, gf))
    if rx != gx:
        bad[("xss", tag)].append(("xss ref=%s got=%s" % (rx, gx), inp, "", ""))
n = len(inputs)
for kind in ("sqli", "xss"):
    nb = sum(len(v) for (k, _), v in bad.items() if k == kind)
    print(f"{kind}: {n - nb}/{n} agree ({100 * (n - nb) / n:.4f} %)")
    for tag in sorted(tot):
        b = bad.get((kind, tag), [])
        print(f"  {tag:14} {tot[tag] - len(b)}/{tot[tag]}")
    classes = collections.Counter(c for (k, _), v in bad.items() if k == kind for c, *_ in v)
    for c, m in classes.most_common():
        print(f"  class {c!r}: {m}")
    shown = 0
    for (k, tag), v in sorted(bad.items()):
        if k != kind:
            continue
        for c, inp, rf, gf in v:
            if shown < nsamp:
                print(f"    [{tag}] {c} ref={rf} got={gf} input={inp[:160]!r}")
                shown += 1
