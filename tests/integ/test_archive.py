"""Archival (src/game/leader_archive.c) and history from Postgres, with a real Redis, Postgres
and tickpool: settled rounds leave Redis once Postgres holds them whole and game.retain_s has
passed, and their history reads the same bytes from Postgres.

Checked: archival deletes exactly the round's keys in every bucket (and the keys of no player,
no other family); the Round object (JSON and MessagePack), the rounds list and /me/bets are
byte-identical before and after, and `tickpool verify` passes with the same checks; archival waits while Postgres is down and resumes after;
history answers 503 `unavailable` with Retry-After while Postgres is down and bets still go
through; a leader killed between archival steps leaves every round servable and the next
leader finishes the job.
"""

import os
import signal
import time

import pgwlib
import tpclient
import tpenv

NBANDS = 5
B = 2
ENV = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "1",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BUCKETS": str(B),
       "TICKPOOL_GAME_GRACE": "2s", "TICKPOOL_GAME_MIN_STAKE": "1",
       "TICKPOOL_GAME_RETAIN_S": "1"}
MSGPACK = {"Accept": "application/msgpack"}
G = "tp:{g}:"


def round_keys(c, rid):
    """Every key of round rid, as the layout in scripts/lua/README.md names them."""
    keys = set()
    for b in range(B):
        p = f"tp:{{b{b}}}:"
        keys |= {p + f"round:{rid}:state", p + f"pool:{rid}", p + f"plan:{rid}",
                 p + f"paid:{rid}", p + f"payout:{rid}"}
        keys |= {p + f"bets:{rid}:{band}" for band in range(NBANDS)}
    keys |= {G + f"round:{rid}", G + f"seed:{rid}"}
    return {k for k in keys if c.exists(k)}


def player_state(c):
    """Every key that is no round's (balances, grants, house, lists, accounts…) with its value."""
    out = {}
    for k in c.keys("*"):
        if any(f in k for f in (":round:", ":pool:", ":plan:", ":paid:", ":payout:", ":bets:",
                                ":seed:", "outbox", "ticks", "lease", "current", "rounds",
                                "unfinished", "unsettled", "epoch", ":idem:", "workers")):
            continue
        out[k] = c.dump(k)
    return out


def history(s, rid, users):
    """The bytes history shows of round rid and the players' bets."""
    got = {}
    for name, h in (("json", None), ("msgpack", MSGPACK)):
        st, _, body = s.http("GET", f"/api/v1/rounds/{rid}", headers=h)
        assert st == 200, (st, body)
        got["round." + name] = body
        st, _, body = s.http("GET", f"/api/v1/rounds?before={rid + 1}&limit=3", headers=h)
        assert st == 200, (st, body)
        got["list." + name] = body
    v = s.run_cli("verify", str(rid))
    assert v.returncode == 0, v.stdout + v.stderr
    # Where it read the round from is the one line that differs.
    got["verify"] = "".join(l for l in v.stdout.splitlines(True) if "read from Postgres" not in l)
    for uid, tok in users:
        st, _, body = s.http("GET", "/api/v1/me/bets?limit=200",
                             headers={"Authorization": "Bearer " + tok})
        assert st == 200, (st, body)
        got[f"bets.{uid}"] = body
    return got


def bet_round(s, users, tag):
    """Bets on every band of a fresh open round; returns its id once it is final in Redis with
    its seed revealed."""
    o = tpclient.fresh_open_round(s, 400)
    jobs = [(i % NBANDS, 10 + i) for i in range(20)]
    ok, other = tpclient.place_bets(s, users, o["id"], jobs, nthreads=4, tag=tag)
    assert ok and all(st == 409 for st, _ in other), other[:3]
    return o["id"]


def wait_final(c, rid):
    tpenv.wait_until(lambda: c.hget(G + f"round:{rid}", "state") in ("settled", "cancelled")
                     and c.hget(G + f"round:{rid}", "seed"), timeout=30,
                     what=f"round {rid} final with its seed")


def archived(c, rid):
    return not c.exists(G + f"round:{rid}") and c.zscore(G + "rounds", rid) is None


def test_archival_exact_keys_same_bytes_and_postgres_outage():
    with pgwlib.OutagePg("tp_archive") as pg, tpenv.Redis() as r, \
            tpenv.Server(redis=r, pg=pg, env=ENV, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 4, "ar")
        rid = bet_round(s, users, "a")
        wait_final(c, rid)
        # Captured before archival, while Redis still has the round.
        keys = round_keys(c, rid)
        assert G + f"round:{rid}" in keys and any(":bets:" in k for k in keys)
        assert any("{b1}" in k for k in keys), keys
        before = history(s, rid, users)
        players = player_state(c)
        tpenv.wait_until(lambda: archived(c, rid), timeout=60, what=f"round {rid} archived")
        # Exactly the round's keys left, in every bucket; no player key changed.
        assert round_keys(c, rid) == set()
        assert player_state(c) == players
        # The same bytes from Postgres.
        after = history(s, rid, users)
        for k in before:
            assert after[k] == before[k], k
        # Postgres down: history answers 503 unavailable with Retry-After; bets go on.
        pg.stop()
        try:
            st, h, body = s.http("GET", f"/api/v1/rounds/{rid}")
            assert st == 503 and b'"unavailable"' in body and h.get("retry-after"), (st, body)
            rid2 = bet_round(s, users, "b")
            wait_final(c, rid2)
            # The round's wait: retain_s and 16 newer rounds pass, and it stays in Redis.
            top = int(c.zrevrange(G + "rounds", 0, 0)[0])
            tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) > rid2 + 20,
                             timeout=60, what="20 newer rounds")
            assert c.exists(G + f"round:{rid2}") and top > 0
            assert "archival waits for Postgres" in s.log_text()
        finally:
            pg.start()
        tpenv.wait_until(lambda: archived(c, rid2), timeout=60,
                         what=f"round {rid2} archived after Postgres came back")
        st, _, _ = s.http("GET", f"/api/v1/rounds/{rid2}")
        assert st == 200
        code, out = tpclient.audit(s)
        assert code == 0, out


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
