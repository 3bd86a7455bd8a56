/*
 * Provably fair price simulator: a pure, integer-only random walk in cents driven by per-round
 * 32-byte secret seeds (HMAC-SHA256 per tick). No floats touch a price, so the C server,
 * `tickpool verify` and the browser (BigInt + WebCrypto) reproduce every tick bit for bit.
 * The exact algorithm, with golden vectors, is docs/fairness.md.
 */
#ifndef TP_PRICE_SIM_H
#define TP_PRICE_SIM_H

#include <stddef.h>
#include <stdint.h>

#define TP_PRICE_SIM_SEED_LEN 32
/* Price of the very first round's lock, in cents ($65,000). */
#define TP_PRICE_SIM_START_PRICE INT64_C(6500000)
/* Prices are clamped to [MIN, MAX] cents after every step (MAX only guards int64 overflow). */
#define TP_PRICE_SIM_MIN_PRICE INT64_C(1)
#define TP_PRICE_SIM_MAX_PRICE INT64_C(1000000000000000)
/* vol_ppb is per-tick volatility in parts per billion: 0 .. 1e9 (100 % per tick). */
#define TP_PRICE_SIM_MAX_VOL_PPB INT64_C(1000000000)
/* |z_micro| never exceeds this: 786420 * 1e6 / 131071 truncated. */
#define TP_PRICE_SIM_Z_MAX INT64_C(5999954)
/* Milliseconds in a Julian year (365.25 days), the unit of the annualised volatility. */
#define TP_PRICE_SIM_YEAR_MS 31557600000.0

/** One chained segment: a round's seed and the vol_ppb recorded with that round. */
struct tp_price_sim_seg {
    uint8_t seed[TP_PRICE_SIM_SEED_LEN];
    int64_t vol_ppb;
};

/** Per-tick volatility in ppb: llround(volatility * sqrt(tick_ms / YEAR_MS) * 1e9). Computed
 * once by the leader (floats) and recorded per round. Returns TP_EINVAL for a negative or
 * non-finite volatility, tick_ms <= 0 or a result above TP_PRICE_SIM_MAX_VOL_PPB. */
int64_t tp_price_sim_vol_ppb(double volatility, int tick_ms);

/** Standard normal deviate times 1e6 for tick `index` (Irwin-Hall of 12 uint16 taken from
 * HMAC-SHA256(seed, 8-byte big-endian index)); always within +-TP_PRICE_SIM_Z_MAX. */
int64_t tp_price_sim_z_micro(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], uint64_t index);

/** One step: prev + trunc(prev * vol_ppb * z_micro / 1e15), clamped to [MIN, MAX] price.
 * Preconditions (asserted): prev in [MIN, MAX], vol_ppb in [0, MAX_VOL], |z_micro| <= Z_MAX. */
int64_t tp_price_sim_step(int64_t prev, int64_t vol_ppb, int64_t z_micro);

/** Price of tick `index` (1-based within its segment) from the previous price. Same
 * preconditions as tp_price_sim_step. */
int64_t tp_price_sim_tick(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], uint64_t index, int64_t prev,
                          int64_t vol_ppb);

/** Fills out[0..n-1] with ticks 1..n of the segment starting at `start` (the lock price).
 * Returns 0, or TP_EINVAL when start or vol_ppb is out of range (out untouched). */
int tp_price_sim_segment(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], int64_t vol_ppb, int64_t start,
                         int64_t *out, size_t n);

/** Price after `index` ticks of one segment starting at `start` (index 0 is start itself).
 * Returns the price (>= 1) or TP_EINVAL. */
int64_t tp_price_sim_price_at(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], int64_t vol_ppb,
                              int64_t start, uint64_t index);

/** Price after `k` ticks of contiguous segments segs[0..n_segs-1], each `seg_ticks` long, the
 * first starting at `start` and each next one at the previous one's last tick. Used for a
 * close price when live_s > betting_s. Returns the price or TP_EINVAL (k beyond the segments). */
int64_t tp_price_sim_chain_at(const struct tp_price_sim_seg *segs, size_t n_segs,
                              uint64_t seg_ticks, int64_t start, uint64_t k);

/** Lowercase hex SHA-256 of a seed (the published `seed_hash`) into out[65]. */
void tp_price_sim_seed_hash(const uint8_t seed[TP_PRICE_SIM_SEED_LEN], char out[65]);

/** Checks a revealed seed (64 hex chars) against a published seed_hash (64 hex chars, any
 * case) and decodes it into seed. Returns 0, TP_EINVAL (malformed) or TP_ECONFLICT. */
int tp_price_sim_seed_verify(const char *seed_hex, const char *hash_hex,
                             uint8_t seed[TP_PRICE_SIM_SEED_LEN]);

#endif
