/* For the unit tests of a worker's teardown (test_bet_batch, test_leader): a real worker
 * (tp_worker_main) in a child process, no listener, its exit hooks run as in production, and
 * the timerfds a process holds. Include after cmocka.h. */
#ifndef TP_TEST_WORKER_EXIT_H
#define TP_TEST_WORKER_EXIT_H

#include "tickpool/base/config.h"
#include "tickpool/net/worker.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* How many timerfds the calling process holds, from /proc/self/fd; -1 when it cannot be read. */
static inline int timerfds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char to[64];
        ssize_t len = readlinkat(dirfd(d), e->d_name, to, sizeof(to) - 1);
        if (len > 0) {
            to[len] = '\0';
            n += strcmp(to, "anon_inode:[timerfd]") == 0;
        }
    }
    closedir(d);
    return n;
}

/* Runs a worker in a child process: `install` adjusts the config and installs the modules and
 * hooks (one of them raises SIGTERM, the drain the master asks for); the child must exit 0. */
static inline void worker_exit_run(void (*install)(struct tp_config *cfg))
{
    fflush(NULL);
    int parent = (int)getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static struct tp_config cfg;
        tp_config_defaults(&cfg);
        cfg.server.http_port = 0;
        cfg.server.https_port = 0;
        cfg.server.pin_workers = false;
        snprintf(cfg.log.level, sizeof(cfg.log.level), "error"); /* no static-files warning */
        install(&cfg);
        tp_worker_main(&cfg, 0, parent); /* exits */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

#endif
