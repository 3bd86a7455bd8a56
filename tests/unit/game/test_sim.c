/*
 * Deterministic simulation of the game, TigerBeetle-style: the pure planner drives an
 * in-memory model of what the Lua scripts do (round_boundary's close, lock and open parts, all
 * checked before any is written, and round_cancel, with their guards; the tp:{g}:current pair
 * they keep; bet.lua's debit, settle_page's exactly-once credits, settle_finish/round_final, and
 * the tp:{g}:unfinished index those scripts keep), over random valid configurations and faults:
 *
 *  - configs: betting 1..10 s, live 1..60 s (so up to 60 rounds live at once), grace
 *    100 ms..10 s, 1..16 bands, rake 0..1000 bps; the leader steps on its boundary timer (at
 *    the planner's next lock or close time) and on a safety step every 50 ms, and after an
 *    action at once again (up to 16 in a row), as leader.c does;
 *  - settlement pages (4..8 bets) take 1..20 ms of Redis time each and the step yields to a
 * boundary that falls due meanwhile, as leader_settle.c does;
 *  - faults: leader crash at any step or between two settlement pages (restart with a fresh
 *    planner state after a lease gap of up to 2.5 s, sometimes with a new config), Redis
 *    unavailable for up to 8 s (steps and bets skipped), clock jumps forward up to 30 s and
 *    back up to 3 s, an operator's pause of up to 10 s landing at any millisecond;
 *  - the pause as the leader sees it: a step plans from its read of tp:{g}:pause, which the
 *    boundary timer's step made up to LEAD_MS before T (the boundary is prepared ahead), so a
 *    pause that lands in between is found by round_boundary.lua at T, which leaves the open out
 *    (4b5ff94) while the close and the lock go on; bets are refused while paused;
 *  - an upgrade (a third of the seeds): the game starts under a version without the unfinished
 *    index (its leader sees only the 6 newest rounds, its scripts keep no index) for 5..60 s,
 *    then restarts under this one, whose new lease walks the round ids 60 a step and indexes
 *    those not yet final, as leader_index.c and round_index.lua do.
 *
 * Asserted at every step: conservation (Σ balances + house + stakes still held = grants); the
 * boundary is atomic: a step that locks N and opens N+1 leaves the pair (open N+1, live N), and
 * one whose open the pause left out leaves (open none, live N); no round opens while paused;
 * once the game is undisturbed for longer than a round lasts (every fault's effect is past),
 * the contract of `/rounds/current`: an open round always, and `live`, when set, is open − 1. For
 * every round: it ends settled or cancelled by max(closes_at + grace, end of the last fault)
 * + 2 steps per unfinished round (at the peak) + 6 steps + the settlement pages still owed;
 * without faults (live 6 x betting, busy rounds), every lock within 3 steps of its time even
 * while a settlement runs, every round settled within two phases of its close; a final state
 * never changes; each bet is credited exactly once with floor(s·pot/W) or its stake (losers
 * never), and the receipt adds up.
 *
 * Time-bounded: seeds run for TP_SIM_SECONDS (default 2) wall seconds, each for at least 1,000
 * rounds; TP_SIM_SEED=<n> replays one seed. A failure prints its seed and config. A separate
 * fault-free run with 1 s phases (the integration test's) checks that every lock happens exactly
 * at its time, on the timer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/game/planner.h"
#include "tickpool/game/round.h"
#include "tickpool/game/settle.h"

#define STEP_MS 50
#define LEAD_MS 250 /* TP_LEADER_BOUNDARY_LEAD_MS: how old a step's read of the pause may be */
#define BURST 16    /* leader.c's STEP_BURST */
/* Longer than any fault's effect on the current pair lasts: a round cancelled for a missed
 * lock leaves its live predecessor until that one closes (live up to 60 s), a betting_s change
 * a phase without an open round (up to 10 s, twice), plus grace. */
#define SETTLED_MS (60000 + 2 * 10000 + 10000 + 10000)
#define RECENT 6 /* the leader's TP_LEADER_RECENT: newest rounds loaded besides the index */
#define NUSERS 64
#define START_BALANCE 1000000

/* --- Deterministic randomness (splitmix64) --- */

static uint64_t rs;

static uint64_t rnd64(void)
{
    uint64_t z = (rs += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t rnd(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd64() % (uint64_t)(hi - lo + 1));
}

/* True with probability 1/n. */
static bool one_in(int64_t n)
{
    return rnd(1, n) == 1;
}

/* --- The model of Redis --- */

struct cfg {
    int64_t betting_ms, live_ms, grace_ms;
    int nbands, rake_bps;
};

struct bet {
    int user, band;
    int64_t stake, credited;
    int credits;
};

struct round {
    int64_t id;
    enum tp_round_state state;
    struct tp_round_times t;
    int nbands, rake_bps; /* the round's own rules, fixed at open */
    struct bet *bets;
    int nbets, cap;
    int64_t pools[TP_ROUND_MAX_BANDS];
    struct tp_settle_plan plan;
    int band;
    int cursor;      /* settle_page's cursor in the plan */
    int64_t paid;    /* plan.paid */
    bool unfinished; /* member of tp:{g}:unfinished */
    int64_t locked_at, ended_at;
};

struct world {
    uint64_t seed;
    struct cfg cfg;
    struct round *r;
    int n, cap;
    int64_t bal[NUSERS], granted, house;
    int64_t now;
    /* the leader */
    bool faults; /* inject faults (off: the quiet drain, and the fault-free test) */
    int64_t down_until, redis_down_until, disturbed_until, synced;
    int64_t pause_from, pause_until; /* tp:{g}:pause exists in [pause_from, pause_until) */
    int64_t lead_read_ms; /* the timer step's read of it, this long before T; -1: 0..LEAD_MS */
    int64_t read_lag;     /* the next step's read is this old (the timer's step), else 0 */
    int64_t cur_open, cur_live; /* tp:{g}:current */
    int64_t boundaries;         /* steps that locked a round and opened the next */
    int64_t peak_unfinished;    /* most rounds unfinished at once so far */
    int64_t old_until;          /* a version without the index leads until the clock reaches it */
    bool old;      /* ... and has not been upgraded yet (a clock jump back must not bring it
                      back) */
    bool walking;  /* the new lease's walk over the round ids is under way */
    int walk_mark; /* rounds [0, walk_mark) walked (tp:{g}:unfinished_scan) */
    struct tp_planner_round *in;
    int in_cap;
    /* counters for the report */
    long crashes, outages, jumps, changes, cancelled, settled, bets, yields, upgrades;
    long pauses, paused_opens; /* pauses; opens round_boundary.lua left out, paused at T */
};

static struct world W;

static bool paused_at(int64_t t)
{
    return t >= W.pause_from && t < W.pause_until;
}

static const char *fmt(const char *f, ...)
{
    static char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return buf;
}

#define FAIL(...)                                                                                  \
    fail_msg("seed %llu (TP_SIM_SEED=%llu replays), now %lld, betting %lld live %lld grace %lld "  \
             "bands %d: %s",                                                                       \
             (unsigned long long)W.seed, (unsigned long long)W.seed, (long long)W.now,             \
             (long long)W.cfg.betting_ms, (long long)W.cfg.live_ms, (long long)W.cfg.grace_ms,     \
             W.cfg.nbands, fmt(__VA_ARGS__))

static struct cfg random_cfg(void)
{
    return (struct cfg){.betting_ms = rnd(1, 10) * 1000,
                        .live_ms = rnd(1, 60) * 1000,
                        .grace_ms = one_in(4) ? 100 : rnd(1, 100) * 100,
                        .nbands = (int)rnd(1, TP_ROUND_MAX_BANDS),
                        .rake_bps = (int)rnd(0, 1000)};
}

/* A version without the unfinished index leads: its scripts keep none, its leader loads the
 * RECENT newest rounds only. */
static bool old_version(void)
{
    return W.old;
}

/* Transition through the one state machine; a refused move is the script's bad_state. */
static bool move(struct round *r, enum tp_round_event ev)
{
    int next = tp_round_next_state(r->state, ev);
    if (next < 0)
        return false;
    if (tp_round_is_final(r->state))
        FAIL("round %lld left final state %s", (long long)r->id, tp_round_state_name(r->state));
    r->state = (enum tp_round_state)next;
    return true;
}

/* round_boundary.lua's open part, once checked: a new round with the current config's rules. */
static void open_round(int64_t id, const struct tp_round_times *t)
{
    if (paused_at(W.now))
        FAIL("round %lld opened while paused", (long long)id);
    if (W.n == W.cap) {
        W.cap = W.cap ? W.cap * 2 : 256;
        W.r = realloc(W.r, (size_t)W.cap * sizeof(*W.r));
        assert_non_null(W.r);
    }
    struct round *r = &W.r[W.n++];
    memset(r, 0, sizeof(*r));
    *r = (struct round){.id = id,
                        .state = TP_ROUND_OPEN,
                        .t = *t,
                        .nbands = W.cfg.nbands,
                        .rake_bps = W.cfg.rake_bps,
                        .unfinished = !old_version()};
    W.cur_open = id;
}

static int64_t total_of(const struct round *r)
{
    int64_t t = 0;
    for (int b = 0; b < r->nbands; b++)
        t += r->pools[b];
    return t;
}

/* round_cancel.lua after bucket_state(cancelled): every stake will be refunded. */
static bool script_cancel(struct round *r)
{
    if (r->state == TP_ROUND_OPEN && W.now < r->t.locks_at + W.cfg.grace_ms)
        return false; /* bucket_state refuses to cancel an open round before lock + grace */
    if (!move(r, TP_ROUND_EV_CANCEL))
        return false;
    if (W.cur_open == r->id)
        W.cur_open = 0;
    if (W.cur_live == r->id)
        W.cur_live = 0;
    int64_t t = total_of(r);
    r->plan = (struct tp_settle_plan){.total = t, .pot = t, .refund_all = true};
    return true;
}

static struct round *round_of(int64_t id)
{
    return id >= 1 && id <= W.n ? &W.r[id - 1] : NULL;
}

/* One part of round_boundary.lua checked: 1 = to write, 0 = already done (no-op), -1 = the
 * script's error (nothing at all is written). */
static int check_part(const struct round *r, enum tp_round_state from, int64_t at)
{
    if (r == NULL)
        return -1; /* not_found */
    if (r->state == TP_ROUND_SETTLING || r->state == TP_ROUND_SETTLED ||
        (from == TP_ROUND_OPEN && r->state == TP_ROUND_LIVE))
        return 0;
    if (r->state != from)
        return -1;              /* bad_state */
    return W.now < at ? -1 : 1; /* too_early by Redis TIME */
}

/* round_boundary.lua (after the buckets went live): every part checked, then close (band from
 * the price, plan from the pools), lock, open, keeping tp:{g}:current as the script does. */
static void script_boundary(const struct tp_planner_action *a)
{
    struct round *c = round_of(a->close_id), *l = round_of(a->lock_id);
    int dc = a->close_id ? check_part(c, TP_ROUND_LIVE, c ? c->t.closes_at : 0) : 0;
    int dl = a->lock_id ? check_part(l, TP_ROUND_OPEN, l ? l->t.locks_at : 0) : 0;
    struct tp_round_times t;
    bool do_open = false, paused = false;
    if (a->open_id > W.n && paused_at(W.now)) {
        paused = true; /* the open is left out, unchecked: its id is the next open's */
    } else if (a->open_id > W.n) {
        /* The leader cannot prepare a schedule off the grid (it drops the part); the script
         * refuses an id with a gap. */
        bool ok = tp_round_schedule(a->opens_at, W.cfg.betting_ms, W.cfg.live_ms, &t) == 0;
        if (ok && a->open_id != W.n + 1)
            return; /* bad_id */
        do_open = ok;
    }
    if (dc < 0 || dl < 0)
        return;
    if (dc == 1) {
        c->band = (int)rnd(0, c->nbands - 1);
        if (tp_settle_plan(total_of(c), c->pools[c->band], c->rake_bps, &c->plan) != 0)
            FAIL("settle plan of round %lld", (long long)c->id);
        if (!move(c, TP_ROUND_EV_CLOSE))
            FAIL("close of round %lld refused", (long long)c->id);
        if (W.cur_live == c->id)
            W.cur_live = 0;
    }
    if (dl == 1) {
        if (!move(l, TP_ROUND_EV_LOCK))
            FAIL("lock of round %lld refused", (long long)l->id);
        l->locked_at = W.now;
        W.cur_live = l->id;
        if (W.cur_open == l->id)
            W.cur_open = 0;
    }
    if (do_open) {
        open_round(a->open_id, &t);
        W.synced = a->open_id;
    }
    if (paused)
        W.paused_opens++;
    /* Paused at T: the lock went on, nothing opened, so the pair is (open none, live N). */
    if (dl == 1 && paused && (W.cur_open != 0 || W.cur_live != a->lock_id))
        FAIL("paused boundary at round %lld left open %lld live %lld", (long long)a->lock_id,
             (long long)W.cur_open, (long long)W.cur_live);
    /* Atomic: the step that locks N and opens N+1 leaves exactly (open N+1, live N). */
    if (dl == 1 && do_open) {
        W.boundaries++;
        if (W.cur_open != a->lock_id + 1 || W.cur_live != a->lock_id)
            FAIL("boundary at round %lld left open %lld live %lld", (long long)a->lock_id,
                 (long long)W.cur_open, (long long)W.cur_live);
    }
}

/* What a bet gets from a plan: its stake on a refund, floor(s·pot/W) on the winning band. */
static int64_t owed(const struct round *r, const struct bet *b)
{
    if (r->plan.refund_all)
        return b->stake;
    return b->band == r->band ? tp_settle_payout(b->stake, &r->plan) : 0;
}

/* settle_page.lua: one page from the plan's cursor; HSCAN may return an entry twice, which
 * the paid record absorbs. Returns true when the pages are done. */
static bool script_page(struct round *r, int size)
{
    int from = r->cursor;
    if (from > 0 && one_in(3))
        from -= (int)rnd(1, from < 5 ? from : 5); /* a duplicate from the scan */
    int to = r->cursor + size < r->nbets ? r->cursor + size : r->nbets;
    for (int i = from; i < to; i++) {
        struct bet *b = &r->bets[i];
        int64_t a = owed(r, b);
        if (a == 0 || b->credits > 0)
            continue;
        b->credits++;
        b->credited = a;
        W.bal[b->user] += a;
        r->paid += a;
    }
    r->cursor = to;
    return r->cursor >= r->nbets;
}

/* settle_finish.lua in every bucket then round_final.lua: house, receipt, index removal. */
static void script_final(struct round *r)
{
    int64_t t = r->plan.total;
    if (r->plan.refund_all ? r->paid != t : t - r->plan.rake - r->paid < 0)
        FAIL("round %lld: receipt mismatch (total %lld paid %lld rake %lld)", (long long)r->id,
             (long long)t, (long long)r->paid, (long long)r->plan.rake);
    W.house += t - r->paid;
    if (!move(r, TP_ROUND_EV_FINAL))
        FAIL("round %lld: final refused", (long long)r->id);
    r->unfinished = false; /* (never set under the old version) */
    r->ended_at = W.now;
    if (r->state == TP_ROUND_SETTLED)
        W.settled++;
    else
        W.cancelled++;
}

/* bet.lua on the open round(s): state open, before locks_at, funds. */
static void place_bets(void)
{
    for (int i = W.n - 1; i >= 0 && i >= W.n - 2; i--) {
        struct round *r = &W.r[i];
        if (r->state != TP_ROUND_OPEN || W.now >= r->t.locks_at || paused_at(W.now) || !one_in(2))
            continue;
        int user = (int)rnd(0, NUSERS - 1);
        int64_t stake = rnd(1, 5000);
        if (W.bal[user] < stake)
            continue;
        if (r->nbets == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 8;
            r->bets = realloc(r->bets, (size_t)r->cap * sizeof(*r->bets));
            assert_non_null(r->bets);
        }
        int band = (int)rnd(0, r->nbands - 1);
        r->bets[r->nbets++] = (struct bet){.user = user, .band = band, .stake = stake};
        W.bal[user] -= stake;
        r->pools[band] += stake;
        W.bets++;
    }
}

/* --- The leader --- */

static void crash(void)
{
    W.crashes++;
    W.synced = 0; /* a fresh process: nothing remembered */
    W.down_until = W.now + rnd(0, 2500);
    if (one_in(4)) {
        W.cfg = random_cfg(); /* a config change with the restart */
        W.changes++;
    }
    W.disturbed_until = W.down_until > W.disturbed_until ? W.down_until : W.disturbed_until;
}

/* One page of the new lease's walk (round_index.lua over 60 ids above the mark): rounds not
 * final join the index. The walk runs beside the steps; until it ends the rounds it has not
 * reached are outside the planner's view, so it counts as a disturbance. */
static void walk_page(void)
{
    int end = W.walk_mark + 60 < W.n ? W.walk_mark + 60 : W.n;
    for (int i = W.walk_mark; i < end; i++)
        if (!tp_round_is_final(W.r[i].state))
            W.r[i].unfinished = true;
    W.walk_mark = end;
    W.walking = end < W.n;
    W.disturbed_until = W.now > W.disturbed_until ? W.now : W.disturbed_until;
}

/* The snapshot the leader loads: the unfinished index plus the RECENT newest rounds. */
static int snapshot(void)
{
    if (W.in_cap < W.n) {
        W.in_cap = W.n * 2;
        W.in = realloc(W.in, (size_t)W.in_cap * sizeof(*W.in));
        assert_non_null(W.in);
    }
    int k = 0;
    for (int i = 0; i < W.n; i++)
        if (W.r[i].unfinished || i >= W.n - RECENT)
            W.in[k++] = (struct tp_planner_round){W.r[i].id, W.r[i].state, W.r[i].t};
    return k;
}

/* One step of the leader; returns true when it acted (the next step follows at once). */
static bool leader_step(void)
{
    /* The pause as the step read it: the boundary timer's step before T, the others now. */
    struct tp_planner_config pc = {.betting_ms = W.cfg.betting_ms,
                                   .grace_ms = W.cfg.grace_ms,
                                   .paused = paused_at(W.now - W.read_lag)};
    W.read_lag = 0;
    if (W.walking)
        walk_page();
    int k = snapshot();
    struct tp_planner_action a;
    if (tp_planner_next(&pc, W.in, k, W.now, W.synced, &a) != 0)
        FAIL("planner refused its snapshot (%d rounds)", k);
    struct round *r = round_of(a.round_id);
    if (getenv("TP_SIM_TRACE"))
        printf("%lld %s %lld c%lld l%lld o%lld (n=%d k=%d synced=%lld down=%lld)\n",
               (long long)W.now, tp_planner_op_name(a.op), (long long)a.round_id,
               (long long)a.close_id, (long long)a.lock_id, (long long)a.open_id, W.n, k,
               (long long)W.synced, (long long)W.disturbed_until);
    switch (a.op) {
    case TP_PLANNER_BOUNDARY:
        script_boundary(&a);
        break;
    case TP_PLANNER_CANCEL:
        if (r != NULL)
            script_cancel(r);
        break;
    case TP_PLANNER_SETTLE:
        /* Page after page as leader_settle.c runs them, each taking a little Redis time; a
         * crash may cut in between, and the step yields as soon as a boundary falls due. */
        for (int size = (int)rnd(4, 8); r != NULL;) {
            if (script_page(r, size)) {
                script_final(r);
                break;
            }
            if (W.faults && one_in(50)) {
                crash();
                return false;
            }
            W.now += rnd(1, 20);
            struct tp_planner_action b;
            assert_int_equal(tp_planner_next(&pc, W.in, k, W.now, W.synced, &b), 0);
            if (b.op == TP_PLANNER_BOUNDARY || b.op == TP_PLANNER_CANCEL) {
                W.yields++;
                break;
            }
        }
        break;
    case TP_PLANNER_RESYNC:
        W.synced = a.round_id;
        break;
    default:
        break;
    }
    return a.op != TP_PLANNER_NONE;
}

/* The leader's steps at W.now: one, then more at once while it acts (bounded). */
static void leader_steps(void)
{
    for (int i = 0; i < BURST && W.now >= W.down_until && leader_step(); i++)
        if (W.faults && one_in(700))
            crash();
}

/* When the leader's boundary timer fires next (INT64_MAX: not armed). */
static int64_t timer_due(void)
{
    int k = snapshot();
    return tp_planner_next_due(W.in, k);
}

/* --- Invariants --- */

/* The contract of `/rounds/current` once faults are long past: a round is always open, and
 * the live one, when there is one, is right below it. */
static void check_current(void)
{
    if (W.n == 0 || W.now < W.disturbed_until + SETTLED_MS)
        return;
    if (W.cur_open == 0)
        FAIL("no open round (live %lld, newest %lld %s)", (long long)W.cur_live, (long long)W.n,
             tp_round_state_name(W.r[W.n - 1].state));
    if (W.cur_live != 0 && W.cur_live != W.cur_open - 1)
        FAIL("open %lld with live %lld", (long long)W.cur_open, (long long)W.cur_live);
}

/* The leader's timer step: if its boundary timer fires before `next`, it steps then. */
static void timer_step(int64_t next)
{
    int64_t due = timer_due();
    if (due <= W.now || due >= next || W.now < W.down_until || due < W.redis_down_until)
        return;
    W.now = due;
    W.read_lag = W.lead_read_ms >= 0 ? W.lead_read_ms : rnd(0, LEAD_MS);
    leader_steps();
    W.read_lag = 0; /* the leader was down */
    check_current();
}

static void check_conservation(void)
{
    int64_t sum = W.house;
    for (int u = 0; u < NUSERS; u++)
        sum += W.bal[u];
    for (int i = 0; i < W.n; i++)
        if (!tp_round_is_final(W.r[i].state))
            sum += total_of(&W.r[i]) - W.r[i].paid;
    if (sum != W.granted)
        FAIL("conservation: %lld != granted %lld", (long long)sum, (long long)W.granted);
}

static int64_t n_unfinished(void)
{
    int64_t k = 0;
    for (int i = 0; i < W.n; i++)
        k += W.r[i].unfinished;
    return k;
}

/* A round overdue (past closes_at + grace, or when a fault ended) needs at most a cancel or
 * close step and a settle step of its own, behind as many for every other unfinished round,
 * and the settlement pages still owed. */
static void check_deadlines(void)
{
    int64_t u = n_unfinished(), pending_bets = 0;
    W.peak_unfinished = u > W.peak_unfinished ? u : W.peak_unfinished;
    for (int i = 0; i < W.n; i++)
        if (W.r[i].unfinished)
            pending_bets += W.r[i].nbets;
    /* Plus the settlement work queued: at worst four bets per 20 ms page, twice over for the
     * steps it yields to boundaries. */
    int64_t slack = STEP_MS * (2 * W.peak_unfinished + 6) + 2 * 20 * (pending_bets / 4 + u);
    for (int i = 0; i < W.n; i++) {
        const struct round *r = &W.r[i];
        if (!old_version() && !W.walking && r->unfinished != !tp_round_is_final(r->state))
            FAIL("round %lld: index and state disagree", (long long)r->id);
        if (tp_round_is_final(r->state))
            continue;
        /* Grace is the current config's (the planner's), as in the leader. */
        int64_t due = r->t.closes_at + W.cfg.grace_ms;
        if (W.disturbed_until > due)
            due = W.disturbed_until;
        if (W.now > due + slack)
            FAIL("round %lld (%s) not final %lld ms after closes_at %lld", (long long)r->id,
                 tp_round_state_name(r->state), (long long)(W.now - r->t.closes_at),
                 (long long)r->t.closes_at);
    }
}

static void check_bets(void)
{
    for (int i = 0; i < W.n; i++) {
        const struct round *r = &W.r[i];
        if (!tp_round_is_final(r->state))
            continue;
        for (int j = 0; j < r->nbets; j++) {
            const struct bet *b = &r->bets[j];
            int64_t a = owed(r, b);
            if (b->credits != (a > 0) || b->credited != a)
                FAIL("round %lld bet %d: credited %d times with %lld, owed %lld", (long long)r->id,
                     j, b->credits, (long long)b->credited, (long long)a);
        }
    }
}

/* --- Driver --- */

/* Frees the world's rounds, bets and snapshot and zeroes it (LeakSanitizer runs this test). */
static void world_free(void)
{
    for (int i = 0; i < W.n; i++)
        free(W.r[i].bets);
    free(W.r);
    free(W.in);
    memset(&W, 0, sizeof(W));
}

static void run_seed(uint64_t seed, int min_rounds)
{
    world_free();
    W.seed = seed;
    rs = seed;
    W.lead_read_ms = -1;
    W.cfg = random_cfg();
    W.now = rnd(0, 1000000) * 10 + 1700000000000LL;
    for (int u = 0; u < NUSERS; u++)
        W.bal[u] = START_BALANCE;
    W.granted = (int64_t)NUSERS * START_BALANCE;
    if (one_in(3)) { /* begins under a version without the index, upgraded later */
        W.old_until = W.now + rnd(5000, 60000);
        W.old = true;
        W.disturbed_until = W.old_until;
        W.upgrades++;
    }
    /* Faults while the rounds are many; then a quiet drain so every round can end. */
    W.faults = true;
    int64_t quiet_until = 0;
    for (long step = 0;; step++) {
        if (W.faults && W.n >= min_rounds) {
            W.faults = false;
            /* live + betting + grace at most, twice over, and the current pair checked after */
            quiet_until = W.now + 70000 + 20000 + SETTLED_MS;
        }
        if (!W.faults && W.now >= quiet_until && W.now >= W.disturbed_until + 70000)
            break;
        int64_t next = W.now + STEP_MS;
        timer_step(next);
        W.now = next > W.now ? next : W.now;
        if (W.old && W.now >= W.old_until) {
            crash(); /* the upgrade: a restart under this version, whose lease walks */
            W.old = false;
            W.walking = true;
        }
        if (W.faults && one_in(2000)) {
            int64_t j = one_in(4) ? -rnd(1, 3000) : rnd(1, 30000);
            W.now += j;
            W.jumps++;
            W.disturbed_until = W.now > W.disturbed_until ? W.now : W.disturbed_until;
        }
        if (W.faults && W.now >= W.pause_until && one_in(2500)) {
            /* tickpool admin pause, acknowledged at any millisecond of the next second or,
             * half the time, within the lead of the next boundary (up to LEAD_MS before it),
             * and resumed up to 10 s later */
            int64_t due = timer_due();
            bool lead = due != INT64_MAX && due - LEAD_MS > W.now && one_in(2);
            W.pause_from = lead ? due - rnd(1, LEAD_MS) : W.now + rnd(1, 1000);
            W.pause_until = W.pause_from + rnd(100, 10000);
            W.pauses++;
            if (W.pause_until > W.disturbed_until)
                W.disturbed_until = W.pause_until;
        }
        if (W.faults && one_in(1500)) {
            W.redis_down_until = W.now + rnd(100, 8000);
            W.outages++;
            if (W.redis_down_until > W.disturbed_until)
                W.disturbed_until = W.redis_down_until;
        }
        bool redis_up = W.now >= W.redis_down_until;
        if (redis_up)
            place_bets();
        if (redis_up && W.now >= W.down_until)
            leader_steps();
        check_conservation();
        check_deadlines();
        check_current();
        assert_true(step < 50000000);
    }
    check_deadlines();
    check_bets();
    /* Everything that closed long enough ago has ended. */
    for (int i = 0; i < W.n; i++)
        if (W.r[i].t.closes_at + 30000 < W.now - 70000 && !tp_round_is_final(W.r[i].state))
            FAIL("round %lld never ended", (long long)W.r[i].id);
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_simulation(void **state)
{
    (void)state;
    const char *one = getenv("TP_SIM_SEED");
    if (one != NULL) {
        run_seed(strtoull(one, NULL, 10), 1000);
        printf("sim: seed %s: %d rounds\n", one, W.n);
        return;
    }
    const char *secs = getenv("TP_SIM_SECONDS");
    double budget = secs ? atof(secs) : 2.0, t0 = wall();
    uint64_t base = (uint64_t)time(NULL);
    long seeds = 0, rounds = 0, settled = 0, cancelled = 0, crashes = 0, outages = 0, jumps = 0,
         changes = 0, bets = 0, yields = 0, upgrades = 0, pauses = 0, paused_opens = 0;
    do {
        run_seed(base + (uint64_t)seeds, 1000);
        seeds++;
        rounds += W.n;
        settled += W.settled;
        cancelled += W.cancelled;
        crashes += W.crashes;
        outages += W.outages;
        jumps += W.jumps;
        changes += W.changes;
        bets += W.bets;
        yields += W.yields;
        upgrades += W.upgrades;
        pauses += W.pauses;
        paused_opens += W.paused_opens;
    } while (wall() - t0 < budget);
    printf("sim: %ld seeds from %llu in %.1f s: %ld rounds (%ld settled, %ld cancelled), %ld "
           "bets, %ld crashes (%ld with a config change), %ld Redis outages, %ld clock jumps, "
           "%ld settlements yielded to a boundary, %ld upgrades from a version without the index, "
           "%ld pauses (%ld opens left out at T)\n",
           seeds, (unsigned long long)base, wall() - t0, rounds, settled, cancelled, bets, crashes,
           changes, outages, jumps, yields, upgrades, pauses, paused_opens);
}

/* A fault-free game of `steps` safety steps with `cfg`, `bets` bet attempts per step, the
 * current pair checked after every step (no disturbance: from the first open on). */
static void quiet_steps(int steps, int bets);

static void quiet_run(uint64_t seed, struct cfg cfg, int steps, int bets)
{
    world_free(); /* the previous test's world */
    rs = W.seed = seed;
    W.cfg = cfg;
    W.now = 1700000000000LL + 7; /* off the grid: the first open waits for its boundary */
    for (int u = 0; u < NUSERS; u++)
        W.bal[u] = START_BALANCE;
    W.granted = (int64_t)NUSERS * START_BALANCE;
    W.disturbed_until = -SETTLED_MS;
    quiet_steps(steps, bets);
}

/* `steps` more safety steps of the quiet game, `bets` bet attempts each. */
static void quiet_steps(int steps, int bets)
{
    for (int step = 0; step < steps; step++) {
        int64_t next = W.now + STEP_MS;
        timer_step(next);
        W.now = next > W.now ? next : W.now;
        for (int j = 0; j < bets; j++)
            place_bets();
        leader_steps();
        check_conservation();
        check_deadlines();
        check_current();
    }
    check_bets();
}

/* A pause that lands within a boundary's lead, after the timer's step read the pause (60 ms
 * before T, as test_admin's pause test lands it against the server): the boundary is planned
 * with its open, round_boundary.lua leaves the open out at T, the lock goes on, so the game
 * shows (open none, live N); nothing opens while paused; after the resume the next round is
 * N + 1, on the grid. */
static void test_pause_within_lead(void **state)
{
    (void)state;
    quiet_run(21, (struct cfg){.betting_ms = 1000, .live_ms = 1000, .grace_ms = 100, .nbands = 5},
              200, 1);
    int64_t n = W.n;
    assert_int_equal(W.r[n - 1].state, TP_ROUND_OPEN);
    int64_t t = W.r[n - 1].t.locks_at;
    W.lead_read_ms = LEAD_MS;
    W.pause_from = t - 60;
    W.pause_until = t + 3000;
    W.disturbed_until = W.pause_until;
    quiet_steps((int)((t + 500 - W.now) / STEP_MS), 1);
    assert_int_equal(W.paused_opens, 1);
    assert_int_equal(W.r[n - 1].state, TP_ROUND_LIVE);
    assert_int_equal(W.r[n - 1].locked_at, t);
    assert_int_equal(W.n, n); /* N + 1 never written */
    assert_int_equal(W.cur_open, 0);
    assert_int_equal(W.cur_live, n);
    quiet_steps((int)(5500 / STEP_MS), 1);
    assert_int_equal(W.paused_opens, 1); /* not tried again while paused */
    assert_true(W.n > n);
    const struct round *next = &W.r[n];
    assert_int_equal(next->id, n + 1);
    assert_true(next->t.opens_at >= W.pause_until);
    assert_int_equal(next->t.opens_at % 1000, 0);
    world_free();
}

/* The integration test's game (1 s phases, grace 100 ms, lightly betting): every boundary is
 * one step on the timer, exactly at its time, and `/rounds/current` never shows a half-done
 * boundary nor goes without an open round. */
static void test_boundaries_on_time(void **state)
{
    (void)state;
    quiet_run(13, (struct cfg){.betting_ms = 1000, .live_ms = 1000, .grace_ms = 100, .nbands = 5},
              2000, 1);
    assert_true(W.n >= 99);
    assert_int_equal(W.cancelled, 0);
    assert_true(W.boundaries >= W.n - 2); /* every lock but none opened the next round */
    for (int i = 0; i < W.n; i++) {
        const struct round *r = &W.r[i];
        if (r->state != TP_ROUND_OPEN && r->locked_at != r->t.locks_at)
            FAIL("round %lld locked at %lld, %lld ms after its time", (long long)r->id,
                 (long long)r->locked_at, (long long)(r->locked_at - r->t.locks_at));
    }
}

/* Without faults, live = 6 x betting (the ratio the old 6-round window lost) settles every round.
 */
static void test_live_six_times_betting_no_faults(void **state)
{
    (void)state;
    /* busy rounds: settlements long enough to meet a boundary */
    quiet_run(16, (struct cfg){.betting_ms = 1000, .live_ms = 6000, .grace_ms = 5000, .nbands = 5},
              4000, 35);
    assert_true(W.n >= 195);
    assert_int_equal(W.cancelled, 0);
    assert_true(W.yields > 0); /* settlements long enough to meet a boundary */
    for (int i = 0; i < W.n; i++) {
        const struct round *r = &W.r[i];
        /* On the timer; a settlement page in flight at the boundary (up to 20 ms) first. */
        if (r->state != TP_ROUND_OPEN)
            assert_true(r->locked_at >= r->t.locks_at && r->locked_at <= r->t.locks_at + 20);
        /* Settled within two phases (a settlement of ~350 bets takes most of one). */
        if (r->t.closes_at + 2000 + 6 * STEP_MS < W.now &&
            (r->state != TP_ROUND_SETTLED || r->ended_at > r->t.closes_at + 2000 + 6 * STEP_MS))
            FAIL("round %lld %s ended %lld ms after close, %d bets, yields %ld", (long long)r->id,
                 tp_round_state_name(r->state), (long long)(r->ended_at - r->t.closes_at), r->nbets,
                 W.yields);
        if (r->t.closes_at + 2000 + 6 * STEP_MS < W.now)
            assert_true(r->state == TP_ROUND_SETTLED &&
                        r->ended_at <= r->t.closes_at + 2000 + 6 * STEP_MS);
    }
    world_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundaries_on_time),
        cmocka_unit_test(test_live_six_times_betting_no_faults),
        cmocka_unit_test(test_pause_within_lead),
        cmocka_unit_test(test_simulation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
