/*
 * Odds projector (see tickpool/stream/odds.h). One instance per worker; only the lease holder does
 * anything, so exactly one process in the deployment publishes odds. A cycle is: HGET the open
 * round id, then the round hash (its own band count and rake, fixed when it opened: after a
 * restart with new band edges or rake the config's are not the round's) and one HGETALL per
 * bucket (B is small), sum, compare with the last published pools, PUBLISH when different. Cycles
 * never overlap (busy flag): a slow Redis stretches the period instead of piling up commands.
 */
#include "tickpool/stream/odds.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/leader.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/stream/bcast.h"
#include "tickpool/stream/protocol.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>

#define MOD "odds"

struct odds {
    struct tp_worker *w;
    struct tp_store *store;
    const struct tp_config_game *g;
    ev_timer timer;
    bool busy;
    int64_t round_id; /* round of the cycle in progress */
    int pending;      /* replies still expected: the round and every bucket */
    bool failed;
    int nbands, rake_bps; /* the round's own, from its hash */
    int64_t pools[TP_ROUND_MAX_BANDS];
    int64_t last_round; /* last published: round and pools */
    int64_t last_pools[TP_ROUND_MAX_BANDS];
};

/* The worker slot holding struct odds (tp_odds_install hands it out). */
static size_t slot = SIZE_MAX;

/* Every bucket answered: publish when the sum differs from what was last published. */
static void finish(struct odds *o)
{
    o->busy = false;
    if (o->failed)
        return;
    if (o->round_id == o->last_round &&
        memcmp(o->pools, o->last_pools, sizeof(int64_t) * (size_t)o->nbands) == 0)
        return;
    int64_t total = 0;
    for (int i = 0; i < o->nbands; i++)
        total += o->pools[i];
    /* A round nobody has bet on yet is not worth a message; a new round still resets the
     * comparison so its first bet is announced. */
    o->last_round = o->round_id;
    memcpy(o->last_pools, o->pools, sizeof(int64_t) * (size_t)o->nbands);
    if (total == 0)
        return;
    struct tp_protocol_odds odds = {
        .round_id = o->round_id, .n = o->nbands, .rake_bps = o->rake_bps};
    memcpy(odds.pools, o->pools, sizeof(int64_t) * (size_t)o->nbands);
    tp_bcast_odds(o->w, o->store, &odds);
}

/* HGETALL of one bucket's pool hash: fields are band indexes (and `total`, skipped). */
static void on_pool(int err, const struct tp_store_reply *r, void *ud)
{
    struct odds *o = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY) {
        o->failed = true;
    } else {
        size_t n = tp_reply_len(r);
        for (size_t i = 0; i + 1 < n; i += 2) {
            const char *k = tp_reply_str(tp_reply_at(r, i), NULL);
            const char *v = tp_reply_str(tp_reply_at(r, i + 1), NULL);
            if (k == NULL || v == NULL || strcmp(k, "total") == 0)
                continue;
            char *end;
            long band = strtol(k, &end, 10);
            if (*end != '\0' || band < 0 || band >= TP_ROUND_MAX_BANDS)
                continue;
            o->pools[band] += strtoll(v, NULL, 10);
        }
    }
    if (--o->pending == 0)
        finish(o);
}

/* The round hash: its band count and rake. */
static void on_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct odds *o = ud;
    struct tp_game_round rd;
    if (err != 0 || tp_game_round_parse(r, &rd) != 0 || rd.id != o->round_id) {
        o->failed = true;
    } else {
        o->nbands = rd.n_edges + 1;
        o->rake_bps = rd.rake_bps;
    }
    if (--o->pending == 0)
        finish(o);
}

static void on_current(int err, const struct tp_store_reply *r, void *ud)
{
    struct odds *o = ud;
    const char *s = err == 0 ? tp_reply_str(r, NULL) : NULL;
    long long id = s != NULL ? strtoll(s, NULL, 10) : 0;
    if (id <= 0) {
        o->busy = false;
        return;
    }
    o->round_id = id;
    o->failed = false;
    memset(o->pools, 0, sizeof(o->pools));
    o->pending = 2; /* held until every command is submitted, and the round */
    struct tp_key rk;
    if (tp_store_commandl(o->store, on_round, o, "HGETALL", tp_keys_round(&rk, id), NULL) != 0) {
        o->pending--;
        o->failed = true;
    }
    for (int b = 0; b < o->g->buckets; b++) {
        o->pending++;
        struct tp_key k;
        if (tp_store_commandl(o->store, on_pool, o, "HGETALL", tp_keys_pool(&k, b, id), NULL) !=
            0) {
            o->pending--;
            o->failed = true;
        }
    }
    if (--o->pending == 0)
        finish(o);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct odds *o = t->data;
    if (o->busy || !tp_leader_is_leader(tp_leader_of(o->w)) || !tp_store_is_connected(o->store))
        return;
    o->busy = true;
    /* Argument lists, not formats: these reads go out every TP_ODDS_PERIOD_MS. */
    if (tp_store_commandl(o->store, on_current, o, "HGET", TP_KEYS_CURRENT, "open", NULL) != 0)
        o->busy = false;
}

void tp_odds_start(struct tp_worker *w)
{
    if (tp_worker_slot_get(w, slot) != NULL)
        return;
    struct tp_store *store = tp_store_of(w);
    if (store == NULL) {
        tp_log_warn(MOD, "no Redis store: no odds from this process");
        return;
    }
    struct odds *o = tp_xcalloc(1, sizeof(*o));
    o->w = w;
    o->store = store;
    o->g = &tp_worker_config(w)->game;
    o->last_round = -1;
    ev_timer_init(&o->timer, timer_cb, TP_ODDS_PERIOD_MS / 1000.0, TP_ODDS_PERIOD_MS / 1000.0);
    o->timer.data = o;
    ev_timer_start(tp_worker_loop(w), &o->timer);
    tp_worker_slot_set(w, slot, o);
}

static void on_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    tp_odds_start(w);
}

/* Frees the projector unless a cycle is in flight: its store callbacks hold it, and the store,
 * freed after this hook, answers them TP_ECLOSED (the process exits anyway). */
static void on_exit_hook(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct odds *o = tp_worker_slot_get(w, slot);
    if (o == NULL || o->busy)
        return;
    ev_timer_stop(tp_worker_loop(w), &o->timer);
    free(o);
    tp_worker_slot_set(w, slot, NULL);
}

void tp_odds_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
    tp_worker_on_exit(on_exit_hook, NULL);
}
