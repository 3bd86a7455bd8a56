/*
 * POST /api/v1/accounts, POST /api/v1/sessions, DELETE /api/v1/sessions/current,
 * POST /api/v1/me/password and the bearer-token check (see tickpool/api/accounts.h): parse the
 * body, call the accounts core, encode its outcome.
 *
 * Checks run in the contract's order: readiness (503), body shape (400), the credential rules
 * (400), then the core's asynchronous work; the ctx is held until its single reply (a ctx whose
 * connection died meanwhile is freed by the router on that reply).
 */
#include "tickpool/api/accounts.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/ratelimit.h"
#include "tickpool/money/accounts.h"
#include "tickpool/net/http.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define BODY_MAX 4096
#define BAD_BODY "body must be an object with string username and password"

int tp_api_accounts_auth_token(struct tp_http_ctx *ctx, int64_t *user_id, int64_t *expires_ms)
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
        rc = tp_accounts_verify_token(tp_http_ctx_worker(ctx), t, n, user_id, expires_ms);
    }
    if (rc == TP_EUNAVAIL)
        tp_http_reply_error(ctx, 503, "unavailable", "authentication not ready, retry");
    else if (rc == TP_EPERM)
        tp_http_reply_error(ctx, 403, "account_disabled", "this account is disabled");
    else if (rc != 0)
        tp_http_reply_error(ctx, 401, "unauthorized", "missing, invalid, expired or revoked token");
    return rc;
}

int tp_api_accounts_auth(struct tp_http_ctx *ctx, int64_t *user_id)
{
    return tp_api_accounts_auth_token(ctx, user_id, NULL);
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
        [TP_ACCOUNTS_DISABLED] = {403, "this account is disabled"},
        [TP_ACCOUNTS_WRONG_PASSWORD] = {401, "the old password is wrong"},
    };
    if (c == TP_ACCOUNTS_OK || (unsigned)c >= TP_ARRAY_LEN(errors))
        c = TP_ACCOUNTS_UNAVAILABLE;
    if (c == TP_ACCOUNTS_OVERLOADED)
        tp_http_ctx_add_header(ctx, "Retry-After", "1");
    tp_http_reply_error(ctx, errors[c].status, tp_accounts_code_name(c),
                        errors[c].message != NULL ? errors[c].message : busy);
}

/* --- Per-client limits --- */

/* Which limit a request counts against (the first byte of its key). */
enum limit_kind { LIMIT_SIGNUP = 1, LIMIT_SIGNIN = 2 };

/* server.trusted_proxies, parsed once per process (every worker holds the same list). */
static struct tp_http_peer proxies[TP_CONFIG_MAX_PROXIES];
static int nproxies;

static bool parse_addr(const char *s, size_t n, struct tp_http_peer *out)
{
    char one[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(one))
        return false;
    memcpy(one, s, n);
    one[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, one, out->addr) == 1) {
        out->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, one, out->addr) == 1) {
        out->family = AF_INET6;
        if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)out->addr)) {
            memmove(out->addr, out->addr + 12, 4);
            memset(out->addr + 4, 0, 12);
            out->family = AF_INET;
        }
        return true;
    }
    return false;
}

static void load_proxies(const char *list)
{
    nproxies = 0;
    for (const char *p = list; *p != '\0' && nproxies < TP_CONFIG_MAX_PROXIES;) {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (parse_addr(p, n, &proxies[nproxies])) /* validated by the config table */
            nproxies++;
        p += n + (end != NULL);
    }
}

static bool same_addr(const struct tp_http_peer *a, const struct tp_http_peer *b)
{
    return a->family == b->family && memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

static bool is_proxy(const struct tp_http_peer *p)
{
    for (int i = 0; i < nproxies; i++)
        if (same_addr(p, &proxies[i]))
            return true;
    return false;
}

/*
 * The client a request counts for: its peer, unless the peer is a trusted proxy; then the
 * entries of the last X-Forwarded-For header (a proxy appends to it, or adds its own after one
 * the client sent) are walked from the right (the nearest hop) past trusted proxies to the
 * first other address. An entry that is no address stops the walk at the last trusted hop:
 * what lies further left was written by the client and proves nothing.
 */
static struct tp_http_peer client_of(struct tp_http_ctx *ctx)
{
    struct tp_http_peer c = *tp_http_ctx_peer(ctx);
    const struct tp_http_request *req = tp_http_ctx_request(ctx);
    const char *xff = nproxies > 0 && is_proxy(&c) && req != NULL
                          ? tp_http_request_header_last(req, "X-Forwarded-For")
                          : NULL;
    if (xff == NULL)
        return c;
    size_t end = strlen(xff);
    while (end > 0 && is_proxy(&c)) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        struct tp_http_peer hop;
        if (!parse_addr(xff + a, b - a, &hop))
            break;
        c = hop;
        end = start > 0 ? start - 1 : 0;
    }
    return c;
}

/*
 * Takes one request of this client from the host-wide limit of `kind`; when over it, replies
 * 429 rate_limited with Retry-After (whole seconds, at least 1) and returns true. Checked before
 * any password hashing is queued, so a client over its limit costs no argon2 time.
 */
static bool rate_limited(struct tp_http_ctx *ctx, enum limit_kind kind)
{
    const struct tp_config_limits *l = &tp_worker_config(tp_http_ctx_worker(ctx))->limits;
    struct tp_ratelimit_rule rule =
        kind == LIMIT_SIGNUP ? (struct tp_ratelimit_rule){l->signup_per_min, l->signup_burst}
                             : (struct tp_ratelimit_rule){l->signin_per_min, l->signin_burst};
    struct tp_http_peer c = client_of(ctx);
    /* An IPv6 client is its /64: one host usually holds a whole /64, an IPv4 client one
     * address. */
    uint8_t key[2 + 8] = {(uint8_t)kind, (uint8_t)c.family};
    size_t n = c.family == AF_INET6 ? 8 : 4;
    memcpy(key + 2, c.addr, n);
    int64_t wait_ms = tp_ratelimit_take(&rule, key, 2 + n, tp_mono_ms());
    if (wait_ms <= 0)
        return false;
    char secs[24], msg[96];
    snprintf(secs, sizeof(secs), "%lld", (long long)((wait_ms + 999) / 1000));
    snprintf(msg, sizeof(msg), "too many %s from this address, retry in %s s",
             kind == LIMIT_SIGNUP ? "sign-ups" : "sign-ins", secs);
    tp_http_ctx_add_header(ctx, "Retry-After", secs);
    tp_http_reply_error(ctx, 429, "rate_limited", msg);
    return true;
}

#define BAD_PASSWORD_BODY "body must be an object with string old and new"

/*
 * Parses the body into *doc and fills *c from its username and password members, or for a
 * password change (`change`) its old and new members (NULL when absent or not strings).
 * Returns false after replying 400 when the body is no map.
 */
static bool read_credentials(struct tp_http_ctx *ctx, struct tp_doc **doc,
                             struct tp_accounts_creds *c, bool change)
{
    size_t len;
    const char *body = tp_http_ctx_body(ctx, &len);
    enum tp_fmt fmt;
    *doc = NULL;
    if (tp_http_ctx_body_format(ctx, &fmt) != 0 ||
        tp_doc_parse_ex(fmt, body, len, BODY_MAX, doc, NULL, 0) != 0 ||
        tp_val_type(tp_doc_root(*doc)) != TP_VAL_MAP) {
        tp_doc_free(*doc);
        tp_http_reply_error(ctx, 400, "invalid_request", change ? BAD_PASSWORD_BODY : BAD_BODY);
        return false;
    }
    const struct tp_val *root = tp_doc_root(*doc);
    *c = (struct tp_accounts_creds){0};
    if (change) {
        if (tp_val_get_str(root, "new", &c->new_password, &c->new_password_len) != 0)
            c->new_password = NULL;
    } else if (tp_val_get_str(root, "username", &c->username, &c->username_len) != 0) {
        c->username = NULL;
    }
    if (tp_val_get_str(root, change ? "old" : "password", &c->password, &c->password_len) != 0)
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
    enum limit_kind limit;
};

static const struct endpoint signup = {tp_accounts_check_signup, tp_accounts_signup, on_signup,
                                       SIGNUPS_BUSY, LIMIT_SIGNUP};
static const struct endpoint signin = {tp_accounts_check_signin, tp_accounts_signin, on_signin,
                                       SIGNINS_BUSY, LIMIT_SIGNIN};

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
    if (!read_credentials(ctx, &doc, &c, false))
        return;
    enum tp_accounts_code code = e->check(&c);
    if (code == TP_ACCOUNTS_OK && rate_limited(ctx, e->limit)) {
        tp_doc_free(doc);
        return;
    }
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

/* --- DELETE /api/v1/sessions/current and POST /api/v1/me/password --- */

static void on_logout(const struct tp_accounts_result *res, void *ud)
{
    if (res->code != TP_ACCOUNTS_OK)
        reply_error(ud, res->code, NULL);
    else
        tp_http_reply(ud, 204, NULL, NULL, 0);
}

static void delete_session(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t user, exp;
    if (tp_api_accounts_auth_token(ctx, &user, &exp) != 0)
        return;
    if (tp_accounts_logout(tp_http_ctx_worker(ctx), user, exp, on_logout, ctx) != 0)
        reply_error(ctx, TP_ACCOUNTS_UNAVAILABLE, NULL);
}

#define PASSWORDS_BUSY "too many password changes in progress, retry shortly"

static void on_password(const struct tp_accounts_result *res, void *ud)
{
    if (res->code != TP_ACCOUNTS_OK)
        reply_error(ud, res->code, PASSWORDS_BUSY);
    else /* every token is revoked, this one included: the client signs in with the new one */
        tp_http_reply(ud, 204, NULL, NULL, 0);
}

static void post_password(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t user;
    if (tp_api_accounts_auth(ctx, &user) != 0)
        return;
    struct tp_doc *doc;
    struct tp_accounts_creds c;
    if (!read_credentials(ctx, &doc, &c, true))
        return;
    enum tp_accounts_code code = tp_accounts_check_password(&c);
    if (code == TP_ACCOUNTS_OK && rate_limited(ctx, LIMIT_SIGNIN)) {
        tp_doc_free(doc);
        return;
    }
    if (code == TP_ACCOUNTS_OK) {
        int rc = tp_accounts_change_password(tp_http_ctx_worker(ctx), user, &c, on_password, ctx);
        code = rc == 0           ? TP_ACCOUNTS_OK
               : rc == TP_EAGAIN ? TP_ACCOUNTS_OVERLOADED
                                 : TP_ACCOUNTS_UNAVAILABLE;
    }
    tp_doc_free(doc); /* the core copied what it keeps */
    if (code == TP_ACCOUNTS_INVALID_REQUEST)
        tp_http_reply_error(ctx, 400, "invalid_request", BAD_PASSWORD_BODY);
    else if (code != TP_ACCOUNTS_OK)
        reply_error(ctx, code, PASSWORDS_BUSY);
}

static void register_routes(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_router *r = tp_worker_router(w);
    load_proxies(tp_worker_config(w)->server.trusted_proxies);
    TP_ASSERT(tp_router_add(r, "DELETE", "/api/v1/sessions/current", delete_session, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/me/password", post_password, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/accounts", post_credentials, (void *)&signup) == 0);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/sessions", post_credentials, (void *)&signin) == 0);
}

void tp_api_accounts_install(void)
{
    tp_worker_on_init(register_routes, NULL);
}
