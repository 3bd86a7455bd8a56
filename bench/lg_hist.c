/*
 * loadgen's latency histogram: see lg_hist.h for the layout and its error bound.
 */
#include <math.h>

#include "tickpool/base/common.h"

#include "lg_hist.h"

#define H_SUB LG_HIST_SUB
#define H_NB LG_HIST_NB
#define H_MAX_US LG_HIST_MAX_US

static int h_index(uint64_t v)
{
    if (v < H_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int idx = H_SUB + (e - 7) * H_SUB + (int)((v >> (e - 7)) - H_SUB);
    return idx < H_NB ? idx : H_NB - 1;
}

/* Highest value that lands in bucket idx. */
static uint64_t h_value(int idx)
{
    if (idx < H_SUB)
        return (uint64_t)idx;
    int e = (idx - H_SUB) / H_SUB + 7;
    uint64_t sub = (uint64_t)((idx - H_SUB) % H_SUB + H_SUB);
    return ((sub + 1) << (e - 7)) - 1;
}

void lg_hist_record(struct lg_hist *h, uint64_t us)
{
    if (us > H_MAX_US)
        us = H_MAX_US;
    h->counts[h_index(us)]++;
    h->n++;
    h->sum += us;
    if (us > h->max)
        h->max = us;
}

uint64_t lg_hist_pct(const struct lg_hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->n), seen = 0;
    if (want == 0)
        want = 1;
    for (int i = 0; i < H_NB; i++) {
        seen += h->counts[i];
        if (seen >= want)
            return TP_MIN(h_value(i), h->max);
    }
    return h->max;
}
