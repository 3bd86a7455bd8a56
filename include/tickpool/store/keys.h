/*
 * Redis key schema: the one place in C that spells a key, a key prefix, the user → bucket rule
 * or a pub/sub channel. scripts/lua/README.md describes the layout (types, writers, content);
 * each script's header comment gives the keys it takes. Tests in Python spell keys on their own
 * (they check the layout from outside).
 *
 * Two hash tags keep every script single-slot in a Redis Cluster: `tp:{bN}:` for the keys of
 * bucket N (a player's money, bets and the bucket's copies of round state), `tp:{g}:` for the
 * global keys (accounts, rounds, ticks, the leader lease). In cluster mode (tp_keys_spread) a
 * bucket's tag is `bN.K` instead, K chosen so that the B buckets' slots spread evenly over the
 * slot space, hence over the masters; "tp:{bN}:" below stands for either.
 *
 * Builders write into a caller-owned struct tp_key and return its string, so a call site reads
 * `tp_store_command(st, cb, ud, "HGET %s %lld", tp_keys_bal(&k, b), uid)`. The result stays
 * valid until `k` is reused or goes out of scope.
 */
#ifndef TP_KEYS_H
#define TP_KEYS_H

#include <stddef.h>
#include <stdint.h>

/* Prefix of every global key (hash tag {g}). */
#define TP_KEYS_GLOBAL "tp:{g}:"

/* Global keys without an id. */
#define TP_KEYS_LEASE TP_KEYS_GLOBAL "lease"             /* STRING "<holder>|<epoch>" */
#define TP_KEYS_EPOCH TP_KEYS_GLOBAL "epoch"             /* STRING fencing epoch */
#define TP_KEYS_ROUNDS TP_KEYS_GLOBAL "rounds"           /* ZSET round ids */
#define TP_KEYS_CURRENT TP_KEYS_GLOBAL "current"         /* HASH open, live → round id */
#define TP_KEYS_UNFINISHED TP_KEYS_GLOBAL "unfinished"   /* ZSET ids of rounds not yet final */
#define TP_KEYS_TICKS TP_KEYS_GLOBAL "ticks"             /* STREAM price ticks */
#define TP_KEYS_GLOBAL_OUTBOX TP_KEYS_GLOBAL "outbox"    /* STREAM global events */
#define TP_KEYS_USER_SEQ TP_KEYS_GLOBAL "user_seq"       /* STRING INCR → user id */
#define TP_KEYS_USERNAMES TP_KEYS_GLOBAL "usernames"     /* HASH lower-cased name → id */
#define TP_KEYS_AUTH_SECRET TP_KEYS_GLOBAL "auth_secret" /* STRING token signing secret */
#define TP_KEYS_PAUSE TP_KEYS_GLOBAL "pause"     /* HASH the operator's pause (absent: running) */
#define TP_KEYS_WORKERS TP_KEYS_GLOBAL "workers" /* ZSET "<host>|<pid>|<index>" → heartbeat ms */
/* ZSET user_id → token watermark (Unix ms): the user's tokens expiring at or before it are
 * revoked (scripts/lua/revoke.lua, password.lua). */
#define TP_KEYS_REVOKED TP_KEYS_GLOBAL "revoked"

/* STRING: the highest round id round_index.lua checked (the leader's walk resumes above it). */
#define TP_KEYS_UNFINISHED_SCAN TP_KEYS_GLOBAL "unfinished_scan"

/* STRING: a round whose bucket copy a bet found missing; the leader takes it (GETDEL) and
 * re-writes that round's copies (tp_leader_ask_repair). */
#define TP_KEYS_REPAIR TP_KEYS_GLOBAL "repair"

/* Pub/sub channel of the pre-encoded MessagePack broadcasts (tick, round, odds). */
#define TP_KEYS_BCAST_CHANNEL "tp:bcast"

/* Longest idempotency key a builder accepts (the bet contract's bound). */
#define TP_KEYS_IDEM_MAX 128
/* Room for the longest key: the idempotency key of bucket 16383 (config's maximum), a 20-digit
 * user id and a TP_KEYS_IDEM_MAX-byte client key. */
#define TP_KEYS_MAX 192

/* A built key; `s` is NUL-terminated, `len` its length. */
struct tp_key {
    char s[TP_KEYS_MAX];
    size_t len;
};

/**
 * The bucket of a player: user_id mod buckets (ids come from a sequence, so plain modulo spreads
 * them evenly). `buckets` is config's game.buckets, which the config table bounds to ≥ 1, so no
 * guard against 0 here (asserted). Result in [0, buckets) for user_id ≥ 0.
 */
int tp_bucket_of(int64_t user_id, int buckets);

/**
 * Switches the bucket keys to cluster mode's tags for `buckets` buckets: bucket N's tag is
 * `bN.K` with the smallest K ≥ 0 whose slot lies in bucket N's share of the slot space (shares
 * of at least 64 slots). Call once at start-up, before any key is built and before workers or
 * threads start. 0 buckets restores the standalone layout (tests). Returns 0 or TP_EINVAL
 * (buckets outside [0, 16384]).
 */
int tp_keys_spread(int buckets);

/* --- Bucket keys: tp:{bN}:… (all return k->s) --- */

/** tp:{bN}:bal — HASH user_id → balance. */
const char *tp_keys_bal(struct tp_key *k, int bucket);
/** tp:{bN}:grants — HASH grant_id → "<user_id>:<amount>". */
const char *tp_keys_grants(struct tp_key *k, int bucket);
/** tp:{bN}:granted — STRING Σ grants. */
const char *tp_keys_granted(struct tp_key *k, int bucket);
/** tp:{bN}:house — STRING house balance of the bucket. */
const char *tp_keys_house(struct tp_key *k, int bucket);
/** tp:{bN}:seq — STRING bet counter. */
const char *tp_keys_seq(struct tp_key *k, int bucket);
/** tp:{bN}:outbox — STREAM money events. */
const char *tp_keys_outbox(struct tp_key *k, int bucket);
/* <outbox>:rejected — STREAM the outbox entries the Postgres writer refused, parked for an
 * operator (same slot as the outbox; docs/operations.md, "Rejected outbox entries"). */
#define TP_KEYS_REJECTED_SUFFIX ":rejected"
/** <outbox>:rejected of `outbox` (tp_keys_outbox's or TP_KEYS_GLOBAL_OUTBOX). */
const char *tp_keys_rejected(struct tp_key *k, const char *outbox);
/** tp:{bN}:net — ZSET user_id → net winnings (leaderboard). */
const char *tp_keys_net(struct tp_key *k, int bucket);
/** tp:{bN}:netlog — LIST, the leaderboard's stakes log, not yet folded into `net`. */
const char *tp_keys_netlog(struct tp_key *k, int bucket);
/** tp:{bN}:excl — HASH user_id → end of the player's self-exclusion (Unix ms). */
const char *tp_keys_excl(struct tp_key *k, int bucket);
/** tp:{bN}:paused — STRING the bucket's copy of the pause (since, Unix ms; absent: running),
 * read by bet.lua. */
const char *tp_keys_paused(struct tp_key *k, int bucket);
/** tp:{bN}:disabled — HASH user_id → when an operator disabled the account (Unix ms). */
const char *tp_keys_disabled(struct tp_key *k, int bucket);
/** tp:{bN}:unsettled — SET round ids whose stakes the bucket holds. */
const char *tp_keys_unsettled(struct tp_key *k, int bucket);
/** tp:{bN}:idem:<user_id>:<key> — STRING record of the one-bet reference script only
 * (bench/lua/bet.lua); `key` is `len` bytes (≤ TP_KEYS_IDEM_MAX, asserted). */
const char *tp_keys_ref_idem(struct tp_key *k, int bucket, int64_t user_id, const char *key,
                             size_t len);
/** tp:{bN}:ubets:<user_id> — LIST of the player's bets, newest first. */
const char *tp_keys_ubets(struct tp_key *k, int bucket, int64_t user_id);
/** tp:{bN}:wsock:<user_id> — ZSET the player's open WebSocket sockets → expiry (ws_sockets.lua). */
const char *tp_keys_wsock(struct tp_key *k, int bucket, int64_t user_id);
/** tp:{bN}:round:<round_id>:state — HASH the bucket's copy of the round state. */
const char *tp_keys_round_state(struct tp_key *k, int bucket, int64_t round_id);
/** tp:{bN}:idem:<round_id> — HASH "<user_id>:<key>" → idempotency record of the round's bets,
 * written by versions before the records moved into the hot index (read, never written). */
const char *tp_keys_idem(struct tp_key *k, int bucket, int64_t round_id);
/** The idempotency filter window of `now_ms` for an idempotency TTL of `ttl_s` (> 0) seconds:
 * floor(now_ms / (ttl_s · 1000)). bet_batch.lua computes the same and checks the names. */
int64_t tp_keys_idem_window(int64_t now_ms, int ttl_s);
/** tp:{bN}:idemhot — HASH "<user_id>:<key>" → "<round_id>:<placed_ms>|<record>": the hot key
 * index, the round each key of a round still in Redis bet on and its idempotency record (an
 * older version's entry has no record: it is in idem:<round_id>); archival removes a round's
 * entries. */
const char *tp_keys_idem_hot(struct tp_key *k, int bucket);
/** tp:{bN}:idemyoung — HASH, the hot key index's young part: the same entries as idemhot, where
 * bets insert them while a fork child runs and until the part is promoted (else into idemhot);
 * bet_batch.lua promotes them into idemhot in chunks, never while a fork child
 * runs (scripts/lua/README.md, its row in the key table). A key's entry in it is newer
 * than its entry in idemhot, if both exist. */
const char *tp_keys_idem_young(struct tp_key *k, int bucket);

/* Shards of one window's filter of a bucket: a key's shard is picked by its hash, never by the
 * filter's size, so every shard name is known without reading Redis (scripts/lua/README.md). */
#define TP_KEYS_IDEM_SHARDS 1024
/** tp:{bN}:idemfilter:<window>:<shard> — STRING shard of an older version's per-day filter:
 * bet_batch.lua reads its last shard's presence as "an older leader may archive there" (every
 * filter bet "check"), idem_slots.lua folds it into the three-day shards and leaves a tombstone
 * (a HASH) as its shard 0. Never written otherwise. */
const char *tp_keys_idem_shard(struct tp_key *k, int bucket, int64_t window, int shard);
/** tp:{bN}:idemslots:<shard> — STRING shard (0..TP_KEYS_IDEM_SHARDS-1) of the blocked Bloom
 * filter of the keys archived in each of three days, 5 bits of one 32-bit word per
 * "<user_id>:<key>" and day, the days' words interleaved: day d's word i at bytes
 * 12i + 4 (d mod 3) (bet_batch.lua reads today's and yesterday's in one GETRANGE of the 12
 * bytes; archival writes day d's; the leader zeroes day d + 1's during day d). Built once by the
 * leader (idem_slots.lua, shard 0 first: its size is every shard's; shard TP_KEYS_IDEM_SHARDS-1
 * last: the filter is whole); no TTL. */
const char *tp_keys_idem_slots(struct tp_key *k, int bucket, int shard);
/* Bytes of one word's three days in a shard (tp_keys_idem_slots): three 32-bit words side by
 * side, the unit a shard's size is a whole number of and bet_batch.lua's GETRANGE reads. */
#define TP_KEYS_IDEM_TRIPLE_BYTES 12
/** tp:{bN}:idemslots:<name> — the filter's helper keys: "zeroed" (STRING, the newest day whose
 * words were zeroed whole), "fold" (the upgrade's scratch string, deleted in its step),
 * "mask:<r>" (the zeroing's mask of day r mod 3, expiring with the day). */
const char *tp_keys_idem_slots_aux(struct tp_key *k, int bucket, const char *name);

/* Where a key's 5 bits go: `word` (before the modulo by the shard's words), their `mask` and
 * the `shard`, from the SHA-1 of "<user_id>:<key>" (bytes 0-3, 4-7 as five 5-bit bit numbers,
 * 8-11 modulo TP_KEYS_IDEM_SHARDS; big-endian). The pre-shard filter used the same word and
 * mask, so it is read with them too. */
struct tp_keys_idem_pos {
    uint32_t word, mask;
    int shard;
};
/* How far the clocks of hosts (and Redis) may differ: a filter shard outlives its last reader's
 * window by this much (src/game/leader_idemfilter.c), and archival writes the previous window
 * too during this long after a window starts (src/game/leader_archive.c), for a reader whose
 * clock still says the previous window; archival also takes a round's pg_at (the time another
 * leader found it whole in Postgres) only if it is no further ahead of its own clock. */
#define TP_KEYS_IDEM_SLACK_MS 600000LL

/** The filter position of (user_id, key of `len` bytes). */
void tp_keys_idem_pos(int64_t user_id, const char *key, size_t len, struct tp_keys_idem_pos *out);

/** Bytes of each three-day shard (tp_keys_idem_slots) for game.idem_filter = `filter` bytes (one
 * day) over `buckets` buckets: three days of filter / buckets / TP_KEYS_IDEM_SHARDS less 16 bytes
 * (Redis's string header and terminator) in whole 32-bit words, at least one word: the size an
 * older version gave a per-day shard, so its words fold into one day exactly; the shard stays in
 * the allocator size class of three shares (384 KiB at the default). */
int64_t tp_keys_idem_shard_bytes(size_t filter, int buckets);

/** The first byte of `word`'s triple (its three days' words) in a shard of `shard_bytes` bytes
 * (whole triples, > 0): (word mod its triples) * 12, where bet_batch.lua's `GETRANGE` reads it
 * from (to it + 11; scripts/lua/README.md). */
int64_t tp_keys_idem_byte_offset(uint32_t word, int64_t shard_bytes);

/** The idempotency TTL in seconds: 86400 (24 h, the contract's), unless the environment sets
 * TP_TEST_IDEM_TTL_S (a test hook, docs/operations.md: integration tests shorten the "day" of
 * the filter windows to see them roll; never set it in production). Read once. */
int tp_keys_idem_ttl_s(void);
/** tp:{bN}:pool:<round_id> — HASH band → Σ stakes, total. */
const char *tp_keys_pool(struct tp_key *k, int bucket, int64_t round_id);
/** tp:{bN}:pool:* — SCAN MATCH pattern of every pool of the bucket. */
const char *tp_keys_pool_pattern(struct tp_key *k, int bucket);
/** tp:{bN}:bets:<round_id>:<band> — HASH bet_id → "<user_id>:<stake>": the round's bets of one
 * band as versions before session 26 wrote them (bench/lua/bet.lua, the one-bet reference, still
 * does). Read, never written, by the server: a round an older server left in flight. */
const char *tp_keys_bets(struct tp_key *k, int bucket, int64_t round_id, int band);
/** tp:{bN}:betl:<round_id>:<band> — LIST of "<bet_id>:<user_id>:<stake>" (each a decimal
 * without sign or leading zero; scripts/lua/README.md's key table is the entry's home), the round's
 * bets of one band in the order admitted. bet_batch.lua RPUSHes: an append touches the list's
 * tail node, where a hash's HSET wrote a random slot of its table, copy-on-write for every page
 * of it during an AOF rewrite (bench/README.md "Session 26"). */
const char *tp_keys_betl(struct tp_key *k, int bucket, int64_t round_id, int band);
/** tp:{bN}:plan:<round_id> — HASH settlement plan and progress. */
const char *tp_keys_plan(struct tp_key *k, int bucket, int64_t round_id);
/** tp:{bN}:paid:<round_id> — HASH bet_id → amount credited. */
const char *tp_keys_paid(struct tp_key *k, int bucket, int64_t round_id);
/** tp:{bN}:payout:<round_id> — HASH user_id → round total credited. */
const char *tp_keys_payout(struct tp_key *k, int bucket, int64_t round_id);

/* Most keys one round owns in one bucket (idempotency records, state copy, pool, plan, paid,
 * payout, one bets hash and one bets list per band). */
#define TP_KEYS_ROUND_BUCKET_MAX (6 + 2 * 64)

/**
 * Every key round `round_id` owns in bucket N, for a round of `nbands` bands (1..64): what
 * archival deletes once the round is in Postgres. Writes them into out[0..cap) and returns
 * their number (at most TP_KEYS_ROUND_BUCKET_MAX); a key family that belongs to a round is
 * added here, and archival follows.
 */
int tp_keys_round_bucket(struct tp_key *out, int cap, int bucket, int64_t round_id, int nbands);

/* --- Global keys with an id: tp:{g}:… --- */

/** tp:{g}:round:<round_id> — HASH the round. */
const char *tp_keys_round(struct tp_key *k, int64_t round_id);
/** tp:{g}:round:<round_id>:pg_at — STRING when archival first found the round whole in Postgres
 * (Unix ms, by the leader's clock); game.retain_s counts from it (src/game/leader_archive.c).
 * Written once (SET NX), with a TTL; deleted with the round hash. */
const char *tp_keys_round_pg_at(struct tp_key *k, int64_t round_id);
/** tp:{g}:seed:<round_id> — STRING the round's secret seed. */
const char *tp_keys_seed(struct tp_key *k, int64_t round_id);
/** tp:{g}:user:<user_id> — HASH username, pw_hash, created_at. */
const char *tp_keys_user(struct tp_key *k, int64_t user_id);

#endif
