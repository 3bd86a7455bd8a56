"""The bench's viewer reader (`loadgen viewers`, bench/lg_viewers.c) against bench/rawfanout.

Tick lag and fan-out spread are taken when each beat reached the viewer's socket (the kernel's
receive time, SO_TIMESTAMPNS), so a reader that falls behind does not add its own delay to them;
the read-time figures are reported beside them (bench/README.md "Viewers", session 14). Here
loadgen is stopped (SIGSTOP) for 50 ms a dozen times inside its window: a beat that arrives
meanwhile is read up to 50 ms late, which the read-time lag shows and the arrival lag does not.
The stops are shorter than a beat's 100 ms, so no read takes two beats: TCP merges beats that
wait in a socket, the merged bytes carry the later one's time, and loadgen counts such beats
(`beats_merged`), which a longer stop shows.
"""

import json
import os
import signal
import subprocess
import time

import tpenv

BENCH = os.path.join(os.path.dirname(os.environ.get("TP_BIN", "build/tickpool")), "bench")


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
        time.sleep(0.3)
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


if __name__ == "__main__":
    tpenv.main()
