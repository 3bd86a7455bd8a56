/*
 * A one-shot timer on a Linux timerfd, watched by an ev_io of the caller's loop: it fires within
 * tens of µs of its time. An ev_timer or ev_periodic waits for libev's epoll timeout, which the
 * epoll backend rounds up to whole milliseconds, so a wait of 0.5 ms becomes 1 ms whenever no
 * other event comes (bench/README.md, "Boundaries", session 11). Used where that millisecond
 * matters: the bet batcher's call gap (CLOCK_MONOTONIC, relative) and the leader's writes at a
 * boundary's T (CLOCK_REALTIME, absolute, so it follows a step of the wall clock). Each caller
 * keeps its own fallback for when the kernel gives no timerfd or cannot arm it.
 */
#ifndef TP_TIMERFD_H
#define TP_TIMERFD_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct ev_loop;
struct tp_timerfd;

/** Called on the loop's thread when an armed timer expired; it is disarmed by then. */
typedef void (*tp_timerfd_cb)(void *ud);

/* tp_timerfd_new flags */
enum {
    /* An armed timer alone keeps no loop running (it takes no loop reference while armed). */
    TP_TIMERFD_WEAK = 1,
};

/** A disarmed timer on `clock` (CLOCK_MONOTONIC or CLOCK_REALTIME) calling `cb(ud)` on `loop`
 * (borrowed; call from its thread). NULL, errno set, when the kernel gives no timerfd. */
struct tp_timerfd *tp_timerfd_new(struct ev_loop *loop, clockid_t clock, int flags,
                                  tp_timerfd_cb cb, void *ud);
/** Stops the watcher and closes the fd; a callback not yet run never runs. NULL: no-op. */
void tp_timerfd_free(struct tp_timerfd *t);
/** Arms the timer (re-arms it if armed) to fire `ns` nanoseconds from now or, `absolute`, at
 * `ns` on its clock; a time not after now fires at once. 0, or a negative TP_E* when the
 * kernel refused (errno set; the callback then does not run until armed again). */
int tp_timerfd_arm(struct tp_timerfd *t, int64_t ns, bool absolute);

#endif
