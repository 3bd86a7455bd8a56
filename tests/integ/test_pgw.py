"""Postgres write-behind (src/store/pgw.c) against a real Redis, Postgres and tickpool server.

Money goes through the real Lua scripts (grant.lua, bet_batch.lua via python-redis) while the
server's workers drain the outbox into Postgres. Checked: rows and the double-entry ledger,
idempotence across kill -9 mid-drain, and a Postgres outage that never touches Redis.
"""

import contextlib
import datetime
import os
import re
import signal
import time

import pgwlib
import tpenv

ENV = {"TICKPOOL_GAME_BUCKETS": "2", "TICKPOOL_LOG_LEVEL": "info"}


def server(r, pg, **kw):
    s = tpenv.Server(redis=r, pg=pg, env=dict(ENV, **kw.pop("env", {})), migrate=False, **kw)
    return s


def check_consistent(money, pg, nusers, nbets, stakes, extra_grants=0):
    grants, gsum, bets, bsum, ledger, unbalanced = pgwlib.pg_counts(pg)
    assert grants == nusers + extra_grants, (grants, nusers)
    assert gsum == nusers * 100000 + 5 * extra_grants, gsum
    assert bets == nbets, (bets, nbets)
    assert bsum == stakes, (bsum, stakes)
    # Grants have two ledger rows each; a bet none (its bets row is the debit's record).
    assert ledger == 2 * grants, ledger
    assert pgwlib.pg_scalar(pg, "SELECT count(*) FROM ledger WHERE kind = 'bet'") == "0"
    assert unbalanced == 0, "a ledger entry does not sum to zero"
    assert pgwlib.pg_balances(pg) == money.balances(), "per-user balances differ"
    round_acct = int(pgwlib.pg_scalar(pg, "SELECT balance FROM account_balances "
                                          "WHERE account = 'round:900001'"))
    assert round_acct == stakes, (round_acct, stakes)
    # The server's own round events flow in tp:{g}:outbox meanwhile: one delivered and not yet
    # acknowledged is pending for a moment (CI, 2026-12-05: round 1 opened as the check ran).
    # An entry left pending stays so: the wait then fails.
    tpenv.wait_until(lambda: money.pending() == 0, timeout=10, what="no outbox entry pending")


def open_round_900001(c):
    """The workload's round, as the leader's round_opened event writes it."""
    c.xadd("tp:{g}:outbox", {"type": "round_opened", "round_id": "900001", "opens_at": "1",
                             "locks_at": "2", "closes_at": "3", "seed_hash": "ab" * 32})


@contextlib.contextmanager
def drained_round_900001(nbets):
    """A server (2 workers) and its Postgres with 20 players' `nbets` bets on round 900001
    written: yields (money, pg, Σ stakes)."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        with server(r, pg, workers=2) as s:
            pgwlib.migrate(s, pg)
            open_round_900001(money.c)
            stakes = money.workload(nusers=20, nbets=nbets)
            pgwlib.wait_drained(money, pg, nbets)
            yield money, pg, stakes


def test_drain_rows_and_ledger():
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        with server(r, pg, workers=2) as s:
            pgwlib.migrate(s, pg)
            c = money.c
            c.xadd("tp:{g}:outbox", {"type": "user", "user_id": "1", "username": "alice",
                                     "pw_hash": "$argon2id$v=19$x", "created_at": "1000"})
            open_round_900001(c)
            stakes = money.workload(nusers=20, nbets=300)
            pgwlib.wait_drained(money, pg, 300)
            check_consistent(money, pg, 20, 300, stakes)
            # Each bet row keeps the client's Idempotency-Key (workload keys are k<round>-<i>).
            assert pg.psql("SELECT count(*) FROM bets WHERE idempotency_key !~ '^k[0-9]+-[0-9]+$'"
                           ) == [["0"]]
            assert pg.psql("SELECT username, password_hash FROM users WHERE id = 1") == [
                ["alice", "$argon2id$v=19$x"]]
            assert pg.psql("SELECT seed_hash, state, rake_bps FROM rounds WHERE id = 900001") == [["ab" * 32, "open", "300"]]
            # A replayed event (same ids) writes nothing twice.
            c.xadd("tp:{b1}:outbox", {"type": "grant", "grant_id": "signup:1", "user_id": "1",
                                      "amount": "100000", "balance": "1", "ts": "1"})
            tpenv.wait_until(lambda: money.backlog() == 0, what="replay acknowledged")
            check_consistent(money, pg, 20, 300, stakes)
            # One event Postgres refuses (a username its CHECK forbids) is quarantined in the
            # log; it neither blocks the outbox nor keeps the rest of its batch out.
            c.xadd("tp:{g}:outbox", {"type": "user", "user_id": "2", "username": "x.y",
                                     "pw_hash": "h", "created_at": "1000"})
            money.grant(2, 5, grant_id="late:2")
            tpenv.wait_until(lambda: money.backlog() == 0 and pg.psql(
                "SELECT count(*) FROM grants WHERE id = 'late:2'") == [["1"]],
                what="batch with a poisoned event written")
            assert "outbox entry refused" in s.log_text()
            assert "username=x.y" in s.log_text()
            # ... and counted for the alert (one event, on whichever worker's writer took it).
            tpenv.wait_until(lambda: sum(
                int(line.split()[1]) for line in s.http("GET", "/metrics")[2].decode().splitlines()
                if line.startswith("tickpool_writer_events_refused_total ")) == 1,
                what="writer_events_refused_total 1")
            assert pg.psql("SELECT count(*) FROM users WHERE id = 2") == [["0"]]
            # The lag gauges are exported and come back to zero (refreshed every second).
            tpenv.wait_until(lambda: b"\ntickpool_outbox_lag_entries 0\n" in
                             s.http("GET", "/metrics")[2], what="outbox_lag_entries 0")
            # SIGTERM: every worker's writer finishes its batch, stops and is joined.
            assert s.stop() == 0
            assert s.log_text().count("writer stopped") == 2, s.log_text()[-2000:]


def test_kill9_mid_drain_loses_and_doubles_nothing():
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        s = server(r, pg, workers=2)
        pgwlib.migrate(s, pg)
        nbets = 20000
        stakes = money.workload(nusers=200, nbets=nbets)  # queued before any writer runs
        s.start()
        try:
            tpenv.wait_until(lambda: pgwlib.pg_counts(pg)[2] > 0, timeout=20,
                             what="first batch written")
            os.killpg(s.proc.pid, signal.SIGKILL)  # master and workers, mid-drain
            s.proc.wait()
        finally:
            s.stop()
        written = pgwlib.pg_counts(pg)[2]
        print(f"    killed with {written}/{nbets} bets written, backlog {money.backlog()}")
        assert money.backlog() > 0 or written == nbets
        pending = money.pending()  # read by the killed writers, never acknowledged
        seen = len(s.log_text())  # the restart logs to the same file
        restarted = time.time()
        with s:  # restart: dead local consumers' pending entries are claimed at once (no 30 s)
            t0 = time.monotonic()
            pgwlib.wait_drained(money, pg, nbets, timeout=120)
            print(f"    {pending} pending entries reclaimed, drained in "
                  f"{time.monotonic() - t0:.1f}s")
            check_consistent(money, pg, 200, nbets, stakes)
            if pending:
                # When the claim ran, from the writer's own log line: the idle rule would have
                # waited 30 s from their delivery, before the kill; the drain of 20,000 bets
                # after it is no measure (minutes on a loaded machine, sanitizers on).
                claim = re.compile(r'^ts=(\S+)Z .*msg="claimed pending outbox entries"', re.M)
                m = claim.search(s.log_text(), seen)
                assert m, "pending entries never claimed"
                after = log_time(m.group(1)) - restarted
                print(f"    claimed {after:.1f} s after the restart")
                assert after < 20, f"claimed {after:.1f} s after the restart: the idle rule"


def test_postgres_outage_never_blocks_redis():
    with pgwlib.OutagePg("tp_outage") as pg:
        with tpenv.Redis() as r:
            money = pgwlib.Money(r, buckets=2)
            with server(r, pg, workers=1) as s:
                pgwlib.migrate(s, pg)
                stakes = money.workload(nusers=10, nbets=100)
                pgwlib.wait_drained(money, pg, 100)
                pg.stop()
                # Bets keep flowing into Redis at full speed while Postgres is down.
                t0 = time.monotonic()
                for i in range(500):
                    u = 1 + i % 10
                    money.bet(u, 900001, i % 5, 100, f"out-{i}")
                    stakes += 100
                # Well under a second unloaded: the deadline only catches a Redis held up.
                assert time.monotonic() - t0 < 60
                time.sleep(2)
                assert money.backlog() >= 500, money.backlog()
                tpenv.wait_until(lambda: b"tickpool_outbox_lag_entries 0" not in
                                 s.http("GET", "/metrics")[2], what="lag metric > 0")
                assert s.http("GET", "/healthz")[0] == 200
                pg.start()
                pgwlib.wait_drained(money, pg, 600, timeout=40)
                check_consistent(money, pg, 10, 600, stakes)
                log = s.log_text()
                assert log.count("Postgres write failed") <= 2, "errors logged more than once"


def test_key_reused_in_a_later_round_is_kept():
    """Regression (review of the money path): an idempotency key is the player's for 24 h, after
    which the player may reuse it in a later round; Postgres must keep both bets, not drop the
    second. The second round's bets come as one batch (one outbox entry): each of its bets is
    one row."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        with server(r, pg) as s:
            pgwlib.migrate(s, pg)
            money.open_round(900001)
            money.open_round(900002)
            money.grant(1, 10000)
            money.bet(1, 900001, 0, 100, "same-key")
            money.grant(2, 10000)
            res = money.bets(900002, [(1, 1, 200, "same-key"), (2, 3, 300, "k,with,commas"),
                                      (1, 1, 200, "same-key"), (1, 2, 150, "other")],
                             now=5000 + pgwlib.IDEM_TTL * 1000, check=False)
            assert [x[6] for x in res] == [0, 0, 1, 0], res
            pgwlib.wait_drained(money, pg, 4)
            assert pg.psql("SELECT round_id, stake FROM bets WHERE user_id = 1 AND "
                           "idempotency_key = 'same-key' ORDER BY round_id") == [
                ["900001", "100"], ["900002", "200"]]
            assert pg.psql("SELECT id, user_id, band, stake, idempotency_key FROM bets WHERE "
                           "round_id = 900002 ORDER BY id") == [
                [str(res[0][1]), "1", "1", "200", "same-key"],
                [str(res[1][1]), "2", "3", "300", "k,with,commas"],
                [str(res[3][1]), "1", "2", "150", "other"]]


def test_bets_written_once_in_one_statement_with_their_keys():
    """The bets INSERT takes each column as a binary Postgres array (unnest): within one batch
    a bet repeated in its entry and a whole entry read twice are one row each (DISTINCT ON, ON
    CONFLICT DO NOTHING), every key keeps its bytes whatever an array's text would make of them
    (quotes, backslashes, braces, commas, spaces, the word NULL), a key outside printable ASCII
    is stored as the JSON rows stored it (invalid UTF-8 as U+FFFD), and the entries written
    again after the commit change nothing."""
    keys = {101: "plain", 102: 'q"uote\\back{brace},comma', 103: "NULL", 104: "  spaced  ",
            105: b"bad \xff utf8", 106: "ctl\x01", 107: "caf\u00e9 \u20ac \U0001f600"}
    stored = dict(keys)
    stored[105] = "bad \ufffd utf8"
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        s = server(r, pg, workers=1)  # one writer: the three entries are one batch
        pgwlib.migrate(s, pg)

        def line(bet, user, band, stake, balance):
            k = keys[bet] if isinstance(keys[bet], bytes) else keys[bet].encode()
            return b"%d,%d,%d,%d,%d,%s" % (bet, user, band, stake, balance, k)

        first = {"type": "bets", "round_id": "900001", "ts": "5000", "bets": b"\n".join([
            line(101, 1, 0, 100, 900), line(102, 1, 1, 200, 700), line(103, 2, 2, 300, 500),
            line(104, 2, 3, 100, 400), line(101, 1, 0, 100, 900)])}
        second = {"type": "bets", "round_id": "900001", "ts": "5001",
                  "bets": b"\n".join([line(105, 3, 0, 100, 900), line(106, 3, 1, 100, 800),
                                        line(107, 3, 2, 100, 700)])}
        for fields in (first, first, second):  # one batch: queued before the writer runs
            money.c.xadd("tp:{b0}:outbox", fields)
        with s:
            pgwlib.wait_drained(money, pg, 7)
            rows = pg.psql("SELECT id, user_id, round_id, band, stake, placed_at, balance_after, "
                           "idempotency_key FROM bets ORDER BY id")
            assert rows == [
                ["101", "1", "900001", "0", "100", "5000", "900", stored[101]],
                ["102", "1", "900001", "1", "200", "5000", "700", stored[102]],
                ["103", "2", "900001", "2", "300", "5000", "500", stored[103]],
                ["104", "2", "900001", "3", "100", "5000", "400", stored[104]],
                ["105", "3", "900001", "0", "100", "5001", "900", stored[105]],
                ["106", "3", "900001", "1", "100", "5001", "800", stored[106]],
                ["107", "3", "900001", "2", "100", "5001", "700", stored[107]]], rows
            assert pg.psql("SELECT count(*) FROM bets WHERE idempotency_key IS NULL "
                           "OR balance_after IS NULL") == [["0"]]
            assert "outbox entry refused" not in s.log_text(), "an entry was refused"
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             what="entries acknowledged")
            xmins = pg.psql("SELECT DISTINCT xmin FROM bets")
            assert len(xmins) == 1, xmins  # one transaction
            for fields in (second, first):
                money.c.xadd("tp:{b0}:outbox", fields)
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             what="replayed entries acknowledged")
            assert pg.psql("SELECT id, user_id, round_id, band, stake, placed_at, "
                           "balance_after, idempotency_key FROM bets ORDER BY id") == rows
            assert pg.psql("SELECT DISTINCT xmin FROM bets") == xmins


def test_large_entries_drain_in_row_sized_batches():
    """500 outbox entries of 80 bets each (what batched admission writes under load) drain with a
    1 s statement timeout: the writer sizes its reads by rows, so no transaction carries the
    40,000 bets that 500 entries are (such a transaction outlasts the timeout, is rolled back and
    would be read again forever). Two workers' bets-only batches share the lock. Entries written
    again afterwards (a replay of whole batches) change nothing."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        s = server(r, pg, workers=2, env={"TICKPOOL_POSTGRES_TIMEOUT": "1s"})
        pgwlib.migrate(s, pg)
        nusers, per_entry, entries, rid = 200, 80, 500, 900001
        money.open_round(rid)
        for u in range(1, nusers + 1):
            money.grant(u, 100000)
        stakes, nbets = 0, 0
        for e in range(entries):
            batch = []
            for i in range(per_entry):
                u = 1 + (e * per_entry + i) % nusers
                batch.append((u, i % pgwlib.NBANDS, 100 + i, f"big-{e}-{i}"))
                stakes += 100 + i
            money.bets(rid, batch)
            nbets += per_entry
        replay = [fields for _, fields in money.c.xrange("tp:{b0}:outbox", count=entries + nusers)
                  if fields.get("type") == "bets"][:3]
        assert len(replay) == 3 and replay[0]["bets"].count("\n") == per_entry - 1
        with s:  # queued before any writer runs
            t0 = time.monotonic()
            pgwlib.wait_drained(money, pg, nbets, timeout=120)
            took = time.monotonic() - t0
            print(f"    {nbets} bets in {entries} entries drained in {took:.1f}s")
            check_consistent(money, pg, nusers, nbets, stakes)
            log = s.log_text()
            assert "outbox event" not in log, "an entry was refused or skipped"
            for fields in replay:
                money.c.xadd("tp:{b0}:outbox", fields)
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             what="replayed entries acknowledged")
            check_consistent(money, pg, nusers, nbets, stakes)


def cmdstat(c, name):
    """(calls, usec) of one command in Redis INFO commandstats."""
    st = c.info("commandstats").get("cmdstat_" + name, {})
    return st.get("calls", 0), st.get("usec", 0)


def outbox_keys(money):
    return ["tp:{g}:outbox"] + ["tp:{b%d}:outbox" % b for b in range(money.buckets)]


def stream_lens(money):
    return [money.c.xlen(k) for k in outbox_keys(money)]


def bets_trimmed(money):
    """Entries taken off the buckets' outbox streams (the bets') so far: XINFO STREAM's
    entries-added less its length."""
    info = [money.c.xinfo_stream(k) for k in outbox_keys(money)[1:] if money.c.exists(k)]
    return sum(i["entries-added"] - i["length"] for i in info)


def test_outbox_trimmed_while_flowing_untrimmed_while_postgres_down():
    """The writer trims the outbox with XTRIM MINID after each batch (no XDEL per id): while bets
    flow and Postgres is up, committed entries leave the streams before the flow ends; while
    Postgres is down nothing is trimmed (no entry is committed), the backlog grows, and it drains
    to empty once Postgres is back."""
    with pgwlib.OutagePg("tp_trim") as pg:
        with tpenv.Redis() as r:
            money = pgwlib.Money(r, buckets=2)
            with server(r, pg, workers=2) as s:  # two consumers share the group
                pgwlib.migrate(s, pg)
                nusers, stakes, nbets = 20, money.workload(nusers=20, nbets=0), 0
                # The grants written and trimmed (by a batch's trim or the start's idle one):
                # what leaves the buckets' streams from here on is the flow's bets.
                pgwlib.wait_drained(money, pg, 0)
                before, peak, seen = bets_trimmed(money), 0, 0

                def bet_and_look():
                    """One more bet of the flow; at every 50th, the longest stream and the flow's
                    entries trimmed so far. True once the flow has 3000 bets and some were."""
                    nonlocal stakes, nbets, peak, seen
                    money.bet(1 + nbets % nusers, 900001, nbets % 5, 100, f"flow-{nbets}")
                    stakes += 100
                    nbets += 1
                    if nbets % 50 == 1:
                        peak = max(peak, max(stream_lens(money)))
                        seen = seen or bets_trimmed(money) - before
                    return nbets >= 3000 and seen

                # 3000 bets, then one every 10 ms until a look finds entries trimmed. How far a
                # loaded writer trails the flow (the streams' peak) is its speed, not checked here;
                # the deadline catches a writer that does not trim while Postgres is up.
                while nbets < 3000:
                    bet_and_look()
                tpenv.wait_until(bet_and_look, timeout=60, interval=0.01,
                                 what="entries trimmed while bets still flow")
                pgwlib.wait_drained(money, pg, nbets)
                print(f"    {seen} entries trimmed while {nbets} bets flowed; longest: {peak}")
                assert cmdstat(money.c, "xtrim")[0] > 0
                assert cmdstat(money.c, "xdel")[0] == 0, "entries deleted one by one"
                # Postgres down: entries stay pending or undelivered, none committed, none trimmed.
                pg.stop()
                for i in range(600):
                    money.bet(1 + i % nusers, 900001, i % 5, 100, f"down-{i}")
                    stakes += 100
                    nbets += 1
                time.sleep(2)
                assert sum(stream_lens(money)) >= 600, stream_lens(money)
                time.sleep(1)
                assert sum(stream_lens(money)) >= 600, "entries trimmed while Postgres was down"
                pg.start()
                pgwlib.wait_drained(money, pg, nbets, timeout=40)
                assert stream_lens(money) == [0, 0, 0]
                check_consistent(money, pg, nusers, nbets, stakes)


def test_round_result_waits_for_the_batch_that_writes_its_round():
    """Two writers draining a backlog may hold a round's round_opened entry and its
    round_settled entry in two batches. If the result commits first, its UPDATE finds no row
    and the round's INSERT after it says 'open' for good. Here another writer (a consumer on
    another host) holds round_opened mid-batch; the server's writer must not commit the result
    before that writer commits the round."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        with server(r, pg, workers=1) as s:
            pgwlib.migrate(s, pg)
            c = money.c
            g = "tp:{g}:outbox"
            tpenv.wait_until(lambda: any(x["name"] == "pgw" for x in c.xinfo_groups(g)),
                             timeout=20, what="the writer's consumer group")
            opened = {"type": "round_opened", "round_id": "900002", "opens_at": "1",
                      "locks_at": "2", "closes_at": "3", "seed_hash": "cd" * 32}
            # The other writer's read, atomic so the server's blocked XREADGROUP never sees it.
            p = c.pipeline(transaction=True)
            p.xadd(g, opened)
            p.execute_command("XREADGROUP", "GROUP", "pgw", "elsewhere:1", "COUNT", "10",
                              "STREAMS", g, ">")
            p.execute()
            c.xadd(g, {"type": "round_settled", "round_id": "900002", "total": "0",
                       "winning_stake": "0", "rake": "0", "breakage": "0", "payouts": "0",
                       "refunds": "0", "winning_band": "1", "ts": "4"})
            tpenv.wait_until(lambda: "round 900002 is not in Postgres yet" in s.log_text(),
                             timeout=20, what="the result waiting for its round")
            time.sleep(1)
            assert pg.psql("SELECT count(*) FROM rounds WHERE id = 900002") == [["0"]]
            # The other writer commits its batch as a writer does, under the writers' lock
            # (its batch writes a round: the exclusive one), then acknowledges. The waiting
            # result must not hold that lock meanwhile: its transaction is rolled back.
            pg.psql("SET lock_timeout = '5s'; BEGIN; "
                    "SELECT pg_advisory_xact_lock(1953523575); "
                    "INSERT INTO rounds (id, state, opens_at, locks_at, closes_at, "
                    "band_edges_bps, rake_bps, seed_hash) VALUES (900002, 'open', 1, 2, 3, "
                    f"'{{-10,10}}', 300, '{'cd' * 32}'); COMMIT")
            xid = c.xpending_range(g, "pgw", "-", "+", 10, consumername="elsewhere:1")[0]
            c.xack(g, "pgw", xid["message_id"])
            tpenv.wait_until(lambda: pg.psql("SELECT state, winning_band FROM rounds WHERE id = "
                                             "900002") == [["settled", "1"]],
                             timeout=30, what="the result written after its round")
            tpenv.wait_until(lambda: money.pending() == 0, timeout=20, what="all acknowledged")


def test_own_pending_entries_reread_at_once_after_redis_restart():
    """An entry pending under a live writer's own name with no batch in memory (its XACK was
    lost when Redis died before persisting it) is re-read as soon as the writer reconnects,
    not left to the 30 s idle claim of another writer (with one worker: never)."""
    with tpenv.Redis(appendonly=True) as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        with server(r, pg, workers=1) as s:
            pgwlib.migrate(s, pg)
            stakes = money.workload(nusers=5, nbets=50)
            pgwlib.wait_drained(money, pg, 50)
            stream = "tp:{b0}:outbox"
            names = [c["name"] for c in money.c.xinfo_consumers(stream, "pgw")]
            assert len(names) == 1, names
            # Deliver a new entry to the writer's consumer name behind its back, atomically so
            # its blocked XREADGROUP > never sees it: what a lost XACK leaves behind.
            p = money.c.pipeline(transaction=True)
            p.hincrby("tp:{b0}:bal", "1", 5)
            p.xadd(stream, {"type": "grant", "grant_id": "lost-ack:1", "user_id": "1",
                            "amount": "5", "balance": "1", "ts": "1"})
            p.execute_command("XREADGROUP", "GROUP", "pgw", names[0], "COUNT", "10",
                              "STREAMS", stream, ">")
            xid = p.execute()[1]

            def pending_here():  # the server's own round events flow in tp:{g}:outbox meanwhile
                return [(e["message_id"], e["consumer"])
                        for e in money.c.xpending_range(stream, "pgw", "-", "+", 10)]
            assert pending_here() == [(xid, names[0])]
            r.aof_written()  # the entry and its delivery survive the kill -9
            r.restart()      # kill -9 and start on the same port, from the AOF
            money.c = r.client()
            assert pending_here() == [(xid, names[0])], "the AOF lost the injected entry"
            t0 = time.monotonic()
            # The deadline is the check: left to the idle claim, the entry (delivered just
            # before the restart) would wait until 30 s after its delivery.
            tpenv.wait_until(lambda: money.pending() == 0 and pg.psql(
                "SELECT count(*) FROM grants WHERE id = 'lost-ack:1'") == [["1"]],
                timeout=20, what="own pending entry rewritten and acknowledged (re-read at once)")
            took = time.monotonic() - t0
            print(f"    own pending entry rewritten {took:.1f}s after the Redis restart")
            pgwlib.wait_drained(money, pg, 50)
            check_consistent(money, pg, 5, 50, stakes, extra_grants=1)


BATCH_LINE = re.compile(r'^ts=\S+T(\d+):(\d+):([\d.]+)Z .*mod=pgw msg="batch" entries=(\d+) ', re.M)


def log_time(ts):
    """A log line's ts (UTC, without its Z) as time.time() would have read it."""
    return datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc).timestamp()


def batch_lines(log):
    """(seconds of the day, entries) of every batch the writers logged (LOG_LEVEL debug)."""
    return [(int(h) * 3600 + int(m) * 60 + float(sec), int(n))
            for h, m, sec, n in BATCH_LINE.findall(log)]


HELD_LINE = re.compile(r'^ts=(\S+)Z .*mod=pgw msg="read held by write_gap" wait_ms=(\d+)', re.M)


def test_write_gap_holds_a_caught_up_writer_never_a_backlog():
    """postgres.write_gap at its 1 s maximum, one writer. A backlog is read full read after full
    read, each at once: no hold between them (the writer logs each hold, LOG_LEVEL debug); once
    the writer has caught up, it holds, and entries that arrive within the gap after its last
    read share one transaction instead of one each; every entry is written. Checked on the
    log's order and the writer's own hold, not on how long the reads took."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        s = server(r, pg, workers=1, env={"TICKPOOL_POSTGRES_WRITE_GAP": "1s",
                                          "TICKPOOL_LOG_LEVEL": "debug"})
        pgwlib.migrate(s, pg)
        rid, nusers, queued = 900001, 20, 2500
        money.open_round(rid)
        for u in range(1, nusers + 1):
            money.grant(u, 100000)
        for i in range(queued):  # one entry each: reads of 16, then 500 (rows per entry 1)
            money.bet(1 + i % nusers, rid, i % pgwlib.NBANDS, 100, f"gap-{i}")
        with s:  # queued before the writer runs
            pgwlib.wait_drained(money, pg, queued, timeout=60)
            # The server's own round events may add batches of their own: look at the full ones.
            log = s.log_text()
            drained = batch_lines(log)
            full = [t for t, n in drained if n >= 500]  # 501: a round event beside them
            assert len(full) == 5, drained  # 2,520 entries: 16, 500 x 5, 4
            print(f"    {queued} entries, the full reads over {full[-1] - drained[0][0]:.2f} s: "
                  f"{drained}")
            # From the first read to the last full one, no read waited for the gap.
            first = BATCH_LINE.search(log).start()
            last_full = [m.start() for m in BATCH_LINE.finditer(log) if int(m.group(4)) >= 500][-1]
            held = [m.group(0) for m in HELD_LINE.finditer(log, first, last_full)]
            assert not held, f"full reads were held by the gap: {held}"
            # Caught up: a batch that did not fill its read holds the next read for the gap;
            # three entries added while it holds are read together when it ends (Postgres's
            # xmin: the transaction that wrote a row). Should this process be too slow to add
            # them within the hold (a loaded machine), the attempt proves nothing: again.
            holds = 0
            for attempt in range(5):
                seen = len(log)
                money.bet(1, rid, 0, 100, f"lone-{attempt}")
                try:
                    hold = tpenv.wait_until(lambda: HELD_LINE.search(s.log_text(), seen),
                                            timeout=10, interval=0.02,
                                            what="the writer holding after a batch not full")
                    holds += 1
                    hold_end = log_time(hold.group(1)) + int(hold.group(2)) / 1000
                except AssertionError:  # its batch outlasted the gap: nothing left to hold
                    hold_end = 0
                for i in range(3):
                    money.bet(2 + i, rid, 1, 100, f"joined-{attempt}-{i}")
                in_time = time.time() < hold_end
                pgwlib.wait_drained(money, pg, queued + 4 * (attempt + 1))
                log = s.log_text()
                if in_time:
                    break
            assert holds > 0, "a caught-up writer never held its next read"
            assert in_time, "the three entries never went in within a hold"
            assert pg.psql("SELECT count(DISTINCT xmin::text) FROM bets WHERE idempotency_key "
                           f"LIKE 'joined-{attempt}-%'") == [["1"]]
            assert money.pending() == 0


def test_settlement_marks_each_bet_once_on_its_page():
    """Each bet's status is written once, on its own page. The receipt marks the losers 'lost'
    and leaves the winning band's bets to their payouts, which may come later (another stream):
    a winner marked 'lost' first was a second UPDATE and a wrong status meanwhile. A round that
    refunds everyone marks none 'lost'. The UPDATEs are HOT (migration 0007's fillfactor): with
    the default fillfactor 100 the round's pages were full and every settled bet moved."""
    with drained_round_900001(400) as (money, pg, stakes):
        c = money.c
        pages = "SELECT id, (ctid::text::point)[0]::int FROM bets ORDER BY id"
        before = pg.psql(pages)
        assert int(pgwlib.pg_scalar(pg, "SELECT count(DISTINCT (ctid::text::point)[0]) "
                                        "FROM bets")) >= 4, "the bets fill several pages"
        # The receipt first (band 0 won; each winner is paid its stake back), its payouts
        # after it.
        winners = pg.psql("SELECT id, user_id, stake FROM bets WHERE band = 0 ORDER BY id")
        won = sum(int(w[2]) for w in winners)
        c.xadd("tp:{g}:outbox", {"type": "round_settled", "round_id": "900001",
                                 "total": str(stakes), "winning_stake": str(won),
                                 "rake": str(stakes - won), "breakage": "0",
                                 "payouts": str(won), "refunds": "0", "winning_band": "0",
                                 "refund_all": "0"})
        tpenv.wait_until(lambda: pg.psql("SELECT count(*) FROM bets WHERE status = 'lost'") ==
                         [[str(400 - len(winners))]], what="the losers marked")
        assert pg.psql("SELECT DISTINCT status FROM bets WHERE band = 0") == [["pending"]]
        c.xadd("tp:{b0}:outbox", {"type": "credits", "kind": "payout", "round_id": "900001",
                                  "ts": "4", "credits": "\n".join(
                                      f"{b},{u},{st},1" for b, u, st in winners)})
        tpenv.wait_until(lambda: pg.psql("SELECT count(*) FROM bets WHERE status = 'won' AND "
                                         "payout = stake") == [[str(len(winners))]],
                         what="the winners paid")
        assert pg.psql(pages) == before, "a settled bet moved to another page (not HOT)"
        # Nobody on the winning band: everyone refunded, nobody 'lost' before the refunds.
        c.xadd("tp:{g}:outbox", {"type": "round_opened", "round_id": "900002", "opens_at": "1",
                                 "locks_at": "2", "closes_at": "3", "seed_hash": "ab" * 32})
        total = money.workload(nusers=4, nbets=4, rid=900002, start=21)
        pgwlib.wait_drained(money, pg, 404)
        c.xadd("tp:{g}:outbox", {"type": "round_settled", "round_id": "900002",
                                 "total": str(total), "winning_stake": "0", "rake": "0",
                                 "breakage": "0", "payouts": "0", "refunds": str(total),
                                 "winning_band": str(pgwlib.NBANDS - 1), "refund_all": "1"})
        tpenv.wait_until(lambda: pg.psql("SELECT count(*) FROM rounds WHERE id = 900002 AND "
                                         "state = 'settled'") == [["1"]], what="the receipt")
        assert pg.psql("SELECT DISTINCT status FROM bets WHERE round_id = 900002") == [
            ["pending"]]


def test_a_credit_is_its_payouts_row_alone():
    """A winning or refunded bet writes one row, its payouts row, and no ledger row (migration
    0010; before it, two ledger rows and their index entries per credit). The view
    payout_credits gives each credit's ledger entry as the writer wrote it, '<payout|refund>:
    <bet_id>' {round -amount, user +amount}, so account_balances and ledger_unbalanced answer
    as before: per player, grants - stakes + credits; the settled round's account is empty."""
    with drained_round_900001(200) as (money, pg, stakes):
        c = money.c
        # Band 0 won: a page of credits (settle_page.lua) and one single `payout` event; each
        # winner is paid twice its stake, the rest is rake.
        winners = [tuple(map(int, w)) for w in pg.psql(
            "SELECT id, user_id, stake FROM bets WHERE band = 0 ORDER BY id")]
        won = sum(2 * w[2] for w in winners)
        c.xadd("tp:{g}:outbox", {"type": "round_settled", "round_id": "900001",
                                 "total": str(stakes), "winning_stake": str(won // 2),
                                 "rake": str(stakes - won), "breakage": "0",
                                 "payouts": str(won), "refunds": "0", "winning_band": "0",
                                 "refund_all": "0"})
        c.xadd("tp:{b0}:outbox", {"type": "credits", "kind": "payout", "round_id": "900001",
                                  "ts": "4", "credits": "\n".join(
                                      f"{b},{u},{2 * st},1" for b, u, st in winners[1:])})
        b, u, st = winners[0]
        c.xadd("tp:{b1}:outbox", {"type": "payout", "bet_id": str(b), "user_id": str(u),
                                  "round_id": "900001", "amount": str(2 * st), "ts": "4"})
        # A refunded round: every bet a `refund`.
        c.xadd("tp:{g}:outbox", {"type": "round_opened", "round_id": "900002", "opens_at": "1",
                                 "locks_at": "2", "closes_at": "3", "seed_hash": "ab" * 32})
        total = money.workload(nusers=4, nbets=4, rid=900002, start=21)
        pgwlib.wait_drained(money, pg, 204)
        refunded = [tuple(map(int, x)) for x in pg.psql(
            "SELECT id, user_id, stake FROM bets WHERE round_id = 900002 ORDER BY id")]
        c.xadd("tp:{g}:outbox", {"type": "round_settled", "round_id": "900002",
                                 "total": str(total), "winning_stake": "0", "rake": "0",
                                 "breakage": "0", "payouts": "0", "refunds": str(total),
                                 "winning_band": str(pgwlib.NBANDS - 1), "refund_all": "1"})
        c.xadd("tp:{b0}:outbox", {"type": "credits", "kind": "refund", "round_id": "900002",
                                  "ts": "5", "credits": "\n".join(
                                      f"{b},{u},{st},1" for b, u, st in refunded)})
        credits = len(winners) + len(refunded)
        tpenv.wait_until(lambda: pgwlib.pg_scalar(pg, "SELECT count(*) FROM payouts")
                         == str(credits) and money.backlog() == 0, what="the credits")
        # Per winning or refunded bet: one payouts row, no ledger row. Besides the grants,
        # the receipt's rake is the only ledger entry.
        assert pgwlib.pg_scalar(pg, "SELECT count(*) FROM ledger WHERE kind IN "
                                    "('payout', 'refund')") == "0"
        grants = int(pgwlib.pg_scalar(pg, "SELECT count(*) FROM grants"))
        assert int(pgwlib.pg_scalar(pg, "SELECT count(*) FROM ledger")) == 2 * grants + 2
        # The whole ledger has each credit's entry as the writer wrote it before 0010.
        want = sorted([[f"payout:{b}", "round:900001", str(-2 * st), "payout"]
                       for b, u, st in winners] +
                      [[f"payout:{b}", f"user:{u}", str(2 * st), "payout"]
                       for b, u, st in winners] +
                      [[f"refund:{b}", "round:900002", str(-st), "refund"]
                       for b, u, st in refunded] +
                      [[f"refund:{b}", f"user:{u}", str(st), "refund"]
                       for b, u, st in refunded])
        assert sorted(pg.psql("SELECT entry_id, account, amount, kind FROM ledger_full "
                              "WHERE kind IN ('payout', 'refund')")) == want
        assert pgwlib.pg_counts(pg)[5] == 0, "a ledger entry does not sum to zero"
        expect = money.balances()  # Redis: grants - stakes (the credits went to Postgres only)
        for b, u, st in winners:
            expect[u] += 2 * st
        for b, u, st in refunded:
            expect[u] += st
        assert pgwlib.pg_balances(pg) == expect
        assert pg.psql("SELECT account, balance FROM account_balances WHERE account LIKE "
                       "'round:%' ORDER BY 1") == [["round:900001", "0"],
                                                   ["round:900002", "0"]]


YIELD_LINE = re.compile(r'^ts=(\S+)Z .*mod=pgw msg="writer yields to a settlement" '
                        r'streak_rows=(\d+) hold_ms=(\d+)', re.M)


def test_a_large_settlement_holds_the_writer_once():
    """postgres.settle_yield (6 s here: room for the checks inside the hold on a loaded host),
    one writer. A settlement's credits in a streak below TP_PGW_YIELD_ROWS (1,000) are written
    as they come; the batch that takes them past it is held, pending, and the writer reads nothing for the yield: that batch, a bet and the
    settlement's last credits that arrive meanwhile stay in the outbox, and go in once the hold
    ends, without a second hold. Every credit and bet is in Postgres once, each winner 'won'
    with its amount."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        s = server(r, pg, workers=1, env={"TICKPOOL_POSTGRES_SETTLE_YIELD": "6s"})
        with s:
            pgwlib.migrate(s, pg)
            open_round_900001(money.c)
            nbets = 2800
            money.workload(nusers=20, nbets=nbets)
            pgwlib.wait_drained(money, pg, nbets, timeout=60)
            bets = [tuple(map(int, b)) for b in pg.psql(
                "SELECT id, user_id, stake FROM bets ORDER BY id")]

            def credits(part, ts):
                money.c.xadd("tp:{b0}:outbox", {
                    "type": "credits", "kind": "payout", "round_id": "900001", "ts": str(ts),
                    "credits": "\n".join(f"{b},{u},{2 * st},1" for b, u, st in part)})

            def paid():
                return int(pgwlib.pg_scalar(pg, "SELECT count(*) FROM payouts"))
            credits(bets[:500], 4)  # below the line: written, no hold
            tpenv.wait_until(lambda: paid() == 500, what="the first page of credits")
            credits(bets[500:2500], 5)  # past it (alone, should the streak have ended): the hold
            m = tpenv.wait_until(lambda: YIELD_LINE.search(s.log_text()), timeout=20,
                                 what="the writer yielding to the settlement")
            assert m.group(2) in ("2000", "2500") and m.group(3) == "6000", m.group(0)
            hold_end = log_time(m.group(1)) + 6.0
            assert paid() == 500, "the batch that crossed the line was written before the hold"
            credits(bets[2500:], 6)  # the settlement's last page and a bet arrive in the hold
            money.bet(1, 900001, 0, 100, "in-the-hold")
            # Long enough after the bet for a read to have taken it, were reads not held, and
            # still a second or more before the hold's end on a loaded host.
            time.sleep(max(1.0, hold_end - 3.0 - time.time()))
            assert time.time() < hold_end - 1.0, "this process was too slow to check the hold"
            assert paid() == 500 and pgwlib.pg_counts(pg)[2] == nbets, "read during the hold"
            assert money.backlog() >= 3 and money.pending() >= 1
            # Within 2 s of the hold's end (a held batch left for the next claim phase, 10 s
            # later, would miss it): the held batch, the last credits and the bet.
            tpenv.wait_until(lambda: paid() == nbets and pgwlib.pg_counts(pg)[2] == nbets + 1,
                             timeout=max(0.1, hold_end + 2.0 - time.time()),
                             what="everything written within 2 s of the hold's end")
            assert time.time() >= hold_end - 0.1, "written before the hold ended"
            tpenv.wait_until(lambda: money.backlog() == 0, what="the outbox drained")
            assert len(YIELD_LINE.findall(s.log_text())) == 1, "held twice in one settlement"
            assert pg.psql("SELECT count(*), count(DISTINCT bet_id), sum(amount) FROM payouts "
                           "WHERE kind = 'win'") == [[str(nbets), str(nbets),
                                                      str(sum(2 * st for _, _, st in bets))]]
            assert pg.psql("SELECT count(*) FROM bets b JOIN payouts p ON p.bet_id = b.id "
                           "WHERE b.status = 'won' AND b.payout = p.amount") == [[str(nbets)]]
            tpenv.wait_until(lambda: money.pending() == 0, timeout=10, what="nothing pending")


def test_an_old_settlement_in_a_backlog_is_not_held():
    """A writer draining a backlog (after a restart here; a Postgres outage alike) does not hold
    for credits paid postgres.settle_yield ago or earlier: that settlement is over, and a hold
    would only delay the backlog. The credits are XADDed while no server runs, the server
    starts 2 s later (the yield is 1 s): they are written at once, no hold logged, each once.
    Their rows do not count toward the line either: a small settlement's credits right after
    them (within the streak's 2 s) are written at once too."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        s = server(r, pg, workers=1, env={"TICKPOOL_POSTGRES_SETTLE_YIELD": "1s"})
        nbets = 1500
        s.start()
        try:
            pgwlib.migrate(s, pg)
            open_round_900001(money.c)
            money.workload(nusers=20, nbets=nbets)
            pgwlib.wait_drained(money, pg, nbets, timeout=60)
        finally:
            s.stop()  # not `with`: that removes the server's directory, the restart's too
        bets = [tuple(map(int, b)) for b in pg.psql(
            "SELECT id, user_id, stake FROM bets ORDER BY id")]
        def credits(part, ts):
            money.c.xadd("tp:{b0}:outbox", {
                "type": "credits", "kind": "payout", "round_id": "900001", "ts": str(ts),
                "credits": "\n".join(f"{b},{u},{2 * st},1" for b, u, st in part)})
        old = 1400  # past TP_PGW_YIELD_ROWS
        credits(bets[:500], 4)
        credits(bets[500:old], 5)
        time.sleep(2.0)
        with s:
            tpenv.wait_until(lambda: pgwlib.pg_scalar(pg, "SELECT count(*) FROM payouts")
                             == str(old) and money.backlog() == 0, timeout=30, interval=0.01,
                             what="the old credits written")
            credits(bets[old:], 6)  # a small settlement, now
            tpenv.wait_until(lambda: pgwlib.pg_scalar(pg, "SELECT count(*) FROM payouts")
                             == str(nbets) and money.backlog() == 0, timeout=30,
                             what="the fresh credits written")
            assert "writer yields to a settlement" not in s.log_text(), s.log_text()[-2000:]
            # Read within the streak (2 s) after the backlog's last batch, else this proved
            # nothing: written (its transaction's start) less than 2 s after that batch.
            gap = float(pgwlib.pg_scalar(pg, "SELECT extract(epoch FROM max(created_at) - "
                                             "min(created_at)) FROM payouts"))
            assert gap < 1.9, f"the fresh credits came {gap:.2f} s after the backlog"
            assert pg.psql("SELECT count(*), count(DISTINCT bet_id), sum(amount) FROM payouts "
                           "WHERE kind = 'win'") == [[str(nbets), str(nbets),
                                                      str(sum(2 * st for _, _, st in bets))]]


def test_kill9_in_the_hold_loses_and_doubles_nothing():
    """A real settlement (the leader's pages, 3,000 sure winners) holds the writer (a 6 s
    postgres.settle_yield); in the hold a player's bet is answered 201, then the server is
    killed -9 (the held batch pending, the rest of the settlement's credits and the bet unread)
    and started again. Every credit of the round and the bet are in Postgres exactly once, and
    `tickpool audit` is clean."""
    import tpclient
    winners, losers = 3000, 100
    env = {"TICKPOOL_GAME_BETTING_S": "8", "TICKPOOL_GAME_LIVE_S": "2",
           "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BAND_EDGES_BPS": "-10000,10000",
           "TICKPOOL_LOG_LEVEL": "info", "TICKPOOL_POSTGRES_SETTLE_YIELD": "6s"}
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, workers=1, https=False) as s:
        c = r.client()
        money = pgwlib.Money(r, buckets=1)
        [(uid, tok)] = tpclient.make_users(s, 1, "hold")
        rid = money.sure_win_round(s, list(range(940001, 940101)), winners, losers, "kh")
        m = tpenv.wait_until(lambda: YIELD_LINE.search(s.log_text()), timeout=60,
                             what="the writer yielding to the settlement")
        hold_end = log_time(m.group(1)) + 6.0
        o = tpclient.fresh_open_round(s, min_left_ms=500, timeout=3)
        conn = tpclient.Http(s)
        st, body = tpclient.bet(conn, tok, o["id"], 1, 100, "in-the-hold")
        conn.close()
        assert st == 201, (st, body)
        assert time.time() < hold_end - 0.5, "the bet was answered after the hold"
        s.stop(sig=signal.SIGKILL)
        s.start()
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") == "settled",
                         timeout=60, what=f"round {rid} settled")
        paid = tpclient.round_paid(c, rid, 1)
        assert len(paid) == winners
        tpenv.wait_until(lambda: pgwlib.pg_scalar(
            pg, f"SELECT count(*) FROM payouts WHERE round_id = {rid}") == str(winners) and
            pgwlib.pg_scalar(pg, "SELECT count(*) FROM bets WHERE idempotency_key = "
                                 "'in-the-hold'") == "1", timeout=60,
            what="the round's credits and the bet in Postgres")
        assert pg.psql(f"SELECT count(*), count(DISTINCT bet_id), sum(amount) FROM payouts "
                       f"WHERE round_id = {rid}") == [[str(winners), str(winners),
                                                       str(sum(paid.values()))]]
        assert {int(b): int(a) for b, a in pg.psql(
            f"SELECT bet_id, amount FROM payouts WHERE round_id = {rid}")} == paid
        assert pg.psql(f"SELECT count(*), count(DISTINCT id) FROM bets WHERE round_id = {rid}"
                       ) == [[str(winners + losers), str(winners + losers)]]
        assert pg.psql("SELECT id, user_id, round_id, band, stake FROM bets WHERE "
                       "idempotency_key = 'in-the-hold'") == [
            [str(body["bet_id"]), str(uid), str(o["id"]), "1", "100"]]
        code, out = tpclient.audit(s, "30")
        assert code == 0, out
        log = s.log_text()
        for bad in ("assertion failed", "AddressSanitizer", "runtime error:"):
            assert bad not in log, bad


def test_bets_of_an_open_round_never_read_the_payouts_whole():
    """The late-status UPDATE after every bets batch first looks for the batch's rounds that
    have a payout. It probed payouts per round (`round_id = r`); where `payouts` holds one
    settled round (a young database, settle-100k), its statistics say any round has most
    payouts, and the prepared statement's plan (made without the round's value) probed by a
    sequential scan: each bets batch of an open round read every payouts row, over half of
    Postgres's CPU in settle-100k's settlement window. The probe is a range now (pgw_batch.c),
    which the index on round_id answers. The payouts are written straight into Postgres: only
    what the planner sees of the table matters here. Not pgwlib.wait_drained: its ledger sums
    read payouts whole (a view), which the counts would show."""
    bets_of = "SELECT count(*) FROM bets WHERE round_id = {}"
    # Rows read by sequential scans of payouts (a scan from before the INSERT below, published
    # late, read none), index scans of it, bets inserted.
    stats = ("SELECT p.seq_tup_read, p.idx_scan, b.n_tup_ins FROM pg_stat_user_tables p, "
             "pg_stat_user_tables b WHERE p.relname = 'payouts' AND b.relname = 'bets'")
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        c = money.c
        with server(r, pg, workers=2) as s:
            pgwlib.migrate(s, pg)
            open_round_900001(c)
            money.workload(nusers=20, nbets=40)
            tpenv.wait_until(lambda: money.backlog() == 0 and pgwlib.pg_scalar(
                pg, bets_of.format(900001)) == "40", what="round 900001's bets written")
            pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) "
                    "SELECT 'payout:s' || g, 's' || g, 1, 900001, 1, 'win' "
                    "FROM generate_series(1, 20000) g")
            pg.psql("ANALYZE payouts")
            read0, idx0, _ = map(int, pg.psql(stats)[0])
            c.xadd("tp:{g}:outbox", {"type": "round_opened", "round_id": "900002",
                                     "opens_at": "1", "locks_at": "2", "closes_at": "3",
                                     "seed_hash": "ab" * 32})
            money.workload(nusers=4, nbets=40, rid=900002, start=21)
            tpenv.wait_until(lambda: money.backlog() == 0 and pgwlib.pg_scalar(
                pg, bets_of.format(900002)) == "40", what="the open round's bets written")
            # A backend publishes its counts with its bets' (the payouts probes of a batch
            # with its bets: all 80 counted), at most 1 s after a transaction, or 10 s after it
            # when it goes idle within that second (Postgres 15's PGSTAT_IDLE_INTERVAL).
            tpenv.wait_until(lambda: int(pg.psql(stats)[0][2]) >= 80, timeout=30,
                             what="the writers' counts published")
            read1, idx1, _ = map(int, pg.psql(stats)[0])
            assert read1 == read0, f"bets batches of an open round read {read1 - read0} payouts"
            assert idx1 > idx0, "the batches' payouts probes went through no index"
            assert pg.psql("SELECT DISTINCT status FROM bets WHERE round_id = 900002") == [
                ["pending"]]


def test_entries_wait_for_the_schema():
    """A writer whose Postgres lacks the schema (started before `tickpool migrate`) refuses no
    entry: a missing table is the database's state, not the entry's (42P01, not a data error),
    so the entries wait in the outbox and are written once the schema exists."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        c = money.c
        with server(r, pg, workers=1) as s:
            open_round_900001(c)
            money.open_round(900001)
            money.grant(1, 1000)
            money.bet(1, 900001, 2, 100, "early-1")
            tpenv.wait_until(lambda: "Postgres refused a batch" in s.log_text(),
                             what="a write refused for the missing schema")
            time.sleep(1)
            assert "outbox entry refused" not in s.log_text(), s.log_text()[-3000:]
            assert not any(c.exists(k + ":rejected") for k in
                           ["tp:{g}:outbox", "tp:{b0}:outbox", "tp:{b1}:outbox"])
            pgwlib.migrate(s, pg)
            pgwlib.wait_drained(money, pg, 1)
            assert pg.psql("SELECT count(*) FROM grants") == [["1"]]
            assert pg.psql("SELECT count(*) FROM rounds WHERE id = 900001") == [["1"]]


if __name__ == "__main__":
    tpenv.main()
