/*
 * `tickpool verify ROUND`. Redis is read through store/sync: commands are fanned out on its
 * store and its private loop runs until every reply is in (no second Redis client). Checks, each
 * printed: the round is final, the revealed seed matches seed_hash, the close price recomputed from
 * lock_price and the seed(s) (docs/fairness.md §5), the winning band, each winning bet's payout
 * (or each refund) against tp_settle_payout, and the receipt against tp_settle_compute.
 * A round no longer in Redis (archived) is read from Postgres, with the same checks
 * (src/cli/verify_pg.c).
 */
#include "tickpool/cli/verify.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/price_sim.h"
#include "tickpool/game/round.h"
#include "tickpool/game/settle.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/store/sync.h"
#include "verify_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void done1(struct vctx *v)
{
    v->pending--;
}

static void on_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct vctx *v = ud;
    if (err != 0 || tp_game_round_parse(r, &v->r) != 0)
        v->err = err ? err : TP_ENOTFOUND;
    else
        v->have_r = true;
    done1(v);
}

/* One bucket's bets of one band (HGETALL of the hash an older version wrote, then LRANGE of the
 * list) joined with its paid hash (HGETALL paid). */
struct bets_req {
    struct vctx *v;
    struct tp_store *store;
    int b;
    long long id;
    int band;
    struct tp_buf lines; /* both forms copied as "bet_id user:stake\n" lines */
};

static void on_paid(int err, const struct tp_store_reply *r, void *ud)
{
    struct bets_req *q = ud;
    struct vctx *v = q->v;
    if (err != 0) {
        v->err = err;
    } else {
        tp_buf_append(&q->lines, "", 1); /* strtok_r's text ends in a NUL */
        char *save = NULL;
        for (char *line = strtok_r(q->lines.data + q->lines.off, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            char bid[32];
            long long user, stake;
            if (sscanf(line, "%31s %lld:%lld", bid, &user, &stake) != 3)
                continue;
            int64_t amount = -1;
            for (size_t i = 0; i + 1 < tp_reply_len(r); i += 2)
                if (strcmp(tp_reply_str(tp_reply_at(r, i), NULL), bid) == 0)
                    amount = strtoll(tp_reply_str(tp_reply_at(r, i + 1), NULL), NULL, 10);
            tp_verify_add_bet(v, stake, amount);
        }
    }
    tp_buf_deinit(&q->lines);
    free(q);
    done1(v);
}

static void bets_failed(struct bets_req *q, int err)
{
    struct vctx *v = q->v;
    v->err = err ? err : TP_EUNAVAIL;
    tp_buf_deinit(&q->lines);
    free(q);
    done1(v);
}

/* Appends one line "bet_id user:stake" to q->lines. */
static void add_line(struct bets_req *q, const char *bet_id, const char *user_stake)
{
    tp_buf_printf(&q->lines, "%s %s\n", bet_id, user_stake);
}

/* The band's list: entries "<bet_id>:<user_id>:<stake>" (scripts/lua/README.md), the bet id
 * before the first ':'; an entry without one is passed on whole, and on_paid skips it. */
static void on_betl(int err, const struct tp_store_reply *r, void *ud)
{
    struct bets_req *q = ud;
    for (size_t i = 0; err == 0 && i < tp_reply_len(r); i++) {
        const char *e = tp_reply_str(tp_reply_at(r, i), NULL);
        const char *colon = strchr(e, ':');
        char bid[32];
        if (colon == NULL || colon - e >= (ptrdiff_t)sizeof(bid)) {
            add_line(q, e, "");
            continue;
        }
        memcpy(bid, e, (size_t)(colon - e));
        bid[colon - e] = '\0';
        add_line(q, bid, colon + 1);
    }
    struct tp_key k;
    if (err != 0 ||
        tp_store_command(q->store, on_paid, q, "HGETALL %s", tp_keys_paid(&k, q->b, q->id)) != 0)
        bets_failed(q, err);
}

/* The band's hash (an older version's): field bet_id, value "<user_id>:<stake>". */
static void on_bets(int err, const struct tp_store_reply *r, void *ud)
{
    struct bets_req *q = ud;
    for (size_t i = 0; err == 0 && i + 1 < tp_reply_len(r); i += 2)
        add_line(q, tp_reply_str(tp_reply_at(r, i), NULL),
                 tp_reply_str(tp_reply_at(r, i + 1), NULL));
    struct tp_key k;
    if (err != 0 || tp_store_command(q->store, on_betl, q, "LRANGE %s 0 -1",
                                     tp_keys_betl(&k, q->b, q->id, q->band)) != 0)
        bets_failed(q, err);
}

static void on_next_seed(int err, const struct tp_store_reply *r, void *ud)
{
    struct vctx *v = ud;
    struct tp_game_round nr;
    if (err == 0 && tp_game_round_parse(r, &nr) == 0 && nr.seed[0] && nr.id - v->r.id >= 1 &&
        nr.id - v->r.id <= 8) {
        snprintf(v->next_seed[nr.id - v->r.id - 1], 65, "%s", nr.seed);
        v->next_vol[nr.id - v->r.id - 1] = nr.vol_ppb;
    }
    done1(v);
}

void tp_verify_add_bet(struct vctx *v, int64_t stake, int64_t paid)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->stake = tp_xrealloc(v->stake, v->cap * sizeof(int64_t));
        v->paid = tp_xrealloc(v->paid, v->cap * sizeof(int64_t));
    }
    v->stake[v->n] = stake;
    v->paid[v->n] = paid;
    v->n++;
}

static int check(bool ok, const char *what, int *fails)
{
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok)
        (*fails)++;
    return ok;
}

int tp_verify_main(const struct tp_config *cfg, int argc, char **argv)
{
    char *end;
    long long id = argc == 1 ? strtoll(argv[0], &end, 10) : 0;
    if (argc != 1 || *end != '\0' || id < 1) {
        fprintf(stderr, "usage: tickpool verify ROUND_ID\n");
        return 2;
    }
    struct vctx v = {0};
    struct tp_store_sync *redis;
    int rc = tp_store_sync_open(&cfg->redis, TP_STORE_SCRIPTS_BUILTIN, 5000, &redis);
    if (rc == TP_EUNAVAIL)
        fprintf(stderr, "tickpool verify: cannot reach Redis\n");
    if (rc != 0)
        return 2;
    struct tp_store *store = tp_store_sync_store(redis);
    struct tp_key rk;
    v.pending = 1;
    if (tp_store_command(store, on_round, &v, "HGETALL %s", tp_keys_round(&rk, id)) != 0)
        v.pending = 0;
    tp_store_sync_wait(redis, &v.pending);
    if (!v.have_r && v.err == TP_ENOTFOUND && cfg->postgres.url[0] != '\0') {
        rc = tp_verify_pg_open(cfg, id, &v);
        if (rc == TP_EUNAVAIL) {
            fprintf(stderr,
                    "tickpool verify: round %lld is not in Redis and Postgres is "
                    "unreachable\n",
                    id);
            tp_store_sync_close(redis);
            return 2;
        }
    }
    /* Being archived: some of its bucket keys may be gone already, Postgres has them all. */
    if (v.have_r && v.r.archiving && cfg->postgres.url[0] != '\0' &&
        tp_verify_pg_connect(cfg, &v) != 0) {
        tp_store_sync_close(redis);
        return 2;
    }
    if (!v.have_r) {
        fprintf(stderr, "tickpool verify: round %lld not found\n", id);
        tp_verify_pg_close(&v);
        tp_store_sync_close(redis);
        return 2;
    }
    struct tp_game_round *r = &v.r;
    int fails = 0;
    printf("round %lld: state %s, lock_price %lld, close_price %lld, winning_band %d\n", id,
           tp_round_state_name(r->state), (long long)r->lock_price, (long long)r->close_price,
           r->winning_band);
    bool settled = r->state == TP_ROUND_SETTLED;
    bool cancelled = r->state == TP_ROUND_CANCELLED;
    check(settled || cancelled, "round is final (settled or cancelled)", &fails);
    uint8_t seed[TP_PRICE_SIM_SEED_LEN];
    if (settled && check(r->seed[0] != '\0', "seed revealed", &fails) &&
        check(tp_price_sim_seed_verify(r->seed, r->seed_hash, seed) == 0,
              "SHA-256(seed) == seed_hash", &fails)) {
        int64_t n_seg = r->betting_ms / r->tick_ms;
        int64_t k = (r->t.closes_at - r->t.locks_at) / r->tick_ms;
        struct tp_price_sim_seg segs[9];
        size_t ns = 1;
        memcpy(segs[0].seed, seed, sizeof(seed));
        segs[0].vol_ppb = r->vol_ppb;
        if (k > n_seg) {
            v.pending = 0;
            for (int j = 1; j <= 8 && j * n_seg < k; j++)
                if (tp_store_command(store, on_next_seed, &v, "HGETALL %s",
                                     tp_keys_round(&rk, id + j)) == 0)
                    v.pending++;
            tp_store_sync_wait(redis, &v.pending);
            for (int j = 1; j <= 8 && j * n_seg < k; j++)
                if (v.next_seed[j - 1][0] == '\0')
                    tp_verify_pg_next_seed(&v, id + j);
            for (int j = 0; j < 8 && (int64_t)ns * n_seg < k; j++) {
                if (tp_hex_decode(v.next_seed[j], segs[ns].seed, TP_PRICE_SIM_SEED_LEN) != 0)
                    break;
                segs[ns++].vol_ppb = v.next_vol[j];
            }
        }
        int64_t C = tp_price_sim_chain_at(segs, ns, (uint64_t)n_seg, r->lock_price, (uint64_t)k);
        printf("     recomputed %lld ticks from lock_price %lld: close %lld\n", (long long)k,
               (long long)r->lock_price, (long long)C);
        check(C == r->close_price, "close_price recomputed from the seed", &fails);
        check(tp_round_band(r->lock_price, r->close_price, r->edges, r->n_edges) == r->winning_band,
              "winning band from lock and close price", &fails);
    }
    /* Bets: the winning band (or every band for a refund) of every bucket. */
    int nb = r->n_edges + 1, buckets = cfg->game.buckets;
    bool refund = r->refund_all;
    v.pending = 0;
    if (v.pg != NULL) { /* archived: its bets and payouts are in Postgres */
        buckets = 0;
        v.err = tp_verify_pg_bets(&v);
    }
    for (int b = 0; b < buckets; b++)
        for (int band = 0; band < nb; band++) {
            if (!refund && band != r->winning_band)
                continue;
            struct bets_req *q = tp_xcalloc(1, sizeof(*q));
            *q = (struct bets_req){.v = &v, .store = store, .b = b, .id = id, .band = band};
            v.pending++;
            if (tp_store_command(store, on_bets, q, "HGETALL %s", tp_keys_bets(&rk, b, id, band)) !=
                0) {
                v.pending--;
                free(q);
                v.err = TP_EUNAVAIL;
            }
        }
    tp_store_sync_wait(redis, &v.pending);
    if (!check(v.err == 0, "bets and payouts read", &fails))
        goto out;
    struct tp_settle_plan plan;
    int64_t total = r->total, w = 0, sum = 0;
    for (size_t i = 0; i < v.n; i++)
        w += v.stake[i];
    if (refund) {
        check(w == total, "refund: the bets sum to the total", &fails);
        plan = (struct tp_settle_plan){.total = total, .pot = total, .refund_all = true};
    } else {
        check(w == r->winning_stake, "winning bets sum to winning_stake", &fails);
        check(tp_settle_plan(total, w, r->rake_bps, &plan) == 0 && plan.rake == r->rake &&
                  plan.pot == r->pot,
              "rake and pot from total, winning stake and rake_bps", &fails);
    }
    size_t bad = 0;
    for (size_t i = 0; i < v.n; i++) {
        int64_t want = tp_settle_payout(v.stake[i], &plan);
        if (v.paid[i] != want)
            bad++;
        sum += v.paid[i];
    }
    char what[128];
    snprintf(what, sizeof(what), "%zu %s, each paid exactly once as computed", v.n,
             refund ? "refunds" : "winning bets");
    check(bad == 0, what, &fails);
    struct tp_settle_receipt want = {.total = total,
                                     .winning_stake = refund ? r->winning_stake : w,
                                     .rake = refund ? 0 : plan.rake,
                                     .payouts = refund ? 0 : sum,
                                     .refunds = refund ? sum : 0};
    want.breakage = total - want.rake - want.payouts - want.refunds;
    check(r->has_receipt && memcmp(&want, &r->receipt, sizeof(want)) == 0 &&
              tp_settle_receipt_ok(&r->receipt),
          "receipt matches and conserves the total", &fails);
out:
    printf("%s: %d check(s) failed\n", fails ? "MISMATCH" : "VERIFIED", fails);
    free(v.stake);
    free(v.paid);
    tp_verify_pg_close(&v);
    tp_store_sync_close(redis);
    return fails ? 1 : 0;
}
