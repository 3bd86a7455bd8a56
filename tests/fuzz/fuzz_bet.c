/*
 * libFuzzer target for bet request parsing (src/money/bet.c). tp_bet_parse reads the plain JSON
 * form {"round_id":N,"band":N,"stake":N} without building a document; for every input its answer
 * and values must be the full parser's (a document, then tp_bet_parse_val), and an input the
 * document parser refuses must never be accepted. The same input as a WebSocket `bet` message:
 * whenever tp_protocol_bet_read (src/stream/protocol.c) reads it from its bytes, the document
 * reader must accept it too and read the same members (t "bet", an integer req, a string key and
 * the three integers), the key must pass tp_bet_check_key, and tp_bet_check must answer what
 * tp_bet_parse_val answers on the document.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/money/bet.h"
#include "tickpool/stream/protocol.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_bet: check failed: %s (line %d)\n", #c, __LINE__);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The WebSocket bet reader against the document reader, for the input as a message. */
static void ws_bet(const uint8_t *data, size_t size, const struct tp_bet_limits *lim)
{
    struct tp_protocol_bet_msg m;
    if (!tp_protocol_bet_read(data, size, &m))
        return;
    struct tp_doc *doc = NULL;
    CHECK(tp_doc_parse_ex(TP_FMT_MSGPACK, (const char *)data, size, size, &doc, NULL, 0) == 0);
    const struct tp_val *v = tp_doc_root(doc);
    const char *t = NULL, *key = NULL;
    size_t klen = 0;
    int64_t req = 0;
    CHECK(tp_val_type(v) == TP_VAL_MAP && tp_val_len(v) == 6);
    CHECK(tp_val_get_str(v, "t", &t, NULL) == 0 && strcmp(t, "bet") == 0);
    CHECK(tp_val_get_int(v, "req", &req) == 0 && req == m.req);
    CHECK(tp_val_get_str(v, "key", &key, &klen) == 0 && klen == m.klen &&
          memcmp(key, m.key, klen) == 0 && tp_bet_check_key(key, klen) == TP_BET_OK);
    struct tp_bet_req got = {-1, -1, -1}, want = {-1, -1, -1};
    enum tp_bet_code c = tp_bet_parse_val(v, lim, &want);
    CHECK(tp_bet_check(m.round_id, m.band, m.stake, lim, &got) == c);
    if (c == TP_BET_OK)
        CHECK(got.round_id == want.round_id && got.band == want.band && got.stake == want.stake);
    tp_doc_free(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct tp_bet_limits lim = {.nbands = 5, .min_stake = 100, .max_stake = 100000};
    ws_bet(data, size, &lim);
    if (size == 0 || size > TP_BET_MAX_BODY)
        return 0;
    struct tp_bet_req got = {-1, -1, -1}, want = {-1, -1, -1};
    enum tp_bet_code g = tp_bet_parse(TP_FMT_JSON, data, size, &lim, &got);
    struct tp_doc *doc = NULL;
    if (tp_doc_parse_ex(TP_FMT_JSON, (const char *)data, size, TP_BET_MAX_BODY, &doc, NULL, 0) !=
        0) {
        CHECK(g != TP_BET_OK);
        return 0;
    }
    enum tp_bet_code c = tp_bet_parse_val(tp_doc_root(doc), &lim, &want);
    tp_doc_free(doc);
    CHECK(g == c);
    if (c == TP_BET_OK)
        CHECK(got.round_id == want.round_id && got.band == want.band && got.stake == want.stake);
    return 0;
}
