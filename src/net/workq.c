/*
 * Thread pool with loop completions (see tickpool/net/workq.h). One mutex guards two FIFO lists:
 * `todo` (waiting for a thread) and `done` (finished, waiting for the loop). A finished job
 * moves to `done` and signals the ev_async; the async callback drains `done` on the loop thread.
 * ev_async_send is the one libev call that is safe from another thread.
 */
#include "tickpool/net/workq.h"
#include "tickpool/base/common.h"

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct job {
    struct job *next;
    tp_workq_fn work;
    tp_workq_done done;
    void *ud;
};

struct list {
    struct job *head, *tail;
};

struct tp_workq {
    struct ev_loop *loop;
    ev_async async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct list todo, done;
    int queued, max_queued, nthreads;
    bool stop;
    pthread_t *threads;
};

static void push(struct list *l, struct job *j)
{
    j->next = NULL;
    if (l->tail != NULL)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct job *pop_all(struct list *l)
{
    struct job *h = l->head;
    l->head = l->tail = NULL;
    return h;
}

static void *run(void *arg)
{
    struct tp_workq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && q->todo.head == NULL)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop)
            break;
        struct job *j = q->todo.head;
        q->todo.head = j->next;
        if (q->todo.head == NULL)
            q->todo.tail = NULL;
        q->queued--;
        pthread_mutex_unlock(&q->mu);
        j->work(j->ud);
        pthread_mutex_lock(&q->mu);
        push(&q->done, j);
        ev_async_send(q->loop, &q->async);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void complete(struct job *j, int err)
{
    while (j != NULL) {
        struct job *next = j->next;
        j->done(err, j->ud);
        free(j);
        j = next;
    }
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_workq *q = w->data;
    pthread_mutex_lock(&q->mu);
    struct job *j = pop_all(&q->done);
    pthread_mutex_unlock(&q->mu);
    complete(j, 0);
}

struct tp_workq *tp_workq_new(struct ev_loop *loop, int nthreads, int max_queued)
{
    TP_ASSERT(nthreads >= 1 && max_queued >= 1);
    struct tp_workq *q = tp_xcalloc(1, sizeof(*q));
    q->loop = loop;
    q->max_queued = max_queued;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    ev_async_init(&q->async, on_async);
    q->async.data = q;
    ev_async_start(loop, &q->async);
    /* The async watcher must not keep a draining loop alive on its own. */
    ev_unref(loop);
    q->threads = tp_xcalloc((size_t)nthreads, sizeof(*q->threads));
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&q->threads[i], NULL, run, q) != 0)
            break;
        q->nthreads++;
    }
    TP_ASSERT(q->nthreads >= 1);
    return q;
}

void tp_workq_free(struct tp_workq *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    /* Threads are gone: finished jobs complete normally, unstarted ones as closed. */
    complete(pop_all(&q->done), 0);
    complete(pop_all(&q->todo), TP_ECLOSED);
    ev_ref(q->loop);
    ev_async_stop(q->loop, &q->async);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
}

int tp_workq_submit(struct tp_workq *q, tp_workq_fn work, tp_workq_done done, void *ud)
{
    struct job *j = tp_xmalloc(sizeof(*j));
    j->work = work;
    j->done = done;
    j->ud = ud;
    pthread_mutex_lock(&q->mu);
    if (q->queued >= q->max_queued) {
        pthread_mutex_unlock(&q->mu);
        free(j);
        return TP_EAGAIN;
    }
    push(&q->todo, j);
    q->queued++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}
