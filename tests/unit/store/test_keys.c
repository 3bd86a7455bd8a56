/* Unit tests for the Redis key schema (src/store/keys.c): every builder against the layout in
 * scripts/lua/README.md, the user → bucket rule, and the bounds of the longest key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/store/cluster.h"
#include "tickpool/store/keys.h"

#include <string.h>

static void test_bucket_of(void **state)
{
    (void)state;
    assert_int_equal(tp_bucket_of(1, 1), 0);
    assert_int_equal(tp_bucket_of(123456789, 1), 0);
    assert_int_equal(tp_bucket_of(7, 4), 3);
    assert_int_equal(tp_bucket_of(8, 4), 0);
    assert_int_equal(tp_bucket_of(16385, 16384), 1);
    assert_int_equal(tp_bucket_of(INT64_MAX, 16384), (int)(INT64_MAX % 16384));
    /* every bucket gets a share of consecutive ids */
    int seen[5] = {0};
    for (int64_t u = 1; u <= 50; u++)
        seen[tp_bucket_of(u, 5)]++;
    for (int b = 0; b < 5; b++)
        assert_int_equal(seen[b], 10);
}

static void test_bucket_keys(void **state)
{
    (void)state;
    struct tp_key k;
    assert_string_equal(tp_keys_bal(&k, 0), "tp:{b0}:bal");
    assert_int_equal(k.len, strlen("tp:{b0}:bal"));
    assert_string_equal(tp_keys_grants(&k, 1), "tp:{b1}:grants");
    assert_string_equal(tp_keys_granted(&k, 1), "tp:{b1}:granted");
    assert_string_equal(tp_keys_house(&k, 2), "tp:{b2}:house");
    assert_string_equal(tp_keys_seq(&k, 2), "tp:{b2}:seq");
    assert_string_equal(tp_keys_outbox(&k, 12), "tp:{b12}:outbox");
    assert_string_equal(tp_keys_net(&k, 0), "tp:{b0}:net");
    assert_string_equal(tp_keys_netlog(&k, 3), "tp:{b3}:netlog");
    assert_string_equal(tp_keys_excl(&k, 16383), "tp:{b16383}:excl");
    assert_string_equal(tp_keys_unsettled(&k, 0), "tp:{b0}:unsettled");
    assert_string_equal(tp_keys_paused(&k, 7), "tp:{b7}:paused");
    assert_string_equal(tp_keys_ref_idem(&k, 1, 5, "abc-1xyz", 5), "tp:{b1}:idem:5:abc-1");
    assert_string_equal(tp_keys_idem(&k, 1, 42), "tp:{b1}:idem:42");
    assert_string_equal(tp_keys_idem_hot(&k, 1), "tp:{b1}:idemhot");
    assert_string_equal(tp_keys_idem_young(&k, 1), "tp:{b1}:idemyoung");
    assert_string_equal(tp_keys_idem_shard(&k, 1, 19675, 0), "tp:{b1}:idemfilter:19675:0");
    assert_string_equal(tp_keys_idem_shard(&k, 2, 3, 1023), "tp:{b2}:idemfilter:3:1023");
    assert_string_equal(tp_keys_idem_slots(&k, 1, 0), "tp:{b1}:idemslots:0");
    assert_string_equal(tp_keys_idem_slots(&k, 2, 1023), "tp:{b2}:idemslots:1023");
    assert_string_equal(tp_keys_idem_slots_aux(&k, 2, "mask:1"), "tp:{b2}:idemslots:mask:1");
    /* the filter position of "7:k-1", as tests/lib/idemfilter.py computes it from SHA-1 */
    struct tp_keys_idem_pos pos;
    tp_keys_idem_pos(7, "k-1", 3, &pos);
    assert_int_equal(pos.word, 325696117u);
    assert_int_equal(pos.mask, 1350836224u);
    assert_int_equal(pos.shard, 788);
    /* the default 128 MiB over 1 bucket: three days of an older per-day shard's 131,056 bytes
     * (128 KiB less 16) each, in the 384 KiB class; whole words a day, at least one */
    assert_int_equal(tp_keys_idem_shard_bytes((size_t)128 << 20, 1), 393168);
    assert_int_equal(tp_keys_idem_shard_bytes((size_t)128 << 20, 3), 3 * 43672);
    assert_int_equal(tp_keys_idem_shard_bytes(65536, 64), 12);
    /* a word's triple: (word mod triples) * 12 */
    assert_int_equal(tp_keys_idem_byte_offset(325696117u, 393168), 263484);
    assert_int_equal(tp_keys_idem_byte_offset(11u, 12), 0);
    /* one window per TTL: the last millisecond of a day is in it, the next one is not */
    assert_int_equal(tp_keys_idem_window(0, 86400), 0);
    assert_int_equal(tp_keys_idem_window(86399999, 86400), 0);
    assert_int_equal(tp_keys_idem_window(86400000, 86400), 1);
    assert_int_equal(tp_keys_idem_window(1700000000000, 3600), 472222);
    assert_string_equal(tp_keys_ubets(&k, 1, 5), "tp:{b1}:ubets:5");
    assert_string_equal(tp_keys_wsock(&k, 1, 5), "tp:{b1}:wsock:5");
    assert_string_equal(tp_keys_round_state(&k, 0, 42), "tp:{b0}:round:42:state");
    assert_string_equal(tp_keys_pool(&k, 3, 42), "tp:{b3}:pool:42");
    assert_string_equal(tp_keys_pool_pattern(&k, 3), "tp:{b3}:pool:*");
    assert_string_equal(tp_keys_bets(&k, 3, 42, 7), "tp:{b3}:bets:42:7");
    assert_string_equal(tp_keys_betl(&k, 3, 42, 7), "tp:{b3}:betl:42:7");
    assert_string_equal(tp_keys_plan(&k, 0, 9), "tp:{b0}:plan:9");
    assert_string_equal(tp_keys_paid(&k, 0, 9), "tp:{b0}:paid:9");
    assert_string_equal(tp_keys_payout(&k, 0, 9), "tp:{b0}:payout:9");
}

static void test_global_keys(void **state)
{
    (void)state;
    struct tp_key k;
    assert_string_equal(tp_keys_round(&k, 17), "tp:{g}:round:17");
    assert_string_equal(tp_keys_round(&k, 0), "tp:{g}:round:0"); /* round_lock of round 1 */
    assert_string_equal(tp_keys_seed(&k, 17), "tp:{g}:seed:17");
    assert_string_equal(tp_keys_round_pg_at(&k, 17), "tp:{g}:round:17:pg_at");
    assert_string_equal(tp_keys_user(&k, 4), "tp:{g}:user:4");
    assert_string_equal(TP_KEYS_LEASE, "tp:{g}:lease");
    assert_string_equal(TP_KEYS_EPOCH, "tp:{g}:epoch");
    assert_string_equal(TP_KEYS_ROUNDS, "tp:{g}:rounds");
    assert_string_equal(TP_KEYS_CURRENT, "tp:{g}:current");
    assert_string_equal(TP_KEYS_TICKS, "tp:{g}:ticks");
    assert_string_equal(TP_KEYS_GLOBAL_OUTBOX, "tp:{g}:outbox");
    assert_string_equal(TP_KEYS_USER_SEQ, "tp:{g}:user_seq");
    assert_string_equal(TP_KEYS_PAUSE, "tp:{g}:pause");
    assert_string_equal(TP_KEYS_WORKERS, "tp:{g}:workers");
    assert_string_equal(TP_KEYS_USERNAMES, "tp:{g}:usernames");
    assert_string_equal(TP_KEYS_AUTH_SECRET, "tp:{g}:auth_secret");
    assert_string_equal(TP_KEYS_BCAST_CHANNEL, "tp:bcast");
}

/* The longest key fits: the largest bucket, the largest user id, a full idempotency key. */
static void test_longest_key(void **state)
{
    (void)state;
    char idem[TP_KEYS_IDEM_MAX];
    memset(idem, '~', sizeof(idem));
    struct tp_key k;
    tp_keys_ref_idem(&k, 16383, INT64_MAX, idem, sizeof(idem));
    assert_int_equal(k.len, strlen("tp:{b16383}:idem:9223372036854775807:") + TP_KEYS_IDEM_MAX);
    assert_int_equal(k.s[k.len], '\0');
    assert_true(k.len < TP_KEYS_MAX);
    tp_keys_bets(&k, 16383, INT64_MAX, 15);
    assert_true(k.len < TP_KEYS_MAX);
}

/* A key's slot (its length read after the builder ran: an argument's order is unspecified). */
static int slot_of(const char *key)
{
    return tp_cluster_slot(key, strlen(key));
}

/* Cluster mode's tags: bucket N's slot lies in its share of the slot space, so B buckets spread
 * evenly over masters that split the slots evenly; every key of a bucket keeps one slot. */
static void test_spread(void **state)
{
    (void)state;
    struct tp_key k, k2;
    assert_int_equal(tp_keys_spread(12), 0);
    int per_master[3] = {0};
    for (int b = 0; b < 12; b++) {
        tp_keys_bal(&k, b);
        assert_true(strncmp(k.s, "tp:{b", 5) == 0);
        int slot = tp_cluster_slot(k.s, k.len);
        assert_true(slot >= b * 16384 / 12 && slot < (b + 1) * 16384 / 12);
        assert_int_equal(slot_of(tp_keys_bets(&k2, b, 77, 3)), slot);
        assert_int_equal(slot_of(tp_keys_betl(&k2, b, 77, 3)), slot);
        assert_int_equal(slot_of(tp_keys_idem(&k2, b, 77)), slot);
        assert_int_equal(slot_of(tp_keys_idem_hot(&k2, b)), slot);
        assert_int_equal(slot_of(tp_keys_idem_young(&k2, b)), slot);
        assert_int_equal(slot_of(tp_keys_idem_shard(&k2, b, 19675, 1023)), slot);
        assert_int_equal(slot_of(tp_keys_idem_slots(&k2, b, 1023)), slot);
        assert_int_equal(slot_of(tp_keys_idem_slots_aux(&k2, b, "zeroed")), slot);
        per_master[slot * 3 / 16384]++; /* redis-cli --cluster create's even split */
    }
    assert_int_equal(per_master[0], 4);
    assert_int_equal(per_master[1], 4);
    assert_int_equal(per_master[2], 4);
    /* the bucket number stays readable: tp:{b7.K}: */
    tp_keys_bal(&k, 7);
    assert_true(strncmp(k.s, "tp:{b7.", 7) == 0);
    /* many buckets share cells of 64 slots: still even over any 3-way split */
    assert_int_equal(tp_keys_spread(16384), 0);
    int counts[3] = {0};
    for (int b = 0; b < 16384; b++)
        counts[slot_of(tp_keys_seq(&k, b)) * 3 / 16384]++;
    for (int m = 0; m < 3; m++)
        assert_true(counts[m] >= 5400 && counts[m] <= 5520);
    /* the longest keys still fit */
    tp_keys_ubets(&k, 16383, INT64_MAX);
    assert_true(k.len < TP_KEYS_MAX);
    tp_keys_bets(&k, 16383, INT64_MAX, 15);
    assert_true(k.len < TP_KEYS_MAX);
    assert_int_equal(tp_keys_spread(-1), TP_EINVAL);
    assert_int_equal(tp_keys_spread(16385), TP_EINVAL);
    assert_int_equal(tp_keys_spread(0), 0);
    assert_string_equal(tp_keys_bal(&k, 3), "tp:{b3}:bal");
}

/* printf's text of a name, the way keys.c formatted every name before session 18. */
__attribute__((format(printf, 2, 3))) static void want(struct tp_key *w, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(w->s, sizeof(w->s), f, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(w->s));
    w->len = (size_t)n;
}

#define ASSERT_SAME(got, w)                                                                        \
    do {                                                                                           \
        assert_string_equal((got), (w).s);                                                         \
        assert_int_equal(k.len, (w).len);                                                          \
    } while (0)

/* Every name is written by hand (a batch formats ~15 per call and more per bet): each one is
 * the text printf wrote from the old format, for hostile ids (0, -1, the int64 bounds, the
 * largest unsigned value seen as int64), edge buckets, the longest idempotency keys (and one
 * with a NUL, where "%.*s" stopped), with and without cluster tags. */
static void test_names_as_printf(void **state)
{
    (void)state;
    /* the bucket's keys without an id, then those with one (name:<id><tail>) */
    const struct {
        const char *(*build)(struct tp_key *, int);
        const char *name;
    } consts[] = {
        {tp_keys_bal, "bal"},
        {tp_keys_grants, "grants"},
        {tp_keys_granted, "granted"},
        {tp_keys_house, "house"},
        {tp_keys_seq, "seq"},
        {tp_keys_outbox, "outbox"},
        {tp_keys_net, "net"},
        {tp_keys_netlog, "netlog"},
        {tp_keys_excl, "excl"},
        {tp_keys_paused, "paused"},
        {tp_keys_disabled, "disabled"},
        {tp_keys_unsettled, "unsettled"},
        {tp_keys_idem_hot, "idemhot"},
        {tp_keys_idem_young, "idemyoung"},
        {tp_keys_pool_pattern, "pool:*"},
    };
    const struct {
        const char *(*build)(struct tp_key *, int, int64_t);
        const char *name, *tail;
    } with_id[] = {
        {tp_keys_ubets, "ubets", ""}, {tp_keys_wsock, "wsock", ""},
        {tp_keys_idem, "idem", ""},   {tp_keys_round_state, "round", ":state"},
        {tp_keys_pool, "pool", ""},   {tp_keys_plan, "plan", ""},
        {tp_keys_paid, "paid", ""},   {tp_keys_payout, "payout", ""},
    };
    const int64_t ids[] = {0, 1, -1, 9, 10, 19675, INT64_MAX, INT64_MIN, (int64_t)UINT64_MAX};
    const int ints[] = {0, 1, 9, 10, 63, 1023, INT32_MAX, INT32_MIN};
    const int buckets[] = {0, 7, 11, 9999};
    char idem[TP_KEYS_IDEM_MAX];
    memset(idem, '~', sizeof(idem));
    const char nul_key[] = {'a', 'b', '\0', 'c'};
    for (int mode = 0; mode < 3; mode++) {
        assert_int_equal(tp_keys_spread(mode == 0 ? 0 : mode == 1 ? 12 : 16384), 0);
        for (size_t bi = 0; bi < sizeof buckets / sizeof buckets[0]; bi++) {
            int b = buckets[bi];
            if (mode == 1 && b >= 12)
                continue;
            struct tp_key k, w, pre;
            /* the prefix: tp:{bN}:, or tp:{bN.K}: with K of test_spread's rule */
            tp_keys_bal(&pre, b);
            pre.len -= 3;
            pre.s[pre.len] = '\0';
            if (mode == 0) {
                want(&w, "tp:{b%d}:", b);
                assert_string_equal(pre.s, w.s);
            } else {
                assert_int_equal(strncmp(pre.s, "tp:{b", 5), 0);
            }
            const char *P = pre.s;
            for (size_t c = 0; c < sizeof consts / sizeof consts[0]; c++)
                ASSERT_SAME(consts[c].build(&k, b), (want(&w, "%s%s", P, consts[c].name), w));
            struct tp_key ob;
            tp_keys_outbox(&ob, b);
            ASSERT_SAME(tp_keys_rejected(&k, ob.s), (want(&w, "%s:rejected", ob.s), w));
            for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
                long long v = (long long)ids[i];
                for (size_t c = 0; c < sizeof with_id / sizeof with_id[0]; c++)
                    ASSERT_SAME(
                        with_id[c].build(&k, b, ids[i]),
                        (want(&w, "%s%s:%lld%s", P, with_id[c].name, v, with_id[c].tail), w));
                for (size_t j = 0; j < sizeof ints / sizeof ints[0]; j++) {
                    ASSERT_SAME(tp_keys_bets(&k, b, ids[i], ints[j]),
                                (want(&w, "%sbets:%lld:%d", P, v, ints[j]), w));
                    ASSERT_SAME(tp_keys_betl(&k, b, ids[i], ints[j]),
                                (want(&w, "%sbetl:%lld:%d", P, v, ints[j]), w));
                    if (ints[j] >= 0 && ints[j] < TP_KEYS_IDEM_SHARDS)
                        ASSERT_SAME(tp_keys_idem_shard(&k, b, ids[i], ints[j]),
                                    (want(&w, "%sidemfilter:%lld:%d", P, v, ints[j]), w));
                }
                const size_t lens[] = {0, 1, TP_KEYS_IDEM_MAX};
                for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
                    ASSERT_SAME(tp_keys_ref_idem(&k, b, ids[i], idem, lens[l]),
                                (want(&w, "%sidem:%lld:%.*s", P, v, (int)lens[l], idem), w));
                ASSERT_SAME(tp_keys_ref_idem(&k, b, ids[i], nul_key, sizeof nul_key),
                            (want(&w, "%sidem:%lld:%.*s", P, v, (int)sizeof nul_key, nul_key), w));
            }
        }
    }
    assert_int_equal(tp_keys_spread(0), 0);
    struct tp_key k, w;
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        long long v = (long long)ids[i];
        ASSERT_SAME(tp_keys_round(&k, ids[i]), (want(&w, "tp:{g}:round:%lld", v), w));
        ASSERT_SAME(tp_keys_seed(&k, ids[i]), (want(&w, "tp:{g}:seed:%lld", v), w));
        ASSERT_SAME(tp_keys_round_pg_at(&k, ids[i]), (want(&w, "tp:{g}:round:%lld:pg_at", v), w));
        ASSERT_SAME(tp_keys_user(&k, ids[i]), (want(&w, "tp:{g}:user:%lld", v), w));
    }
    ASSERT_SAME(tp_keys_rejected(&k, TP_KEYS_GLOBAL_OUTBOX),
                (want(&w, "tp:{g}:outbox:rejected"), w));
    /* archival's list of a round's keys is the builders' names */
    struct tp_key all[TP_KEYS_ROUND_BUCKET_MAX];
    int n = tp_keys_round_bucket(all, TP_KEYS_ROUND_BUCKET_MAX, 5, INT64_MAX, 64);
    assert_int_equal(n, 6 + 2 * 64);
    assert_string_equal(all[0].s, "tp:{b5}:idem:9223372036854775807");
    assert_string_equal(all[5].s, "tp:{b5}:payout:9223372036854775807");
    assert_string_equal(all[6].s, "tp:{b5}:bets:9223372036854775807:0");
    assert_string_equal(all[7].s, "tp:{b5}:betl:9223372036854775807:0");
    assert_string_equal(all[132].s, "tp:{b5}:bets:9223372036854775807:63");
    assert_string_equal(all[133].s, "tp:{b5}:betl:9223372036854775807:63");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_of),   cmocka_unit_test(test_spread),
        cmocka_unit_test(test_bucket_keys), cmocka_unit_test(test_global_keys),
        cmocka_unit_test(test_longest_key), cmocka_unit_test(test_names_as_printf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
