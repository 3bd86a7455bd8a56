/* Unit tests for the accounts core's pure parts (src/money/accounts.c): the sign-up rules, the
 * sign-in shape check and the code names. The Redis and argon2 paths are
 * tests/integ/test_accounts.py's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/money/accounts.h"
#include "tickpool/money/password.h"

#include <string.h>

static struct tp_accounts_creds creds(const char *name, const char *pw)
{
    return (struct tp_accounts_creds){.username = name,
                                      .username_len = name ? strlen(name) : 0,
                                      .password = pw,
                                      .password_len = pw ? strlen(pw) : 0};
}

static void test_signup_rules(void **state)
{
    (void)state;
    struct tp_accounts_creds c = creds("alice_-9", "password");
    assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_OK);
    const char *bad_names[] = {
        NULL, "", "ab", "a b", "alice!", "élise", "abcdefghijklmnopqrstuvwxyz0123456"};
    for (size_t i = 0; i < TP_ARRAY_LEN(bad_names); i++) {
        c = creds(bad_names[i], "password");
        assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_INVALID_USERNAME);
    }
    c = creds("abcdefghijklmnopqrstuvwxyz012345", "password"); /* 32 */
    assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_OK);
    c = creds("alice", "1234567");
    assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_WEAK_PASSWORD);
    c = creds("alice", NULL);
    assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_WEAK_PASSWORD);
    c = creds("al", "1"); /* the username is checked first */
    assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_INVALID_USERNAME);
    c = creds("alice", "password");
    c.password_len = TP_PASSWORD_MAX + 1;
    assert_int_equal(tp_accounts_check_signup(&c), TP_ACCOUNTS_WEAK_PASSWORD);
}

/* Sign-in refuses only impossible shapes: any other bad credential is bad_credentials later. */
static void test_signin_shape(void **state)
{
    (void)state;
    struct tp_accounts_creds c = creds("a b!", "x");
    assert_int_equal(tp_accounts_check_signin(&c), TP_ACCOUNTS_OK);
    c = creds(NULL, "x");
    assert_int_equal(tp_accounts_check_signin(&c), TP_ACCOUNTS_OK);
    c = creds("alice", NULL);
    assert_int_equal(tp_accounts_check_signin(&c), TP_ACCOUNTS_INVALID_REQUEST);
    c = creds("abcdefghijklmnopqrstuvwxyz0123456", "x"); /* 33 */
    assert_int_equal(tp_accounts_check_signin(&c), TP_ACCOUNTS_INVALID_REQUEST);
    c = creds("alice", "x");
    c.password_len = TP_PASSWORD_MAX + 1;
    assert_int_equal(tp_accounts_check_signin(&c), TP_ACCOUNTS_INVALID_REQUEST);
}

static void test_password_change_shape(void **state)
{
    (void)state;
    struct tp_accounts_creds c = creds(NULL, "old");
    c.new_password = "new-password";
    c.new_password_len = strlen(c.new_password);
    assert_int_equal(tp_accounts_check_password(&c), TP_ACCOUNTS_OK);
    c.new_password_len = 7; /* the sign-up rule: 8-1024 bytes */
    assert_int_equal(tp_accounts_check_password(&c), TP_ACCOUNTS_WEAK_PASSWORD);
    c.new_password = NULL;
    assert_int_equal(tp_accounts_check_password(&c), TP_ACCOUNTS_WEAK_PASSWORD);
    c = creds(NULL, NULL);
    c.new_password = "new-password";
    c.new_password_len = strlen(c.new_password);
    assert_int_equal(tp_accounts_check_password(&c), TP_ACCOUNTS_INVALID_REQUEST);
    c = creds(NULL, "old");
    c.password_len = TP_PASSWORD_MAX + 1;
    assert_int_equal(tp_accounts_check_password(&c), TP_ACCOUNTS_INVALID_REQUEST);
    assert_string_equal(tp_accounts_code_name(TP_ACCOUNTS_WRONG_PASSWORD), "bad_credentials");
    assert_string_equal(tp_accounts_code_name(TP_ACCOUNTS_DISABLED), "account_disabled");
}

static void test_names_and_no_worker(void **state)
{
    (void)state;
    assert_string_equal(tp_accounts_code_name(TP_ACCOUNTS_USERNAME_TAKEN), "username_taken");
    assert_string_equal(tp_accounts_code_name(TP_ACCOUNTS_UNKNOWN_USER), "unauthorized");
    assert_string_equal(tp_accounts_code_name((enum tp_accounts_code)99), "unavailable");
    int64_t uid;
    assert_int_equal(tp_accounts_verify_token(NULL, "x", 1, &uid, NULL), TP_EUNAVAIL);
    assert_false(tp_accounts_ready(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signup_rules),
        cmocka_unit_test(test_signin_shape),
        cmocka_unit_test(test_password_change_shape),
        cmocka_unit_test(test_names_and_no_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
