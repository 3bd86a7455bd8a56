/*
 * Process-shared metrics, rendered in Prometheus text format (0.0.4) by /metrics.
 *
 * The master calls tp_metrics_init(workers + 1) BEFORE forking: it maps one anonymous shared
 * region with one cache-line-aligned slot per process. Each process then calls
 * tp_metrics_attach(its slot) and only ever writes its own slot (relaxed atomics, so threads of
 * one process may update it too); whichever worker answers /metrics sums every slot. Gauges are
 * per-slot values (e.g. that worker's open connections) summed on render.
 *
 * Two kinds of metric:
 *   - plain counters and gauges (TP_METRICS_LIST: one value, no label);
 *   - labelled families (TP_METRICS_FAMILIES: counters or histograms over at most two labels
 *     whose values are fixed below), so the number of series is known at compile time, every
 *     cell has its place in the slot and rendering allocates nothing but the output.
 * Histograms are cumulative on render (`_bucket{le}`, `_sum`, `_count`) over the bucket bounds
 * of TP_METRICS_BUCKETS; a slot stores per-bucket counts and the sum in nanoseconds.
 *
 * Before tp_metrics_init (unit tests, the CLI) every call works on a private, process-local slot.
 *
 * Adding a plain metric: one line in TP_METRICS_LIST (ID, name, counter|gauge, help). Adding a
 * family: one line in TP_METRICS_FAMILIES naming its label sets. Adding a label value (a route,
 * a Lua script, a bet error code): one line in its TP_METRICS_SET_* list.
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
    X(TLS_HANDSHAKES_DEFERRED_TOTAL, tls_handshakes_deferred_total, counter,                       \
      "TLS handshake steps that waited for a later loop iteration's budget")                       \
    X(BETS_ACCEPTED_TOTAL, bets_accepted_total, counter, "Bets accepted")                          \
    X(BETS_INFLIGHT, bets_inflight, gauge, "Bets admitted and not yet answered")                   \
    X(REDIS_COMMANDS_TOTAL, redis_commands_total, counter, "Redis commands sent")                  \
    X(REDIS_ERRORS_TOTAL, redis_errors_total, counter, "Redis commands that failed")               \
    X(REDIS_TIMEOUTS_TOTAL, redis_timeouts_total, counter, "Redis commands that timed out")        \
    X(REDIS_RECONNECTS_TOTAL, redis_reconnects_total, counter, "Redis reconnections")              \
    X(OUTBOX_LAG_ENTRIES, outbox_lag_entries, gauge, "Outbox entries not yet written to Postgres") \
    X(OUTBOX_LAG_SECONDS, outbox_lag_seconds, gauge,                                               \
      "Age in seconds of the oldest unwritten outbox entry")                                       \
    X(WRITER_EVENTS_REFUSED_TOTAL, writer_events_refused_total, counter,                           \
      "Outbox events the writer refused (malformed, or by Postgres for their data), logged at "    \
      "error and parked in <stream>:rejected")                                                     \
    X(WRITER_BATCHES_REDONE_TOTAL, writer_batches_redone_total, counter,                           \
      "Writer batches written again skipping bets or payouts Postgres already held (a replay)")    \
    X(WRITER_ENTRIES_PARKED, writer_entries_parked, gauge,                                         \
      "Outbox entries parked in <stream>:rejected, not yet replayed and deleted by an operator")   \
    X(WORKER_RESTARTS_TOTAL, worker_restarts_total, counter,                                       \
      "Worker processes restarted by the master")                                                  \
    X(ROUNDS_SETTLED_TOTAL, rounds_settled_total, counter,                                         \
      "Rounds settled by this deployment's leader")                                                \
    X(ROUNDS_CANCELLED_TOTAL, rounds_cancelled_total, counter, "Rounds cancelled and refunded")    \
    X(IS_LEADER, is_leader, gauge, "1 in the process holding the game leader lease")               \
    X(REDIS_USED_MEMORY_BYTES, redis_used_memory_bytes, gauge,                                     \
      "Redis used_memory, sampled by the leader every 10 s")                                       \
    X(ROUNDS_HOT, rounds_hot, gauge, "Rounds kept in Redis (not yet archived to Postgres)")        \
    X(ROUNDS_UNARCHIVABLE, rounds_unarchivable, gauge,                                             \
      "Rounds due for archival that archival's last sweep left in Redis: Postgres does not hold "  \
      "them whole and readable")

enum tp_metric {
#define TP_METRIC_ENUM_(id, name, type, help) TP_METRIC_##id,
    TP_METRICS_LIST(TP_METRIC_ENUM_)
#undef TP_METRIC_ENUM_
        TP_METRIC_COUNT_
};

/* --- Label values: X(ID, "value"); the position in the list is the label index --- */

/* For a family without (a second) label. */
#define TP_METRICS_SET_NONE(X) X(NONE, "")
#define TP_METRICS_SET_TRANSPORT(X) X(HTTP, "http") X(WS, "ws")
/* Every error code a bet can be answered with (docs/http-api.md, POST /api/v1/bets). */
#define TP_METRICS_SET_BET_CODE(X)                                                                 \
    X(INVALID_REQUEST, "invalid_request")                                                          \
    X(INVALID_STAKE, "invalid_stake")                                                              \
    X(INVALID_BAND, "invalid_band")                                                                \
    X(UNAUTHORIZED, "unauthorized")                                                                \
    X(SELF_EXCLUDED, "self_excluded")                                                              \
    X(ACCOUNT_DISABLED, "account_disabled")                                                        \
    X(INSUFFICIENT_FUNDS, "insufficient_funds")                                                    \
    X(ROUND_NOT_FOUND, "round_not_found")                                                          \
    X(ROUND_NOT_OPEN, "round_not_open")                                                            \
    X(IDEMPOTENCY_CONFLICT, "idempotency_conflict")                                                \
    X(POOL_FULL, "pool_full")                                                                      \
    X(GAME_PAUSED, "game_paused")                                                                  \
    X(KEY_REQUIRED, "idempotency_key_required")                                                    \
    X(OVERLOADED, "overloaded")                                                                    \
    X(UNAVAILABLE, "unavailable")
/* Redis round trips by what they run: a Lua script of scripts/lua/ by name, SCRIPT for a script
 * not listed here, COMMAND for a plain command (PUBLISH, HMGET, XACK, ...). A blocking read (the
 * Postgres writer's XREADGROUP BLOCK) waits by design, and so does what is queued behind it on
 * its connection: those are not timed. */
#define TP_METRICS_SET_REDIS_KIND(X)                                                               \
    X(ACCOUNT_FLAG, "account_flag")                                                                \
    X(BET_BATCH, "bet_batch")                                                                      \
    X(BUCKET_PLAN, "bucket_plan")                                                                  \
    X(BUCKET_STATE, "bucket_state")                                                                \
    X(GRANT, "grant")                                                                              \
    X(IDEM_UNINDEX, "idem_unindex")                                                                \
    X(LEASE, "lease")                                                                              \
    X(NET_FOLD, "net_fold")                                                                        \
    X(PASSWORD, "password")                                                                        \
    X(REVOKE, "revoke")                                                                            \
    X(ROUND_BOUNDARY, "round_boundary")                                                            \
    X(ROUND_CANCEL, "round_cancel")                                                                \
    X(ROUND_FINAL, "round_final")                                                                  \
    X(SETTLE_FINISH, "settle_finish")                                                              \
    X(SETTLE_PAGE, "settle_page")                                                                  \
    X(SIGNUP, "signup")                                                                            \
    X(TICK, "tick")                                                                                \
    X(WS_SOCKETS, "ws_sockets")                                                                    \
    X(SCRIPT, "script")                                                                            \
    X(COMMAND, "command")
/* HTTP routes: the router's patterns, "/ws" (upgrades), "static" (the static file server behind
 * the router), "other" (no route: 404, 405, unparsable requests, a pattern not listed here). */
#define TP_METRICS_SET_ROUTE(X)                                                                    \
    X(ACCOUNTS, "/api/v1/accounts")                                                                \
    X(SESSIONS, "/api/v1/sessions")                                                                \
    X(ME, "/api/v1/me")                                                                            \
    X(ME_BETS, "/api/v1/me/bets")                                                                  \
    X(ME_EXCLUSION, "/api/v1/me/exclusion")                                                        \
    X(ME_PASSWORD, "/api/v1/me/password")                                                          \
    X(SESSIONS_CURRENT, "/api/v1/sessions/current")                                                \
    X(BETS, "/api/v1/bets")                                                                        \
    X(ROUNDS_CURRENT, "/api/v1/rounds/current")                                                    \
    X(ROUND, "/api/v1/rounds/{id}")                                                                \
    X(ROUNDS, "/api/v1/rounds")                                                                    \
    X(PRICES, "/api/v1/prices")                                                                    \
    X(LEADERBOARD, "/api/v1/leaderboard")                                                          \
    X(HEALTHZ, "/healthz")                                                                         \
    X(READYZ, "/readyz")                                                                           \
    X(METRICS, "/metrics")                                                                         \
    X(WS, "/ws")                                                                                   \
    X(STATIC, "static")                                                                            \
    X(OTHER, "other")
#define TP_METRICS_SET_CLASS(X)                                                                    \
    X(1XX, "1xx") X(2XX, "2xx") X(3XX, "3xx") X(4XX, "4xx") X(5XX, "5xx")
/* Where a boundary's `round` message is, measured from the boundary time T: the leader's Redis
 * writes done, its PUBLISH answered, a worker's subscriber receiving it, the worker's sockets
 * written. */
#define TP_METRICS_SET_ROUND_STAGE(X)                                                              \
    X(WRITTEN, "written")                                                                          \
    X(PUBLISHED, "published") X(RECEIVED, "received") X(DELIVERED, "delivered")
/* What Postgres said of a bet whose idempotency key the filter of archived keys may hold: the
 * archived bet's replay, a conflict with it, no such bet (the filter's false positive: the bet
 * is admitted), or no answer (503). */
#define TP_METRICS_SET_IDEM_CHECK(X)                                                               \
    X(REPLAY, "replay")                                                                            \
    X(CONFLICT, "conflict") X(FALSE_POSITIVE, "false_positive") X(UNAVAILABLE, "unavailable")

/* Label indexes as enums: TP_METRICS_<SET>_<ID>, and TP_METRICS_<SET>_COUNT_ values. */
#define TP_METRICS_LABEL_ENUM_(set, SET)                                                           \
    enum tp_metrics_##set                                                                          \
    {                                                                                              \
        TP_METRICS_SET_##SET(TP_METRICS_LABEL_##SET##_) TP_METRICS_##SET##_COUNT_                  \
    }
#define TP_METRICS_LABEL_NONE_(id, v) TP_METRICS_NONE_##id,
#define TP_METRICS_LABEL_TRANSPORT_(id, v) TP_METRICS_TRANSPORT_##id,
#define TP_METRICS_LABEL_BET_CODE_(id, v) TP_METRICS_BET_CODE_##id,
#define TP_METRICS_LABEL_REDIS_KIND_(id, v) TP_METRICS_REDIS_KIND_##id,
#define TP_METRICS_LABEL_ROUTE_(id, v) TP_METRICS_ROUTE_##id,
#define TP_METRICS_LABEL_CLASS_(id, v) TP_METRICS_CLASS_##id,
#define TP_METRICS_LABEL_ROUND_STAGE_(id, v) TP_METRICS_ROUND_STAGE_##id,
#define TP_METRICS_LABEL_IDEM_CHECK_(id, v) TP_METRICS_IDEM_CHECK_##id,
TP_METRICS_LABEL_ENUM_(none, NONE);
TP_METRICS_LABEL_ENUM_(transport, TRANSPORT);
TP_METRICS_LABEL_ENUM_(bet_code, BET_CODE);
TP_METRICS_LABEL_ENUM_(redis_kind, REDIS_KIND);
TP_METRICS_LABEL_ENUM_(route, ROUTE);
TP_METRICS_LABEL_ENUM_(class, CLASS);
TP_METRICS_LABEL_ENUM_(round_stage, ROUND_STAGE);
TP_METRICS_LABEL_ENUM_(idem_check, IDEM_CHECK);

/* Histogram bucket upper bounds: X(microseconds, "le" as rendered), ascending; +Inf is implied.
 * 100 us (a loopback Redis round trip) to 5 s (beyond any command timeout). */
#define TP_METRICS_BUCKETS(X)                                                                      \
    X(100, "0.0001")                                                                               \
    X(250, "0.00025")                                                                              \
    X(500, "0.0005")                                                                               \
    X(1000, "0.001")                                                                               \
    X(2500, "0.0025")                                                                              \
    X(5000, "0.005")                                                                               \
    X(10000, "0.01")                                                                               \
    X(25000, "0.025")                                                                              \
    X(50000, "0.05")                                                                               \
    X(100000, "0.1")                                                                               \
    X(250000, "0.25")                                                                              \
    X(500000, "0.5")                                                                               \
    X(1000000, "1")                                                                                \
    X(2500000, "2.5")                                                                              \
    X(5000000, "5")

/*
 * Labelled families: X(ID, name, counter|histogram, help, label1, SET1, label2, SET2), exposed
 * as "tickpool_" name with one series per combination of the sets' values (an empty label and
 * set NONE when unused). ID gives TP_METRIC_FAMILY_<ID>.
 */
#define TP_METRICS_FAMILIES(X)                                                                     \
    X(BETS_REJECTED, bets_rejected_total, counter, "Bets rejected, by error code", code, BET_CODE, \
      , NONE)                                                                                      \
    X(HTTP_RESPONSES, http_responses_total, counter,                                               \
      "HTTP responses by route pattern and status class", route, ROUTE, class, CLASS)              \
    X(BET_LATENCY, bet_latency_seconds, histogram,                                                 \
      "Bet requests from admission to answer, by transport", transport, TRANSPORT, , NONE)         \
    X(REDIS_COMMAND, redis_command_seconds, histogram,                                             \
      "Redis commands from send to reply (or failure), by script or command", kind, REDIS_KIND, ,  \
      NONE)                                                                                        \
    X(BETS_IDEM_CHECKS, bets_idem_checks_total, counter,                                           \
      "Bets whose idempotency key was looked up in Postgres (the filter of archived keys may "     \
      "hold it), by outcome",                                                                      \
      outcome, IDEM_CHECK, , NONE)                                                                 \
    X(BEAT_LAG, beat_lag_seconds, histogram,                                                       \
      "Delay from a tick's leader timestamp to its frame being written to the sockets", , NONE, ,  \
      NONE)                                                                                        \
    X(ROUND_DELAY, round_announce_delay_seconds, histogram,                                        \
      "Delay from a round boundary to each stage of its round message", stage, ROUND_STAGE, ,      \
      NONE)

enum tp_metric_family {
#define TP_METRIC_FAMILY_ENUM_(id, name, type, help, l1, s1, l2, s2) TP_METRIC_FAMILY_##id,
    TP_METRICS_FAMILIES(TP_METRIC_FAMILY_ENUM_)
#undef TP_METRIC_FAMILY_ENUM_
        TP_METRIC_FAMILY_COUNT_
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

/** Adds 1 to cell (i, j) of counter family `f` (i: index in its first label's set, j: in its
 * second's, 0 when it has none). Out-of-range indexes are ignored. */
void tp_metrics_family_inc(enum tp_metric_family f, int i, int j);

/** Records one observation of `ns` nanoseconds (negative counts as 0) in histogram family `f`,
 * series i of its first label (0 when it has none). Out-of-range indexes are ignored. */
void tp_metrics_observe_ns(enum tp_metric_family f, int i, int64_t ns);

/** The index of `value` in label `dim` (0 or 1) of family `f`, or -1 when it is not one of
 * the set's values (callers map that to their set's catch-all, if any). */
int tp_metrics_label_index(enum tp_metric_family f, int dim, const char *value);

/** Sum over every slot of a counter cell, or of a histogram series' observation count. */
int64_t tp_metrics_family_get(enum tp_metric_family f, int i, int j);

/** Appends every metric (summed over slots) and tickpool_build_info{version,commit} in
 * Prometheus text format 0.0.4 to `out`. */
void tp_metrics_render(struct tp_buf *out);

#endif
