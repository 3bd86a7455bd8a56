#!/usr/bin/python3
"""Who holds the CPUs while a settlement runs, and whom the bets' threads wait behind, from a
scheduler trace (`bench/run settle-100k --sched-trace` runs it; by hand:)

    python3 -c 'import time; print(time.time() - time.monotonic())' > offset
    perf record -e sched:sched_switch -e sched:sched_wakeup -a -k mono -o sched.data -- sleep 8
    perf script -i sched.data -F tid,pid,cpu,time,event,trace > sched.txt
    ps -eLo pid,tid,ppid,comm,args > ps.txt          # while the run's processes live
    bench/settle_cpu.py sched.txt ps.txt --offset $(cat offset) --close EPOCH_S --settled EPOCH_S
    bench/settle_cpu.py sched.txt ps.txt --offset $(cat offset) --log round.log  # the same

Two windows of the same length: the settlement (the round's close to `round settled`) and, as
the reference, the same span ending --ref-gap-ms before the close (the same bets on the same
host, nothing settling). For each it prints every role's CPU time, then for each role the time
its threads were runnable and not on a CPU, in how many waits (and how many over 2 ms), and who
ran on that CPU meanwhile. A bet goes through a worker loop twice (its request, Redis's reply),
so the worker loops' waits, and who held their CPU, are where the bets' latency goes. Roles as
bench/boundary_cpu.py's (its trace reader): the run's processes are told apart from other runs'
Redis, Postgres, tickpool and loadgen by --run-prio (120 + bench/run --nice; so not with
--nice-load, which runs some of them at another nice).
"""

import argparse
import collections
import datetime
import re

from boundary_cpu import cpu_in, read_trace, roles_from_ps, who_for


def waits_in(waits, ran, who, t0, t1):
    """Per role of the run's threads (who, as the trace's prio tells them): (seconds runnable and
    not on a CPU in [t0, t1), waits, waits over 2 ms, Counter of who ran on the waiting thread's
    CPU meanwhile)."""
    out = {}
    for tid, lst in waits.items():
        r = who(tid)
        if r is None or r.endswith("(not the run's)") or r.startswith("other") or r == "idle":
            continue
        tot = out.setdefault(r, [0.0, 0, 0, collections.Counter()])
        for r0, r1, cpu in lst:
            s, e = max(r0, t0), min(r1, t1)
            if e <= s:
                continue
            tot[0] += e - s
            tot[1] += 1
            tot[2] += r1 - r0 > 0.002
            for s2, e2, holder, _ in ran[cpu]:
                if e2 > s and s2 < e:
                    tot[3][holder] += min(e2, e) - max(s2, s)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("ps")
    ap.add_argument("--close", type=float, help="the round's close, epoch s")
    ap.add_argument("--settled", type=float, help="`round settled`, epoch s")
    ap.add_argument("--log", help="or both from tickpool's log lines of the round: the "
                    "`boundary` that closed it and `round settled` (bench/run's round.log)")
    ap.add_argument("--ref-gap-ms", type=float, default=500,
                    help="the reference window ends this long before the close")
    ap.add_argument("--run-prio", type=int, default=110,
                    help="the run's processes' kernel prio (120 + bench/run --nice)")
    ap.add_argument("--offset", type=float, default=0.0,
                    help="CLOCK_REALTIME - CLOCK_MONOTONIC when the trace's clock was mono")
    a = ap.parse_args()
    if a.log:
        for line in open(a.log, errors="replace"):
            m = re.match(r"ts=(\S+)Z .*msg=\"(boundary|round settled)\"", line)
            if m:
                t = datetime.datetime.fromisoformat(m.group(1)).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                if m.group(2) == "boundary":
                    a.close = t
                else:
                    a.settled = t
    if a.close is None or a.settled is None:
        raise SystemExit("no close or no `round settled` (--close/--settled or --log)")
    role = roles_from_ps(a.ps)
    who = who_for(role, a.run_prio, every_role=True)

    def role_of(tid, comm, prio):
        # The run's worker loops as one role (bets come in on either).
        r = who(tid, comm, prio)
        return "worker loops" if r.startswith("worker loop ") else r
    ran, waits, t_first, t_last, prio = read_trace(a.trace, a.offset, role_of)
    if t_first is None:
        raise SystemExit("no events")
    span = a.settled - a.close
    ref0 = a.close - a.ref_gap_ms / 1000.0 - span
    if span <= 0 or ref0 < t_first or a.settled > t_last:
        raise SystemExit("the trace (%.3f to %.3f) does not cover both windows" % (t_first, t_last))
    windows = (("settlement", a.close), ("reference, before the close", ref0))
    cpu = [cpu_in(ran, t0, t0 + span) for _, t0 in windows]
    wt = [waits_in(waits, ran, lambda tid: role_of(tid, "", prio.get(tid)) if tid in role
                   else None, t0, t0 + span) for _, t0 in windows]
    print("CPU ms by role (2 CPUs x %.0f ms) in the settlement and in the reference window "
          "(as long, ending %.0f ms before the close):" % (span * 1000, a.ref_gap_ms))
    print()
    print("| role | settlement | reference |")
    print("|---|---|---|")
    for r, v in sorted(cpu[0].items(), key=lambda kv: -kv[1]):
        if v * 1000 >= 1 or cpu[1][r] * 1000 >= 1:
            print("| %s | %.1f | %.1f |" % (r, v * 1000, cpu[1][r] * 1000))
    print()
    print("Runnable and waiting for a CPU, ms (waits, over 2 ms), and who ran on that CPU "
          "meanwhile (ms, the 5 longest):")
    print()
    print("| threads | settlement | held by | reference | held by |")
    print("|---|---|---|---|---|")
    for r in sorted(wt[0], key=lambda k: -wt[0][k][0]):
        cells = []
        for w in wt:
            t, n, big, held = w.get(r, [0.0, 0, 0, collections.Counter()])
            cells.append("%.1f (%d, %d)" % (t * 1000, n, big))
            cells.append(", ".join("%s %.1f" % (x, y * 1000) for x, y in held.most_common(5)))
        print("| %s | %s |" % (r, " | ".join(cells)))


if __name__ == "__main__":
    main()
