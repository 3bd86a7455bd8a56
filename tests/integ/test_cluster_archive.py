"""Archival across a slot migration (Redis Cluster, 3 + 3, game.buckets = 12, Postgres):
bucket 0's slot moves while archival walks a round's idempotency keys there (more than a
listpack's 128) in small steps far apart (the test hooks TP_TEST_ARCHIVE_COUNT and
TP_TEST_ARCHIVE_PAUSE_MS, docs/operations.md §4). Archival once walked them with an HSCAN of
the round's records hash, whose cursor then went on in the target's hash table and passed over
fields (their hot entries leaked, with no filter bits); it later ended a bucket when the records
were gone. Since the records live in the hot entries (session 13) it takes the round's keys from
Postgres, a list no migration reorders: every key in the filter, no hot entry left, replays
answer their first bytes and debit nothing, the audit clean.
"""

import http.client
import json
import time

import redis as redispy

import clusterlib
import idemfilter
import tpclient
import tpenv


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


NRECORDS = 200  # at least, bucket 0's keys of the round (> 128 fields)


def test_archival_finishes_a_bucket_whose_slot_moved_mid_scan():
    env = clusterlib.env(0)
    env.update({"TICKPOOL_GAME_BETTING_S": "4", "TICKPOOL_GAME_LIVE_S": "1",
                "TICKPOOL_GAME_RETAIN_S": "1", "TICKPOOL_GAME_IDEM_FILTER": "12m",
                "TP_TEST_ARCHIVE_COUNT": "32", "TP_TEST_ARCHIVE_PAUSE_MS": "3000"})
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
        records, hot, young = tag + f":idem:{rid}", tag + ":idemhot", tag + ":idemyoung"

        def entries():  # the hot key index's two parts
            return sum(int(rc.cli(rc.ports[0], "HLEN", k) or 0) for k in (hot, young))

        n = entries()
        assert n == len(ok) and n >= NRECORDS, (n, len(ok))
        assert rc.cli(rc.ports[0], "EXISTS", records) == "0"  # the records are in the entries
        slot = int(rc.cli(rc.ports[0], "CLUSTER", "KEYSLOT", hot))
        src = clusterlib.slot_owner(rc, hot)
        dst = next(p for p in rc.master_ports() if p != src)
        # Archival reaches bucket 0 once 16 newer rounds exist: the slot moves after its first
        # step there, before its second (COUNT 32 in a table of 256 or more, steps 3 s apart).
        tpenv.wait_until(lambda: entries() < n, timeout=180,
                         interval=0.02, what="archival's first step in bucket 0")
        t = time.monotonic()
        left = entries()
        clusterlib.migrate_slot(rc, slot, src, dst)
        took = time.monotonic() - t
        assert clusterlib.slot_owner(rc, hot) == dst
        # No step ran during the migration: the steps before and after it are on two nodes.
        assert entries() == left and left > n // 2, (left, n, took)
        g = "tp:{g}:"
        tpenv.wait_until(lambda: rc.cli(rc.ports[0], "EXISTS", g + f"round:{rid}") == "0" and
                         rc.cli(rc.ports[0], "ZSCORE", g + "rounds", rid) == "", timeout=120,
                         interval=0.2, what=f"round {rid} archived")
        print(f"archival across a migration: slot {slot} ({tag}) moved {src} -> {dst} in "
              f"{took:.2f} s, {left} of round {rid}'s {n} hot entries left in bucket 0")
        # Every key of the round left the hot index into the filter (today's or yesterday's).
        c = redispy.Redis(host="127.0.0.1", port=dst, decode_responses=True)
        assert c.exists(records) == 0
        stale = [f for k in (hot, young) for f, v in c.hgetall(k).items()
                 if v.startswith(f"{rid}:")]
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
