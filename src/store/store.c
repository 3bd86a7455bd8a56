/*
 * Redis store over hiredis 0.14 (async, libev adapter). The only file that includes hiredis.
 *
 * hiredis 0.14 has no command timeouts, so every user command is a `struct pending` kept in a
 * list ordered by deadline (one timeout per store: appended; a redirected cluster command keeps
 * an earlier one) and a single ev_timer watching the head suffices (h2o lib/common/redis.c
 * keeps one timer per command; one per store is cheaper and equivalent here).
 *
 * Ownership of a pending: hiredis holds it as privdata until its reply callback runs (exactly
 * once: with a reply, or with NULL when the context goes away). Separately, the user callback is
 * owed while `cb != NULL`. A timeout or a teardown calls the user callback early and clears
 * `cb`; the late hiredis callback then only frees the struct. So the user callback runs exactly
 * once and the struct is freed exactly once, whatever the order of events.
 *
 * Stale contexts: when we abandon a context ourselves (connect timeout, handshake failure,
 * stall, tp_store_free) we set `ac->data = NULL` first, so every later hiredis callback on it
 * (replies, NULL replies, disconnect) sees no store and does nothing but free its pending.
 *
 * Re-entrancy: user callbacks may call tp_store_free. Every entry from the loop increments
 * `depth`; tp_store_free tears down at once but frees the struct only when depth returns to 0.
 */
#include "store_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/base/url.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MOD "store"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

enum state {
    ST_DOWN,       /* no context; retry timer armed (or closed) */
    ST_CONNECTING, /* context exists: TCP connect and handshake in progress */
    ST_READY,      /* handshake done: commands accepted */
    ST_CLOSED,     /* tp_store_free was called */
};

struct pending {
    struct pending *prev, *next; /* in store->pending while the user callback is owed */
    tp_store_cb cb;              /* NULL once the user callback has been called */
    void *ud;
    double deadline; /* ev_now() seconds */
    int64_t sent_ns; /* tp_mono_ns at send, for tickpool_redis_command_seconds */
    /* A blocking read (XREADGROUP BLOCK), or sent behind one on this connection: Redis answers
     * it only after that read returns, so its wait is not a round trip and is not timed. */
    bool blocking;
    bool blocking_read; /* this one is the blocking read (counted in s->blocking_reads) */
    /* EVALSHA only: a copy of the command for the one NOSCRIPT retry */
    const struct tp_store_script *script;
    bool retried;
    char *resp;
    size_t resp_len;
};

struct sub {
    struct sub *next;
    struct tp_store *store; /* NULL once the store is gone (the sub waits for hiredis) */
    tp_store_cb cb;
    void *ud;
    bool attached;  /* a SUBSCRIBE is registered in the current context */
    bool confirmed; /* the server confirmed it at least once */
    bool gap;       /* a reconnect happened since: report TP_EUNAVAIL on re-confirmation */
    char channel[];
};

/* Tags for handshake commands, passed as privdata (never dereferenced). */
enum hs_kind { HS_AUTH = 1, HS_SELECT, HS_SCRIPT, HS_READY, HS_RELOAD };

struct tp_store {
    struct ev_loop *loop;
    struct tp_url_redis url;
    int timeout_ms;
    redisAsyncContext *ac;
    enum state state;
    struct pending *head, *tail; /* owed user callbacks, by deadline */
    size_t owed;                 /* their number */
    size_t inflight;             /* user commands sent on the current context */
    size_t blocking_reads;       /* blocking reads owed a callback (see struct pending) */
    double last_progress;        /* last reply (or first send after idle) */
    ev_timer cmd_timer;          /* earliest command deadline, and stall detection */
    ev_timer retry_timer;        /* reconnect backoff */
    ev_timer connect_timer;      /* bounds TCP connect + handshake */
    int backoff_ms;
    unsigned attempts;   /* failed attempts since the last success */
    uint64_t rng;        /* xorshift state for backoff jitter (random() is shared state) */
    bool up;             /* READY was reached on the current context (for the log) */
    bool ever_connected; /* for the reconnects counter and the log */
    bool down_logged;    /* "unreachable" logged for the current outage */
    struct tp_store_script *scripts;
    size_t nscripts;
    struct sub *subs;
    struct tp_store_stats stats;
    struct tp_store_cluster *cl; /* redis.mode = cluster: every call goes there */
    struct tp_store_acks acks;   /* standalone redis.replicas_ack (store_acks.c) */
    unsigned depth;              /* nested entries from the loop */
    bool dead; /* tp_store_free was called; free the struct when depth drops to 0 */
};

_Static_assert((int)TP_REPLY_STRING == REDIS_REPLY_STRING &&
                   (int)TP_REPLY_ARRAY == REDIS_REPLY_ARRAY &&
                   (int)TP_REPLY_INTEGER == REDIS_REPLY_INTEGER &&
                   (int)TP_REPLY_NIL == REDIS_REPLY_NIL &&
                   (int)TP_REPLY_STATUS == REDIS_REPLY_STATUS &&
                   (int)TP_REPLY_ERROR == REDIS_REPLY_ERROR,
               "tp_reply_type mirrors hiredis reply types");

static void start_connect(struct tp_store *s);
static void schedule_retry(struct tp_store *s);

#define find_script(s, name) tp_store_scripts_find((s)->scripts, (s)->nscripts, name)

/* --- Pending list and user callbacks --- */

/* Inserts p by deadline, searching from the tail (see the top: almost always the end). */
static void link_pending(struct tp_store *s, struct pending *p)
{
    s->owed++;
    struct pending *after = s->tail;
    while (after != NULL && after->deadline > p->deadline)
        after = after->prev;
    p->prev = after;
    p->next = after ? after->next : s->head;
    if (p->next)
        p->next->prev = p;
    else
        s->tail = p;
    if (after)
        after->next = p;
    else
        s->head = p;
}

static void unlink_pending(struct tp_store *s, struct pending *p)
{
    s->owed--;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        s->tail = p->prev;
    p->prev = p->next = NULL;
}

static void destroy(struct tp_store *s);

static void enter(struct tp_store *s)
{
    s->depth++;
}

/* Leaves a loop entry; frees the store if it was freed meanwhile. Returns true when it is gone
 * (the caller must not touch it). */
static bool leave(struct tp_store *s)
{
    TP_ASSERT(s->depth > 0);
    if (--s->depth == 0 && s->dead) {
        destroy(s);
        return true;
    }
    return false;
}

/* Calls p's user callback once: unlinks p and clears its cb first, so a re-entrant call (a
 * timeout, a teardown) can never call it again. Does not free p (hiredis may still hold it). */
static void complete(struct tp_store *s, struct pending *p, int err, const redisReply *reply)
{
    tp_store_cb cb = p->cb;
    TP_ASSERT(cb != NULL);
    unlink_pending(s, p);
    p->cb = NULL;
    if (p->blocking_read)
        s->blocking_reads--;
    if (!p->blocking)
        tp_metrics_observe_ns(TP_METRIC_FAMILY_REDIS_COMMAND,
                              p->script != NULL ? p->script->metrics_kind
                                                : TP_METRICS_REDIS_KIND_COMMAND,
                              tp_mono_ns() - p->sent_ns);
    if (err == TP_ETIMEDOUT) {
        s->stats.timeouts++;
        tp_metrics_inc(TP_METRIC_REDIS_TIMEOUTS_TOTAL);
    } else if (err != 0 || (reply != NULL && reply->type == REDIS_REPLY_ERROR)) {
        s->stats.errors++;
        tp_metrics_inc(TP_METRIC_REDIS_ERRORS_TOTAL);
    }
    cb(err, (const struct tp_store_reply *)reply, p->ud);
}

/* Completes every owed callback with `err` (teardown or abandoned context). The caller holds a
 * depth reference, so the store stays allocated even if a callback frees it. */
static void fail_all(struct tp_store *s, int err)
{
    while (s->head != NULL)
        complete(s, s->head, err, NULL);
}

static void arm_cmd_timer(struct tp_store *s)
{
    if (s->head == NULL) {
        ev_timer_stop(s->loop, &s->cmd_timer);
        return;
    }
    double after = s->head->deadline - ev_now(s->loop);
    ev_timer_stop(s->loop, &s->cmd_timer);
    ev_timer_set(&s->cmd_timer, after > 0 ? after : 0, 0);
    ev_timer_start(s->loop, &s->cmd_timer);
}

/* --- Reply objects: one block per reply --- */

/*
 * hiredis's default reader callocs every reply object and mallocs each string and element array,
 * then frees them one by one: a bet batch's reply is ten allocations per bet (its array, "ok",
 * six integers, the element array), 3.5k instructions per bet in a worker, more than building
 * the bet's answer. These functions give the reader the same redisReply structs (so tp_reply_*
 * and the code below read them as before) bump-allocated from chunks that the reply's root owns,
 * freed with the root in one go. hiredis 0.14 frees only roots (after a reply's callback, and a
 * partial reply when the reader fails or the context is freed), so no object outlives its root.
 */
#define REPLY_CHUNK_MIN 4096
#define REPLY_CHUNK_MAX (1024 * 1024)

/* An overflow chunk; the first chunk is the root's own allocation. */
struct reply_chunk {
    struct reply_chunk *next;
    size_t cap;
    char data[];
};

/* Placed right before a root redisReply: where its next object goes. */
struct reply_head {
    char *p, *end;
    struct reply_chunk *chunks;
    size_t last_cap;
};

#define REPLY_ALIGN(n) (((n) + 7) & ~(size_t)7)
#define REPLY_HEAD_SIZE REPLY_ALIGN(sizeof(struct reply_head))
#define REPLY_SIZE REPLY_ALIGN(sizeof(redisReply))

static struct reply_head *reply_head(void *root)
{
    return (struct reply_head *)((char *)root - REPLY_HEAD_SIZE);
}

/* `n` bytes from the root's chunks, a new chunk (doubling, within [MIN, MAX] unless `n` is
 * larger) when the current one is full. */
static void *reply_alloc(struct reply_head *h, size_t n)
{
    n = REPLY_ALIGN(n);
    if ((size_t)(h->end - h->p) < n) {
        size_t cap = TP_MAX(TP_MIN(2 * h->last_cap, (size_t)REPLY_CHUNK_MAX), n);
        cap = TP_MAX(cap, (size_t)REPLY_CHUNK_MIN);
        struct reply_chunk *c = tp_xmalloc(sizeof(*c) + cap);
        c->next = h->chunks;
        c->cap = cap;
        h->chunks = c;
        h->last_cap = cap;
        h->p = c->data;
        h->end = c->data + cap;
    }
    void *r = h->p;
    h->p += n;
    return r;
}

/* A new object of `task`: a root gets its own allocation of `extra` bytes more than the object
 * (with `hint` bytes of room for its children), a child is taken from its root's chunks and
 * linked into its parent, as hiredis's own create functions do. */
static redisReply *reply_new(const redisReadTask *task, size_t extra, size_t hint)
{
    redisReply *r;
    if (task->parent == NULL) {
        size_t cap = REPLY_HEAD_SIZE + REPLY_SIZE + REPLY_ALIGN(extra) + hint;
        struct reply_head *h = tp_xmalloc(cap);
        r = (redisReply *)((char *)h + REPLY_HEAD_SIZE);
        h->p = (char *)r + REPLY_SIZE;
        h->end = (char *)h + cap;
        h->chunks = NULL;
        h->last_cap = REPLY_CHUNK_MIN / 2;
    } else {
        const redisReadTask *t = task->parent;
        while (t->parent != NULL)
            t = t->parent;
        r = reply_alloc(reply_head(t->obj), REPLY_SIZE);
        redisReply *parent = task->parent->obj;
        TP_ASSERT(parent->type == REDIS_REPLY_ARRAY && (size_t)task->idx < parent->elements);
        parent->element[task->idx] = r;
    }
    *r = (redisReply){.type = task->type};
    return r;
}

/* The `n` bytes after a root object (reply_new's `extra`), or `n` bytes from its chunks. */
static void *reply_extra(const redisReadTask *task, redisReply *r, size_t n)
{
    if (task->parent == NULL) {
        struct reply_head *h = reply_head(r);
        void *p = h->p;
        h->p += REPLY_ALIGN(n);
        return p;
    }
    const redisReadTask *t = task->parent;
    while (t->parent != NULL)
        t = t->parent;
    return reply_alloc(reply_head(t->obj), n);
}

static void *reply_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = reply_new(task, len + 1, 0);
    r->str = reply_extra(task, r, len + 1);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *reply_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    /* Room for the elements' own objects too, guessed at 64 bytes each (a bet's answer takes
     * ~48), so a typical reply is one allocation; more comes in chunks. */
    redisReply *r =
        reply_new(task, n * sizeof(redisReply *), TP_MIN(n * 64, (size_t)REPLY_CHUNK_MAX));
    r->type = REDIS_REPLY_ARRAY;
    if (n > 0) {
        r->element = reply_extra(task, r, n * sizeof(redisReply *));
        memset(r->element, 0, n * sizeof(redisReply *));
    }
    r->elements = n;
    return r;
}

static void *reply_integer(const redisReadTask *task, long long value)
{
    redisReply *r = reply_new(task, 0, 0);
    r->type = REDIS_REPLY_INTEGER;
    r->integer = value;
    return r;
}

static void *reply_nil(const redisReadTask *task)
{
    redisReply *r = reply_new(task, 0, 0);
    r->type = REDIS_REPLY_NIL;
    return r;
}

/* Frees a root and everything under it (hiredis never frees a child alone). */
static void reply_free(void *root)
{
    if (root == NULL)
        return;
    struct reply_head *h = reply_head(root);
    for (struct reply_chunk *c = h->chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(h);
}

static redisReplyObjectFunctions reply_fns = {
    .createString = reply_string,
    .createArray = reply_array,
    .createInteger = reply_integer,
    .createNil = reply_nil,
    .freeObject = reply_free,
};

/* --- Connection lifecycle --- */

static void log_down(struct tp_store *s, const char *why)
{
    if (s->up) {
        s->up = false;
        tp_log_warn(MOD, "redis connection lost, reconnecting\treason=\"%s\"", why);
        s->down_logged = true;
    } else if (!s->down_logged) {
        tp_log_warn(MOD, "redis unreachable, retrying with backoff\treason=\"%s\" host=%s port=%d",
                    why, s->url.path[0] ? s->url.path : s->url.host, s->url.port);
        s->down_logged = true;
    } else {
        tp_log_debug(MOD, "redis connect attempt failed\treason=\"%s\" attempt=%u", why,
                     s->attempts);
    }
}

/* Abandons the current context ourselves: owed callbacks get `err`, later hiredis callbacks on
 * the context become no-ops (ac->data = NULL). Safe inside a hiredis callback: redisAsyncFree is
 * then deferred by hiredis until the callback returns. */
static void drop_context(struct tp_store *s, int err)
{
    redisAsyncContext *ac = s->ac;
    s->ac = NULL;
    s->inflight = 0;
    ev_timer_stop(s->loop, &s->connect_timer);
    for (struct sub *sb = s->subs; sb; sb = sb->next)
        if (sb->confirmed)
            sb->gap = true;
    if (ac != NULL)
        ac->data = NULL;
    fail_all(s, err);
    if (ac != NULL)
        redisAsyncFree(ac);
}

/* The connection is gone or failed: drop it and schedule the next attempt. */
static void connection_failed(struct tp_store *s, const char *why)
{
    if (s->dead)
        return;
    log_down(s, why);
    s->state = ST_DOWN;
    s->attempts++;
    drop_context(s, TP_EUNAVAIL);
    if (!s->dead)
        schedule_retry(s);
}

static void schedule_retry(struct tp_store *s)
{
    /* Full backoff doubles per failure up to the cap; the delay is drawn from [b/2, b) so many
     * workers restarting together do not hammer Redis in lock step. */
    int b = s->backoff_ms;
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    double delay = (b / 2 + (double)(s->rng % (uint64_t)(b / 2 + 1))) / 1000.0;
    s->backoff_ms = TP_MIN(b * 2, BACKOFF_MAX_MS);
    ev_timer_stop(s->loop, &s->retry_timer);
    ev_timer_set(&s->retry_timer, delay, 0);
    ev_timer_start(s->loop, &s->retry_timer);
}

static void on_ready(struct tp_store *s);
static void subscribe_one(struct tp_store *s, struct sub *sb);

/* Handshake replies (AUTH, SELECT, SCRIPT LOAD, the final PING). */
static void on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    struct tp_store *s = ac->data;
    redisReply *reply = r;
    enum hs_kind kind = (enum hs_kind)(intptr_t)privdata;
    if (s == NULL || reply == NULL)
        return; /* stale context, or the disconnect path reports the failure */
    if (reply->type == REDIS_REPLY_ERROR) {
        switch (kind) {
        case HS_AUTH:
        case HS_SELECT:
        case HS_READY:
            enter(s);
            /* Once per outage at error level (a wrong password would otherwise log on every
             * retry), then at debug level. */
            tp_log(s->down_logged ? TP_LOG_DEBUG : TP_LOG_ERROR, MOD,
                   "redis handshake failed\tstep=%s error=\"%s\"",
                   kind == HS_AUTH     ? "auth"
                   : kind == HS_SELECT ? "select"
                                       : "ping",
                   reply->str);
            connection_failed(s, "handshake refused");
            leave(s);
            return;
        case HS_SCRIPT:
        case HS_RELOAD:
            /* A broken script is a bug in the script; EVALSHA will report NOSCRIPT. */
            tp_log_error(MOD, "SCRIPT LOAD failed\terror=\"%s\"", reply->str);
            return;
        }
    }
    if (kind == HS_SCRIPT && reply->type == REDIS_REPLY_STRING) {
        bool known = false;
        for (size_t i = 0; i < s->nscripts; i++)
            known |= strcmp(s->scripts[i].sha, reply->str) == 0;
        if (!known)
            tp_log_warn(MOD, "SCRIPT LOAD returned an unexpected sha\tsha=%s", reply->str);
    }
    if (kind == HS_READY && s->state == ST_CONNECTING) {
        enter(s);
        on_ready(s);
        leave(s);
    }
}

static void on_ready(struct tp_store *s)
{
    ev_timer_stop(s->loop, &s->connect_timer);
    if (s->ever_connected) {
        s->stats.reconnects++;
        tp_metrics_inc(TP_METRIC_REDIS_RECONNECTS_TOTAL);
    }
    tp_log_info(MOD, "redis connected\thost=%s port=%d db=%d scripts=%zu after_attempts=%u",
                s->url.path[0] ? s->url.path : s->url.host, s->url.port, s->url.db, s->nscripts,
                s->attempts);
    s->state = ST_READY;
    s->up = true;
    s->ever_connected = true;
    s->down_logged = false;
    s->attempts = 0;
    s->backoff_ms = BACKOFF_MIN_MS;
    for (struct sub *sb = s->subs; sb && !s->dead; sb = sb->next)
        subscribe_one(s, sb);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct tp_store *s = cac->data;
    if (s == NULL)
        return;
    redisAsyncContext *ac = s->ac; /* the same context, non-const */
    TP_ASSERT(ac == cac);
    enter(s);
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this callback (no onDisconnect follows). */
        char why[128];
        snprintf(why, sizeof(why), "%s", cac->errstr ? cac->errstr : "connect failed");
        ac->data = NULL;
        s->ac = NULL;
        connection_failed(s, why);
        leave(s);
        return;
    }
    if (ac->c.fd >= 0 && s->url.path[0] == '\0')
        redisEnableKeepAlive(&ac->c);
    /* The handshake is pipelined; the PING reply marks the connection ready. */
    int rc = 0;
    if (s->url.password[0] && s->url.user[0])
        rc |= redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_AUTH, "AUTH %s %s",
                                s->url.user, s->url.password);
    else if (s->url.password[0])
        rc |= redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_AUTH, "AUTH %s",
                                s->url.password);
    if (s->url.db != 0)
        rc |= redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_SELECT, "SELECT %d",
                                s->url.db);
    for (size_t i = 0; i < s->nscripts; i++)
        rc |= redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_SCRIPT, "SCRIPT LOAD %b",
                                s->scripts[i].body, s->scripts[i].len);
    rc |= redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_READY, "PING");
    if (rc != REDIS_OK)
        connection_failed(s, "cannot queue handshake");
    leave(s);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    struct tp_store *s = cac->data;
    (void)status;
    if (s == NULL)
        return;
    /* hiredis already delivered NULL replies to every pending command and frees the context
     * after we return: forget it without freeing it. */
    char why[128];
    snprintf(why, sizeof(why), "%s", cac->err ? cac->errstr : "closed by server");
    enter(s);
    if (s->ac == cac) {
        s->ac->data = NULL;
        s->ac = NULL;
    }
    connection_failed(s, why);
    leave(s);
}

static void start_connect(struct tp_store *s)
{
    redisAsyncContext *ac = s->url.path[0] ? redisAsyncConnectUnix(s->url.path)
                                           : redisAsyncConnect(s->url.host, s->url.port);
    if (ac == NULL) {
        connection_failed(s, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        connection_failed(s, why);
        return;
    }
    s->ac = ac;
    s->state = ST_CONNECTING;
    ac->data = s;
    ac->c.reader->fn = &reply_fns; /* before the first byte is read */
    /* Attach before setting the connect callback: setting it arms the first write event. */
    redisLibevAttach(s->loop, ac);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);
    double t = TP_MAX(s->timeout_ms, 1000) / 1000.0;
    ev_timer_set(&s->connect_timer, t, 0);
    ev_timer_start(s->loop, &s->connect_timer);
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store *s = w->data;
    (void)loop;
    (void)revents;
    enter(s);
    if (s->state == ST_DOWN && s->ac == NULL)
        start_connect(s);
    leave(s);
}

static void on_connect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store *s = w->data;
    (void)loop;
    (void)revents;
    enter(s);
    if (s->state == ST_CONNECTING)
        connection_failed(s, "connect or handshake timed out");
    leave(s);
}

/* Times out owed callbacks whose deadline passed. A late reply then finds cb == NULL and is
 * dropped. If Redis has sent nothing at all for a long time while commands are outstanding,
 * the connection is considered stalled (network black hole, hung server) and is dropped, so
 * later commands fail fast instead of each waiting out its deadline. */
static void on_cmd_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store *s = w->data;
    (void)revents;
    double now = ev_now(loop);
    enter(s);
    while (s->head != NULL && s->head->deadline <= now + 0.0005 && !s->dead)
        complete(s, s->head, TP_ETIMEDOUT, NULL);
    if (!s->dead) {
        double stall = TP_MAX(4.0 * s->timeout_ms, 5000.0) / 1000.0;
        if (s->state == ST_READY && s->inflight > 0 && now - s->last_progress >= stall)
            connection_failed(s, "no reply from redis, connection stalled");
    }
    if (!s->dead)
        arm_cmd_timer(s);
    leave(s);
}

/* --- Commands --- */

static void retry_script(struct tp_store *s, redisAsyncContext *ac, struct pending *p);

static bool is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* The hiredis callback of every user command: see the ownership note at the top. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct pending *p = privdata;
    struct tp_store *s = ac->data;
    redisReply *reply = r;
    if (s != NULL) {
        TP_ASSERT(s->inflight > 0);
        s->inflight--;
        if (reply != NULL)
            s->last_progress = ev_now(s->loop);
    }
    if (p->cb == NULL) { /* timed out earlier, or failed by a teardown: drop the late reply */
        free(p);
        return;
    }
    TP_ASSERT(s != NULL); /* whoever detaches a context completes its callbacks first */
    enter(s);
    if (reply == NULL) {
        /* The context is going down (hiredis calls onDisconnect right after): refuse new
         * commands from now on, including from this very callback. */
        if (s->state == ST_READY)
            s->state = ST_DOWN;
        complete(s, p, TP_EUNAVAIL, NULL);
    } else if (p->script != NULL && !p->retried && is_noscript(reply) && s->state == ST_READY) {
        retry_script(s, ac, p);
    } else {
        complete(s, p, 0, reply);
    }
    if (p->cb == NULL)
        free(p);
    leave(s);
}

/* NOSCRIPT (Redis restarted or SCRIPT FLUSH): load the script and re-send the EVALSHA on the
 * same pending, keeping its place and deadline. Both are pipelined, so the retry finds it. */
static void retry_script(struct tp_store *s, redisAsyncContext *ac, struct pending *p)
{
    p->retried = true;
    tp_log_info(MOD, "script missing in redis, reloading\tscript=%s", p->script->name);
    if (redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_RELOAD, "SCRIPT LOAD %b",
                          p->script->body, p->script->len) != REDIS_OK ||
        redisAsyncFormattedCommand(ac, on_reply, p, p->resp, p->resp_len) != REDIS_OK) {
        complete(s, p, TP_EUNAVAIL, NULL);
        return;
    }
    s->inflight++;
}

/* Registers p as owed and sent: deadline (`deadline` 0: the store's timeout from now), list,
 * timer. */
static void track(struct tp_store *s, struct pending *p, double deadline)
{
    double now = ev_now(s->loop);
    p->deadline = deadline > 0 ? deadline : now + s->timeout_ms / 1000.0;
    p->sent_ns = tp_mono_ns();
    if (p->blocking_read)
        s->blocking_reads++;
    p->blocking = p->blocking_read || s->blocking_reads > 0;
    if (s->inflight++ == 0)
        s->last_progress = now;
    s->stats.commands++;
    tp_metrics_inc(TP_METRIC_REDIS_COMMANDS_TOTAL);
    link_pending(s, p);
    if (s->head == p)
        arm_cmd_timer(s);
}

static int check_usable(const struct tp_store *s, tp_store_cb cb)
{
    if (cb == NULL || s->subs != NULL)
        return TP_EINVAL;
    if (s->state != ST_READY || s->ac == NULL)
        return TP_EUNAVAIL;
    return 0;
}

/* ASKING right before the command, on the same connection (an ASK redirect): its reply is not
 * needed (an error there shows in the command's own reply as another redirect). */
static int send_asking(struct tp_store *s, const struct tp_store_send *o)
{
    if (o == NULL || !o->asking)
        return 0;
    return redisAsyncCommand(s->ac, NULL, NULL, "ASKING") == REDIS_OK ? 0 : TP_EUNAVAIL;
}

int tp_store_commandv(struct tp_store *s, tp_store_cb cb, void *ud, const char *fmt, va_list ap)
{
    if (s->cl != NULL) { /* formatted as hiredis would send it, then routed by its words */
        char *cmd = NULL;
        int len = redisvFormatCommand(&cmd, fmt, ap);
        int rc = len > 0 ? tp_store_cluster_resp(s->cl, cb, ud, cmd, (size_t)len) : TP_EINVAL;
        free(cmd);
        return rc;
    }
    int err = check_usable(s, cb);
    if (err != 0)
        return err;
    struct pending *p = tp_xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->ud = ud;
    if (redisvAsyncCommand(s->ac, on_reply, p, fmt, ap) != REDIS_OK) {
        free(p);
        return TP_EINVAL;
    }
    track(s, p, 0);
    return 0;
}

void tp_store_flush(struct tp_store *s)
{
    /* hiredis appends commands to its output buffer and writes them when its write watcher
     * fires, on the loop's next poll; this is what that watcher would do. */
    if (s == NULL || s->dead || s->cl != NULL || s->state != ST_READY || s->ac == NULL ||
        s->depth > 0)
        return;
    enter(s);
    redisAsyncHandleWrite(s->ac);
    leave(s);
}

int tp_store_command(struct tp_store *s, tp_store_cb cb, void *ud, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = tp_store_commandv(s, cb, ud, fmt, ap);
    va_end(ap);
    return r;
}

int tp_store_commandargv(struct tp_store *s, tp_store_cb cb, void *ud, int argc, const char **argv,
                         const size_t *argvlen)
{
    if (s->cl != NULL)
        return tp_store_cluster_argv(s->cl, cb, ud, argc, argv, argvlen);
    return tp_store_send_argv(s, NULL, cb, ud, argc, argv, argvlen);
}

int tp_store_commandl(struct tp_store *s, tp_store_cb cb, void *ud, ...)
{
    const char *argv[TP_STORE_COMMANDL_MAX];
    int argc = 0;
    va_list ap;
    va_start(ap, ud);
    for (const char *a = va_arg(ap, const char *); a != NULL; a = va_arg(ap, const char *)) {
        if (argc == TP_STORE_COMMANDL_MAX) {
            va_end(ap);
            return TP_EINVAL;
        }
        argv[argc++] = a;
    }
    va_end(ap);
    return tp_store_commandargv(s, cb, ud, argc, argv, NULL);
}

int tp_store_send_argv(struct tp_store *s, const struct tp_store_send *o, tp_store_cb cb, void *ud,
                       int argc, const char **argv, const size_t *argvlen)
{
    int err = check_usable(s, cb);
    if (err != 0)
        return err;
    if (argc <= 0 || argv == NULL)
        return TP_EINVAL;
    size_t lens_stack[16], *lens = NULL;
    if (argvlen == NULL) {
        lens = argc <= 16 ? lens_stack : tp_xmalloc((size_t)argc * sizeof(*lens));
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        argvlen = lens;
    }
    struct pending *p = tp_xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->ud = ud;
    p->blocking_read = tp_store_resp_blocking_read(argc, argv, argvlen);
    /* Formatted by store_resp.c: hiredis's redisAsyncCommandArgv runs sdscatfmt per argument. */
    struct tp_buf b;
    tp_buf_init(&b);
    tp_store_resp_argv(&b, argc, argv, argvlen);
    int rc = send_asking(s, o) != 0
                 ? REDIS_ERR
                 : redisAsyncFormattedCommand(s->ac, on_reply, p, tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
    if (lens != NULL && lens != lens_stack)
        free(lens);
    if (rc != REDIS_OK) {
        free(p);
        return TP_EINVAL;
    }
    track(s, p, o ? o->deadline : 0);
    return 0;
}

int tp_store_script(struct tp_store *s, const char *name, int nkeys, int argc, const char **argv,
                    const size_t *argvlen, tp_store_cb cb, void *ud)
{
    if (s->cl == NULL && s->acks.need > 0) /* acked means replicated: WAIT after it */
        return tp_store_acks_script(&s->acks, s, ev_now(s->loop) + s->timeout_ms / 1000.0, name,
                                    nkeys, argc, argv, argvlen, cb, ud);
    if (s->cl == NULL)
        return tp_store_send_script(s, NULL, name, nkeys, argc, argv, argvlen, cb, ud);
    if (cb == NULL || tp_store_cluster_subscribed(s->cl) ||
        (find_script(s, name) != NULL &&
         (argc < 0 || nkeys < 0 || nkeys > argc || (argc > 0 && argv == NULL))))
        return TP_EINVAL;
    if (find_script(s, name) == NULL)
        return TP_ENOTFOUND;
    return tp_store_cluster_script(s->cl, name, nkeys, argc, argv, argvlen, cb, ud);
}

int tp_store_send_script(struct tp_store *s, const struct tp_store_send *o, const char *name,
                         int nkeys, int argc, const char **argv, const size_t *argvlen,
                         tp_store_cb cb, void *ud)
{
    int err = check_usable(s, cb);
    if (err != 0 && err != TP_EUNAVAIL)
        return err;
    const struct tp_store_script *sc = find_script(s, name);
    if (sc == NULL)
        return TP_ENOTFOUND;
    if (argc < 0 || nkeys < 0 || nkeys > argc || (argc > 0 && argv == NULL))
        return TP_EINVAL;
    if (err != 0)
        return err;

    /* One allocation: the pending, then the EVALSHA as RESP, kept for the NOSCRIPT retry. */
    struct tp_buf b;
    tp_buf_init(&b);
    tp_store_resp_evalsha(&b, sc->sha, nkeys, argc, argv, argvlen);
    struct pending *p = tp_xcalloc(1, sizeof(*p) + tp_buf_size(&b));
    p->resp = (char *)(p + 1);
    p->resp_len = tp_buf_size(&b);
    memcpy(p->resp, tp_buf_ptr(&b), p->resp_len);
    tp_buf_deinit(&b);
    p->script = sc;
    p->cb = cb;
    p->ud = ud;
    if (send_asking(s, o) != 0 ||
        redisAsyncFormattedCommand(s->ac, on_reply, p, p->resp, p->resp_len) != REDIS_OK) {
        free(p);
        return TP_EUNAVAIL;
    }
    track(s, p, o ? o->deadline : 0);
    return 0;
}

const char *tp_store_script_sha(const struct tp_store *s, const char *name)
{
    const struct tp_store_script *sc = find_script(s, name);
    return sc ? sc->sha : NULL;
}

/* --- Pub/sub --- */

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct sub *sb = privdata;
    redisReply *reply = r;
    if (reply == NULL) {
        /* The context is going away: this is hiredis's last call with this privdata. */
        sb->attached = false;
        if (sb->store == NULL)
            free(sb);
        return;
    }
    struct tp_store *s = ac->data;
    if (s == NULL || sb->store == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    enter(s);
    if (strcmp(kind, "subscribe") == 0) {
        bool first = !sb->confirmed;
        sb->confirmed = true;
        if (sb->gap) {
            sb->gap = false;
            sb->cb(TP_EUNAVAIL, NULL, sb->ud);
        } else if (first) {
            sb->cb(0, (const struct tp_store_reply *)reply, sb->ud);
        }
    } else if (strcmp(kind, "message") == 0) {
        sb->cb(0, (const struct tp_store_reply *)reply, sb->ud);
    }
    leave(s);
}

static void subscribe_one(struct tp_store *s, struct sub *sb)
{
    if (sb->attached || s->ac == NULL)
        return;
    if (redisAsyncCommand(s->ac, on_sub_reply, sb, "SUBSCRIBE %s", sb->channel) == REDIS_OK)
        sb->attached = true;
}

int tp_store_subscribe(struct tp_store *s, const char *channel, tp_store_cb cb, void *ud)
{
    if (s->cl != NULL)
        return tp_store_cluster_subscribe(s->cl, channel, cb, ud);
    if (cb == NULL || channel == NULL || channel[0] == '\0' || s->head != NULL ||
        s->state == ST_CLOSED)
        return TP_EINVAL;
    for (struct sub *sb = s->subs; sb; sb = sb->next)
        if (strcmp(sb->channel, channel) == 0)
            return TP_ECONFLICT;
    size_t n = strlen(channel);
    struct sub *sb = tp_xcalloc(1, sizeof(*sb) + n + 1);
    memcpy(sb->channel, channel, n + 1);
    sb->store = s;
    sb->cb = cb;
    sb->ud = ud;
    sb->next = s->subs;
    s->subs = sb;
    if (s->state == ST_READY)
        subscribe_one(s, sb);
    return 0;
}

/* --- Lifecycle --- */

/* The fields every store needs, before it connects (standalone) or hands over (cluster). */
static struct tp_store *store_alloc(struct ev_loop *loop, int timeout_ms, const char *scripts_dir)
{
    struct tp_store *s = tp_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    s->state = ST_DOWN;
    ev_timer_init(&s->cmd_timer, on_cmd_timer, 0, 0);
    ev_timer_init(&s->retry_timer, on_retry_timer, 0, 0);
    ev_timer_init(&s->connect_timer, on_connect_timer, 0, 0);
    s->cmd_timer.data = s->retry_timer.data = s->connect_timer.data = s;
    if (scripts_dir != NULL && tp_store_scripts_load(scripts_dir, &s->scripts, &s->nscripts) != 0) {
        destroy(s);
        return NULL;
    }
    return s;
}

struct tp_store *tp_store_new_at(struct ev_loop *loop, const struct tp_url_redis *url,
                                 int timeout_ms, const char *scripts_dir)
{
    struct tp_store *s = store_alloc(loop, timeout_ms, scripts_dir);
    if (s == NULL)
        return NULL;
    s->url = *url;
    s->backoff_ms = BACKOFF_MIN_MS;
    s->rng = ((uint64_t)tp_mono_ms() << 20) ^ ((uint64_t)getpid() << 8) ^ (uintptr_t)s;
    if (s->rng == 0)
        s->rng = 88172645463325252ull;
    start_connect(s);
    return s;
}

struct tp_store *tp_store_new(struct ev_loop *loop, const struct tp_config_redis *cfg,
                              const char *scripts_dir)
{
    if (strcmp(cfg->mode, "cluster") == 0) {
        /* The outer store keeps the scripts (names and digests for callers); the cluster client
         * gives each node's connection its own copy to load. */
        struct tp_store *s = store_alloc(loop, cfg->timeout_ms, scripts_dir);
        if (s == NULL)
            return NULL;
        s->cl = tp_store_cluster_new(loop, cfg, scripts_dir);
        if (s->cl == NULL) {
            destroy(s);
            return NULL;
        }
        return s;
    }
    struct tp_url_redis url;
    if (tp_url_parse_redis(cfg->url, &url) != 0) {
        tp_log_error(MOD, "invalid redis.url (expected redis://[[user]:password@]host[:port]"
                          "[/db] or unix:///path[?db=N])");
        return NULL;
    }
    struct tp_store *s = tp_store_new_at(loop, &url, cfg->timeout_ms, scripts_dir);
    if (s != NULL) /* not in tp_store_new_at: a cluster node's store leaves WAIT to the cluster */
        tp_store_acks_init(&s->acks, cfg->replicas_ack, s->timeout_ms);
    return s;
}

static void destroy(struct tp_store *s)
{
    tp_store_scripts_free(s->scripts, s->nscripts);
    free(s);
}

void tp_store_free(struct tp_store *s)
{
    if (s == NULL || s->dead)
        return;
    s->dead = true;
    if (s->cl != NULL) { /* the cluster client owes every callback; this store owes none */
        struct tp_store_cluster *cl = s->cl;
        s->cl = NULL;
        tp_store_cluster_free(cl);
        destroy(s);
        return;
    }
    s->depth++; /* no callback below may free the struct under us */
    s->state = ST_CLOSED;
    ev_timer_stop(s->loop, &s->cmd_timer);
    ev_timer_stop(s->loop, &s->retry_timer);
    ev_timer_stop(s->loop, &s->connect_timer);
    /* Subscriptions first: each gets its final TP_ECLOSED; the ones hiredis still holds are
     * freed by their last (NULL) hiredis callback, the others here. */
    struct sub *subs = s->subs;
    s->subs = NULL;
    for (struct sub *sb = subs; sb; sb = sb->next) {
        sb->store = NULL;
        sb->cb(TP_ECLOSED, NULL, sb->ud);
    }
    while (subs != NULL) {
        struct sub *next = subs->next;
        if (!subs->attached)
            free(subs); /* else hiredis holds it: its NULL callback (in drop_context, or
                           deferred until hiredis leaves its callback) frees it */
        subs = next;
    }
    drop_context(s, TP_ECLOSED);
    if (--s->depth == 0)
        destroy(s);
}

bool tp_store_is_connected(const struct tp_store *s)
{
    if (s != NULL && s->cl != NULL)
        return tp_store_cluster_ready(s->cl);
    return s != NULL && s->state == ST_READY;
}

size_t tp_store_owed(const struct tp_store *s)
{
    return s->owed;
}

void tp_store_get_stats(const struct tp_store *s, struct tp_store_stats *out)
{
    if (s->cl != NULL) {
        tp_store_cluster_stats(s->cl, out);
        return;
    }
    *out = s->stats;
}

/* --- Replies --- */

enum tp_reply_type tp_reply_type(const struct tp_store_reply *r)
{
    return (enum tp_reply_type)((const redisReply *)r)->type;
}

long long tp_reply_integer(const struct tp_store_reply *r)
{
    const redisReply *x = (const redisReply *)r;
    return x->type == REDIS_REPLY_INTEGER ? x->integer : 0;
}

const char *tp_reply_str(const struct tp_store_reply *r, size_t *len)
{
    const redisReply *x = (const redisReply *)r;
    if (x->type != REDIS_REPLY_STRING && x->type != REDIS_REPLY_STATUS &&
        x->type != REDIS_REPLY_ERROR) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = x->len;
    return x->str;
}

size_t tp_reply_len(const struct tp_store_reply *r)
{
    const redisReply *x = (const redisReply *)r;
    return x->type == REDIS_REPLY_ARRAY ? x->elements : 0;
}

const struct tp_store_reply *tp_reply_at(const struct tp_store_reply *r, size_t i)
{
    const redisReply *x = (const redisReply *)r;
    if (x->type != REDIS_REPLY_ARRAY || i >= x->elements)
        return NULL;
    return (const struct tp_store_reply *)x->element[i];
}

struct tp_store_reply *tp_store_reply_parse(const char *resp, size_t len)
{
    redisReader *rd = redisReaderCreateWithFunctions(&reply_fns); /* as a context's replies */
    void *r = NULL;
    if (redisReaderFeed(rd, resp, len) != REDIS_OK || redisReaderGetReply(rd, &r) != REDIS_OK ||
        r == NULL || rd->pos != rd->len) {
        reply_free(r);
        r = NULL;
    }
    redisReaderFree(rd);
    return r;
}

void tp_store_reply_free(struct tp_store_reply *r)
{
    reply_free(r); /* NULL is a no-op */
}
