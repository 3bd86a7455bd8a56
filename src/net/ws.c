/*
 * WebSocket server sessions on top of net/ws_frame (RFC 6455 framing): the close handshake,
 * ping/pong, the limits on what a peer may make us hold, and an output queue through which
 * one broadcast frame, encoded once, is shared by every socket.
 *
 * Memory. An idle session holds only this struct and its parser's fixed state (a few hundred
 * bytes): a message's buffer exists only while the message is incomplete, bytes a write did
 * not take (`pend`) only until they are written, and the 64 KiB gather buffer is per thread.
 *
 * Output model. Every queued item references a `tp_ws_frame` (direct messages get a private
 * one). tp_ws_flush copies as many queued bytes as fit into the gather buffer and writes them
 * with one call; bytes a write did not take are kept in `pend` (per session, exact size) and
 * written first next time. After TP_IO_WANT_* the very same bytes and length are retried,
 * which mbedTLS requires of mbedtls_ssl_write. Once an item's bytes are copied for writing it
 * can no longer be dropped, so a receiver never sees a torn frame.
 */
#include "tickpool/net/ws.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/net/io.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"

#define GATHER_MAX (64 * 1024)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define PARTIAL_REASON "message budget exceeded"

struct qitem {
    struct qitem *next, *prev;
    struct tp_ws_frame *f; /* one reference owned by the item */
    const uint8_t *data;   /* f's bytes, kept here: the flush loop touches nothing else */
    size_t len, off;       /* f's byte count; bytes already handed to the writer */
    uint8_t kind;          /* f's kind */
    bool ctrl;             /* ping/pong: goes ahead of data frames */
};

struct tp_ws {
    /* What a beat written straight from its frame reads (tp_ws_write_frame), first. */
    struct qitem *head, *tail;
    uint8_t *pend; /* bytes taken from the queue, not yet written */
    size_t pend_off, pend_len;
    size_t queued; /* items' unwritten bytes + pend's */
    bool closing;  /* a close was started (by us or the peer): no more data */
    struct tp_ws_limits limits;

    const struct tp_ws_callbacks *cb;
    void *ud;
    struct qitem *latest[TP_WS_KIND_COUNT_]; /* newest queued item of each droppable kind */
    /* A queue usually holds at most one frame (the beat being written): this item serves it
     * without a malloc and free per socket and beat. */
    struct qitem spare;
    bool spare_used;

    int64_t last_seen;
    int64_t close_since; /* tp_mono_ms() when closing started, 0 before */
    int64_t msg_since;   /* tp_mono_ms() when the data message being received started, 0: none */
    size_t partial;      /* payload bytes announced by the unfinished message's frames so far */
    uint64_t dropped;

    bool in_feed;      /* inside tp_ws_feed: the parser's message is in use */
    bool read_stopped; /* nothing more is parsed (a close was sent or received, or an error) */
    bool close_queued; /* a close frame sits in (or went through) our queue */
    bool dead;         /* queue overflow: output discarded but for the close frame */
    bool notified;     /* on_close fired */

    struct tp_ws_frame_parser parser;
};

static struct tp_ws_stats g_stats;

/* Unfinished incoming messages' bytes in this process (a worker is a process with one loop
 * thread). What each data frame's header announces is counted when the header arrives, before
 * its payload is read, against limits.partial_budget. */
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

/* Nothing the peer sends from now on is parsed; an unfinished message is forgotten (its
 * buffer freed at once, or at the end of tp_ws_feed while a callback may still read it). */
static void stop_reading(struct tp_ws *ws)
{
    ws->read_stopped = true;
    ws->msg_since = 0;
    partial_release(ws);
    if (!ws->in_feed)
        tp_ws_frame_parser_deinit(&ws->parser);
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

static struct qitem *q_item(struct tp_ws *ws, struct tp_ws_frame *f, bool ctrl)
{
    struct qitem *it = &ws->spare;
    if (ws->spare_used)
        it = tp_xmalloc(sizeof(*it));
    else
        ws->spare_used = true;
    memset(it, 0, sizeof(*it));
    it->f = f;
    it->data = tp_ws_frame_bytes(f, &it->len);
    it->kind = (uint8_t)tp_ws_frame_kind(f);
    it->ctrl = ctrl;
    return it;
}

/* Drops an unlinked item's frame reference and frees it (or gives the spare back). */
static void q_free(struct tp_ws *ws, struct qitem *it)
{
    tp_ws_frame_unref(it->f);
    if (it == &ws->spare)
        ws->spare_used = false;
    else
        free(it);
}

/* Removes an item, forgetting its unwritten bytes. */
static void q_remove(struct tp_ws *ws, struct qitem *it)
{
    q_unlink(ws, it);
    ws->queued -= it->len - it->off;
    if (ws->latest[it->kind] == it)
        ws->latest[it->kind] = NULL;
    q_free(ws, it);
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

/* Links a close frame at the tail, whatever the queue's size (it is tiny): its payload is
 * `code` and `reason` (NULL or cut to 123 bytes), or `raw` as is when not NULL (an echo). */
static void link_close_frame(struct tp_ws *ws, uint16_t code, const char *reason,
                             const uint8_t *raw, size_t raw_len)
{
    uint8_t payload[TP_WS_FRAME_CONTROL_MAX] = {(uint8_t)(code >> 8), (uint8_t)code};
    size_t len = 2;
    if (raw != NULL) {
        len = raw_len;
        if (len > 0)
            memcpy(payload, raw, len);
    } else if (reason != NULL) {
        size_t rlen = strnlen(reason, TP_WS_FRAME_CONTROL_MAX - 2);
        memcpy(payload + 2, reason, rlen);
        len += rlen;
    }
    struct qitem *it = q_item(ws, tp_ws_frame_new_control(TP_WS_OP_CLOSE, payload, len), false);
    q_link_after(ws, ws->tail, it);
    ws->queued += it->len;
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
        if (it->off == 0 && (it->data[0] & 0x0f) != TP_WS_OP_CLOSE)
            q_remove(ws, it);
    }
    ws->dead = true;
    stop_reading(ws);
    if (!ws->close_queued)
        link_close_frame(ws, TP_WS_CLOSE_TRY_AGAIN, "send queue full", NULL, 0);
    start_closing(ws);
    stat_inc(&g_stats.overflow_closes);
}

/*
 * Queues `f`, taking over the caller's reference. A droppable kind first removes the queued
 * frame of that kind unless its bytes started going out (newest wins); control frames (`ctrl`)
 * go ahead of every data frame not yet started; a round change goes ahead of the droppable
 * frames not yet started at the tail (never ahead of a reply or another round change, whose
 * order is kept). Returns 0 or TP_ETOOBIG after an overflow.
 */
static int enqueue(struct tp_ws *ws, struct tp_ws_frame *f, bool ctrl)
{
    enum tp_ws_kind kind = tp_ws_frame_kind(f);
    for (int k = 1; k < TP_WS_KIND_COUNT_; k++) {
        struct qitem *old = ws->latest[k];
        if (old == NULL || old->off != 0 || !tp_ws_kind_supersedes(kind, (enum tp_ws_kind)k))
            continue;
        q_remove(ws, old);
        ws->dropped++;
        stat_inc(&g_stats.dropped[k]);
        tp_metrics_inc(TP_METRIC_WS_FRAMES_DROPPED_TOTAL);
    }
    struct qitem *it = q_item(ws, f, ctrl); /* after the drops: the spare may be free again */
    if (it->len > ws->limits.max_queue || ws->queued > ws->limits.max_queue - it->len) {
        q_free(ws, it);
        overflow(ws);
        return TP_ETOOBIG;
    }
    struct qitem *prev = ws->tail;
    if (ctrl) {
        prev = NULL;
        for (struct qitem *p = ws->head; p != NULL && (p->off > 0 || p->ctrl); p = p->next)
            prev = p;
    } else if (kind == TP_WS_KIND_ROUND) {
        while (prev != NULL && prev->off == 0 && !prev->ctrl && tp_ws_kind_droppable(prev->kind))
            prev = prev->prev;
    }
    q_link_after(ws, prev, it);
    ws->queued += it->len;
    if (tp_ws_kind_droppable(it->kind))
        ws->latest[it->kind] = it;
    return 0;
}

/* Copies queued bytes into `dst` (at most `cap`), consuming items; returns the count. */
static size_t gather(struct tp_ws *ws, uint8_t *dst, size_t cap)
{
    size_t used = 0;
    while (ws->head != NULL && used < cap) {
        struct qitem *it = ws->head;
        size_t take = TP_MIN(it->len - it->off, cap - used);
        memcpy(dst + used, it->data + it->off, take);
        used += take;
        it->off += take;
        if (it->off == it->len) {
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

/* One write of `n` gathered bytes (`p`, taken from the queue) returned `w` (tp_io_write's
 * result): the bytes not written are kept to go first (stash). 0 when it wrote some, else
 * TP_IO_WANT_WRITE (nothing written) or tp_io_write's TP_IO_WANT_* or TP_E*. The one handling of
 * a gathered write: tp_ws_flush's and a batch's (tp_ws_output_written). */
static int gathered_written(struct tp_ws *ws, const uint8_t *p, size_t n, ssize_t w)
{
    if (w <= 0) {
        stash(ws, p, n);
        return w == 0 ? TP_IO_WANT_WRITE : (int)w;
    }
    TP_ASSERT((size_t)w <= n);
    ws->queued -= (size_t)w;
    if ((size_t)w < n)
        stash(ws, p + w, n - (size_t)w);
    return 0;
}

int tp_ws_flush(struct tp_ws *ws, struct tp_io *io)
{
    /* Per thread, not per session: 64 KiB for each of 10k idle sockets would be 640 MB. */
    static __thread uint8_t gbuf[GATHER_MAX];
    for (;;) {
        if (ws->pend == NULL) {
            size_t n = gather(ws, gbuf, sizeof(gbuf));
            if (n == 0)
                return 0;
            int r = gathered_written(ws, gbuf, n, tp_io_write(io, gbuf, n));
            if (r != 0)
                return r;
            continue;
        }
        ssize_t w = tp_io_write(io, ws->pend + ws->pend_off, ws->pend_len - ws->pend_off);
        if (w <= 0)
            return w == 0 ? TP_IO_WANT_WRITE : (int)w; /* TP_IO_WANT_* or a TP_E* error */
        TP_ASSERT((size_t)w <= ws->pend_len - ws->pend_off);
        ws->queued -= (size_t)w;
        ws->pend_off += (size_t)w;
        if (ws->pend_off == ws->pend_len) {
            free(ws->pend);
            ws->pend = NULL;
            ws->pend_off = ws->pend_len = 0;
        }
    }
}

size_t tp_ws_take_output(struct tp_ws *ws, uint8_t *dst, size_t cap)
{
    /* Only the whole queue, and only with no bytes of an earlier write kept: what the batch
     * writes is then exactly what tp_ws_flush would have written first. */
    if (ws->pend != NULL || ws->head == NULL || ws->queued > cap)
        return 0;
    return gather(ws, dst, cap);
}

int tp_ws_output_written(struct tp_ws *ws, const uint8_t *p, size_t n, ssize_t w)
{
    int r = gathered_written(ws, p, n, w);
    return r != 0 ? r : ws->pend != NULL ? TP_IO_WANT_WRITE : 0;
}

bool tp_ws_can_write_frame(const struct tp_ws *ws, const struct tp_ws_frame *f)
{
    size_t n;
    tp_ws_frame_bytes(f, &n);
    /* Only an empty queue keeps the order (nothing may go ahead of what is queued), and only a
     * frame within the cap: anything else takes the queue's path, overflow included. */
    return !ws->closing && ws->head == NULL && ws->pend == NULL && n <= ws->limits.max_queue;
}

int tp_ws_frame_written(struct tp_ws *ws, const struct tp_ws_frame *f, ssize_t w)
{
    size_t n;
    const uint8_t *p = tp_ws_frame_bytes(f, &n);
    if (w == (ssize_t)n)
        return 0;
    /* What a flush of the queued frame would have done: the bytes not written are kept, and
     * written first next time (the same bytes after TP_IO_WANT_*, as TLS needs). */
    size_t done = w > 0 ? (size_t)w : 0;
    stash(ws, p + done, n - done);
    ws->queued += n - done;
    if (w > 0)
        return TP_IO_WANT_WRITE;
    return w == 0 ? TP_IO_WANT_WRITE : (int)w;
}

int tp_ws_write_frame(struct tp_ws *ws, struct tp_ws_frame *f, struct tp_io *io)
{
    if (!tp_ws_can_write_frame(ws, f))
        return TP_EAGAIN;
    size_t n;
    const uint8_t *p = tp_ws_frame_bytes(f, &n);
    return tp_ws_frame_written(ws, f, tp_io_write(io, p, n));
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
    ws->parser.max_message = max;
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
    if (ws->closing || ws->dead)
        return;
    link_close_frame(ws, code, reason, NULL, 0);
    /* Nothing the peer sends after our close matters: stop parsing (and calling back). */
    stop_reading(ws);
}

void tp_ws_ping(struct tp_ws *ws)
{
    if (ws->closing || ws->dead)
        return;
    uint8_t payload[8];
    uint64_t now = (uint64_t)tp_mono_ms();
    for (int i = 0; i < 8; i++)
        payload[i] = (uint8_t)(now >> (56 - 8 * i));
    enqueue(ws, tp_ws_frame_new_control(TP_WS_OP_PING, payload, sizeof(payload)), true);
}

int64_t tp_ws_last_seen_ms(const struct tp_ws *ws)
{
    return ws->last_seen;
}

/* --- Receiving --- */

static void notify_close(struct tp_ws *ws, uint16_t code)
{
    if (ws->notified)
        return;
    ws->notified = true;
    if (ws->cb != NULL && ws->cb->on_close != NULL)
        ws->cb->on_close(ws, code, ws->ud);
}

/* We end the session because of what the peer sent: our close frame with `code`, then on_close
 * with the same code (the owner closes the connection once the frame is out). */
static void refuse(struct tp_ws *ws, uint16_t code, const char *reason)
{
    link_close_frame(ws, code, reason, NULL, 0);
    stop_reading(ws);
    stat_inc(&g_stats.protocol_closes);
    notify_close(ws, code);
}

/* A data frame's header arrived: a message's first frame starts its clock (control frames
 * interleaved with fragments do not count), and the frame's payload counts against the
 * process's budget for unfinished messages until the message is complete or the session
 * ends. A frame that would pass the budget closes its socket 1008 before it is read, and is
 * not counted, so the sockets that keep within the budget are not refused meanwhile. */
static void on_data_header(struct tp_ws *ws, size_t len)
{
    if (ws->msg_since == 0)
        ws->msg_since = ws->last_seen; /* this feed's clock: one read per feed, not per message */
    size_t budget = ws->limits.partial_budget;
    if (budget > 0 && g_partial + len > budget) {
        refuse(ws, TP_WS_CLOSE_POLICY, PARTIAL_REASON);
        return;
    }
    ws->partial += len;
    g_partial += len;
    __atomic_store_n(&g_stats.partial_bytes, (uint64_t)g_partial, __ATOMIC_RELAXED);
}

static void on_event(struct tp_ws *ws, const struct tp_ws_frame_event *ev)
{
    switch (ev->type) {
    case TP_WS_EV_DATA_HEADER:
        on_data_header(ws, ev->len);
        break;
    case TP_WS_EV_MESSAGE:
        ws->msg_since = 0;
        partial_release(ws);
        if (ws->cb != NULL && ws->cb->on_message != NULL)
            ws->cb->on_message(ws, ev->data, ev->len, ev->binary, ws->ud);
        break;
    case TP_WS_EV_PING:
        enqueue(ws, tp_ws_frame_new_control(TP_WS_OP_PONG, ev->data, ev->len), true);
        break;
    case TP_WS_EV_PONG:
        break; /* last_seen already moved */
    case TP_WS_EV_CLOSE:
        /* Echo the peer's code and reason (RFC 6455 §5.5.1), or an empty close for none. */
        link_close_frame(ws, 0, NULL, ev->data, ev->len);
        stop_reading(ws);
        notify_close(ws, ev->code);
        break;
    case TP_WS_EV_ERROR:
        refuse(ws, ev->code, NULL);
        break;
    case TP_WS_EV_NONE:
        break;
    }
}

int tp_ws_feed(struct tp_ws *ws, const void *data, size_t len)
{
    if (ws->dead || ws->read_stopped)
        return TP_ECLOSED;
    if (len > 0)
        ws->last_seen = tp_mono_ms();
    const uint8_t *p = data;
    ws->in_feed = true;
    for (;;) {
        struct tp_ws_frame_event ev;
        size_t used = tp_ws_frame_parse(&ws->parser, p, len, &ev);
        p += used;
        len -= used;
        if (ev.type == TP_WS_EV_NONE)
            break;
        on_event(ws, &ev);
        if (ws->read_stopped)
            break;
    }
    ws->in_feed = false;
    if (ws->read_stopped)
        tp_ws_frame_parser_deinit(&ws->parser);
    return 0;
}

/* --- Life cycle --- */

struct tp_ws *tp_ws_new(const struct tp_ws_limits *limits, const struct tp_ws_callbacks *cb,
                        void *ud)
{
    struct tp_ws *ws = tp_xcalloc(1, sizeof(*ws));
    if (limits != NULL) {
        ws->limits = *limits;
    } else {
        ws->limits.max_message = TP_WS_DEFAULT_MAX_MESSAGE;
        ws->limits.max_queue = TP_WS_DEFAULT_MAX_QUEUE;
    }
    ws->cb = cb;
    ws->ud = ud;
    tp_ws_frame_parser_init(&ws->parser, ws->limits.max_message);
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
    tp_ws_frame_parser_deinit(&ws->parser);
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
    const char *e;
    size_t n;
    for (const char *c = allowlist; tp_config_origins_next(&c, &e, &n);) {
        any_entry = true;
        if (n == on && memcmp(e, origin, n) == 0)
            return true;
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
