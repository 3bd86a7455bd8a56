"""Every round ends, under every configuration the server accepts, with a real Redis,
Postgres and server.

betting_s=1, live_s=6: a close falls due when five or more newer rounds have opened, which the
leader's old 6-round window never saw (every round stayed live, every stake held). Now every
round ends settled, every bet placed is paid per the contract (floor(s·pot/W) or a refund),
balances add up, the unfinished index empties behind the rounds, and `tickpool audit` passes.

A band-edge change with bets in flight: bets on band 4 of an open round (5 bands), restart with
3 bands. The round keeps its own 5 bands wherever the leader reads pools and pays pages (it used
to stay live for ever, settle_page refusing `want 6 + nbands KEYS`), so it ends settled or
cancelled with every bet paid or refunded, and later rounds run with 3 bands.

Any rule change with bets in flight (bands, rake, stake bounds): the round keeps its own rules
for bets (HTTP and WebSocket), odds and settlement; the next round has the new ones.
"""

import signal
import time

import msgpack
import tpclient
import tpenv
import websocket

NBANDS = 5
ENV = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "6",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BUCKETS": "2",
       "TICKPOOL_GAME_START_BALANCE": "100000000", "TICKPOOL_GAME_MIN_STAKE": "1",
       "TICKPOOL_GAME_MAX_STAKE": "100000"}


def check_paid(c, buckets, rounds, bets, users, start):
    """The finished `rounds` hold exactly the accepted `bets` ({bet_id: (user, band, stake)}),
    each paid per the contract (floor(s·pot/W) or a refund, by the round's own rules), and each
    player's balance moved from `start` by exactly their stakes and credits."""
    recorded, paid = {}, {}
    for rid in rounds:
        h = tpclient.round_hash(c, rid)
        b = tpclient.round_bets(c, rid, buckets, NBANDS)
        p = tpclient.round_paid(c, rid, buckets)
        assert p == tpclient.expected_credits(b, h), f"round {rid}: credits differ {p} {h}"
        recorded.update(b)
        paid.update(p)
    assert recorded == bets, (recorded, bets)
    end = tpclient.balances(c, buckets)
    for uid, _ in users:
        mine = [x for x, (u, _, _) in bets.items() if u == uid]
        assert end[uid] == start[uid] - sum(bets[x][2] for x in mine) + \
            sum(paid.get(x, 0) for x in mine), f"user {uid} balance"


def test_live_six_times_betting_settles_every_round():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=2, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 6, "lv")
        start = tpclient.balances(c, 2)
        bets = {}
        rounds = []
        for k in range(4):
            o = tpclient.fresh_open_round(s, 500)
            jobs = [(i % NBANDS, 100 + (i * 37 + k) % 900) for i in range(30)]
            ok, other = tpclient.place_bets(s, users, o["id"], jobs, nthreads=4, tag=f"l{k}")
            assert len(ok) >= 1 and all(st == 409 for st, _ in other), other[:3]
            bets.update(ok)
            rounds.append(o["id"])
        last = rounds[-1]
        # The last betted round closes 7 s after it opened; allow grace and load.
        tpenv.wait_until(lambda: all(c.hget("tp:{g}:round:%d" % rid, "state") in
                                     ("settled", "cancelled") for rid in rounds),
                         timeout=30, what="every betted round final")
        states = {rid: c.hget("tp:{g}:round:%d" % rid, "state") for rid in rounds}
        assert set(states.values()) == {"settled"}, states
        # Every earlier round ended too, and nothing older than the live phase is unfinished.
        for rid in range(1, last + 1):
            assert c.hget("tp:{g}:round:%d" % rid, "state") in ("settled", "cancelled"), rid
        unfinished = [int(x) for x in c.zrange("tp:{g}:unfinished", 0, -1)]
        assert all(x > last for x in unfinished), unfinished
        check_paid(c, 2, rounds, bets, users, start)
        assert "assertion failed" not in s.log_text()
        # Audit on a quiet system: stop the game between rounds is not possible, so rerun once.
        code, out = tpclient.audit(s)
        if code != 0:
            time.sleep(1)
            code, out = tpclient.audit(s)
        assert code == 0, out


def test_band_edge_change_with_bets_in_flight():
    env = {"TICKPOOL_GAME_BETTING_S": "4", "TICKPOOL_GAME_LIVE_S": "2",
           "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_GRACE": "10s"}
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 4, "be")
        start = tpclient.balances(c, 1)
        o = tpclient.fresh_open_round(s, 2500)
        rid = o["id"]
        jobs = [(4 - i % 2, 100 + i) for i in range(8)]   # bands 4 and 3: gone after the change
        ok, other = tpclient.place_bets(s, users, rid, jobs, nthreads=2, tag="be")
        assert len(ok) == len(jobs), other
        s.stop()
        s.env["TICKPOOL_GAME_BAND_EDGES_BPS"] = "-5,5"
        s.start()
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") in
                         ("settled", "cancelled"), timeout=30, what=f"round {rid} final")
        assert tpclient.round_hash(c, rid)["edges"] == "-10,-3,3,10"
        check_paid(c, 1, [rid], ok, users, start)
        # Rounds opened after the restart have 3 bands and settle too.
        later = tpenv.wait_until(lambda: next(
            (i for i in range(rid + 1, rid + 8)
             if c.hget("tp:{g}:round:%d" % i, "state") == "settled"), None),
            timeout=30, what="a round settled after the change")
        assert c.hget("tp:{g}:round:%d" % later, "edges") == "-5,5"
        assert "assertion failed" not in s.log_text()
        code, out = tpclient.audit(s)
        assert code == 0, out


def ws_odds(s, rid, then, timeout=8):
    """Connects an anonymous WebSocket, runs then(), and returns the first odds of round rid
    (a beat's `odds` or an `odds` message) whose band 0 pool is not empty."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws",
                                     subprotocols=["tickpool.v1"], timeout=timeout)
    end = time.time() + timeout
    try:
        then()
        while time.time() < end:
            op, data = ws.recv_data()
            if op != websocket.ABNF.OPCODE_BINARY:
                continue
            m = msgpack.unpackb(data)
            o = m if m.get("t") == "odds" else m.get("odds") if m.get("t") == "tick" else None
            if o and o["round_id"] == rid and o["pools"][0] > 0:
                return o
    finally:
        ws.close()
    raise AssertionError(f"no odds for round {rid}")


def ws_bet(s, token, rid, band, stake, key):
    """One `bet` over an authenticated WebSocket: ("ok", bet_ok) or (code, bet_err)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws?token={token}",
                                     subprotocols=["tickpool.v1"], timeout=10)
    try:
        ws.send_binary(msgpack.packb({"t": "bet", "req": 1, "key": key, "round_id": rid,
                                      "band": band, "stake": stake}))
        while True:
            op, data = ws.recv_data()
            m = msgpack.unpackb(data) if op == websocket.ABNF.OPCODE_BINARY else {}
            if m.get("t") in ("bet_ok", "bet_err"):
                return ("ok" if m["t"] == "bet_ok" else m["code"]), m
    finally:
        ws.close()


def test_rules_change_with_bets_in_flight():
    """A round carries its own rules. Bets on an open round (5 bands, rake 300, stakes 100 ..
    100,000), restart with 3 bands, rake 1000 and stakes 500 .. 1,000. The round in flight keeps
    its rules wherever they apply: HTTP and WebSocket bets on it are checked against its bands
    and bounds (band 4 and a stake of 200 are accepted, 100,001 refused), its odds have 5
    pools priced at rake 300, and it settles at rake 300 with every bet paid or refunded. The
    first round the restarted server opens has the new rules (and refuses what they refuse)."""
    env = {"TICKPOOL_GAME_BETTING_S": "10", "TICKPOOL_GAME_LIVE_S": "2",
           "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_GRACE": "10s",
           "TICKPOOL_GAME_BUCKETS": "2"}
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 4, "rc")
        start = tpclient.balances(c, 2)
        o = tpclient.fresh_open_round(s, 8000)
        rid = o["id"]
        assert (o["min_stake"], o["max_stake"], o["rake_bps"], len(o["bands"])) == \
            (100, 100000, 300, 5), o
        jobs = [(4 - i % 3, 100 + i * 50) for i in range(9)]   # bands 4, 3, 2
        ok, other = tpclient.place_bets(s, users, rid, jobs, nthreads=2, tag="rc")
        assert len(ok) == len(jobs), other
        s.stop()
        s.env.update({"TICKPOOL_GAME_BAND_EDGES_BPS": "-5,5", "TICKPOOL_GAME_RAKE_BPS": "1000",
                      "TICKPOOL_GAME_MIN_STAKE": "500", "TICKPOOL_GAME_MAX_STAKE": "1000"})
        s.start()
        tpclient.wait_game(s)
        # The round in flight, still open: its own bands and bounds, not the new config's.
        assert c.hget("tp:{g}:round:%d" % rid, "state") == "open", "restart took too long"
        conn = tpclient.Http(s)
        for i, (band, stake, st_want, code) in enumerate((
                (4, 200, 201, None), (3, 5000, 201, None), (4, 100001, 400, "invalid_stake"),
                (2, 99, 400, "invalid_stake"), (5, 500, 400, "invalid_band"))):
            uid, tok = users[i % len(users)]
            st, b = tpclient.bet(conn, tok, rid, band, stake, f"after-{i}")
            assert st == st_want and (code is None or b["error"]["code"] == code), (band, stake, b)
            if st == 201:
                ok[b["bet_id"]] = (uid, band, stake)
        code, m = ws_bet(s, users[1][1], rid, 4, 150, "ws-after")
        assert code == "ok", m
        ok[m["bet_id"]] = (users[1][0], 4, 150)
        assert ws_bet(s, users[1][1], rid, 0, 100001, "ws-big")[0] == "invalid_stake"
        assert ws_bet(s, users[1][1], rid, 5, 500, "ws-band")[0] == "invalid_band"
        # Its odds: 5 pools, multipliers at rake 300 (a bet on band 0 moves them).
        def trigger():
            st, tb = tpclient.bet(conn, users[2][1], rid, 0, 300, "odds-trigger")
            assert st == 201, tb
            ok[tb["bet_id"]] = (users[2][0], 0, 300)
        odds = ws_odds(s, rid, trigger)
        pools = odds["pools"]
        assert len(pools) == 5, odds
        T = sum(pools)
        for p, m in zip(pools, odds["multipliers"]):
            assert (m is None) if p == 0 else abs(m - (T - min(T * 300 // 10000, T - p)) / p) \
                < 1e-9, odds
        conn.close()
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") in
                         ("settled", "cancelled"), timeout=30, what=f"round {rid} final")
        h = tpclient.round_hash(c, rid)
        assert (h["edges"], h["rake_bps"], h["min_stake"], h["max_stake"]) == \
            ("-10,-3,3,10", "300", "100", "100000"), h
        check_paid(c, 2, [rid], ok, users, start)   # at the round's rake, 300
        # The next round is the restarted server's first: the new rules, and only those.
        st, nxt = s.json("GET", f"/api/v1/rounds/{rid + 1}")
        assert st == 200 and (nxt["min_stake"], nxt["max_stake"], nxt["rake_bps"],
                              len(nxt["bands"])) == (500, 1000, 1000, 3), nxt
        if nxt["state"] == "open" and nxt["locks_at"] - time.time() * 1000 > 1000:
            conn = tpclient.Http(s)
            tok = users[3][1]
            assert tpclient.bet(conn, tok, rid + 1, 0, 200, "n1")[1]["error"]["code"] == \
                "invalid_stake"
            assert tpclient.bet(conn, tok, rid + 1, 0, 1001, "n2")[1]["error"]["code"] == \
                "invalid_stake"
            assert tpclient.bet(conn, tok, rid + 1, 3, 500, "n3")[1]["error"]["code"] == \
                "invalid_band"
            assert tpclient.bet(conn, tok, rid + 1, 2, 500, "n4")[0] == 201
            conn.close()
        assert "assertion failed" not in s.log_text()
        code, out = tpclient.audit(s)
        assert code == 0, out


def test_rounds_left_outside_the_index_end():
    """Rounds a server without the unfinished index left in flight. With live_s = 8 × betting_s
    nine rounds are unfinished at any time; the server is stopped with bets on the three oldest,
    which are outside the 6 newest, and the index is deleted (what an older version leaves).
    The audit reports each of them as missing from the index. Restarted, the leader adds them
    to the index in its first steps (round_index over the round ids above the scan mark), so
    they end like the others: settled or cancelled, every bet paid or refunded, audit clean.
    Before, only the 6 newest were seen and these three stayed live with their stakes held."""
    env = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "8",
           "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_GRACE": "5s"}
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 3, "ix")
        start = tpclient.balances(c, 1)
        bets, rounds = {}, []
        for k in range(3):
            o = tpclient.fresh_open_round(s, 400)
            ok, other = tpclient.place_bets(s, users, o["id"], [(k + i % 4, 100 + i) for i in
                                                                 range(6)], nthreads=2,
                                            tag=f"ix{k}")
            assert len(ok) >= 1, other
            bets.update(ok)
            rounds.append(o["id"])
        first = rounds[0]
        tpenv.wait_until(lambda: int(c.hget("tp:{g}:current", "open") or 0) >= rounds[-1] + 6,
                         timeout=15, what="six newer rounds")
        s.stop(signal.SIGKILL)
        newest = int(c.zrevrange("tp:{g}:rounds", 0, 0)[0])
        states = {rid: c.hget("tp:{g}:round:%d" % rid, "state") for rid in rounds}
        assert newest - 6 >= rounds[-1] and set(states.values()) == {"live"}, (newest, states)
        c.delete("tp:{g}:unfinished", "tp:{g}:unfinished_scan")
        r_ = s.run_cli("audit", "--redis-only")
        out = r_.stdout + r_.stderr
        assert r_.returncode == 1, out
        for rid in rounds:
            assert f"round {rid} is live but not in tp:{{g}}:unfinished" in out, out
        s.start()
        tpenv.wait_until(lambda: all(c.hget("tp:{g}:round:%d" % rid, "state") in
                                     ("settled", "cancelled") for rid in rounds),
                         timeout=30, what="the rounds left outside the index final")
        assert "rounds left in flight outside the unfinished index added" in s.log_text()
        for rid in range(first, newest + 1):
            tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") in
                             ("settled", "cancelled"), timeout=20, what=f"round {rid} final")
        check_paid(c, 1, rounds, bets, users, start)
        code, out = tpclient.audit(s)
        if code != 0:   # a busy game: reads are not one snapshot
            time.sleep(1)
            code, out = tpclient.audit(s)
        assert code == 0 and "ok   unfinished index" in out, out


def test_small_grace_boundary_actions_run_back_to_back():
    """live_s = betting_s with the smallest grace (100 ms): at each boundary the leader owes an
    open, a lock and a close. At one action per 50 ms step the close came ~100+ ms late and
    every round was cancelled; steps now follow an action at once, so rounds settle."""
    env = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "1",
           "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_GRACE": "100ms"}
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        time.sleep(10)
        states = [c.hget("tp:{g}:round:%d" % i, "state") for i in range(1, 40)]
        final = [x for x in states if x in ("settled", "cancelled")]
        print(f"    {len(final)} final rounds: {final.count('settled')} settled")
        assert len(final) >= 5 and final.count("settled") >= len(final) // 2, states


if __name__ == "__main__":
    tpenv.main()
