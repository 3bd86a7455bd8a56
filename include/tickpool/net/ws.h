/*
 * WebSocket (RFC 6455) server sessions: upgrade validation, the close handshake, limits on what
 * a peer may make the server hold, and an outgoing queue with two classes of message. Frames
 * themselves (encoding, parsing) are net/ws_frame's.
 *
 * Broadcasts are encoded once into a refcounted `tp_ws_frame` and shared by every socket of a
 * worker. A socket that cannot keep up drops a queued, not-yet-started droppable frame when a
 * newer one of the same kind arrives (newest wins), never a direct message, and is closed once
 * its queue passes `max_queue` bytes: its queue is discarded and a close 1013 sent instead.
 *
 * How the owner (the connection code) drives a session:
 *   1. tp_ws_origin_allowed + tp_ws_check_upgrade on the request, send 101, then tp_ws_new;
 *   2. every byte read from the socket goes to tp_ws_feed (callbacks fire from inside it);
 *   3. after tp_ws_feed or any send, and whenever the socket is writable while
 *      tp_ws_has_output, call tp_ws_flush; watch for writability while it returns TP_IO_WANT_*;
 *   4. once tp_ws_want_close is true, close the connection (tp_ws_free afterwards). The server
 *      closes the TCP connection first once its close frame is out (RFC 6455 §7.1.1);
 *      shutdown(SHUT_WR) before close() lets the peer read that frame even if it still sends;
 *   5. keepalive: tp_ws_ping after some idle time (see tp_ws_last_seen_ms), close if still
 *      silent later.
 * A session is single-threaded (its worker's loop); only tp_ws_frame refcounts are atomic.
 */
#ifndef TP_WS_H
#define TP_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tickpool/net/ws_frame.h"

struct tp_io;
struct tp_ws;

#define TP_WS_SUBPROTOCOL "tickpool.v1"

/* Defaults used by tp_ws_new when `limits` is NULL (docs/protocol.md §5: 64 KiB messages). */
#define TP_WS_DEFAULT_MAX_MESSAGE (64 * 1024)
#define TP_WS_DEFAULT_MAX_QUEUE (1024 * 1024)
/* Once closing, a session whose close frame is not written within this is cut anyway. */
#define TP_WS_CLOSE_FLUSH_MS 2000

/* RFC 6455 close codes used by tickpool. */
enum tp_ws_close_code {
    TP_WS_CLOSE_NORMAL = 1000,
    TP_WS_CLOSE_GOING_AWAY = 1001,
    TP_WS_CLOSE_PROTOCOL = 1002,
    TP_WS_CLOSE_NO_STATUS = 1005, /* reported by on_close for a close frame without a code */
    TP_WS_CLOSE_ABNORMAL = 1006,  /* reported by on_close when the stream broke */
    TP_WS_CLOSE_INVALID_DATA = 1007,
    TP_WS_CLOSE_POLICY = 1008,
    TP_WS_CLOSE_TOO_BIG = 1009,
    TP_WS_CLOSE_INTERNAL = 1011,
    TP_WS_CLOSE_TRY_AGAIN = 1013, /* send queue overflow: reconnect later */
};

struct tp_ws_callbacks {
    /** A complete data message (binary or text, text already checked to be UTF-8) arrived;
     * `data` is valid during the call. May call tp_ws_send*, tp_ws_close; never tp_ws_free. */
    void (*on_message)(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary, void *ud);
    /** The peer ended the session (its close frame: its code, or 1005 without one) or broke it
     * (1002/1007/1009: our close frame with that code is queued). Fires at most once, only from
     * tp_ws_feed; the owner closes the connection once tp_ws_want_close. May be NULL. */
    void (*on_close)(struct tp_ws *ws, uint16_t code, void *ud);
};

struct tp_ws_limits {
    size_t max_message; /* bigger messages close with 1009 */
    size_t max_queue;   /* queued output bytes beyond which the socket is closed */
    /* Bytes all unfinished incoming messages of the process may hold (0: no bound): a frame
     * whose announced payload would pass it closes its socket 1008 before it is read. */
    size_t partial_budget;
};

/* Process-wide counters (summed over every session of the process; relaxed atomics). Of the
 * Prometheus metrics this module counts only ws_frames_dropped_total (the owner cannot see
 * drops); messages in/out, open sockets and slow-consumer closes are the owner's to count. */
struct tp_ws_stats {
    uint64_t dropped[TP_WS_KIND_COUNT_]; /* droppable frames superseded by a newer one */
    uint64_t overflow_closes;            /* sessions closed because max_queue was passed */
    uint64_t partial_bytes;              /* held now by unfinished incoming messages */
    uint64_t protocol_closes;            /* sessions closed with 1002/1007/1009 */
};

/**
 * Checks an upgrade request. `key` is Sec-WebSocket-Key (must base64-decode to 16 bytes),
 * `version` Sec-WebSocket-Version (must be "13"), `protocols` Sec-WebSocket-Protocol (may be
 * NULL; a comma/space separated list that must contain tickpool.v1 exactly). On success writes
 * the Sec-WebSocket-Accept value into accept[29] and returns 0; returns TP_EINVAL for a bad
 * key or version and TP_EPROTO when tickpool.v1 is not offered. Surrounding blanks are ignored.
 */
int tp_ws_check_upgrade(const char *key, const char *version, const char *protocols,
                        char accept[29]);

/**
 * Checks `origin` against a comma-separated allowlist of exact origins (blanks around entries
 * ignored). An empty or NULL allowlist allows only "http://H" or "https://H" where H equals
 * `host` (the request's Host header, host[:port], case-insensitive). A NULL `origin` (header
 * absent) is allowed: browsers always send Origin on WebSocket upgrades, so its absence means
 * a non-browser client, which an Origin check cannot constrain anyway (tokens still apply).
 */
bool tp_ws_origin_allowed(const char *origin, const char *allowlist, const char *host);

/** Creates a session after the 101 response has been queued. `limits` is copied (NULL means
 * the defaults above); `cb` and `ud` are borrowed and must outlive the session. */
struct tp_ws *tp_ws_new(const struct tp_ws_limits *limits, const struct tp_ws_callbacks *cb,
                        void *ud);
/** Frees a session and its queue (dropping its frame references). NULL is a no-op. */
void tp_ws_free(struct tp_ws *ws);

/**
 * Feeds bytes read from the socket; fires callbacks. Returns 0 when the bytes were processed,
 * even if they ended the session (a close frame is then queued: flush it, then close when
 * tp_ws_want_close); TP_ECLOSED when the session had already ended (bytes ignored).
 */
int tp_ws_feed(struct tp_ws *ws, const void *data, size_t len);

/** Queues a direct binary message (never dropped). Returns 0, TP_ETOOBIG for the send that
 * overflowed the queue (once: the queue is then replaced by a close 1013 frame), or
 * TP_ECLOSED once a close was started or the session is dead. */
int tp_ws_send(struct tp_ws *ws, const void *payload, size_t len);
/** Queues a shared frame (takes its own reference; the caller keeps its one). A droppable kind
 * supersedes the queued, not yet started frame of that kind. Same returns as tp_ws_send. */
int tp_ws_send_frame(struct tp_ws *ws, struct tp_ws_frame *f);
/** Starts a close handshake with `code` and a short reason (NULL or up to 123 bytes, longer
 * is cut). Queued data goes out first; later sends return TP_ECLOSED. */
void tp_ws_close(struct tp_ws *ws, uint16_t code, const char *reason);
/** Queues a ping (8-byte payload) ahead of queued data frames, for keepalive. */
void tp_ws_ping(struct tp_ws *ws);
/** tp_mono_ms() when bytes last arrived from the peer (creation time before any). */
int64_t tp_ws_last_seen_ms(const struct tp_ws *ws);

/** Writes queued output to `io`, gathering several frames into one write (up to 64 KiB):
 * 0 when the queue is empty, TP_IO_WANT_* when more remains, or a negative TP_E* on a write
 * error. After TP_IO_WANT_* the next call retries the very same bytes first (TLS needs it). */
int tp_ws_flush(struct tp_ws *ws, struct tp_io *io);
/** Writes shared frame `f` straight from its bytes when nothing is queued: what tp_ws_send_frame
 * and tp_ws_flush would do, without the queue item or the copy (the fan-out's one write per
 * socket and beat). Bytes the write did not take are kept and go first on the next flush, so
 * the frame is never torn nor dropped once started. Returns 0 when all of it was written,
 * TP_IO_WANT_* when the rest waits (flush when writable), a negative TP_E* on a write error, or
 * TP_EAGAIN, nothing written, when the frame must be queued instead (output already queued, the
 * session closing, or the frame bigger than the queue's cap). */
int tp_ws_write_frame(struct tp_ws *ws, struct tp_ws_frame *f, struct tp_io *io);
/** True when tp_ws_write_frame would write `f` now: nothing queued, the session not closing, the
 * frame within the queue's cap. For a caller that sends the bytes itself (a batch of sends, as
 * the fan-out's io_uring path does) and then reports with tp_ws_frame_written. */
bool tp_ws_can_write_frame(const struct tp_ws *ws, const struct tp_ws_frame *f);
/** The second half of tp_ws_write_frame, after a write of all of `f`'s bytes returned `w`
 * (tp_io_write's result): keeps the bytes not written. Same returns as tp_ws_write_frame, never
 * TP_EAGAIN. Only right after tp_ws_can_write_frame held and nothing else touched `ws`. */
int tp_ws_frame_written(struct tp_ws *ws, const struct tp_ws_frame *f, ssize_t w);
/** For a caller that writes the queue itself (a batch of sends: a boundary's `round` pair to
 * every socket, conn.c): moves all of the queued output into `dst` and returns its length,
 * or 0, taking nothing, when nothing is queued, bytes of an earlier write are kept or the
 * queue holds more than `cap`. The caller then reports with tp_ws_output_written. */
size_t tp_ws_take_output(struct tp_ws *ws, uint8_t *dst, size_t cap);
/** After a write of the `n` bytes tp_ws_take_output gave (`p`) returned `w` (tp_io_write's
 * result): keeps the bytes not written, to go first on the next flush. Returns what tp_ws_flush
 * would: 0 when all went, TP_IO_WANT_WRITE when bytes wait, a negative TP_E* on an error. */
int tp_ws_output_written(struct tp_ws *ws, const uint8_t *p, size_t n, ssize_t w);
/** True when output is queued. */
bool tp_ws_has_output(const struct tp_ws *ws);
/** True once the session is over and its close frame flushed: the owner should close the
 * connection. */
bool tp_ws_want_close(const struct tp_ws *ws);
/** tp_mono_ms() deadline by which the owner closes the connection even if the close frame is
 * still queued (a peer that reads nothing must not hold it); 0 while not closing. */
int64_t tp_ws_close_deadline_ms(const struct tp_ws *ws);
/** tp_mono_ms() when the data message being received (first fragment or frame header) began;
 * 0 when no message is in progress. Owners bound how long a message may take. */
int64_t tp_ws_message_since_ms(const struct tp_ws *ws);
/** Changes the largest message accepted (bigger ones close 1009), e.g. once a socket signs in. */
void tp_ws_set_max_message(struct tp_ws *ws, size_t max);
/** Bytes queued for output (for metrics and slow-consumer checks). */
size_t tp_ws_queued_bytes(const struct tp_ws *ws);
/** Droppable frames this session superseded so far. */
uint64_t tp_ws_dropped(const struct tp_ws *ws);
/** Copies the process-wide counters into `out`. */
void tp_ws_stats_get(struct tp_ws_stats *out);

#endif
