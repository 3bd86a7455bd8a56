/*
 * A bet on a round Redis no longer has, or whose key an archived round's bet may have used (see
 * bet_internal.h). Archival deletes a round's keys, and with them what bet_batch.lua would
 * answer a replay or a conflict from, so the answer comes from the bet's row in Postgres: the
 * same fields, in the same order, as the first answer (bets.balance_after keeps its balance).
 * Only bets bet_batch.lua refused with round_not_found, or answered "check" (the filter of
 * archived keys says maybe), come here, so ordinary new bets never wait for Postgres.
 */
#include "bet_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/pgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "bet"

/* The query parameters that name a key: user id, the key, and the oldest placed_at (ms) of the
 * TTL. */
struct key_params {
    char uid[24], since[24], key[TP_BET_KEY_MAX + 1];
};

static void key_params(struct key_params *kp, int64_t user_id, const char *key, size_t len)
{
    snprintf(kp->uid, sizeof(kp->uid), "%lld", (long long)user_id);
    snprintf(kp->since, sizeof(kp->since), "%lld",
             (long long)(tp_now_ms() - tp_keys_idem_ttl_s() * 1000LL));
    snprintf(kp->key, sizeof(kp->key), "%.*s", (int)len, key);
}

/* The answer a bet row (id, round_id, band, stake, balance_after) gives the request, in *out:
 * the bet's first answer (TP_BET_OK, replayed) when it is that bet's (round, band, stake: the
 * request's body), idempotency_conflict for another body, unavailable (logged) when the row cannot
 * be read or cannot rebuild the first answer. */
static void row_answer(const struct tp_pg_result *res, const struct tp_bet_req *req,
                       struct tp_bet_result *out)
{
    int64_t bet_id, round_id, band, stake, balance;
    *out = (struct tp_bet_result){.code = TP_BET_UNAVAILABLE};
    if (tp_pg_result_int64(res, 0, 0, &bet_id) != 0 ||
        tp_pg_result_int64(res, 0, 1, &round_id) != 0 ||
        tp_pg_result_int64(res, 0, 2, &band) != 0 || tp_pg_result_int64(res, 0, 3, &stake) != 0) {
        tp_log_error(MOD, "unreadable bet row in Postgres");
        return;
    }
    if (round_id != req->round_id || band != req->band || stake != req->stake) {
        out->code = TP_BET_IDEMPOTENCY_CONFLICT;
        return;
    }
    if (tp_pg_result_int64(res, 0, 4, &balance) != 0) {
        /* Written before Postgres kept the balance: the first answer cannot be rebuilt. */
        tp_log_warn(MOD, "replay of an archived bet without its balance\tbet_id=%lld",
                    (long long)bet_id);
        return;
    }
    *out = (struct tp_bet_result){.code = TP_BET_OK,
                                  .bet_id = bet_id,
                                  .round_id = round_id,
                                  .band = (int)band,
                                  .stake = stake,
                                  .balance = balance,
                                  .replayed = true};
}

/* A Postgres lookup in flight, for either entry point below: the request it answers and where
 * the answer goes (tp_bet_cb and tp_bet_check_cb have the same signature). */
struct lookup {
    struct tp_bet_req req;
    tp_bet_cb cb;
    void *ud;
};

static struct lookup *lookup_new(const struct tp_bet_req *req, tp_bet_cb cb, void *ud)
{
    struct lookup *k = tp_xmalloc(sizeof(*k));
    k->req = *req;
    k->cb = cb;
    k->ud = ud;
    return k;
}

/* --- A bet on a round Redis no longer has --- */

static void on_row(int err, const struct tp_pg_result *res, void *ud)
{
    struct lookup *k = ud;
    struct tp_bet_result out = {.code = TP_BET_UNAVAILABLE};
    if (err != 0) {
        tp_log_warn(MOD, "replay of an archived round's bet: Postgres unreachable\terr=%s",
                    tp_strerror(err));
    } else if (tp_pg_result_rows(res) == 0) {
        out.code = TP_BET_ROUND_NOT_FOUND;
    } else if (tp_pg_result_is_null(res, 0, 0)) {
        out.code = TP_BET_ROUND_NOT_OPEN; /* the round was, this key named none of its bets */
    } else {
        row_answer(res, &k->req, &out);
    }
    k->cb(&out, k->ud);
    free(k);
}

int tp_bet_replay_archived(struct tp_worker *w, int64_t user_id, const struct tp_bet_req *req,
                           const char *key, size_t len, tp_bet_cb cb, void *ud)
{
    struct tp_pgr *r = w != NULL ? tp_pgr_of(w) : NULL;
    if (r == NULL)
        return TP_EUNAVAIL;
    struct key_params kp;
    key_params(&kp, user_id, key, len);
    char rid[24];
    snprintf(rid, sizeof(rid), "%lld", (long long)req->round_id);
    const char *params[] = {kp.uid, rid, kp.key, kp.since};
    struct lookup *k = lookup_new(req, cb, ud);
    /* One row when the round exists; its bet columns NULL unless the key names a bet of it. */
    int rc = tp_pgr_query(r,
                          "SELECT b.id, b.round_id, b.band, b.stake, b.balance_after FROM rounds r "
                          "LEFT JOIN bets b ON b.round_id = r.id AND b.user_id = $1::bigint "
                          "AND b.idempotency_key = $3 AND b.placed_at >= $4::bigint "
                          "WHERE r.id = $2::bigint",
                          4, params, on_row, k);
    if (rc != 0)
        free(k);
    return rc;
}

/* --- A key the filter of archived keys may hold --- */

static void count_check(enum tp_metrics_idem_check outcome)
{
    tp_metrics_family_inc(TP_METRIC_FAMILY_BETS_IDEM_CHECKS, (int)outcome, 0);
}

static void on_check(int err, const struct tp_pg_result *res, void *ud)
{
    struct lookup *k = ud;
    struct tp_bet_result out = {.code = TP_BET_UNAVAILABLE};
    if (err != 0) {
        tp_log_warn(MOD, "idempotency check of an archived key: Postgres unreachable\terr=%s",
                    tp_strerror(err));
    } else if (tp_pg_result_rows(res) == 0) {
        count_check(TP_METRICS_IDEM_CHECK_FALSE_POSITIVE);
        k->cb(NULL, k->ud);
        free(k);
        return;
    } else {
        row_answer(res, &k->req, &out);
    }
    count_check(out.code == TP_BET_OK                     ? TP_METRICS_IDEM_CHECK_REPLAY
                : out.code == TP_BET_IDEMPOTENCY_CONFLICT ? TP_METRICS_IDEM_CHECK_CONFLICT
                                                          : TP_METRICS_IDEM_CHECK_UNAVAILABLE);
    k->cb(&out, k->ud);
    free(k);
}

int tp_bet_check_archived(struct tp_worker *w, int64_t user_id, const struct tp_bet_req *req,
                          const char *key, size_t len, tp_bet_check_cb cb, void *ud)
{
    struct tp_pgr *r = w != NULL ? tp_pgr_of(w) : NULL;
    if (r == NULL) {
        count_check(TP_METRICS_IDEM_CHECK_UNAVAILABLE);
        return TP_EUNAVAIL;
    }
    struct key_params kp;
    key_params(&kp, user_id, key, len);
    const char *params[] = {kp.uid, kp.key, kp.since};
    struct lookup *k = lookup_new(req, cb, ud);
    /* The key's newest bet of the TTL (bets_user_key_round: the player's bets by key). A key
     * names one body within the TTL, so an older bet of it on another round cannot be the
     * answer. */
    int rc = tp_pgr_query(r,
                          "SELECT id, round_id, band, stake, balance_after FROM bets "
                          "WHERE user_id = $1::bigint AND idempotency_key = $2 "
                          "AND placed_at >= $3::bigint ORDER BY placed_at DESC LIMIT 1",
                          3, params, on_check, k);
    if (rc != 0) {
        free(k);
        count_check(TP_METRICS_IDEM_CHECK_UNAVAILABLE);
    }
    return rc;
}
