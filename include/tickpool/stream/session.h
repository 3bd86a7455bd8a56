/*
 * WebSocket session protocol (docs/protocol.md): per-socket state on top of the connection layer.
 * On open: authentication (`?token=` or a first `auth` message), `hello`, then `snapshot`; then
 * client messages `auth`, `bet` (through tickpool/money/bet.h, the same path as HTTP) and `ping`.
 * Enforces the per-socket message rate, the per-user socket cap and token expiry (close 1008).
 * Everything runs on the worker's loop thread.
 */
#ifndef TP_SESSION_H
#define TP_SESSION_H

/** Registers the session layer in every worker (its worker slot and a tp_worker_on_init hook
 * that installs the WebSocket hooks), then the broadcaster and the odds projector
 * (tp_bcast_install, tp_odds_install). Call once in main, before tp_master_run. */
void tp_session_install(void);

#endif
