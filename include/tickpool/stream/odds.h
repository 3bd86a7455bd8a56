/*
 * Odds projector: runs in every worker but works only while this process holds the game lease
 * (tp_leader_is_leader). Every 100 ms it reads the open round's pools from every bucket and,
 * when they changed, PUBLISHes one pre-encoded `odds` message
 * {t, round_id, pools, total, multipliers} on tp:bcast.
 */
#ifndef TP_ODDS_H
#define TP_ODDS_H

#include <stddef.h>
#include <stdint.h>

struct tp_buf;
struct tp_worker;

/* Projection period. */
#define TP_ODDS_PERIOD_MS 100

/** Takes the projector's worker slot and registers an init hook running tp_odds_start in every
 * worker. Call once before tp_master_run (tp_session_install does). */
void tp_odds_install(void);
/** Starts the projector timer of worker `w`. Idempotent per worker. */
void tp_odds_start(struct tp_worker *w);

/** Appends the MessagePack `odds` message for `pools` (n bands) of round `round_id` to `out`:
 * multipliers from tp_settle_multipliers, nil where a pool is empty. Pure. */
void tp_odds_encode(struct tp_buf *out, int64_t round_id, const int64_t *pools, int n,
                    int rake_bps);

#endif
