"""`tickpool migrate` against a private Postgres: applies every migration once, is idempotent,
refuses a changed migration, rolls back a failing one, serialises concurrent runs, and the
0001_init schema enforces its money rules."""

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile

import tpclient
import tpenv

MIGRATIONS = os.path.join(tpenv.SRC, "migrations")


def files():
    return sorted(f[:-4] for f in os.listdir(MIGRATIONS) if f.endswith(".sql"))


def migrate(pg_url, mdir=None, timeout=60):
    env = dict(os.environ)
    env["TICKPOOL_POSTGRES_URL"] = pg_url
    env["TICKPOOL_SERVER_VAR_DIR"] = tempfile.gettempdir()
    env.pop("TP_MIGRATIONS_DIR", None)
    if mdir is not None:
        env["TP_MIGRATIONS_DIR"] = mdir
    return subprocess.run([tpenv.BIN, "migrate"], cwd=tpenv.SRC, env=env, capture_output=True,
                          text=True, timeout=timeout)


def copy_migrations():
    d = tempfile.mkdtemp(prefix="tp-mig-")
    for f in os.listdir(MIGRATIONS):
        if f.endswith(".sql"):
            shutil.copy(os.path.join(MIGRATIONS, f), d)
    return d


@contextlib.contextmanager
def migrated_below(first):
    """A private Postgres with only the migrations numbered below `first` (e.g. "0008")
    applied, the last of them included and `first` not: a database an older version filled,
    for the migration `first` to run on."""
    d = tempfile.mkdtemp(prefix="tp-mig-")
    try:
        for f in os.listdir(MIGRATIONS):
            if f.endswith(".sql") and f < first:
                shutil.copy(os.path.join(MIGRATIONS, f), d)
        with tpenv.Postgres() as pg:
            r = migrate(pg.url, d)
            last = max(f for f in files() if f < first)
            assert r.returncode == 0 and f"applying {last}" in r.stdout, r.stdout + r.stderr
            assert f"applying {first}" not in r.stdout, r.stdout
            yield pg
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def long_read(pg, table, seconds):
    """A read of `table` (an audit's sums) holding its lock for `seconds` while the block runs:
    a migration that must lock the table out waits for it."""
    reader = subprocess.Popen(["psql", pg.url, "-qXAt", "-c",
                               f"SELECT count(*) FROM {table}; SELECT pg_sleep({seconds})"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tpenv.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            f"WHERE c.relname = '{table}' AND l.pid <> pg_backend_pid()") != [["0"]],
            what=f"the long read holds its lock on {table}")
        yield
    finally:
        reader.wait(timeout=30)


@contextlib.contextmanager
def gives_way_to_a_long_read(pg, table, name, seconds=8):
    """Migration `name` (the first pending one) run while a read of `table` holds its lock: it
    fails after its lock_timeout with nothing applied (the schema stays one below it); the
    block checks more while the read still runs."""
    with long_read(pg, table, seconds):
        r = migrate(pg.url)
        assert r.returncode != 0, r.stdout + r.stderr
        assert name in r.stderr and "lock timeout" in r.stderr, r.stderr
        assert pg.psql("SELECT max(version) FROM schema_migrations") == [[str(int(name[:4]) - 1)]]
        yield


def test_applies_all_then_nothing():
    with tpenv.Postgres() as pg:
        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        for name in files():
            assert f"applying {name} ... ok" in r.stdout, r.stdout
        assert f"{len(files())} applied, 0 already applied" in r.stdout, r.stdout

        rows = pg.psql("SELECT version, name, length(checksum) FROM schema_migrations ORDER BY 1")
        assert [row[1] for row in rows] == files()
        assert all(row[2] == "64" for row in rows)
        tables = {row[0] for row in pg.psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        for t in ("users", "grants", "rounds", "bets", "payouts", "ledger", "schema_migrations"):
            assert t in tables, tables

        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "applying" not in r.stdout, r.stdout
        assert f"0 applied, {len(files())} already applied" in r.stdout, r.stdout
        assert len(pg.psql("SELECT 1 FROM schema_migrations")) == len(files())


def test_changed_migration_is_refused():
    d = copy_migrations()
    try:
        with tpenv.Postgres() as pg:
            assert migrate(pg.url, d).returncode == 0
            with open(os.path.join(d, "0001_init.sql"), "a") as f:
                f.write("\n-- edited after it was applied\n")
            with open(os.path.join(d, "0999_later.sql"), "w") as f:
                f.write("CREATE TABLE later_table (x int);\n")
            r = migrate(pg.url, d)
            assert r.returncode != 0, r.stdout
            assert "0001_init.sql" in r.stderr and "changed" in r.stderr, r.stderr
            # Nothing newer was applied on top of the mismatch.
            assert pg.psql("SELECT to_regclass('later_table') IS NULL") == [["t"]]
            assert pg.psql("SELECT count(*) FROM schema_migrations WHERE version = 999") == [["0"]]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_failing_migration_rolls_back_and_names_the_file():
    d = copy_migrations()
    try:
        with tpenv.Postgres() as pg:
            bad = os.path.join(d, "0998_broken.sql")
            with open(bad, "w") as f:
                f.write("CREATE TABLE half_done (x int);\nSELECT 1 / 0;\n")
            r = migrate(pg.url, d)
            assert r.returncode != 0, r.stdout
            assert "0998_broken.sql" in r.stderr and "division by zero" in r.stderr, r.stderr
            assert "applying 0998_broken ... FAILED" in r.stdout, r.stdout
            # The earlier files stay applied; the broken one left nothing behind.
            assert pg.psql("SELECT to_regclass('half_done') IS NULL") == [["t"]]
            assert pg.psql("SELECT count(*) FROM schema_migrations WHERE version = 998") == [["0"]]
            assert pg.psql("SELECT count(*) FROM schema_migrations")[0][0] == str(len(files()))
            with open(bad, "w") as f:
                f.write("CREATE TABLE half_done (x int);\n")
            r = migrate(pg.url, d)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "applying 0998_broken ... ok" in r.stdout
            assert "1 applied" in r.stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_concurrent_runs_apply_each_file_once():
    with tpenv.Postgres() as pg:
        env = dict(os.environ, TICKPOOL_POSTGRES_URL=pg.url)
        env.pop("TP_MIGRATIONS_DIR", None)
        procs = [subprocess.Popen([tpenv.BIN, "migrate"], cwd=tpenv.SRC, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        applied = sum(o.count("... ok") for o, _ in outs)
        assert applied == len(files()), outs
        assert len(pg.psql("SELECT 1 FROM schema_migrations")) == len(files())


def test_bad_file_name_and_unreachable_database():
    d = tempfile.mkdtemp(prefix="tp-mig-")
    try:
        with open(os.path.join(d, "init.sql"), "w") as f:
            f.write("SELECT 1;\n")
        with tpenv.Postgres() as pg:
            r = migrate(pg.url, d)
            assert r.returncode != 0
            assert "init.sql" in r.stderr and "NNNN_name.sql" in r.stderr, r.stderr
        port = tpenv.free_port()
        r = migrate(f"postgresql://postgres@127.0.0.1:{port}/nope?connect_timeout=2")
        assert r.returncode != 0
        assert "cannot connect" in r.stderr, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_schema_rules():
    with tpenv.Postgres() as pg:
        assert migrate(pg.url).returncode == 0

        def refused(sql):
            try:
                pg.psql(sql)
            except RuntimeError:
                return True
            return False

        pg.psql("INSERT INTO users (id, username, password_hash) VALUES (1, 'Alice', 'h')")
        assert refused("INSERT INTO users (id, username, password_hash) VALUES (2, 'alice', 'h')")
        assert refused("INSERT INTO users (id, username, password_hash) VALUES (3, 'a b', 'h')")
        # Money is integral minor units: a fraction sent as a text parameter (as the writer
        # sends values) and negative stakes are refused.
        assert refused("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                       "placed_at) VALUES ('b1', 1, 1, 0, '1.5', 'k', 0)")
        assert refused("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                       "placed_at) VALUES ('b1', 1, 1, 0, -100, 'k', 0)")
        pg.psql("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                "placed_at) VALUES ('b1', 1, 1, 0, 100, 'k', 0)")
        assert refused("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                       "placed_at) VALUES ('b2', 1, 1, 0, 100, 'k', 0)")
        # …but a key Redis forgot after 24 h may name a new bet in a later round (0002).
        pg.psql("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                "placed_at) VALUES ('b3', 1, 2, 0, 100, 'k', 0)")
        # A settled round's receipt must add up.
        seed_hash = "ab" * 32
        assert refused("INSERT INTO rounds (id, state, opens_at, locks_at, closes_at, "
                       "band_edges_bps, rake_bps, seed_hash, total, winning_stake, rake, "
                       "breakage, payouts, refunds) VALUES (1, 'settled', 0, 1, 2, "
                       f"'{{-10,10}}', 300, '{seed_hash}', 1000, 500, 30, 1, 900, 0)")
        pg.psql("INSERT INTO rounds (id, state, opens_at, locks_at, closes_at, band_edges_bps, "
                "rake_bps, seed_hash, total, winning_stake, rake, breakage, payouts, refunds) "
                f"VALUES (1, 'settled', 0, 1, 2, '{{-10,10}}', 300, '{seed_hash}', 1000, 500, "
                "30, 1, 969, 0)")
        # Ledger entries replay idempotently and balance, bets' debits included (0006).
        for _ in range(2):
            pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) VALUES "
                    "('grant:g1', 'system', -1000, 'grant'), ('grant:g1', 'user:1', 1000, "
                    "'grant') ON CONFLICT (entry_id, account) DO NOTHING")
        assert pg.psql("SELECT count(*) FROM ledger") == [["2"]]
        assert pg.psql("SELECT count(*) FROM ledger_unbalanced") == [["0"]]
        assert pg.psql("SELECT balance FROM account_balances WHERE account = 'user:1'") == [
            ["800"]]
        assert pg.psql("SELECT account, balance FROM account_balances WHERE account LIKE "
                       "'round:%' ORDER BY 1") == [["round:1", "100"], ["round:2", "100"]]
        assert refused("INSERT INTO ledger (entry_id, account, amount, kind) VALUES "
                       "('x', 'nobody', 1, 'bet')")


def test_bets_are_debits_on_a_database_with_rows():
    """0006 on a database an older writer filled: a bet's two ledger rows are removed where its
    bets row says the same, kept where it does not (the audit must go on seeing those), and
    the views give the same balances as the ledger gave before."""
    d = tempfile.mkdtemp(prefix="tp-mig-")
    try:
        for f in os.listdir(MIGRATIONS):
            if f.endswith(".sql") and f < "0006":
                shutil.copy(os.path.join(MIGRATIONS, f), d)
        with tpenv.Postgres() as pg:
            assert migrate(pg.url, d).returncode == 0
            pg.psql("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                    "placed_at) VALUES ('11', 1, 7, 0, 100, 'k1', 0), "
                    "('12', 2, 7, 1, 250, 'k1', 0), ('13', 2, 8, 1, 40, 'k2', 0)")
            pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) VALUES "
                    "('grant:g1', 'system', -1000, 'grant'), ('grant:g1', 'user:1', 1000, 'grant'),"
                    "('grant:g2', 'system', -1000, 'grant'), ('grant:g2', 'user:2', 1000, 'grant'),"
                    "('bet:11', 'user:1', -100, 'bet'), ('bet:11', 'round:7', 100, 'bet'),"
                    "('bet:12', 'user:2', -250, 'bet'), ('bet:12', 'round:7', 250, 'bet'),"
                    "('bet:13', 'user:2', -40, 'bet'), ('bet:13', 'round:8', 40, 'bet'),"
                    # A bet the old (user, round, key) clash kept out of `bets`, and one whose
                    # rows disagree with its bet: both stay in the ledger.
                    "('bet:99', 'user:1', -5, 'bet'), ('bet:99', 'round:7', 5, 'bet'),"
                    "('bet:12x', 'user:2', -1, 'bet'), ('bet:12x', 'round:7', 1, 'bet')")
            before = pg.psql("SELECT account, sum(amount) FROM ledger GROUP BY 1 ORDER BY 1")
            r = migrate(pg.url)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "applying 0006_bets_are_debits ... ok" in r.stdout, r.stdout
            assert pg.psql("SELECT entry_id FROM ledger WHERE kind = 'bet' ORDER BY 1") == [
                ["bet:12x"], ["bet:12x"], ["bet:99"], ["bet:99"]]
            # Same balances as the old ledger, through the views.
            assert pg.psql("SELECT account, balance FROM account_balances ORDER BY 1") == before
            assert pg.psql("SELECT count(*) FROM ledger_unbalanced") == [["0"]]
            # (user, key, round) stays unique; the unused (user, placed_at) index is gone.
            r2 = subprocess.run(["psql", pg.url, "-qXAt", "-c",
                                 "INSERT INTO bets (id, user_id, round_id, band, stake, "
                                 "idempotency_key, placed_at) VALUES ('14', 1, 7, 0, 1, 'k1', 0)"],
                                capture_output=True, text=True)
            assert r2.returncode != 0 and "bets_user_key_round" in r2.stderr, r2.stderr
            idx = {row[0] for row in pg.psql("SELECT indexname FROM pg_indexes "
                                             "WHERE tablename = 'bets'")}
            assert idx == {"bets_pkey", "bets_user_key_round", "bets_round", "bets_user_bet"}, idx
            # A lookup by (user, key) alone, with or without the round, uses the one index.
            plan = "\n".join(x[0] for x in pg.psql(
                "SET enable_seqscan = off; EXPLAIN SELECT id FROM bets WHERE user_id = 1 AND "
                "idempotency_key = 'k1'"))
            assert "bets_user_key_round" in plan, plan
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_changed_newest_migration_is_refused_until_restored():
    """The newest applied file changed by a single byte (a trailing newline, a no-op to SQL) is
    refused with nothing pending: exit 1, the file and both checksums named (the database's is
    the one recorded), schema_migrations untouched; restored, the same run is a no-op again. An
    applied migration whose file is gone is only warned about."""
    d = copy_migrations()
    try:
        with tpenv.Postgres() as pg:
            assert migrate(pg.url, d).returncode == 0
            newest = files()[-1]
            rows = pg.psql("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
            path = os.path.join(d, newest + ".sql")
            with open(path, "rb") as f:
                body = f.read()
            with open(path, "ab") as f:
                f.write(b"\n")
            r = migrate(pg.url, d)
            assert r.returncode == 1, r.stdout + r.stderr
            recorded = rows[-1][2]
            on_disk = hashlib.sha256(body + b"\n").hexdigest()
            assert (f"{newest}.sql was changed after it was applied (checksum {recorded[:12]} in "
                    f"the database, {on_disk[:12]} on disk)") in r.stderr, r.stderr
            assert "applying" not in r.stdout, r.stdout
            assert pg.psql("SELECT version, name, checksum FROM schema_migrations ORDER BY 1") \
                == rows
            with open(path, "wb") as f:
                f.write(body)
            r = migrate(pg.url, d)
            assert r.returncode == 0 and f"0 applied, {len(rows)} already applied" in r.stdout, \
                r.stdout + r.stderr
            os.remove(path)
            r = migrate(pg.url, d)
            assert r.returncode == 0, r.stdout + r.stderr
            assert f"warning: applied migration {newest} has no file" in r.stderr, r.stderr
            assert pg.psql("SELECT count(*) FROM schema_migrations") == [[str(len(rows))]]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_0007_under_a_running_game_on_a_database_with_rows():
    """0007 (and whatever migration follows it) applied while the game runs, on a database
    0001-0006 filled: players, bets of settled rounds, and bets of a round still open or live
    (pending) when it runs. `tickpool audit` refuses the schema before (it needs 0010), is
    clean right after and after more bets on top; every bet row stays, and bets takes its
    fillfactor.

    The phases leave a loaded machine room (the sanitizer build at load 10+): each batch of 30
    bets goes into a round with at least 3 s of betting left, and the open round's bets reach
    Postgres while it is open or live (6 s), before it settles; the waits are deadlines."""
    env = {"TICKPOOL_GAME_BUCKETS": "2", "TICKPOOL_GAME_BETTING_S": "4",
           "TICKPOOL_GAME_LIVE_S": "6", "TICKPOOL_GAME_MIN_STAKE": "1"}
    with migrated_below("0007") as pg, tpenv.Redis() as r:
        with tpenv.Server(redis=r, pg=pg, env=env, migrate=False, https=False) as s:
            users = tpclient.make_users(s, 6, "mg")
            jobs = [(i % 5, 10 + i) for i in range(30)]
            settled = []
            for tag in ("a", "b"):
                o = tpclient.fresh_open_round(s, 3000)
                ok, other = tpclient.place_bets(s, users, o["id"], jobs, nthreads=4, tag=tag)
                assert len(ok) == len(jobs), other[:3]
                settled.append(o["id"])
            tpenv.wait_until(lambda: pg.psql(
                "SELECT count(*) FROM bets WHERE round_id = %d AND status <> 'pending'"
                % settled[-1]) != [["0"]], timeout=60, what="the bets' round settled")
            # This version's audit counts payouts rows as the credits (0010): before the
            # migration it refuses the schema instead of comparing.
            code, out = tpclient.audit(s)
            assert code == 2 and "older than migration 0010" in out, out
            # Bets of a round that is still open when 0007 runs.
            o = tpclient.fresh_open_round(s, 3000)
            ok, other = tpclient.place_bets(s, users, o["id"], jobs, nthreads=4, tag="c")
            assert len(ok) == len(jobs), other[:3]
            tpenv.wait_until(lambda: pg.psql(
                "SELECT count(*) FROM bets WHERE round_id = %d AND status = 'pending'"
                % o["id"]) == [[str(len(jobs))]], timeout=30, what="the open round's bets")
            r1 = migrate(pg.url)
            assert r1.returncode == 0 and "applying 0007_" in r1.stdout, r1.stdout + r1.stderr
            assert pg.psql("SELECT count(*) FROM bets") == [[str(3 * len(jobs))]]
            assert pg.psql("SELECT reloptions FROM pg_class WHERE relname = 'bets'") \
                == [["{fillfactor=50}"]]
            code, out = tpclient.audit(s)
            assert code == 0, out
            # The open round settles after the migration; more bets on top.
            o2 = tpclient.fresh_open_round(s, 3000)
            ok, other = tpclient.place_bets(s, users, o2["id"], jobs, nthreads=4, tag="d")
            assert len(ok) == len(jobs), other[:3]
            tpenv.wait_until(lambda: pg.psql(
                "SELECT count(*) FROM bets WHERE round_id IN (%d, %d) AND status = 'pending'"
                % (o["id"], o2["id"])) == [["0"]], timeout=60, what="both rounds settled")
            code, out = tpclient.audit(s)
            assert code == 0, out
            assert pg.psql("SELECT count(*) FROM bets") == [[str(4 * len(jobs))]]


def test_bets_round_brin_on_a_database_with_rows():
    """0008 on a database 0001-0007 filled: `bets_round` becomes a BRIN on round_id, the
    round's readers (the receipt's 'lost' UPDATE, archival's count and keys, verify) read it and
    find the same rows as through the B-tree, and bets written after it are found too."""
    with migrated_below("0008") as pg:
        # Rounds 1-6, 500 bets each, in round order as the writer writes them.
        pg.psql("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                "placed_at) SELECT i::text, 1 + i % 97, 1 + i / 500, i % 5, 1 + i % 7, "
                "'k' || i, i FROM generate_series(0, 2999) i")
        readers = [
            "SELECT count(*) FROM bets WHERE round_id = 3",
            "SELECT md5(string_agg(user_id || ':' || idempotency_key, ',' "
            "ORDER BY idempotency_key)) "
            "FROM bets WHERE round_id = 4",
            "SELECT count(*), sum(stake) FROM bets WHERE round_id = 5 AND band = 2",
            "SELECT round_id, count(*), sum(stake) FROM bets GROUP BY 1 ORDER BY 1",
        ]
        before = [pg.psql(q) for q in readers]
        # An operator's concurrent build that failed left an invalid index: built again.
        pg.psql("CREATE INDEX bets_round_brin ON bets USING brin (round_id)")
        pg.psql("UPDATE pg_index SET indisvalid = false "
                "WHERE indexrelid = 'bets_round_brin'::regclass")
        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "applying 0008_bets_round_brin ... ok" in r.stdout, r.stdout
        assert pg.psql("SELECT indisvalid FROM pg_index "
                       "WHERE indexrelid = 'bets_round'::regclass") == [["t"]]
        idx = dict(pg.psql("SELECT indexname, indexdef FROM pg_indexes "
                           "WHERE tablename = 'bets'"))
        assert set(idx) == {"bets_pkey", "bets_user_key_round", "bets_round",
                            "bets_user_bet"}, idx
        assert "USING brin (round_id)" in idx["bets_round"], idx
        assert [pg.psql(q) for q in readers] == before
        # The receipt's UPDATE (pgw_batch.c) and the round's reads go through the index.
        receipt = ("UPDATE bets b SET status = 'lost' FROM json_to_recordset("
                   "'[{\"id\":\"2\",\"state\":\"settled\",\"winning_band\":\"1\"}]'"
                   "::json) AS x(id bigint, state text, winning_band smallint, refund_all "
                   "boolean) WHERE b.round_id = x.id AND x.state = 'settled' AND "
                   "x.refund_all IS NOT TRUE AND b.band IS DISTINCT FROM x.winning_band "
                   "AND b.status = 'pending'")
        for q in (receipt, readers[0], readers[1]):
            plan = "\n".join(x[0] for x in pg.psql(
                "SET enable_seqscan = off; EXPLAIN " + q))
            assert "Bitmap Index Scan on bets_round" in plan, plan
        pg.psql(receipt)
        assert pg.psql("SELECT status, count(*) FROM bets WHERE round_id = 2 GROUP BY 1 "
                       "ORDER BY 1") == [["lost", "400"], ["pending", "100"]]
        # Bets written after the index (a range not yet summarised) are found as well.
        pg.psql("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                "placed_at) SELECT i::text, 1, 7, 0, 1, 'k' || i, i "
                "FROM generate_series(3000, 3099) i")
        assert pg.psql("SET enable_seqscan = off; "
                       "SELECT count(*) FROM bets WHERE round_id = 7") == [["100"]]



def test_bets_round_brin_gives_way_to_a_long_read():
    """0008 waits at most 5 s for a lock (lock_timeout): with a read of `bets` running (an audit's
    sums) its DROP of the B-tree would queue every later read of `bets` behind it until that read
    ends; instead it fails with nothing applied, and applies once the read is over."""
    with migrated_below("0008") as pg:
        with gives_way_to_a_long_read(pg, "bets", "0008_bets_round_brin", 9):
            idx = dict(pg.psql("SELECT indexname, indexdef FROM pg_indexes "
                               "WHERE tablename = 'bets'"))
            assert "USING btree (round_id, band)" in idx["bets_round"], idx
            assert "bets_round_brin" not in idx, idx
        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "applying 0008_bets_round_brin ... ok" in r.stdout, r.stdout


def test_payouts_user_dropped_on_a_database_with_rows():
    """0009 on a database 0001-0008 filled: `payouts_user` is gone, the other three indexes
    stay, the payouts' readers (a bet's credits by bet_id, a round's by round_id) still read
    an index and find the same rows, and the writer's payouts INSERT goes on. With a read of
    payouts running, 0009 gives up after its lock_timeout, nothing applied."""
    with migrated_below("0009") as pg:
        pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) "
                "SELECT 'payout:' || i, i::text, 1 + i % 97, 1 + i / 500, 1 + i % 7, 'win' "
                "FROM generate_series(0, 2999) i")
        readers = [
            "SELECT bet_id, amount FROM payouts WHERE bet_id = ANY('{7,1500,2999}'::text[]) "
            "ORDER BY 1",
            "SELECT count(*) FROM payouts WHERE round_id = 3",
            "SELECT user_id, sum(amount) FROM payouts GROUP BY 1 ORDER BY 1",
        ]
        before = [pg.psql(q) for q in readers]
        with gives_way_to_a_long_read(pg, "payouts", "0009_payouts_user_dropped"):
            pass
        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "applying 0009_payouts_user_dropped ... ok" in r.stdout, r.stdout
        idx = {row[0] for row in pg.psql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'payouts'")}
        assert idx == {"payouts_pkey", "payouts_bet_id_kind_key", "payouts_round"}, idx
        assert [pg.psql(q) for q in readers] == before
        for q, index in ((readers[0], "payouts_bet_id_kind_key"), (readers[1], "payouts_round")):
            plan = "\n".join(x[0] for x in pg.psql("SET enable_seqscan = off; EXPLAIN " + q))
            assert index in plan, plan
        pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) "
                "VALUES ('payout:3000', '3000', 5, 7, 9, 'win') ON CONFLICT DO NOTHING")
        assert pg.psql("SELECT count(*) FROM payouts") == [["3001"]]


def old_credit_rows(payouts):
    """The ledger rows a writer before 0010 wrote for payouts rows (id, bet_id, user_id,
    round_id, amount, kind): entry '<payout|refund>:<bet_id>', round -> user, none for 0."""
    rows = []
    for _, bet, user, rnd, amount, kind in payouts:
        if int(amount) == 0:
            continue
        lk = "payout" if kind == "win" else "refund"
        rows.append(f"('{lk}:{bet}', 'round:{rnd}', -{amount}, '{lk}')")
        rows.append(f"('{lk}:{bet}', 'user:{user}', {amount}, '{lk}')")
    return rows


FULL = "SELECT entry_id, account, amount, kind FROM ledger_full ORDER BY 1, 2, 3"
BALANCES = "SELECT account, balance FROM account_balances ORDER BY 1"


def test_payouts_are_credits_on_a_database_with_rows():
    """0010 on a database 0001-0009 filled by an older writer: a credit's two ledger rows are
    removed where its payouts row says the same, kept where they do not (the audit must go on
    seeing those), and the whole ledger (ledger_full), account_balances and ledger_unbalanced
    give the same answers as before. Progress lines on a large ledger; applying its SQL again
    changes nothing; with a read of the views running it gives up after its lock_timeout."""
    with migrated_below("0010") as pg:
        pg.psql("INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                "placed_at) VALUES ('11', 1, 7, 0, 100, 'k1', 0), ('12', 2, 7, 1, 250, 'k1', 0), "
                "('13', 2, 8, 1, 40, 'k2', 0), ('14', 3, 8, 0, 60, 'k1', 0), "
                "('15', 3, 9, 0, 10, 'k3', 0)")
        payouts = [("payout:11", "11", "1", "7", "340", "win"),
                   ("refund:13", "13", "2", "8", "40", "refund"),
                   ("refund:14", "14", "3", "8", "60", "refund"),
                   ("payout:15", "15", "3", "9", "0", "win")]  # zero: no ledger rows
        pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) VALUES " +
                ", ".join("('%s', '%s', %s, %s, %s, '%s')" % p for p in payouts))
        ledger = ["('grant:g%d', 'system', -1000, 'grant'), ('grant:g%d', 'user:%d', 1000, "
                  "'grant')" % (u, u, u) for u in (1, 2, 3)]
        ledger += ["('rake:7', 'round:7', -10, 'rake'), ('rake:7', 'house', 10, 'rake')"]
        ledger += old_credit_rows(payouts)
        # A credit missing from `payouts` (a write lost before this migration), far up the
        # ledger's ids so that the slices print progress.
        pg.psql("INSERT INTO ledger (id, entry_id, account, amount, kind) VALUES "
                "(1200000, 'refund:98', 'round:8', -5, 'refund'), "
                "(1200001, 'refund:98', 'user:1', 5, 'refund')")
        pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) VALUES " + ", ".join(ledger))
        before = [pg.psql(FULL), pg.psql(BALANCES)]
        assert pg.psql("SELECT count(*) FROM ledger_unbalanced") == [["0"]]
        assert len(before[0]) == 6 + 2 + 6 + 2 + 2 * 5  # grants, rake, credits, refund:98, bets
        with gives_way_to_a_long_read(pg, "ledger_full", "0010_payouts_are_credits"):
            assert pg.psql("SELECT count(*) FROM ledger WHERE kind = 'payout'") == [["2"]]
        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "applying 0010_payouts_are_credits ... ok" in r.stdout, r.stdout
        assert "0010: 6 payout ledger rows removed (ledger ids up to 1200001 of 1200001)" in \
            r.stderr, r.stderr
        # Only the credit without a payouts row keeps its ledger rows.
        assert pg.psql("SELECT entry_id, account FROM ledger WHERE kind IN ('payout', 'refund') "
                       "ORDER BY 2") == [["refund:98", "round:8"], ["refund:98", "user:1"]]
        assert [pg.psql(FULL), pg.psql(BALANCES)] == before
        assert pg.psql("SELECT count(*) FROM ledger_unbalanced") == [["0"]]
        # Its SQL applied again (by hand, in one transaction) changes nothing.
        sql = os.path.join(MIGRATIONS, "0010_payouts_are_credits.sql")
        r2 = subprocess.run(["psql", pg.url, "-qX1", "-v", "ON_ERROR_STOP=1", "-f", sql],
                            capture_output=True, text=True)
        assert r2.returncode == 0, r2.stderr
        assert [pg.psql(FULL), pg.psql(BALANCES)] == before
        # A credit written after it counts once, through its payouts row alone.
        pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) VALUES "
                "('payout:12', '12', 2, 7, 300, 'win')")
        assert pg.psql("SELECT balance FROM account_balances WHERE account = 'user:2'") == [
            [str(1000 - 250 - 40 + 40 + 300)]]
        assert pg.psql("SELECT count(*) FROM ledger_unbalanced") == [["0"]]


def test_payouts_are_credits_disagreeing_rows_kept():
    """A credit whose ledger rows disagree with its payouts row (another amount, another
    player) keeps them: the whole ledger then shows both, and ledger_unbalanced or the
    balances show the difference instead of 0010 hiding it."""
    with migrated_below("0010") as pg:
        pg.psql("INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) VALUES "
                "('payout:21', '21', 1, 7, 80, 'win'), ('payout:22', '22', 2, 7, 50, 'win')")
        pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) VALUES "
                "('payout:21', 'round:7', -70, 'payout'), ('payout:21', 'user:1', 70, 'payout'),"
                "('payout:22', 'round:7', -50, 'payout'), ('payout:22', 'user:3', 50, 'payout')")
        r = migrate(pg.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert pg.psql("SELECT entry_id, account, amount FROM ledger ORDER BY 1, 2") == [
            ["payout:21", "round:7", "-70"], ["payout:21", "user:1", "70"],
            ["payout:22", "user:3", "50"]]
        assert pg.psql("SELECT entry_id, imbalance FROM ledger_unbalanced ORDER BY 1") == [
            ["payout:22", "50"]]
        assert pg.psql("SELECT account, balance FROM account_balances WHERE account LIKE "
                       "'user:%' ORDER BY 1") == [["user:1", "150"], ["user:2", "50"],
                                                  ["user:3", "50"]]


def test_0010_under_a_running_game_on_a_database_with_rows():
    """0010 applied while the game runs, on a database 0001-0009 filled: settled rounds with
    their credits as an older writer wrote them (payouts rows and their ledger rows). The whole
    ledger and every player's balance are the same before and after, and `tickpool audit` is
    clean after it and after more settled bets on top (before it, this version's audit refuses
    the schema)."""
    env = {"TICKPOOL_GAME_BUCKETS": "2", "TICKPOOL_GAME_BETTING_S": "2",
           "TICKPOOL_GAME_LIVE_S": "2", "TICKPOOL_GAME_MIN_STAKE": "1"}
    with migrated_below("0010") as pg, tpenv.Redis() as r:
        with tpenv.Server(redis=r, pg=pg, env=env, migrate=False, https=False) as s:
            users = tpclient.make_users(s, 6, "mc")
            jobs = [(i % 5, 10 + i) for i in range(30)]

            def settled_round(tag):
                o = tpclient.fresh_open_round(s, 800)
                ok, other = tpclient.place_bets(s, users, o["id"], jobs, nthreads=4, tag=tag)
                assert len(ok) == len(jobs), other[:3]
                tpenv.wait_until(lambda: pg.psql(
                    "SELECT count(*) FROM bets WHERE round_id = %d AND status = 'pending'"
                    % o["id"]) == [["0"]], timeout=30, what="the bets' round settled")
                return o["id"]

            rounds = [settled_round(t) for t in ("a", "b", "c")]
            tpenv.wait_until(lambda: pg.psql(
                "SELECT count(*) FROM bets WHERE status IN ('won', 'refunded')") ==
                pg.psql("SELECT count(*) FROM payouts"), timeout=10, what="every credit")
            payouts = pg.psql("SELECT id, bet_id, user_id, round_id, amount, kind FROM payouts "
                              "WHERE round_id IN (%s)" % ",".join(map(str, rounds)))
            assert payouts, "the rounds paid or refunded somebody"
            # What a writer before 0010 wrote besides each payouts row.
            pg.psql("INSERT INTO ledger (entry_id, account, amount, kind) VALUES " +
                    ", ".join(old_credit_rows(payouts)))
            before = [pg.psql(FULL), pg.psql(BALANCES)]
            # This version's audit counts a payouts row as its credit: on a schema before 0010
            # (whose ledger holds the credits too) it refuses instead of failing every winner.
            code, out = tpclient.audit(s)
            assert code == 2 and "older than migration 0010" in out, out
            r1 = migrate(pg.url)
            assert r1.returncode == 0 and "applying 0010_" in r1.stdout, r1.stdout + r1.stderr
            assert pg.psql("SELECT count(*) FROM ledger WHERE kind IN ('payout', 'refund')") \
                == [["0"]]
            assert [pg.psql(FULL), pg.psql(BALANCES)] == before
            code, out = tpclient.audit(s)
            assert code == 0, out
            settled_round("d")
            code, out = tpclient.audit(s)
            assert code == 0, out
            assert pg.psql("SELECT count(*) FROM ledger WHERE kind IN ('payout', 'refund')") \
                == [["0"]]
            assert pg.psql("SELECT count(*) FROM ledger_unbalanced") == [["0"]]


if __name__ == "__main__":
    tpenv.main()
