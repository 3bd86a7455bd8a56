/*
 * Accounts core: sign-up, sign-in, profiles and bearer-token checks, with no transport (the HTTP
 * handlers are tickpool/api/accounts.h; the WebSocket session verifies tokens here too).
 *
 * Usernames are 3–32 of [A-Za-z0-9_-], unique case-insensitively ("Alice" and "alice" are one
 * account; sign-in accepts any case) and shown as first registered. Passwords are 8–1024 bytes,
 * hashed with argon2id on a small thread pool (src/net/workq.c), never on the event loop.
 *
 * Redis (global hash tag {g}): tp:{g}:user_seq (INCR → user id), tp:{g}:usernames (HASH
 * lower-cased name → id), tp:{g}:user:<id> (HASH username, pw_hash, created_at), a `user` event
 * in tp:{g}:outbox; all but the id written at once by scripts/lua/signup.lua. The start balance
 * is grant.lua with grant id "signup:<id>", re-applied idempotently by a retried sign-up
 * (username_taken) and by every sign-in, so a crash between the two scripts never loses the grant.
 *
 * Tokens (tickpool/money/token.h) live 24 h and are checked in memory, revocations and disabled
 * accounts included (tickpool/money/access.h). The signing secret is the
 * env variable TICKPOOL_AUTH_SECRET (hex, or raw bytes; ≥ 16 bytes) or else one random secret
 * shared by every process and host through Redis (SET tp:{g}:auth_secret NX GET) at worker start.
 */
#ifndef TP_ACCOUNTS_H
#define TP_ACCOUNTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/* Token lifetime. */
#define TP_ACCOUNTS_TOKEN_TTL_MS (24LL * 3600 * 1000)

/* Outcome codes; TP_ACCOUNTS_OK is 0. The contract's name of each: tp_accounts_code_name. */
enum tp_accounts_code {
    TP_ACCOUNTS_OK = 0,
    TP_ACCOUNTS_INVALID_REQUEST,  /* sign-in: no password string, or an impossible length */
    TP_ACCOUNTS_INVALID_USERNAME, /* sign-up: username breaks the rules above */
    TP_ACCOUNTS_WEAK_PASSWORD,    /* sign-up: password not 8–1024 bytes */
    TP_ACCOUNTS_USERNAME_TAKEN,   /* sign-up: the name belongs to another account */
    TP_ACCOUNTS_BAD_CREDENTIALS,  /* sign-in: unknown username or wrong password */
    TP_ACCOUNTS_UNKNOWN_USER,     /* profile: a valid token of a user Redis does not know */
    TP_ACCOUNTS_OVERLOADED,       /* the hashing queue is full */
    TP_ACCOUNTS_UNAVAILABLE,      /* Redis or the hashing pool failed */
    TP_ACCOUNTS_DISABLED,         /* sign-in, any token: an operator disabled the account */
    TP_ACCOUNTS_WRONG_PASSWORD,   /* password change: the old password is not the current one */
};

/* Credentials as a client sent them (borrowed); a member that is absent or not a string is NULL.
 * A password change sends the old password as `password` and the new one as `new_password`. */
struct tp_accounts_creds {
    const char *username;
    size_t username_len;
    const char *password;
    size_t password_len;
    const char *new_password;
    size_t new_password_len;
};

/* The outcome of an operation; on TP_ACCOUNTS_OK the members its operation names are set. The
 * strings are borrowed for the duration of the callback. */
struct tp_accounts_result {
    enum tp_accounts_code code;
    int64_t user_id;
    const char *username; /* sign-up, profile: as first registered */
    const char *token;    /* sign-up, sign-in, password change: a fresh bearer token */
    int64_t expires_ms;   /* sign-up, sign-in, password change: the token's expiry (unix ms) */
    int64_t balance;      /* sign-up, profile */
};

/** Completion of an accounts operation (on the worker's loop thread); `res` is borrowed. */
typedef void (*tp_accounts_cb)(const struct tp_accounts_result *res, void *ud);

/**
 * Sets up every worker's accounts state (a worker slot and an init hook: the token secret, the
 * hashing pool, the dummy hash that keeps unknown users' sign-ins as slow as known ones'). Call
 * once in main, before tp_master_run and before any module that verifies tokens.
 */
void tp_accounts_install(void);

/** The contract's error code string for a code ("username_taken", …; "ok" for TP_ACCOUNTS_OK;
 * UNKNOWN_USER is "unauthorized"). */
const char *tp_accounts_code_name(enum tp_accounts_code c);

/** True when w can serve sign-ups, sign-ins and profiles now: its secret is known, its pool
 * exists and its Redis is connected. */
bool tp_accounts_ready(struct tp_worker *w);

/** Checks sign-up credentials against the rules: OK, INVALID_USERNAME or WEAK_PASSWORD. */
enum tp_accounts_code tp_accounts_check_signup(const struct tp_accounts_creds *c);
/** Checks sign-in credentials' shape only (a bad credential is BAD_CREDENTIALS later, whatever
 * it is): OK or INVALID_REQUEST. */
enum tp_accounts_code tp_accounts_check_signin(const struct tp_accounts_creds *c);

/**
 * Creates an account from credentials that passed tp_accounts_check_signup (copied): hashes the
 * password on the pool, stores the user, grants the start balance. Returns 0 (cb called exactly
 * once, later: OK with user_id, username, token, expires_ms, balance; USERNAME_TAKEN;
 * UNAVAILABLE), or with cb never called TP_EINVAL (bad credentials), TP_EUNAVAIL (not ready),
 * TP_EAGAIN (hashing queue full).
 */
int tp_accounts_signup(struct tp_worker *w, const struct tp_accounts_creds *c, tp_accounts_cb cb,
                       void *ud);
/**
 * Signs in with credentials that passed tp_accounts_check_signin (copied): one argon2
 * verification even for an unknown user, and the start grant re-applied. Returns as
 * tp_accounts_signup; cb gets OK with user_id, token, expires_ms; BAD_CREDENTIALS; UNAVAILABLE.
 */
int tp_accounts_signin(struct tp_worker *w, const struct tp_accounts_creds *c, tp_accounts_cb cb,
                       void *ud);
/** Checks a password change's shape: OK, INVALID_REQUEST (no old password string, or an
 * impossible length) or WEAK_PASSWORD (the new one breaks the sign-up rule). */
enum tp_accounts_code tp_accounts_check_password(const struct tp_accounts_creds *c);
/**
 * Changes `user_id`'s password from c->password to c->new_password (checked by
 * tp_accounts_check_password; copied): one argon2 verification and one hash on the pool, then
 * scripts/lua/password.lua, which also revokes every token issued so far (on every worker within
 * about a second). Returns as tp_accounts_signup; cb gets OK with user_id, token (a fresh one,
 * the only valid token of the user then) and expires_ms; WRONG_PASSWORD; UNKNOWN_USER;
 * UNAVAILABLE.
 */
int tp_accounts_change_password(struct tp_worker *w, int64_t user_id,
                                const struct tp_accounts_creds *c, tp_accounts_cb cb, void *ud);
/**
 * Logs out: revokes the token of `user_id` expiring at `expires_ms` and every earlier one
 * (scripts/lua/revoke.lua; every worker within about a second). Returns 0 (cb called exactly
 * once, later: OK or UNAVAILABLE) or TP_EUNAVAIL with cb never called.
 */
int tp_accounts_logout(struct tp_worker *w, int64_t user_id, int64_t expires_ms, tp_accounts_cb cb,
                       void *ud);

/**
 * Reads `user_id`'s username and balance. Returns 0 (cb called exactly once, later: OK with
 * user_id, username, balance; UNKNOWN_USER; UNAVAILABLE), or TP_EUNAVAIL with cb never called.
 */
int tp_accounts_profile(struct tp_worker *w, int64_t user_id, tp_accounts_cb cb, void *ud);

/**
 * Resolves a bearer token (token[len], without "Bearer ") with w's secret and w's account state
 * (tickpool/money/access.h), in memory: 0 and *user_id and, when `expires_ms` is not NULL,
 * *expires_ms; TP_EINVAL (malformed, tampered, revoked), TP_ETIMEDOUT (expired), TP_EPERM (the
 * account is disabled), TP_EUNAVAIL (w has no signing secret or account state yet).
 */
int tp_accounts_verify_token(struct tp_worker *w, const char *token, size_t len, int64_t *user_id,
                             int64_t *expires_ms);

#endif
