/*
 * Bet admission: validation of a bet request in memory (pure, no I/O), and the asynchronous
 * submission through scripts/lua/bet_batch.lua that the HTTP handler (POST /api/v1/bets, in
 * tickpool/api/bets.h) and the WebSocket session layer (`bet` messages) share. Nothing here knows
 * a transport: requests come in as structs and values, outcomes go out as struct tp_bet_result.
 *
 * Order on every path: validate (tp_bet_parse*, tp_bet_check_key) → tp_bet_submit, which takes a
 * limiter slot (overloaded / in-flight conflict) and queues the bet in the worker's batch: the
 * bets of one loop iteration go to Redis per bucket and round as one bet_batch.lua call, sent
 * before the loop next blocks, and each gets its own answer.
 * A replayed request (same user, key and canonical body) gets the first outcome's fields, so a
 * response formatted with tp_bet_write_fields is byte-identical to the first one.
 */
#ifndef TP_BET_H
#define TP_BET_H

#include "tickpool/base/codec.h"
#include "tickpool/base/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/* Longest idempotency key, in bytes (each byte printable ASCII 0x21..0x7e). */
#define TP_BET_KEY_MAX 128
/* Largest bet request body accepted (both formats). */
#define TP_BET_MAX_BODY 4096
/* Largest round id (the bet script keeps integers below 10^15, exact in a Lua double). */
#define TP_BET_ROUND_MAX 999999999999999LL
/* Largest stake any round can accept (the same 15-digit bound; the config's max_stake is). */
#define TP_BET_STAKE_MAX 999999999999999LL

/* Outcome codes; TP_BET_OK is 0. Names: tp_bet_code_name; the HTTP status beside each is the
 * one tp_bets_status (tickpool/api/bets.h) answers. */
enum tp_bet_code {
    TP_BET_OK = 0,
    TP_BET_INVALID_REQUEST,      /* 400 invalid_request */
    TP_BET_INVALID_STAKE,        /* 400 invalid_stake */
    TP_BET_INVALID_BAND,         /* 400 invalid_band */
    TP_BET_UNAUTHORIZED,         /* 401 unauthorized */
    TP_BET_SELF_EXCLUDED,        /* 403 self_excluded (tickpool/money/exclusion.h) */
    TP_BET_ACCOUNT_DISABLED,     /* 403 account_disabled (tickpool/money/access.h) */
    TP_BET_INSUFFICIENT_FUNDS,   /* 402 insufficient_funds */
    TP_BET_ROUND_NOT_FOUND,      /* 404 round_not_found */
    TP_BET_ROUND_NOT_OPEN,       /* 409 round_not_open */
    TP_BET_IDEMPOTENCY_CONFLICT, /* 409 idempotency_conflict */
    TP_BET_POOL_FULL,            /* 409 pool_full (the round's pool is at its exact bound) */
    TP_BET_GAME_PAUSED,          /* 409 game_paused (`tickpool admin pause`) */
    TP_BET_KEY_REQUIRED,         /* 422 idempotency_key_required */
    TP_BET_OVERLOADED,           /* 429 overloaded (send Retry-After: 1) */
    TP_BET_UNAVAILABLE,          /* 503 unavailable */
};

/* Bounds a request is validated against before bet.lua (tp_bet_limits_any). */
struct tp_bet_limits {
    int nbands;        /* number of bands: band_edges + 1 */
    int64_t min_stake; /* inclusive */
    int64_t max_stake; /* inclusive */
};

/* A validated bet request. */
struct tp_bet_req {
    int64_t round_id; /* 1 … TP_BET_ROUND_MAX */
    int band;         /* 0 … nbands-1 */
    int64_t stake;    /* min_stake … max_stake */
};

/* The outcome of a submission: on TP_BET_OK every field is set; otherwise only `code`. */
struct tp_bet_result {
    enum tp_bet_code code;
    int64_t bet_id;
    int64_t round_id;
    int band;
    int64_t stake;
    int64_t balance; /* the balance right after this bet (the first outcome's, on a replay) */
    bool replayed;   /* true when the script answered from the idempotency record */
};

/** Completion of tp_bet_submit (on the worker's loop thread); `res` is borrowed. */
typedef void (*tp_bet_cb)(const struct tp_bet_result *res, void *ud);

/** The contract's error code string ("invalid_stake", …; "ok" for TP_BET_OK). */
const char *tp_bet_code_name(enum tp_bet_code c);
/** A short human-readable message for a code. */
const char *tp_bet_code_message(enum tp_bet_code c);

/** Fills `out` with the widest bounds of any round: TP_ROUND_MAX_BANDS bands, stakes 1 …
 * TP_BET_STAKE_MAX. A round's own band count and stake bounds are fixed when it opens and may
 * differ from today's config (a restart changed it), so only bet.lua, which reads them from
 * the round, checks a bet against them; this check keeps malformed input off Redis. */
void tp_bet_limits_any(struct tp_bet_limits *out);

/**
 * Validates a request body of `len` bytes in `fmt`: a map with integer round_id, band and stake
 * (other members are ignored). Returns TP_BET_OK and fills *out, or INVALID_REQUEST (malformed,
 * too big, not a map, a member missing, round_id not in 1…TP_BET_ROUND_MAX), INVALID_BAND,
 * INVALID_STAKE (any non-integer, including 1.0, 1e2, "100", true, null, overflow; or out of
 * bounds). `out` is untouched on error.
 */
enum tp_bet_code tp_bet_parse(enum tp_fmt fmt, const void *body, size_t len,
                              const struct tp_bet_limits *lim, struct tp_bet_req *out);
/** As tp_bet_parse on an already parsed map (a WebSocket `bet` message). */
enum tp_bet_code tp_bet_parse_val(const struct tp_val *map, const struct tp_bet_limits *lim,
                                  struct tp_bet_req *out);
/** The three members' checks tp_bet_parse makes once each is an integer (a reader that took
 * them from the bytes itself): TP_BET_OK and fills *out, or the same code tp_bet_parse gives. */
enum tp_bet_code tp_bet_check(int64_t round_id, int64_t band, int64_t stake,
                              const struct tp_bet_limits *lim, struct tp_bet_req *out);
/** Checks an idempotency key: 1…TP_BET_KEY_MAX bytes, each printable ASCII (0x21…0x7e).
 * TP_BET_OK or TP_BET_KEY_REQUIRED (key may be NULL). */
enum tp_bet_code tp_bet_check_key(const char *key, size_t len);

/** Gives every worker its limiter of limits.max_inflight_bets and its batch (a worker slot and
 * an init hook; an exit hook frees them). Call once in main, before tp_master_run. */
void tp_bet_install(void);

/* The one home of a bet answer's result fields, in the order every encoding writes them:
 * X(name) for each, `name` being both the key and the struct tp_bet_result member. Expanded by
 * tp_bet_write_fields and by tp_protocol_bet_ok, which writes them as bytes (a macro, not a
 * table, so that writer keeps its constant lengths: bench/README.md, session 8). */
#define TP_BET_RESULT_FIELDS(X) X(bet_id) X(round_id) X(band) X(stake) X(balance)

/** Writes the TP_BET_RESULT_FIELDS pairs (bet_id, round_id, band, stake, balance) into a map the
 * caller opened (the HTTP 201 body is a map of exactly these; `bet_ok` adds t and req). */
void tp_bet_write_fields(struct tp_wr *w, const struct tp_bet_result *res);

/**
 * Submits a validated bet of `user_id` with idempotency key key[len] (checked by
 * tp_bet_check_key) on worker `w`: takes a slot of w's limiter (tp_bet_install) and adds the bet
 * to w's batch, sent as one bet_batch.lua call with the iteration's other bets of its bucket and
 * round (at once when the batch is full).
 * Returns 0 (cb is called exactly once, later, on w's loop), or with cb never called:
 * TP_EAGAIN (overloaded), TP_ECONFLICT (same user and key in flight), TP_EUNAVAIL (Redis down),
 * TP_EINVAL (bad argument; also without tp_bet_install). Map these with tp_bet_code_from_err.
 * Keeps tickpool_bets_inflight; outcomes are counted by the caller (tp_bet_count_answer).
 */
int tp_bet_submit(struct tp_worker *w, int64_t user_id, const struct tp_bet_req *req,
                  const char *key, size_t len, tp_bet_cb cb, void *ud);
/** The outcome code for a tp_bet_submit return value (TP_BET_OK for 0). */
enum tp_bet_code tp_bet_code_from_err(int err);
/**
 * Counts one answered bet request in the metrics: accepted (TP_BET_OK) or rejected by its code,
 * and its latency from `t0_ns` (tp_mono_ns when the request arrived) for `transport`. Every
 * transport calls it exactly once per bet request it answers, whatever the outcome.
 */
void tp_bet_count_answer(enum tp_metrics_transport transport, int64_t t0_ns, enum tp_bet_code code);

#endif
