/*
 * The store's own RESP for argv commands (src/store/store_resp.c) must be byte for byte what
 * hiredis's redisFormatCommandArgv writes, for argv commands and EVALSHA: empty, binary and
 * CRLF-holding arguments, many of them (a bet batch sends hundreds), appended after bytes already
 * in the buffer; and which argv commands are blocking reads. Replies, read into one block per
 * reply (src/store/store.c), must be what hiredis's own reader builds from the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/store/store.h"

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

/* True when `r` (tp_reply_*) is what hiredis's default reader built as `h`. */
static bool same_reply(const struct tp_store_reply *r, const redisReply *h)
{
    if (r == NULL || (int)tp_reply_type(r) != h->type)
        return false;
    size_t len;
    const char *s;
    switch (h->type) {
    case REDIS_REPLY_INTEGER:
        return tp_reply_integer(r) == h->integer;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        s = tp_reply_str(r, &len);
        return len == h->len && memcmp(s, h->str, len) == 0 && s[len] == '\0';
    case REDIS_REPLY_ARRAY:
        if (tp_reply_len(r) != h->elements)
            return false;
        for (size_t i = 0; i < h->elements; i++)
            if (!same_reply(tp_reply_at(r, i), h->element[i]))
                return false;
        return true;
    default:
        return true;
    }
}

static void check_reply(const char *resp, size_t n)
{
    struct tp_store_reply *r = tp_store_reply_parse(resp, n);
    redisReader *rd = redisReaderCreate();
    void *h = NULL;
    assert_int_equal(redisReaderFeed(rd, resp, n), REDIS_OK);
    assert_int_equal(redisReaderGetReply(rd, &h), REDIS_OK);
    assert_non_null(h);
    assert_true(same_reply(r, h));
    freeReplyObject(h);
    redisReaderFree(rd);
    tp_store_reply_free(r);
}

/* Scalars, nils, empty and nested arrays, a bet batch's shape, and replies larger than the
 * first block and than the largest chunk (strings of 2 MiB, 100,000 elements). */
static void test_reply_blocks(void **state)
{
    (void)state;
    const char *small[] = {"+OK\r\n",
                           "-ERR no\r\n",
                           ":-42\r\n",
                           "$0\r\n\r\n",
                           "$-1\r\n",
                           "*-1\r\n",
                           "*0\r\n",
                           "*1\r\n*0\r\n",
                           "*3\r\n$-1\r\n*-1\r\n:7\r\n",
                           "*2\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n+s\r\n"};
    for (size_t i = 0; i < TP_ARRAY_LEN(small); i++)
        check_reply(small[i], strlen(small[i]));
    struct tp_buf b;
    tp_buf_init(&b);
    /* A batch of 1,000 answers: {"ok", 6 integers} or {"err", code}. */
    tp_buf_puts(&b, "*1000\r\n");
    for (int i = 0; i < 1000; i++)
        tp_buf_puts(&b, i % 7 == 3 ? "*2\r\n$3\r\nerr\r\n$18\r\ninsufficient_funds\r\n"
                                   : "*7\r\n$2\r\nok\r\n:123456789\r\n:17\r\n:2\r\n:100\r\n"
                                     ":999999900\r\n:0\r\n");
    check_reply(tp_buf_ptr(&b), tp_buf_size(&b));
    /* Strings larger than a chunk, inside an array and alone. */
    enum { BIG = 2 * 1024 * 1024 + 3 };
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'y', BIG);
    char hdr[32];
    tp_buf_reset(&b);
    tp_buf_puts(&b, "*3\r\n:1\r\n");
    for (int i = 0; i < 2; i++) {
        snprintf(hdr, sizeof(hdr), "$%d\r\n", BIG - i);
        tp_buf_puts(&b, hdr);
        tp_buf_append(&b, big, (size_t)(BIG - i));
        tp_buf_puts(&b, "\r\n");
    }
    check_reply(tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_reset(&b);
    snprintf(hdr, sizeof(hdr), "$%d\r\n", BIG);
    tp_buf_puts(&b, hdr);
    tp_buf_append(&b, big, BIG);
    tp_buf_puts(&b, "\r\n");
    check_reply(tp_buf_ptr(&b), tp_buf_size(&b));
    free(big);
    /* 100,000 elements: the element array alone is larger than the largest chunk. */
    tp_buf_reset(&b);
    tp_buf_puts(&b, "*100000\r\n");
    for (int i = 0; i < 100000; i++)
        tp_buf_puts(&b, i % 2 ? ":5\r\n" : "$4\r\nabcd\r\n");
    check_reply(tp_buf_ptr(&b), tp_buf_size(&b));
    /* Anything but exactly one reply is refused. */
    assert_null(tp_store_reply_parse("*2\r\n:1\r\n", 8));
    assert_null(tp_store_reply_parse(":1\r\n:2\r\n", 8));
    tp_buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resp_matches_hiredis),
        cmocka_unit_test(test_evalsha),
        cmocka_unit_test(test_blocking_read),
        cmocka_unit_test(test_reply_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
