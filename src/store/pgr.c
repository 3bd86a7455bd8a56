/*
 * The Postgres reader (see tickpool/store/pgr.h): a tp_workq of one thread owns one tp_pg
 * connection, so libpq only ever runs on that thread and the loop only sees completions.
 */
#include "tickpool/store/pgr.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/workq.h"
#include "tickpool/store/pg.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MOD "pgr"
/* After a failed connect, queries fail at once for this long instead of each waiting for a
 * connect timeout of its own. */
#define RECONNECT_MS 1000
/* History reads wait at most this long in Postgres, whatever postgres.timeout says: a
 * browser is waiting for the answer. */
#define READ_TIMEOUT_MS 2000

struct tp_pgr {
    struct tp_workq *q;
    char *url;
    int timeout_ms;
    /* Touched by the workq's single thread only. */
    struct tp_pg *pg;
    int64_t down_until_ms;
    bool logged_down;
};

struct job {
    struct tp_pgr *r;
    char *sql;
    int nparams;
    char *params[TP_PGR_MAX_PARAMS];
    int64_t deadline_ms; /* a query still waiting then is not run */
    int err;
    struct tp_pg_result *res;
    tp_pgr_cb cb;
    void *ud;
};

/* Runs on the reader's thread. */
static void work(void *ud)
{
    struct job *j = ud;
    struct tp_pgr *r = j->r;
    char err[256] = "";
    int64_t now = tp_mono_ms();
    if (now > j->deadline_ms) {
        j->err = TP_ETIMEDOUT;
        return;
    }
    if (r->pg == NULL) {
        if (now < r->down_until_ms) {
            j->err = TP_EUNAVAIL;
            return;
        }
        r->pg = tp_pg_connect(r->url, r->timeout_ms, err, sizeof(err));
        if (r->pg == NULL) {
            r->down_until_ms = tp_mono_ms() + RECONNECT_MS;
            if (!r->logged_down)
                tp_log_warn(MOD, "Postgres unreachable for history reads\terror=\"%s\"", err);
            r->logged_down = true;
            j->err = TP_EUNAVAIL;
            return;
        }
        if (r->logged_down)
            tp_log_info(MOD, "Postgres reachable again for history reads");
        r->logged_down = false;
    }
    const char *params[TP_PGR_MAX_PARAMS];
    for (int i = 0; i < j->nparams; i++)
        params[i] = j->params[i];
    j->err = tp_pg_exec_params(r->pg, j->sql, j->nparams, params, &j->res, err, sizeof(err));
    if (j->err != 0 && !tp_pg_ok(r->pg)) {
        tp_pg_close(r->pg);
        r->pg = NULL;
        j->err = TP_EUNAVAIL;
    }
    if (j->err != 0 && j->err != TP_EUNAVAIL)
        tp_log_warn(MOD, "history read failed\terror=\"%s\"", err);
}

/* Runs on the loop. */
static void done(int err, void *ud)
{
    struct job *j = ud;
    if (err == 0)
        err = j->err;
    j->cb(err, err == 0 ? j->res : NULL, j->ud);
    tp_pg_result_free(j->res);
    free(j->sql);
    for (int i = 0; i < j->nparams; i++)
        free(j->params[i]);
    free(j);
}

struct tp_pgr *tp_pgr_new(struct ev_loop *loop, const char *url, int timeout_ms, int max_queued)
{
    struct tp_pgr *r = tp_xcalloc(1, sizeof(*r));
    r->url = tp_xstrdup(url);
    r->timeout_ms = timeout_ms;
    r->q = tp_workq_new(loop, 1, max_queued);
    return r;
}

void tp_pgr_free(struct tp_pgr *r)
{
    if (r == NULL)
        return;
    tp_workq_free(r->q);
    tp_pg_close(r->pg);
    free(r->url);
    free(r);
}

int tp_pgr_query(struct tp_pgr *r, const char *sql, int nparams, const char *const *params,
                 tp_pgr_cb cb, void *ud)
{
    if (r == NULL || sql == NULL || cb == NULL || nparams < 0 || nparams > TP_PGR_MAX_PARAMS)
        return TP_EINVAL;
    struct job *j = tp_xcalloc(1, sizeof(*j));
    j->r = r;
    j->sql = tp_xstrdup(sql);
    j->nparams = nparams;
    for (int i = 0; i < nparams; i++)
        j->params[i] = params[i] != NULL ? tp_xstrdup(params[i]) : NULL;
    j->deadline_ms = tp_mono_ms() + r->timeout_ms;
    j->cb = cb;
    j->ud = ud;
    int rc = tp_workq_submit(r->q, work, done, j);
    if (rc != 0) {
        free(j->sql);
        for (int i = 0; i < nparams; i++)
            free(j->params[i]);
        free(j);
    }
    return rc;
}

/* --- The worker's reader --- */

static size_t slot = SIZE_MAX;

static void on_worker_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    const struct tp_config *cfg = tp_worker_config(w);
    if (cfg->postgres.url[0] == '\0')
        return;
    int t = cfg->postgres.timeout_ms > 0 ? TP_MIN(cfg->postgres.timeout_ms, READ_TIMEOUT_MS)
                                         : READ_TIMEOUT_MS;
    tp_worker_slot_set(w, slot, tp_pgr_new(tp_worker_loop(w), cfg->postgres.url, t, 64));
}

void tp_pgr_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_worker_init, NULL);
}

struct tp_pgr *tp_pgr_of(const struct tp_worker *w)
{
    return slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, slot);
}
