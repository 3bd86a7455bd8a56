/*
 * Structured one-line logs on stderr:
 *   ts=2026-11-28T07:45:09.123Z level=info pid=1234 role=worker.0 mod=http msg="..." key=value
 * Callers pass the message and optional " key=value" pairs in one printf format.
 */
#ifndef TP_LOG_H
#define TP_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum tp_log_level { TP_LOG_DEBUG, TP_LOG_INFO, TP_LOG_WARN, TP_LOG_ERROR };

/** Sets the minimum level printed and the role shown in every line (e.g. "master", "worker.1"). */
void tp_log_setup(enum tp_log_level min, const char *role);
/** Parses "debug", "info", "warn", "error"; returns 0 or TP_EINVAL. */
int tp_log_level_parse(const char *s, enum tp_log_level *out);

/** True when a line of `level` would be printed (to skip work done only for a debug line). */
bool tp_log_enabled(enum tp_log_level level);

/** Logs one line. `fmt` renders the message; a tab in the output starts the key=value part. */
void tp_log(enum tp_log_level level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Logs at error level and exits with status 1: for start-up failures only. */
_Noreturn void tp_log_fatal(const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define tp_log_debug(mod, ...) tp_log(TP_LOG_DEBUG, mod, __VA_ARGS__)
#define tp_log_info(mod, ...) tp_log(TP_LOG_INFO, mod, __VA_ARGS__)
#define tp_log_warn(mod, ...) tp_log(TP_LOG_WARN, mod, __VA_ARGS__)
#define tp_log_error(mod, ...) tp_log(TP_LOG_ERROR, mod, __VA_ARGS__)

#endif
