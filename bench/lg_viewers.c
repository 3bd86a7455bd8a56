/*
 * loadgen viewers mode: accounts the broadcasts (tick, odds, round...) each anonymous socket
 * receives: message counts (beats, i.e. ticks, and how many of them carried odds), tick delivery
 * lag, the fan-out spread between sockets, and how long after its boundary T each `round`
 * message arrived.
 *
 * Tick lag and spread are taken at each message's arrival on the viewer's socket (the kernel's
 * receive time, SO_TIMESTAMPNS), not when this one thread gets round to reading it: reading
 * 10,000 sockets takes loadgen ~60 ms of CPU per beat on the bench's machine, which bounded
 * both figures for tickpool and the raw-fanout reference alike (bench/README.md "Viewers",
 * session 14). A `round` message's delay after its boundary T is taken the same way: at a
 * boundary this thread reads ~2,000 of them while the server is still writing, on the same CPUs
 * (bench/README.md "Boundaries", session 15). The read-time figures are kept beside them. Over
 * TLS there is no such stamp and the read time stands in. TCP merges messages that wait in a
 * socket, and a read of merged bytes carries the later arrival's time: a reader more than a
 * beat behind makes the arrival figures late, never early (such reads are counted:
 * beats_merged, rounds_merged).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include "lg.h"

/* Viewers: every broadcast reaches all sockets of a server worker as the same bytes, so each
 * distinct payload is decoded once and remembered with the time its first copy arrived (on any
 * socket). Later copies cost a hash and a memcmp, and their arrival minus the first one's is
 * the fan-out spread: how much later this socket got the message than the first socket did,
 * which needs no server timestamp (odds carry none). */
#define SEEN_N 64
/* `round` messages (a round and the current pair) are larger than beats: they are cached too,
 * or loadgen would decode each of their thousands of copies at a boundary and fall behind. */
#define SEEN_MAX_LEN 4096

struct seen {
    uint64_t hash, first_ns; /* first_ns: the first copy's read (monotonic) */
    size_t len;
    /* Arrival times (realtime ns) of its copies in the measured window: the spread is taken
     * from the earliest, known only once no copy is left to come (seen_flush). */
    uint64_t *rx;
    size_t nrx, caprx;
    int kind;   /* 0 tick, 1 odds, 2 round, 3 hello/snapshot, 4 other */
    bool odds;  /* a tick (beat) carrying odds */
    int64_t ts; /* tick ts, or a round message's boundary T (ms); -1 when none */
    char bytes[SEEN_MAX_LEN];
};

static struct seen seen[SEEN_N];
static unsigned seen_next;

uint64_t lg_viewer_rx_ns;

/* The current read (lg_viewer_read_begin): its beats in the window, and the `round` receipts
 * of boundary read_round_t it carried that nothing later has yet followed in it. */
static unsigned read_beats, read_rounds;
static int64_t read_round_t;

/* Records the spread of every arrival held for `e` (a tick's or odds message's copies) from the
 * earliest of them, and empties it. */
static void seen_flush(struct seen *e)
{
    if (e->nrx == 0)
        return;
    uint64_t first = e->rx[0];
    for (size_t i = 1; i < e->nrx; i++)
        if (e->rx[i] < first)
            first = e->rx[i];
    struct lg_hist *h = e->kind == 0 ? &lg_res.spread_tick : &lg_res.spread_odds;
    for (size_t i = 0; i < e->nrx; i++)
        lg_hist_record(h, (e->rx[i] - first) / 1000);
    e->nrx = 0;
}

static void seen_arrival(struct seen *e, uint64_t rx_ns)
{
    if (e->nrx == e->caprx) {
        e->caprx = e->caprx ? 2 * e->caprx : 1024;
        e->rx = realloc(e->rx, e->caprx * sizeof(*e->rx));
        if (e->rx == NULL)
            abort();
    }
    e->rx[e->nrx++] = rx_ns;
}

void lg_viewers_flush(void)
{
    for (unsigned i = 0; i < SEEN_N; i++)
        seen_flush(&seen[i]);
}

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static int kind_of(const char *t)
{
    return strcmp(t, "tick") == 0                                    ? 0
           : strcmp(t, "odds") == 0                                  ? 1
           : strcmp(t, "round") == 0                                 ? 2
           : (strcmp(t, "hello") == 0 || strcmp(t, "snapshot") == 0) ? 3
                                                                     : 4;
}

/* The boundary T a `round` message announces: an open round's opens_at, a live round's locks_at
 * (both happen at the same T); -1 for the other states (a close is announced at settlement). */
static int64_t round_boundary_ms(const struct tp_val *r)
{
    const char *st = NULL;
    int64_t t;
    if (tp_val_get_str(r, "state", &st, NULL) != 0)
        return -1;
    const char *f = strcmp(st, "open") == 0   ? "opens_at"
                    : strcmp(st, "live") == 0 ? "locks_at"
                                              : NULL;
    return f != NULL && tp_val_get_int(r, f, &t) == 0 ? t : -1;
}

/* Decodes a viewer message (or finds it among the recent ones); NULL when not MessagePack. */
static struct seen *viewer_decode(const char *p, size_t n, uint64_t now, struct seen *tmp)
{
    uint64_t h = fnv1a(p, n);
    bool cacheable = n <= SEEN_MAX_LEN;
    if (cacheable) {
        for (unsigned i = 0; i < SEEN_N; i++) {
            struct seen *e = &seen[(seen_next - 1 - i) & (SEEN_N - 1)];
            if (e->hash == h && e->len == n && memcmp(e->bytes, p, n) == 0)
                return e;
        }
    }
    struct tp_doc *doc = tp_doc_parse(TP_FMT_MSGPACK, p, n, NULL, 0);
    if (doc == NULL)
        return NULL;
    struct seen *e = cacheable ? &seen[seen_next++ & (SEEN_N - 1)] : tmp;
    if (cacheable)
        seen_flush(e); /* its copies have stopped coming: a newer message takes its place */
    else
        e->rx = NULL, e->nrx = e->caprx = 0;
    const char *t = NULL;
    if (tp_val_get_str(tp_doc_root(doc), "t", &t, NULL) != 0)
        t = "";
    e->hash = h;
    e->len = n;
    e->first_ns = now;
    e->kind = kind_of(t);
    if (e->kind == 2)
        e->ts = round_boundary_ms(tp_val_get(tp_doc_root(doc), "round"));
    else if (e->kind != 0 || tp_val_get_int(tp_doc_root(doc), "ts", &e->ts) != 0)
        e->ts = -1;
    e->odds = e->kind == 0 && tp_val_type(tp_val_get(tp_doc_root(doc), "odds")) == TP_VAL_MAP;
    if (cacheable)
        memcpy(e->bytes, p, n);
    tp_doc_free(doc);
    return e;
}

/* One receipt of the `round` message of boundary `t_ms`, `lag_us` after T at its arrival and
 * `read_us` at loadgen's read. A boundary's two messages (and late copies) may interleave with
 * the next one's: the newest few are searched. */
static void round_bound(int64_t t_ms, uint64_t lag_us, uint64_t read_us)
{
    struct lg_bound *b = NULL;
    for (int i = lg_res.nbounds - 1; i >= 0 && i >= lg_res.nbounds - 4; i--)
        if (lg_res.bounds[i].t_ms == t_ms)
            b = &lg_res.bounds[i];
    if (b == NULL) {
        if (lg_res.nbounds == LG_BOUNDS_MAX)
            return;
        b = &lg_res.bounds[lg_res.nbounds++];
        *b = (struct lg_bound){.t_ms = t_ms};
    }
    b->n++;
    if (lag_us > b->max_us)
        b->max_us = lag_us;
    if (read_us > b->read_max_us)
        b->read_max_us = read_us;
}

/* A `round` receipt's arrival is late when its read also carried something the server wrote
 * later: anything but the other message of its boundary's pair and the beat of T (both come in
 * the pair's write). Counted once, at the first such message. */
static void round_read_follow(const struct seen *e)
{
    if (read_rounds == 0 || ((e->kind == 2 || e->kind == 0) && e->ts == read_round_t))
        return;
    lg_res.rounds_merged += read_rounds;
    read_rounds = 0;
}

void lg_viewer_read_begin(void)
{
    read_beats = read_rounds = 0;
}

void lg_viewer_read_end(void)
{
    if (read_beats > 1)
        lg_res.beats_merged += read_beats;
}

static uint64_t lag_after(uint64_t at_us, int64_t t_ms)
{
    int64_t lag = (int64_t)at_us - t_ms * 1000;
    return lag > 0 ? (uint64_t)lag : 0;
}

void lg_viewer_message(const char *p, size_t n)
{
    uint64_t now = lg_mono_ns();
    struct seen tmp;
    struct seen *e = viewer_decode(p, n, now, &tmp);
    if (e == NULL) {
        lg_err_count("bad_msgpack");
        return;
    }
    lg_res.sec_msgs++;
    if (now < lg_t_meas || now >= lg_t_end)
        return;
    lg_res.msgs[e->kind]++;
    if (e->odds)
        lg_res.beats_odds++;
    if (e->kind == 0) {
        lg_res.beat_bytes += n;
        read_beats++;
    }
    uint64_t read_us = lg_wall_us();
    uint64_t rx_ns = lg_viewer_rx_ns != 0 ? lg_viewer_rx_ns : read_us * 1000;
    if (e->kind == 0 && e->ts >= 0) {
        uint64_t l = lag_after(rx_ns / 1000, e->ts);
        lg_hist_record(&lg_res.lat, l);
        if (lg_res.lag_min == 0 || l < lg_res.lag_min)
            lg_res.lag_min = l;
        lg_hist_record(&lg_res.lat_read, lag_after(read_us, e->ts));
    }
    round_read_follow(e);
    if (e->kind == 2 && e->ts > 0) {
        /* Every receipt counts (what each client sees); a boundary counts once, at its first. */
        uint64_t l = lag_after(rx_ns / 1000, e->ts), lr = lag_after(read_us, e->ts);
        lg_hist_record(&lg_res.round_lag, l);
        lg_hist_record(&lg_res.round_lag_read, lr);
        if (e->ts > lg_res.round_last_t) {
            lg_res.round_last_t = e->ts;
            lg_res.round_boundaries++;
        }
        round_bound(e->ts, l, lr);
        read_round_t = e->ts;
        read_rounds++;
    }
    if (e->kind <= 1) {
        if (e == &tmp) /* not cached (never a beat: they are small); no copies to compare */
            lg_hist_record(e->kind == 0 ? &lg_res.spread_tick : &lg_res.spread_odds, 0);
        else
            seen_arrival(e, rx_ns);
        if (e->kind == 0)
            lg_hist_record(&lg_res.spread_tick_read, (now - e->first_ns) / 1000);
    }
}
