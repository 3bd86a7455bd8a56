/*
 * Wire codec (see include/tickpool/base/codec.h): a JSON/MessagePack writer and a format-neutral
 * parsed tree. The only file that includes jansson and msgpack-c.
 *
 * Why the JSON emitter is hand-written: jansson serialises by first building a json_t tree
 * (one malloc per value, a hashtable per object) and then dumping it, which on the hot path
 * (every tick/odds/bet reply) costs far more than appending bytes, and its number formatting is
 * not the shortest round-trip form we want to promise byte for byte. Parsing stays with
 * jansson: requests are small and validation is where a library earns its keep.
 */
#include "tickpool/base/codec.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

#include <jansson.h>
#include <msgpack.h>

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
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

static int pack_write(void *data, const char *buf, size_t len)
{
    tp_buf_append(data, buf, len);
    return 0;
}

/* msgpack_packer is two pointers; building one per call keeps msgpack types out of the header. */
static inline msgpack_packer packer(struct tp_wr *w)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, w->_out, pack_write);
    return pk;
}

static void open_container(struct tp_wr *w, size_t n, bool map)
{
    before_item(w, false);
    size_t items = map ? 2 * n : n;
    TP_ASSERT(n <= UINT32_MAX / 2);
    if (w->_fmt == TP_FMT_MSGPACK) {
        msgpack_packer pk = packer(w);
        if (map)
            msgpack_pack_map(&pk, n);
        else
            msgpack_pack_array(&pk, n);
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

static bool utf8_valid(const char *p, size_t n)
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

/* Appends `s` as a JSON string literal (escaping policy in codec.h). Runs of bytes that need
 * no escaping are copied in one go. */
static void emit_json_string(struct tp_wr *w, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)p;
    size_t run = 0;
    putch(w, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
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
        msgpack_packer pk = packer(w);
        msgpack_pack_str_with_body(&pk, key, n);
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
        msgpack_packer pk = packer(w);
        msgpack_pack_str_with_body(&pk, s, n);
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
        msgpack_packer pk = packer(w);
        msgpack_pack_bin_with_body(&pk, p, n);
    }
    after_item(w);
}

void tp_wr_int(struct tp_wr *w, int64_t v)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        char tmp[24];
        int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
        put(w, tmp, (size_t)n);
    } else {
        msgpack_packer pk = packer(w);
        msgpack_pack_int64(&pk, v);
    }
    after_item(w);
}

void tp_wr_uint(struct tp_wr *w, uint64_t v)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        char tmp[24];
        int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
        put(w, tmp, (size_t)n);
    } else {
        msgpack_packer pk = packer(w);
        msgpack_pack_uint64(&pk, v);
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
        msgpack_packer pk = packer(w);
        msgpack_pack_double(&pk, v);
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
        msgpack_packer pk = packer(w);
        if (v)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    after_item(w);
}

void tp_wr_null(struct tp_wr *w)
{
    before_item(w, false);
    if (w->_fmt == TP_FMT_JSON) {
        put(w, "null", 4);
    } else {
        msgpack_packer pk = packer(w);
        msgpack_pack_nil(&pk);
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

/* --- Parsed tree --- */

struct tp_val {
    enum tp_val_type type;
    size_t n; /* STR/BIN: bytes (excluding the NUL); ARRAY: elements; MAP: pairs */
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double d;
        const char *s;
        struct tp_val *kids; /* ARRAY: n values; MAP: 2n entries, key (STR) then value */
    } v;
};

/* One allocation: header, then every node, then every string (each NUL-terminated). */
struct tp_doc {
    struct tp_val *root;
    struct tp_val nodes[];
};

/* Bump allocator filling a doc whose node count and string bytes were counted first. */
struct build {
    struct tp_val *node, *node_end;
    char *str, *str_end;
};

static struct tp_doc *doc_alloc(size_t nodes, size_t strbytes, struct build *b)
{
    struct tp_doc *doc = tp_xmalloc(sizeof(*doc) + nodes * sizeof(struct tp_val) + strbytes);
    b->node = doc->nodes;
    b->node_end = doc->nodes + nodes;
    b->str = (char *)b->node_end;
    b->str_end = b->str + strbytes;
    doc->root = nodes > 0 ? doc->nodes : NULL;
    return doc;
}

static struct tp_val *take_nodes(struct build *b, size_t n)
{
    TP_ASSERT((size_t)(b->node_end - b->node) >= n);
    struct tp_val *v = b->node;
    b->node += n;
    return v;
}

static void set_str(struct build *b, struct tp_val *v, enum tp_val_type t, const char *p, size_t n)
{
    TP_ASSERT((size_t)(b->str_end - b->str) >= n + 1);
    if (n > 0)
        memcpy(b->str, p, n);
    b->str[n] = '\0';
    v->type = t;
    v->n = n;
    v->v.s = b->str;
    b->str += n + 1;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int cmp_key(const void *a, const void *b)
{
    const struct tp_val *x = *(const struct tp_val *const *)a,
                        *y = *(const struct tp_val *const *)b;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return memcmp(x->v.s, y->v.s, x->n);
}

static bool key_eq(const struct tp_val *x, const struct tp_val *y)
{
    return x->n == y->n && memcmp(x->v.s, y->v.s, x->n) == 0;
}

/* True when map `m` has two equal keys. Small maps compare pairwise; big ones sort pointers
 * so that a hostile 100k-key map costs n log n, not n². */
static bool has_dup_keys(const struct tp_val *m)
{
    size_t n = m->n;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (key_eq(&m->v.kids[2 * i], &m->v.kids[2 * j]))
                    return true;
        return false;
    }
    const struct tp_val **keys = tp_xmalloc(n * sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[i] = &m->v.kids[2 * i];
    qsort(keys, n, sizeof(*keys), cmp_key);
    bool dup = false;
    for (size_t i = 1; i < n && !dup; i++)
        dup = cmp_key(&keys[i - 1], &keys[i]) == 0;
    free(keys);
    return dup;
}

/* --- JSON reader (jansson) --- */

/* Deepest bracket nesting of `p`, ignoring brackets inside strings. Only a cheap early
 * rejection of hostile nesting before jansson recurses into it; syntax is jansson's job. */
static size_t json_depth(const char *p, size_t n)
{
    size_t depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                max = depth;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

static void json_count(json_t *j, size_t *nodes, size_t *bytes)
{
    const char *key;
    json_t *v;
    size_t i;
    (*nodes)++;
    switch (json_typeof(j)) {
    case JSON_STRING:
        *bytes += json_string_length(j) + 1;
        break;
    case JSON_ARRAY:
        json_array_foreach(j, i, v) json_count(v, nodes, bytes);
        break;
    case JSON_OBJECT:
        json_object_foreach(j, key, v)
        {
            (*nodes)++;
            *bytes += strlen(key) + 1;
            json_count(v, nodes, bytes);
        }
        break;
    default:
        break;
    }
}

/* Fills `out` from `j`. Children of a container are reserved as one contiguous block before
 * recursing, so the bump allocator keeps them adjacent. Object members keep jansson's
 * iteration order, which is insertion (= document) order. */
static void json_fill(struct build *b, struct tp_val *out, json_t *j)
{
    const char *key;
    json_t *v;
    size_t i;
    switch (json_typeof(j)) {
    case JSON_NULL:
        out->type = TP_VAL_NULL;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        out->type = TP_VAL_BOOL;
        out->v.b = json_is_true(j);
        break;
    case JSON_INTEGER:
        out->type = TP_VAL_INT;
        out->v.i = (int64_t)json_integer_value(j);
        break;
    case JSON_REAL:
        out->type = TP_VAL_FLOAT;
        out->v.d = json_real_value(j);
        break;
    case JSON_STRING:
        set_str(b, out, TP_VAL_STR, json_string_value(j), json_string_length(j));
        break;
    case JSON_ARRAY:
        out->type = TP_VAL_ARRAY;
        out->n = json_array_size(j);
        out->v.kids = take_nodes(b, out->n);
        json_array_foreach(j, i, v) json_fill(b, &out->v.kids[i], v);
        break;
    case JSON_OBJECT:
        out->type = TP_VAL_MAP;
        out->n = json_object_size(j);
        out->v.kids = take_nodes(b, 2 * out->n);
        i = 0;
        json_object_foreach(j, key, v)
        {
            set_str(b, &out->v.kids[2 * i], TP_VAL_STR, key, strlen(key));
            json_fill(b, &out->v.kids[2 * i + 1], v);
            i++;
        }
        break;
    }
}

static int parse_json(const char *p, size_t len, struct tp_doc **out, char *err, size_t errlen)
{
    if (json_depth(p, len) > TP_DOC_MAX_DEPTH) {
        seterr(err, errlen, "nesting deeper than %d", TP_DOC_MAX_DEPTH);
        return TP_EINVAL;
    }
    /* JSON_DECODE_ANY: any value at top level (callers check the root's type).
     * JSON_ALLOW_NUL: "\u0000" in string values (keys with NUL are still refused).
     * No JSON_DISABLE_EOF_CHECK: trailing garbage is an error. */
    json_error_t je;
    json_t *j = json_loadb(p, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j == NULL) {
        seterr(err, errlen, "%s at byte %d", je.text, je.position);
        /* jansson fails the whole document on an integer beyond json_int_t or a real beyond
         * double: there is no tree to hand out, so report it as a range error. */
        return json_error_code(&je) == json_error_numeric_overflow ? TP_ETOOBIG : TP_EINVAL;
    }
    size_t nodes = 0, bytes = 0;
    json_count(j, &nodes, &bytes);
    struct build b;
    struct tp_doc *doc = doc_alloc(nodes, bytes, &b);
    json_fill(&b, take_nodes(&b, 1), j);
    TP_ASSERT(b.node == b.node_end && b.str == b.str_end);
    json_decref(j);
    *out = doc;
    return 0;
}

/* --- MessagePack reader (msgpack-c) --- */

static inline uint64_t be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Structural pre-scan of a MessagePack document, run before msgpack_unpack. msgpack-c
 * allocates a container's element array from its declared count before reading any element,
 * so a 5-byte array32 header claiming 4 billion elements would make it allocate ~100 GB. Here
 * every declared length is bounded by the bytes left (each element takes at least one byte),
 * which bounds msgpack-c's allocation to a small multiple of `len`. The scan also enforces
 * what msgpack-c does not: depth, string map keys without NUL, UTF-8 strings, no ext types,
 * no trailing bytes; and it counts the nodes and string bytes of the tree to allocate. */
static int msgpack_scan(const unsigned char *p, size_t len, size_t *nodes, size_t *bytes, char *err,
                        size_t errlen)
{
    struct {
        uint64_t left, idx;
        bool map;
    } st[TP_DOC_MAX_DEPTH];
    size_t depth = 0, pos = 0;
    *nodes = *bytes = 0;
    for (;;) {
        if (pos >= len) {
            seterr(err, errlen, "truncated at byte %zu", pos);
            return TP_EINVAL;
        }
        bool is_key = depth > 0 && st[depth - 1].map && st[depth - 1].idx % 2 == 0;
        unsigned char c = p[pos++];
        size_t rem = len - pos;
        uint64_t count = 0; /* container: declared items */
        bool container = false, map = false, str = false;
        size_t hdr = 0;       /* length-field bytes following the type byte */
        uint64_t payload = 0; /* bytes of scalar payload */

        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool: no payload */
        } else if (c >= 0x80 && c <= 0x8f) {
            container = map = true;
            count = c & 0x0f;
        } else if (c >= 0x90 && c <= 0x9f) {
            container = true;
            count = c & 0x0f;
        } else if (c >= 0xa0 && c <= 0xbf) {
            str = true;
            payload = c & 0x1f;
        } else {
            switch (c) {
            case 0xcc:
            case 0xd0:
                payload = 1;
                break;
            case 0xcd:
            case 0xd1:
                payload = 2;
                break;
            case 0xca:
            case 0xce:
            case 0xd2:
                payload = 4;
                break;
            case 0xcb:
            case 0xcf:
            case 0xd3:
                payload = 8;
                break;
            case 0xd9:
                str = true;
                hdr = 1;
                break;
            case 0xda:
                str = true;
                hdr = 2;
                break;
            case 0xdb:
                str = true;
                hdr = 4;
                break;
            case 0xc4:
                hdr = 1;
                break;
            case 0xc5:
                hdr = 2;
                break;
            case 0xc6:
                hdr = 4;
                break;
            case 0xdc:
                container = true;
                hdr = 2;
                break;
            case 0xdd:
                container = true;
                hdr = 4;
                break;
            case 0xde:
                container = map = true;
                hdr = 2;
                break;
            case 0xdf:
                container = map = true;
                hdr = 4;
                break;
            case 0xc1:
                seterr(err, errlen, "invalid type byte 0xc1 at byte %zu", pos - 1);
                return TP_EINVAL;
            default: /* 0xc7-0xc9, 0xd4-0xd8 */
                seterr(err, errlen, "ext type not supported at byte %zu", pos - 1);
                return TP_EINVAL;
            }
            if (hdr > 0) {
                if (rem < hdr) {
                    seterr(err, errlen, "truncated at byte %zu", pos);
                    return TP_EINVAL;
                }
                uint64_t l = be(p + pos, hdr);
                pos += hdr;
                rem -= hdr;
                if (container)
                    count = l;
                else
                    payload = l;
            }
        }
        if (is_key && !str) {
            seterr(err, errlen, "map key is not a string at byte %zu", pos - 1 - hdr);
            return TP_EINVAL;
        }
        if (payload > rem) {
            seterr(err, errlen, "declared length %" PRIu64 " beyond the data at byte %zu", payload,
                   pos);
            return TP_EINVAL;
        }
        (*nodes)++;
        if (str || (c >= 0xc4 && c <= 0xc6)) {
            const char *s = (const char *)p + pos;
            if (is_key && memchr(s, '\0', payload) != NULL) {
                seterr(err, errlen, "NUL byte in map key at byte %zu", pos);
                return TP_EINVAL;
            }
            if (str && !utf8_valid(s, payload)) {
                seterr(err, errlen, "invalid UTF-8 in string at byte %zu", pos);
                return TP_EINVAL;
            }
            *bytes += payload + 1;
        }
        pos += payload;

        if (container) {
            if (depth == TP_DOC_MAX_DEPTH) {
                seterr(err, errlen, "nesting deeper than %d", TP_DOC_MAX_DEPTH);
                return TP_EINVAL;
            }
            uint64_t items = map ? 2 * count : count;
            if (items > len - pos) {
                seterr(err, errlen, "declared count %" PRIu64 " beyond the data at byte %zu", count,
                       pos);
                return TP_EINVAL;
            }
            if (items > 0) {
                st[depth].left = items;
                st[depth].idx = 0;
                st[depth].map = map;
                depth++;
                continue;
            }
        }
        /* One item complete: count it in its container, popping every container it ends. */
        while (depth > 0) {
            st[depth - 1].idx++;
            if (--st[depth - 1].left > 0)
                break;
            depth--;
        }
        if (depth == 0)
            break;
    }
    if (pos != len) {
        seterr(err, errlen, "%zu trailing bytes after the value", len - pos);
        return TP_EINVAL;
    }
    return 0;
}

static void msgpack_fill(struct build *b, struct tp_val *out, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        out->type = TP_VAL_NULL;
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        out->type = TP_VAL_BOOL;
        out->v.b = o->via.boolean;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 <= INT64_MAX) {
            out->type = TP_VAL_INT;
            out->v.i = (int64_t)o->via.u64;
        } else {
            out->type = TP_VAL_UINT;
            out->v.u = o->via.u64;
        }
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        out->type = TP_VAL_INT;
        out->v.i = o->via.i64;
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        out->type = TP_VAL_FLOAT;
        out->v.d = o->via.f64;
        break;
    case MSGPACK_OBJECT_STR:
        set_str(b, out, TP_VAL_STR, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        set_str(b, out, TP_VAL_BIN, o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        out->type = TP_VAL_ARRAY;
        out->n = o->via.array.size;
        out->v.kids = take_nodes(b, out->n);
        for (size_t i = 0; i < out->n; i++)
            msgpack_fill(b, &out->v.kids[i], &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        out->type = TP_VAL_MAP;
        out->n = o->via.map.size;
        out->v.kids = take_nodes(b, 2 * out->n);
        for (size_t i = 0; i < out->n; i++) {
            msgpack_fill(b, &out->v.kids[2 * i], &o->via.map.ptr[i].key);
            msgpack_fill(b, &out->v.kids[2 * i + 1], &o->via.map.ptr[i].val);
        }
        break;
    default: /* EXT: refused by msgpack_scan */
        TP_ASSERT(!"unexpected msgpack type");
    }
}

/* Depth-first search for a map with a duplicate key (depth bounded by the scan). */
static bool find_dup(const struct tp_val *v)
{
    if (v->type != TP_VAL_ARRAY && v->type != TP_VAL_MAP)
        return false;
    if (v->type == TP_VAL_MAP && has_dup_keys(v))
        return true;
    size_t step = v->type == TP_VAL_MAP ? 2 : 1, off = v->type == TP_VAL_MAP ? 1 : 0;
    for (size_t i = 0; i < v->n; i++)
        if (find_dup(&v->v.kids[i * step + off]))
            return true;
    return false;
}

static int parse_msgpack(const char *p, size_t len, struct tp_doc **out, char *err, size_t errlen)
{
    size_t nodes, bytes;
    int rc = msgpack_scan((const unsigned char *)p, len, &nodes, &bytes, err, errlen);
    if (rc != 0)
        return rc;
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        seterr(err, errlen, "out of memory");
        return TP_ENOMEM;
    }
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(p, len, &off, &zone, &obj);
    if (ur != MSGPACK_UNPACK_SUCCESS) { /* the scan accepted it: should not happen */
        msgpack_zone_destroy(&zone);
        seterr(err, errlen, "msgpack_unpack failed (%d)", (int)ur);
        return ur == MSGPACK_UNPACK_NOMEM_ERROR ? TP_ENOMEM : TP_EINVAL;
    }
    struct build b;
    struct tp_doc *doc = doc_alloc(nodes, bytes, &b);
    msgpack_fill(&b, take_nodes(&b, 1), &obj);
    TP_ASSERT(b.node == b.node_end && b.str == b.str_end);
    msgpack_zone_destroy(&zone);
    if (find_dup(doc->root)) {
        free(doc);
        seterr(err, errlen, "duplicate map key");
        return TP_EINVAL;
    }
    *out = doc;
    return 0;
}

/* --- Document API --- */

int tp_doc_parse_ex(enum tp_fmt fmt, const void *data, size_t len, size_t max_len,
                    struct tp_doc **out, char *err, size_t errlen)
{
    TP_ASSERT(out != NULL);
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (len > max_len) {
        seterr(err, errlen, "document of %zu bytes over the %zu-byte limit", len, max_len);
        return TP_ETOOBIG;
    }
    if (len == 0 || data == NULL) {
        seterr(err, errlen, "empty document");
        return TP_EINVAL;
    }
    if (fmt == TP_FMT_JSON)
        return parse_json(data, len, out, err, errlen);
    TP_ASSERT(fmt == TP_FMT_MSGPACK);
    return parse_msgpack(data, len, out, err, errlen);
}

struct tp_doc *tp_doc_parse(enum tp_fmt fmt, const void *data, size_t len, char *err, size_t errlen)
{
    struct tp_doc *doc;
    tp_doc_parse_ex(fmt, data, len, TP_DOC_MAX_LEN, &doc, err, errlen);
    return doc;
}

const struct tp_val *tp_doc_root(const struct tp_doc *doc)
{
    return doc != NULL ? doc->root : NULL;
}

void tp_doc_free(struct tp_doc *doc)
{
    free(doc);
}

/* --- Value access --- */

enum tp_val_type tp_val_type(const struct tp_val *v)
{
    return v != NULL ? v->type : TP_VAL_NULL;
}

const struct tp_val *tp_val_get(const struct tp_val *map, const char *key)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < map->n; i++) {
        const struct tp_val *k = &map->v.kids[2 * i];
        if (k->n == kl && memcmp(k->v.s, key, kl) == 0)
            return &map->v.kids[2 * i + 1];
    }
    return NULL;
}

size_t tp_val_len(const struct tp_val *v)
{
    if (v == NULL)
        return 0;
    switch (v->type) {
    case TP_VAL_STR:
    case TP_VAL_BIN:
    case TP_VAL_ARRAY:
    case TP_VAL_MAP:
        return v->n;
    default:
        return 0;
    }
}

const struct tp_val *tp_val_at(const struct tp_val *v, size_t i)
{
    if (v == NULL || i >= v->n)
        return NULL;
    if (v->type == TP_VAL_ARRAY)
        return &v->v.kids[i];
    if (v->type == TP_VAL_MAP)
        return &v->v.kids[2 * i + 1];
    return NULL;
}

const char *tp_val_key_at(const struct tp_val *map, size_t i, size_t *len)
{
    if (map == NULL || map->type != TP_VAL_MAP || i >= map->n)
        return NULL;
    const struct tp_val *k = &map->v.kids[2 * i];
    if (len != NULL)
        *len = k->n;
    return k->v.s;
}

int64_t tp_val_int(const struct tp_val *v)
{
    if (v == NULL)
        return 0;
    if (v->type == TP_VAL_INT)
        return v->v.i;
    if (v->type == TP_VAL_UINT && v->v.u <= INT64_MAX)
        return (int64_t)v->v.u;
    return 0;
}

uint64_t tp_val_uint(const struct tp_val *v)
{
    if (v == NULL)
        return 0;
    if (v->type == TP_VAL_UINT)
        return v->v.u;
    if (v->type == TP_VAL_INT && v->v.i >= 0)
        return (uint64_t)v->v.i;
    return 0;
}

double tp_val_double(const struct tp_val *v)
{
    if (v == NULL)
        return 0.0;
    switch (v->type) {
    case TP_VAL_FLOAT:
        return v->v.d;
    case TP_VAL_INT:
        return (double)v->v.i;
    case TP_VAL_UINT:
        return (double)v->v.u;
    default:
        return 0.0;
    }
}

bool tp_val_bool(const struct tp_val *v)
{
    return v != NULL && v->type == TP_VAL_BOOL && v->v.b;
}

const char *tp_val_str(const struct tp_val *v, size_t *len)
{
    if (v == NULL || (v->type != TP_VAL_STR && v->type != TP_VAL_BIN))
        return NULL;
    if (len != NULL)
        *len = v->n;
    return v->v.s;
}

int tp_val_get_int(const struct tp_val *map, const char *key, int64_t *out)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return TP_EINVAL;
    const struct tp_val *v = tp_val_get(map, key);
    if (v == NULL)
        return TP_ENOTFOUND;
    if (v->type == TP_VAL_UINT)
        return TP_ETOOBIG;
    if (v->type != TP_VAL_INT)
        return TP_EINVAL;
    *out = v->v.i;
    return 0;
}

int tp_val_get_str(const struct tp_val *map, const char *key, const char **out, size_t *len)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return TP_EINVAL;
    const struct tp_val *v = tp_val_get(map, key);
    if (v == NULL)
        return TP_ENOTFOUND;
    if (v->type != TP_VAL_STR || memchr(v->v.s, '\0', v->n) != NULL)
        return TP_EINVAL;
    *out = v->v.s;
    if (len != NULL)
        *len = v->n;
    return 0;
}

int tp_val_get_bool(const struct tp_val *map, const char *key, bool *out)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return TP_EINVAL;
    const struct tp_val *v = tp_val_get(map, key);
    if (v == NULL)
        return TP_ENOTFOUND;
    if (v->type != TP_VAL_BOOL)
        return TP_EINVAL;
    *out = v->v.b;
    return 0;
}

void tp_wr_val(struct tp_wr *w, const struct tp_val *v)
{
    TP_ASSERT(v != NULL);
    switch (v->type) {
    case TP_VAL_NULL:
        tp_wr_null(w);
        break;
    case TP_VAL_BOOL:
        tp_wr_bool(w, v->v.b);
        break;
    case TP_VAL_INT:
        tp_wr_int(w, v->v.i);
        break;
    case TP_VAL_UINT:
        tp_wr_uint(w, v->v.u);
        break;
    case TP_VAL_FLOAT:
        tp_wr_double(w, v->v.d);
        break;
    case TP_VAL_STR:
        tp_wr_strn(w, v->v.s, v->n);
        break;
    case TP_VAL_BIN:
        tp_wr_bin(w, v->v.s, v->n);
        break;
    case TP_VAL_ARRAY:
        tp_wr_array(w, v->n);
        for (size_t i = 0; i < v->n; i++)
            tp_wr_val(w, &v->v.kids[i]);
        break;
    case TP_VAL_MAP:
        tp_wr_map(w, v->n);
        for (size_t i = 0; i < v->n; i++) {
            tp_wr_keyn(w, v->v.kids[2 * i].v.s, v->v.kids[2 * i].n);
            tp_wr_val(w, &v->v.kids[2 * i + 1]);
        }
        break;
    }
}
