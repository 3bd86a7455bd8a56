/*
 * The worker's store (declared in include/tickpool/store/store.h, "The worker's store"): a
 * worker slot and the init/exit hooks that fill and empty it. Kept apart from store.c so that
 * the Redis client itself knows no worker and nothing of net/.
 */
#include "tickpool/store/store.h"

#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"

#include <stdint.h>

/* The worker slot holding the worker's store (tp_store_install hands it out). */
static size_t worker_slot = SIZE_MAX;

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
    tp_worker_slot_set(w, worker_slot, s);
}

static void on_worker_exit(struct tp_worker *w, void *ud)
{
    (void)ud;
    tp_store_free(tp_store_of(w));
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
    return worker_slot == SIZE_MAX ? NULL : tp_worker_slot_get(w, worker_slot);
}
