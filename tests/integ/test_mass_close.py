"""Hundreds of wss and ws sockets closing at once beside keep-alive HTTP bet connections.

bench/README.md (wss section) records a viewers-10k --tls run where, as 9,302 wss sockets closed
together, the bet driver's keep-alive connections stopped getting answers. This test drives the
same shape on one worker, so the sockets, the bets and every close share one loop: pipelined
POST /api/v1/bets on a few keep-alive connections for the whole test while waves of sockets,
each getting beats (tick_ms 20) it does not read, close together:
  - wss and ws closed with unread input (the client kernel answers with RST, as loadgen's exit),
  - wss and ws drained first, then closed (FIN),
  - wss and ws reset explicitly (SO_LINGER 0), with wss sockets closed half-way through their
    TLS handshakes (the handshake queue),
  - the same two while the worker is stopped (SIGSTOP), so every close, the bets' replies and
    the beats reach the loop together in one iteration.
Asserted: every bet sent gets its HTTP answer (no stall, no connection dropped by the server),
answers keep arriving after each wave, the server's side of every closed socket is gone within
seconds, and the worker still accepts new sockets afterwards.
Latencies are printed, not asserted.
"""

import base64
import os
import re
import resource
import selectors
import socket
import ssl
import struct
import signal
import threading
import time

import tpclient
import tpenv

NWSS = 200     # wss sockets per wave
NWS = 200      # ws sockets per wave
NHALF = 150    # wss sockets closed during their handshake
NCONNS = 4     # keep-alive bet connections
PIPELINE = 8   # bets in flight per connection
ANSWER_S = 20  # a bet unanswered this long is a stall (far above any latency seen in CI)

UPGRADE = ("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: {k}\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tickpool.v1\r\n\r\n")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need:
        raise tpenv.Skip(f"RLIMIT_NOFILE hard limit {hard} too low for {need} sockets")


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET  # every handshake a full one
    return ctx


class BetConn(threading.Thread):
    """One keep-alive connection placing pipelined bets on the open round until stopped; every
    request must get a complete HTTP answer within ANSWER_S."""

    def __init__(self, s, idx, users, stop):
        super().__init__(daemon=True)
        self.s, self.idx, self.users, self.stop = s, idx, users, stop
        self.answered, self.statuses, self.failure, self.lat = 0, {}, None, []
        self.lock = threading.Lock()

    def request(self, n, rid):
        uid, tok = self.users[n % len(self.users)]
        body = ('{"round_id":%d,"band":%d,"stake":100}' % (rid, n % 2)).encode()
        return (f"POST /api/v1/bets HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {tok}\r\nIdempotency-Key: mc-{self.idx}-{n}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    def read_answer(self, sock, buf):
        """One HTTP response from sock (buf: bytes already read). Returns (status, rest)."""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the keep-alive connection")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        clen = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            if k.strip().lower() == b"content-length":
                clen = int(v.strip())
        while len(rest) < clen:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-answer")
            rest += chunk
        return status, rest[clen:]

    def run(self):
        n = 0
        rid = 0
        try:
            sock = socket.create_connection(("127.0.0.1", self.s.http_port), timeout=ANSWER_S)
            buf = b""
            while not self.stop.is_set():
                if n % 64 == 0:  # the open round moves on every few seconds
                    st, cur = self.s.json("GET", "/api/v1/rounds/current")
                    if st == 200 and cur.get("open"):
                        rid = cur["open"]["id"]
                t0 = time.monotonic()
                sock.sendall(b"".join(self.request(n + i, rid) for i in range(PIPELINE)))
                for _ in range(PIPELINE):
                    st, buf = self.read_answer(sock, buf)
                    with self.lock:
                        self.answered += 1
                        self.statuses[st] = self.statuses.get(st, 0) + 1
                self.lat.append(time.monotonic() - t0)
                n += PIPELINE
                time.sleep(0.01)
            sock.close()
        except (OSError, ConnectionError, ValueError) as e:
            self.failure = f"connection {self.idx} after {self.answered} answers: {e!r}"

    def count(self):
        with self.lock:
            return self.answered


def open_ws(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(UPGRADE.format(k=base64.b64encode(os.urandom(16)).decode()).encode())
    return s


def open_wss(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    t = ctx.wrap_socket(raw, server_hostname="localhost")
    t.sendall(UPGRADE.format(k=base64.b64encode(os.urandom(16)).decode()).encode())
    return t


def half_handshakes(port, ctx, n):
    """n TLS connections that sent their ClientHello and never finish: the server holds them
    mid-handshake (some of them in its handshake queue)."""
    out = []
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        raw.setblocking(False)
        t = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        try:
            t.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        out.append(t)
    return out


def wait_upgraded(socks):
    """Reads each socket until its 101 and some beats arrived (then stops reading: the
    server's queue and the kernel buffers fill behind it)."""
    sel = selectors.DefaultSelector()
    got = {}
    for k in socks:
        k.setblocking(False)
        sel.register(k, selectors.EVENT_READ)
        got[k] = b""
    deadline = time.monotonic() + 60
    pending = set(socks)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            k = key.fileobj
            try:
                data = k.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            got[k] += data
            if k in pending and got[k].startswith(b"HTTP/1.1 101") and len(got[k]) > 2048:
                pending.discard(k)
                sel.unregister(k)
    sel.close()
    assert not pending, f"{len(pending)} of {len(socks)} sockets never upgraded"


def drain(socks):
    for k in socks:
        try:
            while k.recv(65536):
                pass
        except (ssl.SSLWantReadError, BlockingIOError, OSError):
            pass


def open_counts(s):
    """(WebSocket sessions, client connections) the server holds open, from /metrics."""
    st, _, body = s.http("GET", "/metrics")
    assert st == 200
    body = body.decode()
    return tuple(int(re.search(rf"^tickpool_{name} (\d+)", body, re.M).group(1))
                 for name in ("ws_connections_open", "http_connections_open"))


def close_all(socks, how):
    for k in socks:
        if how == "rst":
            k.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            k.close()
        except OSError:
            pass


def test_mass_close_keeps_bets_answered():
    raise_nofile(2 * (NWSS + NWS + NHALF) + 200)
    env = {"TICKPOOL_GAME_BETTING_S": "3", "TICKPOOL_GAME_LIVE_S": "3",
           "TICKPOOL_GAME_TICK_MS": "20", "TICKPOOL_GAME_START_BALANCE": "1000000000",
           "TICKPOOL_LIMITS_MAX_INFLIGHT_BETS": "100000"}
    ctx = tls_ctx()
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=env, workers=1) as s:
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 8, "mc")
        tpenv.wait_until(lambda: len(s.json("GET", "/api/v1/prices")[1]) >= 5, timeout=20,
                         what="ticks flowing")
        wpid, = s.worker_pids()
        stop = threading.Event()
        conns = [BetConn(s, i, users, stop) for i in range(NCONNS)]
        for c in conns:
            c.start()
        # (name, wss, ws, half-open handshakes, worker frozen while they close: every close
        # then reaches the loop in one iteration, beside the bets' replies and beats)
        waves = [("unread", True, True, False, False), ("fin", True, True, False, False),
                 ("rst", True, True, True, False), ("unread, frozen", True, True, True, True),
                 ("rst, frozen", True, True, True, True)]
        try:
            for how, wss, ws, half, frozen in waves:
                socks = []
                if wss:
                    socks += [open_wss(s.https_port, ctx) for _ in range(NWSS)]
                if ws:
                    socks += [open_ws(s.http_port) for _ in range(NWS)]
                if socks:
                    wait_upgraded(socks)
                    time.sleep(1.0)  # beats pile up unread
                halves = half_handshakes(s.https_port, ctx, NHALF) if half else []
                if how == "fin":
                    drain(socks)
                before = sum(c.count() for c in conns)
                t0 = time.monotonic()
                if frozen:
                    os.kill(wpid, signal.SIGSTOP)
                try:
                    close_all(socks + halves, "rst" if how.startswith("rst") else "close")
                    if frozen:
                        time.sleep(0.5)
                finally:
                    if frozen:
                        os.kill(wpid, signal.SIGCONT)
                # Answers must go on: every connection gets more within ANSWER_S.
                marks = [c.count() for c in conns]
                tpenv.wait_until(
                    lambda: any(c.failure for c in conns) or all(
                        c.count() >= m + 2 * PIPELINE for c, m in zip(conns, marks)),
                    timeout=ANSWER_S, interval=0.05,
                    what=f"bets answered after the '{how}' wave")
                failures = [c.failure for c in conns if c.failure]
                assert not failures, failures
                # The server noticed every close: no session or connection left behind (a
                # socket whose close went unseen would hold its fd and memory until the idle
                # check, 40 s later). The bet connections and their round lookups remain.
                tpenv.wait_until(lambda: open_counts(s)[0] == 0 and
                                 open_counts(s)[1] <= 2 * NCONNS + 1, timeout=10,
                                 what=f"the server's side of the '{how}' wave closed")
                print(f"    wave '{how}': {len(socks)} sockets + {len(halves)} handshakes closed; "
                      f"{sum(c.count() for c in conns) - before} bets answered in the next "
                      f"{time.monotonic() - t0:.2f} s")
            # The worker still takes new sockets of both kinds.
            w = open_wss(s.https_port, ctx)
            p = open_ws(s.http_port)
            wait_upgraded([w, p])
            close_all([w, p], "close")
        finally:
            stop.set()
            for c in conns:
                c.join(timeout=ANSWER_S + 5)
        failures = [c.failure for c in conns if c.failure]
        assert not failures, failures
        statuses = {}
        for c in conns:
            for k, v in c.statuses.items():
                statuses[k] = statuses.get(k, 0) + v
        lat = sorted(x for c in conns for x in c.lat)
        print(f"    bets answered: {statuses}; pipeline of {PIPELINE} p50 "
              f"{lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
        assert statuses.get(201, 0) > 0, statuses


if __name__ == "__main__":
    tpenv.main()
