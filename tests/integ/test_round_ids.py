"""Round ids after Redis lost its rounds (a FLUSHALL, an AOF lost with its disk, a restore from an
older backup) while Postgres keeps every round it was sent.

round_boundary.lua used to open Redis's newest id + 1, or 1 when Redis held no round, so the
game started again at round 1: ids Postgres already held for other rounds, their bets and
payouts (the writer's INSERT of the new round 1 found the old row). Now the leader reads
Postgres's newest round id once per lease, and again when Redis, having held rounds, holds none,
and opens above it; with Postgres unreachable and no round in Redis, no round opens (logged at
error) rather than reuse an id.

Real Redis, Postgres and tickpool; one worker, short rounds.
"""

import subprocess
import time

import tpenv

ENV = {"TICKPOOL_GAME_BETTING_S": "2", "TICKPOOL_GAME_LIVE_S": "2",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_LOG_LEVEL": "info"}


def pg_rounds(pg):
    return {int(i): int(t) for i, t in pg.psql("SELECT id, opens_at FROM rounds")}


def redis_open(c):
    v = c.hget("tp:{g}:current", "open")
    return int(v) if v else None


def first_above(c, below):
    """The lowest round id in Redis above `below` (None: none yet): the first round opened
    since, whatever opened after it before the test looked (a loaded host)."""
    ids = [int(i) for i in c.zrange("tp:{g}:rounds", 0, -1) if int(i) > below]
    return min(ids) if ids else None


def wait_written(pg, c, rid):
    """Waits until Postgres holds round rid as Redis has it (its opens_at); returns the rows."""
    want = int(c.hget("tp:{g}:round:%d" % rid, "opens_at"))

    def ok():
        rows = pg_rounds(pg)
        return rows if rows.get(rid) == want else None
    return tpenv.wait_until(ok, timeout=20, what=f"round {rid} written to Postgres as opened")


def test_rounds_open_above_postgres_after_redis_lost_them():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=1, https=False) as s:
        c = r.client()
        tpenv.wait_until(lambda: len(pg_rounds(pg)) >= 3, timeout=30, what="3 rounds in Postgres")
        # 1. Redis flushed while the server is stopped: the next round opens above Postgres's.
        s.stop()
        before = pg_rounds(pg)
        m = max(before)
        c.flushall()
        s.start()
        first = tpenv.wait_until(lambda: first_above(c, 0), timeout=20, what="a round open again")
        assert first == m + 1, (first, m)
        rows = wait_written(pg, c, first)
        assert {i: t for i, t in rows.items() if i <= m} == before  # older rounds untouched
        assert "Postgres holds rounds above Redis's newest" in s.log_text()

        # 2. Flushed under the running leader, once Postgres has caught up with Redis.
        def caught_up():
            top = c.zrevrange("tp:{g}:rounds", 0, 0)
            return top and max(pg_rounds(pg)) == int(top[0])
        tpenv.wait_until(caught_up, timeout=20, what="Postgres caught up with Redis's rounds")
        m = max(pg_rounds(pg))
        c.flushall()
        again = tpenv.wait_until(lambda: redis_open(c), timeout=20, what="a round open again")
        assert again > m, (again, m)
        wait_written(pg, c, again)
        ids = sorted(c.zrange("tp:{g}:rounds", 0, -1), key=int)
        assert int(ids[0]) > m, ids


def redis_behind(s, pg, c):
    """Plays 2 rounds, stops the server and puts Postgres 10 ids ahead of Redis (Postgres's
    newest round copied 10 ids up), as after a Redis restored from an older backup; waits until
    Redis's open round's lock is past. Returns (Postgres's newest before the copy, Redis's)."""
    tpenv.wait_until(lambda: len(pg_rounds(pg)) >= 2, timeout=30, what="2 rounds in Postgres")
    s.stop()
    m = max(pg_rounds(pg))
    pg.psql(f"CREATE TEMP TABLE r AS SELECT * FROM rounds WHERE id = {m}; "
            f"UPDATE r SET id = {m + 10}; INSERT INTO rounds SELECT * FROM r")
    redis_newest = int(c.zrevrange("tp:{g}:rounds", 0, 0)[0])
    assert redis_newest < m + 10
    time.sleep(2.5)  # the open round's lock passes while no server runs
    return m, redis_newest


def test_rounds_open_above_postgres_when_redis_is_behind():
    """Redis restored from an older backup: it holds rounds, but Postgres holds newer ones (made
    here by copying Postgres's newest round 10 ids up while the server is stopped). The new
    leader's first step, whose boundary is long due, must wait for Postgres's answer."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=1, https=False) as s:
        c = r.client()
        m, redis_newest = redis_behind(s, pg, c)
        s.start()
        nxt = tpenv.wait_until(lambda: first_above(c, redis_newest), timeout=20,
                               what="a new round open")
        assert nxt == m + 11, (nxt, m, redis_newest)
        wait_written(pg, c, nxt)
        assert "Postgres holds rounds above Redis's newest" in s.log_text()


def test_a_round_opened_before_a_slow_floor_is_reported():
    """Postgres slower than the leader's 2 s wait (its rounds table locked): the game goes on from
    Redis's newest round, which here reuses an id Postgres holds; once the floor answers, the
    leader says so at error, naming the round."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=1, https=False) as s:
        c = r.client()
        m, redis_newest = redis_behind(s, pg, c)
        lock = subprocess.Popen(["psql", pg.url, "-qAtX", "-c",
                                 "BEGIN; LOCK TABLE rounds IN ACCESS EXCLUSIVE MODE; "
                                 "SELECT pg_sleep(5); COMMIT;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # the lock is taken before the server starts
            s.start()
            nxt = tpenv.wait_until(lambda: first_above(c, redis_newest), timeout=20,
                                   what="a new round open")
            assert nxt == redis_newest + 1, (nxt, redis_newest)  # the floor was not known yet
            tpenv.wait_until(lambda: "was known is not above it" in s.log_text(), timeout=20,
                             what="the leader's error about the round's id")
            assert f"round={nxt} postgres_newest={m + 10}" in s.log_text()
        finally:
            lock.wait(timeout=30)


def test_no_round_opens_when_redis_is_empty_and_postgres_unknown():
    # A Postgres URL nobody answers: the leader cannot learn the floor, so with no round in
    # Redis nothing opens, and the log says why.
    dead = f"postgresql://tickpool@127.0.0.1:{tpenv.free_port()}/tickpool?connect_timeout=1"
    with tpenv.Redis() as r, \
            tpenv.Server(redis=r, env=dict(ENV, TICKPOOL_POSTGRES_URL=dead), workers=1,
                         https=False, migrate=False) as s:
        c = r.client()
        tpenv.wait_until(lambda: "no round opens: Redis holds no round" in s.log_text(),
                         timeout=20, what="the leader's error")
        time.sleep(3)  # longer than a betting phase: still nothing
        assert c.hget("tp:{g}:current", "open") is None
        assert c.zcard("tp:{g}:rounds") == 0


if __name__ == "__main__":
    tpenv.main()
