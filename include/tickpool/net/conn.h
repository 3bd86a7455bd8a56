/*
 * A client connection: socket, plain or TLS I/O, HTTP/1.1 with keep-alive and pipelining
 * (responses strictly in request order, even when handlers answer later), timeouts, and the
 * switch to WebSocket on /ws. Connections are freed only from the worker's ev_prepare hook,
 * never inside their own callbacks (docs/conventions.md §5).
 */
#ifndef TP_CONN_H
#define TP_CONN_H

#include "tickpool/net/http.h"
#include "tickpool/net/ws.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct tp_config;
struct tp_conn;
struct tp_conn_fanout_batch;
struct tp_router;
struct tp_tls_ctx;
struct tp_worker;
struct tp_ws_frame;

/* WebSocket session hooks, set by the session layer through tp_worker_set_ws_hooks. Every
 * pointer is borrowed for the duration of the call; the conn stays valid until on_close
 * returns. */
struct tp_conn_ws_hooks {
    /** A socket switched to WebSocket (the 101 is queued); `req` is the upgrade request
     * (for ?token=). */
    void (*on_open)(struct tp_conn *c, const struct tp_http_request *req, void *ud);
    /** One complete message. */
    void (*on_message)(struct tp_conn *c, const uint8_t *data, size_t len, bool binary, void *ud);
    /** The socket is going away (any reason); drop every pointer to `c`. */
    void (*on_close)(struct tp_conn *c, void *ud);
};

/* Frames a fan-out may hold that are never dropped (tp_conn_fanout_hold): more wait for the
 * caller's own queueing at once. */
#define TP_CONN_FANOUT_HELD_MAX 4

/* Broadcasts being handed to the WebSocket sockets in slices (conn_fanout.c): at most one frame
 * per droppable kind (tick, odds) and up to TP_CONN_FANOUT_HELD_MAX held ones (a `round` riding
 * the next beat), oldest first, each with its generation. Only the conn files touch it. */
struct tp_conn_fanout {
    struct tp_ws_frame *f[TP_WS_KIND_COUNT_ + TP_CONN_FANOUT_HELD_MAX]; /* pending, oldest first */
    uint64_t gen[TP_WS_KIND_COUNT_ + TP_CONN_FANOUT_HELD_MAX];          /* increasing */
    int n;
    int held;               /* of the n, frames that are never dropped (tp_conn_fanout_hold) */
    uint64_t last;          /* the newest generation handed out (0: none yet) */
    uint64_t walk_gen;      /* the newest generation the walk under way hands out */
    struct tp_conn *cursor; /* next socket of ws_list to visit (NULL: the list's head) */
    size_t left;            /* visits until every socket has the newest frame */
    bool (*ready)(const struct tp_conn *c);
    /* Written straight by the walk since the slice began: added to the metrics once a slice. */
    size_t out_msgs, out_bytes;
    struct tp_conn_fanout_batch *_batch; /* io_uring sends of a slice; NULL: a send() each */
};

/*
 * What connections need from the process that owns them, and its connection lists. The worker
 * embeds one host, fills the settings before it accepts and passes it to tp_conn_new: a
 * connection never sees the worker's own structure, so conn stays below worker. Only the conn
 * files touch the lists and counters.
 */
struct tp_conn_host {
    struct tp_worker *worker; /* reported by tp_conn_worker and tp_http_ctx_worker; may be NULL */
    struct ev_loop *loop;
    const struct tp_config *cfg;
    struct tp_router *router; /* where requests other than /ws go */
    struct tp_tls_ctx *tls;   /* for connections accepted on the HTTPS listener */
    struct tp_http_limits http_limits;
    struct tp_ws_limits ws_limits;
    struct tp_conn_ws_hooks ws_hooks; /* all NULL: every WebSocket message is ignored */
    void *ws_ud;
    bool draining; /* no keep-alive: set when the drain starts, with tp_conn_drain_all */

    struct tp_conn *conns;   /* every connection (doubly linked) */
    struct tp_conn *ws_list; /* WebSocket connections (doubly linked) */
    struct tp_conn *dirty;   /* connections with deferred work (singly linked) */
    /* Sockets a broadcast was queued to at once (tp_conn_ws_broadcast_frame), oldest first
     * (bdirty_next): run after `dirty`, so a `round` pair still being written is not overtaken
     * by the next broadcast's writes to the sockets that already have it (conn.c). */
    struct tp_conn *bdirty, *bdirty_tail;
    /* Sockets put on `bdirty` and taken off it (written) so far: the list is a FIFO, so a
     * broadcast queued when `bdirty_in` was n is out once `bdirty_out` reaches n
     * (tp_conn_bcast_mark). */
    uint64_t bdirty_in, bdirty_out;
    struct tp_conn *closing; /* flagged TP_CONN_CLOSE_ASAP, freed in reap (singly linked) */
    size_t nconns, nws;
    /* TLS handshake steps waiting for a loop iteration's budget, oldest first (hs_next): [0]
     * handshakes already under way, which go first, [1] new ones (conn_hs.c). */
    struct tp_conn *hs_wait[2], *hs_tail[2];
    unsigned hs_iteration; /* ev_iteration the budget below counts for */
    int64_t hs_spent_ns;   /* handshake CPU time spent in that iteration */
    int64_t hs_budget_ns;  /* and that iteration's budget (conn_hs.c) */
    struct tp_conn_fanout fan;
};

/* Connection flags. */
#define TP_CONN_CLOSE_ASAP 0x1u /* free in the next ev_prepare; no more I/O */
#define TP_CONN_TLS 0x2u        /* accepted on the HTTPS listener */
#define TP_CONN_WS 0x4u         /* switched to WebSocket */

/** Accepts ownership of connected socket `fd` on host `h` (tls: HTTPS listener). Returns NULL
 * when the TLS session cannot be set up (the caller still owns and closes `fd`). */
struct tp_conn *tp_conn_new(struct tp_conn_host *h, int fd, bool tls);
/** Frees a connection (the host's prepare hook only, through tp_conn_reap). */
void tp_conn_free(struct tp_conn *c);
/** Flags the connection TP_CONN_CLOSE_ASAP: I/O stops now, the worker frees it soon. */
void tp_conn_close(struct tp_conn *c);
/** TP_CONN_* flags. */
unsigned tp_conn_flags(const struct tp_conn *c);
/** The worker owning the connection (its host's `worker`). */
struct tp_worker *tp_conn_worker(const struct tp_conn *c);

/** Session-layer pointer attached to a WebSocket connection (NULL initially). */
void tp_conn_set_data(struct tp_conn *c, void *data);
void *tp_conn_data(const struct tp_conn *c);

/** Queues a direct (never dropped) binary message. Returns 0, TP_ECLOSED (not a live
 * WebSocket) or TP_ETOOBIG (queue overflow: the socket is closing). */
int tp_conn_ws_send(struct tp_conn *c, const void *payload, size_t len);
/** Queues a shared frame (takes a reference). Same returns as tp_conn_ws_send. */
int tp_conn_ws_send_frame(struct tp_conn *c, struct tp_ws_frame *f);
/** The same for a broadcast queued to every socket at once: the socket is written in the order
 * the broadcasts came, behind the answers marked meanwhile (tp_conn_run_dirty). */
int tp_conn_ws_broadcast_frame(struct tp_conn *c, struct tp_ws_frame *f);
/** The socket gets only the droppable broadcasts handed to tp_conn_fanout from now on (its
 * snapshot is being queued: older beats would go out after it). */
void tp_conn_ws_fanout_from_now(struct tp_conn *c);
/** Starts the WebSocket close handshake; the connection closes once it is flushed. */
void tp_conn_ws_close(struct tp_conn *c, uint16_t code, const char *reason);
/** Queues a ping (keepalive of an idle socket). No-op when not a live WebSocket. */
void tp_conn_ws_ping(struct tp_conn *c);
/** When the peer last sent anything (tp_mono_ms clock); 0 when not a WebSocket. */
int64_t tp_conn_ws_last_seen_ms(const struct tp_conn *c);
/** When the data message being received began (tp_mono_ms clock); 0 when none is in progress
 * or not a WebSocket (tp_ws_message_since_ms). */
int64_t tp_conn_ws_message_since_ms(const struct tp_conn *c);
/** Sets the largest message this WebSocket accepts (bigger: close 1009). No-op otherwise. */
void tp_conn_ws_set_max_message(struct tp_conn *c, size_t max);

/* --- Host side (the worker's loop hooks) --- */

/** Runs deferred work (pipelined input, output) of a connection marked dirty. */
void tp_conn_run_deferred(struct tp_conn *c);
/** Drain started: close at once when idle, otherwise close after the current response. */
void tp_conn_drain(struct tp_conn *c);
/** Runs the deferred work (mostly writes) of the dirty connections of `h` (ev_prepare) for at
 * most about `budget_ns` (0: all of them). Returns true when some are left for the next loop
 * iteration: the caller keeps the loop from blocking so I/O is served between slices. */
bool tp_conn_run_dirty(struct tp_conn_host *h, int64_t budget_ns);
/** True while dirty connections wait for a tp_conn_run_dirty slice. */
bool tp_conn_has_dirty(const struct tp_conn_host *h);
/** Where the host's writes queued at once stand, taken right after a broadcast was queued to
 * its sockets (tp_conn_ws_broadcast_frame): see tp_conn_bcast_out. */
struct tp_conn_bcast_mark {
    uint64_t from, upto;
};
struct tp_conn_bcast_mark tp_conn_bcast_mark(const struct tp_conn_host *h);
/** True once every write queued at once before `m` was taken has been made: the broadcast's
 * sockets are written (or, those whose kernel buffer was full, wait for their watcher as any
 * write does), whatever was queued behind it since (the next broadcast, replies). */
bool tp_conn_bcast_out(const struct tp_conn_host *h, struct tp_conn_bcast_mark m);
/** Hands droppable frame `f` (tick, odds; the host takes a reference) to every WebSocket of `h`
 * for which `ready` holds, in slices (tp_conn_run_fanout). It supersedes the pending frames its
 * kind supersedes (tp_ws_kind_supersedes): a socket not yet visited gets only the newest. */
void tp_conn_fanout(struct tp_conn_host *h, struct tp_ws_frame *f,
                    bool (*ready)(const struct tp_conn *c));
/** Holds non-droppable frame `f` (a `round` that announces no boundary; the host takes a
 * reference) for every WebSocket of `h` for which `ready` holds, to go in the same write as the
 * next beat: the sockets the walk under way has still to visit take it with their beat, the
 * others with the next tp_conn_fanout's (or tp_conn_fanout_release's) walk, and a socket written
 * meanwhile for any other reason (a reply, a payout, a broadcast queued at once) takes it first,
 * so it never goes behind what came after it. Returns false, holding nothing, when
 * TP_CONN_FANOUT_HELD_MAX frames are held already: the caller queues it at once. */
bool tp_conn_fanout_hold(struct tp_conn_host *h, struct tp_ws_frame *f,
                         bool (*ready)(const struct tp_conn *c));
/** Starts a walk for the held frames not yet handed out by one (no beat came in time); no-op
 * when none waits. */
void tp_conn_fanout_release(struct tp_conn_host *h);
/** Visits sockets for at most about `budget_ns` (0: all), queueing each one's pending frames in
 * order and writing them at once (several in one write), from where the previous slice stopped.
 * True when sockets are left for the next loop iteration. */
bool tp_conn_run_fanout(struct tp_conn_host *h, int64_t budget_ns);
/** Sends the fan-out's straight writes to plain sockets in batches of up to `batch` (a power of
 * two), one io_uring_enter each, instead of one send() each; 0: send() (the default, and TLS
 * sockets always). Returns 0, or TP_EUNAVAIL when io_uring is unavailable or fails its start-up
 * check, with the reason in `err`: send() is used. Freed by tp_conn_close_all_and_reap. */
int tp_conn_fanout_setup(struct tp_conn_host *h, unsigned batch, char *err, size_t errlen);
/** True when the fan-out sends through io_uring (tp_conn_fanout_setup). */
bool tp_conn_fanout_io_uring(const struct tp_conn_host *h);
/** Sends the fan-out has made through io_uring so far (0 without it): for tests and benches. */
uint64_t tp_conn_fanout_batched(const struct tp_conn_host *h);
/** True while frames handed to tp_conn_fanout wait for sockets still to be visited. */
bool tp_conn_fanout_pending(const struct tp_conn_host *h);
/** Resumes TLS handshakes that waited for a budget, oldest first, within this iteration's
 * budget (ev_prepare). True when some still wait: the caller keeps the loop from blocking. */
bool tp_conn_run_handshakes(struct tp_conn_host *h);
/** Frees every connection of `h` flagged TP_CONN_CLOSE_ASAP (ev_prepare, outside callbacks). */
void tp_conn_reap(struct tp_conn_host *h);
/** Calls fn on every live WebSocket connection of `h` (fn must not close sockets). */
void tp_conn_foreach_ws(struct tp_conn_host *h, void (*fn)(struct tp_conn *c, void *ud), void *ud);
/** Starts draining every connection of `h` (tp_conn_drain on each). */
void tp_conn_drain_all(struct tp_conn_host *h);
/** Closes and frees every connection of `h` (process exit). */
void tp_conn_close_all_and_reap(struct tp_conn_host *h);

#endif
