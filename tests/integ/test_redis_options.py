"""The embedded Redis's options (scripts/lib/services.sh's start_redis, which scripts/up,
scripts/test and bench/run use) and docker-compose.yml's Redis are the same, and the one that
changes what a rewrite writes reaches it: `rdbcompression no` (docs/operations.md §4 "AOF
rewrites": LZF was a third of the rewrite child's CPU on find-max's dataset, bench/README.md
"Session 28: huge pages and the rewrite policy at find-max"), so a rewrite's base holds a compressible value at its full size."""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time

import tpenv

SRC = tpenv.SRC
# Arguments that say where one Redis runs, not how: start_redis's own, and the tests' `--save ""`.
PER_INSTANCE = {"port", "bind", "dir", "daemonize", "pidfile", "logfile", "save"}


def memory_value(v):
    """A Redis memory setting as CONFIG GET answers it: "256mb" → "268435456" (Redis's units: k,
    m, g are powers of 1000, kb, mb, gb of 1024)."""
    m = re.fullmatch(r"(\d+)(k|kb|m|mb|g|gb)?", v.lower())
    if not m or not m.group(2):
        return v
    unit = {"k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}[m.group(2)]
    return str(int(m.group(1)) * unit)


def pairs(args):
    """{name: value} of a redis-server argument list of `--name value` pairs."""
    out, i = {}, 0
    while i < len(args):
        assert args[i].startswith("--"), f"not an option: {args[i]!r} in {args}"
        out[args[i][2:]] = args[i + 1]
        i += 2
    return out


def compose_options():
    """docker-compose.yml's Redis `command`, as {name: value}."""
    with open(os.path.join(SRC, "docker-compose.yml")) as f:
        text = f.read()
    m = re.search(r"^\s*redis:\n(?:.*\n)*?\s*command:\s*(\[[^\]]*\])", text, re.M)
    assert m, "docker-compose.yml: no `command: [...]` under `redis:`"
    cmd = json.loads(m.group(1))
    assert cmd[0] == "redis-server", cmd
    return pairs(cmd[1:])


class Embedded:
    """start_redis in a temporary directory, with a redis-server first in PATH that writes its
    arguments down and runs the real one: what start_redis passes, not what its text says."""

    def __enter__(self):
        real = shutil.which("redis-server")
        if real is None:
            raise tpenv.Skip("redis-server not installed")
        self.dir = tempfile.mkdtemp(prefix="tp-redis-options-", dir="/tmp")
        shim = os.path.join(self.dir, "bin")
        os.mkdir(shim)
        self.args_file = os.path.join(self.dir, "args")
        with open(os.path.join(shim, "redis-server"), "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{self.args_file}"\nexec "{real}" "$@"\n')
        os.chmod(os.path.join(shim, "redis-server"), stat.S_IRWXU)
        env = dict(os.environ, PATH=shim + os.pathsep + os.environ.get("PATH", ""))
        env.pop("REDIS_THP", None)
        self.port = tpenv.free_port()
        cmd = (f'. "{SRC}/scripts/lib/common.sh"; . "{SRC}/scripts/lib/services.sh"; '
               'start_redis "$@"')
        out = subprocess.run(["bash", "-c", cmd, "sh", os.path.join(self.dir, "redis"),
                              str(self.port), "--save", ""],
                             capture_output=True, text=True, timeout=60, env=env)
        if out.returncode != 0:
            self.__exit__()
            raise AssertionError(f"start_redis failed: {out.stdout}{out.stderr}")
        import redis
        self.r = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        return self

    def args(self):
        with open(self.args_file) as f:
            return pairs(f.read().splitlines())

    def __exit__(self, *exc):
        cmd = f'. "{SRC}/scripts/lib/common.sh"; . "{SRC}/scripts/lib/services.sh"; stop_redis "$@"'
        subprocess.run(["bash", "-c", cmd, "sh", os.path.join(self.dir, "redis")], timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_compose_runs_the_embedded_options():
    # docs/operations.md §4: "keep the two alike". Every option either one sets must be in the
    # compose file with the value the embedded Redis runs with (an option only the compose file
    # names must hold there too, e.g. its appendfsync everysec, Redis's default).
    compose = compose_options()
    with Embedded() as e:
        embedded = {k: v for k, v in e.args().items() if k not in PER_INSTANCE}
        missing = sorted(set(embedded) - set(compose))
        assert not missing, f"start_redis sets {missing}, docker-compose.yml's Redis does not"
        for name, value in compose.items():
            got = e.r.config_get(name).get(name)
            assert got == memory_value(value), (
                f"docker-compose.yml runs {name} {value}, the embedded Redis {got}")


def test_a_rewrite_writes_its_base_uncompressed():
    with Embedded() as e:
        assert e.r.config_get("rdbcompression")["rdbcompression"] == "no"
        e.r.set("compressible", "a" * (1 << 20))  # LZF makes ~12 KB of it
        e.r.bgrewriteaof()
        for _ in range(300):
            if e.r.info("persistence")["aof_rewrite_in_progress"] == 0 and \
                    e.r.info("persistence")["aof_rewrites"] >= 1:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("BGREWRITEAOF did not finish in 15 s")
        aof = os.path.join(e.dir, "redis", "appendonlydir")
        base = [n for n in os.listdir(aof) if n.endswith(".base.rdb")]
        assert len(base) == 1, os.listdir(aof)
        size = os.path.getsize(os.path.join(aof, base[0]))
        assert size > 1 << 20, f"the rewrite's base is {size} B: the 1 MiB value was compressed"


def test_memory_value():
    assert memory_value("256mb") == str(256 << 20)
    assert memory_value("1gb") == str(1 << 30)
    assert memory_value("10k") == "10000"
    assert memory_value("128") == "128"
    assert memory_value("yes") == "yes"


if __name__ == "__main__":
    tpenv.main()
