#!/usr/bin/env python3
"""bench/outbox_lag.py PORT...: samples the outbox lag of a running tickpool until SIGTERM/SIGINT,
then prints one JSON line: samples, p50/p99/max lag in ms and the largest backlog seen. PORT...:
the Redis node, or every master of a cluster (each holds its own buckets' outboxes).

The lag is what tickpool_outbox_lag_seconds reports, at millisecond resolution and every
--every ms: the age of the oldest entry still in any outbox stream (the writer trims what it has
committed, so that is the oldest event not yet in Postgres; an empty outbox is 0). Stream ids
start with Redis's Unix ms, and Redis runs on this host, so now − id needs no clock sync.
Plain sockets and RESP: no Python Redis client needed.
"""
import argparse
import json
import signal
import socket
import time

from benchlib import pct


def command(sock, rfile, *args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    sock.sendall(b"".join(out))
    return reply(rfile)


def reply(rfile):
    line = rfile.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = rfile.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [reply(rfile) for _ in range(n)]
    raise ValueError(f"unexpected RESP {line!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ports", type=int, nargs="+")
    ap.add_argument("--every", type=int, default=200, help="ms between samples [200]")
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    nodes = []
    for port in args.ports:
        sock = socket.create_connection(("127.0.0.1", port))
        nodes.append((sock, sock.makefile("rb"), []))
    lags, backlog_max, errors = [], 0, 0
    while not stop:
        t0 = time.monotonic()
        try:
            oldest, backlog = None, 0
            for sock, rfile, streams in nodes:
                if not streams:
                    streams += sorted(command(sock, rfile, "KEYS", "tp:*:outbox") or [])
                for s in streams:
                    first = command(sock, rfile, "XRANGE", s, "-", "+", "COUNT", "1")
                    backlog += command(sock, rfile, "XLEN", s)
                    if first:
                        ms = int(first[0][0].split("-")[0])
                        oldest = ms if oldest is None else min(oldest, ms)
            now = int(time.time() * 1000)
            lags.append(max(now - oldest, 0) if oldest is not None else 0)
            backlog_max = max(backlog_max, backlog)
        except (OSError, ValueError, ConnectionError):
            errors += 1
            if errors > 50:
                break
        time.sleep(max(0.0, args.every / 1000 - (time.monotonic() - t0)))
    s = sorted(lags)
    print(json.dumps({"samples": len(s), "every_ms": args.every, "lag_p50_ms": pct(s, 50),
                      "lag_p99_ms": pct(s, 99), "lag_max_ms": s[-1] if s else 0,
                      "backlog_max": backlog_max, "errors": errors}))


if __name__ == "__main__":
    main()
