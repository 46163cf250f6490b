"""End-to-end: every spelling of a request takes the same decision, through the Wasm worker in
workerd, against a real origin on 127.0.0.1 that records what it received.

Each test sends the attack spelling and asserts both sides: what the client got (the gateway's
JSON error, a BYPASS, a MISS instead of a poisoned HIT) and what the origin saw (nothing it
should not)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse

import pytest

from conftest import send
from origin import Origin
from workerd import Workerd

ADMIN = "admin-token-for-hardening-tests-0123456789"
SECRET = "an-hmac-secret-for-hardening-tests-0123456789abcdef"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def token(**claims) -> str:
    return hs256({"sub": "alice", "exp": int(time.time()) + 600, **claims})


@pytest.fixture(scope="module")
def origin():
    with Origin("hardening-origin") as o:
        yield o


def config(origin: Origin, settings: dict | None = None) -> dict:
    cfg = {
        "admin": {"path": "/_portcullis", "token_env": "ADMIN_TOKEN"},
        "origins": {"o": {"servers": [{"url": origin.url}]}},
        "auth": {"main": {"algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET",
                          "token_from": ["header:authorization", "cookie:access_token"],
                          "forward_claims": {"sub": "x-user-id"}}},
        "routes": [
            {"name": "office", "path": "/office", "origin": "o", "allow_ips": ["203.0.113.0/24"]},
            {"name": "blocked", "path": "/blocked", "origin": "o", "deny_ips": ["198.51.100.0/24"]},
            {"name": "cached", "path": "/cacheable/{*rest}", "origin": "o",
             "cache": {"ttl_s": 60, "key": {"query": ["v"], "headers": ["x-tenant"]}}},
            {"name": "opt", "path": "/opt/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/opt/{rest}"},
             "auth": {"use": "main", "optional": True}, "cache": {"ttl_s": 60, "key": {"claims": ["tenant"]}}},
            {"name": "all", "path": "/{*rest}", "origin": "o"},
        ],
    }
    if settings:
        cfg["settings"] = settings
    return cfg


@pytest.fixture(scope="module")
def gw(origin):
    bindings = {"ADMIN_TOKEN": ADMIN, "JWT_SECRET": SECRET}
    with Workerd(json.dumps(config(origin)), text_bindings=bindings) as wd:
        yield wd


def log_for(gw, request_id: str) -> dict:
    line = gw.wait_for_log(request_id)
    return json.loads(line)


def cache_status(r) -> str:
    return r.header("x-cache-status")


# ---------------------------------------------------------------------------------------- admin


@pytest.mark.parametrize("path", [
    "//_portcullis/cache",
    "/%5Fportcullis/cache",
    "/%5fportcullis/cache",
    "/_PORTCULLIS/cache",
    "/_Portcullis/cache",
    "/./_portcullis/cache",
    "/x/../_portcullis/cache",
    "/%2e%2e/_portcullis/cache",
    "/_portcullis//cache",
    "/_port%63ullis/cache",
])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_no_spelling_of_the_admin_path_reaches_the_origin(gw, origin, path, method):
    """A catch-all route would forward these: they are the admin path, answered at the edge."""
    before = origin.count()
    r = send(gw.base_url, method, path + "?url=" + urllib.parse.quote(gw.base_url + "/cacheable/x", safe=""),
             [("authorization", f"Bearer {ADMIN}")])
    assert origin.count() == before, f"{method} {path} reached the origin"
    body = r.json()
    if method == "DELETE":
        # every spelling is the purge endpoint
        assert r.status == 200 and set(body) == {"purged", "request_id"}, (path, r.status, body)
    else:
        assert r.status == 404 and body["error"] == "no_route", (path, r.status, body)
        assert log_for(gw, r.header("x-request-id"))["route"] == "admin"


def test_the_admin_credential_is_never_forwarded_on_other_paths(gw, origin):
    before = origin.count()
    for path in ["/anything", "/cacheable/x", "/_portcullisx/cache", "/a/_portcullis/cache"]:
        r = send(gw.base_url, "GET", path, [("authorization", f"Bearer {ADMIN}")])
        assert r.status == 404 and r.json()["error"] == "no_route", path
        assert log_for(gw, r.header("x-request-id"))["route"] == "admin"
    assert origin.count() == before
    # Another bearer token on the same paths is forwarded as usual.
    r = send(gw.base_url, "GET", "/anything", [("authorization", "Bearer someone-else")])
    assert r.status == 200 and origin.last().header("authorization") == "Bearer someone-else"


def test_a_purge_through_another_spelling_purges(gw, origin):
    target = gw.base_url + "/cacheable/purge-me?v=1"
    assert cache_status(send(gw.base_url, "GET", "/cacheable/purge-me?v=1")) == "MISS"
    time.sleep(0.2)
    assert cache_status(send(gw.base_url, "GET", "/cacheable/purge-me?v=1")) == "HIT"
    r = send(gw.base_url, "DELETE", "//%5Fportcullis/cache?%75rl=" + urllib.parse.quote(target, safe=""),
             [("authorization", f"Bearer {ADMIN}")])
    assert r.status == 200 and r.json()["purged"] is True
    assert cache_status(send(gw.base_url, "GET", "/cacheable/purge-me?v=1")) == "MISS"


# ------------------------------------------------------------------------------------ cache key


def fresh(prefix: str) -> str:
    return f"/cacheable/{prefix}-{time.monotonic_ns()}"


@pytest.mark.parametrize("attack", ["%76=evil", "V=evil", "v[]=evil", "v=evil;x=1", "x=1;v=evil", "v",
                                    "v=%65vil", "+v=evil"])
def test_an_encoded_parameter_does_not_poison_the_plain_entry(gw, origin, attack):
    """The attacker's spelling gets an entry of its own; the plain request never gets its body."""
    path = fresh("poison")
    first = send(gw.base_url, "GET", f"{path}?{attack}")
    assert first.status == 200 and cache_status(first) == "MISS"
    time.sleep(0.2)
    for plain in ["", "?v=plain"]:
        r = send(gw.base_url, "GET", path + plain)
        assert cache_status(r) == "MISS", (attack, plain)
        assert r.json()["query"] == (plain[1:] or "")
        time.sleep(0.2)


@pytest.mark.parametrize("a,b", [("v=x", "%76=x"), ("v=x", "v=%78"), ("v=a+b", "v=a%20b"), ("v=x", "v=x&utm=1")])
def test_spellings_the_origin_reads_as_one_share_an_entry(gw, origin, a, b):
    path = fresh("same")
    first = send(gw.base_url, "GET", f"{path}?{a}")
    assert cache_status(first) == "MISS"
    # the origin's own form decoder reads both as the same parameters
    assert urllib.parse.parse_qs(a)["v"] == urllib.parse.parse_qs(b)["v"]
    time.sleep(0.2)
    second = send(gw.base_url, "GET", f"{path}?{b}")
    assert cache_status(second) == "HIT" and second.body == first.body


def test_a_malformed_keyed_parameter_is_not_cached(gw, origin):
    path = fresh("malformed")
    for _ in range(2):
        r = send(gw.base_url, "GET", f"{path}?v=%zz")
        assert r.status == 200 and cache_status(r) == "BYPASS"
        line = log_for(gw, r.header("x-request-id"))
        assert line["cache"] == "BYPASS"
        assert line["cache_reason"] == "a keyed query parameter has malformed percent-encoding"
    assert origin.hits[f"{path}?v=%zz"] == 2


def test_header_values_are_keyed_as_the_origin_reads_them(gw):
    path = fresh("tenant")
    assert cache_status(send(gw.base_url, "GET", path, [("x-tenant", "a")])) == "MISS"
    time.sleep(0.2)
    assert cache_status(send(gw.base_url, "GET", path, [("X-Tenant", "a")])) == "HIT"
    assert cache_status(send(gw.base_url, "GET", path, [("x-tenant", "b")])) == "MISS"
    # `x_tenant` would be `X_TENANT` to a WSGI origin, as `x-tenant` is: it is dropped, so it
    # neither reaches the origin nor splits or poisons the key.
    assert cache_status(send(gw.base_url, "GET", path, [("x_tenant", "evil")])) == "MISS"
    time.sleep(0.2)
    r = send(gw.base_url, "GET", path, [("x_tenant", "other")])
    assert cache_status(r) == "HIT"


# ---------------------------------------------------------------------------------- key claims


def test_anonymous_and_verified_callers_never_share_an_entry(gw, origin):
    rest = f"who-{time.monotonic_ns()}"
    anon = send(gw.base_url, "GET", f"/opt/{rest}")
    assert cache_status(anon) == "MISS"
    time.sleep(0.2)
    acme = send(gw.base_url, "GET", f"/opt/{rest}", [("authorization", f"Bearer {token(tenant='acme')}")])
    assert cache_status(acme) == "MISS" and acme.json()["n"] == 2
    time.sleep(0.2)
    again = send(gw.base_url, "GET", f"/opt/{rest}")
    assert cache_status(again) == "HIT" and again.json()["n"] == 1
    # the same caller through the cookie the policy reads: the same verified entry
    by_cookie = send(gw.base_url, "GET", f"/opt/{rest}", [("cookie", f"access_token={token(tenant='acme')}")])
    assert cache_status(by_cookie) == "HIT" and by_cookie.json()["n"] == 2


@pytest.mark.parametrize("claims,reason", [
    ({}, "a key claim is missing"),
    ({"tenant": {"id": 1}}, "a key claim has no header form"),
    ({"tenant": "a\u0001b"}, "a key claim has no header form"),
    ({"tenant": None}, "a key claim has no header form"),
])
def test_a_key_claim_that_cannot_be_keyed_is_not_cached(gw, origin, claims, reason):
    rest = f"claimless-{time.monotonic_ns()}"
    anon = send(gw.base_url, "GET", f"/opt/{rest}")
    assert cache_status(anon) == "MISS"
    time.sleep(0.2)
    for n in (2, 3):
        r = send(gw.base_url, "GET", f"/opt/{rest}", [("authorization", f"Bearer {token(**claims)}")])
        assert r.status == 200 and cache_status(r) == "BYPASS" and r.json()["n"] == n
        line = log_for(gw, r.header("x-request-id"))
        assert line["cache_reason"] == reason and line["auth"]["outcome"] in ("verified", "cached")
    time.sleep(0.2)
    # ... and stored nothing an anonymous caller then gets
    r = send(gw.base_url, "GET", f"/opt/{rest}")
    assert cache_status(r) == "HIT" and r.json()["n"] == 1 and r.json()["user"] is None


@pytest.mark.parametrize("headers", [
    [("authorization", "Bearer whatever")],
    [("Authorization", "Basic dXNlcjpwYXNz")],
    [("cookie", "theme=dark; access_token=abc")],
    [("cookie", "a=1"), ("cookie", "access_token=abc")],
])
def test_credentials_anywhere_a_policy_reads_them_bypass_a_public_cached_route(gw, origin, headers):
    path = fresh("creds")
    assert cache_status(send(gw.base_url, "GET", path)) == "MISS"
    time.sleep(0.2)
    r = send(gw.base_url, "GET", path, headers)
    assert cache_status(r) == "BYPASS" and r.json()["n"] == 2
    assert log_for(gw, r.header("x-request-id"))["cache_reason"] == "credentials on a route keyed without claims"
    time.sleep(0.2)
    assert send(gw.base_url, "GET", path).json()["n"] == 1


# ------------------------------------------------------------------------------ header names


SPOOFS = [
    ("x_user_id", "mallory"),
    ("X_User_Id", "mallory"),
    ("x_forwarded_for", "6.6.6.6"),
    ("X_Forwarded_Host", "evil.example"),
    ("x_real_ip", "6.6.6.6"),
    ("x_request_id", "spoofed"),
    ("x-user-id", "mallory"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6"),
]


def test_underscore_names_and_owned_headers_never_reach_the_origin(gw, origin):
    r = send(gw.base_url, "GET", "/echo", SPOOFS + [("x_custom", "1"), ("x-plain", "1")])
    assert r.status == 200
    got = dict(origin.last().headers)
    assert not any("_" in n for n in got), got
    assert "x-user-id" not in got
    assert "x-forwarded-for" not in got  # no client address known: none is made up
    assert "6.6.6.6" not in json.dumps(got) and "mallory" not in json.dumps(got)
    assert got.get("x-forwarded-host") != "evil.example"
    assert got["x-request-id"] == r.header("x-request-id")
    assert got["x-plain"] == "1"


def test_a_verified_identity_is_not_shadowed_by_an_underscore_spelling(gw, origin):
    r = send(gw.base_url, "GET", "/opt/identity", [("authorization", f"Bearer {token(tenant='t')}"),
                                                   ("x_user_id", "mallory")])
    assert r.status == 200
    got = origin.last().headers
    assert [v for n, v in got if n.replace("_", "-") == "x-user-id"] == ["alice"]


def test_reject_mode_answers_400_and_forwards_nothing(origin):
    cfg = config(origin, {"underscores_in_headers": "reject"})
    with Workerd(json.dumps(cfg), text_bindings={"ADMIN_TOKEN": ADMIN, "JWT_SECRET": SECRET}) as wd:
        before = origin.count()
        r = send(wd.base_url, "GET", "/echo", [("x_user_id", "mallory")])
        assert r.status == 400
        body = r.json()
        assert body["error"] == "bad_request" and "underscore" in body["message"]
        assert set(body) == {"error", "message", "request_id"}
        assert origin.count() == before
        assert send(wd.base_url, "GET", "/echo", [("x-user-id", "1")]).status == 200


def test_allow_mode_keeps_the_clients_own_names_only(origin):
    cfg = config(origin, {"underscores_in_headers": "allow"})
    with Workerd(json.dumps(cfg), text_bindings={"ADMIN_TOKEN": ADMIN, "JWT_SECRET": SECRET}) as wd:
        r = send(wd.base_url, "GET", "/echo", SPOOFS + [("x_custom", "1"), ("x-api_key", "a"), ("x-api-key", "b")])
        assert r.status == 200
        got = origin.last().headers
        names = [n for n, _ in got]
        assert ("x_custom", "1") in got
        assert "x-api_key" not in names and ("x-api-key", "b") in got  # one spelling of a name
        assert not any(n.replace("_", "-") in ("x-forwarded-for", "x-forwarded-host", "x-real-ip", "x-request-id",
                                               "x-user-id") and "_" in n for n in names), names
        assert "mallory" not in json.dumps(got) and "6.6.6.6" not in json.dumps(got)


# ---------------------------------------------------------------------------------- IP rules


@pytest.mark.parametrize("ip,office,blocked", [
    ("203.0.113.9", 200, 200),
    ("::ffff:203.0.113.9", 200, 200),
    ("::FFFF:CB00:7109", 200, 200),
    ("::203.0.113.9", 200, 200),
    ("2002:cb00:7109::1", 200, 200),
    ("64:ff9b::203.0.113.9", 200, 200),
    ("198.51.100.7", 403, 403),
    ("::ffff:198.51.100.7", 403, 403),
    ("::ffff:c633:6407", 403, 403),
    ("2002:c633:6407::", 403, 403),
    ("64:ff9b::c633:6407", 403, 403),
    ("2001:db8::1", 403, 200),
])
def test_ip_rules_read_every_ipv6_form_of_an_ipv4_address(gw, origin, ip, office, blocked):
    before = origin.count()
    for path, want in [("/office", office), ("/blocked", blocked)]:
        r = send(gw.base_url, "GET", path, [("cf-connecting-ip", ip)])
        assert r.status == want, (ip, path, r.body)
        if want == 403:
            assert r.json()["error"] == "forbidden"
    assert origin.count() - before == [office, blocked].count(200)
