/* Unit tests for static file serving (src/net/static.c): path containment against `..`, encoded
 * dots and slashes, NUL, absolute forms and symlinks out of the root; MIME types; ETag/304. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/net/http.h"
#include "tickpool/net/router.h"
#include "tickpool/net/static.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[PATH_MAX / 2]; /* temp dir holding root/ and outside/ */
static char root[PATH_MAX];

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/tp-static-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char real[PATH_MAX];
    assert_non_null(realpath(tmpl, real));
    assert_true(strlen(real) < 1024);
    memcpy(base, real, strlen(real) + 1);
    char p[PATH_MAX + 64];
    snprintf(root, sizeof(root), "%.1024s/root", base);
    mkdir(root, 0755);
    snprintf(p, sizeof(p), "%s/sub", root);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/outside", base);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/index.html", root);
    write_file(p, "<h1>hi</h1>");
    snprintf(p, sizeof(p), "%s/app.js", root);
    write_file(p, "console.log(1)");
    snprintf(p, sizeof(p), "%s/sub/index.html", root);
    write_file(p, "sub");
    snprintf(p, sizeof(p), "%s/sub/a b.css", root);
    write_file(p, "body{}");
    snprintf(p, sizeof(p), "%s/outside/secret.txt", base);
    write_file(p, "secret");
    char target[PATH_MAX + 64];
    snprintf(target, sizeof(target), "%s/outside/secret.txt", base);
    snprintf(p, sizeof(p), "%s/out.txt", root);
    assert_int_equal(symlink(target, p), 0);
    snprintf(p, sizeof(p), "%s/outdir", root);
    snprintf(target, sizeof(target), "%s/outside", base);
    assert_int_equal(symlink(target, p), 0);
    snprintf(p, sizeof(p), "%s/alias.js", root);
    assert_int_equal(symlink("app.js", p), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static void expect_file(struct tp_static *s, const char *url, const char *rel)
{
    char out[PATH_MAX], want[PATH_MAX + 64];
    int r = tp_static_resolve(s, url, out, sizeof(out));
    if (r != 0)
        fail_msg("%s: expected %s, got %d", url, rel, r);
    snprintf(want, sizeof(want), "%s/%s", root, rel);
    assert_string_equal(out, want);
}

static void test_resolve_ok(void **state)
{
    (void)state;
    char err[256];
    struct tp_static *s = tp_static_new(root, err, sizeof(err));
    assert_non_null(s);
    expect_file(s, "/", "index.html");
    expect_file(s, "/index.html", "index.html");
    expect_file(s, "/app.js", "app.js");
    expect_file(s, "/sub/", "sub/index.html");
    expect_file(s, "/sub", "sub/index.html");
    expect_file(s, "/sub/a%20b.css", "sub/a b.css");
    expect_file(s, "/alias.js", "app.js"); /* symlink inside the root is fine */
    tp_static_free(s);
}

static void test_resolve_hostile(void **state)
{
    (void)state;
    char err[256], out[PATH_MAX];
    struct tp_static *s = tp_static_new(root, err, sizeof(err));
    const char *notfound[] = {
        "/../outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/sub/../index.html", /* any ".." segment is refused, even one staying inside */
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/.%2e/outside/secret.txt",
        "/sub/%2e%2e/%2e%2e/outside/secret.txt",
        "/..%2foutside%2fsecret.txt",
        "/%2fetc%2fpasswd",
        "/%2Fetc/passwd",
        "//etc/passwd",
        "/sub//index.html",
        "/./index.html",
        "/index.html%00.png",
        "/%5c..%5coutside",
        "/..\\outside\\secret.txt",
        "/out.txt",           /* symlink to a file outside */
        "/outdir/secret.txt", /* through a symlinked directory outside */
        "/outdir/",
        "/missing.js",
        "/etc/passwd",
        "",
        "index.html",
    };
    for (size_t i = 0; i < TP_ARRAY_LEN(notfound); i++) {
        int r = tp_static_resolve(s, notfound[i], out, sizeof(out));
        if (r != TP_ENOTFOUND)
            fail_msg("%s: expected TP_ENOTFOUND, got %d (%s)", notfound[i], r, r == 0 ? out : "");
    }
    assert_int_equal(tp_static_resolve(s, "/%zz", out, sizeof(out)), TP_EINVAL);
    assert_int_equal(tp_static_resolve(s, "/a%2", out, sizeof(out)), TP_EINVAL);
    tp_static_free(s);
    assert_null(tp_static_new("/nonexistent/dir", err, sizeof(err)));
    assert_non_null(strstr(err, "web_root"));
}

static void test_mime(void **state)
{
    (void)state;
    assert_string_equal(tp_static_mime("/a/index.html"), "text/html; charset=utf-8");
    assert_string_equal(tp_static_mime("x.js"), "text/javascript; charset=utf-8");
    assert_string_equal(tp_static_mime("x.mjs"), "text/javascript; charset=utf-8");
    assert_string_equal(tp_static_mime("x.CSS"), "text/css; charset=utf-8");
    assert_string_equal(tp_static_mime("x.json"), "application/json");
    assert_string_equal(tp_static_mime("x.svg"), "image/svg+xml");
    assert_string_equal(tp_static_mime("x.png"), "image/png");
    assert_string_equal(tp_static_mime("x.ico"), "image/x-icon");
    assert_string_equal(tp_static_mime("x.woff2"), "font/woff2");
    assert_string_equal(tp_static_mime("x.js.map"), "application/json");
    assert_string_equal(tp_static_mime("x.txt"), "text/plain; charset=utf-8");
    assert_string_equal(tp_static_mime("/dir.d/noext"), "application/octet-stream");
}

/* Runs the handler on a raw request; returns the response text (caller frees). */
static char *serve(struct tp_static *s, const char *raw, int *status)
{
    struct tp_http_limits lim = {TP_HTTP_MAX_HEADER_BYTES, 1024};
    struct tp_http_parser *p = tp_http_parser_new(&lim);
    size_t used;
    assert_int_equal(tp_http_parser_feed(p, raw, strlen(raw), &used), TP_HTTP_REQUEST);
    struct tp_http_ctx *ctx = tp_http_ctx_new(tp_http_parser_take(p), true, NULL, NULL);
    tp_http_parser_free(p);
    tp_static_handle(ctx, s);
    assert_true(tp_http_ctx_replied(ctx));
    *status = tp_http_ctx_status(ctx);
    struct tp_buf *o = tp_http_ctx_output(ctx);
    char *txt = tp_xstrndup(tp_buf_ptr(o), tp_buf_size(o));
    tp_http_ctx_free(ctx);
    return txt;
}

static void test_handler_etag(void **state)
{
    (void)state;
    char err[256];
    struct tp_static *s = tp_static_new(root, err, sizeof(err));
    int st;
    char *r = serve(s, "GET /app.js HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 200);
    assert_non_null(strstr(r, "Content-Type: text/javascript; charset=utf-8\r\n"));
    assert_non_null(strstr(r, "Content-Length: 14\r\n"));
    assert_non_null(strstr(r, "Cache-Control: "));
    assert_non_null(strstr(r, "\r\n\r\nconsole.log(1)"));
    char *et = strstr(r, "ETag: ");
    assert_non_null(et);
    char etag[64] = {0};
    memcpy(etag, et + 6, strcspn(et + 6, "\r"));
    free(r);

    char req[256];
    snprintf(req, sizeof(req), "GET /app.js HTTP/1.1\r\nIf-None-Match: %s\r\n\r\n", etag);
    r = serve(s, req, &st);
    assert_int_equal(st, 304);
    assert_non_null(strstr(r, etag));
    assert_true(strstr(r, "\r\n\r\n")[4] == '\0'); /* no body */
    free(r);
    snprintf(req, sizeof(req), "GET /app.js HTTP/1.1\r\nIf-None-Match: \"x\", W/%s\r\n\r\n", etag);
    free(serve(s, req, &st));
    assert_int_equal(st, 304);
    free(serve(s, "GET /app.js HTTP/1.1\r\nIf-None-Match: \"other\"\r\n\r\n", &st));
    assert_int_equal(st, 200);

    r = serve(s, "HEAD /index.html HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 200);
    assert_non_null(strstr(r, "Content-Length: 11\r\n"));
    assert_true(strstr(r, "\r\n\r\n")[4] == '\0');
    free(r);

    r = serve(s, "POST /index.html HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 405);
    assert_non_null(strstr(r, "Allow: GET, HEAD\r\n"));
    free(r);
    r = serve(s, "GET /%2e%2e/outside/secret.txt HTTP/1.1\r\n\r\n", &st);
    assert_int_equal(st, 404);
    assert_null(strstr(r, "secret\0"));
    free(r);
    free(serve(s, "GET /out.txt HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 404);
    free(serve(s, "GET /%zz HTTP/1.1\r\n\r\n", &st));
    assert_int_equal(st, 400);
    tp_static_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_ok),
        cmocka_unit_test(test_resolve_hostile),
        cmocka_unit_test(test_mime),
        cmocka_unit_test(test_handler_etag),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
