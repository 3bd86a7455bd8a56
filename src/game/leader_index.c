/*
 * Game leader, the unfinished-index scan (see leader_internal.h and scripts/lua/round_index.lua).
 *
 * The planner sees a round only through tp:{g}:unfinished (plus the newest few), which
 * round_boundary and round_final keep. A server older than that index left its rounds in flight
 * outside it, and one left live for ever by the old 6-round window can be any number of rounds
 * back: without this scan no leader would ever close, cancel or settle it, and its stakes would
 * stay held. So once per lease the leader walks the round ids above the scan mark
 * (tp:{g}:unfinished_scan), a page at a time, and round_index.lua adds the unfinished ones. The
 * first lease after an upgrade walks the whole history once; later ones only the rounds opened
 * since (already indexed by round_boundary), so a failover costs a page or two.
 *
 * The walk runs beside the steps (it never holds step_busy: a long history must not delay a
 * boundary); every call is fenced, so a lost lease stops it, and the next lease walks again
 * from the mark.
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <string.h>

#define MOD "leader"

static void scan_page(struct tp_leader *l);

/* The walk ends (done for this lease when `done`); a failure is retried by a later step. */
static void scan_end(struct tp_leader *l, bool done)
{
    l->index.busy = false;
    if (done && l->index.epoch == l->epoch && l->leader) {
        l->index.done_epoch = l->epoch;
        if (l->index.added > 0)
            tp_log_warn(MOD,
                        "rounds left in flight outside the unfinished index added to it\t"
                        "count=%lld",
                        (long long)l->index.added);
    }
}

/* Still the lease the walk started under. */
static bool scan_current(const struct tp_leader *l)
{
    return l->leader && l->index.epoch == l->epoch;
}

static void on_index(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *code;
    if (!tp_leader_reply_ok(err, r, &code)) {
        if (strcmp(code, "stale_epoch") != 0)
            tp_log_warn(MOD, "round_index failed\tcode=%s", code);
        scan_end(l, false);
        return;
    }
    l->index.added += tp_reply_integer(tp_reply_at(r, 1));
    l->index.mark = l->index.ids[l->index.n - 1];
    if (l->index.n < TP_SCRIPT_INDEX_MAX || !scan_current(l))
        scan_end(l, l->index.n < TP_SCRIPT_INDEX_MAX);
    else
        scan_page(l);
}

static void on_ids(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ARRAY || tp_reply_len(r) > TP_SCRIPT_INDEX_MAX ||
        !scan_current(l)) {
        scan_end(l, false);
        return;
    }
    l->index.n = (int)tp_reply_len(r);
    for (int i = 0; i < l->index.n; i++) {
        const char *v = tp_reply_str(tp_reply_at(r, (size_t)i), NULL);
        int64_t id = 0;
        if (v == NULL || !tp_parse_i64(v, &id) || id <= l->index.mark) {
            scan_end(l, false);
            return;
        }
        l->index.ids[i] = id;
    }
    if (l->index.n == 0) {
        scan_end(l, true);
        return;
    }
    struct tp_script_round_index_args a = {.fence = tp_leader_fence(l),
                                           .mark = l->index.ids[l->index.n - 1],
                                           .ids = l->index.ids,
                                           .n = l->index.n};
    if (tp_script_round_index(l->store, &a, on_index, l) != 0)
        scan_end(l, false);
}

/* The next page of round ids above the mark (ids are the scores of tp:{g}:rounds). */
static void scan_page(struct tp_leader *l)
{
    if (tp_store_command(l->store, on_ids, l,
                         "ZRANGE " TP_KEYS_ROUNDS " (%lld +inf BYSCORE LIMIT 0 %d",
                         (long long)l->index.mark, TP_SCRIPT_INDEX_MAX) != 0)
        scan_end(l, false);
}

static void on_mark(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_leader *l = ud;
    const char *v = err == 0 ? tp_reply_str(r, NULL) : NULL;
    int64_t mark = 0;
    if (err != 0 || (v != NULL && (!tp_parse_i64(v, &mark) || mark < 0)) || !scan_current(l)) {
        scan_end(l, false);
        return;
    }
    l->index.mark = mark;
    scan_page(l);
}

void tp_leader_index_scan(struct tp_leader *l)
{
    if (l->index.busy || l->index.done_epoch == l->epoch)
        return;
    l->index.busy = true;
    l->index.epoch = l->epoch;
    l->index.added = 0;
    if (tp_store_command(l->store, on_mark, l, "GET " TP_KEYS_UNFINISHED_SCAN) != 0)
        scan_end(l, false);
}
