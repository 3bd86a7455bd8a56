#!/usr/bin/python3
"""Redis instructions per settled bet inside EVALSHA of scripts/lua/settle_page.lua, under callgrind.

Instruction counts do not drift with the machine's load as CPU times do, so two versions of the
script compare within a fraction of a percent. Starts its own redis-server with the settings
bench/run's Redis has (scripts/lib/services.sh: AOF on, hash-max-listpack-entries 128) under
`valgrind --tool=callgrind --toggle-collect=evalShaCommand`, writes a round as bet_batch.lua
leaves it in bucket 0 (WINNERS bets "<bet_id>:<user>:<stake>" of PLAYERS players appended to the
winning band's list, as many to a losing one's, ids interleaved as settle-100k's fill gives
them; with --form hash, `bet_id -> "<user>:<stake>"` in the bands' hashes, as versions before
session 26 left it; the writes are not counted), a plan as bucket_plan.lua writes it for a pot of 1.94x the winning
stake, then settles the bucket with pages of PAGE bets (no time budget, so every run pages
alike) and prints the instructions counted inside EVALSHA divided by the bets credited. Then it
checks the money: every winning bet paid exactly its share once, and the players' balances,
`payout`, `net` and the outbox's credits lines agree with that.

    bench/settle_callgrind.py                         # this tree's script, 100,000 winners
    bench/settle_callgrind.py --form hash             # this script, an older version's bets
    bench/settle_callgrind.py --winners 20000 --keep /tmp/cg.out   # keep the profile

Needs valgrind and python3-redis. About a minute per 20,000 winners on a quiet machine.
"""

import argparse
import os
import sys
import time

from callgrind_redis import CallgrindRedis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NBANDS, WIN_BAND, LOSE_BAND, RID = 3, 1, 0, 7


def keys():
    """settle_page.lua's KEYS, as src/store/scripts.c builds them for bucket 0."""
    p = "tp:{b0}:"
    return ([p + f"plan:{RID}", p + "bal", p + f"paid:{RID}", p + f"payout:{RID}", p + "outbox"]
            + [p + f"bets:{RID}:{b}" for b in range(NBANDS)] + [p + "net"]
            + [p + f"betl:{RID}:{b}" for b in range(NBANDS)])


def user(bet_id, players):
    """The player of bet bet_id: consecutive bets of one band go to consecutive players."""
    return 1 + (bet_id // 2) % players


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--script", default=os.path.join(ROOT, "scripts", "lua", "settle_page.lua"))
    ap.add_argument("--winners", type=int, default=100000)
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--page", type=int, default=250,
                    help="bets per page [250, what settle-100k's pages held in session 7]")
    ap.add_argument("--stake", type=int, default=100)
    ap.add_argument("--form", choices=("list", "hash"), default="list",
                    help="the round's bets as this version writes them (list) or as versions "
                    "before session 26 did (hash; a script of those takes fewer KEYS: measure it "
                    "with its own tree's settle_callgrind.py)")
    ap.add_argument("--keep", help="copy the callgrind output here (callgrind_annotate reads it)")
    ap.add_argument("--redis-arg", action="append", default=[],
                    help="extra redis-server argument, e.g. --redis-arg=--zset-max-listpack-entries=0")
    a = ap.parse_args()
    extra = [x for arg in a.redis_arg for x in arg.split("=", 1)]
    credited = pages = players = 0
    with CallgrindRedis(["--hash-max-listpack-entries", "128"] + extra, keep=a.keep) as cg:
        c = cg.client
        with open(a.script) as f:
            sha = c.script_load(f.read())
        k = keys()
        # The round: ids 1 .. 2 WINNERS alternating losing / winning band, each band's bets
        # round-robin over every player, as settle-100k's fill (loadgen --bands 2 over 200
        # players) leaves it.
        pipe = c.pipeline(transaction=False)
        for i in range(1, 2 * a.winners + 1):
            band = WIN_BAND if i % 2 == 0 else LOSE_BAND
            if a.form == "list":
                pipe.rpush(k[6 + NBANDS + band], f"{i}:{user(i, a.players)}:{a.stake}")
            else:
                pipe.hset(k[5 + band], str(i), f"{user(i, a.players)}:{a.stake}")
            if i % 2000 == 0:
                pipe.execute()
        pipe.execute()
        start = 10**9
        c.hset(k[1], mapping={str(u): start for u in range(1, a.players + 1)})
        w = a.winners * a.stake
        pot = (2 * w * 97) // 100  # both sides' stakes less a 3 % rake
        c.hset(k[0], mapping={"band": WIN_BAND, "pot": pot, "w": w, "refund": 0,
                              "nbands": NBANDS, "pos": 0, "cur": 0, "done": 0, "paid": 0,
                              "finished": 0})
        now = int(time.time() * 1000)
        while True:
            r = c.evalsha(sha, len(k), *k, str(RID), str(a.page), str(now), str(10**12))
            if r[0] != "ok":
                sys.exit(f"settle_page answered {r}")
            pages += 1
            credited += int(r[2])
            players += int(r[7])
            if int(r[1]) == 1:
                break
            if pages > 10 * a.winners:
                sys.exit("settlement does not end")
        # The money: each winning bet paid floor(stake * pot / W) once, and the players'
        # balances, round totals and net winnings moved by the sum of their bets' credits.
        each = a.stake * pot // w
        paid = c.hgetall(k[2])
        bad = [b for b, v in paid.items() if int(b) % 2 != 0 or int(v) != each]
        if credited != a.winners or len(paid) != a.winners or bad:
            sys.exit(f"credited {credited}, paid {len(paid)} bets, {len(bad)} wrong")
        per_user = {}
        for b in paid:
            u = str(user(int(b), a.players))
            per_user[u] = per_user.get(u, 0) + each
        bal, payout = c.hgetall(k[1]), c.hgetall(k[3])
        net = dict(c.zrange(k[5 + NBANDS], 0, -1, withscores=True))
        for u, s in per_user.items():
            if int(bal[u]) != start + s or int(payout[u]) != s or int(net[u]) != s:
                sys.exit(f"player {u}: balance {bal[u]}, payout {payout.get(u)}, "
                         f"net {net.get(u)}; owed {s}")
        # One line "<bet_id>,<user_id>,<amount>,<balance>" per bet, '\n'-separated; a
        # player's balance rises page by page to his final one.
        lines, last = 0, {}
        for _, e in c.xrange(k[4]):
            for line in e["credits"].split("\n"):
                b, u, amt, bl = line.split(",")
                if (u != str(user(int(b), a.players)) or int(amt) != each
                        or int(bl) < last.get(u, start + each)):
                    sys.exit(f"outbox line {line!r}")
                last[u] = int(bl)
                lines += 1
        if (lines != a.winners or int(c.hget(k[0], "paid")) != each * a.winners
                or any(int(bal[u]) != v for u, v in last.items())):
            sys.exit(f"outbox credits lines {lines}, plan paid {c.hget(k[0], 'paid')}")
    print(f"{cg.instructions / max(1, credited):.0f} instructions per settled bet inside "
          f"EVALSHA ({credited} winning bets of {a.players} players, {pages} pages of "
          f"{a.page}, {players / max(1, pages):.0f} players a page, "
          f"{os.path.basename(a.script)}, bets in a {a.form}); money checked")


if __name__ == "__main__":
    main()
