/*
 * WebSocket messages and the Round object (see tickpool/stream/protocol.h and docs/protocol.md).
 * Field order is part of the wire format: clients only look fields up by name, but the bytes
 * must stay those the integration and browser tests were written against.
 */
#include "tickpool/stream/protocol.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/game/game_round.h"
#include "tickpool/game/pause.h"
#include "tickpool/game/round.h"
#include "tickpool/game/settle.h"

#include <math.h>
#include <string.h>

/* --- Shared pieces --- */

/* Writes the pools, total and multipliers fields that `odds` and the Round object share:
 * multipliers are what a winner would get per unit if the round closed now, nil for an empty
 * pool (tp_settle_multipliers refuses a round without stakes: all nil). */
static void write_pools(struct tp_wr *w, const int64_t *pools, int n, int rake_bps)
{
    double mult[TP_ROUND_MAX_BANDS];
    int64_t total = 0;
    TP_ASSERT(n > 0 && n <= TP_ROUND_MAX_BANDS);
    for (int i = 0; i < n; i++)
        total += pools[i];
    if (tp_settle_multipliers(pools, n, rake_bps, mult) != 0)
        for (int i = 0; i < n; i++)
            mult[i] = NAN;
    tp_wr_key(w, "pools");
    tp_wr_array(w, (size_t)n);
    for (int i = 0; i < n; i++)
        tp_wr_int(w, pools[i]);
    tp_wr_key(w, "total");
    tp_wr_int(w, total);
    tp_wr_key(w, "multipliers");
    tp_wr_array(w, (size_t)n);
    for (int i = 0; i < n; i++) {
        if (isnan(mult[i]))
            tp_wr_null(w);
        else
            tp_wr_double(w, mult[i]);
    }
}

/* Starts message `t` with `nfields` fields after t (a map of nfields + 1 pairs). */
static void begin(struct tp_wr *w, struct tp_buf *out, const char *t, size_t nfields)
{
    tp_wr_init(w, out, TP_FMT_MSGPACK);
    tp_wr_map(w, nfields + 1);
    tp_wr_key(w, "t");
    tp_wr_str(w, t);
}

static void write_int_or_nil(struct tp_wr *w, bool has, int64_t v)
{
    if (has)
        tp_wr_int(w, v);
    else
        tp_wr_null(w);
}

/* The client's `req`, spliced as it was encoded (nil when absent). */
static void write_req(struct tp_wr *w, const void *req, size_t reqlen)
{
    tp_wr_key(w, "req");
    if (req != NULL && reqlen > 0)
        tp_wr_raw(w, req, reqlen);
    else
        tp_wr_null(w);
}

/* --- Round object --- */

void tp_protocol_write_round(struct tp_wr *w, const struct tp_game_round *r)
{
    struct tp_round_band_desc bands[TP_ROUND_MAX_BANDS];
    int nb = tp_round_bands(r->edges, r->n_edges, bands, TP_ROUND_MAX_BANDS);
    TP_ASSERT(nb > 0);
    bool final = tp_round_is_final(r->state);

    /* 15 contract fields plus vol_ppb and tick_ms, the integers a verifier (the web client's
     * fairness check) needs to recompute the ticks without touching floats, rake_bps, which
     * a client needs to price a bet before placing it (the bet slip's potential payout), and
     * min_stake/max_stake, the round's own stake bounds (null for a round opened before rounds
     * carried them): a restart may have changed the config's since it opened. */
    tp_wr_map(w, 20);
    tp_wr_key(w, "id");
    tp_wr_int(w, r->id);
    tp_wr_key(w, "state");
    tp_wr_str(w, tp_round_state_name(tp_round_state_public(r->state)));
    tp_wr_key(w, "opens_at");
    tp_wr_int(w, r->t.opens_at);
    tp_wr_key(w, "locks_at");
    tp_wr_int(w, r->t.locks_at);
    tp_wr_key(w, "closes_at");
    tp_wr_int(w, r->t.closes_at);
    tp_wr_key(w, "seed_hash");
    tp_wr_str(w, r->seed_hash);
    tp_wr_key(w, "seed");
    tp_wr_str(w, r->seed[0] ? r->seed : NULL);
    tp_wr_key(w, "vol_ppb");
    tp_wr_int(w, r->vol_ppb);
    tp_wr_key(w, "tick_ms");
    tp_wr_int(w, r->tick_ms);
    tp_wr_key(w, "rake_bps");
    tp_wr_int(w, r->rake_bps);
    tp_wr_key(w, "min_stake");
    write_int_or_nil(w, r->min_stake > 0, r->min_stake);
    tp_wr_key(w, "max_stake");
    write_int_or_nil(w, r->max_stake > 0, r->max_stake);
    tp_wr_key(w, "lock_price");
    write_int_or_nil(w, r->has_lock, r->lock_price);
    tp_wr_key(w, "close_price");
    write_int_or_nil(w, r->has_close, r->close_price);
    tp_wr_key(w, "bands");
    tp_wr_array(w, (size_t)nb);
    for (int i = 0; i < nb; i++) {
        tp_wr_map(w, 3);
        tp_wr_key(w, "index");
        tp_wr_int(w, bands[i].index);
        tp_wr_key(w, "lo_bps");
        write_int_or_nil(w, bands[i].has_lo, bands[i].lo_bps);
        tp_wr_key(w, "hi_bps");
        write_int_or_nil(w, bands[i].has_hi, bands[i].hi_bps);
    }
    write_pools(w, r->pools, nb, r->rake_bps);
    tp_wr_key(w, "winning_band");
    write_int_or_nil(w, r->winning_band >= 0 && r->has_close, r->winning_band);
    tp_wr_key(w, "receipt");
    if (final && r->has_receipt) {
        tp_wr_map(w, 6);
        tp_wr_key(w, "total");
        tp_wr_int(w, r->receipt.total);
        tp_wr_key(w, "winning_stake");
        tp_wr_int(w, r->receipt.winning_stake);
        tp_wr_key(w, "rake");
        tp_wr_int(w, r->receipt.rake);
        tp_wr_key(w, "breakage");
        tp_wr_int(w, r->receipt.breakage);
        tp_wr_key(w, "payouts");
        tp_wr_int(w, r->receipt.payouts);
        tp_wr_key(w, "refunds");
        tp_wr_int(w, r->receipt.refunds);
    } else {
        tp_wr_null(w);
    }
}

/* --- Server messages --- */

void tp_protocol_hello(struct tp_buf *out, int64_t server_time, int64_t user_id, bool has_balance,
                       int64_t balance)
{
    struct tp_wr w;
    begin(&w, out, "hello", 3);
    tp_wr_key(&w, "server_time");
    tp_wr_int(&w, server_time);
    tp_wr_key(&w, "user_id");
    write_int_or_nil(&w, user_id > 0, user_id);
    tp_wr_key(&w, "balance");
    write_int_or_nil(&w, user_id > 0 && has_balance, balance);
}

void tp_protocol_write_paused(struct tp_wr *w, const struct tp_game_pause *p)
{
    if (p == NULL || !p->paused) {
        tp_wr_null(w);
        return;
    }
    tp_wr_map(w, 2);
    tp_wr_key(w, "since");
    tp_wr_int(w, p->since);
    tp_wr_key(w, "reason");
    tp_wr_str(w, p->reason);
}

void tp_protocol_pause(struct tp_buf *out, const struct tp_game_pause *p)
{
    struct tp_wr w;
    begin(&w, out, "pause", 1);
    tp_wr_key(&w, "paused");
    tp_protocol_write_paused(&w, p);
}

/* rounds: {open, live}, the game's current pair (nil where there is none). */
static void write_rounds(struct tp_wr *w, const struct tp_game_round *open,
                         const struct tp_game_round *live)
{
    tp_wr_key(w, "rounds");
    tp_wr_map(w, 2);
    const struct tp_game_round *rounds[2] = {open, live};
    static const char *const names[2] = {"open", "live"};
    for (int i = 0; i < 2; i++) {
        tp_wr_key(w, names[i]);
        if (rounds[i] != NULL)
            tp_protocol_write_round(w, rounds[i]);
        else
            tp_wr_null(w);
    }
}

void tp_protocol_snapshot(struct tp_buf *out, const struct tp_game_round *open,
                          const struct tp_game_round *live, const int64_t *ticks, size_t nticks,
                          const struct tp_game_pause *paused)
{
    struct tp_wr w;
    begin(&w, out, "snapshot", 3);
    write_rounds(&w, open, live);
    tp_wr_key(&w, "ticks");
    tp_wr_array(&w, nticks);
    for (size_t i = 0; i < nticks; i++) {
        tp_wr_array(&w, 2);
        tp_wr_int(&w, ticks[2 * i]);
        tp_wr_int(&w, ticks[2 * i + 1]);
    }
    tp_wr_key(&w, "paused");
    tp_protocol_write_paused(&w, paused);
}

/* round_id, pools, total, multipliers: the fields `odds` and a beat's `odds` map share. */
static void write_odds_fields(struct tp_wr *w, const struct tp_protocol_odds *o)
{
    tp_wr_key(w, "round_id");
    tp_wr_int(w, o->round_id);
    write_pools(w, o->pools, o->n, o->rake_bps);
}

void tp_protocol_tick(struct tp_buf *out, int64_t ts, int64_t price,
                      const struct tp_protocol_odds *odds)
{
    struct tp_wr w;
    begin(&w, out, "tick", odds != NULL ? 3 : 2);
    tp_wr_key(&w, "ts");
    tp_wr_int(&w, ts);
    tp_wr_key(&w, "price");
    tp_wr_int(&w, price);
    if (odds != NULL) {
        tp_wr_key(&w, "odds");
        tp_wr_map(&w, 4);
        write_odds_fields(&w, odds);
    }
}

void tp_protocol_odds(struct tp_buf *out, const struct tp_protocol_odds *odds)
{
    struct tp_wr w;
    begin(&w, out, "odds", 4);
    write_odds_fields(&w, odds);
}

void tp_protocol_round(struct tp_buf *out, const struct tp_game_round *r,
                       const struct tp_game_round *open, const struct tp_game_round *live)
{
    struct tp_wr w;
    begin(&w, out, "round", 2);
    tp_wr_key(&w, "round");
    tp_protocol_write_round(&w, r);
    write_rounds(&w, open, live);
}

/* A MessagePack fixstr (n <= 31) at o; returns the bytes written. */
static size_t put_fixstr(char *o, const char *s, size_t n)
{
    o[0] = (char)(0xa0 | n);
    memcpy(o + 1, s, n);
    return n + 1;
}

/* The bytes the generic writer gives for {t, req, then tp_bet_write_fields' integers}, written
 * without it: the keys are constant (TP_BET_RESULT_FIELDS, expanded here with their lengths known
 * at compile time), so only `req` and the integers vary. The writer spent 2.3k instructions a bet
 * on this message (a checked state step, a growth check and a packer call per item; callgrind,
 * session 8); test_protocol compares the two for many values. */
#define FIELD_COUNT(f) +1
#define FIELD_BYTES_MAX(f) +sizeof(#f) + TP_CODEC_MSGPACK_INT_MAX
#define PUT_FIELD(f)                                                                               \
    _Static_assert(sizeof(#f) - 1 <= 31, "a key is a fixstr");                                     \
    o += put_fixstr(o, #f, sizeof(#f) - 1);                                                        \
    o += tp_codec_msgpack_int(o, res->f);
enum {
    BET_OK_PAIRS = 2 TP_BET_RESULT_FIELDS(FIELD_COUNT),          /* t, req and the fields */
    BET_OK_FIELDS_MAX = 0 TP_BET_RESULT_FIELDS(FIELD_BYTES_MAX), /* their keys and values */
};
_Static_assert(BET_OK_PAIRS <= 15, "bet_ok's map header is a fixmap");

void tp_protocol_bet_ok(struct tp_buf *out, const void *req, size_t reqlen,
                        const struct tp_bet_result *res)
{
    bool has_req = req != NULL && reqlen > 0;
    char *o = tp_buf_reserve(out, 16 + (has_req ? reqlen : 1) + BET_OK_FIELDS_MAX);
    char *start = o;
    *o++ = (char)(0x80 | BET_OK_PAIRS); /* a fixmap */
    o += put_fixstr(o, "t", 1);
    o += put_fixstr(o, "bet_ok", 6);
    o += put_fixstr(o, "req", 3);
    if (has_req) {
        memcpy(o, req, reqlen);
        o += reqlen;
    } else {
        *o++ = (char)0xc0; /* nil */
    }
    TP_BET_RESULT_FIELDS(PUT_FIELD)
    tp_buf_commit(out, (size_t)(o - start));
}
#undef FIELD_COUNT
#undef FIELD_BYTES_MAX
#undef PUT_FIELD

void tp_protocol_bet_err(struct tp_buf *out, const void *req, size_t reqlen, enum tp_bet_code code)
{
    struct tp_wr w;
    begin(&w, out, "bet_err", 3);
    write_req(&w, req, reqlen);
    tp_wr_key(&w, "code");
    tp_wr_str(&w, tp_bet_code_name(code));
    tp_wr_key(&w, "message");
    tp_wr_str(&w, tp_bet_code_message(code));
}

/* The members tp_protocol_bet_read takes, a bit each. */
enum { BET_T = 1, BET_REQ = 2, BET_KEY = 4, BET_ROUND = 8, BET_BAND = 16, BET_STAKE = 32 };

/* Which member the fixstr key at p[0..n) names (0: none of them); *len its bytes. */
static int bet_member(const uint8_t *p, size_t n, size_t *len)
{
    static const struct {
        const char *name;
        size_t len;
        int bit;
    } members[] = {{"t", 1, BET_T},       {"req", 3, BET_REQ},
                   {"key", 3, BET_KEY},   {"round_id", 8, BET_ROUND},
                   {"band", 4, BET_BAND}, {"stake", 5, BET_STAKE}};
    if (n == 0 || (p[0] & 0xe0) != 0xa0)
        return 0;
    size_t l = p[0] & 0x1f;
    if (l >= n)
        return 0;
    for (size_t i = 0; i < TP_ARRAY_LEN(members); i++)
        if (members[i].len == l && memcmp(p + 1, members[i].name, l) == 0) {
            *len = 1 + l;
            return members[i].bit;
        }
    return 0;
}

bool tp_protocol_bet_read(const void *data, size_t n, struct tp_protocol_bet_msg *out)
{
    static const uint8_t t_bet[] = {0xa0 | 3, 'b', 'e', 't'}; /* the fixstr "bet" */
    const uint8_t *p = data;
    if (n == 0 || p[0] != (0x80 | 6)) /* a fixmap of six pairs */
        return false;
    size_t i = 1, l = 0;
    int seen = 0;
    for (int pair = 0; pair < 6; pair++) {
        int m = bet_member(p + i, n - i, &l);
        if (m == 0 || (seen & m) != 0)
            return false;
        seen |= m;
        i += l;
        const uint8_t *v = p + i;
        size_t left = n - i;
        switch (m) {
        case BET_T:
            if (left < sizeof(t_bet) || memcmp(v, t_bet, sizeof(t_bet)) != 0)
                return false;
            l = sizeof(t_bet);
            break;
        case BET_KEY: {
            size_t h = 1;
            if (left >= 1 && (v[0] & 0xe0) == 0xa0)
                l = v[0] & 0x1f;
            else if (left >= 2 && v[0] == 0xd9) /* str8 */
                l = v[h++];
            else
                return false;
            if (l > left - h || tp_bet_check_key((const char *)v + h, l) != TP_BET_OK)
                return false;
            out->key = (const char *)v + h;
            out->klen = l;
            l += h;
            break;
        }
        default: {
            int64_t x;
            if ((l = tp_codec_msgpack_read_int(v, left, &x)) == 0)
                return false;
            if (m == BET_REQ)
                out->req = x;
            else if (m == BET_ROUND)
                out->round_id = x;
            else if (m == BET_BAND)
                out->band = x;
            else
                out->stake = x;
        }
        }
        i += l;
    }
    return i == n;
}

void tp_protocol_payout(struct tp_buf *out, int64_t round_id, int64_t amount, bool has_balance,
                        int64_t balance)
{
    struct tp_wr w;
    begin(&w, out, "payout", 3);
    tp_wr_key(&w, "round_id");
    tp_wr_int(&w, round_id);
    tp_wr_key(&w, "amount");
    tp_wr_int(&w, amount);
    tp_wr_key(&w, "balance");
    write_int_or_nil(&w, has_balance, balance);
}

void tp_protocol_pong(struct tp_buf *out, const struct tp_val *ts)
{
    struct tp_wr w;
    begin(&w, out, "pong", 1);
    tp_wr_key(&w, "ts");
    tp_wr_val(&w, ts);
}

void tp_protocol_error(struct tp_buf *out, const char *code, const char *message)
{
    struct tp_wr w;
    begin(&w, out, "error", 2);
    tp_wr_key(&w, "code");
    tp_wr_str(&w, code);
    tp_wr_key(&w, "message");
    tp_wr_str(&w, message);
}

/* --- Reading a broadcast back --- */

int tp_protocol_peek(const void *data, size_t len, struct tp_protocol_peek *out)
{
    memset(out, 0, sizeof(*out));
    struct tp_doc *doc = NULL;
    if (tp_doc_parse_ex(TP_FMT_MSGPACK, data, len, TP_DOC_MAX_LEN, &doc, NULL, 0) != 0)
        return TP_EINVAL;
    const struct tp_val *m = tp_doc_root(doc);
    const char *t = NULL;
    if (tp_val_get_str(m, "t", &t, NULL) != 0) {
        tp_doc_free(doc);
        return TP_ENOTFOUND;
    }
    if (strcmp(t, "tick") == 0) {
        out->kind = TP_PROTOCOL_TICK;
        if (tp_val_get_int(m, "ts", &out->tick_ts) != 0)
            out->tick_ts = 0;
        out->tick_odds = tp_val_type(tp_val_get(m, "odds")) == TP_VAL_MAP;
    } else if (strcmp(t, "odds") == 0) {
        out->kind = TP_PROTOCOL_ODDS;
    } else if (strcmp(t, "account") == 0) {
        out->kind = TP_PROTOCOL_ACCOUNT;
        struct tp_access_update *u = &out->account;
        const struct tp_val *d = tp_val_get(m, "disabled");
        if (tp_val_get_int(m, "user_id", &u->user_id) != 0 || u->user_id <= 0)
            u->user_id = 0;
        u->has_revoked = tp_val_get_int(m, "revoked_before", &u->revoked_before) == 0;
        u->has_disabled = tp_val_type(d) == TP_VAL_BOOL;
        u->disabled = u->has_disabled && tp_val_bool(d);
    } else if (strcmp(t, "round") == 0) {
        out->kind = TP_PROTOCOL_ROUND;
        const struct tp_val *r = tp_val_get(m, "round");
        const char *name = NULL;
        size_t name_len = 0;
        enum tp_round_state st = TP_ROUND_NONE;
        bool has_receipt = tp_val_type(tp_val_get(r, "receipt")) == TP_VAL_MAP;
        if (tp_val_get_int(r, "id", &out->round_id) != 0)
            out->round_id = 0;
        if (tp_val_get_str(r, "state", &name, &name_len) != 0 ||
            tp_round_state_parse(name, name_len, &st) != 0)
            st = TP_ROUND_NONE;
        out->round_paid = out->round_id != 0 && has_receipt && tp_round_is_final(st);
        const char *tkey = st == TP_ROUND_OPEN   ? "opens_at"
                           : st == TP_ROUND_LIVE ? "locks_at"
                                                 : NULL;
        if (tkey == NULL || tp_val_get_int(r, tkey, &out->round_t_ms) != 0)
            out->round_t_ms = 0;
        out->round_open = st == TP_ROUND_OPEN;
    }
    tp_doc_free(doc);
    return 0;
}
