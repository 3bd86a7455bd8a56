/*
 * Bet admission limiter of one process: at most `max_inflight` bets waiting for Redis, and at
 * most one request per (user, idempotency key) in flight at a time. Pure bookkeeping, no I/O,
 * no locking: used from one event loop thread only.
 *
 * A request beyond the limit is refused (HTTP 429 `overloaded`, Retry-After: 1) before it costs
 * a Redis round trip; a second request with a (user, key) already in flight is refused (409
 * `idempotency_conflict`) because its outcome is not known yet (scripts/lua/README.md).
 */
#ifndef TP_LIMITER_H
#define TP_LIMITER_H

#include <stddef.h>
#include <stdint.h>

struct tp_limiter;

/** Longest idempotency key the limiter stores, in bytes. */
#define TP_LIMITER_KEY_MAX 128

/** Creates a limiter admitting at most `max_inflight` (>= 1) requests at once. */
struct tp_limiter *tp_limiter_new(int max_inflight);
/** Frees a limiter (entries still held are dropped). NULL is a no-op. */
void tp_limiter_free(struct tp_limiter *l);

/**
 * Admits the request (user_id, key[len]): 0 (the caller must tp_limiter_release it later),
 * TP_ECONFLICT when the same (user, key) is in flight, TP_EAGAIN when max_inflight requests are
 * in flight, TP_EINVAL for a key that is empty or longer than TP_LIMITER_KEY_MAX.
 */
int tp_limiter_acquire(struct tp_limiter *l, int64_t user_id, const char *key, size_t len);
/** Releases an admitted request. Releasing an unknown entry is a bug (TP_ASSERT). */
void tp_limiter_release(struct tp_limiter *l, int64_t user_id, const char *key, size_t len);
/** Number of requests in flight. */
int tp_limiter_inflight(const struct tp_limiter *l);

#endif
