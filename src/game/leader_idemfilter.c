/*
 * The idempotency filter's upkeep by the leader's process (see tp_leader_idemfilter_install in
 * tickpool/game/leader.h, docs/operations.md §4): its shards built once, an older version's
 * per-day filter folded into them, and each day the next day's words zeroed.
 *
 * A bucket's filter is TP_KEYS_IDEM_SHARDS strings (tp_keys_idem_slots), each holding three days,
 * their 32-bit words interleaved: bet_batch.lua reads today's and yesterday's word in one
 * GETRANGE, archival (idem_unindex.lua, src/game/leader_archive.c) writes day d's, and the third
 * day's words are the ones zeroed for tomorrow. Creating a shard zeroes it (about 3.3 ms per MiB
 * on the loaded 2-core test machine), so the shards are created here, one step of at most
 * STEP_BYTES per idem_slots.lua call, DEPTH calls in flight, shard 0 alone first (its size is
 * every shard's) and the last shard alone and last, once every other step of the pass answered
 * (step below): archival reads its presence as "the filter is whole" and writes only then, and
 * a bet reads the filter only then (before it, nothing can have been archived into any shard:
 * every key is absent, so a fresh Redis or a slow build never sends a fresh key to Postgres;
 * after it, a missing shard is "check"). A build step also
 * folds an older version's per-day shards (tp_keys_idem_shard) of yesterday, today and tomorrow
 * into their days and deletes them, their shard 0 replaced by a tombstone from the first step, so
 * no older process reads or writes that filter once the fold began (idem_slots.lua).
 *
 * During day d, from TP_KEYS_IDEM_SLACK_MS after its start until as long before its end (a
 * tenth of a test hook's short day at most), each shard's day d + 1 words (day d - 2's, read by
 * nobody by then) are zeroed with one BITOP AND against a mask: a reader or archival whose clock
 * is off by up to the slack never reads or writes day d + 1 in that part of the day. A zeroing
 * not done by the end (no leader all day) leaves older bits in day d + 1: false positives
 * ("check": Postgres answers), never a miss. The step given the last shard records the day as
 * zeroed.
 *
 * The probe also counts a day among d - 1 .. d + 1 whose older per-day shard 0 is no tombstone
 * yet as a trace, so a build pass runs once a day, creating nothing but day d + 1's tombstone
 * (an older version started later is fenced the same way): 1,024 cheap steps a bucket.
 *
 * Every step does only what is left, so a kill -9 or a change of leader mid-pass just makes the
 * next leader probe and carry on. The shards have no TTL: Redis holds 3 × game.idem_filter.
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
/* Bytes one step creates or zeroes at most (whole shards; at least one), and steps in flight:
 * Redis runs them one after the other, the pipeline only hides the round trips. */
#define STEP_BYTES (128 * 1024)
#define DEPTH 4

static size_t slot = SIZE_MAX;

enum phase { PROBE, BUILD, ZERO };

struct build {
    struct tp_worker *w;
    struct tp_store *store;
    const struct tp_config_game *g;
    ev_timer timer;
    bool busy, failed;

    /* The pass under way: one bucket at a time, its probe, then its build or zeroing. */
    int64_t day, shard_bytes, started_ms;
    int bucket, next, per, created, zeroed, inflight;
    enum phase phase;
    /* Buckets whose shards were found at another size than the configuration's, already said
     * (once per bucket and process; game.buckets is fixed for a process). */
    bool *size_warned;
};

static void step(struct build *b);

static int64_t span_ms(void)
{
    return (int64_t)tp_keys_idem_ttl_s() * 1000;
}

static int64_t margin_ms(void)
{
    return TP_MIN(TP_KEYS_IDEM_SLACK_MS, span_ms() / 10);
}

static void fail(struct build *b, int err, const char *what)
{
    tp_log_warn(MOD, "filter step failed, retried next pass\tday=%lld bucket=%d step=%s err=%d",
                (long long)b->day, b->bucket, what, err);
}

static void bucket_done(struct build *b)
{
    b->bucket++;
    b->phase = PROBE;
    b->next = 0;
    step(b);
}

/* Inside day d's part where day d + 1's words may be zeroed (idem_slots.lua checks it too). */
static bool zero_time(int64_t day, int64_t now)
{
    return now >= day * span_ms() + margin_ms() && now <= (day + 1) * span_ms() - margin_ms();
}

static void on_probe(struct build *b, const struct tp_store_reply *r)
{
    if (tp_reply_type(r) != TP_REPLY_ARRAY || tp_reply_len(r) != 4) {
        b->failed = true;
        return;
    }
    bool whole = tp_reply_integer(tp_reply_at(r, 0)) == 1;
    bool old = tp_reply_integer(tp_reply_at(r, 1)) == 1;
    int64_t zeroed = tp_reply_integer(tp_reply_at(r, 2));
    int64_t built = tp_reply_integer(tp_reply_at(r, 3));
    /* The shards keep the size they were built at (a changed game.idem_filter or game.buckets
     * does not resize them: docs/operations.md §4), which the operator would not see otherwise. */
    if (whole && built != b->shard_bytes && !b->size_warned[b->bucket]) {
        b->size_warned[b->bucket] = true;
        tp_log_warn(MOD,
                    "the filter's shards keep their built size, not game.idem_filter's\t"
                    "bucket=%d built_bytes=%lld configured_bytes=%lld",
                    b->bucket, (long long)built, (long long)b->shard_bytes);
    }
    if (!whole || old)
        b->phase = BUILD;
    else if (zeroed != b->day + 1 && zero_time(b->day, tp_now_ms()))
        b->phase = ZERO;
    else
        b->phase = PROBE; /* nothing to do: bucket_done below */
    b->next = 0;
}

static void on_step(int err, const struct tp_store_reply *r, void *ud)
{
    struct build *b = ud;
    b->inflight--;
    if (err != 0) {
        if (!b->failed)
            fail(b, err, b->phase == PROBE ? "probe" : b->phase == BUILD ? "build" : "zero");
        b->failed = true;
    } else if (b->phase == PROBE) {
        on_probe(b, r);
        if (b->failed)
            fail(b, TP_EIO, "probe");
        else if (b->phase == PROBE) {
            bucket_done(b);
            return;
        }
    } else if (tp_reply_type(r) != TP_REPLY_INTEGER) {
        if (!b->failed)
            fail(b, TP_EIO, b->phase == BUILD ? "build" : "zero");
        b->failed = true;
    } else if (b->phase == BUILD) {
        b->created += (int)tp_reply_integer(r);
    } else if (tp_reply_integer(r) < 0) {
        /* Past the day's part (a pass that ran late): the next day's pass zeroes. */
        b->failed = true;
    } else {
        b->zeroed += (int)tp_reply_integer(r);
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

/* Sends shards [first, first + n) of this bucket in the current phase, or its probe. */
static bool send(struct build *b, int first, int n)
{
    int64_t now = tp_now_ms();
    struct tp_script_idem_slots_args a = {
        .mode = b->phase == PROBE   ? TP_IDEM_SLOTS_PROBE
                : b->phase == BUILD ? TP_IDEM_SLOTS_BUILD
                                    : TP_IDEM_SLOTS_ZERO,
        .bucket = b->bucket,
        .day = b->day,
        .first = first,
        .n = n,
        .shard_bytes = b->shard_bytes,
        .span_ms = span_ms(),
        /* A tombstone outlives the older shards' last reader (day + 2) by the slack. */
        .extra_ms =
            b->phase == ZERO ? margin_ms() : (b->day + 3) * span_ms() - now + TP_KEYS_IDEM_SLACK_MS,
        .now_ms = now};
    int rc = tp_script_idem_slots(b->store, &a, on_step, b);
    if (rc != 0) {
        fail(b, rc, "send");
        b->failed = true;
        return false;
    }
    b->inflight++;
    return true;
}

/* The next calls for this bucket: the probe; then shard 0 alone, every shard but the last,
 * DEPTH steps in flight, and once they all answered, the last shard alone. */
static void step(struct build *b)
{
    if (!tp_leader_is_leader(tp_leader_of(b->w))) {
        b->busy = false;
        return;
    }
    if (b->bucket >= b->g->buckets) {
        if (b->created > 0 || b->zeroed > 0)
            tp_log_info(MOD,
                        "idempotency filter kept\tday=%lld buckets=%d created=%d zeroed=%d "
                        "shard_bytes=%lld ms=%lld",
                        (long long)b->day, b->g->buckets, b->created, b->zeroed,
                        (long long)b->shard_bytes, (long long)(tp_now_ms() - b->started_ms));
        b->busy = false;
        return;
    }
    int last = TP_KEYS_IDEM_SHARDS - 1;
    if (b->phase == PROBE) {
        if (!send(b, 0, 1))
            b->busy = false;
        return;
    }
    if (b->next == 0 || b->next == last) {
        int s = b->next;
        b->next = s == 0 ? 1 : TP_KEYS_IDEM_SHARDS;
        if (!send(b, s, 1))
            b->busy = false;
        return;
    }
    while (b->inflight < DEPTH && b->next < last) {
        int n = TP_MIN(b->per, last - b->next);
        if (!send(b, b->next, n))
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
    if (!tp_leader_is_leader(tp_leader_of(b->w)))
        return;
    if (b->busy || b->store == NULL || !tp_store_is_connected(b->store))
        return;
    int64_t now = tp_now_ms();
    b->day = tp_keys_idem_window(now, tp_keys_idem_ttl_s());
    if (b->day < 1)
        return;
    b->busy = true;
    b->shard_bytes = tp_keys_idem_shard_bytes(b->g->idem_filter, b->g->buckets);
    b->per = (int)TP_MAX(1, STEP_BYTES / b->shard_bytes);
    b->started_ms = now;
    b->bucket = 0;
    b->next = 0;
    b->phase = PROBE;
    b->created = b->zeroed = 0;
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
    b->size_warned = tp_xcalloc((size_t)b->g->buckets, sizeof(*b->size_warned));
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
    free(b->size_warned);
    free(b);
    tp_worker_slot_set(w, slot, NULL);
}

void tp_leader_idemfilter_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
    tp_worker_on_exit(on_exit_hook, NULL);
}
