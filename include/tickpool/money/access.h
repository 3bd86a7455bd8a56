/*
 * Account access state, in every worker's memory: which tokens were revoked (logout, password
 * change) and which accounts an operator disabled, so a token check stays a memory lookup (no
 * Redis read on the bet path) and still follows a change made on any worker or host within
 * about a second.
 *
 * The state lives in Redis (tp:{g}:revoked: user → token watermark; tp:{bN}:disabled: the
 * disabled accounts of each bucket). The scripts that change it (revoke.lua, password.lua,
 * account_flag.lua) publish an internal `account` message on the broadcast channel; the
 * broadcaster (stream/bcast.c) hands each one to tp_access_apply, and calls tp_access_reload
 * once its subscription is confirmed and after every resubscription (messages may have been
 * lost meanwhile). A reload reads the whole state and replays the messages that arrived while it
 * was under way, so a message racing the reload is never lost.
 *
 * Revocation is a watermark on the token's expiry: a token (which carries its expiry, always
 * issue time + TP_ACCOUNTS_TOKEN_TTL_MS) is revoked when it expires at or before the user's
 * watermark. Only the loop thread of the worker touches its state.
 */
#ifndef TP_ACCESS_H
#define TP_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/* The outcome of tp_access_check. */
enum tp_access {
    TP_ACCESS_OK = 0,
    TP_ACCESS_REVOKED,  /* the token expires at or before the user's watermark */
    TP_ACCESS_DISABLED, /* an operator disabled the account */
    TP_ACCESS_UNKNOWN,  /* this worker has not loaded the state yet: refuse for now */
};

/* One change, as an `account` message carries it: only the members marked present change. */
struct tp_access_update {
    int64_t user_id;
    bool has_revoked;
    int64_t revoked_before; /* token watermark, Unix ms (it only rises) */
    bool has_disabled;
    bool disabled;
};

/* --- The table (pure, no I/O; exposed for unit tests) --- */

struct tp_access_table;

/** An empty table. */
struct tp_access_table *tp_access_table_new(void);
/** Frees a table; NULL is a no-op. */
void tp_access_table_free(struct tp_access_table *t);
/** Applies an update: a watermark is raised, never lowered; the flag is set as given. */
void tp_access_table_apply(struct tp_access_table *t, const struct tp_access_update *u);
/** OK, REVOKED or DISABLED (disabled wins) for a token of `user_id` expiring at `exp_ms`. */
enum tp_access tp_access_table_check(const struct tp_access_table *t, int64_t user_id,
                                     int64_t exp_ms);
/** Drops the entries that decide nothing any more: not disabled and a watermark before
 * `now_ms` (every token it revokes has expired). Returns the number of entries left. */
size_t tp_access_table_prune(struct tp_access_table *t, int64_t now_ms);

/* --- The worker's state --- */

/** Takes a worker slot and registers the init and drain hooks. Call once before tp_master_run
 * (tp_accounts_install does). */
void tp_access_install(void);

/** The access of a token of `user_id` expiring at `exp_ms` on worker `w`, from memory. */
enum tp_access tp_access_check(struct tp_worker *w, int64_t user_id, int64_t exp_ms);

/** True once w has loaded the state: before that every token check answers UNKNOWN (503), so
 * /readyz is not ready either. */
bool tp_access_ready(struct tp_worker *w);

/** Applies one `account` message on `w` (the broadcaster's call). */
void tp_access_apply(struct tp_worker *w, const struct tp_access_update *u);

/** Reads the whole state from Redis again (retried every 100 ms until it succeeds) and replaces
 * w's table with it, keeping every message applied meanwhile. Call once the broadcast
 * subscription is confirmed, and after each resubscription. */
void tp_access_reload(struct tp_worker *w);

#endif
