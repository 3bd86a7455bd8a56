/*
 * libFuzzer target: arbitrary bytes through the HTTP request parser exactly as a connection
 * feeds it (a caller-side buffer, arbitrary read boundaries, unconsumed bytes offered again),
 * with small limits so the 431/413 paths are reached, then every complete request through the
 * accessors, the router (path parameters, 404/405) and the response writer.
 *
 * Input layout: byte 0 picks the limits, byte 1 seeds the read-boundary generator, the rest is
 * the byte stream.
 */
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/net/http.h"
#include "tickpool/net/router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void h_ok(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    const char *id = tp_http_ctx_param(ctx, "id");
    size_t blen;
    const char *body = tp_http_ctx_body(ctx, &blen);
    TP_ASSERT(body[blen] == '\0');
    tp_http_ctx_add_header(ctx, "X-Id", id ? id : "-");
    if (tp_http_ctx_query(ctx, "fail") != NULL)
        tp_http_reply_error(ctx, 429, "overloaded", id ? id : "slow down");
    else
        tp_http_reply(ctx, 200, "application/json", body, blen);
}

static struct tp_router *router(void)
{
    static struct tp_router *r;
    if (r == NULL) {
        r = tp_router_new();
        tp_router_add(r, "GET", "/api/v1/rounds/{id}", h_ok, NULL);
        tp_router_add(r, "POST", "/api/v1/bets", h_ok, NULL);
        tp_router_add(r, "GET", "/a/{x}/b/{id}", h_ok, NULL);
    }
    return r;
}

static void handle(struct tp_http_request *req)
{
    TP_ASSERT(req->path[0] == '/');
    for (size_t i = 0; i < req->nheaders; i++)
        TP_ASSERT(tp_http_request_header(req, req->headers[i].name) != NULL);
    for (size_t i = 0; i < req->nparams; i++)
        TP_ASSERT(tp_http_request_param(req, req->params[i].name) != NULL);
    TP_ASSERT(req->body[req->body_len] == '\0');
    struct tp_http_ctx *ctx = tp_http_ctx_new(req, req->keep_alive, NULL, NULL);
    tp_router_dispatch(router(), ctx);
    TP_ASSERT(tp_http_ctx_replied(ctx));
    tp_http_ctx_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct tp_http_limits lim = {.max_header = 64 + (size_t)(data[0] & 0x0f) * 256,
                                 .max_body = (size_t)(data[0] >> 4) * 64};
    uint32_t seed = data[1] * 2654435761u + 1;
    data += 2;
    size -= 2;

    struct tp_http_parser *p = tp_http_parser_new(&lim);
    struct tp_buf in;
    tp_buf_init(&in);
    size_t given = 0;
    for (;;) {
        if (given < size) {
            seed = seed * 1103515245u + 12345u;
            size_t n = TP_MIN(size - given, 1 + (seed >> 16) % 97);
            tp_buf_append(&in, data + given, n);
            given += n;
        } else if (tp_buf_size(&in) == 0) {
            break;
        }
        size_t used = 0;
        enum tp_http_feed f = tp_http_parser_feed(p, tp_buf_ptr(&in), tp_buf_size(&in), &used);
        TP_ASSERT(used <= tp_buf_size(&in));
        tp_buf_consume(&in, used);
        if (f == TP_HTTP_REQUEST) {
            struct tp_http_request *req = tp_http_parser_take(p);
            TP_ASSERT(req != NULL);
            bool stop = req->upgrade;
            handle(req);
            if (stop)
                break;
            continue;
        }
        if (f == TP_HTTP_ERROR) {
            int st = tp_http_parser_error_status(p);
            TP_ASSERT(st == 400 || st == 413 || st == 431);
            struct tp_buf out;
            tp_buf_init(&out);
            tp_http_write_head(&out, st, "application/json", 0, NULL, true);
            tp_http_error_json(&out, tp_http_status_code_name(st), tp_http_parser_error_reason(p));
            tp_buf_deinit(&out);
            break;
        }
        TP_ASSERT(tp_buf_size(&in) == 0); /* NEED_MORE consumed everything */
        if (given >= size)
            break;
    }
    tp_buf_deinit(&in);
    tp_http_parser_free(p);
    return 0;
}
