#!/usr/bin/python3
"""Postgres instructions per bets row inside the writer's bets INSERT, under callgrind.

Instruction counts do not drift with the machine's load as CPU times do, so two statement
texts (two trees, or a text against a collation) compare within a fraction of a percent. The
statement is the writer's first try at a fresh batch (src/store/pgw_batch.c,
bets_insert_strict), read from a tree's source, prepared as the writer prepares it (no
parameter types: the $n casts give them) and executed with the column arrays as the writer
sends them (text array literals).

Makes a scratch cluster (bench/callgrind_pg.py: initdb as the postgres user; `--collate C` for a
"C" database), applies the tree's migrations/*.sql in order (one transaction each, as `tickpool
migrate` does), preloads PRELOAD bets of PLAYERS players (md5 idempotency keys: a random leaf of
bets_user_key_round a row), stops it, then runs a single-user backend under `valgrind
--tool=callgrind --toggle-collect=ExecuteQuery` that PREPAREs the statement and EXECUTEs BATCHES
batches of ROWS new bets, and prints the instructions counted inside EXECUTE divided by the rows
inserted (the batches' arguments are parsed inside EXECUTE, as the writer's are inside its
Bind). Then it checks that every row went in once with its columns.

    bench/pg_insert_callgrind.py                          # this tree's statement
    bench/pg_insert_callgrind.py --tree /path/to/other    # another tree's, same data
    bench/pg_insert_callgrind.py --collate C --keep /tmp/cg.out

Needs valgrind and Postgres 15 (PG_BIN). About a minute for 20 batches of 1,000 rows.
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time

from callgrind_pg import ScratchPostgres, c_strings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def writer_statement(tree):
    """bets_insert_strict of the tree's pgw_batch.c, its macros expanded."""
    src = open(os.path.join(tree, "src/store/pgw_batch.c")).read()
    macros = {}
    for m in re.finditer(r"#define (BETS_\w+)((?:.*\\\n)*.*)\n", src):
        macros[m.group(1)] = c_strings(m.group(2))
    m = re.search(r"bets_insert_strict\[\] =(.*?);", src, re.S)
    if m is None:
        sys.exit(f"no bets_insert_strict in {tree}/src/store/pgw_batch.c")
    parts = re.findall(r'(BETS_\w+)|"((?:[^"\\]|\\.)*)"', m.group(1))
    return "".join(macros[name] if name else lit.replace('\\"', '"') for name, lit in parts)


def bet(i, players):
    """Bet number i: the columns in the writer's order (id, round, user, band, stake, key,
    placed_at, balance)."""
    user = 100000 + (i * 7919) % players
    return (str(1000000 + i), "2", str(user), str(i % 5), "100",
            hashlib.md5(str(i).encode()).hexdigest(), str(1765000000000 + i), "100000")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the tree whose statement and migrations run")
    ap.add_argument("--collate", default=None, help="initdb --lc-collate (default: the host's)")
    ap.add_argument("--preload", type=int, default=300000)
    ap.add_argument("--players", type=int, default=20000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--port", type=int, default=20499, help="the preload's server (loopback)")
    ap.add_argument("--keep", help="keep the callgrind profile here")
    a = ap.parse_args()
    sql = writer_statement(a.tree)
    with ScratchPostgres(a.tree, a.port, "pgcg-", a.collate) as pg:
        # The preload: the same generator's first PRELOAD bets, one INSERT.
        pg.psql("-c", f"""
            INSERT INTO bets (id, round_id, user_id, band, stake, idempotency_key, placed_at,
                              balance_after)
            SELECT (1000000 + i)::text, 2, 100000 + (i * 7919) % {a.players}, i % 5, 100,
                   md5(i::text), 1765000000000 + i, 100000
            FROM generate_series(1::bigint, {a.preload}) i""", "-c", "VACUUM ANALYZE bets",
                "-c", "CHECKPOINT", stdout=subprocess.DEVNULL)
        pg.stop()

        lines = [f"PREPARE ins AS {sql}"]
        i = a.preload
        for _ in range(a.batches):
            cols = [[] for _ in range(8)]
            for _ in range(a.rows):
                i += 1
                for c, v in zip(cols, bet(i, a.players)):
                    c.append(v)
            # As pgw_batch.c writes them: the text columns' elements quoted.
            lits = ["{" + ",".join(f'"{v}"' if k in (0, 5) else v for v in c) + "}"
                    for k, c in enumerate(cols)]
            lines.append("EXECUTE ins(" + ", ".join(f"'{x}'" for x in lits) + ")")
        t0 = time.time()
        ir = pg.callgrind(lines, a.keep)
        rows = a.batches * a.rows

        # The money: every row in once, with its columns.
        pg.start()
        want = hashlib.md5()
        for j in range(a.preload + 1, a.preload + rows + 1):
            want.update((",".join(bet(j, a.players)) + "\n").encode())
        got = pg.psql("-At", "-c", f"""
            SELECT count(*), md5(string_agg(concat_ws(',', id, round_id, user_id, band, stake,
                idempotency_key, placed_at, balance_after) || E'\\n', '' ORDER BY placed_at))
            FROM bets WHERE placed_at > 1765000000000 + {a.preload}""",
                      capture_output=True, text=True).stdout.split("|")
        pg.stop()
        if int(got[0]) != rows or got[1].strip() != want.hexdigest():
            sys.exit(f"rows in Postgres differ from the batches': {got[0]} rows, md5 {got[1]}")
        print(f"statement: {sql}")
        print(f"collation: {a.collate or 'host default'}; preload {a.preload} bets of "
              f"{a.players} players; {a.batches} batches x {a.rows} rows "
              f"({time.time() - t0:.0f} s under callgrind); rows checked")
        print(f"instructions inside EXECUTE: {ir:,}; a row: {ir / rows:,.0f}")

if __name__ == "__main__":
    main()
