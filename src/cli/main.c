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
          "  audit           check money conservation against Redis and Postgres\n"
          "  verify ROUND    recompute round ROUND's ticks and lock/close prices from its seed\n"
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
          "Endpoints: /healthz (liveness), /readyz (playable: Redis up, a round open), /metrics\n"
          "(Prometheus), /api/v1/..., /ws (WebSocket, subprotocol tickpool.v1), static files\n"
          "from server.web_root.\n",
          out);
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

    int rc = load(path);
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
