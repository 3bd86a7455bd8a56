/*
 * Internals of the Postgres writer shared by its files (private to module store/pgw):
 *
 *   pgw.c        the writer's life: thread and loop, the step sequence, backoff and health,
 *                outbox lag metrics, worker hooks
 *   pgw_outbox.c the Redis side: consumer groups, claims from dead consumers, XREADGROUP,
 *                XACK + XTRIM MINID after COMMIT
 *   pgw_write.c  the Postgres side: one transaction per batch, event-by-event retry of a
 *                refused batch
 *   pgw_batch.c  pure: outbox events → rows → the statements of a batch's transaction
 *
 * Everything but pgw_batch.c runs on the writer's own thread only, so struct tp_pgw needs no
 * lock; `stop` is the one field another thread (tp_pgw_stop) touches.
 */
#ifndef TP_PGW_INTERNAL_H
#define TP_PGW_INTERNAL_H

#include "tickpool/base/config.h"
#include "tickpool/store/pgw.h"

#include <ev.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_config;
struct tp_pgw_pg;
struct tp_store;
struct tp_store_reply;

/* Claims are looked for this often (ms) while reading. */
#define TP_PGW_CLAIM_EVERY_MS 10000
/* Failed writes in a row (with the backoff: about 2 min) for which a round's result or seed
 * waits for the batch that writes the round; after that it is written without (as before). */
#define TP_PGW_ROUND_WAITS 15

/* A settlement's credits (payouts rows) read in a streak past this many rows make the writer
 * hold its reads for postgres.settle_yield (tp_pgw_settle_yield): a settlement that pays more
 * than a few pages' winners (a page pays ~150-500, scripts/lua/README.md "Game engine"). */
#define TP_PGW_YIELD_ROWS 1000
/* postgres.settle_yield's maximum must stay below TP_PGW_CLAIM_IDLE_MS: a held batch stays
 * pending under its writer, and any other writer claims entries idle longer. */
_Static_assert(TP_PGW_SETTLE_YIELD_MAX_MS < TP_PGW_CLAIM_IDLE_MS,
               "a settlement yield as long as the claim idle time lets another writer "
               "claim the held batch");
/* Batches with credits less than this apart (ms; the hold's end counts as one) are one streak:
 * one settlement, held once, then written back to back. */
#define TP_PGW_YIELD_STREAK_MS 2000

/* The writer's state for its settlement yield (tp_pgw_settle_yield). */
struct tp_pgw_yield {
    int64_t last_ms; /* tp_mono_ms of the streak's last credits batch or hold end, 0: none */
    int64_t rows;    /* fresh credits rows read in the streak (old ones not counted) */
    bool held;       /* the streak has been held once */
};

/* --- Writer state --- */

/* The main sequence (see pgw.c): one phase at a time, one command batch in flight. */
enum tp_pgw_phase { TP_PGW_PH_GROUPS, TP_PGW_PH_CLAIM, TP_PGW_PH_READ, TP_PGW_PH_ACK };

struct tp_pgw {
    const struct tp_config *cfg;
    bool report_lag;
    pthread_t thread;
    bool started;
    struct ev_loop *loop;
    struct tp_store *store;
    struct tp_pgw_pg *pg;
    ev_async stop_async;
    ev_timer retry;    /* backoff before the next step */
    ev_timer gap;      /* the rest of postgres.write_gap before the next read */
    ev_timer periodic; /* claims and lag metrics */
    ev_prepare flush;  /* writes the commands of the iteration before the loop polls */
    atomic_bool stop;

    int nstreams;
    char **streams; /* [0] = global outbox, [1 + N] = bucket N's outbox */
    char consumer[160];
    char host[128];
    char edges[200];   /* game.band_edges_bps as "e1,e2,…" (for round events without them) */
    char rake_bps[16]; /* game.rake_bps */

    enum tp_pgw_phase phase;
    int outstanding;     /* replies awaited in the current phase */
    bool pending_mode;   /* the next read re-reads our own pending entries (XREADGROUP … 0) */
    bool trim_all;       /* the next empty read trims every stream (at start, after a failure) */
    uint64_t reconnects; /* the store's count when last stepped: a change means a new Redis */
    bool claim_again;    /* the last claim took a full page: claim again after writing it */
    bool busy;           /* a command of the main sequence is in flight */
    int backoff_ms;
    bool outage; /* an error was logged and not yet followed by a success */
    int64_t last_claim_ms;
    int read_count;             /* entries per stream the next read asks for (1..TP_PGW_BATCH) */
    int read_asked;             /* entries per stream the read in flight asked for */
    int64_t read_not_before_ms; /* tp_mono_ms: the next new-entries read waits until then */
    int target_rows; /* rows a batch aims at: TP_PGW_BATCH_ROWS, halved after a timeout */
    int round_waits; /* failed writes in a row that waited for a round (TP_PGW_ROUND_WAITS) */
    struct tp_pgw_yield yield; /* the settlement yield (tp_pgw_settle_yield) */
    bool yielding; /* read_not_before_ms is a settlement yield (held in pending mode too) */

    /* Lag probes (their own small sequence, independent of the main one). */
    int lag_outstanding;
    int64_t lag_entries;
    int64_t lag_oldest_ms;
    /* The parked entries' count (worker 0: tickpool_writer_entries_parked, every few s). */
    int parked_outstanding;
    bool parked_failed;
    int64_t parked_entries;
    int64_t last_parked_ms;

    /* Ids acknowledged by the current TP_PGW_PH_ACK, per stream. */
    char ***ack_ids;
    size_t *ack_n;
    /* Entries of the current batch refused (tp_pgw_reject): parked, then acknowledged. */
    struct tp_pgw_rejected *rejected;
    bool park_failed; /* a park of the current ack phase failed (pgw_outbox.c, park_failed) */
};

/* --- Sequence and health (pgw.c) --- */

/** Runs the next command of the main sequence unless one is in flight or a backoff runs. */
void tp_pgw_step(struct tp_pgw *w);
/** Logs `what` failed (once per outage) and steps again after a doubling backoff. */
void tp_pgw_fail_soon(struct tp_pgw *w, const char *what, int err);
/** Ends an outage (logged once) and resets the backoff. */
void tp_pgw_succeeded(struct tp_pgw *w);

/* --- Redis side (pgw_outbox.c): each phase's commands; their replies step the sequence --- */

/** TP_PGW_PH_GROUPS: XGROUP CREATE … MKSTREAM on every stream, then TP_PGW_PH_CLAIM. */
void tp_pgw_create_groups(struct tp_pgw *w);
/** TP_PGW_PH_CLAIM: XPENDING per stream and XCLAIM of dead or idle consumers' entries (then
 * pending mode), then TP_PGW_PH_READ. */
void tp_pgw_claim(struct tp_pgw *w);
/** TP_PGW_PH_READ: XREADGROUP of our pending entries (pending mode) or of new ones (BLOCK);
 * the reply is written to Postgres and acknowledged, or retried after a backoff. */
void tp_pgw_read(struct tp_pgw *w);
/**
 * The XTRIM MINID threshold of a stream (pure): min(smallest pending id, last-delivered id + 1),
 * or last-delivered + 1 when `npending` is 0; ids as "ms-seq". Writes it to `out`; returns 0,
 * TP_EPROTO for an unreadable id, TP_ETOOBIG when `out` is too small. Why it is safe:
 * on_trim_pending in pgw_outbox.c.
 */
int tp_pgw_trim_minid(const char *last_delivered, long long npending, const char *smallest,
                      char *out, size_t outlen);
/**
 * Entries per stream for the next read (pure), so that a batch maps to about `target_rows` rows:
 * the last batch had `entries` entries from `streams` streams mapping to `rows` rows (an entry
 * mapping to none still counts as one). Returns 1..TP_PGW_BATCH; `current` when `entries` is 0.
 */
int tp_pgw_read_count(int current, size_t entries, size_t rows, int streams, int target_rows);
/**
 * The settlement yield (pure): a fresh read at `now_ms` made a batch with `credit_rows` payouts
 * rows. Returns how long (ms) the writer holds it and every read: `yield_ms` when this batch
 * takes its streak of credits past TP_PGW_YIELD_ROWS, the streak not yet held; else 0 (write
 * it). A streak is credits batches less than TP_PGW_YIELD_STREAK_MS apart, the hold included, so
 * a settlement is held once and its backlog then written back to back. Batches without credits
 * leave it as is. `credits_age_ms`: the writer's wall clock (tp_now_ms) minus the millisecond
 * part of the batch's newest credits entry's stream id; a batch whose credits are `yield_ms` old
 * or older is not held and its rows do not count (it continues the streak all the same): they
 * are a backlog (after a Postgres outage, a restart, a hold), not a settlement running now, and
 * holding it would only delay it.
 */
int64_t tp_pgw_settle_yield(struct tp_pgw_yield *y, int64_t now_ms, size_t credit_rows,
                            int64_t credits_age_ms, int64_t yield_ms);
/**
 * Refuses one outbox entry (malformed, or refused by Postgres): logs it at ERROR with all its
 * fields, and keeps it for an operator: the ack phase copies it to "<stream>:rejected" (its
 * fields, then src_stream, src_id, error) and acknowledges it in one step (scripts/lua/park.lua),
 * then counts it (tickpool_writer_events_refused_total; docs/operations.md, "Rejected outbox
 * entries").
 * `ev` NULL: an entry deleted from the stream, nothing to keep (acknowledged as it is).
 */
void tp_pgw_reject(struct tp_pgw *w, int stream, const char *id, const struct tp_pgw_event *ev,
                   const char *error);
/** Frees the ids collected for acknowledgement (and trimming) and the rejected entries. */
void tp_pgw_free_acks(struct tp_pgw *w);
/** True for a failed command or an error reply. */
bool tp_pgw_reply_is_error(int err, const struct tp_store_reply *r);

/*
 * Calls fn for every entry of an XREADGROUP reply (nil: BLOCK timed out, or
 * [[stream, [[id, [k, v, …] | nil], …]], …]); a pending entry deleted from the stream comes back
 * with nil fields and is passed with ev == NULL. `only` >= 0 visits that entry only (by
 * position). Returns the number of entries.
 */
typedef void (*tp_pgw_event_fn)(struct tp_pgw *w, int stream, const char *id,
                                const struct tp_pgw_event *ev, void *ud);
size_t tp_pgw_each_event(struct tp_pgw *w, const struct tp_store_reply *r, long only,
                         tp_pgw_event_fn fn, void *ud);

/* --- Postgres side (pgw_write.c) --- */

/**
 * Writes batch `b` (the `total` entries of XREADGROUP reply `r`) in one transaction, connecting
 * first if needed; a batch refused on a healthy connection is retried event by event, events
 * still refused are logged and count as written. Returns 0 (ack the entries) or a TP_E* code
 * with `err` set (nothing may be acked); a broken connection is closed for the next try.
 */
int tp_pgw_write(struct tp_pgw *w, const struct tp_store_reply *r, size_t total,
                 struct tp_pgw_batch *b, char *err, size_t errlen);

/* --- Batch → SQL (pgw_batch.c; pure) --- */

/* One statement of a batch's transaction: its SQL and its parameters. */
struct tp_pgw_stmt {
    const char *sql; /* a fixed text: prepared by its address (tp_pg_exec_prepared) */
    /* $1..$nparams (none for BEGIN, the lock, COMMIT): a table's JSON array (text), or the
     * bets' column arrays (binary; all eight for the INSERT, id and round_id for the
     * late-status UPDATE); borrowed from the batch. */
    const char *params[TP_PGW_BET_COLS];
    int nparams;
    bool binary; /* the params are binary, of these lengths in bytes */
    int lengths[TP_PGW_BET_COLS];
    /* A check: a row returned (a round id) means the round is not in Postgres yet, and the
     * batch is rolled back and written again later (TP_EAGAIN). */
    bool must_be_empty;
};

/* BEGIN, the advisory lock, up to two statements per table and two checks, COMMIT. */
#define TP_PGW_MAX_STMTS (5 + 2 * TP_PGW_NTABLES)

/** Rows of a batch, all tables. */
size_t tp_pgw_batch_rows(const struct tp_pgw_batch *b);

/**
 * The statements of `b`'s transaction, in order, into out[TP_PGW_MAX_STMTS]: BEGIN, the
 * advisory lock (shared when the batch only inserts rows no other batch's statements read:
 * bets, grants, admin actions and their ledger; else exclusive, which serialises it with every
 * writer's batch), each table's statements with the table's JSON array (the bets: their column
 * arrays) as parameters (tables without rows skipped), COMMIT. Closes the arrays (repeat calls
 * give the same statements); the statements borrow from `b`. Returns their number.
 */
size_t tp_pgw_batch_sql(struct tp_pgw_batch *b, struct tp_pgw_stmt *out);
/** A canonical non-negative decimal below 10^18 (what the Lua scripts write). */
bool tp_pgw_is_uint(const char *s);
/** Appends the JSON writer's bytes for the row {k0: v0, …} (n pairs in kv, NULL values as
 * null): what pgw_batch.c's own row writer must give, for test_pgw. */
void tp_pgw_row_generic(struct tp_buf *out, size_t n, const char *const *kv);

#endif
