/*
 * libFuzzer target for the client frame parser (src/net/ws_frame.c). For each input:
 *  1. byte 0 picks the message limit and a chunk size; the rest is parsed twice by fresh
 *     parsers, once whole and once cut into chunks of that size: both must report the very
 *     same events (type, code, flags, bytes) and stop at the same offset (the parser keeps no
 *     hidden dependence on how reads are cut);
 *  2. every event must keep the parser's promises: messages within the limit, text messages
 *     UTF-8, control payloads of at most 125 bytes, close codes a peer may send (or 1005),
 *     errors only 1002/1007/1009 and sticky, the message buffer never above the limit;
 *  3. bytes given are used entirely unless an ERROR or CLOSE ended the stream.
 * Build: see tests/fuzz/meson.build; by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude \
 *     tests/fuzz/fuzz_ws_frame.c src/net/ws_frame.c src/base/common.c src/base/log.c \
 *     -o fuzz_ws_frame
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tickpool/base/common.h"
#include "tickpool/net/ws_frame.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_ws_frame: check failed: %s (line %d)\n", #c, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Events of one pass, hashed so that passes compare without storing payloads. */
struct trace {
    uint64_t hash;
    size_t events, used;
};

static void mix(struct trace *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        t->hash = (t->hash ^ b[i]) * 0x100000001b3ull; /* FNV-1a */
}

static void check_event(const struct tp_ws_frame_parser *p, const struct tp_ws_frame_event *ev,
                        size_t max_message)
{
    CHECK(p->msg_cap <= max_message);
    switch (ev->type) {
    case TP_WS_EV_DATA_HEADER:
        CHECK(ev->len <= max_message);
        break;
    case TP_WS_EV_MESSAGE:
        CHECK(ev->len <= max_message);
        CHECK(ev->binary || tp_ws_frame_utf8_valid(ev->data, ev->len));
        break;
    case TP_WS_EV_PING:
    case TP_WS_EV_PONG:
        CHECK(ev->len <= TP_WS_FRAME_CONTROL_MAX);
        break;
    case TP_WS_EV_CLOSE:
        CHECK(ev->len <= TP_WS_FRAME_CONTROL_MAX && ev->len != 1);
        CHECK(ev->len == 0 ? ev->code == 1005 : ev->code == (ev->data[0] << 8 | ev->data[1]));
        CHECK((ev->code >= 1000 && ev->code <= 1003) || (ev->code >= 1005 && ev->code <= 1014) ||
              (ev->code >= 3000 && ev->code <= 4999));
        break;
    case TP_WS_EV_ERROR:
        CHECK(ev->code == 1002 || ev->code == 1007 || ev->code == 1009);
        break;
    case TP_WS_EV_NONE:
        break;
    }
}

/* Parses in[0..n) in chunks of `chunk` bytes until the input ends or an ERROR/CLOSE. */
static struct trace pass(const uint8_t *in, size_t n, size_t chunk, size_t max_message)
{
    struct trace t = {.hash = 0xcbf29ce484222325ull};
    struct tp_ws_frame_parser p;
    tp_ws_frame_parser_init(&p, max_message);
    size_t off = 0;
    bool ended = false;
    while (!ended) {
        size_t end = n - off < chunk ? n : off + chunk;
        for (;;) {
            struct tp_ws_frame_event ev;
            size_t used = tp_ws_frame_parse(&p, in + off, end - off, &ev);
            CHECK(used <= end - off);
            off += used;
            check_event(&p, &ev, max_message);
            if (ev.type == TP_WS_EV_NONE) {
                CHECK(off == end);
                break;
            }
            t.events++;
            uint8_t head[4] = {(uint8_t)ev.type, (uint8_t)ev.binary, (uint8_t)(ev.code >> 8),
                               (uint8_t)ev.code};
            mix(&t, head, sizeof(head));
            mix(&t, &ev.len, sizeof(ev.len));
            if (ev.type != TP_WS_EV_DATA_HEADER && ev.type != TP_WS_EV_ERROR && ev.len > 0)
                mix(&t, ev.data, ev.len);
            if (ev.type == TP_WS_EV_ERROR) {
                /* sticky, and uses nothing more */
                struct tp_ws_frame_event again;
                CHECK(tp_ws_frame_parse(&p, in + off, n - off, &again) == 0);
                CHECK(again.type == TP_WS_EV_ERROR && again.code == ev.code);
                CHECK(p.msg == NULL);
            }
            if (ev.type == TP_WS_EV_ERROR || ev.type == TP_WS_EV_CLOSE) {
                ended = true;
                break;
            }
        }
        if (end == n)
            break;
    }
    tp_ws_frame_parser_deinit(&p);
    t.used = off;
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++, size--;
    static const size_t limits[4] = {0, 125, 4096, 1 << 20};
    size_t max_message = limits[ctl & 3];
    size_t chunk = 1 + (ctl >> 2) % 23;
    struct trace whole = pass(data, size, size > 0 ? size : 1, max_message);
    struct trace cut = pass(data, size, chunk, max_message);
    CHECK(whole.events == cut.events);
    CHECK(whole.hash == cut.hash);
    CHECK(whole.used == cut.used);
    return 0;
}
