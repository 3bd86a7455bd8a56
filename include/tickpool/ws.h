/*
 * WebSocket (RFC 6455) server side, glued to wslay: upgrade validation, frame parsing, and an
 * outgoing queue with two classes of message. The only module that includes wslay.
 *
 * Broadcasts are encoded once into a refcounted `tp_ws_frame` and shared by every socket of a
 * worker. A socket that cannot keep up drops a queued, not-yet-started droppable frame when a
 * newer one of the same kind arrives (newest wins), never a direct message, and is closed once
 * its queue passes `max_queue` bytes.
 */
#ifndef TP_WS_H
#define TP_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_io;
struct tp_ws;

#define TP_WS_SUBPROTOCOL "tickpool.v1"

/* RFC 6455 close codes used by tickpool. */
enum tp_ws_close_code {
    TP_WS_CLOSE_NORMAL = 1000,
    TP_WS_CLOSE_GOING_AWAY = 1001,
    TP_WS_CLOSE_PROTOCOL = 1002,
    TP_WS_CLOSE_INVALID_DATA = 1007,
    TP_WS_CLOSE_POLICY = 1008,
    TP_WS_CLOSE_TOO_BIG = 1009,
    TP_WS_CLOSE_INTERNAL = 1011,
};

/* Kinds of droppable broadcast: a newer frame of a kind supersedes a queued older one. */
enum tp_ws_kind {
    TP_WS_KIND_DIRECT = 0, /* never dropped: replies, round changes, payouts */
    TP_WS_KIND_TICK = 1,
    TP_WS_KIND_ODDS = 2,
    TP_WS_KIND_COUNT_
};

/** A pre-encoded server frame (header + payload), refcounted, shared between sockets. */
struct tp_ws_frame;

/** Encodes one binary frame carrying `payload` (copied). Refcount starts at 1. */
struct tp_ws_frame *tp_ws_frame_new(const void *payload, size_t len, enum tp_ws_kind kind);
void tp_ws_frame_ref(struct tp_ws_frame *f);
/** Drops a reference; frees at zero. NULL is a no-op. */
void tp_ws_frame_unref(struct tp_ws_frame *f);

struct tp_ws_callbacks {
    /** A complete data message (binary or text) arrived; `data` is valid during the call. */
    void (*on_message)(struct tp_ws *ws, const uint8_t *data, size_t len, bool binary, void *ud);
    /** The session ended (close frame exchanged or protocol error); the owner closes the
     * connection after the output queue is flushed (tp_ws_want_close). */
    void (*on_close)(struct tp_ws *ws, uint16_t code, void *ud);
};

struct tp_ws_limits {
    size_t max_message; /* bigger messages close with 1009 */
    size_t max_queue;   /* queued output bytes beyond which the socket is closed */
};

/**
 * Checks an upgrade request. `key` is Sec-WebSocket-Key, `protocols` Sec-WebSocket-Protocol
 * (may be NULL), `version` Sec-WebSocket-Version. On success writes the Sec-WebSocket-Accept
 * value into accept[29] and returns 0; returns TP_EINVAL for a bad key or version and
 * TP_EPROTO when tickpool.v1 is not offered.
 */
int tp_ws_check_upgrade(const char *key, const char *version, const char *protocols,
                        char accept[29]);

/**
 * Checks `origin` (may be NULL) against a comma-separated exact-match allowlist; an empty
 * allowlist allows only origins whose host equals `host` (the request's Host header).
 */
bool tp_ws_origin_allowed(const char *origin, const char *allowlist, const char *host);

/** Creates a session after the 101 response has been queued. `cb` and `ud` are borrowed. */
struct tp_ws *tp_ws_new(const struct tp_ws_limits *limits, const struct tp_ws_callbacks *cb,
                        void *ud);
/** Frees a session and its queue. NULL is a no-op. */
void tp_ws_free(struct tp_ws *ws);

/** Feeds bytes read from the socket; fires callbacks. Returns 0 or a TP_E* (session over). */
int tp_ws_feed(struct tp_ws *ws, const void *data, size_t len);

/** Queues a direct binary message (never dropped). Returns 0 or TP_ECLOSED / TP_ETOOBIG
 * (queue overflow: the session is then closing). */
int tp_ws_send(struct tp_ws *ws, const void *payload, size_t len);
/** Queues a shared frame (takes a reference). Same returns as tp_ws_send. */
int tp_ws_send_frame(struct tp_ws *ws, struct tp_ws_frame *f);
/** Starts a close handshake with `code` and a short reason. */
void tp_ws_close(struct tp_ws *ws, uint16_t code, const char *reason);

/** Writes queued output to `io`: 0 when the queue is empty, TP_IO_WANT_* when more remains,
 * or a negative TP_E* on a write error. Several small frames go out in one write. */
int tp_ws_flush(struct tp_ws *ws, struct tp_io *io);
/** True when output is queued. */
bool tp_ws_has_output(const struct tp_ws *ws);
/** True once the session is over and its output flushed: the owner should close. */
bool tp_ws_want_close(const struct tp_ws *ws);
/** Bytes queued for output (for metrics and slow-consumer checks). */
size_t tp_ws_queued_bytes(const struct tp_ws *ws);

#endif
