/*
 * Helpers for C integration tests: a private redis-server on a free loopback port in a temporary
 * directory (no persistence), started, killed and restarted on the same port; and a libev
 * "run until" helper. Header-only (static functions) so each test executable includes it once.
 *
 * A test calls integ_require("redis-server") first: it exits 77 (meson: skipped) when the
 * binary is missing.
 */
#ifndef TP_INTEG_ENV_H
#define TP_INTEG_ENV_H

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct integ_redis {
    pid_t pid;
    int port;
    char dir[256];  /* temporary directory (removed by integ_redis_cleanup) */
    char sock[300]; /* unix socket path inside dir */
    char url[64];   /* redis://127.0.0.1:PORT */
};

/* True when `bin` is an executable in PATH. */
static __attribute__((unused)) bool integ_have(const char *bin)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/bin:/bin";
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char full[4200];
        snprintf(full, sizeof(full), "%s/%s", d, bin);
        if (access(full, X_OK) == 0)
            return true;
    }
    return false;
}

/* Exits 77 (skip) when `bin` is missing. */
static __attribute__((unused)) void integ_require(const char *bin)
{
    if (!integ_have(bin)) {
        fprintf(stderr, "skip: %s not installed\n", bin);
        exit(77);
    }
}

/* A TCP port that was free a moment ago on 127.0.0.1. */
static __attribute__((unused)) int integ_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("integ_free_port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static __attribute__((unused)) double integ_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sends PING over a fresh TCP connection; true on +PONG. */
static __attribute__((unused)) bool integ_redis_ping(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 1};
    bool ok = false;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && write(fd, "PING\r\n", 6) == 6) {
        char buf[16] = {0};
        ok = read(fd, buf, sizeof(buf) - 1) >= 5 && memcmp(buf, "+PONG", 5) == 0;
    }
    close(fd);
    return ok;
}

/* Starts redis-server (first call: picks a port and a temp dir; later calls reuse both, so a
 * restart comes back on the same address). Waits until it answers PING. */
static __attribute__((unused)) void integ_redis_start(struct integ_redis *r)
{
    if (r->port == 0) {
        r->port = integ_free_port();
        snprintf(r->dir, sizeof(r->dir), "/tmp/tp-integ-redis-XXXXXX");
        if (mkdtemp(r->dir) == NULL) {
            perror("mkdtemp");
            exit(1);
        }
        snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir);
        snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
    }
    char port[16], log[320];
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(log, sizeof(log), "%s/redis.log", r->dir);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
               r->dir, "--save", "", "--appendonly", "no", "--unixsocket", r->sock,
               "--unixsocketperm", "700", "--enable-debug-command", "yes", "--logfile", log,
               (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    double end = integ_now() + 10;
    while (integ_now() < end) {
        if (integ_redis_ping(r->port))
            return;
        usleep(20000);
    }
    fprintf(stderr, "redis-server did not come up on port %d\n", r->port);
    exit(1);
}

/* Kills the server hard (SIGKILL: a crash, not a clean shutdown) and reaps it. */
static __attribute__((unused)) void integ_redis_stop(struct integ_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Stops the server and removes its directory. */
static __attribute__((unused)) void integ_redis_cleanup(struct integ_redis *r)
{
    integ_redis_stop(r);
    if (r->dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", r->dir);
        r->dir[0] = '\0';
    }
}

static __attribute__((unused)) void integ_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Runs `loop` until *flag becomes true or `max_s` seconds pass; returns *flag. A 10 ms ticker
 * keeps ev_run from blocking forever when nothing else is armed. */
static __attribute__((unused)) bool integ_run_until(struct ev_loop *loop, const volatile bool *flag,
                                                    double max_s)
{
    ev_timer tick;
    ev_timer_init(&tick, integ_tick, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    double end = integ_now() + max_s;
    while (!*flag && integ_now() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return *flag;
}

/* Runs `loop` for `s` seconds. */
static __attribute__((unused)) void integ_run_for(struct ev_loop *loop, double s)
{
    static const volatile bool never = false;
    integ_run_until(loop, &never, s);
}

/* --- Postgres --- */

#define INTEG_PG_BIN "/usr/lib/postgresql/15/bin"

struct integ_pg {
    char dir[256]; /* private cluster directory, empty when using the shared cluster */
    char admin_url[256];
    char db[64];
    char url[400]; /* the fresh database */
    bool private_cluster;
};

/* Runs a shell command; exits the test with a message on failure. */
static __attribute__((unused)) void integ_sh(const char *cmd)
{
    if (system(cmd) != 0) {
        fprintf(stderr, "command failed: %s\n", cmd);
        exit(1);
    }
}

/* A fresh database: in the shared test cluster ($TP_TEST_PG_ADMIN_URL, as scripts/test runs
 * one) or in a private cluster initialised here. Exits 77 when Postgres is not installed. */
static __attribute__((unused)) void integ_pg_start(struct integ_pg *pg)
{
    char cmd[1400];
    const char *admin = getenv("TP_TEST_PG_ADMIN_URL");
    memset(pg, 0, sizeof(*pg));
    if (admin != NULL && admin[0] != '\0') {
        snprintf(pg->admin_url, sizeof(pg->admin_url), "%s", admin);
    } else {
        if (access(INTEG_PG_BIN "/initdb", X_OK) != 0) {
            fprintf(stderr, "skip: postgresql not installed\n");
            exit(77);
        }
        const char *as_pg = geteuid() == 0 ? "runuser -u postgres -- " : "";
        int port = integ_free_port();
        snprintf(pg->dir, sizeof(pg->dir), "/tmp/tp-integ-pg-XXXXXX");
        if (mkdtemp(pg->dir) == NULL) {
            perror("mkdtemp");
            exit(1);
        }
        chmod(pg->dir, 0755);
        if (geteuid() == 0) {
            snprintf(cmd, sizeof(cmd), "chown postgres:postgres '%s'", pg->dir);
            integ_sh(cmd);
        }
        snprintf(cmd, sizeof(cmd),
                 "%s" INTEG_PG_BIN "/initdb -D '%s/data' -U postgres --auth=trust -E UTF8 "
                 "--no-sync >/dev/null 2>&1",
                 as_pg, pg->dir);
        integ_sh(cmd);
        snprintf(cmd, sizeof(cmd),
                 "%s" INTEG_PG_BIN "/pg_ctl -D '%s/data' -l '%s/log' -w -o '-p %d -k %s "
                 "-c listen_addresses=127.0.0.1 -c fsync=off' start >/dev/null",
                 as_pg, pg->dir, pg->dir, port, pg->dir);
        integ_sh(cmd);
        pg->private_cluster = true;
        snprintf(pg->admin_url, sizeof(pg->admin_url),
                 "postgresql://postgres@127.0.0.1:%d/postgres", port);
    }
    snprintf(pg->db, sizeof(pg->db), "tp_integ_%d_%ld", (int)getpid(), (long)time(NULL));
    snprintf(cmd, sizeof(cmd), "psql '%s' -qX -c 'CREATE DATABASE %s' >/dev/null", pg->admin_url,
             pg->db);
    integ_sh(cmd);
    const char *slash = strrchr(pg->admin_url, '/');
    snprintf(pg->url, sizeof(pg->url), "%.*s/%s", (int)(slash - pg->admin_url), pg->admin_url,
             pg->db);
}

/* Drops the database, or stops and removes the private cluster. */
static __attribute__((unused)) void integ_pg_stop(struct integ_pg *pg)
{
    char cmd[1400];
    if (pg->private_cluster) {
        snprintf(cmd, sizeof(cmd),
                 "%s" INTEG_PG_BIN "/pg_ctl -D '%s/data' -m immediate stop >/dev/null 2>&1; "
                 "rm -rf '%s'",
                 geteuid() == 0 ? "runuser -u postgres -- " : "", pg->dir, pg->dir);
    } else {
        snprintf(cmd, sizeof(cmd),
                 "psql '%s' -qX -c 'DROP DATABASE IF EXISTS %s WITH (FORCE)' >/dev/null 2>&1",
                 pg->admin_url, pg->db);
    }
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed: %s\n", cmd);
}

#endif
