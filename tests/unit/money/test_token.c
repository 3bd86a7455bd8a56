/* Unit tests for src/money/token.c: signed session tokens, including every kind of hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"
#include "tickpool/money/token.h"

static const uint8_t secret[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t other[32] = "0123456789abcdef0123456789abcdeF";
static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#define NOW 1700000000000LL
#define LATER (NOW + 3600 * 1000)

static void sign_ok(int64_t uid, int64_t exp, char out[TP_TOKEN_LEN + 1])
{
    assert_int_equal(tp_token_sign(secret, sizeof secret, uid, exp, out, TP_TOKEN_LEN + 1), 0);
    assert_int_equal(strlen(out), TP_TOKEN_LEN);
}

static int verify(const uint8_t *key, const char *tok, size_t len, int64_t now)
{
    int64_t uid = -7, exp = -7;
    int rc = tp_token_verify(key, 32, tok, len, now, &uid, &exp);
    if (rc != 0) { /* outputs are untouched on every error */
        assert_int_equal(uid, -7);
        assert_int_equal(exp, -7);
    }
    return rc;
}

/* Builds a token from raw fields with a chosen MAC key, bypassing tp_token_sign's checks, the
 * way an attacker who knows the format would (label as documented in token.h). */
static void forge(int version, int64_t uid, int64_t exp, const uint8_t *key, size_t keylen,
                  char out[TP_TOKEN_LEN + 1])
{
    uint8_t raw[49], msg[15 + 17];
    raw[0] = (uint8_t)version;
    for (int i = 0; i < 8; i++) {
        raw[1 + i] = (uint8_t)((uint64_t)uid >> (56 - 8 * i));
        raw[9 + i] = (uint8_t)((uint64_t)exp >> (56 - 8 * i));
    }
    memcpy(msg, "tickpool.token", 15);
    memcpy(msg + 15, raw, 17);
    tp_hmac_sha256(key, keylen, msg, sizeof msg, raw + 17);
    char b64[69];
    assert_int_equal(tp_base64_encode(raw, sizeof raw, b64, sizeof b64), 68);
    for (int i = 0; i < TP_TOKEN_LEN; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    out[TP_TOKEN_LEN] = '\0';
}

static void test_round_trip(void **state)
{
    (void)state;
    int64_t cases[][2] = {{1, LATER}, {42, NOW + 1}, {INT64_MAX, INT64_MAX}, {1234567, 1}};
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        char tok[TP_TOKEN_LEN + 1];
        sign_ok(cases[i][0], cases[i][1], tok);
        assert_int_equal(strspn(tok, alphabet), TP_TOKEN_LEN); /* URL-safe, no padding */
        int64_t uid = 0, exp = 0;
        int64_t now = cases[i][1] == 1 ? 0 : NOW;
        assert_int_equal(tp_token_verify(secret, sizeof secret, tok, TP_TOKEN_LEN, now, &uid, &exp),
                         0);
        assert_true(uid == cases[i][0]);
        assert_true(exp == cases[i][1]);
    }
    /* Deterministic for the same inputs, different for any other input or secret. */
    char a[TP_TOKEN_LEN + 1], b[TP_TOKEN_LEN + 1], c[TP_TOKEN_LEN + 1];
    sign_ok(5, LATER, a);
    sign_ok(5, LATER, b);
    assert_string_equal(a, b);
    sign_ok(6, LATER, b);
    assert_string_not_equal(a, b);
    assert_int_equal(tp_token_sign(other, sizeof other, 5, LATER, c, sizeof c), 0);
    assert_string_not_equal(a, c);
    /* The token need not be NUL-terminated: exactly 66 heap bytes (ASan checks the bound). */
    char *exact = malloc(TP_TOKEN_LEN);
    memcpy(exact, a, TP_TOKEN_LEN);
    assert_int_equal(verify(secret, exact, TP_TOKEN_LEN, NOW), 0);
    free(exact);
}

static void test_expired(void **state)
{
    (void)state;
    char tok[TP_TOKEN_LEN + 1];
    sign_ok(9, LATER, tok);
    assert_int_equal(verify(secret, tok, TP_TOKEN_LEN, LATER - 1), 0);
    assert_int_equal(verify(secret, tok, TP_TOKEN_LEN, LATER), TP_ETIMEDOUT);
    assert_int_equal(verify(secret, tok, TP_TOKEN_LEN, INT64_MAX), TP_ETIMEDOUT);
    /* Expiry is only reported for authentic tokens. */
    assert_int_equal(verify(other, tok, TP_TOKEN_LEN, INT64_MAX), TP_EINVAL);
}

static void test_every_single_char_change_rejected(void **state)
{
    (void)state;
    /* Covers the payload (first 23 chars), the signature and the last, partly unused character
     * (non-canonical spellings of the same bytes are refused too). */
    char tok[TP_TOKEN_LEN + 1], bad[TP_TOKEN_LEN + 1];
    sign_ok(77, LATER, tok);
    for (int i = 0; i < TP_TOKEN_LEN; i++) {
        for (int j = 0; alphabet[j]; j++) {
            if (alphabet[j] == tok[i])
                continue;
            memcpy(bad, tok, sizeof bad);
            bad[i] = alphabet[j];
            assert_int_equal(verify(secret, bad, TP_TOKEN_LEN, NOW), TP_EINVAL);
        }
    }
}

static void test_tampered_payload_and_signature(void **state)
{
    (void)state;
    char good[TP_TOKEN_LEN + 1], evil[TP_TOKEN_LEN + 1], mixed[TP_TOKEN_LEN + 1];
    forge(1, 100, LATER, secret, sizeof secret, good);
    assert_int_equal(verify(secret, good, TP_TOKEN_LEN, NOW), 0); /* forge() matches the format */
    /* Another user's payload spliced onto this signature. */
    forge(1, 101, LATER, secret, sizeof secret, evil);
    memcpy(mixed, evil, 23);
    memcpy(mixed + 23, good + 23, sizeof mixed - 23);
    assert_int_equal(verify(secret, mixed, TP_TOKEN_LEN, NOW), TP_EINVAL);
    /* An extended expiry with the old signature. */
    forge(1, 100, LATER * 2, secret, sizeof secret, evil);
    memcpy(mixed, evil, 23);
    memcpy(mixed + 23, good + 23, sizeof mixed - 23);
    assert_int_equal(verify(secret, mixed, TP_TOKEN_LEN, NOW), TP_EINVAL);
    /* Validly signed but an unknown version, or a user id that sign() would refuse. */
    forge(2, 100, LATER, secret, sizeof secret, evil);
    assert_int_equal(verify(secret, evil, TP_TOKEN_LEN, NOW), TP_EINVAL);
    forge(1, 0, LATER, secret, sizeof secret, evil);
    assert_int_equal(verify(secret, evil, TP_TOKEN_LEN, NOW), TP_EINVAL);
    forge(1, -5, LATER, secret, sizeof secret, evil);
    assert_int_equal(verify(secret, evil, TP_TOKEN_LEN, NOW), TP_EINVAL);
    /* MAC without the domain label, or with an empty key. */
    forge(1, 100, LATER, (const uint8_t *)"", 0, evil);
    assert_int_equal(verify(secret, evil, TP_TOKEN_LEN, NOW), TP_EINVAL);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    char tok[TP_TOKEN_LEN + 1];
    sign_ok(3, LATER, tok);
    assert_int_equal(verify(other, tok, TP_TOKEN_LEN, NOW), TP_EINVAL);
    /* Secrets that are too short are refused on both sides. */
    int64_t uid, exp;
    assert_int_equal(
        tp_token_verify(secret, TP_TOKEN_MIN_SECRET - 1, tok, TP_TOKEN_LEN, NOW, &uid, &exp),
        TP_EINVAL);
    assert_int_equal(tp_token_verify(NULL, 32, tok, TP_TOKEN_LEN, NOW, &uid, &exp), TP_EINVAL);
    assert_int_equal(tp_token_sign(secret, TP_TOKEN_MIN_SECRET - 1, 3, LATER, tok, sizeof tok),
                     TP_EINVAL);
}

static void test_truncated_and_overlong(void **state)
{
    (void)state;
    char tok[TP_TOKEN_LEN + 1], big[4 * TP_TOKEN_LEN];
    sign_ok(11, LATER, tok);
    for (size_t n = 0; n < TP_TOKEN_LEN; n++)
        assert_int_equal(verify(secret, tok, n, NOW), TP_EINVAL);
    memset(big, 'A', sizeof big);
    memcpy(big, tok, TP_TOKEN_LEN);
    for (size_t n = TP_TOKEN_LEN + 1; n <= sizeof big; n++)
        assert_int_equal(verify(secret, big, n, NOW), TP_EINVAL);
    memcpy(big + TP_TOKEN_LEN, tok, TP_TOKEN_LEN); /* two tokens back to back */
    assert_int_equal(verify(secret, big, 2 * TP_TOKEN_LEN, NOW), TP_EINVAL);
    /* A huge claimed length is refused without reading (the buffer is only 67 bytes). */
    assert_int_equal(verify(secret, tok, SIZE_MAX, NOW), TP_EINVAL);
    /* Padded form of a valid token. */
    char padded[TP_TOKEN_LEN + 3];
    memcpy(padded, tok, TP_TOKEN_LEN);
    memcpy(padded + TP_TOKEN_LEN, "==", 3);
    assert_int_equal(verify(secret, padded, TP_TOKEN_LEN + 2, NOW), TP_EINVAL);
}

static void test_garbage(void **state)
{
    (void)state;
    char tok[TP_TOKEN_LEN + 1], g[TP_TOKEN_LEN];
    assert_int_equal(verify(secret, NULL, TP_TOKEN_LEN, NOW), TP_EINVAL);
    assert_int_equal(verify(secret, "", 0, NOW), TP_EINVAL);
    /* The standard-alphabet spelling of a valid token is not accepted. */
    sign_ok(11, LATER, tok);
    bool changed = false;
    for (int attempt = 1; !changed && attempt < 1000; attempt++) {
        sign_ok(attempt, LATER, tok); /* find one with '-' or '_' in it */
        for (int i = 0; i < TP_TOKEN_LEN; i++) {
            if (tok[i] == '-' || tok[i] == '_') {
                tok[i] = tok[i] == '-' ? '+' : '/';
                changed = true;
            }
        }
    }
    assert_true(changed);
    assert_int_equal(verify(secret, tok, TP_TOKEN_LEN, NOW), TP_EINVAL);
    /* Random bytes and random alphabet strings of the right length. */
    srand(12345);
    for (int k = 0; k < 20000; k++) {
        for (int i = 0; i < TP_TOKEN_LEN; i++)
            g[i] = k % 2 ? (char)(rand() & 0xff) : alphabet[rand() % 64];
        assert_int_equal(verify(secret, g, TP_TOKEN_LEN, NOW), TP_EINVAL);
    }
    memset(g, '=', sizeof g);
    assert_int_equal(verify(secret, g, TP_TOKEN_LEN, NOW), TP_EINVAL);
    memset(g, 0, sizeof g);
    assert_int_equal(verify(secret, g, TP_TOKEN_LEN, NOW), TP_EINVAL);
}

static void test_sign_arguments(void **state)
{
    (void)state;
    char tok[TP_TOKEN_LEN + 1];
    assert_int_equal(tp_token_sign(secret, 32, 0, LATER, tok, sizeof tok), TP_EINVAL);
    assert_int_equal(tp_token_sign(secret, 32, -1, LATER, tok, sizeof tok), TP_EINVAL);
    assert_int_equal(tp_token_sign(secret, 32, 1, 0, tok, sizeof tok), TP_EINVAL);
    assert_int_equal(tp_token_sign(secret, 32, 1, -1, tok, sizeof tok), TP_EINVAL);
    memset(tok, 'x', sizeof tok);
    assert_int_equal(tp_token_sign(secret, 32, 1, LATER, tok, TP_TOKEN_LEN), TP_ETOOBIG);
    assert_int_equal(tok[0], 'x'); /* nothing written */
    assert_int_equal(tp_token_sign(secret, 32, 1, LATER, NULL, 100), TP_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_every_single_char_change_rejected),
        cmocka_unit_test(test_tampered_payload_and_signature),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_truncated_and_overlong),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_sign_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
