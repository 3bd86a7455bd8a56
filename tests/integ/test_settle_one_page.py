"""One settlement page in Redis at a time, never two.

Two pages sent together reach Redis in one read, and Redis runs them back to back in one turn:
a bet queued behind them waits for both (the 4-11 ms turns of bench/README.md, Settlement,
session 11). The leader sends the next page only once the last one's reply is in
(src/game/leader_settle.c), so Redis serves the bets that came during a page before the next.

Real Redis and tickpool, one worker, no Postgres (the bets go straight into Redis through the
real bet_batch.lua). tickpool reaches Redis through a proxy in this test that delays every reply
by DELAY_S (a far Redis, or a leader's worker waiting for a core: the case where a leader kept a
second page in flight, sent together with the next) and counts, per connection and in all, the
settle_page.lua calls forwarded to Redis whose replies Redis has not written yet. Band edges of
+-100 % make band 1 win for sure; the money is checked against each bet's stake.
"""

import hashlib
import os
import socket
import threading
import time

import pgwlib
import tpenv

DELAY_S = 0.03
WINNERS, LOSERS = 6000, 300
ENV = {"TICKPOOL_GAME_BETTING_S": "8", "TICKPOOL_GAME_LIVE_S": "2",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BAND_EDGES_BPS": "-10000,10000",
       "TICKPOOL_LOG_LEVEL": "info"}


class Incomplete(Exception):
    pass


def resp_value(buf, i):
    """Parses one RESP value of buf from i; returns (value, next index). A command is a list of
    bytes; a reply's value is not needed, only where it ends. Raises Incomplete."""
    end = buf.find(b"\r\n", i)
    if end < 0:
        raise Incomplete()
    kind, line, j = buf[i:i + 1], bytes(buf[i + 1:end]), end + 2
    if kind in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            return None, j
        if len(buf) < j + n + 2:
            raise Incomplete()
        return bytes(buf[j:j + n]), j + n + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):
        n = int(line) * (2 if kind in (b"%", b"|") else 1)
        out = []
        for _ in range(max(n, 0)):
            v, j = resp_value(buf, j)
            out.append(v)
        return out, j
    return line, j  # + - : _ , # (


class PageCountingProxy:
    """A TCP proxy to `redis` that delays Redis's replies by `delay_s` and records the most
    settle_page calls (EVALSHA of `sha`) ever waiting in Redis at once."""

    def __init__(self, redis, sha, delay_s):
        self.redis, self.sha, self.delay_s = redis, sha.encode(), delay_s
        self.lock = threading.Lock()
        self.pages = self.in_redis = self.most = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.url = f"redis://127.0.0.1:{self.lsock.getsockname()[1]}"
        self.mode = "standalone"
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        for s in [self.lsock] + self.socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                down, _ = self.lsock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.redis.port))
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks += [down, up]
            conn = {"fifo": [], "out": [], "cv": threading.Condition()}
            for fn, args in ((self._requests, (down, up, conn)), (self._replies, (up, conn)),
                             (self._late, (down, conn))):
                threading.Thread(target=fn, args=args, daemon=True).start()

    @staticmethod
    def _pump(src, each_value, each_data):
        """Reads src until it closes: each_value(value) for every whole RESP value, in order,
        then each_data(data) for the bytes read (b"" once at the end)."""
        buf = bytearray()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            buf += data
            i = 0
            while True:
                try:
                    value, i2 = resp_value(buf, i)
                except Incomplete:
                    break
                i = i2
                each_value(value)
            del buf[:i]
            if not each_data(data) or not data:
                return

    def _requests(self, down, up, conn):
        def each(cmd):
            page = (isinstance(cmd, list) and len(cmd) > 1 and
                    (cmd[0] or b"").upper() == b"EVALSHA" and cmd[1] == self.sha)
            with self.lock:  # before Redis can see it, so its reply finds it here
                conn["fifo"].append(page)
                if page:
                    self.pages += 1
                    self.in_redis += 1
                    self.most = max(self.most, self.in_redis)

        def forward(data):
            try:
                if not data:
                    up.close()
                    return False
                up.sendall(data)
                return True
            except OSError:
                return False

        self._pump(down, each, forward)

    def _replies(self, up, conn):
        def each(_):
            with self.lock:
                if conn["fifo"] and conn["fifo"].pop(0):
                    self.in_redis -= 1

        def later(data):
            with conn["cv"]:
                conn["out"].append((time.monotonic() + self.delay_s, data))
                conn["cv"].notify()
            return True

        self._pump(up, each, later)

    def _late(self, down, conn):
        while True:
            with conn["cv"]:
                while not conn["out"]:
                    conn["cv"].wait()
                due, data = conn["out"].pop(0)
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    down.close()
                    return
                down.sendall(data)
            except OSError:
                return


def test_one_page_in_redis_at_a_time():
    with open(os.path.join(tpenv.SRC, "scripts/lua/settle_page.lua"), "rb") as f:
        sha = hashlib.sha1(f.read()).hexdigest()
    with tpenv.Redis() as r:
        proxy = PageCountingProxy(r, sha, DELAY_S)
        try:
            with tpenv.Server(redis=proxy, env=ENV, workers=1, https=False) as s:
                m = pgwlib.Money(r, buckets=1)
                rid = m.sure_win_round(s, list(range(920001, 920201)), WINNERS, LOSERS, "op")
                line = m.settled_sure_win(s, rid, WINNERS, timeout=60)
                print(f"    round {rid}: {proxy.pages} settle_page calls through the proxy, "
                      f"at most {proxy.most} in Redis at once; {line.split('msg=')[1]}")
                assert proxy.pages >= 4, "the proxy saw too few pages to judge (the script's sha?)"
                assert proxy.most == 1, f"{proxy.most} pages were in Redis at once"
        finally:
            proxy.close()


if __name__ == "__main__":
    tpenv.main()
