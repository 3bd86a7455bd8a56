/* Unit tests for the Redis Cluster rules (src/store/cluster.c): slots against Redis's own
 * CLUSTER KEYSLOT, command routing, the slot map from CLUSTER SLOTS replies recorded on a real
 * 3 + 3 cluster (tests/unit/store/data/), error replies as Redis 7.0 words them, and the
 * decisions, including a map that changes while a command is in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tickpool/base/common.h"
#include "tickpool/store/cluster.h"
#include "tickpool/store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A recorded reply, parsed; NULL when the file is missing or not one reply. */
static struct tp_store_reply *load_reply(const char *name)
{
    char path[512];
    const char *root = getenv("TP_SRC"); /* the source tree (tests/meson.build sets it) */
    snprintf(path, sizeof(path), "%s/tests/unit/store/data/%s", root ? root : ".", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return tp_store_reply_parse(buf, n);
}

static struct tp_store_reply *parse(const char *resp)
{
    return tp_store_reply_parse(resp, strlen(resp));
}

static int slot_of(const char *k)
{
    return tp_cluster_slot(k, strlen(k));
}

static void test_slot(void **state)
{
    (void)state;
    /* expected values from CLUSTER KEYSLOT on Redis 7.0 */
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("tp:{b1}:bal"), 2874);
    assert_int_equal(slot_of("tp:{g}:lease"), 7233);
    assert_int_equal(slot_of("{}x"), 10595);       /* empty tag: the whole key */
    assert_int_equal(slot_of("a{}{b}"), 15033);    /* the first '{' decides, even empty */
    assert_int_equal(slot_of("x{b3}y{z}"), 11128); /* only the first tag counts */
    assert_int_equal(slot_of("{user1000}.following"), 3443);
    assert_int_equal(slot_of(""), 0);
    assert_int_equal(slot_of("tp:{b3}:bal"), slot_of("tp:{b3}:outbox"));
}

static int route(int argc, const char **argv)
{
    size_t len[16];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    return tp_cluster_command_slot(argc, argv, len);
}

static void test_command_slot(void **state)
{
    (void)state;
    const char *get[] = {"HGET", "tp:{b1}:bal", "7"};
    assert_int_equal(route(3, get), 2874);
    const char *ping[] = {"PING"};
    assert_int_equal(route(1, ping), TP_CLUSTER_ANY);
    const char *pub[] = {"publish", "tp:bcast", "x"};
    assert_int_equal(route(3, pub), TP_CLUSTER_ANY);
    const char *eval[] = {"EVALSHA", "abc", "2", "tp:{b3}:bal", "tp:{b3}:seq", "arg"};
    assert_int_equal(route(6, eval), 11128);
    const char *cross[] = {"EVALSHA", "abc", "2", "tp:{b3}:bal", "tp:{b1}:seq"};
    assert_int_equal(route(5, cross), TP_CLUSTER_CROSS);
    const char *nokeys[] = {"EVAL", "return 1", "0"};
    assert_int_equal(route(3, nokeys), TP_CLUSTER_ANY);
    const char *badnk[] = {"EVAL", "return 1", "9", "k"};
    assert_int_equal(route(4, badnk), TP_CLUSTER_ANY);
    const char *xr[] = {"XREADGROUP", "GROUP", "g",   "c",       "COUNT",
                        "10",         "BLOCK", "100", "STREAMS", "tp:{b1}:outbox",
                        "tp:{b1}:x",  ">",     ">"};
    assert_int_equal(route(13, xr), 2874);
    const char *xr2[] = {"XREADGROUP",     "GROUP",         "g", "c", "STREAMS",
                         "tp:{b1}:outbox", "tp:{g}:outbox", ">", ">"};
    assert_int_equal(route(9, xr2), TP_CLUSTER_CROSS);
    const char *xrodd[] = {"XREAD", "STREAMS", "a", "b", "c"};
    assert_int_equal(route(5, xrodd), TP_CLUSTER_ANY);
    const char *xg[] = {"XGROUP", "CREATE", "tp:{b3}:outbox", "g", "0", "MKSTREAM"};
    assert_int_equal(route(6, xg), 11128);
    const char *xi[] = {"XINFO", "GROUPS", "tp:{g}:outbox"};
    assert_int_equal(route(3, xi), 7233);
    const char *scan[] = {"SCAN", "0", "MATCH", "tp:{b1}:pool:*", "COUNT", "1000"};
    assert_int_equal(route(6, scan), 2874);
    const char *scanall[] = {"SCAN", "0", "MATCH", "tp:*"};
    assert_int_equal(route(4, scanall), TP_CLUSTER_ANY);
    const char *scanglob[] = {"SCAN", "0", "MATCH", "tp:{b*}:pool"};
    assert_int_equal(route(4, scanglob), TP_CLUSTER_ANY);
}

static void test_resp_argv(void **state)
{
    (void)state;
    const char *argv[4];
    size_t lens[4];
    const char ok[] = "*3\r\n$4\r\nHGET\r\n$11\r\ntp:{b1}:bal\r\n$0\r\n\r\n";
    assert_int_equal(tp_cluster_resp_argv(ok, sizeof(ok) - 1, argv, lens, 4), 3);
    assert_int_equal(lens[1], 11);
    assert_memory_equal(argv[1], "tp:{b1}:bal", 11);
    assert_int_equal(lens[2], 0);
    /* binary bytes, CR LF inside a word */
    const char bin[] = "*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n";
    assert_int_equal(tp_cluster_resp_argv(bin, sizeof(bin) - 1, argv, lens, 4), 2);
    assert_memory_equal(argv[1], "a\r\nb", 4);
    /* hostile: truncated, trailing bytes, too many words, not an array, huge length */
    assert_int_equal(tp_cluster_resp_argv(ok, sizeof(ok) - 3, argv, lens, 4), TP_EINVAL);
    const char trail[] = "*1\r\n$4\r\nPING\r\nX";
    assert_int_equal(tp_cluster_resp_argv(trail, sizeof(trail) - 1, argv, lens, 4), TP_EINVAL);
    assert_int_equal(tp_cluster_resp_argv(ok, sizeof(ok) - 1, argv, lens, 2), TP_EINVAL);
    assert_int_equal(tp_cluster_resp_argv("+OK\r\n", 5, argv, lens, 4), TP_EINVAL);
    const char huge[] = "*1\r\n$99999999999\r\nx\r\n";
    assert_int_equal(tp_cluster_resp_argv(huge, sizeof(huge) - 1, argv, lens, 4), TP_EINVAL);
    assert_int_equal(tp_cluster_resp_argv("", 0, argv, lens, 4), TP_EINVAL);
}

static void test_map_parse(void **state)
{
    (void)state;
    struct tp_store_reply *r = load_reply("cluster_slots_3x3.resp");
    assert_non_null(r);
    struct tp_cluster_map *m = malloc(sizeof(*m));
    tp_cluster_map_init(m);
    assert_int_equal(tp_cluster_map_parse(m, r, "127.0.0.1"), 0);
    tp_store_reply_free(r);
    assert_int_equal(tp_cluster_map_covered(m), TP_CLUSTER_SLOTS);
    assert_int_equal(m->nnodes, 6); /* 3 masters, 3 replicas */
    int masters = 0;
    for (size_t i = 0; i < m->nnodes; i++)
        masters += m->nodes[i].master;
    assert_int_equal(masters, 3);
    assert_int_equal(tp_cluster_map_route(m, 0)->port, 7101);
    assert_int_equal(tp_cluster_map_route(m, 5460)->port, 7101);
    assert_int_equal(tp_cluster_map_route(m, 5461)->port, 7102);
    assert_int_equal(tp_cluster_map_route(m, 16383)->port, 7103);
    assert_string_equal(tp_cluster_map_route(m, 11128)->host, "127.0.0.1");
    assert_null(tp_cluster_map_route(m, 16384));
    assert_null(tp_cluster_map_route(m, -1));
    free(m);
}

static void test_map_parse_hostile(void **state)
{
    (void)state;
    struct tp_cluster_map *m = malloc(sizeof(*m));
    tp_cluster_map_init(m);
    /* an empty host means "where you asked" */
    struct tp_store_reply *r = parse("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n");
    assert_int_equal(tp_cluster_map_parse(m, r, "10.0.0.9"), 0);
    tp_store_reply_free(r);
    assert_string_equal(tp_cluster_map_route(m, 42)->host, "10.0.0.9");
    /* refused, map unchanged: slot out of range, reversed range, bad port, not an array */
    const char *bad[] = {
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:9\r\n:3\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:3\r\n*2\r\n$1\r\nh\r\n:70000\r\n",
        "*1\r\n*3\r\n:0\r\n:3\r\n$1\r\nh\r\n",
        "*1\r\n*2\r\n:0\r\n:3\r\n",
        "-ERR This instance has cluster support disabled\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = parse(bad[i]);
        assert_non_null(r);
        assert_int_equal(tp_cluster_map_parse(m, r, "x"), TP_EPROTO);
        tp_store_reply_free(r);
        assert_string_equal(tp_cluster_map_route(m, 42)->host, "10.0.0.9");
    }
    free(m);
}

static void test_redirect_parse(void **state)
{
    (void)state;
    struct tp_cluster_redirect rd;
    /* error texts as Redis 7.0 sent them during a recorded reshard */
    const char *moved = "MOVED 11128 127.0.0.1:7101";
    assert_int_equal(tp_cluster_redirect_parse(moved, strlen(moved), &rd), TP_CLUSTER_MOVED);
    assert_int_equal(rd.slot, 11128);
    assert_string_equal(rd.host, "127.0.0.1");
    assert_int_equal(rd.port, 7101);
    const char *ask = "ASK 11128 127.0.0.1:7103";
    assert_int_equal(tp_cluster_redirect_parse(ask, strlen(ask), &rd), TP_CLUSTER_ASK);
    assert_int_equal(rd.port, 7103);
    const char *v6 = "MOVED 1 ::1:7000";
    assert_int_equal(tp_cluster_redirect_parse(v6, strlen(v6), &rd), TP_CLUSTER_MOVED);
    assert_string_equal(rd.host, "::1");
    const char *ta = "TRYAGAIN Multiple keys request during rehashing of slot";
    assert_int_equal(tp_cluster_redirect_parse(ta, strlen(ta), &rd), TP_CLUSTER_TRYAGAIN);
    assert_int_equal(rd.slot, -1);
    const char *down = "CLUSTERDOWN The cluster is down";
    assert_int_equal(tp_cluster_redirect_parse(down, strlen(down), &rd), TP_CLUSTER_CLUSTERDOWN);
    /* not cluster errors, or malformed redirects: delivered as they are */
    const char *other[] = {"ERR unknown command",
                           "MOVEDX 1 h:1",
                           "MOVED",
                           "MOVED 1",
                           "MOVED 16384 h:1",
                           "MOVED 1 h:0",
                           "MOVED 1 h:",
                           "MOVED 1 :5",
                           "ASK x h:1",
                           "NOSCRIPT No matching script",
                           "CROSSSLOT Keys"};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        assert_int_equal(tp_cluster_redirect_parse(other[i], strlen(other[i]), &rd), TP_CLUSTER_OK);
}

/* One decision for an answer of `kind`, counted into `t`. */
static struct tp_cluster_decision decide(enum tp_cluster_error kind, struct tp_cluster_tries *t)
{
    struct tp_cluster_redirect rd = {.kind = kind, .slot = -1};
    return tp_cluster_decide(&rd, t);
}

static void test_decide(void **state)
{
    (void)state;
    struct tp_cluster_tries t = {0};
    assert_int_equal(decide(TP_CLUSTER_OK, &t).action, TP_CLUSTER_DELIVER);
    struct tp_cluster_decision d = decide(TP_CLUSTER_MOVED, &t);
    assert_int_equal(d.action, TP_CLUSTER_RESEND);
    assert_true(d.update && d.refresh && !d.asking);
    t = (struct tp_cluster_tries){0};
    d = decide(TP_CLUSTER_ASK, &t);
    assert_int_equal(d.action, TP_CLUSTER_RESEND);
    assert_true(d.asking && !d.update && !d.refresh);
    t = (struct tp_cluster_tries){0};
    d = decide(TP_CLUSTER_TRYAGAIN, &t);
    assert_int_equal(d.action, TP_CLUSTER_LATER);
    assert_int_equal(d.delay_ms, 10);
    assert_false(d.refresh);
    decide(TP_CLUSTER_TRYAGAIN, &t);
    assert_int_equal(decide(TP_CLUSTER_TRYAGAIN, &t).delay_ms, 40);
    t = (struct tp_cluster_tries){0};
    for (int i = 1; i < 7; i++)
        decide(TP_CLUSTER_CLUSTERDOWN, &t);
    d = decide(TP_CLUSTER_CLUSTERDOWN, &t);
    assert_int_equal(d.action, TP_CLUSTER_LATER);
    assert_int_equal(d.delay_ms, 500); /* capped */
    assert_true(d.refresh);
    /* bounded: the TP_CLUSTER_MAX_REDIRECTS-th MOVED or CLUSTERDOWN goes to the caller */
    const enum tp_cluster_error bounded[] = {TP_CLUSTER_MOVED, TP_CLUSTER_CLUSTERDOWN};
    for (size_t k = 0; k < 2; k++) {
        t = (struct tp_cluster_tries){0};
        for (int i = 1; i < TP_CLUSTER_MAX_REDIRECTS; i++)
            assert_int_not_equal(decide(bounded[k], &t).action, TP_CLUSTER_DELIVER);
        assert_int_equal(decide(bounded[k], &t).action, TP_CLUSTER_DELIVER);
    }
}

/* A slot in migration: a script with a key on neither side gets ASK from the source, then
 * TRYAGAIN from the target under ASKING, round after round until the slot is assigned. Only the
 * caller's deadline ends that (the 8-attempt cap ended it after 4 rounds, ~0.4 s of back-off,
 * and bets answered 503 during a loaded reshard); the back-off stays at most 100 ms; the MOVED
 * that ends the migration is followed, and MOVED loops stay bounded on their own count. */
static void test_decide_migrating(void **state)
{
    (void)state;
    struct tp_cluster_tries t = {0};
    int waited = 0;
    for (int round = 0; round < 200; round++) {
        struct tp_cluster_decision d = decide(TP_CLUSTER_ASK, &t);
        assert_int_equal(d.action, TP_CLUSTER_RESEND); /* at once, to the target */
        assert_true(d.asking && !d.refresh);
        d = decide(TP_CLUSTER_TRYAGAIN, &t);
        assert_int_equal(d.action, TP_CLUSTER_LATER);
        assert_true(d.delay_ms >= 10 && d.delay_ms <= 100);
        waited += d.delay_ms;
    }
    assert_true(waited > 19000); /* 200 rounds, ~100 ms each: no count gave up */
    assert_int_equal(t.redirects, 0);
    /* the slot is assigned: the source answers MOVED, followed */
    struct tp_cluster_decision d = decide(TP_CLUSTER_MOVED, &t);
    assert_int_equal(d.action, TP_CLUSTER_RESEND);
    assert_true(d.update);
    assert_int_equal(decide(TP_CLUSTER_OK, &t).action, TP_CLUSTER_DELIVER);

    /* TRYAGAIN alone (the source holds some of the keys, not all) backs off the same way */
    t = (struct tp_cluster_tries){0};
    for (int i = 0; i < 100; i++) {
        d = decide(TP_CLUSTER_TRYAGAIN, &t);
        assert_int_equal(d.action, TP_CLUSTER_LATER);
        assert_true(d.delay_ms <= 100);
    }
    assert_int_equal(d.delay_ms, 100);

    /* an ASK right after an ASK (the target sent it back) waits instead of looping at once */
    t = (struct tp_cluster_tries){0};
    assert_int_equal(decide(TP_CLUSTER_ASK, &t).action, TP_CLUSTER_RESEND);
    d = decide(TP_CLUSTER_ASK, &t);
    assert_int_equal(d.action, TP_CLUSTER_LATER);
    assert_true(d.delay_ms > 0 && !d.asking);

    /* MOVED between migration answers: still bounded by its own count */
    t = (struct tp_cluster_tries){0};
    for (int i = 1; i < TP_CLUSTER_MAX_REDIRECTS; i++) {
        assert_int_equal(decide(TP_CLUSTER_ASK, &t).action, TP_CLUSTER_RESEND);
        assert_int_equal(decide(TP_CLUSTER_MOVED, &t).action, TP_CLUSTER_RESEND);
    }
    assert_int_equal(decide(TP_CLUSTER_TRYAGAIN, &t).action, TP_CLUSTER_LATER);
    assert_int_equal(decide(TP_CLUSTER_MOVED, &t).action, TP_CLUSTER_DELIVER);
}

/* A slot moves while a command for it is in flight: the command was routed with the old map,
 * the old owner answers MOVED, the map is patched at once (the next command for that slot goes
 * straight to the new owner), and the refresh that follows agrees with the patch. */
static void test_map_change_mid_flight(void **state)
{
    (void)state;
    struct tp_cluster_map *m = malloc(sizeof(*m));
    tp_cluster_map_init(m);
    struct tp_store_reply *r = load_reply("cluster_slots_3x3.resp");
    assert_int_equal(tp_cluster_map_parse(m, r, "127.0.0.1"), 0);
    tp_store_reply_free(r);
    int slot = slot_of("tp:{b3}:bal");
    assert_int_equal(tp_cluster_map_route(m, slot)->port, 7103); /* sent there */

    const char *moved = "MOVED 11128 127.0.0.1:7101"; /* meanwhile resharded to 7101 */
    struct tp_cluster_redirect rd;
    assert_int_equal(tp_cluster_redirect_parse(moved, strlen(moved), &rd), TP_CLUSTER_MOVED);
    struct tp_cluster_tries t = {0};
    struct tp_cluster_decision d = tp_cluster_decide(&rd, &t);
    assert_true(d.update);
    assert_int_equal(tp_cluster_map_move(m, &rd), 0);
    assert_int_equal(tp_cluster_map_route(m, slot)->port, 7101);
    assert_int_equal(tp_cluster_map_route(m, slot - 1)->port, 7103); /* neighbours stay */
    assert_int_equal(tp_cluster_map_route(m, slot + 1)->port, 7103);

    struct tp_cluster_map *fresh = malloc(sizeof(*fresh));
    tp_cluster_map_init(fresh);
    r = load_reply("cluster_slots_moved.resp"); /* CLUSTER SLOTS after that reshard */
    assert_non_null(r);
    assert_int_equal(tp_cluster_map_parse(fresh, r, "127.0.0.1"), 0);
    tp_store_reply_free(r);
    assert_int_equal(tp_cluster_map_covered(fresh), TP_CLUSTER_SLOTS);
    for (int s = 0; s < TP_CLUSTER_SLOTS; s++)
        assert_int_equal(tp_cluster_map_route(fresh, s)->port, tp_cluster_map_route(m, s)->port);
    /* a redirect to a node the map does not know yet adds it */
    const char *newnode = "MOVED 5 127.0.0.1:7200";
    tp_cluster_redirect_parse(newnode, strlen(newnode), &rd);
    size_t before = fresh->nnodes;
    assert_int_equal(tp_cluster_map_move(fresh, &rd), 0);
    assert_int_equal(fresh->nnodes, before + 1);
    assert_int_equal(tp_cluster_map_route(fresh, 5)->port, 7200);
    free(fresh);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot),
        cmocka_unit_test(test_command_slot),
        cmocka_unit_test(test_resp_argv),
        cmocka_unit_test(test_map_parse),
        cmocka_unit_test(test_map_parse_hostile),
        cmocka_unit_test(test_redirect_parse),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_decide_migrating),
        cmocka_unit_test(test_map_change_mid_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
