#!/usr/bin/python3
"""Redis main thread's page faults and the bets' latency around an AOF rewrite (or idemhot's
table doubling), driving the real scripts/lua/bet_batch.lua at a fixed rate.

What it does, per run:
  1. starts a private Redis through scripts/lib/services.sh's start_redis itself (tpenv's
     EmbeddedRedis, tests/lib/tpenv.py): the flags scripts/up and bench/run run it with, and
     bench/run's `--save ""`; --thp as REDIS_THP=yes there (MALLOC_CONF=thp:always and
     --disable-thp no: Redis's heap on huge pages);
  2. preloads --preload bets through the script itself (calls of --batch bets, one round, the
     players of --players, arguments and keys built as bench/batch_callgrind.py builds them),
     so the hot key index `idemhot` holds that many entries, written the way the script writes
     them, beside the bets lists, balances, leaderboard and players' histories;
  3. drives the script at --rate bets/s in calls of --batch bets from one pipelined client (open
     loop: each call is sent when it is due, whatever is still in flight), trimming the outbox
     to 50 entries every 10 calls as the writer keeps it (XTRIM MAXLEN 50) and reading the young
     part's size (HLEN idemyoung) with it, and, for a script since session 31, folding the
     leaderboard's stakes log every 32 calls as a worker does (net_fold.lua; the preload too,
     every 20 calls);
  4. in `rewrite` mode sends BGREWRITEAOF at --rewrite-at s; in `doubling` mode none (with
     1,000,000 preloaded the 1,048,577th entry makes idemhot's table grow from 2^20 to 2^21
     buckets about 2 s in at 25,000/s);
  5. every 10 ms reads the main thread's minor faults (/proc/PID/task/PID/stat, minflt) and CPU
     (/proc/PID/task/PID/schedstat) and whether Redis has a child (/proc/PID/task/PID/children:
     a child stays listed until Redis reaps it, which is when the script sees it gone); every
     call's latency is its reply's arrival less the time it was due.

Reported (`rewrite` mode): the fork's µs (INFO latest_fork_usec), the child's life (from the
BGREWRITEAOF reply to the first sample without a child), the faults in the first 12,500 bets
after the fork (from that reply until the reply of the call that completes 12,500 bets sent
after it) and in the first 0.5 s, the p99 of the bets due in the fork's first second, the faults
in the 12,500 bets answered after the child's exit (from the last sample that saw it) and the
p99 of the bets due in the exit's first second, the p99 before the fork (bets due from 0.5 s
on) and of the whole run, the steady faults a second before the fork, the young part's size at
the exit and how long it took to empty. `doubling` mode: the three 100 ms rows with the most
faults (faults / main-thread CPU ms / slowest call due in the row) and the run's faults.
A p99 is over bets (each call's latency counted once per bet), with benchlib.pct.

    bench/rewrite_faults.py                                   # rewrite mode, this tree's script
    bench/rewrite_faults.py --script /tmp/main.lua --label A1 --jsonl runs.jsonl
    bench/rewrite_faults.py --mode doubling --thp
    bench/rewrite_faults.py --summarize runs.jsonl            # a markdown table of the runs

Timed: run it alone on the machine (no other bench, build or test; bench/README.md). A rewrite
run with the default 700,000 preloaded takes about a minute, most of it the preload. Needs
python3-redis.
"""

import argparse
import collections
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from batch_callgrind import SHARD_BYTES, call_args  # noqa: E402
import idemfilter  # noqa: E402  (tests/lib, on sys.path through batch_callgrind)
import tpenv  # noqa: E402  (tests/lib: EmbeddedRedis, Redis as scripts/lib/services.sh starts it)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = "tp:{b0}:"
NBANDS = 5
WINDOW_BETS = 12500  # "the first 12,500 bets" after the fork and after the exit
SAMPLE_S = 0.010
WARMUP_S = 0.5  # bets due before this are left out of "p99 before the fork"
TRIM_EVERY = 10  # calls between two XTRIM MAXLEN 50 (and HLEN idemyoung)
# calls between two net_fold.lua of the leaderboard's stakes log, as a worker folds it after every
# NETLOG_FOLD_CALLS (src/money/bet_batch.c) of its calls to a bucket; every preload round trip
FOLD_EVERY = 32

def resp(args):
    """One command in RESP (bulk strings), as bytes."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = b"%d" % a
        elif isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def parse_reply(buf, i):
    """(end, value) of the RESP reply at buf[i:], or None when incomplete. value: for an array,
    the number of its elements that are not integers (a bet refused) or the error text; for an
    integer its value; else the line's text."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        return None
    t, line = buf[i:i + 1], buf[i + 1:j]
    if t == b":":
        return j + 2, int(line)
    if t in (b"+", b"-"):
        return j + 2, (t + line).decode()
    if t == b"$":
        n = int(line)
        end = j + 2 + max(n, 0) + (2 if n >= 0 else 0)
        return (end, bytes(buf[j + 2:j + 2 + n]).decode()) if end <= len(buf) else None
    if t == b"*":
        k, bad = j + 2, 0
        for _ in range(int(line)):
            r = parse_reply(buf, k)
            if r is None:
                return None
            k, v = r
            if isinstance(bad, int) and not isinstance(v, int):
                bad = v if isinstance(v, str) and v.startswith("-") else bad + 1
        return k, bad
    raise RuntimeError(f"unexpected reply byte {t!r}")


def proc_sample(pid):
    """(minflt, cpu ns, has a child) of Redis's main thread."""
    base = f"/proc/{pid}/task/{pid}/"
    with open(base + "stat") as f:
        st = f.read()
    minflt = int(st[st.rindex(")") + 2:].split()[7])
    with open(base + "schedstat") as f:
        cpu = int(f.read().split()[0])
    with open(base + "children") as f:
        child = bool(f.read().strip())
    return minflt, cpu, child


def interp(samples, t, col):
    """samples[col] at time t, linear between the 10 ms samples (t, minflt, cpu, child)."""
    if t <= samples[0][0]:
        return samples[0][col]
    for a, b in zip(samples, samples[1:]):
        if b[0] >= t:
            return a[col] + (b[col] - a[col]) * (t - a[0]) / ((b[0] - a[0]) or 1)
    return samples[-1][col]


def setup(c, script, players):
    """The script loaded, every player a balance, round 1 open, today's filter window built
    (as bench/batch_callgrind.py sets them up), and for a script that writes the leaderboard's
    stakes log (since session 31) its fold (FOLD; a script of before writes `net` itself, NET).
    Returns (sha, now ms)."""
    global FOLD, NET
    with open(script) as f:
        text = f.read()
    sha = c.script_load(text)
    NET = "netlog" if "tp:{bN}:netlog" in text else "net"
    if NET == "netlog":
        with open(os.path.join(ROOT, "scripts", "lua", "net_fold.lua")) as f:
            FOLD = resp(["EVALSHA", c.script_load(f.read()), 2, P + "net", P + "netlog", 0])
    c.hset(P + "bal", mapping={str(u): 10**15 for u in range(1, players + 1)})
    c.hset(P + "round:1:state", mapping={"state": "open", "locks_at": 10**14, "nbands": NBANDS,
                                         "min_stake": 1, "max_stake": 10**9})
    now = int(time.time() * 1000)
    idemfilter.build(c, P, now // (86400 * 1000), SHARD_BYTES)
    return sha, now


def call_bytes(sha, n, players, b, now, seq):
    keys, argv = call_args(n, players, b, now, seq, players, net=NET)
    return resp(["EVALSHA", sha, len(keys)] + keys + argv)


TRIM = resp(["XTRIM", P + "outbox", "MAXLEN", "50"]) + resp(["HLEN", P + "idemyoung"])
FOLD, NET = b"", "netlog"  # setup()'s: net_fold.lua's EVALSHA (none for an older script), KEYS[7]


def preload(c, sha, now, a):
    """--preload bets through the script, in calls of --batch, 20 calls a round trip."""
    sock = c.connection_pool.get_connection("preload")
    calls = (a.preload + a.batch - 1) // a.batch
    b = 0
    while b < calls:
        chunk = []
        for _ in range(min(20, calls - b)):
            n = min(a.batch, a.preload - b * a.batch)
            chunk.append(call_bytes(sha, n, a.players, b, now, b * a.batch))
            b += 1
        sock.send_packed_command([b"".join(chunk) + TRIM + FOLD])
        for _ in range(len(chunk)):
            r = sock.read_response()
            if any(not isinstance(x, int) for x in r):
                sys.exit(f"a preload bet was refused: {r[:4]}")
        for _ in range(3 if FOLD else 2):
            sock.read_response()
    c.connection_pool.release(sock)
    if c.hlen(P + "idemyoung"):
        sys.exit("the young part is not empty after the preload")


def drive(r, sha, now, a):
    """The timed run: returns (records, samples, t_rewrite_reply). records: (kind, due s,
    arrival s, bets, value) per reply; samples: (t, minflt, cpu ns, child) every 10 ms."""
    period = a.batch / a.rate
    ncalls = int(a.duration / period)
    first = (a.preload + a.batch - 1) // a.batch
    sched = []
    for k in range(ncalls):
        b = first + k
        sched.append((k * period, "call", call_bytes(sha, a.batch, a.players, b, now,
                                                      a.preload + k * a.batch), a.batch))
        if k % TRIM_EVERY == TRIM_EVERY - 1:
            sched.append((k * period, "trim", TRIM, 0))
        if FOLD and k % FOLD_EVERY == FOLD_EVERY - 1:
            sched.append((k * period, "fold", FOLD, 0))
    if a.mode == "rewrite":
        at = next(i for i, x in enumerate(sched) if x[0] >= a.rewrite_at)
        sched.insert(at, (a.rewrite_at, "rewrite", resp(["BGREWRITEAOF"]), 0))
    sock = socket.create_connection(("127.0.0.1", r.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    pid = r.pid
    pending, records, samples = collections.deque(), [], []
    out, inbuf, pos, nxt = bytearray(), bytearray(), 0, 0
    t0 = time.monotonic()
    next_sample, child_seen, end_by = 0.0, False, None
    while True:
        now_s = time.monotonic() - t0
        while nxt < len(sched) and sched[nxt][0] <= now_s:
            due, kind, data, nb = sched[nxt]
            out += data
            if kind == "trim":
                pending.append(("trim", due, 0))
                pending.append(("hlen", due, 0))
            else:
                pending.append((kind, due, nb))
            nxt += 1
        if now_s >= next_sample:
            m, cpu, child = proc_sample(pid)
            samples.append((now_s, m, cpu, child))
            child_seen = child_seen or child
            next_sample += SAMPLE_S
            if next_sample < now_s:
                next_sample = now_s + SAMPLE_S
        if nxt == len(sched) and not pending and not (samples and samples[-1][3]):
            end_by = end_by or now_s + 0.2  # a few samples after the last reply
            if now_s >= end_by:
                break
        if now_s > a.duration + 60:
            sys.exit("replies or the child did not end within 60 s of the run")
        wait = min(next_sample, sched[nxt][0] if nxt < len(sched) else 1e9) - now_s
        rd, wr, _ = select.select([sock], [sock] if out else [], [], max(wait, 0))
        if wr:
            try:
                sent = sock.send(out)
                del out[:sent]
            except BlockingIOError:
                pass
        if rd:
            data = sock.recv(1 << 20)
            if not data:
                sys.exit("redis-server closed the connection")
            arrived = time.monotonic() - t0
            inbuf += data
            while True:
                res = parse_reply(inbuf, pos)
                if res is None:
                    break
                pos, value = res
                kind, due, nb = pending.popleft()
                records.append((kind, due, arrived, nb, value))
                if kind == "call" and value != 0:
                    sys.exit(f"a call was refused or failed: {value}")
            if pos > 1 << 20:
                del inbuf[:pos]
                pos = 0
    sock.close()
    if a.mode == "rewrite" and not child_seen:
        sys.exit("no rewrite child was seen")
    if a.mode == "doubling" and child_seen:
        sys.exit("Redis forked during a doubling run (an automatic AOF rewrite?): not usable")
    return records, samples


def analyse(records, samples, a, info):
    calls = [(due, arr - due, nb, arr) for kind, due, arr, nb, _ in records if kind == "call"]

    def p99(lo, hi):
        xs = []
        for due, lat, nb, _ in calls:
            if lo <= due < hi:
                xs += [lat * 1000] * nb
        return round(benchlib.pct(xs, 99), 1)

    def faults(t1, t2):
        return round(interp(samples, t2, 1) - interp(samples, t1, 1))

    def after(t):
        """Arrival of the reply completing WINDOW_BETS bets answered after t (or the last)."""
        got = 0
        for _, _, nb, arr in calls:
            if arr > t:
                got += nb
                if got >= WINDOW_BETS:
                    return arr
        return calls[-1][3]

    end = samples[-1][0]
    res = {"label": a.label, "mode": a.mode, "script": a.script, "rate": a.rate,
           "batch": a.batch, "preload": a.preload, "thp": a.thp,
           "p99_run": p99(0, 1e9), "max_ms": round(max(x[1] for x in calls) * 1000, 1),
           "faults_run": samples[-1][1] - samples[0][1], "calls": len(calls)}
    if a.mode == "rewrite":
        t_fork = next(arr for kind, _, arr, _, _ in records if kind == "rewrite")
        # The child is seen from a sample at most 50 ms before the reply (the reply is written
        # after the calls Redis read with the command); the last sample that sees it is the exit.
        i_c = next(i for i, s in enumerate(samples) if s[0] > t_fork - 0.05 and s[3])
        i_e = next(i for i in range(i_c, len(samples)) if not samples[i][3])
        t_exit = samples[i_e - 1][0]
        # The calls sent after BGREWRITEAOF are the ones Redis ran after the fork.
        got, t_w = 0, None
        for kind, due, arr, nb, _ in records:
            if kind == "call" and due >= a.rewrite_at:
                got += nb
                if got >= WINDOW_BETS:
                    t_w = arr
                    break
        hl = [(arr, v) for kind, _, arr, _, v in records if kind == "hlen"]
        young_exit = max([v for t, v in hl if t_fork <= t <= t_exit + 0.05] or [0])
        empty = next((t for t, v in hl if t > t_exit and v == 0), None)
        res.update({
            "fork_us": info["latest_fork_usec"], "child_s": round(t_exit - t_fork, 2),
            "faults_fork_12500": faults(t_fork, t_w or end),
            "faults_fork_05s": faults(t_fork, t_fork + 0.5),
            "p99_fork_1s": p99(t_fork, t_fork + 1),
            "faults_exit_12500": faults(t_exit, after(t_exit)),
            "p99_exit_1s": p99(t_exit, t_exit + 1),
            "p99_before": p99(WARMUP_S, t_fork),
            "faults_s_before": round(faults(WARMUP_S, t_fork) / (t_fork - WARMUP_S)),
            "young_at_exit": young_exit,
            "young_empty_s": round(empty - t_exit, 2) if empty is not None else None,
            "t_fork": round(t_fork, 3), "t_exit": round(t_exit, 3),
            "exit_1s_covered": t_exit + 1 <= a.duration})
    rows = []
    for k in range(int(end / 0.1)):
        lo, hi = k * 0.1, (k + 1) * 0.1
        slow = max([lat for due, lat, _, _ in calls if lo <= due < hi] or [0])
        rows.append((round(lo, 1), faults(lo, hi),
                     round((interp(samples, hi, 2) - interp(samples, lo, 2)) / 1e6, 1),
                     round(slow * 1000, 1)))
    res["worst_rows"] = sorted(rows, key=lambda x: -x[1])[:3]
    return res


def show(res):
    if res["mode"] == "rewrite":
        print(f"{res['label']}: fork {res['fork_us']} µs, child {res['child_s']} s; faults "
              f"first 12,500 bets after the fork {res['faults_fork_12500']} (first 0.5 s "
              f"{res['faults_fork_05s']}), p99 fork's 1st s {res['p99_fork_1s']} ms; faults "
              f"12,500 bets after the exit {res['faults_exit_12500']}, p99 exit's 1st s "
              f"{res['p99_exit_1s']} ms; p99 before the fork {res['p99_before']} ms, whole run "
              f"{res['p99_run']} ms; steady {res['faults_s_before']} faults/s; young part "
              f"{res['young_at_exit']} at the exit, empty {res['young_empty_s']} s after it")
        if not res["exit_1s_covered"]:
            print("  (the exit's first second runs past --duration: raise it)")
    else:
        print(f"{res['label']}: worst 100 ms rows (t s: faults / CPU ms / slowest call ms): "
              + ", ".join(f"{t}: {f} / {c} / {s}" for t, f, c, s in res["worst_rows"])
              + f"; faults in the run {res['faults_run']}, p99 {res['p99_run']} ms")


def summarize(path):
    rs = [json.loads(line) for line in open(path) if line.strip()]
    rw = [r for r in rs if r["mode"] == "rewrite"]
    if rw:
        print("| run | fork µs | child s | faults, first 12,500 bets after the fork | faults "
              "first 0.5 s | p99 fork's 1st s (ms) | faults, 12,500 bets after the exit | p99 "
              "exit's 1st s (ms) | p99 before the fork | p99 whole run | young at the exit | "
              "young empty after (s) |")
        print("|" + "---|" * 12)
        for r in rw:
            print(f"| {r['label']} | {r['fork_us']} | {r['child_s']} | {r['faults_fork_12500']}"
                  f" | {r['faults_fork_05s']} | {r['p99_fork_1s']} | {r['faults_exit_12500']} | "
                  f"{r['p99_exit_1s']} | {r['p99_before']} | {r['p99_run']} | "
                  f"{r['young_at_exit']} | {r['young_empty_s']} |")
    db = [r for r in rs if r["mode"] == "doubling"]
    if db:
        print("\n| run | worst rows (t s: faults / main-thread CPU ms / slowest call ms) | "
              "faults in the run | p99 ms |")
        print("|---|---|---|---|")
        for r in db:
            rows = ", ".join(f"{t}: {f} / {c} / {s}" for t, f, c, s in r["worst_rows"])
            print(f"| {r['label']} | {rows} | {r['faults_run']} | {r['p99_run']} |")


def positive(kind):
    def check(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}")
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {s!r}")
        return v
    return check


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("rewrite", "doubling"), default="rewrite",
                    help="rewrite: BGREWRITEAOF at --rewrite-at; doubling: no fork, 1,000,000 "
                         "preloaded unless --preload says otherwise [rewrite]")
    ap.add_argument("--script", default=os.path.join(ROOT, "scripts", "lua", "bet_batch.lua"),
                    help="the bet script [this tree's scripts/lua/bet_batch.lua]")
    ap.add_argument("--preload", type=positive(int),
                    help="bets in Redis before the timed run [700000; doubling: 1000000]")
    ap.add_argument("--rate", type=positive(float), default=25000.0, help="bets/s [25000]")
    ap.add_argument("--batch", type=positive(int), default=128,
                    help="bets a call [128, TP_SCRIPT_BATCH_MAX]")
    ap.add_argument("--players", type=positive(int), default=32,
                    help="distinct players, every one in every call [32, ws-bets' sockets]")
    ap.add_argument("--duration", type=positive(float), default=8.0,
                    help="seconds of bets [8]")
    ap.add_argument("--rewrite-at", type=positive(float), default=2.0,
                    help="when BGREWRITEAOF is sent, s into the run [2]")
    ap.add_argument("--thp", action="store_true",
                    help="Redis's heap on huge pages, as REDIS_THP=yes (MALLOC_CONF=thp:always, "
                         "--disable-thp no)")
    ap.add_argument("--label", default="run", help="the run's name in the output [run]")
    ap.add_argument("--jsonl", metavar="FILE", help="append the run's figures to FILE")
    ap.add_argument("--summarize", metavar="FILE",
                    help="print the runs of FILE (--jsonl's) as markdown tables, run nothing")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
        return
    if a.batch > 128:
        ap.error("--batch: at most 128 (TP_SCRIPT_BATCH_MAX)")
    if a.players > a.batch:
        ap.error("--players: at most --batch (every player bets in every call)")
    if not os.path.isfile(a.script):
        ap.error(f"--script: no file {a.script}")
    if a.mode == "rewrite" and a.rewrite_at + 1 >= a.duration:
        ap.error("--duration: must leave at least a second after --rewrite-at")
    if a.preload is None:
        a.preload = 1000000 if a.mode == "doubling" else 700000
    with tpenv.EmbeddedRedis(thp="yes" if a.thp else "no") as r:
        c = r.client()
        sha, now = setup(c, a.script, a.players)
        t = time.time()
        preload(c, sha, now, a)
        print(f"preloaded {a.preload} bets in {time.time() - t:.1f} s "
              f"(idemhot {c.hlen(P + 'idemhot')})", file=sys.stderr)
        time.sleep(0.5)
        records, samples = drive(r, sha, now, a)
        info = c.info("stats")
    res = analyse(records, samples, a, info)
    show(res)
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
