/* Unit tests for the table of boundaries written by each worker (src/net/workers_written.c): no
 * table counts everything as written; with one, a boundary is written once every worker has
 * written it or a later one, a word never goes back, and a forked worker's write is seen by
 * the parent (the mapping is shared, as between the master's workers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/net/workers_written.h"

#include <sys/wait.h>
#include <unistd.h>

static void test_written(void **state)
{
    (void)state;
    assert_true(tp_workers_written_all(1000)); /* no table yet */
    assert_int_equal(tp_workers_written_init(2), 0);
    assert_false(tp_workers_written_all(1000));
    tp_workers_written_set(0, 1000);
    assert_false(tp_workers_written_all(1000));
    tp_workers_written_set(2, 1000); /* no such worker: ignored */
    assert_false(tp_workers_written_all(1000));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tp_workers_written_set(1, 2000);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(tp_workers_written_all(1000)); /* worker 1 wrote a later one */
    assert_false(tp_workers_written_all(2000));
    tp_workers_written_set(1, 1500); /* older than what it has: kept */
    tp_workers_written_set(0, 2000);
    assert_true(tp_workers_written_all(2000));
    assert_false(tp_workers_written_all(3000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
