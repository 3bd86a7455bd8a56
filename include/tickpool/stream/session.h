/*
 * WebSocket session protocol (CONTRACT.md §6): per-socket state on top of the connection layer.
 * On open: authentication (`?token=` or a first `auth` message), `hello`, then `snapshot`; then
 * client messages `auth`, `bet` (through tickpool/money/bet.h, the same path as HTTP) and `ping`.
 * Enforces the per-socket message rate, the per-user socket cap and token expiry (close 1008).
 * Everything runs on the worker's loop thread.
 */
#ifndef TP_SESSION_H
#define TP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_conn;
struct tp_worker;

/** Registers the session layer in every worker (its worker slot and a tp_worker_on_init hook
 * that installs the WebSocket hooks), then the broadcaster and the odds projector
 * (tp_bcast_install, tp_odds_install). Call once in main, before tp_master_run. */
void tp_session_install(void);

/** The user id of a session (0: anonymous, or `c` has no session). */
int64_t tp_session_user(const struct tp_conn *c);
/** True once the session sent its `snapshot`: broadcasts go only to ready sessions, so a
 * client sees hello, snapshot, then the stream. */
bool tp_session_ready(const struct tp_conn *c);

/** Loads a fresh snapshot once and queues it to every ready socket of `w` (one shared frame,
 * after the broadcast subscription came back). */
void tp_session_resync(struct tp_worker *w);

#endif
