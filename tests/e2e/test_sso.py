"""End-to-end single sign-on (README.md, "Single sign-on"): the built Wasm worker in workerd signs users in
against a real OpenID provider on 127.0.0.1 (idp.py), keeps them in an encrypted session cookie,
and hands the origin their identity as headers and as a JWT it signs itself (ES256, verified
here against the gateway's own /.well-known/jwks.json).

The "browser" here is a small client with its own cookie jar (Python's http.cookiejar will not
send `Secure` cookies over http): it honours Domain, Path, Max-Age and Expires, and maps virtual
host names (a.apps.test) to the gateway's port, so that nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import time
from email.utils import parsedate_to_datetime
from typing import Optional
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Reply
from idp import DEFAULT_USER, JSON_NULL, IdP, b64, b64decode, pkce_challenge
from origin import Origin
from workerd import Workerd

CLIENT_ID = "portcullis"
CLIENT_SECRET = "sso-client-secret-for-tests-0123456789"
SESSION_KEY = "a-session-key-for-the-sso-tests-that-is-long-enough-0123456789"
SSO = "corp"
SESSION_COOKIE = "portcullis_session"
LOGIN_COOKIE = SESSION_COOKIE + "_login"
ID_HEADER = "x-portcullis-identity"
GW_ISS = "https://gateway.test"
GW_KID = "gw-test-1"
API_ISS = "https://issuer.test/"
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
LOCAL = "127.0.0.1"  # the host the gateway is reached on, and the one its sso routes name
TIMEOUT = 10.0


# ------------------------------------------------------------------------------------ crypto


def ec_private_jwk(key) -> dict:
    n = key.private_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(n.public_numbers.x.to_bytes(32, "big")),
            "y": b64(n.public_numbers.y.to_bytes(32, "big")), "d": b64(n.private_value.to_bytes(32, "big"))}


def ec_public_key(jwk: dict):
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256", jwk
    return ec.EllipticCurvePublicNumbers(int.from_bytes(b64decode(jwk["x"]), "big"),
                                         int.from_bytes(b64decode(jwk["y"]), "big"), ec.SECP256R1()).public_key()


def es256_sign(key, claims: dict, kid: str) -> str:
    signing_input = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": kid}).encode()) + "." + b64(
        json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def es256_verify(token: str, jwks: dict) -> tuple[dict, dict]:
    """(header, claims) of an ES256 JWT whose signature verifies with the JWKS key of its kid."""
    h64, c64, s64 = token.split(".")
    header = json.loads(b64decode(h64))
    assert header["alg"] == "ES256" and header["typ"] == "JWT", header
    jwk = next((k for k in jwks["keys"] if k.get("kid") == header.get("kid")), None)
    assert jwk is not None, f"no key {header.get('kid')!r} in {jwks}"
    sig = b64decode(s64)
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    ec_public_key(jwk).verify(der, (h64 + "." + c64).encode(), ec.ECDSA(hashes.SHA256()))
    return header, json.loads(b64decode(c64))


def session_enc_key(secret: str) -> bytes:
    return hashlib.sha256(b"portcullis-session-v1:" + secret.encode()).digest()


def login_mac_key(secret: str) -> bytes:
    return hashlib.sha256(b"portcullis-login-v1:" + secret.encode()).digest()


def craft_session(claims: dict, exp: int, secret: str = SESSION_KEY, sso: str = SSO, iat: Optional[int] = None) -> str:
    """A session cookie value in the documented format."""
    plain = json.dumps({"exp": exp, "iat": iat if iat is not None else int(time.time()) - 10, "claims": claims}).encode()
    iv = os.urandom(12)
    return b64(iv + AESGCM(session_enc_key(secret)).encrypt(iv, plain, sso.encode()))


def open_session(value: str, secret: str = SESSION_KEY, sso: str = SSO) -> dict:
    raw = b64decode(value)
    return json.loads(AESGCM(session_enc_key(secret)).decrypt(raw[:12], raw[12:], sso.encode()))


def open_login(value: str, secret: str = SESSION_KEY) -> dict:
    payload64, mac64 = value.split(".")
    want = hmac.new(login_mac_key(secret), payload64.encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(b64decode(mac64), want), "the login cookie's MAC is not the documented one"
    return json.loads(b64decode(payload64))


# ------------------------------------------------------------------------------------ browser


def parse_set_cookie(line: str) -> tuple[str, str, dict]:
    """(name, value, attributes with lower-case names; flags map to True)."""
    parts = [p.strip() for p in line.split(";")]
    name, _, value = parts[0].partition("=")
    attrs: dict = {}
    for p in parts[1:]:
        if not p:
            continue
        k, eq, v = p.partition("=")
        attrs[k.strip().lower()] = v.strip() if eq else True
    return name.strip(), value.strip(), attrs


def set_cookies(reply: Reply) -> dict[str, tuple[str, dict]]:
    """The response's Set-Cookie headers by cookie name."""
    out = {}
    for k, v in reply.headers:
        if k.lower() == "set-cookie":
            name, value, attrs = parse_set_cookie(v)
            out[name] = (value, attrs)
    return out


class Browser:
    """A cookie-keeping HTTP client that only ever connects to 127.0.0.1.

    `hosts` maps virtual host names to local ports (a.apps.test -> the gateway); URLs on
    127.0.0.1:PORT or localhost:PORT go there directly. Secure is ignored (everything is http
    here); Domain, host-only, Path, Max-Age and Expires are honoured."""

    def __init__(self, hosts: Optional[dict[str, int]] = None, accept: str = HTML):
        self.hosts = dict(hosts or {})
        self.accept = accept
        self.cookies: list[dict] = []
        self.history: list[Reply] = []

    # cookies

    def _store(self, host: str, request_path: str, line: str) -> None:
        name, value, attrs = parse_set_cookie(line)
        domain = attrs.get("domain")
        if isinstance(domain, str) and domain:
            domain = domain.lstrip(".").lower()
            if not (host == domain or host.endswith("." + domain)):
                return  # a browser refuses a cookie for a domain the host is not in
            host_only = False
        else:
            domain, host_only = host, True
        path = attrs.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            path = request_path.rsplit("/", 1)[0] or "/"
        expires = None
        if "max-age" in attrs:
            expires = time.time() + int(attrs["max-age"])
        elif isinstance(attrs.get("expires"), str):
            expires = parsedate_to_datetime(attrs["expires"]).timestamp()
        self.cookies = [c for c in self.cookies if (c["name"], c["domain"], c["path"]) != (name, domain, path)]
        if expires is None or expires > time.time():
            self.cookies.append({"name": name, "value": value, "domain": domain, "host_only": host_only,
                                 "path": path, "expires": expires, "attrs": attrs})

    def cookie_header(self, host: str, path: str) -> Optional[str]:
        now = time.time()
        self.cookies = [c for c in self.cookies if c["expires"] is None or c["expires"] > now]
        out = []
        for c in self.cookies:
            dom_ok = host == c["domain"] if c["host_only"] else (host == c["domain"] or host.endswith("." + c["domain"]))
            p = c["path"]
            path_ok = path == p or path.startswith(p if p.endswith("/") else p + "/")
            if dom_ok and path_ok:
                out.append(f"{c['name']}={c['value']}")
        return "; ".join(out) or None

    def get_cookie(self, name: str) -> Optional[str]:
        values = [c["value"] for c in self.cookies if c["name"] == name and (c["expires"] is None or c["expires"] > time.time())]
        return values[0] if values else None

    def set_cookie(self, name: str, value: str, host: str = "127.0.0.1", domain: Optional[str] = None) -> None:
        self._store(host, "/", f"{name}={value}; Path=/" + (f"; Domain={domain}" if domain else ""))

    def drop_cookie(self, name: str) -> None:
        self.cookies = [c for c in self.cookies if c["name"] != name]

    # requests

    def request(self, method: str, url: str, headers: Optional[list[tuple[str, str]]] = None,
                body: Optional[bytes] = None) -> Reply:
        parts = urlsplit(url)
        assert parts.scheme == "http", url
        host = (parts.hostname or "").lower()
        if host in ("127.0.0.1", "localhost"):
            port = parts.port or 80
        elif host in self.hosts:
            port = self.hosts[host]
        else:
            raise AssertionError(f"the test would leave 127.0.0.1 for {url}")
        path = parts.path or "/"
        target = path + ("?" + parts.query if parts.query else "")
        hdrs = [("host", parts.netloc), ("accept", self.accept)]
        given = {k.lower() for k, _ in (headers or [])}
        hdrs = [(k, v) for k, v in hdrs if k not in given] + list(headers or [])
        if "cookie" not in given:
            cookie = self.cookie_header(host, path)
            if cookie:
                hdrs.append(("cookie", cookie))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in hdrs:
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            reply = Reply(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
        reply.url = url  # type: ignore[attr-defined]
        for k, v in reply.headers:
            if k.lower() == "set-cookie":
                self._store(host, path, v)
        self.history.append(reply)
        return reply

    def follow(self, url: str, max_hops: int = 8, headers: Optional[list[tuple[str, str]]] = None,
               stop: Optional[callable] = None) -> Reply:
        """GET url and follow redirects (on known hosts only) until a non-redirect, or until
        stop(next_url) says so (the redirect is then returned)."""
        for _ in range(max_hops):
            reply = self.request("GET", url, headers)
            if reply.status not in (301, 302, 303, 307, 308):
                return reply
            nxt = urljoin(url, reply.header("location"))
            if stop is not None and stop(nxt):
                return reply
            url = nxt
        raise AssertionError(f"more than {max_hops} redirects, last {url}")


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def idp():
    with IdP({CLIENT_ID: CLIENT_SECRET, "another-client": "another-secret"}) as p:
        yield p


@pytest.fixture(scope="module")
def app():
    with Origin("app") as o:
        yield o


@pytest.fixture(scope="module")
def sticky():
    servers = [Origin(f"sticky-{i}").start() for i in range(3)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def identity_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def api_key():
    return ec.generate_private_key(ec.SECP256R1())


def sso_entry(idp: IdP, **over) -> dict:
    entry = {
        "issuer": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret_env": "SSO_CLIENT_SECRET",
        "session_key_env": "SSO_SESSION_KEY",
        "keep_claims": ["sub", "email", "name", "groups"],
        "forward_claims": {"sub": "x-user-id", "email": "x-user-email"},
        "require": {"groups": ["staff"]},
    }
    entry.update(over)
    return entry


def identity_section() -> dict:
    return {"header": ID_HEADER, "alg": "ES256", "private_key_env": "IDENTITY_SIGNING_KEY", "issuer": GW_ISS,
            "kid": GW_KID, "ttl_s": 60, "claims": ["email", "name", "groups"]}


def secrets_for(identity_key) -> dict:
    return {"SSO_CLIENT_SECRET": CLIENT_SECRET, "SSO_SESSION_KEY": SESSION_KEY,
            "IDENTITY_SIGNING_KEY": json.dumps(ec_private_jwk(identity_key))}


@pytest.fixture(scope="module")
def gw(idp, app, sticky, identity_key, api_key):
    api_jwk = {**{k: v for k, v in ec_private_jwk(api_key).items() if k != "d"}, "kid": "api-1"}
    cfg = {
        "sso": {SSO: sso_entry(idp)},  # discovery: no endpoints given
        "identity": identity_section(),
        "auth": {"api": {"algorithms": ["ES256"], "jwks": {"keys": [api_jwk]}, "issuers": [API_ISS],
                         "audiences": ["api"], "forward_claims": {"sub": "x-user-id"}}},
        "origins": {
            "app": {"servers": [{"url": app.url}], "timeout_ms": 5000},
            "sticky": {"servers": [{"url": s.url} for s in sticky], "balance": "hash", "hash_on": "claim:sub",
                       "timeout_ms": 5000},
        },
        # The entry has no redirect_uri: it is built from the request, on the host its routes
        # name (127.0.0.1, the gateway's address here) only. "loose" has no host: a login
        # from it on another host is refused.
        "routes": [
            {"name": "page", "host": LOCAL, "path": "/app/{*rest}", "origin": "app",
             "auth": {"use": SSO, "login": True},
             "request_headers": {"set": {"x-hello": "hello {claim.email}"}}},
            {"name": "api", "host": LOCAL, "path": "/api/{*rest}", "origin": "app", "auth": SSO},
            {"name": "maybe", "host": LOCAL, "path": "/maybe/{*rest}", "origin": "app",
             "auth": {"use": SSO, "optional": True}},
            {"name": "bearer", "path": "/bearer/{*rest}", "origin": "app", "auth": "api"},
            {"name": "public", "path": "/public/{*rest}", "origin": "app"},
            {"name": "cached", "host": LOCAL, "path": "/cacheable/{*rest}", "origin": "app",
             "auth": {"use": SSO, "login": True},
             "request_headers": {"set": {"x-user": "{claim.sub}"}},
             "cache": {"ttl_s": 60, "key": {"claims": ["sub"]}}},
            {"name": "sticky", "host": LOCAL, "path": "/sticky/{*rest}", "origin": "sticky", "auth": SSO},
            {"name": "loose", "path": "/loose/{*rest}", "origin": "app", "auth": {"use": SSO, "login": True}},
        ],
    }
    with Workerd(json.dumps(cfg), text_bindings=secrets_for(identity_key)) as wd:
        yield wd


@pytest.fixture(autouse=True)
def fresh_idp(request):
    """Every test starts with the default user and no one-shot knob left over."""
    if "idp" in request.fixturenames:
        p = request.getfixturevalue("idp")
        p.user = dict(DEFAULT_USER)
        p.next_id_token_claims = {}
        p.next_id_token_key = None
        p.deny_next = False
    yield


# ------------------------------------------------------------------------------------ steps


def start_login(browser: Browser, url: str) -> tuple[Reply, dict]:
    """The protected page's answer (302 to the provider) and the authorize URL's query."""
    r = browser.request("GET", url)
    assert r.status == 302, (r.status, r.body[:300])
    return r, query_of(r.header("location"))


def at_provider(browser: Browser, authorize_url: str) -> str:
    """Go to the provider (which approves at once); the callback URL it sends the browser to."""
    r = browser.request("GET", authorize_url)
    assert r.status == 302, (r.status, r.body[:300])
    return urljoin(authorize_url, r.header("location"))


def login(browser: Browser, gw: Workerd, path: str = "/app/home", base: Optional[str] = None) -> Reply:
    """A whole login from a protected page; returns the page's final answer."""
    base = base or gw.base_url
    r, _ = start_login(browser, base + path)
    callback = at_provider(browser, urljoin(base, r.header("location")))
    back = browser.request("GET", callback)
    assert back.status == 302, (back.status, back.body[:500])
    assert browser.get_cookie(SESSION_COOKIE), back.headers
    return browser.follow(urljoin(callback, back.header("location")))


def gateway_jwks(gw: Workerd) -> dict:
    r = Browser(accept="application/json").request("GET", gw.base_url + "/.well-known/jwks.json")
    assert r.status == 200, r.body
    return r.json()


def origin_saw(app: Origin, name: str) -> Optional[str]:
    return app.last().header(name)


def no_session_set(reply: Reply) -> bool:
    sc = set_cookies(reply)
    return SESSION_COOKIE not in sc or sc[SESSION_COOKIE][0] == "" or sc[SESSION_COOKIE][1].get("max-age") == "0"


# ------------------------------------------------------------------------------------ the login


def test_a_page_redirects_to_the_provider_and_the_user_comes_back_signed_in(gw, idp, app, identity_key):
    b = Browser()
    page = gw.base_url + "/app/reports/q3?year=2026&view=full"
    before = app.count()

    # 1. the protected page: 302 to the provider, with a login cookie
    r = b.request("GET", page)
    assert r.status == 302, r.body
    assert r.header("cache-control") == "no-store"
    location = r.header("location")
    assert location.startswith(idp.issuer + "/authorize?"), location
    q = query_of(location)
    assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == gw.base_url + "/_sso/callback"
    assert q["scope"].split(" ") == ["openid", "email", "profile"]
    assert q["code_challenge_method"] == "S256"
    for name in ("state", "nonce", "code_challenge"):
        assert len(b64decode(q[name])) >= 32 and "=" not in q[name], (name, q[name])
    assert q["state"] != q["nonce"]
    cookies = set_cookies(r)
    assert LOGIN_COOKIE in cookies, r.headers
    value, attrs = cookies[LOGIN_COOKIE]
    assert attrs.get("httponly") is True and attrs.get("secure") is True
    assert str(attrs.get("samesite")).lower() == "lax" and attrs.get("path") == "/"
    assert attrs.get("max-age") == "600" and "domain" not in attrs
    # the documented login-cookie format: signed, and it holds what the redirect carries
    login_state = open_login(value)
    assert login_state["sso"] == SSO and login_state["state"] == q["state"] and login_state["nonce"] == q["nonce"]
    assert pkce_challenge(login_state["verifier"]) == q["code_challenge"]
    assert login_state["next"] == "/app/reports/q3?year=2026&view=full"
    assert 500 <= login_state["exp"] - time.time() <= 700
    assert app.count() == before

    # 2. the provider approves and sends the browser back with a code
    callback = at_provider(b, location)
    assert callback.startswith(gw.base_url + "/_sso/callback?")
    calls = idp.token_calls

    # 3. the callback: session cookie, login cookie cleared, 302 to the page first asked for
    r = b.request("GET", callback)
    assert r.status == 302, r.body
    assert r.header("cache-control") == "no-store"
    assert urljoin(callback, r.header("location")) == page
    assert idp.token_calls == calls + 1 and idp.token_auth_seen[-1] == "client_secret_basic"
    cookies = set_cookies(r)
    session, attrs = cookies[SESSION_COOKIE]
    assert attrs.get("httponly") is True and attrs.get("secure") is True
    assert str(attrs.get("samesite")).lower() == "lax" and attrs.get("path") == "/"
    assert LOGIN_COOKIE in cookies and cookies[LOGIN_COOKIE][1].get("max-age") == "0"
    assert b.get_cookie(LOGIN_COOKIE) is None

    # the session cookie is encrypted: no claim in it, even base64-decoded
    assert "alice" not in session and "user-alice" not in session
    assert b"alice" not in b64decode(session) and b"Alice" not in b64decode(session)
    plain = open_session(session)  # ...and it is the documented format
    assert plain["claims"]["sub"] == "user-alice" and plain["claims"]["email"] == "alice@example.test"
    assert 28000 <= plain["exp"] - time.time() <= 28900

    # 4. the page, served by the origin with the identity
    before = app.count()
    r = b.request("GET", page)
    assert r.status == 200, r.body
    assert app.count() == before + 1
    seen = app.last()
    assert seen.path == "/app/reports/q3" and seen.query == "year=2026&view=full"
    assert seen.header("x-user-id") == "user-alice"
    assert seen.header("x-user-email") == "alice@example.test"
    assert seen.header("x-hello") == "hello alice@example.test"
    token = seen.header(ID_HEADER)
    assert token and token.count(".") == 2

    jwks_reply = Browser(accept="application/json").request("GET", gw.base_url + "/.well-known/jwks.json")
    assert jwks_reply.status == 200
    assert jwks_reply.header("cache-control") == "public, max-age=300"
    jwks = jwks_reply.json()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert key["kid"] == GW_KID and key["alg"] == "ES256" and key["use"] == "sig" and "d" not in key
    pub = identity_key.public_key().public_numbers()
    assert ec_public_key(key).public_numbers() == pub
    header, claims = es256_verify(token, jwks)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": GW_KID}
    now = time.time()
    assert claims["iss"] == GW_ISS and claims["aud"] == "app" and claims["sub"] == "user-alice"
    assert claims["exp"] > now and claims["exp"] - claims["iat"] == 60 and abs(claims["iat"] - now) < 30
    assert claims["email"] == "alice@example.test" and claims["name"] == "Alice Example"
    assert claims["groups"] == ["staff"]
    # a token signed by another key does not verify: the check above is real
    other = ec.generate_private_key(ec.SECP256R1())
    forged = es256_sign(other, claims, GW_KID)
    with pytest.raises(InvalidSignature):
        es256_verify(forged, jwks)

    # the log: the redirect, the sign-in and the session, and no code, token or secret in it
    code = query_of(callback)["code"]
    gw.wait_for_log('"signed_in"')
    lines = [json.loads(x) for x in gw.log_lines() if x.startswith("{")]
    outcomes = [(x.get("route"), (x.get("auth") or {}).get("outcome"), (x.get("auth") or {}).get("reason")) for x in lines]
    assert ("page", "login", "no_session") in outcomes and ("sso", "signed_in", None) in outcomes
    assert ("page", "session", None) in outcomes
    text = "\n".join(gw.log_lines() + gw.stderr_lines())
    for secret in (code, session, value, token, CLIENT_SECRET, SESSION_KEY, q["state"], login_state["verifier"]):
        assert secret not in text


def test_the_minted_token_is_reused_and_client_copies_never_reach_the_origin(gw, app):
    b = Browser()
    login(b, gw, "/app/one")
    first = app.last().header(ID_HEADER)
    b.request("GET", gw.base_url + "/app/two", [(ID_HEADER, "forged.by.client")])
    seen = app.last()
    assert seen.path == "/app/two"
    assert seen.header(ID_HEADER) == first  # same value: reused, and the client's copy gone
    assert [v for k, v in seen.headers if k == ID_HEADER] == [first]
    # an API call on the same session (the same pool) gets it too
    r = b.request("GET", gw.base_url + "/api/data", [("accept", "application/json")])
    assert r.status == 200 and app.last().header(ID_HEADER) == first

    # a public route: the client's copy is removed, nothing minted
    r = Browser().request("GET", gw.base_url + "/public/x", [(ID_HEADER, "forged.by.client"),
                                                            ("x-user-id", "admin")])
    assert r.status == 200
    assert app.last().path == "/public/x"
    assert app.last().header(ID_HEADER) is None and app.last().header("x-user-id") is None
    # an optional route without a session: anonymous, no identity
    r = Browser().request("GET", gw.base_url + "/maybe/x", [(ID_HEADER, "forged.by.client")])
    assert r.status == 200 and app.last().header(ID_HEADER) is None
    # ...and with one: the identity
    r = b.request("GET", gw.base_url + "/maybe/x")
    assert r.status == 200 and app.last().header("x-user-id") == "user-alice"
    assert app.last().header(ID_HEADER) == first


def test_a_bearer_token_route_also_gets_a_minted_identity(gw, app, api_key):
    now = int(time.time())
    tok = es256_sign(api_key, {"iss": API_ISS, "aud": "api", "sub": "svc-robot", "email": "robot@example.test",
                               "iat": now - 5, "exp": now + 300}, "api-1")
    r = Browser(accept="application/json").request("GET", gw.base_url + "/bearer/x",
                                                   [("authorization", "Bearer " + tok), (ID_HEADER, "forged")])
    assert r.status == 200, r.body
    seen = app.last()
    assert seen.header("x-user-id") == "svc-robot"
    _, claims = es256_verify(seen.header(ID_HEADER), gateway_jwks(gw))
    assert claims["sub"] == "svc-robot" and claims["aud"] == "app" and claims["iss"] == GW_ISS
    assert claims["email"] == "robot@example.test" and "name" not in claims and "groups" not in claims
    # no token: 401, origin not reached
    before = app.count()
    r = Browser(accept="application/json").request("GET", gw.base_url + "/bearer/x")
    assert r.status == 401 and app.count() == before


def test_an_eddsa_identity_key_signs_tokens_that_verify_against_the_published_ed25519_key(app, api_key):
    key = ed25519.Ed25519PrivateKey.generate()
    d = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(x), "d": b64(d)}
    api_jwk = {**{k: v for k, v in ec_private_jwk(api_key).items() if k != "d"}, "kid": "api-1"}
    cfg = {
        "identity": {"header": ID_HEADER, "alg": "EdDSA", "private_key_env": "IDENTITY_SIGNING_KEY",
                     "issuer": GW_ISS, "ttl_s": 30, "claims": ["email"]},
        "auth": {"api": {"algorithms": ["ES256"], "jwks": {"keys": [api_jwk]}, "issuers": [API_ISS],
                         "audiences": ["api"]}},
        "origins": {"ed-pool": {"servers": [{"url": app.url}], "timeout_ms": 5000}},
        "routes": [{"name": "bearer", "path": "/bearer/{*rest}", "origin": "ed-pool", "auth": "api"}],
    }
    now = int(time.time())
    tok = es256_sign(api_key, {"iss": API_ISS, "aud": "api", "sub": "svc-ed", "email": "ed@example.test",
                               "iat": now - 5, "exp": now + 300}, "api-1")
    with Workerd(json.dumps(cfg), text_bindings={"IDENTITY_SIGNING_KEY": json.dumps(jwk)}) as wd:
        r = Browser(accept="application/json").request("GET", wd.base_url + "/bearer/ed",
                                                       [("authorization", "Bearer " + tok)])
        assert r.status == 200, r.body
        jwks = gateway_jwks(wd)
    published = jwks["keys"][0]
    assert published["kty"] == "OKP" and published["crv"] == "Ed25519" and published["alg"] == "EdDSA"
    assert "d" not in published and published["x"] == jwk["x"]
    minted = app.last().header(ID_HEADER)
    h64, c64, s64 = minted.split(".")
    header, claims = json.loads(b64decode(h64)), json.loads(b64decode(c64))
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": published["kid"]}
    public = ed25519.Ed25519PublicKey.from_public_bytes(b64decode(published["x"]))
    public.verify(b64decode(s64), (h64 + "." + c64).encode())  # raises InvalidSignature if not
    with pytest.raises(InvalidSignature):
        ed25519.Ed25519PrivateKey.generate().public_key().verify(b64decode(s64), (h64 + "." + c64).encode())
    assert claims["sub"] == "svc-ed" and claims["aud"] == "ed-pool" and claims["email"] == "ed@example.test"
    assert claims["exp"] - claims["iat"] == 30


# ------------------------------------------------------------------------------------ refusals


def test_a_state_mismatch_is_400_and_the_origin_is_never_hit(gw, idp, app):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/state")
    callback = at_provider(b, r.header("location"))
    cq = query_of(callback)
    bad = gw.base_url + "/_sso/callback?" + urlencode({"code": cq["code"], "state": b64(os.urandom(32))})
    before_app, before_token = app.count(), idp.token_calls
    r = b.request("GET", bad, [("accept", "application/json")])
    assert r.status == 400, r.body
    assert r.json()["error"] == "login_failed" and r.json()["request_id"] == r.header("x-request-id")
    assert cq["code"] not in r.body.decode()
    assert no_session_set(r) and b.get_cookie(SESSION_COOKIE) is None
    assert idp.token_calls == before_token  # the code was never even exchanged
    assert app.count() == before_app
    gw.wait_for_log("state_mismatch")
    # the page is still closed
    assert b.request("GET", gw.base_url + "/app/state").status == 302


def test_a_failed_callback_is_an_html_page_for_a_browser(gw):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/html")
    callback = at_provider(b, r.header("location"))
    code = query_of(callback)["code"]
    r = b.request("GET", gw.base_url + "/_sso/callback?" + urlencode({"code": code, "state": "not-the-state"}))
    assert r.status == 400
    assert r.header("content-type") == "text/html; charset=utf-8"
    text = r.body.decode()
    assert "<html" in text.lower() and r.header("x-request-id") in text
    assert code not in text and SESSION_KEY not in text and CLIENT_SECRET not in text


def test_a_callback_without_the_login_cookie_is_400(gw, idp):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/nocookie")
    callback = at_provider(b, r.header("location"))
    b.drop_cookie(LOGIN_COOKIE)
    before = idp.token_calls
    r = b.request("GET", callback, [("accept", "application/json")])
    assert r.status == 400 and r.json()["error"] == "login_failed"
    assert no_session_set(r) and idp.token_calls == before


def test_a_forged_login_cookie_is_400(gw, idp):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/forged")
    callback = at_provider(b, r.header("location"))
    payload64, mac = b.get_cookie(LOGIN_COOKIE).split(".")
    state = json.loads(b64decode(payload64))
    state["next"] = "https://evil.example/"
    b.set_cookie(LOGIN_COOKIE, b64(json.dumps(state).encode()) + "." + mac)
    before = idp.token_calls
    r = b.request("GET", callback, [("accept", "application/json")])
    assert r.status == 400 and no_session_set(r) and idp.token_calls == before


def craft_login(state: dict, secret: str = SESSION_KEY) -> str:
    payload = b64(json.dumps(state).encode())
    return payload + "." + b64(hmac.new(login_mac_key(secret), payload.encode(), hashlib.sha256).digest())


def test_crafted_login_cookies_valid_and_expired(gw, idp, app):
    """A login cookie made here in the documented format, for a login started here (own state,
    nonce and PKCE verifier): the gateway completes it; the same one expired is 400."""
    now = int(time.time())
    verifier, state, nonce = b64(os.urandom(32)), b64(os.urandom(32)), b64(os.urandom(32))
    redirect_uri = gw.base_url + "/_sso/callback"
    authorize = idp.issuer + "/authorize?" + urlencode({
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect_uri, "scope": "openid email",
        "state": state, "nonce": nonce, "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"})
    login_state = {"sso": SSO, "state": state, "nonce": nonce, "verifier": verifier, "next": "/app/crafted-login?k=v"}

    expired = Browser()
    expired.set_cookie(LOGIN_COOKIE, craft_login({**login_state, "exp": now - 5}))
    r = expired.request("GET", at_provider(expired, authorize), [("accept", "application/json")])
    assert r.status == 400 and r.json()["error"] == "login_failed" and no_session_set(r)

    other_key = Browser()
    other_key.set_cookie(LOGIN_COOKIE, craft_login({**login_state, "exp": now + 300}, secret="x" * 40))
    r = other_key.request("GET", at_provider(other_key, authorize), [("accept", "application/json")])
    assert r.status == 400 and no_session_set(r)

    b = Browser()
    b.set_cookie(LOGIN_COOKIE, craft_login({**login_state, "exp": now + 300}))
    r = b.request("GET", at_provider(b, authorize))
    assert r.status == 302, r.body
    assert urljoin(redirect_uri, r.header("location")) == gw.base_url + "/app/crafted-login?k=v"
    assert b.request("GET", gw.base_url + "/app/crafted-login?k=v").status == 200
    assert app.last().header("x-user-id") == "user-alice"


def test_a_replayed_code_is_refused(gw, idp, app):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/replay")
    login_cookie = b.get_cookie(LOGIN_COOKIE)
    callback = at_provider(b, r.header("location"))
    first = b.request("GET", callback)
    assert first.status == 302 and b.get_cookie(SESSION_COOKIE)

    # an attacker who saw the callback URL and the login cookie replays both
    attacker = Browser()
    attacker.set_cookie(LOGIN_COOKIE, login_cookie)
    before = app.count()
    r = attacker.request("GET", callback, [("accept", "application/json")])
    assert r.status == 502, (r.status, r.body)
    assert r.json()["error"] == "login_failed"
    assert no_session_set(r) and attacker.get_cookie(SESSION_COOKIE) is None
    assert any("already used" in e for e in idp.token_errors)
    assert app.count() == before


@pytest.mark.parametrize("override,why", [
    ({"nonce": "wrong"}, "wrong nonce"),
    ({"aud": "another-client"}, "an ID token for another client"),
    ({"iss": "https://someone-else.test"}, "another issuer"),
    ({"exp": int(time.time()) - 3600}, "an expired ID token"),
    ({"nonce": None}, "no nonce"),
    ("other-key", "a signature by a key not in the provider's JWKS"),
])
def test_a_bad_id_token_is_401_and_no_session(gw, idp, app, override, why):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/bad-token")
    callback = at_provider(b, r.header("location"))
    if override == "other-key":
        idp.next_id_token_key = "other"
    else:
        idp.next_id_token_claims = dict(override)
    before_ok, before_app = idp.token_ok, app.count()
    r = b.request("GET", callback, [("accept", "application/json")])
    assert idp.token_ok == before_ok + 1, "the provider did issue the token"
    assert r.status == 401, (why, r.status, r.body)
    assert r.json()["error"] == "login_failed", why
    assert no_session_set(r) and b.get_cookie(SESSION_COOKIE) is None, why
    assert app.count() == before_app
    assert b.request("GET", gw.base_url + "/app/bad-token").status == 302


@pytest.mark.parametrize("sub,why", [
    (None, "no sub"),
    (JSON_NULL, "sub null"),
    (42, "a number"),
    ("", "an empty string"),
    (["user-alice"], "an array"),
])
def test_an_id_token_without_a_usable_sub_is_401_and_no_session(gw, idp, app, sub, why):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/no-sub")
    callback = at_provider(b, r.header("location"))
    idp.next_id_token_claims = {"sub": sub}
    before_ok, before_app = idp.token_ok, app.count()
    r = b.request("GET", callback, [("accept", "application/json")])
    assert idp.token_ok == before_ok + 1, "the provider did issue the token"
    issued = idp.issued_id_tokens[-1]
    assert ("sub" not in issued) if sub is None else (issued["sub"] == (None if sub is JSON_NULL else sub)), issued
    assert r.status == 401, (why, r.status, r.body)
    body = r.json()
    assert body["error"] == "login_failed" and body["request_id"] == r.header("x-request-id"), body
    assert SESSION_COOKIE not in set_cookies(r), (why, r.headers)
    assert set_cookies(r)[LOGIN_COOKIE][1].get("max-age") == "0", "the login is spent"
    assert b.get_cookie(SESSION_COOKIE) is None
    assert app.count() == before_app
    gw.wait_for_log(body["request_id"])
    line = next(json.loads(x) for x in gw.log_lines() if body["request_id"] in x and x.startswith("{"))
    assert line["route"] == "sso" and line["status"] == 401, line
    assert line["auth"] == {"outcome": "refused", "reason": "missing_sub"}, line
    # still signed out
    assert b.request("GET", gw.base_url + "/api/no-sub", [("accept", "application/json")]).status == 401
    assert b.request("GET", gw.base_url + "/app/no-sub").status == 302


def test_an_id_token_without_sub_is_the_error_page_for_a_browser(gw, idp):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/no-sub-page")
    callback = at_provider(b, r.header("location"))
    idp.next_id_token_claims = {"sub": None}
    r = b.request("GET", callback)
    assert r.status == 401, r.body
    assert r.header("content-type") == "text/html; charset=utf-8"
    text = r.body.decode()
    assert "Sign-in failed" in text and "login_failed" in text and r.header("x-request-id") in text
    assert SESSION_COOKIE not in set_cookies(r) and b.get_cookie(SESSION_COOKIE) is None


def test_the_provider_saying_no_is_401(gw, idp):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/denied")
    idp.deny_next = True
    callback = at_provider(b, r.header("location"))
    assert query_of(callback)["error"] == "access_denied"
    r = b.request("GET", callback, [("accept", "application/json")])
    assert r.status == 401 and r.json()["error"] == "login_failed" and no_session_set(r)


def test_a_user_not_in_the_required_group_gets_403_after_the_callback(gw, idp, app):
    idp.user = {**DEFAULT_USER, "sub": "user-mallory", "email": "mallory@example.test", "groups": ["contractors"]}
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/staff-only")
    callback = at_provider(b, r.header("location"))
    before = app.count()
    r = b.request("GET", callback, [("accept", "application/json")])
    assert r.status == 403, r.body
    assert r.json()["error"] == "forbidden"
    assert no_session_set(r) and b.get_cookie(SESSION_COOKIE) is None
    assert app.count() == before


# ------------------------------------------------------------------------------------ sessions


def test_a_tampered_session_cookie_is_no_session(gw, app):
    b = Browser()
    login(b, gw, "/app/tamper")
    value = b.get_cookie(SESSION_COOKIE)
    i = len(value) // 2
    flipped = value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1:]
    b.set_cookie(SESSION_COOKIE, flipped)
    before = app.count()
    r = b.request("GET", gw.base_url + "/app/tamper")
    assert r.status == 302 and r.header("location").startswith("http://127.0.0.1")
    assert "/authorize?" in r.header("location")
    r = b.request("GET", gw.base_url + "/api/tamper", [("accept", "application/json")])
    assert r.status == 401 and r.json()["error"] == "unauthorized"
    assert app.count() == before


def test_crafted_sessions_expired_valid_and_under_another_key(gw, app):
    now = int(time.time())
    claims = {"sub": "crafted-carol", "email": "carol@example.test", "name": "Carol", "groups": ["staff"]}

    def attempt(value: str) -> Reply:
        b = Browser(accept="application/json")
        b.set_cookie(SESSION_COOKIE, value)
        return b.request("GET", gw.base_url + "/api/crafted")

    before = app.count()
    assert attempt(craft_session(claims, exp=now - 5, iat=now - 3600)).status == 401  # expired
    assert attempt(craft_session(claims, exp=now + 600, secret="another-session-key-of-enough-length-0123456789")).status == 401
    assert attempt(craft_session(claims, exp=now + 600, sso="another-sso")).status == 401  # bound to the sso's name
    for sub in (None, "", 7):  # a session naming no user (as sign-in once let through) is none
        no_sub = {k: v for k, v in claims.items() if k != "sub"} if sub is None else {**claims, "sub": sub}
        assert attempt(craft_session(no_sub, exp=now + 600)).status == 401, sub
    assert app.count() == before
    # the same format, valid: accepted (so the refusals above are about exp and the key)
    r = attempt(craft_session(claims, exp=now + 600))
    assert r.status == 200, r.body
    assert app.last().header("x-user-id") == "crafted-carol"
    assert app.last().header("x-user-email") == "carol@example.test"
    # a valid session that lacks the required group: 403, on a page too (no login loop)
    outsider = {**claims, "sub": "crafted-dave", "groups": ["contractors"]}
    r = attempt(craft_session(outsider, exp=now + 600))
    assert r.status == 403 and r.json()["error"] == "forbidden"
    b = Browser()
    b.set_cookie(SESSION_COOKIE, craft_session(outsider, exp=now + 600))
    r = b.request("GET", gw.base_url + "/app/crafted")
    assert r.status == 403 and r.header("location") is None
    assert app.last().header("x-user-id") == "crafted-carol"  # dave never got through
    # an expired one on a page: back to the provider
    b = Browser()
    b.set_cookie(SESSION_COOKIE, craft_session(claims, exp=now - 5, iat=now - 3600))
    r = b.request("GET", gw.base_url + "/app/crafted")
    assert r.status == 302 and "/authorize?" in r.header("location")


def test_a_cookie_planted_under_the_same_name_does_not_hide_the_session(gw, app):
    """A sibling host can set a cookie of the session's name for a parent domain or a longer path,
    which the browser then sends first: the gateway tries each value, not only the first."""
    now = int(time.time())
    claims = {"sub": "planted-erin", "email": "erin@example.test", "groups": ["staff"]}
    valid = craft_session(claims, exp=now + 600)
    planted = craft_session(claims, exp=now + 600, secret="a-planted-key-of-enough-length-0123456789")
    r = Browser(accept="application/json").request(
        "GET", gw.base_url + "/api/planted",
        [("cookie", f"{SESSION_COOKIE}=garbage; {SESSION_COOKIE}={planted}; {SESSION_COOKIE}={valid}")])
    assert r.status == 200, r.body
    assert app.last().header("x-user-id") == "planted-erin"
    assert SESSION_COOKIE not in (app.last().header("cookie") or ""), "the gateway's cookies stay at the edge"
    before = app.count()
    r = Browser(accept="application/json").request(
        "GET", gw.base_url + "/api/planted", [("cookie", f"{SESSION_COOKIE}=garbage; {SESSION_COOKIE}={planted}")])
    assert r.status == 401 and app.count() == before


def test_api_calls_without_a_session_get_401_json_not_a_redirect(gw, app):
    before = app.count()
    for method, path, accept in [("GET", "/app/x", "application/json"), ("POST", "/app/x", HTML),
                                 ("GET", "/app/x", "*/*"), ("GET", "/api/x", HTML)]:
        b = Browser(accept=accept)
        r = b.request(method, gw.base_url + path, body=b"{}" if method == "POST" else None)
        assert r.status == 401, (method, path, accept, r.status)
        assert r.header("location") is None
        if accept != HTML:
            assert r.header("content-type").startswith("application/json")
            assert r.json()["error"] == "unauthorized"
        assert LOGIN_COOKIE not in set_cookies(r)
    assert app.count() == before


# ------------------------------------------------------------------------------------ login_path


@pytest.mark.parametrize("nxt", ["https://evil.example", "//evil.example", "/\\evil.example", "http:/evil.example",
                                 "/ok\r\nx-evil: 1"])
def test_login_refuses_a_next_off_this_host(gw, idp, nxt):
    before = idp.authorize_calls
    for accept in ("application/json", HTML):
        r = Browser(accept=accept).request("GET", gw.base_url + "/_sso/login?" + urlencode({"next": nxt}))
        assert r.status == 400, (nxt, r.status, r.body)
        assert r.header("location") is None
        assert "evil.example" not in " ".join(v for _, v in r.headers)
        if accept == "application/json":
            assert r.json()["error"] == "bad_request"
        else:
            assert r.header("content-type") == "text/html; charset=utf-8"
    assert idp.authorize_calls == before


def test_login_with_next_comes_back_there(gw):
    b = Browser(accept="application/json")  # "whatever Accept says"
    r = b.request("GET", gw.base_url + "/_sso/login?next=" + quote("/somewhere?x=1", safe=""))
    assert r.status == 302 and r.header("location").split("?")[0].endswith("/authorize")
    callback = at_provider(b, r.header("location"))
    r = b.request("GET", callback)
    assert r.status == 302, r.body
    assert urljoin(callback, r.header("location")) == gw.base_url + "/somewhere?x=1"
    # without next: /
    b = Browser()
    r = b.request("GET", gw.base_url + "/_sso/login")
    callback = at_provider(b, r.header("location"))
    r = b.request("GET", callback)
    assert r.status == 302 and urljoin(callback, r.header("location")) == gw.base_url + "/"


# ------------------------------------------------------------------------------------ logout


def test_logout_clears_the_cookie_and_ends_the_provider_session(gw, idp, app):
    b = Browser()
    assert login(b, gw, "/app/bye").status == 200
    r = b.request("GET", gw.base_url + "/_sso/logout")
    assert r.status == 302
    assert r.header("cache-control") == "no-store"
    value, attrs = set_cookies(r)[SESSION_COOKIE]
    assert attrs.get("max-age") == "0" and attrs.get("path") == "/"
    assert b.get_cookie(SESSION_COOKIE) is None
    location = r.header("location")
    assert location.startswith(idp.issuer + "/logout?"), location
    q = query_of(location)
    assert q["client_id"] == CLIENT_ID and q["post_logout_redirect_uri"] == gw.base_url + "/"
    # the provider ends its session and sends the browser back
    before = len(idp.logouts)
    r = b.request("GET", location)
    assert r.status == 302 and r.header("location") == gw.base_url + "/"
    assert len(idp.logouts) == before + 1
    # signed out: the page asks for a login again, the API says 401
    r = b.request("GET", gw.base_url + "/app/bye")
    assert r.status == 302 and "/authorize?" in r.header("location")
    assert b.request("GET", gw.base_url + "/api/bye", [("accept", "application/json")]).status == 401
    # POST works too
    b2 = Browser()
    login(b2, gw, "/app/bye2")
    r = b2.request("POST", gw.base_url + "/_sso/logout", body=b"")
    assert r.status == 302 and b2.get_cookie(SESSION_COOKIE) is None


# ------------------------------------------------------------------------------------ the Host header


def no_provider_traffic(idp: IdP, before: int) -> bool:
    return len(idp.received) == before


SPOOFED_HOSTS = ["evil.example", "EVIL.example", "127.0.0.1.evil.example", "localhost", "[::1]",
                 "[::ffff:127.0.0.1]"]


@pytest.mark.parametrize("host", SPOOFED_HOSTS)
def test_a_login_on_a_spoofed_host_is_404_and_the_provider_hears_nothing(gw, idp, host):
    """Without redirect_uri, the redirect URI is built only on a host a route of the entry names:
    a Host header naming any other host gets no redirect, so no code can be sent there."""
    port = gw.port
    before = len(idp.received)
    for path in ("/_sso/login?next=/app/x", "/loose/page", "/app/page"):
        for accept in (HTML, "application/json"):
            b = Browser(accept=accept)
            r = b.request("GET", gw.base_url + path, [("host", f"{host}:{port}")])
            # an API call on the host-less login route is 401 on any host, as ever
            want = (401, "unauthorized") if path == "/loose/page" and accept != HTML else (404, "no_route")
            assert r.status == want[0], (host, path, accept, r.status, r.header("location"))
            assert r.header("location") is None
            assert LOGIN_COOKIE not in set_cookies(r)
            if accept == "application/json":
                assert r.json()["error"] == want[1]
            assert "evil" not in " ".join(v for _, v in r.headers).lower()
    assert no_provider_traffic(idp, before), idp.received[before:]
    # the same login on the gateway's own host goes to the provider, back to this host
    r = Browser().request("GET", gw.base_url + "/loose/page")
    assert r.status == 302 and query_of(r.header("location"))["redirect_uri"] == gw.base_url + "/_sso/callback"


def test_a_callback_or_logout_on_a_spoofed_host_is_404(gw, idp, app):
    b = Browser()
    r, q = start_login(b, gw.base_url + "/app/spoofed-callback")
    callback = at_provider(b, r.header("location"))
    before = len(idp.received)
    path = "/_sso/callback?" + urlsplit(callback).query
    r = b.request("GET", gw.base_url + path, [("host", f"evil.example:{gw.port}"), ("accept", "application/json")])
    assert r.status == 404 and r.json()["error"] == "no_route", r.body
    assert SESSION_COOKIE not in set_cookies(r) and b.get_cookie(SESSION_COOKIE) is None
    assert no_provider_traffic(idp, before), "the code was not exchanged"
    # the same callback on the gateway's host completes the login
    r = b.request("GET", callback)
    assert r.status == 302 and b.get_cookie(SESSION_COOKIE)
    # logout: refused on a spoofed host (the session stays), done on the gateway's
    session = b.get_cookie(SESSION_COOKIE)
    for method in ("GET", "POST"):
        r = b.request(method, gw.base_url + "/_sso/logout", [("host", f"evil.example:{gw.port}")],
                      body=b"" if method == "POST" else None)
        assert r.status == 404 and r.header("location") is None, (method, r.status)
        assert SESSION_COOKIE not in set_cookies(r)
    assert b.get_cookie(SESSION_COOKIE) == session
    r = b.request("GET", gw.base_url + "/_sso/logout")
    assert r.status == 302
    assert query_of(r.header("location"))["post_logout_redirect_uri"] == gw.base_url + "/"
    gw.wait_for_log("no route of this entry serves the host")


def test_an_explicit_redirect_uri_is_what_the_provider_gets_whatever_the_host(app, identity_key):
    """With redirect_uri, the gateway sends exactly it for authorize and the code exchange, and
    logout returns to its origin, whatever Host the request names. Here the public address is
    https://sso.example.test (a proxy in front of the gateway, say): the test carries the
    provider's redirect to the gateway itself."""
    public = "https://sso.example.test/auth/done"
    with IdP({CLIENT_ID: CLIENT_SECRET}) as idp2:
        cfg = {
            "sso": {SSO: sso_entry(idp2, redirect_uri=public)},
            "identity": identity_section(),
            "origins": {"app": {"servers": [{"url": app.url}], "timeout_ms": 5000}},
            "routes": [{"name": "page", "path": "/app/{*rest}", "origin": "app", "auth": {"use": SSO, "login": True}}],
        }
        with Workerd(json.dumps(cfg), text_bindings=secrets_for(identity_key)) as wd:
            for host in (f"127.0.0.1:{wd.port}", f"evil.example:{wd.port}", "[::1]"):
                r = Browser().request("GET", wd.base_url + "/app/x", [("host", host)])
                assert r.status == 302, (host, r.status, r.body)
                assert query_of(r.header("location"))["redirect_uri"] == public, host
            b = Browser()
            r, q = start_login(b, wd.base_url + "/app/explicit?k=v")
            assert q["redirect_uri"] == public
            at = b.request("GET", r.header("location"))
            assert at.status == 302
            back = at.header("location")
            assert back.startswith(public + "?code="), back
            code = query_of(back)["code"]
            assert idp2.codes[code]["redirect_uri"] == public
            # the callback path is redirect_uri's path
            r = b.request("GET", wd.base_url + "/auth/done?" + urlsplit(back).query)
            assert r.status == 302, r.body
            assert r.header("location") == "/app/explicit?k=v"
            assert b.get_cookie(SESSION_COOKIE)
            token = [x for x in idp2.received if x.path == "/token"]
            assert len(token) == 1
            form = {k: v[0] for k, v in parse_qs(token[0].body.decode()).items()}
            assert form["redirect_uri"] == public and form["code"] == code
            r = b.request("GET", wd.base_url + "/app/explicit?k=v")
            assert r.status == 200 and app.last().header("x-user-id") == "user-alice"
            # the default callback path is not answered: it is an ordinary path now
            assert Browser(accept="application/json").request("GET", wd.base_url + "/_sso/callback").json()["error"] == "no_route"
            r = b.request("GET", wd.base_url + "/_sso/logout", [("host", f"evil.example:{wd.port}")])
            assert r.status == 302
            assert query_of(r.header("location"))["post_logout_redirect_uri"] == "https://sso.example.test/"


def test_a_config_whose_redirect_uri_would_follow_the_host_is_refused(idp, identity_key):
    cfg = {
        "sso": {SSO: sso_entry(idp)},
        "origins": {"app": {"servers": [{"url": "http://127.0.0.1:9"}]}},
        "routes": [{"name": "page", "path": "/app/{*rest}", "origin": "app", "auth": {"use": SSO, "login": True}}],
    }
    before = len(idp.received)
    with Workerd(json.dumps(cfg), text_bindings=secrets_for(identity_key)) as wd:
        for path in ("/app/x", "/_sso/login"):
            r = Browser().request("GET", wd.base_url + path, [("host", "evil.example")])
            assert r.status == 500 and r.header("location") is None, (path, r.status)
        logs = "\n".join(wd.log_lines() + wd.stderr_lines())
        assert "$.sso.corp.redirect_uri" in logs and "give the routes that use this entry a host" in logs
    assert no_provider_traffic(idp, before)


# ------------------------------------------------------------------------------------ identity in use


def test_the_cache_keys_on_the_session_user(gw, idp, app):
    alice, bob = Browser(), Browser()
    login(alice, gw, "/app/cache-alice")
    idp.user = {**DEFAULT_USER, "sub": "user-bob", "email": "bob@example.test", "name": "Bob"}
    login(bob, gw, "/app/cache-bob")
    url = gw.base_url + "/cacheable/mine"
    a1 = alice.request("GET", url)
    assert a1.status == 200 and a1.json()["user"] == "user-alice" and a1.header("x-cache-status") == "MISS"
    time.sleep(0.3)  # the cache write happens after the response
    b1 = bob.request("GET", url)
    assert b1.status == 200 and b1.json()["user"] == "user-bob", b1.body
    assert b1.header("x-cache-status") == "MISS"
    time.sleep(0.3)
    a2, b2 = alice.request("GET", url), bob.request("GET", url)
    assert a2.header("x-cache-status") == "HIT" and a2.json()["user"] == "user-alice"
    assert b2.header("x-cache-status") == "HIT" and b2.json()["user"] == "user-bob"
    # no session: never the cached body
    r = Browser().request("GET", url)
    assert r.status == 302 and b"user-" not in r.body
    r = Browser(accept="application/json").request("GET", url)
    assert r.status == 401 and b"user-" not in r.body


def test_hash_on_a_session_claim_keeps_a_user_on_one_server(gw, idp, sticky):
    users = []
    for name in ("ann", "ben", "cat", "dan"):
        idp.user = {**DEFAULT_USER, "sub": f"user-{name}", "email": f"{name}@example.test"}
        b = Browser()
        login(b, gw, f"/app/sticky-{name}")
        users.append((name, b))
    for name, b in users:
        before = [s.count() for s in sticky]
        for _ in range(4):
            r = b.request("GET", gw.base_url + "/sticky/x")
            assert r.status == 200, r.body
            assert dict(r.json()["headers"]).get("x-user-id") == f"user-{name}"
        got = [s.count() - n for s, n in zip(sticky, before)]
        assert sorted(got) == [0, 0, 4], (name, got)


# ------------------------------------------------------------------------------------ one login, many apps


def test_a_cookie_domain_gives_single_sign_on_across_hosts(app, identity_key):
    with IdP({CLIENT_ID: CLIENT_SECRET}, token_auth="client_secret_post") as idp2:
        cfg = {
            "sso": {SSO: sso_entry(idp2, endpoints=idp2.endpoints(), token_auth="client_secret_post",
                                   cookie={"domain": "apps.test"})},
            "identity": identity_section(),
            "origins": {"app": {"servers": [{"url": app.url}], "timeout_ms": 5000}},
            "routes": [
                {"name": "a", "host": "a.apps.test", "path": "/{*rest}", "origin": "app", "auth": {"use": SSO, "login": True}},
                {"name": "b", "host": "b.apps.test", "path": "/{*rest}", "origin": "app", "auth": {"use": SSO, "login": True}},
            ],
        }
        with Workerd(json.dumps(cfg), text_bindings=secrets_for(identity_key)) as wd:
            b = Browser(hosts={"a.apps.test": wd.port, "b.apps.test": wd.port, "c.other.test": wd.port})
            r = b.request("GET", "http://a.apps.test/dashboard?tab=1")
            assert r.status == 302
            assert query_of(r.header("location"))["redirect_uri"] == "http://a.apps.test/_sso/callback"
            assert set_cookies(r)[LOGIN_COOKIE][1].get("domain", "").lstrip(".") == "apps.test"
            callback = at_provider(b, r.header("location"))
            r = b.request("GET", callback)
            assert r.status == 302, r.body
            assert idp2.token_auth_seen == ["client_secret_post"]
            assert urljoin(callback, r.header("location")) == "http://a.apps.test/dashboard?tab=1"
            value, attrs = set_cookies(r)[SESSION_COOKIE]
            assert attrs.get("domain", "").lstrip(".") == "apps.test"
            assert attrs.get("httponly") is True and attrs.get("secure") is True
            r = b.follow("http://a.apps.test/dashboard?tab=1")
            assert r.status == 200 and app.last().header("x-user-id") == "user-alice"
            assert idp2.count("/.well-known/openid-configuration") == 0  # endpoints given: no discovery
            # the other app: signed in already, no trip to the provider
            calls = idp2.authorize_calls
            r = b.request("GET", "http://b.apps.test/reports")
            assert r.status == 200, (r.status, r.header("location"))
            assert app.last().path == "/reports" and app.last().header("x-user-id") == "user-alice"
            assert idp2.authorize_calls == calls
            # a host outside the domain gets no cookie (and has no route)
            assert b.cookie_header("c.other.test", "/") is None
            # the Host's letter case is not the redirect URI's; a host no route names gets none
            r = Browser(hosts={"a.apps.test": wd.port}).request("GET", "http://a.apps.test/x", [("host", "A.Apps.TEST")])
            assert r.status == 302 and query_of(r.header("location"))["redirect_uri"] == "http://a.apps.test/_sso/callback"
            r = Browser(hosts={"c.other.test": wd.port}).request("GET", "http://c.other.test/_sso/login")
            assert r.status == 404 and r.header("location") is None
