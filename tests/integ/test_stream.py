"""Live streaming over /ws (docs/protocol.md) against a real server, Redis and the game leader:
hello/snapshot, the tick stream, odds after a bet, round changes, payouts, WebSocket bets with
idempotent replays, malformed input, limits, two workers and a slow consumer. Rounds are short
(betting 2 s, live 2 s); no Postgres is needed (the writer only lags).
"""

import re
import socket
import time
import uuid

import msgpack
import tpenv
import websocket

NBANDS = 5


def server(r, workers=1, **env):
    e = {"TICKPOOL_GAME_BETTING_S": "2", "TICKPOOL_GAME_LIVE_S": "2",
         "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_START_BALANCE": "100000",
         "TICKPOOL_GAME_MIN_STAKE": "100", "TICKPOOL_GAME_MAX_STAKE": "100000"}
    e.update(env)
    return tpenv.Server(redis=r, env=e, workers=workers, https=False, migrate=False)


def user(s, name):
    tpenv.wait_until(lambda: s.http("POST", "/api/v1/sessions",
                                    {"username": "nobody", "password": "x" * 8})[0] == 401,
                     what="accounts ready")
    st, v = s.json("POST", "/api/v1/accounts", {"username": name, "password": "password1"})
    assert st == 201, (st, v)
    return v["user_id"], v["token"]


def wait_game(s):
    """Waits until the leader runs: an open round and some ticks."""
    def ready():
        st, v = s.json("GET", "/api/v1/rounds/current")
        if st != 200 or not v or not v.get("open"):
            return False
        st, p = s.json("GET", "/api/v1/prices")
        return st == 200 and len(p) >= 5
    tpenv.wait_until(ready, timeout=20, what="game leader running")


class WS:
    def __init__(self, s, token=None, timeout=10):
        q = f"?token={token}" if token else ""
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws{q}",
                                              subprotocols=["tickpool.v1"], timeout=timeout)
        self.backlog = []

    def send(self, msg):
        self.ws.send_binary(msgpack.packb(msg))

    def send_many(self, msgs):
        """All of msgs as frames in one TCP write, so the server reads them together and no send
        of ours races a close it sends after one of them (a later write would meet EPIPE)."""
        frames = [websocket.ABNF.create_frame(msgpack.packb(m), websocket.ABNF.OPCODE_BINARY)
                  .format() for m in msgs]
        self.ws.sock.sendall(b"".join(frames))

    def send_raw(self, data, binary=True):
        if binary:
            self.ws.send_binary(data)
        else:
            self.ws.send(data)

    def recv(self, timeout=5):
        """Next message (dict), ("close", code) on a close frame, or None on timeout."""
        if self.backlog:
            return self.backlog.pop(0)
        self.ws.settimeout(timeout)
        while True:
            try:
                op, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                return None
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return ("close", None)
            if op == websocket.ABNF.OPCODE_BINARY:
                return msgpack.unpackb(data)
            if op == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                return ("close", code)

    def wait_for(self, pred, timeout=10, keep=False):
        """Reads until pred(msg) holds; other messages are dropped (or kept with keep)."""
        end = time.time() + timeout
        skipped = []
        while time.time() < end:
            m = self.recv(timeout=max(0.05, end - time.time()))
            if m is None:
                continue
            if isinstance(m, tuple):
                raise AssertionError(f"socket closed {m} while waiting")
            if pred(m):
                if keep:
                    self.backlog = skipped + self.backlog
                return m
            if keep:
                skipped.append(m)
        raise AssertionError("message not received in time")

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


def is_t(t):
    return lambda m: isinstance(m, dict) and m.get("t") == t


def current_open(s):
    st, v = s.json("GET", "/api/v1/rounds/current")
    assert st == 200, (st, v)
    return v["open"]


def test_hello_then_snapshot():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        uid, tok = user(s, "alice")
        n_prices = len(s.json("GET", "/api/v1/prices")[1])
        for token, want_uid in ((None, None), (tok, uid)):
            w = WS(s, token)
            hello = w.recv()
            assert hello["t"] == "hello", hello
            assert abs(hello["server_time"] - time.time() * 1000) < 5000
            assert hello["user_id"] == want_uid
            assert hello["balance"] == (100000 if token else None)
            snap = w.recv()
            assert snap["t"] == "snapshot", snap
            assert set(snap["rounds"]) == {"open", "live"} and snap["paused"] is None
            assert snap["rounds"]["open"]["state"] == "open"
            assert len(snap["rounds"]["open"]["bands"]) == NBANDS
            ticks = snap["ticks"]
            assert len(ticks) >= min(n_prices, 590) - 2, (len(ticks), n_prices)
            assert all(len(t) == 2 and isinstance(t[1], int) for t in ticks)
            assert [t[0] for t in ticks] == sorted({t[0] for t in ticks})
            w.close()


def test_ticks_stream():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        w = WS(s)
        w.wait_for(is_t("snapshot"))
        # 20 ticks (2 s of them), however long a loaded machine takes to deliver them: the
        # cadence is bench/README.md's (viewers-1k), the stream's order and grid are this test's.
        ts = []
        end = time.time() + 30
        while time.time() < end and len(ts) < 20:
            m = w.recv(timeout=1)
            if isinstance(m, dict) and m["t"] == "tick":
                assert isinstance(m["price"], int) and m["price"] > 0
                ts.append(m["ts"])
        assert len(ts) >= 20, len(ts)
        assert ts == sorted(set(ts)), "tick ts must increase"
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        assert all(g % 100 == 0 for g in gaps), gaps
        w.close()


def odds_of(m):
    """The odds a message carries: a beat's `odds` map or an `odds` message; else None."""
    if not isinstance(m, dict):
        return None
    if m.get("t") == "tick":
        return m.get("odds")
    return m if m.get("t") == "odds" else None


def test_http_bet_odds_ride_on_the_beat():
    """New pools reach other sockets inside the next beat: one `tick` frame per tick_ms that
    carries `odds`, and no separate `odds` message while ticks are due every 100 ms."""
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        _, tok_a = user(s, "alice")
        b = WS(s)
        b.wait_for(is_t("snapshot"))
        rnd = current_open(s)
        t0 = time.time()
        st, _, body = s.http("POST", "/api/v1/bets",
                             {"round_id": rnd["id"], "band": 2, "stake": 700},
                             headers={"Authorization": "Bearer " + tok_a,
                                      "Idempotency-Key": "odds-1"})
        assert st == 201, (st, body)
        m = b.wait_for(lambda m: (odds_of(m) or {}).get("round_id") == rnd["id"]
                       and odds_of(m)["total"] >= 700, timeout=15)
        # ~0.1 s on an idle machine, seconds on a loaded one: the deadline only catches odds
        # that never come; that they rode the next beat is what the kind below says.
        dt = time.time() - t0
        assert m["t"] == "tick", m  # a tick was due within 100 ms: the beat carries them
        o = m["odds"]
        assert set(o) == {"round_id", "pools", "total", "multipliers"}, o
        assert len(o["pools"]) == NBANDS and o["pools"][2] >= 700
        assert len(o["multipliers"]) == NBANDS
        assert o["multipliers"][0] is None and isinstance(o["multipliers"][2], float)
        print(f"    odds latency {dt * 1000:.0f} ms")
        # Later beats carry no odds while the pools stay put; no separate odds message.
        later = [b.recv(timeout=5) for _ in range(10)]
        assert all(isinstance(x, dict) for x in later), later
        assert [x for x in later if x["t"] == "odds"] == [], later
        assert [x for x in later if x["t"] == "tick" and "odds" in x] == [], later
        b.close()


def test_odds_alone_when_no_beat_is_due():
    """With a 1 s tick a beat is rarely due within 100 ms of new odds: they go as `odds`
    messages, still within ~100 ms, and each beat is a plain tick or carries them."""
    with tpenv.Redis() as r, server(r, TICKPOOL_GAME_TICK_MS="1000") as s:
        wait_game(s)
        _, tok = user(s, "odette")
        b = WS(s)
        b.wait_for(is_t("snapshot"))
        kinds = []
        for i in range(3):
            rnd = current_open(s)
            # Odds are read for the open round only: a bet just before the lock may never
            # show (the next round is open by the next read). Bet early in a round.
            while rnd["locks_at"] - time.time() * 1000 < 800:
                time.sleep(0.1)
                rnd = current_open(s)
            st, _, body = s.http("POST", "/api/v1/bets",
                                 {"round_id": rnd["id"], "band": 1, "stake": 100 + i},
                                 headers={"Authorization": "Bearer " + tok,
                                          "Idempotency-Key": f"alone-{i}"})
            if st != 201:  # the round locked meanwhile
                continue
            m = b.wait_for(lambda m: (odds_of(m) or {}).get("round_id") == rnd["id"]
                           and odds_of(m)["pools"][1] >= 100 + i, timeout=15)
            kinds.append(m["t"])
            # ~0.1 s on an idle machine, seconds on a loaded one (the 15 s deadline only catches
            # odds that never come): what says the odds were not held for the next beat is their
            # kind, asserted below (held, they would ride a tick).
            time.sleep(0.3)
        assert "odds" in kinds, kinds
        b.close()


def test_ws_bets_rounds_and_payout():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        uid, tok = user(s, "carol")
        w = WS(s, tok)
        w.wait_for(is_t("snapshot"))
        # Wait for a fresh round so the bets land well before its lock.
        m = w.wait_for(lambda m: m.get("t") == "round" and m["round"]["state"] == "open")
        rid = m["round"]["id"]
        bet_ids = []
        for band in range(NBANDS):
            w.send({"t": "bet", "req": band, "key": f"k{band}", "round_id": rid, "band": band,
                    "stake": 1000})
            ok = w.wait_for(lambda m: m.get("t") in ("bet_ok", "bet_err") and m["req"] == band,
                            keep=True)
            assert ok["t"] == "bet_ok", ok
            assert ok["round_id"] == rid and ok["band"] == band and ok["stake"] == 1000
            assert ok["balance"] == 100000 - 1000 * (band + 1)
            bet_ids.append(ok["bet_id"])
        # Replay: same key and body → same bet, no second debit.
        w.send({"t": "bet", "req": "again", "key": "k0", "round_id": rid, "band": 0,
                "stake": 1000})
        again = w.wait_for(lambda m: m.get("req") == "again", keep=True)
        assert again["t"] == "bet_ok" and again["bet_id"] == bet_ids[0], again
        assert again["balance"] == 99000
        # Same key, different body → conflict.
        w.send({"t": "bet", "req": "conf", "key": "k0", "round_id": rid, "band": 1,
                "stake": 1000})
        conf = w.wait_for(lambda m: m.get("req") == "conf", keep=True)
        assert conf["t"] == "bet_err" and conf["code"] == "idempotency_conflict", conf
        st, me = s.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + tok})
        assert st == 200 and me["balance"] == 100000 - 5000, me
        # open → live → settled, then a payout (one player on every band always wins).
        states = []
        payout = None
        end = time.time() + 15
        while time.time() < end and payout is None:
            m = w.recv(timeout=1)
            if isinstance(m, dict) and m["t"] == "round" and m["round"]["id"] == rid:
                states.append(m["round"]["state"])
            if isinstance(m, dict) and m["t"] == "payout" and m["round_id"] == rid:
                payout = m
        assert "live" in states and "settled" in states, states
        assert states.index("live") < states.index("settled"), states
        assert payout is not None, f"no payout; states {states}"
        assert 0 < payout["amount"] <= 5000
        st, me = s.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + tok})
        assert payout["balance"] == me["balance"] == 95000 + payout["amount"], (payout, me)
        # The key on a later round is another body (409, whatever that round's state); on its
        # own settled round it still replays the first bet_ok.
        nxt = current_open(s)["id"]
        assert nxt > rid
        w.send({"t": "bet", "req": "next", "key": "k0", "round_id": nxt, "band": 0,
                "stake": 1000})
        m = w.wait_for(lambda m: m.get("req") == "next", keep=True)
        assert m["t"] == "bet_err" and m["code"] == "idempotency_conflict", m
        w.send({"t": "bet", "req": "old", "key": "k0", "round_id": rid, "band": 0, "stake": 1000})
        m = w.wait_for(lambda m: m.get("req") == "old", keep=True)
        assert m == dict(again, req="old"), (m, again)
        st, me2 = s.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + tok})
        assert me2["balance"] == me["balance"], (me, me2)
        w.close()


def test_ws_burst_is_one_batch_with_answers_per_bet():
    """Bets that arrive in one read are admitted as one script call (one outbox entry for all
    of them), and each still gets its own answer: a player's bets debit in order, the one that
    no longer fits is refused alone, a second use of a key still in flight is a conflict."""
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        uid, tok = user(s, "burst")
        w = WS(s, tok)
        w.wait_for(is_t("snapshot"))
        m = w.wait_for(lambda m: m.get("t") == "round" and m["round"]["state"] == "open")
        rid = m["round"]["id"]
        msgs = [{"t": "bet", "req": i, "key": f"b{i}", "round_id": rid, "band": i % NBANDS,
                 "stake": 9000} for i in range(10)]
        msgs.append({"t": "bet", "req": 10, "key": "b10", "round_id": rid, "band": 0,
                     "stake": 20000})   # 10,000 left: refused alone
        msgs.append({"t": "bet", "req": 11, "key": "b0", "round_id": rid, "band": 0,
                     "stake": 9000})    # b0 still in flight
        msgs.append({"t": "bet", "req": 12, "key": "b12", "round_id": rid, "band": 1,
                     "stake": 10000})   # drains the balance exactly
        frames = b"".join(websocket.ABNF.create_frame(msgpack.packb(x), websocket.ABNF.OPCODE_BINARY)
                          .format() for x in msgs)
        w.ws.sock.sendall(frames)
        got = {}
        while len(got) < len(msgs):
            a = w.wait_for(lambda m: m.get("t") in ("bet_ok", "bet_err"))
            got[a["req"]] = a
        assert [got[i]["t"] for i in range(10)] == ["bet_ok"] * 10, got
        assert [got[i]["balance"] for i in range(10)] == [100000 - 9000 * (i + 1)
                                                         for i in range(10)]
        assert got[10]["t"] == "bet_err" and got[10]["code"] == "insufficient_funds", got[10]
        assert got[11]["t"] == "bet_err" and got[11]["code"] == "idempotency_conflict", got[11]
        assert got[12]["t"] == "bet_ok" and got[12]["balance"] == 0, got[12]
        c = r.client()
        entries = [f for _, f in c.xrange("tp:{b0}:outbox") if f["type"] == "bets"
                   and f["round_id"] == str(rid)]
        lines = [ln for f in entries for ln in f["bets"].split("\n")]
        assert len(lines) == 11, entries
        assert len(entries) <= 2, entries  # one read, one batch (two if the burst was split)
        w.close()


def test_malformed_messages_keep_socket_usable():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        _, tok = user(s, "dave")
        w = WS(s, tok)
        w.wait_for(is_t("snapshot"))
        rid = current_open(s)["id"]
        cases = [
            (b"\xc1", "error"),                                  # never-used msgpack byte
            (b"\x92\x01", "error"),                              # truncated array
            (msgpack.packb([1, 2]), "error"),                    # not a map
            (msgpack.packb({"x": 1}), "error"),                  # no t
            (msgpack.packb({"t": 5}), "error"),                  # t not a string
            (msgpack.packb({"t": "dance"}), "error"),            # unknown t
            (msgpack.packb({"t": "ping"}), "error"),             # missing ts
            (msgpack.packb({"t": "auth"}), "error"),             # missing token
            (msgpack.packb({"t": "bet", "req": 9}), "bet_err"),  # missing fields
            (msgpack.packb({"t": "bet", "req": 10, "key": "s", "round_id": rid, "band": 1,
                            "stake": "100"}), "bet_err"),        # string stake
            (msgpack.packb({"t": "bet", "req": 11, "round_id": rid, "band": 1,
                            "stake": 100}), "bet_err"),          # no key
        ]
        # The bet's six members as clients send them (read from the bytes, session.c) with a
        # bad value each, and near misses of that shape the document reads: every answer, code
        # and echoed req is the one the document path gives.
        def bet(req=12, key="s", round_id=rid, band=1, stake=100):
            return msgpack.packb({"t": "bet", "req": req, "key": key, "round_id": round_id,
                                  "band": band, "stake": stake})
        codes = {
            len(cases): (12, "idempotency_key_required"),
            len(cases) + 1: (13, "invalid_stake"),
            len(cases) + 2: (14, "invalid_band"),
            len(cases) + 3: (15, "invalid_request"),
            len(cases) + 4: (2**64 - 1, "invalid_stake"),
            len(cases) + 5: ("s" * 64, "invalid_request"),
        }
        cases += [
            (bet(12, key="a b"), "bet_err"),                     # a key the check refuses
            (bet(13, stake=0), "bet_err"),                       # below min_stake
            (bet(14, band=NBANDS), "bet_err"),                   # no such band
            (bet(15, round_id=-1), "bet_err"),                   # round_id below 1
            (bet(2**64 - 1, stake=1.0), "bet_err"),              # a uint req, a float stake
            (bet("s" * 64, round_id=2**64 - 1), "bet_err"),      # string req, uint round_id
            (bet(16, key="k\xff").replace(b"\xa3k\xc3\xbf", b"\xa2k\xff"), "error"),  # bad UTF-8
            (bet(17).replace(b"\x86", b"\xde\x00\x07", 1)[:-1], "error"),  # map16, cut
        ]
        for i, (raw, want) in enumerate(cases):
            w.send_raw(raw)
            m = w.wait_for(lambda m: m.get("t") in ("error", "bet_err", "bet_ok"))
            assert m["t"] == want, (i, m)
            assert isinstance(m["code"], str) and isinstance(m["message"], str)
            if i in codes:
                assert (m["req"], m["code"]) == codes[i], (i, m)
            elif want == "bet_err":
                assert m["req"] in (9, 10, 11), m
            w.send({"t": "ping", "ts": 1000 + i})
            p = w.wait_for(is_t("pong"))
            assert p["ts"] == 1000 + i
        w.send_raw("text frame", binary=False)
        assert w.wait_for(lambda m: m.get("t") in ("error", "pong"))["t"] == "error"
        w.close()


def test_anonymous_bet_unauthorized_then_auth_message():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        uid, tok = user(s, "erin")
        w = WS(s)
        w.wait_for(is_t("snapshot"))
        rid = current_open(s)["id"]
        w.send({"t": "bet", "req": 1, "key": "a", "round_id": rid, "band": 0, "stake": 100})
        m = w.wait_for(is_t("bet_err"))
        assert m["code"] == "unauthorized" and m["req"] == 1
        w.send({"t": "auth", "token": "garbage"})
        assert w.wait_for(is_t("error"))["code"] == "unauthorized"
        w.send({"t": "auth", "token": tok})
        h = w.wait_for(is_t("hello"))
        assert h["user_id"] == uid and h["balance"] == 100000
        w.close()


def test_message_rate_limit_closes_1008():
    with tpenv.Redis() as r, server(r, TICKPOOL_LIMITS_WS_MSG_RATE="5") as s:
        wait_game(s)
        w = WS(s)
        w.wait_for(is_t("snapshot"))
        for i in range(30):
            try:
                w.send({"t": "ping", "ts": i})
            except Exception:
                break
        end = time.time() + 5
        while time.time() < end:
            m = w.recv(timeout=1)
            if isinstance(m, tuple):
                assert m[1] in (1008, None), m
                return
        raise AssertionError("socket over the message rate was not closed")


def test_rate_limit_close_flushes_bet_answers_first():
    """Bets accepted before the message rate is exceeded get their answers before the 1008."""
    with tpenv.Redis() as r, server(r, TICKPOOL_LIMITS_WS_MSG_RATE="5") as s:
        wait_game(s)
        _, tok = user(s, "rita")
        w = WS(s, tok)
        w.wait_for(is_t("snapshot"))
        rnd = current_open(s)
        while rnd["locks_at"] - time.time() * 1000 < 1000:
            time.sleep(0.1)
            rnd = current_open(s)
        # Five messages fill the bucket (burst of one second); the sixth trips the limit while
        # the five bets are still waiting for Redis.
        w.send_many([{"t": "bet", "req": i, "key": f"rate-{i}", "round_id": rnd["id"], "band": 1,
                      "stake": 100} for i in range(5)] + [{"t": "ping", "ts": i} for i in range(5)])
        answers, end = {}, time.time() + 8
        while time.time() < end:
            m = w.recv(timeout=1)
            if isinstance(m, tuple):
                assert m[1] == 1008, m
                break
            if isinstance(m, dict) and m.get("t") in ("bet_ok", "bet_err"):
                answers[m["req"]] = m["t"]
            assert not (isinstance(m, dict) and m.get("t") == "pong"), "read after the limit"
        else:
            raise AssertionError("socket over the message rate was not closed")
        assert answers == {i: "bet_ok" for i in range(5)}, answers


def test_overflowing_socket_gets_close_1013():
    """A socket whose send queue overflows (here: a snapshot above a 4 KiB queue, with 10 ms
    ticks) gets a close frame 1013 before the TCP close, not a bare cut (1006)."""
    with tpenv.Redis() as r, server(r, TICKPOOL_GAME_TICK_MS="10",
                                    TICKPOOL_LIMITS_WS_SEND_QUEUE="4k") as s:
        wait_game(s)
        tpenv.wait_until(lambda: len(s.json("GET", "/api/v1/prices")[1]) >= 400, timeout=20,
                         what="a snapshot above 4 KiB")
        # Raw frames: some client libraries (python websocket-client among them) refuse 1013.
        c = socket.create_connection(("127.0.0.1", s.http_port), timeout=5)
        c.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tickpool.v1\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        c.close()
        assert data.startswith(b"HTTP/1.1 101"), data[:40]
        data = data[data.index(b"\r\n\r\n") + 4:]
        frames = []
        while len(data) >= 2:
            n, hl = data[1] & 0x7F, 2
            if n == 126:
                n, hl = int.from_bytes(data[2:4], "big"), 4
            elif n == 127:
                n, hl = int.from_bytes(data[2:10], "big"), 10
            frames.append((data[0] & 0x0F, data[hl:hl + n]))
            data = data[hl + n:]
        assert data == b"", data
        kinds = [msgpack.unpackb(p)["t"] if op == 2 else op for op, p in frames]
        assert frames and frames[-1][0] == 0x8, kinds  # the last frame before EOF: a close
        assert int.from_bytes(frames[-1][1][:2], "big") == 1013, frames[-1]
        assert frames[-1][1][2:] == b"send queue full", frames[-1]
        assert "snapshot" not in kinds, kinds


def test_anonymous_message_cap_4k():
    """Anonymous sockets only send ping and auth: 4 KiB messages at most (1009); a signed-in
    socket keeps limits.ws_max_message."""
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        _, tok = user(s, "anna")
        pad = "x" * 5000
        a = WS(s)
        a.wait_for(is_t("snapshot"))
        a.send({"t": "ping", "ts": 1, "pad": pad[:3000]})
        assert a.wait_for(is_t("pong"))["ts"] == 1
        a.send({"t": "ping", "ts": 2, "pad": pad})
        m = None
        end = time.time() + 5
        while time.time() < end and not isinstance(m, tuple):
            m = a.recv(timeout=1)
        assert m == ("close", 1009), m
        for on_upgrade in (True, False):
            b = WS(s, tok if on_upgrade else None)
            b.wait_for(is_t("snapshot"))
            if not on_upgrade:
                b.send({"t": "auth", "token": tok})  # signing in lifts the cap
                b.wait_for(is_t("hello"))
            b.send({"t": "ping", "ts": 3, "pad": pad})
            assert b.wait_for(is_t("pong"))["ts"] == 3
            b.close()
        a.close()


def test_per_user_socket_cap():
    with tpenv.Redis() as r, server(r, TICKPOOL_LIMITS_WS_MAX_PER_USER="2") as s:
        wait_game(s)
        _, tok = user(s, "frank")
        a, b = WS(s, tok), WS(s, tok)
        a.wait_for(is_t("snapshot"))
        b.wait_for(is_t("snapshot"))
        c = WS(s, tok)
        m = c.recv()
        while isinstance(m, dict):
            m = c.recv()
        assert m == ("close", 1008), m
        a.send({"t": "ping", "ts": 1})
        assert a.wait_for(is_t("pong"))["ts"] == 1
        for x in (a, b, c):
            x.close()


def test_per_user_socket_cap_across_workers():
    """The cap counts a user's sockets on every worker (in Redis), not per process: with two
    workers and a cap of 3, exactly 3 of 8 sockets stay open wherever the kernel put them (a
    per-worker count would let up to 6 through), and closing one makes room for another."""
    with tpenv.Redis() as r, server(r, workers=2, TICKPOOL_LIMITS_WS_MAX_PER_USER="3") as s:
        wait_game(s)
        uid, tok = user(s, "grace")
        socks = [WS(s, tok) for _ in range(8)]

        def outcome(w):
            """The close code, or 'open' when no close came and a ping gets its pong (a ping
            written to a socket the server closed could reset it before its close is read)."""
            end = time.time() + 1.5
            while time.time() < end:
                m = w.recv(timeout=0.3)
                if isinstance(m, tuple):
                    return m[1]
            w.send({"t": "ping", "ts": 7})
            end = time.time() + 10
            while time.time() < end:
                m = w.recv(timeout=1)
                if isinstance(m, tuple):
                    return m[1]
                if isinstance(m, dict) and m.get("t") == "pong":
                    return "open"
            return "timeout"
        time.sleep(0.5)  # every take has its answer: the over-cap sockets are closing
        got = [outcome(w) for w in socks]
        assert sorted(got, key=str) == [1008] * 5 + ["open"] * 3, got
        assert r.client().zcard("tp:{b0}:wsock:%d" % uid) == 3
        opened = [w for w, g in zip(socks, got) if g == "open"]
        for w, g in zip(socks, got):
            if g != "open":
                w.close()
        opened[0].close()
        tpenv.wait_until(lambda: r.client().zcard("tp:{b0}:wsock:%d" % uid) == 2,
                         what="the closed socket given back")
        again = WS(s, tok)
        again.wait_for(is_t("snapshot"))
        assert outcome(again) == "open"
        for w in socks + [again]:
            w.close()


def test_bad_token_on_upgrade_closes_1008():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        w = WS(s, "A" * 66)
        m = w.recv()
        while isinstance(m, dict):
            m = w.recv()
        assert m == ("close", 1008), m


def test_two_workers_every_socket_gets_ticks():
    with tpenv.Redis() as r, server(r, workers=2) as s:
        wait_game(s)
        socks = [WS(s) for _ in range(8)]
        for w in socks:
            w.wait_for(is_t("snapshot"))
        # 20 ticks on every socket (2 s of them), however long a loaded machine takes.
        t_start = time.time()
        seen = [set() for _ in socks]
        while time.time() < t_start + 30 and min(len(x) for x in seen) < 20:
            for i, w in enumerate(socks):
                m = w.recv(timeout=0.05)
                while isinstance(m, dict):
                    if m["t"] == "tick":
                        seen[i].add(m["ts"])
                    m = w.recv(timeout=0.01)
        counts = [len(x) for x in seen]
        assert min(counts) >= 20, counts
        common = set.intersection(*seen)
        assert len(common) >= 8, counts
        for w in socks:
            w.close()


def test_slow_consumer_does_not_delay_others_and_is_closed():
    """A socket that never reads, flooding pings whose pongs (direct, never dropped) pile up in
    its send queue until the server cuts it, shares a worker with a good socket. The good socket
    is served all along: after every burst sent to the slow one, the good one gets a tick newer
    than any it had, and the slow one is closed as slow (the server's log says so). A worker
    that waited on the slow socket's output (head-of-line blocking) gives the good one no newer
    tick once the slow one is backed up, and fails the wait. How long the good socket waited is
    printed, not judged: a loaded machine stalls everything."""
    env = {"TICKPOOL_LIMITS_WS_MSG_RATE": "1000000", "TICKPOOL_LIMITS_WS_SEND_QUEUE": "64k"}
    with tpenv.Redis() as r, server(r, **env) as s:
        wait_game(s)
        good = WS(s)
        good.wait_for(is_t("snapshot"))
        slow = socket.create_connection(("127.0.0.1", s.http_port))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tickpool.v1\r\n\r\n")
        body = msgpack.packb({"t": "ping", "ts": 1.5})
        frame = bytes([0x82, 0x80 | len(body)]) + b"\0\0\0\0" + body
        slow.setblocking(False)
        # Judged on the ticks' own times (Unix ms, tick_ms 100 apart, newest wins): a tick
        # newer than the last one seen is one the worker wrote to the good socket after it.
        last_ts = good.wait_for(is_t("tick"))["ts"]
        pending, bursts, waits, closed = b"", 0, [], False
        end = time.monotonic() + 120  # only catches a slow consumer never closed
        while not closed:
            assert time.monotonic() < end, f"the slow consumer was never closed ({bursts} bursts)"
            # The next 2,000 pings (~44 KB of pongs: the kernel holds a few MB of them before the
            # server's queue fills), whole frames only (a write the kernel cut short goes on
            # where it stopped: a torn frame would be closed as malformed, not as slow).
            if not pending:
                pending, bursts = frame * 2000, bursts + 1
            try:
                pending = pending[slow.send(pending):]
            except BlockingIOError:
                pass
            except OSError:
                closed = True
            t0 = time.monotonic()
            m = good.wait_for(lambda m: m.get("t") == "tick" and m["ts"] > last_ts, timeout=30)
            waits.append(time.monotonic() - t0)
            last_ts = m["ts"]
        tpenv.wait_until(lambda: "slow consumer closed" in s.log_text(), timeout=10,
                         what="the server's log: the slow consumer closed")
        print(f"# {bursts} bursts of 2,000 pings until the slow socket was closed; the good socket's "
              f"wait for a newer tick after each: longest {max(waits) * 1000:.0f} ms")
        good.send({"t": "ping", "ts": 7})
        assert good.wait_for(is_t("pong"))["ts"] == 7
        slow.close()
        good.close()


def test_slow_reader_gets_every_answer_and_pong():
    """A socket that does not read (a 4 KiB receive buffer) sends 1,600 bets among 320,000 pings:
    its answers are queued while it is on the dirty list, it is read again in the same loop
    iteration, and it waits for room. Once it reads, every answer and pong arrives, in order.
    tick_ms is 10000 and the reading starts just after a beat seen on a second socket: the beat
    writes every socket, so a shorter one would hide a lost wake-up for room (a worker that left
    a full socket's write to the prepare hook's batch and never armed EV_WRITE would stall it
    until the next beat, 10 s on; src/net/conn_io.c write_deferred)."""
    import tpclient
    env = {"TICKPOOL_GAME_TICK_MS": "10000", "TICKPOOL_GAME_BETTING_S": "120",
           "TICKPOOL_GAME_LIVE_S": "120", "TICKPOOL_GAME_START_BALANCE": "10000000",
           "TICKPOOL_LIMITS_WS_MSG_RATE": "1000000", "TICKPOOL_LIMITS_WS_SEND_QUEUE": "64m"}
    nbets, per_bet = 1600, 200
    with tpenv.Redis() as r, server(r, **env) as s:
        tpenv.wait_until(lambda: s.json("GET", "/api/v1/rounds/current")[1].get("open"),
                         timeout=30, what="an open round")
        _, tok = user(s, "slowreader")
        rnd = current_open(s)
        good = WS(s)
        good.wait_for(is_t("snapshot"))
        slow = tpclient.RawWS(s.http_port, tok, rcvbuf=4096)
        tpenv.wait_until(lambda: slow.read() >= 0 and any(m.get("t") == "snapshot"
                                                          for m in slow.msgs),
                         what="the slow socket's snapshot")
        slow.msgs.clear()

        def frame(msg):  # masked with a zero key, as a client must mask
            body = msgpack.packb(msg)
            assert len(body) < 126
            return bytes([0x82, 0x80 | len(body)]) + b"\0\0\0\0" + body

        out, ts = [], 0
        for i in range(nbets):
            for _ in range(per_bet):
                out.append(frame({"t": "ping", "ts": ts}))
                ts += 1
            out.append(frame({"t": "bet", "req": i, "key": f"s{i}", "round_id": rnd["id"],
                              "band": i % NBANDS, "stake": 100}))
        pending = memoryview(b"".join(out))
        end = time.monotonic() + 60
        while pending:  # the server reads on; its answers pile up in its queue
            assert time.monotonic() < end, f"{len(pending)} bytes not taken in 60 s"
            try:
                pending = pending[slow.sock.send(pending):]
            except BlockingIOError:
                time.sleep(0.001)
        good.wait_for(is_t("tick"), timeout=15)
        t0 = time.monotonic()
        assert rnd["locks_at"] / 1000 - time.time() > 10, "a boundary would write the socket"
        pongs, answers = [], []
        while len(pongs) < ts or len(answers) < nbets:
            assert time.monotonic() - t0 < 8, (
                f"stalled: {len(answers)} answers, {len(pongs)} pongs before the next beat")
            assert slow.closed is None, f"the slow socket was closed ({slow.closed})"
            if slow.read() == 0:
                time.sleep(0.001)
            for m in slow.msgs:
                if m.get("t") == "pong":
                    pongs.append(m["ts"])
                elif m.get("t") in ("bet_ok", "bet_err"):
                    answers.append((m["t"], m["req"]))
            slow.msgs.clear()
        assert pongs == list(range(ts)), "pongs lost or out of order"
        assert answers == [("bet_ok", i) for i in range(nbets)], answers[:5]
        print(f"# read in {time.monotonic() - t0:.2f} s after the beat")
        slow.close()
        good.close()
        # The lost wake-up this test is about lives in the io_uring batch (write_deferred):
        # a worker fanning out with send() per socket never takes that path. The checks above
        # still hold there, but say so rather than pass as if it were covered.
        fanout = re.findall(r'msg="?ready"? .*fanout=(\w+)', s.log_text())
        assert fanout, "no worker ready line with fanout="
        if "io_uring" not in fanout:
            raise tpenv.Skip(f"passed, but the worker fans out with {fanout[0]}(): the io_uring "
                             "batch's deferred write (write_deferred) was not exercised")


SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def forge_token(uid, expires_ms, secret_hex=SECRET):
    """A token as tickpool/money/token.h lays it out, signed with the shared test secret."""
    import base64
    import hashlib
    import hmac
    head = bytes([1]) + uid.to_bytes(8, "big") + expires_ms.to_bytes(8, "big")
    mac = hmac.new(bytes.fromhex(secret_hex), b"tickpool.token\0" + head, hashlib.sha256)
    return base64.urlsafe_b64encode(head + mac.digest()).rstrip(b"=").decode()


def test_token_expiry_closes_1008():
    with tpenv.Redis() as r, server(r, TICKPOOL_AUTH_SECRET=SECRET) as s:
        wait_game(s)
        uid, _ = user(s, "gina")
        # Timed from the token's expiry, not from the hello: a bound from the hello counted the
        # upgrade's own time, seconds on a loaded machine, against the server.
        exp_ms = int(time.time() * 1000) + 4000
        exp = exp_ms / 1000
        w = WS(s, forge_token(uid, exp_ms))
        h = w.recv()
        assert h["t"] == "hello" and h["user_id"] == uid, h
        m = w.recv(timeout=10)
        while isinstance(m, dict):
            m = w.recv(timeout=10)
        assert m == ("close", 1008), m
        # Never before the expiry; within the 1 s housekeeping period after it, plus slack.
        assert exp <= time.time() < exp + 5, time.time() - exp
        # An already expired token is refused at the upgrade.
        w2 = WS(s, forge_token(uid, int(time.time() * 1000) - 1000))
        m = w2.recv()
        while isinstance(m, dict):
            m = w2.recv()
        assert m == ("close", 1008), m


def test_resubscribe_resyncs_with_snapshot():
    with tpenv.Redis() as r, server(r) as s:
        wait_game(s)
        w = WS(s)
        w.wait_for(is_t("snapshot"))
        # Cut every pub/sub connection: the subscriber reconnects and resyncs its sockets.
        r.cli("CLIENT", "KILL", "TYPE", "pubsub")
        snap = w.wait_for(is_t("snapshot"), timeout=10)
        assert snap["rounds"]["open"] is not None and len(snap["ticks"]) > 0
        w.wait_for(is_t("tick"), timeout=5)
        w.close()


if __name__ == "__main__":
    tpenv.main()
