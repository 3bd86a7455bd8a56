"""Resharding under load: bucket 0's slot moves to another master with
`redis-cli --cluster reshard` while clients bet on every bucket (3 + 3 cluster, two workers,
game.buckets = 12, Postgres). tickpool follows the migration (ASK with ASKING, TRYAGAIN with
back-off, then MOVED and a new slot map) without a failed bet: no answer other than 201 (and
409 round_not_open at a round's lock), every acked bet in Redis and Postgres once, the bucket
on its new master afterwards, `tickpool audit` clean.
"""

import subprocess
import time

import clusterlib
import tpclient
import tpenv


def node_id(rc, port):
    return rc.cli(port, "CLUSTER", "MYID")


def test_reshard_a_bucket_under_load():
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=clusterlib.env(0), workers=2, https=False) as s:
        tpclient.wait_game(s, timeout=30)
        users = tpclient.make_users(s, 2 * clusterlib.BUCKETS, prefix="rs")
        with clusterlib.Load(s, users) as load:
            time.sleep(4)  # bucket 0 gathers keys (bets, bet lists, idempotency records)
            tag = clusterlib.bucket_tag(rc, 0)
            slot = int(rc.cli(rc.ports[0], "CLUSTER", "KEYSLOT", tag + ":bal"))
            src = clusterlib.slot_owner(rc, tag + ":bal")
            dst = next(p for p in rc.master_ports() if p != src)
            nkeys = int(rc.cli(src, "CLUSTER", "COUNTKEYSINSLOT", slot))
            # reshard moves the source's lowest slots first: up to and including bucket 0's
            # (bucket 0's share of the slot space is the lowest; the others hold no keys)
            t = time.monotonic()
            r = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src}",
                                "--cluster-from", node_id(rc, src), "--cluster-to",
                                node_id(rc, dst), "--cluster-slots", str(slot + 1),
                                "--cluster-yes"], capture_output=True, text=True, timeout=120)
            took = time.monotonic() - t
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr
            time.sleep(3)
        owner = clusterlib.slot_owner(rc, tag + ":bal")
        print(f"reshard: slot {slot} of bucket 0 ({tag}, {nkeys} keys) moved {src} -> {dst} in "
              f"{took:.1f} s under load; {len(load.acked)} bets acked "
              f"(~{len(load.acked) / load.elapsed:.0f}/s), 503s: "
              f"{len(load.unavailable[False])}, other answers: {dict(load.other)}")
        assert owner == dst, (owner, dst)
        assert nkeys > 10  # balances, outbox, pools, bets, bet lists, idempotency records
        assert clusterlib.only_round_not_open(load.other), load.other
        assert not load.unavailable[False], "a bet answered 503 during the reshard"
        clusterlib.healthy(s)
        assert clusterlib.audit_clean(s)
        lost_redis, lost_pg, doubled = clusterlib.acked_missing(rc, pg, load.acked)
        assert not lost_redis and not lost_pg and not doubled, (lost_redis, lost_pg, doubled)


if __name__ == "__main__":
    tpenv.main()
