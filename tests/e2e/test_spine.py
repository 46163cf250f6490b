"""End-to-end: the built Wasm worker in workerd, in front of real origin servers on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import json
import re

from conftest import send
from origin import GZIP_PLAIN, big_body
from workerd import Workerd

ORIGIN_ADDRESS = re.compile(r"127\.0\.0\.1|localhost|internal", re.I)


def assert_error(reply, status: int, code: str):
    assert reply.status == status, (reply.status, reply.body)
    assert reply.header("content-type") == "application/json"
    body = reply.json()
    assert set(body) == {"error", "message", "request_id"}, body
    assert body["error"] == code
    assert body["request_id"] == reply.header("x-request-id")
    assert not ORIGIN_ADDRESS.search(reply.body.decode()), reply.body
    return body


def test_request_reaches_the_right_origin_with_rewritten_path_and_query(gateway, users, orders):
    r = send(gateway.base_url, "GET", "/api/users/42?page=2&q=a%20b&q=c")
    assert r.status == 200, r.body
    echo = r.json()
    assert echo["server"] == "users"
    assert echo["path"] == "/internal/v2/users/42"
    assert echo["query"] == "page=2&q=a%20b&q=c"

    r = send(gateway.base_url, "GET", "/api/orders/7/items?x=1")
    echo = r.json()
    assert (echo["server"], echo["path"], echo["query"]) == ("orders", "/orders/7/items", "x=1")


def test_the_normalized_path_is_what_is_matched_and_forwarded(gateway, orders):
    r = send(gateway.base_url, "GET", "/api/orders/a/./b/../c//%64%7E")
    assert r.status == 200, r.body
    assert orders.last().path == "/orders/a/c/d~"
    for bad in ["/api/orders/a%2Fb", "/api/orders/a%5Cb", "/api/orders/%00", "/api/orders/%zz"]:
        assert_error(send(gateway.base_url, "GET", bad), 400, "bad_request")


def test_post_body_arrives_byte_identical(gateway, users):
    for size in [0, 1, 70_000, 5 * 1024 * 1024 + 3]:
        body = big_body(size)
        r = send(gateway.base_url, "POST", "/api/users/9", [("content-type", "application/octet-stream")], body)
        assert r.status == 200, r.body
        echo = r.json()
        assert (echo["method"], echo["body_len"]) == ("POST", size)
        assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_large_response_arrives_byte_identical(gateway):
    size = 6 * 1024 * 1024 + 11
    r = send(gateway.base_url, "GET", f"/o/big/{size}")
    assert r.status == 200
    assert len(r.body) == size
    assert r.body == big_body(size)


def test_gzip_from_the_origin_reaches_the_client_still_gzip(gateway):
    r = send(gateway.base_url, "GET", "/o/gzip", [("accept-encoding", "gzip")])
    assert r.status == 200
    assert r.header("content-encoding") == "gzip"
    if r.header("content-length") is not None:
        assert int(r.header("content-length")) == len(r.body)
    assert gzip.decompress(r.body) == GZIP_PLAIN


def test_404_and_405_are_json(gateway):
    assert_error(send(gateway.base_url, "GET", "/nowhere"), 404, "no_route")
    r = send(gateway.base_url, "PATCH", "/api/users/1")
    assert_error(r, 405, "method_not_allowed")
    assert [m.strip() for m in r.header("allow").split(",")] == ["GET", "PUT", "POST", "HEAD"]


def test_headers_named_in_connection_never_reach_the_origin(gateway, users):
    r = send(gateway.base_url, "GET", "/api/users/1",
             [("connection", "x-secret"), ("x-secret", "1"), ("keep-alive", "timeout=9"), ("x-kept", "yes")])
    assert r.status == 200
    got = users.last()
    assert got.header("x-secret") is None
    assert got.header("keep-alive") is None
    assert got.header("x-kept") == "yes"


def test_client_forwarded_for_is_replaced_not_appended(gateway, users):
    send(gateway.base_url, "GET", "/api/users/1",
         [("cf-connecting-ip", "203.0.113.7"), ("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6"),
          ("forwarded", "for=6.6.6.6"), ("x-request-id", "chosen-by-client")])
    got = users.last()
    assert got.header("x-forwarded-for") == "203.0.113.7"
    assert got.header("x-real-ip") is None
    assert got.header("forwarded") is None
    assert got.header("x-request-id") != "chosen-by-client"
    assert got.header("x-forwarded-proto") == "http"
    assert got.header("x-forwarded-host") == gateway.base_url.split("://")[1]

    send(gateway.base_url, "GET", "/api/users/1", [("x-forwarded-for", "6.6.6.6")])
    assert users.last().header("x-forwarded-for") is None


def test_route_header_rules_and_placeholders(gateway, users):
    r = send(gateway.base_url, "GET", "/api/users/77",
             [("cookie", "session=secret"), ("accept", "text/html"), ("cf-connecting-ip", "2001:db8::1")])
    got = users.last()
    rid = r.header("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert got.header("x-request-id") == rid
    assert got.header("cookie") is None
    assert got.header("x-gateway") == "portcullis"
    assert got.header("x-user-from-path") == "77"
    assert got.header("x-route") == "user"
    assert got.header("x-rid") == rid
    assert got.header("x-public-host") == gateway.base_url.split("://")[1]
    assert got.header("x-ip") == "2001:db8::1"
    assert got.header("accept") in ("text/html, application/x-extra", "text/html,application/x-extra")
    assert r.header("x-served-by") == "user"
    assert r.header("x-internal-trace") is None
    assert r.header("set-cookie") == "origin=1"
    # without a client address, the header that needs it is absent rather than literal
    send(gateway.base_url, "GET", "/api/users/78")
    assert users.last().header("x-ip") is None


def test_origin_identity_headers_do_not_reach_the_client(gateway):
    r = send(gateway.base_url, "GET", "/o/reveal")
    assert r.status == 200
    for name in ["x-powered-by", "via", "x-internal-hop"]:
        assert r.header(name) is None, name
    assert r.header("server") is None or "origin-test" not in r.header("server")


def test_a_redirect_to_the_origin_comes_back_to_the_public_host(gateway):
    r = send(gateway.base_url, "GET", "/o/redirect")
    assert r.status == 302
    assert r.header("location") == gateway.base_url + "/o/elsewhere?x=1"
    assert r.header("content-location") == gateway.base_url + "/o/doc"


def test_a_slow_origin_gives_504_and_a_refused_one_502(gateway):
    assert_error(send(gateway.base_url, "GET", "/slow/3000"), 504, "origin_timeout")
    assert_error(send(gateway.base_url, "GET", "/dead/x"), 502, "origin_unavailable")
    # a fast answer on the same short-timeout route is not cut
    assert send(gateway.base_url, "GET", "/slow/10").status == 200


def test_host_routes(gateway, users, orders):
    r = send(gateway.base_url, "GET", "/whoami", [("host", "api.example.test")])
    assert r.status == 200, r.body
    assert r.json()["server"] == "users"
    r = send(gateway.base_url, "GET", "/whoami", [("host", "a.b.tenants.test")])
    assert r.json()["server"] == "orders"
    assert_error(send(gateway.base_url, "GET", "/whoami", [("host", "tenants.test")]), 404, "no_route")


def test_one_json_log_line_per_request(gateway):
    r = send(gateway.base_url, "GET", "/api/users/5?token=secret-in-query", [("authorization", "Bearer secret-token")])
    rid = r.header("x-request-id")
    line = gateway.wait_for_log(rid)
    entry = json.loads(line[line.index("{"):])
    assert entry["request_id"] == rid
    assert entry["route"] == "user"
    assert entry["status"] == 200
    assert entry["path"] == "/api/users/5"
    assert entry["attempts"][0]["server"] == 0
    assert entry["attempts"][0]["outcome"] == "response"
    assert isinstance(entry["duration_ms"], int)
    assert "secret" not in line

    r = send(gateway.base_url, "GET", "/dead/x")
    line = gateway.wait_for_log(r.header("x-request-id"))
    entry = json.loads(line[line.index("{"):])
    assert entry["error"] == "origin_unavailable"
    assert entry["attempts"][0]["outcome"] == "connect_failed"


def test_an_invalid_gateway_config_answers_500_on_every_request(users):
    bad = {"origins": {"users": {"servers": []}}, "routes": [{"name": "r", "path": "/x", "origin": "nope"}]}
    with Workerd(json.dumps(bad)) as wd:
        for path in ["/x", "/", "/anything/else"]:
            assert_error(send(wd.base_url, "GET", path), 500, "config_invalid")
        logs = "\n".join(wd.log_lines() + wd.stderr_lines())
        assert "$.origins.users.servers" in logs
        assert "$.routes[0].origin" in logs


def test_a_config_the_json_types_refuse_is_logged_with_its_line_and_the_advice_to_run_check(users):
    # The Worker is built without the JSON path of such a problem (the core's `json-paths`
    # feature): it names the problem, where in the text, and that `portcullis check` gives the path.
    bad = ('{"origins": {"users": {"servers": [{"url": "' + users.url + '"}]}},\n'
           ' "routes": [{"name": "r", "path": "/x", "origin": "users", "bogus_field": 1}]}')
    before = users.count()
    with Workerd(bad) as wd:
        for path in ["/x", "/"]:
            assert_error(send(wd.base_url, "GET", path), 500, "config_invalid")
        assert users.count(before) == 0
        logs = "\n".join(wd.log_lines() + wd.stderr_lines())
        assert "config_invalid" in logs
        assert "unknown field `bogus_field`" in logs
        assert "line 2 column" in logs
        assert "run `portcullis check`" in logs
    with Workerd('{"origins": {}, "routes": [') as wd:
        assert_error(send(wd.base_url, "GET", "/x"), 500, "config_invalid")
        logs = "\n".join(wd.log_lines() + wd.stderr_lines())
        assert "the file is not valid JSON" in logs and "run `portcullis check`" in logs


def test_without_gateway_config_the_embedded_routes_json_is_used():
    with Workerd(None) as wd:
        assert_error(send(wd.base_url, "GET", "/definitely/not/a/route"), 404, "no_route")
        assert_error(send(wd.base_url, "PATCH", "/api/users/1"), 405, "method_not_allowed")
