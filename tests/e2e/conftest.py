"""Fixtures: real origin servers on 127.0.0.1 and the built Wasm worker under `workerd serve`."""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from origin import Origin, free_port  # noqa: E402
from workerd import Workerd  # noqa: E402


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self):
        return json.loads(self.body)


def send(base_url: str, method: str, path: str, headers: Optional[list[tuple[str, str]]] = None,
         body: Optional[bytes] = None, timeout: float = 30.0) -> Reply:
    """One request with exactly the headers given (plus Host and, with a body, Content-Length)."""
    host_port = base_url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        headers = list(headers or [])
        names = {k.lower() for k, _ in headers}
        conn.putrequest(method, path, skip_host="host" in names, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            conn.putheader("content-length", str(len(body)))
        try:
            conn.endheaders(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered before reading the whole body (413): read that answer
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.getheaders(), data)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def users():
    with Origin("users") as o:
        yield o


@pytest.fixture(scope="session")
def orders():
    with Origin("orders") as o:
        yield o


def gateway_config(users: Origin, orders: Origin) -> dict:
    """The config the end-to-end tests run: every field the gateway supports, on real origins."""
    return {
        "origins": {
            "users": {"servers": [{"url": users.url + "/internal/"}], "timeout_ms": 5000},
            "orders": {"servers": [{"url": orders.url}], "timeout_ms": 5000},
            "slow": {"servers": [{"url": orders.url}], "timeout_ms": 300},
            "dead": {"servers": [{"url": f"http://127.0.0.1:{free_port()}"}], "timeout_ms": 5000},
        },
        "routes": [
            {
                "name": "user",
                "path": "/api/users/{id}",
                "methods": ["GET", "PUT", "POST"],
                "origin": "users",
                "rewrite": {"path": "/v2/users/{id}"},
                "request_headers": {
                    "set": {"x-gateway": "portcullis", "x-user-from-path": "{param.id}", "x-route": "{route}",
                            "x-rid": "{request_id}", "x-public-host": "{host}", "x-ip": "{client_ip}"},
                    "add": {"accept": "application/x-extra"},
                    "remove": ["cookie"],
                },
                "response_headers": {"set": {"x-served-by": "{route}"}, "remove": ["x-internal-trace"]},
            },
            {"name": "orders", "path": "/api/orders/{*rest}", "origin": "orders", "rewrite": {"strip_prefix": "/api"}},
            {"name": "origin-tricks", "path": "/o/{*rest}", "origin": "orders", "rewrite": {"strip_prefix": "/o"}},
            {"name": "slow", "path": "/slow/{ms}", "origin": "slow"},
            {"name": "dead", "path": "/dead/{*rest}", "origin": "dead"},
            {"name": "host-only", "host": "api.example.test", "path": "/whoami", "origin": "users"},
            {"name": "tenants", "host": "*.tenants.test", "path": "/whoami", "origin": "orders"},
        ],
    }


@pytest.fixture(scope="session")
def gateway(users, orders):
    with Workerd(json.dumps(gateway_config(users, orders))) as wd:
        yield wd


# ------------------------------------------------------------------------------------------------
# One module's cases under each runtime: a bare `workerd serve`, and `wrangler dev`, whose proxy
# in front of the Worker consumes some request headers (Connection, Keep-Alive, TE, ...), as
# Cloudflare's edge very likely does too. A behaviour that holds under one only must not hide.

import inspect  # noqa: E402

from wrangler_dev import WranglerDev  # noqa: E402

RUNTIMES = {"workerd": Workerd, "wrangler": WranglerDev}


def under_each_runtime(make_config, **options):
    """A module-scoped fixture, parametrized over RUNTIMES, yielding the built Worker running
    `make_config(...)` under that runtime, with `.runtime` set to "workerd" or "wrangler".

    `make_config`'s parameter names are fixture names (resolved when the fixture starts);
    `options` (such as `text_bindings`) go to both runtimes' constructors. One instance per
    runtime per module: pytest runs every case under workerd, then every case under wrangler.

        def config(origin): return {"origins": ..., "routes": ...}
        gw = under_each_runtime(config, text_bindings={"JWT_SECRET": SECRET})

        def test_something(gw, origin): ...
    """
    names = list(inspect.signature(make_config).parameters)

    @pytest.fixture(scope="module", params=list(RUNTIMES))
    def fixture(request):
        config = make_config(*(request.getfixturevalue(n) for n in names))
        with RUNTIMES[request.param](json.dumps(config), **options) as running:
            running.runtime = request.param
            yield running

    return fixture


def by_runtime(gw, **expected):
    """The value of `expected` for `gw`'s runtime: `by_runtime(gw, workerd=None, wrangler="1")`.
    Both runtimes must be named, so that a difference is always stated, never implied."""
    assert set(expected) == set(RUNTIMES), f"name every runtime: {sorted(RUNTIMES)}"
    return expected[gw.runtime]
