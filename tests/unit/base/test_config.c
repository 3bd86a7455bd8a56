/*
 * Unit tests for src/base/config.c: defaults equal the contract, the shipped config/tickpool.ini
 * equals the defaults, every class of bad value is rejected (from the file and from the
 * environment) with a message naming key and source, env beats file, unknown keys and TICKPOOL_*
 * variables are errors, the printout shows overrides, masks secrets and loads back to the same
 * configuration; a test hook's value falls back to its default when bad.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/game/settle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static char tmpdir[256];

/* Removes every TICKPOOL_* variable so each test starts from a clean environment. */
static void clear_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **ep = environ; *ep; ep++) {
            if (strncmp(*ep, "TICKPOOL_", 9) == 0) {
                size_t n = strcspn(*ep, "=");
                snprintf(name, sizeof(name), "%.*s", (int)n, *ep);
                break;
            }
        }
        if (name[0] == '\0')
            return;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Writes `text` to a fresh file in tmpdir; returns its path (static buffer). */
static const char *write_ini(const char *text)
{
    static char path[300];
    static int n;
    snprintf(path, sizeof(path), "%s/t%d.ini", tmpdir, n++);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads `ini` (NULL: no file) and expects failure with `want` inside the message. */
static void expect_error(const char *ini, const char *want)
{
    struct tp_config cfg;
    char err[600] = "";
    const char *path = ini != NULL ? write_ini(ini) : NULL;
    if (path == NULL) {
        /* no file: run from an empty directory so config/tickpool.ini is not picked up */
        char cwd[512];
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir(tmpdir), 0);
        int rc = tp_config_load(&cfg, NULL, err, sizeof(err));
        assert_int_equal(chdir(cwd), 0);
        assert_int_equal(rc, TP_EINVAL);
    } else {
        assert_int_equal(tp_config_load(&cfg, path, err, sizeof(err)), TP_EINVAL);
    }
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void load_ok(struct tp_config *cfg, const char *ini)
{
    char err[600] = "";
    int rc = tp_config_load(cfg, ini != NULL ? write_ini(ini) : NULL, err, sizeof(err));
    if (rc != 0)
        fail_msg("unexpected error: %s", err);
}

/* --- Defaults --- */

static void test_defaults_match_contract(void **state)
{
    (void)state;
    struct tp_config c;
    tp_config_defaults(&c);
    assert_int_equal(c.server.http_port, 8080);
    assert_int_equal(c.server.https_port, 8443);
    assert_string_equal(c.server.bind, "0.0.0.0");
    assert_int_equal(c.server.workers, 0);
    assert_true(c.server.pin_workers);
    assert_string_equal(c.server.fanout_io_uring, "auto");
    assert_string_equal(c.server.web_root, "web");
    assert_string_equal(c.server.allowed_origins, "");
    assert_string_equal(c.server.tls_cert, "");
    assert_string_equal(c.server.tls_key, "");
    assert_string_equal(c.server.var_dir, "var");
    assert_int_equal(c.server.max_body, 64 * 1024);
    assert_int_equal(c.server.header_timeout_ms, 10000);
    assert_int_equal(c.server.keepalive_timeout_ms, 30000);
    assert_int_equal(c.server.shutdown_timeout_ms, 5000);
    assert_int_equal(c.server.max_connections, 20000);
    assert_string_equal(c.redis.url, "");
    assert_int_equal(c.redis.timeout_ms, 2000);
    assert_string_equal(c.postgres.url, "");
    assert_int_equal(c.postgres.timeout_ms, 5000);
    assert_int_equal(c.postgres.write_gap_ms, 20);
    /* The settlement yield spans the settlement pacing span (game/settle.h): the config table
     * holds the default as text, so this is where the two are tied. */
    assert_int_equal(c.postgres.settle_yield_ms, TP_SETTLE_PACE_MS);
    assert_int_equal(c.game.betting_s, 30);
    assert_int_equal(c.game.live_s, 30);
    assert_int_equal(c.game.n_band_edges, 4);
    assert_int_equal(c.game.band_edges_bps[0], -10);
    assert_int_equal(c.game.band_edges_bps[1], -3);
    assert_int_equal(c.game.band_edges_bps[2], 3);
    assert_int_equal(c.game.band_edges_bps[3], 10);
    assert_int_equal(c.game.rake_bps, 300);
    assert_int_equal(c.game.min_stake, 100);
    assert_int_equal(c.game.max_stake, 100000);
    assert_int_equal(c.game.start_balance, 100000);
    assert_int_equal(c.game.tick_ms, 100);
    assert_true(c.game.volatility == 0.8);
    assert_int_equal(c.game.buckets, 1);
    assert_int_equal(c.game.grace_ms, 5000);
    assert_int_equal(c.limits.max_inflight_bets, 4096);
    assert_int_equal(c.limits.ws_max_per_user, 8);
    assert_int_equal(c.limits.ws_msg_rate, 50);
    assert_int_equal(c.limits.ws_max_message, 64 * 1024);
    assert_int_equal(c.limits.ws_send_queue, 1024 * 1024);
    assert_string_equal(c.log.level, "info");
    assert_string_equal(c.source, "");
}

/* Compares the value parts of two configurations (not source and origins). */
static void assert_same_values(const struct tp_config *a, const struct tp_config *b)
{
    assert_memory_equal(&a->server, &b->server, sizeof(a->server));
    assert_memory_equal(&a->redis, &b->redis, sizeof(a->redis));
    assert_memory_equal(&a->postgres, &b->postgres, sizeof(a->postgres));
    assert_memory_equal(&a->game, &b->game, sizeof(a->game));
    assert_memory_equal(&a->limits, &b->limits, sizeof(a->limits));
    assert_memory_equal(&a->log, &b->log, sizeof(a->log));
}

/* The documented config/tickpool.ini must say exactly what the built-in defaults are. */
static void test_shipped_ini_equals_defaults(void **state)
{
    (void)state;
    const char *src = getenv("TP_SRC");
    if (src == NULL)
        skip();
    char path[600];
    snprintf(path, sizeof(path), "%s/config/tickpool.ini", src);
    struct tp_config file, def;
    char err[600] = "";
    int rc = tp_config_load(&file, path, err, sizeof(err));
    if (rc != 0)
        fail_msg("shipped config does not load: %s", err);
    tp_config_defaults(&def);
    assert_same_values(&file, &def);
    assert_string_equal(file.source, path);
}

static void test_null_path(void **state)
{
    (void)state;
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));

    /* No config/tickpool.ini in cwd: defaults only. */
    assert_int_equal(chdir(tmpdir), 0);
    struct tp_config c, def;
    char err[600];
    assert_int_equal(tp_config_load(&c, NULL, err, sizeof(err)), 0);
    tp_config_defaults(&def);
    assert_same_values(&c, &def);
    assert_string_equal(c.source, "");

    /* With one: it is read. */
    char sub[400];
    snprintf(sub, sizeof(sub), "%s/withcfg", tmpdir);
    mkdir(sub, 0700);
    assert_int_equal(chdir(sub), 0);
    mkdir("config", 0700);
    FILE *f = fopen("config/tickpool.ini", "w");
    assert_non_null(f);
    fputs("[game]\nrake_bps = 250\n", f);
    fclose(f);
    assert_int_equal(tp_config_load(&c, NULL, err, sizeof(err)), 0);
    assert_int_equal(c.game.rake_bps, 250);
    assert_string_equal(c.source, "config/tickpool.ini");
    assert_int_equal(chdir(cwd), 0);

    /* An explicit path that does not exist is an error. */
    snprintf(sub, sizeof(sub), "%s/nope.ini", tmpdir);
    assert_int_equal(tp_config_load(&c, sub, err, sizeof(err)), TP_EINVAL);
    assert_non_null(strstr(err, "nope.ini"));
    assert_non_null(strstr(err, "No such file"));
}

/* --- Bad values --- */

struct bad {
    const char *section, *key, *value, *want;
};

/* The two messages of an allowed_origins entry that is not an origin as browsers send it. */
#define SCHEME_HOST                                                                                \
    "each entry must be an origin: scheme://host[:port], no path, no trailing '/', no user"
#define HTTP_OR_HTTPS "each entry must be an origin: http:// or https:// and a host"

static const struct bad bad_values[] = {
    /* out of range */
    {"game", "rake_bps", "5000", "must be between 0 and 1000 (got 5000)"},
    {"game", "rake_bps", "1001", "must be between 0 and 1000"},
    {"game", "rake_bps", "-1", "must be between 0 and 1000"},
    {"server", "http_port", "70000", "must be between 0 and 65535"},
    {"server", "http_port", "-1", "must be between 0 and 65535"},
    {"game", "tick_ms", "5", "must be between 10ms and 10s"},
    {"game", "tick_ms", "20000", "must be between 10ms and 10s"},
    {"game", "buckets", "0", "must be between 1 and 16384"},
    {"game", "buckets", "16385", "must be between 1 and 16384"},
    {"game", "betting_s", "0", "must be between 1 and 86400"},
    {"game", "min_stake", "0", "must be between 1 and"},
    {"game", "max_stake", "-5", "must be between 1 and"},
    {"server", "header_timeout", "5h", "must be between 100ms and 1h (got 5h)"},
    {"postgres", "write_gap", "2s", "must be between 0ms and 1s (got 2s)"},
    {"postgres", "write_gap", "1001", "must be between 0ms and 1s"},
    {"postgres", "settle_yield", "11s", "must be between 0ms and 10s (got 11s)"},
    {"limits", "ws_max_message", "1g", "must be between 128 and 64m"},
    {"game", "volatility", "0", "must be greater than 0 and at most 10"},
    {"game", "volatility", "-0.5", "must be greater than 0 and at most 10"},
    {"game", "volatility", "10.5", "must be greater than 0 and at most 10"},
    {"game", "volatility", "1e309", "must be a number"},
    {"redis", "replicas_ack", "17", "must be between 0 and 16 (got 17)"},
    {"redis", "replicas_ack", "-1", "must be between 0 and 16"},
    /* not a number, trailing junk, overflow */
    {"game", "rake_bps", "abc", "must be an integer (got \"abc\")"},
    {"game", "rake_bps", "12x", "must be an integer"},
    {"game", "rake_bps", "1.5", "must be an integer"},
    {"game", "rake_bps", "0x10", "must be an integer"},
    {"game", "min_stake", "99999999999999999999", "must be an integer"},
    {"server", "max_connections", "", "must be an integer"},
    {"redis", "replicas_ack", "one", "must be an integer (got \"one\")"},
    {"redis", "replicas_ack", "1.5", "must be an integer"},
    {"game", "volatility", "nan", "must be a number"},
    {"game", "volatility", "inf", "must be a number"},
    {"game", "volatility", "0.8x", "must be a number"},
    {"game", "volatility", "", "must be a number"},
    /* bad units */
    {"server", "max_body", "64q", "must be a size"},
    {"server", "max_body", "-1k", "must be a size"},
    {"server", "max_body", "k", "must be a size"},
    {"server", "max_body", "64kbx", "must be a size"},
    {"server", "max_body", "99999999999999999999", "must be a size"},
    {"server", "max_body", "99999999999g", "must be a size"},
    {"server", "header_timeout", "10x", "must be a duration"},
    {"server", "header_timeout", "-5s", "must be a duration"},
    {"server", "header_timeout", "1.5s", "must be a duration"},
    {"server", "header_timeout", "s", "must be a duration"},
    {"postgres", "write_gap", "-20ms", "must be a duration"},
    {"postgres", "write_gap", "20us", "must be a duration"},
    {"postgres", "write_gap", "", "must be a duration"},
    {"game", "grace", "99999999999999999h", "must be a duration"},
    {"game", "betting_s", "500ms", "must be a whole number of seconds (got 500ms)"},
    {"game", "betting_s", "30x", "must be a duration like 250ms, 10s, 2m or a number of seconds"},
    /* band edges */
    {"game", "band_edges_bps", "3,3", "values must be strictly increasing"},
    {"game", "band_edges_bps", "3,1", "values must be strictly increasing"},
    {"game", "band_edges_bps", "", "must list 1 to 15 values (got none)"},
    {"game", "band_edges_bps", "1,,2", "empty value"},
    {"game", "band_edges_bps", "1,2,", "empty value"},
    {"game", "band_edges_bps", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
     "must list 1 to 15 values"},
    {"game", "band_edges_bps", "-10001,0", "each value must be between -10000 and 10000"},
    {"game", "band_edges_bps", "10001", "each value must be between -10000 and 10000"},
    {"game", "band_edges_bps", "a,b", "must be comma-separated integers"},
    {"game", "band_edges_bps", "1;2", "must be comma-separated integers"},
    /* workers */
    {"server", "workers", "0", "must be auto or between 1 and 1024"},
    {"server", "workers", "-1", "must be auto or between 1 and 1024"},
    {"server", "workers", "autox", "must be auto or between 1 and 1024"},
    {"server", "workers", "AUTO ", "must be auto"},
    {"server", "workers", "1025", "must be auto or between 1 and 1024"},
    /* booleans */
    {"server", "pin_workers", "maybe", "must be true or false (got \"maybe\")"},
    {"server", "pin_workers", "", "must be true or false"},
    {"server", "pin_workers", "2", "must be true or false"},
    {"server", "pin_workers", "truely", "must be true or false"},
    /* strings */
    {"log", "level", "verbose", "must be debug, info, warn or error"},
    {"server", "bind", "", "must not be empty"},
    {"server", "var_dir", "", "must not be empty"},
    {"server", "fanout_io_uring", "on", "must be auto or off (got \"on\")"},
    {"server", "fanout_io_uring", "", "must be auto or off"},
    {"server", "fanout_io_uring", "AUTO", "must be auto or off"},
    {"server", "fanout_io_uring", "io_uring", "too long"},
    {"server", "allowed_origins", "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", "too many origins"},
    /* origins a browser never sends would refuse every page silently */
    {"server", "allowed_origins", "https://game.example.com/",
     "each entry must be an origin: scheme://host[:port], no path, no trailing '/', no user (got "
     "\"https://game.example.com/\")"},
    {"server", "allowed_origins", "https://game.example.com/play", SCHEME_HOST},
    {"server", "allowed_origins", "game.example.com", HTTP_OR_HTTPS},
    {"server", "allowed_origins", "https://a.example,ftp://b.example", HTTP_OR_HTTPS},
    {"server", "allowed_origins", "https://", HTTP_OR_HTTPS},
    {"server", "allowed_origins", "https://Game.example.com",
     "each entry must be an origin with a lower-case host"},
    {"server", "allowed_origins", "https://u@game.example.com", SCHEME_HOST},
    {"server", "allowed_origins", "https://a.example b.example", SCHEME_HOST},
    {"server", "allowed_origins", "https://:8443", "each entry must be an origin: a host before"},
    {"server", "allowed_origins", "https://a.example:x",
     "each entry must be an origin: the port after the host is 1-65535"},
    {"server", "allowed_origins", "https://a.example:70000",
     "each entry must be an origin: the port after the host is 1-65535"},
    {"server", "allowed_origins",
     "https://a.example:", "each entry must be an origin: the port after the host is 1-65535"},
    {"server", "allowed_origins", "http://[::1",
     "each entry must be an origin: an IPv6 host goes in brackets"},
    /* browsers leave the scheme's default port out of Origin: such an entry never matches */
    {"server", "allowed_origins", "https://game.example.com:443",
     "each entry must be an origin without its scheme's default port"},
    {"server", "allowed_origins", "http://localhost:80",
     "each entry must be an origin without its scheme's default port"},
};

static void test_bad_values_in_file(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        const struct bad *b = &bad_values[i];
        /* Values with leading/trailing spaces cannot be expressed in INI (inih strips). */
        if (b->value[0] == ' ' || (b->value[0] && b->value[strlen(b->value) - 1] == ' '))
            continue;
        char ini[400], want[400];
        snprintf(ini, sizeof(ini), "; comment\n[%s]\n%s = %s\n", b->section, b->key, b->value);
        snprintf(want, sizeof(want), ":3: %s.%s: %s", b->section, b->key, b->want);
        expect_error(ini, want);
    }
}

static void test_bad_values_in_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        const struct bad *b = &bad_values[i];
        char name[128], want[400];
        snprintf(name, sizeof(name), "TICKPOOL_%s_%s", b->section, b->key);
        for (char *p = name; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        setenv(name, b->value, 1);
        snprintf(want, sizeof(want), "%s.%s: %s", b->section, b->key, b->want);
        expect_error(NULL, want);
        char from[200];
        snprintf(from, sizeof(from), "[from %s]", name);
        expect_error(NULL, from);
        unsetenv(name);
    }
}

static void test_exact_env_message(void **state)
{
    (void)state;
    setenv("TICKPOOL_GAME_RAKE_BPS", "5000", 1);
    struct tp_config c;
    char err[600];
    assert_int_equal(tp_config_load(&c, write_ini(""), err, sizeof(err)), TP_EINVAL);
    assert_string_equal(err, "game.rake_bps: must be between 0 and 1000 (got 5000) "
                             "[from TICKPOOL_GAME_RAKE_BPS]");
}

static void test_relations(void **state)
{
    (void)state;
    expect_error("[game]\nmin_stake = 5000\nmax_stake = 4999\n",
                 "game.min_stake: must not exceed game.max_stake (5000 > 4999)");
    expect_error("[server]\nhttp_port = 9000\nhttps_port = 9000\n", "must differ");
    expect_error("[server]\ntls_cert = /etc/cert.pem\n", "set both or neither");
    expect_error("[game]\ntick_ms = 70\n", "game.tick_ms: must divide game.betting_s and "
                                           "game.live_s (70 ms into 30 s and 30 s)");
    expect_error("[game]\ntick_ms = 300\nbetting_s = 2\nlive_s = 3\n", "must divide");
    setenv("TICKPOOL_GAME_MAX_STAKE", "50", 1);
    expect_error(NULL, "[from TICKPOOL_GAME_MAX_STAKE]");
    unsetenv("TICKPOOL_GAME_MAX_STAKE");

    /* min == max is fine; both ports 0 is fine (no listener: CLI use). */
    struct tp_config c;
    load_ok(&c, "[game]\nmin_stake = 500\nmax_stake = 500\n[server]\nhttp_port=0\nhttps_port=0\n");
    assert_int_equal(c.game.min_stake, 500);
    assert_int_equal(c.server.http_port, 0);

    /* WAIT after every script works on one primary as on a cluster's masters: redis.mode does
     * not restrict redis.replicas_ack. */
    load_ok(&c, "[redis]\nreplicas_ack = 1\n");
    assert_string_equal(c.redis.mode, "standalone");
    assert_int_equal(c.redis.replicas_ack, 1);
    load_ok(&c, "[redis]\nmode = cluster\nurl = redis://h1:7000,redis://h2:7001\n"
                "replicas_ack = 16\n");
    assert_int_equal(c.redis.replicas_ack, 16);
}

/* Exact integers: the largest stakes, balances and per-bucket max_stake the Lua
 * scripts settle exactly are accepted; one more is refused with the key and the rule named. */
static void test_exact_integer_bounds(void **state)
{
    (void)state;
    struct tp_config c;
    load_ok(&c, "[game]\nmax_stake = 999999999999999\nstart_balance = 999999999999999\n");
    assert_int_equal(c.game.max_stake, INT64_C(999999999999999));
    expect_error("[game]\nmax_stake = 1000000000000000\n",
                 "game.max_stake: must be between 1 and 999999999999999");
    expect_error("[game]\nstart_balance = 1000000000000000\n",
                 "game.start_balance: must be between 1 and 999999999999999");
    expect_error("[game]\nmin_stake = 1000000000000000\n",
                 "game.min_stake: must be between 1 and 999999999999999");
    /* Four buckets share 4 * 10^15: a lone max bet must fit one bucket's share. */
    load_ok(&c, "[game]\nbuckets = 4\nmax_stake = 999999999999999\n");
    load_ok(&c, "[game]\nbuckets = 16384\nmax_stake = 244140625000\n");
    expect_error("[game]\nbuckets = 16384\nmax_stake = 244140625001\n",
                 "game.max_stake: must not exceed 4000000000000000 / game.buckets = 244140625000");
    expect_error("[game]\nbuckets = 5\nmax_stake = 800000000000001\n", "stay below 2^52");
    /* One bucket's idempotency filter is one Redis string of at most 2^32 bits. */
    load_ok(&c, "[game]\nidem_filter = 512m\n");
    assert_int_equal(c.game.idem_filter, (size_t)512 << 20);
    load_ok(&c, "[game]\nbuckets = 2\nidem_filter = 1g\n");
    expect_error("[game]\nidem_filter = 513m\n",
                 "game.idem_filter: must not exceed 512m per bucket");
    expect_error("[game]\nidem_filter = 63k\n", "game.idem_filter: must be between");
}

/* --- File structure errors --- */

static void test_file_structure(void **state)
{
    (void)state;
    struct tp_config c;
    char err[600];
    const char *p = write_ini("[server]\nhttp_port = 1\nprot = 2\n");
    assert_int_equal(tp_config_load(&c, p, err, sizeof(err)), TP_EINVAL);
    char want[600];
    snprintf(want, sizeof(want), "%s:3: unknown key \"server.prot\"", p);
    assert_string_equal(err, want);

    expect_error("[servr]\nhttp_port = 1\n", ":2: unknown key \"servr.http_port\"");
    expect_error("http_port = 1\n", ":1: key \"http_port\" outside any [section]");
    expect_error("[game]\nrake_bps = 1\nrake_bps = 2\n", ":3: duplicate key \"game.rake_bps\"");
    expect_error("[game]\nrake_bps\n", ":2: syntax error");
    expect_error("[game\nrake_bps = 1\n", ":1: syntax error");
    expect_error("[GAME]\nrake_bps = 1\n", "unknown key \"GAME.rake_bps\"");
    expect_error("[game]\nRAKE_BPS = 1\n", "unknown key \"game.RAKE_BPS\"");
    /* An indented line is not a continuation of the previous value. */
    expect_error("[game]\nrake_bps = 1\n  2\n", ":3: syntax error");

    /* Comments, inline comments, blank lines and a long value are fine. */
    char ini[2000] = "# hash comment\n; semicolon comment\n\n[game]\nrake_bps = 123 ; why\n"
                     "[server]\nallowed_origins = ";
    for (int i = 0; i < 16; i++) {
        if (i)
            strcat(ini, ",");
        strcat(ini, "https://host-number-xx.example.com:8443");
    }
    strcat(ini, "\n");
    load_ok(&c, ini);
    assert_int_equal(c.game.rake_bps, 123);
    assert_int_equal(strlen(c.server.allowed_origins), 16 * 39 + 15);

    /* A value too long for its field is an error, not a silent truncation. */
    char big[1500] = "[server]\nbind = ";
    memset(big + strlen(big), 'a', 100);
    strcat(big, "\n");
    expect_error(big, "server.bind: too long");
}

/* --- Environment --- */

static void test_env_precedence(void **state)
{
    (void)state;
    struct tp_config c;
    const char *ini = "[game]\nrake_bps = 200\nbetting_s = 10\n[limits]\nws_send_queue = 2m\n";
    load_ok(&c, ini);
    assert_int_equal(c.game.rake_bps, 200);
    assert_int_equal(c.game.betting_s, 10);

    setenv("TICKPOOL_GAME_RAKE_BPS", "100", 1);
    setenv("TICKPOOL_GAME_BETTING_S", "2m", 1);
    setenv("TICKPOOL_GAME_BAND_EDGES_BPS", " -5 , 0,5 ", 1);
    setenv("TICKPOOL_SERVER_WORKERS", "3", 1);
    setenv("TICKPOOL_REDIS_URL", "", 1); /* set but empty: stays empty */
    load_ok(&c, ini);
    assert_int_equal(c.game.rake_bps, 100);
    assert_int_equal(c.game.betting_s, 120);
    assert_int_equal(c.game.n_band_edges, 3);
    assert_int_equal(c.game.band_edges_bps[0], -5);
    assert_int_equal(c.game.band_edges_bps[1], 0);
    assert_int_equal(c.game.band_edges_bps[2], 5);
    assert_int_equal(c.server.workers, 3);
    assert_int_equal(tp_config_workers(&c), 3);
    assert_int_equal(c.limits.ws_send_queue, 2 * 1024 * 1024); /* file value kept */
}

/* Origins as browsers send them pass, blanks around entries and empty entries ignored. */
static void test_origins_ok(void **state)
{
    (void)state;
    struct tp_config c;
    load_ok(&c, "[server]\nallowed_origins = https://game.example.com , http://localhost:8080,"
                ",http://[::1]:8443\n");
    assert_string_equal(c.server.allowed_origins,
                        "https://game.example.com , http://localhost:8080,,http://[::1]:8443");
}

/* The list syntax both the config check and the /ws check read: blanks trimmed, empties skipped. */
static void test_origins_next(void **state)
{
    (void)state;
    const char *want[] = {"https://a.example", "http://b:8080", "x"}, *e;
    size_t len, k = 0;
    for (const char *c = " https://a.example ,,\t, http://b:8080,x,  ";
         tp_config_origins_next(&c, &e, &len); k++) {
        assert_true(k < 3);
        assert_int_equal(len, strlen(want[k]));
        assert_memory_equal(e, want[k], len);
    }
    assert_int_equal(k, 3);
    const char *c = NULL;
    assert_false(tp_config_origins_next(&c, &e, &len));
    c = " , ,";
    assert_false(tp_config_origins_next(&c, &e, &len));
}

static void test_env_unknown_and_allowlist(void **state)
{
    (void)state;
    setenv("TICKPOOL_SERVER_PROT", "1", 1);
    expect_error(NULL, "unknown environment variable TICKPOOL_SERVER_PROT");
    unsetenv("TICKPOOL_SERVER_PROT");
    setenv("TICKPOOL_GAME_RAKE", "1", 1);
    expect_error(NULL, "TICKPOOL_GAME_RAKE");
    unsetenv("TICKPOOL_GAME_RAKE");
    setenv("TICKPOOL_game_rake_bps", "1", 1); /* names are upper case */
    expect_error(NULL, "TICKPOOL_game_rake_bps");
    unsetenv("TICKPOOL_game_rake_bps");
    setenv("TICKPOOL_", "1", 1);
    expect_error(NULL, "unknown environment variable");
    unsetenv("TICKPOOL_");

    /* Secrets read elsewhere are allowed and never become config values. */
    setenv("TICKPOOL_AUTH_SECRET", "s3cr3t", 1);
    setenv("TICKPOOL_REDIS_PASSWORD", "pw", 1);
    setenv("TICKPOOL_PASSWORD", "pw", 1);
    setenv("NOT_TICKPOOL_X", "1", 1);
    struct tp_config c;
    load_ok(&c, NULL);
    assert_string_equal(c.redis.url, "");
    unsetenv("NOT_TICKPOOL_X");
    unsetenv("TICKPOOL_AUTH_SECRET_X");
    setenv("TICKPOOL_AUTH_SECRETS", "x", 1);
    expect_error(NULL, "TICKPOOL_AUTH_SECRETS");
}

static void test_workers(void **state)
{
    (void)state;
    struct tp_config c;
    load_ok(&c, "[server]\nworkers = auto\n");
    assert_int_equal(c.server.workers, 0);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(tp_config_workers(&c), ncpu < 1 ? 1 : ncpu);
    load_ok(&c, "[server]\nworkers = 1\n");
    assert_int_equal(tp_config_workers(&c), 1);
    load_ok(&c, "[server]\nworkers = 1024\n");
    assert_int_equal(tp_config_workers(&c), 1024);
    /* Pinning is a switch of its own (a shared host turns it off), in any spelling parse_bool
     * knows, from the file or the environment. */
    load_ok(&c, "[server]\nfanout_io_uring = off\n");
    assert_string_equal(c.server.fanout_io_uring, "off");
    load_ok(&c, "[server]\npin_workers = off\n");
    assert_false(c.server.pin_workers);
    load_ok(&c, "[server]\npin_workers = TRUE\n");
    assert_true(c.server.pin_workers);
    setenv("TICKPOOL_SERVER_PIN_WORKERS", "false", 1);
    load_ok(&c, "[server]\npin_workers = yes\n");
    assert_false(c.server.pin_workers);
    unsetenv("TICKPOOL_SERVER_PIN_WORKERS");
}

/* --- Units --- */

static void test_parse_duration(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(tp_config_parse_duration_ms("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(tp_config_parse_duration_ms("10s", &v), 0);
    assert_int_equal(v, 10000);
    assert_int_equal(tp_config_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(tp_config_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(tp_config_parse_duration_ms("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(tp_config_parse_duration_ms("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(tp_config_parse_duration_ms("9223372036854775807", &v), 0);
    assert_int_equal(v, INT64_MAX);

    static const char *const bad[] = {"",
                                      "-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "1s ",
                                      "1 s",
                                      "1.5s",
                                      "1e3",
                                      "s",
                                      "ms",
                                      "1sec",
                                      "1S",
                                      "1msx",
                                      "1hh",
                                      "0x10",
                                      "9223372036854775808",
                                      "9223372036854775807s",
                                      "99999999999999999999999",
                                      "2562047788015216h",
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        v = -7;
        if (tp_config_parse_duration_ms(bad[i], &v) != TP_EINVAL)
            fail_msg("duration \"%s\" accepted", bad[i]);
        assert_int_equal(v, -7); /* output untouched on error */
    }
    assert_int_equal(tp_config_parse_duration_ms(NULL, &v), TP_EINVAL);
}

static void test_parse_size(void **state)
{
    (void)state;
    size_t v;
    struct {
        const char *s;
        size_t want;
    } good[] = {{"0", 0},         {"100", 100},     {"64k", 65536},  {"64K", 65536},
                {"64kb", 65536},  {"64KiB", 65536}, {"1m", 1 << 20}, {"1MB", 1 << 20},
                {"1g", 1u << 30}, {"100b", 100},    {"100B", 100}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (tp_config_parse_size(good[i].s, &v) != 0)
            fail_msg("size \"%s\" rejected", good[i].s);
        assert_int_equal(v, good[i].want);
    }
    static const char *const bad[] = {"",
                                      "-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "1.5k",
                                      "k",
                                      "1kk",
                                      "1kbb",
                                      "1x",
                                      "1bb",
                                      "1t",
                                      "0x10",
                                      "1 k",
                                      "18446744073709551616",
                                      "17179869184g",
                                      "1ki",
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        v = 7;
        if (tp_config_parse_size(bad[i], &v) != TP_EINVAL)
            fail_msg("size \"%s\" accepted", bad[i]);
        assert_int_equal(v, 7);
    }
    assert_int_equal(tp_config_parse_size(NULL, &v), TP_EINVAL);
}

/* Parsers never read past the terminating NUL: each input ends right before a PROT_NONE page. */
static void test_parsers_guard_page(void **state)
{
    (void)state;
    long pg = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
    static const char *const inputs[] = {"",   "1",   "64k", "64kb", "64Ki", "1m", "250ms",
                                         "2m", "1mi", "9",   "10s",  "1h",   "-",  "99999999"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        size_t n = strlen(inputs[i]) + 1;
        char *s = map + pg - n;
        memcpy(s, inputs[i], n);
        int64_t d;
        size_t z;
        (void)tp_config_parse_duration_ms(s, &d);
        (void)tp_config_parse_size(s, &z);
    }
    munmap(map, (size_t)pg * 2);
}

/* Hostile values through every key: never crash, and either load or fail with a message that
 * names the key. */
static void test_random_values(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "SERVER_HTTP_PORT",    "SERVER_WORKERS",        "SERVER_MAX_BODY", "SERVER_HEADER_TIMEOUT",
        "GAME_BAND_EDGES_BPS", "GAME_VOLATILITY",       "GAME_BETTING_S",  "GAME_MIN_STAKE",
        "LOG_LEVEL",           "SERVER_ALLOWED_ORIGINS"};
    static const char alphabet[] = "0123456789,-+ .kmsgbhKMx\t;=#'\"auto";
    unsigned seed = 12345;
    for (int iter = 0; iter < 5000; iter++) {
        char val[24];
        int len = (int)(rand_r(&seed) % (sizeof(val) - 1));
        for (int i = 0; i < len; i++)
            val[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        val[len] = '\0';
        char name[64];
        snprintf(name, sizeof(name), "TICKPOOL_%s", keys[rand_r(&seed) % 10]);
        setenv(name, val, 1);
        struct tp_config c;
        char err[600] = "";
        if (tp_config_load(&c, write_ini(""), err, sizeof(err)) != 0) {
            if (strstr(err, name) == NULL)
                fail_msg("error for %s=\"%s\" does not name it: %s", name, val, err);
        }
        unsetenv(name);
    }
}

/* --- Printing --- */

static char *print_to_string(const struct tp_config *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tp_config_print(c, f);
    fclose(f);
    return text;
}

static void test_print(void **state)
{
    (void)state;
    setenv("TICKPOOL_GAME_RAKE_BPS", "123", 1);
    setenv("TICKPOOL_REDIS_URL", "redis://:hunter2@db.example:6379/0", 1);
    setenv("TICKPOOL_POSTGRES_URL", "postgres://tp:s3cret@pg:5432/tp?sslmode=require&password=zz",
           1);
    struct tp_config c;
    load_ok(&c, "[game]\nbetting_s = 7\nvolatility = 0.35\n[server]\nmax_body = 1000\n");
    char *text = print_to_string(&c);

    assert_non_null(strstr(text, "[game]\n"));
    assert_non_null(strstr(text, "rake_bps = 123 ; env TICKPOOL_GAME_RAKE_BPS\n"));
    assert_non_null(strstr(text, "betting_s = 7 ; file\n"));
    assert_non_null(strstr(text, "volatility = 0.35 ; file\n"));
    assert_non_null(strstr(text, "live_s = 30 ; default\n"));
    assert_non_null(strstr(text, "max_body = 1000 ; file\n"));
    assert_non_null(strstr(text, "ws_send_queue = 1m ; default\n"));
    assert_non_null(strstr(text, "header_timeout = 10s ; default\n"));
    assert_non_null(strstr(text, "band_edges_bps = -10,-3,3,10 ; default\n"));
    assert_non_null(strstr(text, "workers = auto ; default\n"));
    assert_non_null(strstr(text, "url = redis://:****@db.example:6379/0 ; env"));
    assert_non_null(
        strstr(text, "url = postgres://tp:****@pg:5432/tp?sslmode=require&password=****"));
    assert_null(strstr(text, "hunter2"));
    assert_null(strstr(text, "s3cret"));
    assert_null(strstr(text, "zz"));

    /* The printout is itself a valid config that loads (env cleared) to the same values, except
     * the masked secrets. */
    clear_env();
    struct tp_config back;
    load_ok(&back, text);
    assert_int_equal(back.game.rake_bps, 123);
    assert_string_equal(back.redis.url, "redis://:****@db.example:6379/0");
    strcpy(back.redis.url, c.redis.url);
    strcpy(back.postgres.url, c.postgres.url);
    assert_same_values(&back, &c);
    free(text);
}

static void test_mask_url(void **state)
{
    (void)state;
    char out[256];
    struct {
        const char *in, *want;
    } cases[] = {
        {"redis://:pw@h:6379", "redis://:****@h:6379"},
        {"redis://user:pw@h", "redis://user:****@h"},
        {"rediss://u:p@ss@h/0", "rediss://u:****@h/0"},
        {"redis://h:6379/0", "redis://h:6379/0"},
        {"redis://user@h", "redis://user@h"},
        {"postgres://u@h/db?password=x&sslmode=y", "postgres://u@h/db?password=****&sslmode=y"},
        {"host=h user=u password=secret dbname=d", "host=h user=u password=**** dbname=d"},
        {"host=h password='a b' dbname=d", "host=h password=**** dbname=d"},
        {"postgres://u:p@h/db?mypassword=keep", "postgres://u:****@h/db?mypassword=keep"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tp_config_mask_url(cases[i].in, out, sizeof(out));
        assert_string_equal(out, cases[i].want);
    }
    /* Tiny output buffers stay terminated and never leak the secret's tail. */
    char small[12];
    tp_config_mask_url("redis://:topsecret@h", small, sizeof(small));
    assert_int_equal(strlen(small), 11);
    assert_null(strstr(small, "secret"));
}

/* --- Embedded services: <var_dir>/<svc>.url --- */

static void test_var_dir_urls(void **state)
{
    (void)state;
    char var[400], p[500];
    snprintf(var, sizeof(var), "%s/var", tmpdir);
    mkdir(var, 0700);
    snprintf(p, sizeof(p), "%s/redis.url", var);
    FILE *f = fopen(p, "w");
    fputs("redis://127.0.0.1:6390\nsecond line ignored\n", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/postgres.url", var);
    f = fopen(p, "w");
    fputs("postgresql://tickpool@127.0.0.1:5433/tickpool\r\n", f);
    fclose(f);

    setenv("TICKPOOL_SERVER_VAR_DIR", var, 1);
    struct tp_config c;
    load_ok(&c, NULL);
    assert_string_equal(c.redis.url, "redis://127.0.0.1:6390");
    assert_string_equal(c.postgres.url, "postgresql://tickpool@127.0.0.1:5433/tickpool");
    char *text = print_to_string(&c);
    assert_non_null(strstr(text, "url = redis://127.0.0.1:6390 ; var_dir\n"));
    free(text);

    /* A configured URL wins over the file. */
    setenv("TICKPOOL_REDIS_URL", "redis://10.0.0.1:6379", 1);
    load_ok(&c, NULL);
    assert_string_equal(c.redis.url, "redis://10.0.0.1:6379");
    assert_string_equal(c.postgres.url, "postgresql://tickpool@127.0.0.1:5433/tickpool");

    /* A missing var_dir is fine: the URLs stay empty. */
    clear_env();
    setenv("TICKPOOL_SERVER_VAR_DIR", "/nonexistent/tickpool-var", 1);
    load_ok(&c, NULL);
    assert_string_equal(c.redis.url, "");
}

/* A test hook: unset or bad values (not an integer, out of range, trailing garbage, empty,
 * overflowing) give the default; the bounds themselves are in range. */
static void test_test_hook(void **state)
{
    (void)state;
    const char *name = "TP_TEST_UNIT_HOOK";
    unsetenv(name);
    assert_int_equal(tp_config_test_hook(name, 1, 100, 42), 42);
    const char *bad[] = {"0", "101", "-1", "", "ten", "10x", "1e2", "99999999999999999999999"};
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++) {
        setenv(name, bad[i], 1);
        assert_int_equal(tp_config_test_hook(name, 1, 100, 42), 42);
    }
    const struct {
        const char *s;
        int64_t v;
    } good[] = {{"1", 1}, {"100", 100}, {"7", 7}, {"+8", 8}};
    for (size_t i = 0; i < TP_ARRAY_LEN(good); i++) {
        setenv(name, good[i].s, 1);
        assert_int_equal(tp_config_test_hook(name, 1, 100, 42), good[i].v);
    }
    unsetenv(name);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/tp_test_config.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    /* Run from the temp dir so no config/tickpool.ini is picked up by NULL-path loads. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults_match_contract, setup),
        cmocka_unit_test_setup(test_shipped_ini_equals_defaults, setup),
        cmocka_unit_test_setup(test_null_path, setup),
        cmocka_unit_test_setup(test_bad_values_in_file, setup),
        cmocka_unit_test_setup(test_bad_values_in_env, setup),
        cmocka_unit_test_setup(test_exact_env_message, setup),
        cmocka_unit_test_setup(test_relations, setup),
        cmocka_unit_test_setup(test_exact_integer_bounds, setup),
        cmocka_unit_test_setup(test_file_structure, setup),
        cmocka_unit_test_setup(test_env_precedence, setup),
        cmocka_unit_test_setup(test_origins_ok, setup),
        cmocka_unit_test(test_origins_next),
        cmocka_unit_test_setup(test_env_unknown_and_allowlist, setup),
        cmocka_unit_test_setup(test_workers, setup),
        cmocka_unit_test_setup(test_parse_duration, setup),
        cmocka_unit_test_setup(test_parse_size, setup),
        cmocka_unit_test_setup(test_parsers_guard_page, setup),
        cmocka_unit_test_setup(test_random_values, setup),
        cmocka_unit_test_setup(test_print, setup),
        cmocka_unit_test_setup(test_mask_url, setup),
        cmocka_unit_test_setup(test_var_dir_urls, setup),
        cmocka_unit_test_setup(test_test_hook, setup),
    };
    if (chdir(tmpdir) != 0)
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
