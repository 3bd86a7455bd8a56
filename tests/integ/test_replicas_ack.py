"""redis.replicas_ack on a standalone primary with a real replica (a second redis-server, REPLICAOF
the first, on its own free port).

With replicas_ack = 1 every script's answer waits for WAIT 1 on the connection that ran it:
(a) while the replica is attached, bets answer 201, the primary ran WAIT, and the replica holds
    the balances the answers gave;
(b) with the replica gone (killed), a bet answers 503 `unavailable` (its debit stays done on the
    primary, once), and so does its retry, without a second debit;
(c) once the replica is back, the retry of that key answers 201 with the bet, the same answer
    every time, still debited once; the logs tell the stretch's start and end (a client retries
    on 503: with the replica attached a WAIT can still run out on a loaded host, so (a) and (c)
    retry as a client does);
(d) the rounds end, Postgres holds each bet once, and `tickpool audit` passes.
And the configuration: replicas_ack is accepted in standalone mode, bad values are refused with
the key named.
"""

import tpclient
import tpenv

BUCKETS = 2
ENV = {"TICKPOOL_REDIS_REPLICAS_ACK": "1", "TICKPOOL_GAME_BUCKETS": str(BUCKETS),
       "TICKPOOL_GAME_BETTING_S": "20", "TICKPOOL_GAME_LIVE_S": "2",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_START_BALANCE": "100000",
       "TICKPOOL_GAME_MIN_STAKE": "100", "TICKPOOL_GAME_MAX_STAKE": "10000"}


def attach(replica, primary):
    """Makes `replica` replicate `primary` and waits until both see the link up."""
    replica.cli("REPLICAOF", "127.0.0.1", primary.port)
    tpenv.wait_until(lambda: "master_link_status:up" in replica.cli("INFO", "replication") and
                     "connected_slaves:1" in primary.cli("INFO", "replication"),
                     timeout=30, what="the replica attached")


def placed(conn, tok, rid, band, stake, key):
    """Places a bet as a client does: its key again while the answer is 503 `unavailable` (with
    the replica attached a WAIT can still run out, 200 ms here, when a loaded host keeps the
    replica's acknowledgement back). Returns the first other answer, (status, body)."""
    def once():
        st, body = tpclient.bet(conn, tok, rid, band, stake, key)
        return None if st == 503 and body["error"]["code"] == "unavailable" else (st, body)
    return tpenv.wait_until(once, timeout=30, interval=0.1, what=f"bet {key} answered")


def waits_run(primary):
    """How many WAIT commands the primary has run."""
    return int(primary.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def test_bets_wait_for_a_real_replica():
    with tpenv.Redis() as prim, tpenv.Redis() as rep, tpenv.Postgres() as pg:
        attach(rep, prim)
        with tpenv.Server(redis=prim, pg=pg, env=ENV) as s:
            (uid, tok), = tpclient.make_users(s, 1, prefix="acked")
            tpclient.wait_game(s)
            rnd = tpclient.fresh_open_round(s, min_left_ms=12000)
            rid = rnd["id"]
            conn = tpclient.Http(s)
            c = prim.client()

            # (a) acknowledged by the replica: 201, and the replica has what was answered.
            waits = waits_run(prim)
            acked = []
            for i in range(4):
                st, body = placed(conn, tok, rid, i % 3, 100 + i, f"a{i}")
                assert st == 201, (st, body)
                acked.append(body)
            assert waits_run(prim) >= waits + 4, "a bet answered without WAIT"
            # WAIT answered for what it covered: the replica holds the answered balance.
            assert tpclient.balances(rep.client(), BUCKETS)[uid] == acked[-1]["balance"]
            before = tpclient.balances(c, BUCKETS)[uid]
            assert before == acked[-1]["balance"]

            # (b) no replica: the bet is placed on the primary but answered 503 (its write may
            # not survive the primary), its retry too, with one debit.
            rep.stop()
            tpenv.wait_until(lambda: "connected_slaves:0" in prim.cli("INFO", "replication"),
                             what="the primary saw its replica go")
            st, body = tpclient.bet(conn, tok, rid, 1, 500, "b0")
            assert (st, body and body["error"]["code"]) == (503, "unavailable"), (st, body)
            assert tpclient.balances(c, BUCKETS)[uid] == before - 500, "the debit is not done"
            st, body = tpclient.bet(conn, tok, rid, 1, 500, "b0")
            assert (st, body and body["error"]["code"]) == (503, "unavailable"), (st, body)
            st, body = tpclient.bet(conn, tok, rid, 2, 700, "b1")
            assert (st, body and body["error"]["code"]) == (503, "unavailable"), (st, body)
            assert tpclient.balances(c, BUCKETS)[uid] == before - 1200, "a retry debited again"

            # (c) the replica is back: the retries answer the bets as they were placed.
            rep.start()
            attach(rep, prim)
            st, first = placed(conn, tok, rid, 1, 500, "b0")
            assert st == 201, (st, first)
            assert (first["round_id"], first["band"], first["stake"]) == (rid, 1, 500), first
            assert first["balance"] == before - 500, first  # its own debit, as first placed
            st, again = placed(conn, tok, rid, 1, 500, "b0")
            assert (st, again) == (201, first), (st, again)
            st, b1 = placed(conn, tok, rid, 2, 700, "b1")
            assert st == 201 and b1["balance"] == before - 1200, (st, b1)
            assert tpclient.balances(c, BUCKETS)[uid] == before - 1200, "money doubled"
            assert tpclient.balances(rep.client(), BUCKETS)[uid] == before - 1200
            log = s.log_text()
            print("\n".join(x for x in log.splitlines() if "acknowledg" in x))
            assert "not acknowledged by enough replicas" in log, log[-3000:]
            assert "replicas acknowledge writes again" in log, log[-3000:]

            # (d) the round ends; Postgres has every bet once; the audit holds.
            ok = {(uid, k): b["bet_id"] for k, b in
                  [(f"a{i}", b) for i, b in enumerate(acked)] + [("b0", first), ("b1", b1)]}
            tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") in
                             ("settled", "cancelled"), timeout=60, what="the round final")
            tpenv.wait_until(lambda: pg.psql(
                f"SELECT count(*) FROM bets WHERE round_id = {rid} AND status <> 'pending'"
            ) == [[str(len(ok))]], timeout=60, what="the bets resolved in Postgres")
            rows = pg.psql(f"SELECT user_id, idempotency_key, id FROM bets WHERE round_id = {rid}")
            assert {(int(u), k): int(i) for u, k, i in rows} == ok and len(rows) == len(ok), rows
            code, out = tpclient.audit(s, "30")
            assert code == 0, out
            conn.close()


def test_configuration():
    s = tpenv.Server(env={"TICKPOOL_REDIS_REPLICAS_ACK": "2"})
    r = s.run_cli("--check-config")
    assert r.returncode == 0 and "replicas_ack = 2" in r.stdout, r.stdout + r.stderr
    for bad, why in [("17", "must be between 0 and 16"), ("-1", "must be between 0 and 16"),
                     ("one", "must be an integer")]:
        s = tpenv.Server(env={"TICKPOOL_REDIS_REPLICAS_ACK": bad})
        r = s.run_cli("--check-config")
        out = r.stdout + r.stderr
        assert r.returncode == 2 and f"redis.replicas_ack: {why}" in out, (bad, out)


if __name__ == "__main__":
    tpenv.main()
