/*
 * Wire codec, values (see include/tickpool/base/codec.h): the parsed tree's allocation and
 * duplicate-key check shared by both readers, the document API that dispatches to them
 * (codec_json.c, codec_msgpack.c), read access to values, and re-encoding a value (tp_wr_val).
 */
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "codec_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Parsed tree --- */

struct tp_doc *tp_codec_doc_alloc(size_t nodes, size_t strbytes, struct tp_codec_build *b)
{
    struct tp_doc *doc = tp_xmalloc(sizeof(*doc) + nodes * sizeof(struct tp_val) + strbytes);
    b->node = doc->nodes;
    b->node_end = doc->nodes + nodes;
    b->str = (char *)b->node_end;
    b->str_end = b->str + strbytes;
    doc->root = nodes > 0 ? doc->nodes : NULL;
    return doc;
}

void tp_codec_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int cmp_key(const void *a, const void *b)
{
    const struct tp_val *x = *(const struct tp_val *const *)a,
                        *y = *(const struct tp_val *const *)b;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return memcmp(x->v.s, y->v.s, x->n);
}

static bool key_eq(const struct tp_val *x, const struct tp_val *y)
{
    return x->n == y->n && memcmp(x->v.s, y->v.s, x->n) == 0;
}

/* True when map `m` has two equal keys. Small maps compare pairwise; big ones sort pointers
 * so that a hostile 100k-key map costs n log n, not n². */
bool tp_codec_has_dup_keys(const struct tp_val *m)
{
    size_t n = m->n;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (key_eq(&m->v.kids[2 * i], &m->v.kids[2 * j]))
                    return true;
        return false;
    }
    const struct tp_val **keys = tp_xmalloc(n * sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[i] = &m->v.kids[2 * i];
    qsort(keys, n, sizeof(*keys), cmp_key);
    bool dup = false;
    for (size_t i = 1; i < n && !dup; i++)
        dup = cmp_key(&keys[i - 1], &keys[i]) == 0;
    free(keys);
    return dup;
}

/* --- Document API --- */

int tp_doc_parse_ex(enum tp_fmt fmt, const void *data, size_t len, size_t max_len,
                    struct tp_doc **out, char *err, size_t errlen)
{
    TP_ASSERT(out != NULL);
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (len > max_len) {
        tp_codec_seterr(err, errlen, "document of %zu bytes over the %zu-byte limit", len, max_len);
        return TP_ETOOBIG;
    }
    if (len == 0 || data == NULL) {
        tp_codec_seterr(err, errlen, "empty document");
        return TP_EINVAL;
    }
    if (fmt == TP_FMT_JSON)
        return tp_codec_parse_json(data, len, out, err, errlen);
    TP_ASSERT(fmt == TP_FMT_MSGPACK);
    return tp_codec_parse_msgpack(data, len, out, err, errlen);
}

struct tp_doc *tp_doc_parse(enum tp_fmt fmt, const void *data, size_t len, char *err, size_t errlen)
{
    struct tp_doc *doc;
    tp_doc_parse_ex(fmt, data, len, TP_DOC_MAX_LEN, &doc, err, errlen);
    return doc;
}

const struct tp_val *tp_doc_root(const struct tp_doc *doc)
{
    return doc != NULL ? doc->root : NULL;
}

void tp_doc_free(struct tp_doc *doc)
{
    free(doc);
}

/* --- Value access --- */

enum tp_val_type tp_val_type(const struct tp_val *v)
{
    return v != NULL ? v->type : TP_VAL_NULL;
}

const struct tp_val *tp_val_get(const struct tp_val *map, const char *key)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < map->n; i++) {
        const struct tp_val *k = &map->v.kids[2 * i];
        if (k->n == kl && memcmp(k->v.s, key, kl) == 0)
            return &map->v.kids[2 * i + 1];
    }
    return NULL;
}

size_t tp_val_len(const struct tp_val *v)
{
    if (v == NULL)
        return 0;
    switch (v->type) {
    case TP_VAL_STR:
    case TP_VAL_BIN:
    case TP_VAL_ARRAY:
    case TP_VAL_MAP:
        return v->n;
    default:
        return 0;
    }
}

const struct tp_val *tp_val_at(const struct tp_val *v, size_t i)
{
    if (v == NULL || i >= v->n)
        return NULL;
    if (v->type == TP_VAL_ARRAY)
        return &v->v.kids[i];
    if (v->type == TP_VAL_MAP)
        return &v->v.kids[2 * i + 1];
    return NULL;
}

const char *tp_val_key_at(const struct tp_val *map, size_t i, size_t *len)
{
    if (map == NULL || map->type != TP_VAL_MAP || i >= map->n)
        return NULL;
    const struct tp_val *k = &map->v.kids[2 * i];
    if (len != NULL)
        *len = k->n;
    return k->v.s;
}

int64_t tp_val_int(const struct tp_val *v)
{
    if (v == NULL)
        return 0;
    if (v->type == TP_VAL_INT)
        return v->v.i;
    if (v->type == TP_VAL_UINT && v->v.u <= INT64_MAX)
        return (int64_t)v->v.u;
    return 0;
}

uint64_t tp_val_uint(const struct tp_val *v)
{
    if (v == NULL)
        return 0;
    if (v->type == TP_VAL_UINT)
        return v->v.u;
    if (v->type == TP_VAL_INT && v->v.i >= 0)
        return (uint64_t)v->v.i;
    return 0;
}

double tp_val_double(const struct tp_val *v)
{
    if (v == NULL)
        return 0.0;
    switch (v->type) {
    case TP_VAL_FLOAT:
        return v->v.d;
    case TP_VAL_INT:
        return (double)v->v.i;
    case TP_VAL_UINT:
        return (double)v->v.u;
    default:
        return 0.0;
    }
}

bool tp_val_bool(const struct tp_val *v)
{
    return v != NULL && v->type == TP_VAL_BOOL && v->v.b;
}

const char *tp_val_str(const struct tp_val *v, size_t *len)
{
    if (v == NULL || (v->type != TP_VAL_STR && v->type != TP_VAL_BIN))
        return NULL;
    if (len != NULL)
        *len = v->n;
    return v->v.s;
}

int tp_val_get_int(const struct tp_val *map, const char *key, int64_t *out)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return TP_EINVAL;
    const struct tp_val *v = tp_val_get(map, key);
    if (v == NULL)
        return TP_ENOTFOUND;
    if (v->type == TP_VAL_UINT)
        return TP_ETOOBIG;
    if (v->type != TP_VAL_INT)
        return TP_EINVAL;
    *out = v->v.i;
    return 0;
}

int tp_val_get_str(const struct tp_val *map, const char *key, const char **out, size_t *len)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return TP_EINVAL;
    const struct tp_val *v = tp_val_get(map, key);
    if (v == NULL)
        return TP_ENOTFOUND;
    if (v->type != TP_VAL_STR || memchr(v->v.s, '\0', v->n) != NULL)
        return TP_EINVAL;
    *out = v->v.s;
    if (len != NULL)
        *len = v->n;
    return 0;
}

int tp_val_get_bool(const struct tp_val *map, const char *key, bool *out)
{
    if (map == NULL || map->type != TP_VAL_MAP)
        return TP_EINVAL;
    const struct tp_val *v = tp_val_get(map, key);
    if (v == NULL)
        return TP_ENOTFOUND;
    if (v->type != TP_VAL_BOOL)
        return TP_EINVAL;
    *out = v->v.b;
    return 0;
}

void tp_wr_val(struct tp_wr *w, const struct tp_val *v)
{
    TP_ASSERT(v != NULL);
    switch (v->type) {
    case TP_VAL_NULL:
        tp_wr_null(w);
        break;
    case TP_VAL_BOOL:
        tp_wr_bool(w, v->v.b);
        break;
    case TP_VAL_INT:
        tp_wr_int(w, v->v.i);
        break;
    case TP_VAL_UINT:
        tp_wr_uint(w, v->v.u);
        break;
    case TP_VAL_FLOAT:
        tp_wr_double(w, v->v.d);
        break;
    case TP_VAL_STR:
        tp_wr_strn(w, v->v.s, v->n);
        break;
    case TP_VAL_BIN:
        tp_wr_bin(w, v->v.s, v->n);
        break;
    case TP_VAL_ARRAY:
        tp_wr_array(w, v->n);
        for (size_t i = 0; i < v->n; i++)
            tp_wr_val(w, &v->v.kids[i]);
        break;
    case TP_VAL_MAP:
        tp_wr_map(w, v->n);
        for (size_t i = 0; i < v->n; i++) {
            tp_wr_keyn(w, v->v.kids[2 * i].v.s, v->v.kids[2 * i].n);
            tp_wr_val(w, &v->v.kids[2 * i + 1]);
        }
        break;
    }
}
