/*
 * libFuzzer target for the wire codec (src/base/codec_*.c). For each input:
 *  1. parse it as JSON and as MessagePack; whatever parses is re-emitted with the writer in the
 *     same format, which must parse again and re-emit to the very same bytes (determinism);
 *  2. a JSON doc converted to MessagePack and back must give the same JSON bytes; a MessagePack
 *     doc converted to JSON must parse, unless it holds a uint above INT64_MAX (TP_ETOOBIG);
 *  3. the input as a string value: JSON-escaped, it must always parse, and give back exactly the
 *     input whenever the input is valid UTF-8 (MessagePack str parsing is the UTF-8 oracle);
 *  4. a MessagePack doc the reader accepts is the tree msgpack-c's unpacker reads from the same
 *     bytes (the reader builds it itself; an unsigned value above INT64_MAX is its one UINT).
 * Build (see the codec report / tests/fuzz/meson.build):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude \
 *     tests/fuzz/fuzz_codec.c src/base/codec_*.c src/base/common.c src/base/buf.c src/base/log.c \
 *     -ljansson -lmsgpackc -lm -o fuzz_codec
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_codec: check failed: %s (line %d)\n", #c, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void emit(const struct tp_val *v, enum tp_fmt fmt, struct tp_buf *out)
{
    struct tp_wr w;
    tp_buf_reset(out);
    tp_wr_init(&w, out, fmt);
    tp_wr_val(&w, v);
    CHECK(tp_wr_done(&w));
}

static bool has_big_uint(const struct tp_val *v)
{
    enum tp_val_type t = tp_val_type(v);
    if (t == TP_VAL_UINT)
        return true;
    if (t == TP_VAL_ARRAY || t == TP_VAL_MAP)
        for (size_t i = 0; i < tp_val_len(v); i++)
            if (has_big_uint(tp_val_at(v, i)))
                return true;
    return false;
}

static struct tp_doc *must_parse(enum tp_fmt fmt, const struct tp_buf *b)
{
    char err[160];
    struct tp_doc *d = tp_doc_parse(fmt, tp_buf_ptr(b), tp_buf_size(b), err, sizeof err);
    if (d == NULL) {
        fprintf(stderr, "fuzz_codec: re-parse failed: %s\n%.*s\n", err, (int)tp_buf_size(b),
                tp_buf_ptr(b));
        abort();
    }
    return d;
}

static bool same(const struct tp_buf *a, const struct tp_buf *b)
{
    return tp_buf_size(a) == tp_buf_size(b) &&
           memcmp(tp_buf_ptr(a), tp_buf_ptr(b), tp_buf_size(a)) == 0;
}

/* True when `v` is what msgpack-c read as `o` (see 4. above). */
static bool same_as_msgpack_c(const struct tp_val *v, const msgpack_object *o)
{
    size_t n;
    const char *s;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return tp_val_type(v) == TP_VAL_NULL;
    case MSGPACK_OBJECT_BOOLEAN:
        return tp_val_type(v) == TP_VAL_BOOL && tp_val_bool(v) == o->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return tp_val_type(v) == TP_VAL_UINT && tp_val_uint(v) == o->via.u64;
        return tp_val_type(v) == TP_VAL_INT && tp_val_int(v) == (int64_t)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return tp_val_type(v) == TP_VAL_INT && tp_val_int(v) == o->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        double d = tp_val_double(v);
        return tp_val_type(v) == TP_VAL_FLOAT && memcmp(&d, &o->via.f64, sizeof(d)) == 0;
    }
    case MSGPACK_OBJECT_STR:
        s = tp_val_str(v, &n);
        return tp_val_type(v) == TP_VAL_STR && n == o->via.str.size &&
               memcmp(s, o->via.str.ptr, n) == 0 && s[n] == '\0';
    case MSGPACK_OBJECT_BIN:
        s = tp_val_str(v, &n);
        return tp_val_type(v) == TP_VAL_BIN && n == o->via.bin.size &&
               (n == 0 || memcmp(s, o->via.bin.ptr, n) == 0);
    case MSGPACK_OBJECT_ARRAY:
        if (tp_val_type(v) != TP_VAL_ARRAY || tp_val_len(v) != o->via.array.size)
            return false;
        for (size_t i = 0; i < o->via.array.size; i++)
            if (!same_as_msgpack_c(tp_val_at(v, i), &o->via.array.ptr[i]))
                return false;
        return true;
    case MSGPACK_OBJECT_MAP:
        if (tp_val_type(v) != TP_VAL_MAP || tp_val_len(v) != o->via.map.size)
            return false;
        for (size_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            s = tp_val_key_at(v, i, &n);
            if (k->type != MSGPACK_OBJECT_STR || n != k->via.str.size ||
                memcmp(s, k->via.str.ptr, n) != 0 ||
                !same_as_msgpack_c(tp_val_at(v, i), &o->via.map.ptr[i].val))
                return false;
        }
        return true;
    default:
        return false;
    }
}

static void check_msgpack_c(const struct tp_doc *d, const uint8_t *data, size_t size)
{
    msgpack_zone zone;
    CHECK(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    msgpack_object obj;
    size_t off = 0;
    CHECK(msgpack_unpack((const char *)data, size, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == size && same_as_msgpack_c(tp_doc_root(d), &obj));
    msgpack_zone_destroy(&zone);
}

static void check_doc(enum tp_fmt fmt, const uint8_t *data, size_t size)
{
    struct tp_doc *d = tp_doc_parse(fmt, data, size, NULL, 0);
    if (d == NULL)
        return;
    if (fmt == TP_FMT_MSGPACK)
        check_msgpack_c(d, data, size);
    struct tp_buf b1, b2, bx;
    tp_buf_init(&b1);
    tp_buf_init(&b2);
    tp_buf_init(&bx);

    emit(tp_doc_root(d), fmt, &b1);
    struct tp_doc *d2 = must_parse(fmt, &b1);
    emit(tp_doc_root(d2), fmt, &b2);
    CHECK(same(&b1, &b2));
    tp_doc_free(d2);

    enum tp_fmt other = fmt == TP_FMT_JSON ? TP_FMT_MSGPACK : TP_FMT_JSON;
    emit(tp_doc_root(d), other, &bx);
    if (fmt == TP_FMT_JSON) {
        struct tp_doc *d3 = must_parse(other, &bx);
        emit(tp_doc_root(d3), fmt, &b2);
        CHECK(same(&b1, &b2));
        tp_doc_free(d3);
    } else {
        struct tp_doc *d3;
        int rc = tp_doc_parse_ex(other, tp_buf_ptr(&bx), tp_buf_size(&bx), SIZE_MAX, &d3, NULL, 0);
        if (has_big_uint(tp_doc_root(d)))
            CHECK(rc == TP_ETOOBIG);
        else
            CHECK(rc == 0);
        tp_doc_free(d3);
    }
    tp_buf_deinit(&b1);
    tp_buf_deinit(&b2);
    tp_buf_deinit(&bx);
    tp_doc_free(d);
}

static void check_string(const uint8_t *data, size_t size)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_strn(&w, (const char *)data, size);
    struct tp_doc *mp = tp_doc_parse(TP_FMT_MSGPACK, tp_buf_ptr(&b), tp_buf_size(&b), NULL, 0);
    bool utf8 = mp != NULL;
    tp_doc_free(mp);

    tp_buf_reset(&b);
    tp_wr_init(&w, &b, TP_FMT_JSON);
    tp_wr_strn(&w, (const char *)data, size);
    struct tp_doc *d = must_parse(TP_FMT_JSON, &b);
    size_t n;
    const char *s = tp_val_str(tp_doc_root(d), &n);
    CHECK(s != NULL && s[n] == '\0');
    if (utf8)
        CHECK(n == size && memcmp(s, data, size) == 0);
    tp_doc_free(d);
    tp_buf_deinit(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_doc(TP_FMT_JSON, data, size);
    check_doc(TP_FMT_MSGPACK, data, size);
    if (size <= 4096)
        check_string(data, size);
    return 0;
}
