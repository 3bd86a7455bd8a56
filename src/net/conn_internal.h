/*
 * Private to the client connections (tickpool/net/conn.h), split by job:
 *   conn.c       lifecycle (accept, close, free), the deferred-work list and the host side;
 *   conn_io.c    the socket: watched events, the state's deadline, reads, writes, linger;
 *   conn_http.c  HTTP/1.1 requests: parsing, dispatch, responses in request order;
 *   conn_ws.c    the switch to WebSocket and the session calls of tp_conn_ws_*;
 *   conn_hs.c    TLS handshake steps within a budget per loop iteration;
 *   conn_fanout.c beats handed to the WebSocket sockets in slices, and the frames riding them.
 * The struct below is shared by these files; nothing else includes this header.
 */
#ifndef TP_CONN_INTERNAL_H
#define TP_CONN_INTERNAL_H

#include "tickpool/base/buf.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/http.h"
#include "tickpool/net/io.h"
#include "tickpool/net/router.h" /* struct tp_http_peer */
#include "tickpool/net/ws.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#define TP_CONN_PIPELINE_MAX 16 /* requests parsed ahead of their answers */

/* HANDSHAKE (TLS only) → HTTP → (WS | LINGER) → closed. */
enum tp_conn_state { TP_CONN_ST_HANDSHAKE, TP_CONN_ST_HTTP, TP_CONN_ST_WS, TP_CONN_ST_LINGER };

/* One parsed request waiting for its answer, in request order (conn_http.c). */
struct tp_conn_slot {
    struct tp_http_ctx *ctx;
    struct tp_conn_slot *next;
};

struct tp_conn {
    /* What every visit of the fan-out's walk reads (conn_fanout.c), together at the start: a
     * walk touches thousands of connections per beat, and each cache line is a miss. */
    struct tp_conn_host *h;
    int fd;
    unsigned flags;
    enum tp_conn_state state;
    int events;
    bool dirty;
    bool bdirty;      /* on h->bdirty (a broadcast's write); may be on h->dirty too */
    uint64_t fan_gen; /* newest fan-out generation this socket was given or skipped */
    struct tp_ws *ws;
    struct tp_conn *ws_next; /* h->ws_list */
    void *data;
    struct tp_io io;
    struct tp_buf out;

    ev_io watcher;
    ev_timer timer;
    struct tp_http_parser *parser;
    struct tp_buf in;
    struct tp_conn_slot *head, *tail;
    size_t nslots;
    bool stop_parsing;      /* no further requests will be read on this connection */
    bool close_after_write; /* close (lingering) once output is flushed */
    bool peer_eof;
    bool in_request; /* a request has started arriving and is not complete */
    bool hs_want_write, read_needs_write, write_needs_read;
    bool hs_waiting; /* in h->hs_wait: its handshake step waits for a budget (conn_hs.c) */
    bool hs_started; /* its handshake has taken a step */
    bool was_paused;
    unsigned served;
    int64_t accepted_ms, req_start_ms, progress_ms, linger_ms;
    struct tp_http_peer peer;    /* read once at accept: per-client limits key on it */
    struct tp_conn *prev, *next; /* h->conns */
    struct tp_conn *ws_prev;     /* h->ws_list */
    struct tp_conn *dirty_next, *bdirty_next, *close_next, *hs_next;
};

static inline bool tp_conn_is_closed(const struct tp_conn *c)
{
    return (c->flags & TP_CONN_CLOSE_ASAP) != 0;
}

/* Bytes queued for the peer: HTTP output, or the WebSocket session's queue. */
static inline bool tp_conn_has_output(const struct tp_conn *c)
{
    return tp_buf_size(&c->out) > 0 || (c->ws != NULL && tp_ws_has_output(c->ws));
}

/* --- Lifecycle (conn.c) --- */

/** Puts the connection on its host's dirty list, for tp_conn_run_dirty (no-op when closed or
 * already there). */
void tp_conn_mark_dirty(struct tp_conn *c);
/** Appends the connection to its host's broadcast list (no-op when closed, already on it or on
 * the dirty list, which runs first). */
void tp_conn_mark_bdirty(struct tp_conn *c);
/** True when an HTTP connection has nothing under way: no request, answer or byte pending. */
bool tp_conn_http_idle(const struct tp_conn *c);

/* --- The socket (conn_io.c) --- */

/** Recomputes the watched events from the state (one ev_io per connection). */
void tp_conn_update_events(struct tp_conn *c);
/** Re-arms the single timer for the state's deadline (handshake, request, keep-alive, linger,
 * WebSocket close). */
void tp_conn_arm_timer(struct tp_conn *c);
/** True when the connection should read now (not paused by a full pipeline or unparsed input). */
bool tp_conn_want_read(const struct tp_conn *c);
/** Reads what the socket has (a bounded number of reads) and feeds the HTTP parser or the
 * WebSocket session. */
void tp_conn_read(struct tp_conn *c);
/** Writes queued output; after the last answer of a closing connection, starts the linger. */
void tp_conn_write(struct tp_conn *c);
/** What a WebSocket write's result `r` (0, TP_IO_WANT_*, a TP_E* error) leaves to do: wait for
 * readability (TLS), close on an error, or close once the session's close frame is out. Shared
 * by the queue's flush (tp_conn_write) and the fan-out's direct writes. */
void tp_conn_ws_written(struct tp_conn *c, int r);
/** After a batched send of the `n` bytes tp_ws_take_output gave (`p`) returned `w`: the session
 * takes the result, then tp_conn_ws_written, and the socket's events and idle timer follow it.
 * Shared by the dirty list's io_uring batch (conn.c) and the fan-out's gathered sends. */
void tp_conn_ws_output_sent(struct tp_conn *c, const uint8_t *p, size_t n, ssize_t w);
/** Half-closes and drains unread input until EOF (for at most a few seconds), so a response is not
 * lost to an RST; closes at once when the peer already sent EOF. */
void tp_conn_start_linger(struct tp_conn *c);
/** One step of the connection as its watcher saw `revents` (resumed: its turn came in the
 * handshake queue rather than from its watcher). */
void tp_conn_io_step(struct tp_conn *c, int revents, bool resumed);
/** The watcher's and the timer's callbacks (set by tp_conn_new). */
void tp_conn_on_io(struct ev_loop *loop, ev_io *io, int revents);
void tp_conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents);

/* --- HTTP (conn_http.c) --- */

/** Parses and dispatches buffered requests while the FIFO has room, and moves answers that are
 * ready to the output in request order. */
void tp_conn_process_input(struct tp_conn *c);
/** Drops every request slot; contexts still being handled are orphaned (their late reply frees
 * them). */
void tp_conn_drop_slots(struct tp_conn *c);

/* --- WebSocket (conn_ws.c) --- */

/** Validates an upgrade request on /ws and answers 101, 403 or 400 into its slot. */
void tp_conn_ws_upgrade(struct tp_conn *c, struct tp_http_ctx *ctx);
/** Queues shared frame `f` on the WebSocket (counting it) without marking the connection
 * dirty. Same returns as tp_conn_ws_send_frame. */
int tp_conn_ws_queue(struct tp_conn *c, struct tp_ws_frame *f);
/** The 101 left the FIFO: the connection becomes a WebSocket session (input already buffered
 * after the upgrade request is fed to it). */
void tp_conn_ws_switch(struct tp_conn *c, struct tp_http_ctx *ctx);

/* --- TLS handshakes (conn_hs.c) --- */

/** Takes one handshake step if this iteration's budget allows, else queues the connection
 * (watcher stopped) for tp_conn_run_handshakes. True once the handshake is done (the state is
 * HTTP); false while it waits or goes on, or when it failed (the connection is closed). */
bool tp_conn_handshake(struct tp_conn *c, bool resumed);
/** Forgets every queued handshake (process exit: the connections are being closed). */
void tp_conn_handshakes_drop(struct tp_conn_host *h);

/* --- Fan-out (conn_fanout.c) --- */

/** While beats are being handed out or frames held (tp_conn_fanout_hold), queues to `c` those
 * it has not had, behind its queued frames, without writing: for a socket about to be written
 * from the dirty list, so they go in the same write (the walk then skips it), and before a frame
 * queued to it later (conn_ws.c). */
void tp_conn_fanout_give(struct tp_conn *c);
struct tp_send_batch;
/** The fan-out's io_uring batch (tp_conn_fanout_setup) when it is set up and holds no send of a
 * walk, for another caller's sends (conn.c's broadcasts); NULL: one send() each. */
struct tp_send_batch *tp_conn_fanout_sends(struct tp_conn_host *h);
/** That batch ran `n` sends (tp_send_batch_run returned `rc`): they count as the fan-out's
 * (tp_conn_fanout_batched), and a failed ring means send() from now on. */
void tp_conn_fanout_sends_ran(struct tp_conn_host *h, unsigned n, int rc);
/** `c` leaves the WebSocket list: the fan-out's cursor moves past it. */
void tp_conn_fanout_forget(struct tp_conn *c);
/** Drops every pending frame (process exit). */
void tp_conn_fanout_drop(struct tp_conn_host *h);

#endif
