/*
 * /healthz, /readyz and /metrics (see tickpool/api/ops.h and docs/operations.md).
 *
 * Ready means playable: this worker's Redis connection is up and the game has an open round, or
 * the operator paused it (`tickpool admin pause`): a paused node is healthy and keeps serving
 * the client, prices and history, so it answers 200 "paused" rather than 503 "no open round".
 * Postgres is behind the outbox (bets never wait for it), so Postgres down only makes the answer
 * "degraded" with the outbox lag, still 200: a load balancer following /readyz must not take
 * every node out during a Postgres outage while they accept bets.
 *
 * Nothing is probed per request: the Redis flag and the Postgres probe are state the store layer
 * already tracks for the worker, the outbox lag is the writer's shared gauge, and the open round is
 * cached per process and re-read (one HGET) at most once per OPEN_REFRESH_MS, however often /readyz
 * is polled (while there is none and no pause, at every poll: readiness comes as soon as the
 * first round opens). A boundary locks the open round and opens the next in one script, so a
 * running game always has an open round and readiness needs no grace period.
 */
#include "tickpool/api/ops.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/pause.h"
#include "tickpool/money/access.h"
#include "tickpool/money/accounts.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/store.h"

#include <stdio.h>
#include <stdlib.h>

#define OPEN_REFRESH_MS 1000

/* Process-wide, not in a worker slot: a worker is a process with one loop thread, and a
 * static needs no freeing, so a reply still in flight at exit (TP_ECLOSED) finds it intact. */
static struct {
    int64_t checked_ms; /* monotonic time of the last read (or failed read) */
    int64_t open_id;    /* the open round of the last successful read, 0 = none */
    bool paused;        /* the operator's pause, as last read */
    int in_flight;      /* reads of the refresh still out (open round, pause) */
} open_cache = {INT64_MIN / 2, 0, false, 0};

static void add_worker_header(struct tp_http_ctx *ctx)
{
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    if (w == NULL)
        return;
    char v[16];
    snprintf(v, sizeof(v), "%d", tp_worker_index(w));
    tp_http_ctx_add_header(ctx, "X-Tickpool-Worker", v);
}

static void healthz(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    static const char body[] = "{\"status\":\"ok\"}";
    add_worker_header(ctx);
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-store");
    tp_http_reply(ctx, 200, "application/json", body, sizeof(body) - 1);
}

static struct tp_store *connected_store(struct tp_http_ctx *ctx)
{
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    struct tp_store *store = w ? tp_store_of(w) : NULL;
    return store != NULL && tp_store_is_connected(store) ? store : NULL;
}

static void readyz_reply(struct tp_http_ctx *ctx)
{
    add_worker_header(ctx);
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-store");
    if (connected_store(ctx) == NULL) {
        tp_http_reply_error(ctx, 503, "unavailable", "not ready: redis down");
        return;
    }
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    if (w != NULL && (!tp_access_ready(w) || !tp_accounts_ready(w))) {
        /* Token checks answer 503 until the revocations are loaded, and sign-ups, sign-ins and
         * token checks until the token secret is read from Redis (its own retry, a moment after
         * the connection, in either order with the revocations): not ready for players. Named
         * before the round, so a caller can wait for this worker's own state alone. */
        tp_http_reply_error(ctx, 503, "unavailable", "not ready: account state loading");
        return;
    }
    if (open_cache.open_id <= 0 && !open_cache.paused) {
        tp_http_reply_error(ctx, 503, "unavailable", "not ready: no open round");
        return;
    }
    bool pg_ok = w != NULL && tp_pg_health_ok(tp_pg_health_of(w));
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"redis\":\"up\",\"postgres\":\"%s\",\"open_round\":%lld,"
                     "\"outbox_lag_entries\":%lld,\"outbox_lag_seconds\":%lld}",
                     open_cache.paused ? "paused"
                     : pg_ok           ? "ready"
                                       : "degraded",
                     pg_ok ? "up" : "down", (long long)open_cache.open_id,
                     (long long)tp_metrics_get_total(TP_METRIC_OUTBOX_LAG_ENTRIES),
                     (long long)tp_metrics_get_total(TP_METRIC_OUTBOX_LAG_SECONDS));
    TP_ASSERT(n > 0 && (size_t)n < sizeof(body));
    tp_http_reply(ctx, 200, "application/json", body, (size_t)n);
}

/* One read of the refresh is in; the last one replies. */
static void refresh_done(struct tp_http_ctx *ctx)
{
    if (--open_cache.in_flight > 0)
        return;
    open_cache.checked_ms = tp_mono_ms();
    readyz_reply(ctx);
}

static void on_pause(int err, const struct tp_game_pause *p, void *ud)
{
    if (err == 0)
        open_cache.paused = p->paused; /* a failed read keeps the last one */
    refresh_done(ud);
}

static void on_open(int err, const struct tp_store_reply *r, void *ud)
{
    if (err == 0 && r != NULL && tp_reply_type(r) == TP_REPLY_STRING) {
        int64_t id;
        open_cache.open_id = tp_parse_i64(tp_reply_str(r, NULL), &id) && id > 0 ? id : 0;
    } else if (err == 0 && r != NULL && tp_reply_type(r) == TP_REPLY_NIL) {
        open_cache.open_id = 0;
    } /* a failed read: unknown, the last answer stands. */
    refresh_done(ud);
}

static void readyz(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    struct tp_store *store = connected_store(ctx);
    if (store != NULL && open_cache.in_flight == 0 &&
        ((open_cache.open_id <= 0 && !open_cache.paused) ||
         tp_mono_ms() - open_cache.checked_ms >= OPEN_REFRESH_MS) &&
        tp_store_command(store, on_open, ctx, "HGET " TP_KEYS_CURRENT " open") == 0) {
        open_cache.in_flight = 2; /* the last of on_open and on_pause replies */
        if (tp_game_pause_load(store, on_pause, ctx) != 0)
            open_cache.in_flight--;
        return;
    }
    readyz_reply(ctx);
}

static void metrics(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_metrics_render(&b);
    add_worker_header(ctx);
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-store");
    tp_http_reply(ctx, 200, TP_METRICS_CONTENT_TYPE, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
}

static void on_worker_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "GET", "/healthz", healthz, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/readyz", readyz, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/metrics", metrics, NULL) == 0);
}

void tp_ops_install(void)
{
    tp_worker_on_init(on_worker_init, NULL);
}
