/*
 * Password hashing with argon2id (Debian's libargon2), stored as the standard encoded string
 * "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>" that carries its own parameters and salt.
 * Each call costs ~20-50 ms of CPU and 19 MiB of memory: run it on a worker thread, never on an
 * event loop. Thread-safe (no shared state; libargon2 runs single-lane with p=1).
 */
#ifndef TP_PASSWORD_H
#define TP_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

/** Buffer size that holds any encoded hash tp_password_hash writes, NUL included. */
#define TP_PASSWORD_ENCODED_MAX 128
/** Longest password accepted, in bytes (bounds the work an attacker can ask for). */
#define TP_PASSWORD_MAX 1024

/** Hashes pw[n] with a fresh random salt into out as a NUL-terminated encoded string.
 * Returns 0, TP_ETOOBIG (n > TP_PASSWORD_MAX or outlen < TP_PASSWORD_ENCODED_MAX),
 * TP_EIO (no randomness) or TP_ENOMEM. */
int tp_password_hash(const char *pw, size_t n, char *out, size_t outlen);

/** Checks pw[n] against an encoded hash (NUL-terminated, at most TP_PASSWORD_ENCODED_MAX bytes,
 * cost parameters within sane caps). Returns 0 on a match, TP_EINVAL on a mismatch or a
 * malformed/oversized hash or password, TP_ENOMEM when argon2 cannot get its memory. */
int tp_password_verify(const char *encoded, const char *pw, size_t n);

/** True when `encoded` was made with other parameters than tp_password_hash uses now, so the
 * caller may store a fresh hash after the next successful login. */
bool tp_password_needs_rehash(const char *encoded);

#endif
