/*
 * Private to the store's cluster mode: store_cluster.c (routing, redirects, WAIT, split reads,
 * the subscription, the lifecycle) and store_cluster_map.c (the node connections and the slot
 * map). The structs below are shared by both; nothing outside these two files includes this.
 */
#ifndef TP_STORE_CLUSTER_INTERNAL_H
#define TP_STORE_CLUSTER_INTERNAL_H

#include "store_internal.h"

#include "tickpool/base/buf.h"
#include "tickpool/base/url.h"
#include "tickpool/store/cluster.h"
#include "tickpool/store/store.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#define TP_STORE_CLUSTER_SEEDS_MAX 16

/* One node the client talks to: its URL and its standalone store (store.c). */
struct tp_store_node {
    struct tp_store_node *next;
    struct tp_url_redis url;
    struct tp_store *st;
};

struct ccmd;  /* a command and its attempts (store_cluster.c) */
struct split; /* a read of several streams split by stream (store_cluster.c) */

struct tp_store_cluster {
    struct ev_loop *loop;
    int timeout_ms;
    struct tp_store_acks acks; /* redis.replicas_ack: WAIT after each script (store_acks.c) */
    char *scripts_dir;
    struct tp_url_redis seeds[TP_STORE_CLUSTER_SEEDS_MAX];
    int nseeds;
    struct tp_cluster_map *map;
    bool have_map;
    struct tp_store_node *nodes;
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
struct tp_store_node *tp_store_cluster_node_find(struct tp_store_cluster *cl, const char *host,
                                                 int port);
/** A new connection to `u` (copied), added to the nodes; NULL when it cannot be made (logged). */
struct tp_store_node *tp_store_cluster_node_add(struct tp_store_cluster *cl,
                                                const struct tp_url_redis *u);
/** The connection to host:port, created on first use with the first seed's credentials; NULL
 * when the host name does not fit. */
struct tp_store_node *tp_store_cluster_node_get(struct tp_store_cluster *cl, const char *host,
                                                int port);
/** Any ready master, in turn (keyless commands, map refreshes); when none is ready and not
 * masters_only, any ready node; NULL otherwise. */
struct tp_store_node *tp_store_cluster_node_any(struct tp_store_cluster *cl, bool masters_only);
/** Asks a ready node for the slot map (CLUSTER SLOTS), at most once per 200 ms: the caller's
 * tick retries. A map that moves a slot to another node counts in cl->map_changes. */
void tp_store_cluster_refresh(struct tp_store_cluster *cl);

#endif
