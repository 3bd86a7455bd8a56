/*
 * The Postgres reader: history reads (archived rounds, their bets and payouts) for an event
 * loop that must never block on libpq. One reader is one connection driven by one thread of a
 * tp_workq; a query runs there with a statement timeout and its completion runs on the loop.
 * A Postgres outage costs a history request a fast TP_EUNAVAIL (after a failed connect the
 * reader does not try again for a second), never the loop's time: the bet path does not use it.
 */
#ifndef TP_PGR_H
#define TP_PGR_H

struct ev_loop;
struct tp_pg_result;
struct tp_pgr;
struct tp_worker;

/* Most parameters of one query (they are copied at submission). */
#define TP_PGR_MAX_PARAMS 8

/** Completion on the loop thread: err 0 and the rows (borrowed during the call), or a TP_E*
 * code (TP_EUNAVAIL, TP_ETIMEDOUT, TP_EIO, TP_ECLOSED when the reader was freed) and NULL. */
typedef void (*tp_pgr_cb)(int err, const struct tp_pg_result *res, void *ud);

/**
 * A reader of `url` completing on `loop` (borrowed; call from the loop's thread), with
 * statement_timeout `timeout_ms` and at most `max_queued` waiting queries. It connects lazily,
 * on the first query. Returns the reader (never NULL).
 */
struct tp_pgr *tp_pgr_new(struct ev_loop *loop, const char *url, int timeout_ms, int max_queued);
/** Joins the thread; queries not started complete with TP_ECLOSED. NULL: no-op. */
void tp_pgr_free(struct tp_pgr *r);
/**
 * Queues one statement with `nparams` (<= TP_PGR_MAX_PARAMS) text parameters (a NULL entry is
 * SQL NULL); `sql` and the parameters are copied. Returns 0 (cb runs exactly once, later, on
 * the loop) or TP_EAGAIN when the queue is full, TP_EINVAL (cb is never called).
 */
int tp_pgr_query(struct tp_pgr *r, const char *sql, int nparams, const char *const *params,
                 tp_pgr_cb cb, void *ud);

/** Gives every worker a reader when postgres.url is set (an init hook keeping it in a worker
 * slot for the life of the process). Call once before tp_master_run. */
void tp_pgr_install(void);
/** The worker's reader (borrowed), NULL without postgres.url or tp_pgr_install. */
struct tp_pgr *tp_pgr_of(const struct tp_worker *w);

#endif
