/*
 * Internals of `tickpool verify` shared by its files (private to module cli/verify):
 *
 *   verify.c     the checks, on a round read from Redis
 *   verify_pg.c  the same round, its bets and payouts read from Postgres once archived
 */
#ifndef TP_VERIFY_INTERNAL_H
#define TP_VERIFY_INTERNAL_H

#include "tickpool/game/game_round.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_config;
struct tp_pg;

struct vctx {
    int pending, err;
    struct tp_game_round r;
    bool have_r;
    /* Winning (or, for a refund, every) bets and what was paid (-1: nothing): parallel. */
    int64_t *stake, *paid;
    size_t n, cap;
    int64_t next_seed_ok;
    char next_seed[8][65];
    int64_t next_vol[8];
    struct tp_pg *pg; /* set when the round came from Postgres */
};

/** Appends one bet and what was credited for it. */
void tp_verify_add_bet(struct vctx *v, int64_t stake, int64_t paid);
/** Connects to Postgres (v->pg). Returns 0 or TP_EUNAVAIL (logged). */
int tp_verify_pg_connect(const struct tp_config *cfg, struct vctx *v);
/** Connects to Postgres and reads round `id` into v->r (have_r when found and final). Returns
 * 0 (found or not), TP_EUNAVAIL when Postgres is unreachable. */
int tp_verify_pg_open(const struct tp_config *cfg, int64_t id, struct vctx *v);
/** The seed and vol_ppb of round `id` (a later round, archived too) into v->next_*. */
void tp_verify_pg_next_seed(struct vctx *v, int64_t id);
/** The winning band's bets (every bet for a refund) with their credits, from Postgres. Returns
 * 0 or a TP_E* code. */
int tp_verify_pg_bets(struct vctx *v);
/** Closes the Postgres connection (none: no-op). */
void tp_verify_pg_close(struct vctx *v);

#endif
