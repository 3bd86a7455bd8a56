/* Unit tests for connections (src/net/conn.c) over a socketpair and a private libev loop: response
 * order with asynchronous handlers, late replies after the client vanished (must not touch
 * freed memory: run under ASan), the pipeline window, and the header timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/router.h"

#include <ev.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct tp_config cfg;
static struct tp_conn_host host; /* a host without a worker process */
static ev_prepare prep;
static int64_t budget_ns; /* slice given to tp_conn_run_dirty (0: all) */
static int slices_left;   /* prepare calls that left dirty connections behind */

struct late {
    ev_timer t;
    struct tp_http_ctx *ctx;
};

static void on_late(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct late *l = (struct late *)t;
    tp_http_reply(l->ctx, 200, "text/plain", "slow", 4);
    free(l);
}

/* Answers after 50 ms from a timer: an asynchronous handler. */
static void h_slow(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    struct late *l = tp_xcalloc(1, sizeof(*l));
    l->ctx = ctx;
    ev_timer_init(&l->t, on_late, 0.05, 0.0);
    ev_timer_start(host.loop, &l->t);
}

static void h_fast(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    tp_http_reply(ctx, 200, "text/plain", "fast", 4);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)p;
    (void)revents;
    if (tp_conn_run_dirty(&host, budget_ns))
        slices_left++;
    tp_conn_reap(&host);
}

static int setup(void **state)
{
    (void)state;
    tp_config_defaults(&cfg);
    cfg.server.header_timeout_ms = 200;
    cfg.server.keepalive_timeout_ms = 5000;
    memset(&host, 0, sizeof(host));
    host.cfg = &cfg;
    host.loop = ev_loop_new(EVBACKEND_EPOLL);
    host.http_limits.max_header = TP_HTTP_MAX_HEADER_BYTES;
    host.http_limits.max_body = 1024;
    host.router = tp_router_new();
    tp_router_add(host.router, "GET", "/slow", h_slow, NULL);
    tp_router_add(host.router, "GET", "/fast", h_fast, NULL);
    budget_ns = 0;
    slices_left = 0;
    ev_prepare_init(&prep, on_prepare);
    ev_prepare_start(host.loop, &prep);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tp_conn_close_all_and_reap(&host);
    /* Let parked timers fire into orphaned contexts, then stop. */
    for (int i = 0; i < 20; i++)
        ev_run(host.loop, EVRUN_NOWAIT);
    tp_router_free(host.router);
    ev_loop_destroy(host.loop);
    return 0;
}

/* A connected pair: server side handed to a new conn, client side returned (blocking). */
static int pair(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    assert_non_null(tp_conn_new(&host, sv[0], false));
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    return sv[1];
}

/* Runs the loop until `want` bytes arrived on fd, EOF, or `ms` passed. Returns bytes read;
 * *eof tells whether the server closed. */
static size_t pump(int fd, char *buf, size_t cap, size_t want, int ms, bool *eof)
{
    size_t got = 0;
    *eof = false;
    int64_t end = tp_mono_ms() + ms;
    while (tp_mono_ms() < end && got < want) {
        ev_run(host.loop, EVRUN_NOWAIT);
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            *eof = true;
            break;
        } else {
            usleep(1000);
        }
    }
    buf[got] = '\0';
    return got;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void test_async_order(void **state)
{
    (void)state;
    int fd = pair();
    const char req[] = "GET /slow HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n"
                       "GET /slow HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    static char buf[65536];
    bool eof;
    size_t want = 4 * 40;
    pump(fd, buf, sizeof(buf), want, 2000, &eof);
    while (count(buf, "HTTP/1.1 ") < 4 && !eof) {
        size_t have = strlen(buf);
        pump(fd, buf + have, sizeof(buf) - have, 1, 200, &eof);
    }
    assert_false(eof);
    const char *a = strstr(buf, "\r\n\r\nslow");
    const char *b = strstr(buf, "\r\n\r\nfast");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b); /* the fast answer waited for the slow one before it */
    const char *c = strstr(b, "\r\n\r\nslow");
    const char *d = strstr(buf, "404 Not Found");
    assert_non_null(c);
    assert_non_null(d);
    assert_true(c < d);
    close(fd);
    for (int i = 0; i < 10; i++)
        ev_run(host.loop, EVRUN_NOWAIT);
    assert_int_equal(host.nconns, 0);
}

/* Writes are run in slices (a 1 ns budget: 16 connections per slice) and every connection
 * still gets its answer, also while half the clients leave between slices. */
static void test_sliced_writes(void **state)
{
    (void)state;
    enum { N = 64 };
    int fds[N];
    budget_ns = 1;
    for (int i = 0; i < N; i++) {
        fds[i] = pair();
        const char req[] = "GET /slow HTTP/1.1\r\n\r\n";
        assert_int_equal(send(fds[i], req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    }
    /* The 64 timers fire in one iteration: 64 dirty connections, written 16 at a time. */
    int64_t end = tp_mono_ms() + 2000;
    while (slices_left == 0 && tp_mono_ms() < end)
        ev_run(host.loop, EVRUN_NOWAIT);
    assert_true(slices_left > 0);
    for (int i = 0; i < N; i += 2) /* half the clients leave meanwhile */
        close(fds[i]);
    end = tp_mono_ms() + 2000;
    while ((slices_left < N / 16 - 1 || tp_conn_has_dirty(&host)) && tp_mono_ms() < end)
        ev_run(host.loop, EVRUN_NOWAIT);
    assert_false(tp_conn_has_dirty(&host));
    for (int i = 1; i < N; i += 2) {
        static char buf[4096];
        bool eof;
        pump(fds[i], buf, sizeof(buf), 40, 2000, &eof);
        assert_non_null(strstr(buf, "\r\n\r\nslow"));
        close(fds[i]);
    }
    for (int i = 0; i < 20; i++)
        ev_run(host.loop, EVRUN_NOWAIT);
    assert_int_equal(host.nconns, 0);
}

static void test_client_gone_before_async_reply(void **state)
{
    (void)state;
    int fd = pair();
    const char req[] = "GET /slow HTTP/1.1\r\n\r\nGET /slow HTTP/1.1\r\n\r\n";
    send(fd, req, sizeof(req) - 1, 0);
    for (int i = 0; i < 5; i++)
        ev_run(host.loop, EVRUN_NOWAIT);
    close(fd); /* gone while both replies are pending */
    int64_t end = tp_mono_ms() + 300;
    while (tp_mono_ms() < end) {
        ev_run(host.loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    /* The conn was freed, the late replies hit orphaned contexts and freed them. */
    assert_int_equal(host.nconns, 0);
}

static void test_pipeline_window(void **state)
{
    (void)state;
    int fd = pair();
    static char req[40 * 64];
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "GET /%s HTTP/1.1\r\n\r\n",
                              i % 3 == 0 ? "slow" : "fast");
    assert_int_equal(send(fd, req, n, 0), (ssize_t)n);
    static char buf[1 << 16];
    bool eof = false;
    size_t have = 0;
    int64_t end = tp_mono_ms() + 5000;
    while (count(buf, "HTTP/1.1 200") < 40 && !eof && tp_mono_ms() < end)
        have += pump(fd, buf + have, sizeof(buf) - have, 1, 100, &eof);
    assert_int_equal(count(buf, "HTTP/1.1 200"), 40);
    /* Order: bodies follow the request pattern. */
    const char *p = buf;
    for (int i = 0; i < 40; i++) {
        p = strstr(p, "\r\n\r\n");
        assert_non_null(p);
        p += 4;
        assert_memory_equal(p, i % 3 == 0 ? "slow" : "fast", 4);
    }
    close(fd);
}

static void test_header_timeout(void **state)
{
    (void)state;
    int fd = pair();
    send(fd, "GET /fast HTTP/1.1\r\nX: ", 23, 0);
    int64_t t0 = tp_mono_ms();
    static char buf[256];
    bool eof = false;
    while (!eof && tp_mono_ms() - t0 < 2000) {
        send(fd, "a", 1, MSG_NOSIGNAL); /* keeps trickling: must not extend the deadline */
        pump(fd, buf, sizeof(buf), 1, 20, &eof);
    }
    assert_true(eof);
    int64_t dt = tp_mono_ms() - t0;
    assert_true(dt >= 150 && dt < 1000);
    close(fd);
}

static void test_body_limit_answers_then_closes(void **state)
{
    (void)state;
    int fd = pair();
    static char req[4096];
    int n = snprintf(req, sizeof(req), "POST /fast HTTP/1.1\r\nContent-Length: 3000\r\n\r\n");
    memset(req + n, 'x', 3000);
    send(fd, req, (size_t)n + 3000, 0);
    static char buf[4096];
    bool eof = false;
    size_t have = 0;
    int64_t end = tp_mono_ms() + 3000;
    while (!eof && tp_mono_ms() < end)
        have += pump(fd, buf + have, sizeof(buf) - have, sizeof(buf), 50, &eof);
    assert_true(eof);
    assert_non_null(strstr(buf, "HTTP/1.1 413 Payload Too Large\r\n"));
    assert_non_null(strstr(buf, "Connection: close\r\n"));
    assert_non_null(strstr(buf, "\"payload_too_large\""));
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_async_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_before_async_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sliced_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit_answers_then_closes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
