/*
 * A standalone store's connection over hiredis 0.14 (async, libev adapter): the context's connect,
 * handshake and disconnect, the commands' bytes and their replies (a NOSCRIPT retried once),
 * pub/sub, and the reply objects. The only file that includes hiredis (scripts/check-layers);
 * the state is store_internal.h's, the reconnect policy store.c's, the owed callbacks
 * store_owed.c's.
 *
 * Stale contexts: when we abandon a context ourselves (connect timeout, handshake failure,
 * stall, tp_store_free) we set `ac->data = NULL` first, so every later hiredis callback on it
 * (replies, NULL replies, disconnect) sees no store and does nothing but free its pending.
 */
#include "store_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "store"

/* Tags for handshake commands, passed as privdata (never dereferenced). */
enum hs_kind { HS_AUTH = 1, HS_SELECT, HS_SCRIPT, HS_READY, HS_RELOAD };

_Static_assert((int)TP_REPLY_STRING == REDIS_REPLY_STRING &&
                   (int)TP_REPLY_ARRAY == REDIS_REPLY_ARRAY &&
                   (int)TP_REPLY_INTEGER == REDIS_REPLY_INTEGER &&
                   (int)TP_REPLY_NIL == REDIS_REPLY_NIL &&
                   (int)TP_REPLY_STATUS == REDIS_REPLY_STATUS &&
                   (int)TP_REPLY_ERROR == REDIS_REPLY_ERROR,
               "tp_reply_type mirrors hiredis reply types");

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

/* --- The context: connect, handshake, disconnect --- */

/* Abandons the current context ourselves: owed callbacks get `err`, later hiredis callbacks on
 * the context become no-ops (ac->data = NULL). Safe inside a hiredis callback: redisAsyncFree is
 * then deferred by hiredis until the callback returns. */
void tp_store_drop_context(struct tp_store *s, int err)
{
    redisAsyncContext *ac = s->ac;
    s->ac = NULL;
    s->inflight = 0;
    ev_timer_stop(s->loop, &s->connect_timer);
    for (struct tp_store_sub *sb = s->subs; sb; sb = sb->next)
        if (sb->confirmed)
            sb->gap = true;
    if (ac != NULL)
        ac->data = NULL;
    tp_store_fail_all(s, err);
    if (ac != NULL)
        redisAsyncFree(ac);
}

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
            tp_store_enter(s);
            /* Once per outage at error level (a wrong password would otherwise log on every
             * retry), then at debug level. */
            tp_log(s->down_logged ? TP_LOG_DEBUG : TP_LOG_ERROR, MOD,
                   "redis handshake failed\tstep=%s error=\"%s\"",
                   kind == HS_AUTH     ? "auth"
                   : kind == HS_SELECT ? "select"
                                       : "ping",
                   reply->str);
            tp_store_connection_failed(s, "handshake refused");
            tp_store_leave(s);
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
    if (kind == HS_READY && s->state == TP_STORE_CONNECTING) {
        tp_store_enter(s);
        tp_store_on_ready(s);
        tp_store_leave(s);
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct tp_store *s = cac->data;
    if (s == NULL)
        return;
    redisAsyncContext *ac = s->ac; /* the same context, non-const */
    TP_ASSERT(ac == cac);
    tp_store_enter(s);
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this callback (no onDisconnect follows). */
        char why[128];
        snprintf(why, sizeof(why), "%s", cac->errstr ? cac->errstr : "connect failed");
        ac->data = NULL;
        s->ac = NULL;
        tp_store_connection_failed(s, why);
        tp_store_leave(s);
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
        tp_store_connection_failed(s, "cannot queue handshake");
    tp_store_leave(s);
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
    tp_store_enter(s);
    if (s->ac == cac) {
        s->ac->data = NULL;
        s->ac = NULL;
    }
    tp_store_connection_failed(s, why);
    tp_store_leave(s);
}

void tp_store_start_connect(struct tp_store *s)
{
    redisAsyncContext *ac = s->url.path[0] ? redisAsyncConnectUnix(s->url.path)
                                           : redisAsyncConnect(s->url.host, s->url.port);
    if (ac == NULL) {
        tp_store_connection_failed(s, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        tp_store_connection_failed(s, why);
        return;
    }
    s->ac = ac;
    s->state = TP_STORE_CONNECTING;
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

/* --- Commands --- */

static void retry_script(struct tp_store *s, redisAsyncContext *ac, struct tp_store_pending *p);

static bool is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* The hiredis callback of every user command: see the ownership note in store_owed.c. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct tp_store_pending *p = privdata;
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
    tp_store_enter(s);
    if (reply == NULL) {
        /* The context is going down (hiredis calls onDisconnect right after): refuse new
         * commands from now on, including from this very callback. */
        if (s->state == TP_STORE_READY)
            s->state = TP_STORE_DOWN;
        tp_store_complete(s, p, TP_EUNAVAIL, NULL);
    } else if (p->script != NULL && !p->retried && is_noscript(reply) &&
               s->state == TP_STORE_READY) {
        retry_script(s, ac, p);
    } else {
        tp_store_complete(s, p, 0, (const struct tp_store_reply *)reply);
    }
    if (p->cb == NULL)
        free(p);
    tp_store_leave(s);
}

/* NOSCRIPT (Redis restarted or SCRIPT FLUSH): load the script and re-send the EVALSHA on the
 * same pending, keeping its place and deadline. Both are pipelined, so the retry finds it. */
static void retry_script(struct tp_store *s, redisAsyncContext *ac, struct tp_store_pending *p)
{
    p->retried = true;
    tp_log_info(MOD, "script missing in redis, reloading\tscript=%s", p->script->name);
    if (redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_RELOAD, "SCRIPT LOAD %b",
                          p->script->body, p->script->len) != REDIS_OK ||
        redisAsyncFormattedCommand(ac, on_reply, p, p->resp, p->resp_len) != REDIS_OK) {
        tp_store_complete(s, p, TP_EUNAVAIL, NULL);
        return;
    }
    s->inflight++;
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
    int err = tp_store_check_usable(s, cb);
    if (err != 0)
        return err;
    struct tp_store_pending *p = tp_xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->ud = ud;
    if (redisvAsyncCommand(s->ac, on_reply, p, fmt, ap) != REDIS_OK) {
        free(p);
        return TP_EINVAL;
    }
    tp_store_track(s, p, 0);
    return 0;
}

void tp_store_flush(struct tp_store *s)
{
    /* hiredis appends commands to its output buffer and writes them when its write watcher
     * fires, on the loop's next poll; this is what that watcher would do. */
    if (s == NULL || s->dead || s->cl != NULL || s->state != TP_STORE_READY || s->ac == NULL ||
        s->depth > 0)
        return;
    tp_store_enter(s);
    redisAsyncHandleWrite(s->ac);
    tp_store_leave(s);
}

int tp_store_send_argv(struct tp_store *s, const struct tp_store_send *o, tp_store_cb cb, void *ud,
                       int argc, const char **argv, const size_t *argvlen)
{
    int err = tp_store_check_usable(s, cb);
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
    struct tp_store_pending *p = tp_xcalloc(1, sizeof(*p));
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
    tp_store_track(s, p, o ? o->deadline : 0);
    return 0;
}

int tp_store_send_script(struct tp_store *s, const struct tp_store_send *o, const char *name,
                         int nkeys, int argc, const char **argv, const size_t *argvlen,
                         tp_store_cb cb, void *ud)
{
    int err = tp_store_check_usable(s, cb);
    if (err != 0 && err != TP_EUNAVAIL)
        return err;
    const struct tp_store_script *sc = tp_store_scripts_find(s->scripts, s->nscripts, name);
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
    struct tp_store_pending *p = tp_xcalloc(1, sizeof(*p) + tp_buf_size(&b));
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
    tp_store_track(s, p, o ? o->deadline : 0);
    return 0;
}

/* --- Pub/sub --- */

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct tp_store_sub *sb = privdata;
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
    tp_store_enter(s);
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
    tp_store_leave(s);
}

void tp_store_subscribe_one(struct tp_store *s, struct tp_store_sub *sb)
{
    if (sb->attached || s->ac == NULL)
        return;
    if (redisAsyncCommand(s->ac, on_sub_reply, sb, "SUBSCRIBE %s", sb->channel) == REDIS_OK)
        sb->attached = true;
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
