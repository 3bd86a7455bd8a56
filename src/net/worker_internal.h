/*
 * Internals shared by worker.c, conn.c and ops.c: the worker structure and the connection
 * lists the worker's ev_prepare hook walks. Not part of any module's public contract.
 */
#ifndef TP_WORKER_INTERNAL_H
#define TP_WORKER_INTERNAL_H

#include "tickpool/net/http.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/ws.h"

#include <ev.h>

struct tp_tls_ctx;
struct tp_static;

struct tp_listener {
    struct tp_worker *w;
    int fd;
    bool tls;
    ev_io io;
};

struct tp_worker {
    struct ev_loop *loop;
    const struct tp_config *cfg;
    int index;
    struct tp_router *router;
    struct tp_static *stat;
    struct tp_store *store;
    struct tp_tls_ctx *tls;
    struct tp_listener listeners[2];
    int nlisteners;
    ev_timer accept_retry; /* re-enables accepting after EMFILE/ENFILE */
    ev_prepare prepare;    /* deferred work and frees, before the loop blocks */
    ev_signal sigterm, sigint;
    ev_timer drain_timer; /* bounds the drain at server.shutdown_timeout */
    bool draining;
    struct tp_http_limits http_limits;
    struct tp_ws_limits ws_limits;
    struct tp_worker_ws_hooks ws_hooks;
    void *ws_ud;
    void *slots[TP_WORKER_MAX_SLOTS];

    /* Connection lists, manipulated by conn.c only. */
    struct tp_conn *conns;   /* every connection (doubly linked) */
    struct tp_conn *ws_list; /* WebSocket connections (doubly linked) */
    struct tp_conn *dirty;   /* connections with deferred work (singly linked) */
    struct tp_conn *closing; /* flagged TP_CONN_CLOSE_ASAP, freed in prepare (singly linked) */
    size_t nconns, nws;
};

/** Runs the deferred work of every dirty connection (worker prepare hook). */
void tp_conn_run_dirty(struct tp_worker *w);
/** Frees every connection flagged TP_CONN_CLOSE_ASAP (worker prepare hook). */
void tp_conn_reap(struct tp_worker *w);
/** Calls fn on every live WebSocket connection of w. */
void tp_conn_foreach_ws(struct tp_worker *w, void (*fn)(struct tp_conn *c, void *ud), void *ud);
/** Closes and frees every connection of w (worker exit). */
void tp_conn_close_all_and_reap(struct tp_worker *w);
/** Starts draining every connection of w. */
void tp_conn_drain_all(struct tp_worker *w);

#endif
