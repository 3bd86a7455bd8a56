#!/usr/bin/env python3
"""What a find-max step's (or a fixed-rate run's) slow seconds coincide with (bench/README.md,
"Session 17"; "Session 23").

  seconds.py sample OUT --redis PORT --group NAME=PID[,PID...]|comm:COMM|own:PID|kids:PID|tid:PID
                     [--group ...] [--every MS]
      Every MS (100) ms until SIGTERM, one JSON line to OUT: the wall time (ms) the sample was
      taken ("late": ms after its point on the grid, when half a period or more); Redis's INFO
      persistence / stats / cpu fields below from the newest answer (asked on a thread of its
      own, so a stalled Redis never holds a sample: "redis_t" is when that answer came,
      "redis_ms" the longest Redis kept the sampler waiting since the sample before); for the
      whole machine and each group (tickpool, redis, postgres, loadgen; a PID's children are
      added at each sample) the CPU and the run-queue wait (schedstat, every thread; tid:PID the
      one thread PID: Redis's main thread) since the last sample, in µs; and the nice or policy
      of each kids:PID child. Redis's latency monitor is set to 1 ms at the start; its history
      is written at the end.
      --commandstats: each line also has Redis's INFO commandstats (calls and µs per command,
      since the start), for settle-100k's slices.
  seconds.py report OUT LAT [LAT...]
      LAT: loadgen --latencies files (a bet's due time in wall ms, its latency in µs). Prints,
      per wall-clock second of the bets, the p99 and what ran in it; then the slow seconds'
      means against the others'.
"""
import json
import os
import resource
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (GROUP_LABEL, commandstats, pct,  # noqa: E402 (bench/ is not a package)
                      read_lat)
from outbox_lag import command  # noqa: E402

REDIS_FIELDS = ("aof_rewrite_in_progress", "aof_delayed_fsync", "total_forks",
                "latest_fork_usec", "used_cpu_sys", "used_cpu_user", "used_cpu_sys_children",
                "used_cpu_user_children", "aof_current_size", "aof_pending_bio_fsync",
                "instantaneous_ops_per_sec", "used_memory", "aof_rewrites")
TCK = os.sysconf("SC_CLK_TCK")


def resp(conn, *args):
    """One command on conn = (socket, its one buffered reader), its reply (outbox_lag's RESP)."""
    return command(conn[0], conn[1], *args)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def by_comm(comm):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == comm:
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def proc_cost(pid, tasks=None):
    """(CPU µs, run-queue wait µs) of every thread of pid, or of the threads in tasks."""
    cpu = wait = 0
    try:
        tasks = tasks or os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                c, w, _ = f.read().split()
            cpu += int(c) // 1000
            wait += int(w) // 1000
        except (OSError, ValueError):
            pass
    return cpu, wait


def stat_fields(path):
    """/proc/<pid>/stat's (or a thread's) fields after the command name: [0] is the state."""
    try:
        with open(path) as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def minflt(pid):
    """Minor page faults of pid so far, every thread (/proc/<pid>/stat): after a fork, the
    copy-on-write of each page Redis writes first is one."""
    try:
        return int(stat_fields(f"/proc/{pid}/stat")[7])
    except (IndexError, ValueError):
        return 0


POLICY = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}


def sched_of(pid):
    """"nice N" or the policy of pid's main thread: what a rewrite child runs at."""
    f = stat_fields(f"/proc/{pid}/stat")
    if len(f) < 39:
        return "?"
    pol = POLICY.get(int(f[38]) & 0xff, f[38])
    return f"nice {f[16]}" if pol == "other" else pol


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) * 1000000 // TCK, v[4] * 1000000 // TCK  # busy, iowait µs


def pids_of(spec):
    """The pids a --group spec names at this moment: "comm:NAME" (every process of that name),
    "own:PID" (its threads only), "kids:PID" (only its children: Redis's rewrite child), else
    pids with their children."""
    if isinstance(spec, str) and spec.startswith("comm:"):
        allp = set(by_comm(spec[5:]))
    elif isinstance(spec, str) and spec.startswith(("own:", "tid:")):
        return {int(spec[4:])}
    elif isinstance(spec, str) and spec.startswith("kids:"):
        return set(children(int(spec[5:])))
    else:
        allp = set(spec)
    for p in list(allp):
        allp.update(children(p))
    return allp


def parse_info(info):
    """REDIS_FIELDS of an INFO reply, as numbers."""
    r = {}
    for line in info.split("\r\n"):
        k, _, v = line.partition(":")
        if k in REDIS_FIELDS:
            r[k] = float(v) if "." in v else int(v)
    return r


class RedisPoll(threading.Thread):
    """Asks Redis for INFO (the bets counter, commandstats) on the sampler's 100 ms grid, on a
    thread and a connection of its own: a Redis that stalls (a fork, a long command, DEBUG SLEEP)
    holds this thread and never the /proc samples, which would otherwise wait behind its answer
    and vanish for the stall's length. take() gives each sample the newest answer and how long
    Redis kept the sampler waiting since the sample before: an answer that came, or a question
    still unanswered."""

    def __init__(self, port, every_ms, cmds, count):
        super().__init__(daemon=True)
        self.port, self.every, self.cmds, self.count = port, every_ms / 1000, cmds, count
        self.lock = threading.Lock()
        self.latest = None  # {"info": ..., "cmd": ..., "t": wall ms the answer came}
        self.asked = None   # wall s of the question not answered yet
        self.waited = 0.0   # longest wait for an answer (s) since the last take
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error = None
        self.t0 = time.time()  # its grid; the samples' is half a period later (no race)

    def run(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port))
            conn = (s, s.makefile("rb"))
            t0, k = self.t0, 0
            while not self.stop.is_set():
                asked = time.time()
                with self.lock:
                    self.asked = asked
                got = {"info": parse_info(resp(conn, "INFO", "persistence", "stats", "cpu",
                                               "memory"))}
                if self.count:
                    got["info"]["count"] = int(resp(conn, "GET", self.count) or 0)
                if self.cmds:
                    got["cmd"] = commandstats(resp(conn, "INFO", "commandstats"))
                now = time.time()
                got["t"] = int(now * 1000)
                with self.lock:
                    self.latest, self.asked = got, None
                    self.waited = max(self.waited, now - asked)
                self.ready.set()
                k = max(k + 1, int((now - t0) / self.every) + 1)  # the next grid point ahead
                self.stop.wait(max(t0 + k * self.every - time.time(), 0))
        except (OSError, ConnectionError) as e:
            self.error = e
            self.ready.set()

    def take(self, now):
        """(the newest answer or None, the longest wait on Redis in s since the last take)."""
        with self.lock:
            waited = self.waited
            self.waited = 0.0
            if self.asked is not None:
                waited = max(waited, now - self.asked)
            return self.latest, waited


def sample(out, port, groups, every_ms, cmds=False, count=None):
    s = socket.create_connection(("127.0.0.1", port))
    sock = (s, s.makefile("rb"))
    resp(sock, "CONFIG", "SET", "latency-monitor-threshold", "1")
    resp(sock, "LATENCY", "RESET")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    poll = RedisPoll(port, every_ms, cmds, count)
    poll.start()
    poll.ready.wait(10)
    if poll.error is not None:
        raise poll.error
    prev = {}
    every = every_ms / 1000
    with open(out, "w") as o:
        # Samples fall on a grid from t0, each stamped with the clock when /proc was read; one
        # taken half a period or more after its grid point says so ("late": ms, the sampler was
        # starved or its previous sample ran long), and a grid point passed meanwhile is skipped:
        # the next sample's CPU covers it, and the missing point shows in the report.
        t0, n = poll.t0 + every / 2, 0
        while not stop:
            due = t0 + n * every
            if time.time() < due:
                time.sleep(due - time.time())
                continue
            t = time.time()
            cur = {}
            for name, pids in groups.items():
                allp = pids_of(pids)
                cpu = wait = flt = 0
                one = isinstance(pids, str) and pids.startswith("tid:")
                for p in allp:
                    c, w = proc_cost(p, [str(p)] if one else None)
                    cpu += c
                    wait += w
                    flt += minflt(p)
                cur[name] = (cpu, wait, flt, allp)
            busy, iow = machine_busy()
            got, waited = poll.take(t)
            # Redis's fields come from the newest answer, asked for half a period before (a
            # stalled Redis leaves an older one's: redis_t says when it came); redis_ms is how
            # long Redis kept the sampler waiting since the sample before, so a stall shows as a
            # figure rising by the period.
            row = {"t": int(t * 1000), "redis_info": dict(got["info"]) if got else {},
                   "redis_t": got["t"] if got else 0, "redis_ms": round(waited * 1000, 1)}
            if (t - due) * 1000 >= every_ms / 2:
                row["late"] = int((t - due) * 1000)
            # The rewrite children this sample's groups already listed (no second /proc walk).
            kids = [p for name, spec in groups.items() if isinstance(spec, str)
                    and spec.startswith("kids:") for p in cur[name][3]]
            if kids:
                # A string, not a list: a list of two numbers is a group's CPU / wait to readers
                # (bench/settle_slices.py).
                row["kid_sched"] = ", ".join(sorted({sched_of(p) for p in kids}))
            if cmds:
                row["cmd"] = got.get("cmd", {}) if got else {}
            for name, (cpu, wait, flt, allp) in cur.items():
                if name in prev:
                    # A process gone since the last sample takes its totals with it: never < 0.
                    row[name] = [max(cpu - prev[name][0], 0), max(wait - prev[name][1], 0),
                                 max(flt - prev[name][2], 0)]
            if "machine" in prev:
                row["machine"] = [busy - prev["machine"][0], iow - prev["machine"][1]]
            prev = {k: v for k, v in cur.items()}
            prev["machine"] = (busy, iow)
            o.write(json.dumps(row) + "\n")
            n = max(n + 1, int((time.time() - t0) / every) + 1)
        poll.stop.set()
        hist = {}
        latest = resp(sock, "LATENCY", "LATEST") or []
        for ev in latest:
            hist[ev[0]] = resp(sock, "LATENCY", "HISTORY", ev[0])
        ru = resource.getrusage(resource.RUSAGE_SELF)
        o.write(json.dumps({"latency_history": hist, "latency_latest": latest,
                            "latency_doctor": resp(sock, "LATENCY", "DOCTOR"),
                            "thp": thp(),
                            "self_cpu_ms": int((ru.ru_utime + ru.ru_stime) * 1000)}) + "\n")


def thp():
    """The host's transparent huge page settings (Redis copies 2 MiB a fault after a fork
    when they are "always"; it turns them off for itself then, and says so in its log)."""
    out = {}
    for k in ("enabled", "defrag"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{k}") as f:
                out[k] = f.read().strip()
        except OSError:
            out[k] = "?"
    return out


def sampled(inside):
    """The samples in a span and the longest wait on Redis among them: "2, 0.4" (ms); "1 (1 late
    by 240 ms), 512.3"; "none" (the sampler was starved: the next sample's CPU holds the span).
    Samples from before session 25 have no wait figure: "–"."""
    if not inside:
        return "none"
    late = [r["late"] for r in inside if "late" in r]
    out = f"{len(inside)}" + (f" ({len(late)} late by {max(late)} ms)" if late else "")
    waits = [r["redis_ms"] for r in inside if "redis_ms" in r]
    return out + (f", {max(waits):.1f}" if waits else ", –")


def around(rows, lats, edge_ms, what):
    """Per 100 ms from 0.3 s before a rewrite's start or end to 1 s after it: the bets due then
    (count, p99 ms), the sample(s) that fell in it (late ones marked; none: no CPU figure for it,
    the next sample's holds it) and how long Redis kept the sampler waiting, Redis's main
    process's CPU / run-queue wait (ms), its main thread's alone (sampled since session 24) and
    used_memory (MB)."""
    print(f"| {what} + ms | bets due | their p99 ms | samples, Redis answer ms |"
          " Redis main CPU / wait ms |"
          " its main thread's | Redis main minor faults | its child's CPU / wait ms |"
          " EVALSHA calls, µs a call | bets admitted (a call) | used_memory MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    by_t = {r["t"]: i for i, r in enumerate(rows)}
    for k in range(-3, 10):
        lo, hi = edge_ms + 100 * k, edge_ms + 100 * (k + 1)
        xs = [us for due, us in lats if lo <= due < hi]
        inside = [r for r in rows if lo < r["t"] <= hi]
        def tot(g, j):
            return sum(r.get(g, [0, 0])[j] for r in inside) / 1000
        mem = max((r["redis_info"].get("used_memory", 0) for r in inside), default=0) / 2**20
        p99 = f"{pct(xs, 99) / 1000:.1f}" if xs else "–"
        if not inside:  # no sample fell in it: the next one's figures hold it
            print(f"| {100 * k:+d} | {len(xs)} | {p99} | none |" + " – |" * 7)
            continue
        calls = "–"
        adm = "–"
        i0 = by_t[inside[0]["t"]] - 1
        prev, last = (rows[i0] if i0 >= 0 else inside[0]), inside[-1]
        if "cmd" in last and "cmd" in prev:
            c = [a - b for a, b in zip(last["cmd"].get("evalsha", [0, 0]),
                                       prev["cmd"].get("evalsha", [0, 0]))]
            calls = f"{c[0]}, {c[1] / c[0]:.0f}" if c[0] > 0 else "0"
            if "count" in last["redis_info"]:
                n = last["redis_info"]["count"] - prev["redis_info"].get("count", 0)
                adm = f"{n} ({n / c[0]:.0f})" if c[0] > 0 else f"{n}"
        flt = sum(r["redis"][2] for r in inside if len(r.get("redis", [])) > 2)
        thread = (f"{tot('redis-thread', 0):.0f} / {tot('redis-thread', 1):.0f}"
                  if any("redis-thread" in r for r in inside) else "–")
        print(f"| {100 * k:+d} | {len(xs)} | {p99} | {sampled(inside)} |"
              f" {tot('redis', 0):.0f} / {tot('redis', 1):.0f}"
              f" | {thread} | {flt} | {tot('rewrite', 0):.0f} / {tot('rewrite', 1):.0f} | {calls} |"
              f" {adm} | {mem:.0f} |")
    print()


def report(out, lats):
    rows, hist, self_ms, tail = [], {}, None, {}
    with open(out) as f:
        for line in f:
            j = json.loads(line)
            if "latency_history" in j:
                hist = j["latency_history"]
                self_ms = j.get("self_cpu_ms")
                tail = j
            else:
                rows.append(j)
    secs, all_lat = {}, []
    for path in lats:
        for due, us in read_lat(path):
            secs.setdefault(due // 1000, []).append(us)
            all_lat.append((due, us))
    events = {}  # second → ["fork 8 ms", ...] from Redis's latency monitor (1 s resolution)
    for name, h in hist.items():
        for ts, ms in h:
            events.setdefault(int(ts), []).append(f"{name} {ms}")
    skip = ("t", "redis_info", "cmd", "kid_sched", "redis_t", "redis_ms", "late")
    groups = [k for k in (rows[-1] if rows else {}) if k not in skip]
    groups += [g for r in rows for g in r if g not in groups and g not in skip]
    print("| second | bets | p99 ms | max ms | samples, Redis answer ms | AOF rewrite |"
          " Redis latency events (ms) | "
          + " | ".join(f"{GROUP_LABEL.get(g, g)} CPU / wait ms" for g in groups)
          + " | delayed fsyncs | used_memory MB |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(groups) + "---|---|")
    slow, fast = [], []
    first = None
    for s in sorted(secs):
        if len(secs[s]) < 100:
            continue  # the edges of a step
        first = first or s
        inside = [r for r in rows if s * 1000 < r["t"] <= (s + 1) * 1000]
        if not inside:  # no sample in the second: say so (the next one's CPU holds it)
            print(f"| {time.strftime('%H:%M:%S', time.gmtime(s))} | {len(secs[s])} | "
                  f"{pct(secs[s], 99) / 1000:.1f} | {max(secs[s]) / 1000:.1f} | none | – | – | "
                  + " | ".join("–" for _ in groups) + " | – | – |")
            continue
        agg = {g: [sum(r.get(g, [0, 0])[0] for r in inside) / 1000,
                   sum(r.get(g, [0, 0])[1] for r in inside) / 1000] for g in groups}
        rw = max(r["redis_info"].get("aof_rewrite_in_progress", 0) for r in inside)
        kid = sorted({k for r in inside for k in r.get("kid_sched", "").split(", ") if k})
        df = (inside[-1]["redis_info"].get("aof_delayed_fsync", 0)
              - inside[0]["redis_info"].get("aof_delayed_fsync", 0))
        p99 = pct(secs[s], 99) / 1000
        mem = inside[-1]["redis_info"].get("used_memory", 0) / 2**20
        rec = (p99, rw, agg, events.get(s, []))
        (slow if p99 > 50 else fast).append(rec)
        rws = ("yes" + (f" ({', '.join(kid)})" if kid else "")) if rw else ""
        print(f"| {time.strftime('%H:%M:%S', time.gmtime(s))} | {len(secs[s])} | {p99:.1f} | "
              f"{max(secs[s]) / 1000:.1f} | {sampled(inside)} | {rws} | "
              f"{', '.join(events.get(s, []))} | "
              + " | ".join(f"{agg[g][0]:.0f} / {agg[g][1]:.0f}" for g in groups)
              + f" | {df} | {mem:.0f} |")
    print()
    for name, recs in (("p99 > 50 ms", slow), ("the others", fast)):
        if not recs:
            continue
        n = len(recs)
        rw = sum(1 for r in recs if r[1])
        ev = sum(1 for r in recs if any(int(e.split()[-1]) >= 5 for e in r[3]))
        means = ", ".join(f"{GROUP_LABEL.get(g, g)} {sum(r[2][g][0] for r in recs) / n:.0f} / "
                          f"{sum(r[2][g][1] for r in recs) / n:.0f}" for g in groups)
        print(f"- {name}: {n} seconds, {rw} with an AOF rewrite running, {ev} with a Redis "
              f"latency event >= 5 ms; mean CPU / run-queue wait ms per second: {means}")
    if self_ms is not None and rows:
        span_s = (rows[-1]["t"] - rows[0]["t"]) / 1000
        print(f"- the sampler's own CPU: {self_ms} ms over {span_s:.0f} s")
    # Each rewrite's start and end (aof_rewrite_in_progress's edges, at the sampler's 100 ms)
    # within the bets' span, per 100 ms: which part of a rewrite the slow bets were due in.
    if all_lat and rows:
        t0, t1 = min(d for d, _ in all_lat), max(d for d, _ in all_lat)
        prev = rows[0]["redis_info"].get("aof_rewrite_in_progress", 0)
        edges = []
        for r in rows[1:]:
            cur = r["redis_info"].get("aof_rewrite_in_progress", 0)
            if cur != prev and t0 <= r["t"] <= t1:
                edges.append((r["t"], "start" if cur else "end",
                              r["redis_info"].get("latest_fork_usec", 0)))
            prev = cur
        for t, what, fork in edges:
            print(f"Rewrite {what} seen at {time.strftime('%H:%M:%S', time.gmtime(t // 1000))}"
                  f".{t % 1000:03d} (sampled every 100 ms; latest_fork_usec {fork}):")
            print()
            around(rows, all_lat, t - 100, what)
    if tail.get("latency_latest"):
        print("Redis's LATENCY LATEST at the end (event, time, latest ms, all-time max ms): "
              + "; ".join(f"{e[0]} {e[2]} / {e[3]}" for e in tail["latency_latest"]))
        print()
    if tail.get("thp"):
        print(f"Transparent huge pages: enabled {tail['thp'].get('enabled')}, defrag "
              f"{tail['thp'].get('defrag')}.")
        print()
    if tail.get("latency_doctor"):
        print("<details><summary>LATENCY DOCTOR</summary>\n\n```")
        print(tail["latency_doctor"].strip())
        print("```\n</details>")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "sample":
        port, groups, every, cmds, count = None, {}, 100, False, None
        a = sys.argv[3:]
        while a:
            if a[0] == "--commandstats":
                cmds, a = True, a[1:]
                continue
            k, v = a[0], a[1]
            a = a[2:]
            if k == "--redis":
                port = int(v)
            elif k == "--group":
                name, _, pids = v.partition("=")
                groups[name] = (pids if pids.split(":")[0] in ("comm", "own", "kids", "tid")
                                else [int(p) for p in pids.split(",") if p])
            elif k == "--count":
                count = v
            elif k == "--every":
                every = int(v)
        sample(sys.argv[2], port, groups, every, cmds, count)
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
