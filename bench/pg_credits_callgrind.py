#!/usr/bin/python3
"""Postgres instructions per credit inside the writer's credits statements, under callgrind.

The credits' statements of a tree's src/store/pgw_batch.c (its TP_PGW_PAYOUTS entry of
table_sql, and payouts_strict where the tree has it: a fresh batch's first try) against a
settle-100k-shaped database: one round of 2 x WINNERS bets of PLAYERS players (the winners on
band 1), then the round's WINNERS credits in batches of ROWS, each batch the statements a fresh
batch's transaction runs, prepared as the writer prepares them and executed with the batch's
JSON array (the writer's bytes: every value a JSON string). Instruction counts do not drift
with the machine's load as CPU times do (bench/pg_insert_callgrind.py, the bets' twin).

Makes a scratch cluster (bench/callgrind_pg.py: initdb as the postgres user), applies the tree's
migrations/*.sql in order (one transaction each), loads the bets, stops it, then runs a
single-user backend under `valgrind --tool=callgrind --toggle-collect=ExecuteQuery` that
PREPAREs the statements and EXECUTEs every batch in a transaction, and prints the instructions
counted inside EXECUTE divided by the credits. Then it checks that every credit is in `payouts`
once and every winner 'won' with its amount.

    bench/pg_credits_callgrind.py                        # this tree's statements
    bench/pg_credits_callgrind.py --tree /path/to/other  # another tree's, same data

Needs valgrind and Postgres 15 (PG_BIN). About two minutes for 20,000 credits.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from callgrind_pg import ScratchPostgres, c_strings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def credits_statements(tree):
    """The statements a fresh batch of credits runs in the tree's pgw_batch.c, macros expanded:
    payouts_strict when the tree has it, else table_sql[TP_PGW_PAYOUTS]'s (one or two)."""
    src = open(os.path.join(tree, "src/store/pgw_batch.c")).read()
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    macros = {m.group(1): c_strings(m.group(2))
              for m in re.finditer(r"#define (PAYOUTS_\w+)((?:.*\\\n)*.*)\n", src)}

    def expand(body):
        """The statements of a C initialiser's body (separated by commas between literals)."""
        out = [""]
        for n, lit, comma in re.findall(r'(PAYOUTS_\w+)|"((?:[^"\\]|\\.)*)"|(,)', body):
            if comma:
                out.append("")
            else:
                out[-1] += macros[n] if n else lit.replace('\\"', '"')
        return [x for x in out if x]
    m = re.search(r"payouts_strict\[\] =(.*?);", src, re.S)
    if m:
        return expand(m.group(1))
    m = re.search(r"\[TP_PGW_PAYOUTS\] =\s*\{(.*?)\},\n", src, re.S)
    if m is None:
        sys.exit(f"no TP_PGW_PAYOUTS statements in {tree}/src/store/pgw_batch.c")
    return expand(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the tree whose statements and migrations run")
    ap.add_argument("--winners", type=int, default=20000)
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--rows", type=int, default=5000, help="credits a batch")
    ap.add_argument("--port", type=int, default=20498, help="the load's server (loopback)")
    a = ap.parse_args()
    stmts = credits_statements(a.tree)
    with ScratchPostgres(a.tree, a.port, "pgcr-") as pg:
        # settle-100k's round: bets interleaved winner (band 1), loser (band 0), 100 each.
        pg.psql("-c", f"""
            INSERT INTO bets (id, round_id, user_id, band, stake, idempotency_key, placed_at)
            SELECT (1000000 + g)::text, 1, 1 + g % {a.players}, g % 2, 100, 'k' || g,
                   1765000000000 + g
            FROM generate_series(0, {2 * a.winners - 1}) g""", "-c", "VACUUM ANALYZE",
                "-c", "CHECKPOINT", stdout=subprocess.DEVNULL)
        pg.stop()

        winners = [1000000 + g for g in range(1, 2 * a.winners, 2)]
        lines = [f"PREPARE s{i} AS {s}" for i, s in enumerate(stmts)]
        for k in range(0, len(winners), a.rows):
            rows = [{"id": f"payout:{b}", "bet_id": str(b),
                     "user_id": str(1 + (b - 1000000) % a.players), "round_id": "1",
                     "amount": str(190 + b % 7), "kind": "win"} for b in winners[k:k + a.rows]]
            arg = json.dumps(rows, separators=(",", ":")).replace("'", "''")
            lines.append("BEGIN")
            lines += [f"EXECUTE s{i}('{arg}')" for i in range(len(stmts))]
            lines.append("COMMIT")
        t0 = time.time()
        ir = pg.callgrind(lines)

        # The money: every credit once, every winner won with its amount, no loser touched.
        pg.start()
        got = pg.psql("-At", "-c", """
            SELECT (SELECT count(*) FROM payouts),
                   (SELECT count(DISTINCT bet_id) FROM payouts),
                   (SELECT count(*) FROM bets b JOIN payouts p ON p.bet_id = b.id
                    WHERE b.status = 'won' AND b.payout = p.amount),
                   (SELECT count(*) FROM bets WHERE band = 0 AND status <> 'pending')""",
                      capture_output=True, text=True).stdout.strip()
        pg.stop()
        n = len(winners)
        if got != f"{n}|{n}|{n}|0":
            sys.exit(f"Postgres holds other credits than the batches': {got}")
        print("statements: " + "\n            ".join(stmts))
        print(f"{2 * a.winners} bets of {a.players} players, {n} credits in batches of "
              f"{a.rows} ({time.time() - t0:.0f} s under callgrind); credits checked")
        print(f"instructions inside EXECUTE: {ir:,}; a credit: {ir / n:,.0f}")


if __name__ == "__main__":
    main()
