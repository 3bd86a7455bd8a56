/*
 * loadgen's hand-written wire formats (see lg_proto.h): HTTP/1.1 response heads, the client
 * side of WebSocket framing and its upgrade, and RESP. Each reader only has to understand what
 * tickpool and Redis send to loadgen, so none of them is a general parser.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

#include "lg_proto.h"

/* --- HTTP/1.1 responses --- */

long lg_http_head(const char *p, size_t n, int *status, size_t *clen)
{
    const char *eoh = memmem(p, n, "\r\n\r\n", 4);
    if (eoh == NULL)
        return n < 65536 ? 0 : -1;
    size_t hl = (size_t)(eoh - p) + 4;
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(p + 9);
    *clen = 0;
    for (const char *q = p; q < eoh;) {
        const char *nl = memmem(q, (size_t)(eoh - q) + 2, "\r\n", 2);
        if (nl == NULL)
            break;
        if (nl - q > 15 && strncasecmp(q, "content-length:", 15) == 0)
            *clen = strtoul(q + 15, NULL, 10);
        q = nl + 2;
    }
    return (long)hl;
}

const char *lg_http_error_code(const char *body, size_t n, char *out, size_t outlen)
{
    /* Error bodies are {"error":{"code":"...",...}}: a substring scan is enough here. */
    static const char pat[] = "\"code\":\"";
    const char *p = memmem(body, n, pat, sizeof(pat) - 1);
    if (p == NULL) {
        snprintf(out, outlen, "?");
        return out;
    }
    p += sizeof(pat) - 1;
    size_t i = 0;
    while (p + i < body + n && p[i] != '"' && i + 1 < outlen) {
        out[i] = p[i];
        i++;
    }
    out[i] = 0;
    return out;
}

/* --- WebSocket (RFC 6455), client side --- */

void lg_ws_upgrade(struct tp_buf *out, const char *host, int port, const char *token,
                   const uint8_t nonce[16], char *accept, size_t accept_len)
{
    char key[32], cat[96];
    tp_base64_encode(nonce, 16, key, sizeof(key));
    snprintf(cat, sizeof(cat), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t sha[TP_SHA1_LEN];
    tp_sha1(cat, strlen(cat), sha);
    tp_base64_encode(sha, sizeof(sha), accept, accept_len);
    char q[600] = "";
    if (token != NULL)
        snprintf(q, sizeof(q), "?token=%s", token);
    tp_buf_printf(out,
                  "GET /ws%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: tickpool.v1\r\n\r\n",
                  q, host, port, key);
}

void lg_ws_frame(struct tp_buf *out, int opcode, const void *p, size_t n, uint32_t mask)
{
    /* Client frames must be masked (RFC 6455 §5.3). */
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint8_t mk[4] = {(uint8_t)mask, (uint8_t)(mask >> 8), (uint8_t)(mask >> 16),
                     (uint8_t)(mask >> 24)};
    memcpy(hdr + h, mk, 4);
    h += 4;
    tp_buf_append(out, hdr, h);
    uint8_t *dst = (uint8_t *)tp_buf_reserve(out, n);
    const uint8_t *src = p;
    /* Eight bytes a step: the mask repeats every four, so the word is the mask twice in byte
     * order (byte by byte, a bet's ~70-byte payload cost ~600 instructions). */
    uint8_t mk8[8];
    memcpy(mk8, mk, 4);
    memcpy(mk8 + 4, mk, 4);
    uint64_t m64;
    memcpy(&m64, mk8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= m64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mk[i & 3];
    tp_buf_commit(out, n);
}

int lg_ws_header(const uint8_t *p, size_t n, bool *fin, int *op, uint64_t *len)
{
    if (n < 2)
        return 0;
    *fin = (p[0] & 0x80) != 0;
    *op = p[0] & 0x0f;
    *len = p[1] & 0x7f;
    int h = 2;
    if (p[1] & 0x80)
        return -1; /* server frames are never masked */
    if (*len == 126) {
        if (n < 4)
            return 0;
        *len = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
    } else if (*len == 127) {
        if (n < 10)
            return 0;
        *len = 0;
        for (int i = 0; i < 8; i++)
            *len = (*len << 8) | p[2 + i];
        h = 10;
    }
    if (*len > (16u << 20))
        return -1;
    return h;
}

/* --- RESP (Redis) --- */

void lg_resp_bulk(struct tp_buf *b, const char *s, size_t n)
{
    tp_buf_printf(b, "$%zu\r\n", n);
    tp_buf_append(b, s, n);
    tp_buf_puts(b, "\r\n");
}

/* RESP: length of one complete reply at p, 0 when incomplete, -1 when malformed. */
long lg_resp_len(const char *p, size_t n)
{
    const char *nl = memmem(p, n, "\r\n", 2);
    if (nl == NULL)
        return 0;
    long line = nl - p + 2;
    switch (p[0]) {
    case '+':
    case '-':
    case ':':
        return line;
    case '$': {
        long bl = strtol(p + 1, NULL, 10);
        if (bl < 0)
            return line;
        return (size_t)(line + bl + 2) <= n ? line + bl + 2 : 0;
    }
    case '*': {
        long cnt = strtol(p + 1, NULL, 10), off = line;
        for (long i = 0; i < cnt; i++) {
            long l = lg_resp_len(p + off, n - (size_t)off);
            if (l <= 0)
                return l;
            off += l;
        }
        return off;
    }
    default:
        return -1;
    }
}

/* Copies the string of a bulk/simple reply at p into out. */
void lg_resp_str(const char *p, char *out, size_t outlen)
{
    const char *s = p + 1;
    if (p[0] == '$')
        s = strstr(p, "\r\n") + 2;
    size_t i = 0;
    while (s[i] != '\r' && i + 1 < outlen) {
        out[i] = s[i];
        i++;
    }
    out[i] = 0;
}

/* --- Bet answers and bookkeeping --- */

/* A MessagePack integer at p[0..n): its length, 0 when p holds no whole integer. */
static size_t mp_int_len(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t b = p[0];
    size_t len;
    if (b <= 0x7f || b >= 0xe0)
        len = 1; /* positive / negative fixint */
    else if (b >= 0xcc && b <= 0xcf)
        len = 1 + ((size_t)1 << (b - 0xcc)); /* uint 8, 16, 32, 64 */
    else if (b >= 0xd0 && b <= 0xd3)
        len = 1 + ((size_t)1 << (b - 0xd0)); /* int 8, 16, 32, 64 */
    else
        return 0;
    return len <= n ? len : 0;
}

/* The unsigned MessagePack integer at p (mp_int_len checked it); false when it is negative. */
static bool mp_uint(const uint8_t *p, uint64_t *v)
{
    uint8_t b = p[0];
    if (b <= 0x7f) {
        *v = b;
        return true;
    }
    if (b < 0xcc || b > 0xcf)
        return false;
    size_t k = (size_t)1 << (b - 0xcc);
    uint64_t x = 0;
    for (size_t i = 0; i < k; i++)
        x = x << 8 | p[1 + i];
    *v = x;
    return true;
}

static bool mp_fixstr_is(const uint8_t *p, size_t n, const char *s, size_t sl)
{
    return n >= 1 + sl && p[0] == (uint8_t)(0xa0 | sl) && memcmp(p + 1, s, sl) == 0;
}

bool lg_ws_bet_ok_req(const uint8_t *p, size_t n, uint64_t *req)
{
    if (n < 1 || (p[0] & 0xf0) != 0x80 || (p[0] & 0x0f) < 2)
        return false;
    size_t pairs = p[0] & 0x0f, i = 1;
    if (!mp_fixstr_is(p + i, n - i, "t", 1))
        return false;
    i += 2;
    if (!mp_fixstr_is(p + i, n - i, "bet_ok", 6))
        return false;
    i += 7;
    if (!mp_fixstr_is(p + i, n - i, "req", 3))
        return false;
    i += 4;
    size_t l = mp_int_len(p + i, n - i);
    if (l == 0 || !mp_uint(p + i, req))
        return false;
    i += l;
    /* The result's fields: a fixstr key and an integer each, and nothing after them. */
    for (size_t k = 2; k < pairs; k++) {
        if (i >= n || (p[i] & 0xe0) != 0xa0)
            return false;
        size_t kl = 1 + (p[i] & 0x1f);
        if (kl > n - i)
            return false;
        i += kl;
        l = mp_int_len(p + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return i == n;
}

size_t lg_fmt_seq(char *out, uint64_t seq)
{
    char d[21];
    size_t n = tp_fmt_u64(d, seq);
    size_t pad = n < 8 ? 8 - n : 0;
    memset(out, '0', pad);
    memcpy(out + pad, d, n);
    return pad + n;
}

size_t lg_fmt_latency_line(char *out, int64_t due_ms, uint64_t lat_us)
{
    size_t n = tp_fmt_i64(out, due_ms);
    out[n++] = ' ';
    n += tp_fmt_u64(out + n, lat_us);
    out[n++] = '\n';
    return n;
}
