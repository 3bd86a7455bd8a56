#!/usr/bin/python3
"""A settlement's pages over time, from tickpool's `settle page` lines (log level debug; the
leader logs one per page: the size it was sent with, the bets it credited, its Redis time `us`
as the script measured it, the round trip `rtt_us`, the next size the pager chose, the pages
kept in flight and the pacing gap before the next). Prints a markdown table of the round's pages
in tenths, in the order they ran: how the page size followed Redis's time per page.

    bench/settle_pages.py --round 1 tickpool.log     # bench/run settle-100k --settle-pages
"""

import argparse
import re


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("log")
    a = ap.parse_args()
    rows = []
    with open(a.log, errors="replace") as f:
        for line in f:
            if 'msg="settle page"' not in line or f" round={a.round} " not in line:
                continue
            v = {k: int(x) for k, x in re.findall(r" (\w+)=(-?\d+)", line.split('msg="settle page"')[1])}
            rows.append(v)
    if not rows:
        print(f"No `settle page` lines for round {a.round} (they are logged at level debug).")
        return
    n = len(rows)
    cred, us = sum(r["credited"] for r in rows), sum(r["us"] for r in rows)
    print(f"Pages of round {a.round} (`settle page` lines): {n} pages, {cred:,} bets credited, "
          f"{cred / n:.0f} per page; Redis time in pages {us / 1000:.0f} ms "
          f"({us * 1000 / max(cred, 1):.0f} ns per bet); after {sum(r['gap_us'] > 0 for r in rows)} "
          f"of them the pacing asked for a gap. In tenths of the pages, in order:")
    print()
    print("| pages | size sent | credited | µs per page | ns per bet | lowest ns per bet | round trip µs | next size (last) |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(10):
        part = rows[i * n // 10:(i + 1) * n // 10]
        if not part:
            continue
        c, u = sum(r["credited"] for r in part), sum(r["us"] for r in part)
        per = [r["us"] * 1000 // r["credited"] for r in part if r["credited"] >= 16]
        m = len(part)
        print(f"| {i * n // 10 + 1}–{i * n // 10 + m} | {sum(r['size'] for r in part) / m:.0f} "
              f"| {c / m:.0f} | {u / m:.0f} | {u * 1000 / max(c, 1):.0f} | {min(per) if per else '–'} "
              f"| {sum(r['rtt_us'] for r in part) / m:.0f} | {part[-1]['next']} |")


if __name__ == "__main__":
    main()
