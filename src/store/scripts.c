/*
 * Typed stubs of the Lua scripts (see include/tickpool/store/scripts.h).
 *
 * Every script has exactly one argument builder below, `<script>_args` (bet's is public as
 * tp_script_bet_call, for bench/loadgen), which pushes its KEYS (built by keys.c) and then its
 * ARGV in the order of the script's header comment into a struct tp_script_call; the stub only
 * runs what the builder produced. So a reordering in a script is one edit here, checked by
 * tests/unit/store/test_scripts.c, which calls the builders directly.
 */
#include "tickpool/store/scripts.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/store/keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- The argument builder --- */

static void start(struct tp_script_call *a, const char *script)
{
    a->script = script;
    a->nkeys = a->argc = 0;
    a->argv = a->_argv;
    a->len = a->_len;
    a->_buf = a->_inline;
    a->_used = 0;
    a->_bufcap = sizeof(a->_inline);
    a->_cap = TP_SCRIPT_ARGS_MAX;
    a->_heap = NULL;
}

/* As start, with room for `args` arguments and `bytes` of copied ones on the heap. */
static void start_heap(struct tp_script_call *a, const char *script, int args, size_t bytes)
{
    start(a, script);
    a->_heap = tp_xmalloc((size_t)args * (sizeof(char *) + sizeof(size_t)) + bytes);
    a->argv = a->_heap;
    a->len = (size_t *)(a->argv + args);
    a->_buf = (char *)(a->len + args);
    a->_bufcap = bytes;
    a->_cap = args;
}

void tp_script_call_release(struct tp_script_call *a)
{
    free(a->_heap);
    a->_heap = NULL;
}

static void push(struct tp_script_call *a, const char *p, size_t len)
{
    TP_ASSERT(a->argc < a->_cap);
    a->argv[a->argc] = p;
    a->len[a->argc] = len;
    a->argc++;
}

/* Copies `len` bytes into the buffer and pushes them. */
static void push_copy(struct tp_script_call *a, const char *p, size_t len)
{
    TP_ASSERT(len < a->_bufcap - a->_used);
    char *d = a->_buf + a->_used;
    memcpy(d, p, len);
    d[len] = '\0';
    a->_used += len + 1;
    push(a, d, len);
}

/* A KEYS entry; every key is pushed before the first ARGV entry. */
static void key(struct tp_script_call *a, const char *k)
{
    TP_ASSERT(a->nkeys == a->argc);
    push_copy(a, k, strlen(k));
    a->nkeys++;
}

static void arg_int(struct tp_script_call *a, int64_t v)
{
    char num[TP_FMT_I64_MAX];
    push_copy(a, num, tp_fmt_i64(num, v));
}

/* A borrowed string (NUL-terminated). */
static void arg_str(struct tp_script_call *a, const char *s)
{
    push(a, s, strlen(s));
}

/* A comma list of integers ("" for none), the form round_boundary/round_cancel take. */
static void arg_list(struct tp_script_call *a, const int64_t *v, int n)
{
    char list[TP_SCRIPT_BANDS_MAX * 21];
    size_t off = 0;
    list[0] = '\0';
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%lld", i ? "," : "",
                                (long long)v[i]);
    TP_ASSERT(off < sizeof(list));
    push_copy(a, list, off);
}

static void fence(struct tp_script_call *a, const struct tp_script_fence *f)
{
    arg_str(a, f->holder);
    arg_int(a, f->epoch);
}

static int run(struct tp_store *store, struct tp_script_call *a, tp_store_cb cb, void *ud)
{
    if (store == NULL)
        return TP_EUNAVAIL;
    return tp_store_script(store, a->script, a->nkeys, a->argc, a->argv, a->len, cb, ud);
}

/* --- Bucket scripts: money --- */

/* bench/lua/bet.lua header (the one-bet reference): 11 KEYS in the player's bucket, 13 ARGV. Its
 * request hash (ARGV 6) is the lowercase hex SHA-256 of "v1|<round_id>|<band>|<stake>" in
 * decimal, what bet.lua's records compare (and bet_batch.lua's records before session 9 hold),
 * so its text never changes. Only this call sends it: the server's bet_batch.lua compares band
 * and stake instead. */
void tp_script_bet_call(const struct tp_script_bet_args *b, struct tp_script_call *a)
{
    struct tp_key k;
    int n = tp_bucket_of(b->user_id, b->buckets);
    char canon[3 + 3 * TP_FMT_I64_MAX + 2], hash[2 * TP_SHA256_LEN + 1];
    memcpy(canon, "v1|", 3);
    size_t cl = 3;
    cl += tp_fmt_i64(canon + cl, b->round_id);
    canon[cl++] = '|';
    cl += tp_fmt_i64(canon + cl, b->band);
    canon[cl++] = '|';
    cl += tp_fmt_i64(canon + cl, b->stake);
    uint8_t h[TP_SHA256_LEN];
    tp_sha256(canon, cl, h);
    tp_hex_encode(h, sizeof(h), hash);
    start(a, "bet");
    key(a, tp_keys_bal(&k, n));
    key(a, tp_keys_ref_idem(&k, n, b->user_id, b->idem_key, b->idem_len));
    key(a, tp_keys_round_state(&k, n, b->round_id));
    key(a, tp_keys_pool(&k, n, b->round_id));
    key(a, tp_keys_bets(&k, n, b->round_id, b->band));
    key(a, tp_keys_outbox(&k, n));
    key(a, tp_keys_seq(&k, n));
    key(a, tp_keys_ubets(&k, n, b->user_id));
    key(a, tp_keys_net(&k, n));
    key(a, tp_keys_excl(&k, n));
    key(a, tp_keys_paused(&k, n));
    arg_int(a, b->user_id);
    arg_int(a, b->round_id);
    arg_int(a, b->band);
    arg_int(a, b->stake);
    push(a, b->idem_key, b->idem_len);
    push_copy(a, hash, 2 * TP_SHA256_LEN);
    arg_int(a, b->now_ms);
    arg_int(a, b->nbands);
    arg_int(a, b->min_stake);
    arg_int(a, b->max_stake);
    arg_int(a, b->idem_ttl_s);
    arg_int(a, n);
    arg_int(a, b->buckets);
}

/* scripts/lua/bet_batch.lua header: 16 KEYS, one bets key per distinct band and one ubets key per
 * distinct player (first appearance order), then the filter shard (three days) of each distinct
 * shard; 10 ARGV, then 5 per bet (the filter word, mask and shard as 10 bytes: a
 * decimal cost the script two strtod calls each, bench/README.md "Session 9", the shard's a
 * pattern and an ARGV entry, "Session 15"; then, with a shard size, one byte holding the
 * length of the decimal that follows, the first byte of the word's triple in such a shard, then
 * its last byte, that + 11, in decimal: the GETRANGE the script reads today's and yesterday's
 * word with, which it otherwise formats per bet, "Session 22"; GETRANGE instead of BITFIELD_RO,
 * "Session 25"; one key a shard for both days, "Session 28: both filter days in one key"). Distinct
 * bands, players and shards are found by a scan of the bets before each (n ≤ TP_SCRIPT_BATCH_MAX:
 * cheaper than a table). The filter positions are hashed here, in C, not by the script: Redis runs
 * the script single-threaded. */
static void bet_batch_args(const struct tp_script_bet_batch_args *b, struct tp_script_call *a)
{
    struct tp_key k;
    int n = b->bucket;
    size_t cnt = b->n;
    int64_t win = tp_keys_idem_window(b->now_ms, b->idem_ttl_s);
    struct tp_keys_idem_pos pos[TP_SCRIPT_BATCH_MAX];
    for (size_t i = 0; i < cnt; i++)
        tp_keys_idem_pos(b->bets[i].user_id, b->bets[i].idem_key, b->bets[i].idem_len, &pos[i]);
    /* Keys: 16 + ≤ 3 per bet, each < TP_KEYS_MAX; numbers: ≤ 10 + 5 per bet, each < 24 bytes
     * (a bet's position and range, 11 + 2 × ≤ 7 bytes: a shard is at most
     * TP_SCRIPT_IDEM_SHARD_MAX, checked by the stub; counted as two). */
    start_heap(a, "bet_batch", (int)(26 + 8 * cnt),
               (16 + 3 * cnt) * TP_KEYS_MAX + (10 + 5 * cnt) * 24);
    key(a, tp_keys_bal(&k, n));
    key(a, tp_keys_idem(&k, n, b->round_id));
    key(a, tp_keys_round_state(&k, n, b->round_id));
    key(a, tp_keys_pool(&k, n, b->round_id));
    key(a, tp_keys_outbox(&k, n));
    key(a, tp_keys_seq(&k, n));
    key(a, tp_keys_netlog(&k, n));
    key(a, tp_keys_excl(&k, n));
    key(a, tp_keys_paused(&k, n));
    key(a, tp_keys_disabled(&k, n));
    key(a, tp_keys_idem_hot(&k, n));
    key(a, tp_keys_idem_shard(&k, n, win - 1, TP_KEYS_IDEM_SHARDS - 1));
    key(a, tp_keys_idem_shard(&k, n, win, TP_KEYS_IDEM_SHARDS - 1));
    key(a, tp_keys_idem_slots(&k, n, TP_KEYS_IDEM_SHARDS - 1));
    key(a, tp_keys_idem_shard(&k, n, win + 1, TP_KEYS_IDEM_SHARDS - 1));
    key(a, tp_keys_idem_young(&k, n));
    for (size_t i = 0; i < cnt; i++) {
        size_t j = 0;
        while (j < i && b->bets[j].band != b->bets[i].band)
            j++;
        if (j == i)
            key(a, tp_keys_betl(&k, n, b->round_id, b->bets[i].band));
    }
    for (size_t i = 0; i < cnt; i++) {
        size_t j = 0;
        while (j < i && b->bets[j].user_id != b->bets[i].user_id)
            j++;
        if (j == i)
            key(a, tp_keys_ubets(&k, n, b->bets[i].user_id));
    }
    for (size_t i = 0; i < cnt; i++) {
        size_t j = 0;
        while (j < i && pos[j].shard != pos[i].shard)
            j++;
        if (j == i)
            key(a, tp_keys_idem_slots(&k, n, pos[i].shard));
    }
    arg_int(a, b->round_id);
    arg_int(a, b->now_ms);
    arg_int(a, b->nbands);
    arg_int(a, b->min_stake);
    arg_int(a, b->max_stake);
    arg_int(a, b->idem_ttl_s);
    arg_int(a, n);
    arg_int(a, b->buckets);
    arg_int(a, (int64_t)cnt);
    /* "1": no filter read; "0:<shard bytes>": the offsets below are for shards of that size;
     * "0": none given. */
    bool offsets = !b->skip_filter && b->shard_bytes > 0;
    char flag[2 + TP_FMT_I64_MAX] = "0:";
    if (b->skip_filter)
        arg_str(a, "1");
    else if (offsets)
        push_copy(a, flag, 2 + tp_fmt_i64(flag + 2, b->shard_bytes));
    else
        arg_str(a, "0");
    for (size_t i = 0; i < cnt; i++) {
        const struct tp_script_batch_bet *x = &b->bets[i];
        arg_int(a, x->user_id);
        arg_int(a, x->band);
        arg_int(a, x->stake);
        push(a, x->idem_key, x->idem_len);
        char wms[11 + 2 * TP_FMT_I64_MAX];
        for (int j = 0; j < 4; j++) {
            wms[j] = (char)(unsigned char)(pos[i].word >> (24 - 8 * j));
            wms[4 + j] = (char)(unsigned char)(pos[i].mask >> (24 - 8 * j));
        }
        wms[8] = (char)(unsigned char)(pos[i].shard >> 8);
        wms[9] = (char)(unsigned char)pos[i].shard;
        size_t len = 10;
        if (offsets) {
            int64_t from = tp_keys_idem_byte_offset(pos[i].word, b->shard_bytes);
            size_t digits = tp_fmt_i64(wms + 11, from);
            wms[10] = (char)digits;
            len = 11 + digits;
            len += tp_fmt_i64(wms + len, from + TP_KEYS_IDEM_TRIPLE_BYTES - 1);
        }
        push_copy(a, wms, len);
    }
}

/* An idempotency key as bet_batch.lua takes it: 1..TP_KEYS_IDEM_MAX bytes of printable ASCII
 * (0x21..0x7e; the outbox line and Postgres's text column depend on it). Checked here, where the
 * call is built, rather than by a pattern in the script, where Redis spent about 80 instructions
 * per byte on it (bench/README.md "Session 9"); the script keeps the length and newline checks. */
static bool idem_key_ok(const char *k, size_t len)
{
    if (k == NULL || len < 1 || len > TP_KEYS_IDEM_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e)
            return false;
    return true;
}

int tp_script_bet_batch(struct tp_store *store, const struct tp_script_bet_batch_args *b,
                        tp_store_cb cb, void *ud)
{
    if (b->n < 1 || b->n > TP_SCRIPT_BATCH_MAX || b->buckets < 1 || b->bucket < 0 ||
        b->bucket >= b->buckets || b->idem_ttl_s < 1 || b->now_ms < 0 || b->shard_bytes < 0 ||
        (b->shard_bytes > 0 && (b->shard_bytes % TP_KEYS_IDEM_TRIPLE_BYTES != 0 ||
                                b->shard_bytes > TP_SCRIPT_IDEM_SHARD_MAX)))
        return TP_EINVAL;
    for (size_t i = 0; i < b->n; i++)
        if (!idem_key_ok(b->bets[i].idem_key, b->bets[i].idem_len) || b->bets[i].user_id < 1 ||
            tp_bucket_of(b->bets[i].user_id, b->buckets) != b->bucket)
            return TP_EINVAL;
    struct tp_script_call a;
    bet_batch_args(b, &a);
    int rc = run(store, &a, cb, ud);
    tp_script_call_release(&a);
    return rc;
}

/* scripts/lua/grant.lua header: 4 KEYS in the player's bucket, 6 ARGV (9 with an admin action). */
static void grant_args(const struct tp_script_grant_args *g, struct tp_script_call *a)
{
    struct tp_key k;
    int n = tp_bucket_of(g->user_id, g->buckets);
    start(a, "grant");
    key(a, tp_keys_bal(&k, n));
    key(a, tp_keys_grants(&k, n));
    key(a, tp_keys_granted(&k, n));
    key(a, tp_keys_outbox(&k, n));
    arg_int(a, g->user_id);
    arg_str(a, g->grant_id);
    arg_int(a, g->amount);
    arg_int(a, g->now_ms);
    arg_int(a, n);
    arg_int(a, g->buckets);
    if (g->admin != NULL) {
        arg_str(a, g->admin->action_id);
        arg_str(a, g->admin->actor);
        arg_str(a, g->admin->reason);
    }
}

int tp_script_grant(struct tp_store *store, const struct tp_script_grant_args *g, tp_store_cb cb,
                    void *ud)
{
    struct tp_script_call a;
    grant_args(g, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/exclusion.lua header: 1 KEYS in the player's bucket, 5 ARGV. */
static void exclusion_args(const struct tp_script_exclusion_args *x, struct tp_script_call *a)
{
    struct tp_key k;
    int n = tp_bucket_of(x->user_id, x->buckets);
    start(a, "exclusion");
    key(a, tp_keys_excl(&k, n));
    arg_int(a, x->user_id);
    arg_int(a, x->days);
    arg_int(a, x->now_ms);
    arg_int(a, n);
    arg_int(a, x->buckets);
}

int tp_script_exclusion(struct tp_store *store, const struct tp_script_exclusion_args *x,
                        tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    exclusion_args(x, &a);
    return run(store, &a, cb, ud);
}

/* --- Global scripts: accounts --- */

/* scripts/lua/pause.lua header: 2 global KEYS, 5 ARGV. */
static void pause_args(const struct tp_script_pause_args *p, struct tp_script_call *a)
{
    start(a, "pause");
    key(a, TP_KEYS_PAUSE);
    key(a, TP_KEYS_GLOBAL_OUTBOX);
    arg_str(a, p->resume ? "resume" : "pause");
    arg_int(a, p->now_ms);
    arg_str(a, p->admin.action_id);
    arg_str(a, p->admin.actor);
    arg_str(a, p->admin.reason);
}

int tp_script_pause(struct tp_store *store, const struct tp_script_pause_args *p, tp_store_cb cb,
                    void *ud)
{
    struct tp_script_call a;
    pause_args(p, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/signup.lua header: 3 global KEYS, 5 ARGV. */
static void signup_args(const struct tp_script_signup_args *s, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "signup");
    key(a, TP_KEYS_USERNAMES);
    key(a, tp_keys_user(&k, s->user_id));
    key(a, TP_KEYS_GLOBAL_OUTBOX);
    arg_str(a, s->lower);
    arg_str(a, s->username);
    arg_int(a, s->user_id);
    arg_str(a, s->pw_hash);
    arg_int(a, s->now_ms);
}

int tp_script_signup(struct tp_store *store, const struct tp_script_signup_args *s, tp_store_cb cb,
                     void *ud)
{
    struct tp_script_call a;
    signup_args(s, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/revoke.lua header: the revoked ZSET; user, watermark, now, channel. */
static void revoke_args(const struct tp_script_revoke_args *r, struct tp_script_call *a)
{
    start(a, "revoke");
    key(a, TP_KEYS_REVOKED);
    arg_int(a, r->user_id);
    arg_int(a, r->before_ms);
    arg_int(a, r->now_ms);
    arg_str(a, TP_KEYS_BCAST_CHANNEL);
}

int tp_script_revoke(struct tp_store *store, const struct tp_script_revoke_args *r, tp_store_cb cb,
                     void *ud)
{
    struct tp_script_call a;
    revoke_args(r, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/password.lua header: user, revoked, outbox; user, old, new, watermark, now,
 * channel. */
static void password_args(const struct tp_script_password_args *p, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "password");
    key(a, tp_keys_user(&k, p->user_id));
    key(a, TP_KEYS_REVOKED);
    key(a, TP_KEYS_GLOBAL_OUTBOX);
    arg_int(a, p->user_id);
    arg_str(a, p->old_hash);
    arg_str(a, p->new_hash);
    arg_int(a, p->before_ms);
    arg_int(a, p->now_ms);
    arg_str(a, TP_KEYS_BCAST_CHANNEL);
}

int tp_script_password(struct tp_store *store, const struct tp_script_password_args *p,
                       tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    password_args(p, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/account_flag.lua header: 2 KEYS in the user's bucket, 9 ARGV. */
static void account_flag_args(const struct tp_script_account_flag_args *f, struct tp_script_call *a)
{
    struct tp_key k;
    int n = tp_bucket_of(f->user_id, f->buckets);
    start(a, "account_flag");
    key(a, tp_keys_disabled(&k, n));
    key(a, tp_keys_outbox(&k, n));
    arg_int(a, f->user_id);
    arg_int(a, f->disabled ? 1 : 0);
    arg_int(a, f->now_ms);
    arg_int(a, n);
    arg_int(a, f->buckets);
    arg_str(a, TP_KEYS_BCAST_CHANNEL);
    arg_str(a, f->admin.action_id);
    arg_str(a, f->admin.actor);
    arg_str(a, f->admin.reason);
}

int tp_script_account_flag(struct tp_store *store, const struct tp_script_account_flag_args *f,
                           tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    account_flag_args(f, &a);
    return run(store, &a, cb, ud);
}

/* --- Global scripts: the leader (fenced by the lease) --- */

/* scripts/lua/lease.lua header: lease, epoch; holder, epoch, PX (0 = release). */
static void lease_args(const struct tp_script_lease_args *l, struct tp_script_call *a)
{
    start(a, "lease");
    key(a, TP_KEYS_LEASE);
    key(a, TP_KEYS_EPOCH);
    arg_str(a, l->holder);
    arg_int(a, l->epoch);
    arg_int(a, l->px_ms);
}

int tp_script_lease(struct tp_store *store, const struct tp_script_lease_args *l, tp_store_cb cb,
                    void *ud)
{
    struct tp_script_call a;
    lease_args(l, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/tick.lua header: lease, ticks; fence, MAXLEN, then ts, price pairs. */
static void tick_args(const struct tp_script_tick_args *t, struct tp_script_call *a)
{
    start(a, "tick");
    key(a, TP_KEYS_LEASE);
    key(a, TP_KEYS_TICKS);
    fence(a, &t->fence);
    arg_int(a, t->maxlen);
    for (size_t i = 0; i < t->n; i++) {
        arg_int(a, t->ts[i]);
        arg_int(a, t->price[i]);
    }
}

int tp_script_tick(struct tp_store *store, const struct tp_script_tick_args *t, tp_store_cb cb,
                   void *ud)
{
    if (t->n == 0 || t->n > TP_SCRIPT_TICKS_MAX)
        return TP_EINVAL;
    struct tp_script_call a;
    tick_args(t, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/round_boundary.lua header: 12 global KEYS (a part left out names round 0's; the
 * last is the operator's pause, which the open obeys); fence, then the close, lock and open
 * parts (id 0: left out). */
static void round_boundary_args(const struct tp_script_round_boundary_args *b,
                                struct tp_script_call *a)
{
    static const struct tp_script_round_close_args no_close = {0};
    static const struct tp_script_round_lock_args no_lock = {0};
    static const struct tp_script_round_open_args no_open = {.seed_hex = "", .seed_hash = ""};
    const struct tp_script_round_close_args *c = b->close ? b->close : &no_close;
    const struct tp_script_round_lock_args *l = b->lock ? b->lock : &no_lock;
    const struct tp_script_round_open_args *o = b->open ? b->open : &no_open;
    struct tp_key k;
    int64_t edges[TP_SCRIPT_BANDS_MAX];
    for (int i = 0; i < o->n_edges; i++)
        edges[i] = o->edges_bps[i];
    start(a, "round_boundary");
    key(a, TP_KEYS_LEASE);
    key(a, TP_KEYS_CURRENT);
    key(a, TP_KEYS_GLOBAL_OUTBOX);
    key(a, TP_KEYS_ROUNDS);
    key(a, TP_KEYS_UNFINISHED);
    key(a, tp_keys_round(&k, c->id));
    key(a, tp_keys_round(&k, l->id));
    key(a, tp_keys_round(&k, l->id > 0 ? l->id - 1 : 0));
    key(a, tp_keys_seed(&k, l->id > 0 ? l->id - 1 : 0));
    key(a, tp_keys_round(&k, o->id));
    key(a, tp_keys_seed(&k, o->id));
    key(a, TP_KEYS_PAUSE);
    fence(a, &b->fence);
    arg_int(a, c->id);
    arg_int(a, c->close_price);
    arg_int(a, c->winning_band);
    arg_int(a, c->total);
    arg_int(a, c->winning_stake);
    arg_int(a, c->rake);
    arg_int(a, c->pot);
    arg_int(a, c->refund_all);
    arg_list(a, c->pools, c->npools);
    arg_int(a, l->id);
    arg_int(a, l->lock_price);
    arg_int(a, o->id);
    arg_int(a, o->opens_at);
    arg_int(a, o->locks_at);
    arg_int(a, o->closes_at);
    arg_str(a, o->seed_hex);
    arg_str(a, o->seed_hash);
    arg_int(a, o->vol_ppb);
    arg_int(a, o->rake_bps);
    arg_list(a, edges, o->n_edges);
    arg_int(a, o->tick_ms);
    arg_int(a, o->betting_ms);
    arg_int(a, o->min_stake);
    arg_int(a, o->max_stake);
    arg_int(a, o->id_floor);
}

int tp_script_round_boundary(struct tp_store *store, const struct tp_script_round_boundary_args *b,
                             tp_store_cb cb, void *ud)
{
    if ((b->close == NULL && b->lock == NULL && b->open == NULL) ||
        (b->open != NULL && (b->open->n_edges < 0 || b->open->n_edges >= TP_SCRIPT_BANDS_MAX)) ||
        (b->close != NULL && (b->close->npools < 1 || b->close->npools > TP_SCRIPT_BANDS_MAX)))
        return TP_EINVAL;
    struct tp_script_call a;
    round_boundary_args(b, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/ws_sockets.lua header: the user's socket set; op, socket, cap, TTL. */
static void ws_sockets_args(const struct tp_script_ws_sockets_args *w, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "ws_sockets");
    key(a, tp_keys_wsock(&k, w->bucket, w->user_id));
    arg_str(a, w->op);
    arg_str(a, w->socket);
    arg_int(a, w->cap);
    arg_int(a, w->ttl_ms);
}

int tp_script_ws_sockets(struct tp_store *store, const struct tp_script_ws_sockets_args *w,
                         tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    ws_sockets_args(w, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/round_cancel.lua header: lease, round, current, unfinished; fence, id, total, pools,
 * reason, edges, locks_at, betting_ms. */
static void round_cancel_args(const struct tp_script_round_cancel_args *c, struct tp_script_call *a)
{
    struct tp_key k;
    int64_t edges[TP_SCRIPT_BANDS_MAX];
    for (int i = 0; i < c->nedges; i++)
        edges[i] = c->edges[i];
    start(a, "round_cancel");
    key(a, TP_KEYS_LEASE);
    key(a, tp_keys_round(&k, c->id));
    key(a, TP_KEYS_CURRENT);
    key(a, TP_KEYS_UNFINISHED);
    fence(a, &c->fence);
    arg_int(a, c->id);
    arg_int(a, c->total);
    arg_list(a, c->pools, c->npools);
    arg_str(a, c->reason);
    arg_list(a, edges, c->nedges);
    arg_int(a, c->locks_at);
    arg_int(a, c->betting_ms);
}

int tp_script_round_cancel(struct tp_store *store, const struct tp_script_round_cancel_args *c,
                           tp_store_cb cb, void *ud)
{
    if (c->npools < 1 || c->npools > TP_SCRIPT_BANDS_MAX || c->nedges != c->npools - 1)
        return TP_EINVAL;
    struct tp_script_call a;
    round_cancel_args(c, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/round_final.lua header: lease, round, seed, outbox, unfinished; fence, id, Σ T_b, Σ
 * paid_b. */
static void round_final_args(const struct tp_script_round_final_args *f, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "round_final");
    key(a, TP_KEYS_LEASE);
    key(a, tp_keys_round(&k, f->id));
    key(a, tp_keys_seed(&k, f->id));
    key(a, TP_KEYS_GLOBAL_OUTBOX);
    key(a, TP_KEYS_UNFINISHED);
    fence(a, &f->fence);
    arg_int(a, f->id);
    arg_int(a, f->sum_t);
    arg_int(a, f->sum_paid);
}

int tp_script_round_final(struct tp_store *store, const struct tp_script_round_final_args *f,
                          tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    round_final_args(f, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/round_index.lua header: lease, unfinished, scan mark, a round per id; fence, mark,
 * ids. */
static void round_index_args(const struct tp_script_round_index_args *x, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "round_index");
    key(a, TP_KEYS_LEASE);
    key(a, TP_KEYS_UNFINISHED);
    key(a, TP_KEYS_UNFINISHED_SCAN);
    for (int i = 0; i < x->n; i++)
        key(a, tp_keys_round(&k, x->ids[i]));
    fence(a, &x->fence);
    arg_int(a, x->mark);
    for (int i = 0; i < x->n; i++)
        arg_int(a, x->ids[i]);
}

_Static_assert(6 + 2 * TP_SCRIPT_INDEX_MAX <= TP_SCRIPT_ARGS_MAX, "a round_index page fits");

int tp_script_round_index(struct tp_store *store, const struct tp_script_round_index_args *x,
                          tp_store_cb cb, void *ud)
{
    if (x->n < 0 || x->n > TP_SCRIPT_INDEX_MAX)
        return TP_EINVAL;
    struct tp_script_call a;
    round_index_args(x, &a);
    return run(store, &a, cb, ud);
}

/* --- Bucket scripts: round state and settlement (not fenced: monotonic instead) --- */

/* scripts/lua/bucket_state.lua header: state copy, unsettled; id, state, locks_at, grace_ms,
 * and the round's rules: nbands, min_stake, max_stake. */
static void bucket_state_args(const struct tp_script_bucket_state_args *s, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "bucket_state");
    key(a, tp_keys_round_state(&k, s->bucket, s->id));
    key(a, tp_keys_unsettled(&k, s->bucket));
    arg_int(a, s->id);
    arg_str(a, s->state);
    arg_int(a, s->locks_at);
    arg_int(a, s->grace_ms);
    arg_int(a, s->nbands);
    arg_int(a, s->min_stake);
    arg_int(a, s->max_stake);
}

int tp_script_bucket_state(struct tp_store *store, const struct tp_script_bucket_state_args *s,
                           tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    bucket_state_args(s, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/bucket_plan.lua header: plan; band, pot, W, refund_all, nbands. */
static void bucket_plan_args(const struct tp_script_bucket_plan_args *p, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "bucket_plan");
    key(a, tp_keys_plan(&k, p->bucket, p->id));
    arg_int(a, p->winning_band);
    arg_int(a, p->pot);
    arg_int(a, p->winning_stake);
    arg_int(a, p->refund_all);
    arg_int(a, p->nbands);
}

int tp_script_bucket_plan(struct tp_store *store, const struct tp_script_bucket_plan_args *p,
                          tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    bucket_plan_args(p, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/settle_page.lua header: plan, bal, paid, payout, outbox, one bets hash per band (an
 * older version's), net, one bets list per band; id, most bets to credit, now_ms, time budget
 * in µs. */
static void settle_page_args(const struct tp_script_settle_page_args *p, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "settle_page");
    key(a, tp_keys_plan(&k, p->bucket, p->id));
    key(a, tp_keys_bal(&k, p->bucket));
    key(a, tp_keys_paid(&k, p->bucket, p->id));
    key(a, tp_keys_payout(&k, p->bucket, p->id));
    key(a, tp_keys_outbox(&k, p->bucket));
    for (int band = 0; band < p->nbands; band++)
        key(a, tp_keys_bets(&k, p->bucket, p->id, band));
    key(a, tp_keys_net(&k, p->bucket)); /* leaderboard: credits add to net winnings */
    for (int band = 0; band < p->nbands; band++)
        key(a, tp_keys_betl(&k, p->bucket, p->id, band));
    arg_int(a, p->id);
    arg_int(a, p->max_bets);
    arg_int(a, p->now_ms);
    arg_int(a, p->budget_us);
}

int tp_script_settle_page(struct tp_store *store, const struct tp_script_settle_page_args *p,
                          tp_store_cb cb, void *ud)
{
    if (p->nbands < 1 || p->nbands > TP_SCRIPT_BANDS_MAX || p->max_bets < 1 || p->budget_us < 0)
        return TP_EINVAL;
    struct tp_script_call a;
    settle_page_args(p, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/net_fold.lua header: net, netlog; limit. */
static void net_fold_args(const struct tp_script_net_fold_args *f, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "net_fold");
    key(a, tp_keys_net(&k, f->bucket));
    key(a, tp_keys_netlog(&k, f->bucket));
    arg_int(a, f->limit);
}

int tp_script_net_fold(struct tp_store *store, const struct tp_script_net_fold_args *f,
                       tp_store_cb cb, void *ud)
{
    TP_ASSERT(f->limit >= 0);
    struct tp_script_call a;
    net_fold_args(f, &a);
    return run(store, &a, cb, ud);
}

/* scripts/lua/settle_finish.lua header: plan, pool, house, unsettled, state copy, outbox;
 * id, final state, now_ms. */
static void settle_finish_args(const struct tp_script_settle_finish_args *f,
                               struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "settle_finish");
    key(a, tp_keys_plan(&k, f->bucket, f->id));
    key(a, tp_keys_pool(&k, f->bucket, f->id));
    key(a, tp_keys_house(&k, f->bucket));
    key(a, tp_keys_unsettled(&k, f->bucket));
    key(a, tp_keys_round_state(&k, f->bucket, f->id));
    key(a, tp_keys_outbox(&k, f->bucket));
    arg_int(a, f->id);
    arg_str(a, f->final_state);
    arg_int(a, f->now_ms);
}

int tp_script_settle_finish(struct tp_store *store, const struct tp_script_settle_finish_args *f,
                            tp_store_cb cb, void *ud)
{
    struct tp_script_call a;
    settle_finish_args(f, &a);
    return run(store, &a, cb, ud);
}

/* A record field "<user_id>:<key>": its user id and key, or false. */
static bool unindex_field(const struct tp_script_unindex_field *f, int64_t *user, const char **key,
                          size_t *len)
{
    const char *colon = f->len > 0 ? memchr(f->s, ':', f->len) : NULL;
    char num[TP_FMT_I64_MAX];
    size_t ulen = colon != NULL ? (size_t)(colon - f->s) : 0;
    if (ulen == 0 || ulen >= sizeof(num))
        return false;
    memcpy(num, f->s, ulen);
    num[ulen] = '\0';
    *key = colon + 1;
    *len = f->len - ulen - 1;
    return tp_parse_i64(num, user) && *user > 0 && *len >= 1 && *len <= TP_KEYS_IDEM_MAX;
}

/* scripts/lua/idem_unindex.lua header: hot index, its young part, the filter's shard 0 and last
 * shard, then the shards of the fields in order of first appearance, then the round's records;
 * round, bucket, day, days, since, n, then per field the field and its filter position (hashed
 * here, in C, as for bets). The fields were checked by
 * tp_script_idem_unindex. */
static void idem_unindex_args(const struct tp_script_idem_unindex_args *u, struct tp_script_call *a)
{
    struct tp_key k;
    int n = u->n, per = u->two ? 2 : 1;
    start_heap(a, "idem_unindex", 11 + (1 + 4) * n,
               (size_t)(5 + n) * TP_KEYS_MAX + (size_t)(6 + 3 * n) * 24);
    struct tp_keys_idem_pos *pos = tp_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*pos));
    for (int i = 0; i < n; i++) {
        int64_t user;
        const char *key;
        size_t len;
        bool ok = unindex_field(&u->fields[i], &user, &key, &len);
        TP_ASSERT(ok);
        tp_keys_idem_pos(user, key, len, &pos[i]);
    }
    key(a, tp_keys_idem_hot(&k, u->bucket));
    key(a, tp_keys_idem_young(&k, u->bucket));
    key(a, tp_keys_idem_slots(&k, u->bucket, 0));
    key(a, tp_keys_idem_slots(&k, u->bucket, TP_KEYS_IDEM_SHARDS - 1));
    /* Distinct shards: a bitmap, as n may be thousands. */
    uint8_t seen[TP_KEYS_IDEM_SHARDS / 8] = {0};
    for (int i = 0; i < n; i++) {
        int s = pos[i].shard;
        if (seen[s / 8] & (1u << (s % 8)))
            continue;
        seen[s / 8] |= (uint8_t)(1u << (s % 8));
        key(a, tp_keys_idem_slots(&k, u->bucket, s));
    }
    key(a, tp_keys_idem(&k, u->bucket, u->id));
    arg_int(a, u->id);
    arg_int(a, u->bucket);
    arg_int(a, u->window);
    arg_int(a, per);
    arg_int(a, u->since_ms);
    arg_int(a, n);
    for (int i = 0; i < n; i++) {
        push(a, u->fields[i].s, u->fields[i].len);
        arg_int(a, pos[i].word);
        arg_int(a, pos[i].mask);
        arg_int(a, pos[i].shard);
    }
    free(pos);
}

int tp_script_idem_unindex(struct tp_store *store, const struct tp_script_idem_unindex_args *u,
                           tp_store_cb cb, void *ud)
{
    if (u->bucket < 0 || u->id < 1 || u->window < (u->two ? 1 : 0) || u->n < 0 ||
        u->n > TP_SCRIPT_UNINDEX_MAX || (u->n > 0 && u->fields == NULL))
        return TP_EINVAL;
    for (int i = 0; i < u->n; i++) {
        int64_t user;
        const char *key;
        size_t len;
        if (!unindex_field(&u->fields[i], &user, &key, &len))
            return TP_EINVAL;
    }
    struct tp_script_call a;
    idem_unindex_args(u, &a);
    int rc = run(store, &a, cb, ud);
    tp_script_call_release(&a);
    return rc;
}

/* scripts/lua/idem_slots.lua header: the mode's first key (the zeroing's mask, the fold's
 * scratch, or the last shard), shard 0, the zeroed marker, then per shard the shard (and for a
 * build its older per-day shards of day - 1 .. day + 1), or for a probe the older per-day shard 0
 * and last shard of those days; mode, bytes, day, bucket, span, expiry or margin, now. */
static void idem_slots_args(const struct tp_script_idem_slots_args *f, struct tp_script_call *a)
{
    struct tp_key k;
    bool build = f->mode == TP_IDEM_SLOTS_BUILD, probe = f->mode == TP_IDEM_SLOTS_PROBE;
    int nkeys = 3 + (probe ? 6 : (build ? 4 : 1) * f->n);
    start_heap(a, "idem_slots", nkeys + 7, (size_t)nkeys * TP_KEYS_MAX + 7 * 24);
    if (probe) {
        key(a, tp_keys_idem_slots(&k, f->bucket, TP_KEYS_IDEM_SHARDS - 1));
    } else if (build) {
        key(a, tp_keys_idem_slots_aux(&k, f->bucket, "fold"));
    } else {
        char mask[16] = "mask:";
        size_t len = 5 + tp_fmt_i64(mask + 5, (f->day + 1) % 3);
        mask[len] = '\0';
        key(a, tp_keys_idem_slots_aux(&k, f->bucket, mask));
    }
    key(a, tp_keys_idem_slots(&k, f->bucket, 0));
    key(a, tp_keys_idem_slots_aux(&k, f->bucket, "zeroed"));
    if (probe) {
        for (int j = 0; j < 3; j++) {
            key(a, tp_keys_idem_shard(&k, f->bucket, f->day - 1 + j, 0));
            key(a, tp_keys_idem_shard(&k, f->bucket, f->day - 1 + j, TP_KEYS_IDEM_SHARDS - 1));
        }
    } else {
        for (int s = f->first; s < f->first + f->n; s++) {
            key(a, tp_keys_idem_slots(&k, f->bucket, s));
            for (int j = 0; build && j < 3; j++)
                key(a, tp_keys_idem_shard(&k, f->bucket, f->day - 1 + j, s));
        }
    }
    arg_str(a, build ? "build" : probe ? "probe" : "zero");
    arg_int(a, f->shard_bytes);
    arg_int(a, f->day);
    arg_int(a, f->bucket);
    arg_int(a, f->span_ms);
    arg_int(a, f->extra_ms);
    arg_int(a, f->now_ms);
}

int tp_script_idem_slots(struct tp_store *store, const struct tp_script_idem_slots_args *f,
                         tp_store_cb cb, void *ud)
{
    bool probe = f->mode == TP_IDEM_SLOTS_PROBE;
    if (f->bucket < 0 || f->day < 1 || f->shard_bytes < TP_KEYS_IDEM_TRIPLE_BYTES ||
        f->shard_bytes > TP_SCRIPT_IDEM_SHARD_MAX ||
        f->shard_bytes % TP_KEYS_IDEM_TRIPLE_BYTES != 0 || f->span_ms < 1000 || f->extra_ms < 1 ||
        f->now_ms < 0 ||
        (!probe && (f->first < 0 || f->n < 1 || f->first + f->n > TP_KEYS_IDEM_SHARDS)))
        return TP_EINVAL;
    struct tp_script_call a;
    idem_slots_args(f, &a);
    int rc = run(store, &a, cb, ud);
    tp_script_call_release(&a);
    return rc;
}

/* --- The Postgres writer --- */

/* scripts/lua/park.lua header: the outbox, its rejected stream; group, src_id, error, look-back,
 * then the entry's field pairs (borrowed). */
static void park_args(const struct tp_script_park_args *p, struct tp_script_call *a)
{
    struct tp_key k;
    start(a, "park");
    key(a, p->stream);
    key(a, tp_keys_rejected(&k, p->stream));
    arg_str(a, p->group);
    arg_str(a, p->src_id);
    arg_str(a, p->error);
    arg_int(a, p->look_back);
    for (size_t i = 0; i < 2 * p->nfields; i++)
        arg_str(a, p->fields[i]);
}

int tp_script_park(struct tp_store *store, const struct tp_script_park_args *p, tp_store_cb cb,
                   void *ud)
{
    if (p->nfields < 1 || p->nfields > TP_SCRIPT_PARK_FIELDS_MAX || p->look_back < 0 ||
        p->look_back > TP_SCRIPT_PARK_LOOK_BACK_MAX ||
        strlen(p->stream) + sizeof(TP_KEYS_REJECTED_SUFFIX) > TP_KEYS_MAX)
        return TP_EINVAL;
    struct tp_script_call a;
    park_args(p, &a);
    return run(store, &a, cb, ud);
}
