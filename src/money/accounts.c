/*
 * Accounts, sessions, token checks and the API installer (see tickpool/money/accounts.h).
 *
 * Each request that needs Redis or argon2 is a small heap `struct op` walked through its steps
 * by callbacks on the worker's loop; it holds the http ctx until its single reply (a ctx whose
 * connection died meanwhile is freed by the router on that reply).
 *
 * Process-wide state (one worker per process): the token secret and the hashing pool.
 */
#include "tickpool/money/accounts.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/base/log.h"
#include "tickpool/money/password.h"
#include "tickpool/api/players.h"
#include "tickpool/net/router.h"
#include "tickpool/store/store.h"
#include "tickpool/money/token.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/workq.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MOD "accounts"
#define SECRET_KEY "tp:{g}:auth_secret"
#define SECRET_MAX 128
#define NAME_MIN 3
#define NAME_MAX 32
#define PW_MIN 8
#define BODY_MAX 4096
#define HASH_THREADS 2
#define HASH_QUEUE 256

static uint8_t secret[SECRET_MAX];
static size_t secret_len; /* 0 until known */
static struct tp_workq *pool;
static char dummy_hash[TP_PASSWORD_ENCODED_MAX]; /* verified for unknown users (timing) */
static ev_timer secret_timer;
static struct tp_worker *worker;

/* --- Token secret --- */

/* TICKPOOL_AUTH_SECRET: even-length hex of >= 16 bytes is decoded, anything else used raw. */
static int secret_from_env(void)
{
    const char *s = getenv("TICKPOOL_AUTH_SECRET");
    if (s == NULL || s[0] == '\0')
        return TP_ENOTFOUND;
    size_t n = strlen(s);
    if (n % 2 == 0 && n / 2 >= TP_TOKEN_MIN_SECRET && n / 2 <= SECRET_MAX &&
        tp_hex_decode(s, secret, n / 2) == 0) {
        secret_len = n / 2;
        return 0;
    }
    if (n < TP_TOKEN_MIN_SECRET || n > SECRET_MAX)
        tp_log_fatal(MOD, "TICKPOOL_AUTH_SECRET must hold 16-128 bytes (raw or hex)");
    memcpy(secret, s, n);
    secret_len = n;
    return 0;
}

static char candidate[65]; /* our random secret (hex), offered to Redis with SET NX */
static bool timer_active;

static void stop_secret_timer(struct ev_loop *loop)
{
    if (!timer_active)
        return;
    timer_active = false;
    ev_ref(loop); /* balance the ev_unref of init_worker before stopping (libev rule) */
    ev_timer_stop(loop, &secret_timer);
}

/* SET NX GET: nil means our candidate was stored, a string is the secret someone set first. */
static void on_secret(int err, const struct tp_store_reply *r, void *ud)
{
    (void)ud;
    if (err != 0 || secret_len != 0)
        return; /* the timer retries */
    size_t n = 0;
    const char *s = tp_reply_type(r) == TP_REPLY_NIL      ? candidate
                    : tp_reply_type(r) == TP_REPLY_STRING ? tp_reply_str(r, &n)
                                                          : NULL;
    if (s == candidate)
        n = 64;
    if (s == NULL || n != 64 || tp_hex_decode(s, secret, 32) != 0) {
        tp_log_error(MOD, "cannot read %s from Redis", SECRET_KEY);
        return;
    }
    secret_len = 32;
    stop_secret_timer(tp_worker_loop(worker));
}

static void try_secret(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    struct tp_store *st = tp_store_of(worker);
    if (secret_len != 0 || st == NULL || !tp_store_is_connected(st))
        return;
    (void)tp_store_command(st, on_secret, NULL, "SET %s %s NX GET", SECRET_KEY, candidate);
}

int tp_accounts_verify_token(const char *token, size_t len, int64_t *user_id, int64_t *expires_ms)
{
    if (secret_len == 0)
        return TP_EUNAVAIL;
    int64_t exp;
    return tp_token_verify(secret, secret_len, token, len, tp_now_ms(), user_id,
                           expires_ms != NULL ? expires_ms : &exp);
}

int tp_accounts_auth(struct tp_http_ctx *ctx, int64_t *user_id)
{
    const char *h = tp_http_ctx_header(ctx, "Authorization");
    int rc = TP_EINVAL;
    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n > 0 && t[n - 1] == ' ')
            n--;
        rc = tp_accounts_verify_token(t, n, user_id, NULL);
    }
    if (rc == TP_EUNAVAIL)
        tp_http_reply_error(ctx, 503, "unavailable", "authentication not ready, retry");
    else if (rc != 0)
        tp_http_reply_error(ctx, 401, "unauthorized", "missing, invalid or expired token");
    return rc;
}

/* --- Shared request plumbing --- */

struct op {
    struct tp_http_ctx *ctx;
    struct tp_worker *w;
    bool signup;
    char username[NAME_MAX + 1];
    char lower[NAME_MAX + 1];
    char pw[TP_PASSWORD_MAX + 1];
    size_t pwlen;
    char hash[TP_PASSWORD_ENCODED_MAX];
    int rc;
    bool known; /* sign-in: the user exists */
    bool taken; /* sign-up: the name was claimed already */
    int64_t uid;
    int64_t balance;
};

static void op_free(struct op *o)
{
    explicit_bzero(o->pw, sizeof(o->pw));
    free(o);
}

static void fail(struct op *o, int status, const char *code, const char *msg)
{
    if (status == 429)
        tp_http_ctx_add_header(o->ctx, "Retry-After", "1");
    tp_http_reply_error(o->ctx, status, code, msg);
    op_free(o);
}

static void unavailable(struct op *o, const char *what, int err)
{
    tp_log_warn(MOD, "%s failed\terr=%s", what, tp_strerror(err));
    fail(o, 503, "unavailable", "storage unavailable, retry");
}

/* Starts a writer on `b` in the client's format. */
static bool start_reply(struct tp_http_ctx *ctx, struct tp_buf *b, struct tp_wr *w)
{
    bool mp = tp_http_ctx_wants_msgpack(ctx);
    tp_buf_init(b);
    tp_wr_init(w, b, mp ? TP_FMT_MSGPACK : TP_FMT_JSON);
    return mp;
}

static void finish_reply(struct tp_http_ctx *ctx, int status, bool mp, struct tp_buf *b)
{
    tp_http_reply(ctx, status, mp ? "application/msgpack" : "application/json", tp_buf_ptr(b),
                  tp_buf_size(b));
    tp_buf_deinit(b);
}

static bool valid_username(const char *s, size_t n)
{
    if (n < NAME_MIN || n > NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/*
 * Reads {username, password} into a new op. Returns NULL after replying 400 when the body is
 * unusable. Sign-up checks the rules (invalid_username / weak_password); sign-in only the
 * shape, so any bad credential is the same 401 later.
 */
static struct op *read_credentials(struct tp_http_ctx *ctx, bool signup)
{
    size_t len;
    const char *body = tp_http_ctx_body(ctx, &len);
    enum tp_fmt fmt;
    struct tp_doc *doc = NULL;
    if (tp_http_ctx_body_format(ctx, &fmt) != 0 ||
        tp_doc_parse_ex(fmt, body, len, BODY_MAX, &doc, NULL, 0) != 0 ||
        tp_val_type(tp_doc_root(doc)) != TP_VAL_MAP) {
        tp_doc_free(doc);
        tp_http_reply_error(ctx, 400, "invalid_request",
                            "body must be an object with string username and password");
        return NULL;
    }
    const struct tp_val *root = tp_doc_root(doc);
    const char *name = NULL, *pw = NULL;
    size_t nlen = 0, pwlen = 0;
    bool name_ok =
        tp_val_get_str(root, "username", &name, &nlen) == 0 && valid_username(name, nlen);
    bool pw_ok = tp_val_get_str(root, "password", &pw, &pwlen) == 0;
    if (signup && !name_ok) {
        tp_doc_free(doc);
        tp_http_reply_error(ctx, 400, "invalid_username",
                            "username must be 3-32 characters of A-Z a-z 0-9 _ -");
        return NULL;
    }
    if (signup && (!pw_ok || pwlen < PW_MIN || pwlen > TP_PASSWORD_MAX)) {
        tp_doc_free(doc);
        tp_http_reply_error(ctx, 400, "weak_password", "password must be 8-1024 bytes");
        return NULL;
    }
    if (!signup && (!pw_ok || (name != NULL && nlen > NAME_MAX) || pwlen > TP_PASSWORD_MAX)) {
        tp_doc_free(doc);
        tp_http_reply_error(ctx, 400, "invalid_request",
                            "body must be an object with string username and password");
        return NULL;
    }
    struct op *o = tp_xcalloc(1, sizeof(*o));
    o->ctx = ctx;
    o->w = tp_http_ctx_worker(ctx);
    o->signup = signup;
    o->known = name_ok;
    if (name_ok) {
        memcpy(o->username, name, nlen);
        for (size_t i = 0; i < nlen; i++)
            o->lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    }
    memcpy(o->pw, pw, pwlen);
    o->pwlen = pwlen;
    tp_doc_free(doc);
    return o;
}

static int64_t bucket_of(const struct op *o, int64_t uid, int *nb)
{
    *nb = TP_MAX(tp_worker_config(o->w)->game.buckets, 1);
    return uid % *nb;
}

/* grant.lua "signup:<uid>" of the start balance: idempotent, so every caller may run it. */
static int run_grant(struct op *o, tp_store_cb cb)
{
    int nb;
    int64_t b = bucket_of(o, o->uid, &nb);
    char k[4][40], a[6][48];
    snprintf(k[0], sizeof(k[0]), "tp:{b%lld}:bal", (long long)b);
    snprintf(k[1], sizeof(k[1]), "tp:{b%lld}:grants", (long long)b);
    snprintf(k[2], sizeof(k[2]), "tp:{b%lld}:granted", (long long)b);
    snprintf(k[3], sizeof(k[3]), "tp:{b%lld}:outbox", (long long)b);
    snprintf(a[0], sizeof(a[0]), "%lld", (long long)o->uid);
    snprintf(a[1], sizeof(a[1]), "signup:%lld", (long long)o->uid);
    snprintf(a[2], sizeof(a[2]), "%lld", (long long)tp_worker_config(o->w)->game.start_balance);
    snprintf(a[3], sizeof(a[3]), "%lld", (long long)tp_now_ms());
    snprintf(a[4], sizeof(a[4]), "%lld", (long long)b);
    snprintf(a[5], sizeof(a[5]), "%d", nb);
    const char *argv[10] = {k[0], k[1], k[2], k[3], a[0], a[1], a[2], a[3], a[4], a[5]};
    return tp_store_script(tp_store_of(o->w), "grant", 4, 10, argv, NULL, cb, o);
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

static void write_token(struct tp_wr *w, int64_t uid, int64_t *exp_out)
{
    char tok[TP_TOKEN_LEN + 1];
    int64_t exp = tp_now_ms() + TP_ACCOUNTS_TOKEN_TTL_MS;
    TP_ASSERT(tp_token_sign(secret, secret_len, uid, exp, tok, sizeof(tok)) == 0);
    tp_wr_key(w, "token");
    tp_wr_str(w, tok);
    if (exp_out != NULL)
        *exp_out = exp;
}

/* --- POST /api/v1/accounts --- */

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
        fail(o, 503, "unavailable", "storage unavailable, retry");
        return;
    }
    if (o->taken) {
        fail(o, 409, "username_taken", "this username is taken");
        return;
    }
    if (bal < 0) { /* a fresh user id whose grant id already exists: never expected */
        fail(o, 503, "unavailable", "storage unavailable, retry");
        return;
    }
    struct tp_buf b;
    struct tp_wr w;
    bool mp = start_reply(o->ctx, &b, &w);
    tp_wr_map(&w, 4);
    tp_wr_key(&w, "user_id");
    tp_wr_int(&w, o->uid);
    tp_wr_key(&w, "username");
    tp_wr_str(&w, o->username);
    write_token(&w, o->uid, NULL);
    tp_wr_key(&w, "balance");
    tp_wr_int(&w, bal);
    finish_reply(o->ctx, 201, mp, &b);
    tp_log_info(MOD, "account created\tuser_id=%lld", (long long)o->uid);
    op_free(o);
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
     * sign-up after signup.lua), then answer 409. */
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
    char id[24], ukey[48], now[24];
    snprintf(id, sizeof(id), "%lld", (long long)o->uid);
    snprintf(ukey, sizeof(ukey), "tp:{g}:user:%lld", (long long)o->uid);
    snprintf(now, sizeof(now), "%lld", (long long)tp_now_ms());
    const char *argv[8] = {"tp:{g}:usernames", ukey, "tp:{g}:outbox", o->lower,
                           o->username,        id,   o->hash,         now};
    int rc = tp_store_script(tp_store_of(o->w), "signup", 3, 8, argv, NULL, signup_stored, o);
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
    int rc = tp_store_command(tp_store_of(o->w), signup_got_id, o, "INCR tp:{g}:user_seq");
    if (rc != 0)
        unavailable(o, "user_seq", rc);
}

static bool ready(struct tp_http_ctx *ctx)
{
    struct tp_worker *w = tp_http_ctx_worker(ctx);
    if (secret_len == 0 || pool == NULL || w == NULL || tp_store_of(w) == NULL ||
        !tp_store_is_connected(tp_store_of(w))) {
        tp_http_reply_error(ctx, 503, "unavailable", "storage unavailable, retry");
        return false;
    }
    return true;
}

static void post_accounts(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    if (!ready(ctx))
        return;
    struct op *o = read_credentials(ctx, true);
    if (o == NULL)
        return;
    if (tp_workq_submit(pool, hash_job, signup_hashed, o) != 0)
        fail(o, 429, "overloaded", "too many sign-ups in progress, retry shortly");
}

/* --- POST /api/v1/sessions --- */

static void verify_job(void *ud)
{
    struct op *o = ud;
    /* Unknown users cost one argon2 verification too, so timing does not reveal them. */
    o->rc = tp_password_verify(o->known ? o->hash : dummy_hash, o->pw, o->pwlen);
    explicit_bzero(o->pw, sizeof(o->pw));
}

static void session_granted(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    int64_t bal;
    if (!grant_balance(err, r, &bal)) {
        fail(o, 503, "unavailable", "storage unavailable, retry");
        return;
    }
    struct tp_buf b;
    struct tp_wr w;
    bool mp = start_reply(o->ctx, &b, &w);
    int64_t exp;
    tp_wr_map(&w, 3);
    tp_wr_key(&w, "user_id");
    tp_wr_int(&w, o->uid);
    write_token(&w, o->uid, &exp);
    tp_wr_key(&w, "expires_at");
    tp_wr_int(&w, exp);
    finish_reply(o->ctx, 200, mp, &b);
    op_free(o);
}

static void session_verified(int err, void *ud)
{
    struct op *o = ud;
    if (err != 0 || o->rc == TP_ENOMEM) {
        unavailable(o, "password verify", err != 0 ? err : o->rc);
        return;
    }
    if (!o->known || o->rc != 0) {
        fail(o, 401, "bad_credentials", "unknown username or wrong password");
        return;
    }
    /* Heal a sign-up interrupted before its grant (idempotent no-op otherwise). */
    int rc = run_grant(o, session_granted);
    if (rc != 0)
        unavailable(o, "grant", rc);
}

static void start_verify(struct op *o)
{
    if (tp_workq_submit(pool, verify_job, session_verified, o) != 0)
        fail(o, 429, "overloaded", "too many sign-ins in progress, retry shortly");
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
    int rc = tp_store_command(tp_store_of(o->w), session_user, o, "HMGET tp:{g}:user:%lld pw_hash",
                              (long long)o->uid);
    if (rc != 0)
        unavailable(o, "user lookup", rc);
}

static void post_sessions(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    if (!ready(ctx))
        return;
    struct op *o = read_credentials(ctx, false);
    if (o == NULL)
        return;
    if (!o->known) {
        start_verify(o);
        return;
    }
    int rc =
        tp_store_command(tp_store_of(o->w), session_id, o, "HGET tp:{g}:usernames %s", o->lower);
    if (rc != 0)
        unavailable(o, "username lookup", rc);
}

/* --- GET /api/v1/me --- */

static void me_balance(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || (tp_reply_type(r) != TP_REPLY_NIL && tp_reply_type(r) != TP_REPLY_STRING)) {
        unavailable(o, "balance", err);
        return;
    }
    const char *s = tp_reply_str(r, NULL);
    struct tp_buf b;
    struct tp_wr w;
    bool mp = start_reply(o->ctx, &b, &w);
    tp_wr_map(&w, 3);
    tp_wr_key(&w, "user_id");
    tp_wr_int(&w, o->uid);
    tp_wr_key(&w, "username");
    tp_wr_str(&w, o->username);
    tp_wr_key(&w, "balance");
    tp_wr_int(&w, s ? strtoll(s, NULL, 10) : 0);
    finish_reply(o->ctx, 200, mp, &b);
    op_free(o);
}

static void me_user(int err, const struct tp_store_reply *r, void *ud)
{
    struct op *o = ud;
    if (err != 0 || (tp_reply_type(r) != TP_REPLY_NIL && tp_reply_type(r) != TP_REPLY_STRING)) {
        unavailable(o, "user lookup", err);
        return;
    }
    size_t n;
    const char *name = tp_reply_str(r, &n);
    if (name == NULL || n > NAME_MAX) {
        /* A valid token for a user this Redis does not know (data reset). */
        fail(o, 401, "unauthorized", "unknown user");
        return;
    }
    memcpy(o->username, name, n + 1);
    int nb;
    int64_t b = bucket_of(o, o->uid, &nb);
    int rc = tp_store_command(tp_store_of(o->w), me_balance, o, "HGET tp:{b%lld}:bal %lld",
                              (long long)b, (long long)o->uid);
    if (rc != 0)
        unavailable(o, "balance", rc);
}

static void get_me(struct tp_http_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t uid;
    if (tp_accounts_auth(ctx, &uid) != 0)
        return;
    if (!ready(ctx))
        return;
    struct op *o = tp_xcalloc(1, sizeof(*o));
    o->ctx = ctx;
    o->w = tp_http_ctx_worker(ctx);
    o->uid = uid;
    int rc = tp_store_command(tp_store_of(o->w), me_user, o, "HGET tp:{g}:user:%lld username",
                              (long long)uid);
    if (rc != 0)
        unavailable(o, "user lookup", rc);
}

/* --- Installation --- */

static void on_drain(struct tp_worker *w, void *ud)
{
    (void)ud;
    stop_secret_timer(tp_worker_loop(w));
}

static void init_worker(struct tp_worker *w, void *ud)
{
    (void)ud;
    worker = w;
    if (secret_from_env() != 0) {
        uint8_t c[32];
        TP_ASSERT(tp_random_bytes(c, sizeof(c)) == 0);
        tp_hex_encode(c, sizeof(c), candidate);
        /* Every 20 ms until known: tokens answer 503 until then, so keep that window to a
         * few ms after Redis connects (SET NX GET is idempotent if two overlap). */
        ev_timer_init(&secret_timer, try_secret, 0.0, 0.02);
        ev_timer_start(tp_worker_loop(w), &secret_timer);
        ev_unref(tp_worker_loop(w)); /* never keep a draining loop alive */
        timer_active = true;
    }
    /* One ~30 ms hash per worker start, before accepting: the dummy for unknown users. */
    uint8_t rnd[16];
    char pw[33];
    TP_ASSERT(tp_random_bytes(rnd, sizeof(rnd)) == 0);
    tp_hex_encode(rnd, sizeof(rnd), pw);
    TP_ASSERT(tp_password_hash(pw, strlen(pw), dummy_hash, sizeof(dummy_hash)) == 0);
    pool = tp_workq_new(tp_worker_loop(w), HASH_THREADS, HASH_QUEUE);

    struct tp_router *r = tp_worker_router(w);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/accounts", post_accounts, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "POST", "/api/v1/sessions", post_sessions, NULL) == 0);
    TP_ASSERT(tp_router_add(r, "GET", "/api/v1/me", get_me, NULL) == 0);
    tp_players_register(w);
}

void tp_api_install(void)
{
    tp_worker_on_init(init_worker, NULL);
    tp_worker_on_drain(on_drain, NULL);
}
