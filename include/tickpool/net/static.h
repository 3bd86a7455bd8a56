/*
 * Static files for the browser client: GET/HEAD under server.web_root, index.html for
 * directories, MIME types by extension, ETag/If-None-Match → 304, and no way out of the root
 * (percent-decoding first, then `..`, encoded slashes and NUL, and symlinks resolving outside).
 */
#ifndef TP_STATIC_H
#define TP_STATIC_H

#include <stddef.h>
#include <stdint.h>

struct tp_static;
struct tp_http_ctx;

/** Creates a file server for `web_root` (resolved with realpath now). Returns NULL with a
 * message in err when the root does not exist or is not a directory. */
struct tp_static *tp_static_new(const char *web_root, char *err, size_t errlen);
/** Frees it. NULL is a no-op. */
void tp_static_free(struct tp_static *s);

/**
 * Maps a raw (percent-encoded) URL path to a regular file under the root, written to `out`.
 * Returns 0, TP_ENOTFOUND (missing, outside the root, or a forbidden form such as `..`,
 * encoded '/', '\\' or NUL), or TP_EINVAL for malformed percent-encoding.
 */
int tp_static_resolve(const struct tp_static *s, const char *raw_path, char *out, size_t outlen);

/** The Content-Type for a file name, by extension ("application/octet-stream" otherwise). */
const char *tp_static_mime(const char *path);

/** Writes the ETag (quoted, from size and mtime in nanoseconds) into out (>= 48 bytes). */
void tp_static_etag(int64_t size, int64_t mtime_ns, char *out, size_t outlen);

/** A router handler (ud = struct tp_static *) serving GET and HEAD; 405 for other methods. */
void tp_static_handle(struct tp_http_ctx *ctx, void *ud);

#endif
