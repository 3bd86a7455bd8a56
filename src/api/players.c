/*
 * GET /api/v1/me, GET /api/v1/me/bets and GET /api/v1/leaderboard (see tickpool/api/players.h).
 *
 * /me is the accounts core's profile (tickpool/money/accounts.h).
 *
 * Both are two rounds of pipelined commands joined by a pending counter: first the list (or
 * each bucket's top N), then everything it names (round outcomes and payouts, or usernames).
 * Every command goes out before any reply is handled, so a request costs two round trips
 * whatever N is.
 *
 * A bet whose round has left Redis (archived, or being archived: its paid hash may be gone)
 * takes its round's outcome and its payout from Postgres, one query each through the worker's
 * reader, so its line reads as it did before archival; Postgres down → 503 with Retry-After.
 */
#include "tickpool/api/players.h"
#include "tickpool/api/accounts.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/round.h"
#include "tickpool/money/accounts.h"
#include "tickpool/net/router.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgr.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"
#include "tickpool/net/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "players"

struct pbet {
    int64_t bet_id, round_id, stake;
    int band;
    int round_idx; /* index into op->rounds */
    bool has_paid;
    int64_t paid;
};

struct pround {
    int64_t id;
    enum tp_round_state state; /* TP_ROUND_NONE when missing */
    int winning_band;          /* -1 unknown */
    int64_t winning_stake;
    bool refund_all;
    bool from_pg; /* archived: outcome and payouts from Postgres */
};

struct pplayer {
    int64_t user_id, net;
    char username[40];
};

struct slot {
    struct pop *op;
    int idx;
};

struct pop {
    struct tp_http_ctx *ctx;
    struct tp_worker *w;
    int64_t uid, before;
    int limit, nb;
    int pending;
    bool failed;
    void (*next)(struct pop *o); /* runs once all pending replies are in */
    struct pbet bets[TP_PLAYERS_BETS_MAX];
    int nbets;
    struct pround rounds[TP_PLAYERS_BETS_MAX];
    int nrounds;
    struct pplayer *players;
    int nplayers, cap;
    struct slot *slots;
    int nslots;
    int pg_step;    /* /me/bets: 0 nothing asked of Postgres, 1 rounds asked, 2 payouts asked */
    int64_t cursor; /* /me/bets: older bets than this come from Postgres, 0 when none do */
};

static void pop_free(struct pop *o)
{
    free(o->players);
    free(o->slots);
    free(o);
}

static struct slot *new_slots(struct pop *o, int n)
{
    free(o->slots);
    o->slots = tp_xcalloc((size_t)TP_MAX(n, 1), sizeof(*o->slots));
    o->nslots = n;
    for (int i = 0; i < n; i++)
        o->slots[i] = (struct slot){o, i};
    return o->slots;
}

static void finish_or_fail(struct pop *o)
{
    if (o->pending > 0)
        return;
    if (o->failed) {
        tp_http_reply_error(o->ctx, 503, "unavailable", "storage unavailable, retry");
        pop_free(o);
        return;
    }
    o->next(o);
}

static int parse_limit(struct tp_http_ctx *ctx, const char *name, int64_t def, int64_t max,
                       int64_t *out)
{
    const char *v = tp_http_ctx_query(ctx, name);
    if (v == NULL || v[0] == '\0') {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*end != '\0' || errno == ERANGE || n < 1 || v[0] == '-' || v[0] == '+' || n > max)
        return TP_EINVAL;
    *out = n;
    return 0;
}

static bool reply_ok(int err, const struct tp_store_reply *r, enum tp_reply_type t)
{
    return err == 0 && tp_reply_type(r) == t;
}

static void write_out(struct pop *o, struct tp_buf *b)
{
    tp_http_reply_body(o->ctx, 200, b);
    pop_free(o);
}

/* --- GET /api/v1/me --- */

static void on_profile(const struct tp_accounts_result *res, void *ud)
{
    struct tp_http_ctx *ctx = ud;
    if (res->code == TP_ACCOUNTS_UNKNOWN_USER) {
        tp_http_reply_error(ctx, 401, "unauthorized", "unknown user");
        return;
    }
    if (res->code != TP_ACCOUNTS_OK) {
        tp_http_reply_error(ctx, 503, "unavailable", "storage unavailable, retry");
        return;
    }
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(ctx, &b, &w);
    tp_wr_map(&w, 3);
    tp_wr_key(&w, "user_id");
    tp_wr_int(&w, res->user_id);
    tp_wr_key(&w, "username");
    tp_wr_str(&w, res->username);
    tp_wr_key(&w, "balance");
    tp_wr_int(&w, res->balance);
    tp_http_reply_body(ctx, 200, &b);
}

static void get_me(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t uid;
    if (tp_api_accounts_auth(ctx, &uid) != 0)
        return;
    if (tp_accounts_profile(tp_http_ctx_worker(ctx), uid, on_profile, ctx) != 0)
        tp_http_reply_error(ctx, 503, "unavailable", "storage unavailable, retry");
}

/* --- GET /api/v1/me/bets --- */

static const char *status_of(const struct pbet *b, const struct pround *r)
{
    if (r->state == TP_ROUND_CANCELLED)
        return "refunded";
    if (r->state != TP_ROUND_SETTLED)
        return "pending";
    if (r->refund_all || r->winning_stake == 0)
        return "refunded";
    return b->band == r->winning_band ? "won" : "lost";
}

static void bets_reply(struct pop *o);

static void pg_failed(struct pop *o)
{
    tp_http_ctx_add_header(o->ctx, "Retry-After", "1");
    tp_http_reply_error(o->ctx, 503, "unavailable", "history storage unavailable, retry");
    pop_free(o);
}

static void on_pg_paid(int err, const struct tp_pg_result *res, void *ud)
{
    struct pop *o = ud;
    if (err != 0) {
        pg_failed(o);
        return;
    }
    for (int i = 0; i < tp_pg_result_rows(res); i++) {
        int64_t bet, amount;
        const char *b = tp_pg_result_get(res, i, 0);
        if (b == NULL || !tp_parse_i64(b, &bet) || tp_pg_result_int64(res, i, 1, &amount) != 0)
            continue;
        for (int j = 0; j < o->nbets; j++)
            if (o->bets[j].bet_id == bet && o->rounds[o->bets[j].round_idx].from_pg) {
                o->bets[j].has_paid = true;
                o->bets[j].paid = amount;
            }
    }
    bets_reply(o);
}

static void on_pg_rounds(int err, const struct tp_game_round *rounds, int n, void *ud)
{
    struct pop *o = ud;
    if (err != 0) {
        pg_failed(o);
        return;
    }
    for (int j = 0; j < o->nrounds; j++) {
        struct pround *rd = &o->rounds[j];
        if (!rd->from_pg)
            continue;
        rd->state = TP_ROUND_NONE; /* a round neither store has stays pending */
        for (int i = 0; i < n; i++)
            if (rounds[i].id == rd->id)
                *rd = (struct pround){.id = rd->id,
                                      .state = rounds[i].state,
                                      .winning_band = rounds[i].winning_band,
                                      .winning_stake = rounds[i].winning_stake,
                                      .refund_all = rounds[i].refund_all,
                                      .from_pg = true};
    }
    struct tp_buf ids;
    tp_buf_init(&ids);
    tp_buf_puts(&ids, "{");
    int k = 0;
    for (int j = 0; j < o->nbets; j++)
        if (o->rounds[o->bets[j].round_idx].from_pg)
            tp_buf_printf(&ids, "%s%lld", k++ ? "," : "", (long long)o->bets[j].bet_id);
    tp_buf_puts(&ids, "}");
    tp_buf_append(&ids, "", 1);
    const char *params[1] = {tp_buf_ptr(&ids)};
    o->pg_step = 2;
    int rc = tp_pgr_query(tp_pgr_of(o->w),
                          "SELECT bet_id, amount FROM payouts WHERE bet_id = ANY($1::text[])", 1,
                          params, on_pg_paid, o);
    tp_buf_deinit(&ids);
    if (rc != 0)
        pg_failed(o);
}

/* Asks Postgres about the archived rounds among the bets' rounds. Returns true when its answer
 * will reply. */
static bool ask_pg(struct pop *o)
{
    int64_t ids[TP_PLAYERS_BETS_MAX];
    int n = 0;
    for (int j = 0; j < o->nrounds; j++)
        if (o->rounds[j].from_pg)
            ids[n++] = o->rounds[j].id;
    struct tp_pgr *r = tp_pgr_of(o->w);
    o->pg_step = 1;
    if (n == 0 || r == NULL) /* without Postgres nothing is ever archived */
        return false;
    if (tp_game_round_load_pg(r, ids, n, on_pg_rounds, o) != 0) {
        pg_failed(o);
        return true;
    }
    return true;
}

static void bets_reply(struct pop *o)
{
    if (o->pg_step == 0 && ask_pg(o))
        return;
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(o->ctx, &b, &w);
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "bets");
    tp_wr_array(&w, (size_t)o->nbets);
    for (int i = 0; i < o->nbets; i++) {
        const struct pbet *bt = &o->bets[i];
        const char *st = status_of(bt, &o->rounds[bt->round_idx]);
        tp_wr_map(&w, 6);
        tp_wr_key(&w, "bet_id");
        tp_wr_int(&w, bt->bet_id);
        tp_wr_key(&w, "round_id");
        tp_wr_int(&w, bt->round_id);
        tp_wr_key(&w, "band");
        tp_wr_int(&w, bt->band);
        tp_wr_key(&w, "stake");
        tp_wr_int(&w, bt->stake);
        tp_wr_key(&w, "status");
        tp_wr_str(&w, st);
        tp_wr_key(&w, "payout");
        if (strcmp(st, "pending") == 0)
            tp_wr_null(&w);
        else if (bt->has_paid)
            tp_wr_int(&w, bt->paid);
        else
            tp_wr_int(&w, strcmp(st, "refunded") == 0 ? bt->stake : 0);
    }
    write_out(o, &b);
}

static void on_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct slot *s = ud;
    struct pop *o = s->op;
    o->pending--;
    if (!reply_ok(err, r, TP_REPLY_ARRAY) || tp_reply_len(r) != 5) {
        o->failed = true;
    } else {
        struct pround *rd = &o->rounds[s->idx];
        const char *st = tp_reply_str(tp_reply_at(r, 0), NULL);
        const char *wb = tp_reply_str(tp_reply_at(r, 1), NULL);
        const char *ws = tp_reply_str(tp_reply_at(r, 2), NULL);
        const char *ra = tp_reply_str(tp_reply_at(r, 3), NULL);
        if (st == NULL || tp_round_state_parse(st, strlen(st), &rd->state) != 0)
            rd->state = TP_ROUND_NONE;
        rd->winning_band = wb && wb[0] ? (int)strtol(wb, NULL, 10) : -1;
        rd->winning_stake = ws && ws[0] ? strtoll(ws, NULL, 10) : -1;
        rd->refund_all = ra != NULL && strcmp(ra, "1") == 0;
        const char *ar = tp_reply_str(tp_reply_at(r, 4), NULL);
        rd->from_pg = rd->state == TP_ROUND_NONE || (ar != NULL && strcmp(ar, "1") == 0);
    }
    finish_or_fail(o);
}

static void on_paid(int err, const struct tp_store_reply *r, void *ud)
{
    struct slot *s = ud;
    struct pop *o = s->op;
    o->pending--;
    int ri = s->idx - o->nrounds;
    if (!reply_ok(err, r, TP_REPLY_ARRAY)) {
        o->failed = true;
    } else {
        /* Elements follow the bets of this round in list order. */
        size_t k = 0;
        for (int i = 0; i < o->nbets; i++) {
            if (o->bets[i].round_idx != ri)
                continue;
            const char *v = tp_reply_str(tp_reply_at(r, k++), NULL);
            if (v != NULL) {
                o->bets[i].has_paid = true;
                o->bets[i].paid = strtoll(v, NULL, 10);
            }
        }
    }
    finish_or_fail(o);
}

static void add_bet(struct pop *o, int64_t id, int64_t rid, int band, int64_t stake)
{
    struct pbet *b = &o->bets[o->nbets++];
    *b = (struct pbet){.bet_id = id, .round_id = rid, .band = band, .stake = stake};
    int j = 0;
    while (j < o->nrounds && o->rounds[j].id != rid)
        j++;
    if (j == o->nrounds)
        o->rounds[o->nrounds++] = (struct pround){.id = rid, .winning_band = -1};
    b->round_idx = j;
}

static void lookup_rounds(struct pop *o);

static void on_pg_older(int err, const struct tp_pg_result *res, void *ud)
{
    struct pop *o = ud;
    if (err != 0) {
        pg_failed(o);
        return;
    }
    for (int i = 0; i < tp_pg_result_rows(res) && o->nbets < o->limit; i++) {
        int64_t id, rid, band, stake;
        const char *b = tp_pg_result_get(res, i, 0);
        if (b == NULL || !tp_parse_i64(b, &id) || tp_pg_result_int64(res, i, 1, &rid) != 0 ||
            tp_pg_result_int64(res, i, 2, &band) != 0 || tp_pg_result_int64(res, i, 3, &stake) != 0)
            continue;
        add_bet(o, id, rid, (int)band, stake);
    }
    lookup_rounds(o);
}

/* The page goes on past the Redis list: the player's bets below the cursor, from Postgres (the
 * bet ids of one player grow with time, as the list's order; ordered by length, then bytes, as
 * migration 0005's index, that is their numeric order). Returns true when its answer will reply;
 * false without a reader (no Postgres: the list is all there is). */
static bool ask_older(struct pop *o)
{
    struct tp_pgr *r = tp_pgr_of(o->w);
    if (r == NULL)
        return false;
    char uid[24], cur[24], lim[24];
    snprintf(uid, sizeof(uid), "%lld", (long long)o->uid);
    snprintf(cur, sizeof(cur), "%lld", (long long)o->cursor);
    snprintf(lim, sizeof(lim), "%d", o->limit - o->nbets);
    const char *params[3] = {uid, cur, lim};
    if (tp_pgr_query(r,
                     "SELECT id, round_id, band, stake FROM bets WHERE user_id = $1 AND "
                     "(length(id), id COLLATE \"C\") < (length($2::text), $2::text COLLATE \"C\") "
                     "ORDER BY length(id) DESC, id COLLATE \"C\" DESC LIMIT $3",
                     3, params, on_pg_older, o) != 0)
        pg_failed(o);
    return true;
}

static void on_list(int err, const struct tp_store_reply *r, void *ud)
{
    struct pop *o = ud;
    if (!reply_ok(err, r, TP_REPLY_ARRAY)) {
        tp_http_reply_error(o->ctx, 503, "unavailable", "storage unavailable, retry");
        pop_free(o);
        return;
    }
    /* The list is the player's newest bets only: once it is full, older ones may have been
     * trimmed, so the page continues in Postgres below its oldest entry. */
    int64_t oldest = 0;
    for (size_t i = 0; i < tp_reply_len(r); i++) {
        const char *e = tp_reply_str(tp_reply_at(r, i), NULL);
        long long id, rid, band, stake;
        if (e == NULL || sscanf(e, "%lld:%lld:%lld:%lld", &id, &rid, &band, &stake) != 4)
            continue;
        oldest = id;
        if ((o->before > 0 && id >= o->before) || o->nbets == o->limit)
            continue;
        add_bet(o, id, rid, (int)band, stake);
    }
    if (tp_reply_len(r) >= TP_PLAYERS_BETS_HOT && oldest > 0)
        o->cursor = o->before > 0 && o->before < oldest ? o->before : oldest;
    if (o->cursor > 0 && o->nbets < o->limit && ask_older(o))
        return;
    lookup_rounds(o);
}

/* Asks Redis for the outcome of every round of the page and the payouts of its bets; rounds
 * that have left Redis then go to Postgres (bets_reply). */
static void lookup_rounds(struct pop *o)
{
    o->next = bets_reply;
    struct tp_store *st = tp_store_of(o->w);
    struct slot *s = new_slots(o, 2 * o->nrounds);
    int bucket = tp_bucket_of(o->uid, o->nb);
    for (int j = 0; j < o->nrounds; j++) {
        struct tp_key rk;
        if (tp_store_command(st, on_round, &s[j],
                             "HMGET %s state winning_band winning_stake refund_all archiving",
                             tp_keys_round(&rk, o->rounds[j].id)) == 0)
            o->pending++;
        else
            o->failed = true;
        /* HMGET of this round's bet ids in the player's bucket payout hash. */
        const char *argv[2 + TP_PLAYERS_BETS_MAX];
        struct tp_key key;
        char ids[TP_PLAYERS_BETS_MAX][24];
        int argc = 0;
        argv[argc++] = "HMGET";
        argv[argc++] = tp_keys_paid(&key, bucket, o->rounds[j].id);
        for (int i = 0; i < o->nbets; i++) {
            if (o->bets[i].round_idx != j)
                continue;
            snprintf(ids[argc - 2], sizeof(ids[0]), "%lld", (long long)o->bets[i].bet_id);
            argv[argc] = ids[argc - 2];
            argc++;
        }
        if (tp_store_commandargv(st, on_paid, &s[o->nrounds + j], argc, argv, NULL) == 0)
            o->pending++;
        else
            o->failed = true;
    }
    finish_or_fail(o);
}

static void get_my_bets(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t uid, limit, before = 0;
    if (tp_api_accounts_auth(ctx, &uid) != 0)
        return;
    if (parse_limit(ctx, "limit", TP_PLAYERS_BETS_DEFAULT, TP_PLAYERS_BETS_MAX, &limit) != 0 ||
        parse_limit(ctx, "before", 0, INT64_MAX, &before) != 0) {
        tp_http_reply_error(ctx, 400, "invalid_request", "limit must be 1-200, before a bet id");
        return;
    }
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    struct tp_store *st = w ? tp_store_of(w) : NULL;
    struct pop *o = tp_xcalloc(1, sizeof(*o));
    o->ctx = ctx;
    o->w = w;
    o->uid = uid;
    o->limit = (int)limit;
    o->before = before;
    o->nb = tp_worker_config(w)->game.buckets;
    struct tp_key k;
    if (st == NULL || tp_store_command(st, on_list, o, "LRANGE %s 0 %d",
                                       tp_keys_ubets(&k, tp_bucket_of(uid, o->nb), uid),
                                       TP_PLAYERS_BETS_HOT - 1) != 0) {
        tp_http_reply_error(ctx, 503, "unavailable", "storage unavailable, retry");
        pop_free(o);
    }
}

/* --- GET /api/v1/leaderboard --- */

static void board_reply(struct pop *o)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_http_body_init(o->ctx, &b, &w);
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "players");
    tp_wr_array(&w, (size_t)o->nplayers);
    for (int i = 0; i < o->nplayers; i++) {
        tp_wr_map(&w, 3);
        tp_wr_key(&w, "user_id");
        tp_wr_int(&w, o->players[i].user_id);
        tp_wr_key(&w, "username");
        tp_wr_str(&w, o->players[i].username);
        tp_wr_key(&w, "net");
        tp_wr_int(&w, o->players[i].net);
    }
    write_out(o, &b);
}

static void on_name(int err, const struct tp_store_reply *r, void *ud)
{
    struct slot *s = ud;
    struct pop *o = s->op;
    o->pending--;
    if (err != 0 || (tp_reply_type(r) != TP_REPLY_STRING && tp_reply_type(r) != TP_REPLY_NIL))
        o->failed = true;
    else
        snprintf(o->players[s->idx].username, sizeof(o->players[0].username), "%s",
                 tp_reply_str(r, NULL) ? tp_reply_str(r, NULL) : "");
    finish_or_fail(o);
}

static int by_net(const void *a, const void *b)
{
    const struct pplayer *x = a, *y = b;
    if (x->net != y->net)
        return x->net > y->net ? -1 : 1;
    return x->user_id < y->user_id ? -1 : x->user_id > y->user_id;
}

/* All buckets' top lists are in: keep the global top N, then fetch their usernames. */
static void board_names(struct pop *o)
{
    if (o->nplayers > 0) /* players may be NULL when no bucket has any */
        qsort(o->players, (size_t)o->nplayers, sizeof(*o->players), by_net);
    if (o->nplayers > o->limit)
        o->nplayers = o->limit;
    o->next = board_reply;
    struct slot *s = new_slots(o, o->nplayers);
    struct tp_store *st = tp_store_of(o->w);
    for (int i = 0; i < o->nplayers; i++) {
        struct tp_key k;
        if (tp_store_command(st, on_name, &s[i], "HGET %s username",
                             tp_keys_user(&k, o->players[i].user_id)) == 0)
            o->pending++;
        else
            o->failed = true;
    }
    finish_or_fail(o);
}

static void on_top(int err, const struct tp_store_reply *r, void *ud)
{
    struct slot *s = ud;
    struct pop *o = s->op;
    o->pending--;
    if (!reply_ok(err, r, TP_REPLY_ARRAY)) {
        o->failed = true;
    } else {
        for (size_t i = 0; i + 1 < tp_reply_len(r); i += 2) {
            const char *u = tp_reply_str(tp_reply_at(r, i), NULL);
            const char *sc = tp_reply_str(tp_reply_at(r, i + 1), NULL);
            if (u == NULL || sc == NULL)
                continue;
            if (o->nplayers == o->cap) {
                o->cap = o->cap ? 2 * o->cap : 64;
                o->players = tp_xrealloc(o->players, (size_t)o->cap * sizeof(*o->players));
            }
            struct pplayer *p = &o->players[o->nplayers++];
            memset(p, 0, sizeof(*p));
            p->user_id = strtoll(u, NULL, 10);
            p->net = (int64_t)strtod(sc, NULL);
        }
    }
    finish_or_fail(o);
}

static void get_leaderboard(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t limit;
    if (parse_limit(ctx, "limit", TP_PLAYERS_BOARD_DEFAULT, TP_PLAYERS_BOARD_MAX, &limit) != 0) {
        tp_http_reply_error(ctx, 400, "invalid_request", "limit must be 1-100");
        return;
    }
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    struct tp_store *st = w ? tp_store_of(w) : NULL;
    if (st == NULL || !tp_store_is_connected(st)) {
        tp_http_reply_error(ctx, 503, "unavailable", "storage unavailable, retry");
        return;
    }
    struct pop *o = tp_xcalloc(1, sizeof(*o));
    o->ctx = ctx;
    o->w = w;
    o->limit = (int)limit;
    o->nb = tp_worker_config(w)->game.buckets;
    o->next = board_names;
    struct slot *s = new_slots(o, o->nb);
    for (int b = 0; b < o->nb; b++) {
        /* The bucket's stakes log folded into `net` first (bet_batch.lua appends stakes there;
         * net_fold.lua), then ZREVRANGE 0 limit-1 WITHSCORES, in one script: the same top as when
         * every bet wrote `net` itself. */
        struct tp_script_net_fold_args a = {.bucket = b, .limit = (int)o->limit};
        if (tp_script_net_fold(st, &a, on_top, &s[b]) == 0)
            o->pending++;
        else
            o->failed = true;
    }
    finish_or_fail(o);
}

static void register_routes(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/me", get_me, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/me/bets", get_my_bets, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/leaderboard", get_leaderboard, NULL) == 0);
}

void tp_players_install(void)
{
    tp_worker_on_init(register_routes, NULL);
}
