/*
 * Wire codec, writer (see include/tickpool/base/codec.h): one streaming encoder for JSON and
 * MessagePack. JSON text is produced here; MessagePack items are packed by codec_msgpack.c, the
 * only file that includes msgpack-c.
 *
 * Why the JSON emitter is hand-written: jansson serialises by first building a json_t tree
 * (one malloc per value, a hashtable per object) and then dumping it, which on the hot path
 * (every tick/odds/bet reply) costs far more than appending bytes, and its number formatting is
 * not the shortest round-trip form we want to promise byte for byte. Parsing stays with
 * jansson (codec_json.c): requests are small and validation is where a library earns its keep.
 */
#include "tickpool/base/codec.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "codec_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Writer --- */

void tp_wr_init(struct tp_wr *w, struct tp_buf *out, enum tp_fmt fmt)
{
    TP_ASSERT(out != NULL);
    TP_ASSERT(fmt == TP_FMT_JSON || fmt == TP_FMT_MSGPACK);
    w->_out = out;
    w->_fmt = fmt;
    w->_depth = 0;
    w->_done = false;
}

bool tp_wr_done(const struct tp_wr *w)
{
    return w->_done;
}

static inline void put(struct tp_wr *w, const void *p, size_t n)
{
    tp_buf_append(w->_out, p, n);
}

static inline void putch(struct tp_wr *w, char c)
{
    *tp_buf_reserve(w->_out, 1) = c;
    tp_buf_commit(w->_out, 1);
}

/* Checks that an item (a key when `is_key`) may be written here and, in JSON, writes the
 * separator in front of it: ',' between items, ':' between a key and its value. */
static void before_item(struct tp_wr *w, bool is_key)
{
    TP_ASSERT(!w->_done);
    if (w->_depth == 0) {
        TP_ASSERT(!is_key);
        return;
    }
    struct tp_wr_level *l = &w->_stack[w->_depth - 1];
    uint32_t idx = l->total - l->left;
    TP_ASSERT(is_key == (l->map && idx % 2 == 0));
    if (w->_fmt == TP_FMT_JSON && idx > 0)
        putch(w, l->map && idx % 2 == 1 ? ':' : ',');
}

/* Counts a completed item; closes every container it completes (cascading upwards) and marks
 * the writer done when the top-level value is complete. */
static void after_item(struct tp_wr *w)
{
    while (w->_depth > 0) {
        struct tp_wr_level *l = &w->_stack[w->_depth - 1];
        if (--l->left > 0)
            return;
        if (w->_fmt == TP_FMT_JSON)
            putch(w, l->map ? '}' : ']');
        w->_depth--;
    }
    w->_done = true;
}

static void open_container(struct tp_wr *w, size_t n, bool map)
{
    before_item(w, false);
    size_t items = map ? 2 * n : n;
    TP_ASSERT(n <= UINT32_MAX / 2);
    if (w->_fmt == TP_FMT_MSGPACK) {
        if (map)
            tp_codec_mp_map(w->_out, n);
        else
            tp_codec_mp_array(w->_out, n);
    } else {
        putch(w, map ? '{' : '[');
    }
    if (items == 0) {
        if (w->_fmt == TP_FMT_JSON)
            putch(w, map ? '}' : ']');
        after_item(w);
        return;
    }
    TP_ASSERT(w->_depth < TP_CODEC_MAX_DEPTH);
    w->_stack[w->_depth++] = (struct tp_wr_level){.left = items, .total = items, .map = map};
}

void tp_wr_map(struct tp_wr *w, size_t n)
{
    open_container(w, n, true);
}

void tp_wr_array(struct tp_wr *w, size_t n)
{
    open_container(w, n, false);
}

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF) starting at s[0], or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xc2 || c > 0xf4)
        return 0;
    size_t len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (n < len)
        return 0;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

bool tp_codec_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

void tp_codec_utf8(struct tp_buf *out, const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        size_t l = s[i] >= 0x80 ? utf8_len(s + i, n - i) : 1;
        if (l > 0) {
            i += l;
            continue;
        }
        tp_buf_append(out, p + run, i - run);
        tp_buf_append(out, "\xef\xbf\xbd", 3); /* as emit_json_string: one U+FFFD a byte */
        run = ++i;
    }
    tp_buf_append(out, p + run, n - run);
}

/* The ASCII bytes a JSON string holds as they are: printable, DEL, not '"' (0x22) nor '\\'
 * (0x5c). */
static const unsigned char json_plain[256] = {
    [0x20 ... 0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7f] = 1,
};

/* Appends `s` as a JSON string literal (escaping policy in codec.h). Runs of bytes that need
 * no escaping are copied in one go; a string that needs none (keys, numbers, ids: nearly every
 * string the writer's rows and the API's answers hold) in one append with its quotes. */
static void emit_json_string(struct tp_wr *w, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)p;
    size_t first = 0;
    while (first < n && json_plain[s[first]])
        first++;
    if (first == n) {
        char *o = tp_buf_reserve(w->_out, n + 2);
        o[0] = '"';
        memcpy(o + 1, p, n);
        o[n + 1] = '"';
        tp_buf_commit(w->_out, n + 2);
        return;
    }
    size_t run = 0;
    putch(w, '"');
    for (size_t i = first; i < n;) {
        unsigned char c = s[i];
        if (json_plain[c]) {
            i++;
            continue;
        }
        size_t l = c >= 0x80 ? utf8_len(s + i, n - i) : 0;
        if (l > 0) { /* valid multi-byte sequence: passes through */
            i += l;
            continue;
        }
        put(w, s + run, i - run);
        char esc[6] = {'\\', 0};
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            put(w, esc, 2);
            break;
        case '\b':
            put(w, "\\b", 2);
            break;
        case '\f':
            put(w, "\\f", 2);
            break;
        case '\n':
            put(w, "\\n", 2);
            break;
        case '\r':
            put(w, "\\r", 2);
            break;
        case '\t':
            put(w, "\\t", 2);
            break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                put(w, esc, 6);
            } else {
                put(w, "\xef\xbf\xbd", 3); /* invalid UTF-8 byte → U+FFFD */
            }
        }
        run = ++i;
    }
    put(w, s + run, n - run);
    putch(w, '"');
}

void tp_wr_keyn(struct tp_wr *w, const char *key, size_t n)
{
    TP_ASSERT(key != NULL || n == 0);
    before_item(w, true);
    if (w->_fmt == TP_FMT_JSON) {
        emit_json_string(w, key, n);
    } else {
        tp_codec_mp_str(w->_out, key, n);
    }
    after_item(w);
}

void tp_wr_key(struct tp_wr *w, const char *key)
{
    TP_ASSERT(key != NULL);
    tp_wr_keyn(w, key, strlen(key));
}

void tp_wr_strn(struct tp_wr *w, const char *s, size_t n)
{
    TP_ASSERT(s != NULL || n == 0);
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        emit_json_string(w, s, n);
    } else {
        tp_codec_mp_str(w->_out, s, n);
    }
    after_item(w);
}

void tp_wr_str(struct tp_wr *w, const char *s)
{
    if (s == NULL)
        tp_wr_null(w);
    else
        tp_wr_strn(w, s, strlen(s));
}

void tp_wr_bin(struct tp_wr *w, const void *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    TP_ASSERT(p != NULL || n == 0);
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        const unsigned char *b = p;
        char *o = tp_buf_reserve(w->_out, 2 * n + 2);
        *o++ = '"';
        for (size_t i = 0; i < n; i++) {
            *o++ = hex[b[i] >> 4];
            *o++ = hex[b[i] & 15];
        }
        *o = '"';
        tp_buf_commit(w->_out, 2 * n + 2);
    } else {
        tp_codec_mp_bin(w->_out, p, n);
    }
    after_item(w);
}

void tp_wr_int(struct tp_wr *w, int64_t v)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        char tmp[TP_FMT_I64_MAX];
        put(w, tmp, tp_fmt_i64(tmp, v));
    } else {
        tp_codec_mp_int(w->_out, v);
    }
    after_item(w);
}

void tp_wr_uint(struct tp_wr *w, uint64_t v)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        char tmp[TP_FMT_I64_MAX];
        put(w, tmp, tp_fmt_u64(tmp, v));
    } else {
        tp_codec_mp_uint(w->_out, v);
    }
    after_item(w);
}

/* Shortest decimal form of a finite `v` that strtod reads back exactly, laid out like
 * JavaScript's Number#toString: plain digits for exponents -7 < e < 21, else `d.ddde-7` /
 * `1e300` (no '+', no leading zeros); plus a ".0" when the plain form has no fraction, so the
 * text reads back as a float, not an integer. Returns the length written to `out` (>= 40
 * bytes). Assumes the "C" locale's decimal point, which tickpool never changes. */
static size_t format_double(char *out, double v)
{
    char tmp[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec, v);
        if (strtod(tmp, NULL) == v) /* -0 == 0 is fine: "%e" keeps the sign of -0.0 */
            break;
    }
    /* tmp is "[-]d[.ddd]e[+-]xx": split it into sign, digits and decimal exponent. */
    char digits[20];
    size_t nd = 0, n = 0;
    const char *p = tmp;
    if (*p == '-')
        out[n++] = *p++;
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') /* "%.*e" never pads, but be safe */
        nd--;
    if (exp >= 21 || exp <= -7) {
        out[n++] = digits[0];
        if (nd > 1) {
            out[n++] = '.';
            memcpy(out + n, digits + 1, nd - 1);
            n += nd - 1;
        }
        return n + (size_t)sprintf(out + n, "e%d", exp);
    }
    if (exp < 0) { /* 0.000ddd */
        memcpy(out + n, "0.", 2);
        n += 2;
        for (int i = -1; i > exp; i--)
            out[n++] = '0';
        memcpy(out + n, digits, nd);
        return n + nd;
    }
    size_t intd = (size_t)exp + 1; /* digits before the point, zero-padded */
    for (size_t i = 0; i < intd; i++)
        out[n++] = i < nd ? digits[i] : '0';
    out[n++] = '.';
    if (nd > intd) {
        memcpy(out + n, digits + intd, nd - intd);
        n += nd - intd;
    } else {
        out[n++] = '0';
    }
    return n;
}

void tp_wr_double(struct tp_wr *w, double v)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        if (!isfinite(v)) {
            put(w, "null", 4);
        } else {
            char tmp[40];
            put(w, tmp, format_double(tmp, v));
        }
    } else {
        tp_codec_mp_double(w->_out, v);
    }
    after_item(w);
}

void tp_wr_bool(struct tp_wr *w, bool v)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        if (v)
            put(w, "true", 4);
        else
            put(w, "false", 5);
    } else {
        tp_codec_mp_bool(w->_out, v);
    }
    after_item(w);
}

void tp_wr_null(struct tp_wr *w)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        put(w, "null", 4);
    } else {
        tp_codec_mp_nil(w->_out);
    }
    after_item(w);
}

void tp_wr_raw(struct tp_wr *w, const void *encoded, size_t n)
{
    TP_ASSERT(n > 0 && encoded != NULL);
    before_item(w, false);
    put(w, encoded, n);
    after_item(w);
}
