/*
 * The socket side of a client connection (conn_internal.h): one ev_io watcher whose event mask
 * is recomputed after every step (tp_conn_update_events), one ev_timer whose deadline depends
 * on the state (tp_conn_arm_timer), the read path (into the HTTP parser or the WebSocket
 * session), the write path (HTTP output, then the WebSocket queue) and the linger of a closing
 * connection. TLS handshake steps are conn_hs.c's.
 */
#include "conn_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/io.h"
#include "tickpool/net/ws.h"

#include <ev.h>

#include <errno.h>
#include <sys/socket.h>

#define READ_CHUNK 16384
#define LINGER_MS 2000 /* how long a closing connection drains unread input */
#define MAX_READS_PER_EVENT 8

/* --- Events and deadline --- */

/*
 * Whether this socket's queued output is the prepare hook's to write (this iteration, or its next
 * slice when this one's is spent): a plain WebSocket on the dirty list, not waiting for room, on a
 * worker with the fan-out's io_uring batch, through which tp_conn_run_dirty writes it with the
 * other sockets' answers in one io_uring_enter. A Redis reply that queued a socket's answers marks
 * it dirty; when the socket then had a bet to read in the same iteration, its read's step wrote
 * those answers with a send() of its own, outside the batch (0.04-0.07 a bet at ws-bets 30,000/s:
 * bench/README.md "Session 28: tickpool's system time a WebSocket bet"). The watcher then waits
 * for no EV_WRITE: the batch's write arms it (tp_conn_ws_output_sent) when it finds the socket
 * full. TLS sockets, a socket already waiting for room (EV_WRITE armed) and a worker without the
 * batch write as they did.
 */
static bool write_deferred(const struct tp_conn *c)
{
    return c->dirty && c->state == TP_CONN_ST_WS && c->ws != NULL && !(c->flags & TP_CONN_TLS) &&
           !(c->events & EV_WRITE) && tp_buf_size(&c->out) == 0 && tp_conn_fanout_io_uring(c->h);
}

bool tp_conn_want_read(const struct tp_conn *c)
{
    if (tp_conn_is_closed(c) || c->peer_eof)
        return false;
    switch (c->state) {
    case TP_CONN_ST_HANDSHAKE:
    case TP_CONN_ST_WS:
    case TP_CONN_ST_LINGER:
        return true;
    case TP_CONN_ST_HTTP:
        return !c->stop_parsing && c->nslots < TP_CONN_PIPELINE_MAX && tp_buf_size(&c->in) == 0;
    }
    return false;
}

void tp_conn_update_events(struct tp_conn *c)
{
    if (tp_conn_is_closed(c))
        return;
    int ev = 0;
    if (c->state == TP_CONN_ST_HANDSHAKE) {
        ev = c->hs_want_write ? EV_WRITE : EV_READ;
    } else {
        if (tp_conn_want_read(c) || c->write_needs_read)
            ev |= EV_READ;
        if ((c->state != TP_CONN_ST_LINGER && tp_conn_has_output(c) && !write_deferred(c)) ||
            c->read_needs_write)
            ev |= EV_WRITE;
    }
    if (ev == c->events)
        return;
    ev_io_stop(c->h->loop, &c->watcher);
    if (ev != 0) {
        ev_io_set(&c->watcher, c->fd, ev);
        ev_io_start(c->h->loop, &c->watcher);
    }
    c->events = ev;
}

/* Re-arms the single timer for the current state; see the file comment for the rules. */
void tp_conn_arm_timer(struct tp_conn *c)
{
    if (tp_conn_is_closed(c))
        return;
    const struct tp_config_server *cfg = &c->h->cfg->server;
    int64_t deadline;
    switch (c->state) {
    case TP_CONN_ST_HANDSHAKE:
        deadline = c->accepted_ms + cfg->header_timeout_ms;
        break;
    case TP_CONN_ST_LINGER:
        deadline = c->linger_ms + LINGER_MS;
        break;
    case TP_CONN_ST_WS:
        /* Only a closing session has a deadline: its close frame gets that long to go out. */
        deadline = tp_ws_close_deadline_ms(c->ws);
        if (deadline == 0) {
            ev_timer_stop(c->h->loop, &c->timer);
            return;
        }
        break;
    case TP_CONN_ST_HTTP:
    default:
        if (c->in_request)
            deadline = c->req_start_ms + cfg->header_timeout_ms;
        else if (c->served == 0 && c->nslots == 0)
            deadline = c->accepted_ms + cfg->header_timeout_ms;
        else
            deadline = c->progress_ms + cfg->keepalive_timeout_ms;
        break;
    }
    double after = (double)(deadline - tp_mono_ms()) / 1000.0;
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, after > 0 ? after : 0.0, 0.0);
    ev_timer_start(c->h->loop, &c->timer);
}
/* --- I/O --- */

void tp_conn_start_linger(struct tp_conn *c)
{
    if (c->peer_eof) {
        tp_conn_close(c);
        return;
    }
    /* Half-close and read until EOF: closing with unread input would send an RST that can
     * destroy the response (e.g. a 413) before the client reads it. */
    c->state = TP_CONN_ST_LINGER;
    c->linger_ms = tp_mono_ms();
    shutdown(c->fd, SHUT_WR);
}

static void linger_read(struct tp_conn *c)
{
    char buf[4096];
    for (int i = 0; i < MAX_READS_PER_EVENT; i++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        tp_conn_close(c);
        return;
    }
}

static void on_eof(struct tp_conn *c)
{
    c->peer_eof = true;
    if (c->state == TP_CONN_ST_WS) {
        tp_conn_close(c);
        return;
    }
    if (c->nslots == 0) {
        /* Nothing left to answer (a partial request is abandoned). */
        if (!tp_conn_has_output(c)) {
            tp_conn_close(c);
            return;
        }
    }
    c->close_after_write = true;
    c->stop_parsing = true;
}

void tp_conn_read(struct tp_conn *c)
{
    char stack[READ_CHUNK];
    for (int i = 0; i < MAX_READS_PER_EVENT && tp_conn_want_read(c); i++) {
        /* tp_ws_feed consumes all it is given (the framer copies what it keeps), so a WebSocket's
         * bytes need no buffer of their own. */
        bool ws = c->state == TP_CONN_ST_WS;
        char *p = ws ? stack : tp_buf_reserve(&c->in, READ_CHUNK);
        ssize_t n = tp_io_read(&c->io, p, READ_CHUNK);
        if (n > 0) {
            tp_metrics_add(TP_METRIC_HTTP_BYTES_IN_TOTAL, n);
            c->read_needs_write = false;
            if (ws) {
                tp_ws_feed(c->ws, p, (size_t)n);
            } else {
                tp_buf_commit(&c->in, (size_t)n);
                tp_conn_process_input(c);
            }
            /* A short read on plain TCP took all the socket had: one more recv would only
             * answer EAGAIN (every other recv at the ceilings). The watcher is level-triggered,
             * so bytes that arrive meanwhile (or an EOF) wake the loop again. TLS may hold
             * decrypted bytes epoll cannot see: it reads on until WANT_READ. */
            if ((size_t)n < READ_CHUNK && !(c->flags & TP_CONN_TLS))
                return;
            continue;
        }
        if (n == 0) {
            on_eof(c);
            return;
        }
        if (n == TP_IO_WANT_READ)
            return;
        if (n == TP_IO_WANT_WRITE) {
            c->read_needs_write = true;
            return;
        }
        tp_conn_close(c);
        return;
    }
}

void tp_conn_ws_written(struct tp_conn *c, int r)
{
    if (r == TP_IO_WANT_READ)
        c->write_needs_read = true;
    else if (r < 0 && r != TP_IO_WANT_WRITE)
        tp_conn_close(c);
    else if (tp_ws_want_close(c->ws))
        tp_conn_close(c);
}

void tp_conn_ws_output_sent(struct tp_conn *c, const uint8_t *p, size_t n, ssize_t w)
{
    tp_conn_ws_written(c, tp_ws_output_written(c->ws, p, n, w));
    tp_conn_update_events(c);
    tp_conn_arm_timer(c);
}

void tp_conn_write(struct tp_conn *c)
{
    if (tp_conn_is_closed(c) || c->state == TP_CONN_ST_HANDSHAKE || c->state == TP_CONN_ST_LINGER)
        return;
    while (tp_buf_size(&c->out) > 0) {
        ssize_t n = tp_io_write(&c->io, tp_buf_ptr(&c->out), tp_buf_size(&c->out));
        if (n > 0) {
            tp_buf_consume(&c->out, (size_t)n);
            tp_metrics_add(TP_METRIC_HTTP_BYTES_OUT_TOTAL, n);
            c->progress_ms = tp_mono_ms();
            c->write_needs_read = false;
            continue;
        }
        if (n == TP_IO_WANT_WRITE)
            return;
        if (n == TP_IO_WANT_READ) {
            c->write_needs_read = true;
            return;
        }
        tp_conn_close(c);
        return;
    }
    if (c->ws != NULL) {
        tp_buf_deinit(&c->out); /* the 101 is out; frames are written from the ws queue */
        size_t before = tp_ws_queued_bytes(c->ws);
        int r = tp_ws_flush(c->ws, &c->io);
        size_t after = tp_ws_queued_bytes(c->ws);
        if (before > after)
            tp_metrics_add(TP_METRIC_HTTP_BYTES_OUT_TOTAL, (int64_t)(before - after));
        tp_conn_ws_written(c, r);
        return;
    }
    if (c->close_after_write && c->nslots == 0) {
        tp_conn_start_linger(c);
        return;
    }
    if (c->h->draining && tp_conn_http_idle(c))
        tp_conn_start_linger(c);
}

void tp_conn_io_step(struct tp_conn *c, int revents, bool resumed)
{
    if (c->state == TP_CONN_ST_HANDSHAKE) {
        if (!tp_conn_handshake(c, resumed))
            return;
        revents |= EV_READ; /* application data may already sit in the TLS buffer */
    }
    if (c->state == TP_CONN_ST_LINGER) {
        linger_read(c);
        tp_conn_update_events(c);
        return;
    }
    if ((revents & EV_READ) || (c->read_needs_write && (revents & EV_WRITE)))
        tp_conn_read(c);
    if (!write_deferred(c))
        tp_conn_write(c);
    tp_conn_update_events(c);
    tp_conn_arm_timer(c);
}

void tp_conn_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct tp_conn *c = io->data;
    if (!tp_conn_is_closed(c))
        tp_conn_io_step(c, revents, false);
}

void tp_conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_conn *c = t->data;
    if (c->state == TP_CONN_ST_HANDSHAKE) /* net/tls counts the failures it sees, not this */
        tp_metrics_inc(TP_METRIC_TLS_HANDSHAKE_FAILURES_TOTAL);
    tp_log_debug("conn", "timeout\tstate=%d in_request=%d fd=%d", (int)c->state, c->in_request,
                 c->fd);
    tp_conn_close(c);
}
