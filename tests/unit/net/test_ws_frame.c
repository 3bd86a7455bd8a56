/*
 * Unit tests for src/net/ws_frame.c: server frame encoding, and the client frame parser fed
 * with hand-built masked frames cut at every split point, hostile headers, close payloads and
 * randomly fragmented messages with control frames in between. No session, no sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/net/ws_frame.h"

#include "ws_client.h"

/* --- Client frames --- */

static void frame(struct tp_buf *b, bool fin, int op, const void *payload, size_t len)
{
    cframe_ex(b, fin, 0, op, payload, len, true, 0);
}

/* --- Driving the parser --- */

#define MAX_EVENTS 512

struct got {
    int n;
    enum tp_ws_frame_ev type[MAX_EVENTS];
    uint16_t code[MAX_EVENTS];
    bool binary[MAX_EVENTS];
    size_t len[MAX_EVENTS];
    uint8_t *data[MAX_EVENTS]; /* copies */
};

static void got_clear(struct got *g)
{
    for (int i = 0; i < g->n; i++)
        free(g->data[i]);
    memset(g, 0, sizeof(*g));
}

/* Feeds in[0..n) in chunks of `chunk` bytes (0: all at once), recording every event until the
 * input is used up or an ERROR/CLOSE ends it. Returns the bytes used. */
static size_t run(struct tp_ws_frame_parser *p, const uint8_t *in, size_t n, size_t chunk,
                  struct got *g)
{
    size_t off = 0;
    if (chunk == 0)
        chunk = n > 0 ? n : 1;
    while (off <= n) {
        size_t end = TP_MIN(n, off + chunk);
        const uint8_t *q = in + off;
        size_t left = end - off;
        for (;;) {
            struct tp_ws_frame_event ev;
            size_t used = tp_ws_frame_parse(p, q, left, &ev);
            assert_true(used <= left);
            q += used;
            left -= used;
            off += used;
            if (ev.type == TP_WS_EV_NONE) {
                assert_int_equal(left, 0);
                break;
            }
            assert_true(g->n < MAX_EVENTS);
            int i = g->n++;
            g->type[i] = ev.type;
            g->code[i] = ev.code;
            g->binary[i] = ev.binary;
            g->len[i] = ev.len;
            g->data[i] = NULL;
            if (ev.type != TP_WS_EV_DATA_HEADER && ev.type != TP_WS_EV_ERROR) {
                g->data[i] = malloc(ev.len + 1);
                if (ev.len > 0)
                    memcpy(g->data[i], ev.data, ev.len);
            }
            if (ev.type == TP_WS_EV_ERROR || ev.type == TP_WS_EV_CLOSE)
                return off;
        }
        if (end == n)
            break;
    }
    return off;
}

/* The last event of feeding `b` whole to a fresh parser with `max_message`. */
static struct got parse_all(const struct tp_buf *b, size_t max_message)
{
    struct tp_ws_frame_parser p;
    tp_ws_frame_parser_init(&p, max_message);
    struct got g;
    memset(&g, 0, sizeof(g));
    run(&p, (const uint8_t *)tp_buf_ptr(b), tp_buf_size(b), 0, &g);
    tp_ws_frame_parser_deinit(&p);
    return g;
}

static void expect_error(const struct tp_buf *b, size_t max_message, uint16_t code)
{
    struct got g = parse_all(b, max_message);
    assert_true(g.n > 0);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_ERROR);
    assert_int_equal(g.code[g.n - 1], code);
    for (int i = 0; i < g.n; i++)
        assert_int_not_equal(g.type[i], TP_WS_EV_MESSAGE);
    got_clear(&g);
}

/* --- Encoding --- */

static void test_encode(void **state)
{
    (void)state;
    static uint8_t big[70000];
    size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < TP_ARRAY_LEN(sizes); i++) {
        struct tp_ws_frame *f = tp_ws_frame_new(big, sizes[i], TP_WS_KIND_TICK);
        size_t n;
        const uint8_t *b = tp_ws_frame_bytes(f, &n);
        size_t hl = sizes[i] < 126 ? 2 : sizes[i] <= 0xffff ? 4 : 10;
        assert_int_equal(n, hl + sizes[i]);
        assert_int_equal(b[0], 0x82);
        assert_int_equal(b[1] & 0x80, 0); /* server frames are never masked */
        assert_int_equal(b[1] & 0x7f, hl == 2 ? sizes[i] : hl == 4 ? 126 : 127);
        assert_int_equal(tp_ws_frame_kind(f), TP_WS_KIND_TICK);
        assert_int_equal(tp_ws_frame_refs(f), 1);
        tp_ws_frame_ref(f);
        assert_int_equal(tp_ws_frame_refs(f), 2);
        tp_ws_frame_unref(f);
        tp_ws_frame_unref(f);
    }
    struct tp_ws_frame *c = tp_ws_frame_new_control(TP_WS_OP_CLOSE, "\x03\xe8ok", 4);
    size_t n;
    const uint8_t *b = tp_ws_frame_bytes(c, &n);
    assert_int_equal(n, 6);
    assert_memory_equal(b, "\x88\x04\x03\xe8ok", 6);
    assert_int_equal(tp_ws_frame_kind(c), TP_WS_KIND_DIRECT);
    tp_ws_frame_unref(c);
    tp_ws_frame_unref(NULL);
}

/* --- Parsing what is well formed --- */

/* Every split of a stream of frames yields the same events. */
static void test_every_split_point(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    uint8_t mid[300];
    for (size_t i = 0; i < sizeof(mid); i++)
        mid[i] = (uint8_t)(i * 7);
    frame(&b, true, TP_WS_OP_BINARY, "bet", 3);
    frame(&b, true, TP_WS_OP_TEXT, "h\xc3\xa9", 3);
    frame(&b, false, TP_WS_OP_BINARY, mid, 100);
    frame(&b, true, TP_WS_OP_PING, "p", 1);
    frame(&b, false, TP_WS_OP_CONTINUATION, mid + 100, 0);
    frame(&b, true, TP_WS_OP_CONTINUATION, mid + 100, 200);
    frame(&b, true, TP_WS_OP_BINARY, NULL, 0);
    frame(&b, true, TP_WS_OP_PONG, NULL, 0);
    for (size_t chunk = 0; chunk <= tp_buf_size(&b); chunk++) {
        struct tp_ws_frame_parser p;
        tp_ws_frame_parser_init(&p, 1024);
        struct got g;
        memset(&g, 0, sizeof(g));
        assert_int_equal(run(&p, (const uint8_t *)tp_buf_ptr(&b), tp_buf_size(&b), chunk, &g),
                         tp_buf_size(&b));
        enum tp_ws_frame_ev want[] = {
            TP_WS_EV_DATA_HEADER, TP_WS_EV_MESSAGE,     TP_WS_EV_DATA_HEADER, TP_WS_EV_MESSAGE,
            TP_WS_EV_DATA_HEADER, TP_WS_EV_PING,        TP_WS_EV_DATA_HEADER, TP_WS_EV_DATA_HEADER,
            TP_WS_EV_MESSAGE,     TP_WS_EV_DATA_HEADER, TP_WS_EV_MESSAGE,     TP_WS_EV_PONG,
        };
        assert_int_equal(g.n, TP_ARRAY_LEN(want));
        for (size_t i = 0; i < TP_ARRAY_LEN(want); i++)
            assert_int_equal(g.type[i], want[i]);
        assert_true(g.binary[1]);
        assert_memory_equal(g.data[1], "bet", 3);
        assert_false(g.binary[3]);
        assert_int_equal(g.len[3], 3);
        assert_int_equal(g.len[4], 100); /* a header announces its own frame's length */
        assert_memory_equal(g.data[5], "p", 1);
        assert_int_equal(g.len[8], 300);
        assert_memory_equal(g.data[8], mid, 300);
        assert_int_equal(g.len[10], 0);
        assert_false(tp_ws_frame_parser_in_message(&p));
        got_clear(&g);
        tp_ws_frame_parser_deinit(&p);
    }
    tp_buf_deinit(&b);
}

static void test_close_frames(void **state)
{
    (void)state;
    uint16_t ok[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1013, 3000, 4999};
    for (size_t i = 0; i < TP_ARRAY_LEN(ok); i++) {
        struct tp_buf b;
        tp_buf_init(&b);
        uint8_t pl[6] = {(uint8_t)(ok[i] >> 8), (uint8_t)ok[i], 'b', 'y', 'e', '!'};
        frame(&b, true, TP_WS_OP_CLOSE, pl, sizeof(pl));
        frame(&b, true, TP_WS_OP_BINARY, "late", 4); /* the caller stops reading */
        struct got g = parse_all(&b, 1024);
        assert_int_equal(g.n, 1);
        assert_int_equal(g.type[0], TP_WS_EV_CLOSE);
        assert_int_equal(g.code[0], ok[i]);
        assert_int_equal(g.len[0], sizeof(pl)); /* the whole payload, to echo */
        assert_memory_equal(g.data[0], pl, sizeof(pl));
        got_clear(&g);
        tp_buf_deinit(&b);
    }
    /* No payload: reported as 1005, echoed empty. */
    struct tp_buf b;
    tp_buf_init(&b);
    frame(&b, true, TP_WS_OP_CLOSE, NULL, 0);
    struct got g = parse_all(&b, 1024);
    assert_int_equal(g.type[0], TP_WS_EV_CLOSE);
    assert_int_equal(g.code[0], 1005);
    assert_int_equal(g.len[0], 0);
    got_clear(&g);
    tp_buf_deinit(&b);
    /* A close between the fragments of a message. */
    tp_buf_init(&b);
    frame(&b, false, TP_WS_OP_TEXT, "ab", 2);
    frame(&b, true, TP_WS_OP_CLOSE, "\x03\xe9", 2);
    g = parse_all(&b, 1024);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.type[1], TP_WS_EV_CLOSE);
    assert_int_equal(g.code[1], 1001);
    got_clear(&g);
    tp_buf_deinit(&b);
}

/* --- Hostile input --- */

static void test_hostile_headers(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    /* unmasked client frame */
    cframe_ex(&b, 1, 0, 0x2, "abc", 3, false, 0);
    expect_error(&b, 1024, 1002);
    /* reserved bits without an extension */
    for (int rsv = 1; rsv <= 4; rsv <<= 1) {
        tp_buf_reset(&b);
        cframe_ex(&b, 1, rsv, 0x2, "abc", 3, true, 0);
        expect_error(&b, 1024, 1002);
    }
    /* reserved opcodes, data and control */
    for (int op = 0x3; op <= 0xF; op++) {
        if (op >= 0x8 && op <= 0xA)
            continue;
        tp_buf_reset(&b);
        frame(&b, true, op, "abc", 3);
        expect_error(&b, 1024, 1002);
    }
    /* control frames over 125 bytes, or fragmented */
    uint8_t big[200] = {0};
    int ctl[] = {TP_WS_OP_CLOSE, TP_WS_OP_PING, TP_WS_OP_PONG};
    for (size_t i = 0; i < TP_ARRAY_LEN(ctl); i++) {
        tp_buf_reset(&b);
        frame(&b, true, ctl[i], big, 126);
        expect_error(&b, 1024, 1002);
        tp_buf_reset(&b);
        frame(&b, false, ctl[i], "\x03\xe8", 2);
        expect_error(&b, 1024, 1002);
    }
    /* continuation without a start; a new message inside an unfinished one */
    tp_buf_reset(&b);
    frame(&b, true, TP_WS_OP_CONTINUATION, "abc", 3);
    expect_error(&b, 1024, 1002);
    tp_buf_reset(&b);
    frame(&b, false, TP_WS_OP_BINARY, "abc", 3);
    frame(&b, true, TP_WS_OP_TEXT, "def", 3);
    expect_error(&b, 1024, 1002);
    /* non-minimal length encodings */
    tp_buf_reset(&b);
    cframe_ex(&b, 1, 0, 0x2, "abc", 3, true, 2);
    expect_error(&b, 1024, 1002);
    tp_buf_reset(&b);
    cframe_ex(&b, 1, 0, 0x2, big, 200, true, 8);
    expect_error(&b, 1024, 1002);
    tp_buf_deinit(&b);
}

static void test_hostile_lengths(void **state)
{
    (void)state;
    /* 64-bit length with the top bit set: refused from the header alone, before any payload
     * (even with a limit that would let every length through). */
    uint8_t top[14] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    struct tp_buf b;
    tp_buf_init(&b);
    tp_buf_append(&b, top, sizeof(top));
    expect_error(&b, SIZE_MAX, 1002);
    /* the largest 63-bit length: over any limit (1009), nothing allocated */
    uint8_t huge[14] = {0x82, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3};
    tp_buf_reset(&b);
    tp_buf_append(&b, huge, sizeof(huge));
    expect_error(&b, 1 << 20, 1009);
    /* one byte over the limit; exactly at it is fine */
    uint8_t pl[1025] = {0};
    tp_buf_reset(&b);
    frame(&b, true, TP_WS_OP_BINARY, pl, 1025);
    expect_error(&b, 1024, 1009);
    tp_buf_reset(&b);
    frame(&b, true, TP_WS_OP_BINARY, pl, 1024);
    struct got g = parse_all(&b, 1024);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_MESSAGE);
    assert_int_equal(g.len[g.n - 1], 1024);
    got_clear(&g);
    /* fragments adding up past the limit: refused at the header that passes it */
    tp_buf_reset(&b);
    frame(&b, false, TP_WS_OP_BINARY, pl, 600);
    frame(&b, true, TP_WS_OP_CONTINUATION, pl, 425);
    struct tp_ws_frame_parser p;
    tp_ws_frame_parser_init(&p, 1024);
    memset(&g, 0, sizeof(g));
    size_t used = run(&p, (const uint8_t *)tp_buf_ptr(&b), tp_buf_size(&b), 0, &g);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_ERROR);
    assert_int_equal(g.code[g.n - 1], 1009);
    assert_int_equal(used, 4 + 4 + 600 + 8); /* the second header, none of its payload */
    assert_null(p.msg);                      /* failing frees the unfinished message */
    /* once failed, always failed, and nothing more is read */
    struct tp_ws_frame_event ev;
    assert_int_equal(tp_ws_frame_parse(&p, (const uint8_t *)tp_buf_ptr(&b), tp_buf_size(&b), &ev),
                     0);
    assert_int_equal(ev.type, TP_WS_EV_ERROR);
    assert_int_equal(ev.code, 1009);
    got_clear(&g);
    tp_ws_frame_parser_deinit(&p);
    tp_buf_deinit(&b);
}

static void test_hostile_close(void **state)
{
    (void)state;
    /* codes a peer may not send */
    uint16_t bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
    struct tp_buf b;
    tp_buf_init(&b);
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        uint8_t pl[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
        tp_buf_reset(&b);
        frame(&b, true, TP_WS_OP_CLOSE, pl, 2);
        expect_error(&b, 1024, 1002);
    }
    /* a one-byte payload cannot hold a code */
    tp_buf_reset(&b);
    frame(&b, true, TP_WS_OP_CLOSE, "\x03", 1);
    expect_error(&b, 1024, 1002);
    /* a reason that is not UTF-8 */
    /* Split where a hex escape would swallow the next letters; parenthesised so clang sees one
     * element, not a missing comma. */
    const char *reasons[] = {"\x03\xe8\xff",
                             ("\x03\xe8"
                              "ab\xc3"),
                             "\x03\xe8\xed\xa0\x80"};
    for (size_t i = 0; i < TP_ARRAY_LEN(reasons); i++) {
        tp_buf_reset(&b);
        frame(&b, true, TP_WS_OP_CLOSE, reasons[i], strlen(reasons[i]));
        expect_error(&b, 1024, 1007);
    }
    tp_buf_deinit(&b);
}

static void test_text_utf8(void **state)
{
    (void)state;
    const char *bad[] = {"\xc0\x80",         "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                         "\xf5\x80\x80\x80", "ab\xc3",       "\x80",         "\xff"};
    struct tp_buf b;
    tp_buf_init(&b);
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        tp_buf_reset(&b);
        frame(&b, true, TP_WS_OP_TEXT, bad[i], strlen(bad[i]));
        expect_error(&b, 1024, 1007);
        /* the same bytes in fragments (the buffered path) */
        tp_buf_reset(&b);
        frame(&b, false, TP_WS_OP_TEXT, bad[i], 1);
        frame(&b, true, TP_WS_OP_CONTINUATION, bad[i] + 1, strlen(bad[i]) - 1);
        expect_error(&b, 1024, 1007);
    }
    /* a code point split between fragments is fine once whole */
    tp_buf_reset(&b);
    frame(&b, false, TP_WS_OP_TEXT, "\xf0\x9d", 2);
    frame(&b, true, TP_WS_OP_CONTINUATION, "\x84\x9e", 2);
    struct got g = parse_all(&b, 1024);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_MESSAGE);
    assert_memory_equal(g.data[g.n - 1], "\xf0\x9d\x84\x9e", 4);
    got_clear(&g);
    /* binary messages are not checked */
    tp_buf_reset(&b);
    frame(&b, true, TP_WS_OP_BINARY, "\xff\xfe", 2);
    g = parse_all(&b, 1024);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_MESSAGE);
    got_clear(&g);
    tp_buf_deinit(&b);
}

/* --- Memory --- */

/* An announced length costs nothing until its bytes arrive, and nothing is held once a
 * message is delivered: idle parsers own no buffer. */
static void test_memory_follows_bytes(void **state)
{
    (void)state;
    static uint8_t pl[60000];
    struct tp_buf b;
    tp_buf_init(&b);
    frame(&b, true, TP_WS_OP_BINARY, pl, sizeof(pl));
    struct tp_ws_frame_parser p;
    tp_ws_frame_parser_init(&p, 1 << 20);
    struct got g;
    memset(&g, 0, sizeof(g));
    /* the header and 10 payload bytes */
    run(&p, (const uint8_t *)tp_buf_ptr(&b), 4 + 4 + 10, 0, &g);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.type[0], TP_WS_EV_DATA_HEADER);
    assert_int_equal(g.len[0], sizeof(pl));
    assert_true(tp_ws_frame_parser_in_message(&p));
    assert_true(p.msg_cap <= 64);
    /* the rest, a byte at a time at first: the buffer at most doubles what arrived */
    size_t off = 18;
    for (; off < 1000; off++) {
        run(&p, (const uint8_t *)tp_buf_ptr(&b) + off, 1, 0, &g);
        assert_true(p.msg_cap <= 2 * p.msg_len + 64);
    }
    run(&p, (const uint8_t *)tp_buf_ptr(&b) + off, tp_buf_size(&b) - off, 0, &g);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_MESSAGE);
    assert_int_equal(g.len[g.n - 1], sizeof(pl));
    assert_true(p.msg_cap <= sizeof(pl));
    /* the next call (with no input) frees the delivered message */
    struct tp_ws_frame_event ev;
    assert_int_equal(tp_ws_frame_parse(&p, NULL, 0, &ev), 0);
    assert_int_equal(ev.type, TP_WS_EV_NONE);
    assert_null(p.msg);
    assert_false(tp_ws_frame_parser_in_message(&p));
    got_clear(&g);
    /* a small message that arrives whole is never given a buffer */
    tp_buf_reset(&b);
    frame(&b, true, TP_WS_OP_BINARY, "bet", 3);
    run(&p, (const uint8_t *)tp_buf_ptr(&b), tp_buf_size(&b), 0, &g);
    assert_int_equal(g.type[g.n - 1], TP_WS_EV_MESSAGE);
    assert_null(p.msg);
    got_clear(&g);
    tp_ws_frame_parser_deinit(&p);
    tp_buf_deinit(&b);
}

/* --- Randomized --- */

/* Random messages, cut into random fragments with pings between them, fed in random chunks:
 * every message comes out whole and in order, every ping once. */
static void test_random_fragmentation(void **state)
{
    (void)state;
    srand(1234);
    for (int round = 0; round < 200; round++) {
        struct tp_buf b;
        tp_buf_init(&b);
        int nmsg = 1 + rand() % 5, pings = 0;
        uint8_t *msgs[5];
        size_t lens[5];
        for (int m = 0; m < nmsg; m++) {
            lens[m] = (size_t)(rand() % 3000);
            msgs[m] = malloc(lens[m] + 1);
            for (size_t i = 0; i < lens[m]; i++)
                msgs[m][i] = (uint8_t)rand();
            size_t off = 0;
            bool first = true;
            do {
                size_t n = (size_t)rand() % (lens[m] + 1 - off + 1);
                if (n > lens[m] - off)
                    n = lens[m] - off;
                bool fin = off + n == lens[m] && rand() % 3 != 0;
                frame(&b, fin, first ? TP_WS_OP_BINARY : TP_WS_OP_CONTINUATION, msgs[m] + off, n);
                off += n;
                first = false;
                if (fin)
                    break;
                if (rand() % 2) {
                    frame(&b, true, TP_WS_OP_PING, "x", 1);
                    pings++;
                }
            } while (true);
        }
        struct tp_ws_frame_parser p;
        tp_ws_frame_parser_init(&p, 4096);
        struct got g;
        memset(&g, 0, sizeof(g));
        size_t chunk = 1 + (size_t)rand() % 700;
        assert_int_equal(run(&p, (const uint8_t *)tp_buf_ptr(&b), tp_buf_size(&b), chunk, &g),
                         tp_buf_size(&b));
        int m = 0, seen_pings = 0;
        for (int i = 0; i < g.n; i++) {
            if (g.type[i] == TP_WS_EV_PING) {
                seen_pings++;
            } else if (g.type[i] == TP_WS_EV_MESSAGE) {
                assert_true(m < nmsg);
                assert_int_equal(g.len[i], lens[m]);
                if (lens[m] > 0)
                    assert_memory_equal(g.data[i], msgs[m], lens[m]);
                m++;
            } else {
                assert_int_equal(g.type[i], TP_WS_EV_DATA_HEADER);
            }
        }
        assert_int_equal(m, nmsg);
        assert_int_equal(seen_pings, pings);
        for (int k = 0; k < nmsg; k++)
            free(msgs[k]);
        got_clear(&g);
        tp_ws_frame_parser_deinit(&p);
        tp_buf_deinit(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_close_frames),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_hostile_lengths),
        cmocka_unit_test(test_hostile_close),
        cmocka_unit_test(test_text_utf8),
        cmocka_unit_test(test_memory_follows_bytes),
        cmocka_unit_test(test_random_fragmentation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
