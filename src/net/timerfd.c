/*
 * One-shot timers on a timerfd (see tickpool/net/timerfd.h). The ev_io watches the fd only while
 * the timer is armed, so an armed timer keeps its loop running as an ev_timer would (unless
 * TP_TIMERFD_WEAK) and a fired one costs nothing. The read when it fires takes the expiration
 * count; EAGAIN there means the timer was re-armed after the fd became readable (re-arming
 * resets the count), so it has not expired yet and the watcher stays.
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
    tp_timerfd_cb cb;
    void *ud;
};

static void watch_start(struct tp_timerfd *t)
{
    if (ev_is_active(&t->io))
        return;
    ev_io_start(t->loop, &t->io);
    if (t->weak)
        ev_unref(t->loop);
}

static void watch_stop(struct tp_timerfd *t)
{
    if (!ev_is_active(&t->io))
        return;
    if (t->weak)
        ev_ref(t->loop); /* watch_start unref'd it */
    ev_io_stop(t->loop, &t->io);
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
    watch_stop(t);
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
    return t;
}

void tp_timerfd_free(struct tp_timerfd *t)
{
    if (t == NULL)
        return;
    watch_stop(t);
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
        watch_stop(t);
        errno = e;
        return e == EINVAL ? TP_EINVAL : TP_EIO;
    }
    watch_start(t);
    return 0;
}
