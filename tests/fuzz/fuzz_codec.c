/*
 * libFuzzer target for the wire codec (src/base/codec_*.c). For each input:
 *  1. parse it as JSON and as MessagePack; whatever parses is re-emitted with the writer in the
 *     same format, which must parse again and re-emit to the very same bytes (determinism);
 *  2. a JSON doc converted to MessagePack and back must give the same JSON bytes; a MessagePack
 *     doc converted to JSON must parse, unless it holds a uint above INT64_MAX (TP_ETOOBIG);
 *  3. the input as a string value: JSON-escaped, it must always parse, and give back exactly the
 *     input whenever the input is valid UTF-8 (MessagePack str parsing is the UTF-8 oracle).
 * Build (see the codec report / tests/fuzz/meson.build):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude \
 *     tests/fuzz/fuzz_codec.c src/base/codec_*.c src/base/common.c src/base/buf.c src/base/log.c \
 *     -ljansson -lmsgpackc -lm -o fuzz_codec
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void check_doc(enum tp_fmt fmt, const uint8_t *data, size_t size)
{
    struct tp_doc *d = tp_doc_parse(fmt, data, size, NULL, 0);
    if (d == NULL)
        return;
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
