#!/usr/bin/env python3
"""Convert the corpus' requests.jsonl into the length-prefixed file read by driver.c.

Record layout (all integers u32 little-endian, strings as length + bytes, no terminator):
  id, class, client_ip, method, uri, header count, (name, value) * count, body
The headers are exactly those of the JSON line plus Content-Length when a body is present
without one, i.e. the same request bytes sensor/examples/eval_corpus.rs builds.

Usage: convert.py requests.jsonl out.bin
"""

import json
import struct
import sys


def s(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def main():
    src, dst = sys.argv[1], sys.argv[2]
    n = 0
    with open(src, encoding="utf-8") as f, open(dst, "wb") as out:
        for lineno, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{src}:{lineno}: bad JSON: {e}")
            headers = list(sorted(r["headers"].items()))
            body = r.get("body") or ""
            if body and not any(k.lower() == "content-length" for k, _ in headers):
                headers.append(("Content-Length", str(len(body.encode("utf-8")))))
            rec = s(r["id"]) + s(r["class"]) + s(r.get("client_ip") or "192.0.2.1")
            rec += s(r["method"]) + s(r["uri"]) + struct.pack("<I", len(headers))
            for k, v in headers:
                rec += s(k) + s(v)
            rec += s(body)
            out.write(rec)
            n += 1
    print(json.dumps({"requests": n, "out": dst}))


if __name__ == "__main__":
    main()
