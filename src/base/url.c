/*
 * URLs (see include/tickpool/base/url.h). Written by hand: hiredis takes host, port and socket
 * path separately and parses no URL, and the decoder is a dozen lines with our own rule for
 * hostile input (a NUL, encoded or not, is refused rather than cutting a string short).
 */
#include "tickpool/base/url.h"

#include "tickpool/base/common.h"

#include <stdio.h>
#include <string.h>

/* Longest URL a field is cut from (config's redis.url holds 511 bytes). */
#define URL_MAX 1024

/* --- Percent-decoding --- */

int tp_url_decode(const char *in, size_t n, char *out, bool plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n)
                return TP_EINVAL;
            int hi = tp_hex_digit(in[i + 1]), lo = tp_hex_digit(in[i + 2]);
            if (hi < 0 || lo < 0)
                return TP_EINVAL;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return TP_EINVAL;
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        } else if (c == '\0') {
            return TP_EINVAL;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (int)o;
}

/* --- Redis URLs --- */

/* Copies [p, p+n) into out (size cap) percent-decoded; TP_EINVAL when it does not fit or an
 * escape is broken or encodes NUL. */
static int copy_decoded(char *out, size_t cap, const char *p, size_t n)
{
    /* A field is part of redis.url (512 bytes in config), and decoding never lengthens it. */
    char tmp[URL_MAX];
    if (n >= sizeof(tmp))
        return TP_EINVAL;
    int len = tp_url_decode(p, n, tmp, false);
    if (len < 0 || (size_t)len >= cap)
        return TP_EINVAL;
    memcpy(out, tmp, (size_t)len + 1);
    return 0;
}

static int parse_int(const char *p, size_t n, int min, int max, int *out)
{
    if (n == 0 || n > 9)
        return TP_EINVAL;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return TP_EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    if (v < min || v > max)
        return TP_EINVAL;
    *out = v;
    return 0;
}

/* Parses an optional "?db=N" query at q (length n). */
static int parse_query(const char *q, size_t n, int *db)
{
    if (n == 0)
        return 0;
    if (n < 4 || memcmp(q, "db=", 3) != 0)
        return TP_EINVAL;
    return parse_int(q + 3, n - 3, 0, 1000000, db);
}

int tp_url_parse_redis(const char *url, struct tp_url_redis *out)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (url == NULL)
        return TP_EINVAL;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7, *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || p[0] != '/' || n >= sizeof(out->path))
            return TP_EINVAL;
        memcpy(out->path, p, n);
        out->port = 0;
        return q ? parse_query(q + 1, strlen(q + 1), &out->db) : 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return TP_EINVAL;
    const char *p = url + 8;
    const char *end = p + strcspn(p, "/?");
    const char *at = NULL;
    for (const char *c = p; c < end; c++)
        if (*c == '@')
            at = c;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            if (copy_decoded(out->user, sizeof(out->user), p, (size_t)(colon - p)) != 0 ||
                copy_decoded(out->password, sizeof(out->password), colon + 1,
                             (size_t)(at - colon - 1)) != 0)
                return TP_EINVAL;
        } else if (copy_decoded(out->user, sizeof(out->user), p, (size_t)(at - p)) != 0) {
            return TP_EINVAL;
        }
        p = at + 1;
    }
    /* host, "[v6]", optional ":port" */
    const char *hend, *portp = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL)
            return TP_EINVAL;
        if ((size_t)(rb - p - 1) >= sizeof(out->host))
            return TP_EINVAL;
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        hend = rb + 1;
        if (hend < end) {
            if (*hend != ':')
                return TP_EINVAL;
            portp = hend + 1;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        if ((size_t)(hend - p) >= sizeof(out->host))
            return TP_EINVAL;
        memcpy(out->host, p, (size_t)(hend - p));
        if (colon)
            portp = colon + 1;
    }
    if (out->host[0] == '\0')
        return TP_EINVAL;
    if (portp != NULL && parse_int(portp, (size_t)(end - portp), 1, 65535, &out->port) != 0)
        return TP_EINVAL;
    p = end;
    if (*p == '/') {
        p++;
        size_t n = strcspn(p, "?");
        if (n > 0 && parse_int(p, n, 0, 1000000, &out->db) != 0)
            return TP_EINVAL;
        p += n;
    }
    if (*p == '?')
        return parse_query(p + 1, strlen(p + 1), &out->db);
    return 0;
}
