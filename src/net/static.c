/*
 * Static file serving (see tickpool/net/static.h).
 *
 * Files are read whole per request: the web client is a handful of small files, the page cache
 * keeps them hot, and ETag revalidation makes repeat loads answer 304 without reading at all.
 * Containment is checked on the fully resolved path (realpath), so a symlink inside web/ that
 * points elsewhere is refused as well as any textual trick in the URL.
 */
#include "tickpool/net/static.h"
#include "tickpool/base/common.h"
#include "tickpool/base/url.h"
#include "tickpool/net/http.h"
#include "tickpool/base/log.h"
#include "tickpool/net/router.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE (32u << 20) /* refuse to slurp anything bigger than 32 MiB */

struct tp_static {
    char root[PATH_MAX];
    size_t root_len;
};

struct tp_static *tp_static_new(const char *web_root, char *err, size_t errlen)
{
    char real[PATH_MAX];
    struct stat st;
    if (realpath(web_root, real) == NULL || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "server.web_root: '%s' is not a readable directory", web_root);
        return NULL;
    }
    struct tp_static *s = tp_xcalloc(1, sizeof(*s));
    snprintf(s->root, sizeof(s->root), "%s", real);
    s->root_len = strlen(s->root);
    /* "/" as root would make every path "inside"; keep the prefix check meaningful. */
    if (s->root_len == 1)
        s->root_len = 0;
    return s;
}

void tp_static_free(struct tp_static *s)
{
    free(s);
}

static bool inside(const struct tp_static *s, const char *real)
{
    return strncmp(real, s->root, s->root_len) == 0 &&
           (real[s->root_len] == '/' || real[s->root_len] == '\0');
}

int tp_static_resolve(const struct tp_static *s, const char *raw_path, char *out, size_t outlen)
{
    size_t n = strlen(raw_path);
    if (n == 0 || raw_path[0] != '/' || n >= PATH_MAX / 2)
        return TP_ENOTFOUND;
    /* Encoded separators and NUL never name a file of ours. */
    if (strcasestr(raw_path, "%2f") != NULL || strcasestr(raw_path, "%5c") != NULL ||
        strstr(raw_path, "%00") != NULL)
        return TP_ENOTFOUND;
    char dec[PATH_MAX];
    if (tp_url_decode(raw_path, n, dec, false) < 0)
        return TP_EINVAL;
    if (strchr(dec, '\\') != NULL)
        return TP_ENOTFOUND;
    /* Segment check after decoding: no "..", no ".", no empty segment except a trailing one. */
    for (const char *seg = dec + 1;;) {
        const char *end = strchr(seg, '/');
        size_t l = end ? (size_t)(end - seg) : strlen(seg);
        if ((l == 1 && seg[0] == '.') || (l == 2 && seg[0] == '.' && seg[1] == '.'))
            return TP_ENOTFOUND;
        if (l == 0 && end != NULL)
            return TP_ENOTFOUND;
        if (end == NULL)
            break;
        seg = end + 1;
    }
    size_t dl = strlen(dec);
    const char *suffix = dec[dl - 1] == '/' ? "index.html" : "";
    if (s->root_len + dl + strlen(suffix) + 2 > PATH_MAX)
        return TP_ENOTFOUND;
    char joined[PATH_MAX];
    memcpy(joined, s->root, s->root_len);
    memcpy(joined + s->root_len, dec, dl);
    memcpy(joined + s->root_len + dl, suffix, strlen(suffix) + 1);
    char real[PATH_MAX];
    struct stat st;
    if (realpath(joined, real) == NULL || !inside(s, real) || stat(real, &st) != 0)
        return TP_ENOTFOUND;
    if (S_ISDIR(st.st_mode)) {
        size_t rl = strlen(real);
        if (rl + sizeof("/index.html") > sizeof(real))
            return TP_ENOTFOUND;
        memcpy(real + rl, "/index.html", sizeof("/index.html"));
        char again[PATH_MAX];
        if (realpath(real, again) == NULL || !inside(s, again) || stat(again, &st) != 0)
            return TP_ENOTFOUND;
        snprintf(real, sizeof(real), "%s", again);
    }
    if (!S_ISREG(st.st_mode) || strlen(real) >= outlen)
        return TP_ENOTFOUND;
    snprintf(out, outlen, "%s", real);
    return 0;
}

const char *tp_static_mime(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"ico", "image/x-icon"},
        {"woff2", "font/woff2"},
        {"txt", "text/plain; charset=utf-8"},
        {"wasm", "application/wasm"},
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot != NULL)
        for (size_t i = 0; i < TP_ARRAY_LEN(types); i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

void tp_static_etag(int64_t size, int64_t mtime_ns, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%llx-%llx\"", (unsigned long long)size, (unsigned long long)mtime_ns);
}

/* True when an If-None-Match list names `etag` (or is "*"); weak prefixes compare equal, as
 * RFC 9110 §13.1.2 asks for this header. */
static bool etag_matches(const char *inm, const char *etag)
{
    if (strcmp(inm, "*") == 0)
        return true;
    size_t el = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, el) == 0 && (p[el] == '\0' || p[el] == ',' || p[el] == ' '))
            return true;
        const char *c = strchr(p, ',');
        if (c == NULL)
            break;
        p = c + 1;
    }
    return false;
}

void tp_static_handle(struct tp_http_ctx *ctx, void *ud)
{
    const struct tp_static *s = ud;
    const struct tp_http_request *req = tp_http_ctx_request(ctx);
    if (req->method != TP_HTTP_GET && req->method != TP_HTTP_HEAD) {
        tp_http_ctx_add_header(ctx, "Allow", "GET, HEAD");
        tp_http_reply_error(ctx, 405, "method_not_allowed", "method not allowed for this path");
        return;
    }
    char path[PATH_MAX];
    int r = tp_static_resolve(s, req->path, path, sizeof(path));
    if (r == TP_EINVAL) {
        tp_http_reply_error(ctx, 400, "bad_request", "malformed percent-encoding in path");
        return;
    }
    if (r != 0) {
        tp_http_reply_error(ctx, 404, "not_found", "no such resource");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)MAX_FILE) {
        if (fd >= 0)
            close(fd);
        tp_http_reply_error(ctx, 404, "not_found", "no such resource");
        return;
    }
    char etag[64];
    tp_static_etag(st.st_size, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec, etag,
                   sizeof(etag));
    tp_http_ctx_add_header(ctx, "ETag", etag);
    /* No fingerprinted file names in web/: let browsers cache but revalidate every time. */
    tp_http_ctx_add_header(ctx, "Cache-Control", "no-cache");
    tp_http_ctx_add_header(ctx, "X-Content-Type-Options", "nosniff");
    const char *inm = tp_http_ctx_header(ctx, "If-None-Match");
    if (inm != NULL && etag_matches(inm, etag)) {
        close(fd);
        tp_http_reply(ctx, 304, NULL, NULL, 0);
        return;
    }
    size_t size = (size_t)st.st_size;
    char *data = tp_xmalloc(size ? size : 1);
    size_t got = 0;
    while (req->method == TP_HTTP_GET && got < size) {
        ssize_t n = pread(fd, data + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (req->method == TP_HTTP_GET && got != size) {
        free(data);
        tp_log_warn("static", "short read\tpath=%s", path);
        tp_http_reply_error(ctx, 500, "internal", "could not read file");
        return;
    }
    /* For HEAD the body is suppressed by tp_http_reply but Content-Length must be the size. */
    tp_http_reply(ctx, 200, tp_static_mime(path), data, size);
    free(data);
}
