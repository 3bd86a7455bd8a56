/*
 * What a worker's event loop did around a late boundary, for the debug lines that say why a
 * step or a `round` message was late (the leader's `boundary` line, a worker's `round
 * delivered`; bench/README.md, "Boundaries", session 11). Per process (one loop per worker):
 * an ev_check and an ev_prepare watcher time every loop iteration, the callbacks it ran
 * ("busy") and the wait in epoll before it ("poll": asleep, or woken and waiting for a CPU);
 * the iterations that took long are kept in a small ring, to be asked about a window of time
 * afterwards. Only while the log level is debug (tp_loop_watch_start does nothing otherwise):
 * two clock reads per iteration.
 */
#ifndef TP_LOOP_WATCH_H
#define TP_LOOP_WATCH_H

#include <stdbool.h>
#include <stdint.h>

struct ev_loop;

/* The longest iteration and the longest poll seen in a window (wall clock, ns; 0: none kept). */
struct tp_loop_watch_span {
    int64_t busy_ns, busy_at_ns;  /* the longest callbacks of one iteration, and its start */
    int64_t poll_ns, poll_end_ns; /* the longest wait in epoll, and when it returned */
};

/* This thread's time on a CPU and waiting for one (ns, /proc/thread-self/schedstat). */
struct tp_loop_watch_sched {
    int64_t run_ns, wait_ns;
};

/** Starts timing `loop`'s iterations (debug level only; once per process). */
void tp_loop_watch_start(struct ev_loop *loop);
/** True once started (the log level is debug). */
bool tp_loop_watch_on(void);
/** The longest busy iteration that ended and the longest poll that returned within
 * [from_ns, to_ns] (wall clock), among those kept (busy >= 1 ms, poll >= 2 ms) and the
 * iteration running now. */
struct tp_loop_watch_span tp_loop_watch_window(int64_t from_ns, int64_t to_ns);
/** The calling thread's schedstat now; zeros when off or unreadable. */
struct tp_loop_watch_sched tp_loop_watch_sched_now(void);

#endif
