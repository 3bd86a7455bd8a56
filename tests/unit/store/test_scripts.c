/* Unit tests for the Lua script stubs (src/store/scripts.c), with no Redis: each script's
 * argument builder is called directly (the .c is included) and its KEYS and ARGV are compared
 * with the order written in the script's header comment. The KEYS are also matched against the
 * `KEYS[i] <pattern>` lines of scripts/lua/<script>.lua itself, so a header and its C builder
 * cannot drift apart silently. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../../src/store/scripts.c"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>

/* --- Helpers --- */

/* In EXPECT: an argument compared by expect_bytes (binary, may hold NULs). */
#define BYTES "\x01(bytes)"

static void expect(const struct tp_script_call *a, const char *script, int nkeys,
                   const char *const *want, int n)
{
    assert_string_equal(a->script, script);
    assert_int_equal(a->nkeys, nkeys);
    for (int i = 0; i < n && i < a->argc; i++) {
        if (strcmp(want[i], BYTES) == 0)
            continue;
        char got[512];
        snprintf(got, sizeof(got), "%.*s", (int)a->len[i], a->argv[i]);
        if (strcmp(got, want[i]) != 0)
            fail_msg("%s argv[%d]: got \"%s\", want \"%s\"", script, i, got, want[i]);
    }
    assert_int_equal(a->argc, n);
}

/* Argument `i` is the `len` bytes `want`. */
static void expect_bytes(const struct tp_script_call *a, int i, const char *want, size_t len)
{
    assert_true(i < a->argc);
    assert_int_equal(a->len[i], len);
    assert_memory_equal(a->argv[i], want, len);
}

#define EXPECT(a, script, nkeys, ...)                                                              \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        expect(a, script, nkeys, want_, (int)(sizeof(want_) / sizeof(want_[0])));                  \
    } while (0)

/* Turns a header pattern such as tp:{bN}:round:<id>:state into an anchored POSIX regex. */
static void pattern_regex(const char *pat, char *out, size_t cap)
{
    size_t o = 0;
    out[o++] = '^';
    for (const char *p = pat; *p && o + 16 < cap; p++) {
        if (strncmp(p, "{bN}", 4) == 0) {
            o += (size_t)snprintf(out + o, cap - o, "\\{b[0-9]+\\}");
            p += 3;
        } else if (*p == '<') {
            o += (size_t)snprintf(out + o, cap - o, "[^:]+");
            while (*p && *p != '>')
                p++;
        } else {
            if (strchr(".[]{}()*+?^$|\\", *p))
                out[o++] = '\\';
            out[o++] = *p;
        }
    }
    out[o++] = '$';
    out[o] = '\0';
}

/* Matches every `KEYS[i] pattern` of the script's header comment against key i of `a`, and
 * checks that the header names as many keys as the builder pushes (`fixed_keys`: the keys the
 * header numbers, when the rest are a variable run described in words). */
static void check_header(const struct tp_script_call *a, int fixed_keys)
{
    const char *src = getenv("TP_SRC");
    char path[1024];
    snprintf(path, sizeof(path), "%s/scripts/lua/%s.lua", src ? src : ".", a->script);
    FILE *f = fopen(path, "r");
    if (f == NULL) { /* the one-bet reference script lives with the bench */
        snprintf(path, sizeof(path), "%s/bench/lua/%s.lua", src ? src : ".", a->script);
        f = fopen(path, "r");
    }
    if (f == NULL)
        fail_msg("cannot open %s (set TP_SRC)", path);
    char text[16384];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *end = strstr(text, "]]"); /* the header comment only */
    if (end)
        *end = '\0';
    regex_t line;
    assert_int_equal(regcomp(&line, "KEYS\\[([0-9]+)\\][ \t]+(tp:[^ \t\n]+)", REG_EXTENDED), 0);
    int seen = 0;
    regmatch_t m[3];
    for (const char *p = text; regexec(&line, p, 3, m, 0) == 0; p += m[0].rm_eo) {
        int i = atoi(p + m[1].rm_so) - 1;
        char pat[128], re[512];
        snprintf(pat, sizeof(pat), "%.*s", (int)(m[2].rm_eo - m[2].rm_so), p + m[2].rm_so);
        pattern_regex(pat, re, sizeof(re));
        regex_t key;
        assert_int_equal(regcomp(&key, re, REG_EXTENDED | REG_NOSUB), 0);
        assert_true(i >= 0 && i < a->nkeys);
        char got[TP_KEYS_MAX];
        snprintf(got, sizeof(got), "%.*s", (int)a->len[i], a->argv[i]);
        if (regexec(&key, got, 0, NULL, 0) != 0)
            fail_msg("%s KEYS[%d] = \"%s\" does not match the header's %s", a->script, i + 1, got,
                     pat);
        regfree(&key);
        seen = i + 1 > seen ? i + 1 : seen;
    }
    regfree(&line);
    assert_int_equal(seen, fixed_keys);
}

/* bench/lua/bet.lua's request hash of round 42, band 2, stake 150: sha256("v1|42|2|150") (Python's
 * hashlib). Its text never changes: bet.lua's records compare it. */
static const char HASH[] = "981c9040fe3487603a8b53a48513e974a0558c8e57678d97243252c74a8f28bc";

/* --- Money --- */

static void test_bet(void **state)
{
    (void)state;
    struct tp_script_bet_args b = {.user_id = 7,
                                   .round_id = 42,
                                   .band = 2,
                                   .stake = 150,
                                   .idem_key = "k-1xx",
                                   .idem_len = 3,
                                   .now_ms = 1700000000000,
                                   .nbands = 5,
                                   .min_stake = 10,
                                   .max_stake = 100000,
                                   .idem_ttl_s = 86400,
                                   .buckets = 4};
    static struct tp_script_call a;
    tp_script_bet_call(&b, &a);
    EXPECT(&a, "bet", 11, "tp:{b3}:bal", "tp:{b3}:idem:7:k-1", "tp:{b3}:round:42:state",
           "tp:{b3}:pool:42", "tp:{b3}:bets:42:2", "tp:{b3}:outbox", "tp:{b3}:seq",
           "tp:{b3}:ubets:7", "tp:{b3}:net", "tp:{b3}:excl", "tp:{b3}:paused", "7", "42", "2",
           "150", "k-1", HASH, "1700000000000", "5", "10", "100000", "86400", "3", "4");
    check_header(&a, 11);
}

static void test_bet_batch(void **state)
{
    (void)state;
    /* users 7 and 3 in bucket 3 of 4; bands 2, 0, 2: two bands keys, two ubets keys */
    struct tp_script_batch_bet bets[] = {
        {.user_id = 7, .band = 2, .stake = 150, .idem_key = "k-1", .idem_len = 3},
        {.user_id = 3, .band = 0, .stake = 10, .idem_key = "a,b", .idem_len = 3},
        {.user_id = 7, .band = 2, .stake = 20, .idem_key = "k-2", .idem_len = 3},
    };
    struct tp_script_bet_batch_args b = {.round_id = 42,
                                         .now_ms = 1700000000000,
                                         .nbands = 5,
                                         .min_stake = 10,
                                         .max_stake = 100000,
                                         .idem_ttl_s = 86400,
                                         .bucket = 3,
                                         .buckets = 4,
                                         .skip_filter = true,
                                         .bets = bets,
                                         .n = 3};
    struct tp_script_call a;
    bet_batch_args(&b, &a);
    /* day 1700000000000 ms / 86400000 = 19675: an older version's last per-day shards of days
     * 19674, 19675 and 19676 (KEYS 12, 13, 15); the filter positions (word, mask, shard) of
     * "7:k-1", "3:a,b" and "7:k-2" (tests/lib/idemfilter.py): three shards, one key each; word,
     * mask and shard as 10 big-endian bytes (compared below: they hold NULs) */
    EXPECT(&a, "bet_batch", 23, "tp:{b3}:bal", "tp:{b3}:idem:42", "tp:{b3}:round:42:state",
           "tp:{b3}:pool:42", "tp:{b3}:outbox", "tp:{b3}:seq", "tp:{b3}:netlog", "tp:{b3}:excl",
           "tp:{b3}:paused", "tp:{b3}:disabled", "tp:{b3}:idemhot", "tp:{b3}:idemfilter:19674:1023",
           "tp:{b3}:idemfilter:19675:1023", "tp:{b3}:idemslots:1023",
           "tp:{b3}:idemfilter:19676:1023", "tp:{b3}:idemyoung", "tp:{b3}:betl:42:2",
           "tp:{b3}:betl:42:0", "tp:{b3}:ubets:7", "tp:{b3}:ubets:3", "tp:{b3}:idemslots:788",
           "tp:{b3}:idemslots:354", "tp:{b3}:idemslots:429", "42", "1700000000000", "5", "10",
           "100000", "86400", "3", "4", "3", "1", "7", "2", "150", "k-1", BYTES, "3", "0", "10",
           "a,b", BYTES, "7", "2", "20", "k-2", BYTES);
    /* 325696117, 1350836224, 788; 3104603225, 152043528, 354; 3641447563, 1053057, 429 */
    expect_bytes(&a, 37, "\x13\x69\xba\x75\x50\x84\x20\x00\x03\x14", 10);
    expect_bytes(&a, 42, "\xb9\x0c\x7c\x59\x09\x10\x00\x08\x01\x62", 10);
    expect_bytes(&a, 47, "\xd9\x0c\x14\x8b\x00\x10\x11\x81\x01\xad", 10);
    check_header(&a, 16); /* then the bets, ubets and shard keys, described in words */
    tp_script_call_release(&a);
    /* with the filter read and a shard size (three days of 128 KiB less 16 bytes: 32764 triples
     * of words), each position carries the length of a decimal, the first byte of its triple in
     * such a shard, (word mod 32764) * 12, in that decimal, then its last byte, that + 11 */
    b.skip_filter = false;
    b.shard_bytes = 393168;
    bet_batch_args(&b, &a);
    assert_int_equal(a.argc, 48);
    assert_string_equal(a.argv[32], "0:393168");
    expect_bytes(&a, 37,
                 "\x13\x69\xba\x75\x50\x84\x20\x00\x03\x14"
                 "\x06"
                 "263484"
                 "263495",
                 23);
    expect_bytes(&a, 42,
                 "\xb9\x0c\x7c\x59\x09\x10\x00\x08\x01\x62"
                 "\x06"
                 "211692"
                 "211703",
                 23);
    expect_bytes(&a, 47,
                 "\xd9\x0c\x14\x8b\x00\x10\x11\x81\x01\xad"
                 "\x06"
                 "286068"
                 "286079",
                 23);
    tp_script_call_release(&a);
    /* skipping the filter, no offsets: the same call as above */
    b.skip_filter = true;
    bet_batch_args(&b, &a);
    assert_string_equal(a.argv[32], "1");
    assert_int_equal(a.len[37], 10);
    tp_script_call_release(&a);
    b.skip_filter = false;
    /* a shard size that is no whole triples of words, none, or over a shard's most */
    const int64_t bad_sizes[] = {-12, 8, 16, TP_SCRIPT_IDEM_SHARD_MAX + 12};
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        b.shard_bytes = bad_sizes[i];
        assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    }
    b.shard_bytes = 393168;
    /* refused before anything is built or sent */
    bets[1].idem_len = 0;
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    bets[1].idem_len = TP_KEYS_IDEM_MAX + 1;
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    bets[1].idem_len = 3;
    /* printable ASCII only, each 3 bytes ("ab" and its NUL): bet_batch.lua checks only the
     * length and the newline */
    const char *const bad_keys[] = {"a b", "a\177b", "k\303\251", "\1ab", "a\nb", "ab"};
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        bets[1].idem_key = bad_keys[i];
        assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    }
    bets[1].idem_key = "a,b";
    bets[1].user_id = 4; /* bucket 0 */
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    bets[1].user_id = 3;
    b.n = 0;
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    b.n = TP_SCRIPT_BATCH_MAX + 1;
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    b.n = 3;
    b.idem_ttl_s = 0;
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EINVAL);
    b.idem_ttl_s = 86400;
    assert_int_equal(tp_script_bet_batch(NULL, &b, NULL, NULL), TP_EUNAVAIL);
}

static void test_idem_unindex(void **state)
{
    (void)state;
    /* "7:k-1" and "7:k-2" of round 42, bucket 3 (the positions as in test_bet_batch); in the
     * first minutes of day 19675 (both windows), then later (one) */
    struct tp_script_unindex_field f[] = {{"7:k-1", 5}, {"7:k-2", 5}, {"7:k-1", 5}};
    struct tp_script_idem_unindex_args u = {.bucket = 3,
                                            .id = 42,
                                            .window = 19675,
                                            .two = true,
                                            .since_ms = 1699913600000,
                                            .fields = f,
                                            .n = 3};
    struct tp_script_call a;
    idem_unindex_args(&u, &a);
    EXPECT(&a, "idem_unindex", 7, "tp:{b3}:idemhot", "tp:{b3}:idemyoung", "tp:{b3}:idemslots:0",
           "tp:{b3}:idemslots:1023", "tp:{b3}:idemslots:788", "tp:{b3}:idemslots:429",
           "tp:{b3}:idem:42", "42", "3", "19675", "2", "1699913600000", "3", "7:k-1", "325696117",
           "1350836224", "788", "7:k-2", "3641447563", "1053057", "429", "7:k-1", "325696117",
           "1350836224", "788");
    check_header(&a, 4);
    tp_script_call_release(&a);
    u.two = false;
    u.n = 1;
    idem_unindex_args(&u, &a);
    EXPECT(&a, "idem_unindex", 6, "tp:{b3}:idemhot", "tp:{b3}:idemyoung", "tp:{b3}:idemslots:0",
           "tp:{b3}:idemslots:1023", "tp:{b3}:idemslots:788", "tp:{b3}:idem:42", "42", "3", "19675",
           "1", "1699913600000", "1", "7:k-1", "325696117", "1350836224", "788");
    tp_script_call_release(&a);
    /* refused before anything is built or sent: fields that are not "<user_id>:<key>" */
    const char *bad[] = {"7", "7:", ":k", "x:k", "0:k", "-1:k"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        f[0] = (struct tp_script_unindex_field){bad[i], strlen(bad[i])};
        assert_int_equal(tp_script_idem_unindex(NULL, &u, NULL, NULL), TP_EINVAL);
    }
    char longkey[2 + TP_KEYS_IDEM_MAX + 1];
    memset(longkey, 'k', sizeof(longkey));
    longkey[0] = '7', longkey[1] = ':';
    f[0] = (struct tp_script_unindex_field){longkey, sizeof(longkey)};
    assert_int_equal(tp_script_idem_unindex(NULL, &u, NULL, NULL), TP_EINVAL);
    f[0] = (struct tp_script_unindex_field){"7:k-1", 5};
    u.n = TP_SCRIPT_UNINDEX_MAX + 1;
    assert_int_equal(tp_script_idem_unindex(NULL, &u, NULL, NULL), TP_EINVAL);
    u.n = 1;
    u.two = true;
    u.window = 0; /* no window before it */
    assert_int_equal(tp_script_idem_unindex(NULL, &u, NULL, NULL), TP_EINVAL);
    u.window = 19675;
    assert_int_equal(tp_script_idem_unindex(NULL, &u, NULL, NULL), TP_EUNAVAIL);
}

static void test_grant_signup(void **state)
{
    (void)state;
    static struct tp_script_call a;
    struct tp_script_grant_args g = {
        .user_id = 9, .grant_id = "signup:9", .amount = 100000, .now_ms = 5, .buckets = 2};
    grant_args(&g, &a);
    EXPECT(&a, "grant", 4, "tp:{b1}:bal", "tp:{b1}:grants", "tp:{b1}:granted", "tp:{b1}:outbox",
           "9", "signup:9", "100000", "5", "1", "2");
    check_header(&a, 4);
    struct tp_script_exclusion_args x = {.user_id = 9, .days = 365, .now_ms = 7, .buckets = 2};
    exclusion_args(&x, &a);
    EXPECT(&a, "exclusion", 1, "tp:{b1}:excl", "9", "365", "7", "1", "2");
    check_header(&a, 1);
    struct tp_script_signup_args s = {
        .lower = "alice", .username = "Alice", .user_id = 3, .pw_hash = "$argon2id$x", .now_ms = 6};
    signup_args(&s, &a);
    EXPECT(&a, "signup", 3, "tp:{g}:usernames", "tp:{g}:user:3", "tp:{g}:outbox", "alice", "Alice",
           "3", "$argon2id$x", "6");
    check_header(&a, 3);
}

static void test_admin(void **state)
{
    (void)state;
    static struct tp_script_call a;
    struct tp_script_admin adm = {.action_id = "grant-1-ab", .actor = "ops@h", .reason = "why"};
    struct tp_script_grant_args g = {.user_id = 9,
                                     .grant_id = "fix:9",
                                     .amount = -250,
                                     .now_ms = 5,
                                     .buckets = 2,
                                     .admin = &adm};
    grant_args(&g, &a);
    EXPECT(&a, "grant", 4, "tp:{b1}:bal", "tp:{b1}:grants", "tp:{b1}:granted", "tp:{b1}:outbox",
           "9", "fix:9", "-250", "5", "1", "2", "grant-1-ab", "ops@h", "why");
    check_header(&a, 4);
    struct tp_script_pause_args p = {.resume = false, .now_ms = 7, .admin = adm};
    pause_args(&p, &a);
    EXPECT(&a, "pause", 2, "tp:{g}:pause", "tp:{g}:outbox", "pause", "7", "grant-1-ab", "ops@h",
           "why");
    check_header(&a, 2);
    p.resume = true;
    pause_args(&p, &a);
    EXPECT(&a, "pause", 2, "tp:{g}:pause", "tp:{g}:outbox", "resume", "7", "grant-1-ab", "ops@h",
           "why");
    check_header(&a, 2);
}

static void test_account_scripts(void **state)
{
    (void)state;
    static struct tp_script_call a;
    struct tp_script_revoke_args r = {.user_id = 9, .before_ms = 86400005, .now_ms = 5};
    revoke_args(&r, &a);
    EXPECT(&a, "revoke", 1, "tp:{g}:revoked", "9", "86400005", "5", "tp:bcast");
    check_header(&a, 1);
    struct tp_script_password_args p = {
        .user_id = 3, .old_hash = "$old", .new_hash = "$new", .before_ms = 8, .now_ms = 6};
    password_args(&p, &a);
    EXPECT(&a, "password", 3, "tp:{g}:user:3", "tp:{g}:revoked", "tp:{g}:outbox", "3", "$old",
           "$new", "8", "6", "tp:bcast");
    check_header(&a, 3);
    struct tp_script_account_flag_args f = {
        .user_id = 9,
        .disabled = true,
        .now_ms = 7,
        .buckets = 4,
        .admin = {.action_id = "a-1", .actor = "ops@host", .reason = "spam"}};
    account_flag_args(&f, &a);
    EXPECT(&a, "account_flag", 2, "tp:{b1}:disabled", "tp:{b1}:outbox", "9", "1", "7", "1", "4",
           "tp:bcast", "a-1", "ops@host", "spam");
    check_header(&a, 2);
}

/* --- Leader --- */

static const struct tp_script_fence F = {.holder = "pid-1-w0", .epoch = 12};

static void test_lease_tick(void **state)
{
    (void)state;
    static struct tp_script_call a;
    struct tp_script_lease_args l = {.holder = "pid-1-w0", .epoch = 0, .px_ms = 2000};
    lease_args(&l, &a);
    EXPECT(&a, "lease", 2, "tp:{g}:lease", "tp:{g}:epoch", "pid-1-w0", "0", "2000");
    check_header(&a, 2);
    int64_t ts[] = {1000, 1250}, price[] = {100000, 100007};
    struct tp_script_tick_args t = {.fence = F, .maxlen = 6000, .ts = ts, .price = price, .n = 2};
    tick_args(&t, &a);
    EXPECT(&a, "tick", 2, "tp:{g}:lease", "tp:{g}:ticks", "pid-1-w0", "12", "6000", "1000",
           "100000", "1250", "100007");
    check_header(&a, 2);
    /* the largest backfill fits one call */
    int64_t many[TP_SCRIPT_TICKS_MAX] = {0};
    t = (struct tp_script_tick_args){
        .fence = F, .maxlen = 1, .ts = many, .price = many, .n = TP_SCRIPT_TICKS_MAX};
    tick_args(&t, &a);
    assert_int_equal(a.argc, 5 + 2 * TP_SCRIPT_TICKS_MAX);
    t.n = 0;
    assert_int_equal(tp_script_tick(NULL, &t, NULL, NULL), TP_EINVAL);
    t.n = TP_SCRIPT_TICKS_MAX + 1;
    assert_int_equal(tp_script_tick(NULL, &t, NULL, NULL), TP_EINVAL);
}

static void test_rounds(void **state)
{
    (void)state;
    static struct tp_script_call a;
    int edges[] = {-50, 0, 50};
    struct tp_script_round_open_args o = {.id = 9,
                                          .opens_at = 100,
                                          .locks_at = 200,
                                          .closes_at = 300,
                                          .seed_hex = "ab",
                                          .seed_hash = "cd",
                                          .vol_ppb = 777,
                                          .rake_bps = 500,
                                          .edges_bps = edges,
                                          .n_edges = 3,
                                          .tick_ms = 250,
                                          .betting_ms = 10000,
                                          .min_stake = 100,
                                          .max_stake = 999999999999999,
                                          .id_floor = 6};
    struct tp_script_round_lock_args l = {.id = 8, .lock_price = 123456};
    int64_t pools[] = {100, 0, 250, 7};
    struct tp_script_round_close_args c = {.id = 7,
                                           .close_price = 123999,
                                           .winning_band = 2,
                                           .total = 357,
                                           .winning_stake = 250,
                                           .rake = 17,
                                           .pot = 340,
                                           .refund_all = false,
                                           .pools = pools,
                                           .npools = 4};
    struct tp_script_round_boundary_args bd = {.fence = F, .close = &c, .lock = &l, .open = &o};
    round_boundary_args(&bd, &a);
    EXPECT(&a, "round_boundary", 12, "tp:{g}:lease", "tp:{g}:current", "tp:{g}:outbox",
           "tp:{g}:rounds", "tp:{g}:unfinished", "tp:{g}:round:7", "tp:{g}:round:8",
           "tp:{g}:round:7", "tp:{g}:seed:7", "tp:{g}:round:9", "tp:{g}:seed:9", "tp:{g}:pause",
           "pid-1-w0", "12", "7", "123999", "2", "357", "250", "17", "340", "0", "100,0,250,7", "8",
           "123456", "9", "100", "200", "300", "ab", "cd", "777", "500", "-50,0,50", "250", "10000",
           "100", "999999999999999", "6");
    check_header(&a, 12);
    o.n_edges = 0; /* one band: an empty list */
    round_boundary_args(&bd, &a);
    assert_int_equal(a.len[33], 0); /* the edges */
    /* A part left out: id 0, round 0's keys, empty strings; the others unchanged. */
    bd = (struct tp_script_round_boundary_args){.fence = F, .lock = &l};
    round_boundary_args(&bd, &a);
    EXPECT(&a, "round_boundary", 12, "tp:{g}:lease", "tp:{g}:current", "tp:{g}:outbox",
           "tp:{g}:rounds", "tp:{g}:unfinished", "tp:{g}:round:0", "tp:{g}:round:8",
           "tp:{g}:round:7", "tp:{g}:seed:7", "tp:{g}:round:0", "tp:{g}:seed:0", "tp:{g}:pause",
           "pid-1-w0", "12", "0", "0", "0", "0", "0", "0", "0", "0", "", "8", "123456", "0", "0",
           "0", "0", "", "", "0", "0", "", "0", "0", "0", "0", "0");
    bd = (struct tp_script_round_boundary_args){.fence = F};
    assert_int_equal(tp_script_round_boundary(NULL, &bd, NULL, NULL), TP_EINVAL);
    c.npools = 0;
    bd.close = &c;
    assert_int_equal(tp_script_round_boundary(NULL, &bd, NULL, NULL), TP_EINVAL);

    struct tp_script_ws_sockets_args ws = {
        .bucket = 3, .user_id = 42, .op = "take", .socket = "h|7|0|9", .cap = 8, .ttl_ms = 60000};
    ws_sockets_args(&ws, &a);
    EXPECT(&a, "ws_sockets", 1, "tp:{b3}:wsock:42", "take", "h|7|0|9", "8", "60000");
    check_header(&a, 1);

    static const int cedges[] = {-10, 3, 10};
    struct tp_script_round_cancel_args x = {.fence = F,
                                            .id = 8,
                                            .total = 357,
                                            .pools = pools,
                                            .npools = 4,
                                            .reason = "deadline missed",
                                            .edges = cedges,
                                            .nedges = 3,
                                            .locks_at = 1700000030000,
                                            .betting_ms = 30000};
    round_cancel_args(&x, &a);
    EXPECT(&a, "round_cancel", 4, "tp:{g}:lease", "tp:{g}:round:8", "tp:{g}:current",
           "tp:{g}:unfinished", "pid-1-w0", "12", "8", "357", "100,0,250,7", "deadline missed",
           "-10,3,10", "1700000030000", "30000");
    check_header(&a, 4);
    x.nedges = 2;
    assert_int_equal(tp_script_round_cancel(NULL, &x, NULL, NULL), TP_EINVAL);
    x.nedges = 3;
    x.npools = 0;
    assert_int_equal(tp_script_round_cancel(NULL, &x, NULL, NULL), TP_EINVAL);

    int64_t ids[] = {3, 5, 9};
    struct tp_script_round_index_args x2 = {.fence = F, .mark = 9, .ids = ids, .n = 3};
    round_index_args(&x2, &a);
    EXPECT(&a, "round_index", 6, "tp:{g}:lease", "tp:{g}:unfinished", "tp:{g}:unfinished_scan",
           "tp:{g}:round:3", "tp:{g}:round:5", "tp:{g}:round:9", "pid-1-w0", "12", "9", "3", "5",
           "9");
    check_header(&a, 3);
    x2.n = TP_SCRIPT_INDEX_MAX + 1;
    assert_int_equal(tp_script_round_index(NULL, &x2, NULL, NULL), TP_EINVAL);

    struct tp_script_round_final_args f = {.fence = F, .id = 8, .sum_t = 357, .sum_paid = 340};
    round_final_args(&f, &a);
    EXPECT(&a, "round_final", 5, "tp:{g}:lease", "tp:{g}:round:8", "tp:{g}:seed:8", "tp:{g}:outbox",
           "tp:{g}:unfinished", "pid-1-w0", "12", "8", "357", "340");
    check_header(&a, 5);
}

/* --- Buckets --- */

static void test_buckets(void **state)
{
    (void)state;
    static struct tp_script_call a;
    struct tp_script_bucket_state_args s = {.bucket = 1,
                                            .id = 8,
                                            .state = "live",
                                            .locks_at = 200,
                                            .grace_ms = 3000,
                                            .nbands = 5,
                                            .min_stake = 100,
                                            .max_stake = 100000};
    bucket_state_args(&s, &a);
    EXPECT(&a, "bucket_state", 2, "tp:{b1}:round:8:state", "tp:{b1}:unsettled", "8", "live", "200",
           "3000", "5", "100", "100000");
    check_header(&a, 2);

    struct tp_script_bucket_plan_args p = {.bucket = 1,
                                           .id = 8,
                                           .winning_band = 2,
                                           .pot = 340,
                                           .winning_stake = 250,
                                           .refund_all = true,
                                           .nbands = 4};
    bucket_plan_args(&p, &a);
    EXPECT(&a, "bucket_plan", 1, "tp:{b1}:plan:8", "2", "340", "250", "1", "4");
    check_header(&a, 1);

    struct tp_script_settle_page_args g = {
        .bucket = 1, .id = 8, .nbands = 3, .max_bets = 500, .now_ms = 9, .budget_us = 1500};
    settle_page_args(&g, &a);
    EXPECT(&a, "settle_page", 12, "tp:{b1}:plan:8", "tp:{b1}:bal", "tp:{b1}:paid:8",
           "tp:{b1}:payout:8", "tp:{b1}:outbox", "tp:{b1}:bets:8:0", "tp:{b1}:bets:8:1",
           "tp:{b1}:bets:8:2", "tp:{b1}:net", "tp:{b1}:betl:8:0", "tp:{b1}:betl:8:1",
           "tp:{b1}:betl:8:2", "8", "500", "9", "1500");
    check_header(&a, 5); /* then the bets hashes, net and the bets lists, described in words */

    struct tp_script_settle_finish_args f = {
        .bucket = 1, .id = 8, .final_state = "settled", .now_ms = 9};
    settle_finish_args(&f, &a);
    EXPECT(&a, "settle_finish", 6, "tp:{b1}:plan:8", "tp:{b1}:pool:8", "tp:{b1}:house",
           "tp:{b1}:unsettled", "tp:{b1}:round:8:state", "tp:{b1}:outbox", "8", "settled", "9");
    check_header(&a, 6);

    struct tp_script_net_fold_args nf = {.bucket = 1, .limit = 10};
    net_fold_args(&nf, &a);
    EXPECT(&a, "net_fold", 2, "tp:{b1}:net", "tp:{b1}:netlog", "10");
    check_header(&a, 2);
}

static void test_idem_slots(void **state)
{
    (void)state;
    struct tp_script_idem_slots_args f = {.mode = TP_IDEM_SLOTS_BUILD,
                                          .bucket = 1,
                                          .day = 19675,
                                          .first = 1022,
                                          .n = 2,
                                          .shard_bytes = 393168,
                                          .span_ms = 86400000,
                                          .extra_ms = 90000000,
                                          .now_ms = 1700000000000};
    struct tp_script_call a;
    idem_slots_args(&f, &a);
    EXPECT(&a, "idem_slots", 11, "tp:{b1}:idemslots:fold", "tp:{b1}:idemslots:0",
           "tp:{b1}:idemslots:zeroed", "tp:{b1}:idemslots:1022", "tp:{b1}:idemfilter:19674:1022",
           "tp:{b1}:idemfilter:19675:1022", "tp:{b1}:idemfilter:19676:1022",
           "tp:{b1}:idemslots:1023", "tp:{b1}:idemfilter:19674:1023",
           "tp:{b1}:idemfilter:19675:1023", "tp:{b1}:idemfilter:19676:1023", "build", "393168",
           "19675", "1", "86400000", "90000000", "1700000000000");
    check_header(&a, 3); /* then the step's shards, described in words */
    tp_script_call_release(&a);
    f.mode = TP_IDEM_SLOTS_ZERO;
    f.extra_ms = 600000;
    idem_slots_args(&f, &a);
    /* day 19675 zeroes day 19676's words: 19676 mod 3 = 2 */
    EXPECT(&a, "idem_slots", 5, "tp:{b1}:idemslots:mask:2", "tp:{b1}:idemslots:0",
           "tp:{b1}:idemslots:zeroed", "tp:{b1}:idemslots:1022", "tp:{b1}:idemslots:1023", "zero",
           "393168", "19675", "1", "86400000", "600000", "1700000000000");
    tp_script_call_release(&a);
    f.mode = TP_IDEM_SLOTS_PROBE;
    idem_slots_args(&f, &a);
    EXPECT(&a, "idem_slots", 9, "tp:{b1}:idemslots:1023", "tp:{b1}:idemslots:0",
           "tp:{b1}:idemslots:zeroed", "tp:{b1}:idemfilter:19674:0",
           "tp:{b1}:idemfilter:19674:1023", "tp:{b1}:idemfilter:19675:0",
           "tp:{b1}:idemfilter:19675:1023", "tp:{b1}:idemfilter:19676:0",
           "tp:{b1}:idemfilter:19676:1023", "probe", "393168", "19675", "1", "86400000", "600000",
           "1700000000000");
    tp_script_call_release(&a);
    /* refused before anything is built or sent */
    f.mode = TP_IDEM_SLOTS_BUILD;
    f.n = 3; /* past the last shard */
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EINVAL);
    f.n = 0;
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EINVAL);
    f.n = 2;
    f.shard_bytes = 131056; /* whole words, not whole triples */
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EINVAL);
    f.shard_bytes = TP_SCRIPT_IDEM_SHARD_MAX + 12;
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EINVAL);
    f.shard_bytes = 393168;
    f.extra_ms = 0;
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EINVAL);
    f.extra_ms = 600000;
    f.day = 0;
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EINVAL);
    f.day = 19675;
    assert_int_equal(tp_script_idem_slots(NULL, &f, NULL, NULL), TP_EUNAVAIL);
}

/* --- The Postgres writer --- */

static void test_park(void **state)
{
    (void)state;
    static struct tp_script_call a;
    const char *fields[] = {"type", "bets", "bets", "1,2,3"};
    struct tp_script_park_args p = {.stream = "tp:{b3}:outbox",
                                    .group = "pgw",
                                    .src_id = "5-1",
                                    .error = "malformed",
                                    .look_back = 500,
                                    .fields = fields,
                                    .nfields = 2};
    park_args(&p, &a);
    EXPECT(&a, "park", 2, "tp:{b3}:outbox", "tp:{b3}:outbox:rejected", "pgw", "5-1", "malformed",
           "500", "type", "bets", "bets", "1,2,3");
    check_header(&a, 2);
    /* The global outbox keeps its {g} tag. */
    p.stream = "tp:{g}:outbox";
    park_args(&p, &a);
    EXPECT(&a, "park", 2, "tp:{g}:outbox", "tp:{g}:outbox:rejected", "pgw", "5-1", "malformed",
           "500", "type", "bets", "bets", "1,2,3");
    /* Out of range: refused before anything is sent (a NULL store would answer TP_EUNAVAIL). */
    p.nfields = 0;
    assert_int_equal(tp_script_park(NULL, &p, NULL, NULL), TP_EINVAL);
    p.nfields = TP_SCRIPT_PARK_FIELDS_MAX + 1;
    assert_int_equal(tp_script_park(NULL, &p, NULL, NULL), TP_EINVAL);
    p.nfields = 2;
    p.look_back = -1;
    assert_int_equal(tp_script_park(NULL, &p, NULL, NULL), TP_EINVAL);
    p.look_back = TP_SCRIPT_PARK_LOOK_BACK_MAX + 1;
    assert_int_equal(tp_script_park(NULL, &p, NULL, NULL), TP_EINVAL);
    p.look_back = 0;
    char longname[TP_KEYS_MAX];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    p.stream = longname;
    assert_int_equal(tp_script_park(NULL, &p, NULL, NULL), TP_EINVAL);
    p.stream = "tp:{b3}:outbox";
    assert_int_equal(tp_script_park(NULL, &p, NULL, NULL), TP_EUNAVAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bet),          cmocka_unit_test(test_bet_batch),
        cmocka_unit_test(test_grant_signup), cmocka_unit_test(test_admin),
        cmocka_unit_test(test_lease_tick),   cmocka_unit_test(test_rounds),
        cmocka_unit_test(test_buckets),      cmocka_unit_test(test_account_scripts),
        cmocka_unit_test(test_idem_slots),   cmocka_unit_test(test_idem_unindex),
        cmocka_unit_test(test_park),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
