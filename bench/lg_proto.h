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

/** True when the message p[0..n) is exactly a `bet_ok` as tickpool writes it (a fixmap of t,
 * req with an unsigned integer, then fixstr keys with integer values), with its req in *req.
 * Anything else (another type, an error, a shape this does not know) is false: the caller parses
 * it in full. Reading the one message of every bet without a document costs a few hundred
 * instructions where the full parse cost ~5,000 (callgrind, bench/README.md session 24). */
bool lg_ws_bet_ok_req(const uint8_t *p, size_t n, uint64_t *req);

/* --- Bookkeeping --- */

/** Writes seq in decimal with at least 8 digits ("%08" PRIu64, no NUL); returns the length
 * (at most 20). */
size_t lg_fmt_seq(char *out, uint64_t seq);

/** Writes one --latencies line, "due_ms latency_us\n" (no NUL); out holds at least 43 bytes. */
size_t lg_fmt_latency_line(char *out, int64_t due_ms, uint64_t lat_us);

/* --- RESP (Redis) --- */

/** Appends one bulk string. */
void lg_resp_bulk(struct tp_buf *b, const char *s, size_t n);

/** Length of one complete reply at p, 0 when incomplete, -1 when malformed. */
long lg_resp_len(const char *p, size_t n);

/** Copies the string of the complete bulk or simple reply at p into out (truncated). */
void lg_resp_str(const char *p, char *out, size_t outlen);

#endif
