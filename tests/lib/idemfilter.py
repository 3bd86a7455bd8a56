"""The idempotency filter's layout, as src/store/keys.c computes it (tp_keys_idem_pos): tests
that drive bet_batch.lua directly pass the same filter positions the server does, and read the
shards back."""

import hashlib

SHARDS = 1024  # TP_KEYS_IDEM_SHARDS


def pos(user_id, key):
    """(word, mask, shard) of "<user_id>:<key>": SHA-1 bytes 0-3, 4-7 as five 5-bit bit
    numbers, 8-11 modulo SHARDS (big-endian)."""
    if isinstance(key, str):
        key = key.encode()
    h = hashlib.sha1(str(user_id).encode() + b":" + key).digest()
    bits = int.from_bytes(h[4:8], "big")
    mask = 0
    for _ in range(5):
        mask |= 1 << (bits % 32)
        bits //= 32
    return int.from_bytes(h[0:4], "big"), mask, int.from_bytes(h[8:12], "big") % SHARDS


def shard_key(prefix, window, shard):
    """tp:{bN}:idemfilter:<window>:<shard> for prefix "tp:{bN}:"."""
    return f"{prefix}idemfilter:{window}:{shard}"


def window_keys(prefix, w):
    """bet_batch.lua KEYS[12..16] for window w (the pre-shard filters, shard 0 of w, the last
    shard of w, shard 0 of w - 1)."""
    return [f"{prefix}idemfilter:{w}", f"{prefix}idemfilter:{w - 1}", shard_key(prefix, w, 0),
            shard_key(prefix, w, SHARDS - 1), shard_key(prefix, w - 1, 0)]


def batch_tail(prefix, w, bets):
    """The shard KEYS of a batch (after the users') and the 3 position ARGV per bet, for bets
    as (user_id, key) pairs in ARGV order: ([keys], [[word, mask, shard] per bet])."""
    keys, seen, per = [], set(), []
    for user, key in bets:
        word, mask, shard = pos(user, key)
        per.append([word, mask, shard])
        if shard not in seen:
            seen.add(shard)
            keys += [shard_key(prefix, w, shard), shard_key(prefix, w - 1, shard)]
    return keys, per


def is_set(c, prefix, w, user_id, key):
    """True when window w's filter holds (user_id, key): its 5 bits are set."""
    word, mask, shard = pos(user_id, key)
    size = c.strlen(shard_key(prefix, w, 0)) // 4
    if size == 0:
        return False
    v = c.execute_command("BITFIELD_RO", shard_key(prefix, w, shard), "GET", "u32",
                          (word % size) * 32)[0]
    return v & mask == mask
