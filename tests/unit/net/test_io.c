/* Unit tests for the plain tp_io (src/net/io.c): the errno mappings a plain read and send share
 * with their other users (tp_io_read_error: loadgen's stamped reads; tp_io_send_error: the
 * fan-out's batched sends), and a plain read on a socket pair: bytes, nothing yet
 * (TP_IO_WANT_READ), the peer's close (0) and a reset (TP_ECLOSED). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/net/io.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_read_error_mapping(void **state)
{
    (void)state;
    assert_int_equal(tp_io_read_error(EAGAIN), TP_IO_WANT_READ);
    assert_int_equal(tp_io_read_error(EWOULDBLOCK), TP_IO_WANT_READ);
    assert_int_equal(tp_io_read_error(ECONNRESET), TP_ECLOSED);
    assert_int_equal(tp_io_read_error(EBADF), TP_EIO);
    assert_int_equal(tp_io_read_error(ETIMEDOUT), TP_EIO);
    /* EPIPE is a send's "closed", not a read's. */
    assert_int_equal(tp_io_read_error(EPIPE), TP_EIO);
}

static void test_send_error_mapping(void **state)
{
    (void)state;
    assert_int_equal(tp_io_send_error(EAGAIN), TP_IO_WANT_WRITE);
    assert_int_equal(tp_io_send_error(EWOULDBLOCK), TP_IO_WANT_WRITE);
    assert_int_equal(tp_io_send_error(EPIPE), TP_ECLOSED);
    assert_int_equal(tp_io_send_error(ECONNRESET), TP_ECLOSED);
    assert_int_equal(tp_io_send_error(EBADF), TP_EIO);
}

static void test_plain_read_on_a_pair(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct tp_io io;
    tp_io_plain_init(&io, sv[0]);
    char buf[16];
    assert_int_equal(tp_io_read(&io, buf, sizeof(buf)), TP_IO_WANT_READ);
    assert_int_equal(write(sv[1], "abc", 3), 3);
    assert_int_equal(tp_io_read(&io, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "abc", 3);
    assert_int_equal(tp_io_write(&io, "xy", 2), 2);
    assert_int_equal(read(sv[1], buf, sizeof(buf)), 2); /* unread, the close would reset */
    close(sv[1]);
    assert_int_equal(tp_io_read(&io, buf, sizeof(buf)), 0);
    /* A send to the closed peer: EPIPE, and no SIGPIPE kills the test. */
    assert_int_equal(tp_io_write(&io, "xy", 2), TP_ECLOSED);
    close(sv[0]);
}

/* A TCP peer that closes with unread data sends a reset: the read says TP_ECLOSED. */
static void test_plain_read_reset(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 1), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept(ls, NULL, NULL);
    assert_true(s >= 0);
    assert_int_equal(write(c, "x", 1), 1); /* s never reads it: closing s resets */
    usleep(20000);
    close(s);
    usleep(20000);
    fcntl(c, F_SETFL, O_NONBLOCK);
    struct tp_io io;
    tp_io_plain_init(&io, c);
    char buf[4];
    assert_int_equal(tp_io_read(&io, buf, sizeof(buf)), TP_ECLOSED);
    close(c);
    close(ls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_error_mapping),
        cmocka_unit_test(test_send_error_mapping),
        cmocka_unit_test(test_plain_read_on_a_pair),
        cmocka_unit_test(test_plain_read_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
