/*
 * Unit tests for src/base/metrics.c: the private slot before init, sums across processes sharing
 * the pre-fork mapping (children write their own slots, the parent renders), gauges summed and
 * reset per slot, lossless concurrent increments, histogram bucket placement, labelled families
 * summed over two worker slots, and the Prometheus text format of the render.
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

/* Bounds are inclusive (le), the sum is kept in ns, and +Inf holds what is above the last. */
static void test_histogram_buckets(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(1), 0);
    enum tp_metric_family f = TP_METRIC_FAMILY_BEAT_LAG;
    tp_metrics_observe_ns(f, 0, 0);          /* le 0.0001 */
    tp_metrics_observe_ns(f, 0, 100000);     /* exactly 100 us: still le 0.0001 */
    tp_metrics_observe_ns(f, 0, 100001);     /* le 0.00025 */
    tp_metrics_observe_ns(f, 0, -5);         /* a clock step back counts as 0 */
    tp_metrics_observe_ns(f, 0, 30000000);   /* 30 ms: le 0.05 */
    tp_metrics_observe_ns(f, 0, 5000000000); /* exactly 5 s: the last bound */
    tp_metrics_observe_ns(f, 0, 7000000000); /* above every bound: +Inf only */
    tp_metrics_observe_ns(f, 1, 1);          /* no such series: ignored */
    tp_metrics_observe_ns(TP_METRIC_FAMILY_BETS_REJECTED, 0, 1); /* not a histogram: ignored */
    tp_metrics_family_inc(f, 0, 0);                              /* not a counter: ignored */
    assert_int_equal(tp_metrics_family_get(f, 0, 0), 7);
    char *s = render();
    assert_contains(s, "# TYPE tickpool_beat_lag_seconds histogram\n"
                       "tickpool_beat_lag_seconds_bucket{le=\"0.0001\"} 3\n"
                       "tickpool_beat_lag_seconds_bucket{le=\"0.00025\"} 4\n"
                       "tickpool_beat_lag_seconds_bucket{le=\"0.0005\"} 4\n");
    assert_contains(s, "tickpool_beat_lag_seconds_bucket{le=\"0.025\"} 4\n"
                       "tickpool_beat_lag_seconds_bucket{le=\"0.05\"} 5\n");
    assert_contains(s, "tickpool_beat_lag_seconds_bucket{le=\"2.5\"} 5\n"
                       "tickpool_beat_lag_seconds_bucket{le=\"5\"} 6\n"
                       "tickpool_beat_lag_seconds_bucket{le=\"+Inf\"} 7\n"
                       "tickpool_beat_lag_seconds_sum 12.030200001\n"
                       "tickpool_beat_lag_seconds_count 7\n");
    free(s);
}

/* Label lookups by value, in either dimension; unknown values and bad dimensions are -1. */
static void test_label_index(void **state)
{
    (void)state;
    enum tp_metric_family h = TP_METRIC_FAMILY_HTTP_RESPONSES;
    assert_int_equal(tp_metrics_label_index(h, 0, "/api/v1/bets"), TP_METRICS_ROUTE_BETS);
    assert_int_equal(tp_metrics_label_index(h, 0, "/api/v1/rounds/{id}"), TP_METRICS_ROUTE_ROUND);
    assert_int_equal(tp_metrics_label_index(h, 1, "4xx"), TP_METRICS_CLASS_4XX);
    assert_int_equal(tp_metrics_label_index(h, 0, "/nope"), -1);
    assert_int_equal(tp_metrics_label_index(h, 2, "4xx"), -1);
    assert_int_equal(tp_metrics_label_index(TP_METRIC_FAMILY_REDIS_COMMAND, 0, "settle_page"),
                     TP_METRICS_REDIS_KIND_SETTLE_PAGE);
    assert_int_equal(
        tp_metrics_label_index(TP_METRIC_FAMILY_BETS_REJECTED, 0, "idempotency_key_required"),
        TP_METRICS_BET_CODE_KEY_REQUIRED);
    assert_int_equal(tp_metrics_label_index(TP_METRIC_FAMILY_COUNT_, 0, "x"), -1);
}

/* Two workers write their own slices of labelled families; any process renders the sums. */
static void test_families_sum_over_slots(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(3), 0);
    for (int w = 1; w <= 2; w++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            tp_metrics_attach(w);
            for (int i = 0; i < 1000; i++)
                tp_metrics_family_inc(TP_METRIC_FAMILY_HTTP_RESPONSES, TP_METRICS_ROUTE_BETS,
                                      TP_METRICS_CLASS_2XX);
            tp_metrics_family_inc(TP_METRIC_FAMILY_BETS_REJECTED,
                                  TP_METRICS_BET_CODE_INSUFFICIENT_FUNDS, 0);
            /* worker 1: 2 ms over HTTP; worker 2: 2 ms over HTTP and 40 ms over WebSocket */
            tp_metrics_observe_ns(TP_METRIC_FAMILY_BET_LATENCY, TP_METRICS_TRANSPORT_HTTP, 2000000);
            if (w == 2)
                tp_metrics_observe_ns(TP_METRIC_FAMILY_BET_LATENCY, TP_METRICS_TRANSPORT_WS,
                                      40000000);
            tp_metrics_observe_ns(TP_METRIC_FAMILY_REDIS_COMMAND, TP_METRICS_REDIS_KIND_TICK,
                                  300000 * w);
            _exit(0);
        }
    }
    for (int i = 0; i < 2; i++) {
        int st;
        assert_true(wait(&st) > 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(tp_metrics_family_get(TP_METRIC_FAMILY_HTTP_RESPONSES, TP_METRICS_ROUTE_BETS,
                                           TP_METRICS_CLASS_2XX),
                     2000);
    assert_int_equal(
        tp_metrics_family_get(TP_METRIC_FAMILY_BET_LATENCY, TP_METRICS_TRANSPORT_HTTP, 0), 2);
    char *s = render();
    assert_contains(s, "\ntickpool_http_responses_total{route=\"/api/v1/bets\",class=\"2xx\"} "
                       "2000\n");
    assert_contains(s, "\ntickpool_http_responses_total{route=\"/api/v1/bets\",class=\"4xx\"} "
                       "0\n");
    assert_contains(s, "\ntickpool_bets_rejected_total{code=\"insufficient_funds\"} 2\n");
    assert_contains(s, "\ntickpool_bets_rejected_total{code=\"round_not_open\"} 0\n");
    assert_contains(s, "tickpool_bet_latency_seconds_bucket{transport=\"http\",le=\"0.001\"} 0\n"
                       "tickpool_bet_latency_seconds_bucket{transport=\"http\",le=\"0.0025\"} 2\n");
    assert_contains(s, "tickpool_bet_latency_seconds_bucket{transport=\"http\",le=\"+Inf\"} 2\n"
                       "tickpool_bet_latency_seconds_sum{transport=\"http\"} 0.004000000\n"
                       "tickpool_bet_latency_seconds_count{transport=\"http\"} 2\n");
    assert_contains(s, "tickpool_bet_latency_seconds_bucket{transport=\"ws\",le=\"0.025\"} 0\n"
                       "tickpool_bet_latency_seconds_bucket{transport=\"ws\",le=\"0.05\"} 1\n");
    assert_contains(s, "tickpool_bet_latency_seconds_sum{transport=\"ws\"} 0.040000000\n");
    /* 300 us and 600 us: one in le 0.0005, both by le 0.001 */
    assert_contains(s, "tickpool_redis_command_seconds_bucket{kind=\"tick\",le=\"0.0005\"} 1\n"
                       "tickpool_redis_command_seconds_bucket{kind=\"tick\",le=\"0.001\"} 2\n");
    assert_contains(s, "tickpool_redis_command_seconds_sum{kind=\"tick\"} 0.000900000\n");
    assert_contains(s, "tickpool_redis_command_seconds_count{kind=\"bet_batch\"} 0\n");
    free(s);
}

/* The metric family a sample line belongs to: its name without labels and, for a histogram,
 * without the _bucket/_sum/_count suffix. */
static void sample_family(const char *line, const char *kind, char *out, size_t cap)
{
    size_t n = strcspn(line, "{ ");
    snprintf(out, cap, "%.*s", (int)n, line);
    if (strcmp(kind, "histogram") != 0)
        return;
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(sfx[i]);
        if (n > l && strcmp(out + n - l, sfx[i]) == 0) {
            out[n - l] = '\0';
            return;
        }
    }
    fail_msg("histogram sample without a known suffix: %s", line);
}

/* Every line is HELP, TYPE or a sample of the family announced last; every metric appears
 * exactly once, with every series of every family and the build info. */
static void test_render_format(void **state)
{
    (void)state;
    assert_int_equal(tp_metrics_init(1), 0);
    tp_metrics_set(TP_METRIC_OUTBOX_LAG_SECONDS, -1); /* gauges may be negative */
    char *s = render();
    assert_true(strlen(s) > 0 && s[strlen(s) - 1] == '\n');
    int samples = 0, helps = 0, types = 0, hist_series = 0, counter_series = 0;
    char name[128] = "", kind[16] = "";
    for (char *line = strtok(s, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char n[128];
        int used = 0;
        if (strncmp(line, "# HELP tickpool_", 16) == 0) {
            helps++;
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
        } else if (sscanf(line, "# TYPE %127s %15s%n", n, kind, &used) == 2) {
            types++;
            assert_string_equal(n, name);
            assert_int_equal(line[used], '\0');
            assert_true(strcmp(kind, "counter") == 0 || strcmp(kind, "gauge") == 0 ||
                        strcmp(kind, "histogram") == 0);
            /* counters end in _total (Prometheus naming), others do not */
            bool total = strlen(n) > 6 && strcmp(n + strlen(n) - 6, "_total") == 0;
            assert_int_equal(total, strcmp(kind, "counter") == 0);
        } else {
            char fam[128];
            sample_family(line, kind, fam, sizeof(fam));
            assert_string_equal(fam, name);
            const char *sp = strrchr(line, ' ');
            assert_non_null(sp);
            char *end;
            strtod(sp + 1, &end);
            assert_true(end != sp + 1 && *end == '\0');
            if (strchr(line, '{') != NULL)
                assert_non_null(strstr(line, "} "));
            if (strstr(line, "_count") != NULL && strcmp(kind, "histogram") == 0)
                hist_series++;
            else if (strcmp(kind, "counter") == 0 && strchr(line, '{') != NULL)
                counter_series++;
            samples++;
        }
    }
    int plain = TP_METRIC_COUNT_, fams = TP_METRIC_FAMILY_COUNT_;
    int nb = 0;
#define NB_(us, le) nb++;
    TP_METRICS_BUCKETS(NB_)
#undef NB_
    int hist = TP_METRICS_TRANSPORT_COUNT_ + TP_METRICS_REDIS_KIND_COUNT_ + 1 +
               TP_METRICS_ROUND_STAGE_COUNT_;
    int counters = TP_METRICS_BET_CODE_COUNT_ + TP_METRICS_ROUTE_COUNT_ * TP_METRICS_CLASS_COUNT_ +
                   TP_METRICS_IDEM_CHECK_COUNT_;
    assert_int_equal(hist_series, hist);
    assert_int_equal(counter_series, counters);
    assert_int_equal(samples, plain + counters + hist * (nb + 3) + 1);
    assert_int_equal(helps, plain + fams + 1);
    assert_int_equal(types, plain + fams + 1);
    free(s);
    s = render();
    assert_contains(s, "\ntickpool_outbox_lag_seconds -1\n");
    assert_contains(s, "# TYPE tickpool_is_leader gauge\n");
    assert_contains(s, "# TYPE tickpool_build_info gauge\ntickpool_build_info{version=\"" TP_VERSION
                       "\",commit=\"");
    free(s);
}

/* The rendered le strings are the microsecond bounds, ascending. */
static void test_bucket_table(void **state)
{
    (void)state;
    int64_t prev = 0;
#define CHECK_(us, le)                                                                             \
    assert_true((us) > prev);                                                                      \
    assert_int_equal((int64_t)(strtod(le, NULL) * 1e6 + 0.5), (us));                               \
    prev = (us);
    TP_METRICS_BUCKETS(CHECK_)
#undef CHECK_
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_before_init),
        cmocka_unit_test(test_init_rejects_bad_sizes),
        cmocka_unit_test(test_sum_across_processes),
        cmocka_unit_test(test_threads_share_slot),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_label_index),
        cmocka_unit_test(test_families_sum_over_slots),
        cmocka_unit_test(test_render_format),
        cmocka_unit_test(test_bucket_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
