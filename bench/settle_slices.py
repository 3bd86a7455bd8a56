#!/usr/bin/env python3
"""settle-100k --seconds: what Redis and the processes did beside the bets, slice by slice.

  settle_slices.py SECONDS BASE_LAT SETTLE_LAT --close MS --settled MS [--slice MS] [--window S]

SECONDS is bench/seconds.py's sample as bench/run's seconds_start takes it (--commandstats:
every 100 ms, Redis's INFO commandstats and each group's CPU, run-queue wait and minor faults:
"redis" is Redis's main process alone, "rewrite" its AOF rewrite child); BASE_LAT and
SETTLE_LAT are loadgen --latencies files (a bet's due time in wall ms, its latency in µs) of the
baseline and settlement windows.
Prints, for the baseline (the mean of its slices) and each slice from the close: the bets due
in it (p50, p99), each group's CPU / wait, and Redis's commands (calls, ms inside them); then
per command, the baseline against the settlement (close → "round settled") and the rest of
the window, per second.
"""
import json
import sys

from benchlib import GROUP_LABEL, pct, read_lat


def span(rows, t0, t1):
    """Groups' CPU / wait (µs) and commands' [calls, usec] deltas over the rows in (t0, t1]."""
    inside = [r for r in rows if t0 < r["t"] <= t1]
    before = [r for r in rows if r["t"] <= t0]
    if not inside or not before:
        return None
    grp = {}
    for r in inside:
        for k, v in r.items():
            if isinstance(v, list) and len(v) >= 2:  # CPU, wait (a process group: + faults)
                g = grp.setdefault(k, [0, 0])
                g[0] += v[0]
                g[1] += v[1]
    a, b = before[-1].get("cmd", {}), inside[-1].get("cmd", {})
    cmd = {k: [v[0] - a.get(k, [0, 0])[0], v[1] - a.get(k, [0, 0])[1]] for k, v in b.items()}
    ms = inside[-1]["t"] - before[-1]["t"]
    return {"grp": grp, "cmd": {k: v for k, v in cmd.items() if v[0] > 0}, "ms": ms}


def main():
    a = sys.argv[1:]
    opts = {"--slice": "500", "--window": "10"}
    pos = []
    while a:
        if a[0].startswith("--"):
            opts[a[0]], a = a[1], a[2:]
        else:
            pos, a = pos + [a[0]], a[1:]
    if len(pos) != 3 or "--close" not in opts or "--settled" not in opts:
        sys.exit(__doc__)
    rows = []
    with open(pos[0]) as f:
        for line in f:
            j = json.loads(line)
            if "t" in j:
                rows.append(j)
    base, sett = read_lat(pos[1]), read_lat(pos[2])
    close, settled = int(opts["--close"]), int(opts["--settled"])
    sl, win = int(opts["--slice"]), float(opts["--window"])
    groups = [g for g in ("redis", "rewrite", "tickpool", "postgres", "machine")
              if any(g in r for r in rows)]
    # The baseline's slices: from its first bet due to its last, cut into slices.
    bslices = []
    if base:
        t = min(d for d, _ in base)
        end = max(d for d, _ in base)
        while t + sl <= end:
            s = span(rows, t, t + sl)
            lat = [u for d, u in base if t <= d < t + sl]
            if s and lat:
                bslices.append((s, lat))
            t += sl
    top = {}
    for s, _ in bslices:
        for k, v in s["cmd"].items():
            top[k] = top.get(k, 0) + v[1]
    sslices = []
    for i in range(int(win * 1000 / sl)):
        t = close + i * sl
        s = span(rows, t, t + sl)
        lat = [u for d, u in sett if t <= d < t + sl]
        if s:
            sslices.append((i, s, lat))
            for k, v in s["cmd"].items():
                top[k] = top.get(k, 0) + v[1]
    cmds = [k for k, _ in sorted(top.items(), key=lambda kv: -kv[1])][:7]
    print(f"Per {sl} ms (bench/seconds.py every 100 ms: the slices' edges are ±100 ms): each "
          "group's CPU / run-queue wait in ms (redis main: Redis's main process alone; rewrite: "
          "its AOF rewrite child), and Redis's commands: calls / ms inside them "
          "(a command a script calls counted again inside `evalsha`).")
    print()
    print("| slice | bets | p50 ms | p99 ms | "
          + " | ".join(f"{GROUP_LABEL.get(g, g)} CPU / wait" for g in groups)
          + " | " + " | ".join(f"`{c}`" for c in cmds) + " |")
    print("|---|---|---|---|" + "---|" * (len(groups) + len(cmds)))

    def row(name, ss, lat):
        n = len(ss)
        g = {k: [sum(s["grp"].get(k, [0, 0])[0] for s in ss) / n / 1000,
                 sum(s["grp"].get(k, [0, 0])[1] for s in ss) / n / 1000] for k in groups}
        c = {k: [sum(s["cmd"].get(k, [0, 0])[0] for s in ss) / n,
                 sum(s["cmd"].get(k, [0, 0])[1] for s in ss) / n / 1000] for k in cmds}
        print(f"| {name} | {len(lat) / n:.0f} | {pct(lat, 50) / 1000:.2f} | {pct(lat, 99) / 1000:.2f} | "
              + " | ".join(f"{g[k][0]:.0f} / {g[k][1]:.0f}" for k in groups) + " | "
              + " | ".join(f"{c[k][0]:.0f} / {c[k][1]:.1f}" for k in cmds) + " |")
    if bslices:
        row(f"baseline, mean of {len(bslices)}", [s for s, _ in bslices],
            [u for _, lat in bslices for u in lat])
    for i, s, lat in sslices:
        mark = " (settling)" if close + i * sl < settled else ""
        row(f"+{i * sl / 1000:.1f} s{mark}", [s], lat)
    print()
    # Per command per second: baseline, the settlement itself, the rest of the window.
    parts = [("baseline", [s for s, _ in bslices])]
    d = span(rows, close, settled)
    if d:
        parts.append(("settlement", [d]))
    r = span(rows, settled, close + int(win * 1000))
    if r:
        parts.append(("after it", [r]))
    allc = sorted({k for _, ss in parts for s in ss for k in s["cmd"]},
                  key=lambda k: -sum(s["cmd"].get(k, [0, 0])[1] for _, ss in parts for s in ss))
    print("Redis commands per second of each part (calls, ms inside them, µs a call):")
    print()
    print("| command | " + " | ".join(n for n, _ in parts) + " |")
    print("|---|" + "---|" * len(parts))
    for k in allc[:12]:
        cells = []
        for _, ss in parts:
            ms = sum(s["ms"] for s in ss) or 1
            calls = sum(s["cmd"].get(k, [0, 0])[0] for s in ss)
            us = sum(s["cmd"].get(k, [0, 0])[1] for s in ss)
            cells.append(f"{calls * 1000 / ms:,.0f} / {us / ms:.1f} / {us / calls if calls else 0:.0f}")
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
