/*
 * Commands given as argv (see store_internal.h): their RESP, the bytes hiredis's
 * redisFormatCommandArgv writes, built in one pass without a printf per argument. A bet batch's
 * EVALSHA has hundreds of arguments, and hiredis formatted each header with sdscatfmt and grew
 * its string as it went. And replies as RESP again (tp_store_resp_reply): a copy that outlives
 * its callback, for a script reply held while WAIT runs and for the cluster mode's merged reads.
 */
#include "store_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

#include <string.h>
#include <strings.h>

/* Writes "<c><n>\r\n" at o; returns the bytes written. */
static size_t header(char *o, char c, size_t n)
{
    o[0] = c;
    size_t k = 1 + tp_fmt_u64(o + 1, n);
    memcpy(o + k, "\r\n", 2);
    return k + 2;
}

/* Writes one bulk string "$<n>\r\n<bytes>\r\n" at o; returns the bytes written. */
static size_t bulk(char *o, const char *p, size_t n)
{
    size_t k = header(o, '$', n);
    memcpy(o + k, p, n);
    memcpy(o + k + n, "\r\n", 2);
    return k + n + 2;
}

/* A header is at most 1 + 20 digits + CRLF; a bulk string adds its bytes and CRLF. */
#define HEADER_MAX 23

void tp_store_resp_argv(struct tp_buf *out, int argc, const char **argv, const size_t *lens)
{
    TP_ASSERT(argc >= 0);
    size_t need = HEADER_MAX;
    for (int i = 0; i < argc; i++)
        need += HEADER_MAX + lens[i] + 2;
    char *o = tp_buf_reserve(out, need), *start = o;
    o += header(o, '*', (size_t)argc);
    for (int i = 0; i < argc; i++)
        o += bulk(o, argv[i], lens[i]);
    tp_buf_commit(out, (size_t)(o - start));
}

void tp_store_resp_evalsha(struct tp_buf *out, const char *sha, int nkeys, int argc,
                           const char **argv, const size_t *lens)
{
    TP_ASSERT(argc >= 0 && nkeys >= 0);
    char nk[TP_FMT_I64_MAX];
    size_t nklen = tp_fmt_i64(nk, nkeys), shalen = strlen(sha);
    size_t need = 4 * HEADER_MAX + 7 + shalen + nklen + 6;
    for (int i = 0; i < argc; i++)
        need += HEADER_MAX + (lens ? lens[i] : strlen(argv[i])) + 2;
    char *o = tp_buf_reserve(out, need), *start = o;
    o += header(o, '*', (size_t)argc + 3);
    o += bulk(o, "EVALSHA", 7);
    o += bulk(o, sha, shalen);
    o += bulk(o, nk, nklen);
    for (int i = 0; i < argc; i++)
        o += bulk(o, argv[i], lens ? lens[i] : strlen(argv[i]));
    tp_buf_commit(out, (size_t)(o - start));
}

bool tp_store_resp_blocking_read(int argc, const char **argv, const size_t *lens)
{
    if (!((lens[0] == 5 && strncasecmp(argv[0], "XREAD", 5) == 0) ||
          (lens[0] == 10 && strncasecmp(argv[0], "XREADGROUP", 10) == 0)))
        return false;
    for (int i = 1; i < argc; i++)
        if (lens[i] == 5 && strncasecmp(argv[i], "BLOCK", 5) == 0)
            return true;
    return false;
}

void tp_store_resp_reply(struct tp_buf *b, const struct tp_store_reply *r)
{
    size_t len;
    const char *s;
    switch (tp_reply_type(r)) {
    case TP_REPLY_STRING:
        s = tp_reply_str(r, &len);
        tp_buf_printf(b, "$%zu\r\n", len);
        tp_buf_append(b, s, len);
        tp_buf_puts(b, "\r\n");
        break;
    case TP_REPLY_STATUS:
    case TP_REPLY_ERROR:
        s = tp_reply_str(r, &len);
        tp_buf_puts(b, tp_reply_type(r) == TP_REPLY_STATUS ? "+" : "-");
        tp_buf_append(b, s, len);
        tp_buf_puts(b, "\r\n");
        break;
    case TP_REPLY_INTEGER:
        tp_buf_printf(b, ":%lld\r\n", tp_reply_integer(r));
        break;
    case TP_REPLY_ARRAY:
        tp_buf_printf(b, "*%zu\r\n", tp_reply_len(r));
        for (size_t i = 0; i < tp_reply_len(r); i++)
            tp_store_resp_reply(b, tp_reply_at(r, i));
        break;
    case TP_REPLY_NIL:
    default:
        tp_buf_puts(b, "$-1\r\n");
        break;
    }
}
