"""Redis's heap on transparent huge pages, as scripts/lib/services.sh's start_redis (scripts/up,
scripts/test, bench/run) starts Redis: with REDIS_THP=yes Redis keeps huge pages on
(`disable-thp no`) and its jemalloc backs its heap with them (AnonHugePages of the process);
with REDIS_THP=no neither. A kernel whose THP setting is `never` must not stop it starting: the
test shows jemalloc (which reads /sys/kernel/mm/transparent_hugepage/enabled at start) a `never`
file in a mount namespace of its own; that part needs root and skips without it."""

import os
import shutil
import subprocess
import tempfile

import tpenv

SRC = tpenv.SRC
THP_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def kernel_thp():
    """The kernel's THP setting (always, madvise or never), or None without THP support."""
    try:
        with open(THP_FILE) as f:
            return f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return None


def anon_huge_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0


def run(thp, prefix=()):
    """Starts Redis, writes ~24 MB, returns (disable-thp, AnonHugePages kB); stops it."""
    with tpenv.EmbeddedRedis(thp=thp, prefix=prefix) as e:
        r = e.client()
        for i in range(12):  # large values: jemalloc's extents, where huge pages go
            r.set(f"v{i}", "x" * (2 << 20))
        return r.config_get("disable-thp")["disable-thp"], anon_huge_kb(e.pid)


def test_thp_yes_puts_the_heap_on_huge_pages():
    disable, huge = run("yes")
    assert disable == "no", disable
    if kernel_thp() in ("always", "madvise"):
        assert huge > 0, "REDIS_THP=yes, yet no AnonHugePages in redis-server"


def test_thp_no_leaves_them_off():
    disable, huge = run("no")
    assert disable == "yes", disable
    if kernel_thp() == "madvise":  # under `always` the kernel may back pages before the prctl
        assert huge == 0, f"REDIS_THP=no, yet {huge} kB of AnonHugePages"


def test_default_is_as_shipped():
    # docs/operations.md §4 "Huge pages": what start_redis does without REDIS_THP.
    disable, _ = run(None)
    assert disable == SHIPPED_DISABLE_THP, disable


def test_a_bad_redis_thp_is_refused():
    # A typo must not start Redis without what was asked for, in silence.
    e = tpenv.EmbeddedRedis(thp="Yes")
    try:
        try:
            e.start()
        except AssertionError as err:
            assert "REDIS_THP: yes or no (got 'Yes')" in str(err), err
        else:
            raise AssertionError("start_redis ran with REDIS_THP=Yes")
        assert not os.path.exists(os.path.join(e.dir, "redis.pid")), "a Redis was started"
    finally:
        e.__exit__()


def test_kernel_thp_never_still_starts():
    if os.geteuid() != 0 or shutil.which("unshare") is None or kernel_thp() is None:
        raise tpenv.Skip("needs root, unshare and a kernel with THP")
    with tempfile.NamedTemporaryFile("w", prefix="tp-thp-never-", dir="/tmp") as never:
        never.write("always madvise [never]\n")
        never.flush()
        probe = subprocess.run(["unshare", "-m", "sh", "-c",
                                f'mount --bind "{never.name}" {THP_FILE} && cat {THP_FILE}'],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode != 0 or "[never]" not in probe.stdout:
            raise tpenv.Skip(f"no mount namespace here: {probe.stderr.strip()}")
        # bash in a namespace of its own sees `never`; start_redis daemonizes Redis in it.
        bind = f'mount --bind "{never.name}" {THP_FILE} && exec "$@"'
        prefix = ["unshare", "-m", "sh", "-c", bind, "sh"]
        disable, huge = run("yes", prefix)
    assert disable == "no", disable
    if kernel_thp() == "madvise":  # the real setting: only jemalloc's madvise gives huge pages
        assert huge == 0, f"jemalloc saw `never`, yet {huge} kB of AnonHugePages"


# What start_redis ships (REDIS_THP unset): "yes" while huge pages are off by default.
SHIPPED_DISABLE_THP = "yes"

if __name__ == "__main__":
    tpenv.main()
