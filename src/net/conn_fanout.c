/*
 * Droppable broadcasts (tick, odds) handed to a worker's WebSocket sockets in slices
 * (conn_internal.h, tickpool/net/conn.h).
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
 * Everything else (round changes, replies, payouts) is queued at once and written from the
 * dirty list, which the worker runs before this walk: a `round` keeps its priority over the
 * beats still to be handed out. A socket written from the dirty list while beats are being handed
 * out takes them along, behind what it has queued (tp_conn_fanout_give): at a boundary the beat
 * of T arrives ~2 ms after T, while the `round` pair is still being written to the worker's
 * sockets, and each socket still waiting for the pair gets both in one write instead of a second
 * write when the walk reaches it (issue 13; bench/README.md "Boundaries").
 */
#include "conn_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/net/ws.h"

#include <ev.h>

/* The clock is read every this many visits: a visit that writes costs a few µs. */
#define CLOCK_EVERY 16

static void drop_pending(struct tp_conn_fanout *fo, int i)
{
    tp_ws_frame_unref(fo->f[i]);
    for (int j = i + 1; j < fo->n; j++) {
        fo->f[j - 1] = fo->f[j];
        fo->gen[j - 1] = fo->gen[j];
    }
    fo->n--;
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
    TP_ASSERT(fo->n < TP_WS_KIND_COUNT_);
    tp_ws_frame_ref(f);
    fo->f[fo->n] = f;
    fo->gen[fo->n] = ++fo->last;
    fo->n++;
    fo->ready = ready;
    fo->left = h->nws; /* once around the list from the cursor */
}

/* Queues to socket `c` the pending frames it has not had, oldest first, and records that it has
 * them (or skipped them: not ready). True when it queued any. */
static bool give(struct tp_conn_host *h, struct tp_conn *c)
{
    struct tp_conn_fanout *fo = &h->fan;
    if (tp_conn_is_closed(c) || c->ws == NULL || c->fan_gen >= fo->last)
        return false;
    uint64_t had = c->fan_gen;
    c->fan_gen = fo->last;
    if (fo->ready != NULL && !fo->ready(c))
        return false; /* no snapshot yet: these beats are not its (tp_conn_ws_fanout_from_now) */
    bool queued = false;
    for (int i = 0; i < fo->n; i++)
        if (fo->gen[i] > had && tp_conn_ws_queue(c, fo->f[i]) != TP_ECLOSED)
            queued = true;
    return queued;
}

/* Gives socket `c` its pending frames and writes them now (unless it waits for writability
 * anyway, or its deferred work will write them). */
static void visit(struct tp_conn_host *h, struct tp_conn *c)
{
    if (!give(h, c) || c->dirty || c->bdirty)
        return;
    if (c->events & EV_WRITE)
        return; /* the socket is full: its watcher writes once it drains */
    tp_conn_run_deferred(c);
}

void tp_conn_fanout_give(struct tp_conn *c)
{
    if (c->h->fan.left > 0)
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
        if (until != 0 && ++n % CLOCK_EVERY == 0 && fo->left > 0 && tp_mono_ns() >= until)
            return true; /* the next slice resumes at the cursor */
    }
    /* Every socket has the newest frames, or skipped them: nothing is held any longer. */
    while (fo->n > 0)
        drop_pending(fo, fo->n - 1);
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

void tp_conn_fanout_drop(struct tp_conn_host *h)
{
    struct tp_conn_fanout *fo = &h->fan;
    while (fo->n > 0)
        drop_pending(fo, fo->n - 1);
    fo->left = 0;
    fo->cursor = NULL;
}
