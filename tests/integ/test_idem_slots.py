"""The idempotency filter's three days in one key a shard (scripts/lua/idem_slots.lua,
bet_batch.lua's read, idem_unindex.lua's write) against a real redis-server: which day's word each
script reads and writes (exact bytes), a filter not whole yet as holding no key, a missing shard
of a whole one and an older version's per-day filter as "check", the leader's zeroing of tomorrow's words only inside its part of the day, and the
upgrade's fold of an older per-day filter (its shard 0 a tombstone from the first step, its last
shard gone only in the last)."""

import os

import idemfilter
import redis
import tpenv
from test_lua_batch import DAY, SHARD_BYTES, Side, codes, load

SHARDS = idemfilter.SHARDS
P = "tp:{b0}:"
MIN10 = 600000


def words(raw, key):
    """The shard's bytes as (day 0, day 1, day 2) word lists (day d mod 3)."""
    v = raw.get(key) or b""
    return [[v[12 * i + 4 * r:12 * i + 4 * r + 4] for i in range(len(v) // 12)]
            for r in range(3)]


def side(r):
    s = Side(r, 1)
    s.slots_sha = load(s.c, "scripts", "lua", "idem_slots.lua")
    s.grant(1, 10**9)
    return s


def test_archival_writes_its_day_bets_read_today_and_yesterday():
    """A key archived in day 5 sets day 5's word of its triple only (two minutes into the day:
    day 4's too, for a reader whose clock lags), nothing else of the shard; bets read it on days
    5 and 6 ("check") with one GETRANGE each, and not on day 7 once day 7's words were zeroed
    during day 6. A key whose bits are only in day 6's word is not read on day 5."""
    with tpenv.Redis() as r:
        s = side(r)
        for rid in range(7, 12):
            s.open_round(rid)
        t = 5 * DAY + 3600000  # an hour into day 5: day 5 only
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a")], t)) == ["ok"]
        word, mask, shard = idemfilter.pos(1, "a")
        before = words(s.raw, idemfilter.slot_key(P, shard))
        assert s.archive_index(0, 7, t + 1000) == 1
        after = words(s.raw, idemfilter.slot_key(P, shard))
        i = idemfilter.byte_offset(word, SHARD_BYTES) // 12
        assert int.from_bytes(after[5 % 3][i], "big") == mask
        for d in range(3):
            for j in range(len(after[d])):
                if (d, j) != (5 % 3, i):
                    assert after[d][j] == before[d][j], (d, j)

        def getranges():
            return s.c.info("commandstats").get("cmdstat_getrange", {}).get("calls", 0)

        for now in (t + 2000, 6 * DAY + 10, 7 * DAY - 1):
            g = getranges()
            assert s.batch_call(0, 8, [(1, 0, 100, "a")], now) == [["check"]], now
            assert getranges() - g == 1
        # Day 7 reads days 7 and 6: day 7's words (day 4's, unzeroed) are zeroed during day 6.
        assert idemfilter.slots_zero(s.c, s.slots_sha, P, 0, 6, 6 * DAY + MIN10 + 1, DAY) \
            == SHARDS
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "a")], 7 * DAY)) == ["ok"]
        # Two minutes into day 9: days 9 and 8 get the bits, not day 10's (day 7's) words.
        assert codes(s.batch_call(0, 9, [(1, 0, 100, "b")], 9 * DAY + 10)) == ["ok"]
        word, mask, shard = idemfilter.pos(1, "b")
        before = words(s.raw, idemfilter.slot_key(P, shard))
        assert s.archive_index(0, 9, 9 * DAY + 120000) == 1
        after = words(s.raw, idemfilter.slot_key(P, shard))
        i = idemfilter.byte_offset(word, SHARD_BYTES) // 12
        for d in range(3):
            for j in range(len(after[d])):
                if j == i and d in (9 % 3, 8 % 3):
                    assert int.from_bytes(after[d][j], "big") & mask == mask, (d, j)
                else:
                    assert after[d][j] == before[d][j], (d, j)
        # A key whose bits are set only in tomorrow's words is not read today.
        word, mask, shard = idemfilter.pos(1, "c")
        s.c.execute_command("BITFIELD", idemfilter.slot_key(P, shard), "SET", "u32",
                            idemfilter.day_bit(word, SHARD_BYTES, 10), mask)
        assert codes(s.batch_call(0, 10, [(1, 0, 100, "c")], 9 * DAY + 20)) == ["ok"]
        # ... and a key set only in yesterday's is: "check".
        word, mask, shard = idemfilter.pos(1, "d")
        s.c.execute_command("BITFIELD", idemfilter.slot_key(P, shard), "SET", "u32",
                            idemfilter.day_bit(word, SHARD_BYTES, 8), mask)
        assert s.batch_call(0, 10, [(1, 0, 100, "d")], 9 * DAY + 30) == [["check"]]


def getranges(c):
    return c.info("commandstats").get("cmdstat_getrange", {}).get("calls", 0)


def test_a_filter_not_whole_holds_no_key_a_missing_shard_of_a_whole_one_is_check():
    """Until the last shard exists (a fresh Redis; a leader still building) nothing can have
    been archived into any shard (archival waits: -1, nothing written), so every key is absent:
    admitted with no GETRANGE and no "check" (Postgres is not asked), whichever shards exist
    already, even one with bits set. Every key is "check" while an older version's per-day
    filter of yesterday, today or tomorrow is whole (its last shard: an older leader may archive
    there), before the last shard exists too. Once the last shard exists, a missing shard holds
    every key ("check"); bets the caller cleared (ARGV[10] = 1) are admitted."""
    with tpenv.Redis() as r:
        s = side(r)
        s.open_round(7)
        t = 5 * DAY + 3600000
        s.c.delete(*[idemfilter.slot_key(P, sh) for sh in range(SHARDS)])
        g = getranges(s.c)
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "a"), (1, 0, 100, "a2")], t)) == \
            ["ok", "ok"]
        assert getranges(s.c) == g
        before = (s.snapshot(), s.index())
        assert idemfilter.archive_index(s.c, s.unindex_sha, P, 0, 7, 5) == -1
        assert (s.snapshot(), s.index()) == before
        # Mid-build: every shard but the last (the leader's steps), one of them all ones.
        assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, SHARD_BYTES, [0]) == 1
        for first in range(1, SHARDS - 1, 64):
            assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, SHARD_BYTES,
                                          range(first, min(first + 64, SHARDS - 1))) > 0
        shard = idemfilter.pos(1, "b")[2]
        s.raw.set(idemfilter.slot_key(P, shard), b"\xff" * SHARD_BYTES)
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "b")], t)) == ["ok"]
        assert getranges(s.c) == g
        assert idemfilter.archive_index(s.c, s.unindex_sha, P, 0, 7, 5) == -1
        for d in (4, 5, 6):
            k = idemfilter.shard_key(P, d, SHARDS - 1)
            s.c.setrange(k, 63, "\0")
            assert s.batch_call(0, 7, [(1, 0, 100, "o%d" % d)], t) == [["check"]], d
            s.c.delete(k)
        # Whole: shard "b"'s ones are read now; a missing shard is "check".
        assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, SHARD_BYTES, [SHARDS - 1]) == 1
        s.c.delete(P + "idemhot", P + "idemyoung")  # "b" as if archived: the filter answers
        assert s.batch_call(0, 7, [(1, 0, 100, "b")], t) == [["check"]]
        assert getranges(s.c) == g + 1
        shard = idemfilter.pos(1, "e")[2]
        s.c.delete(idemfilter.slot_key(P, shard))
        assert s.batch_call(0, 7, [(1, 0, 100, "e")], t) == [["check"]]
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "e")], t, skip=1)) == ["ok"]
        assert s.c.exists(idemfilter.slot_key(P, shard)) == 0  # a bet never creates one
        idemfilter.build(s.c, P, None, SHARD_BYTES)
        for d in (4, 5, 6):
            k = idemfilter.shard_key(P, d, SHARDS - 1)
            s.c.setrange(k, 63, "\0")
            assert s.batch_call(0, 7, [(1, 0, 100, "b%d" % d)], t) == [["check"]], d
            s.c.delete(k)
        for d in (3, 7):  # not the reader's days
            k = idemfilter.shard_key(P, d, SHARDS - 1)
            s.c.setrange(k, 63, "\0")
            assert codes(s.batch_call(0, 7, [(1, 0, 100, "c%d" % d)], t)) == ["ok"], d
            s.c.delete(k)
        assert codes(s.batch_call(0, 7, [(1, 0, 100, "f")], t)) == ["ok"]
        s.c.delete(idemfilter.slot_key(P, SHARDS - 1))
        before = (s.snapshot(), s.index())
        assert idemfilter.archive_index(s.c, s.unindex_sha, P, 0, 7, 5) == -1
        assert (s.snapshot(), s.index()) == before


def test_zeroing_clears_tomorrow_only_inside_its_part_of_the_day():
    """During day 5 the leader zeroes day 6's words (day 3's), byte for byte nothing else, only
    between 10 minutes after the day's start and 10 minutes before its end by its clock (-1 and
    nothing written outside); a missing shard stays missing; the step with shard 1023 records
    day 6 as zeroed."""
    with tpenv.Redis() as r:
        s = side(r)
        pipe = s.raw.pipeline(transaction=False)
        for sh in range(SHARDS):
            pipe.set(idemfilter.slot_key(P, sh), os.urandom(SHARD_BYTES))
        pipe.execute()
        s.c.delete(idemfilter.slot_key(P, 7))
        snap = {sh: words(s.raw, idemfilter.slot_key(P, sh)) for sh in range(SHARDS)}
        for now in (5 * DAY + MIN10 - 1, 6 * DAY - MIN10 + 1, 4 * DAY + DAY // 2):
            assert idemfilter.slots_zero(s.c, s.slots_sha, P, 0, 5, now, DAY) == -1
        assert {sh: words(s.raw, idemfilter.slot_key(P, sh)) for sh in range(SHARDS)} == snap
        assert idemfilter.slots_probe(s.c, s.slots_sha, P, 0, 5)[2] == -1
        assert idemfilter.slots_zero(s.c, s.slots_sha, P, 0, 5, 5 * DAY + MIN10, DAY,
                                     shards=range(0, 512)) == 511
        assert idemfilter.slots_probe(s.c, s.slots_sha, P, 0, 5)[2] == -1
        assert idemfilter.slots_zero(s.c, s.slots_sha, P, 0, 5, 6 * DAY - MIN10, DAY,
                                     shards=range(512, SHARDS)) == 512
        assert idemfilter.slots_probe(s.c, s.slots_sha, P, 0, 5)[2] == 6
        assert not s.c.exists(idemfilter.slot_key(P, 7))
        for sh in range(SHARDS):
            if sh == 7:
                continue
            w = words(s.raw, idemfilter.slot_key(P, sh))
            assert w[6 % 3] == [bytes(4)] * (SHARD_BYTES // 12), sh
            for d in (4 % 3, 5 % 3):
                assert w[d] == snap[sh][d], (sh, d)


def old_set(c, day, user, key, size):
    """An older version's archival of (user, key) into its per-day shard of `day`."""
    word, mask, shard = idemfilter.pos(user, key)
    k = idemfilter.shard_key(P, day, shard)
    v = c.execute_command("BITFIELD_RO", k, "GET", "u32", word % (size // 4) * 32)[0]
    c.execute_command("BITFIELD", k, "SET", "u32", word % (size // 4) * 32, v | mask)


def test_upgrade_folds_an_older_per_day_filter():
    """The leader's build pass over an older version's per-day filter (days 4, 5, 6 at day 5;
    day 6 of another size): each older day's words go into that day's words of the shards (day
    6's, unmappable, all ones), the older shards go, shard 0 of each day becomes a tombstone
    (a HASH, the older expiry kept; one is made for a day with none) from the first step, and
    every filter bet is "check" until the last step removes the older last shards. A replay of
    a key the older version archived is never admitted."""
    with tpenv.Redis() as r:
        s = side(r)
        s.open_round(7)
        for rid in (8, 9):
            s.open_round(rid)
        for k in s.c.keys(P + "idemslots:*"):
            s.c.delete(k)
        # One configuration (game.idem_filter 256k over 1 bucket) as both versions size it: the
        # older per-day shard of 240 bytes, the new shard of three such days.
        day_bytes = idemfilter.old_shard_bytes(256 << 10, 1)
        size = idemfilter.shard_bytes(256 << 10, 1)
        assert (day_bytes, size) == (240, 720)
        for d, dsize in ((4, day_bytes), (5, day_bytes), (6, 32)):
            idemfilter.build_old(s.c, P, d, dsize)
            s.c.pexpire(idemfilter.shard_key(P, d, 0), 10**8 + d)
        old_set(s.c, 4, 1, "y", day_bytes)
        old_set(s.c, 5, 1, "x", day_bytes)
        t = 5 * DAY + 3600000
        # Nothing built: "check".
        assert s.batch_call(0, 7, [(1, 0, 100, "x")], t) == [["check"]]
        assert idemfilter.slots_probe(s.c, s.slots_sha, P, 0, 5) == [0, 1, -1, 0]
        assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, size, [0]) == 1
        for d in (4, 5, 6):
            k = idemfilter.shard_key(P, d, 0)
            assert s.c.type(k) == "hash" and 10**8 + d - 5000 < s.c.pttl(k) <= 10**8 + d, d
        # Mid-fold: the older last shards stand, every filter bet is "check".
        assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, size, range(1, 1000)) == 999
        assert s.batch_call(0, 7, [(1, 0, 100, "z")], t) == [["check"]]
        assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, size,
                                      range(1000, SHARDS)) == SHARDS - 1000
        assert s.c.keys(P + "idemfilter:*") and all(
            s.c.type(k) == "hash" for k in s.c.keys(P + "idemfilter:*"))
        assert len(s.c.keys(P + "idemfilter:*")) == 3
        assert idemfilter.slots_probe(s.c, s.slots_sha, P, 0, 5) == [1, 0, -1, size]
        # The older days' keys, in their days' words, exactly: the days of the older size hold
        # only what the older shards held (no day set whole).
        assert idemfilter.is_set(s.c, P, 5, 1, "x") and idemfilter.is_set(s.c, P, 4, 1, "y")
        assert not idemfilter.is_set(s.c, P, 4, 1, "x")
        for d, key in ((4, "y"), (5, "x")):
            word, mask, shard = idemfilter.pos(1, key)
            for sh in range(SHARDS):
                w = words(s.raw, idemfilter.slot_key(P, sh))[d % 3]
                want = [bytes(4)] * (size // 12)
                if sh == shard:
                    want[word % (size // 12)] = mask.to_bytes(4, "big")
                assert w == want, (d, sh)
        assert s.batch_call(0, 8, [(1, 0, 100, "x")], t) == [["check"]]
        assert s.batch_call(0, 8, [(1, 0, 100, "y")], t) == [["check"]]
        # Day 6's filter had another size: its words are all ones (read from day 6 on).
        assert all(w == b"\xff" * 4 for sh in (0, 5, 1023)
                   for w in words(s.raw, idemfilter.slot_key(P, sh))[6 % 3])
        assert codes(s.batch_call(0, 8, [(1, 0, 100, "n")], t)) == ["ok"]
        # A pass repeated (a kill -9, a new leader) creates and folds nothing more.
        snap = {k: s.raw.get(k) for k in s.c.keys(P + "idemslots:*")}
        assert idemfilter.slots_build_all(s.c, s.slots_sha, P, 0, 5, size) == 0
        assert {k: s.raw.get(k) for k in s.c.keys(P + "idemslots:*")} == snap


def older(c, name):
    with open(os.path.join(tpenv.SRC, "tests", "integ", "lua", "older", name + ".lua")) as f:
        return c.script_load(f.read())


def test_older_scripts_fail_before_any_write_after_the_first_fold_step():
    """The fence of a mixed fleet: once the new leader's first build step replaced the older
    per-day shard 0 of yesterday, today and tomorrow by a tombstone, an older server's bet
    script (whenever its batch needs the filter), its archival step (even with the older last
    shard still there, mid-fold) and its builder all fail with WRONGTYPE, nothing written: an
    older server answers 503, it never reads a filter that misses a key archived into the
    shards."""
    with tpenv.Redis() as r:
        s = side(r)
        s.open_round(1)
        for k in s.c.keys(P + "idemslots:*"):
            s.c.delete(k)
        now = 5 * DAY + 3600000
        w = now // DAY
        for d in (4, 5, 6):
            idemfilter.build_old(s.c, P, d, 64)
        assert idemfilter.slots_build(s.c, s.slots_sha, P, 0, 5, 192, [0]) == 1
        bet, unx, bld = (older(s.c, n) for n in ("bet_batch", "idem_unindex", "idem_filter_build"))
        word, mask, shard = idemfilter.pos(1, "k")
        pos = word.to_bytes(4, "big") + mask.to_bytes(4, "big") + shard.to_bytes(2, "big")
        ks = [P + "bal", P + "idem:1", P + "round:1:state", P + "pool:1", P + "outbox", P + "seq",
              P + "net", P + "excl", P + "paused", P + "disabled", P + "idemhot",
              f"{P}idemfilter:{w}", f"{P}idemfilter:{w - 1}", idemfilter.shard_key(P, w, 0),
              idemfilter.shard_key(P, w - 1, 0), P + "idemyoung", P + "betl:1:0", P + "ubets:1",
              idemfilter.shard_key(P, w, shard), idemfilter.shard_key(P, w - 1, shard)]
        s.c.hset(P + "idemhot", "1:z", f"7:{now}|1|0|100|900")
        before = s.snapshot()
        for call in (
                lambda: s.c.evalsha(bet, len(ks), *ks, 1, now, 5, 1, 10**6, 86400, 0, 1, 1, 0,
                                    1, 0, 100, "k", pos),
                lambda: s.c.evalsha(bld, 2, idemfilter.shard_key(P, w, 0),
                                    idemfilter.shard_key(P, w, 5), "build", 64, 10**8, w, 0),
                lambda: s.c.evalsha(unx, 6, P + "idemhot", P + "idemyoung",
                                    idemfilter.shard_key(P, w, 0),
                                    idemfilter.shard_key(P, w, SHARDS - 1),
                                    idemfilter.shard_key(P, w, idemfilter.pos(1, "z")[2]),
                                    P + "idem:7", 7, 0, w, 1, 0, 1, "1:z",
                                    *idemfilter.pos(1, "z"))):
            try:
                call()
            except redis.ResponseError as e:
                assert "WRONGTYPE" in str(e), e
            else:
                raise AssertionError("an older script ran past the tombstone")
            assert s.snapshot() == before


def test_malformed_steps_raise():
    with tpenv.Redis() as r:
        s = side(r)
        good = [P + "idemslots:fold", P + "idemslots:0", P + "idemslots:zeroed",
                P + "idemslots:3", P + "idemfilter:4:3", P + "idemfilter:5:3", P + "idemfilter:6:3"]
        argv = ["build", SHARD_BYTES, 5, 0, DAY, 1000, 0]
        for ks, av, text in (
                (good, ["nope"] + argv[1:], "bad mode"),
                (good, ["build", 13] + argv[2:], "bad size"),
                (good, argv[:2] + ["05"] + argv[3:], "bad day"),
                (good[:6] + [P + "idemfilter:7:3"], argv, "per-day layout"),
                (good[:3] + [P + "idemslots:1024"] + good[4:], argv, "shard layout"),
                (good[:6], argv, "want 3 + 4n"),
                (good, argv[:6], "7 ARGV"),
                ([P + "idemslots:mask:1"] + good[1:4], ["zero"] + argv[1:6] + [5 * DAY + MIN10],
                 "mask layout")):
            try:
                s.c.evalsha(s.slots_sha, len(ks), *ks, *av)
            except redis.ResponseError as e:
                assert text in str(e), (text, e)
            else:
                raise AssertionError(f"accepted: {text}")


if __name__ == "__main__":
    tpenv.main()
