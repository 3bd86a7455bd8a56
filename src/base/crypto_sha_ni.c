/*
 * SHA-1 and SHA-256 on the x86 SHA extensions (SHA-NI), one-shot, for tp_sha1 and tp_sha256.
 *
 * Written by hand because no Debian 12 library has them: mbedTLS 2.28 computes both in plain C,
 * and each bet paid one SHA-256 (its request hash, until session 9; now built only for
 * bench/loadgen's reference bets, by tp_script_bet_call) and pays one SHA-1 (its idempotency-filter
 * position, tp_keys_idem_pos) on a message of one block; in C that was about 5,000 and 2,000
 * instructions per bet of the 31,500 a WebSocket bet costs a worker (bench/README.md). The round
 * instructions do two (SHA-256) or four (SHA-1) rounds each.
 *
 * The functions carry target attributes instead of the whole file being built with -msha, so the
 * rest of the binary still runs on any x86-64: crypto.c calls them only after tp_crypto_sha_ni()
 * found the extensions. CPUID is read through <cpuid.h>, not __builtin_cpu_supports("sha"),
 * because clang 14 (the fuzz build) does not know that feature name. The output is checked against
 * mbedTLS for every length 0..1024 (tests/unit/base/test_crypto_sha_ni.c) and by fuzz_sha.
 *
 * The round structure follows Intel's "Intel SHA Extensions" paper (2013): SHA-256 keeps its state
 * as the two vectors ABEF and CDGH that SHA256RNDS2 wants; SHA-1 keeps ABCD in one vector and E
 * in the top lane of another.
 */
#include "crypto_internal.h"
#include "tickpool/base/common.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#define TARGET __attribute__((target("sha,sse4.1")))

bool tp_crypto_sha_ni(void)
{
    /* 0: not read yet, 1: absent, 2: present. Threads may race to fill it; all write the same. */
    static int have;
    int v = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (v == 0) {
        unsigned a, b, c, d;
        bool sse41 = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1) && (c & bit_SSSE3);
        bool sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
        v = sse41 && sha ? 2 : 1;
        __atomic_store_n(&have, v, __ATOMIC_RELAXED);
    }
    return v == 2;
}

/*
 * The Merkle-Damgard tail both hashes share: the last n % 64 bytes of p, 0x80, zeros, and the
 * message length in bits as a 64-bit big-endian number, into one block or two. Returns the block
 * count. p may be NULL when n is 0.
 */
static size_t pad_tail(const uint8_t *p, size_t n, uint8_t buf[128])
{
    size_t rem = n % 64, blocks = rem < 56 ? 1 : 2;
    memset(buf, 0, 128);
    if (rem > 0)
        memcpy(buf, p + (n - rem), rem);
    buf[rem] = 0x80;
    uint64_t bits = (uint64_t)n << 3;
    for (int i = 0; i < 8; i++)
        buf[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    return blocks;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* --- SHA-256 --- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* Four rounds, 4g..4g+3, with message words w: two SHA256RNDS2, each on two words plus K. */
#define SHA256_ROUNDS4(g, w)                                                                       \
    do {                                                                                           \
        __m128i wk_ = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&K256[4 * (g)]));          \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk_);                                             \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk_, 0x0e));                    \
    } while (0)

/* The schedule: w0 (words t-16..t-13) becomes words t..t+3 from w1, w2, w3 (t-12..t-1). */
#define SHA256_NEXT(w0, w1, w2, w3)                                                                \
    w0 = _mm_sha256msg2_epu32(                                                                     \
        _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4)), w3)

TARGET static void sha256_blocks(uint32_t st[8], const uint8_t *p, size_t blocks)
{
    /* Big-endian words: reverse the bytes within each 32-bit lane. */
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[0]), 0xb1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[4]), 0x1b);
    __m128i abef = _mm_alignr_epi8(dcba, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, dcba, 0xf0);
    for (; blocks > 0; blocks--, p += 64) {
        __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 0)), bswap);
        __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), bswap);
        __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), bswap);
        __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), bswap);
        SHA256_ROUNDS4(0, w0);
        SHA256_ROUNDS4(1, w1);
        SHA256_ROUNDS4(2, w2);
        SHA256_ROUNDS4(3, w3);
        for (int g = 4; g < 16; g += 4) {
            SHA256_NEXT(w0, w1, w2, w3);
            SHA256_ROUNDS4(g, w0);
            SHA256_NEXT(w1, w2, w3, w0);
            SHA256_ROUNDS4(g + 1, w1);
            SHA256_NEXT(w2, w3, w0, w1);
            SHA256_ROUNDS4(g + 2, w2);
            SHA256_NEXT(w3, w0, w1, w2);
            SHA256_ROUNDS4(g + 3, w3);
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1b);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xb1);
    _mm_storeu_si128((__m128i *)&st[0], _mm_blend_epi16(feba, dchg, 0xf0));
    _mm_storeu_si128((__m128i *)&st[4], _mm_alignr_epi8(dchg, feba, 8));
}

void tp_crypto_sha256_ni(const void *data, size_t n, uint8_t out[TP_SHA256_LEN])
{
    uint32_t st[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    sha256_blocks(st, p, n / 64);
    uint8_t buf[128];
    sha256_blocks(st, buf, pad_tail(p, n, buf));
    for (int i = 0; i < 8; i++)
        put_be32(out + 4 * i, st[i]);
}

/* --- SHA-1 --- */

/*
 * Four rounds of a middle group (3..16): e_a gets E from w0 (SHA1NEXTE), e_b saves ABCD for the
 * next group, SHA1RNDS4 runs function f, and the schedule moves on: w1 is finished (SHA1MSG2),
 * w3 started (SHA1MSG1), w2 gets its XOR. The first three and last three groups are this with
 * the steps that have nothing to do left out.
 */
#define SHA1_ROUNDS4(e_a, e_b, w0, w1, w2, w3, f)                                                  \
    do {                                                                                           \
        e_a = _mm_sha1nexte_epu32(e_a, w0);                                                        \
        e_b = abcd;                                                                                \
        w1 = _mm_sha1msg2_epu32(w1, w0);                                                           \
        abcd = _mm_sha1rnds4_epu32(abcd, e_a, f);                                                  \
        w3 = _mm_sha1msg1_epu32(w3, w0);                                                           \
        w2 = _mm_xor_si128(w2, w0);                                                                \
    } while (0)

TARGET static void sha1_blocks(uint32_t st[5], const uint8_t *p, size_t blocks)
{
    /* Big-endian words, and word 0 in the top lane: reverse all sixteen bytes. */
    const __m128i bswap = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    __m128i abcd = _mm_set_epi32((int)st[0], (int)st[1], (int)st[2], (int)st[3]);
    __m128i e0 = _mm_set_epi32((int)st[4], 0, 0, 0), e1;
    for (; blocks > 0; blocks--, p += 64) {
        __m128i abcd0 = abcd, e00 = e0;
        __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 0)), bswap);
        __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), bswap);
        __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), bswap);
        __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), bswap);
        /* Group 0: E is added to the first words directly, nothing to schedule yet. */
        e0 = _mm_add_epi32(e0, w0);
        e1 = abcd;
        abcd = _mm_sha1rnds4_epu32(abcd, e0, 0);
        /* Groups 1 and 2: the schedule starts. */
        e1 = _mm_sha1nexte_epu32(e1, w1);
        e0 = abcd;
        abcd = _mm_sha1rnds4_epu32(abcd, e1, 0);
        w0 = _mm_sha1msg1_epu32(w0, w1);
        e0 = _mm_sha1nexte_epu32(e0, w2);
        e1 = abcd;
        abcd = _mm_sha1rnds4_epu32(abcd, e0, 0);
        w1 = _mm_sha1msg1_epu32(w1, w2);
        w0 = _mm_xor_si128(w0, w2);
        /* Groups 3..16; the function changes every five groups (20 rounds). */
        SHA1_ROUNDS4(e1, e0, w3, w0, w1, w2, 0);
        SHA1_ROUNDS4(e0, e1, w0, w1, w2, w3, 0);
        SHA1_ROUNDS4(e1, e0, w1, w2, w3, w0, 1);
        SHA1_ROUNDS4(e0, e1, w2, w3, w0, w1, 1);
        SHA1_ROUNDS4(e1, e0, w3, w0, w1, w2, 1);
        SHA1_ROUNDS4(e0, e1, w0, w1, w2, w3, 1);
        SHA1_ROUNDS4(e1, e0, w1, w2, w3, w0, 1);
        SHA1_ROUNDS4(e0, e1, w2, w3, w0, w1, 2);
        SHA1_ROUNDS4(e1, e0, w3, w0, w1, w2, 2);
        SHA1_ROUNDS4(e0, e1, w0, w1, w2, w3, 2);
        SHA1_ROUNDS4(e1, e0, w1, w2, w3, w0, 2);
        SHA1_ROUNDS4(e0, e1, w2, w3, w0, w1, 2);
        SHA1_ROUNDS4(e1, e0, w3, w0, w1, w2, 3);
        SHA1_ROUNDS4(e0, e1, w0, w1, w2, w3, 3);
        /* Groups 17..19: the schedule runs out. */
        e1 = _mm_sha1nexte_epu32(e1, w1);
        e0 = abcd;
        w2 = _mm_sha1msg2_epu32(w2, w1);
        abcd = _mm_sha1rnds4_epu32(abcd, e1, 3);
        w3 = _mm_xor_si128(w3, w1);
        e0 = _mm_sha1nexte_epu32(e0, w2);
        e1 = abcd;
        w3 = _mm_sha1msg2_epu32(w3, w2);
        abcd = _mm_sha1rnds4_epu32(abcd, e0, 3);
        e1 = _mm_sha1nexte_epu32(e1, w3);
        e0 = abcd;
        abcd = _mm_sha1rnds4_epu32(abcd, e1, 3);
        /* The block's E is the saved one plus rotl(A, 30) of four groups back, as SHA1NEXTE
         * computes; ABCD adds lane by lane. */
        e0 = _mm_sha1nexte_epu32(e0, e00);
        abcd = _mm_add_epi32(abcd, abcd0);
    }
    st[0] = (uint32_t)_mm_extract_epi32(abcd, 3);
    st[1] = (uint32_t)_mm_extract_epi32(abcd, 2);
    st[2] = (uint32_t)_mm_extract_epi32(abcd, 1);
    st[3] = (uint32_t)_mm_extract_epi32(abcd, 0);
    st[4] = (uint32_t)_mm_extract_epi32(e0, 3);
}

void tp_crypto_sha1_ni(const void *data, size_t n, uint8_t out[TP_SHA1_LEN])
{
    uint32_t st[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const uint8_t *p = data;
    sha1_blocks(st, p, n / 64);
    uint8_t buf[128];
    sha1_blocks(st, buf, pad_tail(p, n, buf));
    for (int i = 0; i < 5; i++)
        put_be32(out + 4 * i, st[i]);
}

#else /* not x86: mbedTLS only */

bool tp_crypto_sha_ni(void)
{
    return false;
}

void tp_crypto_sha1_ni(const void *data, size_t n, uint8_t out[TP_SHA1_LEN])
{
    (void)data, (void)n, (void)out;
    TP_ASSERT(!"SHA extensions on a CPU without them");
}

void tp_crypto_sha256_ni(const void *data, size_t n, uint8_t out[TP_SHA256_LEN])
{
    (void)data, (void)n, (void)out;
    TP_ASSERT(!"SHA extensions on a CPU without them");
}

#endif
