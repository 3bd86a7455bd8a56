/*
 * Client connections (see tickpool/net/conn.h).
 *
 * State machine: HANDSHAKE (TLS only) → HTTP → (WS | LINGER) → closed. One ev_io watcher
 * whose event mask is recomputed after every step (update_events), one ev_timer whose deadline
 * depends on the state (arm_timer).
 *
 * Ordering of pipelined responses: every parsed request gets a slot in a FIFO; handlers fill
 * their slot's context whenever they reply, and only replied slots at the head of the FIFO are
 * moved to the output buffer (flush_slots). At most PIPELINE_MAX requests are parsed ahead;
 * beyond that the connection stops reading until answers drain, so a client cannot make the
 * server buffer unbounded work.
 *
 * Lifetime: nothing frees a connection except tp_conn_reap, run from the worker's ev_prepare
 * hook. Closing only flags TP_CONN_CLOSE_ASAP and stops the watchers, so callbacks further up
 * the stack never touch freed memory. Contexts of requests still being handled are orphaned
 * on free: the handler's late reply then frees the context instead of writing.
 */
#include "tickpool/net/conn.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/net/http.h"
#include "tickpool/net/io.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/router.h"
#include "tickpool/net/tls.h"
#include "tickpool/net/ws.h"

#include <ev.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 16384
#define PIPELINE_MAX 16 /* requests parsed ahead of their answers */
#define LINGER_MS 2000  /* how long a closing connection drains unread input */
#define MAX_READS_PER_EVENT 8

enum cstate { CS_HANDSHAKE, CS_HTTP, CS_WS, CS_LINGER };

struct slot {
    struct tp_http_ctx *ctx;
    struct slot *next;
};

struct tp_conn {
    struct tp_conn_host *h;
    int fd;
    unsigned flags;
    enum cstate state;
    struct tp_io io;
    ev_io watcher;
    int events;
    ev_timer timer;
    struct tp_http_parser *parser;
    struct tp_buf in, out;
    struct slot *head, *tail;
    size_t nslots;
    bool stop_parsing;      /* no further requests will be read on this connection */
    bool close_after_write; /* close (lingering) once output is flushed */
    bool peer_eof;
    bool in_request; /* a request has started arriving and is not complete */
    bool hs_want_write, read_needs_write, write_needs_read;
    bool dirty;
    bool was_paused;
    unsigned served;
    int64_t accepted_ms, req_start_ms, progress_ms, linger_ms;
    struct tp_http_peer peer; /* read once at accept: per-client limits key on it */
    struct tp_ws *ws;
    void *data;
    struct tp_conn *prev, *next;       /* h->conns */
    struct tp_conn *ws_prev, *ws_next; /* h->ws_list */
    struct tp_conn *dirty_next, *close_next;
};

static void on_io(struct ev_loop *loop, ev_io *io, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *t, int revents);
static void process_input(struct tp_conn *c);
static void do_write(struct tp_conn *c);

/* --- Small helpers --- */

static bool closed(const struct tp_conn *c)
{
    return (c->flags & TP_CONN_CLOSE_ASAP) != 0;
}

static void mark_dirty(struct tp_conn *c)
{
    if (c->dirty || closed(c))
        return;
    c->dirty = true;
    c->dirty_next = c->h->dirty;
    c->h->dirty = c;
}

static bool has_output(const struct tp_conn *c)
{
    return tp_buf_size(&c->out) > 0 || (c->ws != NULL && tp_ws_has_output(c->ws));
}

static bool http_idle(const struct tp_conn *c)
{
    return c->state == CS_HTTP && c->nslots == 0 && !has_output(c) && !c->in_request &&
           tp_buf_size(&c->in) == 0;
}

static bool want_read(const struct tp_conn *c)
{
    if (closed(c) || c->peer_eof)
        return false;
    switch (c->state) {
    case CS_HANDSHAKE:
    case CS_WS:
    case CS_LINGER:
        return true;
    case CS_HTTP:
        return !c->stop_parsing && c->nslots < PIPELINE_MAX && tp_buf_size(&c->in) == 0;
    }
    return false;
}

static void update_events(struct tp_conn *c)
{
    if (closed(c))
        return;
    int ev = 0;
    if (c->state == CS_HANDSHAKE) {
        ev = c->hs_want_write ? EV_WRITE : EV_READ;
    } else {
        if (want_read(c) || c->write_needs_read)
            ev |= EV_READ;
        if ((c->state != CS_LINGER && has_output(c)) || c->read_needs_write)
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
static void arm_timer(struct tp_conn *c)
{
    if (closed(c))
        return;
    const struct tp_config_server *cfg = &c->h->cfg->server;
    int64_t deadline;
    switch (c->state) {
    case CS_HANDSHAKE:
        deadline = c->accepted_ms + cfg->header_timeout_ms;
        break;
    case CS_LINGER:
        deadline = c->linger_ms + LINGER_MS;
        break;
    case CS_WS:
        /* Only a closing session has a deadline: its close frame gets that long to go out. */
        deadline = tp_ws_close_deadline_ms(c->ws);
        if (deadline == 0) {
            ev_timer_stop(c->h->loop, &c->timer);
            return;
        }
        break;
    case CS_HTTP:
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

static void count_response(int status, int route)
{
    if (status >= 100 && status < 600)
        tp_metrics_family_inc(TP_METRIC_FAMILY_HTTP_RESPONSES, route, status / 100 - 1);
    if (status >= 500)
        tp_metrics_inc(TP_METRIC_HTTP_RESPONSES_5XX_TOTAL);
    else if (status >= 400)
        tp_metrics_inc(TP_METRIC_HTTP_RESPONSES_4XX_TOTAL);
    else if (status >= 300)
        tp_metrics_inc(TP_METRIC_HTTP_RESPONSES_3XX_TOTAL);
    else if (status >= 200)
        tp_metrics_inc(TP_METRIC_HTTP_RESPONSES_2XX_TOTAL);
}

/* --- WebSocket glue --- */

static void ws_on_message(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary, void *ud)
{
    (void)ws;
    struct tp_conn *c = ud;
    tp_metrics_inc(TP_METRIC_WS_MESSAGES_IN_TOTAL);
    if (c->h->ws_hooks.on_message != NULL && !closed(c))
        c->h->ws_hooks.on_message(c, data, len, binary, c->h->ws_ud);
}

static void ws_on_close(struct tp_ws *ws, uint16_t code, void *ud)
{
    (void)ws;
    struct tp_conn *c = ud;
    tp_log_debug("conn", "websocket closed\tcode=%u fd=%d", code, c->fd);
    mark_dirty(c);
}

static const struct tp_ws_callbacks ws_callbacks = {
    .on_message = ws_on_message,
    .on_close = ws_on_close,
};

/* The 101 left the FIFO: from here on the byte stream is WebSocket. Input already buffered
 * after the upgrade request belongs to the new protocol. */
static void switch_to_ws(struct tp_conn *c, struct tp_http_ctx *ctx)
{
    struct tp_conn_host *h = c->h;
    c->state = CS_WS;
    c->flags |= TP_CONN_WS;
    c->ws = tp_ws_new(&h->ws_limits, &ws_callbacks, c);
    c->ws_prev = NULL;
    c->ws_next = h->ws_list;
    if (h->ws_list != NULL)
        h->ws_list->ws_prev = c;
    h->ws_list = c;
    h->nws++;
    tp_metrics_add(TP_METRIC_WS_CONNECTIONS_OPEN, 1);
    if (h->ws_hooks.on_open != NULL)
        h->ws_hooks.on_open(c, tp_http_ctx_request(ctx), h->ws_ud);
    if (tp_buf_size(&c->in) > 0 && !closed(c))
        tp_ws_feed(c->ws, tp_buf_ptr(&c->in), tp_buf_size(&c->in));
    /* A WebSocket reads through a stack buffer (do_read) and never parses HTTP again: the
     * input buffer (16 KiB once read into) and the parser would be an idle socket's largest
     * memory. process_input stops at once now that the state is CS_WS. */
    tp_buf_deinit(&c->in);
    tp_http_parser_free(c->parser);
    c->parser = NULL;
    mark_dirty(c);
}

/* Validates an upgrade on /ws and answers 101, 403 or 400 into the request's slot. */
static void ws_upgrade(struct tp_conn *c, struct tp_http_ctx *ctx)
{
    const struct tp_http_request *req = tp_http_ctx_request(ctx);
    const char *upgrade = tp_http_request_header(req, "Upgrade");
    if (req->method != TP_HTTP_GET || upgrade == NULL || strcasecmp(upgrade, "websocket") != 0) {
        tp_http_ctx_set_close(ctx);
        tp_http_reply_error(ctx, 400, "bad_request", "expected a GET WebSocket upgrade");
        return;
    }
    if (!tp_ws_origin_allowed(tp_http_request_header(req, "Origin"),
                              c->h->cfg->server.allowed_origins,
                              tp_http_request_header(req, "Host"))) {
        tp_http_ctx_set_close(ctx);
        tp_http_reply_error(ctx, 403, "forbidden", "origin not allowed");
        return;
    }
    char accept[29];
    int r = tp_ws_check_upgrade(tp_http_request_header(req, "Sec-WebSocket-Key"),
                                tp_http_request_header(req, "Sec-WebSocket-Version"),
                                tp_http_request_header(req, "Sec-WebSocket-Protocol"), accept);
    if (r != 0) {
        tp_http_ctx_set_close(ctx);
        if (r == TP_EPROTO) {
            tp_http_reply_error(ctx, 400, "unsupported_subprotocol",
                                "subprotocol " TP_WS_SUBPROTOCOL " required");
        } else {
            tp_http_ctx_add_header(ctx, "Sec-WebSocket-Version", "13");
            tp_http_reply_error(ctx, 400, "bad_request", "bad WebSocket key or version");
        }
        return;
    }
    tp_http_ctx_add_header(ctx, "Upgrade", "websocket");
    tp_http_ctx_add_header(ctx, "Connection", "Upgrade");
    tp_http_ctx_add_header(ctx, "Sec-WebSocket-Accept", accept);
    tp_http_ctx_add_header(ctx, "Sec-WebSocket-Protocol", TP_WS_SUBPROTOCOL);
    tp_http_reply(ctx, 101, NULL, NULL, 0);
}

/* --- HTTP --- */

static void on_ctx_done(struct tp_http_ctx *ctx, void *ud)
{
    (void)ctx;
    mark_dirty(ud);
}

static struct tp_http_ctx *push_slot(struct tp_conn *c, struct tp_http_request *req, bool ka)
{
    struct tp_http_ctx *ctx = tp_http_ctx_new(req, ka, on_ctx_done, c);
    tp_http_ctx_set_worker(ctx, c->h->worker);
    tp_http_ctx_set_peer(ctx, &c->peer);
    struct slot *s = tp_xmalloc(sizeof(*s));
    s->ctx = ctx;
    s->next = NULL;
    if (c->tail != NULL)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->nslots++;
    return ctx;
}

static void drop_slots(struct tp_conn *c)
{
    while (c->head != NULL) {
        struct slot *s = c->head;
        c->head = s->next;
        tp_http_ctx_orphan(s->ctx);
        free(s);
    }
    c->tail = NULL;
    c->nslots = 0;
}

/* Moves replied contexts at the head of the FIFO to the output buffer, in order. */
static void flush_slots(struct tp_conn *c)
{
    while (c->head != NULL && tp_http_ctx_replied(c->head->ctx) && !closed(c)) {
        struct slot *s = c->head;
        struct tp_http_ctx *ctx = s->ctx;
        c->head = s->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->nslots--;
        free(s);
        struct tp_buf *o = tp_http_ctx_output(ctx);
        tp_buf_append(&c->out, tp_buf_ptr(o), tp_buf_size(o));
        int status = tp_http_ctx_status(ctx);
        count_response(status, tp_http_ctx_route(ctx));
        c->progress_ms = tp_mono_ms();
        if (status == 101 && c->state == CS_HTTP) {
            switch_to_ws(c, ctx);
            tp_http_ctx_free(ctx);
            drop_slots(c);
            return;
        }
        if (tp_http_ctx_closes(ctx)) {
            c->close_after_write = true;
            c->stop_parsing = true;
            tp_http_ctx_free(ctx);
            drop_slots(c);
            return;
        }
        tp_http_ctx_free(ctx);
    }
}

static void handle_request(struct tp_conn *c, struct tp_http_request *req)
{
    struct tp_conn_host *h = c->h;
    tp_metrics_inc(TP_METRIC_HTTP_REQUESTS_TOTAL);
    c->in_request = false;
    c->served++;
    c->progress_ms = tp_mono_ms();
    bool is_ws_path = strcmp(req->path, "/ws") == 0;
    bool ws_up = req->upgrade && is_ws_path;
    bool ka = req->keep_alive && !h->draining && (!req->upgrade || ws_up);
    if (!ka || req->upgrade)
        c->stop_parsing = true;
    struct tp_http_ctx *ctx = push_slot(c, req, ka);
    if (is_ws_path)
        tp_http_ctx_set_route(ctx, TP_METRICS_ROUTE_WS);
    if (ws_up) {
        ws_upgrade(c, ctx);
    } else if (is_ws_path) {
        tp_http_ctx_add_header(ctx, "Upgrade", "websocket");
        tp_http_reply_error(ctx, 426, "upgrade_required", "/ws needs a WebSocket upgrade");
    } else {
        tp_router_dispatch(h->router, ctx);
    }
}

static void parse_error(struct tp_conn *c)
{
    int status = tp_http_parser_error_status(c->parser);
    tp_log_debug("http", "bad request\tstatus=%d reason=\"%s\" fd=%d", status,
                 tp_http_parser_error_reason(c->parser), c->fd);
    tp_metrics_inc(TP_METRIC_HTTP_REQUESTS_TOTAL);
    c->stop_parsing = true;
    c->in_request = false;
    struct tp_http_ctx *ctx = push_slot(c, NULL, false);
    tp_http_reply_error(ctx, status, tp_http_status_code_name(status),
                        tp_http_parser_error_reason(c->parser));
    tp_buf_reset(&c->in);
}

/* Parses and dispatches buffered requests while the FIFO has room; handlers that answer at
 * once have their responses moved to the output right away. */
static void process_input(struct tp_conn *c)
{
    flush_slots(c);
    while (!closed(c) && c->state == CS_HTTP && !c->stop_parsing && c->nslots < PIPELINE_MAX &&
           tp_buf_size(&c->in) > 0) {
        size_t used = 0;
        enum tp_http_feed r =
            tp_http_parser_feed(c->parser, tp_buf_ptr(&c->in), tp_buf_size(&c->in), &used);
        tp_buf_consume(&c->in, used);
        if (r == TP_HTTP_REQUEST) {
            handle_request(c, tp_http_parser_take(c->parser));
            flush_slots(c);
        } else if (r == TP_HTTP_ERROR) {
            parse_error(c);
            flush_slots(c);
            break;
        } else {
            /* Interim 100 only when no earlier response is still owed: it must not overtake
             * them. Otherwise the client sends the body after its own short wait. */
            if (tp_http_parser_take_continue(c->parser) && c->nslots == 0)
                tp_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            break;
        }
    }
    if (c->state == CS_HTTP && !c->stop_parsing) {
        bool inreq = tp_http_parser_in_request(c->parser);
        if (inreq && !c->in_request)
            c->req_start_ms = tp_mono_ms();
        c->in_request = inreq;
    }
    /* Input left over behind a closing response is never parsed. */
    if (c->stop_parsing && c->state == CS_HTTP)
        tp_buf_reset(&c->in);
}

/* --- I/O --- */

static void start_linger(struct tp_conn *c)
{
    if (c->peer_eof) {
        tp_conn_close(c);
        return;
    }
    /* Half-close and read until EOF: closing with unread input would send an RST that can
     * destroy the response (e.g. a 413) before the client reads it. */
    c->state = CS_LINGER;
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
    if (c->state == CS_WS) {
        tp_conn_close(c);
        return;
    }
    if (c->nslots == 0) {
        /* Nothing left to answer (a partial request is abandoned). */
        if (!has_output(c)) {
            tp_conn_close(c);
            return;
        }
    }
    c->close_after_write = true;
    c->stop_parsing = true;
}

static void do_read(struct tp_conn *c)
{
    char stack[READ_CHUNK];
    for (int i = 0; i < MAX_READS_PER_EVENT && want_read(c); i++) {
        /* tp_ws_feed consumes all it is given (the framer copies what it keeps), so a WebSocket's
         * bytes need no buffer of their own. */
        bool ws = c->state == CS_WS;
        char *p = ws ? stack : tp_buf_reserve(&c->in, READ_CHUNK);
        ssize_t n = tp_io_read(&c->io, p, READ_CHUNK);
        if (n > 0) {
            tp_metrics_add(TP_METRIC_HTTP_BYTES_IN_TOTAL, n);
            c->read_needs_write = false;
            if (ws) {
                tp_ws_feed(c->ws, p, (size_t)n);
            } else {
                tp_buf_commit(&c->in, (size_t)n);
                process_input(c);
            }
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

static void do_write(struct tp_conn *c)
{
    if (closed(c) || c->state == CS_HANDSHAKE || c->state == CS_LINGER)
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
        if (r == TP_IO_WANT_READ)
            c->write_needs_read = true;
        else if (r < 0 && r != TP_IO_WANT_WRITE)
            tp_conn_close(c);
        else if (tp_ws_want_close(c->ws))
            tp_conn_close(c);
        return;
    }
    if (c->close_after_write && c->nslots == 0) {
        start_linger(c);
        return;
    }
    if (c->h->draining && http_idle(c))
        start_linger(c);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct tp_conn *c = io->data;
    if (closed(c))
        return;
    if (c->state == CS_HANDSHAKE) {
        int r = tp_io_handshake(&c->io);
        if (r == TP_IO_WANT_READ || r == TP_IO_WANT_WRITE) {
            c->hs_want_write = r == TP_IO_WANT_WRITE;
            update_events(c);
            return;
        }
        if (r != 0) {
            tp_metrics_inc(TP_METRIC_TLS_HANDSHAKE_FAILURES_TOTAL);
            tp_log_debug("conn", "TLS handshake failed\terr=\"%s\" fd=%d", tp_strerror(r), c->fd);
            tp_conn_close(c);
            return;
        }
        tp_metrics_inc(TP_METRIC_TLS_HANDSHAKES_TOTAL);
        c->state = CS_HTTP;
        revents |= EV_READ; /* application data may already sit in the TLS buffer */
    }
    if (c->state == CS_LINGER) {
        linger_read(c);
        update_events(c);
        return;
    }
    if ((revents & EV_READ) || (c->read_needs_write && (revents & EV_WRITE)))
        do_read(c);
    do_write(c);
    update_events(c);
    arm_timer(c);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_conn *c = t->data;
    tp_log_debug("conn", "timeout\tstate=%d in_request=%d fd=%d", (int)c->state, c->in_request,
                 c->fd);
    tp_conn_close(c);
}

/* --- Public --- */

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
    c->state = CS_HTTP;
    if (tls) {
        c->flags |= TP_CONN_TLS;
        if (tp_tls_io_init(&c->io, h->tls, fd) != 0) {
            free(c);
            return NULL;
        }
        c->state = CS_HANDSHAKE;
    } else {
        tp_io_plain_init(&c->io, fd);
    }
    c->parser = tp_http_parser_new(&h->http_limits);
    tp_buf_init(&c->in);
    tp_buf_init(&c->out);
    c->accepted_ms = c->progress_ms = tp_mono_ms();
    ev_io_init(&c->watcher, on_io, fd, EV_READ);
    c->watcher.data = c;
    ev_io_start(h->loop, &c->watcher);
    c->events = EV_READ;
    ev_timer_init(&c->timer, on_timer, 0.0, 0.0);
    c->timer.data = c;
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    tp_metrics_add(TP_METRIC_HTTP_CONNECTIONS_OPEN, 1);
    arm_timer(c);
    return c;
}

void tp_conn_close(struct tp_conn *c)
{
    if (closed(c))
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
        if (c->ws_prev != NULL)
            c->ws_prev->ws_next = c->ws_next;
        else
            h->ws_list = c->ws_next;
        if (c->ws_next != NULL)
            c->ws_next->ws_prev = c->ws_prev;
        h->nws--;
        tp_metrics_add(TP_METRIC_WS_CONNECTIONS_OPEN, -1);
    }
    drop_slots(c);
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

static int ws_result(struct tp_conn *c, int r)
{
    if (r == TP_ETOOBIG)
        tp_metrics_inc(TP_METRIC_WS_SLOW_CLOSED_TOTAL);
    else if (r == 0)
        tp_metrics_inc(TP_METRIC_WS_MESSAGES_OUT_TOTAL);
    mark_dirty(c);
    return r;
}

int tp_conn_ws_send(struct tp_conn *c, const void *payload, size_t len)
{
    if (closed(c) || c->ws == NULL)
        return TP_ECLOSED;
    return ws_result(c, tp_ws_send(c->ws, payload, len));
}

int tp_conn_ws_send_frame(struct tp_conn *c, struct tp_ws_frame *f)
{
    if (closed(c) || c->ws == NULL)
        return TP_ECLOSED;
    return ws_result(c, tp_ws_send_frame(c->ws, f));
}

void tp_conn_ws_ping(struct tp_conn *c)
{
    if (closed(c) || c->ws == NULL)
        return;
    tp_ws_ping(c->ws);
    mark_dirty(c);
}

int64_t tp_conn_ws_last_seen_ms(const struct tp_conn *c)
{
    return c->ws != NULL ? tp_ws_last_seen_ms(c->ws) : 0;
}

int64_t tp_conn_ws_message_since_ms(const struct tp_conn *c)
{
    return c->ws != NULL ? tp_ws_message_since_ms(c->ws) : 0;
}

void tp_conn_ws_set_max_message(struct tp_conn *c, size_t max)
{
    if (c->ws != NULL)
        tp_ws_set_max_message(c->ws, max);
}

void tp_conn_ws_close(struct tp_conn *c, uint16_t code, const char *reason)
{
    if (closed(c) || c->ws == NULL)
        return;
    tp_ws_close(c->ws, code, reason);
    mark_dirty(c);
}

void tp_conn_run_deferred(struct tp_conn *c)
{
    if (closed(c))
        return;
    if (c->state == CS_HTTP) {
        bool paused = !want_read(c);
        process_input(c);
        /* Reading resumes after a pause: TLS may hold decrypted bytes epoll cannot see. */
        if (c->was_paused && want_read(c) && (c->flags & TP_CONN_TLS))
            do_read(c);
        c->was_paused = paused && !want_read(c);
    }
    do_write(c);
    update_events(c);
    arm_timer(c);
}

void tp_conn_drain(struct tp_conn *c)
{
    if (closed(c))
        return;
    switch (c->state) {
    case CS_HANDSHAKE:
        tp_conn_close(c);
        break;
    case CS_HTTP:
        if (http_idle(c))
            tp_conn_close(c);
        else
            mark_dirty(c);
        break;
    case CS_WS:
        tp_ws_close(c->ws, TP_WS_CLOSE_GOING_AWAY, "server shutting down");
        mark_dirty(c);
        break;
    case CS_LINGER:
        break;
    }
}

/* --- Host side --- */

bool tp_conn_run_dirty(struct tp_conn_host *h, int64_t budget_ns)
{
    /* Running a connection can mark others (or itself) dirty again; every round consumes
     * buffered input or output, so this terminates. The list is last-marked first, so a reply
     * marked while a fan-out's sockets wait for their slice goes before them. */
    int64_t until = budget_ns > 0 ? tp_mono_ns() + budget_ns : 0;
    unsigned n = 0;
    while (h->dirty != NULL) {
        struct tp_conn *list = h->dirty;
        h->dirty = NULL;
        while (list != NULL) {
            /* The clock is read every 16 connections: a write costs a few µs. */
            if (until != 0 && (++n & 15) == 0 && tp_mono_ns() >= until) {
                /* Slice spent: the rest waits behind what was marked meanwhile. */
                struct tp_conn **tail = &h->dirty;
                while (*tail != NULL)
                    tail = &(*tail)->dirty_next;
                *tail = list;
                return true;
            }
            struct tp_conn *c = list;
            list = c->dirty_next;
            c->dirty = false;
            tp_conn_run_deferred(c);
        }
    }
    return false;
}

bool tp_conn_has_dirty(const struct tp_conn_host *h)
{
    return h->dirty != NULL;
}

void tp_conn_reap(struct tp_conn_host *h)
{
    /* A closed connection still on the dirty list (waiting for its slice) is freed once the
     * list has let go of it. */
    struct tp_conn **pp = &h->closing;
    while (*pp != NULL) {
        struct tp_conn *c = *pp;
        if (c->dirty) {
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
        if (!closed(c))
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
    tp_conn_reap(h);
}
