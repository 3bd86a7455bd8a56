/*
 * rawfanout: the physical reference for tickpool's viewers benchmarks (bench only, not part of
 * tickpool). A minimal epoll server that accepts WebSocket upgrades on loopback and, every
 * --tick-ms, writes one beat to every open socket: the same MessagePack `tick` map tickpool
 * sends (encoded by the server's own tp_protocol_tick, with `odds` for --bands bands and
 * pools and a price of the same magnitudes as during a bench run, so the frame has the same
 * size), with `ts` = the wall-clock ms at which the fan-out starts, so `loadgen viewers`
 * measures its lag and spread exactly as it does tickpool's.
 *
 * Nothing else is in the way: no Redis, no per-socket queue, no slicing, no timers per socket.
 * One write per socket per beat; a socket that could not take a whole frame keeps the rest
 * and skips beats until it is flushed (counted as dropped), which is what tickpool's
 * newest-wins queue does at best. --workers N forks N processes sharing the port with
 * SO_REUSEPORT (the kernel spreads connections like tickpool's workers); --tls serves wss with
 * the server's TLS module and a self-signed pair under --var-dir.
 *
 * --boundary-ms P (the boundaries scenario's reference): beats go on the wall clock's tick_ms
 * grid (`ts` = the grid time), and at every multiple T of P the beat of T is preceded, in the
 * same write, by the `round` pair tickpool announces at a boundary (round N+1 open with
 * opens_at = T and round N live with locks_at = T, each with the current pair, encoded by the
 * server's own tp_protocol_round, so the write has the same size), so `loadgen viewers` times
 * its arrival after T exactly as it does tickpool's. A socket still flushing an older write
 * gets the pair queued behind it (a `round` is never dropped), never a skipped beat's bytes.
 * Each process prints one `boundary` line per T on stderr: when its walk started and when its
 * last socket was written, µs after T. No T is skipped: a timer late by more than P (a stalled
 * process) writes the pairs of every T it missed, oldest first, with its next beat (up to 16:
 * more is a step of the wall clock, and the summary line counts those skipped).
 *
 * Prints one summary line per process on stderr at exit (SIGTERM/SIGINT).
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/game/game_round.h"
#include "tickpool/net/io.h"
#include "tickpool/net/tls.h"
#include "tickpool/stream/protocol.h"

#define REQ_MAX 4096 /* an upgrade request larger than this is refused */
/* Boundaries one beat catches up at most: more missed is a step of the wall clock, not a stall. */
#define CATCHUP_MAX 16

struct opt {
    int port, tick_ms, workers, bands, max_conns, boundary_ms;
    bool tls;
    const char *var_dir;
};
static struct opt opt = {.tick_ms = 100, .workers = 1, .bands = 5, .max_conns = 65536};

enum cstate { C_FREE, C_TLS, C_UPGRADE, C_OPEN };

struct conn {
    enum cstate st;
    struct tp_io io;
    size_t req_len;
    char *req;         /* upgrade request bytes until the 101 goes out */
    struct tp_buf out; /* unwritten rest of the 101 or of a beat */
    bool want_out;     /* EPOLLOUT armed */
};

static struct conn *conns; /* indexed by fd */
static int *open_fds, nopen;
static int ep;
static struct tp_tls_ctx *tls_ctx;
static volatile sig_atomic_t stop;
static uint64_t beats, writes, dropped, partial, boundaries, bounds_skipped;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
    return wall_us() / 1000;
}

/* --- Connections --- */

static void arm(int fd, bool out)
{
    struct conn *c = &conns[fd];
    if (c->want_out == out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0u), .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    c->want_out = out;
}

static void conn_close(int fd)
{
    struct conn *c = &conns[fd];
    if (c->st == C_OPEN) {
        for (int i = 0; i < nopen; i++) {
            if (open_fds[i] == fd) {
                open_fds[i] = open_fds[--nopen];
                break;
            }
        }
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    tp_io_deinit(&c->io);
    close(fd);
    free(c->req);
    tp_buf_deinit(&c->out);
    memset(c, 0, sizeof(*c));
}

/* Writes what c->out holds; false when the socket failed (closed by then). */
static bool flush_out(int fd)
{
    struct conn *c = &conns[fd];
    while (tp_buf_size(&c->out) > 0) {
        ssize_t n = tp_io_write(&c->io, tp_buf_ptr(&c->out), tp_buf_size(&c->out));
        writes++;
        if (n > 0) {
            tp_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n == TP_IO_WANT_WRITE || n == TP_IO_WANT_READ) {
            arm(fd, n == TP_IO_WANT_WRITE);
            return true;
        }
        conn_close(fd);
        return false;
    }
    arm(fd, false);
    return true;
}

/* Answers a complete upgrade request with 101 (Sec-WebSocket-Accept from its key). */
static void upgrade(int fd)
{
    struct conn *c = &conns[fd];
    const char *k = strcasestr(c->req, "\r\nsec-websocket-key:");
    if (k == NULL) {
        conn_close(fd);
        return;
    }
    k += 20;
    while (*k == ' ')
        k++;
    size_t kl = strcspn(k, " \r\n");
    char cat[128];
    if (kl == 0 || kl > 64) {
        conn_close(fd);
        return;
    }
    snprintf(cat, sizeof(cat), "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)kl, k);
    uint8_t sha[TP_SHA1_LEN];
    tp_sha1(cat, strlen(cat), sha);
    char acc[64];
    tp_base64_encode(sha, sizeof(sha), acc, sizeof(acc));
    tp_buf_printf(
        &c->out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: tickpool.v1\r\n\r\n",
        acc);
    free(c->req);
    c->req = NULL;
    c->st = C_OPEN;
    open_fds[nopen++] = fd;
    flush_out(fd);
}

static void on_readable(int fd)
{
    struct conn *c = &conns[fd];
    if (c->st == C_TLS) {
        int rc = tp_io_handshake(&c->io);
        if (rc == 0)
            c->st = C_UPGRADE;
        else if (rc == TP_IO_WANT_READ || rc == TP_IO_WANT_WRITE)
            arm(fd, rc == TP_IO_WANT_WRITE);
        else
            conn_close(fd);
        if (rc != 0)
            return;
    }
    char buf[4096];
    for (;;) {
        ssize_t n = tp_io_read(&c->io, buf, sizeof(buf));
        if (n == TP_IO_WANT_READ || n == TP_IO_WANT_WRITE)
            return;
        if (n <= 0) {
            conn_close(fd);
            return;
        }
        if (c->st != C_UPGRADE)
            continue; /* viewers only answer pings, which we never send: discard */
        if (c->req_len + (size_t)n >= REQ_MAX) {
            conn_close(fd);
            return;
        }
        memcpy(c->req + c->req_len, buf, (size_t)n);
        c->req_len += (size_t)n;
        c->req[c->req_len] = 0;
        if (strstr(c->req, "\r\n\r\n") != NULL) {
            upgrade(fd);
            return;
        }
    }
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (fd >= opt.max_conns) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = &conns[fd];
        memset(c, 0, sizeof(*c));
        tp_buf_init(&c->out);
        c->req = tp_xmalloc(REQ_MAX);
        c->st = C_UPGRADE;
        tp_io_plain_init(&c->io, fd);
        if (tls_ctx != NULL) {
            if (tp_tls_io_init(&c->io, tls_ctx, fd) != 0) {
                free(c->req);
                close(fd);
                continue;
            }
            c->st = C_TLS;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (c->st == C_TLS)
            on_readable(fd);
    }
}

/* --- The beat --- */

/* Appends `msg` as one unmasked binary WebSocket frame. */
static void append_frame(struct tp_buf *frame, const struct tp_buf *msg)
{
    size_t n = tp_buf_size(msg);
    uint8_t hdr[4] = {0x82, (uint8_t)n};
    TP_ASSERT(n < 65536);
    if (n >= 126) {
        hdr[1] = 126;
        hdr[2] = (uint8_t)(n >> 8);
        hdr[3] = (uint8_t)n;
    }
    tp_buf_append(frame, hdr, n >= 126 ? 4 : 2);
    tp_buf_append(frame, tp_buf_ptr(msg), n);
}

/* A round as the leader announces it at a boundary, of a bench run's magnitudes: the config's
 * default four edges (five bands), stakes and rake, pools summed, a lock price once live. */
static void bench_round(struct tp_game_round *r, int64_t id, enum tp_round_state st,
                        int64_t opens_at, int64_t phase_ms)
{
    static const int edges[] = {-10, -3, 3, 10};
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->state = st;
    r->t = (struct tp_round_times){opens_at, opens_at + phase_ms, opens_at + 2 * phase_ms};
    snprintf(r->seed_hash, sizeof(r->seed_hash), "%064" PRIx64, (uint64_t)id * 2654435761u);
    r->has_lock = st == TP_ROUND_LIVE;
    r->lock_price = 6500000 + id % 1000;
    r->winning_band = -1;
    memcpy(r->edges, edges, sizeof(edges));
    r->n_edges = 4;
    r->rake_bps = 300;
    r->min_stake = 100;
    r->max_stake = 100000;
    r->vol_ppb = 800000;
    r->betting_ms = phase_ms;
    r->tick_ms = opt.tick_ms;
    r->has_pools = true;
    for (int i = 0; i < 5; i++)
        r->pools[i] = 150000 + (id * 100 + i * 700) % 20000;
}

/* The boundary T's pair, as two frames: round N+1 opened at T, round N live from T. */
static void append_pair(struct tp_buf *frame, int64_t t_ms)
{
    int64_t n = t_ms / opt.boundary_ms;
    struct tp_game_round open, live;
    bench_round(&open, n + 1, TP_ROUND_OPEN, t_ms, opt.boundary_ms);
    bench_round(&live, n, TP_ROUND_LIVE, t_ms - opt.boundary_ms, opt.boundary_ms);
    struct tp_buf msg;
    tp_buf_init(&msg);
    tp_protocol_round(&msg, &open, &open, &live);
    append_frame(frame, &msg);
    tp_buf_reset(&msg);
    tp_protocol_round(&msg, &live, &open, &live);
    append_frame(frame, &msg);
    tp_buf_deinit(&msg);
}

/* Writes `frame` to every open socket, one write each. A socket still flushing an older write
 * skips a beat (newest wins); one that carries a boundary's pair is queued behind it. */
static void fan_out(const struct tp_buf *frame, bool pair)
{
    /* Walk a copy: a failed write closes the socket and reorders open_fds. */
    int cnt = nopen;
    int *fds = tp_xmalloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(*fds));
    memcpy(fds, open_fds, (size_t)cnt * sizeof(*fds));
    for (int i = 0; i < cnt; i++) {
        int fd = fds[i];
        struct conn *c = &conns[fd];
        if (c->st != C_OPEN)
            continue;
        if (tp_buf_size(&c->out) > 0) {
            if (pair) /* behind the older write: the socket gets it once flushed */
                tp_buf_append(&c->out, tp_buf_ptr(frame), tp_buf_size(frame));
            else
                dropped++; /* still writing an older one: this beat is skipped, newest wins */
            continue;
        }
        ssize_t w = tp_io_write(&c->io, tp_buf_ptr(frame), tp_buf_size(frame));
        writes++;
        if (w == (ssize_t)tp_buf_size(frame))
            continue;
        if (w > 0 || w == TP_IO_WANT_WRITE || w == TP_IO_WANT_READ) {
            partial++;
            size_t done = w > 0 ? (size_t)w : 0;
            tp_buf_append(&c->out, tp_buf_ptr(frame) + done, tp_buf_size(frame) - done);
            arm(fd, true);
            continue;
        }
        conn_close(fd);
    }
    free(fds);
}

/* One beat with `ts`, preceded in the same write by the pair of every boundary T from `first_ms`
 * to `last_ms` (multiples of --boundary-ms; none when first_ms > last_ms), oldest first, each
 * logged against its own T. Pools and price of the magnitudes a bench run reaches (200 bets/s of
 * 100 over ~40 s spread over the bands; a price in cents around 65,000.00), moving every beat like
 * the real ones. */
static void beat(int64_t ts, int64_t first_ms, int64_t last_ms)
{
    static struct tp_protocol_odds odds = {.round_id = 2, .rake_bps = 300};
    static int64_t price = 6500000;
    static uint64_t k;
    odds.n = opt.bands;
    for (int i = 0; i < opt.bands; i++)
        odds.pools[i] = 150000 + (int64_t)((k * 100 + (uint64_t)i * 700) % 20000);
    price += (int64_t)(k % 7) - 3;
    k++;
    struct tp_buf msg, frame;
    tp_buf_init(&msg);
    tp_buf_init(&frame);
    bool pairs = first_ms <= last_ms;
    for (int64_t t = first_ms; pairs && t <= last_ms; t += opt.boundary_ms)
        append_pair(&frame, t);
    tp_protocol_tick(&msg, ts, price, &odds);
    append_frame(&frame, &msg);
    beats++;
    int64_t start_us = wall_us();
    fan_out(&frame, pairs);
    int64_t written_us = wall_us();
    for (int64_t t = first_ms; pairs && t <= last_ms; t += opt.boundary_ms) {
        boundaries++;
        fprintf(stderr,
                "rawfanout[%d] boundary t=%" PRId64 " sockets=%d bytes=%zu start_us=%" PRId64
                " written_us=%" PRId64 "\n",
                (int)getpid(), t, nopen, tp_buf_size(&frame), start_us - t * 1000,
                written_us - t * 1000);
    }
    tp_buf_deinit(&msg);
    tp_buf_deinit(&frame);
}

/* The timer fired: without --boundary-ms a beat stamped now; with it, the beat of the grid time
 * just passed, with the pair of every boundary since the last beat. A late timer sends one beat,
 * not a burst (newest wins), but never skips a boundary: one late by more than a boundary period
 * (the process stalled) writes each boundary it missed, oldest first, in that beat's write, so
 * each is timed late from its own T, as a viewer of tickpool would see it, rather than left out
 * of the reference's figures. Only past CATCHUP_MAX missed boundaries (the wall clock stepped
 * forward) are the older ones skipped, counted in the summary line. */
static void on_timer(void)
{
    static int64_t last_bound;
    if (opt.boundary_ms == 0) {
        beat(wall_ms(), 1, 0);
        return;
    }
    int64_t now = wall_ms();
    int64_t grid = now - now % opt.tick_ms, bound = now - now % opt.boundary_ms;
    if (last_bound == 0) /* the first beat: boundaries are counted from the next one on */
        last_bound = bound;
    int64_t first = last_bound + opt.boundary_ms;
    if (bound - first >= CATCHUP_MAX * opt.boundary_ms) {
        bounds_skipped += (uint64_t)((bound - first) / opt.boundary_ms + 1 - CATCHUP_MAX);
        first = bound - (CATCHUP_MAX - 1) * opt.boundary_ms;
    }
    beat(grid, first, bound);
    if (bound > last_bound)
        last_bound = bound;
}

/* --- Process --- */

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
        perror("rawfanout: bind/listen");
        exit(1);
    }
    return fd;
}

static int serve(void)
{
    if (opt.tls) {
        struct tp_config_server cfg = {0};
        char err[256];
        snprintf(cfg.var_dir, sizeof(cfg.var_dir), "%s", opt.var_dir);
        if (tp_tls_ctx_new(&cfg, &tls_ctx, err, sizeof(err)) != 0) {
            fprintf(stderr, "rawfanout: TLS: %s\n", err);
            return 1;
        }
    }
    conns = tp_xcalloc((size_t)opt.max_conns, sizeof(*conns));
    open_fds = tp_xcalloc((size_t)opt.max_conns, sizeof(*open_fds));
    ep = epoll_create1(EPOLL_CLOEXEC);
    int lfd = listen_on(opt.port);
    /* With --boundary-ms the beats go on the wall clock's grid, as tickpool's boundaries do. */
    bool grid = opt.boundary_ms > 0;
    int tfd = timerfd_create(grid ? CLOCK_REALTIME : CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {opt.tick_ms / 1000, (opt.tick_ms % 1000) * 1000000L},
                             .it_value = {opt.tick_ms / 1000, (opt.tick_ms % 1000) * 1000000L}};
    if (grid) {
        int64_t first = (wall_ms() / opt.tick_ms + 1) * opt.tick_ms;
        its.it_value = (struct timespec){first / 1000, (first % 1000) * 1000000L};
    }
    timerfd_settime(tfd, grid ? TFD_TIMER_ABSTIME : 0, &its, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                on_accept(lfd);
            } else if (fd == tfd) {
                uint64_t exp;
                if (read(tfd, &exp, sizeof(exp)) == (ssize_t)sizeof(exp))
                    on_timer();
            } else if (conns[fd].st != C_FREE) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    conn_close(fd);
                    continue;
                }
                if (conns[fd].st == C_TLS) {
                    on_readable(fd); /* the handshake wanted either direction */
                    continue;
                }
                if ((evs[i].events & EPOLLOUT) && !flush_out(fd))
                    continue;
                if (evs[i].events & EPOLLIN)
                    on_readable(fd);
            }
        }
    }
    fprintf(stderr,
            "rawfanout[%d]: %d sockets open, %" PRIu64 " beats, %" PRIu64 " writes, %" PRIu64
            " partial, %" PRIu64 " dropped, %" PRIu64 " boundaries (%" PRIu64 " skipped)\n",
            (int)getpid(), nopen, beats, writes, partial, dropped, boundaries, bounds_skipped);
    tp_tls_ctx_free(tls_ctx);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rawfanout -p PORT [--tick-ms MS] [--boundary-ms MS] [--workers N] [--bands N]\n"
            "       [--tls --var-dir DIR] [--max-conns N]\n"
            "\n"
            "The reference for bench/run's viewers scenarios: accepts WebSocket upgrades on\n"
            "127.0.0.1:PORT and writes tickpool's beat (a `tick` with odds) to every socket\n"
            "every --tick-ms [100]. --workers N processes share the port (SO_REUSEPORT) [1];\n"
            "--bands N odds bands [5]; --tls serves wss with a self-signed pair made under\n"
            "--var-dir DIR/tls/. --boundary-ms P (a multiple of --tick-ms, up to 3600000; the\n"
            "boundaries scenario's reference): beats on the wall clock's tick grid, and at\n"
            "every multiple T of P the `round` pair of a boundary at T (round N+1 open, N\n"
            "live) in the same write as the beat of T; a `boundary` line per T on stderr\n"
            "(walk start and last write, us after T) [0: no boundaries]. Runs until SIGTERM or\n"
            "SIGINT, then prints a summary per process on stderr.\n");
}

/* A whole decimal number in [lo, hi], nothing else (tp_parse_i64: no trailing bytes). */
static bool int_arg(const char *s, long lo, long hi, int *out)
{
    int64_t v;
    if (!tp_parse_i64(s, &v) || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"port", 1, 0, 'p'},      {"tick-ms", 1, 0, 't'},
        {"workers", 1, 0, 'w'},   {"bands", 1, 0, 'b'},
        {"tls", 0, 0, 's'},       {"var-dir", 1, 0, 'v'},
        {"max-conns", 1, 0, 'm'}, {"boundary-ms", 1, 0, 'B'},
        {"help", 0, 0, 'h'},      {0, 0, 0, 0},
    };
    bool bad = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "p:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'p':
            bad |= !int_arg(optarg, 1, 65535, &opt.port);
            break;
        case 't':
            bad |= !int_arg(optarg, 1, 60000, &opt.tick_ms);
            break;
        case 'w':
            bad |= !int_arg(optarg, 1, 64, &opt.workers);
            break;
        case 'b':
            bad |= !int_arg(optarg, 1, TP_ROUND_MAX_BANDS, &opt.bands);
            break;
        case 's':
            opt.tls = true;
            break;
        case 'v':
            opt.var_dir = optarg;
            break;
        case 'm':
            bad |= !int_arg(optarg, 16, 1 << 24, &opt.max_conns);
            break;
        case 'B':
            bad |= !int_arg(optarg, 0, 3600000, &opt.boundary_ms);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (bad || optind != argc || opt.port == 0 || (opt.tls && opt.var_dir == NULL) ||
        opt.boundary_ms % opt.tick_ms != 0) {
        fprintf(stderr, "rawfanout: bad or missing option (see --help)\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (opt.workers == 1)
        return serve();
    pid_t kids[64];
    for (int i = 0; i < opt.workers; i++) {
        kids[i] = fork();
        if (kids[i] == 0)
            return serve();
        if (kids[i] < 0) {
            perror("rawfanout: fork");
            opt.workers = i;
            stop = 1;
            break;
        }
    }
    while (!stop)
        pause();
    for (int i = 0; i < opt.workers; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < opt.workers; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}
