/*
 * Game planner, pure: from a snapshot of the rounds still owed something, the clock and the
 * game config it picks the ONE action the leader owes next (a boundary, cancel, settle, resync
 * or nothing), and the time the next boundary falls due (the leader's timer). It knows no loop,
 * no Redis and no sockets: the leader loads the snapshot, asks, executes the action through the
 * fenced scripts and asks again on its next step, so a crash between two actions only repeats
 * the planning.
 *
 * A boundary is one action with up to three parts, executed as one all-or-nothing script: at
 * the lock time T of round N, the close of the live round due at T, the lock of N and the open
 * of N+1 at T, so no reader sees the game between (open N, live N-1) and (open N+1, live N).
 */
#ifndef TP_PLANNER_H
#define TP_PLANNER_H

#include <stdbool.h>
#include <stdint.h>

#include "tickpool/game/round.h"

struct tp_config_game;

/** What the planner reads of the game config, and the operator's pause. */
struct tp_planner_config {
    int64_t betting_ms; /* a round opens every betting phase, aligned to the wall clock */
    int64_t grace_ms;   /* a lock or close missed by more than this cancels the round */
    /* `tickpool admin pause` (tp:{g}:pause, which the leader re-reads every step; false from
     * tp_planner_config_init): no round opens, the rounds in flight lock, close and settle. */
    bool paused;
    /* The newest round id the system of record (Postgres) holds: a round opens above it and
     * above every round given, so a Redis that lost its rounds never reuses an id. While it is
     * not known (floor_unknown) and no round is given, no round opens. Zero (and
     * tp_planner_config_init) is a known floor of 0; the leader reads it from Postgres
     * (leader_floor.c). */
    int64_t id_floor;
    bool floor_unknown;
};

/** What the planner reads of one round: its id, stored state and schedule. */
struct tp_planner_round {
    int64_t id;
    enum tp_round_state state;
    struct tp_round_times t;
};

enum tp_planner_op {
    TP_PLANNER_NONE = 0, /* nothing is due */
    TP_PLANNER_BOUNDARY, /* close `close_id`, lock `lock_id`, open `open_id` at `opens_at`, as one
                            step (an id of 0 leaves that part out; at least one is set) */
    TP_PLANNER_CANCEL,   /* cancel round `round_id` (lock or close missed by more than grace) */
    TP_PLANNER_SETTLE,   /* run the payout or refund pages of settling/cancelling `round_id` */
    TP_PLANNER_RESYNC,   /* re-write the bucket copies of open round `round_id` */
};

/** The one action owed next. round_id is set for CANCEL, SETTLE and RESYNC; the boundary's
 * parts for BOUNDARY (every unused field is 0). */
struct tp_planner_action {
    enum tp_planner_op op;
    int64_t round_id;
    int64_t close_id, lock_id, open_id, opens_at;
};

/** Fills *out from the game config: betting phase and grace (not paused; id floor 0, known). */
void tp_planner_config_init(struct tp_planner_config *out, const struct tp_config_game *g);

/** The action owed at now_ms given rounds[0..n): strictly ascending ids, holding EVERY round
 * not yet settled or cancelled (whatever live/betting is) plus the newest round, and
 * open_synced (the open round whose bucket copies this lease wrote, 0: none yet). Final rounds
 * other than the newest may be included and are ignored. Returns 0 and sets *out, or TP_EINVAL
 * (bad config, n < 0, ids not ascending). */
int tp_planner_next(const struct tp_planner_config *c, const struct tp_planner_round *rounds, int n,
                    int64_t now_ms, int64_t open_synced, struct tp_planner_action *out);

/** The earliest lock time of an open round or close time of a live round in rounds[0..n)
 * (possibly past), INT64_MAX when there is none: when the leader's boundary timer fires. */
int64_t tp_planner_next_due(const struct tp_planner_round *rounds, int n);

/** Name of an op ("none", "boundary", "cancel", "settle", "resync") or "unknown": for logs and
 * tests. */
const char *tp_planner_op_name(enum tp_planner_op op);

#endif
