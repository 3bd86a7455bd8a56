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
 * worker; kept in the leader's worker slot, so tp_game_install must have run). */
void tp_leader_start(struct tp_worker *w);
/** Stops the timers and releases the lease if held (drain). NULL is a no-op. */
void tp_leader_stop(struct tp_leader *l);
/** True while this instance holds the lease. */
bool tp_leader_is_leader(const struct tp_leader *l);
/** The worker's leader instance (borrowed), NULL when none was started on `w`. */
struct tp_leader *tp_leader_of(const struct tp_worker *w);

/** Wires the whole game into every worker: takes the leader's worker slot and registers an
 * init hook adding the read API routes (tp_game_api_register) and the leader
 * (tp_leader_start), plus a drain hook that releases the lease. Call once before
 * tp_master_run. */
void tp_game_install(void);

#endif
