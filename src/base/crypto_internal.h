/*
 * Internals of module base/crypto shared by its files: crypto.c (the public calls, mbedTLS) and
 * crypto_sha_ni.c (SHA-1 and SHA-256 on the x86 SHA extensions).
 *
 * tp_sha1 and tp_sha256 take the SHA extensions when the CPU has them and mbedTLS otherwise. Both
 * paths are reachable here so that the unit test and the fuzz target can compare them byte for
 * byte: a key's filter position is its SHA-1, so the two must never differ (a key hashed
 * otherwise on another host is missed by the filter).
 */
#ifndef TP_CRYPTO_INTERNAL_H
#define TP_CRYPTO_INTERNAL_H

#include "tickpool/base/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** True when this CPU has the SHA extensions and SSE4.1 (CPUID, read once and cached). */
bool tp_crypto_sha_ni(void);
/** SHA-1 / SHA-256 on the SHA extensions; call only when tp_crypto_sha_ni() is true. */
void tp_crypto_sha1_ni(const void *data, size_t n, uint8_t out[TP_SHA1_LEN]);
void tp_crypto_sha256_ni(const void *data, size_t n, uint8_t out[TP_SHA256_LEN]);
/** SHA-1 / SHA-256 by mbedTLS: the fallback, and the reference the tests compare against. */
void tp_crypto_sha1_soft(const void *data, size_t n, uint8_t out[TP_SHA1_LEN]);
void tp_crypto_sha256_soft(const void *data, size_t n, uint8_t out[TP_SHA256_LEN]);

#endif
