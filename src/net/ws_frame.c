/*
 * RFC 6455 framing, server side: encoding of the server's (unmasked) frames and an incremental
 * parser of the client's. Everything the peer controls is checked before it costs memory: a
 * frame's header is refused (1002 or 1009) before any of its payload is read, and a data
 * message's buffer grows only with the bytes that actually arrived.
 */
#include "tickpool/net/ws_frame.h"

#include <stdlib.h>
#include <string.h>

#include "tickpool/base/common.h"

/* Whole single-frame messages up to this size are unmasked here instead of into a buffer of
 * their own (per thread: one worker loop each). Bigger or fragmented ones get a buffer. */
#define SCRATCH_MAX (16 * 1024)

struct tp_ws_frame {
    int refs;     /* atomic */
    uint8_t kind; /* enum tp_ws_kind */
    size_t len;   /* bytes in data: header + payload */
    uint8_t data[];
};

/* --- Server frames --- */

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

static struct tp_ws_frame *frame_encode(uint8_t b0, const void *payload, size_t len,
                                        enum tp_ws_kind kind)
{
    uint8_t h[10];
    size_t hl = encode_header(h, b0, len);
    TP_ASSERT(len <= SIZE_MAX - hl - sizeof(struct tp_ws_frame));
    struct tp_ws_frame *f = tp_xmalloc(sizeof(*f) + hl + len);
    f->refs = 1;
    f->kind = (uint8_t)kind;
    f->len = hl + len;
    memcpy(f->data, h, hl);
    if (len > 0) /* memcpy's source must not be NULL, even for 0 bytes */
        memcpy(f->data + hl, payload, len);
    return f;
}

struct tp_ws_frame *tp_ws_frame_new(const void *payload, size_t len, enum tp_ws_kind kind)
{
    TP_ASSERT((unsigned)kind < TP_WS_KIND_COUNT_);
    return frame_encode(0x80 | TP_WS_OP_BINARY, payload, len, kind);
}

struct tp_ws_frame *tp_ws_frame_new_control(enum tp_ws_frame_op op, const void *payload, size_t len)
{
    TP_ASSERT(op >= TP_WS_OP_CLOSE && op <= TP_WS_OP_PONG && len <= TP_WS_FRAME_CONTROL_MAX);
    return frame_encode((uint8_t)(0x80 | op), payload, len, TP_WS_KIND_DIRECT);
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

bool tp_ws_kind_droppable(enum tp_ws_kind kind)
{
    return kind == TP_WS_KIND_TICK || kind == TP_WS_KIND_ODDS || kind == TP_WS_KIND_TICK_ODDS;
}

bool tp_ws_kind_supersedes(enum tp_ws_kind newer, enum tp_ws_kind older)
{
    /* Which kinds a new frame of each kind makes useless (bit k: kind k). */
    static const uint8_t supersedes[TP_WS_KIND_COUNT_] = {
        [TP_WS_KIND_TICK] = 1u << TP_WS_KIND_TICK,
        [TP_WS_KIND_ODDS] = 1u << TP_WS_KIND_ODDS,
        [TP_WS_KIND_TICK_ODDS] =
            1u << TP_WS_KIND_TICK | 1u << TP_WS_KIND_ODDS | 1u << TP_WS_KIND_TICK_ODDS,
    };
    if ((unsigned)newer >= TP_WS_KIND_COUNT_ || (unsigned)older >= TP_WS_KIND_COUNT_)
        return false;
    return (supersedes[newer] & (1u << older)) != 0;
}

enum tp_ws_kind tp_ws_frame_kind(const struct tp_ws_frame *f)
{
    return (enum tp_ws_kind)f->kind;
}

int tp_ws_frame_refs(const struct tp_ws_frame *f)
{
    return __atomic_load_n(&f->refs, __ATOMIC_RELAXED);
}

/* --- UTF-8 --- */

bool tp_ws_frame_utf8_valid(const uint8_t *s, size_t n)
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

/* --- Client frames --- */

void tp_ws_frame_parser_init(struct tp_ws_frame_parser *p, size_t max_message)
{
    memset(p, 0, sizeof(*p));
    p->max_message = max_message;
    p->hneed = 2;
}

void tp_ws_frame_parser_deinit(struct tp_ws_frame_parser *p)
{
    free(p->msg);
    p->msg = NULL;
    p->msg_len = p->msg_cap = 0;
    p->delivered = false;
}

bool tp_ws_frame_parser_in_message(const struct tp_ws_frame_parser *p)
{
    return p->msg_op != 0 || (p->hneed == 0 && p->op < TP_WS_OP_CLOSE);
}

static bool is_control(uint8_t op)
{
    return op >= TP_WS_OP_CLOSE;
}

/* Codes a peer may send (RFC 6455 §7.4 and the IANA registry); 1005, 1006 and 1015 are only
 * ever reported locally, never sent. */
static bool close_code_valid(uint16_t c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

static size_t fail(struct tp_ws_frame_parser *p, uint16_t code, size_t used,
                   struct tp_ws_frame_event *ev)
{
    p->err = code;
    tp_ws_frame_parser_deinit(p);
    ev->type = TP_WS_EV_ERROR;
    ev->code = code;
    return used;
}

/* Unmasks n payload bytes of the current frame from src into dst, eight at a time (a byte at a
 * time, every message's bytes cost 8 instructions each: more than reading its frame). */
static void unmask(struct tp_ws_frame_parser *p, uint8_t *dst, const uint8_t *src, size_t n)
{
    uint32_t m = p->moff;
    uint8_t k[8]; /* the mask from this frame offset on, twice: k[i & 7] is byte i's */
    for (int j = 0; j < 8; j++)
        k[j] = p->mask[(m + (uint32_t)j) & 3];
    uint64_t k8;
    memcpy(&k8, k, sizeof(k8));
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, src + i, sizeof(x));
        x ^= k8;
        memcpy(dst + i, &x, sizeof(x));
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 7];
    p->moff = (uint32_t)((m + n) & 3);
}

/* The first two header bytes are in: refuses what needs no more bytes; 0 or a close code. */
static uint16_t check_start(struct tp_ws_frame_parser *p)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    p->fin = (b0 & 0x80) != 0;
    p->op = b0 & 0x0f;
    uint8_t len7 = b1 & 0x7f;
    if ((b0 & 0x70) != 0) /* RSV bits: no extension was negotiated */
        return 1002;
    if ((b1 & 0x80) == 0) /* client frames must be masked */
        return 1002;
    switch (p->op) {
    case TP_WS_OP_CONTINUATION:
        if (p->msg_op == 0)
            return 1002; /* nothing to continue */
        break;
    case TP_WS_OP_TEXT:
    case TP_WS_OP_BINARY:
        if (p->msg_op != 0)
            return 1002; /* the unfinished message must end first */
        break;
    case TP_WS_OP_CLOSE:
    case TP_WS_OP_PING:
    case TP_WS_OP_PONG:
        if (!p->fin || len7 > TP_WS_FRAME_CONTROL_MAX)
            return 1002;
        break;
    default:
        return 1002; /* reserved opcode */
    }
    p->hneed = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4);
    return 0;
}

/* The whole header is in: its length must be minimal and fit; 0 or a close code. */
static uint16_t check_header(struct tp_ws_frame_parser *p)
{
    uint8_t len7 = p->hdr[1] & 0x7f;
    uint64_t len = len7;
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (ext > 0) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | p->hdr[2 + i];
        if (len >> 63 != 0)
            return 1002; /* the most significant bit must be 0 */
        if (len < (ext == 2 ? 126u : 0x10000u))
            return 1002; /* not the minimal encoding */
    }
    memcpy(p->mask, p->hdr + 2 + ext, 4);
    if (!is_control(p->op) && len > p->max_message - TP_MIN(p->msg_len, p->max_message))
        return 1009;
    p->left = len;
    p->moff = 0;
    p->ctl_len = 0;
    return 0;
}

/* Makes room for `more` bytes of the unfinished message, growing by doubling (so a message
 * fed one byte at a time is not copied each time) but never beyond the current frame's end. */
static void msg_reserve(struct tp_ws_frame_parser *p, size_t more)
{
    size_t need = p->msg_len + more;
    if (need <= p->msg_cap)
        return;
    size_t cap = p->msg_cap < 64 ? 64 : p->msg_cap * 2;
    size_t frame_end = p->msg_len + (size_t)p->left;
    if (cap > frame_end)
        cap = frame_end;
    if (cap < need)
        cap = need;
    p->msg = tp_xrealloc(p->msg, cap);
    p->msg_cap = cap;
}

/* A text message must be UTF-8 as a whole (a code point may span fragments). */
static size_t deliver(struct tp_ws_frame_parser *p, const uint8_t *data, size_t len, bool binary,
                      size_t used, struct tp_ws_frame_event *ev)
{
    if (!binary && !tp_ws_frame_utf8_valid(data, len))
        return fail(p, 1007, used, ev);
    ev->type = TP_WS_EV_MESSAGE;
    ev->binary = binary;
    ev->data = data;
    ev->len = len;
    return used;
}

/* The current control frame's payload is complete in p->ctl. */
static size_t control_done(struct tp_ws_frame_parser *p, size_t used, struct tp_ws_frame_event *ev)
{
    ev->data = p->ctl;
    ev->len = p->ctl_len;
    if (p->op == TP_WS_OP_PING) {
        ev->type = TP_WS_EV_PING;
    } else if (p->op == TP_WS_OP_PONG) {
        ev->type = TP_WS_EV_PONG;
    } else {
        if (p->ctl_len == 1)
            return fail(p, 1002, used, ev);
        uint16_t code = 1005;
        if (p->ctl_len >= 2) {
            code = (uint16_t)(p->ctl[0] << 8 | p->ctl[1]);
            if (!close_code_valid(code))
                return fail(p, 1002, used, ev);
            if (!tp_ws_frame_utf8_valid(p->ctl + 2, p->ctl_len - 2u))
                return fail(p, 1007, used, ev);
        }
        ev->type = TP_WS_EV_CLOSE;
        ev->code = code;
    }
    return used;
}

size_t tp_ws_frame_parse(struct tp_ws_frame_parser *p, const uint8_t *in, size_t len,
                         struct tp_ws_frame_event *ev)
{
    static __thread uint8_t scratch[SCRATCH_MAX];
    memset(ev, 0, sizeof(*ev));
    if (p->err != 0) {
        ev->type = TP_WS_EV_ERROR;
        ev->code = p->err;
        return 0;
    }
    if (p->delivered)
        tp_ws_frame_parser_deinit(p);
    size_t used = 0;
    for (;;) {
        if (p->hneed > 0) { /* in a header */
            while (p->hlen < p->hneed && used < len)
                p->hdr[p->hlen++] = in[used++];
            if (p->hlen < p->hneed)
                return used;
            uint16_t err = p->hlen == 2 ? check_start(p) : check_header(p);
            if (err != 0)
                return fail(p, err, used, ev);
            if (p->hlen < p->hneed)
                continue; /* check_start asked for the rest of the header */
            p->hneed = p->hlen = 0;
            if (!is_control(p->op)) {
                if (p->op != TP_WS_OP_CONTINUATION)
                    p->msg_op = p->op;
                ev->type = TP_WS_EV_DATA_HEADER;
                ev->len = (size_t)p->left;
                return used;
            }
            continue;
        }
        size_t avail = len - used;
        if (is_control(p->op)) {
            size_t n = (size_t)TP_MIN((uint64_t)avail, p->left);
            unmask(p, p->ctl + p->ctl_len, in + used, n);
            p->ctl_len = (uint8_t)(p->ctl_len + n);
            used += n;
            p->left -= n;
            if (p->left > 0)
                return used;
            p->hneed = 2;
            return control_done(p, used, ev);
        }
        if (p->msg_len == 0 && p->fin && p->left <= avail && p->left <= SCRATCH_MAX) {
            /* A whole single-frame message is here: no buffer of its own. */
            size_t n = (size_t)p->left;
            unmask(p, scratch, in + used, n);
            used += n;
            p->left = 0;
            p->hneed = 2;
            bool binary = p->msg_op == TP_WS_OP_BINARY;
            p->msg_op = 0;
            return deliver(p, scratch, n, binary, used, ev);
        }
        size_t n = (size_t)TP_MIN((uint64_t)avail, p->left);
        if (n > 0) {
            msg_reserve(p, n);
            unmask(p, p->msg + p->msg_len, in + used, n);
            p->msg_len += n;
            used += n;
            p->left -= n;
        }
        if (p->left > 0)
            return used;
        p->hneed = 2;
        if (!p->fin)
            continue; /* the next fragment's header */
        bool binary = p->msg_op == TP_WS_OP_BINARY;
        p->msg_op = 0;
        p->delivered = true;
        return deliver(p, p->msg, p->msg_len, binary, used, ev);
    }
}
