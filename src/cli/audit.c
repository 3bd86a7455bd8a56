/*
 * `tickpool audit` (see include/tickpool/cli/audit.h).
 *
 * Redis is read through store/sync (a private loop and tp_store), one command at a time (the audit
 * is an operator command, not a hot path: clarity over pipelining). Reads are not one atomic
 * snapshot, so run it against a quiet system for an exact answer; on a busy one a bet landing
 * between two reads can show up as a transient mismatch (the audit says so in its hint line).
 */
#include "tickpool/cli/audit.h"
#include "tickpool/cli/hot_leaks.h"
#include "tickpool/store/pgw_pg.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/log.h"
#include "tickpool/game/round.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/store.h"
#include "tickpool/store/sync.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- Redis, one command at a time (store/sync) --- */

struct audit {
    const struct tp_config *cfg;
    struct tp_store_sync *redis;
    int mismatches;
    bool redis_failed;
};

/* Runs one command and waits for it. Returns the reply (caller frees) or NULL on failure
 * (Redis error replies included), after which the audit stops with exit 2. */
static struct tp_store_value *cmd(struct audit *a, const char *fmt, ...)
{
    if (a->redis_failed)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    struct tp_store_value *v;
    int rc = tp_store_sync_commandv(a->redis, &v, fmt, ap);
    va_end(ap);
    int name = (int)strcspn(fmt, " "); /* the command, for the message */
    if (v != NULL && v->type == TP_REPLY_ERROR) {
        fprintf(stderr, "audit: redis %.*s: %s\n", name, fmt, v->str);
        tp_store_value_free(v);
        v = NULL;
    } else if (v == NULL) {
        fprintf(stderr, "audit: redis %.*s failed: %s\n", name, fmt, tp_strerror(rc));
    }
    if (v == NULL)
        a->redis_failed = true;
    return v;
}

static int64_t num(const struct tp_store_value *v)
{
    if (v == NULL)
        return 0;
    if (v->type == TP_REPLY_INTEGER)
        return v->integer;
    return v->str ? strtoll(v->str, NULL, 10) : 0;
}

static int64_t get_int(struct audit *a, const char *fmt, const char *arg1, const char *arg2)
{
    struct tp_store_value *v = cmd(a, fmt, arg1, arg2);
    int64_t n = num(v);
    tp_store_value_free(v);
    return n;
}

static void report(struct audit *a, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct audit *a, bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    if (!ok)
        a->mismatches++;
}

/* --- Per-user balances (Redis side, for the Postgres comparison) --- */

struct kv {
    int64_t k, v;
};

static int cmp_kv(const void *x, const void *y)
{
    const struct kv *p = x, *q = y;
    return p->k < q->k ? -1 : p->k > q->k;
}

struct kvs {
    struct kv *a;
    size_t n, cap;
};

static void kvs_add(struct kvs *s, int64_t k, int64_t v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->a = tp_xrealloc(s->a, s->cap * sizeof(*s->a));
    }
    s->a[s->n++] = (struct kv){k, v};
}

/* --- Check 1: conservation in Redis --- */

/* A stored round state (NULL for a missing field); TP_ROUND_NONE when absent or unknown. */
static enum tp_round_state state_of(const char *s)
{
    enum tp_round_state st = TP_ROUND_NONE;
    if (s != NULL && tp_round_state_parse(s, strlen(s), &st) != 0)
        st = TP_ROUND_NONE;
    return st;
}

struct totals {
    int64_t bal, house, held, granted, grants_sum, grants_n;
    struct kvs users;
    struct kvs round_stakes; /* round id → Σ stakes held in unsettled rounds (all buckets) */
};

/* Σ stakes a bucket still holds for round `rid`: pool total minus what settlement pages have
 * already credited (a round in mid-settlement has paid some players but keeps its pool). */
static int64_t held_by_round(struct audit *a, int bucket, int64_t rid)
{
    struct tp_key key;
    int64_t total = get_int(a, "HGET %s total", tp_keys_pool(&key, bucket, rid), NULL);
    int64_t paid = get_int(a, "HGET %s paid", tp_keys_plan(&key, bucket, rid), NULL);
    return total - paid;
}

static void check_bucket(struct audit *a, int bucket, struct totals *t)
{
    struct tp_key key;
    int64_t bal = 0, held = 0, nusers = 0, negative = 0;

    struct tp_store_value *v = cmd(a, "HGETALL %s", tp_keys_bal(&key, bucket), NULL);
    for (size_t i = 0; v != NULL && i + 1 < v->n; i += 2) {
        int64_t b = num(v->elem[i + 1]);
        bal += b;
        nusers++;
        if (b < 0)
            negative++;
        kvs_add(&t->users, num(v->elem[i]), b);
    }
    tp_store_value_free(v);

    int64_t house = get_int(a, "GET %s", tp_keys_house(&key, bucket), NULL);
    int64_t granted = get_int(a, "GET %s", tp_keys_granted(&key, bucket), NULL);

    /* Rounds holding stakes: the bucket's `unsettled` set, plus (defensively) any pool whose
     * round state copy is still open or live but is missing from the set. */
    struct tp_store_value *uns = cmd(a, "SMEMBERS %s", tp_keys_unsettled(&key, bucket), NULL);
    int nrounds = 0;
    for (size_t i = 0; uns != NULL && i < uns->n; i++) {
        int64_t h = held_by_round(a, bucket, num(uns->elem[i]));
        held += h;
        nrounds++;
        kvs_add(&t->round_stakes, num(uns->elem[i]), h);
    }
    char cursor[32] = "0";
    do {
        struct tp_key match;
        struct tp_store_value *s =
            cmd(a, "SCAN %s MATCH %s COUNT 1000", cursor, tp_keys_pool_pattern(&match, bucket));
        if (s == NULL || s->n != 2)
            break;
        snprintf(cursor, sizeof(cursor), "%s", s->elem[0]->str ? s->elem[0]->str : "0");
        for (size_t i = 0; i < s->elem[1]->n; i++) {
            const char *rid = strrchr(s->elem[1]->elem[i]->str, ':') + 1;
            bool listed = false;
            for (size_t j = 0; uns != NULL && j < uns->n; j++)
                listed = listed || strcmp(uns->elem[j]->str, rid) == 0;
            if (listed)
                continue;
            int64_t id = strtoll(rid, NULL, 10);
            struct tp_store_value *st =
                cmd(a, "HGET %s state", tp_keys_round_state(&key, bucket, id), NULL);
            enum tp_round_state rs = state_of(st != NULL ? st->str : NULL);
            if (rs == TP_ROUND_OPEN || rs == TP_ROUND_LIVE) {
                int64_t h = held_by_round(a, bucket, id);
                held += h;
                nrounds++;
                kvs_add(&t->round_stakes, id, h);
            }
            tp_store_value_free(st);
        }
        tp_store_value_free(s);
    } while (strcmp(cursor, "0") != 0 && !a->redis_failed);
    tp_store_value_free(uns);

    struct tp_store_value *g = cmd(a, "HVALS %s", tp_keys_grants(&key, bucket), NULL);
    int64_t gsum = 0;
    for (size_t i = 0; g != NULL && i < g->n; i++) {
        const char *colon = g->elem[i]->str ? strchr(g->elem[i]->str, ':') : NULL;
        gsum += colon ? strtoll(colon + 1, NULL, 10) : 0;
    }
    int64_t gn = g ? (int64_t)g->n : 0;
    tp_store_value_free(g);

    int64_t lhs = bal + house + held;
    report(a, lhs == granted,
           "redis bucket %d: balances %" PRId64 " (%" PRId64 " users) + house %" PRId64
           " + held by %d unsettled rounds %" PRId64 " = %" PRId64 ", granted %" PRId64 "%s",
           bucket, bal, nusers, house, nrounds, held, lhs, granted,
           lhs == granted ? "" : " (diff follows)");
    if (lhs != granted)
        printf("     bucket %d: redis holds %" PRId64 ", grants say %" PRId64 ", diff %+" PRId64
               "\n",
               bucket, lhs, granted, lhs - granted);
    report(a, gsum == granted,
           "redis bucket %d: grant ledger %" PRId64 " grants summing to %" PRId64
           ", granted %" PRId64,
           bucket, gn, gsum, granted);
    if (negative > 0)
        report(a, false, "redis bucket %d: %" PRId64 " negative balances", bucket, negative);
    t->bal += bal;
    t->house += house;
    t->held += held;
    t->granted += granted;
    t->grants_sum += gsum;
    t->grants_n += gn;
}

/* --- Check 2: receipts --- */

struct receipt {
    int64_t id, total, payouts, refunds;
    bool final;
    enum tp_round_state state; /* as stored (TP_ROUND_NONE: no hash) */
};

static size_t check_receipts(struct audit *a, struct receipt **out)
{
    struct tp_store_value *ids = cmd(a, "ZRANGE %s 0 -1", TP_KEYS_ROUNDS, NULL);
    size_t n = ids ? ids->n : 0, nfinal = 0, nbad = 0;
    struct receipt *rs = tp_xcalloc(n + 1, sizeof(*rs));
    for (size_t i = 0; i < n; i++) {
        struct tp_key key;
        struct tp_store_value *h =
            cmd(a, "HMGET %s state r_total r_payouts r_rake r_breakage r_refunds",
                tp_keys_round(&key, num(ids->elem[i])), NULL);
        if (h == NULL || h->n != 6)
            break;
        rs[i].id = num(ids->elem[i]);
        rs[i].state = state_of(h->elem[0]->str);
        if (tp_round_is_final(rs[i].state)) {
            int64_t total = num(h->elem[1]), pay = num(h->elem[2]), rake = num(h->elem[3]);
            int64_t brk = num(h->elem[4]), ref = num(h->elem[5]);
            rs[i] = (struct receipt){rs[i].id, total, pay, ref, true, rs[i].state};
            nfinal++;
            if (pay + rake + brk + ref != total || pay < 0 || rake < 0 || brk < 0 || ref < 0) {
                nbad++;
                report(a, false,
                       "round %s receipt: payouts %" PRId64 " + rake %" PRId64
                       " + breakage %" PRId64 " + refunds %" PRId64 " = %" PRId64 ", total %" PRId64
                       ", diff %+" PRId64,
                       ids->elem[i]->str, pay, rake, brk, ref, pay + rake + brk + ref, total,
                       pay + rake + brk + ref - total);
            }
        }
        tp_store_value_free(h);
    }
    if (nbad == 0)
        report(a, true,
               "receipts: %zu settled/cancelled rounds of %zu, each payouts + rake + breakage + "
               "refunds = total",
               nfinal, n);
    tp_store_value_free(ids);
    *out = rs;
    return n;
}

/* --- Check 3: the unfinished index --- */

static bool has_id(const struct tp_store_value *ids, int64_t id)
{
    for (size_t i = 0; ids != NULL && i < ids->n; i++)
        if (num(ids->elem[i]) == id)
            return true;
    return false;
}

/*
 * The leader finds the rounds it owes something only through tp:{g}:unfinished: a round open,
 * live, settling or cancelling that is not in it may never end (its stakes held for good), and
 * a finished one left in it costs the leader reads every step. `before` was read before the
 * round states, the index is read again after them: a round that opened or ended meanwhile is
 * in one of the two reads, so only a real finding is reported (a missing round is in neither,
 * a stale one in both).
 */
static void check_unfinished(struct audit *a, const struct tp_store_value *before,
                             const struct receipt *rs, size_t n)
{
    struct tp_store_value *after = cmd(a, "ZRANGE %s 0 -1", TP_KEYS_UNFINISHED, NULL);
    if (after == NULL)
        return;
    size_t missing = 0, stale = 0, listed = 0;
    for (size_t i = 0; i < n; i++) {
        bool in_before = has_id(before, rs[i].id), in_after = has_id(after, rs[i].id);
        listed += in_after;
        if (rs[i].state != TP_ROUND_NONE && !tp_round_is_final(rs[i].state) && !in_before &&
            !in_after && missing++ < 20)
            printf("     round %" PRId64 " is %s but not in %s: the leader does not see it, "
                   "so it may never end\n",
                   rs[i].id, tp_round_state_name(rs[i].state), TP_KEYS_UNFINISHED);
    }
    for (size_t i = 0; i < after->n; i++) {
        int64_t id = num(after->elem[i]);
        if (!has_id(before, id))
            continue;
        enum tp_round_state st = TP_ROUND_NONE;
        for (size_t k = 0; k < n; k++)
            if (rs[k].id == id)
                st = rs[k].state;
        if ((st == TP_ROUND_NONE || tp_round_is_final(st)) && stale++ < 20)
            printf("     round %" PRId64 " is in %s but %s\n", id, TP_KEYS_UNFINISHED,
                   st == TP_ROUND_NONE ? "does not exist" : tp_round_state_name(st));
    }
    report(a, missing == 0 && stale == 0,
           "unfinished index: %zu rounds listed, every open, live, settling or cancelling round "
           "among them%s (%zu missing, %zu finished or unknown listed)",
           listed, missing + stale ? " — not so" : "", missing, stale);
    tp_store_value_free(after);
}

/* --- Check 3a: leaked hot index entries (no money: said, never a mismatch) --- */

static void check_hot_leaks(struct audit *a)
{
    struct tp_hot_leaks l;
    if (tp_hot_leaks_find(a->redis, a->cfg->game.buckets, tp_hot_leaks_since_ms(), false, &l) !=
        0) {
        fprintf(stderr, "audit: reading the hot index failed\n");
        a->redis_failed = true;
    } else if (l.leaked == 0) {
        report(a, true, "hot index: %" PRId64 " entries, none naming a round no longer in Redis",
               l.entries);
    } else {
        printf("note hot index: %" PRId64 " entries, %" PRId64
               " naming a round no longer in Redis (leaked by an older version's archival, "
               "docs/operations.md §4): %" PRId64 " past their TTL, which `tickpool admin "
               "hot-index-prune` removes; the other %" PRId64
               " guard their keys until their TTL has passed\n",
               l.entries, l.leaked, l.past_ttl, l.leaked - l.past_ttl);
    }
    tp_hot_leaks_free(&l);
}

/* --- Check 4: Postgres against Redis --- */

static int64_t outbox_backlog(struct audit *a)
{
    int64_t n = get_int(a, "XLEN %s", TP_KEYS_GLOBAL_OUTBOX, NULL);
    for (int b = 0; b < a->cfg->game.buckets; b++) {
        struct tp_key key;
        n += get_int(a, "XLEN %s", tp_keys_outbox(&key, b), NULL);
    }
    return n;
}

/* Entries the writer refused and parked (docs/operations.md, "Rejected outbox entries"): their
 * money is missing from Postgres until an operator replays them. */
static int64_t outbox_parked(struct audit *a)
{
    struct tp_key key, rejected;
    int64_t n = get_int(a, "XLEN %s", tp_keys_rejected(&rejected, TP_KEYS_GLOBAL_OUTBOX), NULL);
    for (int b = 0; b < a->cfg->game.buckets; b++)
        n += get_int(a, "XLEN %s", tp_keys_rejected(&rejected, tp_keys_outbox(&key, b)), NULL);
    return n;
}

static int64_t cell(const struct tp_pgw_rows *r, size_t row, size_t col)
{
    const char *s = tp_pgw_rows_get(r, row, col);
    return s ? strtoll(s, NULL, 10) : 0;
}

/* Runs a query; on failure prints it and returns false (the audit then exits 2). */
static bool query(struct tp_pgw_pg *pg, const char *sql, struct tp_pgw_rows *out)
{
    char err[256] = "";
    int rc = tp_pgw_pg_query(pg, sql, 0, NULL, out, err, sizeof(err));
    if (rc != 0) {
        /* Said from the SQLSTATE (57014): when the query ran in parallel, Postgres's own text
         * may be its workers' "canceling statement due to user request". */
        fprintf(stderr, "audit: postgres query failed%s: %s\n",
                rc == TP_ETIMEDOUT ? " (statement timeout: see --pg-timeout)" : "", err);
        return false;
    }
    return true;
}

/* Compares two id-sorted maps; prints up to 20 differing ids. Returns the number of diffs. */
static size_t diff_maps(const char *what, const struct kvs *redis, const struct kvs *pg)
{
    size_t i = 0, j = 0, nd = 0;
    while (i < redis->n || j < pg->n) {
        int64_t k, rv = 0, pv = 0;
        if (j >= pg->n || (i < redis->n && redis->a[i].k < pg->a[j].k)) {
            k = redis->a[i].k;
            rv = redis->a[i++].v;
        } else if (i >= redis->n || pg->a[j].k < redis->a[i].k) {
            k = pg->a[j].k;
            pv = pg->a[j++].v;
        } else {
            k = redis->a[i].k;
            rv = redis->a[i++].v;
            pv = pg->a[j++].v;
        }
        if (rv != pv && nd++ < 20)
            printf("     %s %" PRId64 ": redis %" PRId64 ", postgres %" PRId64 ", diff %+" PRId64
                   "\n",
                   what, k, rv, pv, rv - pv);
    }
    if (nd > 20)
        printf("     … and %zu more\n", nd - 20);
    return nd;
}

static int check_postgres(struct audit *a, struct tp_pgw_pg *pg, struct totals *t,
                          const struct receipt *rs, size_t nrs)
{
    struct tp_pgw_rows r;
    /* The sums below count each payouts row as its credit, which migration 0010 made it (its
     * view payout_credits). Before 0010 the ledger holds every credit as rows too, and this
     * audit would count each twice: refuse rather than report every winner's balance. */
    if (!query(pg, "SELECT to_regclass('payout_credits') IS NOT NULL", &r))
        return -1;
    const char *v = r.nrows == 1 ? tp_pgw_rows_get(&r, 0, 0) : NULL;
    bool credits_view = v != NULL && strcmp(v, "t") == 0;
    tp_pgw_rows_free(&r);
    if (!credits_view) {
        fprintf(stderr, "audit: Postgres's schema is older than migration 0010 (payouts are the "
                        "ledger's credits): run `tickpool migrate` first\n");
        return -1;
    }
    /* Every ledger entry sums to zero. The table alone: a bet's debit is its bets row and a
     * payout's or refund's credit its payouts row, whose two sides (user -stake, round +stake;
     * round -amount, user +amount) balance by construction (migrations 0006, 0010). */
    if (!query(pg,
               "SELECT entry_id, sum(amount) FROM ledger GROUP BY entry_id "
               "HAVING sum(amount) <> 0 ORDER BY entry_id LIMIT 20",
               &r))
        return -1;
    report(a, r.nrows == 0, "postgres ledger: every entry sums to zero%s",
           r.nrows ? " — not these:" : "");
    for (size_t i = 0; i < r.nrows; i++)
        printf("     entry %s sums to %s\n", tp_pgw_rows_get(&r, i, 0), tp_pgw_rows_get(&r, i, 1));
    tp_pgw_rows_free(&r);

    /* Per-user balances: the ledger's user rows (grants, and credits written before 0010)
     * minus every bet's stake plus every payout and refund (what the view ledger_full sums,
     * without building its account strings). */
    if (!query(pg,
               "SELECT u, sum(a) FROM (SELECT substr(account, 6)::bigint AS u, amount AS a "
               "FROM ledger WHERE account LIKE 'user:%' UNION ALL SELECT user_id, -stake "
               "FROM bets UNION ALL SELECT user_id, amount FROM payouts) x GROUP BY u ORDER BY u",
               &r))
        return -1;
    struct kvs pgu = {0};
    int64_t pg_bal = 0;
    for (size_t i = 0; i < r.nrows; i++) {
        kvs_add(&pgu, cell(&r, i, 0), cell(&r, i, 1));
        pg_bal += cell(&r, i, 1);
    }
    tp_pgw_rows_free(&r);
    if (t->users.n > 1) /* no users: the array is NULL, which qsort may not be given */
        qsort(t->users.a, t->users.n, sizeof(struct kv), cmp_kv);
    printf("     balances: redis %" PRId64 " over %zu users, postgres %" PRId64 " over %zu users\n",
           t->bal, t->users.n, pg_bal, pgu.n);
    size_t nd = diff_maps("user", &t->users, &pgu);
    report(a, nd == 0,
           "postgres per-user balances (ledger - stakes + credits) = redis balances (%zu users "
           "differ)",
           nd);
    free(pgu.a);

    /* House, grants. */
    if (!query(pg,
               "SELECT (SELECT coalesce(sum(amount), 0) FROM ledger WHERE account = 'house'),"
               " (SELECT count(*) FROM grants), (SELECT coalesce(sum(amount), 0) FROM "
               "grants)",
               &r))
        return -1;
    int64_t house = cell(&r, 0, 0), gn = cell(&r, 0, 1), gs = cell(&r, 0, 2);
    tp_pgw_rows_free(&r);
    report(a, house == t->house, "house: redis %" PRId64 ", postgres %" PRId64 ", diff %+" PRId64,
           t->house, house, t->house - house);
    report(a, gn == t->grants_n && gs == t->grants_sum,
           "grants: redis %" PRId64 " summing to %" PRId64 ", postgres %" PRId64
           " summing to %" PRId64,
           t->grants_n, t->grants_sum, gn, gs);

    /* Per round: bets (sum = receipt total for final rounds, = held stakes for open ones),
     * payouts and refunds (= receipt). */
    if (!query(pg,
               "SELECT r, sum(bn), sum(bs), sum(ps), sum(rs) FROM ("
               " SELECT round_id r, count(*) bn, sum(stake) bs, 0 ps, 0 rs FROM bets GROUP BY 1"
               " UNION ALL SELECT round_id, 0, 0, sum(amount) FILTER (WHERE kind = 'win'),"
               " sum(amount) FILTER (WHERE kind = 'refund') FROM payouts GROUP BY 1"
               ") x GROUP BY r ORDER BY r",
               &r))
        return -1;
    size_t bad = 0, checked = 0;
    int64_t nbets = 0, sbets = 0;
    for (size_t i = 0; i < r.nrows; i++) {
        int64_t rid = cell(&r, i, 0), bs = cell(&r, i, 2), ps = cell(&r, i, 3);
        int64_t refs = cell(&r, i, 4);
        nbets += cell(&r, i, 1);
        sbets += bs;
        const struct receipt *rc = NULL;
        for (size_t k = 0; k < nrs; k++)
            if (rs[k].id == rid && rs[k].final)
                rc = &rs[k];
        int64_t held = 0;
        bool open = false;
        for (size_t k = 0; k < t->round_stakes.n; k++)
            if (t->round_stakes.a[k].k == rid) {
                held += t->round_stakes.a[k].v;
                open = true;
            }
        if (rc != NULL) {
            checked++;
            if (bs != rc->total || ps != rc->payouts || refs != rc->refunds) {
                if (bad++ < 20)
                    printf("     round %" PRId64 ": redis receipt total %" PRId64
                           " payouts %" PRId64 " refunds %" PRId64 "; postgres bets %" PRId64
                           " payouts %" PRId64 " refunds %" PRId64 "\n",
                           rid, rc->total, rc->payouts, rc->refunds, bs, ps, refs);
            }
        } else if (open) {
            checked++;
            if (bs - ps - refs != held && bad++ < 20)
                printf("     round %" PRId64 ": redis holds %" PRId64 ", postgres bets %" PRId64
                       " - credits %" PRId64 " = %" PRId64 "\n",
                       rid, held, bs, ps + refs, bs - ps - refs);
        }
    }
    tp_pgw_rows_free(&r);
    report(a, bad == 0,
           "postgres bets and payouts per round = redis (%zu rounds compared, %" PRId64
           " bets summing to %" PRId64 ", %zu differ)",
           checked, nbets, sbets, bad);

    /* Archived rounds have left Redis: Postgres's own receipt of every final round must match
     * its bets and credits (hot rounds too, where Redis's receipt was compared above). */
    if (!query(pg,
               "SELECT r.id, r.total, coalesce(b.s, 0), r.payouts, coalesce(p.w, 0), r.refunds,"
               " coalesce(p.f, 0) FROM rounds r"
               " LEFT JOIN (SELECT round_id, sum(stake) s FROM bets GROUP BY 1) b"
               " ON b.round_id = r.id"
               " LEFT JOIN (SELECT round_id, sum(amount) FILTER (WHERE kind = 'win') w,"
               " sum(amount) FILTER (WHERE kind = 'refund') f FROM payouts GROUP BY 1) p"
               " ON p.round_id = r.id WHERE r.state IN ('settled', 'cancelled')"
               " ORDER BY r.id",
               &r))
        return -1;
    size_t pbad = 0, archived = 0;
    for (size_t i = 0; i < r.nrows; i++) {
        int64_t rid = cell(&r, i, 0);
        bool hot = false;
        for (size_t k = 0; k < nrs && !hot; k++)
            hot = rs[k].id == rid;
        archived += !hot;
        if (cell(&r, i, 1) != cell(&r, i, 2) || cell(&r, i, 3) != cell(&r, i, 4) ||
            cell(&r, i, 5) != cell(&r, i, 6)) {
            if (pbad++ < 20)
                printf("     round %" PRId64 "%s: postgres receipt total %" PRId64
                       " payouts %" PRId64 " refunds %" PRId64 "; its bets %" PRId64
                       " payouts %" PRId64 " refunds %" PRId64 "\n",
                       rid, hot ? "" : " (archived)", cell(&r, i, 1), cell(&r, i, 3),
                       cell(&r, i, 5), cell(&r, i, 2), cell(&r, i, 4), cell(&r, i, 6));
        }
    }
    report(a, pbad == 0,
           "postgres receipts = postgres bets and payouts (%zu final rounds, %zu archived from "
           "redis, %zu differ)",
           r.nrows, archived, pbad);
    tp_pgw_rows_free(&r);
    return 0;
}

/* --- Entry --- */

static void usage(FILE *out)
{
    fputs("Usage: tickpool audit [--wait S] [--pg-timeout S] [--redis-only]\n"
          "Checks money conservation in Redis (per bucket and in total), every settled round's\n"
          "receipt, that every round not yet settled or cancelled is in the leader's index of\n"
          "unfinished rounds (and no other round is), counts leaked hot index entries (a\n"
          "note, never a failure), and, once the outbox has drained\n"
          "(waiting up to S seconds, default 10), that Postgres agrees with Redis. Its queries\n"
          "scan whole tables: each may take up to --pg-timeout seconds (default 600), not\n"
          "postgres.timeout. Exit 0 when all hold, 1 on a mismatch, 2 on usage or connection\n"
          "errors.\n",
          out);
}

int tp_audit_main(const struct tp_config *cfg, int nargs, char **args)
{
    /* getopt wants a program name in argv[0]: args are what followed "audit". */
    char *argv[64];
    int argc = 0;
    argv[argc++] = "audit";
    for (int i = 0; i < nargs && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    if (nargs > 62) {
        usage(stderr);
        return TP_AUDIT_USAGE;
    }
    static const struct option opts[] = {
        {"wait", required_argument, NULL, 'w'},
        {"redis-only", no_argument, NULL, 'r'},
        {"pg-timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    double wait_s = 10, pg_timeout_s = 600;
    bool redis_only = false;
    int ch;
    optind = 0; /* glibc: 0 also resets getopt's state after main's own parsing */
    while ((ch = getopt_long(argc, argv, "w:t:rh", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'w':
            wait_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(wait_s >= 0 && wait_s <= 86400)) {
                fprintf(stderr, "audit: --wait wants seconds (0..86400), got '%s'\n", optarg);
                return TP_AUDIT_USAGE;
            }
            break;
        case 't':
            pg_timeout_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(pg_timeout_s >= 0.01 && pg_timeout_s <= 86400)) {
                fprintf(stderr, "audit: --pg-timeout wants seconds (0.01..86400), got '%s'\n",
                        optarg);
                return TP_AUDIT_USAGE;
            }
            break;
        case 'r':
            redis_only = true;
            break;
        case 'h':
            usage(stdout);
            return TP_AUDIT_OK;
        default:
            usage(stderr);
            return TP_AUDIT_USAGE;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return TP_AUDIT_USAGE;
    }
    if (cfg == NULL) { /* main could not load it, and said why */
        fputs("audit: no valid configuration: nothing checked\n", stderr);
        return TP_AUDIT_USAGE;
    }

    struct audit a = {.cfg = cfg};
    struct totals t = {0};
    struct receipt *rs = NULL;
    struct tp_pgw_pg *pg = NULL;
    int status = TP_AUDIT_USAGE;
    if (cfg->redis.url[0] == '\0') {
        fprintf(stderr, "audit: no Redis configured (redis.url)\n");
        goto out;
    }
    if (tp_store_sync_open(&cfg->redis, NULL, TP_MAX(cfg->redis.timeout_ms, 3000), &a.redis) != 0) {
        fprintf(stderr, "audit: cannot connect to Redis\n");
        goto out;
    }

    int buckets = cfg->game.buckets;
    printf("audit: %d bucket(s)\n", buckets);
    for (int b = 0; b < buckets && !a.redis_failed; b++)
        check_bucket(&a, b, &t);
    if (a.redis_failed)
        goto out;
    int64_t lhs = t.bal + t.house + t.held;
    report(&a, lhs == t.granted,
           "redis total: balances %" PRId64 " + house %" PRId64 " + held %" PRId64 " = %" PRId64
           ", granted %" PRId64 ", diff %+" PRId64,
           t.bal, t.house, t.held, lhs, t.granted, lhs - t.granted);
    struct tp_store_value *index_before = cmd(&a, "ZRANGE %s 0 -1", TP_KEYS_UNFINISHED, NULL);
    size_t nrs = check_receipts(&a, &rs);
    if (!a.redis_failed)
        check_unfinished(&a, index_before, rs, nrs);
    tp_store_value_free(index_before);
    if (!a.redis_failed)
        check_hot_leaks(&a);
    if (a.redis_failed)
        goto out;

    if (!redis_only) {
        int64_t until = tp_mono_ms() + (int64_t)(wait_s * 1000), backlog;
        struct timespec ts = {0, 100 * 1000 * 1000};
        while ((backlog = outbox_backlog(&a)) > 0 && !a.redis_failed && tp_mono_ms() < until)
            nanosleep(&ts, NULL);
        if (a.redis_failed)
            goto out;
        if (backlog > 0) {
            report(&a, false,
                   "outbox: %" PRId64 " entries not yet written to Postgres after %.0f s "
                   "(is a writer running?); Postgres not compared",
                   backlog, wait_s);
        } else {
            report(&a, true, "outbox: drained");
            int64_t parked = outbox_parked(&a);
            if (a.redis_failed)
                goto out;
            report(&a, parked == 0,
                   "outbox: %" PRId64 " refused entries parked in <outbox>:rejected (logged "
                   "'outbox entry refused'; replay them: docs/operations.md)",
                   parked);
            /* Whole-table scans: postgres.timeout is the server's bound for its short
             * statements, and a large ledger takes longer than that to sum. */
            struct tp_config_postgres pcfg = cfg->postgres;
            pcfg.timeout_ms = (int)(pg_timeout_s * 1000);
            pg = tp_pgw_pg_open(&pcfg);
            if (pg == NULL) {
                fprintf(stderr, "audit: cannot connect to Postgres\n");
                goto out;
            }
            if (check_postgres(&a, pg, &t, rs, nrs) != 0)
                goto out;
        }
    }
    if (a.mismatches > 0)
        printf("audit: %d check(s) FAILED (on a busy system, rerun: reads are not one snapshot)\n",
               a.mismatches);
    else
        printf("audit: all checks passed\n");
    status = a.mismatches > 0 ? TP_AUDIT_MISMATCH : TP_AUDIT_OK;
out:
    tp_pgw_pg_close(pg);
    free(rs);
    free(t.users.a);
    free(t.round_stakes.a);
    tp_store_sync_close(a.redis);
    return status;
}
