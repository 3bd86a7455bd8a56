/* Unit tests for src/money/password.c: argon2id hashes, mismatches and hostile stored hashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/money/password.h"

static void hash_ok(const char *pw, char out[TP_PASSWORD_ENCODED_MAX])
{
    assert_int_equal(tp_password_hash(pw, strlen(pw), out, TP_PASSWORD_ENCODED_MAX), 0);
}

static void test_hash_verifies(void **state)
{
    (void)state;
    char enc[TP_PASSWORD_ENCODED_MAX];
    int64_t t0 = tp_mono_ms();
    hash_ok("correct horse battery staple", enc);
    int64_t took = tp_mono_ms() - t0;
    print_message("argon2id hash took %lld ms: %s\n", (long long)took, enc);
    assert_non_null(strstr(enc, "$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_int_equal(strncmp(enc, "$argon2id$", 10), 0);
    assert_int_equal(tp_password_verify(enc, "correct horse battery staple", 28), 0);
    assert_false(tp_password_needs_rehash(enc));
    /* Passwords are byte strings: embedded NULs and non-ASCII count. */
    const char bin[] = "pa\0ss\xff\xfe word";
    assert_int_equal(tp_password_hash(bin, sizeof bin - 1, enc, sizeof enc), 0);
    assert_int_equal(tp_password_verify(enc, bin, sizeof bin - 1), 0);
    assert_int_equal(tp_password_verify(enc, bin, 2), TP_EINVAL); /* "pa" prefix */
    /* The empty password is hashable (policy lives in the caller). */
    assert_int_equal(tp_password_hash(NULL, 0, enc, sizeof enc), 0);
    assert_int_equal(tp_password_verify(enc, NULL, 0), 0);
    assert_int_equal(tp_password_verify(enc, "x", 1), TP_EINVAL);
}

static void test_wrong_password_fails(void **state)
{
    (void)state;
    char enc[TP_PASSWORD_ENCODED_MAX];
    hash_ok("hunter2hunter2", enc);
    assert_int_equal(tp_password_verify(enc, "hunter2hunter3", 14), TP_EINVAL);
    assert_int_equal(tp_password_verify(enc, "Hunter2hunter2", 14), TP_EINVAL);
    assert_int_equal(tp_password_verify(enc, "hunter2hunter", 13), TP_EINVAL);
    assert_int_equal(tp_password_verify(enc, "hunter2hunter22", 15), TP_EINVAL);
    assert_int_equal(tp_password_verify(enc, "", 0), TP_EINVAL);
    assert_int_equal(tp_password_verify(enc, "hunter2hunter2", 14), 0);
}

static void test_two_hashes_differ(void **state)
{
    (void)state;
    char a[TP_PASSWORD_ENCODED_MAX], b[TP_PASSWORD_ENCODED_MAX];
    hash_ok("same password", a);
    hash_ok("same password", b);
    assert_string_not_equal(a, b); /* fresh salt each time */
    assert_int_equal(tp_password_verify(a, "same password", 13), 0);
    assert_int_equal(tp_password_verify(b, "same password", 13), 0);
}

static void test_malformed_encoded_rejected(void **state)
{
    (void)state;
    char enc[TP_PASSWORD_ENCODED_MAX], bad[TP_PASSWORD_ENCODED_MAX + 8];
    hash_ok("secret-password", enc);
    const char *pw = "secret-password";
    size_t n = strlen(pw);

    const char *cases[] = {
        "",
        "$",
        "plaintext",
        "secret-password",
        "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2d$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=19456,t=2$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=19456,t=2,p=1$$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0",
        "$argon2id$v=19$m=19456,t=2,p=1$!!!!$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=99999999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        /* Cost caps: a planted row must not make a login allocate 4 GiB or run for minutes. */
        "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=19456,t=2,p=255$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        int64_t t0 = tp_mono_ms();
        assert_int_equal(tp_password_verify(cases[i], pw, n), TP_EINVAL);
        assert_true(tp_mono_ms() - t0 < 2000);
    }
    /* The real hash with its salt or digest cut short, or one character changed. */
    for (size_t cut = 0; cut < strlen(enc); cut += 3) {
        memcpy(bad, enc, cut);
        bad[cut] = '\0';
        assert_int_equal(tp_password_verify(bad, pw, n), TP_EINVAL);
    }
    size_t last = strlen(enc) - 2;
    strcpy(bad, enc);
    bad[last] = bad[last] == 'A' ? 'B' : 'A';
    assert_int_equal(tp_password_verify(bad, pw, n), TP_EINVAL);
    /* Not NUL-terminated within the bound. */
    memset(bad, 'a', sizeof bad);
    memcpy(bad, enc, strlen(enc));
    bad[sizeof bad - 1] = '\0';
    assert_int_equal(tp_password_verify(bad, pw, n), TP_EINVAL);
    assert_int_equal(tp_password_verify(NULL, pw, n), TP_EINVAL);
    assert_true(tp_password_needs_rehash(NULL));
    assert_true(tp_password_needs_rehash(""));
    assert_true(tp_password_needs_rehash("plaintext"));
    /* Older, weaker parameters (made with libargon2: m=8,t=1, salt "somesalt") still verify
     * but ask for a rehash. */
    const char *old = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$"
                      "8Tf44YakA6Z5zNBgblq13Nr+Q8FkCFWsjG4z6b1j7rM";
    assert_true(tp_password_needs_rehash(old));
    assert_int_equal(tp_password_verify(old, "password", 8), 0);
    assert_int_equal(tp_password_verify(old, "passwort", 8), TP_EINVAL);
}

static void test_limits(void **state)
{
    (void)state;
    char enc[TP_PASSWORD_ENCODED_MAX];
    char *big = malloc(TP_PASSWORD_MAX + 1);
    memset(big, 'p', TP_PASSWORD_MAX + 1);
    assert_int_equal(tp_password_hash(big, TP_PASSWORD_MAX + 1, enc, sizeof enc), TP_ETOOBIG);
    assert_int_equal(tp_password_hash(big, TP_PASSWORD_MAX, enc, sizeof enc), 0);
    assert_int_equal(tp_password_verify(enc, big, TP_PASSWORD_MAX), 0);
    assert_int_equal(tp_password_verify(enc, big, TP_PASSWORD_MAX + 1), TP_EINVAL);
    free(big);
    assert_int_equal(tp_password_hash("pw", 2, enc, TP_PASSWORD_ENCODED_MAX - 1), TP_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_verifies),
        cmocka_unit_test(test_wrong_password_fails),
        cmocka_unit_test(test_two_hashes_differ),
        cmocka_unit_test(test_malformed_encoded_rejected),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
