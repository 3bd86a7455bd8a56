#!/usr/bin/python3
"""Who holds the CPUs in the milliseconds after a boundary T, from a scheduler trace.

    python3 -c 'import time; print(time.time() - time.monotonic())' > offset
    perf record -e sched:sched_switch -e sched:sched_wakeup -a -k mono -o sched.data -- sleep 30
    perf script -i sched.data -F tid,pid,cpu,time,event,trace > sched.txt
    ps -eLo pid,tid,ppid,comm,args > ps.txt          # while the run's processes live
    bench/boundary_cpu.py sched.txt ps.txt --offset $(cat offset) [--window-ms 30]

Every whole second of the trace is taken as a boundary T (`bench/run boundaries` has 1 s phases
on whole seconds). For [T, T + window) and, as a reference, [T + quiet-at, T + quiet-at + window)
it prints each role's CPU time (ms per boundary, both CPUs), and for tickpool's worker loops the
time they were runnable and not on a CPU in the window, with who ran on that CPU meanwhile.
Roles: tickpool's master, each worker's loop thread (tid = its pid), the workers' other threads
(Postgres writer and reader), Redis, Postgres, loadgen, idle, the rest of the machine.
"""

import argparse
import collections
import re
import sys

EV = re.compile(r"^\s*(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\S+):\s+(.*)$")
SW = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=(\d+) prev_state=(\S+) ==> "
                r"next_comm=(.*?) next_pid=(\d+) next_prio=(\d+)")
WK = re.compile(r"comm=(.*?) pid=(\d+) ")


def roles_from_ps(path):
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            p = line.split(None, 4)
            if len(p) >= 4:
                rows.append((int(p[0]), int(p[1]), int(p[2]), p[3], p[4] if len(p) > 4 else ""))
    pids = {pid for pid, tid, ppid, comm, args in rows}
    master = {pid for pid, tid, ppid, comm, args in rows
              if comm == "tickpool" and ppid not in
              {p for p, t, pp, c, a in rows if c == "tickpool"}}
    role = {}
    for pid, tid, ppid, comm, args in rows:
        if comm == "tickpool" or "tickpool" in args.split(" ")[0]:
            if pid in master:
                role[tid] = "tickpool master"
            elif tid == pid:
                role[tid] = "worker loop %d" % pid
            else:
                role[tid] = "worker threads"
        elif comm.startswith("redis-server"):
            role[tid] = "redis"
        elif comm.startswith("postgres"):
            role[tid] = "postgres"
        elif comm == "loadgen":
            role[tid] = "loadgen " + ("viewers" if "viewers" in args else "driver")
    del pids
    return role


def read_trace(path, offset, who):
    """Reads a `perf script` sched trace (clock + offset). Returns (ran, waits, t_first, t_last,
    prio): ran: cpu -> [(t0, t1, who(tid, comm, prio), tid)], the intervals each task ran on each
    CPU; waits: tid -> [(t_runnable, t_on_cpu, cpu)], each time a task became runnable (woken or
    preempted) until it ran, and the CPU it then ran on; prio: tid -> its kernel prio."""
    last = {}           # cpu -> (time, tid, comm, prio) of the task switched in
    ran = collections.defaultdict(list)
    waits = collections.defaultdict(list)
    runnable = {}       # tid -> time it became runnable
    running = set()     # tids on a CPU
    prios = {}
    t_first = t_last = None
    with open(path) as f:
        for line in f:
            m = EV.match(line)
            if not m:
                continue
            t = float(m.group(4)) + offset
            cpu = int(m.group(3))
            kind, rest = m.group(5), m.group(6)
            t_first = t if t_first is None else t_first
            t_last = t
            if kind == "sched_wakeup":
                w = WK.search(rest)
                # A wakeup of a task already on a CPU (its wait ended before it slept) is none.
                if w and int(w.group(2)) not in running:
                    runnable.setdefault(int(w.group(2)), t)
                continue
            s = SW.search(rest)
            if not s:
                continue
            prev, state, nxt = int(s.group(2)), s.group(4), int(s.group(6))
            if cpu in last:
                t0, tid, comm, prio = last[cpu]
                ran[cpu].append((t0, t, who(tid, comm, prio), tid))
            running.discard(prev)
            if state.startswith("R") and prev != 0:
                runnable[prev] = t
            else:
                runnable.pop(prev, None)
            if nxt in runnable:
                waits[nxt].append((runnable.pop(nxt), t, cpu))
            if nxt != 0:
                running.add(nxt)
            last[cpu] = (t, nxt, s.group(5), int(s.group(7)))
            prios[nxt] = int(s.group(7))
    return ran, waits, t_first, t_last, prios


def cpu_in(ran, t0, t1):
    """CPU seconds per role (both CPUs) in [t0, t1)."""
    out = collections.Counter()
    for cpu, iv in ran.items():
        for s, e, r, tid in iv:
            if e > t0 and s < t1:
                out[r] += min(e, t1) - max(s, t0)
    return out


def who_for(role, run_prio, every_role=False):
    """The role of a task seen in the trace: roles_from_ps's, told apart from other runs'
    Redis and Postgres (tests, other benches) by the run's prio (120 + its nice); with
    every_role, other runs' tickpool and loadgen too."""
    def who(tid, comm, prio):
        if tid == 0:
            return "idle"
        r = role.get(tid)
        if r is None and comm.startswith("postgres"):
            r = "postgres"
        if r is None and comm.startswith("redis"):
            r = "redis"
        if r is not None and prio != run_prio and (every_role or r in ("postgres", "redis")):
            return r + " (not the run's)"
        if r is not None:
            return r
        return "other (" + comm + ")" if comm in ("python3", "cc1", "ninja", "perf") else "other"
    return who


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("ps")
    ap.add_argument("--window-ms", type=float, default=30)
    ap.add_argument("--quiet-at-ms", type=float, default=500)
    ap.add_argument("--run-prio", type=int, default=110,
                    help="the run's processes' kernel prio (120 + bench/run --nice)")
    ap.add_argument("--offset", type=float, default=0.0,
                    help="CLOCK_REALTIME - CLOCK_MONOTONIC when the trace's clock was mono")
    a = ap.parse_args()
    role = roles_from_ps(a.ps)

    ran, waits, t_first, t_last, _ = read_trace(a.trace, a.offset, who_for(role, a.run_prio))
    win = a.window_ms / 1000.0
    starts = [float(s) for s in range(int(t_first) + 1, int(t_last) - 1)]

    for label, off in (("[T, T+%g ms)" % a.window_ms, 0.0),
                       ("[T+%g, T+%g ms)" % (a.quiet_at_ms, a.quiet_at_ms + a.window_ms),
                        a.quiet_at_ms / 1000.0)):
        tot = collections.Counter()
        for T in starts:
            tot.update(cpu_in(ran, T + off, T + off + win))
        n = len(starts)
        print("## CPU by role in %s, ms per boundary over %d boundaries (2 CPUs = %.0f ms)"
              % (label, n, 2 * a.window_ms))
        for r, v in sorted(tot.items(), key=lambda kv: -kv[1]):
            print("  %-28s %6.2f" % (r, v * 1000 / n))
    # The workers' loop threads: runnable, not on a CPU, inside [T, T+window): who ran there.
    loops = sorted({tid for tid, r in role.items() if r.startswith("worker loop")})
    print("## worker loops waiting for a CPU in [T, T+%g ms): ms per boundary, and who ran on "
          "that CPU meanwhile" % a.window_ms)
    for tid in loops:
        held = collections.Counter()
        per_b = []
        for T in starts:
            w_tot = 0.0
            for r0, r1, cpu in waits.get(tid, []):
                s, e = max(r0, T), min(r1, T + win)
                if e <= s:
                    continue
                w_tot += e - s
                for s2, e2, r, t2 in ran[cpu]:
                    if e2 > s and s2 < e:
                        held[r] += min(e2, e) - max(s2, s)
            per_b.append(w_tot * 1000)
        per_b.sort()
        n = len(per_b)
        print("  loop %d: waiting p50 %.2f / p90 %.2f / max %.2f ms; held by: %s" % (
            tid, per_b[n // 2], per_b[int(n * 0.9)], per_b[-1],
            ", ".join("%s %.2f" % (r, v * 1000 / n)
                      for r, v in sorted(held.items(), key=lambda kv: -kv[1]))))


if __name__ == "__main__":
    main()
