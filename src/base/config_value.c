/*
 * Parsing and formatting one configuration value by its type: strict integers (no sign games,
 * overflow checked), durations with units, sizes with units, booleans, band-edge lists.
 */
#include "config_internal.h"

#include "tickpool/base/common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* --- Setting and formatting one value --- */

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

int tp_config_set_value(struct tp_config *cfg, const struct centry *e, const char *raw, char *msg,
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

void tp_config_format_value(const struct tp_config *cfg, const struct centry *e, char *out,
                            size_t n)
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
