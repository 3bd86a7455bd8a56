/*
 * Tests for src/net/tls.c: certificate preparation in a temporary var_dir, configuration errors,
 * and real handshakes on a loopback listener against `openssl s_client` (the client has to be
 * another TLS stack anyway; only tls.c may include mbedTLS). No network beyond 127.0.0.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/net/io.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/tls.h"

struct fixture {
    char dir[64];
    struct tp_config_server cfg;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tp-tls-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->cfg.var_dir, sizeof f->cfg.var_dir, "%s/var", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* out = a + b. Through pointers so that -Wformat-truncation does not second-guess the sizes. */
static void join(char *out, size_t len, const char *a, const char *b)
{
    int n = snprintf(out, len, "%s%s", a, b);
    assert_true(n > 0 && (size_t)n < len);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
    }
    fclose(fp);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Runs a shell command, returns its stdout (malloc'd). */
static char *run(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 65536, n = 0, r;
    char *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - 1 - n, p)) > 0)
        n += r;
    buf[n] = '\0';
    pclose(p);
    return buf;
}

/* --- Preparation and loading --- */

static void test_prepare_generates(void **state)
{
    struct fixture *f = *state;
    char err[512] = "", cert[128], key[128];
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    join(cert, sizeof cert, f->cfg.var_dir, "/tls/cert.pem");
    join(key, sizeof key, f->cfg.var_dir, "/tls/key.pem");

    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(cert, &st), 0);
    assert_true(st.st_size > 200);

    /* No temp files left behind. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ls -a '%s/tls' | grep -c tmp", f->cfg.var_dir);
    char *out = run(cmd);
    assert_string_equal(out, "0\n");
    free(out);

    /* The certificate says what we promised (checked by an independent parser). */
    snprintf(cmd, sizeof cmd, "openssl x509 -in '%s' -noout -text", cert);
    out = run(cmd);
    assert_non_null(strstr(out, "CN = localhost"));
    assert_non_null(strstr(out, "DNS:localhost"));
    assert_non_null(strstr(out, "IP Address:127.0.0.1"));
    assert_non_null(strstr(out, "ecdsa-with-SHA256"));
    assert_non_null(strstr(out, "prime256v1"));
    assert_non_null(strstr(out, "Version: 3"));
    free(out);
    snprintf(cmd, sizeof cmd,
             "openssl x509 -in '%s' -noout -checkend %d >/dev/null && "
             "! openssl x509 -in '%s' -noout -checkend %d >/dev/null && echo ok",
             cert, 824 * 86400, cert, 826 * 86400);
    out = run(cmd);
    assert_string_equal(out, "ok\n");
    free(out);
    snprintf(cmd, sizeof cmd, "openssl pkey -in '%s' -noout 2>&1 && echo ok", key);
    out = run(cmd);
    assert_string_equal(out, "ok\n");
    free(out);

    /* The files load back into a server context. */
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);
    assert_non_null(ctx);
    tp_tls_ctx_free(ctx);
    tp_tls_ctx_free(NULL);
}

static void test_prepare_reuses(void **state)
{
    struct fixture *f = *state;
    char err[512], cert[128], key[128];
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    join(cert, sizeof cert, f->cfg.var_dir, "/tls/cert.pem");
    join(key, sizeof key, f->cfg.var_dir, "/tls/key.pem");
    char *c1 = slurp(cert, NULL), *k1 = slurp(key, NULL);
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    char *c2 = slurp(cert, NULL), *k2 = slurp(key, NULL);
    assert_string_equal(c1, c2);
    assert_string_equal(k1, k2);

    /* Half a pair (key lost) is regenerated as a whole, with a new key. */
    assert_int_equal(unlink(key), 0);
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    char *c3 = slurp(cert, NULL), *k3 = slurp(key, NULL);
    assert_string_not_equal(c1, c3);
    assert_string_not_equal(k1, k3);
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);
    tp_tls_ctx_free(ctx);
    free(c1), free(c2), free(c3), free(k1), free(k2), free(k3);
}

/* A worker that finds no files (prepare never ran) still gets a context. */
static void test_ctx_new_without_prepare(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);
    assert_non_null(ctx);
    tp_tls_ctx_free(ctx);
}

static void test_corrupt_self_signed(void **state)
{
    struct fixture *f = *state;
    char err[512], cert[128];
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    join(cert, sizeof cert, f->cfg.var_dir, "/tls/cert.pem");
    write_text(cert, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n");
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), TP_EINVAL);
    assert_non_null(strstr(err, cert));
    assert_non_null(strstr(err, "delete"));
    /* It is not silently overwritten. */
    char *c = slurp(cert, NULL);
    assert_non_null(strstr(c, "not base64"));
    free(c);
}

static void test_configured_errors(void **state)
{
    struct fixture *f = *state;
    char err[512], path[128], path2[128];
    struct tp_tls_ctx *ctx = (struct tp_tls_ctx *)&ctx;

    /* Missing file: named, with the OS reason. */
    snprintf(f->cfg.tls_cert, sizeof f->cfg.tls_cert, "%s/nope.pem", f->dir);
    snprintf(f->cfg.tls_key, sizeof f->cfg.tls_key, "%s/nokey.pem", f->dir);
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), TP_ENOTFOUND);
    assert_non_null(strstr(err, f->cfg.tls_cert));
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), TP_ENOTFOUND);
    assert_null(ctx);

    /* Only one of the two set. */
    f->cfg.tls_key[0] = '\0';
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), TP_EINVAL);
    assert_non_null(strstr(err, "tls_key"));

    /* A good pair to start from. */
    join(path, sizeof path, f->dir, "/a.crt");
    join(path2, sizeof path2, f->dir, "/a.key");
    assert_int_equal(tp_tls_make_self_signed(path, path2, "example.test", 30, err, sizeof err), 0);
    join(f->cfg.tls_cert, sizeof f->cfg.tls_cert, path, "");
    join(f->cfg.tls_key, sizeof f->cfg.tls_key, path2, "");
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);
    tp_tls_ctx_free(ctx);
    /* Nothing generated under var_dir when a pair is configured. */
    char vd[128];
    join(vd, sizeof vd, f->cfg.var_dir, "/tls");
    assert_int_not_equal(access(vd, F_OK), 0);

    /* Corrupt certificate. */
    char bad[128];
    join(bad, sizeof bad, f->dir, "/bad.crt");
    write_text(bad, "this is not a certificate\n");
    join(f->cfg.tls_cert, sizeof f->cfg.tls_cert, bad, "");
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), TP_EINVAL);
    assert_non_null(strstr(err, bad));
    assert_non_null(strstr(err, "certificate"));

    /* Corrupt key (a certificate where the key should be). */
    join(f->cfg.tls_cert, sizeof f->cfg.tls_cert, path, "");
    join(f->cfg.tls_key, sizeof f->cfg.tls_key, path, "");
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), TP_EINVAL);
    assert_non_null(strstr(err, "key"));
    assert_non_null(strstr(err, path));

    /* Key of another certificate. */
    char other_c[128], other_k[128];
    join(other_c, sizeof other_c, f->dir, "/b.crt");
    join(other_k, sizeof other_k, f->dir, "/b.key");
    assert_int_equal(tp_tls_make_self_signed(other_c, other_k, "localhost", 30, err, sizeof err),
                     0);
    join(f->cfg.tls_key, sizeof f->cfg.tls_key, other_k, "");
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), TP_EINVAL);
    assert_non_null(strstr(err, "does not match"));
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), TP_EINVAL);

    /* Invalid self-signed parameters. */
    assert_int_equal(tp_tls_make_self_signed(other_c, other_k, "a,b", 30, err, sizeof err),
                     TP_EINVAL);
    assert_int_equal(tp_tls_make_self_signed(other_c, other_k, "x", 0, err, sizeof err), TP_EINVAL);
}

/* An RSA certificate from the config works with the ECDHE-RSA suites. */
static void test_configured_rsa(void **state)
{
    struct fixture *f = *state;
    char cmd[2048], err[512];
    snprintf(f->cfg.tls_cert, sizeof f->cfg.tls_cert, "%s/rsa.crt", f->dir);
    snprintf(f->cfg.tls_key, sizeof f->cfg.tls_key, "%s/rsa.key", f->dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 2 "
             "-keyout '%s' -out '%s' >/dev/null 2>&1 && echo ok",
             f->cfg.tls_key, f->cfg.tls_cert);
    char *out = run(cmd);
    assert_string_equal(out, "ok\n");
    free(out);
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);
    tp_tls_ctx_free(ctx);
}

/* --- Handshakes against openssl s_client --- */

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Waits for one connection (5 s) and returns it non-blocking. */
static int accept_nb(int lfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

/* Waits (up to 5 s) until `fd` is ready for what `want` (TP_IO_WANT_*) asks. */
static void wait_io(int fd, int want)
{
    struct pollfd p = {.fd = fd, .events = want == TP_IO_WANT_WRITE ? POLLOUT : POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
}

static int drive_handshake(struct tp_io *io)
{
    for (int i = 0; i < 1000; i++) {
        int rc = tp_io_handshake(io);
        if (rc != TP_IO_WANT_READ && rc != TP_IO_WANT_WRITE)
            return rc;
        wait_io(io->fd, rc);
    }
    fail_msg("handshake did not finish");
    return TP_EIO;
}

struct client {
    pid_t pid;
    int in;           /* write end of s_client's stdin */
    char outpath[96]; /* its stdout + stderr */
};

/* Starts `openssl s_client -connect 127.0.0.1:port <args>` with stdin on a pipe. */
static void client_start(struct client *c, struct fixture *f, int port, const char *args)
{
    int pin[2];
    assert_int_equal(pipe(pin), 0);
    snprintf(c->outpath, sizeof c->outpath, "%s/client.%d.out", f->dir, port);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "exec openssl s_client -connect 127.0.0.1:%d -servername localhost %s", port, args);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        int out = open(c->outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(pin[0], 0);
        dup2(out, 1);
        dup2(out, 2);
        close(pin[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pin[0]);
    c->in = pin[1];
}

/* Closes stdin, waits for the client (killing it after 5 s); returns its output. */
static char *client_finish(struct client *c, int *status)
{
    if (c->in >= 0)
        close(c->in);
    c->in = -1;
    int st = 0;
    for (int i = 0; i < 500; i++) {
        if (waitpid(c->pid, &st, WNOHANG) == c->pid)
            goto done;
        usleep(10000);
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &st, 0);
done:
    if (status != NULL)
        *status = st;
    char *out = slurp(c->outpath, NULL);
    assert_non_null(out);
    return out;
}

/* Reads until `want` bytes arrived (driving WANT_* with poll). */
static void read_exact(struct tp_io *io, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t r = tp_io_read(io, buf + got, want - got);
        if (r == TP_IO_WANT_READ || r == TP_IO_WANT_WRITE) {
            wait_io(io->fd, (int)r);
            continue;
        }
        assert_true(r > 0);
        got += (size_t)r;
    }
}

/* Writes all of buf, retrying with the same leading bytes after WANT_* as the API requires. */
static void write_all(struct tp_io *io, const char *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = tp_io_write(io, buf + off, n - off);
        if (w == TP_IO_WANT_READ || w == TP_IO_WANT_WRITE) {
            wait_io(io->fd, (int)w);
            continue;
        }
        assert_true(w > 0);
        assert_true((size_t)w <= n - off);
        off += (size_t)w;
    }
}

/* A successful TLS 1.2 session: handshake, ping from the client, pong back, close_notify. */
static void session_ok(struct fixture *f, struct tp_tls_ctx *ctx, const char *args,
                       const char *expect_cipher)
{
    int port, lfd = listen_loopback(&port);
    struct client c;
    client_start(&c, f, port, args);
    int fd = accept_nb(lfd);
    struct tp_io io;
    assert_int_equal(tp_tls_io_init(&io, ctx, fd), 0);
    int64_t before = tp_metrics_get_total(TP_METRIC_TLS_HANDSHAKES_TOTAL);
    assert_int_equal(drive_handshake(&io), 0);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_TLS_HANDSHAKES_TOTAL), before + 1);
    assert_int_equal(tp_io_handshake(&io), 0); /* idempotent once done */

    assert_int_equal(write(c.in, "ping\n", 5), 5);
    char buf[8];
    read_exact(&io, buf, 5);
    assert_memory_equal(buf, "ping\n", 5);
    write_all(&io, "pong\n", 5);
    tp_io_deinit(&io); /* sends close_notify: s_client (-ign_eof) exits on it */
    close(fd);
    close(lfd);
    int st;
    char *out = client_finish(&c, &st);
    assert_non_null(strstr(out, "pong"));
    assert_non_null(strstr(out, "TLSv1.2"));
    if (strstr(out, expect_cipher) == NULL)
        fail_msg("cipher %s not in s_client output:\n%s", expect_cipher, out);
    free(out);
}

/* A refused session: the server's handshake fails with a protocol error, and the client fails. */
static void session_refused(struct fixture *f, struct tp_tls_ctx *ctx, const char *args)
{
    int port, lfd = listen_loopback(&port);
    struct client c;
    client_start(&c, f, port, args);
    int fd = accept_nb(lfd);
    struct tp_io io;
    assert_int_equal(tp_tls_io_init(&io, ctx, fd), 0);
    int64_t before = tp_metrics_get_total(TP_METRIC_TLS_HANDSHAKE_FAILURES_TOTAL);
    int rc = drive_handshake(&io);
    if (rc != TP_EPROTO)
        fail_msg("expected TP_EPROTO for '%s', got %d", args, rc);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_TLS_HANDSHAKE_FAILURES_TOTAL), before + 1);
    tp_io_deinit(&io);
    close(fd);
    close(lfd);
    int st;
    char *out = client_finish(&c, &st);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    assert_null(strstr(out, "Cipher is ECDHE"));
    free(out);
}

static void test_handshakes(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_prepare(&f->cfg, err, sizeof err), 0);
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);

    session_ok(f, ctx, "-tls1_2 -ign_eof", "ECDHE-ECDSA-AES128-GCM-SHA256");
    session_ok(f, ctx, "-tls1_2 -ign_eof -cipher ECDHE-ECDSA-AES256-GCM-SHA384",
               "ECDHE-ECDSA-AES256-GCM-SHA384");
    session_ok(f, ctx, "-tls1_2 -ign_eof -cipher ECDHE-ECDSA-CHACHA20-POLY1305",
               "ECDHE-ECDSA-CHACHA20-POLY1305");
    /* No version forced: the client offers 1.3 and 1.2, we settle on 1.2. */
    session_ok(f, ctx, "-ign_eof", "ECDHE-ECDSA-AES128-GCM-SHA256");

    /* SECLEVEL=0 so that OpenSSL 3 really sends these hellos instead of refusing locally. */
    session_refused(f, ctx, "-tls1_1 -cipher DEFAULT@SECLEVEL=0");
    session_refused(f, ctx, "-tls1 -cipher DEFAULT@SECLEVEL=0");
    session_refused(f, ctx, "-tls1_2 -cipher AES128-SHA@SECLEVEL=0");
    session_refused(f, ctx, "-tls1_2 -cipher AES128-GCM-SHA256@SECLEVEL=0");
    session_refused(f, ctx, "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA@SECLEVEL=0");
    session_refused(f, ctx, "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256@SECLEVEL=0");
    tp_tls_ctx_free(ctx);
}

/* An RSA certificate negotiates an ECDHE-RSA AEAD suite. */
static void test_handshake_rsa(void **state)
{
    struct fixture *f = *state;
    test_configured_rsa(state);
    char err[512];
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);
    session_ok(f, ctx, "-tls1_2 -ign_eof", "ECDHE-RSA-AES128-GCM-SHA256");
    session_refused(f, ctx, "-tls1_2 -cipher AES256-GCM-SHA384@SECLEVEL=0");
    tp_tls_ctx_free(ctx);
}

/*
 * A 1 MiB response through a tiny send buffer: writes hit WANT_WRITE in the middle of records,
 * and the byte counts must still add up exactly (the client sees every byte once, in order).
 * The client is stopped until the first WANT_WRITE: a client that reads as fast as we write (a
 * slow sanitizer build on a busy host) left the retry path untried and failed the test.
 */
static void test_large_write(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);

    enum { LINES = 1 << 15, LINE = 32 };
    size_t n = (size_t)LINES * LINE;
    char *data = malloc(n + 1);
    for (int i = 0; i < LINES; i++) {
        char line[64];
        snprintf(line, sizeof line, "L%07d abcdefghijklmnopqrstuv\n", i);
        memcpy(data + (size_t)i * LINE, line, LINE);
    }

    int port, lfd = listen_loopback(&port);
    struct client c;
    client_start(&c, f, port, "-tls1_2 -ign_eof -quiet");
    int fd = accept_nb(lfd);
    int small = 4096;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    struct tp_io io;
    assert_int_equal(tp_tls_io_init(&io, ctx, fd), 0);
    assert_int_equal(drive_handshake(&io), 0);

    /* Stopped, the client reads nothing: its receive window (~128 KiB, not grown without reads)
     * and our 4 KiB send buffer take far less than 1 MiB, so a write must meet WANT_WRITE. */
    assert_int_equal(kill(c.pid, SIGSTOP), 0);
    int wants = 0;
    size_t off = 0;
    while (off < n) {
        /* Offer a varying amount each call (never fewer than last time after a WANT). */
        ssize_t w = tp_io_write(&io, data + off, n - off);
        if (w == TP_IO_WANT_READ || w == TP_IO_WANT_WRITE) {
            if (wants++ == 0)
                assert_int_equal(kill(c.pid, SIGCONT), 0);
            wait_io(fd, (int)w);
            continue;
        }
        assert_true(w > 0);
        off += (size_t)w;
    }
    assert_true(wants > 0); /* the test really exercised the retry path */
    tp_io_deinit(&io);
    close(fd);
    close(lfd);
    char *out = client_finish(&c, NULL);
    char *start = strstr(out, "L0000000 ");
    assert_non_null(start);
    assert_true(strlen(start) >= n);
    assert_memory_equal(start, data, n);
    free(out);
    free(data);
    tp_tls_ctx_free(ctx);
}

/* Hostile or broken peers: plain HTTP on the TLS port, and a client that hangs up at once. */
static void test_bad_peers(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct tp_tls_ctx *ctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &ctx, err, sizeof err), 0);

    int sv[2];
    struct tp_io io;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(tp_tls_io_init(&io, ctx, sv[0]), 0);
    assert_int_equal(tp_io_handshake(&io), TP_IO_WANT_READ);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(sv[1], http, strlen(http)), (ssize_t)strlen(http));
    assert_int_equal(tp_io_handshake(&io), TP_EPROTO);
    tp_io_deinit(&io);
    close(sv[0]);
    close(sv[1]);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(tp_tls_io_init(&io, ctx, sv[0]), 0);
    close(sv[1]);
    assert_int_equal(tp_io_handshake(&io), TP_ECLOSED);
    tp_io_deinit(&io);
    tp_io_deinit(&io); /* second deinit is a no-op (ops cleared) */
    close(sv[0]);

    /* A truncated ClientHello record header claiming 16 KiB, then EOF. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(tp_tls_io_init(&io, ctx, sv[0]), 0);
    const unsigned char hdr[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00};
    assert_int_equal(write(sv[1], hdr, sizeof hdr), (ssize_t)sizeof hdr);
    assert_int_equal(tp_io_handshake(&io), TP_IO_WANT_READ);
    close(sv[1]);
    assert_int_equal(tp_io_handshake(&io), TP_ECLOSED);
    tp_io_deinit(&io);
    close(sv[0]);
    tp_tls_ctx_free(ctx);
}

/*
 * The client context (loadgen's wss) against our own server over a socketpair: both handshakes
 * driven in turn, then a message each way and the server's close_notify seen as EOF. Also a
 * "server" that answers plain HTTP: the client fails, it does not hang.
 */
static void test_client_ctx(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct tp_tls_ctx *sctx = NULL, *cctx = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &sctx, err, sizeof err), 0);
    assert_int_equal(tp_tls_client_ctx_new(&cctx, err, sizeof err), 0);

    /* The first session is a full handshake, the second resumes it (the client context keeps
     * its ticket), the third meets a server whose ticket key is new: a full handshake again. */
    struct tp_tls_ctx *other = NULL;
    assert_int_equal(tp_tls_ctx_new(&f->cfg, &other, err, sizeof err), 0);
    struct tp_tls_ctx *servers[] = {sctx, sctx, other};
    int sv[2];
    struct tp_io sio, cio;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        assert_int_equal(tp_tls_io_init(&sio, servers[k], sv[0]), 0);
        assert_int_equal(tp_tls_io_init(&cio, cctx, sv[1]), 0);
        int rs = TP_IO_WANT_READ, rc = TP_IO_WANT_READ;
        for (int i = 0; i < 100 && (rs != 0 || rc != 0); i++) {
            rc = tp_io_handshake(&cio);
            rs = tp_io_handshake(&sio);
            assert_true(rc == 0 || rc == TP_IO_WANT_READ || rc == TP_IO_WANT_WRITE);
            assert_true(rs == 0 || rs == TP_IO_WANT_READ || rs == TP_IO_WANT_WRITE);
        }
        assert_int_equal(rc, 0);
        assert_int_equal(rs, 0);

        char buf[64];
        assert_int_equal(tp_io_write(&cio, "ping", 4), 4);
        assert_int_equal(tp_io_read(&sio, buf, sizeof buf), 4);
        assert_memory_equal(buf, "ping", 4);
        assert_int_equal(tp_io_write(&sio, "pong!", 5), 5);
        assert_int_equal(tp_io_read(&cio, buf, sizeof buf), 5);
        assert_memory_equal(buf, "pong!", 5);
        assert_int_equal(tp_io_read(&cio, buf, sizeof buf), TP_IO_WANT_READ);
        tp_io_deinit(&sio); /* sends close_notify */
        assert_int_equal(tp_io_read(&cio, buf, sizeof buf), 0);
        tp_io_deinit(&cio);
        close(sv[0]);
        close(sv[1]);
    }
    tp_tls_ctx_free(other);

    /* Hostile: the peer answers the ClientHello with plain HTTP. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(tp_tls_io_init(&cio, cctx, sv[1]), 0);
    assert_int_equal(tp_io_handshake(&cio), TP_IO_WANT_READ);
    const char *http = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(write(sv[0], http, strlen(http)), (ssize_t)strlen(http));
    assert_int_equal(tp_io_handshake(&cio), TP_EPROTO);
    tp_io_deinit(&cio);
    close(sv[0]);
    close(sv[1]);
    tp_tls_ctx_free(cctx);
    tp_tls_ctx_free(sctx);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    tp_log_setup(TP_LOG_WARN, "test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prepare_generates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_reuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctx_new_without_prepare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_self_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configured_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configured_rsa, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_rsa, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_peers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_ctx, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
