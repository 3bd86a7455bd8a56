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


def shard_bytes(filter_bytes, buckets):
    """tp_keys_idem_shard_bytes: a shard's size for game.idem_filter `filter_bytes` over
    `buckets` buckets, 16 bytes under the shard's share (Redis's string header: an allocator
    class), whole words, at least one."""
    return max((filter_bytes // buckets // SHARDS - 16) // 4 * 4, 4)


def bit_offset(word, shard_bytes):
    """tp_keys_idem_bit_offset: the bit offset of `word`'s word in a shard of `shard_bytes`."""
    return word % (shard_bytes // 4) * 32


def range_tail(first):
    """The tail of a position for a word whose first byte is `first`: one byte holding the
    length of that decimal, the decimal, then the word's last byte (first + 3) in decimal: the
    GETRANGE bet_batch.lua reads the word with."""
    a, z = str(first).encode(), str(first + 3).encode()
    return bytes([len(a)]) + a + z


def pos_argv(user_id, key, shard_bytes=None):
    """bet_batch.lua's position ARGV of "<user_id>:<key>" (src/store/scripts.c), as a list of
    one: word, mask and shard as 10 big-endian bytes (4, 4 and 2), then with `shard_bytes` (the
    call's ARGV[10] "0:<shard_bytes>") the word's byte range in such a shard (range_tail)."""
    word, mask, shard = pos(user_id, key)
    p = word.to_bytes(4, "big") + mask.to_bytes(4, "big") + shard.to_bytes(2, "big")
    return [p + range_tail(bit_offset(word, shard_bytes) // 8) if shard_bytes else p]


def shard_key(prefix, window, shard):
    """tp:{bN}:idemfilter:<window>:<shard> for prefix "tp:{bN}:"."""
    return f"{prefix}idemfilter:{window}:{shard}"


def window_keys(prefix, w):
    """bet_batch.lua KEYS[12..15] for window w (the pre-shard filters, shard 0 of w and of
    w - 1)."""
    return [f"{prefix}idemfilter:{w}", f"{prefix}idemfilter:{w - 1}", shard_key(prefix, w, 0),
            shard_key(prefix, w - 1, 0)]


def build(c, prefix, w, size):
    """Window w's shards, each of `size` bytes, the last one last (what the leader's
    idem_filter_build.lua steps leave): a whole window."""
    for shard in range(SHARDS):
        c.setrange(shard_key(prefix, w, shard), size - 1, "\0")


def unindex(c, sha, prefix, bucket, rid, fields, w, two=False, since=0):
    """One idem_unindex.lua step as src/store/scripts.c builds it: `fields` ("<user>:<key>")
    leave the hot index and round rid's records hash (an older version's), and enter window w's filter (and w - 1's when
    `two`); returns its answer (entries removed, or -1: window w not whole)."""
    wins = [w, w - 1] if two else [w]
    keys = [prefix + "idemhot", prefix + "idemyoung"]
    for x in wins:
        keys += [shard_key(prefix, x, 0), shard_key(prefix, x, SHARDS - 1)]
    argv, seen = [rid, bucket, w, len(wins), since, len(fields)], set()
    for f in fields:
        user, key = f.split(":", 1)
        word, mask, shard = pos(int(user), key)
        argv += [f, word, mask, shard]
        if shard not in seen:
            seen.add(shard)
            keys += [shard_key(prefix, x, shard) for x in wins]
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
    """The shard KEYS of a batch (after the users') and the 2 position ARGV per bet, for bets
    as (user_id, key) pairs in ARGV order: ([keys], [pos_argv(user, key) per bet])."""
    keys, seen, per = [], set(), []
    for user, key in bets:
        per.append(pos_argv(user, key))
        shard = pos(user, key)[2]
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
