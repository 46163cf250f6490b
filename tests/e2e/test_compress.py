"""End-to-end: compression at the edge, under a bare `workerd serve` and under `wrangler dev`
(conftest.py's `under_each_runtime`), with a real origin on 127.0.0.1 that sends identity
bodies. What a client sees: the coding it accepted, a body that decodes to the origin's exact
bytes, `Vary: Accept-Encoding`; identity for a client that accepts nothing, for images, small
bodies, `no-transform`, HEAD and a route with `"compress": false`; an origin's own gzip body
passed through.

The two runtimes differ, and each case says how (`by_runtime`). Under workerd the Worker sees the
client's own `Accept-Encoding`, and what the gateway decides is what the client gets. Under
`wrangler dev` the Worker always sees `Accept-Encoding: br, gzip`, whatever the client sent, and
the proxy in front of it re-encodes the response for the client by its own rules: it compresses
text the gateway left alone (small bodies, `no-transform`, `compress: false`, HEAD), sends
identity for `*`, and passes br on to a client that sent no `Accept-Encoding` at all."""

from __future__ import annotations

import gzip
import subprocess
import time

import pytest

from conftest import by_runtime, send, under_each_runtime
from origin import GZIP_BYTES, GZIP_PLAIN, Origin, text_body


@pytest.fixture(scope="module")
def origin():
    with Origin("compress-origin") as o:
        yield o


def config(origin):
    return {
        "origins": {"o": {"servers": [{"url": origin.url}]}},
        "routes": [
            {"name": "on", "path": "/c/{*rest}", "origin": "o", "rewrite": {"strip_prefix": "/c"}},
            {"name": "off", "path": "/off/{*rest}", "origin": "o", "rewrite": {"strip_prefix": "/off"},
             "compress": False},
            {"name": "cached", "path": "/cached/{*rest}", "origin": "o", "rewrite": {"strip_prefix": "/cached"},
             "cache": {"ttl_s": 60}},
        ],
    }


gw = under_each_runtime(config)


def brotli_decode(data: bytes) -> bytes:
    """br decoded by a real decoder (Node's zlib), not by anything of the gateway's."""
    done = subprocess.run(
        ["node", "-e", "process.stdout.write(require('zlib').brotliDecompressSync(require('fs').readFileSync(0)))"],
        input=data, capture_output=True, timeout=30, check=True,
    )
    return done.stdout


def vary(r) -> list[str]:
    return [t.strip().lower() for t in (r.header("vary") or "").split(",") if t.strip()]


def get(gw, path, accept=None, method="GET"):
    headers = [("accept-encoding", accept)] if accept is not None else []
    return send(gw.base_url, method, path, headers)


def assert_identity(r, want: bytes):
    assert r.status == 200
    assert r.header("content-encoding") is None, r.headers
    assert r.body == want


def decoded(r) -> bytes:
    coding = r.header("content-encoding")
    if coding == "gzip":
        return gzip.decompress(r.body)
    if coding == "br":
        return brotli_decode(r.body)
    assert coding is None, coding
    return r.body


# (Accept-Encoding, the coding under workerd, under wrangler dev)
ENCODED = [
    ("gzip", "gzip", "gzip"),
    ("gzip, deflate", "gzip", "gzip"),
    ("br", "br", "br"),
    ("gzip, deflate, br, zstd", "br", "gzip"),
    ("gzip;q=1.0, br;q=0.5", "gzip", "gzip"),
    ("BR;Q=0.9 , GZIP;q=0.1", "br", "br"),
    ("*", "br", None),
]


@pytest.mark.parametrize("accept, workerd, wrangler", ENCODED)
def test_a_compressible_identity_response_arrives_encoded(gw, accept, workerd, wrangler):
    r = get(gw, "/c/text/20000", accept)
    assert r.status == 200
    coding = by_runtime(gw, workerd=workerd, wrangler=wrangler)
    assert r.header("content-encoding") == coding, r.headers
    assert decoded(r) == text_body(20000)
    if coding is not None:
        assert len(r.body) < 20000 // 4, "the text compresses well; an encoded body this size is not compressed"
    assert "accept-encoding" in vary(r)
    if r.header("content-length") is not None:
        assert int(r.header("content-length")) == len(r.body), "a length, if any, is the encoded body's"


# (path, the coding a gzip-only client gets under wrangler dev)
TYPES = [
    ("/c/text/5000?type=application/json", "gzip"),
    # A type the proxy does not re-encode: the br the gateway chose for the proxy's
    # "br, gzip" reaches a client that accepts only gzip (a wrangler dev limit).
    ("/c/text/5000?type=application/problem%2Bjson", "br"),
    ("/c/text/5000?type=image/svg%2Bxml", "gzip"),
    ("/c/text/5000?type=text/html;%20charset=utf-8", "gzip"),
    ("/c/text/5000?type=application/javascript", "gzip"),
    ("/c/text/5000?chunked=1", "gzip"),
]


@pytest.mark.parametrize("path, wrangler", TYPES)
def test_json_javascript_svg_html_and_unknown_lengths_are_compressed(gw, path, wrangler):
    r = get(gw, path, "gzip")
    assert r.header("content-encoding") == by_runtime(gw, workerd="gzip", wrangler=wrangler), (path, r.headers)
    assert decoded(r) == text_body(5000)


# (Accept-Encoding, what a client gets under wrangler dev: status, coding). Under workerd: 200,
# identity, every time.
REFUSING = [
    (None, 200, "br"),  # the proxy passes br on to a client that sent no Accept-Encoding
    ("", 200, "br"),
    ("identity", 200, None),
    ("gzip;q=0", 200, None),
    ("gzip;q=0, br;q=0", 200, None),
    ("deflate", 200, None),
    ("gzip;q=2", 200, "gzip"),  # the proxy reads a malformed q as accepting
    ("*;q=0", 415, None),  # the proxy answers 415 itself
]


@pytest.mark.parametrize("accept, wrangler_status, wrangler", REFUSING)
def test_a_client_that_does_not_accept_it_gets_identity(gw, accept, wrangler_status, wrangler):
    r = get(gw, "/c/text/20000", accept)
    if r.status != 200:
        assert r.status == by_runtime(gw, workerd=200, wrangler=wrangler_status)
        return
    assert by_runtime(gw, workerd=200, wrangler=wrangler_status) == 200
    coding = by_runtime(gw, workerd=None, wrangler=wrangler)
    assert r.header("content-encoding") == coding, r.headers
    assert decoded(r) == text_body(20000)
    if coding is None:
        # The proxy re-sends what it decoded without a length.
        assert r.header("content-length") == by_runtime(gw, workerd="20000", wrangler=None)
    assert "accept-encoding" in vary(r), "caches downstream must keep the two forms apart"


def test_an_origin_gzip_body_passes_through_with_its_own_encoding(gw):
    r = get(gw, "/c/gzip", "gzip, br")
    assert r.status == 200
    assert r.header("content-encoding") == "gzip", "never br over the origin's gzip, never twice"
    assert gzip.decompress(r.body) == GZIP_PLAIN
    assert r.body == GZIP_BYTES, "the origin's bytes, as it sent them"


@pytest.mark.parametrize("path, why", [
    ("/c/text/20000?type=image/png", "an image"),
    ("/c/text/20000?type=application/octet-stream", "binary"),
    ("/c/text/1000", "below the minimum size"),
    ("/c/text/20000?cc=no-transform", "the origin forbids transforming it"),
    ("/off/text/20000", "compress: false"),
])
def test_what_is_never_compressed(gw, path, why):
    size = 1000 if "/1000" in path else 20000
    r = get(gw, path, "gzip, br")
    # The gateway leaves each alone; wrangler dev's proxy then compresses text on its own.
    text = "type=" not in path
    coding = by_runtime(gw, workerd=None, wrangler="gzip" if text else None)
    assert r.header("content-encoding") == coding, (why, r.headers)
    assert decoded(r) == text_body(size)
    if coding is None:
        assert r.header("content-length") == str(size), why


def test_head_is_not_changed(gw):
    r = get(gw, "/c/text/20000", "gzip, br", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert r.header("content-encoding") == by_runtime(gw, workerd=None, wrangler="gzip")


def test_a_cached_entry_serves_each_client_its_own_coding(gw, origin):
    path = f"/cached/text/30000?run={gw.runtime}"
    first = get(gw, path, "gzip")
    assert first.header("x-cache-status") == "MISS"
    assert first.header("content-encoding") == "gzip"
    assert gzip.decompress(first.body) == text_body(30000)
    deadline = time.monotonic() + 5
    plain = None
    while time.monotonic() < deadline:
        plain = get(gw, path, "identity")
        if plain.header("x-cache-status") == "HIT":
            break
        time.sleep(0.1)
    assert plain.header("x-cache-status") == "HIT"
    assert_identity(plain, text_body(30000))
    br = get(gw, path, "br")
    assert br.header("x-cache-status") == "HIT"
    assert br.header("content-encoding") == "br"
    assert brotli_decode(br.body) == text_body(30000)
    gz = get(gw, path, "gzip")
    assert gz.header("x-cache-status") == "HIT"
    assert gzip.decompress(gz.body) == text_body(30000)
    served = [r for r in origin.received if r.path == "/text/30000" and r.query == f"run={gw.runtime}"]
    assert len(served) == 1, "one stored entry served every coding"
