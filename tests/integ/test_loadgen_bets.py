"""loadgen's ws-bet path (bench/lg_conn.c) against a WebSocket server here that stops reading.

loadgen writes a wake-up's bets to its sockets through one io_uring_enter (lg_flush_dirty); a
send that finds its socket full or takes part of a frame must go on through the old path
(conn_flush, then the write watcher) with the bytes in order. The server here takes loadgen's
connection with a small receive buffer and reads nothing while loadgen sends 60,000 bets into it
(~4.5 MB: more than the kernel lets the socket queue, which `ss` confirms), then reads every
frame: the bets must arrive whole and in order (req 0, 1, 2, ... once each). It answers most
with a bet_ok in tickpool's shape (loadgen's direct reader) and every seventh with a bet_err
(the full parse), and loadgen must count exactly those.
"""

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading

import tpenv

BENCH = os.path.join(os.path.dirname(os.environ.get("TP_BIN", "build/tickpool")), "bench")
MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def mp_str(s):
    return bytes([0xa0 | len(s)]) + s.encode()


def mp_uint(v):
    if v < 128:
        return bytes([v])
    if v < 1 << 16:
        return b"\xcd" + struct.pack(">H", v)
    return b"\xce" + struct.pack(">I", v)


def mp_read(b, i):
    """One MessagePack value of the kinds loadgen's bet holds (map, str, int): (value, next i)."""
    t = b[i]
    if t & 0xf0 == 0x80:
        m, i = {}, i + 1
        for _ in range(t & 0x0f):
            k, i = mp_read(b, i)
            m[k], i = mp_read(b, i)
        return m, i
    if t & 0xe0 == 0xa0:
        n = t & 0x1f
        return b[i + 1:i + 1 + n].decode(), i + 1 + n
    if t == 0xd9:
        n = b[i + 1]
        return b[i + 2:i + 2 + n].decode(), i + 2 + n
    if t < 0x80:
        return t, i + 1
    if t >= 0xe0:
        return t - 256, i + 1
    fmt = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
           0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}[t]
    n = struct.calcsize(fmt)
    return struct.unpack(fmt, b[i + 1:i + 1 + n])[0], i + 1 + n


def ws_frame(payload):
    return bytes([0x82, len(payload)]) + payload  # answers here are < 126 bytes


def bet_ok(req):
    """A bet_ok as tickpool writes it (protocol.c): a fixmap of t, req, then integer fields."""
    return ws_frame(b"\x86" + mp_str("t") + mp_str("bet_ok") + mp_str("req") + mp_uint(req)
                    + mp_str("bet_id") + mp_uint(req + 1) + mp_str("round_id") + b"\x01"
                    + mp_str("stake") + b"\xcd\x03\xe8" + mp_str("balance") + b"\xff")


def bet_err(req):
    return ws_frame(b"\x84" + mp_str("t") + mp_str("bet_err") + mp_str("req") + mp_uint(req)
                    + mp_str("code") + mp_str("insufficient_funds") + mp_str("message")
                    + mp_str("no"))


class Conn:
    """One accepted loadgen socket: its unread bytes and the reqs seen so far."""

    def __init__(self, s):
        self.s, self.buf, self.next_req, self.errs = s, b"", 0, 0

    def handshake(self):
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
               if l.lower().startswith(b"sec-websocket-key:")][0]
        acc = base64.b64encode(hashlib.sha1(key + MAGIC).digest())
        self.s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Protocol: tickpool.v1\r\n"
                       b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")

    def serve(self, problems):
        """Reads frames until loadgen closes; answers each bet; notes any frame out of order."""
        self.s.settimeout(0.5)
        while True:
            while True:
                if len(self.buf) < 2:
                    break
                n, h = self.buf[1] & 0x7f, 2
                if n == 126:
                    if len(self.buf) < 4:
                        break
                    n, h = struct.unpack(">H", self.buf[2:4])[0], 4
                if len(self.buf) < h + 4 + n:
                    break
                mk = self.buf[h:h + 4]
                pl = bytes(c ^ mk[i & 3] for i, c in enumerate(self.buf[h + 4:h + 4 + n]))
                op = self.buf[0] & 0x0f
                self.buf = self.buf[h + 4 + n:]
                if op != 2:
                    continue
                msg, end = mp_read(pl, 0)
                if end != len(pl) or msg.get("t") != "bet" or msg.get("req") != self.next_req:
                    problems.append(f"expected req {self.next_req}, got {msg!r}")
                    return
                self.next_req += 1
                if msg["req"] % 7 == 3:
                    self.errs += 1
                    self.s.sendall(bet_err(msg["req"]))
                else:
                    self.s.sendall(bet_ok(msg["req"]))
            try:
                got = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not got:
                return
            self.buf += got


def test_bets_whole_and_in_order_through_full_sockets():
    """Sends that meet a full socket go on in order; bet_ok and bet_err are both counted."""
    lg_bin = os.path.join(BENCH, "loadgen")
    if not os.access(lg_bin, os.X_OK):
        raise tpenv.Skip(f"loadgen not built in {BENCH}")
    # The socket's fill is read with `ss` (Debian's iproute2, one of scripts/lib/common.sh's test
    # packages): without it the wait below could only time out.
    assert shutil.which("ss"), "ss not found: install iproute2 (scripts/test does)"
    lfd = socket.socket()
    lfd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by the accepted sockets: a small window fills after a few frames.
    lfd.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lfd.bind(("127.0.0.1", 0))
    lfd.listen(8)
    tmp = tempfile.mkdtemp(prefix="tp-lgbets-")
    tokens = os.path.join(tmp, "tokens.txt")
    with open(tokens, "w") as f:
        f.write("1 t1\n2 t2\n")
    port = lfd.getsockname()[1]
    lg = subprocess.Popen([lg_bin, "ws-bet", "-p", str(port), "-t", tokens, "-c", "1", "-r",
                           "30000", "-d", "2", "-w", "0", "--drain", "60", "--pipeline", "65000",
                           "--round", "1", "--bands", "5", "-q"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conns, problems = [], []
    try:
        lfd.settimeout(10)
        c = Conn(lfd.accept()[0])
        c.handshake()
        conns.append(c)
        # loadgen sends its 60,000 bets into the socket nobody reads until the socket has queued
        # all the kernel allows (skmem w: bytes queued, tb: the send buffer).
        def filled():
            ss = subprocess.run(["ss", "-tnm", f"dport = :{port}"], capture_output=True,
                                text=True).stdout
            return int(ss.split(",w")[1].split(",")[0]) >= int(ss.split(",tb")[1].split(",")[0])

        tpenv.wait_until(filled, timeout=30.0, interval=0.1, what="loadgen's socket full")
        threads = [threading.Thread(target=c.serve, args=(problems,), daemon=True) for c in conns]
        for t in threads:
            t.start()
        out, err = lg.communicate(timeout=120)
        for t in threads:
            t.join(timeout=10)
    finally:
        if lg.poll() is None:
            lg.kill()
        for c in conns:
            c.s.close()
        lfd.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert lg.returncode == 0, err.decode()[-2000:]
    assert problems == []
    res = json.loads(out.decode().strip().splitlines()[-1])
    bets = sum(c.next_req for c in conns)
    errs = sum(c.errs for c in conns)
    assert bets == 60000 and res["sent"] == bets, (bets, res)
    assert res["ok"] == bets - errs, res
    assert res["errors"] == {"bet_err insufficient_funds": errs}, res


if __name__ == "__main__":
    tpenv.main()
