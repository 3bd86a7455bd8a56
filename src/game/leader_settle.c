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
 * (tp_settle_pager from the time each page reports), and each reply sends the next page
 * (after tp_settle_page_wait, below). One page is in flight at a time, never two: two pages sent
 * together reach Redis in one read and run back to back in one turn, a bet queued behind them
 * waiting for both (4-11 ms turns, bench/README.md, Settlement, session 11); sent after the reply,
 * the next page finds the bets that came during the last one served first. And while the settlement
 * is ahead of its pace (tp_settle_pace_gap: the amount paid ahead of a line from the close to
 * TP_SETTLE_PACE_MS after it), Redis is left idle about a page's time between two pages: pages
 * back to back keep Redis on a core for the whole settlement, and on a host with few cores the
 * threads answering bets then wait for one (bench/README.md, Settlement). Behind the line the
 * next page still waits TP_SETTLE_PAGE_GAP_MIN_US, so that the bets' calls answered in the last
 * page's turn reach Redis before it (tp_settle_page_wait), unless it is late (tp_settle_late:
 * behind a line TP_SETTLE_CATCHUP_MS behind the pacing line at the close and on it at its end):
 * then back to back, so that a settlement slower than the line still ends about when the line
 * does. While it is more than TP_SETTLE_CATCHUP_MS behind the pacing line (tp_settle_behind) its
 * pages are aimed TP_SETTLE_CATCHUP_X times higher too, so that a busy host's slower pages do not
 * also become smaller ones, each paying its players' writes and a round trip again.
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/settle.h"
#include "tickpool/store/store.h"

#include <stdio.h>
#include <string.h>

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
        tp_log_info(
            MOD,
            "round %s\tround=%lld total=%lld paid=%lld pages=%d pages_over_2ms=%d "
            "page_us_max=%lld page_ms_sum=%lld pages_paced=%d "
            "pace_ms_sum=%lld steps=%d pages_catchup=%d pages_late=%d",
            cancelled ? "cancelled and refunded" : "settled", (long long)l->op.r.id,
            (long long)l->op.sum_t, (long long)l->op.sum_paid, l->sst.pages, l->sst.pages_slow,
            (long long)l->sst.page_us_max, (long long)(l->sst.page_us_sum / 1000), l->sst.paced,
            (long long)(l->sst.pace_us_sum / 1000), l->sst.steps, l->sst.catchup, l->sst.late);
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

/* --- Pages --- */

/* Why no further page goes out; the last reply in then acts on it. */
enum { PAGES_GO, PAGES_DONE, PAGES_END, PAGES_FAIL };

static void on_page(int err, const struct tp_store_reply *r, void *ud);

/* Sends one page; false when it could not be submitted (no callback then). */
static bool send_page(struct tp_leader *l)
{
    struct tp_script_settle_page_args a = {.bucket = l->op.bucket,
                                           .id = l->op.r.id,
                                           .nbands = tp_leader_nbands(&l->op.r),
                                           .max_bets = tp_settle_pager_size(&l->pager),
                                           .now_ms = tp_now_ms(),
                                           .budget_us = tp_settle_pager_scan_us(&l->pager)};
    TP_ASSERT(!l->op.inflight);
    if (tp_script_settle_page(l->store, &a, on_page, l) != 0)
        return false;
    l->op.inflight = true;
    l->sst.catchup += l->pager.catchup;
    l->op.sent_size = a.max_bets;
    l->op.sent_us = tp_mono_ns() / 1000;
    return true;
}

/* The pages in flight are all in: finish the bucket, fail, or end the step. */
static void pages_over(struct tp_leader *l)
{
    if (l->op.page_stop == PAGES_DONE)
        settle_finish(l);
    else if (l->op.page_stop == PAGES_FAIL)
        tp_leader_op_fail(l, "settle page", l->op.err_code);
    else
        tp_leader_step_end(l);
}

/* Sends the next page (none is in flight: the plan's or the last page's reply is in, or a gap
 * is over); a page that cannot be sent ends the pages and the step (page_stop is read only while
 * a page or a gap is pending, and the next plan sets it again). Each page reads its cursor from
 * the plan when Redis runs it, so it continues where the last one stopped. */
static void page_next(struct tp_leader *l)
{
    if (!send_page(l)) {
        l->op.page_stop = PAGES_END;
        tp_leader_step_end(l);
    }
}

/* After a page that took `us` of Redis time and left the bucket's pages at `bucket_paid`, against
 * the pacing line: the idle gap before the next page (µs, 0: none) while ahead of it, whether
 * the next pages catch up (*behind) and whether the next page goes without the floor (*late).
 * The amount paid is the finished buckets' (this step's walk) and this bucket's, against what
 * the round owes (its refunds, or its pot). */
static int64_t pace_gap(struct tp_leader *l, int64_t bucket_paid, int64_t us, bool *behind,
                        bool *late)
{
    const struct tp_game_round *r = &l->op.r;
    int64_t owed = r->refund_all ? r->total : r->pot;
    int64_t paid = l->op.sum_paid + bucket_paid, now = tp_now_ms();
    *behind = tp_settle_behind(r->t.closes_at, now, paid, owed);
    *late = *behind || tp_settle_late(r->t.closes_at, now, paid, owed);
    int64_t gap = tp_settle_pace_gap(r->t.closes_at, now, paid, owed, us);
    return gap > 0 && l->op.pace_test_us > 0 ? l->op.pace_test_us : gap;
}

void tp_leader_settle_drop(struct tp_leader *l)
{
    if (!ev_is_active(&l->pace_t))
        return;
    /* Nothing is in flight during a gap: the step ends here, not when the gap is over, so a
     * lease taken back meanwhile starts a step of its own rather than finding this one busy
     * and then carried on from the old lease's state. */
    ev_timer_stop(l->loop, &l->pace_t);
    l->op.page_stop = PAGES_END;
    pages_over(l);
}

void tp_leader_settle_pace_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct tp_leader *l = t->data;
    if (l->op.page_stop == PAGES_GO && (!l->leader || settle_yield(l)))
        l->op.page_stop = PAGES_END;
    if (l->op.page_stop != PAGES_GO) {
        pages_over(l); /* nothing in flight during a gap */
        return;
    }
    l->sst.paced += l->op.gap_paced;
    page_next(l);
}

static void on_page(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    int64_t now = tp_mono_ns() / 1000;
    int64_t gap = 0, wait = 0;
    bool late = false;
    int64_t sent = l->op.sent_us;
    int size = l->op.sent_size;
    l->op.inflight = false;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        if (l->op.page_stop != PAGES_FAIL)
            snprintf(l->op.err_code, sizeof(l->op.err_code), "%s", code);
        l->op.page_stop = PAGES_FAIL;
    } else {
        /* {'ok', done, credited, scanned, µs, the bucket's paid, µs in its players' writes,
         * players}: the next page is sized from this one's fixed part and time per bet credited
         * (a bet found paid costs a field of one HMGET), and the gap before the next from the
         * settlement's pace. */
        if (tp_reply_len(r) >= 5) {
            int64_t credited = tp_reply_integer(tp_reply_at(r, 2));
            int64_t us = tp_reply_integer(tp_reply_at(r, 4));
            bool split = tp_reply_len(r) >= 8;
            int64_t players_us = split ? tp_reply_integer(tp_reply_at(r, 6)) : 0;
            int64_t players = split ? tp_reply_integer(tp_reply_at(r, 7)) : 0;
            bool behind = false;
            if (tp_reply_len(r) >= 6)
                gap = pace_gap(l, tp_reply_integer(tp_reply_at(r, 5)), us, &behind, &late);
            tp_settle_pager_catchup(&l->pager, behind);
            wait = tp_settle_page_wait(gap, late);
            l->sst.late += late && !behind;
            if (wait > 0 && l->op.wait_test_us > 0)
                wait = TP_MAX(wait, l->op.wait_test_us);
            tp_settle_pager_page(&l->pager, credited, us, players_us, players);
            l->sst.page_us_max = TP_MAX(l->sst.page_us_max, us);
            l->sst.page_us_sum += us;
            l->sst.pages_slow += us > 2000;
            /* Every page, for a settlement's sizes over time (bench/README.md, Settlement,
             * session 10): what it was sent for and did, and what the pager made of it. */
            if (tp_log_enabled(TP_LOG_DEBUG))
                tp_log_debug(
                    MOD,
                    "settle page\tround=%lld bucket=%d size=%d credited=%lld "
                    "scanned=%lld us=%lld players_us=%lld players=%lld rtt_us=%lld next=%d "
                    "gap_us=%lld wait_us=%lld catchup=%d late=%d",
                    (long long)l->op.r.id, l->op.bucket, size, (long long)credited,
                    (long long)tp_reply_integer(tp_reply_at(r, 3)), (long long)us,
                    (long long)players_us, (long long)players, (long long)(now - sent),
                    tp_settle_pager_size(&l->pager), (long long)gap, (long long)wait, (int)behind,
                    (int)late);
        }
        l->sst.pages++;
        if (tp_reply_integer(tp_reply_at(r, 1)) == 1 && l->op.page_stop == PAGES_GO)
            l->op.page_stop = PAGES_DONE;
    }
    if (l->op.page_stop == PAGES_GO && (!l->leader || settle_yield(l)))
        l->op.page_stop = PAGES_END; /* the next step resumes from the plan's cursor */
    if (l->op.page_stop != PAGES_GO) {
        pages_over(l);
        return;
    }
    if (wait > 0) {
        l->op.gap_paced = gap > 0;
        l->sst.pace_us_sum += gap;
        ev_timer_set(&l->pace_t, (double)wait / 1e6, 0.);
        ev_timer_start(l->loop, &l->pace_t);
        return;
    }
    page_next(l);
}

static void on_plan(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        tp_leader_op_fail(l, "settle plan", code);
        return;
    }
    l->op.page_stop = PAGES_GO;
    /* {'ok', 1}: the plan was just written, so the bucket's keys of this round are new to the
     * pages; {'ok', 0}: a step resumes (or walks past) it. */
    tp_settle_pager_start(&l->pager, l->op.r.id, tp_reply_integer(tp_reply_at(r, 1)) == 1);
    page_next(l);
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
    if (l->sst.id != r->id) {
        memset(&l->sst, 0, sizeof(l->sst));
        l->sst.id = r->id;
    }
    l->sst.steps++;
    l->op.inflight = false;
    /* A test hook (docs/operations.md): every pacing gap this long, so that a test can act
     * during one. */
    l->op.pace_test_us = tp_config_test_hook("TP_TEST_SETTLE_PACE_GAP_MS", 1, 60000, 0) * 1000;
    /* Another (docs/operations.md): every wait before a page at least this long, pacing gap or
     * not, so that a test sees the leader wait (tests/integ/test_settle_page_wait.py). */
    l->op.wait_test_us = tp_config_test_hook("TP_TEST_SETTLE_PAGE_WAIT_MS", 1, 60000, 0) * 1000;
    settle_bucket(l);
}
