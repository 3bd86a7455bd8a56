/*
 * Round rules: one state enum, one transition function, the aligned schedule and exact band
 * assignment. Pure: the leader (and Lua scripts, which mirror the band rule) call in with
 * prices and `now`.
 */
#include "tickpool/game/round.h"

#include "tickpool/base/common.h"

#include <string.h>

static const char *const state_names[] = {
    [TP_ROUND_NONE] = "none",           [TP_ROUND_OPEN] = "open",
    [TP_ROUND_LIVE] = "live",           [TP_ROUND_SETTLING] = "settling",
    [TP_ROUND_SETTLED] = "settled",     [TP_ROUND_CANCELLING] = "cancelling",
    [TP_ROUND_CANCELLED] = "cancelled",
};

static const char *const event_names[] = {
    [TP_ROUND_EV_OPEN] = "open",     [TP_ROUND_EV_LOCK] = "lock",   [TP_ROUND_EV_CLOSE] = "close",
    [TP_ROUND_EV_CANCEL] = "cancel", [TP_ROUND_EV_FINAL] = "final",
};

static bool state_valid(int s)
{
    return s >= TP_ROUND_NONE && s <= TP_ROUND_CANCELLED;
}

static bool event_valid(int ev)
{
    return ev >= TP_ROUND_EV_OPEN && ev <= TP_ROUND_EV_FINAL;
}

const char *tp_round_state_name(enum tp_round_state s)
{
    return state_valid((int)s) ? state_names[s] : "unknown";
}

int tp_round_state_parse(const char *s, size_t n, enum tp_round_state *out)
{
    if (s == NULL)
        return TP_EINVAL;
    for (int i = TP_ROUND_OPEN; i <= TP_ROUND_CANCELLED; i++) {
        if (strlen(state_names[i]) == n && memcmp(state_names[i], s, n) == 0) {
            *out = (enum tp_round_state)i;
            return 0;
        }
    }
    return TP_EINVAL;
}

/* The one place the stored/public difference lives: a settling round keeps counting as live
 * until its receipt exists, a cancelling one is already cancelled for a player. */
enum tp_round_state tp_round_state_public(enum tp_round_state s)
{
    if (s == TP_ROUND_SETTLING)
        return TP_ROUND_LIVE;
    if (s == TP_ROUND_CANCELLING)
        return TP_ROUND_CANCELLED;
    return s;
}

const char *tp_round_event_name(enum tp_round_event ev)
{
    return event_valid((int)ev) ? event_names[ev] : "unknown";
}

/*
 * The whole lifecycle in one table, so nothing else in the code base decides what may follow
 * what. 0 marks an illegal move (TP_ROUND_NONE is never a target).
 */
static const enum tp_round_state transitions[TP_ROUND_CANCELLED + 1][TP_ROUND_EV_FINAL + 1] = {
    /*                   OPEN           LOCK           CLOSE              CANCEL            FINAL */
    [TP_ROUND_NONE] = {TP_ROUND_OPEN, 0, 0, 0, 0},
    [TP_ROUND_OPEN] = {0, TP_ROUND_LIVE, 0, TP_ROUND_CANCELLING, 0},
    [TP_ROUND_LIVE] = {0, 0, TP_ROUND_SETTLING, TP_ROUND_CANCELLING, 0},
    [TP_ROUND_SETTLING] = {0, 0, 0, 0, TP_ROUND_SETTLED},
    [TP_ROUND_SETTLED] = {0, 0, 0, 0, 0},
    [TP_ROUND_CANCELLING] = {0, 0, 0, 0, TP_ROUND_CANCELLED},
    [TP_ROUND_CANCELLED] = {0, 0, 0, 0, 0},
};

int tp_round_next_state(enum tp_round_state s, enum tp_round_event ev)
{
    if (!state_valid((int)s) || !event_valid((int)ev))
        return TP_EINVAL;
    enum tp_round_state next = transitions[s][ev];
    return next == TP_ROUND_NONE ? TP_ECONFLICT : (int)next;
}

bool tp_round_is_final(enum tp_round_state s)
{
    return s == TP_ROUND_SETTLED || s == TP_ROUND_CANCELLED;
}

int64_t tp_round_ticks_kept(int64_t tick_ms)
{
    /* 6000 is 10 minutes at the default 100 ms (and more time at slower ticks); a faster tick
     * (game.tick_ms down to 10 ms) keeps more entries, never less than 10 minutes. */
    const int64_t min_kept = 6000, window_ms = 600000;
    if (tick_ms <= 0)
        return min_kept;
    int64_t n = (window_ms + tick_ms - 1) / tick_ms;
    return n > min_kept ? n : min_kept;
}

int tp_round_check_edges(const int *edges_bps, int n_edges)
{
    if (n_edges < 0 || n_edges > TP_ROUND_MAX_EDGES || (n_edges > 0 && edges_bps == NULL))
        return TP_EINVAL;
    for (int i = 1; i < n_edges; i++)
        if (edges_bps[i] <= edges_bps[i - 1])
            return TP_EINVAL;
    return 0;
}

/*
 * m = (C - L) * 10000 / L >= e  <=>  (C - L) * 10000 >= e * L  because L > 0. Both sides fit
 * easily in __int128 (|C - L| * 1e4 < 2^77, |e| * L < 2^95), so the comparison is exact where a
 * double would round moves that sit on an edge.
 */
int tp_round_band(int64_t lock_price, int64_t close_price, const int *edges_bps, int n_edges)
{
    if (lock_price < 1 || close_price < 1 || tp_round_check_edges(edges_bps, n_edges) != 0)
        return TP_EINVAL;
    __int128 move = ((__int128)close_price - lock_price) * 10000;
    int band = 0;
    while (band < n_edges && (__int128)edges_bps[band] * lock_price <= move)
        band++;
    return band;
}

int tp_round_bands(const int *edges_bps, int n_edges, struct tp_round_band_desc *out, int cap)
{
    if (tp_round_check_edges(edges_bps, n_edges) != 0 || cap < 0 || (cap > 0 && out == NULL))
        return TP_EINVAL;
    if (cap < n_edges + 1)
        return TP_ETOOBIG;
    for (int i = 0; i <= n_edges; i++) {
        struct tp_round_band_desc *d = &out[i];
        d->index = i;
        d->has_lo = i > 0;
        d->lo_bps = i > 0 ? edges_bps[i - 1] : 0;
        d->has_hi = i < n_edges;
        d->hi_bps = i < n_edges ? edges_bps[i] : 0;
    }
    return n_edges + 1;
}

int tp_round_schedule(int64_t opens_at, int64_t betting_ms, int64_t live_ms,
                      struct tp_round_times *out)
{
    if (betting_ms <= 0 || live_ms <= 0 || opens_at < 0 || opens_at % betting_ms != 0)
        return TP_EINVAL;
    if (opens_at > INT64_MAX - betting_ms - live_ms)
        return TP_EINVAL;
    out->opens_at = opens_at;
    out->locks_at = opens_at + betting_ms;
    out->closes_at = out->locks_at + live_ms;
    return 0;
}

int64_t tp_round_align_open(int64_t now_ms, int64_t betting_ms)
{
    if (now_ms < 0 || betting_ms <= 0)
        return TP_EINVAL;
    int64_t r = now_ms % betting_ms;
    if (r == 0)
        return now_ms;
    if (now_ms > INT64_MAX - (betting_ms - r))
        return TP_EINVAL;
    return now_ms + (betting_ms - r);
}

/* A deadline is met in time while now <= at + grace; later than that the round is cancelled
 * because its price can no longer be taken "at" that time by a live leader. */
static enum tp_round_event due_at(int64_t at, int64_t now_ms, int64_t grace_ms,
                                  enum tp_round_event ev)
{
    return now_ms - at > grace_ms ? TP_ROUND_EV_CANCEL : ev;
}

int tp_round_due(enum tp_round_state s, const struct tp_round_times *t, int64_t now_ms,
                 int64_t grace_ms, enum tp_round_event *ev)
{
    if (t == NULL || grace_ms < 0)
        return 0;
    if (s == TP_ROUND_OPEN && now_ms >= t->locks_at) {
        *ev = due_at(t->locks_at, now_ms, grace_ms, TP_ROUND_EV_LOCK);
        return 1;
    }
    if (s == TP_ROUND_LIVE && now_ms >= t->closes_at) {
        *ev = due_at(t->closes_at, now_ms, grace_ms, TP_ROUND_EV_CLOSE);
        return 1;
    }
    return 0;
}
