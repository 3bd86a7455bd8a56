/*
 * Client connections (see tickpool/net/conn.h): their lifecycle, the deferred-work list and the
 * host's side. The socket, HTTP and WebSocket parts are in conn_io.c, conn_http.c and
 * conn_ws.c (conn_internal.h).
 *
 * Lifetime: nothing frees a connection except tp_conn_reap, run from the worker's ev_prepare
 * hook. Closing only flags TP_CONN_CLOSE_ASAP and stops the watchers, so callbacks further up
 * the stack never touch freed memory. Contexts of requests still being handled are orphaned
 * on free: the handler's late reply then frees the context instead of writing.
 *
 * Deferred work: whatever a connection must do outside its own callback (an answer a handler
 * gave later, a queued WebSocket frame, pipelined input) marks it dirty; the worker's prepare
 * hook runs the dirty list in time slices (tp_conn_run_dirty).
 */
#include "conn_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/http.h"
#include "tickpool/net/io.h"
#include "tickpool/net/send_batch.h"
#include "tickpool/net/tls.h"
#include "tickpool/net/ws.h"

#include <ev.h>

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- Helpers shared by the conn files --- */

void tp_conn_mark_dirty(struct tp_conn *c)
{
    if (c->dirty || tp_conn_is_closed(c))
        return;
    c->dirty = true;
    c->dirty_next = c->h->dirty;
    c->h->dirty = c;
}

void tp_conn_mark_bdirty(struct tp_conn *c)
{
    struct tp_conn_host *h = c->h;
    if (c->dirty || c->bdirty || tp_conn_is_closed(c))
        return;
    c->bdirty = true;
    c->bdirty_next = NULL;
    if (h->bdirty_tail != NULL)
        h->bdirty_tail->bdirty_next = c;
    else
        h->bdirty = c;
    h->bdirty_tail = c;
    h->bdirty_in++;
}

bool tp_conn_http_idle(const struct tp_conn *c)
{
    return c->state == TP_CONN_ST_HTTP && c->nslots == 0 && !tp_conn_has_output(c) &&
           !c->in_request && tp_buf_size(&c->in) == 0;
}

/* --- Lifecycle --- */

/* The peer of socket `fd`; an IPv4-mapped IPv6 address (a dual-stack listener) as IPv4, so one
 * client has one key whichever listener it reached. */
static void read_peer(int fd, struct tp_http_peer *p)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(p, 0, sizeof(*p));
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        p->family = AF_INET;
        memcpy(p->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            p->family = AF_INET;
            memcpy(p->addr, a->s6_addr + 12, 4);
        } else {
            p->family = AF_INET6;
            memcpy(p->addr, a->s6_addr, 16);
        }
    }
}

struct tp_conn *tp_conn_new(struct tp_conn_host *h, int fd, bool tls)
{
    struct tp_conn *c = tp_xcalloc(1, sizeof(*c));
    c->h = h;
    c->fd = fd;
    read_peer(fd, &c->peer);
    c->state = TP_CONN_ST_HTTP;
    if (tls) {
        c->flags |= TP_CONN_TLS;
        if (tp_tls_io_init(&c->io, h->tls, fd) != 0) {
            free(c);
            return NULL;
        }
        c->state = TP_CONN_ST_HANDSHAKE;
    } else {
        tp_io_plain_init(&c->io, fd);
    }
    c->parser = tp_http_parser_new(&h->http_limits);
    tp_buf_init(&c->in);
    tp_buf_init(&c->out);
    c->accepted_ms = c->progress_ms = tp_mono_ms();
    ev_io_init(&c->watcher, tp_conn_on_io, fd, EV_READ);
    c->watcher.data = c;
    ev_io_start(h->loop, &c->watcher);
    c->events = EV_READ;
    ev_timer_init(&c->timer, tp_conn_on_timer, 0.0, 0.0);
    c->timer.data = c;
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    tp_metrics_add(TP_METRIC_HTTP_CONNECTIONS_OPEN, 1);
    tp_conn_arm_timer(c);
    return c;
}

void tp_conn_close(struct tp_conn *c)
{
    if (tp_conn_is_closed(c))
        return;
    c->flags |= TP_CONN_CLOSE_ASAP;
    ev_io_stop(c->h->loop, &c->watcher);
    ev_timer_stop(c->h->loop, &c->timer);
    c->close_next = c->h->closing;
    c->h->closing = c;
}

void tp_conn_free(struct tp_conn *c)
{
    if (c == NULL)
        return;
    struct tp_conn_host *h = c->h;
    ev_io_stop(h->loop, &c->watcher);
    ev_timer_stop(h->loop, &c->timer);
    if (c->ws != NULL) {
        if (h->ws_hooks.on_close != NULL)
            h->ws_hooks.on_close(c, h->ws_ud);
        tp_ws_free(c->ws);
        tp_conn_fanout_forget(c);
        if (c->ws_prev != NULL)
            c->ws_prev->ws_next = c->ws_next;
        else
            h->ws_list = c->ws_next;
        if (c->ws_next != NULL)
            c->ws_next->ws_prev = c->ws_prev;
        h->nws--;
        tp_metrics_add(TP_METRIC_WS_CONNECTIONS_OPEN, -1);
    }
    tp_conn_drop_slots(c);
    tp_http_parser_free(c->parser);
    tp_io_deinit(&c->io);
    close(c->fd);
    tp_buf_deinit(&c->in);
    tp_buf_deinit(&c->out);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    tp_metrics_add(TP_METRIC_HTTP_CONNECTIONS_OPEN, -1);
    free(c);
}

unsigned tp_conn_flags(const struct tp_conn *c)
{
    return c->flags;
}

struct tp_worker *tp_conn_worker(const struct tp_conn *c)
{
    return c->h->worker;
}

void tp_conn_set_data(struct tp_conn *c, void *data)
{
    c->data = data;
}

void *tp_conn_data(const struct tp_conn *c)
{
    return c->data;
}

void tp_conn_run_deferred(struct tp_conn *c)
{
    if (tp_conn_is_closed(c))
        return;
    if (c->state == TP_CONN_ST_HTTP) {
        bool paused = !tp_conn_want_read(c);
        tp_conn_process_input(c);
        /* Reading resumes after a pause: TLS may hold decrypted bytes epoll cannot see. */
        if (c->was_paused && tp_conn_want_read(c) && (c->flags & TP_CONN_TLS))
            tp_conn_read(c);
        c->was_paused = paused && !tp_conn_want_read(c);
    }
    tp_conn_write(c);
    tp_conn_update_events(c);
    tp_conn_arm_timer(c);
}

void tp_conn_drain(struct tp_conn *c)
{
    if (tp_conn_is_closed(c))
        return;
    switch (c->state) {
    case TP_CONN_ST_HANDSHAKE:
        tp_conn_close(c);
        break;
    case TP_CONN_ST_HTTP:
        /* A request may sit unread in the socket, sent just before the signal while the loop was
         * busy: read it first, so that it is answered (with Connection: close) instead of the
         * connection being closed over unread bytes, which the client sees as a reset. */
        tp_conn_read(c);
        if (tp_conn_is_closed(c) || c->state != TP_CONN_ST_HTTP)
            break;
        if (tp_conn_http_idle(c))
            tp_conn_close(c);
        else
            tp_conn_mark_dirty(c);
        break;
    case TP_CONN_ST_WS:
        tp_ws_close(c->ws, TP_WS_CLOSE_GOING_AWAY, "server shutting down");
        tp_conn_mark_dirty(c);
        break;
    case TP_CONN_ST_LINGER:
        break;
    }
}

/* --- Host side --- */

/* Writes one connection taken off a list. */
static void run_one(struct tp_conn *c)
{
    /* The beats still being handed out go in this write rather than a second one (at a
     * boundary: the beat of T with the `round` pair; conn_fanout.c). */
    tp_conn_fanout_give(c);
    tp_conn_run_deferred(c);
}

static struct tp_conn *bdirty_pop(struct tp_conn_host *h)
{
    struct tp_conn *c = h->bdirty;
    h->bdirty = c->bdirty_next;
    if (h->bdirty == NULL)
        h->bdirty_tail = NULL;
    c->bdirty = false;
    h->bdirty_out++;
    return c;
}

/*
 * Writes in batches. At a boundary every socket of a worker has the `round` pair queued
 * (tp_conn_ws_broadcast_frame) and is written from the broadcast list, one send() each: the
 * worker's 2.5-8 ms on a CPU between the pair's receipt and its last write, at 500 sockets
 * (bench/README.md, "Boundaries", session 13). Where the fan-out has its io_uring batch, a run
 * of such sockets at the head of the list goes through it instead, as the beats' walk does: each
 * socket's queue gathered into a slot of its own, one io_uring_enter for up to BCAST_BATCH
 * sends, each result then taken as tp_ws_flush takes its write's. Bet answers take the same
 * way: a script call's answers go to as many sockets, each on the dirty list, and a run of them
 * at its head is one io_uring_enter rather than a send() each (4.4-4.8 us apiece here, most of
 * it the system call's entry and exit: send_batch.c). Only plain WebSockets whose write is
 * their queued frames alone and whole (no bytes kept from an earlier write, nothing of the 101
 * left, not waiting to be writable, at most BCAST_SLOT queued) qualify; any other socket is
 * written as before, in the list's order.
 */
#define BCAST_BATCH 64
#define BCAST_SLOT (8 * 1024)

/* Where a batch takes its sockets from: the broadcast list (dirty NULL), or a run of the dirty
 * list detached by tp_conn_run_dirty. */
struct batch_src {
    struct tp_conn_host *h;
    struct tp_conn **dirty;
};

static struct tp_conn *src_head(const struct batch_src *s)
{
    return s->dirty != NULL ? *s->dirty : s->h->bdirty;
}

static struct tp_conn *src_pop(struct batch_src *s)
{
    if (s->dirty == NULL)
        return bdirty_pop(s->h);
    struct tp_conn *c = *s->dirty;
    *s->dirty = c->dirty_next;
    c->dirty = false;
    return c;
}

/* A socket on the broadcast list that is also dirty is written from the dirty list. */
static bool batchable(const struct batch_src *s, const struct tp_conn *c)
{
    return c != NULL && !tp_conn_is_closed(c) && (s->dirty != NULL || !c->dirty) &&
           c->state == TP_CONN_ST_WS && c->ws != NULL && !(c->flags & TP_CONN_TLS) &&
           !(c->events & EV_WRITE) && tp_buf_size(&c->out) == 0 && tp_ws_has_output(c->ws);
}

/* Writes the batchable sockets at the head of `s` in one batch of sends; false when it took none
 * (no batch, or the head does not qualify): run_one it. */
static bool run_batch(struct batch_src *s)
{
    /* Heap, once per thread, kept for the process's life: as a static array it would be 512 KiB
     * of TLS in every thread (the Postgres writer and reader included), which never write here. */
    static __thread uint8_t *slots;
    struct tp_send_batch *b = tp_conn_fanout_sends(s->h);
    if (b == NULL || !batchable(s, src_head(s)))
        return false;
    if (slots == NULL)
        slots = tp_xmalloc((size_t)BCAST_BATCH * BCAST_SLOT);
    struct tp_conn *cs[BCAST_BATCH];
    size_t len[BCAST_BATCH];
    unsigned k = 0;
    while (k < BCAST_BATCH && batchable(s, src_head(s)) && !tp_send_batch_full(b)) {
        struct tp_conn *c = src_pop(s);
        tp_conn_fanout_give(c);   /* the beats being handed out go in this write (run_one) */
        if (tp_conn_is_closed(c)) /* no write to make (run_one's would skip it too) */
            continue;
        uint8_t *slot = slots + (size_t)k * BCAST_SLOT;
        size_t n = tp_ws_take_output(c->ws, slot, BCAST_SLOT);
        if (n == 0) { /* more queued than a slot holds */
            tp_conn_run_deferred(c);
            continue;
        }
        tp_send_batch_add(b, c->io.fd, slot, n);
        cs[k] = c;
        len[k++] = n;
    }
    int rc = k > 0 ? tp_send_batch_run(b) : 0;
    for (unsigned i = 0; i < k; i++) {
        struct tp_conn *c = cs[i];
        ssize_t w = tp_send_batch_result(b, i);
        if (w > 0)
            tp_metrics_add(TP_METRIC_HTTP_BYTES_OUT_TOTAL, w);
        tp_conn_ws_output_sent(c, slots + (size_t)i * BCAST_SLOT, len[i], w);
    }
    tp_send_batch_clear(b);
    tp_conn_fanout_sends_ran(s->h, k, rc);
    return true;
}

/* True when the slice ending at `until` (0: none) is spent. The clock is read every 16
 * connections (counted in *n): a write costs a few µs. */
static bool slice_spent(int64_t until, unsigned *n)
{
    return until != 0 && (++*n & 15) == 0 && tp_mono_ns() >= until;
}

bool tp_conn_run_dirty(struct tp_conn_host *h, int64_t budget_ns)
{
    /* Running a connection can mark others (or itself) dirty again; every round consumes
     * buffered input or output, so this terminates. The dirty list is last-marked first, so a
     * reply marked while a fan-out's sockets wait for their slice goes before them. Broadcasts
     * queued at once (a `round`) are written after it, in the order they came: at a boundary the
     * settled `round` of N-1 can reach a worker still writing the pair of T, and its sockets
     * (those that already had the pair) went ahead of the ones still waiting for it, which
     * doubled the worker's time to the pair's last write (issue 13; bench/README.md
     * "Boundaries", session 10). */
    int64_t until = budget_ns > 0 ? tp_mono_ns() + budget_ns : 0;
    unsigned n = 0;
    for (;;) {
        if (h->dirty != NULL) {
            struct tp_conn *list = h->dirty;
            h->dirty = NULL;
            while (list != NULL) {
                if (slice_spent(until, &n)) {
                    /* Slice spent: the rest waits behind what was marked meanwhile. */
                    struct tp_conn **tail = &h->dirty;
                    while (*tail != NULL)
                        tail = &(*tail)->dirty_next;
                    *tail = list;
                    return true;
                }
                struct batch_src src = {h, &list};
                if (run_batch(&src)) {
                    n |= 15; /* a batch is many writes: the clock is read at the next turn */
                    continue;
                }
                struct tp_conn *c = list;
                list = c->dirty_next;
                c->dirty = false;
                run_one(c);
            }
            continue;
        }
        if (h->bdirty == NULL)
            return false;
        if (slice_spent(until, &n))
            return true; /* the next slice resumes at the head */
        struct batch_src src = {h, NULL};
        if (run_batch(&src)) {
            n |= 15; /* a batch is many writes: the clock is read at the next turn */
            continue;
        }
        run_one(bdirty_pop(h)); /* the dirty list is empty: not on it */
    }
}

bool tp_conn_has_dirty(const struct tp_conn_host *h)
{
    return h->dirty != NULL || h->bdirty != NULL;
}

/*
 * A socket taken off `bdirty` is written in the same call (run_one, run_batch), and `bdirty`
 * is only taken from once the dirty list is empty (tp_conn_run_dirty), so: the sockets the
 * broadcast put on `bdirty` are written once bdirty_out reaches the mark's `upto`, and those it
 * found on the dirty list (written from there) once a socket was taken off `bdirty` after the
 * mark or the dirty list is empty. The writes of the next broadcast, queued behind, do not
 * count: at a boundary the settled `round` of N-1 could reach a worker still writing the pair
 * of T, and "no writes queued" then waited for both (bench/README.md "Boundaries", session 19).
 */
struct tp_conn_bcast_mark tp_conn_bcast_mark(const struct tp_conn_host *h)
{
    return (struct tp_conn_bcast_mark){.from = h->bdirty_out, .upto = h->bdirty_in};
}

bool tp_conn_bcast_out(const struct tp_conn_host *h, struct tp_conn_bcast_mark m)
{
    return h->bdirty_out >= m.upto && (h->bdirty_out > m.from || h->dirty == NULL);
}

void tp_conn_reap(struct tp_conn_host *h)
{
    /* A closed connection still on the dirty list (waiting for its slice) or in the handshake
     * queue is freed once they have let go of it. */
    struct tp_conn **pp = &h->closing;
    while (*pp != NULL) {
        struct tp_conn *c = *pp;
        if (c->dirty || c->bdirty || c->hs_waiting) {
            pp = &c->close_next;
            continue;
        }
        *pp = c->close_next;
        tp_conn_free(c);
    }
}

void tp_conn_foreach_ws(struct tp_conn_host *h, void (*fn)(struct tp_conn *c, void *ud), void *ud)
{
    struct tp_conn *next;
    for (struct tp_conn *c = h->ws_list; c != NULL; c = next) {
        next = c->ws_next;
        if (!tp_conn_is_closed(c))
            fn(c, ud);
    }
}

void tp_conn_drain_all(struct tp_conn_host *h)
{
    struct tp_conn *next;
    for (struct tp_conn *c = h->conns; c != NULL; c = next) {
        next = c->next;
        tp_conn_drain(c);
    }
}

void tp_conn_close_all_and_reap(struct tp_conn_host *h)
{
    for (struct tp_conn *c = h->conns; c != NULL; c = c->next)
        tp_conn_close(c);
    while (h->dirty != NULL) { /* closed: nothing left to write */
        h->dirty->dirty = false;
        h->dirty = h->dirty->dirty_next;
    }
    while (h->bdirty != NULL)
        bdirty_pop(h);
    tp_conn_handshakes_drop(h);
    tp_conn_fanout_drop(h);
    tp_conn_reap(h);
}
