/*
 * Byte-stream I/O over a non-blocking socket, plain or TLS, behind one vtable (wrk's
 * `struct sock`). Connection code never knows which one it holds.
 */
#ifndef TP_IO_H
#define TP_IO_H

#include <stddef.h>
#include <sys/types.h>

/* Extra results of read/write/handshake besides byte counts and TP_E* errors. */
enum tp_io_status {
    TP_IO_WANT_READ = -100,  /* retry when the socket is readable */
    TP_IO_WANT_WRITE = -101, /* retry when the socket is writable (TLS may need this on read) */
};

struct tp_io;

struct tp_io_ops {
    /** Reads up to n bytes: >0 bytes read, 0 at EOF, TP_IO_WANT_*, or a negative TP_E*. */
    ssize_t (*read)(struct tp_io *io, void *buf, size_t n);
    /** Writes up to n bytes: >0 bytes written, TP_IO_WANT_*, or a negative TP_E*. */
    ssize_t (*write)(struct tp_io *io, const void *buf, size_t n);
    /** Advances the handshake: 0 when done, TP_IO_WANT_*, or a negative TP_E*. */
    int (*handshake)(struct tp_io *io);
    /** Releases implementation state (not the fd). */
    void (*deinit)(struct tp_io *io);
};

struct tp_io {
    const struct tp_io_ops *ops;
    int fd;
    void *_impl; /* owned by the implementation (TLS session) */
};

/** tp_io_read's result for a plain recv that failed with errno `e` (not EINTR): TP_IO_WANT_READ,
 * TP_ECLOSED or TP_EIO. The plain read's mapping, shared with the bench's stamped reads. */
ssize_t tp_io_read_error(int e);
/** tp_io_write's result for a plain send that failed with errno `e` (not EINTR): TP_IO_WANT_WRITE,
 * TP_ECLOSED or TP_EIO. The plain write's mapping, shared with the fan-out's batched sends. */
ssize_t tp_io_send_error(int e);
/** One send() of up to n bytes to plain socket `fd`, retried on EINTR, never blocking and never
 * raising SIGPIPE: the plain tp_io_write, and the fan-out's batched sends when their ring fails. */
ssize_t tp_io_send_fd(int fd, const void *p, size_t n);

/** Initialises `io` as plain TCP on `fd` (borrowed: the caller closes it). */
void tp_io_plain_init(struct tp_io *io, int fd);

static inline ssize_t tp_io_read(struct tp_io *io, void *buf, size_t n)
{
    return io->ops->read(io, buf, n);
}
static inline ssize_t tp_io_write(struct tp_io *io, const void *buf, size_t n)
{
    return io->ops->write(io, buf, n);
}
static inline int tp_io_handshake(struct tp_io *io)
{
    return io->ops->handshake(io);
}
static inline void tp_io_deinit(struct tp_io *io)
{
    if (io->ops != NULL && io->ops->deinit != NULL)
        io->ops->deinit(io);
    io->ops = NULL;
}

#endif
