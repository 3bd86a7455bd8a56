/*
 * Accounts core: sign-up, sign-in, profiles and token checks (see tickpool/money/accounts.h).
 *
 * Each operation that needs Redis or argon2 is a small heap `struct op` walked through its steps
 * by callbacks on the worker's loop; it holds the caller's callback until its single outcome.
 *
 * Per-worker state (a worker slot, filled by tp_accounts_install's init hook): the token secret,
 * the hashing pool and the dummy hash; only the worker's loop thread touches it (the pool's jobs
 * get an op each).
 */
#include "tickpool/money/accounts.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/base/log.h"
#include "tickpool/money/access.h"
#include "tickpool/money/password.h"
#include "tickpool/money/token.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/workq.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "accounts"
#define SECRET_KEY TP_KEYS_AUTH_SECRET
#define SECRET_MAX 128
#define NAME_MIN 3
#define NAME_MAX 32
#define PW_MIN 8
#define HASH_THREADS 2
#define HASH_QUEUE 256
/* Tokens remembered as verified, per worker (a power of two): an HTTP bet carries its token on
 * every request, and checking one costs an HMAC-SHA256 plus a base64 round trip. */
#define TOKEN_CACHE 1024

/* A token that verified under this worker's secret, with what it says. */
struct token_seen {
    int64_t uid, exp; /* uid 0: empty slot */
    char token[TP_TOKEN_LEN];
};

struct accounts {
    struct tp_worker *w;
    uint8_t secret[SECRET_MAX];
    size_t secret_len; /* 0 until known */
    struct tp_workq *pool;
    char dummy_hash[TP_PASSWORD_ENCODED_MAX]; /* verified for unknown users (timing) */
    ev_timer secret_timer;
    bool timer_active;
    char candidate[65];      /* our random secret (hex), offered to Redis with SET NX */
    struct token_seen *seen; /* TOKEN_CACHE slots, direct-mapped by token_slot */
};

static const char *const names[] = {
    [TP_ACCOUNTS_OK] = "ok",
    [TP_ACCOUNTS_INVALID_REQUEST] = "invalid_request",
    [TP_ACCOUNTS_INVALID_USERNAME] = "invalid_username",
    [TP_ACCOUNTS_WEAK_PASSWORD] = "weak_password",
    [TP_ACCOUNTS_USERNAME_TAKEN] = "username_taken",
    [TP_ACCOUNTS_BAD_CREDENTIALS] = "bad_credentials",
    [TP_ACCOUNTS_UNKNOWN_USER] = "unauthorized",
    [TP_ACCOUNTS_OVERLOADED] = "overloaded",
    [TP_ACCOUNTS_UNAVAILABLE] = "unavailable",
    [TP_ACCOUNTS_DISABLED] = "account_disabled",
    [TP_ACCOUNTS_WRONG_PASSWORD] =
        "bad_credentials", /* the sign-in code: same meaning to a client */
};

const char *tp_accounts_code_name(enum tp_accounts_code c)
{
    return (unsigned)c < TP_ARRAY_LEN(names) ? names[c] : "unavailable";
}

/* The worker slot holding struct accounts (tp_accounts_install hands it out). */
static size_t slot = SIZE_MAX;

/* w's accounts state; NULL without a worker (unit tests) or before tp_accounts_install. */
static struct accounts *accounts_of(struct tp_worker *w)
{
    return w != NULL && slot != SIZE_MAX ? tp_worker_slot_get(w, slot) : NULL;
}

/* --- Token secret --- */

/* TICKPOOL_AUTH_SECRET: even-length hex of >= 16 bytes is decoded, anything else used raw. */
static int secret_from_env(struct accounts *a)
{
    const char *s = getenv("TICKPOOL_AUTH_SECRET");
    if (s == NULL || s[0] == '\0')
        return TP_ENOTFOUND;
    size_t n = strlen(s);
    if (n % 2 == 0 && n / 2 >= TP_TOKEN_MIN_SECRET && n / 2 <= SECRET_MAX &&
        tp_hex_decode(s, a->secret, n / 2) == 0) {
        a->secret_len = n / 2;
        return 0;
    }
    if (n < TP_TOKEN_MIN_SECRET || n > SECRET_MAX)
        tp_log_fatal(MOD, "TICKPOOL_AUTH_SECRET must hold 16-128 bytes (raw or hex)");
    memcpy(a->secret, s, n);
    a->secret_len = n;
    return 0;
}

static void stop_secret_timer(struct accounts *a)
{
    if (!a->timer_active)
        return;
    a->timer_active = false;
    struct ev_loop *loop = tp_worker_loop(a->w);
    ev_ref(loop); /* balance the ev_unref of init_worker before stopping (libev rule) */
    ev_timer_stop(loop, &a->secret_timer);
}

/* SET NX GET: nil means our candidate was stored, a string is the secret someone set first. */
static void on_secret(int err, const struct tp_store_reply *r, void *ud)
{
    struct accounts *a = ud;
    if (err != 0 || a->secret_len != 0)
        return; /* the timer retries */
    size_t n = 0;
    const char *s = tp_reply_type(r) == TP_REPLY_NIL      ? a->candidate
                    : tp_reply_type(r) == TP_REPLY_STRING ? tp_reply_str(r, &n)
                                                          : NULL;
    if (s == a->candidate)
        n = 64;
    if (s == NULL || n != 64 || tp_hex_decode(s, a->secret, 32) != 0) {
        tp_log_error(MOD, "cannot read %s from Redis", SECRET_KEY);
        return;
    }
    a->secret_len = 32;
    stop_secret_timer(a);
}

static void try_secret(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct accounts *a = t->data;
    struct tp_store *st = tp_store_of(a->w);
    if (a->secret_len != 0 || st == NULL || !tp_store_is_connected(st))
        return;
    (void)tp_store_command(st, on_secret, a, "SET %s %s NX GET", SECRET_KEY, a->candidate);
}

/* FNV-1a of the token: spreads the MAC characters over the slots. A forged token never enters
 * the cache, so a collision costs a full verification, nothing else. */
static size_t token_slot(const char *token)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < TP_TOKEN_LEN; i++)
        h = (h ^ (uint8_t)token[i]) * 16777619u;
    return h & (TOKEN_CACHE - 1);
}

/*
 * tp_token_verify is a pure function of the secret (fixed once known), the token and the clock,
 * so a token that verified once needs only its expiry checked again: the cache answers exactly
 * what the verification would. Compared in constant time, so timing tells nothing about how
 * much of a guess matches a cached token.
 */
static int verify_cached(struct accounts *a, const char *token, size_t len, int64_t *uid,
                         int64_t *exp)
{
    int64_t now = tp_now_ms();
    struct token_seen *t = NULL;
    if (len == TP_TOKEN_LEN) {
        t = &a->seen[token_slot(token)];
        if (t->uid != 0 && tp_memeq_ct(t->token, token, TP_TOKEN_LEN) == 0) {
            *uid = t->uid;
            *exp = t->exp;
            return now >= t->exp ? TP_ETIMEDOUT : 0;
        }
    }
    int rc = tp_token_verify(a->secret, a->secret_len, token, len, now, uid, exp);
    if (rc == 0 && t != NULL) {
        t->uid = *uid;
        t->exp = *exp;
        memcpy(t->token, token, TP_TOKEN_LEN);
    }
    return rc;
}

int tp_accounts_verify_token(struct tp_worker *w, const char *token, size_t len, int64_t *user_id,
                             int64_t *expires_ms)
{
    struct accounts *a = accounts_of(w);
    if (a == NULL || a->secret_len == 0)
        return TP_EUNAVAIL;
    int64_t uid, exp;
    int rc = verify_cached(a, token, len, &uid, &exp);
    if (rc != 0)
        return rc;
    switch (tp_access_check(w, uid, exp)) {
    case TP_ACCESS_OK:
        break;
    case TP_ACCESS_REVOKED:
        return TP_EINVAL;
    case TP_ACCESS_DISABLED:
        return TP_EPERM;
    case TP_ACCESS_UNKNOWN:
        return TP_EUNAVAIL;
    }
    if (user_id != NULL)
        *user_id = uid;
    if (expires_ms != NULL)
        *expires_ms = exp;
    return 0;
}

/* --- Shared operation plumbing --- */

struct op {
    struct accounts *a;
    tp_accounts_cb cb;
    void *ud;
    char username[NAME_MAX + 1];
    char lower[NAME_MAX + 1];
    char pw[TP_PASSWORD_MAX + 1];
    size_t pwlen;
    char npw[TP_PASSWORD_MAX + 1]; /* password change: the new password */
    size_t npwlen;
    char hash[TP_PASSWORD_ENCODED_MAX];
    char nhash[TP_PASSWORD_ENCODED_MAX]; /* password change: the new password's hash */
    int rc;
    bool known; /* sign-in: the user exists */
    bool taken; /* sign-up: the name was claimed already */
    int64_t uid;
    int64_t balance;
    int64_t started_ms; /* sign-in: when it began (its token's age counts from then) */
};

static struct tp_store *op_store(const struct op *o)
{
    return tp_store_of(o->a->w);
}

static const struct tp_config *op_config(const struct op *o)
{
    return tp_worker_config(o->a->w);
}

/* Delivers the outcome and frees the op: its callback runs exactly once, here. */
static void finish(struct op *o, struct tp_accounts_result *res)
{
    o->cb(res, o->ud);
    explicit_bzero(o->pw, sizeof(o->pw));
    explicit_bzero(o->npw, sizeof(o->npw));
    free(o);
}

static void fail(struct op *o, enum tp_accounts_code code)
{
    struct tp_accounts_result res = {.code = code};
    finish(o, &res);
}

static void unavailable(struct op *o, const char *what, int err)
{
    tp_log_warn(MOD, "%s failed\terr=%s", what, tp_strerror(err));
    fail(o, TP_ACCOUNTS_UNAVAILABLE);
}

static bool valid_username(const char *s, size_t n)
{
    if (s == NULL || n < NAME_MIN || n > NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

enum tp_accounts_code tp_accounts_check_signup(const struct tp_accounts_creds *c)
{
    if (!valid_username(c->username, c->username_len))
        return TP_ACCOUNTS_INVALID_USERNAME;
    if (c->password == NULL || c->password_len < PW_MIN || c->password_len > TP_PASSWORD_MAX)
        return TP_ACCOUNTS_WEAK_PASSWORD;
    return TP_ACCOUNTS_OK;
}

enum tp_accounts_code tp_accounts_check_signin(const struct tp_accounts_creds *c)
{
    if (c->password == NULL || (c->username != NULL && c->username_len > NAME_MAX) ||
        c->password_len > TP_PASSWORD_MAX)
        return TP_ACCOUNTS_INVALID_REQUEST;
    return TP_ACCOUNTS_OK;
}

bool tp_accounts_ready(struct tp_worker *w)
{
    struct accounts *a = accounts_of(w);
    return a != NULL && a->secret_len != 0 && a->pool != NULL && tp_store_of(w) != NULL &&
           tp_store_is_connected(tp_store_of(w));
}

/*
 * A new op for credentials that passed their check. A username that breaks the rules leaves
 * `known` false: sign-in then verifies against the dummy hash and answers BAD_CREDENTIALS.
 */
static struct op *new_op(struct tp_worker *w, const struct tp_accounts_creds *c, tp_accounts_cb cb,
                         void *ud)
{
    struct op *o = tp_xcalloc(1, sizeof(*o));
    o->a = accounts_of(w);
    o->cb = cb;
    o->ud = ud;
    o->known = valid_username(c->username, c->username_len);
    if (o->known) {
        memcpy(o->username, c->username, c->username_len);
        for (size_t i = 0; i < c->username_len; i++) {
            char ch = c->username[i];
            o->lower[i] = (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
        }
    }
    memcpy(o->pw, c->password, c->password_len);
    o->pwlen = c->password_len;
    o->started_ms = tp_now_ms();
    return o;
}

/* A new op acting on the account `user_id` (profile, password change, logout). */
static struct op *user_op(struct tp_worker *w, int64_t user_id, tp_accounts_cb cb, void *ud)
{
    struct op *o = tp_xcalloc(1, sizeof(*o));
    o->a = accounts_of(w);
    o->cb = cb;
    o->ud = ud;
    o->uid = user_id;
    return o;
}

/* grant.lua "signup:<uid>" of the start balance: idempotent, so every caller may run it. */
static int run_grant(struct op *o, tp_store_cb cb)
{
    const struct tp_config_game *g = &op_config(o)->game;
    char grant_id[32];
    snprintf(grant_id, sizeof(grant_id), "signup:%lld", (long long)o->uid);
    struct tp_script_grant_args a = {.user_id = o->uid,
                                     .grant_id = grant_id,
                                     .amount = g->start_balance,
                                     .now_ms = tp_now_ms(),
                                     .buckets = g->buckets};
    return tp_script_grant(op_store(o), &a, cb, o);
}

/* Reads grant.lua's {"ok", balance, replayed}; false for anything else (logged). */
static bool grant_balance(int err, const struct tp_store_reply *r, int64_t *bal)
{
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY || tp_reply_len(r) < 2)
        goto bad;
    const char *tag = tp_reply_str(tp_reply_at(r, 0), NULL);
    const char *code = tp_reply_str(tp_reply_at(r, 1), NULL);
    if (tag != NULL && strcmp(tag, "err") == 0 && code != NULL &&
        strcmp(code, "grant_conflict") == 0) {
        /* "signup:<uid>" was applied with another amount: game.start_balance changed since
         * this account was created. Its grant is done; the balance is not known here. */
        *bal = -1;
        return true;
    }
    if (tag == NULL || strcmp(tag, "ok") != 0 || tp_reply_len(r) != 3 ||
        tp_reply_type(tp_reply_at(r, 1)) != TP_REPLY_INTEGER)
        goto bad;
    *bal = tp_reply_integer(tp_reply_at(r, 1));
    return true;
bad:
    tp_log_warn(MOD, "start grant failed\terr=%s reply=\"%.100s\"", tp_strerror(err),
                err == 0 && tp_reply_str(r, NULL) ? tp_reply_str(r, NULL) : "");
    return false;
}

/* Signs a token for o->uid expiring at `expires_ms` into `tok` and fills the result's token and
 * expiry. A token's expiry is its identity for revocation (tickpool/money/access.h): revoked
 * when at or before the user's watermark. */
static void sign_token_exp(const struct op *o, int64_t expires_ms, char tok[TP_TOKEN_LEN + 1],
                           struct tp_accounts_result *res)
{
    res->expires_ms = expires_ms;
    TP_ASSERT(tp_token_sign(o->a->secret, o->a->secret_len, o->uid, res->expires_ms, tok,
                            TP_TOKEN_LEN + 1) == 0);
    res->token = tok;
}

/* --- Sign-up --- */

static void hash_job(void *ud)
{
    struct op *o = ud;
    o->rc = tp_password_hash(o->pw, o->pwlen, o->hash, sizeof(o->hash));
    explicit_bzero(o->pw, sizeof(o->pw));
}

static void signup_granted(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    int64_t bal;
    if (!grant_balance(err, r, &bal)) {
        fail(o, TP_ACCOUNTS_UNAVAILABLE);
        return;
    }
    if (o->taken) {
        fail(o, TP_ACCOUNTS_USERNAME_TAKEN);
        return;
    }
    if (bal < 0) { /* a fresh user id whose grant id already exists: never expected */
        fail(o, TP_ACCOUNTS_UNAVAILABLE);
        return;
    }
    char tok[TP_TOKEN_LEN + 1];
    struct tp_accounts_result res = {
        .code = TP_ACCOUNTS_OK, .user_id = o->uid, .username = o->username, .balance = bal};
    sign_token_exp(o, tp_now_ms() + TP_ACCOUNTS_TOKEN_TTL_MS, tok, &res);
    tp_log_info(MOD, "account created\tuser_id=%lld", (long long)o->uid);
    finish(o, &res);
}

static void signup_stored(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    const char *tag = err == 0 ? tp_reply_str(tp_reply_at(r, 0), NULL) : NULL;
    if (tag == NULL || tp_reply_type(tp_reply_at(r, 1)) != TP_REPLY_INTEGER ||
        (strcmp(tag, "ok") != 0 && strcmp(tag, "taken") != 0)) {
        if (err == 0 && tp_reply_type(r) == TP_REPLY_ERROR)
            tp_log_error(MOD, "signup script: %s", tp_reply_str(r, NULL));
        unavailable(o, "signup script", err);
        return;
    }
    o->taken = strcmp(tag, "taken") == 0;
    o->uid = tp_reply_integer(tp_reply_at(r, 1));
    /* Taken: re-apply that user's start grant (a no-op unless a crash interrupted its
     * sign-up after signup.lua), then answer username_taken. */
    int rc = run_grant(o, signup_granted);
    if (rc != 0)
        unavailable(o, "grant", rc);
}

static void signup_got_id(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_INTEGER || tp_reply_integer(r) < 1) {
        unavailable(o, "user_seq", err);
        return;
    }
    o->uid = tp_reply_integer(r);
    struct tp_script_signup_args a = {.lower = o->lower,
                                      .username = o->username,
                                      .user_id = o->uid,
                                      .pw_hash = o->hash,
                                      .now_ms = tp_now_ms()};
    int rc = tp_script_signup(op_store(o), &a, signup_stored, o);
    if (rc != 0)
        unavailable(o, "signup script", rc);
}

static void signup_hashed(int err, void *ud)
{
    struct op *o = ud;
    if (err != 0 || o->rc != 0) {
        unavailable(o, "password hash", err != 0 ? err : o->rc);
        return;
    }
    int rc = tp_store_command(op_store(o), signup_got_id, o, "INCR " TP_KEYS_USER_SEQ);
    if (rc != 0)
        unavailable(o, "user_seq", rc);
}

int tp_accounts_signup(struct tp_worker *w, const struct tp_accounts_creds *c, tp_accounts_cb cb,
                       void *ud)
{
    if (c == NULL || cb == NULL || tp_accounts_check_signup(c) != TP_ACCOUNTS_OK)
        return TP_EINVAL;
    if (!tp_accounts_ready(w))
        return TP_EUNAVAIL;
    struct op *o = new_op(w, c, cb, ud);
    if (tp_workq_submit(o->a->pool, hash_job, signup_hashed, o) != 0) {
        explicit_bzero(o->pw, sizeof(o->pw));
        free(o);
        return TP_EAGAIN;
    }
    return 0;
}

/* --- Sign-in --- */

static void verify_job(void *ud)
{
    struct op *o = ud;
    /* Unknown users cost one argon2 verification too, so timing does not reveal them. */
    o->rc = tp_password_verify(o->known ? o->hash : o->a->dummy_hash, o->pw, o->pwlen);
    explicit_bzero(o->pw, sizeof(o->pw));
}

static void session_granted(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    int64_t bal;
    if (!grant_balance(err, r, &bal)) {
        fail(o, TP_ACCOUNTS_UNAVAILABLE);
        return;
    }
    char tok[TP_TOKEN_LEN + 1];
    struct tp_accounts_result res = {.code = TP_ACCOUNTS_OK, .user_id = o->uid};
    /* Dated from when the sign-in began, not from now: a password change that lands while the
     * old password is being verified revokes this token too (its watermark is later). */
    sign_token_exp(o, o->started_ms + TP_ACCOUNTS_TOKEN_TTL_MS, tok, &res);
    finish(o, &res);
}

/* The account's disabled flag, read from Redis (the authority; the workers' copy may be a
 * moment behind): a disabled account gets no token. */
static void session_enabled(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_INTEGER) {
        unavailable(o, "disabled flag", err);
        return;
    }
    if (tp_reply_integer(r) != 0) {
        fail(o, TP_ACCOUNTS_DISABLED);
        return;
    }
    /* Heal a sign-up interrupted before its grant (idempotent no-op otherwise). */
    int rc = run_grant(o, session_granted);
    if (rc != 0)
        unavailable(o, "grant", rc);
}

static void session_verified(int err, void *ud)
{
    struct op *o = ud;
    if (err != 0 || o->rc == TP_ENOMEM) {
        unavailable(o, "password verify", err != 0 ? err : o->rc);
        return;
    }
    if (!o->known || o->rc != 0) {
        fail(o, TP_ACCOUNTS_BAD_CREDENTIALS);
        return;
    }
    /* Only after the password: whether an account is disabled is its owner's business. */
    struct tp_key k;
    int b = tp_bucket_of(o->uid, op_config(o)->game.buckets);
    int rc = tp_store_command(op_store(o), session_enabled, o, "HEXISTS %s %lld",
                              tp_keys_disabled(&k, b), (long long)o->uid);
    if (rc != 0)
        unavailable(o, "disabled flag", rc);
}

static int submit_verify(struct op *o)
{
    return tp_workq_submit(o->a->pool, verify_job, session_verified, o) != 0 ? TP_EAGAIN : 0;
}

/* A lookup step's verification: queue full here, after the submit returned, is an outcome. */
static void start_verify(struct op *o)
{
    if (submit_verify(o) != 0)
        fail(o, TP_ACCOUNTS_OVERLOADED);
}

static void session_user(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY) {
        unavailable(o, "user lookup", err);
        return;
    }
    size_t n;
    const char *h = tp_reply_str(tp_reply_at(r, 0), &n);
    if (h == NULL || n >= sizeof(o->hash)) {
        o->known = false;
    } else {
        memcpy(o->hash, h, n + 1);
    }
    start_verify(o);
}

static void session_id(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || (tp_reply_type(r) != TP_REPLY_NIL && tp_reply_type(r) != TP_REPLY_STRING)) {
        unavailable(o, "username lookup", err);
        return;
    }
    const char *id = tp_reply_str(r, NULL);
    o->uid = id ? strtoll(id, NULL, 10) : 0;
    if (o->uid < 1) {
        o->known = false;
        start_verify(o);
        return;
    }
    struct tp_key k;
    int rc = tp_store_command(op_store(o), session_user, o, "HMGET %s pw_hash",
                              tp_keys_user(&k, o->uid));
    if (rc != 0)
        unavailable(o, "user lookup", rc);
}

int tp_accounts_signin(struct tp_worker *w, const struct tp_accounts_creds *c, tp_accounts_cb cb,
                       void *ud)
{
    if (c == NULL || cb == NULL || tp_accounts_check_signin(c) != TP_ACCOUNTS_OK)
        return TP_EINVAL;
    if (!tp_accounts_ready(w))
        return TP_EUNAVAIL;
    struct op *o = new_op(w, c, cb, ud);
    int rc;
    if (!o->known) {
        rc = submit_verify(o);
    } else {
        rc =
            tp_store_command(op_store(o), session_id, o, "HGET " TP_KEYS_USERNAMES " %s", o->lower);
        if (rc != 0) {
            tp_log_warn(MOD, "username lookup failed\terr=%s", tp_strerror(rc));
            rc = TP_EUNAVAIL;
        }
    }
    if (rc != 0) {
        explicit_bzero(o->pw, sizeof(o->pw));
        free(o);
    }
    return rc;
}

/* --- Password change --- */

enum tp_accounts_code tp_accounts_check_password(const struct tp_accounts_creds *c)
{
    if (c->password == NULL || c->password_len > TP_PASSWORD_MAX)
        return TP_ACCOUNTS_INVALID_REQUEST;
    if (c->new_password == NULL || c->new_password_len < PW_MIN ||
        c->new_password_len > TP_PASSWORD_MAX)
        return TP_ACCOUNTS_WEAK_PASSWORD;
    return TP_ACCOUNTS_OK;
}

/* Both argon2 steps in one job: the old password against the stored hash, then (only if it
 * matched) the new one's hash. */
static void change_job(void *ud)
{
    struct op *o = ud;
    o->rc = tp_password_verify(o->hash, o->pw, o->pwlen);
    if (o->rc == 0)
        o->rc = tp_password_hash(o->npw, o->npwlen, o->nhash, sizeof(o->nhash));
    else if (o->rc != TP_ENOMEM)
        o->rc = TP_EINVAL;
    explicit_bzero(o->pw, sizeof(o->pw));
    explicit_bzero(o->npw, sizeof(o->npw));
}

static void change_stored(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    const char *tag = err == 0 ? tp_reply_str(tp_reply_at(r, 0), NULL) : NULL;
    if (tag != NULL && strcmp(tag, "err") == 0) {
        const char *c = tp_reply_str(tp_reply_at(r, 1), NULL);
        /* "changed": another change won meanwhile, so the old password is not current. */
        fail(o, c != NULL && strcmp(c, "unknown_user") == 0 ? TP_ACCOUNTS_UNKNOWN_USER
                                                            : TP_ACCOUNTS_WRONG_PASSWORD);
        return;
    }
    if (tag == NULL || strcmp(tag, "ok") != 0 ||
        tp_reply_type(tp_reply_at(r, 1)) != TP_REPLY_INTEGER) {
        if (err == 0 && tp_reply_type(r) == TP_REPLY_ERROR)
            tp_log_error(MOD, "password script: %s", tp_reply_str(r, NULL));
        unavailable(o, "password script", err);
        return;
    }
    char tok[TP_TOKEN_LEN + 1];
    struct tp_accounts_result res = {.code = TP_ACCOUNTS_OK, .user_id = o->uid};
    /* Past the watermark in force, which may be a moment ahead of this worker's clock. */
    sign_token_exp(
        o, TP_MAX(tp_now_ms() + TP_ACCOUNTS_TOKEN_TTL_MS, tp_reply_integer(tp_reply_at(r, 1)) + 1),
        tok, &res);
    tp_log_info(MOD, "password changed\tuser_id=%lld", (long long)o->uid);
    finish(o, &res);
}

static void change_hashed(int err, void *ud)
{
    struct op *o = ud;
    if (err != 0 || o->rc == TP_ENOMEM || (o->rc != 0 && o->rc != TP_EINVAL)) {
        unavailable(o, "password change hash", err != 0 ? err : o->rc);
        return;
    }
    if (o->rc != 0) {
        fail(o, TP_ACCOUNTS_WRONG_PASSWORD);
        return;
    }
    /* Every token signed so far expires at or before now + TTL: that is the watermark. */
    int64_t now = tp_now_ms();
    struct tp_script_password_args a = {.user_id = o->uid,
                                        .old_hash = o->hash,
                                        .new_hash = o->nhash,
                                        .before_ms = now + TP_ACCOUNTS_TOKEN_TTL_MS,
                                        .now_ms = now};
    int rc = tp_script_password(op_store(o), &a, change_stored, o);
    if (rc != 0)
        unavailable(o, "password script", rc);
}

/*
 * Reads the reply of an HGET on the user's record: the field (and *n) when present and at most
 * `max` bytes; otherwise finishes the op (UNAVAILABLE, or UNKNOWN_USER: a valid token of a user
 * this Redis does not know, after a data reset) and returns NULL.
 */
static const char *user_field(struct op *o, int err, const struct tp_store_reply *r, size_t max,
                              size_t *n)
{
    if (err != 0 || (tp_reply_type(r) != TP_REPLY_NIL && tp_reply_type(r) != TP_REPLY_STRING)) {
        unavailable(o, "user lookup", err);
        return NULL;
    }
    const char *v = tp_reply_str(r, n);
    if (v == NULL || *n > max) {
        fail(o, TP_ACCOUNTS_UNKNOWN_USER);
        return NULL;
    }
    return v;
}

static void change_user(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    size_t n;
    const char *h = user_field(o, err, r, sizeof(o->hash) - 1, &n);
    if (h == NULL)
        return;
    memcpy(o->hash, h, n + 1);
    if (tp_workq_submit(o->a->pool, change_job, change_hashed, o) != 0)
        fail(o, TP_ACCOUNTS_OVERLOADED);
}

int tp_accounts_change_password(struct tp_worker *w, int64_t user_id,
                                const struct tp_accounts_creds *c, tp_accounts_cb cb, void *ud)
{
    if (c == NULL || cb == NULL || user_id < 1 || tp_accounts_check_password(c) != TP_ACCOUNTS_OK)
        return TP_EINVAL;
    if (!tp_accounts_ready(w))
        return TP_EUNAVAIL;
    struct op *o = user_op(w, user_id, cb, ud);
    memcpy(o->pw, c->password, c->password_len);
    o->pwlen = c->password_len;
    memcpy(o->npw, c->new_password, c->new_password_len);
    o->npwlen = c->new_password_len;
    struct tp_key k;
    int rc =
        tp_store_command(op_store(o), change_user, o, "HGET %s pw_hash", tp_keys_user(&k, user_id));
    if (rc != 0) {
        tp_log_warn(MOD, "user lookup failed\terr=%s", tp_strerror(rc));
        explicit_bzero(o->pw, sizeof(o->pw));
        explicit_bzero(o->npw, sizeof(o->npw));
        free(o);
        return TP_EUNAVAIL;
    }
    return 0;
}

/* --- Logout --- */

static void logout_done(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    const char *tag = err == 0 ? tp_reply_str(tp_reply_at(r, 0), NULL) : NULL;
    if (tag == NULL || strcmp(tag, "ok") != 0) {
        if (err == 0 && tp_reply_type(r) == TP_REPLY_ERROR)
            tp_log_error(MOD, "revoke script: %s", tp_reply_str(r, NULL));
        unavailable(o, "revoke script", err);
        return;
    }
    struct tp_accounts_result res = {.code = TP_ACCOUNTS_OK, .user_id = o->uid};
    finish(o, &res);
}

int tp_accounts_logout(struct tp_worker *w, int64_t user_id, int64_t expires_ms, tp_accounts_cb cb,
                       void *ud)
{
    if (cb == NULL || user_id < 1 || expires_ms < 1 || !tp_accounts_ready(w))
        return TP_EUNAVAIL;
    struct op *o = user_op(w, user_id, cb, ud);
    struct tp_script_revoke_args a = {
        .user_id = user_id, .before_ms = expires_ms, .now_ms = tp_now_ms()};
    int rc = tp_script_revoke(op_store(o), &a, logout_done, o);
    if (rc != 0) {
        tp_log_warn(MOD, "revoke script failed\terr=%s", tp_strerror(rc));
        free(o);
        return TP_EUNAVAIL;
    }
    return 0;
}

/* --- Profile --- */

static void profile_balance(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || (tp_reply_type(r) != TP_REPLY_NIL && tp_reply_type(r) != TP_REPLY_STRING)) {
        unavailable(o, "balance", err);
        return;
    }
    const char *s = tp_reply_str(r, NULL);
    struct tp_accounts_result res = {.code = TP_ACCOUNTS_OK,
                                     .user_id = o->uid,
                                     .username = o->username,
                                     .balance = s ? strtoll(s, NULL, 10) : 0};
    finish(o, &res);
}

static void profile_user(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    size_t n;
    const char *name = user_field(o, err, r, NAME_MAX, &n);
    if (name == NULL)
        return;
    memcpy(o->username, name, n + 1);
    struct tp_key k;
    int b = tp_bucket_of(o->uid, op_config(o)->game.buckets);
    int rc = tp_store_command(op_store(o), profile_balance, o, "HGET %s %lld", tp_keys_bal(&k, b),
                              (long long)o->uid);
    if (rc != 0)
        unavailable(o, "balance", rc);
}

int tp_accounts_profile(struct tp_worker *w, int64_t user_id, tp_accounts_cb cb, void *ud)
{
    if (cb == NULL || !tp_accounts_ready(w))
        return TP_EUNAVAIL;
    struct op *o = user_op(w, user_id, cb, ud);
    struct tp_key k;
    int rc = tp_store_command(op_store(o), profile_user, o, "HGET %s username",
                              tp_keys_user(&k, user_id));
    if (rc != 0) {
        tp_log_warn(MOD, "user lookup failed\terr=%s", tp_strerror(rc));
        free(o);
        return TP_EUNAVAIL;
    }
    return 0;
}

/* --- Installation --- */

static void on_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct accounts *a = accounts_of(w);
    if (a != NULL)
        stop_secret_timer(a);
}

static void init_worker(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct accounts *a = tp_xcalloc(1, sizeof(*a));
    a->w = w;
    a->seen = tp_xcalloc(TOKEN_CACHE, sizeof(*a->seen));
    if (secret_from_env(a) != 0) {
        uint8_t c[32];
        TP_ASSERT(tp_random_bytes(c, sizeof(c)) == 0);
        tp_hex_encode(c, sizeof(c), a->candidate);
        /* Every 20 ms until known: tokens answer unavailable until then, so keep that window
         * to a few ms after Redis connects (SET NX GET is idempotent if two overlap). */
        ev_timer_init(&a->secret_timer, try_secret, 0.0, 0.02);
        a->secret_timer.data = a;
        ev_timer_start(tp_worker_loop(w), &a->secret_timer);
        ev_unref(tp_worker_loop(w)); /* never keep a draining loop alive */
        a->timer_active = true;
    }
    /* One ~30 ms hash per worker start, before accepting: the dummy for unknown users. */
    uint8_t rnd[16];
    char pw[33];
    TP_ASSERT(tp_random_bytes(rnd, sizeof(rnd)) == 0);
    tp_hex_encode(rnd, sizeof(rnd), pw);
    TP_ASSERT(tp_password_hash(pw, strlen(pw), a->dummy_hash, sizeof(a->dummy_hash)) == 0);
    a->pool = tp_workq_new(tp_worker_loop(w), HASH_THREADS, HASH_QUEUE);
    tp_worker_slot_set(w, slot, a);
}

void tp_accounts_install(void)
{
    tp_access_install();
    slot = tp_worker_slot_new();
    tp_worker_on_init(init_worker, NULL);
    tp_worker_on_drain(on_drain, NULL);
}
