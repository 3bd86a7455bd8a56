/* Unit tests for the worker's slot allocator (src/net/worker.c, included for its statics): ids
 * are handed out once and in order, each worker keeps its own pointer per slot, and a slot id
 * never handed out or one past TP_WORKER_MAX_SLOTS aborts instead of aliasing another module. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../../src/net/worker.c"

#include <sys/wait.h>

/* Runs fn in a child process and reports whether it died of SIGABRT (a TP_ASSERT). */
static bool aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The assertion message is expected: keep the test output clean. */
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void ids_in_order(void **state)
{
    (void)state;
    size_t a = tp_worker_slot_new();
    size_t b = tp_worker_slot_new();
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
}

static void per_worker_pointers(void **state)
{
    (void)state;
    size_t s1 = tp_worker_slot_new(), s2 = tp_worker_slot_new();
    struct tp_worker *w1 = tp_xcalloc(1, sizeof(*w1)), *w2 = tp_xcalloc(1, sizeof(*w2));
    int x, y;
    assert_null(tp_worker_slot_get(w1, s1));
    tp_worker_slot_set(w1, s1, &x);
    tp_worker_slot_set(w2, s1, &y);
    tp_worker_slot_set(w1, s2, &y);
    assert_ptr_equal(tp_worker_slot_get(w1, s1), &x);
    assert_ptr_equal(tp_worker_slot_get(w2, s1), &y);
    assert_ptr_equal(tp_worker_slot_get(w1, s2), &y);
    assert_null(tp_worker_slot_get(w2, s2));
    tp_worker_slot_set(w1, s1, NULL);
    assert_null(tp_worker_slot_get(w1, s1));
    free(w1);
    free(w2);
}

static void get_unissued(void)
{
    struct tp_worker w = {0};
    tp_worker_slot_get(&w, n_slots);
}

static void set_unissued(void)
{
    struct tp_worker w = {0};
    int x;
    tp_worker_slot_set(&w, n_slots, &x);
}

static void exhaust(void)
{
    for (int i = 0; i <= TP_WORKER_MAX_SLOTS; i++)
        tp_worker_slot_new();
}

static void misuse_aborts(void **state)
{
    (void)state;
    assert_true(aborts(get_unissued));
    assert_true(aborts(set_unissued));
    assert_true(aborts(exhaust));
    /* The children's allocations did not touch this process's count. */
    size_t before = n_slots;
    assert_int_equal(tp_worker_slot_new(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_in_order),
        cmocka_unit_test(per_worker_pointers),
        cmocka_unit_test(misuse_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
