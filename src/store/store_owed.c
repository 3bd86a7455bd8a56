/*
 * The callbacks a standalone store owes (store_internal.h): each user command's `struct
 * tp_store_pending`, from its send to its one callback, and their deadlines.
 *
 * hiredis 0.14 has no command timeouts, so every user command is a pending kept in a list
 * ordered by deadline (one timeout per store: appended; a redirected cluster command keeps an
 * earlier one) and a single ev_timer watching the head suffices (h2o lib/common/redis.c keeps
 * one timer per command; one per store is cheaper and equivalent here).
 *
 * Ownership of a pending: hiredis holds it as privdata until its reply callback runs (exactly
 * once: with a reply, or with NULL when the context goes away; store_conn.c). Separately, the
 * user callback is owed while `cb != NULL`. A timeout or a teardown calls the user callback early
 * and clears `cb`; the late hiredis callback then only frees the struct. So the user callback
 * runs exactly once and the struct is freed exactly once, whatever the order of events.
 */
#include "store_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/metrics.h"

#include <ev.h>

/* Inserts p by deadline, searching from the tail (see the top: almost always the end). */
static void link_pending(struct tp_store *s, struct tp_store_pending *p)
{
    s->owed++;
    struct tp_store_pending *after = s->tail;
    while (after != NULL && after->deadline > p->deadline)
        after = after->prev;
    p->prev = after;
    p->next = after ? after->next : s->head;
    if (p->next)
        p->next->prev = p;
    else
        s->tail = p;
    if (after)
        after->next = p;
    else
        s->head = p;
}

static void unlink_pending(struct tp_store *s, struct tp_store_pending *p)
{
    s->owed--;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        s->tail = p->prev;
    p->prev = p->next = NULL;
}

/* Calls p's user callback once: unlinks p and clears its cb first, so a re-entrant call (a
 * timeout, a teardown) can never call it again. Does not free p (hiredis may still hold it). */
void tp_store_complete(struct tp_store *s, struct tp_store_pending *p, int err,
                       const struct tp_store_reply *reply)
{
    tp_store_cb cb = p->cb;
    TP_ASSERT(cb != NULL);
    unlink_pending(s, p);
    p->cb = NULL;
    if (p->blocking_read)
        s->blocking_reads--;
    if (!p->blocking)
        tp_metrics_observe_ns(TP_METRIC_FAMILY_REDIS_COMMAND,
                              p->script != NULL ? p->script->metrics_kind
                                                : TP_METRICS_REDIS_KIND_COMMAND,
                              tp_mono_ns() - p->sent_ns);
    if (err == TP_ETIMEDOUT) {
        s->stats.timeouts++;
        tp_metrics_inc(TP_METRIC_REDIS_TIMEOUTS_TOTAL);
    } else if (err != 0 || (reply != NULL && tp_reply_type(reply) == TP_REPLY_ERROR)) {
        s->stats.errors++;
        tp_metrics_inc(TP_METRIC_REDIS_ERRORS_TOTAL);
    }
    cb(err, reply, p->ud);
}

/* Completes every owed callback with `err` (teardown or abandoned context). The caller holds a
 * depth reference, so the store stays allocated even if a callback frees it. */
void tp_store_fail_all(struct tp_store *s, int err)
{
    while (s->head != NULL)
        tp_store_complete(s, s->head, err, NULL);
}

static void arm_cmd_timer(struct tp_store *s)
{
    if (s->head == NULL) {
        ev_timer_stop(s->loop, &s->cmd_timer);
        return;
    }
    double after = s->head->deadline - ev_now(s->loop);
    ev_timer_stop(s->loop, &s->cmd_timer);
    ev_timer_set(&s->cmd_timer, after > 0 ? after : 0, 0);
    ev_timer_start(s->loop, &s->cmd_timer);
}

/* Times out owed callbacks whose deadline passed. A late reply then finds cb == NULL and is
 * dropped. If Redis has sent nothing at all for a long time while commands are outstanding,
 * the connection is considered stalled (network black hole, hung server) and is dropped, so
 * later commands fail fast instead of each waiting out its deadline. */
void tp_store_on_cmd_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store *s = w->data;
    (void)revents;
    double now = ev_now(loop);
    tp_store_enter(s);
    while (s->head != NULL && s->head->deadline <= now + 0.0005 && !s->dead)
        tp_store_complete(s, s->head, TP_ETIMEDOUT, NULL);
    if (!s->dead) {
        double stall = TP_MAX(4.0 * s->timeout_ms, 5000.0) / 1000.0;
        if (s->state == TP_STORE_READY && s->inflight > 0 && now - s->last_progress >= stall)
            tp_store_connection_failed(s, "no reply from redis, connection stalled");
    }
    if (!s->dead)
        arm_cmd_timer(s);
    tp_store_leave(s);
}

/* Registers p as owed and sent: deadline (`deadline` 0: the store's timeout from now), list,
 * timer. */
void tp_store_track(struct tp_store *s, struct tp_store_pending *p, double deadline)
{
    double now = ev_now(s->loop);
    p->deadline = deadline > 0 ? deadline : now + s->timeout_ms / 1000.0;
    p->sent_ns = tp_mono_ns();
    if (p->blocking_read)
        s->blocking_reads++;
    p->blocking = p->blocking_read || s->blocking_reads > 0;
    if (s->inflight++ == 0)
        s->last_progress = now;
    s->stats.commands++;
    tp_metrics_inc(TP_METRIC_REDIS_COMMANDS_TOTAL);
    link_pending(s, p);
    if (s->head == p)
        arm_cmd_timer(s);
}

int tp_store_check_usable(const struct tp_store *s, tp_store_cb cb)
{
    if (cb == NULL || s->subs != NULL)
        return TP_EINVAL;
    if (s->state != TP_STORE_READY || s->ac == NULL)
        return TP_EUNAVAIL;
    return 0;
}

size_t tp_store_owed(const struct tp_store *s)
{
    return s->owed;
}
