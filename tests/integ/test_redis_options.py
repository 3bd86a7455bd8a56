"""The embedded Redis's options (scripts/lib/services.sh's start_redis, which scripts/up,
scripts/test and bench/run use) and docker-compose.yml's Redis are the same, and the one that
changes what a rewrite writes reaches it: `rdbcompression no` (docs/operations.md §4 "AOF
rewrites": LZF was a third of the rewrite child's CPU on find-max's dataset, bench/README.md
"Session 28: huge pages and the rewrite policy at find-max"), so a rewrite's base holds a compressible value at its full size."""

import json
import os
import re
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


def test_compose_runs_the_embedded_options():
    # docs/operations.md §4: "keep the two alike". Every option either one sets must be in the
    # compose file with the value the embedded Redis runs with (an option only the compose file
    # names must hold there too, e.g. its appendfsync everysec, Redis's default).
    compose = compose_options()
    with tpenv.EmbeddedRedis(record_args=True) as e:
        r = e.client()
        embedded = {k: v for k, v in pairs(e.args()).items() if k not in PER_INSTANCE}
        missing = sorted(set(embedded) - set(compose))
        assert not missing, f"start_redis sets {missing}, docker-compose.yml's Redis does not"
        for name, value in compose.items():
            got = r.config_get(name).get(name)
            assert got == memory_value(value), (
                f"docker-compose.yml runs {name} {value}, the embedded Redis {got}")


def test_a_rewrite_writes_its_base_uncompressed():
    with tpenv.EmbeddedRedis() as e:
        r = e.client()
        assert r.config_get("rdbcompression")["rdbcompression"] == "no"
        r.set("compressible", "a" * (1 << 20))  # LZF makes ~12 KB of it
        r.bgrewriteaof()
        for _ in range(300):
            if r.info("persistence")["aof_rewrite_in_progress"] == 0 and \
                    r.info("persistence")["aof_rewrites"] >= 1:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("BGREWRITEAOF did not finish in 15 s")
        aof = os.path.join(e.dir, "appendonlydir")
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
