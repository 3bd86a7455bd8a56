/* Unit tests for bet request validation (src/money/bet.c): pure, no loop, no Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tickpool/money/bet.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include <stdio.h>
#include <string.h>

static const struct tp_bet_limits lim = {.nbands = 5, .min_stake = 100, .max_stake = 100000};

static enum tp_bet_code pj(const char *json)
{
    struct tp_bet_req r = {-1, -1, -1};
    enum tp_bet_code c = tp_bet_parse(TP_FMT_JSON, json, strlen(json), &lim, &r);
    if (c != TP_BET_OK) /* untouched on error */
        assert_true(r.round_id == -1 && r.band == -1 && r.stake == -1);
    return c;
}

static void test_valid_json(void **state)
{
    (void)state;
    struct tp_bet_req r;
    const char *b = " {\"stake\": 100000, \"band\":4 ,\"round_id\":999999999999999, \"x\":[1]} ";
    assert_int_equal(tp_bet_parse(TP_FMT_JSON, b, strlen(b), &lim, &r), TP_BET_OK);
    assert_int_equal(r.round_id, 999999999999999LL);
    assert_int_equal(r.band, 4);
    assert_int_equal(r.stake, 100000);
    assert_int_equal(pj("{\"round_id\":1,\"band\":0,\"stake\":100}"), TP_BET_OK);
}

/* The answer of the full parser (a document, then tp_bet_parse_val); -1 when the document is
 * refused (tp_bet_parse then answers a 400 code of its own). */
static int full_parse(const char *body, struct tp_bet_req *out)
{
    struct tp_doc *doc = NULL;
    if (tp_doc_parse_ex(TP_FMT_JSON, body, strlen(body), TP_BET_MAX_BODY, &doc, NULL, 0) != 0)
        return -1;
    int c = (int)tp_bet_parse_val(tp_doc_root(doc), &lim, out);
    tp_doc_free(doc);
    return c;
}

/* tp_bet_parse reads the plain form {"round_id":N,"band":N,"stake":N} without a document: every
 * body, plain or nearly so, must get exactly the full parser's answer and values. */
static void test_plain_form_matches_full_parser(void **state)
{
    (void)state;
    const char *members[][3] = {
        {"\"round_id\":7", "\"band\":2", "\"stake\":100"},
        {"\"round_id\" : 999999999999999", "\"band\":\t4", "\"stake\":\r\n100000"},
        {"\"round_id\":0", "\"band\":5", "\"stake\":99"},
        {"\"round_id\":1000000000000000", "\"band\":0", "\"stake\":100001"},
        {"\"round_id\":123456789012345678", "\"band\":1", "\"stake\":1234567890123456789"},
        {"\"round_id\":07", "\"band\":-1", "\"stake\":-0"},
        {"\"round_id\":7.0", "\"band\":1e0", "\"stake\":100.5"},
        {"\"round_id\":\"7\"", "\"band\":null", "\"stake\":true"},
        {"\"round\\u005fid\":7", "\"band\":2", "\"stake\":99999999999999999999"},
        {"\"round_id\":7", "\"band\":2", "\"band\":3"},
        {"\"round_id\":7", "\"bands\":2", "\"stake\":100"},
    };
    static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                     {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const char *wraps[][2] = {{"{", "}"},  {" \n{ ", " }\t"},   {"{", "}x"},           {"[{", "}]"},
                              {"{", ",}"}, {"{", ", \"x\":1}"}, {"\xef\xbb\xbf{", "}"}};
    int plain_ok = 0;
    for (size_t a = 0; a < TP_ARRAY_LEN(members); a++)
        for (size_t b = 0; b < TP_ARRAY_LEN(members); b++)
            for (int o = 0; o < 6; o++)
                for (size_t w = 0; w < TP_ARRAY_LEN(wraps); w++) {
                    /* Members from two rows mixed: member i of row a for i < 2, of row b else. */
                    char body[512];
                    const char *m[3];
                    for (int i = 0; i < 3; i++)
                        m[i] = members[i < 2 ? a : b][orders[o][i]];
                    snprintf(body, sizeof(body), "%s%s,%s ,%s%s", wraps[w][0], m[0], m[1], m[2],
                             wraps[w][1]);
                    struct tp_bet_req want = {-1, -1, -1}, got = {-1, -1, -1};
                    int c = full_parse(body, &want);
                    enum tp_bet_code g = tp_bet_parse(TP_FMT_JSON, body, strlen(body), &lim, &got);
                    if (c < 0) {
                        assert_int_not_equal(g, TP_BET_OK);
                        continue;
                    }
                    if ((int)g != c)
                        fail_msg("%s: %d, full parser %d", body, (int)g, c);
                    if (c == TP_BET_OK) {
                        plain_ok++;
                        assert_true(got.round_id == want.round_id && got.band == want.band &&
                                    got.stake == want.stake);
                    }
                }
    assert_true(plain_ok > 100);
}

/* What every request is checked against before bet.lua: the widest rules any round can have
 * (a round's own bounds, fixed at its open, are bet.lua's to check). */
static void test_limits_any(void **state)
{
    (void)state;
    struct tp_bet_limits any;
    tp_bet_limits_any(&any);
    struct tp_bet_req r;
    static const struct {
        const char *body;
        enum tp_bet_code want;
    } cases[] = {
        {"{\"round_id\":1,\"band\":15,\"stake\":1}", TP_BET_OK},
        {"{\"round_id\":1,\"band\":0,\"stake\":999999999999999}", TP_BET_OK},
        {"{\"round_id\":1,\"band\":16,\"stake\":1}", TP_BET_INVALID_BAND},
        {"{\"round_id\":1,\"band\":0,\"stake\":1000000000000000}", TP_BET_INVALID_STAKE},
        {"{\"round_id\":1,\"band\":0,\"stake\":0}", TP_BET_INVALID_STAKE},
        {"{\"round_id\":1,\"band\":-1,\"stake\":1}", TP_BET_INVALID_BAND},
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(cases); i++)
        assert_int_equal(tp_bet_parse(TP_FMT_JSON, cases[i].body, strlen(cases[i].body), &any, &r),
                         cases[i].want);
}

static void test_bad_stakes(void **state)
{
    (void)state;
    static const char *bad[] = {"1.0",
                                "100.0",
                                "1e2",
                                "1E2",
                                "100e0",
                                "\"100\"",
                                "true",
                                "false",
                                "null",
                                "[100]",
                                "{}",
                                "99",
                                "100001",
                                "-100",
                                "0",
                                "99999999999999999999",
                                "-99999999999999999999",
                                "1e400",
                                "9223372036854775808"};
    char buf[128];
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        snprintf(buf, sizeof(buf), "{\"round_id\":1,\"band\":0,\"stake\":%s}", bad[i]);
        if (pj(buf) != TP_BET_INVALID_STAKE)
            fail_msg("stake %s accepted or misclassified", bad[i]);
        /* The overflow classifier also works when stake is not the last member. */
        snprintf(buf, sizeof(buf), "{\"stake\" : %s , \"round_id\":1,\"band\":0}", bad[i]);
        if (pj(buf) != TP_BET_INVALID_STAKE)
            fail_msg("stake %s (first) accepted or misclassified", bad[i]);
    }
    /* NaN/Infinity are not JSON at all. */
    assert_int_equal(pj("{\"round_id\":1,\"band\":0,\"stake\":NaN}"), TP_BET_INVALID_REQUEST);
    assert_int_equal(pj("{\"round_id\":1,\"band\":0,\"stake\":Infinity}"), TP_BET_INVALID_REQUEST);
}

static void test_bad_bands(void **state)
{
    (void)state;
    static const char *bad[] = {"5",    "-1",   "0.0", "1e0",        "\"0\"",
                                "null", "true", "[0]", "2147483648", "99999999999999999999"};
    char buf[128];
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        snprintf(buf, sizeof(buf), "{\"round_id\":1,\"band\":%s,\"stake\":100}", bad[i]);
        if (pj(buf) != TP_BET_INVALID_BAND)
            fail_msg("band %s accepted or misclassified", bad[i]);
    }
}

static void test_bad_round_ids_and_shapes(void **state)
{
    (void)state;
    static const char *bad_round[] = {
        "0", "-1", "1.0", "\"1\"", "null", "true", "1000000000000000", "99999999999999999999"};
    char buf[128];
    for (size_t i = 0; i < TP_ARRAY_LEN(bad_round); i++) {
        snprintf(buf, sizeof(buf), "{\"round_id\":%s,\"band\":0,\"stake\":100}", bad_round[i]);
        if (pj(buf) != TP_BET_INVALID_REQUEST)
            fail_msg("round_id %s accepted or misclassified", bad_round[i]);
    }
    static const char *bad[] = {"",
                                " ",
                                "[]",
                                "1",
                                "\"x\"",
                                "null",
                                "{",
                                "{\"round_id\":1,\"band\":0,\"stake\":100}x",
                                "{\"round_id\":1,\"band\":0,\"stake\":100,\"stake\":200}",
                                "{\"band\":0,\"stake\":100}",
                                "{\"round_id\":1,\"stake\":100}",
                                "{\"round_id\":1,\"band\":0}",
                                "{\"round_id\":1,\"band\":0,\"stake\":100,\"z\":\"\xff\"}",
                                "{\"Round_id\":1,\"band\":0,\"stake\":100}"};
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++)
        if (pj(bad[i]) != TP_BET_INVALID_REQUEST)
            fail_msg("body %zu accepted or misclassified", i);
    /* A missing member outranks a bad one. */
    assert_int_equal(pj("{\"round_id\":1,\"band\":9}"), TP_BET_INVALID_REQUEST);
}

static void test_oversized(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    tp_buf_puts(&b, "{\"round_id\":1,\"band\":0,\"stake\":100,\"pad\":\"");
    while (tp_buf_size(&b) < TP_BET_MAX_BODY)
        tp_buf_puts(&b, "xxxxxxxx");
    tp_buf_puts(&b, "\"}");
    struct tp_bet_req r;
    assert_int_equal(tp_bet_parse(TP_FMT_JSON, tp_buf_ptr(&b), tp_buf_size(&b), &lim, &r),
                     TP_BET_INVALID_REQUEST);
    /* Deep nesting is refused by the parser, not by the stack. */
    tp_buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        tp_buf_puts(&b, "[");
    assert_int_equal(tp_bet_parse(TP_FMT_JSON, tp_buf_ptr(&b), tp_buf_size(&b), &lim, &r),
                     TP_BET_INVALID_REQUEST);
    assert_int_equal(tp_bet_parse(TP_FMT_MSGPACK, tp_buf_ptr(&b), tp_buf_size(&b), &lim, &r),
                     TP_BET_INVALID_REQUEST);
    assert_int_equal(tp_bet_parse(TP_FMT_JSON, NULL, 0, &lim, &r), TP_BET_INVALID_REQUEST);
    tp_buf_deinit(&b);
}

/* MessagePack bodies built with the codec writer. */
enum kind { K_INT, K_UINT, K_DBL, K_STR, K_NIL, K_BOOL };
static enum tp_bet_code pm(enum kind k, int64_t round_id, int64_t band, uint64_t stake_u,
                           double stake_d)
{
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    tp_wr_map(&w, 3);
    tp_wr_key(&w, "round_id");
    tp_wr_int(&w, round_id);
    tp_wr_key(&w, "band");
    tp_wr_int(&w, band);
    tp_wr_key(&w, "stake");
    switch (k) {
    case K_INT:
        tp_wr_int(&w, (int64_t)stake_u);
        break;
    case K_UINT:
        tp_wr_uint(&w, stake_u);
        break;
    case K_DBL:
        tp_wr_double(&w, stake_d);
        break;
    case K_STR:
        tp_wr_str(&w, "100");
        break;
    case K_NIL:
        tp_wr_null(&w);
        break;
    case K_BOOL:
        tp_wr_bool(&w, true);
        break;
    }
    struct tp_bet_req r;
    enum tp_bet_code c = tp_bet_parse(TP_FMT_MSGPACK, tp_buf_ptr(&b), tp_buf_size(&b), &lim, &r);
    tp_buf_deinit(&b);
    return c;
}

static void test_msgpack(void **state)
{
    (void)state;
    assert_int_equal(pm(K_INT, 1, 0, 100, 0), TP_BET_OK);
    assert_int_equal(pm(K_UINT, 1, 0, 100, 0), TP_BET_OK);
    assert_int_equal(pm(K_UINT, 1, 0, UINT64_MAX, 0), TP_BET_INVALID_STAKE);
    assert_int_equal(pm(K_DBL, 1, 0, 0, 100.0), TP_BET_INVALID_STAKE);
    assert_int_equal(pm(K_STR, 1, 0, 0, 0), TP_BET_INVALID_STAKE);
    assert_int_equal(pm(K_NIL, 1, 0, 0, 0), TP_BET_INVALID_STAKE);
    assert_int_equal(pm(K_BOOL, 1, 0, 0, 0), TP_BET_INVALID_STAKE);
    assert_int_equal(pm(K_INT, 1, 5, 100, 0), TP_BET_INVALID_BAND);
    assert_int_equal(pm(K_INT, 0, 0, 100, 0), TP_BET_INVALID_REQUEST);
    assert_int_equal(pm(K_INT, 1, 0, 99, 0), TP_BET_INVALID_STAKE);
    /* Malformed MessagePack: truncated map, reserved byte 0xc1, array root, trailing bytes. */
    static const struct {
        const char *p;
        size_t n;
    } bad[] = {{"\x83\xa8round_id\x01", 11},
               {"\xc1", 1},
               {"\x93\x01\x00\x64", 4},
               {"\x81\xa1x\x01\x00", 5}};
    struct tp_bet_req r;
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++)
        assert_int_equal(tp_bet_parse(TP_FMT_MSGPACK, bad[i].p, bad[i].n, &lim, &r),
                         TP_BET_INVALID_REQUEST);
}

static void test_keys(void **state)
{
    (void)state;
    char k[TP_BET_KEY_MAX + 1];
    memset(k, 'a', sizeof(k));
    assert_int_equal(tp_bet_check_key(NULL, 0), TP_BET_KEY_REQUIRED);
    assert_int_equal(tp_bet_check_key("", 0), TP_BET_KEY_REQUIRED);
    assert_int_equal(tp_bet_check_key(k, 1), TP_BET_OK);
    assert_int_equal(tp_bet_check_key(k, TP_BET_KEY_MAX), TP_BET_OK);
    assert_int_equal(tp_bet_check_key(k, TP_BET_KEY_MAX + 1), TP_BET_KEY_REQUIRED);
    assert_int_equal(tp_bet_check_key("~!{}:|", 6), TP_BET_OK);
    static const char *bad[] = {"a b", "a\tb", "a\x7f", "\xc3\xa9", "a\nb", "a\rb"};
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++)
        assert_int_equal(tp_bet_check_key(bad[i], strlen(bad[i])), TP_BET_KEY_REQUIRED);
    assert_int_equal(tp_bet_check_key("a\0b", 3), TP_BET_KEY_REQUIRED);
}

/* Body formats are the router's (tests/unit/net/test_router.c), statuses api/bets' (test_bets). */
static void test_codes(void **state)
{
    (void)state;
    assert_string_equal(tp_bet_code_name(TP_BET_INVALID_STAKE), "invalid_stake");
    assert_string_equal(tp_bet_code_name(TP_BET_KEY_REQUIRED), "idempotency_key_required");
    assert_int_equal(tp_bet_code_from_err(TP_EAGAIN), TP_BET_OVERLOADED);
    assert_int_equal(tp_bet_code_from_err(TP_ECONFLICT), TP_BET_IDEMPOTENCY_CONFLICT);
    assert_int_equal(tp_bet_code_from_err(TP_EUNAVAIL), TP_BET_UNAVAILABLE);
}

/* Every error code has its series in tickpool_bets_rejected_total, and an answer lands there
 * and in the latency histogram of its transport. A new code fails here until it is listed in
 * TP_METRICS_SET_BET_CODE. */
static void test_answers_counted_by_code(void **state)
{
    (void)state;
    /* Past the last code tp_bet_code_name says "unavailable": 64 covers every code. */
    for (int c = TP_BET_OK + 1; c < 64; c++)
        if (tp_metrics_label_index(TP_METRIC_FAMILY_BETS_REJECTED, 0,
                                   tp_bet_code_name((enum tp_bet_code)c)) < 0)
            fail_msg("bet code %s has no tickpool_bets_rejected_total series",
                     tp_bet_code_name((enum tp_bet_code)c));
    enum tp_metric_family lat = TP_METRIC_FAMILY_BET_LATENCY;
    int64_t ws = tp_metrics_family_get(lat, TP_METRICS_TRANSPORT_WS, 0);
    int64_t ok = tp_metrics_get_total(TP_METRIC_BETS_ACCEPTED_TOTAL);
    tp_bet_count_answer(TP_METRICS_TRANSPORT_WS, tp_mono_ns(), TP_BET_ROUND_NOT_OPEN);
    tp_bet_count_answer(TP_METRICS_TRANSPORT_WS, tp_mono_ns(), TP_BET_OK);
    assert_int_equal(tp_metrics_family_get(TP_METRIC_FAMILY_BETS_REJECTED,
                                           TP_METRICS_BET_CODE_ROUND_NOT_OPEN, 0),
                     1);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_BETS_ACCEPTED_TOTAL), ok + 1);
    assert_int_equal(tp_metrics_family_get(lat, TP_METRICS_TRANSPORT_WS, 0), ws + 2);
}

static void test_write_fields_deterministic(void **state)
{
    (void)state;
    struct tp_bet_result res = {
        .code = TP_BET_OK, .bet_id = 9, .round_id = 5, .band = 2, .stake = 1500, .balance = 98500};
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, TP_FMT_JSON);
    tp_wr_map(&w, 5);
    tp_bet_write_fields(&w, &res);
    assert_true(tp_wr_done(&w));
    const char want[] = "{\"bet_id\":9,\"round_id\":5,\"band\":2,\"stake\":1500,\"balance\":98500}";
    assert_int_equal(tp_buf_size(&b), sizeof(want) - 1);
    assert_memory_equal(tp_buf_ptr(&b), want, sizeof(want) - 1);
    tp_buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_json),
        cmocka_unit_test(test_plain_form_matches_full_parser),
        cmocka_unit_test(test_limits_any),
        cmocka_unit_test(test_bad_stakes),
        cmocka_unit_test(test_bad_bands),
        cmocka_unit_test(test_bad_round_ids_and_shapes),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_msgpack),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_write_fields_deterministic),
        cmocka_unit_test(test_answers_counted_by_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
