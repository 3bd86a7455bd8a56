/*
 * Bet admission limiter (see tickpool/money/limiter.h): a counter plus a chained hash set of the
 * (user, key) pairs in flight. Entries are allocated per admitted request, each the size of its
 * key.
 *
 * The table follows the number in flight, not max_inflight: it starts small and doubles
 * whenever the entries outnumber the chains (never shrinking, so it settles at the peak). A
 * table sized from max_inflight up front (64k chains, 512 KiB, for the bench's limit of 100,000)
 * cost a cache miss or two on every acquire and release, 7.5 % of a worker's CPU per bet at
 * the WebSocket ceiling (perf, session 8), while a few hundred bets were in flight.
 */
#include "tickpool/money/limiter.h"
#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

#include <stdlib.h>
#include <string.h>

#define CHAINS_MIN 64

struct entry {
    struct entry *next;
    uint64_t hash;
    int64_t user;
    size_t len;
    char key[]; /* len bytes */
};

struct tp_limiter {
    int max;
    int inflight;
    size_t mask; /* chains - 1 (a power of two) */
    struct entry **chains;
    uint64_t seed; /* random per limiter: which keys share a chain is not predictable */
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* Eight bytes at a time, each word folded in by a multiply: a key of 20 bytes is three steps
 * (FNV-1a's byte at a time was a chain of 28 dependent multiplies per call, two calls per bet). */
static uint64_t hash_of(uint64_t seed, int64_t user, const char *key, size_t len)
{
    uint64_t h = mix(seed ^ (uint64_t)user ^ ((uint64_t)len << 56));
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, key, 8);
        h = mix(h ^ w);
        key += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t w = 0;
        memcpy(&w, key, len);
        h = mix(h ^ w);
    }
    return h;
}

struct tp_limiter *tp_limiter_new(int max_inflight)
{
    TP_ASSERT(max_inflight >= 1);
    struct tp_limiter *l = tp_xcalloc(1, sizeof(*l));
    l->max = max_inflight;
    l->mask = CHAINS_MIN - 1;
    l->chains = tp_xcalloc(CHAINS_MIN, sizeof(*l->chains));
    if (tp_random_bytes(&l->seed, sizeof(l->seed)) != 0)
        l->seed = (uint64_t)tp_mono_ns();
    return l;
}

void tp_limiter_free(struct tp_limiter *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i <= l->mask; i++) {
        struct entry *e = l->chains[i];
        while (e != NULL) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(l->chains);
    free(l);
}

/* Twice the chains, every entry moved to its chain by its stored hash. */
static void grow(struct tp_limiter *l)
{
    size_t n = 2 * (l->mask + 1);
    struct entry **chains = tp_xcalloc(n, sizeof(*chains));
    for (size_t i = 0; i <= l->mask; i++) {
        struct entry *e = l->chains[i];
        while (e != NULL) {
            struct entry *next = e->next;
            e->next = chains[e->hash & (n - 1)];
            chains[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(l->chains);
    l->chains = chains;
    l->mask = n - 1;
}

static struct entry **find(struct tp_limiter *l, uint64_t h, int64_t user, const char *key,
                           size_t len)
{
    struct entry **pp = &l->chains[h & l->mask];
    for (; *pp != NULL; pp = &(*pp)->next) {
        struct entry *e = *pp;
        if (e->hash == h && e->user == user && e->len == len && memcmp(e->key, key, len) == 0)
            return pp;
    }
    return pp;
}

int tp_limiter_acquire(struct tp_limiter *l, int64_t user_id, const char *key, size_t len)
{
    if (len == 0 || len > TP_LIMITER_KEY_MAX)
        return TP_EINVAL;
    uint64_t h = hash_of(l->seed, user_id, key, len);
    struct entry **pp = find(l, h, user_id, key, len);
    /* A duplicate is answered 409 even at full capacity: its answer does not depend on load. */
    if (*pp != NULL)
        return TP_ECONFLICT;
    if (l->inflight >= l->max)
        return TP_EAGAIN;
    struct entry *e = tp_xmalloc(sizeof(*e) + len);
    e->hash = h;
    e->user = user_id;
    e->len = len;
    memcpy(e->key, key, len);
    if ((size_t)l->inflight > l->mask) {
        grow(l);
        pp = &l->chains[h & l->mask]; /* its chain moved; the key is in none */
    }
    e->next = *pp;
    *pp = e;
    l->inflight++;
    return 0;
}

void tp_limiter_release(struct tp_limiter *l, int64_t user_id, const char *key, size_t len)
{
    TP_ASSERT(len >= 1 && len <= TP_LIMITER_KEY_MAX);
    uint64_t h = hash_of(l->seed, user_id, key, len);
    struct entry **pp = find(l, h, user_id, key, len);
    TP_ASSERT(*pp != NULL);
    struct entry *e = *pp;
    *pp = e->next;
    free(e);
    l->inflight--;
}

int tp_limiter_inflight(const struct tp_limiter *l)
{
    return l->inflight;
}
