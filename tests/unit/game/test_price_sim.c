/*
 * Price simulator: frozen golden vectors (the same ones docs/fairness.md gives the JavaScript
 * port), hostile inputs, the sampler's statistics, and the band probabilities of the default
 * game configuration measured from the sampler itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"
#include "tickpool/game/price_sim.h"
#include "tickpool/game/round.h"

/* Seed A = bytes 00 01 .. 1f, seed B = 32 bytes ff (docs/fairness.md §7). */
static void seed_a(uint8_t s[32])
{
    for (int i = 0; i < 32; i++)
        s[i] = (uint8_t)i;
}

static void seed_b(uint8_t s[32])
{
    memset(s, 0xff, 32);
}

/* Default game config: volatility 0.8, tick 100 ms. */
#define VOL_DEFAULT INT64_C(45034)

static void test_vol_ppb(void **state)
{
    (void)state;
    assert_int_equal(tp_price_sim_vol_ppb(0.8, 100), VOL_DEFAULT);
    assert_int_equal(tp_price_sim_vol_ppb(0.8, 1000), 142409);
    assert_int_equal(tp_price_sim_vol_ppb(0.5, 250), 44503);
    assert_int_equal(tp_price_sim_vol_ppb(2.0, 50), 79609);
    assert_int_equal(tp_price_sim_vol_ppb(0.0, 100), 0);
    assert_int_equal(tp_price_sim_vol_ppb(1.0, 1000000000), 178011482);
    assert_int_equal(tp_price_sim_vol_ppb(5.0, 2147483647), TP_EINVAL); /* 1.3e9 ppb */
    assert_int_equal(tp_price_sim_vol_ppb(-0.1, 100), TP_EINVAL);
    assert_int_equal(tp_price_sim_vol_ppb(NAN, 100), TP_EINVAL);
    assert_int_equal(tp_price_sim_vol_ppb(INFINITY, 100), TP_EINVAL);
    assert_int_equal(tp_price_sim_vol_ppb(0.8, 0), TP_EINVAL);
    assert_int_equal(tp_price_sim_vol_ppb(0.8, -100), TP_EINVAL);
    assert_int_equal(tp_price_sim_vol_ppb(1e6, 1000), TP_EINVAL); /* > 1e9 ppb */
}

static void test_seed_hash(void **state)
{
    (void)state;
    uint8_t a[32], b[32], out[32];
    char h[65];
    seed_a(a);
    seed_b(b);
    tp_price_sim_seed_hash(a, h);
    assert_string_equal(h, "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd");
    tp_price_sim_seed_hash(b, h);
    assert_string_equal(h, "af9613760f72635fbdb44a5a0a63c39f12af30f950a6ee5c971be188e89c4051");

    const char *ahex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    memset(out, 0, sizeof(out));
    assert_int_equal(
        tp_price_sim_seed_verify(
            ahex, "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd", out),
        0);
    assert_memory_equal(out, a, 32);
    /* the hash may come in upper case */
    assert_int_equal(
        tp_price_sim_seed_verify(
            ahex, "630DCD2966C4336691125448BBB25B4FF412A49C732DB2C8ABC1B8581BD710DD", NULL),
        0);
    /* a different seed, one flipped hash nibble */
    assert_int_equal(
        tp_price_sim_seed_verify(
            ahex, "af9613760f72635fbdb44a5a0a63c39f12af30f950a6ee5c971be188e89c4051", out),
        TP_ECONFLICT);
    assert_int_equal(
        tp_price_sim_seed_verify(
            ahex, "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710de", out),
        TP_ECONFLICT);
    /* malformed */
    assert_int_equal(tp_price_sim_seed_verify(ahex + 1, ahex, out), TP_EINVAL);
    assert_int_equal(tp_price_sim_seed_verify(
                         "0g0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                         "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd", out),
                     TP_EINVAL);
    assert_int_equal(tp_price_sim_seed_verify(NULL, ahex, out), TP_EINVAL);
    assert_int_equal(tp_price_sim_seed_verify(ahex, "", out), TP_EINVAL);
}

/* Golden z_micro values: if one changes, every published round becomes unverifiable. */
static void test_z_golden(void **state)
{
    (void)state;
    static const struct {
        uint64_t index;
        int64_t za, zb;
    } v[] = {
        {0, 558643, -1223382},
        {1, 1630108, 773306},
        {2, 2109009, -823919},
        {3, 1474727, -836279},
        {4, 1417384, 295900},
        {5, -2527073, -1430385},
        {300, 1292932, -1388300},
        {UINT64_C(4294967297), -82626, -1291391}, /* exercises the high index bytes */
        {UINT64_MAX, 1400614, -311617},
    };
    uint8_t a[32], b[32];
    seed_a(a);
    seed_b(b);
    for (size_t i = 0; i < TP_ARRAY_LEN(v); i++) {
        assert_int_equal(tp_price_sim_z_micro(a, v[i].index), v[i].za);
        assert_int_equal(tp_price_sim_z_micro(b, v[i].index), v[i].zb);
    }
}

/* z_micro derived by hand from the HMAC bytes, independently of price_sim.c. */
static void test_z_from_hmac(void **state)
{
    (void)state;
    uint8_t a[32], h[32];
    seed_a(a);
    for (uint64_t idx = 1; idx < 200; idx += 7) {
        uint8_t msg[8] = {0};
        for (int i = 0; i < 8; i++)
            msg[7 - i] = (uint8_t)(idx >> (8 * i));
        tp_hmac_sha256(a, 32, msg, 8, h);
        long s = 0;
        for (int i = 0; i < 24; i += 2)
            s += h[i] * 256L + h[i + 1];
        long long num = (2LL * s - 786420) * 1000000LL;
        long long q = llabs(num) / 131071;
        assert_int_equal(tp_price_sim_z_micro(a, idx), num < 0 ? -q : q);
    }
}

static void test_segment_golden(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    seed_a(a);
    seed_b(b);
    int64_t seg[300], segb[300];
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, TP_PRICE_SIM_START_PRICE, seg, 300), 0);
    static const int64_t first[5] = {6500477, 6501094, 6501525, 6501939, 6501200};
    for (int i = 0; i < 5; i++)
        assert_int_equal(seg[i], first[i]);
    /* tick 5 has z < 0: delta = trunc(-739.93) = -739, where floor would give 6501199 */
    assert_int_equal(seg[99], 6504701);
    assert_int_equal(seg[299], 6500918);
    assert_int_equal(tp_price_sim_segment(b, VOL_DEFAULT, seg[299], segb, 300), 0);
    assert_int_equal(segb[0], 6501144);
    assert_int_equal(segb[299], 6498315);

    /* a tiny price at high volatility: the 1-cent resolution shows */
    int64_t sm[5];
    static const int64_t small[5] = {103, 107, 110, 113, 108};
    assert_int_equal(tp_price_sim_segment(a, 20000000, 100, sm, 5), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sm[i], small[i]);

    /* tick and price_at agree with the segment */
    assert_int_equal(tp_price_sim_tick(a, 1, TP_PRICE_SIM_START_PRICE, VOL_DEFAULT), 6500477);
    assert_int_equal(tp_price_sim_price_at(a, VOL_DEFAULT, TP_PRICE_SIM_START_PRICE, 0),
                     TP_PRICE_SIM_START_PRICE);
    assert_int_equal(tp_price_sim_price_at(a, VOL_DEFAULT, TP_PRICE_SIM_START_PRICE, 100), seg[99]);
    assert_int_equal(tp_price_sim_price_at(a, VOL_DEFAULT, TP_PRICE_SIM_START_PRICE, 300),
                     seg[299]);
    /* determinism: a second run gives the same path */
    int64_t again[300];
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, TP_PRICE_SIM_START_PRICE, again, 300), 0);
    assert_memory_equal(again, seg, sizeof(seg));
    /* a one-bit change of the seed changes the path */
    a[31] ^= 1;
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, TP_PRICE_SIM_START_PRICE, again, 300), 0);
    assert_true(memcmp(again, seg, sizeof(seg)) != 0);
}

static void test_segment_invalid(void **state)
{
    (void)state;
    uint8_t a[32];
    seed_a(a);
    int64_t out[3] = {-7, -7, -7};
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, 0, out, 3), TP_EINVAL);
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, -5, out, 3), TP_EINVAL);
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, TP_PRICE_SIM_MAX_PRICE + 1, out, 3),
                     TP_EINVAL);
    assert_int_equal(tp_price_sim_segment(a, -1, 100, out, 3), TP_EINVAL);
    assert_int_equal(tp_price_sim_segment(a, TP_PRICE_SIM_MAX_VOL_PPB + 1, 100, out, 3), TP_EINVAL);
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, 100, NULL, 3), TP_EINVAL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(out[i], -7); /* untouched on error */
    assert_int_equal(tp_price_sim_segment(a, VOL_DEFAULT, 100, NULL, 0), 0);
    assert_int_equal(tp_price_sim_price_at(a, VOL_DEFAULT, 0, 5), TP_EINVAL);
    assert_int_equal(tp_price_sim_price_at(a, -3, 100, 5), TP_EINVAL);
}

static void test_step(void **state)
{
    (void)state;
    /* zero volatility or zero deviate: flat */
    assert_int_equal(tp_price_sim_step(6500000, 0, TP_PRICE_SIM_Z_MAX), 6500000);
    assert_int_equal(tp_price_sim_step(6500000, VOL_DEFAULT, 0), 6500000);
    /* exact: 6500000 * 45034 * 1e6 / 1e15 = 292.721 -> 292 */
    assert_int_equal(tp_price_sim_step(6500000, VOL_DEFAULT, 1000000), 6500292);
    /* truncation toward zero is symmetric: -292.721 -> -292 (floor would be -293) */
    assert_int_equal(tp_price_sim_step(6500000, VOL_DEFAULT, -1000000), 6499708);
    for (int64_t z = -TP_PRICE_SIM_Z_MAX; z <= TP_PRICE_SIM_Z_MAX; z += 99991) {
        int64_t up = tp_price_sim_step(123456789, 777777, z) - 123456789;
        int64_t down = tp_price_sim_step(123456789, 777777, -z) - 123456789;
        assert_int_equal(up, -down);
    }
    /* floor at one cent */
    assert_int_equal(tp_price_sim_step(1, TP_PRICE_SIM_MAX_VOL_PPB, -TP_PRICE_SIM_Z_MAX), 1);
    assert_int_equal(tp_price_sim_step(10, TP_PRICE_SIM_MAX_VOL_PPB, -TP_PRICE_SIM_Z_MAX), 1);
    assert_int_equal(tp_price_sim_step(1, TP_PRICE_SIM_MAX_VOL_PPB, TP_PRICE_SIM_Z_MAX), 6);
    /* the extremes neither overflow nor leave the range */
    assert_int_equal(
        tp_price_sim_step(TP_PRICE_SIM_MAX_PRICE, TP_PRICE_SIM_MAX_VOL_PPB, TP_PRICE_SIM_Z_MAX),
        TP_PRICE_SIM_MAX_PRICE);
    assert_int_equal(
        tp_price_sim_step(TP_PRICE_SIM_MAX_PRICE, TP_PRICE_SIM_MAX_VOL_PPB, -TP_PRICE_SIM_Z_MAX),
        1);
    /* 1e15 * 1e6 ppb * 1e6 / 1e15 = 1e12 exactly */
    assert_int_equal(tp_price_sim_step(TP_PRICE_SIM_MAX_PRICE / 1000, 1000000, 1000000),
                     TP_PRICE_SIM_MAX_PRICE / 1000 + 1000000000);
}

static void test_chain(void **state)
{
    (void)state;
    struct tp_price_sim_seg s[2];
    seed_a(s[0].seed);
    seed_b(s[1].seed);
    s[0].vol_ppb = s[1].vol_ppb = VOL_DEFAULT;
    const int64_t L = TP_PRICE_SIM_START_PRICE;
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 0), L);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 300), 6500918);
    assert_int_equal(tp_price_sim_chain_at(s, 1, 300, L, 300), 6500918);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 301), 6501144);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 450), 6503715);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 600), 6498315);
    /* beyond the seeds given: the later seed is missing */
    assert_int_equal(tp_price_sim_chain_at(s, 1, 300, L, 301), TP_EINVAL);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 601), TP_EINVAL);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 0, L, 1), TP_EINVAL);
    assert_int_equal(tp_price_sim_chain_at(s, 0, 300, L, 0), L);
    assert_int_equal(tp_price_sim_chain_at(NULL, 2, 300, L, 1), TP_EINVAL);
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, 0, 1), TP_EINVAL);
    assert_int_equal(tp_price_sim_chain_at(s, 2, UINT64_MAX, L, 1), TP_EINVAL);
    /* a segment's own vol_ppb applies to it */
    s[1].vol_ppb = 0;
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 600), 6500918);
    s[1].vol_ppb = -1;
    assert_int_equal(tp_price_sim_chain_at(s, 2, 300, L, 10), TP_EINVAL);
}

/*
 * z_micro over 100k indices: mean 0 (sd of the mean 3162), variance 1e12 (relative sd of the
 * estimate 0.45 %), kurtosis of Irwin-Hall(12) = 3 - 1.2/12 = 2.9 (sd ~0.015), bounded.
 */
static void test_z_statistics(void **state)
{
    (void)state;
    uint8_t seed[32];
    tp_sha256("tickpool z statistics", 21, seed);
    const int n = 100000;
    double sum = 0, sum2 = 0, sum4 = 0;
    int64_t zmin = 0, zmax = 0;
    for (int i = 1; i <= n; i++) {
        int64_t z = tp_price_sim_z_micro(seed, (uint64_t)i);
        zmin = TP_MIN(zmin, z);
        zmax = TP_MAX(zmax, z);
        double d = (double)z / 1e6;
        sum += d;
        sum2 += d * d;
        sum4 += d * d * d * d;
    }
    double mean = sum / n, var = sum2 / n - mean * mean, kurt = (sum4 / n) / (var * var);
    printf("# z_micro: mean %.5f var %.5f kurtosis %.4f min %lld max %lld\n", mean, var, kurt,
           (long long)zmin, (long long)zmax);
    assert_true(fabs(mean) < 0.015);
    assert_true(var > 0.98 && var < 1.02);
    assert_true(kurt > 2.82 && kurt < 2.98);
    assert_true(zmin >= -TP_PRICE_SIM_Z_MAX && zmax <= TP_PRICE_SIM_Z_MAX);
    assert_true(zmin < -3500000 && zmax > 3500000);
}

/* Per-tick log returns of a long default-config path: variance (vol_ppb / 1e9)^2. */
static void test_log_return_variance(void **state)
{
    (void)state;
    uint8_t seed[32];
    tp_sha256("tickpool log returns", 20, seed);
    const int n = 100000;
    for (int k = 0; k < 2; k++) {
        int64_t vol = k == 0 ? VOL_DEFAULT : tp_price_sim_vol_ppb(3.0, 1000);
        int64_t p = TP_PRICE_SIM_START_PRICE;
        double sum = 0, sum2 = 0;
        for (int i = 1; i <= n; i++) {
            int64_t q = tp_price_sim_tick(seed, (uint64_t)i, p, vol);
            double r = log((double)q / (double)p);
            sum += r;
            sum2 += r * r;
            p = q;
        }
        double mean = sum / n, var = sum2 / n - mean * mean;
        double want = ((double)vol / 1e9) * ((double)vol / 1e9);
        printf("# vol_ppb %lld: log-return variance %.4e, expected %.4e (ratio %.4f)\n",
               (long long)vol, var, want, var / want);
        assert_true(var / want > 0.97 && var / want < 1.03);
    }
}

static double phi(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

/*
 * The requirement: at the DEFAULT config (volatility 0.8, tick 100 ms, betting_s =
 * live_s = 30, edges -10,-3,3,10 bps) each band should win between 10 % and 40 % of rounds.
 * Rounds are simulated exactly as the leader chains them (L of N+1 = C of N, a fresh seed per
 * round). Over 300 ticks the move has sd = 45034e-9 * sqrt(300) = 7.80 bps, so the model gives
 * about 9.97 / 25.0 / 30.0 / 25.0 / 9.97 %: the outer bands sit a hair BELOW 10 % (a 500k-round
 * run measured the same; reported to the lead rather than changing the contract's defaults).
 * Asserted here: (1) every band agrees with the normal model within 4.5 standard errors, which
 * checks the sampler end to end; (2) every band is in [10 %, 40 %] up to 4.5 standard errors.
 */
static void test_band_probabilities_default(void **state)
{
    (void)state;
    const int rounds = 12000;
    const int edges[] = {-10, -3, 3, 10};
    const uint64_t ticks = 30 * 1000 / 100;
    const int64_t vol = tp_price_sim_vol_ppb(0.8, 100);
    assert_int_equal(vol, VOL_DEFAULT);
    long count[5] = {0};
    int64_t lock = TP_PRICE_SIM_START_PRICE;
    for (int r = 0; r < rounds; r++) {
        uint8_t msg[24] = "tickpool band round ";
        uint8_t seed[32];
        msg[20] = (uint8_t)(r >> 24);
        msg[21] = (uint8_t)(r >> 16);
        msg[22] = (uint8_t)(r >> 8);
        msg[23] = (uint8_t)r;
        tp_sha256(msg, sizeof(msg), seed);
        int64_t close = tp_price_sim_price_at(seed, vol, lock, ticks);
        int band = tp_round_band(lock, close, edges, 4);
        assert_true(band >= 0 && band <= 4);
        count[band]++;
        lock = close;
    }
    double sd = (double)vol / 1e9 * sqrt((double)ticks); /* of (C - L) / L */
    double cdf[6] = {0, 0, 0, 0, 0, 1};
    for (int i = 0; i < 4; i++)
        cdf[i + 1] = phi(edges[i] / 1e4 / sd);
    printf("# band probabilities over %d rounds (model):", rounds);
    for (int b = 0; b < 5; b++) {
        double p = (double)count[b] / rounds, model = cdf[b + 1] - cdf[b];
        double se = sqrt(model * (1 - model) / rounds);
        printf(" %.2f%% (%.2f%%)", 100 * p, 100 * model);
        assert_true(fabs(p - model) < 4.5 * se);
        assert_true(p > 0.10 - 4.5 * se && p < 0.40 + 4.5 * se);
    }
    printf("\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vol_ppb),
        cmocka_unit_test(test_seed_hash),
        cmocka_unit_test(test_z_golden),
        cmocka_unit_test(test_z_from_hmac),
        cmocka_unit_test(test_segment_golden),
        cmocka_unit_test(test_segment_invalid),
        cmocka_unit_test(test_step),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_z_statistics),
        cmocka_unit_test(test_log_return_variance),
        cmocka_unit_test(test_band_probabilities_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
