/*
 * The worker's store (declared in include/tickpool/store/store.h, "The worker's store"): a
 * worker slot and the init/exit hooks that fill and empty it. Kept apart from store.c so that
 * the Redis client itself knows no worker and nothing of net/.
 *
 * tp_store_flush_soon: a command sent from a reply callback (the next link of a chain of round
 * trips) would otherwise be written when the loop next polls, after the worker's prepare hook
 * has written a fan-out slice (up to TP_WORKER_SLICE_NS). A prepare watcher of the highest
 * priority writes it before that hook, outside every store callback.
 */
#include "tickpool/store/store.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"

#include <ev.h>
#include <stdint.h>
#include <stdlib.h>

/* The worker's store and its early-flush watcher. */
struct worker_store {
    struct tp_store *store;
    ev_prepare flush;
};

/* The worker slot holding struct worker_store (tp_store_install hands it out). */
static size_t worker_slot = SIZE_MAX;

static void on_flush(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    struct worker_store *ws = p->data;
    ev_prepare_stop(loop, p);
    tp_store_flush(ws->store);
}

static void on_worker_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    const struct tp_config *cfg = tp_worker_config(w);
    struct tp_store *s = NULL;
    /* An empty redis.url after config loading means no embedded Redis was found under var_dir:
     * serve anyway (static files, /healthz) and report not ready. */
    if (cfg->redis.url[0] != '\0')
        s = tp_store_new(tp_worker_loop(w), &cfg->redis, TP_STORE_SCRIPTS_BUILTIN);
    if (s == NULL && tp_worker_index(w) == 0)
        tp_log_warn("worker", "Redis store unavailable (redis.url empty or invalid)");
    struct worker_store *ws = tp_xcalloc(1, sizeof(*ws));
    ws->store = s;
    ev_prepare_init(&ws->flush, on_flush);
    ev_set_priority(&ws->flush, EV_MAXPRI); /* before the worker's fan-out slice */
    ws->flush.data = ws;
    tp_worker_slot_set(w, worker_slot, ws);
}

static void on_worker_exit(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct worker_store *ws = tp_worker_slot_get(w, worker_slot);
    if (ws == NULL)
        return;
    ev_prepare_stop(tp_worker_loop(w), &ws->flush);
    tp_store_free(ws->store);
    free(ws);
    tp_worker_slot_set(w, worker_slot, NULL);
}

void tp_store_install(void)
{
    worker_slot = tp_worker_slot_new();
    tp_worker_on_init(on_worker_init, NULL);
    tp_worker_on_exit(on_worker_exit, NULL);
}

struct tp_store *tp_store_of(const struct tp_worker *w)
{
    struct worker_store *ws = worker_slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, worker_slot);
    return ws != NULL ? ws->store : NULL;
}

void tp_store_flush_soon(struct tp_worker *w)
{
    struct worker_store *ws = worker_slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, worker_slot);
    if (ws != NULL && ws->store != NULL)
        ev_prepare_start(tp_worker_loop(w), &ws->flush);
}
