/*
 * Operations endpoints: GET /healthz (liveness), GET /readyz (playable: Redis up and a round
 * open; Postgres down is reported as degraded, still 200), GET /metrics (Prometheus text,
 * summed over every worker). docs/http-api.md describes the answers.
 */
#ifndef TP_OPS_H
#define TP_OPS_H

/** Registers /healthz, /readyz and /metrics on every worker's router (an init hook). Call once
 * before tp_master_run. */
void tp_ops_install(void);

#endif
