"""`tickpool audit` against a real Redis, Postgres and a running tickpool server.

Bets go through the real bet script into the rounds the server's game leader opens, the leader
settles them (payouts, house), the writer drains everything to Postgres, and then the audit must
pass; after tampering with one balance (or one receipt, or the index of unfinished rounds) in
Redis it must fail with a readable diff. Usage and connection errors exit 2.
"""

import re
import time

import pgwlib
import tpenv

ENV = {"TICKPOOL_GAME_BUCKETS": "2", "TICKPOOL_GAME_BETTING_S": "2", "TICKPOOL_GAME_LIVE_S": "2"}


def audit(s, *args):
    r = s.run_cli("audit", *args)
    return r.returncode, r.stdout + r.stderr


def test_audit_passes_then_shows_tampering():
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        money = pgwlib.Money(r, buckets=2)
        s = tpenv.Server(redis=r, pg=pg, env=ENV, migrate=False)
        pgwlib.migrate(s, pg)
        with s:
            users = list(range(1, 11))
            for u in users:
                money.grant(u, 100000)
            c = money.c
            rounds, i = set(), 0
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline:  # bets into several of the leader's rounds
                rid = c.hget("tp:{g}:current", "open")
                if rid is None:
                    time.sleep(0.05)
                    continue
                for _ in range(20):
                    u = users[i % len(users)]
                    res = money.bet(u, rid, i % 5, 100, f"a{i}", now=int(time.time() * 1000),
                                    check=False)
                    i += 1
                    if res[0] == "ok":
                        rounds.add(rid)
                time.sleep(0.2)
            assert len(rounds) >= 2, rounds
            tpenv.wait_until(lambda: all(c.hget("tp:{g}:round:" + rid, "state") in
                                         ("settled", "cancelled") for rid in rounds),
                             timeout=30, what="our rounds settled")
            code, out = audit(s, "--wait", "20")
            print(out)
            assert code == 0, out
            assert "all checks passed" in out
            assert re.search(r"receipts: [1-9]\d* settled/cancelled", out), out
            assert "FAIL" not in out
            # The system of record followed the rounds: receipts, bet outcomes, no skipped event.
            ids = ",".join(sorted(rounds))
            states = pg.psql(f"SELECT DISTINCT state FROM rounds WHERE id IN ({ids})")
            assert {x[0] for x in states} <= {"settled", "cancelled"}, states
            # Settled rounds carry their prices, winning band and revealed seed in Postgres too.
            rows = pg.psql(f"SELECT id, lock_price, close_price, winning_band, seed FROM rounds "
                           f"WHERE id IN ({ids}) AND state = 'settled'")
            for rid, lock, close, band, seed in rows:
                h = c.hgetall("tp:{g}:round:" + rid)
                assert (lock, close, band) == (h["lock_price"], h["close_price"],
                                               h["winning_band"]), (rid, lock, close, band, h)
                assert seed == h.get("seed", ""), (rid, seed, h.get("seed"))
            assert pg.psql(f"SELECT count(*) FROM bets WHERE round_id IN ({ids}) "
                           "AND status = 'pending'") == [["0"]]
            assert pg.psql("SELECT (SELECT coalesce(sum(payout), 0) FROM bets) = "
                           "(SELECT coalesce(sum(amount), 0) FROM payouts)") == [["t"]]
            assert "outbox entry refused" not in s.log_text()

            # A ledger too big to sum within postgres.timeout, the server's bound for its short
            # statements: the audit's scans run under its own --pg-timeout (a soak's 1.8 M bets
            # took its first query past 5 s and the audit exited 2). The padding is balanced,
            # on accounts no check compares.
            pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) SELECT 'pad:' || g, "
                    "v.a, v.n, 'grant' FROM generate_series(1, 150000) g, "
                    "(VALUES ('system', 1), ('round:0', -1)) v(a, n)")
            s.env["TICKPOOL_POSTGRES_TIMEOUT"] = "10ms"
            code, out = audit(s, "--wait", "20")
            assert code == 0 and "all checks passed" in out, out
            code, out = audit(s, "--wait", "20", "--pg-timeout", "0.01")
            assert code == 2 and "statement timeout" in out, out
            for bad in ("0", "x", "-1", "100000"):
                assert audit(s, "--pg-timeout", bad)[0] == 2, bad
            del s.env["TICKPOOL_POSTGRES_TIMEOUT"]

            # One balance off by -100 in Redis: conservation and the Postgres diff show it.
            before = int(c.hget("tp:{b1}:bal", "3"))
            c.hincrby("tp:{b1}:bal", "3", -100)
            code, out = audit(s, "--wait", "20")
            print(out)
            assert code == 1, out
            assert "FAIL redis bucket 1" in out, out
            assert f"user 3: redis {before - 100}, postgres {before}, diff -100" in out, out
            assert "audit: all checks passed" not in out
            c.hincrby("tp:{b1}:bal", "3", 100)
            assert audit(s, "--wait", "20")[0] == 0

            # A credit's two ledger rows as a writer before migration 0010 wrote them, beside
            # its payouts row (an older server left running after 0010): counted twice, so the
            # per-user diff shows it.
            bet, user, rnd, amount, kind = pg.psql(
                "SELECT bet_id, user_id, round_id, amount, kind FROM payouts WHERE amount > 0 "
                "ORDER BY id LIMIT 1")[0]
            lk = "payout" if kind == "win" else "refund"
            pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) VALUES "
                    f"('{lk}:{bet}', 'round:{rnd}', -{amount}, '{lk}'), "
                    f"('{lk}:{bet}', 'user:{user}', {amount}, '{lk}')")
            code, out = audit(s, "--wait", "20")
            assert code == 1, out
            bal = int(c.hget("tp:{b%d}:bal" % (int(user) % 2), user))
            assert (f"user {user}: redis {bal}, postgres {bal + int(amount)}, "
                    f"diff -{amount}") in out, out
            assert "FAIL postgres per-user balances" in out, out
            pg.psql(f"DELETE FROM ledger WHERE entry_id = '{lk}:{bet}'")
            assert audit(s, "--wait", "20")[0] == 0

            # A receipt that does not add up.
            rid = sorted(rounds, key=int)[0]
            key = "tp:{g}:round:" + rid
            c.hincrby(key, "r_breakage", 1)
            code, out = audit(s, "--wait", "20", "--redis-only")
            assert code == 1, out
            assert f"round {rid} receipt:" in out and "diff +1" in out, out
            c.hincrby(key, "r_breakage", -1)

            # The leader's index of unfinished rounds: the open round missing from it (the
            # leader would not see it once 6 newer rounds opened), a settled round listed.
            open_id = c.hget("tp:{g}:current", "open")
            c.zrem("tp:{g}:unfinished", open_id)
            c.zadd("tp:{g}:unfinished", {rid: int(rid)})
            code, out = audit(s, "--redis-only")
            assert code == 1, out
            assert re.search(rf"round {open_id} is (open|live) but not in tp:{{g}}:unfinished",
                             out), out
            assert re.search(rf"round {rid} is in tp:{{g}}:unfinished but (settled|cancelled)",
                             out), out
            assert "FAIL unfinished index" in out, out


def test_audit_of_a_game_without_users_passes():
    """Rounds opened and settled, nobody signed up: the audit has no balances to sort or compare
    and passes (the ASan+UBSan build once stopped it with qsort of a NULL array)."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        s = tpenv.Server(redis=r, pg=pg, env=ENV, migrate=False)
        pgwlib.migrate(s, pg)
        with s:
            c = r.client()
            tpenv.wait_until(lambda: c.hget("tp:{g}:current", "live") is not None, timeout=15,
                             what="a round locked")
            code, out = audit(s, "--wait", "20")
            print(out)
            assert code == 0, out
            assert "all checks passed" in out
            assert "over 0 users" in out, out


def test_audit_usage_backlog_and_unreachable():
    with tpenv.Redis() as r:
        s = tpenv.Server(redis=r, migrate=False, env={"TICKPOOL_GAME_BUCKETS": "2"})
        assert audit(s, "--bogus")[0] == 2
        assert audit(s, "--wait", "-1")[0] == 2
        assert audit(s, "extra")[0] == 2
        code, out = audit(s, "--help")
        assert code == 0 and "Usage" in out
        # An empty deployment conserves trivially; an outbox nobody drains fails after --wait.
        code, out = audit(s, "--redis-only")
        assert code == 0, out
        r.client().xadd("tp:{b1}:outbox", {"type": "grant"})
        code, out = audit(s, "--wait", "0.5")
        assert code == 1 and "not yet written to Postgres" in out, out
        s.env["TICKPOOL_REDIS_URL"] = f"redis://127.0.0.1:{tpenv.free_port()}"
        t0 = time.monotonic()
        code, out = audit(s)
        assert code == 2 and "cannot connect to Redis" in out, out
        assert time.monotonic() - t0 < 15


if __name__ == "__main__":
    tpenv.main()
