/* Unit tests for loadgen's hand-written formats (bench/lg_proto.c) that replaced library calls on
 * its per-bet path: the key's sequence number and the --latencies line must be what printf wrote,
 * a masked frame must unmask to its payload at every length, and the bet_ok reader must take
 * exactly the messages tickpool writes (tp_protocol_bet_ok) and refuse everything else, so the
 * caller parses those in full as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/money/bet.h"
#include "tickpool/stream/protocol.h"

#include "lg_proto.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void test_seq_matches_printf(void **state)
{
    (void)state;
    const uint64_t v[] = {0,         1,         9,         10,         12345678,
                          99999999,  100000000, 123456789, UINT32_MAX, (uint64_t)INT64_MAX,
                          UINT64_MAX};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char want[32], got[32];
        int n = snprintf(want, sizeof(want), "%08" PRIu64, v[i]);
        memset(got, 'x', sizeof(got));
        assert_int_equal(lg_fmt_seq(got, v[i]), (size_t)n);
        got[n] = 0;
        assert_string_equal(got, want);
    }
}

static void test_latency_line_matches_printf(void **state)
{
    (void)state;
    const int64_t due[] = {0, 1, -1, 1796480146629, INT64_MAX, INT64_MIN};
    const uint64_t lat[] = {0, 7, 39040, UINT64_MAX};
    for (size_t i = 0; i < sizeof(due) / sizeof(due[0]); i++) {
        for (size_t j = 0; j < sizeof(lat) / sizeof(lat[0]); j++) {
            char want[64], got[64];
            int n = snprintf(want, sizeof(want), "%" PRId64 " %" PRIu64 "\n", due[i], lat[j]);
            memset(got, 'x', sizeof(got));
            size_t len = lg_fmt_latency_line(got, due[i], lat[j]);
            assert_true(len <= 43);
            assert_int_equal(len, (size_t)n);
            got[len] = 0;
            assert_string_equal(got, want);
        }
    }
}

/* Every payload length around the eight-byte steps and both lengths' header forms: the payload
 * unmasks (byte by byte, as a server does) to what was given. */
static void test_frame_unmasks_to_payload(void **state)
{
    (void)state;
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 37 + 11);
    const uint32_t masks[] = {0, 0x01020304u, 0xffffffffu, 0x9e3779b9u};
    for (size_t m = 0; m < 4; m++) {
        for (size_t n = 0; n <= sizeof(payload); n++) {
            struct tp_buf out;
            tp_buf_init(&out);
            lg_ws_frame(&out, 2, payload, n, masks[m]);
            const uint8_t *f = (const uint8_t *)tp_buf_ptr(&out);
            size_t h = n < 126 ? 2 : 4;
            assert_int_equal(tp_buf_size(&out), h + 4 + n);
            assert_int_equal(f[0], 0x82);
            assert_int_equal(f[1] & 0x80, 0x80);
            const uint8_t *mk = f + h;
            assert_int_equal(mk[0] | mk[1] << 8 | mk[2] << 16 | (uint32_t)mk[3] << 24, masks[m]);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(f[h + 4 + i] ^ mk[i & 3], payload[i]);
            tp_buf_deinit(&out);
        }
    }
}

static const struct tp_bet_result RESULT = {.code = TP_BET_OK,
                                            .bet_id = 123456789012,
                                            .round_id = 20791,
                                            .band = 3,
                                            .stake = 100,
                                            .balance = -5,
                                            .replayed = false};

/* tickpool's bet_ok for a client req written as loadgen writes it (tp_wr_uint). */
static void bet_ok_for(struct tp_buf *msg, uint64_t req)
{
    struct tp_buf r;
    tp_buf_init(&r);
    struct tp_wr w;
    tp_wr_init(&w, &r, TP_FMT_MSGPACK);
    tp_wr_uint(&w, req);
    tp_protocol_bet_ok(msg, tp_buf_ptr(&r), tp_buf_size(&r), &RESULT);
    tp_buf_deinit(&r);
}

static void test_bet_ok_read_for_every_req_width(void **state)
{
    (void)state;
    const uint64_t reqs[] = {
        0, 1, 127, 128, 255, 256, 65535, 65536, UINT32_MAX, (uint64_t)UINT32_MAX + 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct tp_buf msg;
        tp_buf_init(&msg);
        bet_ok_for(&msg, reqs[i]);
        uint64_t got = 7;
        assert_true(lg_ws_bet_ok_req((const uint8_t *)tp_buf_ptr(&msg), tp_buf_size(&msg), &got));
        assert_true(got == reqs[i]);
        tp_buf_deinit(&msg);
    }
}

/* A cut message, one with a byte after it, and every message that is not a plain bet_ok with an
 * unsigned req are refused: the caller parses them in full. */
static void test_bet_ok_refuses_others(void **state)
{
    (void)state;
    struct tp_buf msg;
    tp_buf_init(&msg);
    bet_ok_for(&msg, 4242);
    const uint8_t *p = (const uint8_t *)tp_buf_ptr(&msg);
    size_t n = tp_buf_size(&msg);
    uint64_t req;
    for (size_t cut = 0; cut < n; cut++)
        assert_false(lg_ws_bet_ok_req(p, cut, &req));
    uint8_t longer[256];
    memcpy(longer, p, n);
    longer[n] = 0x00;
    assert_false(lg_ws_bet_ok_req(longer, n + 1, &req));
    /* Any one byte changed in t's value, or req's key, is not a bet_ok. */
    for (size_t i = 1; i < 14; i++) {
        memcpy(longer, p, n);
        longer[i] ^= 0x01;
        assert_false(lg_ws_bet_ok_req(longer, n, &req));
    }
    tp_buf_deinit(&msg);

    /* No req (nil), a negative req, a string req. */
    struct tp_buf r;
    tp_buf_init(&msg);
    tp_protocol_bet_ok(&msg, NULL, 0, &RESULT);
    assert_false(lg_ws_bet_ok_req((const uint8_t *)tp_buf_ptr(&msg), tp_buf_size(&msg), &req));
    tp_buf_deinit(&msg);
    const char *bad_reqs[] = {"\xff", "\xd0\x80", "\xa1x"};
    for (size_t i = 0; i < 3; i++) {
        tp_buf_init(&msg);
        tp_protocol_bet_ok(&msg, bad_reqs[i], strlen(bad_reqs[i]), &RESULT);
        assert_false(lg_ws_bet_ok_req((const uint8_t *)tp_buf_ptr(&msg), tp_buf_size(&msg), &req));
        tp_buf_deinit(&msg);
    }

    /* A bet_err. */
    tp_buf_init(&msg);
    tp_protocol_bet_err(&msg, "\x05", 1, TP_BET_INSUFFICIENT_FUNDS);
    assert_false(lg_ws_bet_ok_req((const uint8_t *)tp_buf_ptr(&msg), tp_buf_size(&msg), &req));
    tp_buf_deinit(&msg);

    /* A bet_ok whose later field is not an integer (a string, a map, nil, a float): not this
     * reader's. */
    static const char head[] = "\x83\xa1t\xa6"
                               "bet_ok\xa3req\x05\xa1x";
    const struct {
        const char *p;
        size_t n;
    } values[] = {
        {"\xa2ok", 3}, {"\x81\xa1k\x01", 4}, {"\xc0", 1}, {"\xcb\x3f\xf0\0\0\0\0\0\0", 9}};
    for (size_t i = 0; i < 4; i++) {
        tp_buf_init(&r);
        tp_buf_append(&r, head, sizeof(head) - 1);
        tp_buf_append(&r, values[i].p, values[i].n);
        assert_false(lg_ws_bet_ok_req((const uint8_t *)tp_buf_ptr(&r), tp_buf_size(&r), &req));
        tp_buf_deinit(&r);
    }
    /* The same with an integer: taken (the reader's own positive case, by hand). */
    tp_buf_init(&r);
    tp_buf_append(&r, head, sizeof(head) - 1);
    tp_buf_append(&r, "\xd1\xff\x00", 3);
    assert_true(lg_ws_bet_ok_req((const uint8_t *)tp_buf_ptr(&r), tp_buf_size(&r), &req));
    assert_true(req == 5);
    tp_buf_deinit(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_matches_printf),
        cmocka_unit_test(test_latency_line_matches_printf),
        cmocka_unit_test(test_frame_unmasks_to_payload),
        cmocka_unit_test(test_bet_ok_read_for_every_req_width),
        cmocka_unit_test(test_bet_ok_refuses_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
