/*
 * Operations endpoints: GET /healthz (liveness), GET /readyz (Redis and Postgres reachable),
 * GET /metrics (Prometheus text, summed over every worker).
 */
#ifndef TP_OPS_H
#define TP_OPS_H

/** Registers /healthz, /readyz and /metrics on every worker's router (an init hook). Call once
 * before tp_master_run. */
void tp_ops_install(void);

#endif
