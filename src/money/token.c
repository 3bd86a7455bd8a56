/*
 * Session tokens: HMAC-SHA256 over a fixed 17-byte payload, encoded as unpadded base64url.
 * The encoding reuses tp_base64_* (standard alphabet) and maps '+' '/' to '-' '_'; verification
 * accepts only the one canonical spelling of a token, so a token has exactly one string form
 * (useful if tokens are ever logged, counted or denylisted).
 */
#include "tickpool/money/token.h"
#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

#include <string.h>

#define VERSION 1
#define PAYLOAD_LEN 17
#define RAW_LEN (PAYLOAD_LEN + TP_SHA256_LEN) /* 49 */
#define B64_PADDED_LEN 68                     /* 4 * ceil(49 / 3) */

static const char label[] = "tickpool.token"; /* MAC'd with its NUL */

static void put_be64(uint8_t *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)u;
        u >>= 8;
    }
}

static int64_t get_be64(const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return (int64_t)u;
}

static void mac(const uint8_t *secret, size_t n, const uint8_t payload[PAYLOAD_LEN],
                uint8_t out[TP_SHA256_LEN])
{
    uint8_t msg[sizeof(label) + PAYLOAD_LEN];
    memcpy(msg, label, sizeof(label));
    memcpy(msg + sizeof(label), payload, PAYLOAD_LEN);
    tp_hmac_sha256(secret, n, msg, sizeof(msg), out);
}

/* Encodes the 49 raw bytes as TP_TOKEN_LEN base64url characters plus a NUL into out. */
static void encode(const uint8_t raw[RAW_LEN], char out[TP_TOKEN_LEN + 1])
{
    char b64[B64_PADDED_LEN + 1];
    int rc = tp_base64_encode(raw, RAW_LEN, b64, sizeof(b64));
    TP_ASSERT(rc == B64_PADDED_LEN);
    for (size_t i = 0; i < TP_TOKEN_LEN; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    out[TP_TOKEN_LEN] = '\0';
}

int tp_token_sign(const uint8_t *secret, size_t n, int64_t user_id, int64_t expires_ms, char *out,
                  size_t outlen)
{
    if (secret == NULL || n < TP_TOKEN_MIN_SECRET || user_id <= 0 || expires_ms <= 0)
        return TP_EINVAL;
    if (out == NULL || outlen < TP_TOKEN_LEN + 1)
        return TP_ETOOBIG;
    uint8_t raw[RAW_LEN];
    raw[0] = VERSION;
    put_be64(raw + 1, user_id);
    put_be64(raw + 9, expires_ms);
    mac(secret, n, raw, raw + PAYLOAD_LEN);
    encode(raw, out);
    return 0;
}

int tp_token_verify(const uint8_t *secret, size_t n, const char *token, size_t len, int64_t now_ms,
                    int64_t *user_id, int64_t *expires_ms)
{
    if (secret == NULL || n < TP_TOKEN_MIN_SECRET || token == NULL || len != TP_TOKEN_LEN)
        return TP_EINVAL;

    /* base64url → standard base64 with padding; reject the standard-only characters. */
    char b64[B64_PADDED_LEN];
    for (size_t i = 0; i < TP_TOKEN_LEN; i++) {
        char c = token[i];
        if (c == '+' || c == '/' || c == '=')
            return TP_EINVAL;
        b64[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    b64[TP_TOKEN_LEN] = b64[TP_TOKEN_LEN + 1] = '=';
    uint8_t raw[RAW_LEN + 2]; /* tp_base64_decode wants room for whole 3-byte groups */
    if (tp_base64_decode(b64, sizeof(b64), raw, sizeof(raw)) != RAW_LEN)
        return TP_EINVAL;

    /* The last character carries 4 unused bits; only the spelling with zeros is accepted. */
    char canon[TP_TOKEN_LEN + 1];
    encode(raw, canon);
    if (memcmp(canon, token, TP_TOKEN_LEN) != 0 || raw[0] != VERSION)
        return TP_EINVAL;

    uint8_t want[TP_SHA256_LEN];
    mac(secret, n, raw, want);
    if (tp_memeq_ct(want, raw + PAYLOAD_LEN, TP_SHA256_LEN) != 0)
        return TP_EINVAL;

    /* Only authentic payloads get here, so expiry is never reported for a forgery. */
    int64_t uid = get_be64(raw + 1), exp = get_be64(raw + 9);
    if (uid <= 0 || exp <= 0)
        return TP_EINVAL;
    if (now_ms >= exp)
        return TP_ETIMEDOUT;
    if (user_id != NULL)
        *user_id = uid;
    if (expires_ms != NULL)
        *expires_ms = exp;
    return 0;
}
