/*
 * Process-shared counters and gauges, rendered in Prometheus text format (0.0.4) by /metrics.
 *
 * The master calls tp_metrics_init(workers + 1) BEFORE forking: it maps one anonymous shared
 * region with one cache-line-aligned slot per process. Each process then calls
 * tp_metrics_attach(its slot) and only ever writes its own slot (relaxed atomics, so threads of
 * one process may update it too); whichever worker answers /metrics sums every slot. Gauges are
 * per-slot values (e.g. that worker's open connections) summed on render.
 *
 * Before tp_metrics_init (unit tests, the CLI) every call works on a private, process-local slot.
 *
 * Adding a metric: add one line to TP_METRICS_LIST below (ID, name, counter|gauge, help).
 */
#ifndef TP_METRICS_H
#define TP_METRICS_H

#include <stdint.h>

struct tp_buf;

/* X(ID, name, type, help): the exposed name is "tickpool_" name; ID gives TP_METRIC_<ID>. */
#define TP_METRICS_LIST(X)                                                                         \
    X(HTTP_REQUESTS_TOTAL, http_requests_total, counter, "HTTP requests received")                 \
    X(HTTP_RESPONSES_2XX_TOTAL, http_responses_2xx_total, counter,                                 \
      "HTTP responses with status 2xx")                                                            \
    X(HTTP_RESPONSES_3XX_TOTAL, http_responses_3xx_total, counter,                                 \
      "HTTP responses with status 3xx")                                                            \
    X(HTTP_RESPONSES_4XX_TOTAL, http_responses_4xx_total, counter,                                 \
      "HTTP responses with status 4xx")                                                            \
    X(HTTP_RESPONSES_5XX_TOTAL, http_responses_5xx_total, counter,                                 \
      "HTTP responses with status 5xx")                                                            \
    X(HTTP_CONNECTIONS_OPEN, http_connections_open, gauge,                                         \
      "Open client connections (HTTP, HTTPS, WS)")                                                 \
    X(HTTP_BYTES_IN_TOTAL, http_bytes_in_total, counter, "Bytes read from client connections")     \
    X(HTTP_BYTES_OUT_TOTAL, http_bytes_out_total, counter, "Bytes written to client connections")  \
    X(WS_CONNECTIONS_OPEN, ws_connections_open, gauge, "Open WebSocket connections")               \
    X(WS_MESSAGES_IN_TOTAL, ws_messages_in_total, counter, "WebSocket messages received")          \
    X(WS_MESSAGES_OUT_TOTAL, ws_messages_out_total, counter, "WebSocket messages sent")            \
    X(WS_FRAMES_DROPPED_TOTAL, ws_frames_dropped_total, counter,                                   \
      "tick/odds messages dropped for slow WebSocket clients")                                     \
    X(WS_SLOW_CLOSED_TOTAL, ws_slow_closed_total, counter,                                         \
      "WebSocket clients closed for staying behind")                                               \
    X(TLS_HANDSHAKES_TOTAL, tls_handshakes_total, counter, "Completed TLS handshakes")             \
    X(TLS_HANDSHAKE_FAILURES_TOTAL, tls_handshake_failures_total, counter,                         \
      "Failed TLS handshakes")                                                                     \
    X(BETS_ACCEPTED_TOTAL, bets_accepted_total, counter, "Bets accepted")                          \
    X(BETS_REJECTED_TOTAL, bets_rejected_total, counter, "Bets rejected (any reason)")             \
    X(BETS_INFLIGHT, bets_inflight, gauge, "Bets admitted and not yet answered")                   \
    X(REDIS_COMMANDS_TOTAL, redis_commands_total, counter, "Redis commands sent")                  \
    X(REDIS_ERRORS_TOTAL, redis_errors_total, counter, "Redis commands that failed")               \
    X(REDIS_TIMEOUTS_TOTAL, redis_timeouts_total, counter, "Redis commands that timed out")        \
    X(REDIS_RECONNECTS_TOTAL, redis_reconnects_total, counter, "Redis reconnections")              \
    X(OUTBOX_LAG_ENTRIES, outbox_lag_entries, gauge, "Outbox entries not yet written to Postgres") \
    X(OUTBOX_LAG_SECONDS, outbox_lag_seconds, gauge,                                               \
      "Age in seconds of the oldest unwritten outbox entry")                                       \
    X(WORKER_RESTARTS_TOTAL, worker_restarts_total, counter,                                       \
      "Worker processes restarted by the master")                                                  \
    X(ROUNDS_SETTLED_TOTAL, rounds_settled_total, counter,                                         \
      "Rounds settled by this deployment's leader")                                                \
    X(ROUNDS_CANCELLED_TOTAL, rounds_cancelled_total, counter, "Rounds cancelled and refunded")    \
    X(IS_LEADER, is_leader, gauge, "1 in the process holding the game leader lease")

enum tp_metric {
#define TP_METRIC_ENUM_(id, name, type, help) TP_METRIC_##id,
    TP_METRICS_LIST(TP_METRIC_ENUM_)
#undef TP_METRIC_ENUM_
        TP_METRIC_COUNT_
};

/* Content-Type of tp_metrics_render output. */
#define TP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/**
 * Maps the shared region with `nslots` slots (workers + 1 for the master); call in the master
 * before fork. The caller is attached to slot 0. Returns 0, or TP_EINVAL / TP_ENOMEM.
 */
int tp_metrics_init(int nslots);

/** Selects the slot this process writes (0 <= slot < nslots; ignored before init). */
void tp_metrics_attach(int slot);

/** Zeroes one slot's gauges (the master calls it when that slot's worker died). */
void tp_metrics_reset_gauges(int slot);

/** Adds 1 to a counter in this process's slot. */
void tp_metrics_inc(enum tp_metric m);

/** Adds `v` (may be negative for gauges) in this process's slot. */
void tp_metrics_add(enum tp_metric m, int64_t v);

/** Sets this process's slot of a gauge to `v` (the rendered value is the sum over slots). */
void tp_metrics_set(enum tp_metric m, int64_t v);

/** Sum of the metric over every slot. */
int64_t tp_metrics_get_total(enum tp_metric m);

/** Appends every metric (summed over slots) in Prometheus text format 0.0.4 to `out`. */
void tp_metrics_render(struct tp_buf *out);

#endif
