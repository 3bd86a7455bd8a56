"""The leader lease lost during a settlement's pacing gap.

While a settlement is ahead of its line (src/game/leader_settle.c, tp_settle_pace_gap) the
leader leaves Redis idle between two pages on a timer, with no page in flight. If the lease goes
meanwhile, tp_leader_lose stops that timer and ends the step at once: when this process takes
the lease back, a step of the new lease resumes the settlement from the plan's cursor, instead of
the old lease's step waiting out its gap and then carrying on. The money is exact either way
(every page is idempotent); what this test sees is when the settlement resumes.

Real Redis and tickpool, one worker, no Postgres (the bets go straight into Redis through the
real bet_batch.lua). The test hook TP_TEST_SETTLE_PACE_GAP_MS makes every pacing gap 5 s long,
so the test can act inside one; band edges of ±100 % make band 1 win for sure.
"""

import time

import pgwlib
import tpclient
import tpenv

GAP_MS = 5000
WINNERS, LOSERS = 900, 300
ENV = {"TICKPOOL_GAME_BETTING_S": "8", "TICKPOOL_GAME_LIVE_S": "2",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BAND_EDGES_BPS": "-10000,10000",
       "TICKPOOL_LOG_LEVEL": "info", "TP_TEST_SETTLE_PACE_GAP_MS": str(GAP_MS)}


def in_gap(c, rid, timeout=30):
    """Waits until the round's first page is paid and the next does not come for 300 ms (the
    5 s gap); returns (monotonic time the first page was seen, the plan's paid), or None when
    the settlement went on without a gap (behind its line from the start: a slow host)."""
    plan = "tp:{b0}:plan:%d" % rid
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        paid, done = c.hmget(plan, "paid", "done")
        if done == "1" or c.hget("tp:{g}:round:%d" % rid, "state") == "settled":
            return None
        if paid and int(paid) > 0:
            if seen is None:
                seen = (time.monotonic(), paid)
            elif paid != seen[1]:
                return None  # a second page came at once: not paced
            elif time.monotonic() - seen[0] >= 0.3:
                return seen[0], int(paid)
        time.sleep(0.002)
    raise AssertionError(f"round {rid}: no page paid within {timeout} s")


def test_lease_lost_in_a_pacing_gap():
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=ENV, workers=1, https=False) as s:
        c = r.client()
        m = pgwlib.Money(r, buckets=1)
        users = list(range(910001, 910021))
        for u in users:
            m.grant(u, 10**12, grant_id=f"pace-lease:{u}")
        tpenv.wait_until(lambda: c.hget("tp:{g}:current", "open"), timeout=30, what="a round")
        caught = None
        for attempt in range(3):
            o = tpclient.fresh_open_round(s, min_left_ms=5000, timeout=60)
            rid = o["id"]
            m.fill_sure_win(rid, users, WINNERS, LOSERS, f"pl{attempt}", o["locks_at"])
            tpenv.wait_until(lambda: c.hget("tp:{g}:round:%d" % rid, "state") == "settling",
                             timeout=30, interval=0.002, what=f"round {rid} settling")
            caught = in_gap(c, rid)
            if caught:
                break
            print(f"    round {rid}: settled without a pacing gap, next round")
        assert caught, "no settlement was ever ahead of its line"
        t_gap, paid0 = caught
        # Another holder takes the lease (as lease.lua would give it: a new epoch) for 1.5 s.
        holder, _, epoch = tpclient.lease(c)
        e = c.incr("tp:{g}:epoch")
        assert e > epoch
        c.set("tp:{g}:lease", f"pid-0-wtest|{e}", px=1500)
        tpenv.wait_until(lambda: "lost the leader lease" in s.log_text(), timeout=3,
                         interval=0.01, what="the lease lost")
        plan = "tp:{b0}:plan:%d" % rid
        # No page while another holds the lease; then this process takes it back and a step of
        # its new lease resumes the settlement, well before the 5 s gap would have ended.
        # (One GET: the lease can expire between an EXISTS and a GET.)
        while (c.get("tp:{g}:lease") or "").startswith("pid-0-wtest|"):
            assert int(c.hget(plan, "paid")) == paid0, "a page ran under another's lease"
            time.sleep(0.005)
        moved = tpenv.wait_until(
            lambda: (int(c.hget(plan, "paid")) != paid0 or c.hget(plan, "done") == "1")
            and time.monotonic(), timeout=10, interval=0.005, what="the settlement resumed")
        took = moved - t_gap
        print(f"    round {rid}: gap from {paid0} paid; resumed {took:.2f} s after it began "
              f"(the gap: {GAP_MS / 1000:.0f} s)")
        assert took < GAP_MS / 1000 - 1.0, f"resumed only after {took:.2f} s: the gap was waited out"
        new = tpclient.lease(c)
        assert new[0] == holder and new[2] > e, (holder, e, new)

        line = m.settled_sure_win(s, rid, WINNERS)
        assert " pages_paced=0 " in line, line


if __name__ == "__main__":
    tpenv.main()
