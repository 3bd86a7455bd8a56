/*
 * Postgres write-behind: one writer thread per worker process drains the durable Redis outbox
 * streams (`tp:{bN}:outbox` for every bucket and the global `tp:{g}:outbox`) into Postgres.
 *
 * The thread runs its own ev_loop with its own tp_store and a blocking tp_pg connection. It
 * reads with the consumer group `pgw` (consumer name "<host>:<pid>"), maps a batch of events to
 * rows (users, rounds, grants, bets, payouts and the double-entry ledger, bets being their own
 * debit records), writes them in ONE transaction with INSERT … ON CONFLICT DO NOTHING (idempotent
 * by id), and only after COMMIT XACKs the entries and trims each stream below the group's oldest
 * entry not yet committed (XTRIM MINID). A batch is sized by rows, not entries (TP_PGW_BATCH_ROWS,
 * halved while Postgres's statement timeout cuts batches short); a writer that has caught up
 * reads again only postgres.write_gap after its last read, and one whose reads take a large
 * settlement's credits past a line holds its reads for postgres.settle_yield while it runs;
 * batches holding only bets, grants and admin actions of several writers run side by side. Entries
 * left pending by a dead consumer are claimed again, and a writer re-reads its own pending entries
 * at once after a failure or reconnect, so a kill -9 mid-batch loses nothing and doubles nothing. A
 * Postgres outage only grows the backlog in Redis; the bet path never waits for Postgres.
 *
 * Because committed entries are trimmed after every batch, XLEN of an outbox is its backlog
 * (plus, while several writers overlap, committed entries above another writer's batch in
 * flight) and the id of its first entry dates the oldest unwritten event (metrics
 * outbox_lag_entries/_seconds). The trim relies on the outbox having exactly one consumer group
 * (`pgw`): a second group's unread entries would be trimmed.
 */
#ifndef TP_PGW_H
#define TP_PGW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_config;
struct tp_pgw;
struct tp_buf;

/* Consumer group name on every outbox stream. */
#define TP_PGW_GROUP "pgw"
/* At most this many entries per stream and per read. */
#define TP_PGW_BATCH 500
/* Rows (all tables, ledger included) a batch aims at: each read asks for as many entries as the
 * last batch's rows per entry say fit. A `bets` entry carries up to 128 bets (one row each), a
 * `credits` entry thousands of payouts (3 rows each), so entries alone are no measure of a
 * transaction's size. */
#define TP_PGW_BATCH_ROWS 8192
/* Pending entries idle this long (ms) are taken over from any other consumer (a dead one of
 * this host's at once). */
#define TP_PGW_CLAIM_IDLE_MS 30000

/**
 * Registers worker hooks that start a writer in every worker (kept in the writer's worker slot)
 * and stop it on drain (tp_worker_on_drain). Call once before tp_master_run. Worker 0's writer also
 * publishes the outbox lag metrics (one process reports, so the summed gauge stays right).
 */
void tp_pgw_register(void);

/**
 * Starts a writer thread for `cfg` (borrowed: must outlive the writer). `report_lag`: this
 * writer sets the outbox_lag_* gauges. Returns NULL (logged) when the thread cannot start or
 * redis.url is empty.
 */
struct tp_pgw *tp_pgw_start(const struct tp_config *cfg, bool report_lag);

/**
 * Stops a writer: lets a batch being written commit and be acknowledged, breaks the thread's
 * loop and joins it. Unacknowledged entries stay pending in Redis for the next writer.
 * NULL is a no-op.
 */
void tp_pgw_stop(struct tp_pgw *w);

/* --- Batch mapping (pure; exposed for unit tests) --- */

/* One outbox event: its stream id, the bucket of its stream (-1 = global) and its fields,
 * all borrowed. */
struct tp_pgw_event {
    const char *id;
    int bucket;
    size_t nfields;
    const char *const *keys;
    const char *const *vals;
};

/* Columns of the bets rows, in this order (the bets statements' $1..$8 in pgw_batch.c): id,
 * round_id, user_id, band, stake, idempotency_key, placed_at, balance (balance_after). */
#define TP_PGW_BET_COLS 8

/* Rows of one batch, as JSON arrays of objects per table (migrations/0001_init.sql,
 * 0003_admin_actions.sql and 0004_round_history.sql), but the bets: one Postgres array per
 * column, which `unnest` decodes with ~10 % fewer of Postgres's instructions per bet than
 * json_to_recordset the objects (bench/README.md, Writer, "Session 15"), in the binary format
 * (7 % fewer again than the arrays' text; pgw_batch.c, bet_array_header). */
struct tp_pgw_batch {
    size_t nrows[9];
    struct tp_buf *json[9]; /* users, rounds, round_results, round_seeds, grants, (bets: unused),
                             * payouts, ledger, admin_actions */
    struct tp_buf *bets[TP_PGW_BET_COLS];
    size_t skipped; /* malformed or unknown events (logged, acknowledged) */
    /* For round_opened events without `edges` / `rake_bps` fields: "e1,e2,…" and a decimal
     * (borrowed; set by the caller after init; NULL: such events are skipped). */
    const char *default_edges;
    const char *default_rake_bps;
    /* A round's result or seed waits for the round's own row (true after init): see
     * tp_pgw_batch_sql. The writer clears it after TP_PGW_ROUND_WAITS failed tries. */
    bool wait_for_rounds;
    /* The bets and payouts INSERTs skip rows Postgres already holds (false after init: they
     * fail on one, and the writer writes the batch again with this set; see bets_insert_strict
     * and payouts_strict in pgw_batch.c). The writer sets it from the start for a re-read of
     * its pending entries (a replay). */
    bool skip_existing;
    /* The millisecond part of the stream id of the batch's newest event that added payouts
     * rows (a stream id's first part is Redis's clock at the XADD: when the credits were paid),
     * 0: none. The writer ages it for its settlement yield (pgw_outbox.c, on_read). */
    int64_t credits_id_ms;
};

enum tp_pgw_table {
    TP_PGW_USERS,
    TP_PGW_ROUNDS,
    TP_PGW_ROUND_RESULTS,
    TP_PGW_ROUND_SEEDS,
    TP_PGW_GRANTS,
    TP_PGW_BETS,
    TP_PGW_PAYOUTS,
    TP_PGW_LEDGER,
    TP_PGW_ADMIN_ACTIONS,
    TP_PGW_NTABLES
};

/** Initialises an empty batch. */
void tp_pgw_batch_init(struct tp_pgw_batch *b);
/** Frees a batch's buffers. */
void tp_pgw_batch_deinit(struct tp_pgw_batch *b);
/**
 * Maps one event to rows (grants, rake and breakage also to two ledger rows that sum to zero;
 * a bet's row is its own debit record, a payout's or refund's payouts row its credit's).
 * Returns 0, or TP_EINVAL for a malformed or unknown event (nothing added; counted in
 * `skipped`).
 */
int tp_pgw_batch_add(struct tp_pgw_batch *b, const struct tp_pgw_event *ev);

#endif
