#!/usr/bin/env python3
"""Send the demo's requests, as a load balancer would forward them.

Runs inside the demo's network namespace (the "load balancer" side). Reads a JSON plan from
stdin: {"target": "host:port", "requests": [{"client": ip, "method": m, "path": p,
"headers": {..}, "body": s, "delay_ms": n}, ...]} and sends each request on its own connection
with `X-Forwarded-For: <client>` (the real client as the load balancer saw it). Prints one JSON
line per request: {"i": index, "client": ip, "sent_ms": unix_ms, "status": code or null}.
Only the plan's target is ever contacted.
"""

import http.client
import json
import sys
import time


def main() -> int:
    plan = json.load(sys.stdin)
    host, port = plan["target"].rsplit(":", 1)
    for i, req in enumerate(plan["requests"]):
        time.sleep(req.get("delay_ms", 0) / 1000.0)
        headers = dict(req.get("headers", {}))
        headers["X-Forwarded-For"] = req["client"]
        headers.setdefault("Host", "shop.example")
        body = req.get("body") or None
        sent_ms = int(time.time() * 1000)
        status = None
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            # skip_host: the plan sets Host; the path is sent exactly as written.
            conn.putrequest(req["method"], req["path"], skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body.encode())))
            conn.endheaders(body.encode() if body is not None else None)
            status = conn.getresponse().status
            conn.close()
        except OSError as err:  # the demo reports it; one failed request does not stop the run
            print(json.dumps({"i": i, "client": req["client"], "error": str(err)}), flush=True)
            continue
        print(json.dumps({"i": i, "client": req["client"], "sent_ms": sent_ms, "status": status}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
