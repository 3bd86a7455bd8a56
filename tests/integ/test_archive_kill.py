"""Archival under kill -9 (src/game/leader_archive.c), with a real Redis, Postgres and
tickpool: a leader killed between archival steps leaves every round servable with the same
bytes, and the next leader finishes the job; workers killed at random moments while archival
runs leave no round that history cannot serve.
"""

import os
import signal
import time

import tpclient
import tpenv
from archivelib import ENV, G, archived, bet_round, history, round_keys, wait_final


def test_leader_killed_between_archival_steps():
    env = dict(ENV, TICKPOOL_GAME_RETAIN_S="3600")
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 3, "ak")
        r1 = bet_round(s, users, "k1")
        wait_final(c, r1)
        r2 = bet_round(s, users, "k2")
        wait_final(c, r2)
        tpenv.wait_until(lambda: pg.psql(f"SELECT count(*) FROM rounds WHERE id IN ({r1},{r2}) "
                                         "AND seed IS NOT NULL")[0][0] == "2",
                         timeout=30, what="both rounds in Postgres")
        time.sleep(1)  # the payouts drain behind the receipt
        before = {rid: history(s, rid, users) for rid in (r1, r2)}
        # Archival only ever touches rounds behind the leader's window of the newest ones.
        tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) > r2 + 17, timeout=60,
                         what="17 newer rounds")
        # A leader killed after step 2 in bucket 0 (r1: marked, bucket 0's keys gone) and after
        # step 3 (r2: the round hash and seed gone, still on the to-do list).
        c.hset(G + f"round:{r1}", "archiving", "1")
        c.unlink(*[k for k in round_keys(c, r1) if "{b0}" in k])
        c.unlink(G + f"round:{r2}", G + f"seed:{r2}")
        for rid in (r1, r2):
            got = history(s, rid, users)
            for k in before[rid]:
                assert got[k] == before[rid][k], (rid, k)
        # The next leader (a kill -9, then a server with a short retention) finishes both.
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.stop()
        s.env["TICKPOOL_GAME_RETAIN_S"] = "1"
        s.start()
        for rid in (r1, r2):
            tpenv.wait_until(lambda: archived(c, rid) and not round_keys(c, rid), timeout=60,
                             what=f"round {rid} archived by the next leader")
            got = history(s, rid, users)
            for k in before[rid]:
                assert got[k] == before[rid][k], (rid, k)


def test_kill9_during_archival_leaves_every_round_servable():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 3, "k9")
        for k in range(3):
            bet_round(s, users, f"k9{k}")
        tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) > 40, timeout=90,
                         what="40 rounds")
        # Kill the worker (the leader) at random moments while archival runs.
        for i in range(4):
            time.sleep(1.3 + 0.4 * i)
            for pid in s.worker_pids():
                os.kill(pid, signal.SIGKILL)
            tpenv.wait_until(lambda: s.http("GET", "/healthz")[0] == 200, timeout=20,
                             what="a restarted worker")
        top = int(c.zrevrange(G + "rounds", 0, 0)[0])
        st, lst = s.json("GET", f"/api/v1/rounds?before={top + 1}&limit=100")
        assert st == 200, lst
        ids = [x["id"] for x in lst["rounds"]]
        assert ids == list(range(top, max(0, top - 100), -1)), ids
        assert int(c.zcard(G + "rounds")) < top  # something was archived
        for x in lst["rounds"]:
            st, one = s.json("GET", f"/api/v1/rounds/{x['id']}")
            assert st == 200 and one["id"] == x["id"]


if __name__ == "__main__":
    tpenv.main()
