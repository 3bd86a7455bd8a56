/*
 * Leaked hot index entries: entries of a bucket's hot idempotency key index (tp:{bN}:idemhot and
 * its young part tp:{bN}:idemyoung, "<user_id>:<key>" -> "<round_id>:<placed_ms>|<record>") that
 * name a round no longer in tp:{g}:rounds. Archival removes a round's entries before it drops the
 * round's id, so only an older version's archival leaves them: one from before session 13 finds no
 * records hash for a round a newer version admitted bets to and takes none of its keys out of the
 * index, nor into the idempotency filter (docs/operations.md §4, "Upgrading" and "Leaked hot index
 * entries").
 *
 * Such an entry is still its key's only idempotency guard: its bits are in no filter. So it may
 * go only once its bet is past the idempotency TTL (placed before now − TTL − the clock slack,
 * as archival's own rule for entries it finds that old), never earlier. `tickpool audit` counts
 * them; `tickpool admin hot-index-prune` removes the ones past their TTL.
 */
#ifndef TP_HOT_LEAKS_H
#define TP_HOT_LEAKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_store_sync;

/* One leaked entry past its TTL (kept only when asked): its bucket, round and field. */
struct tp_hot_leak {
    int bucket;
    int64_t round;
    char *field;
    size_t len;
};

struct tp_hot_leaks {
    int64_t entries;       /* hot index entries read, every bucket */
    int64_t leaked;        /* of them, naming a round no longer in tp:{g}:rounds */
    int64_t past_ttl;      /* of those, placed before since_ms */
    int64_t youngest_ms;   /* the latest placed_ms of a leaked entry within its TTL (0: none) */
    struct tp_hot_leak *a; /* the past-TTL ones, when kept, by bucket then round */
    size_t n, cap;
};

/** The `since_ms` of now: entries placed before it are past the idempotency TTL and its slack. */
int64_t tp_hot_leaks_since_ms(void);

/**
 * Reads every bucket's hot index (HSCAN, COUNT 1000), and tp:{g}:rounds before and after each
 * HSCAN call: an entry is leaked when its round is in neither read (so one opened meanwhile is
 * hot, and with no round in Redis at all every entry is leaked), and counted into *out (zeroed
 * first); with `keep`, the past-TTL ones are kept in out->a. Returns 0, or the failing command's
 * error (printed) with *out partly filled. Free with tp_hot_leaks_free.
 */
int tp_hot_leaks_find(struct tp_store_sync *r, int buckets, int64_t since_ms, bool keep,
                      struct tp_hot_leaks *out);

void tp_hot_leaks_free(struct tp_hot_leaks *l);

#endif
