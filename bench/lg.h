/*
 * loadgen internals shared by its files (bench only, not part of tickpool).
 *
 *   loadgen.c    options, main, the open/closed-loop schedule and run phases
 *   lg_conn.c    connections: request encoders, socket I/O, per-mode answer readers
 *   lg_viewers.c viewers mode: broadcast decoding once per payload, tick lag, fan-out spread
 *   lg_setup.c   blocking set-up before the run: users, tokens, open round, SCRIPT LOAD
 *   lg_report.c  result counters, --cpu-pid sampling, the human summary and the JSON line
 *   lg_hist.c    latency histogram;  lg_proto.c  HTTP/WebSocket/RESP wire formats
 *
 * One thread: every global below is touched only from main() and libev callbacks.
 */
#ifndef TP_BENCH_LG_H
#define TP_BENCH_LG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

#include <ev.h>

#include "tickpool/base/buf.h"
#include "tickpool/net/io.h"

#include "lg_hist.h"

/* --- Options --- */

enum lg_mode { LG_M_HTTP_BET, LG_M_WS_BET, LG_M_REDIS_BET, LG_M_VIEWERS, LG_M_USERS };
extern const char *const lg_mode_names[];

struct lg_user {
    int64_t id;
    char *token;
};

struct lg_cpu_watch {
    char name[32];
    int npids;
    int pids[64];
    uint64_t t0, t1; /* Σ utime+stime (clock ticks) at measure start / end */
    /* Σ resident set (KiB) before the first connect, at measure start and at its end: the
     * growth to measure start ÷ sockets is the memory each open, idle socket costs. */
    uint64_t rss_before, rss0, rss1;
};

struct lg_opt {
    enum lg_mode mode;
    const char *host;
    int port;
    const char *redis_host;
    int redis_port;
    int conns;
    double rate; /* requests/s over all connections; 0 = closed loop */
    double duration, warmup, drain;
    /* --measure-at: wall-clock ms at which measuring starts (the warm-up ends then, whenever
     * the load starts); 0 = --warmup seconds after the load starts */
    int64_t measure_at_ms;
    int pipeline;
    int users_create;
    const char *tokens_file;
    int64_t round_id;
    int64_t follow_ms; /* --follow-rounds: phase length (ms); 0 = bet on round_id only */
    int64_t follow_t0; /* opens_at of round_id (ms), with follow_ms */
    int bands, buckets;
    int64_t stake, min_stake, max_stake;
    const char *script;
    double connect_rate;
    const char *json_file;
    const char *latencies_file; /* --latencies: each measured answer's due time and latency */
    const char *label;
    bool quiet;
    bool tls; /* --tls: every connection is TLS (https/wss) */
    int ncpu_watch;
    struct lg_cpu_watch cpu_watch[8];
};
extern struct lg_opt lg_opt; /* loadgen.c, frozen once the run starts */

/* --- Result counters (lg_report.c) --- */

#define LG_MAX_ERR_KINDS 64
struct lg_errs {
    int n;
    char name[LG_MAX_ERR_KINDS][64];
    uint64_t count[LG_MAX_ERR_KINDS];
};

#define LG_BOUNDS_MAX 256
/* Seconds of the measured window whose own p99 is kept for the JSON (bets). */
#define LG_SECS_MAX 3600

struct lg_res {
    struct lg_hist lat;          /* request latency or tick lag, µs */
    struct lg_errs errs;         /* "status code" → count, measured window only */
    uint64_t ok, sent, answered; /* measured window */
    uint64_t total_ok, total_err, overflow, conn_fail, conn_closed;
    uint64_t msgs[5];    /* viewers: tick (beat), odds, round, hello/snapshot, other */
    uint64_t beats_odds; /* viewers: beats (ticks) that carried the open round's odds */
    struct lg_hist spread_tick, spread_odds; /* viewers: arrival - first arrival, µs */
    /* viewers: the same measured when loadgen reads each message instead of when it reached the
     * socket: the instrument's own delay included (bench/README.md "Viewers", session 14). */
    struct lg_hist lat_read, spread_tick_read;
    /* viewers: beats that came in one read with another beat (TCP had merged them while they
     * waited): their arrival time is the later one's, so the arrival figures are late for them */
    uint64_t beats_merged;
    uint64_t lag_min;         /* viewers: smallest tick lag, µs */
    uint64_t beat_bytes;      /* viewers: Σ payload bytes of the beats counted */
    struct lg_hist round_lag; /* viewers: `round` message arrival - its boundary T, µs */
    /* viewers: the same at loadgen's read (the boundaries scenario's figure before session 15) */
    struct lg_hist round_lag_read;
    /* viewers: `round` receipts read together with something written after their boundary's
     * pair and beat: their arrival time is that later write's, so late for them */
    uint64_t rounds_merged;
    uint64_t round_boundaries; /* viewers: distinct boundaries T announced in the window */
    int64_t round_last_t;      /* viewers: the newest of them (ms) */
    /* viewers: per boundary T (the first LG_BOUNDS_MAX in the window), its receipts' count and
     * their latest lag (at arrival; at loadgen's read), so the report can tell which boundaries
     * make the p99 and line them up with the server's stages for the same T. */
    struct lg_bound {
        int64_t t_ms;
        uint64_t n, max_us, read_max_us;
    } bounds[LG_BOUNDS_MAX];
    int nbounds;
    uint64_t sec_ok, sec_err, sec_msgs;
    /* bets: the latency of the answers of the current second (every phase), and the p99 of
     * each second of the measured window, so a stall (a Redis fork, a rewrite) shows as the
     * seconds it spoiled rather than only in the window's p99. */
    struct lg_hist sec_lat;
    uint64_t sec_p99[LG_SECS_MAX];
    int nsecs;
    struct rusage ru0, ru1;
    uint64_t t_measure0, t_measure1;
    FILE *latencies;      /* --latencies, open during the run (NULL: not asked for) */
    int64_t wall_mono_us; /* CLOCK_REALTIME - CLOCK_MONOTONIC when it was opened, µs */
};
extern struct lg_res lg_res;

/** Counts one error named `name` (the 64th and later distinct names count as "other"). */
void lg_err_count(const char *name);

/** Σ utime+stime (clock ticks) of the watch's processes; a vanished pid counts 0. */
uint64_t lg_cpu_watch_ticks(const struct lg_cpu_watch *cw);

/** Σ resident set size (KiB) of the watch's processes from /proc/<pid>/statm. */
uint64_t lg_cpu_watch_rss_kb(const struct lg_cpu_watch *cw);

/** Adds the --cpu-pid NAME=PID[,PID...] watch `arg` to lg_opt; false when malformed or full. */
bool lg_cpu_watch_parse(const char *arg);

/** Prints the human summary on stderr and the JSON line on stdout (and to --json FILE). */
void lg_report(void);

/* --- Connections (lg_conn.c) --- */

#define LG_RING 65536 /* per-connection in-flight + backlog capacity (power of two) */

enum lg_cstate { LG_C_CONNECTING, LG_C_TLS, LG_C_HANDSHAKE, LG_C_OPEN, LG_C_DEAD };

struct lg_conn {
    int idx, fd;
    enum lg_cstate st;
    struct tp_io io; /* plain or TLS (--tls) over fd */
    ev_io rio, wio;
    struct tp_buf in, out, frag;
    int frag_op;
    char ws_accept[32];
    const struct lg_user *user; /* ws-bet: the socket's player */
    uint64_t *sched;            /* LG_RING due times (mono ns) indexed by seq & (LG_RING-1) */
    uint8_t *done;              /* ws-bet: answered flags */
    uint64_t head, sent, tail;  /* oldest unanswered seq, next to write, next to assign */
    bool dirty;
    char key_prefix[48]; /* "lg<run>-<idx>-", the fixed part of its idempotency keys */
    size_t key_prefix_len;
};

struct tp_tls_ctx;
/** The client TLS context of --tls (tp_tls_client_ctx_new), NULL for plain connections. */
extern struct tp_tls_ctx *lg_tls_ctx;

/** Seeds the generator of WebSocket keys and masks with the run id. */
void lg_rng_seed(uint64_t run_id);

/** Starts a non-blocking connect of c to host:port; -1 when it failed at once. */
int lg_conn_start(struct lg_conn *c, const char *host, int port);

/** Assigns one request due at `due` (mono ns) to c: written now or when the window allows. */
void lg_enqueue(struct lg_conn *c, uint64_t due);

/** Writes out every connection that has new output since the last flush. */
void lg_flush_dirty(void);

/** Requests assigned but not yet answered, over all connections. */
uint64_t lg_inflight_total(void);

/* --- Viewers (lg_viewers.c) --- */

/** The kernel's receive time (CLOCK_REALTIME, ns) of the bytes being parsed: when they reached
 * the viewer's socket (SO_TIMESTAMPNS, plain sockets); 0 when unknown (TLS), and the time of
 * the read stands in. Set by the read path before it parses. */
extern uint64_t lg_viewer_rx_ns;
/** A read's messages are parsed between these two: beats two or more in one read are counted
 * as merged (lg_res.beats_merged), and so are `round` receipts followed in their read by a later
 * write (lg_res.rounds_merged). */
void lg_viewer_read_begin(void);
void lg_viewer_read_end(void);

/** Accounts one complete viewer WebSocket message (MessagePack) received now. */
void lg_viewer_message(const char *p, size_t n);

/** Records the fan-out spread of every receipt still held (each message's receipts are kept
 * until its earliest arrival is known); before the report. */
void lg_viewers_flush(void);

/* --- Set-up (lg_setup.c); each exits the process on failure --- */

/** Creates --users accounts over HTTP into lg_users (and writes them to --tokens FILE). */
void lg_create_users(void);

/** Reads 'user_id token' lines of --tokens FILE into lg_users. */
void lg_read_tokens(void);

/** Fills lg_opt.round_id and lg_opt.bands, when not given, from the open round, and with
 * --follow-rounds the opens_at of round_id (which must then be the open round). */
void lg_find_round(void);

/** SCRIPT LOADs --script into Redis and keeps its SHA-1 in lg_redis_sha. */
void lg_load_script(void);

/* --- Run state (loadgen.c) --- */

extern struct ev_loop *lg_loop;
extern struct lg_conn *lg_conns; /* lg_opt.conns of them */
extern struct lg_user *lg_users;
extern int lg_nusers;
extern uint64_t lg_run_id;
extern uint64_t lg_t0, lg_t_meas, lg_t_end; /* mono ns: load start, measuring start, sched end */
extern bool lg_stopping;
extern int lg_opened; /* connections open (WebSocket: upgraded) */
extern char lg_redis_sha[41];

/** Ends the run once stopping and nothing is in flight (bet modes). */
void lg_maybe_finish(void);

static inline uint64_t lg_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t lg_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* True when a request due at `due` falls in the measured window. */
static inline bool lg_measured(uint64_t due)
{
    return due >= lg_t_meas && due < lg_t_end;
}

#endif
