/*
 * Game planner (see include/tickpool/game/planner.h): the leader's decision, pure.
 *
 * Completeness: the planner sees every unfinished round, not a window of the newest
 * ones, because the leader loads them from tp:{g}:unfinished, which round_boundary's open adds
 * to and round_final removes from in the same scripts that change the state. So a close falling due
 * behind any number of newer rounds (live_s >= 5 x betting_s used to hide it), a round past its
 * grace, or a round stuck in settling is always in front of the planner.
 *
 * Priorities, in this order, one action per call:
 *  1. a lock, close or cancel due on an open or live round, newest round first, so the round
 *     taking bets locks before the previous round closes. The newest round's lock is a whole
 *     boundary: the live round whose close is due (the one closing at that same time when
 *     live_s is a multiple of betting_s) and the open of the next round at that lock time go
 *     with it, so one round is always open and `live` is always `open - 1` (unless that time
 *     is off the betting grid after a betting_s change: then a phase goes without an open
 *     round). Any other due lock or close is a boundary of that one part;
 *  2. the newest open round's bucket copies are re-written once per lease (a dead leader may
 *     have left a bucket without one), and again when the leader forgets the synced id (a slot
 *     map change, a bet that found a copy missing). Before settlement: it is one write per
 *     bucket, and bets on a bucket without its copy are refused until it is done, so it must
 *     never wait for a settlement of any length;
 *  3. the oldest settling or cancelling round gets its pages run (a restart mid-settlement
 *     simply resumes here: every settlement script is idempotent);
 *  4. no open round at all (a fresh game, or every round cancelled after a clock jump): open
 *     the next id at the first betting boundary not before now;
 *  5. an older open round's copies likewise (two open rounds are possible only after the clock
 *     went backwards). Only one id is remembered as synced, so the two are re-written in turn:
 *     harmless (bucket_state.lua never moves a state backwards), and after settlement, which
 *     gets every other step meanwhile rather than none.
 *  While the operator has paused the game (c->paused), nothing opens: the newest round locks
 *  without opening its successor (rule 1) and rule 4 owes nothing, so after a resume rule 4
 *  opens the next round on the betting grid, as at a fresh start.
 */
#include "tickpool/game/planner.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"

static const char *const op_names[] = {
    [TP_PLANNER_NONE] = "none",     [TP_PLANNER_BOUNDARY] = "boundary",
    [TP_PLANNER_CANCEL] = "cancel", [TP_PLANNER_SETTLE] = "settle",
    [TP_PLANNER_RESYNC] = "resync",
};

const char *tp_planner_op_name(enum tp_planner_op op)
{
    return (int)op >= TP_PLANNER_NONE && op <= TP_PLANNER_RESYNC ? op_names[op] : "unknown";
}

void tp_planner_config_init(struct tp_planner_config *out, const struct tp_config_game *g)
{
    out->betting_ms = (int64_t)g->betting_s * 1000;
    out->grace_ms = g->grace_ms;
    out->paused = false;
    out->id_floor = 0;
    out->floor_unknown = false;
}

/* The id of the next round to open after max_id, the newest round given (0: none). */
static int64_t next_open_id(const struct tp_planner_config *c, int64_t max_id)
{
    return (max_id > c->id_floor ? max_id : c->id_floor) + 1;
}

static struct tp_planner_action act(enum tp_planner_op op, int64_t id)
{
    return (struct tp_planner_action){.op = op, .round_id = id};
}

static struct tp_planner_action boundary(int64_t close_id, int64_t lock_id, int64_t open_id,
                                         int64_t opens_at)
{
    return (struct tp_planner_action){.op = TP_PLANNER_BOUNDARY,
                                      .close_id = close_id,
                                      .lock_id = lock_id,
                                      .open_id = open_id,
                                      .opens_at = opens_at};
}

/* The newest live round before rounds[below] whose close is due and still within grace (0:
 * none): it closes in the same step as the lock at rounds[below]. */
static int64_t close_due_with(const struct tp_planner_config *c,
                              const struct tp_planner_round *rounds, int below, int64_t now_ms)
{
    for (int i = below - 1; i >= 0; i--) {
        enum tp_round_event ev;
        if (rounds[i].state == TP_ROUND_LIVE &&
            tp_round_due(rounds[i].state, &rounds[i].t, now_ms, c->grace_ms, &ev) == 1 &&
            ev == TP_ROUND_EV_CLOSE)
            return rounds[i].id;
    }
    return 0;
}

/* Priority 1: the event the newest due open/live round needs, if any. */
static bool plan_due(const struct tp_planner_config *c, const struct tp_planner_round *rounds,
                     int n, int64_t now_ms, struct tp_planner_action *out)
{
    int64_t max_id = n > 0 ? rounds[n - 1].id : 0;
    for (int i = n - 1; i >= 0; i--) {
        const struct tp_planner_round *r = &rounds[i];
        enum tp_round_event ev;
        if (r->state != TP_ROUND_OPEN && r->state != TP_ROUND_LIVE)
            continue;
        if (tp_round_due(r->state, &r->t, now_ms, c->grace_ms, &ev) != 1)
            continue;
        switch (ev) {
        case TP_ROUND_EV_CANCEL:
            *out = act(TP_PLANNER_CANCEL, r->id);
            return true;
        case TP_ROUND_EV_LOCK:
            /* The next round opens in the same step, at this lock time. Not while the operator
             * has paused the game, nor when betting_s changed with a restart and this lock is
             * off the new grid: that round could never be opened (found by
             * tests/unit/game/test_sim.c). The round locks alone, and rule 4 opens the next one
             * at the next boundary. */
            if (r->id == max_id && r->t.locks_at % c->betting_ms == 0 && !c->paused)
                *out = boundary(close_due_with(c, rounds, i, now_ms), r->id,
                                next_open_id(c, max_id), r->t.locks_at);
            else
                *out = boundary(close_due_with(c, rounds, i, now_ms), r->id, 0, 0);
            return true;
        case TP_ROUND_EV_CLOSE:
            *out = boundary(r->id, 0, 0, 0);
            return true;
        default:
            break;
        }
    }
    return false;
}

int64_t tp_planner_next_due(const struct tp_planner_round *rounds, int n)
{
    int64_t due = INT64_MAX;
    for (int i = 0; rounds != NULL && i < n; i++) {
        int64_t at = rounds[i].state == TP_ROUND_OPEN   ? rounds[i].t.locks_at
                     : rounds[i].state == TP_ROUND_LIVE ? rounds[i].t.closes_at
                                                        : INT64_MAX;
        due = at < due ? at : due;
    }
    return due;
}

int tp_planner_next(const struct tp_planner_config *c, const struct tp_planner_round *rounds, int n,
                    int64_t now_ms, int64_t open_synced, struct tp_planner_action *out)
{
    if (c == NULL || out == NULL || c->betting_ms <= 0 || c->grace_ms < 0 || c->id_floor < 0 ||
        n < 0 || (n > 0 && rounds == NULL))
        return TP_EINVAL;
    for (int i = 1; i < n; i++)
        if (rounds[i].id <= rounds[i - 1].id)
            return TP_EINVAL;
    *out = act(TP_PLANNER_NONE, 0);
    if (plan_due(c, rounds, n, now_ms, out))
        return 0;
    int newest_open = -1;
    for (int i = n - 1; i >= 0 && newest_open < 0; i--)
        newest_open = rounds[i].state == TP_ROUND_OPEN ? i : -1;
    if (newest_open >= 0 && rounds[newest_open].id != open_synced) {
        *out = act(TP_PLANNER_RESYNC, rounds[newest_open].id);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (rounds[i].state == TP_ROUND_SETTLING || rounds[i].state == TP_ROUND_CANCELLING) {
            *out = act(TP_PLANNER_SETTLE, rounds[i].id);
            return 0;
        }
    }
    bool have_open = false;
    for (int i = 0; i < n; i++)
        have_open = have_open || rounds[i].state == TP_ROUND_OPEN;
    if (!have_open && !c->paused && (n > 0 || !c->floor_unknown)) {
        int64_t max_id = n > 0 ? rounds[n - 1].id : 0;
        *out = boundary(0, 0, next_open_id(c, max_id), tp_round_align_open(now_ms, c->betting_ms));
        return 0;
    }
    for (int i = newest_open - 1; i >= 0; i--) {
        if (rounds[i].state == TP_ROUND_OPEN && rounds[i].id != open_synced) {
            *out = act(TP_PLANNER_RESYNC, rounds[i].id);
            return 0;
        }
    }
    return 0;
}
