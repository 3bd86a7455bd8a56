"""Small HTTP / WebSocket / Redis-reading helpers shared by the black-box tests
(test_lock_race.py, test_failover.py, test_fanout.py). They sit on top of tpenv: a `Server`
gives the ports, a `Redis` the keys (layout in scripts/lua/README.md).
"""

import base64
import http.client
import json
import os
import socket
import struct
import threading
import time

import msgpack
import tpenv


class Http:
    """One keep-alive HTTP/1.1 connection to a tickpool server; reconnects after an error."""

    def __init__(self, s, timeout=10):
        self.port = s.http_port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """Returns (status, decoded JSON body or None). Raises after two failed attempts."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, (json.loads(data) if data else None)
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 1 or method != "GET":
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_accounts(s, timeout=60):
    """Waits until every worker serves accounts and token checks (after a restart: the server
    may still be connecting; Server.start waits for this already)."""
    s.wait_ready(timeout=timeout)


def make_users(s, n, prefix="u"):
    """Signs up n players; returns [(user_id, token)]."""
    wait_accounts(s)
    out = []
    for i in range(n):
        st, v = s.json("POST", "/api/v1/accounts",
                       {"username": f"{prefix}{i}", "password": "password1"})
        assert st == 201, (st, v)
        out.append((v["user_id"], v["token"]))
    return out


def auth(token, key=None):
    h = {"Authorization": "Bearer " + token}
    if key is not None:
        h["Idempotency-Key"] = key
    return h


def bet(conn, token, rid, band, stake, key):
    """POST /api/v1/bets on an Http; returns (status, body)."""
    return conn.request("POST", "/api/v1/bets", {"round_id": rid, "band": band, "stake": stake},
                        auth(token, key))


def balance(s, tok):
    """The player's balance (GET /api/v1/me)."""
    st, v = s.json("GET", "/api/v1/me", headers=auth(tok))
    assert st == 200, (st, v)
    return v["balance"]


def wait_game(s, timeout=60):
    """Waits until the leader runs (an open round exists) and every worker answers /readyz 200
    (after a restart the round is already open while a worker still loads the account state,
    and its token checks answer 503). Returns /rounds/current."""
    def ready():
        st, v = s.json("GET", "/api/v1/rounds/current")
        return v if st == 200 and v and v.get("open") else None
    v = tpenv.wait_until(ready, timeout=timeout, what="game leader running")
    s.wait_ready(game=True, timeout=timeout)
    return v


def run_threads(fn, args_list):
    """Runs fn(*args) in one thread per args tuple; returns results in order, re-raises."""
    out = [None] * len(args_list)
    errs = []

    def go(i, a):
        try:
            out[i] = fn(*a)
        except BaseException as e:  # noqa: BLE001 - reported below
            errs.append(e)
    ts = [threading.Thread(target=go, args=(i, a)) for i, a in enumerate(args_list)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


# --- Redis views (scripts/lua/README.md) ---

def round_hash(c, rid):
    return c.hgetall("tp:{g}:round:%d" % int(rid))


def lease(c):
    """(holder, pid, epoch) of the leader lease, or None."""
    v = c.get("tp:{g}:lease")
    if not v:
        return None
    holder, epoch = v.split("|")
    return holder, int(holder.split("-")[1]), int(epoch)


def lease_holder(c, servers, timeout=30):
    """Waits for the leader lease held by a worker of one of `servers` (tpenv.Server); returns
    (lease, index of that server in `servers`)."""
    def find():
        ls = lease(c)
        if ls:
            for i, s in enumerate(servers):
                if ls[1] in s.worker_pids():
                    return ls, i
        return None
    return tpenv.wait_until(find, timeout=timeout, interval=0.05, what="a lease held by a worker")


def round_bets(c, rid, buckets, nbands):
    """{bet_id: (user_id, band, stake)} from every bucket's betl:<rid>:<band> lists (and the
    bets:<rid>:<band> hashes an older version wrote); a bet id in two places is an error."""
    out = {}
    for b in range(buckets):
        for band in range(nbands):
            entries = [e.split(":", 1) for e in
                       c.lrange("tp:{b%d}:betl:%d:%d" % (b, int(rid), band), 0, -1)]
            entries += c.hgetall("tp:{b%d}:bets:%d:%d" % (b, int(rid), band)).items()
            for bid, v in entries:
                u, st = v.split(":")
                assert int(bid) not in out, "bet %s twice in round %s's bets" % (bid, rid)
                out[int(bid)] = (int(u), band, int(st))
    return out


# Every other entry of each band's list (KEYS[2i - 1]) into its hash (KEYS[2i]), as a bet script
# before session 26 wrote them (bet_id -> "<user_id>:<stake>"); returns how many moved.
HALF_TO_HASH = """
local moved = 0
for i = 1, #KEYS, 2 do
    local keep = {}
    for j, e in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
        local bet_id, rest = e:match('^(%d+):(.*)$')
        if j % 2 == 0 then
            redis.call('HSET', KEYS[i + 1], bet_id, rest)
            moved = moved + 1
        else
            keep[#keep + 1] = e
        end
    end
    redis.call('DEL', KEYS[i])
    if #keep > 0 then redis.call('RPUSH', KEYS[i], unpack(keep)) end
end
return moved
"""


def bets_half_to_hash(c, rid, bucket, nbands):
    """Round rid's bets in `bucket` half in the bands' lists, half in their hashes: a round whose
    bets an older server (before session 26) admitted in part. One script, so nothing else writes
    the keys meanwhile; returns how many moved."""
    keys = []
    for band in range(nbands):
        keys += ["tp:{b%d}:betl:%d:%d" % (bucket, int(rid), band),
                 "tp:{b%d}:bets:%d:%d" % (bucket, int(rid), band)]
    return c.eval(HALF_TO_HASH, len(keys), *keys)


def round_paid(c, rid, buckets):
    """{bet_id: amount} from every bucket's paid:<rid> hash."""
    out = {}
    for b in range(buckets):
        for bid, v in c.hgetall("tp:{b%d}:paid:%d" % (b, int(rid))).items():
            out[int(bid)] = int(v)
    return out


def pool_total(c, rid, buckets):
    return sum(int(c.hget("tp:{b%d}:pool:%d" % (b, int(rid)), "total") or 0)
               for b in range(buckets))


def balances(c, buckets):
    out = {}
    for b in range(buckets):
        for u, v in c.hgetall("tp:{b%d}:bal" % b).items():
            out[int(u)] = int(v)
    return out


def expected_credits(bets, rnd):
    """{bet_id: amount} the contract pays for a finished round (global hash `rnd`) with `bets`
    ({bet_id: (user, band, stake)}): refunds for cancelled / refund_all, else floor(s*pot/W) for
    the winning band. Also checks the receipt against an independent computation."""
    if rnd["state"] == "cancelled" or rnd.get("refund_all") == "1":
        return {bid: st for bid, (_, _, st) in bets.items()}
    assert rnd["state"] == "settled", rnd
    band = int(rnd["winning_band"])
    T = sum(st for _, _, st in bets.values())
    W = sum(st for _, b, st in bets.values() if b == band)
    rake = min(T * int(rnd["rake_bps"]) // 10000, T - W)
    pot = T - rake
    assert (int(rnd["r_total"]), int(rnd["r_winning_stake"]), int(rnd["r_rake"])) == \
        (T, W, rake), (T, W, rake, rnd)
    pay = {bid: st * pot // W for bid, (_, b, st) in bets.items() if b == band}
    assert int(rnd["r_payouts"]) == sum(pay.values()), (rnd, sum(pay.values()))
    assert int(rnd["r_breakage"]) == pot - sum(pay.values()), rnd
    return pay


def rss_kb(pids):
    """Σ VmRSS (kB) of the given processes (missing ones count 0)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def audit(s, wait="20"):
    r = s.run_cli("audit", "--wait", wait, timeout=120)
    return r.returncode, r.stdout + r.stderr


# --- Raw WebSocket client for many sockets (selectors-friendly) ---

UPGRADE = ("GET /ws{q} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: tickpool.v1\r\n\r\n")


class RawWS:
    """A non-blocking WebSocket client socket: upgrade sent on creation, frames parsed from
    whatever feed() gets. Server frames are unmasked; messages are MessagePack maps."""

    def __init__(self, port, token=None, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        q = f"?token={token}" if token else ""
        self.sock.sendall(UPGRADE.format(q=q, k=key).encode())
        self.sock.setblocking(False)
        self.buf = b""
        self.upgraded = False
        self.closed = None  # close code, or -1 on EOF/reset
        self.msgs = []

    def fileno(self):
        return self.sock.fileno()

    def read(self):
        """Reads what is available; appends parsed messages to self.msgs. Returns bytes read."""
        n = 0
        while True:
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                if self.closed is None:
                    self.closed = -1
                break
            n += len(data)
            self.buf += data
        self._parse()
        return n

    def _parse(self):
        if not self.upgraded:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.buf[:i]
            assert head.startswith(b"HTTP/1.1 101"), head[:200]
            self.buf = self.buf[i + 4:]
            self.upgraded = True
        b = self.buf
        pos = 0
        while len(b) - pos >= 2:
            op = b[pos] & 0x0F
            ln = b[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if len(b) - pos < 4:
                    break
                ln = struct.unpack(">H", b[pos + 2:pos + 4])[0]
                hl = 4
            elif ln == 127:
                if len(b) - pos < 10:
                    break
                ln = struct.unpack(">Q", b[pos + 2:pos + 10])[0]
                hl = 10
            if len(b) - pos < hl + ln:
                break
            payload = b[pos + hl:pos + hl + ln]
            pos += hl + ln
            if op == 2:
                self.msgs.append(msgpack.unpackb(payload))
            elif op == 9:
                self._pong(payload)
            elif op == 8:
                self.closed = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        self.buf = b[pos:]

    def _pong(self, payload):
        """Answers a ping as a browser does: the server closes a socket silent for 40 s (1001
        `idle`), which a slow run (1,000 sockets opened on a loaded machine) reaches."""
        mask = os.urandom(4)
        frame = bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(
            b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self.sock.send(frame)
        except OSError:
            pass  # a full send buffer or a closing socket: the server's close says which

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def pump(sel, seconds, slice_s=0.05):
    """Reads every RawWS registered in the selector `sel` (its data) as it becomes readable,
    for `seconds`."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        for key, _ in sel.select(timeout=min(left, slice_s)):
            key.data.read()


def place_bets(s, users, rid, jobs, nthreads=16, tag="b"):
    """Places jobs [(band, stake)] into round rid round-robin over users [(uid, token)], from
    nthreads keep-alive connections. Returns {bet_id: (uid, band, stake)} of the 201s and the
    list of (status, body) of the others."""
    def worker(t):
        conn = Http(s)
        ok, other = {}, []
        for n in range(t, len(jobs), nthreads):
            band, stake = jobs[n]
            uid, tok = users[n % len(users)]
            st, body = bet(conn, tok, rid, band, stake, f"{tag}-{rid}-{n}")
            if st == 201:
                ok[body["bet_id"]] = (uid, band, stake)
            else:
                other.append((st, body))
        conn.close()
        return ok, other
    ok, other = {}, []
    for o, x in run_threads(worker, [(t,) for t in range(nthreads)]):
        ok.update(o)
        other.extend(x)
    return ok, other


def fresh_open_round(s, min_left_ms=1500, timeout=30):
    """GET /rounds/current until its open round locks at least min_left_ms from now."""
    def find():
        st, v = s.json("GET", "/api/v1/rounds/current")
        o = v and v.get("open")
        if st == 200 and o and o["locks_at"] - time.time() * 1000 >= min_left_ms:
            return o
        return None
    return tpenv.wait_until(find, timeout=timeout, interval=0.05, what="a freshly opened round")
