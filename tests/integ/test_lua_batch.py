"""scripts/lua/bet_batch.lua against a real redis-server, compared with one-by-one admission.

Every scenario runs twice on fresh Redis servers: once as batches of bet_batch.lua, once as the
same bets placed one at a time through the one-bet reference script (bench/lua/bet.lua, the
admission path before batching). Answers, balances, pools, bet lists, the leaderboard, the
sequence, idempotency records and the outbox's bets must be identical. A third run sends every
bet as a batch of one, so the batch script agrees with itself whatever the batch size; the key
index (which round a key bet on, only the batch script keeps one) must agree between those two.
The reference keeps one record per (user, key) for 24 h, so it answers a key reused on another
round with idempotency_conflict: the answer the key index gives the batch script.
"""

import hashlib
import os
import random
import re
import time

import betbatch
import idemfilter
import redis
import tpenv

SRC = tpenv.SRC
NBANDS, MIN_STAKE, MAX_STAKE, TTL = 5, 100, 100000, 86400
SHARD_BYTES = 192  # a filter shard's size: three days of 64 bytes, 192 KiB over 1024 shards (the leader builds them)
DAY = TTL * 1000


def canon_hash(round_id, band, stake):
    return hashlib.sha256(f"v1|{round_id}|{band}|{stake}".encode()).hexdigest()


def load(c, *path):
    with open(os.path.join(SRC, *path)) as f:
        return c.script_load(f.read())


class Side:
    """One Redis with the scripts loaded; bets go in as batches (batch=True) or one by one."""

    def __init__(self, r, buckets):
        self.c = r.client()
        self.raw = redis.Redis(host="127.0.0.1", port=r.port)
        self.b = buckets
        self.batch_sha = load(self.c, "scripts", "lua", "bet_batch.lua")
        self.one_sha = load(self.c, "bench", "lua", "bet.lua")
        self.grant_sha = load(self.c, "scripts", "lua", "grant.lua")
        self.unindex_sha = load(self.c, "scripts", "lua", "idem_unindex.lua")
        # The filter's shards, as the leader builds them before archival (until the last one
        # exists the filter holds no key; after, a missing shard reads as "check").
        for b in range(buckets):
            idemfilter.build(self.c, "tp:{b%d}:" % b, None, SHARD_BYTES)

    def p(self, user):
        return "tp:{b%d}:" % (user % self.b)

    def grant(self, user, amount):
        p = self.p(user)
        self.c.evalsha(self.grant_sha, 4, p + "bal", p + "grants", p + "granted", p + "outbox",
                       user, f"signup:{user}", amount, 1000, user % self.b, self.b)

    def open_round(self, rid, locks_at=10**13, state="open", nbands=None, stakes=None):
        """A state copy per bucket; nbands and stakes (min, max): the round's own rules."""
        for b in range(self.b):
            m = {"state": state, "locks_at": locks_at}
            if nbands is not None:
                m["nbands"] = nbands
            if stakes is not None:
                m["min_stake"], m["max_stake"] = stakes
            self.c.hset("tp:{b%d}:round:%s:state" % (b, rid), mapping=m)

    def batch_call(self, bucket, rid, bets, now, keys=None, skip=0, pos=None,
                   conf=(NBANDS, MIN_STAKE, MAX_STAKE), offsets=None):
        """bets: (user, band, stake, key); the KEYS and ARGV the C stub builds (pos: the
        filter positions instead of the keys' own; conf: the config's band count and stake
        bounds, ARGV[3..5]; offsets: a shard size, the positions then carry their offsets in
        such shards, ARGV[10] "0:<offsets>"); the answers as the server reads them."""
        p = "tp:{b%d}:" % bucket
        bands, users = [], []
        for u, band, _, _ in bets:
            if str(band) not in bands:
                bands.append(str(band))
            if u not in users:
                users.append(u)
        w = now // DAY
        shard_keys, per = idemfilter.batch_tail(p, w, [(u, key) for u, _, _, key in bets])
        ks = keys or ([p + "bal", p + f"idem:{rid}", p + f"round:{rid}:state", p + f"pool:{rid}",
                       p + "outbox", p + "seq", p + "netlog", p + "excl", p + "paused",
                       p + "disabled", p + "idemhot"] + idemfilter.window_keys(p, w) +
                      [p + "idemyoung"] +
                      [p + f"betl:{rid}:{b}" for b in bands] + [p + f"ubets:{u}" for u in users] +
                      shard_keys)
        argv = [rid, now, *conf, TTL, bucket, self.b, len(bets),
                f"0:{offsets}" if offsets and not skip else skip]
        if offsets:
            per = [idemfilter.pos_argv(u, key, offsets) for u, _, _, key in bets]
        for j, (u, band, stake, key) in enumerate(bets):
            argv += [u, band, stake, key] + (pos[j] if pos else per[j])
        return betbatch.answers(self.c.evalsha(self.batch_sha, len(ks), *ks, *argv), rid, bets)

    def one(self, rid, bet, now):
        u, band, stake, key = bet
        p = self.p(u)
        ks = [p + "bal", p + f"idem:{u}:{key}", p + f"round:{rid}:state", p + f"pool:{rid}",
              p + f"bets:{rid}:{band}", p + "outbox", p + "seq", p + f"ubets:{u}", p + "net",
              p + "excl", p + "paused"]
        return self.c.evalsha(self.one_sha, len(ks), *ks, u, rid, band, stake, key,
                              canon_hash(rid, band, stake), now, NBANDS, MIN_STAKE, MAX_STAKE, TTL,
                              u % self.b, self.b)

    def index(self):
        """The batch script's hot key index and its filters (bytes)."""
        out = {k + "idemhot": hot(self.c, k) for k in
               sorted({k[:-len("idemhot")] for k in self.c.keys("*:idemhot")} |
                      {k[:-len("idemyoung")] for k in self.c.keys("*:idemyoung")})}
        out.update({k: self.raw.get(k) for k in sorted(self.raw.keys("*:idemslots:*"))})
        return out

    def archive_index(self, bucket, rid, now, count=2, since=0):
        """What archival does to the hot index before it deletes the round's records, at
        `now` (the leader's clock): every idem_unindex.lua step, the window current at `now`
        (and the one before within the first 10 minutes of it, as src/game/leader_archive.c
        decides) built whole first, as the leader's builder has it; returns the entries
        removed."""
        p, w = "tp:{b%d}:" % bucket, now // DAY
        two = w >= 1 and now - w * DAY < 600000
        idemfilter.build(self.c, p, w, SHARD_BYTES)
        return idemfilter.archive_index(self.c, self.unindex_sha, p, bucket, rid, w, count, two,
                                        since)

    def state(self):
        """Everything a reader sees, independent of how the idempotency records are keyed (the
        key index aside: see index())."""
        c, out = self.c, {}
        for k in sorted(c.keys("*")):
            t = c.type(k)
            if ":idemfilter:" in k or ":idemslots:" in k:
                continue
            if k.endswith(":net") or k.endswith(":netlog"):
                # The leaderboard as GET reads it: `net` with bet_batch.lua's stakes log folded
                # in (the reference writes every stake into `net`).
                out[k[:k.rindex(":") + 1] + "net"] = betbatch.net_sorted(c, k[:k.rindex(":") + 1])
                continue
            if k.endswith(":idemyoung") and c.exists(k[:-len("idemyoung")] + "idemhot"):
                continue  # read with its big part, below
            if k.endswith(":idemhot") or k.endswith(":idemyoung"):
                # bet_batch.lua's records live in the hot entries, "<round>:<ms>|<record>"
                # (an older version's plain "<round>:<ms>" has its record in idem:<round>),
                # in either part of the index (the young one's entry of a field wins).
                pre = k.split(":")[1]
                for f, v in hot(c, k[:k.rindex(":") + 1]).items():
                    head, bar, rec = v.partition("|")
                    if bar:
                        user, key = f.split(":", 1)
                        out[("idem", pre, user, key)] = record(rec, head.split(":")[0])
            elif ":idem:" in k:
                # tp:{bN}:idem:<user>:<key> (STRING) or tp:{bN}:idem:<round> (HASH
                # "<user>:<key>"): the same records under (bucket, user, key), by content.
                if t == "string":
                    pre, user, key = k.split(":", 4)[1], k.split(":")[3], k.split(":", 4)[4]
                    out[("idem", pre, user, key)] = record(c.get(k))
                else:
                    pre, rid = k.split(":")[1], k.split(":")[3]
                    for f, v in c.hgetall(k).items():
                        user, key = f.split(":", 1)
                        out[("idem", pre, user, key)] = record(v, rid)
            elif ":bets:" in k or ":betl:" in k:
                # A band's bets: the reference's hash tp:{bN}:bets:<rid>:<band> (bet_id ->
                # "<user>:<stake>") or bet_batch.lua's list tp:{bN}:betl:<rid>:<band>
                # ("<bet_id>:<user>:<stake>", appended in the order admitted: ids ascending).
                name = tuple(k.split(":")[i] for i in (1, 3, 4))
                if t == "hash":
                    bets = c.hgetall(k)
                else:
                    entries = [e.split(":", 1) for e in c.lrange(k, 0, -1)]
                    ids = [int(bid) for bid, _ in entries]
                    assert ids == sorted(set(ids)), (k, ids)
                    bets = dict(entries)
                assert ("bets",) + name not in out, k
                out[("bets",) + name] = bets
            elif k.endswith(":outbox"):
                evs = []
                for _, f in c.xrange(k):
                    if f["type"] == "bet":
                        evs.append((f["bet_id"], f["user_id"], f["round_id"], f["band"],
                                    f["stake"], f["balance"], f["ts"], f["idem_key"]))
                    elif f["type"] == "bets":
                        for line in f["bets"].split("\n"):
                            bid, user, band, stake, bal, key = line.split(",", 5)
                            evs.append((bid, user, f["round_id"], band, stake, bal, f["ts"], key))
                    else:
                        evs.append(tuple(sorted(f.items())))
                out[k] = evs
            elif t == "hash":
                out[k] = c.hgetall(k)
            elif t == "list":
                # A player's history as GET /me/bets reads it: the newest 50 (bet_batch.lua
                # trims only past 75, the reference at every bet past 50).
                out[k] = c.lrange(k, 0, 49)
            elif t == "zset":
                out[k] = c.zrange(k, 0, -1, withscores=True)
            else:
                out[k] = c.get(k)
        return out

    def snapshot(self):
        return {k: (self.raw.type(k), self.raw.dump(k)) for k in sorted(self.raw.keys("*"))}


def hot(c, p):
    """Bucket prefix p's hot key index as bet_batch.lua reads it: the big part's entries, each
    overridden by the young part's entry of its field, if any (the newer)."""
    out = c.hgetall(p + "idemhot")
    out.update(c.hgetall(p + "idemyoung"))
    return out


def hot_heads(c, p):
    """The hot index entries without their records: "<round_id>:<placed_ms>"."""
    return {f: v.split("|")[0] for f, v in hot(c, p).items()}


def record(v, rid=None):
    """An idempotency record as (bet_id, round_id, band, stake, balance): bet.lua's (and an
    older bet_batch.lua's) "1|<hash>|<bet_id>|<round_id>|<band>|<stake>|<balance>", whose hash is
    the body's, or bet_batch.lua's "<bet_id>|<band>|<stake>|<balance>" (in its hot entry, or an
    older version's in idem:<rid>)."""
    f = v.split("|")
    if f[0] == "1" and len(f) == 7:
        assert f[1] == canon_hash(f[3], f[4], f[5]), v
        return (f[2], f[3], f[4], f[5], f[6])
    assert len(f) == 4 and rid is not None, v
    return (f[0], rid, f[1], f[2], f[3])


def run_three(buckets, setup, batches, between=None, later=()):
    """batches: [(rid, now, [(user, band, stake, key), ...])] in the order a worker flushes them
    (all bets of one call in one bucket); `between(side)` runs on every side after them, then
    the `later` batches. Returns the answers and the first side's state, asserting the three
    sides agree."""
    results = []
    with tpenv.Redis() as r1, tpenv.Redis() as r2, tpenv.Redis() as r3:
        sides = [Side(r, buckets) for r in (r1, r2, r3)]
        for s in sides:
            setup(s)
        a_batch, a_one, a_single = [], [], []
        for item in list(batches) + [None] + list(later):
            if item is None:
                for s in sides:
                    if between:
                        between(s)
                continue
            rid, now, bets = item
            bucket = bets[0][0] % buckets
            a_batch += sides[0].batch_call(bucket, rid, bets, now)
            a_one += [sides[1].one(rid, b, now) for b in bets]
            a_single += [sides[2].batch_call(bucket, rid, [b], now)[0] for b in bets]
        assert a_batch == a_one, list(zip(a_batch, a_one))
        assert a_single == a_one
        st = [s.state() for s in sides]
        assert st[0] == st[1], diff(st[0], st[1])
        assert st[2] == st[1], diff(st[2], st[1])
        assert sides[0].index() == sides[2].index()
        results = (a_batch, st[0])
    return results


def diff(a, b):
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def codes(answers):
    return [a[1] if a[0] == "err" else ("replay" if a[6] else "ok") for a in answers]


def test_mixed_batch_matches_one_by_one():
    def setup(s):
        for u in (1, 2, 3, 4):
            s.grant(u, 1000)
        s.open_round(7)
        s.open_round(8, state="live")
        s.c.hset("tp:{b0}:round:10:state", "state", "open")  # no lock time: fail closed

    bets = [
        (1, 0, 300, "a"),         # ok
        (2, 1, 5000, "b"),        # insufficient_funds
        (3, 9, 100, "c"),         # invalid_band (C validated it; defence in depth)
        (1, 2, 300, "a2"),        # ok: sees the first debit (400 left)
        (1, 0, 300, "a"),         # replay of the first, within the batch
        (1, 3, 300, "a"),         # same key, other body: conflict
        (1, 1, 400, "a3"),        # drains player 1 exactly
        (1, 1, 100, "a4"),        # insufficient_funds
        (2, 0, 99, "d"),          # invalid_stake
        (2, 0, 1000, "b"),        # the refused key "b" is new again: accepted
        (4, 4, 100, "x" * 129),   # invalid_request (key too long)
        (3, 4, 100, "c"),         # the refused "c" again, valid now
    ]
    answers, st = run_three(1, setup, [(7, 5000, bets)])
    assert codes(answers) == ["ok", "insufficient_funds", "invalid_band", "ok", "replay",
                              "idempotency_conflict", "ok", "insufficient_funds",
                              "invalid_stake", "ok", "invalid_request", "ok"], codes(answers)
    assert answers[4][:6] == answers[0][:6]
    assert [a[5] for a in answers if a[0] == "ok"] == [700, 400, 700, 0, 0, 900]
    assert st["tp:{b0}:bal"] == {"1": "0", "2": "0", "3": "900", "4": "1000"}
    # A replay in a later batch, and the round at its lock, and a round that is not open.
    later = [(7, 5000, [(1, 0, 300, "a"), (4, 0, 100, "late")]),
             (7, 10**13, [(4, 0, 100, "at-lock"), (1, 0, 300, "a")]),
             (8, 5000, [(4, 0, 100, "live")]),
             (9, 5000, [(4, 0, 100, "none")]),
             (10, 5000, [(4, 0, 100, "nolock")])]
    answers, _ = run_three(1, setup, [(7, 5000, bets)] + later)
    assert codes(answers[12:]) == ["replay", "ok", "round_not_open", "replay", "round_not_open",
                                   "round_not_found", "round_not_open"], codes(answers[12:])


def test_players_are_written_by_their_place_in_the_batch():
    """The script keeps a player's stakes, new balance and history entries by the player's
    place in the batch (users[u]), not by the user id: players refused between accepted ones
    leave holes (places 1, 3, 5 of the first batch), a player's last bet gives the balance
    written, and a batch of several players with one accepted writes that player's stakes alone
    into the leaderboard's stakes log, wherever its place (last, middle, first). A key
    repeated within a batch is a replay or a conflict however few players repeat (one of three
    bets: the script looks for repeated fields only when some player bets twice)."""
    def setup(s):
        for u, amount in ((1, 0), (2, 1000), (3, 50), (4, 1000), (6, 1000)):
            if amount:
                s.grant(u, amount)
        s.open_round(7)

    batches = [
        (7, 5000, [(1, 0, 100, "p1"), (2, 1, 300, "p2"), (3, 2, 100, "p3"), (2, 3, 200, "p2b"),
                   (4, 4, 100, "p4"), (5, 0, 100, "p5"), (6, 1, 400, "p6"), (4, 2, 950, "p4b"),
                   (4, 3, 250, "p4c")]),
        (7, 5001, [(1, 0, 100, "q1"), (5, 1, 100, "q5"), (6, 2, 100, "q6")]),
        (7, 5002, [(1, 0, 100, "r1"), (6, 3, 100, "r6"), (3, 4, 100, "r3")]),
        (7, 5003, [(6, 4, 100, "s6"), (1, 0, 100, "s1"), (3, 0, 100, "s3")]),
        (7, 5004, [(2, 0, 100, "t2"), (4, 1, 100, "t4"), (2, 0, 100, "t2")]),
        (7, 5005, [(2, 0, 100, "v2"), (4, 0, 100, "v4"), (2, 1, 100, "v2")]),
    ]
    answers, st = run_three(1, setup, batches)
    assert codes(answers) == ["insufficient_funds", "ok", "insufficient_funds", "ok", "ok",
                              "insufficient_funds", "ok", "insufficient_funds", "ok",
                              "insufficient_funds", "insufficient_funds", "ok",
                              "insufficient_funds", "ok", "insufficient_funds",
                              "ok", "insufficient_funds", "insufficient_funds",
                              "ok", "ok", "replay", "ok", "ok", "idempotency_conflict"
                              ], codes(answers)
    assert st["tp:{b0}:bal"] == {"2": "300", "3": "50", "4": "450", "6": "300"}
    with tpenv.Redis() as r:
        s = Side(r, 1)
        setup(s)

        for rid, now, bets in batches:
            s.batch_call(0, rid, bets, now)
            # The call's entry: each player with an accepted bet once, in the order of its
            # first bet, with the sum of its accepted stakes.
            want = {}
            for (u, _, stake, _), a in zip(bets, answers):
                if a[0] == "ok" and not a[6]:
                    want[str(u)] = want.get(str(u), 0) + stake
            answers = answers[len(bets):]
            assert s.c.lindex("tp:{b0}:netlog", -1) == " ".join(
                f"{u} {v}" for u, v in want.items())
        assert not s.c.exists("tp:{b0}:net")  # nothing folded: the worker folds, not the script
        assert betbatch.net(s.c, "tp:{b0}:")["6"] == -700
        assert s.c.lindex("tp:{b0}:ubets:4", 2).endswith(":7:3:250")  # after t4, v4


def test_random_batches_match_one_by_one():
    rng = random.Random(11)
    users = list(range(1, 41))

    def setup(s):
        for u in users:
            if rng_grant[u]:
                s.grant(u, rng_grant[u])
        # The round's own rules: band 4 and stakes outside 150..4000 are invalid.
        s.open_round(3, nbands=4, stakes=(150, 4000))

    rng_grant = {u: rng.choice([0, 150, 1000, 5000, 20000]) for u in users}
    batches = []
    keys = {}
    for _ in range(30):
        bucket = rng.randrange(4)
        bets = []
        for _ in range(rng.randrange(1, 40)):
            u = rng.choice([u for u in users if u % 4 == bucket])
            if keys.get(u) and rng.random() < 0.25:
                k, band, stake = rng.choice(keys[u])  # a retry, maybe with another body
                if rng.random() < 0.3:
                    stake += 100
            else:
                k = "k%d" % rng.randrange(10**6)
                band, stake = rng.randrange(5), rng.choice([100, 150, 250, 1000, 4000, 4001])
                keys.setdefault(u, []).append((k, band, stake))
            bets.append((u, band, stake, k))
        batches.append((3, 5000 + len(batches), bets))
    answers, st = run_three(4, setup, batches)
    got = set(codes(answers))
    assert {"ok", "replay", "insufficient_funds", "idempotency_conflict", "invalid_band",
            "invalid_stake"} <= got, got


def test_random_batches_with_every_refusal_match_batches_of_one():
    """Batches against the same bets sent as batches of one, with what the one-by-one
    reference (bench/lua/bet.lua) does not know (disabled accounts), player flags read from
    the HMGET replies by each player's place in the batch: self-exclusions (ended and not),
    disabled accounts, a pause and an older version's whole-window filter coming and going
    between batches (the script's 'rare' states), a round reaching its lock, a missing round
    and a bucket's pool reaching its cap. Answers, every key a reader sees and the key index
    must agree."""
    rng = random.Random(29)
    users = list(range(1, 31))
    grants = {u: rng.choice([0, 150, 2000, 50000]) for u in users}
    excl = {u: rng.choice([4000, 5020, 10**13]) for u in rng.sample(users, 8)}
    disabled = set(rng.sample(users, 4))

    def setup(s):
        for u in users:
            if grants[u]:
                s.grant(u, grants[u])
        s.open_round(3, nbands=4, stakes=(100, 40000))
        s.open_round(4, locks_at=5020, nbands=4, stakes=(100, 40000))
        s.c.hset("tp:{b1}:pool:3", mapping={"2": 2 * 10**15 - 2500, "total": 2 * 10**15 - 2500})
        for u, end in excl.items():
            s.c.hset("tp:{b%d}:excl" % (u % 2), str(u), end)
        for u in disabled:
            s.c.hset("tp:{b%d}:disabled" % (u % 2), str(u), 1000)

    def toggle(s, j):
        for b in (0, 1):
            p = "tp:{b%d}:" % b
            if j % 7 == 3:
                s.c.set(p + "paused", 1)
            elif j % 7 == 5:
                s.c.delete(p + "paused")
            if j % 5 == 2:
                s.raw.set(p + "idemfilter:0", b"\0" * 64)  # an upgrade's whole-window filter
            elif j % 5 == 4:
                s.c.delete(p + "idemfilter:0")
            if j == 20:
                s.c.hdel(p + "disabled", *[str(u) for u in disabled])

    batches, keys = [], {}
    for j in range(40):
        bucket = rng.randrange(2)
        rid = rng.choice([3, 3, 3, 4, 5])
        bets = []
        for _ in range(rng.randrange(1, 25)):
            u = rng.choice([u for u in users if u % 2 == bucket])
            if keys.get(u) and rng.random() < 0.3:
                k, band, stake = rng.choice(keys[u])
                if rng.random() < 0.3:
                    band = (band + 1) % 5
            else:
                k = "r%d" % rng.randrange(10**6)
                band, stake = rng.randrange(5), rng.choice([99, 100, 700, 2500, 40000, 40001])
                keys.setdefault(u, []).append((k, band, stake))
            bets.append((u, band, stake, k))
        batches.append((rid, 5000 + j, bets))
    with tpenv.Redis() as r1, tpenv.Redis() as r2:
        sides = [Side(r, 2) for r in (r1, r2)]
        for s in sides:
            setup(s)
        got = [[], []]
        for j, (rid, now, bets) in enumerate(batches):
            for s in sides:
                toggle(s, j)
            bucket = bets[0][0] % 2
            got[0] += sides[0].batch_call(bucket, rid, bets, now)
            got[1] += [sides[1].batch_call(bucket, rid, [b], now)[0] for b in bets]
        assert got[0] == got[1], [(i, a, b) for i, (a, b) in enumerate(zip(*got)) if a != b]
        st = [s.state() for s in sides]
        assert st[0] == st[1], diff(st[0], st[1])
        assert sides[0].index() == sides[1].index()
    # Both sides run the same script: what each flag means is checked against the flags.
    paused, i = False, 0
    for j, (rid, now, bets) in enumerate(batches):
        paused = True if j % 7 == 3 else False if j % 7 == 5 else paused
        for u, _, _, _ in bets:
            c, fresh = codes([got[0][i]])[0], got[0][i][0] == "ok" and not got[0][i][6]
            off = (u in disabled and j < 20) or excl.get(u, 0) > now
            assert not (fresh and (paused or off)), (j, u, got[0][i], paused, off)
            assert c != "self_excluded" or excl.get(u, 0) > now, (j, u, now)
            assert c != "account_disabled" or (u in disabled and j < 20), (j, u)
            assert c != "game_paused" or paused, (j, u)
            i += 1
    seen = set(codes(got[0]))
    assert {"ok", "replay", "idempotency_conflict", "insufficient_funds", "invalid_band",
            "invalid_stake", "self_excluded", "account_disabled", "game_paused",
            "round_not_open", "round_not_found", "pool_full"} <= seen, seen


def test_self_exclusion_and_pool_full():
    def setup(s):
        for u in (1, 2):
            s.grant(u, 10**6)
        s.open_round(5)
        s.c.hset("tp:{b0}:excl", "2", 6000)
        s.c.hset("tp:{b0}:pool:5", mapping={"0": 4 * 10**15 - 150, "total": 4 * 10**15 - 150})

    answers, _ = run_three(1, setup, [(5, 5000, [(2, 0, 100, "e"), (1, 0, 100, "f"),
                                                (1, 1, 100, "g"), (1, 0, 100, "f")]),
                                      (5, 6000, [(2, 0, 50 + 50, "e2")])])
    assert codes(answers) == ["self_excluded", "ok", "pool_full", "replay", "pool_full"], answers


def test_paused_game_refuses_new_bets_not_replays():
    def setup(s):
        s.grant(1, 1000)
        s.open_round(4)

    def pause(s):
        s.c.set("tp:{b0}:paused", 1)

    answers, _ = run_three(1, setup, [(4, 5000, [(1, 0, 100, "a"), (1, 1, 100, "b")])],
                           between=pause, later=[(4, 5000, [(1, 0, 100, "a"), (1, 2, 100, "c"),
                                                            (1, 1, 100, "b")])])
    assert codes(answers) == ["ok", "ok", "replay", "game_paused", "replay"], answers


def test_rejected_batch_leaves_no_trace_and_caller_bugs_raise():
    with tpenv.Redis() as r:
        s = Side(r, 2)
        s.grant(2, 100)
        s.open_round(1)
        before = s.snapshot()
        # Keys: the script refuses what would split the outbox entry's lines and the lengths;
        # any other byte outside printable ASCII is the C caller's check
        # (tests/unit/store/test_scripts.c).
        res = s.batch_call(0, 1, [(2, 0, 500, "k"), (2, 0, 99, "j"), (2, 7, 100, "i"),
                                  (2, 0, 100, "a\nb"), (2, 0, 100, "\n"), (2, 0, 100, "x" * 129),
                                  (2, 0, 100, "")],
                           5000)
        assert codes(res) == ["insufficient_funds", "invalid_stake", "invalid_band"] + \
            ["invalid_request"] * 4, res
        assert s.snapshot() == before
        for bets, text in (
                ([(3, 0, 100, "k")], "not in this bucket"),
                ([(0, 0, 100, "k")], "bad user_id")):
            try:
                s.batch_call(0, 1, bets, 5000)
            except redis.ResponseError as e:
                assert text in str(e), e
            else:
                raise AssertionError(text)
        p = "tp:{b0}:"
        base = [p + "bal", p + "idem:1", p + "round:1:state", p + "pool:1", p + "outbox",
                p + "seq", p + "netlog", p + "excl", p + "paused", p + "disabled", p + "idemhot"]
        tail = [p + "betl:1:0", p + "ubets:2"]
        shard = idemfilter.pos(2, "k")[2]
        good = idemfilter.window_keys(p, 0) + [p + "idemyoung"] + tail + [
            idemfilter.slot_key(p, shard)]
        # The names themselves are the C caller's (src/store/keys.c, checked by
        # tests/unit/store/test_scripts.c): the script checks only how many there are.
        for keys in (base + good[:-1], base + good + [p + "betl:1:1"], base[:10] + good):
            try:
                s.batch_call(0, 1, [(2, 0, 100, "k")], 5000, keys=keys)
            except redis.ResponseError as e:
                assert "want 16 + bands + users + shards KEYS" in str(e), e
            else:
                raise AssertionError(f"{len(keys)} KEYS accepted")
        # The filter position is the caller's: anything but 10 bytes of word, nonzero mask and
        # a shard below 1024 is a bug.
        one = b"\0\0\0\0\0\0\0\1"
        for bad in ([one + b"\0"], [b"\0" * 10], [one + b"\0\0\0"], [b"\xff" * 4 + b"\0" * 6],
                    [b""], [1], [one + b"\4\0"], [one + b"\xff\xff"], [one + b"00"]):
            try:
                s.batch_call(0, 1, [(2, 0, 100, "k")], 5000, pos=[bad])
            except redis.ResponseError as e:
                assert "bad filter position" in str(e), (bad, e)
            else:
                raise AssertionError(f"filter position {bad} accepted")
        assert s.snapshot() == before
        # A good batch writes one outbox entry for all its bets.
        s.grant(4, 1000)
        res = s.batch_call(0, 1, [(2, 0, 100, "k"), (4, 1, 200, "k")], 5000)
        assert codes(res) == ["ok", "ok"]
        evs = [f for _, f in s.c.xrange("tp:{b0}:outbox") if f["type"] == "bets"]
        assert len(evs) == 1 and evs[0]["bets"].count("\n") == 1, evs
        assert not s.c.exists("tp:{b0}:idem:1")  # the records are in the hot entries
        assert s.c.ttl("tp:{b0}:idemhot") == -1  # until the round's archival



def test_user_ids_are_canonical_decimals_whatever_the_buckets():
    """A user id is the caller's canonical decimal: with one bucket the script converts none to
    a number (it has no bucket to check), and still refuses every other spelling of one, the
    whole call raising before any write; with two the number's bucket is checked as well."""
    for buckets in (1, 2):
        with tpenv.Redis() as r:
            s = Side(r, buckets)
            s.grant(2, 1000)
            s.open_round(1)
            before = s.snapshot()
            for user in ("02", "1e3", "2.0", " 2", "2 ", "+2", "0x2", "-2", "0", "",
                         "2" * 16, "2:3"):
                try:
                    s.batch_call(0, 1, [(2, 0, 100, "k"), (user, 0, 100, "k")], 5000)
                except redis.ResponseError as e:
                    assert "bad user_id" in str(e), (user, e)
                else:
                    raise AssertionError(f"user id {user!r} accepted")
            assert s.snapshot() == before
            assert codes(s.batch_call(0, 1, [(2, 0, 100, "k"), (2 * 10**14, 0, 100, "j")],
                                      5000)) == ["ok", "insufficient_funds"]


def test_pool_and_net_are_one_write_each_per_batch():
    """The pool (every band of the batch and the total) is read once and written in one HSET,
    and the leaderboard takes one RPUSH of the call's stakes to its log (read as `net` less the
    log's sums): the same pool and net winnings as one HINCRBY and one ZINCRBY per bet
    (bet.lua), from values already there, across bands and players, with refusals in
    between."""
    def setup(s):
        for u in (1, 2, 5):
            s.grant(u, 10**6)
        s.open_round(5)
        s.c.hset("tp:{b0}:pool:5", mapping={"1": 500, "3": 7, "total": 507})
        s.c.zadd("tp:{b0}:net", {"1": 250, "2": -40})

    batches = [(5, 5000, [(1, 0, 100, "a"), (1, 1, 200, "b"), (1, 1, 300, "c")]),
               (5, 5000, [(2, 3, 100, "d"), (1, 0, 150, "e"), (2, 9, 100, "x"),
                          (5, 4, 400, "f"), (1, 0, 150, "e")]),
               (5, 5000, [(2, 0, 5, "y")])]
    answers, st = run_three(1, setup, batches)
    assert codes(answers) == ["ok", "ok", "ok", "ok", "ok", "invalid_band", "ok", "replay",
                              "invalid_stake"], codes(answers)
    assert st["tp:{b0}:pool:5"] == {"0": "250", "1": "1000", "3": "107", "4": "400",
                                    "total": "1757"}, st["tp:{b0}:pool:5"]
    assert st["tp:{b0}:net"] == [("1", -500.0), ("5", -400.0), ("2", -140.0)], st["tp:{b0}:net"]
    with tpenv.Redis() as r:
        s = Side(r, 1)
        setup(s)

        def calls():
            cs = s.c.info("commandstats")
            return {c: cs.get("cmdstat_" + c, {}).get("calls", 0)
                    for c in ("hincrby", "hset", "rpush", "zincrby", "zmscore", "zadd")}
        c0 = calls()
        for rid, now, bets in batches:
            s.batch_call(0, rid, bets, now)
        c1 = calls()
        # RPUSHes: one per band accepted in (2 + 3) and one of the stakes log a batch (2);
        # HSETs: balances, pool, hot index with the records (3 per batch); none for the refused
        # batch; `net` itself untouched.
        got = {c: c1[c] - c0[c] for c in c0}
        assert got == {"hincrby": 0, "hset": 2 * 3, "rpush": 2 + 3 + 2, "zincrby": 0,
                       "zmscore": 0, "zadd": 0}, got
        assert s.c.lrange("tp:{b0}:netlog", 0, -1) == ["1 600", "2 100 1 150 5 400"]


def test_malformed_pool_fails_the_call_before_any_write():
    """The pool is read before the bets are weighed and written back after (one HSET): a
    band's or the total's value that is not a number fails the whole call, and that failure
    comes before the first write. A band's value converted only while writing (after the
    sequence, balances and leaderboard) left the bets half admitted: balances debited with no
    bet, pool or record."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        for u in (1, 2):
            s.grant(u, 10**6)
        s.open_round(5)
        for field in ("0", "total"):
            s.c.hset("tp:{b0}:pool:5", mapping={"0": 100, "1": 40, "total": 140})
            s.c.hset("tp:{b0}:pool:5", field, "x")
            before = s.snapshot()
            for bets in ([(1, 0, 100, "a")], [(1, 1, 100, "b"), (2, 0, 200, "c")],
                         [(1, 0, 100, "a"), (2, 0, 200, "c")]):
                try:
                    s.batch_call(0, 5, bets, 5000)
                except redis.ResponseError:
                    pass
                else:
                    raise AssertionError(f"pool {field} 'x' accepted {bets}")
                assert s.snapshot() == before, (field, bets)
        # Bets on the other bands of such a pool are not its concern (as with HINCRBY).
        s.c.hset("tp:{b0}:pool:5", mapping={"0": "x", "1": 40, "total": 140})
        assert codes(s.batch_call(0, 5, [(1, 1, 100, "d")], 5000)) == ["ok"]
        assert s.c.hgetall("tp:{b0}:pool:5") == {"0": "x", "1": "140", "total": "240"}


def test_config_rules_are_read_only_for_a_round_without_its_own():
    """ARGV[3..5] (the config's band count and stake bounds) stand in only for a round whose
    copy predates per-round rules: malformed, they fail such a call whole, and are not read
    for a round that carries its own."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**6)
        s.open_round(1)  # no rules of its own
        s.open_round(2, nbands=3, stakes=(100, 1000))
        before = s.snapshot()
        for conf, text in (((0, 100, 1000), "bad band count"), (("x", 100, 1000), "bad band count"),
                           ((5, 0, 1000), "bad stake bounds"), ((5, 200, 100), "bad stake bounds"),
                           ((5, "01", 1000), "bad stake bounds")):
            try:
                s.batch_call(0, 1, [(1, 0, 100, "k")], 5000, conf=conf)
            except redis.ResponseError as e:
                assert text in str(e), (conf, e)
            else:
                raise AssertionError(f"config {conf} accepted")
        assert s.snapshot() == before
        res = s.batch_call(0, 2, [(1, 2, 1000, "k"), (1, 3, 100, "j"), (1, 0, 1001, "i")], 5000,
                           conf=("x", 0, 0))
        assert codes(res) == ["ok", "invalid_band", "invalid_stake"], res
        # A copy with some rules takes the rest from the config.
        s.c.hset("tp:{b0}:round:1:state", "nbands", 2)
        res = s.batch_call(0, 1, [(1, 1, 100000, "k1"), (1, 2, 100, "j1"), (1, 0, 99, "i1")],
                           5000)
        assert codes(res) == ["ok", "invalid_band", "invalid_stake"], res


def test_records_of_an_older_version_still_replay():
    """Until session 9 a record was "1|<request hash>|<bet_id>|<round_id>|<band>|<stake>|
    <balance>" (the hash: SHA-256 of "v1|<round_id>|<band>|<stake>"); a round hot at the
    upgrade keeps those. Such a record replays its answer for the same band and stake, and
    conflicts for another, as it did; the new ones are "<bet_id>|<band>|<stake>|<balance>"."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 1000)
        s.open_round(7)
        p = "tp:{b0}:"
        s.c.hset(p + "idem:7", "1:old", "1|%s|41|7|2|300|700" % canon_hash(7, 2, 300))
        s.c.hset(p + "idemhot", "1:old", "7:4000")
        res = s.batch_call(0, 7, [(1, 2, 300, "old"), (1, 2, 301, "old"), (1, 3, 300, "old"),
                                  (1, 2, 300, "new"), (1, 2, 300, "new"), (1, 2, 300, "old")],
                           5000)
        new_id = res[3][1]
        assert res == [["ok", 41, 7, 2, 300, 700, 1], ["err", "idempotency_conflict"],
                       ["err", "idempotency_conflict"], ["ok", new_id, 7, 2, 300, 700, 0],
                       ["ok", new_id, 7, 2, 300, 700, 1], ["ok", 41, 7, 2, 300, 700, 1]], res
        assert s.c.hgetall(p + "idem:7") == {"1:old": "1|%s|41|7|2|300|700" % canon_hash(7, 2, 300)}
        assert hot(s.c, p) == {"1:old": "7:4000", "1:new": "7:5000|%d|2|300|700" % new_id}
        assert s.c.hget(p + "bal", "1") == "700"
        # A record that names another round than its hash's is corrupt: the call fails whole.
        s.c.hset(p + "idem:7", "1:bad", "1|%s|42|8|2|300|700" % canon_hash(8, 2, 300))
        s.c.hset(p + "idemhot", "1:bad", "7:4000")
        before = s.snapshot()
        try:
            s.batch_call(0, 7, [(1, 2, 300, "bad")], 5000)
        except redis.ResponseError as e:
            assert "corrupt idempotency record" in str(e), e
        else:
            raise AssertionError("a corrupt record was answered")
        assert s.snapshot() == before


def test_records_are_read_from_hot_entries_and_old_ones_from_the_records_hash():
    """A key's record is in its hot index entry ("<round>:<ms>|<record>"), so a batch reads no
    records hash: not for new keys, nor for a key hot on another round, nor for a replay. Only
    an entry an older version wrote ("<round>:<ms>", its record in idem:<round>) makes the call
    read the records hash (one HMGET), and its replay is answered from there, byte for byte, the
    new keys beside it as before. A record with no entry (written by a version before the hot
    index) is not read: with the game paused across such an upgrade (docs/operations.md §4), its
    key is refused, not admitted again. Nothing is written to the records hash."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 100000)
        s.open_round(7)
        s.open_round(8)
        p = "tp:{b0}:"

        def hmgets(fn):
            def calls():
                return s.c.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
            before = calls()
            out = fn()
            return out, calls() - before

        # Hot index (its two parts), balances, exclusions, round copy, pool: 6 HMGETs (the
        # disabled flags only while some account is disabled:
        # test_disabled_flags_are_read_only_while_some_are).
        res, n = hmgets(lambda: s.batch_call(0, 7, [(1, 0, 100, "a"), (1, 1, 100, "b")], 5000))
        assert codes(res) == ["ok", "ok"] and n == 6, (res, n)
        res, n = hmgets(lambda: s.batch_call(0, 8, [(1, 0, 100, "a"), (1, 0, 100, "c")], 5000))
        assert codes(res) == ["idempotency_conflict", "ok"] and n == 6, (res, n)
        res, n = hmgets(lambda: s.batch_call(0, 7, [(1, 0, 100, "d"), (1, 1, 100, "b"),
                                                    (1, 1, 200, "a")], 5000))
        assert codes(res) == ["ok", "replay", "idempotency_conflict"] and n == 6, (res, n)
        assert s.c.hget(p + "bal", "1") == str(100000 - 4 * 100)
        assert not s.c.exists(p + "idem:7") and not s.c.exists(p + "idem:8")
        # An older version's entry and record: one more HMGET, the record's answer.
        s.c.hset(p + "idem:7", "1:was", "41|2|300|700")
        s.c.hset(p + "idemhot", "1:was", "7:4000")
        res, n = hmgets(lambda: s.batch_call(0, 7, [(1, 0, 100, "e"), (1, 2, 300, "was"),
                                                    (1, 1, 100, "b")], 5000))
        assert res[1:] == [["ok", 41, 7, 2, 300, 700, 1], ["ok", res[2][1], 7, 1, 100,
                                                           res[2][5], 1]] and n == 7, (res, n)
        assert codes(res)[0] == "ok"
        assert s.c.hgetall(p + "idem:7") == {"1:was": "41|2|300|700"}
        # A record with no hot entry: only a version before the hot index wrote one.
        s.c.hset(p + "idem:7", "1:old", "41|2|300|700")
        s.c.set(p + "paused", 1)
        res, n = hmgets(lambda: s.batch_call(0, 7, [(1, 2, 300, "old")], 5000))
        assert codes(res) == ["game_paused"] and n == 6, (res, n)
        assert s.c.hget(p + "bal", "1") == str(100000 - 5 * 100)


def test_disabled_flags_are_read_only_while_some_are():
    """The disabled accounts' hash exists only while some player of the bucket is disabled
    (account_flag.lua's HDEL of the last field drops it), so the one EXISTS that tells the rare
    states apart names it too (4 times: its count is told from the pause's and the old filters',
    at most 3) and its HMGET is made only while it exists. With the hash present, alone or with
    a pause or an old whole-window filter, a disabled player is refused and the others are not;
    once the last flag goes, no HMGET of it and the player bets again."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        for u in (1, 2):
            s.grant(u, 100000)
        s.open_round(7)
        p = "tp:{b0}:"

        def calls(cmd):
            return s.c.info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)

        def counted(fn):
            before = (calls("hmget"), calls("strlen"))
            out = fn()
            return out, calls("hmget") - before[0], calls("strlen") - before[1]

        # Hot index (two parts), balances, exclusions, round copy, pool: no disabled flags.
        res, hm, _ = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "a"), (2, 0, 100, "b")],
                                                  5000))
        assert codes(res) == ["ok", "ok"] and hm == 6, (res, hm)
        s.c.hset(p + "disabled", "2", 4000)
        res, hm, _ = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "c"), (2, 0, 100, "d"),
                                                         (2, 0, 100, "b")], 5000))
        assert codes(res) == ["ok", "account_disabled", "replay"] and hm == 7, (res, hm)
        # With an older version's per-day filter whole beside it: both are read (every bet the
        # filter decides is "check"), the shards' size too.
        s.raw.set(idemfilter.shard_key(p, 0, idemfilter.SHARDS - 1), b"\0" * 8)
        res, hm, sl = counted(lambda: s.batch_call(0, 7, [(2, 0, 100, "e"), (1, 0, 100, "f")],
                                                   5000))
        assert res == [["check"], ["check"]] and (hm, sl) == (7, 1), (res, hm, sl)
        s.raw.delete(idemfilter.shard_key(p, 0, idemfilter.SHARDS - 1))
        # With the pause: the pause answers first, as for one bet.
        s.c.set(p + "paused", 1)
        assert codes(s.batch_call(0, 7, [(2, 0, 100, "g"), (1, 0, 100, "h")], 5000)) == \
            ["game_paused", "game_paused"]
        s.c.delete(p + "paused")
        # The last flag goes: the hash with it, and the player bets again.
        s.c.hdel(p + "disabled", "2")
        assert not s.c.exists(p + "disabled")
        res, hm, _ = counted(lambda: s.batch_call(0, 7, [(2, 0, 100, "g")], 5000))
        assert codes(res) == ["ok"] and hm == 6, (res, hm)
        assert s.c.hget(p + "bal", "1") == str(100000 - 2 * 100)  # "f" was a "check"
        assert s.c.hget(p + "bal", "2") == str(100000 - 2 * 100)


def test_key_reused_on_another_round_conflicts():
    """A key is the player's for 24 h whatever the round: on another round it is another body
    (idempotency_conflict, no effect); on its own round it still replays; a refused bet leaves
    no index entry. The one-by-one reference agrees (its record is per user and key)."""
    def setup(s):
        for u in (1, 2):
            s.grant(u, 1000)
        s.open_round(7)
        s.open_round(8)

    batches = [(7, 5000, [(1, 0, 100, "a"), (2, 0, 100, "b"), (2, 0, 5000, "r")]),
               (8, 6000, [(1, 0, 100, "a"), (1, 0, 100, "c"), (2, 1, 200, "b"), (2, 0, 100, "d"),
                          (2, 0, 100, "r")]),
               (7, 7000, [(1, 0, 100, "a"), (1, 0, 100, "c"), (2, 0, 100, "d")]),
               (8, 8000, [(1, 0, 100, "c"), (1, 0, 100, "a")])]
    answers, st = run_three(1, setup, batches)
    assert codes(answers) == ["ok", "ok", "insufficient_funds",
                              "idempotency_conflict", "ok", "idempotency_conflict", "ok", "ok",
                              "replay", "idempotency_conflict", "idempotency_conflict",
                              "replay", "idempotency_conflict"], codes(answers)
    assert answers[8] == answers[0][:6] + [1] and answers[11] == answers[4][:6] + [1]
    assert st["tp:{b0}:bal"] == {"1": "800", "2": "700"}
    with tpenv.Redis() as r:
        s = Side(r, 1)
        setup(s)
        for rid, now, bets in batches:
            s.batch_call(0, rid, bets, now)
        assert hot_heads(s.c, "tp:{b0}:") == {"1:a": "7:5000", "2:b": "7:5000",
                                                  "1:c": "8:6000", "2:d": "8:6000",
                                                  "2:r": "8:6000"}
        # The hot index lives until archival, which writes the filter: bets neither write
        # nor create a filter shard, even with no leader to build the window.
        assert s.c.ttl("tp:{b0}:idemhot") == -1
        assert s.c.keys("tp:{b0}:idemfilter:*") == []


def test_hot_index_then_filter_cover_24_h_across_archival():
    """While a key's round is in Redis the hot index answers: a conflict on another round for
    24 h after the bet, a replay on its own. Archival removes exactly that round's entries that
    still name it; the key is then in the day's filter, and a bet with it on any round (its own
    included) is answered "check" with no effect (the server asks Postgres), through window
    w + 1. A key whose last use is 24 h old is new again."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10000)
        for rid in (7, 8, 9):
            s.open_round(rid)
        t0 = 5 * DAY - 1000  # a second before window 5
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0)) == ["ok"]
        for now in (t0 + 2000, t0 + DAY - 1):
            before = s.snapshot()
            assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], now)) == ["idempotency_conflict"]
            assert s.snapshot() == before
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0 + 5)) == ["replay"]
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY)) == ["ok"]
        assert hot_heads(s.c, "tp:{b0}:")["1:a"] == "8:%d" % (t0 + DAY)
        # Round 7's record is no longer the key's: the key names round 8 now.
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0 + DAY + 1)) == \
            ["idempotency_conflict"]
        # Archival of round 7 leaves the entry that names round 8.
        assert s.archive_index(0, 7, t0 + DAY + 5) == 0
        assert hot_heads(s.c, "tp:{b0}:")["1:a"] == "8:%d" % (t0 + DAY)
        now = t0 + DAY + 10  # window 5
        s.grant(2, 10000)
        assert codes(s.batch_call(0, 9, [(1, 0, 100, "b"), (2, 1, 100, "c"), (1, 2, 100, "d")],
                                  now)) == ["ok"] * 3
        s.c.hset("tp:{b0}:idemhot", "2:c", "8:%d" % now)  # as if "c" were reused on round 8
        assert s.archive_index(0, 9, now + 5) == 2
        assert hot_heads(s.c, "tp:{b0}:") == {"1:a": "8:%d" % (t0 + DAY),
                                                  "2:c": "8:%d" % now}
        assert s.archive_index(0, 9, now + 6) == 0  # a repeated step (kill -9): nothing more
        s.c.delete("tp:{b0}:idem:9", "tp:{b0}:round:9:state")
        before = s.snapshot()
        for rid, later in ((8, 1), (9, 2), (8, DAY - 20), (9, DAY - 20)):
            res = s.batch_call(0, rid, [(1, 0, 100, "b"), (1, 3, 100, "d")], now + later)
            assert res == [["check"], ["check"]], (rid, later, res)
        assert codes(s.batch_call(0, 9, [(1, 0, 100, "fresh")], now + 3)) == ["round_not_found"]
        assert s.snapshot() == before
        # Windows 6 and 7: 24 h after the bet, the key is new.
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "b")], 7 * DAY + 10)) == ["ok"]
        # A corrupt index entry is a bug: the whole call fails, nothing is written.
        s.c.hset("tp:{b0}:idemhot", "1:z", "junk")
        before = s.snapshot()
        try:
            s.batch_call(0, 8, [(1, 0, 100, "y"), (1, 0, 100, "z")], 7 * DAY + 20)
        except redis.ResponseError as e:
            assert "corrupt idempotency key index" in str(e), e
        else:
            raise AssertionError("corrupt index entry accepted")
        assert s.snapshot() == before


def test_archival_writes_the_filter_by_the_window_rule():
    """Bets only read the filter; archival's step (idem_unindex.lua) removes a key's hot entry
    and sets its bits at once, so a key is never in neither, into the window current at
    archival: found from then to the end of the next window, past its bet's 24 h. In the first
    10 minutes of a window the one before gets the bits too (for a worker whose clock lags),
    if it is whole. A window not whole makes the step wait (-1, nothing written); a key past
    its TTL leaves the index without bits."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**6)
        p = "tp:{b0}:"
        for rid in (7, 8, 9, 10, 11):
            s.open_round(rid)
        t = 5 * DAY + 1000  # the first second of day 5
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a"), (1, 1, 100, "b")], t)) == ["ok"] * 2
        # The filter not whole (its last shard missing): the step waits, nothing written.
        last = idemfilter.slot_key(p, idemfilter.SHARDS - 1)
        s.c.delete(last)
        before = (s.snapshot(), s.index())
        assert idemfilter.archive_index(s.c, s.unindex_sha, p, 0, 7, 5, two=True) == -1
        assert (s.snapshot(), s.index()) == before
        idemfilter.build(s.c, p, None, SHARD_BYTES)
        # Two minutes into day 5: days 5 and 4.
        assert s.archive_index(0, 7, t + 120000) == 2
        assert s.c.hgetall(p + "idemhot") == {}
        assert all(idemfilter.is_set(s.c, p, w, 1, k) for w in (4, 5) for k in ("a", "b"))
        assert not s.c.exists(p + "idem:7")  # the records left with their entries
        assert s.archive_index(0, 7, t + 130000) == 0  # repeated after a kill -9: nothing
        # A worker whose clock lags (day 4: reads 4 and 3), and one at the very end of day 6:
        # "check" (Postgres answers), nothing admitted; from day 7 on (24 h after the bet by
        # any clock) the key is new once the leader zeroed day 7's words (day 4's) during day 6.
        for now in (5 * DAY - 60000, t + 200000, 7 * DAY - 1):
            assert s.batch_call(0, 8, [(1, 0, 100, "a")], now) == [["check"]], now
        zero = load(s.c, "scripts", "lua", "idem_slots.lua")
        assert idemfilter.slots_zero(s.c, zero, p, 0, 6, 6 * DAY + 700000, DAY) == \
            idemfilter.SHARDS
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], 7 * DAY)) == ["ok"]
        # An hour into day 7: that day only.
        assert codes(s.batch_call(0, 9, [(1, 0, 100, "c")], 7 * DAY + 10)) == ["ok"]
        assert s.archive_index(0, 9, 7 * DAY + 3600000) == 1
        assert idemfilter.is_set(s.c, p, 7, 1, "c") and not idemfilter.is_set(s.c, p, 6, 1, "c")
        # Day 8's first minute (its words, day 5's, zeroed during day 7): days 8 and 7, in the
        # same shard.
        assert idemfilter.slots_zero(s.c, zero, p, 0, 7, 7 * DAY + 700000, DAY) == \
            idemfilter.SHARDS
        assert codes(s.batch_call(0, 10, [(1, 0, 100, "d")], 8 * DAY + 10)) == ["ok"]
        assert idemfilter.archive_index(s.c, s.unindex_sha, p, 0, 10, 8, two=True) == 1
        assert idemfilter.is_set(s.c, p, 8, 1, "d") and idemfilter.is_set(s.c, p, 7, 1, "d")
        # A bet older than the TTL and the slack (since_ms) leaves the index without bits.
        assert codes(s.batch_call(0, 11, [(1, 0, 100, "e")], 8 * DAY + 20)) == ["ok"]
        assert idemfilter.archive_index(s.c, s.unindex_sha, p, 0, 11, 8,
                                        since=8 * DAY + 21) == 1
        assert hot_heads(s.c, p) == {"1:a": "8:%d" % (7 * DAY)}
        assert not idemfilter.is_set(s.c, p, 8, 1, "e")
        # Malformed steps raise before any write.
        good = ["1:a", *idemfilter.pos(1, "a")]
        shard = good[3]
        keys = [p + "idemhot", p + "idemyoung", idemfilter.slot_key(p, 0),
                idemfilter.slot_key(p, 1023), idemfilter.slot_key(p, shard), p + "idem:8"]
        for ks, argv, text in (
                (keys, [8, 0, 8, 1, 0, 1] + good, None),
                (keys, [8, 1, 8, 1, 0, 1] + good, "key layout"),
                (keys, [8, 0, 8, 3, 0, 1] + good, "bad window count"),
                (keys, [8, 0, 8, 1, 0, 2] + good, "want 6 + 4n"),
                (keys, ["08", 0, 8, 1, 0, 1] + good, "bad round_id"),
                (keys, [8, 0, "08", 1, 0, 1] + good, "bad window"),
                (keys, [8, 0, 8, 1, "x", 1] + good, "bad since_ms"),
                (keys, [8, 0, 8, 1, 0, 1, "a"] + good[1:], "bad field"),
                (keys, [8, 0, 8, 1, 0, 1, good[0], 2**32, good[2], shard], "filter position"),
                (keys, [8, 0, 8, 1, 0, 1, good[0], good[1], 0, shard], "filter position"),
                (keys, [8, 0, 8, 1, 0, 1, good[0], good[1], good[2], 1024], "filter position"),
                (keys[:4] + [idemfilter.slot_key(p, (int(shard) + 1) % 1024), keys[5]],
                 [8, 0, 8, 1, 0, 1] + good, "bucket/shard"),
                (keys[:5] + [p + "idem:7"], [8, 0, 8, 1, 0, 1] + good, "key layout"),
                (keys[:1] + [p + "idemhot"] + keys[2:], [8, 0, 8, 1, 0, 1] + good, "key layout"),
                (keys[:4] + keys[5:], [8, 0, 8, 1, 0, 1] + good, "want 4 + shards")):
            before = (s.snapshot(), s.index())
            if text is None:
                assert s.c.evalsha(s.unindex_sha, len(ks), *ks, *argv) == 1  # round 8 owns 1:a
                continue
            try:
                s.c.evalsha(s.unindex_sha, len(ks), *ks, *argv)
            except redis.ResponseError as e:
                assert text in str(e), (text, e)
            else:
                raise AssertionError(f"accepted: {text}")
            assert (s.snapshot(), s.index()) == before


def test_corrupt_entry_refuses_the_step_before_any_write():
    """An entry naming the round whose placed time is not a number refuses the whole
    idem_unindex.lua step ("ERR tp_idem_unindex: corrupt ...", which archival takes as a refusal:
    it leaves the round in Redis) with nothing written: the other keys' entries, the filter, and
    an older version's records hash (the step used to empty it before reading the entries, so
    the refusal left those entries with no record). Mended, the step goes through."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**6)
        p = "tp:{b0}:"
        s.open_round(7)
        t = 5 * DAY + 3600000
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a"), (1, 1, 100, "b")], t)) == ["ok"] * 2
        # As an older version kept them: the records in round 7's records hash.
        big = s.c.hgetall(p + "idemhot")
        for f, v in big.items():
            head, rec = v.split("|", 1)
            s.c.hset(p + "idem:7", f, rec)
            s.c.hset(p + "idemhot", f, head)
        s.c.hset(p + "idemhot", "1:b", "7:x")
        idemfilter.build(s.c, p, 5, SHARD_BYTES)
        before = (s.snapshot(), s.index(), s.c.hgetall(p + "idem:7"))
        try:
            idemfilter.unindex(s.c, s.unindex_sha, p, 0, 7, ["1:a", "1:b"], 5)
        except redis.ResponseError as e:
            assert str(e).startswith("tp_idem_unindex: corrupt idempotency key index entry") \
                or "ERR tp_idem_unindex: corrupt" in str(e), e
        else:
            raise AssertionError("a corrupt entry accepted")
        assert (s.snapshot(), s.index(), s.c.hgetall(p + "idem:7")) == before
        s.c.hset(p + "idemhot", "1:b", big["1:b"].split("|", 1)[0])
        assert idemfilter.unindex(s.c, s.unindex_sha, p, 0, 7, ["1:a", "1:b"], 5) == 2
        assert hot(s.c, p) == {} and not s.c.exists(p + "idem:7")
        assert all(idemfilter.is_set(s.c, p, 5, 1, k) for k in ("a", "b"))


def test_false_positive_is_checked_then_admitted_once():
    """A filter too small for its keys says "maybe" for a key never used: that bet is answered
    "check" with no effect, the others of its batch as usual; sent again with the skip flag
    (Postgres held no bet of the key) it is admitted once, and its replay and conflict then
    come from the records as for any bet. A filter keeps the size it was created with."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 100000)
        s.open_round(7)
        for k in s.c.keys("tp:{b0}:idemslots:*"):
            s.c.delete(k)
        idemfilter.build(s.c, "tp:{b0}:", 0, 12)  # the leader's, one triple of words a shard
        for i in range(0, 100, 20):
            res = s.batch_call(0, 7, [(1, 0, 100, "k%d" % j) for j in range(i, i + 20)], 5000,
                               skip=1)
            assert codes(res) == ["ok"] * 20, res
        assert s.c.strlen(idemfilter.slot_key("tp:{b0}:", 0)) == 12
        # Every bit of every one-triple shard set: any key is a "maybe".
        for shard in range(idemfilter.SHARDS):
            s.raw.set(idemfilter.slot_key("tp:{b0}:", shard), b"\xff" * 12)
        # (What a reader sees, not DUMP: reading a hash table mid-rehash reorders its DUMP.)
        before = (s.state(), s.index())
        res = s.batch_call(0, 7, [(1, 0, 100, "new"), (1, 1, 100, "k3"), (1, 2, 100, "k4")], 5000)
        assert res[0] == ["check"], res
        assert codes(res[1:]) == ["idempotency_conflict", "idempotency_conflict"], res
        assert (s.state(), s.index()) == before
        res = s.batch_call(0, 7, [(1, 0, 100, "new")], 5000, skip=1)
        assert codes(res) == ["ok"] and res[0][5] == 100000 - 101 * 100, res
        assert s.batch_call(0, 7, [(1, 0, 100, "new")], 5001) == [res[0][:6] + [1]]
        assert codes(s.batch_call(0, 7, [(1, 1, 100, "new")], 5002)) == ["idempotency_conflict"]
        assert s.c.hget("tp:{b0}:bal", "1") == str(100000 - 101 * 100)
        assert s.c.strlen(idemfilter.slot_key("tp:{b0}:", idemfilter.pos(1, "new")[2])) == 12


def test_caller_offsets_read_the_words_the_script_would():
    """With ARGV[10] "0:<bytes>" each position carries its triple's byte range in shards of
    that size: shards that have it are read at that range, shards of another size (built before
    a configuration change) at the range the script formats from the word. Malformed flags are
    caller bugs."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 100000)
        s.open_round(7)
        p, now = "tp:{b0}:", 5 * DAY + 5000
        old, young = ["old%d" % i for i in range(3)], ["young%d" % i for i in range(3)]
        for x, keys in ((4, old), (5, young)):
            for k in keys:  # archived on day x, as idem_unindex.lua sets them
                word, mask, shard = idemfilter.pos(1, k)
                s.c.execute_command("BITFIELD", idemfilter.slot_key(p, shard), "SET", "u32",
                                    idemfilter.day_bit(word, SHARD_BYTES, x), mask)
        bets = [(1, 0, 100, k) for k in old + young]
        before = s.snapshot()
        for offsets in (SHARD_BYTES, 2 * SHARD_BYTES, None):
            res = s.batch_call(0, 7, bets, now, offsets=offsets)
            assert res == [["check"]] * 6, (offsets, res)
            assert s.snapshot() == before
        # The caller's ranges are the ones read: wrong ones (the next triple) for the shards'
        # size miss every key, yesterday's and today's; for another size the script's own are.
        wrong = []
        for _, _, _, k in bets:
            word = idemfilter.pos(1, k)[0]
            wrong.append([idemfilter.pos_argv(1, k)[0] + idemfilter.range_tail(
                idemfilter.byte_offset(word + 1, SHARD_BYTES))])
        res = s.batch_call(0, 7, bets[:3], now, pos=wrong[:3], offsets=2 * SHARD_BYTES)
        assert res == [["check"]] * 3, res
        res = s.batch_call(0, 7, bets + [(1, 1, 100, "new")], now, pos=wrong + [
            idemfilter.pos_argv(1, "new", SHARD_BYTES)], offsets=SHARD_BYTES)
        assert codes(res) == ["ok"] * 7, res
        for flag in ("0:6", "1:8", "0:x", "0:0", "2", "0:16"):
            ks = [p + "bal", p + "idem:7", p + "round:7:state", p + "pool:7", p + "outbox",
                  p + "seq", p + "netlog", p + "excl", p + "paused", p + "disabled", p + "idemhot"]
            ks += idemfilter.window_keys(p, 5) + [p + "idemyoung", p + "betl:7:0", p + "ubets:1"]
            tail, per = idemfilter.batch_tail(p, 5, [(1, "z")])
            try:
                s.c.evalsha(s.batch_sha, len(ks + tail), *ks, *tail, 7, now, NBANDS, MIN_STAKE,
                            MAX_STAKE, TTL, 0, 1, 1, flag, 1, 0, 100, "z", *per[0])
            except redis.ResponseError as e:
                assert "bad filter flag" in str(e), (flag, e)
            else:
                raise AssertionError(f"flag {flag} accepted")
        # A position without its offset when the flag promises one.
        try:
            s.batch_call(0, 7, [(1, 0, 100, "z")], now, pos=[idemfilter.pos_argv(1, "z")],
                         offsets=SHARD_BYTES)
        except redis.ResponseError as e:
            assert "bad filter position" in str(e), e
        else:
            raise AssertionError("position without its offset accepted")
        # A byte range that is no range: its length byte 0 or past the end, no last byte (the
        # script's check), or not decimals (GETRANGE's own error, raised by redis.call); each
        # raises before any write.
        head = idemfilter.pos_argv(1, "z")[0]
        before = s.snapshot()
        for tail, text in ((b"\0" + b"1" + b"4", "bad filter position"),
                           (b"\x05" + b"12" + b"15", "bad filter position"),
                           (b"\x02" + b"12", "bad filter position"),
                           (b"\x01" + b"x" + b"4", "not an integer"),
                           (b"\x01" + b"1" + b"y", "not an integer")):
            try:
                s.batch_call(0, 7, [(1, 0, 100, "z")], now, pos=[[head + tail]],
                             offsets=SHARD_BYTES)
            except redis.ResponseError as e:
                assert text in str(e), (tail, e)
            else:
                raise AssertionError(f"byte range {tail!r} accepted")
        assert s.snapshot() == before


def test_rare_states_are_read_only_when_present():
    """The pause and an older version's per-day filter are told apart from the usual case (none
    of them) by one EXISTS; then each one is read: a pause alone refuses new bets, an older
    per-day filter whole makes every bet the filter decides "check", both at once each do their
    part (the filter's answer first, as for one bet), and a replay is answered whatever they
    say. The shards' size is read only when some bet needs it: not with the skip flag, not when
    every key has a record."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 100000)
        s.open_round(7)
        p = "tp:{b0}:"
        marker = idemfilter.shard_key(p, 0, idemfilter.SHARDS - 1)

        def calls(cmd):
            return s.c.info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)

        def counted(fn):
            before = (calls("exists"), calls("strlen"))
            out = fn()
            return out, calls("exists") - before[0], calls("strlen") - before[1]

        res, ex, sl = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "a")], 5000))
        assert codes(res) == ["ok"] and (ex, sl) == (1, 1), (res, ex, sl)
        res, ex, sl = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "b")], 5000, skip=1))
        assert codes(res) == ["ok"] and (ex, sl) == (1, 0), (res, ex, sl)
        res, ex, sl = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "a"), (1, 0, 100, "b")],
                                                   5000))
        assert codes(res) == ["replay", "replay"] and (ex, sl) == (1, 0), (res, ex, sl)
        # An older per-day filter of today whole: "check"; not a pause.
        s.raw.set(marker, b"\0" * 8)
        res, ex, sl = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "c")], 5000))
        assert res == [["check"]] and (ex, sl) == (3, 1), (res, ex, sl)
        # With the pause too, the filter answers first.
        s.c.set(p + "paused", 1)
        res = s.batch_call(0, 7, [(1, 0, 100, "d"), (1, 0, 100, "a")], 5000)
        assert res[0] == ["check"] and codes(res[1:]) == ["replay"], res
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "d")], 5000, skip=1)) == ["game_paused"]
        # The pause alone.
        s.raw.delete(marker)
        res = s.batch_call(0, 7, [(1, 0, 100, "d"), (1, 0, 100, "a")], 5000)
        assert codes(res) == ["game_paused", "replay"], res
        s.c.delete(p + "paused")
        res, ex, sl = counted(lambda: s.batch_call(0, 7, [(1, 0, 100, "d")], 5000))
        assert codes(res) == ["ok"] and (ex, sl) == (1, 1), (res, ex, sl)
        assert s.c.hget(p + "bal", "1") == str(100000 - 3 * 100)


def test_mid_archival_a_key_is_in_its_hot_entry_or_the_filter():
    """Archival steps through the round's keys (Postgres's list of its bets), each step moving
    its keys from the hot index, whose entries carry their records, to the filter: mid-archival
    a replay is answered from its hot entry (not yet stepped) or via the filter and Postgres
    ("check"), never admitted again; a repeated step does nothing more."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**9)
        s.open_round(7)
        p, n = "tp:{b0}:", 600
        keys = ["k%d" % i for i in range(n)]
        first = s.batch_call(0, 7, [(1, i % NBANDS, 100, k) for i, k in enumerate(keys)], 5000)
        assert codes(first) == ["ok"] * n
        w = 6000 // DAY
        idemfilter.build(s.c, p, w, SHARD_BYTES)
        fields = idemfilter.round_keys(s.c, p, 7)
        assert fields == ["1:" + k for k in keys]
        stepped = set(keys[:256])
        assert idemfilter.unindex(s.c, s.unindex_sha, p, 0, 7, fields[:256], w) == 256
        assert idemfilter.unindex(s.c, s.unindex_sha, p, 0, 7, fields[:256], w) == 0
        assert s.c.hlen(p + "idemhot") == n - 256 and not s.c.exists(p + "idemyoung")
        before = s.snapshot()
        again = s.batch_call(0, 7, [(1, i % NBANDS, 100, k) for i, k in enumerate(keys)], 6000)
        for k, a, b in zip(keys, first, again):
            if k in stepped:
                assert b == ["check"], (k, b)
            else:
                assert b == a[:6] + [1], (k, a, b)
        assert s.snapshot() == before  # nothing admitted, nothing debited
        assert idemfilter.archive_index(s.c, s.unindex_sha, p, 0, 7, w, count=256) == n - 256
        assert hot(s.c, p) == {}
        assert all(idemfilter.is_set(s.c, p, w, 1, k) for k in keys)
        assert s.batch_call(0, 7, [(1, 0, 100, k) for k in keys], 7000) == [["check"]] * n


def test_upgrade_round_of_old_records_replays_and_archives():
    """A round an older version admitted bets to (records in idem:<round>, plain hot entries
    "<round>:<ms>") and this one goes on admitting: the old bets replay byte for byte from
    their records, the new ones from their entries, a mixed batch of both and new keys answers
    as before; archival (the round's keys from Postgres's list) removes both kinds of entry,
    sets every key's filter bits and empties the records hash; the replays then go to the
    filter and Postgres ("check")."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**6)
        s.grant(2, 10**6)
        s.open_round(7)
        p = "tp:{b0}:"
        # What the older bet_batch.lua left: its record and plain entry per key, its outbox.
        for f, rec in (("1:o1", "11|0|100|999900"), ("2:o2", "12|1|200|999800")):
            s.c.hset(p + "idem:7", f, rec)
            s.c.hset(p + "idemhot", f, "7:4000")
        res = s.batch_call(0, 7, [(1, 0, 100, "n1"), (1, 0, 100, "o1"), (2, 1, 200, "o2"),
                                  (2, 1, 201, "o2"), (1, 0, 100, "n1")], 5000)
        n1 = res[0][1]
        assert res == [["ok", n1, 7, 0, 100, 10**6 - 100, 0], ["ok", 11, 7, 0, 100, 999900, 1],
                       ["ok", 12, 7, 1, 200, 999800, 1], ["err", "idempotency_conflict"],
                       ["ok", n1, 7, 0, 100, 10**6 - 100, 1]], res
        assert hot(s.c, p)["1:n1"] == "7:5000|%d|0|100|%d" % (n1, 10**6 - 100)
        again = s.batch_call(0, 7, [(2, 1, 200, "o2"), (1, 0, 100, "n1"), (1, 0, 100, "o1")],
                             5500)
        assert again == [res[2], res[4], res[1]], again
        w = 6000 // DAY
        idemfilter.build(s.c, p, w, SHARD_BYTES)
        assert idemfilter.archive_index(s.c, s.unindex_sha, p, 0, 7, w, count=2) == 3
        assert hot(s.c, p) == {} and not s.c.exists(p + "idem:7")
        assert all(idemfilter.is_set(s.c, p, w, u, k) for u, k in ((1, "o1"), (2, "o2"),
                                                                     (1, "n1")))
        assert s.batch_call(0, 7, [(1, 0, 100, "o1"), (1, 0, 100, "n1")], 7000) == \
            [["check"], ["check"]]
        assert s.c.hget(p + "bal", "1") == str(10**6 - 100)


def test_filter_holds_the_documented_bits():
    """The filter's layout (scripts/lua/README.md): for "<user_id>:<key>" with SHA-1 bytes h,
    shard int(h[8:12]) mod 1024, triple int(h[0:4]) mod the shard's triples of words, in it day
    d's word (d mod 3), bits x mod 32, x / 32 mod 32, ... (5 of them) of x = int(h[4:8]), all
    big-endian, word values as BITFIELD u32 reads them. Only archived bets are added (archival
    writes the filter, bets never do), in shards of the size the leader built them with."""
    with tpenv.Redis() as r:
        s = Side(r, 2)
        for u in (1, 3):
            s.grant(u, 10**6)
        s.open_round(7)
        keys = [(u, "k%d" % i) for i in range(40) for u in (1, 3)]
        # The leader built the filter with 48-byte shards (another configuration than ours).
        for k in s.c.keys("tp:{b1}:idemslots:*"):
            s.c.delete(k)
        idemfilter.build(s.c, "tp:{b1}:", 0, 48)
        res = s.batch_call(1, 7, [(u, i % NBANDS, 100, k) for i, (u, k) in enumerate(keys)] +
                           [(1, 0, 10**7, "refused")], 5000)
        assert codes(res) == ["ok"] * 80 + ["invalid_stake"], codes(res)
        assert set(s.raw.get(k) for k in s.c.keys("tp:{b1}:idemslots:*")) == {bytes(48)}
        assert s.archive_index(1, 7, 6000, count=7) == 80
        want = {}
        for u, k in keys + [(3, "later")]:
            h = hashlib.sha1(f"{u}:{k}".encode()).digest()
            shard = int.from_bytes(h[8:12], "big") % 1024
            # Day 0's word of the triple: its first 4 bytes.
            w, x = int.from_bytes(h[0:4], "big") % 4 * 12, int.from_bytes(h[4:8], "big")
            buf = want.setdefault(shard, bytearray(48))
            word = int.from_bytes(buf[w:w + 4], "big")
            for _ in range(5):
                word |= 1 << (x % 32)
                x //= 32
            buf[w:w + 4] = word.to_bytes(4, "big")
            if (u, k) == (3, "k39"):
                got = {int(k.split(":")[-1]): s.raw.get(k)
                       for k in s.c.keys("tp:{b1}:idemslots:*")}
                assert got == {sh: bytes(want.get(sh, bytearray(48))) for sh in range(1024)}
        # A later bet and archival step OR its bits into the words already there; the keys
        # archived before left the records with their hot entries, so the step sees only it.
        assert codes(s.batch_call(1, 7, [(3, 0, 100, "later")], 7000, skip=1)) == ["ok"]
        assert s.archive_index(1, 7, 8000) == 1
        got = {int(k.split(":")[-1]): s.raw.get(k) for k in s.c.keys("tp:{b1}:idemslots:*")}
        assert got == {sh: bytes(want.get(sh, bytearray(48))) for sh in range(1024)}


def test_leader_built_window_allocates_nothing_in_bets():
    """idem_slots.lua's build, the leader's steps: shard 0 first with the step's size, every
    other shard with shard 0's whatever a later step says, an existing shard left alone (a
    repeated step after a kill -9 creates nothing), no expiry; a probe tells whether the last
    shard exists. Bets create nothing (no SETRANGE) and set no bit; archival sets their bits in
    the built shards, creating nothing either. (Malformed steps: tests/integ/test_idem_slots.py.)"""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        sha = load(s.c, "scripts", "lua", "idem_slots.lua")
        p = "tp:{b0}:"
        for k in s.c.keys(p + "idemslots:*"):
            s.c.delete(k)
        assert idemfilter.slots_probe(s.c, sha, p, 0, 1)[0] == 0
        assert idemfilter.slots_build(s.c, sha, p, 0, 1, 192, range(0, 512)) == 512
        s.raw.setrange(idemfilter.slot_key(p, 5), 0, b"\x01")  # an archived bit
        assert idemfilter.slots_build(s.c, sha, p, 0, 1, 192, range(0, 512)) == 0
        # another configuration: shard 0's size still
        assert idemfilter.slots_build(s.c, sha, p, 0, 1, 384, range(512, 1023)) == 511
        assert idemfilter.slots_probe(s.c, sha, p, 0, 1)[0] == 0
        assert idemfilter.slots_build(s.c, sha, p, 0, 1, 192, [1023]) == 1
        assert idemfilter.slots_probe(s.c, sha, p, 0, 1)[0] == 1
        assert {s.c.pttl(idemfilter.slot_key(p, x)) for x in range(1024)} == {-1}
        assert {s.c.strlen(idemfilter.slot_key(p, x)) for x in range(1024)} == {192}
        assert s.raw.getrange(idemfilter.slot_key(p, 5), 0, 0) == b"\x01"
        s.grant(1, 10**6)
        s.open_round(7)

        def calls(cmd):
            return s.c.info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)
        before = calls("setrange")
        keys = ["k%d" % i for i in range(60)]
        res = s.batch_call(0, 7, [(1, 0, 100, k) for k in keys], 5000)
        assert codes(res) == ["ok"] * 60, res
        assert not any(idemfilter.is_set(s.c, p, 0, 1, k) for k in keys)
        assert s.archive_index(0, 7, 6000, count=16) == 60
        assert calls("setrange") == before
        assert {s.c.strlen(idemfilter.slot_key(p, x)) for x in range(1024)} == {192}
        assert all(idemfilter.is_set(s.c, p, 0, 1, k) for k in keys)
        assert not idemfilter.is_set(s.c, p, 0, 1, "never")


def test_history_is_one_lpush_per_player_per_batch():
    """A batch writes each player's history list once (one LPUSH of all their bets, newest
    first as one LPUSH per bet would leave it) and trims it once, back to the newest 50, only
    when it went over 75 (player 3 from 999, player 4 from 61 to 76), so a player betting once
    per call costs an LTRIM every 26th bet; players 1, 2 (15) and 5 (60 to 75) are not
    trimmed."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        for u in (1, 2, 3, 4, 5):
            s.grant(u, 10**9)
        s.open_round(7)
        s.c.rpush("tp:{b0}:ubets:3", *["0:1:0:100"] * 999)
        s.c.rpush("tp:{b0}:ubets:4", *["0:1:0:100"] * 61)
        s.c.rpush("tp:{b0}:ubets:5", *["0:1:0:100"] * 60)

        def calls(cmd):
            return s.c.info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)
        before = {c: calls(c) for c in ("lpush", "ltrim")}
        bets = [(u, i % NBANDS, 100 + i, f"h{i}") for i in range(15) for u in (1, 2, 3, 4, 5)]
        res = s.batch_call(0, 7, bets, 5000)
        assert codes(res) == ["ok"] * 75, res
        assert calls("lpush") - before["lpush"] == 5
        assert calls("ltrim") - before["ltrim"] == 2  # players 3 and 4
        mine = [f"{a[1]}:7:{a[3]}:{a[4]}" for a, (u, _, _, _) in zip(res, bets) if u == 1]
        assert s.c.lrange("tp:{b0}:ubets:1", 0, -1) == mine[::-1]
        assert [s.c.llen("tp:{b0}:ubets:%d" % u) for u in (2, 3, 4, 5)] == [15, 50, 50, 75]
        for u in (3, 4, 5):
            assert s.c.lrange("tp:{b0}:ubets:%d" % u, 0, 14) == [
                f"{a[1]}:7:{a[3]}:{a[4]}" for a, (x, _, _, _) in zip(res, bets) if x == u][::-1]
        res = s.batch_call(0, 7, [(5, 0, 100, "h-next")], 5000)
        assert codes(res) == ["ok"] and s.c.llen("tp:{b0}:ubets:5") == 50
        assert s.c.lindex("tp:{b0}:ubets:5", 0) == f"{res[0][1]}:7:0:100"


def script_chunk():
    """bet_batch.lua's PROMOTE_CHUNK, read from the script: its one home."""
    with open(os.path.join(SRC, "scripts", "lua", "bet_batch.lua")) as f:
        return int(re.search(r"^local PROMOTE_CHUNK = '(\d+)'", f.read(), re.M).group(1))


PROMOTE_CHUNK = script_chunk()


def parts(c, p):
    """The hot key index's two parts of bucket prefix p: (big, young) as dicts."""
    return c.hgetall(p + "idemhot"), c.hgetall(p + "idemyoung")


def slow_child(c):
    """A real fork child that runs ~3 s and ends by itself: 30 pad keys, and the delay spread
    over every key (the filter's 1,024 shards a bucket are keys too); .running() while it runs,
    .end() waits for its exit."""
    return tpenv.SlowForkChild(c, delay_s=3.0 / (c.dbsize() + 30), pad=30).start()


def test_young_part_across_a_child_and_its_promotion_answers_as_one_by_one():
    """Without a fork child bets insert into the big part. While a child runs they insert into
    the young part (the big part is not written), and after it each call moves PROMOTE_CHUNK
    young entries (or the rest) into the big part (its own bets going to the big part unless
    their field has a young entry), each chunk whole: every entry in exactly one part. Replays
    and conflicts of keys in either part, before, during and after the child and across the promotions, answer
    as the same bets one by one (the reference bet.lua), with the same state."""
    players, rnd = 30, random.Random(27)
    accepted, batches = [], []

    def batch(rid, now, size):
        bets = []
        for _ in range(size):
            x = rnd.random()
            if accepted and x < 0.15:  # a replay, or a conflict (stake, round) of an earlier key
                u, band, stake, key = rnd.choice(accepted)
                if x < 0.02:
                    batches.append((8 if rid == 7 else 7, now, [(u, band, stake, key)]))
                    continue
                bets.append((u, band, stake + (100 if x < 0.05 else 0), key))
            else:
                b = (rnd.randint(1, players), rnd.randrange(NBANDS), 100 * rnd.randint(1, 5),
                     "k%d" % len(accepted))
                accepted.append(b)
                bets.append(b)
        batches.append((rid, now, bets))

    for j in range(30):
        batch(7, 5000 + j, 100)
        if j in (7, 19):
            batches.append("child" if j == 7 else "end")
    batches += [(7, 6000, accepted[i:i + 100]) for i in range(0, len(accepted), 100)]
    with tpenv.Redis() as r0, tpenv.Redis() as r1:
        s0, s1 = Side(r0, 1), Side(r1, 1)
        for s in (s0, s1):
            for u in range(1, players + 1):
                s.grant(u, 10**9)
            s.open_round(7)
            s.open_round(8)
        p, a0, a1, seen_young = "tp:{b0}:", [], [], 0
        for item in batches:
            if item == "child":
                child = slow_child(s0.c)
                big_at_fork = s0.c.hlen(p + "idemhot")
                continue
            if item == "end":
                assert child.running(), "the child ended early"
                assert s0.c.hlen(p + "idemhot") == big_at_fork  # nothing written there
                seen_young = s0.c.hlen(p + "idemyoung")
                child.end()
                continue
            rid, now, bets = item
            a0 += s0.batch_call(0, rid, bets, now)
            a1 += [s1.one(rid, b, now) for b in bets]
            big, young = parts(s0.c, p)
            assert not set(big) & set(young)
        assert seen_young > 1000, seen_young
        assert a0 == a1, [x for x in zip(a0, a1) if x[0] != x[1]][:5]
        assert s0.state() == s1.state(), diff(s0.state(), s1.state())
        big, young = parts(s0.c, p)
        assert young == {} and set(big) == {"%d:%s" % (u, k) for u, _, _, k in accepted}
        assert {"ok", "replay", "idempotency_conflict"} <= set(codes(a0))


def test_promotion_waits_for_a_fork_child():
    """While a fork child runs (here a BGSAVE slowed by rdb-key-save-delay) no call writes into
    the big part: the young part takes the entries. After the child's exit each call promotes
    a chunk (its own entries go into the big part) until the young part is empty, in fewer calls
    than its entries over PROMOTE_CHUNK. Replays are answered throughout."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**9)
        s.open_round(7)
        p = "tp:{b0}:"

        def bets(j):
            return [(1, 0, 100, "a%d" % (100 * j + i)) for i in range(100)]

        for j in range(11):
            assert codes(s.batch_call(0, 7, bets(j), 5000)) == ["ok"] * 100
        assert s.c.hlen(p + "idemhot") == 1100 and not s.c.exists(p + "idemyoung")
        child = slow_child(s.c)
        for j in range(11, 25):
            assert codes(s.batch_call(0, 7, bets(j), 5000)) == ["ok"] * 100
        assert codes(s.batch_call(0, 7, bets(3) + bets(20), 5001)) == ["replay"] * 200
        assert child.running(), "the child ended early"
        assert s.c.hlen(p + "idemhot") == 1100 and s.c.hlen(p + "idemyoung") == 1400
        child.end()
        assert codes(s.batch_call(0, 7, bets(25), 5002)) == ["ok"] * 100
        big, young = parts(s.c, p)
        assert 1400 - len(young) >= PROMOTE_CHUNK and young, len(young)
        assert not set(young) & {"1:a%d" % (2500 + i) for i in range(100)}  # its own: big
        assert len(big) + len(young) == 2600 and not set(big) & set(young)
        calls = 0
        for j in range(26, 40):
            if not s.c.exists(p + "idemyoung"):
                break
            calls += 1
            assert codes(s.batch_call(0, 7, bets(j), 5003)) == ["ok"] * 100
            assert s.c.hlen(p + "idemhot") + s.c.hlen(p + "idemyoung") == 2600 + 100 * calls
        assert not s.c.exists(p + "idemyoung") and 1 <= calls <= 1400 // PROMOTE_CHUNK, calls
        assert s.c.hlen(p + "idemhot") == 2600 + 100 * calls
        assert codes(s.batch_call(0, 7, bets(12) + bets(25), 5004)) == ["replay"] * 200


def test_a_key_in_both_parts_answers_from_the_young_one_and_leaves_with_it():
    """A key's entry can be in both parts only after its reuse past the TTL while a child runs
    (or before the promotion after it): the older one in the big part, the newer in the young
    one. The young one answers (a replay on its round, a conflict elsewhere). Archival of the
    newer round removes both, so the key is then the filter's (and Postgres's: "check"), never
    admitted again within the TTL of its bet; archival of the older round then finds nothing."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**6)
        s.open_round(7)
        s.open_round(8)
        p, t0 = "tp:{b0}:", 5 * DAY + 1000
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0)) == ["ok"]
        assert s.c.hget(p + "idemhot", "1:a").startswith("7:%d|" % t0)
        child = slow_child(s.c)
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY - 1)) == \
            ["idempotency_conflict"]
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY)) == ["ok"]
        big, young = parts(s.c, p)
        assert big["1:a"].startswith("7:%d|" % t0) and young["1:a"].startswith("8:%d|" % (t0 + DAY))
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a"), (1, 0, 200, "a")], t0 + DAY + 1)) == \
            ["replay", "idempotency_conflict"]
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0 + DAY + 2)) == \
            ["idempotency_conflict"]
        assert s.archive_index(0, 8, t0 + DAY + 5, since=t0 + 5) == 1
        assert parts(s.c, p) == ({}, {})
        assert s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY + 10) == [["check"]]
        assert s.archive_index(0, 7, t0 + DAY + 20, since=t0 + 5) == 0
        assert child.running(), "the child ended early"
        child.end()


def test_promotion_writes_the_young_entry_over_the_older_big_one():
    """A key reused past its TTL while a child runs has its older entry in the big part and its
    newer in the young one; the promotion after the child writes the newer over the older (the
    young part emptied), so the reuse's replay is still a replay, not admitted again, and its
    old round still conflicts."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**6)
        s.open_round(7)
        s.open_round(8)
        p, t0 = "tp:{b0}:", 5 * DAY + 1000
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0)) == ["ok"]
        child = slow_child(s.c)
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY)) == ["ok"]
        newer = s.c.hget(p + "idemyoung", "1:a")
        assert newer.startswith("8:%d|" % (t0 + DAY))
        assert child.running(), "the child ended early"
        child.end()
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "b")], t0 + DAY + 3)) == ["ok"]
        big, young = parts(s.c, p)
        assert young == {} and big["1:a"] == newer, (big, young)
        bal = s.c.hget(p + "bal", "1")
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY + 4)) == ["replay"]
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0 + DAY + 5)) == \
            ["idempotency_conflict"]
        assert s.c.hget(p + "bal", "1") == bal == str(10**6 - 300)


def test_a_young_key_reused_after_the_child_writes_the_young_part():
    """After a child's exit, while the young part still drains, a bet whose key has a young
    entry (the key reused past its TTL, here behind a refused and a fresh bet of its call) writes
    its entry over that one, not into the big part:
    a young entry is always its field's newest, so the bet's replay is a replay (not admitted
    again: the older young entry is past its TTL) and the promotion leaves the newest entry."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**9)
        for rid in (7, 8, 9):
            s.open_round(rid)
        p, t0 = "tp:{b0}:", 5 * DAY + 1000
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t0)) == ["ok"]
        child = slow_child(s.c)
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t0 + DAY)) == ["ok"]
        for j in range(4):  # more young entries than a chunk: the drain takes several calls
            bets = [(1, 0, 100, "y%d" % (100 * j + i)) for i in range(100)]
            assert codes(s.batch_call(0, 8, bets, t0 + DAY + 1)) == ["ok"] * 100
        assert child.running(), "the child ended early"
        child.end()
        t1 = t0 + 2 * DAY + 5
        # The reused key after a refused bet and a fresh one: its accepted bet's number (2) is
        # not its place in the call (3), and the place is what names its young entry.
        assert codes(s.batch_call(0, 9, [(1, 99, 100, "bad"), (1, 0, 100, "fresh"),
                                         (1, 0, 100, "a")], t1)) == ["invalid_band", "ok", "ok"]
        big, young = parts(s.c, p)
        assert young, "the young part drained in one call: add entries"
        assert "1:fresh" in big and "1:fresh" not in young and "1:bad" not in big
        newest = young.get("1:a") or big.get("1:a")
        assert newest.startswith("9:%d|" % t1), (big.get("1:a"), young.get("1:a"))
        bal = s.c.hget(p + "bal", "1")
        assert codes(s.batch_call(0, 9, [(1, 0, 100, "a"), (1, 0, 100, "fresh")], t1 + 1)) == \
            ["replay", "replay"]
        for _ in range(10):  # 401 entries, 128 a call: 3 more calls at most
            if not s.c.exists(p + "idemyoung"):
                break
            assert codes(s.batch_call(0, 9, [(1, 0, 100, "z%d" % t1)], t1 + 2)) == ["ok"]
            t1 += 1
        assert not s.c.exists(p + "idemyoung"), "the young part does not drain"
        assert s.c.hget(p + "idemhot", "1:a") == newest
        assert codes(s.batch_call(0, 9, [(1, 0, 100, "a")], t1 + 3)) == ["replay"]
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], t1 + 4)) == ["idempotency_conflict"]
        assert int(s.c.hget(p + "bal", "1")) == int(bal) - 100 * (t1 - (t0 + 2 * DAY + 5))


def test_a_second_child_while_the_young_part_still_drains():
    """A second fork child starting while the young part still drains after a first: during it
    no call writes the big part (idemhot byte for byte as at its fork, though the young part is
    not empty), its bets go into the young part beside the first child's undrained entries, and
    a replay of a key in either part (from before the first child, the first child's promoted or
    still young, the drain's own) answers its first answer (bet number, balance) and debits
    nothing. After the second child the drain resumes and empties the young part, each entry in
    exactly one part throughout and every entry as first written; the replays still answer the
    same."""
    with tpenv.Redis() as r:
        s = Side(r, 1)
        s.grant(1, 10**9)
        s.open_round(7)
        p, first, entries = "tp:{b0}:", {}, {}

        def place(j, now):
            bets = [(1, 0, 100, "a%d" % (100 * j + i)) for i in range(100)]
            res = s.batch_call(0, 7, bets, now)
            assert codes(res) == ["ok"] * 100
            first.update(("1:" + k, a) for (_, _, _, k), a in zip(bets, res))
            big, young = parts(s.c, p)
            assert not set(big) & set(young)
            for k, v in {**big, **young}.items():  # every entry as first written, wherever
                assert entries.setdefault(k, v) == v, (k, entries[k], v)

        def replays(fields, now):
            bal = s.c.hget(p + "bal", "1")
            res = s.batch_call(0, 7, [(1, 0, 100, f.split(":", 1)[1]) for f in fields], now)
            want = [first[f][:6] + [1] for f in fields]
            assert res == want, [(f, a, w) for f, a, w in zip(fields, res, want) if a != w][:5]
            assert s.c.hget(p + "bal", "1") == bal
            assert codes(s.batch_call(0, 7, [(1, 0, 200, f.split(":", 1)[1]) for f in fields[::9]],
                                      now)) == ["idempotency_conflict"] * len(fields[::9])
            assert s.c.hget(p + "bal", "1") == bal

        for j in range(5):  # a0..a499: the big part's
            place(j, 5000)
        child = slow_child(s.c)
        for j in range(5, 17):  # a500..a1699: the first child's, young
            place(j, 5001)
        assert child.running(), "the first child ended early"
        child.end()
        for j in range(17, 20):  # a1700..a1999 into the big part, 3 chunks promoted
            place(j, 5002)
        big, young = parts(s.c, p)
        promoted = sorted(set(big) & {"1:a%d" % i for i in range(500, 1700)})
        assert len(promoted) == 3 * PROMOTE_CHUNK and len(young) == 1200 - 3 * PROMOTE_CHUNK
        sample = (sorted(young)[:50] + promoted[:50] + ["1:a%d" % i for i in range(0, 500, 10)] +
                  ["1:a%d" % i for i in range(1700, 2000, 10)])

        child = slow_child(s.c)
        big_at_fork, young_at_fork = parts(s.c, p)
        replays(sample, 5003)
        for j in range(20, 24):  # a2000..a2399: the second child's, young
            place(j, 5004)
        replays(sample + ["1:a%d" % i for i in range(2000, 2400, 10)], 5005)
        assert child.running(), "the second child ended early"
        big, young = parts(s.c, p)
        assert big == big_at_fork, "the big part was written during the second child"
        assert young.items() >= young_at_fork.items() and len(young) == len(young_at_fork) + 400
        child.end()

        calls, left = 0, len(young)
        while s.c.exists(p + "idemyoung"):
            assert calls < 30, "the young part does not drain after the second child"
            place(24 + calls, 5006)
            calls += 1
            assert s.c.hlen(p + "idemyoung") == max(0, left - PROMOTE_CHUNK * calls)
        assert calls == -(-left // PROMOTE_CHUNK), (calls, left)
        big, young = parts(s.c, p)
        assert young == {} and big == entries and set(big) == set(first)
        replays(sample + ["1:a%d" % i for i in range(2000, 2400, 10)], 5007)
        assert int(s.c.hget(p + "bal", "1")) == 10**9 - 100 * len(first)


if __name__ == "__main__":
    tpenv.main()
