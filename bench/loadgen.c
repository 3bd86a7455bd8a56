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
 * viewers (N anonymous WebSockets counting tick/odds messages and tick delivery lag).
 *
 * Only libev's header from outside the project: MessagePack goes through the project's codec,
 * SHA-1/SHA-256/base64 through crypto.h; the WebSocket client framer, the HTTP response reader
 * and the RESP reader below are a few dozen lines each because a client for exactly these
 * messages needs no general library (the server's wslay/llhttp are server-side only).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "tickpool/buf.h"
#include "tickpool/codec.h"
#include "tickpool/common.h"
#include "tickpool/crypto.h"

/* --- Options --- */

enum mode { M_HTTP_BET, M_WS_BET, M_REDIS_BET, M_VIEWERS, M_USERS };
static const char *const mode_names[] = {"http-bet", "ws-bet", "redis-bet", "viewers", "users"};

struct user {
    int64_t id;
    char *token;
};

static struct {
    enum mode mode;
    const char *host;
    int port;
    const char *redis_host;
    int redis_port;
    int conns;
    double rate; /* requests/s over all connections; 0 = closed loop */
    double duration, warmup, drain;
    int pipeline;
    int users_create;
    const char *tokens_file;
    int64_t round_id;
    int bands, buckets;
    int64_t stake, min_stake, max_stake;
    const char *script;
    double connect_rate;
    const char *json_file;
    const char *label;
    bool quiet;
    int ncpu_watch;
    struct cpu_watch {
        char name[32];
        int npids;
        int pids[64];
        uint64_t t0, t1; /* Σ utime+stime (clock ticks) at measure start / end */
    } cpu_watch[8];
} opt = {
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
    .script = "scripts/lua/bet.lua",
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
               "Load:\n"
               "  -c, --conns N           connections (viewers: sockets) [16]\n"
               "  -r, --rate R            requests per second over all connections; 0 = closed\n"
               "                          loop, each connection keeps --pipeline requests in\n"
               "                          flight (maximum throughput) [1000]\n"
               "  -d, --duration S        measured seconds [10]\n"
               "  -w, --warmup S          seconds before measuring (not recorded) [2]\n"
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
               "      --bands N           bands are 0..N-1, bets cycle over them [from the round]\n"
               "      --stake N           stake per bet in minor units [100]\n"
               "      --min-stake N, --max-stake N   bounds passed to bet.lua (redis-bet)\n"
               "      --buckets B         game.buckets of the server (redis-bet) [1]\n"
               "      --script FILE       bet.lua for redis-bet [scripts/lua/bet.lua]\n"
               "Output:\n"
               "      --json FILE         also append the JSON line to FILE\n"
               "      --label TEXT        label copied into the JSON line\n"
               "      --cpu-pid NAME=PID[,PID...]  report the CPU (utime+stime from /proc) these\n"
               "                          processes used during the measured window only, as\n"
               "                          cpu_window_us.NAME (repeatable, at most 8)\n"
               "  -q, --quiet             no per-second progress\n"
               "  -h, --help              this text\n");
}

/* --- Clock and histogram --- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Log-linear histogram of microseconds (HdrHistogram's layout with 7 sub-bucket bits): values
 * below 128 µs are exact, above that every power of two is split into 128 linear buckets, so a
 * reported percentile is at most 0.8% above the true value. Values are clamped to 60 s. */
#define H_SUB 128
#define H_NB (H_SUB + 40 * H_SUB)
#define H_MAX_US 60000000ull

struct hist {
    uint64_t counts[H_NB];
    uint64_t n, max, sum;
};

static int h_index(uint64_t v)
{
    if (v < H_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int idx = H_SUB + (e - 7) * H_SUB + (int)((v >> (e - 7)) - H_SUB);
    return idx < H_NB ? idx : H_NB - 1;
}

/* Highest value that lands in bucket idx. */
static uint64_t h_value(int idx)
{
    if (idx < H_SUB)
        return (uint64_t)idx;
    int e = (idx - H_SUB) / H_SUB + 7;
    uint64_t sub = (uint64_t)((idx - H_SUB) % H_SUB + H_SUB);
    return ((sub + 1) << (e - 7)) - 1;
}

static void h_record(struct hist *h, uint64_t us)
{
    if (us > H_MAX_US)
        us = H_MAX_US;
    h->counts[h_index(us)]++;
    h->n++;
    h->sum += us;
    if (us > h->max)
        h->max = us;
}

static uint64_t h_pct(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->n), seen = 0;
    if (want == 0)
        want = 1;
    for (int i = 0; i < H_NB; i++) {
        seen += h->counts[i];
        if (seen >= want)
            return TP_MIN(h_value(i), h->max);
    }
    return h->max;
}

/* --- Result counters --- */

#define MAX_ERR_KINDS 64
struct errs {
    int n;
    char name[MAX_ERR_KINDS][64];
    uint64_t count[MAX_ERR_KINDS];
};

static struct {
    struct hist lat;             /* request latency or tick lag, µs */
    struct errs errs;            /* "status code" → count, measured window only */
    uint64_t ok, sent, answered; /* measured window */
    uint64_t total_ok, total_err, overflow, conn_fail, conn_closed;
    uint64_t msgs[5];                     /* viewers: tick, odds, round, hello/snapshot, other */
    struct hist spread_tick, spread_odds; /* viewers: receive time - first receipt, µs */
    uint64_t lag_min;                     /* viewers: smallest tick lag, µs */
    uint64_t sec_ok, sec_err, sec_msgs;
    struct rusage ru0, ru1;
    uint64_t t_measure0, t_measure1;
} res;

static void err_count(const char *name)
{
    struct errs *e = &res.errs;
    for (int i = 0; i < e->n; i++) {
        if (strcmp(e->name[i], name) == 0) {
            e->count[i]++;
            return;
        }
    }
    int i = e->n < MAX_ERR_KINDS ? e->n++ : MAX_ERR_KINDS - 1;
    if (i == MAX_ERR_KINDS - 1 && e->count[i] != 0) {
        snprintf(e->name[i], sizeof(e->name[i]), "other");
    } else {
        snprintf(e->name[i], sizeof(e->name[i]), "%s", name);
    }
    e->count[i]++;
}

/* --- Run state --- */

#define RING 65536 /* per-connection in-flight + backlog capacity (power of two) */

enum cstate { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DEAD };

struct conn {
    int idx, fd;
    enum cstate st;
    ev_io rio, wio;
    struct tp_buf in, out, frag;
    int frag_op;
    char ws_accept[32];
    const struct user *user;   /* ws-bet: the socket's player */
    uint64_t *sched;           /* RING due times (mono ns) indexed by seq & (RING-1) */
    uint8_t *done;             /* ws-bet: answered flags */
    uint64_t head, sent, tail; /* oldest unanswered seq, next to write, next to assign */
    bool dirty;
};

static struct ev_loop *loop;
static struct conn *conns;
static struct user *users;
static int nusers;
static uint64_t run_id;
static uint64_t t0, t_meas, t_end; /* mono ns: load start, measuring start, scheduling end */
static uint64_t next_k;            /* next request of the global schedule */
static uint64_t user_rr;
static bool stopping;
static int window_phase; /* 0 before the measured window, 1 in it, 2 after */
static ev_timer sched_timer, tick_timer, connect_timer, window_timer;
static int connected, opened;
static char redis_sha[41];
static uint64_t rng_state = 88172645463325252ull;

static uint32_t rnd32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static bool measured(uint64_t due)
{
    return due >= t_meas && due < t_end;
}

static uint64_t inflight_total(void)
{
    uint64_t n = 0;
    for (int i = 0; i < opt.conns; i++)
        n += conns[i].tail - conns[i].head;
    return n;
}

/* --- Request encoders --- */

static void ws_frame(struct tp_buf *out, int opcode, const void *p, size_t n)
{
    /* Client frames must be masked (RFC 6455 §5.3). */
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t m = rnd32();
    uint8_t mask[4] = {(uint8_t)m, (uint8_t)(m >> 8), (uint8_t)(m >> 16), (uint8_t)(m >> 24)};
    memcpy(hdr + h, mask, 4);
    h += 4;
    tp_buf_append(out, hdr, h);
    uint8_t *dst = (uint8_t *)tp_buf_reserve(out, n);
    const uint8_t *src = p;
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] ^ mask[i & 3];
    tp_buf_commit(out, n);
}

static int bands(void)
{
    return opt.bands > 0 ? opt.bands : 5;
}

static void put_bulk(struct tp_buf *b, const char *s, size_t n)
{
    tp_buf_printf(b, "$%zu\r\n", n);
    tp_buf_append(b, s, n);
    tp_buf_puts(b, "\r\n");
}

/* Appends request `seq` of connection c to its output buffer. */
static void encode_request(struct conn *c, uint64_t seq)
{
    int band = (int)((seq + (uint64_t)c->idx) % (uint64_t)bands());
    char key[64];
    snprintf(key, sizeof(key), "lg%" PRIx64 "-%d-%" PRIu64, run_id, c->idx, seq);
    switch (opt.mode) {
    case M_HTTP_BET: {
        const struct user *u = &users[user_rr++ % (uint64_t)nusers];
        char body[128];
        int bl = snprintf(body, sizeof(body),
                          "{\"round_id\":%" PRId64 ",\"band\":%d,\"stake\":%" PRId64 "}",
                          opt.round_id, band, opt.stake);
        tp_buf_printf(&c->out,
                      "POST /api/v1/bets HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                      "Idempotency-Key: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      opt.host, opt.port, u->token, key, bl, body);
        break;
    }
    case M_WS_BET: {
        struct tp_buf m;
        tp_buf_init(&m);
        struct tp_wr w;
        tp_wr_init(&w, &m, TP_FMT_MSGPACK);
        tp_wr_map(&w, 6);
        tp_wr_key(&w, "t");
        tp_wr_str(&w, "bet");
        tp_wr_key(&w, "req");
        tp_wr_uint(&w, seq);
        tp_wr_key(&w, "key");
        tp_wr_str(&w, key);
        tp_wr_key(&w, "round_id");
        tp_wr_int(&w, opt.round_id);
        tp_wr_key(&w, "band");
        tp_wr_int(&w, band);
        tp_wr_key(&w, "stake");
        tp_wr_int(&w, opt.stake);
        ws_frame(&c->out, 2, tp_buf_ptr(&m), tp_buf_size(&m));
        tp_buf_deinit(&m);
        break;
    }
    case M_REDIS_BET: {
        /* Exactly the KEYS/ARGV src/bet.c passes (scripts/lua/bet.lua header). */
        const struct user *u = &users[user_rr++ % (uint64_t)nusers];
        int nb = opt.buckets, b = (int)(u->id % nb);
        char k[9][160], a[13][80];
        snprintf(k[0], sizeof(k[0]), "tp:{b%d}:bal", b);
        snprintf(k[1], sizeof(k[1]), "tp:{b%d}:idem:%" PRId64 ":%s", b, u->id, key);
        snprintf(k[2], sizeof(k[2]), "tp:{b%d}:round:%" PRId64 ":state", b, opt.round_id);
        snprintf(k[3], sizeof(k[3]), "tp:{b%d}:pool:%" PRId64, b, opt.round_id);
        snprintf(k[4], sizeof(k[4]), "tp:{b%d}:bets:%" PRId64 ":%d", b, opt.round_id, band);
        snprintf(k[5], sizeof(k[5]), "tp:{b%d}:outbox", b);
        snprintf(k[6], sizeof(k[6]), "tp:{b%d}:seq", b);
        snprintf(k[7], sizeof(k[7]), "tp:{b%d}:ubets:%" PRId64, b, u->id);
        snprintf(k[8], sizeof(k[8]), "tp:{b%d}:net", b);
        char canon[96];
        int cl = snprintf(canon, sizeof(canon), "v1|%" PRId64 "|%d|%" PRId64, opt.round_id, band,
                          opt.stake);
        uint8_t h[TP_SHA256_LEN];
        tp_sha256(canon, (size_t)cl, h);
        snprintf(a[0], sizeof(a[0]), "%" PRId64, u->id);
        snprintf(a[1], sizeof(a[1]), "%" PRId64, opt.round_id);
        snprintf(a[2], sizeof(a[2]), "%d", band);
        snprintf(a[3], sizeof(a[3]), "%" PRId64, opt.stake);
        snprintf(a[4], sizeof(a[4]), "%s", key);
        tp_hex_encode(h, sizeof(h), a[5]);
        snprintf(a[6], sizeof(a[6]), "%" PRIu64, wall_us() / 1000);
        snprintf(a[7], sizeof(a[7]), "%d", bands());
        snprintf(a[8], sizeof(a[8]), "%" PRId64, opt.min_stake);
        snprintf(a[9], sizeof(a[9]), "%" PRId64, opt.max_stake);
        snprintf(a[10], sizeof(a[10]), "%d", 86400);
        snprintf(a[11], sizeof(a[11]), "%d", b);
        snprintf(a[12], sizeof(a[12]), "%d", nb);
        tp_buf_puts(&c->out, "*25\r\n");
        put_bulk(&c->out, "EVALSHA", 7);
        put_bulk(&c->out, redis_sha, 40);
        put_bulk(&c->out, "9", 1);
        for (int i = 0; i < 9; i++)
            put_bulk(&c->out, k[i], strlen(k[i]));
        for (int i = 0; i < 13; i++)
            put_bulk(&c->out, a[i], strlen(a[i]));
        break;
    }
    case M_VIEWERS:
    case M_USERS:
        break;
    }
}

/* --- Connection I/O --- */

static void conn_kill(struct conn *c, const char *why);

static void conn_flush(struct conn *c)
{
    while (tp_buf_size(&c->out) > 0) {
        ssize_t n = write(c->fd, tp_buf_ptr(&c->out), tp_buf_size(&c->out));
        if (n > 0) {
            tp_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(loop, &c->wio);
            return;
        }
        conn_kill(c, "write_error");
        return;
    }
    ev_io_stop(loop, &c->wio);
}

/* Writes requests from c->sent up to the pipeline window. */
static void conn_pump(struct conn *c)
{
    if (c->st != C_OPEN)
        return;
    while (c->sent < c->tail && c->sent - c->head < (uint64_t)opt.pipeline)
        encode_request(c, c->sent++);
    c->dirty = true;
}

/* Assigns one request due at `due` to connection c (written now or when the window allows). */
static void enqueue(struct conn *c, uint64_t due)
{
    if (c->st == C_DEAD) {
        if (measured(due))
            err_count("conn_dead");
        return;
    }
    if (c->tail - c->head >= RING) {
        res.overflow++;
        if (measured(due))
            err_count("backlog_overflow");
        return;
    }
    c->sched[c->tail & (RING - 1)] = due;
    if (c->done != NULL)
        c->done[c->tail & (RING - 1)] = 0;
    c->tail++;
    if (measured(due))
        res.sent++;
    conn_pump(c);
}

static void flush_dirty(void)
{
    for (int i = 0; i < opt.conns; i++) {
        if (conns[i].dirty) {
            conns[i].dirty = false;
            if (conns[i].st == C_OPEN)
                conn_flush(&conns[i]);
        }
    }
}

static void maybe_finish(void);

/* One answer to request `seq`: ok or an error named `err`. */
static void complete(struct conn *c, uint64_t seq, const char *err)
{
    uint64_t due = c->sched[seq & (RING - 1)];
    uint64_t now = mono_ns();
    if (measured(due)) {
        res.answered++;
        if (err == NULL) {
            res.ok++;
            h_record(&res.lat, now > due ? (now - due) / 1000 : 0);
        } else {
            err_count(err);
        }
    }
    if (err == NULL) {
        res.total_ok++;
        res.sec_ok++;
    } else {
        res.total_err++;
        res.sec_err++;
    }
    /* Closed loop: each answer immediately schedules the next request. */
    if (opt.rate <= 0 && !stopping)
        enqueue(c, now);
}

static void advance_ws(struct conn *c)
{
    while (c->head < c->sent && c->done[c->head & (RING - 1)])
        c->head++;
}

/* --- Response readers --- */

static const char *find_code(const char *body, size_t n, char *out, size_t outlen)
{
    /* Error bodies are {"error":{"code":"...",...}}: a substring scan is enough here. */
    static const char pat[] = "\"code\":\"";
    const char *p = memmem(body, n, pat, sizeof(pat) - 1);
    if (p == NULL) {
        snprintf(out, outlen, "?");
        return out;
    }
    p += sizeof(pat) - 1;
    size_t i = 0;
    while (p + i < body + n && p[i] != '"' && i + 1 < outlen) {
        out[i] = p[i];
        i++;
    }
    out[i] = 0;
    return out;
}

/* Parses pipelined HTTP responses; returns false when the connection must close. */
static bool read_http(struct conn *c)
{
    for (;;) {
        const char *p = tp_buf_ptr(&c->in);
        size_t n = tp_buf_size(&c->in);
        const char *eoh = memmem(p, n, "\r\n\r\n", 4);
        if (eoh == NULL)
            return n < 65536;
        size_t hl = (size_t)(eoh - p) + 4;
        if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0)
            return false;
        int status = atoi(p + 9);
        size_t clen = 0;
        for (const char *q = p; q < eoh;) {
            const char *nl = memmem(q, (size_t)(eoh - q) + 2, "\r\n", 2);
            if (nl == NULL)
                break;
            if (nl - q > 15 && strncasecmp(q, "content-length:", 15) == 0)
                clen = strtoul(q + 15, NULL, 10);
            q = nl + 2;
        }
        if (n < hl + clen)
            return true;
        if (status == 100) {
            tp_buf_consume(&c->in, hl);
            continue;
        }
        if (c->head >= c->sent)
            return false; /* an answer nobody asked for */
        char name[96], code[64];
        if (status == 201) {
            complete(c, c->head, NULL);
        } else {
            snprintf(name, sizeof(name), "%d %s", status,
                     find_code(p + hl, clen, code, sizeof(code)));
            complete(c, c->head, name);
        }
        c->head++;
        tp_buf_consume(&c->in, hl + clen);
        conn_pump(c);
    }
}

/* RESP: length of one complete reply at p, 0 when incomplete, -1 when malformed. */
static long resp_len(const char *p, size_t n)
{
    const char *nl = memmem(p, n, "\r\n", 2);
    if (nl == NULL)
        return 0;
    long line = nl - p + 2;
    switch (p[0]) {
    case '+':
    case '-':
    case ':':
        return line;
    case '$': {
        long bl = strtol(p + 1, NULL, 10);
        if (bl < 0)
            return line;
        return (size_t)(line + bl + 2) <= n ? line + bl + 2 : 0;
    }
    case '*': {
        long cnt = strtol(p + 1, NULL, 10), off = line;
        for (long i = 0; i < cnt; i++) {
            long l = resp_len(p + off, n - (size_t)off);
            if (l <= 0)
                return l;
            off += l;
        }
        return off;
    }
    default:
        return -1;
    }
}

/* Copies the string of a bulk/simple reply at p into out. */
static void resp_str(const char *p, char *out, size_t outlen)
{
    const char *s = p + 1;
    if (p[0] == '$')
        s = strstr(p, "\r\n") + 2;
    size_t i = 0;
    while (s[i] != '\r' && i + 1 < outlen) {
        out[i] = s[i];
        i++;
    }
    out[i] = 0;
}

static bool read_resp(struct conn *c)
{
    for (;;) {
        const char *p = tp_buf_ptr(&c->in);
        size_t n = tp_buf_size(&c->in);
        if (n == 0)
            return true;
        long l = resp_len(p, n);
        if (l < 0)
            return false;
        if (l == 0)
            return true;
        if (c->head >= c->sent)
            return false;
        char a[64] = "", b[64] = "", name[140];
        if (p[0] == '*') {
            const char *e1 = strstr(p, "\r\n") + 2;
            resp_str(e1, a, sizeof(a));
            if (strcmp(a, "ok") == 0) {
                complete(c, c->head, NULL);
            } else {
                const char *e2 = e1 + resp_len(e1, n - (size_t)(e1 - p));
                resp_str(e2, b, sizeof(b));
                snprintf(name, sizeof(name), "%s %s", a, b);
                complete(c, c->head, name);
            }
        } else {
            resp_str(p, a, sizeof(a));
            char *sp = strchr(a, ' ');
            if (sp != NULL && strncmp(a, "-ERR", 4) != 0)
                *sp = 0;
            snprintf(name, sizeof(name), "redis %.60s", a);
            complete(c, c->head, name);
        }
        c->head++;
        tp_buf_consume(&c->in, (size_t)l);
        conn_pump(c);
    }
}

/* Viewers: every broadcast reaches all sockets of a server worker as the same bytes, so each
 * distinct payload is decoded once and remembered with the time its first copy arrived (on any
 * socket). Later copies cost a hash and a memcmp, and their arrival minus the first one's is
 * the fan-out spread: how much later this socket got the message than the first socket did,
 * which needs no server timestamp (odds carry none). */
#define SEEN_N 64
#define SEEN_MAX_LEN 512

struct seen {
    uint64_t hash, first_ns;
    size_t len;
    int kind;   /* 0 tick, 1 odds, 2 round, 3 hello/snapshot, 4 other */
    int64_t ts; /* tick ts (ms), -1 when none */
    char bytes[SEEN_MAX_LEN];
};

static struct seen seen[SEEN_N];
static unsigned seen_next;

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static int kind_of(const char *t)
{
    return strcmp(t, "tick") == 0                                    ? 0
           : strcmp(t, "odds") == 0                                  ? 1
           : strcmp(t, "round") == 0                                 ? 2
           : (strcmp(t, "hello") == 0 || strcmp(t, "snapshot") == 0) ? 3
                                                                     : 4;
}

/* Decodes a viewer message (or finds it among the recent ones); NULL when not MessagePack. */
static const struct seen *viewer_decode(const char *p, size_t n, uint64_t now, struct seen *tmp)
{
    uint64_t h = fnv1a(p, n);
    bool cacheable = n <= SEEN_MAX_LEN;
    if (cacheable) {
        for (unsigned i = 0; i < SEEN_N; i++) {
            const struct seen *e = &seen[(seen_next - 1 - i) & (SEEN_N - 1)];
            if (e->hash == h && e->len == n && memcmp(e->bytes, p, n) == 0)
                return e;
        }
    }
    struct tp_doc *doc = tp_doc_parse(TP_FMT_MSGPACK, p, n, NULL, 0);
    if (doc == NULL)
        return NULL;
    struct seen *e = cacheable ? &seen[seen_next++ & (SEEN_N - 1)] : tmp;
    const char *t = NULL;
    if (tp_val_get_str(tp_doc_root(doc), "t", &t, NULL) != 0)
        t = "";
    e->hash = h;
    e->len = n;
    e->first_ns = now;
    e->kind = kind_of(t);
    if (e->kind != 0 || tp_val_get_int(tp_doc_root(doc), "ts", &e->ts) != 0)
        e->ts = -1;
    if (cacheable)
        memcpy(e->bytes, p, n);
    tp_doc_free(doc);
    return e;
}

static void on_viewer_message(const char *p, size_t n)
{
    uint64_t now = mono_ns();
    struct seen tmp;
    const struct seen *e = viewer_decode(p, n, now, &tmp);
    if (e == NULL) {
        err_count("bad_msgpack");
        return;
    }
    res.sec_msgs++;
    if (now < t_meas || now >= t_end)
        return;
    res.msgs[e->kind]++;
    if (e->kind == 0 && e->ts >= 0) {
        int64_t lag = (int64_t)wall_us() - e->ts * 1000;
        uint64_t l = lag > 0 ? (uint64_t)lag : 0;
        h_record(&res.lat, l);
        if (res.lag_min == 0 || l < res.lag_min)
            res.lag_min = l;
    }
    if (e->kind <= 1)
        h_record(e->kind == 0 ? &res.spread_tick : &res.spread_odds, (now - e->first_ns) / 1000);
}

/* One complete WebSocket message (binary MessagePack) from the server. */
static void on_ws_message(struct conn *c, const char *p, size_t n)
{
    if (opt.mode == M_VIEWERS) {
        (void)c;
        on_viewer_message(p, n);
        return;
    }
    struct tp_doc *doc = tp_doc_parse(TP_FMT_MSGPACK, p, n, NULL, 0);
    if (doc == NULL) {
        err_count("bad_msgpack");
        return;
    }
    const struct tp_val *root = tp_doc_root(doc);
    const char *t = NULL;
    if (tp_val_get_str(root, "t", &t, NULL) != 0)
        t = "";
    if (opt.mode == M_WS_BET) {
        int64_t req;
        bool ok = strcmp(t, "bet_ok") == 0;
        if ((ok || strcmp(t, "bet_err") == 0) && tp_val_get_int(root, "req", &req) == 0 &&
            (uint64_t)req >= c->head && (uint64_t)req < c->sent &&
            !c->done[(uint64_t)req & (RING - 1)]) {
            char name[96];
            const char *code = NULL;
            if (!ok && tp_val_get_str(root, "code", &code, NULL) != 0)
                code = "?";
            snprintf(name, sizeof(name), "bet_err %s", ok ? "" : code);
            c->done[(uint64_t)req & (RING - 1)] = 1;
            complete(c, (uint64_t)req, ok ? NULL : name);
            advance_ws(c);
            conn_pump(c);
        } else if (strcmp(t, "error") == 0) {
            err_count("ws error message");
        }
    }
    tp_doc_free(doc);
}

/* Parses server frames (unmasked); returns false when the connection must close. */
static bool read_ws(struct conn *c)
{
    for (;;) {
        const uint8_t *p = (const uint8_t *)tp_buf_ptr(&c->in);
        size_t n = tp_buf_size(&c->in);
        if (n < 2)
            return true;
        int fin = p[0] & 0x80, op = p[0] & 0x0f;
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (p[1] & 0x80)
            return false; /* server frames are never masked */
        if (len == 126) {
            if (n < 4)
                return true;
            len = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            if (n < 10)
                return true;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | p[2 + i];
            h = 10;
        }
        if (len > (16u << 20))
            return false;
        if (n < h + len)
            return true;
        const char *pl = (const char *)p + h;
        if (op == 0x8) {
            return false; /* close */
        } else if (op == 0x9) {
            ws_frame(&c->out, 0xA, pl, (size_t)len);
            c->dirty = true;
        } else if (op == 0xA) {
            /* pong: ignore */
        } else if (op == 0 || op == 1 || op == 2) {
            if (op != 0)
                c->frag_op = op;
            if (fin && tp_buf_size(&c->frag) == 0) {
                on_ws_message(c, pl, (size_t)len);
            } else {
                tp_buf_append(&c->frag, pl, (size_t)len);
                if (fin) {
                    on_ws_message(c, tp_buf_ptr(&c->frag), tp_buf_size(&c->frag));
                    tp_buf_reset(&c->frag);
                }
            }
        } else {
            return false;
        }
        tp_buf_consume(&c->in, h + (size_t)len);
    }
}

static bool read_handshake(struct conn *c)
{
    const char *p = tp_buf_ptr(&c->in);
    size_t n = tp_buf_size(&c->in);
    const char *eoh = memmem(p, n, "\r\n\r\n", 4);
    if (eoh == NULL)
        return n < 16384;
    size_t hl = (size_t)(eoh - p) + 4;
    if (n < 12 || atoi(p + 9) != 101) {
        char name[64];
        snprintf(name, sizeof(name), "ws upgrade %d", n >= 12 ? atoi(p + 9) : 0);
        err_count(name);
        return false;
    }
    char hdr[8192];
    size_t cl = TP_MIN(hl, sizeof(hdr) - 1);
    memcpy(hdr, p, cl);
    hdr[cl] = 0;
    const char *acc = strcasestr(hdr, "\r\nsec-websocket-accept:");
    if (acc == NULL || strstr(acc, c->ws_accept) == NULL) {
        err_count("ws bad accept");
        return false;
    }
    tp_buf_consume(&c->in, hl);
    c->st = C_OPEN;
    opened++;
    conn_pump(c);
    return read_ws(c);
}

static void on_read(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct conn *c = w->data;
    for (;;) {
        char *dst = tp_buf_reserve(&c->in, 65536);
        ssize_t n = read(c->fd, dst, 65536);
        if (n > 0) {
            tp_buf_commit(&c->in, (size_t)n);
            if (n < 65536)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_kill(c, n == 0 ? "closed_by_peer" : "read_error");
        return;
    }
    bool keep;
    if (c->st == C_HANDSHAKE)
        keep = read_handshake(c);
    else if (opt.mode == M_HTTP_BET)
        keep = read_http(c);
    else if (opt.mode == M_REDIS_BET)
        keep = read_resp(c);
    else
        keep = read_ws(c);
    if (!keep) {
        conn_kill(c, "protocol_or_close");
        return;
    }
    if (c->dirty) {
        c->dirty = false;
        conn_flush(c);
    }
    maybe_finish();
}

static void start_ws_handshake(struct conn *c)
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (uint8_t)rnd32();
    char key[32], cat[96];
    tp_base64_encode(raw, sizeof(raw), key, sizeof(key));
    snprintf(cat, sizeof(cat), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t sha[TP_SHA1_LEN];
    tp_sha1(cat, strlen(cat), sha);
    tp_base64_encode(sha, sizeof(sha), c->ws_accept, sizeof(c->ws_accept));
    char q[600] = "";
    if (c->user != NULL)
        snprintf(q, sizeof(q), "?token=%s", c->user->token);
    tp_buf_printf(&c->out,
                  "GET /ws%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: tickpool.v1\r\n\r\n",
                  q, opt.host, opt.port, key);
    c->st = C_HANDSHAKE;
}

static void on_write(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct conn *c = w->data;
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            res.conn_fail++;
            conn_kill(c, "connect_failed");
            return;
        }
        connected++;
        ev_io_start(loop, &c->rio);
        if (opt.mode == M_WS_BET || opt.mode == M_VIEWERS) {
            start_ws_handshake(c);
        } else {
            c->st = C_OPEN;
            opened++;
            conn_pump(c);
        }
    }
    conn_flush(c);
}

static void conn_kill(struct conn *c, const char *why)
{
    if (c->st == C_DEAD)
        return;
    bool was_open = c->st == C_OPEN;
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    close(c->fd);
    c->fd = -1;
    c->st = C_DEAD;
    if (was_open)
        opened--;
    if (!stopping) {
        res.conn_closed++;
        err_count(why);
    }
    /* Everything still in flight on it is lost. */
    for (uint64_t s = c->head; s < c->tail; s++) {
        if (c->done != NULL && c->done[s & (RING - 1)])
            continue;
        if (measured(c->sched[s & (RING - 1)]))
            err_count("lost_on_close");
    }
    c->head = c->sent = c->tail;
}

static int conn_start(struct conn *c, const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ev_io_init(&c->rio, on_read, c->fd, EV_READ);
    ev_io_init(&c->wio, on_write, c->fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->st = C_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        c->st = C_DEAD;
        res.conn_fail++;
        return -1;
    }
    ev_io_start(loop, &c->wio);
    return 0;
}

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
    if (res.t_measure1 == 0) {
        getrusage(RUSAGE_SELF, &res.ru1);
        res.t_measure1 = mono_ns();
    }
    ev_break(loop, EVBREAK_ALL);
}

static void maybe_finish(void)
{
    if (stopping && opt.mode != M_VIEWERS && inflight_total() == 0)
        finish();
}

static void on_sched(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    uint64_t now = mono_ns();
    if (opt.rate > 0) {
        double iv = 1e9 / opt.rate;
        for (;;) {
            uint64_t due = t0 + (uint64_t)(iv * (double)next_k);
            if (due >= t_end || due > now)
                break;
            enqueue(&conns[next_k % (uint64_t)opt.conns], due);
            next_k++;
        }
        flush_dirty();
        uint64_t due = t0 + (uint64_t)(iv * (double)next_k);
        if (due < t_end) {
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
    uint64_t now = mono_ns();
    if (!opt.quiet) {
        const char *phase = now < t_meas ? "warmup" : now < t_end ? "measure" : "drain";
        if (opt.mode == M_VIEWERS)
            fprintf(stderr, "[loadgen] %5.1fs %-7s open=%d msgs/s=%" PRIu64 " closed=%" PRIu64 "\n",
                    sec(now - t0), phase, opened, res.sec_msgs, res.conn_closed);
        else
            fprintf(stderr,
                    "[loadgen] %5.1fs %-7s ok/s=%" PRIu64 " err/s=%" PRIu64 " inflight=%" PRIu64
                    " open=%d\n",
                    sec(now - t0), phase, res.sec_ok, res.sec_err, inflight_total(), opened);
    }
    res.sec_ok = res.sec_err = res.sec_msgs = 0;
    if (res.t_measure0 == 0 && now >= t_meas) {
        getrusage(RUSAGE_SELF, &res.ru0);
        res.t_measure0 = now;
    }
    if (now >= t_end && !stopping) {
        stopping = true;
        maybe_finish();
    }
    if (stopping && (opt.mode == M_VIEWERS || now >= t_end + (uint64_t)(opt.drain * 1e9))) {
        if (opt.mode != M_VIEWERS) {
            for (int i = 0; i < opt.conns; i++) {
                struct conn *c = &conns[i];
                for (uint64_t s = c->head; s < c->tail; s++)
                    if ((c->done == NULL || !c->done[s & (RING - 1)]) &&
                        measured(c->sched[s & (RING - 1)]))
                        err_count("timeout");
            }
        }
        finish();
    }
}

/* Opens connections at --connect-rate, then starts the clock. */
static int next_conn;
static void start_load(void);
static void on_connect_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    int batch = (int)TP_MAX(1.0, opt.connect_rate / 100.0);
    const char *h = opt.mode == M_REDIS_BET ? opt.redis_host : opt.host;
    int p = opt.mode == M_REDIS_BET ? opt.redis_port : opt.port;
    for (int i = 0; i < batch && next_conn < opt.conns; i++, next_conn++)
        conn_start(&conns[next_conn], h, p);
    if (next_conn >= opt.conns) {
        /* Wait (at most 30 s) until every socket is open or failed. */
        static int waited;
        int dead = 0;
        for (int i = 0; i < opt.conns; i++)
            dead += conns[i].st == C_DEAD;
        if (opened + dead >= opt.conns || ++waited > 3000) {
            ev_timer_stop(l, w);
            if (!opt.quiet)
                fprintf(stderr, "[loadgen] %d/%d connections open\n", opened, opt.conns);
            start_load();
        }
    }
}

/* --- CPU of other processes over the measured window (--cpu-pid) --- */

/* Σ utime+stime (clock ticks) of the watch's processes; a vanished pid counts 0. */
static uint64_t watch_ticks(const struct cpu_watch *cw)
{
    uint64_t sum = 0;
    for (int i = 0; i < cw->npids; i++) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", cw->pids[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        const char *q = strrchr(buf, ')');
        unsigned long long ut, st;
        /* After "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime. */
        if (q != NULL &&
            sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            sum += ut + st;
    }
    return sum;
}

static bool parse_cpu_watch(const char *arg)
{
    if (opt.ncpu_watch >= (int)TP_ARRAY_LEN(opt.cpu_watch))
        return false;
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || (size_t)(eq - arg) >= sizeof(opt.cpu_watch[0].name))
        return false;
    struct cpu_watch *cw = &opt.cpu_watch[opt.ncpu_watch];
    memcpy(cw->name, arg, (size_t)(eq - arg));
    cw->name[eq - arg] = 0;
    for (const char *q = eq + 1; *q != 0;) {
        char *end;
        long pid = strtol(q, &end, 10);
        if (end == q || pid <= 0 || cw->npids >= (int)TP_ARRAY_LEN(cw->pids))
            return false;
        cw->pids[cw->npids++] = (int)pid;
        q = end;
        while (*q == ',' || *q == ' ')
            q++;
    }
    if (cw->npids == 0)
        return false;
    opt.ncpu_watch++;
    return true;
}

/* Samples the watched processes (and, for viewers, loadgen's own rusage, so connect and
 * warm-up are excluded) when the measured window starts or ends. */
static void window_sample(void)
{
    if (window_phase >= 2)
        return;
    uint64_t now = mono_ns();
    for (int i = 0; i < opt.ncpu_watch; i++) {
        if (window_phase == 0)
            opt.cpu_watch[i].t0 = watch_ticks(&opt.cpu_watch[i]);
        else
            opt.cpu_watch[i].t1 = watch_ticks(&opt.cpu_watch[i]);
    }
    if (window_phase == 0 && res.t_measure0 == 0) {
        getrusage(RUSAGE_SELF, &res.ru0);
        res.t_measure0 = now;
    } else if (window_phase == 1 && opt.mode == M_VIEWERS) {
        getrusage(RUSAGE_SELF, &res.ru1);
        res.t_measure1 = now;
    }
    window_phase++;
}

static void on_window(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    window_sample();
    if (window_phase == 1) {
        uint64_t now = mono_ns();
        ev_timer_set(w, sec(t_end > now ? t_end - now : 0), 0.);
        ev_timer_start(l, w);
    }
}

static void start_load(void)
{
    t0 = mono_ns();
    t_meas = t0 + (uint64_t)(opt.warmup * 1e9);
    t_end = t_meas + (uint64_t)(opt.duration * 1e9);
    if (opt.mode != M_VIEWERS) {
        if (opt.rate > 0) {
            ev_timer_init(&sched_timer, on_sched, 0., 0.);
            ev_timer_start(loop, &sched_timer);
        } else {
            for (int i = 0; i < opt.conns; i++)
                for (int j = 0; j < opt.pipeline; j++)
                    enqueue(&conns[i], t0);
            flush_dirty();
        }
    }
    ev_timer_init(&window_timer, on_window, opt.warmup, 0.);
    ev_timer_start(loop, &window_timer);
    ev_timer_init(&tick_timer, on_tick, 1.0, 1.0);
    ev_timer_start(loop, &tick_timer);
    if (opt.warmup <= 0) {
        getrusage(RUSAGE_SELF, &res.ru0);
        res.t_measure0 = t0;
    }
}

/* --- Set-up over blocking HTTP/Redis --- */

/* One blocking request on a fresh connection; returns the status and the body in *body. */
static int blocking_call(const char *host, int port, const struct tp_buf *req, struct tp_buf *body,
                         bool http)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (write(fd, tp_buf_ptr(req), tp_buf_size(req)) != (ssize_t)tp_buf_size(req)) {
        close(fd);
        return -1;
    }
    struct tp_buf in;
    tp_buf_init(&in);
    int status = -1;
    for (;;) {
        char *d = tp_buf_reserve(&in, 65536);
        ssize_t n = read(fd, d, 65536);
        if (n <= 0)
            break;
        tp_buf_commit(&in, (size_t)n);
        if (!http && resp_len(tp_buf_ptr(&in), tp_buf_size(&in)) > 0)
            break;
    }
    close(fd);
    tp_buf_reset(body);
    if (http) {
        const char *p = tp_buf_ptr(&in);
        const char *eoh = memmem(p, tp_buf_size(&in), "\r\n\r\n", 4);
        if (tp_buf_size(&in) >= 12 && eoh != NULL) {
            status = atoi(p + 9);
            tp_buf_append(body, eoh + 4, tp_buf_size(&in) - (size_t)(eoh + 4 - p));
        }
    } else if (tp_buf_size(&in) > 0) {
        status = 0;
        tp_buf_append(body, tp_buf_ptr(&in), tp_buf_size(&in));
    }
    tp_buf_deinit(&in);
    return status;
}

static struct tp_doc *http_json(const char *method, const char *path, const char *json, int *status)
{
    struct tp_buf req, body;
    tp_buf_init(&req);
    tp_buf_init(&body);
    tp_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n", method, path,
                  opt.host, opt.port);
    if (json != NULL)
        tp_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(json), json);
    else
        tp_buf_puts(&req, "\r\n");
    *status = blocking_call(opt.host, opt.port, &req, &body, true);
    struct tp_doc *d =
        *status > 0 ? tp_doc_parse(TP_FMT_JSON, tp_buf_ptr(&body), tp_buf_size(&body), NULL, 0)
                    : NULL;
    tp_buf_deinit(&req);
    tp_buf_deinit(&body);
    return d;
}

static void create_users(void)
{
    users = tp_xcalloc((size_t)opt.users_create, sizeof(*users));
    FILE *f = opt.tokens_file != NULL ? fopen(opt.tokens_file, "w") : NULL;
    for (int i = 0; i < opt.users_create; i++) {
        char body[200];
        snprintf(body, sizeof(body),
                 "{\"username\":\"lg%" PRIx64 "_%d\",\"password\":\"bench-password-1\"}",
                 run_id & 0xffffffffu, i);
        int st;
        struct tp_doc *d = http_json("POST", "/api/v1/accounts", body, &st);
        const char *tok;
        int64_t id;
        if (st != 201 || d == NULL || tp_val_get_str(tp_doc_root(d), "token", &tok, NULL) != 0 ||
            tp_val_get_int(tp_doc_root(d), "user_id", &id) != 0) {
            fprintf(stderr, "loadgen: creating user %d failed (HTTP %d)\n", i, st);
            exit(1);
        }
        users[nusers].id = id;
        users[nusers++].token = tp_xstrdup(tok);
        if (f != NULL)
            fprintf(f, "%" PRId64 " %s\n", id, tok);
        tp_doc_free(d);
        if (!opt.quiet && (i + 1) % 50 == 0)
            fprintf(stderr, "[loadgen] %d/%d users created\n", i + 1, opt.users_create);
    }
    if (f != NULL)
        fclose(f);
}

static void read_tokens(void)
{
    FILE *f = fopen(opt.tokens_file, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: cannot read %s: %s\n", opt.tokens_file, strerror(errno));
        exit(2);
    }
    char line[1024];
    int cap = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char tok[900];
        long long id;
        if (sscanf(line, "%lld %899s", &id, tok) != 2)
            continue;
        if (nusers == cap) {
            cap = cap ? cap * 2 : 64;
            users = tp_xrealloc(users, (size_t)cap * sizeof(*users));
        }
        users[nusers].id = id;
        users[nusers++].token = tp_xstrdup(tok);
    }
    fclose(f);
}

static void find_round(void)
{
    int st;
    struct tp_doc *d = http_json("GET", "/api/v1/rounds/current", NULL, &st);
    const struct tp_val *open = d != NULL ? tp_val_get(tp_doc_root(d), "open") : NULL;
    int64_t id;
    if (st != 200 || tp_val_get_int(open, "id", &id) != 0) {
        fprintf(stderr, "loadgen: no open round (GET /api/v1/rounds/current: HTTP %d)\n", st);
        exit(1);
    }
    if (opt.round_id < 0)
        opt.round_id = id;
    if (opt.bands <= 0 && tp_val_type(tp_val_get(open, "bands")) == TP_VAL_ARRAY)
        opt.bands = (int)tp_val_len(tp_val_get(open, "bands"));
    tp_doc_free(d);
}

static void load_script(void)
{
    FILE *f = fopen(opt.script, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: cannot read %s: %s\n", opt.script, strerror(errno));
        exit(2);
    }
    struct tp_buf s, req, out;
    tp_buf_init(&s);
    tp_buf_init(&req);
    tp_buf_init(&out);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        tp_buf_append(&s, chunk, n);
    fclose(f);
    tp_buf_puts(&req, "*3\r\n");
    put_bulk(&req, "SCRIPT", 6);
    put_bulk(&req, "LOAD", 4);
    put_bulk(&req, tp_buf_ptr(&s), tp_buf_size(&s));
    if (blocking_call(opt.redis_host, opt.redis_port, &req, &out, false) != 0 ||
        tp_buf_ptr(&out)[0] != '$') {
        fprintf(stderr, "loadgen: SCRIPT LOAD failed: %.*s\n", (int)TP_MIN(tp_buf_size(&out), 200),
                tp_buf_ptr(&out));
        exit(1);
    }
    resp_str(tp_buf_ptr(&out), redis_sha, sizeof(redis_sha));
    tp_buf_deinit(&s);
    tp_buf_deinit(&req);
    tp_buf_deinit(&out);
}

/* --- Report --- */

static double tv_s(struct timeval a, struct timeval b)
{
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_usec - a.tv_usec) / 1e6;
}

static void report(void)
{
    double win = opt.duration;
    double cpu_u = tv_s(res.ru0.ru_utime, res.ru1.ru_utime);
    double cpu_s = tv_s(res.ru0.ru_stime, res.ru1.ru_stime);
    const struct hist *h = &res.lat;
    struct tp_buf j;
    tp_buf_init(&j);
    tp_buf_printf(&j,
                  "{\"tool\":\"loadgen\",\"mode\":\"%s\",\"label\":\"%s\",\"conns\":%d,"
                  "\"rate\":%.1f,\"duration_s\":%.1f,\"warmup_s\":%.1f,\"pipeline\":%d,",
                  mode_names[opt.mode], opt.label ? opt.label : "", opt.conns, opt.rate,
                  opt.duration, opt.warmup, opt.pipeline);
    if (opt.mode == M_VIEWERS) {
        uint64_t all = 0;
        for (int i = 0; i < 5; i++)
            all += res.msgs[i];
        tp_buf_printf(&j,
                      "\"sockets_open\":%d,\"conn_fail\":%" PRIu64 ",\"conn_closed\":%" PRIu64
                      ",\"ticks\":%" PRIu64 ",\"odds\":%" PRIu64 ",\"rounds\":%" PRIu64
                      ",\"other\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"ticks_per_socket_s\":%.3f,"
                      "\"odds_per_socket_s\":%.3f,\"lag_p50_us\":%" PRIu64
                      ",\"lag_p99_us\":%" PRIu64 ",\"lag_p999_us\":%" PRIu64
                      ",\"lag_max_us\":%" PRIu64 ",",
                      opened, res.conn_fail, res.conn_closed, res.msgs[0], res.msgs[1], res.msgs[2],
                      res.msgs[3] + res.msgs[4], (double)all / win,
                      opened ? (double)res.msgs[0] / win / opened : 0.0,
                      opened ? (double)res.msgs[1] / win / opened : 0.0, h_pct(h, 50), h_pct(h, 99),
                      h_pct(h, 99.9), h->max);
        const struct hist *st = &res.spread_tick, *so = &res.spread_odds;
        tp_buf_printf(&j,
                      "\"hello\":%" PRIu64 ",\"lag_min_us\":%" PRIu64
                      ",\"spread_tick_p50_us\":%" PRIu64 ",\"spread_tick_p99_us\":%" PRIu64
                      ",\"spread_tick_p999_us\":%" PRIu64 ",\"spread_tick_max_us\":%" PRIu64
                      ",\"spread_odds_p50_us\":%" PRIu64 ",\"spread_odds_p99_us\":%" PRIu64
                      ",\"spread_odds_p999_us\":%" PRIu64 ",\"spread_odds_max_us\":%" PRIu64 ",",
                      res.msgs[3], res.lag_min, h_pct(st, 50), h_pct(st, 99), h_pct(st, 99.9),
                      st->max, h_pct(so, 50), h_pct(so, 99), h_pct(so, 99.9), so->max);
        fprintf(stderr,
                "\nviewers: %d sockets open (%" PRIu64 " failed, %" PRIu64 " closed) over %.1fs\n"
                "  messages: tick %" PRIu64 " (%.2f/s per socket), odds %" PRIu64 " (%.2f/s per "
                "socket), round %" PRIu64 ", other %" PRIu64 "\n"
                "  tick lag: p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
                opened, res.conn_fail, res.conn_closed, win, res.msgs[0],
                opened ? (double)res.msgs[0] / win / opened : 0.0, res.msgs[1],
                opened ? (double)res.msgs[1] / win / opened : 0.0, res.msgs[2],
                res.msgs[3] + res.msgs[4], h_pct(h, 50) / 1e3, h_pct(h, 99) / 1e3,
                h_pct(h, 99.9) / 1e3, h->max / 1e3);
        fprintf(stderr,
                "  tick lag min %.3f ms; fan-out spread (after the first socket): ticks p50 %.3f "
                "p99 %.3f max %.3f ms, odds p50 %.3f p99 %.3f max %.3f ms\n",
                res.lag_min / 1e3, h_pct(st, 50) / 1e3, h_pct(st, 99) / 1e3, st->max / 1e3,
                h_pct(so, 50) / 1e3, h_pct(so, 99) / 1e3, so->max / 1e3);
    } else {
        double tput = (double)res.ok / win;
        tp_buf_printf(&j,
                      "\"round_id\":%" PRId64 ",\"users\":%d,\"sent\":%" PRIu64 ",\"ok\":%" PRIu64
                      ",\"ok_per_s\":%.1f,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
                      ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"mean_us\":%.1f,",
                      opt.round_id, nusers, res.sent, res.ok, tput, h_pct(h, 50), h_pct(h, 99),
                      h_pct(h, 99.9), h->max, h->n ? (double)h->sum / (double)h->n : 0.0);
        fprintf(stderr,
                "\n%s: %d conns, target %.0f req/s (%s), %.1fs measured after %.1fs warm-up\n"
                "  sent %" PRIu64 ", ok %" PRIu64 " (%.1f/s)\n"
                "  latency (from scheduled time): p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  "
                "max %.3f ms\n",
                mode_names[opt.mode], opt.conns, opt.rate,
                opt.rate > 0 ? "open loop" : "closed loop", win, opt.warmup, res.sent, res.ok, tput,
                h_pct(h, 50) / 1e3, h_pct(h, 99) / 1e3, h_pct(h, 99.9) / 1e3, h->max / 1e3);
    }
    uint64_t nerr = 0;
    tp_buf_puts(&j, "\"errors\":{");
    for (int i = 0; i < res.errs.n; i++) {
        tp_buf_printf(&j, "%s\"%s\":%" PRIu64, i ? "," : "", res.errs.name[i], res.errs.count[i]);
        fprintf(stderr, "  error %-32s %" PRIu64 "\n", res.errs.name[i], res.errs.count[i]);
        nerr += res.errs.count[i];
    }
    uint64_t ops = opt.mode == M_VIEWERS ? res.msgs[0] + res.msgs[1] + res.msgs[2] : res.ok;
    double cpu_per = ops ? (cpu_u + cpu_s) * 1e6 / (double)ops : 0.0;
    tp_buf_printf(&j, "},\"cpu_window_us\":{");
    long tck = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < opt.ncpu_watch; i++) {
        const struct cpu_watch *cw = &opt.cpu_watch[i];
        uint64_t us = cw->t1 >= cw->t0 ? (cw->t1 - cw->t0) * 1000000u / (uint64_t)tck : 0;
        tp_buf_printf(&j, "%s\"%s\":%" PRIu64, i ? "," : "", cw->name, us);
        fprintf(stderr, "  CPU of %s in the measured window: %.3f s\n", cw->name, us / 1e6);
    }
    tp_buf_printf(&j,
                  "},\"error_total\":%" PRIu64 ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,"
                  "\"cpu_us_per_op\":%.2f,\"ok_total\":%" PRIu64 ",\"err_total_all\":%" PRIu64
                  "}\n",
                  nerr, cpu_u, cpu_s, cpu_per, res.total_ok, res.total_err);
    fprintf(stderr,
            "  errors total %" PRIu64 "; loadgen CPU %.2fs user + %.2fs sys = %.2f us per %s\n",
            nerr, cpu_u, cpu_s, cpu_per, opt.mode == M_VIEWERS ? "message" : "ok request");
    fwrite(tp_buf_ptr(&j), 1, tp_buf_size(&j), stdout);
    fflush(stdout);
    if (opt.json_file != NULL) {
        FILE *f = fopen(opt.json_file, "a");
        if (f != NULL) {
            fwrite(tp_buf_ptr(&j), 1, tp_buf_size(&j), f);
            fclose(f);
        }
    }
    tp_buf_deinit(&j);
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
        O_BANDS,
        O_STAKE,
        O_MIN_STAKE,
        O_MAX_STAKE,
        O_BUCKETS,
        O_SCRIPT,
        O_JSON,
        O_LABEL,
        O_CPU_PID
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
        {"bands", 1, 0, O_BANDS},
        {"stake", 1, 0, O_STAKE},
        {"min-stake", 1, 0, O_MIN_STAKE},
        {"max-stake", 1, 0, O_MAX_STAKE},
        {"buckets", 1, 0, O_BUCKETS},
        {"script", 1, 0, O_SCRIPT},
        {"json", 1, 0, O_JSON},
        {"label", 1, 0, O_LABEL},
        {"cpu-pid", 1, 0, O_CPU_PID},
        {"quiet", 0, 0, 'q'},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:c:r:d:w:u:t:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case O_REDIS_HOST:
            opt.redis_host = optarg;
            break;
        case O_REDIS_PORT:
            opt.redis_port = atoi(optarg);
            break;
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'w':
            opt.warmup = atof(optarg);
            break;
        case O_DRAIN:
            opt.drain = atof(optarg);
            break;
        case O_PIPELINE:
            opt.pipeline = atoi(optarg);
            break;
        case O_CONNECT_RATE:
            opt.connect_rate = atof(optarg);
            break;
        case 'u':
            opt.users_create = atoi(optarg);
            break;
        case 't':
            opt.tokens_file = optarg;
            break;
        case O_ROUND:
            opt.round_id = atoll(optarg);
            break;
        case O_BANDS:
            opt.bands = atoi(optarg);
            break;
        case O_STAKE:
            opt.stake = atoll(optarg);
            break;
        case O_MIN_STAKE:
            opt.min_stake = atoll(optarg);
            break;
        case O_MAX_STAKE:
            opt.max_stake = atoll(optarg);
            break;
        case O_BUCKETS:
            opt.buckets = atoi(optarg);
            break;
        case O_SCRIPT:
            opt.script = optarg;
            break;
        case O_JSON:
            opt.json_file = optarg;
            break;
        case O_LABEL:
            opt.label = optarg;
            break;
        case O_CPU_PID:
            if (!parse_cpu_watch(optarg)) {
                fprintf(stderr, "loadgen: bad --cpu-pid %s (NAME=PID[,PID...], at most 8)\n",
                        optarg);
                return 2;
            }
            break;
        case 'q':
            opt.quiet = true;
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
        if (strcmp(argv[optind], mode_names[i]) == 0)
            m = i;
    if (m < 0 || opt.conns < 1 || opt.duration <= 0 || opt.warmup < 0 || opt.pipeline < 1 ||
        opt.pipeline > RING || opt.rate < 0 || opt.buckets < 1 || opt.connect_rate <= 0) {
        fprintf(stderr, "loadgen: bad mode or option value (see --help)\n");
        return 2;
    }
    opt.mode = (enum mode)m;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    uint8_t rb[8];
    tp_random_bytes(rb, sizeof(rb));
    memcpy(&run_id, rb, sizeof(run_id));
    rng_state ^= run_id | 1;

    if (opt.mode != M_VIEWERS) {
        if (opt.users_create > 0)
            create_users();
        else if (opt.tokens_file != NULL)
            read_tokens();
        if (nusers == 0) {
            fprintf(stderr, "loadgen: bet modes need users: --users K or --tokens FILE\n");
            return 2;
        }
        if (opt.mode == M_USERS) {
            printf("{\"tool\":\"loadgen\",\"mode\":\"users\",\"users\":%d}\n", nusers);
            return 0;
        }
        if (opt.round_id < 0 || opt.bands <= 0)
            find_round();
        if (opt.mode == M_REDIS_BET)
            load_script();
    }

    loop = ev_default_loop(EVFLAG_AUTO);
    conns = tp_xcalloc((size_t)opt.conns, sizeof(*conns));
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        c->idx = i;
        c->fd = -1;
        c->st = C_DEAD;
        tp_buf_init(&c->in);
        tp_buf_init(&c->out);
        tp_buf_init(&c->frag);
        if (opt.mode != M_VIEWERS) {
            c->sched = tp_xmalloc(RING * sizeof(*c->sched));
            if (opt.mode == M_WS_BET) {
                c->done = tp_xcalloc(RING, 1);
                c->user = &users[i % nusers];
            }
        }
    }
    if (!opt.quiet)
        fprintf(stderr, "[loadgen] %s: opening %d connections\n", mode_names[opt.mode], opt.conns);
    ev_timer_init(&connect_timer, on_connect_timer, 0.0, 0.01);
    ev_timer_start(loop, &connect_timer);
    ev_run(loop, 0);
    report();
    return res.ok > 0 || (opt.mode == M_VIEWERS && res.msgs[0] > 0) ? 0 : 1;
}
