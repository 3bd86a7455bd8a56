/*
 * POST /api/v1/bets (see tickpool/api/bets.h): the HTTP face of bet admission. Parsing and
 * replying live here; validation, the limiter and the batched bet script stay in money/bet*.c.
 */
#include "tickpool/api/bets.h"
#include "tickpool/api/accounts.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/money/bet.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"

#include <stdbool.h>
#include <string.h>

static const int statuses[] = {
    [TP_BET_OK] = 201,
    [TP_BET_INVALID_REQUEST] = 400,
    [TP_BET_INVALID_STAKE] = 400,
    [TP_BET_INVALID_BAND] = 400,
    [TP_BET_UNAUTHORIZED] = 401,
    [TP_BET_SELF_EXCLUDED] = 403,
    [TP_BET_ACCOUNT_DISABLED] = 403,
    [TP_BET_INSUFFICIENT_FUNDS] = 402,
    [TP_BET_ROUND_NOT_FOUND] = 404,
    [TP_BET_ROUND_NOT_OPEN] = 409,
    [TP_BET_IDEMPOTENCY_CONFLICT] = 409,
    [TP_BET_POOL_FULL] = 409,
    [TP_BET_GAME_PAUSED] = 409,
    [TP_BET_KEY_REQUIRED] = 422,
    [TP_BET_OVERLOADED] = 429,
    [TP_BET_UNAVAILABLE] = 503,
};

int tp_bets_status(enum tp_bet_code c)
{
    return (unsigned)c < TP_ARRAY_LEN(statuses) ? statuses[c] : 503;
}

/* Counted before replying: a reply may free an orphaned context. */
static void reply_bet_error(struct tp_http_ctx *ctx, enum tp_bet_code c)
{
    tp_bet_count_answer(TP_METRICS_TRANSPORT_HTTP, tp_http_ctx_start_ns(ctx), c);
    /* Both are "come back shortly": say when, as the game API's 503s do. */
    if (c == TP_BET_OVERLOADED || c == TP_BET_UNAVAILABLE)
        tp_http_ctx_add_header(ctx, "Retry-After", "1");
    tp_http_reply_error(ctx, tp_bets_status(c), tp_bet_code_name(c), tp_bet_code_message(c));
}

static void on_bet(const struct tp_bet_result *res, void *ud)
{
    struct tp_http_ctx *ctx = ud;
    if (res->code != TP_BET_OK) {
        reply_bet_error(ctx, res->code);
        return;
    }
    tp_bet_count_answer(TP_METRICS_TRANSPORT_HTTP, tp_http_ctx_start_ns(ctx), TP_BET_OK);
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(ctx, &b, &w);
    tp_wr_map(&w, 5);
    tp_bet_write_fields(&w, res);
    tp_http_reply_body(ctx, 201, &b);
}

/* Checks in the contract's order: token, Idempotency-Key, body; then one submission. */
static void post_bets(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t user;
    int64_t t0 = tp_http_ctx_start_ns(ctx);
    int rc = tp_api_accounts_auth(ctx, &user);
    if (rc != 0) { /* answered by tp_api_accounts_auth, with one of these three codes */
        tp_bet_count_answer(TP_METRICS_TRANSPORT_HTTP, t0,
                            rc == TP_EUNAVAIL ? TP_BET_UNAVAILABLE
                            : rc == TP_EPERM  ? TP_BET_ACCOUNT_DISABLED
                                              : TP_BET_UNAUTHORIZED);
        return;
    }
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    const char *key = tp_http_ctx_header(ctx, "Idempotency-Key");
    enum tp_bet_code c = tp_bet_check_key(key, key ? strlen(key) : 0);
    struct tp_bet_req req;
    if (c == TP_BET_OK) {
        enum tp_fmt fmt;
        size_t len;
        const char *body = tp_http_ctx_body(ctx, &len);
        struct tp_bet_limits lim;
        tp_bet_limits_any(&lim);
        if (tp_http_ctx_body_format(ctx, &fmt) != 0)
            c = TP_BET_INVALID_REQUEST;
        else
            c = tp_bet_parse(fmt, body, len, &lim, &req);
    }
    if (c == TP_BET_OK)
        c = tp_bet_code_from_err(tp_bet_submit(w, user, &req, key, strlen(key), on_bet, ctx));
    if (c != TP_BET_OK)
        reply_bet_error(ctx, c);
}

static void register_routes(struct tp_worker *w, void *ud)
{
    (void)ud;
    TP_ASSERT(tp_router_add(tp_worker_router(w), "POST", "/api/v1/bets", post_bets, NULL) == 0);
}

void tp_bets_install(void)
{
    tp_worker_on_init(register_routes, NULL);
}
