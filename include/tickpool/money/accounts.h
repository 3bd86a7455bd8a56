/*
 * Accounts and sessions: POST /api/v1/accounts (sign-up), POST /api/v1/sessions (sign-in),
 * GET /api/v1/me, and the bearer-token check every authenticated endpoint uses.
 *
 * Usernames are 3–32 of [A-Za-z0-9_-], unique case-insensitively ("Alice" and "alice" are one
 * account; sign-in accepts any case) and shown as first registered. Passwords are 8–1024 bytes,
 * hashed with argon2id on a small thread pool (src/net/workq.c), never on the event loop.
 *
 * Redis (global hash tag {g}): tp:{g}:user_seq (INCR → user id), tp:{g}:usernames (HASH
 * lower-cased name → id), tp:{g}:user:<id> (HASH username, pw_hash, created_at), a `user` event
 * in tp:{g}:outbox; all but the id written at once by scripts/lua/signup.lua. The start balance
 * is grant.lua with grant id "signup:<id>", re-applied idempotently by a retried sign-up
 * (409) and by every sign-in, so a crash between the two scripts never loses the grant.
 *
 * Tokens (tickpool/money/token.h) live 24 h and are checked in memory. The signing secret is the
 * env variable TICKPOOL_AUTH_SECRET (hex, or raw bytes; ≥ 16 bytes) or else one random secret
 * shared by every process and host through Redis (SET tp:{g}:auth_secret NX GET) at worker start.
 */
#ifndef TP_ACCOUNTS_H
#define TP_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

struct tp_http_ctx;

/* Token lifetime. */
#define TP_ACCOUNTS_TOKEN_TTL_MS (24LL * 3600 * 1000)

/**
 * Registers every API route of this module and players (tp_worker_on_init hook: the auth
 * secret, the hashing thread pool, the routes). Call once in main, before tp_master_run.
 */
void tp_api_install(void);

/**
 * Resolves a bearer token (token[len], without "Bearer ") to its user id, in memory: 0 and
 * *user_id and, when `expires_ms` is not NULL, *expires_ms; TP_EINVAL (malformed, tampered),
 * TP_ETIMEDOUT (expired), TP_EUNAVAIL (this process has no signing secret yet: Redis not
 * reached since start).
 */
int tp_accounts_verify_token(const char *token, size_t len, int64_t *user_id, int64_t *expires_ms);

/**
 * Authenticates an HTTP request by its "Authorization: Bearer <token>" header: returns 0 and
 * *user_id, or replies itself (401 unauthorized, or 503 unavailable without a secret) and
 * returns a negative TP_E* code; the caller must then not reply again.
 */
int tp_accounts_auth(struct tp_http_ctx *ctx, int64_t *user_id);

#endif
