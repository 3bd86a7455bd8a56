/*
 * loadgen's latency histogram (bench only, no I/O).
 *
 * Log-linear histogram of microseconds (HdrHistogram's layout with 7 sub-bucket bits): values
 * below 128 µs are exact, above that every power of two is split into 128 linear buckets, so a
 * reported percentile is at most 0.8% above the true value. Values are clamped to 60 s.
 */
#ifndef TP_BENCH_LG_HIST_H
#define TP_BENCH_LG_HIST_H

#include <stdint.h>

#define LG_HIST_SUB 128
#define LG_HIST_NB (LG_HIST_SUB + 40 * LG_HIST_SUB)
#define LG_HIST_MAX_US 60000000ull

/* Zero-initialised storage is an empty histogram. */
struct lg_hist {
    uint64_t counts[LG_HIST_NB];
    uint64_t n, max, sum;
};

/** Records one value `us` (µs, clamped to 60 s). */
void lg_hist_record(struct lg_hist *h, uint64_t us);

/** Value at percentile `p` (0..100), at most the largest value recorded; 0 when empty. */
uint64_t lg_hist_pct(const struct lg_hist *h, double p);

#endif
