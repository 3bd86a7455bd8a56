"""A round whose bets are half in an older version's hashes, half in this version's lists, is
settled by this version with every winner paid exactly once, across page boundaries and a kill -9
of the server between two pages (scripts/lua/README.md, "Upgrading": the bets of a band were a
HASH `bets:<round>:<band>` before session 26, a LIST `betl:<round>:<band>` since).

Real Redis and tickpool, one worker, no Postgres (the bets go straight into Redis through the
real bet_batch.lua, as test_settle_one_page.py's). After the bets, every other bet of each band
is moved, in one Lua call (nothing else writes the round's bets meanwhile), from its list into
its band's hash in the older layout (`bet_id` -> "<user_id>:<stake>"): the round an older server
left in flight. tickpool reaches Redis through test_settle_one_page.py's proxy, which delays each
reply, so pages are tens of ms apart and the test can kill the server while some winners are paid
and others not. Band edges of +-100 % make band 1 win for sure.
"""

import signal

import pgwlib
import tpclient
import tpenv
from test_settle_one_page import ENV, PageCountingProxy

DELAY_S = 0.03
WINNERS, LOSERS = 6000, 300

def test_mixed_round_settles_once_across_pages_and_a_kill():
    with tpenv.Redis() as r:
        c = r.client()
        sha = c.script_load(open(tpenv.SRC + "/scripts/lua/settle_page.lua").read())
        proxy = PageCountingProxy(r, sha, DELAY_S)
        try:
            with tpenv.Server(redis=proxy, env=ENV, workers=1, https=False) as s:
                m = pgwlib.Money(r, buckets=1)
                users = list(range(930001, 930201))
                rid = m.sure_win_round(s, users, WINNERS, LOSERS, "mx")
                moved = tpclient.bets_half_to_hash(c, rid, 0, 3)
                assert moved == (WINNERS + LOSERS) // 2, moved
                assert c.hlen(f"tp:{{b0}}:bets:{rid}:1") == WINNERS // 2
                assert c.llen(f"tp:{{b0}}:betl:{rid}:1") == WINNERS // 2
                bets = tpclient.round_bets(c, rid, 1, 3)
                assert len(bets) == WINNERS + LOSERS
                # Kill -9 between two pages of the list's: the hash's winners paid, some of the
                # list's, not all.
                paid, plan = f"tp:{{b0}}:paid:{rid}", f"tp:{{b0}}:plan:{rid}"

                def in_list():
                    cur = c.hget(plan, "cur") or ""
                    return cur.startswith("L") and cur != "L0" and c.hlen(paid) < WINNERS
                tpenv.wait_until(in_list, timeout=60, interval=0.005,
                                 what="a settlement page in the list paid")
                s.stop(sig=signal.SIGKILL)
                before = c.hlen(paid)
                cur = c.hget(f"tp:{{b0}}:plan:{rid}", "cur")
                assert WINNERS // 2 < before < WINNERS and cur.startswith("L"), (before, cur)
                s.start()
                line = m.settled_sure_win(s, rid, WINNERS, timeout=90)
                print(f"    round {rid}: killed with {before} of {WINNERS} paid (cursor {cur}), "
                      f"{proxy.pages} settle_page calls; {line.split('msg=')[1]}")
                assert proxy.pages >= 4, proxy.pages
                # Each winner in exactly one outbox credits line, the balances its credits.
                credited = {}
                for _, f in c.xrange("tp:{b0}:outbox"):
                    if f["type"] == "credits":
                        for ln in f["credits"].split("\n"):
                            bid, user, amount, _ = ln.split(",")
                            assert int(bid) not in credited, f"bet {bid} credited twice"
                            credited[int(bid)] = (int(user), int(amount))
                want = tpclient.expected_credits(bets, tpclient.round_hash(c, rid))
                assert {b: a for b, (_, a) in credited.items()} == want
                assert all(bets[b][0] == u for b, (u, _) in credited.items())
                staked, won = {}, {}
                for b, (u, _, st) in bets.items():
                    staked[u] = staked.get(u, 0) + st
                for b, (u, a) in credited.items():
                    won[u] = won.get(u, 0) + a
                bal = c.hgetall("tp:{b0}:bal")
                for u in users:
                    assert int(bal[str(u)]) == 10**12 - staked.get(u, 0) + won.get(u, 0), u
                # tickpool verify reads both forms: every winner paid once as computed (its
                # seed check waits for the reveal, a later round's: not this test's).
                v = s.run_cli("verify", str(rid))
                for check in ("bets and payouts read", "winning bets sum to winning_stake",
                              f"{WINNERS} winning bets, each paid exactly once as computed",
                              "receipt matches and conserves the total"):
                    assert f"ok   {check}\n" in v.stdout, v.stdout + v.stderr
        finally:
            proxy.close()


if __name__ == "__main__":
    tpenv.main()
