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
    for (size_t i = 0; i < n; i++)
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
