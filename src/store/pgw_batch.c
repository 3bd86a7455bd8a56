/*
 * Postgres writer, batch → SQL (pure; see include/tickpool/store/pgw.h): outbox events become
 * rows per table (JSON arrays of objects; the bets one array per column), grants, rake and
 * breakage also two ledger rows that sum to zero, and a batch becomes the statements of one
 * transaction. A bet writes no ledger rows: its bets row is the record of the debit (user →
 * round, `stake`), and the views of migrations/0006_bets_are_debits.sql add it to the ledger for
 * readers. That halves Postgres's cost per bet; the bets are the bulk of the writer's rows. A
 * payout or refund likewise writes only its payouts row, the record of the credit (round →
 * user, `amount`; migrations/0010_payouts_are_credits.sql). No Redis, no Postgres, no clock
 * here, so tests/unit/store/test_pgw.c covers it all.
 *
 * Events are checked as hostile input: every integer must be canonical and fit its column,
 * every identifier from a small alphabet, and a malformed or unknown event adds nothing (the
 * caller parks it in its stream's rejected stream, tp_pgw_reject, so one bad entry can neither
 * block the outbox nor fail the rest of its batch).
 */
#include "pgw_internal.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Events → rows --- */

static const char *field(const struct tp_pgw_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nfields; i++)
        if (ev->keys[i] != NULL && strcmp(ev->keys[i], key) == 0)
            return ev->vals[i];
    return NULL;
}

/* A canonical non-negative decimal below 10^18 (what the Lua scripts write). */
bool tp_pgw_is_uint(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 18 || (s[0] == '0' && s[1] != '\0'))
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* tp_pgw_is_uint no greater than `max`: a value Postgres casts to a smallint (a band) or an
 * int (rake_bps). The writer checks it here so that one out-of-range entry is refused alone
 * (parked for an operator) instead of failing its whole batch's cast. */
static bool is_uint_max(const char *s, int64_t max)
{
    return tp_pgw_is_uint(s) && strtoll(s, NULL, 10) <= max;
}

/* tp_pgw_is_uint, or "-" and a non-zero one. */
static bool is_int(const char *s)
{
    return s != NULL &&
           (tp_pgw_is_uint(s) || (s[0] == '-' && s[1] != '0' && tp_pgw_is_uint(s + 1)));
}

/* Grant ids, usernames, hashes: 1..128 bytes of [A-Za-z0-9_.:-]. */
static bool is_ident(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == ':' || *p == '-'))
            return false;
    return true;
}

/*
 * The bets' columns go to Postgres as binary arrays (array_recv's format, all integers big
 * endian): a header of five int32 (dimensions 1, a flag set when an element is NULL, the
 * element type's OID, the one dimension's length, its lower bound 1), then per element its
 * length in bytes (-1: NULL) and its bytes: a text's UTF-8, an int8's 8 bytes, an int2's 2.
 * Postgres reads them with 7 % fewer instructions a row than the same arrays' text (array_in
 * scans and unescapes every byte; bench/README.md, "Session 26: the writer's bets INSERT"),
 * and the writer spends no quoting. The length is written when the batch's statements are made
 * (bet_array_closed); the element type must be the statement's ($n::text[], bigint[],
 * smallint[]) or Postgres refuses the array.
 */
enum { OID_INT8 = 20, OID_INT2 = 21, OID_TEXT = 25 };
static const uint32_t bet_col_oid[TP_PGW_BET_COLS] = {OID_TEXT, OID_INT8, OID_INT8, OID_INT2,
                                                      OID_INT8, OID_TEXT, OID_INT8, OID_INT8};
#define BET_ARRAY_FLAGS 4 /* offset of the header's has-NULL flag */
#define BET_ARRAY_LEN 12  /* offset of the dimension's length */

static void put_be32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (24 - 8 * i));
}

/* The byte `at` of `b`'s content, to write over. */
static char *byte_at(struct tp_buf *b, size_t at)
{
    return b->data + b->off + at;
}

static void append_be32(struct tp_buf *out, uint32_t v)
{
    put_be32(tp_buf_reserve(out, 4), v);
    tp_buf_commit(out, 4);
}

static void bet_array_header(struct tp_buf *out, int col)
{
    static const uint32_t ndim = 1, flags = 0, len = 0, lbound = 1;
    append_be32(out, ndim);
    append_be32(out, flags);
    append_be32(out, bet_col_oid[col]);
    append_be32(out, len);
    append_be32(out, lbound);
}

void tp_pgw_batch_init(struct tp_pgw_batch *b)
{
    memset(b, 0, sizeof(*b));
    for (int t = 0; t < TP_PGW_NTABLES; t++) {
        b->json[t] = tp_xmalloc(sizeof(struct tp_buf));
        tp_buf_init(b->json[t]);
        tp_buf_puts(b->json[t], "[");
    }
    for (int c = 0; c < TP_PGW_BET_COLS; c++) {
        b->bets[c] = tp_xmalloc(sizeof(struct tp_buf));
        tp_buf_init(b->bets[c]);
        bet_array_header(b->bets[c], c);
    }
    b->wait_for_rounds = true;
}

void tp_pgw_batch_deinit(struct tp_pgw_batch *b)
{
    for (int t = 0; t < TP_PGW_NTABLES; t++) {
        if (b->json[t] != NULL) {
            tp_buf_deinit(b->json[t]);
            free(b->json[t]);
            b->json[t] = NULL;
        }
    }
    for (int c = 0; c < TP_PGW_BET_COLS; c++) {
        if (b->bets[c] != NULL) {
            tp_buf_deinit(b->bets[c]);
            free(b->bets[c]);
            b->bets[c] = NULL;
        }
    }
}

/* The bytes a JSON string holds as they are (the writer's plain bytes: 0x20..0x7f but '"' and
 * '\\'). */
static const unsigned char json_plain[256] = {
    [0x20 ... 0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7f] = 1,
};

/* Length of `s` when every byte is plain, else -1. */
static ptrdiff_t plain_len(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (json_plain[*p])
        p++;
    return *p == '\0' ? p - (const unsigned char *)s : -1;
}

/* Appends one row object {k0: v0, …} (all values as JSON strings or null; Postgres casts them
 * to the column types in json_populate_recordset). The bytes are the JSON writer's (tp_wr_map,
 * tp_wr_key, tp_wr_str / tp_wr_null: test_pgw compares), written in one append when no string
 * needs escaping: the writer's per-item steps cost 5.7k instructions a row on the writer thread
 * (callgrind, session 8, when the bets were such rows too). A row with a string to escape (a
 * password hash) goes through the writer. */
static void row(struct tp_pgw_batch *b, enum tp_pgw_table t, size_t n, const char *const *kv)
{
    struct tp_buf *out = b->json[t];
    if (b->nrows[t]++ > 0)
        tp_buf_puts(out, ",");
    ptrdiff_t len[2 * 16];
    size_t total = 2;
    bool plain = 2 * n <= TP_ARRAY_LEN(len);
    for (size_t i = 0; plain && i < 2 * n; i++) {
        len[i] = kv[i] != NULL ? plain_len(kv[i]) : 4;
        plain = len[i] >= 0;
        total += (size_t)len[i] + 3; /* quotes and ':' or ',' */
    }
    if (!plain) {
        tp_pgw_row_generic(out, n, kv);
        return;
    }
    char *o = tp_buf_reserve(out, total), *start = o;
    *o++ = '{';
    for (size_t i = 0; i < 2 * n; i++) {
        if (i > 0)
            *o++ = i % 2 ? ':' : ',';
        if (kv[i] == NULL) {
            memcpy(o, "null", 4);
            o += 4;
            continue;
        }
        *o++ = '"';
        memcpy(o, kv[i], (size_t)len[i]);
        o += len[i];
        *o++ = '"';
    }
    *o++ = '}';
    tp_buf_commit(out, (size_t)(o - start));
}

/* The writer's bytes for the same row, for test_pgw's comparison with row(). */
void tp_pgw_row_generic(struct tp_buf *out, size_t n, const char *const *kv)
{
    struct tp_wr w;
    tp_wr_init(&w, out, TP_FMT_JSON);
    tp_wr_map(&w, n);
    for (size_t i = 0; i < n; i++) {
        tp_wr_key(&w, kv[2 * i]);
        if (kv[2 * i + 1] == NULL)
            tp_wr_null(&w);
        else
            tp_wr_str(&w, kv[2 * i + 1]);
    }
}

/* Appends one bets row to the column arrays: v[] in TP_PGW_BET_COLS order, NULL as NULL. Every
 * integer is one the caller checked (tp_pgw_is_uint: below 10^18; a band is_uint_max
 * INT16_MAX). A text (an idempotency key of a hostile or older event: bet_batch.lua's are
 * printable) goes in with invalid UTF-8 as U+FFFD, what Postgres stored from the JSON rows;
 * Postgres would refuse it, failing the whole batch. */
static void bet_row(struct tp_pgw_batch *b, const char *const v[TP_PGW_BET_COLS])
{
    b->nrows[TP_PGW_BETS]++;
    for (int c = 0; c < TP_PGW_BET_COLS; c++) {
        struct tp_buf *out = b->bets[c];
        if (v[c] == NULL) {
            append_be32(out, UINT32_MAX); /* -1 */
            put_be32(byte_at(out, BET_ARRAY_FLAGS), 1);
        } else if (bet_col_oid[c] == OID_TEXT) {
            size_t at = tp_buf_size(out);
            append_be32(out, 0);
            tp_codec_utf8(out, v[c], strlen(v[c]));
            put_be32(byte_at(out, at), (uint32_t)(tp_buf_size(out) - at - 4));
        } else {
            uint64_t x = (uint64_t)strtoll(v[c], NULL, 10);
            int bytes = bet_col_oid[c] == OID_INT2 ? 2 : 8;
            append_be32(out, (uint32_t)bytes);
            char *p = tp_buf_reserve(out, (size_t)bytes);
            for (int i = 0; i < bytes; i++)
                p[i] = (char)(x >> (8 * (bytes - 1 - i)));
            tp_buf_commit(out, (size_t)bytes);
        }
    }
}

/* `prefix` then `s` into out[cap], cut to fit as snprintf would cut it: a ledger row's negated
 * amount without a printf each. */
static void join(char *out, size_t cap, const char *prefix, const char *s)
{
    size_t a = TP_MIN(strlen(prefix), cap - 1);
    size_t n = TP_MIN(strlen(s), cap - 1 - a);
    memcpy(out, prefix, a);
    memcpy(out + a, s, n);
    out[a + n] = '\0';
}

/* Two ledger rows of one entry: `from` gives `amount`, `to` receives it (sum zero). A zero
 * amount writes nothing (the ledger refuses zero rows). */
static void ledger(struct tp_pgw_batch *b, const char *entry, const char *kind, const char *from,
                   const char *to, const char *amount)
{
    char neg[32];
    if (strcmp(amount, "0") == 0)
        return;
    if (amount[0] == '-')
        join(neg, sizeof(neg), "", amount + 1);
    else
        join(neg, sizeof(neg), "-", amount);
    const char *a[] = {"entry_id", entry, "account", from, "amount", neg, "kind", kind};
    row(b, TP_PGW_LEDGER, 4, a);
    const char *c[] = {"entry_id", entry, "account", to, "amount", amount, "kind", kind};
    row(b, TP_PGW_LEDGER, 4, c);
}

static int add_money(struct tp_pgw_batch *b, const struct tp_pgw_event *ev, const char *type)
{
    const char *user = field(ev, "user_id"), *ts = field(ev, "ts");
    char entry[192];
    if (!tp_pgw_is_uint(user) || !tp_pgw_is_uint(ts))
        return TP_EINVAL;

    if (strcmp(type, "grant") == 0) {
        /* Negative: an operator's correction (grant.lua keeps the balance non-negative). */
        const char *gid = field(ev, "grant_id"), *amount = field(ev, "amount");
        if (!is_ident(gid) || !is_int(amount) || strcmp(amount, "0") == 0)
            return TP_EINVAL;
        const char *kv[] = {"id", gid, "user_id", user, "amount", amount, "ts", ts};
        row(b, TP_PGW_GRANTS, 4, kv);
        char acct_user[40];
        snprintf(acct_user, sizeof(acct_user), "user:%s", user);
        snprintf(entry, sizeof(entry), "grant:%s", gid);
        ledger(b, entry, "grant", "system", acct_user, amount);
        return 0;
    }
    const char *bet = field(ev, "bet_id"), *round = field(ev, "round_id");
    if (!tp_pgw_is_uint(bet) || !tp_pgw_is_uint(round))
        return TP_EINVAL;
    if (strcmp(type, "bet") == 0) {
        const char *band = field(ev, "band"), *stake = field(ev, "stake");
        /* The idempotency key, when the bet script sends it; else a per-bet placeholder (the
         * table wants one, unique per player). */
        const char *key = field(ev, "idem_key");
        char key_buf[48];
        if (key == NULL || key[0] == '\0' || strlen(key) > 128) {
            snprintf(key_buf, sizeof(key_buf), "bet:%s", bet);
            key = key_buf;
        }
        /* The balance right after the bet: a replay of the bet once its round left Redis answers
         * with it (SQL NULL when absent). */
        const char *bal = field(ev, "balance");
        if (!is_uint_max(band, INT16_MAX) || !tp_pgw_is_uint(stake) || strcmp(stake, "0") == 0 ||
            (bal != NULL && !tp_pgw_is_uint(bal)))
            return TP_EINVAL;
        const char *v[TP_PGW_BET_COLS] = {bet, round, user, band, stake, key, ts, bal};
        /* The bets row is the debit's record: no ledger rows (migration 0006). */
        bet_row(b, v);
        return 0;
    }
    /* payout | refund: the payouts row is the credit's record, no ledger rows (migration
     * 0010: its view gives entry '<type>:<bet>' {round -amount, user +amount}). */
    const char *amount = field(ev, "amount");
    if (!tp_pgw_is_uint(amount))
        return TP_EINVAL;
    const char *kind = strcmp(type, "payout") == 0 ? "win" : "refund";
    snprintf(entry, sizeof(entry), "%s:%s", type, bet);
    const char *kv[] = {"id",       entry, "bet_id", bet,    "user_id", user,
                        "round_id", round, "amount", amount, "kind",    kind};
    row(b, TP_PGW_PAYOUTS, 6, kv);
    return 0;
}

/* A text of 1..max bytes (0..max when `empty_ok`) without control bytes. */
static bool is_text(const char *s, size_t max, bool empty_ok)
{
    if (s == NULL || strlen(s) > max || (!empty_ok && s[0] == '\0'))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* An admin action (scripts/lua/README.md "Admin actions"): written by the script that performed
 * it, in whichever outbox that script writes. `detail` must be a JSON object (it becomes jsonb:
 * anything else would fail the whole batch's cast). */
static int add_admin(struct tp_pgw_batch *b, const struct tp_pgw_event *ev)
{
    const char *id = field(ev, "action_id"), *action = field(ev, "action");
    const char *actor = field(ev, "actor"), *user = field(ev, "user_id");
    const char *detail = field(ev, "detail"), *reason = field(ev, "reason");
    const char *ts = field(ev, "ts");
    if (!is_ident(id) || action == NULL || action[0] == '\0' || strlen(action) > 32 ||
        strspn(action, "abcdefghijklmnopqrstuvwxyz_") != strlen(action) ||
        !is_text(actor, 160, false) || !is_text(reason, 1000, true) || !tp_pgw_is_uint(ts) ||
        (user != NULL && user[0] != '\0' && !tp_pgw_is_uint(user)) || detail == NULL)
        return TP_EINVAL;
    char err[64];
    struct tp_doc *doc = tp_doc_parse(TP_FMT_JSON, detail, strlen(detail), err, sizeof(err));
    bool object = doc != NULL && tp_val_type(tp_doc_root(doc)) == TP_VAL_MAP;
    tp_doc_free(doc);
    if (!object)
        return TP_EINVAL;
    const char *kv[] = {"id",     id,     "action",  action,
                        "actor",  actor,  "user_id", user != NULL && user[0] != '\0' ? user : NULL,
                        "detail", detail, "reason",  reason,
                        "at",     ts};
    row(b, TP_PGW_ADMIN_ACTIONS, 7, kv);
    return 0;
}

/* One bet line of a `bets` event (bet_batch.lua): "<bet_id>,<user_id>,<band>,<stake>,<balance>,
 * <idem_key>", the key last (it may hold commas). Splits `line` in place; false if malformed. */
static bool bet_line(char *line, const char *f[6])
{
    char *p = line;
    for (int i = 0; i < 5; i++) {
        char *c = strchr(p, ',');
        if (c == NULL)
            return false;
        *c = '\0';
        f[i] = p;
        p = c + 1;
    }
    f[5] = p;
    size_t klen = strlen(p);
    if (klen < 1 || klen > 128)
        return false;
    for (int i = 0; i < 5; i++)
        if (!tp_pgw_is_uint(f[i]))
            return false;
    return is_uint_max(f[2], INT16_MAX) && strcmp(f[3], "0") != 0 && strcmp(f[1], "0") != 0;
}

/* A `bets` event: the accepted bets of one bet_batch.lua call, one round, one `ts`. All lines
 * are checked before any row is added, so a malformed entry adds nothing (as for one bet). */
static int add_bets(struct tp_pgw_batch *b, const struct tp_pgw_event *ev)
{
    const char *round = field(ev, "round_id"), *ts = field(ev, "ts"), *list = field(ev, "bets");
    if (!tp_pgw_is_uint(round) || !tp_pgw_is_uint(ts) || list == NULL || list[0] == '\0')
        return TP_EINVAL;
    char *copy = tp_xstrdup(list);
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        if (pass == 1) {
            free(copy);
            copy = tp_xstrdup(list);
        }
        char *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            const char *f[6];
            if (!bet_line(line, f)) {
                rc = TP_EINVAL;
                break;
            }
            if (pass == 0)
                continue;
            /* balance: what a replay answers once the round left Redis (bets.balance_after).
             * No ledger rows: the bets row is the debit's record. */
            const char *v[TP_PGW_BET_COLS] = {f[0], round, f[1], f[2], f[3], f[5], ts, f[4]};
            bet_row(b, v);
        }
    }
    free(copy);
    return rc;
}

/* One line of a `credits` event (settle_page.lua): "<bet_id>,<user_id>,<amount>,<balance>", all
 * canonical integers, user and amount non-zero. Splits `line` in place; false if malformed. */
static bool credit_line(char *line, const char *f[4])
{
    for (int i = 0; i < 4; i++) {
        char *c = strchr(line, ',');
        if ((c == NULL) != (i == 3))
            return false;
        f[i] = line;
        if (c != NULL) {
            *c = '\0';
            line = c + 1;
        }
        if (!tp_pgw_is_uint(f[i]))
            return false;
    }
    return strcmp(f[1], "0") != 0 && strcmp(f[2], "0") != 0;
}

/* A `credits` event: every payout or every refund one settle_page.lua call made, one round.
 * Each line becomes the payouts row a one-bet `payout`/`refund` event gives (same id, so a
 * repeated entry or page adds nothing in Postgres; no ledger rows, as there). The lines are all
 * parsed before any row is added: a malformed entry adds nothing. */
static int add_credits(struct tp_pgw_batch *b, const struct tp_pgw_event *ev)
{
    const char *round = field(ev, "round_id"), *kind = field(ev, "kind");
    const char *list = field(ev, "credits");
    if (!tp_pgw_is_uint(round) || !tp_pgw_is_uint(field(ev, "ts")) || kind == NULL ||
        (strcmp(kind, "payout") != 0 && strcmp(kind, "refund") != 0) || list == NULL ||
        list[0] == '\0')
        return TP_EINVAL;
    char *copy = tp_xstrdup(list);
    size_t cap = 1, n = 0;
    for (const char *p = copy; *p; p++)
        cap += *p == '\n';
    const char *(*f)[4] = tp_xmalloc(cap * sizeof(*f));
    int rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL && rc == 0;
         line = strtok_r(NULL, "\n", &save))
        rc = credit_line(line, f[n++]) ? 0 : TP_EINVAL;
    const char *pkind = strcmp(kind, "payout") == 0 ? "win" : "refund";
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char entry[48];
        snprintf(entry, sizeof(entry), "%s:%s", kind, f[i][0]);
        const char *kv[] = {"id",       entry, "bet_id", f[i][0], "user_id", f[i][1],
                            "round_id", round, "amount", f[i][2], "kind",    pkind};
        row(b, TP_PGW_PAYOUTS, 6, kv);
    }
    free(f);
    free(copy);
    return n == 0 ? TP_EINVAL : rc;
}

/* Appends "{e1,e2,…}" (a Postgres int[] literal) of the comma list `edges` into out[n]. */
static bool edges_literal(const char *edges, char *out, size_t n)
{
    size_t len = strlen(edges);
    if (len + 3 > n)
        return false;
    for (const char *p = edges; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == ','))
            return false;
    snprintf(out, n, "{%s}", edges);
    return true;
}

int tp_pgw_batch_add(struct tp_pgw_batch *b, const struct tp_pgw_event *ev)
{
    const char *type = field(ev, "type");
    size_t credits = b->nrows[TP_PGW_PAYOUTS];
    int rc = TP_EINVAL;
    if (type == NULL) {
        rc = TP_EINVAL;
    } else if (strcmp(type, "grant") == 0 || strcmp(type, "bet") == 0 ||
               strcmp(type, "payout") == 0 || strcmp(type, "refund") == 0) {
        rc = ev->bucket >= 0 ? add_money(b, ev, type) : TP_EINVAL;
    } else if (strcmp(type, "bets") == 0) {
        rc = ev->bucket >= 0 ? add_bets(b, ev) : TP_EINVAL;
    } else if (strcmp(type, "credits") == 0) {
        rc = ev->bucket >= 0 ? add_credits(b, ev) : TP_EINVAL;
    } else if (strcmp(type, "house") == 0) {
        /* A bucket's share of rake + breakage: Redis bookkeeping per bucket only. The ledger
         * moves the round's rake and breakage to the house once, from the receipt. */
        const char *round = field(ev, "round_id"), *amount = field(ev, "amount");
        rc = ev->bucket >= 0 && tp_pgw_is_uint(round) && is_int(amount) ? 0 : TP_EINVAL;
    } else if (strcmp(type, "admin") == 0) {
        rc = add_admin(b, ev);
    } else if (strcmp(type, "round_opened") == 0) {
        const char *id = field(ev, "round_id"), *o = field(ev, "opens_at");
        const char *l = field(ev, "locks_at"), *c = field(ev, "closes_at");
        const char *h = field(ev, "seed_hash"), *edges = field(ev, "edges");
        const char *rake = field(ev, "rake_bps");
        /* The price walk's parameters (absent from events written before they were added:
         * SQL NULL, and such a round stays in Redis). */
        const char *vol = field(ev, "vol_ppb"), *tick = field(ev, "tick_ms");
        const char *bet_ms = field(ev, "betting_ms");
        const char *mins = field(ev, "min_stake"), *maxs = field(ev, "max_stake");
        char lit[256];
        if (edges == NULL)
            edges = b->default_edges;
        if (rake == NULL)
            rake = b->default_rake_bps;
        if (tp_pgw_is_uint(id) && tp_pgw_is_uint(o) && tp_pgw_is_uint(l) && tp_pgw_is_uint(c) &&
            is_ident(h) && edges != NULL && edges_literal(edges, lit, sizeof(lit)) &&
            is_uint_max(rake, INT32_MAX) && (vol == NULL || tp_pgw_is_uint(vol)) &&
            (tick == NULL || tp_pgw_is_uint(tick)) && (bet_ms == NULL || tp_pgw_is_uint(bet_ms)) &&
            (mins == NULL || tp_pgw_is_uint(mins)) && (maxs == NULL || tp_pgw_is_uint(maxs))) {
            const char *kv[] = {"id",         id,     "opens_at",       o,    "locks_at",  l,
                                "closes_at",  c,      "band_edges_bps", lit,  "rake_bps",  rake,
                                "seed_hash",  h,      "vol_ppb",        vol,  "tick_ms",   tick,
                                "betting_ms", bet_ms, "min_stake",      mins, "max_stake", maxs};
            row(b, TP_PGW_ROUNDS, 12, kv);
            rc = 0;
        }
    } else if (strcmp(type, "round_settled") == 0 || strcmp(type, "round_cancelled") == 0) {
        static const char *names[] = {"total",    "winning_stake", "rake",
                                      "breakage", "payouts",       "refunds"};
        /* Known once the round got that far; absent (SQL NULL) for an early cancel. */
        static const char *optional[] = {"lock_price", "close_price", "winning_band", "seed"};
        const char *id = field(ev, "round_id");
        const char *kv[2 * 14] = {"id", id, "state", type + 6};
        /* The pools per band and refund_all (absent from older events: SQL NULL). */
        const char *pools = field(ev, "pools"), *refund_all = field(ev, "refund_all");
        char pools_lit[512];
        bool ok = tp_pgw_is_uint(id);
        for (int i = 0; i < 6; i++) {
            kv[4 + 2 * i] = names[i];
            kv[5 + 2 * i] = field(ev, names[i]);
            ok = ok && tp_pgw_is_uint(kv[5 + 2 * i]);
        }
        for (int i = 0; i < 4; i++) {
            const char *v = field(ev, optional[i]);
            kv[16 + 2 * i] = optional[i];
            kv[17 + 2 * i] = v;
            ok = ok && (v == NULL || (i < 2    ? tp_pgw_is_uint(v)
                                      : i == 2 ? is_uint_max(v, INT16_MAX)
                                               : is_ident(v)));
        }
        ok = ok && (pools == NULL || (strchr(pools, '-') == NULL &&
                                      edges_literal(pools, pools_lit, sizeof(pools_lit))));
        ok = ok &&
             (refund_all == NULL || strcmp(refund_all, "0") == 0 || strcmp(refund_all, "1") == 0);
        kv[24] = "pools", kv[25] = pools != NULL ? pools_lit : NULL;
        kv[26] = "refund_all", kv[27] = refund_all;
        if (ok) {
            row(b, TP_PGW_ROUND_RESULTS, 14, kv);
            /* The round's stakes not paid out go to the house: rake and breakage. */
            char entry[64], acct_round[40];
            snprintf(acct_round, sizeof(acct_round), "round:%s", id);
            snprintf(entry, sizeof(entry), "rake:%s", id);
            ledger(b, entry, "rake", acct_round, "house", field(ev, "rake"));
            snprintf(entry, sizeof(entry), "breakage:%s", id);
            ledger(b, entry, "breakage", acct_round, "house", field(ev, "breakage"));
            rc = 0;
        }
    } else if (strcmp(type, "round_seed") == 0) {
        /* A seed revealed after its round's receipt (by the next round's lock). */
        const char *id = field(ev, "round_id"), *seed = field(ev, "seed");
        if (tp_pgw_is_uint(id) && is_ident(seed)) {
            const char *kv[] = {"id", id, "seed", seed};
            row(b, TP_PGW_ROUND_SEEDS, 2, kv);
            rc = 0;
        }
    } else if (strcmp(type, "user") == 0) {
        /* scripts/lua/signup.lua: user_id, username, pw_hash, created_at. The hash is kept so
         * the system of record can restore accounts; it is only ever passed as a parameter. */
        const char *id = field(ev, "user_id"), *name = field(ev, "username");
        const char *ts = field(ev, "created_at"), *pw = field(ev, "pw_hash");
        if (tp_pgw_is_uint(id) && is_ident(name) && tp_pgw_is_uint(ts) && pw != NULL &&
            strlen(pw) < 512) {
            const char *kv[] = {"id", id,   "username", name,      "password_hash",
                                pw,   "ts", ts,         "changed", NULL};
            row(b, TP_PGW_USERS, 5, kv);
            rc = 0;
        }
    } else if (strcmp(type, "password") == 0) {
        /* scripts/lua/password.lua: user_id, pw_hash, ts. A users row without a username is
         * an update of an existing user (the second statement of TP_PGW_USERS). */
        const char *id = field(ev, "user_id"), *ts = field(ev, "ts"), *pw = field(ev, "pw_hash");
        if (tp_pgw_is_uint(id) && tp_pgw_is_uint(ts) && pw != NULL && strlen(pw) < 512) {
            const char *kv[] = {"id", id,   "username", NULL,      "password_hash",
                                pw,   "ts", NULL,       "changed", ts};
            row(b, TP_PGW_USERS, 5, kv);
            rc = 0;
        }
    }
    if (rc != 0)
        b->skipped++;
    /* Payout, refund or credits events: the newest one dates the batch's settlement. */
    if (b->nrows[TP_PGW_PAYOUTS] > credits && ev->id != NULL)
        b->credits_id_ms = TP_MAX(b->credits_id_ms, strtoll(ev->id, NULL, 10));
    return rc;
}

/* --- Batch → statements --- */

/* The bets INSERT's head; BETS_ROWS is the ON CONFLICT form's row source (bets_insert_strict
 * has its own). */
#define BETS_INSERT                                                                                \
    "INSERT INTO bets (id, round_id, user_id, band, stake, idempotency_key, placed_at, "           \
    "balance_after) "
#define BETS_ROWS                                                                                  \
    " id, round_id, user_id, band, stake, idempotency_key, placed_at, balance FROM "               \
    "unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], $5::bigint[], $6::text[], "    \
    "$7::bigint[], $8::bigint[]) AS x(id, round_id, user_id, band, stake, idempotency_key, "       \
    "placed_at, balance)"

/*
 * A batch's bets as a plain INSERT: no ON CONFLICT and no DISTINCT ON, so a row already in
 * Postgres or twice in the batch, by id or by (user, key, round), raises unique_violation and
 * the transaction writes nothing. Without them a bets row costs Postgres less CPU
 * (bench/README.md, Writer, "Session 23"): ON CONFLICT probes both unique indexes before each
 * row and again as it inserts it, and writes the row as a speculative insertion (a token lock,
 * one more WAL record a row to confirm it); DISTINCT ON sorts the batch by id. A re-read of the
 * writer's pending entries (a crash between COMMIT and XACK, a claim, a failure: a replay by
 * construction) skips this and goes in with table_sql's bets INSERT at once (pgw_outbox.c,
 * on_read). Rows already there in a fresh read come only from a claim race (another writer
 * wrote the entries it claimed from us meanwhile) or a key Postgres holds under another id:
 * then the writer rolls back and writes the same batch again with table_sql's bets INSERT,
 * which skips exactly those rows (pgw_write.c, tp_pgw_write). The outcome is what writing every
 * batch with it gives; only such a batch costs two tries.
 *
 * The arrays are unnested in the select list, not in FROM: the same rows in the same order
 * (set-returning functions in a select list advance together, element i of every array makes
 * row i), without FROM unnest's tuplestore, which holds the whole batch before the first
 * insert: 9 % fewer instructions a row in Postgres (bench/README.md, "Session 26: the writer's
 * bets INSERT"). Arrays of unequal length would give rows padded with NULLs in either form;
 * none can arise: bet_row appends one element to every column (and every column but
 * balance_after is NOT NULL). The ON CONFLICT form keeps FROM: DISTINCT ON names its columns.
 */
static const char bets_insert_strict[] =
    BETS_INSERT "SELECT unnest($1::text[]), unnest($2::bigint[]), unnest($3::bigint[]), "
                "unnest($4::smallint[]), unnest($5::bigint[]), unnest($6::text[]), "
                "unnest($7::bigint[]), unnest($8::bigint[])";

/*
 * A credit is two writes: its payouts row and its bet's status and payout. One statement makes
 * both from one parse of the batch's payouts array (`x`, materialised once, read by the INSERT
 * in a data-modifying CTE and by the UPDATE): two statements parsed the same JSON twice. The
 * INSERT and the UPDATE see the same snapshot and touch different tables, so this writes what
 * the two statements wrote. The bets UPDATE is the row's own (by bet id), so a credit whose bet
 * is not in Postgres yet updates nothing here; the bets' late-status UPDATE marks it when it
 * comes (table_sql, TP_PGW_BETS).
 */
#define PAYOUTS_X                                                                                  \
    "WITH x AS MATERIALIZED (SELECT id, bet_id, user_id, round_id, amount, kind FROM "             \
    "json_to_recordset($1::json) AS x(id text, bet_id text, user_id bigint, round_id bigint, "     \
    "amount bigint, kind text)), p AS (INSERT INTO payouts (id, bet_id, user_id, round_id, "       \
    "amount, kind) SELECT "
#define PAYOUTS_UPDATE                                                                             \
    ") UPDATE bets b SET status = CASE x.kind WHEN 'win' THEN 'won' ELSE 'refunded' END, "         \
    "payout = x.amount FROM x WHERE b.id = x.bet_id"

/*
 * A batch's credits with their payouts rows as a plain INSERT, for the reason bets_insert_strict
 * is one: no ON CONFLICT and no DISTINCT ON cut a credit's Postgres CPU by a quarter with the
 * one parse (bench/README.md, "Session 30: a credit in one statement, its INSERT plain"). A
 * payouts row already in Postgres or twice in the batch (by id, or by (bet_id, kind)) fails the
 * transaction, and the batch is written again with table_sql's form, which skips exactly those
 * rows, as a re-read of pending entries is at once (tp_pgw_batch.skip_existing): the same redo
 * as the bets'.
 */
static const char payouts_strict[] =
    PAYOUTS_X "id, bet_id, user_id, round_id, amount, kind FROM x" PAYOUTS_UPDATE;

/*
 * Statements per table (up to two), each taking the batch's JSON array of that table as $1 (the
 * bets: their column arrays as $1..$8), against migrations/0001_init.sql. DISTINCT ON removes
 * duplicates within the batch (a repeated entry, a claim race); ON CONFLICT DO NOTHING makes a
 * replayed batch a no-op (the bets and the payouts: on the batch's redo, see bets_insert_strict
 * and payouts_strict), and the
 * UPDATEs only move state forward. Order matters inside the
 * transaction: rounds before their results, bets before the payouts that mark them won or refunded.
 */
static const char *const table_sql[TP_PGW_NTABLES][2] = {
    [TP_PGW_USERS] = {"INSERT INTO users (id, username, password_hash, created_at) "
                      "SELECT DISTINCT ON (id) id, username, password_hash, "
                      "to_timestamp(ts / 1000.0) FROM json_to_recordset($1::json) AS x(id "
                      "bigint, username text, password_hash text, ts bigint) "
                      "WHERE username IS NOT NULL ON CONFLICT DO NOTHING",
                      /* Password changes, after the sign-ups of the same batch; the latest of
                       * a user's changes in the batch wins. */
                      "UPDATE users u SET password_hash = x.password_hash FROM (SELECT DISTINCT "
                      "ON (id) id, password_hash FROM json_to_recordset($1::json) AS x(id "
                      "bigint, password_hash text, changed bigint) WHERE changed IS NOT NULL "
                      "ORDER BY id, changed DESC) x WHERE u.id = x.id"},
    [TP_PGW_ROUNDS] = {"INSERT INTO rounds (id, state, opens_at, locks_at, closes_at, "
                       "band_edges_bps, rake_bps, seed_hash, vol_ppb, tick_ms, betting_ms, "
                       "min_stake, max_stake) SELECT DISTINCT ON (id) id, 'open', "
                       "opens_at, locks_at, closes_at, band_edges_bps::int[], rake_bps, seed_hash, "
                       "vol_ppb, tick_ms, betting_ms, min_stake, max_stake "
                       "FROM json_to_recordset($1::json) AS x(id bigint, opens_at bigint, "
                       "locks_at bigint, closes_at bigint, band_edges_bps text, rake_bps int, "
                       "seed_hash text, vol_ppb bigint, tick_ms bigint, betting_ms bigint, "
                       "min_stake bigint, max_stake bigint) ON CONFLICT DO NOTHING"},
    [TP_PGW_ROUND_RESULTS] =
        {"UPDATE rounds r SET state = x.state, total = x.total, winning_stake = x.winning_stake, "
         "rake = x.rake, breakage = x.breakage, payouts = x.payouts, refunds = x.refunds, "
         "lock_price = x.lock_price, close_price = x.close_price, "
         "winning_band = x.winning_band, seed = coalesce(x.seed, r.seed), "
         "pools = x.pools::bigint[], refund_all = x.refund_all, "
         "settled_at = (extract(epoch FROM now()) * 1000)::bigint "
         "FROM json_to_recordset($1::json) AS x(id bigint, state text, total bigint, "
         "winning_stake bigint, rake bigint, breakage bigint, payouts bigint, refunds bigint, "
         "lock_price bigint, close_price bigint, winning_band smallint, seed text, pools text, "
         "refund_all boolean) "
         "WHERE r.id = x.id AND r.state NOT IN ('settled', 'cancelled')",
         /* A settled round's losers: its bets off the winning band, unless it refunds everyone
          * (then each bet's refund marks it). The winning band's bets take 'won' from their
          * payouts, every one of them paid at least its stake (src/game/settle.c), which come
          * in another stream and often after the receipt: marking them 'lost' here too was a
          * second UPDATE of each (and a wrong status meanwhile). A receipt without
          * winning_band or refund_all (older events) marks every pending bet, as before. */
         "UPDATE bets b SET status = 'lost' FROM json_to_recordset($1::json) AS x(id bigint, "
         "state text, winning_band smallint, refund_all boolean) WHERE b.round_id = x.id AND "
         "x.state = 'settled' AND x.refund_all IS NOT TRUE AND b.band IS DISTINCT FROM "
         "x.winning_band AND b.status = 'pending'"},
    [TP_PGW_ROUND_SEEDS] = {"UPDATE rounds r SET seed = x.seed FROM json_to_recordset($1::json) "
                            "AS x(id bigint, seed text) WHERE r.id = x.id AND r.seed IS NULL"},
    [TP_PGW_GRANTS] = {"INSERT INTO grants (id, user_id, amount, created_at) "
                       "SELECT DISTINCT ON (id) id, user_id, amount, to_timestamp(ts / 1000.0) "
                       "FROM json_to_recordset($1::json) AS x(id text, user_id bigint, "
                       "amount bigint, ts bigint) ON CONFLICT DO NOTHING"},
    /* The bets take their column arrays (TP_PGW_BET_COLS), not a JSON array. This INSERT
     * skips rows already there: a pending re-read or a batch's redo
     * (tp_pgw_batch.skip_existing); a fresh batch's first try is bets_insert_strict. */
    [TP_PGW_BETS] = {BETS_INSERT "SELECT DISTINCT ON (id)" BETS_ROWS " ON CONFLICT DO NOTHING",
                     /* A bet written after its round's result or its payout (both sit in
                      * other streams, drained in any order after a backlog) takes its final
                      * status now: the UPDATEs of those events found no row to mark ('lost'
                      * by the same rule as the receipt's UPDATE: a winner or a refund waits
                      * for its credit). Only rounds of the batch that are settled or have a
                      * payout are looked at (`done`, one probe per round); when none is (the
                      * usual batch of an open round's bets), the one-time `EXISTS (done)`
                      * ends the UPDATE before any per-bet lookup, whatever the join's plan.
                      * The payouts probe is a range (r <= round_id <= r), not `round_id = r`:
                      * this prepared statement runs a plan made without the round's value,
                      * and where `payouts` holds few rounds (a young database, settle-100k's
                      * one round) the statistics say any round has most payouts, so `=` was
                      * probed by a sequential scan expecting a match at once. An open round
                      * has none: every bets batch read the whole table (100,000 rows, 6-12
                      * ms; over half of Postgres's CPU in settle-100k's window, bench/
                      * README.md, Writer, "Session 18"). A range between two unknown values
                      * is estimated at 0.5 % of the rows (DEFAULT_RANGE_INEQ_SEL) whatever
                      * the statistics, where the index on round_id is cheaper at any table
                      * size. (Probing each bet by (bet_id, kind) is as safe but cost ~4 µs a
                      * bet more; same session.) */
                     "WITH x AS (SELECT id, round_id FROM unnest($1::text[], $2::bigint[]) AS "
                     "x(id, round_id)), done AS (SELECT d.r FROM (SELECT DISTINCT "
                     "round_id r FROM x) d WHERE EXISTS (SELECT 1 FROM payouts p WHERE "
                     "p.round_id >= d.r AND p.round_id <= d.r) OR EXISTS (SELECT 1 FROM rounds "
                     "r WHERE r.id = d.r AND r.state = 'settled')) "
                     "UPDATE bets b SET status = CASE WHEN p.kind = 'win' THEN 'won' "
                     "WHEN p.kind IS NOT NULL THEN 'refunded' ELSE 'lost' END, "
                     "payout = coalesce(p.amount, 0) FROM x LEFT JOIN payouts p ON p.bet_id = "
                     "x.id WHERE EXISTS (SELECT 1 FROM done) AND x.round_id IN (SELECT r "
                     "FROM done) AND b.id = x.id AND "
                     "b.status = 'pending' AND (p.bet_id IS NOT NULL OR EXISTS (SELECT 1 FROM "
                     "rounds r WHERE r.id = b.round_id AND r.state = 'settled' AND r.refund_all "
                     "IS NOT TRUE AND b.band IS DISTINCT FROM r.winning_band))"},
    /* The credits: payouts rows and their bets' status in one statement (PAYOUTS_X). This
     * form skips rows already there: a pending re-read or a batch's redo
     * (tp_pgw_batch.skip_existing); a fresh batch's first try is payouts_strict. */
    [TP_PGW_PAYOUTS] = {PAYOUTS_X "DISTINCT ON (id) id, bet_id, user_id, round_id, amount, kind "
                                  "FROM x ON CONFLICT DO NOTHING" PAYOUTS_UPDATE},
    [TP_PGW_ADMIN_ACTIONS] = {"INSERT INTO admin_actions (id, action, actor, user_id, detail, "
                              "reason, at) SELECT DISTINCT ON (id) id, action, actor, user_id, "
                              "detail::jsonb, reason, at FROM json_to_recordset($1::json) AS "
                              "x(id text, action text, actor text, user_id bigint, detail text, "
                              "reason text, at bigint) ON CONFLICT DO NOTHING"},
    [TP_PGW_LEDGER] = {"INSERT INTO ledger (entry_id, account, amount, kind) "
                       "SELECT DISTINCT ON (entry_id, account) entry_id, account, amount, kind "
                       "FROM json_to_recordset($1::json) AS x(entry_id text, account text, "
                       "amount bigint, kind text) ON CONFLICT DO NOTHING"},
};

/* The first round of a batch's results or seeds that Postgres does not hold yet. */
static const char round_missing_sql[] =
    "SELECT x.id FROM json_to_recordset($1::json) AS x(id bigint) WHERE NOT EXISTS "
    "(SELECT 1 FROM rounds r WHERE r.id = x.id) LIMIT 1";

/* A bets column's array with its length written (again: repeat calls give the same bytes). */
static const char *bet_array_closed(struct tp_pgw_batch *b, int col)
{
    put_be32(byte_at(b->bets[col], BET_ARRAY_LEN), (uint32_t)b->nrows[TP_PGW_BETS]);
    return tp_buf_ptr(b->bets[col]);
}

/* Closes a JSON array once: "]" and the NUL its text parameter needs. Row values are C
 * strings, so only a closed array ends in a NUL. */
static const char *closed_json(struct tp_buf *a)
{
    size_t n = tp_buf_size(a);
    if (n == 0 || tp_buf_ptr(a)[n - 1] != '\0') {
        tp_buf_puts(a, "]");
        tp_buf_append(a, "", 1);
    }
    return tp_buf_ptr(a);
}

size_t tp_pgw_batch_rows(const struct tp_pgw_batch *b)
{
    size_t n = 0;
    for (int t = 0; t < TP_PGW_NTABLES; t++)
        n += b->nrows[t];
    return n;
}

/*
 * Whether a batch may share the advisory lock: it has rows, and only of tables whose rows no
 * other batch's statement reads (bets, grants, admin actions, and the ledger rows they bring;
 * a round result's ledger rows come with its exclusive table). Two such batches
 * insert disjoint rows, or the same ones (a claim race: ON CONFLICT waits for the first and
 * skips), and the late-status UPDATE after the bets reads payouts and rounds, which only
 * exclusive batches write: an exclusive batch waits until every shared one has committed and
 * then sees its bets, and a shared one that starts later sees the exclusive one's rows.
 */
static bool shares_lock(const struct tp_pgw_batch *b)
{
    for (int t = 0; t < TP_PGW_NTABLES; t++)
        if (b->nrows[t] > 0 && t != TP_PGW_BETS && t != TP_PGW_LEDGER && t != TP_PGW_GRANTS &&
            t != TP_PGW_ADMIN_ACTIONS)
            return false;
    return tp_pgw_batch_rows(b) > 0;
}

size_t tp_pgw_batch_sql(struct tp_pgw_batch *b, struct tp_pgw_stmt *out)
{
    size_t n = 0;
    out[n++] = (struct tp_pgw_stmt){.sql = "BEGIN"};
    /* Batches that touch rounds, payouts or users run one at a time across all writers: a bet
     * and its round's result or payout may be in two writers' concurrent batches, and then
     * neither transaction's UPDATE would see the other's uncommitted row (the bet would stay
     * 'pending' forever). Bets-only batches, the bulk under load, share the lock (shares_lock),
     * so several writers use several Postgres backends. */
    out[n++] = (struct tp_pgw_stmt){.sql = shares_lock(b)
                                               ? "SELECT pg_advisory_xact_lock_shared(1953523575)"
                                               : "SELECT pg_advisory_xact_lock(1953523575)"};
    for (int t = 0; t < TP_PGW_NTABLES; t++) {
        if (b->nrows[t] == 0)
            continue;
        const char *param = closed_json(b->json[t]);
        /* A round's result or seed UPDATEs the round's row. Two writers draining a backlog may
         * hold the round_opened entry and its round_settled entry in two batches, and commit
         * them in either order: the UPDATE would find no row and the result would be lost for
         * good (the round's INSERT after it says 'open'). So the batch waits until the round's
         * row is committed (rounds before results within one batch: table order). */
        if (b->wait_for_rounds && (t == TP_PGW_ROUND_RESULTS || t == TP_PGW_ROUND_SEEDS))
            out[n++] = (struct tp_pgw_stmt){
                .sql = round_missing_sql, .params = {param}, .nparams = 1, .must_be_empty = true};
        for (int i = 0; i < 2 && table_sql[t][i] != NULL; i++) {
            struct tp_pgw_stmt s = {.sql = table_sql[t][i], .params = {param}, .nparams = 1};
            if (t == TP_PGW_BETS && i == 0 && !b->skip_existing)
                s.sql = bets_insert_strict;
            if (t == TP_PGW_PAYOUTS && !b->skip_existing)
                s.sql = payouts_strict;
            if (t == TP_PGW_BETS) { /* the INSERT all columns, the late-status UPDATE id, round */
                s.binary = true;
                for (s.nparams = 0; s.nparams < (i == 0 ? TP_PGW_BET_COLS : 2); s.nparams++) {
                    s.params[s.nparams] = bet_array_closed(b, s.nparams);
                    s.lengths[s.nparams] = (int)tp_buf_size(b->bets[s.nparams]);
                }
            }
            out[n++] = s;
        }
    }
    out[n++] = (struct tp_pgw_stmt){.sql = "COMMIT"};
    return n;
}
