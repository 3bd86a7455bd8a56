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
    assert_string_equal(tp_keys_excl(&k, 16383), "tp:{b16383}:excl");
    assert_string_equal(tp_keys_unsettled(&k, 0), "tp:{b0}:unsettled");
    assert_string_equal(tp_keys_paused(&k, 7), "tp:{b7}:paused");
    assert_string_equal(tp_keys_ref_idem(&k, 1, 5, "abc-1xyz", 5), "tp:{b1}:idem:5:abc-1");
    assert_string_equal(tp_keys_idem(&k, 1, 42), "tp:{b1}:idem:42");
    assert_string_equal(tp_keys_idem_hot(&k, 1), "tp:{b1}:idemhot");
    assert_string_equal(tp_keys_idem_filter(&k, 1, 19675), "tp:{b1}:idemfilter:19675");
    assert_string_equal(tp_keys_idem_filter(&k, 1, -1), "tp:{b1}:idemfilter:-1");
    assert_string_equal(tp_keys_idem_shard(&k, 1, 19675, 0), "tp:{b1}:idemfilter:19675:0");
    assert_string_equal(tp_keys_idem_shard(&k, 2, 3, 1023), "tp:{b2}:idemfilter:3:1023");
    /* the filter position of "7:k-1", as tests/lib/idemfilter.py computes it from SHA-1 */
    struct tp_keys_idem_pos pos;
    tp_keys_idem_pos(7, "k-1", 3, &pos);
    assert_int_equal(pos.word, 325696117u);
    assert_int_equal(pos.mask, 1350836224u);
    assert_int_equal(pos.shard, 788);
    /* the default 128 MiB over 1 bucket: 128 KiB shards; whole words, at least one */
    assert_int_equal(tp_keys_idem_shard_bytes((size_t)128 << 20, 1), 131056);
    assert_int_equal(tp_keys_idem_shard_bytes((size_t)128 << 20, 3), 43672);
    assert_int_equal(tp_keys_idem_shard_bytes(65536, 64), 4);
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
        assert_int_equal(tp_cluster_slot(tp_keys_bets(&k2, b, 77, 3), k2.len), slot);
        assert_int_equal(tp_cluster_slot(tp_keys_idem(&k2, b, 77), k2.len), slot);
        assert_int_equal(tp_cluster_slot(tp_keys_idem_hot(&k2, b), k2.len), slot);
        assert_int_equal(tp_cluster_slot(tp_keys_idem_filter(&k2, b, 19675), k2.len), slot);
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
        counts[tp_cluster_slot(tp_keys_seq(&k, b), k.len) * 3 / 16384]++;
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

/* The filter shard's key is written by hand (a batch formats two per bet): the same text as
 * printf's for edge windows and shards, with and without cluster tags. */
static void test_idem_shard_by_hand(void **state)
{
    (void)state;
    const int64_t windows[] = {INT64_MIN, -1, 0, 19675, INT64_MAX};
    const int shards[] = {0, 1, 9, 10, 1023};
    const int buckets[] = {0, 7, 11};
    for (int mode = 0; mode < 2; mode++) {
        assert_int_equal(tp_keys_spread(mode == 0 ? 0 : 12), 0);
        for (size_t b = 0; b < sizeof buckets / sizeof buckets[0]; b++) {
            struct tp_key k, bal;
            tp_keys_bal(&bal, buckets[b]);
            bal.len -= 3; /* the bucket's prefix, tp:{bN}: or tp:{bN.K}: */
            for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++)
                for (size_t i = 0; i < sizeof shards / sizeof shards[0]; i++) {
                    char want[TP_KEYS_MAX];
                    int n = snprintf(want, sizeof want, "%.*sidemfilter:%lld:%d", (int)bal.len,
                                     bal.s, (long long)windows[w], shards[i]);
                    tp_keys_idem_shard(&k, buckets[b], windows[w], shards[i]);
                    assert_string_equal(k.s, want);
                    assert_int_equal(k.len, n);
                }
        }
    }
    assert_int_equal(tp_keys_spread(0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_of),   cmocka_unit_test(test_spread),
        cmocka_unit_test(test_bucket_keys), cmocka_unit_test(test_global_keys),
        cmocka_unit_test(test_longest_key), cmocka_unit_test(test_idem_shard_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
