"""A scratch Postgres cluster whose single-user backend runs under callgrind, counting only the
instructions inside ExecuteQuery (each EXECUTE of a prepared statement), for
bench/pg_insert_callgrind.py and bench/pg_credits_callgrind.py: instruction counts do not drift
with the machine's load as CPU times do.

    with ScratchPostgres(tree, port, "pgcg-", collate=None) as pg:  # initdb, start, migrations
        pg.psql("-c", "INSERT ...")          # load through the server (its socket in pg.dir)
        pg.stop()
        ir = pg.callgrind(["PREPARE s AS ...", "EXECUTE s(...)"], keep=path)
        pg.start()
        pg.psql("-At", "-c", "SELECT ...", capture_output=True, text=True)
        pg.stop()

The cluster is made by initdb (as the postgres user when run as root) in a temporary directory,
gets the tree's migrations/*.sql in order (one transaction each, as `tickpool migrate` does), and
is stopped and removed however the block ends. Needs valgrind and Postgres 15 (PG_BIN).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")


def c_strings(text):
    """The concatenation of the C string literals in `text` (no escapes but \\" needed)."""
    return "".join(m.replace('\\"', '"') for m in re.findall(r'"((?:[^"\\]|\\.)*)"', text))


def as_postgres(cmd, **kw):
    pre = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(pre + cmd, cwd="/", check=True, **kw)


class ScratchPostgres:
    """The cluster of `tree`'s migrations; its server listens on no TCP address, only on the
    socket of `port` in self.dir. `collate`: initdb --lc-collate (None: the host's)."""

    def __init__(self, tree, port, prefix, collate=None):
        self.tree, self.port, self.prefix, self.collate = tree, port, prefix, collate
        self.dir = self.data = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix=self.prefix)
        self.data = os.path.join(self.dir, "data")
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            init = [f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                    "-E", "UTF8"]
            if self.collate:
                init.append(f"--lc-collate={self.collate}")
            as_postgres(init, stdout=subprocess.DEVNULL)
            self.start()
            mig = os.path.join(self.tree, "migrations")
            for f in sorted(os.listdir(mig)):
                if f.endswith(".sql"):
                    self.psql("-1", "-f", os.path.join(mig, f), stdout=subprocess.DEVNULL)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                        capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self):
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", f"{self.dir}/pg.log", "-w", "-o",
                     f"-p {self.port} -k {self.dir} -c listen_addresses=''", "start"],
                    stdout=subprocess.DEVNULL)

    def stop(self):
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                    stdout=subprocess.DEVNULL)

    def psql(self, *args, **kw):
        """psql as postgres on the running server, stopping at the first error; `kw` as
        subprocess.run's (its check is on)."""
        return subprocess.run(["psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                               "-q", "-X", "-v", "ON_ERROR_STOP=1", *args], check=True, **kw)

    def callgrind(self, lines, keep=None):
        """Runs `lines` (SQL statements, one a line) in a single-user backend of the stopped
        cluster under callgrind, which counts inside ExecuteQuery only, and returns that count;
        the tool exits with the first errors if the backend refused a statement. `keep`: copy
        the profile there (for callgrind_annotate --inclusive=yes)."""
        out = os.path.join(self.dir, "cg.out")
        r = as_postgres(["valgrind", "--tool=callgrind", "--toggle-collect=ExecuteQuery",
                         f"--callgrind-out-file={out}", f"{PG_BIN}/postgres", "--single",
                         "-D", self.data, "postgres"],
                        input="\n".join(lines) + "\n", capture_output=True, text=True)
        errors = [ln for ln in r.stdout.splitlines() + r.stderr.splitlines() if "ERROR" in ln]
        if errors:
            sys.exit("the backend refused a statement:\n" + "\n".join(errors[:5]))
        if keep:
            shutil.copy(out, keep)
        return int(re.search(r"Collected : (\d+)", r.stderr).group(1))
