/*
 * One-line structured logging. Each line is formatted into a stack buffer and written with a
 * single write(2), so lines from several worker processes sharing stderr never interleave.
 */
#include "tickpool/base/log.h"
#include "tickpool/base/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum tp_log_level min_level = TP_LOG_INFO;
static char role[32] = "main";

static const char *level_names[] = {"debug", "info", "warn", "error"};

void tp_log_setup(enum tp_log_level min, const char *r)
{
    min_level = min;
    if (r != NULL)
        snprintf(role, sizeof(role), "%s", r);
}

bool tp_log_enabled(enum tp_log_level level)
{
    return level >= min_level;
}

int tp_log_level_parse(const char *s, enum tp_log_level *out)
{
    for (size_t i = 0; i < TP_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum tp_log_level)i;
            return 0;
        }
    }
    return TP_EINVAL;
}

/* Formats the message; the part before the first tab is quoted as msg="...", the rest (already
 * " key=value" pairs) is appended as is. */
static void vlog(enum tp_log_level level, const char *mod, const char *fmt, va_list ap)
{
    char msg[1024], line[1400];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char *kv = strchr(msg, '\t');
    if (kv != NULL)
        *kv++ = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\n')
            *p = '\'';

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s pid=%d role=%s mod=%s "
                     "msg=\"%s\"%s%s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level], (int)getpid(), role, mod, msg,
                     kv ? " " : "", kv ? kv : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    ssize_t r = write(STDERR_FILENO, line, (size_t)n);
    (void)r;
}

void tp_log(enum tp_log_level level, const char *mod, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, mod, fmt, ap);
    va_end(ap);
}

void tp_log_fatal(const char *mod, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(TP_LOG_ERROR, mod, fmt, ap);
    va_end(ap);
    exit(1);
}
