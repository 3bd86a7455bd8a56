"""Archival under kill -9 (src/game/leader_archive.c), with a real Redis, Postgres and
tickpool: a leader killed between archival steps leaves every round servable with the same
bytes, and no idempotency key that is neither in the hot index nor in Postgres, and the next
leader finishes the job; workers killed at random moments while archival runs leave no round
that history cannot serve.
"""

import os
import signal
import time

import tpclient
import tpenv
from archivelib import (ENV, B, G, archived, bet_round, history, hot_index, round_keys,
                        wait_final)


def keys_accounted(c, pg, fields):
    """Every (bucket, "<user>:<key>", round) of `fields` is in its bucket's hot index naming
    that round, or its bet is in Postgres (where a bet whose key is not hot is looked up)."""
    hot = hot_index(c)
    rounds = sorted({rid for _, _, rid in fields})
    in_pg = {(f"{u}:{k}", int(rid)) for u, k, rid in pg.psql(
        "SELECT user_id, idempotency_key, round_id FROM bets WHERE round_id IN (%s)"
        % ",".join(map(str, rounds)))}
    missing = [(b, f, rid) for b, f, rid in fields
               if not hot.get((b, f), "").startswith(f"{rid}:") and (f, rid) not in in_pg]
    assert not missing, missing


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
        fields = {(b, f, rid) for rid in (r1, r2) for b in range(B)
                  for f in c.hkeys(f"tp:{{b{b}}}:idem:{rid}")}
        assert len(fields) == 40 and all(hot_index(c).get((b, f), "").startswith(f"{rid}:")
                                         for b, f, rid in fields)
        # A leader killed after step 2 in bucket 0 and half-way through bucket 1's index
        # entries (r1: marked, bucket 0's index entries and keys gone, some of bucket 1's index
        # entries gone) and after step 3 (r2: the round hash and seed gone, still on the to-do
        # list).
        c.hset(G + f"round:{r1}", "archiving", "1")
        for b in range(B):
            mine = sorted(f for bb, f, rid in fields if bb == b and rid == r1)
            c.hdel(f"tp:{{b{b}}}:idemhot", *(mine if b == 0 else mine[:len(mine) // 2]))
        c.unlink(*[k for k in round_keys(c, r1) if "{b0}" in k])
        for b in range(B):
            c.hdel(f"tp:{{b{b}}}:idemhot", *[f for bb, f, rid in fields if bb == b and rid == r2])
        c.unlink(G + f"round:{r2}", G + f"seed:{r2}")
        keys_accounted(c, pg, fields)
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
        # No index entry of either round is left, and each of their keys is in Postgres.
        assert not [v for v in hot_index(c).values() if v.split(":")[0] in (str(r1), str(r2))]
        keys_accounted(c, pg, fields)


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
