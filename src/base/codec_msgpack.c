/*
 * Wire codec, MessagePack (see include/tickpool/base/codec.h): the reader (a bounding pre-scan,
 * msgpack-c's unpacker, then a copy into one tp_doc allocation) and the item packer the writer
 * (codec_write.c) uses. The only file that includes msgpack-c.
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

static int pack_write(void *data, const char *buf, size_t len)
{
    tp_buf_append(data, buf, len);
    return 0;
}

/* msgpack_packer is two pointers; building one per call keeps msgpack types out of headers. */
static inline msgpack_packer packer(struct tp_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, pack_write);
    return pk;
}

void tp_codec_mp_map(struct tp_buf *out, size_t n)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_map(&pk, n);
}

void tp_codec_mp_array(struct tp_buf *out, size_t n)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_array(&pk, n);
}

void tp_codec_mp_str(struct tp_buf *out, const char *s, size_t n)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_str_with_body(&pk, s, n);
}

void tp_codec_mp_bin(struct tp_buf *out, const void *p, size_t n)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_bin_with_body(&pk, p, n);
}

void tp_codec_mp_int(struct tp_buf *out, int64_t v)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_int64(&pk, v);
}

void tp_codec_mp_uint(struct tp_buf *out, uint64_t v)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_uint64(&pk, v);
}

void tp_codec_mp_double(struct tp_buf *out, double v)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_double(&pk, v);
}

void tp_codec_mp_bool(struct tp_buf *out, bool v)
{
    msgpack_packer pk = packer(out);
    if (v)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
}

void tp_codec_mp_nil(struct tp_buf *out)
{
    msgpack_packer pk = packer(out);
    msgpack_pack_nil(&pk);
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

static void msgpack_fill(struct tp_codec_build *b, struct tp_val *out, const msgpack_object *o)
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
        tp_codec_set_str(b, out, TP_VAL_STR, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        tp_codec_set_str(b, out, TP_VAL_BIN, o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        out->type = TP_VAL_ARRAY;
        out->n = o->via.array.size;
        out->v.kids = tp_codec_take_nodes(b, out->n);
        for (size_t i = 0; i < out->n; i++)
            msgpack_fill(b, &out->v.kids[i], &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        out->type = TP_VAL_MAP;
        out->n = o->via.map.size;
        out->v.kids = tp_codec_take_nodes(b, 2 * out->n);
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
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        tp_codec_seterr(err, errlen, "out of memory");
        return TP_ENOMEM;
    }
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(p, len, &off, &zone, &obj);
    if (ur != MSGPACK_UNPACK_SUCCESS) { /* the scan accepted it: should not happen */
        msgpack_zone_destroy(&zone);
        tp_codec_seterr(err, errlen, "msgpack_unpack failed (%d)", (int)ur);
        return ur == MSGPACK_UNPACK_NOMEM_ERROR ? TP_ENOMEM : TP_EINVAL;
    }
    struct tp_codec_build b;
    struct tp_doc *doc = tp_codec_doc_alloc(nodes, bytes, &b);
    msgpack_fill(&b, tp_codec_take_nodes(&b, 1), &obj);
    TP_ASSERT(b.node == b.node_end && b.str == b.str_end);
    msgpack_zone_destroy(&zone);
    if (find_dup(doc->root)) {
        free(doc);
        tp_codec_seterr(err, errlen, "duplicate map key");
        return TP_EINVAL;
    }
    *out = doc;
    return 0;
}
