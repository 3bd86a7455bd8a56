/*
 * libFuzzer target for src/net/ws.c. For each input:
 *  1. byte 0 picks how the rest is cut into tp_ws_feed calls and how the fake socket behaves
 *     (short writes, WANT_WRITE); the rest is fed as client bytes to a session with small
 *     limits whose on_message echoes, and which also gets shared tick/odds frames queued;
 *  2. everything the session writes must parse as well-formed server frames (unmasked, no RSV,
 *     minimal lengths), a close frame must be the last one, and once flushed the queue
 *     accounting must be back to zero;
 *  3. the input, split at its first two NULs, also goes through tp_ws_check_upgrade and
 *     tp_ws_origin_allowed (which must never accept a key that is not 24 characters).
 * Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude \
 *     tests/fuzz/fuzz_ws.c src/net/ws.c src/net/ws_frame.c src/base/crypto.c \
 *     src/base/metrics.c src/base/common.c src/base/buf.c src/base/log.c -lmbedcrypto -o fuzz_ws
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/net/io.h"
#include "tickpool/net/ws.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_ws: check failed: %s (line %d)\n", #c, __LINE__);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct fio {
    struct tp_io io;
    struct tp_buf out;
    size_t max_write;
    unsigned seq; /* drives WANT_WRITE */
    unsigned want_mod;
};

static ssize_t fio_write(struct tp_io *io, const void *buf, size_t n)
{
    struct fio *f = (struct fio *)io;
    f->seq++;
    if (f->want_mod != 0 && f->seq % f->want_mod == 0)
        return TP_IO_WANT_WRITE;
    size_t w = n > f->max_write ? f->max_write : n;
    tp_buf_append(&f->out, buf, w);
    return (ssize_t)w;
}

static const struct tp_io_ops fio_ops = {.write = fio_write};

static bool g_overflow; /* output was discarded: the byte stream may end mid-frame */

static void note(int r)
{
    CHECK(r == 0 || r == TP_ECLOSED || r == TP_ETOOBIG);
    if (r == TP_ETOOBIG)
        g_overflow = true;
}

static void on_message(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary, void *ud)
{
    (void)binary, (void)ud;
    if (len > 0 && data[0] == 'c')
        tp_ws_close(ws, TP_WS_CLOSE_NORMAL, "fuzz");
    else
        note(tp_ws_send(ws, data, len));
}

static void on_close(struct tp_ws *ws, uint16_t code, void *ud)
{
    (void)ws;
    *(int *)ud += 1;
    CHECK(code >= 1000 && code < 5000);
}

/* Checks the server byte stream; returns false on a malformed frame. */
static void check_output(const uint8_t *p, size_t n)
{
    bool closed = false;
    while (n > 0) {
        CHECK(!closed);
        CHECK(n >= 2);
        CHECK((p[0] & 0x70) == 0 && (p[0] & 0x80) != 0);
        CHECK((p[1] & 0x80) == 0);
        unsigned op = p[0] & 0x0f;
        CHECK(op == 0x2 || op == 0x8 || op == 0x9 || op == 0xA);
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            CHECK(n >= 4);
            len = (uint64_t)p[2] << 8 | p[3];
            CHECK(len >= 126);
            hl = 4;
        } else if (len == 127) {
            CHECK(n >= 10);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            CHECK(len > 0xffff);
            hl = 10;
        }
        CHECK(op < 0x8 || len <= 125);
        CHECK(n - hl >= len);
        closed = op == 0x8;
        p += hl + len;
        n -= hl + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    g_overflow = false;
    data++, size--;

    struct tp_ws_limits lim = {.max_message = 4096, .max_queue = 16384};
    int closes = 0;
    struct tp_ws_callbacks cb = {.on_message = on_message, .on_close = on_close};
    struct tp_ws *ws = tp_ws_new(&lim, &cb, &closes);
    struct fio f = {.io = {.ops = &fio_ops, .fd = -1},
                    .max_write = 1 + (ctl & 0x0f) * 37,
                    .want_mod = (ctl >> 4) & 3};
    tp_buf_init(&f.out);
    struct tp_ws_frame *tick = tp_ws_frame_new("tick", 4, TP_WS_KIND_TICK);
    struct tp_ws_frame *odds = tp_ws_frame_new("odds!", 5, TP_WS_KIND_ODDS);

    size_t chunk = 1 + (size_t)(ctl >> 6) * 61;
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        int r = tp_ws_feed(ws, data + off, n);
        CHECK(r == 0 || r == TP_ECLOSED);
        note(tp_ws_send_frame(ws, (off / chunk) % 2 ? tick : odds));
        if (off % 3 == 0)
            tp_ws_ping(ws);
        int fr = tp_ws_flush(ws, &f.io);
        CHECK(fr == 0 || fr == TP_IO_WANT_WRITE);
    }
    CHECK(closes <= 1);
    /* Drain: every queued byte must come out, then the accounting is zero. */
    f.want_mod = 0;
    for (int i = 0; i < 1000 && tp_ws_has_output(ws); i++)
        CHECK(tp_ws_flush(ws, &f.io) == 0);
    CHECK(!tp_ws_has_output(ws));
    CHECK(tp_ws_queued_bytes(ws) == 0);
    if (!g_overflow)
        check_output((const uint8_t *)tp_buf_ptr(&f.out), tp_buf_size(&f.out));
    tp_ws_free(ws);
    CHECK(tp_ws_frame_refs(tick) == 1 && tp_ws_frame_refs(odds) == 1);
    tp_ws_frame_unref(tick);
    tp_ws_frame_unref(odds);
    tp_buf_deinit(&f.out);

    /* Upgrade header checks on NUL-split pieces of the input. */
    char *s = malloc(size + 3);
    memcpy(s, data, size);
    s[size] = s[size + 1] = s[size + 2] = '\0';
    const char *key = s;
    const char *ver = key + strlen(key) + 1;
    const char *proto = ver + strlen(ver) + 1;
    char acc[29];
    if (tp_ws_check_upgrade(key, ver, proto, acc) == 0) {
        CHECK(strlen(acc) == 28);
        size_t kl = strlen(key);
        while (kl > 0 && (key[0] == ' ' || key[0] == '\t'))
            key++, kl--;
        while (kl > 0 && (key[kl - 1] == ' ' || key[kl - 1] == '\t'))
            kl--;
        CHECK(kl == 24);
    }
    (void)tp_ws_origin_allowed(key, ver, proto);
    (void)tp_ws_origin_allowed(key, "", ver);
    free(s);
    return 0;
}
