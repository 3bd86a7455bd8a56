/*
 * src/base/crypto_sha_ni.c against mbedTLS (crypto.c's fallback), byte for byte: every length
 * 0..1024 (one to seventeen blocks, every padding case: a tail of 0..55 bytes takes one padding
 * block, 56..63 two) at every input alignment mod 16, in three contents (pseudo-random, all 0x00,
 * all 0xff); then long random messages. tp_sha1/tp_sha256 are one-shot, so there are no update
 * splits to test: the block loop sees the whole message and the tail is padded once. The request
 * hash that bets store and compare on replay goes through here, so any difference is a money bug.
 * Skipped (exit 77) on a CPU without the SHA extensions: nothing to compare.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../../src/base/crypto_internal.h"
#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

#define MAX_LEN 1024
#define LONG_LEN (64 * 1024)

static uint64_t rng = 0x9e3779b97f4a7c15u;

/* splitmix64: a fixed seed, so a failure repeats. */
static uint64_t next(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)next();
}

/* Both hashes of p[0..n) by both paths; fails with the length and offset that differ. */
static void compare(const uint8_t *p, size_t n, const char *what, size_t off)
{
    uint8_t a1[TP_SHA1_LEN], b1[TP_SHA1_LEN], a2[TP_SHA256_LEN], b2[TP_SHA256_LEN];
    memset(a1, 0xa5, sizeof a1);
    memset(a2, 0xa5, sizeof a2);
    tp_crypto_sha1_ni(p, n, a1);
    tp_crypto_sha1_soft(p, n, b1);
    tp_crypto_sha256_ni(p, n, a2);
    tp_crypto_sha256_soft(p, n, b2);
    if (memcmp(a1, b1, sizeof a1) != 0 || memcmp(a2, b2, sizeof a2) != 0)
        fail_msg("%s: length %zu at offset %zu: SHA-1 %s, SHA-256 %s", what, n, off,
                 memcmp(a1, b1, sizeof a1) ? "differs" : "same",
                 memcmp(a2, b2, sizeof a2) ? "differs" : "same");
}

static void test_every_length_and_alignment(void **state)
{
    (void)state;
    static uint8_t buf[MAX_LEN + 16];
    const struct {
        const char *name;
        int byte; /* -1: pseudo-random */
    } contents[] = {{"random", -1}, {"zeros", 0x00}, {"ones", 0xff}};
    for (size_t c = 0; c < sizeof contents / sizeof contents[0]; c++) {
        if (contents[c].byte < 0)
            fill(buf, sizeof buf);
        else
            memset(buf, contents[c].byte, sizeof buf);
        for (size_t off = 0; off < 16; off++)
            for (size_t n = 0; n <= MAX_LEN; n++)
                compare(buf + off, n, contents[c].name, off);
    }
}

static void test_long_random(void **state)
{
    (void)state;
    static uint8_t buf[LONG_LEN + 16];
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(next() % (LONG_LEN + 1)), off = (size_t)(next() % 16);
        fill(buf + off, n);
        compare(buf + off, n, "long", off);
    }
}

/* The FIPS 180 answers, and tp_sha256 (which takes the SHA extensions here) on a request hash's
 * canonical text. */
static void test_known_answers(void **state)
{
    (void)state;
    uint8_t d1[TP_SHA1_LEN], d2[TP_SHA256_LEN];
    char hex[2 * TP_SHA256_LEN + 1];
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tp_crypto_sha1_ni(m, strlen(m), d1);
    tp_hex_encode(d1, sizeof d1, hex);
    assert_string_equal(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    tp_crypto_sha256_ni(m, strlen(m), d2);
    tp_hex_encode(d2, sizeof d2, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    tp_crypto_sha256_ni(NULL, 0, d2);
    tp_hex_encode(d2, sizeof d2, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    uint8_t want[TP_SHA256_LEN];
    const char *canon = "v1|123456789|3|100000";
    tp_sha256(canon, strlen(canon), d2);
    tp_crypto_sha256_soft(canon, strlen(canon), want);
    assert_memory_equal(d2, want, sizeof want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_length_and_alignment),
        cmocka_unit_test(test_long_random),
        cmocka_unit_test(test_known_answers),
    };
    if (!tp_crypto_sha_ni()) {
        printf("this CPU has no SHA extensions: nothing to compare\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
