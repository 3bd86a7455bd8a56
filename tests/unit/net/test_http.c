/* Unit tests for the HTTP request parser and response writer (src/net/http.c): no sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/net/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const struct tp_http_limits limits = {.max_header = TP_HTTP_MAX_HEADER_BYTES,
                                             .max_body = 1024};

#define MAXREQ 8

struct result {
    struct tp_http_request *reqs[MAXREQ];
    int n;
    int error; /* status after TP_HTTP_ERROR, else 0 */
};

static void result_free(struct result *r)
{
    for (int i = 0; i < r->n; i++)
        tp_http_request_free(r->reqs[i]);
    r->n = 0;
}

/* Feeds data[0..len) to p, collecting requests; returns the bytes consumed. */
static size_t feed(struct tp_http_parser *p, const char *data, size_t len, struct result *r)
{
    size_t off = 0;
    while (r->error == 0) {
        size_t used = 0;
        enum tp_http_feed f = tp_http_parser_feed(p, data + off, len - off, &used);
        off += used;
        if (f == TP_HTTP_REQUEST) {
            assert_true(r->n < MAXREQ);
            r->reqs[r->n++] = tp_http_parser_take(p);
            continue;
        }
        if (f == TP_HTTP_ERROR)
            r->error = tp_http_parser_error_status(p);
        else
            assert_int_equal(off, len); /* NEED_MORE consumes everything */
        break;
    }
    return off;
}

static int parse_one_shot(const char *data, struct result *r)
{
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    feed(p, data, strlen(data), r);
    tp_http_parser_free(p);
    return r->error;
}

static void test_simple_get(void **state)
{
    (void)state;
    struct result r = {0};
    parse_one_shot("GET /api/v1/rounds?limit=5&before=a%20b&x=1+2&flag&=e HTTP/1.1\r\n"
                   "Host: example.com\r\nX-Thing:  spaced value  \r\nEmpty:\r\n\r\n",
                   &r);
    assert_int_equal(r.error, 0);
    assert_int_equal(r.n, 1);
    struct tp_http_request *q = r.reqs[0];
    assert_int_equal(q->method, TP_HTTP_GET);
    assert_string_equal(q->method_name, "GET");
    assert_string_equal(q->path, "/api/v1/rounds");
    assert_string_equal(q->query, "limit=5&before=a%20b&x=1+2&flag&=e");
    assert_string_equal(tp_http_request_param(q, "limit"), "5");
    assert_string_equal(tp_http_request_param(q, "before"), "a b");
    assert_string_equal(tp_http_request_param(q, "x"), "1 2");
    assert_string_equal(tp_http_request_param(q, "flag"), "");
    assert_string_equal(tp_http_request_param(q, ""), "e");
    assert_null(tp_http_request_param(q, "LIMIT"));
    assert_string_equal(tp_http_request_header(q, "host"), "example.com");
    assert_string_equal(tp_http_request_header(q, "HOST"), "example.com");
    assert_string_equal(tp_http_request_header(q, "x-thing"), "spaced value");
    assert_string_equal(tp_http_request_header(q, "empty"), "");
    assert_null(tp_http_request_header(q, "missing"));
    assert_true(q->keep_alive);
    assert_false(q->upgrade);
    assert_int_equal(q->body_len, 0);
    result_free(&r);
}

/* Three pipelined requests, including a Content-Length body and a chunked body. */
static const char pipeline[] =
    "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
    "POST /two?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    "POST /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    "GET /four HTTP/1.1\r\nConnection: close\r\n\r\n";

static void check_pipeline(struct result *r)
{
    assert_int_equal(r->error, 0);
    assert_int_equal(r->n, 4);
    assert_string_equal(r->reqs[0]->path, "/one");
    assert_string_equal(r->reqs[1]->path, "/two");
    assert_string_equal(r->reqs[1]->body, "hello");
    assert_int_equal(r->reqs[1]->body_len, 5);
    assert_string_equal(tp_http_request_param(r->reqs[1], "a"), "1");
    assert_string_equal(r->reqs[2]->path, "/three");
    assert_string_equal(r->reqs[2]->body, "abcde");
    assert_string_equal(r->reqs[3]->path, "/four");
    assert_true(r->reqs[0]->keep_alive);
    assert_false(r->reqs[3]->keep_alive);
}

/* The caller's view: bytes not consumed stay in its buffer and are offered again. */
static void feed_split(const char *data, size_t len, size_t split, struct result *r)
{
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    char buf[sizeof(pipeline)];
    size_t have = 0, given = 0;
    size_t cuts[2] = {split, len};
    for (int i = 0; i < 2; i++) {
        memcpy(buf + have, data + given, cuts[i] - given);
        have += cuts[i] - given;
        given = cuts[i];
        size_t used = feed(p, buf, have, r);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    assert_int_equal(have, 0);
    tp_http_parser_free(p);
}

static void test_pipeline_every_split(void **state)
{
    (void)state;
    size_t len = strlen(pipeline);
    for (size_t split = 0; split <= len; split++) {
        struct result r = {0};
        feed_split(pipeline, len, split, &r);
        check_pipeline(&r);
        result_free(&r);
    }
}

static void test_pipeline_byte_by_byte(void **state)
{
    (void)state;
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    struct result r = {0};
    size_t len = strlen(pipeline);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(feed(p, pipeline + i, 1, &r), 1);
    check_pipeline(&r);
    result_free(&r);
    tp_http_parser_free(p);
}

/* Builds a request whose head (request line through the blank line) is exactly `n` bytes. */
static char *head_of_size(size_t n)
{
    const char *pre = "GET / HTTP/1.1\r\nX-Pad: ";
    const char *post = "\r\n\r\n";
    size_t fixed = strlen(pre) + strlen(post);
    assert_true(n > fixed);
    char *s = tp_xmalloc(n + 1);
    strcpy(s, pre);
    /* A loop, not memset: gcc 12's -O2 + ASan bounds analysis misfires on the memset here. */
    for (size_t i = strlen(pre); i < n - strlen(post); i++)
        s[i] = 'a';
    strcpy(s + n - strlen(post), post);
    assert_int_equal(strlen(s), n);
    return s;
}

static void test_header_limit(void **state)
{
    (void)state;
    for (size_t n = TP_HTTP_MAX_HEADER_BYTES - 2; n <= TP_HTTP_MAX_HEADER_BYTES + 2; n++) {
        char *s = head_of_size(n);
        struct result r = {0};
        parse_one_shot(s, &r);
        if (n <= TP_HTTP_MAX_HEADER_BYTES) {
            assert_int_equal(r.error, 0);
            assert_int_equal(r.n, 1);
        } else {
            assert_int_equal(r.error, 431);
        }
        result_free(&r);
        /* Same verdict byte by byte (the allowance logic across calls). */
        struct tp_http_parser *p = tp_http_parser_new(&limits);
        struct result r2 = {0};
        for (size_t i = 0; i < n && r2.error == 0; i++)
            feed(p, s + i, 1, &r2);
        assert_int_equal(r2.error, n <= TP_HTTP_MAX_HEADER_BYTES ? 0 : 431);
        result_free(&r2);
        tp_http_parser_free(p);
        free(s);
    }
    /* Endless header without a line end, and many small headers. */
    char *big = malloc(20000);
    memset(big, 'a', 19999);
    big[19999] = '\0';
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    struct result r = {0};
    parse_one_shot(big, &r);
    assert_int_equal(r.error, 431);
    free(big);
    /* The limit applies per request, not per connection. */
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    char *s = head_of_size(6000);
    struct result r3 = {0};
    for (int i = 0; i < 3; i++)
        feed(p, s, strlen(s), &r3);
    assert_int_equal(r3.error, 0);
    assert_int_equal(r3.n, 3);
    result_free(&r3);
    free(s);
    tp_http_parser_free(p);
}

static void test_too_many_headers(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_buf_puts(&b, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < TP_HTTP_MAX_HEADERS + 1; i++)
        tp_buf_printf(&b, "H%d: v\r\n", i);
    tp_buf_puts(&b, "\r\n");
    tp_buf_append(&b, "", 1);
    struct result r = {0};
    parse_one_shot(tp_buf_ptr(&b), &r);
    assert_int_equal(r.error, 431);
    tp_buf_deinit(&b);
}

static void test_body_limits(void **state)
{
    (void)state;
    struct result r = {0};
    /* Declared too large: refused before any body byte arrives. */
    parse_one_shot("POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", &r);
    assert_int_equal(r.error, 413);
    struct result r2 = {0};
    parse_one_shot("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", &r2);
    assert_true(r2.error == 413 || r2.error == 400);
    /* Exactly at the limit is fine. */
    char *s = malloc(2000);
    int n = snprintf(s, 2000, "POST / HTTP/1.1\r\nContent-Length: 1024\r\n\r\n");
    memset(s + n, 'x', 1024);
    s[n + 1024] = '\0';
    struct result r3 = {0};
    parse_one_shot(s, &r3);
    assert_int_equal(r3.error, 0);
    assert_int_equal(r3.n, 1);
    assert_int_equal(r3.reqs[0]->body_len, 1024);
    result_free(&r3);
    free(s);
    /* Chunked bodies are counted as they arrive. */
    struct tp_buf b;
    tp_buf_init(&b);
    tp_buf_puts(&b, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        tp_buf_puts(&b, "200\r\n");
        for (int j = 0; j < 0x200; j++)
            tp_buf_puts(&b, "y");
        tp_buf_puts(&b, "\r\n");
    }
    tp_buf_puts(&b, "0\r\n\r\n");
    tp_buf_append(&b, "", 1);
    struct result r4 = {0};
    parse_one_shot(tp_buf_ptr(&b), &r4);
    assert_int_equal(r4.error, 413);
    tp_buf_deinit(&b);
}

static void test_smuggling(void **state)
{
    (void)state;
    const char *cases[] = {
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        struct result r = {0};
        parse_one_shot(cases[i], &r);
        assert_int_equal(r.error, 400);
        assert_int_equal(r.n, 0);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    const char *cases[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\001b\r\n\r\n",
        "GET / HTTP/2.7\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET http://evil/ HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET /?a=%zz HTTP/1.1\r\n\r\n",
        "GET /?a=%00 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\n X: folded\r\n\r\n",
        "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", /* a TLS ClientHello on the HTTP port */
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        struct result r = {0};
        parse_one_shot(cases[i], &r);
        assert_int_equal(r.n, 0);
        assert_int_equal(r.error, 400);
    }
    /* After an error every further feed fails. */
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    struct result r = {0};
    feed(p, "BAD\r\n\r\n", 7, &r);
    size_t used;
    assert_int_equal(tp_http_parser_feed(p, "GET / HTTP/1.1\r\n\r\n", 18, &used), TP_HTTP_ERROR);
    assert_string_not_equal(tp_http_parser_error_reason(p), "");
    tp_http_parser_free(p);
}

static void test_keep_alive(void **state)
{
    (void)state;
    struct {
        const char *req;
        bool ka;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        struct result r = {0};
        parse_one_shot(cases[i].req, &r);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.reqs[0]->keep_alive, cases[i].ka);
        result_free(&r);
    }
}

static void test_upgrade_stops(void **state)
{
    (void)state;
    const char *s = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "\r\n\x82\x05hello";
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    size_t used;
    assert_int_equal(tp_http_parser_feed(p, s, strlen(s), &used), TP_HTTP_REQUEST);
    assert_memory_equal(s + used, "\x82\x05hello", 7);
    struct tp_http_request *q = tp_http_parser_take(p);
    assert_true(q->upgrade);
    assert_string_equal(q->path, "/ws");
    tp_http_request_free(q);
    assert_int_equal(tp_http_parser_feed(p, s + used, 7, &used), TP_HTTP_ERROR);
    tp_http_parser_free(p);
}

static void test_expect_continue(void **state)
{
    (void)state;
    struct tp_http_parser *p = tp_http_parser_new(&limits);
    const char *head = "POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    size_t used;
    assert_int_equal(tp_http_parser_feed(p, head, strlen(head), &used), TP_HTTP_NEED_MORE);
    assert_true(tp_http_parser_take_continue(p));
    assert_false(tp_http_parser_take_continue(p));
    assert_int_equal(tp_http_parser_feed(p, "abc", 3, &used), TP_HTTP_REQUEST);
    tp_http_request_free(tp_http_parser_take(p));
    /* Without a body there is nothing to continue. */
    const char *nobody = "GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n";
    assert_int_equal(tp_http_parser_feed(p, nobody, strlen(nobody), &used), TP_HTTP_REQUEST);
    assert_false(tp_http_parser_take_continue(p));
    tp_http_request_free(tp_http_parser_take(p));
    tp_http_parser_free(p);
}

static void test_methods(void **state)
{
    (void)state;
    struct {
        const char *req;
        enum tp_http_method m;
        const char *name;
    } cases[] = {
        {"HEAD / HTTP/1.1\r\n\r\n", TP_HTTP_HEAD, "HEAD"},
        {"DELETE / HTTP/1.1\r\n\r\n", TP_HTTP_DELETE, "DELETE"},
        {"OPTIONS / HTTP/1.1\r\n\r\n", TP_HTTP_OPTIONS, "OPTIONS"},
        {"PROPFIND / HTTP/1.1\r\n\r\n", TP_HTTP_OTHER, "PROPFIND"},
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        struct result r = {0};
        parse_one_shot(cases[i].req, &r);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.reqs[0]->method, cases[i].m);
        assert_string_equal(r.reqs[0]->method_name, cases[i].name);
        result_free(&r);
    }
}

/* Guard page: the input ends exactly where an unreadable page begins, so any read past the
 * end faults (picohttpparser's test.c technique). Every prefix of each request is tried. */
static void test_guard_page(void **state)
{
    (void)state;
    long pg = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
    const char *inputs[] = {
        pipeline,
        "GET /x?y=%4 HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nxx",
        "GET /%",
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(inputs); i++) {
        size_t len = strlen(inputs[i]);
        for (size_t cut = 0; cut <= len; cut++) {
            char *start = map + pg - cut;
            memcpy(start, inputs[i], cut);
            struct tp_http_parser *p = tp_http_parser_new(&limits);
            struct result r = {0};
            feed(p, start, cut, &r);
            result_free(&r);
            tp_http_parser_free(p);
        }
    }
    munmap(map, (size_t)pg * 2);
}

static void test_response_writer(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_http_write_head(&b, 404, "application/json", 12, "Retry-After: 5\r\n", true);
    tp_buf_append(&b, "", 1);
    assert_string_equal(tp_buf_ptr(&b), "HTTP/1.1 404 Not Found\r\nServer: tickpool\r\n"
                                        "Content-Type: application/json\r\n"
                                        "Content-Length: 12\r\nRetry-After: 5\r\n"
                                        "Connection: close\r\n\r\n");
    tp_buf_reset(&b);
    tp_http_write_head(&b, 304, NULL, 99, NULL, false);
    tp_buf_append(&b, "", 1);
    assert_string_equal(tp_buf_ptr(&b), "HTTP/1.1 304 Not Modified\r\nServer: tickpool\r\n\r\n");
    tp_buf_reset(&b);
    tp_http_error_json(&b, "bad_request", "quote \" back\\slash \n nl");
    tp_buf_append(&b, "", 1);
    assert_string_equal(tp_buf_ptr(&b), "{\"error\":{\"code\":\"bad_request\",\"message\":"
                                        "\"quote \\\" back\\\\slash \\u000a nl\"}}");
    tp_buf_deinit(&b);
    assert_string_equal(tp_http_status_code_name(413), "payload_too_large");
    assert_string_equal(tp_http_status_code_name(431), "headers_too_large");
    assert_string_equal(tp_http_status_code_name(405), "method_not_allowed");
    assert_string_equal(tp_http_status_text(431), "Request Header Fields Too Large");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_pipeline_every_split),
        cmocka_unit_test(test_pipeline_byte_by_byte),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_upgrade_stops),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_guard_page),
        cmocka_unit_test(test_response_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
