/*
 * TLS for HTTPS and WSS over mbedTLS 2.28: certificate preparation (load the configured pair or
 * generate a self-signed one under var_dir/tls/), a per-process server context, and a
 * `struct tp_io` implementation for non-blocking sockets.
 *
 * Process model: the master calls tp_tls_prepare() once before forking, so that workers only
 * ever read finished files; every worker then calls tp_tls_ctx_new() after fork(), which seeds
 * its own CTR-DRBG. DRBG state is never created before fork, so no two processes can emit the
 * same "random" bytes.
 */
#include "tickpool/net/tls.h"
#include "tickpool/base/common.h"
#include "tickpool/base/config.h"
#include "tickpool/net/io.h"
#include "tickpool/base/log.h"
#include "tickpool/base/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#define MOD "tls"

/* Self-signed certificate parameters (CA/Browser Forum's old 825-day maximum). */
#define SELF_SIGNED_CN "localhost"
#define SELF_SIGNED_DAYS 825
/* Session tickets: key lifetime in seconds. Tickets are per worker (each has its own key), so a
 * client that lands on another worker simply does a full handshake. */
#define TICKET_LIFETIME_S 3600

struct tp_tls_ctx {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    mbedtls_ssl_ticket_context ticket;
    mbedtls_ssl_config conf;
    /* Client contexts: the last session established, resumed by the next connection. */
    bool client, has_session;
    mbedtls_ssl_session session;
};

/* Per-connection state behind tp_io._impl. */
struct tls_conn {
    mbedtls_ssl_context ssl;
    struct tp_tls_ctx *ctx;
    int fd;
    bool handshake_done;
    /* Plaintext bytes mbedTLS already took into a record it could not finish sending (see
     * tls_write). 0 when nothing is pending. */
    size_t write_pending;
};

/* TLS 1.2 AEAD suites with forward secrecy only, ECDSA first (our self-signed key is P-256);
 * the RSA variants let an RSA certificate from the config work too. */
static const int ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

static const char *alpn_protos[] = {"http/1.1", NULL};

/* --- Helpers --- */

/* Formats "what: mbedTLS's description (-0xNNNN)" into err. */
static void set_mbed_err(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_mbed_err(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    char what[768], desc[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    mbedtls_strerror(rc, desc, sizeof desc);
    snprintf(err, errlen, "%s: %s (-0x%04x)", what, desc, (unsigned)-rc);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* mkdir -p with `mode` for each created component. Returns 0 or -1 with errno set. */
static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/*
 * Writes `data` to `path` atomically: a private temp file in the same directory, fsync, then
 * rename(2), so a reader sees either the old complete file or the new complete one. `mode` is
 * applied at creation (the key is never readable by others, even briefly).
 */
static int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err,
                             size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        set_err(err, errlen, "%s: path too long", path);
        return TP_ETOOBIG;
    }
    unlink(tmp); /* a leftover from a crashed run with the same pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return TP_EIO;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            set_err(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        set_err(err, errlen, "%s: close failed: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "%s: rename failed: %s", path, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return TP_EIO;
}

/* Seeds a CTR-DRBG from the platform entropy source (getrandom), personalised with the pid. */
static int seed_drbg(mbedtls_entropy_context *entropy, mbedtls_ctr_drbg_context *drbg, char *err,
                     size_t errlen)
{
    char pers[64];
    int n = snprintf(pers, sizeof pers, "tickpool-tls pid=%ld t=%lld", (long)getpid(),
                     (long long)tp_mono_ms());
    int rc = mbedtls_ctr_drbg_seed(drbg, mbedtls_entropy_func, entropy, (const unsigned char *)pers,
                                   (size_t)n);
    if (rc != 0) {
        set_mbed_err(err, errlen, rc, "seeding the TLS random generator");
        return TP_EIO;
    }
    return 0;
}

/*
 * Loads a PEM/DER certificate chain and private key, and checks that the key belongs to the
 * first certificate. Errors name the file. Returns 0, TP_ENOTFOUND (unreadable file) or TP_EINVAL.
 */
static int load_pair(const char *cert_path, const char *key_path, mbedtls_x509_crt *cert,
                     mbedtls_pk_context *key, char *err, size_t errlen)
{
    if (access(cert_path, R_OK) != 0) {
        set_err(err, errlen, "TLS certificate %s: %s", cert_path, strerror(errno));
        return TP_ENOTFOUND;
    }
    if (access(key_path, R_OK) != 0) {
        set_err(err, errlen, "TLS key %s: %s", key_path, strerror(errno));
        return TP_ENOTFOUND;
    }
    int rc = mbedtls_x509_crt_parse_file(cert, cert_path);
    if (rc != 0) {
        /* rc > 0: some certificates of a chain failed to parse. */
        if (rc > 0)
            set_err(err, errlen, "TLS certificate %s: %d certificate(s) could not be parsed",
                    cert_path, rc);
        else
            set_mbed_err(err, errlen, rc, "TLS certificate %s: cannot parse", cert_path);
        return TP_EINVAL;
    }
    rc = mbedtls_pk_parse_keyfile(key, key_path, NULL);
    if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
        set_err(err, errlen, "TLS key %s: encrypted keys are not supported", key_path);
        return TP_EINVAL;
    }
    if (rc != 0) {
        set_mbed_err(err, errlen, rc, "TLS key %s: cannot parse", key_path);
        return TP_EINVAL;
    }
    rc = mbedtls_pk_check_pair(&cert->pk, key);
    if (rc != 0) {
        set_mbed_err(err, errlen, rc, "TLS key %s does not match certificate %s", key_path,
                     cert_path);
        return TP_EINVAL;
    }
    return 0;
}

/* Resolves the certificate and key paths: configured ones, or var_dir/tls/{cert,key}.pem. */
static int resolve_paths(const struct tp_config_server *cfg, char *cert, char *key, size_t len,
                         bool *self_signed, char *err, size_t errlen)
{
    bool has_cert = cfg->tls_cert[0] != '\0', has_key = cfg->tls_key[0] != '\0';
    if (has_cert != has_key) {
        set_err(err, errlen, "server.tls_cert and server.tls_key must be set together");
        return TP_EINVAL;
    }
    *self_signed = !has_cert;
    int n1, n2;
    if (has_cert) {
        n1 = snprintf(cert, len, "%s", cfg->tls_cert);
        n2 = snprintf(key, len, "%s", cfg->tls_key);
    } else {
        n1 = snprintf(cert, len, "%s/tls/cert.pem", cfg->var_dir);
        n2 = snprintf(key, len, "%s/tls/key.pem", cfg->var_dir);
    }
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= len || (size_t)n2 >= len) {
        set_err(err, errlen, "TLS certificate or key path too long");
        return TP_ETOOBIG;
    }
    return 0;
}

/* --- Self-signed certificate --- */

/* Formats t as X.509's "YYYYMMDDhhmmss" (UTC). */
static void x509_time(time_t t, char out[16])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

/*
 * DER of the subjectAltName extension value (RFC 5280 §4.2.1.6):
 *   GeneralNames ::= SEQUENCE OF GeneralName
 *   dNSName [2] IA5String, iPAddress [7] OCTET STRING (4 or 16 bytes)
 * mbedTLS 2.28 has no SAN writer, so it is built with the asn1write primitives, which write
 * backwards from the end of `buf`. Returns the length (the DER ends at buf + size), or <0.
 */
static int write_san(unsigned char *buf, size_t size, const char *cn)
{
    static const unsigned char ip4[] = {127, 0, 0, 1};
    static const unsigned char ip6[16] = {[15] = 1};
    unsigned char *p = buf + size;
    int total = 0, rc;

#define SAN_ITEM(tag, data, n)                                                                     \
    do {                                                                                           \
        int item = 0;                                                                              \
        if ((rc = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)(data), (n))) < 0) \
            return rc;                                                                             \
        item += rc;                                                                                \
        if ((rc = mbedtls_asn1_write_len(&p, buf, (size_t)item)) < 0)                              \
            return rc;                                                                             \
        item += rc;                                                                                \
        if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | (tag))) < 0)     \
            return rc;                                                                             \
        total += item + rc;                                                                        \
    } while (0)

    /* Written in reverse: the final order is DNS:cn, [DNS:localhost,] IP:127.0.0.1, IP:::1. */
    SAN_ITEM(7, ip6, sizeof ip6);
    SAN_ITEM(7, ip4, sizeof ip4);
    if (strcmp(cn, "localhost") != 0)
        SAN_ITEM(2, "localhost", strlen("localhost"));
    SAN_ITEM(2, cn, strlen(cn));
#undef SAN_ITEM

    if ((rc = mbedtls_asn1_write_len(&p, buf, (size_t)total)) < 0)
        return rc;
    total += rc;
    if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) <
        0)
        return rc;
    total += rc;
    return total;
}

int tp_tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn, int days,
                            char *err, size_t errlen)
{
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key;
    mbedtls_x509write_cert crt;
    mbedtls_mpi serial;
    unsigned char *pem = tp_xmalloc(16384);
    char subject[300];
    int ret = TP_EIO, rc;

    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&key);
    mbedtls_x509write_crt_init(&crt);
    mbedtls_mpi_init(&serial);

    if (days <= 0 || days > 3650 || cn == NULL || cn[0] == '\0' || strlen(cn) > 200 ||
        strpbrk(cn, ",=+\\\"<>;") != NULL) {
        set_err(err, errlen, "self-signed certificate: invalid CN or validity");
        ret = TP_EINVAL;
        goto fail;
    }
    if ((ret = seed_drbg(&entropy, &drbg, err, errlen)) != 0)
        goto fail;
    ret = TP_EIO;

    /* ECDSA P-256 key. */
    if ((rc = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0 ||
        (rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                  mbedtls_ctr_drbg_random, &drbg)) != 0) {
        set_mbed_err(err, errlen, rc, "generating the TLS key");
        goto fail;
    }

    /* 127-bit random positive serial (RFC 5280: at most 20 octets, positive, unpredictable). */
    unsigned char sbuf[16];
    if ((rc = mbedtls_ctr_drbg_random(&drbg, sbuf, sizeof sbuf)) != 0) {
        set_mbed_err(err, errlen, rc, "generating the certificate serial");
        goto fail;
    }
    sbuf[0] = (unsigned char)((sbuf[0] & 0x7f) | 0x40);
    if ((rc = mbedtls_mpi_read_binary(&serial, sbuf, sizeof sbuf)) != 0) {
        set_mbed_err(err, errlen, rc, "certificate serial");
        goto fail;
    }

    /* Valid from an hour ago (clients with a slightly slow clock) for `days` days. */
    char not_before[16], not_after[16];
    time_t now = time(NULL);
    x509_time(now - 3600, not_before);
    x509_time(now + (time_t)days * 86400, not_after);
    snprintf(subject, sizeof subject, "CN=%s,O=tickpool", cn);

    unsigned char san[512];
    int san_len = write_san(san, sizeof san, cn);
    if (san_len < 0) {
        set_mbed_err(err, errlen, san_len, "encoding subjectAltName");
        goto fail;
    }

    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, &key);
    mbedtls_x509write_crt_set_issuer_key(&crt, &key);
    if ((rc = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0 ||
        (rc = mbedtls_x509write_crt_set_validity(&crt, not_before, not_after)) != 0 ||
        (rc = mbedtls_x509write_crt_set_subject_name(&crt, subject)) != 0 ||
        (rc = mbedtls_x509write_crt_set_issuer_name(&crt, subject)) != 0 ||
        (rc = mbedtls_x509write_crt_set_basic_constraints(&crt, 0, -1)) != 0 ||
        (rc = mbedtls_x509write_crt_set_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0 ||
        (rc = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
        (rc = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0 ||
        (rc = mbedtls_x509write_crt_set_extension(
             &crt, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
             san + sizeof san - san_len, (size_t)san_len)) != 0) {
        set_mbed_err(err, errlen, rc, "building the self-signed certificate");
        goto fail;
    }

    /* Key first: a reader that finds the new certificate then also finds the matching key
     * (tp_tls_prepare additionally serialises writers with a lock). */
    if ((rc = mbedtls_pk_write_key_pem(&key, pem, 16384)) != 0) {
        set_mbed_err(err, errlen, rc, "encoding the TLS key");
        goto fail;
    }
    if ((ret = write_file_atomic(key_path, pem, strlen((char *)pem), 0600, err, errlen)) != 0)
        goto fail;
    ret = TP_EIO;
    mbedtls_platform_zeroize(pem, 16384);
    if ((rc = mbedtls_x509write_crt_pem(&crt, pem, 16384, mbedtls_ctr_drbg_random, &drbg)) != 0) {
        set_mbed_err(err, errlen, rc, "signing the self-signed certificate");
        goto fail;
    }
    if ((ret = write_file_atomic(cert_path, pem, strlen((char *)pem), 0644, err, errlen)) != 0)
        goto fail;
    ret = 0;
fail:
    mbedtls_platform_zeroize(pem, 16384);
    free(pem);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&crt);
    mbedtls_pk_free(&key);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return ret;
}

/* --- Preparation (master, before fork) --- */

/* Renders "<subject>, expires <date>" of a parsed certificate for log lines. */
static void describe_cert(const mbedtls_x509_crt *c, char *out, size_t len)
{
    char subj[256];
    if (mbedtls_x509_dn_gets(subj, sizeof subj, &c->subject) < 0)
        snprintf(subj, sizeof subj, "?");
    snprintf(out, len, "subject=\"%s\" expires=%04d-%02d-%02d", subj, c->valid_to.year,
             c->valid_to.mon, c->valid_to.day);
}

/*
 * Checks the self-signed pair under var_dir/tls, generating it when absent (or incomplete, or
 * expired). Runs under an exclusive flock on var_dir/tls/.lock so two processes sharing a
 * var_dir never interleave their writes into a mismatched pair.
 */
static int prepare_self_signed(const char *dir, const char *cert_path, const char *key_path,
                               char *err, size_t errlen)
{
    char lock_path[PATH_MAX];
    if (mkdir_p(dir, 0700) != 0) {
        set_err(err, errlen, "TLS directory %s: %s", dir, strerror(errno));
        return TP_EIO;
    }
    if (snprintf(lock_path, sizeof lock_path, "%s/.lock", dir) >= (int)sizeof lock_path) {
        set_err(err, errlen, "TLS directory %s: path too long", dir);
        return TP_ETOOBIG;
    }
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0) {
        set_err(err, errlen, "TLS lock %s: %s", lock_path, strerror(errno));
        return TP_EIO;
    }
    while (flock(lock, LOCK_EX) != 0) {
        if (errno != EINTR) {
            set_err(err, errlen, "TLS lock %s: %s", lock_path, strerror(errno));
            close(lock);
            return TP_EIO;
        }
    }

    int ret;
    bool have_cert = access(cert_path, F_OK) == 0, have_key = access(key_path, F_OK) == 0;
    if (have_cert && have_key) {
        mbedtls_x509_crt cert;
        mbedtls_pk_context key;
        mbedtls_x509_crt_init(&cert);
        mbedtls_pk_init(&key);
        ret = load_pair(cert_path, key_path, &cert, &key, err, errlen);
        bool expired = ret == 0 && mbedtls_x509_time_is_past(&cert.valid_to);
        if (ret == 0 && !expired) {
            char desc[320];
            describe_cert(&cert, desc, sizeof desc);
            tp_log_info(MOD, "reusing self-signed certificate\tcert=%s %s", cert_path, desc);
        }
        mbedtls_x509_crt_free(&cert);
        mbedtls_pk_free(&key);
        if (ret != 0) {
            /* Our own files, but broken: do not overwrite what may be someone's edit. */
            size_t n = strlen(err);
            snprintf(err + n, errlen > n ? errlen - n : 0, " (delete %s and %s to regenerate)",
                     cert_path, key_path);
            goto out;
        }
        if (!expired)
            goto out;
        tp_log_warn(MOD, "self-signed certificate expired, regenerating\tcert=%s", cert_path);
    } else if (have_cert || have_key) {
        tp_log_warn(MOD, "incomplete self-signed pair, regenerating\tcert=%s key=%s", cert_path,
                    key_path);
    }

    ret =
        tp_tls_make_self_signed(cert_path, key_path, SELF_SIGNED_CN, SELF_SIGNED_DAYS, err, errlen);
    if (ret == 0)
        tp_log_info(MOD, "generated self-signed certificate\tcert=%s key=%s cn=%s days=%d",
                    cert_path, key_path, SELF_SIGNED_CN, SELF_SIGNED_DAYS);
out:
    flock(lock, LOCK_UN);
    close(lock);
    return ret;
}

int tp_tls_prepare(const struct tp_config_server *cfg, char *err, size_t errlen)
{
    char cert_path[PATH_MAX], key_path[PATH_MAX];
    bool self_signed;
    int ret = resolve_paths(cfg, cert_path, key_path, sizeof cert_path, &self_signed, err, errlen);
    if (ret != 0)
        return ret;

    if (self_signed) {
        char dir[PATH_MAX];
        if (snprintf(dir, sizeof dir, "%s/tls", cfg->var_dir) >= (int)sizeof dir) {
            set_err(err, errlen, "server.var_dir: path too long");
            return TP_ETOOBIG;
        }
        return prepare_self_signed(dir, cert_path, key_path, err, errlen);
    }

    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    mbedtls_x509_crt_init(&cert);
    mbedtls_pk_init(&key);
    ret = load_pair(cert_path, key_path, &cert, &key, err, errlen);
    if (ret == 0) {
        char desc[320];
        describe_cert(&cert, desc, sizeof desc);
        if (mbedtls_x509_time_is_past(&cert.valid_to))
            tp_log_warn(MOD, "configured TLS certificate has expired\tcert=%s %s", cert_path, desc);
        else
            tp_log_info(MOD, "using configured TLS certificate\tcert=%s key=%s %s", cert_path,
                        key_path, desc);
    }
    mbedtls_x509_crt_free(&cert);
    mbedtls_pk_free(&key);
    return ret;
}

/* A context with every part initialised (so tp_tls_ctx_free may run at any point). */
static struct tp_tls_ctx *ctx_alloc(void)
{
    struct tp_tls_ctx *ctx = tp_xcalloc(1, sizeof *ctx);
    mbedtls_entropy_init(&ctx->entropy);
    mbedtls_ctr_drbg_init(&ctx->drbg);
    mbedtls_x509_crt_init(&ctx->cert);
    mbedtls_pk_init(&ctx->key);
    mbedtls_ssl_ticket_init(&ctx->ticket);
    mbedtls_ssl_config_init(&ctx->conf);
    mbedtls_ssl_session_init(&ctx->session);
    return ctx;
}

/* The settings a server and a client share: TLS 1.2 only with our suites and curves, no peer
 * certificate check (the server asks for none; see the client context), no renegotiation. */
static int conf_common(struct tp_tls_ctx *ctx, int endpoint, char *err, size_t errlen)
{
    mbedtls_ssl_config *conf = &ctx->conf;
    int rc = mbedtls_ssl_config_defaults(conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        set_mbed_err(err, errlen, rc, "TLS configuration defaults");
        return TP_EIO;
    }
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &ctx->drbg);
    /* Debian's build enables TLS 1.0 and 1.1; the contract wants 1.2 only (2.28's TLS 1.3 is
     * experimental and not compiled in). */
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, ciphersuites);
    mbedtls_ssl_conf_curves(conf, curves);
    mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    return 0;
}

/* --- Server context (each worker, after fork) --- */

int tp_tls_ctx_new(const struct tp_config_server *cfg, struct tp_tls_ctx **out, char *err,
                   size_t errlen)
{
    char cert_path[PATH_MAX], key_path[PATH_MAX];
    bool self_signed;
    int ret, rc;
    *out = NULL;
    if ((ret = resolve_paths(cfg, cert_path, key_path, sizeof cert_path, &self_signed, err,
                             errlen)) != 0)
        return ret;

    /* Normally tp_tls_prepare already ran in the master; if it did not (tests, tools), make
     * the self-signed pair now. The lock in prepare keeps concurrent workers safe. */
    if (self_signed && (access(cert_path, F_OK) != 0 || access(key_path, F_OK) != 0) &&
        (ret = tp_tls_prepare(cfg, err, errlen)) != 0)
        return ret;

    struct tp_tls_ctx *ctx = ctx_alloc();

    if ((ret = seed_drbg(&ctx->entropy, &ctx->drbg, err, errlen)) != 0)
        goto fail;
    if ((ret = load_pair(cert_path, key_path, &ctx->cert, &ctx->key, err, errlen)) != 0)
        goto fail;

    mbedtls_ssl_config *conf = &ctx->conf;
    if ((ret = conf_common(ctx, MBEDTLS_SSL_IS_SERVER, err, errlen)) != 0)
        goto fail;
    ret = TP_EIO;
    if ((rc = mbedtls_ssl_conf_own_cert(conf, &ctx->cert, &ctx->key)) != 0) {
        set_mbed_err(err, errlen, rc, "TLS certificate %s", cert_path);
        goto fail;
    }
    if ((rc = mbedtls_ssl_conf_alpn_protocols(conf, alpn_protos)) != 0) {
        set_mbed_err(err, errlen, rc, "TLS ALPN");
        goto fail;
    }
    if ((rc = mbedtls_ssl_ticket_setup(&ctx->ticket, mbedtls_ctr_drbg_random, &ctx->drbg,
                                       MBEDTLS_CIPHER_AES_256_GCM, TICKET_LIFETIME_S)) != 0) {
        set_mbed_err(err, errlen, rc, "TLS session tickets");
        goto fail;
    }
    mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
                                        &ctx->ticket);

    *out = ctx;
    return 0;
fail:
    tp_tls_ctx_free(ctx);
    return ret;
}

void tp_tls_ctx_free(struct tp_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    mbedtls_ssl_session_free(&ctx->session);
    mbedtls_ssl_config_free(&ctx->conf);
    mbedtls_ssl_ticket_free(&ctx->ticket);
    mbedtls_pk_free(&ctx->key);
    mbedtls_x509_crt_free(&ctx->cert);
    mbedtls_ctr_drbg_free(&ctx->drbg);
    mbedtls_entropy_free(&ctx->entropy);
    free(ctx);
}

/* --- Client context (tools and tests: loadgen's wss) --- */

int tp_tls_client_ctx_new(struct tp_tls_ctx **out, char *err, size_t errlen)
{
    int ret;
    struct tp_tls_ctx *ctx = ctx_alloc();
    *out = NULL;
    if ((ret = seed_drbg(&ctx->entropy, &ctx->drbg, err, errlen)) != 0)
        goto fail;
    /* Loopback tools talk to a server whose self-signed certificate they cannot know: no
     * verification (conf_common), which is why this context is for tools and tests only. */
    if ((ret = conf_common(ctx, MBEDTLS_SSL_IS_CLIENT, err, errlen)) != 0)
        goto fail;
    ctx->client = true;
    *out = ctx;
    return 0;
fail:
    tp_tls_ctx_free(ctx);
    return ret;
}

/* --- tp_io over mbedTLS --- */

/* BIO send callback: one send(2) on the non-blocking fd. MSG_NOSIGNAL: a closed peer must give
 * EPIPE, not kill the worker with SIGPIPE. */
static int bio_send(void *ud, const unsigned char *buf, size_t len)
{
    struct tls_conn *c = ud;
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_WRITE;
        if (errno == EPIPE || errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

/* BIO receive callback: 0 at EOF (mbedTLS turns it into MBEDTLS_ERR_SSL_CONN_EOF). */
static int bio_recv(void *ud, unsigned char *buf, size_t len)
{
    struct tls_conn *c = ud;
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_READ;
        if (errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

/* Maps an mbedTLS error from read/write to a tp_io result. */
static int map_err(struct tls_conn *c, int rc, const char *op)
{
    switch (rc) {
    case MBEDTLS_ERR_SSL_WANT_READ:
        return TP_IO_WANT_READ;
    case MBEDTLS_ERR_SSL_WANT_WRITE:
        return TP_IO_WANT_WRITE;
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_NET_CONN_RESET:
    /* Only reachable with DTLS client-port reuse, which a TLS stream never negotiates; if it
     * ever appears the session is over all the same. */
    case MBEDTLS_ERR_SSL_CLIENT_RECONNECT:
        return TP_ECLOSED;
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE: {
        tp_log_debug(MOD, "peer sent a fatal alert\tfd=%d op=%s", c->fd, op);
        return TP_ECLOSED;
    }
    default: {
        char desc[160];
        mbedtls_strerror(rc, desc, sizeof desc);
        tp_log_debug(MOD, "TLS error\tfd=%d op=%s err=\"%s\" code=-0x%04x", c->fd, op, desc,
                     (unsigned)-rc);
        return TP_EIO;
    }
    }
}

static ssize_t tls_read(struct tp_io *io, void *buf, size_t n)
{
    struct tls_conn *c = io->_impl;
    if (n == 0)
        return TP_EINVAL; /* 0 would be indistinguishable from EOF */
    if (n > INT_MAX)
        n = INT_MAX;
    int rc = mbedtls_ssl_read(&c->ssl, buf, n);
    if (rc > 0)
        return rc;
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_SSL_CONN_EOF)
        return 0; /* orderly close, or EOF without close_notify (HTTP bodies are length-framed) */
    return map_err(c, rc, "read");
}

/*
 * mbedTLS copies the plaintext into a record before sending; if the socket then blocks it
 * returns WANT_WRITE with the record half sent, and the next mbedtls_ssl_write() only flushes
 * it but returns the *new* call's length. So we remember how many bytes that record holds and
 * report exactly that once it is flushed. The caller must retry with the same leading bytes
 * (at least as many as before), which a buffer-draining connection does naturally.
 */
static ssize_t tls_write(struct tp_io *io, const void *buf, size_t n)
{
    struct tls_conn *c = io->_impl;
    if (n == 0)
        return 0;
    size_t len = n;
    if (c->write_pending > 0) {
        TP_ASSERT(n >= c->write_pending);
        len = c->write_pending;
    } else if (len > INT_MAX) {
        len = INT_MAX;
    }
    int rc = mbedtls_ssl_write(&c->ssl, buf, len);
    if (rc >= 0) {
        c->write_pending = 0;
        return rc;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE && c->handshake_done && c->write_pending == 0) {
        int max = mbedtls_ssl_get_max_out_record_payload(&c->ssl);
        c->write_pending = max > 0 && (size_t)max < len ? (size_t)max : len;
    }
    return map_err(c, rc, "write");
}

static int tls_handshake(struct tp_io *io)
{
    struct tls_conn *c = io->_impl;
    if (c->handshake_done)
        return 0;
    int rc = mbedtls_ssl_handshake(&c->ssl);
    if (rc == 0) {
        c->handshake_done = true;
        /* A client keeps the session (its ticket) for the next connection to resume, as a
         * browser that reconnects does: no ECDHE and no signature to check then. */
        if (c->ctx->client) {
            mbedtls_ssl_session_free(&c->ctx->session);
            mbedtls_ssl_session_init(&c->ctx->session);
            c->ctx->has_session = mbedtls_ssl_get_session(&c->ssl, &c->ctx->session) == 0;
        }
        tp_metrics_inc(TP_METRIC_TLS_HANDSHAKES_TOTAL);
        tp_log_debug(MOD, "handshake done\tfd=%d version=%s cipher=%s", c->fd,
                     mbedtls_ssl_get_version(&c->ssl), mbedtls_ssl_get_ciphersuite(&c->ssl));
        return 0;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ)
        return TP_IO_WANT_READ;
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return TP_IO_WANT_WRITE;
    /* Every other outcome ends the handshake for good: count it once here. */
    tp_metrics_inc(TP_METRIC_TLS_HANDSHAKE_FAILURES_TOTAL);
    if (rc == MBEDTLS_ERR_SSL_CONN_EOF || rc == MBEDTLS_ERR_NET_CONN_RESET ||
        rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        return TP_ECLOSED;
    /* Bad version, no shared cipher, garbage: mbedTLS has already queued the alert. */
    char desc[160];
    mbedtls_strerror(rc, desc, sizeof desc);
    tp_log_debug(MOD, "handshake failed\tfd=%d err=\"%s\" code=-0x%04x", c->fd, desc,
                 (unsigned)-rc);
    return TP_EPROTO;
}

/* Sends close_notify once, best effort (a full socket buffer just drops it), then frees. Must
 * run before the caller closes the fd: the fd number could otherwise already be reused. */
static void tls_deinit(struct tp_io *io)
{
    struct tls_conn *c = io->_impl;
    if (c == NULL)
        return;
    if (c->handshake_done)
        (void)mbedtls_ssl_close_notify(&c->ssl);
    mbedtls_ssl_free(&c->ssl);
    free(c);
    io->_impl = NULL;
}

static const struct tp_io_ops tls_ops = {
    .read = tls_read,
    .write = tls_write,
    .handshake = tls_handshake,
    .deinit = tls_deinit,
};

int tp_tls_io_init(struct tp_io *io, struct tp_tls_ctx *ctx, int fd)
{
    struct tls_conn *c = tp_xcalloc(1, sizeof *c);
    c->fd = fd;
    mbedtls_ssl_init(&c->ssl);
    int rc = mbedtls_ssl_setup(&c->ssl, &ctx->conf);
    if (rc != 0) {
        /* Allocation of the record buffers failed (mbedTLS uses plain calloc). */
        mbedtls_ssl_free(&c->ssl);
        free(c);
        return rc == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TP_ENOMEM : TP_EIO;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    c->ctx = ctx;
    /* A session the server no longer knows (another worker's ticket key, expired) just
     * falls back to a full handshake. */
    if (ctx->client && ctx->has_session)
        (void)mbedtls_ssl_set_session(&c->ssl, &ctx->session);
    io->ops = &tls_ops;
    io->fd = fd;
    io->_impl = c;
    return 0;
}
