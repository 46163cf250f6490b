"""End-to-end: the edge cache through the Wasm worker in workerd (its Cache API backed by the
harness's cache service), with a real origin on 127.0.0.1 that counts its hits."""

from __future__ import annotations

import json
import re
import time
import urllib.parse

import pytest

from conftest import send
from origin import Origin
from workerd import Workerd

TOKEN = "admin-token-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def origin():
    with Origin("cache-origin") as o:
        yield o


@pytest.fixture(scope="module")
def gw(origin):
    cfg = {
        "admin": {"path": "/_portcullis", "token_env": "ADMIN_TOKEN"},
        "origins": {"o": {"servers": [{"url": origin.url}]}},
        "routes": [
            {"name": "cached", "path": "/cacheable/{*rest}", "origin": "o",
             "cache": {"ttl_s": 60, "key": {"query": ["a", "b", "cc", "cookie"], "headers": ["accept-language"]}}},
            {"name": "swr", "path": "/cacheable-swr/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/swr/{rest}"},
             "cache": {"ttl_s": 1, "stale_while_revalidate_s": 30}},
            {"name": "nocache-ok", "path": "/cacheable-nc/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/nc/{rest}"},
             "cache": {"ttl_s": 60, "client_no_cache": True}},
            {"name": "uncached", "path": "/plain/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/plain/{rest}"}},
        ],
    }
    with Workerd(json.dumps(cfg), text_bindings={"ADMIN_TOKEN": TOKEN}) as wd:
        yield wd


def get(gw, path, headers=(), method="GET"):
    return send(gw.base_url, method, path, list(headers))


def test_miss_then_hit_with_the_origin_hit_once(gw, origin):
    first = get(gw, "/cacheable/one?a=1")
    assert first.status == 200 and first.header("x-cache-status") == "MISS"
    time.sleep(0.2)  # the write happens after the response (waitUntil)
    second = get(gw, "/cacheable/one?a=1")
    assert second.header("x-cache-status") == "HIT"
    assert second.body == first.body
    assert second.json()["n"] == 1 and origin.hits["/cacheable/one?a=1"] == 1
    assert second.header("age") is not None and int(second.header("age")) >= 0
    assert second.header("x-request-id") != first.header("x-request-id")


def test_query_order_and_unlisted_parameters_share_an_entry(gw, origin):
    assert get(gw, "/cacheable/q?b=2&a=1").header("x-cache-status") == "MISS"
    time.sleep(0.2)
    for variant in ["/cacheable/q?a=1&b=2", "/cacheable/q?b=2&a=1&utm_source=x", "/cacheable/q?utm_source=y&a=1&b=2"]:
        r = get(gw, variant)
        assert r.header("x-cache-status") == "HIT", variant
        assert r.json()["n"] == 1
    assert get(gw, "/cacheable/q?a=1&b=3").header("x-cache-status") == "MISS"


def test_a_listed_header_splits_the_cache(gw):
    assert get(gw, "/cacheable/lang", [("accept-language", "en")]).header("x-cache-status") == "MISS"
    time.sleep(0.2)
    assert get(gw, "/cacheable/lang", [("accept-language", "en")]).header("x-cache-status") == "HIT"
    assert get(gw, "/cacheable/lang", [("accept-language", "fr")]).header("x-cache-status") == "MISS"


@pytest.mark.parametrize("query", ["cookie=1", "cc=private", "cc=no-store", "cc=public%2C%20no-store"])
def test_cookies_private_and_no_store_never_become_hits(gw, origin, query):
    path = f"/cacheable/never?{query}"
    for _ in range(3):
        r = get(gw, path)
        assert r.status == 200
        assert r.header("x-cache-status") == "BYPASS", (query, r.header("x-cache-status"))
        time.sleep(0.1)
    assert origin.hits[path] == 3


def test_stale_while_revalidate(gw, origin):
    path = "/cacheable-swr/item"
    assert get(gw, path).json()["n"] == 1
    time.sleep(1.3)  # past the 1 s TTL, inside the 30 s stale window
    stale = get(gw, path)
    assert stale.header("x-cache-status") == "STALE"
    assert stale.json()["n"] == 1, "the stale entry is served at once"
    deadline = time.monotonic() + 5
    while origin.hits.get("/cacheable/swr/item", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    fresh = get(gw, path)
    assert fresh.header("x-cache-status") == "HIT"
    assert fresh.json()["n"] == 2, "refreshed in the background"
    assert origin.hits["/cacheable/swr/item"] == 2


def test_head_is_answered_from_a_stored_get(gw, origin):
    get(gw, "/cacheable/head")
    time.sleep(0.2)
    r = get(gw, "/cacheable/head", method="HEAD")
    assert r.status == 200 and r.header("x-cache-status") == "HIT"
    assert r.body == b""
    assert origin.hits["/cacheable/head"] == 1


def test_bypass_for_other_methods_and_client_no_cache_where_allowed(gw, origin):
    r = get(gw, "/cacheable/post", method="POST")
    assert r.header("x-cache-status") == "BYPASS"
    get(gw, "/cacheable-nc/x")
    time.sleep(0.2)
    assert get(gw, "/cacheable-nc/x").header("x-cache-status") == "HIT"
    assert get(gw, "/cacheable-nc/x", [("cache-control", "no-cache")]).header("x-cache-status") == "BYPASS"
    # on a route that does not allow it, the client's no-cache changes nothing
    get(gw, "/cacheable/strict")
    time.sleep(0.2)
    assert get(gw, "/cacheable/strict", [("cache-control", "no-cache")]).header("x-cache-status") == "HIT"
    # a route without cache says nothing about caching
    assert get(gw, "/plain/x").header("x-cache-status") is None


def test_purge_removes_an_entry_only_with_the_admin_credential(gw, origin):
    get(gw, "/cacheable/purge-me?a=5")
    time.sleep(0.2)
    assert get(gw, "/cacheable/purge-me?a=5").header("x-cache-status") == "HIT"
    target = urllib.parse.quote(gw.base_url + "/cacheable/purge-me?a=5", safe="")
    # no credential, a wrong one, or anything else on the admin path: 404, and nothing purged
    for headers, method, path in [
        ([], "DELETE", f"/_portcullis/cache?url={target}"),
        ([("authorization", "Bearer wrong")], "DELETE", f"/_portcullis/cache?url={target}"),
        ([("authorization", f"Bearer {TOKEN}")], "GET", f"/_portcullis/cache?url={target}"),
        ([("authorization", f"Bearer {TOKEN}")], "DELETE", "/_portcullis/other"),
    ]:
        r = send(gw.base_url, method, path, headers)
        assert r.status == 404 and r.json()["error"] == "no_route", (method, path)
    assert get(gw, "/cacheable/purge-me?a=5").header("x-cache-status") == "HIT"
    r = send(gw.base_url, "DELETE", f"/_portcullis/cache?url={target}", [("authorization", f"Bearer {TOKEN}")])
    assert r.status == 200 and r.json()["purged"] is True
    after = get(gw, "/cacheable/purge-me?a=5")
    assert after.header("x-cache-status") == "MISS"
    assert after.json()["n"] == 2


SECRET = "cache-test-hmac-secret-0123456789abcdef"


def hs256(claims: dict) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"exp": int(time.time()) + 600, **claims}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


@pytest.fixture(scope="module")
def authgw(origin):
    cfg = {
        "auth": {"main": {"algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET",
                          "forward_claims": {"sub": "x-user"}}},
        "origins": {"o": {"servers": [{"url": origin.url}]}},
        "routes": [
            {"name": "me", "path": "/cacheable-me/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/me/{rest}"},
             "auth": "main", "cache": {"ttl_s": 60, "key": {"claims": ["sub"]}}},
            {"name": "public", "path": "/cacheable/{*rest}", "origin": "o", "cache": {"ttl_s": 60}},
        ],
    }
    with Workerd(json.dumps(cfg), text_bindings={"JWT_SECRET": SECRET}) as wd:
        yield wd


def test_two_users_on_a_claims_keyed_route_never_see_each_others_body(authgw, origin):
    alice, bob = hs256({"sub": "alice"}), hs256({"sub": "bob"})
    a1 = send(authgw.base_url, "GET", "/cacheable-me/profile", [("authorization", f"Bearer {alice}")])
    assert a1.status == 200 and a1.json()["user"] == "alice" and a1.header("x-cache-status") == "MISS"
    time.sleep(0.2)
    b1 = send(authgw.base_url, "GET", "/cacheable-me/profile", [("authorization", f"Bearer {bob}")])
    assert b1.status == 200 and b1.json()["user"] == "bob", b1.body
    assert b1.header("x-cache-status") == "MISS"
    time.sleep(0.2)
    for _ in range(3):
        a = send(authgw.base_url, "GET", "/cacheable-me/profile", [("authorization", f"Bearer {hs256({'sub': 'alice'})}")])
        b = send(authgw.base_url, "GET", "/cacheable-me/profile", [("authorization", f"Bearer {bob}")])
        assert (a.json()["user"], a.header("x-cache-status")) == ("alice", "HIT")
        assert (b.json()["user"], b.header("x-cache-status")) == ("bob", "HIT")


def test_an_unauthenticated_request_to_a_cached_auth_route_gets_401_never_the_body(authgw):
    send(authgw.base_url, "GET", "/cacheable-me/secret", [("authorization", f"Bearer {hs256({'sub': 'alice'})}")])
    time.sleep(0.2)
    for headers in ([], [("authorization", "Bearer not.a.token")], [("authorization", f"Bearer {hs256({'sub': 'alice'})}x")]):
        r = send(authgw.base_url, "GET", "/cacheable-me/secret", headers)
        assert r.status == 401, (headers, r.status)
        assert r.json()["error"] == "unauthorized"
        assert b"alice" not in r.body


def test_credentials_on_a_route_without_claims_are_never_cached(authgw, origin):
    path = "/cacheable/creds"
    for _ in range(3):
        r = send(authgw.base_url, "GET", path, [("authorization", "Bearer someone-elses-token")])
        assert r.header("x-cache-status") == "BYPASS"
        time.sleep(0.1)
    assert send(authgw.base_url, "GET", path).header("x-cache-status") == "MISS"


@pytest.fixture()
def two_origins():
    with Origin("sie-a") as a, Origin("sie-b") as b:
        yield a, b


def test_stale_if_error_serves_the_stored_entry_when_every_server_is_down(two_origins):
    a, b = two_origins
    pool = {"servers": [{"url": a.url}, {"url": b.url}],
            "retry": {"attempts": 2, "on": ["connect", "timeout", 503]}}
    cfg = {
        "origins": {"o": pool},
        "routes": [
            {"name": "sie", "path": "/sie/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/sie/{rest}"},
             "cache": {"ttl_s": 1, "stale_if_error_s": 60}},
            {"name": "plain-ttl", "path": "/ttl/{*rest}", "origin": "o", "rewrite": {"path": "/cacheable/ttl/{rest}"},
             "cache": {"ttl_s": 1}},
        ],
    }
    with Workerd(json.dumps(cfg)) as wd:
        paths = ["/sie/item", "/sie/busy", "/ttl/item"]
        stored = {p: get(wd, p) for p in paths}
        assert all(r.status == 200 and r.header("x-cache-status") == "MISS" for r in stored.values())
        time.sleep(1.3)  # past the 1 s TTL of every entry
        # Every server answering a status the pool retries on: the stored entry answers.
        a.mode = b.mode = "503"
        r = get(wd, "/sie/busy")
        assert (r.status, r.header("x-cache-status")) == (200, "STALE"), r.body
        assert r.body == stored["/sie/busy"].body
        # Every server stopped: the stored entry, its body and its age; HEAD without a body.
        a.stop()
        b.stop()
        r = get(wd, "/sie/item")
        assert (r.status, r.header("x-cache-status")) == (200, "STALE"), r.body
        assert r.body == stored["/sie/item"].body and r.json()["n"] == 1
        assert int(r.header("age")) >= 1
        head = get(wd, "/sie/item", method="HEAD")
        assert (head.status, head.header("x-cache-status"), head.body) == (200, "STALE", b"")
        # Without stale_if_error_s: the gateway's 502, not the stored body.
        r = get(wd, "/ttl/item")
        assert r.status == 502 and r.json()["error"] == "origin_unavailable"
        assert b'"n"' not in r.body
        line = json.loads(wd.wait_for_log(re.compile(r'"GET","path":"/sie/item".*"cache":"STALE"')))
        assert line["status"] == 200 and line["cache"] == "STALE"
        assert line["cache_reason"] == "stale-if-error: every attempt to the origin failed"
        assert line["detail"].startswith("served stale because the origin failed: origin_unavailable")
        assert [t["outcome"] for t in line["attempts"]] == ["connect_failed", "connect_failed"]
        busy = json.loads(wd.wait_for_log(re.compile(r'"path":"/sie/busy".*"cache":"STALE"')))
        assert busy["detail"] == "served stale because the origin failed: the last attempt answered 503"
