#!/usr/bin/env python3
"""bench/aof_bytes.py DIR...: the bytes Redis appends to its AOF while it runs, until SIGTERM or
SIGINT, then one JSON line {"bytes": N, "files": K, "samples": S}. DIR...: the Redis node's
--dir, or every master's (each writes its own AOF).

INFO persistence's aof_current_size starts again from the new base file after every AOF
rewrite, and a rewrite runs within most bench scenarios (once the AOF has doubled past 64 MB),
so the bytes are counted on the files instead: every --every ms the size of each
appendonlydir/*.incr.aof. An incremental file stops growing when a rewrite starts (Redis opens
a new one) and is deleted only when the rewrite has finished, a second or more later, so the
largest size seen of each file is its final size; the sum of each file's growth from its first
sample is what was appended.
"""
import argparse
import glob
import json
import os
import signal
import time


def sizes(dirs):
    out = {}
    for d in dirs:
        for f in glob.glob(os.path.join(d, "appendonlydir", "*.incr.aof")):
            try:
                out[f] = os.path.getsize(f)
            except FileNotFoundError:
                pass  # deleted by a rewrite's end between the glob and the stat
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--every", type=float, default=100, help="ms between samples [100]")
    a = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    first = sizes(a.dirs)  # what was there before: only growth from here counts
    last, samples = dict(first), 1
    while not stop:
        time.sleep(a.every / 1000)
        for f, n in sizes(a.dirs).items():
            last[f] = max(n, last.get(f, 0))
        samples += 1
    for f, n in sizes(a.dirs).items():
        last[f] = max(n, last.get(f, 0))
    print(json.dumps({"bytes": sum(n - first.get(f, 0) for f, n in last.items()),
                      "files": len(last), "samples": samples}), flush=True)


if __name__ == "__main__":
    main()
