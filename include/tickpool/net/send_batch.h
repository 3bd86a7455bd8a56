/*
 * A batch of plain socket sends made with one io_uring_enter (src/net/send_batch.c): the
 * fan-out's writes of one slice, each a whole frame to a socket, at the cost of one system call
 * instead of one `send` each (bench/README.md "Viewers", session 12).
 *
 * Every send is non-blocking (MSG_DONTWAIT): a full socket completes at once with
 * TP_IO_WANT_WRITE, as a send() would, and never waits in the kernel. tp_send_batch_run returns
 * only once every send has completed, so the bytes handed to tp_send_batch_add are borrowed only
 * until then.
 */
#ifndef TP_SEND_BATCH_H
#define TP_SEND_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tp_send_batch;

/** Sets up a batch of up to `cap` sends (a power of two, at most 4096). Returns NULL when the
 * kernel does not allow io_uring or its sends fail the start-up check (ENOSYS, EPERM from
 * kernel.io_uring_disabled or seccomp, no IORING_OP_SEND, a full socket that does not complete
 * at once), with the reason in `err`: the caller sends with send() instead. */
struct tp_send_batch *tp_send_batch_new(unsigned cap, char *err, size_t errlen);
/** Closes the ring and frees the batch (NULL: no-op). No send may be pending. */
void tp_send_batch_free(struct tp_send_batch *b);
/** Adds a send of bytes [p, p + n) on socket `fd` (both borrowed until tp_send_batch_run
 * returns). Returns its index in the batch; the batch must not be full. */
unsigned tp_send_batch_add(struct tp_send_batch *b, int fd, const void *p, size_t n);
/** Sends added since the last tp_send_batch_run. */
unsigned tp_send_batch_count(const struct tp_send_batch *b);
/** True when no send can be added before tp_send_batch_run. */
bool tp_send_batch_full(const struct tp_send_batch *b);
/** Makes every added send (one io_uring_enter when all complete at once, as they do) and waits
 * for their completions. Results: tp_send_batch_result. Returns 0, or TP_EIO when the ring
 * failed: the sends it did not take were made with send() (results are still all there), and
 * the caller should free the batch and use send() from now on. */
int tp_send_batch_run(struct tp_send_batch *b);
/** The result of send `i` of the last run, as tp_io_write reports a plain write: bytes written,
 * TP_IO_WANT_WRITE (the socket is full), TP_ECLOSED or TP_EIO. */
ssize_t tp_send_batch_result(const struct tp_send_batch *b, unsigned i);
/** Forgets the last run's sends and results: the batch is empty again. */
void tp_send_batch_clear(struct tp_send_batch *b);
/** Runs that had to wait for completions after the submit (sends the kernel did not complete
 * inline); 0 on the kernels tried (6.18). For the bench and the tests. */
unsigned long tp_send_batch_waits(const struct tp_send_batch *b);

#endif
