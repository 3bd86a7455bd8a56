/*
 * Rounds and prices HTTP API (see tickpool/api/rounds.h and docs/http-api.md). Everything is
 * asynchronous on the worker's store; a handler replies exactly once (503 `unavailable` when
 * Redis is down or slow). Rounds come from tp_game_round_load and are written as
 * tp_protocol_write_round, the same Round object the WebSocket messages carry. A round that has
 * left Redis (archived after game.retain_s) is read from Postgres through the worker's reader
 * (tp_game_round_load_pg) and written by the same encoder; Postgres down → 503 for that request.
 */
#include "tickpool/api/rounds.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/pause.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/pgr.h"
#include "tickpool/store/store.h"
#include "tickpool/stream/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 20
#define LIST_MAX 100
/* GET /api/v1/prices answers at most the contract's last 5 minutes, whatever the stream keeps
 * (10 minutes, tp_round_ticks_kept): an earlier `since` (0 included) counts from now - 5 minutes,
 * so an anonymous request costs at most 5 minutes of ticks (30,001 at the smallest tick_ms,
 * ~1.1 MB of JSON, against the 60,000 kept). The count is capped as well, keeping the newest:
 * ticks stamped ahead of this node's clock (a leader's clock running fast) cannot grow it. */
#define PRICES_WINDOW_MS (5 * 60 * 1000)
#define PRICES_MAX_TICKS (PRICES_WINDOW_MS / TP_CONFIG_TICK_MS_MIN + 1)

/* A multi-round request: up to LIST_MAX rounds loaded in parallel, written in slot order.
 * Rounds Redis no longer has are then asked of Postgres in one query. */
struct multi {
    struct tp_http_ctx *ctx;
    enum { M_CURRENT, M_LIST, M_ONE } kind;
    int n, pending, err;
    int64_t before; /* M_LIST: ids below it (0: none) */
    int limit;      /* M_LIST: at most this many */
    bool asked_pg;
    int64_t ids[LIST_MAX];
    bool have[LIST_MAX];
    struct tp_game_round rounds[LIST_MAX];
    /* M_CURRENT: the current pair (with its rounds) and the pause, read in parallel. */
    int first_pending;
    struct tp_game_pause pause;
};

struct slot {
    struct multi *m;
    int i;
};

/* Round and price answers change every tick: never cached. */
static void reply_ok(struct tp_http_ctx *ctx, struct tp_buf *b)
{
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-store");
    tp_http_reply_body(ctx, 200, b);
}

static void reply_unavailable(struct tp_http_ctx *ctx)
{
    tp_http_ctx_add_header(ctx, "Retry-After", "1");
    tp_http_reply_error(ctx, 503, "unavailable", "the game store is unavailable");
}

static struct tp_store *ctx_store(struct tp_http_ctx *ctx, int *buckets)
{
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    if (w == NULL)
        return NULL;
    *buckets = tp_worker_config(w)->game.buckets;
    struct tp_store *s = tp_store_of(w);
    return s != NULL && tp_store_is_connected(s) ? s : NULL;
}

static void multi_finish(struct multi *m);

/* Postgres's answer for the rounds Redis did not have. */
static void on_pg_rounds(int err, const struct tp_game_round *rounds, int n, void *ud)
{
    struct multi *m = ud;
    if (err != 0)
        m->err = err;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m->n; i++)
            if (!m->have[i] && m->ids[i] == rounds[j].id) {
                m->rounds[i] = rounds[j];
                m->have[i] = true;
            }
    multi_finish(m);
}

/* Asks Postgres for the rounds Redis did not have (archived ones). Returns true when the
 * answer will finish the request. */
static bool ask_pg(struct multi *m)
{
    int64_t missing[LIST_MAX];
    int k = 0;
    for (int i = 0; i < m->n; i++)
        if (!m->have[i] && m->ids[i] > 0)
            missing[k++] = m->ids[i];
    m->asked_pg = true;
    if (k == 0 || m->kind == M_CURRENT)
        return false;
    struct tp_worker *w = tp_http_ctx_worker(m->ctx);
    struct tp_pgr *r = w != NULL ? tp_pgr_of(w) : NULL;
    if (r == NULL) /* without Postgres nothing is ever archived */
        return false;
    if (tp_game_round_load_pg(r, missing, k, on_pg_rounds, m) != 0)
        m->err = TP_EUNAVAIL;
    return m->err == 0;
}

static void multi_finish(struct multi *m)
{
    if (m->err == 0 && !m->asked_pg && ask_pg(m))
        return;
    if (m->err != 0) {
        reply_unavailable(m->ctx);
        free(m);
        return;
    }
    if (m->kind == M_ONE && !m->have[0]) {
        tp_http_reply_error(m->ctx, 404, "not_found", "no such round");
        free(m);
        return;
    }
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(m->ctx, &b, &w);
    if (m->kind == M_ONE) {
        tp_protocol_write_round(&w, &m->rounds[0]);
    } else if (m->kind == M_CURRENT) {
        tp_wr_map(&w, 3);
        tp_wr_key(&w, "open");
        if (m->have[0])
            tp_protocol_write_round(&w, &m->rounds[0]);
        else
            tp_wr_null(&w);
        tp_wr_key(&w, "live");
        if (m->have[1])
            tp_protocol_write_round(&w, &m->rounds[1]);
        else
            tp_wr_null(&w);
        tp_wr_key(&w, "paused");
        tp_protocol_write_paused(&w, &m->pause);
    } else {
        int k = 0;
        for (int i = 0; i < m->n; i++)
            k += m->have[i];
        tp_wr_map(&w, 1);
        tp_wr_key(&w, "rounds");
        tp_wr_array(&w, (size_t)k);
        for (int i = 0; i < m->n; i++)
            if (m->have[i])
                tp_protocol_write_round(&w, &m->rounds[i]);
    }
    reply_ok(m->ctx, &b);
    free(m);
}

static void on_slot(int err, const struct tp_game_round *r, void *ud)
{
    struct slot *s = ud;
    struct multi *m = s->m;
    if (err == 0) {
        m->rounds[s->i] = *r;
        m->have[s->i] = true;
    } else if (err != TP_ENOTFOUND && m->err == 0) {
        m->err = err;
    }
    free(s);
    if (--m->pending == 0)
        multi_finish(m);
}

/* Loads ids[0..n) (0 = no round in that slot) and replies. */
static void multi_load(struct multi *m, struct tp_store *store, int buckets, const int64_t *ids)
{
    m->pending = 1; /* held until every load is submitted */
    for (int i = 0; i < m->n; i++) {
        m->ids[i] = ids[i];
        if (ids[i] <= 0)
            continue;
        struct slot *s = tp_xmalloc(sizeof(*s));
        s->m = m;
        s->i = i;
        m->pending++;
        if (tp_game_round_load(store, buckets, ids[i], on_slot, s) != 0) {
            free(s);
            m->pending--;
            m->err = TP_EUNAVAIL;
        }
    }
    if (--m->pending == 0)
        multi_finish(m);
}

/* Both reads of /rounds/current are in (the current pair with its rounds, and the pause). */
static void current_part_done(struct multi *m)
{
    if (--m->first_pending == 0)
        multi_finish(m);
}

static void on_current(int err, const struct tp_game_round *open, const struct tp_game_round *live,
                       void *ud)
{
    struct multi *m = ud;
    if (err != 0)
        m->err = err;
    if (open != NULL) {
        m->rounds[0] = *open;
        m->have[0] = true;
    }
    if (live != NULL) {
        m->rounds[1] = *live;
        m->have[1] = true;
    }
    current_part_done(m);
}

static void on_current_pause(int err, const struct tp_game_pause *p, void *ud)
{
    struct multi *m = ud;
    if (err != 0)
        m->err = TP_EUNAVAIL;
    else
        m->pause = *p;
    current_part_done(m);
}

static void get_current(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int buckets;
    struct tp_store *store = ctx_store(ctx, &buckets);
    struct multi *m = tp_xcalloc(1, sizeof(*m));
    m->ctx = ctx;
    m->kind = M_CURRENT;
    m->n = 2;
    m->first_pending = 2;
    if (store == NULL || tp_game_round_load_current(store, buckets, on_current, m) != 0) {
        free(m);
        reply_unavailable(ctx);
        return;
    }
    if (tp_game_pause_load(store, on_current_pause, m) != 0)
        on_current_pause(TP_EUNAVAIL, NULL, m);
}

static void on_list(int err, const struct tp_store_reply *r, void *ud)
{
    struct multi *m = ud;
    int buckets = 1;
    struct tp_store *store = ctx_store(m->ctx, &buckets);
    if (err != 0 || store == NULL || tp_reply_type(r) != TP_REPLY_ARRAY) {
        m->err = TP_EUNAVAIL;
        multi_finish(m);
        return;
    }
    /* Round ids have no gaps (round_boundary opens only max + 1, counting Postgres's newest
     * round: after a Redis that lost its rounds, the next opens above Postgres's) and the newest
     * round is never archived, so the page is the `limit` ids below `before` up to the newest. */
    int64_t ids[LIST_MAX], top = 0;
    if (tp_reply_len(r) != 1 || !tp_parse_i64(tp_reply_str(tp_reply_at(r, 0), NULL), &top))
        top = 0;
    if (m->before > 0 && m->before - 1 < top)
        top = m->before - 1;
    m->n = 0;
    for (int64_t id = top; id >= 1 && m->n < m->limit; id--)
        ids[m->n++] = id;
    multi_load(m, store, buckets, ids);
}

/* Strict decimal query parameter in [lo, hi]; absent → def. Returns false when malformed. */
static bool query_int(struct tp_http_ctx *ctx, const char *name, int64_t lo, int64_t hi,
                      int64_t def, int64_t *out)
{
    const char *s = tp_http_ctx_query(ctx, name);
    if (s == NULL) {
        *out = def;
        return true;
    }
    if (*s == '\0' || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s))
        return false;
    return tp_parse_i64(s, out) && *out >= lo && *out <= hi;
}

static void get_list(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t limit, before;
    if (!query_int(ctx, "limit", 1, LIST_MAX, LIST_DEFAULT, &limit) ||
        !query_int(ctx, "before", 1, INT64_MAX / 2, 0, &before)) {
        tp_http_reply_error(ctx, 400, "invalid_request",
                            "limit must be 1..100 and before a positive round id");
        return;
    }
    int buckets;
    struct tp_store *store = ctx_store(ctx, &buckets);
    struct multi *m = tp_xcalloc(1, sizeof(*m));
    m->ctx = ctx;
    m->kind = M_LIST;
    m->before = before;
    m->limit = (int)limit;
    if (store == NULL ||
        tp_store_command(store, on_list, m, "ZREVRANGE " TP_KEYS_ROUNDS " 0 0") != 0) {
        free(m);
        reply_unavailable(ctx);
    }
}

static void get_one(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    const char *s = tp_http_ctx_param(ctx, "id");
    int64_t id;
    if (s == NULL || *s == '\0' || strlen(s) > 15 || strspn(s, "0123456789") != strlen(s) ||
        !tp_parse_i64(s, &id) || id < 1) {
        tp_http_reply_error(ctx, 404, "not_found", "no such round");
        return;
    }
    int buckets;
    struct tp_store *store = ctx_store(ctx, &buckets);
    if (store == NULL) {
        reply_unavailable(ctx);
        return;
    }
    struct multi *m = tp_xcalloc(1, sizeof(*m));
    m->ctx = ctx;
    m->kind = M_ONE;
    m->n = 1;
    multi_load(m, store, buckets, &id);
}

static void on_prices(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_http_ctx *ctx = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY) {
        reply_unavailable(ctx);
        return;
    }
    /* XREVRANGE: newest first; the answer is oldest first. */
    size_t n = tp_reply_len(r);
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(ctx, &b, &w);
    tp_wr_array(&w, n);
    for (size_t i = n; i-- > 0;) {
        const struct tp_store_reply *e = tp_reply_at(r, i);
        const char *id = tp_reply_str(tp_reply_at(e, 0), NULL);
        const struct tp_store_reply *f = tp_reply_at(e, 1);
        const char *price = tp_reply_str(tp_reply_at(f, 1), NULL);
        long long ts = id ? strtoll(id, NULL, 10) : 0;
        long long p = price ? strtoll(price, NULL, 10) : 0;
        tp_wr_map(&w, 2);
        tp_wr_key(&w, "ts");
        tp_wr_int(&w, ts);
        tp_wr_key(&w, "price");
        tp_wr_int(&w, p);
    }
    reply_ok(ctx, &b);
}

static void get_prices(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t oldest = tp_now_ms() - PRICES_WINDOW_MS, since;
    if (!query_int(ctx, "since", 0, INT64_MAX / 2, oldest, &since)) {
        tp_http_reply_error(ctx, 400, "invalid_request", "since must be Unix milliseconds");
        return;
    }
    if (since < oldest)
        since = oldest;
    int buckets;
    struct tp_store *store = ctx_store(ctx, &buckets);
    if (store == NULL ||
        tp_store_command(store, on_prices, ctx, "XREVRANGE " TP_KEYS_TICKS " + %lld COUNT %d",
                         (long long)since, PRICES_MAX_TICKS) != 0)
        reply_unavailable(ctx);
}

static void worker_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/rounds/current", get_current, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/rounds/{id}", get_one, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/rounds", get_list, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/prices", get_prices, NULL) == 0);
}

void tp_rounds_install(void)
{
    tp_worker_on_init(worker_init, NULL);
}
