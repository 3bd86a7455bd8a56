/*
 * HTTP/1.1 on a client connection (conn_internal.h).
 *
 * Ordering of pipelined responses: every parsed request gets a slot in a FIFO; handlers fill
 * their slot's context whenever they reply, and only replied slots at the head of the FIFO are
 * moved to the output buffer (flush_slots). At most TP_CONN_PIPELINE_MAX requests are parsed
 * ahead; beyond that the connection stops reading until answers drain, so a client cannot make
 * the server buffer unbounded work.
 */
#include "conn_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/http.h"
#include "tickpool/net/router.h"

#include <stdlib.h>
#include <string.h>

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

/* --- HTTP --- */

static void on_ctx_done(struct tp_http_ctx *ctx, void *ud)
{
    (void)ctx;
    tp_conn_mark_dirty(ud);
}

static struct tp_http_ctx *push_slot(struct tp_conn *c, struct tp_http_request *req, bool ka)
{
    struct tp_http_ctx *ctx = tp_http_ctx_new(req, ka, on_ctx_done, c);
    tp_http_ctx_set_worker(ctx, c->h->worker);
    tp_http_ctx_set_peer(ctx, &c->peer);
    struct tp_conn_slot *s = tp_xmalloc(sizeof(*s));
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

void tp_conn_drop_slots(struct tp_conn *c)
{
    while (c->head != NULL) {
        struct tp_conn_slot *s = c->head;
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
    while (c->head != NULL && tp_http_ctx_replied(c->head->ctx) && !tp_conn_is_closed(c)) {
        struct tp_conn_slot *s = c->head;
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
        if (status == 101 && c->state == TP_CONN_ST_HTTP) {
            tp_conn_ws_switch(c, ctx);
            tp_http_ctx_free(ctx);
            tp_conn_drop_slots(c);
            return;
        }
        if (tp_http_ctx_closes(ctx)) {
            c->close_after_write = true;
            c->stop_parsing = true;
            tp_http_ctx_free(ctx);
            tp_conn_drop_slots(c);
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
        tp_conn_ws_upgrade(c, ctx);
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
void tp_conn_process_input(struct tp_conn *c)
{
    flush_slots(c);
    while (!tp_conn_is_closed(c) && c->state == TP_CONN_ST_HTTP && !c->stop_parsing &&
           c->nslots < TP_CONN_PIPELINE_MAX && tp_buf_size(&c->in) > 0) {
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
    if (c->state == TP_CONN_ST_HTTP && !c->stop_parsing) {
        bool inreq = tp_http_parser_in_request(c->parser);
        if (inreq && !c->in_request)
            c->req_start_ms = tp_mono_ms();
        c->in_request = inreq;
    }
    /* Input left over behind a closing response is never parsed. */
    if (c->stop_parsing && c->state == TP_CONN_ST_HTTP)
        tp_buf_reset(&c->in);
}
