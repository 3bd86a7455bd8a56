/* Unit tests for the io_uring send batch (src/net/send_batch.c) on real socket pairs: each send
 * of one batch gets its own result in tp_io_write's terms (whole, partial, a full socket's
 * TP_IO_WANT_WRITE, a gone peer's TP_ECLOSED), all of them complete within the run without a
 * wait (MSG_DONTWAIT), and the ring's slots wrap around over many runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/net/io.h"
#include "tickpool/net/send_batch.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct tp_send_batch *new_batch(unsigned cap)
{
    char err[256];
    struct tp_send_batch *b = tp_send_batch_new(cap, err, sizeof(err));
    if (b == NULL)
        fprintf(stderr, "io_uring unavailable: %s\n", err);
    assert_non_null(b);
    return b;
}

static void pair(int sv[2], int sndbuf)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    if (sndbuf > 0)
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
}

static void test_each_send_its_result(void **state)
{
    (void)state;
    struct tp_send_batch *b = new_batch(8);
    static char big[1 << 16], junk[1 << 16];
    int whole[2], part[2], full[2], gone[2];
    pair(whole, 0);
    pair(part, 4096);
    pair(full, 4096);
    pair(gone, 0);
    while (send(full[0], junk, sizeof(junk), MSG_NOSIGNAL) > 0) {
    }
    close(gone[1]);
    assert_int_equal(tp_send_batch_add(b, whole[0], "hello", 5), 0);
    assert_int_equal(tp_send_batch_add(b, part[0], big, sizeof(big)), 1);
    assert_int_equal(tp_send_batch_add(b, full[0], "x", 1), 2);
    assert_int_equal(tp_send_batch_add(b, gone[0], "x", 1), 3);
    assert_int_equal(tp_send_batch_count(b), 4);
    assert_int_equal(tp_send_batch_run(b), 0);
    assert_int_equal(tp_send_batch_result(b, 0), 5);
    ssize_t p = tp_send_batch_result(b, 1);
    assert_true(p > 0 && p < (ssize_t)sizeof(big));
    assert_int_equal(tp_send_batch_result(b, 2), TP_IO_WANT_WRITE);
    assert_int_equal(tp_send_batch_result(b, 3), TP_ECLOSED);
    assert_int_equal(tp_send_batch_waits(b), 0); /* all completed within the submitting enter */
    char got[8];
    assert_int_equal(recv(whole[1], got, sizeof(got), 0), 5);
    assert_memory_equal(got, "hello", 5);
    tp_send_batch_clear(b);
    assert_int_equal(tp_send_batch_count(b), 0);
    int *fds[] = {whole, part, full, gone};
    for (int k = 0; k < 4; k++) {
        close(fds[k][0]);
        if (k != 3)
            close(fds[k][1]);
    }
    tp_send_batch_free(b);
}

/* 300 runs of a full batch of 4 on one socket: the slots wrap around the 4-entry ring many
 * times, and every byte arrives once, in order. */
static void test_ring_wraps(void **state)
{
    (void)state;
    struct tp_send_batch *b = new_batch(4);
    int sv[2];
    pair(sv, 0);
    static char out[1200];
    for (int k = 0; k < 1200; k++)
        out[k] = (char)('a' + k % 26);
    static char in[1200];
    size_t got = 0;
    for (int run = 0; run < 300; run++) {
        for (int i = 0; i < 4; i++)
            tp_send_batch_add(b, sv[0], out + run * 4 + i, 1);
        assert_true(tp_send_batch_full(b));
        assert_int_equal(tp_send_batch_run(b), 0);
        for (unsigned i = 0; i < 4; i++)
            assert_int_equal(tp_send_batch_result(b, i), 1);
        tp_send_batch_clear(b);
        ssize_t n;
        while ((n = recv(sv[1], in + got, sizeof(in) - got, 0)) > 0)
            got += (size_t)n;
    }
    assert_int_equal(got, sizeof(in));
    assert_memory_equal(in, out, sizeof(in));
    close(sv[0]);
    close(sv[1]);
    tp_send_batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_send_its_result),
        cmocka_unit_test(test_ring_wraps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
