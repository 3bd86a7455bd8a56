"""Test environment for tickpool's integration and black-box tests.

Starts real services on private ports and tears them down:

    import tpenv

    def test_something():
        with tpenv.Redis() as r, tpenv.Postgres() as pg:
            with tpenv.Server(redis=r, pg=pg, env={"TICKPOOL_GAME_BETTING_S": "2"}) as s:
                status, headers, body = s.http("GET", "/healthz")

    if __name__ == "__main__":
        tpenv.main()

Postgres: when TP_TEST_PG_ADMIN_URL is set (scripts/test starts one cluster for the whole run),
each Postgres() is a fresh database in it; otherwise a private cluster is initialised on the fly
(slower). A test raises tpenv.Skip when a needed binary is missing; a file whose tests all
skip exits 77, which meson reports as skipped.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid

SRC = os.environ.get("TP_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("TP_BIN", os.path.join(SRC, "build", "tickpool"))
PG_BIN = "/usr/lib/postgresql/15/bin"


class Skip(Exception):
    """Raised by a test whose prerequisites (binaries) are missing."""


def free_port():
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value; raises AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # the service may not be up yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def _tmpdir(prefix):
    # /tmp is reachable by the postgres user even when the clone sits under a 0700 home.
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o755)
    return d


class Redis:
    """A private redis-server on a free loopback port, in a temporary directory."""

    def __init__(self, appendonly=False):
        if shutil.which("redis-server") is None:
            raise Skip("redis-server not installed")
        self.port = free_port()
        self.dir = _tmpdir("tp-redis-")
        self.appendonly = appendonly
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly",
                "yes" if self.appendonly else "no", "--logfile", os.path.join(self.dir, "log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.cli("PING") == "PONG", what=f"redis on port {self.port}")
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def aof_written(self, timeout=30):
        """Waits until Redis (appendonly=True) has written every command it ran to its
        append-only file: then the OS holds them and a kill -9 (stop, restart) loses none. With
        appendfsync everysec Redis postpones that write while a background fsync runs, up to
        2 s on a loaded machine: a fixed sleep is not enough."""
        wait_until(lambda: self.client().info("persistence").get("aof_buffer_length", 1) == 0,
                   timeout=timeout, what="Redis's append-only file written")

    def cli(self, *args):
        """Runs one command with redis-cli and returns its output stripped."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), *map(str, args)],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def client(self):
        """A redis-py client (python3-redis) with decoded responses."""
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class EmbeddedRedis:
    """A private Redis started by scripts/lib/services.sh's start_redis, the function scripts/up
    and bench/run start theirs with: its flags have their one home there, none is copied here.
    (tpenv.Redis, which most integration tests use, is deliberately separate: a small Redis
    with only the flags each test needs.) thp: REDIS_THP for it ("yes", "no"; None: unset, the
    shipped default); extra: the arguments after start_redis's own (`--save ""`, as bench/run and the tests pass: no
    RDB save points, whose BGSAVE would fork at Redis's default rules, 60 s after 10,000
    writes); prefix: a command start_redis runs under (e.g. unshare). record_args: a
    redis-server first in PATH writes its arguments down and runs the real one, so args() is
    what start_redis passes, not what its text says. `dir` is Redis's own directory (its AOF,
    redis.pid), `pid` its process id, `port` its port."""

    def __init__(self, thp=None, extra=("--save", ""), prefix=(), record_args=False):
        self.real = shutil.which("redis-server")
        if self.real is None:
            raise Skip("redis-server not installed")
        self.thp, self.extra, self.prefix, self.record_args = thp, list(extra), list(prefix), \
            record_args
        self.top = _tmpdir("tp-embedded-redis-")
        self.dir = os.path.join(self.top, "redis")
        self.args_file = os.path.join(self.top, "args")
        self.port = free_port()
        self.pid = None

    def _sh(self, fn, *args, env=None, prefix=()):
        cmd = f'. "{SRC}/scripts/lib/common.sh"; . "{SRC}/scripts/lib/services.sh"; {fn} "$@"'
        return subprocess.run([*prefix, "bash", "-c", cmd, "sh", *map(str, args)],
                              capture_output=True, text=True, timeout=60, env=env)

    def start(self):
        env = dict(os.environ)
        env.pop("REDIS_THP", None)
        if self.thp is not None:
            env["REDIS_THP"] = self.thp
        if self.record_args:
            shim = os.path.join(self.top, "bin")
            os.makedirs(shim, exist_ok=True)
            with open(os.path.join(shim, "redis-server"), "w") as f:
                f.write(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{self.args_file}"\n'
                        f'exec "{self.real}" "$@"\n')
            os.chmod(os.path.join(shim, "redis-server"), 0o700)
            env["PATH"] = shim + os.pathsep + env.get("PATH", "")
        out = self._sh("start_redis", self.dir, self.port, *self.extra, env=env,
                       prefix=self.prefix)
        if out.returncode != 0:
            raise AssertionError(f"start_redis failed: {out.stdout}{out.stderr}")
        with open(os.path.join(self.dir, "redis.pid")) as f:
            self.pid = int(f.read())
        return self

    def stop(self):
        self._sh("stop_redis", self.dir)
        self.pid = None

    def args(self):
        """The arguments redis-server was started with (record_args=True), one a line."""
        with open(self.args_file) as f:
            return f.read().splitlines()

    def client(self):
        """A redis-py client (python3-redis) with decoded responses."""
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.top, ignore_errors=True)


class SlowForkChild:
    """A real fork child of a running Redis for as long as a test or a bench tool needs one: a
    BGSAVE slowed by rdb-key-save-delay, `delay_s` a key (the child reads the delay at its fork,
    so setting it back does not shorten a child already running). `c`: a redis-py client of
    that Redis, on this host. pad: keys written first (and deleted by end()), so that a nearly
    empty Redis still has a child of about pad * delay_s. end() sets the delay back to 0 and
    waits for the child's exit: by itself (a short child, e.g. a test's few seconds), or with
    stop=True stopped first by SIGUSR1, Redis's way to end its own child without an error (no
    RDB written), for a child longer than anyone waits for (e.g. 1 s a key)."""

    PAD = "tpenv:slow-child-pad:%d"

    def __init__(self, c, delay_s, pad=0):
        self.c, self.delay_us, self.pad = c, int(delay_s * 1e6), pad

    def running(self):
        return self.c.info("persistence")["rdb_bgsave_in_progress"] == 1

    def start(self):
        for i in range(self.pad):
            self.c.set(self.PAD % i, "x")
        self.c.config_set("rdb-key-save-delay", self.delay_us)
        self.c.bgsave()
        if not self.running():
            raise AssertionError("BGSAVE started no fork child")
        return self

    def end(self, stop=False, timeout=60):
        self.c.config_set("rdb-key-save-delay", 0)
        if stop:
            pid = self.c.info("server")["process_id"]
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                for child in f.read().split():
                    os.kill(int(child), signal.SIGUSR1)
        wait_until(lambda: not self.running(), timeout=timeout, what="the fork child's exit")
        if self.pad:
            self.c.delete(*[self.PAD % i for i in range(self.pad)])


def _ports_free(ports):
    for p in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


class RedisCluster:
    """A private Redis Cluster: `masters` masters with one replica each, started by the same
    shell function as `scripts/up --redis-cluster` (scripts/lib/services.sh) on consecutive
    free ports (each node also uses port + 10000 for the cluster bus). `url` lists every node as
    a seed; `mode` is "cluster" (tpenv.Server passes both to tickpool)."""

    mode = "cluster"

    def __init__(self, masters=3, node_timeout_ms=2000):
        if shutil.which("redis-server") is None:
            raise Skip("redis-server not installed")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.dir = _tmpdir("tp-rcluster-")
        self._pick_ports()

    def _pick_ports(self):
        # Below the kernel's ephemeral range (32768+), bus ports (+10000) included: an outgoing
        # connection elsewhere on the machine cannot take one between the check and the start.
        import random
        n = 2 * self.masters
        for _ in range(200):
            base = random.randrange(20000, 22768 - n)
            if _ports_free(list(range(base, base + n)) + list(range(base + 10000, base + 10000 + n))):
                break
        self.port = base
        self.ports = list(range(base, base + n))
        self.url = ",".join(f"redis://127.0.0.1:{p}" for p in self.ports)

    def _sh(self, fn, *args):
        cmd = f'. "{SRC}/scripts/lib/common.sh"; . "{SRC}/scripts/lib/services.sh"; {fn} "$@"'
        out = subprocess.run(["bash", "-c", cmd, "sh", *map(str, args)], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"{fn} failed: {out.stdout}{out.stderr}")

    def start(self):
        for attempt in range(3):  # a port taken meanwhile by another test: other ports
            try:
                self._sh("start_redis_cluster", self.dir, self.port, self.masters,
                         self.node_timeout_ms)
                return self
            except AssertionError:
                self.stop()
                if attempt == 2:
                    raise
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = _tmpdir("tp-rcluster-")
                self._pick_ports()

    def stop(self):
        self._sh("stop_redis_cluster", self.dir)

    def kill_node(self, port):
        """kill -9 of one node; returns its pid."""
        pid = int(open(os.path.join(self.dir, str(port), "redis.pid")).read())
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart_node(self, port):
        """Starts a killed node again: it rejoins the cluster (a former master as a replica)."""
        self._sh("start_redis_cluster_node", self.dir, port, self.node_timeout_ms)

    def cli(self, port, *args):
        """One command to the node on `port` (redis-cli -c follows redirects); output stripped."""
        out = subprocess.run(["redis-cli", "-c", "-p", str(port), *map(str, args)],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def master_ports(self):
        """Ports of the nodes that are masters now (after a failover too)."""
        lines = []
        for p in self.ports:  # the first node that answers (a killed one does not)
            lines = self.cli(p, "CLUSTER", "NODES").splitlines()
            if lines:
                break
        return sorted(int(ln.split()[1].split("@")[0].rsplit(":", 1)[1]) for ln in lines
                      if "master" in ln.split()[2] and "fail" not in ln.split()[2])

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_postgres_user():
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PgCluster:
    """A private Postgres cluster on a free port (trust auth on loopback)."""

    def __init__(self):
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            raise Skip("postgresql not installed")
        self.port = free_port()
        self.dir = _tmpdir("tp-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")

    def start(self):
        pre = _as_postgres_user()
        subprocess.run(pre + [f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres",
                              "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(pre + [f"{PG_BIN}/pg_ctl", "-D", self.data, "-l",
                              os.path.join(self.dir, "log"), "-w", "-o",
                              f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                              "-c fsync=off -c full_page_writes=off", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self

    def stop(self):
        subprocess.run(_as_postgres_user() + [f"{PG_BIN}/pg_ctl", "-D", self.data, "-m",
                                              "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres:
    """A fresh, empty database: in the shared test cluster (TP_TEST_PG_ADMIN_URL) or a private one."""

    def __init__(self):
        self.cluster = None
        self.admin_url = os.environ.get("TP_TEST_PG_ADMIN_URL")
        self.name = "tp_" + uuid.uuid4().hex[:12]

    def __enter__(self):
        if not self.admin_url:
            self.cluster = PgCluster().start()
            self.admin_url = self.cluster.admin_url
        self.psql(f"CREATE DATABASE {self.name}", db_url=self.admin_url)
        base = self.admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"
        return self

    def __exit__(self, *exc):
        if self.cluster is not None:
            self.cluster.stop()
        else:
            self.psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)", db_url=self.admin_url)

    def psql(self, sql, db_url=None):
        """Runs SQL with psql; returns stdout rows as a list of lists (tab separated)."""
        out = subprocess.run(["psql", db_url or self.url, "-v", "ON_ERROR_STOP=1", "-qAtX",
                              "-F", "\t", "-c", sql], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]


class Server:
    """A tickpool server process (master + workers) on private ports.

    env: extra TICKPOOL_* overrides. The server runs with cwd = the repo root, so it finds
    scripts/lua, migrations and web/ as in production.
    """

    def __init__(self, redis=None, pg=None, env=None, workers=1, https=True, migrate=True,
                 args=(), preexec_fn=None):
        if not os.path.exists(BIN):
            raise AssertionError(f"tickpool binary not found at {BIN}")
        self.http_port = free_port()
        self.https_port = free_port() if https else 0
        self.dir = _tmpdir("tp-srv-")
        self.log_path = os.path.join(self.dir, "tickpool.log")
        self.env = dict(os.environ)
        self.env.update({
            "TICKPOOL_SERVER_BIND": "127.0.0.1",
            "TICKPOOL_SERVER_HTTP_PORT": str(self.http_port),
            "TICKPOOL_SERVER_HTTPS_PORT": str(self.https_port),
            "TICKPOOL_SERVER_WORKERS": str(workers),
            "TICKPOOL_SERVER_VAR_DIR": os.path.join(self.dir, "var"),
            "TICKPOOL_SERVER_WEB_ROOT": os.path.join(SRC, "web"),
            # Suites sign up and in many players from one address: no per-client limits
            # unless a test sets them (tests/integ/test_ratelimit.py does).
            "TICKPOOL_LIMITS_SIGNUP_PER_MIN": "0",
            "TICKPOOL_LIMITS_SIGNIN_PER_MIN": "0",
            # The idempotency filter is allocated whole by a day's first bet (128m by default:
            # half a second of Redis on this shared machine); tests place few bets.
            "TICKPOOL_GAME_IDEM_FILTER": "1m",
        })
        if redis is not None:
            self.env["TICKPOOL_REDIS_URL"] = redis.url
            self.env["TICKPOOL_REDIS_MODE"] = getattr(redis, "mode", "standalone")
        if pg is not None:
            self.env["TICKPOOL_POSTGRES_URL"] = pg.url
        self.env.update(env or {})
        self.pg = pg
        self.migrate = migrate
        self.args = list(args)
        self.preexec_fn = preexec_fn  # run in the server's process before exec (Popen's)
        self.proc = None
        self.log = None

    def run_cli(self, *args, timeout=60, cwd=SRC):
        """Runs `tickpool ARGS` with this server's environment (in the source tree unless `cwd`
        says otherwise); returns CompletedProcess."""
        return subprocess.run([BIN, *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, wait=True):
        if self.migrate and self.pg is not None:
            r = self.run_cli("migrate")
            if r.returncode != 0:
                raise AssertionError(f"tickpool migrate failed: {r.stdout}{r.stderr}")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, *self.args], cwd=SRC, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=self.preexec_fn)
        if wait:
            try:
                # 60 s, as every worker's readiness below: under ASan+UBSan beside another test (a
                # six-node cluster's) a start once took over 15 s, the bound until session 22. A
                # server that exits meanwhile fails at once, with its exit code.
                wait_until(lambda: self.proc.poll() is not None or
                           self.http("GET", "/healthz")[0] == 200,
                           timeout=60, what="tickpool /healthz")
                if self.proc.poll() is not None:
                    raise AssertionError(f"tickpool exited with code {self.proc.returncode} "
                                         "before answering /healthz")
                # Workers listen before their Redis connection and account state are up (and answer
                # 503 meanwhile): wait until every worker is ready (60 s, then AssertionError),
                # unless the test started the server against no Redis on purpose. A test that
                # starts it against a reachable Redis that cannot serve (a SIGSTOPped one still
                # accepts connections) calls start(wait=False) and waits for what it needs. With
                # Postgres, also (best effort: a test may start it with Postgres down or no round on
                # purpose) until every worker has a round open and Postgres up (a 200 may be
                # "degraded" before the first Postgres probe).
                if not self._redis_reachable():
                    self.wait_ready(healthz=True)  # every worker listening, at least
                else:
                    self.wait_ready()
                    if self.pg is not None:
                        try:
                            self.wait_ready(postgres=True, timeout=10)
                        except AssertionError:
                            pass
            except BaseException:  # why it did not come up, for `with` and a bare start() alike
                self.dump_log()
                raise
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the master (and so its workers); returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        # Nothing the server started may outlive it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None
        self.log.close()
        return code

    def _redis_reachable(self):
        """Whether a Redis of TICKPOOL_REDIS_URL accepts connections (a test may point the server
        at none on purpose)."""
        for url in self.env.get("TICKPOOL_REDIS_URL", "").split(","):
            u = urllib.parse.urlsplit(url.strip())
            try:
                if u.scheme == "unix":
                    with socket.socket(socket.AF_UNIX) as c:
                        c.settimeout(2)
                        c.connect(u.path)
                    return True
                if u.hostname and u.port:
                    socket.create_connection((u.hostname, u.port), timeout=2).close()
                    return True
            except (OSError, ValueError):
                continue
        return False

    def worker_count(self):
        """The number of workers the server runs (TICKPOOL_SERVER_WORKERS)."""
        try:
            return max(1, int(self.env.get("TICKPOOL_SERVER_WORKERS", "1")))
        except ValueError:
            return 1

    def wait_ready(self, game=False, postgres=False, healthz=False, timeout=60):
        """Waits until EVERY worker answers /readyz ready; returns {worker index: last body}.

        A fresh connection reaches any one worker (each listens with SO_REUSEPORT) and
        X-Tickpool-Worker says which: /readyz is asked again until each worker's last answer
        says ready. Ready is the worker's own state by default: its Redis connection is up and
        its account state (token secret, revoked and disabled accounts) loaded, so none of its
        requests answers 503 for want of them ("no open round" is then all /readyz may still
        lack); with game=True also an open round (or the operator's pause), with postgres=True
        also Postgres up; with healthz=True only that it answers /healthz (a server with no
        Redis, whose /readyz never says ready: every worker started). Raises AssertionError
        with each worker's last answer after `timeout`, or at once when the server exits: the
        deadline only catches a server that never gets ready, so a 503 afterwards is a failure,
        not a slow start."""
        n = self.worker_count()
        last = {}

        def ready(st, body):
            if healthz:
                return st == 200
            if postgres:
                return st == 200 and b'"postgres":"up"' in body
            return st == 200 or (not game and b"not ready: no open round" in body)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError("tickpool exited while waiting for its workers to be ready")
            try:
                st, h, body = self.http("GET", "/healthz" if healthz else "/readyz", timeout=5)
                if "x-tickpool-worker" in h:
                    last[h["x-tickpool-worker"]] = (st, body)
            except (OSError, http.client.HTTPException):
                pass  # a worker restarting: ask again
            if len(last) >= n and all(ready(*v) for v in last.values()):
                return {w: body for w, (_, body) in last.items()}
            if time.monotonic() > deadline:
                raise AssertionError(f"not every one of {n} workers ready after {timeout} s "
                                     f"(game={game}, postgres={postgres}, healthz={healthz}); "
                                     "last answers: "
                                     f"{dict(sorted(last.items()))}")
            time.sleep(0.02)

    def worker_pids(self):
        """PIDs of the master's child processes."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def http(self, method, path, body=None, headers=None, tls=False, timeout=10):
        """One request on a fresh connection; returns (status, headers dict lowercased, bytes)."""
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None, tls=False):
        """Like http() but decodes a JSON body: returns (status, value)."""
        status, _, data = self.http(method, path, body=body, headers=headers, tls=tls)
        return status, (json.loads(data) if data else None)

    def __enter__(self):
        try:
            return self.start()  # which shows the log's tail if the server does not come up
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.dump_log()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def dump_log(self, lines=60):
        try:
            tail = self.log_text().splitlines()[-lines:]
            sys.stderr.write("---- tickpool log (tail) ----\n" + "\n".join(tail) + "\n")
        except OSError:
            pass


def main():
    """Runs every test_* function of the calling module in order and reports.

    Prints one line per test and a closing 'N passed, N failed' line; exits 0, 1 on failure or
    when there is no test to run, 2 when a test named on the command line does not exist, or 77
    when every test was skipped.
    """
    mod = sys.modules["__main__"]
    only = sys.argv[1:]
    tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
    if only:
        unknown = sorted(set(only) - {n for n, _ in tests})
        if unknown:  # a typo would otherwise pass having run nothing
            print(f"no such test: {' '.join(unknown)}", flush=True)
            sys.exit(2)
        tests = [(n, f) for n, f in tests if n in only]
    if not tests:
        print("no test_* function to run", flush=True)
        sys.exit(1)
    passed = failed = skipped = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print(f"skip - {name}: {e}", flush=True)
            continue
        except Exception:
            failed += 1
            print(f"not ok - {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            traceback.print_exc()
            continue
        passed += 1
        print(f"ok - {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    if failed:
        sys.exit(1)
    if skipped and not passed:
        sys.exit(77)
    sys.exit(0)
