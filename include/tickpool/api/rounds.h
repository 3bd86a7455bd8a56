/*
 * Rounds and prices HTTP API: GET /api/v1/rounds/current, /api/v1/rounds/{id}, /api/v1/rounds
 * (newest first, `limit`, `before`) and /api/v1/prices (`since`), in JSON or MessagePack
 * (docs/http-api.md). Read-only over the game's Redis state.
 */
#ifndef TP_ROUNDS_H
#define TP_ROUNDS_H

/** Registers the routes in every worker (a tp_worker_on_init hook). Call once in main, before
 * tp_master_run. */
void tp_rounds_install(void);

#endif
