/* Unit test of the bet batcher's teardown (src/money/bet_batch.c, included for its statics): a
 * worker that exits with the call gap armed stops the gap's watcher, closes its timerfd and frees
 * the batcher. The worker is a real one (tp_worker_main in a child process, no listener, drained
 * by SIGTERM, so its exit hooks run as in production); the ASan build's leak check runs at the
 * child's exit, and the child's exit status says what else was left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../../src/money/bet_batch.c"

#include "tickpool/base/config.h"

#include "../worker_exit.h"

#include <signal.h>

/* The child's exit statuses besides 0. */
#define NOT_ARMED 2
#define BATCHER_LEFT 3
#define GAP_FD_LEFT 4

/* Init hook, after the batcher's: arms the gap far ahead (still armed when the worker exits),
 * then asks for the drain the way the master does. */
static void arm_then_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct batcher *b = tp_worker_slot_get(w, slot);
    if (b == NULL || b->gap == NULL || timerfds() != 1)
        _exit(NOT_ARMED);
    int64_t now = tp_mono_ns(), wake = now + 60 * (int64_t)1000000000;
    gap_arm(b, wake, now);
    if (b->gap == NULL || b->gap_due != wake)
        _exit(NOT_ARMED);
    raise(SIGTERM);
}

/* Exit hook registered before the batcher's, so it runs after it (reverse order). */
static void check_left(struct tp_worker *w, void *ud)
{
    (void)ud;
    if (tp_worker_slot_get(w, slot) != NULL)
        _exit(BATCHER_LEFT);
    if (timerfds() != 0)
        _exit(GAP_FD_LEFT);
}

static void install(struct tp_config *cfg)
{
    (void)cfg;
    tp_worker_on_exit(check_left, NULL);
    tp_bet_install();
    tp_worker_on_init(arm_then_drain, NULL);
}

static void exit_with_gap_armed_leaves_nothing(void **state)
{
    (void)state;
    worker_exit_run(install);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_with_gap_armed_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
