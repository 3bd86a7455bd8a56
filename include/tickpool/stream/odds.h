/*
 * Odds projector: runs in every worker but works only while this process holds the game lease
 * (tp_leader_is_leader). Every 100 ms it reads the open round's pools from every bucket and,
 * when they changed, hands them to the broadcaster (tp_bcast_odds), which sends them inside the
 * next beat or as an `odds` message.
 */
#ifndef TP_ODDS_H
#define TP_ODDS_H

#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/* Projection period. */
#define TP_ODDS_PERIOD_MS 100

/** Takes the projector's worker slot and registers an init hook running tp_odds_start in every
 * worker, and an exit hook freeing the projector (unless a cycle is in flight). Call once before
 * tp_master_run (tp_session_install does). */
void tp_odds_install(void);
/** Starts the projector timer of worker `w`. Idempotent per worker. */
void tp_odds_start(struct tp_worker *w);

#endif
