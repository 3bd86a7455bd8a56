/*
 * libFuzzer target for src/base/crypto_sha_ni.c: for every input, SHA-1 and SHA-256 on the x86
 * SHA extensions must equal mbedTLS's (crypto.c's fallback) byte for byte, at the input's own
 * address and one byte further (unaligned loads). A key's idempotency-filter position is its
 * SHA-1, so a difference would miss an archived key. Without the extensions there is nothing
 * to compare and every input passes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/base/crypto_internal.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_sha: check failed: %s (line %d)\n", #c, __LINE__);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void compare(const uint8_t *p, size_t n)
{
    uint8_t a1[TP_SHA1_LEN], b1[TP_SHA1_LEN], a2[TP_SHA256_LEN], b2[TP_SHA256_LEN];
    tp_crypto_sha1_ni(p, n, a1);
    tp_crypto_sha1_soft(p, n, b1);
    CHECK(memcmp(a1, b1, sizeof a1) == 0);
    tp_crypto_sha256_ni(p, n, a2);
    tp_crypto_sha256_soft(p, n, b2);
    CHECK(memcmp(a2, b2, sizeof a2) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tp_crypto_sha_ni())
        return 0;
    compare(data, size);
    if (size > 0)
        compare(data + 1, size - 1);
    return 0;
}
