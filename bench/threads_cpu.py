#!/usr/bin/env python3
"""bench/threads_cpu.py: tickpool's CPU per bet split by thread, over a window of the load.

    threads_cpu.py --pid MASTER --metrics URL [--seconds S] [--delay S] [--syscalls]

After --delay seconds, reads each thread's utime and stime (/proc/PID/task/TID/stat) and context
switches (…/status) of the master and its children at the window's start and end, and
tickpool_bets_accepted_total from URL (GET /metrics; the counter is process-shared, so it holds
every worker's bets) at both ends. A worker's loop thread is its main thread (tid == pid); its
other threads carry no names, so each is told by what it ran in the window: with --syscalls,
a thread that calls poll() (libpq waiting on Postgres) more than futex() is the writer; without,
the others are "other". With --syscalls (root and perf),
`perf stat --per-thread` counts each thread's system calls over the same window, in all and
the ones a bet's path makes. Prints Markdown tables (bench/README.md, "Session 19").
"""
import argparse
import os
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
# The system calls a bet's path makes (session 12, 16 and 19 counts), then the writer's poll.
CALLS = ["recvfrom", "epoll_wait", "io_uring_enter", "read", "write", "sendto",
         "timerfd_settime", "epoll_ctl", "poll", "futex"]


def thread_times(pid):
    """{tid: (utime, stime, voluntary, involuntary context switches)} of pid's threads."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                s = f.read()
            with open(f"/proc/{pid}/task/{t}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        out[int(t)] = (int(rest[11]), int(rest[12]), int(st["voluntary_ctxt_switches"]),
                       int(st["nonvoluntary_ctxt_switches"]))
    return out


def accepted(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            f = line.split()
            if len(f) == 2 and f[0] == "tickpool_bets_accepted_total":
                return int(float(f[1]))
    raise SystemExit("threads_cpu.py: no tickpool_bets_accepted_total in " + url)


def perf_stat(pids, seconds):
    """Starts perf stat on pids' threads for `seconds`; returns (process, csv path)."""
    have = [c for c in CALLS if os.path.exists(f"/sys/kernel/tracing/events/syscalls/sys_enter_{c}")]
    ev = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in have])
    out = f"/tmp/threads_cpu.{os.getpid()}.csv"
    p = subprocess.Popen(["perf", "stat", "-e", ev, "--per-thread", "-x,", "-o", out,
                          "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, out


def read_perf(path):
    """{tid: {syscall: count}} from perf stat -x, --per-thread (comm-tid,count,,event,…)."""
    out = {}
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return out
    for line in lines:
        f = line.split(",")
        if len(f) < 4 or not f[1].isdigit():
            continue
        tid = int(f[0].rsplit("-", 1)[1])
        name = f[3].split(":")[1].replace("sys_enter_", "")
        out.setdefault(tid, {})[name] = int(f[1])
    os.unlink(path)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True, help="tickpool's master pid")
    ap.add_argument("--metrics", required=True, help="URL of tickpool's GET /metrics")
    ap.add_argument("--seconds", type=float, default=8, help="window [8]")
    ap.add_argument("--delay", type=float, default=0, help="seconds before the window [0]")
    ap.add_argument("--syscalls", action="store_true", help="count system calls (perf, root)")
    a = ap.parse_args()

    time.sleep(a.delay)
    try:
        with open(f"/proc/{a.pid}/task/{a.pid}/children") as f:
            workers = [int(x) for x in f.read().split()]
    except OSError:
        raise SystemExit(f"threads_cpu.py: no process {a.pid}")
    procs = [a.pid] + workers
    perf = perf_stat(procs, a.seconds) if a.syscalls else None
    b0, w0 = accepted(a.metrics), time.monotonic()
    s0 = {p: thread_times(p) for p in procs}
    if perf:
        perf[0].wait()
    else:
        time.sleep(a.seconds)
    b1, w1 = accepted(a.metrics), time.monotonic()
    s1 = {p: thread_times(p) for p in procs}
    calls = read_perf(perf[1]) if perf else {}
    bets = b1 - b0
    if bets <= 0:
        raise SystemExit("threads_cpu.py: no bets accepted in the window")

    rows = []
    for p in procs:
        for t, (u, s, vol, inv) in sorted(s1[p].items()):
            o = s0[p].get(t)
            if o is None:
                continue
            c = calls.get(t, {})
            if p == a.pid:
                role = "master" if t == p else "master's thread"
            elif t == p:
                role = f"worker {workers.index(p)} loop"
            elif c.get("poll", 0) > 0 and c.get("poll", 0) >= c.get("futex", 0):
                role = f"worker {workers.index(p)} writer (polls Postgres)"
            else:
                role = f"worker {workers.index(p)} other"
            rows.append({"role": role, "tid": t, "user": u - o[0], "sys": s - o[1],
                         "vcsw": vol - o[2], "ivcsw": inv - o[3], "calls": c})

    us = 1e6 / CLK_TCK
    per = lambda v: v * us / bets
    tot = sum(r["user"] + r["sys"] for r in rows) or 1
    print(f"{bets} bets accepted in {w1 - w0:.1f} s ({bets / (w1 - w0):.0f}/s); CPU from "
          f"/proc ticks of {us / 1000:.0f} ms, per bet accepted in the window"
          f"{'; system calls by perf stat over the same window' if perf else ''}.")
    print()
    head = "| thread (tid) | user µs/bet | system µs/bet | share of CPU | switches/bet (vol. / invol.) |"
    line = "|---|---|---|---|---|"
    if perf:
        head += " syscalls/bet | " + " | ".join(CALLS) + " |"
        line += "---|" * (1 + len(CALLS))
    print(head)
    print(line)
    # A thread that ran nothing worth a figure (the master, the argon2 pool while no one signs
    # in, the health probe between its checks) is left out; the total still counts it.
    shown = [r for r in rows if r["user"] + r["sys"] or r["vcsw"] >= bets / 200
             or r["calls"].get("sys_enter", 0) >= bets / 200]
    for r in shown + [None]:
        if r is None:  # the total
            r = {"role": "**all**", "tid": "", "user": sum(x["user"] for x in rows),
                 "sys": sum(x["sys"] for x in rows), "vcsw": sum(x["vcsw"] for x in rows),
                 "ivcsw": sum(x["ivcsw"] for x in rows), "calls": {}}
            for x in rows:
                for k, v in x["calls"].items():
                    r["calls"][k] = r["calls"].get(k, 0) + v
        tid = f" ({r['tid']})" if r["tid"] else ""
        out = (f"| {r['role']}{tid} | {per(r['user']):.1f} | {per(r['sys']):.1f} | "
               f"{100 * (r['user'] + r['sys']) / tot:.0f} % | "
               f"{r['vcsw'] / bets:.2f} / {r['ivcsw'] / bets:.2f} |")
        if perf:
            c = r["calls"]
            out += f" {c.get('sys_enter', 0) / bets:.2f} | " + " | ".join(
                f"{c.get(k, 0) / bets:.3f}" for k in CALLS) + " |"
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
