/*
 * Master process (see tickpool/net/master.h).
 *
 * The master runs no event loop: it blocks every signal it cares about and waits for them with
 * sigtimedwait, which makes the supervision loop a plain sequential program without async
 * signal handlers (the same reasoning as nginx's master using sigsuspend). Children unblock
 * signals right after fork.
 *
 * Crash loops: a worker that dies within RESTART_FAST_MS of starting doubles its restart delay
 * (up to RESTART_MAX_MS); one that ran longer restarts after RESTART_MIN_MS.
 */
#include "tickpool/net/master.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/base/ratelimit.h"
#include "tickpool/net/tls.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/workers_written.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 5000
#define RESTART_FAST_MS 2000

struct child {
    pid_t pid;          /* 0 when not running */
    int64_t started_ms; /* monotonic */
    int64_t restart_at; /* monotonic; when pid == 0 */
    int backoff_ms;
};

static sigset_t master_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    return set;
}

static pid_t spawn(const struct tp_config *cfg, int index, pid_t master)
{
    pid_t pid = fork();
    if (pid < 0) {
        tp_log_error("master", "fork failed\terr=\"%s\"", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        sigset_t set = master_signals();
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        tp_worker_main(cfg, index, (int)master);
    }
    return pid;
}

static void describe(int status, char *out, size_t len)
{
    if (WIFEXITED(status))
        snprintf(out, len, "exit_status=%d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, len, "signal=%s%s", strsignal(WTERMSIG(status)),
                 WCOREDUMP(status) ? " core=yes" : "");
    else
        snprintf(out, len, "status=0x%x", status);
}

/* Reaps every exited child; returns true when one exited with TP_WORKER_EXIT_FATAL. */
static bool reap(struct child *kids, int n, bool stopping)
{
    bool fatal = false;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return fatal;
        for (int i = 0; i < n; i++) {
            if (kids[i].pid != pid)
                continue;
            char how[96];
            describe(status, how, sizeof(how));
            kids[i].pid = 0;
            tp_metrics_reset_gauges(i + 1);
            if (stopping) {
                tp_log_info("master", "worker exited\tworker=%d pid=%d %s", i, (int)pid, how);
                break;
            }
            if (WIFEXITED(status) && WEXITSTATUS(status) == TP_WORKER_EXIT_FATAL) {
                tp_log_error("master", "worker cannot start, stopping\tworker=%d pid=%d", i,
                             (int)pid);
                fatal = true;
                break;
            }
            int64_t now = tp_mono_ms();
            if (now - kids[i].started_ms < RESTART_FAST_MS)
                kids[i].backoff_ms = TP_MIN(kids[i].backoff_ms * 2, RESTART_MAX_MS);
            else
                kids[i].backoff_ms = RESTART_MIN_MS;
            kids[i].restart_at = now + kids[i].backoff_ms;
            tp_metrics_inc(TP_METRIC_WORKER_RESTARTS_TOTAL);
            tp_log_warn("master", "worker died, restarting\tworker=%d pid=%d %s delay_ms=%d", i,
                        (int)pid, how, kids[i].backoff_ms);
            break;
        }
    }
}

static int running(const struct child *kids, int n)
{
    int r = 0;
    for (int i = 0; i < n; i++)
        r += kids[i].pid > 0;
    return r;
}

/* SIGTERM to every worker, wait up to the shutdown timeout (plus a margin for the workers'
 * own drain timers), then SIGKILL what is left. */
static void stop_all(const struct tp_config *cfg, struct child *kids, int n)
{
    for (int i = 0; i < n; i++)
        if (kids[i].pid > 0)
            kill(kids[i].pid, SIGTERM);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    int64_t deadline = tp_mono_ms() + cfg->server.shutdown_timeout_ms + 1000;
    while (running(kids, n) > 0) {
        reap(kids, n, true);
        int64_t left = deadline - tp_mono_ms();
        if (running(kids, n) == 0 || left <= 0)
            break;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
        sigtimedwait(&set, NULL, &ts);
    }
    for (int i = 0; i < n; i++) {
        if (kids[i].pid > 0) {
            tp_log_warn("master", "worker did not drain in time, killing\tworker=%d pid=%d", i,
                        (int)kids[i].pid);
            kill(kids[i].pid, SIGKILL);
            waitpid(kids[i].pid, NULL, 0);
            kids[i].pid = 0;
        }
    }
}

int tp_master_run(const struct tp_config *cfg)
{
    char err[512];
    int n = tp_config_workers(cfg);
    TP_ASSERT(n > 0);
    if (cfg->server.https_port != 0 && tp_tls_prepare(&cfg->server, err, sizeof(err)) != 0) {
        tp_log_error("master", "TLS: %s", err);
        return 1;
    }
    if (tp_metrics_init(n + 1) != 0) {
        tp_log_error("master", "cannot map the shared metrics region");
        return 1;
    }
    /* Per-client limits count over every worker of the host: one table mapped before fork. */
    if (tp_ratelimit_init() != 0) {
        tp_log_error("master", "cannot map the shared rate limit table");
        return 1;
    }
    /* The boundary each worker has written, for the game leader's hold (workers_written.h). */
    if (tp_workers_written_init(n) != 0) {
        tp_log_error("master", "cannot map the shared table of written boundaries");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t set = master_signals();
    sigprocmask(SIG_BLOCK, &set, NULL);

    pid_t self = getpid();
    struct child *kids = tp_xcalloc((size_t)n, sizeof(*kids));
    for (int i = 0; i < n; i++) {
        kids[i].backoff_ms = RESTART_MIN_MS;
        kids[i].started_ms = tp_mono_ms();
        kids[i].pid = spawn(cfg, i, self);
        if (kids[i].pid < 0) {
            kids[i].pid = 0;
            kids[i].restart_at = tp_mono_ms() + RESTART_MIN_MS;
        }
    }
    tp_log_info("master", "serving\tworkers=%d http_port=%d https_port=%d bind=%s", n,
                cfg->server.http_port, cfg->server.https_port, cfg->server.bind);

    int status = 0;
    for (;;) {
        int64_t now = tp_mono_ms(), wait_ms = 1000;
        for (int i = 0; i < n; i++)
            if (kids[i].pid == 0)
                wait_ms = TP_MIN(wait_ms, TP_MAX(kids[i].restart_at - now, 0));
        struct timespec ts = {.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            tp_log_info("master", "shutting down\tsignal=%s", strsignal(sig));
            break;
        }
        if (sig == SIGHUP)
            tp_log_info("master", "SIGHUP ignored (restart to reload configuration)");
        if (reap(kids, n, false)) {
            status = 1;
            break;
        }
        now = tp_mono_ms();
        for (int i = 0; i < n; i++) {
            if (kids[i].pid != 0 || kids[i].restart_at > now)
                continue;
            kids[i].started_ms = now;
            pid_t pid = spawn(cfg, i, self);
            if (pid > 0) {
                kids[i].pid = pid;
                tp_log_info("master", "worker started\tworker=%d pid=%d", i, (int)pid);
            } else {
                kids[i].restart_at = now + RESTART_MAX_MS;
            }
        }
    }
    stop_all(cfg, kids, n);
    free(kids);
    tp_log_info("master", "stopped");
    return status;
}
