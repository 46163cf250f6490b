"""Fixtures: real origin servers on 127.0.0.1 and the built Wasm worker under `workerd serve`."""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import unquote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from origin import ORIGIN_ADDRESSES, Origin, free_port  # noqa: E402
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


# ------------------------------------------------------------------------------ address scan
#
# The gateway's invariant: no response header a client receives names an origin server's
# address. Every `send()` checks it against every Origin started in this run (origin.py's
# ORIGIN_ADDRESSES; the test IdP is not an origin server in any config: its address is one the
# client must be sent to). This reading is written apart from the gateway's own (src/headers/)
# so that one does not vouch for the other.

def whatwg_ipv4(text: str) -> Optional[ipaddress.IPv4Address]:
    """An IPv4 host as a browser's URL parser reads it: 1 to 4 parts, each decimal, octal
    (leading 0) or hexadecimal (0x), the last filling the remaining bytes; a trailing dot ignored."""
    parts = text.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            digits, base, allowed = part[2:], 16, "0123456789abcdefABCDEF"
        elif len(part) > 1 and part[0] == "0":
            digits, base, allowed = part[1:], 8, "01234567"
        else:
            digits, base, allowed = part, 10, "0123456789"
        if digits == "" and base != 16 or any(c not in allowed for c in digits):
            return None
        numbers.append(int(digits, base) if digits else 0)
    *init, last = numbers
    if any(n > 255 for n in init) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(init))
    return ipaddress.IPv4Address(value)


def _as_ipv4(ip) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an address is or carries (mapped, compatible, 6to4, NAT64 64:ff9b::/96)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    packed = ip.packed
    if packed[:12] == bytes(12) and int(ip) > 1:
        return ipaddress.IPv4Address(packed[12:])
    if packed[:12] == bytes.fromhex("0064ff9b0000000000000000"):
        return ipaddress.IPv4Address(packed[12:])
    return None


def host_names(text: str, host: str) -> bool:
    """Whether host text as a header may spell it (percent-encoded, any case, trailing dot,
    brackets, any IPv6 or IPv4 spelling) names `host` (an IP address or a name)."""
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    text = text.lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        target = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return text == host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = whatwg_ipv4(text)
    if ip is None:
        return False
    return ip == target or (_as_ipv4(ip) is not None and _as_ipv4(ip) == _as_ipv4(target))


_HOST_BEFORE = re.compile(r"[0-9A-Za-z.\-_%:]*$")


def address_leaks(headers: Iterable[tuple[str, str]], addresses: Iterable[tuple[str, int]]) -> list[str]:
    """Every header of `headers` that names one of `addresses` as host:port (the port with
    leading zeros or not; the host in any spelling `host_names` reads, also percent-encoded in
    full, e.g. `127.0.0.1%3A8000`), as "name: value (names host:port)"."""
    addresses = list(addresses)
    leaks = []
    for name, value in headers:
        variants = [value]
        for _ in range(3):
            decoded = unquote(variants[-1])
            if decoded == variants[-1]:
                break
            variants.append(decoded)
        found = None
        for text in variants:
            for host, port in addresses:
                for m in re.finditer(rf":0*{port}(?![0-9])", text):
                    before = text[:m.start()]
                    if before.endswith("]") and "[" in before:
                        candidates = [before[before.rindex("["):]]
                    else:
                        run = _HOST_BEFORE.search(before).group()
                        candidates = [run, run.rsplit(":", 1)[-1]]
                    if any(c and host_names(c, host) for c in candidates):
                        found = f"{host}:{port}"
                        break
                if found:
                    break
            if found:
                break
        if found:
            leaks.append(f"{name}: {value!r} (names {found})")
    return leaks


def send(base_url: str, method: str, path: str, headers: Optional[list[tuple[str, str]]] = None,
         body: Optional[bytes] = None, timeout: float = 30.0) -> Reply:
    """One request with exactly the headers given (plus Host and, with a body, Content-Length).
    Fails the test if a response header names an origin server's address (see the address scan
    above; the address the request went to is not an origin's)."""
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
        reply = Reply(resp.status, resp.getheaders(), data)
    finally:
        conn.close()
    own_port = int(host_port.rsplit(":", 1)[1]) if ":" in host_port else 80
    leaks = address_leaks(reply.headers, {a for a in ORIGIN_ADDRESSES if a[1] != own_port})
    assert not leaks, f"{method} {path}: a response header names an origin server: {leaks}"
    return reply


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


def log_entries(runtime) -> list[dict]:
    """The gateway's log lines so far (one JSON object per request, with `request_id`), parsed."""
    out = []
    for line in runtime.log_lines():
        if "{" in line:
            try:
                entry = json.loads(line[line.index("{"):])
            except ValueError:
                continue
            if isinstance(entry, dict) and "request_id" in entry:
                out.append(entry)
    return out
