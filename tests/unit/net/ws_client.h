/*
 * Client (masked) WebSocket frames built by hand, for the unit tests of net/ws and
 * net/ws_frame. Included by the test files; not a module.
 */
#ifndef TP_TEST_WS_CLIENT_H
#define TP_TEST_WS_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "tickpool/base/buf.h"

static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends one client frame; `len_bytes` forces the length encoding (0 = minimal, 2, 8). */
static void cframe_ex(struct tp_buf *b, int fin, int rsv, int op, const void *payload, size_t len,
                      bool mask, int len_bytes)
{
    uint8_t h[14];
    size_t hl = 2;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv << 4) | op);
    h[1] = mask ? 0x80 : 0;
    if (len_bytes == 0)
        len_bytes = len < 126 ? 0 : len <= 0xffff ? 2 : 8;
    if (len_bytes == 0) {
        h[1] |= (uint8_t)len;
    } else if (len_bytes == 2) {
        h[1] |= 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        hl = 4;
    } else {
        h[1] |= 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        memcpy(h + hl, mask_key, 4);
        hl += 4;
    }
    tp_buf_append(b, h, hl);
    char *dst = tp_buf_reserve(b, len);
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        dst[i] = (char)(mask ? src[i] ^ mask_key[i % 4] : src[i]);
    tp_buf_commit(b, len);
}

#endif
