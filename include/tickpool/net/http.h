/*
 * HTTP/1.1 request parsing over llhttp and response serialisation. Pure: no sockets, no loop,
 * so it is unit-tested and fuzzed directly. The only module that includes llhttp.h.
 *
 * A parser is fed the bytes of one connection and yields complete requests one at a time, in
 * order; it stops after each request so pipelined requests are never parsed ahead of the
 * connection's response slots.
 */
#ifndef TP_HTTP_H
#define TP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_buf;

#define TP_HTTP_MAX_HEADER_BYTES 8192 /* request line + header block; 431 beyond */
#define TP_HTTP_MAX_HEADERS 100       /* header fields per request; 431 beyond */

/* Request methods tickpool distinguishes; anything else llhttp accepts is TP_HTTP_OTHER. */
enum tp_http_method {
    TP_HTTP_OTHER = 0,
    TP_HTTP_GET,
    TP_HTTP_HEAD,
    TP_HTTP_POST,
    TP_HTTP_PUT,
    TP_HTTP_DELETE,
    TP_HTTP_OPTIONS,
    TP_HTTP_PATCH,
};

/* One name/value pair (header or decoded query parameter), NUL-terminated. */
struct tp_http_kv {
    const char *name;
    const char *value;
};

/* A complete request. Every pointer points into `_mem`, owned by the request. */
struct tp_http_request {
    enum tp_http_method method;
    const char *method_name; /* "GET", "PROPFIND", ... */
    const char *target;      /* raw request target as sent ("/a%20b?x=1") */
    const char *path;        /* target up to '?', still percent-encoded */
    const char *query;       /* raw query after '?', "" when none */
    struct tp_http_kv *headers;
    size_t nheaders;
    struct tp_http_kv *params; /* decoded query parameters ('+' is a space) */
    size_t nparams;
    const char *body; /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    int version_major, version_minor;
    bool keep_alive; /* HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with keep-alive */
    bool upgrade;    /* an Upgrade request: HTTP parsing stops after it */
    char *_mem;
};

struct tp_http_parser;

struct tp_http_limits {
    size_t max_header; /* bytes of request line + headers (TP_HTTP_MAX_HEADER_BYTES) */
    size_t max_body;   /* body bytes (server.max_body) */
};

/* Results of tp_http_parser_feed. */
enum tp_http_feed {
    TP_HTTP_NEED_MORE = 0, /* all input consumed, no complete request yet */
    TP_HTTP_REQUEST = 1,   /* a request is ready: take it with tp_http_parser_take */
    TP_HTTP_ERROR = -1,    /* broken input: answer tp_http_parser_error_status and close */
};

/** Creates a parser for one connection with the given limits (copied). */
struct tp_http_parser *tp_http_parser_new(const struct tp_http_limits *limits);
/** Frees a parser and any partial request. NULL is a no-op. */
void tp_http_parser_free(struct tp_http_parser *p);

/**
 * Feeds up to `len` bytes; sets *consumed to the bytes used. Stops right after a complete
 * request (TP_HTTP_REQUEST), so the caller feeds the remainder later. After an error, or after
 * an upgrade request, every further call returns TP_HTTP_ERROR.
 */
enum tp_http_feed tp_http_parser_feed(struct tp_http_parser *p, const char *data, size_t len,
                                      size_t *consumed);
/** Returns the completed request (caller owns it: tp_http_request_free), or NULL. */
struct tp_http_request *tp_http_parser_take(struct tp_http_parser *p);
/** After TP_HTTP_ERROR: the status to answer (400, 413 or 431). */
int tp_http_parser_error_status(const struct tp_http_parser *p);
/** After TP_HTTP_ERROR: a short human-readable reason (static string). */
const char *tp_http_parser_error_reason(const struct tp_http_parser *p);
/** True once (then false) when the request being received sent "Expect: 100-continue" and
 * its body has not arrived: the caller may answer "HTTP/1.1 100 Continue" first. */
bool tp_http_parser_take_continue(struct tp_http_parser *p);
/** True while a request has started but is not complete (for header/idle timeouts). */
bool tp_http_parser_in_request(const struct tp_http_parser *p);

/** Frees a request. NULL is a no-op. */
void tp_http_request_free(struct tp_http_request *req);
/** Header value by case-insensitive name (first occurrence), or NULL. */
const char *tp_http_request_header(const struct tp_http_request *req, const char *name);
/** The value of the LAST header called `name`, or NULL: what the nearest proxy wrote when a
 * client sent a header of the same name before it (X-Forwarded-For). */
const char *tp_http_request_header_last(const struct tp_http_request *req, const char *name);
/** Decoded query parameter by exact name (first occurrence), or NULL. */
const char *tp_http_request_param(const struct tp_http_request *req, const char *name);

/** The reason phrase for a status code ("Not Found"), or "Unknown". */
const char *tp_http_status_text(int status);
/** The contract's error code for a status ("not_found", "payload_too_large", ...). */
const char *tp_http_status_code_name(int status);

/**
 * Appends a response head to `out`: status line, Content-Type (when non-NULL), Content-Length,
 * `extra` (preformatted "Name: value\r\n" lines, may be NULL), "Connection: close" when
 * `close`, and the blank line. The caller appends the body (unless the request was HEAD).
 */
void tp_http_write_head(struct tp_buf *out, int status, const char *content_type,
                        size_t content_length, const char *extra, bool close);

/** Appends `{"error":{"code":"...","message":"..."}}` to `out`, JSON-escaping both strings. */
void tp_http_error_json(struct tp_buf *out, const char *code, const char *message);

/** Appends `s` as a JSON string literal (quotes included) with control characters escaped. */
void tp_http_json_string(struct tp_buf *out, const char *s);

#endif
