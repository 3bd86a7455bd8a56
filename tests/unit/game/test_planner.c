/*
 * Game planner: every action it can owe (first open, resync, the boundary with its close,
 * lock and open parts, a lone lock or close, settle, a missed lock and a missed close past
 * grace), the time the next boundary falls due, a restart mid-settlement, clock jumps
 * both ways, nothing to do, bad inputs, and a small in-memory game driven step by step that
 * must settle every round it opens (also with live 6 x betting). Defaults: betting
 * 30 s, live 30 s, grace 5 s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/game/planner.h"
#include "tickpool/game/round.h"

#define BET 30000
#define LIVE 30000
#define GRACE 5000

static const struct tp_planner_config cfg = {.betting_ms = BET, .grace_ms = GRACE};

/* Round `id` opening at opens_at on the default schedule. */
static struct tp_planner_round rnd(int64_t id, enum tp_round_state st, int64_t opens_at)
{
    struct tp_planner_round r = {.id = id, .state = st};
    assert_int_equal(tp_round_schedule(opens_at, BET, LIVE, &r.t), 0);
    return r;
}

/* Plans with `c` and checks the op and every id. */
static void expect_with(const struct tp_planner_config *c, const struct tp_planner_round *rs, int n,
                        int64_t now, int64_t synced, struct tp_planner_action want)
{
    struct tp_planner_action a = {.op = (enum tp_planner_op) - 1};
    assert_int_equal(tp_planner_next(c, rs, n, now, synced, &a), 0);
    if (a.op != want.op || a.round_id != want.round_id || a.close_id != want.close_id ||
        a.lock_id != want.lock_id || a.open_id != want.open_id || a.opens_at != want.opens_at)
        fail_msg("now=%lld: got %s %lld (close %lld lock %lld open %lld at %lld), want %s %lld "
                 "(close %lld lock %lld open %lld at %lld)",
                 (long long)now, tp_planner_op_name(a.op), (long long)a.round_id,
                 (long long)a.close_id, (long long)a.lock_id, (long long)a.open_id,
                 (long long)a.opens_at, tp_planner_op_name(want.op), (long long)want.round_id,
                 (long long)want.close_id, (long long)want.lock_id, (long long)want.open_id,
                 (long long)want.opens_at);
}

/* A cancel, settle, resync or nothing (id 0) with the default config. */
static void expect(const struct tp_planner_round *rs, int n, int64_t now, int64_t synced,
                   enum tp_planner_op op, int64_t id)
{
    expect_with(&cfg, rs, n, now, synced, (struct tp_planner_action){.op = op, .round_id = id});
}

static struct tp_planner_action bnd(int64_t close_id, int64_t lock_id, int64_t open_id,
                                    int64_t opens_at)
{
    struct tp_planner_action a = {.op = TP_PLANNER_BOUNDARY, .close_id = close_id};
    a.lock_id = lock_id;
    a.open_id = open_id;
    a.opens_at = opens_at;
    return a;
}

/* A boundary with the default config: close, lock, open at opens_at (0: part left out). */
static void expect_b(const struct tp_planner_round *rs, int n, int64_t now, int64_t synced,
                     int64_t close_id, int64_t lock_id, int64_t open_id, int64_t opens_at)
{
    expect_with(&cfg, rs, n, now, synced, bnd(close_id, lock_id, open_id, opens_at));
}

static void test_fresh_game(void **state)
{
    (void)state;
    /* First open on an empty game: the next betting boundary not before now. */
    expect_b(NULL, 0, 1000, 0, 0, 0, 1, 30000);
    expect_b(NULL, 0, 30000, 0, 0, 0, 1, 30000);
    expect_b(NULL, 0, 0, 0, 0, 0, 1, 0);
    /* Once open: a new lease re-writes its bucket copies once, then nothing is due. */
    struct tp_planner_round rs[] = {rnd(1, TP_ROUND_OPEN, 30000)};
    expect(rs, 1, 45000, 0, TP_PLANNER_RESYNC, 1);
    expect(rs, 1, 45000, 1, TP_PLANNER_NONE, 0);
    expect(rs, 1, 59999, 1, TP_PLANNER_NONE, 0);
}

static void test_lock_close_settle(void **state)
{
    (void)state;
    /* Round 1's lock is due while it is the newest: it locks and round 2 opens at that lock
     * time, in one step. */
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_OPEN, 30000)};
    assert_int_equal(tp_planner_next_due(rs, 1), 60000);
    expect_b(rs, 1, 60000, 1, 0, 1, 2, 60000);
    expect_b(rs, 1, 65000, 1, 0, 1, 2, 60000); /* still within grace */
    rs[0].state = TP_ROUND_LIVE;
    rs[1] = rnd(2, TP_ROUND_OPEN, 60000);
    assert_int_equal(tp_planner_next_due(rs, 2), 90000);
    expect(rs, 2, 60050, 2, TP_PLANNER_NONE, 0);
    expect(rs, 2, 89999, 2, TP_PLANNER_NONE, 0);
    /* At 90 s round 2 locks and round 1 closes: one boundary closes 1, locks 2, opens 3. */
    expect_b(rs, 2, 90000, 2, 1, 2, 3, 90000);
    expect_b(rs, 2, 95000, 2, 1, 2, 3, 90000); /* still within grace */
    /* Done in part only (a step of an older version): what is left is owed, alone. */
    rs[2] = rnd(3, TP_ROUND_OPEN, 90000);
    expect_b(rs, 3, 90000, 3, 1, 2, 0, 0);
    rs[1].state = TP_ROUND_LIVE;
    expect_b(rs, 3, 90000, 3, 1, 0, 0, 0);
    expect_b(rs, 3, 95000, 3, 1, 0, 0, 0); /* still within grace */
    rs[0].state = TP_ROUND_SETTLING;
    expect(rs, 3, 90100, 3, TP_PLANNER_SETTLE, 1);
    rs[0].state = TP_ROUND_SETTLED;
    expect(rs, 3, 90200, 3, TP_PLANNER_NONE, 0);
    /* A due boundary goes before an unfinished settlement. */
    rs[0].state = TP_ROUND_SETTLING;
    expect_b(rs, 3, 120000, 3, 2, 3, 4, 120000);
}

static void test_missed_lock(void **state)
{
    (void)state;
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_OPEN, 30000)};
    /* 5 s late is on time; 5.001 s late cancels, and no next round is opened for it. */
    expect_b(rs, 1, 65000, 1, 0, 1, 2, 60000);
    expect(rs, 1, 65001, 1, TP_PLANNER_CANCEL, 1);
    /* An older open round missed its lock while a newer one is on time. */
    rs[1] = rnd(2, TP_ROUND_OPEN, 60000);
    expect(rs, 2, 65001, 2, TP_PLANNER_CANCEL, 1);
    /* Cancelling: its refunds are settled, then a fresh round opens only if none is open. */
    rs[0].state = TP_ROUND_CANCELLING;
    expect(rs, 2, 65100, 2, TP_PLANNER_SETTLE, 1);
    rs[0].state = TP_ROUND_CANCELLED;
    expect(rs, 2, 65200, 2, TP_PLANNER_NONE, 0);
    expect_b(rs, 1, 65200, 1, 0, 0, 2, 90000);
}

/*
 * Round 1 live (closes at 90 s), round 2 open (locks at 90 s), both missed by more than grace
 * at `now`: the newest is cancelled first, then the older, refunds run oldest first, and with
 * nothing open the next id opens on the first boundary not before now.
 */
static void both_missed(int64_t now, int64_t next_open)
{
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_LIVE, 30000), rnd(2, TP_ROUND_OPEN, 60000)};
    expect(rs, 2, now, 2, TP_PLANNER_CANCEL, 2);
    rs[1].state = TP_ROUND_CANCELLING;
    expect(rs, 2, now, 2, TP_PLANNER_CANCEL, 1);
    rs[0].state = TP_ROUND_CANCELLING;
    expect(rs, 2, now, 2, TP_PLANNER_SETTLE, 1);
    rs[0].state = TP_ROUND_CANCELLED;
    expect(rs, 2, now, 2, TP_PLANNER_SETTLE, 2);
    rs[1].state = TP_ROUND_CANCELLED;
    expect_b(rs, 2, now, 2, 0, 0, 3, next_open);
}

static void test_missed_close(void **state)
{
    (void)state;
    both_missed(95001, 120000);
    /* A live round past its close but within grace is closed, not cancelled. */
    struct tp_planner_round one[] = {rnd(1, TP_ROUND_LIVE, 30000)};
    expect_b(one, 1, 95000, 0, 1, 0, 0, 0);
    expect(one, 1, 95001, 0, TP_PLANNER_CANCEL, 1);
}

static void test_restart_mid_settlement(void **state)
{
    (void)state;
    /* A new leader (open_synced 0) finds two rounds half settled: the open round's copies are
     * re-written first (one write per bucket: bets there must not wait for a settlement of any
     * length), then the oldest settlement resumes, then the other. */
    struct tp_planner_round rs[6] = {
        rnd(1, TP_ROUND_SETTLED, 30000),    rnd(2, TP_ROUND_SETTLING, 60000),
        rnd(3, TP_ROUND_CANCELLING, 90000), rnd(4, TP_ROUND_LIVE, 120000),
        rnd(5, TP_ROUND_OPEN, 150000),
    };
    expect(rs, 5, 160000, 0, TP_PLANNER_RESYNC, 5);
    expect(rs, 5, 160000, 5, TP_PLANNER_SETTLE, 2);
    rs[1].state = TP_ROUND_SETTLED;
    expect(rs, 5, 160000, 5, TP_PLANNER_SETTLE, 3);
    /* A repair asked for mid-settlement (the leader forgets the synced id): the resync first. */
    expect(rs, 5, 160000, 0, TP_PLANNER_RESYNC, 5);
    rs[2].state = TP_ROUND_CANCELLED;
    expect(rs, 5, 160000, 5, TP_PLANNER_NONE, 0);
    /* A settlement still unfinished does not hold back the boundary at 180 s. */
    rs[1].state = TP_ROUND_SETTLING;
    expect_b(rs, 5, 180000, 5, 4, 5, 6, 180000);
}

static void test_clock_forward(void **state)
{
    (void)state;
    /* The clock jumps an hour ahead: every deadline is missed by far more than grace, and the
     * game restarts on the grid at the new time, not in the past. */
    int64_t now = 90000 + 3600000;
    both_missed(now, now);
    both_missed(now + 1, now + BET);
}

static void test_clock_backward(void **state)
{
    (void)state;
    /* The clock goes back before every deadline: nothing is due, nothing is undone. */
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_LIVE, 30000), rnd(2, TP_ROUND_OPEN, 60000)};
    expect(rs, 2, 10000, 2, TP_PLANNER_NONE, 0);
    expect(rs, 2, 0, 2, TP_PLANNER_NONE, 0);
    /* Back while every round is final: the next id opens on the (earlier) grid point. */
    rs[0].state = TP_ROUND_SETTLED;
    rs[1].state = TP_ROUND_CANCELLED;
    expect_b(rs, 2, 10000, 2, 0, 0, 3, 30000);
    /* Back between round 3's opening and round 2's lock: both open. Only one id is remembered
     * as synced, so the two are re-written in turn (harmless, no state moves back). */
    struct tp_planner_round two[] = {rnd(2, TP_ROUND_OPEN, 30000), rnd(3, TP_ROUND_OPEN, 60000)};
    expect(two, 2, 50000, 3, TP_PLANNER_RESYNC, 2);
    expect(two, 2, 50000, 2, TP_PLANNER_RESYNC, 3);
    /* With a settlement owed, the older open round's turn comes after it, the newest's before:
     * the settlement still runs every other step. */
    struct tp_planner_round three[] = {rnd(1, TP_ROUND_SETTLING, 0), rnd(2, TP_ROUND_OPEN, 30000),
                                       rnd(3, TP_ROUND_OPEN, 60000)};
    expect(three, 3, 50000, 3, TP_PLANNER_SETTLE, 1);
    expect(three, 3, 50000, 2, TP_PLANNER_RESYNC, 3);
    three[0].state = TP_ROUND_SETTLED;
    expect(three, 3, 50000, 3, TP_PLANNER_RESYNC, 2);
}

static void test_nothing_to_do(void **state)
{
    (void)state;
    /* Only final rounds plus an open, synced round whose lock is not due. */
    struct tp_planner_round rs[6] = {
        rnd(1, TP_ROUND_SETTLED, 30000), rnd(2, TP_ROUND_CANCELLED, 60000),
        rnd(3, TP_ROUND_SETTLED, 90000), rnd(4, TP_ROUND_SETTLED, 120000),
        rnd(5, TP_ROUND_LIVE, 150000),   rnd(6, TP_ROUND_OPEN, 180000),
    };
    for (int64_t now = 180000; now < 210000; now += 1000)
        expect(rs, 6, now, 6, TP_PLANNER_NONE, 0);
}

/*
 * Regression: with live >= 5 x betting the round whose close is due used to be
 * older than the 6 newest rounds the leader loaded, so it was never closed, cancelled or
 * settled. The planner now gets every unfinished round. Betting 1 s, live 6 s: round 1 closes
 * at 8 s, when round 8 is the newest; past grace it is cancelled; a round stuck in settling
 * behind any number of newer ones is still settled.
 */
static void test_every_unfinished_round(void **state)
{
    (void)state;
    struct tp_planner_config c = {.betting_ms = 1000, .grace_ms = GRACE};
    struct tp_planner_round rs[8];
    for (int i = 0; i < 8; i++) {
        rs[i] = (struct tp_planner_round){.id = i + 1, .state = TP_ROUND_LIVE};
        assert_int_equal(tp_round_schedule((i + 1) * 1000, 1000, 6000, &rs[i].t), 0);
    }
    rs[7].state = TP_ROUND_OPEN;
    /* At 8 s round 1 closes (round 8, the newest, locks at 9 s). */
    expect_with(&c, rs, 8, 8000, 8, bnd(1, 0, 0, 0));
    /* Missed by more than grace, however many rounds opened since: cancelled. */
    struct tp_planner_action a;
    assert_int_equal(tp_planner_next(&c, rs, 8, 8000 + GRACE + 1, 8, &a), 0);
    assert_true(a.op == TP_PLANNER_CANCEL || (a.op == TP_PLANNER_BOUNDARY && a.close_id != 1));
    rs[0].state = TP_ROUND_SETTLING; /* closed, its pages failing for a while */
    for (int i = 1; i < 8; i++)
        rs[i].state = TP_ROUND_SETTLED;
    rs[7].state = TP_ROUND_OPEN;
    /* The snapshot holds round 1 (unfinished) and the newest ones: it is settled. */
    struct tp_planner_round two[] = {rs[0], rs[7]};
    two[1].id = 1000;
    assert_int_equal(tp_round_schedule(1000 * 1000, 1000, 6000, &two[1].t), 0);
    assert_int_equal(tp_planner_next(&c, two, 2, 1000 * 1000 + 10, 1000, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_SETTLE);
    assert_int_equal(a.round_id, 1);
}

/* Found by test_sim: betting_s changed with a restart, the newest round's lock is
 * off the new grid. Opening the next round there cannot succeed; owed first, it used to block
 * every other action until the round was cancelled. The round locks, the next one opens at the
 * next boundary of the new grid. */
static void test_betting_change(void **state)
{
    (void)state;
    struct tp_planner_config c = {.betting_ms = 7000, .grace_ms = GRACE};
    struct tp_planner_round rs[] = {rnd(1, TP_ROUND_LIVE, 30000), rnd(2, TP_ROUND_OPEN, 60000)};
    /* 90 s is not a multiple of 7 s: round 1 closes and 2 locks, nothing opens. */
    expect_with(&c, rs, 2, 90000, 2, bnd(1, 2, 0, 0));
    rs[0].state = TP_ROUND_SETTLED;
    rs[1].state = TP_ROUND_LIVE;
    expect_with(&c, rs, 2, 90100, 2, bnd(0, 0, 3, 91000)); /* the next multiple of 7 s */
}

static void test_bad_input(void **state)
{
    (void)state;
    struct tp_planner_round rs[7] = {rnd(1, TP_ROUND_OPEN, 30000), rnd(1, TP_ROUND_OPEN, 30000)};
    struct tp_planner_action a;
    assert_int_equal(tp_planner_next(&cfg, rs, 2, 0, 0, &a), TP_EINVAL); /* ids not ascending */
    assert_int_equal(tp_planner_next(&cfg, rs, -1, 0, 0, &a), TP_EINVAL);
    assert_int_equal(tp_planner_next(&cfg, NULL, 1, 0, 0, &a), TP_EINVAL);
    assert_int_equal(tp_planner_next(&cfg, rs, 1, 0, 0, NULL), TP_EINVAL);
    assert_int_equal(tp_planner_next(NULL, rs, 1, 0, 0, &a), TP_EINVAL);
    struct tp_planner_config c = cfg;
    c.betting_ms = 0;
    assert_int_equal(tp_planner_next(&c, rs, 1, 0, 0, &a), TP_EINVAL);
    c = cfg;
    c.grace_ms = -1;
    assert_int_equal(tp_planner_next(&c, rs, 1, 0, 0, &a), TP_EINVAL);
    assert_string_equal(tp_planner_op_name(TP_PLANNER_RESYNC), "resync");
    assert_string_equal(tp_planner_op_name(TP_PLANNER_BOUNDARY), "boundary");
    assert_int_equal(tp_planner_next_due(NULL, 0), INT64_MAX);
    assert_string_equal(tp_planner_op_name(TP_PLANNER_NONE), "none");
    assert_string_equal(tp_planner_op_name((enum tp_planner_op)42), "unknown");
}

/* The newest round id Postgres holds (a Redis that lost its rounds): the next open is above it
 * and above every round given; with no round given it must be known first. */
static void test_id_floor(void **state)
{
    (void)state;
    struct tp_planner_config c = cfg;
    struct tp_planner_action a;
    c.id_floor = 41;
    expect_with(&c, NULL, 0, 1000, 0, bnd(0, 0, 42, 30000)); /* not 1 */
    struct tp_planner_round rs[2] = {rnd(5, TP_ROUND_OPEN, 30000)};
    expect_with(&c, rs, 1, 60000, 5, bnd(0, 5, 42, 60000)); /* 5 locks, 42 opens */
    rs[0].state = TP_ROUND_SETTLED;
    expect_with(&c, rs, 1, 100000, 5, bnd(0, 0, 42, 120000));
    rs[0] = rnd(50, TP_ROUND_OPEN, 30000); /* a floor below Redis's newest changes nothing */
    expect_with(&c, rs, 1, 60000, 50, bnd(0, 50, 51, 60000));
    /* Not known yet: no open on an empty game; with rounds, the newest round's id goes on. */
    c.id_floor = 0;
    c.floor_unknown = true;
    assert_int_equal(tp_planner_next(&c, NULL, 0, 1000, 0, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_NONE);
    expect_with(&c, rs, 1, 60000, 50, bnd(0, 50, 51, 60000));
    rs[0].state = TP_ROUND_SETTLED;
    expect_with(&c, rs, 1, 100000, 50, bnd(0, 0, 51, 120000));
    c.id_floor = -1;
    assert_int_equal(tp_planner_next(&c, rs, 1, 0, 0, &a), TP_EINVAL);
}

/* The operator's pause: rounds in flight lock, close and settle; nothing opens until resumed,
 * then the next round opens on the betting grid. */
static void test_paused(void **state)
{
    (void)state;
    struct tp_planner_config pc = cfg;
    pc.paused = true;
    struct tp_planner_action a;
    struct tp_planner_round rs[2] = {rnd(1, TP_ROUND_LIVE, 30000), rnd(2, TP_ROUND_OPEN, 60000)};
    /* Round 2's lock is due: the boundary closes 1 and locks 2 without opening round 3. */
    expect_with(&pc, rs, 2, 90000, 2, bnd(1, 2, 0, 0));
    rs[1].state = TP_ROUND_LIVE;
    rs[0].state = TP_ROUND_SETTLING;
    assert_int_equal(tp_planner_next(&pc, rs, 2, 90100, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_SETTLE);
    rs[0].state = TP_ROUND_SETTLED;
    /* No open round and paused: nothing is owed, however long the pause lasts. */
    assert_int_equal(tp_planner_next(&pc, rs, 2, 100000, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_NONE);
    rs[1].state = TP_ROUND_SETTLED;
    assert_int_equal(tp_planner_next(&pc, rs, 2, 500000, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_NONE);
    /* Resumed at 500.001 s: round 3 opens at the next boundary, 510 s. */
    expect_b(rs, 2, 500001, 2, 0, 0, 3, 510000);
    /* Paused on a fresh game: nothing opens at all. */
    assert_int_equal(tp_planner_next(&pc, NULL, 0, 1000, 0, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_NONE);
}

static void test_config_init(void **state)
{
    (void)state;
    struct tp_config_game g = {.betting_s = 5, .live_s = 30, .grace_ms = 2500};
    struct tp_planner_config c;
    tp_planner_config_init(&c, &g);
    assert_int_equal(c.betting_ms, 5000);
    assert_int_equal(c.grace_ms, 2500);
    assert_false(c.paused);
}

/*
 * A whole game in memory: the planner is asked every 50 ms (the leader's step) and its action
 * applied at once, with the leader's snapshot: every unfinished round plus the newest one.
 * Every round opened must lock and close on time and end settled, and after every step the
 * newest round is open with the one below it live.
 */
#define SIM_MAX 256
static void simulate(int64_t bet, int64_t live, int64_t until)
{
    static struct tp_planner_round all[SIM_MAX], in[SIM_MAX];
    static int64_t locked_at[SIM_MAX], closed_at[SIM_MAX];
    struct tp_planner_config c = {.betting_ms = bet, .grace_ms = GRACE};
    memset(locked_at, 0, sizeof(locked_at));
    memset(closed_at, 0, sizeof(closed_at));
    int n = 0;
    int64_t synced = 0;
    for (int64_t now = 1234; now < until; now += 50) {
        for (int guard = 0;; guard++) {
            assert_true(guard < 10);
            int k = 0;
            for (int i = 0; i < n; i++)
                if (!tp_round_is_final(all[i].state) || i == n - 1)
                    in[k++] = all[i];
            struct tp_planner_action a;
            assert_int_equal(tp_planner_next(&c, in, k, now, synced, &a), 0);
            if (a.op == TP_PLANNER_NONE)
                break;
            if (a.op == TP_PLANNER_RESYNC) {
                synced = a.round_id;
                continue;
            }
            if (a.op == TP_PLANNER_SETTLE) {
                assert_int_equal(all[a.round_id - 1].state, TP_ROUND_SETTLING);
                all[a.round_id - 1].state = TP_ROUND_SETTLED;
                continue;
            }
            if (a.op != TP_PLANNER_BOUNDARY)
                fail_msg("%s round %lld at %lld", tp_planner_op_name(a.op), (long long)a.round_id,
                         (long long)now);
            if (a.close_id > 0) {
                struct tp_planner_round *r = &all[a.close_id - 1];
                assert_int_equal(r->state, TP_ROUND_LIVE);
                r->state = TP_ROUND_SETTLING;
                closed_at[r->id - 1] = now;
            }
            if (a.lock_id > 0) {
                struct tp_planner_round *r = &all[a.lock_id - 1];
                assert_int_equal(r->state, TP_ROUND_OPEN);
                r->state = TP_ROUND_LIVE;
                locked_at[r->id - 1] = now;
                /* The lock of the newest round opens the next one in the same step. */
                assert_int_equal(a.open_id, a.lock_id + 1);
            }
            if (a.open_id > 0) {
                assert_int_equal(a.open_id, n + 1);
                assert_true(n < SIM_MAX);
                all[n] = (struct tp_planner_round){.id = a.open_id, .state = TP_ROUND_OPEN};
                assert_int_equal(tp_round_schedule(a.opens_at, bet, live, &all[n].t), 0);
                n++;
                synced = a.open_id;
            }
            /* After every step: one round open, the newest live one right below it. */
            assert_int_equal(all[n - 1].state, TP_ROUND_OPEN);
            assert_true(n == 1 || all[n - 2].state == TP_ROUND_LIVE);
        }
    }
    assert_true(n >= until / bet - 2);
    for (int i = 0; i < n; i++) {
        if (all[i].t.closes_at + 50 >= until)
            continue;
        assert_int_equal(all[i].state, TP_ROUND_SETTLED);
        assert_true(locked_at[i] >= all[i].t.locks_at && locked_at[i] < all[i].t.locks_at + 50);
        assert_true(closed_at[i] >= all[i].t.closes_at && closed_at[i] < all[i].t.closes_at + 50);
    }
}

static void test_simulated_game(void **state)
{
    (void)state;
    simulate(BET, LIVE, 40 * BET);
    simulate(1000, 6000, 200000); /* live 6 x betting */
    simulate(1000, 30000, 200000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_game),
        cmocka_unit_test(test_lock_close_settle),
        cmocka_unit_test(test_missed_lock),
        cmocka_unit_test(test_missed_close),
        cmocka_unit_test(test_restart_mid_settlement),
        cmocka_unit_test(test_clock_forward),
        cmocka_unit_test(test_clock_backward),
        cmocka_unit_test(test_nothing_to_do),
        cmocka_unit_test(test_every_unfinished_round),
        cmocka_unit_test(test_betting_change),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_paused),
        cmocka_unit_test(test_id_floor),
        cmocka_unit_test(test_config_init),
        cmocka_unit_test(test_simulated_game),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
