/*
 * Game leader, the boundary (see leader_internal.h and scripts/lua/README.md, "Game engine"):
 * at the lock time T of round N the close of the live round due at T, the lock of N and the
 * open of N+1 are ONE fenced script, round_boundary.lua, so Redis (and so `/rounds/current`, the
 * `round` messages and bets) goes from (open N, live N-1) to (open N+1, live N) with nothing in
 * between. The step runs on a timer (an ev_periodic on the wall clock), not when a polling step
 * happens to notice it: TP_LEADER_BOUNDARY_LEAD_MS before T, planned as of T, so the snapshot,
 * the closing round's pools and prices and the new round's seed are ready at T, when a second
 * timer (boundary_at) lets the writes go. Every write is refused before T by Redis TIME anyway
 * (bucket_state.lua, round_boundary.lua): the lead saves time, it grants no early write.
 *
 * The chain (bucket stages fan out to every bucket at once):
 *  1. the closing round's pools (frozen since its lock) are summed, its close price C computed
 *     from the seeds and its settlement planned; a step started early waits for T here;
 *  2. every bucket copy of N flips to live, so no bet lands in N once its lock is recorded
 *     (bucket_state.lua refuses it before locks_at by Redis TIME; bet_batch.lua refuses a bet
 *     from locks_at on by the admitting host's clock, its now_ms, whatever the copy says: hosts
 *     need synchronised clocks, docs/operations.md §2);
 *  3. round_boundary.lua: close, lock with L, open, all checked before anything is written;
 *     the open is left out when the game is paused at T (open_paused);
 *  4. every bucket copy of N+1 is written open (a failure is repaired by the planner's resync),
 *     and the rounds are announced: N (live), then N+1 (open), from one read of the pair.
 * After T, on one Redis server (redis.mode standalone: one connection, commands run in the
 * order sent) stages 2 and 3 and the announcement's read go at once, one round trip; stage 4's
 * writes and the announcement's PUBLISH then go together, the PUBLISH running after them. On a
 * cluster the bucket copies live on other nodes than the rounds, so each stage waits for the
 * one before and the announcement for stage 4. Commands sent from a reply are written before
 * the worker's next fan-out slice (tp_store_flush_soon). The announcement is held by the
 * observer until the boundary is written, and dropped if it fails. On one server the tick at T
 * goes in the same round trip, behind the pair's read, so its PUBLISH follows the pair's.
 * A failed stage ends the step; the next step plans the boundary again from Redis, and every
 * stage is idempotent.
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/price_sim.h"
#include "tickpool/game/settle.h"
#include "tickpool/store/scripts.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MOD "leader"
/* Fire just after T, so Redis TIME (the same clock on one host) has reached it too. */
#define BOUNDARY_LAG_S 0.0002
/* Within the lead of a boundary a step that planned something else is followed this soon. */
#define BOUNDARY_SOON_S 0.005

static void bnd_lock(struct tp_leader *l);

/* --- Timer --- */

void tp_leader_boundary_cb(struct ev_loop *loop, ev_periodic *p, int revents)
{
    (void)loop, (void)revents;
    struct tp_leader *l = p->data;
    l->lead.fired_ns = tp_now_ns();
    l->lead.due_ns = (int64_t)(ev_periodic_at(p) * 1e9);
    l->lead.owed = l->step_busy;
    l->lead.step_ns = l->lead.snap_ns = 0;
    l->lead.sched = tp_loop_watch_sched_now();
    tp_leader_step_now(l);
}

static void arm_at(struct tp_leader *l, double at)
{
    ev_periodic_stop(l->loop, &l->boundary_p);
    ev_periodic_set(&l->boundary_p, at, 0., NULL);
    ev_periodic_start(l->loop, &l->boundary_p);
}

void tp_leader_boundary_arm(struct tp_leader *l)
{
    int64_t due = tp_planner_next_due(l->plan_in, l->nsnap);
    if (due == INT64_MAX) {
        ev_periodic_stop(l->loop, &l->boundary_p);
        return;
    }
    /* A time already past (a boundary owed now, or missed past grace) is this step's action;
     * only a future one needs the timer. Within the lead already, the step that planned
     * something else goes first: the next one follows shortly, at T at the latest. */
    if (due > tp_now_ms()) {
        double at = (double)(due - TP_LEADER_BOUNDARY_LEAD_MS) / 1000.0;
        double soon = ev_time() + BOUNDARY_SOON_S;
        arm_at(l, at > soon ? at : TP_MIN(soon, (double)due / 1000.0 + BOUNDARY_LAG_S));
    }
}

/* The writes of a boundary prepared before T, from T on (stage 2). */
static void at_go(void *ud)
{
    struct tp_leader *l = ud;
    if (!l->leader) { /* the lease went while it waited: whoever leads plans it again */
        tp_leader_step_end(l);
        return;
    }
    bnd_lock(l);
}

void tp_leader_boundary_at_cb(struct ev_loop *loop, ev_periodic *p, int revents)
{
    (void)revents;
    ev_periodic_stop(loop, p);
    at_go(p->data);
}

/*
 * The writes at T wait on a timerfd (tickpool/net/timerfd.h) of CLOCK_REALTIME set to the
 * absolute time, so they go within tens of µs of T + BOUNDARY_LAG_S; an ev_periodic alone waits
 * for libev's epoll timeout, rounded up to whole milliseconds, which put them 0.2-1.2 ms after T
 * (p50 0.9 ms; bench/README.md, "Boundaries", session 11). Like the ev_periodic, it follows a
 * step of the wall clock. Without a timerfd (or when it cannot be armed) the ev_periodic serves.
 */
void tp_leader_boundary_at_init(struct tp_leader *l)
{
    ev_periodic_init(&l->boundary_at, tp_leader_boundary_at_cb, 0., 0., NULL);
    l->boundary_at.data = l;
    l->at = tp_timerfd_new(l->loop, CLOCK_REALTIME, 0, at_go, l);
    if (l->at == NULL)
        tp_log_warn(MOD, "no timerfd: the writes at T wait for a millisecond timer\terr=%s",
                    strerror(errno));
}

void tp_leader_boundary_at_deinit(struct tp_leader *l)
{
    tp_timerfd_free(l->at);
    l->at = NULL;
}

static void at_arm(struct tp_leader *l, double at)
{
    /* 1 µs late rather than a rounding early, so bnd_lock finds ev_time() >= at */
    if (l->at != NULL && tp_timerfd_arm(l->at, (int64_t)(at * 1e9) + 1000, true) == 0)
        return;
    ev_periodic_set(&l->boundary_at, at, 0., NULL);
    ev_periodic_start(l->loop, &l->boundary_at);
}

void tp_leader_boundary_retry(struct tp_leader *l, int ms)
{
    if (l->leader)
        arm_at(l, ev_now(l->loop) + ms / 1000.0);
}

/* --- Announcement --- */

/* The observer announces the pair from a read sent right behind the script (on_boundary), held
 * until the boundary is written (on_boundary_end); without it, each round is announced alone
 * once written. Only a boundary with both a lock and an open is announced as a pair: a closing
 * round shows as live until it is settled, so its close alone announces nothing. */
static bool pair_announced(const struct tp_leader *l)
{
    return l->bnd.has_lock && l->bnd.has_open && l->obs != NULL && l->obs->on_boundary != NULL &&
           l->obs->on_boundary_end != NULL;
}

static void announce_begin(struct tp_leader *l)
{
    if (!pair_announced(l))
        return;
    l->obs->on_boundary(l->obs_ud, l->bnd.open.id, l->bnd.lock.id);
    l->bnd.announcing = true;
}

/* Lets the held announcement go (`ok`) or drops it; once per announce_begin. */
static void announce_end(struct tp_leader *l, bool ok)
{
    if (!l->bnd.announcing)
        return;
    l->bnd.announcing = false;
    l->obs->on_boundary_end(l->obs_ud, ok);
}

/* A stage failed: the announcement is dropped, the step ends (see tp_leader_op_fail). */
static void bnd_fail(struct tp_leader *l, const char *what, const char *code)
{
    announce_end(l, false);
    tp_leader_op_fail(l, what, code);
}

/* --- Stage 4: bucket copies of the new round --- */

static void on_live_bucket(int err, const struct tp_store_reply *r, void *ud);

/* Microseconds from the boundary's T to wall-clock instant `ns` (0 when it never happened). */
static long long after_t_us(const struct tp_leader *l, int64_t ns)
{
    return ns != 0 ? (long long)((ns - l->bnd.due_ms * 1000000) / 1000) : 0;
}

/*
 * The pair's `round` messages are on their way to every worker, each writing them to its
 * sockets. What the leader does next (the closed round's settlement: pages in Redis, payouts to
 * Postgres, and its own `round` message to every socket; a resync) would take the CPU, the
 * leader worker's loop and Redis from those writes, on a host short of cores: bench/run
 * boundaries saw the leader's worker write them 30 ms after T while the settlement ran beside
 * them. So the next step waits until every worker of this host has written them (each marks
 * the boundary in tickpool/net/workers_written.h once its writes are out; workers of other
 * hosts are not seen), at least TP_LEADER_HOLD_MIN_MS after T and at most
 * TP_LEADER_HOLD_MAX_MS: a worker that is down or never writes holds it to that bound.
 * Nothing owed then is due within that: the next boundary is at least a phase (1 s) away, and
 * no hold is taken when it is not (a leader catching up on missed boundaries).
 */
static void hold_next_step(struct tp_leader *l)
{
    int64_t next = l->bnd.open.t.locks_at;
    if (next - l->bnd.due_ms <= TP_LEADER_HOLD_MAX_MS + TP_LEADER_BOUNDARY_LEAD_MS ||
        tp_now_ms() >= l->bnd.due_ms + TP_LEADER_HOLD_MAX_MS)
        return;
    l->hold_t_ms = l->bnd.due_ms;
    l->hold_from_ms = l->bnd.due_ms + TP_LEADER_HOLD_MIN_MS;
    l->hold_until_ms = l->bnd.due_ms + TP_LEADER_HOLD_MAX_MS;
}

/* Debug: from the boundary timer (TP_LEADER_BOUNDARY_LEAD_MS before T) to the writes at T,
 * what held the step when they went late: the timer itself, a step in flight when it fired,
 * the snapshot's and pools' round trips, the leader's loop busy in one iteration or its thread
 * waiting for a CPU (bench/README.md, "Boundaries", session 11). */
static void lead_log(struct tp_leader *l)
{
    int64_t t_ns = l->bnd.due_ms * 1000000;
    bool ours = l->lead.fired_ns != 0 && l->lead.fired_ns < t_ns &&
                l->lead.fired_ns > t_ns - 2 * TP_LEADER_BOUNDARY_LEAD_MS * 1000000;
    if (!tp_log_enabled(TP_LOG_DEBUG) || !ours || l->bnd.go_ns == 0)
        return;
    struct tp_loop_watch_span lw = tp_loop_watch_window(l->lead.fired_ns, l->bnd.go_ns);
    tp_log_debug(MOD,
                 "boundary lead\tlocked=%lld lead_late_us=%lld owed=%d step_us=%lld snap_us=%lld "
                 "go_us=%lld oncpu_us=%lld waitcpu_us=%lld busy_max_us=%lld busy_at_us=%lld "
                 "poll_max_us=%lld poll_end_us=%lld",
                 (long long)(l->bnd.has_lock ? l->bnd.lock.id : 0),
                 (long long)((l->lead.fired_ns - l->lead.due_ns) / 1000), (int)l->lead.owed,
                 after_t_us(l, l->lead.step_ns), after_t_us(l, l->lead.snap_ns),
                 after_t_us(l, l->bnd.go_ns),
                 (long long)((l->bnd.go_sched.run_ns - l->lead.sched.run_ns) / 1000),
                 (long long)((l->bnd.go_sched.wait_ns - l->lead.sched.wait_ns) / 1000),
                 (long long)(lw.busy_ns / 1000), after_t_us(l, lw.busy_ns ? lw.busy_at_ns : 0),
                 (long long)(lw.poll_ns / 1000), after_t_us(l, lw.poll_ns ? lw.poll_end_ns : 0));
    l->lead.fired_ns = 0;
}

static void bnd_done(struct tp_leader *l)
{
    int64_t now_ns = tp_now_ns();
    int64_t late = now_ns / 1000000 - l->bnd.due_ms;
    /* Each stage after T, so an operator (and bench/run boundaries) sees which one was late:
     * the timer (go), the bucket copies going live, the script, the new round's copies. An open
     * the script left out (paused at T) shows as opened=0 locks_at=0 paused_at_t=<its id>. */
    tp_log_info(
        MOD,
        "boundary\tclosed=%lld close_price=%lld band=%d locked=%lld lock_price=%lld "
        "opened=%lld locks_at=%lld paused_at_t=%lld ready_ms=%lld late_ms=%lld go_us=%lld "
        "live_us=%lld script_us=%lld written_us=%lld",
        (long long)(l->bnd.has_close ? l->bnd.close.id : 0), (long long)l->bnd.close.close_price,
        l->bnd.close.winning_band, (long long)(l->bnd.has_lock ? l->bnd.lock.id : 0),
        (long long)l->bnd.lock.lock_price, (long long)(l->bnd.has_open ? l->bnd.open.id : 0),
        (long long)(l->bnd.has_open ? l->bnd.open.t.locks_at : 0),
        (long long)(l->bnd.open_paused ? l->bnd.open.id : 0),
        (long long)(l->bnd.ready_ms - l->bnd.due_ms), (long long)late, after_t_us(l, l->bnd.go_ns),
        after_t_us(l, l->bnd.live_ns), after_t_us(l, l->bnd.script_ns), after_t_us(l, now_ns));
    lead_log(l);
    if (l->bnd.has_lock || l->bnd.has_close) /* a first open has no T of its own */
        tp_metrics_observe_ns(TP_METRIC_FAMILY_ROUND_DELAY, TP_METRICS_ROUND_STAGE_WRITTEN,
                              now_ns - l->bnd.due_ms * 1000000);
    if (pair_announced(l)) {
        announce_end(l, true); /* a no-op when the opens were sent: it went with them */
        hold_next_step(l);
    } else {
        if (l->bnd.has_lock)
            tp_leader_publish_round(l, l->bnd.lock.id);
        if (l->bnd.has_open)
            tp_leader_publish_round(l, l->bnd.open.id);
    }
    tp_leader_step_end(l);
}

static void on_open_bucket(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_fan_in(l, err, r, &code))
        return;
    if (l->op.err) {
        /* The round is open globally; the planner's resync re-writes the copies (and
         * announces the round again). */
        bnd_fail(l, "boundary (bucket open)", code);
        return;
    }
    l->open_synced = l->bnd.open.id;
    bnd_done(l);
}

/* The boundary's script and the bucket copies of N going live are both done. */
static void bnd_written(struct tp_leader *l)
{
    if (!l->bnd.has_open) {
        bnd_done(l);
        return;
    }
    l->op.r = l->bnd.open;
    tp_leader_all_buckets(l, TP_ROUND_OPEN, on_open_bucket);
    /* On one server the announcement's PUBLISH, sent from now on, runs after these writes: it
     * goes now, so a client that bets on the new round on hearing of it finds it open. On a
     * cluster the copies are on other nodes: it waits for their replies (bnd_done). */
    if (l->one_server)
        announce_end(l, true);
    tp_store_flush_soon(l->w);
}

/* --- Stages 2 and 3: the locking round's bucket copies go live; the script --- */

/* One of the two writes at T came back (the script, or the last bucket copy of N). Both done:
 * a failed script ends the step. Bucket copies that failed after a script that succeeded are
 * written live once more; bets are refused from T on by the admitting host's clock whatever a
 * copy says (bet_batch.lua's now_ms, hence NTP), so the boundary goes on even if that fails too. */
static void bnd_join(struct tp_leader *l)
{
    if (--l->bnd.wait > 0)
        return;
    if (!l->bnd.script_ok) {
        l->op.r.id = l->bnd.has_lock ? l->bnd.lock.id : l->bnd.close.id; /* for the log */
        bnd_fail(l, l->bnd.fail_what, l->bnd.fail_code);
        return;
    }
    if (l->bnd.live_failed) {
        tp_log_warn(MOD, "boundary (bucket live) failed after the script\tround=%lld code=%s%s",
                    (long long)l->bnd.lock.id, l->bnd.live_code,
                    l->bnd.relive ? " (again: going on)" : "");
        if (!l->bnd.relive) {
            l->bnd.relive = true;
            l->bnd.wait = 1;
            l->op.r = l->bnd.lock;
            tp_leader_all_buckets(l, TP_ROUND_LIVE, on_live_bucket);
            tp_store_flush_soon(l->w);
            return;
        }
    }
    bnd_written(l);
}

/*
 * The script found the game paused at T and left the open out (its fifth part, "paused"): the
 * operator paused after this step read the pause, within the lead. The boundary goes on as one
 * planned paused: no copies of the new round, no pair announced (its held read is dropped), the
 * lock announced alone, so the game shows (open none, live N). The next step reads the pause
 * before planning, so no open is tried while it lasts, and after a resume the open takes the
 * max id + 1 again: the id skipped here was never written.
 */
static void open_paused(struct tp_leader *l)
{
    tp_log_info(MOD, "boundary: game paused at T, no round opened\tlocked=%lld skipped=%lld",
                (long long)(l->bnd.has_lock ? l->bnd.lock.id : 0), (long long)l->bnd.open.id);
    announce_end(l, false);
    l->bnd.has_open = false;
    l->bnd.open_paused = true;
    l->pc.paused = true; /* as read by the script; the next step's read confirms it */
}

static void on_script(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    l->bnd.script_ns = tp_now_ns();
    l->bnd.script_ok = tp_leader_reply_ok(err, r, &code);
    if (l->bnd.script_ok && l->bnd.has_open && tp_reply_len(r) == 5) {
        const char *part = tp_reply_str(tp_reply_at(r, 4), NULL);
        if (part != NULL && strcmp(part, "paused") == 0)
            open_paused(l);
    }
    if (!l->bnd.script_ok) {
        const char *part = err == 0 ? tp_reply_str(tp_reply_at(r, 2), NULL) : NULL;
        snprintf(l->bnd.fail_what, sizeof(l->bnd.fail_what), "boundary (%s)",
                 part ? part : "script");
        snprintf(l->bnd.fail_code, sizeof(l->bnd.fail_code), "%s", code);
    }
    bnd_join(l);
}

/* Sends round_boundary.lua (and, behind it, the announcement's read); false when it could not
 * be sent. */
static bool bnd_script(struct tp_leader *l)
{
    struct tp_script_round_close_args c = {0};
    struct tp_script_round_lock_args k = {0};
    struct tp_script_round_open_args o = {0};
    struct tp_script_round_boundary_args a = {.fence = tp_leader_fence(l)};
    if (l->bnd.has_close) {
        const struct tp_game_round *r = &l->bnd.close;
        c = (struct tp_script_round_close_args){.id = r->id,
                                                .close_price = r->close_price,
                                                .winning_band = r->winning_band,
                                                .total = l->bnd.plan.total,
                                                .winning_stake = l->bnd.plan.winning_stake,
                                                .rake = l->bnd.plan.rake,
                                                .pot = l->bnd.plan.pot,
                                                .refund_all = l->bnd.plan.refund_all,
                                                .pools = l->bnd.pools,
                                                .npools = tp_leader_nbands(r)};
        a.close = &c;
    }
    if (l->bnd.has_lock) {
        /* L: the previous segment's end (leader_tick.c), known from the seeds. */
        l->bnd.lock.lock_price = tp_leader_lock_price(l, &l->bnd.lock);
        k = (struct tp_script_round_lock_args){.id = l->bnd.lock.id,
                                               .lock_price = l->bnd.lock.lock_price};
        a.lock = &k;
    }
    char hash[65];
    if (l->bnd.has_open) {
        const struct tp_game_round *r = &l->bnd.open;
        uint8_t seed[TP_PRICE_SIM_SEED_LEN];
        tp_hex_decode(l->bnd.seed_hex, seed, sizeof(seed));
        tp_price_sim_seed_hash(seed, hash);
        o = (struct tp_script_round_open_args){.id = r->id,
                                               .opens_at = r->t.opens_at,
                                               .locks_at = r->t.locks_at,
                                               .closes_at = r->t.closes_at,
                                               .seed_hex = l->bnd.seed_hex,
                                               .seed_hash = hash,
                                               .vol_ppb = r->vol_ppb,
                                               .rake_bps = r->rake_bps,
                                               .edges_bps = r->edges,
                                               .n_edges = r->n_edges,
                                               .tick_ms = (int)r->tick_ms,
                                               .betting_ms = r->betting_ms,
                                               .min_stake = r->min_stake,
                                               .max_stake = r->max_stake,
                                               .id_floor = l->pc.id_floor};
        a.open = &o;
        if (l->pc.floor_unknown && l->floor.blind_id == 0)
            l->floor.blind_id = r->id; /* leader_floor.c checks it once the floor is known */
    }
    if (tp_script_round_boundary(l->store, &a, on_script, l) != 0)
        return false;
    announce_begin(l);
    return true;
}

/* The script alone failed to be sent: like a failed script once nothing else is in flight. */
static void script_unsent(struct tp_leader *l)
{
    l->bnd.script_ok = false;
    snprintf(l->bnd.fail_what, sizeof(l->bnd.fail_what), "boundary (script)");
    snprintf(l->bnd.fail_code, sizeof(l->bnd.fail_code), "%s", tp_strerror(TP_EUNAVAIL));
    bnd_join(l);
}

static void on_live_bucket(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_fan_in(l, err, r, &code))
        return;
    l->bnd.live_ns = tp_now_ns();
    if (l->one_server) {
        /* The script was sent behind these writes, so it ran after them. */
        l->bnd.live_failed = l->op.err != 0;
        snprintf(l->bnd.live_code, sizeof(l->bnd.live_code), "%s", code);
        bnd_join(l);
        return;
    }
    /* A cluster: the buckets are on other nodes than the script, which waits for every copy. */
    if (l->op.err) {
        tp_leader_op_fail(l, "boundary (bucket live)", code);
        return;
    }
    if (!bnd_script(l))
        script_unsent(l);
    tp_store_flush_soon(l->w);
}

/*
 * The writes at T. On one Redis server (one connection: commands run in the order sent) the
 * bucket copies of N going live, the script and the announcement's read go at once, one round
 * trip; the copies still run before the script. On a cluster the copies are on other nodes than
 * the script, so it is sent once they all answered.
 */
static void bnd_lock(struct tp_leader *l)
{
    double at = (double)l->bnd.due_ms / 1000.0 + BOUNDARY_LAG_S;
    if (l->bnd.ready_ms == 0)
        l->bnd.ready_ms = tp_now_ms();
    if (l->bnd.early && ev_time() < at) {
        /* Prepared before T: the writes wait for it (at_go). */
        at_arm(l, at);
        return;
    }
    l->bnd.go_ns = tp_now_ns();
    l->bnd.go_sched = tp_loop_watch_sched_now();
    l->bnd.script_ok = true; /* until its reply says otherwise */
    if (!l->bnd.has_lock) {
        l->bnd.wait = 1;
        if (!bnd_script(l))
            script_unsent(l);
    } else {
        l->op.r = l->bnd.lock;
        l->bnd.wait = l->one_server ? 2 : 1;
        tp_leader_all_buckets(l, TP_ROUND_LIVE, on_live_bucket);
        if (l->one_server && !bnd_script(l))
            script_unsent(l);
    }
    /* The beat of T (the tick at the lock time, price L) goes behind the pair's read, so its
     * reply comes in the same read as the pair's and its PUBLISH is written right behind
     * theirs: Redis hands all three to each subscriber in one write, and each worker writes the
     * beat in the same send as the pair to every socket instead of a second send ~2 ms later
     * when the tick watcher (T + 2 ms) would have written it (bench/README.md "Boundaries",
     * session 14). On a cluster the ticks are on another node: the watcher writes them. */
    if (l->one_server && l->bnd.announcing)
        tp_leader_tick_due(l);
    tp_store_flush(l->store); /* from a timer: not inside a store callback */
    tp_store_flush_soon(l->w);
}

/* --- Stage 1: the closing round's price and plan --- */

static void close_pools_read(struct tp_leader *l)
{
    struct tp_game_round *r = &l->bnd.close;
    int64_t C = tp_leader_close_price(l, r);
    if (C < 1) {
        /* A seed of its live phase is missing: the round cannot be priced. Alone, it is
         * cancelled now; with a lock or open, the boundary goes without it and the next step
         * owes its close alone. */
        tp_log_warn(MOD, "close price unknown (missing seed): cancelling\tround=%lld",
                    (long long)r->id);
        if (!l->bnd.has_lock && !l->bnd.has_open) {
            struct tp_game_round copy = *r;
            tp_leader_cancel(l, &copy, "deadline missed");
            return;
        }
        l->bnd.has_close = false;
        bnd_lock(l);
        return;
    }
    int band = tp_round_band(r->lock_price, C, r->edges, r->n_edges);
    int64_t T = tp_leader_pools_total(l);
    if (band < 0 || tp_settle_plan(T, l->op.pools[band], r->rake_bps, &l->bnd.plan) != 0) {
        tp_leader_op_fail(l, "close plan", "invalid");
        return;
    }
    r->close_price = C;
    r->winning_band = band;
    memcpy(l->bnd.pools, l->op.pools, sizeof(l->bnd.pools));
    bnd_lock(l);
}

/* The new round's schedule, seed and rules (bands, rake, stake bounds): the config's at its
 * open, stored with it for good (round_boundary) and in its bucket copies (band count and stake
 * bounds, what bet.lua checks). */
static bool prepare_open(struct tp_leader *l, int64_t id, int64_t opens_at)
{
    struct tp_game_round *r = &l->bnd.open;
    uint8_t seed[TP_PRICE_SIM_SEED_LEN];
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->state = TP_ROUND_OPEN;
    r->winning_band = -1;
    r->betting_ms = (int64_t)l->g->betting_s * 1000;
    r->tick_ms = l->g->tick_ms;
    r->vol_ppb = tp_price_sim_vol_ppb(l->g->volatility, l->g->tick_ms);
    r->rake_bps = l->g->rake_bps;
    r->min_stake = l->g->min_stake;
    r->max_stake = l->g->max_stake;
    r->n_edges = l->g->n_band_edges;
    memcpy(r->edges, l->g->band_edges_bps, sizeof(int) * (size_t)l->g->n_band_edges);
    if (tp_round_schedule(opens_at, r->betting_ms, (int64_t)l->g->live_s * 1000, &r->t) != 0 ||
        r->vol_ppb < 0 || tp_random_bytes(seed, sizeof(seed)) != 0) {
        tp_log_error(MOD, "cannot open round\tround=%lld", (long long)id);
        return false;
    }
    tp_hex_encode(seed, sizeof(seed), l->bnd.seed_hex);
    return true;
}

void tp_leader_boundary(struct tp_leader *l, const struct tp_planner_action *a, bool early)
{
    const struct tp_leader_snap *c = a->close_id ? tp_leader_snap_find(l, a->close_id) : NULL;
    const struct tp_leader_snap *k = a->lock_id ? tp_leader_snap_find(l, a->lock_id) : NULL;
    memset(&l->bnd, 0, sizeof(l->bnd));
    l->bnd.early = early;
    l->bnd.close.winning_band = l->bnd.lock.winning_band = l->bnd.open.winning_band = -1;
    if (c != NULL) {
        l->bnd.has_close = true;
        l->bnd.close = c->r;
        l->bnd.due_ms = c->r.t.closes_at;
    }
    if (k != NULL) {
        l->bnd.has_lock = true;
        l->bnd.lock = k->r;
        l->bnd.due_ms = k->r.t.locks_at;
    }
    if (a->open_id > 0 && prepare_open(l, a->open_id, a->opens_at)) {
        l->bnd.has_open = true;
        if (!l->bnd.has_lock && !l->bnd.has_close)
            l->bnd.due_ms = tp_now_ms(); /* a first open is owed at once */
    }
    if (!l->bnd.has_close && !l->bnd.has_lock && !l->bnd.has_open) {
        tp_leader_step_end(l);
        return;
    }
    if (!l->bnd.has_close) {
        bnd_lock(l);
        return;
    }
    l->op.r = l->bnd.close;
    tp_leader_read_pools(l, close_pools_read);
}
