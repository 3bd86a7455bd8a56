/*
 * Hashes, MACs, encodings and randomness over mbedTLS's crypto library: SHA-1 (WebSocket
 * handshake, script ids, the idempotency filter), SHA-256 (bet request hashes) and HMAC-SHA256
 * (provably fair seeds, tokens), base64, hex, and a CSPRNG. SHA-1 and SHA-256 run on the x86 SHA
 * extensions where the CPU has them, with the same output.
 */
#ifndef TP_CRYPTO_H
#define TP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define TP_SHA1_LEN 20
#define TP_SHA256_LEN 32

/** SHA-1 of `n` bytes into out[20]. */
void tp_sha1(const void *data, size_t n, uint8_t out[TP_SHA1_LEN]);
/** SHA-256 of `n` bytes into out[32]. */
void tp_sha256(const void *data, size_t n, uint8_t out[TP_SHA256_LEN]);
/** HMAC-SHA256(key, data) into out[32]. */
void tp_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                    uint8_t out[TP_SHA256_LEN]);
/** Fills `n` bytes from a CSPRNG (getrandom). Returns 0 or TP_EIO. */
int tp_random_bytes(void *out, size_t n);
/** Standard base64 with padding; writes a NUL-terminated string, returns its length or
 * TP_ETOOBIG when `outlen` is too small (needs 4*ceil(n/3)+1). */
int tp_base64_encode(const void *data, size_t n, char *out, size_t outlen);
/** Decodes standard base64; returns the byte count or TP_EINVAL / TP_ETOOBIG. */
int tp_base64_decode(const char *in, size_t n, uint8_t *out, size_t outlen);
/** Lowercase hex of `n` bytes into out (2n+1 bytes, NUL-terminated). */
void tp_hex_encode(const void *data, size_t n, char *out);
/** Decodes exactly 2n hex characters (either case) into n bytes; returns 0 or TP_EINVAL. */
int tp_hex_decode(const char *in, uint8_t *out, size_t n);
/** Constant-time comparison: 0 when equal. */
int tp_memeq_ct(const void *a, const void *b, size_t n);

#endif
