/*
 * Tests for the wire codec (src/base/codec_*.c): exact JSON and MessagePack bytes, round trips
 * of every type in both formats, the strict getters the bet path relies on (every stake class),
 * and hostile input (truncation, deep nesting, lying lengths, duplicates, trailing garbage, bad
 * UTF-8), including guard-page runs that fault on any read past the input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include "../../../src/base/codec_internal.h"

/* --- helpers --- */

/* Writes one value with `fn` in JSON and checks the exact text. */
#define EXPECT_JSON(expected, ...)                                                                 \
    do {                                                                                           \
        struct tp_buf b_;                                                                          \
        struct tp_wr w_;                                                                           \
        tp_buf_init(&b_);                                                                          \
        tp_wr_init(&w_, &b_, TP_FMT_JSON);                                                         \
        __VA_ARGS__;                                                                               \
        assert_true(tp_wr_done(&w_));                                                              \
        assert_int_equal(tp_buf_size(&b_), strlen(expected));                                      \
        assert_memory_equal(tp_buf_ptr(&b_), expected, strlen(expected));                          \
        tp_buf_deinit(&b_);                                                                        \
    } while (0)

static struct tp_doc *parse_ok(enum tp_fmt fmt, const void *p, size_t n)
{
    char err[128];
    struct tp_doc *d = tp_doc_parse(fmt, p, n, err, sizeof err);
    if (d == NULL)
        fail_msg("parse failed: %s", err);
    return d;
}

static int parse_rc(enum tp_fmt fmt, const void *p, size_t n)
{
    struct tp_doc *d;
    char err[128];
    int rc = tp_doc_parse_ex(fmt, p, n, TP_DOC_MAX_LEN, &d, err, sizeof err);
    if (rc == 0) {
        assert_non_null(d);
        tp_doc_free(d);
    } else {
        assert_null(d);
        assert_true(err[0] != '\0'); /* every failure says why */
    }
    return rc;
}

static int json_rc(const char *s)
{
    return parse_rc(TP_FMT_JSON, s, strlen(s));
}

/* Re-encodes the root of `d` and returns the bytes (caller frees the buffer). */
static void reemit(const struct tp_doc *d, enum tp_fmt fmt, struct tp_buf *out)
{
    struct tp_wr w;
    tp_buf_init(out);
    tp_wr_init(&w, out, fmt);
    tp_wr_val(&w, tp_doc_root(d));
    assert_true(tp_wr_done(&w));
}

/* --- JSON writer: exact bytes --- */

static void test_json_object_bytes(void **state)
{
    (void)state;
    EXPECT_JSON("{\"a\":1,\"b\":[true,false,null],\"c\":{},\"d\":[],\"e\":\"x\"}",
                tp_wr_map(&w_, 5), tp_wr_key(&w_, "a"), tp_wr_int(&w_, 1), tp_wr_key(&w_, "b"),
                tp_wr_array(&w_, 3), tp_wr_bool(&w_, true), tp_wr_bool(&w_, false), tp_wr_null(&w_),
                tp_wr_key(&w_, "c"), tp_wr_map(&w_, 0), tp_wr_key(&w_, "d"), tp_wr_array(&w_, 0),
                tp_wr_key(&w_, "e"), tp_wr_str(&w_, "x"));
    /* Nested containers closing together. */
    EXPECT_JSON("[[[1]],{\"k\":[2,{\"z\":-3}]}]", tp_wr_array(&w_, 2), tp_wr_array(&w_, 1),
                tp_wr_array(&w_, 1), tp_wr_int(&w_, 1), tp_wr_map(&w_, 1), tp_wr_key(&w_, "k"),
                tp_wr_array(&w_, 2), tp_wr_int(&w_, 2), tp_wr_map(&w_, 1), tp_wr_key(&w_, "z"),
                tp_wr_int(&w_, -3));
    EXPECT_JSON("-9223372036854775808", tp_wr_int(&w_, INT64_MIN));
    EXPECT_JSON("18446744073709551615", tp_wr_uint(&w_, UINT64_MAX));
    EXPECT_JSON("null", tp_wr_str(&w_, NULL));
    EXPECT_JSON("\"00ff10\"", tp_wr_bin(&w_, "\x00\xff\x10", 3));
    /* Raw splice counts as one value and gets its separators. */
    EXPECT_JSON("{\"r\":{\"pre\":1},\"n\":2}", tp_wr_map(&w_, 2), tp_wr_key(&w_, "r"),
                tp_wr_raw(&w_, "{\"pre\":1}", 9), tp_wr_key(&w_, "n"), tp_wr_int(&w_, 2));
}

static void test_json_string_escaping(void **state)
{
    (void)state;
    EXPECT_JSON("\"q\\\"b\\\\s/\"", tp_wr_str(&w_, "q\"b\\s/"));
    EXPECT_JSON("\"\\b\\f\\n\\r\\t\\u0001\\u001f\\u0000x\"",
                tp_wr_strn(&w_, "\b\f\n\r\t\x01\x1f\0x", 9));
    /* Valid UTF-8 (2, 3 and 4 bytes) passes through; DEL is not escaped. */
    EXPECT_JSON("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\"",
                tp_wr_str(&w_, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f"));
    /* Invalid UTF-8: each offending byte becomes U+FFFD. */
    EXPECT_JSON("\"a\xef\xbf\xbd"
                "b\"",
                tp_wr_str(&w_, "a\xff"
                               "b"));
    EXPECT_JSON("\"\xef\xbf\xbd\xef\xbf\xbd\"", tp_wr_str(&w_, "\xc0\xaf")); /* overlong '/' */
    EXPECT_JSON("\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"",
                tp_wr_str(&w_, "\xed\xa0\x80")); /* UTF-16 surrogate */
    EXPECT_JSON("\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"",
                tp_wr_str(&w_, "\xf4\x90\x80\x80"));                   /* above U+10FFFF */
    EXPECT_JSON("\"x\xef\xbf\xbd\"", tp_wr_strn(&w_, "x\xe2\x82", 2)); /* truncated */
    /* Keys are escaped the same way. */
    EXPECT_JSON("{\"a\\\"\\n\":1}", tp_wr_map(&w_, 1), tp_wr_key(&w_, "a\"\n"), tp_wr_int(&w_, 1));
}

static void test_json_doubles(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *s;
    } cases[] = {
        {1.5, "1.5"},
        {0.1, "0.1"},
        {1e300, "1e300"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {1.0, "1.0"},
        {100.0, "100.0"},
        {-2.25, "-2.25"},
        {1e-7, "1e-7"},
        {1e21, "1e21"},
        {123456789.125, "123456789.125"},
        {0.30000000000000004, "0.30000000000000004"},
        {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e308"},
        {1.94, "1.94"},
        {2.0, "2.0"},
        {12.5, "12.5"},
        {1e20, "100000000000000000000.0"},
        {123e18, "123000000000000000000.0"},
        {1e-6, "0.000001"},
        {-1.25e-5, "-0.0000125"},
        {1.5e-7, "1.5e-7"},
        {-1e300, "-1e300"},
        {4.35, "4.35"},
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        EXPECT_JSON(cases[i].s, tp_wr_double(&w_, cases[i].v));
        /* Every form reads back as the same float. */
        struct tp_doc *d = parse_ok(TP_FMT_JSON, cases[i].s, strlen(cases[i].s));
        assert_int_equal(tp_val_type(tp_doc_root(d)), TP_VAL_FLOAT);
        double back = tp_val_double(tp_doc_root(d));
        assert_memory_equal(&back, &cases[i].v, sizeof back); /* bitwise: keeps -0.0 */
        tp_doc_free(d);
    }
    EXPECT_JSON("[null,null,null]", tp_wr_array(&w_, 3), tp_wr_double(&w_, NAN),
                tp_wr_double(&w_, INFINITY), tp_wr_double(&w_, -INFINITY));
}

/* Misuse is a programming error: the writer aborts instead of emitting broken output. */
static void expect_abort(void (*fn)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fclose(stderr); /* keep the expected assertion message out of the test log */
        fn();
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

static void misuse_value_for_key(void)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_JSON);
    tp_wr_map(&w, 1);
    tp_wr_int(&w, 1);
}

static void misuse_key_in_array(void)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_array(&w, 1);
    tp_wr_key(&w, "k");
}

static void misuse_after_done(void)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_JSON);
    tp_wr_int(&w, 1);
    tp_wr_int(&w, 2);
}

static void misuse_too_deep(void)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_JSON);
    for (int i = 0; i <= TP_CODEC_MAX_DEPTH; i++)
        tp_wr_array(&w, 1);
}

static void test_writer_misuse(void **state)
{
    (void)state;
    expect_abort(misuse_value_for_key);
    expect_abort(misuse_key_in_array);
    expect_abort(misuse_after_done);
    expect_abort(misuse_too_deep);

    /* Not done while a container is open. */
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_JSON);
    assert_false(tp_wr_done(&w));
    tp_wr_map(&w, 1);
    tp_wr_key(&w, "a");
    assert_false(tp_wr_done(&w));
    tp_wr_int(&w, 1);
    assert_true(tp_wr_done(&w));
    tp_buf_deinit(&b);
}

/* --- MessagePack writer: exact bytes per the spec --- */

static void expect_mp(struct tp_buf *b, const char *hex)
{
    size_t n = strlen(hex) / 2;
    unsigned char want[256];
    assert_true(n <= sizeof want);
    for (size_t i = 0; i < n; i++) {
        unsigned x;
        sscanf(hex + 2 * i, "%2x", &x);
        want[i] = (unsigned char)x;
    }
    assert_int_equal(tp_buf_size(b), n);
    assert_memory_equal(tp_buf_ptr(b), want, n);
    tp_buf_reset(b);
}

static void test_msgpack_bytes(void **state)
{
    (void)state;
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);

    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_map(&w, 2);
    tp_wr_key(&w, "t");
    tp_wr_str(&w, "tick");
    tp_wr_key(&w, "p");
    tp_wr_int(&w, 1);
    assert_true(tp_wr_done(&w));
    expect_mp(&b, "82a174a47469636ba17001");

    /* Smallest int encodings: fixint, -fixint, uint8, int8, uint16, int32, int64, uint64. */
    int64_t ints[] = {127, -32, 200, -100, 1000, -40000, INT64_MIN};
    const char *hex[] = {"7f", "e0", "ccc8", "d09c", "cd03e8", "d2ffff63c0", "d38000000000000000"};
    for (size_t i = 0; i < TP_ARRAY_LEN(ints); i++) {
        tp_wr_init(&w, &b, TP_FMT_MSGPACK);
        tp_wr_int(&w, ints[i]);
        expect_mp(&b, hex[i]);
    }
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_uint(&w, UINT64_MAX);
    expect_mp(&b, "cfffffffffffffffff");

    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_array(&w, 5);
    tp_wr_null(&w);
    tp_wr_bool(&w, true);
    tp_wr_bool(&w, false);
    tp_wr_double(&w, 1.5);
    tp_wr_bin(&w, "\x01\x02", 2);
    expect_mp(&b, "95c0c3c2cb3ff8000000000000c4020102");

    /* str8 from 32 bytes on; empty containers. */
    char s32[33];
    memset(s32, 'a', 32);
    s32[32] = '\0';
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_str(&w, s32);
    assert_int_equal(tp_buf_size(&b), 34);
    assert_memory_equal(tp_buf_ptr(&b), "\xd9\x20", 2);
    tp_buf_reset(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_array(&w, 2);
    tp_wr_map(&w, 0);
    tp_wr_array(&w, 0);
    assert_true(tp_wr_done(&w));
    expect_mp(&b, "928090");

    /* A map of 16 pairs needs map16. */
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_map(&w, 16);
    for (int i = 0; i < 16; i++) {
        char k[4];
        snprintf(k, sizeof k, "%c", 'a' + i);
        tp_wr_key(&w, k);
        tp_wr_int(&w, i);
    }
    assert_true(tp_wr_done(&w));
    assert_memory_equal(tp_buf_ptr(&b), "\xde\x00\x10", 3);
    tp_buf_deinit(&b);
}

/* --- Round trips --- */

/* Writes a document holding every type, several levels deep. */
static void write_all(struct tp_wr *w)
{
    tp_wr_map(w, 12);
    tp_wr_key(w, "null");
    tp_wr_null(w);
    tp_wr_key(w, "t");
    tp_wr_bool(w, true);
    tp_wr_key(w, "f");
    tp_wr_bool(w, false);
    tp_wr_key(w, "int");
    tp_wr_int(w, -1234567890123);
    tp_wr_key(w, "max");
    tp_wr_int(w, INT64_MAX);
    tp_wr_key(w, "min");
    tp_wr_int(w, INT64_MIN);
    tp_wr_key(w, "dbl");
    tp_wr_double(w, 0.1);
    tp_wr_key(w, "str");
    tp_wr_strn(w, "h\xc3\xa9\"\\\n\0z", 8);
    tp_wr_key(w, "empty");
    tp_wr_str(w, "");
    tp_wr_key(w, "arr");
    tp_wr_array(w, 3);
    tp_wr_int(w, 1);
    tp_wr_array(w, 1);
    tp_wr_map(w, 1);
    tp_wr_key(w, "deep");
    tp_wr_array(w, 2);
    tp_wr_double(w, -0.0);
    tp_wr_str(w, "x");
    tp_wr_map(w, 0);
    tp_wr_key(w, "ea");
    tp_wr_array(w, 0);
    tp_wr_key(w, "\xe2\x82\xac");
    tp_wr_int(w, 0);
}

static void check_all(const struct tp_val *r)
{
    assert_int_equal(tp_val_type(r), TP_VAL_MAP);
    assert_int_equal(tp_val_len(r), 12);
    assert_int_equal(tp_val_type(tp_val_get(r, "null")), TP_VAL_NULL);
    assert_non_null(tp_val_get(r, "null"));
    assert_true(tp_val_bool(tp_val_get(r, "t")));
    assert_int_equal(tp_val_type(tp_val_get(r, "f")), TP_VAL_BOOL);
    assert_false(tp_val_bool(tp_val_get(r, "f")));
    int64_t i;
    assert_int_equal(tp_val_get_int(r, "int", &i), 0);
    assert_true(i == -1234567890123);
    assert_int_equal(tp_val_get_int(r, "max", &i), 0);
    assert_true(i == INT64_MAX);
    assert_int_equal(tp_val_get_int(r, "min", &i), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(tp_val_type(tp_val_get(r, "dbl")), TP_VAL_FLOAT);
    assert_true(tp_val_double(tp_val_get(r, "dbl")) == 0.1);
    size_t n;
    const char *s = tp_val_str(tp_val_get(r, "str"), &n);
    assert_int_equal(n, 8);
    assert_memory_equal(s, "h\xc3\xa9\"\\\n\0z", 9); /* includes the terminating NUL */
    const char *cs;
    assert_int_equal(tp_val_get_str(r, "str", &cs, NULL), TP_EINVAL); /* NUL inside */
    assert_int_equal(tp_val_get_str(r, "empty", &cs, &n), 0);
    assert_int_equal(n, 0);
    assert_string_equal(cs, "");
    const struct tp_val *arr = tp_val_get(r, "arr");
    assert_int_equal(tp_val_len(arr), 3);
    assert_int_equal(tp_val_int(tp_val_at(arr, 0)), 1);
    assert_null(tp_val_at(arr, 3));
    const struct tp_val *deep = tp_val_get(tp_val_at(tp_val_at(arr, 1), 0), "deep");
    assert_int_equal(tp_val_type(deep), TP_VAL_ARRAY);
    double z = tp_val_double(tp_val_at(deep, 0));
    assert_true(z == 0.0 && signbit(z));
    assert_string_equal(tp_val_str(tp_val_at(deep, 1), NULL), "x");
    assert_int_equal(tp_val_type(tp_val_at(arr, 2)), TP_VAL_MAP);
    assert_int_equal(tp_val_len(tp_val_at(arr, 2)), 0);
    assert_int_equal(tp_val_len(tp_val_get(r, "ea")), 0);
    assert_int_equal(tp_val_type(tp_val_get(r, "ea")), TP_VAL_ARRAY);
    /* Key order is document order. */
    assert_string_equal(tp_val_key_at(r, 0, NULL), "null");
    assert_string_equal(tp_val_key_at(r, 11, &n), "\xe2\x82\xac");
    assert_int_equal(n, 3);
    assert_null(tp_val_key_at(r, 12, NULL));
    assert_null(tp_val_get(r, "nope"));
}

static void round_trip(enum tp_fmt fmt)
{
    struct tp_buf b, b2, b3;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, fmt);
    write_all(&w);
    assert_true(tp_wr_done(&w));
    struct tp_doc *d = parse_ok(fmt, tp_buf_ptr(&b), tp_buf_size(&b));
    check_all(tp_doc_root(d));
    /* Re-emitting the tree gives the same bytes (determinism). */
    reemit(d, fmt, &b2);
    assert_int_equal(tp_buf_size(&b2), tp_buf_size(&b));
    assert_memory_equal(tp_buf_ptr(&b2), tp_buf_ptr(&b), tp_buf_size(&b));
    /* Converting to the other format and back keeps every value. */
    enum tp_fmt other = fmt == TP_FMT_JSON ? TP_FMT_MSGPACK : TP_FMT_JSON;
    reemit(d, other, &b3);
    struct tp_doc *d2 = parse_ok(other, tp_buf_ptr(&b3), tp_buf_size(&b3));
    check_all(tp_doc_root(d2));
    tp_doc_free(d2);
    tp_doc_free(d);
    tp_buf_deinit(&b);
    tp_buf_deinit(&b2);
    tp_buf_deinit(&b3);
}

static void test_round_trip_json(void **state)
{
    (void)state;
    round_trip(TP_FMT_JSON);
}

static void test_round_trip_msgpack(void **state)
{
    (void)state;
    round_trip(TP_FMT_MSGPACK);
}

/* MessagePack-only types: bin, uint above INT64_MAX, float32. */
static void test_msgpack_only_types(void **state)
{
    (void)state;
    /* {"b": bin[00 ff], "u": 2^64-1, "f": float32 1.5, "n": int8 -1, "p": uint8 5} */
    static const unsigned char in[] = {0x85, 0xa1, 'b',  0xc4, 0x02, 0x00, 0xff, 0xa1, 'u',
                                       0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xa1, 'f',  0xca, 0x3f, 0xc0, 0x00, 0x00, 0xa1, 'n',
                                       0xd0, 0xff, 0xa1, 'p',  0xcc, 0x05};
    struct tp_doc *d = parse_ok(TP_FMT_MSGPACK, in, sizeof in);
    const struct tp_val *r = tp_doc_root(d);
    size_t n;
    const struct tp_val *bin = tp_val_get(r, "b");
    assert_int_equal(tp_val_type(bin), TP_VAL_BIN);
    assert_memory_equal(tp_val_str(bin, &n), "\x00\xff", 2);
    assert_int_equal(n, 2);
    assert_int_equal(tp_val_type(tp_val_get(r, "u")), TP_VAL_UINT);
    assert_true(tp_val_uint(tp_val_get(r, "u")) == UINT64_MAX);
    int64_t i;
    assert_int_equal(tp_val_get_int(r, "u", &i), TP_ETOOBIG);
    assert_int_equal(tp_val_type(tp_val_get(r, "f")), TP_VAL_FLOAT);
    assert_true(tp_val_double(tp_val_get(r, "f")) == 1.5);
    assert_int_equal(tp_val_get_int(r, "f", &i), TP_EINVAL);
    assert_int_equal(tp_val_get_int(r, "n", &i), 0);
    assert_int_equal(i, -1);
    assert_int_equal(tp_val_get_int(r, "p", &i), 0);
    assert_int_equal(i, 5);
    const char *s;
    assert_int_equal(tp_val_get_str(r, "b", &s, NULL), TP_EINVAL); /* bin is not a string */

    /* To JSON: bin as hex, uint as digits (which jansson then refuses as too big). */
    struct tp_buf b;
    reemit(d, TP_FMT_JSON, &b);
    const char *want = "{\"b\":\"00ff\",\"u\":18446744073709551615,\"f\":1.5,\"n\":-1,\"p\":5}";
    assert_int_equal(tp_buf_size(&b), strlen(want));
    assert_memory_equal(tp_buf_ptr(&b), want, strlen(want));
    assert_int_equal(parse_rc(TP_FMT_JSON, tp_buf_ptr(&b), tp_buf_size(&b)), TP_ETOOBIG);
    tp_buf_deinit(&b);
    tp_doc_free(d);
}

/* --- Strict getters: every stake class --- */

static int stake_json(const char *body, int64_t *out)
{
    struct tp_doc *d;
    int rc = tp_doc_parse_ex(TP_FMT_JSON, body, strlen(body), 1024, &d, NULL, 0);
    if (rc != 0)
        return rc;
    rc = tp_val_get_int(tp_doc_root(d), "stake", out);
    tp_doc_free(d);
    return rc;
}

static void test_stake_classes_json(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(stake_json("{\"stake\":100}", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(stake_json("{\"stake\":-5}", &v), 0); /* range is the caller's check */
    assert_int_equal(v, -5);
    assert_int_equal(stake_json("{\"stake\":0}", &v), 0);
    assert_int_equal(stake_json("{\"stake\":9223372036854775807}", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(stake_json("{\"stake\":-9223372036854775808}", &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(stake_json("{\"stake\":1.0}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":1e2}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":1E2}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":100.5}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":1e30}", &v), TP_EINVAL); /* a float literal */
    assert_int_equal(stake_json("{\"stake\":\"100\"}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":true}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":null}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":[100]}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":{}}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stakes\":100}", &v), TP_ENOTFOUND);
    assert_int_equal(stake_json("[100]", &v), TP_EINVAL); /* root not a map */
    /* Out of range: jansson refuses the whole document; a distinct code. */
    assert_int_equal(stake_json("{\"stake\":9223372036854775808}", &v), TP_ETOOBIG);
    assert_int_equal(stake_json("{\"stake\":-9223372036854775809}", &v), TP_ETOOBIG);
    assert_int_equal(stake_json("{\"stake\":99999999999999999999}", &v), TP_ETOOBIG);
    assert_int_equal(stake_json("{\"stake\":1e400}", &v), TP_ETOOBIG);
    /* Not JSON at all. */
    assert_int_equal(stake_json("{\"stake\":NaN}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":Infinity}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":-Infinity}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":0x10}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":+1}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":01}", &v), TP_EINVAL);
    assert_int_equal(stake_json("{\"stake\":100", &v), TP_EINVAL);
}

static int stake_mp(const unsigned char *p, size_t n, int64_t *out)
{
    struct tp_doc *d = parse_ok(TP_FMT_MSGPACK, p, n);
    int rc = tp_val_get_int(tp_doc_root(d), "stake", out);
    tp_doc_free(d);
    return rc;
}

#define MP_STAKE(...)                                                                              \
    (const unsigned char[]){0x81, 0xa5, 's', 't', 'a', 'k', 'e', __VA_ARGS__},                     \
        sizeof((const unsigned char[]){0x81, 0xa5, 's', 't', 'a', 'k', 'e', __VA_ARGS__})

static void test_stake_classes_msgpack(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(stake_mp(MP_STAKE(0x64), &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(stake_mp(MP_STAKE(0xcd, 0x03, 0xe8), &v), 0); /* uint16 1000 */
    assert_int_equal(v, 1000);
    assert_int_equal(stake_mp(MP_STAKE(0xfb), &v), 0); /* -5 */
    assert_int_equal(v, -5);
    assert_int_equal(stake_mp(MP_STAKE(0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), &v),
                     0);
    assert_true(v == INT64_MAX);
    assert_int_equal(stake_mp(MP_STAKE(0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0), &v), TP_ETOOBIG);
    /* float64 100.0 and float32 1.0: floats are never integers. */
    assert_int_equal(stake_mp(MP_STAKE(0xcb, 0x40, 0x59, 0, 0, 0, 0, 0, 0), &v), TP_EINVAL);
    assert_int_equal(stake_mp(MP_STAKE(0xca, 0x3f, 0x80, 0, 0), &v), TP_EINVAL);
    assert_int_equal(stake_mp(MP_STAKE(0xa3, '1', '0', '0'), &v), TP_EINVAL);
    assert_int_equal(stake_mp(MP_STAKE(0xc3), &v), TP_EINVAL);
    assert_int_equal(stake_mp(MP_STAKE(0xc0), &v), TP_EINVAL);
    assert_int_equal(stake_mp(MP_STAKE(0xc4, 0x01, 0x64), &v), TP_EINVAL); /* bin */
}

static void test_get_str_and_bool(void **state)
{
    (void)state;
    const char *j = "{\"k\":\"key-1\",\"n\":5,\"b\":true,\"z\":\"a\\u0000b\"}";
    struct tp_doc *d = parse_ok(TP_FMT_JSON, j, strlen(j));
    const struct tp_val *r = tp_doc_root(d);
    const char *s;
    size_t n;
    bool b;
    assert_int_equal(tp_val_get_str(r, "k", &s, &n), 0);
    assert_string_equal(s, "key-1");
    assert_int_equal(n, 5);
    assert_int_equal(tp_val_get_str(r, "n", &s, &n), TP_EINVAL);
    assert_int_equal(tp_val_get_str(r, "x", &s, &n), TP_ENOTFOUND);
    assert_int_equal(tp_val_get_str(r, "z", &s, &n), TP_EINVAL); /* NUL inside */
    assert_int_equal(tp_val_len(tp_val_get(r, "z")), 3);
    assert_int_equal(tp_val_get_bool(r, "b", &b), 0);
    assert_true(b);
    assert_int_equal(tp_val_get_bool(r, "n", &b), TP_EINVAL);
    assert_int_equal(tp_val_get_bool(r, "x", &b), TP_ENOTFOUND);
    assert_int_equal(tp_val_get_str(tp_val_get(r, "n"), "k", &s, &n), TP_EINVAL);
    assert_null(tp_val_get(NULL, "k"));
    assert_int_equal(tp_val_type(NULL), TP_VAL_NULL);
    tp_doc_free(d);
    tp_doc_free(NULL);
}

/* --- Hostile JSON --- */

static char *nest(const char *open, const char *mid, const char *close, int depth)
{
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *s = malloc(depth * (lo + lc) + lm + 1), *p = s;
    for (int i = 0; i < depth; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, mid, lm);
    p += lm;
    for (int i = 0; i < depth; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

static void test_json_hostile(void **state)
{
    (void)state;
    assert_int_equal(json_rc("{\"a\":1,\"a\":2}"), TP_EINVAL);       /* duplicate */
    assert_int_equal(json_rc("{\"a\":1,\"\\u0061\":2}"), TP_EINVAL); /* duplicate after decoding */
    assert_int_equal(json_rc("{\"a\":1} x"), TP_EINVAL);             /* trailing garbage */
    assert_int_equal(json_rc("{\"a\":1}{}"), TP_EINVAL);
    assert_int_equal(json_rc(" {\"a\":1}\r\n\t "), 0); /* whitespace is fine */
    assert_int_equal(json_rc(""), TP_EINVAL);
    assert_int_equal(json_rc("   "), TP_EINVAL);
    assert_int_equal(json_rc("{\"a\":\"\xff\"}"), TP_EINVAL);         /* invalid UTF-8 */
    assert_int_equal(json_rc("{\"a\":\"\xc0\xaf\"}"), TP_EINVAL);     /* overlong */
    assert_int_equal(json_rc("{\"a\":\"\xed\xa0\x80\"}"), TP_EINVAL); /* surrogate */
    assert_int_equal(json_rc("{\"\xfe\":1}"), TP_EINVAL);
    assert_int_equal(json_rc("{\"a\\u0000\":1}"), TP_EINVAL); /* NUL in key */
    assert_int_equal(json_rc("{\"a\":\"x\\u0000y\"}"), 0);    /* NUL in value is data */
    assert_int_equal(json_rc("{\"a\":\"\t\"}"), TP_EINVAL);   /* raw control char */
    assert_int_equal(json_rc("[1,]"), TP_EINVAL);
    assert_int_equal(json_rc("{'a':1}"), TP_EINVAL);
    assert_int_equal(json_rc("{\"a\":1,}"), TP_EINVAL);
    assert_int_equal(json_rc("\"unterminated"), TP_EINVAL);
    assert_int_equal(json_rc("\"\\ud800\""), TP_EINVAL); /* lone surrogate escape */
    assert_int_equal(json_rc("\"\\ud83d\\ude00\""), 0);  /* surrogate pair */
    assert_int_equal(json_rc("nan"), TP_EINVAL);
    assert_int_equal(json_rc("5"), 0); /* any top-level value */
    static const char with_nul[] = "{\"a\":1}\0";
    assert_int_equal(parse_rc(TP_FMT_JSON, with_nul, sizeof with_nul - 1), TP_EINVAL);

    /* Size limit given by the caller. */
    struct tp_doc *d;
    assert_int_equal(tp_doc_parse_ex(TP_FMT_JSON, "[1,2,3]", 7, 6, &d, NULL, 0), TP_ETOOBIG);
    assert_null(d);
    assert_int_equal(tp_doc_parse_ex(TP_FMT_JSON, "[1,2,3]", 7, 7, &d, NULL, 0), 0);
    tp_doc_free(d);

    /* Nesting: 32 levels fine, 33 and 1000 refused; brackets inside strings do not count. */
    char *s = nest("[", "1", "]", 32);
    assert_int_equal(json_rc(s), 0);
    free(s);
    s = nest("{\"k\":", "1", "}", 32);
    assert_int_equal(json_rc(s), 0);
    free(s);
    s = nest("[", "1", "]", 33);
    assert_int_equal(json_rc(s), TP_EINVAL);
    free(s);
    s = nest("[", "", "]", 1000);
    assert_int_equal(json_rc(s), TP_EINVAL);
    free(s);
    s = nest("{\"k\":", "null", "}", 1000);
    assert_int_equal(json_rc(s), TP_EINVAL);
    free(s);
    s = nest("[", "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[[[\"", "]", 2);
    assert_int_equal(json_rc(s), 0);
    free(s);
    s = nest("[", "", "]", 100000); /* deeper than jansson's own limit */
    assert_int_equal(json_rc(s), TP_EINVAL);
    free(s);

    char err[64] = "";
    assert_null(tp_doc_parse(TP_FMT_JSON, "{\"a\":1,\"a\":2}", 13, err, sizeof err));
    assert_true(strstr(err, "duplicate") != NULL);
    assert_null(tp_doc_parse(TP_FMT_JSON, "[", 1, NULL, 0)); /* err may be NULL */
}

/* --- Hostile MessagePack --- */

static int mp_rc(const void *p, size_t n)
{
    return parse_rc(TP_FMT_MSGPACK, p, n);
}

#define MP(...) (const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__})

static void test_msgpack_hostile(void **state)
{
    (void)state;
    /* Every strict prefix of a valid document is refused as truncated. */
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    write_all(&w);
    for (size_t n = 0; n < tp_buf_size(&b); n++)
        assert_int_equal(mp_rc(tp_buf_ptr(&b), n), TP_EINVAL);
    assert_int_equal(mp_rc(tp_buf_ptr(&b), tp_buf_size(&b)), 0);
    /* Trailing garbage. */
    tp_buf_append(&b, "\xc0", 1);
    assert_int_equal(mp_rc(tp_buf_ptr(&b), tp_buf_size(&b)), TP_EINVAL);
    tp_buf_deinit(&b);

    /* Huge declared lengths with short data. */
    assert_int_equal(mp_rc(MP(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01)), TP_EINVAL); /* array32 */
    assert_int_equal(mp_rc(MP(0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a', 0x01)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xdc, 0xff, 0xff)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xdb, 0xff, 0xff, 0xff, 0xff, 'a')), TP_EINVAL); /* str32 */
    assert_int_equal(mp_rc(MP(0xc6, 0x7f, 0xff, 0xff, 0xff, 'a')), TP_EINVAL); /* bin32 */
    assert_int_equal(mp_rc(MP(0xa5, 'a', 'b')), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0x92, 0x01)), TP_EINVAL); /* array of 2 with 1 element */
    assert_int_equal(mp_rc(MP(0xcb, 0x00, 0x00)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xda, 0x00)), TP_EINVAL);
    /* A count that fits the remaining bytes but runs out deeper down. */
    assert_int_equal(mp_rc(MP(0x93, 0xc0, 0xc0, 0x91)), TP_EINVAL);

    /* Map keys: strings only, no NUL, no duplicates. */
    assert_int_equal(mp_rc(MP(0x81, 0x01, 0x02)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0x81, 0xc4, 0x01, 'a', 0x02)), TP_EINVAL); /* bin key */
    assert_int_equal(mp_rc(MP(0x81, 0x90, 0x02)), TP_EINVAL);            /* array key */
    assert_int_equal(mp_rc(MP(0x81, 0xa2, 'a', 0x00, 0x02)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x02)), 0);
    assert_int_equal(mp_rc(MP(0x91, 0x82, 0xa0, 0x01, 0xa0, 0x02)), TP_EINVAL); /* nested dup */
    assert_int_equal(mp_rc(MP(0xa3, 'a', 0x00, 'b')), 0); /* NUL in a value string is data */

    /* Strings must be UTF-8; bin need not be. */
    assert_int_equal(mp_rc(MP(0xa1, 0xff)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xa2, 0xc0, 0xaf)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xc4, 0x01, 0xff)), 0);

    /* Reserved byte and ext types. */
    assert_int_equal(mp_rc(MP(0xc1)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xd4, 0x01, 0x00)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xc7, 0x01, 0x01, 0x00)), TP_EINVAL);
    assert_int_equal(mp_rc(MP(0xd6, 0xff, 0x00, 0x00, 0x00, 0x00)), TP_EINVAL); /* timestamp */
    assert_int_equal(mp_rc(NULL, 0), TP_EINVAL);

    /* Nesting: 32 fine (also through maps), 33 and 1000 refused, even if empty inside. */
    unsigned char deep[3000];
    memset(deep, 0x91, 31);
    deep[31] = 0x90;
    assert_int_equal(mp_rc(deep, 32), 0);
    memset(deep, 0x91, 32);
    deep[32] = 0x90;
    assert_int_equal(mp_rc(deep, 33), TP_EINVAL);
    memset(deep, 0x91, 999);
    deep[999] = 0x01;
    assert_int_equal(mp_rc(deep, 1000), TP_EINVAL);
    for (int i = 0; i < 31; i++) {
        deep[3 * i] = 0x81;
        deep[3 * i + 1] = 0xa1;
        deep[3 * i + 2] = 'k';
    }
    deep[93] = 0x80;
    assert_int_equal(mp_rc(deep, 94), 0);

    /* A big map with a duplicate far apart (sorted path of the duplicate check). */
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_map(&w, 1000);
    for (int i = 0; i < 1000; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i == 999 ? 3 : i);
        tp_wr_key(&w, k);
        tp_wr_int(&w, i);
    }
    assert_int_equal(mp_rc(tp_buf_ptr(&b), tp_buf_size(&b)), TP_EINVAL);
    tp_buf_deinit(&b);

    /* Size limit. */
    struct tp_doc *d;
    assert_int_equal(tp_doc_parse_ex(TP_FMT_MSGPACK, MP(0x92, 0x01, 0x02), 2, &d, NULL, 0),
                     TP_ETOOBIG);
}

/* --- Guard pages: the byte after the input is unmapped --- */

struct guarded {
    unsigned char *map;
    size_t maplen;
};

/* Copies `p` so that it ends exactly at a PROT_NONE page. */
static unsigned char *guard_copy(struct guarded *g, const void *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (n + page - 1) / page + 1;
    g->maplen = (data_pages + 1) * page;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    assert_int_equal(mprotect(g->map + data_pages * page, page, PROT_NONE), 0);
    unsigned char *dst = g->map + data_pages * page - n;
    memcpy(dst, p, n);
    return dst;
}

static void guard_free(struct guarded *g)
{
    munmap(g->map, g->maplen);
}

/* Parses every prefix of `p` from a guarded copy: any over-read faults the test. */
static void guard_prefixes(enum tp_fmt fmt, const char *p, size_t n, int full_rc)
{
    for (size_t k = 0; k <= n; k++) {
        struct guarded g;
        unsigned char *q = guard_copy(&g, p, k);
        struct tp_doc *d;
        int rc = tp_doc_parse_ex(fmt, q, k, TP_DOC_MAX_LEN, &d, NULL, 0);
        if (k == n)
            assert_int_equal(rc, full_rc);
        if (rc == 0) {
            struct tp_buf b;
            reemit(d, fmt, &b);
            tp_buf_deinit(&b);
            tp_doc_free(d);
        }
        guard_free(&g);
    }
}

static void test_guard_pages(void **state)
{
    (void)state;
    struct tp_buf b;
    struct tp_wr w;
    for (int f = 0; f < 2; f++) {
        enum tp_fmt fmt = f == 0 ? TP_FMT_JSON : TP_FMT_MSGPACK;
        tp_buf_init(&b);
        tp_wr_init(&w, &b, fmt);
        write_all(&w);
        guard_prefixes(fmt, tp_buf_ptr(&b), tp_buf_size(&b), 0);
        tp_buf_deinit(&b);
    }
    /* Numbers and literals that end exactly at the page end. */
    const char *json[] = {"12345",          "-1.5e10",
                          "true",           "null",
                          "\"abc\\u00e9\"", "[1,2",
                          "{\"a\"",         "9223372036854775808",
                          "1e400",          "\"\\ud83d\\ude00\"",
                          "\"\\u12"};
    for (size_t i = 0; i < TP_ARRAY_LEN(json); i++)
        guard_prefixes(TP_FMT_JSON, json[i], strlen(json[i]), json_rc(json[i]));
    static const char mp[] = "\xdd\xff\xff\xff\xff\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\xd9\x05"
                             "abcde\xdf\x00\x00\x00\x01\xa1k\xc4\x03xyz";
    guard_prefixes(TP_FMT_MSGPACK, mp, sizeof mp - 1, TP_EINVAL);
}

/* The hand-written integer encoding is msgpack-c's packer's, byte for byte: at every width's
 * boundaries, around every power of two, and for random values of every length; and a short
 * str has its fixstr header. */
static void test_msgpack_int_matches_packer(void **state)
{
    (void)state;
    int64_t vals[4096];
    size_t n = 0;
    for (int b = 0; b < 63; b++) {
        int64_t p = (int64_t)1 << b;
        int64_t around[] = {p - 1, p, p + 1, -p - 1, -p, -p + 1};
        for (size_t i = 0; i < TP_ARRAY_LEN(around); i++)
            vals[n++] = around[i];
    }
    vals[n++] = INT64_MAX;
    vals[n++] = INT64_MIN;
    vals[n++] = INT64_MIN + 1;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    while (n < TP_ARRAY_LEN(vals)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        vals[n] = (int64_t)(x >> (n % 64));
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        struct tp_buf want, got;
        tp_buf_init(&want);
        tp_buf_init(&got);
        tp_codec_mp_int_packer(&want, vals[i]);
        tp_codec_mp_int(&got, vals[i]);
        uint8_t raw[TP_CODEC_MSGPACK_INT_MAX];
        size_t len = tp_codec_msgpack_int(raw, vals[i]);
        assert_int_equal(tp_buf_size(&got), tp_buf_size(&want));
        assert_memory_equal(tp_buf_ptr(&got), tp_buf_ptr(&want), tp_buf_size(&want));
        assert_int_equal(len, tp_buf_size(&want));
        assert_memory_equal(raw, tp_buf_ptr(&want), len);
        int64_t back = 0;
        assert_int_equal(tp_codec_msgpack_read_int(raw, len, &back), len);
        assert_true(back == vals[i]);
        assert_int_equal(tp_codec_msgpack_read_int(raw, len - 1, &back), 0); /* truncated */
        tp_buf_deinit(&want);
        tp_buf_deinit(&got);
    }
    struct tp_buf b;
    tp_buf_init(&b);
    tp_codec_mp_str(&b, "", 0);
    tp_codec_mp_str(&b, "0123456789012345678901234567890", 31);
    tp_codec_mp_str(&b, "01234567890123456789012345678901", 32);
    const uint8_t *p = (const uint8_t *)tp_buf_ptr(&b);
    assert_int_equal(tp_buf_size(&b), 1 + 32 + 34);
    assert_int_equal(p[0], 0xa0);
    assert_int_equal(p[1], 0xbf);
    assert_int_equal(p[33], 0xd9); /* str 8 */
    assert_int_equal(p[34], 32);
    tp_buf_deinit(&b);
}

/* tp_codec_msgpack_read_int reads what the document reader reads as an INT, in every encoding
 * (not only the smallest), and nothing else: its UINT (above INT64_MAX), truncated integers,
 * other types, 0xc1 and ext. Each case is checked against the document reader's tree. */
static void test_msgpack_read_int_is_the_reader(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        uint8_t b[10];
    } cases[] = {
        {1, {0x00}},
        {1, {0x7f}},
        {1, {0xe0}},
        {1, {0xff}},
        {2, {0xcc, 0xff}},
        {2, {0xcc, 0x05}}, /* not the smallest */
        {3, {0xcd, 0x01, 0x00}},
        {5, {0xce, 0xff, 0xff, 0xff, 0xff}},
        {9, {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
        {9, {0xcf, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}}, /* UINT */
        {9, {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, /* UINT */
        {9, {0xcf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07}},
        {2, {0xd0, 0x80}},
        {2, {0xd0, 0x05}},
        {3, {0xd1, 0xff, 0xfe}},
        {5, {0xd2, 0x80, 0x00, 0x00, 0x00}},
        {9, {0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
        {9, {0xd3, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01}},
        {1, {0xc0}},
        {1, {0xc2}},
        {1, {0xc1}},
        {5, {0xca, 0x3f, 0x80, 0x00, 0x00}}, /* float 1.0 */
        {9, {0xcb, 0x3f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
        {2, {0xa1, 0x31}},
        {2, {0xd4, 0x01}},
        {1, {0x90}},
        {1, {0x80}},
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++) {
        const uint8_t *b = cases[i].b;
        size_t n = cases[i].n;
        struct tp_doc *doc = NULL;
        bool is_int = tp_doc_parse_ex(TP_FMT_MSGPACK, b, n, 64, &doc, NULL, 0) == 0 &&
                      tp_val_type(tp_doc_root(doc)) == TP_VAL_INT;
        int64_t v = 12345;
        size_t got = tp_codec_msgpack_read_int(b, n, &v);
        if (is_int) {
            assert_int_equal(got, n);
            assert_true(v == tp_val_int(tp_doc_root(doc)));
        } else {
            assert_int_equal(got, 0);
        }
        for (size_t k = 0; k < n; k++) /* every truncation: nothing read */
            assert_int_equal(tp_codec_msgpack_read_int(b, k, &v), 0);
        tp_doc_free(doc);
    }
}

/* tp_codec_utf8 gives the text a JSON round trip (tp_wr_str, then the parser) gives, for
 * hostile strings: quotes, backslashes, braces, commas, control bytes, truncated, overlong and
 * surrogate sequences. */
static void test_utf8_is_the_json_round_trip(void **state)
{
    (void)state;
    static const char *in[] = {
        "",
        "plain",
        "a\"b\\c{d},e",
        "NULL",
        "caf\xc3\xa9 \xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "bad \xff\xc3 x",
        "\xc3",
        "\xe2\x82",
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "ctl\x01\x1f\x7f",
        "\x80\xbf",
        "\xf5\xff\"\\",
    };
    for (size_t k = 0; k < sizeof(in) / sizeof(in[0]); k++) {
        struct tp_buf json, got, want;
        tp_buf_init(&json);
        tp_buf_init(&got);
        tp_buf_init(&want);
        struct tp_wr w;
        tp_wr_init(&w, &json, TP_FMT_JSON);
        tp_wr_str(&w, in[k]);
        struct tp_doc *doc =
            tp_doc_parse(TP_FMT_JSON, tp_buf_ptr(&json), tp_buf_size(&json), NULL, 0);
        assert_non_null(doc);
        size_t n;
        const char *v = tp_val_str(tp_doc_root(doc), &n);
        tp_buf_append(&want, v, n);
        tp_codec_utf8(&got, in[k], strlen(in[k]));
        assert_int_equal(tp_buf_size(&got), tp_buf_size(&want));
        assert_memory_equal(tp_buf_ptr(&got), tp_buf_ptr(&want), tp_buf_size(&want));
        tp_doc_free(doc);
        tp_buf_deinit(&json);
        tp_buf_deinit(&got);
        tp_buf_deinit(&want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_object_bytes),
        cmocka_unit_test(test_json_string_escaping),
        cmocka_unit_test(test_json_doubles),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_msgpack_bytes),
        cmocka_unit_test(test_round_trip_json),
        cmocka_unit_test(test_round_trip_msgpack),
        cmocka_unit_test(test_msgpack_only_types),
        cmocka_unit_test(test_stake_classes_json),
        cmocka_unit_test(test_stake_classes_msgpack),
        cmocka_unit_test(test_get_str_and_bool),
        cmocka_unit_test(test_json_hostile),
        cmocka_unit_test(test_msgpack_hostile),
        cmocka_unit_test(test_guard_pages),
        cmocka_unit_test(test_msgpack_int_matches_packer),
        cmocka_unit_test(test_msgpack_read_int_is_the_reader),
        cmocka_unit_test(test_utf8_is_the_json_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
