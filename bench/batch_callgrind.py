#!/usr/bin/python3
"""Redis instructions per bet inside EVALSHA of scripts/lua/bet_batch.lua, under callgrind.

Instruction counts do not drift with the machine's load as CPU times do, so two versions of the
script (or two Redis settings) compare within a fraction of a percent. Starts its own
redis-server (AOF on, as scripts/up) under `valgrind --tool=callgrind
--toggle-collect=evalShaCommand`, gives 200 players a balance, opens round 1 in bucket 0 of 1,
sends BATCHES calls of BETS bets each (PLAYERS distinct players per call, fresh keys, bands
round-robin) and prints the instructions counted inside EVALSHA divided by the bets, then the
bytes those calls added to the AOF per bet, by command (what Redis propagates and writes,
outside the instruction count). The day's
filter is built beforehand, as the leader builds it (src/game/leader_idemfilter.c), with plain
SETRANGEs that callgrind does not count; bets only read it. --archive then runs archival's
idempotency steps over the round's keys as src/game/leader_archive.c does (256 a step, one
idem_unindex.lua each: the hot index entries leave, the keys enter the filter; the keys are
the outbox's bets, as Postgres would list them, and an older script's records), inside the same
count: the difference to a run without it is archival's share per bet.

    bench/batch_callgrind.py                              # this tree's script, WebSocket-like
    bench/batch_callgrind.py --archive                    # and archival's steps
    bench/batch_callgrind.py --players 74                 # every bet another player's (HTTP)
    bench/batch_callgrind.py --script old.lua --redis-arg=--hash-max-listpack-entries=512
    bench/batch_callgrind.py --drop leaderboard           # what the script's `net` writes cost
    bench/batch_callgrind.py --young 25000                # and the promotion after a fork child

Needs valgrind and python3-redis. About a minute per 100 calls of 74 bets.
"""

import argparse
import os
import sys
import time

from callgrind_redis import CallgrindRedis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "lib"))
import idemfilter  # noqa: E402  (the filter positions src/store/keys.c computes)
import tpenv  # noqa: E402  (SlowForkChild: a real fork child for --young)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NBANDS, TTL_S, USERS = 5, 86400, 200
SHARD_BYTES = 3072  # 1024 shards of three days of 1,024 bytes, a few bits set per call


def call_args(n, players, b, now, seq, users=USERS, offsets=True, net="netlog"):
    """KEYS and ARGV of call number b, as src/store/scripts.c builds them (offsets: each
    position with its bit offset in a shard of SHARD_BYTES, ARGV[10] "0:<SHARD_BYTES>", as the
    server sends since session 22; else ARGV[10] "0", as before; net: KEYS[7]'s name, the
    stakes log since session 31, "net" for a script of before)."""
    p = "tp:{b0}:"
    us = [1 + (b * players + j) % users for j in range(players)]
    bets = [(us[j % players], (seq + j) % NBANDS, 100, f"cg-{seq + j}") for j in range(n)]
    bands, users = [], []
    for u, band, _, _ in bets:
        if band not in bands:
            bands.append(band)
        if u not in users:
            users.append(u)
    w = now // (TTL_S * 1000)
    shard_keys, per = idemfilter.batch_tail(p, w, [(u, key) for u, _, _, key in bets])
    keys = [p + "bal", p + "idem:1", p + "round:1:state", p + "pool:1", p + "outbox", p + "seq",
            p + net, p + "excl", p + "paused", p + "disabled", p + "idemhot"]
    keys += idemfilter.window_keys(p, w) + [p + "idemyoung"]
    keys += [p + f"betl:1:{x}" for x in bands] + [p + f"ubets:{u}" for u in users] + shard_keys
    argv = [1, now, NBANDS, 1, 10**9, TTL_S, 0, 1, n, f"0:{SHARD_BYTES}" if offsets else 0]
    if offsets:
        per = [idemfilter.pos_argv(u, key, SHARD_BYTES) for u, _, _, key in bets]
    for j, (u, band, stake, key) in enumerate(bets):
        argv += [u, band, stake, key] + per[j]
    return keys, argv


YOUNG_CALL = 500  # bets a call while --young's entries are written (not counted)


def seed_young(r, c, sha, n, users, now, offsets):
    """n entries in the hot index's young part, written by the script itself as a fork child's
    life leaves them (the entries' layout is bet_batch.lua's alone): calls of fresh keys
    (cg-<10^9 + i>, round 1) while a real child runs (tpenv.SlowForkChild: a BGSAVE slowed to
    1 s a key, which outlives the calls), which is then stopped (SIGUSR1: Redis's way to end
    its child, no error) before the counted calls. callgrind's counters are zeroed after them:
    only the calls after count."""
    try:
        child = tpenv.SlowForkChild(c, delay_s=1).start()
    except AssertionError as e:
        sys.exit(f"--young: {e}")
    for b, seq in enumerate(range(0, n, YOUNG_CALL)):
        k = min(YOUNG_CALL, n - seq)
        keys, argv = call_args(k, min(50, users), b, now, 10**9 + seq, users, offsets)
        if any(not isinstance(x, int) for x in c.evalsha(sha, len(keys), *keys, *argv)):
            sys.exit("--young: a bet was refused while the young part was written")
    if not child.running():
        sys.exit("--young: the child ended before the young part was written")
    try:
        child.end(stop=True)
    except AssertionError as e:
        sys.exit(f"--young: {e}")
    if c.hlen("tp:{b0}:idemyoung") != n:
        sys.exit(f"--young: {c.hlen('tp:{b0}:idemyoung')} young entries written, not {n}")
    r.zero()


# What --drop removes from the script's text: the writes of one player view, an upper bound of
# what any other layout of that view could save a bet (bench/README.md "Session 23"). Each pair
# marks [start, end): the block from start up to end, which stays; `keep` replaces the block.
# A name lists such triples: the first whose markers the script has is used.
DROPS = {
    # tp:{bN}:net (GET /api/v1/leaderboard): the ZINCRBY, or ZMSCORE + ZADD, of the call; since
    # session 31 the RPUSH of its stakes log (the entry's strings are still made).
    "leaderboard": [("if nusers == 1 then\n", "local nw = 0\n", ""),
                    ("call('RPUSH', KEYS[7], ", "local poolw = {", "")],
    # tp:{bN}:ubets:<user> (GET /api/v1/me/bets): the LPUSH (and LTRIM) of each player.
    "history": [("        local k = 16 + nb + u\n", "call('HSET', KEYS[1], unpack(balw, 1, nw))",
                 "    end\nend\n")],
}


def drop(text, what):
    """The script's text without the writes `what` names; exits when the markers moved."""
    for name in what:
        for start, end, keep in DROPS[name]:
            if text.count(start) == 1 and text.count(end) == 1 and \
                    text.index(start) < text.index(end):
                break
        else:
            sys.exit(f"--drop {name}: the script's text has changed; update DROPS")
        text = text[:text.index(start)] + keep + text[text.index(end):]
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--script", default=os.path.join(ROOT, "scripts", "lua", "bet_batch.lua"))
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--bets", type=int, default=74, help="bets per call [74, as the ceilings]")
    ap.add_argument("--players", type=int, default=6,
                    help="distinct players per call [6, as ws-ceiling's sockets]")
    ap.add_argument("--redis-arg", action="append", default=[],
                    help="extra redis-server argument, e.g. "
                         "--redis-arg=--zset-max-listpack-entries=16 "
                         "(hash-max-listpack-entries is 128 unless given)")
    ap.add_argument("--users", type=int, default=USERS,
                    help=f"players of the bucket, each with a balance [{USERS}]")
    ap.add_argument("--net-filled", action="store_true",
                    help="every player already in the leaderboard `net` (as in a game running "
                         "for a while), so its size is --users throughout")
    ap.add_argument("--archive", action="store_true",
                    help="then archival's idem_unindex.lua steps over the round's keys")
    ap.add_argument("--unindex", default=os.path.join(ROOT, "scripts", "lua", "idem_unindex.lua"),
                    help="archival's script with --archive [this tree's]")
    ap.add_argument("--keep", metavar="FILE",
                    help="copy callgrind's output there, for callgrind_annotate --inclusive=yes")
    ap.add_argument("--windows", type=int, choices=(1, 2), default=1,
                    help="no effect since the three-day shards (every day is in each shard: "
                         "one read a key whatever the days; a filter is built before the "
                         "calls, as the leader's); kept so that an older tree's command "
                         "line, where 2 built the day before's window too, runs here")
    ap.add_argument("--no-offsets", action="store_true",
                    help="send no filter offsets (ARGV[10] \"0\", 10-byte positions), as "
                         "servers before session 22 did: for a script of before then")
    ap.add_argument("--toggle", action="append", metavar="FUNC",
                    help="count inside FUNC instead of evalShaCommand (repeatable), e.g. "
                         "--toggle evalShaCommand --toggle propagatePendingCommands to add the "
                         "propagation of the script's writes to the AOF")
    ap.add_argument("--young", type=int, default=0, metavar="N",
                    help="N entries in the hot index's young part before the calls (not "
                         "counted), as a fork child's exit leaves it: the calls then promote "
                         "them, so the difference to a run without is the drain's cost [0]")
    ap.add_argument("--fold", type=int, default=32, metavar="N",
                    help="with a script that writes the leaderboard's stakes log (KEYS[7] "
                         "tp:{bN}:netlog, since session 31): scripts/lua/net_fold.lua after "
                         "every N calls and after the last, counted, as a worker folds after "
                         "every NETLOG_FOLD_CALLS (src/money/bet_batch.c) of its calls to a "
                         "bucket [32]")
    ap.add_argument("--drop", action="append", choices=sorted(DROPS), default=[],
                    help="run the script without one player view's writes (repeatable): what "
                         "they cost, an upper bound of what another layout could save")
    a = ap.parse_args()
    if a.young < 0:
        ap.error("--young: a count of entries, 0 or more")
    if a.young and a.archive:
        ap.error("--young: not with --archive (archival would take the young part's entries, "
                 "bets of the same round, with the calls' own: its count would not be theirs)")
    # bench/run's and scripts/up's hash setting (scripts/lib/services.sh), which every figure in
    # bench/README.md ("listpack 128") was taken with; a --redis-arg given later overrides it.
    extra = ["--hash-max-listpack-entries", "128"]
    extra += [x for arg in a.redis_arg for x in arg.split("=", 1)]
    with CallgrindRedis(extra, keep=a.keep, toggles=a.toggle or ["evalShaCommand"]) as r:
        c = r.client
        with open(a.script) as f:
            text = f.read()
            sha = c.script_load(drop(text, a.drop))
        # A script of before session 31 writes `net` itself; one since, the stakes log.
        net = "netlog" if "tp:{bN}:netlog" in text else "net"
        if net == "netlog":
            with open(os.path.join(ROOT, "scripts", "lua", "net_fold.lua")) as f:
                fold_sha = c.script_load(f.read())
        c.hset("tp:{b0}:bal", mapping={str(u): 10**12 for u in range(1, a.users + 1)})
        if a.net_filled:
            c.zadd("tp:{b0}:net", {str(u): -100 * u for u in range(1, a.users + 1)})
        # The round's copy carries its own rules, as bucket_state.lua writes it.
        c.hset("tp:{b0}:round:1:state", mapping={"state": "open", "locks_at": 10**13,
                                                 "nbands": NBANDS, "min_stake": 1,
                                                 "max_stake": 10**9})
        now = int(time.time() * 1000)
        w = now // (TTL_S * 1000)
        idemfilter.build(c, "tp:{b0}:", w, SHARD_BYTES)
        if a.young:
            seed_young(r, c, sha, a.young, a.users, now, not a.no_offsets)
        r.aof_mark()
        pipe = c.pipeline(transaction=False)
        for b in range(a.batches):
            keys, argv = call_args(a.bets, a.players, b, now, b * a.bets, a.users,
                                   not a.no_offsets, net)
            pipe.evalsha(sha, len(keys), *keys, *argv)
            if net == "netlog" and (b % a.fold == a.fold - 1 or b == a.batches - 1):
                pipe.evalsha(fold_sha, 2, "tp:{b0}:net", "tp:{b0}:netlog", 0)
            if b % 10 == 9 or b == a.batches - 1:
                for res in pipe.execute():
                    if isinstance(res, int):
                        continue  # net_fold.lua's count
                    if any(not isinstance(x, int) for x in res):
                        sys.exit(f"a bet was refused: {res[:3]}")
        if a.archive:
            with open(a.unindex) as f:
                usha = c.script_load(f.read())
            n = idemfilter.archive_index(c, usha, "tp:{b0}:", 0, 1, w, count=256)
            if n != a.batches * a.bets:
                sys.exit(f"archival removed {n} hot entries, not {a.batches * a.bets}")
        r.young_left = c.hlen("tp:{b0}:idemyoung")
    inside = "+".join(a.toggle) if a.toggle else "EVALSHA"
    print(f"{r.instructions / (a.batches * a.bets):.0f} instructions per bet inside {inside} "
          f"({a.batches} calls of {a.bets} bets, {a.players} players per call, "
          f"{os.path.basename(a.script)}"
          f"{''.join(' without ' + x for x in a.drop)}"
          f"{', then archival' if a.archive else ''}"
          f"{f', {a.young} young entries before' if a.young else ''})")
    if a.young:
        print(f"young part after the calls: {r.young_left} entries")
    n = a.batches * a.bets
    aof = sorted(r.aof.items(), key=lambda kv: -kv[1][1])
    print(f"AOF: {sum(b for _, b in r.aof.values()) / n:.1f} B per bet: " +
          ", ".join(f"{name} {b / n:.1f} ({cnt / a.batches:g} per call)"
                    for name, (cnt, b) in aof))


if __name__ == "__main__":
    main()
