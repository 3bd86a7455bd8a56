"""A bucket's copy of the open round goes missing on a Redis Cluster, and the leader writes it
again at once rather than at its next lease.

A copy goes missing when its master dies after acknowledging the write and before replicating
it (redis.replicas_ack = 0), or when a slot moves: bets on that bucket then find no copy
of a round that is open. Here the copy is deleted by hand, which is the same
state without the timing: 3 masters + 3 replicas, one worker (so the leader's store is the one
that takes the bets and sees every MOVED), game.buckets = 12, long betting phases.

1. A bet finds the copy missing: the round is open, only the copy is missing, so the worker asks
   the leader (tp:{g}:repair) and the bet waits for the copy and succeeds (201, no 503) within
   about a second.
2. A replica is promoted (CLUSTER FAILOVER) after the copy was deleted on its master: the next
   command to that shard gets MOVED, the slot map changes, and the leader writes the copy with
   no bet on that bucket at all.
3. A bet on a round that never existed answers 404 and makes the leader re-write nothing.
The audit is clean at the end.
"""

import time

import clusterlib
import tpclient
import tpenv

BUCKETS = clusterlib.BUCKETS


def env():
    e = clusterlib.env(0)
    e["TICKPOOL_GAME_BETTING_S"] = "30"
    e["TICKPOOL_LOG_LEVEL"] = "info"
    return e


def copy_key(rc, bucket, rid):
    return f"{clusterlib.bucket_tag(rc, bucket)}:round:{rid}:state"


def copy_state(rc, key):
    return rc.cli(rc.master_ports()[0], "HGET", key, "state")


def replica_of_owner(rc, key):
    """(master port, replica port) of the shard holding `key`."""
    owner = clusterlib.slot_owner(rc, key)
    nodes = rc.cli(owner, "CLUSTER", "NODES").splitlines()
    mid = next(ln.split()[0] for ln in nodes if "myself" in ln.split()[2])
    rep = next(ln for ln in nodes if ln.split()[3] == mid and "slave" in ln.split()[2])
    return owner, int(rep.split()[1].split("@")[0].rsplit(":", 1)[1])


def test_missing_round_copies_are_rewritten_at_once():
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=env(), workers=1, https=False) as s:
        tpclient.wait_game(s, timeout=30)
        users = tpclient.make_users(s, BUCKETS, prefix="rp")
        by_bucket = {uid % BUCKETS: (uid, tok) for uid, tok in users}
        o = tpclient.fresh_open_round(s, min_left_ms=20000, timeout=60)
        rid = o["id"]
        conn = tpclient.Http(s)
        n = [0]

        def bet(bucket, round_id=rid):
            uid, tok = by_bucket[bucket]
            n[0] += 1
            return tpclient.bet(conn, tok, round_id, 1, 100, f"rp-{n[0]}")

        # 1. A bet finds its bucket's copy missing.
        b1 = sorted(by_bucket)[0]
        k1 = copy_key(rc, b1, rid)
        assert copy_state(rc, k1) == "open"
        assert rc.cli(rc.master_ports()[0], "DEL", k1) == "1"
        t0 = time.monotonic()
        st, v = bet(b1)
        took = time.monotonic() - t0
        # The script says round_not_found; the round's record says open: the bet waits for the
        # leader's re-write and is placed.
        assert st == 201, (st, v)
        # Placed at all is the check: the bet waits for the copy at most 1 s of the server's
        # own (COPY_WAIT_MAX_S, src/money/bet_batch.c), and without the repair nothing re-writes
        # it while this leader leads; this process's view of how soon is printed, not asserted.
        print(f"a bet found the copy missing: placed {took:.2f} s later")
        assert 'reason="a bet found a copy missing"' in s.log_text()

        # 2. A promotion after the copy was lost on the old master: no bet on that bucket.
        b2 = next(b for b in sorted(by_bucket) if b != b1 and
                  clusterlib.slot_owner(rc, copy_key(rc, b, rid)) !=
                  clusterlib.slot_owner(rc, "tp:{g}:lease"))
        k2 = copy_key(rc, b2, rid)
        master, replica = replica_of_owner(rc, k2)
        assert rc.cli(master, "DEL", k2) == "1"
        # A manual failover waits until the replica has applied everything the master had,
        # the deletion included.
        assert rc.cli(replica, "CLUSTER", "FAILOVER") == "OK"
        tpenv.wait_until(lambda: replica in rc.master_ports() and master not in rc.master_ports(),
                         timeout=20, interval=0.05, what="the replica promoted")
        t0 = time.monotonic()
        # Any other bucket of that shard: its bet meets MOVED, the slot map changes.
        b3 = next(b for b in sorted(by_bucket) if b != b2 and
                  clusterlib.slot_owner(rc, copy_key(rc, b, rid)) == replica)
        assert bet(b3)[0] == 201
        # Without the slot map's repair nothing re-writes it while this leader leads: the
        # deadline only catches that; how soon is printed (a loaded machine lags).
        tpenv.wait_until(lambda: copy_state(rc, k2) == "open", timeout=15, interval=0.05,
                         what="the copy written again after the promotion")
        took = time.monotonic() - t0
        print(f"promotion: the lost copy was written again {took:.2f} s after the new map")
        assert 'reason="slot map changed"' in s.log_text()
        assert bet(b2)[0] == 201

        # 3. A round that never was: 404, nothing re-written for it.
        before = s.log_text().count("re-writing the open round's bucket copies")
        st, v = bet(b1, rid + 1000)
        assert (st, v["error"]["code"]) == (404, "round_not_found"), (st, v)
        time.sleep(1.0)
        assert s.log_text().count("re-writing the open round's bucket copies") == before

        clusterlib.healthy(s)
        assert clusterlib.audit_clean(s)


if __name__ == "__main__":
    tpenv.main()
