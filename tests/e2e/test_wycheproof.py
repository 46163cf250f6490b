"""The Wycheproof JWS vectors through the Worker's signature layer (WebCrypto for RS/PS/ES256,
Rust HMAC for HS*): the Worker's verdict on every case must equal the native layer's, which
src/auth/tests.rs checks against the vectors' expected results.

Each vector group gets its own policy (its key inline, or its HMAC secret as a text binding) and
route. The vectors' payloads are not claims sets, so a token whose signature verifies is refused
afterwards by claims validation (`bad_claims`, `missing_exp`, ...): the log line's reason tells
whether the signature layer accepted it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from conftest import send
from workerd import Workerd

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "wycheproof" / "json_web_signature_test.json"

# Reasons given before or by the signature layer: anything else means the signature verified.
PRE_SIGNATURE = {"missing_token", "malformed", "too_large", "alg_not_allowed", "forbidden_header",
                 "unknown_crit", "unknown_kid", "no_fitting_key", "keys_unavailable", "bad_signature"}
PUBLIC_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA"]
SUPPORTED = set(PUBLIC_ALGS) | {"HS256", "HS384", "HS512"}


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def usable_public_key(jwk: dict) -> bool:
    """What the gateway accepts as a key (src/auth/jwk.rs)."""
    if "d" in jwk:
        return False
    if jwk.get("kty") == "RSA":
        return len(b64d(jwk["n"]).lstrip(b"\0")) * 8 >= 2048
    if jwk.get("kty") == "EC":
        return jwk.get("crv") == "P-256"
    if jwk.get("kty") == "OKP":
        return jwk.get("crv") == "Ed25519"
    return False


def native_verdict(test: dict, key: dict) -> bool:
    """Whether the native signature layer accepts the case (as src/auth/tests.rs pins it)."""
    tc = test["tcId"]
    if tc in (367, 370):  # byte-identical to the valid tcId 357
        return True
    if test["result"] != "valid" or tc in (372, 373):  # 372/373: '?' is not base64url
        return False
    try:
        alg = json.loads(b64d(test["jws"].split(".")[0]))["alg"]
    except Exception:
        return False
    if alg not in SUPPORTED:
        return False
    return key.get("alg") in (None, alg)


def test_worker_and_native_signature_layers_agree_on_every_jws_vector(users):
    doc = json.loads(VECTORS.read_text())  # missing vectors fail here, loudly
    policies, routes, secrets, cases = {}, [], {}, []
    for i, group in enumerate(doc["testGroups"]):
        key = group.get("public") or group["private"]
        name = f"w{i}"
        if key.get("kty") == "oct":
            env = f"WYCHEPROOF_{i}"
            secrets[env] = b64d(key["k"]).decode("latin-1")
            # A text binding carries text: the vectors' binary secrets cannot travel in one. HS*
            # verification is the same Rust function natively and in the Worker.
            if len(b64d(key["k"])) < 32 or not (secrets[env].isascii() and secrets[env].isprintable()):
                del secrets[env]
                continue
            policies[name] = {"algorithms": ["HS256", "HS384", "HS512"], "hmac_secret_env": env,
                              "token_from": ["header:x-jws"], "max_token_bytes": 65536}
        elif usable_public_key(key):
            policies[name] = {"algorithms": PUBLIC_ALGS, "jwks": {"keys": [key]},
                              "token_from": ["header:x-jws"], "max_token_bytes": 65536}
        else:
            continue
        routes.append({"name": name, "path": f"/w/{i}", "origin": "users", "auth": name})
        for t in group["tests"]:
            cases.append((i, t, key))
    assert len(cases) > 300, len(cases)
    config = {"origins": {"users": {"servers": [{"url": users.url}]}}, "auth": policies, "routes": routes}

    with Workerd(json.dumps(config), text_bindings=secrets) as wd:
        disagreements, accepted, sent = [], 0, 0
        for i, t, key in cases:
            jws = t["jws"]
            expected = native_verdict(t, key)
            if any(c in jws for c in "\r\n\0") or not jws.isascii():
                assert not expected, t["tcId"]  # cannot even travel in a header
                continue
            r = send(wd.base_url, "GET", f"/w/{i}", [("x-jws", jws)])
            assert r.status in (401, 403), (t["tcId"], r.status, r.body)
            rid = r.header("x-request-id")
            line = next(json.loads(l) for l in wd.log_lines() if rid in l)
            assert "auth" in line, line
            worker_accepts = line["auth"]["reason"] not in PRE_SIGNATURE
            accepted += worker_accepts
            sent += 1
            if worker_accepts != expected:
                disagreements.append((t["tcId"], t["comment"], line["auth"]["reason"], expected))
        assert not disagreements, disagreements
        # Not vacuous: both verdicts occur, across RSA, PSS, ECDSA groups.
        assert sent > 300 and 10 <= accepted < sent - 200, (sent, accepted)
