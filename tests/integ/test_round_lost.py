"""A round's record (tp:{g}:round:<id>) goes missing from Redis (an operator's DEL, an eviction
under a wrong maxmemory-policy) while the round is still unfinished.

The leader used to fail its whole snapshot on the missing hash and stop stepping: no round
opened, locked or settled again. Now it leaves the lost round out of its plan, goes on with the
game, and refunds the lost round's stakes (its seed commitment and prices went with the record,
so it can never be settled verifiably): the bucket copies are cancelled once the round's lock
and grace are past, a cancelling record is written in its place and the usual refund pages run.
A lost round that is already final owes nothing: it is only skipped. The audit is clean.

Real Redis, Postgres and tickpool; one worker, short rounds, 1 s grace.
"""

import tpclient
import tpenv

ENV = {"TICKPOOL_GAME_BETTING_S": "3", "TICKPOOL_GAME_LIVE_S": "3",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_GRACE": "1s",
       "TICKPOOL_LOG_LEVEL": "info"}


def test_leader_goes_on_and_refunds_a_round_whose_record_is_lost():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=1, https=False) as s:
        c = r.client()
        tpclient.wait_game(s, timeout=30)
        (uid, tok), = tpclient.make_users(s, 1, prefix="lost")
        start = tpclient.balance(s, tok)
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:1", "state") == "settled", timeout=30,
                         what="a settled round")
        o = tpclient.fresh_open_round(s, min_left_ms=1500, timeout=30)
        rid = o["id"]
        conn = tpclient.Http(s)
        st, v = tpclient.bet(conn, tok, rid, 1, 700, "lost-1")
        assert st == 201, (st, v)
        assert tpclient.balance(s, tok) == start - 700
        # The open round's record is lost; its bucket copies and the held stake remain.
        assert c.delete("tp:{g}:round:%d" % rid) == 1
        # A final round among the newest loses its record too: nothing is owed on it.
        final = next(int(x) for x in c.zrevrange("tp:{g}:rounds", 0, -1)
                     if c.hget("tp:{g}:round:%s" % x, "state") in ("settled", "cancelled"))
        assert c.delete("tp:{g}:round:%d" % final) == 1

        # The game goes on: two more rounds open after the lost one, and one of them settles.
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % (rid + 2), "state") is not None,
                         timeout=20, what="rounds opened after the lost one")
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % (rid + 1), "state") == "settled",
                         timeout=20, what="the round after the lost one settled")
        # The live round that closed at the lost round's lock ended as usual.
        assert c.hget("tp:{g}:round:%d" % (rid - 1), "state") in ("settled", "cancelled")
        # The lost round's stake comes back, once.
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") == "cancelled",
                         timeout=20, what="the lost round cancelled")
        assert tpclient.balance(s, tok) == start
        h = c.hgetall("tp:{g}:round:%d" % rid)
        assert (h["r_refunds"], h["r_total"], h["refund_all"]) == ("700", "700", "1"), h
        assert c.zscore("tp:{g}:unfinished", rid) is None
        log = s.log_text()
        assert "round record missing: cancelling it, every stake refunded" in log, log[-3000:]
        assert "round record missing: final, nothing owed" in log
        # Said once per lease, not every step.
        assert log.count("round record missing: final, nothing owed") == 1
        assert c.exists("tp:{g}:round:%d" % final) == 0
        # Refunded once, not again at a later step: the leader goes on (a round it opened after
        # the cancellation settles, many steps later) and the balance has not moved.
        later = int(c.zrevrange("tp:{g}:rounds", 0, 0)[0]) + 1
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % later, "state") == "settled",
                         timeout=30, what=f"round {later}, opened after the cancellation, settled")
        assert tpclient.balance(s, tok) == start
        assert c.hget("tp:{g}:round:%d" % rid, "r_refunds") == "700"
        code, out = tpclient.audit(s, wait="20")
        assert code == 0, out


if __name__ == "__main__":
    tpenv.main()
