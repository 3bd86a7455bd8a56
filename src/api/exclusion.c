/*
 * /api/v1/me/exclusion (see tickpool/api/exclusion.h): the HTTP face of self-exclusion. Parsing
 * and replying live here; the rules and Redis stay in money/exclusion.c.
 */
#include "tickpool/api/exclusion.h"
#include "tickpool/api/accounts.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/money/exclusion.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"

#include <stdio.h>

static void reply_unavailable(struct tp_http_ctx *ctx)
{
    tp_http_ctx_add_header(ctx, "Retry-After", "1");
    tp_http_reply_error(ctx, 503, "unavailable", "storage unavailable, retry");
}

static void on_done(const struct tp_exclusion_result *res, void *ud)
{
    struct tp_http_ctx *ctx = ud;
    if (res->code == TP_EXCLUSION_CANNOT_SHORTEN) {
        char msg[120];
        snprintf(msg, sizeof(msg),
                 "an exclusion until %lld (Unix ms) is in force; it can be extended, not shortened",
                 (long long)res->excluded_until);
        tp_http_reply_error(ctx, 409, "exclusion_cannot_shorten", msg);
        return;
    }
    if (res->code != TP_EXCLUSION_OK) {
        reply_unavailable(ctx);
        return;
    }
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(ctx, &b, &w);
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "excluded_until");
    if (res->excluded_until > 0)
        tp_wr_int(&w, res->excluded_until);
    else
        tp_wr_null(&w);
    tp_http_reply_body(ctx, 200, &b);
}

/* Checks in the bets endpoint's order: token, then body; then one submission. */
static void post_exclusion(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t user;
    if (tp_api_accounts_auth(ctx, &user) != 0)
        return;
    enum tp_fmt fmt;
    size_t len;
    const char *body = tp_http_ctx_body(ctx, &len);
    int days;
    if (tp_http_ctx_body_format(ctx, &fmt) != 0 || tp_exclusion_parse(fmt, body, len, &days) != 0) {
        tp_http_reply_error(ctx, 400, "invalid_request",
                            "body must be an object whose only member days is an integer 1-365");
        return;
    }
    if (tp_exclusion_set(tp_http_ctx_worker(ctx), user, days, on_done, ctx) != 0)
        reply_unavailable(ctx);
}

static void get_exclusion(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t user;
    if (tp_api_accounts_auth(ctx, &user) != 0)
        return;
    if (tp_exclusion_get(tp_http_ctx_worker(ctx), user, on_done, ctx) != 0)
        reply_unavailable(ctx);
}

static void register_routes(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/me/exclusion", post_exclusion, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/me/exclusion", get_exclusion, NULL) == 0);
}

void tp_api_exclusion_install(void)
{
    tp_worker_on_init(register_routes, NULL);
}
