"""Archival under kill -9 (src/game/leader_archive.c), with a real Redis, Postgres and
tickpool: a leader killed between archival's steps leaves every round servable with the same
bytes, and no idempotency key that is neither in its hot index entry (with its record) nor in
the filter and Postgres; the next leader finishes the job, every bet in Postgres once, replays
answered as docs/http-api.md says, the audit clean. The states are the ones a kill -9 leaves:
one from a leader really killed inside a bucket's scan, one from the real steps (the scripts
and commands the leader sends) run up to the last; and, separately, one only an older version
could leave. Workers killed at random moments while archival runs leave no round that history
cannot serve.
"""

import os
import signal
import time

import idemfilter
import tpclient
import tpenv
from archivelib import (ENV, B, G, NBANDS, archived, bet_round, history, hot_index,
                        pg_round_keys, round_keys, to_older_version, wait_final)

SPAN_MS = 86400 * 1000  # the idempotency TTL (no TP_TEST_IDEM_TTL_S here)


def bets_kept(s, users, tag, nthreads=4):
    """Bets on every band of a fresh open round (from nthreads connections); returns its id and
    each 201 as (uid, token, key, band, stake, body)."""
    o = tpclient.fresh_open_round(s, 700)

    def worker(t):
        conn, out = tpclient.Http(s), []
        for i in range(t, 20, nthreads):
            uid, tok = users[i % len(users)]
            key, band, stake = f"{tag}-{o['id']}-{i}", i % NBANDS, 10 + i
            st, body = tpclient.bet(conn, tok, o["id"], band, stake, key)
            if st == 201:
                out.append((uid, tok, key, band, stake, body))
            else:
                assert st == 409 and body["error"]["code"] == "round_not_open", (st, body)
        conn.close()
        return out
    out = [x for got in tpclient.run_threads(worker, [(t,) for t in range(nthreads)])
           for x in got]
    assert len(out) >= 6, len(out)
    return o["id"], out


def in_filter(c, b, uid, key):
    """The key's bits are set in the window current now or the one before (what bets read)."""
    w = int(time.time() * 1000) // SPAN_MS
    return any(idemfilter.is_set(c, f"tp:{{b{b}}}:", x, uid, key) for x in (w, w - 1))


def keys_accounted(c, pg, bets):
    """Every bet's key has a hot index entry naming the round with its record (in the entry, or
    for an older version's entry in the round's records hash), or neither, and is in the filter
    with its bet in Postgres: what each idem_unindex.lua step keeps."""
    hot = hot_index(c)
    rounds = sorted(bets)
    in_pg = {(f"{u}:{k}", int(rid)) for u, k, rid in pg.psql(
        "SELECT user_id, idempotency_key, round_id FROM bets WHERE round_id IN (%s)"
        % ",".join(map(str, rounds)))}
    for rid, kept in bets.items():
        for uid, _, key, _, _, _ in kept:
            f, b = f"{uid}:{key}", uid % B
            old = c.hexists(f"tp:{{b{b}}}:idem:{rid}", f)
            v = hot.get((b, f), "")
            entry = v.startswith(f"{rid}:")
            if old or entry:
                assert entry and ("|" in v) != old, (rid, f, old, v)
            else:
                assert in_filter(c, b, uid, key) and (f, rid) in in_pg, (rid, f)


def replays_answered(s, c, bets):
    """Each key again: its first 201 body, no debit; another band with the key and a new key on
    the round: 409 as docs/http-api.md says for an archived round."""
    before = tpclient.balances(c, B)
    conn = tpclient.Http(s)
    for rid, kept in bets.items():
        for uid, tok, key, band, stake, body in kept:
            assert tpclient.bet(conn, tok, rid, band, stake, key) == (201, body), (rid, key)
        uid, tok, key, band, stake, _ = kept[0]
        st, got = tpclient.bet(conn, tok, rid, (band + 1) % NBANDS, stake, key)
        assert (st, got["error"]["code"]) == (409, "idempotency_conflict"), (st, got)
        st, got = tpclient.bet(conn, tok, rid, band, stake, f"new-{key}")
        assert (st, got["error"]["code"]) == (409, "round_not_open"), (st, got)
    conn.close()
    assert tpclient.balances(c, B) == before, "a replay moved money"


def unindex_sha(c):
    with open(os.path.join(tpenv.SRC, "scripts", "lua", "idem_unindex.lua")) as f:
        return c.script_load(f.read())


def unindex_bucket(c, pg, sha, b, rid, fields=None):
    """What archival's idem_unindex.lua steps do in bucket b (src/game/leader_archive.c, the
    window rule above unindex_step): every key of round rid (Postgres's list), or only
    `fields`."""
    now = int(time.time() * 1000)
    w = now // SPAN_MS
    args = dict(two=w >= 1 and now - w * SPAN_MS < 600000, since=now - SPAN_MS - 600000)
    prefix = f"tp:{{b{b}}}:"
    if fields is None:
        keys = pg_round_keys(pg, rid, b)
        assert idemfilter.archive_index(c, sha, prefix, b, rid, w, keys=keys, **args) >= 0
    elif fields:
        assert idemfilter.unindex(c, sha, prefix, b, rid, fields, w, **args) == len(fields)


def two_final_rounds(s, c, pg, users):
    """Two rounds with bets, final, in Postgres and behind the 16 newest (archival looks at no
    newer round): {round: bets_kept} and the bytes history shows of each."""
    bets = {}
    for tag in ("k1", "k2"):
        rid, kept = bets_kept(s, users, tag)
        wait_final(c, rid)
        bets[rid] = kept
    ids = ",".join(map(str, bets))
    tpenv.wait_until(lambda: pg.psql(f"SELECT count(*) FROM rounds WHERE id IN ({ids}) "
                                     "AND seed IS NOT NULL")[0][0] == "2",
                     timeout=30, what="both rounds in Postgres")
    time.sleep(1)  # the payouts drain behind the receipt
    before = {rid: history(s, rid, users) for rid in bets}
    tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) > max(bets) + 17,
                     timeout=60, what="17 newer rounds")
    for rid, kept in bets.items():
        for uid, _, key, _, _, _ in kept:
            assert hot_index(c).get((uid % B, f"{uid}:{key}"), "").startswith(f"{rid}:")
    return bets, before


def same_history(s, users, before):
    for rid, want in before.items():
        got = history(s, rid, users)
        for k in want:
            assert got[k] == want[k], (rid, k)


def finished_by_next_leader(s, c, pg, users, bets, before):
    """A server with a short retention archives both rounds: history unchanged, no key of them
    left in the hot index, each bet in Postgres once with its id, replays as documented, the
    audit clean."""
    s.env["TICKPOOL_GAME_RETAIN_S"] = "1"
    s.start()
    for rid in bets:
        tpenv.wait_until(lambda: archived(c, rid) and not round_keys(c, rid), timeout=60,
                         what=f"round {rid} archived by the next leader")
    same_history(s, users, before)
    assert not [v for v in hot_index(c).values() if int(v.split(":")[0]) in bets]
    keys_accounted(c, pg, bets)
    rows = pg.psql("SELECT round_id, user_id, idempotency_key, count(*), min(id) FROM bets "
                   "WHERE round_id IN (%s) GROUP BY 1, 2, 3" % ",".join(map(str, bets)))
    assert sorted((int(r), int(u), k, int(n), int(i)) for r, u, k, n, i in rows) == sorted(
        (rid, uid, key, 1, body["bet_id"]) for rid, kept in bets.items()
        for uid, _, key, _, _, body in kept)
    replays_answered(s, c, bets)
    code, out = tpclient.audit(s, wait="20")
    assert code == 0, out
    log = s.log_text()
    for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert bad not in log, log[log.find(bad) - 2000:log.find(bad) + 3000]


def kill9(s):
    os.killpg(s.proc.pid, signal.SIGKILL)
    s.stop()


def test_leader_killed_mid_archival():
    env = dict(ENV, TICKPOOL_GAME_RETAIN_S="3600")
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 3, "ak")
        bets, before = two_final_rounds(s, c, pg, users)
        r1, r2 = sorted(bets)
        # r2: the leader's real steps up to the last (mark; per bucket, idem_unindex.lua over
        # every key, then UNLINK of its keys; UNLINK of the hash and seed): a kill -9 before
        # the ZREM leaves this, the id still on the to-do list.
        # Done with the server stopped: a live leader finishes a marked round whatever
        # retain_s says, and one pass of its own between two of these steps archived the round
        # whole (CI, ASan build), leaving them no keys to delete.
        kill9(s)
        sha = unindex_sha(c)
        c.hset(G + f"round:{r2}", "archiving", "1")
        for b in range(B):
            unindex_bucket(c, pg, sha, b, r2)
            c.unlink(*[k for k in round_keys(c, r2) if f"{{b{b}}}" in k])
        c.unlink(G + f"round:{r2}", G + f"seed:{r2}")
        # r1: a leader archiving 2 keys a step, 60 s apart within a bucket, killed once its
        # first steps are done (the older rounds have no bets: archived at once).
        n1 = len(bets[r1])
        s.env.update({"TICKPOOL_GAME_RETAIN_S": "1", "TP_TEST_ARCHIVE_COUNT": "2",
                      "TP_TEST_ARCHIVE_PAUSE_MS": "60000"})
        s.start()

        def records_left():  # the hot entries naming r1, each with its record
            return sum(1 for v in hot_index(c).values() if v.startswith(f"{r1}:"))
        tpenv.wait_until(lambda: c.hget(G + f"round:{r1}", "archiving") == "1" and
                         0 < records_left() < n1, timeout=60, what=f"round {r1} mid-archival")
        kill9(s)
        left = records_left()
        assert 0 < left < n1 and c.exists(G + f"round:{r1}") and not archived(c, r2)
        print(f"    killed with {n1 - left} of round {r1}'s {n1} keys archived")
        keys_accounted(c, pg, bets)
        # Served while a leader resumes (a marked round is finished whatever retain_s says):
        # it takes one more step of r1's first bucket with keys left, then pauses again, r2
        # waiting behind it. Same bytes, every key accounted for, every replay its first answer.
        s.start()
        same_history(s, users, before)
        replays_answered(s, c, bets)
        keys_accounted(c, pg, bets)
        assert records_left() <= left
        kill9(s)
        del s.env["TP_TEST_ARCHIVE_COUNT"], s.env["TP_TEST_ARCHIVE_PAUSE_MS"]
        finished_by_next_leader(s, c, pg, users, bets, before)


def test_leader_killed_mid_archival_before_3949502():
    """The state a leader of 7ce53b6 up to 3949502 (exclusive) could leave: its steps removed a
    key's hot index entry (the key in the filter: set by the bet up to 5d903d1, by the step
    from then) but kept the round's records until the bucket's whole scan was done, then
    UNLINKed them with its other keys. Killed after bucket 0 and half-way through bucket 1:
    bucket 1 keeps every record, half of them with no entry. Today's step removes such records
    with no bits to set (idem_unindex.lua: "removed, bits set, by an earlier step"). The
    round's bets are made older-version ones first (records in idem:<round>, plain entries,
    as before session 13): today's leader finishes an older version's round."""
    env = dict(ENV, TICKPOOL_GAME_RETAIN_S="3600")
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 3, "ao")
        bets, before = two_final_rounds(s, c, pg, users)
        r1 = min(bets)
        bets = {r1: bets[r1]}
        before = {r1: before[r1]}
        kill9(s)  # the old leader's state is made with no leader running (see above)
        sha = unindex_sha(c)
        moved = to_older_version(c, r1)
        assert sorted(moved) == list(range(B)), moved
        c.hset(G + f"round:{r1}", "archiving", "1")
        unindex_bucket(c, pg, sha, 0, r1)
        c.unlink(*[k for k in round_keys(c, r1) if "{b0}" in k])
        records = f"tp:{{b1}}:idem:{r1}"
        mine = sorted(c.hkeys(records))
        dump = c.dump(records)
        unindex_bucket(c, pg, sha, 1, r1, mine[:len(mine) // 2])
        c.restore(records, 0, dump, replace=True)  # that version's step left the records
        hot = hot_index(c)
        assert [f for f in mine if (1, f) not in hot] == mine[:len(mine) // 2]
        s.start()  # served meanwhile (this leader may finish the marked round at once)
        same_history(s, users, before)
        kill9(s)
        finished_by_next_leader(s, c, pg, users, bets, before)


def test_kill9_during_archival_leaves_every_round_servable():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=ENV, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 3, "k9")
        for k in range(3):
            bet_round(s, users, f"k9{k}")
        tpenv.wait_until(lambda: int(c.zrevrange(G + "rounds", 0, 0)[0]) > 40, timeout=90,
                         what="40 rounds")
        # Kill the worker (the leader) at random moments while archival runs.
        for i in range(4):
            time.sleep(1.3 + 0.4 * i)
            for pid in s.worker_pids():
                os.kill(pid, signal.SIGKILL)
            tpenv.wait_until(lambda: s.http("GET", "/healthz")[0] == 200, timeout=20,
                             what="a restarted worker")
        top = int(c.zrevrange(G + "rounds", 0, 0)[0])
        st, lst = s.json("GET", f"/api/v1/rounds?before={top + 1}&limit=100")
        assert st == 200, lst
        ids = [x["id"] for x in lst["rounds"]]
        assert ids == list(range(top, max(0, top - 100), -1)), ids
        assert int(c.zcard(G + "rounds")) < top  # something was archived
        for x in lst["rounds"]:
            st, one = s.json("GET", f"/api/v1/rounds/{x['id']}")
            assert st == 200 and one["id"] == x["id"]


if __name__ == "__main__":
    tpenv.main()
