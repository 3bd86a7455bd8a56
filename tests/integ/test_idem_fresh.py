"""Bets on a fresh Redis with no Postgres (none reachable: the server has no URL of one) before
the leader has built the idempotency filter's shards: nothing can have been archived into a
filter that is not whole (archival waits for its last shard, scripts/lua/idem_unindex.lua), so a
fresh key is admitted (201, debited) without asking Postgres. Session 30's shards read a missing
shard as "check" and refused these bets with 503 until the build pass ended (the fresh-root CI
under ASan, bench/README.md "Session 30: both filter days in one key, rebuilt")."""

import json
import time

import idemfilter
import tpenv
from test_bets import c_balance, open_round, server, user

LEASE = "tp:{g}:lease"


def shards(r):
    return r.client().keys("tp:{b0}:idemslots:*")


def bets(s, auth, rid, keys, stake=100):
    out = []
    for k in keys:
        st, _, b = s.http("POST", "/api/v1/bets", json.dumps(
            {"round_id": rid, "band": 1, "stake": stake}).encode(),
            headers=dict(auth, **{"Idempotency-Key": k, "Content-Type": "application/json"}))
        out.append((st, b))
    return out


def checks(s):
    """The log's lines of a key looked up in Postgres ("idempotency check of an archived key")."""
    with open(s.log_path, encoding="utf-8", errors="replace") as f:
        return [ln for ln in f if "idempotency check" in ln]


def test_no_leader_yet_no_postgres_bets_admitted():
    """Another process holds the leader lease, so no shard is ever built (a leader slow to
    build, at its extreme): every fresh key is admitted and debited; a replay answers the same
    bytes; shards 0 .. 511 built by hand (a pass cut half-way) change nothing; once the server
    leads and builds the filter whole, fresh keys are still admitted."""
    with tpenv.Redis() as r:
        r.client().set(LEASE, "elsewhere|1", px=600000)
        with server(r) as s:
            uid, auth = user(s, "fresh")
            open_round(r, 3)
            assert shards(r) == []
            out = bets(s, auth, 3, [f"k{i}" for i in range(8)])
            assert [st for st, _ in out] == [201] * 8, out
            assert c_balance(r, uid) == 100000 - 8 * 100
            st, b = bets(s, auth, 3, ["k0"])[0]
            assert st == 201 and b == out[0][1]
            assert c_balance(r, uid) == 100000 - 8 * 100
            assert shards(r) == []  # no leader: the bets above met no shard at all
            c, size = r.client(), idemfilter.shard_bytes(1 << 20, 1)  # tpenv's 1m filter
            for sh in range(512):
                c.setrange(f"tp:{{b0}}:idemslots:{sh}", size - 1, "\0")
            out = bets(s, auth, 3, [f"h{i}" for i in range(4)])
            assert [st for st, _ in out] == [201] * 4, out
            assert c_balance(r, uid) == 100000 - 12 * 100
            assert not c.exists("tp:{b0}:idemslots:1023")
            c.delete(LEASE)
            tpenv.wait_until(lambda: c.exists("tp:{b0}:idemslots:1023"), timeout=60,
                             what="the leader built the filter")
            out = bets(s, auth, 3, [f"w{i}" for i in range(4)])
            assert [st for st, _ in out] == [201] * 4, out
            assert c_balance(r, uid) == 100000 - 16 * 100
            assert checks(s) == []


def test_bets_from_the_first_moment_of_a_leader():
    """The server leads from its start on a fresh Redis and builds the filter while the bets
    come (before, during or after its pass: whichever, each is admitted and debited once)."""
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "first")
        open_round(r, 4)
        out = []
        t_end = time.time() + 3
        i = 0
        while (time.time() < t_end or i < 20) and i < 500:  # 500 stakes of the 1,000
            out += bets(s, auth, 4, [f"f{i}"])
            i += 1
        assert [st for st, _ in out] == [201] * i, [x for x in out if x[0] != 201][:3]
        assert c_balance(r, uid) == 100000 - i * 100
        assert checks(s) == []
        assert size_lines(s) == []  # built at the configured size


def size_lines(s):
    with open(s.log_path, encoding="utf-8", errors="replace") as f:
        return [ln for ln in f if "keep their built size" in ln]


def test_shards_of_another_size_are_kept_and_said():
    """Shards built at another size than game.idem_filter gives (a changed setting: they keep
    their size, docs/operations.md §4) are read at their own size, and the leader says so once
    per bucket, at warn, with both sizes."""
    with tpenv.Redis() as r:
        idemfilter.build(r.client(), "tp:{b0}:", None, 192)
        with server(r) as s:
            uid, auth = user(s, "resized")
            open_round(r, 5)
            tpenv.wait_until(lambda: size_lines(s), timeout=30, what="the size warning")
            out = bets(s, auth, 5, ["s1", "s2"])
            assert [st for st, _ in out] == [201] * 2, out
            assert r.client().strlen("tp:{b0}:idemslots:7") == 192
            time.sleep(2.5)  # two more probes: still one line
            lines = size_lines(s)
            want = "bucket=0 built_bytes=192 configured_bytes=%d" % idemfilter.shard_bytes(
                1 << 20, 1)
            assert len(lines) == 1 and "level=warn" in lines[0] and want in lines[0], lines
            assert checks(s) == []


if __name__ == "__main__":
    tpenv.main()
