/*
 * `tickpool admin grant`: an operator's credit or correction (see admin_internal.h).
 *
 * One call of scripts/lua/grant.lua does it all atomically: the grant ledger entry (so `tickpool
 * audit` stays exact: the grant is money entering or leaving like any other grant), the
 * balance, the outbox events of the grant and of the admin action. The grant id makes it
 * idempotent: it is the operator's --id (or a generated one, printed) with ":<user_id>"
 * appended, as grant ids must end (unique deployment-wide), so the same command run twice, e.g.
 * after a timeout, changes the balance once.
 */
#include "admin_internal.h"

#include "tickpool/base/common.h"
#include "tickpool/base/config.h"

#include <inttypes.h>
#include <string.h>

/* grant.lua reads amounts as at most 15 digits (exact in a Lua double). */
#define AMOUNT_MAX 999999999999999LL

/* A non-zero integer of minor units: optional '-', digits without a leading zero. */
static bool parse_amount(const char *s, int64_t *out)
{
    const char *d = s[0] == '-' ? s + 1 : s;
    size_t n = strlen(d);
    if (n == 0 || n > 15 || strspn(d, "0123456789") != n || d[0] == '0' || !tp_parse_i64(s, out) ||
        *out == 0 || *out > AMOUNT_MAX || *out < -AMOUNT_MAX) {
        fprintf(stderr,
                "admin grant: AMOUNT '%s' wants a non-zero whole number of minor units "
                "(e.g. 500 or -250), at most 15 digits\n",
                s);
        return false;
    }
    return true;
}

/* A --id: 1..96 bytes of the grant id alphabet (room left for ":<user_id>"). */
static bool id_ok(const char *id)
{
    size_t len = strlen(id);
    if (len >= 1 && len <= 96 &&
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == len)
        return true;
    fprintf(stderr, "admin grant: --id wants 1..96 of A-Z a-z 0-9 _ . : -\n");
    return false;
}

/* The grant id into out[TP_ADMIN_ID_MAX + 1]: ID (given or generated) + ":<user_id>" unless it
 * ends so already (the id printed by an earlier run is accepted as is). */
static void grant_id(const char *given, int64_t uid, char *out)
{
    char base[TP_ADMIN_ID_MAX + 1], suffix[24];
    snprintf(suffix, sizeof(suffix), ":%lld", (long long)uid);
    if (given == NULL)
        tp_admin_new_id("grant", base);
    else
        snprintf(base, sizeof(base), "%s", given);
    size_t len = strlen(base), slen = strlen(suffix);
    bool has = len > slen && strcmp(base + len - slen, suffix) == 0;
    snprintf(out, TP_ADMIN_ID_MAX + 1, "%.100s%s", base, has ? "" : suffix); /* base <= 96 */
}

static int run_grant(struct tp_admin *a, int argc, char **argv)
{
    const char *reason = NULL, *id = NULL;
    const struct tp_admin_opt opts[] = {{"reason", &reason, NULL}, {"id", &id, NULL}};
    char *pos[2];
    int npos;
    if (tp_admin_args(argc, argv, opts, 2, pos, 2, &npos) != TP_ADMIN_OK)
        return TP_ADMIN_USAGE;
    int64_t amount;
    if (npos != 2) {
        fprintf(stderr, "admin grant: wants USER and AMOUNT\n");
        return TP_ADMIN_USAGE;
    }
    if (!parse_amount(pos[1], &amount) || !tp_admin_reason_ok("grant", reason, true))
        return TP_ADMIN_USAGE;
    if (id != NULL && !id_ok(id))
        return TP_ADMIN_USAGE;

    struct tp_admin_user u;
    int rc = tp_admin_user(a, pos[0], &u);
    if (rc != TP_ADMIN_OK)
        return rc;
    char gid[TP_ADMIN_ID_MAX + 1], action[TP_ADMIN_ID_MAX + 8];
    grant_id(id, u.id, gid);
    snprintf(action, sizeof(action), "grant:%s", gid);
    struct tp_script_admin adm = tp_admin_script_args(a, action, reason);
    struct tp_script_grant_args args = {.user_id = u.id,
                                        .grant_id = gid,
                                        .amount = amount,
                                        .now_ms = tp_now_ms(),
                                        .buckets = a->cfg->game.buckets,
                                        .admin = &adm};
    struct tp_admin_reply r;
    tp_admin_reply_init(&r);
    struct tp_store_value *v = tp_admin_wait(
        a, tp_script_grant(tp_store_sync_store(a->redis), &args, tp_admin_on_reply, &r), &r,
        "grant");
    if (v == NULL) {
        fprintf(stderr, "admin grant: outcome unknown: rerun with --id %s to apply it once\n", gid);
        return TP_ADMIN_UNAVAILABLE;
    }
    const char *code;
    int status = TP_ADMIN_OK;
    if (tp_admin_reply_ok(v, &code) && v->n == 3) {
        long long bal = v->elem[1]->integer, replayed = v->elem[2]->integer;
        if (replayed)
            printf("grant %s was applied before: nothing changed; %s (#%lld) has %lld\n", gid,
                   u.name, (long long)u.id, bal);
        else
            printf("granted %+" PRId64 " to %s (#%lld): balance now %lld (grant id %s)\n", amount,
                   u.name, (long long)u.id, bal, gid);
    } else if (strcmp(code, "insufficient_funds") == 0) {
        fprintf(stderr,
                "admin grant: refused: %s (#%lld) has %lld, a correction of %" PRId64
                " would make the balance negative\n",
                u.name, (long long)u.id, v->n == 3 ? v->elem[2]->integer : 0LL, amount);
        status = TP_ADMIN_REFUSED;
    } else if (strcmp(code, "grant_conflict") == 0) {
        fprintf(stderr, "admin grant: refused: grant id %s was used before with another amount\n",
                gid);
        status = TP_ADMIN_REFUSED;
    } else {
        fprintf(stderr, "admin grant: unexpected reply (%s)\n", code[0] ? code : "?");
        status = TP_ADMIN_UNAVAILABLE;
    }
    tp_store_value_free(v);
    return status;
}

const struct tp_admin_cmd tp_admin_cmd_grant = {
    .name = "grant",
    .synopsis = "grant USER AMOUNT --reason R [--id ID]",
    .summary = "credit (AMOUNT > 0) or correct (AMOUNT < 0) a player's balance",
    .help = "\n"
            "AMOUNT is in minor units (500 = 5.00 credits); a negative AMOUNT is a correction,\n"
            "refused (exit 1) when it would make the balance negative. The grant is recorded in\n"
            "the grant ledger like the sign-up credit, so `tickpool audit` stays exact, and in\n"
            "Postgres (grants, ledger, admin_actions). Idempotent by its grant id: ID followed\n"
            "by :<user id>; running the same command with the same --id again changes nothing\n"
            "(exit 0, says so). Without --id a fresh one is generated and printed.\n"
            "\n"
            "  --reason R   why (required; recorded; up to 200 bytes)\n"
            "  --id ID      the grant's id (1..96 of A-Z a-z 0-9 _ . : -), for safe retries\n",
    .run = run_grant,
};
