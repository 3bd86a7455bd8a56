/*
 * Postgres write-behind thread (see include/tickpool/store/pgw.h for the contract): its life,
 * the sequence that drives it, its health and the outbox lag metrics. The other jobs live in
 * pgw_outbox.c (Redis), pgw_write.c (Postgres) and pgw_batch.c (events → SQL, pure); they share
 * src/store/pgw_internal.h.
 *
 * The thread is a small state machine on its own ev_loop, driven by store callbacks:
 *
 *   groups → claim → read → write → ack → read …   (claim again every TP_PGW_CLAIM_EVERY_MS)
 *
 * One phase runs at a time; a failure anywhere (Redis down, Postgres down, a refused command)
 * stops the sequence and steps it again after a doubling backoff. Every INSERT is idempotent
 * and entries are acknowledged only after COMMIT, so a stop or crash at any point loses nothing
 * and doubles nothing.
 */
#include "pgw_internal.h"
#include "tickpool/store/pgw_pg.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/net/worker.h"

#include <ev.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MOD "pgw"
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 10000
#define LAG_EVERY_MS 1000
/* The parked entries are counted this often: an operator's backlog, not a rate. */
#define PARKED_EVERY_MS 5000

/* --- Sequence and health --- */

void tp_pgw_fail_soon(struct tp_pgw *w, const char *what, int err)
{
    if (!w->outage)
        tp_log_error(MOD, "%s failed, retrying with backoff\terr=%s", what, tp_strerror(err));
    w->outage = true;
    w->busy = false;
    /* Whatever failed (Redis restarted, a reply or an XACK lost, Postgres down), entries of ours
     * may be pending with no batch in memory: re-read them first, don't leave them to the idle
     * claim of another writer; and trim once things work again. */
    w->pending_mode = true;
    w->trim_all = true;
    w->backoff_ms = w->backoff_ms == 0 ? BACKOFF_MIN_MS : TP_MIN(w->backoff_ms * 2, BACKOFF_MAX_MS);
    ev_timer_set(&w->retry, w->backoff_ms / 1000.0, 0.0);
    ev_timer_start(w->loop, &w->retry);
}

void tp_pgw_succeeded(struct tp_pgw *w)
{
    if (w->outage)
        tp_log_info(MOD, "writer recovered");
    w->outage = false;
    w->backoff_ms = 0;
}

void tp_pgw_step(struct tp_pgw *w)
{
    if (w->busy || ev_is_active(&w->retry) || ev_is_active(&w->gap))
        return;
    if (atomic_load(&w->stop)) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    if (!tp_store_is_connected(w->store)) {
        tp_pgw_fail_soon(w, "connecting to Redis", TP_EUNAVAIL);
        return;
    }
    struct tp_store_stats st;
    tp_store_get_stats(w->store, &st);
    if (st.reconnects != w->reconnects) {
        /* A new connection, maybe to a restarted Redis that lost our last XACKs (AOF everysec):
         * read our own pending entries now (XREADGROUP … 0). */
        w->reconnects = st.reconnects;
        w->pending_mode = true;
        w->trim_all = true;
    }
    switch (w->phase) {
    case TP_PGW_PH_GROUPS:
        w->busy = true;
        tp_pgw_create_groups(w);
        break;
    case TP_PGW_PH_CLAIM:
        w->busy = true;
        tp_pgw_claim(w);
        break;
    case TP_PGW_PH_READ:
        if (tp_mono_ms() - w->last_claim_ms >= TP_PGW_CLAIM_EVERY_MS) {
            w->phase = TP_PGW_PH_CLAIM;
            tp_pgw_step(w);
            return;
        }
        if (!w->pending_mode || w->yielding) {
            /* Caught up after a batch that did not fill its read (on_read): wait out
             * postgres.write_gap so what arrives meanwhile goes in one transaction. Or a
             * settlement's yield (on_read): its batch is re-read in pending mode after it. */
            int64_t wait_ms = w->read_not_before_ms - tp_mono_ms();
            if (wait_ms > 0) {
                /* Debug: test_pgw checks that a caught-up writer holds and a backlog never
                 * (write_gap), and that a large settlement holds it (settle_yield). */
                tp_log_debug(MOD, "read held by %s\twait_ms=%lld",
                             w->yielding ? "settle_yield" : "write_gap", (long long)wait_ms);
                ev_timer_set(&w->gap, wait_ms / 1000.0, 0.0);
                ev_timer_start(w->loop, &w->gap);
                return;
            }
        }
        tp_pgw_read(w);
        break;
    default:
        break;
    }
}

/* The backoff (retry) or the read gap (gap) ended: step again. */
static void on_wait_over(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_pgw *w = t->data;
    ev_timer_stop(w->loop, t);
    tp_pgw_step(w);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct tp_pgw *w = a->data;
    /* A batch being acknowledged finishes first (on_ack breaks the loop); otherwise stop now:
     * anything read but not written stays pending in Redis. */
    if (w->phase != TP_PGW_PH_ACK)
        ev_break(loop, EVBREAK_ALL);
}

/* --- Lag metrics (worker 0 only) --- */

static void on_lag(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (!tp_pgw_reply_is_error(err, r)) {
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

/* XLEN of one rejected stream: summed; the gauge moves only once every stream answered, so a
 * Redis blip never shows the parked entries gone. */
static void on_parked_len(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_pgw *w = ud;
    if (err == TP_ECLOSED)
        return;
    if (r != NULL && !tp_pgw_reply_is_error(err, r) && tp_reply_type(r) == TP_REPLY_INTEGER)
        w->parked_entries += tp_reply_integer(r);
    else if (r != NULL || err != 0)
        w->parked_failed = true; /* r NULL with err 0: the guard of count_parked */
    if (--w->parked_outstanding > 0)
        return;
    if (!w->parked_failed)
        tp_metrics_set(TP_METRIC_WRITER_ENTRIES_PARKED, w->parked_entries);
}

/* tickpool_writer_entries_parked: Σ XLEN <stream>:rejected (nothing trims them: an entry leaves
 * only when an operator deletes it after its replay). */
static void count_parked(struct tp_pgw *w)
{
    w->last_parked_ms = tp_mono_ms();
    w->parked_entries = 0;
    w->parked_failed = false;
    w->parked_outstanding = 1;
    for (int i = 0; i < w->nstreams; i++) {
        struct tp_key key;
        const char *rejected = tp_keys_rejected(&key, w->streams[i]);
        if (tp_store_commandl(w->store, on_parked_len, w, "XLEN", rejected, NULL) == 0)
            w->parked_outstanding++;
        else
            w->parked_failed = true;
    }
    on_parked_len(0, NULL, w);
}

static void on_periodic(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_pgw *w = t->data;
    if (w->report_lag && w->parked_outstanding == 0 && tp_store_is_connected(w->store) &&
        tp_mono_ms() - w->last_parked_ms >= PARKED_EVERY_MS)
        count_parked(w);
    if (w->report_lag && w->lag_outstanding == 0 && tp_store_is_connected(w->store)) {
        w->lag_entries = 0;
        w->lag_oldest_ms = 0;
        w->lag_outstanding = 1;
        for (int i = 0; i < w->nstreams; i++) {
            /* Argument lists, not formats: once a second. */
            const char *s = w->streams[i];
            if (tp_store_commandl(w->store, on_lag, w, "XLEN", s, NULL) == 0)
                w->lag_outstanding++;
            if (tp_store_commandl(w->store, on_lag, w, "XRANGE", s, "-", "+", "COUNT", "1", NULL) ==
                0)
                w->lag_outstanding++;
        }
        on_lag(0, NULL, w);
    }
    tp_pgw_step(w); /* also wakes the sequence after Redis came back */
}

/* The commands the iteration's callbacks issued go to Redis now, in one write, rather than when
 * the loop's next poll reports the socket writable. That poll was a wake-up of its own, and
 * hiredis's write watcher, armed and disarmed, cost two epoll_ctl: ~3 polls and ~6 epoll_ctl per
 * batch (XREADGROUP, the XACK/XINFO/XPENDING trio, XTRIM; bench/README.md "Writer", session 12).
 * A watcher started and stopped before the poll leaves libev nothing to tell the kernel. */
static void on_flush(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop, (void)revents;
    struct tp_pgw *w = p->data;
    tp_store_flush(w->store);
}

static void *thread_main(void *arg)
{
    struct tp_pgw *w = arg;
    ev_run(w->loop, 0);
    /* Stopped. The flush watcher is the one that reads w->store, freed below: it is stopped
     * first, so no later turn of this loop can flush a freed store (ev_ref balances
     * tp_pgw_start's ev_unref, as libev asks before stopping such a watcher). The timers and
     * the async watcher are never stopped: they go with the loop (destroy). */
    ev_ref(w->loop);
    ev_prepare_stop(w->loop, &w->flush);
    /* Close Redis (pending callbacks get TP_ECLOSED and do nothing) and Postgres. */
    tp_store_free(w->store);
    w->store = NULL;
    tp_pgw_pg_close(w->pg);
    w->pg = NULL;
    return NULL;
}

static void destroy(struct tp_pgw *w)
{
    if (w->ack_ids != NULL) {
        tp_pgw_free_acks(w);
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
    w->store = tp_store_new(w->loop, &cfg->redis, TP_STORE_SCRIPTS_BUILTIN); /* park.lua */
    if (w->store == NULL)
        goto fail;
    ev_async_init(&w->stop_async, on_stop);
    w->stop_async.data = w;
    ev_async_start(w->loop, &w->stop_async);
    ev_timer_init(&w->retry, on_wait_over, 0.0, 0.0);
    w->retry.data = w;
    ev_timer_init(&w->gap, on_wait_over, 0.0, 0.0);
    w->gap.data = w;
    ev_timer_init(&w->periodic, on_periodic, 0.05, LAG_EVERY_MS / 1000.0);
    w->periodic.data = w;
    ev_timer_start(w->loop, &w->periodic);
    ev_prepare_init(&w->flush, on_flush);
    w->flush.data = w;
    ev_prepare_start(w->loop, &w->flush);
    ev_unref(w->loop); /* the flush alone keeps no loop running */
    w->phase = TP_PGW_PH_GROUPS;
    w->pending_mode = true; /* a restart under the same name would find its own entries */
    w->trim_all = true;     /* and a crash may have left committed entries untrimmed */
    w->target_rows = TP_PGW_BATCH_ROWS;
    w->read_count = 16; /* a guess (16 full `bets` entries are ~6,000 rows); the first batch
                         * measures the rows per entry */

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
