/*
 * Unit tests of the odds message encoder (src/stream/odds.c): shape, totals, nil multipliers for
 * empty pools, values from tp_settle_multipliers, and determinism (the same pools give the same
 * bytes, which the change detection relies on).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/stream/odds.h"
#include "tickpool/game/settle.h"

static struct tp_doc *encode(int64_t rid, const int64_t *pools, int n, int rake, struct tp_buf *b)
{
    tp_buf_init(b);
    tp_odds_encode(b, rid, pools, n, rake);
    struct tp_doc *d = NULL;
    assert_int_equal(
        tp_doc_parse_ex(TP_FMT_MSGPACK, tp_buf_ptr(b), tp_buf_size(b), 1 << 20, &d, NULL, 0), 0);
    return d;
}

static void test_shape_and_values(void **state)
{
    (void)state;
    int64_t pools[5] = {0, 1000, 3000, 0, 6000};
    struct tp_buf b;
    struct tp_doc *d = encode(42, pools, 5, 300, &b);
    const struct tp_val *m = tp_doc_root(d);
    assert_int_equal(tp_val_len(m), 5);
    const char *t;
    assert_int_equal(tp_val_get_str(m, "t", &t, NULL), 0);
    assert_string_equal(t, "odds");
    int64_t v;
    assert_int_equal(tp_val_get_int(m, "round_id", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(tp_val_get_int(m, "total", &v), 0);
    assert_int_equal(v, 10000);
    const struct tp_val *p = tp_val_get(m, "pools");
    const struct tp_val *x = tp_val_get(m, "multipliers");
    assert_int_equal(tp_val_len(p), 5);
    assert_int_equal(tp_val_len(x), 5);
    double want[5];
    assert_int_equal(tp_settle_multipliers(pools, 5, 300, want), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(tp_val_int(tp_val_at(p, (size_t)i)), pools[i]);
        if (pools[i] == 0) {
            assert_int_equal(tp_val_type(tp_val_at(x, (size_t)i)), TP_VAL_NULL);
        } else {
            assert_int_equal(tp_val_type(tp_val_at(x, (size_t)i)), TP_VAL_FLOAT);
            assert_true(tp_val_double(tp_val_at(x, (size_t)i)) == want[i]);
        }
    }
    tp_doc_free(d);
    tp_buf_deinit(&b);
}

static void test_deterministic(void **state)
{
    (void)state;
    int64_t pools[3] = {500, 0, 700};
    struct tp_buf a, b;
    tp_buf_init(&a);
    tp_buf_init(&b);
    tp_odds_encode(&a, 7, pools, 3, 0);
    tp_odds_encode(&b, 7, pools, 3, 0);
    assert_int_equal(tp_buf_size(&a), tp_buf_size(&b));
    assert_memory_equal(tp_buf_ptr(&a), tp_buf_ptr(&b), tp_buf_size(&a));
    tp_buf_deinit(&a);
    tp_buf_deinit(&b);
}

static void test_all_empty_and_invalid(void **state)
{
    (void)state;
    /* All empty: every multiplier nil, total 0. A negative pool (corrupt data) gives nil
     * multipliers rather than garbage. */
    int64_t empty[2] = {0, 0};
    int64_t bad[2] = {-5, 10};
    for (int k = 0; k < 2; k++) {
        struct tp_buf b;
        struct tp_doc *d = encode(1, k == 0 ? empty : bad, 2, 300, &b);
        const struct tp_val *x = tp_val_get(tp_doc_root(d), "multipliers");
        for (size_t i = 0; i < 2; i++)
            assert_int_equal(tp_val_type(tp_val_at(x, i)), TP_VAL_NULL);
        tp_doc_free(d);
        tp_buf_deinit(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_and_values),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_all_empty_and_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
