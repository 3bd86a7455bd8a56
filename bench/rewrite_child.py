#!/usr/bin/python3
"""What an AOF rewrite's child writes and what its CPU goes to, on a dataset a bench run left.

`bench/run ... --keep` leaves the run's Redis directory; its appendonlydir/*.base.rdb is the
dataset as it was at the fork of the run's last rewrite (the incr file after it is not loaded).
This script:
  1. loads that base into a private Redis started by scripts/lib/services.sh's start_redis
     itself (tpenv's EmbeddedRedis, tests/lib/tpenv.py, as bench/rewrite_faults.py: its flags,
     AOF everysec switched on once loaded, rdbcompression no, listpack limits);
  2. lists its keys grouped by name pattern (digits as #): type, encoding, elements and
     MEMORY USAGE, and for the hot key index its fields' and values' mean bytes;
  3. for each step in --steps, changes the dataset and runs BGREWRITEAOF --reps times, printing
     the child's CPU (INFO's used_cpu_user_children / used_cpu_sys_children, Redis's
     getrusage of its reaped children), the rewrite's wall time, the base it wrote and
     used_memory. Steps are applied in order, each on what the one before left:
       whole       nothing changed
       no-betl     the round's bets lists `betl:*` deleted
       no-idemhot  the hot key index (`idemhot`, `idemyoung`) deleted
       shortval    every `idemhot` value cut to its first 16 bytes (same entries, fewer bytes)
       subN        `idemhot` moved into N hashes `idemhot:<crc32(field) % N>`, each small
                   enough to stay a listpack (hash-max-listpack-entries 128): the same bytes in
                   far fewer allocations (bench/README.md "Session 29: the third rewrite's dataset")
One JSON line per rewrite (--jsonl appends them to a file too).

    bench/run ws-bets --find-max ... --keep        # "kept /tmp/tp-bench-XXXXXX"
    bench/rewrite_child.py /tmp/tp-bench-XXXXXX/redis/appendonlydir/appendonly.aof.4.base.rdb
    bench/rewrite_child.py BASE.rdb --steps whole,no-betl,no-idemhot --reps 3
    bench/rewrite_child.py BASE.rdb --steps whole,sub65536

Timed: the child's CPU is a measurement; run it alone on the machine (no other bench, build or
test; bench/README.md). Needs python3-redis.
"""

import argparse
import collections
import json
import os
import re
import shutil
import sys
import time
import zlib

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind_redis import wait_ready  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "lib"))
import tpenv  # noqa: E402  (EmbeddedRedis: Redis as scripts/lib/services.sh starts it)

P = "tp:{b0}:"
LEN = {"hash": "HLEN", "list": "LLEN", "zset": "ZCARD", "set": "SCARD", "stream": "XLEN",
       "string": "STRLEN"}


def start(base, e):
    """tpenv.EmbeddedRedis `e` (started with `--appendonly no` after start_redis's flags) loading
    `base` as its RDB; AOF switched on after the load (its first rewrite then writes the loaded
    dataset: waited for)."""
    os.makedirs(e.dir, exist_ok=True)
    shutil.copy(base, os.path.join(e.dir, "dump.rdb"))
    e.start()
    r = redis.Redis(port=e.port)
    wait_ready(r, 10)
    while r.info("persistence")["loading"]:
        time.sleep(0.1)
    r.config_set("appendonly", "yes")
    time.sleep(0.2)
    wait_rewrite(r)
    return r


def wait_rewrite(r):
    while True:
        p = r.info("persistence")
        if not p["aof_rewrite_in_progress"] and not p["aof_rewrite_scheduled"]:
            return p
        time.sleep(0.02)


def scan(r):
    """Markdown: the keys by pattern, largest MEMORY USAGE first; the hot index's bytes."""
    g = collections.defaultdict(lambda: [0, 0, 0, set()])

    def chunk(keys):
        p = r.pipeline(transaction=False)
        for k in keys:
            p.type(k)
            p.object("encoding", k)
            p.execute_command("MEMORY", "USAGE", k, "SAMPLES", 0)
        res = p.execute()
        types = [res[3 * i].decode() for i in range(len(keys))]
        p = r.pipeline(transaction=False)
        for k, t in zip(keys, types):
            p.execute_command(LEN[t], k)
        lens = p.execute()
        for i, k in enumerate(keys):
            e = g[re.sub(r"\d+", "#", k.decode(errors="replace"))]
            e[0] += 1
            e[1] += res[3 * i + 2] or 0
            e[2] += lens[i]
            e[3].add(f"{types[i]}/{res[3 * i + 1].decode()}")

    buf = []
    for k in r.scan_iter(count=1000):
        buf.append(k)
        if len(buf) == 1000:
            chunk(buf)
            buf = []
    if buf:
        chunk(buf)
    total = sum(v[1] for v in g.values())
    mem = r.info("memory")
    print(f"used_memory {mem['used_memory'] / 1e6:.1f} MB, keys {r.dbsize()}, "
          f"Σ MEMORY USAGE {total / 1e6:.1f} MB")
    print("| pattern | keys | type/encoding | elements | MEMORY USAGE MB | share | B an element |")
    print("|---|---|---|---|---|---|---|")
    for pat, (c, mu, n, te) in sorted(g.items(), key=lambda x: -x[1][1]):
        if mu < 0.0005 * total:
            continue
        print(f"| `{pat}` | {c} | {', '.join(sorted(te))} | {n} | {mu / 1e6:.2f} | "
              f"{100 * mu / total:.1f} % | {mu / n if n else 0:.1f} |")
    for h in (P + "idemhot", P + "idemyoung"):
        m = fs = vs = 0
        for f, v in r.hscan_iter(h, count=1000):
            m, fs, vs = m + 1, fs + len(f), vs + len(v)
            if m == 200000:
                break
        if m:
            print(f"`{h}`: {r.hlen(h)} entries; of {m}: field {fs / m:.1f} B, value {vs / m:.1f} B")
    sys.stdout.flush()


def rewrite(r, d, step, reps, jsonl):
    for i in range(reps):
        c0 = r.info("cpu")
        t0 = time.monotonic()
        r.bgrewriteaof()
        time.sleep(0.02)
        wait_rewrite(r)
        wall = time.monotonic() - t0
        c1 = r.info("cpu")
        ad = os.path.join(d, "appendonlydir")
        base = sum(os.path.getsize(os.path.join(ad, f)) for f in os.listdir(ad) if ".base." in f)
        row = {"step": step, "rep": i,
               "child_user_ms": round(1000 * (c1["used_cpu_user_children"] -
                                              c0["used_cpu_user_children"])),
               "child_sys_ms": round(1000 * (c1["used_cpu_sys_children"] -
                                             c0["used_cpu_sys_children"])),
               "wall_s": round(wall, 2), "base_mb": round(base / 1e6, 1),
               "used_memory_mb": round(r.info("memory")["used_memory"] / 1e6, 1),
               "keys": r.dbsize()}
        line = json.dumps(row)
        print(line, flush=True)
        if jsonl:
            with open(jsonl, "a") as f:
                f.write(line + "\n")


def rewrite_idemhot(r, put):
    """Calls put(pipeline, field, value) for every `idemhot` entry, then drops `idemhot`
    (entries written elsewhere) or replaces it by `idemhot.new` (written there)."""
    cur = 0
    while True:
        cur, kv = r.hscan(P + "idemhot", cur, count=5000)
        p = r.pipeline(transaction=False)
        for f, v in kv.items():
            put(p, f, v)
        p.execute()
        if cur == 0:
            break
    if r.exists(P + "idemhot.new"):
        r.rename(P + "idemhot.new", P + "idemhot")
    else:
        r.delete(P + "idemhot")


def apply(r, step):
    if step == "whole":
        return
    if step == "no-betl":
        for k in list(r.scan_iter(match=P + "betl:*", count=1000)):
            r.delete(k)
    elif step == "no-idemhot":
        r.delete(P + "idemhot", P + "idemyoung")
    elif step == "shortval":
        rewrite_idemhot(r, lambda p, f, v: p.hset(P + "idemhot.new", f, v[:16]))
    elif re.fullmatch(r"sub[1-9]\d*", step):
        n = int(step[3:])
        rewrite_idemhot(r, lambda p, f, v: p.hset(P + "idemhot:%d" % (zlib.crc32(f) % n), f, v))
    else:
        raise SystemExit(f"unknown step {step!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", help="a rewrite's base (appendonlydir/*.base.rdb of a kept run)")
    ap.add_argument("--steps", default="whole,no-betl,no-idemhot",
                    help="comma-separated, applied in order [whole,no-betl,no-idemhot]")
    ap.add_argument("--reps", type=int, default=3, help="rewrites a step [3]")
    ap.add_argument("--no-scan", action="store_true", help="skip the key table")
    ap.add_argument("--jsonl", metavar="FILE", help="append each rewrite's figures to FILE")
    a = ap.parse_args()
    # AOF off while the base loads (a later `--appendonly` overrides start_redis's own).
    e = tpenv.EmbeddedRedis(extra=("--save", "", "--appendonly", "no"))
    try:
        r = start(a.base, e)
        if not a.no_scan:
            scan(r)
        for step in a.steps.split(","):
            apply(r, step)
            rewrite(r, e.dir, step, a.reps, a.jsonl)
    finally:
        e.__exit__()


if __name__ == "__main__":
    main()
