/*
 * A client connection: socket, plain or TLS I/O, HTTP/1.1 with keep-alive and pipelining
 * (responses strictly in request order, even when handlers answer later), timeouts, and the
 * switch to WebSocket on /ws. Connections are freed only from the worker's ev_prepare hook,
 * never inside their own callbacks (STYLE.md §5).
 */
#ifndef TP_CONN_H
#define TP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_conn;
struct tp_worker;
struct tp_ws_frame;

/* Connection flags. */
#define TP_CONN_CLOSE_ASAP 0x1u /* free in the next ev_prepare; no more I/O */
#define TP_CONN_TLS 0x2u        /* accepted on the HTTPS listener */
#define TP_CONN_WS 0x4u         /* switched to WebSocket */

/** Accepts ownership of connected socket `fd` on worker `w` (tls: HTTPS listener). */
struct tp_conn *tp_conn_new(struct tp_worker *w, int fd, bool tls);
/** Frees a connection (worker's prepare hook only). */
void tp_conn_free(struct tp_conn *c);
/** Flags the connection TP_CONN_CLOSE_ASAP: I/O stops now, the worker frees it soon. */
void tp_conn_close(struct tp_conn *c);
/** TP_CONN_* flags. */
unsigned tp_conn_flags(const struct tp_conn *c);
/** The worker owning the connection. */
struct tp_worker *tp_conn_worker(const struct tp_conn *c);

/** Session-layer pointer attached to a WebSocket connection (NULL initially). */
void tp_conn_set_data(struct tp_conn *c, void *data);
void *tp_conn_data(const struct tp_conn *c);

/** Queues a direct (never dropped) binary message. Returns 0, TP_ECLOSED (not a live
 * WebSocket) or TP_ETOOBIG (queue overflow: the socket is closing). */
int tp_conn_ws_send(struct tp_conn *c, const void *payload, size_t len);
/** Queues a shared frame (takes a reference). Same returns as tp_conn_ws_send. */
int tp_conn_ws_send_frame(struct tp_conn *c, struct tp_ws_frame *f);
/** Starts the WebSocket close handshake; the connection closes once it is flushed. */
void tp_conn_ws_close(struct tp_conn *c, uint16_t code, const char *reason);
/** Queues a ping (keepalive of an idle socket). No-op when not a live WebSocket. */
void tp_conn_ws_ping(struct tp_conn *c);
/** When the peer last sent anything (tp_mono_ms clock); 0 when not a WebSocket. */
int64_t tp_conn_ws_last_seen_ms(const struct tp_conn *c);

/* --- Worker side --- */

/** Runs deferred work (pipelined input, output) of a connection marked dirty. */
void tp_conn_run_deferred(struct tp_conn *c);
/** Drain started: close at once when idle, otherwise close after the current response. */
void tp_conn_drain(struct tp_conn *c);

#endif
