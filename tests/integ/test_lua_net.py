"""scripts/lua/net_fold.lua against a real redis-server: the leaderboard's stakes log folded
into `net`, with bet_batch.lua writing the log, compared with one-by-one admission
(bench/lua/bet.lua writes every stake into `net` itself, as bet_batch.lua did before the log).

A fold at any point between the calls, and settlement's credits added to `net` meanwhile (as
settle_page.lua adds them, straight into the ZSET), leave the same net winnings and the same
top N as the reference; a read with a limit folds first, so it answers what the reference's
ZREVRANGE answers; an entry that is not the log's pairs fails the fold before any write.
"""

import random

import betbatch
import redis
import test_lua_batch as tlb
import tpenv


def fold(s, bucket, limit=0):
    p = "tp:{b%d}:" % bucket
    return s.c.evalsha(s.fold_sha, 2, p + "net", p + "netlog", limit)


def side(r, buckets):
    s = tlb.Side(r, buckets)
    s.fold_sha = tlb.load(s.c, "scripts", "lua", "net_fold.lua")
    return s


def test_folds_anywhere_give_the_reference_board():
    """Random calls of several players (refusals, repeats and replays among them) on two
    buckets; credits added to `net` between them; folds at random points, one bucket at a
    time. After every call the board read through the fold (limit 1..100) equals the
    reference's ZREVRANGE, and a plain read of `net` less the log equals the reference's net."""
    rnd = random.Random(31)
    users = list(range(1, 41))
    with tpenv.Redis() as r1, tpenv.Redis() as r2:
        a, ref = side(r1, 2), side(r2, 2)
        for s in (a, ref):
            for u in users:
                s.grant(u, 5000 if u % 7 else 100)  # some run out: insufficient_funds
            s.open_round(3)
        keys = []
        for call in range(60):
            bucket = rnd.randrange(2)
            mine = [u for u in users if u % 2 == bucket]
            bets = []
            for _ in range(rnd.randrange(1, 12)):
                u = rnd.choice(mine)
                if keys and rnd.random() < 0.1:
                    u, key = rnd.choice([k for k in keys if k[0] % 2 == bucket] or [(u, "x")])
                else:
                    key = f"k{call}-{len(bets)}"
                    keys.append((u, key))
                bets.append((u, rnd.randrange(5), rnd.choice((100, 250, 1000)), key))
            got = a.batch_call(bucket, 3, bets, 5000)
            want = [ref.one(3, b, 5000) for b in bets]
            assert got == want, (got, want)
            if rnd.random() < 0.2:  # a credit, as settle_page.lua writes it
                u, v = rnd.choice(mine), rnd.randrange(1, 3000)
                for s in (a, ref):
                    s.c.zincrby("tp:{b%d}:net" % bucket, v, str(u))
            if rnd.random() < 0.3:
                fold(a, rnd.randrange(2))
            for b in range(2):
                p = "tp:{b%d}:" % b
                assert betbatch.net(a.c, p) == betbatch.net(ref.c, p)
            if rnd.random() < 0.3:
                b, limit = rnd.randrange(2), rnd.choice((1, 5, 10, 100))
                p = "tp:{b%d}:" % b
                top = ref.c.zrevrange(p + "net", 0, limit - 1, withscores=True)
                got = fold(a, b, limit)
                assert [(u, float(v)) for u, v in zip(got[0::2], got[1::2])] == top
                assert not a.c.exists(p + "netlog")
                assert a.c.zrange(p + "net", 0, -1, withscores=True) == \
                    ref.c.zrange(p + "net", 0, -1, withscores=True)
        for b in range(2):
            assert fold(a, b) >= 0 and fold(a, b) == 0  # the second finds nothing to fold
            p = "tp:{b%d}:" % b
            assert a.c.zrange(p + "net", 0, -1, withscores=True) == \
                ref.c.zrange(p + "net", 0, -1, withscores=True)


def test_fold_of_many_players_and_an_empty_log():
    """A fold of more players than one ZMSCORE slice (1,000) sums each player's entries over
    the log; a fold of no log (a fresh Redis) writes nothing and reads `net` as it is."""
    with tpenv.Redis() as r:
        s = side(r, 1)
        # Nothing but the idempotency filter's shards, which the Side builds as the leader does.
        assert fold(s, 0) == 0 and fold(s, 0, 10) == []
        assert [k for k in s.c.keys("*") if ":idemslots:" not in k] == []
        s.c.zadd("tp:{b0}:net", {"7": 40, "2500": -1})
        for part in range(3):
            s.c.rpush("tp:{b0}:netlog", " ".join(f"{u} {u % 13 + part + 1}"
                                                 for u in range(1, 2501)))
        want = betbatch.net(s.c, "tp:{b0}:")
        assert len(want) == 2500
        assert fold(s, 0) == 3 and not s.c.exists("tp:{b0}:netlog")
        assert dict(s.c.zrange("tp:{b0}:net", 0, -1, withscores=True)) == want
        assert want["7"] == 40 - 3 * 8 - 3 and want["2500"] == -1 - 3 * 5 - 3


def test_a_corrupt_entry_fails_the_fold_before_any_write():
    """An entry that is not "<user_id> <sum>" pairs joined by single spaces (positive canonical
    decimals: a hand-written or truncated entry) raises, nothing folded or read; a bad limit
    too. The same log with the bad entry removed folds."""
    with tpenv.Redis() as r:
        s = side(r, 1)
        s.c.zadd("tp:{b0}:net", {"1": 10})
        s.c.rpush("tp:{b0}:netlog", "1 100 2 50")
        for bad in ("1 2x3 4", "01 5", "1 -5", "", "1 2 3", "a b", "1  2", " 1 2",
                    "1 2;3 4", "1 " + "9" * 16, "1\n2", "1 2 3 4x", "5 007", "1 0",
                    "1 2 ", "1 2 3 4 "):
            s.c.rpush("tp:{b0}:netlog", bad)
            before = tlb.Side.snapshot(s)
            for limit in (0, 10):
                try:
                    fold(s, 0, limit)
                except redis.ResponseError as e:
                    assert "corrupt netlog entry" in str(e), (bad, e)
                else:
                    raise AssertionError(f"entry {bad!r} folded")
            assert tlb.Side.snapshot(s) == before
            s.c.rpop("tp:{b0}:netlog")
        for limit in ("-1", "x", "1.5", ""):
            try:
                fold(s, 0, limit)
            except redis.ResponseError as e:
                assert "bad limit" in str(e), e
            else:
                raise AssertionError(f"limit {limit!r}")
        assert fold(s, 0, 2) == ["2", "-50", "1", "-90"]  # ZREVRANGE: highest first


if __name__ == "__main__":
    tpenv.main()
