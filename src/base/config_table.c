/*
 * The configuration key table: every key's section, name, type, bounds and default. Defaults
 * are the default strings fed through the same parsers as file and environment values, so a
 * default can never disagree with what the parser accepts.
 */
#include "config_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

/* Cross-checks for one key beyond its type and bounds: NULL or a message. */
static const char *check_volatility(const void *field)
{
    double v = *(const double *)field;
    return v > 0 && v <= 10 ? NULL : "must be greater than 0 and at most 10";
}

static const char *check_log_level(const void *field)
{
    enum tp_log_level l;
    return tp_log_level_parse(field, &l) == 0 ? NULL : "must be debug, info, warn or error";
}

static const char *check_nonempty(const void *field)
{
    return *(const char *)field != '\0' ? NULL : "must not be empty";
}

/* A comma list of at most TP_CONFIG_MAX_PROXIES IPv4 or IPv6 literals, no spaces. */
static const char *check_proxies(const void *field)
{
    const char *s = field;
    int n = 0;
    while (*s != '\0') {
        const char *end = strchr(s, ',');
        size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
        char one[INET6_ADDRSTRLEN];
        unsigned char bin[sizeof(struct in6_addr)];
        if (len == 0 || len >= sizeof(one))
            return "must be a comma list of IP addresses";
        memcpy(one, s, len);
        one[len] = '\0';
        if (inet_pton(AF_INET, one, bin) != 1 && inet_pton(AF_INET6, one, bin) != 1)
            return "must be a comma list of IP addresses (no names, no ranges)";
        if (++n > TP_CONFIG_MAX_PROXIES)
            return "too many proxies (at most 16)";
        s += len + (end != NULL);
        if (end != NULL && *s == '\0')
            return "must be a comma list of IP addresses";
    }
    return NULL;
}

static const char *check_redis_mode(const void *field)
{
    const char *s = field;
    return strcmp(s, "standalone") == 0 || strcmp(s, "cluster") == 0
               ? NULL
               : "must be standalone or cluster";
}

static const char *check_fanout_io_uring(const void *field)
{
    const char *s = field;
    return strcmp(s, "auto") == 0 || strcmp(s, "off") == 0 ? NULL : "must be auto or off";
}

/* The host[:port] of an allowlist entry: a host, then at most a port of 1-65535 that is not the
 * scheme's default, since a browser's Origin leaves :443 (https) and :80 (http) out and an entry
 * carrying one would never match. An IPv6 host is bracketed, its colons inside the brackets. */
static const char *check_origin_port(const char *h, size_t n, long default_port)
{
    const char *end = h + n, *p = h;
    if (p < end && *p == '[') {
        const char *rb = memchr(p, ']', n);
        p = rb != NULL ? rb + 1 : end;
        if (rb == NULL || rb == h + 1)
            return "each entry must be an origin: an IPv6 host goes in brackets, e.g. "
                   "http://[::1]:8080";
    } else {
        while (p < end && *p != ':')
            p++;
        if (p == h)
            return "each entry must be an origin: a host before any ':port'";
    }
    if (p == end)
        return NULL;
    if (*p != ':' || end - p < 2 || end - p > 6 || p[1] == '0')
        return "each entry must be an origin: the port after the host is 1-65535, as ':8443'";
    long port = 0;
    for (const char *d = p + 1; d < end; d++) {
        if (*d < '0' || *d > '9')
            return "each entry must be an origin: the port after the host is 1-65535, as ':8443'";
        port = port * 10 + (*d - '0');
    }
    if (port > 65535)
        return "each entry must be an origin: the port after the host is 1-65535, as ':8443'";
    if (port == default_port)
        return "each entry must be an origin without its scheme's default port (:443 for https, "
               ":80 for http): browsers leave it out of the Origin they send";
    return NULL;
}

/* One allowlist entry, blanks around it already trimmed: a browser's serialised Origin,
 * http:// or https:// and a lower-case host[:port] with nothing after it. The /ws check compares
 * bytes, so an entry a browser can never send (a trailing '/', a path, an upper-case host) would
 * refuse every page silently: refuse it here, naming what is wrong. */
static const char *check_origin(const char *e, size_t n)
{
    size_t skip = n > 7 && strncmp(e, "http://", 7) == 0    ? 7
                  : n > 8 && strncmp(e, "https://", 8) == 0 ? 8
                                                            : 0;
    if (skip == 0)
        return "each entry must be an origin: http:// or https:// and a host, e.g. "
               "https://game.example.com";
    for (size_t i = skip; i < n; i++) {
        char ch = e[i];
        if (ch >= 'A' && ch <= 'Z')
            return "each entry must be an origin with a lower-case host, as browsers send it";
        if (ch == '/' || ch == '?' || ch == '#' || ch == '@' || ch == ' ' || ch == '\t')
            return "each entry must be an origin: scheme://host[:port], no path, no trailing "
                   "'/', no user";
    }
    return check_origin_port(e + skip, n - skip, skip == 8 ? 443 : 80);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

bool tp_config_origins_next(const char **cursor, const char **entry, size_t *len)
{
    const char *s = *cursor;
    while (s != NULL && *s != '\0') {
        const char *comma = strchr(s, ',');
        const char *end = comma != NULL ? comma : s + strlen(s), *e = s;
        while (e < end && is_blank(*e))
            e++;
        while (end > e && is_blank(end[-1]))
            end--;
        s = comma != NULL ? comma + 1 : end;
        if (end > e) {
            *cursor = s;
            *entry = e;
            *len = (size_t)(end - e);
            return true;
        }
    }
    *cursor = s;
    return false;
}

/* At most TP_CONFIG_MAX_ORIGINS comma-separated origins (empty ones counted), each an origin as
 * browsers send it. */
static const char *check_origins(const void *field)
{
    const char *s = field;
    if (*s == '\0')
        return NULL;
    int n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    if (n > TP_CONFIG_MAX_ORIGINS)
        return "too many origins (at most 16)";
    const char *e;
    size_t len;
    for (const char *c = s; tp_config_origins_next(&c, &e, &len);) {
        const char *why = check_origin(e, len);
        if (why != NULL)
            return why;
    }
    return NULL;
}

#define F(path) offsetof(struct tp_config, path), sizeof(((struct tp_config *)0)->path)
#define K(n) ((int64_t)(n)*1024)
#define M(n) ((int64_t)(n)*1024 * 1024)
#define G(n) ((int64_t)(n)*1024 * 1024 * 1024)
/* 15 digits: what the Lua scripts read exactly (10^15 made every bet and grant fail). */
#define MAX_STAKE_BOUND INT64_C(999999999999999)

/* The configuration table. Bounds are inclusive and in the field's unit. Keep config/tickpool.ini
 * (the documented defaults) in the same order and with the same defaults. */
const struct centry tp_config_table[] = {
    {"server", "http_port", CT_INT, 0, 65535, "8080", F(server.http_port), 0, NULL},
    {"server", "https_port", CT_INT, 0, 65535, "8443", F(server.https_port), 0, NULL},
    {"server", "bind", CT_STRING, 0, 0, "0.0.0.0", F(server.bind), 0, check_nonempty},
    {"server", "workers", CT_WORKERS, 1, 1024, "auto", F(server.workers), 0, NULL},
    {"server", "pin_workers", CT_BOOL, 0, 0, "true", F(server.pin_workers), 0, NULL},
    {"server", "fanout_io_uring", CT_STRING, 0, 0, "auto", F(server.fanout_io_uring), 0,
     check_fanout_io_uring},
    {"server", "web_root", CT_STRING, 0, 0, "web", F(server.web_root), 0, NULL},
    {"server", "allowed_origins", CT_STRING, 0, 0, "", F(server.allowed_origins), 0, check_origins},
    {"server", "trusted_proxies", CT_STRING, 0, 0, "", F(server.trusted_proxies), 0, check_proxies},
    {"server", "tls_cert", CT_STRING, 0, 0, "", F(server.tls_cert), 0, NULL},
    {"server", "tls_key", CT_STRING, 0, 0, "", F(server.tls_key), 0, NULL},
    {"server", "var_dir", CT_STRING, 0, 0, "var", F(server.var_dir), 0, check_nonempty},
    {"server", "max_body", CT_SIZE, 1, G(1), "64k", F(server.max_body), 0, NULL},
    {"server", "header_timeout", CT_DUR, 100, 3600000, "10s", F(server.header_timeout_ms), 1, NULL},
    {"server", "keepalive_timeout", CT_DUR, 100, 3600000, "30s", F(server.keepalive_timeout_ms), 1,
     NULL},
    {"server", "shutdown_timeout", CT_DUR, 0, 600000, "5s", F(server.shutdown_timeout_ms), 1, NULL},
    {"server", "max_connections", CT_INT, 1, 1000000, "20000", F(server.max_connections), 0, NULL},

    {"redis", "url", CT_STRING, 0, 0, "", F(redis.url), 0, NULL},
    {"redis", "timeout", CT_DUR, 10, 600000, "2s", F(redis.timeout_ms), 1, NULL},
    {"redis", "mode", CT_STRING, 0, 0, "standalone", F(redis.mode), 0, check_redis_mode},
    {"redis", "replicas_ack", CT_INT, 0, 16, "0", F(redis.replicas_ack), 0, NULL},

    {"postgres", "url", CT_STRING, 0, 0, "", F(postgres.url), 0, NULL},
    {"postgres", "timeout", CT_DUR, 10, 600000, "5s", F(postgres.timeout_ms), 1, NULL},
    {"postgres", "write_gap", CT_DUR, 0, 1000, "20ms", F(postgres.write_gap_ms), 1, NULL},
    /* The default is TP_SETTLE_PACE_MS's span (game/settle.h; test_config.c checks they agree).
     * The maximum stays below TP_PGW_CLAIM_IDLE_MS (asserted in src/store/pgw_internal.h): a
     * batch held longer would be claimed by another writer (harmless, idempotent, but the
     * hold would not hold). */
    {"postgres", "settle_yield", CT_DUR, 0, TP_PGW_SETTLE_YIELD_MAX_MS, "1400ms",
     F(postgres.settle_yield_ms), 1, NULL},

    {"game", "betting_s", CT_DUR, 1, 86400, "30", F(game.betting_s), 1000, NULL},
    {"game", "live_s", CT_DUR, 1, 86400, "30", F(game.live_s), 1000, NULL},
    {"game", "band_edges_bps", CT_INTLIST, -10000, 10000, "-10,-3,3,10", F(game.band_edges_bps), 0,
     NULL},
    {"game", "rake_bps", CT_INT, 0, 1000, "300", F(game.rake_bps), 0, NULL},
    {"game", "min_stake", CT_INT64, 1, MAX_STAKE_BOUND, "100", F(game.min_stake), 0, NULL},
    {"game", "max_stake", CT_INT64, 1, MAX_STAKE_BOUND, "100000", F(game.max_stake), 0, NULL},
    /* At least 1: sign-up grants are the only way money enters the game. */
    {"game", "start_balance", CT_INT64, 1, MAX_STAKE_BOUND, "100000", F(game.start_balance), 0,
     NULL},
    {"game", "tick_ms", CT_DUR, TP_CONFIG_TICK_MS_MIN, 10000, "100", F(game.tick_ms), 1, NULL},
    {"game", "volatility", CT_DOUBLE, 0, 0, "0.8", F(game.volatility), 0, check_volatility},
    {"game", "buckets", CT_INT, 1, 16384, "1", F(game.buckets), 0, NULL},
    {"game", "grace", CT_DUR, 100, 3600000, "5s", F(game.grace_ms), 1, NULL},
    {"game", "retain_s", CT_DUR, 0, 2592000, "3600", F(game.retain_s), 1000, NULL},
    {"game", "idem_filter", CT_SIZE, K(64), G(64), "128m", F(game.idem_filter), 0, NULL},

    {"limits", "max_inflight_bets", CT_INT, 1, 1000000, "4096", F(limits.max_inflight_bets), 0,
     NULL},
    {"limits", "ws_max_per_user", CT_INT, 1, 10000, "8", F(limits.ws_max_per_user), 0, NULL},
    {"limits", "ws_msg_rate", CT_INT, 1, 1000000, "50", F(limits.ws_msg_rate), 0, NULL},
    {"limits", "ws_max_message", CT_SIZE, 128, M(64), "64k", F(limits.ws_max_message), 0, NULL},
    {"limits", "ws_send_queue", CT_SIZE, K(4), G(1), "1m", F(limits.ws_send_queue), 0, NULL},
    {"limits", "signup_per_min", CT_INT, 0, 60000, "10", F(limits.signup_per_min), 0, NULL},
    {"limits", "signup_burst", CT_INT, 1, 10000, "5", F(limits.signup_burst), 0, NULL},
    {"limits", "signin_per_min", CT_INT, 0, 60000, "60", F(limits.signin_per_min), 0, NULL},
    {"limits", "signin_burst", CT_INT, 1, 10000, "20", F(limits.signin_burst), 0, NULL},
    {"limits", "ws_partial_budget", CT_SIZE, K(64), G(16), "64m", F(limits.ws_partial_budget), 0,
     NULL},

    {"log", "level", CT_STRING, 0, 0, "info", F(log.level), 0, check_log_level},
};

_Static_assert(TP_ARRAY_LEN(tp_config_table) <= TP_CONFIG_MAX_KEYS, "raise TP_CONFIG_MAX_KEYS");

const size_t tp_config_table_len = TP_ARRAY_LEN(tp_config_table);
