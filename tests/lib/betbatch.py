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
