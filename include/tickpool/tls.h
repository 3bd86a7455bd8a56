/*
 * TLS for HTTPS and WSS with mbedTLS 2.28: TLS 1.2 minimum, ECDHE with AES-GCM or
 * ChaCha20-Poly1305 only. The only module that includes mbedTLS's TLS headers.
 */
#ifndef TP_TLS_H
#define TP_TLS_H

#include <stddef.h>

struct tp_io;
struct tp_config_server;
struct tp_tls_ctx;

/**
 * Creates a server context from cfg->tls_cert/tls_key; when those are empty, loads or (first run)
 * generates a self-signed certificate and key under cfg->var_dir/tls/ with mbedTLS's x509
 * writer. Returns 0 and sets *out, or a TP_E* code with a readable message in err.
 */
int tp_tls_ctx_new(const struct tp_config_server *cfg, struct tp_tls_ctx **out, char *err,
                   size_t errlen);
/** Frees a context; NULL is a no-op. Every io made from it must be deinited first. */
void tp_tls_ctx_free(struct tp_tls_ctx *ctx);

/**
 * Initialises `io` as the server side of a TLS session on non-blocking `fd` (borrowed).
 * The caller drives tp_io_handshake until it returns 0. Returns 0 or a TP_E* code.
 */
int tp_tls_io_init(struct tp_io *io, struct tp_tls_ctx *ctx, int fd);

/**
 * Generates a self-signed certificate for `cn` (valid `days`) and writes PEM files
 * `cert_path` and `key_path` (mode 0600 for the key). Returns 0 or a TP_E* code.
 */
int tp_tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn, int days,
                            char *err, size_t errlen);

#endif
