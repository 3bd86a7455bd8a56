/*
 * Plain TCP implementation of the tp_io vtable (see tickpool/net/io.h); the TLS one is
 * src/net/tls.c.
 */
#include "tickpool/net/io.h"
#include "tickpool/base/common.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t plain_read(struct tp_io *io, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = recv(io->fd, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        return tp_io_read_error(errno);
    }
}

ssize_t tp_io_read_error(int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK)
        return TP_IO_WANT_READ;
    return e == ECONNRESET ? TP_ECLOSED : TP_EIO;
}

ssize_t tp_io_send_error(int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK)
        return TP_IO_WANT_WRITE;
    return (e == EPIPE || e == ECONNRESET) ? TP_ECLOSED : TP_EIO;
}

ssize_t tp_io_send_fd(int fd, const void *p, size_t n)
{
    for (;;) {
        /* MSG_NOSIGNAL: a peer that went away must not kill the worker with SIGPIPE.
         * MSG_DONTWAIT: a full socket answers TP_IO_WANT_WRITE whatever the fd's mode. */
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        return tp_io_send_error(errno);
    }
}

static ssize_t plain_write(struct tp_io *io, const void *buf, size_t n)
{
    return tp_io_send_fd(io->fd, buf, n);
}

static int plain_handshake(struct tp_io *io)
{
    (void)io;
    return 0;
}

static const struct tp_io_ops plain_ops = {
    .read = plain_read,
    .write = plain_write,
    .handshake = plain_handshake,
    .deinit = NULL,
};

void tp_io_plain_init(struct tp_io *io, int fd)
{
    io->ops = &plain_ops;
    io->fd = fd;
    io->_impl = NULL;
}
