/*
 * Wire codec, MessagePack (see include/tickpool/base/codec.h): the reader (a checking pre-scan,
 * then one pass that builds the tree into one tp_doc allocation) and the item packer the writer
 * (codec_write.c) uses. The only file that includes msgpack-c (for the packer).
 *
 * The reader does not use msgpack-c's unpacker: the scan below already reads every byte to
 * check what msgpack-c does not (lengths against the data, depth, keys, UTF-8), and building the
 * tree straight from the bytes it accepted saves msgpack-c's zone (an 8 KiB malloc per message)
 * and its object tree, which were copied once more into ours: about half of what a WebSocket
 * bet's 60-byte message cost to read. tests/fuzz/fuzz_codec.c checks the tree against
 * msgpack-c's for any input.
 */
#include "tickpool/base/codec.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "codec_internal.h"

#include <msgpack.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* --- Item packer (for the writer) --- */

/* msgpack-c's packer hands each piece (a header, then a body) to a write callback. Each item is
 * packed into room reserved up front (at most 9 header bytes, plus the body), through a
 * callback that only copies: no growth check per piece, and with the packer local the compiler
 * can inline the call. Appending each piece to the tp_buf cost 4 calls per string. */
struct cursor {
    char *p;
};

static int cursor_write(void *data, const char *buf, size_t len)
{
    struct cursor *c = data;
    memcpy(c->p, buf, len);
    c->p += len;
    return 0;
}

/* Packs one item of at most `body` + 9 bytes into `out`: PACK(out, body, msgpack_pack_x(&pk, ...)).
 */
#define PACK(out, body, call)                                                                      \
    do {                                                                                           \
        char *start_ = tp_buf_reserve((out), (body) + 9);                                          \
        struct cursor c_ = {start_};                                                               \
        msgpack_packer pk;                                                                         \
        msgpack_packer_init(&pk, &c_, cursor_write);                                               \
        call;                                                                                      \
        tp_buf_commit((out), (size_t)(c_.p - start_));                                             \
    } while (0)

void tp_codec_mp_map(struct tp_buf *out, size_t n)
{
    PACK(out, 0, msgpack_pack_map(&pk, n));
}

void tp_codec_mp_array(struct tp_buf *out, size_t n)
{
    PACK(out, 0, msgpack_pack_array(&pk, n));
}

void tp_codec_mp_str(struct tp_buf *out, const char *s, size_t n)
{
    if (n <= 31) { /* fixstr: every key and most values, without the packer's two calls */
        char *o = tp_buf_reserve(out, n + 1);
        o[0] = (char)(0xa0 | n);
        memcpy(o + 1, s, n);
        tp_buf_commit(out, n + 1);
        return;
    }
    PACK(out, n, msgpack_pack_str_with_body(&pk, s, n));
}

void tp_codec_mp_bin(struct tp_buf *out, const void *p, size_t n)
{
    PACK(out, n, msgpack_pack_bin_with_body(&pk, p, n));
}

static size_t put_be(uint8_t *o, uint8_t tag, uint64_t v, size_t n)
{
    o[0] = tag;
    for (size_t i = 0; i < n; i++)
        o[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return n + 1;
}

/* msgpack-c's msgpack_pack_int64 choice, written out: non-negative values take the smallest of
 * positive fixint, uint 8/16/32/64; negative ones negative fixint, int 8/16/32/64
 * (test_codec checks each boundary against the packer). */
size_t tp_codec_msgpack_int(void *out, int64_t v)
{
    uint8_t *o = out;
    uint64_t u = (uint64_t)v;
    if (v >= 0) {
        if (v < 128) {
            o[0] = (uint8_t)v;
            return 1;
        }
        if (v < 256)
            return put_be(o, 0xcc, u, 1);
        if (v < 65536)
            return put_be(o, 0xcd, u, 2);
        if (v < 4294967296)
            return put_be(o, 0xce, u, 4);
        return put_be(o, 0xcf, u, 8);
    }
    if (v >= -32) {
        o[0] = (uint8_t)v;
        return 1;
    }
    if (v >= -128)
        return put_be(o, 0xd0, u, 1);
    if (v >= -32768)
        return put_be(o, 0xd1, u, 2);
    if (v >= -2147483648LL)
        return put_be(o, 0xd2, u, 4);
    return put_be(o, 0xd3, u, 8);
}

void tp_codec_mp_int(struct tp_buf *out, int64_t v)
{
    uint8_t *o = (uint8_t *)tp_buf_reserve(out, TP_CODEC_MSGPACK_INT_MAX);
    tp_buf_commit(out, tp_codec_msgpack_int(o, v));
}

/* The packer's own encoding, for test_codec's comparison with tp_codec_msgpack_int. */
void tp_codec_mp_int_packer(struct tp_buf *out, int64_t v)
{
    PACK(out, 0, msgpack_pack_int64(&pk, v));
}

void tp_codec_mp_uint(struct tp_buf *out, uint64_t v)
{
    PACK(out, 0, msgpack_pack_uint64(&pk, v));
}

void tp_codec_mp_double(struct tp_buf *out, double v)
{
    PACK(out, 0, msgpack_pack_double(&pk, v));
}

void tp_codec_mp_bool(struct tp_buf *out, bool v)
{
    PACK(out, 0, v ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
}

void tp_codec_mp_nil(struct tp_buf *out)
{
    PACK(out, 0, msgpack_pack_nil(&pk));
}

/* --- MessagePack reader --- */

static inline uint64_t be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

size_t tp_codec_msgpack_read_int(const void *p, size_t n, int64_t *v)
{
    const unsigned char *b = p;
    if (n == 0)
        return 0;
    unsigned char c = b[0];
    if (c <= 0x7f || c >= 0xe0) { /* positive / negative fixint */
        *v = (int8_t)c;
        return 1;
    }
    if (c < 0xcc || c > 0xd3)
        return 0;
    size_t k = (size_t)1 << ((c - 0xcc) & 3); /* uint and int 8, 16, 32, 64 */
    if (n < 1 + k)
        return 0;
    uint64_t x = be(b + 1, k);
    if (c <= 0xcf) {
        if (x > INT64_MAX)
            return 0;
        *v = (int64_t)x;
    } else { /* sign-extend from k bytes, as build() does through int8/16/32/64 */
        *v = k == 1 ? (int8_t)x : k == 2 ? (int16_t)x : k == 4 ? (int32_t)x : (int64_t)x;
    }
    return 1 + k;
}

/* Structural pre-scan of a MessagePack document, run before build(): it checks everything,
 * so build() checks nothing. Every declared length is bounded by the bytes left (each element
 * takes at least one byte: a 5-byte array32 header cannot claim 4 billion elements); depth,
 * string map keys without NUL, UTF-8 strings, no ext types, no trailing bytes. It counts the
 * nodes and string bytes of the tree, so the document is one allocation of exactly that size. */
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
            tp_codec_seterr(err, errlen, "truncated at byte %zu", pos);
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
                tp_codec_seterr(err, errlen, "invalid type byte 0xc1 at byte %zu", pos - 1);
                return TP_EINVAL;
            default: /* 0xc7-0xc9, 0xd4-0xd8 */
                tp_codec_seterr(err, errlen, "ext type not supported at byte %zu", pos - 1);
                return TP_EINVAL;
            }
            if (hdr > 0) {
                if (rem < hdr) {
                    tp_codec_seterr(err, errlen, "truncated at byte %zu", pos);
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
            tp_codec_seterr(err, errlen, "map key is not a string at byte %zu", pos - 1 - hdr);
            return TP_EINVAL;
        }
        if (payload > rem) {
            tp_codec_seterr(err, errlen, "declared length %" PRIu64 " beyond the data at byte %zu",
                            payload, pos);
            return TP_EINVAL;
        }
        (*nodes)++;
        if (str || (c >= 0xc4 && c <= 0xc6)) {
            const char *s = (const char *)p + pos;
            if (is_key && memchr(s, '\0', payload) != NULL) {
                tp_codec_seterr(err, errlen, "NUL byte in map key at byte %zu", pos);
                return TP_EINVAL;
            }
            if (str && !tp_codec_utf8_valid(s, payload)) {
                tp_codec_seterr(err, errlen, "invalid UTF-8 in string at byte %zu", pos);
                return TP_EINVAL;
            }
            *bytes += payload + 1;
        }
        pos += payload;

        if (container) {
            if (depth == TP_DOC_MAX_DEPTH) {
                tp_codec_seterr(err, errlen, "nesting deeper than %d", TP_DOC_MAX_DEPTH);
                return TP_EINVAL;
            }
            uint64_t items = map ? 2 * count : count;
            if (items > len - pos) {
                tp_codec_seterr(err, errlen,
                                "declared count %" PRIu64 " beyond the data at byte %zu", count,
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
        tp_codec_seterr(err, errlen, "%zu trailing bytes after the value", len - pos);
        return TP_EINVAL;
    }
    return 0;
}

/* Reads the item at p[*pos] into `out`, its containers' items into nodes taken from `b`, and
 * moves *pos past it. Only for a document msgpack_scan accepted: every length is within the
 * data, the depth is bounded, there are no ext types. The types are msgpack-c's reading of the
 * same bytes: an unsigned encoding above INT64_MAX is a UINT, every other integer an INT; a
 * float32 is widened to a double. */
static void build(struct tp_codec_build *b, struct tp_val *out, const unsigned char *p, size_t *pos)
{
    unsigned char c = p[(*pos)++];
    uint64_t n = 0; /* str/bin: bytes; array: elements; map: pairs */
    enum tp_val_type t;
    if (c <= 0x7f) {
        out->type = TP_VAL_INT;
        out->v.i = c;
        return;
    }
    if (c >= 0xe0) {
        out->type = TP_VAL_INT;
        out->v.i = (int8_t)c;
        return;
    }
    if (c <= 0x8f) {
        t = TP_VAL_MAP;
        n = c & 0x0f;
    } else if (c <= 0x9f) {
        t = TP_VAL_ARRAY;
        n = c & 0x0f;
    } else if (c <= 0xbf) {
        t = TP_VAL_STR;
        n = c & 0x1f;
    } else {
        static const unsigned char hdr[32] = {
            [0x04] = 1, [0x05] = 2, [0x06] = 4, [0x0a] = 4, [0x0b] = 8, [0x0c] = 1, [0x0d] = 2,
            [0x0e] = 4, [0x0f] = 8, [0x10] = 1, [0x11] = 2, [0x12] = 4, [0x13] = 8, [0x19] = 1,
            [0x1a] = 2, [0x1b] = 4, [0x1c] = 2, [0x1d] = 4, [0x1e] = 2, [0x1f] = 4};
        size_t k = hdr[c - 0xc0];
        uint64_t x = be(p + *pos, k);
        *pos += k;
        switch (c) {
        case 0xc0:
            out->type = TP_VAL_NULL;
            return;
        case 0xc2:
        case 0xc3:
            out->type = TP_VAL_BOOL;
            out->v.b = c == 0xc3;
            return;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            if (x <= INT64_MAX) {
                out->type = TP_VAL_INT;
                out->v.i = (int64_t)x;
            } else {
                out->type = TP_VAL_UINT;
                out->v.u = x;
            }
            return;
        case 0xd0:
            out->type = TP_VAL_INT;
            out->v.i = (int8_t)x;
            return;
        case 0xd1:
            out->type = TP_VAL_INT;
            out->v.i = (int16_t)x;
            return;
        case 0xd2:
            out->type = TP_VAL_INT;
            out->v.i = (int32_t)x;
            return;
        case 0xd3:
            out->type = TP_VAL_INT;
            out->v.i = (int64_t)x;
            return;
        case 0xca: {
            uint32_t bits = (uint32_t)x;
            float f;
            memcpy(&f, &bits, sizeof(f));
            out->type = TP_VAL_FLOAT;
            out->v.d = f;
            return;
        }
        case 0xcb:
            out->type = TP_VAL_FLOAT;
            memcpy(&out->v.d, &x, sizeof(out->v.d));
            return;
        case 0xd9:
        case 0xda:
        case 0xdb:
            t = TP_VAL_STR;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            t = TP_VAL_BIN;
            break;
        case 0xdc:
        case 0xdd:
            t = TP_VAL_ARRAY;
            break;
        case 0xde:
        case 0xdf:
            t = TP_VAL_MAP;
            break;
        default: /* 0xc1 and ext: refused by msgpack_scan */
            TP_ASSERT(!"unexpected msgpack type");
            return;
        }
        n = x;
    }
    if (t == TP_VAL_STR || t == TP_VAL_BIN) {
        tp_codec_set_str(b, out, t, (const char *)p + *pos, (size_t)n);
        *pos += (size_t)n;
        return;
    }
    out->type = t;
    out->n = (size_t)n;
    size_t items = t == TP_VAL_MAP ? 2 * (size_t)n : (size_t)n;
    out->v.kids = tp_codec_take_nodes(b, items);
    for (size_t i = 0; i < items; i++)
        build(b, &out->v.kids[i], p, pos);
}

/* Depth-first search for a map with a duplicate key (depth bounded by the scan). */
static bool find_dup(const struct tp_val *v)
{
    if (v->type != TP_VAL_ARRAY && v->type != TP_VAL_MAP)
        return false;
    if (v->type == TP_VAL_MAP && tp_codec_has_dup_keys(v))
        return true;
    size_t step = v->type == TP_VAL_MAP ? 2 : 1, off = v->type == TP_VAL_MAP ? 1 : 0;
    for (size_t i = 0; i < v->n; i++)
        if (find_dup(&v->v.kids[i * step + off]))
            return true;
    return false;
}

int tp_codec_parse_msgpack(const char *p, size_t len, struct tp_doc **out, char *err, size_t errlen)
{
    size_t nodes, bytes;
    int rc = msgpack_scan((const unsigned char *)p, len, &nodes, &bytes, err, errlen);
    if (rc != 0)
        return rc;
    struct tp_codec_build b;
    struct tp_doc *doc = tp_codec_doc_alloc(nodes, bytes, &b);
    size_t pos = 0;
    build(&b, tp_codec_take_nodes(&b, 1), (const unsigned char *)p, &pos);
    TP_ASSERT(pos == len && b.node == b.node_end && b.str == b.str_end);
    if (find_dup(doc->root)) {
        free(doc);
        tp_codec_seterr(err, errlen, "duplicate map key");
        return TP_EINVAL;
    }
    *out = doc;
    return 0;
}
