"""Accounts black-box tests: sign-up, sign-in, /me, token checks, crash-safe start grant.

A real tickpool server with a private Redis (accounts never touch Postgres on the request path).
"""

import base64
import hashlib
import hmac
import json
import struct
import threading
import time

import tpenv


def server(r, **env):
    e = {"TICKPOOL_GAME_START_BALANCE": "100000"}
    e.update(env)
    return tpenv.Server(redis=r, env=e, https=False, migrate=False)


def signup(s, name, pw="correct horse"):
    return s.json("POST", "/api/v1/accounts", {"username": name, "password": pw})


def err_code(body):
    return json.loads(body)["error"]["code"]


def test_signup_signin_me():
    with tpenv.Redis() as r, server(r) as s:
        st, v = signup(s, "Alice_1")
        assert st == 201, (st, v)
        assert v["username"] == "Alice_1" and v["balance"] == 100000 and v["user_id"] >= 1
        assert len(v["token"]) == 66
        uid = v["user_id"]
        st, me = s.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + v["token"]})
        assert st == 200 and me == {"user_id": uid, "username": "Alice_1", "balance": 100000}
        # Sign-in is case-insensitive on the name.
        st, ses = s.json("POST", "/api/v1/sessions",
                         {"username": "alice_1", "password": "correct horse"})
        assert st == 200 and ses["user_id"] == uid, (st, ses)
        assert abs(ses["expires_at"] - (time.time() * 1000 + 86400000)) < 60000
        st, me = s.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + ses["token"]})
        assert st == 200 and me["user_id"] == uid
        # Redis records
        c = r.client()
        assert c.hget("tp:{g}:usernames", "alice_1") == str(uid)
        assert c.hget(f"tp:{{g}}:user:{uid}", "pw_hash").startswith("$argon2id$")
        types = [e[1]["type"] for e in c.xrange("tp:{g}:outbox")]
        assert "user" in types
        assert c.hget("tp:{b0}:grants", f"signup:{uid}") == f"{uid}:100000"


def test_bad_credentials_and_tokens():
    with tpenv.Redis() as r, server(r) as s:
        st, v = signup(s, "bob")
        assert st == 201
        for body in ({"username": "bob", "password": "wrong password"},
                     {"username": "nobody_here", "password": "correct horse"},
                     {"username": "x", "password": "correct horse"}):
            st, _, b = s.http("POST", "/api/v1/sessions", body)
            assert st == 401 and err_code(b) == "bad_credentials", (body, st, b)
        tok = v["token"]
        # The worker remembers a token that verified: the valid one first (once the account state
        # is loaded), then near misses of it.
        tpenv.wait_until(lambda: s.http("GET", "/api/v1/me",
                                        headers={"Authorization": "Bearer " + tok})[0] == 200,
                         what="account state loaded")
        bad = [None, "Bearer", "Bearer " + tok[:-1], "Bearer " + tok[:-1] + ("A" if tok[-1] != "A" else "B"),
               "Basic " + tok, "Bearer " + "A" * 66]
        for h in bad:
            st, _, b = s.http("GET", "/api/v1/me", headers={"Authorization": h} if h else {})
            assert st == 401 and err_code(b) == "unauthorized", (h, st, b)
        assert s.http("GET", "/api/v1/me", headers={"Authorization": "Bearer " + tok})[0] == 200


def mint_token(secret, uid, expires_ms):
    """A token as src/money/token.c signs it: base64url(1 | uid | expiry | HMAC-SHA256)."""
    payload = bytes([1]) + struct.pack(">qq", uid, expires_ms)
    mac = hmac.new(secret, b"tickpool.token\0" + payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


def test_remembered_token_still_expires():
    secret = "cd" * 32
    with tpenv.Redis() as r, server(r, TICKPOOL_AUTH_SECRET=secret) as s:
        st, v = signup(s, "hana")
        assert st == 201
        uid = v["user_id"]
        # The worker's account state may still be loading (503) right after start.
        tpenv.wait_until(lambda: s.http("GET", "/api/v1/me",
                                        headers={"Authorization": "Bearer " + v["token"]})[0] == 200,
                         what="account state loaded")
        tok = mint_token(bytes.fromhex(secret), uid, int(time.time() * 1000) + 1500)
        # Accepted (and remembered) while valid, refused once its expiry passes.
        st, me = s.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + tok})
        assert st == 200 and me["username"] == "hana"
        time.sleep(2)
        st, _, b = s.http("GET", "/api/v1/me", headers={"Authorization": "Bearer " + tok})
        assert st == 401 and err_code(b) == "unauthorized", (st, b)
        # Another key's MAC: refused even though the payload is a remembered token's.
        forged = mint_token(b"\x01" * 32, uid, int(time.time() * 1000) + 60000)
        assert s.http("GET", "/api/v1/me", headers={"Authorization": "Bearer " + forged})[0] == 401


def test_signup_validation():
    with tpenv.Redis() as r, server(r) as s:
        for name in ("ab", "a" * 33, "bad name", "bad!", "ünï", "", 5, None):
            st, _, b = s.http("POST", "/api/v1/accounts", {"username": name, "password": "longenough"})
            assert st == 400 and err_code(b) == "invalid_username", (name, st, b)
        for pw in ("short", "", "x" * 1025, 12345678, None):
            st, _, b = s.http("POST", "/api/v1/accounts", {"username": "carol", "password": pw})
            assert st == 400 and err_code(b) == "weak_password", (pw, st, b)
        for raw, ct in ((b"[]", "application/json"), (b"{", "application/json"),
                        (b"username=a", "application/x-www-form-urlencoded")):
            st, _, b = s.http("POST", "/api/v1/accounts", raw, headers={"Content-Type": ct})
            assert st == 400 and err_code(b) == "invalid_request", (raw, st, b)
        assert r.client().hlen("tp:{g}:usernames") == 0


def test_duplicate_username_case_insensitive():
    with tpenv.Redis() as r, server(r) as s:
        assert signup(s, "dave")[0] == 201
        for name in ("dave", "DAVE", "Dave"):
            st, _, b = s.http("POST", "/api/v1/accounts", {"username": name, "password": "whatever1"})
            assert st == 409 and err_code(b) == "username_taken", (name, st, b)
        # Concurrent sign-ups of one new name: exactly one wins.
        res = []
        ts = [threading.Thread(target=lambda: res.append(signup(s, "eve")[0])) for _ in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert sorted(res) == [201] + [409] * 5, res


def test_half_created_signup_gets_its_grant():
    """A crash between signup.lua and grant.lua: the retry (409) and sign-in heal the grant."""
    with tpenv.Redis() as r, server(r) as s:
        st, v = signup(s, "frank")
        uid = v["user_id"]
        c = r.client()
        # Simulate the crash: undo the grant.
        c.delete("tp:{b0}:grants", "tp:{b0}:granted")
        c.hdel("tp:{b0}:bal", str(uid))
        st, _, b = s.http("POST", "/api/v1/accounts", {"username": "frank", "password": "other pw 1"})
        assert st == 409
        assert c.hget("tp:{b0}:bal", str(uid)) == "100000"
        c.delete("tp:{b0}:grants", "tp:{b0}:granted")
        c.hdel("tp:{b0}:bal", str(uid))
        st, ses = s.json("POST", "/api/v1/sessions", {"username": "frank", "password": "correct horse"})
        assert st == 200
        assert c.hget("tp:{b0}:bal", str(uid)) == "100000"
        # And never twice.
        s.json("POST", "/api/v1/sessions", {"username": "frank", "password": "correct horse"})
        assert c.hget("tp:{b0}:bal", str(uid)) == "100000"


def test_secret_shared_through_redis_and_env():
    with tpenv.Redis() as r:
        with server(r, TICKPOOL_SERVER_WORKERS="2") as s1, server(r) as s2:
            st, v = signup(s1, "gina")
            # A token from one host works on another host sharing the Redis.
            for _ in range(4):
                st, me = s2.json("GET", "/api/v1/me", headers={"Authorization": "Bearer " + v["token"]})
                assert st == 200 and me["username"] == "gina"
        secret = "ab" * 32
        with server(r, TICKPOOL_AUTH_SECRET=secret) as s3:
            st, v2 = s3.json("POST", "/api/v1/sessions", {"username": "gina", "password": "correct horse"})
            assert st == 200
            # The env secret differs from Redis's: the old token is refused, the new one works.
            st, _, body = s3.http("GET", "/api/v1/me", headers={"Authorization": "Bearer " + v["token"]})
            assert st == 401, (st, body)
            st, _, body = s3.http("GET", "/api/v1/me", headers={"Authorization": "Bearer " + v2["token"]})
            assert st == 200, (st, body)


def test_start_balance_change_keeps_existing_accounts_working():
    """Regression (review of the money path): a changed game.start_balance made every existing
    user's sign-in re-run its start grant with the new amount, answer grant_conflict, and 503."""
    with tpenv.Redis() as r:
        with server(r) as s:
            st, old = signup(s, "veteran")
            assert st == 201 and old["balance"] == 100000, (st, old)
        with server(r, TICKPOOL_GAME_START_BALANCE="50000") as s:
            st, ses = s.json("POST", "/api/v1/sessions",
                             {"username": "veteran", "password": "correct horse"})
            assert st == 200 and ses["user_id"] == old["user_id"], (st, ses)
            st, me = s.json("GET", "/api/v1/me",
                            headers={"Authorization": "Bearer " + ses["token"]})
            assert st == 200 and me["balance"] == 100000, (st, me)  # granted once, not twice
            st, v = signup(s, "veteran")
            assert st == 409 and v["error"]["code"] == "username_taken", (st, v)
            st, new = signup(s, "newcomer")
            assert st == 201 and new["balance"] == 50000, (st, new)


def test_msgpack_signup():
    import msgpack
    with tpenv.Redis() as r, server(r) as s:
        st, h, b = s.http("POST", "/api/v1/accounts",
                          msgpack.packb({"username": "hank", "password": "password1"}),
                          headers={"Content-Type": "application/msgpack",
                                   "Accept": "application/msgpack"})
        assert st == 201 and h["content-type"] == "application/msgpack"
        v = msgpack.unpackb(b)
        assert v["username"] == "hank" and v["balance"] == 100000


if __name__ == "__main__":
    tpenv.main()
