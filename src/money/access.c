/*
 * Account access state (see tickpool/money/access.h): an open-addressing table user_id →
 * {watermark, disabled} per worker, filled by a reload from Redis and kept current by the
 * `account` messages of the broadcast channel.
 *
 * A reload sends one ZRANGEBYSCORE (the live watermarks) and one HKEYS per bucket (the disabled
 * accounts) on the worker's command connection and builds a new table from the replies. The
 * messages applied while those are under way are logged and replayed onto the new table before
 * it replaces the old one: a message published before Redis ran the reads is already in them
 * (replaying it changes nothing, and pub/sub keeps the order of two messages about one user),
 * one published after is not and must not be lost.
 */
#include "tickpool/money/access.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>

#define MOD "access"
/* A reload that could not be sent (the command connection comes up a moment after the
 * subscription at start) or failed is retried this often. */
#define RETRY_S 0.1

/* --- The table --- */

struct entry {
    int64_t user; /* 0 = free */
    int64_t before;
    bool disabled;
};

struct tp_access_table {
    struct entry *v;
    size_t cap; /* a power of two */
    size_t n;
};

struct tp_access_table *tp_access_table_new(void)
{
    struct tp_access_table *t = tp_xcalloc(1, sizeof(*t));
    t->cap = 64;
    t->v = tp_xcalloc(t->cap, sizeof(*t->v));
    return t;
}

void tp_access_table_free(struct tp_access_table *t)
{
    if (t == NULL)
        return;
    free(t->v);
    free(t);
}

/* Fibonacci hashing of the id: sequential ids spread over the whole table. */
static size_t home(const struct tp_access_table *t, int64_t user)
{
    return (size_t)(((uint64_t)user * 11400714819323198485ull) >> 20) & (t->cap - 1);
}

static struct entry *find(const struct tp_access_table *t, int64_t user)
{
    for (size_t i = home(t, user);; i = (i + 1) & (t->cap - 1)) {
        struct entry *e = &t->v[i];
        if (e->user == user || e->user == 0)
            return e;
    }
}

static void grow(struct tp_access_table *t)
{
    struct entry *old = t->v;
    size_t cap = t->cap;
    t->cap *= 2;
    t->v = tp_xcalloc(t->cap, sizeof(*t->v));
    for (size_t i = 0; i < cap; i++)
        if (old[i].user != 0)
            *find(t, old[i].user) = old[i];
    free(old);
}

void tp_access_table_apply(struct tp_access_table *t, const struct tp_access_update *u)
{
    if (u->user_id <= 0 || (!u->has_revoked && !u->has_disabled))
        return;
    if ((t->n + 1) * 4 > t->cap * 3) /* load factor at most 3/4: probes stay short */
        grow(t);
    struct entry *e = find(t, u->user_id);
    if (e->user == 0) {
        *e = (struct entry){.user = u->user_id};
        t->n++;
    }
    if (u->has_revoked && u->revoked_before > e->before)
        e->before = u->revoked_before;
    if (u->has_disabled)
        e->disabled = u->disabled;
}

enum tp_access tp_access_table_check(const struct tp_access_table *t, int64_t user_id,
                                     int64_t exp_ms)
{
    if (t->n == 0)
        return TP_ACCESS_OK;
    const struct entry *e = find(t, user_id);
    if (e->user == 0)
        return TP_ACCESS_OK;
    if (e->disabled)
        return TP_ACCESS_DISABLED;
    return exp_ms <= e->before ? TP_ACCESS_REVOKED : TP_ACCESS_OK;
}

size_t tp_access_table_prune(struct tp_access_table *t, int64_t now_ms)
{
    struct entry *old = t->v;
    size_t cap = t->cap;
    t->v = tp_xcalloc(cap, sizeof(*t->v));
    t->n = 0;
    for (size_t i = 0; i < cap; i++) {
        if (old[i].user == 0 || (!old[i].disabled && old[i].before < now_ms))
            continue;
        *find(t, old[i].user) = old[i];
        t->n++;
    }
    free(old);
    return t->n;
}

/* --- The worker's state --- */

struct access {
    struct tp_worker *w;
    struct tp_access_table *table; /* NULL until the first reload completed */
    /* The reload under way (gen identifies its replies; a newer reload orphans older ones). */
    uint64_t gen;
    struct tp_access_table *next;
    int pending; /* replies still awaited */
    int parts;   /* struct part in flight, of this reload or an older one: each holds this */
    bool failed;
    struct tp_access_update *log; /* messages applied since the reload started */
    size_t nlog, caplog;
    int64_t pruned_at; /* tp_now_ms of the last prune */
    ev_timer retry;
};

/* The worker slot holding struct access (tp_access_install hands it out). */
static size_t slot = SIZE_MAX;

static struct access *access_of(struct tp_worker *w)
{
    return w != NULL && slot != SIZE_MAX ? tp_worker_slot_get(w, slot) : NULL;
}

enum tp_access tp_access_check(struct tp_worker *w, int64_t user_id, int64_t exp_ms)
{
    struct access *a = access_of(w);
    if (a == NULL || a->table == NULL)
        return TP_ACCESS_UNKNOWN;
    return tp_access_table_check(a->table, user_id, exp_ms);
}

bool tp_access_ready(struct tp_worker *w)
{
    struct access *a = access_of(w);
    return a != NULL && a->table != NULL;
}

void tp_access_apply(struct tp_worker *w, const struct tp_access_update *u)
{
    struct access *a = access_of(w);
    if (a == NULL)
        return;
    tp_log_info(MOD, "account update\tuser_id=%lld revoked_before=%lld disabled=%d",
                (long long)u->user_id, u->has_revoked ? (long long)u->revoked_before : -1LL,
                u->has_disabled ? (int)u->disabled : -1);
    if (a->table != NULL) {
        tp_access_table_apply(a->table, u);
        /* Revocations accumulate (one entry per user who logged out); those whose watermark
         * has passed decide nothing, so drop them about once an hour. */
        int64_t now = tp_now_ms();
        if (now - a->pruned_at > 3600 * 1000) {
            a->pruned_at = now;
            tp_access_table_prune(a->table, now);
        }
    }
    if (a->next != NULL) {
        if (a->nlog == a->caplog) {
            a->caplog = a->caplog ? a->caplog * 2 : 16;
            a->log = tp_xrealloc(a->log, a->caplog * sizeof(*a->log));
        }
        a->log[a->nlog++] = *u;
    }
}

/* One reply of the reload `gen`: the watermarks (revoked) or one bucket's disabled ids. */
struct part {
    struct access *a;
    uint64_t gen;
    bool revoked;
};

static void finish_reload(struct access *a)
{
    if (a->failed) {
        tp_access_table_free(a->next);
        a->next = NULL;
        a->nlog = 0;
        ev_timer_stop(tp_worker_loop(a->w), &a->retry);
        ev_timer_set(&a->retry, RETRY_S, 0.0);
        ev_timer_start(tp_worker_loop(a->w), &a->retry);
        return;
    }
    for (size_t i = 0; i < a->nlog; i++)
        tp_access_table_apply(a->next, &a->log[i]);
    tp_log_info(MOD, "account state loaded\tentries=%zu replayed=%zu", a->next->n, a->nlog);
    tp_access_table_free(a->table);
    a->table = a->next;
    a->next = NULL;
    a->nlog = 0;
    a->pruned_at = tp_now_ms();
}

static void on_part(int err, const struct tp_store_reply *r, void *ud)
{
    struct part *p = ud;
    struct access *a = p->a;
    a->parts--;
    bool current = p->gen == a->gen && a->next != NULL;
    bool revoked = p->revoked;
    free(p);
    if (!current)
        return;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY) {
        tp_log_warn(MOD, "account state read failed\terr=%s", tp_strerror(err));
        a->failed = true;
    } else {
        size_t n = tp_reply_len(r), step = revoked ? 2 : 1;
        for (size_t i = 0; i + step <= n; i += step) {
            struct tp_access_update u = {0};
            const char *id = tp_reply_str(tp_reply_at(r, i), NULL);
            if (!tp_parse_i64(id, &u.user_id))
                continue;
            if (revoked) {
                /* Scores are integers below 2^53, which Redis prints without exponent. */
                const char *w = tp_reply_str(tp_reply_at(r, i + 1), NULL);
                u.has_revoked = tp_parse_i64(w, &u.revoked_before);
            } else {
                u.has_disabled = u.disabled = true;
            }
            tp_access_table_apply(a->next, &u);
        }
    }
    if (--a->pending == 0)
        finish_reload(a);
}

static void send_part(struct access *a, struct tp_store *st, bool revoked, int bucket)
{
    struct part *p = tp_xmalloc(sizeof(*p));
    *p = (struct part){.a = a, .gen = a->gen, .revoked = revoked};
    struct tp_key k;
    int rc = revoked ? tp_store_command(st, on_part, p, "ZRANGEBYSCORE %s %lld +inf WITHSCORES",
                                        TP_KEYS_REVOKED, (long long)tp_now_ms())
                     : tp_store_command(st, on_part, p, "HKEYS %s", tp_keys_disabled(&k, bucket));
    a->pending++;
    a->parts++;
    if (rc != 0) {
        free(p);
        a->pending--;
        a->parts--;
        a->failed = true;
    }
}

static void start_reload(struct access *a)
{
    struct tp_store *st = tp_store_of(a->w);
    a->gen++;
    tp_access_table_free(a->next);
    a->next = tp_access_table_new();
    a->nlog = 0;
    a->failed = false;
    a->pending = 1; /* held until every read is sent */
    send_part(a, st, true, 0);
    for (int b = 0; b < tp_worker_config(a->w)->game.buckets && !a->failed; b++)
        send_part(a, st, false, b);
    if (--a->pending == 0)
        finish_reload(a);
}

void tp_access_reload(struct tp_worker *w)
{
    struct access *a = access_of(w);
    if (a != NULL)
        start_reload(a);
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    start_reload(t->data);
}

/* --- Installation --- */

static void init_worker(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct access *a = tp_xcalloc(1, sizeof(*a));
    a->w = w;
    ev_timer_init(&a->retry, on_retry, RETRY_S, 0.0);
    a->retry.data = a;
    tp_worker_slot_set(w, slot, a);
}

static void on_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct access *a = access_of(w);
    if (a != NULL)
        ev_timer_stop(tp_worker_loop(w), &a->retry);
}

/* The worker exits (its connections closed): the state goes, unless a reload's read is still in
 * flight. Its answer, given at the store's exit after this hook (the store is installed first),
 * reads `a`; the process exits next. Once the slot is empty every entry point is a no-op. */
static void exit_worker(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct access *a = access_of(w);
    if (a == NULL || a->parts > 0)
        return;
    ev_timer_stop(tp_worker_loop(w), &a->retry);
    tp_access_table_free(a->table);
    tp_access_table_free(a->next);
    free(a->log);
    free(a);
    tp_worker_slot_set(w, slot, NULL);
}

void tp_access_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(init_worker, NULL);
    tp_worker_on_drain(on_drain, NULL);
    tp_worker_on_exit(exit_worker, NULL);
}
