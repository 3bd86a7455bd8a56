/*
 * loadgen results: the error counters, the CPU of other processes over the measured window
 * (--cpu-pid, read from /proc), and the report: a human summary on stderr and one JSON line on
 * stdout whose field names bench/run and the reports depend on.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/common.h"

#include "lg.h"

struct lg_res lg_res;

/* --- Result counters --- */

void lg_err_count(const char *name)
{
    struct lg_errs *e = &lg_res.errs;
    for (int i = 0; i < e->n; i++) {
        if (strcmp(e->name[i], name) == 0) {
            e->count[i]++;
            return;
        }
    }
    int i = e->n < LG_MAX_ERR_KINDS ? e->n++ : LG_MAX_ERR_KINDS - 1;
    if (i == LG_MAX_ERR_KINDS - 1 && e->count[i] != 0) {
        snprintf(e->name[i], sizeof(e->name[i]), "other");
    } else {
        snprintf(e->name[i], sizeof(e->name[i]), "%s", name);
    }
    e->count[i]++;
}

/* --- CPU of other processes over the measured window (--cpu-pid) --- */

uint64_t lg_cpu_watch_ticks(const struct lg_cpu_watch *cw)
{
    uint64_t sum = 0;
    for (int i = 0; i < cw->npids; i++) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", cw->pids[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        const char *q = strrchr(buf, ')');
        unsigned long long ut, st;
        /* After "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime. */
        if (q != NULL &&
            sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            sum += ut + st;
    }
    return sum;
}

uint64_t lg_cpu_watch_rss_kb(const struct lg_cpu_watch *cw)
{
    uint64_t kb = 0, page_kb = (uint64_t)sysconf(_SC_PAGESIZE) / 1024u;
    for (int i = 0; i < cw->npids; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/statm", cw->pids[i]);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        unsigned long long size, resident;
        if (fscanf(f, "%llu %llu", &size, &resident) == 2)
            kb += resident * page_kb;
        fclose(f);
    }
    return kb;
}

bool lg_cpu_watch_parse(const char *arg)
{
    if (lg_opt.ncpu_watch >= (int)TP_ARRAY_LEN(lg_opt.cpu_watch))
        return false;
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || (size_t)(eq - arg) >= sizeof(lg_opt.cpu_watch[0].name))
        return false;
    struct lg_cpu_watch *cw = &lg_opt.cpu_watch[lg_opt.ncpu_watch];
    memcpy(cw->name, arg, (size_t)(eq - arg));
    cw->name[eq - arg] = 0;
    for (const char *q = eq + 1; *q != 0;) {
        char *end;
        long pid = strtol(q, &end, 10);
        if (end == q || pid <= 0 || cw->npids >= (int)TP_ARRAY_LEN(cw->pids))
            return false;
        cw->pids[cw->npids++] = (int)pid;
        q = end;
        while (*q == ',' || *q == ' ')
            q++;
    }
    if (cw->npids == 0)
        return false;
    lg_opt.ncpu_watch++;
    return true;
}

/* --- Report --- */

static double tv_s(struct timeval a, struct timeval b)
{
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_usec - a.tv_usec) / 1e6;
}

void lg_report(void)
{
    double win = lg_opt.duration;
    double cpu_u = tv_s(lg_res.ru0.ru_utime, lg_res.ru1.ru_utime);
    double cpu_s = tv_s(lg_res.ru0.ru_stime, lg_res.ru1.ru_stime);
    const struct lg_hist *h = &lg_res.lat;
    struct tp_buf j;
    tp_buf_init(&j);
    tp_buf_printf(&j,
                  "{\"tool\":\"loadgen\",\"mode\":\"%s\",\"label\":\"%s\",\"conns\":%d,"
                  "\"rate\":%.1f,\"duration_s\":%.1f,\"warmup_s\":%.1f,\"pipeline\":%d,",
                  lg_mode_names[lg_opt.mode], lg_opt.label ? lg_opt.label : "", lg_opt.conns,
                  lg_opt.rate, lg_opt.duration, lg_opt.warmup, lg_opt.pipeline);
    if (lg_opt.mode == LG_M_VIEWERS) {
        lg_viewers_flush();
        uint64_t all = 0;
        for (int i = 0; i < 5; i++)
            all += lg_res.msgs[i];
        tp_buf_printf(&j,
                      "\"sockets_open\":%d,\"conn_fail\":%" PRIu64 ",\"conn_closed\":%" PRIu64
                      ",\"ticks\":%" PRIu64 ",\"odds\":%" PRIu64 ",\"rounds\":%" PRIu64
                      ",\"other\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"ticks_per_socket_s\":%.3f,"
                      "\"odds_per_socket_s\":%.3f,\"lag_p50_us\":%" PRIu64
                      ",\"lag_p99_us\":%" PRIu64 ",\"lag_p999_us\":%" PRIu64
                      ",\"lag_max_us\":%" PRIu64 ",",
                      lg_opened, lg_res.conn_fail, lg_res.conn_closed, lg_res.msgs[0],
                      lg_res.msgs[1], lg_res.msgs[2], lg_res.msgs[3] + lg_res.msgs[4],
                      (double)all / win, lg_opened ? (double)lg_res.msgs[0] / win / lg_opened : 0.0,
                      lg_opened ? (double)lg_res.msgs[1] / win / lg_opened : 0.0,
                      lg_hist_pct(h, 50), lg_hist_pct(h, 99), lg_hist_pct(h, 99.9), h->max);
        const struct lg_hist *st = &lg_res.spread_tick, *so = &lg_res.spread_odds;
        tp_buf_printf(&j,
                      "\"tls\":%s,\"beat_bytes_mean\":%.1f,"
                      "\"hello\":%" PRIu64 ",\"beats_odds\":%" PRIu64
                      ",\"beats_odds_per_socket_s\":%.3f,\"lag_min_us\":%" PRIu64
                      ",\"spread_tick_p50_us\":%" PRIu64 ",\"spread_tick_p99_us\":%" PRIu64
                      ",\"spread_tick_p999_us\":%" PRIu64 ",\"spread_tick_max_us\":%" PRIu64
                      ",\"spread_odds_p50_us\":%" PRIu64 ",\"spread_odds_p99_us\":%" PRIu64
                      ",\"spread_odds_p999_us\":%" PRIu64 ",\"spread_odds_max_us\":%" PRIu64 ",",
                      lg_opt.tls ? "true" : "false",
                      lg_res.msgs[0] ? (double)lg_res.beat_bytes / (double)lg_res.msgs[0] : 0.0,
                      lg_res.msgs[3], lg_res.beats_odds,
                      lg_opened ? (double)lg_res.beats_odds / win / lg_opened : 0.0, lg_res.lag_min,
                      lg_hist_pct(st, 50), lg_hist_pct(st, 99), lg_hist_pct(st, 99.9), st->max,
                      lg_hist_pct(so, 50), lg_hist_pct(so, 99), lg_hist_pct(so, 99.9), so->max);
        const struct lg_hist *lr = &lg_res.lat_read, *sr = &lg_res.spread_tick_read;
        tp_buf_printf(&j,
                      "\"beats_merged\":%" PRIu64 ",\"lag_read_p50_us\":%" PRIu64
                      ",\"lag_read_p99_us\":%" PRIu64 ",\"spread_tick_read_p50_us\":%" PRIu64
                      ",\"spread_tick_read_p99_us\":%" PRIu64 ",",
                      lg_res.beats_merged, lg_hist_pct(lr, 50), lg_hist_pct(lr, 99),
                      lg_hist_pct(sr, 50), lg_hist_pct(sr, 99));
        const struct lg_hist *rl = &lg_res.round_lag;
        tp_buf_printf(&j,
                      "\"round_boundaries\":%" PRIu64 ",\"round_lag_n\":%" PRIu64
                      ",\"round_lag_p50_us\":%" PRIu64 ",\"round_lag_p99_us\":%" PRIu64
                      ",\"round_lag_p999_us\":%" PRIu64 ",\"round_lag_max_us\":%" PRIu64 ",",
                      lg_res.round_boundaries, rl->n, lg_hist_pct(rl, 50), lg_hist_pct(rl, 99),
                      lg_hist_pct(rl, 99.9), rl->max);
        const struct lg_hist *rr = &lg_res.round_lag_read;
        tp_buf_printf(&j,
                      "\"rounds_merged\":%" PRIu64 ",\"round_lag_read_p50_us\":%" PRIu64
                      ",\"round_lag_read_p99_us\":%" PRIu64 ",\"round_lag_read_max_us\":%" PRIu64
                      ",",
                      lg_res.rounds_merged, lg_hist_pct(rr, 50), lg_hist_pct(rr, 99), rr->max);
        /* [T ms, receipts, latest at arrival µs, latest at loadgen's read µs] */
        tp_buf_printf(&j, "\"round_bounds\":[");
        for (int i = 0; i < lg_res.nbounds; i++)
            tp_buf_printf(&j, "%s[%" PRId64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", i ? "," : "",
                          lg_res.bounds[i].t_ms, lg_res.bounds[i].n, lg_res.bounds[i].max_us,
                          lg_res.bounds[i].read_max_us);
        tp_buf_printf(&j, "],");
        fprintf(stderr,
                "\nviewers: %d sockets open (%" PRIu64 " failed, %" PRIu64 " closed) over %.1fs\n"
                "  messages: tick (beat) %" PRIu64 " (%.2f/s per socket, %" PRIu64
                " with odds), odds alone %" PRIu64 " (%.2f/s per socket), round %" PRIu64
                ", other %" PRIu64 "\n"
                "  tick lag: p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
                lg_opened, lg_res.conn_fail, lg_res.conn_closed, win, lg_res.msgs[0],
                lg_opened ? (double)lg_res.msgs[0] / win / lg_opened : 0.0, lg_res.beats_odds,
                lg_res.msgs[1], lg_opened ? (double)lg_res.msgs[1] / win / lg_opened : 0.0,
                lg_res.msgs[2], lg_res.msgs[3] + lg_res.msgs[4], lg_hist_pct(h, 50) / 1e3,
                lg_hist_pct(h, 99) / 1e3, lg_hist_pct(h, 99.9) / 1e3, h->max / 1e3);
        fprintf(stderr,
                "  tick lag min %.3f ms; fan-out spread (after the first socket): ticks p50 %.3f "
                "p99 %.3f max %.3f ms, odds p50 %.3f p99 %.3f max %.3f ms\n"
                "  at loadgen's read instead of the arrival: tick lag p50 %.3f p99 %.3f ms, "
                "spread p50 %.3f p99 %.3f ms\n",
                lg_res.lag_min / 1e3, lg_hist_pct(st, 50) / 1e3, lg_hist_pct(st, 99) / 1e3,
                st->max / 1e3, lg_hist_pct(so, 50) / 1e3, lg_hist_pct(so, 99) / 1e3, so->max / 1e3,
                lg_hist_pct(lr, 50) / 1e3, lg_hist_pct(lr, 99) / 1e3, lg_hist_pct(sr, 50) / 1e3,
                lg_hist_pct(sr, 99) / 1e3);
        fprintf(stderr,
                "  round message after its boundary T: %" PRIu64 " boundaries, %" PRIu64
                " receipts, p50 %.3f ms  p99 %.3f ms  max %.3f ms (at loadgen's read: p50 %.3f "
                "p99 %.3f max %.3f ms; %" PRIu64 " read merged with a later write)\n",
                lg_res.round_boundaries, rl->n, lg_hist_pct(rl, 50) / 1e3,
                lg_hist_pct(rl, 99) / 1e3, rl->max / 1e3, lg_hist_pct(rr, 50) / 1e3,
                lg_hist_pct(rr, 99) / 1e3, rr->max / 1e3, lg_res.rounds_merged);
    } else {
        double tput = (double)lg_res.ok / win;
        tp_buf_printf(&j,
                      "\"round_id\":%" PRId64 ",\"users\":%d,\"sent\":%" PRIu64 ",\"ok\":%" PRIu64
                      ",\"ok_per_s\":%.1f,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
                      ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"mean_us\":%.1f,",
                      lg_opt.round_id, lg_nusers, lg_res.sent, lg_res.ok, tput, lg_hist_pct(h, 50),
                      lg_hist_pct(h, 99), lg_hist_pct(h, 99.9), h->max,
                      h->n ? (double)h->sum / (double)h->n : 0.0);
        tp_buf_printf(&j, "\"sec_p99_us\":[");
        for (int i = 0; i < lg_res.nsecs; i++)
            tp_buf_printf(&j, "%s%" PRIu64, i ? "," : "", lg_res.sec_p99[i]);
        tp_buf_printf(&j, "],");
        fprintf(stderr,
                "\n%s: %d conns, target %.0f req/s (%s), %.1fs measured after %.1fs warm-up\n"
                "  sent %" PRIu64 ", ok %" PRIu64 " (%.1f/s)\n"
                "  latency (from scheduled time): p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  "
                "max %.3f ms\n",
                lg_mode_names[lg_opt.mode], lg_opt.conns, lg_opt.rate,
                lg_opt.rate > 0 ? "open loop" : "closed loop", win, lg_opt.warmup, lg_res.sent,
                lg_res.ok, tput, lg_hist_pct(h, 50) / 1e3, lg_hist_pct(h, 99) / 1e3,
                lg_hist_pct(h, 99.9) / 1e3, h->max / 1e3);
    }
    uint64_t nerr = 0;
    tp_buf_puts(&j, "\"errors\":{");
    for (int i = 0; i < lg_res.errs.n; i++) {
        tp_buf_printf(&j, "%s\"%s\":%" PRIu64, i ? "," : "", lg_res.errs.name[i],
                      lg_res.errs.count[i]);
        fprintf(stderr, "  error %-32s %" PRIu64 "\n", lg_res.errs.name[i], lg_res.errs.count[i]);
        nerr += lg_res.errs.count[i];
    }
    uint64_t ops =
        lg_opt.mode == LG_M_VIEWERS ? lg_res.msgs[0] + lg_res.msgs[1] + lg_res.msgs[2] : lg_res.ok;
    double cpu_per = ops ? (cpu_u + cpu_s) * 1e6 / (double)ops : 0.0;
    tp_buf_printf(&j, "},\"cpu_window_us\":{");
    long tck = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < lg_opt.ncpu_watch; i++) {
        const struct lg_cpu_watch *cw = &lg_opt.cpu_watch[i];
        uint64_t us = cw->t1 >= cw->t0 ? (cw->t1 - cw->t0) * 1000000u / (uint64_t)tck : 0;
        tp_buf_printf(&j, "%s\"%s\":%" PRIu64, i ? "," : "", cw->name, us);
        fprintf(stderr, "  CPU of %s in the measured window: %.3f s\n", cw->name, us / 1e6);
    }
    tp_buf_puts(&j, "},\"rss_kb\":{");
    for (int i = 0; i < lg_opt.ncpu_watch; i++) {
        const struct lg_cpu_watch *cw = &lg_opt.cpu_watch[i];
        tp_buf_printf(&j, "%s\"%s\":[%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", i ? "," : "", cw->name,
                      cw->rss_before, cw->rss0, cw->rss1);
    }
    tp_buf_printf(&j,
                  "},\"error_total\":%" PRIu64 ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,"
                  "\"cpu_us_per_op\":%.2f,\"ok_total\":%" PRIu64 ",\"err_total_all\":%" PRIu64
                  "}\n",
                  nerr, cpu_u, cpu_s, cpu_per, lg_res.total_ok, lg_res.total_err);
    fprintf(stderr,
            "  errors total %" PRIu64 "; loadgen CPU %.2fs user + %.2fs sys = %.2f us per %s\n",
            nerr, cpu_u, cpu_s, cpu_per, lg_opt.mode == LG_M_VIEWERS ? "message" : "ok request");
    fwrite(tp_buf_ptr(&j), 1, tp_buf_size(&j), stdout);
    fflush(stdout);
    if (lg_opt.json_file != NULL) {
        FILE *f = fopen(lg_opt.json_file, "a");
        if (f != NULL) {
            fwrite(tp_buf_ptr(&j), 1, tp_buf_size(&j), f);
            fclose(f);
        }
    }
    tp_buf_deinit(&j);
}
