/*
 * Process-shared metrics (see include/tickpool/base/metrics.h).
 *
 * Layout: one MAP_SHARED|MAP_ANONYMOUS region created before fork, `nslots` slots of
 * struct slot (the plain metrics, then one array of cells per family), every slot padded to a
 * multiple of 64 bytes so two processes never write the same cache line (no false sharing on the
 * hot counters). A process writes only its own slot; a reader sums all slots. Relaxed atomics are
 * enough: each value is independent, we only need untorn 64-bit loads and stores and lossless
 * increments when several threads of one process share a slot; no ordering between metrics is
 * promised.
 *
 * A histogram series is NBUCKETS + 1 per-bucket counts (the last is +Inf) and a sum in ns. Its
 * count is not stored: render derives it from the buckets, so `_count` always equals the +Inf
 * bucket and the cumulative buckets never decrease, even while workers are writing.
 */
#include "tickpool/base/metrics.h"
#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define CACHE_LINE 64

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

/* --- Families: label sets, buckets, slot layout --- */

struct label_set {
    const char *const *values;
    int n;
};

#define VALUE_(id, v) v,
#define SET_(SET)                                                                                  \
    static const char *const set_##SET[] = {TP_METRICS_SET_##SET(VALUE_)};                         \
    _Static_assert(sizeof(set_##SET) / sizeof(set_##SET[0]) == TP_METRICS_##SET##_COUNT_,          \
                   "label set " #SET);
SET_(NONE)
SET_(TRANSPORT)
SET_(BET_CODE)
SET_(REDIS_KIND)
SET_(ROUTE)
SET_(CLASS)
SET_(ROUND_STAGE)
SET_(IDEM_CHECK)
#undef SET_
#undef VALUE_

#define BOUND_US_(us, le) us,
#define BOUND_LE_(us, le) le,
static const int64_t bounds_us[] = {TP_METRICS_BUCKETS(BOUND_US_)};
static const char *const bounds_le[] = {TP_METRICS_BUCKETS(BOUND_LE_)};
#undef BOUND_US_
#undef BOUND_LE_
#define NBUCKETS ((int)TP_ARRAY_LEN(bounds_us))

/* Cells per series: 1 for a counter; the buckets, +Inf and the sum for a histogram. */
enum { CELLS_counter = 1, CELLS_histogram = TP_ARRAY_LEN(bounds_us) + 2 };

/* One process's values. The struct gives every family its offset at compile time. */
struct slot {
    int64_t plain[TP_METRIC_COUNT_];
#define CELLS_(id, name, type, help, l1, s1, l2, s2)                                               \
    int64_t id[TP_METRICS_##s1##_COUNT_ * TP_METRICS_##s2##_COUNT_ * CELLS_##type];
    TP_METRICS_FAMILIES(CELLS_)
#undef CELLS_
};

#define SLOT_VALUES                                                                                \
    (((sizeof(struct slot) + CACHE_LINE - 1) / CACHE_LINE) * CACHE_LINE / sizeof(int64_t))

struct family {
    const char *name;
    const char *help;
    bool histogram;
    size_t offset; /* in int64 cells from the start of a slot */
    const char *label[2];
    struct label_set set[2];
};

static const struct family fams[TP_METRIC_FAMILY_COUNT_] = {
#define FAM_(id, nm, type, hlp, l1, s1, l2, s2)                                                    \
    [TP_METRIC_FAMILY_##id] = {                                                                    \
        .name = #nm,                                                                               \
        .help = hlp,                                                                               \
        .histogram = CELLS_##type != 1,                                                            \
        .offset = offsetof(struct slot, id) / sizeof(int64_t),                                     \
        .label = {#l1, #l2},                                                                       \
        .set = {{set_##s1, TP_METRICS_##s1##_COUNT_}, {set_##s2, TP_METRICS_##s2##_COUNT_}},       \
    },
    TP_METRICS_FAMILIES(FAM_)
#undef FAM_
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
    /* Families hold only counters and histograms: nothing there to reset. */
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

/* --- Families --- */

/* The first cell of series (i, j) of family f in slot `s`, or NULL when out of range. */
static int64_t *cell(int64_t *s, enum tp_metric_family f, int i, int j)
{
    if ((unsigned)f >= TP_METRIC_FAMILY_COUNT_)
        return NULL;
    const struct family *fm = &fams[f];
    if (i < 0 || i >= fm->set[0].n || j < 0 || j >= fm->set[1].n)
        return NULL;
    size_t per = fm->histogram ? CELLS_histogram : 1;
    return s + fm->offset + ((size_t)i * (size_t)fm->set[1].n + (size_t)j) * per;
}

void tp_metrics_family_inc(enum tp_metric_family f, int i, int j)
{
    int64_t *c = cell(mine, f, i, j);
    if (c != NULL && !fams[f].histogram)
        __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

void tp_metrics_observe_ns(enum tp_metric_family f, int i, int64_t ns)
{
    int64_t *c = cell(mine, f, i, 0);
    if (c == NULL || !fams[f].histogram)
        return;
    if (ns < 0)
        ns = 0;
    int b = 0;
    while (b < NBUCKETS && ns > bounds_us[b] * 1000) /* le: upper bounds are inclusive */
        b++;
    __atomic_fetch_add(&c[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c[NBUCKETS + 1], ns, __ATOMIC_RELAXED);
}

int tp_metrics_label_index(enum tp_metric_family f, int dim, const char *value)
{
    if ((unsigned)f >= TP_METRIC_FAMILY_COUNT_ || dim < 0 || dim > 1 || value == NULL)
        return -1;
    const struct label_set *ls = &fams[f].set[dim];
    for (int i = 0; i < ls->n; i++)
        if (strcmp(ls->values[i], value) == 0)
            return i;
    return -1;
}

/* Sum over every slot of the value at `off` cells from the start of a slot. */
static int64_t sum_cell(size_t off)
{
    uint64_t sum = 0; /* unsigned: wraps instead of signed-overflow UB on absurd values */
    for (int s = 0; s < nslots; s++)
        sum += (uint64_t)__atomic_load_n(&region[(size_t)s * SLOT_VALUES + off], __ATOMIC_RELAXED);
    return (int64_t)sum;
}

int64_t tp_metrics_family_get(enum tp_metric_family f, int i, int j)
{
    int64_t *c = cell(region, f, i, j);
    if (c == NULL)
        return 0;
    size_t off = (size_t)(c - region);
    if (!fams[f].histogram)
        return sum_cell(off);
    int64_t n = 0;
    for (int b = 0; b <= NBUCKETS; b++)
        n += sum_cell(off + (size_t)b);
    return n;
}

/* Writes `name{l1="v1",l2="v2",le="x"} value` for series (i, j); `le` NULL when none. */
static void put_sample(struct tp_buf *out, const struct family *fm, const char *suffix, int i,
                       int j, const char *le, const char *value)
{
    tp_buf_printf(out, "tickpool_%s%s", fm->name, suffix);
    char sep = '{';
    for (int d = 0; d < 2; d++) {
        if (fm->label[d][0] == '\0')
            continue;
        tp_buf_printf(out, "%c%s=\"%s\"", sep, fm->label[d], fm->set[d].values[d == 0 ? i : j]);
        sep = ',';
    }
    if (le != NULL)
        tp_buf_printf(out, "%cle=\"%s\"", sep, le);
    tp_buf_printf(out, "%s %s\n", sep == '{' && le == NULL ? "" : "}", value);
}

static void render_series(struct tp_buf *out, enum tp_metric_family f, int i, int j)
{
    const struct family *fm = &fams[f];
    size_t off = (size_t)(cell(region, f, i, j) - region);
    char v[48];
    if (!fm->histogram) {
        snprintf(v, sizeof(v), "%lld", (long long)sum_cell(off));
        put_sample(out, fm, "", i, j, NULL, v);
        return;
    }
    int64_t cum = 0;
    for (int b = 0; b <= NBUCKETS; b++) {
        cum += sum_cell(off + (size_t)b);
        snprintf(v, sizeof(v), "%lld", (long long)cum);
        put_sample(out, fm, "_bucket", i, j, b < NBUCKETS ? bounds_le[b] : "+Inf", v);
    }
    int64_t ns = sum_cell(off + NBUCKETS + 1);
    snprintf(v, sizeof(v), "%lld.%09lld", (long long)(ns / 1000000000),
             (long long)(ns % 1000000000));
    put_sample(out, fm, "_sum", i, j, NULL, v);
    snprintf(v, sizeof(v), "%lld", (long long)cum);
    put_sample(out, fm, "_count", i, j, NULL, v);
}

void tp_metrics_render(struct tp_buf *out)
{
    for (int m = 0; m < TP_METRIC_COUNT_; m++) {
        const struct desc *d = &descs[m];
        tp_buf_printf(out, "# HELP tickpool_%s %s\n# TYPE tickpool_%s %s\ntickpool_%s %lld\n",
                      d->name, d->help, d->name, d->type, d->name,
                      (long long)tp_metrics_get_total((enum tp_metric)m));
    }
    for (int f = 0; f < TP_METRIC_FAMILY_COUNT_; f++) {
        const struct family *fm = &fams[f];
        tp_buf_printf(out, "# HELP tickpool_%s %s\n# TYPE tickpool_%s %s\n", fm->name, fm->help,
                      fm->name, fm->histogram ? "histogram" : "counter");
        for (int i = 0; i < fm->set[0].n; i++)
            for (int j = 0; j < fm->set[1].n; j++)
                render_series(out, (enum tp_metric_family)f, i, j);
    }
    tp_buf_printf(
        out,
        "# HELP tickpool_build_info The running build (version and git commit); always 1\n"
        "# TYPE tickpool_build_info gauge\n"
        "tickpool_build_info{version=\"%s\",commit=\"%s\"} 1\n",
        TP_VERSION, tp_build_commit());
}
