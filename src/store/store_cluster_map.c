/*
 * The cluster mode's node connections and slot map (store_cluster_internal.h): one standalone
 * store per node in use (masters, seeds, and a node an ASK names), and the map from CLUSTER
 * SLOTS. When the map is asked for is store_cluster.c's business (see its top comment); a map
 * that moves any slot to another node, as a replica's promotion or a reshard does, is logged and
 * counted (tp_store_stats.map_changes), so that the game leader can re-write the round copies a
 * new owner may lack.
 */
#include "store_cluster_internal.h"
#include "store_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "store"
#define REFRESH_MIN_S 0.2

/* --- Nodes --- */

struct tp_store_node *tp_store_cluster_node_find(struct tp_store_cluster *cl, const char *host,
                                                 int port)
{
    for (struct tp_store_node *n = cl->nodes; n; n = n->next)
        if (n->url.port == port && strcmp(n->url.host, host) == 0)
            return n;
    return NULL;
}

/* A connection to `u`, added to the nodes. */
struct tp_store_node *tp_store_cluster_node_add(struct tp_store_cluster *cl,
                                                const struct tp_url_redis *u)
{
    struct tp_store *st = tp_store_new_at(cl->loop, u, cl->timeout_ms, cl->scripts_dir);
    if (st == NULL)
        return NULL;
    struct tp_store_node *n = tp_xcalloc(1, sizeof(*n));
    n->url = *u;
    n->st = st;
    n->next = cl->nodes;
    cl->nodes = n;
    return n;
}

/* The node's connection, created on first use with the first seed's credentials. */
struct tp_store_node *tp_store_cluster_node_get(struct tp_store_cluster *cl, const char *host,
                                                int port)
{
    struct tp_store_node *n = tp_store_cluster_node_find(cl, host, port);
    if (n != NULL)
        return n;
    struct tp_url_redis u = cl->seeds[0];
    if (strlen(host) >= sizeof(u.host))
        return NULL;
    snprintf(u.host, sizeof(u.host), "%s", host);
    u.port = port;
    return tp_store_cluster_node_add(cl, &u);
}

static bool node_is_master(const struct tp_store_cluster *cl, const struct tp_store_node *n)
{
    if (!cl->have_map)
        return false;
    for (size_t i = 0; i < cl->map->nnodes; i++)
        if (cl->map->nodes[i].master && cl->map->nodes[i].port == n->url.port &&
            strcmp(cl->map->nodes[i].host, n->url.host) == 0)
            return true;
    return false;
}

/* Any ready master, in turn (keyless commands, map refreshes); else any ready node. */
struct tp_store_node *tp_store_cluster_node_any(struct tp_store_cluster *cl, bool masters_only)
{
    size_t count = 0;
    for (struct tp_store_node *n = cl->nodes; n; n = n->next)
        count++;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && masters_only)
            break;
        struct tp_store_node *n = cl->nodes;
        for (size_t skip = count ? cl->rr % count : 0; skip > 0; skip--)
            n = n->next;
        for (size_t i = 0; i < count; i++) {
            if (tp_store_is_connected(n->st) && (pass == 1 || node_is_master(cl, n))) {
                cl->rr++;
                return n;
            }
            n = n->next ? n->next : cl->nodes;
        }
    }
    return NULL;
}

/* Frees connections to nodes that are neither masters nor seeds and owe nothing. */
static void prune(struct tp_store_cluster *cl)
{
    for (struct tp_store_node **pn = &cl->nodes; *pn;) {
        struct tp_store_node *n = *pn;
        bool seed = false;
        for (int i = 0; i < cl->nseeds; i++)
            seed |= cl->seeds[i].port == n->url.port && strcmp(cl->seeds[i].host, n->url.host) == 0;
        if (!seed && !node_is_master(cl, n) && tp_store_owed(n->st) == 0) {
            *pn = n->next;
            tp_store_free(n->st);
            free(n);
        } else {
            pn = &n->next;
        }
    }
}

/* --- Slot map --- */

/* True when some slot has another owner (host and port) in `b` than in `a`: node indexes are
 * not comparable between two CLUSTER SLOTS replies, names are. */
static bool owners_moved(const struct tp_cluster_map *a, const struct tp_cluster_map *b)
{
    int same[TP_CLUSTER_MAX_NODES + 1]; /* a's owner value -> b's, 0 for unassigned */
    same[0] = 0;
    for (size_t i = 0; i < a->nnodes; i++) {
        same[i + 1] = -1;
        for (size_t j = 0; j < b->nnodes; j++)
            if (a->nodes[i].port == b->nodes[j].port &&
                strcmp(a->nodes[i].host, b->nodes[j].host) == 0)
                same[i + 1] = (int)j + 1;
    }
    for (int s = 0; s < TP_CLUSTER_SLOTS; s++)
        if (same[a->owner[s]] != b->owner[s])
            return true;
    return false;
}

static void on_slots(int err, const struct tp_store_reply *r, void *ud)
{
    struct tp_store_cluster *cl = ud;
    cl->refreshing = false;
    if (cl->dead || err != 0)
        return;
    struct tp_cluster_map *m = tp_xmalloc(sizeof(*m));
    int rc = tp_cluster_map_parse(m, r, cl->refresh_host);
    if (rc != 0) {
        tp_log_warn(MOD, "unreadable CLUSTER SLOTS reply\terror=%d", rc);
        free(m);
        return;
    }
    bool changed = !cl->have_map || owners_moved(cl->map, m);
    free(cl->map);
    cl->map = m;
    cl->have_map = true;
    size_t masters = 0;
    for (size_t i = 0; i < m->nnodes; i++)
        if (m->nodes[i].master) {
            masters++;
            tp_store_cluster_node_get(cl, m->nodes[i].host, m->nodes[i].port);
        }
    if (changed) {
        /* Counted for the leader, which re-writes round copies a new owner may lack. */
        cl->map_changes++;
        tp_log_info(MOD, "redis cluster slot map\tmasters=%zu nodes=%zu covered=%d", masters,
                    m->nnodes, tp_cluster_map_covered(m));
    }
    prune(cl);
}

/* Asks a ready node for the slot map, at most once per REFRESH_MIN_S (the tick retries). */
void tp_store_cluster_refresh(struct tp_store_cluster *cl)
{
    double now = ev_now(cl->loop);
    if (cl->refreshing || cl->dead || now - cl->last_refresh < REFRESH_MIN_S)
        return;
    struct tp_store_node *n = tp_store_cluster_node_any(cl, false);
    if (n == NULL)
        return;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    if (tp_store_send_argv(n->st, NULL, on_slots, cl, 2, argv, NULL) == 0) {
        cl->refreshing = true;
        cl->last_refresh = now;
        snprintf(cl->refresh_host, sizeof(cl->refresh_host), "%s", n->url.host);
    }
}
