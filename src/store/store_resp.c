/*
 * Commands given as argv (see store_internal.h): their RESP, the bytes hiredis's
 * redisFormatCommandArgv writes, built in one pass without a printf per argument. A bet batch's
 * EVALSHA has hundreds of arguments, and hiredis formatted each header with sdscatfmt and grew
 * its string as it went.
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

void tp_store_resp_argv(struct tp_buf *out, int argc, const char **argv, const size_t *lens)
{
    TP_ASSERT(argc >= 0);
    /* A header is at most 1 + 20 digits + CRLF; every argument adds its CRLF. */
    size_t need = 23;
    for (int i = 0; i < argc; i++)
        need += 23 + lens[i] + 2;
    char *o = tp_buf_reserve(out, need), *start = o;
    o += header(o, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        o += header(o, '$', lens[i]);
        memcpy(o, argv[i], lens[i]);
        o += lens[i];
        memcpy(o, "\r\n", 2);
        o += 2;
    }
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
