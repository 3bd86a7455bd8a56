/*
 * A worker process: one libev loop (epoll) pinned to one CPU, its own SO_REUSEPORT listeners
 * for HTTP and HTTPS, its connections, its routing table, its WebSocket sockets and the
 * per-worker state of the modules above it (slots). Everything here runs on the worker's loop
 * thread only; other threads reach a worker through an ev_async (tp_workq's completions).
 *
 * Other modules plug in with tp_worker_on_init (called in every worker after fork, before it
 * accepts): register routes on tp_worker_router, start watchers on tp_worker_loop, keep their
 * state in a slot (tp_worker_slot_new), and set the WebSocket hooks. The worker knows nothing
 * of them: src/cli/main.c wires them in.
 */
#ifndef TP_WORKER_H
#define TP_WORKER_H

#include "tickpool/net/conn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest stretch of one loop iteration spent writing to connections (ns). */
#define TP_WORKER_SLICE_NS (2 * 1000 * 1000)
/* Sends of a fan-out slice made with one io_uring_enter (server.fanout_io_uring): a slice may
 * end up to one batch past its budget (about 0.3 ms at 2.5 us a send). */
#define TP_WORKER_FANOUT_BATCH 128

struct ev_loop;
struct tp_config;
struct tp_conn;
struct tp_router;
struct tp_worker;
struct tp_ws_frame;

/* Exit status of a worker that cannot start (bad listener, bad TLS files): the master stops the
 * whole server instead of restarting it in a loop. */
#define TP_WORKER_EXIT_FATAL 78

/** Per-worker start-up hook (`ud` as registered). */
typedef void (*tp_worker_hook)(struct tp_worker *w, void *ud);

/**
 * Registers `fn` to run in every worker after its loop and router exist and before it accepts
 * connections (in registration order, so a module whose state others use at init registers
 * first). Call before tp_master_run. At most 32 hooks.
 */
void tp_worker_on_init(tp_worker_hook fn, void *ud);
/** Registers `fn` to run when the worker starts draining (SIGTERM), before connections close. */
void tp_worker_on_drain(tp_worker_hook fn, void *ud);
/**
 * Keeps a draining worker's loop running until a matching tp_worker_drain_done: for a module's
 * last message whose reply must arrive before the process exits (the leader lease's release).
 * server.shutdown_timeout still bounds the drain.
 */
void tp_worker_drain_hold(struct tp_worker *w);
/** Gives back one tp_worker_drain_hold (its reply came, or failed): the drain ends at none. */
void tp_worker_drain_done(struct tp_worker *w);
/** Registers `fn` to run when the worker exits, after every connection is closed and freed
 * (in reverse registration order): frees what an init hook created. */
void tp_worker_on_exit(tp_worker_hook fn, void *ud);

/** Installs the WebSocket hooks (copied; see struct tp_conn_ws_hooks). Without hooks every
 * message is ignored. */
void tp_worker_set_ws_hooks(struct tp_worker *w, const struct tp_conn_ws_hooks *hooks, void *ud);

/**
 * Runs worker `index` (0-based) in the current, freshly forked process of master `master_pid`
 * (it exits at once if that master is already gone): pins the CPU, opens
 * listeners, runs hooks and the loop until drained. Never returns: exits 0 after a drain,
 * TP_WORKER_EXIT_FATAL when it cannot start.
 */
_Noreturn void tp_worker_main(const struct tp_config *cfg, int index, int master_pid);

/** The worker's loop. */
struct ev_loop *tp_worker_loop(struct tp_worker *w);
/** True while connection writes, or beats still to be handed to sockets (tp_worker_fanout), wait
 * for the next slice of the loop (a large fan-out is written in slices of about
 * TP_WORKER_SLICE_NS so bets and Redis replies are served in between). */
bool tp_worker_output_pending(const struct tp_worker *w);
/** Right after a broadcast was queued to the worker's sockets at once: where its writes stand
 * (tp_conn_bcast_mark). */
struct tp_conn_bcast_mark tp_worker_bcast_mark(const struct tp_worker *w);
/** True once the writes queued at once before `m` are made, whatever was queued since
 * (tp_conn_bcast_out). */
bool tp_worker_bcast_out(const struct tp_worker *w, struct tp_conn_bcast_mark m);
/** The worker's routing table (add routes from an init hook). */
struct tp_router *tp_worker_router(struct tp_worker *w);
/** The effective configuration (frozen). */
const struct tp_config *tp_worker_config(const struct tp_worker *w);
/** This worker's index, 0 … workers-1. */
int tp_worker_index(const struct tp_worker *w);
/** True once SIGTERM started the drain. */
bool tp_worker_is_draining(const struct tp_worker *w);
/* Per-worker module state (h2o's _config_slot): a module takes a slot id once, when it
 * registers, and keeps it private; every worker then has one pointer in that slot. A module
 * whose state another one needs exposes a typed accessor, never its slot id. */

/* Slots available to all modules together. */
#define TP_WORKER_MAX_SLOTS 32

/**
 * Hands out a new slot id (0, 1, …): call once per module at registration, before
 * tp_master_run, so every worker has the slot from its start. Aborts past TP_WORKER_MAX_SLOTS.
 */
size_t tp_worker_slot_new(void);
/** Sets this worker's pointer in `slot` (from tp_worker_slot_new; borrowed, never freed here). */
void tp_worker_slot_set(struct tp_worker *w, size_t slot, void *p);
/** This worker's pointer in `slot`; NULL until set. */
void *tp_worker_slot_get(const struct tp_worker *w, size_t slot);

/**
 * Queues one shared frame to every WebSocket of this worker (each takes a reference; the
 * caller keeps its own). Output is written before the loop next blocks. Returns the number of
 * sockets it was queued to.
 */
size_t tp_worker_broadcast(struct tp_worker *w, struct tp_ws_frame *f);
/**
 * Hands droppable frame `f` (tick, odds; a reference is taken) to every WebSocket of this
 * worker for which `ready` holds, in slices of the loop (tp_conn_fanout): sockets not yet
 * reached when a newer frame of a superseding kind arrives get only the newer one.
 */
void tp_worker_fanout(struct tp_worker *w, struct tp_ws_frame *f,
                      bool (*ready)(const struct tp_conn *c));
/**
 * Holds non-droppable frame `f` (a reference is taken) for every WebSocket of this worker for
 * which `ready` holds, to go in the same write as the next beat (tp_conn_fanout_hold). False,
 * holding nothing, when too many are held: queue it at once instead.
 */
bool tp_worker_fanout_hold(struct tp_worker *w, struct tp_ws_frame *f,
                           bool (*ready)(const struct tp_conn *c));
/** The held frames go now, without waiting for a beat (tp_conn_fanout_release). */
void tp_worker_fanout_release(struct tp_worker *w);
/** Calls fn for every open WebSocket connection (do not close sockets from fn). */
void tp_worker_foreach_ws(struct tp_worker *w, void (*fn)(struct tp_conn *c, void *ud), void *ud);
/** Number of open connections and of WebSocket connections. */
size_t tp_worker_nconns(const struct tp_worker *w);
size_t tp_worker_nws(const struct tp_worker *w);

#endif
