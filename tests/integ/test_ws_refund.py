"""A player connected over /ws whose bet is refunded because its round was cancelled gets one
`payout` message for the refund, like a winner of a settled round.

A cancelled round is announced twice (`cancelled` when cancellation starts, then with its
receipt once the refunds are credited); workers look up payouts on the announcement with the
receipt, so the refund is in the round's payout hash by then.

The round is cancelled the way a real one is: the whole server stops (SIGSTOP) across the open
round's lock and the grace after it, so the leader finds the lock missed when it runs again.

Real Redis and tickpool; one worker, short rounds, 1 s grace.
"""

import os
import signal
import time

import tpclient
import tpenv

ENV = {"TICKPOOL_GAME_BETTING_S": "3", "TICKPOOL_GAME_LIVE_S": "3",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_GRACE": "1s"}


def test_refunded_player_gets_payout_for_a_cancelled_round():
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=ENV, workers=1, https=False) as s:
        c = r.client()
        tpclient.wait_game(s, timeout=30)
        (uid, tok), = tpclient.make_users(s, 1, prefix="refund")
        start = tpclient.balance(s, tok)
        ws = tpclient.RawWS(s.http_port, token=tok)
        tpenv.wait_until(lambda: ws.read() is not None and
                         [m["t"] for m in ws.msgs[:2]] == ["hello", "snapshot"],
                         timeout=10, what="hello and snapshot")
        o = tpclient.fresh_open_round(s, min_left_ms=1500, timeout=30)
        rid = o["id"]
        st, v = tpclient.bet(tpclient.Http(s), tok, rid, 1, 700, "refund-1")
        assert st == 201, (st, v)

        # Stop every process across the lock and the grace: the lock is missed.
        pids = [s.proc.pid] + s.worker_pids()
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            time.sleep(max(0.0, o["locks_at"] / 1000 - time.time()) + 2.5)
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)

        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") == "cancelled"
                         and c.hget("tp:{g}:round:%d" % rid, "r_refunds") == "700",
                         timeout=20, what="the round cancelled and refunded")

        def payout():
            ws.read()
            return next((m for m in ws.msgs if m["t"] == "payout" and m["round_id"] == rid),
                        None)
        m = tpenv.wait_until(payout, timeout=10, what="a payout message for the refund")
        assert (m["amount"], m["balance"]) == (700, start), m
        assert ws.closed is None, ws.closed
        assert tpclient.balance(s, tok) == start
        # One payout message for the round, though it was announced twice.
        assert sum(1 for x in ws.msgs if x["t"] == "payout" and x["round_id"] == rid) == 1
        ws.close()


if __name__ == "__main__":
    tpenv.main()
