/*
 * Per-client rate limits shared by every process of a host: a fixed table of token buckets in
 * one anonymous shared mapping that the master creates before forking (tp_ratelimit_init), so
 * all workers of a host count one client's requests together, with no lock and no Redis round
 * trip. Used for sign-ups and sign-ins, before any password hashing is queued.
 *
 * Each bucket is one 64-bit word updated with compare-and-swap: a 24-bit tag of the client key
 * and the GCRA "theoretical arrival time" (the token bucket as one timestamp: a request is
 * allowed while that time is at most (burst - 1) intervals ahead of now, and moves it one
 * interval further). A process dying mid-update leaves nothing half-written. The table is 4-way
 * set associative: a new client takes a free or idle entry of its set, else the one closest to
 * idle, so a flood of distinct addresses can only make the limit forget other addresses (which
 * per-address limits cannot stop anyway), never refuse a client that is under its limit (but
 * for a key whose tag equals one of the 4 in its set, about one in four million: it shares
 * that bucket).
 *
 * Before tp_ratelimit_init (unit tests, the CLI) calls work on a private table.
 */
#ifndef TP_RATELIMIT_H
#define TP_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

/* One limit: `per_min` requests per minute sustained, up to `burst` at once. per_min 0 = none. */
struct tp_ratelimit_rule {
    int per_min; /* 0 … 60000 */
    int burst;   /* 1 … 10000 */
};

/* Entries of the shared table (128 KiB): about 16k clients remembered per host. */
#define TP_RATELIMIT_SLOTS 16384
/* Longest client key in bytes (a limit kind byte plus an IPv6 prefix fits easily). */
#define TP_RATELIMIT_KEY_MAX 32

/** Maps the shared table (call in the master before fork). Returns 0 or TP_ENOMEM. */
int tp_ratelimit_init(void);

/**
 * Takes one request of client key[len] (1 … TP_RATELIMIT_KEY_MAX bytes; callers put the limit's
 * kind in it) under `rule` at `now_ms` (a monotonic clock shared by the host's processes:
 * tp_mono_ms). Returns 0 when allowed, else the milliseconds until the next request would be
 * (> 0). A rule with per_min 0 always allows; a bad key allows too (asserted in debug use).
 */
int64_t tp_ratelimit_take(const struct tp_ratelimit_rule *rule, const void *key, size_t len,
                          int64_t now_ms);

#endif
