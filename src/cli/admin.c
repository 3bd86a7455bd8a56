/*
 * `tickpool admin` (see include/tickpool/cli/admin.h): the command table, dispatch and --help,
 * and what every command shares: the Redis connection (store/sync, with the Lua scripts
 * loaded), who is acting, user lookup, action ids and reasons. The commands themselves live in
 * one file per group (admin_internal.h lists them).
 */
#include "admin_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/base/log.h"
#include "tickpool/store/keys.h"

#include <getopt.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- The command table: the order of `tickpool admin --help` --- */

static const struct tp_admin_cmd *const commands[] = {
    &tp_admin_cmd_status,  &tp_admin_cmd_pause,  &tp_admin_cmd_resume,          &tp_admin_cmd_grant,
    &tp_admin_cmd_disable, &tp_admin_cmd_enable, &tp_admin_cmd_hot_index_prune,
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fputs("Usage: tickpool [-c FILE] admin [--actor NAME] COMMAND [ARGS]\n"
          "\n"
          "Operate a running game. Reads the same configuration as the server (config file,\n"
          "TICKPOOL_* environment, the embedded services' URLs while scripts/up runs) and acts\n"
          "on its Redis; every change to the game or a player is recorded in Postgres (table\n"
          "admin_actions: who, when, what, why) through the outbox, exactly once.\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %s\n      %s\n", commands[i]->synopsis, commands[i]->summary);
    fputs("\n"
          "Options:\n"
          "  --actor NAME   who is acting, as recorded in admin_actions (default: the login\n"
          "                 name, $SUDO_USER under sudo, @ the host name)\n"
          "  -h, --help     this help; `tickpool admin COMMAND --help` for one command\n"
          "\n"
          "USER is a username (any case) or #ID (a user id, e.g. #42).\n"
          "\n"
          "Exit status: 0 done (or already done, e.g. a replayed grant id), 1 refused by the\n"
          "game's state (unknown user, already paused, not paused, balance too small, …),\n"
          "2 bad command line (nothing changed), 3 Redis unreachable or failing (the change may\n"
          "or may not have happened: run the same command again).\n",
          out);
}

static void cmd_usage(const struct tp_admin_cmd *c, FILE *out)
{
    fprintf(out, "Usage: tickpool admin %s\n%s\n%s", c->synopsis, c->summary, c->help);
}

/* --- Redis --- */

struct tp_store_sync *tp_admin_redis(struct tp_admin *a)
{
    if (a->redis != NULL)
        return a->redis;
    if (a->cfg->redis.url[0] == '\0') {
        fprintf(stderr, "admin: no Redis configured (redis.url, or var/redis.url of scripts/up)\n");
        return NULL;
    }
    int rc = tp_store_sync_open(&a->cfg->redis, TP_STORE_SCRIPTS_BUILTIN,
                                TP_MAX(a->cfg->redis.timeout_ms, 3000), &a->redis);
    if (rc != 0) {
        fprintf(stderr, "admin: cannot connect to Redis: %s\n",
                rc == TP_EINVAL ? "bad redis.url" : tp_strerror(rc));
        a->redis = NULL;
    }
    return a->redis;
}

struct tp_store_value *tp_admin_command(struct tp_admin *a, const char *fmt, ...)
{
    struct tp_store_sync *s = tp_admin_redis(a);
    if (s == NULL)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    struct tp_store_value *v;
    int rc = tp_store_sync_commandv(s, &v, fmt, ap);
    va_end(ap);
    int name = (int)strcspn(fmt, " ");
    if (v != NULL && v->type == TP_REPLY_ERROR) {
        fprintf(stderr, "admin: redis %.*s: %s\n", name, fmt, v->str);
        tp_store_value_free(v);
        return NULL;
    }
    if (v == NULL)
        fprintf(stderr, "admin: redis %.*s failed: %s\n", name, fmt, tp_strerror(rc));
    return v;
}

void tp_admin_reply_init(struct tp_admin_reply *r)
{
    *r = (struct tp_admin_reply){.pending = 1};
}

void tp_admin_on_reply(int err, const struct tp_store_reply *reply, void *ud)
{
    struct tp_admin_reply *r = ud;
    r->err = err;
    r->v = err == 0 ? tp_store_value_copy(reply) : NULL;
    r->pending = 0;
}

struct tp_store_value *tp_admin_wait(struct tp_admin *a, int submit_rc, struct tp_admin_reply *r,
                                     const char *what)
{
    if (submit_rc != 0) {
        fprintf(stderr, "admin: %s: cannot run the script: %s\n", what, tp_strerror(submit_rc));
        return NULL;
    }
    tp_store_sync_wait(a->redis, &r->pending);
    if (r->v == NULL) {
        fprintf(stderr, "admin: %s failed: %s\n", what, tp_strerror(r->err));
        return NULL;
    }
    if (r->v->type == TP_REPLY_ERROR) {
        fprintf(stderr, "admin: %s: redis: %s\n", what, r->v->str);
        tp_store_value_free(r->v);
        r->v = NULL;
    }
    return r->v;
}

bool tp_admin_reply_ok(const struct tp_store_value *v, const char **code)
{
    *code = "";
    if (v == NULL || v->type != TP_REPLY_ARRAY || v->n < 1 || v->elem[0]->str == NULL)
        return false;
    if (strcmp(v->elem[0]->str, "ok") == 0)
        return true;
    if (v->n >= 2 && v->elem[1]->str != NULL)
        *code = v->elem[1]->str;
    return false;
}

/* --- Arguments --- */

int tp_admin_args(int argc, char **argv, const struct tp_admin_opt *opts, size_t nopts, char **pos,
                  int max_pos, int *npos)
{
    bool seen[16] = {false};
    TP_ASSERT(nopts <= 16);
    bool options = true;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        bool number = s[0] == '-' && s[1] >= '0' && s[1] <= '9';
        if (options && strcmp(s, "--") == 0) {
            options = false;
            continue;
        }
        if (options && s[0] == '-' && s[1] != '\0' && !number) {
            const char *name = s + (s[1] == '-' ? 2 : 1), *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            size_t k = 0;
            while (k < nopts && (s[1] != '-' || strlen(opts[k].name) != n ||
                                 strncmp(opts[k].name, name, n) != 0))
                k++;
            if (k == nopts) {
                fprintf(stderr, "admin %s: unknown option '%s'\n", argv[0], s);
                return TP_ADMIN_USAGE;
            }
            if (seen[k]) {
                fprintf(stderr, "admin %s: --%s given twice\n", argv[0], opts[k].name);
                return TP_ADMIN_USAGE;
            }
            seen[k] = true;
            if (opts[k].value == NULL) {
                if (eq != NULL) {
                    fprintf(stderr, "admin %s: --%s takes no value\n", argv[0], opts[k].name);
                    return TP_ADMIN_USAGE;
                }
                *opts[k].flag = true;
            } else if (eq != NULL) {
                *opts[k].value = eq + 1;
            } else if (i + 1 < argc) {
                *opts[k].value = argv[++i];
            } else {
                fprintf(stderr, "admin %s: --%s wants a value\n", argv[0], opts[k].name);
                return TP_ADMIN_USAGE;
            }
            continue;
        }
        if (*npos >= max_pos) {
            fprintf(stderr, "admin %s: unexpected argument '%s'\n", argv[0], s);
            return TP_ADMIN_USAGE;
        }
        pos[(*npos)++] = argv[i];
    }
    return TP_ADMIN_OK;
}

/* --- Output --- */

const char *tp_admin_utc(int64_t ms, const char *fmt, char *out, size_t n)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    if (strftime(out, n, fmt, &tm) == 0 && n > 0)
        out[0] = '\0'; /* too small: strftime leaves out undefined */
    return out;
}

/* --- Users --- */

int tp_admin_user(struct tp_admin *a, const char *arg, struct tp_admin_user *u)
{
    memset(u, 0, sizeof(*u));
    size_t len = strlen(arg);
    bool by_id = arg[0] == '#';
    if (by_id) {
        int64_t id;
        if (len < 2 || len > 16 || strspn(arg + 1, "0123456789") != len - 1 ||
            !tp_parse_i64(arg + 1, &id) || id < 1) {
            fprintf(stderr, "admin: USER '%s': #ID wants a positive user id, e.g. #42\n", arg);
            return TP_ADMIN_USAGE;
        }
        u->id = id;
    } else {
        /* The sign-up alphabet (3..32 of [A-Za-z0-9_-]): anything else cannot be a user. */
        if (len < 3 || len > 32 ||
            strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                len) {
            fprintf(stderr, "admin: USER '%s' is no username (3..32 of A-Z a-z 0-9 _ -) nor #ID\n",
                    arg);
            return TP_ADMIN_USAGE;
        }
        char lower[33];
        for (size_t i = 0; i <= len; i++)
            lower[i] = (char)(arg[i] >= 'A' && arg[i] <= 'Z' ? arg[i] - 'A' + 'a' : arg[i]);
        struct tp_store_value *v = tp_admin_command(a, "HGET %s %s", TP_KEYS_USERNAMES, lower);
        if (v == NULL)
            return TP_ADMIN_UNAVAILABLE;
        bool found = v->str != NULL && tp_parse_i64(v->str, &u->id) && u->id > 0;
        tp_store_value_free(v);
        if (!found) {
            fprintf(stderr, "admin: no such user: %s\n", arg);
            return TP_ADMIN_REFUSED;
        }
    }
    struct tp_key k;
    struct tp_store_value *v = tp_admin_command(a, "HGET %s username", tp_keys_user(&k, u->id));
    if (v == NULL)
        return TP_ADMIN_UNAVAILABLE;
    bool found = v->str != NULL;
    snprintf(u->name, sizeof(u->name), "%s", found ? v->str : "");
    tp_store_value_free(v);
    if (!found) {
        fprintf(stderr, "admin: no such user: %s\n", arg);
        return TP_ADMIN_REFUSED;
    }
    return TP_ADMIN_OK;
}

/* --- Admin actions --- */

bool tp_admin_reason_ok(const char *cmd, const char *reason, bool required)
{
    if (reason == NULL) {
        if (required)
            fprintf(stderr, "admin %s: --reason is required (it is recorded with the action)\n",
                    cmd);
        return !required;
    }
    size_t n = strlen(reason);
    bool ok = n >= 1 && n <= TP_ADMIN_REASON_MAX;
    for (const unsigned char *p = (const unsigned char *)reason; ok && *p; p++)
        ok = *p >= 0x20 && *p != 0x7f;
    if (!ok)
        fprintf(stderr, "admin %s: --reason wants 1..%d bytes of text without control characters\n",
                cmd, TP_ADMIN_REASON_MAX);
    return ok;
}

void tp_admin_new_id(const char *prefix, char *out)
{
    uint8_t r[4];
    char hex[9];
    if (tp_random_bytes(r, sizeof(r)) != 0)
        memset(r, 0, sizeof(r)); /* the clock alone still tells two operators apart */
    tp_hex_encode(r, sizeof(r), hex);
    snprintf(out, TP_ADMIN_ID_MAX + 1, "%s-%lld-%s", prefix, (long long)tp_now_ms(), hex);
}

struct tp_script_admin tp_admin_script_args(const struct tp_admin *a, const char *action_id,
                                            const char *reason)
{
    return (struct tp_script_admin){
        .action_id = action_id, .actor = a->actor, .reason = reason ? reason : ""};
}

/* Who acts: --actor, else the (sudo) login name and the host. */
static bool set_actor(struct tp_admin *a, const char *given)
{
    if (given != NULL) {
        size_t n = strlen(given);
        bool ok = n >= 1 && n < sizeof(a->actor);
        for (const unsigned char *p = (const unsigned char *)given; ok && *p; p++)
            ok = *p >= 0x20 && *p != 0x7f;
        if (!ok) {
            fprintf(stderr, "admin: --actor wants 1..%zu bytes of text\n", sizeof(a->actor) - 1);
            return false;
        }
        snprintf(a->actor, sizeof(a->actor), "%s", given);
        return true;
    }
    const char *login = getenv("SUDO_USER");
    struct passwd *pw = login == NULL || login[0] == '\0' ? getpwuid(getuid()) : NULL;
    if (pw != NULL)
        login = pw->pw_name;
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    snprintf(a->actor, sizeof(a->actor), "%s@%s", login && login[0] ? login : "uid",
             host[0] ? host : "localhost");
    return true;
}

/* --- Entry --- */

int tp_admin_main(const struct tp_config *cfg, int nargs, char **args)
{
    /* getopt wants a program name in argv[0]: args are what followed "admin". */
    char **argv = tp_xcalloc((size_t)nargs + 2, sizeof(*argv));
    argv[0] = "admin";
    for (int i = 0; i < nargs; i++)
        argv[i + 1] = args[i];
    int argc = nargs + 1;
    static const struct option opts[] = {
        {"actor", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *actor = NULL;
    int ch, status = TP_ADMIN_USAGE;
    optind = 0; /* glibc: 0 also resets getopt's state after main's own parsing */
    /* '+': stop at the command, whose options are its own. */
    while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            actor = optarg;
            break;
        case 'h':
            usage(stdout);
            free(argv);
            return TP_ADMIN_OK;
        default:
            fputs("Try 'tickpool admin --help'.\n", stderr);
            free(argv);
            return TP_ADMIN_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        free(argv);
        return TP_ADMIN_USAGE;
    }
    const struct tp_admin_cmd *c = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i]->name, argv[optind]) == 0)
            c = commands[i];
    if (c == NULL) {
        fprintf(stderr, "admin: unknown command '%s'\nTry 'tickpool admin --help'.\n",
                argv[optind]);
        free(argv);
        return TP_ADMIN_USAGE;
    }
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    for (int i = 1; i < sub_argc; i++) {
        if (strcmp(sub_argv[i], "--") == 0)
            break;
        if (strcmp(sub_argv[i], "-h") == 0 || strcmp(sub_argv[i], "--help") == 0) {
            cmd_usage(c, stdout);
            free(argv);
            return TP_ADMIN_OK;
        }
    }
    if (cfg == NULL) { /* main could not load it, and said why */
        fputs("admin: no valid configuration: nothing done\n", stderr);
        free(argv);
        return TP_ADMIN_USAGE;
    }
    /* The store's connection notes are for servers; a command prints its own outcome. */
    tp_log_setup(TP_LOG_WARN, "admin");
    struct tp_admin a = {.cfg = cfg};
    if (set_actor(&a, actor)) {
        status = c->run(&a, sub_argc, sub_argv);
        if (status == TP_ADMIN_USAGE)
            fprintf(stderr, "Try 'tickpool admin %s --help'.\n", c->name);
    }
    tp_store_sync_close(a.redis);
    free(argv);
    return status;
}
