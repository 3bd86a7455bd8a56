/*
 * The idempotency filter's windows, built ahead of time by the leader's process (see
 * tp_leader_idemfilter_install in tickpool/game/leader.h, docs/operations.md §4).
 *
 * A window's filter in a bucket is TP_KEYS_IDEM_SHARDS strings (tp_keys_idem_shard). Creating
 * one zeroes it: measured about 3.3 ms per MiB on the loaded 2-core test machine, so the
 * default 128 MiB made in one command held Redis for about 450 ms at 00:00 UTC, when the day's
 * first bet allocated it. Here the leader creates the shards of the current window (when
 * missing: a new deployment, a leader that was down) and of the next one from LEAD before it
 * starts, one shard of at most 2^19 bytes per idem_filter_build.lua call (several small ones
 * per call, up to STEP_BYTES), DEPTH calls in flight: no step holds Redis for more than about
 * a millisecond at the default size and bets flow between them. The last shard is created alone
 * and last; archival (idem_unindex.lua) reads its presence as "the window is whole" and writes
 * a window only then, so nothing but this builder ever allocates a shard.
 *
 * The filter is written only by archival (idem_unindex.lua, src/game/leader_archive.c), into the
 * window current at archival, which waits while that window is not whole; bets only read it.
 *
 * Each step creates only what is missing and each shard gets shard 0's size, so a kill -9 or
 * a change of leader mid-build just makes the next leader redo the probe and carry on. Old
 * windows need no work: every shard expires (PEXPIRE at creation) at the end of the window
 * after its own plus slack, each at most 2^19 bytes freed at a time.
 */
#include "tickpool/game/leader.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <ev.h>

#include <stdlib.h>

#define MOD "idemfilter"
#define PERIOD_S 1.0
/* The next window is built from this long before it starts (half a window when the test hook
 * shortens it below 2 h). */
#define LEAD_MS 3600000LL
/* Bytes one step creates at most (whole shards; at least one), and steps in flight: Redis runs
 * them one after the other, the pipeline only hides the round trips. */
#define STEP_BYTES (128 * 1024)
#define DEPTH 4

static size_t slot = SIZE_MAX;

struct build {
    struct tp_worker *w;
    struct tp_store *store;
    const struct tp_config_game *g;
    ev_timer timer;
    bool busy, failed;
    int64_t done; /* newest window built whole in every bucket under this lead (-1: none) */

    /* The window being built. */
    int64_t win, shard_bytes, started_ms;
    int bucket, next, per, created, inflight;
};

static void step(struct build *b);

static int64_t span_ms(void)
{
    return (int64_t)tp_keys_idem_ttl_s() * 1000;
}

static void fail(struct build *b, int err, const char *what)
{
    tp_log_warn(MOD,
                "filter build step failed, retried next pass\twindow=%lld bucket=%d step=%s "
                "err=%d",
                (long long)b->win, b->bucket, what, err);
}

static void bucket_done(struct build *b)
{
    b->bucket++;
    b->next = -1;
    step(b);
}

static void on_step(int err, const struct tp_store_reply *r, void *ud)
{
    struct build *b = ud;
    b->inflight--;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_INTEGER) {
        if (!b->failed)
            fail(b, err != 0 ? err : TP_EIO, b->next < 0 ? "probe" : "build");
        b->failed = true;
    } else if (b->next < 0) {
        /* The probe: the last shard exists, this bucket's window is whole. */
        if (tp_reply_integer(r) == 1) {
            bucket_done(b);
            return;
        }
        b->next = 0;
    } else {
        b->created += (int)tp_reply_integer(r);
    }
    if (b->inflight > 0)
        return;
    if (b->failed) {
        b->busy = false;
        return;
    }
    if (b->next >= TP_KEYS_IDEM_SHARDS) {
        bucket_done(b);
        return;
    }
    step(b);
}

/* Sends shards [first, first + n) of (win, bucket), or the probe of the last shard. */
static bool send(struct build *b, int first, int n, bool probe)
{
    struct tp_script_idem_filter_build_args a = {.bucket = b->bucket,
                                                 .window = b->win,
                                                 .first = first,
                                                 .n = n,
                                                 .shard_bytes = b->shard_bytes,
                                                 .expire_ms = (b->win + 2) * span_ms() -
                                                              tp_now_ms() + TP_KEYS_IDEM_SLACK_MS,
                                                 .probe = probe};
    int rc = tp_script_idem_filter_build(b->store, &a, on_step, b);
    if (rc != 0) {
        fail(b, rc, "send");
        b->failed = true;
        return false;
    }
    b->inflight++;
    return true;
}

/* The next calls for (win, bucket): the probe; then every shard but the last, DEPTH steps in
 * flight; then, once they all answered, the last shard alone. */
static void step(struct build *b)
{
    if (!tp_leader_is_leader(tp_leader_of(b->w))) {
        b->busy = false;
        return;
    }
    if (b->bucket >= b->g->buckets) {
        if (b->created > 0)
            tp_log_info(MOD,
                        "idempotency filter built\twindow=%lld buckets=%d shards=%d "
                        "shard_bytes=%lld ms=%lld",
                        (long long)b->win, b->g->buckets, b->created, (long long)b->shard_bytes,
                        (long long)(tp_now_ms() - b->started_ms));
        b->done = b->win;
        b->busy = false;
        return;
    }
    int last = TP_KEYS_IDEM_SHARDS - 1;
    if (b->next < 0) {
        if (!send(b, last, 1, true))
            b->busy = false;
        return;
    }
    if (b->next == last) {
        b->next = TP_KEYS_IDEM_SHARDS;
        if (!send(b, last, 1, false))
            b->busy = false;
        return;
    }
    while (b->inflight < DEPTH && b->next < last) {
        int n = TP_MIN(b->per, last - b->next);
        if (!send(b, b->next, n, false))
            break;
        b->next += n;
    }
    if (b->inflight == 0)
        b->busy = false;
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct build *b = t->data;
    if (!tp_leader_is_leader(tp_leader_of(b->w))) {
        b->done = -1;
        return;
    }
    if (b->busy || b->store == NULL || !tp_store_is_connected(b->store))
        return;
    int64_t now = tp_now_ms(), span = span_ms();
    int64_t win = tp_keys_idem_window(now, tp_keys_idem_ttl_s());
    int64_t lead = TP_MIN(LEAD_MS, span / 2);
    /* The current window first (it is read and written now), then the next one. */
    if (b->done < win)
        b->win = win;
    else if (b->done < win + 1 && now >= (win + 1) * span - lead)
        b->win = win + 1;
    else
        return;
    b->busy = true;
    b->shard_bytes = tp_keys_idem_shard_bytes(b->g->idem_filter, b->g->buckets);
    b->per = (int)TP_MAX(1, STEP_BYTES / b->shard_bytes);
    b->started_ms = now;
    b->bucket = 0;
    b->next = -1;
    b->created = 0;
    b->failed = false;
    step(b);
}

static void on_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct build *b = tp_xcalloc(1, sizeof(*b));
    b->w = w;
    b->store = tp_store_of(w);
    b->g = &tp_worker_config(w)->game;
    b->done = -1;
    ev_timer_init(&b->timer, timer_cb, 0.2, PERIOD_S);
    b->timer.data = b;
    ev_timer_start(tp_worker_loop(w), &b->timer);
    /* Idle work: the timer must not keep a draining loop alive. */
    ev_unref(tp_worker_loop(w));
    tp_worker_slot_set(w, slot, b);
}

/* Frees the builder unless a build is under way: its steps' callbacks hold it, and the store,
 * freed after this hook, answers them TP_ECLOSED (the process exits anyway). */
static void on_exit_hook(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct build *b = tp_worker_slot_get(w, slot);
    if (b == NULL || b->busy || b->inflight > 0)
        return;
    ev_ref(tp_worker_loop(w)); /* the timer's, given back before it stops */
    ev_timer_stop(tp_worker_loop(w), &b->timer);
    free(b);
    tp_worker_slot_set(w, slot, NULL);
}

void tp_leader_idemfilter_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
    tp_worker_on_exit(on_exit_hook, NULL);
}
