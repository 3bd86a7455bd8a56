/*
 * Blocking Postgres adapter of the writer and the audit (include/tickpool/store/pgw_pg.h) on top of
 * the project's libpq wrapper (tickpool/store/pg.h): it copies results into plain strings so the
 * two callers share one tiny interface.
 */
#include "tickpool/store/pgw_pg.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/store/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_pgw_pg {
    struct tp_pg *pg;
};

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

struct tp_pgw_pg *tp_pgw_pg_open(const struct tp_config_postgres *cfg)
{
    char err[256];
    struct tp_pg *pg = tp_pg_connect(cfg->url, cfg->timeout_ms, err, sizeof(err));
    if (pg == NULL)
        return NULL;
    struct tp_pgw_pg *p = tp_xmalloc(sizeof(*p));
    p->pg = pg;
    return p;
}

/* Copies a result's values into `out` as strings (NULL for SQL NULL). */
static void copy_rows(const struct tp_pg_result *res, struct tp_pgw_rows *out)
{
    out->nrows = (size_t)TP_MAX(tp_pg_result_rows(res), 0);
    out->ncols = (size_t)TP_MAX(tp_pg_result_cols(res), 0);
    out->vals = tp_xcalloc(out->nrows * out->ncols + 1, sizeof(char *));
    for (size_t i = 0; i < out->nrows; i++)
        for (size_t j = 0; j < out->ncols; j++) {
            const char *v = tp_pg_result_get(res, (int)i, (int)j);
            out->vals[i * out->ncols + j] = v ? tp_xstrdup(v) : NULL;
        }
}

/* tp_pgw_pg_query, the text prepared once per connection when `fixed`. */
static int query(struct tp_pgw_pg *p, bool fixed, const char *sql, int nparams,
                 const char *const *params, struct tp_pgw_rows *out, char *err, size_t errlen)
{
    struct tp_pg_result *res = NULL;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    int rc = fixed
                 ? tp_pg_exec_prepared(p->pg, sql, nparams, params, out ? &res : NULL, err, errlen)
                 : tp_pg_exec_params(p->pg, sql, nparams, params, out ? &res : NULL, err, errlen);
    if (rc != 0 || out == NULL) {
        tp_pg_result_free(res);
        return rc;
    }
    copy_rows(res, out);
    tp_pg_result_free(res);
    return 0;
}

int tp_pgw_pg_query(struct tp_pgw_pg *p, const char *sql, int nparams, const char *const *params,
                    struct tp_pgw_rows *out, char *err, size_t errlen)
{
    return query(p, false, sql, nparams, params, out, err, errlen);
}

int tp_pgw_pg_query_fixed(struct tp_pgw_pg *p, const char *sql, int nparams,
                          const char *const *params, struct tp_pgw_rows *out, char *err,
                          size_t errlen)
{
    return query(p, true, sql, nparams, params, out, err, errlen);
}

int tp_pgw_pg_pipeline_fixed(struct tp_pgw_pg *p, size_t n, const char *const *sqls,
                             const int *nparams, const char *const *const *params,
                             const int *const *lengths, struct tp_pgw_rows *last, size_t *failed,
                             char *err, size_t errlen)
{
    struct tp_pg_call calls[TP_PG_PIPELINE_MAX];
    struct tp_pg_result *res = NULL;
    if (last != NULL)
        memset(last, 0, sizeof(*last));
    if (n == 0 || n > TP_PG_PIPELINE_MAX) {
        *failed = 0;
        return TP_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        calls[i] = (struct tp_pg_call){.sql = sqls[i],
                                       .nparams = nparams[i],
                                       .params = nparams[i] > 0 ? params[i] : NULL,
                                       .lengths = nparams[i] > 0 ? lengths[i] : NULL,
                                       .out = i == n - 1 && last != NULL ? &res : NULL};
    int rc = tp_pg_exec_pipeline(p->pg, calls, n, failed, err, errlen);
    if (rc == 0 && last != NULL)
        copy_rows(res, last);
    tp_pg_result_free(res);
    return rc;
}

int tp_pgw_pg_exec(struct tp_pgw_pg *p, const char *sql, int nparams, const char *const *params,
                   char *err, size_t errlen)
{
    return tp_pgw_pg_query(p, sql, nparams, params, NULL, err, errlen);
}

bool tp_pgw_pg_ok(const struct tp_pgw_pg *p)
{
    return p != NULL && tp_pg_ok(p->pg);
}

void tp_pgw_pg_close(struct tp_pgw_pg *p)
{
    if (p == NULL)
        return;
    tp_pg_close(p->pg);
    free(p);
}
