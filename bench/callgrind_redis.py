"""A private redis-server under callgrind that counts only the instructions inside EVALSHA, for
bench/batch_callgrind.py and bench/settle_callgrind.py: instruction counts do not drift with the
machine's load as CPU times do.

    with CallgrindRedis(["--hash-max-listpack-entries", "128"], keep=path) as r:
        r.client.script_load(...)   # a redis-py client, decode_responses=True
    r.instructions                  # counted inside EVALSHA, once the server has stopped

The server runs AOF on (as scripts/up) in a temporary directory on a free 127.0.0.1 port; it is
stopped, and the directory removed, however the block ends. `keep` copies callgrind's output
(for callgrind_annotate --inclusive=yes).
"""

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


class CallgrindRedis:
    def __init__(self, redis_args=(), keep=None):
        self.redis_args, self.keep = list(redis_args), keep
        self.instructions = None

    def __enter__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="tp-cg-")
        d = self._dir.name
        self._out = os.path.join(d, "callgrind.out")
        self.port = free_port()
        self._proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--toggle-collect=evalShaCommand",
             f"--callgrind-out-file={self._out}", "redis-server", "--port", str(self.port),
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
