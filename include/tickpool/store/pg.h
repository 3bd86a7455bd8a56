/*
 * Blocking Postgres access over libpq, for threads (the batched writer, the health probe) and the
 * CLI (migrate, audit). Never call it from an event-loop thread. One `struct tp_pg` is one
 * connection used by one thread at a time.
 *
 * Errors: 0 = ok, else TP_EUNAVAIL (connection lost or refused), TP_ETIMEDOUT (statement_timeout
 * or canceled), TP_ECONFLICT (integrity violation, SQLSTATE class 23), TP_EAGAIN (serialization
 * failure or deadlock: retry the transaction), TP_EINVAL (bad argument), TP_EIO (other SQL
 * errors). When `err` is not NULL it receives a one-line message (`errlen` bytes, NUL-ended)
 * that includes the SQLSTATE.
 */
#ifndef TP_PG_H
#define TP_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_config_postgres;
struct tp_pg;
struct tp_pg_health;
struct tp_worker;
/* Rows of one statement; owned by the caller, free with tp_pg_result_free. */
struct tp_pg_result;

/**
 * Connects to `url` (postgresql:// URI or libpq conninfo) and sets statement_timeout to
 * `statement_timeout_ms` (0 = none). Returns the connection, or NULL with a message in `err`.
 */
struct tp_pg *tp_pg_connect(const char *url, int statement_timeout_ms, char *err, size_t errlen);
/** Closes the connection (NULL: no-op). */
void tp_pg_close(struct tp_pg *pg);
/** False once the connection is broken (then tp_pg_reset or close and reconnect). */
bool tp_pg_ok(const struct tp_pg *pg);
/** Reconnects with the same parameters (and statement_timeout). Returns 0 or TP_EUNAVAIL. */
int tp_pg_reset(struct tp_pg *pg, char *err, size_t errlen);
/** SQLSTATE of the last failed call ("" when it succeeded); borrowed until the next call. */
const char *tp_pg_sqlstate(const struct tp_pg *pg);

/** Runs one or more `;`-separated statements without parameters, discarding rows. */
int tp_pg_exec(struct tp_pg *pg, const char *sql, char *err, size_t errlen);
/**
 * Runs ONE statement with `nparams` text parameters ($1...; a NULL entry is SQL NULL). When `out`
 * is not NULL it receives the result (also for statements returning no rows); else it is freed.
 */
int tp_pg_exec_params(struct tp_pg *pg, const char *sql, int nparams, const char *const *params,
                      struct tp_pg_result **out, char *err, size_t errlen);
/* Distinct texts tp_pg_exec_prepared prepares per connection; more run unprepared. */
#define TP_PG_MAX_PREPARED 32
/**
 * tp_pg_exec_params for a fixed text (a string literal: it must outlive `pg` unchanged): the
 * first call on a connection prepares it (keyed by its address), later calls run it by name,
 * so Postgres parses and plans it once per connection instead of once per call. A new
 * connection (tp_pg_reset, a new tp_pg) prepares again. Not for poolers that move sessions
 * between server connections (PgBouncer transaction mode before 1.21).
 */
int tp_pg_exec_prepared(struct tp_pg *pg, const char *sql, int nparams, const char *const *params,
                        struct tp_pg_result **out, char *err, size_t errlen);
/* One statement of tp_pg_exec_pipeline: a fixed text as for tp_pg_exec_prepared. */
struct tp_pg_call {
    const char *sql;
    int nparams;
    const char *const *params;
    /* NULL: the params are text (NUL-terminated); else all are binary (Postgres's send/recv
     * format of the parameter's type), of lengths[0..nparams) bytes. */
    const int *lengths;
    /* Receives the rows when not NULL; NULL after any failure (rows already received are
     * freed), except when `calls` or `n` itself is refused (TP_EINVAL, nothing touched). */
    struct tp_pg_result **out;
};
/* Parameters a tp_pg_call with binary ones has at most (more: TP_EINVAL). */
#define TP_PG_BINARY_PARAMS_MAX 16
/* Statements one tp_pg_exec_pipeline call sends at most. */
#define TP_PG_PIPELINE_MAX 16
/**
 * Runs calls[0..n) in order as tp_pg_exec_prepared would, but sent together and answered
 * together (libpq's pipeline mode): one round trip instead of n, once the texts are prepared on
 * the connection. The first statement that fails stops the rest (the server skips them): its
 * code is returned and its index is in *failed; what ran before it stays (a transaction it
 * opened is left open, aborted: ROLLBACK it). A connection lost, or results that do not match,
 * close the connection (TP_EUNAVAIL; tp_pg_ok is false, and an open transaction is gone).
 */
int tp_pg_exec_pipeline(struct tp_pg *pg, const struct tp_pg_call *calls, size_t n, size_t *failed,
                        char *err, size_t errlen);
/** tp_pg_exec_params without parameters: a query returning rows in *out. */
int tp_pg_query(struct tp_pg *pg, const char *sql, struct tp_pg_result **out, char *err,
                size_t errlen);

/** BEGIN / COMMIT / ROLLBACK. Rollback on a broken connection returns TP_EUNAVAIL harmlessly. */
int tp_pg_begin(struct tp_pg *pg, char *err, size_t errlen);
int tp_pg_commit(struct tp_pg *pg, char *err, size_t errlen);
int tp_pg_rollback(struct tp_pg *pg, char *err, size_t errlen);

/** Number of rows / columns (0 for NULL). */
int tp_pg_result_rows(const struct tp_pg_result *res);
int tp_pg_result_cols(const struct tp_pg_result *res);
/** Rows affected by INSERT/UPDATE/DELETE (-1 when not applicable). */
int64_t tp_pg_result_affected(const struct tp_pg_result *res);
/** Value as text, NULL for SQL NULL or out of range; borrowed until tp_pg_result_free. */
const char *tp_pg_result_get(const struct tp_pg_result *res, int row, int col);
/** True for SQL NULL (and out of range). */
bool tp_pg_result_is_null(const struct tp_pg_result *res, int row, int col);
/** Parses a value as a base-10 int64 into *out. Returns 0, or TP_EINVAL for NULL/non-integer. */
int tp_pg_result_int64(const struct tp_pg_result *res, int row, int col, int64_t *out);
/** Frees a result (NULL: no-op). */
void tp_pg_result_free(struct tp_pg_result *res);

/* --- Health probe (behind /readyz) --- */

/**
 * Starts a Postgres health probe: one background thread that (re)connects to cfg->url and runs
 * `SELECT 1` every second. `cfg` is copied. Returns the probe, or NULL (logged) when the thread
 * cannot start. Call after fork: a thread does not survive it.
 */
struct tp_pg_health *tp_pg_health_start(const struct tp_config_postgres *cfg);
/** True when the probe's last success is at most 3 s old; false for NULL. Lock-free; any
 * thread. */
bool tp_pg_health_ok(const struct tp_pg_health *h);
/** Stops and joins the probe thread and frees it (clean shutdown, leak checkers). NULL is a
 * no-op. */
void tp_pg_health_stop(struct tp_pg_health *h);

/** Gives every worker its probe when postgres.url is set (an init hook keeping it in a worker
 * slot; it lives as long as the process). Call once before tp_master_run. */
void tp_pg_health_install(void);
/** The worker's probe (borrowed), NULL when postgres.url is empty or without
 * tp_pg_health_install. */
struct tp_pg_health *tp_pg_health_of(const struct tp_worker *w);

#endif
