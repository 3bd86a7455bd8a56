"""Shared helpers of test_archive.py, test_archive_retain.py and test_archive_kill.py: a fast game (1 s rounds, two
buckets, game.retain_s 1), the keys of one round as scripts/lua/README.md names them, and the
bytes history shows of a round (Round object in JSON and MessagePack, the rounds list, every
player's /me/bets and `tickpool verify`).
"""

import tpclient
import tpenv

NBANDS = 5
B = 2
ENV = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "1",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BUCKETS": str(B),
       "TICKPOOL_GAME_GRACE": "2s", "TICKPOOL_GAME_MIN_STAKE": "1",
       "TICKPOOL_GAME_RETAIN_S": "1"}
MSGPACK = {"Accept": "application/msgpack"}
G = "tp:{g}:"


def round_keys(c, rid):
    """Every key of round rid, as the layout in scripts/lua/README.md names them."""
    keys = set()
    for b in range(B):
        p = f"tp:{{b{b}}}:"
        keys |= {p + f"idem:{rid}", p + f"round:{rid}:state", p + f"pool:{rid}",
                 p + f"plan:{rid}", p + f"paid:{rid}", p + f"payout:{rid}"}
        keys |= {p + f"bets:{rid}:{band}" for band in range(NBANDS)}
        keys |= {p + f"betl:{rid}:{band}" for band in range(NBANDS)}
    keys |= {G + f"round:{rid}", G + f"seed:{rid}"}
    return {k for k in keys if c.exists(k)}


def player_state(c):
    """Every key that is no round's (balances, grants, house, lists, accounts…) with its value."""
    out = {}
    for k in c.keys("*"):
        if any(f in k for f in (":round:", ":pool:", ":plan:", ":paid:", ":payout:", ":bets:",
                                ":betl:", ":seed:", "outbox", "ticks", "lease", "current", "rounds",
                                "unfinished", "unsettled", "epoch", "workers", ":idem:",
                                ":idemhot", ":idemyoung", ":idemfilter:",
                                ":idemslots:")):
            continue
        out[k] = c.dump(k)
    return out


def history(s, rid, users):
    """The bytes history shows of round rid and the players' bets."""
    got = {}
    for name, h in (("json", None), ("msgpack", MSGPACK)):
        st, _, body = s.http("GET", f"/api/v1/rounds/{rid}", headers=h)
        assert st == 200, (st, body)
        got["round." + name] = body
        st, _, body = s.http("GET", f"/api/v1/rounds?before={rid + 1}&limit=3", headers=h)
        assert st == 200, (st, body)
        got["list." + name] = body
    v = s.run_cli("verify", str(rid))
    assert v.returncode == 0, v.stdout + v.stderr
    # Where it read the round from is the one line that differs.
    got["verify"] = "".join(l for l in v.stdout.splitlines(True) if "read from Postgres" not in l)
    for uid, tok in users:
        st, _, body = s.http("GET", "/api/v1/me/bets?limit=200",
                             headers={"Authorization": "Bearer " + tok})
        assert st == 200, (st, body)
        got[f"bets.{uid}"] = body
    return got


def bet_round(s, users, tag):
    """Bets on every band of a fresh open round; returns its id once it is final in Redis with
    its seed revealed."""
    o = tpclient.fresh_open_round(s, 400)
    jobs = [(i % NBANDS, 10 + i) for i in range(20)]
    ok, other = tpclient.place_bets(s, users, o["id"], jobs, nthreads=4, tag=tag)
    assert ok and all(st == 409 for st, _ in other), other[:3]
    return o["id"]


def wait_final(c, rid):
    tpenv.wait_until(lambda: c.hget(G + f"round:{rid}", "state") in ("settled", "cancelled")
                     and c.hget(G + f"round:{rid}", "seed"), timeout=30,
                     what=f"round {rid} final with its seed")


def hot_index(c):
    """Every bucket's hot idempotency key index: {(bucket, "<user>:<key>"):
    "<round>:<ms>|<record>"} (an older version's entry: "<round>:<ms>"), both parts, the young
    one's entry of a field over the big one's (bet_batch.lua's reading)."""
    out = {}
    for b in range(B):
        for part in ("idemhot", "idemyoung"):
            out.update({(b, f): v for f, v in c.hgetall(f"tp:{{b{b}}}:{part}").items()})
    return out


def hot_part(c, b, f):
    """The key of the hot index part of bucket b that holds field f (the young one first)."""
    young = f"tp:{{b{b}}}:idemyoung"
    return young if c.hexists(young, f) else f"tp:{{b{b}}}:idemhot"


def archived(c, rid):
    """Whether round rid, a round the game made, has left Redis (its hash and its id in
    tp:{g}:rounds gone). An id above the newest in tp:{g}:rounds (ids are max + 1 without gaps,
    the newest 16 never leave) or below 1 names no round yet: that raises, since both checks
    would hold for it and a wait on it pass at once having checked nothing (a test and a probe
    of session 22 did). In tpenv.wait_until a raise means "not yet", so a wait on a round about to
    open waits for it to open and then to leave."""
    newest = c.zrevrange(G + "rounds", 0, 0)
    if rid < 1 or not newest or rid > int(newest[0]):
        raise AssertionError(f"round {rid} was never made (newest round in Redis: "
                             f"{newest[0] if newest else 'none'}): it cannot be archived")
    return not c.exists(G + f"round:{rid}") and c.zscore(G + "rounds", rid) is None


def to_older_version(c, rid):
    """Round rid's hot entries as the bet script before session 13 wrote them: each record
    moved out of its entry ("<round>:<ms>|<record>") into the round's records hash
    idem:<rid>, the entry left "<round>:<ms>". Returns the keys moved per bucket."""
    moved = {}
    for b in range(B):
        p = f"tp:{{b{b}}}:"
        pipe = c.pipeline(transaction=True)
        for part in ("idemhot", "idemyoung"):
            for f, v in c.hgetall(p + part).items():
                head, bar, rec = v.partition("|")
                if bar and head.startswith(f"{rid}:"):
                    pipe.hset(p + f"idem:{rid}", f, rec)
                    pipe.hset(p + part, f, head)
                    moved.setdefault(b, []).append(f)
        pipe.execute()
    return moved


def pg_round_keys(pg, rid, b):
    """Round rid's keys in bucket b as archival reads them from Postgres
    (src/game/leader_archive.c)."""
    return [f"{u}:{k}" for u, k in pg.psql(
        f"SELECT user_id, idempotency_key FROM bets WHERE round_id = {int(rid)} "
        f"AND user_id % {B} = {b}")]


def metric_series(s, prefix):
    st, _, body = s.http("GET", "/metrics")
    assert st == 200
    return {l.split()[0]: float(l.split()[1]) for l in body.decode().splitlines()
            if l.startswith(prefix)}


def unarchivable(s):
    return metric_series(s, "tickpool_rounds_unarchivable ")["tickpool_rounds_unarchivable"]
