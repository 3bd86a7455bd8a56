/*
 * Hashes, HMAC, base64, hex and randomness. The digests and base64 come from mbedTLS's crypto
 * library (the one tickpool already links for TLS), SHA-1 and SHA-256 from the CPU's SHA
 * extensions where it has them (crypto_sha_ni.c); randomness comes straight from getrandom(2)
 * so no DRBG state exists here that could be duplicated across fork().
 */
#include "crypto_internal.h"
#include "tickpool/base/common.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/random.h>

#include <mbedtls/base64.h>
#include <mbedtls/constant_time.h>
#include <mbedtls/md.h>
#include <mbedtls/sha1.h>
#include <mbedtls/sha256.h>

/*
 * The hash a bet pays (its idempotency-filter position; until session 9 also its request hash)
 * takes the SHA extensions when the CPU has them (crypto_sha_ni.c, about a tenth of mbedTLS's
 * instructions for one block); mbedTLS otherwise. Both give the same bytes: the tests compare them.
 */
void tp_sha1(const void *data, size_t n, uint8_t out[TP_SHA1_LEN])
{
    if (tp_crypto_sha_ni())
        tp_crypto_sha1_ni(data, n, out);
    else
        tp_crypto_sha1_soft(data, n, out);
}

void tp_sha256(const void *data, size_t n, uint8_t out[TP_SHA256_LEN])
{
    if (tp_crypto_sha_ni())
        tp_crypto_sha256_ni(data, n, out);
    else
        tp_crypto_sha256_soft(data, n, out);
}

void tp_crypto_sha1_soft(const void *data, size_t n, uint8_t out[TP_SHA1_LEN])
{
    /* Fails only on hardware-accelerator errors, which the software build cannot have. */
    int rc = mbedtls_sha1_ret(data, n, out);
    TP_ASSERT(rc == 0);
}

void tp_crypto_sha256_soft(const void *data, size_t n, uint8_t out[TP_SHA256_LEN])
{
    int rc = mbedtls_sha256_ret(data, n, out, 0 /* not SHA-224 */);
    TP_ASSERT(rc == 0);
}

void tp_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                    uint8_t out[TP_SHA256_LEN])
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    TP_ASSERT(md != NULL);
    int rc = mbedtls_md_hmac(md, key, keylen, data, n, out);
    TP_ASSERT(rc == 0);
}

/*
 * getrandom(2) without GRND_NONBLOCK blocks only until the kernel pool is first initialised
 * (early boot), never afterwards. Requests over 256 bytes may return short, hence the loop.
 */
int tp_random_bytes(void *out, size_t n)
{
    uint8_t *p = out;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return TP_EIO;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int tp_base64_encode(const void *data, size_t n, char *out, size_t outlen)
{
    if (n > (size_t)INT_MAX / 4 * 3 - 3)
        return TP_ETOOBIG;
    size_t need = (n + 2) / 3 * 4 + 1;
    if (outlen < need)
        return TP_ETOOBIG;
    if (n == 0) { /* mbedtls returns without writing the NUL */
        out[0] = '\0';
        return 0;
    }
    size_t olen = 0;
    /* mbedtls writes the terminating NUL itself and does not count it in olen. */
    if (mbedtls_base64_encode((unsigned char *)out, outlen, &olen, data, n) != 0)
        return TP_ETOOBIG;
    return (int)olen;
}

static bool is_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/*
 * mbedtls_base64_decode tolerates embedded spaces and CR/LF line breaks (it is built for PEM).
 * Network inputs (Sec-WebSocket-Key, tokens) must be canonical, so the strict shape is checked
 * here first: a multiple of 4 characters, only the alphabet, and at most two '=' at the end.
 */
int tp_base64_decode(const char *in, size_t n, uint8_t *out, size_t outlen)
{
    if (n % 4 != 0)
        return TP_EINVAL;
    if (n > (size_t)INT_MAX)
        return TP_ETOOBIG;
    size_t pad = 0;
    if (n > 0 && in[n - 1] == '=')
        pad++;
    if (n > 1 && in[n - 2] == '=')
        pad++;
    for (size_t i = 0; i < n - pad; i++)
        if (!is_b64_char(in[i]))
            return TP_EINVAL;
    if (n == 0)
        return 0;
    size_t need = n / 4 * 3 - pad;
    if (outlen < need)
        return TP_ETOOBIG;
    size_t olen = 0;
    int rc = mbedtls_base64_decode(out, outlen, &olen, (const unsigned char *)in, n);
    if (rc == MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL)
        return TP_ETOOBIG;
    if (rc != 0)
        return TP_EINVAL;
    return (int)olen;
}

void tp_hex_encode(const void *data, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/* On TP_EINVAL the output may be partially written; callers must not use it. */
int tp_hex_decode(const char *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = tp_hex_digit(in[2 * i]);
        if (hi < 0)
            return TP_EINVAL;
        int lo = tp_hex_digit(in[2 * i + 1]);
        if (lo < 0)
            return TP_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int tp_memeq_ct(const void *a, const void *b, size_t n)
{
    return mbedtls_ct_memcmp(a, b, n) == 0 ? 0 : 1;
}
