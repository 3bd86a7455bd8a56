/*
 * Internals of `tickpool admin` shared by its files (private to module cli/admin):
 *
 *   admin.c        dispatch, --help, the shared context (Redis, who is acting), user lookup,
 *                  admin action ids and reasons
 *   admin_game.c   status, pause, resume
 *   admin_money.c  grant
 *   admin_accounts.c  disable, enable
 *   admin_hot_index.c hot-index-prune
 *
 * A command group is one file exporting its `struct tp_admin_cmd`s; admin.c lists them in its
 * command table (the order of `tickpool admin --help`). A command that changes state records
 * an admin action: its Lua script receives a `struct tp_script_admin` (scripts.h) and writes
 * the `type=admin` outbox event next to its effect (scripts/lua/README.md, "Admin actions").
 */
#ifndef TP_ADMIN_INTERNAL_H
#define TP_ADMIN_INTERNAL_H

#include "tickpool/cli/admin.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/sync.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct tp_config;

/* Longest --reason, in bytes. */
#define TP_ADMIN_REASON_MAX 200
/* Longest action id (an outbox/Postgres identifier: [A-Za-z0-9_.:-]). */
#define TP_ADMIN_ID_MAX 128

/* What every command gets. */
struct tp_admin {
    const struct tp_config *cfg;
    char actor[160];             /* who acts: --actor, else <login>@<host> */
    struct tp_store_sync *redis; /* opened on first use (tp_admin_redis) */
};

/* One subcommand. */
struct tp_admin_cmd {
    const char *name;
    const char *synopsis; /* "grant USER AMOUNT --reason R [--id ID]" */
    const char *summary;  /* one line for `tickpool admin --help` */
    const char *help;     /* the rest of `tickpool admin NAME --help` (options, effect) */
    /* Runs it with argv[0] = name and the command's own arguments (read them with
     * tp_admin_args). Returns a TP_ADMIN_* status. --help never reaches it. */
    int (*run)(struct tp_admin *a, int argc, char **argv);
};

/* One long option of a command: `--name VALUE` / `--name=VALUE` sets *value; a flag (value
 * NULL) sets *flag. */
struct tp_admin_opt {
    const char *name;
    const char **value;
    bool *flag;
};

/**
 * Reads a command's arguments argv[1..argc): the options of opts[0..nopts) and up to max_pos
 * positional arguments into pos[] (*npos of them). A negative number ("-500") is positional, so
 * corrections need no "--"; "--" ends the options. Returns TP_ADMIN_OK, or TP_ADMIN_USAGE after
 * printing what is wrong (unknown or repeated option, missing value, too many arguments).
 */
int tp_admin_args(int argc, char **argv, const struct tp_admin_opt *opts, size_t nopts, char **pos,
                  int max_pos, int *npos);

/* The commands, by group. */
extern const struct tp_admin_cmd tp_admin_cmd_status, tp_admin_cmd_pause, tp_admin_cmd_resume;
extern const struct tp_admin_cmd tp_admin_cmd_grant;
extern const struct tp_admin_cmd tp_admin_cmd_disable, tp_admin_cmd_enable;
extern const struct tp_admin_cmd tp_admin_cmd_hot_index_prune;

/* --- Redis --- */

/** The Redis connection (scripts of scripts/lua loaded), opened on first use. Returns it, or
 * NULL after printing why (the command then exits TP_ADMIN_UNAVAILABLE). */
struct tp_store_sync *tp_admin_redis(struct tp_admin *a);

/** Runs one command (hiredis format) and waits. Returns the reply (caller frees), or NULL after
 * printing the failure, Redis error replies included. */
struct tp_store_value *tp_admin_command(struct tp_admin *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A script call in flight: init, submit with tp_admin_on_reply and &reply, then wait. */
struct tp_admin_reply {
    int pending, err;
    struct tp_store_value *v;
};
/** Prepares `r` for one submission. */
void tp_admin_reply_init(struct tp_admin_reply *r);
/** The tp_store_cb to submit with `ud` = the struct tp_admin_reply. */
void tp_admin_on_reply(int err, const struct tp_store_reply *reply, void *ud);
/** Waits for the reply of a call submitted with status `submit_rc`. Returns it (caller frees),
 * or NULL after printing what failed (`what` names the script), Redis error replies included. */
struct tp_store_value *tp_admin_wait(struct tp_admin *a, int submit_rc, struct tp_admin_reply *r,
                                     const char *what);

/** True for a script's {"ok", …} reply; otherwise false with *code = its "err" code (borrowed
 * from v, "" when the reply has none). */
bool tp_admin_reply_ok(const struct tp_store_value *v, const char **code);

/* --- Output --- */

/* The formats of tp_admin_utc. */
#define TP_ADMIN_UTC_ISO "%Y-%m-%dT%H:%M:%SZ"    /* 2026-12-02T08:01:02Z (status, pause) */
#define TP_ADMIN_UTC_MINUTE "%Y-%m-%d %H:%M UTC" /* 2026-12-04 05:06 UTC (hot-index-prune) */

/** Writes Unix ms time `ms` as UTC in strftime format `fmt` (a TP_ADMIN_UTC_*) to out[0..n),
 * and returns out. */
const char *tp_admin_utc(int64_t ms, const char *fmt, char *out, size_t n);

/* --- Users --- */

struct tp_admin_user {
    int64_t id;
    char name[40];
};

/** Resolves USER (a username, any case, or "#<id>"). Returns TP_ADMIN_OK with *u filled,
 * TP_ADMIN_USAGE for a malformed argument, TP_ADMIN_REFUSED for an unknown user, or
 * TP_ADMIN_UNAVAILABLE; each failure printed. */
int tp_admin_user(struct tp_admin *a, const char *arg, struct tp_admin_user *u);

/* --- Admin actions --- */

/** Checks a --reason: NULL is allowed unless `required`; else 1..TP_ADMIN_REASON_MAX bytes of
 * printable UTF-8 (no control bytes). Returns true, or false after printing why. */
bool tp_admin_reason_ok(const char *cmd, const char *reason, bool required);

/** Fills `out` (room for TP_ADMIN_ID_MAX + 1) with a fresh action id "<prefix>-<ms>-<8 hex>",
 * unique for practical purposes (random suffix); `prefix` is [a-z_]+. */
void tp_admin_new_id(const char *prefix, char *out);

/** The admin part of a script call for action `a`: actor, action id and reason ("" for none). */
struct tp_script_admin tp_admin_script_args(const struct tp_admin *a, const char *action_id,
                                            const char *reason);

#endif
