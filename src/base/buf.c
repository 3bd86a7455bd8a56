/* Growable byte buffer (see include/tickpool/base/buf.h). */
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tp_buf_init(struct tp_buf *b)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void tp_buf_deinit(struct tp_buf *b)
{
    if (b->data != NULL)
        free(b->data);
    tp_buf_init(b);
}

void tp_buf_reset(struct tp_buf *b)
{
    b->off = b->len = 0;
}

char *tp_buf_reserve(struct tp_buf *b, size_t n)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= n)
        return b->data + b->len;
    /* Compact first when the consumed prefix alone makes enough room: avoids growing a
     * buffer that is steadily drained (connection output). */
    if (b->off > 0 && b->cap - (b->len - b->off) >= n) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        return b->data + b->len;
    }
    size_t need = b->len + n, cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = tp_xrealloc(b->data, cap);
    b->cap = cap;
    return b->data + b->len;
}

void tp_buf_commit(struct tp_buf *b, size_t n)
{
    TP_ASSERT(b->len + n <= b->cap);
    b->len += n;
}

void tp_buf_append(struct tp_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(tp_buf_reserve(b, n), p, n);
    b->len += n;
}

void tp_buf_puts(struct tp_buf *b, const char *s)
{
    tp_buf_append(b, s, strlen(s));
}

void tp_buf_vprintf(struct tp_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char *dst = tp_buf_reserve(b, 128);
    int n = vsnprintf(dst, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        dst = tp_buf_reserve(b, (size_t)n + 1);
        n = vsnprintf(dst, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        b->len += (size_t)n;
}

void tp_buf_printf(struct tp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tp_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void tp_buf_consume(struct tp_buf *b, size_t n)
{
    TP_ASSERT(n <= b->len - b->off);
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}
