/*
 * URLs: percent-decoding (shared by HTTP paths and query strings and by the Redis URL's
 * credentials) and the Redis URL syntax of redis.url. Pure string work: no socket, no loop.
 */
#ifndef TP_URL_H
#define TP_URL_H

#include <stdbool.h>
#include <stddef.h>

/**
 * Percent-decodes `n` bytes of `in` into `out` (room for n+1 bytes), NUL-terminating it.
 * `plus_space` turns '+' into ' ' (query strings). Returns the decoded length, or TP_EINVAL on a
 * malformed escape or a NUL (encoded or literal): a decoded string never hides a cut.
 */
int tp_url_decode(const char *in, size_t n, char *out, bool plus_space);

/* A parsed Redis URL (tp_url_parse_redis). `path` non-empty means a unix socket. */
struct tp_url_redis {
    char host[256];
    int port;
    char path[256];
    char user[128];
    char password[256];
    int db;
};

/**
 * Parses `redis://[[user]:pass@]host[:port][/db][?db=N]` (host may be `[v6]`; user and password
 * percent-decoded) or `unix:///path.sock[?db=N]` into `out` (port 6379 and db 0 by default).
 * Returns 0 or TP_EINVAL (out is then partly filled: do not use it).
 */
int tp_url_parse_redis(const char *url, struct tp_url_redis *out);

#endif
