/*
 * The store's cluster mode (redis.mode = cluster): the public calls of store.c hand over here.
 * One standalone store (store.c, store_owed.c, store_conn.c: hiredis, deadlines, reconnects,
 * script loading) per master; this file only routes, follows and retries, using the pure rules
 * of store/cluster.
 *
 * A command is a `struct ccmd` that outlives its attempts: it goes to the master of its slot
 * with its first deadline (tp_store_send), and its node's reply comes back to on_node_reply,
 * which delivers it or, after MOVED / ASK / TRYAGAIN / CLUSTERDOWN, sends it again (at once or
 * after a back-off timer) until tp_cluster_decide gives up (MOVED, CLUSTERDOWN: a number of
 * answers) or the deadline passes (the only end of ASK and TRYAGAIN: a slot in migration answers
 * them for as long as its keys are moving). Those errors mean Redis did not run the command, so a
 * retry cannot run it twice. A lost connection
 * (TP_EUNAVAIL after sending) is delivered as it is, as in standalone mode: the command may have
 * run. The user callback runs exactly once: either from on_node_reply / the back-off timer, or
 * with TP_ECLOSED from tp_store_cluster_free.
 *
 * The slot map comes from `CLUSTER SLOTS`, asked of any ready node: at start (through the
 * seeds), after MOVED or CLUSTERDOWN, after a lost connection, while a master is down (its
 * replica's promotion shows there), and every 10 s; never more than once per 200 ms. The node
 * connections and the map live in store_cluster_map.c (store_cluster_internal.h).
 *
 * Reads of several streams (the outbox writer's XREADGROUP over every bucket) span slots, which
 * a cluster refuses: they are split into one read per stream, without BLOCK, polled every 25 ms
 * until the BLOCK time is over, and the answers merged into one reply of the usual shape.
 *
 * Pub/sub is plain SUBSCRIBE on one node (a cluster forwards every PUBLISH to all its nodes):
 * the broadcasts are one small message per tick for the whole deployment, so the forwarding
 * costs little, and the subscriber need not follow slot moves as SSUBSCRIBE would. When that
 * node stays unreachable for 2 s the subscription moves to another node and the owner gets
 * TP_EUNAVAIL (resync), as after a reconnect.
 */
#include "store_cluster_internal.h"
#include "store_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/store/cluster.h"

#include <ev.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MOD "store"
#define REFRESH_EVERY_S 10.0
#define TICK_READY_S 1.0
#define TICK_STARTING_S 0.1
#define SUB_MOVE_AFTER_S 2.0
#define SPLIT_POLL_S 0.025
#define RESEND_WAIT_MS 20

struct ccmd {
    struct ccmd *prev, *next; /* cl->waiting while on the back-off timer */
    struct tp_store_cluster *cl;
    tp_store_cb cb;
    void *ud;
    struct split *sp; /* a part of a split read: completes into sp, not to a user */
    double deadline;
    struct tp_cluster_tries tries; /* what its attempts were answered (tp_cluster_decide) */
    int slot;
    bool asking;
    bool waiting;
    struct tp_cluster_redirect ask;
    struct tp_store_node *node; /* where the last attempt went (WAIT goes there too) */
    char script[64];            /* empty: a plain command */
    int nkeys;
    ev_timer timer;
    int argc;
    const char **argv;
    size_t *lens;
};

/* A read of several streams split by stream (see the top). */
struct split {
    struct split *prev, *next; /* cl->splits */
    struct tp_store_cluster *cl;
    tp_store_cb cb;
    void *ud;
    double deadline, until; /* until: end of BLOCK (0: no BLOCK) */
    int nparts, left, err;
    struct tp_buf merged; /* "[stream, entries]" of each part that had entries */
    int nmerged;
    struct tp_buf error; /* the first error reply of a part, RESP */
    ev_timer poll;
    /* the template: words before STREAMS without BLOCK n, then the streams and their ids */
    int nprefix, nstreams;
    const char **argv;
    size_t *lens;
};

static void cl_destroy(struct tp_store_cluster *cl);

static void enter(struct tp_store_cluster *cl)
{
    cl->depth++;
}

/* Returns true when the client was freed meanwhile and is now gone. */
static bool leave(struct tp_store_cluster *cl)
{
    if (--cl->depth == 0 && cl->dead) {
        cl_destroy(cl);
        return true;
    }
    return false;
}

/* --- Commands --- */

static void split_part_done(struct split *sp, int err, const struct tp_store_reply *r);

/* The command's end: its callback (or its split's) once, then it is freed. */
static void finish(struct ccmd *c, int err, const struct tp_store_reply *r)
{
    if (c->sp != NULL)
        split_part_done(c->sp, err, r);
    else
        c->cb(err, r, c->ud);
    free(c);
}

static void on_node_reply(int err, const struct tp_store_reply *r, void *ud);

/* Sends c to the node its slot (or ASK) names. 0, or TP_EUNAVAIL when that node is unknown or
 * not connected (nothing was sent), TP_EINVAL. */
static int send_cmd(struct ccmd *c)
{
    struct tp_store_cluster *cl = c->cl;
    struct tp_store_node *n = NULL;
    if (c->asking) {
        n = tp_store_cluster_node_get(cl, c->ask.host, c->ask.port);
    } else if (c->slot >= 0) {
        const struct tp_cluster_node *m =
            cl->have_map ? tp_cluster_map_route(cl->map, c->slot) : NULL;
        n = m ? tp_store_cluster_node_get(cl, m->host, m->port) : NULL;
    } else {
        n = tp_store_cluster_node_any(cl, true);
    }
    if (n == NULL)
        return TP_EUNAVAIL;
    struct tp_store_send o = {.deadline = c->deadline, .asking = c->asking};
    int rc = c->script[0]
                 ? tp_store_send_script(n->st, &o, c->script, c->nkeys, c->argc, c->argv, c->lens,
                                        on_node_reply, c)
                 : tp_store_send_argv(n->st, &o, on_node_reply, c, c->argc, c->argv, c->lens);
    if (rc == 0)
        c->node = n;
    return rc;
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents);

/* Sends c again after `ms`, or ends it with TP_ETIMEDOUT when that is past its deadline. */
static void later(struct ccmd *c, int ms)
{
    struct tp_store_cluster *cl = c->cl;
    double after = ms / 1000.0;
    if (ev_now(cl->loop) + after >= c->deadline) {
        finish(c, TP_ETIMEDOUT, NULL);
        return;
    }
    c->waiting = true;
    c->prev = NULL;
    c->next = cl->waiting;
    if (cl->waiting)
        cl->waiting->prev = c;
    cl->waiting = c;
    ev_timer_init(&c->timer, on_backoff, after, 0);
    c->timer.data = c;
    ev_timer_start(cl->loop, &c->timer);
}

static void unwait(struct ccmd *c)
{
    struct tp_store_cluster *cl = c->cl;
    ev_timer_stop(cl->loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        cl->waiting = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->waiting = false;
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ccmd *c = w->data;
    struct tp_store_cluster *cl = c->cl;
    (void)loop;
    (void)revents;
    enter(cl);
    unwait(c);
    if (send_cmd(c) != 0) {
        tp_store_cluster_refresh(cl);
        later(c, RESEND_WAIT_MS);
    }
    leave(cl);
}

/* --- Acked means replicated (redis.replicas_ack) --- */

/* WAIT's answer (store_acks.c): the held script reply, or TP_EUNAVAIL / TP_ETIMEDOUT. */
static void on_acked(int err, const struct tp_store_reply *r, void *ud)
{
    struct ccmd *c = ud;
    struct tp_store_cluster *cl = c->cl;
    enter(cl);
    finish(c, cl->dead ? TP_ECLOSED : err, cl->dead ? NULL : r);
    leave(cl);
}

static void on_node_reply(int err, const struct tp_store_reply *r, void *ud)
{
    struct ccmd *c = ud;
    struct tp_store_cluster *cl = c->cl;
    enter(cl);
    if (cl->dead || err != 0) {
        /* TP_ECLOSED from a node's connection while we live: it was pruned or replaced. */
        if (!cl->dead && (err == TP_EUNAVAIL || err == TP_ECLOSED))
            tp_store_cluster_refresh(cl);
        finish(c, cl->dead ? TP_ECLOSED : err == TP_ECLOSED ? TP_EUNAVAIL : err, NULL);
        leave(cl);
        return;
    }
    struct tp_cluster_redirect rd = {.kind = TP_CLUSTER_OK};
    if (tp_reply_type(r) == TP_REPLY_ERROR) {
        size_t len;
        const char *s = tp_reply_str(r, &len);
        tp_cluster_redirect_parse(s, len, &rd);
    }
    struct tp_cluster_decision d = tp_cluster_decide(&rd, &c->tries);
    if (d.update && cl->have_map && tp_cluster_map_move(cl->map, &rd) == 0)
        cl->map_changes++; /* MOVED: the slot's owner is another node (store_cluster_map.c) */
    if (d.refresh)
        tp_store_cluster_refresh(cl);
    if (d.action == TP_CLUSTER_DELIVER || ev_now(cl->loop) >= c->deadline) {
        if (c->script[0] && cl->acks.need > 0 && tp_reply_type(r) != TP_REPLY_ERROR) {
            /* WAIT on the node that ran it: its connection made the write */
            if (tp_store_acks_wait(&cl->acks, c->node ? c->node->st : NULL, c->deadline, r,
                                   on_acked, c) != 0)
                finish(c, TP_EUNAVAIL, NULL);
        } else
            finish(c, 0, r);
    } else {
        cl->redirects++;
        c->asking = d.asking;
        if (d.asking)
            c->ask = rd;
        if (d.action == TP_CLUSTER_LATER)
            later(c, d.delay_ms);
        else if (send_cmd(c) != 0)
            later(c, RESEND_WAIT_MS);
    }
    leave(cl);
}

/* A command with copies of its words (one allocation), not yet sent. */
static struct ccmd *ccmd_new(struct tp_store_cluster *cl, int argc, const char **argv,
                             const size_t *argvlen)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
    struct ccmd *c =
        tp_xcalloc(1, sizeof(*c) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    c->cl = cl;
    c->argc = argc;
    c->argv = (const char **)(c + 1);
    c->lens = (size_t *)(c->argv + argc);
    char *data = (char *)(c->lens + argc);
    for (int i = 0; i < argc; i++) {
        size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(data, argv[i], l);
        data[l] = '\0';
        c->argv[i] = data;
        c->lens[i] = l;
        data += l + 1;
    }
    c->deadline = ev_now(cl->loop) + cl->timeout_ms / 1000.0;
    return c;
}

/* Sends a new command; on failure frees it (no callback) and returns the error. */
static int submit(struct ccmd *c)
{
    int rc = send_cmd(c);
    if (rc != 0) {
        if (rc == TP_EUNAVAIL)
            tp_store_cluster_refresh(c->cl);
        free(c);
    }
    return rc;
}

/* --- Split reads --- */

/* Appends a reply as RESP (a part's answer kept past its callback). */
static void split_free(struct split *sp)
{
    struct tp_store_cluster *cl = sp->cl;
    ev_timer_stop(cl->loop, &sp->poll);
    if (sp->prev)
        sp->prev->next = sp->next;
    else
        cl->splits = sp->next;
    if (sp->next)
        sp->next->prev = sp->prev;
    tp_buf_deinit(&sp->merged);
    tp_buf_deinit(&sp->error);
    free(sp);
}

/* Sends one read per stream; returns how many were sent (0: the split is to be ended by the
 * caller). No part can complete before this returns: completions come from the loop. */
static int split_send(struct split *sp)
{
    struct tp_store_cluster *cl = sp->cl;
    const char *argv[64];
    size_t lens[64];
    int n = sp->nprefix;
    memcpy(argv, sp->argv, (size_t)n * sizeof(*argv));
    memcpy(lens, sp->lens, (size_t)n * sizeof(*lens));
    argv[n] = "STREAMS";
    lens[n] = 7;
    sp->left = 0;
    for (int i = 0; i < sp->nstreams; i++) {
        argv[n + 1] = sp->argv[n + i];
        lens[n + 1] = sp->lens[n + i];
        argv[n + 2] = sp->argv[n + sp->nstreams + i];
        lens[n + 2] = sp->lens[n + sp->nstreams + i];
        struct ccmd *c = ccmd_new(cl, n + 3, argv, lens);
        c->sp = sp;
        c->deadline = sp->deadline;
        c->slot = tp_cluster_slot(argv[n + 1], lens[n + 1]);
        if (submit(c) == 0)
            sp->left++;
    }
    return sp->left;
}

static void on_split_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct split *sp = w->data;
    struct tp_store_cluster *cl = sp->cl;
    (void)loop;
    (void)revents;
    enter(cl);
    if (split_send(sp) == 0) {
        tp_store_cb cb = sp->cb;
        void *ud = sp->ud;
        split_free(sp);
        cb(TP_EUNAVAIL, NULL, ud);
    }
    leave(cl);
}

static void split_part_done(struct split *sp, int err, const struct tp_store_reply *r)
{
    struct tp_store_cluster *cl = sp->cl;
    if (err != 0 && sp->err == 0)
        sp->err = err;
    else if (r != NULL && tp_reply_type(r) == TP_REPLY_ERROR && tp_buf_size(&sp->error) == 0)
        tp_store_resp_reply(&sp->error, r);
    else if (r != NULL && tp_reply_type(r) == TP_REPLY_ARRAY && tp_reply_len(r) > 0) {
        tp_store_resp_reply(&sp->merged, tp_reply_at(r, 0));
        sp->nmerged++;
    }
    if (--sp->left > 0)
        return;
    double now = ev_now(cl->loop);
    if (sp->err == 0 && tp_buf_size(&sp->error) == 0 && sp->nmerged == 0 && !cl->dead &&
        now + SPLIT_POLL_S < sp->until && now + SPLIT_POLL_S < sp->deadline) {
        /* Nothing yet, BLOCK time left: poll again (BLOCK itself would hold a node's line). */
        ev_timer_set(&sp->poll, SPLIT_POLL_S, 0);
        sp->poll.data = sp;
        ev_timer_start(cl->loop, &sp->poll);
        return;
    }
    tp_store_cb cb = sp->cb;
    void *ud = sp->ud;
    int e = cl->dead ? TP_ECLOSED : sp->err;
    struct tp_store_reply *out = NULL;
    if (e == 0) {
        struct tp_buf b;
        tp_buf_init(&b);
        if (tp_buf_size(&sp->error) > 0)
            tp_buf_append(&b, tp_buf_ptr(&sp->error), tp_buf_size(&sp->error));
        else if (sp->nmerged == 0)
            tp_buf_puts(&b, "*-1\r\n");
        else {
            tp_buf_printf(&b, "*%d\r\n", sp->nmerged);
            tp_buf_append(&b, tp_buf_ptr(&sp->merged), tp_buf_size(&sp->merged));
        }
        out = tp_store_reply_parse(tp_buf_ptr(&b), tp_buf_size(&b));
        tp_buf_deinit(&b);
        if (out == NULL)
            e = TP_EPROTO;
    }
    split_free(sp);
    cb(e, out, ud);
    tp_store_reply_free(out);
}

/* XREAD/XREADGROUP over streams of several slots: split (see the top). */
static int split_read(struct tp_store_cluster *cl, tp_store_cb cb, void *ud, int argc,
                      const char **argv, const size_t *lens)
{
    int at = -1, block = -1;
    for (int i = 1; i < argc && at < 0; i++) {
        if (lens[i] == 7 && strncasecmp(argv[i], "STREAMS", 7) == 0)
            at = i;
        else if (lens[i] == 5 && strncasecmp(argv[i], "BLOCK", 5) == 0 && i + 1 < argc)
            block = i;
    }
    int nstreams = at > 0 ? (argc - at - 1) / 2 : 0;
    if (nstreams < 1 || (argc - at - 1) % 2 != 0 || at + 3 > 64)
        return TP_EINVAL;
    /* The template with copies of the words (the caller's are borrowed; polls re-send them). */
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += lens[i] + 1;
    struct split *sp =
        tp_xcalloc(1, sizeof(*sp) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    sp->argv = (const char **)(sp + 1);
    sp->lens = (size_t *)(sp->argv + argc);
    char *data = (char *)(sp->lens + argc);
    int k = 0;
    for (int i = 0; i < argc; i++) {
        if (i == at || (block >= 0 && (i == block || i == block + 1)))
            continue;
        memcpy(data, argv[i], lens[i]);
        data[lens[i]] = '\0';
        sp->argv[k] = data;
        sp->lens[k++] = lens[i];
        data += lens[i] + 1;
        if (i < at)
            sp->nprefix++;
    }
    sp->nstreams = nstreams;
    sp->cl = cl;
    sp->cb = cb;
    sp->ud = ud;
    double now = ev_now(cl->loop);
    sp->deadline = now + cl->timeout_ms / 1000.0;
    if (block >= 0) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%.*s", (int)TP_MIN(lens[block + 1], sizeof(ms) - 1),
                 argv[block + 1]);
        sp->until = now + strtol(ms, NULL, 10) / 1000.0;
    }
    tp_buf_init(&sp->merged);
    tp_buf_init(&sp->error);
    ev_timer_init(&sp->poll, on_split_poll, 0, 0);
    sp->next = cl->splits;
    if (cl->splits)
        cl->splits->prev = sp;
    cl->splits = sp;
    if (split_send(sp) == 0) {
        split_free(sp);
        return TP_EUNAVAIL;
    }
    return 0;
}

/* --- Entry points from store.c --- */

int tp_store_cluster_argv(struct tp_store_cluster *cl, tp_store_cb cb, void *ud, int argc,
                          const char **argv, const size_t *argvlen)
{
    if (cb == NULL || argc <= 0 || argv == NULL || cl->sub != NULL)
        return TP_EINVAL;
    struct ccmd *c = ccmd_new(cl, argc, argv, argvlen);
    int slot = tp_cluster_command_slot(argc, c->argv, c->lens);
    if (slot == TP_CLUSTER_CROSS &&
        ((c->lens[0] == 5 && strncasecmp(c->argv[0], "XREAD", 5) == 0) ||
         (c->lens[0] == 10 && strncasecmp(c->argv[0], "XREADGROUP", 10) == 0))) {
        int rc = split_read(cl, cb, ud, argc, c->argv, c->lens);
        free(c);
        return rc;
    }
    c->cb = cb;
    c->ud = ud;
    /* Keys of several slots: Redis answers CROSSSLOT, which the caller then sees. */
    c->slot = slot == TP_CLUSTER_CROSS ? tp_cluster_slot(c->argv[1], c->lens[1]) : slot;
    return submit(c);
}

int tp_store_cluster_resp(struct tp_store_cluster *cl, tp_store_cb cb, void *ud, const char *cmd,
                          size_t len)
{
    int max = 1;
    for (size_t i = 0; i < len; i++)
        max += cmd[i] == '$';
    const char **argv = tp_xmalloc((size_t)max * sizeof(*argv));
    size_t *lens = tp_xmalloc((size_t)max * sizeof(*lens));
    int argc = tp_cluster_resp_argv(cmd, len, argv, lens, max);
    int rc = argc > 0 ? tp_store_cluster_argv(cl, cb, ud, argc, argv, lens) : TP_EINVAL;
    free(argv);
    free(lens);
    return rc;
}

int tp_store_cluster_script(struct tp_store_cluster *cl, const char *name, int nkeys, int argc,
                            const char **argv, const size_t *argvlen, tp_store_cb cb, void *ud)
{
    if (strlen(name) >= sizeof(((struct ccmd *)0)->script))
        return TP_EINVAL;
    struct ccmd *c = ccmd_new(cl, argc, argv, argvlen);
    c->cb = cb;
    c->ud = ud;
    snprintf(c->script, sizeof(c->script), "%s", name);
    c->nkeys = nkeys;
    c->slot = nkeys > 0 ? tp_cluster_slot(c->argv[0], c->lens[0]) : TP_CLUSTER_ANY;
    return submit(c);
}

/* --- Subscription --- */

static void on_sub(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_store_cluster *cl = ud;
    if (err == TP_ECLOSED && cl->sub_moving)
        return; /* the old node's connection, replaced: the owner hears TP_EUNAVAIL instead */
    cl->sub_cb(err, r, cl->sub_ud);
}

/* Subscribes on the next node in turn: the map's nodes (replicas too), else the seeds. */
static void sub_start(struct tp_store_cluster *cl)
{
    struct tp_url_redis u = cl->seeds[0];
    unsigned i = cl->sub_next++;
    if (cl->have_map && cl->map->nnodes > 0) {
        const struct tp_cluster_node *n = &cl->map->nodes[i % cl->map->nnodes];
        snprintf(u.host, sizeof(u.host), "%s", n->host);
        u.port = n->port;
    } else {
        u = cl->seeds[i % (unsigned)cl->nseeds];
    }
    cl->sub = tp_store_new_at(cl->loop, &u, cl->timeout_ms, NULL);
    if (cl->sub != NULL && tp_store_subscribe(cl->sub, cl->sub_channel, on_sub, cl) != 0) {
        tp_store_free(cl->sub);
        cl->sub = NULL;
    }
    cl->sub_down_since = 0;
}

static void sub_check(struct tp_store_cluster *cl)
{
    double now = ev_now(cl->loop);
    if (cl->sub_channel == NULL)
        return;
    if (cl->sub != NULL && tp_store_is_connected(cl->sub)) {
        cl->sub_down_since = 0;
        return;
    }
    if (cl->sub_down_since == 0) {
        cl->sub_down_since = now;
        return;
    }
    if (now - cl->sub_down_since < SUB_MOVE_AFTER_S)
        return;
    tp_log_warn(MOD, "redis cluster: subscription node unreachable, moving to another node");
    cl->sub_moving = true;
    tp_store_free(cl->sub);
    cl->sub = NULL;
    cl->sub_moving = false;
    sub_start(cl);
    cl->sub_cb(TP_EUNAVAIL, NULL, cl->sub_ud);
}

int tp_store_cluster_subscribe(struct tp_store_cluster *cl, const char *channel, tp_store_cb cb,
                               void *ud)
{
    if (cb == NULL || channel == NULL || channel[0] == '\0' || cl->dead)
        return TP_EINVAL;
    if (cl->sub_channel != NULL)
        return TP_ECONFLICT; /* one channel per cluster store: the deployment uses one */
    cl->sub_channel = tp_xstrdup(channel);
    cl->sub_cb = cb;
    cl->sub_ud = ud;
    sub_start(cl);
    return 0;
}

bool tp_store_cluster_subscribed(const struct tp_store_cluster *cl)
{
    return cl->sub_channel != NULL;
}

/* --- Lifecycle --- */

/* How many masters of the map are connected, and whether all of them are. */
static size_t masters_up(const struct tp_store_cluster *cl, bool *all)
{
    size_t up = 0;
    *all = cl->have_map;
    for (size_t i = 0; cl->have_map && i < cl->map->nnodes; i++) {
        const struct tp_cluster_node *m = &cl->map->nodes[i];
        if (!m->master)
            continue;
        struct tp_store_node *n =
            tp_store_cluster_node_find((struct tp_store_cluster *)cl, m->host, m->port);
        if (n != NULL && tp_store_is_connected(n->st))
            up++;
        else
            *all = false;
    }
    return up;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store_cluster *cl = w->data;
    (void)revents;
    enter(cl);
    double now = ev_now(loop);
    bool ready; /* every master connected, every slot served: refresh less often */
    masters_up(cl, &ready);
    ready = cl->sub_channel ? tp_store_cluster_ready(cl)
                            : ready && tp_cluster_map_covered(cl->map) == TP_CLUSTER_SLOTS;
    if (!cl->have_map && cl->sub_channel == NULL)
        for (int i = 0; i < cl->nseeds; i++)
            if (tp_store_cluster_node_find(cl, cl->seeds[i].host, cl->seeds[i].port) == NULL)
                tp_store_cluster_node_add(cl, &cl->seeds[i]);
    if (cl->sub_channel == NULL && (!ready || now - cl->last_full >= REFRESH_EVERY_S)) {
        if (ready)
            cl->last_full = now;
        tp_store_cluster_refresh(cl);
    }
    sub_check(cl);
    ev_timer_stop(loop, &cl->tick);
    ev_timer_set(&cl->tick, ready ? TICK_READY_S : TICK_STARTING_S, 0);
    ev_timer_start(loop, &cl->tick);
    leave(cl);
}

struct tp_store_cluster *tp_store_cluster_new(struct ev_loop *loop,
                                              const struct tp_config_redis *cfg,
                                              const char *scripts_dir)
{
    struct tp_store_cluster *cl = tp_xcalloc(1, sizeof(*cl));
    cl->loop = loop;
    cl->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 2000;
    tp_store_acks_init(&cl->acks, cfg->replicas_ack, cl->timeout_ms);
    cl->scripts_dir = scripts_dir ? tp_xstrdup(scripts_dir) : NULL;
    cl->map = tp_xmalloc(sizeof(*cl->map));
    tp_cluster_map_init(cl->map);
    for (const char *p = cfg->url; *p != '\0' && cl->nseeds < TP_STORE_CLUSTER_SEEDS_MAX;) {
        size_t n = strcspn(p, ",");
        char one[sizeof(cfg->url)];
        memcpy(one, p, n);
        one[n] = '\0';
        struct tp_url_redis *u = &cl->seeds[cl->nseeds];
        if (tp_url_parse_redis(one, u) != 0 || u->path[0] != '\0' || u->db != 0) {
            tp_log_error(MOD, "invalid redis.url seed for cluster mode (expected "
                              "redis://[[user]:password@]host[:port], comma-separated)");
            cl_destroy(cl);
            return NULL;
        }
        cl->nseeds++;
        p += n + (p[n] == ',');
    }
    if (cl->nseeds == 0) {
        tp_log_error(MOD, "redis.url lists no seed node");
        cl_destroy(cl);
        return NULL;
    }
    /* The seeds connect from the first tick (at once), unless the store only subscribes. */
    ev_timer_init(&cl->tick, on_tick, 0, 0);
    cl->tick.data = cl;
    ev_timer_start(loop, &cl->tick);
    return cl;
}

static void cl_destroy(struct tp_store_cluster *cl)
{
    while (cl->nodes != NULL) {
        struct tp_store_node *n = cl->nodes;
        cl->nodes = n->next;
        free(n);
    }
    free(cl->sub_channel);
    free(cl->map);
    free(cl->scripts_dir);
    free(cl);
}

void tp_store_cluster_free(struct tp_store_cluster *cl)
{
    if (cl == NULL || cl->dead)
        return;
    cl->dead = true;
    cl->depth++;
    ev_timer_stop(cl->loop, &cl->tick);
    while (cl->waiting != NULL) {
        struct ccmd *c = cl->waiting;
        unwait(c);
        finish(c, TP_ECLOSED, NULL);
    }
    /* Splits waiting for their next poll (the ones with parts out end through them). */
    for (struct split *sp = cl->splits, *next; sp; sp = next) {
        next = sp->next;
        if (ev_is_active(&sp->poll)) {
            tp_store_cb cb = sp->cb;
            void *ud = sp->ud;
            split_free(sp);
            cb(TP_ECLOSED, NULL, ud);
        }
    }
    for (struct tp_store_node *n = cl->nodes; n; n = n->next) {
        struct tp_store *st = n->st;
        n->st = NULL;
        tp_store_free(st); /* its owed callbacks reach on_node_reply with TP_ECLOSED */
    }
    struct tp_store *sub = cl->sub;
    cl->sub = NULL;
    tp_store_free(sub); /* the owner's last TP_ECLOSED */
    leave(cl);
}

bool tp_store_cluster_ready(const struct tp_store_cluster *cl)
{
    /* Usable while some master answers: a command whose own master is down fails fast at
     * submission (TP_EUNAVAIL), so one failing-over master stops only its own buckets. */
    bool all;
    return cl->sub_channel != NULL ? cl->sub != NULL && tp_store_is_connected(cl->sub)
                                   : masters_up(cl, &all) > 0;
}

void tp_store_cluster_stats(const struct tp_store_cluster *cl, struct tp_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (const struct tp_store_node *n = cl->nodes; n; n = n->next) {
        struct tp_store_stats s;
        tp_store_get_stats(n->st, &s);
        out->commands += s.commands;
        out->errors += s.errors;
        out->timeouts += s.timeouts;
        out->reconnects += s.reconnects;
    }
    out->map_changes = cl->map_changes;
}
