/*
 * Internals shared by the Postgres writer (src/store/pgw_write.c) and `tickpool audit`
 * (src/cli/audit.c): a thin blocking Postgres adapter (src/store/pgw_pg.c) over the project's
 * libpq wrapper (tickpool/store/pg.h), so the two modules name exactly the few calls they need.
 */
#ifndef TP_PGW_PG_H
#define TP_PGW_PG_H

#include <stdbool.h>
#include <stddef.h>

struct tp_config_postgres;
struct tp_pgw_pg;

/* Rows of a query, every value as text (NULL for SQL NULL); owned by the caller. */
struct tp_pgw_rows {
    size_t nrows, ncols;
    char **vals; /* nrows * ncols */
};

/** Connects (blocking) with statement_timeout = cfg->timeout_ms. NULL (logged once by the
 * caller) when Postgres is unreachable. */
struct tp_pgw_pg *tp_pgw_pg_open(const struct tp_config_postgres *cfg);
/** Runs one statement with text parameters. Returns 0 or TP_EIO / TP_EUNAVAIL / TP_ETIMEDOUT
 * (statement timeout) / TP_ECONFLICT / TP_EAGAIN (see pg.h); `err` (may be NULL) gets the
 * server's message. */
int tp_pgw_pg_exec(struct tp_pgw_pg *pg, const char *sql, int nparams, const char *const *params,
                   char *err, size_t errlen);
/** Like tp_pgw_pg_exec, returning the rows in `out` (free with tp_pgw_rows_free). */
int tp_pgw_pg_query(struct tp_pgw_pg *pg, const char *sql, int nparams, const char *const *params,
                    struct tp_pgw_rows *out, char *err, size_t errlen);
/** tp_pgw_pg_query for a fixed text (a string literal): prepared on the connection's first
 * use and run by name since (tp_pg_exec_prepared), so Postgres plans it once per connection. */
int tp_pgw_pg_query_fixed(struct tp_pgw_pg *pg, const char *sql, int nparams,
                          const char *const *params, struct tp_pgw_rows *out, char *err,
                          size_t errlen);
/** tp_pgw_pg_query_fixed of sqls[0..n) (n <= 16) sent together, one round trip: params[i] are
 * statement i's nparams[i] parameters (NULL for none), text when lengths[i] is NULL, else
 * binary of lengths[i][0..nparams[i]) bytes; `last` (may be NULL) gets the rows of the last
 * statement. The first failure stops the rest: its code is returned and its index is in
 * *failed (a transaction opened before it is left aborted: ROLLBACK it). */
int tp_pgw_pg_pipeline_fixed(struct tp_pgw_pg *pg, size_t n, const char *const *sqls,
                             const int *nparams, const char *const *const *params,
                             const int *const *lengths, struct tp_pgw_rows *last, size_t *failed,
                             char *err, size_t errlen);
/** False once the connection is broken (reconnect with a new tp_pgw_pg_open). */
bool tp_pgw_pg_ok(const struct tp_pgw_pg *pg);
/** Closes; NULL is a no-op. */
void tp_pgw_pg_close(struct tp_pgw_pg *pg);
/** Frees the values of a result. */
void tp_pgw_rows_free(struct tp_pgw_rows *r);
/** Value (row, col), or NULL. */
const char *tp_pgw_rows_get(const struct tp_pgw_rows *r, size_t row, size_t col);

#endif
