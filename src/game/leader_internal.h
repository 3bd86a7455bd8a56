/*
 * Internals of the game leader shared by its files (private to module game/leader):
 * leader.c (lease, step, snapshot, and the cancel and resync chains), leader_boundary.c (the
 * boundary: close, lock and open in one fenced script, and the timer that runs it on time),
 * leader_tick.c (the price feed: ticks along the current segment, and the lock and close prices
 * over the chain of seeds) and leader_settle.c (the paged settlement driver).
 *
 * Everything runs on the worker's loop; one step (op) and one tick chain are in flight at a
 * time. A chain ends its step with tp_leader_step_end, or through tp_leader_op_fail.
 */
#ifndef TP_LEADER_INTERNAL_H
#define TP_LEADER_INTERNAL_H

#include "tickpool/game/game_round.h"
#include "tickpool/game/leader.h"
#include "tickpool/game/pause.h"
#include "tickpool/game/planner.h"
#include "tickpool/game/price_sim.h"
#include "tickpool/game/round.h"
#include "tickpool/game/settle.h"
#include "tickpool/net/loop_watch.h"
#include "tickpool/net/timerfd.h"
#include "tickpool/store/scripts.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

/* The newest rounds loaded besides the unfinished index: the previous round's seed and lock
 * (lock price, segment), the newest id (the next open), and rounds left unfinished by a version
 * that wrote no index. */
#define TP_LEADER_RECENT 6

struct tp_config_game;
struct tp_store;
struct tp_store_reply;
struct tp_worker;

/* One round of the step's snapshot, with its secret seed ("" when absent). A round listed but
 * whose record is missing (lost) is kept with only its id (state TP_ROUND_NONE, which the
 * planner ignores): its id still counts for the next open, and leader_lost.c deals with it. */
struct tp_leader_snap {
    struct tp_game_round r;
    char seed_hex[65];
    bool lost;
};

struct tp_leader {
    struct tp_worker *w;
    struct ev_loop *loop;
    struct tp_store *store;
    const struct tp_config_game *g;
    struct tp_planner_config pc; /* betting phase and grace, from g; the pause, every step */
    struct tp_game_pause pause;  /* the operator's pause as last read */
    bool pause_known;            /* read since this lease began (else the next read announces) */
    char holder[64];
    long long epoch;
    bool leader;
    bool one_server; /* redis.mode standalone: one connection runs commands in the order sent */
    int64_t last_renew_ms;
    int64_t step_at_ms; /* when the step in flight started (tp_now_ms) */
    ev_timer lease_t, step_t;
    ev_timer pace_t; /* the settlement's wait before its next page (leader_settle.c) */
    ev_periodic tick_p;
    ev_periodic boundary_p;  /* TP_LEADER_BOUNDARY_LEAD_MS before the next boundary's wall-clock
                                time (leader_boundary.c) */
    ev_periodic boundary_at; /* at that time T itself: the prepared boundary goes on */
    /* The same on a timerfd of CLOCK_REALTIME (NULL: none, boundary_at serves; leader_boundary.c)
     */
    struct tp_timerfd *at;
    bool lease_busy, step_busy, tick_busy;
    bool step_owed; /* the boundary timer fired during a step: the next one starts at its end */
    /* The boundary timer's last firing, for the `boundary` line: when it fired and was due
     * (wall clock, ns), whether a step was in flight then (it waited for its end), when the
     * step it started began and had its snapshot; the thread's schedstat then (debug). */
    struct {
        int64_t fired_ns, due_ns, step_ns, snap_ns;
        bool owed;
        struct tp_loop_watch_sched sched;
    } lead;
    bool acted; /* this step started an action (not NONE) */
    int burst;  /* steps started at once after an action, since the planner last owed nothing */
    /* After the boundary hold_t_ms the next step waits until every worker of this host has
     * written its `round` messages, from hold_from_ms to hold_until_ms at most (0: no hold;
     * leader_boundary.c) */
    int64_t hold_t_ms, hold_from_ms, hold_until_ms;
    struct tp_settle_pager pager; /* settlement page sizes, from the pages' Redis time */
    /* The settlement's figures for its `round settled` line, over every step it took (it yields
     * its step every slice); they start again when another round settles. */
    struct {
        int64_t id;
        int pages, pages_slow; /* settle_page calls; over 2 ms */
        int steps;
        int paced;                        /* pages sent after an idle gap (tp_settle_pace_gap) */
        int64_t page_us_max, page_us_sum; /* the pages' Redis time, µs */
        int64_t pace_us_sum;              /* the gaps asked for, µs */
        int catchup;                      /* pages sent catching up (tp_settle_behind) */
        int late; /* pages answered late, not catching up: the next without the floor */
    } sst;
    const struct tp_leader_observer *obs; /* who announces rounds and ticks (NULL: nobody) */
    void *obs_ud;

    /* Snapshot (ascending ids): every unfinished round (tp:{g}:unfinished) and the
     * TP_LEADER_RECENT newest ones; and the tick stream's end. snap grows to fit (snap_cap):
     * a backlog of unfinished rounds must never be cut off. */
    struct tp_leader_snap *snap;
    struct tp_planner_round *plan_in; /* the planner's view of snap, same capacity */
    int nsnap, snap_cap, snap_pending, snap_err;
    int64_t *snap_ids; /* ids collected from both lists before the rounds are read */
    int nids, ids_cap, ids_pending;
    int64_t last_tick_ts, last_price;

    /* The segment the tick loop follows. */
    bool seg_ok;
    bool seg_known;       /* choose_segment ran since this lease began: seg_ok is meaningful */
    int64_t flat_until;   /* no segment: flat ticks up to this lock time (INT64_MAX: no lock) */
    int64_t open_synced;  /* open round whose bucket copies this lease wrote (0: none yet) */
    uint64_t map_changes; /* the store's slot map changes when the copies were last checked */
    int64_t repair_id;    /* a round a bet found a copy of missing (tp:{g}:repair), 0: none */
    bool repairing;       /* the resync in flight was asked for by a change or a bet: logged */
    int64_t seg_id, seg_lock, seg_L, seg_vol, seg_n, seg_tick_ms;
    uint8_t seg_seed[TP_PRICE_SIM_SEED_LEN];
    int64_t cache_idx, cache_price; /* price after cache_idx ticks of the segment */

    /* The walk adding rounds left outside the unfinished index (leader_index.c). */
    struct {
        bool busy;
        long long epoch, done_epoch; /* lease it runs under; lease it completed under (0: none) */
        int64_t mark, added;
        int64_t ids[TP_SCRIPT_INDEX_MAX];
        int n;
    } index;

    /* Postgres's newest round id, the floor of the next open (leader_floor.c; the value and
     * whether it is known are in pc). */
    struct {
        bool busy;
        bool saw_rounds;           /* a step found rounds in Redis since the floor was read */
        bool warned;               /* a failed read was logged this lease */
        long long epoch;           /* lease the read in flight was sent under */
        int64_t retry_at_ms;       /* mono: no read before then (after a failure) */
        int64_t waiting_logged_ms; /* mono: the last "no round opens" error */
        int64_t unknown_ms;        /* mono: since when the floor is not known */
        bool answered;             /* a read answered; the next step logs how it compares */
        int64_t blind_id;          /* the first round this lease opened with the floor unknown */
    } floor;

    /* Rounds whose record is missing (leader_lost.c): the one being looked at, and those found
     * final (nothing owed) this lease, each logged once. */
    struct {
        long long epoch;
        int64_t id, locks_at, min_stake, max_stake;
        int pending, nbands, err;
        bool unfinished, open;
        int64_t final[TP_LEADER_RECENT * 2];
        int nfinal;
    } lost;

    /* The action in flight. */
    struct {
        struct tp_game_round r;
        const char *cancel_reason; /* a cancel's reason, recorded in the round (static) */
        int pending, err, bucket;
        char err_code[32]; /* the first failing reply's code: replies die with their callback */
        int64_t pools[TP_ROUND_MAX_BANDS];
        int64_t sum_t, sum_paid;
        bool inflight;   /* a settle_page call is sent and its reply not in yet (one at most) */
        int page_stop;   /* enum in leader_settle.c: why no further page goes out */
        int64_t sent_us; /* the page in flight's send time (mono) */
        int sent_size;   /* and the size it was sent with */
        bool gap_paced;  /* the wait on pace_t is a pacing gap, not only the gap after every page */
        int64_t pace_test_us; /* TP_TEST_SETTLE_PACE_GAP_MS in µs, 0: unset (leader_settle.c) */
        int64_t wait_test_us; /* TP_TEST_SETTLE_PAGE_WAIT_MS in µs, 0: unset (leader_settle.c) */
        int64_t tick_last;
        void (*pools_next)(struct tp_leader *l); /* read_pools' continuation */
    } op;

    /* The boundary in flight (leader_boundary.c): its parts, as the planner owed them. */
    struct {
        bool has_close, has_lock, has_open;
        bool open_paused; /* the script left the open out: paused at T (open keeps its id) */
        struct tp_game_round close, lock, open;
        int64_t due_ms;   /* the boundary's time T: the lock or close time, or the open's */
        bool early;       /* planned before T: its writes wait for T (boundary_at) */
        int64_t ready_ms; /* when its reads were done, for the log (0: not yet) */
        /* Wall clock (ns) at each stage after T, for the log and the round_announce_delay
         * histogram: the writes started, the bucket copies went live, the script answered. */
        int64_t go_ns, live_ns, script_ns;
        struct tp_loop_watch_sched go_sched; /* the thread's schedstat at go (debug) */
        /* The writes at T (leader_boundary.c): replies still owed before stage 4 (the script,
         * and the bucket copies of N when sent with it); their outcome. */
        int wait;
        bool script_ok, live_failed, relive; /* relive: the copies were sent live again */
        char fail_what[48], fail_code[32], live_code[32];
        bool announcing; /* the observer's on_boundary ran, its on_boundary_end is owed */
        struct tp_settle_plan plan;
        int64_t pools[TP_ROUND_MAX_BANDS]; /* the closing round's */
        char seed_hex[65];
    } bnd;
};

/** The fencing pair (holder, epoch) of this lease, for the leader scripts. */
struct tp_script_fence tp_leader_fence(const struct tp_leader *l);

/** True for an {'ok', ...} script reply; otherwise false with the error code in *code
 * (borrowed: valid during the callback). */
bool tp_leader_reply_ok(int err, const struct tp_store_reply *r, const char **code);

/** Ends the step in flight: the next step timer may start another. */
void tp_leader_step_end(struct tp_leader *l);

/** A failed script in a chain: logs it (unless too_early), drops the lease on stale_epoch,
 * and ends the step. */
void tp_leader_op_fail(struct tp_leader *l, const char *what, const char *code);

/** Stops every game timer: the lease is gone (or the process stops). No-op when not leader. */
void tp_leader_lose(struct tp_leader *l, const char *why);

/** Round `id` of the snapshot (borrowed until the next step), or NULL. */
const struct tp_leader_snap *tp_leader_snap_find(const struct tp_leader *l, int64_t id);

/** Band count of round r: its own edges (fixed when it opened), never the current config's, so
 * a band-edge change with a restart does not strand the rounds in flight. */
static inline int tp_leader_nbands(const struct tp_game_round *r)
{
    return r->n_edges + 1;
}

/** True when the planner, asked again with this step's snapshot and the clock now, owes an
 * open, lock, close or cancel: the settlement in flight yields its step to it. */
bool tp_leader_boundary_due(struct tp_leader *l);

/* How long before a boundary T its step starts: the snapshot, the closing round's pools and
 * prices and the new round's seed are read and computed before T, so only the writes (whose
 * scripts refuse anything before T by Redis TIME) and the announcement are left after it. The
 * reads are three round trips in a row; on a loaded host they took 20-40 ms now and then and
 * once 83 ms, and at 60 ms of lead such a step started its writes late (bench/README.md,
 * "Boundaries", session 11). Nothing read goes stale in the lead: the closing round's pools
 * were frozen at its lock a phase (>= 1 s) before, its prices follow from the seeds, and only
 * this leader writes rounds; a settlement in flight yields its step this long before T. */
#define TP_LEADER_BOUNDARY_LEAD_MS 250

/* After a boundary announced as a pair, the next step (the closed round's settlement, a resync)
 * waits until every worker of the leader's host has written the `round` messages to its sockets
 * (tickpool/net/workers_written.h), at least TP_LEADER_HOLD_MIN_MS and at most
 * TP_LEADER_HOLD_MAX_MS after T (tp_leader_step_held). */
#define TP_LEADER_HOLD_MIN_MS 10
#define TP_LEADER_HOLD_MAX_MS 40

/** True (and the step timer re-armed) while the step after a boundary is held; see above. */
bool tp_leader_step_held(struct tp_leader *l);

/** Tells the observer, if any, that round `id` changed. */
void tp_leader_publish_round(struct tp_leader *l, int64_t id);

/** Starts the next step now, or at the end of the one in flight. */
void tp_leader_step_now(struct tp_leader *l);

/** Moves every bucket copy of round op.r to `st` (its band count from op.r); `cb` counts
 * op.pending down with tp_leader_fan_in. */
void tp_leader_all_buckets(struct tp_leader *l, enum tp_round_state st, tp_store_cb cb);

/** Counts a fan-out reply; true when it was the last one, with *code "ok" or the first
 * failure's code (op.err set). */
bool tp_leader_fan_in(struct tp_leader *l, int err, const struct tp_store_reply *r,
                      const char **code);

/** Sums the pools of round op.r over every bucket into op.pools, then calls `next`. */
void tp_leader_read_pools(struct tp_leader *l, void (*next)(struct tp_leader *l));

/** Σ op.pools over op.r's bands. */
int64_t tp_leader_pools_total(const struct tp_leader *l);

/** Cancels round r (every bucket copy, then round_cancel, which records `reason`, a static
 * string); ends the step. */
void tp_leader_cancel(struct tp_leader *l, const struct tp_game_round *r, const char *reason);

/* --- leader_boundary.c --- */

/** Runs the boundary `a` (TP_PLANNER_BOUNDARY) of this step's snapshot; ends the step. `early`:
 * planned as of its time T, which is still ahead: the reads run now, the writes from T on. */
void tp_leader_boundary(struct tp_leader *l, const struct tp_planner_action *a, bool early);

/** Arms the boundary timer TP_LEADER_BOUNDARY_LEAD_MS before the next lock or close time of
 * this step's snapshot (stops it when there is none). */
void tp_leader_boundary_arm(struct tp_leader *l);

/** Arms the boundary timer `ms` from now: a boundary refused as too early is retried then. */
void tp_leader_boundary_retry(struct tp_leader *l, int ms);

/** The boundary timer's callback (ev_periodic). */
void tp_leader_boundary_cb(struct ev_loop *loop, ev_periodic *p, int revents);

/** The callback of boundary_at: a boundary prepared before T goes on with its writes. */
void tp_leader_boundary_at_cb(struct ev_loop *loop, ev_periodic *p, int revents);

/** Sets up the timer of the writes at T (boundary_at, and the timerfd when there is one). */
void tp_leader_boundary_at_init(struct tp_leader *l);
/** The worker exits: stops the writes' timerfd and closes it (boundary_at serves any later). */
void tp_leader_boundary_at_deinit(struct tp_leader *l);

/* --- leader_tick.c --- */

/** The tick watcher (ev_periodic on the tick grid): writes the ticks due, flat before the
 * first lock, along the current segment after it. */
void tp_leader_tick_cb(struct ev_loop *loop, ev_periodic *t, int revents);

/** Writes the ticks due now, as the tick watcher does, unless a tick chain is in flight; its
 * reply publishes the newest. The boundary calls it at T, so the beat of T follows the `round`
 * pair in the same round trip and the same write (leader_boundary.c, bnd_lock). */
void tp_leader_tick_due(struct tp_leader *l);

/** Picks the segment the ticks follow from the snapshot: the newest locked, not cancelled
 * round with its seed (none: flat ticks). */
void tp_leader_choose_segment(struct tp_leader *l, int64_t now);

/** L of round r: the end of the previous round's segment when it leads into r, else the last
 * tick, else the start price. Always >= 1. */
int64_t tp_leader_lock_price(struct tp_leader *l, const struct tp_game_round *r);

/** C of round r along the chain of segments r, r+1, ... (docs/fairness.md §5); a negative
 * error when a later seed is missing from the snapshot. */
int64_t tp_leader_close_price(struct tp_leader *l, const struct tp_game_round *r);

/* --- leader_index.c --- */

/** Once per lease (called by every step; a no-op while it runs and once it completed under this
 * lease): adds every round left in flight outside tp:{g}:unfinished to it, walking the round ids
 * above the scan mark. A failed walk is retried by a later step. */
void tp_leader_index_scan(struct tp_leader *l);

/* --- leader_floor.c --- */

/** A new lease: the floor is not known until Postgres answers (known at 0 without Postgres);
 * its read starts now. */
void tp_leader_floor_lease(struct tp_leader *l);
/** Every step, on its snapshot: reads Postgres's newest round id while it is not known (again
 * once Redis, having held rounds, holds none), into pc.id_floor / pc.floor_unknown. True when
 * the step must wait for that answer (it starts the step again). */
bool tp_leader_floor_step(struct tp_leader *l);

/* --- leader_lost.c --- */

/** When this step's snapshot holds a round whose record is missing and not yet dealt with:
 * starts its chain (refund it if unfinished, else note it final) and returns true, the chain
 * ending the step; false when nothing is owed. */
bool tp_leader_lost(struct tp_leader *l);

/* --- leader_settle.c --- */

/** Runs the payout (settling) or refund (cancelling) pages of round r in every bucket, then
 * round_final; ends the step. */
void tp_leader_settle(struct tp_leader *l, const struct tp_game_round *r);

/** The lease is gone: a settlement waiting out a pacing gap (pace_t) stops waiting and ends
 * its step now; nothing else of a settlement is left to stop (its pages in flight end the step
 * when their replies come, finding the lease gone). */
void tp_leader_settle_drop(struct tp_leader *l);

/** pace_t's callback: the gap is over, the next page goes (or the step ends). */
void tp_leader_settle_pace_cb(struct ev_loop *loop, ev_timer *t, int revents);

#endif
