/*
 * The accounts endpoints and the bearer-token check of every authenticated endpoint:
 *   POST /api/v1/accounts  sign-up {username, password} → 201 {user_id, username, token, balance}
 *   POST /api/v1/sessions  sign-in {username, password} → 200 {user_id, token, expires_at}
 *   DELETE /api/v1/sessions/current  logout: revokes the token shown and every earlier one → 204
 *   POST /api/v1/me/password  {old, new} → 200 {user_id, token, expires_at}; every earlier token
 *                          of the user is revoked
 * Bodies are JSON or MessagePack by Content-Type; the work is tickpool/money/accounts.h's.
 */
#ifndef TP_API_ACCOUNTS_H
#define TP_API_ACCOUNTS_H

#include <stdint.h>

struct tp_http_ctx;

/** Registers the routes in every worker (a tp_worker_on_init hook). Call once in main, after
 * tp_accounts_install and before tp_master_run. */
void tp_api_accounts_install(void);

/**
 * Authenticates an HTTP request by its "Authorization: Bearer <token>" header: returns 0 and
 * *user_id, or replies itself (401 unauthorized, 403 account_disabled with TP_EPERM, or 503
 * unavailable) and returns a negative TP_E* code; the caller must then not reply again.
 */
int tp_api_accounts_auth(struct tp_http_ctx *ctx, int64_t *user_id);
/** As tp_api_accounts_auth, also giving the token's expiry (Unix ms) when `expires_ms` is not
 * NULL: what a logout revokes up to. */
int tp_api_accounts_auth_token(struct tp_http_ctx *ctx, int64_t *user_id, int64_t *expires_ms);

#endif
