/*
 * `tickpool verify` on an archived round: the round, the seeds of the rounds after it and its
 * bets with their credits, read from Postgres (blocking: this is the CLI). The round comes
 * through tp_game_round_from_pg, so the checks in verify.c see the same struct as from Redis.
 */
#include "verify_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/store/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load_round(struct tp_pg *pg, int64_t id, struct tp_game_round *out)
{
    char sid[24], err[256];
    snprintf(sid, sizeof(sid), "%lld", (long long)id);
    const char *params[1] = {sid};
    struct tp_pg_result *res = NULL;
    int rc = tp_pg_exec_params(
        pg, "SELECT " TP_GAME_ROUND_PG_COLUMNS " FROM rounds WHERE id = $1::bigint", 1, params,
        &res, err, sizeof(err));
    if (rc == 0)
        rc = tp_pg_result_rows(res) == 1 ? tp_game_round_from_pg(res, 0, out) : TP_ENOTFOUND;
    else
        fprintf(stderr, "tickpool verify: %s\n", err);
    tp_pg_result_free(res);
    return rc;
}

/* Statement bound of the CLI's reads: postgres.timeout bounds the server's short statements, and
 * a round's bets joined with their credits may take longer on a large, busy database. */
#define VERIFY_PG_TIMEOUT_MS 60000

int tp_verify_pg_connect(const struct tp_config *cfg, struct vctx *v)
{
    char err[256];
    v->pg = tp_pg_connect(cfg->postgres.url, TP_MAX(cfg->postgres.timeout_ms, VERIFY_PG_TIMEOUT_MS),
                          err, sizeof(err));
    if (v->pg == NULL) {
        fprintf(stderr, "tickpool verify: %s\n", err);
        return TP_EUNAVAIL;
    }
    return 0;
}

int tp_verify_pg_open(const struct tp_config *cfg, int64_t id, struct vctx *v)
{
    if (tp_verify_pg_connect(cfg, v) != 0)
        return TP_EUNAVAIL;
    int rc = load_round(v->pg, id, &v->r);
    v->have_r = rc == 0;
    if (rc == 0)
        printf("round %lld read from Postgres (archived)\n", (long long)id);
    return rc == TP_EUNAVAIL ? rc : 0;
}

void tp_verify_pg_next_seed(struct vctx *v, int64_t id)
{
    struct tp_game_round nr;
    if (v->pg == NULL || id - v->r.id < 1 || id - v->r.id > 8 || load_round(v->pg, id, &nr) != 0)
        return;
    snprintf(v->next_seed[id - v->r.id - 1], 65, "%s", nr.seed);
    v->next_vol[id - v->r.id - 1] = nr.vol_ppb;
}

int tp_verify_pg_bets(struct vctx *v)
{
    char sid[24], band[16], err[256];
    snprintf(sid, sizeof(sid), "%lld", (long long)v->r.id);
    snprintf(band, sizeof(band), "%d", v->r.refund_all ? -1 : v->r.winning_band);
    const char *params[2] = {sid, band};
    struct tp_pg_result *res = NULL;
    /* One credit per bet at most: a payout for a winner, a refund when everyone is refunded. */
    int rc = tp_pg_exec_params(v->pg,
                               "SELECT b.stake, coalesce(sum(p.amount), -1) FROM bets b "
                               "LEFT JOIN payouts p ON p.bet_id = b.id WHERE b.round_id = "
                               "$1::bigint AND ($2::int < 0 OR b.band = $2::int) "
                               "GROUP BY b.id, b.stake",
                               2, params, &res, err, sizeof(err));
    for (int i = 0; rc == 0 && i < tp_pg_result_rows(res); i++) {
        int64_t stake, paid;
        if (tp_pg_result_int64(res, i, 0, &stake) != 0 || tp_pg_result_int64(res, i, 1, &paid) != 0)
            rc = TP_EIO;
        else
            tp_verify_add_bet(v, stake, paid);
    }
    if (rc != 0)
        fprintf(stderr, "tickpool verify: %s\n", err);
    tp_pg_result_free(res);
    return rc;
}

void tp_verify_pg_close(struct vctx *v)
{
    tp_pg_close(v->pg);
    v->pg = NULL;
}
