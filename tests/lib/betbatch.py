"""bet_batch.lua's answers as the server reads them (src/money/bet_batch.c, read_answer): the
script answers two values per bet, and what the caller sent (round, band, stake) fills in the
rest. Tests that drive the script directly compare these with bench/lua/bet.lua's answers."""


def answers(flat, rid, bets):
    """flat: the script's reply; bets: [(user, band, stake, key)] in ARGV order. Returns one
    answer per bet in bet.lua's shape: ["ok", bet_id, round_id, band, stake, balance, replayed],
    ["err", code] or ["check"]."""
    assert isinstance(flat, list) and len(flat) == 2 * len(bets), flat
    out = []
    for (_, band, stake, _), first, second in zip(bets, flat[0::2], flat[1::2]):
        if isinstance(first, int):
            assert first != 0 and isinstance(second, int), (first, second)
            out.append(["ok", abs(first), int(rid), int(band), int(stake), second,
                        1 if first < 0 else 0])
        elif first == "check":
            assert second == 0, second
            out.append(["check"])
        else:
            assert second == 0, second
            out.append(["err", first])
    return out


def net(c, p):
    """Bucket prefix p's net winnings as GET /api/v1/leaderboard reads them, {user_id: net}
    (floats, as a ZSET's scores): `net`'s scores less the sums of bet_batch.lua's stakes log
    `netlog` ("<user_id> <sum>" pairs an entry), which net_fold.lua folds into `net` (a player
    with sums and no score starts at 0). Reads only: the tests' own model of that fold."""
    out = dict(c.zrange(p + "net", 0, -1, withscores=True))
    for e in c.lrange(p + "netlog", 0, -1):
        parts = e.split(" ")
        assert len(parts) % 2 == 0 and all(x.isdigit() for x in parts), e
        for u, s in zip(parts[0::2], parts[1::2]):
            out[u] = out.get(u, 0.0) - int(s)
    return out


def net_sorted(c, p):
    """net(c, p) as ZRANGE WITHSCORES lists it: (member, score), by score, then member."""
    return sorted(net(c, p).items(), key=lambda kv: (kv[1], kv[0]))
