"""The bench's viewer reader (`loadgen viewers`, bench/lg_viewers.c) against bench/rawfanout.

Tick lag and fan-out spread are taken when each beat reached the viewer's socket (the kernel's
receive time, SO_TIMESTAMPNS), so a reader that falls behind does not add its own delay to them;
the read-time figures are reported beside them (bench/README.md "Viewers", session 14). Here
loadgen is stopped (SIGSTOP) for 50 ms a dozen times inside its window: a beat that arrives
meanwhile is read up to 50 ms late, which the read-time lag shows and the arrival lag does not.
The stops are shorter than a beat's 100 ms, so no read takes two beats: TCP merges beats that
wait in a socket, the merged bytes carry the later one's time, and loadgen counts such beats
(`beats_merged`), which a longer stop shows.

The boundaries scenario's `round` messages are timed the same way: a small WebSocket server here
writes each boundary's `round` message while loadgen is stopped (test_round_lag_from_arrival).
Its same-run reference, rawfanout --boundary-ms, rawfanout's and bench/run's option checks are
tested last.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import tpenv

BENCH = os.path.join(os.path.dirname(os.environ.get("TP_BIN", "build/tickpool")), "bench")


def wait_listening(port, proc):
    """Until rawfanout takes connections on port (a fixed sleep failed on a loaded host)."""

    def up():
        assert proc.poll() is None, f"rawfanout exited {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    tpenv.wait_until(up, timeout=15.0, what=f"rawfanout listening on {port}")


def run_viewers(stops):
    """loadgen viewers on 20 rawfanout sockets, stopped for each (after_s, for_s) of `stops`
    (seconds from the start of the previous stop's end); its JSON."""
    lg_bin, raw_bin = os.path.join(BENCH, "loadgen"), os.path.join(BENCH, "rawfanout")
    if not (os.access(lg_bin, os.X_OK) and os.access(raw_bin, os.X_OK)):
        raise tpenv.Skip(f"bench binaries not built in {BENCH}")
    port = tpenv.free_port()
    raw = subprocess.Popen([raw_bin, "-p", str(port), "--tick-ms", "100"],
                           stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, raw)
        lg = subprocess.Popen([lg_bin, "viewers", "-p", str(port), "-c", "20", "-d", "4", "-w",
                               "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for after_s, for_s in stops:
            time.sleep(after_s)
            lg.send_signal(signal.SIGSTOP)
            time.sleep(for_s)
            lg.send_signal(signal.SIGCONT)
        out, _ = lg.communicate(timeout=30)
    finally:
        raw.terminate()
        raw.wait(timeout=10)
    return json.loads(out.decode().strip().splitlines()[-1])


def test_lag_from_arrival_not_read():
    # Inside the measured window (1 s warm-up after the connects), 12 stops of 50 ms.
    j = run_viewers([(1.5, 0.05)] + [(0.18, 0.05)] * 11)
    assert j["sockets_open"] == 20, j
    assert j["ticks_per_socket_s"] > 5, j
    # About one beat in seven arrived while loadgen was stopped, and was read up to 50 ms late.
    assert j["lag_read_p99_us"] >= 25_000, j
    assert j["lag_p99_us"] <= j["lag_read_p99_us"] - 15_000, j
    assert j["lag_p50_us"] <= j["lag_read_p50_us"], j
    assert j["spread_tick_read_p99_us"] >= 0 and j["spread_tick_p99_us"] >= 0, j


def test_merged_beats_counted():
    """A stop of 350 ms lets three or more beats wait in each socket, merged by TCP: they are
    read together and counted as merged (their arrival time is the last one's)."""
    j = run_viewers([(2.0, 0.35)])
    assert j["beats_merged"] >= 3 * 20, j


def ws_frame(payload):
    assert len(payload) < 126
    return bytes([0x82, len(payload)]) + payload


def mp_str(s):
    return bytes([0xa0 | len(s)]) + s.encode()


def round_msg(t_ms):
    """The `round` message announcing boundary T: an open round with opens_at = T (MessagePack)."""
    rnd = (b"\x82" + mp_str("state") + mp_str("open") + mp_str("opens_at")
           + b"\xd3" + struct.pack(">q", t_ms))
    return ws_frame(b"\x82" + mp_str("t") + mp_str("round") + mp_str("round") + rnd)


def tick_msg(ts_ms):
    return ws_frame(b"\x82" + mp_str("t") + mp_str("tick") + mp_str("ts")
                    + b"\xd3" + struct.pack(">q", ts_ms))


def accept_viewers(lfd, n, socks):
    """Accepts n WebSocket upgrades on lfd into socks."""
    for _ in range(n):
        s, _ = lfd.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += s.recv(4096)
        key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n")
               if l.lower().startswith(b"sec-websocket-key:")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                               .digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        socks.append(s)


def run_boundaries(later_write_ms, nsock=4, nbounds=8):
    """loadgen viewers on nsock sockets of a server here that, nbounds times, stops loadgen, writes
    each socket a boundary's `round` message with the beat of T behind it (one write, as tickpool
    does) at T, then, after later_write_ms (if not None), a later beat, and lets loadgen go on
    60 ms after T; loadgen's JSON."""
    lg_bin = os.path.join(BENCH, "loadgen")
    if not os.access(lg_bin, os.X_OK):
        raise tpenv.Skip(f"loadgen not built in {BENCH}")
    lfd = socket.socket()
    lfd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lfd.bind(("127.0.0.1", 0))
    lfd.listen(64)
    socks = []
    acc = threading.Thread(target=accept_viewers, args=(lfd, nsock, socks), daemon=True)
    acc.start()
    lg = subprocess.Popen([lg_bin, "viewers", "-p", str(lfd.getsockname()[1]), "-c", str(nsock),
                           "-d", "4", "-w", "0.5", "-q"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    try:
        acc.join(timeout=10)
        assert len(socks) == nsock, "loadgen did not connect"
        time.sleep(1.2)  # past the warm-up
        for _ in range(nbounds):
            lg.send_signal(signal.SIGSTOP)
            time.sleep(0.01)
            t_ms = int(time.time() * 1000)
            for s in socks:
                s.sendall(round_msg(t_ms) + tick_msg(t_ms))
            if later_write_ms is not None:
                time.sleep(later_write_ms / 1000)
                for s in socks:
                    s.sendall(tick_msg(t_ms + later_write_ms))
            time.sleep(max(0.0, t_ms / 1000 + 0.06 - time.time()))
            lg.send_signal(signal.SIGCONT)
            time.sleep(0.25)
        out, _ = lg.communicate(timeout=30)
    finally:
        if lg.poll() is None:
            lg.kill()
        for s in socks:
            s.close()
        lfd.close()
    return json.loads(out.decode().strip().splitlines()[-1])


def test_round_lag_from_arrival():
    """Each `round` message reached its socket at T and was read >= 50 ms later: the read-time
    figure shows the wait, the arrival figure does not. The beat of T in the same write does not
    make a merged read."""
    j = run_boundaries(None)
    assert j["round_boundaries"] == 8 and j["round_lag_n"] == 32, j
    # Room for this process being held between taking T and its writes on a loaded host; the
    # read-time figure (the old one) is >= 60 ms.
    assert j["round_lag_p99_us"] <= 40_000, j
    assert j["round_lag_read_p50_us"] >= 45_000, j
    assert j["round_lag_p99_us"] <= j["round_lag_read_p50_us"] - 20_000, j
    assert j["rounds_merged"] == 0, j
    for t, n, arrival_us, read_us in j["round_bounds"]:
        assert n == 4 and arrival_us <= read_us - 20_000, j["round_bounds"]


def test_round_merged_with_a_later_write_counted():
    """A beat written 30 ms after the pair waits in the socket with it: the read carries that
    beat's arrival time for the `round` message too (late), and is counted as merged."""
    j = run_boundaries(30)
    assert j["round_lag_n"] == 32, j
    assert j["rounds_merged"] == 32, j
    assert j["round_lag_p50_us"] >= 25_000, j


def test_rawfanout_boundary_pair():
    """rawfanout --boundary-ms 1000 (the boundaries scenario's reference): at every whole second T
    each socket gets the `round` pair of T (round N+1 open with opens_at = T, round N live with
    locks_at = T) in one write with the beat of T, and each process logs the boundary's walk."""
    lg_bin, raw_bin = os.path.join(BENCH, "loadgen"), os.path.join(BENCH, "rawfanout")
    if not (os.access(lg_bin, os.X_OK) and os.access(raw_bin, os.X_OK)):
        raise tpenv.Skip(f"bench binaries not built in {BENCH}")
    port = tpenv.free_port()
    raw = subprocess.Popen([raw_bin, "-p", str(port), "--tick-ms", "100", "--boundary-ms", "1000",
                            "--workers", "2"], stderr=subprocess.PIPE)
    try:
        wait_listening(port, raw)
        out = subprocess.run([lg_bin, "viewers", "-p", str(port), "-c", "10", "-d", "3.5", "-w",
                              "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=30, check=True).stdout
    finally:
        raw.terminate()
        err = raw.communicate(timeout=10)[1].decode()
    j = json.loads(out.decode().strip().splitlines()[-1])
    assert j["sockets_open"] == 10 and j["ticks_per_socket_s"] > 5, j
    # 3 or 4 whole seconds in a 3.5 s window, two receipts (the pair) on every socket for each.
    assert j["round_boundaries"] in (3, 4), j
    assert j["round_lag_n"] == 2 * 10 * j["round_boundaries"], j
    for t, n, _, _ in j["round_bounds"]:
        assert t % 1000 == 0 and n == 20, j["round_bounds"]
    lines = [l for l in err.splitlines() if " boundary t=" in l]
    ts = {int(l.split(" t=")[1].split()[0]) for l in lines}
    assert {b[0] for b in j["round_bounds"]} <= ts, (ts, j["round_bounds"])
    assert all(" written_us=" in l and " start_us=" in l for l in lines), lines


def test_rawfanout_stalled_boundaries_not_skipped():
    """rawfanout stopped (SIGSTOP) for 2.5 s inside the window misses two or three whole seconds;
    when it goes on, its next beat carries the pair of every boundary it missed, oldest first, so
    the reference's figures time each late from its own T instead of leaving it out (it used to
    send only the newest). The boundaries the viewers saw are every whole second in a row."""
    lg_bin, raw_bin = os.path.join(BENCH, "loadgen"), os.path.join(BENCH, "rawfanout")
    if not (os.access(lg_bin, os.X_OK) and os.access(raw_bin, os.X_OK)):
        raise tpenv.Skip(f"bench binaries not built in {BENCH}")
    port = tpenv.free_port()
    raw = subprocess.Popen([raw_bin, "-p", str(port), "--tick-ms", "100", "--boundary-ms", "1000"],
                           stderr=subprocess.PIPE)
    try:
        wait_listening(port, raw)
        lg = subprocess.Popen([lg_bin, "viewers", "-p", str(port), "-c", "10", "-d", "6", "-w",
                               "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # connected, warmed up, inside the measured window
        raw.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        raw.send_signal(signal.SIGCONT)
        out, _ = lg.communicate(timeout=30)
    finally:
        raw.send_signal(signal.SIGCONT)
        raw.terminate()
        err = raw.communicate(timeout=10)[1].decode()
    j = json.loads(out.decode().strip().splitlines()[-1])
    bounds = j["round_bounds"]
    ts = [b[0] for b in bounds]
    assert len(ts) >= 4 and ts == list(range(ts[0], ts[-1] + 1000, 1000)), ts
    assert all(n == 20 for _, n, _, _ in bounds), bounds  # the pair on each of 10 sockets
    assert max(mx for _, _, mx, _ in bounds) >= 1000000, bounds  # one waited out the stop
    logged = {int(l.split(" t=")[1].split()[0]) for l in err.splitlines() if " boundary t=" in l}
    assert set(ts) <= logged, (ts, sorted(logged))
    assert "(0 skipped)" in err, err[-300:]

def test_rawfanout_rejects_bad_options():
    """Every number rawfanout takes is whole, in range and nothing else; --boundary-ms must be a
    multiple of --tick-ms. A bad one exits 2 with a message and serves nothing."""
    raw_bin = os.path.join(BENCH, "rawfanout")
    if not os.access(raw_bin, os.X_OK):
        raise tpenv.Skip(f"rawfanout not built in {BENCH}")
    port = str(tpenv.free_port())
    bad = [["--boundary-ms", "150"], ["--boundary-ms", "-1000"], ["--boundary-ms", "1000x"],
           ["--boundary-ms", ""], ["--boundary-ms", "99999999999999999999"],
           ["--boundary-ms", "3600100"], ["--tick-ms", "0"], ["--tick-ms", "1e2"],
           ["--workers", "65"], ["--bands", "0"], ["--max-conns", "15"], ["-p", "0x50"],
           ["-p", "65536"], ["extra"]]
    for args in bad:
        argv = [raw_bin] + (args if args[0] == "-p" else ["-p", port] + args)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        assert r.returncode == 2, (args, r.returncode)
        assert b"bad or missing option" in r.stderr, (args, r.stderr)
    r = subprocess.run([raw_bin, "--help"], stdout=subprocess.PIPE, timeout=10)
    assert r.returncode == 0 and b"--boundary-ms" in r.stdout, r


def test_bench_run_rejects_bad_options():
    """bench/run checks every numeric option before it builds or starts anything: a value that is
    not a whole decimal number in range exits 2 naming the option (bash arithmetic once read
    `--phase 0.5` as an error part-way into a run and `abc` as 0; a negative --duration ran). The
    build dir does not exist, so a value the check let through ends at "binaries missing" (exit
    1) before any service starts, never in a bench."""
    run = os.path.join(os.environ.get("TP_SRC", "."), "bench", "run")
    nowhere = ["--no-build", "--build-dir", "/nonexistent/tickpool-build"]
    # Midday for the 00:00 UTC check (test_bench_run_refuses_a_run_across_midnight): these
    # calls must not depend on the hour they run at.
    env = dict(os.environ, BENCH_NOW_S=str(20000 * 86400 + 43200))
    bad = [["--phase", "0.5"], ["--phase", "0"], ["--rate", "abc"], ["--rate", ""],
           ["--rate", "1e3"], ["--duration", "-5"], ["--duration", "0"], ["--warmup", "08"],
           ["--warmup", "-1"], ["--conns", "99999999999"], ["--users", "0"],
           ["--bet-rate", "-200"], ["--sockets", "0x10"], ["--connect-rate", " 5"],
           ["--workers", "65"], ["--workers", "two"], ["--buckets", "16385"],
           ["--redis-cluster", "2"], ["--redis-cluster", "abc"], ["--replicas-ack", "17"],
           ["--winners", "1.5"], ["--fill-rate", "+8000"], ["--settle-window", "10s"],
           ["--kills", "0"], ["--filter-windows", "3"],
           # One Redis has no replica unless --replica gives it one, and never two.
           ["--replicas-ack", "1"], ["--replicas-ack", "2", "--replica"],
           ["--replica", "--redis-cluster", "3"]]
    for args in bad:
        r = subprocess.run([run, "boundaries"] + args + nowhere, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, env=env)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert ("bench/run: " + args[0]).encode() in r.stderr, (args, r.stderr)
    r = subprocess.run([run, "boundaries"] + nowhere + ["--rate"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30, env=env)
    assert r.returncode == 2 and b"--rate needs a value" in r.stderr, r
    # Good values pass the check and stop at the missing binaries.
    r = subprocess.run([run, "boundaries", "--phase", "2", "--rate", "500", "--duration", "30",
                        "--warmup", "0", "--bet-rate", "0", "--workers", "2"] + nowhere,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, env=env)
    assert r.returncode == 1 and b"binaries missing" in r.stderr, r
    for args in (["--replica", "--replicas-ack", "1"], ["--replica"],
                 ["--redis-cluster", "3", "--replicas-ack", "1"]):
        r = subprocess.run([run, "ceiling"] + args + nowhere, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, env=env)
        assert r.returncode == 1 and b"binaries missing" in r.stderr, (args, r)
    r = subprocess.run([run, "raw-fanout", "--replica"] + nowhere, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30, env=env)
    assert r.returncode == 2 and b"--replica is not for raw-fanout" in r.stderr, r


def test_bench_run_refuses_a_run_across_midnight():
    """bench/run seeds yesterday's idempotency filter window (bench/filter_seed.py), so a run
    whose bets go on past 00:00 UTC would read other windows than it reports: with two windows it
    refuses, before anything starts, a run whose upper bound (setup, load, find-max's 25 steps)
    reaches the next 00:00 UTC, naming the way out; with --filter-windows 1 (nothing seeded), or
    with the bound inside the day, the same run goes on (to "binaries missing": no build dir).
    BENCH_NOW_S stands for the clock."""
    run = os.path.join(os.environ.get("TP_SRC", "."), "bench", "run")
    nowhere = ["--no-build", "--build-dir", "/nonexistent/tickpool-build"]
    midnight = 20001 * 86400
    fm = ["ws-bets", "--find-max", "--duration", "10", "--warmup", "3"]  # 26 x 13 s + 190 s

    def bench(at, args):
        env = dict(os.environ, BENCH_NOW_S=str(at))
        return subprocess.run([run] + args + nowhere, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30, env=env)
    for at, args in ((midnight - 60, ["boundaries"]), (midnight - 500, fm),
                     (midnight - 100, ["ws-bets", "--duration", "10", "--warmup", "3"]),
                     (midnight - 1, ["settle-100k"])):
        r = bench(at, args)
        assert r.returncode == 2 and b"past 00:00 UTC" in r.stderr, (at, args, r)
        assert b"--filter-windows 1" in r.stderr and b"bench/run: " in r.stderr, r
        r = bench(at, args + ["--filter-windows", "1"])
        assert r.returncode == 1 and b"binaries missing" in r.stderr, (at, args, r)
    for at, args in ((midnight, ["boundaries"]), (midnight - 600, fm),
                     (midnight - 300, ["ws-bets", "--duration", "10", "--warmup", "3"]),
                     (midnight - 3600, ["settle-100k"])):
        r = bench(at, args)
        assert r.returncode == 1 and b"binaries missing" in r.stderr, (at, args, r)
    for bad in ("abc", "-5", "0123", "1e9"):
        r = bench(bad, ["ws-bets"])
        assert r.returncode == 2 and b"BENCH_NOW_S" in r.stderr, (bad, r)

if __name__ == "__main__":
    tpenv.main()
