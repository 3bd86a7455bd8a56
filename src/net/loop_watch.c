/*
 * Loop iteration timing for the boundary debug lines (see tickpool/net/loop_watch.h). The check
 * watcher runs first after epoll returns (highest priority), the prepare watcher last before it
 * blocks again (lowest), so an iteration's "busy" holds every callback and the worker's fan-out
 * slice, and its "poll" the time from blocking to running again.
 */
#include "tickpool/net/loop_watch.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <ev.h>
#include <stdio.h>

#define BUSY_KEEP_NS 1000000 /* iterations kept: busy at least this long */
#define POLL_KEEP_NS 2000000 /* or waiting in epoll at least this long */
#define RING 64              /* ~100 ms of a loaded worker's long iterations */

struct kept {
    int64_t wake_ns, busy_ns, poll_ns; /* epoll returned; callbacks after; epoll before */
};

static struct {
    bool on;
    ev_check check;
    ev_prepare prepare;
    int64_t prep_ns, wake_ns, poll_ns;
    struct kept ring[RING];
    unsigned n;
} lw;

static void on_check(struct ev_loop *loop, ev_check *c, int revents)
{
    (void)loop, (void)c, (void)revents;
    lw.wake_ns = tp_now_ns();
    lw.poll_ns = lw.prep_ns != 0 ? lw.wake_ns - lw.prep_ns : 0;
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop, (void)p, (void)revents;
    int64_t now = tp_now_ns();
    int64_t busy = lw.wake_ns != 0 ? now - lw.wake_ns : 0;
    if (busy >= BUSY_KEEP_NS || lw.poll_ns >= POLL_KEEP_NS)
        lw.ring[lw.n++ % RING] = (struct kept){lw.wake_ns, busy, lw.poll_ns};
    lw.prep_ns = now;
}

void tp_loop_watch_start(struct ev_loop *loop)
{
    if (lw.on || !tp_log_enabled(TP_LOG_DEBUG))
        return;
    lw.on = true;
    ev_check_init(&lw.check, on_check);
    ev_set_priority(&lw.check, EV_MAXPRI);
    ev_check_start(loop, &lw.check);
    ev_prepare_init(&lw.prepare, on_prepare);
    ev_set_priority(&lw.prepare, EV_MINPRI);
    ev_prepare_start(loop, &lw.prepare);
    ev_unref(loop); /* neither keeps the loop alive */
    ev_unref(loop);
}

bool tp_loop_watch_on(void)
{
    return lw.on;
}

struct tp_loop_watch_span tp_loop_watch_window(int64_t from_ns, int64_t to_ns)
{
    struct tp_loop_watch_span s = {0, 0, 0, 0};
    /* The iteration running now (not yet kept): its poll, e.g. the one that brought a message
     * being handled. */
    if (lw.wake_ns >= from_ns && lw.wake_ns <= to_ns && lw.poll_ns >= POLL_KEEP_NS)
        s = (struct tp_loop_watch_span){0, 0, lw.poll_ns, lw.wake_ns};
    unsigned n = lw.n < RING ? lw.n : RING;
    for (unsigned i = 0; i < n; i++) {
        const struct kept *k = &lw.ring[(lw.n - 1 - i) % RING];
        int64_t end = k->wake_ns + k->busy_ns;
        if (end >= from_ns && end <= to_ns && k->busy_ns > s.busy_ns) {
            s.busy_ns = k->busy_ns;
            s.busy_at_ns = k->wake_ns;
        }
        if (k->wake_ns >= from_ns && k->wake_ns <= to_ns && k->poll_ns > s.poll_ns) {
            s.poll_ns = k->poll_ns;
            s.poll_end_ns = k->wake_ns;
        }
    }
    return s;
}

struct tp_loop_watch_sched tp_loop_watch_sched_now(void)
{
    struct tp_loop_watch_sched s = {0, 0};
    if (!tp_log_enabled(TP_LOG_DEBUG))
        return s;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (f == NULL)
        return s;
    long long run = 0, wait = 0;
    if (fscanf(f, "%lld %lld", &run, &wait) == 2)
        s = (struct tp_loop_watch_sched){run, wait};
    fclose(f);
    return s;
}
