/*
 * Game planner: every action it can owe (first open, resync, open-before-lock, lock, close,
 * settle, a missed lock and a missed close past grace), a restart mid-settlement, clock jumps
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

/* Plans with the default config and checks the op and round id (and opens_at for OPEN). */
static void expect(const struct tp_planner_round *rs, int n, int64_t now, int64_t synced,
                   enum tp_planner_op op, int64_t id, int64_t opens_at)
{
    struct tp_planner_action a = {.op = (enum tp_planner_op) - 1};
    assert_int_equal(tp_planner_next(&cfg, rs, n, now, synced, &a), 0);
    if (a.op != op || a.round_id != id)
        fail_msg("now=%lld: got %s %lld, want %s %lld", (long long)now, tp_planner_op_name(a.op),
                 (long long)a.round_id, tp_planner_op_name(op), (long long)id);
    assert_int_equal(a.opens_at, op == TP_PLANNER_OPEN ? opens_at : 0);
}

static void test_fresh_game(void **state)
{
    (void)state;
    /* First open on an empty game: the next betting boundary not before now. */
    expect(NULL, 0, 1000, 0, TP_PLANNER_OPEN, 1, 30000);
    expect(NULL, 0, 30000, 0, TP_PLANNER_OPEN, 1, 30000);
    expect(NULL, 0, 0, 0, TP_PLANNER_OPEN, 1, 0);
    /* Once open: a new lease re-writes its bucket copies once, then nothing is due. */
    struct tp_planner_round rs[] = {rnd(1, TP_ROUND_OPEN, 30000)};
    expect(rs, 1, 45000, 0, TP_PLANNER_RESYNC, 1, 0);
    expect(rs, 1, 45000, 1, TP_PLANNER_NONE, 0, 0);
    expect(rs, 1, 59999, 1, TP_PLANNER_NONE, 0, 0);
}

static void test_lock_close_settle(void **state)
{
    (void)state;
    /* Round 1's lock is due while it is the newest: round 2 opens first, at that lock time. */
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_OPEN, 30000)};
    expect(rs, 1, 60000, 1, TP_PLANNER_OPEN, 2, 60000);
    rs[1] = rnd(2, TP_ROUND_OPEN, 60000);
    expect(rs, 2, 60000, 2, TP_PLANNER_LOCK, 1, 0);
    expect(rs, 2, 65000, 2, TP_PLANNER_LOCK, 1, 0); /* still within grace */
    rs[0].state = TP_ROUND_LIVE;
    expect(rs, 2, 60050, 2, TP_PLANNER_NONE, 0, 0);
    expect(rs, 2, 89999, 2, TP_PLANNER_NONE, 0, 0);
    /* At 90 s round 2 locks and round 1 closes: newest first, so round 3 opens, 2 locks, and
     * only then 1 closes. */
    expect(rs, 2, 90000, 2, TP_PLANNER_OPEN, 3, 90000);
    rs[2] = rnd(3, TP_ROUND_OPEN, 90000);
    expect(rs, 3, 90000, 3, TP_PLANNER_LOCK, 2, 0);
    rs[1].state = TP_ROUND_LIVE;
    expect(rs, 3, 90000, 3, TP_PLANNER_CLOSE, 1, 0);
    expect(rs, 3, 95000, 3, TP_PLANNER_CLOSE, 1, 0); /* still within grace */
    rs[0].state = TP_ROUND_SETTLING;
    expect(rs, 3, 90100, 3, TP_PLANNER_SETTLE, 1, 0);
    rs[0].state = TP_ROUND_SETTLED;
    expect(rs, 3, 90200, 3, TP_PLANNER_NONE, 0, 0);
    /* A due lock goes before an unfinished settlement. */
    rs[0].state = TP_ROUND_SETTLING;
    expect(rs, 3, 120000, 3, TP_PLANNER_OPEN, 4, 120000);
}

static void test_missed_lock(void **state)
{
    (void)state;
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_OPEN, 30000)};
    /* 5 s late is on time; 5.001 s late cancels, and no next round is opened for it. */
    expect(rs, 1, 65000, 1, TP_PLANNER_OPEN, 2, 60000);
    expect(rs, 1, 65001, 1, TP_PLANNER_CANCEL, 1, 0);
    /* An older open round missed its lock while a newer one is on time. */
    rs[1] = rnd(2, TP_ROUND_OPEN, 60000);
    expect(rs, 2, 65001, 2, TP_PLANNER_CANCEL, 1, 0);
    /* Cancelling: its refunds are settled, then a fresh round opens only if none is open. */
    rs[0].state = TP_ROUND_CANCELLING;
    expect(rs, 2, 65100, 2, TP_PLANNER_SETTLE, 1, 0);
    rs[0].state = TP_ROUND_CANCELLED;
    expect(rs, 2, 65200, 2, TP_PLANNER_NONE, 0, 0);
    expect(rs, 1, 65200, 1, TP_PLANNER_OPEN, 2, 90000);
}

/*
 * Round 1 live (closes at 90 s), round 2 open (locks at 90 s), both missed by more than grace
 * at `now`: the newest is cancelled first, then the older, refunds run oldest first, and with
 * nothing open the next id opens on the first boundary not before now.
 */
static void both_missed(int64_t now, int64_t next_open)
{
    struct tp_planner_round rs[6] = {rnd(1, TP_ROUND_LIVE, 30000), rnd(2, TP_ROUND_OPEN, 60000)};
    expect(rs, 2, now, 2, TP_PLANNER_CANCEL, 2, 0);
    rs[1].state = TP_ROUND_CANCELLING;
    expect(rs, 2, now, 2, TP_PLANNER_CANCEL, 1, 0);
    rs[0].state = TP_ROUND_CANCELLING;
    expect(rs, 2, now, 2, TP_PLANNER_SETTLE, 1, 0);
    rs[0].state = TP_ROUND_CANCELLED;
    expect(rs, 2, now, 2, TP_PLANNER_SETTLE, 2, 0);
    rs[1].state = TP_ROUND_CANCELLED;
    expect(rs, 2, now, 2, TP_PLANNER_OPEN, 3, next_open);
}

static void test_missed_close(void **state)
{
    (void)state;
    both_missed(95001, 120000);
    /* A live round past its close but within grace is closed, not cancelled. */
    struct tp_planner_round one[] = {rnd(1, TP_ROUND_LIVE, 30000)};
    expect(one, 1, 95000, 0, TP_PLANNER_CLOSE, 1, 0);
    expect(one, 1, 95001, 0, TP_PLANNER_CANCEL, 1, 0);
}

static void test_restart_mid_settlement(void **state)
{
    (void)state;
    /* A new leader (open_synced 0) finds two rounds half settled: the oldest resumes first,
     * then the other, then the open round's copies are re-written. */
    struct tp_planner_round rs[6] = {
        rnd(1, TP_ROUND_SETTLED, 30000),    rnd(2, TP_ROUND_SETTLING, 60000),
        rnd(3, TP_ROUND_CANCELLING, 90000), rnd(4, TP_ROUND_LIVE, 120000),
        rnd(5, TP_ROUND_OPEN, 150000),
    };
    expect(rs, 5, 160000, 0, TP_PLANNER_SETTLE, 2, 0);
    rs[1].state = TP_ROUND_SETTLED;
    expect(rs, 5, 160000, 0, TP_PLANNER_SETTLE, 3, 0);
    rs[2].state = TP_ROUND_CANCELLED;
    expect(rs, 5, 160000, 0, TP_PLANNER_RESYNC, 5, 0);
    expect(rs, 5, 160000, 5, TP_PLANNER_NONE, 0, 0);
    /* A settlement still unfinished does not hold back the boundary at 180 s. */
    rs[1].state = TP_ROUND_SETTLING;
    expect(rs, 5, 180000, 5, TP_PLANNER_OPEN, 6, 180000);
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
    expect(rs, 2, 10000, 2, TP_PLANNER_NONE, 0, 0);
    expect(rs, 2, 0, 2, TP_PLANNER_NONE, 0, 0);
    /* Back while every round is final: the next id opens on the (earlier) grid point. */
    rs[0].state = TP_ROUND_SETTLED;
    rs[1].state = TP_ROUND_CANCELLED;
    expect(rs, 2, 10000, 2, TP_PLANNER_OPEN, 3, 30000);
    /* Back between round 3's opening and round 2's lock: both open. Only one id is remembered
     * as synced, so the two are re-written in turn (harmless, no state moves back). */
    struct tp_planner_round two[] = {rnd(2, TP_ROUND_OPEN, 30000), rnd(3, TP_ROUND_OPEN, 60000)};
    expect(two, 2, 50000, 3, TP_PLANNER_RESYNC, 2, 0);
    expect(two, 2, 50000, 2, TP_PLANNER_RESYNC, 3, 0);
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
        expect(rs, 6, now, 6, TP_PLANNER_NONE, 0, 0);
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
    struct tp_planner_action a;
    assert_int_equal(tp_planner_next(&c, rs, 8, 8000, 8, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_CLOSE);
    assert_int_equal(a.round_id, 1);
    /* Missed by more than grace, however many rounds opened since: cancelled. */
    assert_int_equal(tp_planner_next(&c, rs, 8, 8000 + GRACE + 1, 8, &a), 0);
    assert_true(a.op == TP_PLANNER_CANCEL || a.op == TP_PLANNER_OPEN);
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
    struct tp_planner_action a;
    assert_int_equal(tp_planner_next(&c, rs, 2, 90000, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_LOCK); /* 90 s is not a multiple of 7 s */
    assert_int_equal(a.round_id, 2);
    rs[1].state = TP_ROUND_LIVE;
    assert_int_equal(tp_planner_next(&c, rs, 2, 90050, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_CLOSE); /* round 1 closes at 90 s too */
    rs[0].state = TP_ROUND_SETTLED;
    assert_int_equal(tp_planner_next(&c, rs, 2, 90100, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_OPEN);
    assert_int_equal(a.round_id, 3);
    assert_int_equal(a.opens_at, 91000); /* the next multiple of 7 s */
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
    assert_string_equal(tp_planner_op_name(TP_PLANNER_NONE), "none");
    assert_string_equal(tp_planner_op_name((enum tp_planner_op)42), "unknown");
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
    /* Round 2's lock is due: it locks without opening round 3 first. */
    assert_int_equal(tp_planner_next(&pc, rs, 2, 90000, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_LOCK);
    assert_int_equal(a.round_id, 2);
    rs[1].state = TP_ROUND_LIVE;
    assert_int_equal(tp_planner_next(&pc, rs, 2, 90000, 2, &a), 0);
    assert_int_equal(a.op, TP_PLANNER_CLOSE);
    assert_int_equal(a.round_id, 1);
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
    expect(rs, 2, 500001, 2, TP_PLANNER_OPEN, 3, 510000);
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
 * Every round opened must lock and close on time and end settled.
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
            if (a.op == TP_PLANNER_OPEN) {
                assert_int_equal(a.round_id, n + 1);
                assert_true(n < SIM_MAX);
                all[n] = (struct tp_planner_round){.id = a.round_id, .state = TP_ROUND_OPEN};
                assert_int_equal(tp_round_schedule(a.opens_at, bet, live, &all[n].t), 0);
                n++;
                synced = a.round_id;
                continue;
            }
            struct tp_planner_round *r = &all[a.round_id - 1];
            enum tp_round_event ev = TP_ROUND_EV_FINAL;
            if (a.op == TP_PLANNER_LOCK) {
                ev = TP_ROUND_EV_LOCK;
                locked_at[r->id - 1] = now;
            } else if (a.op == TP_PLANNER_CLOSE) {
                ev = TP_ROUND_EV_CLOSE;
                closed_at[r->id - 1] = now;
            } else if (a.op == TP_PLANNER_CANCEL) {
                fail_msg("round %lld cancelled at %lld", (long long)r->id, (long long)now);
            } else if (a.op == TP_PLANNER_RESYNC) {
                synced = r->id;
                continue;
            }
            int next = tp_round_next_state(r->state, ev);
            assert_true(next > 0);
            r->state = (enum tp_round_state)next;
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
        cmocka_unit_test(test_config_init),
        cmocka_unit_test(test_simulated_game),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
