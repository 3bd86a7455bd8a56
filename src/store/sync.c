/*
 * Synchronous Redis for the command-line tools (see include/tickpool/store/sync.h), built on the
 * asynchronous store: no second client, only a loop run until the awaited replies are in.
 */
#include "tickpool/store/sync.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"

#include <ev.h>
#include <stdlib.h>

struct tp_store_sync {
    struct ev_loop *loop;
    struct tp_store *store;
};

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)t, (void)revents; /* a one-shot timer stops by itself: the wait sees it */
}

int tp_store_sync_open(const struct tp_config_redis *cfg, const char *scripts_dir, int connect_ms,
                       struct tp_store_sync **out)
{
    *out = NULL;
    struct tp_store_sync *s = tp_xcalloc(1, sizeof(*s));
    s->loop = ev_loop_new(EVFLAG_AUTO);
    if (s->loop == NULL) {
        free(s);
        return TP_EINVAL;
    }
    s->store = tp_store_new(s->loop, cfg, scripts_dir);
    if (s->store == NULL) {
        tp_store_sync_close(s);
        return TP_EINVAL;
    }
    /* The store connects (and reconnects, with backoff) by itself on the loop; the deadline
     * timer wakes the loop when it is up even if the next attempt is later. */
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, connect_ms / 1000.0, 0.);
    ev_timer_start(s->loop, &deadline);
    while (!tp_store_is_connected(s->store) && ev_is_active(&deadline))
        ev_run(s->loop, EVRUN_ONCE);
    ev_timer_stop(s->loop, &deadline);
    if (!tp_store_is_connected(s->store)) {
        tp_store_sync_close(s);
        return TP_EUNAVAIL;
    }
    *out = s;
    return 0;
}

void tp_store_sync_close(struct tp_store_sync *s)
{
    if (s == NULL)
        return;
    tp_store_free(s->store);
    if (s->loop != NULL)
        ev_loop_destroy(s->loop);
    free(s);
}

struct tp_store *tp_store_sync_store(struct tp_store_sync *s)
{
    return s->store;
}

void tp_store_sync_wait(struct tp_store_sync *s, const int *pending)
{
    while (*pending > 0)
        ev_run(s->loop, EVRUN_ONCE);
}

/* --- One command, one reply --- */

struct one {
    int pending, err;
    struct tp_store_value *v;
};

static void on_one(int err, const struct tp_store_reply *r, void *ud)
{
    struct one *o = ud;
    o->err = err;
    o->v = err == 0 ? tp_store_value_copy(r) : NULL;
    o->pending = 0;
}

int tp_store_sync_commandv(struct tp_store_sync *s, struct tp_store_value **out, const char *fmt,
                           va_list ap)
{
    struct one o = {.pending = 1};
    *out = NULL;
    int rc = tp_store_commandv(s->store, on_one, &o, fmt, ap);
    if (rc != 0)
        return rc;
    tp_store_sync_wait(s, &o.pending);
    *out = o.v;
    return o.err;
}

int tp_store_sync_command(struct tp_store_sync *s, struct tp_store_value **out, const char *fmt,
                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_store_sync_commandv(s, out, fmt, ap);
    va_end(ap);
    return rc;
}

/* --- Reply copies --- */

struct tp_store_value *tp_store_value_copy(const struct tp_store_reply *r)
{
    struct tp_store_value *v = tp_xcalloc(1, sizeof(*v));
    v->type = tp_reply_type(r);
    v->integer = tp_reply_integer(r);
    size_t len = 0;
    const char *str = tp_reply_str(r, &len);
    if (str != NULL) {
        v->str = tp_xstrndup(str, len);
        v->len = len;
    }
    v->n = tp_reply_len(r);
    if (v->n > 0) {
        v->elem = tp_xcalloc(v->n, sizeof(*v->elem));
        for (size_t i = 0; i < v->n; i++)
            v->elem[i] = tp_store_value_copy(tp_reply_at(r, i));
    }
    return v;
}

void tp_store_value_free(struct tp_store_value *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->n; i++)
        tp_store_value_free(v->elem[i]);
    free(v->elem);
    free(v->str);
    free(v);
}
