"""Self-exclusion against a real server and Redis: POST/GET /api/v1/me/exclusion, bets refused
with 403 self_excluded over HTTP and bet_err over WebSocket, extension but never shortening
(also under concurrent requests), strict input validation with hostile bodies, the end of an
exclusion, and two workers. Rounds are made OPEN directly in Redis, as in test_bets.py.
"""

import json
import threading
import time

import msgpack
import tpenv
import websocket

from test_bets import bet, code, open_round, server, user

DAY = 86400000
PATH = "/api/v1/me/exclusion"


def exclude(s, auth, body, ctype="application/json", accept=None):
    h = dict(auth)
    if ctype is not None:
        h["Content-Type"] = ctype
    if accept:
        h["Accept"] = accept
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body).encode()
    return s.http("POST", PATH, body, headers=h)


def money(r, uid):
    """What a bet of `uid` in round 5 would change (the leader's own rounds keep moving)."""
    import redis
    raw = redis.Redis(host="127.0.0.1", port=r.port)
    keys = ["tp:{b0}:bal", "tp:{b0}:seq", "tp:{b0}:net", "tp:{b0}:netlog", "tp:{b0}:pool:5",
            f"tp:{{b0}}:ubets:{uid}", "tp:{b0}:idemhot", "tp:{b0}:idemyoung"] + \
        sorted(raw.keys("tp:{b0}:betl:5:*"))
    out = {k: raw.dump(k) for k in keys}
    # The outbox's entries; its DUMP also holds the writer's consumer group, whose delivery
    # counts move whenever the writer re-reads (Postgres is down here).
    out["tp:{b0}:outbox"] = raw.xrange("tp:{b0}:outbox")
    return out


def now_ms():
    return int(time.time() * 1000)


def test_exclusion_refuses_bets_http_and_ws():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "alice")
        open_round(r, 5)
        st, v = s.json("GET", PATH, headers=auth)
        assert st == 200 and v == {"excluded_until": None}, (st, v)
        st, _, b = bet(s, auth, {"round_id": 5, "band": 1, "stake": 500}, key="before")
        assert st == 201, b
        first = b
        t0 = now_ms()
        st, h, b = exclude(s, auth, {"days": 7})
        t1 = now_ms()
        assert st == 200, b
        v = json.loads(b)
        assert list(v) == ["excluded_until"]
        assert t0 + 7 * DAY <= v["excluded_until"] <= t1 + 7 * DAY, v
        until = v["excluded_until"]
        assert r.client().hget("tp:{b0}:excl", str(uid)) == str(until)
        assert s.json("GET", PATH, headers=auth) == (200, {"excluded_until": until})
        # Bets are refused and leave no trace; the balance is untouched.
        before = money(r, uid)
        st, _, b = bet(s, auth, {"round_id": 5, "band": 2, "stake": 500}, key="after")
        assert st == 403 and code(b) == "self_excluded", (st, b)
        assert money(r, uid) == before
        assert s.json("GET", "/api/v1/me", headers=auth)[1]["balance"] == 100000 - 500
        # A replay of the bet accepted before is no new bet: the first answer, byte for byte.
        st, _, b = bet(s, auth, {"round_id": 5, "band": 1, "stake": 500}, key="before")
        assert st == 201 and b == first
        assert money(r, uid) == before
        # MessagePack clients get the same code.
        st, _, b = bet(s, auth, msgpack.packb({"round_id": 5, "band": 2, "stake": 500}),
                       key="mp", ctype="application/msgpack", accept="application/msgpack")
        assert st == 403 and msgpack.unpackb(b)["error"]["code"] == "self_excluded"
        # Over the WebSocket: bet_err with the same code.
        tok = auth["Authorization"].split()[1]
        ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws?token={tok}",
                                         subprotocols=["tickpool.v1"], timeout=10)
        try:
            ws.send_binary(msgpack.packb({"t": "bet", "req": 7, "key": "ws1", "round_id": 5,
                                          "band": 0, "stake": 100}))
            end = time.time() + 10
            while time.time() < end:
                m = msgpack.unpackb(ws.recv())
                if m.get("t") in ("bet_ok", "bet_err"):
                    break
            assert m == {"t": "bet_err", "req": 7, "code": "self_excluded",
                         "message": m["message"]}, m
        finally:
            ws.close()
        assert money(r, uid) == before
        # Another player is not affected.
        _, auth2 = user(s, "bob")
        st, _, b = bet(s, auth2, {"round_id": 5, "band": 2, "stake": 500}, key="k")
        assert st == 201, b


def test_extend_never_shorten():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "carol")
        st, _, b = exclude(s, auth, {"days": 30})
        assert st == 200
        until30 = json.loads(b)["excluded_until"]
        for days in (1, 7, 29):
            st, _, b = exclude(s, auth, {"days": days})
            assert st == 409 and code(b) == "exclusion_cannot_shorten", (st, b)
            assert str(until30) in json.loads(b)["error"]["message"]
        assert s.json("GET", PATH, headers=auth) == (200, {"excluded_until": until30})
        st, _, b = exclude(s, auth, {"days": 31})
        assert st == 200 and json.loads(b)["excluded_until"] >= until30 + DAY
        st, _, b = exclude(s, auth, {"days": 365})
        assert st == 200 and json.loads(b)["excluded_until"] >= until30 + 335 * DAY
        # Many concurrent requests of mixed lengths: the longest wins, none shortens it.
        uid2, auth2 = user(s, "dave")
        answers = []

        def go(d):
            answers.append((d, exclude(s, auth2, {"days": d})))

        threads = [threading.Thread(target=go, args=(d,)) for d in (5, 90, 1, 60, 3, 90, 2, 30)]
        t0 = now_ms()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = int(r.client().hget("tp:{b0}:excl", str(uid2)))
        assert t0 + 90 * DAY <= stored <= now_ms() + 90 * DAY, stored
        for d, (st, _, b) in answers:
            assert st in (200, 409), (d, st, b)
            if st == 200:
                assert json.loads(b)["excluded_until"] <= stored


def test_hostile_bodies_and_auth():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "erin")
        bad = [b'{"days":0}', b'{"days":366}', b'{"days":-1}', b'{"days":7.0}', b'{"days":1e1}',
               b'{"days":"7"}', b'{"days":true}', b'{"days":null}', b'{"days":[7]}',
               b'{"days":{}}', b"{}", b"[7]", b"7", b"null", b'{"Days":7}',
               b'{"days":7,"x":1}', b'{"days":7,"days":8}', b'{"days":7} {}', b'{"days":7',
               b'{"days":NaN}', b'{"days":9223372036854775808}', b'{"days":4294967303}',
               b'{"days":-4294967289}', b"", b"\xff\xfe", b'{"days":7}' + b" " * 5000,
               msgpack.packb({"days": 7.0}), msgpack.packb({"days": 2**64 - 1})]
        for body in bad:
            st, _, b = exclude(s, auth, body)
            assert st == 400 and code(b) == "invalid_request", (body[:40], st, b)
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            st, _, b = exclude(s, auth, {"days": 7}, ctype=ctype)
            assert st == 400 and code(b) == "invalid_request", (ctype, st, b)
        assert r.client().hget("tp:{b0}:excl", str(uid)) is None
        # Without a token, or with a forged one: 401 and nothing stored.
        assert exclude(s, {}, {"days": 7})[0] == 401
        assert exclude(s, {"Authorization": "Bearer AAAA"}, {"days": 7})[0] == 401
        forged = auth["Authorization"][:-2] + ("A" if auth["Authorization"][-2] != "A" else "B") \
            + auth["Authorization"][-1]
        assert exclude(s, {"Authorization": forged}, {"days": 7})[0] == 401
        assert s.http("GET", PATH)[0] == 401
        st, h, _ = s.http("DELETE", PATH, headers=auth)
        assert st == 405 and "POST" in h.get("allow", "") and "GET" in h.get("allow", ""), (st, h)
        assert r.client().hget("tp:{b0}:excl", str(uid)) is None
        # MessagePack in and out works like JSON.
        st, h, b = exclude(s, auth, msgpack.packb({"days": 2}), ctype="application/msgpack",
                           accept="application/msgpack")
        assert st == 200 and h["content-type"] == "application/msgpack"
        assert msgpack.unpackb(b)["excluded_until"] > now_ms() + DAY


def test_an_ended_exclusion_lets_bets_in_again():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "fay")
        open_round(r, 5)
        assert exclude(s, auth, {"days": 1})[0] == 200
        assert bet(s, auth, {"round_id": 5, "band": 0, "stake": 100}, key="a")[0] == 403
        r.client().hset("tp:{b0}:excl", str(uid), now_ms() - 1)  # as if a day had passed
        assert s.json("GET", PATH, headers=auth) == (200, {"excluded_until": None})
        assert bet(s, auth, {"round_id": 5, "band": 0, "stake": 100}, key="a")[0] == 201
        st, _, b = exclude(s, auth, {"days": 1})  # shorter than nothing: starts from now
        assert st == 200 and json.loads(b)["excluded_until"] > now_ms() + DAY - 5000


def test_two_workers_refuse_at_once():
    with tpenv.Redis() as r, server(r, TICKPOOL_SERVER_WORKERS="2") as s:
        _, auth = user(s, "gus")
        open_round(r, 5)
        assert exclude(s, auth, {"days": 3})[0] == 200
        # Fresh connections land on either worker: every one refuses from the first request.
        for i in range(20):
            st, _, b = bet(s, auth, {"round_id": 5, "band": 0, "stake": 100}, key=f"k{i}")
            assert st == 403 and code(b) == "self_excluded", (i, st, b)


if __name__ == "__main__":
    tpenv.main()
