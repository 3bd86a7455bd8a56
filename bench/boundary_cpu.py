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

With --log (the run's tickpool log at log.level=debug, `bench/run --keep`), each boundary is
taken from T to its last socket's write (the later worker's `round delivered`): per worker loop,
its wait for a CPU from T to its own last write and who ran on that CPU meanwhile, over all
boundaries and at the worst few (session 15).
"""

import argparse
import collections
import datetime
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


def delivered_from_log(path, phase_ms):
    """T (s) -> {worker pid: (received, delivered)} in ms after T, the later of each boundary's
    `round delivered` lines per worker (a line at ts with delivered d belongs to T = ts - d on
    the phase grid)."""
    out = collections.defaultdict(dict)
    with open(path, errors="replace") as f:
        for line in f:
            if 'msg="round delivered"' not in line:
                continue
            ts = re.search(r"ts=(\S+?)Z", line).group(1)
            ts_ms = datetime.datetime.fromisoformat(ts + "+00:00").timestamp() * 1000
            v = dict(re.findall(r"(\w+)=(-?\d+)", line))
            d = int(v["delivered_us"]) / 1000
            t = int(round((ts_ms - d) / phase_ms)) * phase_ms / 1000.0
            o = out[t].get(int(v["pid"]), (0.0, 0.0))
            out[t][int(v["pid"])] = (max(o[0], int(v["received_us"]) / 1000), max(o[1], d))
    return out


def waits_in(waits, ran, tid, t0, t1):
    """tid's time runnable and not on a CPU inside [t0, t1), and who ran on that CPU then."""
    total, held = 0.0, collections.Counter()
    for r0, r1, cpu in waits.get(tid, []):
        s, e = max(r0, t0), min(r1, t1)
        if e <= s:
            continue
        total += e - s
        for s2, e2, r, t2 in ran[cpu]:
            if e2 > s and s2 < e:
                held[r] += min(e2, e) - max(s2, s)
    return total, held


def until_written(a, ran, waits, t_first, t_last):
    """Each boundary from T to its last socket's write (--log): who the worker loops waited
    behind, over all boundaries and at the worst ones."""
    per = {t: w for t, w in delivered_from_log(a.log, a.phase_ms).items()
           if t_first + 0.1 < t < t_last - 0.2 and len(w) >= 2}
    if not per:
        print("## no boundary of the log inside the trace")
        return
    fmt = lambda c, n: ", ".join("%s %.2f" % (r, v * 1000 / n)
                                 for r, v in sorted(c.items(), key=lambda kv: -kv[1])
                                 if v * 1000 / n >= 0.05)
    last = {t: max(d for _, d in w.values()) for t, w in per.items()}
    order = sorted(per, key=lambda t: -last[t])
    print("## from T to the last socket's write (the later worker's), %d boundaries: p50 %.1f, "
          "worst %s ms" % (len(per), sorted(last.values())[len(per) // 2],
                           " / ".join("%.1f" % last[t] for t in order[:8])))
    for label, ts in (("all", list(per)), ("the worst 8", order[:8]),
                      ("the others", order[8:])):
        if not ts:
            continue
        wsum, held, cpu = 0.0, collections.Counter(), collections.Counter()
        for t in ts:
            cpu.update(cpu_in(ran, t, t + last[t] / 1000))
            for pid, (rcv, dlv) in per[t].items():
                w, h = waits_in(waits, ran, pid, t, t + dlv / 1000)
                wsum += w
                held.update(h)
        n = len(ts)
        print("### %s (%d): T to the last write %.1f ms on average" % (
            label, n, sum(last[t] for t in ts) / n))
        print("  CPU by role meanwhile, ms per boundary (both CPUs): " + fmt(cpu, n))
        print("  worker loops waiting for a CPU from T to their last write: %.2f ms per "
              "boundary (both loops); held by: %s" % (wsum * 1000 / n, fmt(held, n)))
    print("### the worst 8, each: T (s into the trace): per worker received -> written, waiting "
          "(held by, ms)")
    for t in order[:8]:
        parts = []
        for pid, (rcv, dlv) in sorted(per[t].items()):
            w, h = waits_in(waits, ran, pid, t, t + dlv / 1000)
            parts.append("%d: %.1f -> %.1f, waited %.1f (%s)" % (pid, rcv, dlv, w * 1000, ", ".join(
                "%s %.1f" % (r, v * 1000) for r, v in h.most_common(3))))
        print("  %5.0f: %s" % (t - t_first, "; ".join(parts)))


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
    ap.add_argument("--log", help="the run's tickpool log (debug): each boundary until written")
    ap.add_argument("--phase-ms", type=int, default=1000)
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
            w_tot, h = waits_in(waits, ran, tid, T, T + win)
            held.update(h)
            per_b.append(w_tot * 1000)
        per_b.sort()
        n = len(per_b)
        print("  loop %d: waiting p50 %.2f / p90 %.2f / max %.2f ms; held by: %s" % (
            tid, per_b[n // 2], per_b[int(n * 0.9)], per_b[-1],
            ", ".join("%s %.2f" % (r, v * 1000 / n)
                      for r, v in sorted(held.items(), key=lambda kv: -kv[1]))))
    if a.log:
        until_written(a, ran, waits, t_first, t_last)


if __name__ == "__main__":
    main()
