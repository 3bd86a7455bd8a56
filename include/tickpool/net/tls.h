/*
 * TLS for HTTPS and WSS with mbedTLS 2.28: TLS 1.2 only, ECDHE with AES-GCM or
 * ChaCha20-Poly1305 only. The only module that includes mbedTLS's TLS headers.
 *
 * Process model: the master calls tp_tls_prepare() once before forking; each worker calls
 * tp_tls_ctx_new() after fork (it seeds its own random generator, never shared across fork).
 */
#ifndef TP_TLS_H
#define TP_TLS_H

#include <stddef.h>

struct tp_io;
struct tp_config_server;
struct tp_tls_ctx;

/**
 * Master, before fork: checks that cfg->tls_cert/tls_key load and match, or when both are empty
 * ensures cfg->var_dir/tls/{cert,key}.pem exist (generating a self-signed ECDSA P-256 pair for
 * localhost on first run). Logs what it did. Returns 0 or a TP_E* code with a message in err.
 */
int tp_tls_prepare(const struct tp_config_server *cfg, char *err, size_t errlen);

/**
 * Worker, after fork: creates a server context from the files tp_tls_prepare checked (it runs
 * tp_tls_prepare itself if the self-signed files are missing). Returns 0 and sets *out, or a
 * TP_E* code with a readable message in err.
 */
int tp_tls_ctx_new(const struct tp_config_server *cfg, struct tp_tls_ctx **out, char *err,
                   size_t errlen);
/**
 * Client context for loopback tools and tests (loadgen's wss): the server's TLS 1.2 suites, and
 * the peer's certificate is NOT verified. Use with tp_tls_io_init (which then makes client
 * sessions); each connection resumes the last session the context established (its ticket),
 * falling back to a full handshake. Returns 0 and sets *out, or a TP_E* code and err.
 */
int tp_tls_client_ctx_new(struct tp_tls_ctx **out, char *err, size_t errlen);
/** Frees a context; NULL is a no-op. Every io made from it must be deinited first. */
void tp_tls_ctx_free(struct tp_tls_ctx *ctx);

/**
 * Initialises `io` as a TLS session on non-blocking `fd` (borrowed): the server side with a
 * server context, the client side with a client one.
 * The caller drives tp_io_handshake until it returns 0, reads until TP_IO_WANT_READ (mbedTLS may
 * hold decrypted bytes poll cannot see), retries a write that returned TP_IO_WANT_* with the same
 * leading bytes, and calls tp_io_deinit BEFORE closing fd. Returns 0 or a TP_E* code.
 */
int tp_tls_io_init(struct tp_io *io, struct tp_tls_ctx *ctx, int fd);

/**
 * Generates a self-signed ECDSA P-256 certificate for `cn` (plus SAN localhost, 127.0.0.1, ::1;
 * valid `days`) and writes PEM files `cert_path` and `key_path` (key mode 0600), each atomically
 * via a temp file and rename. Returns 0 or a TP_E* code with a message in err.
 */
int tp_tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn, int days,
                            char *err, size_t errlen);

#endif
