/*
 * Internals of the wire codec shared by its files (private to module base/codec):
 * codec_write.c (the writer), codec_value.c (the tree, the document API, value access),
 * codec_json.c (jansson reader) and codec_msgpack.c (MessagePack reader, msgpack-c item packer).
 *
 * A parsed document is built in two passes by each reader: count the nodes and string bytes,
 * then fill one allocation through a bump allocator (struct tp_codec_build).
 */
#ifndef TP_CODEC_INTERNAL_H
#define TP_CODEC_INTERNAL_H

#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tp_buf;

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
struct tp_codec_build {
    struct tp_val *node, *node_end;
    char *str, *str_end;
};

/** A doc with room for `nodes` values and `strbytes` string bytes; `b` fills it. Its root is
 * the first node taken (NULL when nodes is 0). The caller frees it with tp_doc_free. */
struct tp_doc *tp_codec_doc_alloc(size_t nodes, size_t strbytes, struct tp_codec_build *b);

/* Inline: called once per value by both readers. */
static inline struct tp_val *tp_codec_take_nodes(struct tp_codec_build *b, size_t n)
{
    TP_ASSERT((size_t)(b->node_end - b->node) >= n);
    struct tp_val *v = b->node;
    b->node += n;
    return v;
}

static inline void tp_codec_set_str(struct tp_codec_build *b, struct tp_val *v, enum tp_val_type t,
                                    const char *p, size_t n)
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

/** Formats a reader's error message into err[errlen] (no-op when err is NULL or errlen 0). */
void tp_codec_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** True when map `m` has two equal keys. */
bool tp_codec_has_dup_keys(const struct tp_val *m);
/** True when p[n] is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, ≤ U+10FFFF). */
bool tp_codec_utf8_valid(const char *p, size_t n);

/* --- Readers: 0 and *out (a new doc), or TP_EINVAL / TP_ETOOBIG / TP_ENOMEM with `err` set --- */

/** JSON through jansson (codec_json.c). */
int tp_codec_parse_json(const char *p, size_t len, struct tp_doc **out, char *err, size_t errlen);
/** MessagePack through a checking pre-scan and one building pass (codec_msgpack.c). */
int tp_codec_parse_msgpack(const char *p, size_t len, struct tp_doc **out, char *err,
                           size_t errlen);

/* --- MessagePack items for the writer (codec_msgpack.c): each appends one to `out` --- */

/** A map header of n pairs. */
void tp_codec_mp_map(struct tp_buf *out, size_t n);
/** An array header of n elements. */
void tp_codec_mp_array(struct tp_buf *out, size_t n);
/** A str of n bytes. */
void tp_codec_mp_str(struct tp_buf *out, const char *s, size_t n);
/** A bin of n bytes. */
void tp_codec_mp_bin(struct tp_buf *out, const void *p, size_t n);
/** A signed integer in its smallest encoding. */
void tp_codec_mp_int(struct tp_buf *out, int64_t v);
/** The same item through msgpack-c's packer (test_codec compares the two). */
void tp_codec_mp_int_packer(struct tp_buf *out, int64_t v);
/** An unsigned integer in its smallest encoding. */
void tp_codec_mp_uint(struct tp_buf *out, uint64_t v);
/** A float64. */
void tp_codec_mp_double(struct tp_buf *out, double v);
/** true or false. */
void tp_codec_mp_bool(struct tp_buf *out, bool v);
/** nil. */
void tp_codec_mp_nil(struct tp_buf *out);

#endif
