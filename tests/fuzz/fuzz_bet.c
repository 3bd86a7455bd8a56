/*
 * libFuzzer target for bet request parsing (src/money/bet.c). tp_bet_parse reads the plain JSON
 * form {"round_id":N,"band":N,"stake":N} without building a document; for every input its answer
 * and values must be the full parser's (a document, then tp_bet_parse_val), and an input the
 * document parser refuses must never be accepted.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/money/bet.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_bet: check failed: %s (line %d)\n", #c, __LINE__);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > TP_BET_MAX_BODY)
        return 0;
    const struct tp_bet_limits lim = {.nbands = 5, .min_stake = 100, .max_stake = 100000};
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
