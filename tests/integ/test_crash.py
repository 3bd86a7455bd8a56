"""Crash and outage tests of the money path under a steady HTTP bet load (2 workers, real Redis and
Postgres, short rounds that settle during the test).

A few client threads place bets at a steady rate, each with a unique Idempotency-Key. A client
that does not learn whether its bet landed (connection reset, timeout, 503/429, or 409
idempotency_conflict while an earlier attempt with that key is still in flight) retries with the
SAME key and body until it gets a definitive answer, as a real client must be able to.

(a) test_kill9_workers_and_server: kill -9 one worker (random, the master restarts it) three
    times, then the whole server (master + workers) twice and start it again, all under load.
(b) test_postgres_outage_under_load: Postgres stopped for 10 s under load: bets keep being
    accepted, the outbox backlog grows and drains after the restart. (test_pgw.py's outage test
    feeds bet_batch.lua directly from Python with one worker and a fake round; this one goes through
    HTTP, real leader rounds and settlement.)

Afterwards, for both: every round with bets ends settled or cancelled, the outbox drains,
`tickpool audit` passes, the set of bets in Postgres is exactly the set of bets some client got a
201 for (one row per key, same bet_id/user/round/band/stake), a replayed key returns the same
201 body, and each player's Redis balance = grants − stakes + credits (payouts and refunds, as
Postgres recorded them); Postgres's ledger agrees per player.
"""

import http.client
import os
import random
import signal
import subprocess
import threading
import time

import pgwlib
import tpclient
import tpenv

BUCKETS, NBANDS = 2, 5
ENV = {"TICKPOOL_GAME_BETTING_S": "3", "TICKPOOL_GAME_LIVE_S": "3",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BUCKETS": str(BUCKETS),
       "TICKPOOL_GAME_GRACE": "1s", "TICKPOOL_GAME_START_BALANCE": "100000000",
       "TICKPOOL_GAME_MIN_STAKE": "100", "TICKPOOL_GAME_MAX_STAKE": "100000"}
NUSERS, NTHREADS, RATE = 10, 4, 160  # RATE: bets/s over all threads
RETRY = (None, 429, 502, 503, 504)   # None: no answer (connection error or timeout)


class Load:
    """NTHREADS clients betting RATE/s in total into the current open round until stop().

    self.recs: one dict per bet (key, uid, rid, band, stake, status, body, tries, at), status
    the definitive answer (201, or a rejection without effect such as 409 round_not_open)."""

    def __init__(self, s, users, tag):
        self.s, self.users, self.tag = s, users, tag
        self.recs, self.lock = [], threading.Lock()
        self.halt = threading.Event()
        self.rid = None
        self.answers = {}  # every status seen, retries included (for the report)
        self.threads = [threading.Thread(target=self._poll)] + [
            threading.Thread(target=self._client, args=(t,)) for t in range(NTHREADS)]

    def start(self):
        for t in self.threads:
            t.start()
        tpenv.wait_until(lambda: self.rid, what="load: an open round")
        return self

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join()
        self.errors = [r for r in self.recs if r["status"] not in (201, 409)]
        return self

    def _poll(self):
        conn = tpclient.Http(self.s, timeout=2)
        while not self.halt.is_set():
            try:
                st, v = conn.request("GET", "/api/v1/rounds/current")
                if st == 200 and v and v.get("open"):
                    self.rid = v["open"]["id"]
            except (OSError, http.client.HTTPException):
                pass  # server down: keep the last id, the bets' retries cope
            time.sleep(0.2)
        conn.close()

    def _seen(self, st):
        with self.lock:
            self.answers[st] = self.answers.get(st, 0) + 1

    def _client(self, t):
        rng = random.Random(t)
        # No bet before the poller has seen an open round: a bet for round null is a 400
        # invalid_request, which the checks would count as an error of the server's.
        while self.rid is None and not self.halt.is_set():
            time.sleep(0.05)
        conn = tpclient.Http(self.s, timeout=5)
        period = NTHREADS / RATE
        nxt = time.monotonic()
        n = 0
        while not self.halt.is_set():
            nxt = max(nxt + period, time.monotonic() - 1)  # steady rate, no burst after a stall
            time.sleep(max(0.0, nxt - time.monotonic()))
            uid, tok = self.users[(t + n * NTHREADS) % len(self.users)]
            rec = {"key": f"{self.tag}-{t}-{n}", "uid": uid, "rid": self.rid,
                   "band": rng.randrange(NBANDS), "stake": rng.randrange(100, 1000), "tries": 0}
            n += 1
            # Once sent, a bet is retried to a definitive answer even after stop(): its outcome
            # must be known for the checks. The deadline covers a whole-server restart.
            deadline = time.monotonic() + 60
            while True:
                try:
                    st, body = tpclient.bet(conn, tok, rec["rid"], rec["band"], rec["stake"],
                                            rec["key"])
                except (OSError, http.client.HTTPException):
                    st, body = None, None
                self._seen(st)
                code = (body or {}).get("error", {}).get("code") if st != 201 else None
                if st not in RETRY and code != "idempotency_conflict":
                    break
                if time.monotonic() > deadline:
                    break  # left ambiguous: reported by the checks
                rec["tries"] += 1
                time.sleep(0.1)
            rec.update(status=st, body=body, at=time.monotonic())
            with self.lock:
                self.recs.append(rec)
        conn.close()

    def ok(self):
        return [r for r in self.recs if r["status"] == 201]

    def summary(self):
        ok = self.ok()
        return (f"{len(self.recs)} bets, {len(ok)} accepted, "
                f"{sum(1 for r in ok if r['tries'])} accepted after retries, answers "
                f"{dict(sorted(self.answers.items(), key=lambda kv: str(kv[0])))}")


def backlog(c):
    return sum(c.xlen(k) for k in ["tp:{g}:outbox"] +
               ["tp:{b%d}:outbox" % b for b in range(BUCKETS)])


def check_all(s, r, pg, load, timeout=40):
    """The end-of-test checks of the module docstring; returns the audit output."""
    c = r.client()
    ok = load.ok()
    assert not load.errors, [(x["status"], x["body"]) for x in load.errors[:5]]
    # Every 409 is a rejection without effect (round_not_open: the round locked under the bet).
    assert all(x["body"]["error"]["code"] == "round_not_open" for x in load.recs
               if x["status"] == 409), [x["body"] for x in load.recs if x["status"] == 409][:5]
    for x in ok:
        b = x["body"]
        assert (b["round_id"], b["band"], b["stake"]) == (x["rid"], x["band"], x["stake"]), x
    rids = sorted({x["rid"] for x in ok})
    # Rounds settle (or are cancelled and refunded); then the outbox drains into Postgres.
    tpenv.wait_until(lambda: all(c.hget("tp:{g}:round:%d" % rid, "state") in
                                 ("settled", "cancelled") for rid in rids),
                     timeout=timeout, what="every round with bets final")
    ids = ",".join(map(str, rids))
    try:
        tpenv.wait_until(lambda: backlog(c) == 0 and pg.psql(
            f"SELECT count(*) FROM bets WHERE round_id IN ({ids}) AND status = 'pending'"
        ) == [["0"]], timeout=timeout, what="outbox drained, bets resolved in Postgres")
    except AssertionError:
        print("    backlog:", {k: c.xlen(k) for k in ["tp:{g}:outbox"] +
                                ["tp:{b%d}:outbox" % b for b in range(BUCKETS)]},
              "pending bets in Postgres:", pg.psql("SELECT round_id, count(*) FROM bets "
                                                   "WHERE status = 'pending' GROUP BY 1"))
        print("\n".join(x for x in s.log_text().splitlines()
                        if "mod=leader" not in x)[-6000:])  # the writer's story
        raise
    code, out = tpclient.audit(s, "30")
    assert code == 0, out
    # Postgres holds exactly the bets clients got a 201 for. A bet whose 201 was lost (worker
    # killed after the script ran) was retried with its key until the 201 replay came back, so
    # it is recorded too: the retry loop leaves no bet unresolved, and there is no "landed but
    # unknown" case to excuse. One row per (user, key), with the bet_id the client was given.
    rows = pg.psql("SELECT id, user_id, round_id, band, stake, idempotency_key FROM bets")
    got = {(int(u), k): (int(i), int(rd), int(bd), int(st)) for i, u, rd, bd, st, k in rows}
    assert len(got) == len(rows), "a (user, key) has two bets in Postgres"
    want = {(x["uid"], x["key"]): (x["body"]["bet_id"], x["rid"], x["band"], x["stake"])
            for x in ok}
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    assert not extra and not missing, (f"{len(extra)} bets in Postgres without a 201: "
                                       f"{extra[:5]}; {len(missing)} 201s missing: {missing[:5]}")
    diff = [(k, want[k], got[k]) for k in want if want[k] != got[k]]
    assert not diff, diff[:5]
    # Each bet's status and payout in Postgres follow its credit and its round's outcome, even
    # when the bet row was written after them (streams drain in any order after a backlog).
    wrong = pg.psql("SELECT b.id, b.status, b.payout, p.kind, p.amount, r.state FROM bets b "
                    "JOIN rounds r ON r.id = b.round_id LEFT JOIN payouts p ON p.bet_id = b.id "
                    "WHERE b.status <> CASE WHEN p.kind = 'win' THEN 'won' WHEN p.kind = "
                    "'refund' THEN 'refunded' WHEN r.state = 'settled' THEN 'lost' ELSE "
                    "'pending' END OR b.payout <> coalesce(p.amount, 0)")
    assert not wrong, f"{len(wrong)} bets with a wrong status/payout: {wrong[:5]}"
    # Replays after the crashes: the same 201 body (bet_id, balance at the time), no new debit.
    before = tpclient.balances(c, BUCKETS)
    sample = [x for x in ok if x["tries"]] + random.Random(1).sample(ok, min(100, len(ok)))
    conn = tpclient.Http(s)
    tok = {u: t for u, t in load.users}
    for x in sample:
        st, body = tpclient.bet(conn, tok[x["uid"]], x["rid"], x["band"], x["stake"], x["key"])
        assert (st, body) == (201, x["body"]), (x, st, body)
    conn.close()
    assert tpclient.balances(c, BUCKETS) == before, "a replay moved money"
    # Balances: grants − stakes + credits per player, from Redis grants and Postgres rows.
    grants = {}
    for b in range(BUCKETS):
        for v in c.hgetall("tp:{b%d}:grants" % b).values():
            u, amt = v.split(":")
            grants[int(u)] = grants.get(int(u), 0) + int(amt)
    stakes = {}
    for x in ok:
        stakes[x["uid"]] = stakes.get(x["uid"], 0) + x["stake"]
    credits = {int(u): int(v) for u, v in
               pg.psql("SELECT user_id, sum(amount) FROM payouts GROUP BY 1")}
    bal = tpclient.balances(c, BUCKETS)
    for uid, _ in load.users:
        want_bal = grants[uid] - stakes.get(uid, 0) + credits.get(uid, 0)
        assert bal[uid] == want_bal, (uid, bal[uid], want_bal)
    assert pgwlib.pg_balances(pg) == bal, "Postgres ledger balances differ from Redis"
    assert pgwlib.pg_counts(pg)[5] == 0, "an unbalanced ledger entry"
    # A credit is its payouts row alone (migration 0010), one per credited bet.
    assert pg.psql("SELECT count(*) FROM ledger WHERE kind IN ('payout', 'refund')") == [["0"]]
    assert pg.psql("SELECT count(*) = count(DISTINCT bet_id) FROM payouts") == [["t"]]
    log = s.log_text()
    for bad in ("assertion failed", "AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert bad not in log, log[log.find(bad) - 2000:log.find(bad) + 3000]
    fin = [c.hget("tp:{g}:round:%d" % rid, "state") for rid in rids]
    print(f"    {len(rids)} rounds with bets: {fin.count('settled')} settled, "
          f"{fin.count('cancelled')} cancelled; {len(sample)} replays identical")
    return out


def test_kill9_workers_and_server():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, workers=2, https=False) as s:
        tpclient.wait_game(s)
        users = tpclient.make_users(s, NUSERS, "cr")
        load = Load(s, users, "k").start()
        try:
            time.sleep(2)
            for i in range(3):  # one worker at a time; the master restarts it
                pids = tpenv.wait_until(lambda: (lambda p: p if len(p) == 2 else None)(
                    s.worker_pids()), what="two workers")
                victim = random.choice(pids)
                os.kill(victim, signal.SIGKILL)
                tpenv.wait_until(lambda: len(s.worker_pids()) == 2 and victim not in
                                 s.worker_pids(), what="worker restarted")
                print(f"    killed worker {victim}; {load.summary()}")
                time.sleep(3)  # > the master's 2 s crash-loop window
            for i in range(2):  # master and workers at once, then a fresh start, same ports
                os.killpg(s.proc.pid, signal.SIGKILL)
                s.proc.wait()
                s.stop()
                time.sleep(0.5)
                t0 = time.monotonic()
                s.start()
                print(f"    killed the server; up again in {time.monotonic() - t0:.1f}s; "
                      f"{load.summary()}")
                tpclient.wait_game(s, timeout=30)
                time.sleep(3)
        finally:
            load.stop()
        print(f"    load: {load.summary()}")
        assert len(load.ok()) > 500, load.summary()
        assert any(x["tries"] for x in load.ok()), "no bet needed a retry: the kills missed"
        check_all(s, r, pg, load)


def test_postgres_outage_under_load():
    cluster = tpenv.PgCluster().start()
    ctl = tpenv._as_postgres_user() + [f"{tpenv.PG_BIN}/pg_ctl", "-D", cluster.data, "-w"]
    try:
        subprocess.run(["psql", cluster.admin_url, "-qc", "CREATE DATABASE tp_crash"],
                       check=True, capture_output=True)

        class Db:  # tpenv.Postgres's interface over the private cluster (which we stop)
            url = cluster.admin_url.rsplit("/", 1)[0] + "/tp_crash"
            psql = tpenv.Postgres.psql

        pg = Db()
        with tpenv.Redis() as r, \
                tpenv.Server(redis=r, pg=pg, env=ENV, workers=2, https=False) as s:
            c = r.client()
            tpclient.wait_game(s)
            users = tpclient.make_users(s, NUSERS, "po")
            load = Load(s, users, "o").start()
            try:
                time.sleep(3)
                subprocess.run(ctl + ["-m", "immediate", "stop"], check=True,
                               capture_output=True)
                t_down = time.monotonic()
                time.sleep(10)
                t_up = time.monotonic()
                peak = backlog(c)
                subprocess.run(ctl + ["-l", os.path.join(cluster.dir, "log"), "-o",
                                      f"-p {cluster.port} -k {cluster.dir} "
                                      "-c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                               check=True, capture_output=True)
                time.sleep(3)
            finally:
                load.stop()
            during = [x for x in load.ok() if t_down + 0.5 < x["at"] < t_up]
            print(f"    load: {load.summary()}; {len(during)} accepted during the outage, "
                  f"outbox backlog {peak} at its end")
            # Accepted all through the outage (each quarter of it), without storage errors.
            for q in range(4):
                lo, hi = t_down + q * 2.5, t_down + (q + 1) * 2.5
                assert any(lo < x["at"] < hi for x in load.ok()), f"no bet accepted in {lo}..{hi}"
            assert peak >= len(during) // 2, (peak, len(during))  # it really piled up
            t0 = time.monotonic()
            check_all(s, r, pg, load, timeout=60)
            print(f"    drained and checked {time.monotonic() - t0:.1f}s after the load stopped")
    finally:
        cluster.stop()


if __name__ == "__main__":
    tpenv.main()
