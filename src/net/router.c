/*
 * Routing table and request contexts (see tickpool/net/router.h).
 *
 * The table is a flat array scanned in order: a server has a few dozen routes, and a linear
 * scan over pre-split segments is faster than anything cleverer at that size.
 */
#include "tickpool/net/router.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/metrics.h"
#include "tickpool/base/url.h"
#include "tickpool/net/http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_SEGS 16

struct route {
    char *method;
    char *pattern;
    char *segs[MAX_SEGS]; /* point into `pattern` (split copy) */
    bool is_param[MAX_SEGS];
    size_t nsegs;
    tp_http_handler handler;
    void *ud;
    int metrics_route; /* TP_METRICS_ROUTE_* of `pattern` (OTHER when not listed there) */
};

struct tp_router {
    struct route *routes;
    size_t n, cap;
    tp_http_handler fallback;
    void *fallback_ud;
};

struct tp_http_ctx {
    struct tp_http_request *req;
    const char *pnames[TP_ROUTER_MAX_PARAMS];
    char *pvals[TP_ROUTER_MAX_PARAMS];
    size_t nparams;
    tp_http_done_cb done;
    void *done_ud;
    struct tp_worker *worker;
    struct tp_http_peer peer;
    struct tp_buf extra;
    struct tp_buf out;
    int status;
    int route;        /* TP_METRICS_ROUTE_* */
    int64_t start_ns; /* tp_mono_ns at creation */
    bool keep_alive;
    bool replied;
    bool orphan;
};

/* --- Table --- */

struct tp_router *tp_router_new(void)
{
    return tp_xcalloc(1, sizeof(struct tp_router));
}

void tp_router_free(struct tp_router *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->routes[i].method);
        free(r->routes[i].pattern);
    }
    free(r->routes);
    free(r);
}

/* Splits "/a/b/c" in place into segments; returns the count or -1 beyond `max`. A trailing
 * slash makes an empty last segment, so "/a/" and "/a" stay different paths. */
static int split_path(char *s, char **segs, size_t max)
{
    size_t n = 0;
    TP_ASSERT(*s == '/');
    s++;
    for (;;) {
        if (n == max)
            return -1;
        segs[n++] = s;
        char *slash = strchr(s, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
        s = slash + 1;
    }
    return (int)n;
}

int tp_router_add(struct tp_router *r, const char *method, const char *pattern,
                  tp_http_handler handler, void *ud)
{
    if (pattern[0] != '/' || method[0] == '\0')
        return TP_EINVAL;
    struct route rt = {0};
    rt.pattern = tp_xstrdup(pattern);
    int n = split_path(rt.pattern, rt.segs, MAX_SEGS);
    if (n < 0)
        goto fail;
    rt.nsegs = (size_t)n;
    size_t nparams = 0;
    for (size_t i = 0; i < rt.nsegs; i++) {
        size_t l = strlen(rt.segs[i]);
        if (l >= 3 && rt.segs[i][0] == '{' && rt.segs[i][l - 1] == '}') {
            rt.segs[i][l - 1] = '\0';
            rt.segs[i]++;
            rt.is_param[i] = true;
            if (++nparams > TP_ROUTER_MAX_PARAMS)
                goto fail;
        } else if (strchr(rt.segs[i], '{') != NULL || strchr(rt.segs[i], '}') != NULL) {
            goto fail;
        }
    }
    rt.method = tp_xstrdup(method);
    rt.metrics_route = tp_metrics_label_index(TP_METRIC_FAMILY_HTTP_RESPONSES, 0, pattern);
    if (rt.metrics_route < 0)
        rt.metrics_route = TP_METRICS_ROUTE_OTHER;
    rt.handler = handler;
    rt.ud = ud;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->routes = tp_xrealloc(r->routes, r->cap * sizeof(*r->routes));
    }
    r->routes[r->n++] = rt;
    return 0;
fail:
    free(rt.pattern);
    return TP_EINVAL;
}

void tp_router_set_fallback(struct tp_router *r, tp_http_handler handler, void *ud)
{
    r->fallback = handler;
    r->fallback_ud = ud;
}

static void clear_params(struct tp_http_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nparams; i++)
        free(ctx->pvals[i]);
    ctx->nparams = 0;
}

/* Matches one route's segments against the request's; fills ctx params on success.
 * Returns 1 on match, 0 on mismatch, TP_EINVAL when a parameter has bad percent-encoding. */
static int match(const struct route *rt, char **segs, size_t nsegs, struct tp_http_ctx *ctx)
{
    if (rt->nsegs != nsegs)
        return 0;
    for (size_t i = 0; i < nsegs; i++) {
        if (rt->is_param[i]) {
            if (segs[i][0] == '\0')
                return 0;
        } else if (strcmp(rt->segs[i], segs[i]) != 0) {
            return 0;
        }
    }
    clear_params(ctx);
    for (size_t i = 0; i < nsegs; i++) {
        if (!rt->is_param[i])
            continue;
        size_t l = strlen(segs[i]);
        char *v = tp_xmalloc(l + 1);
        if (tp_url_decode(segs[i], l, v, false) < 0) {
            free(v);
            clear_params(ctx);
            return TP_EINVAL;
        }
        ctx->pnames[ctx->nparams] = rt->segs[i];
        ctx->pvals[ctx->nparams++] = v;
    }
    return 1;
}

static bool method_matches(const char *route_method, const struct tp_http_request *req)
{
    if (strcmp(route_method, req->method_name) == 0)
        return true;
    return req->method == TP_HTTP_HEAD && strcmp(route_method, "GET") == 0;
}

void tp_router_dispatch(struct tp_router *r, struct tp_http_ctx *ctx)
{
    const struct tp_http_request *req = ctx->req;
    TP_ASSERT(req != NULL);
    char *copy = tp_xstrdup(req->path);
    char *segs[MAX_SEGS];
    int n = copy[0] == '/' ? split_path(copy, segs, MAX_SEGS) : -1;
    bool path_known = false;
    char allow[128] = "";
    struct route *hit = NULL;
    for (size_t i = 0; n >= 0 && i < r->n; i++) {
        struct route *rt = &r->routes[i];
        int m = match(rt, segs, (size_t)n, ctx);
        if (m < 0) {
            free(copy);
            tp_http_reply_error(ctx, 400, "bad_request", "malformed percent-encoding in path");
            return;
        }
        if (m == 0)
            continue;
        path_known = true;
        if (method_matches(rt->method, req)) {
            hit = rt;
            break;
        }
        if (strstr(allow, rt->method) == NULL &&
            strlen(allow) + strlen(rt->method) + 8 < sizeof(allow)) {
            if (allow[0] != '\0')
                strcat(allow, ", ");
            strcat(allow, rt->method);
            if (strcmp(rt->method, "GET") == 0)
                strcat(allow, ", HEAD");
        }
    }
    free(copy);
    if (hit != NULL) {
        ctx->route = hit->metrics_route;
        hit->handler(ctx, hit->ud);
        return;
    }
    clear_params(ctx);
    if (path_known) {
        tp_http_ctx_add_header(ctx, "Allow", allow);
        tp_http_reply_error(ctx, 405, "method_not_allowed", "method not allowed for this path");
        return;
    }
    if (r->fallback != NULL) {
        ctx->route = TP_METRICS_ROUTE_STATIC;
        r->fallback(ctx, r->fallback_ud);
        return;
    }
    tp_http_reply_error(ctx, 404, "not_found", "no such resource");
}

/* --- Contexts --- */

struct tp_http_ctx *tp_http_ctx_new(struct tp_http_request *req, bool keep_alive,
                                    tp_http_done_cb done, void *done_ud)
{
    struct tp_http_ctx *ctx = tp_xcalloc(1, sizeof(*ctx));
    ctx->req = req;
    ctx->keep_alive = keep_alive;
    ctx->done = done;
    ctx->done_ud = done_ud;
    ctx->route = TP_METRICS_ROUTE_OTHER;
    ctx->start_ns = tp_mono_ns();
    tp_buf_init(&ctx->extra);
    tp_buf_init(&ctx->out);
    return ctx;
}

void tp_http_ctx_free(struct tp_http_ctx *ctx)
{
    if (ctx == NULL)
        return;
    clear_params(ctx);
    tp_http_request_free(ctx->req);
    tp_buf_deinit(&ctx->extra);
    tp_buf_deinit(&ctx->out);
    free(ctx);
}

void tp_http_ctx_orphan(struct tp_http_ctx *ctx)
{
    if (ctx->replied)
        tp_http_ctx_free(ctx);
    else
        ctx->orphan = true;
}

bool tp_http_ctx_replied(const struct tp_http_ctx *ctx)
{
    return ctx->replied;
}

struct tp_buf *tp_http_ctx_output(struct tp_http_ctx *ctx)
{
    return &ctx->out;
}

int tp_http_ctx_status(const struct tp_http_ctx *ctx)
{
    return ctx->status;
}

int64_t tp_http_ctx_start_ns(const struct tp_http_ctx *ctx)
{
    return ctx->start_ns;
}

int tp_http_ctx_route(const struct tp_http_ctx *ctx)
{
    return ctx->route;
}

void tp_http_ctx_set_route(struct tp_http_ctx *ctx, int route)
{
    ctx->route = route;
}

bool tp_http_ctx_closes(const struct tp_http_ctx *ctx)
{
    return !ctx->keep_alive;
}

void tp_http_ctx_set_peer(struct tp_http_ctx *ctx, const struct tp_http_peer *peer)
{
    ctx->peer = *peer;
}

const struct tp_http_peer *tp_http_ctx_peer(const struct tp_http_ctx *ctx)
{
    return &ctx->peer;
}

void tp_http_ctx_set_worker(struct tp_http_ctx *ctx, struct tp_worker *w)
{
    ctx->worker = w;
}

const struct tp_http_request *tp_http_ctx_request(const struct tp_http_ctx *ctx)
{
    return ctx->req;
}

const char *tp_http_ctx_param(const struct tp_http_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->nparams; i++)
        if (strcmp(ctx->pnames[i], name) == 0)
            return ctx->pvals[i];
    return NULL;
}

const char *tp_http_ctx_query(const struct tp_http_ctx *ctx, const char *name)
{
    return ctx->req ? tp_http_request_param(ctx->req, name) : NULL;
}

const char *tp_http_ctx_header(const struct tp_http_ctx *ctx, const char *name)
{
    return ctx->req ? tp_http_request_header(ctx->req, name) : NULL;
}

const char *tp_http_ctx_body(const struct tp_http_ctx *ctx, size_t *len)
{
    if (ctx->req == NULL) {
        *len = 0;
        return "";
    }
    *len = ctx->req->body_len;
    return ctx->req->body;
}

int tp_http_body_format(const char *ct, enum tp_fmt *fmt)
{
    if (ct == NULL) {
        *fmt = TP_FMT_JSON;
        return 0;
    }
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 0 || (n == 16 && strncasecmp(ct, "application/json", n) == 0)) {
        *fmt = TP_FMT_JSON;
        return 0;
    }
    if ((n == 19 && strncasecmp(ct, "application/msgpack", n) == 0) ||
        (n == 21 && strncasecmp(ct, "application/x-msgpack", n) == 0) ||
        (n == 22 && strncasecmp(ct, "application/vnd.msgpack", n) == 0)) {
        *fmt = TP_FMT_MSGPACK;
        return 0;
    }
    return TP_EINVAL;
}

int tp_http_ctx_body_format(const struct tp_http_ctx *ctx, enum tp_fmt *fmt)
{
    return tp_http_body_format(tp_http_ctx_header(ctx, "Content-Type"), fmt);
}

bool tp_http_ctx_wants_msgpack(const struct tp_http_ctx *ctx)
{
    const char *accept = tp_http_ctx_header(ctx, "Accept");
    return accept != NULL && strcasestr(accept, "application/msgpack") != NULL;
}

struct tp_worker *tp_http_ctx_worker(const struct tp_http_ctx *ctx)
{
    return ctx->worker;
}

void tp_http_ctx_add_header(struct tp_http_ctx *ctx, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
        return;
    tp_buf_printf(&ctx->extra, "%s: %s\r\n", name, value);
}

void tp_http_ctx_set_close(struct tp_http_ctx *ctx)
{
    ctx->keep_alive = false;
}

void tp_http_reply(struct tp_http_ctx *ctx, int status, const char *content_type, const void *body,
                   size_t len)
{
    TP_ASSERT(!ctx->replied);
    if (ctx->orphan) {
        tp_http_ctx_free(ctx);
        return;
    }
    ctx->status = status;
    ctx->replied = true;
    tp_buf_append(&ctx->extra, "", 1); /* NUL-terminate the extra header lines */
    tp_http_write_head(&ctx->out, status, content_type, len, tp_buf_ptr(&ctx->extra),
                       !ctx->keep_alive);
    bool head = ctx->req != NULL && ctx->req->method == TP_HTTP_HEAD;
    if (!head && status != 204 && status != 304)
        tp_buf_append(&ctx->out, body, len);
    if (ctx->done != NULL)
        ctx->done(ctx, ctx->done_ud);
}

void tp_http_body_init(const struct tp_http_ctx *ctx, struct tp_buf *b, struct tp_wr *w)
{
    tp_buf_init(b);
    tp_wr_init(w, b, tp_http_ctx_wants_msgpack(ctx) ? TP_FMT_MSGPACK : TP_FMT_JSON);
}

void tp_http_reply_body(struct tp_http_ctx *ctx, int status, struct tp_buf *b)
{
    /* The same question tp_http_body_init asked: the request's Accept does not change. */
    const char *ctype = tp_http_ctx_wants_msgpack(ctx) ? "application/msgpack" : "application/json";
    tp_http_reply(ctx, status, ctype, tp_buf_ptr(b), tp_buf_size(b));
    tp_buf_deinit(b);
}

void tp_http_reply_error(struct tp_http_ctx *ctx, int status, const char *code, const char *message)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(ctx, &b, &w);
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "error");
    tp_wr_map(&w, 2);
    tp_wr_key(&w, "code");
    tp_wr_str(&w, code);
    tp_wr_key(&w, "message");
    tp_wr_str(&w, message);
    tp_http_reply_body(ctx, status, &b);
}
