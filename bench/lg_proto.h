/*
 * loadgen's wire formats, written by hand (bench only): the client side of exactly the messages
 * loadgen exchanges needs a few dozen lines each, no general library (the server's WebSocket
 * framer and llhttp are server-side only). Pure functions on buffers: no sockets, no loadgen state.
 */
#ifndef TP_BENCH_LG_PROTO_H
#define TP_BENCH_LG_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_buf;

/* --- HTTP/1.1 responses --- */

/** Reads the head of one response at p: returns its length (up to the blank line) with *status
 * and *clen (Content-Length, 0 when absent) set, 0 when incomplete, -1 when it is not HTTP/1.x
 * or no head ended within 64 KiB. */
long lg_http_head(const char *p, size_t n, int *status, size_t *clen);

/** Copies the "code" of an error body {"error":{"code":"...",...}} into out ("?" when none);
 * returns out. */
const char *lg_http_error_code(const char *body, size_t n, char *out, size_t outlen);

/* --- WebSocket (RFC 6455), client side --- */

/** Appends the upgrade request for GET /ws (with ?token= when `token` is not NULL) using the
 * 16-byte `nonce`, and stores the Sec-WebSocket-Accept value the server must answer in accept. */
void lg_ws_upgrade(struct tp_buf *out, const char *host, int port, const char *token,
                   const uint8_t nonce[16], char *accept, size_t accept_len);

/** Appends one client frame (FIN set) of `opcode` with payload p, masked with `mask` as clients
 * must (§5.3). */
void lg_ws_frame(struct tp_buf *out, int opcode, const void *p, size_t n, uint32_t mask);

/** Reads the header of one server frame at p: returns the header length (2, 4 or 10) with *fin,
 * *op and *len set, 0 when incomplete, -1 when masked or longer than 16 MiB. */
int lg_ws_header(const uint8_t *p, size_t n, bool *fin, int *op, uint64_t *len);

/* --- RESP (Redis) --- */

/** Appends one bulk string. */
void lg_resp_bulk(struct tp_buf *b, const char *s, size_t n);

/** Length of one complete reply at p, 0 when incomplete, -1 when malformed. */
long lg_resp_len(const char *p, size_t n);

/** Copies the string of the complete bulk or simple reply at p into out (truncated). */
void lg_resp_str(const char *p, char *out, size_t outlen);

#endif
