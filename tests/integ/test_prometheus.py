"""tickpool's metrics, dashboard and alert rules against the real Prometheus (Debian's
`prometheus` package, which ships `promtool`):

- `promtool check metrics` accepts a real scrape of /metrics taken under load;
- `promtool check rules` accepts deploy/prometheus/alerts.yml;
- a real Prometheus on a private port scrapes a real tickpool (Redis, Postgres, two workers, a
  running game) every second while players bet over HTTP and WebSocket, some bets being
  rejected; then every PromQL expression of deploy/grafana/tickpool.json and of the alert rules
  is evaluated through Prometheus's HTTP API (/api/v1/query). Dashboard expressions must return
  data. An alert expression is "<signal> <op> <threshold>": the whole expression must evaluate
  without error (it is empty on a healthy server) and its signal must return data. Each panel's
  title and values are printed, as the dashboard cannot be screenshotted without Grafana.

Skips (exit 77) when prometheus or promtool is not installed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import msgpack
import tpclient
import tpenv
import websocket

DASHBOARD = os.path.join(tpenv.SRC, "deploy", "grafana", "tickpool.json")
ALERTS = os.path.join(tpenv.SRC, "deploy", "prometheus", "alerts.yml")
# Grafana's $__rate_interval is at least 4 scrape intervals; the whole load fits in 30 s.
RATE_INTERVAL = "30s"
GAME = {"TICKPOOL_GAME_BETTING_S": "4", "TICKPOOL_GAME_LIVE_S": "2",
        "TICKPOOL_GAME_TICK_MS": "100", "TICKPOOL_GAME_START_BALANCE": "100000",
        "TICKPOOL_GAME_MIN_STAKE": "100", "TICKPOOL_GAME_MAX_STAKE": "100000"}


def need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            raise tpenv.Skip(f"{t} not installed (Debian package prometheus)")


class Prometheus:
    """A private Prometheus on a free loopback port scraping `targets` every second, with the
    alert rules loaded; its data lives in a temporary directory removed on exit."""

    def __init__(self, targets):
        need("prometheus")
        self.port = tpenv.free_port()
        self.dir = tpenv._tmpdir("tp-prom-")
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    f"rule_files:\n  - {ALERTS}\n"
                    "scrape_configs:\n  - job_name: tickpool\n    static_configs:\n"
                    f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.proc = None
        self.log = None

    def __enter__(self):
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            tpenv.wait_until(lambda: self.proc.poll() is None and self.get("/-/ready")[0] == 200,
                             timeout=60, interval=0.2, what=f"prometheus on port {self.port}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if exc and exc[0] is not None:
            with open(os.path.join(self.dir, "log"), "rb") as f:
                print("---- prometheus log (tail) ----\n" +
                      "\n".join(f.read().decode("utf-8", "replace").splitlines()[-30:]))
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def query(self, expr):
        """Evaluates expr now; returns the result list, or raises with Prometheus's error."""
        st, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        v = json.loads(body)
        if st != 200 or v.get("status") != "success":
            raise AssertionError(f"query failed ({st}): {expr}\n  {v.get('error')}")
        assert v["data"]["resultType"] in ("vector", "scalar"), v["data"]
        res = v["data"]["result"]
        return res if v["data"]["resultType"] == "vector" else [{"metric": {}, "value": res}]


def scrape(s):
    st, _, body = s.http("GET", "/metrics")
    assert st == 200
    return body


def promtool(*args, stdin=None):
    need("promtool")
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, timeout=60)


# --- Load ---

def ws_bets(s, token, rid, n, tag):
    """Places n bets over one WebSocket (and one invalid_band); returns the answers' codes."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.http_port}/ws?token={token}",
                                     subprotocols=["tickpool.v1"], timeout=10)
    jobs = [{"band": i % 5, "stake": 100 + i} for i in range(n)] + [{"band": 99, "stake": 100}]
    for i, j in enumerate(jobs):
        ws.send_binary(msgpack.packb({"t": "bet", "req": i, "key": f"{tag}-{i}", "round_id": rid,
                                      **j}))
    codes = {}
    end = time.time() + 15
    while len(codes) < len(jobs) and time.time() < end:
        op, data = ws.recv_data()
        if op != websocket.ABNF.OPCODE_BINARY:
            continue
        m = msgpack.unpackb(data)
        if m.get("t") in ("bet_ok", "bet_err"):
            codes[m["req"]] = "ok" if m["t"] == "bet_ok" else m["code"]
    assert len(codes) == len(jobs), codes
    return ws, list(codes.values())


def http_rejections(s, token, rid, settled_rid, tag):
    """Bets meant to be refused (bad stake, no key, no token, a past round) and one of the whole
    start balance (accepted the first time, insufficient_funds after); returns the codes."""
    conn = tpclient.Http(s)
    seen = []
    cases = [
        ({"round_id": rid, "band": 0, "stake": 1}, tpclient.auth(token, tag + "1")),
        ({"round_id": rid, "band": 0, "stake": 100}, tpclient.auth(token)),
        ({"round_id": rid, "band": 0, "stake": 100}, {"Idempotency-Key": tag + "3"}),
        ({"round_id": settled_rid, "band": 0, "stake": 100}, tpclient.auth(token, tag + "4")),
        ({"round_id": rid, "band": 1, "stake": 100000}, tpclient.auth(token, tag + "5")),
    ]
    for body, headers in cases:
        st, v = conn.request("POST", "/api/v1/bets", body, headers)
        seen.append(v["error"]["code"] if st >= 400 else "ok")
    conn.close()
    return seen


def http_bets(s, users, rid, n, tag):
    ok, other = tpclient.place_bets(s, users, rid, [(i % 5, 100 + i) for i in range(n)],
                                    nthreads=4, tag=tag)
    assert not other, other
    return len(ok)


# --- Expressions ---

def dashboard_targets():
    """[(panel title, legend, expr)] of every target of the dashboard."""
    with open(DASHBOARD) as f:
        d = json.load(f)
    assert d["panels"], "no panels"
    out = []
    for p in d["panels"]:
        for t in p["targets"]:
            out.append((p["title"], t.get("legendFormat", ""),
                        t["expr"].replace("$__rate_interval", RATE_INTERVAL)))
    return out


SIGNAL_RE = re.compile(r"^(.*?)\s*(>|<|>=|<=|==|!=)\s*[0-9.]+\s*$", re.S)


def signal_of(expr):
    m = SIGNAL_RE.match(expr)
    assert m, f"alert expression is not '<signal> <op> <threshold>': {expr}"
    return m.group(1)


def fmt(res):
    return ", ".join(f"{{{','.join(f'{k}={v}' for k, v in sorted(r['metric'].items()))}}} "
                     f"{r['value'][1]}" for r in res) or "(empty)"


def finite(res):
    return [r for r in res if r["value"][1] not in ("NaN", "+Inf", "-Inf")]


# --- Tests ---

def test_promtool_check_rules():
    r = promtool("check", "rules", ALERTS)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    print(r.stdout.decode().strip())


def test_promtool_check_metrics_on_a_real_scrape():
    need("promtool")
    with tpenv.Redis() as r, tpenv.Server(redis=r, https=False, env=GAME) as s:
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 2, prefix="pm")
        rnd = tpclient.fresh_open_round(s, min_left_ms=3000)
        http_bets(s, users, rnd["id"], 5, "pm")
        http_rejections(s, users[0][1], rnd["id"], rnd["id"] - 2, "pm")
        body = scrape(s)
        assert re.search(rb'^tickpool_bet_latency_seconds_count\{transport="http"\} ([1-9]\d*)$',
                         body, re.M), body
        r = promtool("check", "metrics", stdin=body)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 0 and out.strip() == "", out
        print("promtool check metrics: ok (%d lines)" % body.count(b"\n"))


def test_dashboard_and_alerts_in_prometheus():
    need("prometheus", "promtool")
    with tpenv.Redis() as r, tpenv.Postgres() as pg, \
            tpenv.Server(redis=r, pg=pg, https=False, workers=2, env=GAME) as s, \
            Prometheus([f"127.0.0.1:{s.http_port}"]) as prom:
        tpenv.wait_until(lambda: prom.query('up{job="tickpool"} == 1'), timeout=20,
                         what="prometheus scraping tickpool")
        tpclient.wait_game(s)
        users = tpclient.make_users(s, 5, prefix="pq")
        loner = users.pop()[1]  # bets only in http_rejections: its balance is known
        accepted = 0
        # Two waves a few scrapes apart, so every rate window sees an increase.
        rnd = tpclient.fresh_open_round(s, min_left_ms=3000)
        accepted += http_bets(s, users, rnd["id"], 20, "w1")
        ws, codes = ws_bets(s, users[1][1], rnd["id"], 10, "w1")
        accepted += codes.count("ok")
        assert codes.count("ok") == 10 and "invalid_band" in codes, codes
        time.sleep(3)
        rnd = tpclient.fresh_open_round(s, min_left_ms=3000)
        accepted += http_bets(s, users, rnd["id"], 20, "w2")
        ws.close()
        ws, codes = ws_bets(s, users[2][1], rnd["id"], 10, "w2")
        accepted += codes.count("ok")
        rejected = http_rejections(s, loner, rnd["id"], rnd["id"] - 2, "x")
        assert rejected == ["invalid_stake", "idempotency_key_required", "unauthorized",
                            "round_not_open", "ok"], rejected
        accepted += 1
        rejected = http_rejections(s, loner, rnd["id"], rnd["id"] - 2, "y")
        assert rejected[-1] == "insufficient_funds", rejected
        # Prometheus has the final counts, then a few more scrapes of the steady state.
        tpenv.wait_until(lambda: prom.query("sum(tickpool_bets_accepted_total) >= %d" % accepted),
                         timeout=20, what="prometheus has every accepted bet")
        time.sleep(3)

        print("Dashboard panels (deploy/grafana/tickpool.json), $__rate_interval = "
              f"{RATE_INTERVAL}, after {accepted} accepted bets:")
        values = {}
        for title, legend, expr in dashboard_targets():
            res = prom.query(expr)
            assert res, f"panel '{title}' ({legend}) returned no data: {expr}"
            values[(title, legend)] = res
            print(f"  {title} [{legend}]: {fmt(res)}")

        def one(title, legend):
            res = finite(values[(title, legend)])
            assert res, (title, legend, values[(title, legend)])
            return float(res[0]["value"][1])
        assert one("Bets accepted per second", "bets/s") > 0
        assert one("Leader", "leaders") == 1
        assert one("Open sockets", "websockets") >= 1
        for q in ("p50", "p99"):
            got = {r["metric"]["transport"] for r in
                   finite(values[("Bet latency p50 / p99 by transport", q + " {{transport}}")])}
            assert got == {"http", "ws"}, (q, got)
            assert one("Beat lag p50 / p99", q) > 0
        by_code = {r["metric"]["code"]: float(r["value"][1])
                   for r in values[("Bets rejected by code", "{{code}}")]}
        for c in ("invalid_stake", "idempotency_key_required", "unauthorized", "round_not_open",
                  "insufficient_funds", "invalid_band"):
            assert by_code[c] > 0, (c, by_code)
        kinds = {r["metric"]["kind"] for r in
                 finite(values[("Redis command p99 by kind", "{{kind}}")])}
        assert {"bet_batch", "tick", "lease", "signup", "command"} <= kinds, kinds
        routes = {(r["metric"]["route"], r["metric"]["class"]) for r in
                  values[("HTTP responses by route and class", "{{route}} {{class}}")]}
        assert {("/api/v1/bets", "2xx"), ("/api/v1/bets", "4xx"), ("/ws", "1xx"),
                ("/metrics", "2xx")} <= routes, routes

        # The alert rules Prometheus loaded from the file, and their own evaluation.
        st, body = prom.get("/api/v1/rules")
        groups = json.loads(body)["data"]["groups"]
        rules = [rule for g in groups for rule in g["rules"]]
        assert len(rules) >= 5, rules
        print("Alert rules (deploy/prometheus/alerts.yml):")
        for rule in rules:
            assert rule["type"] == "alerting" and rule["health"] in ("ok", "unknown"), rule
            res = prom.query(rule["query"])  # must evaluate without error
            sig = prom.query(signal_of(rule["query"]))
            assert sig, f"signal of {rule['name']} returned no data: {signal_of(rule['query'])}"
            print(f"  {rule['name']}: {'FIRING ' + fmt(res) if res else 'empty (healthy)'}; "
                  f"signal {fmt(sig)}")
            assert not res, f"{rule['name']} would fire on a healthy server: {fmt(res)}"
        ws.close()


if __name__ == "__main__":
    tpenv.main()
