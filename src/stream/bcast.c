/*
 * Cross-process broadcaster (see tickpool/stream/bcast.h). Each worker keeps a dedicated subscriber
 * tp_store on its own loop (a subscribed Redis connection accepts no other commands) and turns
 * every message of tp:bcast into one refcounted frame shared by all of its ready sockets, so a
 * message costs one allocation per worker whatever the number of sockets.
 *
 * Payouts: when a `round` message says settled or cancelled, the worker collects the distinct
 * user ids of its sockets, groups them by bucket and asks Redis with two HMGETs per bucket (the
 * round's payout hash and the balances), then queues `payout` to each socket of each user with
 * a record. Settlement writes payout:<id> before the round turns settled, so the hash is
 * complete when the message arrives.
 *
 * Publishing: the leader's observer runs in the leader's process on its worker's loop and
 * publishes with the worker's command store, the connection the leader's scripts use, so a
 * `round` is published after the script that changed the round. Each `round` carries the
 * current pair (rounds: {open, live}) read after that script, so a boundary, one script in
 * Redis, is one consistent state in every message announcing it. Announcements are loaded and
 * published one at a time, in the order the leader reported them. A boundary's pair is read
 * right behind its script (one round trip with the writes at T) and held until the leader says
 * the boundary is written, or dropped if it failed. Publications sent from a reply callback are
 * written before the worker's next fan-out slice (tp_store_flush_soon).
 *
 * A `round` that announces no boundary (settled, cancelled) rides the next beat: the worker holds
 * it in its fan-out (tp_worker_fanout_hold) and every socket gets it in the same write as that
 * beat, instead of a write of its own to every socket (at 10,000 sockets a second full fan-out of
 * ~25 ms of CPU per worker at every boundary; bench/README.md "Boundaries", session 20). It waits
 * at most one tick_ms from its receipt (held_timer): a game that stopped ticking (nothing live)
 * still gets it, alone. A boundary's pair is still queued at once, ahead of the beats.
 *
 * Beat lag (tickpool_beat_lag_seconds): a tick's `ts` is the leader's wall-clock instant of that
 * price. Frames are only written to the sockets by the worker's ev_prepare hook, just before the
 * loop blocks, so the lag is taken by a second prepare watcher of the lowest priority, which
 * libev runs after the worker's: the frames are in the kernel by then, unless the fan-out is
 * still being written in slices (tp_worker_output_pending), in which case it waits for the
 * last slice.
 */
#include "tickpool/stream/bcast.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/leader.h"
#include "tickpool/money/access.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/loop_watch.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/workers_written.h"
#include "tickpool/net/ws.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/stream/protocol.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "bcast"
/* Ticks dispatched within one loop iteration whose lag is pending (more are measured at once). */
#define BEATS_MAX 8
/* The same for `round` messages' delay (a boundary sends two); past it, a message's delay is
 * observed at its receipt. Only the metric and the debug line: the boundary a worker marks
 * written is kept apart (written_t_ms), whatever the number of messages. */
#define ROUNDS_MAX 4

/* A boundary's `round` message handed to the sockets, its delivery not yet observed. */
struct round_sent {
    int64_t id, t_ms, received_ns;
    int sockets;
    struct tp_conn_bcast_mark out; /* its writes are made once this is out */
    /* This thread's time on a CPU and waiting for one at its receipt (debug only), so the line
     * can tell a slow fan-out from a worker the machine left without a core. */
    struct tp_loop_watch_sched at;
};

struct bcast {
    struct tp_worker *w;
    const struct tp_bcast_sessions *sessions;
    struct tp_store *sub;   /* subscriber connection */
    struct tp_store *store; /* the worker's command store (payout lookups) */
    int buckets;
    int64_t last_paid_round; /* payouts already announced up to this round id */
    ev_prepare flushed;      /* after the worker's writes: observes beat_ts[] */
    int64_t beat_ts[BEATS_MAX];
    int nbeats;
    /* The first pending beat's receipt and this thread's schedstat then (debug line). */
    int64_t beat_rx_ns;
    struct tp_loop_watch_sched beat_at;
    struct round_sent rounds[ROUNDS_MAX];
    int nrounds;
    /* The latest boundary whose open round's `round` message was handed to the sockets, to mark
     * written (tickpool/net/workers_written.h) once the writes queued at once are out; 0 when
     * none waits. See round_sent. */
    int64_t written_t_ms;
    struct tp_conn_bcast_mark written_out; /* that message's writes are made once this is out */
    /* Leader side: odds waiting to ride on the next beat (odds_held), or sent alone by
     * odds_timer when that beat is late. */
    int tick_ms;
    int64_t last_tick_mono; /* tp_mono_ms() of the leader's last tick, 0 before any */
    bool odds_held;
    struct tp_protocol_odds odds;
    ev_timer odds_timer;
    /* A `round` is held for the next beat (hold_round): how long it may wait for one. */
    ev_timer held_timer;
    /* Leader side: rounds to announce, oldest first; the head is being loaded. */
    struct announce *ann_head, *ann_tail;
};

/* A round announcement waiting for (or in) its load: the round and the current pair. */
struct announce {
    struct announce *next;
    struct bcast *bc;
    int64_t id;
    int64_t pair_open, pair_live; /* a boundary's pair, known without reading it (0: read it) */
    bool have_open, have_live;
    /* A boundary's: read at once, published once it is written (leader_boundary_end). */
    enum { ANN_GO, ANN_HELD, ANN_DROP } hold;
    bool loaded; /* held and read: waiting for leader_boundary_end */
    struct tp_game_round open, live;
};

/* The worker slot holding struct bcast (tp_bcast_install hands it out). */
static size_t slot = SIZE_MAX;
/* The sockets' owner, as given to tp_bcast_install (static, shared by every worker). */
static const struct tp_bcast_sessions *sessions;

/* This worker's broadcaster, NULL before tp_bcast_start (or without tp_bcast_install). */
static struct bcast *bcast_of(const struct tp_worker *w)
{
    return slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, slot);
}

/* --- Forwarding --- */

struct forward {
    const struct tp_bcast_sessions *sessions;
    struct tp_ws_frame *f;
    int sockets; /* sockets it was queued to */
};

static void send_ready(struct tp_conn *c, void *ud)
{
    struct forward *fw = ud;
    if (fw->sessions->ready(c) && tp_conn_ws_broadcast_frame(c, fw->f) == 0)
        fw->sockets++;
}

/* --- Payouts --- */

struct payout_user {
    int64_t uid;
    bool has_amount, has_balance;
    int64_t amount, balance;
};

struct payout_op {
    struct bcast *bc;
    int64_t round_id;
    struct payout_user *users; /* sorted by uid */
    size_t n, cap;
    int pending;
};

static int cmp_user(const void *a, const void *b)
{
    int64_t x = ((const struct payout_user *)a)->uid, y = ((const struct payout_user *)b)->uid;
    return x < y ? -1 : x > y;
}

static struct payout_user *find_user(struct payout_op *op, int64_t uid)
{
    struct payout_user key = {.uid = uid};
    return bsearch(&key, op->users, op->n, sizeof(key), cmp_user);
}

static void collect_user(struct tp_conn *c, void *ud)
{
    struct payout_op *op = ud;
    int64_t uid = op->bc->sessions->user(c);
    if (uid <= 0)
        return;
    if (op->n == op->cap) {
        op->cap = op->cap ? op->cap * 2 : 32;
        op->users = realloc(op->users, op->cap * sizeof(*op->users));
        TP_ASSERT(op->users != NULL);
    }
    op->users[op->n++] = (struct payout_user){.uid = uid};
}

static void send_payout(struct tp_conn *c, void *ud)
{
    struct payout_op *op = ud;
    int64_t uid = op->bc->sessions->user(c);
    struct payout_user *u = uid > 0 ? find_user(op, uid) : NULL;
    if (u == NULL || !u->has_amount)
        return;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_payout(&b, op->round_id, u->amount, u->has_balance, u->balance);
    tp_conn_ws_send(c, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
}

static void payout_done(struct payout_op *op)
{
    if (--op->pending > 0)
        return;
    tp_worker_foreach_ws(op->bc->w, send_payout, op);
    free(op->users);
    free(op);
}

/* One HMGET reply for the users of one bucket, in the order they were asked. */
struct payout_req {
    struct payout_op *op;
    bool balances; /* false: the payout hash */
    size_t n;
    int64_t uids[];
};

static void on_hmget(int err, const struct tp_store_reply *r, void *ud)
{
    struct payout_req *rq = ud;
    if (err == 0 && tp_reply_len(r) == rq->n) {
        for (size_t i = 0; i < rq->n; i++) {
            const char *v = tp_reply_str(tp_reply_at(r, i), NULL);
            struct payout_user *u = find_user(rq->op, rq->uids[i]);
            if (v == NULL || u == NULL)
                continue;
            if (rq->balances) {
                u->balance = strtoll(v, NULL, 10);
                u->has_balance = true;
            } else {
                u->amount = strtoll(v, NULL, 10);
                u->has_amount = true;
            }
        }
    }
    struct payout_op *op = rq->op;
    free(rq);
    payout_done(op);
}

/* Submits HMGET `key` uid… for the users of bucket `b`. */
static void hmget_bucket(struct payout_op *op, int b, bool balances)
{
    size_t n = 0;
    for (size_t i = 0; i < op->n; i++)
        if (tp_bucket_of(op->users[i].uid, op->bc->buckets) == b)
            n++;
    if (n == 0)
        return;
    struct payout_req *rq = tp_xmalloc(sizeof(*rq) + n * sizeof(int64_t));
    rq->op = op;
    rq->balances = balances;
    rq->n = n;
    const char **argv = tp_xmalloc((n + 2) * sizeof(*argv));
    char *nums = tp_xmalloc(n * 24);
    struct tp_key key;
    argv[0] = "HMGET";
    argv[1] = balances ? tp_keys_bal(&key, b) : tp_keys_payout(&key, b, op->round_id);
    size_t k = 0;
    for (size_t i = 0; i < op->n; i++) {
        if (tp_bucket_of(op->users[i].uid, op->bc->buckets) != b)
            continue;
        rq->uids[k] = op->users[i].uid;
        snprintf(nums + k * 24, 24, "%lld", (long long)op->users[i].uid);
        argv[k + 2] = nums + k * 24;
        k++;
    }
    op->pending++;
    if (tp_store_commandargv(op->bc->store, on_hmget, rq, (int)(n + 2), argv, NULL) != 0) {
        op->pending--;
        free(rq);
    }
    free(argv);
    free(nums);
}

static void start_payouts(struct bcast *bc, int64_t round_id)
{
    if (round_id <= bc->last_paid_round || bc->store == NULL)
        return;
    bc->last_paid_round = round_id;
    struct payout_op *op = tp_xcalloc(1, sizeof(*op));
    op->bc = bc;
    op->round_id = round_id;
    tp_worker_foreach_ws(bc->w, collect_user, op);
    if (op->n == 0) {
        free(op);
        return;
    }
    qsort(op->users, op->n, sizeof(*op->users), cmp_user);
    size_t j = 0; /* dedupe */
    for (size_t i = 0; i < op->n; i++)
        if (j == 0 || op->users[j - 1].uid != op->users[i].uid)
            op->users[j++] = op->users[i];
    op->n = j;
    op->pending = 1; /* held until every command is submitted */
    for (int b = 0; b < bc->buckets; b++) {
        hmget_bucket(op, b, false);
        hmget_bucket(op, b, true);
    }
    payout_done(op);
}

/* --- Beat lag, round delay --- */

static void observe_beat(int64_t ts_ms)
{
    tp_metrics_observe_ns(TP_METRIC_FAMILY_BEAT_LAG, 0, tp_now_ns() - ts_ms * 1000000);
}

/* A boundary's `round` message is in this worker's sockets: its delay from T, in the histogram
 * and (debug) in the log with the receipt's, and how long the worker ran on a CPU and waited
 * for one in between (schedstat), so each stage can be told apart. */
static void observe_round(const struct round_sent *r)
{
    int64_t now = tp_now_ns(), t_ns = r->t_ms * 1000000;
    tp_metrics_observe_ns(TP_METRIC_FAMILY_ROUND_DELAY, TP_METRICS_ROUND_STAGE_DELIVERED,
                          now - t_ns);
    if (!tp_log_enabled(TP_LOG_DEBUG))
        return;
    struct tp_loop_watch_sched s = tp_loop_watch_sched_now();
    /* Why a worker read the message late: the longest wait in epoll and the longest iteration
     * of its loop between T and the receipt (tickpool/net/loop_watch.h). */
    struct tp_loop_watch_span lw = tp_loop_watch_window(t_ns, r->received_ns);
    tp_log_debug(MOD,
                 "round delivered\tround=%lld received_us=%lld delivered_us=%lld sockets=%d "
                 "oncpu_us=%lld waitcpu_us=%lld poll_max_us=%lld poll_end_us=%lld "
                 "busy_max_us=%lld busy_at_us=%lld",
                 (long long)r->id, (long long)((r->received_ns - t_ns) / 1000),
                 (long long)((now - t_ns) / 1000), r->sockets,
                 (long long)((s.run_ns - r->at.run_ns) / 1000),
                 (long long)((s.wait_ns - r->at.wait_ns) / 1000), (long long)(lw.poll_ns / 1000),
                 (long long)(lw.poll_ns ? (lw.poll_end_ns - t_ns) / 1000 : 0),
                 (long long)(lw.busy_ns / 1000),
                 (long long)(lw.busy_ns ? (lw.busy_at_ns - t_ns) / 1000 : 0));
}

/* The beats just written (debug): from the first one's receipt to the last socket's write, how
 * long this worker's loop was on a CPU and waiting for one (schedstat), so a viewers run can tell
 * a walk that costs more from a worker the machine left without a core (bench/README.md
 * "Viewers", session 17). beats > 1: newer beats came before the walk ended (newest wins). */
static void log_beat_walk(const struct bcast *bc)
{
    if (!tp_log_enabled(TP_LOG_DEBUG))
        return;
    int64_t now = tp_now_ns();
    struct tp_loop_watch_sched s = tp_loop_watch_sched_now();
    struct tp_loop_watch_span lw = tp_loop_watch_window(bc->beat_rx_ns, now);
    tp_log_debug(MOD,
                 "beat written\tts=%lld beats=%d sockets=%zu received_us=%lld walk_us=%lld "
                 "oncpu_us=%lld waitcpu_us=%lld busy_max_us=%lld poll_max_us=%lld",
                 (long long)bc->beat_ts[bc->nbeats - 1], bc->nbeats, tp_worker_nws(bc->w),
                 (long long)((bc->beat_rx_ns - bc->beat_ts[0] * 1000000) / 1000),
                 (long long)((now - bc->beat_rx_ns) / 1000),
                 (long long)((s.run_ns - bc->beat_at.run_ns) / 1000),
                 (long long)((s.wait_ns - bc->beat_at.wait_ns) / 1000),
                 (long long)(lw.busy_ns / 1000), (long long)(lw.poll_ns / 1000));
}

/* Rounds are observed once their own writes are made (tp_worker_bcast_out: not those queued
 * behind them since, such as the next announcement's; the beats handed out in slices come after
 * them, tp_conn_run_fanout), beats once everything is written. */
static void on_flushed(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    struct bcast *bc = p->data;
    int left = 0;
    for (int i = 0; i < bc->nrounds; i++) {
        if (tp_worker_bcast_out(bc->w, bc->rounds[i].out))
            observe_round(&bc->rounds[i]);
        else
            bc->rounds[left++] = bc->rounds[i];
    }
    bc->nrounds = left;
    if (bc->written_t_ms > 0 && tp_worker_bcast_out(bc->w, bc->written_out)) {
        /* the leader's hold looks (tp_leader_step_held) */
        tp_workers_written_set(tp_worker_index(bc->w), bc->written_t_ms);
        bc->written_t_ms = 0;
    }
    if (tp_worker_output_pending(bc->w))
        return; /* the fan-out is written in slices: the beat is not out yet */
    for (int i = 0; i < bc->nbeats; i++)
        observe_beat(bc->beat_ts[i]);
    if (bc->nbeats > 0)
        log_beat_walk(bc);
    bc->nbeats = 0;
    ev_prepare_stop(loop, p);
}

/* A tick was handed to the sockets: its lag is taken once they were written (on_flushed). */
static void beat_sent(struct bcast *bc, int64_t ts)
{
    if (bc->nbeats == BEATS_MAX) {
        observe_beat(ts);
        return;
    }
    if (bc->nbeats == 0) {
        bc->beat_rx_ns = tp_now_ns();
        bc->beat_at = tp_loop_watch_sched_now();
    }
    bc->beat_ts[bc->nbeats++] = ts;
    ev_prepare_start(tp_worker_loop(bc->w), &bc->flushed);
}

/*
 * A boundary's `round` message (T: the boundary it announces) was handed to the sockets. Its
 * delay is observed once it is written (on_flushed). The boundary is marked written then only
 * for an open round's message: the boundaries the leader holds its next step for announce a
 * pair, the round locked at T first and the round opening at T last (leader_boundary; the
 * planner opens the next round at the lock's time), and the subscriber may read the two in
 * separate iterations, so once the open round's message is out the pair is. A boundary without
 * an open round is not held (leader_boundary.c, hold_next_step) and needs no mark. The mark is
 * one number, the latest T, so no burst of announcements (a leader catching up on missed
 * boundaries while this worker still writes the first pair) marks a boundary early.
 */
static void round_sent(struct bcast *bc, const struct tp_protocol_peek *pk, int64_t received_ns,
                       int sockets)
{
    struct round_sent r = {pk->round_id,
                           pk->round_t_ms,
                           received_ns,
                           sockets,
                           tp_worker_bcast_mark(bc->w),
                           tp_loop_watch_sched_now()};
    if (pk->round_open && pk->round_t_ms >= bc->written_t_ms) {
        bc->written_t_ms = pk->round_t_ms;
        bc->written_out = r.out;
    }
    ev_prepare_start(tp_worker_loop(bc->w), &bc->flushed);
    if (bc->nrounds == ROUNDS_MAX)
        observe_round(&r);
    else
        bc->rounds[bc->nrounds++] = r;
}

/* --- Dispatch --- */

/* No beat came within a tick_ms of a held `round`: it goes alone. */
static void on_held_late(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct bcast *bc = t->data;
    tp_log_debug(MOD, "held round written without a beat");
    tp_worker_fanout_release(bc->w);
}

/* Holds `round` message `f` for the next beat; false when the fan-out holds too many already
 * (it is queued at once, behind them). */
static bool hold_round(struct bcast *bc, struct tp_ws_frame *f)
{
    if (!tp_worker_fanout_hold(bc->w, f, bc->sessions->ready))
        return false;
    if (!ev_is_active(&bc->held_timer)) {
        ev_timer_set(&bc->held_timer, (double)bc->tick_ms / 1000.0, 0.0);
        ev_timer_start(tp_worker_loop(bc->w), &bc->held_timer);
    }
    return true;
}

void tp_bcast_dispatch(struct tp_worker *w, const uint8_t *data, size_t len)
{
    struct bcast *bc = bcast_of(w);
    struct tp_protocol_peek pk;
    int rc = tp_protocol_peek(data, len, &pk);
    if (rc == TP_ENOTFOUND) {
        tp_log_warn(MOD, "dropped a broadcast without t\tlen=%zu", len);
        return;
    }
    if (rc != 0) {
        tp_log_warn(MOD, "dropped a malformed broadcast\tlen=%zu", len);
        return;
    }
    if (pk.kind == TP_PROTOCOL_ACCOUNT) { /* internal: for this worker's token checks only */
        tp_access_apply(w, &pk.account);
        return;
    }
    if (bc == NULL)
        return;
    int64_t received_ns = tp_now_ns();
    if (pk.kind == TP_PROTOCOL_ROUND && pk.round_t_ms > 0)
        tp_metrics_observe_ns(TP_METRIC_FAMILY_ROUND_DELAY, TP_METRICS_ROUND_STAGE_RECEIVED,
                              received_ns - pk.round_t_ms * 1000000);
    enum tp_ws_kind kind = pk.kind == TP_PROTOCOL_TICK
                               ? (pk.tick_odds ? TP_WS_KIND_TICK_ODDS : TP_WS_KIND_TICK)
                           : pk.kind == TP_PROTOCOL_ODDS  ? TP_WS_KIND_ODDS
                           : pk.kind == TP_PROTOCOL_ROUND ? TP_WS_KIND_ROUND
                                                          : TP_WS_KIND_DIRECT;
    struct forward fw = {bc->sessions, tp_ws_frame_new(data, len, kind), 0};
    if (tp_ws_kind_droppable(kind)) { /* beats: handed out in slices, newest wins */
        tp_worker_fanout(w, fw.f, bc->sessions->ready);
        ev_timer_stop(tp_worker_loop(w), &bc->held_timer); /* the held `round`s go with it */
    } else if (kind == TP_WS_KIND_ROUND && pk.round_t_ms == 0 && hold_round(bc, fw.f)) {
        /* settled or cancelled: rides the next beat */
    } else { /* queued at once, ahead of the beats still to be handed out */
        tp_worker_foreach_ws(w, send_ready, &fw);
    }
    tp_ws_frame_unref(fw.f);
    if (pk.kind == TP_PROTOCOL_TICK && pk.tick_ts > 0)
        beat_sent(bc, pk.tick_ts);
    if (pk.kind == TP_PROTOCOL_ROUND && pk.round_t_ms > 0)
        round_sent(bc, &pk, received_ns, fw.sockets);
    /* Only the final announcement carries the receipt: a round being cancelled is shown as
     * cancelled before its refunds are credited, and looking up payouts then would find none
     * and skip the refunded players. */
    if (pk.kind == TP_PROTOCOL_ROUND && pk.round_paid)
        start_payouts(bc, pk.round_id);
}

static void on_sub(int err, const struct tp_store_reply *r, void *ud)
{
    struct bcast *bc = ud;
    if (err == TP_EUNAVAIL) {
        /* Resubscribed after a drop: messages may have been lost meanwhile. */
        tp_log_info(MOD, "resubscribed: resyncing sockets");
        bc->sessions->resync(bc->w);
        tp_access_reload(bc->w);
        return;
    }
    if (err != 0 || tp_reply_len(r) < 3)
        return;
    const char *kind = tp_reply_str(tp_reply_at(r, 0), NULL);
    if (kind != NULL && strcmp(kind, "subscribe") == 0) {
        /* Subscribed: from now on no account change is missed, so read the current state. */
        tp_access_reload(bc->w);
        return;
    }
    size_t len = 0;
    const char *payload = tp_reply_str(tp_reply_at(r, 2), &len);
    if (kind == NULL || strcmp(kind, "message") != 0 || payload == NULL)
        return;
    tp_bcast_dispatch(bc->w, (const uint8_t *)payload, len);
}

/* --- Publishing --- */

static void on_publish(int err, const struct tp_store_reply *r, void *ud)
{
    (void)err, (void)r, (void)ud;
}

int tp_bcast_publish(struct tp_store *store, const void *msg, size_t len)
{
    /* An argument vector, not a format: the leader publishes every tick and odds change. */
    const char *argv[] = {"PUBLISH", TP_KEYS_BCAST_CHANNEL, msg};
    const size_t lens[] = {sizeof("PUBLISH") - 1, sizeof(TP_KEYS_BCAST_CHANNEL) - 1, len};
    return tp_store_commandargv(store, on_publish, NULL, 3, argv, lens);
}

/* --- The leader's announcements: a round (with its live pools) and the current pair --- */

static void announce_next(struct bcast *bc);

/* The head announcement is done (published or dropped): the next one starts. */
static void announce_pop(struct bcast *bc)
{
    struct announce *a = bc->ann_head;
    bc->ann_head = a->next;
    if (bc->ann_head == NULL)
        bc->ann_tail = NULL;
    free(a);
    announce_next(bc);
}

static void announce_publish(struct announce *a, const struct tp_game_round *r)
{
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_round(&b, r, a->have_open ? &a->open : NULL, a->have_live ? &a->live : NULL);
    tp_bcast_publish(a->bc->store, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
    tp_store_flush_soon(a->bc->w); /* sent from a reply: not after the next fan-out slice */
    /* An open or live round announces its boundary T (opens_at, locks_at). */
    enum tp_round_state st = tp_round_state_public(r->state);
    int64_t t_ms = st == TP_ROUND_OPEN ? r->t.opens_at : st == TP_ROUND_LIVE ? r->t.locks_at : 0;
    if (t_ms > 0) {
        int64_t d = tp_now_ns() - t_ms * 1000000;
        tp_metrics_observe_ns(TP_METRIC_FAMILY_ROUND_DELAY, TP_METRICS_ROUND_STAGE_PUBLISHED, d);
        tp_log_debug(MOD, "round published\tround=%lld published_us=%lld", (long long)r->id,
                     (long long)(d / 1000));
    }
}

static void on_announce_round(int err, const struct tp_game_round *r, void *ud)
{
    struct announce *a = ud;
    if (err == 0)
        announce_publish(a, r);
    else
        tp_log_warn(MOD, "round not announced\tround=%lld err=%d", (long long)a->id, err);
    announce_pop(a->bc);
}

static void announce_loaded(struct announce *a);

static void on_announce_current(int err, const struct tp_game_round *open,
                                const struct tp_game_round *live, void *ud)
{
    struct announce *a = ud;
    if (err != 0) {
        tp_log_warn(MOD, "round not announced\tround=%lld err=%d", (long long)a->id, err);
        announce_pop(a->bc);
        return;
    }
    if ((a->have_open = open != NULL))
        a->open = *open;
    if ((a->have_live = live != NULL))
        a->live = *live;
    if (a->hold == ANN_HELD) { /* read behind the boundary's script: goes once it is written */
        a->loaded = true;
        return;
    }
    if (a->hold == ANN_DROP) {
        announce_pop(a->bc);
        return;
    }
    announce_loaded(a);
}

/* The head announcement's pair is read: it goes out. */
static void announce_loaded(struct announce *a)
{
    /* A round of the pair is announced as read with it; any other is read on its own. The
     * announcements queued meanwhile for rounds of the same pair (a boundary reports its lock
     * and its open back to back) go out with this read, without one of their own. */
    struct bcast *bc = a->bc;
    for (;;) {
        const struct tp_game_round *r = a->have_open && a->open.id == a->id   ? &a->open
                                        : a->have_live && a->live.id == a->id ? &a->live
                                                                              : NULL;
        if (r == NULL)
            break;
        announce_publish(a, r);
        struct announce *next = a->next;
        if (next == NULL || !((a->have_open && a->open.id == next->id) ||
                              (a->have_live && a->live.id == next->id))) {
            announce_pop(bc);
            return;
        }
        /* The next one takes this read over. */
        next->have_open = a->have_open;
        next->have_live = a->have_live;
        next->open = a->open;
        next->live = a->live;
        bc->ann_head = next;
        free(a);
        a = next;
    }
    if (tp_game_round_load(bc->store, bc->buckets, a->id, on_announce_round, a) != 0)
        announce_pop(bc);
}

static void announce_next(struct bcast *bc)
{
    while (bc->ann_head != NULL) {
        struct announce *a = bc->ann_head;
        if (a->hold == ANN_DROP) {
            bc->ann_head = a->next;
            free(a);
            continue;
        }
        int rc = a->pair_open > 0
                     ? tp_game_round_load_pair(bc->store, bc->buckets, a->pair_open, a->pair_live,
                                               on_announce_current, a)
                     : tp_game_round_load_current(bc->store, bc->buckets, on_announce_current, a);
        if (rc == 0)
            return;
        bc->ann_head = a->next;
        free(a);
    }
    bc->ann_tail = NULL;
}

static struct announce *announce_add(struct bcast *bc, int64_t id)
{
    struct announce *a = tp_xcalloc(1, sizeof(*a));
    a->bc = bc;
    a->id = id;
    if (bc->ann_tail != NULL)
        bc->ann_tail->next = a;
    else
        bc->ann_head = a;
    bc->ann_tail = a;
    return a;
}

static void leader_round(void *ud, int64_t id)
{
    struct bcast *bc = ud;
    bool idle = bc->ann_head == NULL;
    announce_add(bc, id);
    if (idle)
        announce_next(bc);
}

/* A boundary: the lock and the open go out from one read of the pair the leader is writing,
 * rounds and pools in one round trip (the open takes the lock's read over). The read is sent at
 * once, behind the leader's script on the same connection, and held until leader_boundary_end. */
static void leader_boundary(void *ud, int64_t open_id, int64_t live_id)
{
    struct bcast *bc = ud;
    bool idle = bc->ann_head == NULL;
    struct announce *a = announce_add(bc, live_id);
    a->pair_open = open_id;
    a->pair_live = live_id;
    a->hold = ANN_HELD;
    announce_add(bc, open_id)->hold = ANN_HELD;
    if (idle)
        announce_next(bc);
}

/* The boundary of the held announcements is written (they go, as soon as their read is in) or
 * failed (they are dropped: nothing changed). */
static void leader_boundary_end(void *ud, bool written)
{
    struct bcast *bc = ud;
    for (struct announce *a = bc->ann_head; a != NULL; a = a->next)
        if (a->hold == ANN_HELD)
            a->hold = written ? ANN_GO : ANN_DROP;
    struct announce *h = bc->ann_head;
    if (h == NULL || !h->loaded)
        return; /* its read is in flight (or it is not the boundary's): it goes on by itself */
    h->loaded = false;
    if (written)
        announce_loaded(h);
    else
        announce_pop(bc);
}

static void leader_tick(void *ud, int64_t ts, int64_t price)
{
    struct bcast *bc = ud;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_tick(&b, ts, price, bc->odds_held ? &bc->odds : NULL);
    tp_bcast_publish(bc->store, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
    tp_store_flush_soon(bc->w); /* from the tick script's reply */
    bc->odds_held = false;
    ev_timer_stop(tp_worker_loop(bc->w), &bc->odds_timer);
    bc->last_tick_mono = tp_mono_ms();
}

/* The operator paused or resumed: every socket is told at once (a new socket reads it in its
 * snapshot). */
static void leader_pause(void *ud, const struct tp_game_pause *p)
{
    struct bcast *bc = ud;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_pause(&b, p);
    tp_bcast_publish(bc->store, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
}

static void publish_odds(struct tp_store *store, const struct tp_protocol_odds *odds)
{
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_odds(&b, odds);
    tp_bcast_publish(store, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
}

/* The beat the odds were held for did not come in time: they go alone. */
static void on_odds_late(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct bcast *bc = t->data;
    if (!bc->odds_held)
        return;
    bc->odds_held = false;
    publish_odds(bc->store, &bc->odds);
}

void tp_bcast_odds(struct tp_worker *w, struct tp_store *store, const struct tp_protocol_odds *odds)
{
    struct bcast *bc = bcast_of(w);
    int64_t now = tp_mono_ms();
    /* Ticking (the last tick is at most two periods old) and the next one due within
     * TP_BCAST_ODDS_WAIT_MS: the odds ride on it, one frame per socket instead of two. */
    int64_t due = bc != NULL && bc->last_tick_mono > 0 ? bc->last_tick_mono + bc->tick_ms : 0;
    if (bc == NULL || due == 0 || now - bc->last_tick_mono > 2 * (int64_t)bc->tick_ms ||
        due - now > TP_BCAST_ODDS_WAIT_MS) {
        publish_odds(store, odds);
        return;
    }
    bc->odds = *odds;
    if (!bc->odds_held) {
        bc->odds_held = true;
        /* Some slack past the due time: a tick a few ms late should still carry them. */
        ev_timer_set(&bc->odds_timer, (double)(TP_MAX(due - now, 0) + 20) / 1000.0, 0.0);
        ev_timer_start(tp_worker_loop(w), &bc->odds_timer);
    }
}

static const struct tp_leader_observer leader_obs = {
    .on_round = leader_round,
    .on_boundary = leader_boundary,
    .on_boundary_end = leader_boundary_end,
    .on_tick = leader_tick,
    .on_pause = leader_pause,
};

void tp_bcast_start(struct tp_worker *w)
{
    if (bcast_of(w) != NULL)
        return;
    const struct tp_config *cfg = tp_worker_config(w);
    struct bcast *bc = tp_xcalloc(1, sizeof(*bc));
    bc->w = w;
    bc->sessions = sessions;
    bc->store = tp_store_of(w);
    bc->buckets = cfg->game.buckets;
    bc->tick_ms = (int)cfg->game.tick_ms;
    ev_timer_init(&bc->odds_timer, on_odds_late, 0.0, 0.0);
    bc->odds_timer.data = bc;
    ev_timer_init(&bc->held_timer, on_held_late, 0.0, 0.0);
    bc->held_timer.data = bc;
    ev_prepare_init(&bc->flushed, on_flushed);
    ev_set_priority(&bc->flushed, EV_MINPRI); /* after the worker's prepare hook */
    bc->flushed.data = bc;
    tp_worker_slot_set(w, slot, bc);
    if (bc->store != NULL && tp_leader_set_observer(w, &leader_obs, bc) != 0)
        tp_log_warn(MOD, "no game leader in this worker: its rounds and ticks go unannounced");
    bc->sub = tp_store_new(tp_worker_loop(w), &cfg->redis, NULL);
    if (bc->sub == NULL) {
        tp_log_warn(MOD, "no subscriber store: sockets of this worker get no broadcasts");
        return;
    }
    if (tp_store_subscribe(bc->sub, TP_KEYS_BCAST_CHANNEL, on_sub, bc) != 0)
        tp_log_warn(MOD, "subscribe to %s failed", TP_KEYS_BCAST_CHANNEL);
}

static void on_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    tp_bcast_start(w);
}

void tp_bcast_install(const struct tp_bcast_sessions *s)
{
    sessions = s;
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
}
