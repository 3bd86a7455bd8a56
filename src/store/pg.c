/*
 * Blocking Postgres access over libpq (the only file that includes libpq-fe.h), and the
 * per-worker health probe thread behind /readyz.
 */
#include "tickpool/store/pg.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"

#include <libpq-fe.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOD "pg"

struct tp_pg {
    PGconn *conn;
    char *url;
    int statement_timeout_ms;
    bool probe; /* health-probe connection: tight TCP timeouts */
    char sqlstate[6];
    /* Texts prepared on this connection (tp_pg_exec_prepared), by address; statement i is
     * named "tp<i>". A new connection starts empty: the server forgot them. */
    const char *prepared[TP_PG_MAX_PREPARED];
    int nprepared;
};

struct tp_pg_result {
    PGresult *res;
};

/* --- Errors --- */

/* Writes a one-line message into err: the libpq message with newlines flattened. */
static void set_err(char *err, size_t errlen, const char *prefix, const char *msg)
{
    if (err == NULL || errlen == 0)
        return;
    snprintf(err, errlen, "%s%s", prefix ? prefix : "", msg ? msg : "");
    size_t n = strlen(err);
    for (size_t i = 0; i < n; i++)
        if (err[i] == '\n' || err[i] == '\r' || err[i] == '\t')
            err[i] = ' ';
    while (n > 0 && err[n - 1] == ' ')
        err[--n] = '\0';
}

/* Maps a SQLSTATE to a TP_E* code (see pg.h). */
static int map_sqlstate(const char *st)
{
    if (st == NULL || st[0] == '\0')
        return TP_EIO;
    /* 57014 is query_canceled, which statement_timeout raises */
    if (strcmp(st, "57014") == 0)
        return TP_ETIMEDOUT;
    if (strncmp(st, "23", 2) == 0)
        return TP_ECONFLICT;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0)
        return TP_EAGAIN;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strcmp(st, "53300") == 0)
        return TP_EUNAVAIL;
    return TP_EIO;
}

/* Turns a PGresult into a TP code; fills pg->sqlstate and err on failure. Does not free. */
static int check_result(struct tp_pg *pg, const PGresult *res, char *err, size_t errlen)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        pg->sqlstate[0] = '\0';
        return 0;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state ? state : "");
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        set_err(err, errlen, "postgres connection lost: ", PQerrorMessage(pg->conn));
        return TP_EUNAVAIL;
    }
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn);
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "[%s] ", state ? state : "?????");
    set_err(err, errlen, prefix, msg);
    return map_sqlstate(state);
}

/* --- Connections --- */

/* Opens pg->conn from pg->url and applies statement_timeout. */
static int open_conn(struct tp_pg *pg, char *err, size_t errlen)
{
    /* Keywords before "dbname" are defaults the URL may override (expand_dbname). */
    const char *keys[12], *vals[12];
    int k = 0;
    pg->nprepared = 0;
    keys[k] = "connect_timeout", vals[k++] = pg->probe ? "2" : "5";
    keys[k] = "application_name", vals[k++] = pg->probe ? "tickpool-health" : "tickpool";
    if (pg->probe) {
        /* A black-holed server must not hang the probe: fail sends after 3 s. */
        keys[k] = "keepalives_idle", vals[k++] = "2";
        keys[k] = "keepalives_interval", vals[k++] = "1";
        keys[k] = "keepalives_count", vals[k++] = "2";
        keys[k] = "tcp_user_timeout", vals[k++] = "3000";
    }
    keys[k] = "dbname", vals[k++] = pg->url;
    keys[k] = NULL, vals[k] = NULL;
    pg->conn = PQconnectdbParams(keys, vals, 1);
    if (pg->conn == NULL) {
        set_err(err, errlen, "postgres: ", "out of memory");
        return TP_EUNAVAIL;
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        set_err(err, errlen, "cannot connect to postgres: ", PQerrorMessage(pg->conn));
        PQfinish(pg->conn);
        pg->conn = NULL;
        return TP_EUNAVAIL;
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %d", pg->statement_timeout_ms);
    PGresult *res = PQexec(pg->conn, sql);
    int rc = check_result(pg, res, err, errlen);
    PQclear(res);
    if (rc != 0) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    return rc;
}

static struct tp_pg *pg_new(const char *url, int statement_timeout_ms, bool probe, char *err,
                            size_t errlen)
{
    if (url == NULL || statement_timeout_ms < 0) {
        set_err(err, errlen, "postgres: ", "invalid argument");
        return NULL;
    }
    struct tp_pg *pg = tp_xcalloc(1, sizeof(*pg));
    pg->url = tp_xstrdup(url);
    pg->statement_timeout_ms = statement_timeout_ms;
    pg->probe = probe;
    if (open_conn(pg, err, errlen) != 0) {
        free(pg->url);
        free(pg);
        return NULL;
    }
    return pg;
}

struct tp_pg *tp_pg_connect(const char *url, int statement_timeout_ms, char *err, size_t errlen)
{
    return pg_new(url, statement_timeout_ms, false, err, errlen);
}

void tp_pg_close(struct tp_pg *pg)
{
    if (pg == NULL)
        return;
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    free(pg->url);
    free(pg);
}

bool tp_pg_ok(const struct tp_pg *pg)
{
    return pg != NULL && pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK;
}

int tp_pg_reset(struct tp_pg *pg, char *err, size_t errlen)
{
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    return open_conn(pg, err, errlen);
}

const char *tp_pg_sqlstate(const struct tp_pg *pg)
{
    return pg->sqlstate;
}

/* --- Statements --- */

static int not_connected(struct tp_pg *pg, char *err, size_t errlen)
{
    snprintf(pg->sqlstate, sizeof(pg->sqlstate), "08003");
    set_err(err, errlen, "postgres: ", "not connected");
    return TP_EUNAVAIL;
}

int tp_pg_exec(struct tp_pg *pg, const char *sql, char *err, size_t errlen)
{
    if (sql == NULL)
        return TP_EINVAL;
    if (pg->conn == NULL)
        return not_connected(pg, err, errlen);
    /* PQexec runs every statement of a multi-statement string (one implicit transaction unless
     * the string has its own BEGIN/COMMIT) and returns the last result, or the first error. */
    PGresult *res = PQexec(pg->conn, sql);
    int rc = check_result(pg, res, err, errlen);
    PQclear(res);
    return rc;
}

/* Checks `res`; on success hands it to *out (when asked) or frees it. */
static int take_result(struct tp_pg *pg, PGresult *res, struct tp_pg_result **out, char *err,
                       size_t errlen)
{
    int rc = check_result(pg, res, err, errlen);
    if (rc != 0 || out == NULL) {
        PQclear(res);
        return rc;
    }
    *out = tp_xmalloc(sizeof(**out));
    (*out)->res = res;
    return 0;
}

/* The checks before a statement with parameters: 0, TP_EINVAL or not connected. */
static int check_call(struct tp_pg *pg, const char *sql, int nparams, const char *const *params,
                      struct tp_pg_result **out, char *err, size_t errlen)
{
    if (out != NULL)
        *out = NULL;
    if (sql == NULL || nparams < 0 || (nparams > 0 && params == NULL))
        return TP_EINVAL;
    if (pg->conn == NULL)
        return not_connected(pg, err, errlen);
    return 0;
}

int tp_pg_exec_params(struct tp_pg *pg, const char *sql, int nparams, const char *const *params,
                      struct tp_pg_result **out, char *err, size_t errlen)
{
    int rc = check_call(pg, sql, nparams, params, out, err, errlen);
    if (rc != 0)
        return rc;
    PGresult *res = PQexecParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    return take_result(pg, res, out, err, errlen);
}

/* Statement `sql`'s index on this connection (named "tp<i>"), prepared now when it is new: 0 with
 * *idx set, -1 in *idx when the connection's table is full (the text runs unprepared), or the
 * error of a failed Parse. */
static int prepared_index(struct tp_pg *pg, const char *sql, int nparams, int *idx, char *err,
                          size_t errlen)
{
    int i = 0;
    while (i < pg->nprepared && pg->prepared[i] != sql)
        i++;
    *idx = i == TP_PG_MAX_PREPARED ? -1 : i;
    if (i == TP_PG_MAX_PREPARED || i < pg->nprepared)
        return 0;
    /* Not transactional: a later ROLLBACK keeps it. A failed Parse creates nothing, so the text
     * is remembered only once the server said yes. */
    char name[16];
    snprintf(name, sizeof(name), "tp%d", i);
    PGresult *res = PQprepare(pg->conn, name, sql, nparams, NULL);
    int rc = check_result(pg, res, err, errlen);
    PQclear(res);
    if (rc == 0)
        pg->prepared[pg->nprepared++] = sql;
    return rc;
}

int tp_pg_exec_prepared(struct tp_pg *pg, const char *sql, int nparams, const char *const *params,
                        struct tp_pg_result **out, char *err, size_t errlen)
{
    int rc = check_call(pg, sql, nparams, params, out, err, errlen);
    int i = -1;
    if (rc == 0)
        rc = prepared_index(pg, sql, nparams, &i, err, errlen);
    if (rc != 0)
        return rc;
    if (i < 0)
        return tp_pg_exec_params(pg, sql, nparams, params, out, err, errlen);
    char name[16];
    snprintf(name, sizeof(name), "tp%d", i);
    PGresult *res = PQexecPrepared(pg->conn, name, nparams, params, NULL, NULL, 0);
    return take_result(pg, res, out, err, errlen);
}

/* A pipeline that failed answers no rows: the results of the statements before the failure are
 * freed, and every caller's *out is NULL. */
static void pipeline_free_results(const struct tp_pg_call *calls, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (calls[i].out != NULL) {
            tp_pg_result_free(*calls[i].out);
            *calls[i].out = NULL;
        }
}

/* The pipeline's results no longer match its statements (a connection lost mid-way, or a
 * protocol surprise): the connection is dropped, which also rolls back a transaction it had
 * open, and the caller reconnects (tp_pg_ok is false). */
static int pipeline_lost(struct tp_pg *pg, const struct tp_pg_call *calls, size_t n, int rc,
                         char *err, size_t errlen)
{
    if (rc != TP_EUNAVAIL) { /* else check_result said so already */
        snprintf(pg->sqlstate, sizeof(pg->sqlstate), "08006");
        set_err(err, errlen, "postgres connection lost in a pipeline: ", PQerrorMessage(pg->conn));
    }
    pipeline_free_results(calls, n);
    PQfinish(pg->conn);
    pg->conn = NULL;
    return TP_EUNAVAIL;
}

/* libpq's paramFormats of a call with binary parameters: every one binary. */
static const int all_binary[TP_PG_BINARY_PARAMS_MAX] = {[0 ... TP_PG_BINARY_PARAMS_MAX - 1] = 1};

int tp_pg_exec_pipeline(struct tp_pg *pg, const struct tp_pg_call *calls, size_t n, size_t *failed,
                        char *err, size_t errlen)
{
    *failed = 0;
    if (calls == NULL || n == 0 || n > TP_PG_PIPELINE_MAX)
        return TP_EINVAL;
    /* Every result is NULL before the first check can fail: from here on each *out is NULL or
     * ours, so every failure below leaves them NULL (pipeline_free_results where any was set). */
    for (size_t i = 0; i < n; i++)
        if (calls[i].out != NULL)
            *calls[i].out = NULL;
    int idx[TP_PG_PIPELINE_MAX];
    for (size_t i = 0; i < n; i++) {
        *failed = i;
        const struct tp_pg_call *c = &calls[i];
        int rc = check_call(pg, c->sql, c->nparams, c->params, c->out, err, errlen);
        if (rc == 0 && c->lengths != NULL && c->nparams > TP_PG_BINARY_PARAMS_MAX)
            rc = TP_EINVAL;
        if (rc != 0)
            return rc;
    }
    /* Texts new to this connection are prepared first, one round trip each, once per
     * connection: a pipeline sends only Bind/Execute of what is already prepared. */
    for (size_t i = 0; i < n; i++) {
        *failed = i;
        int rc = prepared_index(pg, calls[i].sql, calls[i].nparams, &idx[i], err, errlen);
        if (rc != 0)
            return rc;
    }
    *failed = 0;
    if (PQenterPipelineMode(pg->conn) != 1)
        return pipeline_lost(pg, calls, n, 0, err, errlen);
    for (size_t i = 0; i < n; i++) {
        const struct tp_pg_call *c = &calls[i];
        char name[16];
        snprintf(name, sizeof(name), "tp%d", idx[i]);
        const int *formats = c->lengths != NULL ? all_binary : NULL;
        int sent = idx[i] >= 0 ? PQsendQueryPrepared(pg->conn, name, c->nparams, c->params,
                                                     c->lengths, formats, 0)
                               : PQsendQueryParams(pg->conn, c->sql, c->nparams, NULL, c->params,
                                                   c->lengths, formats, 0);
        if (sent != 1)
            return pipeline_lost(pg, calls, n, 0, err, errlen);
    }
    if (PQpipelineSync(pg->conn) != 1)
        return pipeline_lost(pg, calls, n, 0, err, errlen);
    /* Each statement's result comes back followed by a NULL; after the first failure the rest
     * come back PGRES_PIPELINE_ABORTED (never run); then the sync's own result. Two NULLs in a
     * row mean nothing more will come. */
    int rc = 0;
    size_t got = 0;
    bool null_before = false;
    for (;;) {
        PGresult *res = PQgetResult(pg->conn);
        if (res == NULL) {
            if (null_before || PQstatus(pg->conn) == CONNECTION_BAD)
                return pipeline_lost(pg, calls, n, rc, err, errlen);
            null_before = true;
            continue;
        }
        null_before = false;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            break;
        }
        if (got == n) {
            PQclear(res);
            return pipeline_lost(pg, calls, n, rc, err, errlen);
        }
        size_t i = got++;
        if (st == PGRES_PIPELINE_ABORTED || rc != 0) {
            PQclear(res);
            continue;
        }
        rc = take_result(pg, res, calls[i].out, err, errlen);
        if (rc != 0)
            *failed = i;
        if (rc == TP_EUNAVAIL)
            return pipeline_lost(pg, calls, n, rc, err, errlen);
    }
    if (got != n || PQexitPipelineMode(pg->conn) != 1)
        return pipeline_lost(pg, calls, n, rc, err, errlen);
    if (rc != 0)
        pipeline_free_results(calls, n);
    return rc;
}

int tp_pg_query(struct tp_pg *pg, const char *sql, struct tp_pg_result **out, char *err,
                size_t errlen)
{
    return tp_pg_exec_params(pg, sql, 0, NULL, out, err, errlen);
}

int tp_pg_begin(struct tp_pg *pg, char *err, size_t errlen)
{
    return tp_pg_exec(pg, "BEGIN", err, errlen);
}

int tp_pg_commit(struct tp_pg *pg, char *err, size_t errlen)
{
    return tp_pg_exec(pg, "COMMIT", err, errlen);
}

int tp_pg_rollback(struct tp_pg *pg, char *err, size_t errlen)
{
    return tp_pg_exec(pg, "ROLLBACK", err, errlen);
}

/* --- Results --- */

int tp_pg_result_rows(const struct tp_pg_result *r)
{
    return r ? PQntuples(r->res) : 0;
}

int tp_pg_result_cols(const struct tp_pg_result *r)
{
    return r ? PQnfields(r->res) : 0;
}

int64_t tp_pg_result_affected(const struct tp_pg_result *r)
{
    const char *s = r ? PQcmdTuples(r->res) : "";
    if (s == NULL || s[0] == '\0')
        return -1;
    return strtoll(s, NULL, 10);
}

static bool in_range(const struct tp_pg_result *r, int row, int col)
{
    return r != NULL && row >= 0 && col >= 0 && row < PQntuples(r->res) && col < PQnfields(r->res);
}

const char *tp_pg_result_get(const struct tp_pg_result *r, int row, int col)
{
    if (!in_range(r, row, col) || PQgetisnull(r->res, row, col))
        return NULL;
    return PQgetvalue(r->res, row, col);
}

bool tp_pg_result_is_null(const struct tp_pg_result *r, int row, int col)
{
    return !in_range(r, row, col) || PQgetisnull(r->res, row, col);
}

int tp_pg_result_int64(const struct tp_pg_result *r, int row, int col, int64_t *out)
{
    const char *s = tp_pg_result_get(r, row, col);
    if (s == NULL || s[0] == '\0')
        return TP_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return TP_EINVAL;
    *out = v;
    return 0;
}

void tp_pg_result_free(struct tp_pg_result *r)
{
    if (r == NULL)
        return;
    PQclear(r->res);
    free(r);
}

/* --- Health probe --- */

/* The probe thread writes the monotonic time of its last good `SELECT 1`; readers compare. A
 * condition variable lets tp_pg_health_stop wake it from its 1 s sleep. */
struct tp_pg_health {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    bool stop;
    char url[sizeof(((struct tp_config_postgres *)0)->url)];
    int timeout_ms;
    _Atomic int64_t last_ok_ms;
};

#define HEALTH_INTERVAL_MS 1000
#define HEALTH_MAX_AGE_MS 3000

static void *health_main(void *arg)
{
    struct tp_pg_health *h = arg;
    struct tp_pg *pg = NULL;
    bool was_ok = true; /* log the first failure */
    char err[256];
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        pthread_mutex_unlock(&h->mu);
        int rc = TP_EUNAVAIL;
        if (pg == NULL)
            pg = pg_new(h->url, h->timeout_ms, true, err, sizeof(err));
        if (pg != NULL) {
            rc = tp_pg_exec(pg, "SELECT 1", err, sizeof(err));
            if (rc != 0 && !tp_pg_ok(pg)) {
                tp_pg_close(pg);
                pg = NULL;
            }
        }
        if (rc == 0) {
            atomic_store(&h->last_ok_ms, tp_mono_ms());
            if (!was_ok)
                tp_log_info(MOD, "postgres reachable again");
            was_ok = true;
        } else if (was_ok) {
            tp_log_warn(MOD, "postgres health probe failing\terror=\"%s\"", err);
            was_ok = false;
        }
        pthread_mutex_lock(&h->mu);
        if (h->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += HEALTH_INTERVAL_MS / 1000;
        pthread_cond_timedwait(&h->cond, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    tp_pg_close(pg);
    return NULL;
}

struct tp_pg_health *tp_pg_health_start(const struct tp_config_postgres *cfg)
{
    struct tp_pg_health *h = tp_xcalloc(1, sizeof(*h));
    snprintf(h->url, sizeof(h->url), "%s", cfg->url);
    /* The probe must answer within the readiness window whatever postgres.timeout says. */
    h->timeout_ms = cfg->timeout_ms > 0 ? TP_MIN(cfg->timeout_ms, 2000) : 2000;
    atomic_init(&h->last_ok_ms, INT64_MIN / 2);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&h->thread, NULL, health_main, h);
    if (rc != 0) {
        tp_log_error(MOD, "cannot start the postgres health thread\terror=\"%s\"", strerror(rc));
        pthread_cond_destroy(&h->cond);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

bool tp_pg_health_ok(const struct tp_pg_health *h)
{
    return h != NULL && tp_mono_ms() - atomic_load(&h->last_ok_ms) <= HEALTH_MAX_AGE_MS;
}

void tp_pg_health_stop(struct tp_pg_health *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* --- The worker's probe --- */

/* The worker slot holding the worker's probe (tp_pg_health_install hands it out). */
static size_t health_slot = SIZE_MAX;

static void on_worker_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    const struct tp_config *cfg = tp_worker_config(w);
    if (cfg->postgres.url[0] != '\0')
        tp_worker_slot_set(w, health_slot, tp_pg_health_start(&cfg->postgres));
}

void tp_pg_health_install(void)
{
    health_slot = tp_worker_slot_new();
    tp_worker_on_init(on_worker_init, NULL);
}

struct tp_pg_health *tp_pg_health_of(const struct tp_worker *w)
{
    return health_slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, health_slot);
}
