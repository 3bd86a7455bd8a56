"""The leader waits before a settlement's next page, pacing gap or not.

src/game/settle.c's tp_settle_page_wait gives the wait before the next page (the pacing gap ahead
of the line, at least TP_SETTLE_PAGE_GAP_MIN_US behind it, none while catching up), and
tests/unit/game/test_settle.c pins that rule; this test checks that the leader uses it: with the
test hook TP_TEST_SETTLE_PAGE_WAIT_MS every wait is at least WAIT_MS, so every `settle page` line
neither catching up nor late (behind the late line, where the pages go back to back too: the line's
`late`, where the server logs it) asks for at least that (wait_us) and every other line for none,
and each page that asked for a wait is followed by the next page no sooner than that (the next line
is logged when the next page's reply is in, after its send). The one exception is a step's end: a
step that ends on a page's reply (its slice used up) leaves that page's wait to the next step,
which sends its first page at once; so at most steps - 1 pages (the `round settled` line's steps)
are followed sooner. A leader that computed the wait and sent the next page at once would log pages
a page's round trip apart, many to a step. The money is checked as in the other settlement tests
(every winner credited once, stake * pot / W).

3,000 winners: pages wait only while the settlement keeps up with its pacing line (its first
~1.5 s after the close); one that a slow host starts late, or runs in small pages, sends them back
to back until it has caught up. With 900 winners (6-10 pages), a server stopped for 1 s at the
close left fewer than two waits; 3,000 winners' pages leave several after the catch-up.

Real Redis and tickpool, one worker, no Postgres (the bets go straight into Redis through the real
bet_batch.lua). Band edges of +-100 % make band 1 win for sure.
"""

import datetime
import re

import pgwlib
import tpenv

WAIT_MS = 120
WINNERS, LOSERS = 3000, 1000
ENV = {"TICKPOOL_GAME_BETTING_S": "8", "TICKPOOL_GAME_LIVE_S": "2",
       "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_BAND_EDGES_BPS": "-10000,10000",
       "TICKPOOL_LOG_LEVEL": "debug", "TP_TEST_SETTLE_PAGE_WAIT_MS": str(WAIT_MS)}


def pages(log, rid):
    """[(log time s, fields)] of round rid's `settle page` lines, in order."""
    out = []
    for ln in log.splitlines():
        if 'msg="settle page"' not in ln or f" round={rid} " not in ln:
            continue
        ts = re.search(r"ts=(\S+)Z", ln).group(1)
        t = datetime.datetime.fromisoformat(ts).timestamp()
        out.append((t, {k: int(v) for k, v in re.findall(r" (\w+)=(-?\d+)", ln)}))
    return out


def test_the_leader_waits_before_the_next_page():
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=ENV, workers=1, https=False) as s:
        m = pgwlib.Money(r, buckets=1)
        users = list(range(920001, 920021))
        rid = m.sure_win_round(s, users, WINNERS, LOSERS, "page-wait")
        settled = m.settled_sure_win(s, rid, WINNERS, timeout=60)
        ps = pages(s.log_text(), rid)
        steps = int(re.search(r" steps=(\d+)", settled).group(1))
        assert len(ps) >= 3, ps
        for _, a in ps:
            if a["catchup"] or a.get("late"):
                assert a["wait_us"] == 0, a  # catching up or late: back to back
            else:
                assert a["wait_us"] >= WAIT_MS * 1000, a  # the floor, raised by the hook
        waited = early = 0
        for (t0, a), (t1, _) in zip(ps, ps[1:]):
            if a["wait_us"] <= 0:
                continue
            # Log times are ms: a page sent WAIT_MS after the last one's reply is logged later.
            if t1 - t0 >= (WAIT_MS - 1) / 1000:
                waited += 1
            else:
                early += 1  # only where the step ended on this page's reply
        assert early <= steps - 1, (early, steps, ps)
        assert waited >= 2, ps
        print(f"    round {rid}: {len(ps)} pages in {steps} steps, {waited} after a wait of "
              f">= {WAIT_MS} ms, {early} at a step's end, "
              f"{sum(bool(a['catchup'] or a.get('late')) for _, a in ps)} catching up or late")


if __name__ == "__main__":
    tpenv.main()
