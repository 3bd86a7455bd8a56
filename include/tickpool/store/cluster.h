/*
 * Redis Cluster rules, pure: the key → slot hash (CRC16 with hash tags), which slot a command
 * addresses, the slot map read from `CLUSTER SLOTS`, and what to do with a cluster error reply
 * (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`). No loop, no socket: the store's cluster mode
 * (src/store/store_cluster.c) executes the decisions, and tests/unit/store/test_cluster.c drives
 * them over recorded replies.
 */
#ifndef TP_CLUSTER_H
#define TP_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_store_reply;

#define TP_CLUSTER_SLOTS 16384
/* Nodes a map can hold (masters and replicas); a bigger cluster is refused when parsed. */
#define TP_CLUSTER_MAX_NODES 128
#define TP_CLUSTER_HOST_MAX 256
/* MOVED and CLUSTERDOWN answers one command meets before the last one goes back to the caller
 * (a MOVED loop between two nodes that disagree ends there). ASK and TRYAGAIN are not counted
 * here: see struct tp_cluster_tries. */
#define TP_CLUSTER_MAX_REDIRECTS 8

/* tp_cluster_command_slot: the command has no key (PING, PUBLISH, INFO): any master serves it. */
#define TP_CLUSTER_ANY (-1)
/* tp_cluster_command_slot: keys in more than one slot (Redis would answer CROSSSLOT). */
#define TP_CLUSTER_CROSS (-2)

struct tp_cluster_node {
    char host[TP_CLUSTER_HOST_MAX];
    int port;
    bool master; /* serves at least one slot in the map */
};

/* A slot map: owner[slot] is 1 + the index of the master in nodes, 0 while unassigned. */
struct tp_cluster_map {
    uint16_t owner[TP_CLUSTER_SLOTS];
    size_t nnodes;
    struct tp_cluster_node nodes[TP_CLUSTER_MAX_NODES];
};

enum tp_cluster_error {
    TP_CLUSTER_OK = 0,      /* not a cluster error: deliver the reply */
    TP_CLUSTER_MOVED,       /* the slot lives on another master for good */
    TP_CLUSTER_ASK,         /* the slot is migrating: this one command goes to the target */
    TP_CLUSTER_TRYAGAIN,    /* multi-key command during a migration: retry shortly */
    TP_CLUSTER_CLUSTERDOWN, /* the cluster cannot serve (failover in progress): retry shortly */
};

/* A parsed cluster error; slot/host/port only for MOVED and ASK. */
struct tp_cluster_redirect {
    enum tp_cluster_error kind;
    int slot;
    char host[TP_CLUSTER_HOST_MAX];
    int port;
};

enum tp_cluster_action {
    TP_CLUSTER_DELIVER, /* hand the reply to the caller as it is */
    TP_CLUSTER_RESEND,  /* send again now to the redirect's host:port (ASKING first if asking) */
    TP_CLUSTER_LATER,   /* send again after delay_ms, routed by the (refreshed) map */
};

struct tp_cluster_decision {
    enum tp_cluster_action action;
    bool asking;  /* RESEND: prefix ASKING (an ASK redirect) */
    bool refresh; /* the map is stale: refresh it (throttled by the caller) */
    bool update;  /* MOVED: point the slot at the redirect's node in the map now */
    int delay_ms; /* LATER: back-off before the next attempt */
};

/** The cluster slot of a key: CRC16 (XMODEM) of the key, or of the first non-empty `{…}` hash
 * tag in it, modulo 16384. */
int tp_cluster_slot(const char *key, size_t len);

/**
 * The slot a command addresses (argv[0] the command name, `len` the lengths): the slot of its
 * keys (EVAL/EVALSHA keys after numkeys, XREAD/XREADGROUP keys after STREAMS, XGROUP/XINFO the
 * third word, SCAN the hash tag of its MATCH pattern, else argv[1]), TP_CLUSTER_ANY when it has
 * none, TP_CLUSTER_CROSS when its keys span slots.
 */
int tp_cluster_command_slot(int argc, const char *const *argv, const size_t *len);

/**
 * Splits one RESP-encoded command (`*N\r\n$L\r\n<bytes>\r\n…`, as hiredis formats it) into at
 * most `max` words pointing into `buf`. Returns the word count, or TP_EINVAL when `buf` is not
 * exactly one such command or has more than `max` words.
 */
int tp_cluster_resp_argv(const char *buf, size_t len, const char **argv, size_t *lens, int max);

/** Empties `m` (no node, every slot unassigned). */
void tp_cluster_map_init(struct tp_cluster_map *m);

/**
 * Fills `m` from a `CLUSTER SLOTS` reply; `asked` is the host the command went to (Redis
 * reports an empty host for "the address you reached me on"). Returns 0, or TP_EPROTO on a reply
 * of the wrong shape, TP_ETOOBIG past TP_CLUSTER_MAX_NODES; `m` is unchanged unless 0.
 */
int tp_cluster_map_parse(struct tp_cluster_map *m, const struct tp_store_reply *r,
                         const char *asked);

/** Index of host:port in m->nodes, added (as a replica, owning nothing) when new. Returns the
 * index, or TP_ETOOBIG when the map is full. */
int tp_cluster_map_node(struct tp_cluster_map *m, const char *host, int port);

/** The master serving `slot` (borrowed from `m`), NULL when unassigned or out of range. */
const struct tp_cluster_node *tp_cluster_map_route(const struct tp_cluster_map *m, int slot);

/** Number of slots assigned to a master (16384 when the cluster is fully covered). */
int tp_cluster_map_covered(const struct tp_cluster_map *m);

/** Applies a MOVED redirect: the slot now belongs to host:port (marked master). Returns 0 or
 * TP_EINVAL (bad slot) / TP_ETOOBIG (map full). */
int tp_cluster_map_move(struct tp_cluster_map *m, const struct tp_cluster_redirect *rd);

/** Parses an error reply's text (`MOVED 3999 127.0.0.1:6381`, `ASK …`, `TRYAGAIN …`,
 * `CLUSTERDOWN …`) into `out`. Returns out->kind; TP_CLUSTER_OK for any other error, and for a
 * MOVED/ASK whose slot or address does not parse. */
enum tp_cluster_error tp_cluster_redirect_parse(const char *err, size_t len,
                                                struct tp_cluster_redirect *out);

/* What one command's attempts were answered so far; zeroed before its first send, counted by
 * tp_cluster_decide. */
struct tp_cluster_tries {
    /* MOVED and CLUSTERDOWN answers: the TP_CLUSTER_MAX_REDIRECTS-th goes back to the caller. */
    int redirects;
    /* ASK and TRYAGAIN answers: a slot in migration. Every script with a key on neither side (a
     * key created on first use) meets them, ASK from the source and TRYAGAIN from the target,
     * until the slot is assigned to its new master, which takes as long as moving the slot's
     * keys: no count ends them, only the command's deadline (the caller's). */
    int migrating;
    enum tp_cluster_error last; /* the previous answer's kind (TP_CLUSTER_OK before the first) */
};

/**
 * What to do with an attempt's answer `rd`, counted into `t`: follow MOVED and ASK at once, back
 * off on TRYAGAIN (doubling from 10 ms, at most 100 ms: a migration ends when its last key has
 * moved, so look again soon), on CLUSTERDOWN (from 10 ms, at most 500 ms) and on an ASK right
 * after an ASK (the target sent the command back: not Redis's normal course, so never a busy
 * loop); deliver the TP_CLUSTER_MAX_REDIRECTS-th MOVED or CLUSTERDOWN answer. ASK and TRYAGAIN
 * never deliver: the caller ends the command at its deadline.
 */
struct tp_cluster_decision tp_cluster_decide(const struct tp_cluster_redirect *rd,
                                             struct tp_cluster_tries *t);

#endif
