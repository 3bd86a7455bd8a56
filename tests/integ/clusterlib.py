"""Shared by the Redis Cluster tests (test_cluster_failover.py, test_cluster_reshard.py,
test_cluster_archive.py): the server's environment, which master holds what, a slot moved by
hand, a steady HTTP bet load that retries 503s with the same idempotency key, and the
after-checks (every acked bet in Redis and Postgres once)."""

import collections
import subprocess
import threading
import time

import tpclient

BUCKETS = 12


def env(ack=0):
    return {"TICKPOOL_GAME_BUCKETS": str(BUCKETS), "TICKPOOL_GAME_BETTING_S": "3",
            "TICKPOOL_GAME_LIVE_S": "2", "TICKPOOL_GAME_TICK_MS": "100",
            "TICKPOOL_GAME_START_BALANCE": "1000000000", "TICKPOOL_GAME_MIN_STAKE": "100",
            "TICKPOOL_GAME_MAX_STAKE": "100000", "TICKPOOL_REDIS_REPLICAS_ACK": str(ack)}


def slot_owner(rc, key):
    """Port of the master serving `key` (asks the first node that answers)."""
    for p in rc.ports:
        nodes = rc.cli(p, "CLUSTER", "NODES")
        if nodes:
            slot = int(rc.cli(p, "CLUSTER", "KEYSLOT", key))
            break
    for ln in nodes.splitlines():
        f = ln.split()
        if "master" not in f[2] or "fail" in f[2]:
            continue
        for rng in f[8:]:
            lo, _, hi = rng.partition("-")
            if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                return int(f[1].split("@")[0].rsplit(":", 1)[1])
    return None


def node_id(rc, port):
    return rc.cli(port, "CLUSTER", "MYID")


def node_cmd(port, *args):
    """One command to one node (no redirect followed); output stripped."""
    return subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def migrate_slot(rc, slot, src, dst):
    """Moves a slot by hand as redis-cli --cluster reshard does: IMPORTING / MIGRATING, every
    key in one MIGRATE, then the slot's owner on every master."""
    src_id, dst_id = node_id(rc, src), node_id(rc, dst)
    assert node_cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id) == "OK"
    assert node_cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id) == "OK"
    keys = node_cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, 100000).split()
    if keys:
        r = node_cmd(src, "MIGRATE", "127.0.0.1", dst, "", 0, 20000, "KEYS", *keys)
        assert r == "OK", r
    for p in [dst, src] + [p for p in rc.master_ports() if p not in (src, dst)]:
        assert node_cmd(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id) == "OK"


def scan(port, pattern):
    """Keys matching pattern on one node."""
    return subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", pattern],
                          capture_output=True, text=True, timeout=30).stdout.split()


def bucket_tag(rc, bucket):
    """tp:{bN.K} of a bucket, read from the cluster (the server chose K)."""
    for p in rc.master_ports():
        for k in scan(p, "tp:{b%d.*}:bal" % bucket):
            return k.split("}")[0] + "}"
    return None


class Load:
    """NTHREADS clients betting 100 on the open round, round-robin over `users`, each bet with a
    fresh key (prefixed by `tag`: two loads on the same users need different tags); a 503 is
    retried with the same key (every 50 ms, for 20 s). `acked` maps key -> (bet_id, user_id);
    `unavailable[True/False]` the times of 503s for users in `marked` or not (a bucket whose copy
    of the open round stays missing answers 503 too, and is counted there); `missing_copy` the
    times of refusals that would mean a missing copy answered the old way: 404 round_not_found,
    or 409 round_not_open, answered more than 1 s before the lock of the round the bet named;
    `last_ok` the time of each user's latest 201; `other` counts other answers."""

    def __init__(self, s, users, marked=(), nthreads=8, tag="t"):
        self.s, self.users, self.marked, self.nthreads = s, users, set(marked), nthreads
        self.tag = tag
        self.stopping = False
        # (round id, its locks_at) of the open round while more than 300 ms of it are left,
        # else None: one value, so that a bettor never pairs a round with the next one's lock.
        self.open = None
        self.acked, self.retried = {}, set()
        self.unavailable = collections.defaultdict(list)
        self.missing_copy = []
        self.ok_times = collections.defaultdict(list)  # [marked?] -> times of 201s
        self.last_ok = {}  # user id -> time of its latest 201
        self.other = collections.Counter()
        self.no_answer = 0  # requests that got no answer within the client's 10 s (retried)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._poll)] + \
            [threading.Thread(target=self._bettor, args=(t,)) for t in range(nthreads)]
        self.t0 = time.monotonic()

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        for th in self.threads:
            th.join()
        self.elapsed = time.monotonic() - self.t0

    def _poll(self):
        while not self.stopping:
            try:
                st, v = self.s.json("GET", "/api/v1/rounds/current")
                o = v.get("open") if st == 200 and v else None
                live = o and o["locks_at"] - time.time() * 1000 > 300
                self.open = (o["id"], o["locks_at"]) if live else None
            except OSError:
                pass
            time.sleep(0.05)

    def _bettor(self, t):
        conn = tpclient.Http(self.s, timeout=10)
        n = 0
        while not self.stopping:
            cur = self.open
            if cur is None:
                time.sleep(0.01)
                continue
            rid, locks_at = cur
            uid, tok = self.users[(t + n * self.nthreads) % len(self.users)]
            key = f"{self.tag}{t}-{n}"
            n += 1
            body = {"round_id": rid, "band": n % 5, "stake": 100}
            until = time.monotonic() + 20
            while time.monotonic() < until and not self.stopping:
                try:
                    st, v = conn.request("POST", "/api/v1/bets", body, tpclient.auth(tok, key))
                except OSError:
                    with self.lock:
                        self.no_answer += 1
                    time.sleep(0.05)
                    continue
                if st == 201:
                    with self.lock:
                        assert key not in self.acked, (key, self.acked[key], v)
                        self.acked[key] = (v["bet_id"], uid)
                        now = time.monotonic()
                        self.ok_times[uid in self.marked].append(now)
                        self.last_ok[uid] = now
                    break
                if st == 503:
                    with self.lock:
                        self.retried.add(key)
                        self.unavailable[uid in self.marked].append(time.monotonic())
                    time.sleep(0.05)
                    continue
                with self.lock:
                    code = v["error"]["code"] if v else None
                    self.other[(st, code)] += 1
                    if (st, code) in ((404, "round_not_found"), (409, "round_not_open")) and \
                            locks_at - time.time() * 1000 > 1000:
                        self.missing_copy.append(time.monotonic())
                break
        conn.close()


def bets_in_redis(rc):
    """{bet_id: [bets list keys holding it]} over every master."""
    out = {}
    for p in rc.master_ports():
        for k in scan(p, "tp:{b*}:betl:*"):
            entries = subprocess.run(["redis-cli", "-p", str(p), "LRANGE", k, "0", "-1"],
                                     capture_output=True, text=True, timeout=10).stdout.split()
            for bid in (e.split(":")[0] for e in entries):
                out.setdefault(int(bid), []).append(k)
    return out


def acked_missing(rc, pg, acked):
    """(acked bets missing in Redis, missing in Postgres, bet ids in two places of the bets
    lists)."""
    in_redis = bets_in_redis(rc)
    ids = {v[0] for v in acked.values()}
    assert len(ids) == len(acked)  # one bet per key
    rows = pg.psql("SELECT user_id, idempotency_key, id FROM bets")
    pg_bets = {(int(r[0]), r[1]): int(r[2]) for r in rows}
    lost_pg = sorted(k for k, v in acked.items() if pg_bets.get((v[1], k)) != v[0])
    return (sorted(ids - set(in_redis)), lost_pg,
            [b for b, ks in in_redis.items() if len(ks) > 1])


def audit_clean(s, timeout=90):
    """Retries `tickpool audit` until clean (rounds still settling); False and prints if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, out = tpclient.audit(s, wait="5")
        if code == 0:
            return True
        time.sleep(2)
    print(out)
    return False


def only_round_not_open(other):
    """The one refusal a steady load may see: a bet that reaches a round after its lock."""
    return set(other) <= {(409, "round_not_open")}


def healthy(s):
    """No worker of `s` died and no sanitizer spoke (a restarted worker would hide both)."""
    log = s.log_text()
    for bad in ("worker died", "AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert bad not in log, f"{bad!r} in the server log"
