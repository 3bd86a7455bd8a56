/*
 * Game leader: one instance per worker process, on the worker's loop. Every instance tries the
 * Redis lease (scripts/lua/lease.lua) every 500 ms; the holder runs the game: the price tick
 * loop, round opening/locking/closing, cancellation of missed rounds and paged settlement, all
 * through fenced Lua scripts (scripts/lua/README.md, "Game engine"). Losing the lease stops
 * every game timer at once.
 *
 * Announcements: the leader decides, it does not speak the wire protocol (the game layer sits
 * below stream). It reports facts to one observer per process, which the stream layer installs
 * at worker start-up (tp_bcast_start): a round changed state, a tick was written. The observer
 * encodes each fact once and PUBLISHes it on the broadcast channel with this worker's store, the
 * connection the leader's scripts use, so the order of announcements and script effects is the
 * one Redis sees. Without an observer the game runs silently.
 */
#ifndef TP_LEADER_H
#define TP_LEADER_H

#include <stdbool.h>
#include <stdint.h>

struct tp_game_pause;
struct tp_store;
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

/** What the leader reports, on the worker's loop, while it holds the lease. */
struct tp_leader_observer {
    /** Round `id` was opened, locked, settled, or its cancellation started or finished. */
    void (*on_round)(void *ud, int64_t id);
    /** A boundary locks `live_id` and opens `open_id`, the game's pair from then on: both are
     * to be announced, in that order. Called right after its script is sent, so that what reads
     * the pair can follow the script on the connection; nothing may be published before
     * on_boundary_end. (Either NULL: on_round is called for each once the boundary is written.) */
    void (*on_boundary)(void *ud, int64_t open_id, int64_t live_id);
    /** Exactly once after each on_boundary: `written` true, the boundary is in Redis and its
     * announcement may go (on one Redis server, commands sent from now on run after the
     * boundary's last writes); false, it failed and the announcement is dropped. */
    void (*on_boundary_end)(void *ud, bool written);
    /** Tick (ts, price) is recorded; after a catch-up only the newest is reported. */
    void (*on_tick)(void *ud, int64_t ts, int64_t price);
    /** The operator's pause changed (`p` borrowed during the call), or was read for the first
     * time by this lease (it may have changed while no process led). */
    void (*on_pause)(void *ud, const struct tp_game_pause *p);
};

/** Asks whoever leads to re-write the bucket copies of round `id` at its next step: a bet found
 * its bucket's copy missing (a promoted replica that missed the write, a reshard). Fire and
 * forget on `store`. One key holds the request and the last write wins: call it only for a
 * round whose record says open, so no other id overwrites a genuine request (the leader also
 * ignores an id that is not its open round). Returns 0 or the submit error. */
int tp_leader_ask_repair(struct tp_store *store, int64_t id);

/** Installs `obs` (borrowed, must outlive the worker) with `ud` on the leader of worker `w`,
 * replacing any previous one. Returns 0, or TP_ENOTFOUND when `w` runs no leader (no Redis
 * store, or tp_leader_start has not run yet: register the caller's init hook after the game's). */
int tp_leader_set_observer(struct tp_worker *w, const struct tp_leader_observer *obs, void *ud);

/** Wires the whole game into every worker: takes the leader's worker slot and registers an
 * init hook adding the leader (tp_leader_start) and a drain hook that releases the lease.
 * Call once before tp_master_run, and before the stream layer's install (tp_bcast_install),
 * whose init hook installs the leader's observer. */
void tp_game_install(void);

/**
 * Registers archival in every worker: while its process leads, settled and cancelled rounds
 * older than game.retain_s that Postgres holds whole leave Redis in bounded steps
 * (src/game/leader_archive.c). Call once after tp_game_install, tp_store_install and
 * tp_pgr_install (their init hooks must run first).
 */
void tp_leader_archive_install(void);

/**
 * Registers the idempotency filter's upkeep in every worker: while its process leads, the
 * filter's three-day shards (when missing; an older version's per-day filter folded into them)
 * are created in every bucket in bounded steps, and each day the next day's words are zeroed
 * (src/game/leader_idemfilter.c), so neither bets (which only read it) nor archival (which
 * writes it, and waits for a filter not yet whole) allocate one. Call once after
 * tp_game_install and tp_store_install.
 */
void tp_leader_idemfilter_install(void);

#endif
