/*
 * Unit tests for src/base/ratelimit.c: a burst then one request per interval, the wait it
 * reports, keys and rules independent, a flood of other keys never refusing a fresh one, and
 * the table shared with a forked process (as the workers share the master's).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/ratelimit.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int64_t take(const struct tp_ratelimit_rule *r, const char *key, int64_t now)
{
    return tp_ratelimit_take(r, key, strlen(key), now);
}

static void test_burst_then_rate(void **state)
{
    (void)state;
    struct tp_ratelimit_rule r = {.per_min = 60, .burst = 3}; /* one per second */
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(&r, "a", t), 0);
    /* The burst is spent: the next one is a second away. */
    assert_int_equal(take(&r, "a", t), 1000);
    assert_int_equal(take(&r, "a", t + 400), 600);
    assert_int_equal(take(&r, "a", t + 1000), 0);
    assert_int_equal(take(&r, "a", t + 1000), 1000);
    /* Idle long enough, the whole burst is back (and no more). */
    t += 60000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(&r, "a", t), 0);
    assert_true(take(&r, "a", t) > 0);
    /* Another key, or the same key under another rule's kind byte, is its own bucket. */
    assert_int_equal(take(&r, "b", t), 0);
    /* Refused requests cost nothing: the wait does not grow while being refused. */
    assert_int_equal(take(&r, "a", t + 1), 999);
    assert_int_equal(take(&r, "a", t + 2), 998);
}

static void test_no_limit_and_bad_keys(void **state)
{
    (void)state;
    struct tp_ratelimit_rule off = {.per_min = 0, .burst = 1};
    for (int i = 0; i < 1000; i++)
        assert_int_equal(take(&off, "c", 5000), 0);
    struct tp_ratelimit_rule r = {.per_min = 1, .burst = 1};
    assert_int_equal(tp_ratelimit_take(&r, "", 0, 5000), 0);
    char big[TP_RATELIMIT_KEY_MAX + 1] = {0};
    assert_int_equal(tp_ratelimit_take(&r, big, sizeof(big), 5000), 0);
    assert_int_equal(tp_ratelimit_take(NULL, "k", 1, 5000), 0);
    /* Slow rules: one per minute, then a minute's wait. */
    assert_int_equal(take(&r, "d", 5000), 0);
    assert_int_equal(take(&r, "d", 5000), 60000);
}

static void test_flood_of_keys_never_refuses_a_newcomer(void **state)
{
    (void)state;
    struct tp_ratelimit_rule r = {.per_min = 1, .burst = 1};
    char key[32];
    int64_t t = 9000000;
    /* Four times the table: every set is full of busy entries; a new key still gets its first
     * request, since it takes the entry nearest to idle. The one exception is a key whose
     * 24-bit tag equals one of the 4 in its set (2^-22 per key): it shares that bucket. */
    int shared = 0;
    for (int i = 0; i < 4 * TP_RATELIMIT_SLOTS; i++) {
        snprintf(key, sizeof(key), "flood-%d", i);
        shared += take(&r, key, t) != 0;
    }
    assert_true(shared <= 2);
    /* The most recent keys are still remembered. */
    int refused = 0;
    for (int i = 4 * TP_RATELIMIT_SLOTS - 100; i < 4 * TP_RATELIMIT_SLOTS; i++) {
        snprintf(key, sizeof(key), "flood-%d", i);
        refused += take(&r, key, t) > 0;
    }
    assert_true(refused >= 90);
}

static void test_shared_with_a_child(void **state)
{
    (void)state;
    assert_int_equal(tp_ratelimit_init(), 0);
    struct tp_ratelimit_rule r = {.per_min = 6, .burst = 4};
    int64_t now = tp_mono_ms();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child (a worker) spends three of the four. */
        int ok = 0;
        for (int i = 0; i < 3; i++)
            ok += take(&r, "shared", now) == 0;
        _exit(ok == 3 ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(take(&r, "shared", now), 0);
    assert_int_equal(take(&r, "shared", now), 10000); /* six per minute: 10 s apart */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_no_limit_and_bad_keys),
        cmocka_unit_test(test_flood_of_keys_never_refuses_a_newcomer),
        cmocka_unit_test(test_shared_with_a_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
