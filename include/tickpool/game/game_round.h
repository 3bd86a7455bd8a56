/*
 * A round as the game keeps it in Redis (tp:{g}:round:<id>, scripts/lua/README.md, "Game
 * engine"): parsed from its hash, or loaded asynchronously with the bucket pools of a round that
 * still takes bets. Read by the leader, `tickpool verify`, the WebSocket snapshot, the
 * leader's `round` broadcasts and the rounds API; its wire form (the Round object) is
 * tp_protocol_write_round.
 */
#ifndef TP_GAME_ROUND_H
#define TP_GAME_ROUND_H

#include <stdbool.h>
#include <stdint.h>

#include "tickpool/game/round.h"
#include "tickpool/game/settle.h"

struct tp_pg_result;
struct tp_pgr;
struct tp_store;
struct tp_store_reply;

/** One round as stored in tp:{g}:round:<id> (+ the bucket pools while they are not recorded). */
struct tp_game_round {
    int64_t id;
    enum tp_round_state state; /* as stored: settling and cancelling included */
    struct tp_round_times t;
    char seed_hash[65];
    char seed[65]; /* "" until revealed */
    bool has_lock, has_close;
    int64_t lock_price, close_price;
    int winning_band; /* -1 until known */
    int edges[TP_ROUND_MAX_EDGES];
    int n_edges;
    int rake_bps;
    int64_t min_stake, max_stake; /* the round's stake bounds; 0 for a round opened before rounds
                                     carried them (bet.lua then uses the config's) */
    int64_t vol_ppb, betting_ms, tick_ms;
    bool has_plan; /* close or cancel recorded: total .. refund_all valid */
    int64_t total, winning_stake, rake, pot;
    bool refund_all;
    bool has_pools; /* pools[] valid (recorded at close/cancel, or summed from the buckets) */
    int64_t pools[TP_ROUND_MAX_BANDS];
    bool has_receipt;
    struct tp_settle_receipt receipt;
    bool archiving; /* the archiver has started deleting its keys (history reads Postgres) */
};

/** Parses an HGETALL reply of a round hash. Returns 0, TP_ENOTFOUND (empty) or TP_EINVAL. */
int tp_game_round_parse(const struct tp_store_reply *r, struct tp_game_round *out);

/** Completion of tp_game_round_load: err 0 and `r` (borrowed during the call), or an error. */
typedef void (*tp_game_round_cb)(int err, const struct tp_game_round *r, void *ud);

/** Loads round `id` and, unless recorded, sums its pools over `buckets` buckets. cb is called
 * exactly once when 0 is returned (TP_ENOTFOUND for a missing round). */
int tp_game_round_load(struct tp_store *store, int buckets, int64_t id, tp_game_round_cb cb,
                       void *ud);

/** Completion of tp_game_round_load_current: err 0 with the open and live rounds (each NULL
 * when there is none; borrowed during the call), or an error (both NULL). */
typedef void (*tp_game_round_current_cb)(int err, const struct tp_game_round *open,
                                         const struct tp_game_round *live, void *ud);

/** Loads the game's current pair (tp:{g}:current, as `/rounds/current` answers it): the ids,
 * then both rounds. A boundary between the two reads would mix them (an "open" round already
 * live), so the pair is read again until each round's state agrees with its slot (a few
 * times at most: boundaries are a phase apart). cb is called exactly once when 0 is
 * returned. */
int tp_game_round_load_current(struct tp_store *store, int buckets, tp_game_round_current_cb cb,
                               void *ud);

/** The same when the pair's ids are known (a boundary just wrote them): both rounds and their
 * pools in one round trip, no read of the ids; an answer that does not fit the slots is read
 * again as tp_game_round_load_current does. cb is called exactly once when 0 is returned. */
int tp_game_round_load_pair(struct tp_store *store, int buckets, int64_t open_id, int64_t live_id,
                            tp_game_round_current_cb cb, void *ud);

/* --- The same round from Postgres (settled and cancelled rounds that left Redis) --- */

/* The columns tp_game_round_from_pg reads, in its order: `SELECT TP_GAME_ROUND_PG_COLUMNS FROM
 * rounds WHERE …`. */
#define TP_GAME_ROUND_PG_COLUMNS                                                                   \
    "id, state, opens_at, locks_at, closes_at, seed_hash, coalesce(seed, ''), vol_ppb, tick_ms, "  \
    "betting_ms, rake_bps, lock_price, close_price, winning_band, "                                \
    "array_to_string(band_edges_bps, ','), array_to_string(pools, ','), total, winning_stake, "    \
    "rake, breakage, payouts, refunds, refund_all, coalesce(min_stake, 0), coalesce(max_stake, 0)"

/**
 * Parses row `row` of a TP_GAME_ROUND_PG_COLUMNS result into the round a Redis read of the same
 * final round gives. Returns 0; TP_ENOTFOUND when the row is not a final round with everything
 * the Round object shows (a round written before Postgres kept it whole); TP_EINVAL if malformed.
 */
int tp_game_round_from_pg(const struct tp_pg_result *res, int row, struct tp_game_round *out);

/** True when a and b show the same Round object and the same outcome to /me/bets (the fields
 * Postgres keeps): what the archiver checks before a round may leave Redis. */
bool tp_game_round_same(const struct tp_game_round *a, const struct tp_game_round *b);

/** Completion of tp_game_round_load_pg: err 0 and the final rounds found (`n` of them, sorted
 * by id, borrowed during the call), or an error (TP_EUNAVAIL, TP_ETIMEDOUT, …) and n 0. */
typedef void (*tp_game_rounds_cb)(int err, const struct tp_game_round *rounds, int n, void *ud);

/** Loads the final rounds among ids[0..n) (n <= 200) from Postgres through reader `r`. Returns
 * 0 (cb called exactly once, later) or an error (cb never called). */
int tp_game_round_load_pg(struct tp_pgr *r, const int64_t *ids, int n, tp_game_rounds_cb cb,
                          void *ud);

#endif
