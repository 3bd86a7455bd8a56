/*
 * One-shot timers on a timerfd (see tickpool/net/timerfd.h). The ev_io watches the fd for the
 * timer's whole life, not only while it is armed: libev's epoll backend leaves a stopped fd in
 * the kernel's set (it deletes lazily), so restarting the watcher at every arm cost an
 * epoll_ctl(ADD) that failed with EEXIST, one per bet call gap (bench/README.md, "Session 17").
 * A disarmed timerfd is never readable, so the idle watcher costs nothing. It is unref'd, and
 * an armed timer takes a loop reference until it fires, so an armed timer keeps its loop running
 * as an ev_timer would (unless TP_TIMERFD_WEAK). The read when it fires takes the expiration
 * count; EAGAIN there means the timer was re-armed after the fd became readable (re-arming
 * resets the count), so it has not expired yet.
 */
#include "tickpool/net/timerfd.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define MOD "timerfd"

struct tp_timerfd {
    struct ev_loop *loop;
    ev_io io;
    int fd;
    bool weak;
    bool armed; /* its callback is owed: a fire while false (a failed re-arm) only drains */
    bool held;  /* armed and not weak: it holds a reference on the loop */
    tp_timerfd_cb cb;
    void *ud;
};

static void hold(struct tp_timerfd *t)
{
    if (t->weak || t->held)
        return;
    ev_ref(t->loop);
    t->held = true;
}

static void release(struct tp_timerfd *t)
{
    if (!t->held)
        return;
    ev_unref(t->loop);
    t->held = false;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    struct tp_timerfd *t = w->data;
    uint64_t expirations;
    if (read(t->fd, &expirations, sizeof(expirations)) < 0) {
        if (errno == EAGAIN)
            return; /* re-armed meanwhile: not expired yet */
        tp_log_warn(MOD, "read failed: taken as fired\terr=%s", strerror(errno));
    }
    bool owed = t->armed;
    t->armed = false;
    release(t);
    if (owed)
        t->cb(t->ud); /* last: it may re-arm or free the timer */
}

struct tp_timerfd *tp_timerfd_new(struct ev_loop *loop, clockid_t clock, int flags,
                                  tp_timerfd_cb cb, void *ud)
{
    int fd = timerfd_create(clock, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct tp_timerfd *t = tp_xcalloc(1, sizeof(*t));
    t->loop = loop;
    t->fd = fd;
    t->weak = (flags & TP_TIMERFD_WEAK) != 0;
    t->cb = cb;
    t->ud = ud;
    ev_io_init(&t->io, on_io, fd, EV_READ);
    t->io.data = t;
    ev_io_start(loop, &t->io);
    ev_unref(loop); /* the idle watcher keeps no loop running; an armed timer holds one */
    return t;
}

void tp_timerfd_free(struct tp_timerfd *t)
{
    if (t == NULL)
        return;
    release(t);
    ev_ref(t->loop); /* libev: an unref'd watcher is ref'd again before it stops */
    ev_io_stop(t->loop, &t->io);
    close(t->fd);
    free(t);
}

int tp_timerfd_arm(struct tp_timerfd *t, int64_t ns, bool absolute)
{
    if (ns < 1)
        ns = 1; /* an it_value of zero would disarm it: a time already past fires at once */
    struct itimerspec its = {
        .it_value = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)}};
    if (timerfd_settime(t->fd, absolute ? TFD_TIMER_ABSTIME : 0, &its, NULL) != 0) {
        int e = errno;
        t->armed = false; /* an earlier arming that still fires calls nobody */
        release(t);
        errno = e;
        return e == EINVAL ? TP_EINVAL : TP_EIO;
    }
    t->armed = true;
    hold(t);
    return 0;
}
