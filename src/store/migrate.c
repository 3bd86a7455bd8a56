/*
 * `tickpool migrate`: applies migrations/<NNNN>_<name>.sql in numeric order over
 * tickpool/store/pg.h.
 *
 * Order of work, and why:
 *  1. Read and checksum every file first, so a bad name or unreadable file fails before
 *     touching the database.
 *  2. Take a session advisory lock before anything else in the database, including creating
 *     schema_migrations: two processes running `migrate` at once (several hosts starting
 *     together) serialise here, and the second then finds everything applied.
 *  3. Verify every applied migration's checksum before applying anything: a changed file means
 *     the database no longer matches the tree, and applying newer files on top would hide it.
 *  4. Apply each pending file in its own transaction together with its schema_migrations row,
 *     so a file is either fully applied and recorded, or not at all.
 * Migration files must therefore not contain BEGIN/COMMIT themselves.
 */
#include "tickpool/store/migrate.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/base/crypto.h"
#include "tickpool/store/pg.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Key of the advisory lock: any constant shared by every tickpool version ("tpmigr" in ASCII). */
#define LOCK_KEY "116112109105103114"
#define MAX_FILE_SIZE (16 << 20)

struct mig {
    int version;
    char name[128]; /* file name without .sql, e.g. "0001_init" */
    char *sql;
    char checksum[TP_SHA256_LEN * 2 + 1];
    bool applied;
};

/* Parses "NNNN_name.sql": digits, '_', then [A-Za-z0-9_-]+. Returns the version or -1. */
static int parse_name(const char *fn, size_t n)
{
    if (n < 7 || strcmp(fn + n - 4, ".sql") != 0)
        return -1;
    size_t i = 0;
    long v = 0;
    while (i < n && isdigit((unsigned char)fn[i]) && i < 9)
        v = v * 10 + (fn[i++] - '0');
    if (i == 0 || fn[i] != '_' || i + 1 >= n - 4)
        return -1;
    for (size_t j = i + 1; j < n - 4; j++)
        if (!isalnum((unsigned char)fn[j]) && fn[j] != '_' && fn[j] != '-')
            return -1;
    return (int)v;
}

static int cmp_mig(const void *a, const void *b)
{
    const struct mig *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static void free_migs(struct mig *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].sql);
    free(m);
}

/* Reads every migration of `dir` into *out (sorted). Returns 0 or TP_EINVAL/TP_EIO (printed). */
static int scan(const char *dir, struct mig **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "migrate: cannot open %s: %s\n", dir, strerror(errno));
        return TP_EINVAL;
    }
    struct mig *m = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".sql") != 0)
            continue; /* README and friends */
        int v = parse_name(e->d_name, len);
        if (v < 0 || len - 4 >= sizeof(m->name)) {
            fprintf(stderr, "migrate: %s/%s: file name must be NNNN_name.sql\n", dir, e->d_name);
            rc = TP_EINVAL;
            break;
        }
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        struct stat st;
        if (f == NULL || fstat(fileno(f), &st) != 0 || st.st_size > MAX_FILE_SIZE) {
            fprintf(stderr, "migrate: cannot read %s\n", path);
            if (f != NULL)
                fclose(f);
            rc = TP_EIO;
            break;
        }
        m = tp_xrealloc(m, (n + 1) * sizeof(*m));
        struct mig *x = &m[n++];
        memset(x, 0, sizeof(*x));
        x->version = v;
        memcpy(x->name, e->d_name, len - 4);
        x->sql = tp_xmalloc((size_t)st.st_size + 1);
        size_t got = fread(x->sql, 1, (size_t)st.st_size, f);
        x->sql[got] = '\0';
        fclose(f);
        uint8_t h[TP_SHA256_LEN];
        tp_sha256(x->sql, got, h);
        tp_hex_encode(h, sizeof(h), x->checksum);
    }
    closedir(d);
    if (rc == 0 && n > 1) {
        qsort(m, n, sizeof(*m), cmp_mig);
        for (size_t i = 1; i < n; i++) {
            if (m[i].version == m[i - 1].version) {
                fprintf(stderr, "migrate: %s/%s.sql and %s/%s.sql have the same number\n", dir,
                        m[i - 1].name, dir, m[i].name);
                rc = TP_EINVAL;
                break;
            }
        }
    }
    if (rc != 0) {
        free_migs(m, n);
        return rc;
    }
    *out = m;
    *count = n;
    return 0;
}

/* Applies one migration and records it, in one transaction. */
static int apply(struct tp_pg *pg, const struct mig *m, char *err, size_t errlen)
{
    int rc = tp_pg_begin(pg, err, errlen);
    if (rc != 0)
        return rc;
    rc = tp_pg_exec(pg, m->sql, err, errlen);
    if (rc == 0) {
        char v[16];
        snprintf(v, sizeof(v), "%d", m->version);
        const char *params[] = {v, m->name, m->checksum};
        rc = tp_pg_exec_params(pg,
                               "INSERT INTO schema_migrations (version, name, checksum) "
                               "VALUES ($1, $2, $3)",
                               3, params, NULL, err, errlen);
    }
    if (rc == 0)
        rc = tp_pg_commit(pg, err, errlen);
    if (rc != 0)
        (void)tp_pg_rollback(pg, NULL, 0);
    return rc;
}

int tp_migrate_dir(const struct tp_config *cfg, const char *dir)
{
    struct mig *m = NULL;
    size_t n = 0;
    struct tp_pg *pg = NULL;
    struct tp_pg_result *res = NULL;
    char err[512];
    int rc;

    if (cfg->postgres.url[0] == '\0') {
        fprintf(stderr, "migrate: postgres.url is empty (set TICKPOOL_POSTGRES_URL, or start "
                        "the embedded Postgres with scripts/up)\n");
        return TP_EINVAL;
    }
    if ((rc = scan(dir, &m, &n)) != 0)
        return rc;
    /* No statement_timeout: a migration may legitimately run long, and the lock may wait. */
    pg = tp_pg_connect(cfg->postgres.url, 0, err, sizeof(err));
    if (pg == NULL) {
        char masked[600];
        tp_config_mask_url(cfg->postgres.url, masked, sizeof(masked));
        fprintf(stderr, "migrate: %s (url %s)\n", err, masked);
        rc = TP_EUNAVAIL;
        goto fail;
    }
    if ((rc = tp_pg_exec(pg, "SELECT pg_advisory_lock(" LOCK_KEY ")", err, sizeof(err))) != 0 ||
        (rc = tp_pg_exec(pg,
                         "SET client_min_messages = warning;"
                         "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         " version int PRIMARY KEY,"
                         " name text NOT NULL,"
                         " checksum text NOT NULL,"
                         " applied_at timestamptz NOT NULL DEFAULT now())",
                         err, sizeof(err))) != 0 ||
        (rc = tp_pg_query(pg, "SELECT version, name, checksum FROM schema_migrations ORDER BY 1",
                          &res, err, sizeof(err))) != 0) {
        fprintf(stderr, "migrate: %s\n", err);
        goto fail;
    }

    /* Verify what is applied before applying anything. */
    size_t already = 0;
    int at = 0;
    for (int r = 0; r < tp_pg_result_rows(res); r++) {
        int64_t v = 0;
        tp_pg_result_int64(res, r, 0, &v);
        const char *name = tp_pg_result_get(res, r, 1);
        const char *sum = tp_pg_result_get(res, r, 2);
        at = TP_MAX(at, (int)v);
        struct mig *x = NULL;
        for (size_t i = 0; i < n; i++)
            if (m[i].version == v)
                x = &m[i];
        if (x == NULL) {
            fprintf(stderr, "migrate: warning: applied migration %s has no file in %s\n",
                    name ? name : "?", dir);
            continue;
        }
        if (sum == NULL || strcmp(sum, x->checksum) != 0) {
            fprintf(stderr,
                    "migrate: %s/%s.sql was changed after it was applied (checksum %.12s in the "
                    "database, %.12s on disk); restore it and put the change in a new "
                    "migration\n",
                    dir, x->name, sum ? sum : "?", x->checksum);
            rc = TP_ECONFLICT;
            goto fail;
        }
        x->applied = true;
        already++;
    }

    size_t applied = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].applied)
            continue;
        if (m[i].version < at)
            fprintf(stderr, "migrate: warning: %s is older than the applied version %d\n",
                    m[i].name, at);
        printf("applying %s ... ", m[i].name);
        fflush(stdout);
        int64_t t0 = tp_mono_ms();
        rc = apply(pg, &m[i], err, sizeof(err));
        if (rc != 0) {
            printf("FAILED\n");
            fflush(stdout);
            fprintf(stderr, "migrate: %s/%s.sql failed: %s\n", dir, m[i].name, err);
            goto fail;
        }
        printf("ok (%lld ms)\n", (long long)(tp_mono_ms() - t0));
        fflush(stdout);
        at = TP_MAX(at, m[i].version);
        applied++;
    }
    printf("migrations: %zu applied, %zu already applied, schema at version %d\n", applied, already,
           at);
    fflush(stdout);
    rc = 0;
fail:
    tp_pg_result_free(res);
    if (pg != NULL)
        (void)tp_pg_exec(pg, "SELECT pg_advisory_unlock(" LOCK_KEY ")", NULL, 0);
    tp_pg_close(pg);
    free_migs(m, n);
    return rc;
}

int tp_migrate_run(const struct tp_config *cfg)
{
    const char *dir = getenv("TP_MIGRATIONS_DIR");
    return tp_migrate_dir(cfg, dir != NULL && dir[0] != '\0' ? dir : "migrations");
}
