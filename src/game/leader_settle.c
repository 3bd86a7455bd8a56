/*
 * Game leader, the settlement driver (see leader_internal.h and scripts/lua/README.md, "Game
 * engine"): per bucket bucket_plan (first writer wins), settle_page until done, settle_finish;
 * then round_final. Every script is idempotent, so a new leader resumes where a dead one
 * stopped, and so does the next step when this one yields: between two pages or buckets the
 * settlement ends its step as soon as a lock, close, open or cancel falls due, so a long
 * settlement never delays a boundary; and it also ends its step once the step has run
 * SETTLE_SLICE_MS, the next step starting at once, so what changed meanwhile (a bet that found
 * the open round's bucket copy missing, a new slot map) is read and the copy re-written before
 * the settlement resumes: bets there are refused until then. Pages are sized by Redis time
 * (tp_settle_pager from the time each page reports), and the next page is sent only after the last
 * one's reply, so the bets that arrived meanwhile run between two pages.
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/settle.h"
#include "tickpool/store/store.h"

#define MOD "leader"
/* Longest a settlement runs in one step (the leader's safety step period). */
#define SETTLE_SLICE_MS 250

static void settle_bucket(struct tp_leader *l);

/* True when the settlement ends its step between two pages or buckets: a boundary or cancel is
 * due, or its slice is used up (then the next step is owed at once, not at the safety pace). */
static bool settle_yield(struct tp_leader *l)
{
    if (tp_leader_boundary_due(l))
        return true;
    if (tp_now_ms() - l->step_at_ms < SETTLE_SLICE_MS)
        return false;
    l->step_owed = true;
    return true;
}

static void on_final(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        tp_leader_op_fail(l, "final", code);
        return;
    }
    if (tp_reply_integer(tp_reply_at(r, 1)) == 1) {
        bool cancelled = l->op.r.refund_all && l->op.r.state == TP_ROUND_CANCELLING;
        tp_metrics_inc(cancelled ? TP_METRIC_ROUNDS_CANCELLED_TOTAL
                                 : TP_METRIC_ROUNDS_SETTLED_TOTAL);
        tp_log_info(MOD,
                    "round %s\tround=%lld total=%lld paid=%lld pages=%d pages_over_2ms=%d "
                    "page_us_max=%lld",
                    cancelled ? "cancelled and refunded" : "settled", (long long)l->op.r.id,
                    (long long)l->op.sum_t, (long long)l->op.sum_paid, l->op.pages,
                    l->op.pages_slow, (long long)l->op.page_us_max);
        tp_leader_publish_round(l, l->op.r.id);
    }
    tp_leader_step_end(l);
}

static void on_finish(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        tp_leader_op_fail(l, "settle finish", code);
        return;
    }
    l->op.sum_t += tp_reply_integer(tp_reply_at(r, 1));
    l->op.sum_paid += tp_reply_integer(tp_reply_at(r, 2));
    if (++l->op.bucket < l->g->buckets) {
        if (settle_yield(l))
            tp_leader_step_end(l);
        else
            settle_bucket(l);
        return;
    }
    struct tp_script_round_final_args a = {.fence = tp_leader_fence(l),
                                           .id = l->op.r.id,
                                           .sum_t = l->op.sum_t,
                                           .sum_paid = l->op.sum_paid};
    if (tp_script_round_final(l->store, &a, on_final, l) != 0)
        tp_leader_step_end(l);
}

static void settle_finish(struct tp_leader *l)
{
    bool cancel = l->op.r.state == TP_ROUND_CANCELLING;
    struct tp_script_settle_finish_args a = {
        .bucket = l->op.bucket,
        .id = l->op.r.id,
        .final_state = tp_round_state_name(cancel ? TP_ROUND_CANCELLED : TP_ROUND_SETTLED),
        .now_ms = tp_now_ms()};
    if (tp_script_settle_finish(l->store, &a, on_finish, l) != 0)
        tp_leader_step_end(l);
}

static void settle_page(struct tp_leader *l);

static void on_page(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        tp_leader_op_fail(l, "settle page", code);
        return;
    }
    if (!l->leader) {
        tp_leader_step_end(l);
        return;
    }
    /* {'ok', done, credited, scanned, µs}: the next page is sized from this one's time. */
    if (tp_reply_len(r) >= 5) {
        int64_t scanned = tp_reply_integer(tp_reply_at(r, 3));
        int64_t us = tp_reply_integer(tp_reply_at(r, 4));
        tp_settle_pager_page(&l->pager, scanned, us);
        l->op.page_us_max = TP_MAX(l->op.page_us_max, us);
        l->op.pages_slow += us > 2000;
    }
    l->op.pages++;
    if (tp_reply_integer(tp_reply_at(r, 1)) == 1)
        settle_finish(l);
    else if (settle_yield(l))
        tp_leader_step_end(l); /* the next step runs it, then resumes from the plan's cursor */
    else
        settle_page(l);
}

static void settle_page(struct tp_leader *l)
{
    struct tp_script_settle_page_args a = {.bucket = l->op.bucket,
                                           .id = l->op.r.id,
                                           .nbands = tp_leader_nbands(&l->op.r),
                                           .max_bets = tp_settle_pager_size(&l->pager),
                                           .now_ms = tp_now_ms(),
                                           .budget_us = TP_SETTLE_PAGE_SCAN_US};
    if (tp_script_settle_page(l->store, &a, on_page, l) != 0)
        tp_leader_step_end(l);
}

static void on_plan(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        tp_leader_op_fail(l, "settle plan", code);
        return;
    }
    settle_page(l);
}

static void settle_bucket(struct tp_leader *l)
{
    const struct tp_game_round *r = &l->op.r;
    struct tp_script_bucket_plan_args a = {.bucket = l->op.bucket,
                                           .id = r->id,
                                           .winning_band =
                                               r->winning_band < 0 ? 0 : r->winning_band,
                                           .pot = r->pot,
                                           .winning_stake = r->winning_stake,
                                           .refund_all = r->refund_all,
                                           .nbands = tp_leader_nbands(r)};
    if (tp_script_bucket_plan(l->store, &a, on_plan, l) != 0)
        tp_leader_step_end(l);
}

void tp_leader_settle(struct tp_leader *l, const struct tp_game_round *r)
{
    l->op.r = *r;
    l->op.bucket = 0;
    l->op.sum_t = l->op.sum_paid = 0;
    l->op.pages = l->op.pages_slow = 0;
    l->op.page_us_max = 0;
    settle_bucket(l);
}
