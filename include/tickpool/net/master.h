/*
 * The master process: prepares what workers share (TLS certificate files, the shared metrics
 * region, the per-client rate limit table), forks one worker per configured process, restarts
 * crashed workers with backoff, and on SIGTERM/SIGINT drains them within server.shutdown_timeout
 * before exiting.
 */
#ifndef TP_MASTER_H
#define TP_MASTER_H

struct tp_config;

/**
 * Runs the server in the foreground until SIGTERM or SIGINT. Returns the process exit status:
 * 0 after a clean shutdown, 1 when start-up failed or a worker could not start
 * (TP_WORKER_EXIT_FATAL). `cfg` must outlive the call (workers inherit it).
 */
int tp_master_run(const struct tp_config *cfg);

#endif
