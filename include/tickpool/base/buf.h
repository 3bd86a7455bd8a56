/*
 * Growable byte buffer with a read offset: append at the end, consume from the front.
 * Used for connection input/output and for building messages.
 */
#ifndef TP_BUF_H
#define TP_BUF_H

#include <stddef.h>
#include <stdarg.h>

struct tp_buf {
    char *data;
    size_t off; /* first unread byte */
    size_t len; /* end of written bytes (data[off..len) is the content) */
    size_t cap;
};

/** Initialises an empty buffer (no allocation until first append). */
void tp_buf_init(struct tp_buf *b);
/** Frees the storage; the buffer may be reused after tp_buf_init. */
void tp_buf_deinit(struct tp_buf *b);
/** Empties the buffer, keeping its storage. */
void tp_buf_reset(struct tp_buf *b);
/** Ensures room for `n` more bytes at the end; returns a pointer to that room. */
char *tp_buf_reserve(struct tp_buf *b, size_t n);
/** Marks `n` bytes written after tp_buf_reserve. */
void tp_buf_commit(struct tp_buf *b, size_t n);
/** Appends `n` bytes. */
void tp_buf_append(struct tp_buf *b, const void *p, size_t n);
/** Appends a NUL-terminated string (without the NUL). */
void tp_buf_puts(struct tp_buf *b, const char *s);
/** Appends printf output. */
void tp_buf_printf(struct tp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tp_buf_vprintf(struct tp_buf *b, const char *fmt, va_list ap);
/** Drops `n` bytes from the front (n <= tp_buf_size). Compacts lazily. */
void tp_buf_consume(struct tp_buf *b, size_t n);

/** Unread content (NULL for a buffer never grown: NULL + 0 is undefined behaviour in C, which
 * clang's UBSan reports). */
static inline const char *tp_buf_ptr(const struct tp_buf *b)
{
    return b->data != NULL ? b->data + b->off : NULL;
}
static inline size_t tp_buf_size(const struct tp_buf *b)
{
    return b->len - b->off;
}

#endif
