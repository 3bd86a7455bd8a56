/*
 * Acked means replicated (redis.replicas_ack = N > 0), for both modes: a script's reply is held
 * while `WAIT N timeout` runs on the connection that ran the script (WAIT counts the replicas
 * that have that connection's last write), and goes out only when N replicas have it. Redis
 * replicates asynchronously, so without this a write the master answered just before dying may
 * be missing on the replica that replaces it.
 *
 * A shortfall (fewer than N, or WAIT unanswered) answers TP_EUNAVAIL: the write ran on the
 * primary and stays done, but may not survive its loss, so the caller answers 503 and the
 * client's retry with the same idempotency key replays it (or places it, had it been lost),
 * never twice. The cluster mode calls tp_store_acks_wait once a command's node has answered
 * (store_cluster.c); the standalone mode runs its scripts through tp_store_acks_script. With
 * N = 0 neither is called: a script costs no more than before.
 *
 * Shortfalls come in stretches (a replica down or lagging for a while): each store logs the
 * first of a stretch and, when WAIT is met again, how many answers the stretch held back.
 */
#include "store_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <stdio.h>
#include <stdlib.h>

#define MOD "store"

/* One script reply held while its WAIT runs. */
struct held {
    struct tp_store_acks *acks;
    tp_store_cb cb;
    void *ud;
    struct tp_buf reply; /* RESP */
};

/* A standalone script on its way to WAIT. */
struct acked_script {
    struct tp_store_acks *acks;
    struct tp_store *st;
    double deadline;
    tp_store_cb cb;
    void *ud;
};

void tp_store_acks_init(struct tp_store_acks *a, int need, int timeout_ms)
{
    *a = (struct tp_store_acks){.need = need};
    /* Short enough that a shortfall answers well within the command's own deadline. */
    a->wait_ms = TP_MAX(10, TP_MIN(timeout_ms / 10, 500));
}

static void note_short(struct tp_store_acks *a, int err, const struct tp_store_reply *r)
{
    a->held_back++;
    if (a->stretch++ == 0)
        tp_log_warn(MOD,
                    "redis: a write was not acknowledged by enough replicas, answering "
                    "unavailable until they acknowledge again\treplicas_ack=%d acked=%lld err=%d",
                    a->need, err == 0 && r != NULL ? tp_reply_integer(r) : -1LL, err);
}

static void note_met(struct tp_store_acks *a)
{
    if (a->stretch == 0)
        return;
    tp_log_info(
        MOD, "redis: replicas acknowledge writes again\treplicas_ack=%d held_back=%llu total=%llu",
        a->need, (unsigned long long)a->stretch, (unsigned long long)a->held_back);
    a->stretch = 0;
}

static void on_wait(int err, const struct tp_store_reply *r, void *ud)
{
    struct held *h = ud;
    struct tp_store_acks *a = h->acks;
    tp_store_cb cb = h->cb;
    void *cud = h->ud;
    if (err == TP_ECLOSED) { /* the store is going away: no stretch to log */
        cb(TP_ECLOSED, NULL, cud);
    } else if (err != 0 || tp_reply_type(r) != TP_REPLY_INTEGER || tp_reply_integer(r) < a->need) {
        note_short(a, err, r);
        cb(err == TP_ETIMEDOUT ? TP_ETIMEDOUT : TP_EUNAVAIL, NULL, cud);
    } else {
        note_met(a);
        struct tp_store_reply *held =
            tp_store_reply_parse(tp_buf_ptr(&h->reply), tp_buf_size(&h->reply));
        cb(held ? 0 : TP_EPROTO, held, cud);
        tp_store_reply_free(held);
    }
    tp_buf_deinit(&h->reply);
    free(h);
}

int tp_store_acks_wait(struct tp_store_acks *a, struct tp_store *node, double deadline,
                       const struct tp_store_reply *r, tp_store_cb cb, void *ud)
{
    struct held *h = tp_xmalloc(sizeof(*h));
    *h = (struct held){.acks = a, .cb = cb, .ud = ud};
    tp_buf_init(&h->reply);
    tp_store_resp_reply(&h->reply, r);
    char n[16], ms[16];
    snprintf(n, sizeof(n), "%d", a->need);
    snprintf(ms, sizeof(ms), "%d", a->wait_ms);
    const char *argv[] = {"WAIT", n, ms};
    struct tp_store_send o = {.deadline = deadline};
    if (node == NULL || tp_store_send_argv(node, &o, on_wait, h, 3, argv, NULL) != 0) {
        tp_buf_deinit(&h->reply);
        free(h);
        /* WAIT could not even be sent (the connection is down): as a shortfall */
        note_short(a, TP_EUNAVAIL, NULL);
        return TP_EUNAVAIL;
    }
    return 0;
}

static void on_script(int err, const struct tp_store_reply *r, void *ud)
{
    struct acked_script *x = ud;
    struct acked_script me = *x;
    free(x);
    /* A failure, or a Redis error reply (nothing answered for), goes out as it is. */
    if (err != 0 || tp_reply_type(r) == TP_REPLY_ERROR)
        me.cb(err, r, me.ud);
    else if (tp_store_acks_wait(me.acks, me.st, me.deadline, r, me.cb, me.ud) != 0)
        me.cb(TP_EUNAVAIL, NULL, me.ud);
}

int tp_store_acks_script(struct tp_store_acks *a, struct tp_store *s, double deadline,
                         const char *name, int nkeys, int argc, const char **argv,
                         const size_t *argvlen, tp_store_cb cb, void *ud)
{
    if (cb == NULL) /* refused as without WAIT (on_script would stand in for it) */
        return TP_EINVAL;
    struct acked_script *x = tp_xmalloc(sizeof(*x));
    *x = (struct acked_script){.acks = a, .st = s, .deadline = deadline, .cb = cb, .ud = ud};
    struct tp_store_send o = {.deadline = deadline};
    int rc = tp_store_send_script(s, &o, name, nkeys, argc, argv, argvlen, on_script, x);
    if (rc != 0)
        free(x);
    return rc;
}
