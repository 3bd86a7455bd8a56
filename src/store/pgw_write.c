/*
 * Postgres writer, the Postgres side: a batch goes into Postgres in one transaction (blocking;
 * the writer's thread only), built by tp_pgw_batch_sql. Every INSERT but the first try's bets
 * INSERT is ON CONFLICT DO NOTHING keyed by the event's id, and that one fails on a row already
 * there and is written again as such an INSERT, so writing a batch twice (crash between COMMIT
 * and XACK, a claim race) changes nothing; the caller acknowledges the entries only after this
 * returns 0.
 */
#include "pgw_internal.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgw_pg.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "pgw"

/* Writes a batch in one transaction. Returns 0 after COMMIT, or a TP_E* code (rolled back).
 * The statements go out in pipelines, one round trip each: a pipeline ends after a check (its
 * rows decide whether the rest may run) and at COMMIT, so a batch of bets alone (BEGIN, the
 * lock, the INSERT, COMMIT) is one round trip instead of four; the writer's thread and Postgres
 * both paid for every round trip's wake-up (bench/README.md "Writer", session 12). */
static int write_batch(struct tp_pgw_pg *pg, struct tp_pgw_batch *b, char *err, size_t errlen)
{
    struct tp_pgw_stmt stmts[TP_PGW_MAX_STMTS];
    size_t n = tp_pgw_batch_sql(b, stmts);
    for (size_t first = 0; first < n;) {
        /* Every statement is one of pgw_batch.c's fixed texts: prepared once per connection
         * (planning was most of Postgres's time per small batch; bench/README.md "Writer"). */
        const char *sqls[TP_PG_PIPELINE_MAX];
        const char *const *params[TP_PG_PIPELINE_MAX];
        const int *lengths[TP_PG_PIPELINE_MAX];
        int nparams[TP_PG_PIPELINE_MAX];
        size_t k = 0;
        do {
            sqls[k] = stmts[first + k].sql;
            params[k] = stmts[first + k].params;
            lengths[k] = stmts[first + k].binary ? stmts[first + k].lengths : NULL;
            nparams[k] = stmts[first + k].nparams;
            k++;
        } while (first + k < n && k < TP_PG_PIPELINE_MAX && !stmts[first + k - 1].must_be_empty);
        bool check = stmts[first + k - 1].must_be_empty;
        struct tp_pgw_rows rows = {0};
        size_t failed = 0;
        int rc = tp_pgw_pg_pipeline_fixed(pg, k, sqls, nparams, params, lengths,
                                          check ? &rows : NULL, &failed, err, errlen);
        if (rc == 0 && rows.nrows > 0) {
            snprintf(err, errlen,
                     "round %s is not in Postgres yet: its result waits for the batch that "
                     "writes it",
                     tp_pgw_rows_get(&rows, 0, 0) ? tp_pgw_rows_get(&rows, 0, 0) : "?");
            rc = TP_EAGAIN;
            failed = k - 1; /* the check ran: the transaction is open, holding the lock */
        }
        tp_pgw_rows_free(&rows);
        if (rc != 0) {
            if (first + failed > 0) /* a failed BEGIN opened nothing to roll back */
                tp_pgw_pg_exec(pg, "ROLLBACK", 0, NULL, NULL, 0);
            return rc;
        }
        first += k;
    }
    return 0;
}

/* Maps one event into the batch `ud` (no ack bookkeeping). */
static void map_only(struct tp_pgw *w, int stream, const char *id, const struct tp_pgw_event *ev,
                     void *ud)
{
    (void)w, (void)stream, (void)id;
    if (ev != NULL)
        tp_pgw_batch_add(ud, ev);
}

/* Refuses an event Postgres refused (tp_pgw_reject: logged, parked, then acknowledged). */
static void reject_event(struct tp_pgw *w, int stream, const char *id,
                         const struct tp_pgw_event *ev, void *ud)
{
    tp_pgw_reject(w, stream, id, ev, (const char *)ud);
}

/* Whether Postgres refused an event for what it holds ("[SQLSTATE] …", pg.c): a data exception
 * (22: a cast, a bad literal), an integrity constraint (23: a CHECK) or a limit (54: a row too
 * big). Anything else (42P01 a missing table before `tickpool migrate`, 42501 a revoked grant,
 * 25006 a read-only standby, 53100 a full disk) is the database's state: refusing the event for
 * it would acknowledge the whole outbox, one entry at a time, without a row. */
static bool refused_for_its_data(const char *err)
{
    return err[0] == '[' && (strncmp(err + 1, "22", 2) == 0 || strncmp(err + 1, "23", 2) == 0 ||
                             strncmp(err + 1, "54", 2) == 0);
}

/*
 * A batch Postgres refused while the connection is fine (a CHECK or type error: one bad event,
 * not an outage) is written again one event per transaction, so one poisoned entry cannot stop
 * the outbox forever; each event Postgres still refuses for its data is refused (tp_pgw_reject:
 * logged with all its fields, parked for an operator, acknowledged). Returns 0, or the error of
 * a connection lost meanwhile, or TP_EIO when an event is refused for the database's state
 * (refused_for_its_data); then nothing is acknowledged and the batch is read again later.
 */
static int write_one_by_one(struct tp_pgw *w, const struct tp_store_reply *r, size_t total,
                            char *err, size_t errlen)
{
    for (size_t i = 0; i < total; i++) {
        struct tp_pgw_batch one;
        tp_pgw_batch_init(&one);
        one.default_edges = w->edges;
        one.default_rake_bps = w->rake_bps;
        one.wait_for_rounds = w->round_waits < TP_PGW_ROUND_WAITS;
        /* A bet or credit Postgres already holds is skipped, never refused (tp_pgw_write). */
        one.skip_existing = true;
        tp_pgw_each_event(w, r, (long)i, map_only, &one);
        char perr[256] = "";
        int rc = write_batch(w->pg, &one, perr, sizeof(perr));
        tp_pgw_batch_deinit(&one);
        if (rc != 0 && !tp_pgw_pg_ok(w->pg))
            return rc;
        if (rc == TP_ETIMEDOUT || rc == TP_EAGAIN)
            return rc;
        if (rc != 0 && !refused_for_its_data(perr)) {
            /* The database, not the event: every event would be refused alike. */
            snprintf(err, errlen, "%s", perr);
            return TP_EIO;
        }
        if (rc != 0)
            tp_pgw_each_event(w, r, (long)i, reject_event, perr);
    }
    return 0;
}

int tp_pgw_write(struct tp_pgw *w, const struct tp_store_reply *r, size_t total,
                 struct tp_pgw_batch *b, char *err, size_t errlen)
{
    int rc = TP_EUNAVAIL;
    snprintf(err, errlen, "Postgres unreachable");
    if (w->pg == NULL)
        w->pg = tp_pgw_pg_open(&w->cfg->postgres);
    if (w->pg != NULL) {
        rc = write_batch(w->pg, b, err, errlen);
        if (rc != 0 && strncmp(err, "[23505]", 7) == 0 && !b->skip_existing &&
            tp_pgw_pg_ok(w->pg)) {
            /* unique_violation: a fresh batch's bets or payouts INSERT met a row Postgres
             * already holds (a claim race: another writer wrote entries it claimed from us; a
             * Redis restart that lost the read itself; a key it holds under another id; a
             * credit twice in the batch; pgw_batch.c, bets_insert_strict, payouts_strict).
             * Pending re-reads never get here: they skip from the start (pgw_outbox.c,
             * on_read). Rolled back, so the same batch is written again skipping such rows:
             * what writing it that way at once gives. */
            tp_log_info(MOD,
                        "a batch met rows already in Postgres; writing it again skipping "
                        "them\terror=\"%s\"",
                        err);
            tp_metrics_inc(TP_METRIC_WRITER_BATCHES_REDONE_TOTAL);
            b->skip_existing = true;
            rc = write_batch(w->pg, b, err, errlen);
        }
        if (rc != 0 && rc != TP_ETIMEDOUT && rc != TP_EAGAIN && tp_pgw_pg_ok(w->pg)) {
            tp_log_warn(MOD, "Postgres refused a batch, retrying event by event\terror=\"%s\"",
                        err);
            rc = write_one_by_one(w, r, total, err, errlen);
        }
        if (rc != 0 && !tp_pgw_pg_ok(w->pg)) {
            tp_pgw_pg_close(w->pg);
            w->pg = NULL;
        }
    }
    return rc;
}
