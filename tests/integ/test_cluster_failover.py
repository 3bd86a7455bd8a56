"""A Redis Cluster master dies under load (kill -9) while tickpool takes bets on it.

3 masters + 3 replicas (cluster-node-timeout 2 s), two workers, game.buckets = 12, Postgres. Clients
bet continuously over HTTP on every bucket and retry a 503 with the same idempotency key, as the
contract asks. A master holding 4 buckets (not the game's {g} slot) is killed; its replica takes
over, and the killed node is started again and rejoins as the new master's replica (until then,
replicas_ack = 1 cannot be met on that shard). Checked, money first: every bet answered 201 is in
Redis and, after the drain, in Postgres exactly once (a retried key is a replay, never a second bet)
and `tickpool audit` is clean; then bets for those buckets answer 503 with Retry-After until the
shard is whole again, then succeed (each of the dead master's buckets answers 201 after its old
master is back as a replica: how long that takes is printed, not asserted); other buckets keep being
answered; no bet on the open round is ever refused for a missing bucket copy (404 round_not_found,
or 409 round_not_open): a bet that finds its copy missing waits for the leader to re-write it (the
leader does when the slot map changes, or when a bet asks) and is placed, or answers 503. Run with
redis.replicas_ack = 1 (nothing acked may be lost) and with 0, which may lose acked writes (Redis
replication is asynchronous): that run only reports what it lost. The figures are printed for the
notes.
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
        assert marked, tags

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
            rejoined = time.monotonic()
            rejoined_after = rejoined - kill_t
            # The pause ends: every player on the dead master's buckets has a bet answered 201
            # after the shard is whole again (the wait is the check; its deadline only catches
            # a pause that never ends).
            tpenv.wait_until(lambda: all(load.last_ok.get(uid, 0) > rejoined for uid in marked),
                             timeout=60, interval=0.1,
                             what="a 201 for every player on the dead master's buckets")
            served_after = time.monotonic() - kill_t
        v503 = [t - kill_t for t in load.unavailable[True] if t >= kill_t]
        o503 = [t - kill_t for t in load.unavailable[False] if t >= kill_t]
        n404 = [t - kill_t for t in load.missing_copy if t >= kill_t]
        # 201s on the dead master's buckets between the kill and the promotion: none can be
        # answered by a dead master; a count here means those buckets lived elsewhere.
        ok_dead = [t - kill_t for t in load.ok_times[True] if 0 <= t - kill_t < promoted_after]
        print(f"replicas_ack={ack}: {len(load.acked)} bets acked ({before} in the 4 s before the "
              f"kill, ~{len(load.acked) / load.elapsed:.0f}/s overall), "
              f"{len(load.retried & set(load.acked))} of them after a 503 and a retry; replica "
              f"promoted {promoted_after:.1f} s after kill -9, old master back as its replica "
              f"after {rejoined_after:.1f} s, each of its buckets served again after "
              f"{served_after:.1f} s; 503s on the dead master's buckets: {len(v503)} "
              f"from +{min(v503, default=0):.2f} s to +{max(v503, default=0):.2f} s; on the "
              f"other buckets: {len(o503)}; refused for a missing copy of the open round: {len(n404)} "
              f"(last +{max(n404, default=0):.2f} s); other answers: {dict(load.other)}; "
              f"requests without an answer within 10 s: {load.no_answer}; 201s on the dead master's "
              f"buckets before the promotion: {len(ok_dead)} (last +{max(ok_dead, default=0):.2f} s), "
              f"on its buckets in all {len(load.ok_times[True])}, on the others "
              f"{len(load.ok_times[False])}")
        assert before > 100 and len(load.acked) > before

        # The criterion first: money. Every bet answered 201 is in Redis and, after the drain,
        # in Postgres exactly once (a retried key is a replay, never a second bet), and the
        # audit is clean, whatever the pause looked like.
        clusterlib.healthy(s)
        clean = clusterlib.audit_clean(s)
        lost_redis, lost_pg, doubled = clusterlib.acked_missing(rc, pg, load.acked)
        print(f"replicas_ack={ack}: acked bets missing afterwards: {len(lost_redis)} in Redis, "
              f"{len(lost_pg)} in Postgres (or another bet under their key); bet ids in two "
              f"places of the bets lists: {len(doubled)}; audit {'clean' if clean else 'NOT clean'}")
        if ack >= 1:
            assert clean and not doubled
            assert not lost_redis and not lost_pg, (lost_redis[:10], lost_pg[:10])

        # Then availability: the pause ended (the wait above). A pause is not required: a
        # master killed in the last 300 ms before a lock gives no 503 at all, since the lock
        # waits for its buckets and the clients (who stop 300 ms before a lock) have no open
        # round until the promotion (operations.md §4).
        # A bet on the open round may find its bucket's copy missing (a round opened while the
        # master was dead, a copy the dead master acknowledged without replicating it, a bet
        # that reaches its bucket before the boundary's copy): it is never refused for it. The
        # worker reads the round's own record, sees it open, and the bet waits for the copy
        # (the leader re-writes it at the new slot map or when asked) and is placed, or answers
        # 503 for the client to retry (bet_batch.c; since de47bbc and 43b36cc). This used to
        # allow such refusals up to 1.5 s after the test saw the promotion, a bound on time
        # from when a missing copy answered 404 or 409: none is allowed at any time now, which
        # fails every run the bound failed.
        assert not n404, (promoted_after, n404[:10])
        refused = {k: v for k, v in load.other.items() if k != (404, "round_not_found")}
        assert clusterlib.only_round_not_open(refused), load.other



def test_master_failover_with_replicas_ack_1():
    run(1)


def test_master_failover_with_replicas_ack_0():
    run(0)


if __name__ == "__main__":
    tpenv.main()
