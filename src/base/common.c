/* Error names, aborting allocators, clocks and the assertion handler. */
#include "tickpool/base/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *tp_strerror(int err)
{
    switch (err) {
    case TP_OK:
        return "ok";
    case TP_EINVAL:
        return "invalid argument";
    case TP_ENOMEM:
        return "out of memory";
    case TP_EIO:
        return "I/O error";
    case TP_ETIMEDOUT:
        return "timed out";
    case TP_ENOTFOUND:
        return "not found";
    case TP_ECONFLICT:
        return "conflict";
    case TP_EAGAIN:
        return "try again";
    case TP_ECLOSED:
        return "closed";
    case TP_ETOOBIG:
        return "too big";
    case TP_EPROTO:
        return "protocol error";
    case TP_EUNAVAIL:
        return "unavailable";
    case TP_ESTALE:
        return "stale fencing epoch";
    case TP_EPERM:
        return "not permitted";
    }
    return "unknown error";
}

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "tickpool: out of memory allocating %zu bytes\n", n);
    abort();
}

void *tp_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *tp_xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p == NULL)
        oom(count * n);
    return p;
}

void *tp_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *tp_xstrdup(const char *s)
{
    return tp_xstrndup(s, strlen(s));
}

char *tp_xstrndup(const char *s, size_t n)
{
    char *p = tp_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

bool tp_parse_i64(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

size_t tp_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

size_t tp_fmt_i64(char *out, int64_t v)
{
    if (v >= 0)
        return tp_fmt_u64(out, (uint64_t)v);
    out[0] = '-';
    /* 0 - (uint64_t)v is |v| also for INT64_MIN, whose negation overflows int64. */
    return 1 + tp_fmt_u64(out + 1, 0 - (uint64_t)v);
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t clock_ms(clockid_t id)
{
    return clock_ns(id) / 1000000;
}

int64_t tp_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t tp_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t tp_now_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

int64_t tp_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

void tp_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "tickpool: assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}
