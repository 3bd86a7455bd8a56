/*
 * Postgres write-behind thread (see include/tickpool/store/pgw.h for the contract).
 *
 * The thread is a small state machine on its own ev_loop, driven by store callbacks:
 *
 *   groups  → XGROUP CREATE <stream> pgw 0 MKSTREAM on every stream (BUSYGROUP is fine)
 *   claim   → XPENDING per stream; entries of dead local consumers (same host, pid gone) or idle
 *             ≥ TP_PGW_CLAIM_IDLE_MS on another consumer are XCLAIMed (JUSTID) to us, and we
 *             switch to "pending" mode
 *   read    → pending mode: XREADGROUP … STREAMS … 0 (our own pending entries, no BLOCK) until
 *             none is left; otherwise XREADGROUP … BLOCK … STREAMS … > (new entries)
 *   write   → map the entries to rows, one Postgres transaction (blocking; this thread only)
 *   ack     → after COMMIT: XACK + XDEL per stream; then read again
 *
 * A failed write (Postgres down, statement error) drops the in-memory batch and re-reads our
 * pending entries after a backoff, so a batch is always rebuilt from Redis, never from memory
 * that might diverge from it. Every INSERT is ON CONFLICT DO NOTHING keyed by the event's id,
 * so writing a batch twice (crash between COMMIT and XACK, a claim race) changes nothing.
 */
#include "tickpool/store/pgw.h"
#include "tickpool/store/pgw_pg.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/net/worker.h"

#include <ev.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "pgw"
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 10000
#define CLAIM_EVERY_MS 10000
#define LAG_EVERY_MS 1000

/* --- Batch mapping --- */

static const char *field(const struct tp_pgw_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nfields; i++)
        if (ev->keys[i] != NULL && strcmp(ev->keys[i], key) == 0)
            return ev->vals[i];
    return NULL;
}

/* A canonical non-negative decimal below 10^18 (what the Lua scripts write). */
static bool is_uint(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 18 || (s[0] == '0' && s[1] != '\0'))
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* Grant ids, usernames, hashes: 1..128 bytes of [A-Za-z0-9_.:-]. */
static bool is_ident(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == ':' || *p == '-'))
            return false;
    return true;
}

void tp_pgw_batch_init(struct tp_pgw_batch *b)
{
    memset(b, 0, sizeof(*b));
    for (int t = 0; t < TP_PGW_NTABLES; t++) {
        b->json[t] = tp_xmalloc(sizeof(struct tp_buf));
        tp_buf_init(b->json[t]);
        tp_buf_puts(b->json[t], "[");
    }
}

void tp_pgw_batch_deinit(struct tp_pgw_batch *b)
{
    for (int t = 0; t < TP_PGW_NTABLES; t++) {
        if (b->json[t] != NULL) {
            tp_buf_deinit(b->json[t]);
            free(b->json[t]);
            b->json[t] = NULL;
        }
    }
}

/* Appends one row object {k0: v0, …} (all values as JSON strings or null; Postgres casts them
 * to the column types in json_populate_recordset). */
static void row(struct tp_pgw_batch *b, enum tp_pgw_table t, size_t n, const char *const *kv)
{
    struct tp_buf *out = b->json[t];
    if (b->nrows[t]++ > 0)
        tp_buf_puts(out, ",");
    struct tp_wr w;
    tp_wr_init(&w, out, TP_FMT_JSON);
    tp_wr_map(&w, n);
    for (size_t i = 0; i < n; i++) {
        tp_wr_key(&w, kv[2 * i]);
        if (kv[2 * i + 1] == NULL)
            tp_wr_null(&w);
        else
            tp_wr_str(&w, kv[2 * i + 1]);
    }
}

/* Two ledger rows of one entry: `from` gives `amount`, `to` receives it (sum zero). A zero
 * amount writes nothing (the ledger refuses zero rows). */
static void ledger(struct tp_pgw_batch *b, const char *entry, const char *kind, const char *from,
                   const char *to, const char *amount)
{
    char neg[32];
    if (strcmp(amount, "0") == 0)
        return;
    if (amount[0] == '-')
        snprintf(neg, sizeof(neg), "%s", amount + 1);
    else
        snprintf(neg, sizeof(neg), "-%s", amount);
    const char *a[] = {"entry_id", entry, "account", from, "amount", neg, "kind", kind};
    row(b, TP_PGW_LEDGER, 4, a);
    const char *c[] = {"entry_id", entry, "account", to, "amount", amount, "kind", kind};
    row(b, TP_PGW_LEDGER, 4, c);
}

static int add_money(struct tp_pgw_batch *b, const struct tp_pgw_event *ev, const char *type)
{
    const char *user = field(ev, "user_id"), *ts = field(ev, "ts");
    char entry[192], acct_user[40], acct_round[40];
    if (!is_uint(user) || !is_uint(ts))
        return TP_EINVAL;
    snprintf(acct_user, sizeof(acct_user), "user:%s", user);

    if (strcmp(type, "grant") == 0) {
        const char *gid = field(ev, "grant_id"), *amount = field(ev, "amount");
        if (!is_ident(gid) || !is_uint(amount) || strcmp(amount, "0") == 0)
            return TP_EINVAL;
        const char *kv[] = {"id", gid, "user_id", user, "amount", amount, "ts", ts};
        row(b, TP_PGW_GRANTS, 4, kv);
        snprintf(entry, sizeof(entry), "grant:%s", gid);
        ledger(b, entry, "grant", "system", acct_user, amount);
        return 0;
    }
    const char *bet = field(ev, "bet_id"), *round = field(ev, "round_id");
    if (!is_uint(bet) || !is_uint(round))
        return TP_EINVAL;
    snprintf(acct_round, sizeof(acct_round), "round:%s", round);
    if (strcmp(type, "bet") == 0) {
        const char *band = field(ev, "band"), *stake = field(ev, "stake");
        /* The idempotency key, when the bet script sends it; else a per-bet placeholder (the
         * table wants one, unique per player). */
        const char *key = field(ev, "idem_key");
        char key_buf[48];
        if (key == NULL || key[0] == '\0' || strlen(key) > 128) {
            snprintf(key_buf, sizeof(key_buf), "bet:%s", bet);
            key = key_buf;
        }
        if (!is_uint(band) || !is_uint(stake) || strcmp(stake, "0") == 0)
            return TP_EINVAL;
        const char *kv[] = {"id",        bet,  "user_id", user,  "round_id",        round,
                            "band",      band, "stake",   stake, "idempotency_key", key,
                            "placed_at", ts};
        row(b, TP_PGW_BETS, 7, kv);
        snprintf(entry, sizeof(entry), "bet:%s", bet);
        ledger(b, entry, "bet", acct_user, acct_round, stake);
        return 0;
    }
    /* payout | refund */
    const char *amount = field(ev, "amount");
    if (!is_uint(amount))
        return TP_EINVAL;
    const char *kind = strcmp(type, "payout") == 0 ? "win" : "refund";
    snprintf(entry, sizeof(entry), "%s:%s", type, bet);
    const char *kv[] = {"id",       entry, "bet_id", bet,    "user_id", user,
                        "round_id", round, "amount", amount, "kind",    kind};
    row(b, TP_PGW_PAYOUTS, 6, kv);
    ledger(b, entry, type, acct_round, acct_user, amount);
    return 0;
}

/* Appends "{e1,e2,…}" (a Postgres int[] literal) of the comma list `edges` into out[n]. */
static bool edges_literal(const char *edges, char *out, size_t n)
{
    size_t len = strlen(edges);
    if (len + 3 > n)
        return false;
    for (const char *p = edges; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == ','))
            return false;
    snprintf(out, n, "{%s}", edges);
    return true;
}

int tp_pgw_batch_add(struct tp_pgw_batch *b, const struct tp_pgw_event *ev)
{
    const char *type = field(ev, "type");
    int rc = TP_EINVAL;
    if (type == NULL) {
        rc = TP_EINVAL;
    } else if (strcmp(type, "grant") == 0 || strcmp(type, "bet") == 0 ||
               strcmp(type, "payout") == 0 || strcmp(type, "refund") == 0) {
        rc = ev->bucket >= 0 ? add_money(b, ev, type) : TP_EINVAL;
    } else if (strcmp(type, "house") == 0) {
        /* A bucket's share of rake + breakage: Redis bookkeeping per bucket only. The ledger
         * moves the round's rake and breakage to the house once, from the receipt. */
        const char *round = field(ev, "round_id"), *amount = field(ev, "amount");
        bool amount_ok =
            amount != NULL &&
            (is_uint(amount) || (amount[0] == '-' && amount[1] != '0' && is_uint(amount + 1)));
        rc = ev->bucket >= 0 && is_uint(round) && amount_ok ? 0 : TP_EINVAL;
    } else if (strcmp(type, "round_opened") == 0) {
        const char *id = field(ev, "round_id"), *o = field(ev, "opens_at");
        const char *l = field(ev, "locks_at"), *c = field(ev, "closes_at");
        const char *h = field(ev, "seed_hash"), *edges = field(ev, "edges");
        const char *rake = field(ev, "rake_bps");
        char lit[256];
        if (edges == NULL)
            edges = b->default_edges;
        if (rake == NULL)
            rake = b->default_rake_bps;
        if (is_uint(id) && is_uint(o) && is_uint(l) && is_uint(c) && is_ident(h) && edges != NULL &&
            edges_literal(edges, lit, sizeof(lit)) && is_uint(rake)) {
            const char *kv[] = {"id",        id, "opens_at",       o,   "locks_at", l,
                                "closes_at", c,  "band_edges_bps", lit, "rake_bps", rake,
                                "seed_hash", h};
            row(b, TP_PGW_ROUNDS, 7, kv);
            rc = 0;
        }
    } else if (strcmp(type, "round_settled") == 0 || strcmp(type, "round_cancelled") == 0) {
        static const char *names[] = {"total",    "winning_stake", "rake",
                                      "breakage", "payouts",       "refunds"};
        /* Known once the round got that far; absent (SQL NULL) for an early cancel. */
        static const char *optional[] = {"lock_price", "close_price", "winning_band", "seed"};
        const char *id = field(ev, "round_id");
        const char *kv[2 * 12] = {"id", id, "state", type + 6};
        bool ok = is_uint(id);
        for (int i = 0; i < 6; i++) {
            kv[4 + 2 * i] = names[i];
            kv[5 + 2 * i] = field(ev, names[i]);
            ok = ok && is_uint(kv[5 + 2 * i]);
        }
        for (int i = 0; i < 4; i++) {
            const char *v = field(ev, optional[i]);
            kv[16 + 2 * i] = optional[i];
            kv[17 + 2 * i] = v;
            ok = ok && (v == NULL || (i < 3 ? is_uint(v) : is_ident(v)));
        }
        if (ok) {
            row(b, TP_PGW_ROUND_RESULTS, 12, kv);
            /* The round's stakes not paid out go to the house: rake and breakage. */
            char entry[64], acct_round[40];
            snprintf(acct_round, sizeof(acct_round), "round:%s", id);
            snprintf(entry, sizeof(entry), "rake:%s", id);
            ledger(b, entry, "rake", acct_round, "house", field(ev, "rake"));
            snprintf(entry, sizeof(entry), "breakage:%s", id);
            ledger(b, entry, "breakage", acct_round, "house", field(ev, "breakage"));
            rc = 0;
        }
    } else if (strcmp(type, "user") == 0) {
        /* scripts/lua/signup.lua: user_id, username, pw_hash, created_at. The hash is kept so
         * the system of record can restore accounts; it is only ever passed as a parameter. */
        const char *id = field(ev, "user_id"), *name = field(ev, "username");
        const char *ts = field(ev, "created_at"), *pw = field(ev, "pw_hash");
        if (is_uint(id) && is_ident(name) && is_uint(ts) && pw != NULL && strlen(pw) < 512) {
            const char *kv[] = {"id", id, "username", name, "password_hash", pw, "ts", ts};
            row(b, TP_PGW_USERS, 4, kv);
            rc = 0;
        }
    }
    if (rc != 0)
        b->skipped++;
    return rc;
}

/* --- SQL --- */

/*
 * Statements per table (up to two), each taking the batch's JSON array of that table as $1,
 * against migrations/0001_init.sql. DISTINCT ON removes duplicates within the batch (a
 * repeated entry, a claim race); ON CONFLICT DO NOTHING makes a replayed batch a no-op, and
 * the UPDATEs only move state forward. Order matters inside the transaction: rounds before
 * their results, bets before the payouts that mark them won or refunded.
 */
static const char *const table_sql[TP_PGW_NTABLES][2] = {
    [TP_PGW_USERS] = {"INSERT INTO users (id, username, password_hash, created_at) "
                      "SELECT DISTINCT ON (id) id, username, password_hash, "
                      "to_timestamp(ts / 1000.0) FROM json_to_recordset($1::json) AS x(id "
                      "bigint, username text, password_hash text, ts bigint) "
                      "ON CONFLICT DO NOTHING"},
    [TP_PGW_ROUNDS] = {"INSERT INTO rounds (id, state, opens_at, locks_at, closes_at, "
                       "band_edges_bps, rake_bps, seed_hash) SELECT DISTINCT ON (id) id, 'open', "
                       "opens_at, locks_at, closes_at, band_edges_bps::int[], rake_bps, seed_hash "
                       "FROM json_to_recordset($1::json) AS x(id bigint, opens_at bigint, "
                       "locks_at bigint, closes_at bigint, band_edges_bps text, rake_bps int, "
                       "seed_hash text) ON CONFLICT DO NOTHING"},
    [TP_PGW_ROUND_RESULTS] =
        {"UPDATE rounds r SET state = x.state, total = x.total, winning_stake = x.winning_stake, "
         "rake = x.rake, breakage = x.breakage, payouts = x.payouts, refunds = x.refunds, "
         "lock_price = x.lock_price, close_price = x.close_price, "
         "winning_band = x.winning_band, seed = x.seed, "
         "settled_at = (extract(epoch FROM now()) * 1000)::bigint "
         "FROM json_to_recordset($1::json) AS x(id bigint, state text, total bigint, "
         "winning_stake bigint, rake bigint, breakage bigint, payouts bigint, refunds bigint, "
         "lock_price bigint, close_price bigint, winning_band smallint, seed text) "
         "WHERE r.id = x.id AND r.state NOT IN ('settled', 'cancelled')",
         /* Bets of a settled round without a payout lost (a payout applied later wins). */
         "UPDATE bets b SET status = 'lost' FROM json_to_recordset($1::json) AS x(id bigint, "
         "state text) WHERE b.round_id = x.id AND x.state = 'settled' AND b.status = 'pending'"},
    [TP_PGW_GRANTS] = {"INSERT INTO grants (id, user_id, amount, created_at) "
                       "SELECT DISTINCT ON (id) id, user_id, amount, to_timestamp(ts / 1000.0) "
                       "FROM json_to_recordset($1::json) AS x(id text, user_id bigint, "
                       "amount bigint, ts bigint) ON CONFLICT DO NOTHING"},
    [TP_PGW_BETS] = {"INSERT INTO bets (id, user_id, round_id, band, stake, idempotency_key, "
                     "placed_at) SELECT DISTINCT ON (id) id, user_id, round_id, band, stake, "
                     "idempotency_key, placed_at FROM json_to_recordset($1::json) AS x(id text, "
                     "user_id bigint, round_id bigint, band smallint, stake bigint, "
                     "idempotency_key text, placed_at bigint) ON CONFLICT DO NOTHING",
                     /* A bet written after its round's result or its payout (both sit in
                      * other streams, drained in any order after a backlog) takes its final
                      * status now: the UPDATEs of those events found no row to mark. */
                     "UPDATE bets b SET status = CASE WHEN p.kind = 'win' THEN 'won' "
                     "WHEN p.kind IS NOT NULL THEN 'refunded' ELSE 'lost' END, "
                     "payout = coalesce(p.amount, 0) FROM json_to_recordset($1::json) AS "
                     "x(id text) LEFT JOIN payouts p ON p.bet_id = x.id WHERE b.id = x.id AND "
                     "b.status = 'pending' AND (p.bet_id IS NOT NULL OR EXISTS (SELECT 1 FROM "
                     "rounds r WHERE r.id = b.round_id AND r.state = 'settled'))"},
    [TP_PGW_PAYOUTS] =
        {"INSERT INTO payouts (id, bet_id, user_id, round_id, amount, kind) "
         "SELECT DISTINCT ON (id) id, bet_id, user_id, round_id, amount, kind "
         "FROM json_to_recordset($1::json) AS x(id text, bet_id text, user_id bigint, "
         "round_id bigint, amount bigint, kind text) ON CONFLICT DO NOTHING",
         "UPDATE bets b SET status = CASE x.kind WHEN 'win' THEN 'won' ELSE 'refunded' END, "
         "payout = x.amount FROM json_to_recordset($1::json) AS x(bet_id text, amount bigint, "
         "kind text) WHERE b.id = x.bet_id"},
    [TP_PGW_LEDGER] = {"INSERT INTO ledger (entry_id, account, amount, kind) "
                       "SELECT DISTINCT ON (entry_id, account) entry_id, account, amount, kind "
                       "FROM json_to_recordset($1::json) AS x(entry_id text, account text, "
                       "amount bigint, kind text) ON CONFLICT DO NOTHING"},
};

/* Writes a batch in one transaction. Returns 0 after COMMIT, or a TP_E* code (rolled back). */
static int write_batch(struct tp_pgw_pg *pg, struct tp_pgw_batch *b, char *err, size_t errlen)
{
    int rc = tp_pgw_pg_exec(pg, "BEGIN", 0, NULL, err, errlen);
    if (rc != 0)
        return rc;
    /* One batch at a time across all writers: a bet and its round's result or payout may be in
     * two writers' concurrent batches, and then neither transaction's UPDATE would see the
     * other's uncommitted row (the bet would stay 'pending' forever). */
    rc = tp_pgw_pg_exec(pg, "SELECT pg_advisory_xact_lock(1953523575)", 0, NULL, err, errlen);
    if (rc != 0)
        goto fail;
    for (int t = 0; t < TP_PGW_NTABLES; t++) {
        if (b->nrows[t] == 0)
            continue;
        tp_buf_puts(b->json[t], "]");
        tp_buf_append(b->json[t], "", 1); /* NUL for the text parameter */
        const char *param = tp_buf_ptr(b->json[t]);
        for (int i = 0; i < 2 && table_sql[t][i] != NULL; i++) {
            rc = tp_pgw_pg_exec(pg, table_sql[t][i], 1, &param, err, errlen);
            if (rc != 0)
                goto fail;
        }
    }
    rc = tp_pgw_pg_exec(pg, "COMMIT", 0, NULL, err, errlen);
    if (rc != 0)
        goto fail;
    return 0;
fail:
    tp_pgw_pg_exec(pg, "ROLLBACK", 0, NULL, NULL, 0);
    return rc;
}

/* --- Writer thread --- */

enum phase { PH_GROUPS, PH_CLAIM, PH_READ, PH_ACK, PH_IDLE };

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
    ev_timer periodic; /* claims and lag metrics */
    atomic_bool stop;

    int nstreams;
    char **streams; /* [0] = global outbox, [1 + N] = bucket N's outbox */
    char consumer[160];
    char host[128];
    char edges[200];   /* game.band_edges_bps as "e1,e2,…" (for round events without them) */
    char rake_bps[16]; /* game.rake_bps */

    enum phase phase;
    int outstanding; /* replies awaited in the current phase */
    bool pending_mode;
    bool claim_again; /* the last claim took a full page: claim again after writing it */
    bool busy;        /* a command of the main sequence is in flight */
    int backoff_ms;
    bool outage; /* an error was logged and not yet followed by a success */
    int64_t last_claim_ms;

    /* Lag probes (their own small sequence, independent of the main one). */
    int lag_outstanding;
    int64_t lag_entries;
    int64_t lag_oldest_ms;

    /* Ids acknowledged by the current PH_ACK, per stream. */
    char ***ack_ids;
    size_t *ack_n;
};

static void step(struct tp_pgw *w);

static void fail_soon(struct tp_pgw *w, const char *what, int err)
{
    if (!w->outage)
        tp_log_error(MOD, "%s failed, retrying with backoff\terr=%s", what, tp_strerror(err));
    w->outage = true;
    w->busy = false;
    w->backoff_ms = w->backoff_ms == 0 ? BACKOFF_MIN_MS : TP_MIN(w->backoff_ms * 2, BACKOFF_MAX_MS);
    ev_timer_set(&w->retry, w->backoff_ms / 1000.0, 0.0);
    ev_timer_start(w->loop, &w->retry);
}

static void succeeded(struct tp_pgw *w)
{
    if (w->outage)
        tp_log_info(MOD, "writer recovered");
    w->outage = false;
    w->backoff_ms = 0;
}

static int stream_index(const struct tp_pgw *w, const char *stream)
{
    for (int i = 0; i < w->nstreams; i++)
        if (strcmp(w->streams[i], stream) == 0)
            return i;
    return -1;
}

static bool reply_is_error(int err, const struct tp_store_reply *r)
{
    return err != 0 || r == NULL || tp_reply_type(r) == TP_REPLY_ERROR;
}

/* PH_GROUPS: every XGROUP CREATE answered (OK or BUSYGROUP). */
static void on_group(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (err == 0 && r != NULL && tp_reply_type(r) == TP_REPLY_ERROR &&
        strncmp(tp_reply_str(r, NULL), "BUSYGROUP", 9) != 0) {
        tp_log_error(MOD, "XGROUP CREATE refused\treply=\"%s\"", tp_reply_str(r, NULL));
        err = TP_EIO;
    }
    if (err != 0)
        w->outstanding = -1000; /* poison: the phase restarts after a backoff */
    if (--w->outstanding > 0)
        return;
    if (w->outstanding < 0) {
        fail_soon(w, "creating the consumer groups", err != 0 ? err : TP_EIO);
        return;
    }
    w->phase = PH_CLAIM;
    w->busy = false;
    step(w);
}

/* Is consumer `name` ("host:pid") a writer of this host whose process is gone? */
static bool dead_local(const struct tp_pgw *w, const char *name)
{
    const char *colon = strrchr(name, ':');
    if (colon == NULL || (size_t)(colon - name) != strlen(w->host) ||
        strncmp(name, w->host, colon - name) != 0 || !is_uint(colon + 1))
        return false;
    long pid = atol(colon + 1);
    if (pid <= 0)
        return false;
    if (kill((pid_t)pid, 0) != 0)
        return errno == ESRCH;
    /* A killed worker may linger as a zombie (containers whose init does not reap): that is
     * dead too. A reused pid only delays the takeover to the idle rule. */
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

struct claim_ctx {
    struct tp_pgw *w;
    int stream;
};

static void claim_done(struct tp_pgw *w)
{
    if (--w->outstanding > 0)
        return;
    w->last_claim_ms = tp_mono_ms();
    if (w->phase == PH_CLAIM) {
        w->phase = PH_READ;
        w->busy = false;
        step(w);
    }
}

static void on_xclaim(int err, const struct tp_store_reply *r, void *ud)
{
    struct claim_ctx *c = ud;
    struct tp_pgw *w = c->w;
    if (err == TP_ECLOSED) {
        free(c);
        return;
    }
    if (!reply_is_error(err, r) && tp_reply_len(r) > 0) {
        tp_log_info(MOD, "claimed pending outbox entries\tstream=%s entries=%zu",
                    w->streams[c->stream], tp_reply_len(r));
        w->pending_mode = true;
        /* A full page: more may wait behind it (XPENDING lists our own entries first once
         * claimed), so claim again as soon as these are written. */
        if (tp_reply_len(r) >= TP_PGW_BATCH)
            w->claim_again = true;
    }
    free(c);
    claim_done(w);
}

/* XPENDING <stream> pgw - + N: [[id, consumer, idle_ms, deliveries], …]. */
static void on_xpending(int err, const struct tp_store_reply *r, void *ud)
{
    struct claim_ctx *c = ud;
    struct tp_pgw *w = c->w;
    if (err == TP_ECLOSED) {
        free(c);
        return;
    }
    const char *argv[6 + TP_PGW_BATCH]; /* XCLAIM key group consumer 0 ids… JUSTID */
    int argc = 0;
    if (!reply_is_error(err, r)) {
        argv[argc++] = "XCLAIM";
        argv[argc++] = w->streams[c->stream];
        argv[argc++] = TP_PGW_GROUP;
        argv[argc++] = w->consumer;
        argv[argc++] = "0";
        for (size_t i = 0; i < tp_reply_len(r) && argc < 5 + TP_PGW_BATCH; i++) {
            const struct tp_store_reply *e = tp_reply_at(r, i);
            const char *id = tp_reply_str(tp_reply_at(e, 0), NULL);
            const char *who = tp_reply_str(tp_reply_at(e, 1), NULL);
            long long idle = tp_reply_integer(tp_reply_at(e, 2));
            if (id == NULL || who == NULL || strcmp(who, w->consumer) == 0)
                continue;
            if (dead_local(w, who) || idle >= TP_PGW_CLAIM_IDLE_MS)
                argv[argc++] = id;
        }
    }
    if (argc > 5) {
        const char *jid = "JUSTID";
        argv[argc++] = jid;
        if (tp_store_commandargv(w->store, on_xclaim, c, argc, argv, NULL) == 0)
            return; /* the ids are copied by the store at submission */
    }
    free(c);
    claim_done(w);
}

static void start_claims(struct tp_pgw *w)
{
    w->outstanding = 1; /* guard: released below once all are submitted */
    for (int i = 0; i < w->nstreams; i++) {
        struct claim_ctx *c = tp_xmalloc(sizeof(*c));
        c->w = w;
        c->stream = i;
        char count[16];
        snprintf(count, sizeof(count), "%d", TP_PGW_BATCH);
        const char *argv[] = {"XPENDING", w->streams[i], TP_PGW_GROUP, "-", "+", count};
        w->outstanding++;
        if (tp_store_commandargv(w->store, on_xpending, c, 6, argv, NULL) != 0) {
            free(c);
            w->outstanding--;
        }
    }
    claim_done(w);
}

/* --- Reading, writing, acknowledging --- */

static void free_acks(struct tp_pgw *w)
{
    for (int s = 0; s < w->nstreams; s++) {
        for (size_t i = 0; i < w->ack_n[s]; i++)
            free(w->ack_ids[s][i]);
        w->ack_n[s] = 0;
    }
}

static void ack_release(struct tp_pgw *w);

static void on_ack(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (reply_is_error(err, r) && !w->outage)
        tp_log_warn(MOD,
                    "XACK/XDEL failed (entries stay pending and are rewritten idempotently)"
                    "\terr=%s",
                    tp_strerror(err));
    ack_release(w);
}

/* Counts one answered XACK/XDEL; the last one moves on to the next read. */
static void ack_release(struct tp_pgw *w)
{
    if (--w->outstanding > 0)
        return;
    free_acks(w);
    w->phase = PH_READ;
    w->busy = false;
    if (atomic_load(&w->stop)) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    step(w);
}

/* XACK then XDEL of the written ids: acknowledged entries leave the stream at once, so XLEN
 * is the backlog. XDEL only ever names ids just acknowledged by our single group. */
static void send_acks(struct tp_pgw *w)
{
    w->phase = PH_ACK;
    w->outstanding = 1;
    for (int s = 0; s < w->nstreams; s++) {
        if (w->ack_n[s] == 0)
            continue;
        size_t n = w->ack_n[s];
        const char **argv = tp_xmalloc((n + 3) * sizeof(*argv));
        argv[0] = "XACK";
        argv[1] = w->streams[s];
        argv[2] = TP_PGW_GROUP;
        for (size_t i = 0; i < n; i++)
            argv[3 + i] = w->ack_ids[s][i];
        if (tp_store_commandargv(w->store, on_ack, w, (int)n + 3, argv, NULL) == 0)
            w->outstanding++;
        /* XDEL <stream> ids…: reuse the vector from index 1. */
        argv[1] = "XDEL";
        argv[2] = w->streams[s];
        if (tp_store_commandargv(w->store, on_ack, w, (int)n + 2, argv + 1, NULL) == 0)
            w->outstanding++;
        free(argv);
    }
    ack_release(w);
}

/* Fixed-capacity field arrays for one event (our events have < 16 fields). */
#define MAX_FIELDS 32

/* Calls fn for every entry of an XREADGROUP reply (nil: BLOCK timed out, or
 * [[stream, [[id, [k, v, …] | nil], …]], …]); a pending entry deleted from the stream comes back
 * with nil fields and is passed with ev == NULL. `only` >= 0 visits that entry only (by
 * position). Returns the number of entries. */
typedef void (*event_fn)(struct tp_pgw *w, int stream, const char *id,
                         const struct tp_pgw_event *ev, void *ud);

static size_t each_event(struct tp_pgw *w, const struct tp_store_reply *r, long only, event_fn fn,
                         void *ud)
{
    size_t total = 0;
    for (size_t s = 0; s < tp_reply_len(r); s++) {
        const struct tp_store_reply *sr = tp_reply_at(r, s);
        const char *name = tp_reply_str(tp_reply_at(sr, 0), NULL);
        int si = name ? stream_index(w, name) : -1;
        if (si < 0)
            continue;
        const struct tp_store_reply *entries = tp_reply_at(sr, 1);
        for (size_t i = 0; i < tp_reply_len(entries); i++) {
            const struct tp_store_reply *e = tp_reply_at(entries, i);
            const char *id = tp_reply_str(tp_reply_at(e, 0), NULL);
            const struct tp_store_reply *kv = tp_reply_at(e, 1);
            if (id == NULL)
                continue;
            if (only >= 0 && (size_t)only != total) {
                total++;
                continue;
            }
            total++;
            if (kv == NULL || tp_reply_type(kv) != TP_REPLY_ARRAY) {
                fn(w, si, id, NULL, ud);
                continue;
            }
            const char *keys[MAX_FIELDS], *vals[MAX_FIELDS];
            size_t nf = TP_MIN(tp_reply_len(kv) / 2, (size_t)MAX_FIELDS);
            for (size_t f = 0; f < nf; f++) {
                keys[f] = tp_reply_str(tp_reply_at(kv, 2 * f), NULL);
                vals[f] = tp_reply_str(tp_reply_at(kv, 2 * f + 1), NULL);
            }
            struct tp_pgw_event ev = {id, si - 1, nf, keys, vals};
            fn(w, si, id, &ev, ud);
        }
    }
    return total;
}

/* Collects the id for XACK and maps the event into the batch `ud`. */
static void add_to_batch(struct tp_pgw *w, int stream, const char *id,
                         const struct tp_pgw_event *ev, void *ud)
{
    w->ack_ids[stream][w->ack_n[stream]++] = tp_xstrdup(id);
    if (ev != NULL && tp_pgw_batch_add(ud, ev) != 0)
        tp_log_error(MOD, "skipping a malformed or unknown outbox event\tstream=%s id=%s",
                     w->streams[stream], id);
}

/* Maps one event into the batch `ud` (no ack bookkeeping). */
static void map_only(struct tp_pgw *w, int stream, const char *id, const struct tp_pgw_event *ev,
                     void *ud)
{
    (void)w, (void)stream, (void)id;
    if (ev != NULL)
        tp_pgw_batch_add(ud, ev);
}

/* Logs an event's fields (for a quarantined entry, so an operator can replay it by hand). */
static void log_event(struct tp_pgw *w, int stream, const char *id, const struct tp_pgw_event *ev,
                      void *ud)
{
    struct tp_buf line;
    tp_buf_init(&line);
    for (size_t i = 0; ev != NULL && i < ev->nfields; i++)
        tp_buf_printf(&line, "%s%s=%s", i ? " " : "", ev->keys[i] ? ev->keys[i] : "?",
                      ev->vals[i] ? ev->vals[i] : "?");
    tp_buf_append(&line, "", 1);
    tp_log_error(MOD,
                 "Postgres refused an outbox event; acknowledged without a row (audit will "
                 "show it)\tstream=%s id=%s error=\"%s\" event=\"%s\"",
                 w->streams[stream], id, (const char *)ud, tp_buf_ptr(&line));
    tp_buf_deinit(&line);
}

/*
 * A batch Postgres refused while the connection is fine (a CHECK or type error: one bad event,
 * not an outage) is written again one event per transaction, so one poisoned entry cannot stop
 * the outbox forever; each event Postgres still refuses is logged with all its fields and
 * acknowledged. Returns 0, or the error of a connection lost meanwhile (then nothing is acked).
 */
static int write_one_by_one(struct tp_pgw *w, const struct tp_store_reply *r, size_t total)
{
    for (size_t i = 0; i < total; i++) {
        struct tp_pgw_batch one;
        tp_pgw_batch_init(&one);
        one.default_edges = w->edges;
        one.default_rake_bps = w->rake_bps;
        each_event(w, r, (long)i, map_only, &one);
        char perr[256] = "";
        int rc = write_batch(w->pg, &one, perr, sizeof(perr));
        tp_pgw_batch_deinit(&one);
        if (rc != 0 && !tp_pgw_pg_ok(w->pg))
            return rc;
        if (rc == TP_ETIMEDOUT || rc == TP_EAGAIN)
            return rc;
        if (rc != 0)
            each_event(w, r, (long)i, log_event, perr);
    }
    return 0;
}

static void on_read(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (reply_is_error(err, r)) {
        if (err == 0 && r != NULL && strstr(tp_reply_str(r, NULL), "NOGROUP") != NULL)
            w->phase = PH_GROUPS; /* the stream was deleted (FLUSHALL): recreate */
        fail_soon(w, "XREADGROUP", err != 0 ? err : TP_EIO);
        return;
    }
    if (atomic_load(&w->stop)) {
        /* Whatever we just read stays pending under our name; the next writer claims it. */
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    b.default_edges = w->edges;
    b.default_rake_bps = w->rake_bps;
    size_t total = each_event(w, r, -1, add_to_batch, &b);
    if (total == 0) {
        tp_pgw_batch_deinit(&b);
        if (w->pending_mode && w->claim_again) {
            w->claim_again = false;
            w->last_claim_ms = tp_mono_ms() - CLAIM_EVERY_MS; /* claim on the next step */
        }
        w->pending_mode = false;
        w->busy = false;
        succeeded(w);
        step(w);
        return;
    }
    int rc = TP_EUNAVAIL;
    char perr[256] = "Postgres unreachable";
    if (w->pg == NULL)
        w->pg = tp_pgw_pg_open(&w->cfg->postgres);
    if (w->pg != NULL) {
        rc = write_batch(w->pg, &b, perr, sizeof(perr));
        if (rc != 0 && rc != TP_ETIMEDOUT && rc != TP_EAGAIN && tp_pgw_pg_ok(w->pg)) {
            tp_log_warn(MOD, "Postgres refused a batch, retrying event by event\terror=\"%s\"",
                        perr);
            rc = write_one_by_one(w, r, total);
        }
        if (rc != 0 && !tp_pgw_pg_ok(w->pg)) {
            tp_pgw_pg_close(w->pg);
            w->pg = NULL;
        }
    }
    tp_log_debug(MOD, "batch\tentries=%zu skipped=%zu pending_mode=%d rc=%d", total, b.skipped,
                 (int)w->pending_mode, rc);
    tp_pgw_batch_deinit(&b);
    if (rc != 0) {
        free_acks(w);
        w->pending_mode = true; /* rebuild the batch from Redis after the backoff */
        if (!w->outage)
            tp_log_error(MOD, "Postgres write failed\terror=\"%s\"", perr);
        fail_soon(w, "writing a batch to Postgres", rc);
        return;
    }
    succeeded(w);
    send_acks(w);
}

static void issue_read(struct tp_pgw *w)
{
    int n = w->nstreams;
    const char **argv = tp_xmalloc((10 + 2 * (size_t)n) * sizeof(*argv)); /* 9 fixed words */
    char count[16], block[16];
    snprintf(count, sizeof(count), "%d", TP_PGW_BATCH);
    /* BLOCK well below the store's command deadline, so a quiet stream is not a timeout. */
    snprintf(block, sizeof(block), "%d", TP_MAX(TP_MIN(1000, w->cfg->redis.timeout_ms / 2), 10));
    int argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = TP_PGW_GROUP;
    argv[argc++] = w->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    if (!w->pending_mode) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block;
    }
    argv[argc++] = "STREAMS";
    for (int i = 0; i < n; i++)
        argv[argc++] = w->streams[i];
    for (int i = 0; i < n; i++)
        argv[argc++] = w->pending_mode ? "0" : ">";
    w->busy = true;
    int rc = tp_store_commandargv(w->store, on_read, w, argc, argv, NULL);
    free(argv);
    if (rc != 0)
        fail_soon(w, "XREADGROUP submit", rc);
}

/* Runs the next command of the main sequence unless one is in flight or a backoff runs. */
static void step(struct tp_pgw *w)
{
    if (w->busy || ev_is_active(&w->retry))
        return;
    if (atomic_load(&w->stop)) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    if (!tp_store_is_connected(w->store)) {
        fail_soon(w, "connecting to Redis", TP_EUNAVAIL);
        return;
    }
    switch (w->phase) {
    case PH_GROUPS:
        w->busy = true;
        w->outstanding = 1;
        for (int i = 0; i < w->nstreams; i++) {
            const char *argv[] = {"XGROUP", "CREATE", w->streams[i], TP_PGW_GROUP, "0", "MKSTREAM"};
            if (tp_store_commandargv(w->store, on_group, w, 6, argv, NULL) == 0)
                w->outstanding++;
        }
        on_group(0, NULL, w);
        break;
    case PH_CLAIM:
        w->busy = true;
        start_claims(w);
        break;
    case PH_READ:
        if (tp_mono_ms() - w->last_claim_ms >= CLAIM_EVERY_MS) {
            w->phase = PH_CLAIM;
            step(w);
            return;
        }
        issue_read(w);
        break;
    default:
        break;
    }
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_pgw *w = t->data;
    ev_timer_stop(w->loop, t);
    step(w);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct tp_pgw *w = a->data;
    /* A batch being acknowledged finishes first (on_ack breaks the loop); otherwise stop now:
     * anything read but not written stays pending in Redis. */
    if (w->phase != PH_ACK)
        ev_break(loop, EVBREAK_ALL);
}

/* --- Lag metrics (worker 0 only) --- */

static void on_lag(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (!reply_is_error(err, r)) {
        if (tp_reply_type(r) == TP_REPLY_INTEGER) {
            w->lag_entries += tp_reply_integer(r);
        } else if (tp_reply_len(r) > 0) {
            /* XRANGE … COUNT 1: the first (oldest) entry; its id starts with its Unix ms. */
            const char *id = tp_reply_str(tp_reply_at(tp_reply_at(r, 0), 0), NULL);
            long long ms = id ? atoll(id) : 0;
            if (ms > 0 && (w->lag_oldest_ms == 0 || ms < w->lag_oldest_ms))
                w->lag_oldest_ms = ms;
        }
    }
    if (--w->lag_outstanding > 0)
        return;
    tp_metrics_set(TP_METRIC_OUTBOX_LAG_ENTRIES, w->lag_entries);
    int64_t age = w->lag_oldest_ms ? (tp_now_ms() - w->lag_oldest_ms) / 1000 : 0;
    tp_metrics_set(TP_METRIC_OUTBOX_LAG_SECONDS, TP_MAX(age, 0));
}

static void on_periodic(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_pgw *w = t->data;
    if (w->report_lag && w->lag_outstanding == 0 && tp_store_is_connected(w->store)) {
        w->lag_entries = 0;
        w->lag_oldest_ms = 0;
        w->lag_outstanding = 1;
        for (int i = 0; i < w->nstreams; i++) {
            if (tp_store_command(w->store, on_lag, w, "XLEN %s", w->streams[i]) == 0)
                w->lag_outstanding++;
            if (tp_store_command(w->store, on_lag, w, "XRANGE %s - + COUNT 1", w->streams[i]) == 0)
                w->lag_outstanding++;
        }
        on_lag(0, NULL, w);
    }
    step(w); /* also wakes the sequence after Redis came back */
}

static void *thread_main(void *arg)
{
    struct tp_pgw *w = arg;
    ev_run(w->loop, 0);
    /* Stopped: close Redis (pending callbacks get TP_ECLOSED and do nothing) and Postgres. */
    tp_store_free(w->store);
    w->store = NULL;
    tp_pgw_pg_close(w->pg);
    w->pg = NULL;
    return NULL;
}

static void destroy(struct tp_pgw *w)
{
    if (w->ack_ids != NULL) {
        free_acks(w);
        for (int s = 0; s < w->nstreams; s++)
            free(w->ack_ids[s]);
    }
    free(w->ack_ids);
    free(w->ack_n);
    for (int i = 0; i < w->nstreams; i++)
        free(w->streams[i]);
    free(w->streams);
    if (w->loop != NULL)
        ev_loop_destroy(w->loop);
    free(w);
}

struct tp_pgw *tp_pgw_start(const struct tp_config *cfg, bool report_lag)
{
    if (cfg->redis.url[0] == '\0') {
        tp_log_warn(MOD, "redis.url is empty: no Postgres writer");
        return NULL;
    }
    struct tp_pgw *w = tp_xcalloc(1, sizeof(*w));
    w->cfg = cfg;
    w->report_lag = report_lag;
    atomic_init(&w->stop, false);
    if (gethostname(w->host, sizeof(w->host) - 1) != 0)
        snprintf(w->host, sizeof(w->host), "localhost");
    snprintf(w->consumer, sizeof(w->consumer), "%s:%ld", w->host, (long)getpid());
    size_t off = 0;
    for (int i = 0; i < cfg->game.n_band_edges && off + 16 < sizeof(w->edges); i++)
        off += snprintf(w->edges + off, sizeof(w->edges) - off, "%s%d", i ? "," : "",
                        cfg->game.band_edges_bps[i]);
    snprintf(w->rake_bps, sizeof(w->rake_bps), "%d", cfg->game.rake_bps);
    w->nstreams = cfg->game.buckets + 1;
    w->streams = tp_xcalloc(w->nstreams, sizeof(char *));
    w->streams[0] = tp_xstrdup(TP_KEYS_GLOBAL_OUTBOX);
    for (int i = 1; i < w->nstreams; i++) {
        struct tp_key k;
        w->streams[i] = tp_xstrdup(tp_keys_outbox(&k, i - 1));
    }
    w->ack_ids = tp_xcalloc(w->nstreams, sizeof(char **));
    w->ack_n = tp_xcalloc(w->nstreams, sizeof(size_t));
    for (int s = 0; s < w->nstreams; s++)
        w->ack_ids[s] = tp_xcalloc(TP_PGW_BATCH, sizeof(char *));
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL)
        goto fail;
    w->store = tp_store_new(w->loop, &cfg->redis, NULL);
    if (w->store == NULL)
        goto fail;
    ev_async_init(&w->stop_async, on_stop);
    w->stop_async.data = w;
    ev_async_start(w->loop, &w->stop_async);
    ev_timer_init(&w->retry, on_retry, 0.0, 0.0);
    w->retry.data = w;
    ev_timer_init(&w->periodic, on_periodic, 0.05, LAG_EVERY_MS / 1000.0);
    w->periodic.data = w;
    ev_timer_start(w->loop, &w->periodic);
    w->phase = PH_GROUPS;
    w->pending_mode = true; /* a restart under the same name would find its own entries */

    /* The thread must never take the worker's signals (SIGTERM drives the drain). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, thread_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        tp_log_error(MOD, "cannot start the writer thread\terrno=%d", rc);
        tp_store_free(w->store);
        goto fail;
    }
    w->started = true;
    tp_log_info(MOD, "writer started\tconsumer=%s streams=%d", w->consumer, w->nstreams);
    return w;
fail:
    destroy(w);
    return NULL;
}

void tp_pgw_stop(struct tp_pgw *w)
{
    if (w == NULL)
        return;
    atomic_store(&w->stop, true);
    ev_async_send(w->loop, &w->stop_async);
    pthread_join(w->thread, NULL);
    tp_log_info(MOD, "writer stopped");
    destroy(w);
}

/* --- Worker hooks --- */

/* The worker slot holding the worker's writer (tp_pgw_register hands it out). */
static size_t slot = SIZE_MAX;

static void on_worker_init(struct tp_worker *wk, void *ud)
{
    (void)ud;
    tp_worker_slot_set(wk, slot, tp_pgw_start(tp_worker_config(wk), tp_worker_index(wk) == 0));
}

static void on_worker_drain(struct tp_worker *wk, void *ud)
{
    (void)ud;
    tp_pgw_stop(tp_worker_slot_get(wk, slot));
    tp_worker_slot_set(wk, slot, NULL);
}

void tp_pgw_register(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_worker_init, NULL);
    tp_worker_on_drain(on_worker_drain, NULL);
}
