#!/usr/bin/python3
"""How long a settlement page holds Redis, whole: the script, and what Redis does for it after the
script's last `TIME` and before it reads the next client (the script's writes propagated to the
AOF buffer, that buffer written to the AOF file, the reply written).

A private redis-server with bench/run's settings (AOF everysec, hash-max-listpack-entries 128)
gets the round bench/settle_callgrind.py builds (WINNERS winning bets of PLAYERS players), then
settles it with pages of each size given, in turn. Each page is sent as one write of three
commands, `TIME`, EVALSHA settle_page.lua, `TIME`, which Redis reads at once and runs back to
back, so the two TIMEs bound the EVALSHA call with its propagation. The main thread's system calls
are traced (`perf record`, syscall tracepoints), so each page's event-loop turn is seen from the
read of the three commands to Redis's next epoll_wait: the AOF write and the reply included.
Printed per page size (medians and maxima over the pages):

- script: the time the script reports (its first `TIME` to its last), what the pager sizes on;
- slowlog: Redis's own duration of the EVALSHA call (SLOWLOG, threshold 0), the same for commandstats;
- call: the second `TIME` minus the first (the call, its propagation to the AOF buffer);
- turn: the read of the page to the next epoll_wait (perf): what a bet that came during the
  page waits for, the page's whole hold;
- aof write: the write(2) of the AOF buffer, inside the turn.

    bench/settle_hold.py --sizes 200,400,600 --winners 40000     # needs root (perf) and redis-py

With --trace, it reads instead the trace bench/run settle-100k --settle-pages recorded of a real
settlement (perf script's text of perf_record_cmd's events, --tid) and prints the
holds of its pages: the turns that read the leader's connection and wrote the AOF, paired in
order with the `settle page` lines of --round in --log for the script's own time.

The timings are wall times on a shared host: run it alone on the machine, at a nice that
gives Redis a core (`nice -n -10`), and compare the columns within one run.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import redis

from benchlib import pct
from callgrind_redis import free_port
from settle_callgrind import RID, WIN_BAND, LOSE_BAND, keys, user

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fill(c, winners, players, stake):
    k = keys()
    pipe = c.pipeline(transaction=False)
    for i in range(1, 2 * winners + 1):
        band = WIN_BAND if i % 2 == 0 else LOSE_BAND
        pipe.hset(k[5 + band], str(i), f"{user(i, players)}:{stake}")
        if i % 2000 == 0:
            pipe.execute()
    pipe.execute()
    c.hset(k[1], mapping={str(u): 10**9 for u in range(1, players + 1)})
    w = winners * stake
    c.hset(k[0], mapping={"band": WIN_BAND, "pot": (2 * w * 97) // 100, "w": w, "refund": 0,
                          "nbands": 3, "pos": 0, "cur": 0, "done": 0, "paid": 0,
                          "finished": 0})


def perf_record_cmd(tid, out):
    """`perf record` of what bounds Redis's event-loop turns: its main thread's epoll_wait, read
    and write calls, and its switches off and onto a CPU (system-wide, filtered in the kernel:
    a switch onto a CPU happens in another thread's context). Stops on SIGINT."""
    own = f"common_pid == {tid}"
    cmd = ["perf", "record", "-q", "-a", "-o", out]
    for e in ("sys_enter_epoll_wait", "sys_exit_epoll_wait", "sys_enter_read", "sys_enter_write",
              "sys_exit_write"):
        cmd += ["-e", f"syscalls:{e}", "--filter", own]
    return cmd + ["-e", "sched:sched_switch", "--filter", f"prev_pid == {tid} || next_pid == {tid}"]


def turns(perf_txt, tid):
    """Event-loop turns of thread tid (perf script's text of perf_record_cmd's events) that read
    something, as dicts in µs of perf's clock: start (epoll_wait returned), reads {fd: first
    read}, writes [(fd, bytes, start, µs)], off (µs switched away from a CPU inside the turn),
    end (the next epoll_wait)."""
    out, cur, wr, away = [], None, None, None
    pat = re.compile(r"^\s*\S+\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
    for line in perf_txt.splitlines():
        m = pat.match(line)
        if not m:
            continue
        t, ev, rest = float(m.group(2)) * 1e6, m.group(3), m.group(4)
        if ev.endswith("sched_switch"):
            sw = re.search(r"prev_pid=(\d+) .*next_pid=(\d+)", rest)
            if sw and int(sw.group(1)) == tid and cur is not None:
                away = t
            elif sw and int(sw.group(2)) == tid and away is not None:
                if cur is not None:  # (CPUs' clocks may order a switch after the next call)
                    cur["off"] += t - away
                away = None
            continue
        if int(m.group(1)) != tid:
            continue
        if ev.endswith("sys_exit_epoll_wait"):
            cur, away = {"start": t, "reads": {}, "writes": [], "off": 0.0}, None
        elif cur is None:
            continue
        elif ev.endswith("sys_enter_read"):
            cur["reads"].setdefault(int(re.search(r"fd: (0x[0-9a-f]+)", rest).group(1), 16), t)
        elif ev.endswith("sys_enter_write"):
            wr = (int(re.search(r"fd: (0x[0-9a-f]+)", rest).group(1), 16),
                  int(re.search(r"count: (0x[0-9a-f]+)", rest).group(1), 16), t)
        elif ev.endswith("sys_exit_write") and wr is not None:
            cur["writes"].append((wr[0], wr[1], wr[2], t - wr[2]))
            wr = None
        elif ev.endswith("sys_enter_epoll_wait"):
            if cur["reads"]:
                cur["end"] = t
                out.append(cur)
            cur = None
    return out


def settlement(trace, tid, rid, log):
    """The holds of a traced settlement's pages (bench/run settle-100k --settle-pages)."""
    with open(trace, errors="replace") as f:
        tt = turns(f.read(), tid)
    us = []
    with open(log, errors="replace") as f:
        for line in f:
            if 'msg="settle page"' in line and f" round={rid} " in line:
                us.append(int(re.search(r" us=(\d+)", line).group(1)))
    # The page's own fd: the connection read most often in turns that wrote 8 KiB or more (a
    # page's writes; a bet's are under 1 KiB).
    big = [t for t in tt if any(n >= 8192 for _, n, _, _ in t["writes"])]
    fds = {}
    for t in big:
        for fd in t["reads"]:
            fds[fd] = fds.get(fd, 0) + 1
    if not fds:
        print("No turn of the trace wrote 8 KiB or more: no page found in it.")
        return
    fd = max(fds, key=fds.get)
    pages = [t for t in big if fd in t["reads"]]
    aof = [max(n for _, n, _, _ in t["writes"]) for t in pages]
    # Two pages read in one turn (both in Redis's input at once: the second page in flight sent
    # with the first, before c47849a) run back to back: about twice a page's AOF bytes. Since
    # c47849a one page is in Redis at a time, and a turn flagged here is one page much larger
    # than the median (the pager's sizes vary more when Redis's speed does).
    two = [a > 1.6 * pct(aof, 50) for a in aof]
    hold = [t["end"] - t["reads"][fd] for t in pages]
    oncpu = [t["end"] - t["reads"][fd] - t["off"] for t in pages]
    one = [h for h, d in zip(hold, two) if not d]
    one_cpu = [h for h, d in zip(oncpu, two) if not d]
    f = lambda v: " / ".join(f"{pct(v, p) / 1000:.2f}" for p in (50, 90, 99, 100))
    print(f"Redis's main thread traced (perf, from the settlement window's start to \"round "
          f"settled\"): {len(pages)} turns read the leader's connection (fd {fd}) and wrote 8 KiB "
          f"or more, the pages ({len(us)} `settle page` lines); {sum(two)} of them wrote over 1.6x "
          f"the median AOF bytes ({pct(aof, 50):,}): two pages read and run in one turn, or one "
          f"page far above the median. A "
          f"turn's hold, from Redis's read of the page to its next epoll_wait (the script, its "
          f"writes propagated and written to the AOF, the reply, and whatever else was read in "
          f"that turn after it), ms p50 / p90 / p99 / max, turns of one page: **{f(one)}**, over "
          f"2 ms {sum(h > 2000 for h in one)} of {len(one)}; less the time Redis was switched "
          f"away inside it: **{f(one_cpu)}**, over 2 ms {sum(h > 2000 for h in one_cpu)}. Every "
          f"turn: {f(hold)}; on a CPU {f(oncpu)}.")
    if us:
        print(f"The scripts' own times (`us` of the `settle page` lines, what the pager sizes on), "
              f"ms p50 / p90 / p99 / max: {f(us)}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--perf-cmd", nargs=2, metavar=("TID", "OUT"),
                    help="print the perf record command (one word a line) and exit")
    ap.add_argument("--trace", help="perf script's text of a settle-100k run (bench/run)")
    ap.add_argument("--tid", type=int, help="with --trace: Redis's main thread")
    ap.add_argument("--round", type=int, help="with --trace: the settled round")
    ap.add_argument("--log", help="with --trace: tickpool's log (settle page lines)")
    ap.add_argument("--script", default=os.path.join(ROOT, "scripts", "lua", "settle_page.lua"))
    ap.add_argument("--sizes", default="200,400,600")
    ap.add_argument("--winners", type=int, default=40000)
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--stake", type=int, default=100)
    ap.add_argument("--pages", type=int, default=40, help="pages per size [40]")
    ap.add_argument("--keep", help="write perf script's text here")
    a = ap.parse_args()
    if a.perf_cmd:
        print("\n".join(perf_record_cmd(int(a.perf_cmd[0]), a.perf_cmd[1])))
        return
    if a.trace:
        settlement(a.trace, a.tid, a.round, a.log)
        return
    sizes = [int(x) for x in a.sizes.split(",")]
    d = tempfile.mkdtemp(prefix="tp-hold-")
    port = free_port()
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
         "--appendonly", "yes", "--hash-max-listpack-entries", "128", "--slowlog-log-slower-than",
         "0", "--slowlog-max-len", "100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    perf = None
    try:
        c = redis.Redis(port=port, decode_responses=True)
        for _ in range(100):
            try:
                c.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        with open(a.script) as f:
            sha = c.script_load(f.read())
        fill(c, a.winners, a.players, a.stake)
        c.execute_command("BGREWRITEAOF")
        while c.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.1)
        time.sleep(1.5)
        data = os.path.join(d, "perf.data")
        perf = subprocess.Popen(
            perf_record_cmd(srv.pid, data),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        c.slowlog_reset()
        k = keys()
        rows = []  # (size, credited, script µs, call µs)
        pipe = c.pipeline(transaction=False)
        done = False
        for size in sizes:
            for _ in range(a.pages):
                pipe.execute_command("TIME")
                pipe.evalsha(sha, len(k), *k, str(RID), str(size), str(int(time.time() * 1000)),
                             str(10**12))
                pipe.execute_command("TIME")
                t1, r, t2 = pipe.execute()
                call = (int(t2[0]) - int(t1[0])) * 10**6 + int(t2[1]) - int(t1[1])
                rows.append((size, int(r[2]), int(r[4]), call))
                time.sleep(0.005)  # a turn of its own for each page
                if int(r[1]) == 1:
                    done = True
                    break
            if done:
                break
        slow = [e for e in c.slowlog_get(100000)
                if bytes(e["command"])[:7].upper() == b"EVALSHA"]
        slow.sort(key=lambda e: e["id"])
        time.sleep(0.3)
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=30)
        perf = None
        txt = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
        if a.keep:
            with open(a.keep, "w") as f:
                f.write(txt)
        tt = [x for x in turns(txt, srv.pid) if any(n > 4096 for _, n, _, _ in x["writes"])]
    finally:
        if perf is not None:
            perf.kill()
        srv.terminate()
        srv.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)
    if len(slow) != len(rows) or len(tt) != len(rows):
        sys.exit(f"{len(rows)} pages, {len(slow)} EVALSHA in the slowlog, {len(tt)} turns with "
                 "an AOF write: cannot pair them")
    print(f"{len(rows)} pages of {a.players} players' bets, sizes {a.sizes} (median / max µs per "
          "page; the turn: the page's read to Redis's next epoll_wait; its medians over the turns "
          "Redis stayed on a CPU):")
    print()
    print("| size | credited | script | slowlog | call (TIME to TIME) | read → AOF write | AOF write: "
          "bytes, µs | AOF write → epoll_wait | turn | turn ÷ script | turns off a CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        ix = [i for i, r in enumerate(rows) if r[0] == size and r[1] >= size // 2]
        if not ix:
            continue
        on = [i for i in ix if tt[i]["off"] == 0] or ix
        aof = {i: max(tt[i]["writes"], key=lambda w: w[1]) for i in ix}
        f = lambda get: f"{pct([get(i) for i in on], 50):.0f} / {max(get(i) for i in ix):.0f}"
        print(f"| {size} | {sum(rows[i][1] for i in ix) / len(ix):.0f} | {f(lambda i: rows[i][2])} "
              f"| {f(lambda i: slow[i]['duration'])} | {f(lambda i: rows[i][3])} "
              f"| {f(lambda i: aof[i][2] - tt[i]['start'])} | {pct([aof[i][1] for i in ix], 50):,}, "
              f"{f(lambda i: aof[i][3])} | {f(lambda i: tt[i]['end'] - aof[i][2] - aof[i][3])} "
              f"| {f(lambda i: tt[i]['end'] - tt[i]['start'])} "
              f"| {pct([(tt[i]['end'] - tt[i]['start']) / max(rows[i][2], 1) for i in on], 50):.2f} "
              f"| {len(ix) - len([i for i in ix if tt[i]['off'] == 0])} of {len(ix)} |")


if __name__ == "__main__":
    main()
