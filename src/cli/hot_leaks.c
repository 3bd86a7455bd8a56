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

int tp_hot_leaks_find(struct tp_store_sync *r, int buckets, int64_t since_ms, bool keep,
                      struct tp_hot_leaks *out)
{
    memset(out, 0, sizeof(*out));
    /* The hot rounds first: archival drops a round's entries before its id, so an entry read
     * later that names a round missing here is a leak, unless the round is newer than all. */
    struct tp_store_value *ids;
    int rc = run(r, &ids, "ZRANGE", "ZRANGE %s 0 -1", TP_KEYS_ROUNDS, NULL);
    if (rc != 0)
        return rc;
    size_t nhot = ids->n;
    int64_t *hot = tp_xmalloc((nhot > 0 ? nhot : 1) * sizeof(*hot));
    for (size_t i = 0; i < nhot; i++)
        hot[i] = ids->elem[i]->str ? strtoll(ids->elem[i]->str, NULL, 10) : 0;
    tp_store_value_free(ids);
    qsort(hot, nhot, sizeof(*hot), cmp_i64);
    int64_t top = nhot > 0 ? hot[nhot - 1] : 0;

    for (int b = 0; b < buckets && rc == 0; b++) {
        struct tp_key k;
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
            snprintf(cursor, sizeof(cursor), "%s", s->elem[0]->str);
            const struct tp_store_value *kv = s->elem[1];
            for (size_t i = 0; i + 1 < kv->n; i += 2) {
                int64_t round, placed;
                out->entries++;
                if (kv->elem[i + 1]->str == NULL ||
                    !entry_parse(kv->elem[i + 1]->str, &round, &placed) || round > top ||
                    bsearch(&round, hot, nhot, sizeof(*hot), cmp_i64) != NULL)
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
            tp_store_value_free(s);
        } while (strcmp(cursor, "0") != 0);
    }
    free(hot);
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
