/*
 * Redis store (tickpool/store/store.h): a store's creation and teardown, which mode each call
 * goes to (a standalone connection, the cluster client of store_cluster.c, WAIT after a script
 * in store_acks.c), a standalone store's reconnects (backoff with jitter, the connect timeout,
 * what becomes of the subscriptions once ready) and its entries from the loop. The connection
 * speaks hiredis in store_conn.c, the only file that includes it; the callbacks a store owes
 * and their deadlines are store_owed.c's (store_internal.h holds the state they share).
 *
 * Re-entrancy: user callbacks may call tp_store_free. Every entry from the loop increments
 * `depth`; tp_store_free tears down at once but frees the struct only when depth returns to 0.
 */
#include "store_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/base/url.h"

#include <ev.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "store"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

static void destroy(struct tp_store *s);
static void schedule_retry(struct tp_store *s);

/* --- Entries from the loop --- */

void tp_store_enter(struct tp_store *s)
{
    s->depth++;
}

/* Leaves a loop entry; frees the store if it was freed meanwhile. Returns true when it is gone
 * (the caller must not touch it). */
bool tp_store_leave(struct tp_store *s)
{
    TP_ASSERT(s->depth > 0);
    if (--s->depth == 0 && s->dead) {
        destroy(s);
        return true;
    }
    return false;
}

/* --- Reconnects (the connection itself: store_conn.c) --- */

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

/* The connection is gone or failed: drop it and schedule the next attempt. */
void tp_store_connection_failed(struct tp_store *s, const char *why)
{
    if (s->dead)
        return;
    log_down(s, why);
    s->state = TP_STORE_DOWN;
    s->attempts++;
    tp_store_drop_context(s, TP_EUNAVAIL);
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

void tp_store_on_ready(struct tp_store *s)
{
    ev_timer_stop(s->loop, &s->connect_timer);
    if (s->ever_connected) {
        s->stats.reconnects++;
        tp_metrics_inc(TP_METRIC_REDIS_RECONNECTS_TOTAL);
    }
    tp_log_info(MOD, "redis connected\thost=%s port=%d db=%d scripts=%zu after_attempts=%u",
                s->url.path[0] ? s->url.path : s->url.host, s->url.port, s->url.db, s->nscripts,
                s->attempts);
    s->state = TP_STORE_READY;
    s->up = true;
    s->ever_connected = true;
    s->down_logged = false;
    s->attempts = 0;
    s->backoff_ms = BACKOFF_MIN_MS;
    for (struct tp_store_sub *sb = s->subs; sb && !s->dead; sb = sb->next)
        tp_store_subscribe_one(s, sb);
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store *s = w->data;
    (void)loop;
    (void)revents;
    tp_store_enter(s);
    if (s->state == TP_STORE_DOWN && s->ac == NULL)
        tp_store_start_connect(s);
    tp_store_leave(s);
}

static void on_connect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tp_store *s = w->data;
    (void)loop;
    (void)revents;
    tp_store_enter(s);
    if (s->state == TP_STORE_CONNECTING)
        tp_store_connection_failed(s, "connect or handshake timed out");
    tp_store_leave(s);
}

/* --- Commands: standalone (store_conn.c), cluster (store_cluster.c), acked (store_acks.c) --- */

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

int tp_store_script(struct tp_store *s, const char *name, int nkeys, int argc, const char **argv,
                    const size_t *argvlen, tp_store_cb cb, void *ud)
{
    if (s->cl == NULL && s->acks.need > 0) /* acked means replicated: WAIT after it */
        return tp_store_acks_script(&s->acks, s, ev_now(s->loop) + s->timeout_ms / 1000.0, name,
                                    nkeys, argc, argv, argvlen, cb, ud);
    if (s->cl == NULL)
        return tp_store_send_script(s, NULL, name, nkeys, argc, argv, argvlen, cb, ud);
    if (cb == NULL || tp_store_cluster_subscribed(s->cl) ||
        (tp_store_scripts_find(s->scripts, s->nscripts, name) != NULL &&
         (argc < 0 || nkeys < 0 || nkeys > argc || (argc > 0 && argv == NULL))))
        return TP_EINVAL;
    if (tp_store_scripts_find(s->scripts, s->nscripts, name) == NULL)
        return TP_ENOTFOUND;
    return tp_store_cluster_script(s->cl, name, nkeys, argc, argv, argvlen, cb, ud);
}

const char *tp_store_script_sha(const struct tp_store *s, const char *name)
{
    const struct tp_store_script *sc = tp_store_scripts_find(s->scripts, s->nscripts, name);
    return sc ? sc->sha : NULL;
}

/* --- Pub/sub (the SUBSCRIBE and its messages: store_conn.c) --- */

int tp_store_subscribe(struct tp_store *s, const char *channel, tp_store_cb cb, void *ud)
{
    if (s->cl != NULL)
        return tp_store_cluster_subscribe(s->cl, channel, cb, ud);
    if (cb == NULL || channel == NULL || channel[0] == '\0' || s->head != NULL ||
        s->state == TP_STORE_CLOSED)
        return TP_EINVAL;
    for (struct tp_store_sub *sb = s->subs; sb; sb = sb->next)
        if (strcmp(sb->channel, channel) == 0)
            return TP_ECONFLICT;
    size_t n = strlen(channel);
    struct tp_store_sub *sb = tp_xcalloc(1, sizeof(*sb) + n + 1);
    memcpy(sb->channel, channel, n + 1);
    sb->store = s;
    sb->cb = cb;
    sb->ud = ud;
    sb->next = s->subs;
    s->subs = sb;
    if (s->state == TP_STORE_READY)
        tp_store_subscribe_one(s, sb);
    return 0;
}

/* --- Lifecycle --- */

/* The fields every store needs, before it connects (standalone) or hands over (cluster). */
static struct tp_store *store_alloc(struct ev_loop *loop, int timeout_ms, const char *scripts_dir)
{
    struct tp_store *s = tp_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    s->state = TP_STORE_DOWN;
    ev_timer_init(&s->cmd_timer, tp_store_on_cmd_timer, 0, 0);
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
    tp_store_start_connect(s);
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
    s->state = TP_STORE_CLOSED;
    ev_timer_stop(s->loop, &s->cmd_timer);
    ev_timer_stop(s->loop, &s->retry_timer);
    ev_timer_stop(s->loop, &s->connect_timer);
    /* Subscriptions first: each gets its final TP_ECLOSED; the ones hiredis still holds are
     * freed by their last (NULL) hiredis callback, the others here. */
    struct tp_store_sub *subs = s->subs;
    s->subs = NULL;
    for (struct tp_store_sub *sb = subs; sb; sb = sb->next) {
        sb->store = NULL;
        sb->cb(TP_ECLOSED, NULL, sb->ud);
    }
    while (subs != NULL) {
        struct tp_store_sub *next = subs->next;
        if (!subs->attached)
            free(subs); /* else hiredis holds it: its NULL callback (in tp_store_drop_context, or
                           deferred until hiredis leaves its callback) frees it */
        subs = next;
    }
    tp_store_drop_context(s, TP_ECLOSED);
    if (--s->depth == 0)
        destroy(s);
}

bool tp_store_is_connected(const struct tp_store *s)
{
    if (s != NULL && s->cl != NULL)
        return tp_store_cluster_ready(s->cl);
    return s != NULL && s->state == TP_STORE_READY;
}

void tp_store_get_stats(const struct tp_store *s, struct tp_store_stats *out)
{
    if (s->cl != NULL) {
        tp_store_cluster_stats(s->cl, out);
        return;
    }
    *out = s->stats;
}
