/*
 * Parimutuel settlement arithmetic, pure and integer-only (minor units): the plan (rake, pot,
 * refund), each winner's payout, the published receipt and its conservation check, and the
 * live multipliers shown while betting (the only floats, display only).
 */
#ifndef TP_SETTLE_H
#define TP_SETTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP_SETTLE_MAX_RAKE_BPS 10000

/** How a round's total T is split. pot = T - rake always: what winners share, or what is
 * refunded (refund_all, W = 0, rake 0). */
struct tp_settle_plan {
    int64_t total;
    int64_t winning_stake;
    int64_t rake;
    int64_t pot;
    bool refund_all;
};

/** The published receipt (sums, minor units); payouts + rake + breakage + refunds = total. */
struct tp_settle_receipt {
    int64_t total;
    int64_t winning_stake;
    int64_t rake;
    int64_t breakage;
    int64_t payouts;
    int64_t refunds;
};

/** Plan for total T, winning stake W and rake_bps r: W = 0 refunds all with no rake; else
 * rake = min(floor(T*r/10000), T - W), pot = T - rake. Returns 0 or TP_EINVAL (T < 0, W < 0,
 * W > T, r outside 0..10000). */
int tp_settle_plan(int64_t total, int64_t winning_stake, int rake_bps, struct tp_settle_plan *out);

/** What one bet of `stake` on the winning band gets back: floor(stake * pot / W); with
 * refund_all, the stake itself (the refund). Returns TP_EINVAL unless 0 < stake <= W (with
 * refund_all: <= T). */
int64_t tp_settle_payout(int64_t stake, const struct tp_settle_plan *plan);

/** Settles a round: total T, the winning band's individual stakes (each > 0, summing to W),
 * writes each payout into payouts[i] when payouts is not NULL and fills the receipt. Returns 0
 * or TP_EINVAL (bad stake, sum overflow, W > T, bad rake). */
int tp_settle_compute(int64_t total, int rake_bps, const int64_t *win_stakes, size_t n,
                      int64_t *payouts, struct tp_settle_receipt *out);

/** Receipt of a cancelled round: every stake refunded. Returns 0 or TP_EINVAL (total < 0). */
int tp_settle_cancelled(int64_t total, struct tp_settle_receipt *out);

/** Checks a receipt: no negative field, W <= T, payouts + rake + breakage + refunds = T;
 * a refunding receipt refunds all of T and nothing else; otherwise rake <= T - W and
 * payouts >= W (no winner loses). */
bool tp_settle_receipt_ok(const struct tp_settle_receipt *r);

/** Live multiplier of a band with pool `pool_b` out of `total`: (T - rake_if_it_won) / pool_b,
 * display only. Returns false (and *out = NaN) when pool_b is 0 or the inputs are invalid. */
bool tp_settle_multiplier(int64_t total, int64_t pool_b, int rake_bps, double *out);

/** Multipliers of every band from its pool (T = sum of pools): NaN where a pool is empty
 * (null on the wire). Returns 0 or TP_EINVAL (negative pool, overflow, bad rake). */
int tp_settle_multipliers(const int64_t *pools, int n_bands, int rake_bps, double *out);

/* Settlement pages (scripts/lua/settle_page.lua) are sized by Redis time: a typical page is to
 * hold Redis about TP_SETTLE_PAGE_HOLD_US, so a bet queued behind one waits about that. The hold
 * is the script and the work after it: its writes propagated and written to the AOF and its
 * reply written, about TP_SETTLE_PAGE_AFTER_PCT % of the script (bench/settle_hold.py: 16-21 %),
 * which the script cannot time, so the script is aimed at TP_SETTLE_PAGE_SCRIPT_US
 * (bench/README.md, Settlement, sessions 11-13). The script starts no HSCAN chunk after
 * TP_SETTLE_PAGE_SCAN_US (its writes follow), so a page stays short even when the size estimate
 * is stale. Each bucket's first page of a settlement is at most TP_SETTLE_PAGE_START bets: its
 * keys are new and its bets cost 2-4 times a warm page's. */
#define TP_SETTLE_PAGE_HOLD_US 1600
#define TP_SETTLE_PAGE_AFTER_PCT 20
#define TP_SETTLE_PAGE_SCRIPT_US (TP_SETTLE_PAGE_HOLD_US * 100 / (100 + TP_SETTLE_PAGE_AFTER_PCT))
#define TP_SETTLE_PAGE_SCAN_US 1000
#define TP_SETTLE_PAGE_MIN 32
#define TP_SETTLE_PAGE_MAX 4096
#define TP_SETTLE_PAGE_START 64
#define TP_SETTLE_PAGER_WINDOW 16

/* The page sizer. A page costs a fixed part plus a part per bet, which the script reports apart:
 * its players' writes (one command per key with every player of the page) are fixed for a page
 * that holds most of the bucket's players, and per bet for one whose bets are each a player's,
 * so the share (bets - players) / bets of them counts as fixed. Each of the last
 * TP_SETTLE_PAGER_WINDOW pages gives the bets that would fit the aim at its own two parts, and
 * the next page gets the lower median of those: the typical page fits the aim. Two mistakes
 * this avoids (bench/README.md, Settlement, session 13): the lowest fixed part and the lowest
 * cost per bet of the window come from different pages, and their sum is below any page's cost;
 * and the cheapest page is not the typical one (scripts ran 1.25-1.30x their aim at p50 sized
 * that way, session 12). Times are wall time (Redis has no CPU clock for scripts), so on a busy
 * host a page that lost the CPU mid-way looks many times slower than its work; as one page of
 * the window it moves the median by one place, and a real rise in cost (bigger stakes, more
 * players per page) shows once half the window has it; the script's scan budget bounds a page
 * meanwhile. Priced as one cost per bet, a smaller page looked dearer per bet and, aimed low,
 * the size spiralled down (session 11); with the fixed part apart, at least half the aim goes to
 * bets, so a page holds at least half the aim's worth of them whatever the fixed part. Zeroed =
 * no page seen yet. */
struct tp_settle_pager {
    int64_t ns_per_bet[TP_SETTLE_PAGER_WINDOW]; /* the part per bet, ns */
    int64_t fixed_us[TP_SETTLE_PAGER_WINDOW];   /* the fixed part, µs */
    int n, next;                                /* entries filled, next slot */
    int size;      /* the next page's size in bets (0: TP_SETTLE_PAGE_START) */
    bool catchup;  /* pages aimed TP_SETTLE_CATCHUP_X times higher (tp_settle_pager_catchup) */
    int64_t round; /* the round it sized pages for (tp_settle_pager_start; 0: none) */
};

/** The next page's size in bets (TP_SETTLE_PAGE_START before any page). */
int tp_settle_pager_size(const struct tp_settle_pager *p);

/** A bucket's first page of a settlement: the next page is at most TP_SETTLE_PAGE_START bets
 * (the pager then grows it by at most doubling per page), aimed as usual (not catching up). */
void tp_settle_pager_cold(struct tp_settle_pager *p);

/** A bucket's pages of round `round` (re)start, `fresh` when its plan was just written (no page
 * of that bucket ran yet): cold (tp_settle_pager_cold) for a fresh bucket or another round than
 * the last; a step resuming a round's settlement, or walking past its finished buckets, keeps
 * the size learned (each 250 ms step used to start again from TP_SETTLE_PAGE_START). */
void tp_settle_pager_start(struct tp_settle_pager *p, int64_t round, bool fresh);

/** Forgets the round: the next tp_settle_pager_start is cold (after a failed step, a lost
 * lease). */
void tp_settle_pager_forget(struct tp_settle_pager *p);

/** Whether the next pages catch up (tp_settle_behind): aimed at TP_SETTLE_CATCHUP_X times
 * TP_SETTLE_PAGE_SCRIPT_US, from the next tp_settle_pager_page on. */
void tp_settle_pager_catchup(struct tp_settle_pager *p, bool on);

/** The script's scan budget for the next page, µs: TP_SETTLE_PAGE_SCAN_US, TP_SETTLE_CATCHUP_X
 * times that while catching up. */
int64_t tp_settle_pager_scan_us(const struct tp_settle_pager *p);

/** Records a page that credited `bets` bets of `players` players in `us` µs, `players_us` of them
 * in its players' writes (0, 0 when not known), and returns the next page's size: the lower
 * median, over the window's pages, of the bets that fit TP_SETTLE_PAGE_SCRIPT_US less the page's
 * fixed part (at least half of it) at the page's cost per bet, at most halved or doubled per page,
 * within [TP_SETTLE_PAGE_MIN, TP_SETTLE_PAGE_MAX]. A page of fewer than 16 bets (a band's tail,
 * mostly fixed cost) changes nothing. */
int tp_settle_pager_page(struct tp_settle_pager *p, int64_t bets, int64_t us, int64_t players_us,
                         int64_t players);

/* Pacing. A settlement run at full speed keeps Redis busy with pages back to back, and on a
 * host with few cores the bets' own threads then wait for a CPU (bench/README.md, Settlement).
 * While a settlement is ahead of a straight line from its round's close to TP_SETTLE_PACE_MS
 * after it (its share of the amount owed paid at least the share of that span gone), the
 * leader leaves Redis idle between two pages for about a page's time, at most
 * TP_SETTLE_PACE_GAP_MAX_US; behind the line, or past it, pages go back to back as before. The
 * line ends 1.4 s after the close, not 1 s: settle-100k's pages take ~0.55 s of Redis, which at
 * 1 s left room to pace only 34-144 of ~400 pages and kept Redis on 60-78 % of a core for the
 * settlement's second; 1.4 s paces most of them and still ends within the 1.5 s settle target
 * (bench/README.md, Settlement, session 20). */
#define TP_SETTLE_PACE_MS 1400
#define TP_SETTLE_PACE_GAP_MAX_US 3000

/** µs to wait before the next page of a settlement of a round that closed at `start_ms`, now
 * `now_ms`, with `paid` of `owed` (minor units) paid so far and the last page's Redis time
 * `page_us`: min(page_us, TP_SETTLE_PACE_GAP_MAX_US) while paid / owed >= (now_ms - start_ms) /
 * TP_SETTLE_PACE_MS, else 0. 0 too when nothing is owed, the page took no time, or the span is
 * over. */
int64_t tp_settle_pace_gap(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed,
                           int64_t page_us);

/* A short gap after every page, ahead of the line or not. Bets that come during a page wait in
 * their worker for its call in flight to the same bucket, which Redis answers in the turn that
 * ran the page; sent from the page's reply at once, the next page reached Redis before their next
 * call (the leader's own worker writes it ahead of its bets' flush on the same connection, and
 * the other worker's call races it), so behind the line, pages back to back, a typical bet waited
 * for two pages and not one (settle-100k's figures: bench/README.md, Settlement, session 29).
 * TP_SETTLE_PAGE_GAP_MIN_US lets those calls reach Redis first. It is a floor, not the wait: the
 * worker's loop (libev on epoll) sleeps at least 1 ms for a shorter timer when nothing else wakes
 * it, so on a quiet loop the wait is ~1 ms, under load the next wake-up after 250 µs (what session
 * 29 measured). What bounds its cost to the settle time is the late line (tp_settle_late, below):
 * behind it pages go back to back, with no floor. */
#define TP_SETTLE_PAGE_GAP_MIN_US 250

/** µs the leader waits before the next page, from the pacing gap `pace_us` (tp_settle_pace_gap)
 * and whether the pages go back to back (`late`: tp_settle_late or tp_settle_behind): `pace_us`
 * then, else at least TP_SETTLE_PAGE_GAP_MIN_US. */
int64_t tp_settle_page_wait(int64_t pace_us, bool late);

/* Catching up. On a busy host a page's wall time rises with the host's load, not its work (at
 * load 8-10 a bet cost 8 µs of script against 4 on a quiet host), so pages sized on it shrink,
 * and every page pays again its players' writes (~41k instructions a player against ~16k a bet,
 * bench/settle_callgrind.py) and a round trip to the leader (1-2.5 ms at that load): settle-100k
 * took 1.7-1.8 s in ~590 pages of ~170 bets (bench/README.md, Settlement, sessions 14-15). A
 * settlement more than TP_SETTLE_CATCHUP_MS behind the pacing line (or not done TP_SETTLE_PACE_MS
 * + TP_SETTLE_CATCHUP_MS after the close) aims its pages at TP_SETTLE_CATCHUP_X times the
 * script's aim, the scan budget with it. On a quiet host a settlement keeps to the line and its
 * pages to the aim; the catch-up's longer pages come only with a host (or a backlog) that holds the
 * settlement back. */
#define TP_SETTLE_CATCHUP_MS 100
#define TP_SETTLE_CATCHUP_X 2

/** True when a settlement of a round that closed at `start_ms` has, at `now_ms`, paid less than
 * the line from the close to TP_SETTLE_PACE_MS after it owed TP_SETTLE_CATCHUP_MS ago: paid /
 * owed < (now_ms - start_ms - TP_SETTLE_CATCHUP_MS) / TP_SETTLE_PACE_MS (a share over 1 counts
 * as 1, so a settlement not done by then is behind). False when nothing is owed. */
bool tp_settle_behind(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed);

/* Late. Catching up alone let a settlement lag the pacing line by TP_SETTLE_CATCHUP_MS to its
 * end: one whose Redis needed most of the span for its pages (session 29's host: 1.25-1.37 CPU-s
 * of Redis for settle-100k's), with the floor's 250 µs-1 ms after every page in between, drifted
 * to that lag, held it, and ended TP_SETTLE_PACE_MS + TP_SETTLE_CATCHUP_MS = 1.5 s after the
 * close, the settle target itself (1,501-1,510 ms; bench/README.md, Settlement, session 30). A
 * settlement behind the late line, a straight line from TP_SETTLE_CATCHUP_MS after the close to
 * the pacing line's end, sends its pages back to back without the floor, at the usual aim: the
 * same lag allowed at the start (the cold first pages), less and less after, none at the end, so
 * it ends about when the pacing line does. Not the catch-up's doubled aim: with catching up
 * itself on that line (tried first), a settlement near the line's end, where the lag allowed is
 * a few ms, caught up, and in one run its last tenth's pages held Redis 2.6 ms each back to back,
 * the bets' p99 of that 500 ms 9.1 ms against 3.5-4.7 in the others (session 30). */

/** True when a settlement of a round that closed at `start_ms` has, at `now_ms`, paid less than
 * the late line owes: paid / owed < (now_ms - start_ms - TP_SETTLE_CATCHUP_MS) /
 * (TP_SETTLE_PACE_MS - TP_SETTLE_CATCHUP_MS) (a share over 1 counts as 1, so a settlement not
 * done TP_SETTLE_PACE_MS after the close is late). False when nothing is owed. */
bool tp_settle_late(int64_t start_ms, int64_t now_ms, int64_t paid, int64_t owed);

#endif
