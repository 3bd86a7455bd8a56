/* Unit tests for the bet admission limiter (src/money/limiter.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/money/limiter.h"

#include <stdio.h>
#include <string.h>

static void test_capacity(void **state)
{
    (void)state;
    struct tp_limiter *l = tp_limiter_new(2);
    assert_int_equal(tp_limiter_acquire(l, 1, "a", 1), 0);
    assert_int_equal(tp_limiter_acquire(l, 1, "b", 1), 0);
    assert_int_equal(tp_limiter_acquire(l, 2, "c", 1), TP_EAGAIN);
    assert_int_equal(tp_limiter_inflight(l), 2);
    tp_limiter_release(l, 1, "a", 1);
    assert_int_equal(tp_limiter_acquire(l, 2, "c", 1), 0);
    assert_int_equal(tp_limiter_inflight(l), 2);
    tp_limiter_release(l, 1, "b", 1);
    tp_limiter_release(l, 2, "c", 1);
    assert_int_equal(tp_limiter_inflight(l), 0);
    tp_limiter_free(l);
}

static void test_same_key_conflicts(void **state)
{
    (void)state;
    struct tp_limiter *l = tp_limiter_new(10);
    assert_int_equal(tp_limiter_acquire(l, 7, "key", 3), 0);
    assert_int_equal(tp_limiter_acquire(l, 7, "key", 3), TP_ECONFLICT);
    /* Another user, a prefix, a longer key: different requests. */
    assert_int_equal(tp_limiter_acquire(l, 8, "key", 3), 0);
    assert_int_equal(tp_limiter_acquire(l, 7, "ke", 2), 0);
    assert_int_equal(tp_limiter_acquire(l, 7, "key2", 4), 0);
    tp_limiter_release(l, 7, "key", 3);
    assert_int_equal(tp_limiter_acquire(l, 7, "key", 3), 0);
    assert_int_equal(tp_limiter_inflight(l), 4);
    tp_limiter_free(l); /* frees entries still held */
}

static void test_conflict_wins_over_full(void **state)
{
    (void)state;
    struct tp_limiter *l = tp_limiter_new(1);
    assert_int_equal(tp_limiter_acquire(l, 1, "k", 1), 0);
    assert_int_equal(tp_limiter_acquire(l, 1, "k", 1), TP_ECONFLICT);
    assert_int_equal(tp_limiter_acquire(l, 1, "j", 1), TP_EAGAIN);
    tp_limiter_free(l);
}

static void test_bad_keys(void **state)
{
    (void)state;
    struct tp_limiter *l = tp_limiter_new(4);
    char big[TP_LIMITER_KEY_MAX + 1];
    memset(big, 'x', sizeof(big));
    assert_int_equal(tp_limiter_acquire(l, 1, "", 0), TP_EINVAL);
    assert_int_equal(tp_limiter_acquire(l, 1, big, sizeof(big)), TP_EINVAL);
    assert_int_equal(tp_limiter_acquire(l, 1, big, TP_LIMITER_KEY_MAX), 0);
    /* Keys are bytes: embedded NULs and high bytes are distinct keys. */
    assert_int_equal(tp_limiter_acquire(l, 1, "a\0b", 3), 0);
    assert_int_equal(tp_limiter_acquire(l, 1, "a\0c", 3), 0);
    assert_int_equal(tp_limiter_inflight(l), 3);
    tp_limiter_free(l);
}

/* Many entries in few chains: acquire/release in a mixed order keeps exact bookkeeping. */
static void test_many(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct tp_limiter *l = tp_limiter_new(N);
    char k[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof(k), "key-%d", i);
        assert_int_equal(tp_limiter_acquire(l, i % 13, k, (size_t)n), 0);
    }
    assert_int_equal(tp_limiter_acquire(l, 99, "x", 1), TP_EAGAIN);
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(k, sizeof(k), "key-%d", i);
        tp_limiter_release(l, i % 13, k, (size_t)n);
    }
    assert_int_equal(tp_limiter_inflight(l), N / 2);
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof(k), "key-%d", i);
        assert_int_equal(tp_limiter_acquire(l, i % 13, k, (size_t)n), i % 2 ? TP_ECONFLICT : 0);
    }
    assert_int_equal(tp_limiter_inflight(l), N);
    tp_limiter_free(l);
    tp_limiter_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_same_key_conflicts),
        cmocka_unit_test(test_conflict_wins_over_full),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
