/*
 * Configuration: config/tickpool.ini, then TICKPOOL_<SECTION>_<KEY> environment overrides,
 * validated by one table (src/base/config_table.c) and frozen. Modules get a const pointer to their
 * own sub-struct.
 */
#ifndef TP_CONFIG_H
#define TP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TP_CONFIG_MAX_BAND_EDGES 15
#define TP_CONFIG_MAX_ORIGINS 16
#define TP_CONFIG_MAX_PROXIES 16
/* Capacity of the per-key origin record (src/base/config_table.c). */
#define TP_CONFIG_MAX_KEYS 64
/* Largest idempotency filter of one bucket (bet_batch.lua FILTER_MAX: 2^32 bits). */
#define TP_CONFIG_IDEM_FILTER_BUCKET_MAX ((size_t)512 * 1024 * 1024)
/* A round's pool over all buckets never exceeds this (the bet script's POOL_MAX: pool_full):
 * 4 * 10^15 < 2^52, so every settlement number stays an exact integer in a Lua double.
 * game.max_stake must fit one bucket's share, floor(TP_CONFIG_POOL_MAX / game.buckets). */
#define TP_CONFIG_POOL_MAX INT64_C(4000000000000000)
/* Smallest game.tick_ms: what bounds the ticks a time window can hold. */
#define TP_CONFIG_TICK_MS_MIN 10

/* Where a key's effective value came from (shown by tp_config_print). */
enum tp_config_origin {
    TP_CONFIG_FROM_DEFAULT = 0,
    TP_CONFIG_FROM_FILE,
    TP_CONFIG_FROM_ENV,
    TP_CONFIG_FROM_VAR_DIR /* redis.url / postgres.url read from <var_dir>/<service>.url */
};

struct tp_config_server {
    char bind[64];              /* server.bind [0.0.0.0] */
    int http_port;              /* server.http_port [8080], 0 disables */
    int https_port;             /* server.https_port [8443], 0 disables */
    int workers;                /* server.workers [auto]: 0 means one per core */
    bool pin_workers;           /* server.pin_workers [true]: each worker on one CPU */
    char web_root[512];         /* server.web_root [web] */
    char allowed_origins[1024]; /* server.allowed_origins: comma list, empty = same host */
    /* server.trusted_proxies: comma list of at most TP_CONFIG_MAX_PROXIES IP addresses whose
     * X-Forwarded-For is believed (the client is its last address not in the list); empty =
     * the peer address is the client. */
    char trusted_proxies[1024];
    char tls_cert[512];       /* server.tls_cert: PEM path, empty = self-signed under var_dir */
    char tls_key[512];        /* server.tls_key */
    char var_dir[512];        /* server.var_dir [var]: runtime state (certificate, embedded dbs) */
    size_t max_body;          /* server.max_body [64k]: request body limit (413 beyond) */
    int header_timeout_ms;    /* server.header_timeout [10s]: slowloris bound */
    int keepalive_timeout_ms; /* server.keepalive_timeout [30s]: idle keep-alive */
    int shutdown_timeout_ms;  /* server.shutdown_timeout [5s]: drain bound on SIGTERM */
    int max_connections;      /* server.max_connections [20000] per worker */
    /* server.fanout_io_uring [auto]: auto | off. auto sends the fan-out's beats to plain
     * sockets through io_uring when the kernel allows it (send() per socket otherwise). */
    char fanout_io_uring[8];
};

struct tp_config_redis {
    char url[512];    /* redis.url, empty = embedded under var/ (redis://127.0.0.1:6380) */
    int timeout_ms;   /* redis.timeout [2s]: per-command deadline */
    char mode[16];    /* redis.mode [standalone]: standalone | cluster (url lists seeds) */
    int replicas_ack; /* redis.replicas_ack [0]: replicas a script's write waits for (WAIT) */
};

/* postgres.settle_yield's maximum (ms). Here, not in store/pgw.h, because the config table
 * (base) must not reach up into the store; the writer asserts it below TP_PGW_CLAIM_IDLE_MS
 * (src/store/pgw_internal.h). */
#define TP_PGW_SETTLE_YIELD_MAX_MS 10000

struct tp_config_postgres {
    char url[512];  /* postgres.url, empty = embedded under var/ */
    int timeout_ms; /* postgres.timeout [5s]: statement_timeout */
    /* postgres.write_gap [20ms]: a caught-up writer's least time between two outbox reads */
    int write_gap_ms;
    /* postgres.settle_yield [1400ms]: how long a writer holds its reads once a settlement's
     * credits pass TP_PGW_YIELD_ROWS (0: never), at most TP_PGW_SETTLE_YIELD_MAX_MS */
    int settle_yield_ms;
};

struct tp_config_game {
    int betting_s;                                /* game.betting_s [30] */
    int live_s;                                   /* game.live_s [30] */
    int band_edges_bps[TP_CONFIG_MAX_BAND_EDGES]; /* game.band_edges_bps [-10,-3,3,10] */
    int n_band_edges;                             /* k edges give k+1 bands */
    int rake_bps;                                 /* game.rake_bps [300], at most 1000 */
    int64_t min_stake;                            /* game.min_stake [100] */
    int64_t max_stake;                            /* game.max_stake [100000] */
    int64_t start_balance;                        /* game.start_balance [100000] */
    int tick_ms;                                  /* game.tick_ms [100] */
    double volatility;                            /* game.volatility [0.8], annualised */
    int buckets;                                  /* game.buckets [1] */
    int grace_ms; /* game.grace [5s]: missed lock/close → cancel */
    int retain_s; /* game.retain_s [3600]: a final round stays in Redis this long after close */
    /* game.idem_filter [128m]: one day's filter of archived rounds' idempotency keys, split
     * over the buckets; Redis holds two (docs/operations.md §4) */
    size_t idem_filter;
};

struct tp_config_limits {
    int max_inflight_bets; /* limits.max_inflight_bets [4096] per process */
    int ws_max_per_user;   /* limits.ws_max_per_user [8] */
    int ws_msg_rate;       /* limits.ws_msg_rate [50] messages/s per socket */
    size_t ws_max_message; /* limits.ws_max_message [64k] (close 1009 beyond) */
    size_t ws_send_queue;  /* limits.ws_send_queue [1m]: bytes queued before a socket is cut */
    /* Per client address and host (429 rate_limited beyond): requests per minute (0 = no
     * limit) and how many may come at once. */
    int signup_per_min;       /* limits.signup_per_min [10] */
    int signup_burst;         /* limits.signup_burst [5] */
    int signin_per_min;       /* limits.signin_per_min [60]: sign-ins and password changes */
    int signin_burst;         /* limits.signin_burst [20] */
    size_t ws_partial_budget; /* limits.ws_partial_budget [64m]: unfinished messages, per process */
};

struct tp_config_log {
    char level[16]; /* log.level [info] */
};

struct tp_config {
    struct tp_config_server server;
    struct tp_config_redis redis;
    struct tp_config_postgres postgres;
    struct tp_config_game game;
    struct tp_config_limits limits;
    struct tp_config_log log;
    char source[512]; /* the file it was read from ("" = defaults and environment only) */
    unsigned char _origin[TP_CONFIG_MAX_KEYS]; /* enum tp_config_origin per table entry */
};

/** Fills `cfg` with every default. */
void tp_config_defaults(struct tp_config *cfg);

/**
 * Loads `path` (NULL: config/tickpool.ini if present in the cwd, else defaults only), applies
 * TICKPOOL_<SECTION>_<KEY> environment overrides, validates, then fills an empty redis.url /
 * postgres.url from the first line of <var_dir>/redis.url / postgres.url (written by scripts/up).
 * Unknown keys and unknown TICKPOOL_* variables are errors (except TICKPOOL_AUTH_SECRET and names
 * ending in _PASSWORD). Returns 0, or TP_EINVAL with "file:line: key: rule (got X)" or
 * "key: rule (got X) [from TICKPOOL_...]" in `err` (size `errlen`).
 */
int tp_config_load(struct tp_config *cfg, const char *path, char *err, size_t errlen);

/**
 * Prints the effective configuration as loadable INI, each value followed by where it came from
 * ("; default", "; file", "; env TICKPOOL_...", "; var_dir"); passwords in URLs are masked.
 */
void tp_config_print(const struct tp_config *cfg, FILE *out);

/** Number of worker processes to run (resolves `auto` to the number of online CPUs). */
int tp_config_workers(const struct tp_config *cfg);

/**
 * Strict duration parser: "250ms", "10s", "2m", "1h", or a plain number of milliseconds. No sign,
 * no spaces, no trailing garbage, overflow checked. Returns 0 or TP_EINVAL.
 */
int tp_config_parse_duration_ms(const char *s, int64_t *out);

/**
 * Strict size parser: plain bytes or a binary unit "64k", "1m", "2g" (also "64kb", "64KiB").
 * No sign, no spaces, no trailing garbage, overflow checked. Returns 0 or TP_EINVAL.
 */
int tp_config_parse_size(const char *s, size_t *out);

/**
 * Steps through a server.allowed_origins list from `*cursor`: comma-separated entries, blanks
 * (space, tab) around an entry ignored, empty entries skipped. Sets the next entry's start and
 * length and advances `*cursor` past it; false at the list's end (a NULL list is empty). The one
 * reading of the list's syntax, for the config's check and the /ws Origin check alike.
 */
bool tp_config_origins_next(const char **cursor, const char **entry, size_t *len);

/**
 * Copies `url` into `out` (size `n`, always NUL-terminated) with secrets masked:
 * "redis://:pw@h" → "redis://:****@h", "postgres://u:pw@h/db?password=x" →
 * "...u:****@h/db?password=****", and libpq "password=x" conninfo words. For logging service
 * addresses.
 */
void tp_config_mask_url(const char *url, char *out, size_t n);

/**
 * A test hook's integer from the environment variable `name` (TP_TEST_*, docs/operations.md; not
 * configuration keys, never set in production): `dflt` when unset, and also when not an integer in
 * [lo, hi], then with a warning. Reads the environment at each call; callers keep the value.
 */
int64_t tp_config_test_hook(const char *name, int64_t lo, int64_t hi, int64_t dflt);

#endif
