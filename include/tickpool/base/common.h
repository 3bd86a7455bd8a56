/*
 * Common definitions every tickpool module uses: error codes, allocation that aborts on OOM,
 * always-on assertions, clocks and strict integer parsing.
 */
#ifndef TP_COMMON_H
#define TP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Sync calls return 0 on success or one of these negative codes (libuv style). */
enum tp_err {
    TP_OK = 0,
    TP_EINVAL = -1,    /* invalid argument or input */
    TP_ENOMEM = -2,    /* out of memory (rare: tp_xmalloc aborts) */
    TP_EIO = -3,       /* I/O error */
    TP_ETIMEDOUT = -4, /* deadline passed */
    TP_ENOTFOUND = -5, /* no such item */
    TP_ECONFLICT = -6, /* state conflict (already exists, wrong state) */
    TP_EAGAIN = -7,    /* try again later (would block, overloaded) */
    TP_ECLOSED = -8,   /* peer or connection closed */
    TP_ETOOBIG = -9,   /* input over a configured limit */
    TP_EPROTO = -10,   /* protocol violation */
    TP_EUNAVAIL = -11, /* dependency (Redis, Postgres) unreachable */
    TP_ESTALE = -12,   /* fencing epoch no longer ours */
    TP_EPERM = -13,    /* refused by policy (a disabled account) */
    TP_ERR_MIN_ = -13
};

/** The git commit this binary was built from: 12 hex digits, with "-dirty" when tracked files
 * differed from it at build time, or "unknown" outside a checkout (meson vcs_tag). Static. */
const char *tp_build_commit(void);

/** Returns a static, human-readable name for a TP_E* code (or "unknown error"). */
const char *tp_strerror(int err);

/** malloc/calloc/realloc/strdup that abort the process on OOM (redis zmalloc rule). */
void *tp_xmalloc(size_t n) __attribute__((malloc, returns_nonnull));
void *tp_xcalloc(size_t count, size_t n) __attribute__((malloc, returns_nonnull));
void *tp_xrealloc(void *p, size_t n) __attribute__((returns_nonnull));
char *tp_xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
char *tp_xstrndup(const char *s, size_t n) __attribute__((malloc, returns_nonnull));

/** True when `s` (NULL allowed) is a whole base-10 integer in int64 range, as strtoll reads
 * it (no trailing bytes; "" is not a number); stores it in *out. For Redis fields and ids. */
bool tp_parse_i64(const char *s, int64_t *out);

/** Longest decimal form of an int64 with its NUL ("-9223372036854775808"). */
#define TP_FMT_I64_MAX 21
/** Writes `v` in decimal (what printf's "%lld" writes) and a NUL to out[TP_FMT_I64_MAX];
 * returns the length without the NUL. For numbers formatted per request, without printf. */
size_t tp_fmt_i64(char *out, int64_t v);
/** As tp_fmt_i64 for an unsigned value (out holds at least 21 bytes). */
size_t tp_fmt_u64(char *out, uint64_t v);

/** Wall clock in Unix milliseconds (what the contract calls "times"). */
int64_t tp_now_ms(void);
/** Monotonic clock in milliseconds, for timeouts and intervals. */
int64_t tp_mono_ms(void);
/** Wall clock in Unix nanoseconds (lag against a wall-clock timestamp from another process). */
int64_t tp_now_ns(void);
/** Monotonic clock in nanoseconds, for the latency histograms. */
int64_t tp_mono_ns(void);

/** Always-on assertion for cheap invariants: logs file:line and aborts. */
#define TP_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tp_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
_Noreturn void tp_assert_fail(const char *expr, const char *file, int line);

/** Value of one hexadecimal digit (either case), or -1. */
static inline int tp_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#define TP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TP_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
