/*
 * Worker processes (see tickpool/net/worker.h).
 *
 * Each worker binds its own listeners with SO_REUSEPORT, so the kernel spreads new connections
 * across workers and no accept lock or fd passing is needed (lwan, h2o with reuseport). The
 * loop is libev on epoll; the ev_prepare hook runs deferred connection work (async replies,
 * pipelined requests, batched WebSocket output) and frees connections flagged
 * TP_CONN_CLOSE_ASAP, always outside any connection's own callback.
 */
#include "tickpool/net/worker.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/loop_watch.h"
#include "tickpool/net/router.h"
#include "tickpool/net/static.h"
#include "tickpool/net/tls.h"

#include <ev.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HOOKS 32
#define ACCEPTS_PER_EVENT 64
#define LISTEN_BACKLOG 1024

struct tp_listener {
    struct tp_worker *w;
    int fd;
    bool tls;
    ev_io io;
};

struct tp_worker {
    struct tp_conn_host host; /* loop, config, router, TLS, limits, hooks, connection lists */
    int index;
    struct tp_static *stat;
    struct tp_listener listeners[2];
    int nlisteners;
    ev_timer accept_retry; /* re-enables accepting after EMFILE/ENFILE */
    ev_prepare prepare;    /* deferred work and frees, before the loop blocks */
    ev_idle more;          /* active while writes wait for their next slice: no blocking */
    ev_signal sigterm, sigint;
    ev_timer drain_timer; /* bounds the drain at server.shutdown_timeout */
    int drain_holds;      /* replies the drain waits for (tp_worker_drain_hold) */
    void *slots[TP_WORKER_MAX_SLOTS];
};

struct hook {
    tp_worker_hook fn;
    void *ud;
};
static struct hook init_hooks[MAX_HOOKS], drain_hooks[MAX_HOOKS], exit_hooks[MAX_HOOKS];
static int n_init_hooks, n_drain_hooks, n_exit_hooks;

void tp_worker_on_init(tp_worker_hook fn, void *ud)
{
    TP_ASSERT(n_init_hooks < MAX_HOOKS);
    init_hooks[n_init_hooks++] = (struct hook){fn, ud};
}

void tp_worker_on_drain(tp_worker_hook fn, void *ud)
{
    TP_ASSERT(n_drain_hooks < MAX_HOOKS);
    drain_hooks[n_drain_hooks++] = (struct hook){fn, ud};
}

void tp_worker_on_exit(tp_worker_hook fn, void *ud)
{
    TP_ASSERT(n_exit_hooks < MAX_HOOKS);
    exit_hooks[n_exit_hooks++] = (struct hook){fn, ud};
}

/* --- Listeners --- */

/* Opens a non-blocking SO_REUSEPORT listener on bind:port. Returns the fd or -1 (err set). */
static int open_listener(const char *bind_addr, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(bind_addr[0] ? bind_addr : NULL, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "server.bind '%s': %s", bind_addr, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
            break;
        snprintf(err, errlen, "cannot listen on %s:%d: %s", bind_addr, port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void set_accepting(struct tp_worker *w, bool on)
{
    for (int i = 0; i < w->nlisteners; i++) {
        if (on)
            ev_io_start(w->host.loop, &w->listeners[i].io);
        else
            ev_io_stop(w->host.loop, &w->listeners[i].io);
    }
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_worker *w = t->data;
    if (!w->host.draining)
        set_accepting(w, true);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_listener *l = io->data;
    struct tp_worker *w = l->w;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment instead of spinning on a
                 * level-triggered listener that stays readable. */
                tp_log_warn("worker", "accept failed, pausing 100 ms\terr=\"%s\"", strerror(errno));
                set_accepting(w, false);
                ev_timer_stop(w->host.loop, &w->accept_retry);
                ev_timer_set(&w->accept_retry, 0.1, 0.0);
                ev_timer_start(w->host.loop, &w->accept_retry);
            }
            return;
        }
        if (w->host.nconns >= (size_t)w->host.cfg->server.max_connections) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (tp_conn_new(&w->host, fd, l->tls) == NULL)
            close(fd);
    }
}

/* --- Loop hooks, signals, drain --- */

/* Nothing to do: being active keeps the loop from blocking until the writes are done. */
static void on_more(struct ev_loop *loop, ev_idle *i, int revents)
{
    (void)loop, (void)i, (void)revents;
}

bool tp_worker_output_pending(const struct tp_worker *w)
{
    return tp_conn_has_dirty(&w->host) || tp_conn_fanout_pending(&w->host);
}

struct tp_conn_bcast_mark tp_worker_bcast_mark(const struct tp_worker *w)
{
    return tp_conn_bcast_mark(&w->host);
}

bool tp_worker_bcast_out(const struct tp_worker *w, struct tp_conn_bcast_mark m)
{
    return tp_conn_bcast_out(&w->host, m);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    struct tp_worker *w = p->data;
    /* A fan-out to thousands of sockets is written in slices, with the loop's I/O (bets, Redis
     * replies, new connections) served in between. The dirty list first (answers, `round`
     * changes, anything queued at once), then, with what is left of the slice, the beats still
     * to be handed out (conn_fanout.c), which coalesce meanwhile (newest wins). */
    int64_t start = tp_mono_ns();
    bool more = tp_conn_run_dirty(&w->host, TP_WORKER_SLICE_NS);
    if (!more) {
        int64_t left = TP_WORKER_SLICE_NS - (tp_mono_ns() - start);
        more = tp_conn_run_fanout(&w->host, TP_MAX(left, 1));
    }
    /* TLS handshakes of a storm of new sockets, likewise within a budget per iteration. */
    if (tp_conn_run_handshakes(&w->host) || more)
        ev_idle_start(loop, &w->more);
    else
        ev_idle_stop(loop, &w->more);
    tp_conn_reap(&w->host);
    if (w->host.draining && w->host.nconns == 0 && w->drain_holds == 0)
        ev_break(loop, EVBREAK_ALL);
}

void tp_worker_drain_hold(struct tp_worker *w)
{
    w->drain_holds++;
}

void tp_worker_drain_done(struct tp_worker *w)
{
    TP_ASSERT(w->drain_holds > 0);
    w->drain_holds--; /* the next prepare ends the loop if nothing else is left */
}

static void start_drain(struct tp_worker *w)
{
    if (w->host.draining)
        return;
    w->host.draining = true;
    tp_log_info("worker", "draining\tconnections=%zu", w->host.nconns);
    set_accepting(w, false);
    ev_timer_stop(w->host.loop, &w->accept_retry);
    for (int i = 0; i < w->nlisteners; i++) {
        close(w->listeners[i].fd);
        w->listeners[i].fd = -1;
    }
    w->nlisteners = 0;
    for (int i = 0; i < n_drain_hooks; i++)
        drain_hooks[i].fn(w, drain_hooks[i].ud);
    tp_conn_drain_all(&w->host);
    ev_timer_set(&w->drain_timer, w->host.cfg->server.shutdown_timeout_ms / 1000.0, 0.0);
    ev_timer_start(w->host.loop, &w->drain_timer);
}

static void on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)loop;
    (void)revents;
    start_drain(s->data);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct tp_worker *w = t->data;
    tp_log_warn("worker", "drain timed out, closing remaining connections\tconnections=%zu",
                w->host.nconns);
    ev_break(loop, EVBREAK_ALL);
}

/* Pins the process to the index-th CPU it may run on (wrapping), so workers spread over cores
 * and keep their caches (server.pin_workers; the threads the worker starts later, Postgres
 * writer and reader, password hashing, inherit the CPU). Returns the CPU, or -1 when it could
 * not pin: harmless, only logged (the "ready" line's cpu=-1). */
static int pin_cpu(int index)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return -1;
    int n = CPU_COUNT(&allowed);
    if (n <= 0)
        return -1;
    int want = index % n, seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed))
            continue;
        if (seen++ == want) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof(one), &one) != 0)
                return -1;
            return cpu;
        }
    }
    return -1;
}

static void add_listener(struct tp_worker *w, int port, bool tls)
{
    char err[256];
    int fd = open_listener(w->host.cfg->server.bind, port, err, sizeof(err));
    if (fd < 0) {
        tp_log_error("worker", "%s", err);
        exit(TP_WORKER_EXIT_FATAL);
    }
    struct tp_listener *l = &w->listeners[w->nlisteners++];
    l->w = w;
    l->fd = fd;
    l->tls = tls;
    ev_io_init(&l->io, on_accept, fd, EV_READ);
    l->io.data = l;
}

void tp_worker_main(const struct tp_config *cfg, int index, int master_pid)
{
    /* Die with the master: a worker must never outlive it (STYLE: nothing outlives scripts/up).
     * SIGTERM rather than SIGKILL so an orphan still drains. Re-check the parent afterwards in
     * case the master died before prctl took effect. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master_pid)
        _exit(0);

    char role[32];
    snprintf(role, sizeof(role), "worker.%d", index);
    enum tp_log_level lvl = TP_LOG_INFO;
    tp_log_level_parse(cfg->log.level, &lvl);
    tp_log_setup(lvl, role);
    tp_metrics_attach(index + 1);
    /* -1 unpinned: the scheduler moves the worker, e.g. off a CPU another process keeps busy. */
    int cpu = cfg->server.pin_workers ? pin_cpu(index) : -1;

    struct tp_worker *w = tp_xcalloc(1, sizeof(*w));
    w->host.worker = w;
    w->host.cfg = cfg;
    w->index = index;
    w->host.loop = ev_loop_new(EVBACKEND_EPOLL);
    if (w->host.loop == NULL) {
        tp_log_error("worker", "cannot create an epoll event loop");
        exit(TP_WORKER_EXIT_FATAL);
    }
    w->host.http_limits.max_header = TP_HTTP_MAX_HEADER_BYTES;
    w->host.http_limits.max_body = cfg->server.max_body;
    w->host.ws_limits.max_message = cfg->limits.ws_max_message;
    w->host.ws_limits.max_queue = cfg->limits.ws_send_queue;
    w->host.ws_limits.partial_budget = cfg->limits.ws_partial_budget;

    w->host.router = tp_router_new();
    char err[512];
    w->stat = tp_static_new(cfg->server.web_root, err, sizeof(err));
    if (w->stat != NULL)
        tp_router_set_fallback(w->host.router, tp_static_handle, w->stat);
    else if (index == 0)
        tp_log_warn("worker", "static files disabled\treason=\"%s\"", err);

    if (cfg->server.https_port != 0) {
        int r = tp_tls_ctx_new(&cfg->server, &w->host.tls, err, sizeof(err));
        if (r != 0) {
            tp_log_error("worker", "TLS setup failed: %s", err);
            exit(TP_WORKER_EXIT_FATAL);
        }
    }
    if (cfg->server.http_port != 0)
        add_listener(w, cfg->server.http_port, false);
    if (cfg->server.https_port != 0)
        add_listener(w, cfg->server.https_port, true);

    ev_idle_init(&w->more, on_more);
    ev_prepare_init(&w->prepare, on_prepare);
    w->prepare.data = w;
    ev_prepare_start(w->host.loop, &w->prepare);
    tp_loop_watch_start(w->host.loop); /* debug level only */
    ev_signal_init(&w->sigterm, on_signal, SIGTERM);
    w->sigterm.data = w;
    ev_signal_start(w->host.loop, &w->sigterm);
    ev_signal_init(&w->sigint, on_signal, SIGINT);
    w->sigint.data = w;
    ev_signal_start(w->host.loop, &w->sigint);
    ev_timer_init(&w->drain_timer, on_drain_timeout, 0.0, 0.0);
    w->drain_timer.data = w;
    ev_timer_init(&w->accept_retry, on_accept_retry, 0.0, 0.0);
    w->accept_retry.data = w;

    for (int i = 0; i < n_init_hooks; i++)
        init_hooks[i].fn(w, init_hooks[i].ud);

    /* The fan-out's beats to plain sockets through io_uring, one system call per batch instead
     * of one send() per socket, when the kernel allows it (bench/README.md "Viewers"). What
     * refuses it (the kernel, kernel.io_uring_disabled, a seccomp profile) refuses every worker:
     * worker 0 warns, the others say it at debug; each one's `ready` line says which it uses. */
    if (strcmp(cfg->server.fanout_io_uring, "off") != 0 &&
        tp_conn_fanout_setup(&w->host, TP_WORKER_FANOUT_BATCH, err, sizeof(err)) != 0)
        tp_log(index == 0 ? TP_LOG_WARN : TP_LOG_DEBUG, "worker",
               "fan-out with one send() per socket: io_uring unavailable\treason=\"%s\"", err);

    set_accepting(w, true);
    tp_log_info("worker", "ready\tcpu=%d http_port=%d https_port=%d fanout=%s", cpu,
                cfg->server.http_port, cfg->server.https_port,
                tp_conn_fanout_io_uring(&w->host) ? "io_uring" : "send");
    ev_run(w->host.loop, 0);

    /* Drained or timed out: whatever is left is closed now. */
    tp_conn_close_all_and_reap(&w->host);
    for (int i = n_exit_hooks - 1; i >= 0; i--)
        exit_hooks[i].fn(w, exit_hooks[i].ud);
    tp_tls_ctx_free(w->host.tls);
    tp_static_free(w->stat);
    tp_router_free(w->host.router);
    ev_loop_destroy(w->host.loop);
    tp_log_info("worker", "exited");
    free(w);
    exit(0);
}

/* --- Accessors and WebSocket fan-out --- */

struct ev_loop *tp_worker_loop(struct tp_worker *w)
{
    return w->host.loop;
}

struct tp_router *tp_worker_router(struct tp_worker *w)
{
    return w->host.router;
}

const struct tp_config *tp_worker_config(const struct tp_worker *w)
{
    return w->host.cfg;
}

int tp_worker_index(const struct tp_worker *w)
{
    return w->index;
}

bool tp_worker_is_draining(const struct tp_worker *w)
{
    return w->host.draining;
}

/* Slot ids are handed out in the master before fork (or in a test): a worker inherits the
 * count, and only the worker's own loop thread reads or sets its slots. */
static size_t n_slots;

size_t tp_worker_slot_new(void)
{
    TP_ASSERT(n_slots < TP_WORKER_MAX_SLOTS);
    return n_slots++;
}

void tp_worker_slot_set(struct tp_worker *w, size_t slot, void *p)
{
    TP_ASSERT(slot < n_slots);
    w->slots[slot] = p;
}

void *tp_worker_slot_get(const struct tp_worker *w, size_t slot)
{
    TP_ASSERT(slot < n_slots);
    return w->slots[slot];
}

void tp_worker_set_ws_hooks(struct tp_worker *w, const struct tp_conn_ws_hooks *hooks, void *ud)
{
    w->host.ws_hooks = *hooks;
    w->host.ws_ud = ud;
}

struct broadcast {
    struct tp_ws_frame *f;
    size_t n;
};

static void broadcast_one(struct tp_conn *c, void *ud)
{
    struct broadcast *b = ud;
    if (tp_conn_ws_send_frame(c, b->f) == 0)
        b->n++;
}

size_t tp_worker_broadcast(struct tp_worker *w, struct tp_ws_frame *f)
{
    struct broadcast b = {f, 0};
    tp_conn_foreach_ws(&w->host, broadcast_one, &b);
    return b.n;
}

void tp_worker_fanout(struct tp_worker *w, struct tp_ws_frame *f,
                      bool (*ready)(const struct tp_conn *c))
{
    tp_conn_fanout(&w->host, f, ready); /* the prepare hook starts it before the loop blocks */
}

bool tp_worker_fanout_hold(struct tp_worker *w, struct tp_ws_frame *f,
                           bool (*ready)(const struct tp_conn *c))
{
    return tp_conn_fanout_hold(&w->host, f, ready);
}

void tp_worker_fanout_release(struct tp_worker *w)
{
    tp_conn_fanout_release(&w->host);
}

void tp_worker_foreach_ws(struct tp_worker *w, void (*fn)(struct tp_conn *c, void *ud), void *ud)
{
    tp_conn_foreach_ws(&w->host, fn, ud);
}

size_t tp_worker_nconns(const struct tp_worker *w)
{
    return w->host.nconns;
}

size_t tp_worker_nws(const struct tp_worker *w)
{
    return w->host.nws;
}
