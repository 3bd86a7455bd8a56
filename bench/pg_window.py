#!/usr/bin/env python3
"""Where Postgres's CPU in a window goes (bench/run --pg-statements; bench/README.md, Writer,
"Session 18").

  pg_window.py snap URL PM_PID OUT.json    before the window: every Postgres process's CPU
                                           ticks, xact_commit, WAL and checkpoint counters,
                                           bets rows inserted; pg_stat_statements reset
  pg_window.py report URL PM_PID SNAP.json [per-row]
                                           after it: markdown (CPU per process by backend
                                           type and last statement; WAL records, full-page
                                           images and bytes; checkpoints; statements by time,
                                           with calls and rows per call); with per-row, CPU
                                           and WAL also a bets row inserted in the window
                                           (the bets scenarios; settlement's window updates)

CPU is /proc's utime + stime of the postmaster's children (1/100 s ticks). A process that
ended inside the window (an autovacuum worker) is counted through the postmaster's cutime +
cstime, which the kernel adds it to when the postmaster reaps it; one that started inside the
window counts whole. WAL is pg_stat_wal's (Postgres 14+), checkpoints pg_stat_bgwriter's.
Statements need the server started with shared_preload_libraries = pg_stat_statements and the
extension created (bench/run does both with --pg-statements).
"""
import json
import os
import subprocess
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


def sql(url, q):
    out = subprocess.run(["psql", "-XAtq", "-F", "\t", url, "-c", q], capture_output=True,
                         text=True, check=False)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def ticks(pid, reaped=False):
    """utime + stime of PID, or with reaped its ended children's (cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[13]) + int(rest[14]) if reaped else int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


def children(pm):
    try:
        with open(f"/proc/{pm}/task/{pm}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        out = subprocess.run(["pgrep", "-P", str(pm)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def snap(url, pm):
    procs = {}
    for pid in [pm] + children(pm):
        t = ticks(pid)
        if t is not None:
            procs[str(pid)] = t
    commits = sql(url, "SELECT xact_commit FROM pg_stat_database "
                       "WHERE datname = current_database()")
    # The cluster's WAL (pg_stat_wal, Postgres 14+), checkpoints begun, and the bets rows
    # inserted (pg_stat_user_tables: counts without reading the table).
    wal = sql(url, "SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint, "
                   "b.checkpoints_timed, b.checkpoints_req, "
                   "coalesce((SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'bets'), 0) "
                   "FROM pg_stat_wal w, pg_stat_bgwriter b")
    keys = ("wal_records", "wal_fpi", "wal_bytes", "ckpt_timed", "ckpt_req", "bets_ins")
    return {"procs": procs, "reaped": ticks(pm, reaped=True) or 0,
            "commits": int(commits[0][0]) if commits else 0,
            **{k: int(v) for k, v in zip(keys, wal[0] if wal else [0] * len(keys))}}


def main():
    mode, url, pm = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "snap":
        s = snap(url, pm)
        sql(url, "SELECT pg_stat_statements_reset()")
        with open(sys.argv[4], "w") as f:
            json.dump(s, f)
        return
    with open(sys.argv[4]) as f:
        s0 = json.load(f)
    # Who each process is: pg_stat_activity (backends, autovacuum, background processes).
    who = {}
    for pid, btype, app, query in sql(
            url, "SELECT pid, backend_type, coalesce(application_name, ''), "
                 "left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 48) "
                 "FROM pg_stat_activity"):
        who[pid] = (btype, app, query)
    s1 = snap(url, pm)
    rows, total = [], 0
    for pid, t0 in s0["procs"].items():
        if pid not in s1["procs"]:
            total -= t0  # its whole CPU is in the reaped ticks below
    for pid, t1 in s1["procs"].items():
        d = t1 - s0["procs"].get(pid, 0)
        total += d
        btype, app, query = who.get(pid, ("postmaster" if int(pid) == pm else "?", "", ""))
        rows.append((d, pid, btype, app, query))
    reaped = s1["reaped"] - s0["reaped"]
    total += reaped
    rows.append((reaped, "–", "ended inside the window (autovacuum workers, …)", "", ""))
    rows.sort(reverse=True)
    n = s1["bets_ins"] - s0["bets_ins"] if sys.argv[5:6] == ["per-row"] else 0
    print(f"Postgres processes' CPU over the window: {total / CLK_TCK:.2f} s; transactions "
          f"committed (`xact_commit`): {s1['commits'] - s0['commits']:,}; bets rows inserted "
          f"{s1['bets_ins'] - s0['bets_ins']:,}.")
    print()
    col = " µs a bets row |" if n > 0 else ""
    print(f"| CPU s |{col} pid | backend type | application | last statement |")
    print("|---|---|---|---|---|" + ("---|" if n > 0 else ""))
    for d, pid, btype, app, query in rows:
        if d == 0:
            continue
        query = query.replace("|", "\\|")
        per = f" {d / CLK_TCK * 1e6 / n:.2f} |" if n > 0 else ""
        print(f"| {d / CLK_TCK:.2f} |{per} {pid} | {btype} | {app} | `{query}` |")
    print()
    d = {k: s1[k] - s0[k] for k in ("wal_records", "wal_fpi", "wal_bytes", "ckpt_timed", "ckpt_req")}
    per = (lambda k: f"{d[k] / n:.2f}") if n > 0 else (lambda k: "–")
    a_row = (f"; **a bets row: {per('wal_records')} records, {per('wal_fpi')} full-page "
             f"images, {per('wal_bytes')} B**") if n > 0 else ""
    print(f"WAL over the window (pg_stat_wal): {d['wal_records']:,} records, {d['wal_fpi']:,} "
          f"full-page images, {d['wal_bytes'] / 1e6:.1f} MB{a_row}; checkpoints begun in it: "
          f"{d['ckpt_timed']} timed, {d['ckpt_req']} requested (pg_stat_bgwriter).")
    print()
    stmts = sql(url, "SELECT calls, rows, round(total_exec_time::numeric, 1), "
                     "round(total_plan_time::numeric, 1), "
                     "left(regexp_replace(query, '\\s+', ' ', 'g'), 70) "
                     "FROM pg_stat_statements "
                     "ORDER BY total_exec_time + total_plan_time DESC LIMIT 16")
    if not stmts:
        print("pg_stat_statements: nothing (not loaded).")
        return
    print("pg_stat_statements over the window (wall time inside the statement, by total):")
    print()
    print("| calls | rows | rows per call | exec ms | plan ms | statement |")
    print("|---|---|---|---|---|---|")
    for calls, nrows, ex, pl, q in stmts:
        c, r = int(calls), int(nrows)
        q = q.replace("|", "\\|")
        print(f"| {c:,} | {r:,} | {r / max(c, 1):.1f} | {ex} | {pl} | `{q}` |")


if __name__ == "__main__":
    main()
