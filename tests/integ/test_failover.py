"""Leader failover with money on the table (2 workers, real Redis + Postgres, short rounds).

(a) kill -9 of the lease holder while it pays a round out in pages (thousands of bets, page size
    500 in src/game/leader_settle.c): another process takes the lease within 3 s, resumes from the
    plan's cursor, and every winning bet is paid floor(s·pot/W) exactly once; balances are grants −
    stakes + credits; `tickpool audit` passes and Postgres has one payout per winning bet.
(b) kill -9 of the leader mid-round with bets in the open and the live round (grace is short,
    so the missed lock/close cancel them): round ids go on without gaps, both rounds end settled
    or cancelled with the contract's credits (refunds), nothing is credited twice, audit passes.
(c) a clean stop (SIGTERM) of the holder's host releases the lease before it exits.
"""

import os
import signal
import time

import tpclient
import tpenv

NBANDS = 5
BASE = {"TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_START_BALANCE": "1000000000",
        "TICKPOOL_GAME_MIN_STAKE": "100", "TICKPOOL_GAME_MAX_STAKE": "100000"}


def fresh_open_round(s, min_left_ms):
    def find():
        st, v = s.json("GET", "/api/v1/rounds/current")
        o = v and v.get("open")
        if st == 200 and o and o["locks_at"] - time.time() * 1000 >= min_left_ms:
            return o
        return None
    return tpenv.wait_until(find, timeout=30, interval=0.05, what="a freshly opened round")


def wait_final(c, rid, timeout=30):
    tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") in
                     ("settled", "cancelled"), timeout=timeout, what=f"round {rid} final")
    return tpclient.round_hash(c, rid)


def wait_new_leader(c, old):
    """Waits for a lease held by another process than `old` (holder, pid, epoch); returns
    (new lease, seconds it took), printed by the callers: the lease (2 s, renewed every 0.5 s)
    makes it ~2.5 s, and the 15 s deadline only catches a takeover that never comes (the 3 s
    bound it replaces left a loaded machine 0.5 s; speed belongs in bench/)."""
    t0 = time.monotonic()
    new = tpenv.wait_until(lambda: (lambda l: l if l and l[0] != old[0] else None)(
        tpclient.lease(c)), timeout=15, interval=0.02, what="a new leader")
    took = time.monotonic() - t0
    assert new[2] > old[2], (old, new)
    return new, took


def check_money(s, c, users, start, rounds, buckets):
    """Credits of each round = the contract's; balances = start − stakes + credits per user."""
    bets, paid = {}, {}
    for rid in rounds:
        h = wait_final(c, rid)
        b = tpclient.round_bets(c, rid, buckets, NBANDS)
        p = tpclient.round_paid(c, rid, buckets)
        assert p == tpclient.expected_credits(b, h), f"round {rid}: credits differ"
        per_user = {}
        for bid, amt in p.items():
            per_user[b[bid][0]] = per_user.get(b[bid][0], 0) + amt
        got = {}
        for k in range(buckets):
            got.update({int(u): int(v) for u, v in
                        c.hgetall("tp:{b%d}:payout:%d" % (k, rid)).items()})
        assert got == per_user, f"round {rid}: payout totals per user differ"
        bets.update(b)
        paid.update(p)
    end = tpclient.balances(c, buckets)
    for uid, _ in users:
        mine = [bid for bid, (u, _, _) in bets.items() if u == uid]
        assert end[uid] == start[uid] - sum(bets[b][2] for b in mine) + \
            sum(paid.get(b, 0) for b in mine), f"user {uid} balance"
    return bets, paid


def test_kill_leader_mid_settlement():
    env = dict(BASE, TICKPOOL_GAME_BETTING_S="6", TICKPOOL_GAME_LIVE_S="2")
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, workers=2, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 10, "fo")
        start = tpclient.balances(c, 1)
        # Heaviest on the bands a 2 s move usually ends in (|m| < 3 bps is band 2), so the
        # winner's band needs several pages (64 bets to start, then what fits the aim).
        per_band = (300, 1000, 2200, 1000, 300)
        jobs = [(band, 100 + (i * 37) % 900) for band, n in enumerate(per_band)
                for i in range(n)]
        rounds = []
        caught = None
        tries = []  # what each attempt saw, for the failure message
        for attempt in range(3):
            o = fresh_open_round(s, 4500)
            rid = o["id"]
            left = o["locks_at"] / 1000 - time.time()
            t0 = time.monotonic()
            ok, other = tpclient.place_bets(s, users, rid, jobs, tag=f"a{attempt}")
            placing = time.monotonic() - t0
            print(f"    round {rid}: {len(ok)} bets in {placing:.1f}s")
            assert len(ok) >= 1500 and all(st == 409 for st, _ in other), (
                f"round {rid}: {len(ok)} of {len(jobs)} bets accepted in {placing:.1f}s, the "
                f"round locking {left:.1f}s after the first (betting 6 s): {other[:3]}")
            rounds.append(rid)
            # Watch the plan; kill the lease holder once a page is done and more remain.
            plan = "tp:{b0}:plan:%d" % rid
            deadline = time.monotonic() + 20
            polls, seen, gap, last = 0, set(), 0.0, time.monotonic()
            while time.monotonic() < deadline:
                pipe = c.pipeline()
                pipe.hmget(plan, "cur", "pos", "done")
                pipe.get("tp:{g}:lease")
                pipe.hget("tp:{g}:round:%d" % rid, "state")
                (cur, pos, done), lv, state = pipe.execute()
                now = time.monotonic()
                polls, gap, last = polls + 1, max(gap, now - last), now
                seen.add(state)
                if state in ("settled", "cancelled") or done == "1":
                    break
                if done == "0" and (cur != "0" or pos != "0") and lv:
                    holder = lv.split("|")[0]
                    pid = int(holder.split("-")[1])
                    os.kill(pid, signal.SIGKILL)
                    caught = (rid, (holder, pid, int(lv.split("|")[1])))
                    break
                time.sleep(0.0005)
            what = (f"round {rid}: {len(ok)} bets placed in {placing:.1f}s of the {left:.1f}s "
                    f"before its lock (betting 6 s, live 2 s); {polls} polls of its plan, the "
                    f"longest {gap * 1000:.0f} ms apart, states seen {sorted(map(str, seen))}, "
                    f"last plan cur={cur} pos={pos} done={done}")
            if caught:
                time.sleep(0.2)
                st = c.hget("tp:{g}:round:%d" % rid, "state")
                fin = c.hget(plan, "done")
                print(f"    killed {caught[1][0]} with plan cur={cur} pos={pos}; after: state={st} "
                      f"done={fin}")
                if st == "settling":
                    break
                caught = None  # the in-flight page finished it: try the next round
                what += f"; killed the leader, but its page in flight finished the round ({st})"
            elif state in ("settled", "cancelled") or done == "1":
                what += "; settled between two polls: no page boundary seen"
            else:
                what += "; still not settled after 20 s of watching"
            tries.append(what)
        if not caught:
            # Under load (placing slower, polls far apart) the kill can miss the window each
            # time. Whether the money is right is checked first: a money bug fails there.
            check_money(s, c, users, start, rounds, 1)
        assert caught, ("never caught the leader mid-settlement (the rounds' credits and "
                        "balances check out: load, not money):\n  " + "\n  ".join(tries))
        rid, old = caught
        new, took = wait_new_leader(c, old)
        print(f"    new leader {new[0]} after {took:.2f}s")
        h = wait_final(c, rid, timeout=10)
        assert h["state"] == "settled" and h["refund_all"] == "0", h
        check_money(s, c, users, start, rounds, 1)
        bets = tpclient.round_bets(c, rid, 1, NBANDS)
        paid = tpclient.round_paid(c, rid, 1)
        winners = {b for b, (_, band, _) in bets.items() if band == int(h["winning_band"])}
        assert set(paid) == winners and len(paid) >= 500, len(paid)  # pages really remained
        code, out = tpclient.audit(s)
        assert code == 0, out
        rows = pg.psql(f"SELECT count(*), count(DISTINCT bet_id), coalesce(sum(amount), 0) "
                       f"FROM payouts WHERE round_id = {rid}")
        assert [int(x) for x in rows[0]] == [len(paid), len(paid), sum(paid.values())], rows
        assert "assertion failed" not in s.log_text()


def test_kill_leader_mid_round():
    env = dict(BASE, TICKPOOL_GAME_BETTING_S="3", TICKPOOL_GAME_LIVE_S="3",
               TICKPOOL_GAME_BUCKETS="2", TICKPOOL_GAME_GRACE="300ms")
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, workers=2, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 6, "mr")
        start = tpclient.balances(c, 2)
        jobs = [(i % NBANDS, 100 + (i * 53) % 900) for i in range(200)]
        o = fresh_open_round(s, 2000)
        n = o["id"]
        ok, _ = tpclient.place_bets(s, users, n, jobs, nthreads=8, tag="n")
        assert len(ok) == len(jobs)
        # N locks, N+1 opens: bet into N+1 while N is live, then kill ~1 s before the lock.
        o2 = tpenv.wait_until(lambda: (lambda v: v["open"] if v["open"]["id"] == n + 1 else None)(
            s.json("GET", "/api/v1/rounds/current")[1]), timeout=10, what="round N+1 open")
        ok2, _ = tpclient.place_bets(s, users, n + 1, jobs, nthreads=8, tag="n1")
        assert len(ok2) == len(jobs)
        assert c.hget("tp:{g}:round:%d" % n, "state") == "live"
        delay = o2["locks_at"] / 1000 - 1.0 - time.time()
        if delay > 0:
            time.sleep(delay)
        old = tpclient.lease(c)
        os.kill(old[1], signal.SIGKILL)
        new, took = wait_new_leader(c, old)
        print(f"    new leader {new[0]} after {took:.2f}s")
        states = [wait_final(c, rid)["state"] for rid in (n, n + 1)]
        print(f"    rounds {n}, {n + 1}: {states}")
        # The game goes on past the failover, ids without gaps.
        tpenv.wait_until(lambda: any(c.hget("tp:{g}:round:%d" % i, "state") == "settled"
                                     for i in range(n + 2, n + 6)), timeout=20,
                         what="a round settled after the failover")
        ids = sorted(int(x) for x in c.zrange("tp:{g}:rounds", 0, -1))
        assert ids == list(range(1, ids[-1] + 1)), ids
        assert "assertion failed" not in s.log_text()
        check_money(s, c, users, start, [n, n + 1], 2)
        code, out = tpclient.audit(s)
        assert code == 0, out
        for rid, st in zip((n, n + 1), states):
            assert pg.psql(f"SELECT state FROM rounds WHERE id = {rid}") == [[st]]
        rows = pg.psql(f"SELECT count(*), count(DISTINCT bet_id) FROM payouts "
                       f"WHERE round_id IN ({n}, {n + 1})")
        assert rows[0][0] == rows[0][1], rows


def test_long_leader_gap_backfills_ticks():
    """A takeover after a gap longer than 21 ticks backfills them in one tick.lua call (it once
    overflowed the leader's 48-slot argument vector and aborted the new leader)."""
    env = dict(BASE, TICKPOOL_GAME_BETTING_S="5", TICKPOOL_GAME_LIVE_S="5")
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=env, workers=2, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        tpenv.wait_until(lambda: c.hget("tp:{g}:current", "live"), timeout=20,
                         what="a live round (ticks flowing)")
        old = tpclient.lease(c)
        others = [p for p in s.worker_pids() if p != old[1]]
        for p in others:  # the other worker sleeps through the lease expiry: a ~3 s gap
            os.kill(p, signal.SIGSTOP)
        os.kill(old[1], signal.SIGKILL)
        time.sleep(2.5)
        for p in others:
            os.kill(p, signal.SIGCONT)
        new, took = wait_new_leader(c, old)
        t_new = time.time() * 1000
        time.sleep(1.5)
        assert tpclient.lease(c)[0] == new[0], "the new leader did not keep the lease"
        assert "assertion failed" not in s.log_text(), s.log_text()[-2000:]
        # The stream has every tick of the gap, tick_ms apart, up to now.
        ticks = [int(x[0].split("-")[0]) for x in c.xrange("tp:{g}:ticks", min=int(t_new) - 6000)]
        steps = {b - a for a, b in zip(ticks, ticks[1:])}
        assert steps == {100}, sorted(steps)
        assert ticks[-1] > t_new, (ticks[-1], t_new)


def test_clean_stop_releases_the_lease():
    """(c) SIGTERM of the lease holder's host hands the lease over before its workers exit: the
    key is gone (or another worker's) when the host has stopped, so the next worker's lease step
    (every 500 ms) takes it rather than waiting for it to expire (PX 2000). Regression: the
    release was queued as the draining worker's loop ended, never sent, and the game had no
    leader for ~2 s after every clean stop (bench/run takeover measured 1.97 s)."""
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=BASE, workers=2, https=False) as a, \
            tpenv.Server(redis=r, env=BASE, workers=2, https=False) as b:
        c = r.client()
        tpclient.wait_game(a)
        old, i = tpclient.lease_holder(c, (a, b))
        victim = (a, b)[i]
        assert victim.stop() == 0
        held = c.get("tp:{g}:lease")
        assert held is None or not held.startswith(old[0] + "|"), \
            f"the stopped host still holds the lease: {held}"
        assert "released the leader lease" in victim.log_text(), \
            "the holder's worker exited without releasing the lease"
        new, took = wait_new_leader(c, old)
        print(f"clean stop: new leader {new[0]} {took:.2f} s after the old host exited")


if __name__ == "__main__":
    tpenv.main()
