/*
 * `tickpool admin status | pause | resume`: the game as a whole (see admin_internal.h).
 *
 * status reads, one command at a time: the lease and epoch, the pause (global and the buckets'
 * copies), the open and live rounds, the unfinished index, the outbox streams, INFO memory and
 * the worker registry. Reads are not one snapshot; each line is true when it was read.
 *
 * pause / resume: the bucket copies the bet script reads are written first (SET or DEL in every
 * bucket), then scripts/lua/pause.lua flips tp:{g}:pause and records the admin action in one
 * step. A command cut half-way leaves the global key as it was, so running it again finishes it;
 * the refusals (already paused, not paused) look at the global key only, after making the
 * bucket copies agree with it (so either command repairs a copy that went missing).
 */
#include "admin_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/game/pause.h"
#include "tickpool/game/round.h"
#include "tickpool/store/keys.h"
#include "tickpool/store/registry.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* --- Shared reads --- */

static int64_t num(const struct tp_store_value *v)
{
    int64_t n = 0;
    if (v != NULL && v->type == TP_REPLY_INTEGER)
        return v->integer;
    return v != NULL && tp_parse_i64(v->str, &n) ? n : 0;
}

/* "2026-12-02T08:01:02Z" of Unix ms t. */
static const char *iso(int64_t t, char *out, size_t n)
{
    return tp_admin_utc(t, TP_ADMIN_UTC_ISO, out, n);
}

struct pause_read {
    int pending, err;
    struct tp_game_pause p;
};

static void on_pause(int err, const struct tp_game_pause *p, void *ud)
{
    struct pause_read *r = ud;
    r->err = err;
    if (err == 0)
        r->p = *p;
    r->pending = 0;
}

/* The global pause into *out. Returns TP_ADMIN_OK or TP_ADMIN_UNAVAILABLE (printed). */
static int read_pause(struct tp_admin *a, struct tp_game_pause *out)
{
    struct tp_store_sync *s = tp_admin_redis(a);
    if (s == NULL)
        return TP_ADMIN_UNAVAILABLE;
    struct pause_read r = {.pending = 1};
    int rc = tp_game_pause_load(tp_store_sync_store(s), on_pause, &r);
    if (rc == 0)
        tp_store_sync_wait(s, &r.pending);
    if (rc != 0 || r.err != 0) {
        fprintf(stderr, "admin: cannot read the pause: %s\n", tp_strerror(rc ? rc : r.err));
        return TP_ADMIN_UNAVAILABLE;
    }
    *out = r.p;
    return TP_ADMIN_OK;
}

/* --- status --- */

struct worker_row {
    char host[64];
    long pid;
    int index;
    int64_t age_ms;
};

struct status {
    int64_t now;
    bool have_lease;
    char holder[64];
    int64_t lease_epoch, lease_left_ms, epoch;
    long leader_pid;
    int leader_index;
    const char *leader_host; /* from the registry; NULL when not found */
    struct tp_game_pause pause;
    int paused_buckets;
    int64_t open_id, open_locks_at, live_id, live_closes_at;
    int64_t *hot_ids;
    char (*hot_states)[16];
    size_t nhot;
    int64_t outbox_entries, outbox_oldest_ms;
    int64_t used_memory, maxmemory;
    struct worker_row *workers;
    size_t nworkers;
};

static int64_t round_field(struct tp_admin *a, int64_t id, const char *field, char *state, size_t n)
{
    struct tp_key k;
    struct tp_store_value *v =
        tp_admin_command(a, "HMGET %s state %s", tp_keys_round(&k, id), field);
    int64_t t = v != NULL && v->n == 2 ? num(v->elem[1]) : 0;
    if (state != NULL)
        snprintf(state, n, "%s", v != NULL && v->n == 2 && v->elem[0]->str ? v->elem[0]->str : "?");
    tp_store_value_free(v);
    return t;
}

/* Entries not yet written and the age of the oldest, over the global and every bucket outbox
 * (the writer trims what it wrote, so what is left is its backlog). */
static bool read_outbox(struct tp_admin *a, struct status *st)
{
    for (int b = -1; b < a->cfg->game.buckets; b++) {
        struct tp_key k;
        const char *key = b < 0 ? TP_KEYS_GLOBAL_OUTBOX : tp_keys_outbox(&k, b);
        struct tp_store_value *n = tp_admin_command(a, "XLEN %s", key);
        struct tp_store_value *first = n ? tp_admin_command(a, "XRANGE %s - + COUNT 1", key) : NULL;
        if (n == NULL || first == NULL) {
            tp_store_value_free(n);
            return false;
        }
        st->outbox_entries += num(n);
        if (first->n == 1 && first->elem[0]->n >= 1 && first->elem[0]->elem[0]->str != NULL) {
            int64_t ms = strtoll(first->elem[0]->elem[0]->str, NULL, 10);
            st->outbox_oldest_ms = TP_MAX(st->outbox_oldest_ms, st->now - ms);
        }
        tp_store_value_free(n);
        tp_store_value_free(first);
    }
    return true;
}

static int64_t info_field(const char *info, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = info; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ':')
            return strtoll(p + n + 1, NULL, 10);
    return 0;
}

static bool read_workers(struct tp_admin *a, struct status *st)
{
    struct tp_store_value *v = tp_admin_command(a, "ZRANGE %s 0 -1 WITHSCORES", TP_KEYS_WORKERS);
    if (v == NULL)
        return false;
    st->workers = tp_xcalloc(v->n / 2 + 1, sizeof(*st->workers));
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        struct worker_row *w = &st->workers[st->nworkers];
        if (tp_registry_parse(v->elem[i]->str, w->host, sizeof(w->host), &w->pid, &w->index) != 0)
            continue;
        w->age_ms =
            st->now - (int64_t)strtod(v->elem[i + 1]->str ? v->elem[i + 1]->str : "0", NULL);
        if (w->age_ms > TP_REGISTRY_ALIVE_MS)
            continue; /* gone: not heard from for a while */
        if (w->pid == st->leader_pid && w->index == st->leader_index)
            st->leader_host = w->host;
        st->nworkers++;
    }
    tp_store_value_free(v);
    return true;
}

static bool read_status(struct tp_admin *a, struct status *st)
{
    st->now = tp_now_ms();
    struct tp_store_value *v = tp_admin_command(a, "GET %s", TP_KEYS_LEASE);
    if (v == NULL)
        return false;
    if (v->str != NULL) {
        const char *bar = strchr(v->str, '|');
        st->have_lease = bar != NULL;
        snprintf(st->holder, sizeof(st->holder), "%.*s", bar ? (int)(bar - v->str) : 0, v->str);
        st->lease_epoch = bar ? strtoll(bar + 1, NULL, 10) : 0;
        /* holder = pid-<pid>-w<index> (src/game/leader.c) */
        if (sscanf(st->holder, "pid-%ld-w%d", &st->leader_pid, &st->leader_index) != 2)
            st->leader_pid = 0, st->leader_index = -1;
    }
    tp_store_value_free(v);
    if ((v = tp_admin_command(a, "PTTL %s", TP_KEYS_LEASE)) == NULL)
        return false;
    st->lease_left_ms = num(v);
    tp_store_value_free(v);
    if ((v = tp_admin_command(a, "GET %s", TP_KEYS_EPOCH)) == NULL)
        return false;
    st->epoch = num(v);
    tp_store_value_free(v);

    if (read_pause(a, &st->pause) != TP_ADMIN_OK)
        return false;
    for (int b = 0; b < a->cfg->game.buckets; b++) {
        struct tp_key k;
        if ((v = tp_admin_command(a, "EXISTS %s", tp_keys_paused(&k, b))) == NULL)
            return false;
        st->paused_buckets += num(v) > 0;
        tp_store_value_free(v);
    }

    if ((v = tp_admin_command(a, "HMGET %s open live", TP_KEYS_CURRENT)) == NULL)
        return false;
    st->open_id = v->n == 2 ? num(v->elem[0]) : 0;
    st->live_id = v->n == 2 ? num(v->elem[1]) : 0;
    tp_store_value_free(v);
    if (st->open_id > 0)
        st->open_locks_at = round_field(a, st->open_id, "locks_at", NULL, 0);
    if (st->live_id > 0)
        st->live_closes_at = round_field(a, st->live_id, "closes_at", NULL, 0);

    if ((v = tp_admin_command(a, "ZRANGE %s 0 -1", TP_KEYS_UNFINISHED)) == NULL)
        return false;
    st->nhot = v->n;
    st->hot_ids = tp_xcalloc(v->n + 1, sizeof(*st->hot_ids));
    st->hot_states = tp_xcalloc(v->n + 1, sizeof(*st->hot_states));
    for (size_t i = 0; i < v->n; i++) {
        st->hot_ids[i] = num(v->elem[i]);
        round_field(a, st->hot_ids[i], "id", st->hot_states[i], sizeof(st->hot_states[i]));
    }
    tp_store_value_free(v);

    if (!read_outbox(a, st))
        return false;
    if ((v = tp_admin_command(a, "INFO memory")) == NULL)
        return false;
    st->used_memory = info_field(v->str, "used_memory");
    st->maxmemory = info_field(v->str, "maxmemory");
    tp_store_value_free(v);
    return read_workers(a, st);
}

static void print_status(const struct tp_admin *a, const struct status *st)
{
    char t[32];
    if (st->have_lease)
        printf("leader     %s on %s (pid %ld, worker %d), epoch %" PRId64 ", lease %" PRId64
               " ms left\n",
               st->holder, st->leader_host ? st->leader_host : "an unregistered host",
               st->leader_pid, st->leader_index, st->lease_epoch, st->lease_left_ms);
    else
        printf("leader     NONE (no process holds the lease: rounds stop), last epoch %" PRId64
               "\n",
               st->epoch);
    if (st->pause.paused)
        printf("game       PAUSED since %s (%" PRId64 " s) by %s%s%s%s\n",
               iso(st->pause.since, t, sizeof(t)), (st->now - st->pause.since) / 1000, st->pause.by,
               st->pause.reason[0] ? ": \"" : "", st->pause.reason,
               st->pause.reason[0] ? "\"" : "");
    else
        printf("game       running\n");
    int buckets = a->cfg->game.buckets;
    int want = st->pause.paused ? buckets : 0;
    if (st->paused_buckets != want)
        printf("           WARNING: %d of %d bucket copies say paused: `tickpool admin %s` "
               "repairs them\n",
               st->paused_buckets, buckets, st->pause.paused ? "pause" : "resume");
    if (st->open_id > 0)
        printf("open       #%" PRId64 ", locks at %s (in %.1f s)\n", st->open_id,
               iso(st->open_locks_at, t, sizeof(t)), (st->open_locks_at - st->now) / 1000.0);
    else
        printf("open       none\n");
    if (st->live_id > 0)
        printf("live       #%" PRId64 ", closes at %s (in %.1f s)\n", st->live_id,
               iso(st->live_closes_at, t, sizeof(t)), (st->live_closes_at - st->now) / 1000.0);
    else
        printf("live       none\n");
    printf("hot rounds %zu unfinished", st->nhot);
    for (size_t i = 0; i < st->nhot && i < 20; i++)
        printf("%s#%" PRId64 " %s", i ? ", " : ": ", st->hot_ids[i], st->hot_states[i]);
    printf("%s\n", st->nhot > 20 ? ", …" : "");
    printf("outbox     %" PRId64 " entries not yet in Postgres, oldest %.1f s\n",
           st->outbox_entries, st->outbox_oldest_ms / 1000.0);
    printf("redis      used_memory %.1f MiB", st->used_memory / 1048576.0);
    if (st->maxmemory > 0)
        printf(" of maxmemory %.1f MiB (%.0f %%)\n", st->maxmemory / 1048576.0,
               100.0 * (double)st->used_memory / (double)st->maxmemory);
    else
        printf(" (no maxmemory)\n");
    printf("workers    %zu alive\n", st->nworkers);
    for (size_t i = 0; i < st->nworkers; i++) {
        const char *host = st->workers[i].host;
        bool first = true;
        for (size_t j = 0; j < i; j++)
            first = first && strcmp(st->workers[j].host, host) != 0;
        if (!first)
            continue;
        size_t n = 0;
        for (size_t j = i; j < st->nworkers; j++)
            n += strcmp(st->workers[j].host, host) == 0;
        printf("  %-24s %zu:", host, n);
        for (size_t j = i; j < st->nworkers; j++)
            if (strcmp(st->workers[j].host, host) == 0)
                printf(" pid %ld w%d (%.1f s ago)", st->workers[j].pid, st->workers[j].index,
                       st->workers[j].age_ms / 1000.0);
        putchar('\n');
    }
}

static void json_status(const struct tp_admin *a, const struct status *st)
{
    struct tp_buf b;
    struct tp_wr w;
    tp_buf_init(&b);
    tp_wr_init(&w, &b, TP_FMT_JSON);
    tp_wr_map(&w, 10);
    tp_wr_key(&w, "leader");
    if (st->have_lease) {
        tp_wr_map(&w, 6);
        tp_wr_key(&w, "holder");
        tp_wr_str(&w, st->holder);
        tp_wr_key(&w, "host");
        if (st->leader_host)
            tp_wr_str(&w, st->leader_host);
        else
            tp_wr_null(&w);
        tp_wr_key(&w, "pid");
        tp_wr_int(&w, st->leader_pid);
        tp_wr_key(&w, "worker");
        tp_wr_int(&w, st->leader_index);
        tp_wr_key(&w, "epoch");
        tp_wr_int(&w, st->lease_epoch);
        tp_wr_key(&w, "lease_ms_left");
        tp_wr_int(&w, st->lease_left_ms);
    } else {
        tp_wr_null(&w);
    }
    tp_wr_key(&w, "epoch");
    tp_wr_int(&w, st->epoch);
    tp_wr_key(&w, "paused");
    if (st->pause.paused) {
        tp_wr_map(&w, 3);
        tp_wr_key(&w, "since");
        tp_wr_int(&w, st->pause.since);
        tp_wr_key(&w, "reason");
        tp_wr_str(&w, st->pause.reason);
        tp_wr_key(&w, "by");
        tp_wr_str(&w, st->pause.by);
    } else {
        tp_wr_null(&w);
    }
    tp_wr_key(&w, "paused_buckets");
    tp_wr_array(&w, 2);
    tp_wr_int(&w, st->paused_buckets);
    tp_wr_int(&w, a->cfg->game.buckets);
    tp_wr_key(&w, "open");
    if (st->open_id > 0) {
        tp_wr_map(&w, 2);
        tp_wr_key(&w, "id");
        tp_wr_int(&w, st->open_id);
        tp_wr_key(&w, "locks_at");
        tp_wr_int(&w, st->open_locks_at);
    } else {
        tp_wr_null(&w);
    }
    tp_wr_key(&w, "live");
    if (st->live_id > 0) {
        tp_wr_map(&w, 2);
        tp_wr_key(&w, "id");
        tp_wr_int(&w, st->live_id);
        tp_wr_key(&w, "closes_at");
        tp_wr_int(&w, st->live_closes_at);
    } else {
        tp_wr_null(&w);
    }
    tp_wr_key(&w, "hot_rounds");
    tp_wr_array(&w, st->nhot);
    for (size_t i = 0; i < st->nhot; i++) {
        tp_wr_map(&w, 2);
        tp_wr_key(&w, "id");
        tp_wr_int(&w, st->hot_ids[i]);
        tp_wr_key(&w, "state");
        tp_wr_str(&w, st->hot_states[i]);
    }
    tp_wr_key(&w, "outbox");
    tp_wr_map(&w, 2);
    tp_wr_key(&w, "entries");
    tp_wr_int(&w, st->outbox_entries);
    tp_wr_key(&w, "oldest_ms");
    tp_wr_int(&w, st->outbox_oldest_ms);
    tp_wr_key(&w, "redis");
    tp_wr_map(&w, 2);
    tp_wr_key(&w, "used_memory");
    tp_wr_int(&w, st->used_memory);
    tp_wr_key(&w, "maxmemory");
    tp_wr_int(&w, st->maxmemory);
    tp_wr_key(&w, "workers");
    tp_wr_array(&w, st->nworkers);
    for (size_t i = 0; i < st->nworkers; i++) {
        tp_wr_map(&w, 4);
        tp_wr_key(&w, "host");
        tp_wr_str(&w, st->workers[i].host);
        tp_wr_key(&w, "pid");
        tp_wr_int(&w, st->workers[i].pid);
        tp_wr_key(&w, "worker");
        tp_wr_int(&w, st->workers[i].index);
        tp_wr_key(&w, "age_ms");
        tp_wr_int(&w, st->workers[i].age_ms);
    }
    fwrite(tp_buf_ptr(&b), 1, tp_buf_size(&b), stdout);
    putchar('\n');
    tp_buf_deinit(&b);
}

static int run_status(struct tp_admin *a, int argc, char **argv)
{
    bool json = false;
    const struct tp_admin_opt opts[] = {{"json", NULL, &json}};
    int npos;
    if (tp_admin_args(argc, argv, opts, 1, NULL, 0, &npos) != TP_ADMIN_OK)
        return TP_ADMIN_USAGE;
    struct status st = {.leader_index = -1};
    bool ok = read_status(a, &st);
    if (ok && json)
        json_status(a, &st);
    else if (ok)
        print_status(a, &st);
    free(st.hot_ids);
    free(st.hot_states);
    free(st.workers);
    return ok ? TP_ADMIN_OK : TP_ADMIN_UNAVAILABLE;
}

const struct tp_admin_cmd tp_admin_cmd_status = {
    .name = "status",
    .synopsis = "status [--json]",
    .summary = "the leader, the pause, the open and live rounds, backlogs and workers",
    .help = "\n"
            "Prints: the leader (holder, host, pid, worker) and its fencing epoch; whether the\n"
            "game is paused (since, by whom, why); the open and the live round; the hot rounds\n"
            "(not yet settled or cancelled); the outbox entries not yet written to Postgres and\n"
            "the age of the oldest; Redis used_memory; the workers of every host (each worker\n"
            "announces itself in Redis every second; one silent for 3 s is left out).\n"
            "\n"
            "  --json   one JSON object instead (fields: leader, epoch, paused, paused_buckets,\n"
            "           open, live, hot_rounds, outbox, redis, workers)\n",
    .run = run_status,
};

/* --- pause / resume --- */

/* Writes (pause) or removes (resume) every bucket's copy. */
static bool write_copies(struct tp_admin *a, bool paused, int64_t since)
{
    for (int b = 0; b < a->cfg->game.buckets; b++) {
        struct tp_key k;
        struct tp_store_value *v =
            paused ? tp_admin_command(a, "SET %s %lld", tp_keys_paused(&k, b), (long long)since)
                   : tp_admin_command(a, "DEL %s", tp_keys_paused(&k, b));
        if (v == NULL)
            return false;
        tp_store_value_free(v);
    }
    return true;
}

static int pause_or_resume(struct tp_admin *a, bool resume, const char *reason)
{
    const char *cmd = resume ? "resume" : "pause";
    struct tp_game_pause p;
    int rc = read_pause(a, &p);
    if (rc != TP_ADMIN_OK)
        return rc;
    char t[32];
    if (resume != p.paused) {
        /* Refused; but the bucket copies are made to agree with the global key first, so a
         * copy lost or left behind (status warns of it) is repaired by running either command. */
        if (!write_copies(a, p.paused, p.since))
            return TP_ADMIN_UNAVAILABLE;
        if (p.paused)
            fprintf(stderr, "admin pause: already paused since %s by %s%s%s\n",
                    iso(p.since, t, sizeof(t)), p.by, p.reason[0] ? ": " : "", p.reason);
        else
            fprintf(stderr, "admin resume: the game is not paused\n");
        return TP_ADMIN_REFUSED;
    }
    int64_t now = tp_now_ms();
    if (!write_copies(a, !resume, now))
        return TP_ADMIN_UNAVAILABLE;
    char id[TP_ADMIN_ID_MAX + 1];
    tp_admin_new_id(cmd, id);
    struct tp_script_pause_args args = {
        .resume = resume, .now_ms = now, .admin = tp_admin_script_args(a, id, reason)};
    struct tp_admin_reply r;
    tp_admin_reply_init(&r);
    struct tp_store_value *v = tp_admin_wait(
        a, tp_script_pause(tp_store_sync_store(a->redis), &args, tp_admin_on_reply, &r), &r, cmd);
    if (v == NULL)
        return TP_ADMIN_UNAVAILABLE;
    const char *code;
    bool ok = tp_admin_reply_ok(v, &code);
    int status = TP_ADMIN_OK;
    if (!ok) {
        /* Another operator got there between our read and the script. */
        fprintf(stderr, "admin %s: refused: %s\n", cmd, code);
        status = strcmp(code, "already_paused") == 0 || strcmp(code, "not_paused") == 0
                     ? TP_ADMIN_REFUSED
                     : TP_ADMIN_UNAVAILABLE;
    } else if (!resume) {
        printf("paused at %s (action %s): bets are refused (game_paused); the open round still "
               "locks and the live one settles; no new round opens until `tickpool admin "
               "resume`\n",
               iso(now, t, sizeof(t)), id);
    } else {
        int64_t next = tp_round_align_open(now, (int64_t)a->cfg->game.betting_s * 1000);
        char t_next[32]; /* not t: both are arguments of one printf */
        printf("resumed at %s (action %s), paused for %" PRId64 " s; the next round opens at %s\n",
               iso(now, t, sizeof(t)), id, (now - p.since) / 1000,
               iso(next, t_next, sizeof(t_next)));
    }
    tp_store_value_free(v);
    return status;
}

/* pause and resume take the same arguments: an optional --reason. */
static int run_pause_or_resume(struct tp_admin *a, int argc, char **argv, bool resume)
{
    const char *reason = NULL;
    const struct tp_admin_opt opts[] = {{"reason", &reason, NULL}};
    int npos;
    if (tp_admin_args(argc, argv, opts, 1, NULL, 0, &npos) != TP_ADMIN_OK ||
        !tp_admin_reason_ok(argv[0], reason, false))
        return TP_ADMIN_USAGE;
    return pause_or_resume(a, resume, reason);
}

static int run_pause(struct tp_admin *a, int argc, char **argv)
{
    return run_pause_or_resume(a, argc, argv, false);
}

static int run_resume(struct tp_admin *a, int argc, char **argv)
{
    return run_pause_or_resume(a, argc, argv, true);
}

const struct tp_admin_cmd tp_admin_cmd_pause = {
    .name = "pause",
    .synopsis = "pause [--reason R]",
    .summary = "stop opening rounds and refuse bets (game_paused), e.g. for maintenance",
    .help = "\n"
            "Bets are refused at once with 409 game_paused (HTTP and WebSocket), checked by the\n"
            "bet script itself. The open round still locks and the live round settles as usual;\n"
            "no new round opens. Players see \"paused\" with the reason. The pause lives in\n"
            "Redis, so it survives a leader failover and restarts. Refused (exit 1) when the\n"
            "game is paused already.\n"
            "\n"
            "  --reason R   why (shown to players and recorded; up to 200 bytes)\n",
    .run = run_pause,
};

const struct tp_admin_cmd tp_admin_cmd_resume = {
    .name = "resume",
    .synopsis = "resume [--reason R]",
    .summary = "end a pause: the next round opens on the wall-clock grid",
    .help = "\n"
            "Bets are accepted again and the leader opens the next round at the next betting\n"
            "boundary (a multiple of game.betting_s, as at a fresh start). Refused (exit 1) when\n"
            "the game is not paused.\n"
            "\n"
            "  --reason R   recorded with the action (up to 200 bytes)\n",
    .run = run_resume,
};
