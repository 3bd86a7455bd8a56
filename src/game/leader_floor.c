/*
 * Game leader, the round-id floor (see leader_internal.h): the newest round id Postgres holds.
 *
 * Round ids come from Redis: round_boundary.lua opens the newest id + 1. A Redis that lost its
 * rounds (a FLUSHALL, an AOF lost with its disk, a restore from an older backup) would start
 * again at 1, or at its backup's newest round, and reuse ids Postgres already holds for other
 * rounds, their bets and payouts. So the leader reads Postgres's newest round id once per lease,
 * and again whenever a step finds Redis holding no round at all after it held some, and the
 * planner opens above it (tp_planner_config.id_floor); round_boundary.lua checks the same rule.
 *
 * The read starts with the lease, and a step whose snapshot comes before its answer waits for
 * it (FLOOR_WAIT_MS at most; the answer starts the step again): a Redis restored from an older
 * backup has its newest round's lock long past, so the new leader's first step would otherwise
 * open that round's id + 1 at once, before Postgres could say it holds it.
 *
 * Postgres learns rounds only from Redis's outbox, so it is behind Redis in the normal course
 * and the floor changes nothing. While the floor is not known (Postgres unreachable) the game
 * goes on from Redis's newest round once FLOOR_WAIT_MS has passed; only when Redis holds none
 * does no round open until Postgres answers, logged at error. Without postgres.url there is no
 * floor (0, known).
 */
#include "leader_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"
#include "tickpool/store/pg.h"
#include "tickpool/store/pgr.h"

#define MOD "leader"
/* A failed read is tried again this much later (the step runs every 250 ms). */
#define RETRY_MS 1000
/* While no round can open for want of the floor, the error is logged this often. */
#define WAITING_LOG_MS 10000
/* Steps wait this long at most for a read's answer (Postgres answers in a millisecond or two;
 * an unreachable one fails its connect fast, and the step goes on without waiting). */
#define FLOOR_WAIT_MS 2000

static void on_floor(int err, const struct tp_pg_result *res, void *ud)
{
    struct tp_leader *l = ud;
    l->floor.busy = false;
    if (err == TP_ECLOSED)
        return; /* the process exits */
    int64_t max = -1;
    if (err == 0 && (tp_pg_result_rows(res) != 1 || tp_pg_result_int64(res, 0, 0, &max) != 0))
        err = TP_EIO;
    if (err != 0 || max < 0) {
        l->floor.retry_at_ms = tp_mono_ms() + RETRY_MS;
        if (!l->floor.warned) /* once a lease: the reads go on every second */
            tp_log_warn(MOD,
                        "could not read the newest round id from Postgres (trying again "
                        "every second)\terr=%s",
                        tp_strerror(err != 0 ? err : TP_EIO));
        l->floor.warned = true;
        return;
    }
    if (!l->leader || l->floor.epoch != l->epoch)
        return; /* read for an earlier lease: the next step reads again */
    l->pc.id_floor = max;
    l->pc.floor_unknown = false;
    l->floor.answered = true; /* the next step compares it with its snapshot */
    tp_leader_step_now(l);    /* a step may have waited for this answer */
}

static void floor_read(struct tp_leader *l, int64_t now)
{
    struct tp_pgr *pgr = tp_pgr_of(l->w);
    if (pgr == NULL || l->floor.busy || now < l->floor.retry_at_ms)
        return;
    l->floor.busy = true;
    l->floor.epoch = l->epoch;
    if (tp_pgr_query(pgr, "SELECT coalesce(max(id), 0) FROM rounds", 0, NULL, on_floor, l) != 0) {
        l->floor.busy = false;
        l->floor.retry_at_ms = now + RETRY_MS;
    }
}

void tp_leader_floor_lease(struct tp_leader *l)
{
    l->pc.id_floor = 0;
    l->pc.floor_unknown = tp_pgr_of(l->w) != NULL;
    l->floor.saw_rounds = false;
    l->floor.warned = false;
    l->floor.answered = false;
    l->floor.blind_id = 0;
    l->floor.retry_at_ms = 0;
    l->floor.unknown_ms = tp_mono_ms();
    if (l->pc.floor_unknown)
        floor_read(l, l->floor.unknown_ms);
}

/* A read answered: how it compares with this step's snapshot, logged once; and whether a round
 * opened meanwhile (the wait given up: Postgres slower than FLOOR_WAIT_MS) took an id Postgres
 * already held, which only an operator can mend. */
static void log_answer(struct tp_leader *l)
{
    if (l->floor.blind_id > 0 && l->floor.blind_id <= l->pc.id_floor)
        tp_log_error(MOD,
                     "round opened before Postgres's newest round id was known is not above it "
                     "(its id may be another round's there)\tround=%lld postgres_newest=%lld",
                     (long long)l->floor.blind_id, (long long)l->pc.id_floor);
    l->floor.blind_id = 0;
    int64_t newest = l->nsnap > 0 ? l->snap[l->nsnap - 1].r.id : 0;
    if (l->pc.id_floor > newest)
        tp_log_warn(MOD,
                    "Postgres holds rounds above Redis's newest: the next round opens above "
                    "them\tpostgres_newest=%lld redis_newest=%lld next=%lld",
                    (long long)l->pc.id_floor, (long long)newest, (long long)l->pc.id_floor + 1);
    else
        tp_log_info(MOD, "round ids checked against Postgres\tpostgres_newest=%lld",
                    (long long)l->pc.id_floor);
}

bool tp_leader_floor_step(struct tp_leader *l)
{
    if (tp_pgr_of(l->w) == NULL)
        return false;
    if (l->nsnap > 0) {
        l->floor.saw_rounds = !l->pc.floor_unknown;
    } else if (l->floor.saw_rounds) {
        /* Redis held rounds since the floor was read and holds none now: they were lost, and
         * Postgres may have learned some of them since. */
        l->floor.saw_rounds = false;
        l->pc.floor_unknown = true;
        l->floor.unknown_ms = tp_mono_ms();
        tp_log_error(MOD, "Redis holds no round any more: reading the newest round id from "
                          "Postgres before the next round opens");
    }
    if (l->floor.answered && !l->pc.floor_unknown) {
        l->floor.answered = false;
        log_answer(l);
    }
    if (!l->pc.floor_unknown)
        return false;
    int64_t now = tp_mono_ms(), waited = now - l->floor.unknown_ms;
    if (l->nsnap == 0 && !l->pc.paused && waited >= FLOOR_WAIT_MS &&
        now - l->floor.waiting_logged_ms >= WAITING_LOG_MS) {
        l->floor.waiting_logged_ms = now;
        tp_log_error(MOD, "no round opens: Redis holds no round and Postgres's newest round id "
                          "is not known yet (Postgres unreachable?)");
    }
    floor_read(l, now);
    /* With no round in Redis the planner opens nothing meanwhile; with rounds, the step waits
     * for the answer a little, then goes on from Redis's newest. */
    return l->nsnap > 0 && l->floor.busy && waited < FLOOR_WAIT_MS;
}
