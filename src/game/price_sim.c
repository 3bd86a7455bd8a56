/*
 * Price simulator: integer random walk from HMAC-SHA256 of per-round seeds. Pure (no clock, no
 * I/O); the leader feeds it seeds and asks for ticks. Every operation below is mirrored in
 * docs/fairness.md; change one, change the other and the golden vectors in
 * tests/unit/game/test_price_sim.c.
 */
#include "tickpool/game/price_sim.h"

#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

/* Irwin-Hall of 12 uint16: mean of the sum 12 * 65535 / 2, and twice it. */
#define IH_TWICE_MEAN INT64_C(786420)
/* sd of (2S - 786420) is 2 * sqrt(65536^2 - 1) ~= 131072; 131071 is the frozen divisor. */
#define IH_DIVISOR INT64_C(131071)

int64_t tp_price_sim_vol_ppb(double volatility, int tick_ms)
{
    if (!isfinite(volatility) || volatility < 0 || tick_ms <= 0)
        return TP_EINVAL;
    double v = volatility * sqrt((double)tick_ms / TP_PRICE_SIM_YEAR_MS) * 1e9;
    if (!(v <= (double)TP_PRICE_SIM_MAX_VOL_PPB))
        return TP_EINVAL;
    return (int64_t)llround(v);
}

int64_t tp_price_sim_z_micro(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], uint64_t index)
{
    uint8_t msg[8], h[TP_SHA256_LEN];
    for (int i = 0; i < 8; i++)
        msg[i] = (uint8_t)(index >> (56 - 8 * i));
    tp_hmac_sha256(seed, TP_PRICE_SIM_SEED_LEN, msg, sizeof(msg), h);
    int64_t s = 0;
    for (int i = 0; i < 12; i++)
        s += (int64_t)h[2 * i] << 8 | h[2 * i + 1];
    /* C99 division truncates toward zero, as JavaScript BigInt division does. */
    return (2 * s - IH_TWICE_MEAN) * 1000000 / IH_DIVISOR;
}

static int price_ok(int64_t p)
{
    return p >= TP_PRICE_SIM_MIN_PRICE && p <= TP_PRICE_SIM_MAX_PRICE;
}

static int vol_ok(int64_t v)
{
    return v >= 0 && v <= TP_PRICE_SIM_MAX_VOL_PPB;
}

/*
 * The product prev * vol_ppb * z_micro reaches 1e15 * 1e9 * 6e6 ~= 2^103, hence __int128; the
 * division truncates toward zero. |delta| <= 6 * prev <= 6e15, so prev + delta fits in int64
 * before the clamp.
 */
int64_t tp_price_sim_step(int64_t prev, int64_t vol_ppb, int64_t z_micro)
{
    TP_ASSERT(price_ok(prev));
    TP_ASSERT(vol_ok(vol_ppb));
    TP_ASSERT(z_micro >= -TP_PRICE_SIM_Z_MAX && z_micro <= TP_PRICE_SIM_Z_MAX);
    __int128 prod = (__int128)prev * vol_ppb * z_micro;
    int64_t delta = (int64_t)(prod / (__int128)INT64_C(1000000000000000));
    int64_t p = prev + delta;
    if (p < TP_PRICE_SIM_MIN_PRICE)
        p = TP_PRICE_SIM_MIN_PRICE;
    if (p > TP_PRICE_SIM_MAX_PRICE)
        p = TP_PRICE_SIM_MAX_PRICE;
    return p;
}

int64_t tp_price_sim_tick(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], uint64_t index, int64_t prev,
                          int64_t vol_ppb)
{
    return tp_price_sim_step(prev, vol_ppb, tp_price_sim_z_micro(seed, index));
}

int tp_price_sim_segment(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], int64_t vol_ppb, int64_t start,
                         int64_t *out, size_t n)
{
    if (!price_ok(start) || !vol_ok(vol_ppb) || (n > 0 && out == NULL))
        return TP_EINVAL;
    int64_t p = start;
    for (size_t i = 0; i < n; i++) {
        p = tp_price_sim_tick(seed, (uint64_t)i + 1, p, vol_ppb);
        out[i] = p;
    }
    return 0;
}

int64_t tp_price_sim_price_at(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], int64_t vol_ppb,
                              int64_t start, uint64_t index)
{
    if (!price_ok(start) || !vol_ok(vol_ppb))
        return TP_EINVAL;
    int64_t p = start;
    for (uint64_t i = 1; i <= index; i++)
        p = tp_price_sim_tick(seed, i, p, vol_ppb);
    return p;
}

int64_t tp_price_sim_chain_at(const struct tp_price_sim_seg *segs, size_t n_segs,
                              uint64_t seg_ticks, int64_t start, uint64_t k)
{
    if (!price_ok(start) || seg_ticks == 0 || (n_segs > 0 && segs == NULL))
        return TP_EINVAL;
    /* k beyond the given segments: the caller lacks a later seed. */
    if (n_segs > UINT64_MAX / seg_ticks || k > (uint64_t)n_segs * seg_ticks)
        return TP_EINVAL;
    for (size_t j = 0; j < n_segs; j++)
        if (!vol_ok(segs[j].vol_ppb))
            return TP_EINVAL;
    int64_t p = start;
    for (size_t j = 0; k > 0; j++) {
        uint64_t take = k < seg_ticks ? k : seg_ticks;
        for (uint64_t i = 1; i <= take; i++)
            p = tp_price_sim_tick(segs[j].seed, i, p, segs[j].vol_ppb);
        k -= take;
    }
    return p;
}

void tp_price_sim_seed_hash(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], char out[65])
{
    uint8_t h[TP_SHA256_LEN];
    tp_sha256(seed, TP_PRICE_SIM_SEED_LEN, h);
    tp_hex_encode(h, sizeof(h), out);
}

int tp_price_sim_seed_verify(const char *seed_hex, const char *hash_hex,
                             uint8_t seed[TP_PRICE_SIM_SEED_LEN])
{
    uint8_t s[TP_PRICE_SIM_SEED_LEN], want[TP_SHA256_LEN], got[TP_SHA256_LEN];
    if (seed_hex == NULL || hash_hex == NULL || strlen(seed_hex) != 64 || strlen(hash_hex) != 64)
        return TP_EINVAL;
    if (tp_hex_decode(seed_hex, s, sizeof(s)) != 0 ||
        tp_hex_decode(hash_hex, want, sizeof(want)) != 0)
        return TP_EINVAL;
    tp_sha256(s, sizeof(s), got);
    if (tp_memeq_ct(got, want, sizeof(got)) != 0)
        return TP_ECONFLICT;
    if (seed != NULL)
        memcpy(seed, s, sizeof(s));
    return 0;
}
