/*
 * Unit tests for the account access table (src/money/access.c, included for its statics):
 * watermarks only rise, the disabled flag wins and can be lifted, pruning keeps what still
 * decides something, and the table grows past its first size without losing entries. A worker's
 * exit frees its access state (the ASan build's leak check runs at the child's exit), but keeps
 * it while a reload's read is in flight, whose answer reads it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../../src/money/access.c"

#include "../worker_exit.h"

#include <signal.h>

static struct tp_access_update revoked_at(int64_t user, int64_t before)
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
    struct tp_access_update u = revoked_at(7, 1000);
    tp_access_table_apply(t, &u);
    /* At or before the watermark: revoked; after it: a token signed later. */
    assert_int_equal(tp_access_table_check(t, 7, 999), TP_ACCESS_REVOKED);
    assert_int_equal(tp_access_table_check(t, 7, 1000), TP_ACCESS_REVOKED);
    assert_int_equal(tp_access_table_check(t, 7, 1001), TP_ACCESS_OK);
    assert_int_equal(tp_access_table_check(t, 8, 1), TP_ACCESS_OK);
    /* A lower watermark arriving late never un-revokes. */
    u = revoked_at(7, 500);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 7, 1000), TP_ACCESS_REVOKED);
    u = revoked_at(7, 2000);
    tp_access_table_apply(t, &u);
    assert_int_equal(tp_access_table_check(t, 7, 1500), TP_ACCESS_REVOKED);
    /* Updates without a user or without content change nothing. */
    u = (struct tp_access_update){.user_id = 9};
    tp_access_table_apply(t, &u);
    u = revoked_at(0, 5000);
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
    u = revoked_at(3, 10);
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
        struct tp_access_update x = revoked_at(u, u * 10);
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

/* The child's exit statuses besides 0. */
#define NO_STATE 2
#define STATE_LEFT 3
#define STATE_FREED 4

static bool read_in_flight; /* the case run by the child */

/* Init hook, after the access module's: a loaded table, an update logged for a reload under
 * way (or, read_in_flight, a read of it still unanswered), then the drain. */
static void load_then_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct access *a = access_of(w);
    if (a == NULL)
        _exit(NO_STATE);
    a->table = tp_access_table_new();
    a->next = tp_access_table_new();
    for (int64_t u = 1; u <= 100; u++) {
        struct tp_access_update up = revoked_at(u, 1000 + u);
        tp_access_apply(w, &up);
    }
    if (read_in_flight)
        a->parts = 1;
    raise(SIGTERM);
}

/* Exit hook registered before the access module's, so it runs after it. With a read in
 * flight the state must be kept; the child then ends here (the kept state is no leak to
 * report: the process ends with it on purpose). */
static void check_left(struct tp_worker *w, void *ud)
{
    (void)ud;
    if (read_in_flight)
        _exit(access_of(w) != NULL ? 0 : STATE_FREED);
    if (access_of(w) != NULL)
        _exit(STATE_LEFT);
}

static void install(struct tp_config *cfg)
{
    (void)cfg;
    tp_worker_on_exit(check_left, NULL);
    tp_access_install();
    tp_worker_on_init(load_then_drain, NULL);
}

static void test_exit_frees_the_state(void **state)
{
    (void)state;
    read_in_flight = false;
    worker_exit_run(install);
}

static void test_exit_keeps_the_state_a_read_holds(void **state)
{
    (void)state;
    read_in_flight = true;
    worker_exit_run(install);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watermark),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_prune_and_grow),
        cmocka_unit_test(test_no_worker),
        cmocka_unit_test(test_exit_frees_the_state),
        cmocka_unit_test(test_exit_keeps_the_state_a_read_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
