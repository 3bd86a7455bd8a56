/*
 * Bet admission (see tickpool/money/bet.h): request validation, codes and the 201 fields shared
 * by HTTP and WebSocket. The submission (the worker's batches of bet_batch.lua) is bet_batch.c.
 */
#include "tickpool/money/bet.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/round.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "bet"

static const struct {
    const char *name;
    const char *message;
} codes[] = {
    [TP_BET_OK] = {"ok", "bet accepted"},
    [TP_BET_INVALID_REQUEST] = {"invalid_request",
                                "body must be an object with integer round_id, band and stake"},
    [TP_BET_INVALID_STAKE] = {"invalid_stake", "stake must be an integer within the stake bounds"},
    [TP_BET_INVALID_BAND] = {"invalid_band", "band must be an integer band index"},
    [TP_BET_UNAUTHORIZED] = {"unauthorized", "missing, invalid or expired token"},
    [TP_BET_SELF_EXCLUDED] = {"self_excluded",
                              "you excluded yourself from betting; see GET /api/v1/me/exclusion"},
    [TP_BET_ACCOUNT_DISABLED] = {"account_disabled", "this account is disabled"},
    [TP_BET_INSUFFICIENT_FUNDS] = {"insufficient_funds", "balance below the stake"},
    [TP_BET_ROUND_NOT_FOUND] = {"round_not_found", "no such round"},
    [TP_BET_ROUND_NOT_OPEN] = {"round_not_open", "the round is not open for bets"},
    [TP_BET_IDEMPOTENCY_CONFLICT] = {"idempotency_conflict",
                                     "this idempotency key was used for another request or is "
                                     "still in flight"},
    [TP_BET_POOL_FULL] = {"pool_full", "the round's pool is full: bet on the next round"},
    [TP_BET_GAME_PAUSED] = {"game_paused",
                            "the game is paused by its operator: no bets until it resumes"},
    [TP_BET_KEY_REQUIRED] = {"idempotency_key_required",
                             "Idempotency-Key header of 1-128 printable characters required"},
    [TP_BET_OVERLOADED] = {"overloaded", "too many bets in flight, retry shortly"},
    [TP_BET_UNAVAILABLE] = {"unavailable", "storage unavailable, retry with the same key"},
};

const char *tp_bet_code_name(enum tp_bet_code c)
{
    return (unsigned)c < TP_ARRAY_LEN(codes) ? codes[c].name : "unavailable";
}

const char *tp_bet_code_message(enum tp_bet_code c)
{
    return (unsigned)c < TP_ARRAY_LEN(codes) ? codes[c].message : "unavailable";
}

void tp_bet_limits_any(struct tp_bet_limits *out)
{
    out->nbands = TP_ROUND_MAX_BANDS;
    out->min_stake = 1;
    out->max_stake = TP_BET_STAKE_MAX;
}

/* --- Validation (pure) --- */

/*
 * jansson rejects a whole document holding an integer beyond int64 ("numeric overflow at byte
 * N"), so there is no tree to ask which member it was. Recover the member name from the text
 * just before byte N (`"name" :` then the number) to answer invalid_stake / invalid_band like
 * any other bad value of that member. Returns the code, INVALID_REQUEST when unsure.
 */
static enum tp_bet_code overflow_code(const char *body, size_t len, const char *err)
{
    const char *at = strstr(err, "at byte ");
    if (at == NULL)
        return TP_BET_INVALID_REQUEST;
    long pos = strtol(at + 8, NULL, 10);
    if (pos < 0 || (size_t)pos > len)
        pos = (long)len;
    /* Back over the number itself (digits, sign, dot, exponent), spaces, to the colon. */
    long i = pos - 1;
    while (i >= 0 && body[i] != ':' && body[i] != ',' && body[i] != '{' && body[i] != '"')
        i--;
    if (i < 0 || body[i] != ':')
        return TP_BET_INVALID_REQUEST;
    i--;
    while (i >= 0 && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
        i--;
    if (i < 1 || body[i] != '"')
        return TP_BET_INVALID_REQUEST;
    long end = i;
    i--;
    while (i >= 0 && body[i] != '"')
        i--;
    if (i < 0)
        return TP_BET_INVALID_REQUEST;
    size_t klen = (size_t)(end - i - 1);
    const char *k = body + i + 1;
    if (klen == 5 && memcmp(k, "stake", 5) == 0)
        return TP_BET_INVALID_STAKE;
    if (klen == 4 && memcmp(k, "band", 4) == 0)
        return TP_BET_INVALID_BAND;
    return TP_BET_INVALID_REQUEST;
}

/* A request's three members in the contract's order; `*_ok` false for a member that is not an
 * integer. The one home of these checks, for documents and for the plain JSON form alike. */
static enum tp_bet_code check_members(bool r_ok, int64_t round_id, bool b_ok, int64_t band,
                                      bool s_ok, int64_t stake, const struct tp_bet_limits *lim,
                                      struct tp_bet_req *out)
{
    if (!r_ok || round_id < 1 || round_id > TP_BET_ROUND_MAX)
        return TP_BET_INVALID_REQUEST;
    if (!b_ok || band < 0 || band >= lim->nbands)
        return TP_BET_INVALID_BAND;
    if (!s_ok || stake < lim->min_stake || stake > lim->max_stake)
        return TP_BET_INVALID_STAKE;
    out->round_id = round_id;
    out->band = (int)band;
    out->stake = stake;
    return TP_BET_OK;
}

enum tp_bet_code tp_bet_parse_val(const struct tp_val *map, const struct tp_bet_limits *lim,
                                  struct tp_bet_req *out)
{
    if (tp_val_type(map) != TP_VAL_MAP)
        return TP_BET_INVALID_REQUEST;
    const struct tp_val *vr = tp_val_get(map, "round_id"), *vb = tp_val_get(map, "band"),
                        *vs = tp_val_get(map, "stake");
    if (vr == NULL || vb == NULL || vs == NULL)
        return TP_BET_INVALID_REQUEST;
    int64_t round_id = 0, band = 0, stake = 0;
    bool r_ok = tp_val_get_int(map, "round_id", &round_id) == 0;
    bool b_ok = tp_val_get_int(map, "band", &band) == 0;
    bool s_ok = tp_val_get_int(map, "stake", &stake) == 0;
    return check_members(r_ok, round_id, b_ok, band, s_ok, stake, lim, out);
}

enum tp_bet_code tp_bet_check(int64_t round_id, int64_t band, int64_t stake,
                              const struct tp_bet_limits *lim, struct tp_bet_req *out)
{
    return check_members(true, round_id, true, band, true, stake, lim, out);
}

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/*
 * The body every client sends, {"round_id":N,"band":N,"stake":N} (members in any order, JSON
 * whitespace, integers of 1-18 digits without sign or leading zero), read without building a
 * document: 12k instructions of the 21k an HTTP bet spent in its handler. Anything else (other
 * or repeated members, escapes, signs, fractions, exponents, longer numbers) returns false and
 * takes the full parser, so every answer is the one the full parser gives.
 */
static bool parse_plain(const char *p, size_t len, int64_t v[3])
{
    static const char *const names[3] = {"round_id", "band", "stake"};
    static const size_t lens[3] = {8, 4, 5};
    const char *e = p + len;
    bool seen[3] = {false, false, false};
    p = skip_ws(p, e);
    if (p == e || *p++ != '{')
        return false;
    for (int m = 0; m < 3; m++) {
        p = skip_ws(p, e);
        if (p == e || *p++ != '"')
            return false;
        int k = 0;
        while (k < 3 && !((size_t)(e - p) > lens[k] && memcmp(p, names[k], lens[k]) == 0 &&
                          p[lens[k]] == '"'))
            k++;
        if (k == 3 || seen[k])
            return false;
        seen[k] = true;
        p = skip_ws(p + lens[k] + 1, e);
        if (p == e || *p++ != ':')
            return false;
        p = skip_ws(p, e);
        const char *digits = p;
        int64_t x = 0;
        while (p < e && *p >= '0' && *p <= '9' && p - digits < 18)
            x = x * 10 + (*p++ - '0');
        if (p == digits || (p - digits > 1 && *digits == '0'))
            return false;
        v[k] = x;
        p = skip_ws(p, e);
        if (p == e || *p++ != (m == 2 ? '}' : ','))
            return false;
    }
    return skip_ws(p, e) == e;
}

enum tp_bet_code tp_bet_parse(enum tp_fmt fmt, const void *body, size_t len,
                              const struct tp_bet_limits *lim, struct tp_bet_req *out)
{
    if (body == NULL || len == 0 || len > TP_BET_MAX_BODY)
        return TP_BET_INVALID_REQUEST;
    int64_t v[3];
    if (fmt == TP_FMT_JSON && parse_plain(body, len, v))
        return check_members(true, v[0], true, v[1], true, v[2], lim, out);
    struct tp_doc *doc = NULL;
    char err[160] = "";
    int rc = tp_doc_parse_ex(fmt, body, len, TP_BET_MAX_BODY, &doc, err, sizeof(err));
    if (rc == TP_ETOOBIG && fmt == TP_FMT_JSON)
        return overflow_code(body, len, err);
    if (rc != 0)
        return TP_BET_INVALID_REQUEST;
    enum tp_bet_code c = tp_bet_parse_val(tp_doc_root(doc), lim, out);
    tp_doc_free(doc);
    return c;
}

enum tp_bet_code tp_bet_check_key(const char *key, size_t len)
{
    if (key == NULL || len == 0 || len > TP_BET_KEY_MAX)
        return TP_BET_KEY_REQUIRED;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return TP_BET_KEY_REQUIRED;
    return TP_BET_OK;
}

void tp_bet_write_fields(struct tp_wr *w, const struct tp_bet_result *res)
{
#define WRITE_FIELD(f)                                                                             \
    tp_wr_key(w, #f);                                                                              \
    tp_wr_int(w, res->f);
    TP_BET_RESULT_FIELDS(WRITE_FIELD)
#undef WRITE_FIELD
}

enum tp_bet_code tp_bet_code_from_err(int err)
{
    switch (err) {
    case 0:
        return TP_BET_OK;
    case TP_EAGAIN:
        return TP_BET_OVERLOADED;
    case TP_ECONFLICT:
        return TP_BET_IDEMPOTENCY_CONFLICT;
    case TP_EINVAL:
        return TP_BET_INVALID_REQUEST;
    case TP_EPERM:
        return TP_BET_ACCOUNT_DISABLED;
    default:
        return TP_BET_UNAVAILABLE;
    }
}

void tp_bet_count_answer(enum tp_metrics_transport transport, int64_t t0_ns, enum tp_bet_code code)
{
    if (code == TP_BET_OK)
        tp_metrics_inc(TP_METRIC_BETS_ACCEPTED_TOTAL);
    else
        tp_metrics_family_inc(
            TP_METRIC_FAMILY_BETS_REJECTED,
            tp_metrics_label_index(TP_METRIC_FAMILY_BETS_REJECTED, 0, tp_bet_code_name(code)), 0);
    tp_metrics_observe_ns(TP_METRIC_FAMILY_BET_LATENCY, (int)transport, tp_mono_ns() - t0_ns);
}
