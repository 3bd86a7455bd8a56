/*
 * Parimutuel settlement: the plan (refund, rake cap), payouts and breakage, receipts and their
 * checker (including tampered receipts), live multipliers, and a property test over thousands
 * of random pools: money is conserved and no winner gets back less than the stake.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/game/settle.h"

static void test_plan_refund(void **state)
{
    (void)state;
    struct tp_settle_plan p;
    /* W = 0: nobody backed the winner, everything back, no rake */
    assert_int_equal(tp_settle_plan(10000, 0, 300, &p), 0);
    assert_true(p.refund_all);
    assert_int_equal(p.rake, 0);
    assert_int_equal(p.pot, 10000);
    assert_int_equal(tp_settle_payout(2500, &p), 2500);
    assert_int_equal(tp_settle_payout(10000, &p), 10000);
    assert_int_equal(tp_settle_payout(10001, &p), TP_EINVAL);
    /* empty round */
    assert_int_equal(tp_settle_plan(0, 0, 300, &p), 0);
    assert_true(p.refund_all);
    assert_int_equal(p.pot, 0);

    struct tp_settle_receipt r;
    const int64_t none[1] = {0};
    assert_int_equal(tp_settle_compute(10000, 300, none, 0, NULL, &r), 0);
    assert_int_equal(r.total, 10000);
    assert_int_equal(r.winning_stake, 0);
    assert_int_equal(r.refunds, 10000);
    assert_int_equal(r.rake + r.breakage + r.payouts, 0);
    assert_true(tp_settle_receipt_ok(&r));
}

static void test_plan_all_on_winner(void **state)
{
    (void)state;
    struct tp_settle_plan p;
    /* W = T: the rake is capped at T - W = 0, every winner gets exactly the stake back */
    assert_int_equal(tp_settle_plan(10000, 10000, 300, &p), 0);
    assert_false(p.refund_all);
    assert_int_equal(p.rake, 0);
    assert_int_equal(p.pot, 10000);
    const int64_t stakes[] = {3333, 3333, 3334};
    int64_t pay[3];
    struct tp_settle_receipt r;
    assert_int_equal(tp_settle_compute(10000, 300, stakes, 3, pay, &r), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pay[i], stakes[i]);
    assert_int_equal(r.payouts, 10000);
    assert_int_equal(r.rake, 0);
    assert_int_equal(r.breakage, 0);
    assert_int_equal(r.refunds, 0);
    assert_true(tp_settle_receipt_ok(&r));
}

static void test_one_winner(void **state)
{
    (void)state;
    struct tp_settle_plan p;
    assert_int_equal(tp_settle_plan(10000, 1000, 300, &p), 0);
    assert_int_equal(p.rake, 300);
    assert_int_equal(p.pot, 9700);
    assert_int_equal(tp_settle_payout(1000, &p), 9700);
    const int64_t one[] = {1000};
    int64_t pay[1];
    struct tp_settle_receipt r;
    assert_int_equal(tp_settle_compute(10000, 300, one, 1, pay, &r), 0);
    assert_int_equal(pay[0], 9700);
    assert_int_equal(r.payouts, 9700);
    assert_int_equal(r.rake, 300);
    assert_int_equal(r.breakage, 0);
    assert_true(tp_settle_receipt_ok(&r));
    /* rake 0 */
    assert_int_equal(tp_settle_plan(10000, 1000, 0, &p), 0);
    assert_int_equal(tp_settle_payout(1000, &p), 10000);
}

static void test_rake_floor_and_cap(void **state)
{
    (void)state;
    struct tp_settle_plan p;
    /* floor(999 * 300 / 10000) = floor(29.97) = 29 */
    assert_int_equal(tp_settle_plan(999, 100, 300, &p), 0);
    assert_int_equal(p.rake, 29);
    /* floor rake 300 > T - W = 100: capped, so the winners only get their stakes back */
    assert_int_equal(tp_settle_plan(10000, 9900, 300, &p), 0);
    assert_int_equal(p.rake, 100);
    assert_int_equal(p.pot, 9900);
    assert_int_equal(tp_settle_payout(9900, &p), 9900);
    /* exactly at the cap */
    assert_int_equal(tp_settle_plan(10000, 9700, 300, &p), 0);
    assert_int_equal(p.rake, 300);
    assert_int_equal(tp_settle_plan(10000, 9701, 300, &p), 0);
    assert_int_equal(p.rake, 299);
    /* maximum rake of the contract (1000 bps) and of the function (10000 bps) */
    assert_int_equal(tp_settle_plan(10000, 1000, 1000, &p), 0);
    assert_int_equal(p.rake, 1000);
    assert_int_equal(tp_settle_plan(10000, 1000, 10000, &p), 0);
    assert_int_equal(p.rake, 9000); /* capped at T - W */
    assert_int_equal(p.pot, 1000);
    /* no overflow near INT64_MAX: T * r needs more than 64 bits */
    const int64_t T = INT64_MAX;
    assert_int_equal(tp_settle_plan(T, T / 2, 1000, &p), 0);
    assert_int_equal(p.rake, T / 10); /* floor(T * 1000 / 10000) */
    assert_int_equal(p.pot, T - T / 10);
    assert_int_equal(tp_settle_payout(T / 2, &p), p.pot);
    assert_int_equal(tp_settle_payout(1, &p), (int64_t)((__int128)p.pot / (T / 2)));
}

static void test_breakage(void **state)
{
    (void)state;
    /* T = 1000, rake 30, pot 970, three winners of 100: 323.33 each -> 323, breakage 1 */
    const int64_t w[] = {100, 100, 100};
    int64_t pay[7];
    struct tp_settle_receipt r;
    assert_int_equal(tp_settle_compute(1000, 300, w, 3, pay, &r), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pay[i], 323);
    assert_int_equal(r.winning_stake, 300);
    assert_int_equal(r.rake, 30);
    assert_int_equal(r.payouts, 969);
    assert_int_equal(r.breakage, 1);
    assert_int_equal(r.refunds, 0);
    assert_true(tp_settle_receipt_ok(&r));
    /* uneven stakes: 7 * 970 / 10 = 679 and 3 * 970 / 10 = 291 exactly, no breakage */
    const int64_t u[] = {7, 3};
    assert_int_equal(tp_settle_compute(1000, 300, u, 2, pay, &r), 0);
    assert_int_equal(pay[0], 679);
    assert_int_equal(pay[1], 291);
    assert_int_equal(r.breakage, 0);
    /* 1-unit stakes among many: the floor drops every fraction */
    const int64_t many[] = {1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(tp_settle_compute(1000, 300, many, 7, pay, &r), 0);
    for (int i = 0; i < 7; i++)
        assert_int_equal(pay[i], 138); /* 970 / 7 = 138.57 */
    assert_int_equal(r.breakage, 970 - 7 * 138);
    assert_true(tp_settle_receipt_ok(&r));
}

static void test_invalid(void **state)
{
    (void)state;
    struct tp_settle_plan p;
    assert_int_equal(tp_settle_plan(100, 101, 300, &p), TP_EINVAL);
    assert_int_equal(tp_settle_plan(-1, 0, 300, &p), TP_EINVAL);
    assert_int_equal(tp_settle_plan(100, -1, 300, &p), TP_EINVAL);
    assert_int_equal(tp_settle_plan(100, 50, -1, &p), TP_EINVAL);
    assert_int_equal(tp_settle_plan(100, 50, 10001, &p), TP_EINVAL);
    assert_int_equal(tp_settle_plan(100, 50, 300, NULL), TP_EINVAL);
    assert_int_equal(tp_settle_plan(100, 50, 300, &p), 0);
    assert_int_equal(tp_settle_payout(0, &p), TP_EINVAL);
    assert_int_equal(tp_settle_payout(-5, &p), TP_EINVAL);
    assert_int_equal(tp_settle_payout(51, &p), TP_EINVAL);
    assert_int_equal(tp_settle_payout(10, NULL), TP_EINVAL);

    struct tp_settle_receipt r;
    const int64_t zero[] = {100, 0};
    const int64_t neg[] = {100, -1};
    const int64_t big[] = {INT64_MAX, 1};
    const int64_t over[] = {60, 50};
    assert_int_equal(tp_settle_compute(1000, 300, zero, 2, NULL, &r), TP_EINVAL);
    assert_int_equal(tp_settle_compute(1000, 300, neg, 2, NULL, &r), TP_EINVAL);
    assert_int_equal(tp_settle_compute(INT64_MAX, 300, big, 2, NULL, &r), TP_EINVAL);
    assert_int_equal(tp_settle_compute(100, 300, over, 2, NULL, &r), TP_EINVAL); /* W > T */
    assert_int_equal(tp_settle_compute(1000, 300, NULL, 2, NULL, &r), TP_EINVAL);
    assert_int_equal(tp_settle_compute(1000, 20000, over, 2, NULL, &r), TP_EINVAL);
    assert_int_equal(tp_settle_compute(1000, 300, over, 2, NULL, NULL), TP_EINVAL);

    assert_int_equal(tp_settle_cancelled(-1, &r), TP_EINVAL);
    assert_int_equal(tp_settle_cancelled(5000, &r), 0);
    assert_int_equal(r.refunds, 5000);
    assert_int_equal(r.total, 5000);
    assert_true(tp_settle_receipt_ok(&r));
}

static void test_receipt_checker(void **state)
{
    (void)state;
    const int64_t w[] = {100, 100, 100};
    struct tp_settle_receipt ok, r;
    assert_int_equal(tp_settle_compute(1000, 300, w, 3, NULL, &ok), 0);
    assert_true(tp_settle_receipt_ok(&ok));
    assert_false(tp_settle_receipt_ok(NULL));
    r = ok, r.payouts++;
    assert_false(tp_settle_receipt_ok(&r)); /* money created */
    r = ok, r.breakage--;
    assert_false(tp_settle_receipt_ok(&r)); /* money lost */
    r = ok, r.rake += 1, r.breakage -= 1;
    assert_true(tp_settle_receipt_ok(&r)); /* still conserved, still within the cap */
    r = ok, r.rake = 701, r.payouts = 299, r.breakage = 0;
    assert_false(tp_settle_receipt_ok(&r)); /* rake over T - W, winners lose */
    r = ok, r.refunds = 1, r.breakage = 0;
    assert_false(tp_settle_receipt_ok(&r)); /* partial refund */
    r = ok, r.breakage = -1, r.payouts = 971;
    assert_false(tp_settle_receipt_ok(&r)); /* negative field */
    r = ok, r.winning_stake = 1001;
    assert_false(tp_settle_receipt_ok(&r));
    r = ok, r.total = INT64_MAX, r.payouts = INT64_MAX, r.rake = 1, r.breakage = 0;
    assert_false(tp_settle_receipt_ok(&r)); /* the sum must not wrap */
    r = (struct tp_settle_receipt){.total = 500, .refunds = 500};
    assert_true(tp_settle_receipt_ok(&r));
    r.rake = 1, r.refunds = 499;
    assert_false(tp_settle_receipt_ok(&r)); /* a refunding round takes no rake */
}

static void test_multiplier(void **state)
{
    (void)state;
    double m = 0;
    assert_false(tp_settle_multiplier(10000, 0, 300, &m));
    assert_true(isnan(m));
    assert_true(tp_settle_multiplier(10000, 1000, 300, &m));
    assert_true(fabs(m - 9.7) < 1e-12);
    assert_true(tp_settle_multiplier(10000, 9000, 300, &m)); /* rake 300 <= T - W = 1000 */
    assert_true(fabs(m - 9700.0 / 9000.0) < 1e-12);
    assert_true(tp_settle_multiplier(10000, 9900, 300, &m)); /* capped: winners break even */
    assert_true(fabs(m - 1.0) < 1e-12);
    assert_true(tp_settle_multiplier(500, 500, 300, &m));
    assert_true(fabs(m - 1.0) < 1e-12);
    assert_false(tp_settle_multiplier(100, 200, 300, &m));
    assert_false(tp_settle_multiplier(100, -1, 300, &m));

    const int64_t pools[5] = {0, 1000, 5000, 4000, 0};
    double out[5];
    assert_int_equal(tp_settle_multipliers(pools, 5, 300, out), 0);
    assert_true(isnan(out[0]) && isnan(out[4]));
    assert_true(fabs(out[1] - 9.7) < 1e-12);
    assert_true(fabs(out[2] - 9700.0 / 5000) < 1e-12);
    assert_true(fabs(out[3] - 9700.0 / 4000) < 1e-12);
    const int64_t bad[2] = {5, -5};
    const int64_t ovf[2] = {INT64_MAX, 1};
    assert_int_equal(tp_settle_multipliers(bad, 2, 300, out), TP_EINVAL);
    assert_int_equal(tp_settle_multipliers(ovf, 2, 300, out), TP_EINVAL);
    assert_int_equal(tp_settle_multipliers(pools, 5, 10001, out), TP_EINVAL);
    assert_int_equal(tp_settle_multipliers(NULL, 0, 300, NULL), 0);
}

/* xorshift64*: fixed-seed PRNG, so a failure reproduces */
static uint64_t rng_state = UINT64_C(0x2545f4914f6cdd1d);
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static int64_t rnd_stake(int mode)
{
    switch (mode) {
    case 0:
        return 100 + (int64_t)(rnd() % 99901); /* contract bounds [100, 100000] */
    case 1:
        return 1 + (int64_t)(rnd() % 7); /* tiny: maximal breakage */
    default:
        return 1 + (int64_t)(rnd() % INT64_C(1000000000000)); /* huge */
    }
}

/*
 * Thousands of random rounds: random band count, bets, stakes (normal, tiny, huge), rake and
 * winning band. For each: the receipt passes the checker, the per-bet payouts sum to it, no
 * winner gets less than the stake, breakage < number of winners, and what every bettor gets
 * back plus rake plus breakage is exactly T.
 */
static void test_property_random_pools(void **state)
{
    (void)state;
    enum { ROUNDS = 20000, MAX_BETS = 300 };
    static int64_t stake[MAX_BETS], win[MAX_BETS], pay[MAX_BETS];
    static int band[MAX_BETS];
    static const int rakes[] = {0, 1, 250, 300, 999, 1000, 10000};
    long refunds_seen = 0, capped_seen = 0, breakage_seen = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int n_bands = 2 + (int)(rnd() % 5);
        int n_bets = (int)(rnd() % MAX_BETS) + (round % 10 == 0 ? 0 : 1);
        int mode = (int)(rnd() % 3);
        int rake_bps = rakes[rnd() % TP_ARRAY_LEN(rakes)];
        int winner = (int)(rnd() % (uint64_t)n_bands);
        int64_t total = 0, w = 0;
        int n_win = 0;
        for (int i = 0; i < n_bets; i++) {
            stake[i] = rnd_stake(mode);
            /* skew bets so that the winner sometimes holds all, most or none of the pool */
            band[i] = (round % 7 == 0) ? winner : (int)(rnd() % (uint64_t)n_bands);
            total += stake[i];
            if (band[i] == winner) {
                win[n_win++] = stake[i];
                w += stake[i];
            }
        }
        struct tp_settle_receipt r;
        assert_int_equal(tp_settle_compute(total, rake_bps, win, (size_t)n_win, pay, &r), 0);
        assert_true(tp_settle_receipt_ok(&r));
        assert_int_equal(r.total, total);
        assert_int_equal(r.winning_stake, w);
        __int128 back = 0;
        if (w == 0) {
            refunds_seen++;
            assert_int_equal(r.refunds, total);
            back = total; /* every bet refunded */
        } else {
            int64_t sum = 0;
            for (int i = 0; i < n_win; i++) {
                assert_true(pay[i] >= win[i]);
                sum += pay[i];
            }
            assert_int_equal(sum, r.payouts);
            assert_true(r.breakage < n_win);
            int64_t floor_rake = (int64_t)((__int128)total * rake_bps / 10000);
            assert_int_equal(r.rake, TP_MIN(floor_rake, total - w));
            if (r.rake < floor_rake)
                capped_seen++;
            if (r.breakage > 0)
                breakage_seen++;
            back = sum;
        }
        assert_true(back + r.rake + r.breakage == total);
    }
    printf("# %d rounds: %ld refunded, %ld rake-capped, %ld with breakage\n", ROUNDS, refunds_seen,
           capped_seen, breakage_seen);
    /* the generator really reached every branch */
    assert_true(refunds_seen > 100 && capped_seen > 100 && breakage_seen > 1000);
}

/* Page sizes follow the measured Redis time toward the script's aim (1333 µs: a hold of
 * 1600 µs less the ~20 % after the script), by at most x2 per page, from the window's median
 * page: a page slowed by preemption does not shrink the next ones. */
static void test_pager(void **state)
{
    (void)state;
    assert_int_equal(TP_SETTLE_PAGE_SCRIPT_US, 1333);
    struct tp_settle_pager p = {0};
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
    /* 3 µs per bet, no fixed part known: 444 fit 1333 µs; reached by doubling from 64 */
    assert_int_equal(tp_settle_pager_page(&p, 64, 192, 0, 0), 128);
    assert_int_equal(tp_settle_pager_page(&p, 128, 384, 0, 0), 256);
    assert_int_equal(tp_settle_pager_page(&p, 256, 768, 0, 0), 444);
    assert_int_equal(tp_settle_pager_page(&p, 444, 1332, 0, 0), 444);
    /* a page that lost the CPU for 40 ms: nothing changes */
    assert_int_equal(tp_settle_pager_page(&p, 444, 41500, 0, 0), 444);
    assert_int_equal(tp_settle_pager_page(&p, 444, 1332, 0, 0), 444);
    /* too few bets to tell (a band's tail) */
    assert_int_equal(tp_settle_pager_page(&p, 10, 900, 0, 0), 444);
    assert_int_equal(tp_settle_pager_page(&p, 300, 0, 0, 0), 444);
    /* a real rise in cost (10 µs per bet) shows once half the window has it, and then halves
     * the size per page down to what fits: the window holds 6 pages here, the slow one on the
     * dear side, so the 4th dear page halves the size and the 5th reaches 133 */
    int size = 444, steps = 0;
    while (size > 133 && steps++ < 100)
        size = tp_settle_pager_page(&p, size, (int64_t)size * 10, 0, 0);
    assert_int_equal(size, 133);
    assert_int_equal(steps, 5);
    /* cheaper again: at most doubling per page, up to the bound */
    struct tp_settle_pager q = {0};
    for (int want = 128; want <= TP_SETTLE_PAGE_MAX; want *= 2)
        assert_int_equal(tp_settle_pager_page(&q, want / 2, want / 8, 0, 0), want);
    assert_int_equal(tp_settle_pager_page(&q, 4096, 1024, 0, 0), TP_SETTLE_PAGE_MAX);
    /* very expensive bets: down to the lower bound, never below */
    struct tp_settle_pager r = {0};
    for (int i = 0; i < 10; i++)
        size = tp_settle_pager_page(&r, tp_settle_pager_size(&r), 100000, 0, 0);
    assert_int_equal(size, TP_SETTLE_PAGE_MIN);
}

/* A page's fixed part (its players' writes) is not priced as a cost per bet: the bets get the
 * aim less the fixed part, and at least half the aim, whatever the fixed part or the
 * preemption. Priced per bet, a fixed part near the aim drove the size down page after page
 * (session 11's spiral to 135-bet pages). */
static void test_pager_fixed(void **state)
{
    (void)state;
    /* 400 µs fixed + 2 µs per bet (the players' writes counted whole: players far fewer than
     * bets, 0 here for round figures): (1333 - 400) / 2 = 466 bets, reached by doubling */
    struct tp_settle_pager p = {0};
    int want[] = {128, 256, 466, 466, 466};
    int size = tp_settle_pager_size(&p);
    for (int i = 0; i < 5; i++) {
        size = tp_settle_pager_page(&p, size, 400 + 2 * (int64_t)size, 400, 0);
        assert_int_equal(size, want[i]);
    }
    /* 1000 µs fixed (most of the aim) + 2 µs per bet: half the aim to bets, 333, and it stays
     * there over pages that lost the CPU (every third page, 2-3x its time) */
    struct tp_settle_pager q = {0};
    size = tp_settle_pager_size(&q);
    for (int i = 0; i < 200; i++) {
        int64_t slow = i % 3 == 2 ? 2 + i % 2 : 1;
        size = tp_settle_pager_page(&q, size, slow * (1000 + 2 * (int64_t)size), slow * 1000, 0);
        if (i >= 3)
            assert_int_equal(size, 333);
    }
    /* the same pages priced as one cost per bet (no fixed part reported) end far smaller */
    struct tp_settle_pager old = {0};
    size = tp_settle_pager_size(&old);
    for (int i = 0; i < 200; i++)
        size = tp_settle_pager_page(&old, size, 1000 + 2 * (int64_t)size, 0, 0);
    assert_true(size < 200);
    /* players' writes of a page whose bets are each a player's are a cost per bet: 800 µs of
     * 1200 for 400 bets of 400 players is 3 µs per bet, 444 bets; of 100 players, 600 µs fixed
     * and 1.5 µs per bet, (1333 - 600) / 1.5 = 488 */
    struct tp_settle_pager c = {.size = 400};
    assert_int_equal(tp_settle_pager_page(&c, 400, 1200, 800, 400), 444);
    struct tp_settle_pager d = {.size = 400};
    assert_int_equal(tp_settle_pager_page(&d, 400, 1200, 800, 100), 488);
    /* a players' part longer than the page is capped at it, a count of players at the bets */
    struct tp_settle_pager e = {.size = 400};
    assert_int_equal(tp_settle_pager_page(&e, 400, 1200, 1500, 500), 444);
}

/* The typical page fits the aim (session 13). Sized on the lowest fixed part and the lowest cost
 * per bet of the window, taken apart (session 12), pages of two shapes made a page dearer than
 * either, and sized on the cheapest page the typical one ran over the aim: session 12's scripts
 * ran 1.25-1.30x their aim at p50, holding Redis ~2 ms where 1.6 was meant. Now each page of the
 * window gives the size that fits it, both parts its own, and the next page takes the median. */
struct page_shape {
    int64_t fixed_us, ns_per_bet;
};

/* A page of `bets` bets of `shape` slowed to `pct` % (the host, the caches, a sibling core). */
static int64_t shape_us(struct page_shape shape, int pct, int64_t bets)
{
    return (shape.fixed_us + shape.ns_per_bet * bets / 1000) * pct / 100;
}

static void test_pager_typical(void **state)
{
    (void)state;
    /* Two shapes in turn, each fitting the aim near 310 bets: 100 µs fixed + 4 µs a bet (308),
     * 700 µs fixed + 2 µs a bet (316). The lowest parts apart, 100 µs + 2 µs a bet, gave 616
     * bets, ~2,000-2,600 µs for either shape. */
    struct page_shape two[] = {{100, 4000}, {700, 2000}};
    struct tp_settle_pager p = {0};
    int size = tp_settle_pager_size(&p);
    for (int i = 0; i < 40; i++) {
        int64_t us = shape_us(two[i % 2], 100, size);
        size = tp_settle_pager_page(&p, size, us, two[i % 2].fixed_us, 0);
    }
    assert_int_equal(size, 308);
    for (int k = 0; k < 2; k++)
        assert_true(shape_us(two[k], 100, size) <= TP_SETTLE_PAGE_SCRIPT_US);
    /* One shape (300 µs fixed + 3 µs a bet) at 100, 125 and 150 % in turn: the 125 % page, the
     * median, fits the aim (255 bets, 1,331 µs), so a third of the pages run over it, not two
     * thirds (sized on the 100 % page, 344 bets: the 125 % page 1,665 µs) */
    struct page_shape one = {300, 3000};
    int pct[] = {100, 125, 150};
    struct tp_settle_pager q = {0};
    size = tp_settle_pager_size(&q);
    int over = 0, seen = 0;
    for (int i = 0; i < 60; i++) {
        int64_t us = shape_us(one, pct[i % 3], size);
        if (i >= 30) {
            seen++;
            over += us > TP_SETTLE_PAGE_SCRIPT_US;
        }
        size = tp_settle_pager_page(&q, size, us, one.fixed_us * pct[i % 3] / 100, 0);
    }
    assert_int_equal(size, 255);
    assert_int_equal(over * 3, seen);
    int64_t typical = shape_us(one, 125, size);
    assert_true(typical <= TP_SETTLE_PAGE_SCRIPT_US &&
                typical * 10 >= TP_SETTLE_PAGE_SCRIPT_US * 9);
}

/* A bucket's first page of a settlement is small (its keys are new, its bets dear); the pager
 * then grows it by at most doubling per page back to what its window says. */
static void test_pager_cold(void **state)
{
    (void)state;
    struct tp_settle_pager p = {0};
    tp_settle_pager_cold(&p);
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
    int size = tp_settle_pager_size(&p);
    for (int i = 0; i < 6; i++)
        size = tp_settle_pager_page(&p, size, 400 + 2 * (int64_t)size, 400, 0);
    assert_int_equal(size, 466);
    tp_settle_pager_cold(&p);
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
    assert_int_equal(tp_settle_pager_page(&p, 64, 528, 400, 0), 128);
    assert_int_equal(tp_settle_pager_page(&p, 128, 656, 400, 0), 256);
    assert_int_equal(tp_settle_pager_page(&p, 256, 912, 400, 0), 466);
    /* a size already below the start stays */
    struct tp_settle_pager q = {0};
    for (int i = 0; i < 10; i++)
        tp_settle_pager_page(&q, tp_settle_pager_size(&q), 100000, 0, 0);
    tp_settle_pager_cold(&q);
    assert_int_equal(tp_settle_pager_size(&q), TP_SETTLE_PAGE_MIN);
}

/* Where a settlement's pages start: cold for a bucket's first page (its plan just written) and
 * for another round; a later step of the same round keeps what the pager learned. */
static void test_pager_start(void **state)
{
    (void)state;
    struct tp_settle_pager p = {0};
    tp_settle_pager_start(&p, 7, false); /* a new leader resuming round 7 */
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
    int size = tp_settle_pager_size(&p);
    for (int i = 0; i < 6; i++)
        size = tp_settle_pager_page(&p, size, 400 + 2 * (int64_t)size, 400, 0);
    assert_int_equal(size, 466);
    tp_settle_pager_catchup(&p, true);
    tp_settle_pager_start(&p, 7, false); /* the next step, same round */
    assert_int_equal(tp_settle_pager_size(&p), 466);
    assert_true(p.catchup);
    tp_settle_pager_start(&p, 7, true); /* the round's next bucket, its plan new */
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
    assert_false(p.catchup);
    for (int i = 0; i < 6; i++)
        size = tp_settle_pager_page(&p, tp_settle_pager_size(&p), 1332, 400, 0);
    assert_true(tp_settle_pager_size(&p) > TP_SETTLE_PAGE_START);
    tp_settle_pager_start(&p, 8, false); /* another round */
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
    for (int i = 0; i < 6; i++)
        tp_settle_pager_page(&p, tp_settle_pager_size(&p), 1332, 400, 0);
    tp_settle_pager_forget(&p); /* a failed step, a lost lease */
    tp_settle_pager_start(&p, 8, false);
    assert_int_equal(tp_settle_pager_size(&p), TP_SETTLE_PAGE_START);
}

/* Pacing: a gap of the page's time (capped) only while the amount paid keeps ahead of a line
 * from the close to TP_SETTLE_PACE_MS after it. */
static void test_pace_gap(void **state)
{
    (void)state;
    /* On the line or ahead: one page's time. */
    assert_int_equal(tp_settle_pace_gap(1000, 1000, 0, 500, 1400), 1400);
    int64_t half = 1000 + TP_SETTLE_PACE_MS / 2;
    assert_int_equal(tp_settle_pace_gap(1000, half, 250, 500, 1400), 1400);
    assert_int_equal(tp_settle_pace_gap(1000, 1100, 499, 500, 1400), 1400);
    /* Behind it: none. */
    assert_int_equal(tp_settle_pace_gap(1000, half, 249, 500, 1400), 0);
    assert_int_equal(tp_settle_pace_gap(1000, 1001, 0, 500, 1400), 0);
    /* Capped: a page that lost the CPU says nothing of its work. */
    assert_int_equal(tp_settle_pace_gap(1000, 1100, 400, 500, 25000), TP_SETTLE_PACE_GAP_MAX_US);
    /* The span over (a settlement resumed late, a backlog): back to back whatever is paid. */
    assert_int_equal(tp_settle_pace_gap(1000, 1000 + TP_SETTLE_PACE_MS, 499, 500, 1400), 0);
    assert_int_equal(tp_settle_pace_gap(1000, 90000, 499, 500, 1400), 0);
    /* A clock behind the close counts as the close. */
    assert_int_equal(tp_settle_pace_gap(1000, 900, 0, 500, 1400), 1400);
    /* Nothing owed, no time, nonsense: none. */
    assert_int_equal(tp_settle_pace_gap(1000, 1100, 0, 0, 1400), 0);
    assert_int_equal(tp_settle_pace_gap(1000, 1100, 400, 500, 0), 0);
    assert_int_equal(tp_settle_pace_gap(1000, 1100, -1, 500, 1400), 0);
    /* Amounts near INT64_MAX do not overflow the comparison. */
    assert_int_equal(
        tp_settle_pace_gap(0, TP_SETTLE_PACE_MS / 2, INT64_MAX / 2, INT64_MAX - 1, 1000), 1000);
    assert_int_equal(
        tp_settle_pace_gap(0, TP_SETTLE_PACE_MS / 2, INT64_MAX / 2 - 1, INT64_MAX - 1, 1000), 0);
}

/* The wait before the next page: the pacing gap while ahead of the line, and behind it at least
 * TP_SETTLE_PAGE_GAP_MIN_US, long enough for the bets' calls answered in a page's turn to reach
 * Redis before the next page (a woken worker's flush: a few hundred µs on a busy 2-core host);
 * while catching up, back to back. */
static void test_page_wait(void **state)
{
    (void)state;
    assert_true(TP_SETTLE_PAGE_GAP_MIN_US >= 100 && TP_SETTLE_PAGE_GAP_MIN_US <= 1000);
    /* Behind the line, not catching up: the short gap, where pages went back to back. */
    assert_int_equal(tp_settle_page_wait(0, false), TP_SETTLE_PAGE_GAP_MIN_US);
    /* Ahead: the pacing gap, at least the short one. */
    assert_int_equal(tp_settle_page_wait(1400, false), 1400);
    assert_int_equal(tp_settle_page_wait(TP_SETTLE_PACE_GAP_MAX_US, false),
                     TP_SETTLE_PACE_GAP_MAX_US);
    assert_int_equal(tp_settle_page_wait(TP_SETTLE_PAGE_GAP_MIN_US / 2, false),
                     TP_SETTLE_PAGE_GAP_MIN_US);
    /* Catching up: back to back (the pacing gap is 0 behind the line). */
    assert_int_equal(tp_settle_page_wait(0, true), 0);
    /* Nonsense: as 0. */
    assert_int_equal(tp_settle_page_wait(-5, false), TP_SETTLE_PAGE_GAP_MIN_US);
    assert_int_equal(tp_settle_page_wait(-5, true), 0);
    /* The leader's path: behind the line by less than TP_SETTLE_CATCHUP_MS, no pacing gap, the
     * short one; more than that behind, none. */
    int64_t at = 1000 + TP_SETTLE_PACE_MS / 2;
    int64_t pace = tp_settle_pace_gap(1000, at, 240, 500, 1400);
    assert_int_equal(pace, 0);
    assert_false(tp_settle_behind(1000, at, 240, 500));
    assert_int_equal(tp_settle_page_wait(pace, tp_settle_behind(1000, at, 240, 500)),
                     TP_SETTLE_PAGE_GAP_MIN_US);
    assert_true(tp_settle_behind(1000, at, 100, 500));
    assert_int_equal(tp_settle_page_wait(tp_settle_pace_gap(1000, at, 100, 500, 1400),
                                         tp_settle_behind(1000, at, 100, 500)),
                     0);
    /* Late (behind the late line, not the catch-up's): back to back too, no floor. 1.2 s after
     * the close, the pacing line's share of 1.1 s paid. */
    at = 1000 + 1200;
    int64_t paid = 1100 * 500 / TP_SETTLE_PACE_MS + 1;
    assert_false(tp_settle_behind(1000, at, paid, 500));
    assert_true(tp_settle_late(1000, at, paid, 500));
    assert_int_equal(tp_settle_page_wait(tp_settle_pace_gap(1000, at, paid, 500, 1400),
                                         tp_settle_late(1000, at, paid, 500)),
                     0);
}

/* Catching up: a settlement more than TP_SETTLE_CATCHUP_MS behind the pacing line, or not done
 * once its span is over. */
static void test_behind(void **state)
{
    (void)state;
    /* The first TP_SETTLE_CATCHUP_MS owe nothing yet. */
    assert_false(tp_settle_behind(1000, 1000, 0, 1000));
    assert_false(tp_settle_behind(1000, 1000 + TP_SETTLE_CATCHUP_MS, 0, 1000));
    /* Then the line TP_SETTLE_CATCHUP_MS ago: 100 ms later a tenth of the span's share. */
    int64_t at = 1000 + TP_SETTLE_CATCHUP_MS + TP_SETTLE_PACE_MS / 10;
    assert_true(tp_settle_behind(1000, at, 99, 1000));
    assert_false(tp_settle_behind(1000, at, 100, 1000));
    /* Past the span: behind until all is paid. */
    assert_true(tp_settle_behind(1000, 1000 + TP_SETTLE_CATCHUP_MS + TP_SETTLE_PACE_MS, 999, 1000));
    assert_true(tp_settle_behind(1000, 90000, 999, 1000));
    assert_false(tp_settle_behind(1000, 90000, 1000, 1000));
    /* A clock behind the close, nothing owed, nonsense: not behind. */
    assert_false(tp_settle_behind(1000, 900, 0, 1000));
    assert_false(tp_settle_behind(1000, 90000, 0, 0));
    assert_false(tp_settle_behind(1000, 90000, -1, 1000));
    /* Amounts near INT64_MAX do not overflow the comparison. */
    at = TP_SETTLE_CATCHUP_MS + TP_SETTLE_PACE_MS / 2;
    assert_false(tp_settle_behind(0, at, INT64_MAX / 2, INT64_MAX - 1));
    assert_true(tp_settle_behind(0, at, INT64_MAX / 2 - 1, INT64_MAX - 1));
}

/* Late: behind a line from TP_SETTLE_CATCHUP_MS after the close to the pacing line's end (the
 * lag allowed shrinks to none there), or not done once the pacing line's span is over. */
static void test_late(void **state)
{
    (void)state;
    int64_t span = TP_SETTLE_PACE_MS - TP_SETTLE_CATCHUP_MS;
    /* The first TP_SETTLE_CATCHUP_MS owe nothing yet. */
    assert_false(tp_settle_late(1000, 1000, 0, 1000));
    assert_false(tp_settle_late(1000, 1000 + TP_SETTLE_CATCHUP_MS, 0, 1000));
    /* Then the late line: a tenth of its span later, a tenth of the amount. */
    int64_t at = 1000 + TP_SETTLE_CATCHUP_MS + span / 10;
    assert_true(tp_settle_late(1000, at, 99, 1000));
    assert_false(tp_settle_late(1000, at, 100, 1000));
    /* 1.2 s after the close with the pacing line's share of 1.1 s paid: late, not behind (the
     * catch-up allows TP_SETTLE_CATCHUP_MS of lag to the end, and a settlement that held it
     * ended TP_SETTLE_CATCHUP_MS after the line). */
    at = 1000 + 1200;
    int64_t lag100 = 1100 * 1000 / TP_SETTLE_PACE_MS + 1;
    assert_true(tp_settle_late(1000, at, lag100, 1000));
    assert_false(tp_settle_behind(1000, at, lag100, 1000));
    int64_t owed_now = (1200 - TP_SETTLE_CATCHUP_MS) * 1000 / span; /* rounded down */
    assert_true(tp_settle_late(1000, at, owed_now, 1000));
    assert_false(tp_settle_late(1000, at, owed_now + 1, 1000));
    /* At the pacing line's end and past it: late until all is paid. */
    assert_false(tp_settle_late(1000, 1000 + TP_SETTLE_PACE_MS - span / 100, 990, 1000));
    assert_true(tp_settle_late(1000, 1000 + TP_SETTLE_PACE_MS - span / 100, 989, 1000));
    assert_true(tp_settle_late(1000, 1000 + TP_SETTLE_PACE_MS, 999, 1000));
    assert_false(tp_settle_late(1000, 1000 + TP_SETTLE_PACE_MS, 1000, 1000));
    assert_true(tp_settle_late(1000, 90000, 999, 1000));
    assert_false(tp_settle_late(1000, 90000, 1000, 1000));
    /* Behind (catching up) is late too, everywhere: the late line is never below the catch-up
     * one. */
    for (int64_t t = 0; t <= TP_SETTLE_PACE_MS + 2 * TP_SETTLE_CATCHUP_MS; t += 7)
        for (int64_t paid = 0; paid <= 1000; paid += 13)
            if (tp_settle_behind(0, t, paid, 1000))
                assert_true(tp_settle_late(0, t, paid, 1000));
    /* A clock behind the close, nothing owed, nonsense: not late. */
    assert_false(tp_settle_late(1000, 900, 0, 1000));
    assert_false(tp_settle_late(1000, 90000, 0, 0));
    assert_false(tp_settle_late(1000, 90000, -1, 1000));
    /* Amounts near INT64_MAX do not overflow the comparison. */
    at = TP_SETTLE_CATCHUP_MS + span / 2;
    assert_false(tp_settle_late(0, at, INT64_MAX / 2, INT64_MAX - 1));
    assert_true(tp_settle_late(0, at, INT64_MAX / 2 - 1, INT64_MAX - 1));
}

/* Catching up, pages are aimed TP_SETTLE_CATCHUP_X times higher and the scan budget with them:
 * on a host that runs a page twice as slow (its fixed part and its cost per bet), the page keeps
 * the size it has on a quiet host at the usual aim, where sized at that aim it would halve and
 * pay its fixed part twice as often. */
static void test_pager_catchup(void **state)
{
    (void)state;
    struct page_shape quiet = {300, 4000}, busy = {600, 8000};
    struct tp_settle_pager p = {0};
    int size = tp_settle_pager_size(&p);
    for (int i = 0; i < 20; i++)
        size = tp_settle_pager_page(&p, size, shape_us(quiet, 100, size), quiet.fixed_us, 0);
    assert_int_equal(size, 258);
    assert_int_equal(tp_settle_pager_scan_us(&p), TP_SETTLE_PAGE_SCAN_US);
    struct tp_settle_pager q = {0};
    size = tp_settle_pager_size(&q);
    for (int i = 0; i < 20; i++)
        size = tp_settle_pager_page(&q, size, shape_us(busy, 100, size), busy.fixed_us, 0);
    assert_int_equal(size, 91);
    tp_settle_pager_catchup(&q, true);
    assert_int_equal(tp_settle_pager_scan_us(&q), TP_SETTLE_CATCHUP_X * TP_SETTLE_PAGE_SCAN_US);
    for (int i = 0; i < 20; i++)
        size = tp_settle_pager_page(&q, size, shape_us(busy, 100, size), busy.fixed_us, 0);
    assert_int_equal(size, 258);
    /* Back on the line, the usual aim again (at most halved per page). */
    tp_settle_pager_catchup(&q, false);
    assert_int_equal(tp_settle_pager_scan_us(&q), TP_SETTLE_PAGE_SCAN_US);
    size = tp_settle_pager_page(&q, size, shape_us(busy, 100, size), busy.fixed_us, 0);
    assert_int_equal(size, 129);
    size = tp_settle_pager_page(&q, size, shape_us(busy, 100, size), busy.fixed_us, 0);
    assert_int_equal(size, 91);
    /* A bucket's first page is not caught up: the next plan's pages start at the usual aim. */
    tp_settle_pager_catchup(&q, true);
    tp_settle_pager_cold(&q);
    assert_int_equal(tp_settle_pager_scan_us(&q), TP_SETTLE_PAGE_SCAN_US);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_refund),
        cmocka_unit_test(test_plan_all_on_winner),
        cmocka_unit_test(test_one_winner),
        cmocka_unit_test(test_rake_floor_and_cap),
        cmocka_unit_test(test_breakage),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_receipt_checker),
        cmocka_unit_test(test_multiplier),
        cmocka_unit_test(test_property_random_pools),
        cmocka_unit_test(test_pager),
        cmocka_unit_test(test_pager_fixed),
        cmocka_unit_test(test_pager_typical),
        cmocka_unit_test(test_pager_cold),
        cmocka_unit_test(test_pager_start),
        cmocka_unit_test(test_pace_gap),
        cmocka_unit_test(test_page_wait),
        cmocka_unit_test(test_behind),
        cmocka_unit_test(test_late),
        cmocka_unit_test(test_pager_catchup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
