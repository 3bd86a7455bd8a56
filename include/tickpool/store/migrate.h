/*
 * Schema migrations: migrations/<NNNN>_<name>.sql applied in numeric order, each in its own
 * transaction together with its row in schema_migrations(version, name, checksum, applied_at).
 * Applied files are skipped; an applied file whose SHA-256 changed is refused. A session
 * advisory lock serialises concurrent runs (the second waits, then finds nothing to do).
 */
#ifndef TP_MIGRATE_H
#define TP_MIGRATE_H

struct tp_config;

/**
 * Applies pending migrations from `dir` to cfg->postgres.url, printing one progress line per
 * file and a summary on stdout (errors on stderr, naming the file). Returns 0, TP_EUNAVAIL
 * (cannot connect), TP_ECONFLICT (an applied migration changed), TP_EINVAL (bad directory or
 * file names) or the failing statement's error code.
 */
int tp_migrate_dir(const struct tp_config *cfg, const char *dir);

/** tp_migrate_dir with $TP_MIGRATIONS_DIR, or "migrations" (relative to the cwd). */
int tp_migrate_run(const struct tp_config *cfg);

#endif
