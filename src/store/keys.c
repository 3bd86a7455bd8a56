/*
 * Redis key schema (see include/tickpool/store/keys.h and scripts/lua/README.md). Every key
 * name the C side uses is formatted here and nowhere else, so a layout change is one edit
 * (plus the scripts' KEYS checks and the README).
 */
#include "tickpool/store/keys.h"

#include "tickpool/base/common.h"

#include <stdarg.h>
#include <stdio.h>

#define BUCKET "tp:{b%d}:"

int tp_bucket_of(int64_t user_id, int buckets)
{
    /* config.c bounds game.buckets to [1, 16384]; a 0 here is a caller that skipped config. */
    TP_ASSERT(buckets > 0);
    return (int)(user_id % buckets);
}

/* Formats into k; a key that does not fit is a bug (bounds are in keys.h), not a runtime case. */
__attribute__((format(printf, 2, 3))) static const char *fmt(struct tp_key *k, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(k->s, sizeof(k->s), f, ap);
    va_end(ap);
    TP_ASSERT(n >= 0 && (size_t)n < sizeof(k->s));
    k->len = (size_t)n;
    return k->s;
}

/* --- Bucket keys --- */

const char *tp_keys_bal(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "bal", bucket);
}

const char *tp_keys_grants(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "grants", bucket);
}

const char *tp_keys_granted(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "granted", bucket);
}

const char *tp_keys_house(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "house", bucket);
}

const char *tp_keys_seq(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "seq", bucket);
}

const char *tp_keys_outbox(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "outbox", bucket);
}

const char *tp_keys_net(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "net", bucket);
}

const char *tp_keys_excl(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "excl", bucket);
}

const char *tp_keys_paused(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "paused", bucket);
}

const char *tp_keys_disabled(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "disabled", bucket);
}

const char *tp_keys_unsettled(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "unsettled", bucket);
}

const char *tp_keys_ref_idem(struct tp_key *k, int bucket, int64_t user_id, const char *key,
                             size_t len)
{
    TP_ASSERT(len <= TP_KEYS_IDEM_MAX);
    return fmt(k, BUCKET "idem:%lld:%.*s", bucket, (long long)user_id, (int)len, key);
}

const char *tp_keys_ubets(struct tp_key *k, int bucket, int64_t user_id)
{
    return fmt(k, BUCKET "ubets:%lld", bucket, (long long)user_id);
}

const char *tp_keys_idem(struct tp_key *k, int bucket, int64_t round_id)
{
    return fmt(k, BUCKET "idem:%lld", bucket, (long long)round_id);
}

const char *tp_keys_round_state(struct tp_key *k, int bucket, int64_t round_id)
{
    return fmt(k, BUCKET "round:%lld:state", bucket, (long long)round_id);
}

const char *tp_keys_pool(struct tp_key *k, int bucket, int64_t round_id)
{
    return fmt(k, BUCKET "pool:%lld", bucket, (long long)round_id);
}

const char *tp_keys_pool_pattern(struct tp_key *k, int bucket)
{
    return fmt(k, BUCKET "pool:*", bucket);
}

const char *tp_keys_bets(struct tp_key *k, int bucket, int64_t round_id, int band)
{
    return fmt(k, BUCKET "bets:%lld:%d", bucket, (long long)round_id, band);
}

const char *tp_keys_plan(struct tp_key *k, int bucket, int64_t round_id)
{
    return fmt(k, BUCKET "plan:%lld", bucket, (long long)round_id);
}

const char *tp_keys_paid(struct tp_key *k, int bucket, int64_t round_id)
{
    return fmt(k, BUCKET "paid:%lld", bucket, (long long)round_id);
}

const char *tp_keys_payout(struct tp_key *k, int bucket, int64_t round_id)
{
    return fmt(k, BUCKET "payout:%lld", bucket, (long long)round_id);
}

/* --- Global keys with an id --- */

const char *tp_keys_round(struct tp_key *k, int64_t round_id)
{
    return fmt(k, TP_KEYS_GLOBAL "round:%lld", (long long)round_id);
}

const char *tp_keys_seed(struct tp_key *k, int64_t round_id)
{
    return fmt(k, TP_KEYS_GLOBAL "seed:%lld", (long long)round_id);
}

const char *tp_keys_user(struct tp_key *k, int64_t user_id)
{
    return fmt(k, TP_KEYS_GLOBAL "user:%lld", (long long)user_id);
}
