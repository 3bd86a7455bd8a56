"""Resharding under load: bucket 0's slot moves to another master with
`redis-cli --cluster reshard` while clients bet on every bucket (3 + 3 cluster, two workers,
game.buckets = 12, Postgres). tickpool follows the migration (ASK with ASKING, TRYAGAIN with
back-off, then MOVED and a new slot map) without a failed bet: no answer other than 201 (and
409 round_not_open at a round's lock), every acked bet in Redis and Postgres once, the bucket
on its new master afterwards, `tickpool audit` clean.

And a migration held open by hand (CLUSTER SETSLOT … MIGRATING/IMPORTING, the keys moved, the
slot assigned HOLD_S later): a bet on that bucket sent meanwhile meets ASK, then TRYAGAIN under
ASKING, round after round, and is placed (201) once the slot is assigned, within its
redis.timeout. With a fixed number of attempts it was answered 503 after about 0.4 s.

And archival across a migration: bucket 0's slot moves while archival walks a round's
idempotency records there (more than a listpack's 128, so HSCAN pages them) in small steps
(the test hooks TP_TEST_ARCHIVE_COUNT and TP_TEST_ARCHIVE_PAUSE_MS). The cursor then goes on
in the target's hash table, which orders the fields otherwise; when archival trusted it, the
fields it passed over kept their hot index entries for ever (a leak: the hot index must hold
only hot rounds' keys) and got no filter bits, while their records were deleted. Archival now
ends a bucket when its records are gone: every key in the filter, no hot entry left, replays
answer their first bytes and debit nothing, the audit clean.
"""

import http.client
import json
import subprocess
import threading
import time

import redis as redispy

import clusterlib
import idemfilter
import tpclient
import tpenv


def node_id(rc, port):
    return rc.cli(port, "CLUSTER", "MYID")


def test_reshard_a_bucket_under_load():
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=clusterlib.env(0), workers=2, https=False) as s:
        tpclient.wait_game(s, timeout=30)
        users = tpclient.make_users(s, 2 * clusterlib.BUCKETS, prefix="rs")
        with clusterlib.Load(s, users) as load:
            time.sleep(4)  # bucket 0 gathers keys (bets, bet lists, idempotency records)
            tag = clusterlib.bucket_tag(rc, 0)
            slot = int(rc.cli(rc.ports[0], "CLUSTER", "KEYSLOT", tag + ":bal"))
            src = clusterlib.slot_owner(rc, tag + ":bal")
            dst = next(p for p in rc.master_ports() if p != src)
            nkeys = int(rc.cli(src, "CLUSTER", "COUNTKEYSINSLOT", slot))
            # reshard moves the source's lowest slots first: up to and including bucket 0's
            # (bucket 0's share of the slot space is the lowest; the others hold no keys). 100
            # keys per MIGRATE, as docs/operations.md says to move a bucket: with redis-cli's 10,
            # bucket 0's ~2,000 keys took ~200 round trips, which a loaded machine stretched past
            # the bets' 2 s redis.timeout (503 after waiting it out, as documented).
            t = time.monotonic()
            r = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src}",
                                "--cluster-from", node_id(rc, src), "--cluster-to",
                                node_id(rc, dst), "--cluster-slots", str(slot + 1),
                                "--cluster-pipeline", "100", "--cluster-yes"],
                               capture_output=True, text=True, timeout=120)
            took = time.monotonic() - t
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr
            time.sleep(3)
        owner = clusterlib.slot_owner(rc, tag + ":bal")
        print(f"reshard: slot {slot} of bucket 0 ({tag}, {nkeys} keys) moved {src} -> {dst} in "
              f"{took:.1f} s under load; {len(load.acked)} bets acked "
              f"(~{len(load.acked) / load.elapsed:.0f}/s), 503s: "
              f"{len(load.unavailable[False])}, other answers: {dict(load.other)}")
        assert owner == dst, (owner, dst)
        assert nkeys > 10  # balances, outbox, pools, bets, bet lists, idempotency records
        assert clusterlib.only_round_not_open(load.other), load.other
        assert not load.unavailable[False], "a bet answered 503 during the reshard"
        clusterlib.healthy(s)
        assert clusterlib.audit_clean(s)
        lost_redis, lost_pg, doubled = clusterlib.acked_missing(rc, pg, load.acked)
        assert not lost_redis and not lost_pg and not doubled, (lost_redis, lost_pg, doubled)


HOLD_S = 1.5  # the migration's length: well past the old ~0.4 s, well within redis.timeout


def redis(port, *args):
    """One command to one node (no redirect followed); output stripped."""
    return subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def test_a_bet_waits_out_a_held_migration():
    env = clusterlib.env(0)
    env["TICKPOOL_GAME_BETTING_S"] = "30"  # no boundary during the hold
    env["TICKPOOL_REDIS_TIMEOUT"] = "5s"  # HOLD_S plus room for a loaded machine
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=env, workers=1, https=False) as s:
        tpclient.wait_game(s, timeout=30)
        users = tpclient.make_users(s, clusterlib.BUCKETS, prefix="hm")
        uid, tok = next(u for u in users if u[0] % clusterlib.BUCKETS == 0)
        rid = tpclient.fresh_open_round(s, min_left_ms=15000, timeout=60)["id"]
        conn = tpclient.Http(s, timeout=10)
        st, v = tpclient.bet(conn, tok, rid, 1, 100, "hm-before")  # the bucket's keys exist
        assert st == 201, (st, v)
        tag = clusterlib.bucket_tag(rc, 0)
        slot = int(rc.cli(rc.ports[0], "CLUSTER", "KEYSLOT", tag + ":bal"))
        src = clusterlib.slot_owner(rc, tag + ":bal")
        dst = next(p for p in rc.master_ports() if p != src)
        src_id, dst_id = node_id(rc, src), node_id(rc, dst)
        assert redis(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id) == "OK"
        assert redis(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id) == "OK"
        keys = redis(src, "CLUSTER", "GETKEYSINSLOT", slot, 100000).split()
        assert any(k.endswith(":bal") for k in keys), keys[:20]
        # Every key moves now, the slot is assigned HOLD_S later: meanwhile the source has none
        # of a bet's keys (ASK) and the target not all of them (TRYAGAIN: `paused` exists on
        # neither side).
        r = redis(src, "MIGRATE", "127.0.0.1", dst, "", 0, 20000, "KEYS", *keys)
        assert r == "OK", r
        out = {}

        def held_bet():
            t0 = time.monotonic()
            out["answer"] = tpclient.bet(conn, tok, rid, 2, 100, "hm-held")
            out["end"] = time.monotonic()
            out["took"] = out["end"] - t0

        th = threading.Thread(target=held_bet)
        t0 = time.monotonic()
        th.start()
        time.sleep(HOLD_S)
        assert "answer" not in out, ("answered during the migration", out)
        assigning = time.monotonic()
        for p in [dst, src] + [p for p in rc.master_ports() if p not in (src, dst)]:
            assert redis(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id) == "OK"
        assigned = time.monotonic() - t0
        th.join(15)
        st, v = out["answer"]
        print(f"held migration: slot {slot} ({tag}, {len(keys)} keys) assigned {src} -> {dst} "
              f"after {assigned:.2f} s; the bet sent meanwhile answered {st} after "
              f"{out['took']:.2f} s")
        assert st == 201, (st, v)
        assert out["end"] >= assigning, out  # it waited for the slot's assignment
        assert clusterlib.slot_owner(rc, tag + ":bal") == dst
        st, v2 = tpclient.bet(conn, tok, rid, 2, 100, "hm-held")  # its key replays it
        assert st == 201 and v2["bet_id"] == v["bet_id"], (st, v2, v)
        conn.close()
        clusterlib.healthy(s)
        assert clusterlib.audit_clean(s)
        lost_redis, lost_pg, doubled = clusterlib.acked_missing(rc, pg,
                                                                {"hm-held": (v["bet_id"], uid)})
        assert not lost_redis and not lost_pg and not doubled, (lost_redis, lost_pg, doubled)


def post_bet(conn, tok, rid, band, stake, key):
    """POST /api/v1/bets on an http.client connection: (status, body bytes)."""
    conn.request("POST", "/api/v1/bets",
                 body=json.dumps({"round_id": rid, "band": band, "stake": stake}).encode(),
                 headers={**tpclient.auth(tok, key), "Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def bets_bytes(s, rid, jobs, nthreads=8):
    """Each job (key, band, (user_id, token)) on round rid, stake 100, from nthreads keep-alive
    connections: {key: (user_id, token, band, status, body bytes)}."""
    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=30)
        out = {}
        for n in range(t, len(jobs), nthreads):
            key, band, (uid, tok) = jobs[n]
            out[key] = (uid, tok, band, *post_bet(conn, tok, rid, band, 100, key))
        conn.close()
        return out
    out = {}
    for o in tpclient.run_threads(worker, [(t,) for t in range(nthreads)]):
        out.update(o)
    return out


def migrate_slot(rc, slot, src, dst):
    """Moves a slot by hand, as redis-cli --cluster reshard does: IMPORTING / MIGRATING, every
    key, then the slot's owner on every master."""
    src_id, dst_id = node_id(rc, src), node_id(rc, dst)
    assert redis(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id) == "OK"
    assert redis(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id) == "OK"
    while True:
        keys = redis(src, "CLUSTER", "GETKEYSINSLOT", slot, 500).split()
        if not keys:
            break
        r = redis(src, "MIGRATE", "127.0.0.1", dst, "", 0, 20000, "KEYS", *keys)
        assert r == "OK", r
    for p in [dst, src] + [p for p in rc.master_ports() if p not in (src, dst)]:
        assert redis(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id) == "OK"


NRECORDS = 200  # at least, bucket 0's records of the round: a hash table (> 128 fields)


def test_archival_finishes_a_bucket_whose_slot_moved_mid_scan():
    env = clusterlib.env(0)
    env.update({"TICKPOOL_GAME_BETTING_S": "4", "TICKPOOL_GAME_LIVE_S": "1",
                "TICKPOOL_GAME_RETAIN_S": "1", "TICKPOOL_GAME_IDEM_FILTER": "12m",
                "TP_TEST_ARCHIVE_COUNT": "16", "TP_TEST_ARCHIVE_PAUSE_MS": "700"})
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=env, workers=1, https=False) as s:
        tpclient.wait_game(s, timeout=30)
        users = [u for u in tpclient.make_users(s, 4 * clusterlib.BUCKETS, prefix="am")
                 if u[0] % clusterlib.BUCKETS == 0]
        assert len(users) >= 3, users
        rid = tpclient.fresh_open_round(s, min_left_ms=3500, timeout=60)["id"]
        first = bets_bytes(s, rid, [(f"am-{n}", n % 5, users[n % len(users)])
                                    for n in range(NRECORDS + 20)])
        ok = {k: v for k, v in first.items() if v[3] == 201}
        assert all(v[3] == 409 and b"round_not_open" in v[4] for k, v in first.items()
                   if k not in ok), [v[3:] for k, v in first.items() if k not in ok][:3]
        tag = clusterlib.bucket_tag(rc, 0)
        records, hot = tag + f":idem:{rid}", tag + ":idemhot"
        n = int(rc.cli(rc.ports[0], "HLEN", records))
        assert n == len(ok) and n >= NRECORDS, (n, len(ok))
        assert rc.cli(rc.ports[0], "OBJECT", "ENCODING", records) == "hashtable"
        assert int(rc.cli(rc.ports[0], "HLEN", hot)) == n
        slot = int(rc.cli(rc.ports[0], "CLUSTER", "KEYSLOT", hot))
        src = clusterlib.slot_owner(rc, hot)
        dst = next(p for p in rc.master_ports() if p != src)
        # Archival reaches bucket 0 once 16 newer rounds exist: the slot moves after its first
        # step there and long before its last (COUNT 16 in a table of 256 or more, 0.7 s apart).
        tpenv.wait_until(lambda: int(rc.cli(rc.ports[0], "HLEN", hot) or 0) < n, timeout=180,
                         interval=0.02, what="archival's first step in bucket 0")
        left = int(rc.cli(rc.ports[0], "HLEN", hot))
        migrate_slot(rc, slot, src, dst)
        assert clusterlib.slot_owner(rc, hot) == dst
        assert left > n // 2, (left, n)  # mid-scan
        g = "tp:{g}:"
        tpenv.wait_until(lambda: rc.cli(rc.ports[0], "EXISTS", g + f"round:{rid}") == "0" and
                         rc.cli(rc.ports[0], "ZSCORE", g + "rounds", rid) == "", timeout=120,
                         interval=0.2, what=f"round {rid} archived")
        print(f"archival across a migration: slot {slot} ({tag}) moved {src} -> {dst} with "
              f"{left} of round {rid}'s {n} hot entries left in bucket 0")
        # The cursor passed over records on the target (each of the ~200 left had a chance in
        # 16 of lying before it there), so the leader scanned the bucket again.
        assert "records left after a scan of a round's bucket" in s.log_text()
        # Every key of the round left the hot index into the filter (today's or yesterday's),
        # and its records are gone.
        c = redispy.Redis(host="127.0.0.1", port=dst, decode_responses=True)
        assert c.exists(records) == 0
        stale = [f for f, v in c.hgetall(hot).items() if v.startswith(f"{rid}:")]
        assert not stale, (len(stale), stale[:5])
        w = int(time.time() * 1000) // 86400000
        missing = [k for k, v in ok.items()
                   if not any(idemfilter.is_set(c, tag + ":", x, v[0], k) for x in (w, w - 1))]
        assert not missing, (len(missing), missing[:5])
        # Replays answer their first bytes from Postgres, and debit nothing.
        bal = {uid: tpclient.balance(s, tok) for uid, tok in users}
        again = bets_bytes(s, rid, [(k, v[2], v[:2]) for k, v in ok.items()])
        differ = [(k, v[3:], ok[k][3:]) for k, v in again.items() if v[3:] != ok[k][3:]]
        assert not differ, (len(differ), differ[:3])
        assert {uid: tpclient.balance(s, tok) for uid, tok in users} == bal
        clusterlib.healthy(s)
        assert clusterlib.audit_clean(s)


if __name__ == "__main__":
    tpenv.main()
