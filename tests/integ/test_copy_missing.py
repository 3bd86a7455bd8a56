"""A bet whose bucket has no copy of the open round (a copy lost on a Redis Cluster: a promoted
replica that missed the write, a moved slot; here deleted by hand) while the round is open.

1. The answer is 503 `unavailable` with Retry-After, nothing debited; the same bet retried with
   its key succeeds once the leader has re-written the copy (it used to be 404
   round_not_found, or 409 round_not_open once Postgres knew the round: both false, the round
   was open). A bet on a round that never was still answers 404.
2. Bets naming a round that never was, sent in a tight loop meanwhile, cannot crowd out the
   repair request (tp:{g}:repair, one key, the last write wins, and one request per worker every
   250 ms): a worker asks only for a round whose record says open.
The audit is clean at the end.

Real Redis (standalone), Postgres and tickpool; 2 buckets, one worker, long betting phases.
"""

import itertools
import json
import threading
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


def game_with_open_copy(s, c, prefix):
    """(token in bucket 1, token in bucket 0, open round id, its bucket-1 copy key) once that
    copy is written."""
    tpclient.wait_game(s, timeout=30)
    users = tpclient.make_users(s, 2 * B, prefix=prefix)
    tok1 = next(t for u, t in users if u % B == 1)
    tok0 = next(t for u, t in users if u % B == 0)
    rid = tpclient.fresh_open_round(s, min_left_ms=15000, timeout=60)["id"]
    key = "tp:{b1}:round:%d:state" % rid
    tpenv.wait_until(lambda: c.hget(key, "state") == "open", timeout=5, interval=0.02,
                     what="the open round's copy")
    return tok1, tok0, rid, key


def test_bet_on_a_missing_copy_of_the_open_round_is_503_then_succeeds():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=1, https=False) as s:
        c = r.client()
        tok, _, rid, key = game_with_open_copy(s, c, "cm")
        # Postgres knows the round (the answer used to be 409 round_not_open from then on).
        tpenv.wait_until(lambda: pg.psql(f"SELECT count(*) FROM rounds WHERE id = {rid}")
                         == [["1"]], timeout=20, what="the round in Postgres")
        before = tpclient.balance(s, tok)
        assert c.delete(key) == 1
        st, h, v = bet_raw(s, tok, rid, "cm-1")
        assert (st, v["error"]["code"]) == (503, "unavailable"), (st, v)
        assert h.get("retry-after") == "1", h
        assert tpclient.balance(s, tok) == before
        t0 = time.monotonic()
        st, h, v = tpenv.wait_until(lambda: (lambda x: x if x[0] == 201 else None)(
            bet_raw(s, tok, rid, "cm-1")), timeout=5, interval=0.05, what="the retried bet")
        print(f"the retried bet succeeded {time.monotonic() - t0:.2f} s later")
        assert v["round_id"] == rid and tpclient.balance(s, tok) == before - 100
        assert c.hget(key, "state") == "open"
        assert 'reason="a bet found a copy missing"' in s.log_text()
        # A round that never was: still 404.
        st, h, v = bet_raw(s, tok, rid + 1000, "cm-2")
        assert (st, v["error"]["code"]) == (404, "round_not_found"), (st, v)
        code, out = tpclient.audit(s, wait="20")
        assert code == 0, out


def test_bogus_round_bets_do_not_crowd_out_a_repair():
    # Two workers, each asking at most every 250 ms: one's bogus request overwrites the other's
    # genuine one before the leader reads it.
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=2, https=False) as s:
        c = r.client()
        tok, tok0, rid, key = game_with_open_copy(s, c, "cb")
        stop = threading.Event()
        sent = [0]
        serial = itertools.count()

        def flood():  # a round that never was, on the other bucket
            conn = tpclient.Http(s)
            while not stop.is_set():
                st, v = tpclient.bet(conn, tok0, rid + 1000, 1, 100, f"cb-x{next(serial)}")
                assert st == 404, (st, v)
                sent[0] += 1
        ths = [threading.Thread(target=flood) for _ in range(4)]
        for th in ths:
            th.start()
        try:
            time.sleep(0.5)
            assert c.delete(key) == 1
            t0 = time.monotonic()
            tpenv.wait_until(lambda: bet_raw(s, tok, rid, "cb-1")[0] == 201, timeout=3,
                             interval=0.05, what="the bet on the repaired copy")
            took = time.monotonic() - t0
        finally:
            stop.set()
            for th in ths:
                th.join()
        print(f"bets on the missing copy succeed {took:.2f} s later, {sent[0]} bogus bets sent")
        assert sent[0] > 50, sent[0]
        assert c.hget(key, "state") == "open"


if __name__ == "__main__":
    tpenv.main()
