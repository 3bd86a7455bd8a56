"""Token revocation and disabled accounts against a real server with two workers and a real
Redis: logout (DELETE /api/v1/sessions/current) and password change (POST /api/v1/me/password)
revoke the user's earlier tokens on BOTH workers (each told by a published message: no worker
reloads on a timer, so a lost message shows as a token that stays valid); a WebSocket
authenticated with a revoked token is closed; a disabled account cannot sign in, its tokens and
bets are refused (403 account_disabled, HTTP and WebSocket) on both workers, also by the bet
script before a worker hears of it, and enabling restores it.

Each worker is reached deterministically: keep-alive connections are opened until one is held by
each worker (the X-Tickpool-Worker header of /healthz).
"""

import http.client
import json
import os
import time

import msgpack
import redis as redislib
import tpenv
import websocket

from test_bets import bet, code, open_round

PW = "password1"


def server(r, pg=None, **env):
    e = {"TICKPOOL_GAME_START_BALANCE": "100000", "TICKPOOL_GAME_MIN_STAKE": "100",
         "TICKPOOL_GAME_MAX_STAKE": "100000"}
    e.update(env)
    return tpenv.Server(redis=r, pg=pg, env=e, workers=2, https=False, migrate=pg is not None)


def worker_conns(s):
    """One keep-alive HTTPConnection held by each worker: {index: conn} (X-Tickpool-Worker)."""
    conns, spare = {}, []
    for _ in range(64):
        c = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
        c.request("GET", "/healthz")
        resp = c.getresponse()
        resp.read()
        w = resp.getheader("X-Tickpool-Worker")
        if w is not None and w not in conns:
            conns[w] = c
        else:
            spare.append(c)
        if len(conns) == 2:
            break
    for c in spare:
        c.close()
    assert len(conns) == 2, "could not reach both workers"
    return conns


def req(conn, method, path, token=None, body=None):
    h = {}
    if token:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, (json.loads(data) if data else None)


def signup(s, name):
    # Server.start waited for every worker to be ready (Redis, token secret, account state): a
    # 503 here is a failure, not a slow start.
    st, v = s.json("POST", "/api/v1/accounts", {"username": name, "password": PW})
    assert st == 201, (st, v)
    return v["user_id"], v["token"]


def signin(s, name, pw=PW):
    return s.json("POST", "/api/v1/sessions", {"username": name, "password": pw})


def until_everywhere(conns, token, want, limit=30):
    """Polls GET /api/v1/me with `token` on every worker until each answers `want`; returns the
    seconds it took, printed, not asserted (a message takes milliseconds; `limit` only catches
    one that never arrives, the workers reloading on no timer)."""
    t0 = time.monotonic()
    left = dict(conns)
    while left:
        for pid, c in list(left.items()):
            st, _ = req(c, "GET", "/api/v1/me", token)
            if st == want:
                del left[pid]
        el = time.monotonic() - t0
        assert not left or el < limit, f"not {want} on workers {list(left)} after {el:.2f} s"
        time.sleep(0.01)
    return time.monotonic() - t0


def ws_open(s, token):
    return websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws?token={token}",
                                       subprotocols=["tickpool.v1"], timeout=30)


def ws_until(ws, pred, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        op, data = ws.recv_data()
        if op == websocket.ABNF.OPCODE_CLOSE:
            return ("close", int.from_bytes(data[:2], "big"), data[2:].decode())
        m = msgpack.unpackb(data)
        if pred(m):
            return m
    raise AssertionError("no matching message")


def test_logout_revokes_on_both_workers():
    with tpenv.Redis() as r, server(r) as s:
        uid, t1 = signup(s, "alice")
        time.sleep(0.005)
        _, v = signin(s, "alice")
        t2 = v["token"]
        conns = worker_conns(s)
        for c in conns.values():
            assert req(c, "GET", "/api/v1/me", t1)[0] == 200
        ws = ws_open(s, t1)
        ws_until(ws, lambda m: m.get("t") == "snapshot")
        time.sleep(0.005)
        # Logging out with t2 revokes t2 and t1 (signed before it), not a token signed after.
        _, v = signin(s, "alice")
        t3 = v["token"]
        st, _, body = s.http("DELETE", "/api/v1/sessions/current",
                             headers={"Authorization": "Bearer " + t2})
        assert st == 204 and body == b"", (st, body)
        took = max(until_everywhere(conns, t2, 401), until_everywhere(conns, t1, 401))
        # A bet on t1's socket once its worker knows: refused there (session.c's access check, on
        # the bet read from its bytes), unless housekeeping closed the socket first. Reaching the
        # bet script instead would answer round_not_found (or bet_ok).
        try:
            ws.send_binary(msgpack.packb({"t": "bet", "req": 1, "key": "w", "round_id": 5,
                                          "band": 0, "stake": 100}))
        except (OSError, websocket.WebSocketConnectionClosedException):
            pass
        m = ws_until(ws, lambda m: m.get("t") in ("bet_ok", "bet_err"))
        closed = m == ("close", 1008, "token revoked")
        assert closed or (m["t"] == "bet_err" and m["code"] == "unauthorized"), m
        for c in conns.values():
            assert req(c, "GET", "/api/v1/me", t3)[0] == 200
        st, v = req(conns[min(conns)], "GET", "/api/v1/me", t1)
        assert v["error"]["code"] == "unauthorized" and "revoked" in v["error"]["message"]
        # The socket authenticated with t1 is closed by its worker's housekeeping (1 s period;
        # ws_until's deadline only catches a socket never closed).
        assert closed or ws_until(ws, lambda m: False) == ("close", 1008, "token revoked")
        ws.close()
        # A revoked token cannot log out again, open a socket or bet.
        assert s.http("DELETE", "/api/v1/sessions/current",
                      headers={"Authorization": "Bearer " + t1})[0] == 401
        ws = ws_open(s, t1)
        assert ws_until(ws, lambda m: False) == ("close", 1008, "invalid token")
        ws.close()
        assert bet(s, {"Authorization": "Bearer " + t2}, {"round_id": 5, "band": 0,
                                                          "stake": 100})[0] == 401
        # The watermark is in Redis for every later worker: it is the logged-out token's expiry.
        wm = r.client().zscore("tp:{g}:revoked", str(uid))
        assert wm is not None and wm > time.time() * 1000 + 23 * 3600 * 1000
        print(f"logout: revoked on both workers after {took * 1000:.0f} ms")


def test_revocations_survive_a_worker_restart():
    """A worker that starts after a logout loads the watermarks; after a Redis restart (the
    subscription drops and comes back) every worker reloads them, so a change whose message
    was lost still takes effect."""
    with tpenv.Redis(appendonly=True) as r, server(r) as s:
        uid, t1 = signup(s, "bob")
        assert s.http("DELETE", "/api/v1/sessions/current",
                      headers={"Authorization": "Bearer " + t1})[0] == 204
        time.sleep(0.3)
        old = s.worker_pids()
        for pid in old:
            os.kill(pid, 9)
        tpenv.wait_until(lambda: (lambda p: len(p) == 2 and not set(p) & set(old))(
            s.worker_pids()), timeout=30, what="workers restarted")
        s.wait_ready()
        conns = worker_conns(s)
        until_everywhere(conns, t1, 401)
        _, v = signin(s, "bob")
        t2 = v["token"]
        until_everywhere(conns, t2, 200)
        # A revocation whose message never arrived (written without publishing): the workers
        # keep accepting t2 until they reload, which a resubscription does.
        r.client().zadd("tp:{g}:revoked", {str(uid): v["expires_at"]})
        time.sleep(0.2)
        for c in conns.values():
            assert req(c, "GET", "/api/v1/me", t2)[0] == 200
        r.aof_written()  # the watermark survives the kill -9
        r.restart()
        conns = worker_conns(s)
        took = until_everywhere(conns, t2, 401)
        print(f"after a Redis restart: reloaded on both workers within {took * 1000:.0f} ms")


def test_password_change():
    with tpenv.Redis() as r, tpenv.Postgres() as pg, server(r, pg) as s:
        uid, t1 = signup(s, "carol")
        time.sleep(0.005)
        _, v = signin(s, "carol")
        t2 = v["token"]
        auth = {"Authorization": "Bearer " + t2}
        path = "/api/v1/me/password"
        # Hostile and wrong input: a clear error each, nothing changed.
        stored = r.client().hget(f"tp:{{g}}:user:{uid}", "pw_hash")
        for body, want in [({"old": "nope-nope", "new": "another1"}, (401, "bad_credentials")),
                           ({"old": PW, "new": "short"}, (400, "weak_password")),
                           ({"old": PW, "new": "x" * 1025}, (400, "weak_password")),
                           ({"old": PW}, (400, "weak_password")),
                           ({"new": "another1"}, (400, "invalid_request")),
                           ({"old": 12345678, "new": "another1"}, (400, "invalid_request")),
                           ([PW, "another1"], (400, "invalid_request")),
                           (b"{not json", (400, "invalid_request"))]:
            st, _, b = s.http("POST", path, body, headers={**auth, "Content-Type":
                                                           "application/json"})
            assert (st, code(b)) == want, (body, st, b)
        assert r.client().hget(f"tp:{{g}}:user:{uid}", "pw_hash") == stored
        st, _, b = s.http("POST", path, {"old": PW, "new": "another1"})
        assert st == 401 and code(b) == "unauthorized"
        conns = worker_conns(s)
        st, _, b = s.http("POST", path, {"old": PW, "new": "another1"}, headers=auth)
        assert st == 204 and b == b"", (st, b)
        took = max(until_everywhere(conns, t1, 401), until_everywhere(conns, t2, 401))
        assert signin(s, "carol")[0] == 401
        st, v = signin(s, "carol", "another1")
        assert st == 200
        for c in conns.values():
            assert req(c, "GET", "/api/v1/me", v["token"])[0] == 200
        # The system of record follows: Postgres holds the new hash (written behind).
        new_hash = r.client().hget(f"tp:{{g}}:user:{uid}", "pw_hash")
        assert new_hash != stored
        tpenv.wait_until(lambda: pg.psql(f"SELECT password_hash FROM users WHERE id = {uid}")
                         == [[new_hash]], what="password hash in Postgres")
        # A revoked token cannot change the password back.
        st, _, b = s.http("POST", path, {"old": "another1", "new": PW}, headers=auth)
        assert st == 401
        print(f"password change: old tokens revoked on both workers after {took * 1000:.0f} ms")


def admin(s, *args):
    r = s.run_cli("admin", "--actor", "tester@ci", *args)
    return r.returncode, r.stdout, r.stderr


def test_disable_and_enable():
    """tickpool admin disable / enable against two workers with 2 buckets, the actions recorded
    in Postgres."""
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            server(r, pg, TICKPOOL_GAME_BUCKETS="2") as s:
        uid, tok = signup(s, "dave")
        _, other = signup(s, "frank")
        auth = {"Authorization": "Bearer " + tok}
        open_round(r, 5, buckets=2)
        assert bet(s, auth, {"round_id": 5, "band": 0, "stake": 100}, key="a")[0] == 201
        conns = worker_conns(s)
        ws = ws_open(s, tok)
        ws_until(ws, lambda m: m.get("t") == "snapshot")
        rc, out, err = admin(s, "disable", "DAVE", "--reason", "chargebacks")
        assert rc == 0 and f"disabled dave (#{uid})" in out, (rc, out, err)
        took = until_everywhere(conns, tok, 403)
        for c in conns.values():
            st, v = req(c, "GET", "/api/v1/me", tok)
            assert st == 403 and v["error"]["code"] == "account_disabled", v
            assert req(c, "GET", "/api/v1/me", other)[0] == 200  # only that account
        st, _, b = bet(s, auth, {"round_id": 5, "band": 0, "stake": 100}, key="b")
        assert st == 403 and code(b) == "account_disabled", (st, b)
        ws.send_binary(msgpack.packb({"t": "bet", "req": 1, "key": "w", "round_id": 5,
                                      "band": 0, "stake": 100}))
        m = ws_until(ws, lambda m: m.get("t") in ("bet_ok", "bet_err"))
        assert m["t"] == "bet_err" and m["code"] == "account_disabled", m
        st, v = signin(s, "dave")
        assert st == 403 and v["error"]["code"] == "account_disabled", v
        # A wrong password still says only that: a stranger learns nothing of the flag.
        st, v = signin(s, "dave", "wrong-password")
        assert st == 401 and v["error"]["code"] == "bad_credentials"
        # The balance is untouched (one bet of 100 before).
        assert r.client().hget(f"tp:{{b{uid % 2}}}:bal", str(uid)) == "99900"
        rc, out, _ = admin(s, "disable", f"#{uid}")
        assert rc == 0 and "already" in out, out
        # Refusals: nothing changes.
        assert admin(s, "disable", "nobody")[0] == 1
        assert admin(s, "disable")[0] == 2
        assert admin(s, "disable", "a b")[0] == 2
        assert admin(s, "disable", "dave", "--reason", "x\ny")[0] == 2
        assert admin(s, "enable", "dave", "extra")[0] == 2
        rc, out, _ = admin(s, "enable", "dave", "--reason", "appeal accepted")
        assert rc == 0 and f"enabled dave (#{uid})" in out, out
        until_everywhere(conns, tok, 200)
        assert bet(s, auth, {"round_id": 5, "band": 0, "stake": 100}, key="c")[0] == 201
        assert signin(s, "dave")[0] == 200
        ws.send_binary(msgpack.packb({"t": "bet", "req": 2, "key": "w2", "round_id": 5,
                                      "band": 0, "stake": 100}))
        m = ws_until(ws, lambda m: m.get("t") in ("bet_ok", "bet_err"))
        assert m["t"] == "bet_ok", m
        ws.close()
        # Every run is an admin_actions row: who, what, why, and whether it changed anything.
        got = tpenv.wait_until(
            lambda: (lambda x: x if len(x) == 3 else None)(pg.psql(
                "SELECT action, actor, user_id, reason, detail->>'changed' FROM admin_actions "
                "ORDER BY at, id")), timeout=20, what="3 admin_actions rows")
        assert got == [["disable", "tester@ci", str(uid), "chargebacks", "true"],
                       ["disable", "tester@ci", str(uid), "", "false"],
                       ["enable", "tester@ci", str(uid), "appeal accepted", "true"]], got
        print(f"disable: refused on both workers after {took * 1000:.0f} ms")
    # Redis unreachable: exit 3.
    s = tpenv.Server(env={"TICKPOOL_REDIS_URL": "redis://127.0.0.1:1"})
    assert admin(s, "disable", "dave")[0] == 3


def test_bet_script_refuses_before_workers_know():
    """The bet script (bet_batch.lua) is the authority: with the flag set in Redis and no
    message published (a worker that has not heard yet), the bet is still refused and leaves no
    trace."""
    with tpenv.Redis() as r, server(r) as s:
        uid, tok = signup(s, "erin")
        open_round(r, 5)
        r.client().hset("tp:{b0}:disabled", str(uid), "1")
        st, _, b = bet(s, {"Authorization": "Bearer " + tok},
                       {"round_id": 5, "band": 0, "stake": 100})
        assert st == 403 and code(b) == "account_disabled", (st, b)
        assert r.client().hget("tp:{b0}:bal", str(uid)) == "100000"
        assert not r.client().exists("tp:{b0}:pool:5")


if __name__ == "__main__":
    tpenv.main()
