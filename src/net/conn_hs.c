/*
 * TLS handshakes of client connections, within a budget per loop iteration (conn_internal.h).
 *
 * A full handshake costs milliseconds of CPU (the key exchange and a signature): a storm of new
 * wss sockets would hold the loop for as long as it takes to shake hands with all of them, and
 * bets, Redis replies and beats would wait behind. So handshake steps get a budget of CPU time
 * per loop iteration; a connection whose turn comes after the budget is spent waits, watcher
 * stopped, in a FIFO that tp_conn_run_handshakes resumes from the worker's prepare hook, so the
 * loop's other events are served in between.
 *
 * Order: handshakes already under way go before new ones, so each finishes as soon as it can
 * rather than all of them advancing in lockstep and finishing late together.
 *
 * The budget grows as the queue ages: BUDGET_MIN_NS while the oldest waiting handshake was
 * accepted less than AGE_FREE_MS ago, then linearly up to BUDGET_MAX_NS at AGE_FULL_MS. A fixed
 * budget leaves a storm's last handshakes waiting as long as the queue is deep, past the
 * handshake timeout (server.header_timeout) on a busy worker; a budget without a bound would
 * hold bets and beats for the whole storm. At the largest budget an iteration still ends within
 * about BUDGET_MAX_NS plus one step, and the fan-out keeps its own slice
 * (TP_WORKER_SLICE_NS), coalescing beats meanwhile.
 */
#include "conn_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/io.h"

#include <ev.h>

#define BUDGET_MIN_NS (2 * 1000 * 1000)
#define BUDGET_MAX_NS (8 * 1000 * 1000)
#define AGE_FREE_MS 250  /* a queue younger than this gets the smallest budget */
#define AGE_FULL_MS 2000 /* a queue this old gets the largest */

/* When the oldest waiting handshake was accepted; 0 when none waits. */
static int64_t oldest_accepted_ms(const struct tp_conn_host *h)
{
    int64_t t = 0;
    for (int q = 0; q < 2; q++)
        if (h->hs_wait[q] != NULL && (t == 0 || h->hs_wait[q]->accepted_ms < t))
            t = h->hs_wait[q]->accepted_ms;
    return t;
}

/* The budget of handshake time per loop iteration for a queue whose oldest was accepted at
 * `oldest_ms` (0: empty queue). */
static int64_t budget_ns(int64_t oldest_ms)
{
    int64_t age = oldest_ms > 0 ? tp_mono_ms() - oldest_ms : 0;
    if (age <= AGE_FREE_MS)
        return BUDGET_MIN_NS;
    if (age >= AGE_FULL_MS)
        return BUDGET_MAX_NS;
    return BUDGET_MIN_NS +
           (BUDGET_MAX_NS - BUDGET_MIN_NS) * (age - AGE_FREE_MS) / (AGE_FULL_MS - AGE_FREE_MS);
}

/* True while this loop iteration's handshake budget lasts. The budget is set at the
 * iteration's first handshake step, from the queue's age then, and holds for the iteration: a
 * budget recomputed as handshakes leave the queue would shrink under the step about to run. */
static bool budget_left(struct tp_conn_host *h)
{
    unsigned it = ev_iteration(h->loop);
    if (it != h->hs_iteration) {
        h->hs_iteration = it;
        h->hs_spent_ns = 0;
        h->hs_budget_ns = budget_ns(oldest_accepted_ms(h));
    }
    return h->hs_spent_ns < h->hs_budget_ns;
}

/* Its turn comes after the budget: the connection waits, unwatched, in arrival order. */
static void wait_turn(struct tp_conn *c)
{
    struct tp_conn_host *h = c->h;
    int q = c->hs_started ? 0 : 1;
    tp_metrics_inc(TP_METRIC_TLS_HANDSHAKES_DEFERRED_TOTAL);
    ev_io_stop(h->loop, &c->watcher);
    c->events = 0;
    c->hs_waiting = true;
    c->hs_next = NULL;
    *(h->hs_tail[q] != NULL ? &h->hs_tail[q]->hs_next : &h->hs_wait[q]) = c;
    h->hs_tail[q] = c;
}

bool tp_conn_handshake(struct tp_conn *c, bool resumed)
{
    struct tp_conn_host *h = c->h;
    /* Others of its kind (under way, or new) wait for a budget: it queues behind them. A
     * resumed one was let through by tp_conn_run_handshakes's own check. */
    bool ahead = h->hs_wait[0] != NULL || (!c->hs_started && h->hs_wait[1] != NULL);
    if (!resumed && (ahead || !budget_left(h))) {
        wait_turn(c);
        return false;
    }
    c->hs_started = true;
    int64_t t0 = tp_mono_ns();
    int r = tp_io_handshake(&c->io);
    h->hs_spent_ns += tp_mono_ns() - t0;
    if (r == TP_IO_WANT_READ || r == TP_IO_WANT_WRITE) {
        c->hs_want_write = r == TP_IO_WANT_WRITE;
        tp_conn_update_events(c);
        return false;
    }
    if (r != 0) { /* counted by net/tls, which sees every outcome of a handshake step */
        tp_log_debug("conn", "TLS handshake failed\terr=\"%s\" fd=%d", tp_strerror(r), c->fd);
        tp_conn_close(c);
        return false;
    }
    c->state = TP_CONN_ST_HTTP;
    return true;
}

bool tp_conn_run_handshakes(struct tp_conn_host *h)
{
    for (;;) {
        int q = h->hs_wait[0] != NULL ? 0 : 1;
        struct tp_conn *c = h->hs_wait[q];
        if (c == NULL)
            break;
        /* A connection closed while it waited (its timeout) leaves without a step. */
        if (!tp_conn_is_closed(c) && !budget_left(h))
            break;
        h->hs_wait[q] = c->hs_next;
        if (h->hs_wait[q] == NULL)
            h->hs_tail[q] = NULL;
        c->hs_waiting = false;
        if (!tp_conn_is_closed(c)) /* its step, as if its watcher had fired */
            tp_conn_io_step(c, c->hs_want_write ? EV_WRITE : EV_READ, true);
    }
    return h->hs_wait[0] != NULL || h->hs_wait[1] != NULL;
}

void tp_conn_handshakes_drop(struct tp_conn_host *h)
{
    for (int q = 0; q < 2; q++) {
        for (; h->hs_wait[q] != NULL; h->hs_wait[q] = h->hs_wait[q]->hs_next)
            h->hs_wait[q]->hs_waiting = false;
        h->hs_tail[q] = NULL;
    }
}
