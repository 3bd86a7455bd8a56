/*
 * Private to the configuration module (config.c, config_table.c, config_value.c): the shape of
 * one row of the key table, the table itself, and the per-type parse/format of a value. The
 * table is the only place a key is declared; the loader and the printer walk it.
 */
#ifndef TICKPOOL_BASE_CONFIG_INTERNAL_H
#define TICKPOOL_BASE_CONFIG_INTERNAL_H

#include "tickpool/base/config.h"

#include <stddef.h>
#include <stdint.h>

enum ctype {
    CT_INT,     /* int */
    CT_INT64,   /* int64_t */
    CT_SIZE,    /* size_t, "64k" / "1m" / bytes */
    CT_DUR,     /* int in the field's unit (s or ms), "250ms" / "10s" / plain number of that unit */
    CT_DOUBLE,  /* double, finite */
    CT_STRING,  /* char[size] */
    CT_BOOL,    /* bool */
    CT_INTLIST, /* game.band_edges_bps: int[] + count */
    CT_WORKERS, /* int: "auto" → 0, else min..max */
};

/* A cross-check for one key beyond its type and bounds: returns NULL or a message. */
typedef const char *(*check_fn)(const void *field);

struct centry {
    const char *section;
    const char *key;
    enum ctype type;
    int64_t min, max; /* integer types: bounds in the field's unit; durations in that unit too */
    const char *def;  /* default, as it would be written in the file */
    size_t off;       /* offsetof(struct tp_config, ...) */
    size_t size;      /* sizeof the field (strings: buffer size) */
    int unit_ms;      /* CT_DUR: milliseconds per field unit (1000 for *_s fields, 1 for *_ms) */
    check_fn check;
};

/* Every key, in file order (config_table.c). */
extern const struct centry tp_config_table[];
extern const size_t tp_config_table_len;

/* Parses `raw` for entry `e` and stores it into cfg only if it is valid; otherwise writes the
 * reason (without the key name) into msg and returns TP_EINVAL (config_value.c). */
int tp_config_set_value(struct tp_config *cfg, const struct centry *e, const char *raw, char *msg,
                        size_t msglen);

/* Formats the field of entry e as it would be written in the file (config_value.c). */
void tp_config_format_value(const struct tp_config *cfg, const struct centry *e, char *out,
                            size_t n);

#endif
