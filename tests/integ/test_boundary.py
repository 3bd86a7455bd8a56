"""Atomic, punctual boundaries (docs/protocol.md §4, docs/http-api.md "GET
/api/v1/rounds/current") against a real Redis and server with 1 s phases and two workers.

From the server's start on, a client polls `GET /api/v1/rounds/current` every 5 ms across 20
boundaries and a WebSocket client reads every `round` message. The test fails on any answer
or message showing a state the contract says cannot exist: no open round once the first round
has opened, a `live` round other than `open.id - 1` once a round has locked, or a round in the
wrong slot (an "open" round already live). `/readyz` is 200 only once a round is open.

How long after the boundary T the `round` messages arrive (the open of N+1 at T, the lock of N
at T) is printed as a bench-style report (p50/p99 over the boundaries), not asserted: timing
on a shared machine is not a test verdict.
"""

import http.client
import json
import re
import threading
import time

import msgpack
import tpenv
import websocket

BOUNDARIES = 20
ENV = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "1",
       "TICKPOOL_GAME_TICK_MS": "100"}


def now_ms():
    return time.time() * 1000.0


def check_pair(open_, live, locked_seen, where):
    """The contract of the current pair; returns a violation (text) or None."""
    if open_ is None:
        return f"{where}: no open round"
    if open_.get("state") != "open":
        return f"{where}: open round {open_['id']} is {open_.get('state')}"
    if live is not None:
        if live["id"] != open_["id"] - 1:
            return f"{where}: open {open_['id']} with live {live['id']}"
        if live.get("state") != "live":
            return f"{where}: live round {live['id']} is {live.get('state')}"
    elif locked_seen and open_["id"] > 1:
        # live_s = betting_s: round open-1 closes at the very boundary that locks the next
        # one, so once a round has locked there is always a live one.
        return f"{where}: open {open_['id']} without a live round"
    return None


class Poller(threading.Thread):
    """GET /rounds/current every 5 ms on one keep-alive connection."""

    def __init__(self, s, until):
        super().__init__(daemon=True)
        self.s, self.until = s, until
        self.answers = self.errors = 0
        self.first_open = None
        self.violations = []
        self.locked_seen = False

    def run(self):
        conn = None
        while time.time() < self.until:
            t0 = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.s.http_port, timeout=5)
                conn.request("GET", "/api/v1/rounds/current")
                resp = conn.getresponse()
                body = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn = None  # start-up, or a closed keep-alive connection: reconnect
                self.errors += 1
                time.sleep(0.005)
                continue
            if status == 200:
                self.answers += 1
                v = json.loads(body)
                if v["open"] is not None and self.first_open is None:
                    self.first_open = v["open"]["id"]
                if self.first_open is not None:
                    self.locked_seen = self.locked_seen or v["live"] is not None
                    bad = check_pair(v["open"], v["live"], self.locked_seen, "rounds/current")
                    if bad:
                        self.violations.append(bad)
            time.sleep(max(0.0, 0.005 - (time.time() - t0)))


def ws_connect(s):
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws",
                                     subprotocols=["tickpool.v1"], timeout=5)
    ws.settimeout(0.5)
    return ws


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def test_boundaries_atomic_and_on_time():
    with tpenv.Redis() as r:
        s = tpenv.Server(redis=r, env=ENV, workers=2, https=False, migrate=False)
        s.start(wait=False)
        try:
            run(s, r)
        except BaseException:
            s.dump_log()
            raise
        finally:
            s.stop()


def run(s, r):
    # 1. From start-up: /readyz answers 503 until a round is open.
    ready_early = []

    def ready():
        try:
            st, _, body = s.http("GET", "/readyz", timeout=2)
        except OSError:
            return False
        if st == 200 and (json.loads(body).get("open_round", 0) < 1 or
                          r.client().hget("tp:{g}:current", "open") is None):
            ready_early.append(body)
        return st == 200
    deadline = time.time() + BOUNDARIES + 8
    poller = Poller(s, deadline)
    poller.start()
    tpenv.wait_until(ready, timeout=20, interval=0.01, what="/readyz 200")
    assert not ready_early, ready_early
    st, v = s.json("GET", "/api/v1/rounds/current")
    assert st == 200 and v["open"] is not None, v

    # 2. A WebSocket client on the same boundaries.
    ws = ws_connect(s)
    delays = {"open": [], "live": []}
    violations, boundaries, locked_seen = [], set(), False
    first_ws_open = None
    while len(boundaries) < BOUNDARIES and time.time() < deadline:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            continue
        t = now_ms()
        if op != websocket.ABNF.OPCODE_BINARY:
            continue
        m = msgpack.unpackb(data)
        if m.get("t") == "snapshot":
            first_ws_open = (m["rounds"]["open"] or {}).get("id")
            continue
        if m.get("t") != "round":
            continue
        rnd, pair = m["round"], m.get("rounds")
        if pair is None:
            violations.append(f"round message without rounds: {rnd['id']}")
            continue
        locked_seen = locked_seen or pair["live"] is not None
        bad = check_pair(pair["open"], pair["live"], locked_seen, f"round {rnd['id']}")
        if bad:
            violations.append(bad)
        # The announcement of a boundary T: N+1 opened at T, N locked at T.
        if rnd["state"] == "open" and rnd["id"] != first_ws_open:
            delays["open"].append(t - rnd["opens_at"])
            boundaries.add(rnd["opens_at"])
        elif rnd["state"] == "live":
            delays["live"].append(t - rnd["locks_at"])
    ws.close()
    poller.join(timeout=BOUNDARIES + 10)

    # 3. The server's own view: how late after T each boundary's script was done.
    late = [int(x) for x in re.findall(r"msg=\"?boundary.*?late_ms=(-?\d+)", s.log_text())]
    late = [x for x in late if x >= 0][-BOUNDARIES:]
    print(f"boundary report: {len(boundaries)} boundaries (1 s phases, 2 workers), "
          f"`round` open N+1 after T: p50 {pct(delays['open'], 50):.1f} ms, "
          f"p99 {pct(delays['open'], 99):.1f} ms, max {max(delays['open'] or [0]):.1f} ms; "
          f"`round` live N after T: p50 {pct(delays['live'], 50):.1f} ms, "
          f"p99 {pct(delays['live'], 99):.1f} ms; "
          f"leader script done after T: p50 {pct(late, 50)} ms, p99 {pct(late, 99)} ms; "
          f"/rounds/current polled {poller.answers} times ({poller.errors} errors at start-up)")
    # The step of a boundary is prepared well ahead of T (TP_LEADER_BOUNDARY_LEAD_MS, 250 ms),
    # so reads slowed by a loaded host still end before T: at a 60 ms lead they ended ~59 ms
    # before T and now and then after it. ready_ms is when the reads were done, from T.
    pat = r"msg=\"?boundary\".*?locked=([1-9]\d*) .*?ready_ms=(-?\d+)"
    ready = [int(m[1]) for m in re.findall(pat, s.log_text())][-BOUNDARIES:]
    assert len(ready) >= BOUNDARIES // 2 and pct(ready, 50) <= -100, ready
    assert len(boundaries) >= BOUNDARIES, (len(boundaries), violations[:5])
    assert not violations, violations[:10]
    assert poller.first_open is not None
    # The poller must have looked often enough to see a half-done boundary: at least one answer
    # per 100 ms on average (it asks every 5 ms; the ASan build at load 28 in a fresh-root CI got
    # 797 answers in 20 s, under the 1,000 this once required).
    assert poller.answers > BOUNDARIES * 10, poller.answers
    assert not poller.violations, poller.violations[:10]
    # Every boundary was one step: no round was cancelled on the way, and the price feed
    # switched segments at each lock without losing a tick.
    c = r.client()
    ticks = [int(x[0].split("-")[0]) for x in c.xrange("tp:{g}:ticks", min=int(min(boundaries)))]
    gaps = [(a, b) for a, b in zip(ticks, ticks[1:]) if b - a != 100]
    assert not gaps, f"ticks missing after {gaps[:5]}"
    last = int(c.hget("tp:{g}:current", "open"))
    states = [c.hget("tp:{g}:round:%d" % i, "state") for i in range(1, last)]
    assert "cancelled" not in states and "cancelling" not in states, states


if __name__ == "__main__":
    tpenv.main()
