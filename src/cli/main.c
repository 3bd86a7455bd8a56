/*
 * tickpool command line: option parsing and subcommand dispatch only (wrk's parse_args style);
 * the server itself lives in master.c / worker.c.
 */
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/master.h"
#include "tickpool/money/accounts.h"
#include "tickpool/api/accounts.h"
#include "tickpool/api/bets.h"
#include "tickpool/api/exclusion.h"
#include "tickpool/money/bet.h"
#include "tickpool/api/players.h"
#include "tickpool/api/rounds.h"
#include "tickpool/cli/admin.h"
#include "tickpool/cli/audit.h"
#include "tickpool/game/leader.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgr.h"
#include "tickpool/store/pgw.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/registry.h"
#include "tickpool/store/store.h"
#include "tickpool/api/ops.h"
#include "tickpool/stream/session.h"
#include "tickpool/cli/verify.h"

#include "tickpool/store/migrate.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

/* Static: forked workers inherit it, and modules keep const pointers into it. */
static struct tp_config config;

static void usage(FILE *out)
{
    fputs("Usage: tickpool [OPTIONS] [COMMAND [ARGS]]\n"
          "\n"
          "A real-time parimutuel game server: HTTP/HTTPS API, WebSocket streaming, static web\n"
          "client, Redis for live state and Postgres as the system of record.\n"
          "\n"
          "Commands:\n"
          "  serve           run the server in the foreground (default): one master process\n"
          "                  and server.workers worker processes; SIGTERM/SIGINT drain and stop\n"
          "  migrate         apply pending Postgres migrations (migrations/*.sql) and exit\n"
          "  audit           check money conservation against Redis and Postgres (see\n"
          "                  `tickpool audit --help`)\n"
          "  verify ROUND    check final round ROUND from its revealed seed: ticks, lock and\n"
          "                  close prices, winning band, payouts, receipt\n"
          "  admin CMD ...   operate the game: status, pause/resume, grants, ... (see\n"
          "                  `tickpool admin --help`)\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE   configuration file (default: config/tickpool.ini if present,\n"
          "                      otherwise built-in defaults)\n"
          "  -t, --check-config  validate the configuration, print the effective values\n"
          "                      (secrets masked) and exit: 0 when valid, 2 when not\n"
          "  -v, --version       print the version and exit\n"
          "  -h, --help          print this help and exit\n"
          "\n"
          "Configuration:\n"
          "  Every key KEY of section [SECTION] can be overridden by the environment variable\n"
          "  TICKPOOL_<SECTION>_<KEY> in upper case; the environment wins over the file and is\n"
          "  validated the same way. Secrets (passwords in redis.url / postgres.url) belong in\n"
          "  the environment. Empty redis.url / postgres.url mean the embedded services that\n"
          "  scripts/up runs under server.var_dir.\n"
          "\n"
          "Examples:\n"
          "  tickpool                                   serve with config/tickpool.ini\n"
          "  tickpool -c /etc/tickpool.ini serve        serve with another file\n"
          "  TICKPOOL_SERVER_WORKERS=2 tickpool         two worker processes\n"
          "  TICKPOOL_SERVER_HTTP_PORT=0 tickpool       HTTPS only\n"
          "  tickpool --check-config                    show the effective configuration\n"
          "  TICKPOOL_POSTGRES_URL=postgresql://u@db/tickpool tickpool migrate\n"
          "\n"
          "Each command has its own help: tickpool COMMAND --help.\n"
          "\n"
          "Endpoints: /healthz (liveness), /readyz (200 when Redis is up and a round is open or\n"
          "the game is paused; Postgres down shows as degraded), /metrics (Prometheus),\n"
          "/api/v1/..., /ws (WebSocket, subprotocol tickpool.v1), static files from\n"
          "server.web_root.\n",
          out);
}

/* `tickpool COMMAND --help` for the commands main runs itself (admin and audit print their own). */
struct cmd_help {
    const char *name, *text;
};
static const struct cmd_help cmd_helps[] = {
    {"serve", "Usage: tickpool [-c FILE] [serve]\n"
              "\n"
              "Serves the game in the foreground: one master process and server.workers worker\n"
              "processes sharing the HTTP and HTTPS listeners. One process of the deployment (a\n"
              "Redis lease) also runs the price, the rounds and settlement. SIGTERM or SIGINT\n"
              "drain the connections (server.shutdown_timeout) and stop. Needs Redis; Postgres\n"
              "may come later (bets wait in the Redis outbox). Run `tickpool migrate` first.\n"
              "Takes no arguments: everything comes from the configuration\n"
              "(`tickpool --check-config` prints it).\n"},
    {"migrate",
     "Usage: tickpool [-c FILE] migrate\n"
     "\n"
     "Applies the pending Postgres migrations (migrations/*.sql, relative to the\n"
     "working directory, or $TP_MIGRATIONS_DIR) in order, each in its own transaction, to\n"
     "postgres.url (empty: the embedded Postgres of scripts/up). Idempotent; refuses to\n"
     "go on when an applied file changed. Takes no arguments.\n"
     "Exit 0 when the schema is current, 1 on failure, 2 on a bad command line.\n"},
    {"verify",
     "Usage: tickpool [-c FILE] verify ROUND_ID\n"
     "\n"
     "Recomputes a final round from its revealed seed and checks it: the seed against\n"
     "seed_hash, the ticks from the lock price to the close price, the winning band, each\n"
     "payout or refund against the settlement formula (paid once), and the receipt. Reads\n"
     "Redis, and Postgres once the round is archived. ROUND_ID is a round id (1, 2, ...).\n"
     "Exit 0 verified, 1 mismatch, 2 bad command line, round not found or a service\n"
     "unreachable.\n"},
};

/* The help of CMD when main runs it itself, or NULL. */
static const char *cmd_help(const char *cmd)
{
    for (size_t i = 0; i < sizeof(cmd_helps) / sizeof(cmd_helps[0]); i++)
        if (strcmp(cmd_helps[i].name, cmd) == 0)
            return cmd_helps[i].text;
    return NULL;
}

/* True when a command's arguments ask for its help (-h or --help before any "--"). */
static bool asks_help(int nargs, char **args)
{
    for (int i = 0; i < nargs && strcmp(args[i], "--") != 0; i++)
        if (strcmp(args[i], "-h") == 0 || strcmp(args[i], "--help") == 0)
            return true;
    return false;
}

static int load(const char *path)
{
    char err[512];
    if (tp_config_load(&config, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "tickpool: invalid configuration: %s\n", err);
        return EXIT_USAGE;
    }
    enum tp_log_level lvl = TP_LOG_INFO;
    tp_log_level_parse(config.log.level, &lvl);
    tp_log_setup(lvl, "master");
    /* A cluster spreads the buckets over its masters by their key names (store/keys). */
    if (strcmp(config.redis.mode, "cluster") == 0)
        tp_keys_spread(config.game.buckets);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool check = false;
    int ch;
    /* '+': stop at the first non-option, so a command's own arguments are left alone. */
    while ((ch = getopt_long(argc, argv, "+c:tvh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'v':
            printf("tickpool %s (commit %s)\n", TP_VERSION, tp_build_commit());
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fputs("Try 'tickpool --help'.\n", stderr);
            return EXIT_USAGE;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : "serve";
    int nargs = argc - optind - (optind < argc ? 1 : 0);
    const char *help = cmd_help(cmd);
    /* Help needs no configuration: it works before one is valid. */
    if (help != NULL && nargs == 1 &&
        (strcmp(argv[optind + 1], "--help") == 0 || strcmp(argv[optind + 1], "-h") == 0)) {
        fputs(help, stdout);
        return 0;
    }
    /* A known command with the wrong arguments: say which, show its usage, change nothing. */
    if (help != NULL && nargs != (strcmp(cmd, "verify") == 0 ? 1 : 0)) {
        fprintf(stderr, "tickpool %s: wrong arguments\n%s", cmd, help);
        return EXIT_USAGE;
    }

    int rc = load(path);
    /* admin and audit parse their own arguments and print their own help, which needs no valid
     * configuration either: given none (cfg NULL) they print it when asked and refuse the rest. */
    if (rc != 0 && asks_help(nargs, argv + optind + 1)) {
        if (strcmp(cmd, "admin") == 0)
            return tp_admin_main(NULL, nargs, argv + optind + 1);
        if (strcmp(cmd, "audit") == 0)
            return tp_audit_main(NULL, nargs, argv + optind + 1);
    }
    if (rc != 0)
        return rc;
    if (check) {
        tp_config_print(&config, stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0 && nargs == 0) {
        /* Every module plugs into each worker through an init hook (run after fork), in this
         * order: the store first, since the others take it at init. */
        tp_store_install();             /* the worker's Redis store */
        tp_ops_install();               /* /healthz, /readyz, /metrics */
        tp_accounts_install();          /* token secret, argon2 pool */
        tp_api_accounts_install();      /* POST /api/v1/accounts, /sessions */
        tp_bet_install();               /* bet admission's per-worker limiter */
        tp_bets_install();              /* POST /api/v1/bets */
        tp_api_exclusion_install();     /* /api/v1/me/exclusion */
        tp_players_install();           /* /api/v1/me, /me/bets, leaderboard */
        tp_rounds_install();            /* rounds and prices API */
        tp_game_install();              /* game leader */
        tp_session_install();           /* /ws protocol, fan-out, odds */
        tp_pgw_register();              /* outbox → Postgres writer thread */
        tp_pg_health_install();         /* readiness probe of Postgres */
        tp_registry_install();          /* heartbeat for `tickpool admin status` */
        tp_pgr_install();               /* history reads from Postgres */
        tp_leader_archive_install();    /* hot rounds only in Redis */
        tp_leader_idemfilter_install(); /* next day's idempotency filter, ahead */
        return tp_master_run(&config);
    }
    if (strcmp(cmd, "verify") == 0 && nargs == 1)
        return tp_verify_main(&config, nargs, argv + optind + 1);
    if (strcmp(cmd, "admin") == 0)
        return tp_admin_main(&config, nargs, argv + optind + 1);
    if (strcmp(cmd, "audit") == 0)
        return tp_audit_main(&config, nargs, argv + optind + 1);
    if (strcmp(cmd, "migrate") == 0 && nargs == 0)
        return tp_migrate_run(&config) == 0 ? 0 : 1;
    fprintf(stderr, "tickpool: unknown command or wrong arguments: %s\nTry 'tickpool --help'.\n",
            cmd);
    return EXIT_USAGE;
}
