/*
 * `tickpool admin hot-index-prune`: removes leaked hot index entries past their idempotency TTL
 * (see include/tickpool/cli/hot_leaks.h, docs/operations.md §4 "Leaked hot index entries").
 *
 * Each step is one scripts/lua/idem_unindex.lua call, archival's own step, for up to
 * PRUNE_STEP keys of one round in one bucket: it removes an entry only while it still names that
 * round (a key reused on a new round since names the new one and stays), atomically, and gives
 * no filter bits to an entry placed before `since_ms`. The command passes only entries it read
 * as placed before `since_ms`, and no bet is ever admitted on a round gone from Redis, so a step
 * removes exactly those of them still there and sets no bit. Entries within their TTL are
 * counted and left: their keys are in no filter (an older archival set none), so the entry is
 * their only idempotency guard until the TTL has passed.
 */
#include "admin_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/cli/hot_leaks.h"
#include "tickpool/store/keys.h"

#include <inttypes.h>
#include <string.h>

#define PRUNE_STEP 256

/* One round's past-TTL leaks of one bucket, l->a[i..j), in steps. Returns the entries removed,
 * or -1 after printing why the steps stopped. */
static int64_t prune_round(struct tp_admin *a, const struct tp_hot_leaks *l, size_t i, size_t j,
                           int64_t since_ms)
{
    struct tp_script_unindex_field f[PRUNE_STEP];
    int64_t removed = 0;
    int ttl = tp_keys_idem_ttl_s();
    while (i < j) {
        int n = 0;
        for (; i < j && n < PRUNE_STEP; i++)
            f[n++] = (struct tp_script_unindex_field){.s = l->a[i].field, .len = l->a[i].len};
        struct tp_script_idem_unindex_args u = {.bucket = l->a[i - 1].bucket,
                                                .id = l->a[i - 1].round,
                                                .window = tp_keys_idem_window(tp_now_ms(), ttl),
                                                .two = false,
                                                .since_ms = since_ms,
                                                .fields = f,
                                                .n = n};
        struct tp_admin_reply r;
        tp_admin_reply_init(&r);
        struct tp_store_value *v = tp_admin_wait(
            a, tp_script_idem_unindex(tp_store_sync_store(a->redis), &u, tp_admin_on_reply, &r), &r,
            "idem_unindex");
        if (v == NULL)
            return -1;
        long long got = v->type == TP_REPLY_INTEGER ? v->integer : -2;
        tp_store_value_free(v);
        if (got == -1) {
            fprintf(stderr, "admin hot-index-prune: the idempotency filter is not built yet "
                            "(the leader builds it within seconds of starting): run the command "
                            "again\n");
            return -1;
        }
        if (got < 0) {
            fprintf(stderr, "admin hot-index-prune: unexpected reply of idem_unindex\n");
            return -1;
        }
        removed += got;
    }
    return removed;
}

static int run_prune(struct tp_admin *a, int argc, char **argv)
{
    bool dry = false;
    const struct tp_admin_opt opts[] = {{"dry-run", NULL, &dry}};
    int npos;
    if (tp_admin_args(argc, argv, opts, 1, NULL, 0, &npos) != TP_ADMIN_OK)
        return TP_ADMIN_USAGE;
    if (tp_admin_redis(a) == NULL)
        return TP_ADMIN_UNAVAILABLE;
    int64_t since = tp_hot_leaks_since_ms();
    struct tp_hot_leaks l;
    if (tp_hot_leaks_find(a->redis, a->cfg->game.buckets, since, !dry, &l) != 0) {
        tp_hot_leaks_free(&l);
        fprintf(stderr, "admin hot-index-prune: reading the hot index failed: nothing removed\n");
        return TP_ADMIN_UNAVAILABLE;
    }
    int64_t removed = 0;
    int status = TP_ADMIN_OK;
    for (size_t i = 0, j; i < l.n && !dry; i = j) {
        for (j = i + 1; j < l.n && l.a[j].bucket == l.a[i].bucket && l.a[j].round == l.a[i].round;
             j++)
            ;
        int64_t got = prune_round(a, &l, i, j, since);
        if (got < 0) {
            status = TP_ADMIN_UNAVAILABLE;
            break;
        }
        removed += got;
    }
    printf("hot index: %" PRId64 " entries, %" PRId64
           " naming a round no longer in Redis (leaked), %" PRId64 " of them past their TTL\n",
           l.entries, l.leaked, l.past_ttl);
    if (dry)
        printf("dry run: nothing removed\n");
    else
        printf("removed %" PRId64 " leaked entries past their TTL%s\n", removed,
               status == TP_ADMIN_OK ? "" : " before stopping");
    if (l.leaked > l.past_ttl) {
        char when[32];
        tp_admin_utc(l.youngest_ms + (int64_t)tp_keys_idem_ttl_s() * 1000 + TP_KEYS_IDEM_SLACK_MS,
                     TP_ADMIN_UTC_MINUTE, when, sizeof(when));
        printf("%" PRId64 " leaked entries are within their TTL: they are their keys' only "
               "idempotency guard, so they stay; run the command again after %s to remove the "
               "last of them\n",
               l.leaked - l.past_ttl, when);
    }
    tp_hot_leaks_free(&l);
    return status;
}

const struct tp_admin_cmd tp_admin_cmd_hot_index_prune = {
    .name = "hot-index-prune",
    .synopsis = "hot-index-prune [--dry-run]",
    .summary = "remove leaked hot index entries past their idempotency TTL",
    .help = "\n"
            "A hot index entry (tp:{bN}:idemhot or its young part tp:{bN}:idemyoung) naming a\n"
            "round in Redis neither before nor after the entry is read is a leak: an older\n"
            "version's archival left it\n"
            "(docs/operations.md §4, \"Leaked hot index entries\"). `tickpool audit` counts\n"
            "them. This removes those whose bet is past the idempotency TTL (24 h) and the\n"
            "clock slack (10 min), each only while it still names its round; younger ones are\n"
            "their keys' only idempotency guard and stay (it says when to run it again). Safe\n"
            "while the game runs, and to repeat. Not recorded in admin_actions: it changes no\n"
            "player's state.\n"
            "\n"
            "  --dry-run   count, remove nothing\n",
    .run = run_prune,
};
