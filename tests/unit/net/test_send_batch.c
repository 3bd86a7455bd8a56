/* Unit tests for the io_uring send batch (src/net/send_batch.c) on real socket pairs: each send
 * of one batch gets its own result in tp_io_write's terms (whole, partial, a full socket's
 * TP_IO_WANT_WRITE, a gone peer's TP_ECLOSED), all of them complete within the run without a
 * wait (MSG_DONTWAIT), the ring's slots wrap around over many runs, and a ring that fails
 * mid-run still makes every send, with send(), with the same results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/net/io.h"
#include "tickpool/net/send_batch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refuse_syscall.h"

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

/* One batch's four sends, each to its own socket pair: a whole write, a partial one (a frame
 * bigger than the socket's room), a full socket and a peer gone. */
struct four {
    int whole[2], part[2], full[2], gone[2];
};
static char big[1 << 16];

static void add_four(struct tp_send_batch *b, struct four *s)
{
    static char junk[1 << 16];
    pair(s->whole, 0);
    pair(s->part, 4096);
    pair(s->full, 4096);
    pair(s->gone, 0);
    while (send(s->full[0], junk, sizeof(junk), MSG_NOSIGNAL) > 0) {
    }
    close(s->gone[1]);
    assert_int_equal(tp_send_batch_add(b, s->whole[0], "hello", 5), 0);
    assert_int_equal(tp_send_batch_add(b, s->part[0], big, sizeof(big)), 1);
    assert_int_equal(tp_send_batch_add(b, s->full[0], "x", 1), 2);
    assert_int_equal(tp_send_batch_add(b, s->gone[0], "x", 1), 3);
}

/* Each of the four sends has its own result in tp_io_write's terms, and the whole one arrived. */
static bool four_results_ok(const struct tp_send_batch *b, const struct four *s)
{
    ssize_t p = tp_send_batch_result(b, 1);
    char got[8];
    return tp_send_batch_result(b, 0) == 5 && p > 0 && p < (ssize_t)sizeof(big) &&
           tp_send_batch_result(b, 2) == TP_IO_WANT_WRITE &&
           tp_send_batch_result(b, 3) == TP_ECLOSED &&
           recv(s->whole[1], got, sizeof(got), 0) == 5 && memcmp(got, "hello", 5) == 0;
}

static void close_four(struct four *s)
{
    int *fds[] = {s->whole, s->part, s->full, s->gone};
    for (int k = 0; k < 4; k++) {
        close(fds[k][0]);
        if (k != 3)
            close(fds[k][1]);
    }
}

static void test_each_send_its_result(void **state)
{
    (void)state;
    struct tp_send_batch *b = new_batch(8);
    struct four s;
    add_four(b, &s);
    assert_int_equal(tp_send_batch_count(b), 4);
    assert_int_equal(tp_send_batch_run(b), 0);
    assert_true(four_results_ok(b, &s));
    assert_int_equal(tp_send_batch_waits(b), 0); /* all completed within the submitting enter */
    tp_send_batch_clear(b);
    assert_int_equal(tp_send_batch_count(b), 0);
    close_four(&s);
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

/* The ring fails in the run (io_uring_enter refused with EPERM, as if a seccomp profile changed
 * under a running worker or the ring broke: not a refusal the run retries): the run says so
 * (TP_EIO, the caller drops the ring) and has made every send itself with send(), each with the
 * result the ring would have given. In a child, since the filter cannot be removed; its exit
 * code names the first check that failed. */
static void test_ring_fails_mid_run(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        struct tp_send_batch *b = tp_send_batch_new(8, err, sizeof(err));
        if (b == NULL)
            _exit(10);
        struct four s;
        add_four(b, &s);
        if (refuse_syscall(__NR_io_uring_enter, EPERM) != 0)
            _exit(11);
        if (tp_send_batch_run(b) != TP_EIO)
            _exit(12);
        if (!four_results_ok(b, &s))
            _exit(13);
        close_four(&s);
        tp_send_batch_free(b);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_send_its_result),
        cmocka_unit_test(test_ring_wraps),
        cmocka_unit_test(test_ring_fails_mid_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
