"""End-to-end: no response header the client receives names an origin server's address.

Real origins on 127.0.0.1 answer with headers the test chooses (origin.py's `.../headers`), each
naming a configured server in one spelling; the client must see the header rewritten to the
gateway's public origin, or not at all. The gateway is on 127.0.0.1 too, on another port, so
every case also checks that the public authority is told apart from the servers by port.

Config: pool `shared` has two servers on the same host, A (base path /a-base) and B (/b-base),
`balance: first` so A answers, and a backup IPv6 server [::1] (base /v6) that nothing listens
on; pool `other` has server C. Route /hide strips its prefix; route /other does not rewrite.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from conftest import address_leaks, send, under_each_runtime
from origin import ORIGIN_ADDRESSES, Origin, free_port


@pytest.fixture(scope="module")
def servers():
    a, b, c = Origin("a").start(), Origin("b").start(), Origin("c").start()
    v6 = free_port()
    ORIGIN_ADDRESSES.add(("::1", v6))
    yield {"a": a, "b": b, "c": c, "v6": v6}
    ORIGIN_ADDRESSES.discard(("::1", v6))
    for o in (a, b, c):
        o.stop()


def config(servers) -> dict:
    a, b, c, v6 = servers["a"], servers["b"], servers["c"], servers["v6"]
    return {
        "origins": {
            "shared": {"servers": [{"url": a.url + "/a-base"}, {"url": b.url + "/b-base/"},
                                   {"url": f"http://[::1]:{v6}/v6", "backup": True}],
                       "balance": "first", "timeout_ms": 5000},
            "other": {"servers": [{"url": c.url}], "timeout_ms": 5000},
        },
        "routes": [
            {"name": "hide", "path": "/hide/{*rest}", "origin": "shared", "rewrite": {"strip_prefix": "/hide"}},
            {"name": "other", "path": "/other/{*rest}", "origin": "other"},
        ],
    }


# Every case runs under a bare `workerd serve` and under `wrangler dev` (conftest.py).
gw = under_each_runtime(config)


def answer(gw, route: str, name: str, value: str, status: int = 200):
    """The client's reply when the route's origin answers with header `name: value`."""
    query = urlencode([("status", str(status)), ("h", f"{name}:{value}")])
    return send(gw.base_url, "GET", f"/{route}/headers?{query}")


def fill(text: str, servers, gw) -> str:
    return text.format(a=servers["a"].port, b=servers["b"].port, v6=servers["v6"], g=gw.base_url,
                       gp=gw.port)


# (header, what the origin sends, what the client sees: None = not sent).
# {a}, {b}: the ports of servers A and B; {v6}: the IPv6 server's; {g}: the gateway's public
# origin (http://127.0.0.1:PORT), {gp} its port.
CASES = [
    # Absolute, network-path and backslash forms of server A; its base path removed, /hide put back.
    ("location", "http://127.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "//127.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "/\\127.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "\\\\127.0.0.1:{a}\\a-base\\x", "{g}/hide/x"),
    ("location", "\\/127.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "HTTP://127.0.0.1:{a}/a-base/x?q=1#f", "{g}/hide/x?q=1#f"),
    ("location", "https:127.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://u:p@127.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://127%2e0%2e0%2e1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://0x7f.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://2130706433:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://0177.0.0.1:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://127.0.0.1.:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://127.0.0.1:0{a}/a-base/x", "{g}/hide/x"),
    # IPv6 literals of the IPv4 server.
    ("location", "http://[::ffff:127.0.0.1]:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://[::FFFF:7F00:1]:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://[0:0:0:0:0:ffff:7f00:1]:{a}/a-base/x", "{g}/hide/x"),
    ("location", "http://[64:ff9b::7f00:1]:{a}/a-base/x", "{g}/hide/x"),
    ("content-location", "//[::ffff:7f00:1]:{a}/a-base/doc", "{g}/hide/doc"),
    # Server B shares A's host: the URL's port picks it, and B's base path is the one removed.
    ("location", "http://127.0.0.1:{b}/b-base/x", "{g}/hide/x"),
    ("location", "http://127.0.0.1:{b}/b-base", "{g}/hide"),
    ("location", "http://127.0.0.1:{b}/a-base/x", "{g}/hide/a-base/x"),
    # No port matches (80): the servers' machine all the same, the best base path taken.
    ("location", "http://127.0.0.1/b-base/x", "{g}/hide/x"),
    # The IPv6 server, expanded and compressed.
    ("location", "http://[0:0:0:0:0:0:0:1]:{v6}/v6/x", "{g}/hide/x"),
    ("content-location", "//[::1]:{v6}/v6/x", "{g}/hide/x"),
    # Refresh and Link.
    ("refresh", "0; url=//127.0.0.1:{a}/a-base/x", "0; url={g}/hide/x"),
    ("refresh", "5;URL='/\\127.0.0.1:{b}/b-base/y'", "5;URL='{g}/hide/y'"),
    ("refresh", "0, url=http://[::ffff:7f00:1]:{a}/a-base/z", "0, url={g}/hide/z"),
    ("link", "</rel>; rel=prev, <http://[::ffff:7f00:1]:{b}/b-base/n>; rel=next",
     "</rel>; rel=prev, <{g}/hide/n>; rel=next"),
    ("link", "<//127.0.0.1:{a}/a-base/p>; rel=preload, <https://cdn.example/s.css>; rel=stylesheet",
     "<{g}/hide/p>; rel=preload, <https://cdn.example/s.css>; rel=stylesheet"),
    # Not a server: left as sent (the public authority, relative, another host, another address).
    ("location", "{g}/hide/kept", "{g}/hide/kept"),
    ("location", "/relative?x=1", "/relative?x=1"),
    ("location", "https://example.org/x", "https://example.org/x"),
    ("location", "http://127.0.0.10:{a}/x", "http://127.0.0.10:{a}/x"),
    ("x-gateway", "127.0.0.1:{gp}", "127.0.0.1:{gp}"),
    # Naming a server anywhere else, or where no public equivalent exists: not sent.
    ("x-backend", "127.0.0.1:{a}", None),
    ("x-upstream", "upstream=[::ffff:7f00:1]:{b}", None),
    ("set-cookie", "s=1; Domain=127.0.0.1; Path=/", None),
    ("x-debug", "http%3A%2F%2F127.0.0.1%3A{a}%2F", None),
    ("location", "/next?to=http://127.0.0.1:{a}/", None),
    ("location", "ws://127.0.0.1:{a}/socket", None),
]


@pytest.mark.parametrize("name,sent,seen", CASES, ids=[f"{n}={v}" for n, v, _ in CASES])
def test_the_client_never_sees_a_server_address(gw, servers, name, sent, seen):
    sent, seen = fill(sent, servers, gw), seen and fill(seen, servers, gw)
    a = servers["a"]
    r = answer(gw, "hide", name, sent, status=302 if name == "location" else 200)
    assert a.answered[-1] == [(name, sent)], "the origin sent the attack header"
    assert r.status == (302 if name == "location" else 200), r.body
    assert r.header(name) == seen
    assert r.header("x-request-id")


def test_every_configured_server_is_hidden_whatever_the_route(gw, servers):
    # Server C answers for /other, naming server A of the other pool: A's base path is removed,
    # and /other has no prefix to put back.
    sent = f"http://127.0.0.1:{servers['a'].port}/a-base/x?y=1"
    r = answer(gw, "other", "location", sent, status=301)
    assert servers["c"].answered[-1] == [("location", sent)]
    assert (r.status, r.header("location")) == (301, gw.base_url + "/x?y=1")


def test_the_scan_catches_every_spelling_of_a_planted_address(servers):
    a, b = servers["a"].port, servers["b"].port
    addresses = [("127.0.0.1", a), ("127.0.0.1", b), ("::1", servers["v6"])]
    planted = [
        f"http://127.0.0.1:{a}/x", f"//127.0.0.1:{b}", f"\\\\127.0.0.1:{a}\\x", f"127.0.0.1.:{a}",
        f"[::ffff:127.0.0.1]:{a}", f"[::FFFF:7F00:1]:{a}", f"[0:0:0:0:0:ffff:7f00:1]:{b}",
        f"[::127.0.0.1]:{a}", f"[64:ff9b::7f00:1]:{a}", f"[2002:7f00:1::]:{a}", f"::ffff:127.0.0.1:{a}",
        f"0x7f.1:{a}", f"2130706433:{a}", f"0x7f000001:{a}", f"0177.0.0.1:{a}", f"127.1:0{a}",
        f"127%2e0%2e0%2e1:{a}", f"127.0.0.1%3A{a}", f"http%253A%252F%252F127.0.0.1%253A{a}",
        f"Domain=x; ip:127.0.0.1:{b}", f"[::1]:{servers['v6']}", f"[0:0::1]:{servers['v6']}",
    ]
    for value in planted:
        assert address_leaks([("x-planted", value)], addresses), value
    clean = [
        "127.0.0.1:1", f"127.0.0.1:{a}0", f"127.0.0.10:{a}", f"1127.0.0.1:{a}", f"x127.0.0.1:{a}",
        f"[::ffff:127.0.0.2]:{a}", f"[::2]:{servers['v6']}", f"10:{a}", "Mon, 01 Jan 2024 10:00:05 GMT",
    ]
    for value in clean:
        assert not address_leaks([("x-clean", value)], addresses), value


def test_send_fails_a_test_when_a_header_bypassing_the_gateway_names_an_origin(servers):
    # Asked directly (no gateway to rewrite anything), A names B: send() must fail the test.
    a, b = servers["a"], servers["b"]
    query = urlencode([("h", f"location:http://[::ffff:7f00:1]:{b.port}/b-base/x")])
    with pytest.raises(AssertionError, match="names an origin server"):
        send(a.url, "GET", f"/headers?{query}")
    # A's own address is not a leak when A is the one asked.
    query = urlencode([("h", f"location:http://127.0.0.1:{a.port}/x")])
    assert send(a.url, "GET", f"/headers?{query}").header("location") == f"http://127.0.0.1:{a.port}/x"
