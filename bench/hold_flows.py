#!/usr/bin/env python3
"""Open N TCP connections to an HTTP server, send each a request head that is not finished
(request line and headers, no blank line) and hold them all open, for bench/sensor_flows.sh.

    hold_flows.py --host 10.199.200.2 --port 8080 --flows 10000 --status S --release R

Once every connection is open and its partial head sent, the figures are written to the
`--status` file (JSON, written atomically). The connections are then held until the `--release`
file appears (or `--timeout` seconds pass), checked for still being open (the server has not
closed them), closed, and the final figures written to `--status` again. Exit status 0 when
every connection opened and was still open at release, 1 otherwise.
"""

import argparse
import json
import os
import resource
import select
import socket
import sys
import time


def write_status(path, status):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def head(i):
    # About 130 bytes: what a browser sends before its cookies, minus the final CRLF.
    return (
        f"GET /flows/{i}?session={i:08d} HTTP/1.1\r\n"
        "Host: palisade-bench.test\r\n"
        "User-Agent: palisade-bench-flows/1.0\r\n"
        "Accept: */*\r\n"
        f"X-Flow: {i}\r\n"
    ).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--flows", type=int, default=10000)
    ap.add_argument("--status", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    want = args.flows + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))

    socks, failed, errors = [], 0, {}
    t0 = time.monotonic()
    for i in range(args.flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((args.host, args.port))
            s.sendall(head(i))
            socks.append(s)
        except OSError as e:
            failed += 1
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            s.close()
    status = {
        "phase": "held",
        "requested": args.flows,
        "connected": len(socks),
        "failed": failed,
        "errors": errors,
        "connect_secs": round(time.monotonic() - t0, 2),
        "head_bytes": len(head(args.flows - 1)),
    }
    write_status(args.status, status)
    print(json.dumps(status), file=sys.stderr)

    deadline = time.monotonic() + args.timeout
    while not os.path.exists(args.release) and time.monotonic() < deadline:
        time.sleep(0.2)
    # select() cannot take fds >= 1024: check with poll.
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLRDHUP)
    closed_by_server = 0
    for fd, ev in poller.poll(0):
        if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            closed_by_server += 1
    for s in socks:
        s.close()
    status.update(
        phase="released",
        open_at_release=len(socks) - closed_by_server,
        closed_by_server=closed_by_server,
        released_by="file" if os.path.exists(args.release) else "timeout",
    )
    write_status(args.status, status)
    print(json.dumps(status), file=sys.stderr)
    return 0 if failed == 0 and closed_by_server == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
