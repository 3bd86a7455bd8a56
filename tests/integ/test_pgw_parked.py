"""Outbox entries the Postgres writer refuses, parked in <stream>:rejected for an operator
(src/store/pgw_outbox.c, scripts/lua/park.lua; docs/operations.md §5, "Rejected outbox entries"),
against a real Redis, Postgres and tickpool server: kept whole with their source and error,
parked once whatever crashes (the copy and the XACK are one script), counted in
tickpool_writer_entries_parked, and removed by the operator's replay. Apart from test_pgw.py so
that neither outgrows the suite's timeout under ASan.
"""

import os
import signal
import time

import pgwlib
import tpenv
from test_pgw import open_round_900001, server


# A `bets` entry the writer refuses before Postgres: band 40000 is beyond a smallint.
BAD_BETS = {"type": "bets", "round_id": "900001", "ts": "5000",
            "bets": "777001,1,40000,250,650,bad-1"}


def one_writer(r, pg):
    """Money on two buckets, Postgres migrated and a server of one worker (not started)."""
    money = pgwlib.Money(r, buckets=2)
    s = server(r, pg, workers=1)
    pgwlib.migrate(s, pg)
    return money, s


def test_hostile_entries_parked_for_an_operator():
    """A hand-made entry the writer refuses (a band beyond smallint: every line of its `bets`
    entry) or Postgres refuses (a username its CHECK forbids) is kept whole, with its source and
    error, in <stream>:rejected, counted and logged; the rest of the batch is written."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money, s = one_writer(r, pg)
        c = money.c
        open_round_900001(c)
        money.open_round(900001)
        money.grant(1, 1000)
        money.bet(1, 900001, 2, 100, "good-1")
        # Queued before the writer runs, so all of them are read as one batch.
        hostile = {"type": "bets", "round_id": "900001", "ts": "5000",
                   "bets": "777001,1,40000,250,650,bad-1\n777002,1,2,50,600,bad-2"}
        hid = c.xadd("tp:{b1}:outbox", hostile)
        uid = c.xadd("tp:{g}:outbox", {"type": "user", "user_id": "2", "username": "x.y",
                                       "pw_hash": "h", "created_at": "1000"})
        money.grant(3, 7, grant_id="after:3")
        with s:
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             what="outbox drained")
            assert pg.psql("SELECT idempotency_key FROM bets") == [["good-1"]]
            assert pg.psql("SELECT count(*) FROM grants") == [["2"]]
            parked = c.xrange("tp:{b1}:outbox:rejected")
            assert len(parked) == 1, parked
            fields = parked[0][1]
            assert {k: fields[k] for k in hostile} == hostile, fields
            assert fields["src_stream"] == "tp:{b1}:outbox" and fields["src_id"] == hid, fields
            assert fields["error"] == "malformed or unknown event", fields
            parked = c.xrange("tp:{g}:outbox:rejected")
            assert len(parked) == 1 and parked[0][1]["src_id"] == uid, parked
            assert parked[0][1]["username"] == "x.y" and "check" in parked[0][1]["error"].lower()
            log = s.log_text()
            assert log.count("outbox entry refused") == 2, log[-3000:]
            assert "bets=777001,1,40000" in log
            tpenv.wait_until(lambda: b"\ntickpool_writer_events_refused_total 2\n" in
                             s.http("GET", "/metrics")[2], what="writer_events_refused_total 2")
            tpenv.wait_until(lambda: b"\ntickpool_writer_entries_parked 2\n" in
                             s.http("GET", "/metrics")[2], what="writer_entries_parked 2")
            a = s.run_cli("audit")
            assert a.returncode == 1 and "2 refused entries parked" in a.stdout, a.stdout
            # The operator's replay (docs/operations.md): mend, XADD back, audit, XDEL.
            for key in ("tp:{b1}:outbox", "tp:{g}:outbox"):
                for pid, f in c.xrange(key + ":rejected"):
                    f = {k: v for k, v in f.items() if k not in ("src_stream", "src_id", "error")}
                    if f["type"] == "bets":
                        f["bets"] = f["bets"].replace(",40000,", ",3,")
                    else:
                        f["username"] = "x_y"
                    c.xadd(key, f)
                    c.xdel(key + ":rejected", pid)
            tpenv.wait_until(lambda: pg.psql("SELECT count(*) FROM bets") == [["3"]] and
                             pg.psql("SELECT count(*) FROM users") == [["1"]], what="replayed")
            # Replayed and deleted: the gauge and the audit's outbox line clear.
            tpenv.wait_until(lambda: b"\ntickpool_writer_entries_parked 0\n" in
                             s.http("GET", "/metrics")[2], what="writer_entries_parked 0")
            a = s.run_cli("audit")
            assert "ok   outbox: 0 refused entries parked" in a.stdout, a.stdout


def test_entry_parked_before_a_crash_is_not_parked_twice():
    """A writer that died between parking a refused entry and acknowledging it (two commands
    before park.lua) left the copy in <stream>:rejected and the entry pending under its dead
    name. The next writer claims the entry, refuses it again and finds the copy: one parked
    copy (same src_id), the entry acknowledged, the rest written."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money, s = one_writer(r, pg)
        c = money.c
        key = "tp:{b1}:outbox"
        c.xgroup_create(key, "pgw", id="0", mkstream=True)
        hostile = BAD_BETS
        hid = c.xadd(key, hostile)
        # The dead writer read it, parked it, and was killed before its XACK.
        c.xreadgroup("pgw", pgwlib.dead_local_consumer(), {key: ">"})
        c.xadd(key + ":rejected", dict(hostile, src_stream=key, src_id=hid,
                                       error="malformed or unknown event"))
        money.grant(3, 7, grant_id="after:3")
        with s:
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0,
                             what="outbox drained")
            assert pg.psql("SELECT count(*) FROM grants") == [["1"]]
            parked = c.xrange(key + ":rejected")
            assert len(parked) == 1 and parked[0][1]["src_id"] == hid, parked
            log = s.log_text()
            assert "refused entry not parked again" in log and "outcome=had_copy" in log, \
                log[-3000:]
            tpenv.wait_until(lambda: b"\ntickpool_writer_entries_parked 1\n" in
                             s.http("GET", "/metrics")[2], what="writer_entries_parked 1")


def test_kill9_while_parking_parks_each_entry_once():
    """Two writers park thousands of refused entries (between good ones) and are killed -9
    four times, each as soon as a copy is parked with a batch in flight: every refused entry
    ends parked exactly once (by src_id), nothing stays pending, and every good entry is in
    Postgres once. The two-command park of before park.lua doubled a batch in 2 of 3 runs."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        s = server(r, pg, workers=2)
        pgwlib.migrate(s, pg)
        c = money.c
        hostile, grants = {}, 0
        pipe = c.pipeline()
        for i in range(3000):
            if i % 10 == 0:
                money.grant(1000 + i, 5, grant_id=f"good:{1000 + i}")
                grants += 1
            key = "tp:{b%d}:outbox" % (i % 2)
            pipe.xadd(key, {"type": "bets", "round_id": "900001", "ts": "5000",
                            "bets": f"{800000 + i},1,40000,250,650,bad-{i}"})
        for i, hid in enumerate(pipe.execute()):
            hostile.setdefault("tp:{b%d}:outbox" % (i % 2), set()).add(hid)

        def parked():
            return sum(c.xlen(k + ":rejected") for k in hostile)
        kills = []
        for kill in range(4):
            want = parked() + 1  # some progress in this run, then the first batch in flight
            s.start(wait=False)  # the writers park as soon as they run
            try:
                # Mid-batch: entries read and not all acknowledged yet.
                tpenv.wait_until(lambda: parked() >= want and money.pending() > 0 or
                                 money.backlog() == 0, timeout=30, interval=0.002,
                                 what=f"{want} entries parked, a batch in flight")
                os.killpg(s.proc.pid, signal.SIGKILL)
                s.proc.wait()
            finally:
                s.stop()
            kills.append((parked(), money.pending()))
        print(f"    killed at (parked, pending) {kills}")
        # The kills landed mid-way (else they proved nothing): entries left to park, and one
        # at least with a batch read and not all acknowledged (its consumer's pending entries).
        total = sum(len(ids) for ids in hostile.values())
        assert all(p < total for p, _ in kills) and any(n > 0 for _, n in kills), kills
        with s:
            tpenv.wait_until(lambda: money.backlog() == 0 and money.pending() == 0, timeout=60,
                             what="outbox drained")
            for key, ids in hostile.items():
                copies = [f["src_id"] for _, f in c.xrange(key + ":rejected")]
                doubled = {i for i in copies if copies.count(i) > 1}
                assert not doubled, f"{key}: {len(doubled)} entries parked twice"
                assert set(copies) == ids, (key, len(copies), len(ids))
            assert pg.psql("SELECT count(*), sum(amount) FROM grants") == [
                [str(grants), str(5 * grants)]]
            tpenv.wait_until(lambda: b"\ntickpool_writer_entries_parked 3000\n" in
                             s.http("GET", "/metrics")[2], what="writer_entries_parked 3000")


def test_copy_refused_by_redis_leaves_the_entry_pending():
    """A <stream>:rejected key of another type (an operator's mistake): the copy is refused,
    nothing is acknowledged without it, and the writer goes on with new entries (review 15:56:
    it used to re-read its pending entries, this one among them, and write nothing new),
    trying the park again at its claims (every 10 s), not in a loop on Postgres; once the key
    is fixed the entry is parked once."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money, s = one_writer(r, pg)
        c = money.c
        key = "tp:{b1}:outbox"
        c.hset(key + ":rejected", "oops", "1")
        hid = c.xadd(key, BAD_BETS)
        money.grant(3, 7, grant_id="after:3")
        with s:
            tpenv.wait_until(lambda: "parking a refused entry failed" in s.log_text(),
                             what="the copy refused")
            t0 = time.monotonic()
            money.grant(5, 7, grant_id="later:5")  # same stream, read after the failure
            money.grant(4, 7, grant_id="later:4")
            tpenv.wait_until(lambda: pg.psql("SELECT count(*) FROM grants") == [["3"]],
                             what="new entries written while the park fails")
            time.sleep(3)
            assert c.xpending(key, "pgw")["pending"] == 1 and c.type(key + ":rejected") == "hash"
            tries = s.log_text().count("outbox entry refused")
            print(f"    {tries} tries in {time.monotonic() - t0:.0f} s while the copy was refused")
            assert 1 <= tries <= 3 + (time.monotonic() - t0) / 9, f"{tries} tries: a loop"
            c.delete(key + ":rejected")
            tpenv.wait_until(lambda: money.pending() == 0, timeout=30,
                             what="parked at a claim once the key is fixed")
            parked = c.xrange(key + ":rejected")
            assert len(parked) == 1 and parked[0][1]["src_id"] == hid, parked


def park(c, keys, args):
    with open(os.path.join(os.environ["TP_SRC"], "scripts/lua/park.lua")) as f:
        return c.eval(f.read(), len(keys), *keys, *args)


def test_park_script_parks_once_and_refuses_hostile_calls():
    """park.lua on its own: a copy and the XACK in one step, never a second copy of an entry
    (acknowledged already, or re-delivered with its copy among the newest), and every malformed
    call, a rejected key of another type and a full Redis refused with nothing written."""
    import redis
    with tpenv.Redis() as r:
        c = r.client()
        key, rej = "tp:{b0}:outbox", "tp:{b0}:outbox:rejected"
        c.xgroup_create(key, "pgw", id="0", mkstream=True)
        ids = [c.xadd(key, {"type": "grant", "n": str(i)}) for i in range(4)]
        c.xreadgroup("pgw", "w:1", {key: ">"})

        def call(i, look_back="500", fields=("type", "grant"), keys=(key, rej), error="bad"):
            return park(c, list(keys), ["pgw", ids[i], error, look_back, *fields])

        def state():
            return (c.dump(key), c.dump(rej), c.xpending(key, "pgw")["pending"])

        before = state()
        for keys, args in [
                ([key], ["pgw", ids[0], "bad", "5", "a", "b"]),
                ([key, "tp:{b0}:outbox:other"], ["pgw", ids[0], "bad", "5", "a", "b"]),
                (["tp:{b0}:bal", "tp:{b0}:bal:rejected"], ["pgw", ids[0], "bad", "5", "a", "b"]),
                ([key, rej], ["pgw", ids[0], "bad", "5", "a"]),
                ([key, rej], ["pgw", ids[0], "bad", "5"]),
                ([key, rej], ["pgw", "12", "bad", "5", "a", "b"]),
                ([key, rej], ["pgw", ids[0], "", "5", "a", "b"]),
                ([key, rej], ["pgw", ids[0], "x" * 1025, "5", "a", "b"]),
                ([key, rej], ["pgw", ids[0], "bad", "-1", "a", "b"]),
                ([key, rej], ["pgw", ids[0], "bad", "10001", "a", "b"]),
                ([key, rej], ["", ids[0], "bad", "5", "a", "b"])]:
            try:
                park(c, keys, args)
                raise AssertionError(f"accepted {keys} {args}")
            except redis.ResponseError as e:
                assert "tp_park" in str(e), e
            assert state() == before, (keys, args)
        # No such group: Redis's NOGROUP, nothing written.
        try:
            park(c, [key, rej], ["other", ids[0], "bad", "5", "a", "b"])
            raise AssertionError("a missing group accepted")
        except redis.ResponseError as e:
            assert "NOGROUP" in str(e), e
        assert state() == before
        # The rejected key holds something else: WRONGTYPE, the entry still pending.
        c.hset(rej, "x", "1")
        try:
            call(0)
            raise AssertionError("WRONGTYPE accepted")
        except redis.ResponseError as e:
            assert "WRONGTYPE" in str(e), e
        assert c.xpending(key, "pgw")["pending"] == 4
        c.delete(rej)
        # A full Redis refuses the script before any write.
        c.config_set("maxmemory", "1")
        try:
            call(0)
            raise AssertionError("ran out of memory")
        except redis.ResponseError as e:
            assert "OOM" in str(e), e
        finally:
            c.config_set("maxmemory", "0")
        assert not c.exists(rej) and c.xpending(key, "pgw")["pending"] == 4

        # Parked: the copy (fields, then its source and error) and the XACK together.
        got = call(0, fields=("type", "grant", "n", "0"))
        assert got[0] == "parked", got
        assert c.xrange(rej) == [(got[1], {"type": "grant", "n": "0", "src_stream": key,
                                           "src_id": ids[0], "error": "bad"})]
        assert c.xpending_range(key, "pgw", ids[0], ids[0], 1) == []
        # Again (a lost reply, another writer): not pending, nothing written.
        assert call(0) == ["not_pending"] and c.xlen(rej) == 1

        # Re-delivered (a crash after an older version's XADD): the copy is found, only acked.
        copy = c.xadd(rej, {"type": "grant", "src_stream": key, "src_id": ids[1], "error": "e"})
        # An entry whose own fields name ids[2] as their source: only a copy's tail counts.
        c.xadd(rej, {"src_stream": key, "src_id": ids[2], "error": "e", "type": "grant",
                     "src_stream_": key, "src_id_": ids[3], "error_": "e"})
        c.xreadgroup("pgw", "w:1", {key: "0"})  # its history again: deliveries 2
        assert call(1) == ["had_copy", copy], c.xrange(rej)
        assert c.xlen(rej) == 3
        assert call(2)[0] == "parked" and c.xlen(rej) == 4
        # A first delivery is never searched; a look-back of 0 searches nothing.
        c.xadd(rej, {"type": "grant", "src_stream": key, "src_id": ids[3], "error": "e"})
        assert call(3, look_back="0")[0] == "parked" and c.xlen(rej) == 6
        assert c.xpending(key, "pgw")["pending"] == 0


if __name__ == "__main__":
    tpenv.main()
