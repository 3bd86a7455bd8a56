/*
 * Configuration (see include/tickpool/base/config.h).
 *
 * One static table (below, in the style of Redis's config.c static_configs) drives everything:
 * defaults are the table's default strings fed through the same parsers as file and environment
 * values, so a default can never disagree with what the parser accepts; the INI handler, the
 * TICKPOOL_<SECTION>_<KEY> overrides and tp_config_print all walk the same rows.
 *
 * Order of precedence: defaults < config file < environment < <var_dir>/<service>.url (the latter
 * only fills redis.url / postgres.url when they are still empty after everything else).
 *
 * Only this file includes libinih (<ini.h>).
 */
#include "tickpool/base/config.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <ini.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_PATH "config/tickpool.ini"
#define ENV_PREFIX "TICKPOOL_"

enum ctype {
    CT_INT,     /* int */
    CT_INT64,   /* int64_t */
    CT_SIZE,    /* size_t, "64k" / "1m" / bytes */
    CT_DUR,     /* int in the field's unit (s or ms), "250ms" / "10s" / plain number of that unit */
    CT_DOUBLE,  /* double, finite */
    CT_STRING,  /* char[size] */
    CT_BOOL,    /* bool */
    CT_INTLIST, /* game.band_edges_bps: int[] + count */
    CT_WORKERS, /* int: "auto" → 0, else min..max */
};

/* A cross-check for one key beyond its type and bounds: returns NULL or a message. */
typedef const char *(*check_fn)(const void *field);

struct centry {
    const char *section;
    const char *key;
    enum ctype type;
    int64_t min, max; /* integer types: bounds in the field's unit; durations in that unit too */
    const char *def;  /* default, as it would be written in the file */
    size_t off;       /* offsetof(struct tp_config, ...) */
    size_t size;      /* sizeof the field (strings: buffer size) */
    int unit_ms;      /* CT_DUR: milliseconds per field unit (1000 for *_s fields, 1 for *_ms) */
    check_fn check;
};

static const char *check_volatility(const void *field);
static const char *check_log_level(const void *field);
static const char *check_nonempty(const void *field);
static const char *check_origins(const void *field);

#define F(path) offsetof(struct tp_config, path), sizeof(((struct tp_config *)0)->path)
#define K(n) ((int64_t)(n)*1024)
#define M(n) ((int64_t)(n)*1024 * 1024)
#define G(n) ((int64_t)(n)*1024 * 1024 * 1024)
/* 15 digits: what the Lua scripts read exactly (10^15 made every bet and grant fail). */
#define MAX_STAKE_BOUND INT64_C(999999999999999)

/* The configuration table. Bounds are inclusive and in the field's unit. Keep config/tickpool.ini
 * (the documented defaults) in the same order and with the same defaults. */
static const struct centry table[] = {
    {"server", "http_port", CT_INT, 0, 65535, "8080", F(server.http_port), 0, NULL},
    {"server", "https_port", CT_INT, 0, 65535, "8443", F(server.https_port), 0, NULL},
    {"server", "bind", CT_STRING, 0, 0, "0.0.0.0", F(server.bind), 0, check_nonempty},
    {"server", "workers", CT_WORKERS, 1, 1024, "auto", F(server.workers), 0, NULL},
    {"server", "web_root", CT_STRING, 0, 0, "web", F(server.web_root), 0, NULL},
    {"server", "allowed_origins", CT_STRING, 0, 0, "", F(server.allowed_origins), 0, check_origins},
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

    {"postgres", "url", CT_STRING, 0, 0, "", F(postgres.url), 0, NULL},
    {"postgres", "timeout", CT_DUR, 10, 600000, "5s", F(postgres.timeout_ms), 1, NULL},

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
    {"game", "tick_ms", CT_DUR, 10, 10000, "100", F(game.tick_ms), 1, NULL},
    {"game", "volatility", CT_DOUBLE, 0, 0, "0.8", F(game.volatility), 0, check_volatility},
    {"game", "buckets", CT_INT, 1, 16384, "1", F(game.buckets), 0, NULL},
    {"game", "grace", CT_DUR, 100, 3600000, "5s", F(game.grace_ms), 1, NULL},

    {"limits", "max_inflight_bets", CT_INT, 1, 1000000, "4096", F(limits.max_inflight_bets), 0,
     NULL},
    {"limits", "ws_max_per_user", CT_INT, 1, 10000, "8", F(limits.ws_max_per_user), 0, NULL},
    {"limits", "ws_msg_rate", CT_INT, 1, 1000000, "50", F(limits.ws_msg_rate), 0, NULL},
    {"limits", "ws_max_message", CT_SIZE, 128, M(64), "64k", F(limits.ws_max_message), 0, NULL},
    {"limits", "ws_send_queue", CT_SIZE, K(4), G(1), "1m", F(limits.ws_send_queue), 0, NULL},

    {"log", "level", CT_STRING, 0, 0, "info", F(log.level), 0, check_log_level},
};

_Static_assert(TP_ARRAY_LEN(table) <= TP_CONFIG_MAX_KEYS, "raise TP_CONFIG_MAX_KEYS");

/* TICKPOOL_* environment variables that are not configuration keys but are read elsewhere
 * (secrets stay out of the file and out of tp_config_print). Exact names, plus any name ending
 * in _PASSWORD. Everything else under TICKPOOL_ must name a key, so a typo is an error. */
static const char *const env_allowlist[] = {
    "TICKPOOL_AUTH_SECRET", /* token signing key (src/money/accounts.c) */
};
#define ENV_ALLOW_SUFFIX "_PASSWORD"

/* --- Strict number and unit parsers --- */

/* Parses an unsigned decimal prefix of `s` (at least one digit, no sign, no space) into *out,
 * checking overflow. Returns the end pointer, or NULL. */
static const char *parse_u64(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return NULL;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    *out = v;
    return s;
}

/* Parses a whole string as a signed decimal integer within int64_t. */
static int parse_i64(const char *s, int64_t *out)
{
    bool neg = false;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s++;
    }
    uint64_t u;
    const char *end = parse_u64(s, &u);
    if (end == NULL || *end != '\0')
        return TP_EINVAL;
    if (neg) {
        if (u > (uint64_t)INT64_MAX + 1)
            return TP_EINVAL;
        *out = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        if (u > (uint64_t)INT64_MAX)
            return TP_EINVAL;
        *out = (int64_t)u;
    }
    return 0;
}

/* Multiplies with overflow check against `limit`. */
static int mul_checked(uint64_t v, uint64_t mul, uint64_t limit, uint64_t *out)
{
    if (mul != 0 && v > limit / mul)
        return TP_EINVAL;
    *out = v * mul;
    return 0;
}

/* Duration: digits then an optional unit; a bare number is `plain_ms` milliseconds each. */
static int parse_duration(const char *s, int64_t plain_ms, int64_t *out_ms, bool *had_unit)
{
    uint64_t v;
    const char *u = parse_u64(s, &v);
    if (u == NULL)
        return TP_EINVAL;
    uint64_t mul;
    if (*u == '\0')
        mul = (uint64_t)plain_ms;
    else if (strcmp(u, "ms") == 0)
        mul = 1;
    else if (strcmp(u, "s") == 0)
        mul = 1000;
    else if (strcmp(u, "m") == 0 || strcmp(u, "min") == 0)
        mul = 60000;
    else if (strcmp(u, "h") == 0)
        mul = 3600000;
    else
        return TP_EINVAL;
    if (had_unit != NULL)
        *had_unit = *u != '\0';
    uint64_t ms;
    if (mul_checked(v, mul, INT64_MAX, &ms) != 0)
        return TP_EINVAL;
    *out_ms = (int64_t)ms;
    return 0;
}

int tp_config_parse_duration_ms(const char *s, int64_t *out)
{
    if (s == NULL)
        return TP_EINVAL;
    return parse_duration(s, 1, out, NULL);
}

int tp_config_parse_size(const char *s, size_t *out)
{
    if (s == NULL)
        return TP_EINVAL;
    uint64_t v;
    const char *u = parse_u64(s, &v);
    if (u == NULL)
        return TP_EINVAL;
    uint64_t mul = 1;
    if (*u != '\0') {
        switch (tolower((unsigned char)*u)) {
        case 'k':
            mul = UINT64_C(1) << 10;
            break;
        case 'm':
            mul = UINT64_C(1) << 20;
            break;
        case 'g':
            mul = UINT64_C(1) << 30;
            break;
        case 'b':
            mul = 1;
            break;
        default:
            return TP_EINVAL;
        }
        const char *rest = u + 1;
        /* "64k", "64kb", "64KiB"; a lone "b" means bytes ("100b"). */
        if (mul != 1 && (strcasecmp(rest, "b") == 0 || strcasecmp(rest, "ib") == 0))
            rest += strlen(rest);
        if (*rest != '\0')
            return TP_EINVAL;
    }
    uint64_t bytes;
    if (mul_checked(v, mul, SIZE_MAX, &bytes) != 0)
        return TP_EINVAL;
    *out = (size_t)bytes;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < TP_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return TP_EINVAL;
}

/* --- Setting one key --- */

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

static const char *check_origins(const void *field)
{
    const char *s = field;
    if (*s == '\0')
        return NULL;
    int n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n <= TP_CONFIG_MAX_ORIGINS ? NULL : "too many origins (at most 16)";
}

/* Milliseconds as the shortest exact unit: "250ms", "10s", "2m", "1h". */
static void format_ms(int64_t ms, char *out, size_t n)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(out, n, "%lldh", (long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(out, n, "%lldm", (long long)(ms / 60000));
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(out, n, "%llds", (long long)(ms / 1000));
    else
        snprintf(out, n, "%lldms", (long long)ms);
}

/* Bytes as the shortest exact binary unit: "64k", "1m". */
static void format_bytes(uint64_t v, char *out, size_t n)
{
    if (v != 0 && v % (UINT64_C(1) << 30) == 0)
        snprintf(out, n, "%llug", (unsigned long long)(v >> 30));
    else if (v != 0 && v % (UINT64_C(1) << 20) == 0)
        snprintf(out, n, "%llum", (unsigned long long)(v >> 20));
    else if (v != 0 && v % (UINT64_C(1) << 10) == 0)
        snprintf(out, n, "%lluk", (unsigned long long)(v >> 10));
    else
        snprintf(out, n, "%llu", (unsigned long long)v);
}

/* A bound of entry e in the words a user writes: seconds keys as plain numbers, other durations
 * and sizes with units. */
static void format_bound(const struct centry *e, int64_t v, char *out, size_t n)
{
    if (e->type == CT_DUR && e->unit_ms == 1)
        format_ms(v, out, n);
    else if (e->type == CT_SIZE)
        format_bytes((uint64_t)v, out, n);
    else
        snprintf(out, n, "%lld", (long long)v);
}

/* Parses `raw` for entry `e` and stores it into cfg only if it is valid; otherwise writes the
 * reason (without the key name) into msg and returns TP_EINVAL. */
static int set_value(struct tp_config *cfg, const struct centry *e, const char *raw, char *msg,
                     size_t msglen)
{
    char *field = (char *)cfg + e->off;
    int64_t v = 0;

    switch (e->type) {
    case CT_INT:
    case CT_INT64:
        if (parse_i64(raw, &v) != 0) {
            snprintf(msg, msglen, "must be an integer (got \"%s\")", raw);
            return TP_EINVAL;
        }
        break;
    case CT_WORKERS:
        if (strcmp(raw, "auto") == 0) {
            *(int *)field = 0;
            return 0;
        }
        if (parse_i64(raw, &v) != 0 || v < e->min || v > e->max) {
            snprintf(msg, msglen, "must be auto or between %lld and %lld (got \"%s\")",
                     (long long)e->min, (long long)e->max, raw);
            return TP_EINVAL;
        }
        *(int *)field = (int)v;
        return 0;
    case CT_SIZE: {
        size_t sz;
        if (tp_config_parse_size(raw, &sz) != 0) {
            snprintf(msg, msglen, "must be a size like 64k, 1m or a number of bytes (got \"%s\")",
                     raw);
            return TP_EINVAL;
        }
        if (sz > (size_t)INT64_MAX) {
            snprintf(msg, msglen, "too large (got %s)", raw);
            return TP_EINVAL;
        }
        v = (int64_t)sz;
        break;
    }
    case CT_DUR: {
        int64_t ms;
        if (parse_duration(raw, e->unit_ms, &ms, NULL) != 0) {
            snprintf(msg, msglen,
                     "must be a duration like 250ms, 10s, 2m or a number of %s (got \"%s\")",
                     e->unit_ms == 1000 ? "seconds" : "milliseconds", raw);
            return TP_EINVAL;
        }
        if (ms % e->unit_ms != 0) {
            snprintf(msg, msglen, "must be a whole number of seconds (got %s)", raw);
            return TP_EINVAL;
        }
        v = ms / e->unit_ms;
        break;
    }
    case CT_DOUBLE: {
        char *end = NULL;
        errno = 0;
        double d = NAN;
        if (*raw != '\0' && !isspace((unsigned char)*raw))
            d = strtod(raw, &end);
        if (end == NULL || *end != '\0' || errno != 0 || !isfinite(d)) {
            snprintf(msg, msglen, "must be a number (got \"%s\")", raw);
            return TP_EINVAL;
        }
        const char *why = e->check != NULL ? e->check(&d) : NULL;
        if (why != NULL) {
            snprintf(msg, msglen, "%s (got %s)", why, raw);
            return TP_EINVAL;
        }
        *(double *)field = d;
        return 0;
    }
    case CT_BOOL: {
        bool b;
        if (parse_bool(raw, &b) != 0) {
            snprintf(msg, msglen, "must be true or false (got \"%s\")", raw);
            return TP_EINVAL;
        }
        *(bool *)field = b;
        return 0;
    }
    case CT_STRING: {
        size_t n = strlen(raw);
        if (n >= e->size) {
            snprintf(msg, msglen, "too long (%zu bytes, at most %zu)", n, e->size - 1);
            return TP_EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)raw[i] < 0x20 || raw[i] == 0x7f) {
                snprintf(msg, msglen, "must not contain control characters");
                return TP_EINVAL;
            }
        }
        const char *why = e->check != NULL ? e->check(raw) : NULL;
        if (why != NULL) {
            snprintf(msg, msglen, "%s (got \"%s\")", why, raw);
            return TP_EINVAL;
        }
        memcpy(field, raw, n + 1);
        return 0;
    }
    case CT_INTLIST: {
        int vals[TP_CONFIG_MAX_BAND_EDGES];
        int n = 0;
        const char *p = raw;
        char item[32];
        for (;;) {
            while (*p == ' ' || *p == '\t')
                p++;
            const char *start = p;
            while (*p != '\0' && *p != ',')
                p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            size_t len = (size_t)(end - start);
            if (len == 0) {
                if (n == 0 && *p == '\0')
                    snprintf(msg, msglen, "must list 1 to %d values (got none)",
                             TP_CONFIG_MAX_BAND_EDGES);
                else
                    snprintf(msg, msglen, "empty value in list (got \"%s\")", raw);
                return TP_EINVAL;
            }
            if (n == TP_CONFIG_MAX_BAND_EDGES) {
                snprintf(msg, msglen, "must list 1 to %d values (got more)",
                         TP_CONFIG_MAX_BAND_EDGES);
                return TP_EINVAL;
            }
            int64_t x;
            if (len >= sizeof(item)) {
                snprintf(msg, msglen, "must be comma-separated integers (got \"%s\")", raw);
                return TP_EINVAL;
            }
            memcpy(item, start, len);
            item[len] = '\0';
            if (parse_i64(item, &x) != 0) {
                snprintf(msg, msglen, "must be comma-separated integers (got \"%s\")", item);
                return TP_EINVAL;
            }
            if (x < e->min || x > e->max) {
                snprintf(msg, msglen, "each value must be between %lld and %lld (got %s)",
                         (long long)e->min, (long long)e->max, item);
                return TP_EINVAL;
            }
            if (n > 0 && x <= vals[n - 1]) {
                snprintf(msg, msglen, "values must be strictly increasing (got %d then %s)",
                         vals[n - 1], item);
                return TP_EINVAL;
            }
            vals[n++] = (int)x;
            if (*p == '\0')
                break;
            p++; /* the comma */
        }
        memcpy(field, vals, sizeof(int) * (size_t)n);
        cfg->game.n_band_edges = n;
        return 0;
    }
    }

    /* Integer kinds that fall through here: range check, then store. */
    if (v < e->min || v > e->max) {
        char lo[32], hi[32];
        format_bound(e, e->min, lo, sizeof(lo));
        format_bound(e, e->max, hi, sizeof(hi));
        snprintf(msg, msglen, "must be between %s and %s (got %s)", lo, hi, raw);
        return TP_EINVAL;
    }
    switch (e->type) {
    case CT_INT:
    case CT_DUR:
        *(int *)field = (int)v;
        break;
    case CT_INT64:
        *(int64_t *)field = v;
        break;
    case CT_SIZE:
        *(size_t *)field = (size_t)v;
        break;
    default:
        TP_ASSERT(0);
    }
    return 0;
}

static const struct centry *find_entry(const char *section, const char *key)
{
    for (size_t i = 0; i < TP_ARRAY_LEN(table); i++)
        if (strcmp(table[i].section, section) == 0 && strcmp(table[i].key, key) == 0)
            return &table[i];
    return NULL;
}

/* "TICKPOOL_GAME_RAKE_BPS" for game.rake_bps. */
static void env_name(const struct centry *e, char *out, size_t n)
{
    snprintf(out, n, ENV_PREFIX "%s_%s", e->section, e->key);
    for (char *p = out; *p; p++)
        *p = (char)toupper((unsigned char)*p);
}

/* --- Defaults, file, environment --- */

void tp_config_defaults(struct tp_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < TP_ARRAY_LEN(table); i++) {
        char msg[256];
        int rc = set_value(cfg, &table[i], table[i].def, msg, sizeof(msg));
        if (rc != 0)
            tp_log_fatal("config", "bad built-in default for %s.%s: %s", table[i].section,
                         table[i].key, msg);
        cfg->_origin[i] = TP_CONFIG_FROM_DEFAULT;
    }
}

struct file_ctx {
    struct tp_config *cfg;
    char msg[512];
    unsigned char seen[TP_CONFIG_MAX_KEYS];
};

/* libinih callback; returns 0 (stop, error) with ctx->msg set, or 1. */
static int on_ini_pair(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *ctx = user;
    if (*section == '\0') {
        snprintf(ctx->msg, sizeof(ctx->msg), "key \"%s\" outside any [section]", name);
        return 0;
    }
    const struct centry *e = find_entry(section, name);
    if (e == NULL) {
        snprintf(ctx->msg, sizeof(ctx->msg), "unknown key \"%s.%s\"", section, name);
        return 0;
    }
    size_t idx = (size_t)(e - table);
    if (ctx->seen[idx]) {
        snprintf(ctx->msg, sizeof(ctx->msg), "duplicate key \"%s.%s\"", section, name);
        return 0;
    }
    ctx->seen[idx] = 1;
    char why[400];
    if (set_value(ctx->cfg, e, value, why, sizeof(why)) != 0) {
        snprintf(ctx->msg, sizeof(ctx->msg), "%s.%s: %s", section, name, why);
        return 0;
    }
    ctx->cfg->_origin[idx] = TP_CONFIG_FROM_FILE;
    if (strcmp(name, "url") == 0) {
        /* Secrets belong in the environment (docs/operations.md §1); not fatal, so an operator's
         * existing file keeps working, but say so. */
        char masked[600];
        tp_config_mask_url(value, masked, sizeof(masked));
        if (strcmp(masked, value) != 0)
            tp_log_warn("config",
                        "%s.%s in the config file contains a password: pass it in "
                        "TICKPOOL_%s_URL instead",
                        section, name, strcmp(section, "redis") == 0 ? "REDIS" : "POSTGRES");
    }
    return 1;
}

static int load_file(struct tp_config *cfg, const char *path, char *err, size_t errlen)
{
    /* Debian's libinih exposes its compile-time options as globals: long lines (origins lists)
     * on a growable heap buffer, no python-style continuation lines (an indented line is its
     * own key, so a stray indent cannot silently glue onto the previous value), stop at the
     * first error so the message we report is the one for the line inih reports. */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 8192;
    ini_allow_multiline = false;
    ini_stop_on_first_error = true;
    ini_allow_no_value = false;

    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return TP_EINVAL;
    }
    struct file_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = cfg;
    int rc = ini_parse_file(f, on_ini_pair, &ctx);
    fclose(f);
    if (rc == 0)
        return 0;
    if (rc < 0)
        snprintf(err, errlen, "%s: cannot read (out of memory)", path);
    else if (ctx.msg[0] != '\0')
        snprintf(err, errlen, "%s:%d: %s", path, rc, ctx.msg);
    else
        snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
    return TP_EINVAL;
}

static bool env_allowed(const char *name, size_t len)
{
    for (size_t i = 0; i < TP_ARRAY_LEN(env_allowlist); i++)
        if (strlen(env_allowlist[i]) == len && memcmp(env_allowlist[i], name, len) == 0)
            return true;
    size_t sl = strlen(ENV_ALLOW_SUFFIX);
    return len > sl && memcmp(name + len - sl, ENV_ALLOW_SUFFIX, sl) == 0;
}

static int load_env(struct tp_config *cfg, char *err, size_t errlen)
{
    /* First every TICKPOOL_* name must be a key or allowlisted: typos must not do nothing. */
    for (char **ep = environ; ep != NULL && *ep != NULL; ep++) {
        const char *kv = *ep;
        if (strncmp(kv, ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
            continue;
        const char *eq = strchr(kv, '=');
        size_t len = eq != NULL ? (size_t)(eq - kv) : strlen(kv);
        if (env_allowed(kv, len))
            continue;
        bool known = false;
        for (size_t i = 0; i < TP_ARRAY_LEN(table) && !known; i++) {
            char name[128];
            env_name(&table[i], name, sizeof(name));
            known = strlen(name) == len && memcmp(name, kv, len) == 0;
        }
        if (!known) {
            snprintf(err, errlen, "unknown environment variable %.*s (not a configuration key)",
                     (int)TP_MIN(len, 200), kv);
            return TP_EINVAL;
        }
    }
    /* Then apply in table order, so the first error reported is deterministic. */
    for (size_t i = 0; i < TP_ARRAY_LEN(table); i++) {
        char name[128];
        env_name(&table[i], name, sizeof(name));
        const char *val = getenv(name);
        if (val == NULL)
            continue;
        char why[400];
        if (set_value(cfg, &table[i], val, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s.%s: %s [from %s]", table[i].section, table[i].key, why, name);
            return TP_EINVAL;
        }
        cfg->_origin[i] = TP_CONFIG_FROM_ENV;
    }
    return 0;
}

static size_t index_of(const char *section, const char *key)
{
    const struct centry *e = find_entry(section, key);
    TP_ASSERT(e != NULL);
    return (size_t)(e - table);
}

/* Names where a key's value came from, for error messages about relations between keys. */
static const char *origin_note(const struct tp_config *cfg, const char *section, const char *key,
                               char *buf, size_t n)
{
    size_t i = index_of(section, key);
    switch (cfg->_origin[i]) {
    case TP_CONFIG_FROM_ENV: {
        char name[128];
        env_name(&table[i], name, sizeof(name));
        snprintf(buf, n, " [from %s]", name);
        break;
    }
    case TP_CONFIG_FROM_FILE:
        snprintf(buf, n, " [from %s]", cfg->source);
        break;
    default:
        buf[0] = '\0';
    }
    return buf;
}

/* Origin notes for two related keys; one note when both came from the same place. */
static const char *pair_note(const struct tp_config *cfg, const char *s1, const char *k1,
                             const char *s2, const char *k2, char *buf, size_t n)
{
    char a[600], b[600];
    origin_note(cfg, s1, k1, a, sizeof(a));
    origin_note(cfg, s2, k2, b, sizeof(b));
    snprintf(buf, n, "%s%s", a, strcmp(a, b) == 0 ? "" : b);
    return buf;
}

/* Rules between keys, checked once everything is applied. */
static int check_relations(const struct tp_config *cfg, char *err, size_t errlen)
{
    char note[1300];
    if (cfg->game.min_stake > cfg->game.max_stake) {
        snprintf(err, errlen, "game.min_stake: must not exceed game.max_stake (%lld > %lld)%s",
                 (long long)cfg->game.min_stake, (long long)cfg->game.max_stake,
                 pair_note(cfg, "game", "min_stake", "game", "max_stake", note, sizeof(note)));
        return TP_EINVAL;
    }
    if (cfg->game.max_stake > TP_CONFIG_POOL_MAX / cfg->game.buckets) {
        snprintf(err, errlen,
                 "game.max_stake: must not exceed %lld / game.buckets = %lld (a round's pool must "
                 "stay below 2^52 to settle exactly)%s",
                 (long long)TP_CONFIG_POOL_MAX, (long long)(TP_CONFIG_POOL_MAX / cfg->game.buckets),
                 pair_note(cfg, "game", "max_stake", "game", "buckets", note, sizeof(note)));
        return TP_EINVAL;
    }
    if (cfg->server.http_port != 0 && cfg->server.http_port == cfg->server.https_port) {
        snprintf(err, errlen, "server.https_port: must differ from server.http_port (both %d)%s",
                 cfg->server.http_port,
                 pair_note(cfg, "server", "http_port", "server", "https_port", note, sizeof(note)));
        return TP_EINVAL;
    }
    /* Ticks sit on a grid of tick_ms inside each phase (src/game/price_sim.c segments); the
     * phases themselves are positive by the table's bounds. */
    const struct tp_config_game *g = &cfg->game;
    if (((int64_t)g->betting_s * 1000) % g->tick_ms != 0 ||
        ((int64_t)g->live_s * 1000) % g->tick_ms != 0) {
        snprintf(err, errlen,
                 "game.tick_ms: must divide game.betting_s and game.live_s (%d ms into %d s and "
                 "%d s)%s",
                 g->tick_ms, g->betting_s, g->live_s,
                 pair_note(cfg, "game", "tick_ms", "game", "betting_s", note, sizeof(note)));
        return TP_EINVAL;
    }
    if ((cfg->server.tls_cert[0] == '\0') != (cfg->server.tls_key[0] == '\0')) {
        snprintf(err, errlen,
                 "server.tls_cert, server.tls_key: set both or neither (empty = self-signed)%s",
                 pair_note(cfg, "server", "tls_cert", "server", "tls_key", note, sizeof(note)));
        return TP_EINVAL;
    }
    return 0;
}

/* Fills an empty <svc>.url from <var_dir>/<svc>.url (written by scripts/up for the embedded
 * services), first line only. A missing file is fine; an unreadable or oversized one is not. */
static int load_var_url(struct tp_config *cfg, const char *svc, char *url, size_t urlsize,
                        char *err, size_t errlen)
{
    if (url[0] != '\0')
        return 0;
    char path[700];
    snprintf(path, sizeof(path), "%s/%s.url", cfg->server.var_dir, svc);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return TP_EINVAL;
    }
    char line[1024];
    if (fgets(line, sizeof(line), f) == NULL)
        line[0] = '\0';
    fclose(f);
    size_t n = strcspn(line, "\r\n");
    line[n] = '\0';
    while (n > 0 && isspace((unsigned char)line[n - 1]))
        line[--n] = '\0';
    if (n >= urlsize) {
        snprintf(err, errlen, "%s: url too long (%zu bytes, at most %zu)", path, n, urlsize - 1);
        return TP_EINVAL;
    }
    memcpy(url, line, n + 1);
    if (n > 0)
        cfg->_origin[index_of(svc, "url")] = TP_CONFIG_FROM_VAR_DIR;
    return 0;
}

int tp_config_load(struct tp_config *cfg, const char *path, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    tp_config_defaults(cfg);

    if (path == NULL && access(DEFAULT_PATH, F_OK) == 0)
        path = DEFAULT_PATH;
    if (path != NULL) {
        if (strlen(path) >= sizeof(cfg->source)) {
            snprintf(err, errlen, "config path too long");
            return TP_EINVAL;
        }
        snprintf(cfg->source, sizeof(cfg->source), "%s", path);
        int rc = load_file(cfg, path, err, errlen);
        if (rc != 0)
            return rc;
    }
    int rc = load_env(cfg, err, errlen);
    if (rc != 0)
        return rc;
    rc = check_relations(cfg, err, errlen);
    if (rc != 0)
        return rc;
    rc = load_var_url(cfg, "redis", cfg->redis.url, sizeof(cfg->redis.url), err, errlen);
    if (rc != 0)
        return rc;
    return load_var_url(cfg, "postgres", cfg->postgres.url, sizeof(cfg->postgres.url), err, errlen);
}

int tp_config_workers(const struct tp_config *cfg)
{
    if (cfg->server.workers > 0)
        return cfg->server.workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

/* --- Printing --- */

/* Masks the value of every "password=" parameter (URL query or libpq conninfo word) in place. */
static void mask_password_params(char *s, size_t cap)
{
    static const char key[] = "password=";
    const size_t kl = sizeof(key) - 1;
    for (char *p = s; (p = strcasestr(p, key)) != NULL;) {
        bool at_word = p == s || p[-1] == '?' || p[-1] == '&' || p[-1] == ' ';
        p += kl;
        if (!at_word)
            continue;
        char *v = p, *end = p;
        if (*v == '\'') { /* conninfo quoting: 'it''s' style is rare; stop at the next quote */
            end = strchr(v + 1, '\'');
            end = end != NULL ? end + 1 : v + strlen(v);
        } else {
            end = v + strcspn(v, "& ");
        }
        const char stars[] = "****";
        size_t tail = strlen(end);
        if ((size_t)(v - s) + 4 + tail + 1 > cap)
            return;
        memmove(v + 4, end, tail + 1);
        memcpy(v, stars, 4);
        p = v + 4;
    }
}

void tp_config_mask_url(const char *url, char *out, size_t n)
{
    if (n == 0)
        return;
    if (url == NULL)
        url = "";
    /* scheme://user:secret@host...: keep everything but the secret. */
    const char *scheme = strstr(url, "://");
    const char *colon = NULL, *at = NULL;
    if (scheme != NULL) {
        const char *auth = scheme + 3;
        size_t alen = strcspn(auth, "/?#");
        for (const char *p = auth; p < auth + alen; p++)
            if (*p == '@')
                at = p;
        if (at != NULL)
            colon = memchr(auth, ':', (size_t)(at - auth));
    }
    if (colon != NULL && at - colon > 1)
        snprintf(out, n, "%.*s****%s", (int)(colon + 1 - url), url, at);
    else
        snprintf(out, n, "%s", url);
    mask_password_params(out, n);
}

static const char *origin_names[] = {"default", "file", "env", "var_dir"};

/* Formats the field of entry e as it would be written in the file. */
static void format_value(const struct tp_config *cfg, const struct centry *e, char *out, size_t n)
{
    const char *field = (const char *)cfg + e->off;
    switch (e->type) {
    case CT_INT:
        snprintf(out, n, "%d", *(const int *)field);
        break;
    case CT_WORKERS: {
        int w = *(const int *)field;
        if (w == 0)
            snprintf(out, n, "auto");
        else
            snprintf(out, n, "%d", w);
        break;
    }
    case CT_INT64:
        snprintf(out, n, "%lld", (long long)*(const int64_t *)field);
        break;
    case CT_SIZE:
        format_bytes(*(const size_t *)field, out, n);
        break;
    case CT_DUR:
        if (e->unit_ms == 1000)
            snprintf(out, n, "%d", *(const int *)field);
        else
            format_ms(*(const int *)field, out, n);
        break;
    case CT_DOUBLE: {
        double d = *(const double *)field;
        snprintf(out, n, "%.15g", d);
        if (strtod(out, NULL) != d)
            snprintf(out, n, "%.17g", d);
        break;
    }
    case CT_BOOL:
        snprintf(out, n, "%s", *(const bool *)field ? "true" : "false");
        break;
    case CT_STRING:
        if (strcmp(e->key, "url") == 0)
            tp_config_mask_url(field, out, n);
        else
            snprintf(out, n, "%s", field);
        break;
    case CT_INTLIST: {
        size_t used = 0;
        out[0] = '\0';
        for (int i = 0; i < cfg->game.n_band_edges && used < n; i++) {
            int w = snprintf(out + used, n - used, "%s%d", i ? "," : "", ((const int *)field)[i]);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        break;
    }
    }
}

void tp_config_print(const struct tp_config *cfg, FILE *out)
{
    fprintf(out, "; tickpool effective configuration (%s%s)\n",
            cfg->source[0] ? "file " : "no config file", cfg->source);
    const char *section = NULL;
    for (size_t i = 0; i < TP_ARRAY_LEN(table); i++) {
        const struct centry *e = &table[i];
        if (section == NULL || strcmp(section, e->section) != 0) {
            fprintf(out, "%s[%s]\n", section != NULL ? "\n" : "", e->section);
            section = e->section;
        }
        char val[1100], note[160];
        format_value(cfg, e, val, sizeof(val));
        unsigned o = cfg->_origin[i] < TP_ARRAY_LEN(origin_names) ? cfg->_origin[i] : 0;
        if (o == TP_CONFIG_FROM_ENV) {
            char name[128];
            env_name(e, name, sizeof(name));
            snprintf(note, sizeof(note), "env %s", name);
        } else {
            snprintf(note, sizeof(note), "%s", origin_names[o]);
        }
        /* libinih only treats " ;" as a comment after some value text: an empty value gets its
         * note on the line above so the output stays loadable. */
        if (val[0] == '\0')
            fprintf(out, "; %s: %s\n%s =\n", e->key, note, e->key);
        else
            fprintf(out, "%s = %s ; %s\n", e->key, val, note);
    }
}
