/* Unit tests for the sliced fan-out of droppable broadcasts (src/net/conn_fanout.c) over real
 * WebSocket connections on socketpairs and a private libev loop: slices of 16 sockets, beats
 * arriving between slices, a `round` queued at once ahead of the beats still to be handed out,
 * sockets not ready, beats taken along by the sockets a `round` is being written to, and sockets
 * freed under the walk's cursor. Every client must see its frames once each, in the order they
 * were handed out, the newest last. Each test runs twice: with one send() per socket, and with the
 * slice's sends batched through io_uring (tp_conn_fanout_setup), which has tests of its own for a
 * full socket, a partial write, a closed peer and a kernel that refuses io_uring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/metrics.h"
#include "tickpool/net/conn.h"
#include "tickpool/net/router.h"
#include "tickpool/net/ws.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "refuse_syscall.h"

enum { N = 64, SLICE = 16 /* visits between clock reads: a 1 ns budget visits 16 */ };

static struct tp_config cfg;
static struct tp_conn_host host;
static struct tp_conn *conns[N];
static int fds[N];
static int srv[N];      /* the server's end of socket i */
static char ready_flag; /* tp_conn_data of a ready socket */

static bool ready(const struct tp_conn *c)
{
    return tp_conn_data(c) == &ready_flag;
}

static int setup(void **state)
{
    (void)state;
    tp_config_defaults(&cfg);
    memset(&host, 0, sizeof(host));
    host.cfg = &cfg;
    host.loop = ev_loop_new(EVBACKEND_EPOLL);
    host.http_limits.max_header = TP_HTTP_MAX_HEADER_BYTES;
    host.http_limits.max_body = 1024;
    host.ws_limits.max_message = 4096;
    host.ws_limits.max_queue = 64 * 1024;
    host.router = tp_router_new();
    for (int i = 0; i < N; i++)
        fds[i] = -1;
    return 0;
}

/* The same, with the fan-out's sends batched through io_uring, 8 a batch: a slice of 16 visits
 * makes two batches, and a batch fills in the middle of a slice. */
enum { BATCH = 8 };

static int setup_uring(void **state)
{
    setup(state);
    char err[256];
    int r = tp_conn_fanout_setup(&host, BATCH, err, sizeof(err));
    if (r != 0)
        fprintf(stderr, "io_uring unavailable: %s\n", err);
    assert_int_equal(r, 0);
    assert_true(tp_conn_fanout_io_uring(&host));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    tp_conn_close_all_and_reap(&host);
    tp_router_free(host.router);
    ev_loop_destroy(host.loop);
    return 0;
}

/* Runs the loop until the client of socket i read the whole 101 answer. */
static void upgrade(int i)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    conns[i] = tp_conn_new(&host, sv[0], false);
    srv[i] = sv[0];
    assert_non_null(conns[i]);
    fds[i] = sv[1];
    const char req[] = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tickpool.v1\r\n\r\n";
    assert_int_equal(send(fds[i], req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    char buf[1024];
    size_t got = 0;
    int64_t end = tp_mono_ms() + 2000;
    while (tp_mono_ms() < end) {
        ev_run(host.loop, EVRUN_NOWAIT);
        tp_conn_run_dirty(&host, 0);
        ssize_t n = recv(fds[i], buf + got, sizeof(buf) - 1 - got, 0);
        if (n > 0)
            got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            break;
        usleep(200);
    }
    assert_non_null(strstr(buf, "HTTP/1.1 101 "));
    assert_true(tp_conn_flags(conns[i]) & TP_CONN_WS);
}

/* Reads every frame client i has received: their payloads, comma-separated, into out. */
static void received(int i, char *out, size_t cap)
{
    static uint8_t buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = recv(fds[i], buf + got, sizeof(buf) - got, 0)) > 0)
        got += (size_t)n;
    out[0] = '\0';
    size_t used = 0;
    for (size_t p = 0; p + 2 <= got;) {
        assert_int_equal(buf[p], 0x82); /* FIN, binary */
        size_t len = buf[p + 1];
        assert_true(len < 126 && p + 2 + len <= got);
        used += (size_t)snprintf(out + used, cap - used, "%s%.*s", used ? "," : "", (int)len,
                                 (const char *)buf + p + 2);
        p += 2 + len;
    }
}

static void hand(const char *payload, enum tp_ws_kind kind)
{
    struct tp_ws_frame *f = tp_ws_frame_new(payload, strlen(payload), kind);
    tp_conn_fanout(&host, f, ready);
    tp_ws_frame_unref(f);
}

/* The worker's prepare hook: the dirty list, then the fan-out, one 16-socket slice each. */
static bool slice(void)
{
    if (tp_conn_run_dirty(&host, 1))
        return true;
    return tp_conn_run_fanout(&host, 1);
}

/* Beats arrive while the walk is under way: the sockets it reached got the older beat, the
 * others only the newer; an `odds` in between goes to every socket once, before the newer
 * tick, whether the walk reached it before or after the tick arrived. */
static void test_newest_wins_across_slices(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    hand("t1", TP_WS_KIND_TICK);
    assert_true(tp_conn_fanout_pending(&host));
    assert_true(slice()); /* 16 sockets get t1 (the clock is read every 16 visits) */
    hand("o1", TP_WS_KIND_ODDS);
    assert_true(slice());        /* the next 16 get t1 and o1 */
    hand("t2", TP_WS_KIND_TICK); /* supersedes t1, not o1 */
    int slices = 2;
    while (slice())
        slices++;
    slices++;
    assert_false(tp_conn_fanout_pending(&host));
    /* The walk went on from where it stopped and wrapped around once: 16 + 16 + 64 visits. */
    assert_int_equal(slices, 2 + N / SLICE);
    int got_t1 = 0;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        if (strcmp(s, "t1,o1,t2") == 0)
            got_t1++;
        else
            assert_string_equal(s, "o1,t2");
    }
    assert_int_equal(got_t1, 2 * SLICE);

    /* A beat with odds supersedes a pending tick and odds; the next visits give only it. */
    hand("t3", TP_WS_KIND_TICK);
    hand("o2", TP_WS_KIND_ODDS);
    assert_true(slice());
    hand("x4", TP_WS_KIND_TICK_ODDS);
    while (slice())
        ;
    got_t1 = 0;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        if (strcmp(s, "t3,o2,x4") == 0)
            got_t1++;
        else
            assert_string_equal(s, "x4");
    }
    assert_int_equal(got_t1, SLICE);
}

/* A `round` queued at once goes out before the beats still to be handed out; sockets without a
 * snapshot get nothing, and one made ready later gets only what is handed out afterwards. */
static void test_round_first_and_not_ready(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], i % 4 == 3 ? NULL : &ready_flag);
    }
    hand("t1", TP_WS_KIND_TICK);
    assert_true(slice());
    struct tp_ws_frame *r = tp_ws_frame_new("r1", 2, TP_WS_KIND_ROUND);
    for (int i = 0; i < N; i++)
        if (ready(conns[i]))
            assert_int_equal(tp_conn_ws_send_frame(conns[i], r), 0);
    tp_ws_frame_unref(r);
    while (slice())
        ;
    int early = 0;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        if (!ready(conns[i]))
            assert_string_equal(s, "");
        else if (strcmp(s, "t1,r1") == 0)
            early++;
        else
            assert_string_equal(s, "r1,t1");
    }
    assert_true(early > 0 && early <= SLICE);

    /* Socket 3 gets its snapshot while t2 is being handed out: t2 is older than it. */
    hand("t2", TP_WS_KIND_TICK);
    tp_conn_set_data(conns[3], &ready_flag);
    tp_conn_ws_fanout_from_now(conns[3]);
    while (slice())
        ;
    char s[256];
    received(3, s, sizeof(s));
    assert_string_equal(s, "");
    received(0, s, sizeof(s));
    assert_string_equal(s, "t2");
    hand("t3", TP_WS_KIND_TICK);
    while (slice())
        ;
    received(3, s, sizeof(s));
    assert_string_equal(s, "t3");
    received(7, s, sizeof(s));
    assert_string_equal(s, "");
}

/* Issue 13: beats handed out while a `round` is still being written from the dirty list go in
 * the same write to the sockets still waiting for it, behind the round (their clients hold both
 * before the walk runs at all); the sockets written before a beat arrived get it from the walk.
 * A newer beat supersedes the older for the sockets not yet written, and every socket gets the
 * round once and its beats in order, the newest last. */
static void test_beat_joins_round_write(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    struct tp_ws_frame *r = tp_ws_frame_new("r1", 2, TP_WS_KIND_ROUND);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_conn_ws_send_frame(conns[i], r), 0);
    tp_ws_frame_unref(r);
    /* Three groups of sockets, by what they were written in one dirty-list write: before t1
     * arrived, between t1 and t2, after t2. */
    static const char *const first[3] = {"r1", "r1,t1", "r1,t2"};
    int group[N], count[3] = {0, 0, 0};
    for (int i = 0; i < N; i++)
        group[i] = -1;
    for (int g = 0; g < 3; g++) {
        if (g == 1)
            hand("t1", TP_WS_KIND_TICK);
        if (g == 2)
            hand("t2", TP_WS_KIND_TICK); /* supersedes t1 for the sockets not yet written */
        if (g < 2)
            assert_true(tp_conn_run_dirty(&host, 1)); /* one slice of the dirty list */
        else
            assert_false(tp_conn_run_dirty(&host, 0)); /* the rest */
        for (int i = 0; i < N; i++) {
            char s[256];
            received(i, s, sizeof(s));
            if (s[0] == '\0')
                continue;
            assert_int_equal(group[i], -1); /* written once */
            assert_string_equal(s, first[g]);
            group[i] = g;
            count[g]++;
        }
        assert_true(count[g] > 0);
    }
    assert_int_equal(count[0] + count[1] + count[2], N);
    /* The walk gives t2 to the sockets written before it arrived, and nothing to the others. */
    assert_true(tp_conn_fanout_pending(&host));
    while (tp_conn_run_fanout(&host, 1))
        ;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        assert_string_equal(s, group[i] == 2 ? "" : "t2");
    }
    assert_int_equal(host.fan.n, 0);
}

/* Session 10: broadcasts queued at once are written in the order they came. A second `round`
 * (the settled one of N-1) that reaches the worker while the pair is still being written goes
 * in the same write to the sockets still waiting for the pair, and to the others only once every
 * socket has the pair; an answer marked meanwhile still goes first. */
static void test_broadcasts_in_order(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    struct tp_ws_frame *r1 = tp_ws_frame_new("r1", 2, TP_WS_KIND_ROUND);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_conn_ws_broadcast_frame(conns[i], r1), 0);
    tp_ws_frame_unref(r1);
    assert_true(tp_conn_run_dirty(&host, 1)); /* one slice: 15 sockets get r1 */
    int had_r1[N], nhad = 0;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        had_r1[i] = s[0] != '\0';
        if (had_r1[i]) {
            assert_string_equal(s, "r1");
            nhad++;
        }
    }
    assert_true(nhad > 0 && nhad < N - SLICE);
    struct tp_ws_frame *r2 = tp_ws_frame_new("r2", 2, TP_WS_KIND_ROUND);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_conn_ws_broadcast_frame(conns[i], r2), 0);
    tp_ws_frame_unref(r2);
    int answered = had_r1[0] ? 1 : 0; /* a socket that had r1 gets an answer */
    while (!had_r1[answered])
        answered++;
    assert_int_equal(tp_conn_ws_send(conns[answered], "a1", 2), 0);
    /* Slice by slice, the sockets still waiting for r1 get r1,r2 in one write, and no socket
     * that had r1 gets r2 in a slice before theirs, the answered one excepted (it goes first). */
    bool later_started = false;
    int done[N] = {0}, slices = 0;
    for (bool more = true; more;) {
        more = tp_conn_run_dirty(&host, 1);
        bool later = false;
        for (int i = 0; i < N; i++) {
            char s[256];
            received(i, s, sizeof(s));
            if (s[0] == '\0')
                continue;
            assert_int_equal(done[i], 0);
            done[i] = 1;
            if (i == answered) {
                assert_int_equal(slices, 0);
                assert_string_equal(s, "r2,a1");
            } else if (had_r1[i]) {
                later = true;
                assert_string_equal(s, "r2");
            } else {
                assert_false(later_started);
                assert_string_equal(s, "r1,r2");
            }
        }
        later_started = later_started || later;
        slices++;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(done[i], 1);
    assert_true(slices > 2);
}

/* A broadcast's own writes are out (tp_conn_bcast_out) once its last socket is written, though
 * the next broadcast's writes queued behind it are not: the `round delivered` mark of a worker
 * writing the pair while the settled `round` arrives (bench/README.md "Boundaries", session 19).
 * A broadcast to a socket waiting on the dirty list is out only once that list has run. */
static void test_broadcast_out_mark(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    /* Socket 0 has an answer waiting (dirty): a broadcast to it alone puts nothing on the
     * broadcast list, and is out only once the dirty list is written. */
    assert_int_equal(tp_conn_ws_send(conns[0], "a0", 2), 0);
    struct tp_ws_frame *r0 = tp_ws_frame_new("r0", 2, TP_WS_KIND_ROUND);
    assert_int_equal(tp_conn_ws_broadcast_frame(conns[0], r0), 0);
    tp_ws_frame_unref(r0);
    struct tp_conn_bcast_mark m0 = tp_conn_bcast_mark(&host);
    assert_false(tp_conn_bcast_out(&host, m0));
    assert_false(tp_conn_run_dirty(&host, 0));
    assert_true(tp_conn_bcast_out(&host, m0));
    char s[256];
    received(0, s, sizeof(s));
    assert_string_equal(s, "a0,r0");

    struct tp_ws_frame *r1 = tp_ws_frame_new("r1", 2, TP_WS_KIND_ROUND);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_conn_ws_broadcast_frame(conns[i], r1), 0);
    tp_ws_frame_unref(r1);
    struct tp_conn_bcast_mark m1 = tp_conn_bcast_mark(&host);
    assert_true(tp_conn_run_dirty(&host, 1)); /* one slice: some sockets get r1 */
    assert_false(tp_conn_bcast_out(&host, m1));
    /* r2 behind it: to the sockets that had r1, a write of their own at the list's end */
    struct tp_ws_frame *r2 = tp_ws_frame_new("r2", 2, TP_WS_KIND_ROUND);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_conn_ws_broadcast_frame(conns[i], r2), 0);
    tp_ws_frame_unref(r2);
    struct tp_conn_bcast_mark m2 = tp_conn_bcast_mark(&host);
    int had[N] = {0}, slices = 0;
    bool more = true;
    while (!tp_conn_bcast_out(&host, m1)) {
        assert_true(more);
        more = tp_conn_run_dirty(&host, 1);
        slices++;
    }
    /* Out: every socket has r1, and r2 is still to be written to some (not out yet). */
    for (int i = 0; i < N; i++) {
        received(i, s, sizeof(s));
        had[i] = strstr(s, "r2") != NULL;
        if (strcmp(s, "r1") != 0 && strcmp(s, "r1,r2") != 0 && strcmp(s, "r2") != 0)
            fail_msg("socket %d got \"%s\"", i, s);
    }
    assert_true(more);
    assert_false(tp_conn_bcast_out(&host, m2));
    while (tp_conn_run_dirty(&host, 1))
        slices++;
    assert_true(tp_conn_bcast_out(&host, m2));
    int r2_after = 0;
    for (int i = 0; i < N; i++) {
        received(i, s, sizeof(s));
        if (!had[i]) {
            assert_string_equal(s, "r2");
            r2_after++;
        }
    }
    assert_true(r2_after > 0 && slices > 1);
}

/* Sockets freed under the walk (the cursor's among them) neither stop it nor are touched (run
 * under ASan); every socket left gets the beat once. */
static void test_sockets_freed_mid_walk(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    hand("t1", TP_WS_KIND_TICK);
    assert_true(slice());
    struct tp_conn *cursor = host.fan.cursor;
    assert_non_null(cursor);
    bool gone[N] = {false};
    for (int i = 0; i < N; i++)
        if (conns[i] == cursor || i % 5 == 0) {
            tp_conn_close(conns[i]);
            gone[i] = true;
        }
    tp_conn_reap(&host);
    while (slice())
        ;
    for (int i = 0; i < N; i++) {
        if (gone[i])
            continue;
        char s[256];
        received(i, s, sizeof(s));
        assert_string_equal(s, "t1");
    }
    assert_false(tp_conn_fanout_pending(&host));
    assert_int_equal(host.fan.n, 0); /* the walk is over: no frame is held */
}

/* A socket that cannot take its beats (the client does not read): the walk writes what fits
 * straight from the shared frame, keeps the rest, and queues what comes next behind it (newest
 * wins among the frames not started); once the client reads, the watcher writes the rest. The
 * client gets whole frames only, in order, ending with the newest; the messages counted out are
 * those it got plus those superseded in the queue (the walk counts once per slice). */
static void test_full_socket_whole_frames(void **state)
{
    (void)state;
    upgrade(0);
    tp_conn_set_data(conns[0], &ready_flag);
    int small = 4096;
    assert_int_equal(setsockopt(srv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    int64_t out0 = tp_metrics_get_total(TP_METRIC_WS_MESSAGES_OUT_TOTAL);
    int64_t drop0 = tp_metrics_get_total(TP_METRIC_WS_FRAMES_DROPPED_TOTAL);
    enum { BEATS = 300 };
    char payload[101];
    for (int k = 0; k < BEATS; k++) {
        snprintf(payload, sizeof(payload), "%03d%097d", k, 0);
        hand(payload, TP_WS_KIND_TICK);
        while (slice())
            ;
    }
    static uint8_t buf[1 << 20];
    size_t got = 0;
    int64_t end = tp_mono_ms() + 5000;
    while (tp_mono_ms() < end) {
        ev_run(host.loop, EVRUN_NOWAIT); /* the watcher writes the rest once there is room */
        slice();
        ssize_t n = recv(fds[0], buf + got, sizeof(buf) - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (got > 0 && got % (2 + 100) == 0 && memcmp(buf + got - 100, "299", 3) == 0)
            break;
    }
    assert_int_equal(got % (2 + 100), 0);
    int frames = 0, last = -1;
    for (size_t p = 0; p < got; p += 2 + 100) {
        assert_int_equal(buf[p], 0x82);
        assert_int_equal(buf[p + 1], 100);
        int k = (buf[p + 2] - '0') * 100 + (buf[p + 3] - '0') * 10 + (buf[p + 4] - '0');
        assert_true(k > last);
        last = k;
        frames++;
    }
    assert_int_equal(last, BEATS - 1);
    assert_true(frames < BEATS); /* the socket was full: some beats were superseded */
    int64_t out = tp_metrics_get_total(TP_METRIC_WS_MESSAGES_OUT_TOTAL) - out0;
    int64_t dropped = tp_metrics_get_total(TP_METRIC_WS_FRAMES_DROPPED_TOTAL) - drop0;
    assert_int_equal(out - dropped, frames);
}

/* Reads client i until EOF (the server closed the socket) or 5 s, running the loop: every frame
 * it got, as "<opcode hex>:<payload>" comma-separated into out; true when EOF came. */
static bool read_to_eof(int i, char *out, size_t cap)
{
    static uint8_t buf[1 << 20];
    size_t got = 0;
    bool eof = false;
    int64_t end = tp_mono_ms() + 5000;
    while (!eof && tp_mono_ms() < end) {
        ev_run(host.loop, EVRUN_NOWAIT);
        slice();
        tp_conn_reap(&host);
        ssize_t n = recv(fds[i], buf + got, sizeof(buf) - got, 0);
        if (n > 0)
            got += (size_t)n;
        eof = n == 0;
    }
    size_t used = 0;
    out[0] = '\0';
    for (size_t p = 0; p + 2 <= got && used < cap;) {
        size_t len = buf[p + 1];
        assert_true(len < 126 && p + 2 + len <= got);
        used += (size_t)snprintf(out + used, cap - used, "%s%x:%.*s", used ? "," : "", buf[p],
                                 (int)(buf[p] == 0x88 ? 0 : len), (const char *)buf + p + 2);
        p += 2 + len;
    }
    return eof;
}

/* A beat handed to a socket whose close was started never follows its close frame: socket 0
 * full (its close frame queued behind the beats started, the beat after the close queued
 * nowhere), socket 1 empty (its close frame not written yet when the beat comes, so no direct
 * write). tp_ws_write_frame refuses a closing session, so a direct write never meets a session
 * that wants to close; each socket is closed once its close frame is out. */
static void test_no_beat_after_close_frame(void **state)
{
    (void)state;
    upgrade(0);
    upgrade(1);
    tp_conn_set_data(conns[0], &ready_flag);
    tp_conn_set_data(conns[1], &ready_flag);
    int small = 4096;
    assert_int_equal(setsockopt(srv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    char payload[101];
    for (int k = 0; k < 200; k++) {
        snprintf(payload, sizeof(payload), "%03d%097d", k, 0);
        hand(payload, TP_WS_KIND_TICK);
        while (slice())
            ;
    }
    static char got[1 << 16];
    received(1, got, sizeof(got)); /* socket 1 took every beat: nothing of it is queued */
    tp_conn_ws_close(conns[0], TP_WS_CLOSE_NORMAL, "bye");
    tp_conn_ws_close(conns[1], TP_WS_CLOSE_NORMAL, "bye");
    hand("after the close", TP_WS_KIND_TICK);
    while (slice())
        ;
    for (int i = 0; i < 2; i++) {
        assert_true(read_to_eof(i, got, sizeof(got)));
        assert_null(strstr(got, "after the close"));
        char *close = strstr(got, "88:");
        assert_non_null(close);
        assert_string_equal(close, "88:"); /* the last frame */
    }
}

/* Reads from client i, running the loop (the watcher writes what waits), until `want` bytes
 * came or 5 s passed; returns how many came. */
static size_t read_all(int i, uint8_t *buf, size_t want)
{
    size_t got = 0;
    int64_t end = tp_mono_ms() + 5000;
    while (got < want && tp_mono_ms() < end) {
        ev_run(host.loop, EVRUN_NOWAIT);
        ssize_t n = recv(fds[i], buf + got, want - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    return got;
}

/* Shrinks server socket i's send buffer and fills it (its client reads nothing); returns the
 * bytes it took. */
static size_t fill_socket(int i)
{
    int small = 4096;
    assert_int_equal(setsockopt(srv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    static uint8_t junk[1 << 16];
    size_t filled = 0;
    ssize_t w;
    while ((w = send(srv[i], junk, sizeof(junk), MSG_NOSIGNAL)) > 0)
        filled += (size_t)w;
    assert_true(filled > 0);
    return filled;
}

/* Reads from client i the `filled` bytes put in its socket, then `len` more: they must be `want`,
 * and nothing after them (written once). */
static void read_after_fill(int i, size_t filled, const void *want, size_t len)
{
    static uint8_t buf[(1 << 17) + 16];
    assert_true(filled + len <= sizeof(buf));
    assert_int_equal(read_all(i, buf, filled + len), filled + len);
    assert_memory_equal(buf + filled, want, len);
    assert_int_equal(recv(fds[i], buf, sizeof(buf), 0), -1);
}

/* io_uring, a full socket: its send completes at once with EAGAIN, and the beat is kept as a
 * direct write keeps it, written by the watcher once the client reads; the other socket's send
 * in the same batch goes whole. Without the EAGAIN handling the beat is lost. */
static void test_uring_full_socket(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    size_t filled = fill_socket(0);
    uint64_t batched = tp_conn_fanout_batched(&host);
    hand("t1", TP_WS_KIND_TICK);
    while (slice())
        ;
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, 2); /* both through io_uring */
    assert_false(tp_conn_flags(conns[0]) & TP_CONN_CLOSE_ASAP);
    char s[256];
    received(1, s, sizeof(s));
    assert_string_equal(s, "t1");
    read_after_fill(0, filled, "\x82\x02t1", 4);
}

/* io_uring, a partial write: a frame bigger than the socket's room goes out in part from the
 * batch, the rest is kept and written by the watcher; the client gets the whole frame once. */
static void test_uring_partial_write(void **state)
{
    (void)state;
    upgrade(0);
    tp_conn_set_data(conns[0], &ready_flag);
    int small = 4096;
    assert_int_equal(setsockopt(srv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    enum { LEN = 30000 };
    static char payload[LEN + 1];
    for (int k = 0; k < LEN; k++)
        payload[k] = (char)('a' + k % 26);
    uint64_t batched = tp_conn_fanout_batched(&host);
    hand(payload, TP_WS_KIND_TICK);
    while (slice())
        ;
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, 1);
    static uint8_t buf[LEN + 8];
    ssize_t first = recv(fds[0], buf, sizeof(buf), 0); /* what the batch's send took */
    assert_true(first > 0 && first < 4 + LEN);
    size_t got = (size_t)first + read_all(0, buf + first, 4 + LEN - (size_t)first);
    assert_int_equal(got, 4 + LEN);
    assert_int_equal(buf[0], 0x82);
    assert_int_equal(buf[1], 126);
    assert_int_equal((buf[2] << 8) | buf[3], LEN);
    assert_memory_equal(buf + 4, payload, LEN);
    assert_int_equal(recv(fds[0], buf, sizeof(buf), 0), -1); /* nothing more: written once */
    assert_false(tp_conn_fanout_pending(&host));
}

/* What the walk counts out: every message handed out, and of each frame the bytes that went (a
 * whole write's without reading the socket's queue, session 14), a partial write's rest only
 * once it is flushed. The partly written socket's client gets the frame once: the send() path
 * also queued a started frame, and wrote it a second time (fixed in session 14). */
static void test_bytes_counted(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    int small = 4096;
    assert_int_equal(setsockopt(srv[2], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    enum { LEN = 30000 };
    static char payload[LEN + 1];
    memset(payload, 'p', LEN);
    int64_t msgs0 = tp_metrics_get_total(TP_METRIC_WS_MESSAGES_OUT_TOTAL);
    int64_t bytes0 = tp_metrics_get_total(TP_METRIC_HTTP_BYTES_OUT_TOTAL);
    hand(payload, TP_WS_KIND_TICK);
    while (slice())
        ;
    /* Sockets 0 and 1 took the frame whole, socket 2 the part its client can read now. */
    static uint8_t buf[LEN + 8];
    ssize_t part = recv(fds[2], buf, sizeof(buf), 0);
    assert_true(part > 0 && part < 4 + LEN);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_WS_MESSAGES_OUT_TOTAL) - msgs0, 3);
    assert_int_equal(tp_metrics_get_total(TP_METRIC_HTTP_BYTES_OUT_TOTAL) - bytes0,
                     2 * (4 + LEN) + part);
    size_t rest = 4 + LEN - (size_t)part;
    assert_int_equal(read_all(2, buf + part, rest), rest);
    assert_int_equal(buf[0], 0x82);
    assert_memory_equal(buf + 4, payload, LEN);
    for (int k = 0; k < 10; k++) { /* the watcher has nothing more to write */
        ev_run(host.loop, EVRUN_NOWAIT);
        assert_int_equal(recv(fds[2], buf, sizeof(buf), 0), -1);
    }
}

/* io_uring, a peer gone: its send fails (EPIPE) and the socket is closed as a direct write's
 * error closes it; the others in the batch get the beat. */
static void test_uring_closed_peer(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    close(fds[1]);
    fds[1] = -1;
    uint64_t batched = tp_conn_fanout_batched(&host);
    hand("t1", TP_WS_KIND_TICK);
    while (slice())
        ;
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, 3);
    assert_true(tp_conn_flags(conns[1]) & TP_CONN_CLOSE_ASAP);
    for (int i = 0; i < 3; i += 2) {
        char s[256];
        received(i, s, sizeof(s));
        assert_string_equal(s, "t1");
        assert_false(tp_conn_flags(conns[i]) & TP_CONN_CLOSE_ASAP);
    }
}

/* io_uring, answers (a script call's answers to as many sockets, session 16): the dirty list's
 * plain WebSockets are written through the batch, one send each, each client its own answer
 * once; a socket whose answer is not batchable (waiting to be writable) is written as before. */
static void test_uring_answers_batched(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    uint64_t batched = tp_conn_fanout_batched(&host);
    assert_int_equal(tp_conn_ws_send(conns[0], "a0", 2), 0);
    assert_int_equal(tp_conn_ws_send(conns[2], "a2", 2), 0);
    while (tp_conn_run_dirty(&host, 0))
        ;
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, 2);
    const char *want[3] = {"a0", "", "a2"};
    for (int i = 0; i < 3; i++) {
        char s[256];
        received(i, s, sizeof(s));
        assert_string_equal(s, want[i]);
    }
    /* Socket 1 full: its answer waits for the watcher, whole, and is not sent twice. */
    size_t filled = fill_socket(1);
    assert_int_equal(tp_conn_ws_send(conns[1], "a1", 2), 0);
    while (tp_conn_run_dirty(&host, 0))
        ;
    static uint8_t buf[(1 << 17) + 16];
    assert_true(filled + 4 <= sizeof(buf));
    assert_int_equal(read_all(1, buf, filled + 4), filled + 4);
    assert_memory_equal(buf + filled,
                        "\x82\x02"
                        "a1",
                        4);
}

/* Queues `payload` as a `round` broadcast to sockets [0, n), as a boundary does. */
static void broadcast_round(const char *payload, size_t len, int n)
{
    struct tp_ws_frame *f = tp_ws_frame_new(payload, len, TP_WS_KIND_ROUND);
    for (int i = 0; i < n; i++)
        assert_int_equal(tp_conn_ws_broadcast_frame(conns[i], f), 0);
    tp_ws_frame_unref(f);
}

/* io_uring, broadcasts (session 13): the sockets with a `round` queued are written through the
 * batch, one send each, and each client gets it once; the beat being handed out goes in the
 * same send (behind it) to the sockets written after it came. */
static void test_uring_rounds_batched(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    uint64_t batched = tp_conn_fanout_batched(&host);
    broadcast_round("r1", 2, N);
    assert_true(tp_conn_run_dirty(&host, 1)); /* one slice: one batch of BATCH */
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, BATCH);
    hand("t1", TP_WS_KIND_TICK);
    while (tp_conn_run_dirty(&host, 1))
        ;
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, N);
    int joined = 0;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        if (i < BATCH) {
            assert_string_equal(s, "r1");
        } else {
            assert_string_equal(s, "r1,t1");
            joined++;
        }
    }
    assert_int_equal(joined, N - BATCH);
    while (tp_conn_run_fanout(&host, 1)) /* t1 to the first batch's sockets only */
        ;
    for (int i = 0; i < N; i++) {
        char s[256];
        received(i, s, sizeof(s));
        assert_string_equal(s, i < BATCH ? "t1" : "");
    }
}

/* io_uring, broadcasts: a full socket's send completes with EAGAIN and its `round` is kept,
 * written by the watcher once the client reads; a frame only partly taken is finished the same
 * way; a peer gone is closed; the others in the batch get it whole. */
static void test_uring_rounds_full_partial_closed(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
    int small = 4096;
    static uint8_t junk[1 << 16];
    size_t filled[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(setsockopt(srv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        ssize_t w;
        while ((w = send(srv[i], junk, sizeof(junk), MSG_NOSIGNAL)) > 0)
            filled[i] += (size_t)w;
        assert_true(filled[i] > 0);
    }
    /* Socket 1 gets some room back, less than the frame. */
    static uint8_t buf[(1 << 17) + 8192];
    assert_true(recv(fds[1], buf, 2048, 0) > 0);
    size_t left1 = filled[1] - 2048;
    close(fds[3]);
    fds[3] = -1;
    enum { LEN = 6000 }; /* within a batch's slot, more than socket 1's room */
    static char payload[LEN];
    for (int k = 0; k < LEN; k++)
        payload[k] = (char)('a' + k % 26);
    uint64_t batched = tp_conn_fanout_batched(&host);
    broadcast_round(payload, LEN, 4);
    while (tp_conn_run_dirty(&host, 0))
        ;
    assert_int_equal(tp_conn_fanout_batched(&host) - batched, 4);
    assert_true(tp_conn_flags(conns[3]) & TP_CONN_CLOSE_ASAP);
    for (int i = 0; i < 3; i++)
        assert_false(tp_conn_flags(conns[i]) & TP_CONN_CLOSE_ASAP);
    size_t before[3] = {filled[0], left1, 0};
    for (int i = 0; i < 3; i++) {
        size_t want = before[i] + 4 + LEN;
        assert_int_equal(read_all(i, buf, want), want);
        assert_int_equal(buf[before[i]], 0x82);
        assert_int_equal(buf[before[i] + 1], 126);
        assert_int_equal((buf[before[i] + 2] << 8) | buf[before[i] + 3], LEN);
        assert_memory_equal(buf + before[i] + 4, payload, LEN);
        assert_int_equal(recv(fds[i], buf, sizeof(buf), 0), -1); /* once */
    }
}

/* Client i has received these frames since the last read (received's form). */
static void expect_got(int i, const char *want)
{
    char s[256];
    received(i, s, sizeof(s));
    assert_string_equal(s, want);
}

/* Opens sockets [0, n), each ready for broadcasts. */
static void open_ready(int n)
{
    for (int i = 0; i < n; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], &ready_flag);
    }
}

/* Holds `payload` as a `round` that rides the next beat (tp_conn_fanout_hold). */
static bool hold(const char *payload, size_t len)
{
    struct tp_ws_frame *f = tp_ws_frame_new(payload, len, TP_WS_KIND_ROUND);
    bool held = tp_conn_fanout_hold(&host, f, ready);
    tp_ws_frame_unref(f);
    return held;
}

/* Session 20 (issue 13): a held `round` is not written on its own; it goes in the same write as
 * the next beat, one send per socket (counted through io_uring), and the walk that gives it ends
 * with nothing held. A socket not ready never gets it. */
static void test_held_round_rides_next_beat(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], i == 5 ? NULL : &ready_flag);
    }
    hand("t1", TP_WS_KIND_TICK);
    while (slice())
        ;
    for (int i = 0; i < N; i++) {
        expect_got(i, i == 5 ? "" : "t1");
    }
    assert_true(hold("r1", 2));
    assert_false(tp_conn_fanout_pending(&host)); /* nothing to walk for until a beat comes */
    assert_false(slice());
    for (int i = 0; i < N; i++) {
        expect_got(i, "");
    }
    uint64_t batched = tp_conn_fanout_batched(&host);
    hand("t2", TP_WS_KIND_TICK);
    while (slice())
        ;
    if (tp_conn_fanout_io_uring(&host))
        assert_int_equal(tp_conn_fanout_batched(&host) - batched, N - 1); /* one each */
    for (int i = 0; i < N; i++) {
        expect_got(i, i == 5 ? "" : "r1,t2");
    }
    assert_int_equal(host.fan.n, 0);
    assert_int_equal(host.fan.held, 0);
}

/* A `round` held while a walk is under way rides it to the sockets the walk has still to visit
 * (ahead of their beat, as a `round` goes ahead of queued beats); the sockets visited before it
 * came get it with the next beat, and no socket gets it alone or twice. */
static void test_held_round_mid_walk(void **state)
{
    (void)state;
    open_ready(N);
    hand("t1", TP_WS_KIND_TICK);
    assert_true(slice()); /* 16 sockets get t1 */
    assert_true(hold("r1", 2));
    while (slice())
        ;
    bool early[N];
    int nearly = 0;
    char s[256];
    for (int i = 0; i < N; i++) {
        received(i, s, sizeof(s));
        early[i] = strcmp(s, "t1") == 0;
        if (early[i])
            nearly++;
        else
            assert_string_equal(s, "r1,t1");
    }
    assert_int_equal(nearly, SLICE);
    assert_int_equal(host.fan.n, 1); /* r1, still owed to the first slice's sockets */
    assert_false(tp_conn_fanout_pending(&host));
    hand("t2", TP_WS_KIND_TICK);
    while (slice())
        ;
    for (int i = 0; i < N; i++) {
        expect_got(i, early[i] ? "r1,t2" : "t2");
    }
    assert_int_equal(host.fan.n, 0);
}

/* What is queued to a socket after a `round` was held goes behind it: an answer (a `payout`
 * after its settled `round`) and a broadcast queued at once (the next boundary's pair) take the
 * held round along first; the next beat then does not give it again. */
static void test_held_round_goes_first(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        upgrade(i);
        tp_conn_set_data(conns[i], i == 7 ? NULL : &ready_flag);
    }
    assert_true(hold("r1", 2));
    assert_int_equal(tp_conn_ws_send(conns[0], "a0", 2), 0);
    assert_int_equal(tp_conn_ws_send(conns[7], "a7", 2), 0); /* not ready: no round of its */
    while (slice())
        ;
    expect_got(0, "r1,a0");
    expect_got(7, "a7");
    expect_got(1, "");
    broadcast_round("p1", 2, N);
    while (slice())
        ;
    for (int i = 0; i < N; i++) {
        expect_got(i, i == 0 || i == 7 ? "p1" : "r1,p1");
    }
    hand("t2", TP_WS_KIND_TICK);
    while (slice())
        ;
    for (int i = 0; i < N; i++) {
        expect_got(i, i == 7 ? "" : "t2");
    }
    assert_int_equal(host.fan.n, 0);
}

/* No beat comes (the game stopped ticking): the release (bcast.c's timer, one tick_ms) walks for
 * the held rounds alone, in the order they were held; a second release is a no-op. At most
 * TP_CONN_FANOUT_HELD_MAX are held: the next is refused, holding nothing. */
static void test_held_round_released(void **state)
{
    (void)state;
    open_ready(N);
    char p[8];
    for (int k = 0; k < TP_CONN_FANOUT_HELD_MAX; k++) {
        snprintf(p, sizeof(p), "r%d", k);
        assert_true(hold(p, 2));
    }
    assert_false(hold("rx", 2));
    assert_int_equal(host.fan.held, TP_CONN_FANOUT_HELD_MAX);
    tp_conn_fanout_release(&host);
    assert_true(tp_conn_fanout_pending(&host));
    while (slice())
        ;
    for (int i = 0; i < N; i++) {
        expect_got(i, "r0,r1,r2,r3");
    }
    assert_int_equal(host.fan.n, 0);
    assert_int_equal(host.fan.held, 0);
    tp_conn_fanout_release(&host);
    assert_false(tp_conn_fanout_pending(&host));
}

/* A full socket given a held `round` and its beat keeps them whole, in order, for its watcher
 * (through io_uring: the gathered send completes with EAGAIN); the other socket gets both. */
static void test_held_round_full_socket(void **state)
{
    (void)state;
    open_ready(2);
    size_t filled = fill_socket(0);
    assert_true(hold("r1", 2));
    hand("t1", TP_WS_KIND_TICK);
    while (slice())
        ;
    read_after_fill(0, filled, "\x82\x02r1\x82\x02t1", 8);
    expect_got(1, "r1,t1");
}

/* A socket too slow for held rounds is cut as one too slow for anything never dropped: its queue
 * passes the cap, is discarded for a close 1013 `send queue full`, and the socket closes once
 * that frame is out; the socket that reads gets every round. */
static void test_held_round_slow_socket_cut(void **state)
{
    (void)state;
    open_ready(2);
    size_t filled = fill_socket(0);
    enum { LEN = 20000, ROUNDS = 5 }; /* 5 x 20 KB queued: past the 64 KiB cap */
    static char payload[LEN];
    static uint8_t buf[(1 << 18)];
    size_t got1 = 0;
    for (int k = 0; k < ROUNDS; k++) {
        memset(payload, 'a' + k, LEN);
        assert_true(hold(payload, LEN));
        snprintf(payload, 8, "t%d", k);
        hand(payload, TP_WS_KIND_TICK);
        while (slice())
            ;
        got1 += read_all(1, buf + got1, 4 + LEN + 4);
    }
    assert_int_equal(got1, ROUNDS * (4 + LEN + 4));
    for (int k = 0; k < ROUNDS; k++)
        assert_int_equal(buf[k * (8 + LEN) + 4], 'a' + k);
    /* Socket 0: its client reads now, until the server closes. */
    size_t got = 0;
    ssize_t n = 1;
    int64_t end = tp_mono_ms() + 5000;
    while (n != 0 && tp_mono_ms() < end) {
        ev_run(host.loop, EVRUN_NOWAIT);
        slice();
        tp_conn_reap(&host);
        n = recv(fds[0], buf + got, sizeof(buf) - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    assert_int_equal(n, 0); /* EOF: the server closed it */
    assert_true(got > filled);
    static const char close1013[] = "\x88\x11\x03\xf5send queue full";
    assert_non_null(memmem(buf + filled, got - filled, close1013, sizeof(close1013) - 1));
}

/* A kernel that refuses io_uring (ENOSYS, EPERM under seccomp or kernel.io_uring_disabled):
 * the set-up says so with the reason, and the fan-out writes with send() as before. In a child,
 * since the filter cannot be removed. */
static void test_fallback_when_io_uring_refused(void **state)
{
    (void)state;
    const int errs[] = {ENOSYS, EPERM};
    const char *why[] = {"Function not implemented", "Operation not permitted"};
    for (int k = 0; k < 2; k++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            ev_loop_fork(host.loop);
            char err[256] = "";
            if (refuse_syscall(__NR_io_uring_setup, errs[k]) != 0)
                _exit(10);
            if (tp_conn_fanout_setup(&host, BATCH, err, sizeof(err)) != TP_EUNAVAIL)
                _exit(11);
            if (strstr(err, "io_uring_setup") == NULL || strstr(err, why[k]) == NULL)
                _exit(12);
            if (tp_conn_fanout_io_uring(&host))
                _exit(13);
            upgrade(0);
            tp_conn_set_data(conns[0], &ready_flag);
            hand("t1", TP_WS_KIND_TICK);
            while (slice())
                ;
            char s[256];
            received(0, s, sizeof(s));
            _exit(strcmp(s, "t1") == 0 && tp_conn_fanout_batched(&host) == 0 ? 0 : 14);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
}

#define SEND(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
#define URING(t) cmocka_unit_test_setup_teardown(t, setup_uring, teardown)

int main(void)
{
    const struct CMUnitTest sends[] = {
        SEND(test_newest_wins_across_slices),
        SEND(test_round_first_and_not_ready),
        SEND(test_beat_joins_round_write),
        SEND(test_broadcasts_in_order),
        SEND(test_broadcast_out_mark),
        SEND(test_sockets_freed_mid_walk),
        SEND(test_full_socket_whole_frames),
        SEND(test_no_beat_after_close_frame),
        SEND(test_fallback_when_io_uring_refused),
        SEND(test_bytes_counted),
        SEND(test_held_round_rides_next_beat),
        SEND(test_held_round_mid_walk),
        SEND(test_held_round_goes_first),
        SEND(test_held_round_released),
        SEND(test_held_round_full_socket),
        SEND(test_held_round_slow_socket_cut),
    };
    const struct CMUnitTest uring[] = {
        URING(test_newest_wins_across_slices),
        URING(test_round_first_and_not_ready),
        URING(test_beat_joins_round_write),
        URING(test_broadcasts_in_order),
        URING(test_broadcast_out_mark),
        URING(test_sockets_freed_mid_walk),
        URING(test_full_socket_whole_frames),
        URING(test_uring_full_socket),
        URING(test_uring_partial_write),
        URING(test_uring_closed_peer),
        URING(test_no_beat_after_close_frame),
        URING(test_uring_rounds_batched),
        URING(test_uring_answers_batched),
        URING(test_uring_rounds_full_partial_closed),
        URING(test_bytes_counted),
        URING(test_held_round_rides_next_beat),
        URING(test_held_round_mid_walk),
        URING(test_held_round_goes_first),
        URING(test_held_round_released),
        URING(test_held_round_full_socket),
        URING(test_held_round_slow_socket_cut),
    };
    int failed = cmocka_run_group_tests_name("send", sends, NULL, NULL);
    return failed + cmocka_run_group_tests_name("io_uring", uring, NULL, NULL);
}
