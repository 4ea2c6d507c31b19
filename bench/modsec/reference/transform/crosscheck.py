#!/usr/bin/env python3
"""Checks that ref/direct.cc (direct calls) agrees with the rule engine path (ref/rules.c) on
generated inputs: every input goes through every transformation in a real transaction.
  ref/crosscheck.py target/diff-in.txt target/direct target/rules [max inputs]"""
import subprocess
import sys

NAMES = open(__file__.replace("crosscheck.py", "rules.c")).read()
NAMES = NAMES.split("static const char *names[] = {")[1].split("NULL}")[0]
NAMES = [n.strip().strip('"') for n in NAMES.replace("\n", " ").split(",") if n.strip()]

inputs = []
for line in open(sys.argv[1]):
    hexv = line.rstrip("\n").split(" ", 1)[1] if " " in line else ""
    if len(hexv) < 20000:
        inputs.append(hexv)
inputs = sorted(set(inputs))[: int(sys.argv[4]) if len(sys.argv) > 4 else 2000]
rules = subprocess.run([sys.argv[3]], input="\n".join(inputs) + "\n", capture_output=True,
                       text=True).stdout.split("--\n")
req = "".join(f"{n} {h}\n" for h in inputs for n in NAMES)
direct = subprocess.run([sys.argv[2]], input=req, capture_output=True, text=True).stdout.split("\n")
bad = 0
for k, h in enumerate(inputs):
    got = dict(l.split(" ", 1) if " " in l else (l, "") for l in rules[k].splitlines())
    for m, n in enumerate(NAMES):
        want = direct[k * len(NAMES) + m]
        if got.get(str(100 + m)) != want:
            bad += 1
            if bad < 10:
                print("DIFF", n, h, "rule:", got.get(str(100 + m)), "direct:", want)
print(f"{len(inputs)} inputs x {len(NAMES)} transformations, {bad} differences")
