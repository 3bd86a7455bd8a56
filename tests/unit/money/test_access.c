/*
 * Unit tests for the account access table (src/money/access.c): watermarks only rise, the
 * disabled flag wins and can be lifted, pruning keeps what still decides something, and the
 * table grows past its first size without losing entries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/money/access.h"

static struct tp_access_update revoke(int64_t user, int64_t before)
{
    return (struct tp_access_update){
        .user_id = user, .has_revoked = true, .revoked_before = before};
}

static struct tp_access_update flag(int64_t user, bool disabled)
{
    return (struct tp_access_update){.user_id = user, .has_disabled = true, .disabled = disabled};
}

static void test_watermark(void **state)
{
    (void)state;
    struct tp_access_table *t = tp_access_table_new();
    assert_int_equal(tp_access_table_check(t, 7, 1000), TP_ACCESS_OK);
    struct tp_access_update u = revoke(7, 1000);
    tp_access_table_apply(t, &u);
    /* At or before the watermark: revoked; after it: a token signed later. */
    assert_int_equal(tp_access_table_check(t, 7, 999), TP_ACCESS_REVOKED);
    assert_int_equal(tp_access_table_check(t, 7, 1000), TP_ACCESS_REVOKED);
    assert_int_equal(tp_access_table_check(t, 7, 1001), TP_ACCESS_OK);
    assert_int_equal(tp_access_table_check(t, 8, 1), TP_ACCESS_OK);
    /* A lower watermark arriving late never un-revokes. */
    u = revoke(7, 500);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 7, 1000), TP_ACCESS_REVOKED);
    u = revoke(7, 2000);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 7, 1500), TP_ACCESS_REVOKED);
    /* Updates without a user or without content change nothing. */
    u = (struct tp_access_update){.user_id = 9};
    tp_access_table_apply(t, &u);
    u = revoke(0, 5000);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 9, 1), TP_ACCESS_OK);
    tp_access_table_free(t);
}

static void test_disabled(void **state)
{
    (void)state;
    struct tp_access_table *t = tp_access_table_new();
    struct tp_access_update u = flag(3, true);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 3, 99999), TP_ACCESS_DISABLED);
    u = revoke(3, 10);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 3, 5), TP_ACCESS_DISABLED); /* disabled wins */
    u = flag(3, false);
    tp_access_table_apply(t, &u);
    /* Enabled again: the watermark set meanwhile still holds. */
    assert_int_equal(tp_access_table_check(t, 3, 5), TP_ACCESS_REVOKED);
    assert_int_equal(tp_access_table_check(t, 3, 11), TP_ACCESS_OK);
    tp_access_table_free(t);
}

static void test_prune_and_grow(void **state)
{
    (void)state;
    struct tp_access_table *t = tp_access_table_new();
    /* Far more than the first capacity: every entry must survive the growth. */
    for (int64_t u = 1; u <= 5000; u++) {
        struct tp_access_update x = revoke(u, u * 10);
        tp_access_table_apply(t, &x);
    }
    struct tp_access_update d = flag(4, true);
    tp_access_table_apply(t, &d);
    for (int64_t u = 1; u <= 5000; u++)
        assert_int_equal(tp_access_table_check(t, u, u * 10),
                         u == 4 ? TP_ACCESS_DISABLED : TP_ACCESS_REVOKED);
    /* Watermarks before now decide nothing (those tokens have expired): dropped, except a
     * disabled account. */
    assert_int_equal(tp_access_table_prune(t, 25001), 2500 + 1);
    assert_int_equal(tp_access_table_check(t, 4, 40), TP_ACCESS_DISABLED);
    assert_int_equal(tp_access_table_check(t, 100, 1000), TP_ACCESS_OK);
    assert_int_equal(tp_access_table_check(t, 2501, 25010), TP_ACCESS_REVOKED);
    assert_int_equal(tp_access_table_check(t, 5000, 50000), TP_ACCESS_REVOKED);
    tp_access_table_free(t);
    tp_access_table_free(NULL);
}

static void test_no_worker(void **state)
{
    (void)state;
    assert_int_equal(tp_access_check(NULL, 1, 1), TP_ACCESS_UNKNOWN);
    struct tp_access_update u = flag(1, true);
    tp_access_apply(NULL, &u); /* no state: ignored */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watermark),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_prune_and_grow),
        cmocka_unit_test(test_no_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
