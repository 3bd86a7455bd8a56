/*
 * Parimutuel settlement arithmetic. Integer-only: T * r and stake * pot are formed in __int128
 * so no amount that fits in int64 can overflow; floor is plain division because every operand
 * is non-negative. The Lua settlement script must produce the same numbers (scripts/lua/README.md).
 */
#include "tickpool/game/settle.h"

#include "tickpool/base/common.h"

#include <math.h>

int tp_settle_plan(int64_t total, int64_t winning_stake, int rake_bps, struct tp_settle_plan *out)
{
    if (out == NULL || total < 0 || winning_stake < 0 || winning_stake > total || rake_bps < 0 ||
        rake_bps > TP_SETTLE_MAX_RAKE_BPS)
        return TP_EINVAL;
    out->total = total;
    out->winning_stake = winning_stake;
    if (winning_stake == 0) {
        /* Nobody backed the winning band: every stake goes back, the house takes nothing. */
        out->refund_all = true;
        out->rake = 0;
    } else {
        out->refund_all = false;
        int64_t rake = (int64_t)((__int128)total * rake_bps / 10000);
        /* Capping at T - W means pot >= W, so each winner gets at least the stake back. */
        out->rake = TP_MIN(rake, total - winning_stake);
    }
    out->pot = total - out->rake;
    return 0;
}

int64_t tp_settle_payout(int64_t stake, const struct tp_settle_plan *plan)
{
    if (plan == NULL || stake <= 0)
        return TP_EINVAL;
    if (plan->refund_all)
        return stake <= plan->total ? stake : TP_EINVAL;
    if (stake > plan->winning_stake)
        return TP_EINVAL;
    return (int64_t)((__int128)stake * plan->pot / plan->winning_stake);
}

int tp_settle_compute(int64_t total, int rake_bps, const int64_t *win_stakes, size_t n,
                      int64_t *payouts, struct tp_settle_receipt *out)
{
    if (out == NULL || (n > 0 && win_stakes == NULL))
        return TP_EINVAL;
    int64_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (win_stakes[i] <= 0 || win_stakes[i] > INT64_MAX - w)
            return TP_EINVAL;
        w += win_stakes[i];
    }
    struct tp_settle_plan plan;
    int rc = tp_settle_plan(total, w, rake_bps, &plan);
    if (rc != 0)
        return rc;
    out->total = total;
    out->winning_stake = w;
    out->rake = plan.rake;
    if (plan.refund_all) {
        out->payouts = 0;
        out->breakage = 0;
        out->refunds = total;
        return 0;
    }
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t p = tp_settle_payout(win_stakes[i], &plan);
        TP_ASSERT(p >= win_stakes[i]);
        if (payouts != NULL)
            payouts[i] = p;
        sum += p; /* sum <= pot: each floor(s * pot / W) <= s * pot / W, and the s sum to W */
    }
    TP_ASSERT(sum <= plan.pot);
    out->payouts = sum;
    out->breakage = plan.pot - sum;
    out->refunds = 0;
    return 0;
}

int tp_settle_cancelled(int64_t total, struct tp_settle_receipt *out)
{
    if (out == NULL || total < 0)
        return TP_EINVAL;
    *out = (struct tp_settle_receipt){.total = total, .refunds = total};
    return 0;
}

bool tp_settle_receipt_ok(const struct tp_settle_receipt *r)
{
    if (r == NULL)
        return false;
    if (r->total < 0 || r->winning_stake < 0 || r->rake < 0 || r->breakage < 0 || r->payouts < 0 ||
        r->refunds < 0 || r->winning_stake > r->total)
        return false;
    __int128 sum = (__int128)r->payouts + r->rake + r->breakage + r->refunds;
    if (sum != r->total)
        return false;
    if (r->refunds != 0)
        return r->refunds == r->total && r->payouts == 0 && r->rake == 0 && r->breakage == 0;
    return r->rake <= r->total - r->winning_stake && r->payouts >= r->winning_stake;
}

bool tp_settle_multiplier(int64_t total, int64_t pool_b, int rake_bps, double *out)
{
    struct tp_settle_plan plan;
    *out = NAN;
    if (pool_b <= 0 || tp_settle_plan(total, pool_b, rake_bps, &plan) != 0)
        return false;
    *out = (double)plan.pot / (double)pool_b;
    return true;
}

int tp_settle_multipliers(const int64_t *pools, int n_bands, int rake_bps, double *out)
{
    if (n_bands < 0 || (n_bands > 0 && (pools == NULL || out == NULL)))
        return TP_EINVAL;
    if (rake_bps < 0 || rake_bps > TP_SETTLE_MAX_RAKE_BPS)
        return TP_EINVAL;
    int64_t total = 0;
    for (int i = 0; i < n_bands; i++) {
        if (pools[i] < 0 || pools[i] > INT64_MAX - total)
            return TP_EINVAL;
        total += pools[i];
    }
    for (int i = 0; i < n_bands; i++)
        tp_settle_multiplier(total, pools[i], rake_bps, &out[i]);
    return 0;
}

int tp_settle_pager_size(const struct tp_settle_pager *p)
{
    return p->size > 0 ? p->size : TP_SETTLE_PAGE_START;
}

void tp_settle_pager_cold(struct tp_settle_pager *p)
{
    p->size = TP_MIN(tp_settle_pager_size(p), TP_SETTLE_PAGE_START);
    p->catchup = false;
}

void tp_settle_pager_start(struct tp_settle_pager *p, int64_t round, bool fresh)
{
    if (fresh || round != p->round)
        tp_settle_pager_cold(p);
    p->round = round;
}

void tp_settle_pager_forget(struct tp_settle_pager *p)
{
    p->round = 0;
}

void tp_settle_pager_catchup(struct tp_settle_pager *p, bool on)
{
    p->catchup = on;
}

int64_t tp_settle_pager_scan_us(const struct tp_settle_pager *p)
{
    return (int64_t)TP_SETTLE_PAGE_SCAN_US * (p->catchup ? TP_SETTLE_CATCHUP_X : 1);
}

/* The bets a page of `fixed_us` plus `ns_per_bet` each can hold within `aim_us`: the aim less
 * the fixed part, at least half of it, at that cost per bet. */
static int64_t pager_fit(int64_t aim_us, int64_t fixed_us, int64_t ns_per_bet)
{
    return TP_MAX(aim_us - fixed_us, aim_us / 2) * 1000 / ns_per_bet;
}

int tp_settle_pager_page(struct tp_settle_pager *p, int64_t bets, int64_t us, int64_t players_us,
                         int64_t players)
{
    int prev = tp_settle_pager_size(p);
    if (bets < 16 || us <= 0)
        return p->size = prev;
    players = TP_MIN(TP_MAX(players, 0), bets);
    int64_t fixed_us = TP_MIN(TP_MAX(players_us, 0), us) * (bets - players) / bets;
    p->ns_per_bet[p->next] = TP_MAX((us - fixed_us) * 1000 / bets, 1);
    p->fixed_us[p->next] = fixed_us;
    p->next = (p->next + 1) % TP_SETTLE_PAGER_WINDOW;
    p->n = TP_MIN(p->n + 1, TP_SETTLE_PAGER_WINDOW);
    /* Each page's own fit, both parts from that page, sorted (insertion: 16 at most); the lower
     * median is the next size. */
    int64_t aim_us = (int64_t)TP_SETTLE_PAGE_SCRIPT_US * (p->catchup ? TP_SETTLE_CATCHUP_X : 1);
    int64_t fits[TP_SETTLE_PAGER_WINDOW];
    for (int i = 0; i < p->n; i++) {
        int64_t f = pager_fit(aim_us, p->fixed_us[i], p->ns_per_bet[i]);
        int j = i;
        for (; j > 0 && fits[j - 1] > f; j--)
            fits[j] = fits[j - 1];
        fits[j] = f;
    }
    int64_t next = fits[(p->n - 1) / 2];
    next = TP_MIN(TP_MAX(next, (int64_t)prev / 2), (int64_t)prev * 2);
    return p->size = (int)TP_MAX(TP_MIN(next, TP_SETTLE_PAGE_MAX), TP_SETTLE_PAGE_MIN);
}

int64_t tp_settle_pace_gap(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed,
                           int64_t page_us)
{
    if (owed <= 0 || page_us <= 0 || paid < 0)
        return 0;
    int64_t gone = TP_MAX(now_ms - start_ms, 0);
    if (gone >= TP_SETTLE_PACE_MS)
        return 0;
    /* paid / owed >= gone / span, without division (amounts < 2^63, span small) */
    if ((__int128)paid * TP_SETTLE_PACE_MS < (__int128)owed * gone)
        return 0;
    return TP_MIN(page_us, (int64_t)TP_SETTLE_PACE_GAP_MAX_US);
}

int64_t tp_settle_page_wait(int64_t pace_us, bool late)
{
    pace_us = TP_MAX(pace_us, 0);
    return late ? pace_us : TP_MAX(pace_us, (int64_t)TP_SETTLE_PAGE_GAP_MIN_US);
}

/* Whether `paid` of `owed` is below a line that starts TP_SETTLE_CATCHUP_MS after the close and
 * owes everything `span_ms` later (a share over 1 counts as 1). False when nothing is owed. */
static bool below_line(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed,
                       int64_t span_ms)
{
    if (owed <= 0 || paid < 0)
        return false;
    int64_t due = TP_MIN(TP_MAX(now_ms - start_ms - TP_SETTLE_CATCHUP_MS, 0), span_ms);
    /* paid / owed < due / span, without division (amounts < 2^63, span small) */
    return (__int128)paid * span_ms < (__int128)owed * due;
}

bool tp_settle_behind(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed)
{
    /* The pacing line, TP_SETTLE_CATCHUP_MS later. */
    return below_line(start_ms, now_ms, paid, owed, TP_SETTLE_PACE_MS);
}

_Static_assert(TP_SETTLE_CATCHUP_MS > 0 && TP_SETTLE_CATCHUP_MS < TP_SETTLE_PACE_MS,
               "the late line starts after the close and before the pacing line's end");

bool tp_settle_late(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed)
{
    /* The late line: from TP_SETTLE_CATCHUP_MS after the close to the pacing line's end. */
    return below_line(start_ms, now_ms, paid, owed, TP_SETTLE_PACE_MS - TP_SETTLE_CATCHUP_MS);
}
