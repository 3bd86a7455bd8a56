/*
 * Game read API: Round views loaded from Redis and encoded per CONTRACT.md §5, and the HTTP
 * handlers for rounds and prices. Everything is asynchronous on the worker's store; a handler
 * replies exactly once (503 `unavailable` when Redis is down or slow).
 */
#include "tickpool/game/game_api.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/net/router.h"
#include "tickpool/store/store.h"
#include "tickpool/net/worker.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 20
#define LIST_MAX 100
#define PRICES_WINDOW_MS (5 * 60 * 1000)

/* --- Parsing --- */

static bool parse_i64(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Parses a comma list of integers ("-10,-3,3,10"; "" is empty) into out[0..cap). Returns the
 * count or -1. */
static int parse_list(const char *s, int64_t *out, int cap)
{
    int n = 0;
    if (*s == '\0')
        return 0;
    while (n < cap) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || end == s || (*end != ',' && *end != '\0'))
            return -1;
        out[n++] = v;
        if (*end == '\0')
            return n;
        s = end + 1;
    }
    return -1;
}

int tp_game_round_parse(const struct tp_store_reply *r, struct tp_game_round *out)
{
    memset(out, 0, sizeof(*out));
    out->winning_band = -1;
    if (tp_reply_type(r) != TP_REPLY_ARRAY)
        return TP_EINVAL;
    size_t n = tp_reply_len(r);
    if (n == 0)
        return TP_ENOTFOUND;
    bool has_id = false, has_rcpt = false;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *k = tp_reply_str(tp_reply_at(r, i), NULL);
        const char *v = tp_reply_str(tp_reply_at(r, i + 1), NULL);
        if (k == NULL || v == NULL)
            return TP_EINVAL;
        int64_t x = 0;
        bool num = parse_i64(v, &x);
        if (strcmp(k, "id") == 0 && num) {
            out->id = x;
            has_id = true;
        } else if (strcmp(k, "state") == 0) {
            if (tp_round_state_parse(v, strlen(v), &out->state) != 0)
                return TP_EINVAL;
        } else if (strcmp(k, "opens_at") == 0 && num) {
            out->t.opens_at = x;
        } else if (strcmp(k, "locks_at") == 0 && num) {
            out->t.locks_at = x;
        } else if (strcmp(k, "closes_at") == 0 && num) {
            out->t.closes_at = x;
        } else if (strcmp(k, "seed_hash") == 0) {
            snprintf(out->seed_hash, sizeof(out->seed_hash), "%s", v);
        } else if (strcmp(k, "seed") == 0) {
            snprintf(out->seed, sizeof(out->seed), "%s", v);
        } else if (strcmp(k, "lock_price") == 0 && num) {
            out->lock_price = x;
            out->has_lock = true;
        } else if (strcmp(k, "close_price") == 0 && num) {
            out->close_price = x;
            out->has_close = true;
        } else if (strcmp(k, "winning_band") == 0 && num) {
            out->winning_band = (int)x;
        } else if (strcmp(k, "edges") == 0) {
            int64_t e[TP_ROUND_MAX_EDGES];
            int ne = parse_list(v, e, TP_ROUND_MAX_EDGES);
            if (ne < 0)
                return TP_EINVAL;
            for (int j = 0; j < ne; j++)
                out->edges[j] = (int)e[j];
            out->n_edges = ne;
        } else if (strcmp(k, "rake_bps") == 0 && num) {
            out->rake_bps = (int)x;
        } else if (strcmp(k, "vol_ppb") == 0 && num) {
            out->vol_ppb = x;
        } else if (strcmp(k, "betting_ms") == 0 && num) {
            out->betting_ms = x;
        } else if (strcmp(k, "tick_ms") == 0 && num) {
            out->tick_ms = x;
        } else if (strcmp(k, "total") == 0 && num) {
            out->total = x;
            out->has_plan = true;
        } else if (strcmp(k, "winning_stake") == 0 && num) {
            out->winning_stake = x;
        } else if (strcmp(k, "rake") == 0 && num) {
            out->rake = x;
        } else if (strcmp(k, "pot") == 0 && num) {
            out->pot = x;
        } else if (strcmp(k, "refund_all") == 0) {
            out->refund_all = strcmp(v, "1") == 0;
        } else if (strcmp(k, "pools") == 0) {
            int np = parse_list(v, out->pools, TP_ROUND_MAX_BANDS);
            if (np < 0)
                return TP_EINVAL;
            out->has_pools = true;
        } else if (strncmp(k, "r_", 2) == 0 && num) {
            has_rcpt = true;
            if (strcmp(k, "r_total") == 0)
                out->receipt.total = x;
            else if (strcmp(k, "r_winning_stake") == 0)
                out->receipt.winning_stake = x;
            else if (strcmp(k, "r_rake") == 0)
                out->receipt.rake = x;
            else if (strcmp(k, "r_breakage") == 0)
                out->receipt.breakage = x;
            else if (strcmp(k, "r_payouts") == 0)
                out->receipt.payouts = x;
            else if (strcmp(k, "r_refunds") == 0)
                out->receipt.refunds = x;
        }
    }
    out->has_receipt = has_rcpt;
    if (!has_id || out->state == TP_ROUND_NONE ||
        tp_round_check_edges(out->edges, out->n_edges) != 0)
        return TP_EINVAL;
    return 0;
}

/* --- Encoding --- */

void tp_game_round_write(struct tp_wr *w, const struct tp_game_round *r)
{
    struct tp_round_band_desc bands[TP_ROUND_MAX_BANDS];
    int nb = tp_round_bands(r->edges, r->n_edges, bands, TP_ROUND_MAX_BANDS);
    TP_ASSERT(nb > 0);
    int64_t total = 0;
    for (int i = 0; i < nb; i++)
        total += r->pools[i];
    double mult[TP_ROUND_MAX_BANDS];
    if (tp_settle_multipliers(r->pools, nb, r->rake_bps, mult) != 0)
        for (int i = 0; i < nb; i++)
            mult[i] = NAN;
    bool final = tp_round_is_final(r->state);

    /* 15 contract fields plus vol_ppb and tick_ms: the integers a verifier (the web client's
     * fairness check) needs to recompute the ticks without touching floats. */
    tp_wr_map(w, 17);
    tp_wr_key(w, "id");
    tp_wr_int(w, r->id);
    tp_wr_key(w, "state");
    tp_wr_str(w, tp_round_state_name(tp_round_state_public(r->state)));
    tp_wr_key(w, "opens_at");
    tp_wr_int(w, r->t.opens_at);
    tp_wr_key(w, "locks_at");
    tp_wr_int(w, r->t.locks_at);
    tp_wr_key(w, "closes_at");
    tp_wr_int(w, r->t.closes_at);
    tp_wr_key(w, "seed_hash");
    tp_wr_str(w, r->seed_hash);
    tp_wr_key(w, "seed");
    tp_wr_str(w, r->seed[0] ? r->seed : NULL);
    tp_wr_key(w, "vol_ppb");
    tp_wr_int(w, r->vol_ppb);
    tp_wr_key(w, "tick_ms");
    tp_wr_int(w, r->tick_ms);
    tp_wr_key(w, "lock_price");
    if (r->has_lock)
        tp_wr_int(w, r->lock_price);
    else
        tp_wr_null(w);
    tp_wr_key(w, "close_price");
    if (r->has_close)
        tp_wr_int(w, r->close_price);
    else
        tp_wr_null(w);
    tp_wr_key(w, "bands");
    tp_wr_array(w, (size_t)nb);
    for (int i = 0; i < nb; i++) {
        tp_wr_map(w, 3);
        tp_wr_key(w, "index");
        tp_wr_int(w, bands[i].index);
        tp_wr_key(w, "lo_bps");
        if (bands[i].has_lo)
            tp_wr_int(w, bands[i].lo_bps);
        else
            tp_wr_null(w);
        tp_wr_key(w, "hi_bps");
        if (bands[i].has_hi)
            tp_wr_int(w, bands[i].hi_bps);
        else
            tp_wr_null(w);
    }
    tp_wr_key(w, "pools");
    tp_wr_array(w, (size_t)nb);
    for (int i = 0; i < nb; i++)
        tp_wr_int(w, r->pools[i]);
    tp_wr_key(w, "total");
    tp_wr_int(w, total);
    tp_wr_key(w, "multipliers");
    tp_wr_array(w, (size_t)nb);
    for (int i = 0; i < nb; i++) {
        if (isnan(mult[i]))
            tp_wr_null(w);
        else
            tp_wr_double(w, mult[i]);
    }
    tp_wr_key(w, "winning_band");
    if (r->winning_band >= 0 && r->has_close)
        tp_wr_int(w, r->winning_band);
    else
        tp_wr_null(w);
    tp_wr_key(w, "receipt");
    if (final && r->has_receipt) {
        tp_wr_map(w, 6);
        tp_wr_key(w, "total");
        tp_wr_int(w, r->receipt.total);
        tp_wr_key(w, "winning_stake");
        tp_wr_int(w, r->receipt.winning_stake);
        tp_wr_key(w, "rake");
        tp_wr_int(w, r->receipt.rake);
        tp_wr_key(w, "breakage");
        tp_wr_int(w, r->receipt.breakage);
        tp_wr_key(w, "payouts");
        tp_wr_int(w, r->receipt.payouts);
        tp_wr_key(w, "refunds");
        tp_wr_int(w, r->receipt.refunds);
    } else {
        tp_wr_null(w);
    }
}

/* --- Async round loading --- */

struct load {
    struct tp_store *store;
    int buckets;
    int pending;
    int err;
    tp_game_round_cb cb;
    void *ud;
    struct tp_game_round round;
};

static void load_done(struct load *l)
{
    l->cb(l->err, l->err == 0 ? &l->round : NULL, l->ud);
    free(l);
}

static void on_pool(int err, const struct tp_store_reply *r, void *ud)
{
    struct load *l = ud;
    if (err != 0 && l->err == 0)
        l->err = err;
    if (err == 0 && tp_reply_type(r) == TP_REPLY_ARRAY) {
        size_t n = tp_reply_len(r);
        for (size_t i = 0; i + 1 < n; i += 2) {
            const char *k = tp_reply_str(tp_reply_at(r, i), NULL);
            const char *v = tp_reply_str(tp_reply_at(r, i + 1), NULL);
            int64_t band, amount;
            if (k && v && parse_i64(k, &band) && parse_i64(v, &amount) && band >= 0 &&
                band < TP_ROUND_MAX_BANDS)
                l->round.pools[band] += amount;
        }
    }
    if (--l->pending == 0)
        load_done(l);
}

static void on_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct load *l = ud;
    if (err == 0)
        err = tp_game_round_parse(r, &l->round);
    if (err != 0 || l->round.has_pools) {
        l->err = err;
        load_done(l);
        return;
    }
    /* Pools not recorded yet (open or live round): sum the buckets' live pools. */
    l->pending = l->buckets;
    for (int b = 0; b < l->buckets; b++) {
        if (tp_store_command(l->store, on_pool, l, "HGETALL tp:{b%d}:pool:%lld", b,
                             (long long)l->round.id) != 0) {
            l->err = TP_EUNAVAIL;
            if (--l->pending == 0)
                load_done(l);
        }
    }
}

int tp_game_round_load(struct tp_store *store, int buckets, int64_t id, tp_game_round_cb cb,
                       void *ud)
{
    if (store == NULL)
        return TP_EUNAVAIL;
    struct load *l = tp_xcalloc(1, sizeof(*l));
    l->store = store;
    l->buckets = buckets;
    l->cb = cb;
    l->ud = ud;
    int rc = tp_store_command(store, on_round, l, "HGETALL " TP_GAME_G "round:%lld", (long long)id);
    if (rc != 0)
        free(l);
    return rc;
}

/* --- HTTP handlers --- */

/* A multi-round request: up to LIST_MAX rounds loaded in parallel, written in slot order. */
struct multi {
    struct tp_http_ctx *ctx;
    enum { M_CURRENT, M_LIST } kind;
    int n, pending, err;
    bool have[LIST_MAX];
    struct tp_game_round rounds[LIST_MAX];
};

struct slot {
    struct multi *m;
    int i;
};

static enum tp_fmt ctx_fmt(struct tp_http_ctx *ctx)
{
    return tp_http_ctx_wants_msgpack(ctx) ? TP_FMT_MSGPACK : TP_FMT_JSON;
}

static void reply_buf(struct tp_http_ctx *ctx, struct tp_buf *b)
{
    const char *ct = tp_http_ctx_wants_msgpack(ctx) ? "application/msgpack" : "application/json";
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-store");
    tp_http_reply(ctx, 200, ct, tp_buf_ptr(b), tp_buf_size(b));
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

static void multi_finish(struct multi *m)
{
    if (m->err != 0) {
        reply_unavailable(m->ctx);
        free(m);
        return;
    }
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, ctx_fmt(m->ctx));
    if (m->kind == M_CURRENT) {
        tp_wr_map(&w, 2);
        tp_wr_key(&w, "open");
        if (m->have[0])
            tp_game_round_write(&w, &m->rounds[0]);
        else
            tp_wr_null(&w);
        tp_wr_key(&w, "live");
        if (m->have[1])
            tp_game_round_write(&w, &m->rounds[1]);
        else
            tp_wr_null(&w);
    } else {
        int k = 0;
        for (int i = 0; i < m->n; i++)
            k += m->have[i];
        tp_wr_map(&w, 1);
        tp_wr_key(&w, "rounds");
        tp_wr_array(&w, (size_t)k);
        for (int i = 0; i < m->n; i++)
            if (m->have[i])
                tp_game_round_write(&w, &m->rounds[i]);
    }
    reply_buf(m->ctx, &b);
    tp_buf_deinit(&b);
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

static void on_current(int err, const struct tp_store_reply *r, void *ud)
{
    struct multi *m = ud;
    int buckets = 1;
    struct tp_store *store = ctx_store(m->ctx, &buckets);
    if (err != 0 || store == NULL || tp_reply_len(r) != 2) {
        m->err = TP_EUNAVAIL;
        multi_finish(m);
        return;
    }
    int64_t ids[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        if (!parse_i64(tp_reply_str(tp_reply_at(r, (size_t)i), NULL), &ids[i]))
            ids[i] = 0;
    multi_load(m, store, buckets, ids);
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
    if (store == NULL ||
        tp_store_command(store, on_current, m, "HMGET " TP_GAME_G "current open live") != 0) {
        free(m);
        reply_unavailable(ctx);
    }
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
    int64_t ids[LIST_MAX];
    size_t n = tp_reply_len(r);
    m->n = 0;
    for (size_t i = 0; i < n && m->n < LIST_MAX; i++)
        if (parse_i64(tp_reply_str(tp_reply_at(r, i), NULL), &ids[m->n]))
            m->n++;
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
    return parse_i64(s, out) && *out >= lo && *out <= hi;
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
    char max[32];
    if (before > 0)
        snprintf(max, sizeof(max), "(%lld", (long long)before);
    else
        snprintf(max, sizeof(max), "+inf");
    if (store == NULL ||
        tp_store_command(store, on_list, m,
                         "ZREVRANGEBYSCORE " TP_GAME_G "rounds %s -inf LIMIT 0 %lld", max,
                         (long long)limit) != 0) {
        free(m);
        reply_unavailable(ctx);
    }
}

static void on_one(int err, const struct tp_game_round *r, void *ud)
{
    struct tp_http_ctx *ctx = ud;
    if (err == TP_ENOTFOUND) {
        tp_http_reply_error(ctx, 404, "not_found", "no such round");
        return;
    }
    if (err != 0) {
        reply_unavailable(ctx);
        return;
    }
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, ctx_fmt(ctx));
    tp_game_round_write(&w, r);
    reply_buf(ctx, &b);
    tp_buf_deinit(&b);
}

static void get_one(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    const char *s = tp_http_ctx_param(ctx, "id");
    int64_t id;
    if (s == NULL || *s == '\0' || strlen(s) > 15 || strspn(s, "0123456789") != strlen(s) ||
        !parse_i64(s, &id) || id < 1) {
        tp_http_reply_error(ctx, 404, "not_found", "no such round");
        return;
    }
    int buckets;
    struct tp_store *store = ctx_store(ctx, &buckets);
    if (store == NULL || tp_game_round_load(store, buckets, id, on_one, ctx) != 0)
        reply_unavailable(ctx);
}

static void on_prices(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_http_ctx *ctx = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY) {
        reply_unavailable(ctx);
        return;
    }
    size_t n = tp_reply_len(r);
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, ctx_fmt(ctx));
    tp_wr_array(&w, n);
    for (size_t i = 0; i < n; i++) {
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
    reply_buf(ctx, &b);
    tp_buf_deinit(&b);
}

static void get_prices(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t since;
    if (!query_int(ctx, "since", 0, INT64_MAX / 2, tp_now_ms() - PRICES_WINDOW_MS, &since)) {
        tp_http_reply_error(ctx, 400, "invalid_request", "since must be Unix milliseconds");
        return;
    }
    int buckets;
    struct tp_store *store = ctx_store(ctx, &buckets);
    if (store == NULL || tp_store_command(store, on_prices, ctx, "XRANGE " TP_GAME_G "ticks %lld +",
                                          (long long)since) != 0)
        reply_unavailable(ctx);
}

void tp_game_api_register(struct tp_worker *w)
{
    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/rounds/current", get_current, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/rounds/{id}", get_one, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/rounds", get_list, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/prices", get_prices, NULL) == 0);
}
