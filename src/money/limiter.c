/*
 * Bet admission limiter (see tickpool/money/limiter.h): a counter plus a chained hash set of the
 * (user, key) pairs in flight. Entries are allocated per admitted request; the table has a fixed
 * number of chains chosen from max_inflight, so lookups stay short without rehashing.
 */
#include "tickpool/money/limiter.h"
#include "tickpool/base/common.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next;
    uint64_t hash;
    int64_t user;
    size_t len;
    char key[TP_LIMITER_KEY_MAX];
};

struct tp_limiter {
    int max;
    int inflight;
    size_t mask; /* chains - 1 (a power of two) */
    struct entry **chains;
};

/* FNV-1a over the user id and the key bytes: cheap and good enough for a process-local set
 * whose keys an attacker controls only within one user's own entries. */
static uint64_t hash_of(int64_t user, const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 8; i++) {
        h ^= (uint8_t)((uint64_t)user >> (8 * i));
        h *= 1099511628211ull;
    }
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)key[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

struct tp_limiter *tp_limiter_new(int max_inflight)
{
    TP_ASSERT(max_inflight >= 1);
    struct tp_limiter *l = tp_xcalloc(1, sizeof(*l));
    l->max = max_inflight;
    size_t n = 16;
    while (n < (size_t)max_inflight && n < (1u << 16))
        n <<= 1;
    l->mask = n - 1;
    l->chains = tp_xcalloc(n, sizeof(*l->chains));
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
    uint64_t h = hash_of(user_id, key, len);
    struct entry **pp = find(l, h, user_id, key, len);
    /* A duplicate is answered 409 even at full capacity: its answer does not depend on load. */
    if (*pp != NULL)
        return TP_ECONFLICT;
    if (l->inflight >= l->max)
        return TP_EAGAIN;
    struct entry *e = tp_xmalloc(sizeof(*e));
    e->next = NULL;
    e->hash = h;
    e->user = user_id;
    e->len = len;
    memcpy(e->key, key, len);
    *pp = e;
    l->inflight++;
    return 0;
}

void tp_limiter_release(struct tp_limiter *l, int64_t user_id, const char *key, size_t len)
{
    TP_ASSERT(len >= 1 && len <= TP_LIMITER_KEY_MAX);
    uint64_t h = hash_of(user_id, key, len);
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
