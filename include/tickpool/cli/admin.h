/*
 * `tickpool admin …`: the operator's commands (status, pause/resume, grants, …), with the same
 * configuration discovery as `tickpool audit` (config file, TICKPOOL_* environment, the embedded
 * services' URLs under server.var_dir). Every command that changes something records an admin
 * action (who, when, what, why) through the outbox into Postgres's admin_actions, written by the
 * same Lua script as the change itself, so the record exists exactly when the change does.
 *
 * docs/operations.md ("Admin commands") is the reference; `tickpool admin --help` and
 * `tickpool admin COMMAND --help` print the same text.
 */
#ifndef TP_ADMIN_H
#define TP_ADMIN_H

struct tp_config;

/* Exit statuses of tp_admin_main (documented in --help and docs/operations.md). */
#define TP_ADMIN_OK 0      /* done (or already done: a replayed grant id) */
#define TP_ADMIN_REFUSED 1 /* refused by the game's state: unknown user, already paused, … */
#define TP_ADMIN_USAGE 2   /* bad command line: nothing was changed */
#define TP_ADMIN_UNAVAILABLE                                                                       \
    3 /* Redis unreachable or failing: the change may not have happened                            \
       */

/**
 * Runs `tickpool admin` with the `nargs` arguments `args` that followed "admin" on the command
 * line. Returns one of the TP_ADMIN_* statuses above. `cfg` is NULL when the configuration did
 * not load: the help is still printed when asked for, anything else is refused (TP_ADMIN_USAGE).
 */
int tp_admin_main(const struct tp_config *cfg, int nargs, char **args);

#endif
