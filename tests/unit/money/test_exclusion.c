/* Unit tests for self-exclusion request validation (src/money/exclusion.c): pure, no loop, no
 * Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tickpool/money/exclusion.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include <string.h>

/* Days of a JSON body, or -1 when refused (and then *days untouched). */
static int pj(const char *json)
{
    int days = -7;
    int rc = tp_exclusion_parse(TP_FMT_JSON, json, strlen(json), &days);
    if (rc != 0) {
        assert_int_equal(rc, TP_EINVAL);
        assert_int_equal(days, -7);
        return -1;
    }
    return days;
}

static void test_valid(void **state)
{
    (void)state;
    assert_int_equal(pj("{\"days\":1}"), 1);
    assert_int_equal(pj(" { \"days\" : 365 } "), 365);
    assert_int_equal(pj("{\"days\":30}"), 30);
}

static void test_hostile(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"days\":0}",
        "{\"days\":366}",
        "{\"days\":-1}",
        "{\"days\":7.0}",
        "{\"days\":1e1}",
        "{\"days\":\"7\"}",
        "{\"days\":true}",
        "{\"days\":null}",
        "{\"days\":[7]}",
        "{\"days\":{}}",
        "{}",
        "[7]",
        "7",
        "null",
        "{\"Days\":7}",
        "{\"days\":7,\"x\":1}",
        "{\"days\":7,\"days\":8}",
        "{\"days\":7} {}",
        "{\"days\":7",
        "{\"days\":NaN}",
        "{\"days\":9223372036854775808}",
        "{\"days\":4294967303}",
        "{\"days\":-4294967289}",
        "",
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        if (pj(bad[i]) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    int days = 0;
    assert_int_equal(tp_exclusion_parse(TP_FMT_JSON, NULL, 0, &days), TP_EINVAL);
    assert_int_equal(tp_exclusion_parse(TP_FMT_JSON, "{\"days\":1}", 10, NULL), TP_EINVAL);
}

static void test_oversized(void **state)
{
    (void)state;
    static char big[TP_EXCLUSION_MAX_BODY + 64];
    memset(big, ' ', sizeof(big));
    memcpy(big, "{\"days\":7}", 10);
    int days = 0;
    assert_int_equal(tp_exclusion_parse(TP_FMT_JSON, big, TP_EXCLUSION_MAX_BODY, &days), 0);
    assert_int_equal(days, 7);
    assert_int_equal(tp_exclusion_parse(TP_FMT_JSON, big, TP_EXCLUSION_MAX_BODY + 1, &days),
                     TP_EINVAL);
}

static void test_msgpack(void **state)
{
    (void)state;
    struct tp_buf b;
    struct tp_wr w;
    int days = 0;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "days");
    tp_wr_int(&w, 14);
    assert_int_equal(tp_exclusion_parse(TP_FMT_MSGPACK, tp_buf_ptr(&b), tp_buf_size(&b), &days), 0);
    assert_int_equal(days, 14);
    tp_buf_deinit(&b);

    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "days");
    tp_wr_double(&w, 14.0);
    assert_int_equal(tp_exclusion_parse(TP_FMT_MSGPACK, tp_buf_ptr(&b), tp_buf_size(&b), &days),
                     TP_EINVAL);
    tp_buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_msgpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
