/*
 * Round rules: the state machine (every state x event pair), names, the public state, band
 * assignment at and around every edge (exact arithmetic, huge and tiny prices, negative edges),
 * descriptors, the aligned schedule and due events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/game/round.h"

static const int def_edges[] = {-10, -3, 3, 10};

static void test_state_names(void **state)
{
    (void)state;
    static const char *names[] = {"open", "live", "settling", "settled", "cancelling", "cancelled"};
    for (int i = 0; i < 6; i++) {
        enum tp_round_state s = TP_ROUND_NONE;
        assert_int_equal(tp_round_state_parse(names[i], strlen(names[i]), &s), 0);
        assert_int_equal(s, TP_ROUND_OPEN + i);
        assert_string_equal(tp_round_state_name(s), names[i]);
    }
    assert_string_equal(tp_round_state_name(TP_ROUND_NONE), "none");
    assert_string_equal(tp_round_state_name((enum tp_round_state)42), "unknown");
    assert_string_equal(tp_round_state_name((enum tp_round_state) - 1), "unknown");
    static const char *bad[] = {"none", "Open", "OPEN", "ope", "opened", "", "live ", "settle"};
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        enum tp_round_state s = TP_ROUND_LIVE;
        assert_int_equal(tp_round_state_parse(bad[i], strlen(bad[i]), &s), TP_EINVAL);
        assert_int_equal(s, TP_ROUND_LIVE); /* untouched */
    }
    /* length-delimited: a prefix of a longer buffer */
    enum tp_round_state s;
    assert_int_equal(tp_round_state_parse("liveXYZ", 4, &s), 0);
    assert_int_equal(s, TP_ROUND_LIVE);
    assert_int_equal(tp_round_state_parse(NULL, 0, &s), TP_EINVAL);
    assert_string_equal(tp_round_event_name(TP_ROUND_EV_LOCK), "lock");
    assert_string_equal(tp_round_event_name(TP_ROUND_EV_FINAL), "final");
    assert_string_equal(tp_round_event_name((enum tp_round_event)9), "unknown");
}

static void test_transitions(void **state)
{
    (void)state;
    /* expected[state][event]; -1 = refused */
    static const int expected[7][5] = {
        [TP_ROUND_NONE] = {TP_ROUND_OPEN, -1, -1, -1, -1},
        [TP_ROUND_OPEN] = {-1, TP_ROUND_LIVE, -1, TP_ROUND_CANCELLING, -1},
        [TP_ROUND_LIVE] = {-1, -1, TP_ROUND_SETTLING, TP_ROUND_CANCELLING, -1},
        [TP_ROUND_SETTLING] = {-1, -1, -1, -1, TP_ROUND_SETTLED},
        [TP_ROUND_SETTLED] = {-1, -1, -1, -1, -1},
        [TP_ROUND_CANCELLING] = {-1, -1, -1, -1, TP_ROUND_CANCELLED},
        [TP_ROUND_CANCELLED] = {-1, -1, -1, -1, -1},
    };
    for (int s = TP_ROUND_NONE; s <= TP_ROUND_CANCELLED; s++) {
        for (int ev = TP_ROUND_EV_OPEN; ev <= TP_ROUND_EV_FINAL; ev++) {
            int got = tp_round_next_state((enum tp_round_state)s, (enum tp_round_event)ev);
            if (expected[s][ev] < 0)
                assert_int_equal(got, TP_ECONFLICT);
            else
                assert_int_equal(got, expected[s][ev]);
        }
    }
    /* the named illegal moves */
    assert_int_equal(tp_round_next_state(TP_ROUND_SETTLED, TP_ROUND_EV_LOCK), TP_ECONFLICT);
    assert_int_equal(tp_round_next_state(TP_ROUND_SETTLED, TP_ROUND_EV_CANCEL), TP_ECONFLICT);
    assert_int_equal(tp_round_next_state(TP_ROUND_CANCELLED, TP_ROUND_EV_OPEN), TP_ECONFLICT);
    assert_int_equal(tp_round_next_state(TP_ROUND_OPEN, TP_ROUND_EV_CLOSE), TP_ECONFLICT);
    assert_int_equal(tp_round_next_state(TP_ROUND_LIVE, TP_ROUND_EV_LOCK), TP_ECONFLICT);
    assert_int_equal(tp_round_next_state(TP_ROUND_SETTLING, TP_ROUND_EV_CANCEL), TP_ECONFLICT);
    assert_int_equal(tp_round_next_state(TP_ROUND_LIVE, TP_ROUND_EV_FINAL), TP_ECONFLICT);
    /* garbage values */
    assert_int_equal(tp_round_next_state((enum tp_round_state)7, TP_ROUND_EV_LOCK), TP_EINVAL);
    assert_int_equal(tp_round_next_state((enum tp_round_state) - 1, TP_ROUND_EV_LOCK), TP_EINVAL);
    assert_int_equal(tp_round_next_state(TP_ROUND_OPEN, (enum tp_round_event)5), TP_EINVAL);
    assert_int_equal(tp_round_next_state(TP_ROUND_OPEN, (enum tp_round_event) - 1), TP_EINVAL);
    /* a whole life */
    int s = TP_ROUND_NONE;
    s = tp_round_next_state(s, TP_ROUND_EV_OPEN);
    s = tp_round_next_state(s, TP_ROUND_EV_LOCK);
    s = tp_round_next_state(s, TP_ROUND_EV_CLOSE);
    assert_int_equal(s, TP_ROUND_SETTLING);
    s = tp_round_next_state(s, TP_ROUND_EV_FINAL);
    assert_int_equal(s, TP_ROUND_SETTLED);
    s = tp_round_next_state(TP_ROUND_OPEN, TP_ROUND_EV_CANCEL);
    assert_int_equal(tp_round_next_state(s, TP_ROUND_EV_FINAL), TP_ROUND_CANCELLED);
    assert_true(tp_round_is_final(TP_ROUND_SETTLED));
    assert_true(tp_round_is_final(TP_ROUND_CANCELLED));
    assert_false(tp_round_is_final(TP_ROUND_OPEN));
    assert_false(tp_round_is_final(TP_ROUND_LIVE));
    assert_false(tp_round_is_final(TP_ROUND_NONE));
    assert_false(tp_round_is_final(TP_ROUND_SETTLING));
    assert_false(tp_round_is_final(TP_ROUND_CANCELLING));
}

/* Clients never see the two in-progress states (docs/http-api.md, Round). */
static void test_public_state(void **state)
{
    (void)state;
    assert_int_equal(tp_round_state_public(TP_ROUND_SETTLING), TP_ROUND_LIVE);
    assert_int_equal(tp_round_state_public(TP_ROUND_CANCELLING), TP_ROUND_CANCELLED);
    for (int s = TP_ROUND_NONE; s <= TP_ROUND_CANCELLED; s++)
        if (s != TP_ROUND_SETTLING && s != TP_ROUND_CANCELLING)
            assert_int_equal(tp_round_state_public((enum tp_round_state)s), s);
}

static void test_check_edges(void **state)
{
    (void)state;
    assert_int_equal(tp_round_check_edges(def_edges, 4), 0);
    assert_int_equal(tp_round_check_edges(NULL, 0), 0);
    const int eq[] = {-3, 3, 3};
    const int down[] = {10, 3};
    assert_int_equal(tp_round_check_edges(eq, 3), TP_EINVAL);
    assert_int_equal(tp_round_check_edges(down, 2), TP_EINVAL);
    assert_int_equal(tp_round_check_edges(def_edges, -1), TP_EINVAL);
    assert_int_equal(tp_round_check_edges(NULL, 2), TP_EINVAL);
    int many[TP_ROUND_MAX_EDGES + 1];
    for (int i = 0; i <= TP_ROUND_MAX_EDGES; i++)
        many[i] = i;
    assert_int_equal(tp_round_check_edges(many, TP_ROUND_MAX_EDGES), 0);
    assert_int_equal(tp_round_check_edges(many, TP_ROUND_MAX_EDGES + 1), TP_EINVAL);
    /* band refuses what check refuses */
    assert_int_equal(tp_round_band(100, 100, down, 2), TP_EINVAL);
    assert_int_equal(tp_round_band(100, 100, many, TP_ROUND_MAX_EDGES + 1), TP_EINVAL);
}

/* Floor division of __int128 (rounds toward minus infinity). */
static __int128 floordiv(__int128 a, __int128 b)
{
    __int128 q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/*
 * Independent reference: for an integer edge e, m >= e <=> floor(m) >= e, with
 * floor(m) = floor((C - L) * 10000 / L). Band = number of edges <= floor(m).
 */
static int ref_band(int64_t L, int64_t C, const int *edges, int n)
{
    __int128 fm = floordiv(((__int128)C - L) * 10000, L);
    int b = 0;
    for (int i = 0; i < n; i++)
        if (fm >= edges[i])
            b++;
    return b;
}

/* Smallest close price whose move is >= e bps: L + ceil(e * L / 10000). */
static int64_t edge_price(int64_t L, int e)
{
    return (int64_t)(L - floordiv(-(__int128)e * L, 10000));
}

static void check_edges_around(int64_t L, const int *edges, int n)
{
    for (int i = 0; i < n; i++) {
        int64_t c = edge_price(L, edges[i]);
        for (int64_t d = -2; d <= 2; d++) {
            int64_t cc = c + d;
            if (cc < 1)
                continue;
            int got = tp_round_band(L, cc, edges, n);
            assert_int_equal(got, ref_band(L, cc, edges, n));
            /* at or above the edge price: at least band i+1; below: at most band i */
            if (d >= 0)
                assert_true(got >= i + 1);
            else
                assert_true(got <= i);
        }
    }
}

static void test_band_edges(void **state)
{
    (void)state;
    const int64_t L = 6500000;
    /* exactly on an edge goes up; one cent below goes down */
    assert_int_equal(tp_round_band(L, L, def_edges, 4), 2);
    assert_int_equal(tp_round_band(L, L + 1950, def_edges, 4), 3); /* +3 bps exactly */
    assert_int_equal(tp_round_band(L, L + 1949, def_edges, 4), 2);
    assert_int_equal(tp_round_band(L, L + 6500, def_edges, 4), 4); /* +10 bps */
    assert_int_equal(tp_round_band(L, L + 6499, def_edges, 4), 3);
    assert_int_equal(tp_round_band(L, L - 1950, def_edges, 4), 2); /* -3 bps */
    assert_int_equal(tp_round_band(L, L - 1951, def_edges, 4), 1);
    assert_int_equal(tp_round_band(L, L - 6500, def_edges, 4), 1); /* -10 bps */
    assert_int_equal(tp_round_band(L, L - 6501, def_edges, 4), 0);
    assert_int_equal(tp_round_band(L, 1, def_edges, 4), 0);
    assert_int_equal(tp_round_band(L, INT64_MAX, def_edges, 4), 4);

    /* L not a multiple of 10000/3: +3 bps is L + 1950.0003, so L + 1950 is still band 2 */
    const int64_t L2 = 6500001;
    assert_int_equal(tp_round_band(L2, L2 + 1950, def_edges, 4), 2);
    assert_int_equal(tp_round_band(L2, L2 + 1951, def_edges, 4), 3);
    assert_int_equal(tp_round_band(L2, L2 - 1950, def_edges, 4), 2); /* -1949.99.. bps */
    assert_int_equal(tp_round_band(L2, L2 - 1951, def_edges, 4), 1);

    /* beyond 2^53, where a double cannot even hold every price: L = 2^53 * 1000 + 1000, and
     * C one cent short of the exact +10 bps move */
    const int64_t L3 = (INT64_C(1) << 53) * 1000 + 1000;
    assert_int_equal(tp_round_band(L3, L3 + L3 / 1000, def_edges, 4), 4);
    assert_int_equal(tp_round_band(L3, L3 + L3 / 1000 - 1, def_edges, 4), 3);
    assert_int_equal(tp_round_band(L3, L3 - L3 / 1000, def_edges, 4), 1);
    assert_int_equal(tp_round_band(L3, L3 - L3 / 1000 - 1, def_edges, 4), 0);

    static const int64_t locks[] = {1,
                                    2,
                                    3,
                                    7,
                                    99,
                                    100,
                                    333,
                                    9999,
                                    10000,
                                    10001,
                                    6500000,
                                    6500001,
                                    6499999,
                                    123456789,
                                    999999937,
                                    INT64_C(1000000000000000),
                                    INT64_C(4611686018427387903)};
    static const int neg[] = {-5000, -200, -11, -1};
    static const int zero[] = {0};
    static const int wide[] = {-9999, -10, 0, 1, 10, 10000, 1000000};
    for (size_t i = 0; i < TP_ARRAY_LEN(locks); i++) {
        check_edges_around(locks[i], def_edges, 4);
        check_edges_around(locks[i], neg, 4);
        check_edges_around(locks[i], zero, 1);
        if (locks[i] < INT64_C(4000000000000000))
            check_edges_around(locks[i], wide, 7); /* + 1e6 bps = x101 stays in int64 */
    }

    /* tiny prices: L = 1 cent, any move is a multiple of 10000 bps */
    assert_int_equal(tp_round_band(1, 1, def_edges, 4), 2);
    assert_int_equal(tp_round_band(1, 2, def_edges, 4), 4);
    assert_int_equal(tp_round_band(3, 2, def_edges, 4), 0); /* -3333 bps */
    /* negative edges only: unchanged price is in the top band, -1 bps edge is inclusive */
    assert_int_equal(tp_round_band(10000, 10000, neg, 4), 4);
    assert_int_equal(tp_round_band(10000, 9999, neg, 4), 4);   /* exactly -1 bps */
    assert_int_equal(tp_round_band(10001, 10000, neg, 4), 4);  /* -0.9999 bps */
    assert_int_equal(tp_round_band(10000, 9998, neg, 4), 3);   /* -2 bps */
    assert_int_equal(tp_round_band(100000, 99989, neg, 4), 3); /* -1.1 bps */
    assert_int_equal(tp_round_band(100000, 99890, neg, 4), 3); /* exactly -11 bps */
    assert_int_equal(tp_round_band(100000, 99889, neg, 4), 2); /* -11.1 bps */
    assert_int_equal(tp_round_band(100000, 98000, neg, 4), 2); /* exactly -200 bps */
    assert_int_equal(tp_round_band(100000, 97999, neg, 4), 1);
    assert_int_equal(tp_round_band(100000, 49999, neg, 4), 0); /* below -5000 bps */
    /* a single edge at 0: unchanged goes up */
    assert_int_equal(tp_round_band(500, 500, zero, 1), 1);
    assert_int_equal(tp_round_band(500, 499, zero, 1), 0);
    /* no edges: one band */
    assert_int_equal(tp_round_band(500, 1, NULL, 0), 0);
    assert_int_equal(tp_round_band(500, 5000, NULL, 0), 0);
    /* hostile prices */
    assert_int_equal(tp_round_band(0, 100, def_edges, 4), TP_EINVAL);
    assert_int_equal(tp_round_band(-100, 100, def_edges, 4), TP_EINVAL);
    assert_int_equal(tp_round_band(100, 0, def_edges, 4), TP_EINVAL);
    assert_int_equal(tp_round_band(100, -5, def_edges, 4), TP_EINVAL);
    assert_int_equal(tp_round_band(INT64_MAX, 1, def_edges, 4), 0);
    assert_int_equal(tp_round_band(INT64_MAX, INT64_MAX, def_edges, 4), 2);
}

/* xorshift64*: fixed-seed PRNG for property tests */
static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static void test_band_random(void **state)
{
    (void)state;
    for (int i = 0; i < 200000; i++) {
        int64_t L = (int64_t)(rnd() % (i % 2 ? 20000000 : 1000)) + 1;
        int64_t span = L / 100 + 2;
        int64_t C = L + (int64_t)(rnd() % (uint64_t)(2 * span)) - span;
        if (C < 1)
            C = 1;
        assert_int_equal(tp_round_band(L, C, def_edges, 4), ref_band(L, C, def_edges, 4));
    }
}

static void test_band_descriptors(void **state)
{
    (void)state;
    struct tp_round_band_desc d[TP_ROUND_MAX_BANDS];
    assert_int_equal(tp_round_bands(def_edges, 4, d, TP_ROUND_MAX_BANDS), 5);
    assert_int_equal(d[0].index, 0);
    assert_false(d[0].has_lo);
    assert_true(d[0].has_hi);
    assert_int_equal(d[0].hi_bps, -10);
    assert_int_equal(d[1].lo_bps, -10);
    assert_int_equal(d[1].hi_bps, -3);
    assert_int_equal(d[2].lo_bps, -3);
    assert_int_equal(d[2].hi_bps, 3);
    assert_int_equal(d[3].lo_bps, 3);
    assert_int_equal(d[3].hi_bps, 10);
    assert_int_equal(d[4].index, 4);
    assert_true(d[4].has_lo);
    assert_int_equal(d[4].lo_bps, 10);
    assert_false(d[4].has_hi);
    for (int i = 1; i < 4; i++)
        assert_true(d[i].has_lo && d[i].has_hi);
    assert_int_equal(tp_round_bands(def_edges, 4, d, 4), TP_ETOOBIG);
    assert_int_equal(tp_round_bands(NULL, 0, d, 1), 1);
    assert_false(d[0].has_lo || d[0].has_hi);
    const int bad[] = {3, 3};
    assert_int_equal(tp_round_bands(bad, 2, d, 5), TP_EINVAL);
    assert_int_equal(tp_round_bands(def_edges, 4, NULL, 5), TP_EINVAL);
}

static void test_schedule(void **state)
{
    (void)state;
    const int64_t bet = 30000, live = 30000;
    const int64_t t0 = INT64_C(1700000010000); /* 30000 * 56666667 */
    struct tp_round_times t;
    assert_int_equal(tp_round_schedule(t0, bet, live, &t), 0);
    assert_int_equal(t.opens_at, t0);
    assert_int_equal(t.locks_at, t0 + 30000);
    assert_int_equal(t.closes_at, t0 + 60000);
    /* round N+1 opens at N's lock, which is again aligned; the pipeline never gaps */
    struct tp_round_times n1;
    assert_int_equal(tp_round_schedule(t.locks_at, bet, live, &n1), 0);
    assert_int_equal(n1.opens_at, t.locks_at);
    assert_int_equal(n1.locks_at, t.closes_at);
    /* live longer than betting (3 s / 5 s) */
    assert_int_equal(tp_round_schedule(9000, 3000, 5000, &t), 0);
    assert_int_equal(t.locks_at, 12000);
    assert_int_equal(t.closes_at, 17000);
    /* misaligned and hostile */
    assert_int_equal(tp_round_schedule(t0 + 1, bet, live, &t), TP_EINVAL);
    assert_int_equal(tp_round_schedule(t0, 0, live, &t), TP_EINVAL);
    assert_int_equal(tp_round_schedule(t0, bet, 0, &t), TP_EINVAL);
    assert_int_equal(tp_round_schedule(-30000, bet, live, &t), TP_EINVAL);
    assert_int_equal(tp_round_schedule(INT64_MAX / bet * bet, bet, live, &t), TP_EINVAL);

    assert_int_equal(tp_round_align_open(t0, bet), t0);
    assert_int_equal(tp_round_align_open(t0 + 1, bet), t0 + bet);
    assert_int_equal(tp_round_align_open(t0 - 1, bet), t0);
    assert_int_equal(tp_round_align_open(0, bet), 0);
    assert_int_equal(tp_round_align_open(1, 2000), 2000);
    assert_int_equal(tp_round_align_open(-1, bet), TP_EINVAL);
    assert_int_equal(tp_round_align_open(t0, 0), TP_EINVAL);
    assert_int_equal(tp_round_align_open(INT64_MAX, bet), TP_EINVAL);
    for (int64_t now = 1000; now < 200000; now += 777) {
        int64_t o = tp_round_align_open(now, 3000);
        assert_true(o >= now && o - now < 3000 && o % 3000 == 0);
        assert_int_equal(tp_round_schedule(o, 3000, 3000, &t), 0);
    }
}

static void test_due(void **state)
{
    (void)state;
    struct tp_round_times t = {.opens_at = 30000, .locks_at = 60000, .closes_at = 90000};
    enum tp_round_event ev = (enum tp_round_event) - 1;
    const int64_t g = 5000;
    assert_int_equal(tp_round_due(TP_ROUND_OPEN, &t, 59999, g, &ev), 0);
    assert_int_equal(tp_round_due(TP_ROUND_OPEN, &t, 60000, g, &ev), 1);
    assert_int_equal(ev, TP_ROUND_EV_LOCK);
    assert_int_equal(tp_round_due(TP_ROUND_OPEN, &t, 65000, g, &ev), 1);
    assert_int_equal(ev, TP_ROUND_EV_LOCK);
    assert_int_equal(tp_round_due(TP_ROUND_OPEN, &t, 65001, g, &ev), 1);
    assert_int_equal(ev, TP_ROUND_EV_CANCEL);
    assert_int_equal(tp_round_due(TP_ROUND_LIVE, &t, 89999, g, &ev), 0);
    assert_int_equal(tp_round_due(TP_ROUND_LIVE, &t, 90000, g, &ev), 1);
    assert_int_equal(ev, TP_ROUND_EV_CLOSE);
    assert_int_equal(tp_round_due(TP_ROUND_LIVE, &t, 95001, g, &ev), 1);
    assert_int_equal(ev, TP_ROUND_EV_CANCEL);
    assert_int_equal(tp_round_due(TP_ROUND_SETTLED, &t, 1000000, g, &ev), 0);
    assert_int_equal(tp_round_due(TP_ROUND_CANCELLED, &t, 1000000, g, &ev), 0);
    assert_int_equal(tp_round_due(TP_ROUND_NONE, &t, 1000000, g, &ev), 0);
    assert_int_equal(tp_round_due(TP_ROUND_OPEN, NULL, 1000000, g, &ev), 0);
    /* the due event is always a legal transition */
    for (int s = TP_ROUND_OPEN; s <= TP_ROUND_LIVE; s++)
        for (int64_t now = 0; now < 120000; now += 250)
            if (tp_round_due((enum tp_round_state)s, &t, now, g, &ev))
                assert_true(tp_round_next_state((enum tp_round_state)s, ev) >= 0);
}

/* The price stream keeps 5 minutes and more at every tick_ms the configuration allows
 * (10 ms .. 10 s): GET /api/v1/prices promises the last 5 minutes. */
static void test_ticks_kept(void **state)
{
    (void)state;
    assert_int_equal(tp_round_ticks_kept(100), 6000);
    assert_int_equal(tp_round_ticks_kept(1000), 6000);
    assert_int_equal(tp_round_ticks_kept(10), 60000);
    assert_int_equal(tp_round_ticks_kept(30), 20000);
    assert_int_equal(tp_round_ticks_kept(70), 8572);
    assert_int_equal(tp_round_ticks_kept(0), 6000);
    for (int64_t t = 10; t <= 10000; t++) {
        int64_t n = tp_round_ticks_kept(t);
        assert_true(n >= 6000);
        assert_true(n * t >= 600000); /* 10 minutes: twice what the API promises */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_public_state),
        cmocka_unit_test(test_check_edges),
        cmocka_unit_test(test_band_edges),
        cmocka_unit_test(test_band_random),
        cmocka_unit_test(test_band_descriptors),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_due),
        cmocka_unit_test(test_ticks_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
