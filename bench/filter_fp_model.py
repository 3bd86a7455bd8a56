#!/usr/bin/python3
"""False positives of the idempotency filter by a model, not a measurement: the blocked Bloom
filter of src/store/keys.c (5 bits of one 32-bit word a key), keys spread over the words as a
Poisson law, a fresh key's 5 bits checked against its word. Prints, for some keys a day and
filter sizes, the rate averaged over a day (0.05 .. 0.95 of it) of: two windows of one day
each (production: yesterday's full, today's filling), one window of two days (archival writing
each key into its day and the next, bets reading one window), and two windows of two days
each (that archival with bets still reading two). bench/README.md "Session 23: one filter window".

    bench/filter_fp_model.py [--trials N] [--seed S]
"""

import argparse
import math
import random


def fp(rng, lam, trials):
    """P(a fresh key's 5 bits are all set) in a word holding Poisson(lam) keys' bits."""
    hit = 0
    limit = math.exp(-lam)
    for _ in range(trials):
        k, p = 0, rng.random()
        while p >= limit:
            k += 1
            p *= rng.random()
        word = 0
        for _ in range(5 * k):
            word |= 1 << rng.randrange(32)
        mask = 0
        for _ in range(5):
            mask |= 1 << rng.randrange(32)
        hit += word & mask == mask
    return hit / trials


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    xs = [i / 10 + 0.05 for i in range(10)]
    for per_day in (10e6, 43e6, 86e6):
        for mib in (128, 181, 256):
            lam = per_day / ((mib << 20) // 4)

            def avg(f):
                return sum(f(x) for x in xs) / len(xs) * 100
            today = avg(lambda x: 1 - (1 - fp(rng, x * lam, a.trials)) *
                        (1 - fp(rng, lam, a.trials)))
            one = avg(lambda x: fp(rng, (1 + x) * lam, a.trials))
            both = avg(lambda x: 1 - (1 - fp(rng, (1 + x) * lam, a.trials)) *
                       (1 - fp(rng, 2 * lam, a.trials)))
            print(f"{per_day / 1e6:.0f} M keys a day, {mib}m: two windows of a day {today:.3f} %,"
                  f" one of two days {one:.3f} %, two of two days {both:.3f} %")


if __name__ == "__main__":
    main()
