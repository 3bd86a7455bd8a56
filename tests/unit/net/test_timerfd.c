/* Unit tests for the one-shot timerfd timer (src/net/timerfd.c) on a private libev loop: a
 * relative monotonic timer fires once, not before its time and well within libev's rounding to
 * whole milliseconds; an absolute wall-clock one fires at its time, one already past at once;
 * re-arming moves it (sooner or later) and it fires once; a weak timer keeps no loop running; a
 * freed armed timer never calls back; a clock timerfd refuses gives NULL; arming a fired timer
 * again makes no epoll_ctl (libev's epoll backend answered each restart of a stopped watcher
 * with a failing EPOLL_CTL_ADD, one per bet call gap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/net/timerfd.h"

#include <dlfcn.h>
#include <errno.h>
#include <ev.h>
#include <sys/epoll.h>
#include <unistd.h>

/* epoll_ctl as libev calls it, counted: this definition in the executable comes before libc's
 * for the libev shared library, and hands every call on to libc's. */
static int epoll_ctl_calls, epoll_ctl_failed;

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    static int (*real)(int, int, int, struct epoll_event *);
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "epoll_ctl");
    int rc = real(epfd, op, fd, ev);
    epoll_ctl_calls++;
    epoll_ctl_failed += rc != 0;
    return rc;
}

struct hits {
    int n;
    int64_t mono_ns, wall_ns; /* when the last callback ran */
};

static void on_fire(void *ud)
{
    struct hits *h = ud;
    h->n++;
    h->mono_ns = tp_mono_ns();
    h->wall_ns = tp_now_ns();
}

/* Runs the loop until it has nothing active (the armed timer is its only watcher). */
static void run(struct ev_loop *loop)
{
    ev_run(loop, 0);
}

static void test_relative_monotonic(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_MONOTONIC, 0, on_fire, &h);
    assert_non_null(t);
    int64_t t0 = tp_mono_ns();
    assert_int_equal(tp_timerfd_arm(t, 500000, false), 0); /* 0.5 ms */
    run(loop);
    assert_int_equal(h.n, 1);
    assert_true(h.mono_ns - t0 >= 500000);
    /* Fired, it keeps the loop no longer: a second run returns at once, nothing called. */
    run(loop);
    assert_int_equal(h.n, 1);
    /* Armed again, it fires again. */
    assert_int_equal(tp_timerfd_arm(t, 100000, false), 0);
    run(loop);
    assert_int_equal(h.n, 2);
    tp_timerfd_free(t);
    ev_loop_destroy(loop);
}

static void test_absolute_realtime(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_REALTIME, 0, on_fire, &h);
    assert_non_null(t);
    int64_t at = tp_now_ns() + 2000000;
    assert_int_equal(tp_timerfd_arm(t, at, true), 0);
    run(loop);
    assert_int_equal(h.n, 1);
    assert_true(h.wall_ns >= at);
    /* A time already past, and one of 0 (which a timerfd reads as "disarm"): at once. */
    assert_int_equal(tp_timerfd_arm(t, tp_now_ns() - 1000000000, true), 0);
    run(loop);
    assert_int_equal(h.n, 2);
    assert_int_equal(tp_timerfd_arm(t, 0, true), 0);
    run(loop);
    assert_int_equal(h.n, 3);
    assert_int_equal(tp_timerfd_arm(t, -5, false), 0);
    run(loop);
    assert_int_equal(h.n, 4);
    tp_timerfd_free(t);
    ev_loop_destroy(loop);
}

/* Re-armed before it fired: only the latest time counts, once, sooner or later. */
static void test_rearm(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_MONOTONIC, 0, on_fire, &h);
    int64_t t0 = tp_mono_ns();
    assert_int_equal(tp_timerfd_arm(t, 5000000000LL, false), 0); /* 5 s */
    assert_int_equal(tp_timerfd_arm(t, 1000000, false), 0);      /* sooner: 1 ms */
    run(loop);
    assert_int_equal(h.n, 1);
    assert_true(h.mono_ns - t0 < 1000000000);
    t0 = tp_mono_ns();
    assert_int_equal(tp_timerfd_arm(t, 1000000, false), 0);
    assert_int_equal(tp_timerfd_arm(t, 20000000, false), 0); /* later: 20 ms */
    run(loop);
    assert_int_equal(h.n, 2);
    assert_true(h.mono_ns - t0 >= 20000000);
    tp_timerfd_free(t);
    ev_loop_destroy(loop);
}

/* An expiry the loop has seen but not yet read when the timer is re-armed for later (the fd
 * was readable, the count is reset): no callback until the new time. */
static void on_rearm_first(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    tp_timerfd_arm(w->data, 20000000, false);
}

static void test_rearm_after_expiry_unread(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_MONOTONIC, 0, on_fire, &h);
    assert_int_equal(tp_timerfd_arm(t, 1000, false), 0);
    usleep(2000); /* expired, unread */
    ev_timer now;
    ev_timer_init(&now, on_rearm_first, 0., 0.);
    ev_set_priority(&now, EV_MAXPRI); /* before the fd's watcher in the same iteration */
    now.data = t;
    ev_timer_start(loop, &now);
    int64_t t0 = tp_mono_ns();
    run(loop);
    assert_int_equal(h.n, 1);
    assert_true(h.mono_ns - t0 >= 19000000);
    tp_timerfd_free(t);
    ev_loop_destroy(loop);
}

static void on_nothing(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
}

static void test_weak(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_MONOTONIC, TP_TIMERFD_WEAK, on_fire, &h);
    assert_int_equal(tp_timerfd_arm(t, 1000000000, false), 0);
    int64_t t0 = tp_mono_ns();
    run(loop); /* nothing else active: returns at once */
    assert_int_equal(h.n, 0);
    assert_true(tp_mono_ns() - t0 < 500000000);
    /* It still fires while something else keeps the loop running. */
    ev_timer keep;
    ev_timer_init(&keep, on_nothing, 0.05, 0.);
    assert_int_equal(tp_timerfd_arm(t, 1000000, false), 0);
    ev_timer_start(loop, &keep);
    ev_run(loop, EVRUN_ONCE);
    assert_int_equal(h.n, 1);
    ev_timer_stop(loop, &keep);
    tp_timerfd_free(t); /* disarmed: the ref count is as before */
    ev_loop_destroy(loop);
}

static void test_free_armed(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_MONOTONIC, 0, on_fire, &h);
    assert_int_equal(tp_timerfd_arm(t, 1000, false), 0);
    usleep(2000);
    tp_timerfd_free(t);
    run(loop); /* nothing active is left */
    assert_int_equal(h.n, 0);
    struct tp_timerfd *w = tp_timerfd_new(loop, CLOCK_MONOTONIC, TP_TIMERFD_WEAK, on_fire, &h);
    assert_int_equal(tp_timerfd_arm(w, 1000000000, false), 0);
    tp_timerfd_free(w); /* armed and weak: the loop's ref is given back */
    tp_timerfd_free(NULL);
    ev_loop_destroy(loop);
}

/* Armed, fired and armed again many times, as the bet batcher's call gap is, with a turn of the
 * loop between a fire and the next arm (a worker's loop turns many times): the fd joins the
 * loop's epoll set once (at the first run), and no arm after it costs an epoll_ctl. */
static void test_rearm_no_epoll_ctl(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    struct tp_timerfd *t = tp_timerfd_new(loop, CLOCK_MONOTONIC, 0, on_fire, &h);
    assert_int_equal(tp_timerfd_arm(t, 10000, false), 0);
    run(loop);
    assert_int_equal(h.n, 1);
    epoll_ctl_calls = epoll_ctl_failed = 0;
    for (int i = 0; i < 20; i++) {
        ev_run(loop, EVRUN_NOWAIT); /* one turn with the timer fired, disarmed */
        assert_int_equal(tp_timerfd_arm(t, 10000, false), 0);
        run(loop);
    }
    assert_int_equal(h.n, 21);
    assert_int_equal(epoll_ctl_failed, 0);
    assert_int_equal(epoll_ctl_calls, 0);
    tp_timerfd_free(t);
    ev_loop_destroy(loop);
}

static void test_no_timerfd(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct hits h = {0};
    errno = 0;
    assert_null(tp_timerfd_new(loop, CLOCK_PROCESS_CPUTIME_ID, 0, on_fire, &h));
    assert_int_not_equal(errno, 0);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relative_monotonic),
        cmocka_unit_test(test_absolute_realtime),
        cmocka_unit_test(test_rearm),
        cmocka_unit_test(test_rearm_after_expiry_unread),
        cmocka_unit_test(test_weak),
        cmocka_unit_test(test_free_armed),
        cmocka_unit_test(test_rearm_no_epoll_ctl),
        cmocka_unit_test(test_no_timerfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
