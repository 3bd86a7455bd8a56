/*
 * Postgres writer batch mapping (pure): every event type becomes the right rows, grants, rake
 * and breakage become ledger entries that sum to zero (a bet is its bets row alone, a payout or
 * refund its payouts row), and malformed or hostile events are refused without adding anything
 * (they would otherwise block the outbox or corrupt the system of record).
 * A batch becomes one transaction whose order the exactly-once rules rely on: the advisory
 * lock first, rounds before their results, bets (and their late final status) before payouts,
 * and every column a statement reads is a key of its table's rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/store/pgw.h"

/* The batch → statements step is private to the writer (src/store/pgw_batch.c). */
#include "../../../src/store/pgw_internal.h"

/* Adds one event of stream id `id` and bucket `bucket` given as `ap`, a NULL-terminated list of
 * key, value. */
static int add_va(struct tp_pgw_batch *b, const char *id, int bucket, va_list ap)
{
    const char *keys[32], *vals[32];
    size_t n = 0;
    for (const char *k; (k = va_arg(ap, const char *)) != NULL && n < 32; n++) {
        keys[n] = k;
        vals[n] = va_arg(ap, const char *);
    }
    struct tp_pgw_event ev = {id, bucket, n, keys, vals};
    return tp_pgw_batch_add(b, &ev);
}

/* Adds one event given as a NULL-terminated list of key, value. */
static int add(struct tp_pgw_batch *b, int bucket, ...)
{
    va_list ap;
    va_start(ap, bucket);
    int rc = add_va(b, "1-0", bucket, ap);
    va_end(ap);
    return rc;
}

/* The table's JSON array, closed and parsed (asserts it is valid JSON). */
static struct tp_doc *table(struct tp_pgw_batch *b, enum tp_pgw_table t)
{
    struct tp_buf copy;
    tp_buf_init(&copy);
    tp_buf_append(&copy, tp_buf_ptr(b->json[t]), tp_buf_size(b->json[t]));
    tp_buf_puts(&copy, "]");
    char err[128];
    struct tp_doc *d =
        tp_doc_parse(TP_FMT_JSON, tp_buf_ptr(&copy), tp_buf_size(&copy), err, sizeof(err));
    if (d == NULL)
        fail_msg("invalid JSON %.*s: %s", (int)tp_buf_size(&copy), tp_buf_ptr(&copy), err);
    tp_buf_deinit(&copy);
    return d;
}

/* Closes every array of `b` (as tp_pgw_batch_sql does). */
static void closed_columns(struct tp_pgw_batch *b)
{
    struct tp_pgw_stmt s[TP_PGW_MAX_STMTS];
    (void)tp_pgw_batch_sql(b, s);
}

/* The bets' columns (TP_PGW_BET_COLS, pgw.h). */
enum { BET_ID, BET_ROUND, BET_USER, BET_BAND, BET_STAKE, BET_KEY, BET_PLACED, BET_BALANCE };

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Parses the bets' column `col` as array_recv reads it (the header: 1 dimension, the has-NULL
 * flag, the column's element type, length, lower bound 1; then per element its length, -1 for
 * NULL, and its bytes; the header's length is written at closing, so it is not checked here):
 * element `row` into out[cap] when there is one (a text as it is, an integer in decimal;
 * *is_null for NULL); returns the element count. Fails the test on a malformed array. */
static size_t bet_elems(const struct tp_pgw_batch *b, int col, size_t row, char *out, size_t cap,
                        bool *is_null)
{
    static const uint32_t oid[TP_PGW_BET_COLS] = {25, 20, 20, 21, 20, 25, 20, 20};
    const unsigned char *p = (const unsigned char *)tp_buf_ptr(b->bets[col]);
    const unsigned char *end = p + tp_buf_size(b->bets[col]);
    if (end - p < 20 || be32(p) != 1 || be32(p + 4) > 1 || be32(p + 8) != oid[col] ||
        be32(p + 16) != 1)
        fail_msg("column %d: no one-dimensional array of its type", col);
    bool any_null = false;
    size_t r = 0;
    for (p += 20; p < end; r++) {
        if (end - p < 4)
            fail_msg("column %d: a cut element length", col);
        uint32_t n = be32(p);
        p += 4;
        char v[256];
        bool null = n == UINT32_MAX;
        any_null = any_null || null;
        if (null) {
            v[0] = '\0';
        } else if ((size_t)(end - p) < n || n >= sizeof(v)) {
            fail_msg("column %d: element %zu runs past the array", col, r);
        } else if (oid[col] == 25) {
            memcpy(v, p, n);
            v[n] = '\0';
        } else {
            if (n != (oid[col] == 21 ? 2u : 8u))
                fail_msg("column %d: an integer of %u bytes", col, n);
            uint64_t x = 0;
            for (uint32_t i = 0; i < n; i++)
                x = x << 8 | p[i];
            snprintf(v, sizeof(v), "%lld", n == 2 ? (long long)(int16_t)x : (long long)(int64_t)x);
        }
        if (!null)
            p += n;
        if (r == row) {
            assert_true(strlen(v) < cap);
            memcpy(out, v, strlen(v) + 1);
            *is_null = null;
        }
    }
    assert_int_equal(be32((const unsigned char *)tp_buf_ptr(b->bets[col]) + 4), any_null);
    return r;
}

/* Element `row` of the bets' column `col` (NULL for NULL); fails the test when there is none. */
static const char *bet_at(const struct tp_pgw_batch *b, size_t row, int col, char *out, size_t cap)
{
    bool null = false;
    if (bet_elems(b, col, row, out, cap, &null) <= row)
        fail_msg("column %d has no row %zu", col, row);
    return null ? NULL : out;
}

static const char *str_at(const struct tp_doc *d, size_t row, const char *key)
{
    const struct tp_val *v = tp_val_get(tp_val_at(tp_doc_root(d), row), key);
    return v ? tp_val_str(v, NULL) : NULL;
}

/* Σ ledger amounts per entry are zero, and returns the number of ledger rows. */
static size_t ledger_balanced(struct tp_pgw_batch *b)
{
    struct tp_doc *d = table(b, TP_PGW_LEDGER);
    size_t n = tp_val_len(tp_doc_root(d));
    assert_int_equal(n % 2, 0);
    for (size_t i = 0; i < n; i += 2) {
        assert_string_equal(str_at(d, i, "entry_id"), str_at(d, i + 1, "entry_id"));
        long long a = atoll(str_at(d, i, "amount")), c = atoll(str_at(d, i + 1, "amount"));
        assert_true(a + c == 0);
        assert_true(a != 0);
    }
    tp_doc_free(d);
    return n;
}

static void test_money_events(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    assert_int_equal(add(&b, 1, "type", "grant", "grant_id", "signup:7", "user_id", "7", "amount",
                         "100000", "balance", "100000", "ts", "1000", NULL),
                     0);
    assert_int_equal(add(&b, 1, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "band", "2", "stake", "250", "balance", "99750", "ts", "2000", NULL),
                     0);
    assert_int_equal(add(&b, 1, "type", "payout", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "amount", "600", "balance", "100350", "ts", "3000", NULL),
                     0);
    assert_int_equal(add(&b, 1, "type", "refund", "bet_id", "15", "user_id", "7", "round_id", "6",
                         "amount", "100", "balance", "100450", "ts", "3000", NULL),
                     0);
    assert_int_equal(b.nrows[TP_PGW_GRANTS], 1);
    assert_int_equal(b.nrows[TP_PGW_BETS], 1);
    assert_int_equal(b.nrows[TP_PGW_PAYOUTS], 2);
    /* Only the grant writes ledger rows: the bets row is the debit's record (0006), the
     * payouts row the credit's (0010). */
    assert_int_equal(ledger_balanced(&b), 2);

    struct tp_doc *d = table(&b, TP_PGW_LEDGER);
    assert_string_equal(str_at(d, 0, "entry_id"), "grant:signup:7");
    assert_string_equal(str_at(d, 0, "account"), "system");
    assert_string_equal(str_at(d, 1, "account"), "user:7");
    assert_string_equal(str_at(d, 1, "amount"), "100000");
    tp_doc_free(d);

    /* What migration 0010's view payout_credits reads: id (the entry), user, round, amount. */
    d = table(&b, TP_PGW_PAYOUTS);
    assert_string_equal(str_at(d, 0, "id"), "payout:13");
    assert_string_equal(str_at(d, 0, "user_id"), "7");
    assert_string_equal(str_at(d, 0, "round_id"), "5");
    assert_string_equal(str_at(d, 0, "amount"), "600");
    assert_string_equal(str_at(d, 0, "kind"), "win");
    assert_string_equal(str_at(d, 1, "id"), "refund:15");
    assert_string_equal(str_at(d, 1, "kind"), "refund");
    tp_doc_free(d);
    char v[160];
    assert_string_equal(bet_at(&b, 0, BET_KEY, v, sizeof(v)), "bet:13"); /* placeholder */
    assert_string_equal(bet_at(&b, 0, BET_PLACED, v, sizeof(v)), "2000");
    assert_string_equal(bet_at(&b, 0, BET_BALANCE, v, sizeof(v)), "99750"); /* a late replay's */
    /* An older event without its balance: SQL NULL, a -1 length and the array's has-NULL flag
     * (bet_elems checks both), the other elements intact around it. */
    assert_int_equal(add(&b, 1, "type", "bet", "bet_id", "14", "user_id", "7", "round_id", "5",
                         "band", "1", "stake", "50", "ts", "2001", NULL),
                     0);
    assert_null(bet_at(&b, 1, BET_BALANCE, v, sizeof(v)));
    assert_string_equal(bet_at(&b, 1, BET_STAKE, v, sizeof(v)), "50");
    assert_string_equal(bet_at(&b, 0, BET_BALANCE, v, sizeof(v)), "99750");
    closed_columns(&b);
    assert_null(bet_at(&b, 1, BET_BALANCE, v, sizeof(v)));
    assert_int_equal(b.skipped, 0);
    tp_pgw_batch_deinit(&b);
}

/* Admin actions (from any outbox) and an operator's negative grant (a correction). */
static void test_admin_events(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    assert_int_equal(add(&b, 1, "type", "grant", "grant_id", "fix:7", "user_id", "7", "amount",
                         "-250", "balance", "0", "ts", "1000", NULL),
                     0);
    assert_int_equal(add(&b, 1, "type", "admin", "action_id", "grant:fix:7", "action", "grant",
                         "actor", "ops@host", "user_id", "7", "reason", "chargeback \"x\"", "ts",
                         "1000", "detail", "{\"grant_id\":\"fix:7\",\"amount\":-250}", NULL),
                     0);
    assert_int_equal(add(&b, -1, "type", "admin", "action_id", "resume-2-cd", "action", "resume",
                         "actor", "ops@host", "user_id", "", "reason", "", "ts", "2000", "detail",
                         "{\"paused_since\":1}", NULL),
                     0);
    assert_int_equal(ledger_balanced(&b), 2);
    struct tp_doc *d = table(&b, TP_PGW_LEDGER);
    assert_string_equal(str_at(d, 0, "account"), "system");
    assert_string_equal(str_at(d, 0, "amount"), "250");
    assert_string_equal(str_at(d, 1, "amount"), "-250");
    tp_doc_free(d);
    d = table(&b, TP_PGW_ADMIN_ACTIONS);
    assert_string_equal(str_at(d, 0, "id"), "grant:fix:7");
    assert_string_equal(str_at(d, 0, "user_id"), "7");
    assert_string_equal(str_at(d, 0, "reason"), "chargeback \"x\"");
    assert_string_equal(str_at(d, 0, "at"), "1000");
    assert_null(str_at(d, 1, "user_id")); /* the whole game: NULL */
    tp_doc_free(d);
    /* Hostile: bad ids, actions, actors, users, details; nothing is added. */
    const char *bad[][2] = {
        {"action_id", "a b"}, {"action", "Pause"}, {"action", ""},      {"actor", ""},
        {"actor", "a\nb"},    {"user_id", "-7"},   {"detail", "[1]"},   {"detail", "{\"a\":"},
        {"detail", "1"},      {"ts", "x"},         {"reason", "a\x01"}, {"action_id", ""},
    };
    size_t before = b.nrows[TP_PGW_ADMIN_ACTIONS];
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        const char *k[8] = {"action_id", "action", "actor", "user_id", "reason", "ts", "detail"};
        const char *v[8] = {"id-1", "grant", "ops", "7", "", "1", "{}"};
        for (int j = 0; j < 7; j++)
            if (strcmp(k[j], bad[i][0]) == 0)
                v[j] = bad[i][1];
        struct tp_pgw_event ev = {"1-0", 0, 8, (const char *const *)k, (const char *const *)v};
        k[7] = "type";
        v[7] = "admin";
        if (tp_pgw_batch_add(&b, &ev) != TP_EINVAL)
            fail_msg("admin event with %s=\"%s\" accepted", bad[i][0], bad[i][1]);
    }
    assert_int_equal(b.nrows[TP_PGW_ADMIN_ACTIONS], before);
    /* A negative grant of "-0" or with a leading zero is refused too. */
    assert_int_equal(add(&b, 1, "type", "grant", "grant_id", "g:7", "user_id", "7", "amount", "-0",
                         "balance", "0", "ts", "1", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, 1, "type", "grant", "grant_id", "g:7", "user_id", "7", "amount", "-05",
                         "balance", "0", "ts", "1", NULL),
                     TP_EINVAL);
    tp_pgw_batch_deinit(&b);
}

/* bet_batch.lua's `bets` entry: one bets row per line and no ledger row; the idempotency key is
 * the rest of the line (commas included); one bad line refuses the whole entry. */
static void test_bets_event(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    assert_int_equal(add(&b, 1, "type", "bets", "round_id", "5", "ts", "2000", "bets",
                         "13,7,2,250,99750,k-1\n17,9,0,100,900,a,b,c", NULL),
                     0);
    assert_int_equal(b.nrows[TP_PGW_BETS], 2);
    assert_int_equal(b.nrows[TP_PGW_LEDGER], 0);
    char v[160];
    assert_string_equal(bet_at(&b, 0, BET_ID, v, sizeof(v)), "13");
    assert_string_equal(bet_at(&b, 0, BET_USER, v, sizeof(v)), "7");
    assert_string_equal(bet_at(&b, 0, BET_ROUND, v, sizeof(v)), "5");
    assert_string_equal(bet_at(&b, 0, BET_BAND, v, sizeof(v)), "2");
    assert_string_equal(bet_at(&b, 0, BET_STAKE, v, sizeof(v)), "250");
    assert_string_equal(bet_at(&b, 0, BET_KEY, v, sizeof(v)), "k-1");
    assert_string_equal(bet_at(&b, 0, BET_PLACED, v, sizeof(v)), "2000");
    assert_string_equal(bet_at(&b, 0, BET_BALANCE, v, sizeof(v)), "99750"); /* a late replay's */
    assert_string_equal(bet_at(&b, 1, BET_KEY, v, sizeof(v)), "a,b,c");
    assert_string_equal(bet_at(&b, 1, BET_ID, v, sizeof(v)), "17");
    /* hostile entries add nothing, not even their good lines */
    static const char *bad[] = {
        "13,7,2,250,99750,k\n14,7,2,0,1,k2", /* zero stake on line 2 */
        "13,7,2,250,99750",                  /* no key */
        "13,7,2,250,99750,",                 /* empty key */
        "13,07,2,250,1,k",                   /* non-canonical user */
        "13,0,2,250,1,k",                    /* user 0 */
        "13,7,-2,250,1,k",                   /* signed band */
        "13,7,32768,250,1,k",                /* a band beyond smallint (fails the cast) */
        "",                                  /* no bets */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(
            add(&b, 1, "type", "bets", "round_id", "5", "ts", "2000", "bets", bad[i], NULL),
            TP_EINVAL);
    assert_int_equal(
        add(&b, 1, "type", "bets", "round_id", "x", "ts", "2000", "bets", "13,7,2,250,1,k", NULL),
        TP_EINVAL);
    assert_int_equal(
        add(&b, -1, "type", "bets", "round_id", "5", "ts", "2000", "bets", "13,7,2,250,1,k", NULL),
        TP_EINVAL); /* money on the global stream */
    assert_int_equal(b.nrows[TP_PGW_BETS], 2);
    assert_int_equal(b.nrows[TP_PGW_LEDGER], 0);
    tp_pgw_batch_deinit(&b);
}

/* pgw_batch.c writes rows without the JSON writer: the bytes are the writer's, for keys that
 * need escaping (quotes, backslashes), password hashes with control bytes, UTF-8 and invalid
 * bytes, and null values. */
static void test_rows_are_the_writers_bytes(void **state)
{
    (void)state;
    static const char *keys[] = {"k-1", "a\"b", "c\\d", "e,f", "~!#$%&'()*+/;<=>?@[]^_`{|}"};
    static const char *hashes[] = {"$argon2id$\"\\\n", "tab\there\x01\x1f\x7f",
                                   "caf\xc3\xa9 \xe2\x82\xac", "bad \xff\xc3 utf8", ""};
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    struct tp_buf users;
    tp_buf_init(&users);
    tp_buf_puts(&users, "[");
    for (size_t i = 0; i < TP_ARRAY_LEN(keys); i++) {
        char line[160];
        snprintf(line, sizeof(line), "%zu,7,2,250,99750,%s", i + 1, keys[i]);
        assert_int_equal(
            add(&b, 1, "type", "bets", "round_id", "5", "ts", "2000", "bets", line, NULL), 0);
        assert_int_equal(add(&b, -1, "type", "password", "user_id", "7", "pw_hash", hashes[i], "ts",
                             "1000", NULL),
                         0);
        const char *ukv[] = {"id",      "7",  "username", NULL,      "password_hash",
                             hashes[i], "ts", NULL,       "changed", "1000"};
        if (i > 0)
            tp_buf_puts(&users, ",");
        tp_pgw_row_generic(&users, 5, ukv);
    }
    assert_int_equal(tp_buf_size(b.json[TP_PGW_USERS]), tp_buf_size(&users));
    assert_memory_equal(tp_buf_ptr(b.json[TP_PGW_USERS]), tp_buf_ptr(&users), tp_buf_size(&users));
    tp_buf_deinit(&users);
    /* The bets' keys are binary array elements: each its length and its bytes as they are. */
    closed_columns(&b);
    struct tp_buf want;
    tp_buf_init(&want);
    static const unsigned char header[] = {0, 0,  0, 1, 0, 0, 0, 0, 0, 0,
                                           0, 25, 0, 0, 0, 5, 0, 0, 0, 1};
    tp_buf_append(&want, header, sizeof(header));
    for (size_t i = 0; i < TP_ARRAY_LEN(keys); i++) {
        size_t n = strlen(keys[i]);
        tp_buf_append(&want, (const unsigned char[]){0, 0, 0, (unsigned char)n}, 4);
        tp_buf_append(&want, keys[i], n);
    }
    assert_int_equal(tp_buf_size(b.bets[BET_KEY]), tp_buf_size(&want));
    assert_memory_equal(tp_buf_ptr(b.bets[BET_KEY]), tp_buf_ptr(&want), tp_buf_size(&want));
    tp_buf_deinit(&want);
    for (size_t i = 0; i < TP_ARRAY_LEN(keys); i++) {
        char v[160];
        assert_string_equal(bet_at(&b, i, BET_KEY, v, sizeof(v)), keys[i]);
    }
    tp_pgw_batch_deinit(&b);
}

/* A key outside printable ASCII (bet_batch.lua's never are; an older or hostile entry) is stored
 * as the JSON rows stored it: control bytes as they are, invalid UTF-8 as U+FFFD (the array's
 * text input would refuse it, and with it the whole batch). */
static void test_bet_keys_outside_ascii(void **state)
{
    (void)state;
    static const char *keys[] = {"caf\xc3\xa9 \xe2\x82\xac", "bad \xff\xc3 x",
                                 "ctl\x01\x1f\x7f\"\\"};
    static const char *stored[] = {"caf\xc3\xa9 \xe2\x82\xac", "bad \xef\xbf\xbd\xef\xbf\xbd x",
                                   "ctl\x01\x1f\x7f\"\\"};
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    for (size_t i = 0; i < TP_ARRAY_LEN(keys); i++) {
        char line[160], v[160];
        snprintf(line, sizeof(line), "%zu,7,2,250,99750,%s", i + 1, keys[i]);
        assert_int_equal(
            add(&b, 1, "type", "bets", "round_id", "5", "ts", "2000", "bets", line, NULL), 0);
        assert_string_equal(bet_at(&b, i, BET_KEY, v, sizeof(v)), stored[i]);
        /* the JSON row's value, as json_to_recordset read it */
        struct tp_buf json;
        tp_buf_init(&json);
        const char *kv[] = {"k", keys[i]};
        tp_pgw_row_generic(&json, 1, kv);
        struct tp_doc *d =
            tp_doc_parse(TP_FMT_JSON, tp_buf_ptr(&json), tp_buf_size(&json), NULL, 0);
        assert_non_null(d);
        assert_string_equal(tp_val_str(tp_val_get(tp_doc_root(d), "k"), NULL), stored[i]);
        tp_doc_free(d);
        tp_buf_deinit(&json);
    }
    tp_pgw_batch_deinit(&b);
}

/* The rows of table t in both batches are the same bytes. */
static void same_rows(struct tp_pgw_batch *a, struct tp_pgw_batch *b, enum tp_pgw_table t)
{
    assert_int_equal(a->nrows[t], b->nrows[t]);
    assert_int_equal(tp_buf_size(a->json[t]), tp_buf_size(b->json[t]));
    assert_memory_equal(tp_buf_ptr(a->json[t]), tp_buf_ptr(b->json[t]), tp_buf_size(a->json[t]));
}

/* settle_page.lua's `credits` entry gives exactly the rows of one `payout` / `refund` event per
 * line (same payout ids, so Postgres dedups a page written both ways; no ledger rows either way,
 * migration 0010), and one bad line refuses the whole entry. */
static void test_credits_event(void **state)
{
    (void)state;
    struct tp_pgw_batch one, page;
    tp_pgw_batch_init(&one);
    tp_pgw_batch_init(&page);
    assert_int_equal(add(&one, 1, "type", "payout", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "amount", "600", "balance", "100350", "ts", "3000", NULL),
                     0);
    assert_int_equal(add(&one, 1, "type", "payout", "bet_id", "17", "user_id", "9", "round_id", "5",
                         "amount", "1", "balance", "901", "ts", "3000", NULL),
                     0);
    assert_int_equal(add(&one, 1, "type", "refund", "bet_id", "21", "user_id", "7", "round_id", "6",
                         "amount", "100", "balance", "100450", "ts", "3000", NULL),
                     0);
    assert_int_equal(add(&page, 1, "type", "credits", "kind", "payout", "round_id", "5", "ts",
                         "3000", "credits", "13,7,600,100350\n17,9,1,901", NULL),
                     0);
    assert_int_equal(add(&page, 1, "type", "credits", "kind", "refund", "round_id", "6", "ts",
                         "3000", "credits", "21,7,100,100450", NULL),
                     0);
    same_rows(&one, &page, TP_PGW_PAYOUTS);
    assert_int_equal(page.nrows[TP_PGW_PAYOUTS], 3);
    assert_int_equal(one.nrows[TP_PGW_LEDGER], 0);
    assert_int_equal(page.nrows[TP_PGW_LEDGER], 0);
    struct tp_doc *d = table(&page, TP_PGW_PAYOUTS);
    assert_string_equal(str_at(d, 1, "id"), "payout:17");
    assert_string_equal(str_at(d, 1, "kind"), "win");
    assert_string_equal(str_at(d, 2, "id"), "refund:21");
    assert_string_equal(str_at(d, 2, "kind"), "refund");
    tp_doc_free(d);
    /* hostile entries add nothing, not even their good lines */
    static const char *bad[] = {
        "13,7,600,100350\n14,7,0,1",  /* zero amount on line 2 */
        "13,7,600",                   /* no balance */
        "13,7,600,1,2",               /* a field too many */
        "13,07,600,1",                /* non-canonical user */
        "13,0,600,1",                 /* user 0 */
        "13,7,-600,1",                /* negative amount */
        "13,7,600,1\n\n",             /* only separators after the line: fine, below */
        "",                           /* no credits */
        "\n",                         /* no credits either */
        "x,7,600,1",                  /* bet id not a number */
        "13,7,1000000000000000000,1", /* beyond 10^18 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int want = i == 6 ? 0 : TP_EINVAL;
        assert_int_equal(add(&page, 1, "type", "credits", "kind", "payout", "round_id", "5", "ts",
                             "3000", "credits", bad[i], NULL),
                         want);
    }
    assert_int_equal(add(&page, 1, "type", "credits", "kind", "win", "round_id", "5", "ts", "3000",
                         "credits", "13,7,600,1", NULL),
                     TP_EINVAL); /* unknown kind */
    assert_int_equal(add(&page, 1, "type", "credits", "round_id", "5", "ts", "3000", "credits",
                         "13,7,600,1", NULL),
                     TP_EINVAL); /* no kind */
    assert_int_equal(add(&page, 1, "type", "credits", "kind", "payout", "round_id", "5", "credits",
                         "13,7,600,1", NULL),
                     TP_EINVAL); /* no ts */
    assert_int_equal(add(&page, -1, "type", "credits", "kind", "payout", "round_id", "5", "ts",
                         "3000", "credits", "13,7,600,1", NULL),
                     TP_EINVAL);                     /* money on the global stream */
    assert_int_equal(page.nrows[TP_PGW_PAYOUTS], 4); /* the 3 above and the accepted repeat */
    assert_int_equal(page.skipped, 14);
    tp_pgw_batch_deinit(&one);
    tp_pgw_batch_deinit(&page);
}

/* Adds one event of stream id `id` (bucket 1) given as a NULL-terminated list of key, value. */
static int add_id(struct tp_pgw_batch *b, const char *id, ...)
{
    va_list ap;
    va_start(ap, id);
    int rc = add_va(b, id, 1, ap);
    va_end(ap);
    return rc;
}

/* A batch dates its credits by the newest stream id (its millisecond part) of the events that
 * added payouts rows, whatever their order; other events and refused ones leave it as is. */
static void test_credits_id_ms(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    assert_int_equal(b.credits_id_ms, 0);
    assert_int_equal(add_id(&b, "1700000009000-0", "type", "bet", "bet_id", "1", "user_id", "7",
                            "round_id", "5", "band", "1", "stake", "100", "ts", "3000", NULL),
                     0);
    assert_int_equal(b.credits_id_ms, 0); /* a bet is no credit */
    assert_int_equal(add_id(&b, "1700000005000-3", "type", "credits", "kind", "payout", "round_id",
                            "5", "ts", "3000", "credits", "13,7,600,1", NULL),
                     0);
    assert_int_equal(b.credits_id_ms, 1700000005000);
    assert_int_equal(add_id(&b, "1700000007000-0", "type", "refund", "bet_id", "21", "user_id", "7",
                            "round_id", "6", "amount", "100", "ts", "3000", NULL),
                     0);
    assert_int_equal(b.credits_id_ms, 1700000007000);
    /* An older credit (another stream) does not move it back. */
    assert_int_equal(add_id(&b, "1700000006000-0", "type", "credits", "kind", "refund", "round_id",
                            "6", "ts", "3000", "credits", "22,7,100,1", NULL),
                     0);
    assert_int_equal(b.credits_id_ms, 1700000007000);
    /* Refused credits, and newer events without credits, leave it. */
    assert_int_equal(add_id(&b, "1700000008000-0", "type", "credits", "kind", "payout", "round_id",
                            "5", "ts", "3000", "credits", "13,7,-600,1", NULL),
                     TP_EINVAL);
    assert_int_equal(
        add_id(&b, "1700000008500-0", "type", "house", "round_id", "5", "amount", "10", NULL), 0);
    assert_int_equal(b.credits_id_ms, 1700000007000);
    tp_pgw_batch_deinit(&b);
}

static void test_round_and_user_events(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    /* Without defaults a round_opened lacking edges/rake cannot be written. */
    const char *h = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "5", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", h, NULL),
                     TP_EINVAL);
    b.default_edges = "-10,-3,3,10";
    b.default_rake_bps = "300";
    assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "5", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", h, NULL),
                     0);
    struct tp_doc *d = table(&b, TP_PGW_ROUNDS);
    assert_string_equal(str_at(d, 0, "band_edges_bps"), "{-10,-3,3,10}");
    tp_doc_free(d);
    /* Receipt: rake and breakage go round → house; zero amounts write no ledger rows. */
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "5", "total", "1000",
                         "winning_stake", "400", "rake", "30", "breakage", "0", "payouts", "970",
                         "refunds", "0", NULL),
                     0);
    assert_int_equal(add(&b, -1, "type", "round_cancelled", "round_id", "6", "total", "500",
                         "winning_stake", "0", "rake", "0", "breakage", "0", "payouts", "0",
                         "refunds", "500", NULL),
                     0);
    assert_int_equal(b.nrows[TP_PGW_ROUND_RESULTS], 2);
    assert_int_equal(ledger_balanced(&b), 2);
    d = table(&b, TP_PGW_ROUND_RESULTS);
    assert_string_equal(str_at(d, 0, "state"), "settled");
    assert_string_equal(str_at(d, 1, "state"), "cancelled");
    tp_doc_free(d);
    /* A bucket's house share (even negative) is Redis bookkeeping only. */
    assert_int_equal(add(&b, 0, "type", "house", "round_id", "5", "amount", "-20", "ts", "1", NULL),
                     0);
    assert_int_equal(ledger_balanced(&b), 2);
    /* A password hash with JSON metacharacters stays one valid string. */
    assert_int_equal(add(&b, -1, "type", "user", "user_id", "7", "username", "alice", "pw_hash",
                         "$argon2id$\"\\\n", "created_at", "1000", NULL),
                     0);
    d = table(&b, TP_PGW_USERS);
    assert_string_equal(str_at(d, 0, "password_hash"), "$argon2id$\"\\\n");
    tp_doc_free(d);
    tp_pgw_batch_deinit(&b);
}

/* What a round needs to be served from Postgres once it leaves Redis: the price walk's
 * parameters, the pools and refund_all, and a seed revealed after the receipt. */
static void test_round_history_fields(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    const char *h = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "5", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", h, "edges", "-3,3",
                         "rake_bps", "300", "vol_ppb", "1234", "tick_ms", "100", "betting_ms",
                         "30000", "min_stake", "100", "max_stake", "100000", NULL),
                     0);
    struct tp_doc *d = table(&b, TP_PGW_ROUNDS);
    assert_string_equal(str_at(d, 0, "vol_ppb"), "1234");
    assert_string_equal(str_at(d, 0, "max_stake"), "100000");
    assert_string_equal(str_at(d, 0, "betting_ms"), "30000");
    tp_doc_free(d);
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "5", "total", "1000",
                         "winning_stake", "400", "rake", "30", "breakage", "0", "payouts", "970",
                         "refunds", "0", "refund_all", "0", "pools", "400,0,600", NULL),
                     0);
    d = table(&b, TP_PGW_ROUND_RESULTS);
    assert_string_equal(str_at(d, 0, "pools"), "{400,0,600}");
    assert_string_equal(str_at(d, 0, "refund_all"), "0");
    tp_doc_free(d);
    assert_int_equal(add(&b, -1, "type", "round_seed", "round_id", "5", "seed", h, NULL), 0);
    assert_int_equal(b.nrows[TP_PGW_ROUND_SEEDS], 1);
    /* Hostile: a negative pool, a refund_all that is no flag, a seed with SQL in it, a
     * non-canonical vol_ppb. */
    size_t before = b.skipped;
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "6", "total", "1",
                         "winning_stake", "0", "rake", "0", "breakage", "0", "payouts", "0",
                         "refunds", "1", "pools", "1,-1", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "6", "total", "1",
                         "winning_stake", "0", "rake", "0", "breakage", "0", "payouts", "0",
                         "refunds", "1", "refund_all", "yes", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_seed", "round_id", "6", "seed", "x'; DROP", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "7", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", h, "edges", "-3,3",
                         "rake_bps", "300", "vol_ppb", "012", NULL),
                     TP_EINVAL);
    assert_int_equal(b.skipped, before + 4);
    assert_int_equal(b.nrows[TP_PGW_ROUND_RESULTS], 1);
    assert_int_equal(b.nrows[TP_PGW_ROUND_SEEDS], 1);
    tp_pgw_batch_deinit(&b);
}

static void test_hostile_events_refused(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    b.default_edges = "1,2";
    b.default_rake_bps = "300";
    /* non-canonical or signed integers, wrong stream, missing fields, unknown types */
    assert_int_equal(add(&b, 0, "type", "bet", "bet_id", "013", "user_id", "7", "round_id", "5",
                         "band", "2", "stake", "250", "balance", "1", "ts", "2", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, 0, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "band", "2", "stake", "-250", "balance", "1", "ts", "2", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, 0, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "band", "2", "stake", "0", "balance", "1", "ts", "2", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, 0, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "1e3",
                         "band", "2", "stake", "250", "balance", "1", "ts", "2", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "grant", "grant_id", "g", "user_id", "7", "amount", "5",
                         "balance", "5", "ts", "1", NULL),
                     TP_EINVAL); /* money on the global stream */
    assert_int_equal(add(&b, 0, "type", "grant", "grant_id", "g'; DROP TABLE x", "user_id", "7",
                         "amount", "5", "balance", "5", "ts", "1", NULL),
                     TP_EINVAL);
    assert_int_equal(
        add(&b, 0, "type", "grant", "user_id", "7", "amount", "5", "balance", "5", "ts", "1", NULL),
        TP_EINVAL);
    assert_int_equal(add(&b, 0, "type", "house", "round_id", "5", "amount", "-0", "ts", "1", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "user", "user_id", "7", "username", "bad name", "pw_hash",
                         "x", "created_at", "1", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "5", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", "ab", "edges", "1);--",
                         NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "5", "total", "1", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "password", "user_id", "7", "pw_hash", "x", NULL),
                     TP_EINVAL); /* no ts */
    assert_int_equal(add(&b, 0, "type", "mystery", NULL), TP_EINVAL);
    /* values beyond their column's type: Postgres's cast would fail the whole batch */
    assert_int_equal(add(&b, 0, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "band", "32768", "stake", "250", "balance", "1", "ts", "2", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "5", "total", "1",
                         "winning_stake", "0", "rake", "0", "breakage", "0", "payouts", "0",
                         "refunds", "0", "winning_band", "40000", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "5", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", "ab", "rake_bps",
                         "2147483648", NULL),
                     TP_EINVAL);
    assert_int_equal(add(&b, 0, NULL), TP_EINVAL);
    assert_int_equal(b.skipped, 17);
    for (int t = 0; t < TP_PGW_NTABLES; t++)
        assert_int_equal(b.nrows[t], 0);
    /* the largest values that fit are rows */
    assert_int_equal(add(&b, 0, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "band", "32767", "stake", "250", "balance", "1", "ts", "2", NULL),
                     0);
    assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "5", "total", "1",
                         "winning_stake", "0", "rake", "0", "breakage", "0", "payouts", "0",
                         "refunds", "0", "winning_band", "32767", NULL),
                     0);
    assert_int_equal(b.nrows[TP_PGW_BETS], 1);
    assert_int_equal(b.nrows[TP_PGW_ROUND_RESULTS], 1);
    tp_pgw_batch_deinit(&b);
}

/* --- Batch → statements --- */

/* A batch with a row in every table: a user, a round opened and settled, a grant, a bet and
 * its payout. */
static void full_batch(struct tp_pgw_batch *b)
{
    const char *h = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    tp_pgw_batch_init(b);
    b->default_edges = "-10,-3,3,10";
    b->default_rake_bps = "300";
    assert_int_equal(add(b, -1, "type", "user", "user_id", "7", "username", "alice", "pw_hash",
                         "$argon2id$x", "created_at", "1000", NULL),
                     0);
    assert_int_equal(add(b, -1, "type", "password", "user_id", "7", "pw_hash", "$argon2id$y", "ts",
                         "1500", NULL),
                     0);
    assert_int_equal(add(b, -1, "type", "round_opened", "round_id", "5", "opens_at", "1",
                         "locks_at", "2", "closes_at", "3", "seed_hash", h, NULL),
                     0);
    assert_int_equal(add(b, -1, "type", "round_settled", "round_id", "5", "total", "1000",
                         "winning_stake", "400", "rake", "30", "breakage", "0", "payouts", "970",
                         "refunds", "0", "lock_price", "100", "winning_band", "2", NULL),
                     0);
    assert_int_equal(add(b, 1, "type", "grant", "grant_id", "signup:7", "user_id", "7", "amount",
                         "100000", "balance", "100000", "ts", "1000", NULL),
                     0);
    assert_int_equal(add(b, 1, "type", "bet", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "band", "2", "stake", "250", "balance", "99750", "ts", "2000", NULL),
                     0);
    assert_int_equal(add(b, 1, "type", "payout", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "amount", "600", "balance", "100350", "ts", "3000", NULL),
                     0);
    assert_int_equal(add(b, -1, "type", "admin", "action_id", "pause-1-ab", "action", "pause",
                         "actor", "ops@h", "user_id", "", "reason", "", "ts", "4000", "detail",
                         "{}", NULL),
                     0);
}

/* Position of the first statement starting with `prefix`, or -1. */
static int find_stmt(const struct tp_pgw_stmt *s, size_t n, const char *prefix)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(s[i].sql, prefix, strlen(prefix)) == 0)
            return (int)i;
    return -1;
}

/* A round's result (and a late seed) first checks that the round's row is there: a result
 * committed before its round's INSERT (two writers, a backlog) would be lost. The check comes
 * after the batch's own rounds INSERT and before the UPDATE; without wait_for_rounds (the
 * writer gave up waiting) there is none. */
static void test_sql_round_result_waits_for_round(void **state)
{
    (void)state;
    struct tp_pgw_stmt s[TP_PGW_MAX_STMTS];
    for (int wait = 1; wait >= 0; wait--) {
        struct tp_pgw_batch b;
        tp_pgw_batch_init(&b);
        assert_true(b.wait_for_rounds);
        b.wait_for_rounds = wait;
        b.default_edges = "-10,10";
        b.default_rake_bps = "300";
        assert_int_equal(add(&b, -1, "type", "round_opened", "round_id", "6", "opens_at", "1",
                             "locks_at", "2", "closes_at", "3", "seed_hash", "ab", NULL),
                         0);
        assert_int_equal(add(&b, -1, "type", "round_settled", "round_id", "5", "total", "0",
                             "winning_stake", "0", "rake", "0", "breakage", "0", "payouts", "0",
                             "refunds", "0", NULL),
                         0);
        assert_int_equal(add(&b, -1, "type", "round_seed", "round_id", "5", "seed", "cd", NULL), 0);
        size_t n = tp_pgw_batch_sql(&b, s);
        int ins = find_stmt(s, n, "INSERT INTO rounds");
        int upd = find_stmt(s, n, "UPDATE rounds r SET state");
        int seed = find_stmt(s, n, "UPDATE rounds r SET seed");
        int checks = 0;
        for (size_t i = 0; i < n; i++) {
            if (!s[i].must_be_empty)
                continue;
            checks++;
            assert_non_null(strstr(s[i].sql, "NOT EXISTS (SELECT 1 FROM rounds"));
            assert_true((int)i > ins);
            assert_true((int)i + 1 == upd || (int)i + 1 == seed);
        }
        assert_int_equal(checks, wait ? 2 : 0);
        tp_pgw_batch_deinit(&b);
    }
}

static void test_sql_empty_batch_is_a_locked_transaction(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    struct tp_pgw_stmt s[TP_PGW_MAX_STMTS];
    assert_int_equal(tp_pgw_batch_sql(&b, s), 3);
    assert_string_equal(s[0].sql, "BEGIN");
    assert_non_null(strstr(s[1].sql, "pg_advisory_xact_lock("));
    assert_string_equal(s[2].sql, "COMMIT");
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i].nparams, 0);
    tp_pgw_batch_deinit(&b);
}

static void test_sql_order(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    full_batch(&b);
    struct tp_pgw_stmt s[TP_PGW_MAX_STMTS];
    size_t n = tp_pgw_batch_sql(&b, s);
    /* Every table has rows: all of its statements (and the round check before the results),
     * inside BEGIN, the lock and COMMIT. */
    assert_int_equal(n, 15);
    assert_string_equal(s[0].sql, "BEGIN");
    assert_non_null(strstr(s[1].sql, "pg_advisory_xact_lock("));
    assert_string_equal(s[n - 1].sql, "COMMIT");
    int users = find_stmt(s, n, "INSERT INTO users"),
        rounds = find_stmt(s, n, "INSERT INTO rounds");
    int results = find_stmt(s, n, "UPDATE rounds"), lost = find_stmt(s, n, "UPDATE bets");
    int bets = find_stmt(s, n, "INSERT INTO bets"),
        payouts = find_stmt(s, n, "WITH x AS MATERIALIZED (SELECT id, bet_id");
    int grants = find_stmt(s, n, "INSERT INTO grants"),
        ledger = find_stmt(s, n, "INSERT INTO ledger");
    assert_true(users > 1 && grants > 1 && ledger > 1);
    /* A password change updates the user its sign-up (maybe in the same batch) inserted. */
    assert_int_equal(find_stmt(s, n, "UPDATE users"), users + 1);
    /* A round's result updates the row its opening inserted. */
    assert_true(rounds > 1 && results > rounds);
    /* The settled round marks its pending bets lost (right after the result), then a bet
     * written late takes its final status (right after its INSERT), then payouts override
     * either with won / refunded. */
    assert_int_equal(lost, results + 1);
    assert_non_null(strstr(s[lost].sql, "'lost'"));
    assert_true(bets > lost && payouts > bets);
    assert_non_null(strstr(s[bets + 1].sql, "UPDATE bets"));
    /* The INSERT takes the bets' columns, the late-status UPDATE their ids and rounds. */
    assert_int_equal(s[bets].nparams, TP_PGW_BET_COLS);
    assert_int_equal(s[bets + 1].nparams, 2);
    assert_ptr_equal(s[bets + 1].params[0], s[bets].params[BET_ID]);
    assert_ptr_equal(s[bets + 1].params[1], s[bets].params[BET_ROUND]);
    /* A credit is one statement: its payouts row and its bet's status from one parse of the
     * payouts array. */
    assert_int_equal(s[payouts].nparams, 1);
    assert_non_null(strstr(s[payouts].sql, "INSERT INTO payouts"));
    assert_non_null(strstr(s[payouts].sql, ") UPDATE bets b SET status"));
    const char *parse = strstr(s[payouts].sql, "json_to_recordset");
    assert_non_null(parse);
    assert_null(strstr(parse + 1, "json_to_recordset"));
    /* The first try's bets and payouts INSERTs fail on a row already there (no ON CONFLICT, no
     * DISTINCT ON); every other INSERT ignores such rows. */
    int strict[] = {bets, payouts};
    for (int k = 0; k < 2; k++) {
        assert_null(strstr(s[strict[k]].sql, "ON CONFLICT"));
        assert_null(strstr(s[strict[k]].sql, "DISTINCT"));
    }
    for (size_t i = 0; i < n; i++)
        if (strncmp(s[i].sql, "INSERT", 6) == 0 && i != (size_t)bets)
            assert_non_null(strstr(s[i].sql, "ON CONFLICT DO NOTHING"));
    /* The redo (skip_existing): the same statements and parameters, but the bets and payouts
     * INSERTs skip rows already there, so replays are no-ops. */
    b.skip_existing = true;
    struct tp_pgw_stmt r[TP_PGW_MAX_STMTS];
    assert_int_equal(tp_pgw_batch_sql(&b, r), n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r[i].nparams, s[i].nparams);
        for (int k = 0; k < s[i].nparams; k++)
            assert_ptr_equal(r[i].params[k], s[i].params[k]);
        if (i == (size_t)bets)
            assert_non_null(strstr(r[i].sql, "SELECT DISTINCT ON (id) id, round_id"));
        else if (i == (size_t)payouts)
            assert_non_null(strstr(r[i].sql, "SELECT DISTINCT ON (id) id, bet_id"));
        else
            assert_ptr_equal(r[i].sql, s[i].sql);
        if (strncmp(r[i].sql, "INSERT", 6) == 0 || i == (size_t)payouts)
            assert_non_null(strstr(r[i].sql, "ON CONFLICT DO NOTHING"));
    }
    tp_pgw_batch_deinit(&b);
}

/* Asserts that `param` is a JSON array of `rows` objects, each having every column that `sql`
 * reads from it in json_to_recordset(...) AS x(col type, ...): a column without a key would
 * silently be NULL in Postgres. */
static void assert_columns_are_keys(const char *sql, const char *param, size_t rows)
{
    char err[128];
    struct tp_doc *d = tp_doc_parse(TP_FMT_JSON, param, strlen(param), err, sizeof(err));
    if (d == NULL)
        fail_msg("invalid JSON parameter %s: %s", param, err);
    assert_int_equal(tp_val_type(tp_doc_root(d)), TP_VAL_ARRAY);
    assert_int_equal(tp_val_len(tp_doc_root(d)), rows);
    const char *p = strstr(sql, "AS x(");
    assert_non_null(p);
    p += 5;
    size_t ncols = 0;
    while (*p != ')') {
        char col[64];
        size_t len = strcspn(p, " ");
        assert_true(len > 0 && len < sizeof(col));
        memcpy(col, p, len);
        col[len] = '\0';
        for (size_t r = 0; r < rows; r++)
            if (tp_val_get(tp_val_at(tp_doc_root(d), r), col) == NULL)
                fail_msg("column %s is no key of the rows of: %s", col, sql);
        ncols++;
        p += strcspn(p, ",)");
        if (*p == ',')
            p += 2;
    }
    assert_true(ncols > 0);
    tp_doc_free(d);
}

/* Asserts that a statement reading the bets' column arrays takes one per `$k::type[]` of its
 * unnest, in order, binary, each closed with `rows` elements (a missing element would shift the
 * columns; a missing parameter fails the statement). */
static void assert_columns_are_arrays(struct tp_pgw_batch *b, const struct tp_pgw_stmt *s,
                                      size_t rows)
{
    const char *p = strstr(s->sql, "unnest(");
    assert_non_null(p);
    int k = 0;
    for (char want[16]; snprintf(want, sizeof(want), "$%d::", k + 1), strstr(p, want) != NULL;)
        k++;
    assert_int_equal(k, s->nparams);
    assert_true(s->binary);
    for (int c = 0; c < k; c++) {
        assert_ptr_equal(s->params[c], tp_buf_ptr(b->bets[c]));
        assert_int_equal(s->lengths[c], tp_buf_size(b->bets[c]));
        assert_int_equal(be32((const unsigned char *)s->params[c] + 12), rows);
        char v[160];
        bool null;
        assert_int_equal(bet_elems(b, c, 0, v, sizeof(v), &null), rows);
    }
}

/* Rows of the table whose array `param` is (asserts it is one). */
static size_t rows_of(struct tp_pgw_batch *b, const char *param)
{
    for (int t = 0; t < TP_PGW_NTABLES; t++)
        if (tp_buf_ptr(b->json[t]) == param)
            return b->nrows[t];
    fail_msg("a parameter that is no table's array");
    return 0;
}

static void test_sql_columns_are_row_keys(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    full_batch(&b);
    struct tp_pgw_stmt s[TP_PGW_MAX_STMTS];
    size_t n = tp_pgw_batch_sql(&b, s);
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].nparams == 0)
            continue;
        if (strstr(s[i].sql, "unnest(") != NULL)
            assert_columns_are_arrays(&b, &s[i], b.nrows[TP_PGW_BETS]);
        else
            assert_columns_are_keys(s[i].sql, s[i].params[0], rows_of(&b, s[i].params[0]));
        checked++;
    }
    assert_int_equal(checked, 12); /* the round check's `id` too */
    tp_pgw_batch_deinit(&b);
}

static void test_sql_repeat_is_stable(void **state)
{
    (void)state;
    struct tp_pgw_batch b;
    full_batch(&b);
    struct tp_pgw_stmt s1[TP_PGW_MAX_STMTS], s2[TP_PGW_MAX_STMTS];
    size_t n1 = tp_pgw_batch_sql(&b, s1);
    char *users = strdup(s1[2].params[0]);
    size_t n2 = tp_pgw_batch_sql(&b, s2);
    assert_int_equal(n1, n2);
    for (size_t i = 0; i < n1; i++) {
        assert_string_equal(s1[i].sql, s2[i].sql);
        assert_int_equal(s1[i].nparams, s2[i].nparams);
        if (s2[i].nparams > 0 && strstr(s2[i].sql, "unnest(") != NULL)
            assert_columns_are_arrays(&b, &s2[i], b.nrows[TP_PGW_BETS]);
        else if (s2[i].nparams > 0)
            assert_columns_are_keys(s2[i].sql, s2[i].params[0], rows_of(&b, s2[i].params[0]));
    }
    assert_string_equal(s2[2].params[0], users); /* closed once, not twice */
    free(users);
    tp_pgw_batch_deinit(&b);
}

/* Batches of bets, grants and admin actions share the writers' lock (they run side by side);
 * anything a later UPDATE of another batch depends on (rounds, results, payouts, users) takes
 * it exclusively, and so does an empty batch. */
static void test_sql_lock_mode(void **state)
{
    (void)state;
    struct tp_pgw_stmt s[TP_PGW_MAX_STMTS];
    struct tp_pgw_batch b;
    tp_pgw_batch_init(&b);
    assert_int_equal(add(&b, 1, "type", "bets", "round_id", "5", "ts", "2000", "bets",
                         "13,7,2,250,99750,k-1\n17,9,0,100,900,k-2", NULL),
                     0);
    assert_int_equal(add(&b, 1, "type", "grant", "grant_id", "signup:7", "user_id", "7", "amount",
                         "100000", "balance", "100000", "ts", "1000", NULL),
                     0);
    assert_int_equal(tp_pgw_batch_rows(&b), 5); /* 2 bets, 1 grant and its 2 ledger rows */
    tp_pgw_batch_sql(&b, s);
    assert_string_equal(s[1].sql, "SELECT pg_advisory_xact_lock_shared(1953523575)");
    /* A payout in the same batch: its UPDATE must see every bet committed before it. */
    assert_int_equal(add(&b, 1, "type", "payout", "bet_id", "13", "user_id", "7", "round_id", "5",
                         "amount", "600", "balance", "100350", "ts", "3000", NULL),
                     0);
    tp_pgw_batch_sql(&b, s);
    assert_string_equal(s[1].sql, "SELECT pg_advisory_xact_lock(1953523575)");
    tp_pgw_batch_deinit(&b);

    static const char *const exclusive[][16] = {
        {"type", "round_opened", "round_id", "5", "opens_at", "1", "locks_at", "2", "closes_at",
         "3", "seed_hash", "ab", NULL},
        {"type", "round_seed", "round_id", "5", "seed", "cd", NULL},
        {"type", "password", "user_id", "7", "pw_hash", "h", "ts", "9", NULL},
    };
    for (size_t i = 0; i < sizeof(exclusive) / sizeof(exclusive[0]); i++) {
        tp_pgw_batch_init(&b);
        b.default_edges = "-100,100";
        b.default_rake_bps = "300";
        const char *keys[8], *vals[8];
        size_t n = 0;
        for (; exclusive[i][2 * n] != NULL; n++) {
            keys[n] = exclusive[i][2 * n];
            vals[n] = exclusive[i][2 * n + 1];
        }
        struct tp_pgw_event ev = {"1-0", -1, n, keys, vals};
        assert_int_equal(tp_pgw_batch_add(&b, &ev), 0);
        tp_pgw_batch_sql(&b, s);
        assert_string_equal(s[1].sql, "SELECT pg_advisory_xact_lock(1953523575)");
        tp_pgw_batch_deinit(&b);
    }
}

/* A read asks for as many entries as the last batch's rows per entry say fit the target. */
static void test_read_count(void **state)
{
    (void)state;
    /* 10 entries of 75 bets (225 rows each) from one stream: 8192 / 225 = 36. */
    assert_int_equal(tp_pgw_read_count(16, 10, 2250, 1, 8192), 36);
    /* The same over two streams: half per stream. */
    assert_int_equal(tp_pgw_read_count(16, 10, 2250, 2, 8192), 18);
    /* One-row entries: capped at TP_PGW_BATCH. */
    assert_int_equal(tp_pgw_read_count(16, 200, 200, 1, 8192), TP_PGW_BATCH);
    /* Entries mapping to no row (skipped, house shares) count as one row each. */
    assert_int_equal(tp_pgw_read_count(16, 100, 0, 1, 300), 300);
    /* Huge entries still read one. */
    assert_int_equal(tp_pgw_read_count(16, 1, 100000, 3, 8192), 1);
    /* An empty read keeps the current count (clamped). */
    assert_int_equal(tp_pgw_read_count(16, 0, 0, 0, 8192), 16);
    assert_int_equal(tp_pgw_read_count(0, 0, 0, 1, 8192), 1);
    assert_int_equal(tp_pgw_read_count(100000, 0, 0, 1, 8192), TP_PGW_BATCH);
}

/* The settlement yield: once per streak of credits, when it passes TP_PGW_YIELD_ROWS; batches
 * without credits change nothing; the hold's end continues the streak; 0 never holds. */
static void test_settle_yield(void **state)
{
    (void)state;
    struct tp_pgw_yield y = {0};
    /* A small settlement: one page of credits, then nothing for longer than a streak. */
    assert_int_equal(tp_pgw_settle_yield(&y, 1000, 300, 0, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&y, 1000 + TP_PGW_YIELD_STREAK_MS, 300, 0, 1400), 0);
    assert_int_equal(y.rows, 300); /* a new streak: the first page's rows are not added */
    /* A large one: its batches add up, bets-only batches between them change nothing. */
    assert_int_equal(tp_pgw_settle_yield(&y, 10000, 260, 0, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&y, 10005, 0, 0, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&y, 10030, TP_PGW_YIELD_ROWS - 261, 0, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&y, 10060, 1, 0, 1400), 1400); /* past the line: held */
    assert_true(y.held);
    /* After the hold the backlog goes back to back, even the first batch after a long hold. */
    assert_int_equal(
        tp_pgw_settle_yield(&y, 10060 + 1400 + TP_PGW_YIELD_STREAK_MS - 1, 8000, 0, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&y, 13500, 8000, 0, 1400), 0);
    /* The next settlement, a streak later, is held again. */
    assert_int_equal(tp_pgw_settle_yield(&y, 13500 + TP_PGW_YIELD_STREAK_MS, 5000, 0, 1400), 1400);
    /* postgres.settle_yield 0: never held, the streak still counted. */
    struct tp_pgw_yield z = {0};
    assert_int_equal(tp_pgw_settle_yield(&z, 1000, 100000, 0, 0), 0);
    assert_false(z.held);
    assert_int_equal(z.rows, 100000);
    /* An old backlog (after an outage or a restart): credits paid settle_yield ago or earlier
     * are no settlement running now, never held, and their rows do not count; a fresh
     * settlement right after it (the same streak) is held for its own credits only: a small one
     * not at all, a large one once past the line. */
    struct tp_pgw_yield o = {0};
    assert_int_equal(tp_pgw_settle_yield(&o, 1000, 5000, 1400, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&o, 1100, 5000, 600000, 1400), 0);
    assert_false(o.held);
    assert_int_equal(o.rows, 0);
    assert_int_equal(tp_pgw_settle_yield(&o, 1200, 10, 1399, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&o, 1300, TP_PGW_YIELD_ROWS - 11, 0, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&o, 1350, 1, 0, 1400), 1400);
    /* Old credits continue a held streak: a settlement's catch-up after its hold (its credits
     * now older than the hold) is not held again, nor are the settlement's fresh ones after it
     * (the streak never lapsed). */
    assert_int_equal(tp_pgw_settle_yield(&o, 1350 + 1400 + 1500, 8000, 3000, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&o, 1350 + 1400 + 3000, 8000, 2000, 1400), 0);
    assert_int_equal(tp_pgw_settle_yield(&o, 1350 + 1400 + 4500, 2000, 0, 1400), 0);
    assert_true(o.held);
    /* A Redis clock ahead of the writer's (a negative age) is as recent. */
    struct tp_pgw_yield n = {0};
    assert_int_equal(tp_pgw_settle_yield(&n, 1000, 5000, -50, 1400), 1400);
}

/* The trim threshold never passes the oldest pending entry nor an undelivered one. */
static void test_trim_minid(void **state)
{
    (void)state;
    char out[48];
    /* Nothing pending: every delivered entry is committed, LD itself included. */
    assert_int_equal(tp_pgw_trim_minid("1700000000000-5", 0, NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "1700000000000-6");
    /* Pending entries: the smallest one stays. */
    assert_int_equal(tp_pgw_trim_minid("1700000000009-0", 3, "1700000000001-7", out, sizeof(out)),
                     0);
    assert_string_equal(out, "1700000000001-7");
    /* A fresh group (LD 0-0) trims nothing. */
    assert_int_equal(tp_pgw_trim_minid("0-0", 0, NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "0-1");
    /* The sequence wraps into the next millisecond. */
    assert_int_equal(tp_pgw_trim_minid("5-18446744073709551615", 0, NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "6-0");
    /* Unreadable ids trim nothing. */
    assert_int_equal(tp_pgw_trim_minid(NULL, 0, NULL, out, sizeof(out)), TP_EPROTO);
    assert_int_equal(tp_pgw_trim_minid("5", 0, NULL, out, sizeof(out)), TP_EPROTO);
    assert_int_equal(tp_pgw_trim_minid("5-1", 2, NULL, out, sizeof(out)), TP_EPROTO);
    assert_int_equal(tp_pgw_trim_minid("5-1", 2, "x-1", out, sizeof(out)), TP_EPROTO);
    assert_int_equal(tp_pgw_trim_minid("5-1x", 0, NULL, out, sizeof(out)), TP_EPROTO);
    assert_int_equal(tp_pgw_trim_minid("5-1", 0, NULL, out, 3), TP_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_events),
        cmocka_unit_test(test_money_events),
        cmocka_unit_test(test_bets_event),
        cmocka_unit_test(test_rows_are_the_writers_bytes),
        cmocka_unit_test(test_bet_keys_outside_ascii),
        cmocka_unit_test(test_credits_event),
        cmocka_unit_test(test_credits_id_ms),
        cmocka_unit_test(test_round_and_user_events),
        cmocka_unit_test(test_round_history_fields),
        cmocka_unit_test(test_hostile_events_refused),
        cmocka_unit_test(test_sql_empty_batch_is_a_locked_transaction),
        cmocka_unit_test(test_sql_order),
        cmocka_unit_test(test_sql_columns_are_row_keys),
        cmocka_unit_test(test_sql_repeat_is_stable),
        cmocka_unit_test(test_sql_lock_mode),
        cmocka_unit_test(test_sql_round_result_waits_for_round),
        cmocka_unit_test(test_read_count),
        cmocka_unit_test(test_settle_yield),
        cmocka_unit_test(test_trim_minid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
