/*
 * WebSocket session protocol (see tickpool/stream/session.h and docs/protocol.md).
 *
 * A `struct sess` hangs off every WebSocket connection (tp_conn_set_data). Asynchronous work
 * (balance read, snapshot load, bet submission) holds a reference on it, so a socket that
 * closes while Redis is still answering leaves a detached session (c == NULL) that the last
 * callback frees; replies to a detached session are dropped.
 *
 * Ordering: `hello` is queued before the snapshot load starts, and the session is `ready` (it
 * receives broadcasts, see bcast.c) only once its snapshot is queued, so a client always sees
 * hello, snapshot, then ticks/odds/rounds.
 */
#include "tickpool/stream/session.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/pause.h"
#include "tickpool/money/access.h"
#include "tickpool/money/accounts.h"
#include "tickpool/money/bet.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/http.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/ws.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/registry.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"
#include "tickpool/stream/bcast.h"
#include "tickpool/stream/odds.h"
#include "tickpool/stream/protocol.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "session"

/* Ticks included in a snapshot: the contract asks for at least the last 60 s. */
#define SNAPSHOT_TICKS_MS 61000
/* Longest `req` correlation value echoed back (string bytes). */
#define REQ_MAX 128
/* Housekeeping period (token expiry, keepalive). */
#define HOUSEKEEP_S 1.0
/* Keepalive: ping after this much silence from the peer, close after twice as much. */
#define IDLE_PING_MS 20000
/* A message (all its fragments) must arrive within this, or the socket closes 1008: a first
 * fragment followed by pings must not hold a socket and its partial buffer for ever. */
#define MESSAGE_MAX_MS 10000
/* Largest message of an anonymous socket, which only sends ping and auth (a token is ~100
 * bytes): 2,000 anonymous sockets each holding a 64 KiB partial message cost 128 MB. */
#define ANON_MAX_MESSAGE 4096
/* A close waiting for bet answers (rate limit) happens anyway after this. */
#define CLOSE_WAIT_MS 5000
/* An authenticated socket counts against its user's cap in Redis for this long unless its
 * worker keeps it (every SOCKETS_KEEP_MS): the sockets of a worker that died stop counting. */
#define SOCKETS_TTL_MS 60000
#define SOCKETS_KEEP_MS 20000

/* --- Per-worker and per-socket state --- */

struct snap;

struct sw {
    struct tp_worker *w;
    const struct tp_config *cfg;
    struct tp_store *store;
    struct tp_bet_limits lim;
    ev_timer timer;
    struct snap *loading; /* the sockets' snapshot load in flight, which new sockets join */
    char worker_id[TP_REGISTRY_MEMBER_MAX]; /* names this worker's sockets in Redis */
    uint64_t next_serial;
    struct tp_buf scratch; /* see scratch() */
};

/* The worker slot holding struct sw (tp_session_install hands it out). */
static size_t slot = SIZE_MAX;

struct sess {
    struct sw *sw;
    struct tp_conn *c;  /* NULL once the socket closed */
    int refs;           /* 1 for the socket + 1 per pending async operation */
    int64_t user_id;    /* 0 = anonymous */
    int64_t exp_ms;     /* token expiry (Unix ms) when user_id != 0 */
    bool ready;         /* snapshot queued: broadcasts flow */
    int64_t pinged_for; /* tp_conn_ws_last_seen_ms value a keepalive ping was sent for */
    double tokens;      /* message rate token bucket */
    int64_t tb_ms;
    int bets_inflight; /* bets submitted, not answered yet */
    int64_t close_by;  /* != 0: close (1008 close_reason) once bets_inflight is 0, or then */
    const char *close_reason;
    bool counted;    /* taken in the user's socket set in Redis: given back at close */
    uint64_t serial; /* this socket in that set, with sw->worker_id */
    int64_t kept_ms; /* tp_mono_ms() of the last take or keep */
};

static void sess_unref(struct sess *s)
{
    if (--s->refs == 0)
        free(s);
}

static struct sess *conn_sess(const struct tp_conn *c)
{
    return c != NULL && (tp_conn_flags(c) & TP_CONN_WS) ? tp_conn_data(c) : NULL;
}

/* The user of a session (0: anonymous, or `c` has no session). */
static int64_t session_user(const struct tp_conn *c)
{
    struct sess *s = conn_sess(c);
    return s != NULL ? s->user_id : 0;
}

/* True once the session sent its `snapshot`: broadcasts go only to ready sessions, so a client
 * sees hello, snapshot, then the stream. */
static bool session_ready(const struct tp_conn *c)
{
    struct sess *s = conn_sess(c);
    return s != NULL && s->ready;
}

/* Queues an encoded message to the session's socket, if it is still there. */
static void send_buf(struct sess *s, const struct tp_buf *b)
{
    if (s->c != NULL)
        tp_conn_ws_send(s->c, tp_buf_ptr(b), tp_buf_size(b));
}

/* Sends {t:"error", code, message}. */
static void send_error(struct sess *s, const char *code, const char *message)
{
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_error(&b, code, message);
    send_buf(s, &b);
    tp_buf_deinit(&b);
}

/* The worker's buffer for a bet's answer or its req, emptied for each use: the message is copied
 * into its frame when queued, so a buffer of its own (a malloc and a free per bet, twice) is not
 * needed. Nothing encoded here outlives the call that encoded it. */
static struct tp_buf *scratch(struct sw *sw)
{
    tp_buf_reset(&sw->scratch);
    return &sw->scratch;
}

/* Sends {t:"bet_err", req, code, message}; `req` is an encoded MessagePack value (NULL: nil). */
static void send_bet_err(struct sess *s, const void *req, size_t reqlen, enum tp_bet_code code)
{
    struct tp_buf *b = scratch(s->sw);
    tp_protocol_bet_err(b, req, reqlen, code);
    send_buf(s, b);
}

struct count_user {
    int64_t uid;
    const struct tp_conn *self;
    int n;
};

static void count_one(struct tp_conn *c, void *ud)
{
    struct count_user *cu = ud;
    struct sess *s = conn_sess(c);
    if (c != cu->self && s != NULL && s->c != NULL && s->user_id == cu->uid &&
        !(tp_conn_flags(c) & TP_CONN_CLOSE_ASAP))
        cu->n++;
}

/* --- The per-user socket cap across the deployment (scripts/lua/ws_sockets.lua) --- */

static void close_after_bets(struct sess *s, const char *reason);

/* Runs ws_sockets.lua `op` for this socket of its user. Returns 0 or the submit error. */
static int sockets_call(struct sess *s, const char *op, tp_store_cb cb, void *ud)
{
    char socket[TP_REGISTRY_MEMBER_MAX + 24];
    snprintf(socket, sizeof(socket), "%s|%llu", s->sw->worker_id, (unsigned long long)s->serial);
    struct tp_script_ws_sockets_args a = {.bucket =
                                              tp_bucket_of(s->user_id, s->sw->cfg->game.buckets),
                                          .user_id = s->user_id,
                                          .op = op,
                                          .socket = socket,
                                          .cap = s->sw->cfg->limits.ws_max_per_user,
                                          .ttl_ms = SOCKETS_TTL_MS};
    return s->sw->store != NULL ? tp_script_ws_sockets(s->sw->store, &a, cb, ud) : TP_EUNAVAIL;
}

static void on_sockets_ignored(int err, const struct tp_store_reply *r, void *ud)
{
    (void)err, (void)r, (void)ud;
}

/* The user's sockets on every worker: over the cap, this one closes 1008 like a socket over
 * this worker's own count (after the answers to bets it sent meanwhile). Redis unreachable:
 * only this worker's count applies. */
static void on_sockets_take(int err, const struct tp_store_reply *r, void *ud)
{
    struct sess *s = ud;
    const char *head = err == 0 ? tp_reply_str(tp_reply_at(r, 0), NULL) : NULL;
    const char *code = err == 0 ? tp_reply_str(tp_reply_at(r, 1), NULL) : NULL;
    if (s->c != NULL && head != NULL && strcmp(head, "err") == 0 && code != NULL &&
        strcmp(code, "too_many") == 0) {
        tp_log_info(MOD, "socket cap reached\tuser=%lld sockets=%lld scope=deployment",
                    (long long)s->user_id, tp_reply_integer(tp_reply_at(r, 2)));
        s->counted = false;
        close_after_bets(s, "too many sockets");
    }
    sess_unref(s);
}

/* Counts the socket of a newly bound user in Redis (the reply may close it). */
static void sockets_take(struct sess *s)
{
    if (s->sw->cfg->limits.ws_max_per_user <= 0)
        return;
    s->serial = ++s->sw->next_serial;
    s->counted = true;
    s->kept_ms = tp_mono_ms();
    s->refs++;
    if (sockets_call(s, "take", on_sockets_take, s) != 0)
        s->refs--;
}

/* Binds the session to user `uid` unless that passes the per-user socket cap of this worker
 * (the deployment's is checked in Redis next, sockets_take). Returns false (and closes the
 * socket 1008) when the cap is reached. */
static bool bind_user(struct sess *s, int64_t uid, int64_t exp)
{
    struct count_user cu = {uid, s->c, 0};
    tp_worker_foreach_ws(s->sw->w, count_one, &cu);
    int cap = s->sw->cfg->limits.ws_max_per_user;
    if (cap > 0 && cu.n >= cap) {
        tp_log_info(MOD, "socket cap reached\tuser=%lld sockets=%d", (long long)uid, cu.n);
        tp_conn_ws_close(s->c, TP_WS_CLOSE_POLICY, "too many sockets");
        return false;
    }
    s->user_id = uid;
    s->exp_ms = exp;
    tp_conn_ws_set_max_message(s->c, s->sw->cfg->limits.ws_max_message);
    sockets_take(s);
    return true;
}

/* --- hello and snapshot --- */

/*
 * A snapshot load: current round ids, both rounds, the recent ticks, the pause (Redis commands,
 * the XRANGE of ~600 ticks the largest reply). Sockets opening while a load is in flight join it
 * (waiters) instead of starting their own, and all get the same encoded frame: 10,000 sockets
 * opening at 2,000/s otherwise queue 8,000 commands a second ahead of the bets and the
 * leader's lease on the worker's one Redis connection, which timed them all out. A joiner's
 * snapshot is no older than the other waiters' (the same race as a load of its own: ticks
 * published between the XRANGE and the snapshot being queued are missed). No waiters means a
 * resync of every ready socket of the worker.
 */
struct snap {
    struct sw *sw;
    struct sess **waiters;
    size_t nwait, capwait;
    int pending;
    bool have[2];
    struct tp_game_round rounds[2]; /* open, live */
    struct tp_game_pause pause;     /* running unless read as paused */
    int64_t *ticks;                 /* ts, price pairs */
    size_t nticks;
};

static void snap_send_one(struct tp_conn *c, void *ud)
{
    struct sess *s = conn_sess(c);
    if (s != NULL && s->ready)
        tp_conn_ws_send_frame(c, ud);
}

static void snap_finish(struct snap *sn)
{
    if (sn->sw->loading == sn)
        sn->sw->loading = NULL;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_snapshot(&b, sn->have[0] ? &sn->rounds[0] : NULL,
                         sn->have[1] ? &sn->rounds[1] : NULL, sn->ticks, sn->nticks, &sn->pause);
    struct tp_ws_frame *f = tp_ws_frame_new(tp_buf_ptr(&b), tp_buf_size(&b), TP_WS_KIND_DIRECT);
    if (sn->nwait > 0) {
        for (size_t i = 0; i < sn->nwait; i++) {
            struct sess *s = sn->waiters[i];
            if (s->c != NULL) {
                tp_conn_ws_send_frame(s->c, f);
                tp_conn_ws_fanout_from_now(s->c); /* beats older than its snapshot are not its */
                s->ready = true;
            }
            sess_unref(s);
        }
    } else {
        tp_worker_foreach_ws(sn->sw->w, snap_send_one, f);
    }
    tp_ws_frame_unref(f);
    tp_buf_deinit(&b);
    free(sn->waiters);
    free(sn->ticks);
    free(sn);
}

/* Adds `s` (holding a reference) to the sockets a load answers. */
static void snap_join(struct snap *sn, struct sess *s)
{
    if (sn->nwait == sn->capwait) {
        sn->capwait = sn->capwait ? 2 * sn->capwait : 4;
        sn->waiters = tp_xrealloc(sn->waiters, sn->capwait * sizeof(*sn->waiters));
    }
    s->refs++;
    sn->waiters[sn->nwait++] = s;
}

static void snap_done(struct snap *sn)
{
    if (--sn->pending == 0)
        snap_finish(sn);
}

static void on_snap_current(int err, const struct tp_game_round *open,
                            const struct tp_game_round *live, void *ud)
{
    struct snap *sn = ud;
    const struct tp_game_round *rounds[2] = {open, live};
    for (int i = 0; err == 0 && i < 2; i++) {
        if (rounds[i] != NULL) {
            sn->rounds[i] = *rounds[i];
            sn->have[i] = true;
        }
    }
    snap_done(sn);
}

static void on_snap_pause(int err, const struct tp_game_pause *p, void *ud)
{
    struct snap *sn = ud;
    if (err == 0)
        sn->pause = *p; /* a failed read shows running, as a failed round read shows nil */
    snap_done(sn);
}

/* XRANGE reply: entries [id "<ts>-0", [price, "<p>"]]. */
static void on_snap_ticks(int err, const struct tp_store_reply *r, void *ud)
{
    struct snap *sn = ud;
    if (err == 0 && tp_reply_type(r) == TP_REPLY_ARRAY) {
        size_t n = tp_reply_len(r);
        sn->ticks = tp_xmalloc(sizeof(int64_t) * 2 * (n > 0 ? n : 1));
        for (size_t i = 0; i < n; i++) {
            const struct tp_store_reply *e = tp_reply_at(r, i);
            const char *id = tp_reply_str(tp_reply_at(e, 0), NULL);
            const struct tp_store_reply *f = tp_reply_at(e, 1);
            const char *price = NULL;
            for (size_t k = 0; k + 1 < tp_reply_len(f); k += 2) {
                const char *name = tp_reply_str(tp_reply_at(f, k), NULL);
                if (name != NULL && strcmp(name, "price") == 0)
                    price = tp_reply_str(tp_reply_at(f, k + 1), NULL);
            }
            if (id == NULL || price == NULL)
                continue;
            sn->ticks[2 * sn->nticks] = strtoll(id, NULL, 10);
            sn->ticks[2 * sn->nticks + 1] = strtoll(price, NULL, 10);
            sn->nticks++;
        }
    }
    snap_done(sn);
}

/* Starts a snapshot load for `s` (holding a reference), or joins the one in flight; with s
 * NULL, a worker resync (never joined: it answers every ready socket). */
static void snap_start(struct sw *sw, struct sess *s)
{
    if (s != NULL && sw->loading != NULL) {
        snap_join(sw->loading, s);
        return;
    }
    struct snap *sn = tp_xcalloc(1, sizeof(*sn));
    sn->sw = sw;
    if (s != NULL) {
        snap_join(sn, s);
        sw->loading = sn;
    }
    sn->pending = 1; /* held until every command is submitted */
    if (sw->store != NULL) {
        sn->pending++;
        if (tp_game_round_load_current(sw->store, sw->cfg->game.buckets, on_snap_current, sn) != 0)
            sn->pending--;
        sn->pending++;
        if (tp_store_command(sw->store, on_snap_ticks, sn, "XRANGE " TP_KEYS_TICKS " %lld +",
                             (long long)(tp_now_ms() - SNAPSHOT_TICKS_MS)) != 0)
            sn->pending--;
        sn->pending++;
        if (tp_game_pause_load(sw->store, on_snap_pause, sn) != 0)
            sn->pending--;
    }
    snap_done(sn);
}

/* Loads a fresh snapshot once and queues it to every ready socket of `w` (one shared frame,
 * after the broadcast subscription came back). */
static void session_resync(struct tp_worker *w)
{
    struct sw *sw = tp_worker_slot_get(w, slot);
    if (sw != NULL)
        snap_start(sw, NULL);
}

struct hello_op {
    struct sess *s;
    bool snapshot; /* also send the snapshot afterwards (on open) */
};

static void hello_then(struct sess *s, bool has_balance, int64_t balance, bool snapshot)
{
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_hello(&b, tp_now_ms(), s->user_id, has_balance, balance);
    send_buf(s, &b);
    tp_buf_deinit(&b);
    if (snapshot && s->c != NULL)
        snap_start(s->sw, s);
}

static void on_balance(int err, const struct tp_store_reply *r, void *ud)
{
    struct hello_op *op = ud;
    const char *v = err == 0 ? tp_reply_str(r, NULL) : NULL;
    bool nil = err == 0 && tp_reply_type(r) == TP_REPLY_NIL;
    int64_t bal = v != NULL ? strtoll(v, NULL, 10) : 0;
    hello_then(op->s, v != NULL || nil, bal, op->snapshot);
    sess_unref(op->s);
    free(op);
}

/* Sends hello (reading the balance first when authenticated), then optionally the snapshot. */
static void start_hello(struct sess *s, bool snapshot)
{
    struct sw *sw = s->sw;
    if (s->user_id > 0 && sw->store != NULL) {
        struct hello_op *op = tp_xmalloc(sizeof(*op));
        op->s = s;
        op->snapshot = snapshot;
        s->refs++;
        struct tp_key k;
        int b = tp_bucket_of(s->user_id, sw->cfg->game.buckets);
        if (tp_store_command(sw->store, on_balance, op, "HGET %s %lld", tp_keys_bal(&k, b),
                             (long long)s->user_id) == 0)
            return;
        s->refs--;
        free(op);
    }
    hello_then(s, false, 0, snapshot);
}

/* --- Client messages --- */

struct bet_op {
    struct sess *s;
    int64_t t0_ns; /* when the message arrived (tickpool_bet_latency_seconds) */
    size_t reqlen;
    uint8_t req[REQ_MAX + 16];
};

static void on_bet(const struct tp_bet_result *res, void *ud)
{
    struct bet_op *op = ud;
    struct sess *s = op->s;
    tp_bet_count_answer(TP_METRICS_TRANSPORT_WS, op->t0_ns, res->code);
    if (res->code != TP_BET_OK) {
        send_bet_err(s, op->req, op->reqlen, res->code);
    } else {
        struct tp_buf *b = scratch(s->sw);
        tp_protocol_bet_ok(b, op->req, op->reqlen, res);
        send_buf(s, b);
    }
    if (--s->bets_inflight == 0 && s->close_by != 0 && s->c != NULL)
        tp_conn_ws_close(s->c, TP_WS_CLOSE_POLICY, s->close_reason);
    sess_unref(s);
    free(op);
}

/* The socket's token against the worker's account state (memory only): a token revoked or an
 * account disabled since the socket authenticated stops betting at once, whatever
 * housekeeping does with the socket later. */
static enum tp_bet_code access_code(const struct sess *s)
{
    switch (tp_access_check(s->sw->w, s->user_id, s->exp_ms)) {
    case TP_ACCESS_OK:
        return TP_BET_OK;
    case TP_ACCESS_DISABLED:
        return TP_BET_ACCOUNT_DISABLED;
    case TP_ACCESS_UNKNOWN:
        return TP_BET_UNAVAILABLE;
    case TP_ACCESS_REVOKED:
        break;
    }
    return TP_BET_UNAUTHORIZED;
}

static struct bet_op *new_bet_op(struct sess *s, int64_t t0_ns)
{
    struct bet_op *op = tp_xmalloc(sizeof(*op)); /* req[] is written only as far as reqlen */
    op->s = s;
    op->t0_ns = t0_ns;
    op->reqlen = 0;
    return op;
}

/* The end of both readers of a bet: answers `code` unless it is TP_BET_OK, else submits `br`
 * with its key (both read only then). Takes `op`. */
static void submit_bet(struct sess *s, struct bet_op *op, enum tp_bet_code code,
                       const struct tp_bet_req *br, const char *key, size_t klen)
{
    if (code != TP_BET_OK) {
        tp_bet_count_answer(TP_METRICS_TRANSPORT_WS, op->t0_ns, code);
        send_bet_err(s, op->req, op->reqlen, code);
        free(op);
        return;
    }
    s->refs++;
    s->bets_inflight++;
    int rc = tp_bet_submit(s->sw->w, s->user_id, br, key, klen, on_bet, op);
    if (rc != 0) {
        s->refs--;
        s->bets_inflight--;
        tp_bet_count_answer(TP_METRICS_TRANSPORT_WS, op->t0_ns, tp_bet_code_from_err(rc));
        send_bet_err(s, op->req, op->reqlen, tp_bet_code_from_err(rc));
        free(op);
    }
}

/* `t0_ns`: tp_mono_ns() when the message arrived. */
static void handle_bet(struct sess *s, const struct tp_val *m, int64_t t0_ns)
{
    struct bet_op *op = new_bet_op(s, t0_ns);
    /* req: echoed as given; an integer or a short string (anything else is invalid). */
    const struct tp_val *req = tp_val_get(m, "req");
    enum tp_val_type rt = tp_val_type(req);
    bool req_ok = req == NULL || rt == TP_VAL_NULL || rt == TP_VAL_INT || rt == TP_VAL_UINT ||
                  (rt == TP_VAL_STR && tp_val_len(req) <= REQ_MAX);
    if (req != NULL && req_ok) {
        struct tp_buf *b = scratch(s->sw);
        struct tp_wr w;
        tp_wr_init(&w, b, TP_FMT_MSGPACK);
        tp_wr_val(&w, req);
        TP_ASSERT(tp_buf_size(b) <= sizeof(op->req));
        memcpy(op->req, tp_buf_ptr(b), tp_buf_size(b));
        op->reqlen = tp_buf_size(b);
    }
    enum tp_bet_code code = TP_BET_OK;
    const char *key = NULL;
    size_t klen = 0;
    struct tp_bet_req br;
    if (!req_ok)
        code = TP_BET_INVALID_REQUEST;
    else if (s->user_id <= 0)
        code = TP_BET_UNAUTHORIZED;
    else if ((code = access_code(s)) != TP_BET_OK)
        ;
    else if ((code = tp_bet_parse_val(m, &s->sw->lim, &br)) != TP_BET_OK)
        ;
    else if (tp_val_get_str(m, "key", &key, &klen) != 0)
        code = tp_val_get(m, "key") == NULL ? TP_BET_KEY_REQUIRED : TP_BET_INVALID_REQUEST;
    else
        code = tp_bet_check_key(key, klen);
    submit_bet(s, op, code, &br, key, klen);
}

/* A bet tp_protocol_bet_read took straight from its bytes: handle_bet's checks in its order, on
 * a message whose req is an integer and whose key is present and valid by the reader's shape.
 * The document's read was ~4.8k instructions a bet of the loop thread's 17k, this one ~0.9k
 * (callgrind; bench/README.md, "Session 27: tickpool's CPU a WebSocket bet"). */
static void handle_bet_msg(struct sess *s, const struct tp_protocol_bet_msg *m, int64_t t0_ns)
{
    struct bet_op *op = new_bet_op(s, t0_ns);
    /* tp_wr_int's bytes: handle_bet's tp_wr_val of an integer req. */
    _Static_assert(TP_CODEC_MSGPACK_INT_MAX <= sizeof(op->req), "an integer req fits");
    op->reqlen = tp_codec_msgpack_int(op->req, m->req);
    enum tp_bet_code code;
    struct tp_bet_req br = {0, 0, 0};
    if (s->user_id <= 0)
        code = TP_BET_UNAUTHORIZED;
    else if ((code = access_code(s)) == TP_BET_OK)
        code = tp_bet_check(m->round_id, m->band, m->stake, &s->sw->lim, &br);
    submit_bet(s, op, code, &br, m->key, m->klen);
}

static void handle_auth(struct sess *s, const struct tp_val *m)
{
    const char *tok;
    size_t len;
    if (tp_val_get_str(m, "token", &tok, &len) != 0) {
        send_error(s, "invalid_request", "auth needs a string token");
        return;
    }
    int64_t uid, exp;
    int rc = tp_accounts_verify_token(s->sw->w, tok, len, &uid, &exp);
    if (rc != 0) {
        send_error(s,
                   rc == TP_EUNAVAIL ? "unavailable"
                   : rc == TP_EPERM  ? "account_disabled"
                                     : "unauthorized",
                   rc == TP_ETIMEDOUT ? "token expired"
                   : rc == TP_EPERM   ? "this account is disabled"
                                      : "invalid token");
        return;
    }
    if (s->user_id > 0 && s->user_id != uid) {
        send_error(s, "invalid_request", "socket already authenticated as another user");
        return;
    }
    if (s->user_id != uid && !bind_user(s, uid, exp))
        return;
    s->exp_ms = exp;
    start_hello(s, false);
}

static void handle_ping(struct sess *s, const struct tp_val *m)
{
    const struct tp_val *ts = tp_val_get(m, "ts");
    enum tp_val_type t = tp_val_type(ts);
    if (ts == NULL || (t != TP_VAL_INT && t != TP_VAL_UINT && t != TP_VAL_FLOAT)) {
        send_error(s, "invalid_request", "ping needs a numeric ts");
        return;
    }
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_pong(&b, ts);
    send_buf(s, &b);
    tp_buf_deinit(&b);
}

/* Token bucket of limits.ws_msg_rate messages per second (burst of one second's worth); `now`
 * is tp_mono_ms(). */
static bool rate_ok(struct sess *s, int64_t now)
{
    int rate = s->sw->cfg->limits.ws_msg_rate;
    if (rate <= 0)
        return true;
    s->tokens += (double)(now - s->tb_ms) * rate / 1000.0;
    s->tb_ms = now;
    if (s->tokens > rate)
        s->tokens = rate;
    if (s->tokens < 1.0)
        return false;
    s->tokens -= 1.0;
    return true;
}

/* Closes 1008 `reason` once the answers to the bets already submitted are queued (a client
 * must learn what became of each accepted bet); nothing the client sends meanwhile is read. */
static void close_after_bets(struct sess *s, const char *reason)
{
    if (s->bets_inflight == 0) {
        tp_conn_ws_close(s->c, TP_WS_CLOSE_POLICY, reason);
        return;
    }
    s->close_by = tp_mono_ms() + CLOSE_WAIT_MS;
    s->close_reason = reason;
}

static void on_message(struct tp_conn *c, const uint8_t *data, size_t len, bool binary, void *ud)
{
    (void)ud;
    struct sess *s = conn_sess(c);
    if (s == NULL || s->close_by != 0)
        return;
    /* One clock read for the rate limit and a bet's latency (a VM's clock costs ~35 ns). */
    int64_t now_ns = tp_mono_ns();
    if (!rate_ok(s, now_ns / 1000000)) {
        tp_log_info(MOD, "message rate exceeded\tuser=%lld", (long long)s->user_id);
        close_after_bets(s, "message rate exceeded");
        return;
    }
    if (!binary) {
        send_error(s, "invalid_request", "messages are binary MessagePack frames");
        return;
    }
    /* The bet every client sends, read from its bytes; any other message takes the document. */
    struct tp_protocol_bet_msg bet;
    if (len <= s->sw->cfg->limits.ws_max_message && tp_protocol_bet_read(data, len, &bet)) {
        handle_bet_msg(s, &bet, now_ns);
        return;
    }
    struct tp_doc *doc = NULL;
    char err[128];
    int rc = tp_doc_parse_ex(TP_FMT_MSGPACK, data, len, s->sw->cfg->limits.ws_max_message, &doc,
                             err, sizeof(err));
    if (rc != 0) {
        send_error(s, "invalid_request", "invalid MessagePack");
        return;
    }
    const struct tp_val *m = tp_doc_root(doc);
    const char *t;
    if (tp_val_type(m) != TP_VAL_MAP) {
        send_error(s, "invalid_request", "a message is a map");
    } else if (tp_val_get_str(m, "t", &t, NULL) != 0) {
        send_error(s, "invalid_request", "a message needs a string field t");
    } else if (strcmp(t, "bet") == 0) {
        handle_bet(s, m, now_ns);
    } else if (strcmp(t, "ping") == 0) {
        handle_ping(s, m);
    } else if (strcmp(t, "auth") == 0) {
        handle_auth(s, m);
    } else {
        send_error(s, "unknown_type", "unknown message type");
    }
    tp_doc_free(doc);
}

static void on_open(struct tp_conn *c, const struct tp_http_request *req, void *ud)
{
    struct sw *sw = ud;
    struct sess *s = tp_xcalloc(1, sizeof(*s));
    s->sw = sw;
    s->c = c;
    s->refs = 1;
    s->tb_ms = tp_mono_ms();
    s->tokens = sw->cfg->limits.ws_msg_rate;
    tp_conn_set_data(c, s);
    const char *tok = req != NULL ? tp_http_request_param(req, "token") : NULL;
    if (tok != NULL && *tok != '\0') {
        int64_t uid, exp;
        int rc = tp_accounts_verify_token(sw->w, tok, strlen(tok), &uid, &exp);
        if (rc != 0) {
            tp_conn_ws_close(c, TP_WS_CLOSE_POLICY,
                             rc == TP_ETIMEDOUT ? "token expired"
                             : rc == TP_EPERM   ? "account disabled"
                                                : "invalid token");
            return;
        }
        if (!bind_user(s, uid, exp))
            return;
    } else if (sw->cfg->limits.ws_max_message > ANON_MAX_MESSAGE) {
        tp_conn_ws_set_max_message(c, ANON_MAX_MESSAGE);
    }
    start_hello(s, true);
}

static void on_close(struct tp_conn *c, void *ud)
{
    (void)ud;
    struct sess *s = tp_conn_data(c);
    if (s == NULL)
        return;
    tp_conn_set_data(c, NULL);
    s->c = NULL;
    s->ready = false;
    /* After a take still in flight on the same connection: Redis runs them in order. */
    if (s->counted)
        sockets_call(s, "give", on_sockets_ignored, NULL);
    sess_unref(s);
}

/* --- Housekeeping: token expiry, keepalive, slow messages --- */

/* Why housekeeping closes a socket, with the close code and reason each gets. */
enum why { WHY_IDLE, WHY_EXPIRED, WHY_REVOKED, WHY_SLOW_MESSAGE, WHY_DEFERRED };

struct expired {
    struct tp_conn **v;
    uint8_t *why; /* per entry: enum why */
    size_t n, cap;
    int64_t now;
};

/* True when the socket must close for silence. Pings go out after IDLE_PING_MS of silence
 * (once per silent stretch); a peer still silent IDLE_PING_MS later is dead. A pong counts
 * as hearing from the peer (tp_conn_ws_last_seen_ms). */
static bool idle_check(struct tp_conn *c, struct sess *s)
{
    int64_t seen = tp_conn_ws_last_seen_ms(c);
    int64_t idle = tp_mono_ms() - seen;
    if (idle >= 2 * IDLE_PING_MS)
        return true;
    if (idle >= IDLE_PING_MS && s->pinged_for != seen) {
        s->pinged_for = seen;
        tp_conn_ws_ping(c);
    }
    return false;
}

static void find_expired(struct tp_conn *c, void *ud)
{
    struct expired *e = ud;
    struct sess *s = conn_sess(c);
    if (s == NULL)
        return;
    int64_t mono = tp_mono_ms(), since = tp_conn_ws_message_since_ms(c);
    if (s->counted && mono - s->kept_ms >= SOCKETS_KEEP_MS) {
        s->kept_ms = mono;
        sockets_call(s, "keep", on_sockets_ignored, NULL);
    }
    enum why why;
    if (idle_check(c, s))
        why = WHY_IDLE;
    else if (s->close_by != 0 && mono >= s->close_by)
        why = WHY_DEFERRED;
    else if (since != 0 && mono - since >= MESSAGE_MAX_MS)
        why = WHY_SLOW_MESSAGE;
    else if (s->user_id > 0 && s->exp_ms > 0 && s->exp_ms <= e->now)
        why = WHY_EXPIRED;
    else if (s->user_id > 0 &&
             tp_access_check(s->sw->w, s->user_id, s->exp_ms) == TP_ACCESS_REVOKED)
        why = WHY_REVOKED;
    else
        return;
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 16;
        e->v = realloc(e->v, e->cap * sizeof(*e->v));
        e->why = realloc(e->why, e->cap * sizeof(*e->why));
        TP_ASSERT(e->v != NULL && e->why != NULL);
    }
    e->why[e->n] = (uint8_t)why;
    e->v[e->n++] = c;
}

static void housekeep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct sw *sw = t->data;
    struct expired e = {.now = tp_now_ms()};
    /* Collect first: sockets may not be closed from inside the iteration. */
    tp_worker_foreach_ws(sw->w, find_expired, &e);
    for (size_t i = 0; i < e.n; i++) {
        struct sess *s = conn_sess(e.v[i]);
        switch ((enum why)e.why[i]) {
        case WHY_IDLE:
            tp_conn_ws_close(e.v[i], TP_WS_CLOSE_GOING_AWAY, "idle");
            break;
        case WHY_EXPIRED:
            tp_conn_ws_close(e.v[i], TP_WS_CLOSE_POLICY, "token expired");
            break;
        case WHY_REVOKED: /* a logout or password change elsewhere: the player's data stops */
            tp_conn_ws_close(e.v[i], TP_WS_CLOSE_POLICY, "token revoked");
            break;
        case WHY_SLOW_MESSAGE:
            tp_conn_ws_close(e.v[i], TP_WS_CLOSE_POLICY, "message incomplete");
            break;
        case WHY_DEFERRED:
            tp_conn_ws_close(e.v[i], TP_WS_CLOSE_POLICY, s != NULL ? s->close_reason : NULL);
            break;
        }
    }
    free(e.v);
    free(e.why);
}

/* What bcast needs to know about this layer's sockets (it may not include this module). */
static const struct tp_bcast_sessions bcast_sessions = {
    .ready = session_ready,
    .user = session_user,
    .resync = session_resync,
};

static void worker_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct sw *sw = tp_xcalloc(1, sizeof(*sw));
    sw->w = w;
    sw->cfg = tp_worker_config(w);
    sw->store = tp_store_of(w);
    tp_bet_limits_any(&sw->lim);
    tp_buf_init(&sw->scratch);
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "unknown");
    tp_registry_member(sw->worker_id, sizeof(sw->worker_id), host, (long)getpid(),
                       tp_worker_index(w));
    ev_timer_init(&sw->timer, housekeep_cb, HOUSEKEEP_S, HOUSEKEEP_S);
    sw->timer.data = sw;
    ev_timer_start(tp_worker_loop(w), &sw->timer);
    tp_worker_slot_set(w, slot, sw);
    struct tp_conn_ws_hooks hooks = {
        .on_open = on_open,
        .on_message = on_message,
        .on_close = on_close,
    };
    tp_worker_set_ws_hooks(w, &hooks, sw);
}

void tp_session_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(worker_init, NULL);
    tp_bcast_install(&bcast_sessions);
    tp_odds_install();
}
