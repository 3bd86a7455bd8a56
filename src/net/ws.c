/*
 * WebSocket server sessions: wslay (event API) parses what the peer sends and produces the
 * control replies (pong, close); tickpool's own data frames bypass wslay's queue so that one
 * broadcast frame, encoded once, is shared by every socket (h2o lib/websocket.c does the
 * parsing half the same way).
 *
 * Output model. Every queued item references a `tp_ws_frame` (direct messages get a private
 * one). tp_ws_flush copies as many queued bytes as fit into a per-thread 64 KiB gather buffer
 * and writes them with one call; bytes a write did not take are kept in `pend` (per session,
 * exact size) and written first next time. After TP_IO_WANT_* the very same bytes and length
 * are retried, which mbedTLS requires of mbedtls_ssl_write. Once an item's bytes are copied
 * for writing it can no longer be dropped, so a receiver never sees a torn frame.
 */
#include "tickpool/net/ws.h"

#include <string.h>
#include <strings.h>

#include <wslay/wslay.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"
#include "tickpool/net/io.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"

#define GATHER_MAX (64 * 1024)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define OP_CLOSE 0x8
#define OP_PING 0x9
#define OP_PONG 0xA
#define PARTIAL_REASON "message budget exceeded"

struct tp_ws_frame {
    int refs;     /* atomic */
    uint8_t kind; /* enum tp_ws_kind */
    size_t len;   /* bytes in data: header + payload */
    uint8_t data[];
};

struct qitem {
    struct qitem *next, *prev;
    struct tp_ws_frame *f; /* one reference owned by the item */
    size_t off;            /* bytes already handed to the writer */
    bool ctrl;             /* ping/pong: goes ahead of data frames */
};

struct tp_ws {
    wslay_event_context_ptr ctx;
    struct tp_ws_limits limits;
    const struct tp_ws_callbacks *cb;
    void *ud;

    /* Input being fed: wslay's recv callback serves from here. */
    const uint8_t *in;
    size_t in_len;

    struct tp_buf ctrl; /* bytes wslay "sent" during the last pump, split into frames after */

    struct qitem *head, *tail;
    struct qitem *latest[TP_WS_KIND_COUNT_]; /* newest queued item of each droppable kind */
    uint8_t *pend;                           /* bytes taken from the queue, not yet written */
    size_t pend_off, pend_len;
    size_t queued; /* items' unwritten bytes + pend's */

    int64_t last_seen;
    int64_t close_since; /* tp_mono_ms() when closing started, 0 before */
    int64_t msg_since;   /* tp_mono_ms() when the data message being received started, 0: none */
    size_t partial;      /* payload bytes announced by the unfinished message's frames so far */
    uint64_t dropped;

    bool in_feed;      /* inside wslay_event_recv: defer wslay_event_send */
    bool closing;      /* a close was started (by us or the peer): no more data */
    bool local_close;  /* tp_ws_close was called */
    bool close_queued; /* a close frame sits in (or went through) our queue */
    bool failed;       /* wslay reported a fatal error: never call it again */
    bool dead;         /* queue overflow: output discarded but for the close frame */
    bool notified;     /* on_close fired */
};

static struct tp_ws_stats g_stats;

/* Unfinished incoming messages' bytes in this process (a worker is a process with one loop
 * thread): wslay allocates each data frame's announced payload when its header arrives, so
 * that is what is counted against limits.partial_budget. */
static size_t g_partial;

static void partial_release(struct tp_ws *ws)
{
    g_partial -= ws->partial;
    ws->partial = 0;
    __atomic_store_n(&g_stats.partial_bytes, (uint64_t)g_partial, __ATOMIC_RELAXED);
}

static void stat_inc(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* No more data either way; the close frame (if any) is on its way, within TP_WS_CLOSE_FLUSH_MS. */
static void start_closing(struct tp_ws *ws)
{
    if (!ws->closing)
        ws->close_since = tp_mono_ms();
    ws->closing = true;
}

/* --- Frames --- */

/* Writes a server frame header (no mask) for `len` payload bytes; returns its size. */
static size_t encode_header(uint8_t *h, uint8_t b0, uint64_t len)
{
    h[0] = b0;
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

static struct tp_ws_frame *frame_alloc(size_t len, enum tp_ws_kind kind)
{
    struct tp_ws_frame *f = tp_xmalloc(sizeof(*f) + len);
    f->refs = 1;
    f->kind = (uint8_t)kind;
    f->len = len;
    return f;
}

static struct tp_ws_frame *frame_encode(uint8_t b0, const void *payload, size_t len,
                                        enum tp_ws_kind kind)
{
    uint8_t h[10];
    size_t hl = encode_header(h, b0, len);
    TP_ASSERT(len <= SIZE_MAX - hl - sizeof(struct tp_ws_frame));
    struct tp_ws_frame *f = frame_alloc(hl + len, kind);
    memcpy(f->data, h, hl);
    if (len > 0)
        memcpy(f->data + hl, payload, len);
    return f;
}

struct tp_ws_frame *tp_ws_frame_new(const void *payload, size_t len, enum tp_ws_kind kind)
{
    TP_ASSERT((unsigned)kind < TP_WS_KIND_COUNT_);
    return frame_encode(0x80 | 0x2, payload, len, kind);
}

void tp_ws_frame_ref(struct tp_ws_frame *f)
{
    int old = __atomic_fetch_add(&f->refs, 1, __ATOMIC_RELAXED);
    TP_ASSERT(old > 0);
}

void tp_ws_frame_unref(struct tp_ws_frame *f)
{
    if (f == NULL)
        return;
    int old = __atomic_fetch_sub(&f->refs, 1, __ATOMIC_ACQ_REL);
    TP_ASSERT(old > 0);
    if (old == 1)
        free(f);
}

const uint8_t *tp_ws_frame_bytes(const struct tp_ws_frame *f, size_t *len)
{
    *len = f->len;
    return f->data;
}

int tp_ws_frame_refs(const struct tp_ws_frame *f)
{
    return __atomic_load_n(&f->refs, __ATOMIC_RELAXED);
}

/* --- Output queue --- */

static void q_unlink(struct tp_ws *ws, struct qitem *it)
{
    if (it->prev != NULL)
        it->prev->next = it->next;
    else
        ws->head = it->next;
    if (it->next != NULL)
        it->next->prev = it->prev;
    else
        ws->tail = it->prev;
}

/* Inserts `it` after `prev` (at the head when prev is NULL). */
static void q_link_after(struct tp_ws *ws, struct qitem *prev, struct qitem *it)
{
    it->prev = prev;
    it->next = prev != NULL ? prev->next : ws->head;
    if (it->next != NULL)
        it->next->prev = it;
    else
        ws->tail = it;
    if (prev != NULL)
        prev->next = it;
    else
        ws->head = it;
}

/* Removes an item, forgetting its unwritten bytes, and drops its frame reference. */
static void q_remove(struct tp_ws *ws, struct qitem *it)
{
    q_unlink(ws, it);
    ws->queued -= it->f->len - it->off;
    if (ws->latest[it->f->kind] == it)
        ws->latest[it->f->kind] = NULL;
    tp_ws_frame_unref(it->f);
    free(it);
}

static void discard_output(struct tp_ws *ws)
{
    while (ws->head != NULL)
        q_remove(ws, ws->head);
    free(ws->pend);
    ws->pend = NULL;
    ws->pend_off = ws->pend_len = 0;
    ws->queued = 0;
}

/* Links a close frame with `code` at the tail, whatever the queue's size (it is tiny). */
static void link_close_frame(struct tp_ws *ws, uint16_t code, const char *reason)
{
    uint8_t payload[2 + 123] = {(uint8_t)(code >> 8), (uint8_t)code};
    size_t rlen = reason != NULL ? strnlen(reason, 123) : 0;
    if (rlen > 0) /* memcpy's source must not be NULL, even for 0 bytes */
        memcpy(payload + 2, reason, rlen);
    struct qitem *it = tp_xcalloc(1, sizeof(*it));
    it->f = frame_encode(0x80 | OP_CLOSE, payload, 2 + rlen, TP_WS_KIND_DIRECT);
    q_link_after(ws, ws->tail, it);
    ws->queued += it->f->len;
    start_closing(ws);
    ws->close_queued = true;
}

/* The peer is too slow: free everything it has queued but a frame already going out (never
 * torn), and end with a close frame 1013 (try again later) so the client learns why; the
 * socket is closed once that is written or TP_WS_CLOSE_FLUSH_MS later (tp_ws_close_deadline_ms). */
static void overflow(struct tp_ws *ws)
{
    tp_log_info("ws", "slow consumer closed\tqueued=%zu max_queue=%zu", ws->queued,
                ws->limits.max_queue);
    for (struct qitem *it = ws->head, *next; it != NULL; it = next) {
        next = it->next;
        if (it->off == 0 && (it->f->data[0] & 0x0f) != OP_CLOSE)
            q_remove(ws, it);
    }
    ws->dead = true;
    if (!ws->failed)
        wslay_event_shutdown_read(ws->ctx);
    if (!ws->close_queued)
        link_close_frame(ws, TP_WS_CLOSE_TRY_AGAIN, "send queue full");
    start_closing(ws);
    stat_inc(&g_stats.overflow_closes);
}

/*
 * Queues `f`, taking over the caller's reference. A droppable kind first removes the queued
 * frame of that kind unless its bytes started going out (newest wins); control frames (`ctrl`)
 * go ahead of every data frame not yet started. Returns 0 or TP_ETOOBIG after an overflow.
 */
static int enqueue(struct tp_ws *ws, struct tp_ws_frame *f, bool ctrl)
{
    /* Which queued kinds a new frame of each kind makes useless (bit k: kind k). */
    static const uint8_t supersedes[TP_WS_KIND_COUNT_] = {
        [TP_WS_KIND_TICK] = 1u << TP_WS_KIND_TICK,
        [TP_WS_KIND_ODDS] = 1u << TP_WS_KIND_ODDS,
        [TP_WS_KIND_TICK_ODDS] =
            1u << TP_WS_KIND_TICK | 1u << TP_WS_KIND_ODDS | 1u << TP_WS_KIND_TICK_ODDS,
    };
    for (int k = 1; k < TP_WS_KIND_COUNT_; k++) {
        struct qitem *old = ws->latest[k];
        if ((supersedes[f->kind] & (1u << k)) == 0 || old == NULL || old->off != 0)
            continue;
        q_remove(ws, old);
        ws->dropped++;
        stat_inc(&g_stats.dropped[k]);
        tp_metrics_inc(TP_METRIC_WS_FRAMES_DROPPED_TOTAL);
    }
    if (f->len > ws->limits.max_queue || ws->queued > ws->limits.max_queue - f->len) {
        tp_ws_frame_unref(f);
        overflow(ws);
        return TP_ETOOBIG;
    }
    struct qitem *it = tp_xcalloc(1, sizeof(*it));
    it->f = f;
    it->ctrl = ctrl;
    struct qitem *prev = ws->tail;
    if (ctrl) {
        prev = NULL;
        for (struct qitem *p = ws->head; p != NULL && (p->off > 0 || p->ctrl); p = p->next)
            prev = p;
    }
    q_link_after(ws, prev, it);
    ws->queued += f->len;
    if (f->kind != TP_WS_KIND_DIRECT)
        ws->latest[f->kind] = it;
    return 0;
}

/*
 * Lets wslay emit what it queued (pongs, close replies) into ws->ctrl through send_cb, then
 * moves each complete frame into our queue. Deferred while inside wslay_event_recv: tp_ws_feed
 * pumps once parsing is over.
 */
static void pump(struct tp_ws *ws)
{
    if (ws->in_feed || ws->failed || ws->dead)
        return;
    if (wslay_event_send(ws->ctx) != 0) {
        ws->failed = true; /* cannot happen: send_cb never fails */
        tp_log_error("ws", "wslay_event_send failed");
    }
    const uint8_t *p = (const uint8_t *)tp_buf_ptr(&ws->ctrl);
    size_t n = tp_buf_size(&ws->ctrl);
    while (n >= 2 && !ws->dead) {
        uint64_t plen = p[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126 || plen == 127) {
            hl = plen == 126 ? 4 : 10;
            TP_ASSERT(n >= hl);
            plen = 0;
            for (size_t i = 2; i < hl; i++)
                plen = plen << 8 | p[i];
        }
        TP_ASSERT(n - hl >= plen); /* wslay_event_send finishes every frame it starts */
        size_t flen = hl + (size_t)plen;
        struct tp_ws_frame *f = frame_alloc(flen, TP_WS_KIND_DIRECT);
        memcpy(f->data, p, flen);
        unsigned op = p[0] & 0x0f;
        if (op == OP_CLOSE) {
            start_closing(ws);
            ws->close_queued = true;
        }
        enqueue(ws, f, op == OP_PING || op == OP_PONG);
        p += flen;
        n -= flen;
    }
    tp_buf_reset(&ws->ctrl);
}

/* Copies queued bytes into `dst` (at most `cap`), consuming items; returns the count. */
static size_t gather(struct tp_ws *ws, uint8_t *dst, size_t cap)
{
    size_t used = 0;
    while (ws->head != NULL && used < cap) {
        struct qitem *it = ws->head;
        size_t take = TP_MIN(it->f->len - it->off, cap - used);
        memcpy(dst + used, it->f->data + it->off, take);
        used += take;
        it->off += take;
        if (it->off == it->f->len) {
            q_remove(ws, it); /* removes 0 unwritten bytes: they are counted until written */
        }
    }
    return used;
}

/* Keeps bytes taken from the queue but not written, to be written first next time. */
static void stash(struct tp_ws *ws, const uint8_t *p, size_t n)
{
    TP_ASSERT(ws->pend == NULL);
    ws->pend = tp_xmalloc(n);
    memcpy(ws->pend, p, n);
    ws->pend_off = 0;
    ws->pend_len = n;
}

int tp_ws_flush(struct tp_ws *ws, struct tp_io *io)
{
    /* Per thread, not per session: 64 KiB for each of 10k idle sockets would be 640 MB. */
    static __thread uint8_t gbuf[GATHER_MAX];
    for (;;) {
        const uint8_t *p;
        size_t n;
        bool from_pend = ws->pend != NULL;
        if (from_pend) {
            p = ws->pend + ws->pend_off;
            n = ws->pend_len - ws->pend_off;
        } else {
            n = gather(ws, gbuf, sizeof(gbuf));
            if (n == 0)
                return 0;
            p = gbuf;
        }
        ssize_t w = tp_io_write(io, p, n);
        if (w <= 0) {
            if (!from_pend)
                stash(ws, p, n);
            if (w == 0)
                return TP_IO_WANT_WRITE;
            return (int)w; /* TP_IO_WANT_* or a TP_E* error */
        }
        TP_ASSERT((size_t)w <= n);
        ws->queued -= (size_t)w;
        if (from_pend) {
            ws->pend_off += (size_t)w;
            if (ws->pend_off == ws->pend_len) {
                free(ws->pend);
                ws->pend = NULL;
                ws->pend_off = ws->pend_len = 0;
            }
        } else if ((size_t)w < n) {
            stash(ws, p + w, n - (size_t)w);
        }
    }
}

bool tp_ws_has_output(const struct tp_ws *ws)
{
    return ws->pend != NULL || ws->head != NULL;
}

bool tp_ws_want_close(const struct tp_ws *ws)
{
    return ws->close_queued && !tp_ws_has_output(ws);
}

int64_t tp_ws_close_deadline_ms(const struct tp_ws *ws)
{
    return ws->closing ? ws->close_since + TP_WS_CLOSE_FLUSH_MS : 0;
}

int64_t tp_ws_message_since_ms(const struct tp_ws *ws)
{
    return ws->msg_since;
}

void tp_ws_set_max_message(struct tp_ws *ws, size_t max)
{
    ws->limits.max_message = max;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max);
}

size_t tp_ws_queued_bytes(const struct tp_ws *ws)
{
    return ws->queued;
}

uint64_t tp_ws_dropped(const struct tp_ws *ws)
{
    return ws->dropped;
}

void tp_ws_stats_get(struct tp_ws_stats *out)
{
    for (int k = 0; k < TP_WS_KIND_COUNT_; k++)
        out->dropped[k] = __atomic_load_n(&g_stats.dropped[k], __ATOMIC_RELAXED);
    out->overflow_closes = __atomic_load_n(&g_stats.overflow_closes, __ATOMIC_RELAXED);
    out->partial_bytes = __atomic_load_n(&g_stats.partial_bytes, __ATOMIC_RELAXED);
    out->protocol_closes = __atomic_load_n(&g_stats.protocol_closes, __ATOMIC_RELAXED);
}

/* --- Sending --- */

int tp_ws_send_frame(struct tp_ws *ws, struct tp_ws_frame *f)
{
    if (ws->closing)
        return TP_ECLOSED;
    tp_ws_frame_ref(f);
    return enqueue(ws, f, false);
}

int tp_ws_send(struct tp_ws *ws, const void *payload, size_t len)
{
    if (ws->closing)
        return TP_ECLOSED;
    return enqueue(ws, tp_ws_frame_new(payload, len, TP_WS_KIND_DIRECT), false);
}

void tp_ws_close(struct tp_ws *ws, uint16_t code, const char *reason)
{
    if (ws->closing || ws->dead || ws->failed)
        return;
    start_closing(ws);
    ws->local_close = true;
    size_t rlen = reason != NULL ? strnlen(reason, 123) : 0;
    /* NO_MORE_MSG means wslay already queued a close (a reply): that one goes out instead. */
    (void)wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, rlen);
    /* Nothing the peer sends after our close matters: stop parsing (and calling back). */
    wslay_event_shutdown_read(ws->ctx);
    pump(ws);
}

void tp_ws_ping(struct tp_ws *ws)
{
    if (ws->closing || ws->dead || ws->failed)
        return;
    uint8_t payload[8];
    uint64_t now = (uint64_t)tp_mono_ms();
    for (int i = 0; i < 8; i++)
        payload[i] = (uint8_t)(now >> (56 - 8 * i));
    struct wslay_event_msg msg = {.opcode = WSLAY_PING, .msg = payload, .msg_length = 8};
    if (wslay_event_queue_msg(ws->ctx, &msg) == 0)
        pump(ws);
}

int64_t tp_ws_last_seen_ms(const struct tp_ws *ws)
{
    return ws->last_seen;
}

/* --- Receiving --- */

/*
 * Strict UTF-8 check (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). wslay
 * 1.1 validates text frames itself; this second check keeps the 1007 guarantee independent
 * of the library version, and costs nothing for tickpool's binary protocol.
 */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

/* wslay asks for input: serve it from the buffer given to tp_ws_feed. */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    struct tp_ws *ws = ud;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = TP_MIN(len, ws->in_len);
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

/* wslay "sends" a control frame: collect it; pump() queues it. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    (void)ctx, (void)flags;
    struct tp_ws *ws = ud;
    tp_buf_append(&ws->ctrl, data, len);
    return (ssize_t)len;
}

/* A frame header arrived: a data message's first frame starts its clock (control frames
 * interleaved with fragments do not count), and its payload counts against the process's
 * budget for unfinished messages until the message is complete or the session ends. */
static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    struct tp_ws *ws = ud;
    if (arg->opcode >= 0x8)
        return;
    if (ws->msg_since == 0)
        ws->msg_since = tp_mono_ms();
    size_t n = (size_t)TP_MIN(arg->payload_length, (uint64_t)SIZE_MAX / 4);
    size_t budget = ws->limits.partial_budget;
    if (budget > 0 && g_partial + n > budget) {
        /* wslay is about to hold n more bytes for this socket: it is closed instead (its
         * buffer goes with the session, moments later), and the bytes are not counted, so the
         * sockets that keep within the budget are not refused meanwhile. */
        (void)wslay_event_queue_close(ctx, TP_WS_CLOSE_POLICY, (const uint8_t *)PARTIAL_REASON,
                                      sizeof(PARTIAL_REASON) - 1);
        wslay_event_shutdown_read(ctx);
        stat_inc(&g_stats.protocol_closes);
        return;
    }
    ws->partial += n;
    g_partial += n;
    __atomic_store_n(&g_stats.partial_bytes, (uint64_t)g_partial, __ATOMIC_RELAXED);
}

static void on_msg_recv(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                        void *ud)
{
    struct tp_ws *ws = ud;
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
        return; /* ping/pong/close: wslay replied; tp_ws_feed reports the close */
    ws->msg_since = 0;
    partial_release(ws); /* wslay frees the message's buffers when this callback returns */
    if (ws->closing)
        return;
    bool binary = arg->opcode == WSLAY_BINARY_FRAME;
    if (!binary && !utf8_valid(arg->msg, arg->msg_length)) {
        (void)wslay_event_queue_close(ctx, TP_WS_CLOSE_INVALID_DATA, NULL, 0);
        wslay_event_shutdown_read(ctx);
        return;
    }
    if (ws->cb != NULL && ws->cb->on_message != NULL)
        ws->cb->on_message(ws, arg->msg, arg->msg_length, binary, ws->ud);
}

static void notify_close(struct tp_ws *ws, uint16_t code)
{
    if (ws->notified)
        return;
    ws->notified = true;
    if (ws->cb != NULL && ws->cb->on_close != NULL)
        ws->cb->on_close(ws, code, ws->ud);
}

int tp_ws_feed(struct tp_ws *ws, const void *data, size_t len)
{
    if (ws->dead || ws->failed || !wslay_event_get_read_enabled(ws->ctx))
        return TP_ECLOSED;
    if (len > 0)
        ws->last_seen = tp_mono_ms();
    ws->in = data;
    ws->in_len = len;
    ws->in_feed = true;
    int r;
    /* wslay may stop early (a header cut at its 4 KiB buffer's end); go on while input lasts. */
    do {
        r = wslay_event_recv(ws->ctx);
    } while (r == 0 && ws->in_len > 0 && wslay_event_get_read_enabled(ws->ctx) && !ws->dead);
    ws->in_feed = false;
    ws->in = NULL;
    ws->in_len = 0;
    if (ws->dead)
        return 0; /* a callback overflowed the queue: nothing more to say */
    if (r != 0) {
        /* The frame layer gave up (fragmented or oversized control frame, non-minimal length):
         * wslay may not be called again, so the 1002 close is ours. */
        ws->failed = true;
        link_close_frame(ws, TP_WS_CLOSE_PROTOCOL, NULL); /* bypassing wslay */
        stat_inc(&g_stats.protocol_closes);
        notify_close(ws, TP_WS_CLOSE_PROTOCOL);
        return 0;
    }
    pump(ws);
    if (wslay_event_get_close_received(ws->ctx)) {
        start_closing(ws);
        notify_close(ws, wslay_event_get_status_code_received(ws->ctx));
    } else if (!wslay_event_get_read_enabled(ws->ctx) && !ws->local_close && !ws->notified) {
        uint16_t code = wslay_event_get_status_code_sent(ws->ctx);
        start_closing(ws);
        stat_inc(&g_stats.protocol_closes);
        notify_close(ws, code);
    }
    return 0;
}

/* --- Life cycle --- */

struct tp_ws *tp_ws_new(const struct tp_ws_limits *limits, const struct tp_ws_callbacks *cb,
                        void *ud)
{
    static const struct wslay_event_callbacks wcb = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = on_frame_start,
        .on_msg_recv_callback = on_msg_recv,
    };
    struct tp_ws *ws = tp_xcalloc(1, sizeof(*ws));
    if (limits != NULL) {
        ws->limits = *limits;
    } else {
        ws->limits.max_message = TP_WS_DEFAULT_MAX_MESSAGE;
        ws->limits.max_queue = TP_WS_DEFAULT_MAX_QUEUE;
    }
    ws->cb = cb;
    ws->ud = ud;
    tp_buf_init(&ws->ctrl);
    if (wslay_event_context_server_init(&ws->ctx, &wcb, ws) != 0)
        tp_log_fatal("ws", "wslay_event_context_server_init: out of memory");
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->limits.max_message);
    ws->last_seen = tp_mono_ms();
    return ws;
}

void tp_ws_free(struct tp_ws *ws)
{
    if (ws == NULL)
        return;
    TP_ASSERT(!ws->in_feed);
    partial_release(ws);
    discard_output(ws);
    tp_buf_deinit(&ws->ctrl);
    wslay_event_context_free(ws->ctx);
    free(ws);
}

/* --- Upgrade checks --- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims blanks around s[0..*n); returns the new start. */
static const char *trim(const char *s, size_t *n)
{
    while (*n > 0 && is_blank(*s))
        s++, (*n)--;
    while (*n > 0 && is_blank(s[*n - 1]))
        (*n)--;
    return s;
}

/* True when the comma/blank separated list `s` holds the token `tok` exactly. */
static bool list_has_token(const char *s, const char *tok)
{
    size_t tl = strlen(tok);
    while (*s != '\0') {
        while (*s == ',' || is_blank(*s))
            s++;
        size_t n = 0;
        while (s[n] != '\0' && s[n] != ',' && !is_blank(s[n]))
            n++;
        if (n == tl && memcmp(s, tok, n) == 0)
            return true;
        s += n;
    }
    return false;
}

int tp_ws_check_upgrade(const char *key, const char *version, const char *protocols,
                        char accept[29])
{
    if (key == NULL || version == NULL)
        return TP_EINVAL;
    size_t kn = strlen(key), vn = strlen(version);
    key = trim(key, &kn);
    version = trim(version, &vn);
    uint8_t raw[18];
    if (kn != 24 || tp_base64_decode(key, kn, raw, sizeof(raw)) != 16)
        return TP_EINVAL;
    if (vn != 2 || memcmp(version, "13", 2) != 0)
        return TP_EINVAL;
    if (protocols == NULL || !list_has_token(protocols, TP_WS_SUBPROTOCOL))
        return TP_EPROTO;
    char cat[24 + sizeof(WS_GUID)];
    memcpy(cat, key, 24);
    memcpy(cat + 24, WS_GUID, sizeof(WS_GUID) - 1);
    uint8_t digest[TP_SHA1_LEN];
    tp_sha1(cat, 24 + sizeof(WS_GUID) - 1, digest);
    int r = tp_base64_encode(digest, sizeof(digest), accept, 29);
    TP_ASSERT(r == 28);
    return 0;
}

bool tp_ws_origin_allowed(const char *origin, const char *allowlist, const char *host)
{
    if (origin == NULL)
        return true;
    size_t on = strlen(origin);
    origin = trim(origin, &on);
    bool any_entry = false;
    for (const char *s = allowlist; s != NULL && *s != '\0';) {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        const char *e = trim(s, &n);
        if (n > 0) {
            any_entry = true;
            if (n == on && memcmp(e, origin, n) == 0)
                return true;
        }
        if (comma == NULL)
            break;
        s = comma + 1;
    }
    if (any_entry)
        return false;
    /* Empty allowlist: same host only. */
    if (host == NULL)
        return false;
    size_t hn = strlen(host);
    host = trim(host, &hn);
    size_t skip;
    if (on > 7 && strncasecmp(origin, "http://", 7) == 0)
        skip = 7;
    else if (on > 8 && strncasecmp(origin, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    return hn > 0 && on - skip == hn && strncasecmp(origin + skip, host, hn) == 0;
}
