/*
 * RFC 6455 frames, server side, without any I/O or session: the server's own frames (unmasked,
 * encoded once into a refcounted `tp_ws_frame` a broadcast shares between sockets) and an
 * incremental parser of the client's frames (masking, fragmentation, control frames between
 * fragments, close codes, size limits). net/ws.c builds the sessions on top of it.
 *
 * The parser keeps no buffer while the peer is idle: a frame header is gathered in 14 bytes
 * of its state, a control payload in 125, and a data message only while it is incomplete, in
 * a buffer that grows with the bytes that arrived (never ahead of them). A message that arrives
 * whole in one input chunk is unmasked into a per-thread scratch buffer and not allocated.
 */
#ifndef TP_WS_FRAME_H
#define TP_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest payload of a control frame (ping, pong, close). */
#define TP_WS_FRAME_CONTROL_MAX 125

/* Opcodes. */
enum tp_ws_frame_op {
    TP_WS_OP_CONTINUATION = 0x0,
    TP_WS_OP_TEXT = 0x1,
    TP_WS_OP_BINARY = 0x2,
    TP_WS_OP_CLOSE = 0x8,
    TP_WS_OP_PING = 0x9,
    TP_WS_OP_PONG = 0xA,
};

/* Kinds of frame in a socket's queue. Droppable broadcasts (tick, odds, tick with odds): a newer
 * frame of a kind supersedes a queued older one of the same kind; a tick carrying odds
 * supersedes queued ticks and odds of every kind, while a plain tick leaves a queued
 * tick-with-odds alone (its odds would be lost otherwise). A round change is never dropped and
 * goes ahead of the droppable broadcasts queued behind everything else, so a boundary is not
 * delayed by beats still waiting to go out. */
enum tp_ws_kind {
    TP_WS_KIND_DIRECT = 0, /* never dropped: replies, payouts, control frames */
    TP_WS_KIND_TICK = 1,
    TP_WS_KIND_ODDS = 2,
    TP_WS_KIND_TICK_ODDS = 3, /* a beat that carries the open round's odds */
    TP_WS_KIND_ROUND = 4,     /* never dropped; ahead of queued droppable broadcasts */
    TP_WS_KIND_COUNT_
};

/** True for the kinds a newer frame may supersede (tick, odds, tick with odds). */
bool tp_ws_kind_droppable(enum tp_ws_kind kind);
/** True when a queued, not yet started frame of kind `older` is useless once a frame of kind
 * `newer` is queued (the rules above); both a socket's queue and the sliced fan-out apply it. */
bool tp_ws_kind_supersedes(enum tp_ws_kind newer, enum tp_ws_kind older);

/* --- Server frames --- */

/** A pre-encoded server frame (header + payload in one allocation), refcounted, shared. */
struct tp_ws_frame;

/** Encodes one unmasked binary frame (FIN, opcode 2) carrying `payload` (copied). Refcount
 * starts at 1 and belongs to the caller. */
struct tp_ws_frame *tp_ws_frame_new(const void *payload, size_t len, enum tp_ws_kind kind);
/** Encodes one control frame (`op` close, ping or pong; `len` at most 125), kind DIRECT. */
struct tp_ws_frame *tp_ws_frame_new_control(enum tp_ws_frame_op op, const void *payload,
                                            size_t len);
/** Adds a reference (atomic: frames may be handed between threads). */
void tp_ws_frame_ref(struct tp_ws_frame *f);
/** Drops a reference; frees at zero. NULL is a no-op. */
void tp_ws_frame_unref(struct tp_ws_frame *f);
/** The encoded frame bytes (header + payload) and their count, borrowed from `f`. */
const uint8_t *tp_ws_frame_bytes(const struct tp_ws_frame *f, size_t *len);
/** The kind `f` was made with. */
enum tp_ws_kind tp_ws_frame_kind(const struct tp_ws_frame *f);
/** Current reference count (for tests and assertions). */
int tp_ws_frame_refs(const struct tp_ws_frame *f);

/* --- Client frames --- */

/* What one tp_ws_frame_parse call stopped at. */
enum tp_ws_frame_ev {
    TP_WS_EV_NONE = 0,    /* the input is used up; nothing to report */
    TP_WS_EV_DATA_HEADER, /* a data frame's header: `len` = its payload length, not yet read */
    TP_WS_EV_MESSAGE,     /* a whole data message (text already checked to be UTF-8) */
    TP_WS_EV_PING,        /* data/len: its payload, to echo in a pong */
    TP_WS_EV_PONG,
    TP_WS_EV_CLOSE, /* code: the peer's (1005 without one); data/len: its payload, to echo */
    TP_WS_EV_ERROR, /* code: 1002, 1007 or 1009 to close with; the parser stays failed */
};

struct tp_ws_frame_event {
    enum tp_ws_frame_ev type;
    bool binary;         /* MESSAGE: opcode 2 (else text) */
    uint16_t code;       /* CLOSE, ERROR */
    const uint8_t *data; /* MESSAGE, PING, PONG, CLOSE: valid until the next parser call */
    size_t len;          /* payload bytes (DATA_HEADER: the frame's announced length) */
};

/* Parser state; the fields are private to ws_frame.c (a struct so that sessions embed it). */
struct tp_ws_frame_parser {
    size_t max_message; /* bigger messages are an ERROR 1009, found from the frame header */
    uint8_t *msg;       /* the unfinished data message, or the last one delivered */
    size_t msg_len, msg_cap;
    uint64_t left; /* payload bytes of the current frame still to come */
    uint32_t moff; /* payload bytes of the current frame read so far, mod 4 (mask phase) */
    uint8_t hdr[14];
    uint8_t hlen, hneed; /* header bytes gathered / needed (0: in the payload) */
    uint8_t mask[4];
    uint8_t op;     /* current frame's opcode */
    uint8_t msg_op; /* opcode of the unfinished data message, 0: none */
    bool fin;
    bool delivered; /* msg was handed out: free it on the next call */
    uint16_t err;   /* close code once failed, 0 before */
    uint8_t ctl_len;
    uint8_t ctl[TP_WS_FRAME_CONTROL_MAX];
};

/** Prepares a parser; messages over `max_message` bytes are refused (ERROR 1009). */
void tp_ws_frame_parser_init(struct tp_ws_frame_parser *p, size_t max_message);
/** Frees the parser's message buffer (the parser may be initialized again). Idempotent. */
void tp_ws_frame_parser_deinit(struct tp_ws_frame_parser *p);
/** True while a data message has started and not ended (a fragment or a frame's payload is
 * still to come). */
bool tp_ws_frame_parser_in_message(const struct tp_ws_frame_parser *p);

/**
 * Parses client bytes until something is to report: fills `ev` and returns how many bytes of
 * `in` it used. Call again with the rest (even with none left) until ev->type is
 * TP_WS_EV_NONE: a message may complete with the input's last byte. After ERROR every call
 * returns that ERROR again and uses nothing; after CLOSE the caller stops reading.
 */
size_t tp_ws_frame_parse(struct tp_ws_frame_parser *p, const uint8_t *in, size_t len,
                         struct tp_ws_frame_event *ev);

/** True when s[0..n) is strict UTF-8 (RFC 3629: no overlongs, surrogates or code points above
 * U+10FFFF), as text messages and close reasons must be. */
bool tp_ws_frame_utf8_valid(const uint8_t *s, size_t n);

#endif
