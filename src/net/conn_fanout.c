/*
 * Broadcasts handed to a worker's WebSocket sockets in slices: the beats (tick, odds, droppable)
 * and the `round` messages that ride them (conn_internal.h, tickpool/net/conn.h).
 *
 * Queueing one beat to 5,000 sockets in one go held a worker's loop for up to 47 ms on a
 * loaded machine (session 5's probes), on top of the sliced writes, and bets waited behind it.
 * So a beat is not queued to every socket when it arrives: the host keeps it, with a
 * generation number, and the worker's prepare hook visits the sockets for a bounded time per
 * loop iteration (tp_conn_run_fanout), queueing to each what it has not been given and writing
 * it at once: one pass over the sockets per beat, one write per socket.
 *
 * Newest wins across slices: a newer frame replaces the pending ones of the kinds it
 * supersedes (tp_ws_kind_supersedes, the rule of a socket's own queue), so a socket not yet
 * visited when beat k+1 arrives gets only k+1, while one that was given k has it superseded in
 * its queue unless its bytes started going out. Each socket records the newest generation it
 * was given (fan_gen), so it gets every pending frame once and in the order they arrived, with
 * increasing `ts`. A new frame does not restart the walk: it goes on from where it stopped and
 * wraps around the list once (`left` visits), so the sockets at the end of the list are not
 * starved by beats that arrive faster than a whole walk takes.
 *
 * Held frames ride the beats (tp_conn_fanout_hold): a `round` that announces no boundary (the
 * settled one of N-1, a cancellation) is not written to every socket on its own but waits, as a
 * pending frame that is never superseded, for the next beat's walk, and goes in the same write as
 * that beat: one send per socket instead of two. At 10,000 sockets the settled `round` was a
 * second full fan-out of ~5,000 sends per worker per boundary (~25 ms of CPU), beside the pair's
 * and the beats' (bench/README.md "Boundaries", session 19). The walk under way when it comes
 * takes it to the sockets it has still to visit; the others have it from the next walk, so a
 * walk's end drops only what it handed out (walk_gen), not what came since. A socket written for
 * anything else meanwhile (a reply, a payout, a broadcast queued at once) takes it first
 * (conn_ws.c), so it never goes behind what came after it. The caller bounds the wait
 * (tp_conn_fanout_release: src/stream/bcast.c, one tick_ms).
 *
 * A socket given several frames in one visit has them queued and written together (one write,
 * or one slot of the io_uring batch), not a send each.
 *
 * Everything else (the boundary's `round` pair, replies, payouts) is queued at once and written
 * from the dirty list, which the worker runs before this walk: the pair keeps its priority over
 * the beats still to be handed out. A socket written from the dirty list while beats are being
 * handed out takes them along, behind what it has queued (tp_conn_fanout_give): at a boundary the
 * beat of T is published right behind the `round` pair and normally read with it
 * (leader_boundary.c), so every socket gets both in one write instead of a second write when the
 * walk reaches it (issue 13; bench/README.md "Boundaries").
 */
#include "conn_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/send_batch.h"
#include "tickpool/net/ws.h"

#include <ev.h>
#include <stdlib.h>

/* The clock is read every this many visits: a visit that writes costs a few µs. */
#define CLOCK_EVERY 16
/* Bytes a batch holds for its gathered sends (several frames to one socket, batch_take). */
#define GATHER_BYTES (64 * 1024)

static void drop_pending(struct tp_conn_fanout *fo, int i)
{
    if (!tp_ws_kind_droppable(tp_ws_frame_kind(fo->f[i])))
        fo->held--;
    tp_ws_frame_unref(fo->f[i]);
    for (int j = i + 1; j < fo->n; j++) {
        fo->f[j - 1] = fo->f[j];
        fo->gen[j - 1] = fo->gen[j];
    }
    fo->n--;
}

static void add_pending(struct tp_conn_fanout *fo, struct tp_ws_frame *f,
                        bool (*ready)(const struct tp_conn *c))
{
    TP_ASSERT(fo->n < (int)TP_ARRAY_LEN(fo->f));
    tp_ws_frame_ref(f);
    fo->f[fo->n] = f;
    fo->gen[fo->n] = ++fo->last;
    fo->n++;
    fo->ready = ready;
}

/* Every socket is to have what is pending: once around the list from the cursor. */
static void start_walk(struct tp_conn_host *h)
{
    h->fan.walk_gen = h->fan.last;
    h->fan.left = h->nws;
}

void tp_conn_fanout(struct tp_conn_host *h, struct tp_ws_frame *f,
                    bool (*ready)(const struct tp_conn *c))
{
    struct tp_conn_fanout *fo = &h->fan;
    enum tp_ws_kind kind = tp_ws_frame_kind(f);
    TP_ASSERT(tp_ws_kind_droppable(kind));
    for (int i = fo->n - 1; i >= 0; i--)
        if (tp_ws_kind_supersedes(kind, tp_ws_frame_kind(fo->f[i])))
            drop_pending(fo, i);
    /* Each droppable kind supersedes itself: at most one pending frame per kind. */
    TP_ASSERT(fo->n - fo->held < TP_WS_KIND_COUNT_);
    add_pending(fo, f, ready);
    start_walk(h); /* the held frames go with it */
}

bool tp_conn_fanout_hold(struct tp_conn_host *h, struct tp_ws_frame *f,
                         bool (*ready)(const struct tp_conn *c))
{
    struct tp_conn_fanout *fo = &h->fan;
    TP_ASSERT(!tp_ws_kind_droppable(tp_ws_frame_kind(f)));
    if (fo->held == TP_CONN_FANOUT_HELD_MAX)
        return false;
    add_pending(fo, f, ready);
    fo->held++;
    return true;
}

void tp_conn_fanout_release(struct tp_conn_host *h)
{
    if (h->fan.last > h->fan.walk_gen)
        start_walk(h);
}

/* True when `c` is to be given the pending frames now: a WebSocket that has not had the newest,
 * and is ready for beats. Records that it has them (or skipped them: not ready); *had is the
 * newest generation it had before. */
static bool take_turn(struct tp_conn_fanout *fo, struct tp_conn *c, uint64_t *had)
{
    if (tp_conn_is_closed(c) || c->ws == NULL || c->fan_gen >= fo->last)
        return false;
    *had = c->fan_gen;
    c->fan_gen = fo->last;
    /* No snapshot yet: these beats are not its (tp_conn_ws_fanout_from_now). */
    return fo->ready == NULL || fo->ready(c);
}

/* Queues to socket `c` the pending frames it has not had, oldest first, and records that it has
 * them (or skipped them: not ready). */
static void give(struct tp_conn_host *h, struct tp_conn *c)
{
    struct tp_conn_fanout *fo = &h->fan;
    uint64_t had;
    if (!take_turn(fo, c, &had))
        return;
    for (int i = 0; i < fo->n; i++)
        if (fo->gen[i] > had)
            tp_conn_ws_queue(c, fo->f[i]);
}

/* Takes the result `r` of writing frame i straight to `c` (tp_ws_write_frame's returns):
 * counts what went, and after a partial write or an error does what a flush does. True when
 * the next frame may be written straight too (this one went whole). */
static bool direct_done(struct tp_conn_fanout *fo, struct tp_conn *c, int i, int r)
{
    if (r == 0 || r == TP_IO_WANT_WRITE || r == TP_IO_WANT_READ) {
        size_t len; /* sent, or started: the rest counts when flushed */
        tp_ws_frame_bytes(fo->f[i], &len);
        fo->out_msgs++;
        /* Whole: it went from an empty queue (tp_ws_can_write_frame), so nothing is queued and
         * the socket's ws state is not read: one cold cache line less per socket-beat. */
        fo->out_bytes += r == 0 ? len : len - tp_ws_queued_bytes(c->ws);
    }
    if (r == 0)
        return true;
    if (r != TP_EAGAIN) {
        /* Left bytes or failed: tp_conn_ws_written does all a flush does with its result
         * (TLS wanting a read, closing on an error). Its close for a session that wants to
         * close never fires here: a closing session refuses a direct write (TP_EAGAIN).
         * Then watch for writability while the rest waits. */
        tp_conn_ws_written(c, r);
        tp_conn_update_events(c);
    }
    return false; /* from here on behind what is queued */
}

/* Gives `c` its pending frames from index `from` on (those newer than `had`): written straight
 * from the shared bytes while `direct` holds and each goes whole, the rest queued behind and
 * written at once, or by its own write when that is coming. */
static void deliver(struct tp_conn_host *h, struct tp_conn *c, uint64_t had, int from, bool direct)
{
    struct tp_conn_fanout *fo = &h->fan;
    bool queued = false;
    for (int i = from; i < fo->n; i++) {
        if (fo->gen[i] <= had)
            continue;
        if (direct) {
            int r = tp_ws_write_frame(c->ws, fo->f[i], &c->io);
            direct = direct_done(fo, c, i, r);
            if (tp_conn_is_closed(c))
                return;
            /* Whole, or started: its rest is kept as a flush keeps it, and queueing it too would
             * send it twice (session 14). Only a refused write (TP_EAGAIN) leaves it to queue. */
            if (r != TP_EAGAIN)
                continue;
        }
        if (tp_conn_ws_queue(c, fo->f[i]) != TP_ECLOSED)
            queued = true;
    }
    if (!queued || c->dirty || c->bdirty || (c->events & EV_WRITE))
        return; /* nothing queued, or its own write comes (the watcher, once the socket drains) */
    tp_conn_run_deferred(c);
}

/* A send of the io_uring path's batch: whose, and which frame, or its queue gathered. */
struct batched {
    struct tp_conn *c;
    uint64_t had;    /* the newest generation it had before this visit */
    int i;           /* the frame being sent: its first new one; -1: gathered */
    size_t off, len; /* gathered: its bytes in the batch's `gather` */
};

/* The io_uring path (tp_conn_fanout_setup): the straight writes of a slice, made together. */
struct tp_conn_fanout_batch {
    struct tp_send_batch *sends;
    struct batched *at; /* send k of the batch is at[k] */
    uint64_t sent;      /* sends made so far (tp_conn_fanout_batched) */
    uint8_t *gather;    /* the gathered sends' bytes (GATHER_BYTES), gathered bytes used */
    size_t gathered;
};

static void batch_free(struct tp_conn_fanout *fo)
{
    if (fo->_batch == NULL)
        return;
    tp_send_batch_free(fo->_batch->sends);
    free(fo->_batch->at);
    free(fo->_batch->gather);
    free(fo->_batch);
    fo->_batch = NULL;
}

/* Makes the batch's sends (one io_uring_enter), then takes each result as the socket's direct
 * write of that frame and gives it its later frames (deliver). Every send completes before the
 * enter returns (MSG_DONTWAIT, tickpool/net/send_batch.h): the frames, held by fo->f until the
 * walk ends, and the sockets, freed only by the prepare hook's reap, outlive it. */
static void batch_run(struct tp_conn_host *h)
{
    struct tp_conn_fanout *fo = &h->fan;
    struct tp_conn_fanout_batch *bt = fo->_batch;
    if (bt == NULL || tp_send_batch_count(bt->sends) == 0)
        return;
    int rc = tp_send_batch_run(bt->sends);
    unsigned n = tp_send_batch_count(bt->sends);
    bt->sent += n;
    for (unsigned k = 0; k < n; k++) {
        struct batched *e = &bt->at[k];
        if (tp_conn_is_closed(e->c))
            continue;
        ssize_t w = tp_send_batch_result(bt->sends, k);
        if (e->i < 0) { /* its queue, gathered (batch_take) */
            if (w > 0)
                fo->out_bytes += (size_t)w;
            tp_conn_ws_output_sent(e->c, bt->gather + e->off, e->len, w);
            continue;
        }
        bool direct = direct_done(fo, e->c, e->i, tp_ws_frame_written(e->c->ws, fo->f[e->i], w));
        if (!tp_conn_is_closed(e->c))
            deliver(h, e->c, e->had, e->i + 1, direct);
    }
    tp_send_batch_clear(bt->sends);
    bt->gathered = 0;
    if (rc != 0) {
        tp_log_warn("fanout", "io_uring failed: one send() per socket from now on");
        batch_free(fo);
    }
}

/* Adds the send of frame i to plain socket `c` to the batch, making the batch's sends first
 * when it is full. */
static void batch_add(struct tp_conn_host *h, struct tp_conn *c, uint64_t had, int i)
{
    struct tp_conn_fanout *fo = &h->fan;
    if (tp_send_batch_full(fo->_batch->sends))
        batch_run(h);
    if (fo->_batch == NULL) { /* the ring failed in that run */
        deliver(h, c, had, 0, true);
        return;
    }
    size_t len;
    const uint8_t *p = tp_ws_frame_bytes(fo->f[i], &len);
    unsigned k = tp_send_batch_add(fo->_batch->sends, c->io.fd, p, len);
    fo->_batch->at[k] = (struct batched){.c = c, .had = had, .i = i};
}

/* Adds to the batch one send of what `c` has queued, its new frames just queued from an empty
 * queue; false when it does not fit (more than the batch's gather room, or the ring failed while
 * making room): the caller writes it as a flush. */
static bool batch_take(struct tp_conn_host *h, struct tp_conn *c)
{
    struct tp_conn_fanout *fo = &h->fan;
    if (tp_send_batch_full(fo->_batch->sends))
        batch_run(h);
    struct tp_conn_fanout_batch *bt = fo->_batch;
    if (bt == NULL)
        return false;
    size_t n = tp_ws_take_output(c->ws, bt->gather + bt->gathered, GATHER_BYTES - bt->gathered);
    if (n == 0 && bt->gathered > 0) { /* no room left: make the batch's sends first */
        batch_run(h);
        if ((bt = fo->_batch) == NULL)
            return false;
        n = tp_ws_take_output(c->ws, bt->gather, GATHER_BYTES);
    }
    if (n == 0)
        return false;
    unsigned k = tp_send_batch_add(bt->sends, c->io.fd, bt->gather + bt->gathered, n);
    bt->at[k] = (struct batched){.c = c, .i = -1, .off = bt->gathered, .len = n};
    bt->gathered += n;
    return true;
}

/*
 * Gives socket `c` its pending frames and writes them now. A socket with nothing queued (the
 * common case: it took the previous beat whole) gets each frame written straight from the
 * shared bytes (tp_ws_write_frame): no queue item, no copy, no change of its events or timer,
 * which is all a socket costs beyond its `send` (bench/README.md "Viewers", session 11). With
 * io_uring (plain sockets only) that first send joins the slice's batch, and the socket's result
 * is taken when the batch is made (batch_run). A socket given several frames (a held `round` and
 * its beat) has them queued and written in one write: one slot of the batch (batch_take), or
 * one flush. Any other socket has them queued behind its output and written as before: at once,
 * or by its deferred work or its watcher once it drains.
 */
static void visit(struct tp_conn_host *h, struct tp_conn *c)
{
    struct tp_conn_fanout *fo = &h->fan;
    uint64_t had;
    if (!take_turn(fo, c, &had))
        return;
    /* Its own write is coming (deferred work, or the watcher once the socket drains), or the
     * 101 is not all out yet: queue behind it. */
    bool direct = !c->dirty && !c->bdirty && !(c->events & EV_WRITE) && tp_buf_size(&c->out) == 0;
    int i = 0;
    while (i < fo->n && fo->gen[i] <= had)
        i++;
    bool several = i + 1 < fo->n; /* every frame after its first new one is new too */
    if (direct && fo->_batch != NULL && !(c->flags & TP_CONN_TLS) && i < fo->n) {
        if (!several && tp_ws_can_write_frame(c->ws, fo->f[i])) {
            batch_add(h, c, had, i);
            return;
        }
        if (several && !tp_ws_has_output(c->ws)) {
            for (int j = i; j < fo->n; j++)
                tp_conn_ws_queue(c, fo->f[j]);
            if (!tp_conn_is_closed(c) && !batch_take(h, c))
                tp_conn_run_deferred(c);
            return;
        }
    }
    deliver(h, c, had, 0, direct && !several);
}

/* Adds what the walk wrote directly to the metrics: once per slice, not per socket. */
static void count_out(struct tp_conn_fanout *fo)
{
    if (fo->out_msgs > 0)
        tp_metrics_add(TP_METRIC_WS_MESSAGES_OUT_TOTAL, (int64_t)fo->out_msgs);
    if (fo->out_bytes > 0)
        tp_metrics_add(TP_METRIC_HTTP_BYTES_OUT_TOTAL, (int64_t)fo->out_bytes);
    fo->out_msgs = fo->out_bytes = 0;
}

void tp_conn_fanout_give(struct tp_conn *c)
{
    if (c->h->fan.n > 0)
        give(c->h, c);
}

bool tp_conn_run_fanout(struct tp_conn_host *h, int64_t budget_ns)
{
    struct tp_conn_fanout *fo = &h->fan;
    int64_t until = budget_ns > 0 ? tp_mono_ns() + budget_ns : 0;
    unsigned n = 0;
    while (fo->left > 0) {
        struct tp_conn *c = fo->cursor != NULL ? fo->cursor : h->ws_list;
        if (c == NULL) {
            fo->left = 0;
            break;
        }
        fo->cursor = c->ws_next;
        fo->left--;
        visit(h, c);
        if (until != 0 && ++n % CLOCK_EVERY == 0 && fo->left > 0 && tp_mono_ns() >= until) {
            batch_run(h);
            count_out(fo);
            return true; /* the next slice resumes at the cursor */
        }
    }
    batch_run(h);
    count_out(fo);
    /* Every socket has the walk's frames, or skipped them: only the held frames that came
     * since it started still wait (for the next walk). */
    for (int i = fo->n - 1; i >= 0; i--)
        if (fo->gen[i] <= fo->walk_gen)
            drop_pending(fo, i);
    return false;
}

bool tp_conn_fanout_pending(const struct tp_conn_host *h)
{
    return h->fan.left > 0;
}

void tp_conn_fanout_forget(struct tp_conn *c)
{
    if (c->h->fan.cursor == c)
        c->h->fan.cursor = c->ws_next;
}

int tp_conn_fanout_setup(struct tp_conn_host *h, unsigned batch, char *err, size_t errlen)
{
    struct tp_conn_fanout *fo = &h->fan;
    batch_free(fo);
    if (batch == 0)
        return 0;
    struct tp_send_batch *sends = tp_send_batch_new(batch, err, errlen);
    if (sends == NULL)
        return TP_EUNAVAIL;
    fo->_batch = tp_xcalloc(1, sizeof(*fo->_batch));
    fo->_batch->sends = sends;
    fo->_batch->at = tp_xcalloc(batch, sizeof(*fo->_batch->at));
    fo->_batch->gather = tp_xmalloc(GATHER_BYTES);
    return 0;
}

struct tp_send_batch *tp_conn_fanout_sends(struct tp_conn_host *h)
{
    struct tp_conn_fanout_batch *bt = h->fan._batch;
    return bt != NULL && tp_send_batch_count(bt->sends) == 0 ? bt->sends : NULL;
}

void tp_conn_fanout_sends_ran(struct tp_conn_host *h, unsigned n, int rc)
{
    if (h->fan._batch == NULL)
        return;
    h->fan._batch->sent += n;
    if (rc != 0) {
        tp_log_warn("fanout", "io_uring failed: one send() per socket from now on");
        batch_free(&h->fan);
    }
}

bool tp_conn_fanout_io_uring(const struct tp_conn_host *h)
{
    return h->fan._batch != NULL;
}

uint64_t tp_conn_fanout_batched(const struct tp_conn_host *h)
{
    return h->fan._batch != NULL ? h->fan._batch->sent : 0;
}

void tp_conn_fanout_drop(struct tp_conn_host *h)
{
    struct tp_conn_fanout *fo = &h->fan;
    batch_free(fo);
    while (fo->n > 0)
        drop_pending(fo, fo->n - 1);
    fo->left = 0;
    fo->cursor = NULL;
}
