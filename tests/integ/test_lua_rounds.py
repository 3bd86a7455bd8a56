"""Round, lease and settlement scripts against a real redis-server (scripts/lua/README.md,
"Game engine"): fencing, CAS transitions, settlement pages run twice, refunds, conservation.

Scripts are run with EVALSHA exactly as the leader does; the Python `Game` below drives them in
the leader's order (src/game/leader.c) so each step can be checked and repeated.
"""

import hashlib
import os
import random
import time

import betbatch
import idemfilter
import redis
import tpenv

SRC = tpenv.SRC
EDGES = [-10, -3, 3, 10]
NBANDS = len(EDGES) + 1
NAMES = ["lease", "tick", "round_boundary", "round_cancel",
         "round_final", "bucket_state", "bucket_plan", "settle_page", "settle_finish", "bet_batch",
         "grant", "round_index"]
G = "tp:{g}:"


def now_ms():
    return int(time.time() * 1000)


class Game:
    def __init__(self, r, buckets=1):
        self.c = r.client()
        self.B = buckets
        self.sha = {}
        for n in NAMES:
            with open(os.path.join(SRC, "scripts", "lua", n + ".lua")) as f:
                self.sha[n] = self.c.script_load(f.read())
        # The filter's shards, as the leader builds them (a missing one reads as "check").
        for b in range(buckets):
            idemfilter.build(self.c, "tp:{b%d}:" % b, None, 48)
        self.holder, self.epoch = "h1", 0

    def run(self, name, keys, args):
        return self.c.evalsha(self.sha[name], len(keys), *keys, *args)

    def lease(self, holder, epoch, px=2000):
        return self.run("lease", [G + "lease", G + "epoch"], [holder, epoch, px])

    def acquire(self, holder="h1"):
        # A minute: a test's set-up (1,000 bets, one round trip each) outlasts the server's 2 s
        # lease on a loaded machine, and the fenced steps after it would be refused. The lease
        # rules themselves are tested with lease() and short leases.
        r = self.lease(holder, 0, px=60000)
        assert r[0] == "ok", r
        self.holder, self.epoch = holder, r[1]
        return r

    def fence(self):
        return [self.holder, self.epoch]

    # --- money ---
    def p(self, b):
        return "tp:{b%d}:" % b

    def grant(self, user, amount):
        b = user % self.B
        p = self.p(b)
        r = self.run("grant", [p + "bal", p + "grants", p + "granted", p + "outbox"],
                     [user, f"signup:{user}", amount, 1, b, self.B])
        assert r[0] == "ok", r

    def bet(self, user, rid, band, stake, key, max_stake=10**9, nbands=NBANDS):
        b = user % self.B
        p = self.p(b)
        now = now_ms()
        w = now // 3600000  # the key index windows of a 3600 s TTL
        keys = [p + "bal", p + f"idem:{rid}", p + f"round:{rid}:state", p + f"pool:{rid}",
                p + "outbox", p + "seq", p + "netlog", p + "excl", p + "paused", p + "disabled",
                p + "idemhot"] + idemfilter.window_keys(p, w) + [p + "idemyoung",
                p + f"betl:{rid}:{band}",
                p + f"ubets:{user}"] + idemfilter.batch_tail(p, w, [(user, key)])[0]
        res = self.run("bet_batch", keys, [rid, now, nbands, 1, max_stake, 3600, b, self.B, 1,
                                           0, user, band, stake, key,
                                           *idemfilter.pos_argv(user, key)])
        return betbatch.answers(res, rid, [(user, band, stake, key)])[0]

    # --- rounds ---
    # round_boundary.lua: close, lock and open parts, each None to leave it out
    def boundary(self, close=None, lock=None, open=None):
        c = close or {"id": 0}
        lk = lock or {"id": 0}
        o = open or {"id": 0}
        keys = [G + "lease", G + "current", G + "outbox", G + "rounds", G + "unfinished",
                G + f"round:{c['id']}", G + f"round:{lk['id']}",
                G + f"round:{max(lk['id'] - 1, 0)}", G + f"seed:{max(lk['id'] - 1, 0)}",
                G + f"round:{o['id']}", G + f"seed:{o['id']}", G + "pause"]
        seed = o.get("seed", "00" * 32 if o["id"] else "")
        h = hashlib.sha256(bytes.fromhex(seed)).hexdigest() if o["id"] else ""
        args = self.fence()
        args += [c["id"], c.get("price", 0), c.get("band", 0), c.get("T", 0), c.get("W", 0),
                 c.get("rake", 0), c.get("pot", 0), c.get("refund", 0), c.get("pools", "")]
        args += [lk["id"], lk.get("price", 0)]
        args += [o["id"], o.get("opens_at", 0), o.get("locks_at", 0), o.get("closes_at", 0),
                 seed, h, 45034 if o["id"] else 0, 300 if o["id"] else 0,
                 ",".join(map(str, EDGES)) if o["id"] else "", 100 if o["id"] else 0,
                 o.get("locks_at", 0) - o.get("opens_at", 0), *o.get("stakes", (0, 0)),
                 o.get("floor", 0)]
        return self.run("round_boundary", keys, args)

    @staticmethod
    def part(r, i):
        """One part's answer in the shape of the old one-part scripts: ['ok', done] or
        ['err', code]."""
        return ["ok", r[i]] if r[0] == "ok" else r[:2]

    def open(self, rid, opens_at, locks_at, closes_at, seed="00" * 32, stakes=(1, 10**9)):
        """round_boundary's open, then every bucket copy; `stakes` are the round's (min, max)."""
        r = self.part(self.boundary(open={"id": rid, "opens_at": opens_at, "locks_at": locks_at,
                                          "closes_at": closes_at, "seed": seed,
                                          "stakes": stakes}), 3)
        if r[0] == "ok":
            for b in range(self.B):
                self.bstate(b, rid, "open", locks_at, stakes=stakes)
        return r

    def bstate(self, b, rid, state, locks_at, grace=0, stakes=(1, 10**9)):
        p = self.p(b)
        return self.run("bucket_state", [p + f"round:{rid}:state", p + "unsettled"],
                        [rid, state, locks_at, grace, NBANDS, *stakes])

    def lock(self, rid, price, locks_at):
        for b in range(self.B):
            r = self.bstate(b, rid, "live", locks_at)
            if r[0] != "ok":
                return r
        return self.part(self.boundary(lock={"id": rid, "price": price}), 2)

    def pools(self, rid):
        pools = [0] * NBANDS
        for b in range(self.B):
            h = self.c.hgetall(self.p(b) + f"pool:{rid}")
            for i in range(NBANDS):
                pools[i] += int(h.get(str(i), 0))
        return pools

    def close_part(self, rid, close_price, band, rake_bps=300):
        pools = self.pools(rid)
        T, W = sum(pools), pools[band]
        if W == 0:
            rake, pot, refund = 0, T, 1
        else:
            rake = min(T * rake_bps // 10000, T - W)
            pot, refund = T - rake, 0
        return {"id": rid, "price": close_price, "band": band, "T": T, "W": W, "rake": rake,
                "pot": pot, "refund": refund, "pools": ",".join(map(str, pools))}

    def close(self, rid, close_price, band, rake_bps=300):
        return self.part(self.boundary(close=self.close_part(rid, close_price, band, rake_bps)),
                         1)

    def cancel(self, rid, locks_at, grace=0):
        for b in range(self.B):
            self.bstate(b, rid, "cancelled", locks_at, grace)
        pools = self.pools(rid)
        return self.run("round_cancel", [G + "lease", G + f"round:{rid}", G + "current",
                                         G + "unfinished"],
                        self.fence() + [rid, sum(pools), ",".join(map(str, pools)), "test",
                                        "-10,-3,3,10", locks_at, 30000])

    def plan(self, b, rid):
        h = self.c.hgetall(G + f"round:{rid}")
        return self.run("bucket_plan", [self.p(b) + f"plan:{rid}"],
                        [h["winning_band"] if "winning_band" in h else 0, h["pot"],
                         h["winning_stake"], h["refund_all"], NBANDS])

    def page(self, b, rid, count=500):
        p = self.p(b)
        keys = [p + f"plan:{rid}", p + "bal", p + f"paid:{rid}", p + f"payout:{rid}", p + "outbox"]
        keys += [p + f"bets:{rid}:{i}" for i in range(NBANDS)]
        keys += [p + "net"] + [p + f"betl:{rid}:{i}" for i in range(NBANDS)]
        return self.run("settle_page", keys, [rid, count, now_ms(), 10**9])

    def finish(self, b, rid, final):
        p = self.p(b)
        return self.run("settle_finish", [p + f"plan:{rid}", p + f"pool:{rid}", p + "house",
                                          p + "unsettled", p + f"round:{rid}:state",
                                          p + "outbox"], [rid, final, now_ms()])

    def final(self, rid, sum_t, paid):
        return self.run("round_final", [G + "lease", G + f"round:{rid}", G + f"seed:{rid}",
                                        G + "outbox", G + "unfinished"], self.fence() + [rid, sum_t, paid])

    def settle(self, rid, final="settled", check=None, count=500):
        sum_t = paid = 0
        for b in range(self.B):
            assert self.plan(b, rid)[0] == "ok"
            while True:
                r = self.page(b, rid, count)
                assert r[0] == "ok", r
                if check:
                    check()
                if r[1] == 1:
                    break
            f = self.finish(b, rid, final)
            assert f[0] == "ok", f
            sum_t += f[1]
            paid += f[2]
            if check:
                check()
        return self.final(rid, sum_t, paid)

    def conservation(self):
        """Σ bal + house + Σ_{unsettled rounds} (pool.total − plan.paid) = granted, per bucket."""
        for b in range(self.B):
            p = self.p(b)
            bal = sum(int(v) for v in self.c.hvals(p + "bal"))
            house = int(self.c.get(p + "house") or 0)
            held = 0
            for rid in self.c.smembers(p + "unsettled"):
                held += int(self.c.hget(p + f"pool:{rid}", "total") or 0)
                held -= int(self.c.hget(p + f"plan:{rid}", "paid") or 0)
            granted = int(self.c.get(p + "granted") or 0)
            assert bal + house + held == granted, (b, bal, house, held, granted)


def past_round(g, rid, span=1000):
    """Times of a round whose lock and close already passed (Redis TIME is the wall clock)."""
    t = now_ms() - 10 * span
    return t, t + span, t + 2 * span


def test_lease_acquire_renew_steal():
    with tpenv.Redis() as r:
        g = Game(r)
        a = g.lease("A", 0, 300)
        assert a[0] == "ok" and a[2] == 1
        e = a[1]
        assert g.lease("A", e, 300) == ["ok", e, 0]            # renewal keeps the epoch
        held = g.lease("B", 0, 300)
        assert held[0] == "err" and held[1] == "held" and held[2] == f"A|{e}"
        time.sleep(0.4)                                        # A's lease expires
        b = g.lease("B", 0, 2000)
        assert b[0] == "ok" and b[1] > e and b[2] == 1         # steal with a higher epoch
        assert g.lease("A", e, 300)[0] == "err"                # A cannot renew any more
        assert g.lease("B", b[1], 0) == ["ok", 0, 0]           # release
        assert g.c.get(G + "lease") is None


def test_stale_epoch_refused_everywhere():
    with tpenv.Redis() as r:
        g = Game(r)
        g.acquire("A")
        t0, t1, t2 = past_round(g, 1)
        assert g.open(1, t0, t1, t2) == ["ok", 1]
        before = {k: g.c.dump(k) for k in g.c.keys("*")}
        g.holder, real = "A", g.epoch
        g.epoch = real + 7                                    # a stale/foreign epoch
        calls = [
            lambda: g.run("tick", [G + "lease", G + "ticks"], g.fence() + [6000, t1, 6500000]),
            lambda: g.open(2, t1, t2, t2 + 1000),
            lambda: g.boundary(lock={"id": 1, "price": 6500000})[:2],
            lambda: g.boundary(close={"id": 1, "price": 6500000, "band": 2, "refund": 1,
                                      "pools": "0,0,0,0,0"})[:2],
            lambda: g.run("round_cancel", [G + "lease", G + "round:1", G + "current",
                                           G + "unfinished"],
                          g.fence() + [1, 0, "0,0,0,0,0", "x", "-10,-3,3,10", 0, 30000]),
            lambda: g.final(1, 0, 0),
        ]
        for c in calls:
            assert c() == ["err", "stale_epoch"]
        after = {k: g.c.dump(k) for k in g.c.keys("*")}
        assert before == after


def test_transitions_cas_idempotent_and_timed():
    with tpenv.Redis() as r:
        g = Game(r, buckets=2)
        g.acquire()
        t = now_ms()
        # lock before its time is refused, in the bucket copy and globally
        assert g.open(1, t, t + 60000, t + 120000) == ["ok", 1]
        assert g.open(1, t, t + 60000, t + 120000) == ["ok", 0]        # idempotent
        assert g.open(3, t, t + 60000, t + 120000) == ["err", "bad_id"]  # no gaps
        # Postgres's newest id (the floor) counts as an id: below Redis's newest it changes
        # nothing; a malformed floor is an error, nothing written.
        o2 = {"id": 2, "opens_at": t, "locks_at": t + 60000, "closes_at": t + 120000}
        before = {k: g.c.dump(k) for k in g.c.keys("tp:{g}:*")}
        for bad in ("-1", "x", ""):
            try:
                g.boundary(open=dict(o2, floor=bad))
                raise AssertionError(f"floor {bad!r} accepted")
            except redis.ResponseError as e:
                assert "bad floor" in str(e), e
        assert {k: g.c.dump(k) for k in g.c.keys("tp:{g}:*")} == before
        assert g.boundary(open=dict(o2, id=3, floor=1)) == ["err", "bad_id", "open"]
        assert g.lock(1, 6500000, t + 60000) == ["err", "too_early"]
        assert g.c.hget("tp:{b0}:round:1:state", "state") == "open"
        assert g.boundary(lock={"id": 1, "price": 6500000}) == ["err", "too_early", "lock"]
        # a round in the past: open -> live -> settling -> settled, each step repeatable
        g.c.hset(G + "round:1", mapping={"locks_at": t - 2000, "closes_at": t - 1000,
                                         "betting_ms": 1000})
        for b in range(2):
            g.c.hset(g.p(b) + "round:1:state", "locks_at", t - 2000)
        assert g.lock(1, 6500000, t - 2000) == ["ok", 1]
        assert g.lock(1, 6400000, t - 2000) == ["ok", 0]
        assert g.c.hget(G + "round:1", "lock_price") == "6500000"
        assert g.bstate(0, 1, "open", t)[:2] == ["ok", 0]                 # never backwards
        assert g.close(1, 6500100, 2) == ["ok", 1]
        assert g.close(1, 6400000, 0) == ["ok", 0]
        assert g.c.hget(G + "round:1", "close_price") == "6500100"
        assert g.cancel(1, t - 2000)[0] == "err"                         # too late to cancel
        assert g.settle(1) == ["ok", 1, "settled"]
        assert g.final(1, 0, 0) == ["ok", 0, "settled"]
        assert g.c.hget(G + "round:1", "seed") == "00" * 32              # segment past
        assert g.c.hget("tp:{b1}:round:1:state", "state") == "settled"
        # a new leader (higher epoch) repeats everything harmlessly
        g.c.delete(G + "lease")
        g.acquire("h2")
        assert g.lock(1, 1, t) == ["ok", 0] and g.close(1, 1, 0) == ["ok", 0]
        assert g.cancel(1, t)[0] == "err"
        assert g.settle(1) == ["ok", 0, "settled"]


def setup_bets(g, rid, n, users, rng, bands=None):
    for u in users:
        g.grant(u, 10**9)
    placed = []
    for i in range(n):
        u = rng.choice(users)
        band = rng.choice(bands if bands else range(NBANDS))
        stake = rng.randint(1, 100000)
        res = g.bet(u, rid, band, stake, f"k{i}")
        assert res[0] == "ok", res
        placed.append((res[1], u, band, stake))
    return placed


def check_settlement(g, rid, placed, refund):
    h = g.c.hgetall(G + f"round:{rid}")
    T = sum(s for _, _, _, s in placed)
    assert int(h["r_total"]) == T
    paid = {}
    for b in range(g.B):
        paid.update({int(k): int(v) for k, v in g.c.hgetall(g.p(b) + f"paid:{rid}").items()})
    per_user = {}
    if refund:
        assert len(paid) == len(placed)
        for bid, u, _, s in placed:
            assert paid[bid] == s
            per_user[u] = per_user.get(u, 0) + s
        assert int(h["r_refunds"]) == T and int(h["r_payouts"]) == 0
    else:
        band = int(h["winning_band"])
        W = sum(s for _, _, bd, s in placed if bd == band)
        pot = int(h["pot"])
        winners = [(bid, u, s) for bid, u, bd, s in placed if bd == band]
        assert len(paid) == len(winners)
        for bid, u, s in winners:
            assert paid[bid] == s * pot // W, (bid, s, pot, W)
            per_user[u] = per_user.get(u, 0) + paid[bid]
        total_paid = sum(paid.values())
        assert int(h["r_payouts"]) == total_paid
        assert int(h["r_breakage"]) == T - int(h["r_rake"]) - total_paid >= 0
    for b in range(g.B):
        got = {int(k): int(v) for k, v in g.c.hgetall(g.p(b) + f"payout:{rid}").items()}
        assert got == {u: a for u, a in per_user.items() if u % g.B == b}
    # the outbox carries each credit exactly once: one `credits` entry per page, one line per bet
    lines = []
    for b in range(g.B):
        for _, f in g.c.xrange(g.p(b) + "outbox"):
            if f["type"] == "credits" and f["round_id"] == str(rid):
                assert f["kind"] == ("refund" if refund else "payout"), f
                lines += [ln.split(",") for ln in f["credits"].split("\n")]
    assert sorted((int(x[0]), int(x[2])) for x in lines) == sorted(paid.items())


def test_first_open_above_the_floor():
    """A Redis with no round (lost, or a fresh game over an old Postgres): the first open is
    the floor + 1, the newest id Postgres holds; never 1 again."""
    with tpenv.Redis() as r:
        g = Game(r, buckets=1)
        g.acquire()
        t = now_ms()
        o = {"opens_at": t, "locks_at": t + 60000, "closes_at": t + 120000}
        assert g.boundary(open=dict(o, id=1, floor=41)) == ["err", "bad_id", "open"]
        assert g.c.keys("tp:{g}:round*") == []
        assert g.boundary(open=dict(o, id=43, floor=41)) == ["err", "bad_id", "open"]
        assert g.boundary(open=dict(o, id=42, floor=41)) == ["ok", 0, 0, 1]
        assert g.c.zrange(G + "rounds", 0, -1) == ["42"]
        assert g.boundary(open=dict(o, id=43)) == ["ok", 0, 0, 1]  # then Redis's newest + 1
        opened = [e["round_id"] for _, e in g.c.xrange(G + "outbox")
                  if e.get("type") == "round_opened"]
        assert opened == ["42", "43"]


def test_settlement_pages_1000_bets_twice():
    with tpenv.Redis() as r:
        g = Game(r, buckets=3)
        g.acquire()
        rng = random.Random(7)
        t0, t1, t2 = past_round(g, 1)
        g.c.delete(G + "rounds")
        assert g.open(1, t0, now_ms() + 60000, t2)[0] == "ok"
        placed = setup_bets(g, 1, 1000, list(range(1, 40)), rng, bands=[1, 2, 3])
        g.conservation()
        for b in range(3):
            g.c.hset(g.p(b) + "round:1:state", "locks_at", t1)
        g.c.hset(G + "round:1", "locks_at", t1)
        assert g.lock(1, 6500000, t1) == ["ok", 1]
        assert g.bet(1, 1, 2, 100, "late") == ["err", "round_not_open"]
        assert g.close(1, 6500100, 2) == ["ok", 1]                       # band 2 wins
        g.conservation()
        # every page run twice: the repeat credits no bet a second time (it skips the bets
        # paid and may go on to the next ones)
        for b in range(3):
            assert g.plan(b, 1)[0] == "ok"
            assert g.plan(b, 1) == ["ok", 0]
            while True:
                cur = g.c.hget(g.p(b) + "plan:1", "cur")
                r1 = g.page(b, 1, 50)
                g.conservation()
                done = r1[1]
                # rewind the cursor: the same page again, as a new leader would after a crash
                g.c.hset(g.p(b) + "plan:1", mapping={"cur": cur, "done": 0})
                paid = g.c.hgetall(g.p(b) + "paid:1")
                r2 = g.page(b, 1, 50)
                after = g.c.hgetall(g.p(b) + "paid:1")
                assert all(after[k] == v for k, v in paid.items())
                assert len(after) - len(paid) == r2[2], r2
                g.conservation()
                if done == 1 and r2[1] == 1:
                    break
            assert g.finish(b, 1, "settled")[0] == "ok"
            g.conservation()
            assert g.finish(b, 1, "settled")[0] == "ok"
            g.conservation()
        sums = [g.finish(b, 1, "settled") for b in range(3)]
        fin = g.final(1, sum(s[1] for s in sums), sum(s[2] for s in sums))
        assert fin == ["ok", 1, "settled"], fin
        check_settlement(g, 1, placed, refund=False)
        g.conservation()
        for b in range(3):
            assert g.c.scard(g.p(b) + "unsettled") == 0


def test_no_winner_refunds_everything():
    with tpenv.Redis() as r:
        g = Game(r, buckets=2)
        g.acquire()
        t0, t1, t2 = past_round(g, 1)
        assert g.open(1, t0, now_ms() + 60000, t2)[0] == "ok"
        placed = setup_bets(g, 1, 200, list(range(1, 10)), random.Random(1), bands=[0, 1])
        for b in range(2):
            g.c.hset(g.p(b) + "round:1:state", "locks_at", t1)
        g.c.hset(G + "round:1", "locks_at", t1)
        assert g.lock(1, 6500000, t1)[0] == "ok"
        assert g.close(1, 6600000, 4) == ["ok", 1]                       # nobody on band 4
        assert g.c.hget(G + "round:1", "refund_all") == "1"
        assert g.settle(1, count=7, check=g.conservation) == ["ok", 1, "settled"]
        check_settlement(g, 1, placed, refund=True)
        assert all(int(g.c.get(g.p(b) + "house") or 0) == 0 for b in range(2))
        g.conservation()


def test_largest_stakes_and_pool_settle_exactly():
    """The largest stake config accepts (10^15 - 1) and a pool filled to its bound (4·10^15 / B
    per bucket) settle to the unit: every payout is floor(s·pot/W) in exact integers, the
    receipt adds up (no `mismatch`), conservation holds; one unit more is `pool_full`."""
    S = 10**15 - 1
    with tpenv.Redis() as r:
        g = Game(r, buckets=2)
        g.acquire()
        t0, t1, t2 = past_round(g, 1)
        assert g.open(1, t0, now_ms() + 60000, t2, stakes=(1, S))[0] == "ok"
        for u in range(1, 9):
            g.grant(u, S)
        # bucket 1: users 1, 3, 5, 7; bucket 0: users 2, 4, 6, 8. Cap per bucket: 2·10^15.
        jobs = [(1, 1, S), (3, 2, S), (2, 1, S - 7), (4, 3, S - 3), (5, 1, 2), (6, 2, 10)]
        placed = []
        for i, (u, band, stake) in enumerate(jobs):
            res = g.bet(u, 1, band, stake, f"k{i}", max_stake=S)
            assert res[0] == "ok", (u, stake, res)
            placed.append((res[1], u, band, stake))
        assert g.c.hget(g.p(1) + "pool:1", "total") == str(4 * 10**15 // 2)  # exactly full
        assert g.bet(7, 1, 1, 1, "over", max_stake=S) == ["err", "pool_full"]
        res = g.bet(8, 1, 1, 2, "last", max_stake=S)   # bucket 0 reaches its bound exactly
        assert res[0] == "ok" and res[6] == 0, res
        placed.append((res[1], 8, 1, 2))
        assert g.bet(6, 1, 1, 10**15 // 2, "big", max_stake=S) == ["err", "pool_full"]
        g.conservation()
        for b in range(2):
            g.c.hset(g.p(b) + "round:1:state", "locks_at", t1)
        g.c.hset(G + "round:1", "locks_at", t1)
        assert g.lock(1, 6500000, t1)[0] == "ok"
        assert g.close(1, 6500100, 1) == ["ok", 1]                       # band 1 wins
        assert g.settle(1, count=2, check=g.conservation) == ["ok", 1, "settled"]
        check_settlement(g, 1, placed, refund=False)
        T = sum(s for _, _, _, s in placed)
        assert T < 2**52 and int(g.c.hget(G + "round:1", "r_total")) == T
        house = sum(int(g.c.get(g.p(b) + "house") or 0) for b in range(2))
        h = g.c.hgetall(G + "round:1")
        assert house == int(h["r_rake"]) + int(h["r_breakage"]), (house, h)
        g.conservation()


def test_bet_checks_the_rounds_own_rules():
    """A restart with other band edges or stake bounds must not change a round in flight: a bet
    outside the round's bands would make its pools and pages disagree with the recorded total
    (round_final `mismatch`, the round stuck settling), and a stake the round's rules refuse must
    stay refused. round_boundary stores the rules, the bucket copy records the band count and stake
    bounds, and bet_batch.lua checks them whatever the caller's (the config's) ARGV say."""
    with tpenv.Redis() as r:
        g = Game(r, buckets=2)
        g.acquire()
        t0, t1, t2 = past_round(g, 1)
        assert g.open(1, t0, now_ms() + 60000, t2, stakes=(200, 5000))[0] == "ok"
        h = g.c.hgetall(G + "round:1")
        assert (h["min_stake"], h["max_stake"], h["rake_bps"]) == ("200", "5000", "300"), h
        for u in (1, 2):
            g.grant(u, 10**6)
        copy = g.c.hgetall(g.p(1) + "round:1:state")
        assert (copy["nbands"], copy["min_stake"], copy["max_stake"]) == (str(NBANDS), "200",
                                                                          "5000"), copy
        before = g.c.hgetall(g.p(1) + "bal")
        assert g.bet(1, 1, NBANDS, 200, "new", nbands=NBANDS + 2) == ["err", "invalid_band"]
        # The config's bounds (ARGV 9 and 10, here 1 .. 10^9) do not widen the round's.
        assert g.bet(1, 1, 0, 199, "low") == ["err", "invalid_stake"]
        assert g.bet(1, 1, 0, 5001, "high") == ["err", "invalid_stake"]
        assert g.c.hgetall(g.p(1) + "bal") == before
        assert g.bet(2, 1, NBANDS - 1, 5000, "old", nbands=NBANDS + 2)[0] == "ok"
        assert g.bet(2, 1, 0, 200, "less", nbands=3)[0] == "ok"   # fewer: the round's count
        # Bad input is answered before a closed round, as when the C side knew the bounds.
        assert g.open(2, t0, t1, t2, stakes=(200, 5000))[0] == "ok"   # lock time passed
        assert g.bet(1, 2, 0, 199, "late") == ["err", "invalid_stake"]
        assert g.bet(1, 2, 0, 200, "late") == ["err", "round_not_open"]
        # A copy written by a version without the rules falls back to the config's.
        assert g.open(3, t0, now_ms() + 60000, t2)[0] == "ok"
        g.c.hdel(g.p(1) + "round:3:state", "nbands", "min_stake", "max_stake")
        assert g.bet(1, 3, NBANDS, 100, "legacy", nbands=NBANDS + 2)[0] == "ok"
        assert g.bet(1, 3, 0, 99, "legacy-low")[0] == "ok"
        # bucket_state writes no bounds for a round that has none (min_stake 0).
        g.bstate(0, 4, "open", now_ms() + 60000, stakes=(0, 0))
        assert "min_stake" not in g.c.hgetall(g.p(0) + "round:4:state")
        g.conservation()


def test_boundary_is_one_step():
    """At a boundary the close of N-1, the lock of N and the open of N+1 are one script: the
    current pair goes from (open N, live N-1) to (open N+1, live N), and a part that cannot be
    done (too early, wrong state, a gap in the ids, a stale epoch) leaves everything as it was,
    including the parts that could have been."""
    with tpenv.Redis() as r:
        g = Game(r, buckets=2)
        g.acquire()
        t = now_ms()
        assert g.open(1, t - 3000, t - 2000, t - 1000) == ["ok", 1]
        assert g.lock(1, 6500000, t - 2000) == ["ok", 1]
        assert g.open(2, t - 2000, t - 1000, t + 60000) == ["ok", 1]
        assert g.c.hgetall(G + "current") == {"open": "2", "live": "1"}
        for b in range(2):
            assert g.bstate(b, 2, "live", t - 1000)[0] == "ok"
        nxt = {"id": 3, "opens_at": t - 1000, "locks_at": t + 60000, "closes_at": t + 120000}
        close1 = g.close_part(1, 6500100, 2)

        def frozen(call, want):
            before = {k: g.c.dump(k) for k in g.c.keys("tp:{g}:*")}
            assert call() == want
            assert {k: g.c.dump(k) for k in g.c.keys("tp:{g}:*")} == before

        # any one part refused: nothing at all is written
        frozen(lambda: g.boundary(close=dict(close1, id=2), lock={"id": 2, "price": 1},
                                  open=nxt), ["err", "bad_state", "close"])
        frozen(lambda: g.boundary(close=close1, lock={"id": 2, "price": 1},
                                  open=dict(nxt, id=4)), ["err", "bad_id", "open"])
        frozen(lambda: g.boundary(close=close1, lock={"id": 3, "price": 1}, open=nxt),
               ["err", "not_found", "lock"])
        g.c.hset(G + "round:1", "closes_at", t + 60000)
        frozen(lambda: g.boundary(close=close1, lock={"id": 2, "price": 1}, open=nxt),
               ["err", "too_early", "close"])
        g.c.hset(G + "round:1", "closes_at", t - 1000)
        g.epoch += 1
        frozen(lambda: g.boundary(close=close1, lock={"id": 2, "price": 1}, open=nxt),
               ["err", "stale_epoch", "fence"])
        g.epoch -= 1
        # all three at once, then again (a repeated step): nothing more
        assert g.boundary(close=close1, lock={"id": 2, "price": 6500100}, open=nxt) == \
            ["ok", 1, 1, 1]
        assert g.c.hgetall(G + "current") == {"open": "3", "live": "2"}
        assert g.c.hget(G + "round:1", "state") == "settling"
        assert g.c.hget(G + "round:2", "state") == "live"
        assert g.c.hget(G + "round:3", "state") == "open"
        assert g.c.zrange(G + "unfinished", 0, -1) == ["1", "2", "3"]
        assert g.boundary(close=close1, lock={"id": 2, "price": 1}, open=nxt) == \
            ["ok", 0, 0, 0]
        assert g.c.hget(G + "round:2", "lock_price") == "6500100"
        assert g.c.hgetall(G + "current") == {"open": "3", "live": "2"}
        opened = [e for _, e in g.c.xrange(G + "outbox") if e.get("type") == "round_opened"]
        assert [e["round_id"] for e in opened] == ["1", "2", "3"]


def test_boundary_while_paused_locks_and_closes_but_opens_nothing():
    """The operator's pause (tp:{g}:pause, pause.lua's) exists when the boundary's script runs,
    though the leader planned the open before it was set: the close and the lock are written, the
    open is left out and said to be (a fifth part, "paused", unlike an open already done), and
    after the resume the next open still takes max id + 1."""
    with tpenv.Redis() as r:
        g = Game(r)
        g.acquire()
        t = now_ms()
        assert g.open(1, t - 3000, t - 2000, t - 1000) == ["ok", 1]
        assert g.lock(1, 6500000, t - 2000) == ["ok", 1]
        assert g.open(2, t - 2000, t - 1000, t + 60000) == ["ok", 1]
        assert g.bstate(0, 2, "live", t - 1000)[0] == "ok"
        g.c.hset(G + "pause", mapping={"reason": "", "since": t - 50, "by": "op",
                                       "action_id": "p1"})
        nxt = {"id": 3, "opens_at": t - 1000, "locks_at": t + 60000, "closes_at": t + 120000}
        close1 = g.close_part(1, 6500100, 2)
        assert g.boundary(close=close1, lock={"id": 2, "price": 6500100}, open=nxt) == \
            ["ok", 1, 1, 0, "paused"]
        assert g.c.hgetall(G + "current") == {"live": "2"}
        assert g.c.hget(G + "round:1", "state") == "settling"
        assert g.c.hget(G + "round:2", "state") == "live"
        assert not g.c.exists(G + "round:3") and not g.c.exists(G + "seed:3")
        assert g.c.zrange(G + "rounds", 0, -1) == ["1", "2"]
        assert g.c.zrange(G + "unfinished", 0, -1) == ["1", "2"]
        # Repeated while paused: still nothing opens; a lone open (a first open) likewise, and a
        # paused open is not checked for its id (it is not going to be written).
        assert g.boundary(close=close1, lock={"id": 2, "price": 1}, open=nxt) == \
            ["ok", 0, 0, 0, "paused"]
        assert g.boundary(open=nxt) == ["ok", 0, 0, 0, "paused"]
        # An open already done is "already done", paused or not.
        assert g.boundary(open={"id": 2}) == ["ok", 0, 0, 0]
        # Resumed: the next open is max id + 1 (3, no gap); another id is still refused.
        g.c.delete(G + "pause")
        assert g.boundary(open=dict(nxt, id=4)) == ["err", "bad_id", "open"]
        assert g.boundary(open=nxt) == ["ok", 0, 0, 1]
        assert g.c.hgetall(G + "current") == {"open": "3", "live": "2"}
        opened = [e for _, e in g.c.xrange(G + "outbox") if e.get("type") == "round_opened"]
        assert [e["round_id"] for e in opened] == ["1", "2", "3"]


def test_cancel_refunds_everything():
    with tpenv.Redis() as r:
        g = Game(r, buckets=2)
        g.acquire()
        t = now_ms()
        assert g.open(1, t - 10000, t + 60000, t + 120000)[0] == "ok"
        placed = setup_bets(g, 1, 300, list(range(1, 12)), random.Random(3))
        # too early to cancel an open round (lock + grace not missed): nothing changes
        assert g.bstate(0, 1, "cancelled", t + 60000, 5000) == ["err", "too_early"]
        for b in range(2):
            g.c.hset(g.p(b) + "round:1:state", "locks_at", t - 6000)
        assert g.cancel(1, t - 6000, 5000) == ["ok", 1]
        assert g.cancel(1, t - 6000, 5000) == ["ok", 0]
        assert g.bet(1, 1, 0, 100, "after") == ["err", "round_not_open"]
        assert g.c.hget(G + "current", "open") is None
        g.conservation()
        assert g.settle(1, final="cancelled", count=20, check=g.conservation) == \
            ["ok", 1, "cancelled"]
        check_settlement(g, 1, placed, refund=True)
        assert g.c.hget("tp:{b0}:round:1:state", "state") == "cancelled"
        g.conservation()


def test_round_final_failure_writes_nothing():
    """round_final must fail before its first write: a round left final without its receipt
    event could never be repaired (a rerun answers ['ok', 0] and the outbox never gets it)."""
    with tpenv.Redis() as r:
        g = Game(r)
        g.acquire()
        t = now_ms()
        assert g.open(1, t - 10000, t + 60000, t + 120000)[0] == "ok"
        g.c.hset("tp:{b0}:round:1:state", "locks_at", t - 6000)
        assert g.cancel(1, t - 6000, 5000) == ["ok", 1]
        assert g.plan(0, 1)[0] == "ok"
        while g.page(0, 1)[1] != 1:
            pass
        assert g.finish(0, 1, "cancelled")[0] == "ok"
        g.c.hdel(G + "round:1", "betting_ms")                # e.g. a hash from an older version
        before = {k: g.c.dump(k) for k in (G + "round:1", G + "outbox")}
        try:
            g.final(1, 0, 0)
            raise AssertionError("round_final accepted a round without betting_ms")
        except redis.exceptions.ResponseError:
            pass
        after = {k: g.c.dump(k) for k in (G + "round:1", G + "outbox")}
        assert before == after, "round_final wrote before failing"
        assert g.c.hget(G + "round:1", "state") == "cancelling"


def test_round_index_adds_only_unfinished_rounds():
    """round_index.lua: rounds a server without the unfinished index left in flight (any state
    but settled or cancelled) join the index; final or missing rounds do not; the scan mark only
    rises; a stale epoch or keys that do not match the ids change nothing."""
    with tpenv.Redis() as r:
        g = Game(r)
        g.acquire()
        states = {1: "settled", 2: "live", 3: "settling", 4: "cancelled", 5: "open",
                  6: "cancelling"}
        for rid, st in states.items():   # what an older server leaves: no index entry
            g.c.hset(G + f"round:{rid}", mapping={"id": rid, "state": st})
            g.c.zadd(G + "rounds", {str(rid): rid})
        g.c.zadd(G + "unfinished", {"5": 5})   # already indexed (by round_boundary)

        def index(ids, mark, fence=None, keys=None):
            k = keys or [G + f"round:{i}" for i in ids]
            return g.run("round_index", [G + "lease", G + "unfinished", G + "unfinished_scan", *k],
                         (fence or g.fence()) + [mark, *ids])

        before = {k: g.c.dump(k) for k in g.c.keys("*")}
        assert index([2, 3], 3, fence=[g.holder, g.epoch + 1]) == ["err", "stale_epoch"]
        for ids, keys, why in (([2, 3], [G + "round:3", G + "round:2"], "match"),
                               ([0], [G + "round:0"], "match"), (["x"], [G + "round:x"], "match")):
            try:
                index(ids, 3, keys=keys)
                raise AssertionError("accepted " + why)
            except redis.exceptions.ResponseError as e:
                assert "tp_round_index" in str(e), e
        assert {k: g.c.dump(k) for k in g.c.keys("*")} == before   # nothing written
        assert index([1, 2, 3, 4, 5, 6, 7], 7) == ["ok", 3]   # 2, 3, 6 (7 has no hash)
        assert g.c.zrange(G + "unfinished", 0, -1) == ["2", "3", "5", "6"]
        assert g.c.get(G + "unfinished_scan") == "7"
        assert index([2], 2) == ["ok", 0]                      # again: nothing new
        assert g.c.get(G + "unfinished_scan") == "7"           # the mark never falls
        assert index([], 7) == ["ok", 0]


def test_ticks_fenced_and_deduplicated():
    with tpenv.Redis() as r:
        g = Game(r)
        g.acquire()
        k = [G + "lease", G + "ticks"]
        assert g.run("tick", k, g.fence() + [6000, 1000, 1, 1100, 2]) == ["ok", 2]
        assert g.run("tick", k, g.fence() + [6000, 1100, 2, 1200, 3]) == ["ok", 1]
        ids = [i for i, _ in g.c.xrange(G + "ticks")]
        assert ids == ["1000-0", "1100-0", "1200-0"]


if __name__ == "__main__":
    tpenv.main()
