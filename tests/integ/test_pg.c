/*
 * Integration test of src/store/pg.c against a real Postgres (the shared test cluster or a private
 * one): statements, parameters, results, error mapping, statement_timeout, transactions, a
 * killed backend and reconnect, statements prepared once per connection, the health probe thread,
 * and the reader (src/store/pgr.c) that serves an event loop: completions on the loop exactly once,
 * a statement timeout, an unreachable Postgres answered fast, a full queue refused without a
 * callback, and a loop that keeps turning while a query sleeps in Postgres.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "integ_env.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgr.h"

static struct integ_pg pgenv;

static struct tp_pg *open_pg(int timeout_ms)
{
    char err[256] = "";
    struct tp_pg *pg = tp_pg_connect(pgenv.url, timeout_ms, err, sizeof(err));
    if (pg == NULL)
        fprintf(stderr, "connect: %s\n", err);
    assert_non_null(pg);
    assert_true(tp_pg_ok(pg));
    return pg;
}

static void test_connect_errors(void **state)
{
    (void)state;
    char err[256] = "";
    char url[128];
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%d/x", integ_free_port());
    assert_null(tp_pg_connect(url, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot connect"));
    assert_null(strchr(err, '\n'));
    assert_null(tp_pg_connect(NULL, 0, err, sizeof(err)));
    assert_null(tp_pg_connect(pgenv.url, -1, NULL, 0));
    tp_pg_close(NULL);
}

static void test_statements_and_results(void **state)
{
    (void)state;
    struct tp_pg *pg = open_pg(5000);
    char err[256];
    assert_int_equal(tp_pg_exec(pg,
                                "CREATE TABLE t (id bigint PRIMARY KEY, name text, n bigint);"
                                "INSERT INTO t VALUES (1, 'one', 10), (2, NULL, -9000000000);",
                                err, sizeof(err)),
                     0);
    assert_string_equal(tp_pg_sqlstate(pg), "");

    const char *params[] = {"3", NULL, "42"};
    struct tp_pg_result *res = NULL;
    assert_int_equal(tp_pg_exec_params(pg, "INSERT INTO t VALUES ($1, $2, $3)", 3, params, &res,
                                       err, sizeof(err)),
                     0);
    assert_int_equal(tp_pg_result_affected(res), 1);
    assert_int_equal(tp_pg_result_rows(res), 0);
    tp_pg_result_free(res);

    const char *p2[] = {"0"};
    assert_int_equal(tp_pg_exec_params(pg, "SELECT id, name, n FROM t WHERE id > $1 ORDER BY id", 1,
                                       p2, &res, err, sizeof(err)),
                     0);
    assert_int_equal(tp_pg_result_rows(res), 3);
    assert_int_equal(tp_pg_result_cols(res), 3);
    assert_string_equal(tp_pg_result_get(res, 0, 1), "one");
    assert_null(tp_pg_result_get(res, 1, 1));
    assert_true(tp_pg_result_is_null(res, 1, 1));
    assert_false(tp_pg_result_is_null(res, 0, 1));
    int64_t v = 0;
    assert_int_equal(tp_pg_result_int64(res, 1, 2, &v), 0);
    assert_true(v == -9000000000LL);
    assert_int_equal(tp_pg_result_int64(res, 0, 1, &v), TP_EINVAL); /* "one" */
    assert_int_equal(tp_pg_result_int64(res, 1, 1, &v), TP_EINVAL); /* NULL */
    /* Out of range is harmless. */
    assert_null(tp_pg_result_get(res, 3, 0));
    assert_null(tp_pg_result_get(res, 0, 3));
    assert_null(tp_pg_result_get(res, -1, 0));
    assert_true(tp_pg_result_is_null(res, 9, 9));
    tp_pg_result_free(res);
    tp_pg_result_free(NULL);
    assert_int_equal(tp_pg_result_rows(NULL), 0);

    /* Parameters are values, never SQL. */
    const char *hostile[] = {"1; DROP TABLE t; --"};
    assert_int_equal(tp_pg_exec_params(pg, "SELECT count(*) FROM t WHERE name = $1", 1, hostile,
                                       &res, err, sizeof(err)),
                     0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "0");
    tp_pg_result_free(res);
    assert_int_equal(tp_pg_query(pg, "SELECT count(*) FROM t", &res, err, sizeof(err)), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "3");
    tp_pg_result_free(res);

    /* Error mapping. */
    const char *dup[] = {"1", "again", "0"};
    assert_int_equal(
        tp_pg_exec_params(pg, "INSERT INTO t VALUES ($1, $2, $3)", 3, dup, &res, err, sizeof(err)),
        TP_ECONFLICT);
    assert_null(res);
    assert_string_equal(tp_pg_sqlstate(pg), "23505");
    assert_non_null(strstr(err, "23505"));
    assert_int_equal(tp_pg_exec(pg, "SELEC 1", err, sizeof(err)), TP_EIO);
    assert_string_equal(tp_pg_sqlstate(pg), "42601");
    const char *notint[] = {"1.5"};
    assert_int_equal(tp_pg_exec_params(pg, "SELECT $1::bigint", 1, notint, NULL, err, sizeof(err)),
                     TP_EIO);
    assert_int_equal(tp_pg_exec_params(pg, "SELECT 1", 1, NULL, NULL, err, sizeof(err)), TP_EINVAL);
    assert_int_equal(tp_pg_exec(pg, "SELECT 1", NULL, 0), 0); /* err is optional */
    tp_pg_close(pg);
}

static void test_transactions(void **state)
{
    (void)state;
    struct tp_pg *pg = open_pg(5000);
    char err[256];
    struct tp_pg_result *res = NULL;
    assert_int_equal(tp_pg_exec(pg, "CREATE TABLE tx (x int)", err, sizeof(err)), 0);
    assert_int_equal(tp_pg_begin(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec(pg, "INSERT INTO tx VALUES (1)", err, sizeof(err)), 0);
    assert_int_equal(tp_pg_rollback(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_begin(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec(pg, "INSERT INTO tx VALUES (2)", err, sizeof(err)), 0);
    assert_int_equal(tp_pg_commit(pg, err, sizeof(err)), 0);
    /* A failed statement aborts the transaction; COMMIT then rolls back. */
    assert_int_equal(tp_pg_begin(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec(pg, "INSERT INTO tx VALUES (3)", err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec(pg, "SELECT 1/0", err, sizeof(err)), TP_EIO);
    assert_int_equal(tp_pg_rollback(pg, err, sizeof(err)), 0);
    assert_int_equal(
        tp_pg_query(pg, "SELECT string_agg(x::text, ',') FROM tx", &res, err, sizeof(err)), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "2");
    tp_pg_result_free(res);
    tp_pg_close(pg);
}

static void test_statement_timeout(void **state)
{
    (void)state;
    struct tp_pg *pg = open_pg(200);
    char err[256];
    double t0 = integ_now();
    assert_int_equal(tp_pg_exec(pg, "SELECT pg_sleep(2)", err, sizeof(err)), TP_ETIMEDOUT);
    assert_true(integ_now() - t0 < 1.5);
    assert_string_equal(tp_pg_sqlstate(pg), "57014");
    assert_true(tp_pg_ok(pg));
    assert_int_equal(tp_pg_exec(pg, "SELECT 1", err, sizeof(err)), 0);
    tp_pg_close(pg);
}

/* Terminates `victim`'s backend from `killer`'s connection. */
static void kill_backend(struct tp_pg *victim, struct tp_pg *killer)
{
    char err[256];
    struct tp_pg_result *res = NULL;
    assert_int_equal(tp_pg_query(victim, "SELECT pg_backend_pid()", &res, err, sizeof(err)), 0);
    const char *pid[] = {tp_pg_result_get(res, 0, 0)};
    assert_int_equal(tp_pg_exec_params(killer, "SELECT pg_terminate_backend($1::int)", 1, pid, NULL,
                                       err, sizeof(err)),
                     0);
    tp_pg_result_free(res);
    usleep(100000);
}

static void test_killed_backend_and_reset(void **state)
{
    (void)state;
    struct tp_pg *victim = open_pg(5000), *killer = open_pg(5000);
    char err[256];
    struct tp_pg_result *res = NULL;
    kill_backend(victim, killer);
    assert_int_equal(tp_pg_exec(victim, "SELECT 1", err, sizeof(err)), TP_EUNAVAIL);
    assert_false(tp_pg_ok(victim));
    assert_int_equal(tp_pg_reset(victim, err, sizeof(err)), 0);
    assert_true(tp_pg_ok(victim));
    /* statement_timeout is re-applied on reset. */
    assert_int_equal(tp_pg_query(victim, "SHOW statement_timeout", &res, err, sizeof(err)), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "5s");
    tp_pg_result_free(res);
    tp_pg_close(victim);
    tp_pg_close(killer);
}

/* The value of `sql` (one row, one column) on `pg`, as an integer. */
static int64_t count_of(struct tp_pg *pg, const char *sql)
{
    char err[256];
    struct tp_pg_result *res = NULL;
    int64_t v = -1;
    assert_int_equal(tp_pg_query(pg, sql, &res, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_result_int64(res, 0, 0, &v), 0);
    tp_pg_result_free(res);
    return v;
}

static const char prep_insert[] =
    "INSERT INTO tp SELECT x FROM json_to_recordset($1::json) AS r(x int) ON CONFLICT DO NOTHING";
static const char prep_missing[] = "SELECT count(*) FROM tp_later WHERE x = $1::int";

static void test_prepared(void **state)
{
    (void)state;
    struct tp_pg *pg = open_pg(5000), *killer = open_pg(5000);
    char err[256];
    struct tp_pg_result *res = NULL;
    assert_int_equal(tp_pg_exec(pg, "CREATE TABLE tp (x int PRIMARY KEY)", err, sizeof(err)), 0);
    /* Prepared once, run by name: the same text ten times is one prepared statement, and
     * Postgres settles on the generic plan after its five custom ones (plan_cache_mode auto:
     * json_to_recordset's estimate does not depend on the value, so no custom plan is cheaper;
     * bench/README.md "Writer"). */
    for (int i = 0; i < 10; i++) {
        char json[64];
        snprintf(json, sizeof(json), "[{\"x\": %d}, {\"x\": %d}]", i, i + 1);
        const char *p[] = {json};
        assert_int_equal(tp_pg_exec_prepared(pg, prep_insert, 1, p, &res, err, sizeof(err)), 0);
        assert_int_equal(tp_pg_result_affected(res), i == 0 ? 2 : 1);
        tp_pg_result_free(res);
    }
    assert_int_equal(count_of(pg, "SELECT count(*) FROM pg_prepared_statements"), 1);
    assert_int_equal(count_of(pg, "SELECT generic_plans FROM pg_prepared_statements"), 5);
    assert_int_equal(count_of(pg, "SELECT count(*) FROM tp"), 11);
    /* Parameters stay values. */
    const char *hostile[] = {"[{\"x\": \"1); DROP TABLE tp; --\"}]"};
    assert_int_equal(tp_pg_exec_prepared(pg, prep_insert, 1, hostile, NULL, err, sizeof(err)),
                     TP_EIO);
    assert_string_equal(tp_pg_sqlstate(pg), "22P02");
    /* A text Postgres refuses to prepare is not remembered: once its table exists it runs. */
    const char *one[] = {"1"};
    assert_int_equal(tp_pg_exec_prepared(pg, prep_missing, 1, one, NULL, err, sizeof(err)), TP_EIO);
    assert_string_equal(tp_pg_sqlstate(pg), "42P01");
    assert_int_equal(tp_pg_exec(pg, "CREATE TABLE tp_later (x int)", err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec_prepared(pg, prep_missing, 1, one, &res, err, sizeof(err)), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "0");
    tp_pg_result_free(res);
    /* Prepared inside a transaction that rolls back: still prepared afterwards. */
    static const char prep_in_tx[] = "SELECT $1::int + 1";
    assert_int_equal(tp_pg_begin(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec_prepared(pg, prep_in_tx, 1, one, NULL, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_rollback(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec_prepared(pg, prep_in_tx, 1, one, &res, err, sizeof(err)), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "2");
    tp_pg_result_free(res);
    /* More texts than TP_PG_MAX_PREPARED: the rest run unprepared, all correctly. */
    static char many[TP_PG_MAX_PREPARED + 4][40];
    for (int i = 0; i < (int)TP_ARRAY_LEN(many); i++) {
        snprintf(many[i], sizeof(many[i]), "SELECT %d + $1::int", i);
        assert_int_equal(tp_pg_exec_prepared(pg, many[i], 1, one, &res, err, sizeof(err)), 0);
        int64_t v = 0;
        assert_int_equal(tp_pg_result_int64(res, 0, 0, &v), 0);
        assert_true(v == i + 1);
        tp_pg_result_free(res);
    }
    assert_int_equal(count_of(pg, "SELECT count(*) FROM pg_prepared_statements"),
                     TP_PG_MAX_PREPARED);
    /* A new connection has none: after the backend is killed and the connection reset, the
     * first call prepares again. */
    kill_backend(pg, killer);
    const char *next[] = {"[{\"x\": 100}]"};
    assert_int_equal(tp_pg_exec_prepared(pg, prep_insert, 1, next, NULL, err, sizeof(err)),
                     TP_EUNAVAIL);
    assert_int_equal(tp_pg_reset(pg, err, sizeof(err)), 0);
    assert_int_equal(tp_pg_exec_prepared(pg, prep_insert, 1, next, NULL, err, sizeof(err)), 0);
    assert_int_equal(count_of(pg, "SELECT count(*) FROM pg_prepared_statements"), 1);
    assert_int_equal(count_of(pg, "SELECT count(*) FROM tp"), 12);
    assert_int_equal(tp_pg_exec_prepared(pg, NULL, 0, NULL, NULL, err, sizeof(err)), TP_EINVAL);
    tp_pg_close(pg);
    tp_pg_close(killer);
}

static void test_health_probe(void **state)
{
    (void)state;
    struct tp_config_postgres cfg = {.timeout_ms = 5000};
    assert_false(tp_pg_health_ok(NULL)); /* no probe: never healthy */
    snprintf(cfg.url, sizeof(cfg.url), "%s", pgenv.url);
    struct tp_pg_health *h = tp_pg_health_start(&cfg);
    assert_non_null(h);
    double end = integ_now() + 5;
    while (!tp_pg_health_ok(h) && integ_now() < end)
        usleep(20000);
    assert_true(tp_pg_health_ok(h));
    tp_pg_health_stop(h);

    /* An unreachable database never reports healthy. */
    snprintf(cfg.url, sizeof(cfg.url), "postgresql://postgres@127.0.0.1:%d/x", integ_free_port());
    h = tp_pg_health_start(&cfg);
    assert_non_null(h);
    usleep(1200000);
    assert_false(tp_pg_health_ok(h));
    tp_pg_health_stop(h);
    tp_pg_health_stop(NULL); /* harmless */
}

/* --- The reader --- */

struct answer {
    int calls, err;
    char value[64];
    bool done;
};

static void on_answer(int err, const struct tp_pg_result *res, void *ud)
{
    struct answer *a = ud;
    a->calls++;
    a->err = err;
    const char *v = err == 0 ? tp_pg_result_get(res, 0, 0) : NULL;
    snprintf(a->value, sizeof(a->value), "%s", v ? v : "");
    a->done = true;
}

static int ticks;

static void count_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    ticks++;
}

static void test_reader(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct tp_pgr *r = tp_pgr_new(loop, pgenv.url, 300, 2);
    struct answer a = {0}, slow = {0};
    const char *p[] = {"21"};
    assert_int_equal(tp_pgr_query(r, "SELECT $1::int * 2", 1, p, on_answer, &a), 0);
    assert_int_equal(a.calls, 0); /* never inline */
    assert_true(integ_run_until(loop, &a.done, 5));
    assert_int_equal(a.err, 0);
    assert_string_equal(a.value, "42");
    /* A query past the statement timeout: TP_ETIMEDOUT, and the loop turned meanwhile. */
    ev_timer tick;
    ev_timer_init(&tick, count_tick, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    ticks = 0;
    assert_int_equal(tp_pgr_query(r, "SELECT pg_sleep(2)", 0, NULL, on_answer, &slow), 0);
    assert_true(integ_run_until(loop, &slow.done, 5));
    ev_timer_stop(loop, &tick);
    assert_int_equal(slow.err, TP_ETIMEDOUT);
    assert_true(ticks >= 10);
    /* Bad SQL: an error, once. */
    struct answer bad = {0};
    assert_int_equal(tp_pgr_query(r, "SELECT nope FROM nowhere", 0, NULL, on_answer, &bad), 0);
    assert_true(integ_run_until(loop, &bad.done, 5));
    assert_int_equal(bad.err, TP_EIO);
    assert_int_equal(bad.calls, 1);
    /* Hostile arguments are refused without a callback. */
    assert_int_equal(tp_pgr_query(r, NULL, 0, NULL, on_answer, &bad), TP_EINVAL);
    assert_int_equal(tp_pgr_query(r, "SELECT 1", TP_PGR_MAX_PARAMS + 1, p, on_answer, &bad),
                     TP_EINVAL);
    /* A full queue: TP_EAGAIN and no callback; the queued ones complete once each. */
    struct answer q[4] = {{0}};
    int queued = 0, refused = 0;
    for (int i = 0; i < 4; i++) {
        int rc = tp_pgr_query(r, "SELECT pg_sleep(0.1)", 0, NULL, on_answer, &q[i]);
        queued += rc == 0;
        refused += rc == TP_EAGAIN;
    }
    assert_true(refused >= 1 && queued + refused == 4);
    integ_run_for(loop, 1.5);
    for (int i = 0; i < 4; i++)
        assert_true(q[i].calls <= 1);
    tp_pgr_free(r);

    /* An unreachable Postgres: TP_EUNAVAIL, and the next query is refused at once. */
    char url[128];
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%d/x", integ_free_port());
    r = tp_pgr_new(loop, url, 300, 8);
    struct answer d1 = {0}, d2 = {0};
    assert_int_equal(tp_pgr_query(r, "SELECT 1", 0, NULL, on_answer, &d1), 0);
    assert_true(integ_run_until(loop, &d1.done, 5));
    assert_int_equal(d1.err, TP_EUNAVAIL);
    double t0 = integ_now();
    assert_int_equal(tp_pgr_query(r, "SELECT 1", 0, NULL, on_answer, &d2), 0);
    assert_true(integ_run_until(loop, &d2.done, 5));
    assert_int_equal(d2.err, TP_EUNAVAIL);
    assert_true(integ_now() - t0 < 0.2);
    /* Freed with a query waiting: it completes with TP_ECLOSED, once. */
    struct answer late = {0};
    assert_int_equal(tp_pgr_query(r, "SELECT 1", 0, NULL, on_answer, &late), 0);
    tp_pgr_free(r);
    assert_true(late.calls == 1 && (late.err == TP_ECLOSED || late.err == TP_EUNAVAIL));
    tp_pgr_free(NULL);
    ev_loop_destroy(loop);
}

static int group_setup(void **state)
{
    (void)state;
    integ_pg_start(&pgenv);
    return 0;
}

static const char pipe_begin[] = "BEGIN", pipe_commit[] = "COMMIT";
static const char pipe_insert[] =
    "INSERT INTO tq SELECT x FROM json_to_recordset($1::json) AS r(x int) ON CONFLICT DO NOTHING";
static const char pipe_count[] = "SELECT count(*) FROM tq";
static const char pipe_later[] = "SELECT count(*) FROM tq_later";

/* One transaction's statements as one pipeline (the writer's batches, src/store/pgw_write.c). */
static int run_pipeline(struct tp_pg *pg, const char *const *sqls, const char *const *params,
                        size_t n, struct tp_pg_result **last, size_t *failed)
{
    char err[256] = "";
    struct tp_pg_call calls[TP_PG_PIPELINE_MAX];
    for (size_t i = 0; i < n; i++)
        calls[i] = (struct tp_pg_call){.sql = sqls[i],
                                       .nparams = params[i] != NULL ? 1 : 0,
                                       .params = params[i] != NULL ? &params[i] : NULL,
                                       .out = i == n - 1 ? last : NULL};
    return tp_pg_exec_pipeline(pg, calls, n, failed, err, sizeof(err));
}

static const char pipe_binary[] = "SELECT array_to_string($1::bigint[], ',', 'null'), $2::text";

/* Binary parameters (the writer's bets arrays, src/store/pgw_batch.c): their bytes go as they
 * are, NUL included, and a malformed one is Postgres's data error (22P03), not a lost
 * connection; more than TP_PG_BINARY_PARAMS_MAX of them are refused before anything is sent. */
static void test_pipeline_binary_params(void **state)
{
    (void)state;
    struct tp_pg *pg = open_pg(5000);
    char err[256] = "";
    /* int8[] {7, NULL, -2}: ndim 1, has-null 1, element int8 (20), length 3, lower bound 1. */
    static const char array[] = {0,  0,  0,  1,  0, 0, 0, 1, 0,  0,  0,  20, 0,  0,  0,  3,
                                 0,  0,  0,  1,  0, 0, 0, 8, 0,  0,  0,  0,  0,  0,  0,  7,
                                 -1, -1, -1, -1, 0, 0, 0, 8, -1, -1, -1, -1, -1, -1, -1, -2};
    static const char text[] = {'a', 0, 'b'}; /* a text's NUL: Postgres refuses it (22021) */
    const char *params[] = {array, "plain"};
    int lengths[] = {sizeof(array), 5};
    struct tp_pg_result *res = NULL;
    size_t failed = 99;
    struct tp_pg_call call = {
        .sql = pipe_binary, .nparams = 2, .params = params, .lengths = lengths, .out = &res};
    assert_int_equal(tp_pg_exec_pipeline(pg, &call, 1, &failed, err, sizeof(err)), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "7,null,-2");
    assert_string_equal(tp_pg_result_get(res, 0, 1), "plain");
    tp_pg_result_free(res);
    /* One byte short: the array's last element runs past its end. */
    lengths[0] = sizeof(array) - 1;
    assert_int_equal(tp_pg_exec_pipeline(pg, &call, 1, &failed, err, sizeof(err)), TP_EIO);
    assert_string_equal(tp_pg_sqlstate(pg), "22P03");
    assert_null(res);
    assert_true(tp_pg_ok(pg));
    lengths[0] = sizeof(array);
    params[1] = text;
    lengths[1] = sizeof(text);
    assert_int_equal(tp_pg_exec_pipeline(pg, &call, 1, &failed, err, sizeof(err)), TP_EIO);
    assert_string_equal(tp_pg_sqlstate(pg), "22021");
    assert_true(tp_pg_ok(pg));
    call.nparams = TP_PG_BINARY_PARAMS_MAX + 1;
    assert_int_equal(tp_pg_exec_pipeline(pg, &call, 1, &failed, err, sizeof(err)), TP_EINVAL);
    assert_true(tp_pg_ok(pg));
    tp_pg_close(pg);
}

static void test_pipeline(void **state)
{
    (void)state;
    struct tp_pg *pg = open_pg(5000), *killer = open_pg(5000);
    char err[256];
    struct tp_pg_result *res = NULL;
    size_t failed = 99;
    assert_int_equal(tp_pg_exec(pg, "CREATE TABLE tq (x int PRIMARY KEY)", err, sizeof(err)), 0);
    /* A whole transaction in one pipeline; the last statement's rows come back. */
    const char *sqls[] = {pipe_begin, pipe_insert, pipe_count, pipe_commit};
    const char *ok[] = {NULL, "[{\"x\": 1}, {\"x\": 2}]", NULL, NULL};
    const char *sqls_count[] = {pipe_begin, pipe_insert, pipe_count};
    assert_int_equal(run_pipeline(pg, sqls_count, ok, 3, &res, &failed), 0);
    assert_string_equal(tp_pg_result_get(res, 0, 0), "2");
    tp_pg_result_free(res);
    assert_int_equal(tp_pg_rollback(pg, err, sizeof(err)), 0);
    assert_int_equal(run_pipeline(pg, sqls, ok, 4, NULL, &failed), 0);
    assert_int_equal(count_of(killer, "SELECT count(*) FROM tq"), 2);
    /* The texts are prepared once per connection, whichever call ran them first. */
    assert_int_equal(count_of(pg, "SELECT count(*) FROM pg_prepared_statements"), 4);
    /* A statement that fails stops the rest (the INSERT after it and COMMIT never ran): its
     * code and index come back, and no result is handed out. */
    const char *sqls_bad[] = {pipe_begin,  pipe_insert, pipe_insert,
                              pipe_insert, pipe_count,  pipe_commit};
    const char *bad[] = {NULL,           "[{\"x\": 3}]", "[{\"x\": \"3); DROP TABLE tq; --\"}]",
                         "[{\"x\": 4}]", NULL,           NULL};
    res = (struct tp_pg_result *)1;
    struct tp_pg_call calls[6];
    for (size_t i = 0; i < 6; i++)
        calls[i] = (struct tp_pg_call){.sql = sqls_bad[i],
                                       .nparams = bad[i] != NULL ? 1 : 0,
                                       .params = bad[i] != NULL ? &bad[i] : NULL,
                                       .out = i == 1 ? &res : NULL};
    assert_int_equal(tp_pg_exec_pipeline(pg, calls, 6, &failed, err, sizeof(err)), TP_EIO);
    assert_int_equal(failed, 2);
    assert_null(res);
    assert_string_equal(tp_pg_sqlstate(pg), "22P02");
    assert_non_null(strstr(err, "22P02"));
    assert_true(tp_pg_ok(pg));
    /* The transaction is left open and aborted: nothing of it is visible, ROLLBACK ends it. */
    assert_int_equal(count_of(killer, "SELECT count(*) FROM tq"), 2);
    assert_int_equal(tp_pg_query(pg, "SELECT 1", &res, err, sizeof(err)), TP_EIO);
    assert_string_equal(tp_pg_sqlstate(pg), "25P02");
    assert_int_equal(tp_pg_rollback(pg, err, sizeof(err)), 0);
    const char *next[] = {NULL, "[{\"x\": 5}]", NULL, NULL};
    assert_int_equal(run_pipeline(pg, sqls, next, 4, NULL, &failed), 0);
    assert_int_equal(count_of(killer, "SELECT count(*) FROM tq"), 3);
    /* A text Postgres refuses to prepare stops the pipeline before anything is sent. */
    const char *sqls_later[] = {pipe_begin, pipe_insert, pipe_later, pipe_commit};
    const char *later[] = {NULL, "[{\"x\": 6}]", NULL, NULL};
    assert_int_equal(run_pipeline(pg, sqls_later, later, 4, NULL, &failed), TP_EIO);
    assert_int_equal(failed, 2);
    assert_string_equal(tp_pg_sqlstate(pg), "42P01");
    assert_int_equal(count_of(pg, "SELECT count(*) FROM tq"), 3); /* no transaction was open */
    /* A killed backend: the connection is dropped (tp_pg_ok false); after a reset the texts are
     * prepared again. */
    kill_backend(pg, killer);
    const char *after[] = {NULL, "[{\"x\": 7}]", NULL, NULL};
    assert_int_equal(run_pipeline(pg, sqls, after, 4, NULL, &failed), TP_EUNAVAIL);
    assert_false(tp_pg_ok(pg));
    assert_int_equal(tp_pg_reset(pg, err, sizeof(err)), 0);
    assert_int_equal(run_pipeline(pg, sqls, after, 4, NULL, &failed), 0);
    assert_int_equal(count_of(killer, "SELECT count(*) FROM tq"), 4);
    /* After any failure every result is NULL, whatever the caller's pointers held before, and
     * the rows of the statements that ran are freed (ASan's leak check): a bad argument in the
     * third statement (before anything is sent), a Postgres error in the third, a text it
     * refuses to prepare in the third. */
    int sentinel;
    struct tp_pg_result *outs[4];
    struct tp_pg_call checked[4];
    const char *check_sqls[] = {pipe_begin, pipe_count, pipe_insert, pipe_count};
    const char *not_int = "[{\"x\": \"eight\"}]";
    const int check_rc[] = {TP_EINVAL, TP_EIO, TP_EIO};
    for (int kind = 0; kind < 3; kind++) {
        for (size_t i = 0; i < 4; i++) {
            outs[i] = (struct tp_pg_result *)&sentinel;
            checked[i] = (struct tp_pg_call){.sql = check_sqls[i], .out = &outs[i]};
        }
        if (kind == 2)
            checked[2].sql = pipe_later;
        else
            checked[2] = (struct tp_pg_call){.sql = pipe_insert,
                                             .nparams = 1,
                                             .params = kind == 0 ? NULL : &not_int,
                                             .out = &outs[2]};
        assert_int_equal(tp_pg_exec_pipeline(pg, checked, 4, &failed, err, sizeof(err)),
                         check_rc[kind]);
        assert_int_equal(failed, 2);
        for (size_t i = 0; i < 4; i++)
            assert_null(outs[i]);
        assert_true(tp_pg_ok(pg));
        assert_int_equal(tp_pg_rollback(pg, err, sizeof(err)), 0);
    }
    /* Bad calls. */
    assert_int_equal(tp_pg_exec_pipeline(pg, calls, 0, &failed, err, sizeof(err)), TP_EINVAL);
    assert_int_equal(tp_pg_exec_pipeline(pg, NULL, 1, &failed, err, sizeof(err)), TP_EINVAL);
    assert_int_equal(
        tp_pg_exec_pipeline(pg, calls, TP_PG_PIPELINE_MAX + 1, &failed, err, sizeof(err)),
        TP_EINVAL);
    calls[1].params = NULL;
    assert_int_equal(tp_pg_exec_pipeline(pg, calls, 2, &failed, err, sizeof(err)), TP_EINVAL);
    assert_int_equal(failed, 1);
    tp_pg_close(pg);
    tp_pg_close(killer);
}

static int group_teardown(void **state)
{
    (void)state;
    integ_pg_stop(&pgenv);
    return 0;
}

int main(void)
{
    if (access(INTEG_PG_BIN "/initdb", X_OK) != 0 && getenv("TP_TEST_PG_ADMIN_URL") == NULL) {
        fprintf(stderr, "skip: postgresql not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_statements_and_results),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_killed_backend_and_reset),
        cmocka_unit_test(test_prepared),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_pipeline_binary_params),
        cmocka_unit_test(test_health_probe),
        cmocka_unit_test(test_reader),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
