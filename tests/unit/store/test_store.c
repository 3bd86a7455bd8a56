/*
 * The store's own RESP for argv commands (src/store/store_resp.c) must be byte for byte what
 * hiredis's redisFormatCommandArgv writes, for argv commands and EVALSHA: empty, binary and
 * CRLF-holding arguments, many of them (a bet batch sends hundreds), appended after bytes already
 * in the buffer; and which argv commands are blocking reads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

/* The RESP formatter is private to the store module. */
#include "../../../src/store/store_internal.h"

static void check(int argc, const char **argv, const size_t *lens)
{
    char *want = NULL;
    long long n = redisFormatCommandArgv(&want, argc, argv, lens);
    assert_true(n > 0);
    struct tp_buf b;
    tp_buf_init(&b);
    tp_buf_puts(&b, "prefix");
    tp_store_resp_argv(&b, argc, argv, lens);
    assert_int_equal(tp_buf_size(&b), 6 + (size_t)n);
    assert_memory_equal(tp_buf_ptr(&b), "prefix", 6);
    assert_memory_equal(tp_buf_ptr(&b) + 6, want, (size_t)n);
    tp_buf_deinit(&b);
    free(want);
}

static void test_resp_matches_hiredis(void **state)
{
    (void)state;
    const char *a1[] = {"PING"};
    size_t l1[] = {4};
    check(1, a1, l1);
    /* An empty argument, one with CRLF and NUL inside, a long one. */
    static char big[70000];
    memset(big, 'x', sizeof(big));
    const char *a2[] = {"SET", "", "a\r\nb\0c", big};
    size_t l2[] = {3, 0, 6, sizeof(big)};
    check(4, a2, l2);
    /* Many arguments of every width of length header. */
    enum { N = 1200 };
    const char *a3[N];
    size_t l3[N];
    for (int i = 0; i < N; i++) {
        a3[i] = big;
        l3[i] = (size_t)(i * 37) % 12000;
    }
    check(N, a3, l3);
}

static void test_evalsha(void **state)
{
    (void)state;
    const char *sha = "0123456789abcdef0123456789abcdef01234567";
    const char *args[] = {"k1", "", "v\r\n1", "12345678901"};
    size_t lens[] = {2, 0, 4, 11};
    const char *full[] = {"EVALSHA", sha, "2", "k1", "", "v\r\n1", "12345678901"};
    size_t flens[] = {7, 40, 1, 2, 0, 4, 11};
    char *want = NULL;
    long long n = redisFormatCommandArgv(&want, 7, full, flens);
    assert_true(n > 0);
    struct tp_buf b;
    tp_buf_init(&b);
    tp_store_resp_evalsha(&b, sha, 2, 4, args, lens);
    assert_int_equal(tp_buf_size(&b), (size_t)n);
    assert_memory_equal(tp_buf_ptr(&b), want, (size_t)n);
    free(want);
    /* NUL-terminated arguments (lens NULL), no argument at all. */
    const char *full2[] = {"EVALSHA", sha, "0", "a", "bc"};
    n = redisFormatCommandArgv(&want, 5, full2, NULL);
    tp_buf_reset(&b);
    tp_store_resp_evalsha(&b, sha, 0, 2, full2 + 3, NULL);
    assert_int_equal(tp_buf_size(&b), (size_t)n);
    assert_memory_equal(tp_buf_ptr(&b), want, (size_t)n);
    free(want);
    n = redisFormatCommandArgv(&want, 3, full2, NULL);
    tp_buf_reset(&b);
    tp_store_resp_evalsha(&b, sha, 0, 0, NULL, NULL);
    assert_int_equal(tp_buf_size(&b), (size_t)n);
    assert_memory_equal(tp_buf_ptr(&b), want, (size_t)n);
    free(want);
    tp_buf_deinit(&b);
}

static void test_blocking_read(void **state)
{
    (void)state;
    const char *a[] = {"xreadgroup", "GROUP", "g", "c", "block", "100", "STREAMS", "s", ">"};
    size_t l[] = {10, 5, 1, 1, 5, 3, 7, 1, 1};
    assert_true(tp_store_resp_blocking_read(9, a, l));
    assert_false(tp_store_resp_blocking_read(4, a, l));
    const char *b[] = {"XREAD", "COUNT", "BLOCK"};
    size_t bl[] = {5, 5, 5};
    assert_true(tp_store_resp_blocking_read(3, b, bl));
    const char *c[] = {"GET", "BLOCK"};
    size_t cl[] = {3, 5};
    assert_false(tp_store_resp_blocking_read(2, c, cl));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resp_matches_hiredis),
        cmocka_unit_test(test_evalsha),
        cmocka_unit_test(test_blocking_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
