"""A bet whose bucket has no copy of the open round (a copy lost on a Redis Cluster: a promoted
replica that missed the write, a moved slot; here deleted by hand) while the round is open.

1. The answer is 503 `unavailable` with Retry-After, nothing debited; the same bet retried with
   its key succeeds once the leader has re-written the copy (it used to be 404
   round_not_found, or 409 round_not_open once Postgres knew the round: both false, the round
   was open). A bet on a round that never was still answers 404.
The audit is clean at the end.

Real Redis (standalone), Postgres and tickpool; 2 buckets, one worker, long betting phases.
"""

import json
import time

import tpclient
import tpenv

B = 2
ENV = {"TICKPOOL_GAME_BETTING_S": "30", "TICKPOOL_GAME_LIVE_S": "4",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BUCKETS": str(B),
       "TICKPOOL_LOG_LEVEL": "info"}


def bet_raw(s, tok, rid, key):
    st, h, data = s.http("POST", "/api/v1/bets", {"round_id": rid, "band": 1, "stake": 100},
                         headers=tpclient.auth(tok, key))
    return st, h, json.loads(data) if data else None


def balance(s, tok):
    st, v = s.json("GET", "/api/v1/me", headers=tpclient.auth(tok))
    assert st == 200, (st, v)
    return v["balance"]


def test_bet_on_a_missing_copy_of_the_open_round_is_503_then_succeeds():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=1, https=False) as s:
        c = r.client()
        tpclient.wait_game(s, timeout=30)
        users = tpclient.make_users(s, 2 * B, prefix="cm")
        uid, tok = next((u, t) for u, t in users if u % B == 1)
        o = tpclient.fresh_open_round(s, min_left_ms=15000, timeout=60)
        rid = o["id"]
        key = "tp:{b1}:round:%d:state" % rid
        tpenv.wait_until(lambda: c.hget(key, "state") == "open", timeout=5, interval=0.02,
                         what="the open round's copy")
        # Postgres knows the round (the answer used to be 409 round_not_open from then on).
        tpenv.wait_until(lambda: pg.psql(f"SELECT count(*) FROM rounds WHERE id = {rid}") == [["1"]],
                         timeout=20, what="the round in Postgres")
        before = balance(s, tok)
        assert c.delete(key) == 1
        st, h, v = bet_raw(s, tok, rid, "cm-1")
        assert (st, v["error"]["code"]) == (503, "unavailable"), (st, v)
        assert h.get("retry-after") == "1", h
        assert balance(s, tok) == before
        t0 = time.monotonic()
        st, h, v = tpenv.wait_until(lambda: (lambda x: x if x[0] == 201 else None)(
            bet_raw(s, tok, rid, "cm-1")), timeout=5, interval=0.05, what="the retried bet")
        print(f"the retried bet succeeded {time.monotonic() - t0:.2f} s later")
        assert v["round_id"] == rid and balance(s, tok) == before - 100
        assert c.hget(key, "state") == "open"
        assert 'reason="a bet found a copy missing"' in s.log_text()
        # A round that never was: still 404.
        st, h, v = bet_raw(s, tok, rid + 1000, "cm-2")
        assert (st, v["error"]["code"]) == (404, "round_not_found"), (st, v)
        code, out = tpclient.audit(s, wait="20")
        assert code == 0, out


if __name__ == "__main__":
    tpenv.main()
