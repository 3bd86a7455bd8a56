/*
 * loadgen: tickpool's bundled load generator (libev, one thread).
 *
 * Open loop: request k of the run is due at t0 + k / rate, whatever happened to the earlier
 * ones, and its latency is measured from that DUE time, not from when it was written. A server
 * that stalls for a second therefore shows a second of latency on every request that fell due
 * during the stall (no coordinated omission, as wrk2 does it). Requests are dealt round-robin
 * over the connections; HTTP requests are pipelined (the server answers in order), WebSocket
 * bets are matched by their `req` number, so a connection never waits for an answer before
 * sending the next request (up to --pipeline outstanding; beyond, requests wait in a local
 * backlog and their waiting counts as latency).
 *
 * Modes: http-bet, ws-bet, redis-bet (EVALSHA bet.lua straight to Redis: the ceiling), and
 * Modes: http-bet, ws-bet, redis-bet (EVALSHA bet.lua straight to Redis: the ceiling), and
 * viewers (N anonymous WebSockets counting tick/odds messages and tick delivery lag).
 *
 * Only libev's header from outside the project: MessagePack goes through the project's codec,
 * SHA-1/SHA-256/base64 through crypto.h; the WebSocket client framer, the HTTP response reader
 * and the RESP reader (lg_proto.c) are a few dozen lines each because a client for exactly these
 * messages needs no general library (the server's framer and llhttp are server-side only).
 *
 * This file: options, main, the schedule and the run phases. lg.h lists the other files.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <ev.h>

#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"
#include "tickpool/net/tls.h"

#include "lg.h"

/* --- Options --- */

const char *const lg_mode_names[] = {"http-bet", "ws-bet", "redis-bet", "viewers", "users"};

struct lg_opt lg_opt = {
    .host = "127.0.0.1",
    .port = 8080,
    .redis_host = "127.0.0.1",
    .redis_port = 6379,
    .conns = 16,
    .rate = 1000,
    .duration = 10,
    .warmup = 2,
    .drain = 5,
    .pipeline = 256,
    .round_id = -1,
    .bands = 0,
    .buckets = 1,
    .stake = 100,
    .min_stake = 100,
    .max_stake = 100000,
    .script = "bench/lua/bet.lua",
    .connect_rate = 2000,
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loadgen MODE [options]\n"
               "\n"
               "Open-loop load generator for tickpool. Latency is measured from each request's\n"
               "SCHEDULED send time (no coordinated omission). Human summary on stderr, one JSON\n"
               "line on stdout (and in --json FILE).\n"
               "\n"
               "Modes:\n"
               "  http-bet    POST /api/v1/bets, a unique Idempotency-Key per request, users\n"
               "              round-robin, HTTP/1.1 keep-alive with pipelining\n"
               "  ws-bet      {t:bet} messages over /ws?token=..., answers matched by req\n"
               "  redis-bet   EVALSHA bet.lua sent straight to Redis (the ceiling for the same\n"
               "              script; pipelined, needs the users' ids and an open round)\n"
               "  viewers     N anonymous /ws sockets; counts tick/odds/round messages, the\n"
               "              tick delivery lag = local receive time - tick ts (same host clock)\n"
               "              and the fan-out spread = receive time - first receipt of the same\n"
               "              message on any socket (ticks and odds)\n"
               "  users       only create --users K accounts and write them to --tokens FILE\n"
               "\n"
               "Target:\n"
               "  -H, --host ADDR         tickpool address [127.0.0.1]\n"
               "  -p, --port N            tickpool HTTP port [8080]\n"
               "      --redis-host ADDR   Redis address for redis-bet [127.0.0.1]\n"
               "      --redis-port N      Redis port for redis-bet [6379]\n"
               "      --tls               TLS to the server (https/wss; -p is then tickpool's\n"
               "                          https_port). The certificate is not verified:\n"
               "                          loopback benchmarks only\n"
               "Load:\n"
               "  -c, --conns N           connections (viewers: sockets) [16]\n"
               "  -r, --rate R            requests per second over all connections; 0 = closed\n"
               "                          loop, each connection keeps --pipeline requests in\n"
               "                          flight (maximum throughput) [1000]\n"
               "  -d, --duration S        measured seconds [10]\n"
               "  -w, --warmup S          seconds before measuring (not recorded) [2]\n"
               "      --measure-at MS     measure from this wall-clock time (ms since the\n"
               "                          epoch) instead: the warm-up lasts until then, however\n"
               "                          long connecting took (0 at once if it is past)\n"
               "      --drain S           seconds to wait for answers after the end; requests\n"
               "                          still unanswered then count as 'timeout' [5]\n"
               "      --pipeline N        most requests in flight per connection [256]\n"
               "      --connect-rate N    new connections per second while opening [2000]\n"
               "Bets:\n"
               "  -u, --users K           create K users via POST /api/v1/accounts first\n"
               "  -t, --tokens FILE       'user_id token' lines: read them, or write them when\n"
               "                          --users is given\n"
               "      --round ID          round to bet on [the open round from\n"
               "                          GET /api/v1/rounds/current]\n"
               "      --follow-rounds MS  rounds open every MS ms: a bet goes to the round open\n"
               "                          when it is sent (--round's or the open one, plus the\n"
               "                          boundaries since) [off]\n"
               "      --bands N           bands are 0..N-1, bets cycle over them [from the round]\n"
               "      --stake N           stake per bet in minor units [100]\n"
               "      --min-stake N, --max-stake N   bounds passed to bet.lua (redis-bet)\n"
               "      --buckets B         game.buckets of the server (redis-bet) [1]\n"
               "      --script FILE       bet.lua for redis-bet [bench/lua/bet.lua]\n"
               "Output:\n"
               "      --json FILE         also append the JSON line to FILE\n"
               "      --latencies FILE    write each measured answer (bets) as a line\n"
               "                          'due_wall_ms latency_us' to FILE: where in the\n"
               "                          window the slow ones were due\n"
               "      --label TEXT        label copied into the JSON line\n"
               "      --cpu-pid NAME=PID[,PID...]  report the CPU (utime+stime from /proc) these\n"
               "                          processes used during the measured window only, as\n"
               "                          cpu_window_us.NAME (repeatable, at most 8), and\n"
               "                          their resident memory before the first connect and\n"
               "                          at the window's start and end as rss_kb.NAME\n"
               "  -q, --quiet             no per-second progress\n"
               "  -h, --help              this text\n");
}

/* --- Run state --- */

struct ev_loop *lg_loop;
struct lg_conn *lg_conns;
struct lg_user *lg_users;
int lg_nusers;
uint64_t lg_run_id;
uint64_t lg_t0, lg_t_meas, lg_t_end;
bool lg_stopping;
int lg_opened;
char lg_redis_sha[41];

static uint64_t next_k;  /* next request of the global schedule */
static int window_phase; /* 0 before the measured window, 1 in it, 2 after */
static ev_timer sched_timer, tick_timer, connect_timer, window_timer;
static ev_signal stop_signal;

/* --- Schedule and run phases --- */

static double sec(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void window_sample(void);

static void finish(void)
{
    while (window_phase < 2)
        window_sample();
    if (lg_res.t_measure1 == 0) {
        getrusage(RUSAGE_SELF, &lg_res.ru1);
        lg_res.t_measure1 = lg_mono_ns();
    }
    ev_break(lg_loop, EVBREAK_ALL);
}

void lg_maybe_finish(void)
{
    if (lg_stopping && lg_opt.mode != LG_M_VIEWERS && lg_inflight_total() == 0)
        finish();
}

static void on_sched(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    uint64_t now = lg_mono_ns();
    if (lg_opt.rate > 0) {
        double iv = 1e9 / lg_opt.rate;
        for (;;) {
            uint64_t due = lg_t0 + (uint64_t)(iv * (double)next_k);
            if (due >= lg_t_end || due > now)
                break;
            lg_enqueue(&lg_conns[next_k % (uint64_t)lg_opt.conns], due);
            next_k++;
        }
        lg_flush_dirty();
        uint64_t due = lg_t0 + (uint64_t)(iv * (double)next_k);
        if (due < lg_t_end) {
            /* One-shot timer re-armed for the next due request: sends are never late by more
             * than the loop's wake-up jitter, and bursts are sent in one batch. */
            ev_timer_set(w, sec(due > now ? due - now : 0), 0.);
            ev_timer_start(l, w);
        }
    }
}

static void on_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    uint64_t now = lg_mono_ns();
    if (!lg_opt.quiet) {
        const char *phase = now < lg_t_meas ? "warmup" : now < lg_t_end ? "measure" : "drain";
        if (lg_opt.mode == LG_M_VIEWERS)
            fprintf(stderr, "[loadgen] %5.1fs %-7s open=%d msgs/s=%" PRIu64 " closed=%" PRIu64 "\n",
                    sec(now - lg_t0), phase, lg_opened, lg_res.sec_msgs, lg_res.conn_closed);
        else
            fprintf(stderr,
                    "[loadgen] %5.1fs %-7s ok/s=%" PRIu64 " err/s=%" PRIu64 " inflight=%" PRIu64
                    " open=%d p99=%.1fms max=%.1fms\n",
                    sec(now - lg_t0), phase, lg_res.sec_ok, lg_res.sec_err, lg_inflight_total(),
                    lg_opened, lg_hist_pct(&lg_res.sec_lat, 99) / 1e3, lg_res.sec_lat.max / 1e3);
    }
    /* The second just ended lies in the measured window (ticks come every second from t0). */
    if (lg_opt.mode != LG_M_VIEWERS && now > lg_t_meas + 500000000ull &&
        now < lg_t_end + 500000000ull && lg_res.nsecs < LG_SECS_MAX)
        lg_res.sec_p99[lg_res.nsecs++] = lg_hist_pct(&lg_res.sec_lat, 99);
    memset(&lg_res.sec_lat, 0, sizeof(lg_res.sec_lat));
    lg_res.sec_ok = lg_res.sec_err = lg_res.sec_msgs = 0;
    if (lg_res.t_measure0 == 0 && now >= lg_t_meas) {
        getrusage(RUSAGE_SELF, &lg_res.ru0);
        lg_res.t_measure0 = now;
    }
    if (now >= lg_t_end && !lg_stopping) {
        lg_stopping = true;
        lg_maybe_finish();
    }
    if (lg_stopping &&
        (lg_opt.mode == LG_M_VIEWERS || now >= lg_t_end + (uint64_t)(lg_opt.drain * 1e9))) {
        if (lg_opt.mode != LG_M_VIEWERS) {
            for (int i = 0; i < lg_opt.conns; i++) {
                struct lg_conn *c = &lg_conns[i];
                for (uint64_t s = c->head; s < c->tail; s++)
                    if ((c->done == NULL || !c->done[s & (LG_RING - 1)]) &&
                        lg_measured(c->sched[s & (LG_RING - 1)]))
                        lg_err_count("timeout");
            }
        }
        finish();
    }
}

/* SIGTERM ends the measured window now: bench/run stops its background bet driver this way once
 * the run the driver serves is over, so the driver bets through that run however long its
 * connect phase takes. Requests not yet due are not sent, those in flight are drained as at
 * the planned end, and the report covers the window up to here (duration_s says how long). */
static void on_stop(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)w, (void)revents;
    uint64_t now = lg_mono_ns();
    if (lg_t0 == 0) { /* still connecting: nothing was measured */
        ev_break(l, EVBREAK_ALL);
        return;
    }
    if (now >= lg_t_end)
        return;
    lg_t_end = now > lg_t_meas ? now : lg_t_meas;
    lg_opt.duration = TP_MAX(sec(lg_t_end - lg_t_meas), 0.001);
    if (!lg_opt.quiet)
        fprintf(stderr, "[loadgen] stopped by SIGTERM after %.1fs measured\n", lg_opt.duration);
}

/* Opens connections at --connect-rate, then starts the clock. */
static int next_conn;
static void start_load(void);
static void on_connect_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    int batch = (int)TP_MAX(1.0, lg_opt.connect_rate / 100.0);
    const char *h = lg_opt.mode == LG_M_REDIS_BET ? lg_opt.redis_host : lg_opt.host;
    int p = lg_opt.mode == LG_M_REDIS_BET ? lg_opt.redis_port : lg_opt.port;
    for (int i = 0; i < batch && next_conn < lg_opt.conns; i++, next_conn++)
        lg_conn_start(&lg_conns[next_conn], h, p);
    if (next_conn >= lg_opt.conns) {
        /* Wait (at most 30 s) until every socket is open or failed. */
        static int waited;
        int dead = 0;
        for (int i = 0; i < lg_opt.conns; i++)
            dead += lg_conns[i].st == LG_C_DEAD;
        if (lg_opened + dead >= lg_opt.conns || ++waited > 3000) {
            ev_timer_stop(l, w);
            if (!lg_opt.quiet)
                fprintf(stderr, "[loadgen] %d/%d connections open\n", lg_opened, lg_opt.conns);
            start_load();
        }
    }
}
/* Samples the watched processes (and, for viewers, loadgen's own rusage, so connect and
 * warm-up are excluded) when the measured window starts or ends. */
static void window_sample(void)
{
    if (window_phase >= 2)
        return;
    uint64_t now = lg_mono_ns();
    for (int i = 0; i < lg_opt.ncpu_watch; i++) {
        struct lg_cpu_watch *cw = &lg_opt.cpu_watch[i];
        if (window_phase == 0) {
            cw->t0 = lg_cpu_watch_ticks(cw);
            cw->rss0 = lg_cpu_watch_rss_kb(cw);
        } else {
            cw->t1 = lg_cpu_watch_ticks(cw);
            cw->rss1 = lg_cpu_watch_rss_kb(cw);
        }
    }
    if (window_phase == 0 && lg_res.t_measure0 == 0) {
        getrusage(RUSAGE_SELF, &lg_res.ru0);
        lg_res.t_measure0 = now;
    } else if (window_phase == 1 && lg_opt.mode == LG_M_VIEWERS) {
        getrusage(RUSAGE_SELF, &lg_res.ru1);
        lg_res.t_measure1 = now;
    }
    window_phase++;
}

static void on_window(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    window_sample();
    if (window_phase == 1) {
        uint64_t now = lg_mono_ns();
        ev_timer_set(w, sec(lg_t_end > now ? lg_t_end - now : 0), 0.);
        ev_timer_start(l, w);
    }
}

static void start_load(void)
{
    lg_t0 = lg_mono_ns();
    /* A window meant to start at a given moment (settle-100k's close): the warm-up worked out
     * here, after the connections are open, not before loadgen started (~50 ms earlier). */
    if (lg_opt.measure_at_ms > 0)
        lg_opt.warmup =
            TP_MAX((double)(lg_opt.measure_at_ms - (int64_t)(lg_wall_us() / 1000)) / 1e3, 0.);
    lg_t_meas = lg_t0 + (uint64_t)(lg_opt.warmup * 1e9);
    lg_t_end = lg_t_meas + (uint64_t)(lg_opt.duration * 1e9);
    if (lg_opt.mode != LG_M_VIEWERS) {
        if (lg_opt.rate > 0) {
            ev_timer_init(&sched_timer, on_sched, 0., 0.);
            ev_timer_start(lg_loop, &sched_timer);
        } else {
            for (int i = 0; i < lg_opt.conns; i++)
                for (int j = 0; j < lg_opt.pipeline; j++)
                    lg_enqueue(&lg_conns[i], lg_t0);
            lg_flush_dirty();
        }
    }
    ev_timer_init(&window_timer, on_window, lg_opt.warmup, 0.);
    ev_timer_start(lg_loop, &window_timer);
    ev_timer_init(&tick_timer, on_tick, 1.0, 1.0);
    ev_timer_start(lg_loop, &tick_timer);
    if (lg_opt.warmup <= 0) {
        getrusage(RUSAGE_SELF, &lg_res.ru0);
        lg_res.t_measure0 = lg_t0;
    }
}

/* --- main --- */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    enum {
        O_REDIS_HOST = 256,
        O_REDIS_PORT,
        O_DRAIN,
        O_PIPELINE,
        O_CONNECT_RATE,
        O_ROUND,
        O_FOLLOW,
        O_BANDS,
        O_STAKE,
        O_MIN_STAKE,
        O_MAX_STAKE,
        O_BUCKETS,
        O_SCRIPT,
        O_JSON,
        O_LATENCIES,
        O_MEASURE_AT,
        O_LABEL,
        O_CPU_PID,
        O_TLS
    };
    static const struct option lo[] = {
        {"host", 1, 0, 'H'},
        {"port", 1, 0, 'p'},
        {"redis-host", 1, 0, O_REDIS_HOST},
        {"redis-port", 1, 0, O_REDIS_PORT},
        {"conns", 1, 0, 'c'},
        {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},
        {"drain", 1, 0, O_DRAIN},
        {"pipeline", 1, 0, O_PIPELINE},
        {"connect-rate", 1, 0, O_CONNECT_RATE},
        {"users", 1, 0, 'u'},
        {"tokens", 1, 0, 't'},
        {"round", 1, 0, O_ROUND},
        {"follow-rounds", 1, 0, O_FOLLOW},
        {"bands", 1, 0, O_BANDS},
        {"stake", 1, 0, O_STAKE},
        {"min-stake", 1, 0, O_MIN_STAKE},
        {"max-stake", 1, 0, O_MAX_STAKE},
        {"buckets", 1, 0, O_BUCKETS},
        {"script", 1, 0, O_SCRIPT},
        {"json", 1, 0, O_JSON},
        {"latencies", 1, 0, O_LATENCIES},
        {"measure-at", 1, 0, O_MEASURE_AT},
        {"label", 1, 0, O_LABEL},
        {"cpu-pid", 1, 0, O_CPU_PID},
        {"tls", 0, 0, O_TLS},
        {"quiet", 0, 0, 'q'},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:c:r:d:w:u:t:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'H':
            lg_opt.host = optarg;
            break;
        case 'p':
            lg_opt.port = atoi(optarg);
            break;
        case O_REDIS_HOST:
            lg_opt.redis_host = optarg;
            break;
        case O_REDIS_PORT:
            lg_opt.redis_port = atoi(optarg);
            break;
        case 'c':
            lg_opt.conns = atoi(optarg);
            break;
        case 'r':
            lg_opt.rate = atof(optarg);
            break;
        case 'd':
            lg_opt.duration = atof(optarg);
            break;
        case 'w':
            lg_opt.warmup = atof(optarg);
            break;
        case O_DRAIN:
            lg_opt.drain = atof(optarg);
            break;
        case O_PIPELINE:
            lg_opt.pipeline = atoi(optarg);
            break;
        case O_CONNECT_RATE:
            lg_opt.connect_rate = atof(optarg);
            break;
        case 'u':
            lg_opt.users_create = atoi(optarg);
            break;
        case 't':
            lg_opt.tokens_file = optarg;
            break;
        case O_ROUND:
            lg_opt.round_id = atoll(optarg);
            break;
        case O_FOLLOW:
            lg_opt.follow_ms = atoll(optarg);
            break;
        case O_BANDS:
            lg_opt.bands = atoi(optarg);
            break;
        case O_STAKE:
            lg_opt.stake = atoll(optarg);
            break;
        case O_MIN_STAKE:
            lg_opt.min_stake = atoll(optarg);
            break;
        case O_MAX_STAKE:
            lg_opt.max_stake = atoll(optarg);
            break;
        case O_BUCKETS:
            lg_opt.buckets = atoi(optarg);
            break;
        case O_SCRIPT:
            lg_opt.script = optarg;
            break;
        case O_JSON:
            lg_opt.json_file = optarg;
            break;
        case O_LATENCIES:
            lg_opt.latencies_file = optarg;
            break;
        case O_MEASURE_AT:
            lg_opt.measure_at_ms = atoll(optarg);
            break;
        case O_LABEL:
            lg_opt.label = optarg;
            break;
        case O_CPU_PID:
            if (!lg_cpu_watch_parse(optarg)) {
                fprintf(stderr, "loadgen: bad --cpu-pid %s (NAME=PID[,PID...], at most 8)\n",
                        optarg);
                return 2;
            }
            break;
        case O_TLS:
            lg_opt.tls = true;
            break;
        case 'q':
            lg_opt.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    int m = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(argv[optind], lg_mode_names[i]) == 0)
            m = i;
    if (m < 0 || lg_opt.conns < 1 || lg_opt.duration <= 0 || lg_opt.warmup < 0 ||
        lg_opt.measure_at_ms < 0 || lg_opt.pipeline < 1 || lg_opt.pipeline > LG_RING ||
        lg_opt.rate < 0 || lg_opt.buckets < 1 || lg_opt.connect_rate <= 0) {
        fprintf(stderr, "loadgen: bad mode or option value (see --help)\n");
        return 2;
    }
    lg_opt.mode = (enum lg_mode)m;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    uint8_t rb[8];
    tp_random_bytes(rb, sizeof(rb));
    memcpy(&lg_run_id, rb, sizeof(lg_run_id));
    lg_rng_seed(lg_run_id);

    if (lg_opt.mode != LG_M_VIEWERS) {
        if (lg_opt.users_create > 0)
            lg_create_users();
        else if (lg_opt.tokens_file != NULL)
            lg_read_tokens();
        if (lg_nusers == 0) {
            fprintf(stderr, "loadgen: bet modes need users: --users K or --tokens FILE\n");
            return 2;
        }
        if (lg_opt.mode == LG_M_USERS) {
            printf("{\"tool\":\"loadgen\",\"mode\":\"users\",\"users\":%d}\n", lg_nusers);
            return 0;
        }
        if (lg_opt.round_id < 0 || lg_opt.bands <= 0 || lg_opt.follow_ms > 0)
            lg_find_round();
        if (lg_opt.mode == LG_M_REDIS_BET)
            lg_load_script();
    }

    if (lg_opt.tls) {
        char err[256];
        if (lg_opt.mode == LG_M_REDIS_BET ||
            tp_tls_client_ctx_new(&lg_tls_ctx, err, sizeof(err)) != 0) {
            fprintf(stderr, "loadgen: --tls: %s\n",
                    lg_opt.mode == LG_M_REDIS_BET ? "not for redis-bet" : err);
            return 2;
        }
    }
    if (lg_opt.latencies_file != NULL) {
        lg_res.latencies = fopen(lg_opt.latencies_file, "w");
        if (lg_res.latencies == NULL) {
            fprintf(stderr, "loadgen: --latencies %s: %s\n", lg_opt.latencies_file,
                    strerror(errno));
            return 2;
        }
        lg_res.wall_mono_us = (int64_t)lg_wall_us() - (int64_t)(lg_mono_ns() / 1000);
    }
    for (int i = 0; i < lg_opt.ncpu_watch; i++)
        lg_opt.cpu_watch[i].rss_before = lg_cpu_watch_rss_kb(&lg_opt.cpu_watch[i]);
    lg_loop = ev_default_loop(EVFLAG_AUTO);
    lg_conns = tp_xcalloc((size_t)lg_opt.conns, sizeof(*lg_conns));
    for (int i = 0; i < lg_opt.conns; i++) {
        struct lg_conn *c = &lg_conns[i];
        c->idx = i;
        c->fd = -1;
        c->st = LG_C_DEAD;
        tp_buf_init(&c->in);
        tp_buf_init(&c->out);
        tp_buf_init(&c->frag);
        if (lg_opt.mode != LG_M_VIEWERS) {
            c->sched = tp_xmalloc(LG_RING * sizeof(*c->sched));
            if (lg_opt.mode == LG_M_WS_BET) {
                c->done = tp_xcalloc(LG_RING, 1);
                c->user = &lg_users[i % lg_nusers];
            }
        }
    }
    if (!lg_opt.quiet)
        fprintf(stderr, "[loadgen] %s: opening %d connections\n", lg_mode_names[lg_opt.mode],
                lg_opt.conns);
    ev_timer_init(&connect_timer, on_connect_timer, 0.0, 0.01);
    ev_timer_start(lg_loop, &connect_timer);
    ev_signal_init(&stop_signal, on_stop, SIGTERM);
    ev_signal_start(lg_loop, &stop_signal);
    ev_run(lg_loop, 0);
    if (lg_res.latencies != NULL && fclose(lg_res.latencies) != 0)
        fprintf(stderr, "loadgen: --latencies %s: %s\n", lg_opt.latencies_file, strerror(errno));
    lg_res.latencies = NULL;
    lg_report();
    tp_tls_ctx_free(lg_tls_ctx);
    return lg_res.ok > 0 || (lg_opt.mode == LG_M_VIEWERS && lg_res.msgs[0] > 0) ? 0 : 1;
}
