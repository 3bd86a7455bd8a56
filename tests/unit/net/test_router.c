/* Unit tests for routing and request contexts (src/net/router.c): 404/405, {param} segments,
 * HEAD on GET routes, async replies and orphaned contexts. No sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/net/http.h"
#include "tickpool/net/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tp_http_request *parse(const char *raw)
{
    struct tp_http_limits lim = {TP_HTTP_MAX_HEADER_BYTES, 4096};
    struct tp_http_parser *p = tp_http_parser_new(&lim);
    size_t used;
    assert_int_equal(tp_http_parser_feed(p, raw, strlen(raw), &used), TP_HTTP_REQUEST);
    struct tp_http_request *r = tp_http_parser_take(p);
    tp_http_parser_free(p);
    return r;
}

static int done_calls;
static void on_done(struct tp_http_ctx *ctx, void *ud)
{
    (void)ctx;
    (void)ud;
    done_calls++;
}

static char last_route[64];
static char last_id[64];
static struct tp_http_ctx *parked;

static void h_named(struct tp_http_ctx *ctx, void *ud)
{
    snprintf(last_route, sizeof(last_route), "%s", (const char *)ud);
    const char *id = tp_http_ctx_param(ctx, "id");
    snprintf(last_id, sizeof(last_id), "%s", id ? id : "(none)");
    tp_http_reply(ctx, 200, "text/plain", "body", 4);
}

static void h_park(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    parked = ctx; /* answers later */
}

static struct tp_router *make_router(void)
{
    struct tp_router *r = tp_router_new();
    assert_int_equal(tp_router_add(r, "GET", "/api/v1/rounds/current", h_named, "current"), 0);
    assert_int_equal(tp_router_add(r, "GET", "/api/v1/rounds/{id}", h_named, "round"), 0);
    assert_int_equal(tp_router_add(r, "GET", "/api/v1/rounds", h_named, "rounds"), 0);
    assert_int_equal(tp_router_add(r, "POST", "/api/v1/bets", h_named, "bet"), 0);
    assert_int_equal(tp_router_add(r, "DELETE", "/api/v1/bets/{id}", h_named, "del"), 0);
    assert_int_equal(tp_router_add(r, "GET", "/slow", h_park, NULL), 0);
    return r;
}

/* Dispatches `raw`; returns the response text (caller frees) and sets *status. */
static char *run(struct tp_router *r, const char *raw, int *status)
{
    last_route[0] = last_id[0] = '\0';
    done_calls = 0;
    struct tp_http_ctx *ctx = tp_http_ctx_new(parse(raw), true, on_done, NULL);
    tp_router_dispatch(r, ctx);
    assert_true(tp_http_ctx_replied(ctx));
    assert_int_equal(done_calls, 1);
    *status = tp_http_ctx_status(ctx);
    struct tp_buf *o = tp_http_ctx_output(ctx);
    char *s = tp_xstrndup(tp_buf_ptr(o), tp_buf_size(o));
    tp_http_ctx_free(ctx);
    return s;
}

static void test_routes_and_params(void **state)
{
    (void)state;
    struct tp_router *r = make_router();
    int st;
    free(run(r, "GET /api/v1/rounds/current HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 200);
    assert_string_equal(last_route, "current"); /* first match wins over {id} */
    free(run(r, "GET /api/v1/rounds/42 HTTP/1.1\r\n\r\n", &st));
    assert_string_equal(last_route, "round");
    assert_string_equal(last_id, "42");
    free(run(r, "GET /api/v1/rounds/a%20b HTTP/1.1\r\n\r\n", &st));
    assert_string_equal(last_id, "a b");
    free(run(r, "GET /api/v1/rounds?limit=3 HTTP/1.1\r\n\r\n", &st));
    assert_string_equal(last_route, "rounds");
    free(run(r, "DELETE /api/v1/bets/7 HTTP/1.1\r\n\r\n", &st));
    assert_string_equal(last_route, "del");
    assert_string_equal(last_id, "7");
    tp_router_free(r);
}

static void test_404_405(void **state)
{
    (void)state;
    struct tp_router *r = make_router();
    int st;
    char *s = run(r, "GET /nope HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 404);
    assert_non_null(strstr(s, "{\"error\":{\"code\":\"not_found\""));
    assert_non_null(strstr(s, "Content-Type: application/json\r\n"));
    free(s);
    /* Empty {param} segment and trailing slash do not match. */
    free(run(r, "GET /api/v1/rounds/ HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 404);
    free(run(r, "GET /api/v1/rounds/1/2 HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 404);
    s = run(r, "PUT /api/v1/bets HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 405);
    assert_non_null(strstr(s, "Allow: POST\r\n"));
    assert_non_null(strstr(s, "\"method_not_allowed\""));
    free(s);
    s = run(r, "POST /api/v1/rounds/5 HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 405);
    assert_non_null(strstr(s, "Allow: GET, HEAD\r\n"));
    free(s);
    /* Bad escape in a parameter. */
    free(run(r, "GET /api/v1/rounds/%zz HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 400);
    tp_router_free(r);
}

static void test_head_and_msgpack(void **state)
{
    (void)state;
    struct tp_router *r = make_router();
    int st;
    char *s = run(r, "HEAD /api/v1/rounds/9 HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 200);
    assert_non_null(strstr(s, "Content-Length: 4\r\n"));
    assert_null(strstr(s, "body")); /* no body on HEAD */
    free(s);
    s = run(r, "GET /nope HTTP/1.1\r\nAccept: application/msgpack\r\n\r\n", &st);
    assert_int_equal(st, 404);
    assert_non_null(strstr(s, "Content-Type: application/msgpack\r\n"));
    const char *body = strstr(s, "\r\n\r\n") + 4;
    assert_int_equal((unsigned char)body[0], 0x81); /* map of one: {"error": {...}} */
    assert_memory_equal(body + 1,
                        "\xa5"
                        "error",
                        6);
    free(s);
    tp_router_free(r);
}

static void h_fallback(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    tp_http_ctx_add_header(ctx, "X-Bad", "a\r\nInjected: 1");
    tp_http_ctx_add_header(ctx, "Retry-After", "5");
    tp_http_ctx_set_close(ctx);
    tp_http_reply(ctx, 299, NULL, "", 0);
}

static void test_fallback_and_headers(void **state)
{
    (void)state;
    struct tp_router *r = make_router();
    tp_router_set_fallback(r, h_fallback, NULL);
    int st;
    char *s = run(r, "GET /index.html HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 299);
    assert_null(strstr(s, "Injected"));
    assert_non_null(strstr(s, "Retry-After: 5\r\n"));
    assert_non_null(strstr(s, "Connection: close\r\n"));
    free(s);
    /* Known paths still answer 405 rather than falling back. */
    free(run(r, "PUT /api/v1/bets HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 405);
    tp_router_free(r);
}

static void test_async_and_orphan(void **state)
{
    (void)state;
    struct tp_router *r = make_router();
    /* Async reply: done fires at reply time. */
    done_calls = 0;
    struct tp_http_ctx *ctx =
        tp_http_ctx_new(parse("GET /slow HTTP/1.1\r\n\r\n"), true, on_done, NULL);
    tp_router_dispatch(r, ctx);
    assert_ptr_equal(parked, ctx);
    assert_false(tp_http_ctx_replied(ctx));
    assert_int_equal(done_calls, 0);
    tp_http_reply_error(parked, 503, "unavailable", "later");
    assert_int_equal(done_calls, 1);
    assert_int_equal(tp_http_ctx_status(ctx), 503);
    tp_http_ctx_free(ctx);
    /* Orphaned before the reply: the late reply frees it and done is not called (ASan/valgrind
     * would flag a leak or a use after free). */
    done_calls = 0;
    parked = NULL;
    ctx = tp_http_ctx_new(parse("GET /slow HTTP/1.1\r\n\r\n"), true, on_done, NULL);
    tp_router_dispatch(r, ctx);
    tp_http_ctx_orphan(ctx);
    tp_http_reply(parked, 200, "text/plain", "late", 4);
    assert_int_equal(done_calls, 0);
    /* Orphaning a replied context frees it at once. */
    ctx = tp_http_ctx_new(parse("GET /api/v1/rounds HTTP/1.1\r\n\r\n"), true, on_done, NULL);
    tp_router_dispatch(r, ctx);
    tp_http_ctx_orphan(ctx);
    tp_router_free(r);
}

static void test_bad_patterns(void **state)
{
    (void)state;
    struct tp_router *r = tp_router_new();
    assert_int_equal(tp_router_add(r, "GET", "no-slash", h_named, NULL), TP_EINVAL);
    assert_int_equal(tp_router_add(r, "GET", "/a{b}", h_named, NULL), TP_EINVAL);
    assert_int_equal(tp_router_add(r, "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h_named, NULL),
                     TP_EINVAL);
    assert_int_equal(tp_router_add(r, "", "/x", h_named, NULL), TP_EINVAL);
    tp_router_free(r);
}

/* Content-Type → body format: JSON by default, the three MessagePack spellings, nothing else. */
static void test_body_format(void **state)
{
    (void)state;
    enum tp_fmt f = TP_FMT_MSGPACK;
    assert_int_equal(tp_http_body_format(NULL, &f), 0);
    assert_int_equal(f, TP_FMT_JSON);
    assert_int_equal(tp_http_body_format("application/json; charset=utf-8", &f), 0);
    assert_int_equal(f, TP_FMT_JSON);
    assert_int_equal(tp_http_body_format("Application/MsgPack", &f), 0);
    assert_int_equal(f, TP_FMT_MSGPACK);
    assert_int_equal(tp_http_body_format("text/plain", &f), TP_EINVAL);
    assert_int_equal(tp_http_body_format("application/jsonx", &f), TP_EINVAL);
    assert_int_equal(tp_http_body_format("application/x-www-form-urlencoded", &f), TP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_params), cmocka_unit_test(test_404_405),
        cmocka_unit_test(test_head_and_msgpack),  cmocka_unit_test(test_fallback_and_headers),
        cmocka_unit_test(test_async_and_orphan),  cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_body_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
