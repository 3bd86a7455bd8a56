/*
 * fanout_cost: what a worker's fan-out costs per socket-beat beyond the one `send` each socket
 * needs (bench only; bench/README.md "Viewers", session 11).
 *
 * One process, one thread: -n (5000) loopback TCP WebSockets, tickpool's connection code on a
 * private libev loop, upgraded with a real request, TCP_NODELAY as the worker sets it, each with
 * a session-sized block behind tp_conn_data that the `ready` test reads as the worker's
 * session_ready does (-R: no test). Each of -r (20) rounds hands one beat of -b (140) payload
 * bytes to every socket three times, in turn (which goes first rotates):
 *   tickpool  tp_conn_fanout + one unbudgeted tp_conn_run_fanout (the worker's walk), one
 *             send() per socket (server.fanout_io_uring = off),
 *   uring     the same walk with its sends batched through io_uring, -B (128, the worker's
 *             TP_WORKER_FANOUT_BATCH) per io_uring_enter (server.fanout_io_uring = auto),
 *   raw       one send() per socket of the same frame's bytes from an array of fds (what
 *             bench/rawfanout does per socket);
 * the client ends are drained after each pass, outside the timing. The thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID) of each pass per socket is printed per round, then the medians, the
 * medians of the rounds' differences to raw and each walk's ratio to raw. A busy machine slows
 * every pass alike: quote the differences and the ratios, not one side alone. io_uring's sends
 * run inline in this thread (the batch's start-up check requires it), so its CPU time holds them.
 *
 * `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=pass_tickpool
 * --toggle-collect=pass_uring --toggle-collect=pass_raw` counts the user-space instructions of each
 * pass (not the kernel's).
 */
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/router.h"
#include "tickpool/net/worker.h"
#include "tickpool/net/ws.h"

#include <ev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct sess {
    char state[192]; /* about a worker session's size: `ready` is a cache line of its own */
    bool ready;
};

static struct tp_config cfg;
static struct tp_conn_host host;
static int nsock = 5000;
static bool use_ready = true;
static int *srv_fd, *cli_fd;

static int64_t thread_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static bool ready(const struct tp_conn *c)
{
    const struct sess *s = tp_conn_data(c);
    return s != NULL && s->ready;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Reads and discards what every client end has received. */
static void drain(void)
{
    static char buf[65536];
    for (int i = 0; i < nsock; i++)
        while (recv(cli_fd[i], buf, sizeof(buf), 0) > 0) {
        }
}

/* Opens the sockets: connect, accept into tp_conn, send every upgrade request, then run the
 * loop until every connection is a WebSocket and every 101 is read. */
static void open_sockets(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        die("listen");
    srv_fd = tp_xcalloc((size_t)nsock, sizeof(int));
    cli_fd = tp_xcalloc((size_t)nsock, sizeof(int));
    const char req[] = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tickpool.v1\r\n\r\n";
    int one = 1;
    for (int i = 0; i < nsock; i++) {
        cli_fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (cli_fd[i] < 0 || connect(cli_fd[i], (struct sockaddr *)&a, sizeof(a)) != 0)
            die("connect");
        srv_fd[i] = accept(lfd, NULL, NULL);
        if (srv_fd[i] < 0)
            die("accept");
        fcntl(srv_fd[i], F_SETFL, O_NONBLOCK);
        setsockopt(srv_fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct tp_conn *c = tp_conn_new(&host, srv_fd[i], false);
        if (c == NULL)
            die("tp_conn_new");
        struct sess *s = tp_xcalloc(1, sizeof(*s));
        s->ready = true;
        tp_conn_set_data(c, s);
        if (send(cli_fd[i], req, sizeof(req) - 1, 0) != (ssize_t)sizeof(req) - 1)
            die("send upgrade");
        fcntl(cli_fd[i], F_SETFL, O_NONBLOCK);
    }
    close(lfd);
    int64_t end = tp_mono_ms() + 60000;
    while (host.nws < (size_t)nsock || tp_conn_has_dirty(&host)) {
        if (tp_mono_ms() > end) {
            fprintf(stderr, "fanout_cost: %zu of %d upgraded in 60 s\n", host.nws, nsock);
            exit(1);
        }
        ev_run(host.loop, EVRUN_NOWAIT);
        tp_conn_run_dirty(&host, 0);
    }
    usleep(100000);
    drain();
}

/* The two walks differ only in the host's setting: each checks it, which also keeps the compiler
 * from folding them into one function (callgrind counts each by its name). */
__attribute__((noinline)) static void pass_tickpool(struct tp_ws_frame *f)
{
    TP_ASSERT(!tp_conn_fanout_io_uring(&host));
    tp_conn_fanout(&host, f, use_ready ? ready : NULL);
    tp_conn_run_fanout(&host, 0);
}

__attribute__((noinline)) static void pass_uring(struct tp_ws_frame *f)
{
    TP_ASSERT(tp_conn_fanout_io_uring(&host));
    tp_conn_fanout(&host, f, use_ready ? ready : NULL);
    tp_conn_run_fanout(&host, 0);
}

/* The fan-out's sends: one send() each (batch 0) or batched through io_uring. */
static void use_batch(unsigned batch)
{
    char err[256];
    if (tp_conn_fanout_setup(&host, batch, err, sizeof(err)) != 0) {
        fprintf(stderr, "fanout_cost: io_uring unavailable: %s\n", err);
        exit(1);
    }
}

__attribute__((noinline)) static void pass_raw(const uint8_t *p, size_t n)
{
    for (int i = 0; i < nsock; i++)
        if (send(srv_fd[i], p, n, MSG_NOSIGNAL) != (ssize_t)n)
            die("raw send");
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int rounds = 20, bytes = 140, opt;
    unsigned batch = TP_WORKER_FANOUT_BATCH;
    while ((opt = getopt(argc, argv, "n:r:b:B:R")) != -1) {
        switch (opt) {
        case 'n':
            nsock = atoi(optarg);
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 'b':
            bytes = atoi(optarg);
            break;
        case 'B':
            batch = (unsigned)atoi(optarg);
            break;
        case 'R':
            use_ready = false;
            break;
        default:
            fprintf(stderr, "usage: fanout_cost [-n sockets (5000)] [-r rounds (20)] "
                            "[-b payload bytes (140)] [-B io_uring batch (128)] [-R]\n");
            return 2;
        }
    }
    if (nsock < 1 || rounds < 1 || bytes < 1 || bytes > 1024 || batch < 2 || batch > 4096 ||
        (batch & (batch - 1)) != 0)
        return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    tp_config_defaults(&cfg);
    host.cfg = &cfg;
    host.loop = ev_loop_new(EVBACKEND_EPOLL);
    host.http_limits.max_header = TP_HTTP_MAX_HEADER_BYTES;
    host.http_limits.max_body = 1024;
    host.ws_limits.max_message = 4096;
    host.ws_limits.max_queue = 64 * 1024;
    host.router = tp_router_new();
    open_sockets();

    uint8_t payload[1024];
    for (int i = 0; i < bytes; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    enum { TICKPOOL, URING, RAW, SIDES };
    int64_t *ns[SIDES], *diff[2];
    for (int k = 0; k < SIDES; k++)
        ns[k] = tp_xcalloc((size_t)rounds, sizeof(int64_t));
    for (int k = 0; k < 2; k++)
        diff[k] = tp_xcalloc((size_t)rounds, sizeof(int64_t));
    uint64_t batched = 0;
    printf("round\ttickpool_ns_per_socket\turing_ns_per_socket\traw_ns_per_socket\n");
    for (int r = 0; r < rounds; r++) {
        struct tp_ws_frame *f = tp_ws_frame_new(payload, (size_t)bytes, TP_WS_KIND_TICK);
        size_t n;
        const uint8_t *p = tp_ws_frame_bytes(f, &n);
        for (int k = 0; k < SIDES; k++) {
            int side = (k + r) % SIDES; /* rotate which goes first */
            use_batch(side == URING ? batch : 0);
            int64_t t0 = thread_ns();
            if (side == TICKPOOL)
                pass_tickpool(f);
            else if (side == URING)
                pass_uring(f);
            else
                pass_raw(p, n);
            ns[side][r] = (thread_ns() - t0) / nsock;
            if (side == URING)
                batched += tp_conn_fanout_batched(&host);
            drain();
        }
        tp_ws_frame_unref(f);
        diff[0][r] = ns[TICKPOOL][r] - ns[RAW][r];
        diff[1][r] = ns[URING][r] - ns[RAW][r];
        printf("%d\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\n", r, ns[TICKPOOL][r], ns[URING][r],
               ns[RAW][r]);
    }
    for (int k = 0; k < SIDES; k++)
        qsort(ns[k], (size_t)rounds, sizeof(int64_t), cmp_i64);
    for (int k = 0; k < 2; k++)
        qsort(diff[k], (size_t)rounds, sizeof(int64_t), cmp_i64);
    int64_t mt = ns[TICKPOOL][rounds / 2], mu = ns[URING][rounds / 2], mr = ns[RAW][rounds / 2];
    printf("median ns per socket-beat: tickpool (send) %" PRId64 ", tickpool (io_uring) %" PRId64
           ", raw %" PRId64 "; ratio to raw %.3f (send), %.3f (io_uring); io_uring/send %.3f; "
           "median of the rounds' differences to raw %" PRId64 " (send), %" PRId64
           " (io_uring) (%d sockets, %d rounds, %d-byte payload, batch %u, %" PRIu64
           " sends through io_uring of %" PRId64 ")\n",
           mt, mu, mr, mr > 0 ? (double)mt / (double)mr : 0.0,
           mr > 0 ? (double)mu / (double)mr : 0.0, mt > 0 ? (double)mu / (double)mt : 0.0,
           diff[0][rounds / 2], diff[1][rounds / 2], nsock, rounds, bytes, batch, batched,
           (int64_t)rounds * nsock);
    tp_conn_close_all_and_reap(&host);
    return 0;
}
