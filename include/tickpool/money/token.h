/*
 * Signed session tokens: a stateless bearer token that names a user and an expiry time.
 *
 * Layout (49 bytes, then base64url without padding = 66 characters, safe in a URL query):
 *   version (1 byte, 1) | user_id (int64 big-endian) | expires_ms (int64 big-endian) |
 *   HMAC-SHA256(secret, "tickpool.token\0" | the 17 bytes before) (32 bytes)
 * The label separates these MACs from any other use of the same secret. A token itself cannot
 * be revoked: revocation is a per-user watermark on the expiry, kept by tickpool/money/access.h
 * (rotating the secret still revokes them all).
 * No allocation, no global state: safe from any thread.
 */
#ifndef TP_TOKEN_H
#define TP_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/** Length of every token in characters; buffers need TP_TOKEN_LEN + 1 for the NUL. */
#define TP_TOKEN_LEN 66
/** Shortest accepted secret in bytes (32 random bytes recommended). */
#define TP_TOKEN_MIN_SECRET 16

/** Writes the token for (user_id > 0, expires_ms > 0) signed with secret[n] into out as a
 * NUL-terminated string of TP_TOKEN_LEN characters. Returns 0, TP_EINVAL (bad argument or
 * secret shorter than TP_TOKEN_MIN_SECRET) or TP_ETOOBIG (outlen < TP_TOKEN_LEN + 1). */
int tp_token_sign(const uint8_t *secret, size_t n, int64_t user_id, int64_t expires_ms, char *out,
                  size_t outlen);

/** Checks token[len] (need not be NUL-terminated): 0 and *user_id, *expires_ms set when it is
 * well formed, signed with secret[n] and now_ms < expiry; TP_ETIMEDOUT when only expired;
 * TP_EINVAL otherwise (malformed, truncated, tampered, wrong secret). Outputs untouched on error.
 */
int tp_token_verify(const uint8_t *secret, size_t n, const char *token, size_t len, int64_t now_ms,
                    int64_t *user_id, int64_t *expires_ms);

#endif
