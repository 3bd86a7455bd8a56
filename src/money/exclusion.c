/*
 * Self-exclusion (see tickpool/money/exclusion.h): request validation, and one Redis round trip
 * per operation (exclusion.lua through its stub to set, HGET to read).
 */
#include "tickpool/money/exclusion.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "exclusion"

/* --- Validation (pure) --- */

int tp_exclusion_parse(enum tp_fmt fmt, const void *body, size_t len, int *days)
{
    if (body == NULL || len == 0 || len > TP_EXCLUSION_MAX_BODY || days == NULL)
        return TP_EINVAL;
    struct tp_doc *doc = NULL;
    if (tp_doc_parse_ex(fmt, body, len, TP_EXCLUSION_MAX_BODY, &doc, NULL, 0) != 0)
        return TP_EINVAL;
    const struct tp_val *root = tp_doc_root(doc);
    int64_t d = 0;
    /* Exactly {days}: an irreversible request is not guessed at, so no other member passes
     * unnoticed (a client's "hours" or "until" would otherwise be silently ignored). */
    int rc = tp_val_type(root) == TP_VAL_MAP && tp_val_len(root) == 1 &&
                     tp_val_get_int(root, "days", &d) == 0 && d >= TP_EXCLUSION_DAYS_MIN &&
                     d <= TP_EXCLUSION_DAYS_MAX
                 ? 0
                 : TP_EINVAL;
    tp_doc_free(doc);
    if (rc == 0)
        *days = (int)d;
    return rc;
}

/* --- Redis --- */

struct pending {
    tp_exclusion_cb cb;
    void *ud;
};

/* Reads exclusion.lua's reply, {"ok", until} or {"err", "exclusion_cannot_shorten", until}, into
 * `res`; anything else is UNAVAILABLE (logged: a Redis error such as -OOM, or a bug). */
static void read_reply(int err, const struct tp_store_reply *r, struct tp_exclusion_result *res)
{
    res->code = TP_EXCLUSION_UNAVAILABLE;
    res->excluded_until = 0;
    if (err != 0) {
        tp_log_warn(MOD, "exclusion script failed\terr=%s", tp_strerror(err));
        return;
    }
    size_t n = tp_reply_len(r);
    const char *tag = tp_reply_str(tp_reply_at(r, 0), NULL);
    const char *code = tp_reply_str(tp_reply_at(r, 1), NULL);
    const struct tp_store_reply *until = tp_reply_at(r, n - 1);
    if (tag != NULL && until != NULL && tp_reply_type(until) == TP_REPLY_INTEGER) {
        if (n == 2 && strcmp(tag, "ok") == 0)
            res->code = TP_EXCLUSION_OK;
        else if (n == 3 && strcmp(tag, "err") == 0 && code != NULL &&
                 strcmp(code, "exclusion_cannot_shorten") == 0)
            res->code = TP_EXCLUSION_CANNOT_SHORTEN;
        res->excluded_until = tp_reply_integer(until);
    }
    if (res->code == TP_EXCLUSION_UNAVAILABLE) {
        const char *text = tp_reply_str(r, NULL);
        tp_log_error(MOD, "unexpected exclusion script reply\treply=\"%.200s\"", text ? text : "");
    }
}

static void on_script(int err, const struct tp_store_reply *r, void *ud)
{
    struct pending *p = ud;
    struct tp_exclusion_result res;
    read_reply(err, r, &res);
    p->cb(&res, p->ud);
    free(p);
}

int tp_exclusion_set(struct tp_worker *w, int64_t user_id, int days, tp_exclusion_cb cb, void *ud)
{
    if (w == NULL || cb == NULL || user_id < 1 || days < TP_EXCLUSION_DAYS_MIN ||
        days > TP_EXCLUSION_DAYS_MAX)
        return TP_EINVAL;
    struct tp_store *store = tp_store_of(w);
    if (store == NULL)
        return TP_EUNAVAIL;
    struct tp_script_exclusion_args args = {.user_id = user_id,
                                            .days = days,
                                            .now_ms = tp_now_ms(),
                                            .buckets = tp_worker_config(w)->game.buckets};
    struct pending *p = tp_xmalloc(sizeof(*p));
    p->cb = cb;
    p->ud = ud;
    int rc = tp_script_exclusion(store, &args, on_script, p);
    if (rc != 0) {
        free(p);
        return TP_EUNAVAIL;
    }
    return 0;
}

static void on_get(int err, const struct tp_store_reply *r, void *ud)
{
    struct pending *p = ud;
    struct tp_exclusion_result res = {.code = TP_EXCLUSION_UNAVAILABLE};
    if (err == 0 && tp_reply_type(r) == TP_REPLY_NIL) {
        res.code = TP_EXCLUSION_OK;
    } else if (err == 0 && tp_reply_type(r) == TP_REPLY_STRING) {
        int64_t until;
        if (tp_parse_i64(tp_reply_str(r, NULL), &until) && until >= 0) {
            res.code = TP_EXCLUSION_OK;
            /* An ended exclusion stays stored (bet_batch.lua compares with now): none in force. */
            res.excluded_until = until > tp_now_ms() ? until : 0;
        }
    }
    p->cb(&res, p->ud);
    free(p);
}

int tp_exclusion_get(struct tp_worker *w, int64_t user_id, tp_exclusion_cb cb, void *ud)
{
    if (w == NULL || cb == NULL || user_id < 1)
        return TP_EINVAL;
    struct tp_store *store = tp_store_of(w);
    if (store == NULL)
        return TP_EUNAVAIL;
    struct tp_key k;
    int bucket = tp_bucket_of(user_id, tp_worker_config(w)->game.buckets);
    struct pending *p = tp_xmalloc(sizeof(*p));
    p->cb = cb;
    p->ud = ud;
    if (tp_store_command(store, on_get, p, "HGET %s %lld", tp_keys_excl(&k, bucket),
                         (long long)user_id) != 0) {
        free(p);
        return TP_EUNAVAIL;
    }
    return 0;
}
