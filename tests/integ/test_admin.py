"""`tickpool admin` against a real server, Redis and Postgres: each command's effect and its
refusals, and the admin_actions rows the outbox writes to Postgres.

- usage: --help of admin and of every command, unknown commands and options, bad arguments
  (exit 2, nothing changed);
- grant: credit and correction, by username (any case) and #id, idempotent by --id, refused
  for an unknown user (exit 1), an amount that would make the balance negative (exit 1, no
  effect), a reused id with another amount; `tickpool audit` exact afterwards; grants, ledger and
  admin_actions rows in Postgres;
- status: leader, epoch, open round, workers of the host (--json);
- pause/resume: bets refused with 409 game_paused (HTTP) and bet_err (WebSocket) while paused,
  the open round locks and settles, no new round opens, pause twice and resume when running
  refused (exit 1), the next round opens on the betting grid after resume, one admin_actions
  row per action; a pause that lands within a boundary's lead (after the leader read it, before
  T) still opens nothing (round_boundary.lua checks it at T).
"""

import calendar
import json
import os
import re
import signal
import tempfile
import time

import msgpack
import websocket

import tpclient
import tpenv

BET_S = 2
BASE = {"TICKPOOL_GAME_BETTING_S": str(BET_S), "TICKPOOL_GAME_LIVE_S": "2",
        "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_START_BALANCE": "10000"}


def admin(s, *args):
    r = s.run_cli("admin", "--actor", "tester@ci", *args)
    return r.returncode, r.stdout, r.stderr


def rows(pg, sql):
    return pg.psql(sql)


def wait_rows(pg, sql, n, what):
    return tpenv.wait_until(lambda: (lambda r: r if len(r) == n else None)(pg.psql(sql)),
                            timeout=20, what=what)


def balance(s, token):
    st, v = s.json("GET", "/api/v1/me", headers=tpclient.auth(token))
    assert st == 200, (st, v)
    return v["balance"]


def test_usage_and_help():
    with tpenv.Redis() as r:
        s = tpenv.Server(redis=r, env=BASE)
        for args in (("--help",), ("status", "--help"), ("pause", "-h"), ("resume", "--help"),
                     ("grant", "--help")):
            rc, out, err = admin(s, *args)
            assert rc == 0 and out.startswith("Usage: tickpool"), (args, rc, out, err)
        rc, out, _ = admin(s, "--help")
        for cmd in ("status", "pause", "resume", "grant"):
            assert f"\n  {cmd}" in out, out
        cases = [((), "Usage"), (("frobnicate",), "unknown command"),
                 (("status", "--bogus"), "unknown option"), (("status", "extra"), "unexpected"),
                 (("pause", "--reason"), "wants a value"),
                 (("pause", "--reason", ""), "--reason wants"),
                 (("pause", "--reason", "a\x01b"), "--reason wants"),
                 (("pause", "--reason", "x" * 201), "--reason wants"),
                 (("grant", "alice", "100"), "--reason is required"),
                 (("grant", "alice", "--reason", "x"), "wants USER and AMOUNT"),
                 (("grant", "alice", "0", "--reason", "x"), "non-zero"),
                 (("grant", "alice", "1.5", "--reason", "x"), "non-zero"),
                 (("grant", "alice", "-07", "--reason", "x"), "non-zero"),
                 (("grant", "alice", "1000000000000000", "--reason", "x"), "non-zero"),
                 (("grant", "alice", "5", "--reason", "x", "--id", "a b"), "--id wants"),
                 (("grant", "alice", "5", "--reason", "x", "--reason", "y"), "given twice"),
                 (("grant", "a!ice", "5", "--reason", "x"), "no username"),
                 (("grant", "#0", "5", "--reason", "x"), "#ID wants"),
                 (("grant", "#x", "5", "--reason", "x"), "#ID wants")]
        for args, want in cases:
            rc, out, err = admin(s, *args)
            assert rc == 2 and want in err, (args, rc, out, err)
        # Nothing was written by any of them.
        assert r.client().keys("tp:*") == [], r.client().keys("tp:*")
        # Redis unreachable: exit 3.
        s.env["TICKPOOL_REDIS_URL"] = "redis://127.0.0.1:%d" % tpenv.free_port()
        rc, out, err = admin(s, "status")
        assert rc == 3 and "cannot connect to Redis" in err, (rc, out, err)


def test_grant_and_audit():
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        with tpenv.Server(redis=r, pg=pg, env=BASE) as s:
            (uid, tok), (uid2, tok2) = tpclient.make_users(s, 2, prefix="Grantee")
            assert balance(s, tok) == 10000
            # Credit by username in another case, then a correction by #id.
            rc, out, err = admin(s, "grant", "GRANTEE0", "2500", "--reason", "goodwill",
                                 "--id", "ticket-17")
            assert rc == 0 and f"balance now 12500 (grant id ticket-17:{uid})" in out, (out, err)
            assert balance(s, tok) == 12500
            # The same command again (a retry): nothing changes, exit 0.
            rc, out, err = admin(s, "grant", "grantee0", "2500", "--reason", "goodwill",
                                 "--id", "ticket-17")
            assert rc == 0 and "applied before: nothing changed" in out, (out, err)
            assert balance(s, tok) == 12500
            # The same id with another amount: refused.
            rc, out, err = admin(s, "grant", "grantee0", "2600", "--reason", "x", "--id",
                                 "ticket-17")
            assert rc == 1 and "used before" in err, (out, err)
            rc, out, err = admin(s, "grant", f"#{uid}", "-12500", "--reason", "chargeback",
                                 "--id", f"cb-1:{uid}")
            assert rc == 0 and "balance now 0" in out, (out, err)
            # Beyond the balance: refused with no effect.
            before = r.client().hgetall("tp:{b0}:grants")
            rc, out, err = admin(s, "grant", f"#{uid2}", "-10001", "--reason", "too much")
            assert rc == 1 and "has 10000" in err and "negative" in err, (out, err)
            assert r.client().hgetall("tp:{b0}:grants") == before
            assert balance(s, tok2) == 10000
            # Unknown users.
            for who in ("nobody", "#999999"):
                rc, out, err = admin(s, "grant", who, "5", "--reason", "x")
                assert rc == 1 and "no such user" in err, (who, out, err)
            # A generated id is printed, and unique.
            rc, out, err = admin(s, "grant", "grantee1", "1", "--reason", "a")
            rc2, out2, _ = admin(s, "grant", "grantee1", "1", "--reason", "a")
            assert rc == rc2 == 0 and out != out2 and f":{uid2})" in out, (out, out2)
            assert balance(s, tok2) == 10002
            # The audit stays exact, Postgres included.
            code, text = tpclient.audit(s)
            assert code == 0, text
            assert "grants: redis 6 summing to 10002, postgres 6 summing to 10002" in text, text
            # admin_actions: one row per applied grant, with who, what and why.
            got = wait_rows(pg, "SELECT id, action, actor, user_id, detail->>'amount', reason "
                            "FROM admin_actions ORDER BY at, id", 4, "4 admin_actions rows")
            assert got[0] == [f"grant:ticket-17:{uid}", "grant", "tester@ci", str(uid), "2500",
                              "goodwill"], got
            assert got[1] == [f"grant:cb-1:{uid}", "grant", "tester@ci", str(uid), "-12500",
                              "chargeback"], got
            assert pg.psql(f"SELECT amount FROM grants WHERE id = 'cb-1:{uid}'") == [["-12500"]]


def test_status():
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        with tpenv.Server(redis=r, pg=pg, env=BASE, workers=2) as s:
            tpclient.wait_game(s)
            lease = tpclient.lease(r.client())

            def two_workers():
                rc, out, err = admin(s, "status", "--json")
                assert rc == 0, (out, err)
                v = json.loads(out)
                return v if len(v["workers"]) == 2 else None
            v = tpenv.wait_until(two_workers, timeout=10, what="both workers registered")
            assert v["leader"]["holder"] == lease[0] and v["leader"]["pid"] == lease[1], v
            assert v["leader"]["epoch"] == lease[2] == v["epoch"], v
            assert v["leader"]["host"] == v["workers"][0]["host"], v
            assert sorted(w["pid"] for w in v["workers"]) == sorted(s.worker_pids()), v
            assert v["paused"] is None and v["paused_buckets"] == [0, 1], v
            assert v["open"]["id"] >= 1 and v["redis"]["used_memory"] > 0, v
            assert {h["state"] for h in v["hot_rounds"]} <= {"open", "live", "settling"}, v
            # The Lua scripts are built into the binary: admin and verify run from any directory.
            with tempfile.TemporaryDirectory() as elsewhere:
                r2 = s.run_cli("admin", "status", "--json", cwd=elsewhere)
                assert r2.returncode == 0 and json.loads(r2.stdout)["epoch"] >= 1, r2
                r2 = s.run_cli("verify", str(v["open"]["id"]), cwd=elsewhere)
                assert "cannot reach Redis" not in r2.stderr and r2.returncode in (0, 1), r2
            rc, out, err = admin(s, "status")
            assert rc == 0 and out.startswith("leader     pid-") and "game       running" in out
            assert "workers    2 alive" in out, out


def bet_http(s, tok, rid, key):
    return s.http("POST", "/api/v1/bets", {"round_id": rid, "band": 0, "stake": 100},
                  tpclient.auth(tok, key))


def ws_until(ws, t, timeout=10):
    """Reads messages until one of type t (ticks flow meanwhile); returns it."""
    end = time.time() + timeout
    while time.time() < end:
        m = msgpack.unpackb(ws.recv())
        if m.get("t") == t:
            return m
    raise AssertionError(f"no {t} message within {timeout} s")


def ws_bet(s, tok, rid, key):
    """One bet over /ws; returns its bet_ok or bet_err message."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws?token={tok}",
                                     subprotocols=["tickpool.v1"], timeout=10)
    try:
        ws.send_binary(msgpack.packb({"t": "bet", "req": 7, "key": key, "round_id": rid,
                                      "band": 0, "stake": 100}))
        end = time.time() + 10
        while time.time() < end:
            m = msgpack.unpackb(ws.recv())
            if m.get("t") in ("bet_ok", "bet_err"):
                return m
        raise AssertionError("no answer to a WebSocket bet")
    finally:
        ws.close()


def test_pause_resume():
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        with tpenv.Server(redis=r, pg=pg, env=BASE) as s:
            (uid, tok), = tpclient.make_users(s, 1, prefix="pauser")
            rc, out, err = admin(s, "resume")
            assert rc == 1 and "not paused" in err, (out, err)
            o = tpclient.fresh_open_round(s, min_left_ms=1200)
            st, _, _ = bet_http(s, tok, o["id"], "before")
            assert st == 201
            ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws",
                                             subprotocols=["tickpool.v1"], timeout=10)
            assert ws_until(ws, "snapshot")["paused"] is None
            t0 = int(time.time() * 1000)
            rc, out, err = admin(s, "pause", "--reason", "db maintenance")
            assert rc == 0 and out.startswith("paused at"), (out, err)
            c = r.client()
            last = int(c.zrevrange("tp:{g}:rounds", 0, 0)[0])  # o, or o + 1 if o just locked
            # Players are told: the `pause` message, /rounds/current, a new socket's snapshot.
            m = ws_until(ws, "pause")
            assert m["paused"]["reason"] == "db maintenance", m
            assert t0 <= m["paused"]["since"] <= time.time() * 1000, (t0, m)
            st, cur = s.json("GET", "/api/v1/rounds/current")
            assert st == 200 and cur["paused"] == m["paused"], cur
            # Bets are refused at once, over HTTP and WebSocket, with no effect.
            st, _, body = bet_http(s, tok, last, "during")
            assert st == 409 and json.loads(body)["error"]["code"] == "game_paused", (st, body)
            assert ws_bet(s, tok, last, "ws-during")["code"] == "game_paused"
            # A lost bucket copy: status warns, a second pause repairs it and is refused.
            c.delete("tp:{b0}:paused")
            rc, out, err = admin(s, "status")
            assert "WARNING: 0 of 1 bucket copies say paused" in out, out
            rc, out, err = admin(s, "pause")
            assert rc == 1 and "already paused" in err and "db maintenance" in err, (out, err)
            assert c.exists("tp:{b0}:paused") and "WARNING" not in admin(s, "status")[1]
            assert "ts=" not in err, err  # no server log lines in a command's output
            # The rounds in flight lock and settle; no new round opens.
            tpenv.wait_until(lambda: c.zcard("tp:{g}:unfinished") == 0, timeout=15,
                             what="the rounds in flight settle")
            assert c.hget(f"tp:{{g}}:round:{o['id']}", "state") == "settled"
            time.sleep(BET_S + 0.5)
            assert c.hget("tp:{g}:current", "open") is None
            assert c.zrevrange("tp:{g}:rounds", 0, 0) == [str(last)]
            # A paused node stays ready (200 "paused"), with no open round.
            st, _, body = s.http("GET", "/readyz")
            v = json.loads(body)
            assert st == 200 and v["status"] == "paused" and v["open_round"] == 0, (st, body)
            w2 = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws",
                                             subprotocols=["tickpool.v1"], timeout=10)
            assert ws_until(w2, "snapshot")["paused"] == m["paused"]
            w2.close()
            # Resume: the next round opens at the next betting boundary.
            t0 = time.time() * 1000
            rc, out, err = admin(s, "resume", "--reason", "done")
            assert rc == 0 and "the next round opens at" in out, (out, err)
            assert ws_until(ws, "pause")["paused"] is None
            ws.close()
            nxt = tpclient.wait_game(s, timeout=30)["open"]
            assert nxt["id"] == last + 1 and nxt["opens_at"] % (BET_S * 1000) == 0, nxt
            assert s.json("GET", "/api/v1/rounds/current")[1]["paused"] is None
            # The printed next-round time is the next round's, not the resume's (they once shared
            # a buffer and printed the same time): on the betting grid, after the resume and at
            # most one betting phase later (equal only for a resume on the grid's exact ms).
            resumed = re.search(r"resumed at (\S+) ", out).group(1)
            said = re.search(r"the next round opens at (\S+)", out).group(1)
            sec = calendar.timegm(time.strptime(said, "%Y-%m-%dT%H:%M:%SZ"))
            r_sec = calendar.timegm(time.strptime(resumed, "%Y-%m-%dT%H:%M:%SZ"))
            assert said != resumed and sec % BET_S == 0 and r_sec < sec <= r_sec + BET_S, out
            assert t0 - BET_S * 1000 <= nxt["opens_at"] <= t0 + BET_S * 1000, (t0, nxt)
            st, _, _ = bet_http(s, tok, nxt["id"], "after")
            assert st == 201
            got = wait_rows(pg, "SELECT action, actor, reason, user_id FROM admin_actions "
                            "ORDER BY at", 2, "pause and resume rows")
            assert got == [["pause", "tester@ci", "db maintenance", ""],
                           ["resume", "tester@ci", "done", ""]], got
            code, text = tpclient.audit(s)
            assert code == 0, text


def test_pause_survives_leader_kill():
    """kill -9 of the lease holder while paused: the next leader reads the pause before it acts,
    so no round opens and bets stay refused; resume under the new leader opens the next round."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        with tpenv.Server(redis=r, pg=pg, env=BASE, workers=2) as s:
            (uid, tok), = tpclient.make_users(s, 1, prefix="failover")
            c = r.client()
            # The pause comes well before the boundary's step is prepared (250 ms before its
            # lock), so that boundary opens nothing.
            o = tpclient.fresh_open_round(s, min_left_ms=1200)
            rc, out, err = admin(s, "pause", "--reason", "failover drill")
            assert rc == 0, (out, err)
            last = int(c.zrevrange("tp:{g}:rounds", 0, 0)[0])
            old = tpclient.lease(c)
            os.kill(old[1], signal.SIGKILL)
            new = tpenv.wait_until(lambda: (lambda l: l if l and l[0] != old[0] else None)(
                tpclient.lease(c)), timeout=15, interval=0.02, what="a new leader")
            assert new[2] > old[2]
            # Rounds in flight end; nothing new opens for several betting phases.
            tpenv.wait_until(lambda: c.zcard("tp:{g}:unfinished") == 0, timeout=20,
                             what="every round in flight ends")
            time.sleep(3 * BET_S)
            assert int(c.zrevrange("tp:{g}:rounds", 0, 0)[0]) == last
            assert c.hget("tp:{g}:current", "open") is None
            st, _, body = bet_http(s, tok, last, "while-paused")
            assert st == 409 and json.loads(body)["error"]["code"] == "game_paused", (st, body)
            rc, out, err = admin(s, "status", "--json")
            v = json.loads(out)
            assert v["paused"]["reason"] == "failover drill" and v["leader"]["epoch"] == new[2], v
            # Resume with the new leader; kill it too: the next one keeps running the game.
            rc, out, err = admin(s, "resume")
            assert rc == 0, (out, err)
            nxt = tpclient.wait_game(s, timeout=30)["open"]
            assert nxt["id"] == last + 1, nxt
            os.kill(new[1], signal.SIGKILL)
            tpenv.wait_until(lambda: (lambda l: l and l[0] != new[0])(tpclient.lease(c)),
                             timeout=15, what="a third leader")
            tpenv.wait_until(lambda: int(c.zrevrange("tp:{g}:rounds", 0, 0)[0]) > nxt["id"],
                             timeout=15, what="rounds open again after the second kill")
            st, _, _ = bet_http(s, tok, tpclient.fresh_open_round(s, 800)["id"], "after")
            assert st == 201
            code, text = tpclient.audit(s)
            assert code == 0, text


def pause_now(c, pause_sha, buckets, action_id):
    """What `tickpool admin pause` does (src/cli/admin_game.c), from here so that it lands at a
    chosen instant: every bucket's copy, then pause.lua. Returns its reply."""
    now = int(time.time() * 1000)
    for b in range(buckets):
        c.set("tp:{b%d}:paused" % b, now)
    return c.evalsha(pause_sha, 2, "tp:{g}:pause", "tp:{g}:outbox", "pause", now, action_id,
                     "tester@ci", "within the lead")


def test_pause_within_boundary_lead():
    """A pause acknowledged after the leader prepared a boundary (its step starts 250 ms before
    the lock time T, src/game/leader_internal.h) and before T: round_boundary.lua finds the pause
    at T, so the open round locks, the live one closes, and no round opens; /rounds/current shows
    open null with the locked round live, and after the resume the next round is max id + 1.
    The pause lands 60 ms before T; if the leader's read of the pause was later than that on a
    loaded host (the boundary is then planned paused, the old path) or the pause later than T,
    the next boundary is tried, up to 4."""
    env = dict(BASE, TICKPOOL_GAME_BUCKETS="2")
    with tpenv.Redis() as r, tpenv.Postgres() as pg:
        with tpenv.Server(redis=r, pg=pg, env=env) as s:
            c = r.client()
            with open(os.path.join(tpenv.SRC, "scripts", "lua", "pause.lua")) as f:
                pause_sha = c.script_load(f.read())
            tpclient.wait_game(s)
            for attempt in range(4):
                o = tpclient.fresh_open_round(s, min_left_ms=600)
                while o["id"] < 2:  # a boundary with a live round to close
                    time.sleep(max(0.0, o["locks_at"] / 1000.0 - time.time()) + 0.1)
                    o = tpclient.fresh_open_round(s, min_left_ms=600)
                n, t = o["id"], o["locks_at"]
                time.sleep(max(0.0, (t - 60) / 1000.0 - time.time()))
                assert pause_now(c, pause_sha, 2, "lead-%d" % attempt)[0] == "ok"
                time.sleep(max(0.0, (t + 700) / 1000.0 - time.time()))
                hit = ("boundary: game paused at T, no round opened\" locked=%d skipped=%d"
                       % (n, n + 1)) in s.log_text()
                if hit:
                    break
                rc, out, err = admin(s, "resume")
                assert rc == 0, (out, err)
                tpclient.wait_game(s)
            assert hit, "no pause landed within a boundary's lead in 4 tries"
            # The leader's `boundary` line says so: nothing opened, no lock time, the id skipped.
            line = [l for l in s.log_text().splitlines()
                    if 'msg="boundary"' in l and " locked=%d " % n in l]
            assert len(line) == 1, line
            assert " opened=0 locks_at=0 paused_at_t=%d " % (n + 1) in line[0], line[0]
            # The close and the lock went on; the open did not (no record, seed or id).
            assert c.hget("tp:{g}:round:%d" % n, "state") == "live"
            assert c.hget("tp:{g}:round:%d" % (n - 1), "state") in ("settling", "settled")
            assert not c.exists("tp:{g}:round:%d" % (n + 1), "tp:{g}:seed:%d" % (n + 1))
            assert int(c.zrevrange("tp:{g}:rounds", 0, 0)[0]) == n
            assert c.hgetall("tp:{g}:current") == {"live": str(n)}

            def shown():
                st, v = s.json("GET", "/api/v1/rounds/current")
                return v if st == 200 and v.get("paused") else None
            cur = tpenv.wait_until(shown, timeout=15, what="/rounds/current shows the pause")
            assert cur["open"] is None and cur["live"]["id"] == n, cur
            # Nothing opens while paused; the next step did not try again.
            time.sleep(2 * BET_S)
            assert int(c.zrevrange("tp:{g}:rounds", 0, 0)[0]) == n
            assert s.log_text().count("skipped=%d" % (n + 1)) == 1
            rc, out, err = admin(s, "resume")
            assert rc == 0, (out, err)
            nxt = tpclient.wait_game(s, timeout=30)["open"]
            assert nxt["id"] == n + 1, nxt
            code, text = tpclient.audit(s)
            assert code == 0, text


def test_hot_index_leaks_counted_and_pruned():
    """Leaked hot index entries (docs/operations.md §4: an older version's archival leaves a
    round's entries naming a round gone from Redis): `tickpool audit` counts them, past their
    TTL or not, without failing; `admin hot-index-prune --dry-run` changes nothing; `admin
    hot-index-prune` removes only the leaked ones past their TTL (their 24 h over: no filter
    bits either), never one within its TTL (its key's only idempotency guard) nor an old one
    naming a hot round; an old one naming a round not in Redis before or after it was read (here
    one never opened, as a round id reused after Redis lost every round would be) is leaked too.
    The audit then counts what is left. Fast rounds (archivelib.ENV) so that round 1 is
    archived: the leaks name it."""
    import archivelib
    import idemfilter
    with tpenv.Postgres() as pg, tpenv.Redis() as r, \
            tpenv.Server(redis=r, pg=pg, env=archivelib.ENV, https=False) as s:
        c = r.client()
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 2, "hl")
        tpenv.wait_until(lambda: archivelib.archived(c, 1), timeout=60, what="round 1 archived")
        uid = users[0][0]
        b = uid % archivelib.B
        hot_key = f"tp:{{b{b}}}:idemhot"
        now = int(time.time() * 1000)
        day = 86400 * 1000
        newest = int(c.zrevrange(archivelib.G + "rounds", 0, 0)[0])
        newer = newest + 1000
        # The newest hot round stays hot through the test (archival keeps the newest 16): an
        # old entry naming it is not leaked, however old (a key of a round still in Redis).
        fabricated = {f"{uid}:leak-old": f"1:{now - 2 * day}|901|0|10|100",   # leaked, past TTL
                      f"{uid}:leak-new": f"1:{now - 1000}|902|0|10|100",      # leaked, within
                      f"{uid}:new-old": f"{newer}:{now - 2 * day}|903|0|10|100",  # leaked, past
                      f"{uid}:hot-old": f"{newest}:{now - 2 * day}|904|0|10|100"}  # not leaked
        c.hset(hot_key, mapping=fabricated)

        def ours():
            return {f: v for f, v in c.hgetall(hot_key).items() if f in fabricated}
        code, out = tpclient.audit(s)
        assert code == 0, out
        assert "4 entries, 3 naming a round no longer in Redis (leaked by an older version's " \
            "archival" in out and ": 2 past their TTL" in out, out
        rc, out, err = admin(s, "hot-index-prune", "--dry-run")
        assert rc == 0 and "3 naming a round no longer in Redis (leaked), 2 of them past their " \
            "TTL" in out and "dry run: nothing removed" in out, (out, err)
        assert ours() == fabricated
        rc, out, err = admin(s, "hot-index-prune")
        assert rc == 0 and "removed 2 leaked entries past their TTL" in out, (out, err)
        assert "1 leaked entries are within their TTL" in out, out
        assert set(fabricated) - set(ours()) == {f"{uid}:leak-old", f"{uid}:new-old"}, ours()
        w = now // day
        assert not any(idemfilter.is_set(c, f"tp:{{b{b}}}:", x, str(uid), k)
                       for x in (w, w - 1) for k in ("leak-old", "new-old"))
        rc, out, err = admin(s, "hot-index-prune", "now")
        assert rc == 2 and len(ours()) == 2, (rc, out, err)
        code, out = tpclient.audit(s)
        assert code == 0 and "2 entries, 1 naming a round no longer in Redis" in out \
            and ": 0 past their TTL" in out, out


def test_hot_index_leaks_counted_with_no_hot_round():
    """With no round in Redis at all (tp:{g}:rounds empty: every round archived, e.g. by an old
    version, the game idle), every hot index entry names a round gone from Redis: the audit counts
    them all (until session 15 it took every round above the newest hot one, 0 then, as opened
    after its read, and said none), and hot-index-prune removes the past-TTL one, never the one
    within its TTL. No server runs: nothing opens a round meanwhile."""
    import idemfilter
    with tpenv.Redis() as r:
        s = tpenv.Server(redis=r, migrate=False, env={"TICKPOOL_GAME_BUCKETS": "2"})
        c = r.client()
        now = int(time.time() * 1000)
        day = 86400 * 1000
        entries = {"7:old": f"3:{now - 2 * day}|901|0|10|100",   # leaked, past its TTL
                   "7:new": f"5:{now - 1000}|902|1|10|100"}       # leaked, within its TTL
        # One in each part of the hot key index: audit and prune read both.
        c.hset("tp:{b1}:idemyoung", "7:old", entries["7:old"])
        c.hset("tp:{b1}:idemhot", "7:new", entries["7:new"])
        # The filter whole, as the leader builds it: prune's step waits for it.
        idemfilter.build(c, "tp:{b1}:", now // day, 48)
        assert c.zcard("tp:{g}:rounds") == 0
        a = s.run_cli("audit", "--redis-only")
        code, out = a.returncode, a.stdout + a.stderr
        assert code == 0 and "2 entries, 2 naming a round no longer in Redis" in out \
            and ": 1 past their TTL" in out, out
        rc, out, err = admin(s, "hot-index-prune")
        assert rc == 0 and "2 naming a round no longer in Redis (leaked), 1 of them past their " \
            "TTL" in out and "removed 1 leaked entries past their TTL" in out, (out, err)
        assert c.hgetall("tp:{b1}:idemhot") == {"7:new": entries["7:new"]}
        assert not c.exists("tp:{b1}:idemyoung")
        assert not idemfilter.is_set(c, "tp:{b1}:", now // day, "7", "old")


if __name__ == "__main__":
    tpenv.main()
