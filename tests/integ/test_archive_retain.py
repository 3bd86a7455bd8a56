"""game.retain_s (src/game/leader_archive.c) with a real Redis, Postgres and tickpool: a
settled round stays in Redis retain_s from when archival first found it whole in Postgres
(tp:{g}:round:N:pg_at), not from its close, after an outage longer than retain_s and across a
takeover; a pg_at written by something other than tickpool holds up nothing. Split from
test_archive.py (which with these took ~315 s under ASan, near meson's 450 s timeout).
"""

import datetime
import os
import re
import signal
import time

import pgwlib
import tpclient
import tpenv
from archivelib import ENV, MSGPACK, G, archived, bet_round, unarchivable, wait_final


def archived_lines(s, rid):
    """(Unix ms, pid, pg_at) of every "round archived to Postgres" line of round rid in the
    log (pg_at: the time retain_s counted from)."""
    out = []
    for m in re.finditer(r'^ts=(\S+)Z level=info pid=(\d+) .*msg="round archived to Postgres" '
                         rf'round={rid}(?: pg_at=(\d+))?$', s.log_text(), re.M):
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
        ms = int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000 + 0.5)
        out.append((ms, int(m.group(2)), int(m.group(3) or 0)))
    return out


def test_retain_counts_from_postgres_having_the_round():
    """game.retain_s counts from when archival first finds the round whole in Postgres, not
    from its close (which archived a round the moment Postgres came back from an outage longer
    than retain_s, before session 22). A round bet on and settled while Postgres is down, for
    longer than retain_s past its close and 20 newer rounds: once Postgres is back the leader
    keeps the time it found the round whole (tp:{g}:round:N:pg_at) and leaves the round in
    Redis; killed -9, its successor (a new process) reads that time from Redis and archives the
    round retain_s after it, by its own log's clock, not before; the Round object the same
    bytes from Postgres, the key gone with the round, the audit clean. A round an older version
    left in Redis (no time kept, past its close plus retain_s) is this one at Postgres's
    return: it stays retain_s from its first check (docs/operations.md §4, upgrading)."""
    retain = 8  # the leader is killed within this of the time appearing
    env = dict(ENV, TICKPOOL_GAME_RETAIN_S=str(retain))
    with pgwlib.OutagePg("tp_archive_rt") as pg, tpenv.Redis() as r, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 4, "rt")
        pg.stop()
        try:
            rid = bet_round(s, users, "a")
            pg_at = G + f"round:{rid}:pg_at"
            wait_final(c, rid)
            before = {h: s.http("GET", f"/api/v1/rounds/{rid}", headers=MSGPACK if h else None)
                      for h in (False, True)}
            assert all(st == 200 for st, _, _ in before.values()), before
            closes = int(c.hget(G + f"round:{rid}", "closes_at"))
            tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) > rid + 20 and
                             time.time() * 1000 > closes + retain * 1000, timeout=90,
                             what="20 newer rounds and retain_s past the round's close")
            assert c.exists(G + f"round:{rid}") and not c.exists(pg_at)
            back = int(time.time() * 1000)
        finally:
            pg.start()
        tpenv.wait_until(lambda: c.exists(pg_at) or archived(c, rid), timeout=60,
                         what=f"round {rid} found whole in Postgres")
        at = c.get(pg_at)
        assert at is not None and c.exists(G + f"round:{rid}") and not archived_lines(s, rid), \
            "archived as soon as Postgres had it"
        at = int(at)
        assert at >= back > closes + retain * 1000, (at, back, closes)
        killed = set(s.worker_pids())
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.stop()
        assert not archived_lines(s, rid), "archived before the takeover: raise retain"
        assert int(c.get(pg_at)) == at
        s.start()
        tpenv.wait_until(lambda: archived(c, rid), timeout=60, what=f"round {rid} archived")
        # By the new leader, counting from the time the killed one kept (not one of its own).
        (ms, pid, counted), = archived_lines(s, rid)
        assert pid not in killed and counted == at and ms >= at + retain * 1000, \
            (ms, pid, counted, killed, at)
        assert not c.exists(pg_at)
        after = {h: s.http("GET", f"/api/v1/rounds/{rid}", headers=MSGPACK if h else None)
                 for h in (False, True)}
        assert [b for _, _, b in after.values()] == [b for _, _, b in before.values()]
        code, out = tpclient.audit(s)
        assert code == 0, out


def test_unusable_pg_at_holds_up_nothing_and_is_logged():
    """A round's pg_at (tp:{g}:round:N:pg_at) written by something other than tickpool: not a
    number, negative, INT64_MAX (adding retain_s to it overflowed: under UBSan the leader died
    and restarted in a loop, archiving nothing), a year ahead, a hash. Each such round stays in
    Redis with one error line naming it and is counted, the worker never restarts, and newer
    rounds are archived past them; with the keys deleted the next sweep finds each round whole,
    keeps a new time and archives it, the gauge back to 0, the audit clean."""
    with tpenv.Postgres() as pg, tpenv.Redis() as r, \
            tpenv.Server(redis=r, pg=pg, env=ENV, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) >= 6, timeout=30,
                         what="6 rounds")
        workers = set(s.worker_pids())
        # Among the 16 newest rounds: archival has not looked at them yet.
        top = int(c.zrevrange(G + "rounds", 0, 0)[0])
        year = int(time.time() * 1000) + 365 * 86400 * 1000
        bad = {top - 4: "abc", top - 3: "-5", top - 2: "9223372036854775807",
               top - 1: str(year)}
        for rid, v in bad.items():
            c.set(G + f"round:{rid}:pg_at", v)
        c.hset(G + f"round:{top}:pg_at", "at", "1")
        # archived() raises (wait_until: not yet) until round top + 2 is made.
        tpenv.wait_until(lambda: archived(c, top + 2), timeout=120,
                         what=f"round {top + 2} archived past rounds {top - 4}..{top}")
        tpenv.wait_until(lambda: unarchivable(s) >= 5, timeout=60, what="the rounds counted")
        log = s.log_text()
        for rid in bad:
            assert c.exists(G + f"round:{rid}") and c.zscore(G + "rounds", rid) is not None
            line = ("level=error .*round left in Redis: its time Postgres was first found to "
                    r"hold it \(tp:\{g\}:round:N:pg_at\) is not a time \(.*\" "
                    f"round={rid}\n")
            assert len(re.findall(line, log)) == 1, (rid, log[-3000:])
        line = ("level=error .*round left in Redis: its time Postgres was first found to hold "
                f"it is not a string \\(Redis: WRONGTYPE.*\" round={top}\n")
        assert c.exists(G + f"round:{top}") and len(re.findall(line, log)) == 1, log[-3000:]
        assert set(s.worker_pids()) == workers and "runtime error" not in log
        c.delete(*[G + f"round:{rid}:pg_at" for rid in list(bad) + [top]])
        for rid in list(bad) + [top]:
            tpenv.wait_until(lambda: archived(c, rid), timeout=60, what=f"round {rid} archived")
        tpenv.wait_until(lambda: unarchivable(s) == 0, timeout=60, what="the gauge back to 0")
        assert set(s.worker_pids()) == workers
        code, out = tpclient.audit(s)
        assert code == 0, out


if __name__ == "__main__":
    tpenv.main()
