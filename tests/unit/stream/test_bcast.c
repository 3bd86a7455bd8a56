/* Unit tests for when a worker's broadcaster (src/stream/bcast.c, included for its statics) marks a
 * boundary written for the leader's hold (tickpool/net/workers_written.h): after its writes, not on
 * receipt, and after the pair's second message (the round opening at T), not its first (the round
 * locked at T), including when many announcements arrive at once. A real worker (tp_worker_main in
 * a child process, no listener, no Redis), its messages handed to tp_bcast_dispatch as the
 * subscriber would; the child's exit code names the first check that failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../../src/stream/bcast.c"

#include "../worker_exit.h"

#include <signal.h>

#define PHASE_MS 30000
#define T(k) ((int64_t)(k)*PHASE_MS) /* boundary k */

static bool never_ready(const struct tp_conn *c)
{
    (void)c;
    return false;
}

static int64_t no_user(const struct tp_conn *c)
{
    (void)c;
    return 0;
}

static void no_resync(struct tp_worker *w)
{
    (void)w;
}

static const struct tp_bcast_sessions test_sessions = {never_ready, no_user, no_resync};

/* Round `id`, open from boundary id - 1: the round locked at T(k) is round k, the one opening
 * at T(k) round k + 1. */
static void round_of(struct tp_game_round *r, int64_t id, enum tp_round_state st)
{
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->state = st;
    r->t = (struct tp_round_times){T(id - 1), T(id), T(id + 1)};
    snprintf(r->seed_hash, sizeof(r->seed_hash), "%064d", 7);
    r->winning_band = -1;
    r->edges[0] = -10;
    r->edges[1] = 10;
    r->n_edges = 2;
    r->betting_ms = r->tick_ms = PHASE_MS;
}

/* The `round` message of boundary k's pair: the round locked at T(k) (`open` false) or the one
 * opening at T(k), each with the pair, as the leader publishes them. */
static void dispatch_pair_message(struct tp_worker *w, int k, bool open)
{
    struct tp_game_round live, opened;
    round_of(&live, k, TP_ROUND_LIVE);
    round_of(&opened, k + 1, TP_ROUND_OPEN);
    struct tp_buf b;
    tp_buf_init(&b);
    tp_protocol_round(&b, open ? &opened : &live, &opened, &live);
    tp_bcast_dispatch(w, (const uint8_t *)tp_buf_ptr(&b), tp_buf_size(&b));
    tp_buf_deinit(&b);
}

static int step;
static ev_timer next_turn;

static void check(bool ok, int code)
{
    if (!ok)
        _exit(code);
}

/* Each step runs in a later loop iteration than the one before, so the worker's prepare hooks
 * (its writes, then the broadcaster's observation) ran in between. */
static void on_turn(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct tp_worker *w = t->data;
    switch (step++) {
    case 0:
        /* Boundary 1's locked round alone (its open comes in a later read): not marked. */
        check(!tp_workers_written_all(T(1)), 10);
        break;
    case 1:
        dispatch_pair_message(w, 1, true);
        check(!tp_workers_written_all(T(1)), 11); /* handed, not yet written */
        break;
    case 2:
        check(tp_workers_written_all(T(1)), 12);
        /* Three boundaries at once (a leader catching up): six messages, more than the
         * broadcaster observes one by one. */
        for (int k = 2; k <= 4; k++) {
            dispatch_pair_message(w, k, false);
            dispatch_pair_message(w, k, true);
        }
        check(!tp_workers_written_all(T(2)), 13); /* none written before the loop writes */
        break;
    case 3:
        check(tp_workers_written_all(T(4)), 14);
        raise(SIGTERM); /* the worker drains and exits 0 */
        return;
    }
    ev_timer_start(loop, t);
}

static void start_steps(struct tp_worker *w, void *ud)
{
    (void)ud;
    dispatch_pair_message(w, 1, false);
    ev_timer_init(&next_turn, on_turn, 0.0, 0.0);
    next_turn.data = w;
    ev_timer_start(tp_worker_loop(w), &next_turn);
}

/* The broadcaster has no exit hook (announcements in flight on the worker's store point at
 * it): this one frees what it holds here (no subscriber, nothing in flight), so that
 * LeakSanitizer sees a clean exit. */
static void free_bcast(struct tp_worker *w, void *ud)
{
    (void)ud;
    free(bcast_of(w));
    tp_worker_slot_set(w, slot, NULL);
}

static void install(struct tp_config *cfg)
{
    /* No Redis: the broadcaster's subscriber store refuses the empty redis.url, which it says on
     * stderr; the messages come from the test instead. */
    cfg->redis.url[0] = '\0';
    if (freopen("/dev/null", "w", stderr) == NULL)
        _exit(2);
    if (tp_workers_written_init(1) != 0)
        _exit(3);
    tp_bcast_install(&test_sessions);
    tp_worker_on_init(start_steps, NULL);
    tp_worker_on_exit(free_bcast, NULL);
}

static void test_boundary_marked_once_written(void **state)
{
    (void)state;
    worker_exit_run(install);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary_marked_once_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
