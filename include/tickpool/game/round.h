/*
 * Round rules, pure: the state machine (open -> live -> settling -> settled, or open|live ->
 * cancelling -> cancelled), the wall-clock
 * aligned schedule, and band assignment by exact integer comparison. No I/O, no clock: callers
 * pass `now`.
 */
#ifndef TP_ROUND_H
#define TP_ROUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP_ROUND_MAX_EDGES 15
#define TP_ROUND_MAX_BANDS (TP_ROUND_MAX_EDGES + 1)

/* Every state a round hash stores (scripts/lua/README.md, "Game engine"). TP_ROUND_NONE is the
 * pseudo-state before a round exists (the source of the OPEN event); it is never stored nor
 * shown to clients. SETTLING and CANCELLING (payout/refund pages in progress) are stored but
 * never shown: tp_round_state_public maps them. */
enum tp_round_state {
    TP_ROUND_NONE = 0,
    TP_ROUND_OPEN,
    TP_ROUND_LIVE,
    TP_ROUND_SETTLING,
    TP_ROUND_SETTLED,
    TP_ROUND_CANCELLING,
    TP_ROUND_CANCELLED,
};

enum tp_round_event {
    TP_ROUND_EV_OPEN = 0, /* none -> open */
    TP_ROUND_EV_LOCK,     /* open -> live, lock price known */
    TP_ROUND_EV_CLOSE,    /* live -> settling, close price and plan recorded */
    TP_ROUND_EV_CANCEL,   /* open|live -> cancelling, every stake will be refunded */
    TP_ROUND_EV_FINAL,    /* settling -> settled, cancelling -> cancelled: every page paid */
};

/** The times of one round, Unix ms. */
struct tp_round_times {
    int64_t opens_at;
    int64_t locks_at;
    int64_t closes_at;
};

/** One band as published: lo_bps/hi_bps are meaningless when has_lo/has_hi is false (the open
 * outer ends, null in JSON). The band holds moves m with lo_bps <= m < hi_bps. */
struct tp_round_band_desc {
    int index;
    bool has_lo, has_hi;
    int lo_bps, hi_bps;
};

/** Stored name of a state ("open", "live", "settling", "settled", "cancelling", "cancelled";
 * "none"), or "unknown". */
const char *tp_round_state_name(enum tp_round_state s);

/** The one parser of a round state: exactly one of the six stored names (n bytes, not
 * NUL-terminated). Returns 0 and sets *out, or TP_EINVAL ("none" is refused). */
int tp_round_state_parse(const char *s, size_t n, enum tp_round_state *out);

/** The state clients see (docs/http-api.md, Round): settling shows as live (its payouts are not
 * all credited yet), cancelling as cancelled; every other state as itself. */
enum tp_round_state tp_round_state_public(enum tp_round_state s);

/** Name of an event ("open", "lock", "close", "cancel", "final") or "unknown". */
const char *tp_round_event_name(enum tp_round_event ev);

/** The one transition function: the state after `ev`, or TP_ECONFLICT for an illegal move
 * (anything out of settled or cancelled, lock twice, cancel while settling, ...) and TP_EINVAL
 * for unknown values. */
int tp_round_next_state(enum tp_round_state s, enum tp_round_event ev);

/** True for settled and cancelled: no event applies any more. */
bool tp_round_is_final(enum tp_round_state s);

/** Ticks the price stream keeps at tick_ms: at least 6000, and always 10 minutes' worth, so
 *  GET /api/v1/prices has the last 5 minutes and a snapshot the last 60 s at any tick_ms. */
int64_t tp_round_ticks_kept(int64_t tick_ms);

/** Returns 0 when 0 <= n_edges <= TP_ROUND_MAX_EDGES and the edges strictly ascend (edges_bps
 * may be NULL when n_edges is 0), else TP_EINVAL. */
int tp_round_check_edges(const int *edges_bps, int n_edges);

/** Band of a close price: the number of edges e with e * L <= (C - L) * 10000 (so a move
 * exactly on an edge belongs to the band above it). Exact __int128 arithmetic, no division.
 * Returns 0..n_edges, or TP_EINVAL for bad edges or a price < 1. */
int tp_round_band(int64_t lock_price, int64_t close_price, const int *edges_bps, int n_edges);

/** Fills out[0..n_edges] with the band descriptors; returns n_edges + 1, or TP_EINVAL for bad
 * edges and TP_ETOOBIG when cap < n_edges + 1. */
int tp_round_bands(const int *edges_bps, int n_edges, struct tp_round_band_desc *out, int cap);

/** Times of a round opening at `opens_at`: lock = opens + betting_ms, close = lock + live_ms.
 * Returns 0 or TP_EINVAL (opens_at not a multiple of betting_ms, or non-positive phases). */
int tp_round_schedule(int64_t opens_at, int64_t betting_ms, int64_t live_ms,
                      struct tp_round_times *out);

/** Smallest multiple of betting_ms >= now_ms (now_ms >= 0, betting_ms > 0): when a fresh
 * leader opens its first round. Returns it, or TP_EINVAL. */
int64_t tp_round_align_open(int64_t now_ms, int64_t betting_ms);

/** The event the leader owes a round in state `s` at `now_ms`: LOCK at locks_at, CLOSE at
 * closes_at, or CANCEL when that time is missed by more than grace_ms. Returns 1 and sets
 * *ev, or 0 when nothing is due (also for final states). */
int tp_round_due(enum tp_round_state s, const struct tp_round_times *t, int64_t now_ms,
                 int64_t grace_ms, enum tp_round_event *ev);

#endif
