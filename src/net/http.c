/*
 * HTTP/1.1 request parsing over llhttp 8.1 and response serialisation (see tickpool/net/http.h).
 *
 * Strings arrive from llhttp in fragments (a header may straddle two reads), so the parser
 * appends every fragment to one arena buffer and records offsets; when a request completes,
 * all strings are copied once into the request's own NUL-terminated block.
 *
 * The header-size limit is exact: while a request's head is incomplete, llhttp is never given
 * more than the remaining allowance, so "head not finished after max_header bytes" is precisely
 * "head larger than max_header".
 */
#include "tickpool/net/http.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"
#include "tickpool/base/url.h"

#include <llhttp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum phase { PH_IDLE, PH_HEAD, PH_BODY };
enum span { SP_NONE, SP_URL, SP_FIELD, SP_VALUE };

struct hdr_span {
    size_t name_off, name_len, val_off, val_len;
};

struct tp_http_parser {
    llhttp_t ll;
    struct tp_http_limits lim;
    enum phase phase;
    enum span span;
    size_t head_used; /* bytes of the current head fed so far */
    struct tp_buf arena;
    size_t url_off, url_len;
    size_t field_off, field_len;
    struct hdr_span *hdrs;
    size_t nhdrs, hdrs_cap;
    struct tp_buf body;
    bool saw_cl, saw_te;
    bool want_continue; /* "Expect: 100-continue" seen, body still to come */
    bool dead;
    int err_status;
    const char *err_reason;
    struct tp_http_request *ready;
};

static struct tp_http_parser *P(llhttp_t *ll)
{
    return ll->data;
}

static int fail(struct tp_http_parser *p, int status, const char *reason)
{
    if (p->err_status == 0) {
        p->err_status = status;
        p->err_reason = reason;
    }
    return -1;
}

static size_t arena_add(struct tp_http_parser *p, const char *at, size_t n)
{
    size_t off = tp_buf_size(&p->arena);
    tp_buf_append(&p->arena, at, n);
    return off;
}

static int on_message_begin(llhttp_t *ll)
{
    struct tp_http_parser *p = P(ll);
    p->phase = PH_HEAD;
    p->span = SP_NONE;
    tp_buf_reset(&p->arena);
    tp_buf_reset(&p->body);
    p->url_off = p->url_len = 0;
    p->nhdrs = 0;
    p->saw_cl = p->saw_te = false;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    struct tp_http_parser *p = P(ll);
    size_t off = arena_add(p, at, n);
    if (p->span != SP_URL) {
        p->span = SP_URL;
        p->url_off = off;
        p->url_len = 0;
    }
    p->url_len += n;
    return 0;
}

static int on_span_complete(llhttp_t *ll)
{
    P(ll)->span = SP_NONE;
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    struct tp_http_parser *p = P(ll);
    size_t off = arena_add(p, at, n);
    if (p->span != SP_FIELD) {
        p->span = SP_FIELD;
        p->field_off = off;
        p->field_len = 0;
    }
    p->field_len += n;
    return 0;
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A field name is complete: start its header entry with an empty value (llhttp does not call
 * on_header_value for an empty value). */
static int on_header_field_complete(llhttp_t *ll)
{
    struct tp_http_parser *p = P(ll);
    p->span = SP_NONE;
    if (p->nhdrs == TP_HTTP_MAX_HEADERS)
        return fail(p, 431, "too many header fields");
    if (p->nhdrs == p->hdrs_cap) {
        p->hdrs_cap = p->hdrs_cap ? p->hdrs_cap * 2 : 16;
        p->hdrs = tp_xrealloc(p->hdrs, p->hdrs_cap * sizeof(*p->hdrs));
    }
    /* Field names are RFC 9110 tokens; llhttp 8 lets some separators (spaces) through, and
     * "Content-Length : 5" style names are a classic smuggling vector, so check here. */
    const char *fname = tp_buf_ptr(&p->arena) + p->field_off;
    if (p->field_len == 0)
        return fail(p, 400, "empty header name");
    for (size_t i = 0; i < p->field_len; i++)
        if (!is_tchar((unsigned char)fname[i]))
            return fail(p, 400, "invalid character in header name");
    struct hdr_span *h = &p->hdrs[p->nhdrs++];
    h->name_off = p->field_off;
    h->name_len = p->field_len;
    h->val_off = tp_buf_size(&p->arena);
    h->val_len = 0;
    const char *name = tp_buf_ptr(&p->arena) + h->name_off;
    if (h->name_len == 14 && strncasecmp(name, "content-length", 14) == 0)
        p->saw_cl = true;
    if (h->name_len == 17 && strncasecmp(name, "transfer-encoding", 17) == 0)
        p->saw_te = true;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    struct tp_http_parser *p = P(ll);
    TP_ASSERT(p->nhdrs > 0);
    struct hdr_span *h = &p->hdrs[p->nhdrs - 1];
    size_t off = arena_add(p, at, n);
    if (p->span != SP_VALUE) {
        p->span = SP_VALUE;
        h->val_off = off;
        h->val_len = 0;
    }
    h->val_len += n;
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct tp_http_parser *p = P(ll);
    /* Request smuggling guard: a message framed both ways is refused outright (RFC 9112
     * §6.1 allows a server to reject it; llhttp would too, but this is cheap and explicit). */
    if (p->saw_cl && p->saw_te)
        return fail(p, 400, "Content-Length together with Transfer-Encoding");
    if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length > p->lim.max_body)
        return fail(p, 413, "request body too large");
    p->phase = PH_BODY;
    if ((ll->flags & (F_CONTENT_LENGTH | F_CHUNKED)) &&
        !((ll->flags & F_CONTENT_LENGTH) && ll->content_length == 0)) {
        const char *a = tp_buf_ptr(&p->arena);
        for (size_t i = 0; i < p->nhdrs; i++) {
            const struct hdr_span *h = &p->hdrs[i];
            if (h->name_len == 6 && strncasecmp(a + h->name_off, "expect", 6) == 0 &&
                h->val_len >= 12 && strncasecmp(a + h->val_off, "100-continue", 12) == 0)
                p->want_continue = true;
        }
    }
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    struct tp_http_parser *p = P(ll);
    if (tp_buf_size(&p->body) + n > p->lim.max_body)
        return fail(p, 413, "request body too large");
    tp_buf_append(&p->body, at, n);
    return 0;
}

static enum tp_http_method map_method(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return TP_HTTP_GET;
    case HTTP_HEAD:
        return TP_HTTP_HEAD;
    case HTTP_POST:
        return TP_HTTP_POST;
    case HTTP_PUT:
        return TP_HTTP_PUT;
    case HTTP_DELETE:
        return TP_HTTP_DELETE;
    case HTTP_OPTIONS:
        return TP_HTTP_OPTIONS;
    case HTTP_PATCH:
        return TP_HTTP_PATCH;
    }
    return TP_HTTP_OTHER;
}

/* Splits the raw query into decoded parameters, writing strings at *w. Returns the count or
 * TP_EINVAL on a malformed escape. */
static int split_query(const char *q, struct tp_http_kv *out, char **w)
{
    int n = 0;
    while (*q != '\0') {
        size_t seg = strcspn(q, "&");
        if (seg > 0) {
            const char *eq = memchr(q, '=', seg);
            size_t nlen = eq ? (size_t)(eq - q) : seg;
            int r = tp_url_decode(q, nlen, *w, true);
            if (r < 0)
                return r;
            out[n].name = *w;
            *w += r + 1;
            const char *v = eq ? eq + 1 : q + seg;
            size_t vlen = eq ? seg - nlen - 1 : 0;
            r = tp_url_decode(v, vlen, *w, true);
            if (r < 0)
                return r;
            out[n].value = *w;
            *w += r + 1;
            n++;
        }
        q += seg;
        if (*q == '&')
            q++;
    }
    return n;
}

/* Builds the request from the arena; returns NULL (with err_status set) on a bad target. */
static struct tp_http_request *build_request(struct tp_http_parser *p)
{
    const char *a = tp_buf_ptr(&p->arena);
    const char *url = a + p->url_off;
    size_t url_len = p->url_len;
    if (url_len == 0 || url[0] != '/') {
        fail(p, 400, "request target must be an absolute path");
        return NULL;
    }
    if (memchr(url, '\0', url_len) != NULL) {
        fail(p, 400, "NUL in request target");
        return NULL;
    }
    size_t nparams_max = 1;
    for (size_t i = 0; i < url_len; i++)
        nparams_max += url[i] == '&';

    /* Layout of _mem: target, path, query, then query params (decoded, each fits in the raw
     * size), then headers, then body. */
    size_t need = 3 * (url_len + 1) + 2 * (url_len + 1) + tp_buf_size(&p->body) + 1;
    for (size_t i = 0; i < p->nhdrs; i++)
        need += p->hdrs[i].name_len + p->hdrs[i].val_len + 2;

    struct tp_http_request *req = tp_xcalloc(1, sizeof(*req));
    char *w = req->_mem = tp_xmalloc(need);
    req->method = map_method(p->ll.method);
    req->method_name = llhttp_method_name((llhttp_method_t)p->ll.method);
    req->version_major = p->ll.http_major;
    req->version_minor = p->ll.http_minor;
    req->keep_alive = llhttp_should_keep_alive(&p->ll) != 0;
    req->upgrade = p->ll.upgrade != 0;

    memcpy(w, url, url_len);
    w[url_len] = '\0';
    req->target = w;
    w += url_len + 1;
    const char *qm = memchr(url, '?', url_len);
    size_t plen = qm ? (size_t)(qm - url) : url_len;
    memcpy(w, url, plen);
    w[plen] = '\0';
    req->path = w;
    w += plen + 1;
    size_t qlen = qm ? url_len - plen - 1 : 0;
    memcpy(w, qm ? qm + 1 : "", qlen);
    w[qlen] = '\0';
    req->query = w;
    w += qlen + 1;

    req->params = tp_xcalloc(nparams_max, sizeof(*req->params));
    int np = split_query(req->query, req->params, &w);
    if (np < 0) {
        tp_http_request_free(req);
        fail(p, 400, "malformed percent-encoding in query");
        return NULL;
    }
    req->nparams = (size_t)np;

    req->headers = tp_xcalloc(p->nhdrs ? p->nhdrs : 1, sizeof(*req->headers));
    for (size_t i = 0; i < p->nhdrs; i++) {
        const struct hdr_span *h = &p->hdrs[i];
        memcpy(w, a + h->name_off, h->name_len);
        w[h->name_len] = '\0';
        req->headers[i].name = w;
        w += h->name_len + 1;
        /* llhttp keeps trailing whitespace of a value; strip it (RFC 9110 OWS). */
        size_t vl = h->val_len;
        while (vl > 0 && (a[h->val_off + vl - 1] == ' ' || a[h->val_off + vl - 1] == '\t'))
            vl--;
        memcpy(w, a + h->val_off, vl);
        w[vl] = '\0';
        req->headers[i].value = w;
        w += vl + 1;
    }
    req->nheaders = p->nhdrs;

    size_t blen = tp_buf_size(&p->body);
    if (blen > 0)
        memcpy(w, tp_buf_ptr(&p->body), blen);
    w[blen] = '\0';
    req->body = w;
    req->body_len = blen;
    w += blen + 1;
    TP_ASSERT((size_t)(w - req->_mem) <= need);
    return req;
}

/* Pauses llhttp after every request so the caller handles one request at a time. */
static int on_message_complete(llhttp_t *ll)
{
    struct tp_http_parser *p = P(ll);
    struct tp_http_request *req = build_request(p);
    if (req == NULL)
        return -1;
    p->ready = req;
    p->want_continue = false;
    p->phase = PH_IDLE;
    p->head_used = 0;
    tp_buf_reset(&p->arena);
    tp_buf_reset(&p->body);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_span_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_span_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

struct tp_http_parser *tp_http_parser_new(const struct tp_http_limits *limits)
{
    struct tp_http_parser *p = tp_xcalloc(1, sizeof(*p));
    p->lim = *limits;
    if (p->lim.max_header == 0)
        p->lim.max_header = TP_HTTP_MAX_HEADER_BYTES;
    llhttp_init(&p->ll, HTTP_REQUEST, &settings);
    p->ll.data = p;
    tp_buf_init(&p->arena);
    tp_buf_init(&p->body);
    return p;
}

void tp_http_parser_free(struct tp_http_parser *p)
{
    if (p == NULL)
        return;
    tp_http_request_free(p->ready);
    tp_buf_deinit(&p->arena);
    tp_buf_deinit(&p->body);
    free(p->hdrs);
    free(p);
}

enum tp_http_feed tp_http_parser_feed(struct tp_http_parser *p, const char *data, size_t len,
                                      size_t *consumed)
{
    size_t off = 0;
    *consumed = 0;
    if (p->dead)
        return TP_HTTP_ERROR;
    if (p->ready != NULL)
        return TP_HTTP_REQUEST;
    while (off < len) {
        size_t chunk = len - off;
        if (p->phase != PH_BODY) {
            if (p->head_used >= p->lim.max_header) {
                fail(p, 431, "request header block too large");
                goto error;
            }
            chunk = TP_MIN(chunk, p->lim.max_header - p->head_used);
        }
        const char *start = data + off;
        llhttp_errno_t e = llhttp_execute(&p->ll, start, chunk);
        size_t n;
        if (e == HPE_OK) {
            n = chunk;
        } else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            n = (size_t)(llhttp_get_error_pos(&p->ll) - start);
            if (e == HPE_PAUSED)
                llhttp_resume(&p->ll);
        } else {
            if (p->err_status == 0)
                fail(p, 400, llhttp_get_error_reason(&p->ll));
            goto error;
        }
        if (p->phase != PH_BODY && p->ready == NULL)
            p->head_used += n;
        off += n;
        if (p->ready != NULL) {
            /* After an upgrade request the rest of the stream is not HTTP. */
            if (p->ready->upgrade)
                p->dead = true;
            *consumed = off;
            return TP_HTTP_REQUEST;
        }
        if (p->phase != PH_BODY && p->head_used >= p->lim.max_header) {
            fail(p, 431, "request header block too large");
            goto error;
        }
    }
    *consumed = off;
    return TP_HTTP_NEED_MORE;
error:
    p->dead = true;
    *consumed = off;
    if (p->err_reason == NULL)
        p->err_reason = "malformed request";
    return TP_HTTP_ERROR;
}

struct tp_http_request *tp_http_parser_take(struct tp_http_parser *p)
{
    struct tp_http_request *r = p->ready;
    p->ready = NULL;
    return r;
}

int tp_http_parser_error_status(const struct tp_http_parser *p)
{
    return p->err_status ? p->err_status : 400;
}

const char *tp_http_parser_error_reason(const struct tp_http_parser *p)
{
    return p->err_reason ? p->err_reason : "malformed request";
}

bool tp_http_parser_take_continue(struct tp_http_parser *p)
{
    bool r = p->want_continue;
    p->want_continue = false;
    return r;
}

bool tp_http_parser_in_request(const struct tp_http_parser *p)
{
    return p->phase != PH_IDLE;
}

void tp_http_request_free(struct tp_http_request *req)
{
    if (req == NULL)
        return;
    free(req->headers);
    free(req->params);
    free(req->_mem);
    free(req);
}

const char *tp_http_request_header(const struct tp_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const char *tp_http_request_header_last(const struct tp_http_request *req, const char *name)
{
    for (size_t i = req->nheaders; i-- > 0;)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const char *tp_http_request_param(const struct tp_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

const char *tp_http_status_text(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

const char *tp_http_status_code_name(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 402:
        return "payment_required";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 408:
        return "request_timeout";
    case 409:
        return "conflict";
    case 413:
        return "payload_too_large";
    case 415:
        return "unsupported_media_type";
    case 422:
        return "unprocessable";
    case 426:
        return "upgrade_required";
    case 429:
        return "overloaded";
    case 431:
        return "headers_too_large";
    case 501:
        return "not_implemented";
    case 503:
        return "unavailable";
    case 505:
        return "http_version_not_supported";
    }
    return status >= 500 ? "internal" : "error";
}

void tp_http_write_head(struct tp_buf *out, int status, const char *content_type,
                        size_t content_length, const char *extra, bool close)
{
    /* Appended piece by piece: this runs for every response, printf's parsing is not free. */
    char num[TP_FMT_I64_MAX];
    tp_buf_puts(out, "HTTP/1.1 ");
    tp_buf_append(out, num, tp_fmt_i64(num, status));
    tp_buf_puts(out, " ");
    tp_buf_puts(out, tp_http_status_text(status));
    tp_buf_puts(out, "\r\nServer: tickpool\r\n");
    if (content_type != NULL) {
        tp_buf_puts(out, "Content-Type: ");
        tp_buf_puts(out, content_type);
        tp_buf_puts(out, "\r\n");
    }
    /* 1xx and 304 carry no Content-Length of their own (RFC 9110 §8.6). */
    if (status >= 200 && status != 204 && status != 304) {
        tp_buf_puts(out, "Content-Length: ");
        tp_buf_append(out, num, tp_fmt_u64(num, content_length));
        tp_buf_puts(out, "\r\n");
    }
    if (extra != NULL)
        tp_buf_puts(out, extra);
    if (close)
        tp_buf_puts(out, "Connection: close\r\n");
    tp_buf_puts(out, "\r\n");
}

void tp_http_json_string(struct tp_buf *out, const char *s)
{
    tp_buf_append(out, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            tp_buf_printf(out, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            tp_buf_printf(out, "\\u%04x", *c);
        else
            tp_buf_append(out, c, 1);
    }
    tp_buf_append(out, "\"", 1);
}

void tp_http_error_json(struct tp_buf *out, const char *code, const char *message)
{
    tp_buf_puts(out, "{\"error\":{\"code\":");
    tp_http_json_string(out, code);
    tp_buf_puts(out, ",\"message\":");
    tp_http_json_string(out, message);
    tp_buf_puts(out, "}}");
}
