/*
 * Per-client rate limits in shared memory (see tickpool/base/ratelimit.h).
 *
 * A word is 0 (free) or tag << 40 | tat, where tag is 24 bits of the key's hash (never 0) and
 * tat the bucket's theoretical arrival time in ms since `base` (a monotonic instant taken at
 * init, shared by the forked processes; times before it count as 1, so no live word is 0).
 * 2^40 ms is 34 years.
 *
 * GCRA with interval T = 60000 / per_min ms and tolerance tau = (burst - 1) * T: at `now`, with
 * t = max(tat, now), a request is allowed when t - now <= tau, and then tat = t + T; otherwise
 * it is refused until t - tau. A free word, or one whose tat has passed, is a full bucket.
 */
#include "tickpool/base/ratelimit.h"
#include "tickpool/base/common.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#define WAYS 4
#define TAT_BITS 40
#define TAT_MASK ((UINT64_C(1) << TAT_BITS) - 1)
#define TRIES 8

static _Atomic uint64_t private_table[TP_RATELIMIT_SLOTS];
static _Atomic uint64_t *table = private_table;
static int64_t base_ms = 0; /* the private table counts from 0 */

int tp_ratelimit_init(void)
{
    void *p = mmap(NULL, sizeof(private_table), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return TP_ENOMEM;
    table = p; /* zero-filled: every entry free */
    base_ms = tp_mono_ms() - 1;
    return 0;
}

/* FNV-1a, finished with a multiply-xorshift so the low bits (the set) and the high bits (the
 * tag) are both well mixed. */
static uint64_t hash_of(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t word(uint64_t tag, int64_t tat)
{
    return tag << TAT_BITS | ((uint64_t)tat & TAT_MASK);
}

/* The tat of a live word (in ms since base), or 0 for a free one. */
static int64_t tat_of(uint64_t w)
{
    return w == 0 ? 0 : (int64_t)(w & TAT_MASK);
}

int64_t tp_ratelimit_take(const struct tp_ratelimit_rule *rule, const void *key, size_t len,
                          int64_t now_ms)
{
    if (rule == NULL || rule->per_min <= 0 || key == NULL || len == 0 || len > TP_RATELIMIT_KEY_MAX)
        return 0;
    int64_t T = TP_MAX(60000 / rule->per_min, 1);
    int64_t tau = (int64_t)(TP_MAX(rule->burst, 1) - 1) * T;
    int64_t now = TP_MAX(now_ms - base_ms, 1);
    uint64_t h = hash_of(key, len);
    uint64_t tag = (h >> TAT_BITS) & 0xffffff;
    if (tag == 0)
        tag = 1;
    _Atomic uint64_t *set = &table[h & (TP_RATELIMIT_SLOTS - 1) & ~(uint64_t)(WAYS - 1)];

    for (int attempt = 0; attempt < TRIES; attempt++) {
        /* The client's entry, or the entry to give it: free, idle, or nearest to idle. */
        int mine = -1, victim = 0;
        uint64_t seen[WAYS];
        for (int i = 0; i < WAYS; i++) {
            seen[i] = atomic_load_explicit(&set[i], memory_order_relaxed);
            if (seen[i] != 0 && seen[i] >> TAT_BITS == tag) {
                mine = i;
                break;
            }
            if (tat_of(seen[i]) < tat_of(seen[victim]))
                victim = i;
        }
        int i = mine >= 0 ? mine : victim;
        int64_t tat = mine >= 0 ? tat_of(seen[i]) : 0;
        int64_t t = TP_MAX(tat, now);
        if (t - now > tau)
            return t - tau - now;
        uint64_t want = word(tag, t + T);
        if (atomic_compare_exchange_strong_explicit(&set[i], &seen[i], want, memory_order_relaxed,
                                                    memory_order_relaxed))
            return 0;
        /* Another process changed the entry meanwhile: look again. */
    }
    return 0; /* contention beyond reason: allow rather than stall the loop */
}
