"""End-to-end: WebSocket pass-through through the Wasm worker in workerd, with real WebSocket
origins on 127.0.0.1 (tests/e2e/ws_origin.py) and a real client (the `websockets` library)."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import log_entries, send, under_each_runtime
from origin import Origin, free_port
from test_auth import ISS, SECRET, token
from workerd import Workerd
from ws_origin import MAX_MESSAGE, WsOrigin



def ws_url(wd: Workerd, path: str) -> str:
    return wd.base_url.replace("http://", "ws://") + path


def config(servers: list[str], retry: dict | None = None, **route) -> str:
    pool = {"servers": [{"url": u} for u in servers], "timeout_ms": 2000}
    if retry is not None:
        pool["retry"] = retry
    return json.dumps({
        "origins": {"chat": pool},
        "auth": {"hmac": {"algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET", "issuers": [ISS],
                          "audiences": ["api"], "forward_claims": {"sub": "x-user-id"}}},
        "routes": [
            {"name": "live", "path": "/live/{*rest}", "origin": "chat", "websocket": True, **route},
            {"name": "plain", "path": "/plain/{*rest}", "origin": "chat"},
        ],
    })


@pytest.fixture
def origin():
    o = WsOrigin("a", subprotocols=["chat.v2"]).start()
    yield o
    o.stop()


def test_messages_both_ways_ping_close_codes_and_subprotocol(origin):
    with Workerd(config([origin.url])) as wd:
        with connect(ws_url(wd, "/live/room/1?x=1"), subprotocols=["chat.v1", "chat.v2"],
                     max_size=MAX_MESSAGE, open_timeout=10) as ws:
            assert ws.subprotocol == "chat.v2", "the origin's choice reaches the client"
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.send(b"\x00\x01\xfe\xff")
            assert ws.recv(timeout=10) == b"\x00\x01\xfe\xff"
            big = bytes(i % 251 for i in range(1024 * 1024))
            ws.send(big)
            assert ws.recv(timeout=20) == big, "a 1 MiB message both ways"
            assert ws.ping().wait(timeout=10), "ping answered with pong"
            ws.send("close 4001 see you")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "see you")
        seen = origin.handshakes[0]
        assert seen["path"] == "/live/room/1?x=1"
        assert seen["headers"]["x-forwarded-proto"] == "http"
        assert "x-request-id" in seen["headers"]
        time.sleep(0.3)
        entry = next(e for e in log_entries(wd) if e.get("route") == "live")
        assert (entry["status"], entry.get("upgrade")) == (101, "websocket")
        assert entry["attempts"][0]["status"] == 101


def test_a_route_without_websocket_refuses_the_upgrade_and_plain_requests_still_work(origin):
    plain = Origin("p").start()
    try:
        with Workerd(config([plain.url])) as wd:
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(wd, "/plain/x"), open_timeout=10)
            response = refused.value.response
            assert response.status_code == 400
            assert json.loads(response.body)["error"] == "bad_request"
            # Any letter case of the Upgrade token is the same handshake.
            reply = send(wd.base_url, "GET", "/plain/x", [("upgrade", "WebSocket"), ("connection", "Upgrade")])
            assert reply.status == 400 and reply.json()["error"] == "bad_request"
            assert not plain.received, "the origin heard nothing"
            # A plain request on the WebSocket route is forwarded as usual.
            reply = send(wd.base_url, "GET", "/live/x")
            assert reply.status == 200
            assert plain.received[-1].header("upgrade") is None
    finally:
        plain.stop()


def test_auth_is_checked_at_the_upgrade(origin):
    with Workerd(config([origin.url], auth="hmac"), text_bindings={"JWT_SECRET": SECRET}) as wd:
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(wd, "/live/x"), open_timeout=10)
        assert refused.value.response.status_code == 401
        assert not origin.handshakes, "the origin saw no handshake"
        good = token("HS256", SECRET.encode(), sub="alice", aud="api")
        with connect(ws_url(wd, "/live/x"), additional_headers={"authorization": f"Bearer {good}"},
                     open_timeout=10) as ws:
            ws.send("ping?")
            assert ws.recv(timeout=10) == "ping?"
        assert origin.handshakes[0]["headers"]["x-user-id"] == "alice"


def test_cors_checks_the_handshake_origin(origin):
    cors = {"cors": {"origins": ["https://app.example"]}}
    with Workerd(config([origin.url], **cors)) as wd:
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(wd, "/live/x"), origin="https://evil.example", open_timeout=10)
        assert refused.value.response.status_code == 403
        with connect(ws_url(wd, "/live/x"), origin="https://app.example", open_timeout=10) as ws:
            ws.send("ok")
            assert ws.recv(timeout=10) == "ok"
        assert len(origin.handshakes) == 1


def test_a_dead_first_server_is_skipped_at_connect(origin):
    dead = f"http://127.0.0.1:{free_port()}"
    with Workerd(config([dead, origin.url])) as wd:
        for _ in range(4):
            with connect(ws_url(wd, "/live/x"), open_timeout=10) as ws:
                ws.send("whoami")
                assert ws.recv(timeout=10) == "a"
        time.sleep(0.3)
        outcomes = [[a["outcome"] for a in e["attempts"]] for e in log_entries(wd) if e.get("route") == "live"]
        assert any(o == ["connect_failed", "response"] for o in outcomes), outcomes
        assert all(o[-1] == "response" for o in outcomes), outcomes


def test_a_refused_handshake_is_retried_on_the_next_server(origin):
    """A handshake answered with a status the pool retries is retried, as any GET is."""
    down = WsOrigin("down").start()
    down.refuse = 503
    try:
        with Workerd(config([down.url, origin.url], retry={"on": ["connect", 503]})) as wd:
            for _ in range(4):
                with connect(ws_url(wd, "/live/x"), open_timeout=10) as ws:
                    ws.send("whoami")
                    assert ws.recv(timeout=10) == "a"
            assert not down.handshakes
    finally:
        down.stop()


# --- the same behaviour under `wrangler dev` (its front end differs: no `Connection` header) ---

@pytest.fixture(scope="module")
def shared_origin():
    o = WsOrigin("s", subprotocols=["chat.v2"]).start()
    yield o
    o.stop()


def parity_config(shared_origin):
    return json.loads(config([shared_origin.url]))


gw = under_each_runtime(parity_config)


def test_under_each_runtime_messages_and_refusals(gw, shared_origin):
    with connect(ws_url(gw, "/live/p"), subprotocols=["chat.v2"], max_size=MAX_MESSAGE, open_timeout=20) as ws:
        assert ws.subprotocol == "chat.v2"
        ws.send("text")
        assert ws.recv(timeout=10) == "text"
        ws.send(b"\x00bin")
        assert ws.recv(timeout=10) == b"\x00bin"
        ws.send("close 4002 done")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gw, "/plain/p"), open_timeout=20)
    assert refused.value.response.status_code == 400
