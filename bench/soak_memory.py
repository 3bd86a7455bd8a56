#!/usr/bin/python3
"""bench/soak_memory.py — is Redis memory bounded over a long run (run it as bench/run soak-memory).

    bench/soak_memory.py [--seconds 1200] [--rate 2000] [--players 1000] [--retain 60]
                         [--build-dir build-release] [--workers 2] [--nice N]

Starts a private Redis (AOF on), Postgres and tickpool with 5 s betting + 5 s live rounds and
game.retain_s = --retain, signs up --players accounts (bench/loadgen users), then runs one
`loadgen ws-bet --follow-rounds` at --rate bets/s over --players sockets for --seconds: its
sockets open once, and each bet goes to the round open when it is sent (the same offered load
in every round). Session 4's driver started a loadgen per round that first opened its 1,000
sockets and then bet for 3 s; on a loaded machine the opening outlasted the 0.7 s margin before
the lock and the tail of each run was refused round_not_open (242k bets in one run). Every 10 s it
samples Redis `used_memory`, DBSIZE, the server's `tickpool_rounds_hot` and the bets the hot
rounds hold (the report also gives used_memory's slope net of those bets). At the end it lets the last rounds settle and the outbox drain,
runs `tickpool audit`, and asks `/api/v1/rounds/{id}` and `tickpool verify` of every round that
was archived (no longer in Redis).

Pass: after the first 5 minutes (or a quarter of a shorter run), the least-squares slope of
used_memory is under 1 % of its mean per 10 minutes; the audit is clean; every archived round
answers 200 and verifies from Postgres. The report (samples, slope, an SVG plot of used_memory)
goes to stdout and bench/reports/<date>-soak-memory.md (+ .svg).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import tpenv  # noqa: E402

SAMPLE_S = 10
# Every FAMILY_EVERY samples, MEMORY USAGE of every key, summed by key family.
FAMILY_EVERY = 6
BETTING_S = 5
# The bucket's bet sequence starts here, so every bet id of the run has 7 digits. Hot bets cost
# Redis ~40 B more each once the ids reach 1,000,000 (a bet id is the `bets:` field and is in
# the `idem:` record; a field or value one byte longer often takes the allocator's next size
# class): session 7's first full run passed 1,000,000 at minute 8.5 and its used_memory stepped
# from 407 to 448 B per hot bet over the next 160,000 bets, then stayed there, a +1.38 % slope
# with the hot bets flat. A server that has run a while steps once per decade of bets (the next
# at 10,000,000: 83 min at 2,000/s); a fresh one would put that step in the criterion's window.
FIRST_SEQ = 1000000


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def slope_per_s(points):
    """Least-squares slope of [(t, y)]."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def svg(samples, t0):
    """A plot of used_memory (MB) over minutes."""
    w, h, pad = 720, 300, 40
    ts = [(s["t"] - t0) / 60 for s in samples]
    ys = [s["used_memory"] / 1e6 for s in samples]
    tmax, ymax = max(ts) or 1, max(ys) * 1.1 or 1
    pts = " ".join(f"{pad + t / tmax * (w - 2 * pad):.1f},{h - pad - y / ymax * (h - 2 * pad):.1f}"
                   for t, y in zip(ts, ys))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">'
            f'<rect width="{w}" height="{h}" fill="white"/>'
            f'<polyline fill="none" stroke="#c33" stroke-width="2" points="{pts}"/>'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>'
            f'<text x="{pad}" y="{pad - 10}" font-size="12">Redis used_memory, MB '
            f'(max {ymax / 1.1:.1f})</text>'
            f'<text x="{w - pad - 80}" y="{h - 10}" font-size="12">{tmax:.0f} min</text></svg>')


def family(key):
    """A key's family: its name with every number (round id, user id, window) as N."""
    return re.sub(r"\d+", "N", key)


def families(c):
    """{family: [keys, MEMORY USAGE bytes]} over the whole keyspace (a few thousand keys; the
    usage of a big hash is Redis's sampled estimate)."""
    keys = list(c.scan_iter(count=1000))
    pipe = c.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    out = {}
    for key, n in zip(keys, pipe.execute()):
        f = out.setdefault(family(key), [0, 0])
        f[0] += 1
        f[1] += n or 0
    return out


def postmaster_pid(pg):
    """The private Postgres's postmaster (first line of its postmaster.pid), or None (a
    Postgres given by TP_TEST_PG_ADMIN_URL has no private cluster: not ours to renice)."""
    if pg.cluster is None:
        return None
    try:
        with open(os.path.join(pg.cluster.data, "postmaster.pid")) as f:
            return int(f.readline())
    except (OSError, ValueError):
        return None


def autogroup_nice(nice, pids):
    """With the kernel's autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled = 1),
    CPU is shared between sessions first and a process's nice only counts inside its own
    session: tickpool and Postgres run in sessions of their own, and session 6's soak at nice
    -10 still got ~30 accepted bets/s at load 27. So the sessions of these processes (this
    one: Redis, loadgen; tickpool; Postgres) get the nice value as a whole."""
    for pid in pids:
        if pid is None:
            continue
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
        except OSError as e:
            log(f"autogroup nice for pid {pid}: {e}")


def metric(s, name):
    st, _, body = s.http("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=1200)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--retain", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build-dir", default="build-release")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the soak (Redis, Postgres, tickpool, loadgen: children of this "
                    "process) at this nice value; negative needs root")
    args = ap.parse_args()
    if args.nice:
        # Set before any child starts, so each inherits it. On a machine shared with builds and
        # tests, the soak's ~1 core of demand at 2,000 bets/s otherwise gets a fair share of
        # the run queue and Redis's replies time out (session 6: load 16-30, 47,550 batches
        # timed out, the leader's lease lost 17 times in 8 minutes).
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    bdir = args.build_dir if os.path.isabs(args.build_dir) else os.path.join(ROOT, args.build_dir)
    tpenv.BIN = os.path.join(bdir, "tickpool")
    # Read before the run: the server's commit is the binary's (`tickpool --version`), the
    # driver's the checkout's, which may move on during a 20-minute run.
    version = subprocess.run([tpenv.BIN, "--version"], capture_output=True,
                             text=True).stdout.strip()
    driver = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    commit = f"server {version or 'unknown'}; driver {driver}"
    loadgen = os.path.join(bdir, "bench", "loadgen")
    env = {"TICKPOOL_GAME_BETTING_S": str(BETTING_S), "TICKPOOL_GAME_LIVE_S": "5",
           "TICKPOOL_GAME_RETAIN_S": str(args.retain),
           "TICKPOOL_GAME_START_BALANCE": "1000000000000", "TICKPOOL_GAME_MIN_STAKE": "100",
           "TICKPOOL_GAME_MAX_STAKE": "100000", "TICKPOOL_LIMITS_MAX_INFLIGHT_BETS": "100000",
           "TICKPOOL_LIMITS_WS_MSG_RATE": "1000000", "TICKPOOL_LIMITS_WS_MAX_PER_USER": "10000",
           "TICKPOOL_LOG_LEVEL": "warn",
           # The default size (tpenv's servers use 1m): a day's filter is allocated whole by its
           # first bet, so it shows as a step in the first samples, then as a constant.
           "TICKPOOL_GAME_IDEM_FILTER": "128m"}
    problems, samples, runs = [], [], []
    tmp = tpenv._tmpdir("tp-soakmem-")
    tokens = os.path.join(tmp, "tokens")
    results = os.path.join(tmp, "loadgen.jsonl")
    with tpenv.Redis(appendonly=True) as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, env=env, workers=args.workers, https=False) as s:
        c = r.client()
        port = str(s.http_port)
        if args.nice:
            autogroup_nice(args.nice, [os.getpid(), s.proc.pid, postmaster_pid(pg)])
        c.set("tp:{b0}:seq", FIRST_SEQ)
        subprocess.run([loadgen, "users", "-p", port, "-u", str(args.players), "-t", tokens, "-q"],
                       check=True, stdout=subprocess.DEVNULL, timeout=600)
        log(f"{args.players} players; betting {args.rate}/s for {args.seconds} s")
        stop = threading.Event()
        t0 = time.time()

        def sample():
            k = 0
            while not stop.is_set():
                info = c.info("memory")
                la = os.getloadavg()[0]
                seq = int(c.get("tp:{b0}:seq") or 0)
                xlen = c.xlen("tp:{b0}:outbox") if c.exists("tp:{b0}:outbox") else 0
                # Bets held by the hot rounds: one idempotency record each (one bucket here).
                hot_bets = sum(c.hlen(f"tp:{{b0}}:idem:{rid}")
                               for rid in c.zrange("tp:{g}:rounds", 0, -1))
                # The idempotency filter: fixed-size strings the leader builds (three days a
                # shard), as used_memory counts them (the allocator's size classes).
                filt = sum(c.memory_usage(k) or 0 for k in c.scan_iter("tp:{b0}:idemslots:*"))
                samples.append({"t": time.time(), "used_memory": info["used_memory"],
                                "dbsize": c.dbsize(), "rounds_hot": metric(s, "tickpool_rounds_hot"),
                                "hot_bets": hot_bets, "filter": filt, "load": la, "seq": seq,
                                "outbox": xlen, "dataset": info["used_memory_dataset"],
                                "clients": info.get("mem_clients_normal", 0),
                                "families": families(c) if k % FAMILY_EVERY == 0 else None})
                k += 1
                x = samples[-1]
                rate = ((x["seq"] - samples[-2]["seq"]) / (x["t"] - samples[-2]["t"])
                        if len(samples) > 1 else 0)
                log(f"{(x['t'] - t0) / 60:5.1f} min used_memory {x['used_memory'] / 1e6:.1f} MB "
                    f"dbsize {x['dbsize']} hot rounds {x['rounds_hot']} hot bets {hot_bets} "
                    f"accepted {rate:.0f}/s outbox {xlen} load {la:.1f}")
                if x["families"]:
                    log("  memory: " + " ".join(f"{n}={info.get(n)}" for n in (
                        "used_memory_dataset", "used_memory_overhead", "used_memory_startup",
                        "mem_clients_normal", "mem_aof_buffer", "used_memory_scripts",
                        "mem_replication_backlog", "used_memory_vm_eval")))
                    log("  families: " + json.dumps(x["families"], sort_keys=True))
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample)
        sampler.start()
        # One loadgen for the run: it names the round open when it starts (retried if that round
        # locked meanwhile) and then follows the boundaries, every BETTING_S.
        for _ in range(10):
            st, cur = s.json("GET", "/api/v1/rounds/current")
            o = cur.get("open") if st == 200 else None
            if not o or o["locks_at"] / 1000 - time.time() < 1.5:
                time.sleep(0.5)
                continue
            p = subprocess.run(
                [loadgen, "ws-bet", "-p", port, "-t", tokens, "--round", str(o["id"]),
                 "--follow-rounds", str(BETTING_S * 1000), "-c", str(args.players),
                 "-r", str(args.rate), "-d", str(args.seconds), "-w", "0", "--drain", "3", "-q",
                 "--json", results, "--label", "soak"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                timeout=args.seconds + 300)
            if p.returncode == 0:
                runs.append((o["id"], args.seconds))
                break
            log(f"loadgen failed (exit {p.returncode}): {p.stderr.strip()[-300:]}")
            if "not the open one" not in p.stderr:
                break
        if not runs:
            problems.append("loadgen did not run")
        # The window of the criterion ends with the load (the samples after it show the sockets
        # closing and the last rounds settling, not the soak).
        t_end = time.time()
        # The last rounds settle; then the outbox drains (audit --wait) and memory settles.
        time.sleep(12)
        stop.set()
        sampler.join()
        a = s.run_cli("audit", "--wait", "120", timeout=300)
        if a.returncode != 0:
            problems.append(f"audit failed (exit {a.returncode}): {a.stdout[-1500:]}{a.stderr}")
        top = int(c.zrevrange("tp:{g}:rounds", 0, 0)[0])
        hot = {int(x) for x in c.zrange("tp:{g}:rounds", 0, -1)}
        archived = [rid for rid in range(1, top + 1) if rid not in hot]
        bad = []
        for rid in archived:
            st, _, _ = s.http("GET", f"/api/v1/rounds/{rid}")
            v = s.run_cli("verify", str(rid))
            if st != 200 or v.returncode != 0 or "read from Postgres" not in v.stdout:
                bad.append((rid, st, v.returncode,
                            [l for l in v.stdout.splitlines() if l.startswith("FAIL")] + [v.stderr]))
        if bad:
            problems.append(f"{len(bad)} archived rounds not served from Postgres: {bad[:5]}")
        if not archived:
            problems.append("no round was archived")
    bets = ok = 0
    errors = {}
    if os.path.exists(results):
        for line in open(results):
            j = json.loads(line)
            bets += j.get("sent", 0)
            ok += j.get("ok", 0)
            for code, n in j.get("errors", {}).items():
                errors[code] = errors.get(code, 0) + n
    skip = min(300, args.seconds / 4)
    inwin = [x for x in samples if x["t"] - t0 >= skip and x["t"] <= t_end]
    window = [(x["t"] - t0, x["used_memory"]) for x in inwin]
    mean = sum(y for _, y in window) / max(1, len(window))
    per10 = slope_per_s(window) * 600 if len(window) >= 3 else float("nan")
    ratio = per10 / mean * 100 if mean else float("nan")
    # For the reader: the same slope over the run's second half, when every per-player list
    # (GET /me/bets' newest 50 bets) has long reached its length.
    late = [(t, y) for t, y in window if t >= args.seconds / 2]
    late_mean = sum(y for _, y in late) / max(1, len(late))
    late_ratio = (slope_per_s(late) * 600 / late_mean * 100 if len(late) >= 3 and late_mean
                  else float("nan"))
    # For the reader: how much of used_memory follows the bets the hot rounds hold (least squares
    # used_memory = a + b * hot_bets over the same window), and the slope of the rest, which is
    # what a leak would show when the achieved bet rate drifts with the machine's load.
    hw = [(x["t"] - t0, x["used_memory"], x["hot_bets"]) for x in inwin]
    per_bet = slope_per_s([(h, y) for _, y, h in hw]) if len(hw) >= 3 else float("nan")
    rest = (slope_per_s([(t, y - per_bet * h) for t, y, h in hw]) * 600 / mean * 100
            if len(hw) >= 3 and mean else float("nan"))
    hot_mean = sum(h for _, _, h in hw) / max(1, len(hw))
    hot_ratio = (slope_per_s([(t, h) for t, _, h in hw]) * 600 / hot_mean * 100
                 if len(hw) >= 3 and hot_mean else float("nan"))
    # For the reader: the same slope against the mean without the filters (a fixed amount, which
    # makes the mean larger and so the ratio smaller).
    filt_mean = sum(x["filter"] for x in inwin) / max(1, len(window))
    net_ratio = per10 / (mean - filt_mean) * 100 if mean > filt_mean else float("nan")
    # For the reader: where the slope is. used_memory = dataset + overhead (of which the
    # clients' buffers); each part's slope over the window as % of the mean used_memory.
    def part_slope(f):
        pts = [(x["t"] - t0, f(x)) for x in inwin]
        return slope_per_s(pts) * 600 / mean * 100 if len(pts) >= 3 and mean else float("nan")

    parts = [("dataset", lambda x: x["dataset"]),
             ("overhead (used_memory - dataset)", lambda x: x["used_memory"] - x["dataset"]),
             ("of it, normal clients' buffers", lambda x: x["clients"])]
    part_text = "; ".join(f"{n} {part_slope(f):+.2f} %" for n, f in parts)
    outbox_max = max((x["outbox"] for x in inwin), default=0)
    # The rate the server accepted (the bucket's bet counter) per sample interval, and the load.
    rates = [((b["seq"] - a["seq"]) / (b["t"] - a["t"])) for a, b in zip(samples, samples[1:])
             if b["t"] - t0 >= 30 and b["t"] <= t_end]
    rates.sort()
    rate_text = (f"accepted per 10 s interval after the first 30 s: median {rates[len(rates) // 2]:.0f}"
                 f"/s, min {rates[0]:.0f}/s, max {rates[-1]:.0f}/s" if rates else "no rate")
    loads = sorted(x["load"] for x in samples)
    load_text = (f"load average (1 min) over the run: min {loads[0]:.1f}, median "
                 f"{loads[len(loads) // 2]:.1f}, max {loads[-1]:.1f}" if loads else "")
    # Per key family: MEMORY USAGE summed at the first and the last family sample of the window.
    fam = [x for x in inwin if x["families"]]
    fam_rows = []
    if len(fam) >= 2:
        fa, fb = fam[0]["families"], fam[-1]["families"]
        for f in sorted(set(fa) | set(fb), key=lambda f: -abs(fb.get(f, [0, 0])[1] - fa.get(f, [0, 0])[1])):
            ka, ba = fa.get(f, [0, 0])
            kb, bb = fb.get(f, [0, 0])
            fam_rows.append(f"| `{f}` | {ka} | {ba} | {kb} | {bb} | {bb - ba:+d} |")
    if not ratio < 1:
        problems.append(f"used_memory slope {ratio:.2f} % of its mean per 10 min (want < 1 %)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(os.path.join(ROOT, "bench", "reports"), exist_ok=True)
    base = os.path.join(ROOT, "bench", "reports", f"{stamp}-soak-memory")
    if samples:
        with open(base + ".svg", "w") as f:
            f.write(svg(samples, t0))
    rows = [f"| {(x['t'] - t0) / 60:.1f} | {x['used_memory']} | {x['dbsize']} | {x['rounds_hot']} "
            f"| {x['hot_bets']} | {x['dataset']} | {x['outbox']} | "
            + (f"{(x['seq'] - p['seq']) / (x['t'] - p['t']):.0f}" if p else "") + f" | {x['load']:.1f} |"
            for p, x in zip([None] + samples, samples)]
    text = "\n".join([
        f"# tickpool soak-memory, {datetime.datetime.now().isoformat(timespec='seconds')} "
        f"(commit {commit})",
        "",
        f"- {args.seconds} s of 5 s + 5 s rounds, game.retain_s {args.retain}, {args.workers} "
        f"workers, the soak's processes (and their sessions' autogroups) at nice "
        f"{os.getpriority(os.PRIO_PROCESS, 0)}; one `loadgen ws-bet --follow-rounds {BETTING_S * 1000}` at {args.rate} "
        f"bets/s over {args.players} sockets for the whole run; bet ids from {FIRST_SEQ + 1} "
        "(the bucket's sequence set before the first bet: no decade of ids is crossed in the "
        "window)",
        f"- bets sent {bets}, answered bet_ok {ok} ({ok / max(1, args.seconds):.0f}/s averaged "
        "over the run); refused: "
        + (", ".join(f"{c} {n}" for c, n in sorted(errors.items())) or "none"),
        f"- used_memory after {skip:.0f} s: mean {mean / 1e6:.2f} MB, least-squares slope "
        f"{per10 / 1e6:+.3f} MB per 10 min = {ratio:+.2f} % of the mean (pass: < 1 %); over "
        f"the second half: {late_ratio:+.2f} %; of it, the idempotency filters (fixed size) "
        f"{filt_mean / 1e6:.2f} MB: the slope is {net_ratio:+.2f} % of the mean without them",
        f"- bets held by the hot rounds after {skip:.0f} s: mean {hot_mean:.0f}, slope "
        f"{hot_ratio:+.2f} % of the mean per 10 min; used_memory = {per_bet:.0f} B per hot bet "
        f"+ the rest, whose slope is {rest:+.2f} % of the mean used_memory per 10 min",
        f"- archived rounds: {len(archived)}, each answering /rounds/{{id}} and `verify` from "
        f"Postgres: {len(archived) - len(bad)}",
        f"- `tickpool audit`: exit {a.returncode}",
        f"- {rate_text}; loadgen sent {bets / max(1, args.seconds):.0f}/s; {load_text}",
        f"- the window is the samples from {skip:.0f} s to the end of the load "
        f"({(t_end - t0):.0f} s); slope per 10 min by part, as % of the mean used_memory: "
        f"{part_text}; outbox length at most {outbox_max}",
        "",
        f"Per key family (digits as N; MEMORY USAGE, sampled for big hashes) at "
        f"{(fam[0]['t'] - t0) / 60 if fam else 0:.1f} and {(fam[-1]['t'] - t0) / 60 if fam else 0:.1f} min:",
        "",
        "| family | keys | bytes | keys | bytes | change |",
        "|---|---|---|---|---|---|",
        *fam_rows,
        "",
        "| min | used_memory | DBSIZE | rounds_hot | hot bets | dataset | outbox | accepted/s | load |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "verdict: " + ("PASS" if not problems else "FAIL\n" + "\n".join(problems)),
    ])
    print(text)
    with open(base + ".md", "w") as f:
        f.write(text + "\n")
    print(f"report: {base}.md")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
