/* Unit tests for POST /api/v1/bets' mapping of admission outcomes to HTTP statuses
 * (src/api/bets.c); the handler's behaviour end to end is tests/integ/test_bets.py's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/api/bets.h"

static void test_statuses(void **state)
{
    (void)state;
    assert_int_equal(tp_bets_status(TP_BET_OK), 201);
    assert_int_equal(tp_bets_status(TP_BET_INVALID_REQUEST), 400);
    assert_int_equal(tp_bets_status(TP_BET_INVALID_STAKE), 400);
    assert_int_equal(tp_bets_status(TP_BET_INVALID_BAND), 400);
    assert_int_equal(tp_bets_status(TP_BET_UNAUTHORIZED), 401);
    assert_int_equal(tp_bets_status(TP_BET_INSUFFICIENT_FUNDS), 402);
    assert_int_equal(tp_bets_status(TP_BET_ROUND_NOT_FOUND), 404);
    assert_int_equal(tp_bets_status(TP_BET_ROUND_NOT_OPEN), 409);
    assert_int_equal(tp_bets_status(TP_BET_IDEMPOTENCY_CONFLICT), 409);
    assert_int_equal(tp_bets_status(TP_BET_KEY_REQUIRED), 422);
    assert_int_equal(tp_bets_status(TP_BET_OVERLOADED), 429);
    assert_int_equal(tp_bets_status(TP_BET_UNAVAILABLE), 503);
    assert_int_equal(tp_bets_status((enum tp_bet_code)99), 503);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
