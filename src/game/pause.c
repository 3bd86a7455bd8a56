/*
 * The operator's pause, read side (see include/tickpool/game/pause.h). The key is written only
 * by scripts/lua/pause.lua; this is the one place in C that knows its fields.
 */
#include "tickpool/game/pause.h"

#include "tickpool/base/common.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tp_game_pause_parse(const struct tp_store_reply *r, struct tp_game_pause *out)
{
    memset(out, 0, sizeof(*out));
    if (tp_reply_type(r) != TP_REPLY_ARRAY || tp_reply_len(r) != 3)
        return TP_EPROTO;
    const char *since = tp_reply_str(tp_reply_at(r, 0), NULL);
    if (since == NULL)
        return 0;
    const char *reason = tp_reply_str(tp_reply_at(r, 1), NULL);
    const char *by = tp_reply_str(tp_reply_at(r, 2), NULL);
    out->paused = true;
    if (!tp_parse_i64(since, &out->since) || out->since < 0)
        out->since = 0;
    snprintf(out->reason, sizeof(out->reason), "%s", reason ? reason : "");
    snprintf(out->by, sizeof(out->by), "%s", by ? by : "");
    return 0;
}

struct load {
    tp_game_pause_cb cb;
    void *ud;
};

static void on_load(int err, const struct tp_store_reply *r, void *ud)
{
    struct load *l = ud;
    struct tp_game_pause p;
    if (err == 0 && tp_game_pause_parse(r, &p) != 0)
        err = TP_EPROTO;
    l->cb(err, err == 0 ? &p : NULL, l->ud);
    free(l);
}

int tp_game_pause_load(struct tp_store *store, tp_game_pause_cb cb, void *ud)
{
    struct load *l = tp_xmalloc(sizeof(*l));
    l->cb = cb;
    l->ud = ud;
    /* An argument list, not a format: the leader reads it every step. */
    int rc =
        tp_store_commandl(store, on_load, l, "HMGET", TP_KEYS_PAUSE, "since", "reason", "by", NULL);
    if (rc != 0)
        free(l);
    return rc;
}
