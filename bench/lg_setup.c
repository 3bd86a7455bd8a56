/*
 * loadgen set-up before the run, over blocking sockets (a 30 s receive timeout each): users and
 * their tokens, the open round and its bands, and SCRIPT LOAD of bet.lua for redis-bet. Any
 * failure ends the process: there is nothing to measure without them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tickpool/base/buf.h"
#include "tickpool/base/codec.h"
#include "tickpool/base/common.h"

#include "lg.h"
#include "lg_proto.h"

/* One blocking request on a fresh connection; returns the status and the body in *body. */
static int blocking_call(const char *host, int port, const struct tp_buf *req, struct tp_buf *body,
                         bool http)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (write(fd, tp_buf_ptr(req), tp_buf_size(req)) != (ssize_t)tp_buf_size(req)) {
        close(fd);
        return -1;
    }
    struct tp_buf in;
    tp_buf_init(&in);
    int status = -1;
    for (;;) {
        char *d = tp_buf_reserve(&in, 65536);
        ssize_t n = read(fd, d, 65536);
        if (n <= 0)
            break;
        tp_buf_commit(&in, (size_t)n);
        if (!http && lg_resp_len(tp_buf_ptr(&in), tp_buf_size(&in)) > 0)
            break;
    }
    close(fd);
    tp_buf_reset(body);
    if (http) {
        const char *p = tp_buf_ptr(&in);
        const char *eoh = memmem(p, tp_buf_size(&in), "\r\n\r\n", 4);
        if (tp_buf_size(&in) >= 12 && eoh != NULL) {
            status = atoi(p + 9);
            tp_buf_append(body, eoh + 4, tp_buf_size(&in) - (size_t)(eoh + 4 - p));
        }
    } else if (tp_buf_size(&in) > 0) {
        status = 0;
        tp_buf_append(body, tp_buf_ptr(&in), tp_buf_size(&in));
    }
    tp_buf_deinit(&in);
    return status;
}

static struct tp_doc *http_json(const char *method, const char *path, const char *json, int *status)
{
    struct tp_buf req, body;
    tp_buf_init(&req);
    tp_buf_init(&body);
    tp_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n", method, path,
                  lg_opt.host, lg_opt.port);
    if (json != NULL)
        tp_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(json), json);
    else
        tp_buf_puts(&req, "\r\n");
    *status = blocking_call(lg_opt.host, lg_opt.port, &req, &body, true);
    struct tp_doc *d =
        *status > 0 ? tp_doc_parse(TP_FMT_JSON, tp_buf_ptr(&body), tp_buf_size(&body), NULL, 0)
                    : NULL;
    tp_buf_deinit(&req);
    tp_buf_deinit(&body);
    return d;
}

void lg_create_users(void)
{
    lg_users = tp_xcalloc((size_t)lg_opt.users_create, sizeof(*lg_users));
    FILE *f = lg_opt.tokens_file != NULL ? fopen(lg_opt.tokens_file, "w") : NULL;
    for (int i = 0; i < lg_opt.users_create; i++) {
        char body[200];
        snprintf(body, sizeof(body),
                 "{\"username\":\"lg%" PRIx64 "_%d\",\"password\":\"bench-password-1\"}",
                 lg_run_id & 0xffffffffu, i);
        int st;
        struct tp_doc *d = http_json("POST", "/api/v1/accounts", body, &st);
        const char *tok;
        int64_t id;
        if (st != 201 || d == NULL || tp_val_get_str(tp_doc_root(d), "token", &tok, NULL) != 0 ||
            tp_val_get_int(tp_doc_root(d), "user_id", &id) != 0) {
            fprintf(stderr, "loadgen: creating user %d failed (HTTP %d)\n", i, st);
            exit(1);
        }
        lg_users[lg_nusers].id = id;
        lg_users[lg_nusers++].token = tp_xstrdup(tok);
        if (f != NULL)
            fprintf(f, "%" PRId64 " %s\n", id, tok);
        tp_doc_free(d);
        if (!lg_opt.quiet && (i + 1) % 50 == 0)
            fprintf(stderr, "[loadgen] %d/%d users created\n", i + 1, lg_opt.users_create);
    }
    if (f != NULL)
        fclose(f);
}

void lg_read_tokens(void)
{
    FILE *f = fopen(lg_opt.tokens_file, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: cannot read %s: %s\n", lg_opt.tokens_file, strerror(errno));
        exit(2);
    }
    char line[1024];
    int cap = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char tok[900];
        long long id;
        if (sscanf(line, "%lld %899s", &id, tok) != 2)
            continue;
        if (lg_nusers == cap) {
            cap = cap ? cap * 2 : 64;
            lg_users = tp_xrealloc(lg_users, (size_t)cap * sizeof(*lg_users));
        }
        lg_users[lg_nusers].id = id;
        lg_users[lg_nusers++].token = tp_xstrdup(tok);
    }
    fclose(f);
}

void lg_find_round(void)
{
    int st;
    struct tp_doc *d = http_json("GET", "/api/v1/rounds/current", NULL, &st);
    const struct tp_val *open = d != NULL ? tp_val_get(tp_doc_root(d), "open") : NULL;
    int64_t id;
    if (st != 200 || tp_val_get_int(open, "id", &id) != 0) {
        fprintf(stderr, "loadgen: no open round (GET /api/v1/rounds/current: HTTP %d)\n", st);
        exit(1);
    }
    if (lg_opt.round_id < 0)
        lg_opt.round_id = id;
    if (lg_opt.follow_ms > 0 &&
        (id != lg_opt.round_id || tp_val_get_int(open, "opens_at", &lg_opt.follow_t0) != 0)) {
        fprintf(stderr, "loadgen: --follow-rounds: round %" PRId64 " is not the open one\n",
                lg_opt.round_id);
        exit(1);
    }
    if (lg_opt.bands <= 0 && tp_val_type(tp_val_get(open, "bands")) == TP_VAL_ARRAY)
        lg_opt.bands = (int)tp_val_len(tp_val_get(open, "bands"));
    tp_doc_free(d);
}

void lg_load_script(void)
{
    FILE *f = fopen(lg_opt.script, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: cannot read %s: %s\n", lg_opt.script, strerror(errno));
        exit(2);
    }
    struct tp_buf s, req, out;
    tp_buf_init(&s);
    tp_buf_init(&req);
    tp_buf_init(&out);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        tp_buf_append(&s, chunk, n);
    fclose(f);
    tp_buf_puts(&req, "*3\r\n");
    lg_resp_bulk(&req, "SCRIPT", 6);
    lg_resp_bulk(&req, "LOAD", 4);
    lg_resp_bulk(&req, tp_buf_ptr(&s), tp_buf_size(&s));
    if (blocking_call(lg_opt.redis_host, lg_opt.redis_port, &req, &out, false) != 0 ||
        tp_buf_ptr(&out)[0] != '$') {
        fprintf(stderr, "loadgen: SCRIPT LOAD failed: %.*s\n", (int)TP_MIN(tp_buf_size(&out), 200),
                tp_buf_ptr(&out));
        exit(1);
    }
    lg_resp_str(tp_buf_ptr(&out), lg_redis_sha, sizeof(lg_redis_sha));
    tp_buf_deinit(&s);
    tp_buf_deinit(&req);
    tp_buf_deinit(&out);
}
