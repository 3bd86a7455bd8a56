/*
 * Game leader (see include/tickpool/game/leader.h and scripts/lua/README.md, "Game engine").
 *
 * Four watchers per process: the lease timer (500 ms, always running), and while leader the
 * boundary timer (an ev_periodic at the wall-clock time of the next lock or close, see
 * leader_boundary.c), the safety step timer (250 ms: settlement, cancellation past grace,
 * resync and retries; no boundary waits for it) and the tick, an ev_periodic on the wall-clock
 * tick grid (2 ms after each multiple of tick_ms), so a tick goes out right after its own
 * timestamp rather than up to a whole tick_ms late. A step reads a snapshot of the last rounds
 * from Redis, asks the planner (planner.h, pure) for the action owed and does at most that ONE
 * action (a boundary, or cancel, settle or resync one round), as a short asynchronous chain of
 * fenced scripts; the next step re-reads Redis, so a chain interrupted by a crash or a lost
 * lease is simply resumed by whoever leads next (every script is idempotent). Only one step and
 * one tick chain are in flight at a time (busy flags).
 *
 * This file holds the lease, the step and the cancel and resync chains; the boundary is in
 * leader_boundary.c, the price feed in leader_tick.c and the settlement driver in
 * leader_settle.c (leader_internal.h).
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/game/game_round.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/planner.h"
#include "tickpool/game/price_sim.h"
#include "tickpool/game/round.h"
#include "tickpool/game/settle.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/workers_written.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "leader"
#define LEASE_PERIOD 0.5
#define LEASE_PX 2000
#define LEASE_LOSS_MS 1500 /* no successful renewal for this long: assume lost */
#define STEP_PERIOD 0.25   /* the safety step: boundaries run on their own timer */
#define STEP_BURST 16      /* steps run back to back before the safety pace resumes */
#define TICK_LAG_S 0.002   /* fire just after a grid point, so its tick is due */

_Static_assert(TP_ROUND_MAX_BANDS == TP_SCRIPT_BANDS_MAX, "the script stubs carry every band");

/* The fencing pair of the leader scripts (scripts/lua/README.md, "Game engine"). */
struct tp_script_fence tp_leader_fence(const struct tp_leader *l)
{
    return (struct tp_script_fence){.holder = l->holder, .epoch = l->epoch};
}

/* "ok" / "err" head of a script reply; the err code in *code. */
bool tp_leader_reply_ok(int err, const struct tp_store_reply *r, const char **code)
{
    *code = "redis";
    if (err != 0) {
        *code = tp_strerror(err);
        return false;
    }
    if (tp_reply_type(r) == TP_REPLY_ERROR) {
        *code = tp_reply_str(r, NULL);
        return false;
    }
    const char *h = tp_reply_str(tp_reply_at(r, 0), NULL);
    if (h != NULL && strcmp(h, "ok") == 0)
        return true;
    const char *c = tp_reply_str(tp_reply_at(r, 1), NULL);
    *code = c ? c : "bad reply";
    return false;
}

/* A failed script in a chain: stale_epoch means the lease is gone. */
void tp_leader_op_fail(struct tp_leader *l, const char *what, const char *code)
{
    /* What the pages cost before a failure (a Redis restart, a failover) says little after it. */
    tp_settle_pager_forget(&l->pager);
    if (strcmp(code, "stale_epoch") == 0) {
        tp_leader_lose(l, "stale epoch");
    } else if (strcmp(code, "too_early") == 0) {
        /* Redis's clock is behind ours: retry shortly rather than in a burst of refusals. */
        l->acted = false;
        tp_leader_boundary_retry(l, 2);
    } else {
        tp_log_warn(MOD, "%s failed\tround=%lld code=%s", what, (long long)l->op.r.id, code);
    }
    tp_leader_step_end(l);
}

/* --- Announcements (struct tp_leader_observer) --- */

static void on_ignored(int err, const struct tp_store_reply *r, void *ud)
{
    (void)err, (void)r, (void)ud;
}

void tp_leader_publish_round(struct tp_leader *l, int64_t id)
{
    if (l->obs != NULL && l->obs->on_round != NULL)
        l->obs->on_round(l->obs_ud, id);
}

/* --- Actions --- */

static void step_start_now(struct tp_leader *l)
{
    ev_timer_stop(l->loop, &l->step_t);
    ev_timer_set(&l->step_t, 0., STEP_PERIOD);
    ev_timer_start(l->loop, &l->step_t);
}

void tp_leader_step_now(struct tp_leader *l)
{
    if (!l->leader)
        return;
    if (l->step_busy)
        l->step_owed = true;
    else
        step_start_now(l);
}

void tp_leader_step_end(struct tp_leader *l)
{
    l->step_busy = false;
    if (!l->leader)
        return;
    /* The boundary timer fired meanwhile (a settlement page was in flight): its step now. */
    if (l->step_owed) {
        l->step_owed = false;
        step_start_now(l);
        return;
    }
    /* After an action the next may be owed already (a cancel's settlement, a close behind the
     * boundary): the next step starts now rather than at the safety pace. Bounded, so a
     * failing action retries at the normal pace. */
    if (l->acted && l->burst < STEP_BURST) {
        l->acted = false;
        l->burst++;
        step_start_now(l);
    }
}

const struct tp_leader_snap *tp_leader_snap_find(const struct tp_leader *l, int64_t id)
{
    for (int i = 0; i < l->nsnap; i++)
        if (l->snap[i].r.id == id)
            return &l->snap[i];
    return NULL;
}

/* A bucket's copy of round op.r moves to `st` (open, live or cancelled; never backwards). */
static void bucket_state(struct tp_leader *l, int b, enum tp_round_state st, tp_store_cb cb)
{
    struct tp_script_bucket_state_args a = {.bucket = b,
                                            .id = l->op.r.id,
                                            .state = tp_round_state_name(st),
                                            .locks_at = l->op.r.t.locks_at,
                                            .grace_ms = l->g->grace_ms,
                                            .nbands = tp_leader_nbands(&l->op.r),
                                            .min_stake = l->op.r.min_stake,
                                            .max_stake = l->op.r.max_stake};
    if (tp_script_bucket_state(l->store, &a, cb, l) != 0)
        cb(TP_EUNAVAIL, NULL, l);
}

void tp_leader_all_buckets(struct tp_leader *l, enum tp_round_state st, tp_store_cb cb)
{
    l->op.pending = l->g->buckets;
    l->op.err = 0;
    for (int b = 0; b < l->g->buckets; b++)
        bucket_state(l, b, st, cb);
}

bool tp_leader_fan_in(struct tp_leader *l, int err, const struct tp_store_reply *r,
                      const char **code)
{
    if (l->op.err == 0 && !tp_leader_reply_ok(err, r, code)) {
        l->op.err = 1;
        snprintf(l->op.err_code, sizeof(l->op.err_code), "%s", *code);
    }
    if (--l->op.pending > 0)
        return false;
    *code = l->op.err ? l->op.err_code : "ok";
    return true;
}

/*
 * Re-writes the open round's bucket copies once per lease: a leader that died between
 * round_boundary's open and a bucket's copy left that bucket answering round_not_found for the
 * round. bucket_state.lua never moves a state backwards, so this is a no-op where it was done.
 */
static void on_resync_bucket(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_fan_in(l, err, r, &code))
        return;
    if (l->op.err) {
        tp_leader_op_fail(l, "open (bucket resync)", code);
        return;
    }
    l->open_synced = l->op.r.id;
    if (l->repairing)
        tp_log_info(MOD, "bucket copies re-written\tround=%lld", (long long)l->op.r.id);
    l->repairing = false;
    tp_leader_step_end(l);
}

/*
 * The copies of the open round can go missing on a Redis Cluster after the boundary wrote them:
 * a promoted replica misses a write its dead master acknowledged without replicating it
 * (replicas_ack = 0), a reshard moves a slot. Bets there answer round_not_found until the copy
 * is back, so the open round's copies are re-written at once (the planner's resync; every write
 * is idempotent and monotonic) when the store's slot map changed since the last check, or when a
 * bet asked for it (tp:{g}:repair) about the open round.
 */
static void check_copies(struct tp_leader *l)
{
    struct tp_store_stats st;
    tp_store_get_stats(l->store, &st);
    int64_t open = 0;
    for (int i = 0; i < l->nsnap; i++)
        if (l->snap[i].r.state == TP_ROUND_OPEN)
            open = l->snap[i].r.id;
    const char *why = st.map_changes != l->map_changes            ? "slot map changed"
                      : l->repair_id != 0 && l->repair_id == open ? "a bet found a copy missing"
                                                                  : NULL;
    l->map_changes = st.map_changes;
    l->repair_id = 0;
    if (why == NULL || open == 0 || l->open_synced != open)
        return; /* nothing open, or its copies are owed anyway */
    tp_log_info(MOD, "re-writing the open round's bucket copies\tround=%lld reason=\"%s\"",
                (long long)open, why);
    l->open_synced = 0;
    l->repairing = true;
}

int tp_leader_ask_repair(struct tp_store *store, int64_t id)
{
    return tp_store_command(store, on_ignored, NULL, "SET " TP_KEYS_REPAIR " %lld PX 5000",
                            (long long)id);
}

static void resync_open(struct tp_leader *l, const struct tp_game_round *r)
{
    l->op.r = *r;
    tp_leader_all_buckets(l, TP_ROUND_OPEN, on_resync_bucket);
}

static void on_pool(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY)
        l->op.err = 1;
    else
        for (size_t i = 0; i + 1 < tp_reply_len(r); i += 2) {
            const char *k = tp_reply_str(tp_reply_at(r, i), NULL);
            const char *v = tp_reply_str(tp_reply_at(r, i + 1), NULL);
            if (k && v && strcmp(k, "total") != 0) {
                int b = atoi(k);
                if (b >= 0 && b < tp_leader_nbands(&l->op.r))
                    l->op.pools[b] += strtoll(v, NULL, 10);
            }
        }
    if (--l->op.pending > 0)
        return;
    if (l->op.err) {
        tp_leader_op_fail(l, "read pools", "redis");
        return;
    }
    l->op.pools_next(l);
}

void tp_leader_read_pools(struct tp_leader *l, void (*next)(struct tp_leader *l))
{
    memset(l->op.pools, 0, sizeof(l->op.pools));
    l->op.err = 0;
    l->op.pending = l->g->buckets;
    l->op.pools_next = next;
    for (int b = 0; b < l->g->buckets; b++) {
        struct tp_key k;
        if (tp_store_command(l->store, on_pool, l, "HGETALL %s", tp_keys_pool(&k, b, l->op.r.id)) !=
            0)
            on_pool(TP_EUNAVAIL, NULL, l);
    }
}

int64_t tp_leader_pools_total(const struct tp_leader *l)
{
    int64_t t = 0;
    for (int i = 0; i < tp_leader_nbands(&l->op.r); i++)
        t += l->op.pools[i];
    return t;
}

/* Cancel: every bucket cancelled, pools, round_cancel. */
static void on_cancel(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        tp_leader_op_fail(l, "cancel", code);
        return;
    }
    tp_log_warn(MOD, "round cancelled (%s)\tround=%lld", l->op.cancel_reason,
                (long long)l->op.r.id);
    tp_leader_publish_round(l, l->op.r.id);
    tp_leader_step_end(l);
}

static void cancel_pools_read(struct tp_leader *l)
{
    struct tp_script_round_cancel_args a = {.fence = tp_leader_fence(l),
                                            .id = l->op.r.id,
                                            .total = tp_leader_pools_total(l),
                                            .pools = l->op.pools,
                                            .npools = tp_leader_nbands(&l->op.r),
                                            .reason = l->op.cancel_reason,
                                            .edges = l->op.r.edges,
                                            .nedges = l->op.r.n_edges,
                                            .locks_at = l->op.r.t.locks_at,
                                            .betting_ms = l->op.r.betting_ms};
    if (tp_script_round_cancel(l->store, &a, on_cancel, l) != 0)
        tp_leader_step_end(l);
}

static void on_cancel_bucket(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_fan_in(l, err, r, &code))
        return;
    if (l->op.err) {
        tp_leader_op_fail(l, "cancel (bucket)", code);
        return;
    }
    tp_leader_read_pools(l, cancel_pools_read);
}

void tp_leader_cancel(struct tp_leader *l, const struct tp_game_round *r, const char *reason)
{
    l->op.r = *r;
    l->op.cancel_reason = reason;
    tp_leader_all_buckets(l, TP_ROUND_CANCELLED, on_cancel_bucket);
}

/* --- Step: snapshot, then one action --- */

/* Asks the planner for the one action owed now and starts it; the action's chain ends the
 * step (step_end) when its last reply is in. */
static void execute(struct tp_leader *l)
{
    int64_t now = tp_now_ms();
    tp_leader_choose_segment(l, now);
    check_copies(l);
    struct tp_planner_round *in = l->plan_in;
    for (int i = 0; i < l->nsnap; i++)
        in[i] = (struct tp_planner_round){l->snap[i].r.id, l->snap[i].r.state, l->snap[i].r.t};
    /* A boundary due within the lead is planned as of its time T, so that only its writes are
     * left for T (leader_boundary.c); anything else is planned as of now. */
    int64_t due = tp_planner_next_due(in, l->nsnap);
    struct tp_planner_action a;
    bool early = due > now && due - now <= TP_LEADER_BOUNDARY_LEAD_MS &&
                 tp_planner_next(&l->pc, in, l->nsnap, due, l->open_synced, &a) == 0 &&
                 a.op == TP_PLANNER_BOUNDARY;
    if (!early && tp_planner_next(&l->pc, in, l->nsnap, now, l->open_synced, &a) != 0) {
        tp_leader_step_end(l);
        return;
    }
    l->acted = a.op != TP_PLANNER_NONE;
    if (!l->acted)
        l->burst = 0;
    if (!early) /* the step after an early boundary arms the next one */
        tp_leader_boundary_arm(l);
    if (a.op == TP_PLANNER_BOUNDARY) {
        tp_leader_boundary(l, &a, early);
        return;
    }
    if (a.op == TP_PLANNER_NONE && tp_leader_lost(l))
        return;
    const struct tp_leader_snap *s = tp_leader_snap_find(l, a.round_id);
    if (a.op == TP_PLANNER_NONE || s == NULL) {
        tp_leader_step_end(l);
        return;
    }
    switch (a.op) {
    case TP_PLANNER_CANCEL:
        tp_leader_cancel(l, &s->r, "deadline missed");
        break;
    case TP_PLANNER_SETTLE:
        tp_leader_settle(l, &s->r);
        break;
    case TP_PLANNER_RESYNC:
        resync_open(l, &s->r);
        break;
    default:
        tp_leader_step_end(l);
        break;
    }
}

bool tp_leader_boundary_due(struct tp_leader *l)
{
    /* plan_in still holds this step's snapshot: only the settlement in flight acted since. A
     * boundary within the lead counts: its step prepares it before T. */
    struct tp_planner_action a;
    if (tp_planner_next(&l->pc, l->plan_in, l->nsnap, tp_now_ms() + TP_LEADER_BOUNDARY_LEAD_MS,
                        l->open_synced, &a) != 0)
        return false;
    return a.op == TP_PLANNER_BOUNDARY || a.op == TP_PLANNER_CANCEL;
}

static void snap_done(struct tp_leader *l)
{
    if (l->snap_err || !l->leader) {
        tp_leader_step_end(l);
        return;
    }
    int k = 0;
    for (int i = 0; i < l->nsnap; i++)
        if (l->snap[i].r.id > 0)
            l->snap[k++] = l->snap[i];
    l->nsnap = k;
    if (tp_leader_floor_step(l)) {
        tp_leader_step_end(l);
        return;
    }
    if (l->lead.step_ns != 0 && l->lead.snap_ns == 0)
        l->lead.snap_ns = tp_now_ns();
    execute(l);
}

struct snap_ref {
    struct tp_leader *l;
    int i;
};

static void on_snap_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct snap_ref *s = ud;
    struct tp_leader *l = s->l;
    int rc = err != 0 ? TP_EUNAVAIL : tp_game_round_parse(r, &l->snap[s->i].r);
    if (rc == TP_ENOTFOUND) {
        /* Listed, but the record is gone: one lost round must not stop the game. */
        l->snap[s->i].r.id = l->snap_ids[s->i];
        l->snap[s->i].lost = true;
    } else if (rc != 0) {
        l->snap_err = 1;
    }
    free(s);
    if (--l->snap_pending == 0)
        snap_done(l);
}

static void on_snap_seed(int err, const struct tp_store_reply *r, void *ud)
{
    struct snap_ref *s = ud;
    struct tp_leader *l = s->l;
    const char *v = err == 0 ? tp_reply_str(r, NULL) : NULL;
    if (err != 0)
        l->snap_err = 1;
    snprintf(l->snap[s->i].seed_hex, sizeof(l->snap[0].seed_hex), "%s", v ? v : "");
    free(s);
    if (--l->snap_pending == 0)
        snap_done(l);
}

/* `cmd key`, answered into snap[i]. */
static void snap_fire(struct tp_leader *l, int i, tp_store_cb cb, const char *cmd, const char *key)
{
    struct snap_ref *s = tp_xmalloc(sizeof(*s));
    s->l = l;
    s->i = i;
    l->snap_pending++;
    if (tp_store_commandl(l->store, cb, s, cmd, key, NULL) != 0) {
        free(s);
        l->snap_pending--;
        l->snap_err = 1;
    }
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Both id lists are in: sorts and dedups them, then reads every round and its seed. */
static void snap_read_rounds(struct tp_leader *l)
{
    if (l->nids > 0) /* a fresh game has no id yet, and snap_ids may still be NULL */
        qsort(l->snap_ids, (size_t)l->nids, sizeof(l->snap_ids[0]), cmp_id);
    int n = 0;
    for (int i = 0; i < l->nids; i++)
        if (l->snap_ids[i] > 0 && (n == 0 || l->snap_ids[n - 1] != l->snap_ids[i]))
            l->snap_ids[n++] = l->snap_ids[i];
    if (n > l->snap_cap) {
        l->snap_cap = n;
        l->snap = tp_xrealloc(l->snap, (size_t)n * sizeof(l->snap[0]));
        l->plan_in = tp_xrealloc(l->plan_in, (size_t)n * sizeof(l->plan_in[0]));
    }
    l->nsnap = n;
    l->snap_err = 0;
    l->snap_pending = 1;
    for (int i = 0; i < n; i++) {
        memset(&l->snap[i], 0, sizeof(l->snap[i]));
        struct tp_key k;
        snap_fire(l, i, on_snap_round, "HGETALL", tp_keys_round(&k, l->snap_ids[i]));
        snap_fire(l, i, on_snap_seed, "GET", tp_keys_seed(&k, l->snap_ids[i]));
    }
    if (--l->snap_pending == 0)
        snap_done(l);
}

static void snap_lists_done(struct tp_leader *l);

/* One id list (the newest rounds, or the unfinished index) appended to snap_ids. */
static void on_snap_ids(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY) {
        l->snap_err = 1;
    } else {
        size_t n = tp_reply_len(r);
        if ((size_t)l->nids + n > (size_t)l->ids_cap) {
            l->ids_cap = (int)((size_t)l->nids + n) * 2;
            l->snap_ids = tp_xrealloc(l->snap_ids, (size_t)l->ids_cap * sizeof(l->snap_ids[0]));
        }
        for (size_t i = 0; i < n; i++) {
            const char *v = tp_reply_str(tp_reply_at(r, i), NULL);
            l->snap_ids[l->nids++] = v ? strtoll(v, NULL, 10) : 0;
        }
    }
    snap_lists_done(l);
}

/* The operator's pause, re-read every step: the planner obeys it, and a change (or the first
 * read of a lease: a change may have happened while nobody led) is announced. */
static void on_snap_pause(int err, const struct tp_game_pause *p, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0) {
        l->snap_err = 1;
    } else {
        bool changed =
            !l->pause_known || p->paused != l->pause.paused || p->since != l->pause.since;
        if (changed && p->paused)
            tp_log_info(MOD, "game paused: no new round opens\tby=\"%s\" reason=\"%s\"", p->by,
                        p->reason);
        else if (changed && l->pause_known)
            tp_log_info(MOD, "game resumed");
        l->pause = *p;
        l->pause_known = true;
        l->pc.paused = p->paused;
        if (changed && l->leader && l->obs != NULL && l->obs->on_pause != NULL)
            l->obs->on_pause(l->obs_ud, p);
    }
    snap_lists_done(l);
}

/* A round a bet found a bucket copy of missing (tp_leader_ask_repair), taken for check_copies. */
static void on_snap_repair(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *v = err == 0 ? tp_reply_str(r, NULL) : NULL;
    if (v != NULL)
        l->repair_id = strtoll(v, NULL, 10);
    snap_lists_done(l);
}

/* One of the step's first reads is in; the last one goes on with the rounds. */
static void snap_lists_done(struct tp_leader *l)
{
    if (--l->ids_pending > 0)
        return;
    if (l->snap_err || !l->leader) {
        tp_leader_step_end(l);
        return;
    }
    snap_read_rounds(l);
}

static void on_last_tick(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0 || tp_reply_len(r) != 1)
        return;
    const struct tp_store_reply *e = tp_reply_at(r, 0);
    const char *id = tp_reply_str(tp_reply_at(e, 0), NULL);
    const char *p = tp_reply_str(tp_reply_at(tp_reply_at(e, 1), 1), NULL);
    if (id == NULL || p == NULL)
        return;
    int64_t ts = strtoll(id, NULL, 10);
    if (ts >= l->last_tick_ts) {
        l->last_tick_ts = ts;
        l->last_price = strtoll(p, NULL, 10);
    }
}

/* While the step after a boundary is held (tp_leader_step_held), its timer looks this often
 * whether the host's workers have written the boundary. */
#define HOLD_POLL_S 0.001

bool tp_leader_step_held(struct tp_leader *l)
{
    if (l->hold_until_ms == 0)
        return false;
    int64_t now = tp_now_ms();
    if (now >= l->hold_until_ms || (now >= l->hold_from_ms && !tp_worker_output_pending(l->w) &&
                                    tp_workers_written_all(l->hold_t_ms))) {
        l->hold_from_ms = l->hold_until_ms = 0;
        return false;
    }
    double in = now < l->hold_from_ms ? (double)(l->hold_from_ms - now) / 1000.0 : HOLD_POLL_S;
    ev_timer_stop(l->loop, &l->step_t);
    ev_timer_set(&l->step_t, in, STEP_PERIOD);
    ev_timer_start(l->loop, &l->step_t);
    return true;
}

static void step_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct tp_leader *l = t->data;
    if (!l->leader || !tp_store_is_connected(l->store))
        return;
    if (!l->step_busy && tp_leader_step_held(l))
        return;
    tp_leader_index_scan(l); /* beside the steps, once per lease */
    if (l->step_busy)
        return;
    l->step_busy = true;
    l->step_at_ms = tp_now_ms();
    if (l->lead.fired_ns != 0 && l->lead.step_ns == 0)
        l->lead.step_ns = tp_now_ns(); /* the step the boundary timer asked for (debug line) */
    l->acted = false;
    /* The step's reads go out as argument lists, not formats: four times a second. */
    tp_store_commandl(l->store, on_last_tick, l, "XREVRANGE", TP_KEYS_TICKS, "+", "-", "COUNT", "1",
                      NULL);
    /* The unfinished index makes the planner complete (no ratio of live to betting hides a round);
     * the newest rounds give it the newest id and the previous round, final or not. */
    l->nids = 0;
    l->snap_err = 0;
    l->ids_pending = 4;
    char last[TP_FMT_I64_MAX];
    tp_fmt_i64(last, TP_LEADER_RECENT - 1);
    if (tp_store_commandl(l->store, on_snap_ids, l, "ZREVRANGE", TP_KEYS_ROUNDS, "0", last, NULL) !=
        0) {
        tp_leader_step_end(l);
        return;
    }
    if (tp_store_commandl(l->store, on_snap_ids, l, "ZRANGE", TP_KEYS_UNFINISHED, "0", "-1",
                          NULL) != 0)
        on_snap_ids(TP_EUNAVAIL, NULL, l);
    if (tp_game_pause_load(l->store, on_snap_pause, l) != 0)
        on_snap_pause(TP_EUNAVAIL, NULL, l);
    if (tp_store_commandl(l->store, on_snap_repair, l, "GETDEL", TP_KEYS_REPAIR, NULL) != 0)
        on_snap_repair(TP_EUNAVAIL, NULL, l);
}

/* --- Lease --- */

void tp_leader_lose(struct tp_leader *l, const char *why)
{
    if (!l->leader)
        return;
    l->leader = false;
    l->step_owed = false;
    l->hold_from_ms = l->hold_until_ms = 0;
    ev_timer_stop(l->loop, &l->step_t);
    ev_periodic_stop(l->loop, &l->tick_p);
    ev_periodic_stop(l->loop, &l->boundary_p);
    tp_leader_settle_drop(l);
    tp_settle_pager_forget(&l->pager); /* the next lease's pages start cold */
    l->seg_ok = l->seg_known = false;
    tp_metrics_set(TP_METRIC_IS_LEADER, 0);
    tp_log_warn(MOD, "lost the leader lease\tholder=%s epoch=%lld reason=\"%s\"", l->holder,
                l->epoch, why);
}

static void on_lease(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    l->lease_busy = false;
    if (!tp_leader_reply_ok(err, r, &code)) {
        if (err == 0 && strcmp(code, "held") == 0)
            tp_leader_lose(l, "lease held by another process");
        else if (l->leader && tp_now_ms() - l->last_renew_ms > LEASE_LOSS_MS)
            tp_leader_lose(l, "lease not renewed in time");
        return;
    }
    long long e = tp_reply_integer(tp_reply_at(r, 1));
    l->last_renew_ms = tp_now_ms();
    if (e == 0)
        return; /* a release */
    if (!l->leader || e != l->epoch) {
        l->epoch = e;
        l->leader = true;
        l->last_tick_ts = 0;
        l->cache_idx = -1;
        l->seg_ok = l->seg_known = false;
        l->open_synced = 0;
        l->pause_known = false;
        tp_leader_floor_lease(l);
        tp_metrics_set(TP_METRIC_IS_LEADER, 1);
        tp_log_info(MOD, "acquired the leader lease\tholder=%s epoch=%lld pid=%d", l->holder, e,
                    (int)getpid());
        ev_timer_again(l->loop, &l->step_t);
        if (!ev_is_active(&l->tick_p))
            ev_periodic_start(l->loop, &l->tick_p);
    }
}

static void lease_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct tp_leader *l = t->data;
    if (l->lease_busy || !tp_store_is_connected(l->store)) {
        if (l->leader && tp_now_ms() - l->last_renew_ms > LEASE_LOSS_MS)
            tp_leader_lose(l, "Redis unreachable");
        return;
    }
    struct tp_script_lease_args a = {
        .holder = l->holder, .epoch = l->leader ? l->epoch : 0, .px_ms = LEASE_PX};
    l->lease_busy = true;
    if (tp_script_lease(l->store, &a, on_lease, l) != 0)
        l->lease_busy = false;
}

/* The worker slot holding this process's leader (tp_game_install hands it out). */
static size_t slot = SIZE_MAX;

void tp_leader_start(struct tp_worker *w)
{
    if (tp_leader_of(w) != NULL)
        return;
    struct tp_leader *l = tp_xcalloc(1, sizeof(*l));
    l->w = w;
    l->loop = tp_worker_loop(w);
    l->store = tp_store_of(w);
    l->g = &tp_worker_config(w)->game;
    l->one_server = strcmp(tp_worker_config(w)->redis.mode, "cluster") != 0;
    tp_planner_config_init(&l->pc, l->g);
    l->cache_idx = -1;
    snprintf(l->holder, sizeof(l->holder), "pid-%d-w%d", (int)getpid(), tp_worker_index(w));
    if (l->store == NULL) {
        tp_log_warn(MOD, "no Redis store: this process never leads");
        free(l);
        return;
    }
    ev_timer_init(&l->lease_t, lease_cb, 0.01, LEASE_PERIOD);
    ev_timer_init(&l->step_t, step_cb, 0., STEP_PERIOD);
    ev_timer_init(&l->pace_t, tp_leader_settle_pace_cb, 0., 0.);
    /* Tick timestamps are multiples of tick_ms (rounds are aligned to the wall clock). */
    ev_periodic_init(&l->tick_p, tp_leader_tick_cb, TICK_LAG_S, l->g->tick_ms / 1000.0, NULL);
    ev_periodic_init(&l->boundary_p, tp_leader_boundary_cb, 0., 0., NULL);
    l->lease_t.data = l->step_t.data = l->pace_t.data = l->tick_p.data = l->boundary_p.data = l;
    tp_leader_boundary_at_init(l);
    ev_timer_start(l->loop, &l->lease_t);
    tp_worker_slot_set(w, slot, l);
}

static void on_released(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (tp_leader_reply_ok(err, r, &code))
        tp_log_info(MOD, "released the leader lease\tholder=%s epoch=%lld", l->holder, l->epoch);
    else
        tp_log_warn(MOD,
                    "could not release the leader lease (it expires by itself)\tholder=%s "
                    "epoch=%lld error=\"%s\"",
                    l->holder, l->epoch, code);
    tp_worker_drain_done(l->w);
}

/* A clean stop hands the lease over at once: the worker waits for the release's reply before it
 * exits (a release still queued when the loop ended was never sent, and the game waited for the
 * lease to expire, ~2 s, instead of the next worker's lease step, <= 0.5 s). */
void tp_leader_stop(struct tp_leader *l)
{
    if (l == NULL)
        return;
    bool was = l->leader;
    tp_leader_lose(l, "stopping");
    ev_timer_stop(l->loop, &l->lease_t);
    if (was) {
        struct tp_script_lease_args a = {.holder = l->holder, .epoch = l->epoch, .px_ms = 0};
        if (tp_script_lease(l->store, &a, on_released, l) == 0)
            tp_worker_drain_hold(l->w);
    }
}

int tp_leader_set_observer(struct tp_worker *w, const struct tp_leader_observer *obs, void *ud)
{
    struct tp_leader *l = tp_leader_of(w);
    if (l == NULL)
        return TP_ENOTFOUND;
    l->obs = obs;
    l->obs_ud = ud;
    return 0;
}

bool tp_leader_is_leader(const struct tp_leader *l)
{
    return l != NULL && l->leader;
}

struct tp_leader *tp_leader_of(const struct tp_worker *w)
{
    return slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, slot);
}

static void on_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    tp_leader_stop(tp_leader_of(w));
}

static void on_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    tp_leader_start(w);
    tp_worker_on_drain(on_drain, NULL);
}

/* The worker exits: the writes' timerfd is closed (a store callback answered after this, at the
 * store's exit, may still arm boundary_at, harmlessly). The rest of the leader stays: those
 * callbacks read it, and the process exits next. */
static void on_worker_exit(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_leader *l = tp_leader_of(w);
    if (l != NULL)
        tp_leader_boundary_at_deinit(l);
}

void tp_game_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
    tp_worker_on_exit(on_worker_exit, NULL);
}
