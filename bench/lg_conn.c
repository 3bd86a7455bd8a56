/*
 * loadgen connections: request encoders, non-blocking socket I/O, and the per-mode readers that
 * match answers to requests (HTTP pipelining in order, RESP in order, WebSocket bets by `req`).
 *
 * Every request has a sequence number per connection; its due time sits in c->sched, a ring of
 * LG_RING slots: head = oldest unanswered, sent = next to write, tail = next to assign. At most
 * --pipeline requests are written ahead of head; the rest wait in the ring (and that wait counts
 * as latency, since latency runs from the due time).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/money/bet.h"
#include "tickpool/net/io.h"
#include "tickpool/net/send_batch.h"
#include "tickpool/net/tls.h"
#include "tickpool/store/scripts.h"

#include "lg.h"
#include "lg_proto.h"

struct tp_tls_ctx *lg_tls_ctx;

static uint64_t user_rr;
static int connected;
static uint64_t rng_state = 88172645463325252ull;

void lg_rng_seed(uint64_t run_id)
{
    rng_state ^= run_id | 1;
}

static uint32_t rnd32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

uint64_t lg_inflight_total(void)
{
    uint64_t n = 0;
    for (int i = 0; i < lg_opt.conns; i++)
        n += lg_conns[i].tail - lg_conns[i].head;
    return n;
}

/* --- Request encoders --- */

static int bands(void)
{
    return lg_opt.bands > 0 ? lg_opt.bands : 5;
}

/* The round a bet sent now goes to: --round, or with --follow-rounds the one open now (a bet
 * sent just before a boundary can arrive after it and be refused round_not_open: a lock race). */
static int64_t bet_round(void)
{
    if (lg_opt.follow_ms <= 0)
        return lg_opt.round_id;
    int64_t now = (int64_t)(lg_wall_us() / 1000);
    return lg_opt.round_id + (now - lg_opt.follow_t0) / lg_opt.follow_ms;
}

/* Appends request `seq` of connection c to its output buffer. */
static void encode_request(struct lg_conn *c, uint64_t seq)
{
    int64_t round_id = bet_round();
    int band = (int)((seq + (uint64_t)c->idx) % (uint64_t)bands());
    char key[72];
    /* "lg<run>-<idx>-<seq>", the seq with at least 8 digits. Fixed width, as a real client's keys
     * (UUIDs): a key one digit longer costs Redis more per hot bet (bench/soak_memory.py,
     * FIRST_SEQ), and a run's seq passing 1,000 put that step in the soak's window. The prefix is
     * formatted once per connection (snprintf per bet was ~1,000 instructions of loadgen's). */
    if (c->key_prefix_len == 0)
        c->key_prefix_len = (size_t)snprintf(c->key_prefix, sizeof(c->key_prefix),
                                             "lg%" PRIx64 "-%d-", lg_run_id, c->idx);
    memcpy(key, c->key_prefix, c->key_prefix_len);
    size_t kl = c->key_prefix_len + lg_fmt_seq(key + c->key_prefix_len, seq);
    key[kl] = 0;
    switch (lg_opt.mode) {
    case LG_M_HTTP_BET: {
        const struct lg_user *u = &lg_users[user_rr++ % (uint64_t)lg_nusers];
        char body[128];
        int bl = snprintf(body, sizeof(body),
                          "{\"round_id\":%" PRId64 ",\"band\":%d,\"stake\":%" PRId64 "}", round_id,
                          band, lg_opt.stake);
        tp_buf_printf(&c->out,
                      "POST /api/v1/bets HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                      "Idempotency-Key: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      lg_opt.host, lg_opt.port, u->token, key, bl, body);
        break;
    }
    case LG_M_WS_BET: {
        static struct tp_buf m; /* one thread; kept between bets, so no allocation per bet */
        tp_buf_reset(&m);
        struct tp_wr w;
        tp_wr_init(&w, &m, TP_FMT_MSGPACK);
        tp_wr_map(&w, 6);
        tp_wr_key(&w, "t");
        tp_wr_str(&w, "bet");
        tp_wr_key(&w, "req");
        tp_wr_uint(&w, seq);
        tp_wr_key(&w, "key");
        tp_wr_strn(&w, key, kl);
        tp_wr_key(&w, "round_id");
        tp_wr_int(&w, round_id);
        tp_wr_key(&w, "band");
        tp_wr_int(&w, band);
        tp_wr_key(&w, "stake");
        tp_wr_int(&w, lg_opt.stake);
        lg_ws_frame(&c->out, 2, tp_buf_ptr(&m), tp_buf_size(&m), rnd32());
        break;
    }
    case LG_M_REDIS_BET: {
        /* The one-bet reference call (bench/lua/bet.lua), request hash included: store/scripts. */
        const struct lg_user *u = &lg_users[user_rr++ % (uint64_t)lg_nusers];
        struct tp_script_bet_args args = {.user_id = u->id,
                                          .round_id = lg_opt.round_id,
                                          .band = band,
                                          .stake = lg_opt.stake,
                                          .idem_key = key,
                                          .idem_len = strlen(key),
                                          .now_ms = (int64_t)(lg_wall_us() / 1000),
                                          .nbands = bands(),
                                          .min_stake = lg_opt.min_stake,
                                          .max_stake = lg_opt.max_stake,
                                          .idem_ttl_s = 86400,
                                          .buckets = lg_opt.buckets};
        static struct tp_script_call call; /* one thread; large for the stack of a hot path */
        tp_script_bet_call(&args, &call);
        char nk[16];
        int nkl = snprintf(nk, sizeof(nk), "%d", call.nkeys);
        tp_buf_printf(&c->out, "*%d\r\n", 3 + call.argc);
        lg_resp_bulk(&c->out, "EVALSHA", 7);
        lg_resp_bulk(&c->out, lg_redis_sha, 40);
        lg_resp_bulk(&c->out, nk, (size_t)nkl);
        for (int i = 0; i < call.argc; i++)
            lg_resp_bulk(&c->out, call.argv[i], call.len[i]);
        break;
    }
    case LG_M_VIEWERS:
    case LG_M_USERS:
        break;
    }
}

/* --- Connection I/O --- */

static void conn_kill(struct lg_conn *c, const char *why);
static void tls_step(struct lg_conn *c);

static void conn_flush(struct lg_conn *c)
{
    while (tp_buf_size(&c->out) > 0) {
        /* TLS: a write that wanted more is retried with the same leading bytes (c->out). */
        ssize_t n = tp_io_write(&c->io, tp_buf_ptr(&c->out), tp_buf_size(&c->out));
        if (n > 0) {
            tp_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n == TP_IO_WANT_WRITE) {
            ev_io_start(lg_loop, &c->wio);
            return;
        }
        if (n == TP_IO_WANT_READ)
            return; /* TLS wants the peer's bytes first; rio is always on */
        conn_kill(c, "write_error");
        return;
    }
    ev_io_stop(lg_loop, &c->wio);
}

/* Writes requests from c->sent up to the pipeline window. */
static void conn_pump(struct lg_conn *c)
{
    if (c->st != LG_C_OPEN)
        return;
    while (c->sent < c->tail && c->sent - c->head < (uint64_t)lg_opt.pipeline)
        encode_request(c, c->sent++);
    c->dirty = true;
}

void lg_enqueue(struct lg_conn *c, uint64_t due)
{
    if (c->st == LG_C_DEAD) {
        if (lg_measured(due))
            lg_err_count("conn_dead");
        return;
    }
    if (c->tail - c->head >= LG_RING) {
        lg_res.overflow++;
        if (lg_measured(due))
            lg_err_count("backlog_overflow");
        return;
    }
    c->sched[c->tail & (LG_RING - 1)] = due;
    if (c->done != NULL)
        c->done[c->tail & (LG_RING - 1)] = 0;
    c->tail++;
    if (lg_measured(due))
        lg_res.sent++;
    conn_pump(c);
}

/* The sends of one lg_flush_dirty, made with one io_uring_enter (tickpool/net/send_batch.h) on
 * plain connections: at a fixed rate a wake-up writes one bet to each of many sockets (bets are
 * dealt round-robin), and a send() each cost loadgen a system call's entry and exit per bet. The
 * kernel makes the same sends, one segment per socket, in the same order; only the system calls
 * are fewer. NULL (TLS, or a kernel without io_uring): a send() per connection. */
#define SEND_BATCH_CAP 256
static struct tp_send_batch *sends;
static bool sends_tried;

/* Makes the batch's sends; applies send i's result to conns[i] as conn_flush would. */
static void run_sends(struct lg_conn **conns)
{
    unsigned n = tp_send_batch_count(sends);
    int rc = tp_send_batch_run(sends);
    for (unsigned i = 0; i < n; i++) {
        struct lg_conn *c = conns[i];
        ssize_t w = tp_send_batch_result(sends, i);
        if (w > 0)
            tp_buf_consume(&c->out, (size_t)w);
        if (w > 0 || w == TP_IO_WANT_WRITE)
            conn_flush(c); /* the rest of a short send, or wait for room: as before */
        else
            conn_kill(c, "write_error");
    }
    tp_send_batch_clear(sends);
    if (rc != 0) {
        /* The ring failed (its sends were made with send() meanwhile): send() from now on. */
        tp_send_batch_free(sends);
        sends = NULL;
    }
}

void lg_flush_dirty(void)
{
    if (!sends_tried) {
        sends_tried = true;
        char err[128];
        if (lg_tls_ctx == NULL)
            sends = tp_send_batch_new(SEND_BATCH_CAP, err, sizeof(err));
    }
    struct lg_conn *batched[SEND_BATCH_CAP];
    for (int i = 0; i < lg_opt.conns; i++) {
        struct lg_conn *c = &lg_conns[i];
        if (!c->dirty)
            continue;
        c->dirty = false;
        if (c->st != LG_C_OPEN)
            continue;
        /* A connection waiting for room (its write watcher on) keeps its order through
         * conn_flush, which finds the socket full or writes what it can. */
        if (sends == NULL || tp_buf_size(&c->out) == 0 || ev_is_active(&c->wio)) {
            conn_flush(c);
            continue;
        }
        batched[tp_send_batch_count(sends)] = c;
        tp_send_batch_add(sends, c->fd, tp_buf_ptr(&c->out), tp_buf_size(&c->out));
        if (tp_send_batch_full(sends))
            run_sends(batched);
    }
    if (sends != NULL && tp_send_batch_count(sends) > 0)
        run_sends(batched);
}

/* One answer to request `seq`: ok or an error named `err`. */
static void complete(struct lg_conn *c, uint64_t seq, const char *err)
{
    uint64_t due = c->sched[seq & (LG_RING - 1)];
    uint64_t now = lg_mono_ns();
    if (lg_measured(due)) {
        lg_res.answered++;
        if (err == NULL) {
            lg_res.ok++;
            lg_hist_record(&lg_res.lat, now > due ? (now - due) / 1000 : 0);
            if (lg_res.latencies != NULL) {
                char line[48];
                size_t ln =
                    lg_fmt_latency_line(line, ((int64_t)(due / 1000) + lg_res.wall_mono_us) / 1000,
                                        now > due ? (now - due) / 1000 : 0);
                fwrite(line, 1, ln, lg_res.latencies);
            }
        } else {
            lg_err_count(err);
        }
    }
    if (err == NULL) {
        lg_res.total_ok++;
        lg_res.sec_ok++;
        lg_hist_record(&lg_res.sec_lat, now > due ? (now - due) / 1000 : 0);
    } else {
        lg_res.total_err++;
        lg_res.sec_err++;
    }
    /* Closed loop: each answer immediately schedules the next request. */
    if (lg_opt.rate <= 0 && !lg_stopping)
        lg_enqueue(c, now);
}

static void advance_ws(struct lg_conn *c)
{
    while (c->head < c->sent && c->done[c->head & (LG_RING - 1)])
        c->head++;
}

/* --- Response readers --- */

/* Parses pipelined HTTP responses; returns false when the connection must close. */
static bool read_http(struct lg_conn *c)
{
    for (;;) {
        const char *p = tp_buf_ptr(&c->in);
        size_t n = tp_buf_size(&c->in);
        int status;
        size_t clen;
        long hlen = lg_http_head(p, n, &status, &clen);
        if (hlen <= 0)
            return hlen == 0;
        size_t hl = (size_t)hlen;
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
                     lg_http_error_code(p + hl, clen, code, sizeof(code)));
            complete(c, c->head, name);
        }
        c->head++;
        tp_buf_consume(&c->in, hl + clen);
        conn_pump(c);
    }
}

static bool read_resp(struct lg_conn *c)
{
    for (;;) {
        const char *p = tp_buf_ptr(&c->in);
        size_t n = tp_buf_size(&c->in);
        if (n == 0)
            return true;
        long l = lg_resp_len(p, n);
        if (l < 0)
            return false;
        if (l == 0)
            return true;
        if (c->head >= c->sent)
            return false;
        char a[64] = "", b[64] = "", name[140];
        if (p[0] == '*') {
            const char *e1 = strstr(p, "\r\n") + 2;
            lg_resp_str(e1, a, sizeof(a));
            if (strcmp(a, "ok") == 0) {
                complete(c, c->head, NULL);
            } else {
                const char *e2 = e1 + lg_resp_len(e1, n - (size_t)(e1 - p));
                lg_resp_str(e2, b, sizeof(b));
                snprintf(name, sizeof(name), "%s %s", a, b);
                complete(c, c->head, name);
            }
        } else {
            lg_resp_str(p, a, sizeof(a));
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

/* The answer to ws bet `req` on c, ok or the error `code`: counted once, if it is one in flight. */
static void answer_bet(struct lg_conn *c, uint64_t req, const char *code)
{
    if (req < c->head || req >= c->sent || c->done[req & (LG_RING - 1)])
        return;
    c->done[req & (LG_RING - 1)] = 1;
    if (code == NULL) {
        complete(c, req, NULL);
    } else {
        char name[96];
        snprintf(name, sizeof(name), "bet_err %s", code);
        complete(c, req, name);
    }
    advance_ws(c);
    conn_pump(c);
}

/* One complete WebSocket message (binary MessagePack) from the server. */
static void on_ws_message(struct lg_conn *c, const char *p, size_t n)
{
    if (lg_opt.mode == LG_M_VIEWERS) {
        (void)c;
        lg_viewer_message(p, n);
        return;
    }
    uint64_t ok_req;
    if (lg_opt.mode == LG_M_WS_BET && lg_ws_bet_ok_req((const uint8_t *)p, n, &ok_req)) {
        answer_bet(c, ok_req, NULL);
        return;
    }
    struct tp_doc *doc = tp_doc_parse(TP_FMT_MSGPACK, p, n, NULL, 0);
    if (doc == NULL) {
        lg_err_count("bad_msgpack");
        return;
    }
    const struct tp_val *root = tp_doc_root(doc);
    const char *t = NULL;
    if (tp_val_get_str(root, "t", &t, NULL) != 0)
        t = "";
    if (lg_opt.mode == LG_M_WS_BET) {
        int64_t req;
        bool ok = strcmp(t, "bet_ok") == 0;
        if ((ok || strcmp(t, "bet_err") == 0) && tp_val_get_int(root, "req", &req) == 0 &&
            req >= 0) {
            const char *code = NULL;
            if (!ok && tp_val_get_str(root, "code", &code, NULL) != 0)
                code = "?";
            answer_bet(c, (uint64_t)req, ok ? NULL : code);
        } else if (strcmp(t, "error") == 0) {
            lg_err_count("ws error message");
        } else if (strcmp(t, "round") == 0 && lg_opt.follow_ms > 0) {
            /* The server's boundary: follow its open round from now on, so a late or missed
             * boundary (a cancelled round, a grid that moved) does not leave the clock
             * arithmetic on a round that never opens (session 5's soak: 2.3 M round_not_found
             * after its first minute). */
            const struct tp_val *rs = tp_val_get(root, "rounds");
            const struct tp_val *open = rs != NULL ? tp_val_get(rs, "open") : NULL;
            int64_t id;
            if (open != NULL && tp_val_get_int(open, "id", &id) == 0 && id != bet_round()) {
                lg_opt.round_id = id; /* every socket hears it: the first one re-anchors */
                lg_opt.follow_t0 = (int64_t)(lg_wall_us() / 1000);
            }
        }
    }
    tp_doc_free(doc);
}

/* Parses server frames (unmasked); returns false when the connection must close. */
static bool read_ws(struct lg_conn *c)
{
    for (;;) {
        const uint8_t *p = (const uint8_t *)tp_buf_ptr(&c->in);
        size_t n = tp_buf_size(&c->in);
        bool fin;
        int op;
        uint64_t len;
        int hlen = lg_ws_header(p, n, &fin, &op, &len);
        if (hlen <= 0)
            return hlen == 0;
        size_t h = (size_t)hlen;
        if (n < h + len)
            return true;
        const char *pl = (const char *)p + h;
        if (op == 0x8) {
            return false; /* close */
        } else if (op == 0x9) {
            lg_ws_frame(&c->out, 0xA, pl, (size_t)len, rnd32());
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

static bool read_handshake(struct lg_conn *c)
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
        lg_err_count(name);
        return false;
    }
    char hdr[8192];
    size_t cl = TP_MIN(hl, sizeof(hdr) - 1);
    memcpy(hdr, p, cl);
    hdr[cl] = 0;
    const char *acc = strcasestr(hdr, "\r\nsec-websocket-accept:");
    if (acc == NULL || strstr(acc, c->ws_accept) == NULL) {
        lg_err_count("ws bad accept");
        return false;
    }
    tp_buf_consume(&c->in, hl);
    c->st = LG_C_OPEN;
    lg_opened++;
    conn_pump(c);
    return read_ws(c);
}

/* A plain viewer socket's read, with the kernel's receive time of the bytes (SO_TIMESTAMPNS,
 * set by lg_conn_start): tp_io_read's returns; *rx_ns is left alone when no stamp came. */
static ssize_t read_stamped(int fd, char *dst, size_t n, uint64_t *rx_ns)
{
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = dst, .iov_len = n};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof(ctl.buf)};
    for (;;) {
        ssize_t r = recvmsg(fd, &m, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return tp_io_read_error(errno);
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm != NULL; cm = CMSG_NXTHDR(&m, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
                *rx_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
            }
        }
        return r;
    }
}

static void on_read(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct lg_conn *c = w->data;
    if (c->st == LG_C_TLS) {
        tls_step(c);
        return;
    }
    bool stamped = lg_opt.mode == LG_M_VIEWERS && lg_tls_ctx == NULL;
    lg_viewer_rx_ns = 0;
    for (;;) {
        char *dst = tp_buf_reserve(&c->in, 65536);
        ssize_t n = stamped ? read_stamped(c->fd, dst, 65536, &lg_viewer_rx_ns)
                            : tp_io_read(&c->io, dst, 65536);
        if (n > 0) {
            tp_buf_commit(&c->in, (size_t)n);
            /* A short plain read drained the socket; TLS may still hold decrypted bytes. */
            if (n < 65536 && lg_tls_ctx == NULL)
                break;
            continue;
        }
        if (n == TP_IO_WANT_READ || n == TP_IO_WANT_WRITE)
            break;
        conn_kill(c, n == 0 ? "closed_by_peer" : "read_error");
        return;
    }
    bool keep;
    if (c->st == LG_C_HANDSHAKE)
        keep = read_handshake(c);
    else if (lg_opt.mode == LG_M_HTTP_BET)
        keep = read_http(c);
    else if (lg_opt.mode == LG_M_REDIS_BET)
        keep = read_resp(c);
    else {
        lg_viewer_read_begin();
        keep = read_ws(c);
        lg_viewer_read_end();
    }
    if (!keep) {
        conn_kill(c, "protocol_or_close");
        return;
    }
    if (c->dirty) {
        c->dirty = false;
        conn_flush(c);
    }
    lg_maybe_finish();
}

static void start_ws_handshake(struct lg_conn *c)
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (uint8_t)rnd32();
    lg_ws_upgrade(&c->out, lg_opt.host, lg_opt.port, c->user != NULL ? c->user->token : NULL, raw,
                  c->ws_accept, sizeof(c->ws_accept));
    c->st = LG_C_HANDSHAKE;
}

/* The byte stream is up (TCP connected, TLS handshake done): HTTP bets start, WebSockets
 * upgrade. */
static void transport_ready(struct lg_conn *c)
{
    if (lg_opt.mode == LG_M_WS_BET || lg_opt.mode == LG_M_VIEWERS) {
        start_ws_handshake(c);
    } else {
        c->st = LG_C_OPEN;
        lg_opened++;
        conn_pump(c);
    }
}

/* Advances a TLS handshake on readiness; once done, the connection goes on as plain does. */
static void tls_step(struct lg_conn *c)
{
    int rc = tp_io_handshake(&c->io);
    if (rc == TP_IO_WANT_WRITE) {
        ev_io_start(lg_loop, &c->wio);
        return;
    }
    ev_io_stop(lg_loop, &c->wio);
    if (rc == TP_IO_WANT_READ)
        return;
    if (rc != 0) {
        lg_res.conn_fail++;
        conn_kill(c, "tls_handshake");
        return;
    }
    transport_ready(c);
    conn_flush(c);
}

static void on_write(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct lg_conn *c = w->data;
    if (c->st == LG_C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            lg_res.conn_fail++;
            conn_kill(c, "connect_failed");
            return;
        }
        connected++;
        ev_io_start(lg_loop, &c->rio);
        if (lg_tls_ctx != NULL) {
            if (tp_tls_io_init(&c->io, lg_tls_ctx, c->fd) != 0) {
                lg_res.conn_fail++;
                conn_kill(c, "tls_init");
                return;
            }
            c->st = LG_C_TLS;
            tls_step(c);
            return;
        }
        transport_ready(c);
    } else if (c->st == LG_C_TLS) {
        tls_step(c);
        return;
    }
    conn_flush(c);
}

static void conn_kill(struct lg_conn *c, const char *why)
{
    if (c->st == LG_C_DEAD)
        return;
    bool was_open = c->st == LG_C_OPEN;
    ev_io_stop(lg_loop, &c->rio);
    ev_io_stop(lg_loop, &c->wio);
    tp_io_deinit(&c->io); /* before close: TLS sends close_notify on this fd */
    close(c->fd);
    c->fd = -1;
    c->st = LG_C_DEAD;
    if (was_open)
        lg_opened--;
    if (!lg_stopping) {
        lg_res.conn_closed++;
        lg_err_count(why);
    }
    /* Everything still in flight on it is lost. */
    for (uint64_t s = c->head; s < c->tail; s++) {
        if (c->done != NULL && c->done[s & (LG_RING - 1)])
            continue;
        if (lg_measured(c->sched[s & (LG_RING - 1)]))
            lg_err_count("lost_on_close");
    }
    c->head = c->sent = c->tail;
}

int lg_conn_start(struct lg_conn *c, const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Viewers time each message from its arrival on the socket (lg_viewers.c). */
    if (lg_opt.mode == LG_M_VIEWERS && lg_tls_ctx == NULL)
        setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    tp_io_plain_init(&c->io, c->fd);
    ev_io_init(&c->rio, on_read, c->fd, EV_READ);
    ev_io_init(&c->wio, on_write, c->fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->st = LG_C_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        c->st = LG_C_DEAD;
        lg_res.conn_fail++;
        return -1;
    }
    ev_io_start(lg_loop, &c->wio);
    return 0;
}
