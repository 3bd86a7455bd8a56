/*
 * Wire codec: JSON (HTTP API) and MessagePack (WebSocket, `application/msgpack`) behind one
 * writer and one parsed-document tree, so callers never branch on the format. No I/O. The only
 * module that includes jansson and msgpack-c.
 *
 * Writer: containers declare their element count up front (MessagePack needs it); in JSON the
 * writer places commas and colons and closes a container once its count is reached. Output is
 * deterministic: the same calls produce the same bytes (idempotent replays depend on it).
 *
 * JSON output policy:
 *  - strings: `"` `\` and the control characters U+0000..U+001F are escaped (\b \f \n \r \t,
 *    others as \u00XX, lowercase hex); valid UTF-8 passes through unchanged; every byte of an
 *    invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated, stray continuation)
 *    is replaced by U+FFFD, so the output is always valid JSON.
 *  - doubles: the shortest "%.Ng" that reads back to the same double, exponent written as
 *    `1e300` / `1e-7`, and always with a `.` or exponent so it reads back as a float
 *    (1.0 → `1.0`, -0.0 → `-0.0`). NaN and ±Infinity → `null`.
 *  - binary (tp_wr_bin): lowercase hex string (JSON has no binary type).
 *
 * Reader: a request body becomes an immutable `struct tp_val` tree owned by a `struct tp_doc`.
 * Every string in the tree is a NUL-terminated copy (its length excludes the NUL; values may
 * contain NUL bytes, keys may not). Rejected at parse time: syntax errors, trailing garbage,
 * nesting deeper than TP_DOC_MAX_DEPTH, duplicate keys, NUL bytes in keys, invalid UTF-8 in
 * JSON, NaN/Infinity in JSON, numbers out of range (see tp_doc_parse_ex), and in MessagePack:
 * non-string map keys, ext types, declared lengths beyond the data.
 */
#ifndef TP_CODEC_H
#define TP_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_buf;

enum tp_fmt {
    TP_FMT_JSON,
    TP_FMT_MSGPACK,
};

/* Deepest container nesting the writer and the reader accept (a top-level map is depth 1). */
#define TP_CODEC_MAX_DEPTH 32
#define TP_DOC_MAX_DEPTH TP_CODEC_MAX_DEPTH
/* Input size cap of tp_doc_parse (tp_doc_parse_ex takes the caller's own). */
#define TP_DOC_MAX_LEN (1024 * 1024)

/* --- Writer --- */

/* One open container of a tp_wr (writer-internal). */
struct tp_wr_level {
    uint32_t left;  /* items (keys and values) still expected in this container */
    uint32_t total; /* items declared (2n for a map of n pairs) */
    bool map;
};

/** Streaming encoder into a caller-owned tp_buf; lives on the caller's stack, no allocation. */
struct tp_wr {
    struct tp_buf *_out;
    enum tp_fmt _fmt;
    uint32_t _depth;
    bool _done; /* the single top-level value is complete */
    struct tp_wr_level _stack[TP_CODEC_MAX_DEPTH];
};

/** Starts writing one top-level value in `fmt`, appended to `out` (borrowed; not reset). */
void tp_wr_init(struct tp_wr *w, struct tp_buf *out, enum tp_fmt fmt);
/** Opens a map of `n` key/value pairs: follow with n × (tp_wr_key, value). Closes itself
 * after the last value; n = 0 writes an empty map. TP_ASSERTs on misuse (as all tp_wr_*). */
void tp_wr_map(struct tp_wr *w, size_t n);
/** Opens an array of `n` values; closes itself after the n-th. */
void tp_wr_array(struct tp_wr *w, size_t n);
/** Writes a map key (NUL-terminated); only valid where a key is expected. */
void tp_wr_key(struct tp_wr *w, const char *key);
/** Writes a map key of `n` bytes. */
void tp_wr_keyn(struct tp_wr *w, const char *key, size_t n);
/** Writes a string value (NUL-terminated). NULL writes null. */
void tp_wr_str(struct tp_wr *w, const char *s);
/** Writes a string value of `n` bytes (may contain NUL bytes). */
void tp_wr_strn(struct tp_wr *w, const char *s, size_t n);
/** Writes binary data: MessagePack bin, JSON lowercase hex string. */
void tp_wr_bin(struct tp_wr *w, const void *p, size_t n);
/** Writes a signed integer (MessagePack: smallest encoding). */
void tp_wr_int(struct tp_wr *w, int64_t v);
/** Writes an unsigned integer. */
void tp_wr_uint(struct tp_wr *w, uint64_t v);
/** Writes a double (JSON: shortest round-trip form, non-finite → null; MessagePack: float64). */
void tp_wr_double(struct tp_wr *w, double v);
/** Writes true or false. */
void tp_wr_bool(struct tp_wr *w, bool v);
/** Writes null (MessagePack nil). */
void tp_wr_null(struct tp_wr *w);
/** Splices one complete pre-encoded value of the writer's format (not checked); counts as
 * one value. Not valid where a key is expected. */
void tp_wr_raw(struct tp_wr *w, const void *encoded, size_t n);
/** True once the one top-level value is complete (every container closed). */
bool tp_wr_done(const struct tp_wr *w);

/** Longest MessagePack encoding of an integer (int 64: tag and 8 bytes). */
#define TP_CODEC_MSGPACK_INT_MAX 9
/** Writes the MessagePack encoding of `v` that tp_wr_int writes (the smallest) to
 * out[TP_CODEC_MSGPACK_INT_MAX]; returns its length. For encoders of fixed-shape messages. */
size_t tp_codec_msgpack_int(void *out, int64_t v);
/** Reads the MessagePack integer at p[0..n) as the document reader types it (any int or uint
 * encoding, not only the smallest): its length, with its value in *v; 0 when p does not start
 * with a whole integer or holds an unsigned one above INT64_MAX (the reader's UINT). For readers
 * of fixed-shape messages, which fall back to the document reader when this says 0. */
size_t tp_codec_msgpack_read_int(const void *p, size_t n, int64_t *v);
/**
 * Appends p[n] with each byte that is not well-formed UTF-8 as U+FFFD (the JSON writer's
 * policy: the same text a JSON round trip gives), every other byte as it is: a text element of
 * a Postgres binary array, which Postgres refuses when it is not UTF-8.
 */
void tp_codec_utf8(struct tp_buf *out, const char *p, size_t n);

/* --- Reader --- */

enum tp_val_type {
    TP_VAL_NULL,
    TP_VAL_BOOL,
    TP_VAL_INT,   /* fits int64 */
    TP_VAL_UINT,  /* MessagePack only: above INT64_MAX */
    TP_VAL_FLOAT, /* JSON number with fraction or exponent; MessagePack float32/64 */
    TP_VAL_STR,
    TP_VAL_BIN, /* MessagePack only */
    TP_VAL_ARRAY,
    TP_VAL_MAP,
};

struct tp_val;
struct tp_doc;

/** Parses one complete value of `fmt` from `data` (borrowed, need not be NUL-terminated), at
 * most TP_DOC_MAX_LEN bytes. Returns a new doc (caller frees), or NULL with a message in `err`
 * (may be NULL) on any rejected input. */
struct tp_doc *tp_doc_parse(enum tp_fmt fmt, const void *data, size_t len, char *err,
                            size_t errlen);
/** As tp_doc_parse with the caller's size cap `max_len`, returning why: 0 and *out set;
 * TP_ETOOBIG when len > max_len or a number is out of range (JSON integer outside int64,
 * e.g. 9223372036854775808, or a real overflowing double, e.g. 1e400: jansson fails the whole
 * parse there, so no tree exists); TP_EINVAL for any other malformed input. */
int tp_doc_parse_ex(enum tp_fmt fmt, const void *data, size_t len, size_t max_len,
                    struct tp_doc **out, char *err, size_t errlen);
/** The root value; valid until tp_doc_free. */
const struct tp_val *tp_doc_root(const struct tp_doc *doc);
/** Frees the doc and every value in it. NULL is a no-op. */
void tp_doc_free(struct tp_doc *doc);

/** Type of `v`; TP_VAL_NULL for a NULL pointer. */
enum tp_val_type tp_val_type(const struct tp_val *v);
/** Member of a map by key (first byte-exact match), or NULL (also when `map` is no map). */
const struct tp_val *tp_val_get(const struct tp_val *map, const char *key);
/** Element count of an array, pair count of a map, byte length of a string/bin, else 0. */
size_t tp_val_len(const struct tp_val *v);
/** Element `i` of an array or value of pair `i` of a map; NULL when out of range. */
const struct tp_val *tp_val_at(const struct tp_val *v, size_t i);
/** Key of pair `i` of a map (NUL-terminated, no NUL inside), length in *len (may be NULL). */
const char *tp_val_key_at(const struct tp_val *map, size_t i, size_t *len);
/** Integer value of an INT (or UINT ≤ INT64_MAX, never produced by the parser); 0 otherwise. */
int64_t tp_val_int(const struct tp_val *v);
/** Unsigned value of an UINT, or of a non-negative INT; 0 otherwise. */
uint64_t tp_val_uint(const struct tp_val *v);
/** Value of a FLOAT, or an INT/UINT converted; 0.0 otherwise. */
double tp_val_double(const struct tp_val *v);
/** Value of a BOOL; false otherwise. */
bool tp_val_bool(const struct tp_val *v);
/** Bytes of a STR or BIN (STR is NUL-terminated), length in *len (may be NULL); NULL for
 * other types. */
const char *tp_val_str(const struct tp_val *v, size_t *len);

/** Strict integer member for validation: 0 and *out; TP_ENOTFOUND when missing; TP_EINVAL
 * when not an integer (floats even when integral: 1.0, 1e2, 1e30; strings, bools, null, or
 * `map` not a map); TP_ETOOBIG for a MessagePack uint above INT64_MAX. */
int tp_val_get_int(const struct tp_val *map, const char *key, int64_t *out);
/** Strict string member: 0 with *out (NUL-terminated, borrowed from the doc) and *len (may be
 * NULL); TP_ENOTFOUND when missing; TP_EINVAL when not a string or it contains a NUL byte. */
int tp_val_get_str(const struct tp_val *map, const char *key, const char **out, size_t *len);
/** Strict boolean member: 0 and *out; TP_ENOTFOUND; TP_EINVAL when not a bool. */
int tp_val_get_bool(const struct tp_val *map, const char *key, bool *out);

/** Re-encodes a parsed value (and everything below it) with `w`, e.g. to convert formats. */
void tp_wr_val(struct tp_wr *w, const struct tp_val *v);

#endif
