#!/usr/bin/env python3
"""Builds the differential input set for @detectSQLi/@detectXSS.

Output: a binary file of records, each a 4-byte little-endian length then the raw bytes,
plus a tag file (one line per record: source class) so disagreements can be classified.
Sources (the dev corpus, in the directory $PALISADE_CORPUS names): every string value of requests.jsonl (URI, path, raw and
URL-decoded query/body parameter names and values, header values, cookie values, JSON
string values, raw body), attacks.jsonl payloads, hand-written
classic payloads (ref/payloads.txt), and deterministic random mutations of all of them.
"""
import json, os, random, struct, sys, urllib.parse

_DIR = os.environ.get(
    "PALISADE_CORPUS",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 5, "shared", "corpus"),
)
CORPUS = os.path.join(_DIR, "requests.jsonl")
ATTACKS = os.path.join(_DIR, "attacks.jsonl")

def unq(b):
    return urllib.parse.unquote_to_bytes(b.replace(b"+", b" "))

def json_strings(v, out):
    if isinstance(v, str):
        out.append(v.encode("utf-8", "surrogatepass"))
    elif isinstance(v, dict):
        for k, x in v.items():
            out.append(k.encode("utf-8", "surrogatepass"))
            json_strings(x, out)
    elif isinstance(v, list):
        for x in v:
            json_strings(x, out)
    elif v is not None and not isinstance(v, bool):
        out.append(str(v).encode())

def params(s, out):
    for part in s.split(b"&"):
        if not part:
            continue
        k, _, v = part.partition(b"=")
        out += [k, v, unq(k), unq(v)]

def from_request(r):
    out = []
    uri = r["uri"].encode("utf-8", "surrogateescape")
    out.append(uri)
    path, _, q = uri.partition(b"?")
    out += [path, unq(path), q]
    params(q, out)
    for k, v in r["headers"].items():
        vb = v.encode("utf-8", "surrogateescape")
        out.append(vb)
        if k.lower() == "cookie":
            for c in vb.split(b";"):
                ck, _, cv = c.strip().partition(b"=")
                out += [ck, cv, unq(cv)]
    body = r["body"].encode("utf-8", "surrogateescape")
    if body:
        out.append(body)
        ct = r["headers"].get("Content-Type", "")
        if "json" in ct:
            try:
                json_strings(json.loads(body), out)
            except Exception:
                pass
        elif "urlencoded" in ct:
            params(body, out)
    return out

def mutate(rng, s):
    b = bytearray(s)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(b))
        if op == 0 and b:
            del b[min(pos, len(b) - 1)]
        elif op == 1:
            b[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2:
            b[pos:pos] = rng.choice([b"'", b'"', b"`", b"--", b"/*", b"*/", b"#", b"<", b">",
                                     b"=", b" OR ", b" UNION SELECT ", b"\\", b"\x00", b"(",
                                     b")", b";", b"1", b"0x", b"e", b".", b"$", b"@", b"&",
                                     b"<script>", b" on", b"javascript:", b"\xc0", b"\n"])
        elif op == 3 and b:
            b = b[:pos]
        elif op == 4 and b:
            i = min(pos, len(b) - 1)
            b[i] = rng.randrange(256)
        else:
            b = b.upper() if rng.random() < .5 else b.lower()
    return bytes(b)

def main():
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 20261203)
    items = []  # (tag, bytes)
    seen = set()
    def add(tag, b):
        if b not in seen:
            seen.add(b)
            items.append((tag, b))
    for line in open(CORPUS, encoding="utf-8", errors="surrogateescape"):
        r = json.loads(line)
        for v in from_request(r):
            add("corpus-" + r["class"], v)
    for line in open(ATTACKS, encoding="utf-8", errors="surrogateescape"):
        a = json.loads(line)
        p = a["payload"].encode("utf-8", "surrogateescape")
        add("attacks", p)
        add("attacks", unq(p))
    for line in open(sys.argv[1], "rb"):
        add("payloads", line.rstrip(b"\n"))
    base = [b for _, b in items]
    for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 60000):
        add("mutation", mutate(rng, rng.choice(base)))
    for i in range(20000):
        n = rng.randint(0, 40)
        alpha = rng.choice([bytes(range(256)), b"'\"`-#/*()=<>;, \t\n1aeEx.\\@$:ORUNIONSELECT"])
        add("random", bytes(rng.choice(alpha) for _ in range(n)))
    with open(sys.argv[2], "wb") as f, open(sys.argv[2] + ".tags", "w") as t:
        for tag, b in items:
            f.write(struct.pack("<I", len(b)))
            f.write(b)
            t.write(tag + "\n")
    print(len(items), "inputs", file=sys.stderr)

main()
