"""POST /api/v1/bets, GET /api/v1/me/bets and GET /api/v1/leaderboard against a real server and
Redis. Rounds are made OPEN directly in Redis (the per-bucket state copy and the global round
hash), as the game leader's round scripts would; no leader runs here (game.betting_s is huge).
"""

import hashlib
import http.client
import json
import threading
import time

import betbatch
import msgpack
import tpenv
import websocket

FAR = 10**13


def server(r, **env):
    e = {"TICKPOOL_GAME_START_BALANCE": "100000", "TICKPOOL_GAME_MIN_STAKE": "100",
         "TICKPOOL_GAME_MAX_STAKE": "100000"}
    e.update(env)
    return tpenv.Server(redis=r, env=e, https=False, migrate=False)


def open_round(r, rid, state="open", locks_at=FAR, buckets=1):
    c = r.client()
    for b in range(buckets):
        c.hset(f"tp:{{b{b}}}:round:{rid}:state", mapping={"state": state, "locks_at": locks_at})
    c.hset(f"tp:{{g}}:round:{rid}", mapping={"id": rid, "state": state, "locks_at": locks_at})


def user(s, name):
    tpenv.wait_until(lambda: s.http("POST", "/api/v1/sessions",
                                    {"username": "nobody", "password": "x" * 8})[0] == 401,
                     what="accounts ready")
    st, v = s.json("POST", "/api/v1/accounts", {"username": name, "password": "password1"})
    assert st == 201, (st, v)
    return v["user_id"], {"Authorization": "Bearer " + v["token"]}


def bet(s, auth, body, key="k1", ctype="application/json", accept=None):
    h = dict(auth)
    if key is not None:
        h["Idempotency-Key"] = key
    if ctype is not None:
        h["Content-Type"] = ctype
    if accept:
        h["Accept"] = accept
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return s.http("POST", "/api/v1/bets", body, headers=h)


def code(b):
    return json.loads(b)["error"]["code"]


def snapshot(r):
    """Every bucket key's value. A stream (the outbox) is compared by its entries: its consumer
    group's delivery times and counts move whenever the writer re-reads its pending entries on
    its backoff timer, which DUMP would report as a change no bet made. The idempotency filter's
    shards are left out: bets only read them, and the leader builds the next day's window in the
    last hour before midnight (UTC), which changed a snapshot taken around a bet at 23:09."""
    import redis
    raw = redis.Redis(host="127.0.0.1", port=r.port)
    return {k: (raw.xrange(k) if raw.type(k) == b"stream" else raw.dump(k))
            for k in sorted(raw.keys("tp:{b*")) if b":idemfilter:" not in k and
            b":idemslots:" not in k}


def assert_unchanged(r, before):
    """Fails naming the bucket keys that differ from `before` (a snapshot), with both values: a
    change that no bet made (the leader's own boundary, say) then says which key it was."""
    after = snapshot(r)
    diff = {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)}
    assert not diff, f"bucket keys changed: {diff}"


def c_balance(r, uid):
    return int(r.client().hget("tp:{b0}:bal", str(uid)))


def test_bet_happy_and_replay_bytes():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "alice")
        open_round(r, 5)
        st, h, b = bet(s, auth, {"round_id": 5, "band": 2, "stake": 1500})
        assert st == 201, (st, b)
        v = json.loads(b)
        assert list(v) == ["bet_id", "round_id", "band", "stake", "balance"]
        assert v["round_id"] == 5 and v["band"] == 2 and v["stake"] == 1500 and v["balance"] == 98500
        # Same key, same canonical body in another encoding and spacing: same bytes.
        st2, _, b2 = bet(s, auth, b'{ "stake" : 1500, "band":2, "round_id":5 }')
        assert st2 == 201 and b2 == b
        st3, h3, b3 = bet(s, auth, msgpack.packb({"round_id": 5, "band": 2, "stake": 1500}),
                          ctype="application/msgpack", accept="application/msgpack")
        assert st3 == 201 and h3["content-type"] == "application/msgpack"
        assert msgpack.unpackb(b3) == v
        assert r.client().hget("tp:{b0}:bal", str(uid)) == "98500"
        # Recorded for /me/bets and the leaderboard.
        st, mb = s.json("GET", "/api/v1/me/bets", headers=auth)
        assert st == 200 and mb == {"bets": [{"bet_id": v["bet_id"], "round_id": 5, "band": 2,
                                              "stake": 1500, "status": "pending", "payout": None}]}
        st, lb = s.json("GET", "/api/v1/leaderboard")
        assert st == 200 and lb == {"players": [{"user_id": uid, "username": "alice", "net": -1500}]}


def test_workers_fold_the_leaderboard_log():
    """Each bet call appends its stakes to the bucket's leaderboard log; every worker folds the
    log into `net` after each 32 of its calls (src/money/bet_batch.c), so 100 one-bet calls
    leave fewer than 100 entries, and `net` less the log, and the leaderboard (which folds
    first), give every player minus its stakes; after the read the log is empty."""
    with tpenv.Redis() as r, server(r, TICKPOOL_SERVER_WORKERS="2") as s:
        players = [user(s, n) for n in ("fay", "gus")]
        open_round(r, 5)
        stakes = {}
        for i in range(100):
            uid, auth = players[i % 2]
            stake = 100 + i
            st, _, b = bet(s, auth, {"round_id": 5, "band": i % 5, "stake": stake}, key=f"f{i}")
            assert st == 201, (st, b)
            stakes[str(uid)] = stakes.get(str(uid), 0) + stake
        c = r.client()
        assert 0 < c.zcard("tp:{b0}:net") and c.llen("tp:{b0}:netlog") < 100
        assert betbatch.net(c, "tp:{b0}:") == {u: -v for u, v in stakes.items()}
        st, lb = s.json("GET", "/api/v1/leaderboard")
        assert st == 200 and [(p["user_id"], p["net"]) for p in lb["players"]] == sorted(
            ((int(u), -v) for u, v in stakes.items()), key=lambda x: -x[1]), lb
        assert not c.exists("tp:{b0}:netlog")


def test_concurrent_identical_requests_debit_once():
    with tpenv.Redis() as r, server(r, TICKPOOL_SERVER_WORKERS="2") as s:
        uid, auth = user(s, "bob")
        open_round(r, 1)
        out = []
        lock = threading.Lock()

        def go():
            res = bet(s, auth, {"round_id": 1, "band": 0, "stake": 700}, key="same")
            with lock:
                out.append(res)
        ts = [threading.Thread(target=go) for _ in range(10)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        ok = [b for st, _, b in out if st == 201]
        assert ok and all(b == ok[0] for b in ok), out
        # Others may only be the in-flight 409; retrying them gives the same bytes.
        for st, _, b in out:
            assert st == 201 or (st == 409 and code(b) == "idempotency_conflict"), (st, b)
        st, _, b = bet(s, auth, {"round_id": 1, "band": 0, "stake": 700}, key="same")
        assert st == 201 and b == ok[0]
        assert r.client().hget("tp:{b0}:bal", str(uid)) == "99300"
        assert r.client().llen(f"tp:{{b0}}:ubets:{uid}") == 1


def test_same_key_other_body_conflicts_without_effect():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "carol")
        open_round(r, 1)
        st, _, first = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100}, key="x")
        assert st == 201
        before = snapshot(r)
        st, _, b = bet(s, auth, {"round_id": 1, "band": 0, "stake": 200}, key="x")
        assert st == 409 and code(b) == "idempotency_conflict"
        assert_unchanged(r, before)
        # Another user may use the same key.
        uid2, auth2 = user(s, "carol2")
        assert bet(s, auth2, {"round_id": 1, "band": 0, "stake": 200}, key="x")[0] == 201


def test_key_reused_on_another_round_conflicts():
    """A key is the player's for 24 h, whatever the round: round_id is part of the body, so the
    same key on another round is 409 with no effect, and the first round's replay keeps its
    bytes. A refused bet does not take its key."""
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "erin")
        open_round(r, 1)
        open_round(r, 2)
        st, _, first = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100}, key="x")
        assert st == 201, (st, first)
        before = snapshot(r)
        for body in ({"round_id": 2, "band": 0, "stake": 100},
                     {"round_id": 2, "band": 1, "stake": 300},
                     {"round_id": 3, "band": 0, "stake": 100}):  # a round Redis does not know
            st, _, b = bet(s, auth, body, key="x")
            assert st == 409 and code(b) == "idempotency_conflict", (body, st, b)
        assert_unchanged(r, before)
        st, _, again = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100}, key="x")
        assert st == 201 and again == first
        st, _, b = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100000}, key="y")
        assert st == 402, (st, b)
        st, _, b = bet(s, auth, {"round_id": 2, "band": 0, "stake": 100}, key="y")
        assert st == 201, (st, b)
        st, _, b = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100}, key="y")
        assert st == 409 and code(b) == "idempotency_conflict", (st, b)
        assert r.client().hget("tp:{b0}:bal", str(uid)) == "99800"


def test_records_of_an_older_version_replay_the_same_bytes():
    """A round hot at the upgrade keeps records of the older form "1|<request hash>|<bet_id>|
    <round_id>|<band>|<stake>|<balance>" (bet_batch.lua before session 9), in the round's
    records hash beside plain hot entries "<round_id>:<placed_ms>" (before session 13). Their
    replays are
    the first answers byte for byte, the 201 body and the WebSocket bet_ok (whose answer is
    built from the request and the record's bet id and balance), and another body with their
    key is 409 with no effect, over both transports."""
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "olga")
        open_round(r, 5)
        open_round(r, 6)
        c = r.client()
        st, _, first = bet(s, auth, {"round_id": 5, "band": 2, "stake": 1500}, key="old")
        assert st == 201, (st, first)
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{s.http_port}/ws?token={auth['Authorization'][7:]}",
            subprotocols=["tickpool.v1"], timeout=10)

        def ws_bet(req, key, round_id, band, stake):
            ws.send_binary(msgpack.packb({"t": "bet", "req": req, "key": key,
                                          "round_id": round_id, "band": band, "stake": stake}))
            while True:
                raw = ws.recv()
                m = msgpack.unpackb(raw)
                if m.get("t") in ("bet_ok", "bet_err") and m.get("req") == req:
                    return raw, m

        try:
            ws_first, m = ws_bet(1, "ws", 5, 1, 700)
            assert m["t"] == "bet_ok", m
            # Both records moved out of their hot entries and rewritten in the older form, as
            # the older script wrote them.
            idem, hot = "tp:{b0}:idem:5", "tp:{b0}:idemhot"
            assert not c.exists(idem)
            for f, v in c.hgetall(hot).items():
                head, rec = v.split("|", 1)
                bet_id, band, stake, bal = rec.split("|")
                h = hashlib.sha256(f"v1|5|{band}|{stake}".encode()).hexdigest()
                c.hset(idem, f, f"1|{h}|{bet_id}|5|{band}|{stake}|{bal}")
                c.hset(hot, f, head)
            assert all(v.startswith("1|") for v in c.hvals(idem)) and c.hlen(idem) == 2
            before = snapshot(r)
            st, _, b = bet(s, auth, {"round_id": 5, "band": 2, "stake": 1500}, key="old")
            assert st == 201 and b == first, (st, b, first)
            raw, m = ws_bet(1, "ws", 5, 1, 700)
            assert raw == ws_first, (m, msgpack.unpackb(ws_first))
            # Across transports: the same fields as the other's first answer.
            raw, m = ws_bet(2, "old", 5, 2, 1500)
            assert m == dict(json.loads(first), t="bet_ok", req=2), m
            st, _, b = bet(s, auth, {"round_id": 5, "band": 1, "stake": 700}, key="ws")
            ok = msgpack.unpackb(ws_first)
            assert st == 201 and json.loads(b) == {k: ok[k] for k in json.loads(b)}, (b, ok)
            # Another body: band, stake or round (6 is open; the hot index names 5).
            for body in ({"round_id": 5, "band": 2, "stake": 1501},
                         {"round_id": 5, "band": 3, "stake": 1500},
                         {"round_id": 6, "band": 2, "stake": 1500}):
                st, _, b = bet(s, auth, body, key="old")
                assert st == 409 and code(b) == "idempotency_conflict", (body, st, b)
                _, m = ws_bet(3, "ws", body["round_id"], body["band"], body["stake"])
                assert m["t"] == "bet_err" and m["code"] == "idempotency_conflict", (body, m)
            assert_unchanged(r, before)
            assert c.hget("tp:{b0}:bal", str(uid)) == "97800"
        finally:
            ws.close()


def test_ws_hostile_keys_never_reach_redis():
    """MessagePack carries any bytes as a key, which an HTTP header mostly cannot. Since 7407316
    bet_batch.lua checks only a key's length and newline, the worker's checks (session.c,
    tp_bet_submit) are all that keep other bytes out of Redis, where a bad key would now fail
    its whole call (TP_EINVAL: every bet of the batch 503). Each hostile key is answered alone
    (bet_err, nothing written), and the good bets that arrive in the same read are accepted."""
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "mallory")
        open_round(r, 1)
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{s.http_port}/ws?token={auth['Authorization'][7:]}",
            subprotocols=["tickpool.v1"], timeout=10)
        try:
            bad = ["a\nb", "a b", "a\x00b", "a\x7fb", "\u00e9", "\x01", "", "k" * 129,
                   "a\rb", "a\tb", b"bin-key"]
            msgs = []
            for i, key in enumerate(bad):
                msgs.append({"t": "bet", "req": 100 + i, "key": key, "round_id": 1, "band": 0,
                             "stake": 100})
                msgs.append({"t": "bet", "req": i, "key": f"good-{i}", "round_id": 1,
                             "band": 0, "stake": 100})
            ws.sock.sendall(b"".join(
                websocket.ABNF.create_frame(msgpack.packb(m, use_bin_type=True),
                                            websocket.ABNF.OPCODE_BINARY).format()
                for m in msgs))
            got = {}
            while len(got) < len(msgs):
                m = msgpack.unpackb(ws.recv())
                if m.get("t") in ("bet_ok", "bet_err"):
                    got[m["req"]] = m
            for i, key in enumerate(bad):
                m = got[100 + i]
                assert m["t"] == "bet_err" and m["code"] in (
                    "idempotency_key_required", "invalid_request"), (key, m)
                assert got[i]["t"] == "bet_ok", (key, got[i])
            assert c_balance(r, uid) == 100000 - 100 * len(bad)
            # Only the good bets were written: no hot entry (which holds the record) of a
            # hostile key.
            good = sorted(f"{uid}:good-{i}" for i in range(len(bad)))
            assert not r.client().exists("tp:{b0}:idem:1")
            assert sorted(r.client().hkeys("tp:{b0}:idemyoung") +
                          r.client().hkeys("tp:{b0}:idemhot")) == good
        finally:
            ws.close()


def test_insufficient_funds_and_round_states():
    with tpenv.Redis() as r, server(r, TICKPOOL_GAME_START_BALANCE="1000") as s:
        uid, auth = user(s, "dan")
        open_round(r, 1)
        open_round(r, 2, state="live")
        open_round(r, 3, locks_at=int(time.time() * 1000) - 1)
        before = snapshot(r)
        for body, st_want, c_want in (
                ({"round_id": 1, "band": 0, "stake": 1001}, 402, "insufficient_funds"),
                ({"round_id": 2, "band": 0, "stake": 100}, 409, "round_not_open"),
                ({"round_id": 3, "band": 0, "stake": 100}, 409, "round_not_open"),
                ({"round_id": 99, "band": 0, "stake": 100}, 404, "round_not_found")):
            st, _, b = bet(s, auth, body, key="k-" + str(body["round_id"]))
            assert st == st_want and code(b) == c_want, (body, st, b)
        assert_unchanged(r, before)
        # A rejection leaves no record: the same key is evaluated afresh later.
        st, _, b = bet(s, auth, {"round_id": 1, "band": 0, "stake": 1000}, key="k-1")
        assert st == 201, b


BAD = [
    # (body bytes, content type, status, code)
    (b'{"round_id":1,"band":0,"stake":1.0}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":1e2}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":"100"}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":true}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":null}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":99999999999999999999999}', "application/json", 400,
     "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":99}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":100001}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":-100}', "application/json", 400, "invalid_stake"),
    (b'{"round_id":1,"band":0,"stake":NaN}', "application/json", 400, "invalid_request"),
    (b'{"round_id":1,"band":5,"stake":100}', "application/json", 400, "invalid_band"),
    (b'{"round_id":1,"band":-1,"stake":100}', "application/json", 400, "invalid_band"),
    (b'{"round_id":1,"band":"0","stake":100}', "application/json", 400, "invalid_band"),
    (b'{"round_id":1,"band":0.0,"stake":100}', "application/json", 400, "invalid_band"),
    (b'{"round_id":0,"band":0,"stake":100}', "application/json", 400, "invalid_request"),
    (b'{"round_id":"1","band":0,"stake":100}', "application/json", 400, "invalid_request"),
    (b'{"round_id":1.5,"band":0,"stake":100}', "application/json", 400, "invalid_request"),
    (b'{"band":0,"stake":100}', "application/json", 400, "invalid_request"),
    (b'{"round_id":1,"stake":100}', "application/json", 400, "invalid_request"),
    (b'{"round_id":1,"band":0}', "application/json", 400, "invalid_request"),
    (b'[1,0,100]', "application/json", 400, "invalid_request"),
    (b'{"round_id":1,"band":0,"stake":100', "application/json", 400, "invalid_request"),
    (b'', "application/json", 400, "invalid_request"),
    (b'{"round_id":1,"band":0,"stake":100}', "text/plain", 400, "invalid_request"),
    (b'{"round_id":1,"band":0,"stake":100,"pad":"' + b"x" * 5000 + b'"}', "application/json",
     400, "invalid_request"),
    (msgpack.packb({"round_id": 1, "band": 0, "stake": 100.0}), "application/msgpack", 400,
     "invalid_stake"),
    (msgpack.packb({"round_id": 1, "band": 0, "stake": 2**64 - 1}), "application/msgpack", 400,
     "invalid_stake"),
    (msgpack.packb([1, 0, 100]), "application/msgpack", 400, "invalid_request"),
    (b"\xc1", "application/msgpack", 400, "invalid_request"),
]


def test_every_bad_input_has_no_effect():
    with tpenv.Redis() as r, server(r) as s:
        uid, auth = user(s, "erin")
        open_round(r, 1)
        before = snapshot(r)
        for body, ct, st_want, c_want in BAD:
            st, _, b = bet(s, auth, body, ctype=ct)
            assert st == st_want and code(b) == c_want, (body[:60], st, b)
        ok = {"round_id": 1, "band": 0, "stake": 100}
        for key in (None, "", "k" * 129, "a b", "é"):
            h = dict(auth, **({"Idempotency-Key": key} if key is not None else {}))
            h["Content-Type"] = "application/json"
            try:
                st, _, b = s.http("POST", "/api/v1/bets", json.dumps(ok).encode(), headers=h)
            except Exception:
                continue  # the client library may refuse to send a non-ASCII header
            assert st == 422 and code(b) == "idempotency_key_required", (key, st, b)
        for hdr in ({}, {"Authorization": "Bearer nope"}):
            st, _, b = s.http("POST", "/api/v1/bets", json.dumps(ok).encode(),
                              headers=dict(hdr, **{"Idempotency-Key": "z"}))
            assert st == 401 and code(b) == "unauthorized"
        assert_unchanged(r, before)
        assert bet(s, auth, ok, key="k" * 128)[0] == 201


def test_overload_429_and_nothing_half_done():
    with tpenv.Redis() as r, server(r, TICKPOOL_LIMITS_MAX_INFLIGHT_BETS="1") as s:
        uid, auth = user(s, "fay")
        open_round(r, 1)
        out = []
        lock = threading.Lock()
        # 60 parallel connections: with one slot, requests arriving while one waits for
        # Redis are refused up front.
        def go(i):
            res = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100}, key=f"o{i}")
            with lock:
                out.append((i, res))
        ts = [threading.Thread(target=go, args=(i,)) for i in range(60)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        ok = [i for i, (st, _, _) in out if st == 201]
        over = [(i, h) for i, (st, h, b) in out if st == 429]
        assert len(ok) + len(over) == 60, [x[1][0] for x in out]
        assert over, "expected some 429 with max_inflight_bets=1"
        assert all(h.get("retry-after") == "1" for _, h in over)
        c = r.client()
        assert c.hget("tp:{b0}:bal", str(uid)) == str(100000 - 100 * len(ok))
        # Every accepted bet is in the player's list: it is trimmed back to the newest 50 only
        # once over 75 (bet_batch.lua), and 60 bets never get there.
        assert c.llen(f"tp:{{b0}}:ubets:{uid}") == len(ok)
        for i, _ in over:
            assert not c.hexists("tp:{b0}:idemhot", f"{uid}:o{i}")
            assert not c.hexists("tp:{b0}:idemyoung", f"{uid}:o{i}")


def test_redis_down_503_fast():
    # A Redis command deadline far above what the answer takes on a loaded machine: a bet that
    # waited for it instead of failing on the lost connection would take 30 s.
    with tpenv.Redis() as r, server(r, TICKPOOL_REDIS_TIMEOUT="30s") as s:
        uid, auth = user(s, "gus")
        open_round(r, 1)
        r.stop()
        t0 = time.monotonic()
        st, h, b = bet(s, auth, {"round_id": 1, "band": 0, "stake": 100})
        assert st == 503 and code(b) == "unavailable", (st, b)
        assert time.monotonic() - t0 < 15
        assert h.get("retry-after") == "1", h
        st, _, b = s.http("GET", "/api/v1/me/bets", headers=auth)
        assert st == 503
        r.start()


def test_my_bets_statuses_paging_and_leaderboard():
    with tpenv.Redis() as r, server(r, TICKPOOL_GAME_BUCKETS="2") as s:
        u1, a1 = user(s, "hal")
        u2, a2 = user(s, "ivy")
        for rid in (1, 2, 3, 4):
            open_round(r, rid, buckets=2)
        ids = []
        for rid, band, stake in ((1, 0, 100), (2, 1, 200), (3, 2, 300), (4, 3, 400)):
            st, _, b = bet(s, a1, {"round_id": rid, "band": band, "stake": stake}, key=f"r{rid}")
            assert st == 201, b
            ids.append(json.loads(b)["bet_id"])
        assert bet(s, a2, {"round_id": 1, "band": 1, "stake": 5000}, key="z")[0] == 201
        c = r.client()
        b1 = u1 % 2
        # Round 1 settled, band 0 won; round 2 settled, refund-all; round 3 cancelled.
        c.hset("tp:{g}:round:1", mapping={"state": "settled", "winning_band": 0,
                                           "winning_stake": 100, "refund_all": 0})
        c.hset(f"tp:{{b{b1}}}:paid:1", ids[0], 4950)
        c.hset("tp:{g}:round:2", mapping={"state": "settled", "winning_band": 3,
                                           "winning_stake": 0, "refund_all": 1})
        c.hset("tp:{g}:round:3", mapping={"state": "cancelled"})
        st, v = s.json("GET", "/api/v1/me/bets", headers=a1)
        assert st == 200
        got = [(x["bet_id"], x["status"], x["payout"]) for x in v["bets"]]
        assert got == [(ids[3], "pending", None), (ids[2], "refunded", 300),
                       (ids[1], "refunded", 200), (ids[0], "won", 4950)], got
        st, v = s.json("GET", f"/api/v1/me/bets?limit=2&before={ids[2]}", headers=a1)
        assert [x["bet_id"] for x in v["bets"]] == [ids[1], ids[0]]
        st, v = s.json("GET", "/api/v1/me/bets", headers=a2)
        assert [x["status"] for x in v["bets"]] == ["lost"] and v["bets"][0]["payout"] == 0
        for q in ("limit=0", "limit=201", "limit=x", "before=-1"):
            assert s.http("GET", "/api/v1/me/bets?" + q, headers=a1)[0] == 400, q
        assert s.http("GET", "/api/v1/me/bets")[0] == 401
        # Settlement would add the payout to net; simulate it for hal.
        c.zincrby(f"tp:{{b{b1}}}:net", 4950, str(u1))
        st, lb = s.json("GET", "/api/v1/leaderboard?limit=5")
        assert lb["players"] == [{"user_id": u1, "username": "hal", "net": 3950},
                                 {"user_id": u2, "username": "ivy", "net": -5000}], lb
        st, lb = s.json("GET", "/api/v1/leaderboard?limit=1")
        assert [p["username"] for p in lb["players"]] == ["hal"]


if __name__ == "__main__":
    tpenv.main()
