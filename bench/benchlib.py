"""What the bench scripts share: one percentile, one reader of loadgen --latencies files, one
parser of Redis's INFO commandstats and the names bench/seconds.py's groups are shown under, so
every report computes and names a figure the same way.

bench/ is not a package: a script beside this file imports it after
`sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))`; bench/run's inline Python
gets it through PYTHONPATH=$ROOT/bench.
"""

# bench/seconds.py's process groups as the reports name them. "redis" is redis-server's own
# process (every thread) without its AOF rewrite child (the group "rewrite") since session 23
# (c53181e): before, the column held both, so it is shown as "redis main". "redis-thread" is its
# main thread alone, the one that runs the commands (session 24).
GROUP_LABEL = {"redis": "redis main", "redis-thread": "redis main thread"}


def pct(xs, p):
    """The p-th percentile (p in percent, 0-100) of xs: the value at index floor(n * p / 100) of
    xs sorted (the nearest rank below, no interpolation), the largest for p = 100; 0 for none."""
    if not xs:
        return 0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def read_lat(path):
    """[(due wall ms, latency µs)] of a loadgen --latencies file, one "DUE US" line per bet. A
    missing file gives []; a file cut short (loadgen killed mid-line) gives the lines before."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                d, u = line.split()
                out.append((int(d), int(u)))
    except (OSError, ValueError):
        pass
    return out


def commandstats(info):
    """{command: [calls, usec]} from INFO commandstats (totals since the last CONFIG RESETSTAT).
    info is the reply's text (a raw RESP client, redis-cli) or redis-py's parsed dict of it."""
    if isinstance(info, str):
        info = {k: dict(kv.split("=", 1) for kv in v.split(","))
                for k, _, v in (line.partition(":") for line in info.splitlines())
                if k.startswith("cmdstat_")}
    return {k[len("cmdstat_"):]: [int(v["calls"]), int(float(v["usec"]))]
            for k, v in info.items() if k.startswith("cmdstat_")}
