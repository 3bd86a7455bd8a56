/*
 * Operations endpoints: GET /healthz (liveness), GET /readyz (Redis and Postgres reachable),
 * GET /metrics (Prometheus text, summed over every worker).
 */
#ifndef TP_OPS_H
#define TP_OPS_H

struct tp_worker;

/** Registers /healthz, /readyz and /metrics on the worker's router. */
void tp_ops_register(struct tp_worker *w);

#endif
