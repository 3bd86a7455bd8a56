"""settle_page.lua against a real redis-server, page by page (scripts/lua/README.md, "Game
engine"): pages bounded in bets and in Redis time, repeated pages credit no bet twice, and the
aggregated pages give exactly what the per-bet script gave before them
(tests/integ/lua/settle_page_per_bet.lua, the reference): the same amount per bet, balances,
round totals per player and net winnings, and, once each page's `credits` entry is expanded line
by line, the same outbox credits, each with the balance its player had after that page.

The bucket's keys are written directly (balances, the plan by bucket_plan.lua, the bets: the
reference reads only the bands' hashes, as versions before session 26 wrote them; the new script
is given the same bets in the bands' lists as bet_batch.lua writes them now, in the hashes, or
half in each: a round an older server left in flight), so each case is only the settlement;
test_lua_rounds.py runs the whole round; test_settle_mixed.py a mixed round under a server.
"""

import os
import random

import redis
import tpenv

SRC = tpenv.SRC
NBANDS = 3
RID = 7
FORMS = ("list", "hash", "mixed")  # where the new script finds the bets: Bucket.fill


def load(c, path):
    with open(os.path.join(SRC, path)) as f:
        return c.script_load(f.read())


class Bucket:
    """Bucket b of one Redis: its settlement keys and scripts."""

    def __init__(self, c, b):
        self.c, self.b = c, b
        self.p = "tp:{b%d}:" % b
        self.new = load(c, "scripts/lua/settle_page.lua")
        self.ref = load(c, "tests/integ/lua/settle_page_per_bet.lua")
        self.plan_sha = load(c, "scripts/lua/bucket_plan.lua")

    def keys(self):
        """settle_page.lua's KEYS; the reference's are those up to net."""
        p = self.p
        return ([p + f"plan:{RID}", p + "bal", p + f"paid:{RID}", p + f"payout:{RID}",
                 p + "outbox"] + [p + f"bets:{RID}:{i}" for i in range(NBANDS)] + [p + "net"]
                + [p + f"betl:{RID}:{i}" for i in range(NBANDS)])

    def fill(self, bets, balances, form="hash"):
        """bets: (bet_id, user, band, stake); balances: user → start balance. form: the bets in
        the bands' hashes (bet_id -> "<user>:<stake>", an older version's), lists
        ("<bet_id>:<user>:<stake>" in bet order, this version's) or "mixed" (an odd bet id in
        the list, an even one in the hash)."""
        self.c.hset(self.p + "bal", mapping={str(u): str(v) for u, v in balances.items()})
        for band in range(NBANDS):
            mine = [(i, u, s) for i, u, bd, s in bets if bd == band]
            m = {str(i): f"{u}:{s}" for i, u, s in mine
                 if form == "hash" or (form == "mixed" and i % 2 == 0)}
            if m:
                self.c.hset(self.p + f"bets:{RID}:{band}", mapping=m)
            entries = [f"{i}:{u}:{s}" for i, u, s in mine
                       if form == "list" or (form == "mixed" and i % 2 == 1)]
            if entries:
                self.c.rpush(self.p + f"betl:{RID}:{band}", *entries)

    def plan(self, band, pot, w, refund):
        r = self.c.evalsha(self.plan_sha, 1, self.p + f"plan:{RID}", band, pot, w,
                           1 if refund else 0, NBANDS)
        assert r[0] == "ok", r

    def page(self, max_bets=500, budget_us=10**9, now=5000):
        k = self.keys()
        return self.c.evalsha(self.new, len(k), *k, RID, max_bets, now, budget_us)

    def ref_page(self, count=500, now=5000):
        k = self.keys()[:6 + NBANDS]
        return self.c.evalsha(self.ref, len(k), *k, RID, count, now)

    def state(self):
        """Everything a settlement writes but the outbox: balances, credits per bet, round
        totals per player, net winnings, the plan's sum paid and its done flag."""
        p = self.p
        return {"bal": self.c.hgetall(p + "bal"),
                "paid": self.c.hgetall(p + f"paid:{RID}"),
                "payout": self.c.hgetall(p + f"payout:{RID}"),
                "net": dict(self.c.zrange(p + "net", 0, -1, withscores=True)),
                "plan": self.c.hmget(p + f"plan:{RID}", "paid", "done")}

    def entries(self):
        """The outbox's credits per entry, one (kind, bet_id, user_id, round_id, amount,
        balance, ts) per bet: a per-bet event as it is, a page's entry expanded line by line."""
        out = []
        for _, f in self.c.xrange(self.p + "outbox"):
            if f["type"] in ("payout", "refund"):
                out.append([(f["type"], f["bet_id"], f["user_id"], f["round_id"], f["amount"],
                             f["balance"], f["ts"])])
            elif f["type"] == "credits":
                assert set(f) == {"type", "kind", "round_id", "ts", "credits"}, f
                lines = []
                for line in f["credits"].split("\n"):
                    bet, user, amount, bal = line.split(",")
                    lines.append((f["kind"], bet, user, f["round_id"], amount, bal, f["ts"]))
                out.append(lines)
            else:
                raise AssertionError(f)
        return out

    def credits(self):
        return [c for e in self.entries() for c in e]


def make_bets(rng, n, users, bands, big=False):
    bets = []
    for i in range(n):
        stake = rng.choice([rng.randint(1, 1000), rng.randint(1, 10**12)]) if big else \
            rng.randint(1, 100000)
        bets.append((1000 + i, rng.choice(users), rng.choice(bands), stake))
    return bets


def expected(bets, band, pot, w, refund):
    """floor(s·pot/W) per winning bet (its stake on a refund), in exact integers."""
    return {bid: s if refund else s * pot // w for bid, _, bd, s in bets if refund or bd == band}


def page_balances_consistent(start, entries):
    """Each line's balance is its player's balance right after its page: replaying the pages'
    entries in order from the start balances gives exactly those numbers. Returns the final
    balances."""
    bal = dict(start)
    for lines in entries:
        for _, _, user, _, amount, _, _ in lines:
            bal[user] = bal.get(user, 0) + int(amount)
        for _, bet, user, _, _, b, _ in lines:
            assert int(b) == bal[user], (bet, user, b, bal[user])
    return bal


def settle_new(bk, rng):
    """Pages of random sizes and budgets until done; about every second page is repeated from
    the same cursor (as after a leader's crash), which must credit no bet a second time: it
    skips every bet paid and may go on to bets the first run did not reach."""
    while bk.c.hget(bk.p + f"plan:{RID}", "done") != "1":
        cur = bk.c.hmget(bk.p + f"plan:{RID}", "pos", "cur")
        max_bets = rng.choice([1, 7, 128, 300, 700, 4096])
        budget = rng.choice([0, 200, 10**9])
        r = bk.page(max_bets, budget)
        # a hash table's chunk is taken whole (COUNT is a hint it overshoots by a few entries),
        # a listpack's (the whole hash, up to 512 entries here) is cut at the page's size; some
        # progress unless the bucket is done
        assert r[0] == "ok" and 0 <= r[2] <= max_bets + 2 * 128 and r[4] >= 0, r
        assert r[3] > 0 or r[1] == 1, r
        # the bucket's paid so far (the leader paces by it): the plan's, this page included
        assert r[5] == int(bk.c.hget(bk.p + f"plan:{RID}", "paid")), r
        if rng.random() < 0.5:
            xlen = bk.c.xlen(bk.p + "outbox")
            before = bk.state()
            bk.c.hset(bk.p + f"plan:{RID}", mapping={"pos": cur[0], "cur": cur[1], "done": 0})
            r2 = bk.page(max_bets, budget)
            assert r2[0] == "ok" and r2[2] <= max_bets + 2 * 128, r2
            assert r2[5] == int(bk.c.hget(bk.p + f"plan:{RID}", "paid")), r2
            assert bk.c.xlen(bk.p + "outbox") == xlen + (1 if r2[2] > 0 else 0)
            after = bk.state()
            paid_before, paid_after = before["paid"], after["paid"]
            assert all(paid_after[k] == v for k, v in paid_before.items())
            assert len(paid_after) - len(paid_before) == r2[2]
            if r2[2] == 0:
                before.pop("plan"), after.pop("plan")  # it may stop elsewhere (its budget)
                assert before == after


def settle_ref(bk):
    while bk.ref_page(500)[1] != 1:
        pass


def compare(bets, balances, band, pot, w, refund, seed, form):
    with tpenv.Redis() as r:
        c = r.client()
        ref, new = Bucket(c, 0), Bucket(c, 1)
        ref.fill(bets, balances)
        new.fill(bets, balances, form)
        for bk in (ref, new):
            bk.c.zadd(bk.p + "net", {str(u): -5 for u in balances})
            bk.plan(band, pot, w, refund)
        settle_ref(ref)
        settle_new(new, random.Random(seed))
        want = expected(bets, band, pot, w, refund)
        assert ref.state() == new.state()
        assert {int(k): int(v) for k, v in new.state()["paid"].items()} == want
        # a page of a done bucket still says what the bucket paid: the sum of its credits
        done = new.page()
        assert done[1:5] == [1, 0, 0, done[4]] and done[5] == sum(want.values()), done
        a, b = ref.credits(), new.credits()
        strip = lambda cs: sorted(x[:5] + x[6:] for x in cs)  # noqa: E731 (all but the balance)
        assert strip(a) == strip(b)
        assert len(b) == len(want) == len({x[1] for x in b})  # each bet once
        start = {str(u): v for u, v in balances.items()}
        final = page_balances_consistent(start, new.entries())
        assert {u: str(v) for u, v in final.items()} == new.state()["bal"]
        assert c.xlen(new.p + "outbox") < len(b) / 5  # aggregated: one entry per page


def test_pages_equal_the_per_bet_script_on_a_win():
    rng = random.Random(11)
    users = list(range(1, 60))
    bets = make_bets(rng, 3000, users, [0, 1, 2])
    W = sum(s for _, _, bd, s in bets if bd == 1)
    T = sum(s for _, _, _, s in bets)
    pot = T - T * 3 // 100
    for form in FORMS:
        compare(bets, {u: rng.randint(0, 10**6) for u in users}, 1, pot, W, False, 1, form)


def test_pages_equal_the_per_bet_script_with_large_stakes():
    """stake · (pot mod W) beyond 2^53: the exact long multiplication, not the double."""
    rng = random.Random(12)
    users = list(range(1, 20))
    bets = make_bets(rng, 600, users, [0, 2], big=True)
    W = sum(s for _, _, bd, s in bets if bd == 2)
    T = sum(s for _, _, _, s in bets)
    pot = T - 12345
    assert max(s * (pot % W) for _, _, bd, s in bets if bd == 2) > 2**53
    for form in FORMS:
        compare(bets, {u: 0 for u in users}, 2, pot, W, False, 2, form)


def test_pages_equal_the_per_bet_script_on_balances_past_a_double():
    """A player's balance of more than 15 digits is added by Redis in 64 bits (HINCRBY), a 0 or
    absent one counts as 0, any other is added in the script; a net or round total absent counts
    as 0: the players' part (its balance parse and text inlined, its fields read as `text + 0`)
    gives the per-bet script's numbers, and each line's balance is exact."""
    rng = random.Random(14)
    users = list(range(1, 40))
    bets = make_bets(rng, 1200, users, [0, 1, 2])
    W = sum(s for _, _, bd, s in bets if bd == 1)
    T = sum(s for _, _, _, s in bets)
    pot = T - T * 3 // 100
    balances = {}
    for u in users:
        kind = u % 5
        if kind == 0:
            balances[u] = 2**60 + u  # past a double's exact range
        elif kind == 1:
            balances[u] = 2**53 - 1 - u  # exact, but 16 digits
        elif kind == 2:
            balances[u] = 10**15 - 1 - u  # 15 digits: the script adds
        elif kind == 3:
            balances[u] = 0
        # kind 4: no balance field (nor net) at all
    assert any(u % 5 == 4 for _, u, bd, _ in bets if bd == 1)
    for form in FORMS:
        compare(bets, balances, 1, pot, W, False, 4, form)


def test_pages_equal_the_per_bet_script_on_a_refund():
    """A refund walks every band; a page may end in one band (or form) and the next go on in
    another."""
    rng = random.Random(13)
    users = list(range(1, 30))
    bets = make_bets(rng, 1500, users, [0, 1, 2])
    T = sum(s for _, _, _, s in bets)
    for form in FORMS:
        compare(bets, {u: rng.randint(0, 10**6) for u in users}, 0, T, 0, True, 3, form)


def test_time_budget_ends_a_page_and_large_pages_work():
    """With a budget of 0 µs a page stops after its first HSCAN chunk whatever its size; with a
    large budget one page takes 5,000 bets at once (its argument lists go to Redis in slices)."""
    rng = random.Random(14)
    users = list(range(1, 200))
    bets = make_bets(rng, 5000, users, [1])
    W = T = sum(s for *_, s in bets)
    for form in ("hash", "list"):
        budget_and_large_pages(bets, users, W, T, form)


def budget_and_large_pages(bets, users, W, T, form):
    with tpenv.Redis() as r:
        c = r.client()
        bk = Bucket(c, 0)
        bk.fill(bets, {u: 0 for u in users}, form)
        bk.plan(1, T, W, False)
        first = bk.page(4096, 0)
        assert first[0] == "ok" and first[1] == 0 and 0 < first[3] <= 2 * 128, first
        assert first[2] == first[3]  # nothing paid before: every scanned bet credited
        big = bk.page(5000, 10**9)
        assert big[0] == "ok" and big[1] == 1, big
        assert first[2] + big[2] == 5000
        assert c.hlen(bk.p + f"paid:{RID}") == 5000
        assert c.xlen(bk.p + "outbox") == 2
        assert sum(int(v) for v in c.hvals(bk.p + "bal")) == T
        assert bk.page(10, 0)[:4] == ["ok", 1, 0, 0]  # done: nothing more


def slow_round(rng, winners):
    """`winners` bets on band 1 and 40 on band 0 of 39 players, every winning stake on the exact
    long multiplication (the slowest there is); returns (users, bets, W, pot, credits owed)."""
    users = list(range(1, 40))
    bets = [(1000 + i, rng.choice(users), 1, 10**11 + rng.randint(0, 9 * 10**11))
            for i in range(winners)]
    bets += [(2000 + i, rng.choice(users), 0, rng.randint(10**9, 10**11)) for i in range(40)]
    W = sum(s for _, _, bd, s in bets if bd == 1)
    pot = sum(s for *_, s in bets) - 12345
    assert min(s * (pot % W) for _, _, bd, s in bets if bd == 1) > 2**53
    return users, bets, W, pot, expected(bets, 1, pot, W, False)


def test_list_pages_resume_at_the_first_bet_not_taken():
    """In a band's list a page that ends (its size, or its time inside a chunk of slow stakes)
    leaves the index of its first bet not taken: the next page reads from there, so no bet is
    read twice and none is skipped, the last one included. A mixed band is its hash, then its
    list."""
    users, bets, W, pot, want = slow_round(random.Random(16), 301)
    with tpenv.Redis() as r:
        c = r.client()
        ref, by_size, by_time, mixed = (Bucket(c, b) for b in range(4))
        ref.fill(bets, {u: 0 for u in users})
        for bk, form in ((by_size, "list"), (by_time, "list"), (mixed, "mixed")):
            bk.fill(bets, {u: 0 for u in users}, form)
        for bk in (ref, by_size, by_time, mixed):
            bk.plan(1, pot, W, False)
        settle_ref(ref)
        pages, curs = [], []
        while not pages or pages[-1][1] != 1:
            pages.append(by_size.page(100, 10**9))
            curs.append(c.hget(by_size.p + f"plan:{RID}", "cur"))
        # a full page's next index, the last bet alone on the fourth page
        assert [p[2] for p in pages] == [100, 100, 100, 1], pages
        assert [p[3] for p in pages] == [100, 100, 100, 1], pages  # nothing read twice
        assert curs == ["L100", "L200", "L300", "0"], curs
        pages = []
        while not pages or pages[-1][1] != 1:
            pages.append(by_time.page(4096, 0))
            cur = c.hget(by_time.p + f"plan:{RID}", "cur")
            assert pages[-1][1] == 1 or cur == "L%d" % (16 * len(pages)), (pages, cur)
        assert [p[2] for p in pages] == [16] * 18 + [13], pages  # a time check every 16
        pages = []
        while not pages or pages[-1][1] != 1:
            pages.append(mixed.page(50, 10**9))
        assert sum(p[2] for p in pages) == 301 and all(p[2] <= 50 + 2 * 128 for p in pages)
        for bk in (by_size, by_time, mixed):
            assert bk.state() == ref.state()
            assert {int(k): int(v) for k, v in bk.state()["paid"].items()} == want
            assert sorted(x[:5] for x in bk.credits()) == sorted(x[:5] for x in ref.credits())


def test_a_listpack_chunk_is_paged_too():
    """A bets hash small enough to be a listpack (up to 512 entries, Redis's default) comes back
    whole from one HSCAN whatever COUNT asks. A page still credits at most its size, and stops on
    its time inside the chunk; the next page reads the chunk again and skips what is paid. The
    stakes are the slowest there are: each a different amount, all on the exact long
    multiplication."""
    users, bets, W, pot, want = slow_round(random.Random(15), 500)
    with tpenv.Redis() as r:
        c = r.client()
        c.config_set("hash-max-listpack-entries", 512)
        ref, by_size, by_time = Bucket(c, 0), Bucket(c, 1), Bucket(c, 2)
        for bk in (ref, by_size, by_time):
            bk.fill(bets, {u: 0 for u in users})
            bk.plan(1, pot, W, False)
        assert c.object("encoding", by_size.p + f"bets:{RID}:1") == "listpack"
        settle_ref(ref)
        pages = []
        while not pages or pages[-1][1] != 1:
            pages.append(by_size.page(100, 10**9))
        # the hash's pages (the paid skipped), then one finding the band's list empty
        assert [p[2] for p in pages] == [100] * 5 + [0] and pages[-1][1] == 1, pages
        assert [p[3] for p in pages] == [100, 200, 300, 400, 500, 0], pages
        pages = []
        while not pages or pages[-1][1] != 1:
            pages.append(by_time.page(4096, 0))
            plan = c.hmget(by_time.p + f"plan:{RID}", "cur", "done")
            # cursor kept; "L0" once the hash is read, "0" when done
            want_cur = "0" if pages[-1][1] == 1 or len(pages) < 32 else "L0"
            assert plan == [want_cur, "1" if pages[-1][1] == 1 else "0"], plan
        assert [p[2] for p in pages] == [16] * 31 + [4, 0], pages  # a time check every 16
        for bk in (by_size, by_time):
            assert bk.state() == ref.state()
            assert {int(k): int(v) for k, v in bk.state()["paid"].items()} == want
            assert sorted(x[:5] for x in bk.credits()) == sorted(x[:5] for x in ref.credits())


def test_hostile_input_writes_nothing():
    """Bad arguments, a malformed bets entry and a field the page adds to that is no number (or
    a key of the wrong type) are errors before the first write."""
    with tpenv.Redis() as r:
        c = r.client()
        bk = Bucket(c, 0)
        bets = [(1000 + i, 1 + i % 5, 1, 100) for i in range(300)]
        bk.fill(bets, {u: 0 for u in range(1, 6)})
        bk.plan(1, 30000, 30000, False)
        snap = lambda: {k: c.dump(k) for k in c.keys("*")}  # noqa: E731
        before = snap()
        k = bk.keys()
        bad_args = [[RID, 0, 5000, 100], [RID, -1, 5000, 100], [RID, 10, 5000, -1],
                    [RID, "x", 5000, 100], [RID, 10, 5000], ["r7", 10, 5000, 100],
                    [RID, 10, "now", 100], [RID, 10**16, 5000, 100]]
        for args in bad_args:
            try:
                c.evalsha(bk.new, len(k), *k, *args)
                raise AssertionError(f"accepted {args}")
            except redis.ResponseError as e:
                assert "tp_settle_page" in str(e), e
        try:
            c.evalsha(bk.new, len(k) - 1, *k[:-1], RID, 10, 5000, 100)  # a KEY missing
            raise AssertionError("accepted missing KEYS")
        except redis.ResponseError as e:
            assert "tp_settle_page" in str(e), e
        assert snap() == before
        def refused(what, error):
            """A page refuses with `error` and writes nothing, however often it is sent."""
            before = snap()
            for _ in range(3):
                try:
                    bk.page(4096, 10**9)
                    raise AssertionError(f"accepted {what}")
                except redis.ResponseError as e:
                    now = snap()
                    assert now == before, (what, e, "wrote", sorted(
                        k for k in now.keys() | before.keys() if now.get(k) != before.get(k)))
                    assert error in str(e), e
        # one bets entry that is not "<user>:<stake>", or a stake past 15 digits (not exact in
        # a double): the page refuses before writing
        for bad in ("7:12x", "7:1234567890123456"):
            c.hset(bk.p + f"bets:{RID}:1", "1150", bad)
            refused(f"a malformed bets entry {bad}", "bad bets entry")
        # the same in a band's list: an entry that is not "<bet_id>:<user>:<stake>"
        c.hdel(bk.p + f"bets:{RID}:1", "1150")
        for bad in ("x:7:100", "0:7:100", "1150:7", "1150", "1150:7:12x",
                    "1150:7:1234567890123456"):
            c.rpush(bk.p + f"betl:{RID}:1", bad)
            refused(f"a malformed bets list entry {bad}", "bad bets list entry")
            c.rpop(bk.p + f"betl:{RID}:1")
        # a cursor into the list that is no index
        for cur in ("L", "Lx", "L-1", "L01"):
            c.hset(bk.p + f"plan:{RID}", "cur", cur)
            refused(f"the cursor {cur}", "bad cursor")
        assert c.xlen(bk.p + "outbox") == 0
        c.hset(bk.p + f"plan:{RID}", "cur", "0")
        c.hset(bk.p + f"bets:{RID}:1", "1150", "1:100")  # bet 1150 as it was
        hostile_fields_write_nothing(c, bk, bets, refused)


def hostile_fields_write_nothing(c, bk, bets, refused):
    """A winner's balance, round total or net, the plan's `paid` or the outbox hand-edited to
    something the page cannot add to (the scripts write canonical texts only): the page is
    refused before its first write, however often it is sent. Redis keeps what a script wrote
    before an error, so a check after the page's `paid` HSET would leave those bets paid and
    never credited. Once the keys are mended, the bucket settles, each bet exactly once."""
    bal, pay, net = bk.p + "bal", bk.p + f"payout:{RID}", bk.p + "net"
    plan, outbox = bk.p + f"plan:{RID}", bk.p + "outbox"
    # every player read before the bad one (3), so no earlier player's field hides it: player
    # 1's balance past a double (Redis adds it: HINCRBY, the page's first write), player 2's a
    # round total and a net to add to
    start = {"1": str(2**60), "2": "500", "3": "700", "4": "0", "5": "-5"}
    c.hset(bal, mapping=start)
    c.hset(pay, "2", "100")
    c.zadd(net, {u: -100 * int(u) for u in start})
    for bad in ("12x", "1.5", "", " 7", "007", "-0", "0x10", "1e3", "99999999999999999999",
                "9223372036854775807", "-99999999999999999999"):
        c.hset(bal, "3", bad)
        refused(f"the balance {bad!r}", "balance of player 3")
    c.hset(bal, "3", "700")
    for bad in ("12x", "", "--1"):
        c.hset(pay, "3", bad)
        refused(f"the round total {bad!r}", "round total of player 3")
    c.hdel(pay, "3")
    c.hset(plan, "paid", "x")
    refused("the plan's paid 'x'", "plan's paid")
    c.hset(plan, "paid", "0")
    c.set(outbox, "x")
    refused("an outbox that is no stream", "outbox is a string")
    c.delete(outbox)
    # a key of the wrong type (a ZSET score is always a number: a net that is none is a net
    # key that is no ZSET): Redis's own error, from a read before the first write
    for key in (bal, pay, net):
        c.rename(key, key + ":kept")
        c.hset(key, "3", "x") if key == net else c.set(key, "x")
        refused(f"{key} of the wrong type", "WRONGTYPE")
        c.delete(key)
        c.rename(key + ":kept", key)
    # mended: the bucket settles, each bet once, every player's fields moved by his credits
    before_net = {u: -100 * int(u) for u in start}
    r = bk.page(4096, 10**9)
    assert r[:4] == ["ok", 1, 300, 300] and r[5] == 30000, r
    assert bk.page(4096, 10**9)[:4] == ["ok", 1, 0, 0]
    owed = {}
    for bet_id, u, _, stake in bets:
        owed[str(u)] = owed.get(str(u), 0) + stake
    st = bk.state()
    assert st["paid"] == {str(b): "100" for b, *_ in bets}
    assert st["bal"] == {u: str(int(v) + owed[u]) for u, v in start.items()}
    assert st["payout"] == {u: str(owed[u] + (100 if u == "2" else 0)) for u in start}
    assert st["net"] == {u: before_net[u] + owed[u] for u in start}
    assert st["plan"] == ["30000", "1"]
    assert sorted(int(x[1]) for x in bk.credits()) == [b for b, *_ in bets]
    assert c.xlen(outbox) == 1

if __name__ == "__main__":
    tpenv.main()
