/*
 * POST /api/v1/accounts, POST /api/v1/sessions and the bearer-token check (see
 * tickpool/api/accounts.h): parse the body, call the accounts core, encode its outcome.
 *
 * Checks run in the contract's order: readiness (503), body shape (400), the credential rules
 * (400), then the core's asynchronous work; the ctx is held until its single reply (a ctx whose
 * connection died meanwhile is freed by the router on that reply).
 */
#include "tickpool/api/accounts.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/money/accounts.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define BODY_MAX 4096
#define BAD_BODY "body must be an object with string username and password"

int tp_api_accounts_auth(struct tp_http_ctx *ctx, int64_t *user_id)
{
    const char *h = tp_http_ctx_header(ctx, "Authorization");
    int rc = TP_EINVAL;
    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n > 0 && t[n - 1] == ' ')
            n--;
        rc = tp_accounts_verify_token(tp_http_ctx_worker(ctx), t, n, user_id, NULL);
    }
    if (rc == TP_EUNAVAIL)
        tp_http_reply_error(ctx, 503, "unavailable", "authentication not ready, retry");
    else if (rc != 0)
        tp_http_reply_error(ctx, 401, "unauthorized", "missing, invalid or expired token");
    return rc;
}

/* Replies an accounts error; `busy` is the 429 message (sign-ups and sign-ins say which). */
static void reply_error(struct tp_http_ctx *ctx, enum tp_accounts_code c, const char *busy)
{
    static const struct {
        int status;
        const char *message;
    } errors[] = {
        [TP_ACCOUNTS_INVALID_REQUEST] = {400, BAD_BODY},
        [TP_ACCOUNTS_INVALID_USERNAME] = {400,
                                          "username must be 3-32 characters of A-Z a-z 0-9 _ -"},
        [TP_ACCOUNTS_WEAK_PASSWORD] = {400, "password must be 8-1024 bytes"},
        [TP_ACCOUNTS_USERNAME_TAKEN] = {409, "this username is taken"},
        [TP_ACCOUNTS_BAD_CREDENTIALS] = {401, "unknown username or wrong password"},
        [TP_ACCOUNTS_UNKNOWN_USER] = {401, "unknown user"},
        [TP_ACCOUNTS_OVERLOADED] = {429, NULL},
        [TP_ACCOUNTS_UNAVAILABLE] = {503, "storage unavailable, retry"},
    };
    if (c == TP_ACCOUNTS_OK || (unsigned)c >= TP_ARRAY_LEN(errors))
        c = TP_ACCOUNTS_UNAVAILABLE;
    if (c == TP_ACCOUNTS_OVERLOADED)
        tp_http_ctx_add_header(ctx, "Retry-After", "1");
    tp_http_reply_error(ctx, errors[c].status, tp_accounts_code_name(c),
                        errors[c].message != NULL ? errors[c].message : busy);
}

/*
 * Parses the body into *doc and fills *c from its username and password members (NULL when
 * absent or not strings). Returns false after replying 400 when the body is no map.
 */
static bool read_credentials(struct tp_http_ctx *ctx, struct tp_doc **doc,
                             struct tp_accounts_creds *c)
{
    size_t len;
    const char *body = tp_http_ctx_body(ctx, &len);
    enum tp_fmt fmt;
    *doc = NULL;
    if (tp_http_ctx_body_format(ctx, &fmt) != 0 ||
        tp_doc_parse_ex(fmt, body, len, BODY_MAX, doc, NULL, 0) != 0 ||
        tp_val_type(tp_doc_root(*doc)) != TP_VAL_MAP) {
        tp_doc_free(*doc);
        tp_http_reply_error(ctx, 400, "invalid_request", BAD_BODY);
        return false;
    }
    const struct tp_val *root = tp_doc_root(*doc);
    *c = (struct tp_accounts_creds){0};
    if (tp_val_get_str(root, "username", &c->username, &c->username_len) != 0)
        c->username = NULL;
    if (tp_val_get_str(root, "password", &c->password, &c->password_len) != 0)
        c->password = NULL;
    return true;
}

static void reply_map(struct tp_http_ctx *ctx, int status, const struct tp_accounts_result *res,
                      bool signup)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(ctx, &b, &w);
    tp_wr_map(&w, signup ? 4 : 3);
    tp_wr_key(&w, "user_id");
    tp_wr_int(&w, res->user_id);
    if (signup) {
        tp_wr_key(&w, "username");
        tp_wr_str(&w, res->username);
    }
    tp_wr_key(&w, "token");
    tp_wr_str(&w, res->token);
    if (signup) {
        tp_wr_key(&w, "balance");
        tp_wr_int(&w, res->balance);
    } else {
        tp_wr_key(&w, "expires_at");
        tp_wr_int(&w, res->expires_ms);
    }
    tp_http_reply_body(ctx, status, &b);
}

/* --- POST /api/v1/accounts and POST /api/v1/sessions --- */

#define SIGNUPS_BUSY "too many sign-ups in progress, retry shortly"
#define SIGNINS_BUSY "too many sign-ins in progress, retry shortly"

static void on_signup(const struct tp_accounts_result *res, void *ud)
{
    if (res->code != TP_ACCOUNTS_OK)
        reply_error(ud, res->code, SIGNUPS_BUSY);
    else
        reply_map(ud, 201, res, true);
}

static void on_signin(const struct tp_accounts_result *res, void *ud)
{
    if (res->code != TP_ACCOUNTS_OK)
        reply_error(ud, res->code, SIGNINS_BUSY);
    else
        reply_map(ud, 200, res, false);
}

/* The two endpoints differ only in their rules, their core call and their reply. */
struct endpoint {
    enum tp_accounts_code (*check)(const struct tp_accounts_creds *c);
    int (*start)(struct tp_worker *w, const struct tp_accounts_creds *c, tp_accounts_cb cb,
                 void *ud);
    tp_accounts_cb done;
    const char *busy;
};

static const struct endpoint signup = {tp_accounts_check_signup, tp_accounts_signup, on_signup,
                                       SIGNUPS_BUSY};
static const struct endpoint signin = {tp_accounts_check_signin, tp_accounts_signin, on_signin,
                                       SIGNINS_BUSY};

/* `ud` is the route's struct endpoint. */
static void post_credentials(struct tp_http_ctx *ctx, void *ud)
{
    const struct endpoint *e = ud;
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    if (!tp_accounts_ready(w)) {
        reply_error(ctx, TP_ACCOUNTS_UNAVAILABLE, NULL);
        return;
    }
    struct tp_doc *doc;
    struct tp_accounts_creds c;
    if (!read_credentials(ctx, &doc, &c))
        return;
    enum tp_accounts_code code = e->check(&c);
    if (code == TP_ACCOUNTS_OK) {
        int rc = e->start(w, &c, e->done, ctx);
        code = rc == 0           ? TP_ACCOUNTS_OK
               : rc == TP_EAGAIN ? TP_ACCOUNTS_OVERLOADED
                                 : TP_ACCOUNTS_UNAVAILABLE;
    }
    tp_doc_free(doc); /* the core copied what it keeps */
    if (code != TP_ACCOUNTS_OK)
        reply_error(ctx, code, e->busy);
}

static void register_routes(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/accounts", post_credentials, (void *)&signup) == 0);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/sessions", post_credentials, (void *)&signin) == 0);
}

void tp_api_accounts_install(void)
{
    tp_worker_on_init(register_routes, NULL);
}
