/*
 * Game leader, rounds whose record is missing (see leader_internal.h): a round id is listed (the
 * newest rounds, or the unfinished index) but tp:{g}:round:<id> is gone, through an operator's
 * DEL or an eviction. The step's snapshot keeps such a round as a bare id, so the game goes on
 * around it; here, once nothing else is owed, the leader settles what the round still holds:
 *
 *  - not in the unfinished index: it was final, nothing is owed. Logged once per lease.
 *  - unfinished: stakes may still be held in its bucket copies, and its seed commitment and
 *    prices went with the record, so it can never be settled verifiably. It is cancelled and
 *    every stake refunded: the usual cancel chain (every bucket copy cancelled, the pools summed,
 *    round_cancel, which writes a cancelling record in place of the lost one), then the usual
 *    refund pages of the next steps. The band count, lock time and stake bounds come from the
 *    bucket copies (the config's when no copy exists: then no stake is held either); an open
 *    copy is cancelled only once the round's lock and grace are past, as for any cancel.
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"

#include <stdlib.h>
#include <string.h>

#define MOD "leader"

static bool known_final(const struct tp_leader *l, int64_t id)
{
    for (int i = 0; i < l->lost.nfinal; i++)
        if (l->lost.final[i] == id)
            return true;
    return false;
}

/* The last read is in: note the round final, wait for its lock and grace, or cancel it. */
static void lost_decide(struct tp_leader *l)
{
    if (l->lost.err || !l->leader) {
        tp_leader_step_end(l); /* the next step reads again */
        return;
    }
    if (!l->lost.unfinished) {
        tp_log_warn(MOD, "round record missing: final, nothing owed\tround=%lld",
                    (long long)l->lost.id);
        if (l->lost.nfinal < (int)(sizeof(l->lost.final) / sizeof(l->lost.final[0])))
            l->lost.final[l->lost.nfinal++] = l->lost.id;
        tp_leader_step_end(l);
        return;
    }
    if (l->lost.open && tp_now_ms() < l->lost.locks_at + l->g->grace_ms) {
        tp_leader_step_end(l); /* bets may still be taken on it: refunded once it locked */
        return;
    }
    struct tp_game_round r = {.id = l->lost.id,
                              .state = TP_ROUND_OPEN,
                              .winning_band = -1,
                              .n_edges = l->lost.nbands - 1,
                              .min_stake = l->lost.min_stake,
                              .max_stake = l->lost.max_stake,
                              .betting_ms = (int64_t)l->g->betting_s * 1000};
    r.t.locks_at = l->lost.locks_at;
    /* The edges only label the bands of a refund: the config's when the count agrees. */
    for (int i = 0; i < r.n_edges; i++)
        r.edges[i] = r.n_edges == l->g->n_band_edges ? l->g->band_edges_bps[i] : i;
    tp_log_error(MOD,
                 "round record missing: cancelling it, every stake refunded\tround=%lld "
                 "nbands=%d locks_at=%lld",
                 (long long)r.id, l->lost.nbands, (long long)r.t.locks_at);
    tp_leader_cancel(l, &r, "round record lost");
}

static void lost_read_done(struct tp_leader *l)
{
    if (--l->lost.pending == 0)
        lost_decide(l);
}

static void on_lost_index(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0 || tp_reply_type(r) == TP_REPLY_ERROR)
        l->lost.err = 1;
    else
        l->lost.unfinished = tp_reply_str(r, NULL) != NULL;
    lost_read_done(l);
}

/* One bucket copy: state, locks_at, nbands, min_stake, max_stake (all nil when absent). */
static void on_lost_copy(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY || tp_reply_len(r) != 5) {
        l->lost.err = 1;
    } else {
        const char *st = tp_reply_str(tp_reply_at(r, 0), NULL);
        int64_t v[4] = {0, 0, 0, 0};
        for (int i = 0; i < 4; i++) {
            const char *s = tp_reply_str(tp_reply_at(r, (size_t)i + 1), NULL);
            if (s != NULL && !tp_parse_i64(s, &v[i]))
                l->lost.err = 1;
        }
        if (st != NULL) {
            l->lost.open = l->lost.open || strcmp(st, "open") == 0;
            l->lost.locks_at = v[0] > l->lost.locks_at ? v[0] : l->lost.locks_at;
            if (v[1] >= 1 && v[1] <= TP_ROUND_MAX_BANDS)
                l->lost.nbands = (int)v[1];
            l->lost.min_stake = v[2];
            l->lost.max_stake = v[3];
        }
    }
    lost_read_done(l);
}

bool tp_leader_lost(struct tp_leader *l)
{
    if (l->lost.epoch != l->epoch) {
        l->lost.epoch = l->epoch;
        l->lost.nfinal = 0;
    }
    int64_t id = 0;
    for (int i = 0; i < l->nsnap && id == 0; i++)
        if (l->snap[i].lost && !known_final(l, l->snap[i].r.id))
            id = l->snap[i].r.id;
    if (id == 0)
        return false;
    l->lost.id = id;
    l->lost.err = 0;
    l->lost.unfinished = l->lost.open = false;
    l->lost.locks_at = l->lost.min_stake = l->lost.max_stake = 0;
    l->lost.nbands = l->g->n_band_edges + 1;
    l->lost.pending = 2; /* this call's own guard, and the ZSCORE */
    if (tp_store_command(l->store, on_lost_index, l, "ZSCORE " TP_KEYS_UNFINISHED " %lld",
                         (long long)id) != 0)
        on_lost_index(TP_EUNAVAIL, NULL, l);
    for (int b = 0; b < l->g->buckets; b++) {
        struct tp_key k;
        l->lost.pending++;
        if (tp_store_command(l->store, on_lost_copy, l,
                             "HMGET %s state locks_at nbands min_stake max_stake",
                             tp_keys_round_state(&k, b, id)) != 0)
            on_lost_copy(TP_EUNAVAIL, NULL, l);
    }
    lost_read_done(l);
    return true;
}
