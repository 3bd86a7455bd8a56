/*
 * Redis key schema (see include/tickpool/store/keys.h and scripts/lua/README.md). Every key
 * name the C side uses is formatted here and nowhere else, so a layout change is one edit
 * (plus the scripts' KEYS checks and the README).
 */
#include "tickpool/store/keys.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/store/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Most cells of the slot space buckets are spread over (cluster mode): with more buckets, several
 * share a cell of 16384 / 256 = 64 slots, which keeps the tag search short. */
#define SPREAD_CELLS 256

/* Cluster mode's bucket tags: bucket N's keys are tp:{bN.<spread[N]>}:…, else tp:{bN}:…. Set
 * once at start-up (tp_keys_spread), before any worker or thread exists; read-only after. */
static int32_t *spread;
static int spread_buckets;

int tp_bucket_of(int64_t user_id, int buckets)
{
    /* config.c bounds game.buckets to [1, 16384]; a 0 here is a caller that skipped config. */
    TP_ASSERT(buckets > 0);
    return (int)(user_id % buckets);
}

int tp_keys_spread(int buckets)
{
    if (buckets < 0 || buckets > TP_CLUSTER_SLOTS)
        return TP_EINVAL;
    if (buckets == 0) {
        free(spread);
        spread = NULL;
        spread_buckets = 0;
        return 0;
    }
    int32_t *t = tp_xmalloc((size_t)buckets * sizeof(*t));
    int cells = TP_MIN(buckets, SPREAD_CELLS);
    for (int b = 0; b < buckets; b++) {
        int cell = (int)((int64_t)b * cells / buckets);
        int lo = cell * TP_CLUSTER_SLOTS / cells, hi = (cell + 1) * TP_CLUSTER_SLOTS / cells;
        for (int32_t k = 0;; k++) { /* ~cells tries: CRC16 spreads short strings evenly */
            char tag[32];
            int n = snprintf(tag, sizeof(tag), "b%d.%d", b, (int)k);
            int slot = tp_cluster_slot(tag, (size_t)n);
            if (slot >= lo && slot < hi) {
                t[b] = k;
                break;
            }
        }
    }
    free(spread);
    spread = t;
    spread_buckets = buckets;
    return 0;
}

/*
 * Key names are appended by hand, not by printf: vsnprintf cost ~645 instructions a key at
 * 70d5996, and a bet batch formats ~15 keys plus one or two per bet (bench/README.md, "Session
 * 18"). Each piece checks its room; a key that does not fit is a bug (bounds are in keys.h), not
 * a runtime case. tests/unit/store/test_keys.c pins every name against printf's text of the old
 * format.
 */

/* Appends `len` bytes of `s`. */
static void put(struct tp_key *k, const char *s, size_t len)
{
    TP_ASSERT(len < sizeof(k->s) - k->len);
    memcpy(k->s + k->len, s, len);
    k->len += len;
}

/* Appends a string constant (its length is known at compile time). */
#define PUT_LIT(k, lit) put((k), "" lit, sizeof(lit) - 1)

/* Appends `v` in decimal, as printf's "%lld" (and "%d") writes it. */
static void put_int(struct tp_key *k, int64_t v)
{
    TP_ASSERT(sizeof(k->s) - k->len > TP_FMT_I64_MAX);
    k->len += tp_fmt_i64(k->s + k->len, v);
}

/* Terminates the key and returns its string. */
static const char *done(struct tp_key *k)
{
    k->s[k->len] = '\0';
    return k->s;
}

/* Starts k with tp:{bN}: or tp:{bN.K}: (cluster mode). */
static void prefix(struct tp_key *k, int bucket)
{
    k->len = 0;
    PUT_LIT(k, "tp:{b");
    put_int(k, bucket);
    if (spread != NULL) {
        TP_ASSERT(bucket >= 0 && bucket < spread_buckets);
        PUT_LIT(k, ".");
        put_int(k, spread[bucket]);
    }
    PUT_LIT(k, "}:");
}

/* The bucket's prefix, then the constant `name`. */
static const char *bucket_const(struct tp_key *k, int bucket, const char *name, size_t len)
{
    prefix(k, bucket);
    put(k, name, len);
    return done(k);
}
#define BUCKET_CONST(k, bucket, lit) bucket_const((k), (bucket), "" lit, sizeof(lit) - 1)

/* The bucket's prefix, then `name` (a constant ending in ':') and `id`. */
static const char *bucket_id(struct tp_key *k, int bucket, const char *name, size_t len, int64_t id)
{
    prefix(k, bucket);
    put(k, name, len);
    put_int(k, id);
    return done(k);
}
#define BUCKET_ID(k, bucket, lit, id) bucket_id((k), (bucket), "" lit, sizeof(lit) - 1, (id))

/* TP_KEYS_GLOBAL, then `name` (a constant ending in ':') and `id`. */
static const char *global_id(struct tp_key *k, const char *name, size_t len, int64_t id)
{
    k->len = 0;
    PUT_LIT(k, TP_KEYS_GLOBAL);
    put(k, name, len);
    put_int(k, id);
    return done(k);
}
#define GLOBAL_ID(k, lit, id) global_id((k), "" lit, sizeof(lit) - 1, (id))

/* --- Bucket keys --- */

const char *tp_keys_bal(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "bal");
}

const char *tp_keys_grants(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "grants");
}

const char *tp_keys_granted(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "granted");
}

const char *tp_keys_house(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "house");
}

const char *tp_keys_seq(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "seq");
}

const char *tp_keys_outbox(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "outbox");
}

const char *tp_keys_rejected(struct tp_key *k, const char *outbox)
{
    k->len = 0;
    put(k, outbox, strlen(outbox));
    PUT_LIT(k, TP_KEYS_REJECTED_SUFFIX);
    return done(k);
}

const char *tp_keys_net(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "net");
}

const char *tp_keys_netlog(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "netlog");
}

const char *tp_keys_excl(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "excl");
}

const char *tp_keys_paused(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "paused");
}

const char *tp_keys_disabled(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "disabled");
}

const char *tp_keys_unsettled(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "unsettled");
}

const char *tp_keys_ref_idem(struct tp_key *k, int bucket, int64_t user_id, const char *key,
                             size_t len)
{
    TP_ASSERT(len <= TP_KEYS_IDEM_MAX);
    BUCKET_ID(k, bucket, "idem:", user_id);
    PUT_LIT(k, ":");
    /* printf's "%.*s" stopped at a NUL inside the key: the same name for such a key. */
    put(k, key, strnlen(key, len));
    return done(k);
}

const char *tp_keys_ubets(struct tp_key *k, int bucket, int64_t user_id)
{
    return BUCKET_ID(k, bucket, "ubets:", user_id);
}

const char *tp_keys_idem(struct tp_key *k, int bucket, int64_t round_id)
{
    return BUCKET_ID(k, bucket, "idem:", round_id);
}

int64_t tp_keys_idem_window(int64_t now_ms, int ttl_s)
{
    TP_ASSERT(ttl_s > 0 && now_ms >= 0);
    return now_ms / ((int64_t)ttl_s * 1000);
}

const char *tp_keys_idem_hot(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "idemhot");
}

const char *tp_keys_idem_young(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "idemyoung");
}

const char *tp_keys_idem_shard(struct tp_key *k, int bucket, int64_t window, int shard)
{
    TP_ASSERT(shard >= 0 && shard < TP_KEYS_IDEM_SHARDS);
    BUCKET_ID(k, bucket, "idemfilter:", window);
    PUT_LIT(k, ":");
    put_int(k, shard);
    return done(k);
}

/* A batch formats one of these per distinct shard of its bets. */
const char *tp_keys_idem_slots(struct tp_key *k, int bucket, int shard)
{
    TP_ASSERT(shard >= 0 && shard < TP_KEYS_IDEM_SHARDS);
    return BUCKET_ID(k, bucket, "idemslots:", shard);
}

const char *tp_keys_idem_slots_aux(struct tp_key *k, int bucket, const char *name)
{
    BUCKET_CONST(k, bucket, "idemslots:");
    put(k, name, strlen(name));
    return done(k);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void tp_keys_idem_pos(int64_t user_id, const char *key, size_t len, struct tp_keys_idem_pos *out)
{
    TP_ASSERT(len <= TP_KEYS_IDEM_MAX);
    char field[TP_FMT_I64_MAX + 1 + TP_KEYS_IDEM_MAX];
    size_t n = tp_fmt_i64(field, user_id);
    field[n++] = ':';
    memcpy(field + n, key, len);
    uint8_t h[TP_SHA1_LEN];
    tp_sha1(field, n + len, h);
    uint32_t bits = be32(h + 4);
    out->word = be32(h);
    out->mask = 0;
    for (int i = 0; i < 5; i++, bits /= 32)
        out->mask |= 1u << (bits % 32);
    out->shard = (int)(be32(h + 8) % TP_KEYS_IDEM_SHARDS);
}

int64_t tp_keys_idem_shard_bytes(size_t filter, int buckets)
{
    TP_ASSERT(buckets > 0);
    /* Less 16 bytes: Redis stores a string with a header and a terminator, so a shard of
     * exactly 2^k bytes took the allocator's next size class (128 KiB took 160 KiB, 25 % of the
     * filter's memory for nothing); 16 bytes fewer fit the class. */
    int64_t day = ((int64_t)(filter / (size_t)buckets / TP_KEYS_IDEM_SHARDS) - 16) / 4 * 4;
    /* Three days of exactly the older per-day shard's size, so the upgrade's fold maps every
     * older word to its day (idem_slots.lua); 3 × 16 bytes under three shares, still inside the
     * allocator class of three shares with Redis's header (393,168 B in 384 KiB by default). */
    return 3 * (day >= 4 ? day : 4);
}

int64_t tp_keys_idem_byte_offset(uint32_t word, int64_t shard_bytes)
{
    TP_ASSERT(shard_bytes >= TP_KEYS_IDEM_TRIPLE_BYTES);
    return (int64_t)word % (shard_bytes / TP_KEYS_IDEM_TRIPLE_BYTES) * TP_KEYS_IDEM_TRIPLE_BYTES;
}

int tp_keys_idem_ttl_s(void)
{
    static int ttl; /* 0: not read yet; every thread reads the same value */
    int v = __atomic_load_n(&ttl, __ATOMIC_RELAXED);
    if (v == 0) {
        v = (int)tp_config_test_hook("TP_TEST_IDEM_TTL_S", 1, 86400, 86400);
        __atomic_store_n(&ttl, v, __ATOMIC_RELAXED);
    }
    return v;
}

const char *tp_keys_wsock(struct tp_key *k, int bucket, int64_t user_id)
{
    return BUCKET_ID(k, bucket, "wsock:", user_id);
}

const char *tp_keys_round_state(struct tp_key *k, int bucket, int64_t round_id)
{
    BUCKET_ID(k, bucket, "round:", round_id);
    PUT_LIT(k, ":state");
    return done(k);
}

const char *tp_keys_pool(struct tp_key *k, int bucket, int64_t round_id)
{
    return BUCKET_ID(k, bucket, "pool:", round_id);
}

const char *tp_keys_pool_pattern(struct tp_key *k, int bucket)
{
    return BUCKET_CONST(k, bucket, "pool:*");
}

const char *tp_keys_bets(struct tp_key *k, int bucket, int64_t round_id, int band)
{
    BUCKET_ID(k, bucket, "bets:", round_id);
    PUT_LIT(k, ":");
    put_int(k, band);
    return done(k);
}

const char *tp_keys_betl(struct tp_key *k, int bucket, int64_t round_id, int band)
{
    BUCKET_ID(k, bucket, "betl:", round_id);
    PUT_LIT(k, ":");
    put_int(k, band);
    return done(k);
}

const char *tp_keys_plan(struct tp_key *k, int bucket, int64_t round_id)
{
    return BUCKET_ID(k, bucket, "plan:", round_id);
}

const char *tp_keys_paid(struct tp_key *k, int bucket, int64_t round_id)
{
    return BUCKET_ID(k, bucket, "paid:", round_id);
}

const char *tp_keys_payout(struct tp_key *k, int bucket, int64_t round_id)
{
    return BUCKET_ID(k, bucket, "payout:", round_id);
}

int tp_keys_round_bucket(struct tp_key *out, int cap, int bucket, int64_t round_id, int nbands)
{
    TP_ASSERT(nbands >= 1 && nbands <= 64 && cap >= 6 + 2 * nbands);
    int n = 0;
    tp_keys_idem(&out[n++], bucket, round_id);
    tp_keys_round_state(&out[n++], bucket, round_id);
    tp_keys_pool(&out[n++], bucket, round_id);
    tp_keys_plan(&out[n++], bucket, round_id);
    tp_keys_paid(&out[n++], bucket, round_id);
    tp_keys_payout(&out[n++], bucket, round_id);
    for (int band = 0; band < nbands; band++) {
        tp_keys_bets(&out[n++], bucket, round_id, band);
        tp_keys_betl(&out[n++], bucket, round_id, band);
    }
    return n;
}

/* --- Global keys with an id --- */

const char *tp_keys_round(struct tp_key *k, int64_t round_id)
{
    return GLOBAL_ID(k, "round:", round_id);
}

const char *tp_keys_round_pg_at(struct tp_key *k, int64_t round_id)
{
    GLOBAL_ID(k, "round:", round_id);
    PUT_LIT(k, ":pg_at");
    return done(k);
}

const char *tp_keys_seed(struct tp_key *k, int64_t round_id)
{
    return GLOBAL_ID(k, "seed:", round_id);
}

const char *tp_keys_user(struct tp_key *k, int64_t user_id)
{
    return GLOBAL_ID(k, "user:", user_id);
}
