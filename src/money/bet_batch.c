/*
 * Bet submission in batches (see tickpool/money/bet.h, tp_bet_submit): every worker collects the
 * bets that arrive in one loop iteration and sends them per (bucket, round) as one bet_batch.lua
 * call, so Redis pays the fixed cost of a script call, the argument checks and the aggregated
 * writes once per batch instead of once per bet.
 *
 * The flush runs from two ev_prepare watchers: libev calls them after every event of the
 * iteration was handled and before it polls again, so a lone bet is sent in the iteration it
 * arrived in. The first has the highest priority, so the bets read in the iteration's events
 * leave before the worker's own prepare hook writes its slice of a fan-out (up to
 * TP_WORKER_SLICE_NS); the second, of the lowest, sends what that hook's deferred work (pipelined
 * requests) submitted. After a flush the commands are written to Redis at once
 * (tp_store_flush) rather than when the loop next polls, which would be after that slice too. A
 * group that reaches TP_SCRIPT_BATCH_MAX bets or BATCH_BYTES bytes of arguments is sent at once.
 * A worker keeps at most CALLS_PER_BUCKET calls in flight per bucket: while one is out, the
 * bucket's new bets wait in its open group and leave together once it is answered, so batches
 * grow with the load by themselves; after a call of two or more bets, the next leaves no sooner
 * than CALL_GAP_NS after it, so they grow before Redis is saturated too.
 * Each bet keeps its own answer: the script answers one reply per bet, in order, and each goes to
 * that bet's callback.
 *
 * State is per worker (a worker slot filled by tp_bet_install's init hook): the limiter of
 * limits.max_inflight_bets and the open groups; only that worker's loop thread touches it.
 *
 * A bet the script refuses with round_not_found may be on an archived round (its keys left
 * Redis): bet_replay.c asks Postgres for its answer before it is given. Or its bucket's copy of
 * the round is missing (on a Redis Cluster, a promoted replica that missed the write): the
 * leader is asked to re-write the copies (tp_leader_ask_repair), at most every REPAIR_EVERY_S
 * per worker, and only for a round whose record says open, once the copy has stayed missing for
 * REPAIR_AFTER_S of a bet's wait or went missing again. To tell the two apart, the round's own
 * record is read first (one HMGET per group): while it says open and the round's lock is ahead, the
 * round IS open and only the copy is missing. Such a bet then waits for the copy (COPY_WAIT_MAX_S
 * at most and never past the round's lock, on a timer: the worker goes on) and is sent once more,
 * as it was (with its skip_filter), when it is back. Every group that found the same bucket's
 * copy of the same round missing joins one wait, which looks for the copy every COPY_POLL_S
 * with one HEXISTS for all of them. A copy is missing for a moment in the normal
 * course on a Redis Cluster: /rounds/current shows a round once round_boundary.lua has run,
 * while its bucket copies live on other masters and are written after it, and a slot moving
 * (`redis-cli --cluster reshard`) holds its bucket's copy back for as long as the slot is in
 * migration (TRYAGAIN, retried with back-off). The bet script refused the bet without writing
 * anything, so sending it again with its key is safe; it keeps its limiter entry while it waits.
 * A copy still missing after the wait (or again on the second call) is answered 503 unavailable
 * (the client retries with its key once the copy is back), not round_not_found nor Postgres's
 * round_not_open.
 * A bet the script answers "check" (its key is in no round Redis holds, but the filter of
 * archived rounds' keys says maybe) is looked up in Postgres: a replay, a conflict, or, when
 * Postgres holds no bet of the key (a false positive), the bet is sent again in a call that
 * skips the filter. Only that bet waits for Postgres; the others of its batch are answered.
 */
#include "bet_internal.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/leader.h"
#include "tickpool/money/bet.h"
#include "tickpool/money/limiter.h"
#include "tickpool/net/timerfd.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <errno.h>
#include <ev.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "bet"
/* Bytes of per-bet arguments one call carries at most: a batch of long keys is sent before it
 * makes one large Redis request. A bet is counted as what bet_batch_args (src/store/scripts.c)
 * sends for it: its idempotency key, the filter word and mask (8 bytes), three numbers of at most
 * 20 digits (user id, stake; band and shard together), and the key names it may add to KEYS
 * (its player's ubets key and its filter shard's two, BET_KEY_NAMES_BYTES), not RESP's framing.
 * The 65-byte request hash counted here until session 10 has not been sent since 3ed6e40. */
#define BATCH_BYTES (32 * 1024)
#define BET_KEY_NAMES_BYTES (3 * 32)
/* Groups one worker holds open in one iteration (distinct bucket and round pairs); one more is
 * sent at once instead of waiting. */
#define GROUPS_MAX 64
/* Script calls one worker keeps in flight per bucket. A bet that finds none in flight (any low
 * rate) leaves in the iteration it arrived in; while one is out, the bucket's bets wait for its
 * answer (one call's time) and go together. Without this, every iteration sent its own small
 * call whatever Redis was doing: open loop at 8,000 WebSocket bets/s, 2.2 bets per call and
 * 48 µs of Redis CPU per bet against ~21 µs at the ceiling's ~45 bets per call, and as Redis
 * fell behind the small calls queued in it instead of growing. A full group goes at once. */
#define CALLS_PER_BUCKET 1
/* After a call of at least CALL_GAP_MIN_BETS bets, the bucket's next call leaves CALL_GAP_NS after
 * it at the earliest, even when it was answered sooner. With one call in flight, a worker whose
 * calls Redis answers fast sends small ones back to back: open loop at 8,000 bets/s on a quiet
 * machine, 2.5 bets per call and Redis near its limit on the script's fixed cost per call
 * (~300k of a one-bet call's ~410k instructions; 2.5 bets per call ~260k instructions per bet,
 * 4 per call ~210k, 8 ~160k: bench/README.md "Session 10"). The gap lets the batch grow before
 * Redis is saturated rather than only after. A call of one bet sets no gap, so at low rates
 * (http-bets 1,000/s: 1.1 bets per call) a bet still leaves in the iteration it arrived; a gap
 * adds at most CALL_GAP_NS to a bet's wait, inside the 2 ms p50 of issue 11's 70 % target. Its
 * end is a timerfd (tickpool/net/timerfd.h), not an ev_timer: libev's epoll backend waits at
 * least 1 ms for a timer, which would turn the rest of a 0.5 ms gap into a whole ms whenever no
 * other event comes (clock: CLOCK_MONOTONIC, so a step of the wall clock cannot stretch a gap). */
#define CALL_GAP_NS 500000
#define CALL_GAP_MIN_BETS 2
/* Seconds between two repair requests of one worker (the leader steps every 250 ms). */
#define REPAIR_EVERY_S 0.25
/* A bet that found its bucket's copy of the open round missing waits this long at most for the
 * copy (the leader re-writes it within a step of 250 ms once asked; a reshard holds it back for
 * as long as the slot migrates), looking every COPY_POLL_S. */
#define COPY_WAIT_MAX_S 1.0
#define COPY_POLL_S 0.02
/* A copy missing for a moment is the normal course right after a boundary (the copies are
 * written after round_boundary.lua, tens of ms later under load): the leader is asked to repair
 * it only once a wait has lasted this long. Asking at once cost the leader an extra step right
 * after most boundaries, while it was announcing the new round. */
#define REPAIR_AFTER_S 0.1
/* After every NETLOG_FOLD_CALLS of its bet calls to a bucket a worker sends net_fold.lua there:
 * bet_batch.lua appends each call's stakes to the bucket's leaderboard log (`netlog`) instead of
 * writing `net`, and the fold moves them into `net`, one ZMSCORE + ZADD of the log's distinct
 * players (at the HTTP ceiling ~200 for 3,200 bets, where each call wrote ~100). So the log holds
 * at most about NETLOG_FOLD_CALLS entries per worker (a worker's calls in flight aside), and a
 * fold holds Redis about as long as one large bet call does. Every 16 calls: −4.4 % of a bet's
 * Redis instructions at the ceiling's shape, every 32: −5.3 % (bench/README.md "Session 31:
 * the leaderboard's stakes in a log"). */
#define NETLOG_FOLD_CALLS 32

_Static_assert(TP_BET_KEY_MAX <= TP_KEYS_IDEM_MAX, "every valid idempotency key has a Redis key");

/* One submitted bet waiting for its answer. */
struct pending_bet {
    struct batcher *b;
    tp_bet_cb cb;
    void *ud;
    int64_t user;
    struct tp_bet_req req;
    bool skip_filter;  /* Postgres found no archived bet of its key: sent without the filter */
    bool copy_waited;  /* already sent again after waiting for its bucket's round copy */
    double copy_until; /* while waiting for its bucket's copy: ev_now by which it must be back */
    size_t klen;
    char key[TP_BET_KEY_MAX];
};

/* Bets of one bucket and round, in arrival order: collected, then one call in flight. */
struct group {
    struct batcher *b;
    int bucket;
    int64_t round_id;
    bool skip_filter; /* bets Postgres found no archived bet of: no "check" answer */
    size_t n, bytes;
    struct pending_bet *bets[TP_SCRIPT_BATCH_MAX];
};

/* The worker's state. */
struct batcher {
    struct tp_worker *w;
    struct tp_limiter *limiter;
    ev_prepare flush_first, flush; /* highest and lowest priority: see the top comment */
    double repair_at;        /* when this worker last asked the leader for a repair (ev_now) */
    struct copy_wait *waits; /* bets waiting for a bucket's copy of a round, one per pair */
    int nbuckets;            /* game.buckets at start: the size of the per-bucket arrays */
    unsigned *calls;         /* script calls in flight per bucket */
    int64_t *sent_ns;        /* tp_mono_ns when each bucket's last call left */
    size_t *sent_n;          /* bets each bucket's last call carried */
    unsigned *since_fold;    /* bet calls sent per bucket since this worker's last net_fold.lua */
    struct tp_timerfd *gap;  /* the earliest end of a gap a group waits for; NULL: no gap */
    int64_t gap_due;         /* when gap fires (tp_mono_ns); 0 when it is not set */
    int ngroups;
    struct group *open[GROUPS_MAX];
};

/* The worker slot holding struct batcher (tp_bet_install hands it out). */
static size_t slot = SIZE_MAX;

/* --- Answers --- */

static enum tp_bet_code code_from_script(const char *s)
{
    for (int c = TP_BET_OK + 1; c <= TP_BET_UNAVAILABLE; c++)
        if (strcmp(s, tp_bet_code_name((enum tp_bet_code)c)) == 0)
            return (enum tp_bet_code)c;
    return TP_BET_UNAVAILABLE;
}

/* Reads bet `p`'s answer, the reply's values `i` and `i + 1` (bet_batch.lua's header): bet_id
 * and balance (bet_id < 0: a replay), or a code and 0 ("check": *check set). Round, band and stake
 * are the request's: a replay is one only when they are the same. False if malformed. */
static bool read_answer(const struct tp_store_reply *r, size_t i, const struct pending_bet *p,
                        struct tp_bet_result *res, bool *check)
{
    memset(res, 0, sizeof(*res));
    *check = false;
    const struct tp_store_reply *first = tp_reply_at(r, i), *second = tp_reply_at(r, i + 1);
    if (first == NULL || second == NULL || tp_reply_type(second) != TP_REPLY_INTEGER)
        return false;
    if (tp_reply_type(first) != TP_REPLY_INTEGER) {
        const char *c = tp_reply_str(first, NULL);
        if (c == NULL || tp_reply_integer(second) != 0)
            return false;
        if (strcmp(c, "check") == 0) {
            *check = true;
            return true;
        }
        res->code = code_from_script(c);
        return res->code != TP_BET_UNAVAILABLE;
    }
    int64_t id = tp_reply_integer(first);
    if (id == 0 || id == INT64_MIN)
        return false;
    *res = (struct tp_bet_result){.code = TP_BET_OK,
                                  .bet_id = id < 0 ? -id : id,
                                  .round_id = p->req.round_id,
                                  .band = p->req.band,
                                  .stake = p->req.stake,
                                  .balance = tp_reply_integer(second),
                                  .replayed = id < 0};
    return true;
}

/* Answers bet `p` with `res` and frees it. */
static void answer(struct batcher *b, struct pending_bet *p, const struct tp_bet_result *res)
{
    tp_limiter_release(b->limiter, p->user, p->key, p->klen);
    tp_metrics_add(TP_METRIC_BETS_INFLIGHT, -1);
    p->cb(res, p->ud);
    free(p);
}

/* Postgres's answer for a bet on a round Redis no longer has. */
static void answer_archived(const struct tp_bet_result *res, void *ud)
{
    struct pending_bet *p = ud;
    answer(p->b, p, res);
}

/* Bets of one group the script refused with round_not_found, waiting for the round's record. */
struct missing {
    struct batcher *b;
    int bucket;
    int64_t round_id;
    size_t n;
    struct pending_bet *bets[TP_SCRIPT_BATCH_MAX];
};

/* Bets waiting for one bucket's copy of one open round (every group that found it missing),
 * each until its own copy_until; one HEXISTS in flight or one timer at a time. */
struct copy_wait {
    struct copy_wait *next; /* b->waits */
    struct batcher *b;
    int bucket;
    int64_t round_id;
    double since; /* ev_now when the first of its bets began to wait */
    ev_timer poll;
    size_t n, cap;
    struct pending_bet **bets;
};

static void queue(struct batcher *b, struct pending_bet *p);

/* Takes `w` out of b->waits and frees it (its bets were handed on). */
static void copy_wait_free(struct copy_wait *w)
{
    for (struct copy_wait **at = &w->b->waits; *at != NULL; at = &(*at)->next)
        if (*at == w) {
            *at = w->next;
            break;
        }
    free(w->bets);
    free(w);
}

/* The copy is back (`back`): every bet is sent once more. Else the bets whose wait is over
 * (`all`: every bet) are answered 503; false when none is left waiting. */
static bool copy_wait_end(struct copy_wait *w, bool back, bool all)
{
    struct tp_bet_result res = {.code = TP_BET_UNAVAILABLE};
    double now = ev_now(tp_worker_loop(w->b->w));
    size_t keep = 0;
    for (size_t i = 0; i < w->n; i++) {
        struct pending_bet *p = w->bets[i];
        if (!back && !all && now + COPY_POLL_S < p->copy_until) {
            w->bets[keep++] = p;
            continue;
        }
        p->copy_waited = true;
        if (back)
            queue(w->b, p);
        else
            answer(w->b, p, &res);
    }
    w->n = keep;
    return keep > 0;
}

/* Asks the leader to re-write the copies of `round_id`, at most every REPAIR_EVERY_S per worker:
 * tp:{g}:repair is one key, the last write wins. Only for a round its record says open, so a bet
 * naming a round that never was cannot overwrite (nor use up the worker's turn for) a genuine
 * request. */
static void ask_repair(struct batcher *b, int64_t round_id)
{
    double now = ev_now(tp_worker_loop(b->w));
    if (now - b->repair_at >= REPAIR_EVERY_S) {
        b->repair_at = now;
        tp_leader_ask_repair(tp_store_of(b->w), round_id);
    }
}

static void on_copy_state(int err, const struct tp_store_reply *r, void *ud)
{
    struct copy_wait *w = ud;
    struct ev_loop *loop = tp_worker_loop(w->b->w);
    bool back = err == 0 && tp_reply_type(r) == TP_REPLY_INTEGER && tp_reply_integer(r) == 1;
    if (err == 0 && !back && ev_now(loop) - w->since >= REPAIR_AFTER_S)
        ask_repair(w->b, w->round_id);
    /* The store closing (the worker stops) ends every bet's wait at once. Handing bets on cannot
     * add to `w` meanwhile: bets join a wait only from a round record's reply. */
    if (copy_wait_end(w, back, err == TP_ECLOSED)) {
        ev_timer_set(&w->poll, COPY_POLL_S, 0.0);
        ev_timer_start(loop, &w->poll);
        return;
    }
    copy_wait_free(w);
}

static void on_copy_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct copy_wait *w = t->data;
    struct tp_key k;
    if (tp_store_command(tp_store_of(w->b->w), on_copy_state, w, "HEXISTS %s state",
                         tp_keys_round_state(&k, w->bucket, w->round_id)) != 0)
        on_copy_state(TP_EUNAVAIL, NULL, w);
}

/* Holds `p` (its round open until `locks_at`) until its bucket's copy is back, in the wait of
 * that bucket and round (a new one when none runs). */
static void copy_wait_join(struct batcher *b, int bucket, int64_t round_id, struct pending_bet *p,
                           int64_t locks_at)
{
    struct ev_loop *loop = tp_worker_loop(b->w);
    double left = (double)(locks_at - tp_now_ms()) / 1000.0;
    p->copy_until = ev_now(loop) + TP_MIN(COPY_WAIT_MAX_S, left);
    struct copy_wait *w = b->waits;
    while (w != NULL && (w->bucket != bucket || w->round_id != round_id))
        w = w->next;
    if (w == NULL) {
        w = tp_xcalloc(1, sizeof(*w));
        w->b = b;
        w->bucket = bucket;
        w->round_id = round_id;
        w->since = ev_now(loop);
        w->next = b->waits;
        b->waits = w;
        ev_timer_init(&w->poll, on_copy_poll, COPY_POLL_S, 0.0);
        w->poll.data = w;
        ev_timer_start(loop, &w->poll);
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : TP_SCRIPT_BATCH_MAX;
        w->bets = tp_xrealloc(w->bets, w->cap * sizeof(*w->bets));
    }
    w->bets[w->n++] = p;
}

/* The round's record (state, locks_at): open with its lock ahead means only the bucket's copy is
 * missing; anything else (no record: archived; another state; Redis down) goes the Postgres
 * way, which answers archived bets, round_not_open or round_not_found as before. */
static void on_round_record(int err, const struct tp_store_reply *r, void *ud)
{
    struct missing *m = ud;
    struct batcher *b = m->b;
    const char *st = err == 0 ? tp_reply_str(tp_reply_at(r, 0), NULL) : NULL;
    const char *lk = err == 0 ? tp_reply_str(tp_reply_at(r, 1), NULL) : NULL;
    int64_t locks_at = 0;
    bool open = st != NULL && strcmp(st, "open") == 0 && lk != NULL &&
                tp_parse_i64(lk, &locks_at) && tp_now_ms() < locks_at;
    bool again = false; /* a bet found the copy missing after its wait had seen it back */
    for (size_t i = 0; i < m->n; i++) {
        struct pending_bet *p = m->bets[i];
        struct tp_bet_result res = {.code = TP_BET_UNAVAILABLE};
        if (open && !p->copy_waited) {
            copy_wait_join(b, m->bucket, m->round_id, p, locks_at); /* then sent once more */
            continue;
        }
        again = again || open;
        if (!open && tp_bet_replay_archived(b->w, p->user, &p->req, p->key, p->klen,
                                            answer_archived, p) == 0)
            continue;
        if (!open)
            res.code = TP_BET_ROUND_NOT_FOUND;
        answer(b, p, &res);
    }
    /* The waits ask for a repair themselves once the copy stays missing (on_copy_state). */
    if (again)
        ask_repair(b, m->round_id);
    free(m);
}

/* Postgres's answer for a key the filter may hold: the answer, or NULL (no archived bet of the
 * key: the bet is admitted by a call that skips the filter). */
static void answer_checked(const struct tp_bet_result *res, void *ud)
{
    struct pending_bet *p = ud;
    if (res != NULL) {
        answer(p->b, p, res);
    } else {
        p->skip_filter = true;
        queue(p->b, p);
    }
}

/* The script's reply: two values per bet of the group, in order. Anything else (an error, -OOM,
 * a short array) answers every bet 503, logged: each bet is all in or all out, so a retry with
 * the same key is safe. */
static void on_batch(int err, const struct tp_store_reply *r, void *ud)
{
    struct group *g = ud;
    struct batcher *b = g->b;
    if (g->bucket < b->nbuckets)
        b->calls[g->bucket]--; /* the bucket's waiting group leaves at the next prepare */
    bool whole = err == 0 && tp_reply_type(r) == TP_REPLY_ARRAY && tp_reply_len(r) == 2 * g->n;
    if (err != 0)
        tp_log_warn(MOD, "bet batch failed\terr=%s\tbets=%zu", tp_strerror(err), g->n);
    else if (tp_reply_type(r) == TP_REPLY_ERROR)
        tp_log_error(MOD, "bet batch script error\treply=\"%.200s\"", tp_reply_str(r, NULL));
    else if (!whole)
        tp_log_error(MOD, "unexpected bet batch reply\tbets=%zu", g->n);
    struct missing *m = NULL;
    for (size_t i = 0; i < g->n; i++) {
        struct tp_bet_result res;
        bool check = false;
        struct pending_bet *p = g->bets[i];
        if (!whole || !read_answer(r, 2 * i, p, &res, &check) || (check && g->skip_filter)) {
            if (whole)
                tp_log_error(MOD, "unexpected bet answer\tindex=%zu", i);
            memset(&res, 0, sizeof(res));
            res.code = TP_BET_UNAVAILABLE;
            check = false;
        }
        if (check) {
            if (tp_bet_check_archived(b->w, p->user, &p->req, p->key, p->klen, answer_checked, p) !=
                0) {
                res.code = TP_BET_UNAVAILABLE; /* no Postgres reader: retry with the same key */
                answer(b, p, &res);
            }
            continue;
        }
        /* A missing copy or an archived round: the round's record tells which. */
        if (res.code == TP_BET_ROUND_NOT_FOUND) {
            if (m == NULL) {
                m = tp_xcalloc(1, sizeof(*m));
                m->b = b;
                m->bucket = g->bucket;
                m->round_id = g->round_id;
            }
            m->bets[m->n++] = p;
            continue;
        }
        answer(b, p, &res);
    }
    struct tp_key k;
    if (m != NULL &&
        tp_store_command(tp_store_of(b->w), on_round_record, m, "HMGET %s state locks_at",
                         tp_keys_round(&k, m->round_id)) != 0)
        on_round_record(TP_EUNAVAIL, NULL, m);
    free(g);
}

/* --- Flushing --- */

static void on_fold(int err, const struct tp_store_reply *r, void *ud)
{
    int bucket = (int)(intptr_t)ud;
    if (err != 0)
        tp_log_warn(MOD, "leaderboard fold failed\tbucket=%d\terr=%s", bucket, tp_strerror(err));
    else if (tp_reply_type(r) == TP_REPLY_ERROR)
        tp_log_error(MOD, "leaderboard fold script error\tbucket=%d\treply=\"%.200s\"", bucket,
                     tp_reply_str(r, NULL));
}

/* One more bet call went to `bucket`: every NETLOG_FOLD_CALLS, its leaderboard log is folded (sent
 * after the call, on the same connection). A fold not sent is the next one's to do. */
static void count_fold(struct batcher *b, int bucket)
{
    if (++b->since_fold[bucket] < NETLOG_FOLD_CALLS)
        return;
    struct tp_script_net_fold_args a = {.bucket = bucket, .limit = 0};
    if (tp_script_net_fold(tp_store_of(b->w), &a, on_fold, (void *)(intptr_t)bucket) == 0)
        b->since_fold[bucket] = 0;
}

/* Sends group `g` (taken out of the open list by the caller) as one script call. */
static void send_group(struct batcher *b, struct group *g)
{
    const struct tp_config *cfg = tp_worker_config(b->w);
    struct tp_script_batch_bet bets[TP_SCRIPT_BATCH_MAX];
    for (size_t i = 0; i < g->n; i++) {
        const struct pending_bet *p = g->bets[i];
        bets[i] = (struct tp_script_batch_bet){.user_id = p->user,
                                               .band = p->req.band,
                                               .stake = p->req.stake,
                                               .idem_key = p->key,
                                               .idem_len = p->klen};
    }
    /* now_ms is taken when the batch leaves: a bet is never admitted later than the clock says. */
    struct tp_script_bet_batch_args args = {
        .round_id = g->round_id,
        .now_ms = tp_now_ms(),
        .nbands = cfg->game.n_band_edges + 1,
        .min_stake = cfg->game.min_stake,
        .max_stake = cfg->game.max_stake,
        .idem_ttl_s = tp_keys_idem_ttl_s(),
        .bucket = g->bucket,
        .buckets = cfg->game.buckets,
        .skip_filter = g->skip_filter,
        .shard_bytes = tp_keys_idem_shard_bytes(cfg->game.idem_filter, cfg->game.buckets),
        .bets = bets,
        .n = g->n,
    };
    int bucket = g->bucket;
    int rc = tp_script_bet_batch(tp_store_of(b->w), &args, on_batch, g);
    if (rc == 0 && bucket < b->nbuckets) {
        b->calls[bucket]++;
        b->sent_ns[bucket] = tp_mono_ns();
        b->sent_n[bucket] = g->n;
        count_fold(b, bucket);
    }
    if (rc != 0) {
        /* The script never ran: each bet is answered now, as if Redis were down. */
        tp_log_warn(MOD, "bet batch not sent\terr=%s\tbets=%zu", tp_strerror(rc), g->n);
        struct tp_bet_result res = {.code = TP_BET_UNAVAILABLE};
        for (size_t i = 0; i < g->n; i++)
            answer(b, g->bets[i], &res);
        free(g);
    }
}

/* 0 when `bucket`'s group may leave now; else when it may (tp_mono_ns), or INT64_MAX while the
 * bucket's call is in flight (its answer lets the group go). */
static int64_t bucket_free_at(const struct batcher *b, int bucket, int64_t now)
{
    if (bucket >= b->nbuckets)
        return 0;
    if (b->calls[bucket] >= CALLS_PER_BUCKET)
        return INT64_MAX;
    if (b->gap == NULL || b->sent_n[bucket] < CALL_GAP_MIN_BETS)
        return 0;
    int64_t at = b->sent_ns[bucket] + CALL_GAP_NS;
    return at > now ? at : 0;
}

/* Turns the gap off for good: stops its watcher and closes its timerfd (no-op when already off). */
static void gap_close(struct batcher *b)
{
    tp_timerfd_free(b->gap);
    b->gap = NULL;
    b->gap_due = 0;
}

/* Sets the gap's timer to fire at `wake` unless it fires sooner already. When it cannot be set,
 * the gap is off for good (logged): a group held without a wake-up would wait for the next
 * event. */
static void gap_arm(struct batcher *b, int64_t wake, int64_t now)
{
    if (b->gap_due != 0 && b->gap_due <= wake)
        return;
    if (tp_timerfd_arm(b->gap, wake - now, false) == 0) {
        b->gap_due = wake;
        return;
    }
    tp_log_warn(MOD, "bet call gap off: timerfd_settime failed\terr=%s", strerror(errno));
    gap_close(b);
}

/* Sends every open group whose bucket is free (bucket_free_at); the others stay open, gap_fd set
 * for the earliest gap's end. Returns how many it sent. */
static int flush_all(struct batcher *b)
{
    /* Sending may answer bets at once (Redis down), and an answer may submit a new bet: take
     * the list first, so what is added meanwhile waits for the next flush. */
    int64_t now = tp_mono_ns(), wake = INT64_MAX;
    int n = b->ngroups, nsend = 0;
    struct group *send[GROUPS_MAX];
    b->ngroups = 0;
    for (int i = 0; i < n; i++) {
        struct group *g = b->open[i];
        int64_t at = bucket_free_at(b, g->bucket, now);
        if (at == 0) {
            send[nsend++] = g;
            continue;
        }
        b->open[b->ngroups++] = g;
        if (at != INT64_MAX && at < wake)
            wake = at;
    }
    if (wake != INT64_MAX)
        gap_arm(b, wake, now);
    for (int i = 0; i < nsend; i++)
        send_group(b, send[i]);
    return nsend;
}

/* A gap is over: the prepare watchers, still active while a group is open, send its group. */
static void on_gap(void *ud)
{
    struct batcher *b = ud;
    b->gap_due = 0;
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct batcher *b = w->data;
    /* An answer given while sending (Redis down) may queue a new bet; send it now too, since
     * the loop is about to block and would hold it until the next event. */
    for (int i = 0; i < 4 && b->ngroups > 0; i++) {
        if (flush_all(b) == 0)
            break; /* what is left waits for its bucket's call in flight */
    }
    tp_store_flush(tp_store_of(b->w)); /* also a full group sent as it filled */
    if (b->ngroups == 0) {
        ev_prepare_stop(loop, &b->flush_first);
        ev_prepare_stop(loop, &b->flush);
    }
}

/* The open group of (bucket, round, skip_filter), or a new one; NULL-free: a full list sends its
 * oldest. */
static struct group *group_for(struct batcher *b, int bucket, int64_t round_id, bool skip_filter)
{
    for (int i = 0; i < b->ngroups; i++)
        if (b->open[i]->bucket == bucket && b->open[i]->round_id == round_id &&
            b->open[i]->skip_filter == skip_filter)
            return b->open[i];
    if (b->ngroups == GROUPS_MAX) {
        struct group *old = b->open[0];
        memmove(b->open, b->open + 1, (size_t)(GROUPS_MAX - 1) * sizeof(b->open[0]));
        b->ngroups--;
        send_group(b, old);
    }
    struct group *g = tp_xcalloc(1, sizeof(*g));
    g->b = b;
    g->bucket = bucket;
    g->round_id = round_id;
    g->skip_filter = skip_filter;
    b->open[b->ngroups++] = g;
    return g;
}

/* Takes `g` out of the open list and sends it. */
static void send_now(struct batcher *b, struct group *g)
{
    for (int i = 0; i < b->ngroups; i++) {
        if (b->open[i] == g) {
            memmove(b->open + i, b->open + i + 1, (size_t)(b->ngroups - i - 1) * sizeof(g));
            b->ngroups--;
            break;
        }
    }
    send_group(b, g);
}

/* Adds `p` to its group, sent in this loop iteration (at once when full). A bet Postgres
 * cleared (skip_filter), or one back from waiting for its bucket's copy, comes back here keeping
 * its limiter entry. */
static void queue(struct batcher *b, struct pending_bet *p)
{
    const struct tp_config *cfg = tp_worker_config(b->w);
    struct group *g =
        group_for(b, tp_bucket_of(p->user, cfg->game.buckets), p->req.round_id, p->skip_filter);
    g->bets[g->n++] = p;
    g->bytes += p->klen + 8 + 3 * 20 + BET_KEY_NAMES_BYTES;
    if (g->n == TP_SCRIPT_BATCH_MAX || g->bytes >= BATCH_BYTES)
        send_now(b, g);
    ev_prepare_start(tp_worker_loop(b->w), &b->flush_first);
    ev_prepare_start(tp_worker_loop(b->w), &b->flush);
}

/* --- Worker set-up and submission --- */

static void init_worker(struct tp_worker *w, void *ud)
{
    (void)ud;
    const struct tp_config *cfg = tp_worker_config(w);
    struct batcher *b = tp_xcalloc(1, sizeof(*b));
    b->w = w;
    b->limiter = tp_limiter_new(TP_MAX(cfg->limits.max_inflight_bets, 1));
    b->nbuckets = cfg->game.buckets;
    b->calls = tp_xcalloc((size_t)TP_MAX(b->nbuckets, 1), sizeof(*b->calls));
    b->sent_ns = tp_xcalloc((size_t)TP_MAX(b->nbuckets, 1), sizeof(*b->sent_ns));
    b->sent_n = tp_xcalloc((size_t)TP_MAX(b->nbuckets, 1), sizeof(*b->sent_n));
    b->since_fold = tp_xcalloc((size_t)TP_MAX(b->nbuckets, 1), sizeof(*b->since_fold));
    /* Weak: the gap alone keeps no loop running. */
    b->gap = tp_timerfd_new(tp_worker_loop(w), CLOCK_MONOTONIC, TP_TIMERFD_WEAK, on_gap, b);
    if (b->gap == NULL)
        tp_log_warn(MOD, "bet call gap off: no timerfd\terr=%s", strerror(errno));
    ev_prepare_init(&b->flush_first, on_prepare);
    ev_set_priority(&b->flush_first, EV_MAXPRI); /* before the worker's fan-out slice */
    b->flush_first.data = b;
    ev_prepare_init(&b->flush, on_prepare);
    ev_set_priority(&b->flush, EV_MINPRI); /* after every other prepare of the iteration */
    b->flush.data = b;
    tp_worker_slot_set(w, slot, b);
}

/* The worker exits (its connections closed): the gap's watcher and timerfd go, and so does the
 * rest once no bet is left (the limiter holds one entry per bet until it is answered). A bet
 * still waiting holds `b`: its Redis or Postgres call is ended after this hook (the store is
 * installed first, so it is freed after), and that answer reads `b`; the process exits next. */
static void exit_worker(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct batcher *b = tp_worker_slot_get(w, slot);
    if (b == NULL)
        return;
    gap_close(b);
    if (tp_limiter_inflight(b->limiter) > 0)
        return;
    ev_prepare_stop(tp_worker_loop(w), &b->flush_first);
    ev_prepare_stop(tp_worker_loop(w), &b->flush);
    tp_limiter_free(b->limiter);
    free(b->calls);
    free(b->sent_ns);
    free(b->sent_n);
    free(b->since_fold);
    free(b);
    tp_worker_slot_set(w, slot, NULL);
}

void tp_bet_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(init_worker, NULL);
    tp_worker_on_exit(exit_worker, NULL);
}

int tp_bet_submit(struct tp_worker *w, int64_t user_id, const struct tp_bet_req *req,
                  const char *key, size_t len, tp_bet_cb cb, void *ud)
{
    struct batcher *b = w != NULL && slot != SIZE_MAX ? tp_worker_slot_get(w, slot) : NULL;
    if (b == NULL || user_id < 1 || tp_bet_check_key(key, len) != TP_BET_OK || cb == NULL)
        return TP_EINVAL;
    if (!tp_store_is_connected(tp_store_of(w)))
        return TP_EUNAVAIL;
    int rc = tp_limiter_acquire(b->limiter, user_id, key, len);
    if (rc != 0)
        return rc;

    struct pending_bet *p = tp_xmalloc(sizeof(*p));
    p->b = b;
    p->cb = cb;
    p->ud = ud;
    p->user = user_id;
    p->req = *req;
    p->skip_filter = false;
    p->copy_waited = false;
    p->copy_until = 0;
    p->klen = len;
    memcpy(p->key, key, len);
    tp_metrics_add(TP_METRIC_BETS_INFLIGHT, 1);
    queue(b, p);
    return 0;
}
