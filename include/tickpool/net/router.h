/*
 * Request routing and the handler API. A route is {method, pattern, handler, ud}; patterns are
 * literal segments and `{name}` segments ("/api/v1/rounds/{id}"). Unknown path → 404, known path
 * with another method → 405 with Allow. HEAD is answered by GET routes (body suppressed).
 *
 * A handler gets a `tp_http_ctx` and must reply exactly once, now or later (async): through
 * tp_http_reply or tp_http_reply_error. If the connection died meanwhile, the late reply is
 * dropped and the context freed; the handler never needs to know.
 */
#ifndef TP_ROUTER_H
#define TP_ROUTER_H

#include "tickpool/base/codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_http_request;
struct tp_http_ctx;
struct tp_router;
struct tp_buf;
struct tp_worker;

#define TP_ROUTER_MAX_PARAMS 8

/** A request handler; `ud` is the pointer given to tp_router_add. */
typedef void (*tp_http_handler)(struct tp_http_ctx *ctx, void *ud);
/** Called (by the reply functions) when a context has its response; used by the connections
 * (conn_http.c). */
typedef void (*tp_http_done_cb)(struct tp_http_ctx *ctx, void *ud);

/** Creates an empty routing table. */
struct tp_router *tp_router_new(void);
/** Frees a table. NULL is a no-op. */
void tp_router_free(struct tp_router *r);
/**
 * Adds a route. `method` is "GET", "POST", ...; `pattern` starts with '/'. Both are copied.
 * Returns 0, or TP_EINVAL for a malformed pattern or more than TP_ROUTER_MAX_PARAMS params.
 */
int tp_router_add(struct tp_router *r, const char *method, const char *pattern,
                  tp_http_handler handler, void *ud);
/** Sets the handler for GET/HEAD requests no route matches (static files). */
void tp_router_set_fallback(struct tp_router *r, tp_http_handler handler, void *ud);
/** Routes ctx's request: calls a handler, or replies 404/405/400 itself. */
void tp_router_dispatch(struct tp_router *r, struct tp_http_ctx *ctx);

/* --- Context: creation (conn_http.c) --- */

/**
 * Creates a context for `req` (taken: the context frees it; may be NULL for parser errors).
 * `keep_alive` false makes the response carry "Connection: close". `done` is called once a
 * response exists, unless the context was orphaned.
 */
struct tp_http_ctx *tp_http_ctx_new(struct tp_http_request *req, bool keep_alive,
                                    tp_http_done_cb done, void *done_ud);
/** Frees a context. Only its owner (conn_http.c) calls this, after the reply or when orphaning
 * an already replied context. NULL is a no-op. */
void tp_http_ctx_free(struct tp_http_ctx *ctx);
/** The connection died: a reply still to come frees the context instead of calling done.
 * Frees the context at once when it already replied. */
void tp_http_ctx_orphan(struct tp_http_ctx *ctx);
/** True once a response exists. */
bool tp_http_ctx_replied(const struct tp_http_ctx *ctx);
/** The serialised response (head and body), valid once replied. */
struct tp_buf *tp_http_ctx_output(struct tp_http_ctx *ctx);
/** The response status, 0 before the reply. */
int tp_http_ctx_status(const struct tp_http_ctx *ctx);
/** tp_mono_ns when the context was created (the request was read): where latencies start. */
int64_t tp_http_ctx_start_ns(const struct tp_http_ctx *ctx);
/** The route label of tickpool_http_responses_total (TP_METRICS_ROUTE_*): the matched route's
 * pattern, STATIC for the fallback, OTHER (the default) when nothing matched. */
int tp_http_ctx_route(const struct tp_http_ctx *ctx);
/** Sets the route label, for requests answered outside the router (/ws upgrades). */
void tp_http_ctx_set_route(struct tp_http_ctx *ctx, int route);
/** True when the connection closes after this response. */
bool tp_http_ctx_closes(const struct tp_http_ctx *ctx);
/** Sets the worker reported by tp_http_ctx_worker (borrowed). */
void tp_http_ctx_set_worker(struct tp_http_ctx *ctx, struct tp_worker *w);

/* The address of a connection's peer: AF_INET (addr[0..4)), AF_INET6 (addr[0..16)), or 0 when
 * unknown (unit tests). An IPv4-mapped IPv6 peer is given as AF_INET. */
struct tp_http_peer {
    int family;
    uint8_t addr[16];
};
/** Sets the peer reported by tp_http_ctx_peer (copied). */
void tp_http_ctx_set_peer(struct tp_http_ctx *ctx, const struct tp_http_peer *peer);

/* --- Context: the handler's view --- */

/** The request (borrowed, lives as long as the context); NULL for parser-error contexts. */
const struct tp_http_request *tp_http_ctx_request(const struct tp_http_ctx *ctx);
/** A decoded `{name}` path parameter of the matched route, or NULL. */
const char *tp_http_ctx_param(const struct tp_http_ctx *ctx, const char *name);
/** A decoded query parameter, or NULL. */
const char *tp_http_ctx_query(const struct tp_http_ctx *ctx, const char *name);
/** A request header by case-insensitive name, or NULL. */
const char *tp_http_ctx_header(const struct tp_http_ctx *ctx, const char *name);
/** The request body and its length (never NULL; NUL-terminated). */
const char *tp_http_ctx_body(const struct tp_http_ctx *ctx, size_t *len);
/** The body format a Content-Type value names (NULL/empty = JSON; parameters ignored):
 * 0 and *fmt, or TP_EINVAL for a type the API does not read. */
int tp_http_body_format(const char *content_type, enum tp_fmt *fmt);
/** tp_http_body_format of the request's Content-Type header. */
int tp_http_ctx_body_format(const struct tp_http_ctx *ctx, enum tp_fmt *fmt);
/** True when the client asked for MessagePack (Accept: application/msgpack). */
bool tp_http_ctx_wants_msgpack(const struct tp_http_ctx *ctx);
/** The worker serving this request (NULL in unit tests). */
struct tp_worker *tp_http_ctx_worker(const struct tp_http_ctx *ctx);
/** The connection's peer address (family 0 when unknown); never NULL. */
const struct tp_http_peer *tp_http_ctx_peer(const struct tp_http_ctx *ctx);
/** Adds a response header ("Retry-After", "5"); ignored when it holds CR or LF. Call before
 * the reply. */
void tp_http_ctx_add_header(struct tp_http_ctx *ctx, const char *name, const char *value);
/** Makes the connection close after this response. */
void tp_http_ctx_set_close(struct tp_http_ctx *ctx);

/** Replies with `status`, `content_type` (may be NULL) and `len` bytes of `body` (copied).
 * Exactly once per context. */
void tp_http_reply(struct tp_http_ctx *ctx, int status, const char *content_type, const void *body,
                   size_t len);
/** Starts a response body in the client's format (MessagePack when it asked, else JSON):
 * initialises the caller's `b` and a writer `w` into it, for tp_http_reply_body. */
void tp_http_body_init(const struct tp_http_ctx *ctx, struct tp_buf *b, struct tp_wr *w);
/** Replies `status` with the body written into `b` since tp_http_body_init, typed in that
 * format, and frees b's storage. Exactly once per context (it is a tp_http_reply). */
void tp_http_reply_body(struct tp_http_ctx *ctx, int status, struct tp_buf *b);
/** Replies with the contract's error body {"error":{"code","message"}}, as JSON or, when the
 * client asked for it, MessagePack. */
void tp_http_reply_error(struct tp_http_ctx *ctx, int status, const char *code,
                         const char *message);

#endif
