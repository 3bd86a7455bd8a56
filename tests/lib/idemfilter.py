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


def old_shard_bytes(filter_bytes, buckets):
    """An older version's per-day shard size for game.idem_filter `filter_bytes` over `buckets`
    buckets: a day's share of a shard less 16 bytes (Redis's string header), whole words, at
    least one."""
    return max((filter_bytes // buckets // SHARDS - 16) // 4 * 4, 4)


def shard_bytes(filter_bytes, buckets):
    """tp_keys_idem_shard_bytes: a shard's size, three days of old_shard_bytes's (so an older
    per-day filter folds into one day exactly)."""
    return 3 * old_shard_bytes(filter_bytes, buckets)


def byte_offset(word, shard_bytes):
    """tp_keys_idem_byte_offset: the first byte of `word`'s triple (its three days) in a shard
    of `shard_bytes`."""
    return word % (shard_bytes // 12) * 12


def day_bit(word, shard_bytes, day):
    """The bit offset of day `day`'s word of `word` in a shard of `shard_bytes`."""
    return (byte_offset(word, shard_bytes) + 4 * (day % 3)) * 8


def range_tail(first):
    """The tail of a position for a triple whose first byte is `first`: one byte holding the
    length of that decimal, the decimal, then the triple's last byte (first + 11) in decimal:
    the GETRANGE bet_batch.lua reads today's and yesterday's word with."""
    a, z = str(first).encode(), str(first + 11).encode()
    return bytes([len(a)]) + a + z


def pos_argv(user_id, key, shard_bytes=None):
    """bet_batch.lua's position ARGV of "<user_id>:<key>" (src/store/scripts.c), as a list of
    one: word, mask and shard as 10 big-endian bytes (4, 4 and 2), then with `shard_bytes` (the
    call's ARGV[10] "0:<shard_bytes>") the triple's byte range in such a shard (range_tail)."""
    word, mask, shard = pos(user_id, key)
    p = word.to_bytes(4, "big") + mask.to_bytes(4, "big") + shard.to_bytes(2, "big")
    return [p + range_tail(byte_offset(word, shard_bytes)) if shard_bytes else p]


def slot_key(prefix, shard):
    """tp:{bN}:idemslots:<shard> for prefix "tp:{bN}:"."""
    return f"{prefix}idemslots:{shard}"


def shard_key(prefix, window, shard):
    """tp:{bN}:idemfilter:<window>:<shard>: an older version's per-day shard."""
    return f"{prefix}idemfilter:{window}:{shard}"


def window_keys(prefix, w):
    """bet_batch.lua KEYS[12..15] for day w: an older version's last per-day shards of w - 1
    and w, the filter's last shard, the older last shard of w + 1."""
    return [shard_key(prefix, w - 1, SHARDS - 1), shard_key(prefix, w, SHARDS - 1),
            slot_key(prefix, SHARDS - 1), shard_key(prefix, w + 1, SHARDS - 1)]


def build(c, prefix, w=None, size=None):
    """The filter's shards, each of `size` bytes (three days; a multiple of 12), the last one
    last (what the leader's idem_slots.lua steps leave): a whole filter. `w` is unused (the
    shards hold every day); a filter already built is left alone."""
    have = c.exists(slot_key(prefix, 0))
    size = c.strlen(slot_key(prefix, 0)) if have else size
    pipe = c.pipeline(transaction=False)
    for shard in range(SHARDS):
        if not (have and c.exists(slot_key(prefix, shard))):
            pipe.setrange(slot_key(prefix, shard), size - 1, "\0")
    pipe.execute()


def build_old(c, prefix, w, size):
    """An older version's per-day shards of day w, each of `size` bytes, the last one last."""
    for shard in range(SHARDS):
        c.setrange(shard_key(prefix, w, shard), size - 1, "\0")


def unindex(c, sha, prefix, bucket, rid, fields, w, two=False, since=0):
    """One idem_unindex.lua step as src/store/scripts.c builds it: `fields` ("<user>:<key>")
    leave the hot index and round rid's records hash (an older version's), and enter day w's
    words of the filter (and w - 1's when `two`); returns its answer (entries removed, or -1:
    the filter not whole)."""
    keys = [prefix + "idemhot", prefix + "idemyoung", slot_key(prefix, 0),
            slot_key(prefix, SHARDS - 1)]
    argv, seen = [rid, bucket, w, 2 if two else 1, since, len(fields)], set()
    for f in fields:
        user, key = f.split(":", 1)
        word, mask, shard = pos(int(user), key)
        argv += [f, word, mask, shard]
        if shard not in seen:
            seen.add(shard)
            keys.append(slot_key(prefix, shard))
    keys.append(f"{prefix}idem:{rid}")
    return c.evalsha(sha, len(keys), *keys, *argv)


def round_keys(c, prefix, rid):
    """Round rid's keys ("<user>:<key>") in bucket prefix, as archival reads them from Postgres
    (src/game/leader_archive.c: the round's bets of the bucket): every bet of the round in the
    bucket's outbox (what the writer puts in Postgres), then the fields of the round's records
    hash (an older version's records, written here by tests with no outbox entry)."""
    out, seen = [], set()
    for _, f in c.xrange(prefix + "outbox"):
        if f.get("round_id") != str(rid):
            continue
        if f["type"] == "bets":
            for line in f["bets"].split("\n"):
                _, user, _, _, _, key = line.split(",", 5)
                out.append(f"{user}:{key}")
        elif f["type"] == "bet":
            out.append(f"{f['user_id']}:{f['idem_key']}")
    out += c.hkeys(prefix + f"idem:{rid}")
    return [f for f in out if not (f in seen or seen.add(f))]


def archive_index(c, sha, prefix, bucket, rid, w, count=2, two=False, since=0, keys=None):
    """What archival does in a bucket before it deletes round rid's other keys
    (src/game/leader_archive.c): one idem_unindex.lua step per `count` of the round's keys
    (`keys`, else round_keys: Postgres's list), in order; returns the entries removed, or -1
    when window w is not whole."""
    fields = round_keys(c, prefix, rid) if keys is None else keys
    removed = 0
    for i in range(0, len(fields), count):
        n = unindex(c, sha, prefix, bucket, rid, fields[i:i + count], w, two, since)
        if n < 0:
            return n
        removed += n
    return removed


def batch_tail(prefix, w, bets):
    """The shard KEYS of a batch (after the users') and the position ARGV per bet, for bets
    as (user_id, key) pairs in ARGV order: ([keys], [pos_argv(user, key) per bet]); `w` is
    unused (one key a shard holds every day)."""
    keys, seen, per = [], set(), []
    for user, key in bets:
        per.append(pos_argv(user, key))
        shard = pos(user, key)[2]
        if shard not in seen:
            seen.add(shard)
            keys.append(slot_key(prefix, shard))
    return keys, per


def is_set(c, prefix, w, user_id, key):
    """True when day w's words of the filter hold (user_id, key): its 5 bits are set."""
    word, mask, shard = pos(user_id, key)
    size = c.strlen(slot_key(prefix, 0))
    if size < 12:
        return False
    v = c.execute_command("BITFIELD_RO", slot_key(prefix, shard), "GET", "u32",
                          day_bit(word, size, w))[0]
    return v & mask == mask


def slots_zero(c, sha, prefix, bucket, day, now, span, margin=600000, shards=range(SHARDS)):
    """One idem_slots.lua "zero" step during `day` at `now` (the leader's clock) over `shards`:
    day + 1's words zeroed; returns its answer (shards zeroed, or -1 outside the day's part)."""
    keys = [f"{prefix}idemslots:mask:{(day + 1) % 3}", slot_key(prefix, 0),
            f"{prefix}idemslots:zeroed"] + [slot_key(prefix, s) for s in shards]
    return c.evalsha(sha, len(keys), *keys, "zero", 12, day, bucket, span, margin, now)


def slots_build(c, sha, prefix, bucket, day, size, shards, expire_ms=10**9):
    """One idem_slots.lua "build" step for `shards` in day `day`: the missing shards created
    (shard 0 with `size` bytes), an older per-day filter of day - 1, day, day + 1 folded."""
    keys = [f"{prefix}idemslots:fold", slot_key(prefix, 0), f"{prefix}idemslots:zeroed"]
    for s in shards:
        keys += [slot_key(prefix, s)] + [shard_key(prefix, day - 1 + j, s) for j in range(3)]
    return c.evalsha(sha, len(keys), *keys, "build", size, day, bucket, 86400000, expire_ms, 0)


def slots_probe(c, sha, prefix, bucket, day):
    """idem_slots.lua "probe": [shard 1023 exists, an older per-day trace left, zeroed day,
    shard 1023's bytes]."""
    keys = [slot_key(prefix, SHARDS - 1), slot_key(prefix, 0), f"{prefix}idemslots:zeroed"]
    for j in range(3):
        keys += [shard_key(prefix, day - 1 + j, 0), shard_key(prefix, day - 1 + j, SHARDS - 1)]
    return c.evalsha(sha, len(keys), *keys, "probe", 12, day, bucket, 86400000, 1, 0)


def slots_build_all(c, sha, prefix, bucket, day, size, step=64):
    """A whole build pass as the leader sends it: shard 0 alone first, then the others in
    steps, shard 1023 alone last; returns the shards created."""
    n = slots_build(c, sha, prefix, bucket, day, size, [0])
    for first in range(1, SHARDS - 1, step):
        n += slots_build(c, sha, prefix, bucket, day, size,
                         range(first, min(first + step, SHARDS - 1)))
    return n + slots_build(c, sha, prefix, bucket, day, size, [SHARDS - 1])
