/*
 * Configuration (see include/tickpool/base/config.h).
 *
 * One static table (config_table.c, in the style of Redis's config.c static_configs) drives
 * everything: defaults are the table's default strings fed through the same parsers as file and
 * environment values, so a default can never disagree with what the parser accepts; the INI
 * handler, the TICKPOOL_<SECTION>_<KEY> overrides and tp_config_print all walk the same rows.
 *
 * Order of precedence: defaults < config file < environment < <var_dir>/<service>.url (the latter
 * only fills redis.url / postgres.url when they are still empty after everything else).
 *
 * Only this file includes libinih (<ini.h>).
 */
#include "config_internal.h"

#include "tickpool/base/config.h"
#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/base/url.h"

#include <ini.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_PATH "config/tickpool.ini"
#define ENV_PREFIX "TICKPOOL_"

/* TICKPOOL_* environment variables that are not configuration keys but are read elsewhere
 * (secrets stay out of the file and out of tp_config_print). Exact names, plus any name ending
 * in _PASSWORD. Everything else under TICKPOOL_ must name a key, so a typo is an error. */
static const char *const env_allowlist[] = {
    "TICKPOOL_AUTH_SECRET", /* token signing key (src/money/accounts.c) */
};
#define ENV_ALLOW_SUFFIX "_PASSWORD"

static const struct centry *find_entry(const char *section, const char *key)
{
    for (size_t i = 0; i < tp_config_table_len; i++)
        if (strcmp(tp_config_table[i].section, section) == 0 &&
            strcmp(tp_config_table[i].key, key) == 0)
            return &tp_config_table[i];
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
    for (size_t i = 0; i < tp_config_table_len; i++) {
        char msg[256];
        int rc =
            tp_config_set_value(cfg, &tp_config_table[i], tp_config_table[i].def, msg, sizeof(msg));
        if (rc != 0)
            tp_log_fatal("config", "bad built-in default for %s.%s: %s", tp_config_table[i].section,
                         tp_config_table[i].key, msg);
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
    size_t idx = (size_t)(e - tp_config_table);
    if (ctx->seen[idx]) {
        snprintf(ctx->msg, sizeof(ctx->msg), "duplicate key \"%s.%s\"", section, name);
        return 0;
    }
    ctx->seen[idx] = 1;
    char why[400];
    if (tp_config_set_value(ctx->cfg, e, value, why, sizeof(why)) != 0) {
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
        for (size_t i = 0; i < tp_config_table_len && !known; i++) {
            char name[128];
            env_name(&tp_config_table[i], name, sizeof(name));
            known = strlen(name) == len && memcmp(name, kv, len) == 0;
        }
        if (!known) {
            snprintf(err, errlen, "unknown environment variable %.*s (not a configuration key)",
                     (int)TP_MIN(len, 200), kv);
            return TP_EINVAL;
        }
    }
    /* Then apply in table order, so the first error reported is deterministic. */
    for (size_t i = 0; i < tp_config_table_len; i++) {
        char name[128];
        env_name(&tp_config_table[i], name, sizeof(name));
        const char *val = getenv(name);
        if (val == NULL)
            continue;
        char why[400];
        if (tp_config_set_value(cfg, &tp_config_table[i], val, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s.%s: %s [from %s]", tp_config_table[i].section,
                     tp_config_table[i].key, why, name);
            return TP_EINVAL;
        }
        cfg->_origin[i] = TP_CONFIG_FROM_ENV;
    }
    return 0;
}

/* Test hooks are not keys (TP_TEST_*, outside the TICKPOOL_ prefix that load_env checks): each
 * module reads its own when it needs it, through this one parser. A bad value is not fatal: a test
 * hook only shortens or slows something, and its default is the production behaviour. */
int64_t tp_config_test_hook(const char *name, int64_t lo, int64_t hi, int64_t dflt)
{
    const char *s = getenv(name);
    int64_t v;
    if (s == NULL)
        return dflt;
    if (!tp_parse_i64(s, &v) || v < lo || v > hi) {
        tp_log_warn("config",
                    "a test hook out of range: ignored\tname=%s value=%.20s lo=%lld hi=%lld", name,
                    s, (long long)lo, (long long)hi);
        return dflt;
    }
    return v;
}

static size_t index_of(const char *section, const char *key)
{
    const struct centry *e = find_entry(section, key);
    TP_ASSERT(e != NULL);
    return (size_t)(e - tp_config_table);
}

/* Names where a key's value came from, for error messages about relations between keys. */
static const char *origin_note(const struct tp_config *cfg, const char *section, const char *key,
                               char *buf, size_t n)
{
    size_t i = index_of(section, key);
    switch (cfg->_origin[i]) {
    case TP_CONFIG_FROM_ENV: {
        char name[128];
        env_name(&tp_config_table[i], name, sizeof(name));
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
    if (cfg->game.idem_filter / (size_t)cfg->game.buckets > TP_CONFIG_IDEM_FILTER_BUCKET_MAX) {
        snprintf(err, errlen,
                 "game.idem_filter: must not exceed 512m per bucket (%zu bytes / game.buckets "
                 "%d; one bucket's filter is one Redis string of at most 2^32 bits)%s",
                 cfg->game.idem_filter, cfg->game.buckets,
                 pair_note(cfg, "game", "idem_filter", "game", "buckets", note, sizeof(note)));
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
static int load_var_url(struct tp_config *cfg, const char *svc, const char *key, char *url,
                        size_t urlsize, char *err, size_t errlen)
{
    if (strcmp(key, "url") == 0 && url[0] != '\0')
        return 0;
    char path[700];
    snprintf(path, sizeof(path), "%s/%s.%s", cfg->server.var_dir, svc, key);
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
        snprintf(err, errlen, "%s: value too long (%zu bytes, at most %zu)", path, n, urlsize - 1);
        return TP_EINVAL;
    }
    if (n == 0 && strcmp(key, "url") != 0)
        return 0; /* an empty file: the key keeps its value */
    if (strcmp(key, "mode") == 0 && strcmp(line, "standalone") != 0 &&
        strcmp(line, "cluster") != 0) {
        snprintf(err, errlen, "%s: must be standalone or cluster", path);
        return TP_EINVAL;
    }
    memcpy(url, line, n + 1);
    if (n > 0)
        cfg->_origin[index_of(svc, key)] = TP_CONFIG_FROM_VAR_DIR;
    return 0;
}

/* redis.url against redis.mode, once the URL is final: standalone takes one URL; cluster takes
 * comma-separated redis:// seeds (no unix socket, no database: a cluster has only db 0). */
static int check_redis_url(const struct tp_config *cfg, char *err, size_t errlen)
{
    char note[1300];
    bool cluster = strcmp(cfg->redis.mode, "cluster") == 0;
    const char *u = cfg->redis.url;
    if (u[0] == '\0')
        return 0;
    if (!cluster && strchr(u, ',') != NULL) {
        snprintf(err, errlen,
                 "redis.url: one URL in standalone mode (a list of seed nodes needs "
                 "redis.mode = cluster)%s",
                 pair_note(cfg, "redis", "url", "redis", "mode", note, sizeof(note)));
        return TP_EINVAL;
    }
    if (!cluster)
        return 0;
    for (const char *p = u; *p != '\0';) {
        size_t n = strcspn(p, ",");
        char one[sizeof(cfg->redis.url)];
        memcpy(one, p, n);
        one[n] = '\0';
        struct tp_url_redis ur;
        if (tp_url_parse_redis(one, &ur) != 0 || ur.path[0] != '\0' || ur.db != 0) {
            snprintf(err, errlen,
                     "redis.url: seed \"%.*s\" must be redis://[[user]:password@]"
                     "host[:port] (cluster mode: no unix socket, no database)%s",
                     (int)TP_MIN(n, (size_t)200), p,
                     pair_note(cfg, "redis", "url", "redis", "mode", note, sizeof(note)));
            return TP_EINVAL;
        }
        p += n + (p[n] == ',');
    }
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
    bool redis_embedded = cfg->redis.url[0] == '\0';
    rc = load_var_url(cfg, "redis", "url", cfg->redis.url, sizeof(cfg->redis.url), err, errlen);
    /* An embedded Redis describes itself: scripts/up --redis-cluster writes var/redis.mode. */
    if (rc == 0 && redis_embedded && cfg->redis.url[0] != '\0')
        rc = load_var_url(cfg, "redis", "mode", cfg->redis.mode, sizeof(cfg->redis.mode), err,
                          errlen);
    if (rc == 0)
        rc = check_redis_url(cfg, err, errlen);
    if (rc != 0)
        return rc;
    return load_var_url(cfg, "postgres", "url", cfg->postgres.url, sizeof(cfg->postgres.url), err,
                        errlen);
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

void tp_config_print(const struct tp_config *cfg, FILE *out)
{
    fprintf(out, "; tickpool effective configuration (%s%s)\n",
            cfg->source[0] ? "file " : "no config file", cfg->source);
    const char *section = NULL;
    for (size_t i = 0; i < tp_config_table_len; i++) {
        const struct centry *e = &tp_config_table[i];
        if (section == NULL || strcmp(section, e->section) != 0) {
            fprintf(out, "%s[%s]\n", section != NULL ? "\n" : "", e->section);
            section = e->section;
        }
        char val[1100], note[160];
        tp_config_format_value(cfg, e, val, sizeof(val));
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