"""The Postgres writer's bets and payouts INSERTs tried plain, then redone skipping rows already
there (src/store/pgw_write.c, tp_pgw_write; pgw_batch.c, bets_insert_strict, payouts_strict),
and skipping from the start in a re-read of pending entries (pgw_outbox.c, on_read), against a
real Redis, Postgres and tickpool server.

A batch's first try inserts its bets and payouts rows without ON CONFLICT: one row Postgres
already holds, by id (a replay) or by another unique key (a bet's (user, key, round), a credit's
(bet, kind)), fails that whole transaction. The writer must then write the same batch again
skipping exactly those rows, in one transaction, so the outcome is what the skipping INSERTs
alone give: no entry refused or parked, no other row of the batch lost, none written twice.
"""

import contextlib

import pgwlib
import tpenv

ENV = {"TICKPOOL_GAME_BUCKETS": "1", "TICKPOOL_LOG_LEVEL": "info"}
REDONE = "a batch met rows already in Postgres"


def bets_entry(ts, *lines):
    """A `bets` outbox event of round 900001 (bet_batch.lua's): lines (bet, user, band, stake,
    balance, key)."""
    return {"type": "bets", "round_id": "900001", "ts": str(ts),
            "bets": "\n".join("%d,%d,%d,%d,%d,%s" % x for x in lines)}


@contextlib.contextmanager
def held_bet_500(key):
    """Redis, a migrated Postgres already holding bet 500 (user 1, round 900001, `key`) and a
    server of one writer, not started (entries queued before it runs are one batch): yields
    (money, pg, server)."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=1)
        s = tpenv.Server(redis=r, pg=pg, env=ENV, migrate=False, workers=1)
        pgwlib.migrate(s, pg)
        pg.psql("INSERT INTO bets (id, round_id, user_id, band, stake, idempotency_key, "
                f"placed_at, balance_after) VALUES ('500', 900001, 1, 0, 100, '{key}', 4000, 900)")
        yield money, pg, s


def redone(s):
    """writer_batches_redone_total, summed over the workers' lines."""
    return sum(int(line.split()[1]) for line in s.http("GET", "/metrics")[2].decode().splitlines()
               if line.startswith("tickpool_writer_batches_redone_total "))


def bets_rows(pg):
    return pg.psql("SELECT id, user_id, band, stake, idempotency_key, placed_at FROM bets "
                   "ORDER BY id")


def test_key_held_under_another_id_skips_that_bet_alone():
    entries = [
        # Bet 201's (user, key, round) is already in Postgres as bet 500.
        bets_entry(5000, (201, 1, 1, 200, 700, "dup-key"), (202, 2, 2, 300, 500, "k2")),
        # Bets 203 and 204: one (user, key, round) under two ids in one batch.
        bets_entry(5001, (203, 3, 0, 100, 900, "k3"), (204, 3, 1, 100, 800, "k3")),
        bets_entry(5002, (205, 4, 0, 100, 900, "k5"))]
    with held_bet_500("dup-key") as (money, pg, s):
        for fields in entries:  # one writer, queued before it runs: one batch
            money.c.xadd("tp:{b0}:outbox", fields)
        with s:
            pgwlib.wait_drained(money, pg, 4)
            tpenv.wait_until(lambda: money.pending() == 0, what="entries acknowledged")
            # What ON CONFLICT DO NOTHING alone writes: bet 201 and the second of 203/204 (by id)
            # skipped, every other bet of the batch written.
            rows = bets_rows(pg)
            assert rows == [["202", "2", "2", "300", "k2", "5000"],
                            ["203", "3", "0", "100", "k3", "5001"],
                            ["205", "4", "0", "100", "k5", "5002"],
                            ["500", "1", "0", "100", "dup-key", "4000"]], rows
            # In one transaction (the redo), not event by event, and nothing refused or parked.
            assert pg.psql("SELECT count(DISTINCT xmin::text) FROM bets WHERE id <> '500'") == [["1"]]
            log = s.log_text()
            assert log.count(REDONE) == 1, log[-3000:]
            assert "retrying event by event" not in log, log[-3000:]
            assert "outbox entry refused" not in log, log[-3000:]
            assert money.c.xlen("tp:{b0}:outbox:rejected") == 0
            tpenv.wait_until(lambda: redone(s) == 1, what="writer_batches_redone_total 1")

            # The same entries again (a replay; the running writer may read them as one batch or
            # more): every bet is there by id, each batch is redone, nothing changes.
            for fields in entries:
                money.c.xadd("tp:{b0}:outbox", fields)
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             what="replayed entries acknowledged")
            assert bets_rows(pg) == rows
            tpenv.wait_until(lambda: redone(s) == s.log_text().count(REDONE) >= 2,
                             what="writer_batches_redone_total 2+, a log line each")
            n = redone(s)

            # A batch of new bets alone is written by the first try: no redo.
            money.c.xadd("tp:{b0}:outbox", bets_entry(5003, (206, 5, 0, 100, 900, "k6")))
            pgwlib.wait_drained(money, pg, 5)
            tpenv.wait_until(lambda: money.pending() == 0, what="new entry acknowledged")
            assert bets_rows(pg)[-2] == ["206", "5", "0", "100", "k6", "5003"]
            log = s.log_text()
            assert log.count(REDONE) == n, log[-3000:]
            assert "outbox entry refused" not in log and "retrying event by event" not in log
            assert redone(s) == n


def test_claimed_pending_entries_skip_held_bets_without_a_redo():
    """A re-read of pending entries (here a dead writer's, claimed at once) is a replay by
    construction and goes in with the skipping INSERT from the start (src/store/pgw_outbox.c,
    on_read): the bet Postgres holds is skipped, the new one written, and no strict first try
    is redone, so writer_batches_redone_total stays 0 (it counts the unexpected only)."""
    with held_bet_500("held") as (money, pg, s):
        c = money.c
        key = "tp:{b0}:outbox"
        c.xgroup_create(key, "pgw", id="0", mkstream=True)
        # The dead writer committed bet 500's entry and died before its XACK, having read the
        # next entry too; both stay pending under its name.
        c.xadd(key, bets_entry(5000, (500, 1, 0, 100, 900, "held")))
        c.xadd(key, bets_entry(5001, (501, 3, 1, 200, 800, "new")))
        c.xreadgroup("pgw", pgwlib.dead_local_consumer(), {key: ">"})
        assert money.pending() == 2
        with s:
            pgwlib.wait_drained(money, pg, 2)
            tpenv.wait_until(lambda: money.pending() == 0, what="claimed entries acknowledged")
            assert bets_rows(pg) == [["500", "1", "0", "100", "held", "4000"],
                                     ["501", "3", "1", "200", "new", "5001"]]
            log = s.log_text()
            assert "claimed pending outbox entries" in log, log[-3000:]
            assert REDONE not in log, log[-3000:]
            assert "retrying event by event" not in log, log[-3000:]
            assert "tickpool_writer_batches_redone_total 0" in \
                s.http("GET", "/metrics")[2].decode()
            assert redone(s) == 0


def credits_entry(ts, *lines):
    """A `credits` outbox event of round 900001 (settle_page.lua's): lines (bet, user, amount,
    balance)."""
    return {"type": "credits", "kind": "payout", "round_id": "900001", "ts": str(ts),
            "credits": "\n".join("%d,%d,%d,%d" % x for x in lines)}


def test_credit_held_already_is_skipped_alone():
    """A credit's payouts row is first tried as a plain INSERT too (pgw_batch.c, payouts_strict):
    a fresh batch whose credit Postgres already holds, or with one credit twice, fails whole and
    is written again skipping exactly those rows, in one transaction, each bet's status written
    once with its credit; nothing refused or parked. A batch of new credits alone is written by
    its first try."""
    with held_bet_500("k500") as (money, pg, s):
        pg.psql("INSERT INTO bets (id, round_id, user_id, band, stake, idempotency_key, placed_at) "
                "SELECT g::text, 900001, 2, 1, 100, 'k' || g, 4000 FROM generate_series(501, 503) g")
        # Bet 500 was credited already (its payouts row and status, 300 paid).
        pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) VALUES "
                "('payout:500', '500', 1, 900001, 300, 'win')")
        pg.psql("UPDATE bets SET status = 'won', payout = 300 WHERE id = '500'")
        # One batch (queued before the writer runs): bet 500's credit again, 501 twice.
        money.c.xadd("tp:{b0}:outbox", credits_entry(6000, (500, 1, 300, 1200), (501, 2, 250, 900)))
        money.c.xadd("tp:{b0}:outbox", credits_entry(6001, (502, 2, 260, 1160), (501, 2, 250, 900)))
        with s:
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             timeout=60, what="outbox drained")
            assert pg.psql("SELECT id, bet_id, amount FROM payouts ORDER BY id") == [
                ["payout:500", "500", "300"], ["payout:501", "501", "250"],
                ["payout:502", "502", "260"]], s.log_text()[-3000:]
            assert pg.psql("SELECT id, status, payout FROM bets ORDER BY id") == [
                ["500", "won", "300"], ["501", "won", "250"], ["502", "won", "260"],
                ["503", "pending", "0"]]
            # In one transaction (the redo), not event by event.
            assert pg.psql("SELECT count(DISTINCT xmin::text) FROM payouts "
                           "WHERE id <> 'payout:500'") == [["1"]]
            log = s.log_text()
            assert log.count(REDONE) == 1, log[-3000:]
            assert "payouts" in log[log.index(REDONE):].splitlines()[0], log[-3000:]
            assert "retrying event by event" not in log, log[-3000:]
            assert "outbox entry refused" not in log, log[-3000:]
            assert money.c.xlen("tp:{b0}:outbox:rejected") == 0
            tpenv.wait_until(lambda: redone(s) == 1, what="writer_batches_redone_total 1")
            # New credits alone: the first try writes them.
            money.c.xadd("tp:{b0}:outbox", credits_entry(6002, (503, 2, 270, 1430)))
            tpenv.wait_until(lambda: pg.psql("SELECT status, payout FROM bets WHERE id = '503'")
                             == [["won", "270"]], what="bet 503 credited")
            tpenv.wait_until(lambda: money.pending() == 0, what="new entry acknowledged")
            assert s.log_text().count(REDONE) == 1
            assert redone(s) == 1


def test_held_bet_beside_a_refused_event_is_skipped_event_by_event():
    """A batch refused for another event's data (a username the CHECK forbids; users go in before
    bets, so no redo) is written event by event; its bets entry carries a bet Postgres already
    holds and a new one: the event-by-event INSERT skips the held bet, so the new one is written
    and only the user event is parked (a strict INSERT there would park the whole bets entry).
    The reviewer's probe, session 23."""
    with held_bet_500("held") as (money, pg, s):
        c = money.c
        c.xadd("tp:{g}:outbox", {"type": "user", "user_id": "2", "username": "x.y",
                                 "pw_hash": "h", "created_at": "1000"})
        c.xadd("tp:{b0}:outbox", bets_entry(5000, (500, 1, 0, 100, 900, "held"),
                                            (501, 3, 1, 200, 800, "new")))
        with s:
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             timeout=60, what="outbox drained")
            assert pg.psql("SELECT id, idempotency_key FROM bets ORDER BY id") == [
                ["500", "held"], ["501", "new"]], s.log_text()[-3000:]
            assert c.xrange("tp:{b0}:outbox:rejected") == []
            assert len(c.xrange("tp:{g}:outbox:rejected")) == 1
            assert "retrying event by event" in s.log_text()


if __name__ == "__main__":
    tpenv.main()
