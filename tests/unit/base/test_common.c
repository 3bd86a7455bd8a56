/* Unit tests for the shared helpers (src/base/common.c): decimal formatting without printf must
 * write exactly what printf writes, at both ends of the range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void check_i64(int64_t v)
{
    char want[32], got[TP_FMT_I64_MAX];
    int n = snprintf(want, sizeof(want), "%" PRId64, v);
    memset(got, 'x', sizeof(got));
    assert_int_equal(tp_fmt_i64(got, v), (size_t)n);
    assert_string_equal(got, want);
}

static void check_u64(uint64_t v)
{
    char want[32], got[TP_FMT_I64_MAX];
    int n = snprintf(want, sizeof(want), "%" PRIu64, v);
    assert_int_equal(tp_fmt_u64(got, v), (size_t)n);
    assert_string_equal(got, want);
}

static void test_fmt_matches_printf(void **state)
{
    (void)state;
    const int64_t edges[] = {0,         1,         -1,        9,         10,
                             -10,       99,        100,       12345,     -98765,
                             INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < TP_ARRAY_LEN(edges); i++)
        check_i64(edges[i]);
    check_u64(0);
    check_u64(UINT64_MAX);
    check_u64((uint64_t)INT64_MAX + 1);
    /* Every power of ten and its neighbours, both signs. */
    for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10) {
        check_i64(p - 1);
        check_i64(p);
        check_i64(p + 1);
        check_i64(-p);
        check_u64((uint64_t)p * 10 - 1);
    }
    /* A longest form fills the buffer exactly, NUL included. */
    char out[TP_FMT_I64_MAX];
    assert_int_equal(tp_fmt_i64(out, INT64_MIN), TP_FMT_I64_MAX - 1);
    assert_int_equal(out[TP_FMT_I64_MAX - 1], '\0');
}

/* Two digits at a time: every value below 100,000 and values of every length, odd and even. */
static void test_fmt_sweep(void **state)
{
    (void)state;
    for (int64_t v = 0; v < 100000; v++)
        check_i64(v);
    uint64_t x = 88172645463325252ull; /* xorshift64 */
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        check_u64(x >> (i % 64));
        check_i64((int64_t)(x >> (i % 63 + 1)) * (i % 2 ? -1 : 1)); /* < 2^63: negatable */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_matches_printf),
        cmocka_unit_test(test_fmt_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
