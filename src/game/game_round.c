/*
 * A round as stored in Redis (see tickpool/game/game_round.h): parsing of the round hash and the
 * asynchronous load that sums the bucket pools of a round still taking bets.
 */
#include "tickpool/game/game_round.h"

#include "tickpool/base/common.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Parsing --- */

/* Parses a comma list of integers ("-10,-3,3,10"; "" is empty) into out[0..cap). Returns the
 * count or -1. */
static int parse_list(const char *s, int64_t *out, int cap)
{
    int n = 0;
    if (*s == '\0')
        return 0;
    while (n < cap) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || end == s || (*end != ',' && *end != '\0'))
            return -1;
        out[n++] = v;
        if (*end == '\0')
            return n;
        s = end + 1;
    }
    return -1;
}

int tp_game_round_parse(const struct tp_store_reply *r, struct tp_game_round *out)
{
    memset(out, 0, sizeof(*out));
    out->winning_band = -1;
    if (tp_reply_type(r) != TP_REPLY_ARRAY)
        return TP_EINVAL;
    size_t n = tp_reply_len(r);
    if (n == 0)
        return TP_ENOTFOUND;
    bool has_id = false, has_rcpt = false;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *k = tp_reply_str(tp_reply_at(r, i), NULL);
        const char *v = tp_reply_str(tp_reply_at(r, i + 1), NULL);
        if (k == NULL || v == NULL)
            return TP_EINVAL;
        int64_t x = 0;
        bool num = tp_parse_i64(v, &x);
        if (strcmp(k, "id") == 0 && num) {
            out->id = x;
            has_id = true;
        } else if (strcmp(k, "state") == 0) {
            if (tp_round_state_parse(v, strlen(v), &out->state) != 0)
                return TP_EINVAL;
        } else if (strcmp(k, "opens_at") == 0 && num) {
            out->t.opens_at = x;
        } else if (strcmp(k, "locks_at") == 0 && num) {
            out->t.locks_at = x;
        } else if (strcmp(k, "closes_at") == 0 && num) {
            out->t.closes_at = x;
        } else if (strcmp(k, "seed_hash") == 0) {
            snprintf(out->seed_hash, sizeof(out->seed_hash), "%s", v);
        } else if (strcmp(k, "seed") == 0) {
            snprintf(out->seed, sizeof(out->seed), "%s", v);
        } else if (strcmp(k, "lock_price") == 0 && num) {
            out->lock_price = x;
            out->has_lock = true;
        } else if (strcmp(k, "close_price") == 0 && num) {
            out->close_price = x;
            out->has_close = true;
        } else if (strcmp(k, "winning_band") == 0 && num) {
            out->winning_band = (int)x;
        } else if (strcmp(k, "edges") == 0) {
            int64_t e[TP_ROUND_MAX_EDGES];
            int ne = parse_list(v, e, TP_ROUND_MAX_EDGES);
            if (ne < 0)
                return TP_EINVAL;
            for (int j = 0; j < ne; j++)
                out->edges[j] = (int)e[j];
            out->n_edges = ne;
        } else if (strcmp(k, "rake_bps") == 0 && num) {
            out->rake_bps = (int)x;
        } else if (strcmp(k, "min_stake") == 0 && num) {
            out->min_stake = x;
        } else if (strcmp(k, "max_stake") == 0 && num) {
            out->max_stake = x;
        } else if (strcmp(k, "vol_ppb") == 0 && num) {
            out->vol_ppb = x;
        } else if (strcmp(k, "betting_ms") == 0 && num) {
            out->betting_ms = x;
        } else if (strcmp(k, "tick_ms") == 0 && num) {
            out->tick_ms = x;
        } else if (strcmp(k, "total") == 0 && num) {
            out->total = x;
            out->has_plan = true;
        } else if (strcmp(k, "winning_stake") == 0 && num) {
            out->winning_stake = x;
        } else if (strcmp(k, "rake") == 0 && num) {
            out->rake = x;
        } else if (strcmp(k, "pot") == 0 && num) {
            out->pot = x;
        } else if (strcmp(k, "refund_all") == 0) {
            out->refund_all = strcmp(v, "1") == 0;
        } else if (strcmp(k, "pools") == 0) {
            int np = parse_list(v, out->pools, TP_ROUND_MAX_BANDS);
            if (np < 0)
                return TP_EINVAL;
            out->has_pools = true;
        } else if (strcmp(k, "archiving") == 0) {
            out->archiving = strcmp(v, "1") == 0;
        } else if (strncmp(k, "r_", 2) == 0 && num) {
            has_rcpt = true;
            if (strcmp(k, "r_total") == 0)
                out->receipt.total = x;
            else if (strcmp(k, "r_winning_stake") == 0)
                out->receipt.winning_stake = x;
            else if (strcmp(k, "r_rake") == 0)
                out->receipt.rake = x;
            else if (strcmp(k, "r_breakage") == 0)
                out->receipt.breakage = x;
            else if (strcmp(k, "r_payouts") == 0)
                out->receipt.payouts = x;
            else if (strcmp(k, "r_refunds") == 0)
                out->receipt.refunds = x;
        }
    }
    out->has_receipt = has_rcpt;
    if (!has_id || out->state == TP_ROUND_NONE ||
        tp_round_check_edges(out->edges, out->n_edges) != 0)
        return TP_EINVAL;
    return 0;
}

/* --- Async round loading --- */

struct load {
    struct tp_store *store;
    int buckets;
    int pending;
    int err;
    bool pools_ahead; /* the pools were asked with the round, into sum[] (one round trip) */
    tp_game_round_cb cb;
    void *ud;
    struct tp_game_round round;
    int64_t sum[TP_ROUND_MAX_BANDS];
};

static void load_done(struct load *l)
{
    if (l->err == 0 && l->pools_ahead && !l->round.has_pools)
        memcpy(l->round.pools, l->sum, sizeof(l->sum));
    l->cb(l->err, l->err == 0 ? &l->round : NULL, l->ud);
    free(l);
}

static void on_pool(int err, const struct tp_store_reply *r, void *ud)
{
    struct load *l = ud;
    if (err != 0 && l->err == 0)
        l->err = err;
    if (err == 0 && tp_reply_type(r) == TP_REPLY_ARRAY) {
        size_t n = tp_reply_len(r);
        for (size_t i = 0; i + 1 < n; i += 2) {
            const char *k = tp_reply_str(tp_reply_at(r, i), NULL);
            const char *v = tp_reply_str(tp_reply_at(r, i + 1), NULL);
            int64_t band, amount;
            if (k && v && tp_parse_i64(k, &band) && tp_parse_i64(v, &amount) && band >= 0 &&
                band < TP_ROUND_MAX_BANDS)
                *(l->pools_ahead ? &l->sum[band] : &l->round.pools[band]) += amount;
        }
    }
    if (--l->pending == 0)
        load_done(l);
}

static void on_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct load *l = ud;
    if (err == 0)
        err = tp_game_round_parse(r, &l->round);
    if (l->pools_ahead) {
        if (err != 0 && l->err == 0)
            l->err = err;
        if (--l->pending == 0)
            load_done(l);
        return;
    }
    if (err != 0 || l->round.has_pools) {
        l->err = err;
        load_done(l);
        return;
    }
    /* Pools not recorded yet (open or live round): sum the buckets' live pools. */
    l->pending = l->buckets;
    for (int b = 0; b < l->buckets; b++) {
        struct tp_key k;
        if (tp_store_command(l->store, on_pool, l, "HGETALL %s",
                             tp_keys_pool(&k, b, l->round.id)) != 0) {
            l->err = TP_EUNAVAIL;
            if (--l->pending == 0)
                load_done(l);
        }
    }
}

/* pools_ahead: the bucket pools are asked together with the round (one round trip, for a
 * round known to be open or live, whose pools are not recorded); else only once the round
 * shows they are not recorded. */
static int load_start(struct tp_store *store, int buckets, int64_t id, bool pools_ahead,
                      tp_game_round_cb cb, void *ud)
{
    if (store == NULL)
        return TP_EUNAVAIL;
    struct load *l = tp_xcalloc(1, sizeof(*l));
    l->store = store;
    l->buckets = buckets;
    l->cb = cb;
    l->ud = ud;
    l->pools_ahead = pools_ahead;
    l->pending = 1;
    struct tp_key k;
    int rc = tp_store_command(store, on_round, l, "HGETALL %s", tp_keys_round(&k, id));
    if (rc != 0) {
        free(l);
        return rc;
    }
    for (int b = 0; pools_ahead && b < buckets; b++) {
        l->pending++;
        if (tp_store_command(store, on_pool, l, "HGETALL %s", tp_keys_pool(&k, b, id)) != 0) {
            l->err = TP_EUNAVAIL;
            l->pending--;
        }
    }
    return 0;
}

int tp_game_round_load(struct tp_store *store, int buckets, int64_t id, tp_game_round_cb cb,
                       void *ud)
{
    return load_start(store, buckets, id, false, cb, ud);
}

/* --- The current pair --- */

#define CURRENT_TRIES 4

struct current {
    struct tp_store *store;
    int buckets, pending, err, tries;
    bool pools_ahead; /* the ids were given (a boundary): pools asked with the rounds */
    tp_game_round_current_cb cb;
    void *ud;
    bool have[2];
    struct tp_game_round rounds[2]; /* open, live */
};

static int current_read(struct current *c);

/* The slots agree with the rounds' states: the open one is open, the live one live (or
 * settling, which is live to a player). */
static bool current_consistent(const struct current *c)
{
    return (!c->have[0] || c->rounds[0].state == TP_ROUND_OPEN) &&
           (!c->have[1] || tp_round_state_public(c->rounds[1].state) == TP_ROUND_LIVE);
}

static void current_done(struct current *c)
{
    if (--c->pending > 0)
        return;
    if (c->err == 0 && !current_consistent(c) && ++c->tries < CURRENT_TRIES && current_read(c) == 0)
        return;
    if (c->err == 0 && !current_consistent(c))
        c->err = TP_EUNAVAIL;
    bool ok = c->err == 0;
    c->cb(c->err, ok && c->have[0] ? &c->rounds[0] : NULL, ok && c->have[1] ? &c->rounds[1] : NULL,
          c->ud);
    free(c);
}

struct current_slot {
    struct current *c;
    int i;
};

static void on_current_round(int err, const struct tp_game_round *r, void *ud)
{
    struct current_slot *sl = ud;
    struct current *c = sl->c;
    if (err == 0) {
        c->rounds[sl->i] = *r;
        c->have[sl->i] = true;
    } else if (err != TP_ENOTFOUND && c->err == 0) {
        c->err = err;
    }
    free(sl);
    current_done(c);
}

/* Loads the rounds ids[0] (open) and ids[1] (live), 0 for none; pending holds 1 for the caller,
 * which ends with current_done. */
static void current_load(struct current *c, const int64_t ids[2])
{
    for (int i = 0; i < 2; i++) {
        if (ids[i] <= 0)
            continue;
        struct current_slot *sl = tp_xmalloc(sizeof(*sl));
        sl->c = c;
        sl->i = i;
        c->pending++;
        if (load_start(c->store, c->buckets, ids[i], c->pools_ahead, on_current_round, sl) != 0) {
            free(sl);
            c->pending--;
            c->err = TP_EUNAVAIL;
        }
    }
}

static void on_current_ids(int err, const struct tp_store_reply *r, void *ud)
{
    struct current *c = ud;
    if (err != 0 || tp_reply_len(r) != 2) {
        c->err = err != 0 ? err : TP_EUNAVAIL;
        current_done(c);
        return;
    }
    int64_t ids[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        if (!tp_parse_i64(tp_reply_str(tp_reply_at(r, (size_t)i), NULL), &ids[i]))
            ids[i] = 0;
    current_load(c, ids);
    current_done(c);
}

/* One read of the pair: pending holds 1 for the ids until they are in. */
static int current_read(struct current *c)
{
    c->have[0] = c->have[1] = false;
    c->pending = 1;
    c->pools_ahead = false;
    return tp_store_command(c->store, on_current_ids, c, "HMGET " TP_KEYS_CURRENT " open live");
}

/* A pair read with nothing asked yet (NULL without a store). */
static struct current *current_new(struct tp_store *store, int buckets, tp_game_round_current_cb cb,
                                   void *ud)
{
    if (store == NULL)
        return NULL;
    struct current *c = tp_xcalloc(1, sizeof(*c));
    c->store = store;
    c->buckets = buckets;
    c->cb = cb;
    c->ud = ud;
    return c;
}

int tp_game_round_load_current(struct tp_store *store, int buckets, tp_game_round_current_cb cb,
                               void *ud)
{
    struct current *c = current_new(store, buckets, cb, ud);
    int rc = c != NULL ? current_read(c) : TP_EUNAVAIL;
    if (rc != 0)
        free(c);
    return rc;
}

int tp_game_round_load_pair(struct tp_store *store, int buckets, int64_t open_id, int64_t live_id,
                            tp_game_round_current_cb cb, void *ud)
{
    struct current *c = current_new(store, buckets, cb, ud);
    if (c == NULL)
        return TP_EUNAVAIL;
    c->pools_ahead = true;
    c->pending = 1;
    const int64_t ids[2] = {open_id, live_id};
    current_load(c, ids);
    if (c->pending == 1 && c->err != 0) { /* nothing was asked: no callback */
        int rc = c->err;
        free(c);
        return rc;
    }
    current_done(c);
    return 0;
}
