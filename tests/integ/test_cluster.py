"""tickpool on a real Redis Cluster (redis.mode = cluster): 3 masters + 3 replicas on private
ports (started like `scripts/up --redis-cluster 3`), Postgres, two workers, game.buckets = 12.

The whole game runs through the cluster client (src/store/store_cluster.c): sign-ups, bets over
HTTP and over WebSocket whose buckets live on every master, odds, settlement and payouts, the
writer draining every bucket's outbox to Postgres, then `tickpool audit` (clean) and
`tickpool verify` for each round that took bets. Configuration mistakes are refused up front.
"""

import collections
import subprocess
import time

import msgpack
import tpclient
import tpenv
import websocket

BUCKETS = 12
ENV = {"TICKPOOL_GAME_BUCKETS": str(BUCKETS), "TICKPOOL_GAME_BETTING_S": "3",
       "TICKPOOL_GAME_LIVE_S": "2", "TICKPOOL_GAME_TICK_MS": "100",
       "TICKPOOL_GAME_START_BALANCE": "100000", "TICKPOOL_GAME_MIN_STAKE": "100",
       "TICKPOOL_GAME_MAX_STAKE": "100000"}


def ws_bets(s, tok, rid, bets, tag):
    """Places [(band, stake)] over one WebSocket; returns the bet_ok messages."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws?token={tok}",
                                     subprotocols=["tickpool.v1"], timeout=10)
    try:
        for i, (band, stake) in enumerate(bets):
            ws.send_binary(msgpack.packb({"t": "bet", "req": i, "key": f"{tag}-{i}",
                                          "round_id": rid, "band": band, "stake": stake}))
        answers = {}
        deadline = time.monotonic() + 10
        while len(answers) < len(bets) and time.monotonic() < deadline:
            op, data = ws.recv_data()
            if op != websocket.ABNF.OPCODE_BINARY:
                continue
            m = msgpack.unpackb(data)
            if m.get("t") in ("bet_ok", "bet_err"):
                answers[m["req"]] = m
        return [answers.get(i) for i in range(len(bets))]
    finally:
        ws.close()


def bucket_keys_by_master(rc, pattern):
    """{master port: number of keys matching pattern on that node} (SCAN on each master)."""
    out = {}
    for p in rc.master_ports():
        r = subprocess.run(["redis-cli", "-p", str(p), "--scan", "--pattern", pattern],
                           capture_output=True, text=True, timeout=10)
        out[p] = len(r.stdout.split())
    return out


def test_full_game_on_a_cluster():
    with tpenv.RedisCluster(3) as rc, tpenv.Postgres() as pg, \
            tpenv.Server(redis=rc, pg=pg, env=ENV, workers=2, https=False) as s:
        assert len(rc.master_ports()) == 3
        tpclient.wait_game(s, timeout=30)
        # every worker's view (each caches the open round for up to 1 s)
        def ready():
            st, v = s.json("GET", "/readyz")
            return v if st == 200 else None
        for _ in range(4):
            v = tpenv.wait_until(ready, timeout=10, what="/readyz 200")
            assert v["redis"] == "up", v
        users = tpclient.make_users(s, 2 * BUCKETS, prefix="cl")
        assert {uid % BUCKETS for uid, _ in users} == set(range(BUCKETS))

        taken = collections.defaultdict(int)  # round id -> bets accepted
        stakes = {}
        for attempt in range(3):  # a round whose betting phase leaves room for every bet
            rnd = tpclient.fresh_open_round(s, min_left_ms=2000)
            rid = rnd["id"]
            half = len(users) // 2
            jobs = [((i % 5), 100 * (1 + i % 7)) for i in range(half * 2)]
            ok, other = tpclient.place_bets(s, users[:half], rid, jobs, nthreads=4,
                                            tag=f"h{attempt}")
            ws_ok = []
            for j, (uid, tok) in enumerate(users[half:]):
                ws_ok += ws_bets(s, tok, rid, [((j + k) % 5, 200) for k in range(2)],
                                 f"w{attempt}-{uid}")
            if not other and all(m and m["t"] == "bet_ok" for m in ws_ok):
                taken[rid] += len(ok) + len(ws_ok)
                stakes[rid] = sum(v[2] for v in ok.values()) + sum(m["stake"] for m in ws_ok)
                break
            late = [x for x in other if x[1]["error"]["code"] != "round_not_open"] + \
                [m for m in ws_ok if not m or (m["t"] != "bet_ok" and m["code"] != "round_not_open")]
            assert not late, late  # only a lock that came first may refuse a bet
        assert taken, "no round took every bet before its lock"
        rid = next(iter(taken))

        # The buckets spread evenly over the masters (cluster mode's tags, tp:{bN.K}:), and
        # every master holds some of the round's bets.
        per_master = bucket_keys_by_master(rc, "tp:{b*.*}:bal")
        assert sorted(per_master.values()) == [4, 4, 4], per_master
        per_master = bucket_keys_by_master(rc, f"tp:{{b*}}:betl:{rid}:*")
        assert len(per_master) == 3 and all(n > 0 for n in per_master.values()), per_master

        def final():
            st, r = s.json("GET", f"/api/v1/rounds/{rid}")
            return r if st == 200 and r["state"] in ("settled", "cancelled") else None
        r = tpenv.wait_until(final, timeout=30, what=f"round {rid} settled")
        assert r["state"] == "settled", r
        assert r["total"] == stakes[rid], (r["total"], stakes[rid])
        rc_ = r["receipt"]
        assert rc_["payouts"] + rc_["rake"] + rc_["breakage"] + rc_["refunds"] == rc_["total"]

        # Payouts reached the players: the balances add up to grants - stakes + payouts.
        conn = tpclient.Http(s)
        total = 0
        for uid, tok in users:
            st, me = conn.request("GET", "/api/v1/me", headers=tpclient.auth(tok))
            assert st == 200, me
            total += me["balance"]
        conn.close()
        assert total == 100000 * len(users) - rc_["total"] + rc_["payouts"] + rc_["refunds"], \
            (total, rc_)

        # The seed is revealed once its price segment is past (the next round's lock).
        tpenv.wait_until(lambda: s.json("GET", f"/api/v1/rounds/{rid}")[1]["seed"], timeout=15,
                         what=f"round {rid}'s seed revealed")
        code, out = tpclient.audit(s, wait="30")
        assert code == 0 and "all checks passed" in out, out
        v = s.run_cli("verify", str(rid))
        assert v.returncode == 0 and "VERIFIED" in v.stdout, v.stdout + v.stderr
        rows = pg.psql(f"SELECT count(*) FROM bets WHERE round_id = {rid}")
        assert int(rows[0][0]) == taken[rid], rows
        log = s.log_text()
        assert "CROSSSLOT" not in log
        for bad in ("worker died", "AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert bad not in log, bad


def test_bad_cluster_configuration_is_refused():
    s = tpenv.Server(env={"TICKPOOL_REDIS_MODE": "cluster",
                          "TICKPOOL_REDIS_URL": "redis://127.0.0.1:7000,unix:///tmp/x.sock"})
    r = s.run_cli("--check-config")
    assert r.returncode == 2 and "redis.url" in r.stderr + r.stdout, r.stdout + r.stderr
    s = tpenv.Server(env={"TICKPOOL_REDIS_URL": "redis://127.0.0.1:7000,redis://127.0.0.1:7001"})
    r = s.run_cli("--check-config")
    assert r.returncode == 2 and "redis.mode" in r.stderr + r.stdout, r.stdout + r.stderr
    s = tpenv.Server(env={"TICKPOOL_REDIS_MODE": "sharded"})
    r = s.run_cli("--check-config")
    assert r.returncode == 2 and "standalone or cluster" in r.stderr + r.stdout, r.stderr
    s = tpenv.Server(env={"TICKPOOL_REDIS_MODE": "cluster",
                          "TICKPOOL_REDIS_URL": "redis://127.0.0.1:7000/2"})
    assert s.run_cli("--check-config").returncode == 2
    s = tpenv.Server(env={"TICKPOOL_REDIS_MODE": "cluster", "TICKPOOL_REDIS_REPLICAS_ACK": "17",
                          "TICKPOOL_REDIS_URL": "redis://127.0.0.1:7000"})
    assert s.run_cli("--check-config").returncode == 2
    s = tpenv.Server(env={"TICKPOOL_REDIS_MODE": "cluster", "TICKPOOL_REDIS_REPLICAS_ACK": "1",
                          "TICKPOOL_REDIS_URL": "redis://127.0.0.1:7000,redis://h2:7001"})
    r = s.run_cli("--check-config")
    assert r.returncode == 0 and "replicas_ack = 1" in r.stdout, r.stdout + r.stderr


if __name__ == "__main__":
    tpenv.main()
