/* Unit tests for the loop iteration timing behind the boundary debug lines
 * (src/net/loop_watch.c): off below debug; at debug, an iteration whose callback ran 4 ms is
 * found as the window's longest busy stretch, a 20 ms wait in epoll as its longest poll, and
 * neither outside the window asked about. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/net/loop_watch.h"

#include <ev.h>

static void on_busy(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)t, (void)revents;
    int64_t end = tp_now_ns() + 4000000;
    while (tp_now_ns() < end) {
    }
}

static void test_off_below_debug(void **state)
{
    (void)state;
    tp_log_setup(TP_LOG_INFO, "test");
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    tp_loop_watch_start(loop);
    assert_false(tp_loop_watch_on());
    struct tp_loop_watch_sched s = tp_loop_watch_sched_now();
    assert_int_equal(s.run_ns, 0);
    ev_loop_destroy(loop);
}

static void test_busy_and_poll(void **state)
{
    (void)state;
    tp_log_setup(TP_LOG_DEBUG, "test");
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    tp_loop_watch_start(loop);
    assert_true(tp_loop_watch_on());
    ev_timer idle, busy;
    ev_timer_init(&idle, on_busy, 0.020, 0.); /* ~20 ms in epoll, then 4 ms of callback */
    int64_t t0 = tp_now_ns();
    /* The timer counts from the loop's time, refreshed here: never before t0. */
    ev_now_update(loop);
    ev_timer_start(loop, &idle);
    ev_run(loop, EVRUN_ONCE);
    ev_timer_init(&busy, on_busy, 0., 0.);
    ev_timer_start(loop, &busy);
    ev_run(loop, EVRUN_ONCE);
    ev_run(loop, EVRUN_NOWAIT); /* the prepare watcher keeps the last iteration */
    int64_t t1 = tp_now_ns();

    struct tp_loop_watch_span s = tp_loop_watch_window(t0, t1);
    assert_true(s.busy_ns >= 4000000);
    assert_true(s.busy_at_ns >= t0 && s.busy_at_ns <= t1);
    /* The window's longest poll is the timer's wait: it ended when the timer was due, 20 ms
     * after t0 at the earliest (1 ms for the two clocks' reads), and lasted as long as this
     * process was in epoll. Not asserted near 20 ms: time the process waited for a CPU before
     * epoll_wait (a loaded machine) is not in the wait. */
    assert_true(s.poll_end_ns >= t0 + 19000000 && s.poll_end_ns <= t1);
    assert_true(s.poll_ns >= 2000000 && s.poll_ns <= s.poll_end_ns - t0);

    struct tp_loop_watch_span none = tp_loop_watch_window(t1 + 1, t1 + 1000000000);
    assert_int_equal(none.busy_ns, 0);
    assert_int_equal(none.poll_ns, 0);

    struct tp_loop_watch_sched a = tp_loop_watch_sched_now();
    on_busy(loop, NULL, 0);
    struct tp_loop_watch_sched b = tp_loop_watch_sched_now();
    assert_true(b.run_ns > a.run_ns); /* 4 ms on a CPU, at least partly */
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_below_debug),
        cmocka_unit_test(test_busy_and_poll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
