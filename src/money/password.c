/*
 * argon2id password hashes. The only file that includes <argon2.h> (docs/conventions.md §1).
 *
 * Parameters: m = 19456 KiB (19 MiB), t = 2 passes, p = 1 lane, 16-byte salt, 32-byte hash:
 * the OWASP Password Storage Cheat Sheet's first argon2id configuration. Measured at 21-30 ms
 * per hash on this project's 2-vCPU Xeon build machine (m=32768,t=1 was ~46 ms, m=47104,t=2
 * ~110 ms), inside the 20-50 ms budget for sign-up and sign-in. Stored hashes carry their
 * parameters, so raising them later only affects new hashes (see tp_password_needs_rehash).
 */
#include "tickpool/money/password.h"
#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

#include <argon2.h>
#include <string.h>

#define T_COST 2
#define M_COST_KIB 19456
#define LANES 1
#define SALT_LEN 16
#define HASH_LEN 32

/* Caps on parameters read back from a stored hash: verify must not let a corrupt or planted
 * row make one login cost gigabytes or minutes. Generous enough for future upgrades. */
#define MAX_M_COST_KIB (256u * 1024)
#define MAX_T_COST 16u
#define MAX_LANES 8u

static const char prefix[] = "$argon2id$v=19$";

int tp_password_hash(const char *pw, size_t n, char *out, size_t outlen)
{
    if (n > TP_PASSWORD_MAX || out == NULL || outlen < TP_PASSWORD_ENCODED_MAX)
        return TP_ETOOBIG;
    TP_ASSERT(argon2_encodedlen(T_COST, M_COST_KIB, LANES, SALT_LEN, HASH_LEN, Argon2_id) <=
              TP_PASSWORD_ENCODED_MAX);
    uint8_t salt[SALT_LEN];
    if (tp_random_bytes(salt, sizeof(salt)) != 0)
        return TP_EIO;
    int rc = argon2id_hash_encoded(T_COST, M_COST_KIB, LANES, n ? pw : "", n, salt, sizeof(salt),
                                   HASH_LEN, out, outlen);
    if (rc == ARGON2_MEMORY_ALLOCATION_ERROR)
        return TP_ENOMEM;
    TP_ASSERT(rc == ARGON2_OK); /* every other failure is a bad constant above */
    return 0;
}

/* Reads a decimal uint32 at *p up to `end`; advances *p. Returns false on no digits/overflow. */
static bool read_u32(const char **p, char end, uint32_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9') {
        x = x * 10 + (uint64_t)(*s - '0');
        if (x > UINT32_MAX)
            return false;
        s++;
    }
    if (*s != end)
        return false;
    *p = s + 1;
    *v = (uint32_t)x;
    return true;
}

/* Parses "$argon2id$v=19$m=M,t=T,p=P$" at the start of a NUL-terminated string. */
static bool parse_params(const char *enc, uint32_t *m, uint32_t *t, uint32_t *p)
{
    if (strncmp(enc, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *s = enc + sizeof(prefix) - 1;
    if (strncmp(s, "m=", 2) != 0)
        return false;
    s += 2;
    if (!read_u32(&s, ',', m) || strncmp(s, "t=", 2) != 0)
        return false;
    s += 2;
    if (!read_u32(&s, ',', t) || strncmp(s, "p=", 2) != 0)
        return false;
    s += 2;
    return read_u32(&s, '$', p);
}

int tp_password_verify(const char *encoded, const char *pw, size_t n)
{
    if (encoded == NULL || n > TP_PASSWORD_MAX || (pw == NULL && n > 0))
        return TP_EINVAL;
    /* Bounded: a stored hash without a NUL in TP_PASSWORD_ENCODED_MAX bytes is corrupt. */
    if (strnlen(encoded, TP_PASSWORD_ENCODED_MAX) >= TP_PASSWORD_ENCODED_MAX)
        return TP_EINVAL;
    uint32_t m, t, p;
    if (!parse_params(encoded, &m, &t, &p) || m > MAX_M_COST_KIB || t > MAX_T_COST || p > MAX_LANES)
        return TP_EINVAL;
    int rc = argon2id_verify(encoded, n ? pw : "", n);
    if (rc == ARGON2_OK)
        return 0;
    if (rc == ARGON2_MEMORY_ALLOCATION_ERROR || rc == ARGON2_THREAD_FAIL)
        return TP_ENOMEM;
    return TP_EINVAL; /* ARGON2_VERIFY_MISMATCH or a decoding error */
}

bool tp_password_needs_rehash(const char *encoded)
{
    uint32_t m, t, p;
    if (encoded == NULL || strnlen(encoded, TP_PASSWORD_ENCODED_MAX) >= TP_PASSWORD_ENCODED_MAX ||
        !parse_params(encoded, &m, &t, &p))
        return true;
    return m != M_COST_KIB || t != T_COST || p != LANES;
}
