/*
 * `tickpool admin disable` / `enable`: stop or restore an account (see admin_internal.h).
 *
 * One call of scripts/lua/account_flag.lua sets or removes the flag in the player's bucket,
 * records the admin action in that bucket's outbox and publishes the change to every worker
 * (an internal `account` message on the broadcast channel), which from then on refuses the
 * account's tokens from memory (403 account_disabled); bet.lua refuses its bets itself for the
 * moment before a worker hears of it, and sign-in checks the flag in Redis. Both commands are
 * idempotent: repeating one changes nothing (exit 0, said so) but is recorded and republished,
 * which also repairs a worker that missed the first message.
 */
#include "admin_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"

#include <string.h>

static int run_flag(struct tp_admin *a, int argc, char **argv, bool disable)
{
    const char *cmd = disable ? "disable" : "enable", *reason = NULL;
    const struct tp_admin_opt opts[] = {{"reason", &reason, NULL}};
    char *pos[1];
    int npos;
    if (tp_admin_args(argc, argv, opts, 1, pos, 1, &npos) != TP_ADMIN_OK)
        return TP_ADMIN_USAGE;
    if (npos != 1) {
        fprintf(stderr, "admin %s: wants USER\n", cmd);
        return TP_ADMIN_USAGE;
    }
    if (!tp_admin_reason_ok(cmd, reason, false))
        return TP_ADMIN_USAGE;
    struct tp_admin_user u;
    int rc = tp_admin_user(a, pos[0], &u);
    if (rc != TP_ADMIN_OK)
        return rc;
    char action[TP_ADMIN_ID_MAX + 1];
    tp_admin_new_id(cmd, action);
    struct tp_script_account_flag_args args = {.user_id = u.id,
                                               .disabled = disable,
                                               .now_ms = tp_now_ms(),
                                               .buckets = a->cfg->game.buckets,
                                               .admin = tp_admin_script_args(a, action, reason)};
    struct tp_admin_reply r;
    tp_admin_reply_init(&r);
    struct tp_store_value *v = tp_admin_wait(
        a, tp_script_account_flag(tp_store_sync_store(a->redis), &args, tp_admin_on_reply, &r), &r,
        cmd);
    if (v == NULL) {
        fprintf(stderr, "admin %s: outcome unknown: run the same command again\n", cmd);
        return TP_ADMIN_UNAVAILABLE;
    }
    const char *code;
    int status = TP_ADMIN_OK;
    if (tp_admin_reply_ok(v, &code) && v->n == 2 && v->elem[1]->type == TP_REPLY_INTEGER) {
        bool changed = v->elem[1]->integer == 1;
        if (!changed)
            printf("%s (#%lld) was %s already: nothing changed\n", u.name, (long long)u.id,
                   disable ? "disabled" : "enabled");
        else if (disable)
            printf("disabled %s (#%lld): sign-in refused, its tokens and bets refused on every "
                   "worker within a second\n",
                   u.name, (long long)u.id);
        else
            printf("enabled %s (#%lld): the account works as before\n", u.name, (long long)u.id);
    } else {
        fprintf(stderr, "admin %s: unexpected reply (%s)\n", cmd, code[0] ? code : "?");
        status = TP_ADMIN_UNAVAILABLE;
    }
    tp_store_value_free(v);
    return status;
}

static int run_disable(struct tp_admin *a, int argc, char **argv)
{
    return run_flag(a, argc, argv, true);
}

static int run_enable(struct tp_admin *a, int argc, char **argv)
{
    return run_flag(a, argc, argv, false);
}

const struct tp_admin_cmd tp_admin_cmd_disable = {
    .name = "disable",
    .synopsis = "disable USER [--reason R]",
    .summary = "stop an account: no sign-in, its tokens and bets refused (403 account_disabled)",
    .help = "\n"
            "Takes effect on every worker of every host within a second: requests with the\n"
            "account's tokens answer 403 account_disabled (bets too, over HTTP and WebSocket;\n"
            "the bet script itself refuses them from the moment this command returns), and\n"
            "sign-in answers 403 account_disabled after a correct password. Its open WebSocket\n"
            "connections stay open but cannot bet. Money is untouched: the balance and pending\n"
            "bets stay as they are. Disabling a disabled account changes nothing (exit 0).\n"
            "\n"
            "  --reason R   why (recorded in admin_actions; up to 200 bytes)\n",
    .run = run_disable,
};

const struct tp_admin_cmd tp_admin_cmd_enable = {
    .name = "enable",
    .synopsis = "enable USER [--reason R]",
    .summary = "restore an account that was disabled",
    .help = "\n"
            "The account works as before on every worker within a second, its tokens that have\n"
            "not expired included. Enabling an enabled account changes nothing (exit 0).\n"
            "\n"
            "  --reason R   why (recorded in admin_actions; up to 200 bytes)\n",
    .run = run_enable,
};
