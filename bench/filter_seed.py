#!/usr/bin/python3
"""Builds the day before's idempotency filter window in every bucket of one Redis, as a game
past its first day has it: bench/run calls this before tickpool starts, so a run's bets read
two filter windows (today's, which the leader builds, and yesterday's), as production's do,
and not the one a fresh Redis has (bench/README.md "Session 22").

Window w - 1 of w = floor(now_ms / (TTL * 1000)), every shard of tp_keys_idem_shard_bytes's
size (src/store/keys.c) with the expiry the leader gives it (the end of window w plus 10
minutes), shard 1023 last (what marks a window whole). The shards are zeroed: a day's archived
keys would set bits, which changes no read's cost, only how often a new key is a false positive
("check", then a Postgres look-up): docs/operations.md §4 gives that rate.

    bench/filter_seed.py PORT BUCKETS FILTER_BYTES [TTL_S]
"""

import os
import sys
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "lib"))
import idemfilter  # noqa: E402  (the filter's key names, shard count and shard size)

SLACK_MS = 600000  # the leader's expiry slack for lagging clocks


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    port, buckets, filter_bytes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ttl_ms = (int(sys.argv[4]) if len(sys.argv) == 5 else 86400) * 1000
    c = redis.Redis(port=port)
    now = int(time.time() * 1000)
    w = now // ttl_ms
    size = idemfilter.shard_bytes(filter_bytes, buckets)
    expire = (w + 1) * ttl_ms + SLACK_MS - now
    for b in range(buckets):
        pipe = c.pipeline(transaction=False)
        for s in range(idemfilter.SHARDS):
            key = idemfilter.shard_key(f"tp:{{b{b}}}:", w - 1, s)
            pipe.setrange(key, size - 1, "\0")
            pipe.pexpire(key, expire)
        pipe.execute()
    print(f"window {w - 1}: {buckets} bucket(s) x {idemfilter.SHARDS} shards of {size} bytes")


if __name__ == "__main__":
    main()
