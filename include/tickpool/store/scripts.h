/*
 * One typed stub per Lua script of scripts/lua/: the only place in C that knows a script's
 * KEYS and ARGV order. Each stub fills the script's KEYS (from the key schema, keys.h) and ARGV
 * in one argument-building function in src/store/scripts.c, next to a pointer at the script's
 * header comment (the reference), and runs it with tp_store_script.
 *
 * Contract of every stub, as tp_store_script: returns 0 and calls cb exactly once with the
 * script's reply, or returns an error (TP_EUNAVAIL when not connected or `store` is NULL,
 * TP_ENOTFOUND when the script was not loaded, TP_EINVAL) and never calls cb. Replies are the
 * ones the script's header documents; reading them stays with the caller. Pointers in the
 * argument structs are borrowed for the call only (the store copies what it keeps).
 */
#ifndef TP_SCRIPTS_H
#define TP_SCRIPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tickpool/store/store.h"

/* The fencing pair of every leader script whose first key is the lease (lease.lua's holder and
 * the epoch it granted). */
struct tp_script_fence {
    const char *holder;
    int64_t epoch;
};

/* Most ticks one tick.lua call carries (a backfill after a failover is bounded by this). */
#define TP_SCRIPT_TICKS_MAX 64
/* Most arguments of one call with the inline buffers (tick.lua: 2 KEYS, holder, epoch, MAXLEN,
 * two per tick), and their bytes of formatted keys and numbers. A bet batch is larger: its
 * builder moves the call to the heap (tp_script_call_release frees it). */
#define TP_SCRIPT_ARGS_MAX (5 + 2 * TP_SCRIPT_TICKS_MAX)
#define TP_SCRIPT_BUF 4096

/* One built script call: argv[0..nkeys) are KEYS, the rest ARGV; argv[i] is len[i] bytes, either
 * in the call's buffer (keys, numbers) or borrowed from the argument struct it was built from
 * (strings). argv, len and the buffer are the inline arrays below or, for a batch, the heap. */
struct tp_script_call {
    const char *script; /* file name without .lua */
    int nkeys, argc;
    const char **argv;
    size_t *len;
    char *_buf;
    size_t _used, _bufcap;
    int _cap;
    void *_heap;
    const char *_argv[TP_SCRIPT_ARGS_MAX];
    size_t _len[TP_SCRIPT_ARGS_MAX];
    char _inline[TP_SCRIPT_BUF];
};
/** Frees what a builder put on the heap for `a` (nothing for a call in its inline buffers). */
void tp_script_call_release(struct tp_script_call *a);

/* The one-bet reference script bench/lua/bet.lua (admission before batching, kept as the bench's
 * same-run ceiling): one bet of `user_id` (bucket = tp_bucket_of(user_id, buckets)). */
struct tp_script_bet_args {
    int64_t user_id, round_id;
    int band;
    int64_t stake;
    const char *idem_key; /* idem_len bytes, 1..TP_KEYS_IDEM_MAX */
    size_t idem_len;
    int64_t now_ms;
    int nbands; /* nbands and the stake bounds: the config's, for a round without its own */
    int64_t min_stake, max_stake;
    int idem_ttl_s;
    int buckets;
};
/** Builds bench/lua/bet.lua's call without sending it, for bench/loadgen, which writes RESP
 * itself (the server admits every bet through bet_batch.lua). Strings of `a` must outlive `out`. */
void tp_script_bet_call(const struct tp_script_bet_args *a, struct tp_script_call *out);

/* Largest filter shard: three days of TP_CONFIG_IDEM_FILTER_BUCKET_MAX (512 MiB) /
 * TP_KEYS_IDEM_SHARDS. */
#define TP_SCRIPT_IDEM_SHARD_MAX (3 * 512 * 1024)

/* Most bets one bet_batch.lua call carries. */
#define TP_SCRIPT_BATCH_MAX 128

/* One bet of a batch; strings are borrowed for the call. */
struct tp_script_batch_bet {
    int64_t user_id;
    int band;
    int64_t stake;
    const char *idem_key; /* idem_len bytes, 1..TP_KEYS_IDEM_MAX */
    size_t idem_len;
};
/* bet_batch.lua: n bets of players of bucket `bucket`, all on round `round_id`. */
struct tp_script_bet_batch_args {
    int64_t round_id, now_ms;
    int nbands;
    int64_t min_stake, max_stake;
    int idem_ttl_s;
    int bucket, buckets;
    bool skip_filter; /* the bets' keys were looked up in Postgres: no "check" answers */
    /* Bytes of a filter shard as the leader builds them under this configuration
     * (tp_keys_idem_shard_bytes), or 0: each bet's range is then the script's to compute. The
     * script takes the ranges computed here only when the shards have this size. */
    int64_t shard_bytes;
    const struct tp_script_batch_bet *bets;
    size_t n; /* 1..TP_SCRIPT_BATCH_MAX */
};
/** Runs bet_batch.lua. TP_EINVAL when n is 0 or over TP_SCRIPT_BATCH_MAX, an idempotency key
 * is not 1..TP_KEYS_IDEM_MAX bytes of printable ASCII (the script checks only length and
 * newline), a player is not in `bucket`, the TTL is < 1, now < 0, or shard_bytes is neither 0
 * nor whole triples of words (12 bytes) up to TP_SCRIPT_IDEM_SHARD_MAX. The
 * reply holds two values per bet, in order (the script's header). */
int tp_script_bet_batch(struct tp_store *store, const struct tp_script_bet_batch_args *a,
                        tp_store_cb cb, void *ud);

/* The admin action a script records next to its effect (`tickpool admin`; scripts/lua/README.md
 * "Admin actions"): its id (1..128 bytes of [A-Za-z0-9_.:-]), who acts, and why ("" for none). */
struct tp_script_admin {
    const char *action_id, *actor, *reason;
};

/* grant.lua: credit `amount` to `user_id` once per `grant_id`; a negative amount (a correction)
 * only with `admin` set, and never below a zero balance. */
struct tp_script_grant_args {
    int64_t user_id;
    const char *grant_id;
    int64_t amount, now_ms;
    int buckets;
    const struct tp_script_admin *admin; /* NULL: not an operator's grant (the sign-up credit) */
};
/** Runs grant.lua. */
int tp_script_grant(struct tp_store *store, const struct tp_script_grant_args *a, tp_store_cb cb,
                    void *ud);

/* exclusion.lua: exclude `user_id` from betting for `days` days from `now_ms` (never shorter). */
struct tp_script_exclusion_args {
    int64_t user_id;
    int days;
    int64_t now_ms;
    int buckets;
};
/** Runs exclusion.lua. */
int tp_script_exclusion(struct tp_store *store, const struct tp_script_exclusion_args *a,
                        tp_store_cb cb, void *ud);

/* pause.lua: pause (`resume` false) or resume the game, recording the admin action. */
struct tp_script_pause_args {
    bool resume;
    int64_t now_ms;
    struct tp_script_admin admin;
};
/** Runs pause.lua (the caller writes the bucket copies first: see the script's header). */
int tp_script_pause(struct tp_store *store, const struct tp_script_pause_args *a, tp_store_cb cb,
                    void *ud);

/* signup.lua: claim `lower` and create user `user_id`. */
struct tp_script_signup_args {
    const char *lower, *username;
    int64_t user_id;
    const char *pw_hash;
    int64_t now_ms;
};
/** Runs signup.lua. */
int tp_script_signup(struct tp_store *store, const struct tp_script_signup_args *a, tp_store_cb cb,
                     void *ud);

/* revoke.lua: revoke `user_id`'s tokens expiring at or before `before_ms` (and publish it). */
struct tp_script_revoke_args {
    int64_t user_id, before_ms, now_ms;
};
/** Runs revoke.lua. */
int tp_script_revoke(struct tp_store *store, const struct tp_script_revoke_args *a, tp_store_cb cb,
                     void *ud);

/* password.lua: replace `old_hash` by `new_hash` and revoke tokens up to `before_ms`. */
struct tp_script_password_args {
    int64_t user_id;
    const char *old_hash, *new_hash;
    int64_t before_ms, now_ms;
};
/** Runs password.lua. */
int tp_script_password(struct tp_store *store, const struct tp_script_password_args *a,
                       tp_store_cb cb, void *ud);

/* account_flag.lua: disable (`disabled`) or enable account `user_id` (and publish it). */
struct tp_script_account_flag_args {
    int64_t user_id;
    bool disabled;
    int64_t now_ms;
    int buckets;
    struct tp_script_admin admin;
};
/** Runs account_flag.lua. */
int tp_script_account_flag(struct tp_store *store, const struct tp_script_account_flag_args *a,
                           tp_store_cb cb, void *ud);

/* lease.lua: acquire or renew (`px_ms` > 0) or release (`px_ms` == 0) the leader lease;
 * `epoch` is the one the caller believes it holds (0: none). */
struct tp_script_lease_args {
    const char *holder;
    int64_t epoch;
    int px_ms;
};
/** Runs lease.lua. */
int tp_script_lease(struct tp_store *store, const struct tp_script_lease_args *a, tp_store_cb cb,
                    void *ud);

/* tick.lua: append n (≤ TP_SCRIPT_TICKS_MAX) ticks ts[i], price[i], ascending ts. */
struct tp_script_tick_args {
    struct tp_script_fence fence;
    int64_t maxlen;
    const int64_t *ts, *price;
    size_t n;
};
/** Runs tick.lua. TP_EINVAL when n is 0 or over TP_SCRIPT_TICKS_MAX. */
int tp_script_tick(struct tp_store *store, const struct tp_script_tick_args *a, tp_store_cb cb,
                   void *ud);

/* Most bands a round has (= TP_ROUND_MAX_BANDS; the store layer sits below game). */
#define TP_SCRIPT_BANDS_MAX 16

/* The open part of round_boundary.lua: create round `id` (seed and its hash as 64 hex). */
struct tp_script_round_open_args {
    int64_t id, opens_at, locks_at, closes_at;
    const char *seed_hex, *seed_hash;
    int64_t vol_ppb;
    int rake_bps;
    const int *edges_bps; /* n_edges band edges, sent as a comma list */
    int n_edges;
    int tick_ms;
    int64_t betting_ms;
    int64_t min_stake, max_stake; /* the round's stake bounds (bet.lua reads them per round) */
    int64_t id_floor; /* the newest round id Postgres holds: `id` must be above it (0: none) */
};

/* The lock part of round_boundary.lua: lock round `id` at `lock_price` (also reveals round
 * id-1's seed). */
struct tp_script_round_lock_args {
    int64_t id, lock_price;
};

/* The close part of round_boundary.lua: live → settling with the close price and the plan. */
struct tp_script_round_close_args {
    int64_t id, close_price;
    int winning_band;
    int64_t total, winning_stake, rake, pot;
    bool refund_all;
    const int64_t *pools; /* npools per-band totals, sent as a comma list */
    int npools;
};

/* round_boundary.lua: the close, the lock and the open of one boundary in one fenced,
 * all-or-nothing script; NULL leaves a part out (at least one part). */
struct tp_script_round_boundary_args {
    struct tp_script_fence fence;
    const struct tp_script_round_close_args *close;
    const struct tp_script_round_lock_args *lock;
    const struct tp_script_round_open_args *open;
};
/** Runs round_boundary.lua. TP_EINVAL when every part is NULL, the open's n_edges is out of
 * [0, TP_SCRIPT_BANDS_MAX) or the close's npools out of [1, TP_SCRIPT_BANDS_MAX]. */
int tp_script_round_boundary(struct tp_store *store, const struct tp_script_round_boundary_args *a,
                             tp_store_cb cb, void *ud);

/* ws_sockets.lua: count (take, keep) or uncount (give) one WebSocket socket of `user_id`. */
struct tp_script_ws_sockets_args {
    int bucket;
    int64_t user_id;
    const char *op;     /* "take", "keep" or "give" */
    const char *socket; /* "<host>|<pid>|<index>|<serial>" */
    int cap;
    int64_t ttl_ms;
};
/** Runs ws_sockets.lua. */
int tp_script_ws_sockets(struct tp_store *store, const struct tp_script_ws_sockets_args *a,
                         tp_store_cb cb, void *ud);

/* round_cancel.lua: open|live → cancelling; a lost record of an unfinished round is written
 * again as cancelling, from edges, locks_at and betting_ms. */
struct tp_script_round_cancel_args {
    struct tp_script_fence fence;
    int64_t id, total;
    const int64_t *pools; /* npools per-band totals, sent as a comma list */
    int npools;
    const char *reason;
    const int *edges; /* the round's nedges = npools - 1 band edges (bps) */
    int nedges;
    int64_t locks_at, betting_ms;
};
/** Runs round_cancel.lua. TP_EINVAL when npools is out of [1, TP_SCRIPT_BANDS_MAX] or nedges is
 * not npools - 1. */
int tp_script_round_cancel(struct tp_store *store, const struct tp_script_round_cancel_args *a,
                           tp_store_cb cb, void *ud);

/* Most round ids one round_index call checks (its KEYS and ARGV fit TP_SCRIPT_ARGS_MAX). */
#define TP_SCRIPT_INDEX_MAX 60

/* round_index.lua: add the unfinished ones of rounds ids[0..n) to the unfinished index and
 * raise the scan mark to `mark` (the page's highest id). */
struct tp_script_round_index_args {
    struct tp_script_fence fence;
    int64_t mark;
    const int64_t *ids;
    int n;
};
/** Runs round_index.lua. TP_EINVAL when n is out of [0, TP_SCRIPT_INDEX_MAX]. */
int tp_script_round_index(struct tp_store *store, const struct tp_script_round_index_args *a,
                          tp_store_cb cb, void *ud);

/* round_final.lua: settling|cancelling → final with the bucket sums. */
struct tp_script_round_final_args {
    struct tp_script_fence fence;
    int64_t id, sum_t, sum_paid;
};
/** Runs round_final.lua. */
int tp_script_round_final(struct tp_store *store, const struct tp_script_round_final_args *a,
                          tp_store_cb cb, void *ud);

/* bucket_state.lua: bucket `bucket`'s copy of round `id` becomes `state`. */
struct tp_script_bucket_state_args {
    int bucket;
    int64_t id;
    const char *state; /* open, live or cancelled */
    int64_t locks_at;
    int grace_ms;
    int nbands;                   /* the round's own band count, stored with a new copy */
    int64_t min_stake, max_stake; /* its stake bounds, stored with it; 0: the round has none */
};
/** Runs bucket_state.lua. */
int tp_script_bucket_state(struct tp_store *store, const struct tp_script_bucket_state_args *a,
                           tp_store_cb cb, void *ud);

/* bucket_plan.lua: record the bucket's settlement plan of round `id` (first writer wins). */
struct tp_script_bucket_plan_args {
    int bucket;
    int64_t id;
    int winning_band;
    int64_t pot, winning_stake;
    bool refund_all;
    int nbands;
};
/** Runs bucket_plan.lua. */
int tp_script_bucket_plan(struct tp_store *store, const struct tp_script_bucket_plan_args *a,
                          tp_store_cb cb, void *ud);

/* settle_page.lua: pay one page of the bucket's bets of round `id`; the page ends at
 * `max_bets` bets credited or once the script has run `budget_us` (no further bet taken). */
struct tp_script_settle_page_args {
    int bucket;
    int64_t id;
    int nbands;
    int max_bets;
    int64_t now_ms;
    int budget_us;
};
/** Runs settle_page.lua: {'ok', done, credited, scanned, µs of Redis time}. TP_EINVAL when
 * nbands is out of [1, TP_SCRIPT_BANDS_MAX] or max_bets < 1 or budget_us < 0. */
int tp_script_settle_page(struct tp_store *store, const struct tp_script_settle_page_args *a,
                          tp_store_cb cb, void *ud);

/* net_fold.lua: fold bucket `bucket`'s stakes log (bet_batch.lua's) into its leaderboard, then,
 * with `limit` > 0, answer its top `limit` players (ZREVRANGE WITHSCORES); limit 0 only folds
 * (the reply: the entries folded). */
struct tp_script_net_fold_args {
    int bucket;
    int limit;
};
/** Runs net_fold.lua. */
int tp_script_net_fold(struct tp_store *store, const struct tp_script_net_fold_args *a,
                       tp_store_cb cb, void *ud);

/* settle_finish.lua: close the bucket's part of round `id`. */
struct tp_script_settle_finish_args {
    int bucket;
    int64_t id;
    const char *final_state; /* settled or cancelled */
    int64_t now_ms;
};
/** Runs settle_finish.lua. */
int tp_script_settle_finish(struct tp_store *store, const struct tp_script_settle_finish_args *a,
                            tp_store_cb cb, void *ud);

/* Most field pairs of one outbox entry park.lua copies (the writer reads up to 32). */
#define TP_SCRIPT_PARK_FIELDS_MAX 32
/* Most copies park.lua searches for an earlier copy of a re-delivered entry. */
#define TP_SCRIPT_PARK_LOOK_BACK_MAX 10000

/* park.lua: park outbox entry `src_id` of `stream` (the Postgres writer refused it) in
 * "<stream>:rejected" with its fields and `error`, and acknowledge it for `group`, in one step. */
struct tp_script_park_args {
    const char *stream; /* the outbox (tp_keys_outbox or TP_KEYS_GLOBAL_OUTBOX) */
    const char *group, *src_id, *error;
    int look_back;             /* 0..TP_SCRIPT_PARK_LOOK_BACK_MAX */
    const char *const *fields; /* nfields pairs: name, value */
    size_t nfields;            /* 1..TP_SCRIPT_PARK_FIELDS_MAX */
};
/** Runs park.lua: {"parked", copy id}, {"had_copy", copy id} or {"not_pending"} (the script's
 * header). TP_EINVAL for nfields or look_back out of range, or a stream name too long. */
int tp_script_park(struct tp_store *store, const struct tp_script_park_args *a, tp_store_cb cb,
                   void *ud);

/* Most fields one idem_unindex.lua step takes. */
#define TP_SCRIPT_UNINDEX_MAX 4096

/* One record field "<user_id>:<key>" of an archived round (borrowed for the call). */
struct tp_script_unindex_field {
    const char *s;
    size_t len;
};
/* idem_unindex.lua: one step of archival for round `id` in bucket `bucket`: the given fields'
 * entries leave the hot idempotency key index and their keys enter day `window`'s words of the
 * filter (and day window - 1's when `two`), those placed before `since_ms` excepted (past their
 * TTL), and the fields leave the round's records. */
struct tp_script_idem_unindex_args {
    int bucket;
    int64_t id;
    int64_t window; /* the day, ≥ 0 */
    bool two;       /* also day window - 1 (needs window ≥ 1) */
    int64_t since_ms;
    const struct tp_script_unindex_field *fields;
    int n; /* 0..TP_SCRIPT_UNINDEX_MAX */
};
/** Runs idem_unindex.lua: the entries removed, or -1 when the filter is not whole yet (nothing
 * done). TP_EINVAL for arguments out of range or a field that is not "<user_id>:<key>" with a
 * key of 1..TP_KEYS_IDEM_MAX bytes. */
int tp_script_idem_unindex(struct tp_store *store, const struct tp_script_idem_unindex_args *a,
                           tp_store_cb cb, void *ud);

/* idem_slots.lua: one step of the leader's upkeep of the filter's three-day shards in bucket
 * `bucket`: build (create shards first .. first + n - 1 when missing and fold an older per-day
 * filter of days day - 1 .. day + 1 into them), zero (day + 1's words of those shards, only
 * inside day `day` by now_ms, margin_ms from its edges), or probe. */
enum tp_script_idem_slots_mode { TP_IDEM_SLOTS_BUILD, TP_IDEM_SLOTS_ZERO, TP_IDEM_SLOTS_PROBE };
struct tp_script_idem_slots_args {
    enum tp_script_idem_slots_mode mode;
    int bucket;
    int64_t day;         /* ≥ 1 */
    int first, n;        /* 0 ≤ first, 1 ≤ n, first + n ≤ TP_KEYS_IDEM_SHARDS (not probe) */
    int64_t shard_bytes; /* size of shard 0 when it is created, whole triples, 12..SHARD_MAX */
    int64_t span_ms;     /* a day's ms (the idempotency TTL's), ≥ 1000 */
    int64_t extra_ms;    /* build: a tombstone's expiry; zero: the margin (> 0) */
    int64_t now_ms;      /* zero: the caller's clock */
};
/** Runs idem_slots.lua: build: shards created; zero: shards zeroed, or -1 outside the day's
 * part; probe: {last shard exists, an older per-day trace left, the zeroed day or -1}.
 * TP_EINVAL for arguments out of range. */
int tp_script_idem_slots(struct tp_store *store, const struct tp_script_idem_slots_args *f,
                         tp_store_cb cb, void *ud);

#endif
