/*
 * Private to the store's cluster mode: store_cluster.c (routing, redirects, WAIT, split reads,
 * the subscription, the lifecycle) and store_cluster_map.c (the node connections and the slot
 * map). The structs below are shared by both; nothing outside these two files includes this.
 */
#ifndef TP_STORE_CLUSTER_INTERNAL_H
#define TP_STORE_CLUSTER_INTERNAL_H

#include "tickpool/base/buf.h"
#include "tickpool/base/url.h"
#include "tickpool/store/cluster.h"
#include "tickpool/store/store.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#define TP_STORE_CLUSTER_SEEDS_MAX 16


struct node {
    struct node *next;
    struct tp_url_redis url;
    struct tp_store *st;
};

struct split;

struct ccmd {
    struct ccmd *prev, *next; /* cl->waiting while on the back-off timer */
    struct tp_store_cluster *cl;
    tp_store_cb cb;
    void *ud;
    struct split *sp; /* a part of a split read: completes into sp, not to a user */
    double deadline;
    int attempts;
    int slot;
    bool asking;
    bool waiting;
    struct tp_cluster_redirect ask;
    struct node *node;  /* where the last attempt went (WAIT goes there too) */
    struct tp_buf held; /* a script's reply while WAIT runs (redis.replicas_ack) */
    char script[64];    /* empty: a plain command */
    int nkeys;
    ev_timer timer;
    int argc;
    const char **argv;
    size_t *lens;
};

/* A read of several streams split by stream (see the top). */
struct split {
    struct split *prev, *next; /* cl->splits */
    struct tp_store_cluster *cl;
    tp_store_cb cb;
    void *ud;
    double deadline, until; /* until: end of BLOCK (0: no BLOCK) */
    int nparts, left, err;
    struct tp_buf merged; /* "[stream, entries]" of each part that had entries */
    int nmerged;
    struct tp_buf error; /* the first error reply of a part, RESP */
    ev_timer poll;
    /* the template: words before STREAMS without BLOCK n, then the streams and their ids */
    int nprefix, nstreams;
    const char **argv;
    size_t *lens;
};

struct tp_store_cluster {
    struct ev_loop *loop;
    int timeout_ms;
    int replicas_ack, wait_ms; /* redis.replicas_ack; WAIT's own timeout */
    uint64_t wait_short;       /* WAITs that fell short (logged every 100th) */
    char *scripts_dir;
    struct tp_url_redis seeds[TP_STORE_CLUSTER_SEEDS_MAX];
    int nseeds;
    struct tp_cluster_map *map;
    bool have_map;
    struct node *nodes;
    struct ccmd *waiting;
    struct split *splits;
    ev_timer tick;
    double last_refresh, last_full;
    uint64_t map_changes; /* slot maps that moved a slot to another node (tp_store_stats) */
    bool refreshing;
    char refresh_host[TP_CLUSTER_HOST_MAX];
    unsigned rr;
    uint64_t redirects;
    /* the subscription (one channel) */
    struct tp_store *sub;
    char *sub_channel;
    tp_store_cb sub_cb;
    void *sub_ud;
    double sub_down_since;
    unsigned sub_next;
    bool sub_moving;
    unsigned depth;
    bool dead;
};

/* --- Nodes and the slot map (store_cluster_map.c) --- */

/** The connection to host:port among the client's nodes, or NULL. */
struct node *tp_store_cluster_node_find(struct tp_store_cluster *cl, const char *host, int port);
/** A new connection to `u` (copied), added to the nodes; NULL when it cannot be made (logged). */
struct node *tp_store_cluster_node_add(struct tp_store_cluster *cl, const struct tp_url_redis *u);
/** The connection to host:port, created on first use with the first seed's credentials; NULL
 * when the host name does not fit. */
struct node *tp_store_cluster_node_get(struct tp_store_cluster *cl, const char *host, int port);
/** Any ready master, in turn (keyless commands, map refreshes); unless masters_only, else any
 * ready node; NULL when none is. */
struct node *tp_store_cluster_node_any(struct tp_store_cluster *cl, bool masters_only);
/** Asks a ready node for the slot map (CLUSTER SLOTS), at most once per 200 ms: the caller's
 * tick retries. A map that moves a slot to another node counts in cl->map_changes. */
void tp_store_cluster_refresh(struct tp_store_cluster *cl);

#endif
