"""End-to-end: `{secret.NAME}` in origin request headers (a shared secret, Cloudflare Access
service-token headers), under workerd and `wrangler dev`: the origin gets the values; the client,
the log and `explain` never do; a secret that is not set is 500 `config_invalid` naming it."""

from __future__ import annotations

import json
import time

import pytest

from conftest import send, under_each_runtime
from origin import Origin
from workerd import Workerd

ACCESS_ID = "id-0f9e8d7c.access"
ACCESS_SECRET = "s3cr3t-4b5a-6978-value-never-shown"


def config(origin_url: str) -> dict:
    return {
        "origins": {"app": {"servers": [{"url": origin_url}]}},
        "routes": [
            {"name": "locked", "path": "/locked/{*rest}", "origin": "app",
             "request_headers": {"set": {
                 "cf-access-client-id": "{secret.ACCESS_ID}",
                 "cf-access-client-secret": "{secret.ACCESS_SECRET}",
                 "x-origin-auth": "key={secret.ACCESS_SECRET};rid={request_id}"}}},
            {"name": "unset", "path": "/unset/{*rest}", "origin": "app",
             "request_headers": {"set": {"x-token": "{secret.NOT_SET_ANYWHERE}"}}},
            {"name": "open", "path": "/open/{*rest}", "origin": "app"},
        ],
    }


@pytest.fixture(scope="module")
def app():
    o = Origin("app").start()
    yield o
    o.stop()


def app_config(app):
    return config(app.url)


gw = under_each_runtime(app_config, text_bindings={"ACCESS_ID": ACCESS_ID, "ACCESS_SECRET": ACCESS_SECRET})


def leaks(text: str) -> bool:
    return ACCESS_ID in text or ACCESS_SECRET in text


def test_the_origin_gets_the_secrets_and_the_client_never_does(gw, app):
    since = len(app.received)
    reply = send(gw.base_url, "GET", "/locked/plain", [("x-client", "1")])
    assert reply.status == 200
    got = app.received[since]
    assert got.header("cf-access-client-id") == ACCESS_ID
    assert got.header("cf-access-client-secret") == ACCESS_SECRET
    rid = reply.header("x-request-id")
    assert got.header("x-origin-auth") == f"key={ACCESS_SECRET};rid={rid}"
    # (The test origin echoes what it received in its body: that is the origin's own doing.)
    assert not leaks(json.dumps(reply.headers)), "a secret reached the client's headers"
    # A client sending its own copy of the header cannot override the secret's value.
    since = len(app.received)
    reply = send(gw.base_url, "GET", "/locked/plain", [("cf-access-client-id", "forged")])
    assert reply.status == 200
    assert app.received[since].header("cf-access-client-id") == ACCESS_ID
    time.sleep(0.3)
    assert not any(leaks(line) for line in gw.log_lines()), "a secret reached the log"


def test_a_secret_that_is_not_set_is_config_invalid_and_named_in_the_log(gw, app):
    since = len(app.received)
    reply = send(gw.base_url, "GET", "/unset/x")
    assert reply.status == 500
    assert reply.json()["error"] == "config_invalid"
    assert "NOT_SET_ANYWHERE" not in reply.body.decode()
    assert len(app.received) == since, "the origin heard nothing"
    # Routes that need no secret are served as usual.
    assert send(gw.base_url, "GET", "/open/x").status == 200
    time.sleep(0.3)
    lines = [json.loads(l[l.index("{"):]) for l in gw.log_lines() if '"route":"unset"' in l]
    assert lines and "NOT_SET_ANYWHERE" in lines[-1]["detail"], lines
