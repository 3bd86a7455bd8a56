/* Unit test of the game leader's teardown (src/game/leader.c): a worker that exits closes the
 * timerfd of the leader's writes at T (leader_boundary.c), as the batcher closes its gap's
 * (test_bet_batch). The worker is a real one (tp_worker_main in a child process, no listener,
 * drained by SIGTERM, so its exit hooks run as in production); its store points at a port where
 * no Redis listens, so the leader is created and never leads. The child's exit status says what
 * was left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/config.h"
#include "tickpool/game/leader.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/store.h"

#include "../worker_exit.h"

#include <signal.h>
#include <stdio.h>

/* The child's exit statuses besides 0. */
#define NO_LEADER 2
#define AT_FD_LEFT 3

/* Init hook, after the leader's: its timerfd is there; then the drain, as the master asks. */
static void check_then_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    if (tp_leader_of(w) == NULL || timerfds() != 1)
        _exit(NO_LEADER);
    raise(SIGTERM);
}

/* Exit hook registered before the leader's, so it runs after it (reverse order). It ends the
 * child: the rest of the leader is kept to the process's end on purpose (store callbacks
 * answered at the store's exit read it), so LeakSanitizer's check at exit is not this test's. */
static void check_left(struct tp_worker *w, void *ud)
{
    (void)w, (void)ud;
    _exit(timerfds() != 0 ? AT_FD_LEFT : 0);
}

/* A store pointing where no Redis listens: the leader is created and never leads. */
static void install(struct tp_config *cfg)
{
    snprintf(cfg->redis.url, sizeof(cfg->redis.url), "redis://127.0.0.1:1");
    tp_store_install();
    tp_worker_on_exit(check_left, NULL);
    tp_game_install();
    tp_worker_on_init(check_then_drain, NULL);
}

static void exit_closes_the_timerfd(void **state)
{
    (void)state;
    worker_exit_run(install);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_closes_the_timerfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
