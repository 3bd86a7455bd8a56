/*
 * Postgres writer, the Redis side: the commands of each phase of the sequence (pgw.c) on the
 * outbox streams, and their replies.
 *
 *   groups → XGROUP CREATE <stream> pgw 0 MKSTREAM on every stream (BUSYGROUP is fine)
 *   claim  → XPENDING per stream; entries of dead local consumers (same host, pid gone) or idle
 *            ≥ TP_PGW_CLAIM_IDLE_MS on another consumer are XCLAIMed (JUSTID) to us, and we
 *            switch to "pending" mode
 *   read   → pending mode: XREADGROUP … STREAMS … 0 (our own pending entries, no BLOCK) until
 *            none is left; otherwise XREADGROUP … BLOCK … STREAMS … > (new entries); the
 *            entries are written to Postgres (pgw_write.c). COUNT follows the rows per entry
 *            of the last batch (tp_pgw_read_count): a `bets` entry is up to 128 bets, a
 *            transaction of 500 of them outlasted the statement timeout under load. After a
 *            batch that did not fill its read, the next new-entries read waits until
 *            postgres.write_gap after it (on_read, tp_pgw_step); a batch that takes a
 *            settlement happening now past TP_PGW_YIELD_ROWS credits is left pending and
 *            every read waits postgres.settle_yield (tp_pgw_settle_yield).
 *   ack    → after COMMIT: XACK per stream, then XTRIM MINID below the group's oldest entry
 *            not yet committed (see on_trim_pending for why that is safe); then read again.
 *            An empty read after a failure (or at start) trims every stream the same way.
 *            A refused entry is not in the XACK: park.lua copies it to <stream>:rejected and
 *            acknowledges it in one step (tp_pgw_reject, on_parked).
 *
 * A failed write drops the in-memory batch and re-reads our pending entries after a backoff,
 * so a batch is always rebuilt from Redis, never from memory that might diverge from it.
 */
#include "pgw_internal.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "pgw"

static int stream_index(const struct tp_pgw *w, const char *stream)
{
    for (int i = 0; i < w->nstreams; i++)
        if (strcmp(w->streams[i], stream) == 0)
            return i;
    return -1;
}

bool tp_pgw_reply_is_error(int err, const struct tp_store_reply *r)
{
    return err != 0 || r == NULL || tp_reply_type(r) == TP_REPLY_ERROR;
}

/* --- Consumer groups --- */

/* TP_PGW_PH_GROUPS: every XGROUP CREATE answered (OK or BUSYGROUP). */
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
        tp_pgw_fail_soon(w, "creating the consumer groups", err != 0 ? err : TP_EIO);
        return;
    }
    w->phase = TP_PGW_PH_CLAIM;
    w->busy = false;
    tp_pgw_step(w);
}

void tp_pgw_create_groups(struct tp_pgw *w)
{
    w->outstanding = 1; /* guard: released below once all are submitted */
    for (int i = 0; i < w->nstreams; i++) {
        const char *argv[] = {"XGROUP", "CREATE", w->streams[i], TP_PGW_GROUP, "0", "MKSTREAM"};
        if (tp_store_commandargv(w->store, on_group, w, 6, argv, NULL) == 0)
            w->outstanding++;
    }
    on_group(0, NULL, w);
}

/* --- Claiming from dead consumers --- */

/* Is consumer `name` ("host:pid") a writer of this host whose process is gone? */
static bool dead_local(const struct tp_pgw *w, const char *name)
{
    const char *colon = strrchr(name, ':');
    if (colon == NULL || (size_t)(colon - name) != strlen(w->host) ||
        strncmp(name, w->host, colon - name) != 0 || !tp_pgw_is_uint(colon + 1))
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
    if (w->phase == TP_PGW_PH_CLAIM) {
        w->phase = TP_PGW_PH_READ;
        w->busy = false;
        tp_pgw_step(w);
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
    if (!tp_pgw_reply_is_error(err, r) && tp_reply_len(r) > 0) {
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
    if (!tp_pgw_reply_is_error(err, r)) {
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
            if (id == NULL || who == NULL)
                continue;
            if (strcmp(who, w->consumer) == 0) {
                /* Between batches nothing of ours is in flight: this entry's XACK was lost
                 * (Redis restarted before persisting it). Re-read it now. */
                w->pending_mode = true;
                continue;
            }
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

void tp_pgw_claim(struct tp_pgw *w)
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

/* --- Acknowledging and trimming --- */

/* A refused entry waiting for the ack phase, where park.lua copies it to its rejected stream and
 * acknowledges it in one step. */
struct tp_pgw_rejected {
    struct tp_pgw_rejected *next;
    struct tp_pgw *w;
    int stream;
    char *id;
    char *error;
    size_t nfields;
    char **fields; /* nfields pairs: name, value */
};

static void rejected_free(struct tp_pgw_rejected *r)
{
    for (size_t i = 0; i < 2 * r->nfields; i++)
        free(r->fields[i]);
    free(r->fields);
    free(r->error);
    free(r->id);
    free(r);
}

void tp_pgw_free_acks(struct tp_pgw *w)
{
    for (int s = 0; s < w->nstreams; s++) {
        for (size_t i = 0; i < w->ack_n[s]; i++)
            free(w->ack_ids[s][i]);
        w->ack_n[s] = 0;
    }
    while (w->rejected != NULL) {
        struct tp_pgw_rejected *r = w->rejected;
        w->rejected = r->next;
        rejected_free(r);
    }
}

void tp_pgw_reject(struct tp_pgw *w, int stream, const char *id, const struct tp_pgw_event *ev,
                   const char *error)
{
    struct tp_buf line;
    tp_buf_init(&line);
    for (size_t i = 0; ev != NULL && i < ev->nfields; i++)
        tp_buf_printf(&line, "%s%s=%s", i ? " " : "", ev->keys[i] ? ev->keys[i] : "?",
                      ev->vals[i] ? ev->vals[i] : "?");
    tp_buf_append(&line, "", 1);
    tp_log_error(MOD,
                 "outbox entry refused; %s%s%s (tickpool audit shows its money missing from "
                 "Postgres until it is replayed)\tstream=%s id=%s error=\"%s\" event=\"%s\"",
                 ev != NULL ? "parking in " : "not parked (deleted from the stream)",
                 ev != NULL ? w->streams[stream] : "", ev != NULL ? TP_KEYS_REJECTED_SUFFIX : "",
                 w->streams[stream], id, error, tp_buf_ptr(&line));
    tp_buf_deinit(&line);
    if (ev == NULL)
        return; /* deleted from the stream: nothing to keep, acknowledged as it is */
    /* Not acknowledged with the batch: only once its copy is stored. */
    for (size_t i = w->ack_n[stream]; i-- > 0;) {
        if (strcmp(w->ack_ids[stream][i], id) == 0) {
            free(w->ack_ids[stream][i]);
            memmove(&w->ack_ids[stream][i], &w->ack_ids[stream][i + 1],
                    (w->ack_n[stream] - i - 1) * sizeof(char *));
            w->ack_n[stream]--;
            break;
        }
    }
    struct tp_pgw_rejected *r = tp_xcalloc(1, sizeof(*r));
    r->w = w;
    r->stream = stream;
    r->id = tp_xstrdup(id);
    r->error = tp_xstrdup(error[0] != '\0' ? error : "refused");
    /* At least one pair: XADD makes no entry without a field (a reply with none would fail
     * tp_script_park, and the entry would stay pending, refused at each try, never lost). */
    r->nfields = TP_MIN(ev->nfields, (size_t)TP_SCRIPT_PARK_FIELDS_MAX);
    r->fields = tp_xmalloc(2 * r->nfields * sizeof(char *));
    for (size_t i = 0; i < r->nfields; i++) {
        r->fields[2 * i] = tp_xstrdup(ev->keys[i] ? ev->keys[i] : "?");
        r->fields[2 * i + 1] = tp_xstrdup(ev->vals[i] ? ev->vals[i] : "?");
    }
    r->next = w->rejected;
    w->rejected = r;
}

static void ack_release(struct tp_pgw *w);

/* A failed XACK/XINFO/XPENDING/XTRIM: the entries stay pending or untrimmed; the next batch,
 * or the next empty read, trims again. */
static void ack_failed(struct tp_pgw *w, const char *what, int err)
{
    if (!w->outage)
        tp_log_warn(MOD, "%s failed (entries stay pending or untrimmed; nothing is lost)\terr=%s",
                    what, tp_strerror(err != 0 ? err : TP_EIO));
    w->trim_all = true;
}

static void on_ack(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (tp_pgw_reply_is_error(err, r)) {
        ack_failed(w, "XACK", err);
        w->pending_mode = true; /* our entries stay pending: re-read them (idempotent) now */
    }
    ack_release(w);
}

/* Counts one answered command of the phase; the last one moves on to the next read. */
static void ack_release(struct tp_pgw *w)
{
    if (--w->outstanding > 0)
        return;
    if (w->park_failed)
        w->pending_mode = false; /* see park_failed */
    tp_pgw_free_acks(w);
    w->phase = TP_PGW_PH_READ;
    w->busy = false;
    if (atomic_load(&w->stop)) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    tp_pgw_step(w);
}

/* A stream id "ms-seq"; false for anything else. */
static bool parse_id(const char *s, uint64_t *ms, uint64_t *seq)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    *ms = strtoull(s, &end, 10);
    if (errno != 0 || *end != '-' || end[1] < '0' || end[1] > '9')
        return false;
    *seq = strtoull(end + 1, &end, 10);
    return errno == 0 && *end == '\0';
}

int tp_pgw_trim_minid(const char *last_delivered, long long npending, const char *smallest,
                      char *out, size_t outlen)
{
    uint64_t ms, seq, pms, pseq;
    if (!parse_id(last_delivered, &ms, &seq))
        return TP_EPROTO;
    if (++seq == 0)
        ms++; /* the sequence wrapped: LD + 1 is (ms + 1)-0 */
    if (npending > 0) {
        if (!parse_id(smallest, &pms, &pseq))
            return TP_EPROTO;
        if (pms < ms || (pms == ms && pseq < seq)) {
            ms = pms;
            seq = pseq;
        }
    }
    int n = snprintf(out, outlen, "%" PRIu64 "-%" PRIu64, ms, seq);
    return n > 0 && (size_t)n < outlen ? 0 : TP_ETOOBIG;
}

int tp_pgw_read_count(int current, size_t entries, size_t rows, int streams, int target_rows)
{
    if (entries == 0)
        return TP_MAX(1, TP_MIN(current, TP_PGW_BATCH));
    double per_entry = (double)TP_MAX(rows, entries) / (double)entries;
    double n = (double)target_rows / (per_entry * TP_MAX(streams, 1));
    return n < 1 ? 1 : n > TP_PGW_BATCH ? TP_PGW_BATCH : (int)n;
}

/*
 * Why a writer yields to a settlement: on a host of few cores, a large settlement's pages keep
 * Redis on a core for its ~1.4 s, and the writer writing its credits as they come (a payouts
 * row and the bet's UPDATE each) kept Postgres on the other: the bets placed meanwhile waited
 * for a CPU (bench/README.md, Settlement, "Session 29"). Holding the reads puts Postgres's share
 * after the settlement, when Redis is idle again; the outbox is durable in Redis meanwhile, and
 * nothing is acknowledged before it is committed (the held batch stays pending, re-read after
 * the hold as after a failed write), so the hold changes when rows are written, never which.
 */
int64_t tp_pgw_settle_yield(struct tp_pgw_yield *y, int64_t now_ms, size_t credit_rows,
                            int64_t credits_age_ms, int64_t yield_ms)
{
    if (credit_rows == 0)
        return 0;
    if (y->last_ms == 0 || now_ms - y->last_ms >= TP_PGW_YIELD_STREAK_MS) {
        y->rows = 0;
        y->held = false;
    }
    y->last_ms = now_ms;
    /* Old credits (a backlog) keep the streak going, so a held settlement's catch-up is not
     * held again, but add no rows: a fresh settlement right after a drained backlog is held for
     * its own credits only, so a small one is not held at all. */
    bool old = yield_ms > 0 && credits_age_ms >= yield_ms;
    if (!old)
        y->rows += (int64_t)credit_rows;
    if (yield_ms <= 0 || y->held || y->rows < TP_PGW_YIELD_ROWS || old)
        return 0;
    y->held = true;
    y->last_ms = now_ms + yield_ms; /* the backlog written after the hold is the same streak */
    return yield_ms;
}

/* One stream's trim: XINFO GROUPS then XPENDING (summary) then XTRIM, sharing this context. */
struct trim_ctx {
    struct tp_pgw *w;
    int stream;
    int refs; /* commands still holding the context */
    bool have_ld;
    char ld[48]; /* the group's last-delivered-id when XINFO ran */
};

static void trim_unref(struct trim_ctx *t)
{
    if (--t->refs == 0)
        free(t);
}

/* XINFO GROUPS <stream>: [[name, "pgw", …, "last-delivered-id", id, …], …] (RESP2 pairs). */
static void on_xinfo(int err, const struct tp_store_reply *r, void *ud)
{
    struct trim_ctx *t = ud;
    struct tp_pgw *w = t->w;
    if (err == TP_ECLOSED) {
        trim_unref(t);
        return;
    }
    for (size_t g = 0; !tp_pgw_reply_is_error(err, r) && g < tp_reply_len(r); g++) {
        const struct tp_store_reply *kv = tp_reply_at(r, g);
        const char *name = NULL, *ld = NULL;
        for (size_t i = 0; i + 1 < tp_reply_len(kv); i += 2) {
            const char *k = tp_reply_str(tp_reply_at(kv, i), NULL);
            if (k != NULL && strcmp(k, "name") == 0)
                name = tp_reply_str(tp_reply_at(kv, i + 1), NULL);
            else if (k != NULL && strcmp(k, "last-delivered-id") == 0)
                ld = tp_reply_str(tp_reply_at(kv, i + 1), NULL);
        }
        if (name != NULL && strcmp(name, TP_PGW_GROUP) == 0 && ld != NULL &&
            strlen(ld) < sizeof(t->ld)) {
            strcpy(t->ld, ld);
            t->have_ld = true;
        }
    }
    if (!t->have_ld)
        ack_failed(w, "XINFO GROUPS", err);
    trim_unref(t);
    ack_release(w);
}

static void on_xtrim(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (tp_pgw_reply_is_error(err, r))
        ack_failed(w, "XTRIM", err);
    ack_release(w);
}

/*
 * XPENDING <stream> pgw (summary: [count, smallest id, greatest id, per-consumer counts]) after
 * XINFO GROUPS gave the group's last-delivered-id LD: trims the stream below
 *
 *     MINID = min(smallest pending id, LD + 1)     (LD + 1 alone when nothing is pending)
 *
 * Why no entry that is not yet committed to Postgres is removed. One group (pgw) reads the
 * stream; every consumer, on every worker and host, XACKs an entry only after the COMMIT that
 * wrote it, and XADD ids only grow, so at any moment an entry is exactly one of: (a) not yet
 * delivered, id > the group's last-delivered-id; (b) pending in the group's PEL, under some
 * consumer, live or dead (claims move it between consumers, never out of the PEL); (c) acked,
 * hence committed. XTRIM MINID removes only ids < MINID (exact trim, Redis ≥ 6.2). Let T1 be
 * when XINFO ran and T2 when XPENDING ran (T1 < T2: same connection, in order). An entry with
 * id < MINID has id ≤ LD(T1), so it was delivered by T1, and it was not pending at T2
 * (id < smallest pending id), so it was acked by T2: it is in (c), committed. Committed stays
 * committed, so removing it later, when XTRIM runs, is safe; entries delivered or added after
 * T1 have ids > LD(T1) and stay. XTRIM goes out on the connection that carried T1 and T2, so
 * a Redis restart (which could roll the stream back to its AOF) fails it instead of running it
 * against another state.
 *
 * XLEN is therefore no longer exactly the backlog: committed entries above another consumer's
 * oldest pending entry wait for that consumer's trim (at most a batch per consumer in flight).
 */
static void on_trim_pending(int err, const struct tp_store_reply *r, void *ud)
{
    struct trim_ctx *t = ud;
    struct tp_pgw *w = t->w;
    if (err == TP_ECLOSED) {
        trim_unref(t);
        return;
    }
    if (tp_pgw_reply_is_error(err, r) || tp_reply_type(r) != TP_REPLY_ARRAY) {
        ack_failed(w, "XPENDING", err);
    } else if (t->have_ld) {
        char minid[48];
        const char *argv[] = {"XTRIM", w->streams[t->stream], "MINID", minid};
        if (tp_pgw_trim_minid(t->ld, tp_reply_integer(tp_reply_at(r, 0)),
                              tp_reply_str(tp_reply_at(r, 1), NULL), minid, sizeof(minid)) != 0)
            ack_failed(w, "XTRIM threshold (unreadable stream id)", TP_EPROTO);
        else if (tp_store_commandargv(w->store, on_xtrim, w, 4, argv, NULL) == 0)
            w->outstanding++;
        else
            ack_failed(w, "XTRIM submit", TP_EUNAVAIL);
    }
    trim_unref(t);
    ack_release(w);
}

/* XINFO GROUPS and XPENDING of stream s, the XTRIM following from their replies. */
static void send_trim(struct tp_pgw *w, int s)
{
    struct trim_ctx *t = tp_xcalloc(1, sizeof(*t));
    t->w = w;
    t->stream = s;
    t->refs = 1; /* guard: released below */
    const char *info[] = {"XINFO", "GROUPS", w->streams[s]};
    if (tp_store_commandargv(w->store, on_xinfo, t, 3, info, NULL) == 0) {
        t->refs++;
        w->outstanding++;
        const char *pend[] = {"XPENDING", w->streams[s], TP_PGW_GROUP};
        if (tp_store_commandargv(w->store, on_trim_pending, t, 3, pend, NULL) == 0) {
            t->refs++;
            w->outstanding++;
        }
    } else {
        w->trim_all = true;
    }
    trim_unref(t);
}

/* A refused entry whose copy Redis refused stays pending under our name. The writer goes on
 * reading new entries rather than re-reading its pending ones at once (they would always hold
 * this one, and nothing new would be written: review 15:56); the next claim, within
 * TP_PGW_CLAIM_EVERY_MS, finds it ours and re-reads it (on_xpending), so a copy Redis keeps
 * refusing costs a try every 10 s. Other entries left pending meanwhile (a failed XACK) wait
 * for that claim too: nothing is acknowledged without its row or its copy. */
static void park_failed(struct tp_pgw *w)
{
    w->park_failed = true;
}

/* park.lua answered for a refused entry: parked and acknowledged (or found so already), or
 * nothing done, and the entry stays pending (park_failed). `r` lives until the phase ends
 * (tp_pgw_free_acks in ack_release). */
static void on_parked(int err, const struct tp_store_reply *reply, void *ud)
{
    struct tp_pgw_rejected *r = ud;
    struct tp_pgw *w = r->w;
    if (err == TP_ECLOSED)
        return;
    const char *what = NULL;
    if (!tp_pgw_reply_is_error(err, reply) && tp_reply_type(reply) == TP_REPLY_ARRAY)
        what = tp_reply_str(tp_reply_at(reply, 0), NULL);
    if (what == NULL) {
        const char *text = err == 0 && reply != NULL ? tp_reply_str(reply, NULL) : NULL;
        if (!w->outage)
            tp_log_error(MOD,
                         "parking a refused entry failed (it stays pending)\tstream=%s "
                         "id=%s err=%s reply=\"%s\"",
                         w->streams[r->stream], r->id, tp_strerror(err != 0 ? err : TP_EIO),
                         text != NULL ? text : "");
        park_failed(w);
    } else {
        /* Refused and parked: by this call, or already (an earlier call whose reply was lost,
         * an older version's copy, another writer that claimed it meanwhile). */
        tp_metrics_inc(TP_METRIC_WRITER_EVENTS_REFUSED_TOTAL);
        if (strcmp(what, "parked") != 0)
            tp_log_warn(MOD, "refused entry not parked again\tstream=%s id=%s outcome=%s",
                        w->streams[r->stream], r->id, what);
        send_trim(w, r->stream); /* the batch's trim ran before this XACK */
    }
    ack_release(w);
}

/* After COMMIT: XACK of the written ids, then the trim of each stream acked (every stream when
 * `all`: the idle trim after a failure or at start). One XTRIM per stream and batch replaces an
 * XDEL per id; the ids' entries leave the stream once no earlier entry is still pending. */
static void send_acks(struct tp_pgw *w, bool all)
{
    w->phase = TP_PGW_PH_ACK;
    w->outstanding = 1;
    w->park_failed = false;
    for (int s = 0; s < w->nstreams; s++) {
        size_t n = w->ack_n[s];
        if (n > 0) {
            const char **argv = tp_xmalloc((n + 3) * sizeof(*argv));
            argv[0] = "XACK";
            argv[1] = w->streams[s];
            argv[2] = TP_PGW_GROUP;
            for (size_t i = 0; i < n; i++)
                argv[3 + i] = w->ack_ids[s][i];
            if (tp_store_commandargv(w->store, on_ack, w, (int)n + 3, argv, NULL) == 0)
                w->outstanding++;
            else {
                ack_failed(w, "XACK submit", TP_EUNAVAIL);
                w->pending_mode = true;
            }
            free(argv);
        }
        if (n > 0 || all)
            send_trim(w, s);
    }
    for (struct tp_pgw_rejected *r = w->rejected; r != NULL; r = r->next) {
        struct tp_script_park_args p = {.stream = w->streams[r->stream],
                                        .group = TP_PGW_GROUP,
                                        .src_id = r->id,
                                        .error = r->error,
                                        .look_back = TP_PGW_BATCH,
                                        .fields = (const char *const *)r->fields,
                                        .nfields = r->nfields};
        int rc = tp_script_park(w->store, &p, on_parked, r);
        if (rc == 0)
            w->outstanding++;
        else
            park_failed(w);
    }
    ack_release(w);
}

/* --- Reading --- */

/* Fixed-capacity field arrays for one event (our events have < 16 fields). */
#define MAX_FIELDS 32

size_t tp_pgw_each_event(struct tp_pgw *w, const struct tp_store_reply *r, long only,
                         tp_pgw_event_fn fn, void *ud)
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
    struct tp_pgw_batch *b = ud;
    if (ev != NULL && tp_pgw_batch_add(b, ev) != 0)
        tp_pgw_reject(w, stream, id, ev, "malformed or unknown event");
}

static void on_read(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    int64_t cut_ms = tp_mono_ms(); /* where this batch ends: the next one starts here */
    w->read_not_before_ms = 0;
    w->yielding = false;
    if (tp_pgw_reply_is_error(err, r)) {
        if (err == 0 && r != NULL && strstr(tp_reply_str(r, NULL), "NOGROUP") != NULL)
            w->phase = TP_PGW_PH_GROUPS; /* the stream was deleted (FLUSHALL): recreate */
        tp_pgw_fail_soon(w, "XREADGROUP", err != 0 ? err : TP_EIO);
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
    b.wait_for_rounds = w->round_waits < TP_PGW_ROUND_WAITS;
    /* A re-read of our pending entries (after a claim, a failure, a reconnect, a start) is a
     * replay by construction: its bets and credits may well be in Postgres already, so it goes
     * in with the skipping INSERTs at once instead of a plain first try doomed to be redone
     * (pgw_write.c, tp_pgw_write). pending_mode is what this read asked for: nothing changes it
     * while a read is in flight (the writer is busy). */
    b.skip_existing = w->pending_mode;
    size_t total = tp_pgw_each_event(w, r, -1, add_to_batch, &b);
    if (total == 0) {
        tp_pgw_batch_deinit(&b);
        if (w->pending_mode && w->claim_again) {
            w->claim_again = false;
            w->last_claim_ms = tp_mono_ms() - TP_PGW_CLAIM_EVERY_MS; /* claim on the next step */
        }
        w->pending_mode = false;
        w->busy = false;
        tp_pgw_succeeded(w);
        if (w->trim_all) {
            w->trim_all = false; /* set again if this trim fails */
            send_acks(w, true);
            return;
        }
        tp_pgw_step(w);
        return;
    }
    /* A large settlement's credits (tp_pgw_settle_yield): the batch that takes them past the
     * line is not written now. Its entries stay pending under our name, unacknowledged, and the
     * writer reads nothing for postgres.settle_yield; then it re-reads them as after a failed
     * write (pending mode, held too: tp_pgw_step) and goes on. So Postgres writes nothing more
     * of the settlement while its pages run. A re-read batch is never held: it is the one a
     * hold left, or one after a failure, which must not wait. */
    if (!w->pending_mode) {
        int64_t now_ms = tp_mono_ms();
        /* Only a settlement happening now is held: the credits' age is the writer's wall clock
         * less Redis's at their XADD (one clock on one host). A Redis clock skewed from this
         * host's only makes a hold happen or not: the held entries stay pending and are written
         * after it either way, so a skew never loses nor doubles anything. */
        int64_t age_ms = tp_now_ms() - b.credits_id_ms;
        int64_t hold_ms = tp_pgw_settle_yield(&w->yield, now_ms, b.nrows[TP_PGW_PAYOUTS], age_ms,
                                              w->cfg->postgres.settle_yield_ms);
        if (hold_ms > 0) {
            tp_log_info(MOD, "writer yields to a settlement\tstreak_rows=%lld hold_ms=%lld",
                        (long long)w->yield.rows, (long long)hold_ms);
            tp_pgw_batch_deinit(&b);
            tp_pgw_free_acks(w);
            w->pending_mode = true;
            w->yielding = true;
            w->read_not_before_ms = now_ms + hold_ms;
            w->busy = false;
            tp_pgw_step(w);
            return;
        }
    }
    char perr[256];
    int64_t t0 = tp_mono_ms();
    int rc = tp_pgw_write(w, r, total, &b, perr, sizeof(perr));
    /* The write blocked this loop; without a fresh ev_now every command sent next (the XACKs)
     * would get a deadline already past and time out before its reply, and the batch would be
     * written again. */
    ev_now_update(w->loop);
    size_t rows = tp_pgw_batch_rows(&b);
    int streams = 0;
    bool full = false; /* a stream gave all the read asked for: more may be waiting */
    for (int s = 0; s < w->nstreams; s++) {
        streams += w->ack_n[s] > 0;
        full = full || w->ack_n[s] >= (size_t)w->read_asked;
    }
    tp_log_debug(
        MOD, "batch\tentries=%zu rows=%zu streams=%d skipped=%zu pending_mode=%d rc=%d ms=%lld",
        total, rows, streams, b.skipped, (int)w->pending_mode, rc, (long long)(tp_mono_ms() - t0));
    tp_pgw_batch_deinit(&b);
    if (rc == TP_ETIMEDOUT) {
        /* Postgres's statement timeout cut the batch: the machine is slower than the size
         * assumes. Re-read half as many entries (the pending re-read splits this batch) and aim
         * at half the rows until batches commit again. */
        w->target_rows = TP_MAX(w->target_rows / 2, 64);
        w->read_count = TP_MAX(1, w->read_count / 2);
        tp_log_warn(MOD,
                    "a batch outlasted postgres.timeout; writing smaller batches\trows=%zu "
                    "entries=%zu next_entries=%d",
                    rows, total, w->read_count);
    } else if (rc == TP_EAGAIN && ++w->round_waits == TP_PGW_ROUND_WAITS) {
        /* A round's result waited this long for its round: that round_opened entry is not
         * coming (skipped as malformed). Write the result anyway, as before waiting existed,
         * rather than stall the outbox. */
        tp_log_error(MOD,
                     "a round never reached Postgres; writing its result without it\t"
                     "error=\"%s\"",
                     perr);
    } else if (rc == 0) {
        w->round_waits = 0;
        w->target_rows = TP_MIN(w->target_rows + w->target_rows / 8 + 1, TP_PGW_BATCH_ROWS);
        w->read_count = tp_pgw_read_count(w->read_count, total, rows, streams, w->target_rows);
    }
    if (rc != 0) {
        tp_pgw_free_acks(w);
        w->pending_mode = true; /* rebuild the batch from Redis after the backoff */
        if (!w->outage)
            tp_log_error(MOD, "Postgres write failed\terror=\"%s\"", perr);
        tp_pgw_fail_soon(w, "writing a batch to Postgres", rc);
        return;
    }
    tp_pgw_succeeded(w);
    /* A batch that did not fill its read means the writer has caught up. Reading again at once
     * would write what trickles in meanwhile as many small transactions, and a transaction's
     * fixed cost (plans, the lock, COMMIT's flush) and its round of stream commands are most of
     * the work at a few bets each: the next read waits until postgres.write_gap after this one
     * returned. A full read (a backlog) and the re-reads of pending entries never wait, so the
     * gap bounds a caught-up writer's transactions per second, not how much it can drain; and
     * a writer idle in its blocking read takes a lone entry at once. */
    if (!full && !w->pending_mode)
        w->read_not_before_ms = cut_ms + w->cfg->postgres.write_gap_ms;
    send_acks(w, false);
}

void tp_pgw_read(struct tp_pgw *w)
{
    int n = w->nstreams;
    const char **argv = tp_xmalloc((10 + 2 * (size_t)n) * sizeof(*argv)); /* 9 fixed words */
    char count[16], block[16];
    snprintf(count, sizeof(count), "%d", w->read_count);
    w->read_asked = w->read_count;
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
        tp_pgw_fail_soon(w, "XREADGROUP submit", rc);
}
