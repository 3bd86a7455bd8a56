/*
 * Unit tests for src/base/metrics.c: the private slot before init, sums across processes sharing
 * the pre-fork mapping (children write their own slots, the parent renders), gauges summed and
 * reset per slot, lossless concurrent increments, and the Prometheus text format of the render.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *render(void)
{
    struct tp_buf b;
    tp_buf_init(&b);
    tp_metrics_render(&b);
    char *s = tp_xstrndup(tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
    return s;
}

static void assert_contains(const char *text, const char *want)
{
    if (strstr(text, want) == NULL)
        fail_msg("render does not contain \"%s\"", want);
}

/* Must run first: before tp_metrics_init everything works on a process-local slot. */
static void test_before_init(void **state)
{
    (void)state;
    tp_metrics_attach(5); /* ignored before init */
    tp_metrics_inc(TP_METRIC_HTTP_REQUESTS_TOTAL);
    tp_metrics_add(TP_METRIC_HTTP_REQUESTS_TOTAL, 4);
    tp_metrics_set(TP_METRIC_IS_LEADER, 1);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_REQUESTS_TOTAL), 5);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_IS_LEADER), 1);
    char *s = render();
    assert_contains(s, "\ntickpool_http_requests_total 5\n");
    assert_contains(s, "\ntickpool_is_leader 1\n");
    free(s);
}

static void test_init_rejects_bad_sizes(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(0), TP_EINVAL);
    assert_int_equal(tp_metrics_init(-3), TP_EINVAL);
}

/* The master maps, forks two workers that write their own slots, and any process sums them. */
static void test_sum_across_processes(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(3), 0);
    /* A fresh mapping starts at zero (the private slot's values are gone). */
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_REQUESTS_TOTAL), 0);

    for (int w = 1; w <= 2; w++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            tp_metrics_attach(w);
            for (int i = 0; i < 100000; i++)
                tp_metrics_inc(TP_METRIC_HTTP_REQUESTS_TOTAL);
            tp_metrics_add(TP_METRIC_HTTP_BYTES_OUT_TOTAL, 1000 * w);
            tp_metrics_set(TP_METRIC_HTTP_CONNECTIONS_OPEN, 10 * w);
            tp_metrics_add(TP_METRIC_WS_CONNECTIONS_OPEN, 5);
            tp_metrics_add(TP_METRIC_WS_CONNECTIONS_OPEN, -2);
            _exit(0);
        }
    }
    /* The master writes slot 0 meanwhile. */
    tp_metrics_attach(0);
    tp_metrics_add(TP_METRIC_HTTP_REQUESTS_TOTAL, 7);
    tp_metrics_set(TP_METRIC_HTTP_CONNECTIONS_OPEN, 1);
    tp_metrics_inc(TP_METRIC_WORKER_RESTARTS_TOTAL);
    for (int i = 0; i < 2; i++) {
        int st;
        assert_true(wait(&st) > 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }

    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_REQUESTS_TOTAL), 200007);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_BYTES_OUT_TOTAL), 3000);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_CONNECTIONS_OPEN), 31);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_WS_CONNECTIONS_OPEN), 6);

    char *s = render();
    assert_contains(s, "# HELP tickpool_http_requests_total HTTP requests received\n"
                       "# TYPE tickpool_http_requests_total counter\n"
                       "tickpool_http_requests_total 200007\n");
    assert_contains(s, "# TYPE tickpool_http_connections_open gauge\n"
                       "tickpool_http_connections_open 31\n");
    assert_contains(s, "\ntickpool_http_bytes_out_total 3000\n");
    assert_contains(s, "\ntickpool_worker_restarts_total 1\n");
    assert_contains(s, "\ntickpool_bets_accepted_total 0\n");
    free(s);

    /* A child renders the same sums: the mapping is shared, not copied. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tp_metrics_attach(2);
        char *t = render();
        _exit(strstr(t, "\ntickpool_http_requests_total 200007\n") != NULL ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* Worker 2 died: its gauges are cleared, its counters stay (counters never go down). */
    tp_metrics_reset_gauges(2);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_CONNECTIONS_OPEN), 11);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_WS_CONNECTIONS_OPEN), 3);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_REQUESTS_TOTAL), 200007);
    tp_metrics_reset_gauges(99); /* out of range: ignored */
}

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200000; i++)
        tp_metrics_inc(TP_METRIC_REDIS_COMMANDS_TOTAL);
    return NULL;
}

/* Threads of one process (e.g. the pg writer) share its slot without losing increments. */
static void test_threads_share_slot(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(2), 0);
    tp_metrics_attach(1);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, bump, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_REDIS_COMMANDS_TOTAL), 800000);
}

/* Every line is HELP, TYPE or a sample; every metric appears exactly once, in list order. */
static void test_render_format(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(1), 0);
    tp_metrics_set(TP_METRIC_OUTBOX_LAG_SECONDS, -1); /* gauges may be negative */
    char *s = render();
    assert_true(strlen(s) > 0 && s[strlen(s) - 1] == '\n');
    int samples = 0, helps = 0, types = 0;
    char name[128] = "";
    for (char *line = strtok(s, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char n[128], kind[16];
        long long v;
        int used = 0;
        if (strncmp(line, "# HELP tickpool_", 16) == 0) {
            helps++;
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
        } else if (sscanf(line, "# TYPE %127s %15s%n", n, kind, &used) == 2) {
            types++;
            assert_string_equal(n, name);
            assert_true(strcmp(kind, "counter") == 0 || strcmp(kind, "gauge") == 0);
            assert_int_equal(line[used], '\0');
            /* counters end in _total (Prometheus naming), gauges do not */
            bool total = strlen(n) > 6 && strcmp(n + strlen(n) - 6, "_total") == 0;
            assert_int_equal(total, strcmp(kind, "counter") == 0);
        } else {
            assert_int_equal(sscanf(line, "%127s %lld%n", n, &v, &used), 2);
            assert_int_equal(line[used], '\0');
            assert_string_equal(n, name);
            samples++;
        }
    }
    assert_int_equal(samples, TP_METRIC_COUNT_);
    assert_int_equal(helps, TP_METRIC_COUNT_);
    assert_int_equal(types, TP_METRIC_COUNT_);
    free(s);
    s = render();
    assert_contains(s, "\ntickpool_outbox_lag_seconds -1\n");
    assert_contains(s, "# TYPE tickpool_is_leader gauge\n");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_before_init),          cmocka_unit_test(test_init_rejects_bad_sizes),
        cmocka_unit_test(test_sum_across_processes), cmocka_unit_test(test_threads_share_slot),
        cmocka_unit_test(test_render_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
