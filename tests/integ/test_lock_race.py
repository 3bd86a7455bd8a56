"""Bets racing a round's lock, against real leader rounds (betting 3 s, live 3 s, 2 workers,
2 buckets, Postgres for the audit).

Several hundred bets from many threads (each its own keep-alive connection, several players)
are scheduled to land within ±50 ms of an open round's locks_at. Afterwards: each 201 is a bet
the bet script recorded in `tp:{bN}:betl:<rid>:<band>`, every other answer is 409
round_not_open with no trace, a bet sent after locks_at (same host clock) was never accepted
and one answered before locks_at always was, Σ accepted stakes = the Redis pools = the round's
`total` in the API, balances moved only by those bets and their payouts, and `tickpool audit`
passes once the round is settled.
"""

import time

import tpclient
import tpenv

ENV = {"TICKPOOL_GAME_BETTING_S": "3", "TICKPOOL_GAME_LIVE_S": "3",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BUCKETS": "2",
       "TICKPOOL_GAME_START_BALANCE": "100000000", "TICKPOOL_GAME_MIN_STAKE": "100",
       "TICKPOOL_GAME_MAX_STAKE": "100000"}
BUCKETS, NBANDS = 2, 5
NUSERS, NTHREADS, PER_THREAD = 8, 24, 20
WINDOW_MS = 50


def fresh_open_round(s, min_left_ms=1500):
    """An open round whose lock is at least min_left_ms away."""
    def find():
        st, v = s.json("GET", "/api/v1/rounds/current")
        o = v and v.get("open")
        if st == 200 and o and o["locks_at"] - time.time() * 1000 >= min_left_ms:
            return o
        return None
    return tpenv.wait_until(find, timeout=15, interval=0.05, what="a freshly opened round")


def race(s, users, rid, locks_at, tag):
    """Fires NTHREADS × PER_THREAD bets spread over [locks_at - 50, locks_at + 50] ms."""
    total = NTHREADS * PER_THREAD
    conns = [tpclient.Http(s) for _ in range(NTHREADS)]
    for i, c in enumerate(conns):  # warm the connections: the race measures bets, not connects
        assert c.request("GET", "/api/v1/me", headers=tpclient.auth(users[i % NUSERS][1]))[0] == 200

    def worker(t):
        out = []
        uid, tok = users[t % NUSERS]
        for j in range(PER_THREAD):
            n = j * NTHREADS + t
            at = locks_at - WINDOW_MS + n * 2 * WINDOW_MS / total
            delay = at / 1000 - time.time()
            if delay > 0:
                time.sleep(delay)
            band, stake = n % NBANDS, 100 + (n * 37) % 900
            key = f"{tag}-{t}-{j}"
            sent = time.time() * 1000
            st, body = tpclient.bet(conns[t], tok, rid, band, stake, key)
            out.append({"uid": uid, "band": band, "stake": stake, "key": key, "sent": sent,
                        "recv": time.time() * 1000, "status": st, "body": body})
        return out
    res = tpclient.run_threads(worker, [(t,) for t in range(NTHREADS)])
    for c in conns:
        c.close()
    return [x for r in res for x in r]


def test_bets_racing_the_lock():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=2, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, NUSERS, "racer")
        start = tpclient.balances(c, BUCKETS)
        earlier = []  # rounds of attempts that did not straddle the lock (their bets count too)
        for attempt in range(3):
            o = fresh_open_round(s)
            rid, locks_at = o["id"], o["locks_at"]
            shots = race(s, users, rid, locks_at, f"r{attempt}")
            ok = [x for x in shots if x["status"] == 201]
            no = [x for x in shots if x["status"] != 201]
            sends = sorted(x["sent"] - locks_at for x in shots)
            print(f"    round {rid}: {len(ok)} accepted, {len(no)} refused; sends "
                  f"{sends[0]:+.0f}..{sends[-1]:+.0f} ms around locks_at")
            if ok and no:
                break
            earlier.append(rid)
        assert ok and no, "the race never straddled the lock"

        # Every answer is a 201 or a 409 round_not_open; the clock decides the clear cases.
        for x in no:
            assert x["status"] == 409 and x["body"]["error"]["code"] == "round_not_open", x
            assert x["recv"] >= locks_at, ("refused although answered before the lock", x)
        for x in ok:
            b = x["body"]
            assert (b["round_id"], b["band"], b["stake"]) == (rid, x["band"], x["stake"]), x
            assert x["sent"] < locks_at + 1, ("accepted although sent after the lock", x)

        # 201s are exactly the bets the script recorded for the round.
        bets = tpclient.round_bets(c, rid, BUCKETS, NBANDS)
        want = {x["body"]["bet_id"]: (x["uid"], x["band"], x["stake"]) for x in ok}
        assert bets == want, (len(bets), len(want))
        pipe = c.pipeline()
        for x in no:
            for part in ("idemhot", "idemyoung"):  # the hot key index's two parts
                pipe.hexists("tp:{b%d}:%s" % (x["uid"] % BUCKETS, part),
                             "%d:%s" % (x["uid"], x["key"]))
        assert not any(pipe.execute()), "a refused bet left an idempotency record (hot entry)"

        # Σ accepted = Redis pools = the API's total once locked.
        sum_ok = sum(x["stake"] for x in ok)
        assert tpclient.pool_total(c, rid, BUCKETS) == sum_ok
        rnd = tpenv.wait_until(lambda: (lambda v: v if v["state"] != "open" else None)(
            s.json("GET", f"/api/v1/rounds/{rid}")[1]), timeout=10, what="round locked")
        assert rnd["total"] == sum_ok, (rnd["total"], sum_ok)
        assert sum(rnd["pools"]) == sum_ok

        # Settled: balances moved by exactly our bets and their credits.
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") in
                         ("settled", "cancelled"), timeout=20, what="round settled")
        h = tpclient.round_hash(c, rid)
        paid = tpclient.round_paid(c, rid, BUCKETS)
        assert paid == tpclient.expected_credits(bets, h), "credits differ from the contract"
        for e in earlier:
            tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % e, "state") in
                             ("settled", "cancelled"), timeout=20, what="earlier round settled")
            paid.update(tpclient.round_paid(c, e, BUCKETS))
            bets.update(tpclient.round_bets(c, e, BUCKETS, NBANDS))
        end = tpclient.balances(c, BUCKETS)
        for uid, _ in users:
            mine = [(bid, st) for bid, (u, _, st) in bets.items() if u == uid]
            assert end[uid] == start[uid] - sum(st for _, st in mine) + \
                sum(paid.get(bid, 0) for bid, _ in mine), uid
        code, out = tpclient.audit(s)
        assert code == 0, out


if __name__ == "__main__":
    tpenv.main()
