#!/usr/bin/python3
"""Builds the idempotency filter's three-day shards in every bucket of one Redis, as a game
past its first day has them: bench/run calls this before tickpool starts, so a run's first bets
find the shards (a missing shard reads as "check": the bet goes to Postgres) and read today's
and yesterday's word of each key in one GETRANGE, as production's do (bench/README.md "Session
22", "Session 28: both filter days in one key"). Before the shards held three days, this seeded
yesterday's per-day window so that bets read two windows, not the one a fresh Redis had.

Every shard of tp_keys_idem_shard_bytes's size (src/store/keys.c: three days), no expiry, shard
1023 last (what marks the filter whole), as the leader builds them (idem_slots.lua); the
leader then finds them built. The shards are zeroed: a day's archived keys would set bits,
which changes no read's cost, only how often a new key is a false positive ("check", then a
Postgres look-up): docs/operations.md §4 gives that rate. Prints "window W-1: ..." for the day
W the run starts in (bench/run checks it again at the end of the load).

    bench/filter_seed.py PORT BUCKETS FILTER_BYTES [TTL_S]
"""

import os
import sys
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "lib"))
import idemfilter  # noqa: E402  (the filter's key names, shard count and shard size)

def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    port, buckets, filter_bytes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ttl_ms = (int(sys.argv[4]) if len(sys.argv) == 5 else 86400) * 1000
    c = redis.Redis(port=port)
    w = int(time.time() * 1000) // ttl_ms
    size = idemfilter.shard_bytes(filter_bytes, buckets)
    for b in range(buckets):
        idemfilter.build(c, f"tp:{{b{b}}}:", None, size)
    print(f"window {w - 1}: {buckets} bucket(s) x {idemfilter.SHARDS} three-day shards of {size} "
          f"bytes (days {w - 1} and {w} read in one range)")


if __name__ == "__main__":
    main()
