/*
 * Integration test of src/store/store.c against a private redis-server: round trips, reply types,
 * scripts (EVALSHA, NOSCRIPT recovery after SCRIPT FLUSH), per-command timeouts with late
 * replies, disconnects (exactly-once failure, fail-fast), reconnects, AUTH, unix sockets, pub/sub
 * resync and freeing the store from inside its own callback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "integ_env.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/metrics.h"
#include "tickpool/store/store.h"

static struct integ_redis redis;
static char scripts_dir[300];

/* --- Helpers --- */

struct rec {
    int calls;
    int err;
    int type;
    char str[256];
    size_t slen;
    long long integer;
    size_t len;
    char elem[4][64]; /* string elements of an array reply */
    bool done;
};

static void rec_cb(int err, const struct tp_store_reply *r, void *ud)
{
    struct rec *x = ud;
    x->calls++;
    x->err = err;
    x->done = true;
    if (r == NULL)
        return;
    x->type = tp_reply_type(r);
    size_t n = 0;
    const char *s = tp_reply_str(r, &n);
    if (s != NULL) {
        x->slen = n;
        memcpy(x->str, s, TP_MIN(n, sizeof(x->str) - 1));
        x->str[TP_MIN(n, sizeof(x->str) - 1)] = '\0';
    }
    x->integer = tp_reply_integer(r);
    x->len = tp_reply_len(r);
    for (size_t i = 0; i < x->len && i < 4; i++) {
        const char *e = tp_reply_str(tp_reply_at(r, i), NULL);
        snprintf(x->elem[i], sizeof(x->elem[i]), "%s", e ? e : "(nil)");
    }
}

static bool wait_connected(struct ev_loop *loop, struct tp_store *s, double max_s)
{
    double end = integ_now() + max_s;
    while (!tp_store_is_connected(s) && integ_now() < end)
        integ_run_for(loop, 0.01);
    return tp_store_is_connected(s);
}

static struct tp_store *open_store(struct ev_loop *loop, const char *url, int timeout_ms)
{
    struct tp_config_redis cfg = {.timeout_ms = timeout_ms};
    snprintf(cfg.url, sizeof(cfg.url), "%s", url);
    struct tp_store *s = tp_store_new(loop, &cfg, scripts_dir);
    assert_non_null(s);
    assert_true(wait_connected(loop, s, 5));
    return s;
}

/* Runs one command synchronously (for set-up steps); returns the record. */
static struct rec run_cmd(struct ev_loop *loop, struct tp_store *s, const char *fmt, const char *a)
{
    struct rec r = {0};
    assert_int_equal(tp_store_command(s, rec_cb, &r, fmt, a), 0);
    assert_true(integ_run_until(loop, &r.done, 5));
    assert_int_equal(r.calls, 1);
    return r;
}

static void write_file(const char *dir, const char *name, const char *body)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
}

/* --- Tests --- */

/* URL syntax is tested in tests/unit/base/test_url.c; here only that a bad one or a missing
 * scripts directory makes tp_store_new fail. */
static void test_bad_config(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_config_redis cfg = {.url = "nonsense", .timeout_ms = 100};
    assert_null(tp_store_new(loop, &cfg, NULL));
    snprintf(cfg.url, sizeof(cfg.url), "%s", redis.url);
    assert_null(tp_store_new(loop, &cfg, "/nonexistent/dir"));
    ev_loop_destroy(loop);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 2000);

    struct rec r = run_cmd(loop, s, "SET k %s", "hello");
    assert_int_equal(r.err, 0);
    assert_int_equal(r.type, TP_REPLY_STATUS);
    assert_string_equal(r.str, "OK");
    r = run_cmd(loop, s, "GET %s", "k");
    assert_int_equal(r.type, TP_REPLY_STRING);
    assert_string_equal(r.str, "hello");
    r = run_cmd(loop, s, "GET %s", "missing");
    assert_int_equal(r.type, TP_REPLY_NIL);
    r = run_cmd(loop, s, "INCRBY counter %s", "41");
    assert_int_equal(r.type, TP_REPLY_INTEGER);
    assert_int_equal(r.integer, 41);

    /* Redis errors are replies (err 0), so callers can read script error strings. */
    r = run_cmd(loop, s, "LPUSH %s x", "k");
    assert_int_equal(r.err, 0);
    assert_int_equal(r.type, TP_REPLY_ERROR);
    assert_true(strncmp(r.str, "WRONGTYPE", 9) == 0);

    /* Binary-safe argv, including NUL bytes. */
    const char *argv[] = {"SET", "bin", "a\0b"};
    const size_t lens[] = {3, 3, 3};
    struct rec w = {0};
    assert_int_equal(tp_store_commandargv(s, rec_cb, &w, 3, argv, lens), 0);
    assert_true(integ_run_until(loop, &w.done, 5));
    r = run_cmd(loop, s, "GET %s", "bin");
    assert_int_equal(r.slen, 3);
    assert_memory_equal(r.str, "a\0b", 3);

    const char *push[] = {"RPUSH", "list", "x", "y"};
    struct rec p = {0};
    assert_int_equal(tp_store_commandargv(s, rec_cb, &p, 4, push, NULL), 0);
    assert_true(integ_run_until(loop, &p.done, 5));
    assert_int_equal(p.integer, 2);
    r = run_cmd(loop, s, "LRANGE %s 0 -1", "list");
    assert_int_equal(r.type, TP_REPLY_ARRAY);
    assert_int_equal(r.len, 2);
    assert_string_equal(r.elem[0], "x");
    assert_string_equal(r.elem[1], "y");

    /* A listed command: the same reply as its format. */
    struct rec l = {0};
    assert_int_equal(tp_store_commandl(s, rec_cb, &l, "LRANGE", "list", "0", "-1", NULL), 0);
    assert_true(integ_run_until(loop, &l.done, 5));
    assert_int_equal(l.type, TP_REPLY_ARRAY);
    assert_int_equal(l.len, 2);
    assert_string_equal(l.elem[1], "y");
    /* None, or more than TP_STORE_COMMANDL_MAX: refused, never called back. */
    assert_int_equal(tp_store_commandl(s, rec_cb, &l, NULL), TP_EINVAL);
    assert_int_equal(tp_store_commandl(s, rec_cb, &l, "RPUSH", "list", "1", "2", "3", "4", "5", "6",
                                       "7", "8", "9", "10", "11", "12", "13", "14", "15", NULL),
                     TP_EINVAL);
    assert_int_equal(l.calls, 1);

    /* Accessors on the wrong type are harmless. */
    r = run_cmd(loop, s, "GET %s", "k");
    assert_int_equal(r.len, 0);

    /* Many pipelined commands: each callback exactly once, in order. */
    struct rec many[200];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 200; i++)
        assert_int_equal(tp_store_command(s, rec_cb, &many[i], "INCR %s", "seq"), 0);
    assert_true(integ_run_until(loop, &many[199].done, 5));
    for (int i = 0; i < 200; i++) {
        assert_int_equal(many[i].calls, 1);
        assert_int_equal(many[i].integer, i + 1);
    }

    /* Bad arguments never call back. */
    assert_int_equal(tp_store_command(s, NULL, NULL, "PING"), TP_EINVAL);
    assert_int_equal(tp_store_commandargv(s, rec_cb, &r, 0, argv, NULL), TP_EINVAL);

    struct tp_store_stats st;
    tp_store_get_stats(s, &st);
    assert_true(st.commands >= 211);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.reconnects, 0);

    run_cmd(loop, s, "FLUSHALL", NULL);
    tp_store_free(s);
    tp_store_free(NULL);
    ev_loop_destroy(loop);
}

static void test_scripts(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 2000);

    const char *sha = tp_store_script_sha(s, "echo");
    assert_non_null(sha);
    assert_int_equal(strlen(sha), 40);
    assert_null(tp_store_script_sha(s, "nope"));
    struct rec r = run_cmd(loop, s, "SCRIPT EXISTS %s", sha);
    assert_int_equal(r.len, 1);

    const char *argv[] = {"key1", "arg1", "arg2"};
    struct rec e = {0};
    assert_int_equal(tp_store_script(s, "echo", 1, 3, argv, NULL, rec_cb, &e), 0);
    assert_true(integ_run_until(loop, &e.done, 5));
    assert_int_equal(e.err, 0);
    assert_int_equal(e.type, TP_REPLY_ARRAY);
    assert_int_equal(e.len, 3);
    assert_string_equal(e.elem[0], "key1");
    assert_string_equal(e.elem[1], "arg1");
    assert_string_equal(e.elem[2], "arg2");

    /* Script error strings reach the caller. */
    struct rec f = {0};
    assert_int_equal(tp_store_script(s, "fail", 0, 0, NULL, NULL, rec_cb, &f), 0);
    assert_true(integ_run_until(loop, &f.done, 5));
    assert_int_equal(f.err, 0);
    assert_int_equal(f.type, TP_REPLY_ERROR);
    assert_non_null(strstr(f.str, "insufficient_funds"));

    assert_int_equal(tp_store_script(s, "nope", 0, 0, NULL, NULL, rec_cb, &f), TP_ENOTFOUND);
    assert_int_equal(tp_store_script(s, "echo", 2, 1, argv, NULL, rec_cb, &f), TP_EINVAL);

    /* SCRIPT FLUSH: the next EVALSHA gets NOSCRIPT, reloads and retries transparently. The
     * caller's argv is gone by then (the store kept a copy). */
    run_cmd(loop, s, "SCRIPT FLUSH", NULL);
    char k[8] = "keyA", a1[8] = "argB";
    const char *argv2[] = {k, a1, "x"};
    struct rec g = {0};
    assert_int_equal(tp_store_script(s, "echo", 1, 3, argv2, NULL, rec_cb, &g), 0);
    memset(k, 'z', sizeof(k) - 1);
    memset(a1, 'z', sizeof(a1) - 1);
    assert_true(integ_run_until(loop, &g.done, 5));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.type, TP_REPLY_ARRAY);
    assert_string_equal(g.elem[0], "keyA");
    assert_string_equal(g.elem[1], "argB");
    integ_run_for(loop, 0.05);
    assert_int_equal(g.calls, 1);
    r = run_cmd(loop, s, "SCRIPT EXISTS %s", sha);
    assert_int_equal(r.len, 1);

    tp_store_free(s);
    ev_loop_destroy(loop);
}

static void test_timeout(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 200);

    struct rec slow = {0}, behind = {0};
    double t0 = integ_now();
    assert_int_equal(tp_store_command(s, rec_cb, &slow, "DEBUG SLEEP %s", "1"), 0);
    assert_int_equal(tp_store_command(s, rec_cb, &behind, "PING"), 0);
    assert_true(integ_run_until(loop, &slow.done, 2));
    double took = integ_now() - t0;
    assert_int_equal(slow.err, TP_ETIMEDOUT);
    assert_true(took >= 0.15 && took < 0.6);
    assert_true(integ_run_until(loop, &behind.done, 1));
    assert_int_equal(behind.err, TP_ETIMEDOUT);

    /* The late replies arrive after ~1 s and must go nowhere. */
    integ_run_for(loop, 1.2);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(behind.calls, 1);
    assert_true(tp_store_is_connected(s));
    struct rec r = run_cmd(loop, s, "ECHO %s", "after");
    assert_int_equal(r.err, 0);
    assert_string_equal(r.str, "after");

    struct tp_store_stats st;
    tp_store_get_stats(s, &st);
    assert_int_equal(st.timeouts, 2);
    tp_store_free(s);
    ev_loop_destroy(loop);
}

static void test_disconnect_reconnect(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 5000);

    struct rec pending = {0};
    assert_int_equal(tp_store_command(s, rec_cb, &pending, "BLPOP %s 10", "never"), 0);
    integ_run_for(loop, 0.05);
    assert_int_equal(pending.calls, 0);

    integ_redis_stop(&redis);
    double t0 = integ_now();
    assert_true(integ_run_until(loop, &pending.done, 2));
    assert_true(integ_now() - t0 < 1.0);
    assert_int_equal(pending.err, TP_EUNAVAIL);
    assert_false(tp_store_is_connected(s));

    /* Fail fast while down: no callback, immediate error. */
    struct rec r = {0};
    const char *argv[] = {"k"};
    assert_int_equal(tp_store_command(s, rec_cb, &r, "PING"), TP_EUNAVAIL);
    assert_int_equal(tp_store_script(s, "echo", 1, 1, argv, NULL, rec_cb, &r), TP_EUNAVAIL);
    integ_run_for(loop, 0.7); /* several failed attempts with backoff */
    assert_int_equal(r.calls, 0);
    assert_int_equal(pending.calls, 1);

    integ_redis_start(&redis);
    assert_true(wait_connected(loop, s, 8));
    r = run_cmd(loop, s, "ECHO %s", "back");
    assert_string_equal(r.str, "back");
    /* Scripts were loaded on reconnect: the server is fresh, EVALSHA works at once. */
    struct rec e = {0};
    assert_int_equal(tp_store_script(s, "echo", 1, 1, argv, NULL, rec_cb, &e), 0);
    assert_true(integ_run_until(loop, &e.done, 5));
    assert_int_equal(e.type, TP_REPLY_ARRAY);

    struct tp_store_stats st;
    tp_store_get_stats(s, &st);
    assert_int_equal(st.reconnects, 1);
    assert_true(st.errors >= 1);
    tp_store_free(s);
    ev_loop_destroy(loop);
}

/* A store created while Redis is down keeps retrying and connects when it appears. */
static void test_connect_later(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    integ_redis_stop(&redis);
    struct tp_config_redis cfg = {.timeout_ms = 500};
    snprintf(cfg.url, sizeof(cfg.url), "%s", redis.url);
    struct tp_store *s = tp_store_new(loop, &cfg, scripts_dir);
    assert_non_null(s);
    integ_run_for(loop, 0.3);
    assert_false(tp_store_is_connected(s));
    integ_redis_start(&redis);
    assert_true(wait_connected(loop, s, 8));
    struct tp_store_stats st;
    tp_store_get_stats(s, &st);
    assert_int_equal(st.reconnects, 0);
    tp_store_free(s);
    ev_loop_destroy(loop);
}

/* A hung server (SIGSTOP: like a network black hole, TCP stays up): commands time out one by
 * one, then the connection is declared stalled and dropped, so later commands fail fast; when
 * the server resumes, the store reconnects. */
static void test_stalled_server(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 200);
    kill(redis.pid, SIGSTOP);
    struct rec first = {0};
    assert_int_equal(tp_store_command(s, rec_cb, &first, "PING"), 0);
    assert_true(integ_run_until(loop, &first.done, 1));
    assert_int_equal(first.err, TP_ETIMEDOUT);
    double end = integ_now() + 8;
    int rc = 0;
    struct rec more[64];
    memset(more, 0, sizeof(more));
    for (int i = 0; i < 64 && integ_now() < end; i++) {
        rc = tp_store_command(s, rec_cb, &more[i], "PING");
        if (rc != 0)
            break;
        assert_true(integ_run_until(loop, &more[i].done, 1));
        assert_int_equal(more[i].err, TP_ETIMEDOUT);
    }
    assert_int_equal(rc, TP_EUNAVAIL);
    assert_false(tp_store_is_connected(s));
    kill(redis.pid, SIGCONT);
    assert_true(wait_connected(loop, s, 8));
    struct rec r = run_cmd(loop, s, "ECHO %s", "resumed");
    assert_string_equal(r.str, "resumed");
    tp_store_free(s);
    ev_loop_destroy(loop);
}

struct freeing {
    struct tp_store *store;
    struct rec others[3];
    int calls;
};

static void free_in_cb(int err, const struct tp_store_reply *r, void *ud)
{
    struct freeing *f = ud;
    (void)r;
    assert_int_equal(err, 0);
    f->calls++;
    tp_store_free(f->store);
    /* Every other pending callback ran inside tp_store_free, exactly once. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(f->others[i].calls, 1);
        assert_int_equal(f->others[i].err, TP_ECLOSED);
    }
}

static void test_free_with_pending(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 2000);
    struct rec a = {0}, b = {0};
    assert_int_equal(tp_store_command(s, rec_cb, &a, "BLPOP %s 5", "never"), 0);
    assert_int_equal(tp_store_command(s, rec_cb, &b, "PING"), 0);
    tp_store_free(s);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.err, TP_ECLOSED);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.err, TP_ECLOSED);
    integ_run_for(loop, 0.05);
    assert_int_equal(a.calls, 1);

    /* Freed from inside a reply callback while three more commands are pipelined behind it. */
    struct freeing f = {0};
    f.store = open_store(loop, redis.url, 2000);
    assert_int_equal(tp_store_command(f.store, free_in_cb, &f, "PING"), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tp_store_command(f.store, rec_cb, &f.others[i], "DEBUG SLEEP 0"), 0);
    integ_run_for(loop, 0.2);
    assert_int_equal(f.calls, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(f.others[i].calls, 1);
    ev_loop_destroy(loop);
}

static void test_auth_and_unix(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *admin = open_store(loop, redis.url, 2000);
    run_cmd(loop, admin, "CONFIG SET requirepass %s", "t0p-secret");

    char url[512];
    snprintf(url, sizeof(url), "redis://:t0p-secret@127.0.0.1:%d/2", redis.port);
    struct tp_store *good = open_store(loop, url, 2000);
    run_cmd(loop, good, "SET %s in-db-2", "dbkey");

    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d", redis.port);
    struct tp_config_redis cfg = {.timeout_ms = 500};
    snprintf(cfg.url, sizeof(cfg.url), "%s", url);
    struct tp_store *bad = tp_store_new(loop, &cfg, NULL);
    assert_non_null(bad);
    integ_run_for(loop, 0.5);
    assert_false(tp_store_is_connected(bad));
    tp_store_free(bad);

    /* Unix socket, db 2 selected by query. */
    snprintf(url, sizeof(url), "unix://%s?db=2", redis.sock);
    snprintf(cfg.url, sizeof(cfg.url), "%s", url);
    struct tp_store *ux = tp_store_new(loop, &cfg, NULL);
    assert_non_null(ux);
    /* The unix connection is not authenticated yet: it must not get ready. */
    integ_run_for(loop, 0.3);
    assert_false(tp_store_is_connected(ux));
    tp_store_free(ux);
    run_cmd(loop, admin, "CONFIG SET requirepass %s", "");
    ux = open_store(loop, url, 2000);
    struct rec r = run_cmd(loop, ux, "GET %s", "dbkey");
    assert_string_equal(r.str, "in-db-2");
    run_cmd(loop, ux, "FLUSHALL", NULL);

    tp_store_free(ux);
    tp_store_free(good);
    tp_store_free(admin);
    ev_loop_destroy(loop);
}

struct subrec {
    int messages, gaps, closed, confirmed;
    char last[64];
};

static void sub_cb(int err, const struct tp_store_reply *r, void *ud)
{
    struct subrec *x = ud;
    if (err == TP_EUNAVAIL) {
        x->gaps++;
        return;
    }
    if (err == TP_ECLOSED) {
        x->closed++;
        return;
    }
    assert_int_equal(err, 0);
    assert_int_equal(tp_reply_type(r), TP_REPLY_ARRAY);
    assert_int_equal(tp_reply_len(r), 3);
    if (strcmp(tp_reply_str(tp_reply_at(r, 0), NULL), "subscribe") == 0) {
        x->confirmed++;
        return;
    }
    assert_string_equal(tp_reply_str(tp_reply_at(r, 0), NULL), "message");
    snprintf(x->last, sizeof(x->last), "%s", tp_reply_str(tp_reply_at(r, 2), NULL));
    x->messages++;
}

static void publish(struct ev_loop *loop, struct tp_store *pub, const char *msg)
{
    struct rec r = {0};
    assert_int_equal(tp_store_command(pub, rec_cb, &r, "PUBLISH chan %s", msg), 0);
    assert_true(integ_run_until(loop, &r.done, 5));
}

static void test_pubsub(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_config_redis cfg = {.timeout_ms = 1000};
    snprintf(cfg.url, sizeof(cfg.url), "%s", redis.url);
    struct tp_store *sub = tp_store_new(loop, &cfg, NULL);
    struct subrec sr = {0};
    assert_int_equal(tp_store_subscribe(sub, "chan", sub_cb, &sr), 0);
    assert_int_equal(tp_store_subscribe(sub, "chan", sub_cb, &sr), TP_ECONFLICT);
    assert_true(wait_connected(loop, sub, 5));
    struct tp_store *pub = open_store(loop, redis.url, 1000);
    integ_run_for(loop, 0.1);

    publish(loop, pub, "one");
    integ_run_for(loop, 0.1);
    assert_int_equal(sr.messages, 1);
    assert_string_equal(sr.last, "one");
    assert_int_equal(sr.gaps, 0);
    assert_int_equal(sr.confirmed, 1); /* the first confirmation, reported once */
    /* A subscribed store takes no other commands. */
    struct rec r = {0};
    assert_int_equal(tp_store_command(sub, rec_cb, &r, "PING"), TP_EINVAL);

    integ_redis_stop(&redis);
    integ_run_for(loop, 0.2);
    integ_redis_start(&redis);
    assert_true(wait_connected(loop, sub, 8));
    assert_true(wait_connected(loop, pub, 8));
    integ_run_for(loop, 0.1);
    assert_int_equal(sr.gaps, 1);
    assert_int_equal(sr.confirmed, 1); /* a re-confirmation is the gap instead */
    publish(loop, pub, "two");
    integ_run_for(loop, 0.1);
    assert_int_equal(sr.messages, 2);
    assert_string_equal(sr.last, "two");

    tp_store_free(sub);
    assert_int_equal(sr.closed, 1);
    tp_store_free(pub);
    ev_loop_destroy(loop);
}

/* tickpool_redis_command_seconds: a script counts under its kind (SCRIPT for one not listed in
 * the metrics table), a plain command under COMMAND; a blocking read and what is queued behind
 * it on the same connection are not timed, since their wait is not a round trip. */
static int64_t timed(int kind)
{
    return tp_metrics_family_get(TP_METRIC_FAMILY_REDIS_COMMAND, kind, 0);
}

static void test_latency_metrics(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    struct tp_store *s = open_store(loop, redis.url, 2000);
    int64_t cmd0 = timed(TP_METRICS_REDIS_KIND_COMMAND), scr0 = timed(TP_METRICS_REDIS_KIND_SCRIPT);
    run_cmd(loop, s, "XGROUP CREATE %s g $ MKSTREAM", "lat");
    struct rec e = {0};
    const char *argv[] = {"k", "a"};
    assert_int_equal(tp_store_script(s, "echo", 1, 2, argv, NULL, rec_cb, &e), 0);
    assert_true(integ_run_until(loop, &e.done, 5));
    assert_int_equal(timed(TP_METRICS_REDIS_KIND_COMMAND), cmd0 + 1);
    assert_int_equal(timed(TP_METRICS_REDIS_KIND_SCRIPT), scr0 + 1);

    struct rec rd = {0}, behind = {0};
    const char *xr[] = {"XREADGROUP", "GROUP", "g", "c", "BLOCK", "300", "STREAMS", "lat", ">"};
    assert_int_equal(tp_store_commandargv(s, rec_cb, &rd, 9, xr, NULL), 0);
    assert_int_equal(tp_store_command(s, rec_cb, &behind, "PING"), 0);
    assert_true(integ_run_until(loop, &behind.done, 2));
    assert_true(rd.done && rd.err == 0 && behind.err == 0);
    assert_int_equal(timed(TP_METRICS_REDIS_KIND_COMMAND), cmd0 + 1);
    run_cmd(loop, s, "ECHO %s", "timed again");
    assert_int_equal(timed(TP_METRICS_REDIS_KIND_COMMAND), cmd0 + 2);
    tp_store_free(s);
    ev_loop_destroy(loop);
}

/* --- Set-up --- */

static int group_setup(void **state)
{
    (void)state;
    integ_redis_start(&redis);
    snprintf(scripts_dir, sizeof(scripts_dir), "%s/lua", redis.dir);
    mkdir(scripts_dir, 0700);
    write_file(scripts_dir, "echo.lua",
               "-- KEYS[1], ARGV...: returns {KEYS[1], ARGV...}\n"
               "local out = {KEYS[1]}\nfor _, a in ipairs(ARGV) do out[#out + 1] = a end\n"
               "return out\n");
    write_file(scripts_dir, "fail.lua", "return redis.error_reply('insufficient_funds')\n");
    write_file(scripts_dir, "README.txt", "not a script\n");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    integ_redis_cleanup(&redis);
    return 0;
}

int main(void)
{
    integ_require("redis-server");
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_scripts),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_disconnect_reconnect),
        cmocka_unit_test(test_connect_later),
        cmocka_unit_test(test_stalled_server),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test(test_auth_and_unix),
        cmocka_unit_test(test_pubsub),
        cmocka_unit_test(test_latency_metrics),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
