"""Black-box WebSocket tests against a running tickpool (docs/protocol.md).

Raw sockets, so that hostile frames (unmasked, oversized, malformed) can be sent: the upgrade
and its subprotocol, Origin policy, close codes 1009 and 1002, ping/pong and the close
handshake. One server (with private Redis and Postgres) is shared by every test of the file.
"""

import atexit
import base64
import hashlib
import os
import socket
import struct
import time

import tpenv

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_env = None


def server():
    """Starts Redis, Postgres and tickpool once for the whole file."""
    global _env
    if _env is None:
        r = tpenv.Redis()
        pg = tpenv.Postgres()
        r.__enter__()
        pg.__enter__()
        s = tpenv.Server(redis=r, pg=pg, https=False,
                         env={"TICKPOOL_GAME_BETTING_S": "3", "TICKPOOL_GAME_LIVE_S": "3"})
        try:
            s.__enter__()
        except BaseException:
            pg.__exit__(None, None, None)
            r.__exit__(None, None, None)
            raise
        _env = (r, pg, s)

        def teardown():
            s.__exit__(None, None, None)
            pg.__exit__(None, None, None)
            r.__exit__(None, None, None)
        atexit.register(teardown)
    return _env[2]


class Conn:
    """A raw WebSocket client connection: builds frames by hand, parses server frames."""

    def __init__(self, port, timeout=10):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)}/{n} bytes read")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def upgrade(self, path="/ws", origin=None, protocol="tickpool.v1", version="13", key=None,
                extra=None):
        """Sends the upgrade request; returns (status, headers lowercased, expected accept)."""
        key = key or base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 f"Sec-WebSocket-Version: {version}"]
        if protocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        if origin is not None:
            lines.append(f"Origin: {origin}")
        lines += extra or []
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed during the upgrade response")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        first, *rest = head.decode("latin-1").split("\r\n")
        status = int(first.split()[1])
        headers = {}
        for line in rest:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        return status, headers, accept

    def send_frame(self, op, payload=b"", fin=True, mask=True, rsv=0, length=None):
        """Sends one client frame; `length` overrides the announced payload length."""
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | op
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n <= 0xFFFF:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            head += key
        self.sock.sendall(head + payload)

    def recv_frame(self):
        """Reads one server frame: (fin, opcode, payload). Server frames must be unmasked."""
        b0, b1 = self._read(2)
        assert b1 & 0x80 == 0, "server frame is masked"
        assert b0 & 0x70 == 0, "server frame has RSV bits"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        return bool(b0 & 0x80), b0 & 0x0F, self._read(n)

    def recv_until(self, op):
        """Skips data frames (ticks, odds...) until a frame with opcode `op`."""
        for _ in range(10000):
            fin, o, payload = self.recv_frame()
            if o == op:
                return payload
            assert o in (0x1, 0x2, 0x9, 0xA), f"unexpected opcode {o:#x}"
        raise AssertionError(f"no frame with opcode {op:#x}")

    def recv_close_code(self):
        payload = self.recv_until(0x8)
        assert len(payload) >= 2, f"close frame without a code: {payload!r}"
        return struct.unpack("!H", payload[:2])[0]

    def expect_eof(self):
        """After the close handshake the server closes the TCP connection."""
        self.sock.settimeout(5)
        try:
            while True:
                if not self.sock.recv(65536):
                    return
        except ConnectionResetError:
            return


def open_ws(**kw):
    s = server()
    c = Conn(s.http_port)
    status, headers, accept = c.upgrade(**kw)
    assert status == 101, f"upgrade answered {status}"
    assert headers.get("sec-websocket-accept") == accept
    return c, headers


def test_upgrade_ok_subprotocol_echoed():
    c, h = open_ws(protocol="chat, tickpool.v1")
    try:
        assert h.get("upgrade", "").lower() == "websocket"
        assert "upgrade" in h.get("connection", "").lower()
        assert h.get("sec-websocket-protocol") == "tickpool.v1"
        # The first message is a binary MessagePack `hello`.
        fin, op, payload = c.recv_frame()
        while op in (0x9, 0xA):
            fin, op, payload = c.recv_frame()
        assert fin and op == 0x2, f"first message: fin={fin} opcode={op:#x}"
        try:
            import msgpack
        except ImportError:
            return
        msg = msgpack.unpackb(payload, raw=False)
        assert isinstance(msg, dict) and msg.get("t") == "hello", msg
    finally:
        c.close()


def test_same_host_origin_allowed():
    s = server()
    c, _ = open_ws(origin=f"http://127.0.0.1:{s.http_port}")
    c.close()


def test_wrong_origin_403():
    s = server()
    for origin in ("http://evil.example", f"http://127.0.0.1:{s.http_port}.evil.example",
                   "null"):
        c = Conn(s.http_port)
        try:
            status, _, _ = c.upgrade(origin=origin)
            assert status == 403, f"Origin {origin}: {status}"
        finally:
            c.close()


def test_missing_or_wrong_subprotocol_400():
    s = server()
    for proto in (None, "chat", "tickpool.v2", "TICKPOOL.V1"):
        c = Conn(s.http_port)
        try:
            status, h, _ = c.upgrade(protocol=proto)
            assert status == 400, f"protocol {proto!r}: {status}"
        finally:
            c.close()


def test_bad_key_rejected():
    s = server()
    c = Conn(s.http_port)
    try:
        status, _, _ = c.upgrade(key="c2hvcnQ=")  # 5 bytes, not 16
        assert status == 400, status
    finally:
        c.close()


def test_oversized_message_1009():
    c, _ = open_ws()
    try:
        # Announce 70000 bytes (over 64 KiB) and send a little: the header alone decides.
        c.send_frame(0x2, b"\x00" * 1024, length=70000)
        assert c.recv_close_code() == 1009
        c.expect_eof()
    finally:
        c.close()


def test_unfinished_fragmented_message_1008():
    """A first fragment followed only by pings must complete within 10 s: close 1008."""
    c, _ = open_ws()
    try:
        c.send_frame(0x2, b"\x81", fin=False)
        t0 = time.time()
        c.sock.settimeout(1)
        code = reason = None
        while time.time() - t0 < 30 and code is None:
            c.send_frame(0x9, b"still here")
            try:
                while True:
                    fin, op, payload = c.recv_frame()
                    if op == 0x8:
                        code, reason = struct.unpack("!H", payload[:2])[0], payload[2:]
                        break
            except socket.timeout:
                pass
        dt = time.time() - t0
        # Not before the 10 s, and by the message rule (its reason), however late the 1 s
        # housekeeping ran on a loaded machine (the 30 s loop only catches no close at all).
        assert (code, reason) == (1008, b"message incomplete"), (code, reason)
        assert dt >= 9.5, dt
        c.sock.settimeout(5)
        c.expect_eof()
    finally:
        c.close()


def test_anonymous_message_cap_1009():
    """Anonymous sockets get a 4 KiB message cap: 5000 bytes close 1009 at the header."""
    c, _ = open_ws()
    try:
        c.send_frame(0x2, b"\x00" * 16, length=5000)
        assert c.recv_close_code() == 1009
        c.expect_eof()
    finally:
        c.close()


def close_code_within(c, secs):
    """The code of a close frame arriving within `secs` (data frames skipped), or None: a
    socket holding an unfinished message keeps getting ticks, so a blocking read never times
    out."""
    end = time.time() + secs
    c.sock.settimeout(0.05)
    while time.time() < end:
        try:
            _, op, payload = c.recv_frame()
        except socket.timeout:
            continue
        except (EOFError, ConnectionError):
            return "eof"
        if op == 0x8:
            return struct.unpack("!H", payload[:2])[0]
    return None


def test_unfinished_messages_share_a_budget():
    """2,000 anonymous sockets each announcing a 4,000-byte message and sending 100 bytes of
    it: the worker holds at most limits.ws_partial_budget (256k here) of unfinished messages,
    the sockets over it are closed 1008 at their frame header, its memory does not grow with
    the sockets' announcements, and once they go the budget is free again."""
    import resource

    import tpclient
    n_sock, budget, announce = 2000, 256 * 1024, 4000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n_sock + 200:
        if hard != resource.RLIM_INFINITY and hard < n_sock + 200:
            raise tpenv.Skip(f"RLIMIT_NOFILE hard limit {hard} too low for {n_sock} sockets")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n_sock + 200, hard))
    env = {"TICKPOOL_LIMITS_WS_PARTIAL_BUDGET": "256k", "TICKPOOL_SERVER_MAX_CONNECTIONS": "5000"}
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=env, https=False, migrate=False) as s:
        pids = s.worker_pids()
        conns = []
        try:
            for _ in range(n_sock):
                c = Conn(s.http_port)
                status, _, _ = c.upgrade()
                assert status == 101, status
                conns.append(c)
            rss0 = tpclient.rss_kb(pids)
            for c in conns:
                c.send_frame(0x2, b"\x00" * 100, length=announce)
            time.sleep(1)  # the refusals are written by now
            closed, held = 0, 0
            for c in conns:
                code = close_code_within(c, 0.25)
                if code is None:
                    held += 1
                else:
                    assert code == 1008, code
                    closed += 1
            rss1 = tpclient.rss_kb(pids)
            print(f"    {held} sockets hold an unfinished message, {closed} closed 1008; worker "
                  f"RSS {rss0} -> {rss1} kB")
            assert held <= budget // announce, held
            assert closed >= n_sock - budget // announce, closed
            # Far less than the 8 MB the announcements would take unbounded. Not under
            # AddressSanitizer: its quarantine keeps freed memory resident (seen: +17 MB).
            with open(tpenv.BIN, "rb") as f:
                sanitized = b"__asan_init" in f.read()
            if not sanitized:
                assert rss1 - rss0 < 4 * 1024, (rss0, rss1)
        finally:
            for c in conns:
                c.close()
        # Every socket gone (the worker notices each EOF): the budget is free again.
        def unfinished_message_held():
            c = Conn(s.http_port)
            try:
                assert c.upgrade()[0] == 101
                c.send_frame(0x2, b"\x00" * 100, length=announce)
                return close_code_within(c, 1.0) is None
            finally:
                c.close()
        tpenv.wait_until(unfinished_message_held, timeout=15, interval=0.5,
                         what="the budget given back by closed sockets")


def test_unmasked_frame_1002():
    c, _ = open_ws()
    try:
        c.send_frame(0x2, b"\x81\xa1t\xa4ping", mask=False)
        assert c.recv_close_code() == 1002
        c.expect_eof()
    finally:
        c.close()


def test_bad_opcode_and_rsv_1002():
    for kw in ({"op": 0x3}, {"op": 0x2, "rsv": 4}, {"op": 0x9, "fin": False}):
        c, _ = open_ws()
        try:
            op = kw.pop("op")
            c.send_frame(op, b"abc", **kw)
            assert c.recv_close_code() == 1002, kw
        finally:
            c.close()


def test_ping_pong():
    c, _ = open_ws()
    try:
        c.send_frame(0x9, b"are you there")
        assert c.recv_until(0xA) == b"are you there"
        # The session is still usable afterwards.
        c.send_frame(0x9, b"again")
        assert c.recv_until(0xA) == b"again"
    finally:
        c.close()


def test_close_handshake():
    c, _ = open_ws()
    try:
        c.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
        assert c.recv_close_code() == 1000
        c.expect_eof()
    finally:
        c.close()


if __name__ == "__main__":
    tpenv.main()
