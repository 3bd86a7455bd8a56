/*
 * Blocking Postgres adapter of the writer and the audit (src/pgw_internal.h), on top of the
 * project's libpq wrapper. Until tickpool/pg.h exists every call reports TP_EUNAVAIL, so the
 * writer keeps the backlog in Redis and the audit reports Postgres unreachable.
 */
#include "pgw_internal.h"
#include "tickpool/common.h"

#include <stdlib.h>
#include <string.h>

void tp_pgw_rows_free(struct tp_pgw_rows *r)
{
    if (r == NULL || r->vals == NULL)
        return;
    for (size_t i = 0; i < r->nrows * r->ncols; i++)
        free(r->vals[i]);
    free(r->vals);
    memset(r, 0, sizeof(*r));
}

const char *tp_pgw_rows_get(const struct tp_pgw_rows *r, size_t row, size_t col)
{
    if (row >= r->nrows || col >= r->ncols)
        return NULL;
    return r->vals[row * r->ncols + col];
}

#if __has_include("tickpool/pg.h") && defined(TP_PGW_HAVE_PG)
#include "tickpool/pg.h"
/* TODO(pgw): bind to tickpool/pg.h once its API is final. */
#else
struct tp_pgw_pg *tp_pgw_pg_open(const struct tp_config_postgres *cfg)
{
    (void)cfg;
    return NULL;
}

int tp_pgw_pg_exec(struct tp_pgw_pg *pg, const char *sql, int nparams, const char *const *params,
                   char *err, size_t errlen)
{
    (void)pg, (void)sql, (void)nparams, (void)params;
    if (err != NULL && errlen > 0)
        strncpy(err, "no Postgres driver", errlen - 1), err[errlen - 1] = '\0';
    return TP_EUNAVAIL;
}

int tp_pgw_pg_query(struct tp_pgw_pg *pg, const char *sql, int nparams, const char *const *params,
                    struct tp_pgw_rows *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    return tp_pgw_pg_exec(pg, sql, nparams, params, err, errlen);
}

bool tp_pgw_pg_ok(const struct tp_pgw_pg *pg)
{
    (void)pg;
    return false;
}

void tp_pgw_pg_close(struct tp_pgw_pg *pg)
{
    (void)pg;
}
#endif
