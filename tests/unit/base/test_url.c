/* Unit tests for URLs (src/base/url.c): percent-decoding, with the hostile cases (broken
 * escapes, a NUL encoded or literal), and the Redis URL syntax of redis.url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/base/url.h"

#include <string.h>

static void test_decode(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(tp_url_decode("a%20b+c", 7, out, true), 5);
    assert_string_equal(out, "a b c");
    assert_int_equal(tp_url_decode("a%20b+c", 7, out, false), 5);
    assert_string_equal(out, "a b+c");
    assert_int_equal(tp_url_decode("%2e%2E", 6, out, false), 2);
    assert_string_equal(out, "..");
    assert_int_equal(tp_url_decode("%", 1, out, false), TP_EINVAL);
    assert_int_equal(tp_url_decode("%4", 2, out, false), TP_EINVAL);
    assert_int_equal(tp_url_decode("%g0", 3, out, false), TP_EINVAL);
    assert_int_equal(tp_url_decode("a%00", 4, out, false), TP_EINVAL);
    assert_int_equal(tp_url_decode("", 0, out, false), 0);
    /* a literal NUL inside the span is refused too, not silently cut at */
    assert_int_equal(tp_url_decode("a\0b", 3, out, false), TP_EINVAL);
    /* escapes cut by the span's end */
    assert_int_equal(tp_url_decode("%41", 2, out, false), TP_EINVAL);
    assert_int_equal(tp_url_decode("%41", 3, out, false), 1);
    assert_string_equal(out, "A");
    assert_int_equal(tp_url_decode("%ff%FF", 6, out, false), 2);
    assert_int_equal((unsigned char)out[0], 0xff);
}

static void test_parse_redis(void **state)
{
    (void)state;
    struct tp_url_redis u;
    assert_int_equal(tp_url_parse_redis("redis://127.0.0.1:6380", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_int_equal(tp_url_parse_redis("redis://:s%40cret@db.example:7000/3", &u), 0);
    assert_string_equal(u.password, "s@cret");
    assert_string_equal(u.user, "");
    assert_string_equal(u.host, "db.example");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    assert_int_equal(tp_url_parse_redis("redis://app:pw@[::1]:6379?db=2", &u), 0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.db, 2);
    assert_int_equal(tp_url_parse_redis("redis://localhost", &u), 0);
    assert_int_equal(u.port, 6379);
    assert_int_equal(tp_url_parse_redis("unix:///run/redis.sock?db=5", &u), 0);
    assert_string_equal(u.path, "/run/redis.sock");
    assert_int_equal(u.db, 5);

    const char *bad[] = {"",
                         "http://x",
                         "redis://",
                         "redis://host:0",
                         "redis://host:65536",
                         "redis://host:12ab",
                         "redis://host/x",
                         "redis://:pw%4@host",
                         "redis://:pw%00x@host", /* an encoded NUL would cut the password */
                         "redis://[::1",
                         "unix://relative.sock",
                         "unix://",
                         "redis://host?db=",
                         "rediss://host"};
    for (size_t i = 0; i < TP_ARRAY_LEN(bad); i++)
        assert_int_equal(tp_url_parse_redis(bad[i], &u), TP_EINVAL);
    /* a field longer than any redis.url, and one that decodes into more than its buffer */
    char big[1200] = "redis://:";
    memset(big + 9, 'p', 1100);
    strcpy(big + 1109, "@host");
    assert_int_equal(tp_url_parse_redis(big, &u), TP_EINVAL);
    char user[300] = "redis://";
    memset(user + 8, 'u', 200);
    strcpy(user + 208, ":pw@host");
    assert_int_equal(tp_url_parse_redis(user, &u), TP_EINVAL); /* user[128] */
    assert_int_equal(tp_url_parse_redis(NULL, &u), TP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_parse_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
