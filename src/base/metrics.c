/*
 * Process-shared metrics (see include/tickpool/base/metrics.h).
 *
 * Layout: one MAP_SHARED|MAP_ANONYMOUS region created before fork, `nslots` slots of
 * TP_METRIC_COUNT_ int64 values each, every slot padded to a multiple of 64 bytes so two
 * processes never write the same cache line (no false sharing on the hot counters). A process
 * writes only its own slot; a reader sums all slots. Relaxed atomics are enough: each value is
 * independent, we only need untorn 64-bit loads and stores and lossless increments when several
 * threads of one process share a slot; no ordering between metrics is promised.
 */
#include "tickpool/base/metrics.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

#include <string.h>
#include <sys/mman.h>

#define CACHE_LINE 64
#define SLOT_VALUES                                                                                \
    (((TP_METRIC_COUNT_ * sizeof(int64_t) + CACHE_LINE - 1) / CACHE_LINE) * CACHE_LINE /           \
     sizeof(int64_t))

struct desc {
    const char *name;
    const char *type;
    const char *help;
};

static const struct desc descs[TP_METRIC_COUNT_] = {
#define DESC_(id, name, type, help) [TP_METRIC_##id] = {#name, #type, help},
    TP_METRICS_LIST(DESC_)
#undef DESC_
};

/* Before tp_metrics_init: a private slot, so unit tests and the CLI can call everything. */
static int64_t private_slot[SLOT_VALUES] __attribute__((aligned(CACHE_LINE)));

static int64_t *region = private_slot; /* slot 0 */
static int nslots = 1;
static int64_t *mine = private_slot; /* the slot this process writes */
static size_t region_len;            /* 0 = private */

int tp_metrics_init(int n)
{
    if (n < 1 || n > 65536)
        return TP_EINVAL;
    size_t len = (size_t)n * SLOT_VALUES * sizeof(int64_t);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return TP_ENOMEM;
    /* Re-init (tests): drop the previous region; nothing else holds pointers into it. */
    if (region_len != 0)
        munmap(region, region_len);
    region = p; /* mmap memory is zeroed and page-aligned, hence cache-line aligned */
    region_len = len;
    nslots = n;
    mine = region;
    return 0;
}

void tp_metrics_attach(int slot)
{
    if (region_len == 0)
        return;
    TP_ASSERT(slot >= 0 && slot < nslots);
    mine = region + (size_t)slot * SLOT_VALUES;
}

void tp_metrics_reset_gauges(int slot)
{
    if (slot < 0 || slot >= nslots)
        return;
    int64_t *s = region + (size_t)slot * SLOT_VALUES;
    for (int m = 0; m < TP_METRIC_COUNT_; m++)
        if (strcmp(descs[m].type, "gauge") == 0)
            __atomic_store_n(&s[m], 0, __ATOMIC_RELAXED);
}

void tp_metrics_inc(enum tp_metric m)
{
    TP_ASSERT((unsigned)m < TP_METRIC_COUNT_);
    __atomic_fetch_add(&mine[m], 1, __ATOMIC_RELAXED);
}

void tp_metrics_add(enum tp_metric m, int64_t v)
{
    TP_ASSERT((unsigned)m < TP_METRIC_COUNT_);
    __atomic_fetch_add(&mine[m], v, __ATOMIC_RELAXED);
}

void tp_metrics_set(enum tp_metric m, int64_t v)
{
    TP_ASSERT((unsigned)m < TP_METRIC_COUNT_);
    __atomic_store_n(&mine[m], v, __ATOMIC_RELAXED);
}

int64_t tp_metrics_get_total(enum tp_metric m)
{
    TP_ASSERT((unsigned)m < TP_METRIC_COUNT_);
    /* Unsigned sum: wraps instead of signed-overflow UB on absurd values. */
    uint64_t sum = 0;
    for (int i = 0; i < nslots; i++)
        sum += (uint64_t)__atomic_load_n(&region[(size_t)i * SLOT_VALUES + m], __ATOMIC_RELAXED);
    return (int64_t)sum;
}

void tp_metrics_render(struct tp_buf *out)
{
    for (int m = 0; m < TP_METRIC_COUNT_; m++) {
        const struct desc *d = &descs[m];
        tp_buf_printf(out, "# HELP tickpool_%s %s\n# TYPE tickpool_%s %s\ntickpool_%s %lld\n",
                      d->name, d->help, d->name, d->type, d->name,
                      (long long)tp_metrics_get_total((enum tp_metric)m));
    }
}
