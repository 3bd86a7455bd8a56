"""A Redis Cluster master dies under load (kill -9) while tickpool takes bets on it.

3 masters + 3 replicas (cluster-node-timeout 2 s), two workers, game.buckets = 12, Postgres.
Clients bet continuously over HTTP on every bucket and retry a 503 with the same idempotency
key, as the contract asks. A master holding 4 buckets (not the game's {g} slot) is killed; its
replica takes over, and the killed node is started again and rejoins as the new master's
replica (until then, replicas_ack = 1 cannot be met on that shard). Checked: bets for those
buckets answer 503 with Retry-After only for a bounded time, then succeed; other buckets keep
being answered; every bet answered 201 is in Redis and, after the drain, in Postgres exactly
once (a retried key is a replay, never a second bet); `tickpool audit` is clean. Run with
redis.replicas_ack = 1 (nothing acked may be lost) and with 0, which may lose acked writes
(Redis replication is asynchronous): that run only reports what it lost. The figures are
printed for the notes.
"""

import time

import clusterlib
import tpclient
import tpenv


def run(ack):
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=clusterlib.env(ack), workers=2, https=False) as s:
        tpclient.wait_game(s, timeout=30)
        users = tpclient.make_users(s, 2 * clusterlib.BUCKETS, prefix=f"f{ack}")
        g_master = clusterlib.slot_owner(rc, "tp:{g}:lease")
        victim = next(p for p in rc.master_ports() if p != g_master)
        tags = {k.split("}")[0] + "}" for k in clusterlib.scan(victim, "tp:{b*}:bal")}
        assert len(tags) == 4, tags
        marked = {uid for uid, _ in users
                  if any(t.startswith("tp:{b%d." % (uid % clusterlib.BUCKETS)) for t in tags)}

        with clusterlib.Load(s, users, marked) as load:
            time.sleep(4)
            before = len(load.acked)
            kill_t = time.monotonic()
            rc.kill_node(victim)
            tpenv.wait_until(lambda: victim not in rc.master_ports() and
                             len(rc.master_ports()) == 3, timeout=20, interval=0.1,
                             what="the replica promoted")
            promoted_after = time.monotonic() - kill_t
            # The dead master comes back (as a supervisor would restart it) and rejoins as the
            # new master's replica: until then that shard has no replica, so with
            # replicas_ack = 1 its writes cannot be acknowledged and answer 503.
            rc.restart_node(victim)
            tpenv.wait_until(lambda: "master_link_status:up" in
                             rc.cli(victim, "INFO", "replication"), timeout=20, interval=0.1,
                             what="the old master back as a replica")
            rejoined_after = time.monotonic() - kill_t
            time.sleep(6)
        v503 = [t - kill_t for t in load.unavailable[True] if t >= kill_t]
        o503 = [t - kill_t for t in load.unavailable[False] if t >= kill_t]
        print(f"replicas_ack={ack}: {len(load.acked)} bets acked ({before} in the 4 s before the "
              f"kill, ~{len(load.acked) / load.elapsed:.0f}/s overall), "
              f"{len(load.retried & set(load.acked))} of them after a 503 and a retry; replica "
              f"promoted {promoted_after:.1f} s after kill -9, old master back as its replica "
              f"after {rejoined_after:.1f} s; 503s on the dead master's buckets: {len(v503)} "
              f"from +{min(v503, default=0):.2f} s to +{max(v503, default=0):.2f} s; on the "
              f"other buckets: {len(o503)}; other answers: {dict(load.other)}; requests without an answer "
              f"within 10 s: {load.no_answer}")
        assert before > 100 and len(load.acked) > before
        # A bounded pause, then success. One fresh-root CI run with replicas_ack = 1 saw no 503 at
        # all on the dead master's buckets (the no-answer count above says whether those bets
        # waited instead); the acked-bets checks below hold either way.
        assert max(v503, default=0) < 15, v503
        # A round opened while the master was dead can miss that master's bucket copies (the
        # leader's fan-out failed there): its bets for those buckets are refused with 404
        # round_not_found, a refusal like round_not_open, never an accepted bet lost.
        refused = {k: v for k, v in load.other.items() if k != (404, "round_not_found")}
        assert clusterlib.only_round_not_open(refused), load.other

        clusterlib.healthy(s)
        clean = clusterlib.audit_clean(s)
        lost_redis, lost_pg, doubled = clusterlib.acked_missing(rc, pg, load.acked)
        print(f"replicas_ack={ack}: acked bets missing afterwards: {len(lost_redis)} in Redis, "
              f"{len(lost_pg)} in Postgres (or another bet under their key); bet ids in two "
              f"bets hashes: {len(doubled)}; audit {'clean' if clean else 'NOT clean'}")
        if ack >= 1:
            assert clean and not doubled
            assert not lost_redis and not lost_pg, (lost_redis[:10], lost_pg[:10])


def test_master_failover_with_replicas_ack_1():
    run(1)


def test_master_failover_with_replicas_ack_0():
    run(0)


if __name__ == "__main__":
    tpenv.main()
