/*
 * A small thread pool for blocking CPU work (argon2id password hashing) on behalf of one event
 * loop. Jobs run on pool threads; their completions come back to the loop through an ev_async
 * and run on the loop thread, so only the loop thread ever touches loop objects or connections.
 */
#ifndef TP_WORKQ_H
#define TP_WORKQ_H

struct ev_loop;
struct tp_workq;

/** Work run on a pool thread: must not touch the loop or anything owned by it. */
typedef void (*tp_workq_fn)(void *ud);
/** Completion run on the loop thread: err is 0 after `work` ran, TP_ECLOSED when the queue was
 * freed before it could run. */
typedef void (*tp_workq_done)(int err, void *ud);

/** Creates a pool of `nthreads` (>= 1) threads holding at most `max_queued` waiting jobs,
 * completing on `loop` (borrowed; call from the loop's thread). */
struct tp_workq *tp_workq_new(struct ev_loop *loop, int nthreads, int max_queued);
/** Stops and joins the threads; jobs not started complete with TP_ECLOSED, now. NULL: no-op. */
void tp_workq_free(struct tp_workq *q);
/** Queues a job: 0 (done is called exactly once, later, on the loop) or TP_EAGAIN when
 * max_queued jobs are waiting (done is never called). */
int tp_workq_submit(struct tp_workq *q, tp_workq_fn work, tp_workq_done done, void *ud);

#endif
