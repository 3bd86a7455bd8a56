"""scripts/check-test-lists, the build's `test_lists` target (tests/meson.build): a test file the
build dir does not know (an integration test not listed in tests/meson.build, a unit test added
after the build dir was configured) fails the build and `meson test` with its name, rather than
being skipped in silence. No services: it runs the script on a scratch tree."""

import os
import re
import subprocess
import tempfile

import tpenv

SRC = os.environ.get("TP_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SRC, "scripts", "check-test-lists")
HINT = "list it in tests/meson.build, or run meson setup --reconfigure BUILD"


def check(root, *groups):
    """Runs the script in a scratch build dir with (dir, pattern, names) groups."""
    argv = [SCRIPT, "test_lists.stamp", root]
    for folder, pattern, names in groups:
        argv += ["--", folder, pattern, HINT] + names
    with tempfile.TemporaryDirectory() as build:
        r = subprocess.run(argv, cwd=build, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        return r.returncode, r.stderr, os.path.exists(os.path.join(build, "test_lists.stamp")), build


def test_scratch_tree():
    with tempfile.TemporaryDirectory() as root:
        for f in ("integ/test_a.py", "integ/test_b.py", "integ/alib.py", "unit/x/test_m.c"):
            os.makedirs(os.path.dirname(os.path.join(root, f)), exist_ok=True)
            open(os.path.join(root, f), "w").close()
        unit = ("unit", "*/test_*.c", ["x/test_m.c"])
        # The lists match: exit 0 and the stamp written.
        rc, err, stamp, _ = check(root, ("integ", "test_*.py", ["test_a.py", "test_b.py"]), unit)
        assert (rc, err, stamp) == (0, "", True), (rc, err)
        # A file not listed: exit 1, named with the hint (the build dir's path in it), no stamp.
        rc, err, stamp, build = check(root, ("integ", "test_*.py", ["test_a.py"]), unit)
        assert rc == 1 and not stamp, (rc, err)
        assert "integ/test_b.py: not known to this build dir" in err, err
        assert "meson setup --reconfigure " + build in err, err
        # A listed file that is gone, and a new unit test in a new folder.
        os.makedirs(os.path.join(root, "unit", "y"))
        open(os.path.join(root, "unit", "y", "test_n.c"), "w").close()
        rc, err, stamp, _ = check(root, ("integ", "test_*.py", ["test_a.py", "test_b.py",
                                                                "test_c.py"]), unit)
        assert rc == 1 and not stamp, (rc, err)
        assert "integ/test_c.py: known to this build dir but gone" in err, err
        assert "unit/y/test_n.c: not known to this build dir" in err, err
        assert "alib.py" not in err and "test_a.py" not in err, err
        # Bad usage: exit 2, nothing written.
        for args in ([], ["s"], ["s", root, "integ"], ["s", root, "--", "integ", "test_*.py"]):
            r = subprocess.run([SCRIPT] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=30)
            assert r.returncode == 2 and b"check-test-lists STAMP" in r.stderr, (args, r)


def test_every_integration_test_listed():
    """tests/meson.build lists exactly the files in tests/integ (what the build checks too)."""
    text = open(os.path.join(SRC, "tests", "meson.build")).read()
    names = lambda var: re.findall(r"'(\w+)'", re.search(var + r" = \[(.*?)\]", text, re.S).group(1))
    py = ["test_%s.py" % n for n in names("integ_py_names")]
    c = ["test_%s.c" % n for n in names("integ_c_names")]
    assert "test_test_lists.py" in py, py
    rc, err, _, _ = check(SRC, ("tests/integ", "test_*.py", py), ("tests/integ", "test_*.c", c))
    assert rc == 0, err


if __name__ == "__main__":
    tpenv.main()
