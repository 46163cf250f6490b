"""End-to-end: server-sent events and other long responses stream through the Wasm worker, under
a bare `workerd serve` and under `wrangler dev`, as the origin sends them. The origin
(origin.py's /sse) sends one event, waits 1.5 s (three times the route's 500 ms `timeout_ms`),
sends a second and ends: the client reads the first event while the origin is still sending, and
the timeout does not cut the stream once its headers came. A cached route never stores an event
stream, and compression never touches one."""

from __future__ import annotations

import http.client
import time

import pytest

from conftest import under_each_runtime
from origin import Origin

GAP_MS = 1500
TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def origin():
    with Origin("sse-origin") as o:
        yield o


def config(origin):
    return {
        "origins": {"o": {"servers": [{"url": origin.url}], "timeout_ms": TIMEOUT_MS}},
        "routes": [
            {"name": "events", "path": "/events", "origin": "o", "rewrite": {"path": "/sse"}},
            {"name": "cached-events", "path": "/cached-events", "origin": "o", "rewrite": {"path": "/sse"},
             "cache": {"ttl_s": 60}},
        ],
    }


gw = under_each_runtime(config)


def read_event(resp: http.client.HTTPResponse, buffer: bytearray, deadline: float) -> bytes:
    """The next event (up to its blank line) from a streaming response, before `deadline`."""
    while b"\n\n" not in buffer:
        assert time.monotonic() < deadline, f"no whole event in time; got {bytes(buffer)!r}"
        chunk = resp.read1(4096)
        assert chunk, f"the stream ended before a whole event; got {bytes(buffer)!r}"
        buffer += chunk
    end = buffer.index(b"\n\n") + 2
    event = bytes(buffer[:end])
    del buffer[:end]
    return event


def stream(gw, origin, path: str):
    """Reads `path` event by event; returns (response, the two events, when each arrived, what the
    origin had sent when the first arrived)."""
    sent_before = len(origin.sse_sent)
    conn = http.client.HTTPConnection(gw.base_url.split("://", 1)[1], timeout=10)
    try:
        conn.putrequest("GET", f"{path}?gap_ms={GAP_MS}", skip_accept_encoding=True)
        conn.putheader("accept", "text/event-stream")
        conn.putheader("accept-encoding", "gzip, br")
        conn.endheaders()
        started = time.monotonic()
        resp = conn.getresponse()
        buffer = bytearray()
        first = read_event(resp, buffer, started + GAP_MS / 1000 * 0.8)
        first_at = time.monotonic()
        sent_at_first = [name for name, _ in origin.sse_sent[sent_before:]]
        second = read_event(resp, buffer, started + 10)
        second_at = time.monotonic()
        rest = resp.read()
        assert buffer + rest == b"", "nothing after the two events"
        return resp, (first, second), (first_at - started, second_at - started), sent_at_first
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/events", "/cached-events"])
def test_the_first_event_arrives_while_the_origin_is_still_sending(gw, origin, path):
    resp, (first, second), (first_s, second_s), sent_at_first = stream(gw, origin, path)
    assert resp.status == 200
    assert resp.getheader("content-type") == "text/event-stream"
    assert first == b"id: 1\ndata: first\n\n"
    assert sent_at_first == ["first"], "the origin had not sent the second event yet"
    assert first_s < GAP_MS / 1000 * 0.8
    # The stream outlived the route's timeout_ms: the timeout covers the response headers only.
    assert second == b"id: 2\ndata: second\n\n"
    assert second_s >= GAP_MS / 1000 > TIMEOUT_MS / 1000
    assert resp.getheader("content-encoding") is None, "an event stream is never compressed"


def test_a_cached_route_never_stores_an_event_stream(gw, origin):
    for _ in range(2):
        resp, events, _, _ = stream(gw, origin, "/cached-events")
        assert resp.getheader("x-cache-status") == "BYPASS"
        assert events[1] == b"id: 2\ndata: second\n\n"
        time.sleep(0.2)
    line = gw.wait_for_log('"cache_reason":"text/event-stream"')
    assert '"route":"cached-events"' in line
