#!/usr/bin/python3
"""bench/soak.py — leave tickpool running at the default timings and check every round.

    bench/soak.py [--minutes 60] [--workers 2] [--bet-rate 5] [--build-dir build]

Starts a private Redis (AOF on), Postgres and tickpool (game defaults: 30 s betting, 30 s live)
on free loopback ports, signs up a few players who place random bets at a steady rate, and
prints progress every minute. At the end it stops betting, lets the last rounds finish, then
checks that every round whose close is past was settled or cancelled (never stuck), runs
`tickpool verify ROUND` for every settled round, and `tickpool audit`. Exits non-zero on any
failure. The report goes to stdout and bench/reports/<date>-soak.md.
"""

import argparse
import datetime
import json
import os
import random
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import tpenv  # noqa: E402


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def signup(s, i):
    name = f"soak{i}_{random.randrange(10**6)}"
    for _ in range(50):  # a server that just started may answer 503 "retry" for a moment
        st, body = s.json("POST", "/api/v1/accounts", {"username": name, "password": "soak-password"})
        if st != 503:
            break
        time.sleep(0.1)
    assert st == 201, (st, body)
    return {"Authorization": f"Bearer {body['token']}"}


def bettor(s, players, rate, stop, stats):
    """Places bets on the open round at `rate` per second until `stop` is set."""
    period, n = 1.0 / rate, 0
    next_t = time.monotonic()
    while not stop.is_set():
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
        try:
            st, cur = s.json("GET", "/api/v1/rounds/current")
            if st != 200 or not cur.get("open"):
                continue
            rid = cur["open"]["id"]
            nb = len(cur["open"]["bands"])
            body = {"round_id": rid, "band": random.randrange(nb),
                    "stake": random.randrange(100, 1001)}
            n += 1
            st, _, _ = s.http("POST", "/api/v1/bets", body=body,
                              headers={**random.choice(players), "Idempotency-Key": f"soak-{n}"})
            stats[st] = stats.get(st, 0) + 1
        except Exception as e:  # a transient error is counted, not fatal
            stats[repr(type(e).__name__)] = stats.get(repr(type(e).__name__), 0) + 1


def all_rounds(s):
    out, before = [], None
    while True:
        q = "/api/v1/rounds?limit=100" + (f"&before={before}" if before else "")
        st, body = s.json("GET", q)
        assert st == 200, (st, body)
        page = body["rounds"]
        out += page
        if len(page) < 100:
            return out
        before = page[-1]["id"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bet-rate", type=float, default=5)
    ap.add_argument("--players", type=int, default=10)
    ap.add_argument("--build-dir", default="build")
    args = ap.parse_args()
    os.environ.setdefault("TP_BIN", os.path.join(ROOT, args.build_dir, "tickpool"))
    tpenv.BIN = os.environ["TP_BIN"]
    problems = []
    started = time.time()
    with tpenv.Redis(appendonly=True) as r, tpenv.Postgres() as pg:
        with tpenv.Server(redis=r, pg=pg, workers=args.workers) as s:
            players = [signup(s, i) for i in range(args.players)]
            stop, stats = threading.Event(), {}
            t = threading.Thread(target=bettor, args=(s, players, args.bet_rate, stop, stats))
            t.start()
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(min(60, max(0, end - time.monotonic())))
                rounds = all_rounds(s)
                states = {}
                for x in rounds:
                    states[x["state"]] = states.get(x["state"], 0) + 1
                log(f"{(time.time() - started) / 60:.1f} min: rounds {states}, bets {stats}")
            stop.set()
            t.join()
            # Let the open and live rounds finish (one betting plus one live phase, and slack).
            st, cur = s.json("GET", "/api/v1/rounds/current")
            last = cur["open"]["id"] if cur.get("open") else 0
            tpenv.wait_until(lambda: all(x["state"] in ("settled", "cancelled")
                                         for x in all_rounds(s) if x["id"] < last),
                             timeout=120, interval=1, what="the last rounds to finish")
            rounds = [x for x in all_rounds(s) if x["id"] < last]
            now_ms = time.time() * 1000
            stuck = [x["id"] for x in rounds if x["closes_at"] < now_ms - 10000 and
                     x["state"] not in ("settled", "cancelled")]
            if stuck:
                problems.append(f"rounds past their close but not final: {stuck}")
            ids = sorted(x["id"] for x in rounds)
            if ids != list(range(ids[0], ids[-1] + 1)):
                problems.append("round ids have gaps")
            settled = [x["id"] for x in rounds if x["state"] == "settled"]
            cancelled = [x["id"] for x in rounds if x["state"] == "cancelled"]
            bad_verify = []
            for rid in settled:
                v = s.run_cli("verify", str(rid))
                if v.returncode != 0:
                    bad_verify.append((rid, v.stdout[-300:] + v.stderr[-300:]))
            if bad_verify:
                problems.append(f"verify failed for {len(bad_verify)} rounds: {bad_verify[:3]}")
            a = s.run_cli("audit", "--wait", "60", timeout=180)
            if a.returncode != 0:
                problems.append(f"audit failed (exit {a.returncode}): {a.stdout[-2000:]}")
            log_text = s.log_text()
    report = [
        f"# tickpool soak, {datetime.datetime.now().isoformat(timespec='seconds')}",
        "",
        f"- duration: {args.minutes} min at the default timings, {args.workers} workers, "
        f"{args.players} players betting {args.bet_rate}/s",
        f"- rounds: {len(rounds)} ({ids[0]}–{ids[-1]}), settled {len(settled)}, "
        f"cancelled {len(cancelled)}, stuck {len(stuck)}",
        f"- `tickpool verify`: {len(settled) - len(bad_verify)} of {len(settled)} settled rounds pass",
        f"- bets: {json.dumps(stats)}",
        f"- `tickpool audit`: exit {a.returncode}",
        f"- worker restarts logged: {log_text.count('worker died')}",
        "",
        "```",
        a.stdout.strip()[-3000:],
        "```",
        "",
        "verdict: " + ("PASS" if not problems else "FAIL\n" + "\n".join(problems)),
    ]
    text = "\n".join(report)
    print(text)
    os.makedirs(os.path.join(ROOT, "bench", "reports"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "reports",
                        time.strftime("%Y%m%d-%H%M%S") + "-soak.md")
    with open(path, "w") as f:
        f.write(text + "\n")
    print(f"report: {path}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
