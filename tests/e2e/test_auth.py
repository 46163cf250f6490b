"""End-to-end auth: the built Wasm worker in workerd verifies tokens signed here, at test time,
with keys generated here, for every algorithm; attacks are refused before any origin sees them;
a JWKS served on 127.0.0.1 rotates, floods and goes down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import send
from workerd import Workerd

SECRET = "an-hmac-secret-for-tests-that-is-long-enough-0123456789"
ISS = "https://id.test/"
AUD = "api"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


class Keys:
    """One key of each kind, generated per test session."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @staticmethod
    def rsa_jwk(key, kid: str) -> dict:
        n = key.public_key().public_numbers()
        return {"kty": "RSA", "kid": kid, "n": b64_int(n.n), "e": b64_int(n.e), "use": "sig"}

    def ec_jwk(self, kid: str = "ec1") -> dict:
        n = self.ec.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(n.x.to_bytes(32, "big")),
                "y": b64(n.y.to_bytes(32, "big"))}

    def ed_jwk(self, kid: str = "ed1") -> dict:
        raw = self.ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(raw)}

    def jwks(self) -> dict:
        return {"keys": [self.rsa_jwk(self.rsa, "rsa1"), self.ec_jwk(), self.ed_jwk()]}


def sign(alg: str, key, data: bytes) -> bytes:
    if alg.startswith("HS"):
        return hmac.new(key, data, getattr(hashlib, "sha" + alg[2:])).digest()
    if alg.startswith("RS"):
        return key.sign(data, padding.PKCS1v15(), HASHES[alg[2:]]())
    if alg.startswith("PS"):
        h = HASHES[alg[2:]]()
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if alg == "ES256":
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "EdDSA":
        return key.sign(data)
    raise ValueError(alg)


def claims(**over) -> dict:
    now = int(time.time())
    c = {"sub": "alice", "email": "alice@example.test", "iss": ISS, "aud": [AUD, "other"],
         "iat": now - 5, "nbf": now - 5, "exp": now + 300, "scope": "orders:read profile",
         "jti": os.urandom(8).hex()}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def token(alg: str, key, kid: Optional[str] = None, header_extra: Optional[dict] = None, **claim_over) -> str:
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    header.update(header_extra or {})
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims(**claim_over)).encode())
    return signing_input + "." + b64(sign(alg, key, signing_input.encode()))


def key_for(keys: Keys, alg: str):
    if alg.startswith("HS"):
        return SECRET.encode(), None
    if alg[:2] in ("RS", "PS"):
        return keys.rsa, "rsa1"
    if alg == "ES256":
        return keys.ec, "ec1"
    return keys.ed, "ed1"


ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA"]
SYMMETRIC = ["HS256", "HS384", "HS512"]
FORWARD = {"sub": "x-user-id", "email": "x-user-email", "scope": "x-scope"}


def auth_config(users, orders, keys: Keys, jwks_url: Optional[str] = None) -> dict:
    policy = {"algorithms": ASYMMETRIC, "issuers": [ISS], "audiences": [AUD], "leeway_s": 30,
              "max_age_s": 3600, "require": {"scope": ["orders:read"]}, "forward_claims": FORWARD}
    if jwks_url:
        policy.update(jwks_url=jwks_url, jwks_min_refetch_s=2)
    else:
        policy["jwks"] = keys.jwks()
    return {
        "origins": {"users": {"servers": [{"url": users.url}], "timeout_ms": 5000}},
        "auth": {
            "main": policy,
            "hmac": {"algorithms": SYMMETRIC, "hmac_secret_env": "JWT_SECRET", "issuers": [ISS],
                     "audiences": [AUD], "forward_claims": FORWARD},
            "cookie": {"algorithms": SYMMETRIC, "hmac_secret_env": "JWT_SECRET",
                       "token_from": ["cookie:access_token", "header:x-token"], "forward_claims": {"sub": "x-user-id"}},
        },
        "routes": [
            {"name": "secure", "path": "/secure/{*rest}", "origin": "users", "auth": "main",
             "request_headers": {"set": {"x-sub-template": "sub={claim.sub}"}},
             "response_headers": {"set": {"x-caller": "{claim.sub}"}}},
            {"name": "hs", "path": "/hs/{*rest}", "origin": "users", "auth": "hmac"},
            {"name": "cookie", "path": "/cookie/{*rest}", "origin": "users", "auth": "cookie"},
            {"name": "maybe", "path": "/maybe/{*rest}", "origin": "users", "auth": {"use": "main", "optional": True}},
            {"name": "public", "path": "/public/{*rest}", "origin": "users",
             "request_headers": {"set": {"x-sub-template": "{claim.sub}"}}},
        ],
    }


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def authgw(users, orders, keys):
    with Workerd(json.dumps(auth_config(users, orders, keys)), text_bindings={"JWT_SECRET": SECRET}) as wd:
        yield wd


def bearer(t: str) -> list[tuple[str, str]]:
    return [("authorization", "Bearer " + t)]


def refused(gw, users, path: str, headers, status: int, challenge: Optional[str]) -> dict:
    """The request is refused with `status` and the origin never sees it."""
    before = len(users.received)
    r = send(gw.base_url, "GET", path, headers)
    assert r.status == status, (r.status, r.body)
    assert len(users.received) == before, "the refused request reached the origin"
    body = r.json()
    assert body["error"] == {401: "unauthorized", 403: "forbidden", 500: "config_invalid"}[status]
    assert r.header("www-authenticate") == challenge
    for h, v in headers:
        if len(v) > 40:
            assert v.split()[-1][:40] not in r.body.decode(), "the token is echoed"
    return body


@pytest.mark.parametrize("alg", ASYMMETRIC + SYMMETRIC)
def test_a_valid_token_of_each_algorithm_passes_with_claim_headers(authgw, users, keys, alg):
    key, kid = key_for(keys, alg)
    path = "/hs/x" if alg.startswith("HS") else "/secure/x"
    spoof = [("x-user-id", "mallory"), ("x-scope", "admin")]
    r = send(authgw.base_url, "GET", path, bearer(token(alg, key, kid)) + spoof)
    assert r.status == 200, (alg, r.body)
    got = users.last()
    assert got.header("x-user-id") == "alice"
    assert got.header("x-user-email") == "alice@example.test"
    assert got.header("x-scope") == "orders:read profile"
    if path == "/secure/x":
        assert got.header("x-sub-template") == "sub=alice"
        assert r.header("x-caller") == "alice"


def test_client_copies_of_claim_headers_never_reach_public_routes(authgw, users):
    r = send(authgw.base_url, "GET", "/public/x", [("x-user-id", "mallory"), ("x-user-email", "m@x")])
    assert r.status == 200
    assert users.last().header("x-user-id") is None
    assert users.last().header("x-user-email") is None
    assert users.last().header("x-sub-template") is None, "a missing claim makes the header absent"


def test_attacks_are_refused_before_the_origin(authgw, users, keys):
    gw = authgw
    invalid = 'Bearer error="invalid_token"'
    rsa_pub_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = token("RS256", keys.rsa, "rsa1")
    h, p, s = good.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "alg none": b64(b'{"alg":"none"}') + "." + p + ".",
        "alg none with kid": b64(b'{"alg":"none","kid":"rsa1"}') + "." + p + "." + s,
        "RS256 public key as HS256 secret": token("HS256", rsa_pub_pem, "rsa1"),
        "unknown kid": token("RS256", keys.rsa, "no-such-kid"),
        "embedded jwk": token("RS256", attacker, None,
                              header_extra={"jwk": Keys.rsa_jwk(attacker, "evil")}),
        "jku": token("RS256", attacker, "rsa1", header_extra={"jku": "http://127.0.0.1:9/jwks"}),
        "unknown crit": token("RS256", keys.rsa, "rsa1", header_extra={"crit": ["x-new"], "x-new": 1}),
        "expired": token("RS256", keys.rsa, "rsa1", exp=int(time.time()) - 120),
        "not yet valid": token("RS256", keys.rsa, "rsa1", nbf=int(time.time()) + 120),
        "no exp": token("RS256", keys.rsa, "rsa1", exp=None),
        "wrong iss": token("RS256", keys.rsa, "rsa1", iss="https://evil.test/"),
        "wrong aud": token("RS256", keys.rsa, "rsa1", aud="web"),
        "signed by another key": token("RS256", attacker, "rsa1"),
        "four parts": good + "." + s,
        "two parts": h + "." + p,
        "20 KB token (over max_token_bytes, under the header limit)": h + "." + "A" * 20_000 + "." + s,
    }
    for i in range(0, len(sig) * 8, 97):  # bit flips across the whole signature
        flipped = bytearray(sig)
        flipped[i // 8] ^= 1 << (i % 8)
        cases[f"signature bit {i} flipped"] = h + "." + p + "." + b64(bytes(flipped))
    for name, t in cases.items():
        body = refused(gw, users, "/secure/x", bearer(t), 401, invalid)
        assert body["message"], name
    # A 100 KB token: over the gateway-wide header limit, refused (431) before auth even looks.
    huge = h + "." + "A" * 100_000 + "." + s
    r = send(gw.base_url, "GET", "/secure/x", bearer(huge))
    assert r.status == 431 and r.json()["error"] == "headers_too_large"
    # An HS256 token on the policy that lists only public-key algorithms.
    refused(gw, users, "/secure/x", bearer(token("HS256", SECRET.encode())), 401, invalid)
    # Missing scope is 403 insufficient_scope.
    refused(gw, users, "/secure/x", bearer(token("RS256", keys.rsa, "rsa1", scope="profile")), 403,
            'Bearer error="insufficient_scope"')
    # No token: 401 with a bare challenge; a non-Bearer scheme is no token.
    refused(gw, users, "/secure/x", [], 401, "Bearer")
    refused(gw, users, "/secure/x", [("authorization", "Basic YTpi")], 401, "Bearer")
    body = refused(gw, users, "/secure/x", bearer(token("RS256", keys.rsa, "rsa1", exp=int(time.time()) - 120)),
                   401, invalid)
    assert "expired" in body["message"]


def test_bearer_scheme_is_case_insensitive_and_cookies_and_headers_work(authgw, users, keys):
    t = token("ES256", keys.ec, "ec1")
    assert send(authgw.base_url, "GET", "/secure/x", [("authorization", "bEaReR " + t)]).status == 200
    hs = token("HS256", SECRET.encode())
    r = send(authgw.base_url, "GET", "/cookie/x", [("cookie", "a=1; access_token=" + hs)])
    assert r.status == 200, r.body
    assert users.last().header("x-user-id") == "alice"
    assert send(authgw.base_url, "GET", "/cookie/x", [("x-token", hs)]).status == 200
    assert send(authgw.base_url, "GET", "/cookie/x", bearer(hs)).status == 401


def test_optional_route_anonymous_or_verified_but_never_a_bad_token(authgw, users, keys):
    r = send(authgw.base_url, "GET", "/maybe/x", [("x-user-id", "mallory")])
    assert r.status == 200
    assert users.last().header("x-user-id") is None
    r = send(authgw.base_url, "GET", "/maybe/x", bearer(token("EdDSA", keys.ed, "ed1")))
    assert r.status == 200 and users.last().header("x-user-id") == "alice"
    refused(authgw, users, "/maybe/x", bearer(token("EdDSA", keys.ed, "ed1", exp=1)), 401,
            'Bearer error="invalid_token"')


def test_a_repeated_token_is_served_from_the_verified_cache_and_logged_without_the_token(authgw, keys):
    t = token("PS256", keys.rsa, "rsa1")
    for _ in range(3):
        assert send(authgw.base_url, "GET", "/secure/again", bearer(t)).status == 200
    lines = [json.loads(l) for l in authgw.log_lines() if '"/secure/again"' in l]
    outcomes = [l["auth"]["outcome"] for l in lines]
    assert outcomes[-3:] == ["verified", "cached", "cached"], outcomes
    assert lines[-1]["auth"]["kid"] == "rsa1" and lines[-1]["auth"]["iss"] == ISS
    sig = t.split(".")[2]
    assert not any(sig in l or t.split(".")[1] in l for l in authgw.log_lines() + authgw.stderr_lines())
    refused_lines = [json.loads(l) for l in authgw.log_lines() if '"refused"' in l]
    reasons = {l["auth"]["reason"] for l in refused_lines}
    assert {"expired", "malformed", "alg_not_allowed", "bad_signature", "unknown_kid",
            "forbidden_header", "missing_token", "insufficient_scope"} <= reasons, reasons


def test_hmac_secret_missing_or_short_is_a_config_problem(users, orders, keys):
    cfg = json.dumps(auth_config(users, orders, keys))
    with Workerd(cfg, text_bindings={"JWT_SECRET": "too-short"}) as wd:
        before = len(users.received)
        r = send(wd.base_url, "GET", "/hs/x", bearer(token("HS256", b"too-short")))
        assert r.status == 500 and r.json()["error"] == "config_invalid"
        assert len(users.received) == before
        assert any("JWT_SECRET" in l for l in wd.log_lines())
        # Routes that need no secret still work.
        assert send(wd.base_url, "GET", "/public/x").status == 200


# ------------------------------------------------------------------------------------------------
# A JWKS on 127.0.0.1 that rotates, floods and goes down


class Jwks:
    def __init__(self, doc: dict):
        self.doc = doc
        self.fetches = 0
        self.lock = threading.Lock()
        jwks = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with jwks.lock:
                    jwks.fetches += 1
                    body = json.dumps(jwks.doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", "public, max-age=600")
                self.send_header("content-length", str(len(body)))
                # No keep-alive: once stopped, the server refuses every connection.
                self.send_header("connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_jwks_rotation_flood_and_outage(users, orders, keys):
    jwks = Jwks({"keys": [Keys.rsa_jwk(keys.rsa, "k1")]})
    try:
        cfg = json.dumps(auth_config(users, orders, keys, jwks_url=jwks.url))
        with Workerd(cfg, text_bindings={"JWT_SECRET": SECRET}) as wd:
            ok = lambda t: send(wd.base_url, "GET", "/secure/x", bearer(t)).status
            t1 = token("RS256", keys.rsa, "k1")
            assert ok(t1) == 200
            assert jwks.fetches == 1
            assert ok(token("RS256", keys.rsa, "k1")) == 200
            assert jwks.fetches == 1, "fresh keys are not fetched again"

            # Rotation: a new kid is accepted after one refetch (spaced by jwks_min_refetch_s=2).
            jwks.doc = {"keys": [Keys.rsa_jwk(keys.rsa, "k1"), Keys.rsa_jwk(keys.rsa2, "k2")]}
            time.sleep(2.2)
            assert ok(token("RS256", keys.rsa2, "k2")) == 200
            assert jwks.fetches == 2

            # A flood of made-up kids: at most one fetch per 2 s interval.
            start, before = time.monotonic(), jwks.fetches
            for _ in range(40):
                assert ok(token("RS256", keys.rsa, os.urandom(6).hex())) == 401
            elapsed = time.monotonic() - start
            assert jwks.fetches - before <= 1 + int(elapsed / 2), (jwks.fetches - before, elapsed)

            # k1 leaves the set: once the set is refetched, the cached verification of a k1 token
            # is dropped and the token refused.
            r = send(wd.base_url, "GET", "/secure/x", bearer(t1))
            assert r.status == 200
            assert json.loads(wd.wait_for_log(r.header("x-request-id")))["auth"]["outcome"] == "cached"
            jwks.doc = {"keys": [Keys.rsa_jwk(keys.rsa2, "k2")]}
            time.sleep(2.2)
            fetches = jwks.fetches
            assert ok(token("RS256", keys.rsa, "trigger-refetch")) == 401
            assert jwks.fetches == fetches + 1
            r = send(wd.base_url, "GET", "/secure/x", bearer(t1))
            assert r.status == 401
            assert json.loads(wd.wait_for_log(r.header("x-request-id")))["auth"]["reason"] == "unknown_kid"

            # The provider goes down: known keys keep working, even after a refetch attempt.
            jwks.stop()
            time.sleep(2.2)
            fetches = jwks.fetches
            assert ok(token("RS256", keys.rsa, "unknown-while-down")) == 401
            assert jwks.fetches == fetches, "the stopped JWKS server answered"
            assert ok(token("RS256", keys.rsa2, "k2")) == 200
            assert any("jwks_fetch_failed" in l for l in wd.log_lines())
    finally:
        try:
            jwks.stop()
        except Exception:
            pass


def test_a_cold_isolate_under_concurrent_requests_fetches_the_jwks_once(users, orders, keys):
    from concurrent.futures import ThreadPoolExecutor

    jwks = Jwks({"keys": [Keys.rsa_jwk(keys.rsa, "k1")]})
    try:
        cfg = json.dumps(auth_config(users, orders, keys, jwks_url=jwks.url))
        with Workerd(cfg, text_bindings={"JWT_SECRET": SECRET}) as wd:
            tokens = [token("RS256", keys.rsa, "k1") for _ in range(12)]
            with ThreadPoolExecutor(max_workers=12) as pool:
                statuses = list(pool.map(
                    lambda t: send(wd.base_url, "GET", "/secure/x", bearer(t)).status, tokens))
            assert statuses == [200] * 12, statuses
            assert jwks.fetches == 1
    finally:
        jwks.stop()
