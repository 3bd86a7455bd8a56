"""scripts/check-test-lists, the build's `test_lists` target (tests/meson.build): a test file the
build dir does not know (an integration test not listed in tests/meson.build, a unit test, C
source, Lua script, header or fuzzer added after the build dir was configured) fails the build
and `meson test` with its name, rather than being left out in silence; so does a Python test file
that does not run its tests through tpenv.main() (it passed having run nothing). No services: it
runs the script on a scratch tree."""

import os
import re
import shlex
import shutil
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


GOOD = """import tpenv


def test_one():
    pass


if __name__ == "__main__":
    tpenv.main()
"""


def write(root, path, text=""):
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    with open(os.path.join(root, path), "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)


def test_scratch_tree():
    with tempfile.TemporaryDirectory() as root:
        for f in ("integ/test_a.py", "integ/test_b.py"):
            write(root, f, GOOD)
        for f in ("integ/alib.py", "unit/x/test_m.c"):
            write(root, f)
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
        # Sources meson lists from the root when it configures (folder ".", as src/*/*.c and
        # scripts/lua/*.lua): a module and a script added after, named as the tree names them.
        for f in ("mods/x/a.c", "mods/x/b.c", "lua/one/a.lua", "lua/one/b.lua"):
            write(root, f)
        rc, err, stamp, _ = check(root, (".", "mods/*/*.c", ["mods/x/a.c"]),
                                  (".", "lua/one/*.lua", ["lua/one/a.lua"]))
        assert rc == 1 and not stamp, (rc, err)
        assert [l.split(";")[0] for l in err.splitlines()] == [
            f"check-test-lists: {f}: not known to this build dir"
            for f in ("mods/x/b.c", "lua/one/b.lua")], err
        # Bad usage: exit 2, nothing written.
        for args in ([], ["s"], ["s", root, "integ"], ["s", root, "--", "integ", "test_*.py"]):
            r = subprocess.run([SCRIPT] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=30)
            assert r.returncode == 2 and b"check-test-lists STAMP" in r.stderr, (args, r)


def test_python_test_file_runs_its_tests():
    """A Python test file that would pass having run nothing, or run only the tests it names by
    hand, fails the check, named with why; one that runs its tests through tpenv.main() passes,
    and so does a helper file the pattern does not match."""
    head = "import tpenv\n\n\ndef test_one():\n    pass\n\n\n"
    guard = 'if __name__ == "__main__":\n'
    hostile = {
        "no_guard": (head, "has no `if __name__"),
        "no_test": ("import tpenv\n\n" + guard + "    tpenv.main()\n", "defines no test_*"),
        "nested_test": ("import tpenv\n\nclass T:\n    def test_one(self):\n        pass\n\n"
                        + guard + "    tpenv.main()\n", "defines no test_*"),
        "by_hand": (head + guard + "    test_one()\n    print('ok')\n", "does not end in"),
        "main_and_more": (head + guard + "    tpenv.main()\n    test_one()\n", "does not end in"),
        "main_then_code": (head + guard + "    tpenv.main()\n\nprint('late')\n",
                           "does not end in"),
        "two_guards": (head + guard + "    pass\n" + guard + "    tpenv.main()\n",
                       "does not end in"),
        "with_else": (head + guard + "    tpenv.main()\nelse:\n    pass\n", "has no `if __name__"),
        "not_equal": (head + 'if __name__ != "__main__":\n    tpenv.main()\n',
                      "has no `if __name__"),
        "other_main": (head + "from tpenv import main\n" + guard + "    main()\n",
                       "does not end in"),
        "main_with_args": (head + guard + "    tpenv.main(1)\n", "does not end in"),
        "syntax": (head + guard + "    tpenv.main(\n", "cannot be read as Python"),
        "not_utf8": (b"x = '\xff'\n", "cannot be read as Python"),
    }
    with tempfile.TemporaryDirectory() as root:
        write(root, "integ/test_good.py", GOOD)
        write(root, "integ/test_flipped.py", GOOD.replace('__name__ == "__main__"',
                                                          '"__main__" == __name__'))
        write(root, "integ/helper.py", "x = 1\n")  # not a test file: not read
        names = ["test_good.py", "test_flipped.py"]
        rc, err, stamp, _ = check(root, ("integ", "test_*.py", names))
        assert (rc, err, stamp) == (0, "", True), (rc, err)
        # Every hostile file at once (listed, so only the runner rule speaks): one line each.
        for name, (text, _) in hostile.items():
            write(root, f"integ/test_{name}.py", text)
        rc, err, stamp, _ = check(root, ("integ", "test_*.py",
                                         names + [f"test_{n}.py" for n in hostile]))
        assert rc == 1 and not stamp, (rc, err)
        lines = err.splitlines()
        assert len(lines) == len(hostile), err
        for name, (_, why) in hostile.items():
            want = f"check-test-lists: integ/test_{name}.py: " + why
            assert sum(l.startswith(want) for l in lines) == 1, (name, err)
        # tpenv.main() itself: a file with no test, or a test name that does not exist on the
        # command line, fails rather than passing having run nothing.
        for f, args, want_rc, want in (
                ("test_good.py", [], 0, "1 passed, 0 failed"),
                ("test_good.py", ["test_one"], 0, "1 passed, 0 failed"),
                ("test_good.py", ["test_onee"], 2, "no such test: test_onee"),
                ("test_no_test.py", [], 1, "no test_* function to run")):
            r = subprocess.run(["/usr/bin/python3", os.path.join(root, "integ", f)] + args,
                               env=dict(os.environ, PYTHONPATH=os.path.join(SRC, "tests", "lib")),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=60)
            assert r.returncode == want_rc and want in r.stdout, (f, args, r)
        # The rule is for Python files: a C test group is not parsed.
        write(root, "unit/x/test_m.c", "int main(void) { return 0; }\n")
        rc, err, _, _ = check(root, ("unit", "*/test_*.c", ["x/test_m.c"]))
        assert rc == 0, err


def build_dir_command():
    """The build dir's own test_lists command (what every build runs), as argv: from ninja, so
    the test reads what tests/meson.build made of it, not a copy."""
    build = os.path.dirname(os.path.abspath(tpenv.BIN))
    r = subprocess.run(["ninja", "-C", build, "-t", "commands",
                        os.path.join("tests", "test_lists.stamp")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, f"no test_lists in {build} (TP_BIN={tpenv.BIN}): {r.stderr}"
    argv = shlex.split(r.stdout.strip().splitlines()[-1])
    assert os.path.basename(argv[1]) == "check-test-lists", argv[:4]
    argv[1] = os.path.join(build, argv[1])
    return argv


def test_build_dir_checks_every_folder_read_at_configure():
    """The build dir's test_lists command, run on a copy of the tree, passes; a file added to any
    folder it checks (a fuzzer, a C source, a Lua script, a header, a unit or integration test)
    fails it, each named. The fuzzers are among them: tests/fuzz is read at configure time, and a
    fuzzer added after was left out of the fuzz build in silence."""
    argv = build_dir_command()
    groups, i = [], argv.index("--")
    while i < len(argv):
        groups.append((argv[i + 1], argv[i + 2]))
        i = argv.index("--", i + 1) if "--" in argv[i + 1:] else len(argv)
    assert ("tests/fuzz", "fuzz_*.c") in groups, groups
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as build:
        for folder, pattern in groups:
            top = pattern.split("/")[0] if folder == "." else folder  # src, scripts, tests/…
            if not os.path.exists(os.path.join(root, top)):
                shutil.copytree(os.path.join(SRC, top), os.path.join(root, top))
        run = lambda: subprocess.run(argv[:2] + ["test_lists.stamp", root] + argv[4:], cwd=build,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     timeout=60)
        r = run()
        assert r.returncode == 0, r.stderr
        added = [os.path.normpath(os.path.join(folder, pattern.replace("*", "zz_new")))
                 for folder, pattern in groups]
        for f in added:
            write(root, f, "")
        r = run()
        assert r.returncode == 1, r
        named = re.findall(r"^check-test-lists: (\S+): not known to this build dir;",
                           r.stderr, re.M)
        assert sorted(named) == sorted(added), r.stderr


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
