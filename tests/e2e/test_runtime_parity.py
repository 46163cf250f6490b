"""End-to-end: header hygiene under both runtimes, a bare `workerd serve` and `wrangler dev`.

Every case here runs twice (see `under_each_runtime` in conftest.py), each asserting what the
origin received and what the client got. Where the runtimes legitimately differ, the case says
so with `by_runtime`, naming what each one does; everywhere else they must agree.

The difference measured so far: `wrangler dev`'s proxy consumes the client's `Connection`,
`Keep-Alive`, `TE`, `Trailer` and `Upgrade` before the Worker runs, so the gateway never sees
which headers a client's `Connection` names, and those headers reach the origin as ordinary
ones (see README, "Connection and the headers it names"). Under bare workerd the Worker sees
`Connection` and drops what it names. On responses both runtimes hand the Worker the origin's
`Connection`, so what it names never reaches the client under either.

Adding a case: write a test taking `gw` (and `origin` for what the origin received), send with
`forwarded(gw, origin, headers)` or `send(gw.base_url, ...)`, and assert; a case that differs
by runtime states both values with `by_runtime(gw, workerd=..., wrangler=...)`.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Optional
from urllib.parse import parse_qsl, quote

import pytest

from conftest import by_runtime, send, under_each_runtime
from origin import LocalServer, Origin, Received

SECRET = "an-hmac-secret-for-tests-that-is-long-enough-0123456789"
ADMIN = "admin-token-for-parity-tests-0123456789"

# Request headers that belong to one connection (README, step 7 of "The life of a request").
HOP_BY_HOP = [("keep-alive", "timeout=9"), ("te", "trailers"), ("trailer", "x-t"), ("upgrade", "x-proto/1"),
              ("proxy-authorization", "Basic eDp5"), ("proxy-connection", "keep-alive"),
              ("connection", "keep-alive")]


class _HopHandler(BaseHTTPRequestHandler):
    """Answers 200 with exactly the headers its query names: `?h=connection:x-secret&h=x-secret:1`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        _, _, query = self.path.partition("?")
        body = b'{"hop": true}'
        self.send_response(200)
        for pair in (v for k, v in parse_qsl(query) if k == "h"):
            name, _, value = pair.partition(":")
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HopOrigin(LocalServer):
    """An origin whose response headers each request chooses, connection-specific ones included."""

    handler = _HopHandler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def origin():
    with Origin("parity-origin") as o:
        yield o


@pytest.fixture(scope="module")
def hop():
    with HopOrigin() as h:
        yield h


def config(origin, hop) -> dict:
    return {
        "admin": {"path": "/_portcullis", "token_env": "ADMIN_TOKEN"},
        "origins": {"o": {"servers": [{"url": origin.url}], "timeout_ms": 5000},
                    "hop": {"servers": [{"url": hop.url}], "timeout_ms": 5000}},
        # No route uses it: a policy's forward_claims headers are dropped from every route.
        "auth": {"p": {"algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET",
                       "forward_claims": {"sub": "x-user-id"}}},
        "routes": [
            {"name": "echo", "path": "/echo/{*rest}", "origin": "o"},
            {"name": "stripped", "path": "/o/{*rest}", "origin": "o", "rewrite": {"strip_prefix": "/o"}},
            {"name": "hop", "path": "/hop", "origin": "hop"},
            {"name": "office", "path": "/office", "origin": "o", "allow_ips": ["203.0.113.0/24"]},
            # A catch-all: any spelling of a gateway path that escaped would be forwarded here.
            {"name": "all", "path": "/{*rest}", "origin": "o"},
        ],
    }


gw = under_each_runtime(config, text_bindings={"JWT_SECRET": SECRET, "ADMIN_TOKEN": ADMIN})


def forwarded(gw, origin: Origin, headers: list[tuple[str, str]], path: str = "/echo/x") -> Received:
    """Sends one GET through the gateway; returns what the origin received for it (found by the
    request id the client got back)."""
    r = send(gw.base_url, "GET", path, headers)
    assert r.status == 200, (gw.runtime, r.status, r.body)
    rid = r.header("x-request-id")
    got: Optional[Received] = next((x for x in reversed(origin.received) if x.header("x-request-id") == rid), None)
    assert got is not None, f"no request with x-request-id {rid} reached the origin"
    return got


def hop_reply(gw, *headers: str):
    """A response from the hop origin answering with `headers` ("name:value" each)."""
    query = "&".join("h=" + quote(h, safe=":") for h in headers)
    r = send(gw.base_url, "GET", "/hop?" + query)
    assert r.status == 200, (gw.runtime, r.status, r.body)
    return r


# ----------------------------------------------------------------------------- to the origin

@pytest.mark.parametrize("name,value", HOP_BY_HOP, ids=[n for n, _ in HOP_BY_HOP])
def test_a_hop_by_hop_request_header_never_reaches_the_origin(gw, origin, name, value):
    # Under wrangler dev, Connection, Keep-Alive, TE, Trailer and Upgrade never reach the Worker
    # (its proxy consumes them) and the gateway drops Proxy-*; under workerd the gateway drops all.
    got = forwarded(gw, origin, [(name, value), ("x-kept", "yes")])
    assert got.header(name) is None, (gw.runtime, name, got.headers)
    assert got.header("x-kept") == "yes"


def test_the_origin_never_receives_connection_keep_alive_te_or_upgrade(gw, origin):
    """With or without them from the client: the gateway drops them where it sees them, and the
    runtime's own fetch adds none."""
    for headers in ([], [("connection", "keep-alive, upgrade"), ("keep-alive", "timeout=9"),
                         ("te", "trailers"), ("upgrade", "x-proto/1")]):
        got = forwarded(gw, origin, headers)
        for name in ["connection", "keep-alive", "te", "upgrade"]:
            assert got.header(name) is None, (gw.runtime, headers, got.headers)


@pytest.mark.parametrize("connection", [
    [("connection", "x-secret")],
    [("connection", "keep-alive, x-secret")],
    [("connection", "X-Secret")],
    [("connection", " x-secret ,keep-alive")],
    [("connection", "keep-alive"), ("connection", "x-secret")],
], ids=["alone", "in-a-list", "upper-case", "spaces", "second-field"])
def test_a_header_named_in_the_clients_connection(gw, origin, connection):
    got = forwarded(gw, origin, connection + [("x-secret", "1"), ("x-kept", "yes")])
    # Under bare workerd the Worker sees Connection and drops what it names. wrangler dev
    # consumes Connection before the Worker runs: the gateway cannot know that x-secret was
    # named, and it reaches the origin as an ordinary header (README: "Connection and the
    # headers it names"; deployed Workers very likely behave the same).
    assert got.header("x-secret") == by_runtime(gw, workerd=None, wrangler="1"), got.headers
    assert got.header("connection") is None
    assert got.header("x-kept") == "yes"


def test_the_clients_copies_of_gateway_owned_headers_are_replaced_or_dropped(gw, origin):
    got = forwarded(gw, origin, [
        ("cf-connecting-ip", "203.0.113.7"), ("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"), ("x-request-id", "chosen-by-client"), ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "ftp"), ("x-forwarded-port", "1")])
    assert got.header("x-forwarded-for") == "203.0.113.7"
    assert got.header("x-real-ip") is None
    assert got.header("forwarded") is None
    assert got.header("x-forwarded-port") is None
    assert got.header("x-request-id") not in (None, "chosen-by-client")
    assert got.header("x-forwarded-proto") == "http"
    assert got.header("x-forwarded-host") == gw.base_url.split("://", 1)[1]


def test_a_clients_forwarded_for_alone_never_reaches_the_origin(gw, origin):
    got = forwarded(gw, origin, [("x-forwarded-for", "6.6.6.6")])
    # wrangler dev sets CF-Connecting-IP to the client's socket address when the request has
    # none (as Cloudflare's edge always sets it); a bare workerd sets nothing.
    assert got.header("x-forwarded-for") == by_runtime(gw, workerd=None, wrangler="127.0.0.1")


def test_the_clients_copies_of_claim_headers_never_reach_the_origin(gw, origin):
    got = forwarded(gw, origin, [("x-user-id", "mallory"), ("X-User-Id", "mallory2")])
    assert got.header("x-user-id") is None, got.headers


# ----------------------------------------------------------------------------- to the client

def test_origin_identity_headers_never_reach_the_client(gw):
    r = send(gw.base_url, "GET", "/o/reveal")
    assert r.status == 200
    for name in ["x-powered-by", "via", "x-internal-hop"]:
        assert r.header(name) is None, (gw.runtime, name)
    assert r.header("server") is None or "origin-test" not in r.header("server")


def test_a_redirect_to_the_origin_comes_back_to_the_public_host(gw):
    r = send(gw.base_url, "GET", "/o/redirect")
    assert r.status == 302
    assert r.header("location") == gw.base_url + "/o/elsewhere?x=1"
    assert r.header("content-location") == gw.base_url + "/o/doc"


def test_a_header_named_in_the_origins_connection_never_reaches_the_client(gw):
    # Both runtimes hand the Worker the origin's Connection, so the gateway drops what it names.
    r = hop_reply(gw, "connection:x-secret", "x-secret:1", "x-plain:yes")
    assert r.header("x-secret") is None, (gw.runtime, r.headers)
    assert r.header("x-plain") == "yes"
    assert r.header("connection") is None or "x-secret" not in r.header("connection").lower()


HOP_BY_HOP_RESPONSE = [("keep-alive", "timeout=5"), ("upgrade", "x-proto/2"), ("trailer", "x-t"),
                       ("proxy-connection", "keep-alive"), ("proxy-authenticate", "Basic")]


@pytest.mark.parametrize("name,value", HOP_BY_HOP_RESPONSE, ids=[n for n, _ in HOP_BY_HOP_RESPONSE])
def test_a_hop_by_hop_response_header_never_reaches_the_client(gw, name, value):
    r = hop_reply(gw, f"{name}:{value}", "x-plain:yes")
    assert r.header(name) is None, (gw.runtime, r.headers)
    assert r.header("x-plain") == "yes"


# ----------------------------------------------------------------------------- the log

def test_each_request_has_one_json_log_line_on_the_workers_console(gw):
    r = send(gw.base_url, "GET", "/echo/logged?token=secret-in-query", [("authorization", "Bearer secret-token")])
    rid = r.header("x-request-id")
    line = gw.wait_for_log(rid)
    entry = json.loads(line)
    assert (entry["request_id"], entry["route"], entry["status"], entry["path"]) == (rid, "echo", 200, "/echo/logged")
    assert "secret" not in line
    assert [x for x in gw.log_lines() if rid in x] == [line], "exactly one line per request"
    assert not any(x.lstrip().startswith("[wrangler:") for x in gw.log_lines()), "only the Worker's lines"


# ------------------------------------------------------------------- spellings (both runtimes)


UNDERSCORE_SPOOFS = [("x_user_id", "mallory"), ("X_Forwarded_For", "6.6.6.6"), ("x_real_ip", "6.6.6.6"),
                     ("x_request_id", "spoofed"), ("X_Forwarded_Host", "evil.example"), ("x_custom", "1")]


def test_no_header_name_with_an_underscore_reaches_the_origin(gw, origin):
    got = forwarded(gw, origin, UNDERSCORE_SPOOFS + [("x-plain", "1")])
    names = [n for n, _ in got.headers]
    assert not any("_" in n for n in names), (gw.runtime, names)
    text = json.dumps(got.headers)
    assert "mallory" not in text and "6.6.6.6" not in text and "evil.example" not in text, (gw.runtime, text)
    assert got.header("x-plain") == "1"


@pytest.mark.parametrize("path", ["//_portcullis/cache", "/%5Fportcullis/cache", "/_PORTCULLIS/cache",
                                  "/x/../_portcullis/cache", "/_portcullis//cache"])
def test_no_spelling_of_the_admin_path_reaches_the_origin(gw, origin, path):
    before = origin.count()
    r = send(gw.base_url, "GET", path, [("authorization", f"Bearer {ADMIN}")])
    assert r.status == 404 and r.json()["error"] == "no_route", (gw.runtime, path, r.status, r.body)
    assert origin.count() == before, (gw.runtime, path)


def test_the_admin_credential_is_not_forwarded_on_another_path(gw, origin):
    before = origin.count()
    r = send(gw.base_url, "GET", "/anything", [("authorization", f"Bearer {ADMIN}")])
    assert r.status == 404 and r.json()["error"] == "no_route", (gw.runtime, r.status)
    assert origin.count() == before


@pytest.mark.parametrize("ip,status", [("::ffff:203.0.113.9", 200), ("2002:cb00:7109::1", 200),
                                       ("::ffff:198.51.100.1", 403)])
def test_ip_rules_read_embedded_ipv4_addresses(gw, ip, status):
    # Under wrangler dev the client's own CF-Connecting-IP reaches the Worker as sent.
    r = send(gw.base_url, "GET", "/office", [("cf-connecting-ip", ip)])
    assert r.status == status, (gw.runtime, ip, r.status, r.body)
