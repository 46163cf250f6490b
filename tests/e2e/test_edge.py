"""End-to-end: edge policy (CORS, IP rules, limits, methods, security headers, rate limiting)
through the Wasm worker, with a real origin on 127.0.0.1 that records what reaches it."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from conftest import send
from origin import Origin, big_body
from workerd import Workerd
from wrangler_dev import RateLimit, WranglerDev

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def origin():
    with Origin("edge-origin") as o:
        yield o


def config(origin: Origin) -> dict:
    return {
        "settings": {"max_url_bytes": 2048, "max_header_bytes": 8192},
        "origins": {"o": {"servers": [{"url": origin.url}]}},
        "routes": [
            {"name": "app", "path": "/app/{*rest}", "methods": ["GET", "PUT", "POST"], "origin": "o",
             "cors": {"origins": ["https://app.example.com", "https://*.example.org"], "methods": ["GET", "PUT"],
                      "headers": ["authorization", "x-trace"], "expose_headers": ["x-request-id"],
                      "credentials": True, "max_age_s": 300}},
            {"name": "office", "path": "/office/{*rest}", "origin": "o",
             "allow_ips": ["203.0.113.0/24", "2001:db8::/32"], "deny_ips": ["203.0.113.66"]},
            {"name": "upload", "path": "/upload", "methods": ["POST"], "origin": "o",
             "limits": {"max_body_bytes": MIB}},
            {"name": "plain", "path": "/plain/{*rest}", "origin": "o", "security_headers": False},
            {"name": "custom", "path": "/custom", "origin": "o",
             "security_headers": {"x-frame-options": "DENY"}},
        ],
    }


@pytest.fixture(scope="module")
def gw(origin):
    with Workerd(json.dumps(config(origin))) as wd:
        yield wd


def test_a_preflight_is_answered_at_the_edge(gw, origin):
    before = len(origin.received)
    r = send(gw.base_url, "OPTIONS", "/app/items/1", [
        ("origin", "https://app.example.com"), ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "authorization, content-type")])
    assert r.status == 204, r.body
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert r.header("access-control-allow-methods") == "GET, PUT"
    assert r.header("access-control-allow-headers") == "authorization, content-type"
    assert r.header("access-control-allow-credentials") == "true"
    assert r.header("access-control-max-age") == "300"
    assert len(origin.received) == before, "the origin never sees a preflight"


@pytest.mark.parametrize("origin_header,method,headers", [
    ("https://evil-example.com", "GET", None),
    ("https://app.example.com.evil.net", "GET", None),
    ("https://example.org", "GET", None),
    ("null", "GET", None),
    ("https://app.example.com", "DELETE", None),
    ("https://app.example.com", "GET", "x-secret"),
])
def test_a_refused_preflight_is_403_without_cors_headers(gw, origin, origin_header, method, headers):
    before = len(origin.received)
    hdrs = [("origin", origin_header), ("access-control-request-method", method)]
    if headers:
        hdrs.append(("access-control-request-headers", headers))
    r = send(gw.base_url, "OPTIONS", "/app/items/1", hdrs)
    assert r.status == 403, (r.status, r.body)
    assert r.json()["error"] == "forbidden"
    assert not any(k.lower().startswith("access-control-") for k, _ in r.headers)
    assert len(origin.received) == before


def test_actual_requests_get_credentials_and_vary_origin(gw):
    r = send(gw.base_url, "GET", "/app/items/1", [("origin", "https://a.b.example.org")])
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "https://a.b.example.org"
    assert r.header("access-control-allow-credentials") == "true"
    assert r.header("access-control-expose-headers") == "x-request-id"
    assert "Origin" in r.header("vary")
    r = send(gw.base_url, "GET", "/app/items/1", [("origin", "https://evil.example")])
    assert r.status == 200  # forwarded; the browser, without CORS headers, keeps it from the page
    assert r.header("access-control-allow-origin") is None
    assert "Origin" in r.header("vary")


def test_ip_rules(gw, origin):
    ok = send(gw.base_url, "GET", "/office/x", [("cf-connecting-ip", "203.0.113.9")])
    assert ok.status == 200
    assert send(gw.base_url, "GET", "/office/x", [("cf-connecting-ip", "2001:db8::7")]).status == 200
    for ip in ["203.0.113.66", "198.51.100.1", "2001:db9::1", None]:
        before = len(origin.received)
        r = send(gw.base_url, "GET", "/office/x", [("cf-connecting-ip", ip)] if ip else [])
        assert r.status == 403, (ip, r.status)
        assert r.json()["error"] == "forbidden"
        assert len(origin.received) == before, ip


def test_a_body_over_the_limit_is_413_and_never_reaches_the_origin(gw, origin):
    before = len(origin.received)
    r = send(gw.base_url, "POST", "/upload", [("content-type", "application/octet-stream")], big_body(2 * MIB))
    assert r.status == 413, r.status
    assert r.json()["error"] == "payload_too_large"
    assert len(origin.received) == before
    ok = send(gw.base_url, "POST", "/upload", [], big_body(MIB))
    assert ok.status == 200 and ok.json()["body_len"] == MIB


def chunked_post(base_url: str, path: str, total: int, chunk: int = 64 * 1024) -> tuple[int, bytes]:
    host_port = base_url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host_port, timeout=30)
    data = big_body(total)

    def chunks():
        for i in range(0, total, chunk):
            yield data[i:i + chunk]
    try:
        conn.request("POST", path, body=chunks(), headers={"transfer-encoding": "chunked"}, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (BrokenPipeError, ConnectionResetError):
        return -1, b""
    finally:
        conn.close()


def test_a_chunked_body_over_the_limit_is_cut_with_413(gw, origin):
    before = [r for r in origin.received if r.path == "/upload"]
    status, body = chunked_post(gw.base_url, "/upload", 2 * MIB)
    assert status == 413, (status, body[:200])
    assert json.loads(body)["error"] == "payload_too_large"
    time.sleep(0.2)
    after = [r for r in origin.received if r.path == "/upload"]
    assert len(after) == len(before), "the origin never received a complete request"
    status, body = chunked_post(gw.base_url, "/upload", MIB // 2)
    assert status == 200 and json.loads(body)["body_len"] == MIB // 2


def test_trace_and_connect_are_refused_and_sizes_are_capped(gw):
    r = send(gw.base_url, "TRACE", "/app/x")
    assert r.status == 405 and r.json()["error"] == "method_not_allowed"
    assert "TRACE" not in r.header("allow")
    r = send(gw.base_url, "GET", "/app/" + "a" * 3000)
    assert r.status == 414 and r.json()["error"] == "uri_too_long"
    r = send(gw.base_url, "GET", "/app/x", [(f"x-h{i}", "v" * 200) for i in range(50)])
    assert r.status == 431 and r.json()["error"] == "headers_too_large"


def test_security_headers_default_override_and_off(gw):
    r = send(gw.base_url, "GET", "/app/x")
    assert r.header("strict-transport-security") == "max-age=31536000; includeSubDomains"
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("referrer-policy") == "strict-origin-when-cross-origin"
    r = send(gw.base_url, "GET", "/plain/x")
    assert r.status == 200
    assert r.header("strict-transport-security") is None and r.header("x-content-type-options") is None
    r = send(gw.base_url, "GET", "/custom")
    assert r.header("x-frame-options") == "DENY" and r.header("x-content-type-options") is None


def test_rate_limiting_with_the_binding_under_wrangler_dev(origin):
    """The local runtime (wrangler dev) simulates the Rate Limiting binding: 3 per period, then 429."""
    cfg = {
        "origins": {"o": {"servers": [{"url": origin.url}]}},
        "routes": [{"name": "limited", "path": "/limited", "origin": "o",
                    "rate_limit": {"binding": "RL", "key": "header:x-api-key", "period_s": 60}}],
    }
    with WranglerDev(json.dumps(cfg), ratelimits=[RateLimit("RL", limit=3, period=60)]) as wd:
        statuses = [send(wd.base_url, "GET", "/limited", [("x-api-key", "k1")]).status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429], statuses
        r = send(wd.base_url, "GET", "/limited", [("x-api-key", "k1")])
        assert r.status == 429 and r.json()["error"] == "rate_limited"
        assert r.header("retry-after") == "60"
        # another key has its own counter
        assert send(wd.base_url, "GET", "/limited", [("x-api-key", "k2")]).status == 200
