/*
 * Archival: the leader's process moves settled and cancelled rounds out of Redis once Postgres
 * has them whole, so Redis holds the hot game only (see tp_leader_archive_install in
 * tickpool/game/leader.h, docs/operations.md §4).
 *
 * Once a second, while this process leads, one pass walks up to CANDIDATES rounds of
 * tp:{g}:rounds, oldest first (never the newest KEEP_NEWEST: the leader's own view reads them);
 * the next pass goes on after the last round it left in Redis, so rounds that cannot be
 * archived yet (or ever: see docs/operations.md) never hold up newer ones. A round is archived
 * when
 *   - it is final with its receipt and its seed revealed;
 *   - Postgres (read through the worker's tp_pgr, never on the loop) holds the same round
 *     (tp_game_round_same: every field the Round object and /me/bets show), and as many bets and
 *     payouts as Redis does, i.e. the writer has written them: checked, never assumed;
 *   - game.retain_s has passed since archival first found both true (the contract's "how long
 *     a round stays in Redis once Postgres has it"): that time is kept in Redis
 *     (tp_keys_round_pg_at, SET NX so the first one stays, read by a new leader after a
 *     takeover too), not in this process, and goes with the round hash in step 3. Counting
 *     from the round's close instead (before session 22) archived a round the moment Postgres
 *     came back from an outage longer than retain_s.
 * A pass reads its candidates' times in one MGET and passes over a round found whole less than
 * retain_s ago without another command; every other round is read and, once final, checked
 * against Postgres, so rounds newer than one that waits are found whole (and their time kept)
 * while it waits: the times of rounds do not ascend with their ids (a writer may reach one
 * round later than a newer one), so the sweep never stops at a waiting round. A round with no
 * time (one an older version left, or a key lost) gets one at its next check: an upgrade keeps
 * every round hot at it retain_s longer, never less than the contract's retain_s.
 * Then, in bounded steps that each hold Redis for a few O(1) commands (UNLINK frees big hashes
 * in Redis's background thread), so bets keep flowing between them:
 *   1. HSET archiving=1 on the round hash (history readers take the round's bets from Postgres
 *      from now on);
 *   2. per bucket: the round's keys leave the bucket's hot idempotency key index (whose
 *      entries carry their records) and enter the idempotency filter, in one idem_unindex.lua
 *      step per UNINDEX_COUNT keys (a script declares every key it touches, and the filter
 *      shards follow from the fields), so a key is at every moment in its hot entry or in the
 *      filter; bets then find it through the filter and Postgres. The keys come from Postgres:
 *      the round's bets, read once per round (before the mark) in one query on the reader
 *      thread and grouped by bucket here (Postgres holds them whole: the counts above; a query
 *      per bucket would read every row of the round once per bucket, through the index on
 *      round_id). Redis has no list of a round's keys any more (the
 *      records hash was one; scripts/lua/README.md "idem_unindex.lua" says why not a scan of
 *      the hot index), and a list read from Postgres is not a cursor over a Redis hash table:
 *      a bucket's slot migrating (Redis Cluster) or failing over between two steps cannot make
 *      it pass over a key. The bucket is done when every key of the list went through a step
 *      that answered. Each step also removes its fields from the round's records hash, where
 *      an older version kept the records. Then one UNLINK of every key tp_keys_round_bucket
 *      names (the records hash among them);
 *   3. UNLINK of the round hash and its seed: from here history reads Postgres;
 *   4. ZREM from tp:{g}:rounds, which is the to-do mark: a kill -9 anywhere before it leaves
 *      the id there, and the next pass finds the round (its hash marked, or already gone) and
 *      finishes the job after asking Postgres again. No step leaves a round history cannot
 *      serve: Redis keeps the round hash until Postgres was found to hold it.
 * A Postgres outage stops archival (logged once) until Postgres answers again; Redis only keeps
 * rounds longer. The pass also exports the hot rounds and Redis's used_memory as gauges.
 *
 * A round due for archival (final, game.retain_s past its close: the earliest it can be due, had
 * Postgres had it at its close) that Postgres does not confirm whole and readable (no such round,
 * another copy, other counts, a bets row archival cannot read: a user id below 1, a key of
 * no 1..TP_KEYS_IDEM_MAX bytes) is left in Redis, unmarked and whole, and the sweep goes on to
 * newer rounds: nothing depends on the order rounds leave Redis (each round's keys, hot entries and
 * filter bits are its own; every reader looks a round up by id). Such rounds are counted over each
 * whole sweep (rounds_unarchivable) and each is logged once while it stays (docs/operations.md §4,
 * "A round left in Redis"). The rows are read and checked before the mark, so a round with an
 * unreadable row keeps serving its history from Redis. Redis refusing the round is treated the same
 * (reply_refused): a key of it of the wrong type (WRONGTYPE to a count or to the round hash), or
 * idem_unindex.lua's refusal of a step (a corrupt hot index entry; the round stays marked, each key
 * in its hot entry or the filter). Every other failure (a lost connection, a Cluster slot still
 * migrating at the command's deadline) ends the pass, and the next one retries the round.
 */
#include "tickpool/game/leader.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"
#include "tickpool/game/game_round.h"
#include "tickpool/net/worker.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgr.h"
#include "tickpool/store/scripts.h"
#include "tickpool/store/store.h"

#include <ev.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "archive"
#define PERIOD_S 1.0
/* The newest rounds never leave Redis whatever retain_s says: the leader reads the 6 newest
 * every step, and the rounds API finds the newest id in tp:{g}:rounds. */
#define KEEP_NEWEST 16
/* Oldest ids looked at per pass, and rounds archived per pass at most. */
#define CANDIDATES 32
#define PER_PASS 8
#define MEMORY_EVERY_MS 10000
/* Keys one idem_unindex.lua step takes: up to three HDELs (an older version's records, the hot
 * entries of both parts), two HMGETs, up to 256 BITFIELD_RO and BITFIELD SET pairs (most keys
 * fall in distinct shards), well under the 2 ms a step may hold Redis. */
#define UNINDEX_COUNT 256
/* Due rounds left in Redis whose ids a sweep keeps, so each is logged once while it stays; and
 * how often the sweep's count is logged while it is not 0. */
#define LEFT_KEPT 64
#define LEFT_LOG_EVERY_MS (10 * 60 * 1000)
/* A round's pg_at key outlives its round's retain_s by this much: it is deleted with the round
 * hash, and the TTL bounds one written after the round left (a leader that lost the lease
 * mid-check, or an older leader, which archives without deleting it). Expiring first only
 * delays archival: the next check writes a new time. */
#define PG_AT_SLACK_S 86400

static size_t slot = SIZE_MAX;

struct arch {
    struct tp_worker *w;
    struct ev_loop *loop;
    struct tp_store *store;
    struct tp_pgr *pgr;
    const struct tp_config_game *g;
    ev_timer timer;
    bool busy;
    bool gauges_set;
    int64_t memory_at_ms;
    bool pg_waiting; /* logged "waiting for Postgres", not yet followed by a success */

    int64_t cand[CANDIDATES];
    int64_t pg_at[CANDIDATES]; /* when each was first found whole in Postgres; 0: not yet */
    int ncand, ci, done;
    int64_t top;
    /* The sweep: a pass starts after `after` (0: the oldest round). A round left in Redis (not
     * archivable yet, or never: written before Postgres kept whole rounds) must not hold up
     * the newer ones, so the next pass goes on past the last one left (`last_left`) until the
     * sweep reaches rounds too new to archive, then starts again from the oldest. */
    int64_t after, last_left;

    /* Due rounds the sweep leaves in Redis: how many (each counted once a sweep: ids ascend
     * within one, so `left_upto` is the last counted), the first LEFT_KEPT ids, and the last
     * whole sweep's, whose rounds were logged already. */
    int left, left_n, left_prev_n;
    int64_t left_upto, left_ids[LEFT_KEPT], left_prev[LEFT_KEPT];
    int64_t left_published, left_logged_ms;

    /* The round being archived. */
    int64_t id;
    int64_t confirm_ms; /* the pg_at this pass writes if the round has none */
    int64_t pg_at_ms;   /* the pg_at retain_s counted from; 0 for a marked round resumed */
    bool in_redis;      /* its hash is still in Redis */
    struct tp_game_round r;
    int nbands;
    int pending, err;
    bool refused; /* a count answered WRONGTYPE (reply_refused) */
    int64_t redis_bets, redis_paid, pg_bets, pg_paid;
    int bucket; /* the next bucket to clear */
    /* The round's keys ("<user_id>:<key>", from Postgres) in one buffer, grouped by bucket:
     * bucket b's are keys[first[b]] up to keys[first[b + 1]]; the next one to step from and
     * the size of the step under way. */
    struct tp_script_unindex_field *keys;
    char *keybuf;
    int *first;
    int ki, step;
    bool filter_waiting; /* logged "waits for the filter", not yet followed by a success */
    /* Test hooks (docs/operations.md §4), so a test can move a bucket's slot between steps:
     * TP_TEST_ARCHIVE_COUNT, the keys one step takes (default UNINDEX_COUNT), and
     * TP_TEST_ARCHIVE_PAUSE_MS, a pause between two steps of a bucket (default none). */
    int count;
    double pause_s;
    ev_timer pause;
};

static void next_candidate(struct arch *a);
static void archive_now(struct arch *a);

static int64_t retain_ms(const struct arch *a)
{
    return (int64_t)a->g->retain_s * 1000;
}

/* A pg_at archival can count from: after 1970 and not ahead of this clock by more than hosts'
 * clocks may differ (a leader whose clock ran ahead wrote it). Anything else (a value written by
 * hand) would be added to without bound (INT64_MAX + retain_s overflows) or hold the round for
 * years; such a round is left in Redis and logged (on_pg_at_kept). */
_Static_assert(TP_KEYS_IDEM_SLACK_MS == 10 * 60 * 1000, "on_pg_at_kept's log line says 10 minutes");
static bool pg_at_usable(int64_t at, int64_t now)
{
    return at >= 1 && at <= now + TP_KEYS_IDEM_SLACK_MS;
}

/* Whether a round found whole in Postgres at `at` (pg_at_usable) has had its retain_s. */
static bool retained(const struct arch *a, int64_t at, int64_t now)
{
    return now - at >= retain_ms(a);
}

static void keys_free(struct arch *a)
{
    free(a->keys);
    free(a->keybuf);
    free(a->first);
    a->keys = NULL;
    a->keybuf = NULL;
    a->first = NULL;
    a->ki = a->step = 0;
}

static void pass_end(struct arch *a)
{
    keys_free(a); /* a round left half-way starts its buckets again: every step is idempotent */
    a->busy = false;
}

static bool reply_bad(int err, const struct tp_store_reply *r)
{
    return err != 0 || tp_reply_type(r) == TP_REPLY_ERROR;
}

/* An error reply every pass would get again at this round: a key of the wrong type (WRONGTYPE:
 * a corrupt key, also from inside a script), or idem_unindex.lua's refusal ("ERR
 * tp_idem_unindex: ...": a corrupt hot index entry of the round). The round is left in Redis
 * (leave_due) and the sweep goes on. Any other failure may pass, and the next pass retries the
 * round: a lost connection, LOADING, BUSY, READONLY, and in a Cluster TRYAGAIN, ASK, MOVED or
 * CLUSTERDOWN, delivered at the command's deadline while its slot migrates (store_cluster.c). */
static bool reply_refused(int err, const struct tp_store_reply *r)
{
    if (err != 0 || tp_reply_type(r) != TP_REPLY_ERROR)
        return false;
    const char *s = tp_reply_str(r, NULL);
    return s != NULL &&
           (strncmp(s, "WRONGTYPE", 9) == 0 || strncmp(s, "ERR tp_idem_unindex:", 20) == 0);
}

/* A whole sweep ended: its count of due rounds left in Redis is the gauge, said in the log when
 * it rises from 0 and every LEFT_LOG_EVERY_MS while it stays above. */
static void publish_left(struct arch *a)
{
    int64_t now = tp_mono_ms();
    if (a->left > 0 && (a->left_published == 0 || now - a->left_logged_ms >= LEFT_LOG_EVERY_MS)) {
        tp_log_warn(MOD,
                    "archival leaves rounds in Redis that Postgres does not hold whole	"
                    "count=%d oldest=%lld",
                    a->left, (long long)a->left_ids[0]);
        a->left_logged_ms = now;
    } else if (a->left == 0 && a->left_published > 0) {
        tp_log_info(MOD, "archival leaves no round in Redis any more");
    }
    tp_metrics_set(TP_METRIC_ROUNDS_UNARCHIVABLE, a->left);
    a->left_published = a->left;
    memcpy(a->left_prev, a->left_ids, (size_t)a->left_n * sizeof(*a->left_ids));
    a->left_prev_n = a->left_n;
}

/* The sweep reached rounds too new to archive (`whole`), or lost the lead: the next pass starts
 * again from the oldest round. */
static void sweep_end(struct arch *a, bool whole)
{
    if (whole)
        publish_left(a);
    a->left = a->left_n = 0;
    a->left_upto = 0;
    a->after = 0;
    pass_end(a);
}

/* The round failed a check: leave it in Redis and look at the next one. */
static void skip(struct arch *a)
{
    a->last_left = a->id;
    a->ci++;
    next_candidate(a);
}

static bool left_last_sweep(const struct arch *a, int64_t id)
{
    for (int i = 0; i < a->left_prev_n; i++)
        if (a->left_prev[i] == id)
            return true;
    return false;
}

/* A due round Postgres does not confirm (why): it stays in Redis, whole and unmarked (or as a
 * killed pass left it: marked, some buckets done, every key in its hot entry or the filter), and
 * the sweep goes on. Counted once a sweep; logged at `level` when the last sweep did not leave
 * it too. Never drops a key: the operator mends Postgres (docs/operations.md §4) and the next
 * sweep archives it. */
static void leave_due(struct arch *a, enum tp_log_level level, const char *why)
{
    keys_free(a);
    /* Not due yet however early Postgres had it (retain_s not past its close): a round the
     * writer has not reached yet, checked again by the next sweep, neither counted nor logged. */
    bool due = a->r.t.closes_at <= 0 || tp_now_ms() - a->r.t.closes_at >= retain_ms(a);
    if (due && a->id > a->left_upto) {
        a->left_upto = a->id;
        a->left++;
        /* Past LEFT_KEPT rounds, the sweep's count line is the log. */
        if (a->left_n < LEFT_KEPT) {
            a->left_ids[a->left_n++] = a->id;
            if (!left_last_sweep(a, a->id))
                tp_log(level, MOD, "round left in Redis: %s\tround=%lld", why, (long long)a->id);
        }
    }
    skip(a);
}

/* leave_due for a refusal (reply_refused), with Redis's words. */
static void leave_refused(struct arch *a, const char *why, const struct tp_store_reply *r)
{
    char what[320];
    snprintf(what, sizeof(what), "%s (Redis: %.200s)", why, tp_reply_str(r, NULL));
    leave_due(a, TP_LOG_ERROR, what);
}

/* A reply the round cannot go on with: a refusal (reply_refused: the round is left in Redis,
 * `why` and Redis's words logged) or a failure (the pass ends; the next one retries). */
static bool reply_stops(struct arch *a, int err, const struct tp_store_reply *r, const char *why)
{
    if (reply_refused(err, r)) {
        leave_refused(a, why, r);
        return true;
    }
    if (reply_bad(err, r)) {
        pass_end(a);
        return true;
    }
    return false;
}

static void pg_failed(struct arch *a, int err)
{
    if (!a->pg_waiting)
        tp_log_warn(MOD, "archival waits for Postgres\tround=%lld error=%d", (long long)a->id, err);
    a->pg_waiting = true;
    pass_end(a);
}

/* --- 4. Done: the id leaves the to-do list --- */

static void on_zrem(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_bad(err, r)) {
        pass_end(a);
        return;
    }
    if (a->pg_at_ms > 0)
        tp_log_info(MOD, "round archived to Postgres\tround=%lld pg_at=%lld", (long long)a->id,
                    (long long)a->pg_at_ms);
    else
        tp_log_info(MOD, "round archived to Postgres\tround=%lld", (long long)a->id);
    a->done++;
    a->ci++;
    next_candidate(a);
}

static void on_unlink_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_bad(err, r) || tp_store_command(a->store, on_zrem, a, "ZREM " TP_KEYS_ROUNDS " %lld",
                                              (long long)a->id) != 0)
        pass_end(a);
}

/* --- 2. One bucket per step, then 3. the round hash and seed --- */

static void clear_next_bucket(struct arch *a);

static void on_unlink_bucket(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_bad(err, r)) {
        pass_end(a);
        return;
    }
    a->bucket++;
    clear_next_bucket(a);
}

static void unlink_bucket(struct arch *a);
static void unindex_step(struct arch *a);

static void unindex_failed(struct arch *a)
{
    tp_log_warn(MOD, "removing a round's idempotency keys failed\tround=%lld bucket=%d",
                (long long)a->id, a->bucket);
    pass_end(a); /* the next pass starts the round's buckets again: each step is idempotent */
}

static void on_unindex(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_refused(err, r)) {
        /* Marked, some buckets perhaps done: every key in its hot entry or the filter. */
        leave_refused(a, "Redis refused to move its idempotency keys to the filter", r);
        return;
    }
    if (reply_bad(err, r) || tp_reply_type(r) != TP_REPLY_INTEGER) {
        unindex_failed(a);
        return;
    }
    if (tp_reply_integer(r) < 0) {
        /* The filter is not whole: the leader's builder (leader_idemfilter.c) makes it within
         * seconds of a leader's start on a new deployment or an upgrade; the round waits, its
         * keys in the hot index. Nothing was written: bet_batch.lua reads a filter that is not
         * whole as holding no key, true only because archival never writes before it is. */
        if (!a->filter_waiting)
            tp_log_info(MOD, "archival waits for the idempotency filter's window\tround=%lld",
                        (long long)a->id);
        a->filter_waiting = true;
        pass_end(a);
        return;
    }
    a->filter_waiting = false;
    a->ki += a->step;
    if (a->ki >= a->first[a->bucket + 1]) {
        unlink_bucket(a);
    } else if (a->pause_s > 0) {
        ev_timer_start(a->loop, &a->pause);
    } else {
        unindex_step(a);
    }
}

static void pause_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    unindex_step(t->data);
}

/* The window rule (scripts/lua/README.md "idem_unindex.lua"): a key enters the filter's words
 * of the day current at archival, w, by this process's clock. Bets read w and w - 1, so it is
 * found from now until the end of day w + 1, at least one TTL from now and so past its bet's
 * TTL. During the first TP_KEYS_IDEM_SLACK_MS of w (a tenth of a test hook's short day at most)
 * it also enters w - 1's words, for a worker whose clock lags and still reads w - 1 and w - 2
 * (the leader zeroes day w + 1's words, day w - 2's, only after that: leader_idemfilter.c). A
 * key whose bet is a TTL and the slack old needs no filter. */
static void unindex_step(struct arch *a)
{
    a->step = TP_MIN(a->count, a->first[a->bucket + 1] - a->ki);
    int64_t now = tp_now_ms(), span = (int64_t)tp_keys_idem_ttl_s() * 1000;
    int64_t win = tp_keys_idem_window(now, tp_keys_idem_ttl_s());
    int64_t slack = TP_MIN(TP_KEYS_IDEM_SLACK_MS, span / 10);
    struct tp_script_idem_unindex_args u = {.bucket = a->bucket,
                                            .id = a->id,
                                            .window = win,
                                            .two = win >= 1 && now - win * span < slack,
                                            .since_ms = now - span - TP_KEYS_IDEM_SLACK_MS,
                                            .fields = a->keys + a->ki,
                                            .n = a->step};
    if (tp_script_idem_unindex(a->store, &u, on_unindex, a) != 0)
        unindex_failed(a);
}

/* A bucket's keys of the round, stepped through; then its other keys. */
static void clear_bucket(struct arch *a)
{
    a->ki = a->first[a->bucket];
    if (a->ki == a->first[a->bucket + 1])
        unlink_bucket(a);
    else
        unindex_step(a);
}

/* The round's keys: one row per bet (user_id, idempotency_key), copied out of the result into
 * one buffer as "<user_id>:<key>", grouped by the user's bucket (tp_bucket_of), each bucket's
 * in the order Postgres gave them. */
static void on_round_keys(int err, const struct tp_pg_result *res, void *ud)
{
    struct arch *a = ud;
    if (err != 0) {
        pg_failed(a, err);
        return;
    }
    int n = tp_pg_result_rows(res), nb = a->g->buckets;
    keys_free(a);
    a->first = tp_xcalloc((size_t)nb + 1, sizeof(*a->first));
    int *bucket_of = tp_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*bucket_of));
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int64_t user;
        const char *key = tp_pg_result_get(res, i, 1);
        size_t klen = key != NULL ? strlen(key) : 0;
        /* What idem_unindex takes (tp_script_idem_unindex): a row it would refuse must not
         * stop the sweep at this round on every pass. */
        if (tp_pg_result_int64(res, i, 0, &user) != 0 || user < 1 || klen < 1 ||
            klen > TP_KEYS_IDEM_MAX) {
            free(bucket_of);
            leave_due(a, TP_LOG_ERROR,
                      "a bets row of the round is unreadable (user_id < 1, or an idempotency "
                      "key of no 1..128 bytes)");
            return;
        }
        bucket_of[i] = tp_bucket_of(user, nb);
        a->first[bucket_of[i] + 1]++;
        total += strlen(tp_pg_result_get(res, i, 0)) + 1 + klen + 1;
    }
    for (int b = 0; b < nb; b++)
        a->first[b + 1] += a->first[b];
    a->keys = tp_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*a->keys));
    a->keybuf = tp_xmalloc(total > 0 ? total : 1);
    int *at = tp_xmalloc((size_t)nb * sizeof(*at));
    memcpy(at, a->first, (size_t)nb * sizeof(*at));
    char *p = a->keybuf;
    for (int i = 0; i < n; i++) {
        int len = snprintf(p, total - (size_t)(p - a->keybuf), "%s:%s", tp_pg_result_get(res, i, 0),
                           tp_pg_result_get(res, i, 1));
        a->keys[at[bucket_of[i]]++] = (struct tp_script_unindex_field){.s = p, .len = (size_t)len};
        p += len + 1;
    }
    free(at);
    free(bucket_of);
    archive_now(a);
}

static void round_keys(struct arch *a)
{
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)a->id);
    const char *params[1] = {id};
    if (tp_pgr_query(a->pgr,
                     "SELECT user_id, idempotency_key FROM bets WHERE round_id = $1::bigint", 1,
                     params, on_round_keys, a) != 0)
        pg_failed(a, TP_EAGAIN);
}

static void clear_next_bucket(struct arch *a)
{
    if (a->bucket >= a->g->buckets) {
        keys_free(a);
        struct tp_key rk, sk, pk;
        if (tp_store_command(a->store, on_unlink_round, a, "UNLINK %s %s %s",
                             tp_keys_round(&rk, a->id), tp_keys_seed(&sk, a->id),
                             tp_keys_round_pg_at(&pk, a->id)) != 0)
            pass_end(a);
        return;
    }
    clear_bucket(a);
}

/* The bucket's keys of the round, once its index entries are gone. */
static void unlink_bucket(struct arch *a)
{
    struct tp_key keys[TP_KEYS_ROUND_BUCKET_MAX];
    int n = tp_keys_round_bucket(keys, TP_KEYS_ROUND_BUCKET_MAX, a->bucket, a->id, a->nbands);
    const char *argv[1 + TP_KEYS_ROUND_BUCKET_MAX];
    size_t lens[1 + TP_KEYS_ROUND_BUCKET_MAX];
    argv[0] = "UNLINK";
    lens[0] = 6;
    for (int i = 0; i < n; i++) {
        argv[1 + i] = keys[i].s;
        lens[1 + i] = keys[i].len;
    }
    if (tp_store_commandargv(a->store, on_unlink_bucket, a, 1 + n, argv, lens) != 0)
        pass_end(a);
}

static void on_marked(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_bad(err, r)) {
        pass_end(a);
        return;
    }
    a->bucket = 0;
    clear_next_bucket(a);
}

/* 1. With the round's keys read, the mark, then the buckets. */
static void archive_now(struct arch *a)
{
    struct tp_key k;
    if (!a->in_redis || a->r.archiving) {
        a->bucket = 0;
        clear_next_bucket(a);
        return;
    }
    if (tp_store_command(a->store, on_marked, a, "HSET %s archiving 1", tp_keys_round(&k, a->id)) !=
        0)
        pass_end(a);
}

/* --- Postgres holds the round whole: since when --- */

static void on_pg_at_kept(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_stops(a, err, r, "its time Postgres was first found to hold it is not a string"))
        return;
    int64_t at = a->confirm_ms, now = tp_now_ms(); /* nil: this pass wrote it */
    if (tp_reply_type(r) != TP_REPLY_NIL &&
        (!tp_parse_i64(tp_reply_str(r, NULL), &at) || !pg_at_usable(at, now))) {
        leave_due(a, TP_LOG_ERROR,
                  "its time Postgres was first found to hold it (tp:{g}:round:N:pg_at) is not a "
                  "time (not a number, before 1970, or more than 10 minutes ahead of this clock)");
        return;
    }
    if (!retained(a, at, now)) {
        skip(a); /* in Redis for retain_s from then: newer rounds next */
        return;
    }
    a->pg_at_ms = at;
    round_keys(a);
}

/* Keeps the first time this round was found whole in Postgres (SET NX: a later check, or a new
 * leader's, leaves it) and gets the time kept back (GET), in one command. */
static void keep_pg_at(struct arch *a)
{
    struct tp_key k;
    char now[TP_FMT_I64_MAX], ttl[TP_FMT_I64_MAX];
    a->confirm_ms = tp_now_ms();
    tp_fmt_i64(now, a->confirm_ms);
    tp_fmt_i64(ttl, retain_ms(a) + (int64_t)PG_AT_SLACK_S * 1000);
    if (tp_store_commandl(a->store, on_pg_at_kept, a, "SET", tp_keys_round_pg_at(&k, a->id), now,
                          "NX", "GET", "PX", ttl, NULL) != 0)
        pass_end(a);
}

/* --- The counts: Redis and Postgres hold the same bets and payouts --- */

static void counts_done(struct arch *a)
{
    if (--a->pending > 0)
        return;
    if (a->err != 0) {
        if (a->err == TP_EUNAVAIL || a->err == TP_ETIMEDOUT)
            pg_failed(a, a->err);
        else
            pass_end(a);
        return;
    }
    a->pg_waiting = false;
    if (a->refused) {
        leave_due(a, TP_LOG_ERROR,
                  "a key of the round in Redis has the wrong type (WRONGTYPE to a count)");
        return;
    }
    if (a->redis_bets != a->pg_bets || a->redis_paid != a->pg_paid) {
        tp_log_debug(MOD,
                     "round not yet in Postgres\tround=%lld redis_bets=%lld pg_bets=%lld "
                     "redis_paid=%lld pg_paid=%lld",
                     (long long)a->id, (long long)a->redis_bets, (long long)a->pg_bets,
                     (long long)a->redis_paid, (long long)a->pg_paid);
        leave_due(a, TP_LOG_WARN,
                  "Postgres does not hold as many of its bets and payouts as Redis (tickpool "
                  "audit compares them)");
        return;
    }
    keep_pg_at(a);
}

static void on_hlen(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_refused(err, r))
        a->refused = true;
    else if (reply_bad(err, r) || tp_reply_type(r) != TP_REPLY_INTEGER)
        a->err = a->err ? a->err : TP_EIO;
    counts_done(a);
}

/* HLEN of a band's bets hash or LLEN of its list. */
static void on_hlen_bets(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (!reply_bad(err, r) && tp_reply_type(r) == TP_REPLY_INTEGER)
        a->redis_bets += tp_reply_integer(r);
    on_hlen(err, r, ud);
}

static void on_hlen_paid(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (!reply_bad(err, r) && tp_reply_type(r) == TP_REPLY_INTEGER)
        a->redis_paid += tp_reply_integer(r);
    on_hlen(err, r, ud);
}

static void on_pg_counts(int err, const struct tp_pg_result *res, void *ud)
{
    struct arch *a = ud;
    if (err != 0 || tp_pg_result_int64(res, 0, 0, &a->pg_bets) != 0 ||
        tp_pg_result_int64(res, 0, 1, &a->pg_paid) != 0)
        a->err = err ? err : TP_EIO;
    counts_done(a);
}

static void count(struct arch *a)
{
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)a->id);
    const char *params[1] = {id};
    a->redis_bets = a->redis_paid = a->pg_bets = a->pg_paid = 0;
    a->err = 0;
    a->refused = false;
    a->pending = 1;
    if (tp_pgr_query(a->pgr,
                     "SELECT (SELECT count(*) FROM bets WHERE round_id = $1::bigint), "
                     "(SELECT count(*) FROM payouts WHERE round_id = $1::bigint)",
                     1, params, on_pg_counts, a) != 0) {
        pg_failed(a, TP_EAGAIN);
        return;
    }
    for (int b = 0; b < a->g->buckets; b++) {
        struct tp_key k;
        /* A band's bets: the list (this version's) and the hash (a round an older version
         * left in flight), whose counts add up (a bet is in one of them). */
        for (int band = 0; band < a->nbands; band++) {
            a->pending += 2;
            if (tp_store_command(a->store, on_hlen_bets, a, "HLEN %s",
                                 tp_keys_bets(&k, b, a->id, band)) != 0) {
                a->pending--;
                a->err = TP_EUNAVAIL;
            }
            if (tp_store_command(a->store, on_hlen_bets, a, "LLEN %s",
                                 tp_keys_betl(&k, b, a->id, band)) != 0) {
                a->pending--;
                a->err = TP_EUNAVAIL;
            }
        }
        a->pending++;
        if (tp_store_command(a->store, on_hlen_paid, a, "HLEN %s", tp_keys_paid(&k, b, a->id)) !=
            0) {
            a->pending--;
            a->err = TP_EUNAVAIL;
        }
    }
    /* The Postgres query is in flight: its completion ends the wait. */
}

/* --- Postgres holds the same round --- */

static void on_pg_round(int err, const struct tp_game_round *rounds, int n, void *ud)
{
    struct arch *a = ud;
    if (err != 0) {
        pg_failed(a, err);
        return;
    }
    if (n != 1) {
        leave_due(a, TP_LOG_WARN,
                  "Postgres has no such round, or none it can read (a round written before "
                  "migration 0004, or not yet written)");
        return;
    }
    if (!a->in_redis || a->r.archiving) {
        /* Resuming: Redis's copy is (partly) gone, Postgres was checked before the mark. */
        a->pg_waiting = false;
        a->nbands = rounds[0].n_edges + 1;
        round_keys(a);
        return;
    }
    if (!tp_game_round_same(&a->r, &rounds[0])) {
        leave_due(a, TP_LOG_WARN,
                  "Postgres's copy of the round differs from Redis's (not yet written?)");
        return;
    }
    count(a);
}

static void ask_pg(struct arch *a)
{
    if (tp_game_round_load_pg(a->pgr, &a->id, 1, on_pg_round, a) != 0)
        pg_failed(a, TP_EAGAIN);
}

static void on_round(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_stops(a, err, r, "its hash in Redis is unreadable"))
        return;
    int rc = tp_game_round_parse(r, &a->r);
    a->in_redis = rc != TP_ENOTFOUND;
    if (rc == TP_ENOTFOUND) {
        ask_pg(a); /* a pass killed between steps 3 and 4 */
        return;
    }
    if (rc != 0) {
        leave_due(a, TP_LOG_ERROR, "its hash in Redis is unreadable");
        return;
    }
    a->nbands = a->r.n_edges + 1;
    if (a->r.archiving) {
        ask_pg(a);
        return;
    }
    if (!tp_round_is_final(a->r.state) || !a->r.has_receipt || a->r.seed[0] == '\0') {
        skip(a); /* a round still settling, or whose seed is not revealed yet */
        return;
    }
    ask_pg(a); /* not found whole yet, or retain_s past that: (again) checked, never assumed */
}

static void next_candidate(struct arch *a)
{
    if (!tp_leader_is_leader(tp_leader_of(a->w))) {
        sweep_end(a, false);
        return;
    }
    if (a->ci >= a->ncand ? a->ncand < CANDIDATES : a->cand[a->ci] > a->top - KEEP_NEWEST) {
        sweep_end(a, true);
        return;
    }
    if (a->ci >= a->ncand || a->done >= PER_PASS) {
        a->after = a->last_left; /* the next pass goes on from here */
        pass_end(a);
        return;
    }
    a->id = a->cand[a->ci];
    a->pg_at_ms = 0;
    memset(&a->r, 0, sizeof(a->r));
    if (a->pg_at[a->ci] > 0 && !retained(a, a->pg_at[a->ci], tp_now_ms())) {
        /* Found whole in Postgres less than retain_s ago (a marked round too, were retain_s
         * raised while it was archived: finished once due). */
        skip(a);
        return;
    }
    struct tp_key k;
    if (tp_store_command(a->store, on_round, a, "HGETALL %s", tp_keys_round(&k, a->id)) != 0)
        pass_end(a);
}

/* --- The pass --- */

/* The candidates' pg_at in one MGET (nil for none; a value of the wrong type, or not a usable
 * time, reads as none, and the round's check then finds what it is). */
static void on_pg_ats(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_bad(err, r) || tp_reply_type(r) != TP_REPLY_ARRAY ||
        tp_reply_len(r) != (size_t)a->ncand) {
        pass_end(a);
        return;
    }
    int64_t now = tp_now_ms();
    for (int i = 0; i < a->ncand; i++)
        if (!tp_parse_i64(tp_reply_str(tp_reply_at(r, (size_t)i), NULL), &a->pg_at[i]) ||
            !pg_at_usable(a->pg_at[i], now))
            a->pg_at[i] = 0;
    next_candidate(a);
}

static void on_top(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    int64_t top;
    if (reply_bad(err, r) || tp_reply_len(r) != 1 ||
        !tp_parse_i64(tp_reply_str(tp_reply_at(r, 0), NULL), &top)) {
        pass_end(a);
        return;
    }
    a->top = top;
    if (a->ncand == 0) {
        next_candidate(a); /* the sweep's end */
        return;
    }
    struct tp_key keys[CANDIDATES];
    const char *argv[1 + CANDIDATES];
    size_t lens[1 + CANDIDATES];
    argv[0] = "MGET";
    lens[0] = 4;
    for (int i = 0; i < a->ncand; i++) {
        argv[1 + i] = tp_keys_round_pg_at(&keys[i], a->cand[i]);
        lens[1 + i] = keys[i].len;
    }
    if (tp_store_commandargv(a->store, on_pg_ats, a, 1 + a->ncand, argv, lens) != 0)
        pass_end(a);
}

static void on_oldest(int err, const struct tp_store_reply *r, void *ud)
{
    struct arch *a = ud;
    if (reply_bad(err, r) || tp_reply_type(r) != TP_REPLY_ARRAY) {
        pass_end(a);
        return;
    }
    a->ncand = 0;
    for (size_t i = 0; i < tp_reply_len(r) && a->ncand < CANDIDATES; i++)
        if (tp_parse_i64(tp_reply_str(tp_reply_at(r, i), NULL), &a->cand[a->ncand]))
            a->ncand++;
    a->ci = a->done = 0;
    a->last_left = a->after;
    if (tp_store_commandl(a->store, on_top, a, "ZREVRANGE", TP_KEYS_ROUNDS, "0", "0", NULL) != 0)
        pass_end(a);
}

static void on_hot(int err, const struct tp_store_reply *r, void *ud)
{
    (void)ud;
    if (!reply_bad(err, r) && tp_reply_type(r) == TP_REPLY_INTEGER)
        tp_metrics_set(TP_METRIC_ROUNDS_HOT, tp_reply_integer(r));
}

static void on_memory(int err, const struct tp_store_reply *r, void *ud)
{
    (void)ud;
    const char *s = reply_bad(err, r) ? NULL : tp_reply_str(r, NULL);
    const char *p = s != NULL ? strstr(s, "used_memory:") : NULL;
    if (p != NULL)
        tp_metrics_set(TP_METRIC_REDIS_USED_MEMORY_BYTES, strtoll(p + 12, NULL, 10));
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct arch *a = t->data;
    bool leader = tp_leader_is_leader(tp_leader_of(a->w));
    if (!leader) {
        /* The gauges are summed over processes: only the leader's count. */
        if (a->gauges_set) {
            tp_metrics_set(TP_METRIC_ROUNDS_HOT, 0);
            tp_metrics_set(TP_METRIC_REDIS_USED_MEMORY_BYTES, 0);
            tp_metrics_set(TP_METRIC_ROUNDS_UNARCHIVABLE, 0);
            a->gauges_set = false;
        }
        return;
    }
    if (a->store == NULL || !tp_store_is_connected(a->store))
        return;
    a->gauges_set = true;
    /* Argument lists, not formats: once a second. */
    tp_store_commandl(a->store, on_hot, a, "ZCARD", TP_KEYS_ROUNDS, NULL);
    if (tp_mono_ms() - a->memory_at_ms >= MEMORY_EVERY_MS) {
        a->memory_at_ms = tp_mono_ms();
        tp_store_commandl(a->store, on_memory, a, "INFO", "memory", NULL);
    }
    if (a->busy || a->pgr == NULL)
        return;
    a->busy = true;
    char after[1 + TP_FMT_I64_MAX] = "(", count[TP_FMT_I64_MAX]; /* "(": after, exclusive */
    tp_fmt_i64(after + 1, a->after);
    tp_fmt_i64(count, CANDIDATES);
    if (tp_store_commandl(a->store, on_oldest, a, "ZRANGEBYSCORE", TP_KEYS_ROUNDS, after, "+inf",
                          "LIMIT", "0", count, NULL) != 0)
        pass_end(a);
}

static void on_init(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct arch *a = tp_xcalloc(1, sizeof(*a));
    a->w = w;
    a->loop = tp_worker_loop(w);
    a->store = tp_store_of(w);
    a->pgr = tp_pgr_of(w);
    a->g = &tp_worker_config(w)->game;
    a->memory_at_ms = INT64_MIN / 2;
    a->count = (int)tp_config_test_hook("TP_TEST_ARCHIVE_COUNT", 1, UNINDEX_COUNT, UNINDEX_COUNT);
    a->pause_s = (double)tp_config_test_hook("TP_TEST_ARCHIVE_PAUSE_MS", 0, 60000, 0) / 1000;
    ev_timer_init(&a->pause, pause_cb, a->pause_s, 0);
    a->pause.data = a;
    ev_timer_init(&a->timer, timer_cb, PERIOD_S, PERIOD_S);
    a->timer.data = a;
    ev_timer_start(a->loop, &a->timer);
    /* Idle work: the timer must not keep a draining loop alive. */
    ev_unref(a->loop);
    tp_worker_slot_set(w, slot, a);
}

/* Frees the state unless a pass is under way: its store and reader callbacks hold it, and the
 * store, freed after this hook, answers them TP_ECLOSED (the process exits anyway). Between
 * passes only the gauges' commands may be in flight, and their callbacks ignore it. */
static void on_exit_hook(struct tp_worker *w, void *ud)
{
    (void)ud;
    struct arch *a = tp_worker_slot_get(w, slot);
    if (a == NULL || a->busy)
        return;
    ev_ref(a->loop); /* the timer's, given back before it stops */
    ev_timer_stop(a->loop, &a->timer);
    ev_timer_stop(a->loop, &a->pause);
    keys_free(a);
    free(a);
    tp_worker_slot_set(w, slot, NULL);
}

void tp_leader_archive_install(void)
{
    slot = tp_worker_slot_new();
    tp_worker_on_init(on_init, NULL);
    tp_worker_on_exit(on_exit_hook, NULL);
}
