/*
 * Wire codec, JSON reader (see include/tickpool/base/codec.h): jansson parses, then the tree is
 * copied into one tp_doc allocation. The only file that includes jansson.
 */
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "codec_internal.h"

#include <jansson.h>

#include <stdbool.h>
#include <string.h>

/* --- JSON reader (jansson) --- */

/* Deepest bracket nesting of `p`, ignoring brackets inside strings. Only a cheap early
 * rejection of hostile nesting before jansson recurses into it; syntax is jansson's job. */
static size_t json_depth(const char *p, size_t n)
{
    size_t depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                max = depth;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

static void json_count(json_t *j, size_t *nodes, size_t *bytes)
{
    const char *key;
    json_t *v;
    size_t i;
    (*nodes)++;
    switch (json_typeof(j)) {
    case JSON_STRING:
        *bytes += json_string_length(j) + 1;
        break;
    case JSON_ARRAY:
        json_array_foreach(j, i, v) json_count(v, nodes, bytes);
        break;
    case JSON_OBJECT:
        json_object_foreach(j, key, v)
        {
            (*nodes)++;
            *bytes += strlen(key) + 1;
            json_count(v, nodes, bytes);
        }
        break;
    default:
        break;
    }
}

/* Fills `out` from `j`. Children of a container are reserved as one contiguous block before
 * recursing, so the bump allocator keeps them adjacent. Object members keep jansson's
 * iteration order, which is insertion (= document) order. */
static void json_fill(struct tp_codec_build *b, struct tp_val *out, json_t *j)
{
    const char *key;
    json_t *v;
    size_t i;
    switch (json_typeof(j)) {
    case JSON_NULL:
        out->type = TP_VAL_NULL;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        out->type = TP_VAL_BOOL;
        out->v.b = json_is_true(j);
        break;
    case JSON_INTEGER:
        out->type = TP_VAL_INT;
        out->v.i = (int64_t)json_integer_value(j);
        break;
    case JSON_REAL:
        out->type = TP_VAL_FLOAT;
        out->v.d = json_real_value(j);
        break;
    case JSON_STRING:
        tp_codec_set_str(b, out, TP_VAL_STR, json_string_value(j), json_string_length(j));
        break;
    case JSON_ARRAY:
        out->type = TP_VAL_ARRAY;
        out->n = json_array_size(j);
        out->v.kids = tp_codec_take_nodes(b, out->n);
        json_array_foreach(j, i, v) json_fill(b, &out->v.kids[i], v);
        break;
    case JSON_OBJECT:
        out->type = TP_VAL_MAP;
        out->n = json_object_size(j);
        out->v.kids = tp_codec_take_nodes(b, 2 * out->n);
        i = 0;
        json_object_foreach(j, key, v)
        {
            tp_codec_set_str(b, &out->v.kids[2 * i], TP_VAL_STR, key, strlen(key));
            json_fill(b, &out->v.kids[2 * i + 1], v);
            i++;
        }
        break;
    }
}

int tp_codec_parse_json(const char *p, size_t len, struct tp_doc **out, char *err, size_t errlen)
{
    if (json_depth(p, len) > TP_DOC_MAX_DEPTH) {
        tp_codec_seterr(err, errlen, "nesting deeper than %d", TP_DOC_MAX_DEPTH);
        return TP_EINVAL;
    }
    /* JSON_DECODE_ANY: any value at top level (callers check the root's type).
     * JSON_ALLOW_NUL: "\u0000" in string values (keys with NUL are still refused).
     * No JSON_DISABLE_EOF_CHECK: trailing garbage is an error. */
    json_error_t je;
    json_t *j = json_loadb(p, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j == NULL) {
        tp_codec_seterr(err, errlen, "%s at byte %d", je.text, je.position);
        /* jansson fails the whole document on an integer beyond json_int_t or a real beyond
         * double: there is no tree to hand out, so report it as a range error. */
        return json_error_code(&je) == json_error_numeric_overflow ? TP_ETOOBIG : TP_EINVAL;
    }
    size_t nodes = 0, bytes = 0;
    json_count(j, &nodes, &bytes);
    struct tp_codec_build b;
    struct tp_doc *doc = tp_codec_doc_alloc(nodes, bytes, &b);
    json_fill(&b, tp_codec_take_nodes(&b, 1), j);
    TP_ASSERT(b.node == b.node_end && b.str == b.str_end);
    json_decref(j);
    *out = doc;
    return 0;
}
