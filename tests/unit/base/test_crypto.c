/* Known-answer tests for src/base/crypto.c: FIPS 180 digests, RFC 4231 HMAC, RFC 4648 base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/crypto.h"

static void hex_of(const uint8_t *d, size_t n, char *out)
{
    tp_hex_encode(d, n, out);
}

static void test_sha1(void **state)
{
    (void)state;
    uint8_t d[TP_SHA1_LEN];
    char hex[2 * TP_SHA1_LEN + 1];
    tp_sha1("abc", 3, d);
    hex_of(d, sizeof d, hex);
    assert_string_equal(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    tp_sha1("", 0, d);
    hex_of(d, sizeof d, hex);
    assert_string_equal(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tp_sha1(m, strlen(m), d);
    hex_of(d, sizeof d, hex);
    assert_string_equal(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

static void test_sha256(void **state)
{
    (void)state;
    uint8_t d[TP_SHA256_LEN];
    char hex[2 * TP_SHA256_LEN + 1];
    tp_sha256("abc", 3, d);
    hex_of(d, sizeof d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    tp_sha256("", 0, d);
    hex_of(d, sizeof d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tp_sha256(m, strlen(m), d);
    hex_of(d, sizeof d, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* RFC 4231 test cases 1, 2, 3, 4 and 6 (6: key longer than the block size). */
static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t mac[TP_SHA256_LEN];
    char hex[2 * TP_SHA256_LEN + 1];
    uint8_t key[131];

    memset(key, 0x0b, 20);
    tp_hmac_sha256(key, 20, "Hi There", 8, mac);
    hex_of(mac, sizeof mac, hex);
    assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    tp_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    hex_of(mac, sizeof mac, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    uint8_t data[50];
    memset(key, 0xaa, 20);
    memset(data, 0xdd, sizeof data);
    tp_hmac_sha256(key, 20, data, sizeof data, mac);
    hex_of(mac, sizeof mac, hex);
    assert_string_equal(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

    uint8_t key4[25];
    for (int i = 0; i < 25; i++)
        key4[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, sizeof data);
    tp_hmac_sha256(key4, sizeof key4, data, sizeof data, mac);
    hex_of(mac, sizeof mac, hex);
    assert_string_equal(hex, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

    memset(key, 0xaa, 131);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    tp_hmac_sha256(key, 131, m6, strlen(m6), mac);
    hex_of(mac, sizeof mac, hex);
    assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* RFC 6455 §1.3: the server's Sec-WebSocket-Accept for the sample nonce. */
static void test_websocket_accept(void **state)
{
    (void)state;
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char cat[128];
    snprintf(cat, sizeof cat, "%s%s", key, guid);
    uint8_t d[TP_SHA1_LEN];
    tp_sha1(cat, strlen(cat), d);
    char b64[32];
    int n = tp_base64_encode(d, sizeof d, b64, sizeof b64);
    assert_int_equal(n, 28);
    assert_string_equal(b64, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    uint8_t nonce[32];
    n = tp_base64_decode(key, strlen(key), nonce, sizeof nonce);
    assert_int_equal(n, 16);
    assert_memory_equal(nonce, "the sample nonce", 16);
}

/* RFC 4648 §10 vectors, both directions. */
static void test_base64_rfc4648(void **state)
{
    (void)state;
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < TP_ARRAY_LEN(plain); i++) {
        char out[16];
        int n = tp_base64_encode(plain[i], strlen(plain[i]), out, sizeof out);
        assert_int_equal(n, (int)strlen(enc[i]));
        assert_string_equal(out, enc[i]);
        uint8_t dec[16];
        n = tp_base64_decode(enc[i], strlen(enc[i]), dec, sizeof dec);
        assert_int_equal(n, (int)strlen(plain[i]));
        assert_memory_equal(dec, plain[i], (size_t)n);
    }
}

static void test_base64_edges(void **state)
{
    (void)state;
    char out[16];
    uint8_t dec[16];
    /* Output buffer exactly the documented size works; one byte less does not. */
    assert_int_equal(tp_base64_encode("foo", 3, out, 5), 4);
    assert_int_equal(tp_base64_encode("foo", 3, out, 4), TP_ETOOBIG);
    assert_int_equal(tp_base64_encode("", 0, out, 1), 0);
    assert_string_equal(out, "");
    assert_int_equal(tp_base64_encode("", 0, out, 0), TP_ETOOBIG);

    /* Binary bytes, including the '+' and '/' alphabet characters. */
    const uint8_t bin[] = {0xfb, 0xff, 0xbf, 0x00, 0x01};
    assert_int_equal(tp_base64_encode(bin, sizeof bin, out, sizeof out), 8);
    assert_string_equal(out, "+/+/AAE=");
    assert_int_equal(tp_base64_decode(out, 8, dec, sizeof dec), 5);
    assert_memory_equal(dec, bin, 5);

    /* Decode output too small. */
    assert_int_equal(tp_base64_decode("Zm9vYmFy", 8, dec, 5), TP_ETOOBIG);
    assert_int_equal(tp_base64_decode("Zm9vYmFy", 8, dec, 6), 6);

    /* Hostile and malformed inputs. */
    assert_int_equal(tp_base64_decode("Zm9", 3, dec, sizeof dec), TP_EINVAL);      /* not /4 */
    assert_int_equal(tp_base64_decode("Zm9v\r\n", 6, dec, sizeof dec), TP_EINVAL); /* CRLF */
    assert_int_equal(tp_base64_decode("Zm 9v", 5, dec, sizeof dec), TP_EINVAL);
    assert_int_equal(tp_base64_decode("Zm 9vYmE", 8, dec, sizeof dec), TP_EINVAL); /* space */
    assert_int_equal(tp_base64_decode("Zm-_", 4, dec, sizeof dec), TP_EINVAL); /* url alphabet */
    assert_int_equal(tp_base64_decode("Z===", 4, dec, sizeof dec), TP_EINVAL); /* 3 pad */
    assert_int_equal(tp_base64_decode("Zg==Zg==", 8, dec, sizeof dec), TP_EINVAL); /* inner pad */
    assert_int_equal(tp_base64_decode("Zm=v", 4, dec, sizeof dec), TP_EINVAL);
    assert_int_equal(tp_base64_decode("====", 4, dec, sizeof dec), TP_EINVAL);
    const char nul[] = {'Z', 'm', '\0', 'v'};
    assert_int_equal(tp_base64_decode(nul, 4, dec, sizeof dec), TP_EINVAL);
    const char hi[] = {'Z', 'm', (char)0xc3, 'v'};
    assert_int_equal(tp_base64_decode(hi, 4, dec, sizeof dec), TP_EINVAL);
    /* Length argument is honoured: trailing garbage past n is not read. */
    assert_int_equal(tp_base64_decode("Zm9v!!!!", 4, dec, sizeof dec), 3);
}

static void test_hex(void **state)
{
    (void)state;
    const uint8_t bin[] = {0x00, 0x01, 0xab, 0xcd, 0xef, 0xff};
    char hex[13];
    tp_hex_encode(bin, sizeof bin, hex);
    assert_string_equal(hex, "0001abcdefff");
    uint8_t out[6];
    assert_int_equal(tp_hex_decode("0001ABCDefFF", out, 6), 0);
    assert_memory_equal(out, bin, 6);
    tp_hex_encode(bin, 0, hex);
    assert_string_equal(hex, "");
    assert_int_equal(tp_hex_decode("", out, 0), 0);

    assert_int_equal(tp_hex_decode("0g", out, 1), TP_EINVAL);
    assert_int_equal(tp_hex_decode("g0", out, 1), TP_EINVAL);
    assert_int_equal(tp_hex_decode("0x12", out, 2), TP_EINVAL);
    assert_int_equal(tp_hex_decode(" 1", out, 1), TP_EINVAL);
    assert_int_equal(tp_hex_decode("-1", out, 1), TP_EINVAL);
    /* Shorter than 2n: stops at the NUL instead of reading past it. */
    assert_int_equal(tp_hex_decode("abc", out, 2), TP_EINVAL);
    assert_int_equal(tp_hex_decode("ab", out, 2), TP_EINVAL);
}

static void test_memeq_ct(void **state)
{
    (void)state;
    assert_int_equal(tp_memeq_ct("abcdef", "abcdef", 6), 0);
    assert_int_not_equal(tp_memeq_ct("abcdef", "abcdeg", 6), 0);
    assert_int_not_equal(tp_memeq_ct("xbcdef", "abcdef", 6), 0);
    assert_int_equal(tp_memeq_ct("a", "b", 0), 0);
    uint8_t a[64] = {0}, b[64] = {0};
    b[63] = 0x80;
    assert_int_not_equal(tp_memeq_ct(a, b, 64), 0);
    assert_int_equal(tp_memeq_ct(a, b, 63), 0);
}

static void test_random(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    assert_int_equal(tp_random_bytes(a, sizeof a), 0);
    assert_int_equal(tp_random_bytes(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(tp_random_bytes(a, 0), 0);

    /* Large request (getrandom may return short above 256 bytes): all filled, and bytes look
     * uniform enough that every value 0..255 appears in 64 KiB. */
    enum { BIG = 65536 };
    static uint8_t big[BIG];
    memset(big, 0, sizeof big);
    assert_int_equal(tp_random_bytes(big, sizeof big), 0);
    int seen[256] = {0};
    for (size_t i = 0; i < BIG; i++)
        seen[big[i]]++;
    for (int v = 0; v < 256; v++)
        assert_true(seen[v] > 0);
    /* The last 32 bytes are not left zero by a short read. */
    static const uint8_t zero[32];
    assert_memory_not_equal(big + BIG - 32, zero, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha1),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_websocket_accept),
        cmocka_unit_test(test_base64_rfc4648),
        cmocka_unit_test(test_base64_edges),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_memeq_ct),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
