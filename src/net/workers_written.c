/* The boundary each worker of a host has written (see tickpool/net/workers_written.h). Relaxed
 * atomics: each word has one writer, and a reader that sees a word late only holds a step
 * longer, within its bound. */
#include "tickpool/net/workers_written.h"

#include "tickpool/base/common.h"

#include <stdatomic.h>
#include <sys/mman.h>

static _Atomic int64_t *table;
static int nworkers;

int tp_workers_written_init(int n)
{
    TP_ASSERT(n > 0);
    void *p = mmap(NULL, sizeof(*table) * (size_t)n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return TP_ENOMEM;
    table = p; /* zero-filled: nothing written */
    nworkers = n;
    return 0;
}

void tp_workers_written_set(int index, int64_t t_ms)
{
    if (table == NULL || index < 0 || index >= nworkers)
        return;
    if (atomic_load_explicit(&table[index], memory_order_relaxed) < t_ms)
        atomic_store_explicit(&table[index], t_ms, memory_order_relaxed);
}

bool tp_workers_written_all(int64_t t_ms)
{
    for (int i = 0; i < nworkers; i++)
        if (atomic_load_explicit(&table[i], memory_order_relaxed) < t_ms)
            return false;
    return true;
}
