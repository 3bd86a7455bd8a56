/*
 * A final round from Postgres (see tickpool/game/game_round.h): the row the writer keeps of a
 * settled or cancelled round, read back into the struct a Redis read gives, so the Round object
 * of an archived round is written by the same encoder with the same bytes.
 */
#include "tickpool/game/game_round.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_MAX 200

/* Column positions of TP_GAME_ROUND_PG_COLUMNS. */
enum {
    C_ID,
    C_STATE,
    C_OPENS,
    C_LOCKS,
    C_CLOSES,
    C_SEED_HASH,
    C_SEED,
    C_VOL,
    C_TICK,
    C_BETTING,
    C_RAKE_BPS,
    C_LOCK,
    C_CLOSE,
    C_WBAND,
    C_EDGES,
    C_POOLS,
    C_TOTAL,
    C_WSTAKE,
    C_RAKE,
    C_BREAKAGE,
    C_PAYOUTS,
    C_REFUNDS,
    C_REFUND_ALL,
    C_MIN_STAKE,
    C_MAX_STAKE,
    C_N
};

/* A comma list of integers into out[0..cap); returns the count or -1. */
static int parse_list(const char *s, int64_t *out, int cap)
{
    int n = 0;
    if (s == NULL || *s == '\0')
        return 0;
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (n == cap || !tp_parse_i64(t, &out[n]))
            return -1;
        n++;
    }
    return n;
}

static bool get_i64(const struct tp_pg_result *res, int row, int col, int64_t *out)
{
    return tp_pg_result_int64(res, row, col, out) == 0;
}

int tp_game_round_from_pg(const struct tp_pg_result *res, int row, struct tp_game_round *out)
{
    memset(out, 0, sizeof(*out));
    out->winning_band = -1;
    if (tp_pg_result_cols(res) != C_N)
        return TP_EINVAL;
    const char *st = tp_pg_result_get(res, row, C_STATE);
    if (st == NULL || tp_round_state_parse(st, strlen(st), &out->state) != 0)
        return TP_EINVAL;
    if (!tp_round_is_final(out->state))
        return TP_ENOTFOUND;
    const char *hash = tp_pg_result_get(res, row, C_SEED_HASH);
    const char *seed = tp_pg_result_get(res, row, C_SEED);
    int64_t rake_bps, wband, n;
    if (!get_i64(res, row, C_ID, &out->id) || !get_i64(res, row, C_OPENS, &out->t.opens_at) ||
        !get_i64(res, row, C_LOCKS, &out->t.locks_at) ||
        !get_i64(res, row, C_CLOSES, &out->t.closes_at) || hash == NULL ||
        strlen(hash) >= sizeof(out->seed_hash) || seed == NULL ||
        strlen(seed) >= sizeof(out->seed) || !get_i64(res, row, C_RAKE_BPS, &rake_bps) ||
        !get_i64(res, row, C_TOTAL, &out->total))
        return TP_EINVAL;
    /* Written before Postgres kept the whole round: not servable from here. */
    if (!get_i64(res, row, C_VOL, &out->vol_ppb) || !get_i64(res, row, C_TICK, &out->tick_ms) ||
        !get_i64(res, row, C_BETTING, &out->betting_ms) ||
        tp_pg_result_is_null(res, row, C_POOLS) || tp_pg_result_is_null(res, row, C_REFUND_ALL))
        return TP_ENOTFOUND;
    snprintf(out->seed_hash, sizeof(out->seed_hash), "%s", hash);
    snprintf(out->seed, sizeof(out->seed), "%s", seed);
    out->rake_bps = (int)rake_bps;
    out->has_lock = get_i64(res, row, C_LOCK, &out->lock_price);
    out->has_close = get_i64(res, row, C_CLOSE, &out->close_price);
    if (get_i64(res, row, C_WBAND, &wband))
        out->winning_band = (int)wband;
    int64_t edges[TP_ROUND_MAX_EDGES];
    n = parse_list(tp_pg_result_get(res, row, C_EDGES), edges, TP_ROUND_MAX_EDGES);
    if (n < 0)
        return TP_EINVAL;
    for (int i = 0; i < n; i++)
        out->edges[i] = (int)edges[i];
    out->n_edges = (int)n;
    if (tp_round_check_edges(out->edges, out->n_edges) != 0 ||
        parse_list(tp_pg_result_get(res, row, C_POOLS), out->pools, TP_ROUND_MAX_BANDS) !=
            out->n_edges + 1)
        return TP_EINVAL;
    out->has_pools = true;
    out->refund_all = strcmp(tp_pg_result_get(res, row, C_REFUND_ALL), "t") == 0;
    out->has_plan = true;
    if (!get_i64(res, row, C_WSTAKE, &out->winning_stake) ||
        !get_i64(res, row, C_RAKE, &out->rake) ||
        !get_i64(res, row, C_BREAKAGE, &out->receipt.breakage) ||
        !get_i64(res, row, C_PAYOUTS, &out->receipt.payouts) ||
        !get_i64(res, row, C_REFUNDS, &out->receipt.refunds))
        return TP_EINVAL;
    if (!get_i64(res, row, C_MIN_STAKE, &out->min_stake) ||
        !get_i64(res, row, C_MAX_STAKE, &out->max_stake))
        return TP_EINVAL;
    out->pot = out->total - out->rake;
    out->has_receipt = true;
    out->receipt.total = out->total;
    out->receipt.winning_stake = out->winning_stake;
    out->receipt.rake = out->rake;
    return 0;
}

bool tp_game_round_same(const struct tp_game_round *a, const struct tp_game_round *b)
{
    if (a->id != b->id || a->state != b->state || a->t.opens_at != b->t.opens_at ||
        a->t.locks_at != b->t.locks_at || a->t.closes_at != b->t.closes_at ||
        strcmp(a->seed_hash, b->seed_hash) != 0 || strcmp(a->seed, b->seed) != 0 ||
        a->vol_ppb != b->vol_ppb || a->tick_ms != b->tick_ms || a->betting_ms != b->betting_ms ||
        a->rake_bps != b->rake_bps || a->min_stake != b->min_stake ||
        a->max_stake != b->max_stake || a->has_lock != b->has_lock ||
        (a->has_lock && a->lock_price != b->lock_price) || a->has_close != b->has_close ||
        (a->has_close && a->close_price != b->close_price) ||
        (a->has_close && a->winning_band != b->winning_band) || a->n_edges != b->n_edges ||
        memcmp(a->edges, b->edges, sizeof(a->edges[0]) * (size_t)a->n_edges) != 0 ||
        a->has_pools != b->has_pools || a->has_receipt != b->has_receipt ||
        a->refund_all != b->refund_all || a->total != b->total ||
        a->winning_stake != b->winning_stake || a->rake != b->rake)
        return false;
    if (a->has_pools &&
        memcmp(a->pools, b->pools, sizeof(a->pools[0]) * (size_t)(a->n_edges + 1)) != 0)
        return false;
    return !a->has_receipt || memcmp(&a->receipt, &b->receipt, sizeof(a->receipt)) == 0;
}

/* --- Async load --- */

struct pg_load {
    tp_game_rounds_cb cb;
    void *ud;
};

static void on_rows(int err, const struct tp_pg_result *res, void *ud)
{
    struct pg_load *l = ud;
    int rows = err == 0 ? tp_pg_result_rows(res) : 0, n = 0;
    struct tp_game_round *rounds = tp_xcalloc((size_t)TP_MAX(rows, 1), sizeof(*rounds));
    for (int i = 0; i < rows; i++)
        if (tp_game_round_from_pg(res, i, &rounds[n]) == 0)
            n++;
    l->cb(err, err == 0 ? rounds : NULL, n, l->ud);
    free(rounds);
    free(l);
}

int tp_game_round_load_pg(struct tp_pgr *r, const int64_t *ids, int n, tp_game_rounds_cb cb,
                          void *ud)
{
    if (r == NULL)
        return TP_EUNAVAIL;
    if (n < 0 || n > LOAD_MAX)
        return TP_EINVAL;
    struct tp_buf arr;
    tp_buf_init(&arr);
    tp_buf_puts(&arr, "{");
    for (int i = 0; i < n; i++)
        tp_buf_printf(&arr, "%s%lld", i ? "," : "", (long long)ids[i]);
    tp_buf_puts(&arr, "}");
    tp_buf_append(&arr, "", 1);
    struct pg_load *l = tp_xmalloc(sizeof(*l));
    l->cb = cb;
    l->ud = ud;
    const char *params[1] = {tp_buf_ptr(&arr)};
    int rc = tp_pgr_query(r,
                          "SELECT " TP_GAME_ROUND_PG_COLUMNS
                          " FROM rounds WHERE id = ANY($1::bigint[]) ORDER BY id",
                          1, params, on_rows, l);
    tp_buf_deinit(&arr);
    if (rc != 0)
        free(l);
    return rc;
}
