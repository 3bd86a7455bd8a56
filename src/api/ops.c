/*
 * /healthz, /readyz and /metrics (see tickpool/api/ops.h).
 *
 * Readiness reads state the store layer already tracks for the worker (its Redis store's
 * connection flag, its Postgres probe's last success) instead of probing per request: a load
 * balancer polling /readyz must not add load to Redis or Postgres.
 */
#include "tickpool/api/ops.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/metrics.h"
#include "tickpool/store/pg.h"
#include "tickpool/net/router.h"
#include "tickpool/store/store.h"
#include "tickpool/net/worker.h"

#include <stdio.h>

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

static void readyz(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    struct tp_store *store = w ? tp_store_of(w) : NULL;
    bool redis_ok = store != NULL && tp_store_is_connected(store);
    bool pg_ok = w != NULL && tp_pg_health_ok(tp_pg_health_of(w));
    add_worker_header(ctx);
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-store");
    if (!redis_ok || !pg_ok) {
        /* Not ready is an error in the contract's shape, naming what is down. */
        char msg[96];
        snprintf(msg, sizeof(msg), "not ready:%s%s", redis_ok ? "" : " redis down",
                 pg_ok ? "" : " postgres down");
        tp_http_reply_error(ctx, 503, "unavailable", msg);
        return;
    }
    static const char ready[] = "{\"status\":\"ready\",\"redis\":\"up\",\"postgres\":\"up\"}";
    tp_http_reply(ctx, 200, "application/json", ready, sizeof(ready) - 1);
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
