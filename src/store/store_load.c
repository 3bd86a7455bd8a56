/*
 * Script files of the store (src/store/store_internal.h): read once per store (the built-in ones
 * once per process), loaded into Redis by store_conn.c on every (re)connect. Apart from it so
 * that file stays about the Redis connection.
 */
#include "store_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MOD "store"
#define MAX_SCRIPT_SIZE (1 << 20)
#define MAX_SCRIPTS 64

static int cmp_script(const void *a, const void *b)
{
    return strcmp(((const struct tp_store_script *)a)->name,
                  ((const struct tp_store_script *)b)->name);
}

/* Appends one script (name without .lua) with its digest and metrics kind; takes `owned`. */
static void add_script(struct tp_store_script **scripts, size_t *n, const char *name,
                       const char *body, size_t len, char *owned)
{
    *scripts = tp_xrealloc(*scripts, (*n + 1) * sizeof(**scripts));
    struct tp_store_script *sc = &(*scripts)[(*n)++];
    memset(sc, 0, sizeof(*sc));
    snprintf(sc->name, sizeof(sc->name), "%s", name);
    sc->metrics_kind = tp_metrics_label_index(TP_METRIC_FAMILY_REDIS_COMMAND, 0, sc->name);
    if (sc->metrics_kind < 0)
        sc->metrics_kind = TP_METRICS_REDIS_KIND_SCRIPT;
    sc->body = body;
    sc->owned = owned;
    sc->len = len;
    uint8_t digest[TP_SHA1_LEN];
    tp_sha1(sc->body, sc->len, digest);
    tp_hex_encode(digest, sizeof(digest), sc->sha);
}

/* The scripts built into the binary (scripts/embed-lua), already sorted by name, digested once
 * per process: every store (each worker's, each cluster node's, the writer thread's) shares them.
 */
static struct tp_store_script *builtin;
static size_t nbuiltin;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static void digest_builtin(void)
{
    for (size_t i = 0; i < tp_lua_count; i++)
        add_script(&builtin, &nbuiltin, tp_lua_names[i], tp_lua_bodies[i], tp_lua_lens[i], NULL);
}

static int load_builtin(struct tp_store_script **out, size_t *nout)
{
    pthread_once(&builtin_once, digest_builtin);
    *out = tp_xmalloc(nbuiltin * sizeof(**out) + 1);
    memcpy(*out, builtin, nbuiltin * sizeof(**out));
    *nout = nbuiltin;
    return 0;
}

/* Reads one regular file of at most MAX_SCRIPT_SIZE bytes. Returns 0 (*body malloc'd) or TP_EIO. */
static int read_script(const char *path, char **body, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size > MAX_SCRIPT_SIZE) {
        tp_log_error(MOD, "cannot read script\tfile=%s", path);
        if (f != NULL)
            fclose(f);
        return TP_EIO;
    }
    *body = tp_xmalloc((size_t)st.st_size + 1);
    *len = fread(*body, 1, (size_t)st.st_size, f);
    (*body)[*len] = '\0';
    fclose(f);
    return 0;
}

int tp_store_scripts_load(const char *dir, struct tp_store_script **out, size_t *nout)
{
    struct tp_store_script *scripts = NULL;
    size_t n_scripts = 0;
    *out = NULL;
    *nout = 0;
    if (strcmp(dir, TP_STORE_SCRIPTS_BUILTIN) == 0)
        return load_builtin(out, nout);
    DIR *d = opendir(dir);
    if (d == NULL) {
        tp_log_error(MOD, "cannot open scripts directory\tdir=%s error=\"%s\"", dir,
                     strerror(errno));
        return TP_EIO;
    }
    int ret = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 4 || strcmp(e->d_name + n - 4, ".lua") != 0 || e->d_name[0] == '.')
            continue;
        if (n - 4 >= sizeof(scripts[0].name) || n_scripts >= MAX_SCRIPTS) {
            tp_log_error(MOD, "script name too long or too many scripts\tfile=%s", e->d_name);
            ret = TP_ETOOBIG;
            break;
        }
        char path[1024], name[sizeof(scripts[0].name)];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(name, sizeof(name), "%.*s", (int)(n - 4), e->d_name);
        char *body;
        size_t len;
        if ((ret = read_script(path, &body, &len)) != 0)
            break;
        add_script(&scripts, &n_scripts, name, body, len, body);
    }
    closedir(d);
    if (n_scripts > 1)
        qsort(scripts, n_scripts, sizeof(*scripts), cmp_script);
    *out = scripts;
    *nout = n_scripts;
    return ret;
}

void tp_store_scripts_free(struct tp_store_script *scripts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(scripts[i].owned);
    free(scripts);
}

const struct tp_store_script *tp_store_scripts_find(const struct tp_store_script *scripts, size_t n,
                                                    const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(scripts[i].name, name) == 0)
            return &scripts[i];
    return NULL;
}
