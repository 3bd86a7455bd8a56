#!/usr/bin/python3
"""EVALSHA µs per call of bet_batch.lua (one bet per call) and the one-bet reference bench/lua/bet.lua,
back to back (warm: a pipeline keeps Redis busy) and paced (one call every 1/RATE s, Redis idle
in epoll between calls, as in an open-loop run's small batches), alternated in one private Redis.

commandstats time a call by the wall clock: a call that finds its code and data out of the
caches costs more than the same call right after another one. bench/run's reference ceiling is
closed loop (warm) while `ws-bets` at a few thousand bets/s is open loop, so their EVALSHA µs
differ by this effect as well as by the scripts' work; here both scripts meet both conditions.
A timing: run it alone on the machine (no other bench, build or test), and compare within one
run only.

    bench/evalsha_paced.py [--rate 1000] [--calls 3000] [--rounds 2]

Redis as bench/run starts it (AOF everysec, hash-max-listpack-entries 128), with AOF rewrites
off so that no fork lands in one measurement only; 200 players, round 1 open in bucket 0, the
day's filter built beforehand (bench/batch_callgrind.py's setup). Needs python3-redis.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import redis

import batch_callgrind as bc
from callgrind_redis import free_port, wait_ready

sys.path.insert(0, os.path.join(bc.ROOT, "tests", "lib"))
import idemfilter  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=1000, help="paced calls per second [1000]")
    ap.add_argument("--calls", type=int, default=3000, help="calls per measurement [3000]")
    ap.add_argument("--rounds", type=int, default=2, help="times each measurement runs [2]")
    ap.add_argument("--script", default=os.path.join(bc.ROOT, "scripts", "lua", "bet_batch.lua"))
    a = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tp-paced-") as d:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
             "--appendonly", "yes", "--auto-aof-rewrite-percentage", "0",
             "--hash-max-listpack-entries", "128"], stdout=subprocess.DEVNULL)
        try:
            run(a, redis.Redis(port=port, decode_responses=True))
        finally:
            proc.terminate()
            proc.wait()


def run(a, c):
    wait_ready(c, 10)
    with open(a.script) as f:
        batch = c.script_load(f.read())
    with open(os.path.join(bc.ROOT, "bench", "lua", "bet.lua")) as f:
        ref = c.script_load(f.read())
    p = "tp:{b0}:"
    c.hset(p + "bal", mapping={str(u): 10**12 for u in range(1, bc.USERS + 1)})
    c.hset(p + "round:1:state", mapping={"state": "open", "locks_at": 10**13, "nbands": bc.NBANDS,
                                         "min_stake": 1, "max_stake": 10**9})
    now = int(time.time() * 1000)
    idemfilter.build(c, p, now // (bc.TTL_S * 1000), bc.SHARD_BYTES)
    seq = [0]

    def batch_args():
        s = seq[0] = seq[0] + 1
        keys, argv = bc.call_args(1, 1, s, now, s)
        return (batch, len(keys), *keys, *argv)

    def ref_args():
        s = seq[0] = seq[0] + 1
        u, band, key = 1 + s % bc.USERS, s % bc.NBANDS, f"r-{s}"
        keys = [p + "bal", p + f"idem:{u}:{key}", p + "round:1:state", p + "pool:1",
                p + f"bets:1:{band}", p + "outbox", p + "seq", p + f"ubets:{u}", p + "net",
                p + "excl", p + "paused"]
        return (ref, len(keys), *keys, u, 1, band, 100, key, "0" * 64, now, bc.NBANDS, 1, 10**9,
                bc.TTL_S, 0, 1)

    def measure(mk, rate):
        c.config_resetstat()
        if rate:
            t = time.perf_counter()
            for _ in range(a.calls):
                c.evalsha(*mk())
                t += 1.0 / rate
                if t > time.perf_counter():
                    time.sleep(t - time.perf_counter())
        else:
            pipe = c.pipeline(transaction=False)
            for i in range(a.calls):
                pipe.evalsha(*mk())
                if i % 50 == 49 or i == a.calls - 1:
                    pipe.execute()
        return c.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]

    print(f"EVALSHA µs per call (commandstats), {a.calls} calls each, paced at {a.rate}/s")
    print("| round | bet_batch.lua warm | bet.lua warm | bet_batch.lua paced | bet.lua paced |")
    print("|---|---|---|---|---|")
    for r in range(a.rounds):
        row = [measure(batch_args, 0), measure(ref_args, 0), measure(batch_args, a.rate),
               measure(ref_args, a.rate)]
        print(f"| {r + 1} | " + " | ".join(f"{x:.1f}" for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
