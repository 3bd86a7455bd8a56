/*
 * Game leader: one instance per worker process, on the worker's loop. Every instance tries the
 * Redis lease (scripts/lua/lease.lua) every 500 ms; the holder runs the game: the price tick
 * loop, round opening/locking/closing, cancellation of missed rounds and paged settlement, all
 * through fenced Lua scripts (scripts/lua/README.md, "Game engine"). Losing the lease stops
 * every game timer at once.
 */
#ifndef TP_LEADER_H
#define TP_LEADER_H

#include <stdbool.h>
#include <stdint.h>

struct tp_worker;
struct tp_leader;

/** Starts this process's leader instance on the worker's loop and store (idempotent per
 * worker; kept in worker data slot TP_LEADER_DATA_KEY). */
void tp_leader_start(struct tp_worker *w);
/** Stops the timers and releases the lease if held (drain). NULL is a no-op. */
void tp_leader_stop(struct tp_leader *l);
/** True while this instance holds the lease. */
bool tp_leader_is_leader(const struct tp_leader *l);

/** Worker init hook wiring the whole game into a worker: the read API routes
 * (tp_game_api_register) and the leader (tp_leader_start), plus a drain hook that releases the
 * lease. Register once in main.c: tp_worker_on_init(tp_game_worker_init, NULL). */
void tp_game_worker_init(struct tp_worker *w, void *ud);

/* Worker data slot used by the leader (tp_worker_set_data). */
#define TP_LEADER_DATA_KEY 7

#endif
