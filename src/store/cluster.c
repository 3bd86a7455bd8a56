/*
 * Redis Cluster rules (include/tickpool/store/cluster.h): pure functions over bytes and replies,
 * so that every routing decision is unit-tested without a cluster.
 */
#include "tickpool/store/cluster.h"

#include "tickpool/base/common.h"
#include "tickpool/store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 500
/* A slot in migration is done when its last key has moved: look again soon. */
#define BACKOFF_MIGRATING_MAX_MS 100

/* --- Slots --- */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the hash Redis Cluster specifies. */
static uint16_t crc16(const char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((uint8_t)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

int tp_cluster_slot(const char *key, size_t len)
{
    /* The hash tag is the text between the first '{' and the next '}', when not empty. */
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t at = (size_t)(open - key) + 1;
        const char *close = memchr(key + at, '}', len - at);
        if (close != NULL && close > key + at)
            return crc16(key + at, (size_t)(close - (key + at))) % TP_CLUSTER_SLOTS;
    }
    return crc16(key, len) % TP_CLUSTER_SLOTS;
}

static bool word_is(const char *w, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(w, name, n) == 0;
}

/* Commands without a key: any master answers them (PUBLISH reaches every node of a cluster). */
static bool keyless(const char *w, size_t n)
{
    static const char *const names[] = {"PING",   "ECHO",     "INFO",     "TIME",    "PUBLISH",
                                        "SCRIPT", "CLUSTER",  "CLIENT",   "CONFIG",  "COMMAND",
                                        "DBSIZE", "WAIT",     "AUTH",     "HELLO",   "SELECT",
                                        "ROLE",   "LASTSAVE", "FLUSHALL", "FLUSHDB", "MEMORY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (word_is(w, n, names[i]))
            return true;
    return false;
}

/* The slot of keys argv[from .. from+count), TP_CLUSTER_CROSS when they differ. */
static int slot_of_keys(const char *const *argv, const size_t *len, int from, int count)
{
    int slot = TP_CLUSTER_ANY;
    for (int i = from; i < from + count; i++) {
        int s = tp_cluster_slot(argv[i], len[i]);
        if (slot != TP_CLUSTER_ANY && s != slot)
            return TP_CLUSTER_CROSS;
        slot = s;
    }
    return slot;
}

/* SCAN's MATCH pattern routes by its hash tag (a pattern with a tag names keys of one slot, as
 * the audit's per-bucket scans do); a pattern without one has no single node. */
static int scan_slot(int argc, const char *const *argv, const size_t *len)
{
    for (int i = 2; i + 1 < argc; i++)
        if (word_is(argv[i], len[i], "MATCH")) {
            const char *p = argv[i + 1];
            size_t n = len[i + 1];
            const char *open = memchr(p, '{', n);
            const char *close = open ? memchr(open, '}', n - (size_t)(open - p)) : NULL;
            if (close == NULL || close == open + 1 || memchr(open, '*', (size_t)(close - open)) ||
                memchr(open, '?', (size_t)(close - open)) ||
                memchr(open, '[', (size_t)(close - open)))
                return TP_CLUSTER_ANY;
            return tp_cluster_slot(p, n);
        }
    return TP_CLUSTER_ANY;
}

int tp_cluster_command_slot(int argc, const char *const *argv, const size_t *len)
{
    if (argc < 1 || keyless(argv[0], len[0]))
        return TP_CLUSTER_ANY;
    if (word_is(argv[0], len[0], "EVAL") || word_is(argv[0], len[0], "EVALSHA") ||
        word_is(argv[0], len[0], "EVAL_RO") || word_is(argv[0], len[0], "EVALSHA_RO") ||
        word_is(argv[0], len[0], "FCALL")) {
        if (argc < 3)
            return TP_CLUSTER_ANY;
        char nk[16];
        size_t n = TP_MIN(len[2], sizeof(nk) - 1);
        memcpy(nk, argv[2], n);
        nk[n] = '\0';
        long k = strtol(nk, NULL, 10);
        if (k <= 0 || k > argc - 3)
            return TP_CLUSTER_ANY;
        return slot_of_keys(argv, len, 3, (int)k);
    }
    if (word_is(argv[0], len[0], "XREAD") || word_is(argv[0], len[0], "XREADGROUP")) {
        for (int i = 1; i < argc; i++)
            if (word_is(argv[i], len[i], "STREAMS")) {
                int rest = argc - i - 1;
                if (rest < 2 || rest % 2 != 0)
                    return TP_CLUSTER_ANY;
                return slot_of_keys(argv, len, i + 1, rest / 2);
            }
        return TP_CLUSTER_ANY;
    }
    if (word_is(argv[0], len[0], "XGROUP") || word_is(argv[0], len[0], "XINFO") ||
        word_is(argv[0], len[0], "OBJECT"))
        return argc > 2 ? tp_cluster_slot(argv[2], len[2]) : TP_CLUSTER_ANY;
    if (word_is(argv[0], len[0], "SCAN"))
        return scan_slot(argc, argv, len);
    return argc > 1 ? tp_cluster_slot(argv[1], len[1]) : TP_CLUSTER_ANY;
}

/* Reads "<digits>\r\n" at *p (at most `end`); returns the number or -1. */
static long resp_number(const char **p, const char *end)
{
    long v = 0;
    const char *q = *p;
    if (q >= end || *q < '0' || *q > '9')
        return -1;
    while (q < end && *q >= '0' && *q <= '9') {
        if (v > 100000000L)
            return -1;
        v = v * 10 + (*q++ - '0');
    }
    if (end - q < 2 || q[0] != '\r' || q[1] != '\n')
        return -1;
    *p = q + 2;
    return v;
}

int tp_cluster_resp_argv(const char *buf, size_t len, const char **argv, size_t *lens, int max)
{
    const char *p = buf, *end = buf + len;
    if (len < 1 || *p++ != '*')
        return TP_EINVAL;
    long n = resp_number(&p, end);
    if (n < 1 || n > max)
        return TP_EINVAL;
    for (long i = 0; i < n; i++) {
        if (p >= end || *p++ != '$')
            return TP_EINVAL;
        long l = resp_number(&p, end);
        if (l < 0 || end - p < l + 2 || p[l] != '\r' || p[l + 1] != '\n')
            return TP_EINVAL;
        argv[i] = p;
        lens[i] = (size_t)l;
        p += l + 2;
    }
    return p == end ? (int)n : TP_EINVAL;
}

/* --- Slot map --- */

void tp_cluster_map_init(struct tp_cluster_map *m)
{
    memset(m->owner, 0, sizeof(m->owner));
    m->nnodes = 0;
}

int tp_cluster_map_node(struct tp_cluster_map *m, const char *host, int port)
{
    for (size_t i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return (int)i;
    if (m->nnodes >= TP_CLUSTER_MAX_NODES || strlen(host) >= TP_CLUSTER_HOST_MAX)
        return TP_ETOOBIG;
    struct tp_cluster_node *n = &m->nodes[m->nnodes];
    memset(n, 0, sizeof(*n));
    memcpy(n->host, host, strlen(host) + 1);
    n->port = port;
    return (int)m->nnodes++;
}

/* host:port of a node entry [host, port, id, …]; an empty host is `asked`. */
static int node_entry(const struct tp_store_reply *e, const char *asked, const char **host,
                      int *port)
{
    if (tp_reply_type(e) != TP_REPLY_ARRAY || tp_reply_len(e) < 2 ||
        tp_reply_type(tp_reply_at(e, 0)) != TP_REPLY_STRING ||
        tp_reply_type(tp_reply_at(e, 1)) != TP_REPLY_INTEGER)
        return TP_EPROTO;
    size_t hl;
    *host = tp_reply_str(tp_reply_at(e, 0), &hl);
    if (hl == 0 || strcmp(*host, "?") == 0)
        *host = asked;
    long long p = tp_reply_integer(tp_reply_at(e, 1));
    if (p <= 0 || p > 65535 || strlen(*host) >= TP_CLUSTER_HOST_MAX)
        return TP_EPROTO;
    *port = (int)p;
    return 0;
}

int tp_cluster_map_parse(struct tp_cluster_map *out, const struct tp_store_reply *r,
                         const char *asked)
{
    if (r == NULL || tp_reply_type(r) != TP_REPLY_ARRAY)
        return TP_EPROTO;
    struct tp_cluster_map *m = tp_xmalloc(sizeof(*m));
    tp_cluster_map_init(m);
    int rc = 0;
    for (size_t i = 0; i < tp_reply_len(r) && rc == 0; i++) {
        const struct tp_store_reply *range = tp_reply_at(r, i);
        if (tp_reply_type(range) != TP_REPLY_ARRAY || tp_reply_len(range) < 3 ||
            tp_reply_type(tp_reply_at(range, 0)) != TP_REPLY_INTEGER ||
            tp_reply_type(tp_reply_at(range, 1)) != TP_REPLY_INTEGER) {
            rc = TP_EPROTO;
            break;
        }
        long long lo = tp_reply_integer(tp_reply_at(range, 0));
        long long hi = tp_reply_integer(tp_reply_at(range, 1));
        if (lo < 0 || hi < lo || hi >= TP_CLUSTER_SLOTS) {
            rc = TP_EPROTO;
            break;
        }
        for (size_t j = 2; j < tp_reply_len(range) && rc == 0; j++) {
            const char *host;
            int port, idx;
            if ((rc = node_entry(tp_reply_at(range, j), asked, &host, &port)) != 0)
                break;
            if ((idx = tp_cluster_map_node(m, host, port)) < 0) {
                rc = idx;
                break;
            }
            if (j == 2) { /* the first node of a range is its master */
                m->nodes[idx].master = true;
                for (long long s = lo; s <= hi; s++)
                    m->owner[s] = (uint16_t)(idx + 1);
            }
        }
    }
    if (rc == 0)
        memcpy(out, m, sizeof(*m));
    free(m);
    return rc;
}

const struct tp_cluster_node *tp_cluster_map_route(const struct tp_cluster_map *m, int slot)
{
    if (slot < 0 || slot >= TP_CLUSTER_SLOTS || m->owner[slot] == 0)
        return NULL;
    return &m->nodes[m->owner[slot] - 1];
}

int tp_cluster_map_covered(const struct tp_cluster_map *m)
{
    int n = 0;
    for (int s = 0; s < TP_CLUSTER_SLOTS; s++)
        n += m->owner[s] != 0;
    return n;
}

int tp_cluster_map_move(struct tp_cluster_map *m, const struct tp_cluster_redirect *rd)
{
    if (rd->slot < 0 || rd->slot >= TP_CLUSTER_SLOTS)
        return TP_EINVAL;
    int idx = tp_cluster_map_node(m, rd->host, rd->port);
    if (idx < 0)
        return idx;
    m->nodes[idx].master = true;
    m->owner[rd->slot] = (uint16_t)(idx + 1);
    return 0;
}

/* --- Cluster errors --- */

static bool starts(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n >= w && memcmp(s, word, w) == 0 && (n == w || s[w] == ' ');
}

/* "<slot> <host>:<port>" after MOVED/ASK; the host may be an IPv6 address (last ':' splits). */
static bool parse_target(const char *s, size_t n, struct tp_cluster_redirect *out)
{
    char tmp[TP_CLUSTER_HOST_MAX + 32];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    long slot = strtol(tmp, &end, 10);
    if (end == tmp || *end != ' ' || slot < 0 || slot >= TP_CLUSTER_SLOTS)
        return false;
    char *addr = end + 1;
    char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr)
        return false;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port <= 0 || port > 65535)
        return false;
    *colon = '\0';
    if (strlen(addr) >= TP_CLUSTER_HOST_MAX)
        return false;
    memcpy(out->host, addr, strlen(addr) + 1);
    out->slot = (int)slot;
    out->port = (int)port;
    return true;
}

enum tp_cluster_error tp_cluster_redirect_parse(const char *err, size_t len,
                                                struct tp_cluster_redirect *out)
{
    memset(out, 0, sizeof(*out));
    out->slot = -1;
    if (starts(err, len, "MOVED") && parse_target(err + 6, len - TP_MIN(len, 6), out))
        out->kind = TP_CLUSTER_MOVED;
    else if (starts(err, len, "ASK") && parse_target(err + 4, len - TP_MIN(len, 4), out))
        out->kind = TP_CLUSTER_ASK;
    else if (starts(err, len, "TRYAGAIN"))
        out->kind = TP_CLUSTER_TRYAGAIN;
    else if (starts(err, len, "CLUSTERDOWN"))
        out->kind = TP_CLUSTER_CLUSTERDOWN;
    if (out->kind != TP_CLUSTER_MOVED && out->kind != TP_CLUSTER_ASK) {
        out->slot = -1;
        out->host[0] = '\0';
        out->port = 0;
    }
    return out->kind;
}

/* 10 ms doubled for the n-th answer of a kind (n >= 1), at most `max`. */
static int backoff_ms(int n, int max)
{
    int ms = BACKOFF_FIRST_MS;
    for (int i = 1; i < n && ms < max; i++)
        ms *= 2;
    return TP_MIN(ms, max);
}

struct tp_cluster_decision tp_cluster_decide(const struct tp_cluster_redirect *rd,
                                             struct tp_cluster_tries *t)
{
    struct tp_cluster_decision d = {.action = TP_CLUSTER_DELIVER};
    enum tp_cluster_error last = t->last;
    t->last = rd->kind;
    switch (rd->kind) {
    case TP_CLUSTER_OK:
        break;
    case TP_CLUSTER_MOVED:
    case TP_CLUSTER_CLUSTERDOWN:
        if (++t->redirects >= TP_CLUSTER_MAX_REDIRECTS)
            break;
        d.refresh = true;
        if (rd->kind == TP_CLUSTER_MOVED) {
            d.action = TP_CLUSTER_RESEND;
            d.update = true;
        } else {
            d.action = TP_CLUSTER_LATER;
            d.delay_ms = backoff_ms(t->redirects, BACKOFF_MAX_MS);
        }
        break;
    case TP_CLUSTER_ASK:
    case TP_CLUSTER_TRYAGAIN:
        /* Not bounded by a count (struct tp_cluster_tries); the count only grows the back-off. */
        if (t->migrating < 1000)
            t->migrating++;
        if (rd->kind == TP_CLUSTER_ASK && last != TP_CLUSTER_ASK) {
            d.action = TP_CLUSTER_RESEND;
            d.asking = true;
        } else {
            d.action = TP_CLUSTER_LATER;
            d.delay_ms = backoff_ms(t->migrating, BACKOFF_MIGRATING_MAX_MS);
        }
        break;
    }
    return d;
}
