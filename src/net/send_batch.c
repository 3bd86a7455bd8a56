/*
 * Batched plain sends through io_uring (tickpool/net/send_batch.h), with raw system calls:
 * Debian 12's liburing (2.3) is not among the packages a fresh machine installs, and the little
 * this needs (one ring, one opcode, no polling) is a page of code. The only file that includes
 * <linux/io_uring.h>.
 *
 * Why: one send() costs 4.4-4.8 us of CPU on the VMs this runs on, most of it the system call's
 * entry and exit; a worker writing a beat to 5,000 sockets makes 5,000 of them. io_uring makes
 * the same sends in the kernel from one io_uring_enter per batch (bench/README.md "Viewers").
 *
 * MSG_DONTWAIT in each SQE makes the kernel complete a send that finds its socket full at once
 * with -EAGAIN (the request is flagged no-wait) instead of arming a poll and sending later. So a
 * send never outlives the run that made it, and the caller's bytes and sockets need no lifetime
 * beyond it: tp_send_batch_new checks this on the running kernel before it says yes.
 */
#include "tickpool/net/send_batch.h"

#include "tickpool/base/common.h"
#include "tickpool/net/io.h"

#include <linux/io_uring.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PENDING ((ssize_t)INT32_MIN) /* no completion yet */
#define SEND_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL)

struct tp_send_batch {
    int fd;
    unsigned cap, n;
    unsigned base; /* SQ tail when the batch's first send was added: send i is in slot base + i */
    void *rings;   /* the SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP) */
    size_t rings_size;
    struct io_uring_sqe *sqes;
    size_t sqes_size;
    unsigned *sq_tail, *sq_array, sq_mask;
    unsigned *cq_head, *cq_tail, cq_mask;
    struct io_uring_cqe *cqes;
    ssize_t *res;
    unsigned long waits;
};

static int ring_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int ring_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, NULL, 0);
}

/* A completion's result in tp_io_write's terms. EINTR cannot come from a non-blocking send; it
 * would mean "try again", which the socket's watcher does. */
static ssize_t result_of(int res)
{
    if (res >= 0)
        return res;
    return res == -EINTR ? TP_IO_WANT_WRITE : tp_io_send_error(-res);
}

/* Takes every completion the kernel has posted; returns how many. */
static unsigned reap(struct tp_send_batch *b)
{
    unsigned head = *b->cq_head;
    unsigned tail = __atomic_load_n(b->cq_tail, __ATOMIC_ACQUIRE);
    unsigned k = 0;
    for (; head != tail; head++, k++) {
        const struct io_uring_cqe *cqe = &b->cqes[head & b->cq_mask];
        TP_ASSERT(cqe->user_data < b->n);
        b->res[cqe->user_data] = result_of(cqe->res);
    }
    __atomic_store_n(b->cq_head, head, __ATOMIC_RELEASE);
    return k;
}

unsigned tp_send_batch_add(struct tp_send_batch *b, int fd, const void *p, size_t n)
{
    TP_ASSERT(b->n < b->cap);
    unsigned i = b->n++;
    struct io_uring_sqe *sqe = &b->sqes[(b->base + i) & b->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)p;
    sqe->len = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n; /* a short write: the rest is kept */
    sqe->msg_flags = SEND_FLAGS;
    sqe->user_data = i;
    b->res[i] = PENDING;
    return i;
}

unsigned tp_send_batch_count(const struct tp_send_batch *b)
{
    return b->n;
}

bool tp_send_batch_full(const struct tp_send_batch *b)
{
    return b->n == b->cap;
}

ssize_t tp_send_batch_result(const struct tp_send_batch *b, unsigned i)
{
    TP_ASSERT(i < b->n && b->res[i] != PENDING);
    return b->res[i];
}

void tp_send_batch_clear(struct tp_send_batch *b)
{
    b->base += b->n;
    b->n = 0;
}

unsigned long tp_send_batch_waits(const struct tp_send_batch *b)
{
    return b->waits;
}

int tp_send_batch_run(struct tp_send_batch *b)
{
    unsigned n = b->n, sub = 0, got = 0;
    int rc = 0;
    if (n == 0)
        return 0;
    __atomic_store_n(b->sq_tail, b->base + n, __ATOMIC_RELEASE);
    /* One enter takes them all; more only after a transient refusal (EAGAIN, EBUSY: no memory
     * for requests now, a full completion queue, which the reap below empties). */
    for (int tries = 0; sub < n; tries++) {
        int r = ring_enter(b->fd, n - sub, 0, 0);
        if (r > 0) {
            sub += (unsigned)r;
            continue;
        }
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EBUSY) && tries < 8) {
            got += reap(b);
            continue;
        }
        rc = TP_EIO;
        break;
    }
    got += reap(b);
    if (got < sub)
        b->waits++;
    while (got < sub) {
        /* Sends the kernel did not complete inline (none on the kernels tried): they read the
         * caller's bytes until they complete, so returning before that is not an option. */
        int r = ring_enter(b->fd, 0, sub - got, IORING_ENTER_GETEVENTS);
        TP_ASSERT(r >= 0 || errno == EINTR);
        got += reap(b);
    }
    /* The ring failed: what it did not take is sent as before. The ring still holds those
     * entries, so it must not be entered again (the caller frees it). */
    for (unsigned i = 0; rc != 0 && i < n; i++) {
        if (b->res[i] != PENDING)
            continue;
        const struct io_uring_sqe *sqe = &b->sqes[(b->base + i) & b->sq_mask];
        b->res[i] = tp_io_send_fd(sqe->fd, (const void *)(uintptr_t)sqe->addr, sqe->len);
    }
    return rc;
}

/* The start-up check: on a socket pair, a send to a full socket and one to an empty one must
 * both have completed when the submitting enter returns (the full one with TP_IO_WANT_WRITE), and
 * the empty one must have been written whole. NULL when they did, else the reason. */
static const char *check_sends(struct tp_send_batch *b)
{
    static const char byte[1] = {'x'};
    static char sink[1 << 16];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return "socketpair failed";
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    while (send(sv[0], sink, sizeof(sink), MSG_NOSIGNAL) > 0) {
    }
    const char *why = NULL;
    tp_send_batch_add(b, sv[0], byte, 1); /* full */
    tp_send_batch_add(b, sv[1], byte, 1); /* empty */
    __atomic_store_n(b->sq_tail, b->base + 2, __ATOMIC_RELEASE);
    int r = ring_enter(b->fd, 2, 0, 0);
    unsigned got = reap(b);
    if (r != 2)
        why = "io_uring_enter did not take two sends";
    else if (got < 2)
        why = "a send did not complete at once (a full socket's send waits in the kernel)";
    else if (b->res[0] != TP_IO_WANT_WRITE)
        why = "a send to a full socket did not fail with EAGAIN";
    else if (b->res[1] != 1)
        why = "IORING_OP_SEND failed (kernel older than 5.6?)";
    /* Whatever waits completes once the full socket drains or closes. */
    while (recv(sv[1], sink, sizeof(sink), 0) > 0) {
    }
    close(sv[0]);
    close(sv[1]);
    while (r > 0 && got < (unsigned)r) {
        int w = ring_enter(b->fd, 0, (unsigned)r - got, IORING_ENTER_GETEVENTS);
        if (w < 0 && errno != EINTR)
            break;
        got += reap(b);
    }
    tp_send_batch_clear(b);
    return why;
}

struct tp_send_batch *tp_send_batch_new(unsigned cap, char *err, size_t errlen)
{
    TP_ASSERT(cap >= 2 && cap <= 4096 && (cap & (cap - 1)) == 0);
    struct tp_send_batch *b = tp_xcalloc(1, sizeof(*b));
    b->fd = -1;
    b->rings = b->sqes = MAP_FAILED;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    /* SUBMIT_ALL (5.18): a send that fails its preparation does not stop the rest. */
    p.flags = IORING_SETUP_SUBMIT_ALL;
    b->fd = ring_setup(cap, &p);
    if (b->fd < 0 && errno == EINVAL) {
        memset(&p, 0, sizeof(p));
        b->fd = ring_setup(cap, &p);
    }
    if (b->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "io_uring_setup: %s%s", strerror(e),
                 e == EPERM    ? " (kernel.io_uring_disabled, or a seccomp filter)"
                 : e == ENOSYS ? " (no io_uring in this kernel, or a seccomp filter)"
                               : "");
        goto fail;
    }
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        snprintf(err, errlen, "io_uring without IORING_FEAT_SINGLE_MMAP (kernel older than 5.4)");
        goto fail;
    }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    b->rings_size = TP_MAX(sq_size, cq_size);
    b->rings = mmap(NULL, b->rings_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b->fd,
                    IORING_OFF_SQ_RING);
    b->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    if (b->rings != MAP_FAILED)
        b->sqes = mmap(NULL, b->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b->fd,
                       IORING_OFF_SQES);
    if (b->rings == MAP_FAILED || b->sqes == MAP_FAILED) {
        snprintf(err, errlen, "mmap of the io_uring rings: %s", strerror(errno));
        goto fail;
    }
    char *r = b->rings;
    b->sq_tail = (unsigned *)(r + p.sq_off.tail);
    b->sq_mask = *(unsigned *)(r + p.sq_off.ring_mask);
    b->sq_array = (unsigned *)(r + p.sq_off.array);
    b->cq_head = (unsigned *)(r + p.cq_off.head);
    b->cq_tail = (unsigned *)(r + p.cq_off.tail);
    b->cq_mask = *(unsigned *)(r + p.cq_off.ring_mask);
    b->cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
    /* Slot k always holds SQE k: sends are added in ring order. */
    for (unsigned k = 0; k < p.sq_entries; k++)
        b->sq_array[k] = k;
    b->base = *b->sq_tail;
    b->cap = cap;
    b->res = tp_xcalloc(cap, sizeof(*b->res));
    const char *why = check_sends(b);
    if (why != NULL) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    return b;
fail:
    tp_send_batch_free(b);
    return NULL;
}

void tp_send_batch_free(struct tp_send_batch *b)
{
    if (b == NULL)
        return;
    if (b->sqes != MAP_FAILED)
        munmap(b->sqes, b->sqes_size);
    if (b->rings != MAP_FAILED)
        munmap(b->rings, b->rings_size);
    if (b->fd >= 0)
        close(b->fd);
    free(b->res);
    free(b);
}
