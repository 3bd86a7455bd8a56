/*
 * Game leader, the price feed (see leader_internal.h): ticks on the wall-clock grid, flat
 * before the first lock and along the newest locked round's segment after it, with a bounded
 * catch-up after a failover; and the lock and close prices over the chain of seeds.
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/store/store.h"

#include <stdlib.h>
#include <string.h>

#define MAX_BACKFILL 50

_Static_assert(MAX_BACKFILL <= TP_SCRIPT_TICKS_MAX, "a backfill fits one tick.lua call");

static void publish_tick(struct tp_leader *l, int64_t ts, int64_t price)
{
    if (l->obs != NULL && l->obs->on_tick != NULL)
        l->obs->on_tick(l->obs_ud, ts, price);
}

static void on_tick(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    l->tick_busy = false;
    if (!tp_leader_reply_ok(err, r, &code)) {
        if (strcmp(code, "stale_epoch") == 0)
            tp_leader_lose(l, "stale epoch on tick");
        return;
    }
    if (l->op.tick_last > l->last_tick_ts) {
        l->last_tick_ts = l->op.tick_last;
        l->last_price = l->cache_price;
        publish_tick(l, l->last_tick_ts, l->last_price);
    }
}

/*
 * No live segment yet (a fresh game before its first lock): tick the flat price every tick_ms,
 * so players see a price at once. It is the price the next lock takes as L (lock_price_of: the
 * last tick, else the start price), so the path stays continuous and verifiable.
 */
static void flat_tick(struct tp_leader *l, int64_t now)
{
    int64_t tick_ms = l->g->tick_ms;
    int64_t ts = now - now % tick_ms;
    /* Past the first lock the ticks are that round's segment, not flat: wait for the step
     * that switches to it (a few ms, the boundary runs at the lock time). */
    if (ts > l->flat_until)
        ts = l->flat_until - l->flat_until % tick_ms;
    if (ts <= l->last_tick_ts)
        return;
    l->cache_price = l->last_price > 0 ? l->last_price : TP_PRICE_SIM_START_PRICE;
    struct tp_script_tick_args a = {.fence = tp_leader_fence(l),
                                    .maxlen = tp_round_ticks_kept(tick_ms),
                                    .ts = &ts,
                                    .price = &l->cache_price,
                                    .n = 1};
    l->cache_idx = -1; /* the segment path recomputes its own position */
    l->op.tick_last = ts;
    l->tick_busy = true;
    if (tp_script_tick(l->store, &a, on_tick, l) != 0)
        l->tick_busy = false;
}

void tp_leader_tick_cb(struct ev_loop *loop, ev_periodic *t, int revents)
{
    (void)loop, (void)revents;
    tp_leader_tick_due(t->data);
}

void tp_leader_tick_due(struct tp_leader *l)
{
    if (!l->leader || l->tick_busy || !tp_store_is_connected(l->store))
        return;
    int64_t now = tp_now_ms();
    if (!l->seg_ok) {
        /* Only once the rounds were read: a new leader must not tick flat over a segment it
         * has not loaded yet. */
        if (l->seg_known)
            flat_tick(l, now);
        return;
    }
    int64_t due = (now - l->seg_lock) / l->seg_tick_ms;
    if (due > l->seg_n)
        due = l->seg_n;
    int64_t from = (l->last_tick_ts - l->seg_lock) / l->seg_tick_ms + 1;
    /* The tick at the lock itself (index 0, price L: the previous segment's end, or the flat
     * price) is still owed when the segment switched before it was written: the boundary runs
     * at the lock time, often before the tick watcher's turn. */
    if (l->last_tick_ts < l->seg_lock)
        from = 0;
    if (from < due - MAX_BACKFILL + 1)
        from = due - MAX_BACKFILL + 1;
    if (from > due)
        return;
    int64_t ts[MAX_BACKFILL], price[MAX_BACKFILL];
    size_t n = 0;
    if (from == 0) {
        l->cache_idx = 0;
        l->cache_price = l->seg_L;
        ts[n] = l->seg_lock;
        price[n++] = l->seg_L;
        from = 1;
    }
    if (l->cache_idx != from - 1) {
        int64_t p = tp_price_sim_price_at(l->seg_seed, l->seg_vol, l->seg_L, (uint64_t)(from - 1));
        if (p < 1)
            return;
        l->cache_idx = from - 1;
        l->cache_price = p;
    }
    for (int64_t i = from; i <= due; i++) {
        l->cache_price = tp_price_sim_tick(l->seg_seed, (uint64_t)i, l->cache_price, l->seg_vol);
        l->cache_idx = i;
        ts[n] = l->seg_lock + i * l->seg_tick_ms;
        price[n++] = l->cache_price;
    }
    struct tp_script_tick_args a = {.fence = tp_leader_fence(l),
                                    .maxlen = tp_round_ticks_kept(l->seg_tick_ms),
                                    .ts = ts,
                                    .price = price,
                                    .n = n};
    l->op.tick_last = l->seg_lock + due * l->seg_tick_ms;
    l->tick_busy = true;
    if (tp_script_tick(l->store, &a, on_tick, l) != 0) {
        l->tick_busy = false;
        l->cache_idx = -1;
    }
}

/* Picks the segment the ticks follow: the newest locked, not cancelled round with its seed. */
void tp_leader_choose_segment(struct tp_leader *l, int64_t now)
{
    for (int i = l->nsnap - 1; i >= 0; i--) {
        const struct tp_leader_snap *s = &l->snap[i];
        enum tp_round_state st = s->r.state;
        if (!s->r.has_lock || s->r.t.locks_at > now || st == TP_ROUND_CANCELLING ||
            st == TP_ROUND_CANCELLED || s->seed_hex[0] == '\0' || s->r.tick_ms <= 0)
            continue;
        uint8_t seed[TP_PRICE_SIM_SEED_LEN];
        if (tp_hex_decode(s->seed_hex, seed, sizeof(seed)) != 0)
            return;
        if (!l->seg_ok || l->seg_id != s->r.id) {
            l->seg_id = s->r.id;
            memcpy(l->seg_seed, seed, sizeof(seed));
            l->seg_lock = s->r.t.locks_at;
            l->seg_L = s->r.lock_price;
            l->seg_vol = s->r.vol_ppb;
            l->seg_tick_ms = s->r.tick_ms;
            l->seg_n = s->r.betting_ms / s->r.tick_ms;
            l->cache_idx = -1;
            l->seg_ok = true;
        }
        l->seg_known = true;
        return;
    }
    l->seg_ok = false;
    l->seg_known = true;
    l->flat_until = INT64_MAX;
    for (int i = 0; i < l->nsnap; i++)
        if (l->snap[i].r.state == TP_ROUND_OPEN && l->snap[i].r.t.locks_at < l->flat_until)
            l->flat_until = l->snap[i].r.t.locks_at;
}

int64_t tp_leader_lock_price(struct tp_leader *l, const struct tp_game_round *r)
{
    const struct tp_leader_snap *p = tp_leader_snap_find(l, r->id - 1);
    uint8_t seed[TP_PRICE_SIM_SEED_LEN];
    if (p != NULL && p->r.has_lock && p->r.tick_ms > 0 && p->r.state != TP_ROUND_CANCELLING &&
        p->r.state != TP_ROUND_CANCELLED && p->r.t.locks_at + p->r.betting_ms == r->t.locks_at &&
        tp_hex_decode(p->seed_hex, seed, sizeof(seed)) == 0) {
        int64_t L = tp_price_sim_price_at(seed, p->r.vol_ppb, p->r.lock_price,
                                          (uint64_t)(p->r.betting_ms / p->r.tick_ms));
        if (L >= 1)
            return L;
    }
    return l->last_price > 0 ? l->last_price : TP_PRICE_SIM_START_PRICE;
}

/* C of round r: tick live_ms/tick_ms along the chain of segments r, r+1, ... (docs/fairness.md
 * §5). Returns the price or a negative error when a later seed is missing. */
int64_t tp_leader_close_price(struct tp_leader *l, const struct tp_game_round *r)
{
    int64_t seg_ticks = r->betting_ms / r->tick_ms;
    int64_t k = (r->t.closes_at - r->t.locks_at) / r->tick_ms;
    if (seg_ticks <= 0 || k <= 0)
        return TP_EINVAL;
    /* The live phase spans ceil(k / seg_ticks) segments, one per later round, all still
     * unfinished at this close and so all in the snapshot, however long live is. */
    size_t want = (size_t)((k + seg_ticks - 1) / seg_ticks), n = 0;
    if (want > (size_t)l->nsnap)
        return TP_EINVAL;
    struct tp_price_sim_seg *segs = tp_xmalloc(want * sizeof(*segs));
    for (int64_t id = r->id; n < want; id++) {
        const struct tp_leader_snap *s = tp_leader_snap_find(l, id);
        /* A lost round's seed may remain, but not its volatility: its segment is unknown. */
        if (s == NULL || s->lost ||
            tp_hex_decode(s->seed_hex, segs[n].seed, TP_PRICE_SIM_SEED_LEN) != 0)
            break;
        segs[n++].vol_ppb = s->r.vol_ppb;
    }
    int64_t C =
        n == 0 ? TP_EINVAL
               : tp_price_sim_chain_at(segs, n, (uint64_t)seg_ticks, r->lock_price, (uint64_t)k);
    free(segs);
    return C;
}
