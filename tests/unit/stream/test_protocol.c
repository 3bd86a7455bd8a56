/*
 * Unit tests of the WebSocket protocol encoders (src/stream/protocol.c): every server message
 * of docs/protocol.md is encoded, decoded with the codec's MessagePack reader and checked field
 * by field (count, names, types, nil rules); the Round object in both formats; the exact bytes
 * of a `tick` (clients and the fan-out depend on the wire form); determinism, which odds
 * change detection relies on; and tp_protocol_peek reading each kind back for the fan-out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/pause.h"
#include "tickpool/game/settle.h"
#include "tickpool/stream/protocol.h"

/* --- Helpers --- */

struct msg {
    struct tp_buf b;
    struct tp_doc *d;
    const struct tp_val *m;
};

/* Decodes out's bytes as one MessagePack map of `nfields` pairs whose `t` is `t`. */
static void decode(struct msg *x, const char *t, size_t nfields)
{
    assert_int_equal(tp_doc_parse_ex(TP_FMT_MSGPACK, tp_buf_ptr(&x->b), tp_buf_size(&x->b), 1 << 20,
                                     &x->d, NULL, 0),
                     0);
    x->m = tp_doc_root(x->d);
    assert_int_equal(tp_val_type(x->m), TP_VAL_MAP);
    assert_int_equal(tp_val_len(x->m), nfields);
    const char *got;
    assert_int_equal(tp_val_get_str(x->m, "t", &got, NULL), 0);
    assert_string_equal(got, t);
}

static void done(struct msg *x)
{
    tp_doc_free(x->d);
    tp_buf_deinit(&x->b);
}

static int64_t get_int(const struct tp_val *m, const char *key)
{
    int64_t v = 0;
    assert_int_equal(tp_val_get_int(m, key, &v), 0);
    return v;
}

static void assert_str(const struct tp_val *m, const char *key, const char *want)
{
    const char *got;
    assert_int_equal(tp_val_get_str(m, key, &got, NULL), 0);
    assert_string_equal(got, want);
}

static void assert_nil(const struct tp_val *m, const char *key)
{
    const struct tp_val *v = tp_val_get(m, key);
    assert_non_null(v); /* present, as nil */
    assert_int_equal(tp_val_type(v), TP_VAL_NULL);
}

/* A settled round: 3 bands (edges -10, 10 bps), pools recorded, receipt set. */
static void settled_round(struct tp_game_round *r)
{
    memset(r, 0, sizeof(*r));
    r->id = 12;
    r->state = TP_ROUND_SETTLED;
    r->t = (struct tp_round_times){.opens_at = 1000, .locks_at = 31000, .closes_at = 61000};
    snprintf(r->seed_hash, sizeof(r->seed_hash), "%064d", 7);
    snprintf(r->seed, sizeof(r->seed), "%064d", 8);
    r->has_lock = r->has_close = true;
    r->lock_price = 6501301;
    r->close_price = 6502000;
    r->winning_band = 1;
    r->edges[0] = -10;
    r->edges[1] = 10;
    r->n_edges = 2;
    r->rake_bps = 300;
    r->min_stake = 100;
    r->max_stake = 100000;
    r->vol_ppb = 250;
    r->betting_ms = 30000;
    r->tick_ms = 100;
    r->has_pools = true;
    r->pools[0] = 0;
    r->pools[1] = 500;
    r->pools[2] = 1500;
    r->has_receipt = true;
    r->receipt = (struct tp_settle_receipt){.total = 2000,
                                            .winning_stake = 500,
                                            .rake = 60,
                                            .breakage = 1,
                                            .payouts = 1939,
                                            .refunds = 0};
}

/* Checks a Round object against `r` as the contract shows it (`state` is the public name). */
static void check_round(const struct tp_val *o, const struct tp_game_round *r, const char *state,
                        bool receipt)
{
    assert_int_equal(tp_val_type(o), TP_VAL_MAP);
    assert_int_equal(tp_val_len(o), 20);
    assert_int_equal(get_int(o, "id"), r->id);
    assert_str(o, "state", state);
    assert_int_equal(get_int(o, "opens_at"), r->t.opens_at);
    assert_int_equal(get_int(o, "locks_at"), r->t.locks_at);
    assert_int_equal(get_int(o, "closes_at"), r->t.closes_at);
    assert_str(o, "seed_hash", r->seed_hash);
    if (r->seed[0])
        assert_str(o, "seed", r->seed);
    else
        assert_nil(o, "seed");
    assert_int_equal(get_int(o, "vol_ppb"), r->vol_ppb);
    assert_int_equal(get_int(o, "tick_ms"), r->tick_ms);
    assert_int_equal(get_int(o, "rake_bps"), r->rake_bps);
    if (r->min_stake > 0) {
        assert_int_equal(get_int(o, "min_stake"), r->min_stake);
        assert_int_equal(get_int(o, "max_stake"), r->max_stake);
    } else {
        assert_nil(o, "min_stake");
        assert_nil(o, "max_stake");
    }
    if (r->has_lock)
        assert_int_equal(get_int(o, "lock_price"), r->lock_price);
    else
        assert_nil(o, "lock_price");
    if (r->has_close) {
        assert_int_equal(get_int(o, "close_price"), r->close_price);
        assert_int_equal(get_int(o, "winning_band"), r->winning_band);
    } else {
        assert_nil(o, "close_price");
        assert_nil(o, "winning_band");
    }
    int nb = r->n_edges + 1;
    const struct tp_val *bands = tp_val_get(o, "bands");
    assert_int_equal(tp_val_len(bands), (size_t)nb);
    for (int i = 0; i < nb; i++) {
        const struct tp_val *b = tp_val_at(bands, (size_t)i);
        assert_int_equal(tp_val_len(b), 3);
        assert_int_equal(get_int(b, "index"), i);
        if (i == 0)
            assert_nil(b, "lo_bps");
        else
            assert_int_equal(get_int(b, "lo_bps"), r->edges[i - 1]);
        if (i == nb - 1)
            assert_nil(b, "hi_bps");
        else
            assert_int_equal(get_int(b, "hi_bps"), r->edges[i]);
    }
    const struct tp_val *pools = tp_val_get(o, "pools");
    const struct tp_val *mult = tp_val_get(o, "multipliers");
    assert_int_equal(tp_val_len(pools), (size_t)nb);
    assert_int_equal(tp_val_len(mult), (size_t)nb);
    int64_t total = 0;
    double want[TP_ROUND_MAX_BANDS];
    bool any = tp_settle_multipliers(r->pools, nb, r->rake_bps, want) == 0;
    for (int i = 0; i < nb; i++) {
        assert_int_equal(tp_val_int(tp_val_at(pools, (size_t)i)), r->pools[i]);
        total += r->pools[i];
        if (!any || r->pools[i] == 0) {
            assert_int_equal(tp_val_type(tp_val_at(mult, (size_t)i)), TP_VAL_NULL);
        } else {
            assert_int_equal(tp_val_type(tp_val_at(mult, (size_t)i)), TP_VAL_FLOAT);
            assert_true(tp_val_double(tp_val_at(mult, (size_t)i)) == want[i]);
        }
    }
    assert_int_equal(get_int(o, "total"), total);
    if (!receipt) {
        assert_nil(o, "receipt");
        return;
    }
    const struct tp_val *rc = tp_val_get(o, "receipt");
    assert_int_equal(tp_val_len(rc), 6);
    assert_int_equal(get_int(rc, "total"), r->receipt.total);
    assert_int_equal(get_int(rc, "winning_stake"), r->receipt.winning_stake);
    assert_int_equal(get_int(rc, "rake"), r->receipt.rake);
    assert_int_equal(get_int(rc, "breakage"), r->receipt.breakage);
    assert_int_equal(get_int(rc, "payouts"), r->receipt.payouts);
    assert_int_equal(get_int(rc, "refunds"), r->receipt.refunds);
}

/* --- Messages --- */

static void test_hello(void **state)
{
    (void)state;
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_hello(&x.b, 1718000000123, 42, true, 99500);
    decode(&x, "hello", 4);
    assert_int_equal(get_int(x.m, "server_time"), 1718000000123);
    assert_int_equal(get_int(x.m, "user_id"), 42);
    assert_int_equal(get_int(x.m, "balance"), 99500);
    done(&x);

    /* Balance unreadable: nil. Anonymous: both nil, whatever the balance says. */
    tp_buf_init(&x.b);
    tp_protocol_hello(&x.b, 5, 42, false, 99500);
    decode(&x, "hello", 4);
    assert_int_equal(get_int(x.m, "user_id"), 42);
    assert_nil(x.m, "balance");
    done(&x);
    tp_buf_init(&x.b);
    tp_protocol_hello(&x.b, 5, 0, true, 99500);
    decode(&x, "hello", 4);
    assert_nil(x.m, "user_id");
    assert_nil(x.m, "balance");
    done(&x);
}

static void test_snapshot(void **state)
{
    (void)state;
    struct tp_game_round open, live;
    settled_round(&live);
    live.id = 11;
    live.state = TP_ROUND_SETTLING; /* shows as live */
    live.has_receipt = false;
    live.has_close = false;
    live.min_stake = live.max_stake = 0; /* opened before rounds carried their bounds: null */
    settled_round(&open);
    open.state = TP_ROUND_OPEN;
    open.seed[0] = '\0';
    open.has_lock = open.has_close = open.has_receipt = false;
    open.winning_band = -1;
    int64_t ticks[6] = {1718000000000, 6501234, 1718000000100, 6501190, 1718000000200, 1};
    struct msg x;
    tp_buf_init(&x.b);
    struct tp_game_pause paused = {.paused = true, .since = 1718000000000, .by = "ops@h"};
    snprintf(paused.reason, sizeof(paused.reason), "maintenance \"db\"");
    tp_protocol_snapshot(&x.b, &open, &live, ticks, 3, &paused);
    decode(&x, "snapshot", 4);
    const struct tp_val *pv = tp_val_get(x.m, "paused");
    assert_int_equal(tp_val_len(pv), 2); /* since and reason; never who paused */
    assert_int_equal(tp_val_int(tp_val_get(pv, "since")), 1718000000000);
    assert_string_equal(tp_val_str(tp_val_get(pv, "reason"), NULL), "maintenance \"db\"");
    const struct tp_val *rounds = tp_val_get(x.m, "rounds");
    assert_int_equal(tp_val_len(rounds), 2);
    check_round(tp_val_get(rounds, "open"), &open, "open", false);
    check_round(tp_val_get(rounds, "live"), &live, "live", false);
    const struct tp_val *t = tp_val_get(x.m, "ticks");
    assert_int_equal(tp_val_len(t), 3);
    for (size_t i = 0; i < 3; i++) {
        const struct tp_val *p = tp_val_at(t, i);
        assert_int_equal(tp_val_type(p), TP_VAL_ARRAY);
        assert_int_equal(tp_val_len(p), 2);
        assert_int_equal(tp_val_int(tp_val_at(p, 0)), ticks[2 * i]);
        assert_int_equal(tp_val_int(tp_val_at(p, 1)), ticks[2 * i + 1]);
    }
    done(&x);

    /* No rounds, no ticks: nil rounds and an empty array. */
    tp_buf_init(&x.b);
    tp_protocol_snapshot(&x.b, NULL, NULL, NULL, 0, NULL);
    decode(&x, "snapshot", 4);
    assert_nil(x.m, "paused");
    rounds = tp_val_get(x.m, "rounds");
    assert_int_equal(tp_val_len(rounds), 2);
    assert_nil(rounds, "open");
    assert_nil(rounds, "live");
    assert_int_equal(tp_val_type(tp_val_get(x.m, "ticks")), TP_VAL_ARRAY);
    assert_int_equal(tp_val_len(tp_val_get(x.m, "ticks")), 0);
    done(&x);
}

static void test_pause(void **state)
{
    (void)state;
    struct msg x;
    struct tp_game_pause p = {.paused = true, .since = 5, .reason = "", .by = "x"};
    tp_buf_init(&x.b);
    tp_protocol_pause(&x.b, &p);
    decode(&x, "pause", 2);
    const struct tp_val *pv = tp_val_get(x.m, "paused");
    assert_int_equal(tp_val_int(tp_val_get(pv, "since")), 5);
    assert_string_equal(tp_val_str(tp_val_get(pv, "reason"), NULL), "");
    done(&x);
    /* Resumed: paused is nil, and a pause forwards as is (no special kind). */
    p.paused = false;
    tp_buf_init(&x.b);
    tp_protocol_pause(&x.b, &p);
    decode(&x, "pause", 2);
    assert_nil(x.m, "paused");
    struct tp_protocol_peek pk;
    assert_int_equal(tp_protocol_peek(tp_buf_ptr(&x.b), tp_buf_size(&x.b), &pk), 0);
    assert_int_equal(pk.kind, TP_PROTOCOL_OTHER);
    done(&x);
}

static void test_tick_and_its_bytes(void **state)
{
    (void)state;
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_tick(&x.b, 1718000000200, 6501301, NULL);
    /* fixmap 3, "t" "tick", "ts" uint64, "price" uint32: the exact wire form. */
    static const uint8_t want[] = {0x83, 0xa1, 't',  0xa4, 't',  'i',  'c',  'k',  0xa2, 't',  's',
                                   0xcf, 0x00, 0x00, 0x01, 0x90, 0x00, 0xc7, 0x9c, 0xc8, 0xa5, 'p',
                                   'r',  'i',  'c',  'e',  0xce, 0x00, 0x63, 0x33, 0xb5};
    assert_int_equal(tp_buf_size(&x.b), sizeof(want));
    assert_memory_equal(tp_buf_ptr(&x.b), want, sizeof(want));
    decode(&x, "tick", 3);
    assert_int_equal(get_int(x.m, "ts"), 1718000000200);
    assert_int_equal(get_int(x.m, "price"), 6501301);
    done(&x);
}

/* A beat with odds: the plain tick's fields, then `odds` with the `odds` message's fields. */
static void test_tick_with_odds(void **state)
{
    (void)state;
    struct tp_protocol_odds o = {.round_id = 9, .n = 3, .rake_bps = 300, .pools = {0, 400, 600}};
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_tick(&x.b, 1718000000200, 6501301, &o);
    decode(&x, "tick", 4);
    assert_int_equal(get_int(x.m, "ts"), 1718000000200);
    assert_int_equal(get_int(x.m, "price"), 6501301);
    const struct tp_val *od = tp_val_get(x.m, "odds");
    assert_int_equal(tp_val_type(od), TP_VAL_MAP);
    assert_int_equal(tp_val_len(od), 4);
    assert_int_equal(get_int(od, "round_id"), 9);
    assert_int_equal(get_int(od, "total"), 1000);
    assert_int_equal(tp_val_len(tp_val_get(od, "pools")), 3);
    const struct tp_val *m = tp_val_get(od, "multipliers");
    assert_int_equal(tp_val_type(tp_val_at(m, 0)), TP_VAL_NULL);
    assert_int_equal(tp_val_type(tp_val_at(m, 1)), TP_VAL_FLOAT);
    done(&x);

    /* The map inside the beat is the `odds` message's body, byte for byte. */
    struct tp_buf a, b;
    tp_buf_init(&a);
    tp_buf_init(&b);
    tp_protocol_tick(&a, 1, 2, &o);
    tp_protocol_odds(&b, &o);
    static const uint8_t odds_t[] = {0xa1, 't', 0xa4, 'o', 'd', 'd', 's'};
    size_t body = tp_buf_size(&b) - 1 - sizeof(odds_t);
    assert_true(tp_buf_size(&a) > body);
    assert_memory_equal(tp_buf_ptr(&a) + tp_buf_size(&a) - body,
                        tp_buf_ptr(&b) + 1 + sizeof(odds_t), body);
    tp_buf_deinit(&a);
    tp_buf_deinit(&b);
}

static void test_odds(void **state)
{
    (void)state;
    int64_t pools[5] = {0, 1000, 3000, 0, 6000};
    struct tp_protocol_odds o = {.round_id = 42, .n = 5, .rake_bps = 300};
    memcpy(o.pools, pools, sizeof(pools));
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_odds(&x.b, &o);
    decode(&x, "odds", 5);
    assert_int_equal(get_int(x.m, "round_id"), 42);
    assert_int_equal(get_int(x.m, "total"), 10000);
    const struct tp_val *p = tp_val_get(x.m, "pools");
    const struct tp_val *m = tp_val_get(x.m, "multipliers");
    assert_int_equal(tp_val_len(p), 5);
    assert_int_equal(tp_val_len(m), 5);
    double want[5];
    assert_int_equal(tp_settle_multipliers(pools, 5, 300, want), 0);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(tp_val_int(tp_val_at(p, i)), pools[i]);
        if (pools[i] == 0) {
            assert_int_equal(tp_val_type(tp_val_at(m, i)), TP_VAL_NULL);
        } else {
            assert_int_equal(tp_val_type(tp_val_at(m, i)), TP_VAL_FLOAT);
            assert_true(tp_val_double(tp_val_at(m, i)) == want[i]);
        }
    }
    done(&x);

    /* All empty, or a negative pool (corrupt data): every multiplier nil, never garbage. */
    int64_t empty[2] = {0, 0}, bad[2] = {-5, 10};
    for (int k = 0; k < 2; k++) {
        tp_buf_init(&x.b);
        struct tp_protocol_odds ob = {.round_id = 1, .n = 2, .rake_bps = 300};
        memcpy(ob.pools, k == 0 ? empty : bad, sizeof(empty));
        tp_protocol_odds(&x.b, &ob);
        decode(&x, "odds", 5);
        const struct tp_val *mm = tp_val_get(x.m, "multipliers");
        for (size_t i = 0; i < 2; i++)
            assert_int_equal(tp_val_type(tp_val_at(mm, i)), TP_VAL_NULL);
        done(&x);
    }
}

static void test_odds_deterministic(void **state)
{
    (void)state;
    struct tp_protocol_odds o = {.round_id = 7, .n = 3, .pools = {500, 0, 700}};
    struct tp_buf a, b;
    tp_buf_init(&a);
    tp_buf_init(&b);
    tp_protocol_odds(&a, &o);
    tp_protocol_odds(&b, &o);
    assert_int_equal(tp_buf_size(&a), tp_buf_size(&b));
    assert_memory_equal(tp_buf_ptr(&a), tp_buf_ptr(&b), tp_buf_size(&a));
    tp_buf_deinit(&a);
    tp_buf_deinit(&b);
}

static void test_round(void **state)
{
    (void)state;
    struct tp_game_round r;
    settled_round(&r);
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_round(&x.b, &r, NULL, NULL);
    decode(&x, "round", 3);
    check_round(tp_val_get(x.m, "round"), &r, "settled", true);
    assert_nil(tp_val_get(x.m, "rounds"), "open");
    assert_nil(tp_val_get(x.m, "rounds"), "live");
    done(&x);

    /* A boundary: round 12 locked, announced with the pair it left (open 13, live 12). */
    struct tp_game_round live = r, open = r;
    live.state = TP_ROUND_LIVE;
    live.has_close = live.has_receipt = false;
    open.id = 13;
    open.state = TP_ROUND_OPEN;
    open.seed[0] = '\0';
    open.has_lock = open.has_close = open.has_receipt = false;
    open.winning_band = -1;
    tp_buf_init(&x.b);
    tp_protocol_round(&x.b, &live, &open, &live);
    decode(&x, "round", 3);
    check_round(tp_val_get(x.m, "round"), &live, "live", false);
    const struct tp_val *rounds = tp_val_get(x.m, "rounds");
    assert_int_equal(tp_val_len(rounds), 2);
    check_round(tp_val_get(rounds, "open"), &open, "open", false);
    check_round(tp_val_get(rounds, "live"), &live, "live", false);
    done(&x);

    /* Cancellation started: shown as cancelled, receipt nil until the refunds are done. */
    r.state = TP_ROUND_CANCELLING;
    r.has_close = false;
    tp_buf_init(&x.b);
    tp_protocol_round(&x.b, &r, NULL, NULL);
    decode(&x, "round", 3);
    check_round(tp_val_get(x.m, "round"), &r, "cancelled", false);
    done(&x);

    /* A final state without a recorded receipt writes nil. */
    r.state = TP_ROUND_CANCELLED;
    r.has_receipt = false;
    tp_buf_init(&x.b);
    tp_protocol_round(&x.b, &r, NULL, NULL);
    decode(&x, "round", 3);
    check_round(tp_val_get(x.m, "round"), &r, "cancelled", false);
    done(&x);
}

static void test_round_object_json(void **state)
{
    (void)state;
    /* The HTTP API writes the same object in JSON: same fields, same values. */
    struct tp_game_round r;
    settled_round(&r);
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, TP_FMT_JSON);
    tp_protocol_write_round(&w, &r);
    assert_true(tp_wr_done(&w));
    struct tp_doc *d = tp_doc_parse(TP_FMT_JSON, tp_buf_ptr(&b), tp_buf_size(&b), NULL, 0);
    assert_non_null(d);
    check_round(tp_doc_root(d), &r, "settled", true);
    tp_doc_free(d);
    tp_buf_deinit(&b);
}

/* Encodes one MessagePack value the way the session keeps a client's `req`. */
static size_t encode_req(uint8_t *out, size_t cap, bool is_str)
{
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_wr w;
    tp_wr_init(&w, &b, TP_FMT_MSGPACK);
    if (is_str)
        tp_wr_str(&w, "req-7");
    else
        tp_wr_int(&w, 7);
    size_t n = tp_buf_size(&b);
    assert_true(n <= cap);
    memcpy(out, tp_buf_ptr(&b), n);
    tp_buf_deinit(&b);
    return n;
}

static void test_bet_ok(void **state)
{
    (void)state;
    struct tp_bet_result res = {.code = TP_BET_OK,
                                .bet_id = 1031,
                                .round_id = 12,
                                .band = 2,
                                .stake = 500,
                                .balance = 99000};
    uint8_t req[32];
    size_t reqlen = encode_req(req, sizeof(req), false);
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_bet_ok(&x.b, req, reqlen, &res);
    decode(&x, "bet_ok", 7);
    assert_int_equal(get_int(x.m, "req"), 7);
    assert_int_equal(get_int(x.m, "bet_id"), 1031);
    assert_int_equal(get_int(x.m, "round_id"), 12);
    assert_int_equal(get_int(x.m, "band"), 2);
    assert_int_equal(get_int(x.m, "stake"), 500);
    assert_int_equal(get_int(x.m, "balance"), 99000);
    done(&x);

    tp_buf_init(&x.b);
    tp_protocol_bet_ok(&x.b, NULL, 0, &res);
    decode(&x, "bet_ok", 7);
    assert_nil(x.m, "req");
    done(&x);
}

/* --- tp_protocol_bet_read --- */

/* One member of a test bet message: its name and its value's encoded bytes. */
struct member {
    const char *name;
    size_t n;
    const char *v;
};

/* A map of `n` members written by the generic writer (raw values), into b (reset first). */
static void write_members(struct tp_buf *b, const struct member *m, size_t n)
{
    tp_buf_reset(b);
    struct tp_wr w;
    tp_wr_init(&w, b, TP_FMT_MSGPACK);
    tp_wr_map(&w, n);
    for (size_t i = 0; i < n; i++) {
        tp_wr_key(&w, m[i].name);
        tp_wr_raw(&w, m[i].v, m[i].n);
    }
}

/* What the document reader and session's handle_bet read from the same bytes: true when the
 * message is a map with t "bet", an integer req, a string key and integer round_id, band and
 * stake, with those values. */
static bool doc_reads(const void *p, size_t n, const struct tp_protocol_bet_msg *want)
{
    struct tp_doc *d = NULL;
    if (tp_doc_parse_ex(TP_FMT_MSGPACK, p, n, 1 << 16, &d, NULL, 0) != 0)
        return false;
    const struct tp_val *m = tp_doc_root(d);
    const char *t = NULL, *key = NULL;
    size_t klen = 0;
    int64_t req = 0, r = 0, b = 0, st = 0;
    bool same = tp_val_type(m) == TP_VAL_MAP && tp_val_get_str(m, "t", &t, NULL) == 0 &&
                strcmp(t, "bet") == 0 && tp_val_get_int(m, "req", &req) == 0 &&
                tp_val_get_str(m, "key", &key, &klen) == 0 &&
                tp_val_get_int(m, "round_id", &r) == 0 && tp_val_get_int(m, "band", &b) == 0 &&
                tp_val_get_int(m, "stake", &st) == 0 && req == want->req && klen == want->klen &&
                memcmp(key, want->key, klen) == 0 && r == want->round_id && b == want->band &&
                st == want->stake;
    tp_doc_free(d);
    return same;
}

#define V(s) sizeof(s) - 1, s

/* The message every client sends (loadgen's member order and the browser's) is read from its
 * bytes with the document reader's values, for every integer encoding and member order; every
 * prefix of it and it with one byte more are refused. */
static void test_bet_read(void **state)
{
    (void)state;
    char key128[129 + 2];
    key128[0] = (char)0xd9;
    key128[1] = (char)128;
    memset(key128 + 2, 'k', 128);
    const struct member good[][6] = {
        {{"t", V("\xa3"
                 "bet")},
         {"req", V("\x07")},
         {"key", V("\xa4"
                   "k-01")},
         {"round_id", V("\xcd\x01\x00")},
         {"band", V("\x02")},
         {"stake", V("\xcd\x01\xf4")}},
        /* another order; the widest encodings; negative values (the bounds are checked after) */
        {{"stake", V("\xd3\xff\xff\xff\xff\xff\xff\xff\x9c")},
         {"band", V("\xd0\xff")},
         {"round_id", V("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff")},
         {"key", V("\xd9\x01"
                   "!")},
         {"t", V("\xa3"
                 "bet")},
         {"req", V("\xce\x00\x00\x00\x05")}},
        {{"key", 130, key128},
         {"req", V("\xff")},
         {"t", V("\xa3"
                 "bet")},
         {"band", V("\xcc\x00")},
         {"round_id", V("\xe0")},
         {"stake", V("\xd2\x7f\xff\xff\xff")}},
    };
    struct tp_buf b;
    tp_buf_init(&b);
    for (size_t c = 0; c < TP_ARRAY_LEN(good); c++) {
        write_members(&b, good[c], 6);
        const uint8_t *p = (const uint8_t *)tp_buf_ptr(&b);
        size_t n = tp_buf_size(&b);
        struct tp_protocol_bet_msg got;
        assert_true(tp_protocol_bet_read(p, n, &got));
        assert_true(doc_reads(p, n, &got));
        for (size_t k = 0; k < n; k++) {
            struct tp_protocol_bet_msg x;
            assert_false(tp_protocol_bet_read(p, k, &x));
        }
        tp_buf_append(&b, "\xc0", 1);
        struct tp_protocol_bet_msg x;
        assert_false(tp_protocol_bet_read(tp_buf_ptr(&b), tp_buf_size(&b), &x));
    }
    tp_buf_deinit(&b);
}

/* Every near miss is refused, so session.c reads it through the document and gives the answer
 * it always gave: hostile bytes, other types, a key tp_bet_check_key refuses, members missing,
 * repeated or unknown, another header. Each case is the first good message with one change. */
static void test_bet_read_refuses(void **state)
{
    (void)state;
    static const struct member base[6] = {{"t", V("\xa3"
                                                  "bet")},
                                          {"req", V("\x07")},
                                          {"key", V("\xa4"
                                                    "k-01")},
                                          {"round_id", V("\x0c")},
                                          {"band", V("\x02")},
                                          {"stake", V("\xcd\x01\xf4")}};
    static const struct {
        int at; /* the member replaced */
        struct member m;
    } swaps[] = {
        {0,
         {"t", V("\xa4"
                 "bets")}},
        {0,
         {"t", V("\xa3"
                 "Bet")}},
        {0,
         {"t", V("\xd9\x03"
                 "bet")}}, /* str8 "bet": the document reads it */
        {0, {"t", V("\x01")}},
        {1,
         {"req", V("\xa1"
                   "7")}}, /* a string req: the document path echoes it */
        {1, {"req", V("\xc0")}},
        {1, {"req", V("\xcf\x80\x00\x00\x00\x00\x00\x00\x00")}}, /* UINT */
        {1, {"req", V("\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00")}},
        {1, {"req", V("\x91\x01")}},
        {2, {"key", V("\xa0")}},
        {2,
         {"key", V("\xa3"
                   "a b")}},
        {2,
         {"key", V("\xa3"
                   "a\x7f"
                   "b")}},
        {2,
         {"key", V("\xa3"
                   "a\x00"
                   "b")}},
        {2,
         {"key", V("\xa3\xc3\xa9"
                   "b")}},               /* UTF-8 */
        {2, {"key", V("\xa2\xc3\x28")}}, /* not UTF-8: the document refuses the message */
        {2,
         {"key", V("\xda\x00\x01"
                   "a")}}, /* str16 */
        {2,
         {"key", V("\xc4\x01"
                   "a")}}, /* bin */
        {2, {"key", V("\x05")}},
        {3, {"round_id", V("\xca\x3f\x80\x00\x00")}},
        {3,
         {"round_id", V("\xa2"
                        "12")}},
        {3, {"round_id", V("\xcf\xff\xff\xff\xff\xff\xff\xff\xff")}},
        {3, {"round_id", V("\xc3")}},
        {3, {"round_id", V("\xc1")}},
        {3, {"round_id", V("\xd4\x00\x00")}}, /* ext */
        {4, {"band", V("\xc0")}},
        {5, {"stake", V("\xcb\x40\x59\x00\x00\x00\x00\x00\x00")}},
        {5, {"stake", V("\x80")}},
        {3, {"band", V("\x02")}},  /* band twice, no round_id */
        {5, {"Stake", V("\x01")}}, /* an unknown member instead of stake */
        {0, {"", V("\x01")}},
    };
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_protocol_bet_msg x;
    write_members(&b, base, 6);
    assert_true(tp_protocol_bet_read(tp_buf_ptr(&b), tp_buf_size(&b), &x));
    for (size_t c = 0; c < TP_ARRAY_LEN(swaps); c++) {
        struct member m[6];
        memcpy(m, base, sizeof(m));
        m[swaps[c].at] = swaps[c].m;
        write_members(&b, m, 6);
        assert_false(tp_protocol_bet_read(tp_buf_ptr(&b), tp_buf_size(&b), &x));
    }
    /* five members (no req); seven (one unknown); a map 16 header; an array. */
    write_members(&b, base + 1, 5);
    assert_false(tp_protocol_bet_read(tp_buf_ptr(&b), tp_buf_size(&b), &x));
    struct member seven[7];
    memcpy(seven, base, sizeof(base));
    seven[6] = (struct member){"x", V("\x01")};
    write_members(&b, seven, 7);
    assert_false(tp_protocol_bet_read(tp_buf_ptr(&b), tp_buf_size(&b), &x));
    write_members(&b, base, 6);
    struct tp_buf w;
    tp_buf_init(&w);
    tp_buf_append(&w, "\xde\x00\x06", 3);
    tp_buf_append(&w, tp_buf_ptr(&b) + 1, tp_buf_size(&b) - 1);
    assert_true(doc_reads(
        tp_buf_ptr(&w), tp_buf_size(&w),
        &(struct tp_protocol_bet_msg){
            .req = 7, .key = "k-01", .klen = 4, .round_id = 12, .band = 2, .stake = 500}));
    assert_false(tp_protocol_bet_read(tp_buf_ptr(&w), tp_buf_size(&w), &x));
    tp_buf_reset(&w);
    tp_buf_append(&w, "\x96", 1);
    tp_buf_append(&w, tp_buf_ptr(&b) + 1, tp_buf_size(&b) - 1);
    assert_false(tp_protocol_bet_read(tp_buf_ptr(&w), tp_buf_size(&w), &x));
    assert_false(tp_protocol_bet_read("", 0, &x));
    tp_buf_deinit(&w);
    tp_buf_deinit(&b);
}
#undef V

/* The hand-built bet_ok is the generic writer's message byte for byte, with and without req,
 * for integers of every encoding width. */
static void test_bet_ok_bytes(void **state)
{
    (void)state;
    const int64_t vals[] = {
        0,         1,  127, 128, 255,  256,  65535,  65536,  4294967295, 4294967296,
        INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN,  (int64_t)INT32_MIN - 1,
        INT64_MIN};
    size_t nv = TP_ARRAY_LEN(vals);
    for (size_t i = 0; i < nv; i++) {
        for (int r = 0; r < 3; r++) {
            struct tp_bet_result res = {.code = TP_BET_OK,
                                        .bet_id = vals[i],
                                        .round_id = vals[(i + 1) % nv],
                                        .band = (int)(vals[(i + 2) % nv] % 1000),
                                        .stake = vals[(i + 3) % nv],
                                        .balance = vals[(i + 4) % nv]};
            uint8_t req[32];
            size_t reqlen = r == 0 ? 0 : encode_req(req, sizeof(req), r == 2);
            struct tp_buf want, got;
            tp_buf_init(&want);
            tp_buf_init(&got);
            struct tp_wr w;
            tp_wr_init(&w, &want, TP_FMT_MSGPACK);
            tp_wr_map(&w, 7);
            tp_wr_key(&w, "t");
            tp_wr_str(&w, "bet_ok");
            tp_wr_key(&w, "req");
            if (reqlen > 0)
                tp_wr_raw(&w, req, reqlen);
            else
                tp_wr_null(&w);
            tp_bet_write_fields(&w, &res);
            assert_true(tp_wr_done(&w));
            tp_protocol_bet_ok(&got, reqlen > 0 ? req : NULL, reqlen, &res);
            assert_int_equal(tp_buf_size(&got), tp_buf_size(&want));
            assert_memory_equal(tp_buf_ptr(&got), tp_buf_ptr(&want), tp_buf_size(&want));
            tp_buf_deinit(&want);
            tp_buf_deinit(&got);
        }
    }
}

static void test_bet_err(void **state)
{
    (void)state;
    uint8_t req[32];
    size_t reqlen = encode_req(req, sizeof(req), true);
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_bet_err(&x.b, req, reqlen, TP_BET_ROUND_NOT_OPEN);
    decode(&x, "bet_err", 4);
    assert_str(x.m, "req", "req-7");
    assert_str(x.m, "code", "round_not_open");
    assert_str(x.m, "message", tp_bet_code_message(TP_BET_ROUND_NOT_OPEN));
    done(&x);

    tp_buf_init(&x.b);
    tp_protocol_bet_err(&x.b, NULL, 0, TP_BET_UNAUTHORIZED);
    decode(&x, "bet_err", 4);
    assert_nil(x.m, "req");
    assert_str(x.m, "code", "unauthorized");
    done(&x);
}

static void test_payout(void **state)
{
    (void)state;
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_payout(&x.b, 12, 1745, true, 100745);
    decode(&x, "payout", 4);
    assert_int_equal(get_int(x.m, "round_id"), 12);
    assert_int_equal(get_int(x.m, "amount"), 1745);
    assert_int_equal(get_int(x.m, "balance"), 100745);
    done(&x);

    tp_buf_init(&x.b);
    tp_protocol_payout(&x.b, 12, 1745, false, 100745);
    decode(&x, "payout", 4);
    assert_nil(x.m, "balance");
    done(&x);
}

static void test_pong(void **state)
{
    (void)state;
    /* ts is echoed with its type: an integer stays an integer, a float a float. */
    static const char *const pings[2] = {"{\"ts\":1718000000500}", "{\"ts\":1.5}"};
    for (int k = 0; k < 2; k++) {
        struct tp_doc *in = tp_doc_parse(TP_FMT_JSON, pings[k], strlen(pings[k]), NULL, 0);
        assert_non_null(in);
        struct msg x;
        tp_buf_init(&x.b);
        tp_protocol_pong(&x.b, tp_val_get(tp_doc_root(in), "ts"));
        decode(&x, "pong", 2);
        const struct tp_val *ts = tp_val_get(x.m, "ts");
        if (k == 0) {
            assert_int_equal(tp_val_type(ts), TP_VAL_INT);
            assert_int_equal(tp_val_int(ts), 1718000000500);
        } else {
            assert_int_equal(tp_val_type(ts), TP_VAL_FLOAT);
            assert_true(tp_val_double(ts) == 1.5);
        }
        done(&x);
        tp_doc_free(in);
    }
}

static void test_error(void **state)
{
    (void)state;
    struct msg x;
    tp_buf_init(&x.b);
    tp_protocol_error(&x.b, "unknown_type", "unknown message type");
    decode(&x, "error", 3);
    assert_str(x.m, "code", "unknown_type");
    assert_str(x.m, "message", "unknown message type");
    done(&x);
}

static void test_appends(void **state)
{
    (void)state;
    /* Encoders append: two messages in one buffer are the two encodings back to back. */
    struct tp_buf one, two;
    tp_buf_init(&one);
    tp_buf_init(&two);
    tp_protocol_tick(&one, 1, 2, NULL);
    size_t n = tp_buf_size(&one);
    tp_protocol_tick(&two, 1, 2, NULL);
    tp_protocol_tick(&two, 1, 2, NULL);
    assert_int_equal(tp_buf_size(&two), 2 * n);
    assert_memory_equal(tp_buf_ptr(&two), tp_buf_ptr(&one), n);
    assert_memory_equal(tp_buf_ptr(&two) + n, tp_buf_ptr(&one), n);
    tp_buf_deinit(&one);
    tp_buf_deinit(&two);
}

/* --- Reading broadcasts back --- */

static void peek_of(struct tp_buf *b, struct tp_protocol_peek *pk)
{
    assert_int_equal(tp_protocol_peek(tp_buf_ptr(b), tp_buf_size(b), pk), 0);
    tp_buf_reset(b);
}

static void test_peek(void **state)
{
    (void)state;
    struct tp_buf b;
    tp_buf_init(&b);
    struct tp_protocol_peek pk;
    struct tp_protocol_odds o = {.round_id = 3, .n = 2, .pools = {1, 2}};
    tp_protocol_tick(&b, 1700000000123, 2, NULL);
    peek_of(&b, &pk);
    assert_int_equal(pk.kind, TP_PROTOCOL_TICK);
    assert_int_equal(pk.tick_ts, 1700000000123); /* the beat lag's start */
    assert_false(pk.tick_odds);
    tp_protocol_tick(&b, 1700000000123, 2, &o);
    peek_of(&b, &pk);
    assert_int_equal(pk.kind, TP_PROTOCOL_TICK);
    assert_true(pk.tick_odds); /* fanned out as a tick that supersedes queued odds */
    tp_protocol_odds(&b, &o);
    peek_of(&b, &pk);
    assert_int_equal(pk.kind, TP_PROTOCOL_ODDS);
    tp_protocol_hello(&b, 1, 0, false, 0);
    peek_of(&b, &pk);
    assert_int_equal(pk.kind, TP_PROTOCOL_OTHER);

    /* Payouts are due once a round is final with its receipt: settled, or cancelled once the
     * refunds are done; not while it is live or its cancellation is running. */
    static const struct {
        enum tp_round_state st;
        bool receipt, paid;
    } cases[] = {
        {TP_ROUND_SETTLED, true, true},     {TP_ROUND_CANCELLED, true, true},
        {TP_ROUND_CANCELLING, true, false}, {TP_ROUND_CANCELLED, false, false},
        {TP_ROUND_SETTLING, true, false},   {TP_ROUND_OPEN, false, false},
        {TP_ROUND_LIVE, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tp_game_round r;
        settled_round(&r);
        r.state = cases[i].st;
        r.has_receipt = cases[i].receipt;
        tp_protocol_round(&b, &r, NULL, NULL);
        peek_of(&b, &pk);
        assert_int_equal(pk.kind, TP_PROTOCOL_ROUND);
        assert_int_equal(pk.round_id, 12);
        assert_int_equal(pk.round_paid, cases[i].paid);
        /* The boundary it announces: an open round's open, a live (or settling, shown as
         * live) one's lock; none for a final round. */
        enum tp_round_state pub = tp_round_state_public(r.state);
        int64_t t = pub == TP_ROUND_OPEN ? r.t.opens_at : pub == TP_ROUND_LIVE ? r.t.locks_at : 0;
        assert_int_equal(pk.round_t_ms, t);
        assert_int_equal(pk.round_open, pub == TP_ROUND_OPEN);
    }

    /* Not MessagePack; a map without t. */
    assert_int_equal(tp_protocol_peek("\xc1", 1, &pk), TP_EINVAL);
    assert_int_equal(tp_protocol_peek("\x81\xa1u\x01", 4, &pk), TP_ENOTFOUND);
    tp_buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_pause),
        cmocka_unit_test(test_tick_and_its_bytes),
        cmocka_unit_test(test_tick_with_odds),
        cmocka_unit_test(test_odds),
        cmocka_unit_test(test_odds_deterministic),
        cmocka_unit_test(test_round),
        cmocka_unit_test(test_round_object_json),
        cmocka_unit_test(test_bet_ok),
        cmocka_unit_test(test_bet_ok_bytes),
        cmocka_unit_test(test_bet_read),
        cmocka_unit_test(test_bet_read_refuses),
        cmocka_unit_test(test_bet_err),
        cmocka_unit_test(test_payout),
        cmocka_unit_test(test_pong),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_appends),
        cmocka_unit_test(test_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
