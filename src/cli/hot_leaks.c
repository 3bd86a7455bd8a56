/*
 * Leaked hot index entries (see include/tickpool/cli/hot_leaks.h).
 */
#include "tickpool/cli/hot_leaks.h"

#include "tickpool/base/common.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/store/sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t tp_hot_leaks_since_ms(void)
{
    return tp_now_ms() - (int64_t)tp_keys_idem_ttl_s() * 1000 - TP_KEYS_IDEM_SLACK_MS;
}

/* Runs one command; a failure or an error reply is printed and returned. */
static int run(struct tp_store_sync *r, struct tp_store_value **v, const char *what,
               const char *fmt, const char *a1, const char *a2)
{
    int rc = tp_store_sync_command(r, v, fmt, a1, a2);
    if (rc == 0 && (*v)->type == TP_REPLY_ERROR) {
        fprintf(stderr, "redis %s: %s\n", what, (*v)->str);
        tp_store_value_free(*v);
        *v = NULL;
        return TP_EIO;
    }
    if (rc != 0)
        fprintf(stderr, "redis %s failed: %s\n", what, tp_strerror(rc));
    return rc;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

/* "<round_id>:<placed_ms>" at the start of an entry (either form). */
static bool entry_parse(const char *e, int64_t *round, int64_t *placed)
{
    char *end;
    long long rid = strtoll(e, &end, 10);
    if (end == e || *end != ':' || rid < 1)
        return false;
    const char *p = end + 1;
    long long ms = strtoll(p, &end, 10);
    if (end == p || (*end != '\0' && *end != '|'))
        return false;
    *round = rid;
    *placed = ms;
    return true;
}

static void keep_leak(struct tp_hot_leaks *l, int bucket, int64_t round, const char *f, size_t n)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->a = tp_xrealloc(l->a, l->cap * sizeof(*l->a));
    }
    char *copy = tp_xmalloc(n + 1);
    memcpy(copy, f, n);
    copy[n] = '\0';
    l->a[l->n++] = (struct tp_hot_leak){.bucket = bucket, .round = round, .field = copy, .len = n};
}

static int cmp_leak(const void *x, const void *y)
{
    const struct tp_hot_leak *a = x, *b = y;
    if (a->bucket != b->bucket)
        return a->bucket < b->bucket ? -1 : 1;
    return a->round < b->round ? -1 : a->round > b->round;
}

/* The ids in tp:{g}:rounds, sorted. */
struct hot_rounds {
    int64_t *id;
    size_t n;
};

static int read_hot(struct tp_store_sync *r, struct hot_rounds *h)
{
    struct tp_store_value *v;
    int rc = run(r, &v, "ZRANGE", "ZRANGE %s 0 -1", TP_KEYS_ROUNDS, NULL);
    if (rc != 0)
        return rc;
    h->n = v->n;
    h->id = tp_xmalloc((v->n > 0 ? v->n : 1) * sizeof(*h->id));
    for (size_t i = 0; i < v->n; i++)
        h->id[i] = v->elem[i]->str ? strtoll(v->elem[i]->str, NULL, 10) : 0;
    tp_store_value_free(v);
    qsort(h->id, h->n, sizeof(*h->id), cmp_i64);
    return 0;
}

static bool is_hot(const struct hot_rounds *h, int64_t round)
{
    return bsearch(&round, h->id, h->n, sizeof(*h->id), cmp_i64) != NULL;
}

/* Counts (and keeps) the leaks among one HSCAN reply's field/value pairs `kv` of bucket b:
 * entries whose round was hot neither before the HSCAN nor after it. */
static void count_page(const struct tp_store_value *kv, int b, const struct hot_rounds *before,
                       const struct hot_rounds *after, int64_t since_ms, bool keep,
                       struct tp_hot_leaks *out)
{
    for (size_t i = 0; i + 1 < kv->n; i += 2) {
        int64_t round, placed;
        out->entries++;
        if (kv->elem[i + 1]->str == NULL || !entry_parse(kv->elem[i + 1]->str, &round, &placed) ||
            is_hot(before, round) || is_hot(after, round))
            continue;
        out->leaked++;
        if (placed < since_ms) {
            out->past_ttl++;
            if (keep)
                keep_leak(out, b, round, kv->elem[i]->str, kv->elem[i]->len);
        } else if (placed > out->youngest_ms) {
            out->youngest_ms = placed;
        }
    }
}

int tp_hot_leaks_find(struct tp_store_sync *r, int buckets, int64_t since_ms, bool keep,
                      struct tp_hot_leaks *out)
{
    memset(out, 0, sizeof(*out));
    /* The hot rounds are read before each HSCAN call and again after it. An entry it returns
     * whose round is in neither read is a leak: its round was gone before the call (archival
     * drops a round's entries before its id, so only an older version's leaves one), and was
     * not opened during it either. Neither read alone would do: archival may drop a round hot
     * before the call during it (its entries read, its id gone after), and a round opened
     * during the call is in no earlier read; its id says nothing either, since with no round
     * in Redis the next one opens as 1 (round_boundary.lua: max id + 1). A round is never both
     * opened and archived within one call (archival keeps the newest 16). */
    struct hot_rounds before, after = {0};
    int rc = read_hot(r, &before);
    if (rc != 0)
        return rc;
    /* Both parts of each bucket's index, the young one first: an entry promoted during the walk
     * (bet_batch.lua moves young entries into the big part) was seen there before it moved, or
     * is seen in the big part after. */
    for (int p = 0; p < 2 * buckets && rc == 0; p++) {
        int b = p / 2;
        struct tp_key k;
        if (p % 2 == 0)
            tp_keys_idem_young(&k, b);
        else
            tp_keys_idem_hot(&k, b);
        char cursor[32] = "0";
        do {
            struct tp_store_value *s;
            rc = run(r, &s, "HSCAN", "HSCAN %s %s COUNT 1000", k.s, cursor);
            if (rc != 0)
                break;
            if (s->n != 2 || s->elem[0]->str == NULL || s->elem[1]->type != TP_REPLY_ARRAY) {
                fprintf(stderr, "redis HSCAN: unexpected reply\n");
                tp_store_value_free(s);
                rc = TP_EPROTO;
                break;
            }
            rc = read_hot(r, &after);
            if (rc == 0) {
                count_page(s->elem[1], b, &before, &after, since_ms, keep, out);
                free(before.id);
                before = after;
                after = (struct hot_rounds){0};
            }
            snprintf(cursor, sizeof(cursor), "%s", s->elem[0]->str);
            tp_store_value_free(s);
        } while (rc == 0 && strcmp(cursor, "0") != 0);
    }
    free(before.id);
    /* HSCAN may return a field twice (a rehash between calls): the caller's steps are
     * idempotent, and the counts are the operator's, so neither needs them unique. */
    if (out->n > 1)
        qsort(out->a, out->n, sizeof(*out->a), cmp_leak);
    return rc;
}

void tp_hot_leaks_free(struct tp_hot_leaks *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->a[i].field);
    free(l->a);
    memset(l, 0, sizeof(*l));
}
