/*
 * The worker registry (see include/tickpool/store/registry.h). One timer per worker on its own
 * loop and store: ZADD of its member every TP_REGISTRY_BEAT_MS, and a ZREMRANGEBYSCORE of
 * members silent for TP_REGISTRY_FORGET_MS (any worker may prune: the operation is idempotent),
 * so a crashed host leaves nothing behind for long. Replies are ignored: a missed beat only
 * makes the worker look gone for a moment.
 */
#include "tickpool/store/registry.h"

#include "tickpool/base/common.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct beat {
    struct tp_worker *w;
    ev_timer t;
    char member[TP_REGISTRY_MEMBER_MAX];
};

static size_t slot = SIZE_MAX;

void tp_registry_member(char *out, size_t n, const char *host, long pid, int index)
{
    snprintf(out, n, "%s|%ld|%d", host, pid, index);
}

int tp_registry_parse(const char *member, char *host, size_t hostlen, long *pid, int *index)
{
    const char *bar = member ? strchr(member, '|') : NULL;
    int64_t p, i;
    if (bar == NULL || bar == member || (size_t)(bar - member) >= hostlen)
        return TP_EINVAL;
    const char *bar2 = strchr(bar + 1, '|');
    if (bar2 == NULL || bar2 - bar - 1 > 20)
        return TP_EINVAL;
    char num[24];
    snprintf(num, sizeof(num), "%.*s", (int)(bar2 - bar - 1), bar + 1);
    if (!tp_parse_i64(num, &p) || p <= 0 || !tp_parse_i64(bar2 + 1, &i) || i < 0 || i > 9999)
        return TP_EINVAL;
    snprintf(host, hostlen, "%.*s", (int)(bar - member), member);
    *pid = (long)p;
    *index = (int)i;
    return 0;
}

static void on_ignored(int err, const struct tp_store_reply *r, void *ud)
{
    (void)err, (void)r, (void)ud;
}

static void beat_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct beat *b = t->data;
    struct tp_store *s = tp_store_of(b->w);
    if (s == NULL || !tp_store_is_connected(s))
        return;
    /* Argument lists, not formats: every worker sends them every beat. */
    int64_t now = tp_now_ms();
    char at[TP_FMT_I64_MAX], forget[TP_FMT_I64_MAX];
    tp_fmt_i64(at, now);
    tp_fmt_i64(forget, now - TP_REGISTRY_FORGET_MS);
    tp_store_commandl(s, on_ignored, NULL, "ZADD", TP_KEYS_WORKERS, at, b->member, NULL);
    tp_store_commandl(s, on_ignored, NULL, "ZREMRANGEBYSCORE", TP_KEYS_WORKERS, "-inf", forget,
                      NULL);
}

static void on_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    if (tp_store_of(w) == NULL)
        return;
    struct beat *b = tp_xcalloc(1, sizeof(*b));
    b->w = w;
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    for (char *p = host; *p; p++)
        if (*p == '|')
            *p = '_'; /* the member's separator */
    tp_registry_member(b->member, sizeof(b->member), host, (long)getpid(), tp_worker_index(w));
    ev_timer_init(&b->t, beat_cb, 0., TP_REGISTRY_BEAT_MS / 1000.0);
    b->t.data = b;
    ev_timer_start(tp_worker_loop(w), &b->t);
    tp_worker_slot_set(w, slot, b);
}

static void on_exit_hook(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct beat *b = tp_worker_slot_get(w, slot);
    if (b == NULL)
        return;
    ev_timer_stop(tp_worker_loop(w), &b->t);
    struct tp_store *s = tp_store_of(w);
    if (s != NULL && tp_store_is_connected(s))
        tp_store_command(s, on_ignored, NULL, "ZREM " TP_KEYS_WORKERS " %s", b->member);
    tp_worker_slot_set(w, slot, NULL);
    free(b);
}

void tp_registry_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
    tp_worker_on_exit(on_exit_hook, NULL);
}
