"""A private redis-server under callgrind that counts only the instructions inside EVALSHA, for
bench/batch_callgrind.py and bench/settle_callgrind.py: instruction counts do not drift with the
machine's load as CPU times do.

    with CallgrindRedis(["--hash-max-listpack-entries", "128"], keep=path) as r:
        r.client.script_load(...)   # a redis-py client, decode_responses=True
    r.instructions                  # counted inside EVALSHA, once the server has stopped
    r.aof                           # after r.aof_mark(): {command: [count, bytes]} the AOF got since


The server runs AOF on (as scripts/up) in a temporary directory on a free 127.0.0.1 port; it is
stopped, and the directory removed, however the block ends. `keep` copies callgrind's output
(for callgrind_annotate --inclusive=yes).
"""

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import redis


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(client, seconds):
    """Waits until a just-started redis-server answers PING; RuntimeError after `seconds`."""
    for _ in range(int(seconds * 10)):
        try:
            return client.ping()
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"redis-server did not answer within {seconds} s")


def aof_tally(data):
    """Commands of AOF bytes (RESP arrays of bulk strings) by name: {name: [count, bytes]}."""
    out, i = {}, 0
    while i < len(data):
        start, j = i, data.index(b"\r\n", i)
        if data[i:i + 1] != b"*":
            raise RuntimeError(f"not a RESP array in the AOF at byte {i}")
        n, i, name = int(data[i + 1:j]), j + 2, None
        for k in range(n):
            j = data.index(b"\r\n", i)
            length, i = int(data[i + 1:j]), j + 2
            if k == 0:
                name = data[i:i + length].decode().upper()
            i += length + 2
        c = out.setdefault(name, [0, 0])
        c[0] += 1
        c[1] += i - start
    return out


class CallgrindRedis:
    def __init__(self, redis_args=(), keep=None, toggles=("evalShaCommand",)):
        self.redis_args, self.keep = list(redis_args), keep
        self.toggles = list(toggles)
        self.instructions = None
        self.aof, self._aof_at = None, None

    def __enter__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="tp-cg-")
        d = self._dir.name
        self._out = os.path.join(d, "callgrind.out")
        self.port = free_port()
        self._proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind"]
            + [f"--toggle-collect={t}" for t in self.toggles]
            + [f"--callgrind-out-file={self._out}", "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", d, "--save", "", "--appendonly", "yes"]
            + self.redis_args,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, decode_responses=True)
        try:
            for _ in range(600):  # valgrind takes seconds to start redis-server
                try:
                    self.client.ping()
                    return self
                except redis.ConnectionError:
                    time.sleep(0.1)
            raise RuntimeError("redis-server under callgrind did not answer within 60 s")
        except BaseException:
            self._stop()
            raise

    def _aof_file(self):
        files = glob.glob(os.path.join(self._dir.name, "appendonlydir", "*.incr.aof"))
        if len(files) != 1:
            raise RuntimeError(f"want one incremental AOF file, found {files}")
        return files[0]

    @property
    def pid(self):
        """redis-server's process id (valgrind runs it in its own process)."""
        return self._proc.pid

    def zero(self):
        """Zeroes callgrind's counters: what ran before (a setup through the counted commands)
        is left out of r.instructions."""
        out = subprocess.run(["callgrind_control", "-z", str(self._proc.pid)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"callgrind_control -z failed: {out.stdout}{out.stderr}")

    def aof_mark(self):
        """From here on, the AOF's commands are tallied into self.aof when the server stops
        (Redis writes the AOF before it answers, so what was answered is in the file)."""
        self._aof_at = (self._aof_file(), os.path.getsize(self._aof_file()))

    def _stop(self):
        try:
            self.client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the expected answer: the server went away
        finally:
            if self._proc.poll() is None:
                self._proc.terminate()
            self._proc.wait()

    def __exit__(self, exc_type, exc, tb):
        try:
            self._stop()
            if exc_type is None:
                if self._aof_at is not None:
                    with open(self._aof_at[0], "rb") as f:
                        f.seek(self._aof_at[1])
                        self.aof = aof_tally(f.read())
                if self.keep:
                    shutil.copyfile(self._out, self.keep)
                with open(self._out) as f:
                    m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
                if m is None:
                    raise RuntimeError(f"no instruction total in {self._out}")
                self.instructions = int(m.group(1))
        finally:
            self._dir.cleanup()
        return False
