"""Shared helpers of test_pgw.py, test_audit.py and test_archive.py: drive money through the
real Lua scripts (scripts/lua/grant.lua, bet_batch.lua) with python-redis, exactly as the C store
calls them, and read back what the Postgres writer wrote; a Postgres the test can stop and start
again.
"""

import os
import re
import socket
import subprocess
import time

import betbatch
import idemfilter
import redis
import tpclient
import tpenv

SRC = tpenv.SRC
NBANDS, MIN_STAKE, MAX_STAKE, IDEM_TTL = 5, 100, 100000, 86400


def migrate(srv, pg):
    """Applies the schema: `tickpool migrate` when implemented, else every migrations/*.sql."""
    r = srv.run_cli("migrate")
    if r.returncode == 0:
        return
    mdir = os.path.join(SRC, "migrations")
    for name in sorted(os.listdir(mdir)):
        if name.endswith(".sql"):
            out = subprocess.run(["psql", pg.url, "-v", "ON_ERROR_STOP=1", "-qX", "-f",
                                  os.path.join(mdir, name)], capture_output=True, text=True)
            if out.returncode != 0:
                raise AssertionError(f"{name}: {out.stderr}")


class Money:
    """grant.lua and bet_batch.lua loaded into one Redis, with keys built like the C store."""

    def __init__(self, r, buckets=1):
        self.c = r.client()
        self.buckets = buckets
        self.sha = {}
        for name in ("bet_batch", "grant"):
            with open(os.path.join(SRC, "scripts", "lua", name + ".lua")) as f:
                text = f.read()
            self.sha[name] = self.c.script_load(text)
            if name == "bet_batch":  # the fixed KEYS are read from the script's header comment
                self.bet_tmpl = [t for _, t in sorted(
                    (int(n), t) for n, t in re.findall(r"KEYS\[(\d+)\]\s+(tp:\{bN\}:\S+)", text))]

    def p(self, user):
        return "tp:{b%d}:" % (user % self.buckets)

    def grant(self, user, amount, grant_id=None, now=1000):
        p = self.p(user)
        res = self.c.evalsha(self.sha["grant"], 4, p + "bal", p + "grants", p + "granted",
                             p + "outbox", user, grant_id or f"signup:{user}", amount, now,
                             user % self.buckets, self.buckets)
        assert res[0] == "ok", res
        return res

    def open_round(self, rid, locks_at=10**13):
        """What bucket_state.lua does for `open`: a state copy and the unsettled set, per bucket."""
        for b in range(self.buckets):
            self.c.hset("tp:{b%d}:round:%s:state" % (b, rid),
                        mapping={"state": "open", "locks_at": locks_at})
            self.c.sadd("tp:{b%d}:unsettled" % b, rid)

    def bets(self, rid, bets, now=5000, check=True):
        """bets: [(user, band, stake, key)] of one bucket as one bet_batch.lua call (one outbox
        entry for all); returns the answers."""
        bucket = bets[0][0] % self.buckets
        b = "{b%d}" % bucket
        w = now // (IDEM_TTL * 1000)  # the filter's day (an older per-day filter's names)
        ks = [t.replace("{bN}", b).replace("<round_id>", str(rid)).replace("<d-1>", str(w - 1))
              .replace("<d+1>", str(w + 1)).replace("<d>", str(w)) for t in self.bet_tmpl]
        bands, users = [], []
        for u, band, _, _ in bets:
            if band not in bands:
                bands.append(band)
            if u not in users:
                users.append(u)
        ks += ["tp:%s:betl:%s:%s" % (b, rid, band) for band in bands]
        ks += ["tp:%s:ubets:%s" % (b, u) for u in users]
        shard_keys, per = idemfilter.batch_tail("tp:%s:" % b, w, [(u, key) for u, _, _, key in bets])
        ks += shard_keys
        # ARGV 10 = 1: no filter reads. The workloads' keys are fresh by construction, and tens
        # of thousands of them would make a small filter answer "check" (a false positive the
        # server resolves with Postgres; these tests drive the script directly).
        argv = [rid, now, NBANDS, MIN_STAKE, MAX_STAKE, IDEM_TTL, bucket, self.buckets, len(bets),
                1]
        for j, (u, band, stake, key) in enumerate(bets):
            argv += [u, band, stake, key] + per[j]
        res = self.c.evalsha(self.sha["bet_batch"], len(ks), *ks, *argv)
        if isinstance(self.c, redis.client.Pipeline):
            return res  # the script's own replies come with execute(): two values per bet
        res = betbatch.answers(res, rid, bets)
        if check:
            assert all(r[0] == "ok" for r in res), res
        return res

    def bet(self, user, rid, band, stake, key, now=5000, check=True):
        return self.bets(rid, [(user, band, stake, key)], now, check)[0]

    def balances(self):
        out = {}
        for b in range(self.buckets):
            for u, v in self.c.hgetall("tp:{b%d}:bal" % b).items():
                out[int(u)] = int(v)
        return out

    def backlog(self):
        keys = ["tp:{g}:outbox"] + ["tp:{b%d}:outbox" % b for b in range(self.buckets)]
        return sum(self.c.xlen(k) for k in keys)

    def pending(self):
        keys = ["tp:{g}:outbox"] + ["tp:{b%d}:outbox" % b for b in range(self.buckets)]
        n = 0
        for k in keys:
            try:
                n += self.c.xpending(k, "pgw")["pending"]
            except Exception:
                pass
        return n

    def fill_sure_win(self, rid, users, winners, losers, tag, locks_at):
        """`winners` bets on band 1 and `losers` on band 0 (stakes 100-599, players round-robin)
        in batches of 128, each answered ok, all before `locks_at` (ms): the settlement tests'
        round, whose band edges of +-100 % make band 1 win for sure."""
        jobs = [(1, i) for i in range(winners)] + [(0, i) for i in range(losers)]
        for i in range(0, len(jobs), 128):
            batch = [(users[n % len(users)], band, 100 + n % 500, f"{tag}-{band}-{n}")
                     for band, n in jobs[i:i + 128]]
            self.bets(rid, batch, now=int(time.time() * 1000))
        assert int(time.time() * 1000) < locks_at, "bets placed too slowly"

    def sure_win_round(self, srv, users, winners, losers, tag):
        """Grants `users` 10^12 each, waits for the server `srv`'s open round with 5 s of
        betting left and fills it as fill_sure_win does; returns its id."""
        for u in users:
            self.grant(u, 10**12, grant_id=f"{tag}:{u}")
        tpenv.wait_until(lambda: self.c.hget("tp:{g}:current", "open"), timeout=30,
                         what="a round")
        o = tpclient.fresh_open_round(srv, min_left_ms=5000, timeout=60)
        self.fill_sure_win(o["id"], users, winners, losers, tag, o["locks_at"])
        return o["id"]

    def settled_sure_win(self, srv, rid, winners, timeout=20):
        """Waits until fill_sure_win's round `rid` is settled; checks that band 1 won, every
        winner is credited stake * pot / W once, and the server asserted nothing; returns the
        leader's `round settled` line."""
        c = self.c
        tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") == "settled",
                         timeout=timeout, what=f"round {rid} settled")
        h = tpclient.round_hash(c, rid)
        assert h["winning_band"] == "1" and h["refund_all"] == "0", h
        paid = tpclient.round_paid(c, rid, 1)
        assert paid == tpclient.expected_credits(tpclient.round_bets(c, rid, 1, 3), h)
        assert len(paid) == winners
        log = srv.log_text()
        assert "assertion failed" not in log
        line = [ln for ln in log.splitlines()
                if 'msg="round settled"' in ln and f" round={rid} " in ln]
        assert len(line) == 1, line
        return line[0]

    def workload(self, nusers, nbets, rid=900001, start=1, grant=100000):
        """Grants nusers players and places nbets bets round-robin; returns Σ stakes. The round id is
        far above what a running leader opens (ids have no gaps), so the two never collide."""
        self.open_round(rid)
        users = list(range(start, start + nusers))
        for u in users:
            self.grant(u, grant)
        total = 0
        pipe_n = 0
        for i in range(nbets):
            u = users[i % nusers]
            stake = 100 + (i * 37) % 900
            self.bet(u, rid, i % NBANDS, stake, f"k{rid}-{i}")
            total += stake
            pipe_n += 1
        return total


def pg_scalar(pg, sql):
    rows = pg.psql(sql)
    return rows[0][0] if rows else None


def pg_counts(pg):
    """(grants, Σgrants, bets, Σstakes, ledger table rows, entries of the whole ledger, bets'
    debits and payouts' credits included, not summing to zero)."""
    row = pg.psql("SELECT (SELECT count(*) FROM grants), "
                  "(SELECT coalesce(sum(amount),0) FROM grants), "
                  "(SELECT count(*) FROM bets), (SELECT coalesce(sum(stake),0) FROM bets), "
                  "(SELECT count(*) FROM ledger), (SELECT count(*) FROM ledger_unbalanced)")[0]
    return tuple(int(x) for x in row)


def pg_balances(pg):
    """Per-user balances in Postgres: the ledger's user rows (grants), every bet's debit, which
    is its bets row, and every payout's or refund's credit, its payouts row (the view
    account_balances)."""
    rows = pg.psql("SELECT substr(account, 6), balance FROM account_balances "
                   "WHERE account LIKE 'user:%'")
    return {int(u): int(v) for u, v in rows}


def dead_local_consumer():
    """A consumer name of this host whose process is gone: the writer claims its entries at
    once (dead_local in src/store/pgw_outbox.c)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return f"{socket.gethostname()}:{p.pid}"


def wait_drained(money, pg, want_bets, timeout=30):
    tpenv.wait_until(lambda: money.backlog() == 0 and pg_counts(pg)[2] == want_bets,
                     timeout=timeout, what=f"outbox drained with {want_bets} bets in Postgres")


class OutagePg:
    """A Postgres cluster of the test's own, with one database, that the test can stop
    (immediate, like a crash) and start again."""

    psql = tpenv.Postgres.psql

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.cluster = tpenv.PgCluster().start()
        self.ctl = tpenv._as_postgres_user() + [f"{tpenv.PG_BIN}/pg_ctl", "-D",
                                                 self.cluster.data, "-w"]
        subprocess.run(["psql", self.cluster.admin_url, "-qc", f"CREATE DATABASE {self.db}"],
                       check=True, capture_output=True)
        self.url = self.cluster.admin_url.rsplit("/", 1)[0] + "/" + self.db
        return self

    def __exit__(self, *exc):
        self.cluster.stop()

    def stop(self):
        subprocess.run(self.ctl + ["-m", "immediate", "stop"], check=True, capture_output=True)

    def start(self):
        c = self.cluster
        subprocess.run(self.ctl + ["-l", os.path.join(c.dir, "log"), "-o",
                                   f"-p {c.port} -k {c.dir} "
                                   "-c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
