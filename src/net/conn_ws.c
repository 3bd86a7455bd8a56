/*
 * WebSocket on a client connection (conn_internal.h): validating the upgrade, the switch once
 * the 101 is out, the session's callbacks, and the tp_conn_ws_* calls of the session layer.
 * Framing, the close handshake and the output queue are net/ws's.
 */
#include "conn_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/http.h"
#include "tickpool/net/ws.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void ws_on_message(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary, void *ud)
{
    (void)ws;
    struct tp_conn *c = ud;
    tp_metrics_inc(TP_METRIC_WS_MESSAGES_IN_TOTAL);
    if (c->h->ws_hooks.on_message != NULL && !tp_conn_is_closed(c))
        c->h->ws_hooks.on_message(c, data, len, binary, c->h->ws_ud);
}

static void ws_on_close(struct tp_ws *ws, uint16_t code, void *ud)
{
    (void)ws;
    struct tp_conn *c = ud;
    tp_log_debug("conn", "websocket closed\tcode=%u fd=%d", code, c->fd);
    tp_conn_mark_dirty(c);
}

static const struct tp_ws_callbacks ws_callbacks = {
    .on_message = ws_on_message,
    .on_close = ws_on_close,
};

/* The 101 left the FIFO: from here on the byte stream is WebSocket. Input already buffered
 * after the upgrade request belongs to the new protocol. */
void tp_conn_ws_switch(struct tp_conn *c, struct tp_http_ctx *ctx)
{
    struct tp_conn_host *h = c->h;
    c->state = TP_CONN_ST_WS;
    c->flags |= TP_CONN_WS;
    c->ws = tp_ws_new(&h->ws_limits, &ws_callbacks, c);
    c->fan_gen = h->fan.last; /* beats handed out before it opened are not its */
    c->ws_prev = NULL;
    c->ws_next = h->ws_list;
    if (h->ws_list != NULL)
        h->ws_list->ws_prev = c;
    h->ws_list = c;
    h->nws++;
    tp_metrics_add(TP_METRIC_WS_CONNECTIONS_OPEN, 1);
    if (h->ws_hooks.on_open != NULL)
        h->ws_hooks.on_open(c, tp_http_ctx_request(ctx), h->ws_ud);
    if (tp_buf_size(&c->in) > 0 && !tp_conn_is_closed(c))
        tp_ws_feed(c->ws, tp_buf_ptr(&c->in), tp_buf_size(&c->in));
    /* A WebSocket reads through a stack buffer (tp_conn_read) and never parses HTTP again: the
     * input buffer (16 KiB once read into) and the parser would be an idle socket's largest
     * memory. process_input stops at once now that the state is TP_CONN_ST_WS. */
    tp_buf_deinit(&c->in);
    tp_http_parser_free(c->parser);
    c->parser = NULL;
    tp_conn_mark_dirty(c);
}

/* Validates an upgrade on /ws and answers 101, 403 or 400 into the request's slot. */
void tp_conn_ws_upgrade(struct tp_conn *c, struct tp_http_ctx *ctx)
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

/* --- Session calls --- */

static int count_result(int r)
{
    if (r == TP_ETOOBIG)
        tp_metrics_inc(TP_METRIC_WS_SLOW_CLOSED_TOTAL);
    else if (r == 0)
        tp_metrics_inc(TP_METRIC_WS_MESSAGES_OUT_TOTAL);
    return r;
}

static int ws_result(struct tp_conn *c, int r)
{
    count_result(r);
    tp_conn_mark_dirty(c);
    return r;
}

/* A `round` the fan-out holds for the next beat (tp_conn_fanout_hold) came before what is being
 * queued now: the socket takes it first (with any beat pending), so a `payout` never goes ahead
 * of its settled `round`, nor the next boundary's pair ahead of the settled `round` before it. */
static void take_held(struct tp_conn *c)
{
    if (c->h->fan.held > 0)
        tp_conn_fanout_give(c);
}

int tp_conn_ws_send(struct tp_conn *c, const void *payload, size_t len)
{
    if (tp_conn_is_closed(c) || c->ws == NULL)
        return TP_ECLOSED;
    take_held(c);
    return ws_result(c, tp_ws_send(c->ws, payload, len));
}

int tp_conn_ws_send_frame(struct tp_conn *c, struct tp_ws_frame *f)
{
    if (tp_conn_is_closed(c) || c->ws == NULL)
        return TP_ECLOSED;
    take_held(c);
    return ws_result(c, tp_ws_send_frame(c->ws, f));
}

int tp_conn_ws_broadcast_frame(struct tp_conn *c, struct tp_ws_frame *f)
{
    if (tp_conn_is_closed(c) || c->ws == NULL)
        return TP_ECLOSED;
    take_held(c);
    int r = count_result(tp_ws_send_frame(c->ws, f));
    tp_conn_mark_bdirty(c);
    return r;
}

int tp_conn_ws_queue(struct tp_conn *c, struct tp_ws_frame *f)
{
    if (tp_conn_is_closed(c) || c->ws == NULL)
        return TP_ECLOSED;
    return count_result(tp_ws_send_frame(c->ws, f));
}

void tp_conn_ws_fanout_from_now(struct tp_conn *c)
{
    c->fan_gen = c->h->fan.last;
}

void tp_conn_ws_ping(struct tp_conn *c)
{
    if (tp_conn_is_closed(c) || c->ws == NULL)
        return;
    tp_ws_ping(c->ws);
    tp_conn_mark_dirty(c);
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
    if (tp_conn_is_closed(c) || c->ws == NULL)
        return;
    tp_ws_close(c->ws, code, reason);
    tp_conn_mark_dirty(c);
}
