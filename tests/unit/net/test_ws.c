/*
 * Unit tests for src/net/ws.c: sessions driven with byte buffers (masked client frames built
 * here) and a fake tp_io that records writes and can simulate short writes, WANT_WRITE and
 * errors. No sockets.
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
#include "tickpool/net/io.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/ws.h"

#include "ws_client.h"

/* --- Fake io --- */

struct fake_io {
    struct tp_io io; /* first: the ops get a struct tp_io * */
    struct tp_buf out;
    size_t max_write; /* 0 = unlimited */
    bool blocked;     /* every write returns TP_IO_WANT_WRITE */
    int fail;         /* nonzero: every write returns this */
    int calls;        /* write calls */
    int want_at_call; /* this call number (1-based) returns WANT_WRITE once */
    /* the arguments of the last WANT_WRITE, to check the retry repeats them */
    uint8_t *want_bytes;
    size_t want_len;
    bool retry_checked;
};

static ssize_t fake_write(struct tp_io *io, const void *buf, size_t n)
{
    struct fake_io *f = (struct fake_io *)io;
    f->calls++;
    if (f->want_bytes != NULL) {
        /* The call after a WANT_WRITE must repeat the same bytes and length (mbedTLS rule). */
        assert_int_equal(n, f->want_len);
        assert_memory_equal(buf, f->want_bytes, n);
        free(f->want_bytes);
        f->want_bytes = NULL;
        f->retry_checked = true;
    }
    if (f->fail != 0)
        return f->fail;
    if (f->blocked || f->calls == f->want_at_call) {
        if (f->calls == f->want_at_call) {
            f->want_bytes = malloc(n);
            memcpy(f->want_bytes, buf, n);
            f->want_len = n;
        }
        return TP_IO_WANT_WRITE;
    }
    size_t w = f->max_write != 0 && n > f->max_write ? f->max_write : n;
    tp_buf_append(&f->out, buf, w);
    return (ssize_t)w;
}

static const struct tp_io_ops fake_ops = {.write = fake_write};

static void fio_init(struct fake_io *f)
{
    memset(f, 0, sizeof(*f));
    f->io.ops = &fake_ops;
    f->io.fd = -1;
    tp_buf_init(&f->out);
}

static void fio_deinit(struct fake_io *f)
{
    free(f->want_bytes);
    tp_buf_deinit(&f->out);
}

/* --- Server frames parsed back from the output --- */

struct sframe {
    int fin, rsv, op;
    bool masked;
    const uint8_t *payload;
    size_t len;
};

/* Parses every server frame in buf[0..n); returns the count (asserts on garbage). */
static size_t parse_frames(const uint8_t *p, size_t n, struct sframe *out, size_t max)
{
    size_t count = 0;
    while (n > 0) {
        assert_true(n >= 2);
        assert_true(count < max);
        struct sframe *f = &out[count++];
        f->fin = p[0] >> 7;
        f->rsv = (p[0] >> 4) & 7;
        f->op = p[0] & 0x0f;
        f->masked = p[1] >> 7;
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            assert_true(n >= 4);
            len = (uint64_t)p[2] << 8 | p[3];
            assert_true(len >= 126); /* minimal encoding */
            hl = 4;
        } else if (len == 127) {
            assert_true(n >= 10);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            assert_true(len > 0xffff);
            hl = 10;
        }
        assert_true(n - hl >= len);
        f->payload = p + hl;
        f->len = (size_t)len;
        p += hl + len;
        n -= hl + (size_t)len;
    }
    return count;
}

static size_t out_frames(struct fake_io *f, struct sframe *out, size_t max)
{
    return parse_frames((const uint8_t *)tp_buf_ptr(&f->out), tp_buf_size(&f->out), out, max);
}

static uint16_t close_code(const struct sframe *f)
{
    assert_int_equal(f->op, 0x8);
    assert_true(f->len >= 2);
    return (uint16_t)(f->payload[0] << 8 | f->payload[1]);
}

/* --- Client frames --- */

static void cframe(struct tp_buf *b, int fin, int op, const void *payload, size_t len)
{
    cframe_ex(b, fin, 0, op, payload, len, true, 0);
}

/* --- Recording callbacks --- */

#define MAX_MSGS 16

struct rec {
    int nmsg;
    uint8_t *msg[MAX_MSGS];
    size_t len[MAX_MSGS];
    bool binary[MAX_MSGS];
    int nclose;
    uint16_t code;
    /* optional actions from inside on_message */
    bool reply;
    bool close_in_cb;
};

static void rec_on_message(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary, void *ud)
{
    struct rec *r = ud;
    assert_true(r->nmsg < MAX_MSGS);
    r->msg[r->nmsg] = malloc(len + 1);
    if (len > 0)
        memcpy(r->msg[r->nmsg], data, len);
    r->len[r->nmsg] = len;
    r->binary[r->nmsg] = binary;
    r->nmsg++;
    if (r->reply)
        assert_int_equal(tp_ws_send(ws, data, len), 0);
    if (r->close_in_cb)
        tp_ws_close(ws, TP_WS_CLOSE_POLICY, "bye");
}

static void rec_on_close(struct tp_ws *ws, uint16_t code, void *ud)
{
    (void)ws;
    struct rec *r = ud;
    r->nclose++;
    r->code = code;
}

static const struct tp_ws_callbacks rec_cb = {.on_message = rec_on_message,
                                              .on_close = rec_on_close};

static void rec_clear(struct rec *r)
{
    for (int i = 0; i < r->nmsg; i++)
        free(r->msg[i]);
    memset(r, 0, sizeof(*r));
}

static struct tp_ws *new_ws(struct rec *r, size_t max_message, size_t max_queue)
{
    memset(r, 0, sizeof(*r));
    struct tp_ws_limits lim = {.max_message = max_message, .max_queue = max_queue};
    return tp_ws_new(&lim, &rec_cb, r);
}

static int feed_buf(struct tp_ws *ws, const struct tp_buf *b)
{
    return tp_ws_feed(ws, tp_buf_ptr(b), tp_buf_size(b));
}

/* Feeds `b`, flushes to a fresh fake io, and expects exactly one close frame with `code`. */
static void expect_close_after(const struct tp_buf *b, size_t max_message, uint16_t code)
{
    struct rec r;
    struct tp_ws *ws = new_ws(&r, max_message, 1 << 20);
    assert_int_equal(feed_buf(ws, b), 0);
    assert_int_equal(r.nmsg, 0);
    assert_int_equal(r.nclose, 1);
    assert_int_equal(r.code, code);
    assert_false(tp_ws_want_close(ws)); /* the close frame must go out first */
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    struct sframe fr[4];
    assert_int_equal(out_frames(&f, fr, 4), 1);
    assert_int_equal(close_code(&fr[0]), code);
    assert_false(fr[0].masked);
    assert_true(tp_ws_want_close(ws));
    /* Further input is ignored; sends are refused. */
    assert_int_equal(tp_ws_feed(ws, "x", 1), TP_ECLOSED);
    assert_int_equal(tp_ws_send(ws, "x", 1), TP_ECLOSED);
    assert_int_equal(r.nclose, 1);
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

/* --- Upgrade and Origin --- */

static void test_upgrade_rfc_sample(void **state)
{
    (void)state;
    char acc[29];
    /* RFC 6455 §1.3 */
    assert_int_equal(tp_ws_check_upgrade("dGhlIHNhbXBsZSBub25jZQ==", "13", "tickpool.v1", acc), 0);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(
        tp_ws_check_upgrade(" dGhlIHNhbXBsZSBub25jZQ==\t", " 13 ", "chat, tickpool.v1", acc), 0);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_upgrade_bad_key_version(void **state)
{
    (void)state;
    char acc[29];
    const char *p = "tickpool.v1";
    assert_int_equal(tp_ws_check_upgrade(NULL, "13", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade("", "13", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade("dGhlIHNhbXBsZSBub25jZQ", "13", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade("dGhlIHNhbXBsZSBub25jZQ==AAAA", "13", p, acc), TP_EINVAL);
    /* 24 characters but 17 decoded bytes */
    assert_int_equal(tp_ws_check_upgrade("AAAAAAAAAAAAAAAAAAAAAAA=", "13", p, acc), TP_EINVAL);
    /* not base64 */
    assert_int_equal(tp_ws_check_upgrade("dGhlIHNhbXBsZSBub25jZ!==", "13", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade("dGhlIHNhbXBs ZSBub25jZQ=", "13", p, acc), TP_EINVAL);
    const char *k = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_int_equal(tp_ws_check_upgrade(k, NULL, p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade(k, "8", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade(k, "12", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade(k, "13, 8", p, acc), TP_EINVAL);
    assert_int_equal(tp_ws_check_upgrade(k, "130", p, acc), TP_EINVAL);
    /* key/version errors win over a missing protocol */
    assert_int_equal(tp_ws_check_upgrade(k, "12", NULL, acc), TP_EINVAL);
}

static void test_upgrade_protocol(void **state)
{
    (void)state;
    char acc[29];
    const char *k = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_int_equal(tp_ws_check_upgrade(k, "13", NULL, acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "", acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "chat", acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "tickpool.v1x", acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "tickpool.v", acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "TICKPOOL.V1", acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "xtickpool.v1", acc), TP_EPROTO);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "tickpool.v1", acc), 0);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "chat,tickpool.v1", acc), 0);
    assert_int_equal(tp_ws_check_upgrade(k, "13", "tickpool.v1 , chat", acc), 0);
    assert_int_equal(tp_ws_check_upgrade(k, "13", ",,tickpool.v1,,", acc), 0);
}

static void test_origin(void **state)
{
    (void)state;
    /* No Origin header: a non-browser client. */
    assert_true(tp_ws_origin_allowed(NULL, "", "localhost:8080"));
    assert_true(tp_ws_origin_allowed(NULL, "https://a.example", NULL));

    const char *list = " https://a.example , https://b.example:8443,";
    assert_true(tp_ws_origin_allowed("https://a.example", list, "x"));
    assert_true(tp_ws_origin_allowed("https://b.example:8443", list, "x"));
    assert_false(tp_ws_origin_allowed("https://b.example", list, "b.example"));
    assert_false(tp_ws_origin_allowed("https://a.example/", list, "x"));
    assert_false(tp_ws_origin_allowed("http://a.example", list, "x"));
    assert_false(tp_ws_origin_allowed("https://a.example.evil", list, "x"));
    assert_false(tp_ws_origin_allowed("https://A.EXAMPLE", list, "x"));
    assert_false(tp_ws_origin_allowed("", list, "x"));
    assert_false(tp_ws_origin_allowed("null", list, "x"));
    /* A non-empty allowlist replaces the same-host rule. */
    assert_false(tp_ws_origin_allowed("http://x", list, "x"));

    /* Empty allowlist: same host[:port] only. */
    const char *empties[] = {NULL, "", " , ,"};
    for (size_t i = 0; i < TP_ARRAY_LEN(empties); i++) {
        const char *e = empties[i];
        assert_true(tp_ws_origin_allowed("http://localhost:8080", e, "localhost:8080"));
        assert_true(tp_ws_origin_allowed("https://localhost:8443", e, "localhost:8443"));
        assert_true(tp_ws_origin_allowed("https://Game.Example", e, "game.example"));
        assert_false(tp_ws_origin_allowed("http://localhost:8080", e, "localhost:8443"));
        assert_false(tp_ws_origin_allowed("http://localhost", e, "localhost:8080"));
        assert_false(tp_ws_origin_allowed("http://localhost:8080.evil.com", e, "localhost:8080"));
        assert_false(tp_ws_origin_allowed("http://evil.com", e, "localhost:8080"));
        assert_false(tp_ws_origin_allowed("ftp://localhost:8080", e, "localhost:8080"));
        assert_false(tp_ws_origin_allowed("null", e, "localhost:8080"));
        assert_false(tp_ws_origin_allowed("http://", e, ""));
        assert_false(tp_ws_origin_allowed("http://localhost:8080", e, NULL));
        assert_false(tp_ws_origin_allowed("http://localhost:8080/", e, "localhost:8080"));
    }
}

/* --- Parsing --- */

static void check_three_messages(struct rec *r, const uint8_t *big, size_t bigl)
{
    assert_int_equal(r->nmsg, 3);
    assert_int_equal(r->len[0], 5);
    assert_memory_equal(r->msg[0], "hello", 5);
    assert_false(r->binary[0]);
    assert_int_equal(r->len[1], bigl);
    assert_memory_equal(r->msg[1], big, bigl);
    assert_true(r->binary[1]);
    assert_int_equal(r->len[2], 0);
    assert_true(r->binary[2]);
    assert_int_equal(r->nclose, 0);
}

static void test_split_points(void **state)
{
    (void)state;
    uint8_t big[300];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 1);
    struct tp_buf b;
    tp_buf_init(&b);
    cframe(&b, 1, 0x1, "hello", 5);
    cframe(&b, 1, 0x2, big, sizeof(big)); /* 16-bit length */
    cframe(&b, 1, 0x2, NULL, 0);
    const uint8_t *p = (const uint8_t *)tp_buf_ptr(&b);
    size_t n = tp_buf_size(&b);
    for (size_t cut = 0; cut <= n; cut++) {
        struct rec r;
        struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
        assert_int_equal(tp_ws_feed(ws, p, cut), 0);
        assert_int_equal(tp_ws_feed(ws, p + cut, n - cut), 0);
        check_three_messages(&r, big, sizeof(big));
        assert_false(tp_ws_has_output(ws));
        tp_ws_free(ws);
        rec_clear(&r);
    }
    /* One byte at a time. */
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tp_ws_feed(ws, p + i, 1), 0);
    check_three_messages(&r, big, sizeof(big));
    tp_ws_free(ws);
    rec_clear(&r);
    tp_buf_deinit(&b);
}

struct count_rec {
    int n, bad;
};

static void count_on_message(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary,
                             void *ud)
{
    (void)ws;
    struct count_rec *c = ud;
    c->n++;
    if (len != 97 || !binary || data[0] != 'z' || data[96] != 'z')
        c->bad++;
}

static const struct tp_ws_callbacks count_cb = {.on_message = count_on_message};

static void test_many_frames_one_feed(void **state)
{
    (void)state;
    /* More input than one read's 4 KiB in one call, frames straddling that boundary. */
    struct tp_buf b;
    tp_buf_init(&b);
    uint8_t payload[97];
    memset(payload, 'z', sizeof(payload));
    for (int i = 0; i < 12; i++)
        cframe(&b, 1, 0x2, payload, sizeof(payload));
    struct tp_buf all;
    tp_buf_init(&all);
    for (int rep = 0; rep < 10; rep++)
        tp_buf_append(&all, tp_buf_ptr(&b), tp_buf_size(&b));
    struct count_rec c = {0};
    struct tp_ws *ws = tp_ws_new(NULL, &count_cb, &c);
    /* 120 frames fed in 3 arbitrary chunks */
    size_t n = tp_buf_size(&all), third = n / 3;
    const char *p = tp_buf_ptr(&all);
    for (int k = 0; k < 3; k++) {
        size_t len = k < 2 ? third : n - 2 * third;
        assert_int_equal(tp_ws_feed(ws, p + k * third, len), 0);
    }
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.n, 120);
    tp_ws_free(ws);
    tp_buf_deinit(&b);
    tp_buf_deinit(&all);
}

static void test_fragmented_with_ping(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    cframe(&b, 0, 0x1, "Hel", 3);
    cframe(&b, 1, 0x9, "pp", 2); /* control frame between fragments */
    cframe(&b, 0, 0x0, "lo ", 3);
    cframe(&b, 1, 0x0, "w\xc3\xb6rld", 6); /* a multi-byte character */
    const uint8_t *p = (const uint8_t *)tp_buf_ptr(&b);
    size_t n = tp_buf_size(&b);
    for (size_t cut = 0; cut <= n; cut++) {
        struct rec r;
        struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
        assert_int_equal(tp_ws_feed(ws, p, cut), 0);
        assert_int_equal(tp_ws_feed(ws, p + cut, n - cut), 0);
        assert_int_equal(r.nmsg, 1);
        assert_int_equal(r.len[0], 12);
        assert_memory_equal(r.msg[0], "Hello w\xc3\xb6rld", 12);
        assert_false(r.binary[0]);
        struct fake_io f;
        fio_init(&f);
        assert_int_equal(tp_ws_flush(ws, &f.io), 0);
        struct sframe fr[4];
        assert_int_equal(out_frames(&f, fr, 4), 1);
        assert_int_equal(fr[0].op, 0xA);
        assert_int_equal(fr[0].len, 2);
        assert_memory_equal(fr[0].payload, "pp", 2);
        fio_deinit(&f);
        tp_ws_free(ws);
        rec_clear(&r);
    }
    tp_buf_deinit(&b);
}

static void test_ping_pong_priority(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    int64_t seen0 = tp_ws_last_seen_ms(ws);
    assert_true(seen0 > 0);
    /* Data queued before the ping arrives: the pong still goes first. */
    assert_int_equal(tp_ws_send(ws, "data1", 5), 0);
    struct tp_buf b;
    tp_buf_init(&b);
    cframe(&b, 1, 0x9, "abc", 3);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_true(tp_ws_last_seen_ms(ws) >= seen0);
    /* A client pong is accepted silently. */
    tp_buf_reset(&b);
    cframe(&b, 1, 0xA, "zz", 2);
    assert_int_equal(feed_buf(ws, &b), 0);
    /* Our own keepalive ping. */
    tp_ws_ping(ws);
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_int_equal(f.calls, 1); /* one write for all three frames */
    struct sframe fr[4];
    assert_int_equal(out_frames(&f, fr, 4), 3);
    assert_int_equal(fr[0].op, 0xA);
    assert_memory_equal(fr[0].payload, "abc", 3);
    assert_int_equal(fr[1].op, 0x9);
    assert_int_equal(fr[1].len, 8);
    assert_int_equal(fr[2].op, 0x2);
    assert_int_equal(fr[2].fin, 1);
    assert_memory_equal(fr[2].payload, "data1", 5);
    assert_int_equal(r.nmsg, 0);
    assert_int_equal(r.nclose, 0);
    fio_deinit(&f);
    tp_buf_deinit(&b);
    tp_ws_free(ws);
    rec_clear(&r);
}

static void test_client_close(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct tp_buf b;
    tp_buf_init(&b);
    cframe(&b, 1, 0x8,
           "\x03\xe8"
           "bye",
           5);
    cframe(&b, 1, 0x2, "late", 4); /* after close: ignored */
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nclose, 1);
    assert_int_equal(r.code, 1000);
    assert_int_equal(r.nmsg, 0);
    assert_true(tp_ws_has_output(ws));
    assert_false(tp_ws_want_close(ws));
    assert_int_equal(tp_ws_send(ws, "x", 1), TP_ECLOSED);
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    struct sframe fr[4];
    assert_int_equal(out_frames(&f, fr, 4), 1);
    assert_int_equal(close_code(&fr[0]), 1000);
    assert_int_equal(fr[0].len, 5);
    assert_memory_equal(fr[0].payload + 2, "bye", 3);
    assert_true(tp_ws_want_close(ws));
    assert_int_equal(feed_buf(ws, &b), TP_ECLOSED);
    tp_ws_close(ws, 1000, NULL); /* no second close frame */
    assert_false(tp_ws_has_output(ws));
    tp_ws_free(ws);
    rec_clear(&r);

    /* A close without a code is answered with an empty close and reported as 1005. */
    ws = new_ws(&r, 1 << 16, 1 << 20);
    tp_buf_reset(&b);
    cframe(&b, 1, 0x8, NULL, 0);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.code, TP_WS_CLOSE_NO_STATUS);
    tp_buf_reset(&f.out);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_int_equal(out_frames(&f, fr, 4), 1);
    assert_int_equal(fr[0].op, 0x8);
    assert_int_equal(fr[0].len, 0);
    assert_true(tp_ws_want_close(ws));
    tp_ws_free(ws);
    rec_clear(&r);

    /* A close with a reserved code is a protocol error. */
    tp_buf_reset(&b);
    cframe(&b, 1, 0x8, "\x03\xed", 2); /* 1005 must never be sent */
    expect_close_after(&b, 1 << 16, 1002);
    fio_deinit(&f);
    tp_buf_deinit(&b);
}

static void test_server_close(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    assert_int_equal(tp_ws_send(ws, "last", 4), 0);
    tp_ws_close(ws, TP_WS_CLOSE_GOING_AWAY, "shutting down");
    assert_int_equal(tp_ws_send(ws, "more", 4), TP_ECLOSED);
    tp_ws_ping(ws); /* ignored once closing */
    assert_false(tp_ws_want_close(ws));
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    struct sframe fr[4];
    assert_int_equal(out_frames(&f, fr, 4), 2);
    assert_int_equal(fr[0].op, 0x2);
    assert_int_equal(close_code(&fr[1]), 1001);
    assert_memory_equal(fr[1].payload + 2, "shutting down", 13);
    assert_true(tp_ws_want_close(ws));
    assert_int_equal(r.nclose, 0); /* on_close only reports what the peer did */
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);

    /* A long reason is cut to fit a control frame. */
    ws = new_ws(&r, 1 << 16, 1 << 20);
    char reason[300];
    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    tp_ws_close(ws, TP_WS_CLOSE_POLICY, reason);
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_int_equal(out_frames(&f, fr, 4), 1);
    assert_int_equal(close_code(&fr[0]), 1008);
    assert_int_equal(fr[0].len, 125);
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

static void test_callbacks_reply_and_close(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    r.reply = true;
    struct tp_buf b;
    tp_buf_init(&b);
    cframe(&b, 1, 0x2, "one", 3);
    cframe(&b, 1, 0x2, "two", 3);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 2);
    /* Closing from inside the callback stops parsing right there. */
    r.close_in_cb = true;
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 3);
    assert_int_equal(r.nclose, 0);
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    struct sframe fr[8];
    assert_int_equal(out_frames(&f, fr, 8), 4);
    assert_memory_equal(fr[0].payload, "one", 3);
    assert_memory_equal(fr[1].payload, "two", 3);
    assert_memory_equal(fr[2].payload, "one", 3);
    assert_int_equal(close_code(&fr[3]), 1008);
    assert_true(tp_ws_want_close(ws));
    tp_ws_free(ws);
    fio_deinit(&f);
    tp_buf_deinit(&b);
    rec_clear(&r);
}

static void test_oversized(void **state)
{
    (void)state;
    uint8_t *big = calloc(1, 2048);
    struct tp_buf b;
    tp_buf_init(&b);
    /* Exactly at the limit: fine. */
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1024, 1 << 20);
    cframe(&b, 1, 0x2, big, 1024);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 1);
    tp_ws_free(ws);
    rec_clear(&r);
    /* One byte over. */
    tp_buf_reset(&b);
    cframe(&b, 1, 0x2, big, 1025);
    expect_close_after(&b, 1024, 1009);
    /* The header alone (plus a byte) is enough: the payload is never buffered. */
    tp_buf_reset(&b);
    cframe(&b, 1, 0x2, big, 2048);
    struct tp_buf head;
    tp_buf_init(&head);
    tp_buf_append(&head, tp_buf_ptr(&b), 4 + 4 + 1);
    expect_close_after(&head, 1024, 1009);
    /* Fragments adding up past the limit. */
    tp_buf_reset(&b);
    cframe(&b, 0, 0x2, big, 600);
    cframe(&b, 1, 0x0, big, 600);
    expect_close_after(&b, 1024, 1009);
    /* Default limits: 64 KiB; a 65537-byte message announced by its header. */
    memset(&r, 0, sizeof(r));
    ws = tp_ws_new(NULL, &rec_cb, &r);
    tp_buf_reset(&b);
    uint8_t hdr[14] = {0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4};
    tp_buf_append(&b, hdr, sizeof(hdr));
    tp_buf_append(&b, "x", 1);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.code, 1009);
    tp_ws_free(ws);
    tp_buf_deinit(&head);
    tp_buf_deinit(&b);
    free(big);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_ws_stats s0, s1;
    tp_ws_stats_get(&s0);
    /* unmasked client frame */
    cframe_ex(&b, 1, 0, 0x2, "abc", 3, false, 0);
    expect_close_after(&b, 1 << 16, 1002);
    /* reserved opcodes */
    int ops[] = {0x3, 0x7, 0xB, 0xF};
    for (size_t i = 0; i < TP_ARRAY_LEN(ops); i++) {
        tp_buf_reset(&b);
        cframe(&b, 1, ops[i], "abc", 3);
        expect_close_after(&b, 1 << 16, 1002);
    }
    /* RSV bits without an extension */
    for (int rsv = 1; rsv < 8; rsv <<= 1) {
        tp_buf_reset(&b);
        cframe_ex(&b, 1, rsv, 0x2, "abc", 3, true, 0);
        expect_close_after(&b, 1 << 16, 1002);
    }
    /* continuation without a start */
    tp_buf_reset(&b);
    cframe(&b, 1, 0x0, "abc", 3);
    expect_close_after(&b, 1 << 16, 1002);
    /* a new data frame while a fragmented message is open */
    tp_buf_reset(&b);
    cframe(&b, 0, 0x2, "abc", 3);
    cframe(&b, 1, 0x2, "def", 3);
    expect_close_after(&b, 1 << 16, 1002);
    /* fragmented control frame (the frame layer rejects it: our own close) */
    tp_buf_reset(&b);
    cframe(&b, 0, 0x9, "abc", 3);
    expect_close_after(&b, 1 << 16, 1002);
    /* control frame over 125 bytes */
    uint8_t big[200] = {0};
    tp_buf_reset(&b);
    cframe(&b, 1, 0x9, big, 126);
    expect_close_after(&b, 1 << 16, 1002);
    /* non-minimal lengths */
    tp_buf_reset(&b);
    cframe_ex(&b, 1, 0, 0x2, "abc", 3, true, 2);
    expect_close_after(&b, 1 << 16, 1002);
    tp_buf_reset(&b);
    cframe_ex(&b, 1, 0, 0x2, big, 200, true, 8);
    expect_close_after(&b, 1 << 16, 1002);
    /* 64-bit length with the top bit set */
    tp_buf_reset(&b);
    uint8_t hdr[14] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    tp_buf_append(&b, hdr, sizeof(hdr));
    tp_buf_append(&b, "x", 1);
    expect_close_after(&b, 1 << 16, 1002);
    /* a valid message before the bad frame is still delivered */
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    tp_buf_reset(&b);
    cframe(&b, 1, 0x2, "ok", 2);
    cframe_ex(&b, 1, 0, 0x2, "bad", 3, false, 0);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 1);
    assert_int_equal(r.code, 1002);
    tp_ws_free(ws);
    rec_clear(&r);
    tp_ws_stats_get(&s1);
    assert_true(s1.protocol_closes >= s0.protocol_closes + 16);
    tp_buf_deinit(&b);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    const char *bad[] = {
        "\xc0\x80",         /* overlong NUL */
        "\xe0\x80\xaf",     /* overlong '/' */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80", /* invalid lead */
        "ab\xc3",           /* truncated */
        "\x80",             /* stray continuation */
        "\xff",
    };
    struct tp_buf b;
    tp_buf_init(&b);
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        tp_buf_reset(&b);
        cframe(&b, 1, 0x1, bad[i], strlen(bad[i]));
        expect_close_after(&b, 1 << 16, 1007);
    }
    /* split across fragments: each fragment alone is incomplete, the whole is fine */
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    tp_buf_reset(&b);
    cframe(&b, 0, 0x1, "\xf0\x9d", 2);
    cframe(&b, 1, 0x0, "\x84\x9e", 2); /* U+1D11E */
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 1);
    assert_int_equal(r.nclose, 0);
    tp_ws_free(ws);
    rec_clear(&r);
    /* binary frames are not checked */
    ws = new_ws(&r, 1 << 16, 1 << 20);
    tp_buf_reset(&b);
    cframe(&b, 1, 0x2, "\xff\xfe", 2);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 1);
    tp_ws_free(ws);
    rec_clear(&r);
    tp_buf_deinit(&b);
}

static void test_64bit_lengths(void **state)
{
    (void)state;
    size_t n = 70000;
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i ^ (i >> 8));
    struct tp_buf b;
    tp_buf_init(&b);
    cframe(&b, 1, 0x2, big, n);
    assert_int_equal((uint8_t)tp_buf_ptr(&b)[1], 0x80 | 127);
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 17, 1 << 20);
    assert_int_equal(feed_buf(ws, &b), 0);
    assert_int_equal(r.nmsg, 1);
    assert_int_equal(r.len[0], n);
    assert_memory_equal(r.msg[0], big, n);

    /* Server side: 7-, 16- and 64-bit lengths, and a frame bigger than the gather buffer. */
    size_t sizes[] = {0, 125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < TP_ARRAY_LEN(sizes); i++) {
        struct tp_ws_frame *fr = tp_ws_frame_new(big, sizes[i], TP_WS_KIND_DIRECT);
        size_t fl;
        const uint8_t *fb = tp_ws_frame_bytes(fr, &fl);
        size_t hl = sizes[i] < 126 ? 2 : sizes[i] <= 0xffff ? 4 : 10;
        assert_int_equal(fl, hl + sizes[i]);
        assert_int_equal(fb[0], 0x82);
        assert_int_equal(tp_ws_send_frame(ws, fr), 0);
        tp_ws_frame_unref(fr);
    }
    assert_int_equal(tp_ws_send(ws, big, n), 0);
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_int_equal(tp_ws_queued_bytes(ws), 0);
    struct sframe sf[8];
    assert_int_equal(out_frames(&f, sf, 8), 7);
    for (size_t i = 0; i < TP_ARRAY_LEN(sizes); i++) {
        assert_int_equal(sf[i].len, sizes[i]);
        assert_int_equal(sf[i].op, 0x2);
        assert_int_equal(sf[i].fin, 1);
        assert_int_equal(sf[i].rsv, 0);
        assert_false(sf[i].masked);
        if (sizes[i] > 0)
            assert_memory_equal(sf[i].payload, big, sizes[i]);
    }
    assert_memory_equal(sf[6].payload, big, n);
    fio_deinit(&f);
    tp_ws_free(ws);
    rec_clear(&r);
    tp_buf_deinit(&b);
    free(big);
}

/* --- Output queue --- */

static void test_shared_refcounts(void **state)
{
    (void)state;
    struct rec r[3];
    struct tp_ws *ws[3];
    struct tp_ws_frame *tick = tp_ws_frame_new("tick", 4, TP_WS_KIND_TICK);
    struct tp_ws_frame *round = tp_ws_frame_new("round", 5, TP_WS_KIND_DIRECT);
    assert_int_equal(tp_ws_frame_refs(tick), 1);
    for (int i = 0; i < 3; i++) {
        ws[i] = new_ws(&r[i], 1 << 16, 1 << 20);
        assert_int_equal(tp_ws_send_frame(ws[i], tick), 0);
        assert_int_equal(tp_ws_send_frame(ws[i], round), 0);
    }
    assert_int_equal(tp_ws_frame_refs(tick), 4);
    assert_int_equal(tp_ws_frame_refs(round), 4);
    struct fake_io f;
    fio_init(&f);
    assert_int_equal(tp_ws_flush(ws[0], &f.io), 0);
    assert_int_equal(tp_ws_frame_refs(tick), 3);
    /* A superseded tick releases its reference too. */
    struct tp_ws_frame *tick2 = tp_ws_frame_new("tick2", 5, TP_WS_KIND_TICK);
    assert_int_equal(tp_ws_send_frame(ws[1], tick2), 0);
    assert_int_equal(tp_ws_frame_refs(tick), 2);
    assert_int_equal(tp_ws_frame_refs(tick2), 2);
    for (int i = 0; i < 3; i++)
        tp_ws_free(ws[i]);
    assert_int_equal(tp_ws_frame_refs(tick), 1);
    assert_int_equal(tp_ws_frame_refs(round), 1);
    assert_int_equal(tp_ws_frame_refs(tick2), 1);
    tp_ws_frame_unref(tick); /* freed here: ASan would report a leak otherwise */
    tp_ws_frame_unref(round);
    tp_ws_frame_unref(tick2);
    tp_ws_frame_unref(NULL);
    tp_ws_free(NULL);
    /* The same bytes went out as the shared encoding. */
    struct sframe sf[4];
    assert_int_equal(out_frames(&f, sf, 4), 2);
    assert_memory_equal(sf[0].payload, "tick", 4);
    assert_memory_equal(sf[1].payload, "round", 5);
    fio_deinit(&f);
}

static struct tp_ws_frame *kframe(const char *s, enum tp_ws_kind k)
{
    return tp_ws_frame_new(s, strlen(s), k);
}

static void send_owned(struct tp_ws *ws, struct tp_ws_frame *f, int expect)
{
    assert_int_equal(tp_ws_send_frame(ws, f), expect);
    tp_ws_frame_unref(f);
}

static void test_drop_oldest(void **state)
{
    (void)state;
    int64_t m0 = tp_metrics_get_total(TP_METRIC_WS_FRAMES_DROPPED_TOTAL);
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct fake_io f;
    fio_init(&f);
    f.blocked = true;
    send_owned(ws, kframe("tick1", TP_WS_KIND_TICK), 0);
    send_owned(ws, kframe("odds1", TP_WS_KIND_ODDS), 0);
    assert_int_equal(tp_ws_send(ws, "bet_ok", 6), 0);
    send_owned(ws, kframe("tick2", TP_WS_KIND_TICK), 0);
    send_owned(ws, kframe("odds2", TP_WS_KIND_ODDS), 0);
    send_owned(ws, kframe("round", TP_WS_KIND_DIRECT), 0);
    assert_int_equal(tp_ws_send(ws, "payout", 6), 0);
    send_owned(ws, kframe("tick3", TP_WS_KIND_TICK), 0);
    assert_int_equal(tp_ws_flush(ws, &f.io), TP_IO_WANT_WRITE);
    assert_true(tp_ws_has_output(ws));
    /* The bytes of that attempted write are committed: tick3 can no longer be dropped. */
    send_owned(ws, kframe("tick4", TP_WS_KIND_TICK), 0);
    f.blocked = false;
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_true(f.retry_checked || f.want_bytes == NULL);
    struct sframe sf[16];
    size_t n = out_frames(&f, sf, 16);
    const char *want[] = {"bet_ok", "odds2", "round", "payout", "tick3", "tick4"};
    assert_int_equal(n, TP_ARRAY_LEN(want));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(sf[i].len, strlen(want[i]));
        assert_memory_equal(sf[i].payload, want[i], sf[i].len);
    }
    assert_int_equal(tp_ws_dropped(ws), 3);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_WS_FRAMES_DROPPED_TOTAL), m0 + 3);
    assert_false(tp_ws_want_close(ws));
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

/* A round change jumps the beats and odds queued behind everything else, never a reply, another
 * round change or bytes already going out; the beats it jumps still go out, and still coalesce
 * (newest wins) behind it. */
static void test_round_ahead_of_beats(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct fake_io f;
    fio_init(&f);
    f.blocked = true;
    send_owned(ws, kframe("tick0", TP_WS_KIND_TICK), 0);
    assert_int_equal(tp_ws_flush(ws, &f.io), TP_IO_WANT_WRITE); /* tick0 is going out */
    send_owned(ws, kframe("tick1", TP_WS_KIND_TICK_ODDS), 0);
    send_owned(ws, kframe("round1", TP_WS_KIND_ROUND), 0);
    assert_int_equal(tp_ws_send(ws, "bet_ok", 6), 0);
    send_owned(ws, kframe("odds2", TP_WS_KIND_ODDS), 0);
    send_owned(ws, kframe("tick2", TP_WS_KIND_TICK), 0);
    send_owned(ws, kframe("round2", TP_WS_KIND_ROUND), 0);
    send_owned(ws, kframe("round3", TP_WS_KIND_ROUND), 0);
    send_owned(ws, kframe("tick3", TP_WS_KIND_TICK), 0); /* supersedes tick2, behind round3 */
    f.blocked = false;
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    struct sframe sf[16];
    size_t n = out_frames(&f, sf, 16);
    const char *want[] = {"tick0",  "round1", "tick1", "bet_ok",
                          "round2", "round3", "odds2", "tick3"};
    assert_int_equal(n, TP_ARRAY_LEN(want));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(sf[i].len, strlen(want[i]));
        assert_memory_equal(sf[i].payload, want[i], sf[i].len);
    }
    assert_int_equal(tp_ws_dropped(ws), 1);
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

/* A beat carrying odds supersedes queued ticks and odds; a plain tick after it leaves it queued,
 * so a slow socket still gets the newest odds and the newest tick, in order. */
static void test_drop_beat_with_odds(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct fake_io f;
    fio_init(&f);
    send_owned(ws, kframe("tick1", TP_WS_KIND_TICK), 0);
    send_owned(ws, kframe("odds1", TP_WS_KIND_ODDS), 0);
    send_owned(ws, kframe("beat2", TP_WS_KIND_TICK_ODDS), 0); /* drops tick1 and odds1 */
    send_owned(ws, kframe("tick3", TP_WS_KIND_TICK), 0);      /* beat2 stays: its odds */
    send_owned(ws, kframe("tick4", TP_WS_KIND_TICK), 0);      /* drops tick3 */
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    struct sframe sf[8];
    size_t n = out_frames(&f, sf, 8);
    const char *want[] = {"beat2", "tick4"};
    assert_int_equal(n, TP_ARRAY_LEN(want));
    for (size_t i = 0; i < n; i++)
        assert_memory_equal(sf[i].payload, want[i], strlen(want[i]));
    assert_int_equal(tp_ws_dropped(ws), 3);
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

static void test_partial_write_not_dropped(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct fake_io f;
    fio_init(&f);
    f.max_write = 3;
    f.want_at_call = 2; /* 3 bytes go out, then WANT_WRITE */
    send_owned(ws, kframe("tick-A", TP_WS_KIND_TICK), 0);
    assert_int_equal(tp_ws_flush(ws, &f.io), TP_IO_WANT_WRITE);
    assert_int_equal(tp_buf_size(&f.out), 3);
    assert_int_equal(tp_ws_queued_bytes(ws), 8 - 3);
    send_owned(ws, kframe("tick-B", TP_WS_KIND_TICK), 0);
    send_owned(ws, kframe("tick-C", TP_WS_KIND_TICK), 0); /* drops B, never A */
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_true(f.retry_checked);
    struct sframe sf[4];
    assert_int_equal(out_frames(&f, sf, 4), 2);
    assert_memory_equal(sf[0].payload, "tick-A", 6);
    assert_memory_equal(sf[1].payload, "tick-C", 6);
    assert_int_equal(tp_ws_dropped(ws), 1);
    assert_int_equal(tp_ws_queued_bytes(ws), 0);
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

static void test_short_writes_and_gathering(void **state)
{
    (void)state;
    /* tick + odds go out in one write. */
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct fake_io f;
    fio_init(&f);
    send_owned(ws, kframe("tick", TP_WS_KIND_TICK), 0);
    send_owned(ws, kframe("odds", TP_WS_KIND_ODDS), 0);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_int_equal(f.calls, 1);
    assert_int_equal(tp_buf_size(&f.out), 12);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_int_equal(f.calls, 1); /* nothing queued: no write */
    tp_ws_free(ws);
    fio_deinit(&f);

    /* Many frames through a 7-byte pipe, with a WANT_WRITE in the middle: same byte stream. */
    for (size_t mw = 1; mw <= 13; mw += 3) {
        ws = new_ws(&r, 1 << 16, 1 << 20);
        fio_init(&f);
        f.max_write = mw;
        f.want_at_call = 5;
        struct tp_buf expect;
        tp_buf_init(&expect);
        for (int i = 0; i < 20; i++) {
            char msg[32];
            int len = snprintf(msg, sizeof(msg), "message-%d", i);
            struct tp_ws_frame *fr = tp_ws_frame_new(msg, (size_t)len, TP_WS_KIND_DIRECT);
            size_t fl;
            const uint8_t *fb = tp_ws_frame_bytes(fr, &fl);
            tp_buf_append(&expect, fb, fl);
            send_owned(ws, fr, 0);
        }
        assert_int_equal(tp_ws_queued_bytes(ws), tp_buf_size(&expect));
        int rc;
        int rounds = 0;
        while ((rc = tp_ws_flush(ws, &f.io)) != 0) {
            assert_int_equal(rc, TP_IO_WANT_WRITE);
            assert_true(++rounds < 5);
        }
        assert_true(f.retry_checked);
        assert_int_equal(tp_buf_size(&f.out), tp_buf_size(&expect));
        assert_memory_equal(tp_buf_ptr(&f.out), tp_buf_ptr(&expect), tp_buf_size(&expect));
        assert_int_equal(tp_ws_queued_bytes(ws), 0);
        assert_false(tp_ws_has_output(ws));
        tp_buf_deinit(&expect);
        tp_ws_free(ws);
        fio_deinit(&f);
    }

    /* A write error is reported; nothing is lost from the accounting. */
    ws = new_ws(&r, 1 << 16, 1 << 20);
    fio_init(&f);
    f.fail = TP_EIO;
    assert_int_equal(tp_ws_send(ws, "x", 1), 0);
    assert_int_equal(tp_ws_flush(ws, &f.io), TP_EIO);
    assert_int_equal(tp_ws_queued_bytes(ws), 3);
    tp_ws_free(ws);
    fio_deinit(&f);
    rec_clear(&r);
}

/* A frame written straight from its shared bytes (the fan-out's path, tp_ws_write_frame): the
 * same bytes a queue-and-flush sends, only when nothing is queued; the rest of a short or
 * refused write is kept, goes first, and is never dropped by a newer beat. */
static void test_write_frame_direct(void **state)
{
    (void)state;
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1 << 20);
    struct fake_io f;
    fio_init(&f);

    /* Nothing queued: one write, nothing kept, the caller's reference untouched. */
    struct tp_ws_frame *a = kframe("tick-A", TP_WS_KIND_TICK);
    assert_int_equal(tp_ws_write_frame(ws, a, &f.io), 0);
    assert_int_equal(f.calls, 1);
    assert_int_equal(tp_ws_frame_refs(a), 1);
    assert_false(tp_ws_has_output(ws));
    assert_int_equal(tp_ws_queued_bytes(ws), 0);

    /* Something queued: refused (the order), nothing written. */
    send_owned(ws, kframe("odds-1", TP_WS_KIND_ODDS), 0);
    assert_int_equal(tp_ws_write_frame(ws, a, &f.io), TP_EAGAIN);
    assert_int_equal(f.calls, 1);
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);

    /* A short write: 3 bytes out, the rest kept and counted; a newer beat queued behind it
     * supersedes nothing of it, and the next flush retries the same bytes after WANT_WRITE. */
    f.max_write = 3;
    f.want_at_call = f.calls + 2;
    struct tp_ws_frame *b = kframe("tick-B", TP_WS_KIND_TICK);
    assert_int_equal(tp_ws_write_frame(ws, b, &f.io), TP_IO_WANT_WRITE);
    assert_int_equal(tp_ws_queued_bytes(ws), 8 - 3);
    assert_true(tp_ws_has_output(ws));
    assert_int_equal(tp_ws_write_frame(ws, b, &f.io), TP_EAGAIN); /* the rest goes first */
    send_owned(ws, kframe("tick-C", TP_WS_KIND_TICK), 0);
    assert_int_equal(tp_ws_flush(ws, &f.io), TP_IO_WANT_WRITE);
    f.max_write = 0;
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);
    assert_true(f.retry_checked);
    assert_int_equal(tp_ws_dropped(ws), 0);
    assert_int_equal(tp_ws_queued_bytes(ws), 0);

    /* Refused with nothing written: the whole frame is kept (a started frame is never torn
     * nor dropped), written by the next flush. */
    f.blocked = true;
    struct tp_ws_frame *d = kframe("tick-D", TP_WS_KIND_TICK);
    assert_int_equal(tp_ws_write_frame(ws, d, &f.io), TP_IO_WANT_WRITE);
    assert_int_equal(tp_ws_queued_bytes(ws), 8);
    send_owned(ws, kframe("tick-E", TP_WS_KIND_TICK), 0);
    f.blocked = false;
    assert_int_equal(tp_ws_flush(ws, &f.io), 0);

    struct sframe sf[8];
    assert_int_equal(out_frames(&f, sf, 8), 6);
    const char *want[] = {"tick-A", "odds-1", "tick-B", "tick-C", "tick-D", "tick-E"};
    for (int i = 0; i < 6; i++)
        assert_memory_equal(sf[i].payload, want[i], 6);

    /* A write error is returned as is. */
    f.fail = TP_EIO;
    assert_int_equal(tp_ws_write_frame(ws, a, &f.io), TP_EIO);
    f.fail = 0;
    tp_ws_free(ws);

    /* Bigger than the queue's cap, or a closing session: refused, so the queue's path decides
     * (overflow close, or TP_ECLOSED). */
    ws = new_ws(&r, 1 << 16, 4);
    assert_int_equal(tp_ws_write_frame(ws, a, &f.io), TP_EAGAIN);
    tp_ws_free(ws);
    ws = new_ws(&r, 1 << 16, 1 << 20);
    tp_ws_close(ws, TP_WS_CLOSE_GOING_AWAY, "bye");
    assert_int_equal(tp_ws_write_frame(ws, a, &f.io), TP_EAGAIN);
    tp_ws_free(ws);

    tp_ws_frame_unref(a);
    tp_ws_frame_unref(b);
    tp_ws_frame_unref(d);
    fio_deinit(&f);
    rec_clear(&r);
}

static void test_queue_bound(void **state)
{
    (void)state;
    struct tp_ws_stats s0, s1;
    tp_ws_stats_get(&s0);
    uint8_t payload[300] = {0};
    struct rec r;
    struct tp_ws *ws = new_ws(&r, 1 << 16, 1000);
    /* Ticks alone never overflow: each replaces the last. */
    for (int i = 0; i < 100; i++) {
        struct tp_ws_frame *f = tp_ws_frame_new(payload, sizeof(payload), TP_WS_KIND_TICK);
        send_owned(ws, f, 0);
    }
    assert_int_equal(tp_ws_dropped(ws), 99);
    assert_int_equal(tp_ws_queued_bytes(ws), 304);
    /* Direct messages pile up until the bound. */
    assert_int_equal(tp_ws_send(ws, payload, sizeof(payload)), 0);
    assert_int_equal(tp_ws_queued_bytes(ws), 608);
    assert_int_equal(tp_ws_send(ws, payload, sizeof(payload)), 0);
    assert_int_equal(tp_ws_queued_bytes(ws), 912);
    assert_false(tp_ws_want_close(ws));
    assert_int_equal(tp_ws_send(ws, payload, sizeof(payload)), TP_ETOOBIG);
    /* The queue is replaced by a close 1013 frame, which goes out before the connection. */
    assert_true(tp_ws_close_deadline_ms(ws) > tp_mono_ms());
    assert_true(tp_ws_close_deadline_ms(ws) <= tp_mono_ms() + TP_WS_CLOSE_FLUSH_MS);
    assert_false(tp_ws_want_close(ws));
    assert_true(tp_ws_has_output(ws));
    assert_int_equal(tp_ws_queued_bytes(ws), 2 + 2 + strlen("send queue full"));
    assert_int_equal(tp_ws_send(ws, "x", 1), TP_ECLOSED); /* TP_ETOOBIG is reported once */
    struct tp_ws_frame *f = kframe("tick", TP_WS_KIND_TICK);
    assert_int_equal(tp_ws_send_frame(ws, f), TP_ECLOSED);
    assert_int_equal(tp_ws_frame_refs(f), 1); /* not kept */
    tp_ws_frame_unref(f);
    assert_int_equal(tp_ws_feed(ws, "x", 1), TP_ECLOSED);
    struct fake_io io;
    fio_init(&io);
    assert_int_equal(tp_ws_flush(ws, &io.io), 0);
    struct sframe sf[4];
    assert_int_equal(out_frames(&io, sf, 4), 1);
    assert_int_equal(sf[0].op, 0x8);
    assert_int_equal(sf[0].payload[0] << 8 | sf[0].payload[1], TP_WS_CLOSE_TRY_AGAIN);
    assert_true(tp_ws_want_close(ws));
    tp_buf_reset(&io.out);
    tp_ws_stats_get(&s1);
    assert_int_equal(s1.overflow_closes, s0.overflow_closes + 1);
    tp_ws_free(ws);

    /* A single frame over the bound, and a pending partial write counted in the bound. */
    ws = new_ws(&r, 1 << 16, 1000);
    uint8_t big[1200] = {0};
    assert_int_equal(tp_ws_send(ws, big, sizeof(big)), TP_ETOOBIG);
    assert_false(tp_ws_want_close(ws)); /* its close frame first */
    tp_ws_free(ws);
    ws = new_ws(&r, 1 << 16, 1000);
    io.max_write = 100;
    io.want_at_call = io.calls + 2;
    assert_int_equal(tp_ws_send(ws, big, 900), 0);
    assert_int_equal(tp_ws_flush(ws, &io.io), TP_IO_WANT_WRITE);
    assert_int_equal(tp_ws_queued_bytes(ws), 904 - 100);
    assert_int_equal(tp_ws_send(ws, big, 100), 0);
    assert_int_equal(tp_ws_send(ws, big, 100), TP_ETOOBIG);
    /* The frame already going out is finished (never torn), the rest replaced by the close. */
    tp_buf_reset(&io.out);
    io.max_write = 0;
    assert_int_equal(tp_ws_flush(ws, &io.io), 0);
    assert_int_equal(tp_buf_size(&io.out), 904 - 100 + 2 + 2 + strlen("send queue full"));
    tp_ws_free(ws);
    fio_deinit(&io);
    rec_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upgrade_rfc_sample),
        cmocka_unit_test(test_upgrade_bad_key_version),
        cmocka_unit_test(test_upgrade_protocol),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_split_points),
        cmocka_unit_test(test_many_frames_one_feed),
        cmocka_unit_test(test_fragmented_with_ping),
        cmocka_unit_test(test_ping_pong_priority),
        cmocka_unit_test(test_client_close),
        cmocka_unit_test(test_server_close),
        cmocka_unit_test(test_callbacks_reply_and_close),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_64bit_lengths),
        cmocka_unit_test(test_shared_refcounts),
        cmocka_unit_test(test_drop_oldest),
        cmocka_unit_test(test_write_frame_direct),
        cmocka_unit_test(test_round_ahead_of_beats),
        cmocka_unit_test(test_drop_beat_with_odds),
        cmocka_unit_test(test_partial_write_not_dropped),
        cmocka_unit_test(test_short_writes_and_gathering),
        cmocka_unit_test(test_queue_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
