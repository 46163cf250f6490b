"""A test OpenID Connect provider on 127.0.0.1 for end-to-end tests (standard library and
`cryptography`).

It approves every authorization request at once (no login page), so a test (or a browser)
that follows the gateway's redirect lands straight back on the gateway's callback with a code.
What it checks is what a real provider checks, so that a gateway that gets the protocol wrong
fails here:

- `GET /.well-known/openid-configuration`: issuer, authorization_endpoint, token_endpoint,
  jwks_uri, end_session_endpoint (and the *_supported lists);
- `GET /authorize`: response_type=code, a known client_id, a redirect_uri (http(s)), scope with
  `openid`, a code_challenge with code_challenge_method=S256; then 302 to
  `redirect_uri?code=..&state=..` (or `?error=..&state=..` for a bad request once the client
  and redirect_uri are known good, and for `deny_next`). An unknown client or a missing
  redirect_uri gets 400 JSON (never a redirect);
- `POST /token` (form): client authentication as `token_auth` says (HTTP Basic by default, or
  client_secret_post, or "any"), grant_type=authorization_code, a code that exists, was issued
  to this client and was never used before (a replayed code is 400 {"error":"invalid_grant"}),
  redirect_uri equal to the authorize request's, and PKCE:
  base64url-nopad(SHA-256(code_verifier)) == code_challenge. Answers
  {"access_token", "token_type": "Bearer", "expires_in", "id_token"};
- `GET /jwks`: the provider's public RSA key (kid `idp-1`);
- `GET|POST /logout`: end-session; recorded in `logouts`; 302 to post_logout_redirect_uri if
  given, else 200 text.

ID tokens are RS256 with a kid and carry iss, aud (= client_id), sub, email, name, groups,
nonce (the authorize request's), iat and exp (= iat + 300).

Test knobs:
- `user`: the claims of the user who "signs in" (sub, email, name, groups; any JSON values);
- `next_id_token_claims`: one-shot overrides of the next ID token's claims, e.g.
  {"nonce": "wrong"} or {"aud": "another-client"}; a value of None removes the claim,
  `JSON_NULL` makes it JSON null;
- `next_id_token_key`: one-shot, "other" signs the next ID token with a key not in the JWKS;
- `deny_next`: one-shot, the next authorize request is answered with error=access_denied;
- `token_auth`: "client_secret_basic" (default), "client_secret_post" or "any";
- counters: `token_calls` (every POST /token), `token_ok` (tokens issued), `authorize_calls`;
  `received` records every request (method, path, query, headers, body), `logouts` the
  end-session queries, `codes` the codes issued (with what each was issued for).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from origin import LocalServer, Received

KID = "idp-1"
# In `next_id_token_claims`: the claim is there, with the JSON value null.
JSON_NULL = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_challenge(verifier: str) -> str:
    return b64(hashlib.sha256(verifier.encode()).digest())


def rs256(key, signing_input: bytes) -> bytes:
    return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


def make_jwt(key, kid: str, claims: dict, alg: str = "RS256") -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(
        json.dumps(claims, separators=(",", ":")).encode())
    return signing_input + "." + b64(rs256(key, signing_input.encode()))


def rsa_public_jwk(key, kid: str) -> dict:
    n = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64_int(n.n), "e": b64_int(n.e)}


def verify_id_token(token: str, jwks: dict) -> tuple[dict, dict]:
    """(header, claims) of an RS256 token whose signature verifies with a key of `jwks`; raises
    otherwise. For the standalone check and for tests."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    h64, c64, s64 = token.split(".")
    header = json.loads(b64decode(h64))
    assert header["alg"] == "RS256", header
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pub = RSAPublicNumbers(int.from_bytes(b64decode(jwk["e"]), "big"),
                           int.from_bytes(b64decode(jwk["n"]), "big")).public_key()
    pub.verify(b64decode(s64), (h64 + "." + c64).encode(), padding.PKCS1v15(), hashes.SHA256())
    return header, json.loads(b64decode(c64))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "idp-test/1.0"
    sys_version = "Python-internal"

    def log_message(self, *args):
        pass

    # ----------------------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: Optional[list[tuple[str, str]]] = None):
        self.send_response(status)
        for k, v in headers or []:
            self.send_header(k, v)
        self.send_header("cache-control", "no-store")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: Optional[list[tuple[str, str]]] = None):
        self._send(status, json.dumps(obj).encode(), [("content-type", "application/json")] + (headers or []))

    def _redirect(self, url: str):
        self._send(302, b"", [("location", url)])

    # ----------------------------------------------------------------------------- routes

    def _handle(self):
        idp: IdP = self.server.owner  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        body = self._read_body()
        headers = [(k.lower(), v) for k, v in self.headers.items()]
        with idp.lock:
            idp.received.append(Received(self.command, path, query, headers, body))
        q = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if path == "/.well-known/openid-configuration" and self.command in ("GET", "HEAD"):
            return self._json(200, idp.discovery(), [("cache-control", "max-age=60")])
        if path == "/jwks" and self.command in ("GET", "HEAD"):
            return self._json(200, idp.jwks())
        if path == "/authorize" and self.command == "GET":
            return self._authorize(idp, q)
        if path == "/token":
            if self.command != "POST":
                return self._json(405, {"error": "invalid_request", "error_description": "POST only"})
            return self._token(idp, body)
        if path == "/logout" and self.command in ("GET", "POST"):
            if self.command == "POST" and body:
                q.update({k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()})
            with idp.lock:
                idp.logouts.append(q)
            target = q.get("post_logout_redirect_uri")
            if target:
                return self._redirect(target)
            return self._send(200, b"signed out of the test provider\n", [("content-type", "text/plain")])
        return self._json(404, {"error": "not_found", "path": path})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

    def _authorize(self, idp: "IdP", q: dict):
        with idp.lock:
            idp.authorize_calls += 1
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if client_id not in idp.clients:
            return self._json(400, {"error": "invalid_client", "error_description": "unknown client_id"})
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            return self._json(400, {"error": "invalid_request", "error_description": "bad redirect_uri"})
        state = q.get("state")

        def back(params: dict):
            if state is not None:
                params["state"] = state
            sep = "&" if parts.query else "?"
            return self._redirect(redirect_uri + sep + urlencode(params))

        problems = []
        if q.get("response_type") != "code":
            problems.append("response_type must be code")
        if "openid" not in q.get("scope", "").split(" "):
            problems.append("scope must include openid")
        if q.get("code_challenge_method") != "S256":
            problems.append("code_challenge_method must be S256")
        if not q.get("code_challenge") or len(q["code_challenge"]) < 43:
            problems.append("code_challenge missing or too short")
        if problems:
            with idp.lock:
                idp.authorize_errors.append("; ".join(problems))
            return back({"error": "invalid_request", "error_description": "; ".join(problems)})
        with idp.lock:
            if idp.deny_next:
                idp.deny_next = False
                return back({"error": "access_denied", "error_description": "the user said no"})
            code = secrets.token_urlsafe(24)
            idp.codes[code] = {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "code_challenge": q["code_challenge"],
                "nonce": q.get("nonce"),
                "scope": q.get("scope"),
                "state": state,
                "used": False,
                "issued": time.time(),
                "user": dict(idp.user),
            }
        return back({"code": code})

    def _token_error(self, status: int, error: str, description: str, basic: bool = False):
        idp: IdP = self.server.owner  # type: ignore[attr-defined]
        with idp.lock:
            idp.token_errors.append(f"{error}: {description}")
        extra = [("www-authenticate", 'Basic realm="idp-test"')] if basic else []
        return self._json(status, {"error": error, "error_description": description}, extra)

    def _token(self, idp: "IdP", body: bytes):
        with idp.lock:
            idp.token_calls += 1
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._token_error(400, "invalid_request", f"content-type {ctype!r}, want a form")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}

        # client authentication
        basic_id = basic_secret = None
        auth = self.headers.get("authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
                user, _, pw = raw.partition(":")
                basic_id, basic_secret = unquote_plus(user), unquote_plus(pw)
            except Exception:
                return self._token_error(401, "invalid_client", "unreadable Basic credentials", basic=True)
        post_id, post_secret = form.get("client_id"), form.get("client_secret")
        if basic_id is not None and post_secret is not None:
            return self._token_error(400, "invalid_request", "two client authentication methods")
        if basic_id is not None:
            method, client_id, secret = "client_secret_basic", basic_id, basic_secret
        elif post_secret is not None:
            method, client_id, secret = "client_secret_post", post_id, post_secret
        else:
            return self._token_error(401, "invalid_client", "no client authentication", basic=True)
        with idp.lock:
            idp.token_auth_seen.append(method)
        if idp.token_auth != "any" and method != idp.token_auth:
            return self._token_error(401, "invalid_client", f"{method} not allowed, use {idp.token_auth}", basic=True)
        if client_id not in idp.clients or not secrets.compare_digest(idp.clients[client_id].encode(), (secret or "").encode()):
            return self._token_error(401, "invalid_client", "bad client credentials", basic=True)
        if post_id is not None and post_id != client_id:
            return self._token_error(400, "invalid_request", "client_id differs from the authenticated client")

        if form.get("grant_type") != "authorization_code":
            return self._token_error(400, "unsupported_grant_type", f"grant_type {form.get('grant_type')!r}")
        code = form.get("code", "")
        with idp.lock:
            grant = idp.codes.get(code)
            if grant is None:
                return self._token_error(400, "invalid_grant", "unknown code")
            if grant["used"]:
                return self._token_error(400, "invalid_grant", "code already used")
            grant["used"] = True  # one-time, whatever follows
        if time.time() - grant["issued"] > 60:
            return self._token_error(400, "invalid_grant", "code expired")
        if grant["client_id"] != client_id:
            return self._token_error(400, "invalid_grant", "code issued to another client")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return self._token_error(400, "invalid_grant", "redirect_uri differs from the authorize request's")
        verifier = form.get("code_verifier", "")
        if not (43 <= len(verifier) <= 128):
            return self._token_error(400, "invalid_grant", "code_verifier missing or of a bad length")
        if not secrets.compare_digest(pkce_challenge(verifier), grant["code_challenge"]):
            return self._token_error(400, "invalid_grant", "PKCE verification failed")

        with idp.lock:
            overrides, idp.next_id_token_claims = idp.next_id_token_claims, {}
            key_choice, idp.next_id_token_key = idp.next_id_token_key, None
            idp.token_ok += 1
        now = int(time.time())
        claims = {"iss": idp.issuer, "aud": client_id, **grant["user"], "iat": now, "exp": now + 300}
        if grant["nonce"] is not None:
            claims["nonce"] = grant["nonce"]
        for k, v in overrides.items():
            if v is None:
                claims.pop(k, None)
            else:
                claims[k] = None if v is JSON_NULL else v
        key, kid = (idp.other_key, KID) if key_choice == "other" else (idp.key, KID)
        id_token = make_jwt(key, kid, claims)
        with idp.lock:
            idp.issued_id_tokens.append(claims)
        return self._json(200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                "expires_in": 300, "id_token": id_token, "scope": grant["scope"]})


DEFAULT_USER = {"sub": "user-alice", "email": "alice@example.test", "name": "Alice Example", "groups": ["staff"]}


class IdP(LocalServer):
    """One test OpenID provider on 127.0.0.1; `with IdP() as idp:` or start()/stop().

    `host` is the host name in the issuer and endpoint URLs (127.0.0.1 or localhost): what the
    gateway fetches and where the browser is sent."""

    handler = _Handler

    def __init__(self, clients: Optional[dict[str, str]] = None, *, host: str = "127.0.0.1",
                 user: Optional[dict] = None, token_auth: str = "client_secret_basic"):
        super().__init__()
        self.clients = dict(clients or {"portcullis": "portcullis-client-secret"})
        self.host = host
        self.user = dict(user or DEFAULT_USER)
        self.token_auth = token_auth
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget what was recorded and every one-shot knob (the user stays)."""
        self.received: list[Received] = []
        self.logouts: list[dict] = []
        self.codes: dict[str, dict] = {}
        self.issued_id_tokens: list[dict] = []
        self.token_auth_seen: list[str] = []
        self.token_errors: list[str] = []
        self.authorize_errors: list[str] = []
        self.next_id_token_claims: dict = {}
        self.next_id_token_key: Optional[str] = None
        self.deny_next = False
        self.token_calls = 0
        self.token_ok = 0
        self.authorize_calls = 0

    # ----------------------------------------------------------------------------- documents

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    url = issuer

    def discovery(self) -> dict:
        i = self.issuer
        return {
            "issuer": i,
            "authorization_endpoint": i + "/authorize",
            "token_endpoint": i + "/token",
            "jwks_uri": i + "/jwks",
            "end_session_endpoint": i + "/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "grant_types_supported": ["authorization_code"],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def endpoints(self) -> dict:
        d = self.discovery()
        return {"authorization": d["authorization_endpoint"], "token": d["token_endpoint"],
                "jwks": d["jwks_uri"], "end_session": d["end_session_endpoint"]}

    def jwks(self) -> dict:
        return {"keys": [rsa_public_jwk(self.key, KID)]}

    def count(self, path: str) -> int:
        return sum(1 for r in self.received if r.path == path)


def _self_check() -> None:
    """`python tests/e2e/idp.py`: act as a client against a fresh provider (authorize, token with
    PKCE, verify the ID token) and try the refusals."""
    import http.client

    def req(idp, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", idp.port, timeout=5)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    with IdP() as idp:
        st, _, body = req(idp, "GET", "/.well-known/openid-configuration")
        disc = json.loads(body)
        assert st == 200 and disc["issuer"] == idp.issuer, disc
        verifier = b64(os.urandom(32))
        redirect = "http://127.0.0.1:9/_sso/callback"
        q = urlencode({"response_type": "code", "client_id": "portcullis", "redirect_uri": redirect,
                       "scope": "openid email profile", "state": "st-1", "nonce": "n-1",
                       "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"})

        def new_code() -> str:
            """A fresh authorization code for the same request."""
            _, h, _ = req(idp, "GET", "/authorize?" + q)
            return parse_qs(urlsplit(h["location"]).query)["code"][0]

        st, h, _ = req(idp, "GET", "/authorize?" + q)
        assert st == 302 and h["location"].startswith(redirect + "?"), (st, h)
        back = {k: v[0] for k, v in parse_qs(urlsplit(h["location"]).query).items()}
        assert back["state"] == "st-1" and back["code"]
        basic = "Basic " + base64.b64encode(b"portcullis:portcullis-client-secret").decode()
        form = {"grant_type": "authorization_code", "code": back["code"], "redirect_uri": redirect,
                "code_verifier": verifier, "client_id": "portcullis"}
        ct = {"content-type": "application/x-www-form-urlencoded", "authorization": basic}
        st, _, body = req(idp, "POST", "/token", urlencode(form), ct)
        assert st == 200, body
        tok = json.loads(body)
        assert tok["token_type"] == "Bearer"
        st, _, jwks = req(idp, "GET", "/jwks")
        header, claims = verify_id_token(tok["id_token"], json.loads(jwks))
        assert header["kid"] == KID
        assert claims["iss"] == idp.issuer and claims["aud"] == "portcullis" and claims["nonce"] == "n-1"
        assert claims["sub"] == "user-alice" and claims["groups"] == ["staff"]
        assert claims["exp"] - claims["iat"] == 300
        # replay
        st, _, body = req(idp, "POST", "/token", urlencode(form), ct)
        assert st == 400 and json.loads(body)["error"] == "invalid_grant", body
        # bad PKCE, bad client secret, bad redirect_uri, and client_secret_post
        for change, want in [({"code_verifier": b64(os.urandom(32))}, (400, "invalid_grant")),
                             ({"redirect_uri": redirect + "x"}, (400, "invalid_grant"))]:
            code = new_code()
            st, _, body = req(idp, "POST", "/token", urlencode({**form, "code": code, **change}), ct)
            assert (st, json.loads(body)["error"]) == want, (change, st, body)
        code = new_code()
        bad = {**ct, "authorization": "Basic " + base64.b64encode(b"portcullis:nope").decode()}
        st, _, body = req(idp, "POST", "/token", urlencode({**form, "code": code}), bad)
        assert st == 401 and json.loads(body)["error"] == "invalid_client"
        idp.token_auth = "client_secret_post"
        code = new_code()
        st, _, body = req(idp, "POST", "/token",
                          urlencode({**form, "code": code, "client_secret": "portcullis-client-secret"}),
                          {"content-type": "application/x-www-form-urlencoded"})
        assert st == 200, body
        # one-shot overrides
        idp.next_id_token_claims = {"nonce": "wrong", "email": None}
        code = new_code()
        st, _, body = req(idp, "POST", "/token",
                          urlencode({**form, "code": code, "client_secret": "portcullis-client-secret"}),
                          {"content-type": "application/x-www-form-urlencoded"})
        _, claims = verify_id_token(json.loads(body)["id_token"], idp.jwks())
        assert claims["nonce"] == "wrong" and "email" not in claims
        assert idp.next_id_token_claims == {}
        idp.next_id_token_claims = {"sub": JSON_NULL}
        code = new_code()
        st, _, body = req(idp, "POST", "/token",
                          urlencode({**form, "code": code, "client_secret": "portcullis-client-secret"}),
                          {"content-type": "application/x-www-form-urlencoded"})
        _, claims = verify_id_token(json.loads(body)["id_token"], idp.jwks())
        assert "sub" in claims and claims["sub"] is None
        # no PKCE: an error back at the client; unknown client: 400 here
        st, h, _ = req(idp, "GET", "/authorize?" + q.replace("code_challenge_method=S256", "code_challenge_method=plain"))
        assert st == 302 and "error=invalid_request" in h["location"] and "state=st-1" in h["location"]
        st, _, _ = req(idp, "GET", "/authorize?" + q.replace("client_id=portcullis", "client_id=evil"))
        assert st == 400
        st, h, _ = req(idp, "GET", "/logout?" + urlencode({"client_id": "portcullis", "post_logout_redirect_uri": "http://127.0.0.1:9/"}))
        assert st == 302 and h["location"] == "http://127.0.0.1:9/" and idp.logouts[-1]["client_id"] == "portcullis"
        print(f"idp self-check passed ({idp.token_calls} token calls, {idp.token_ok} tokens issued)")


def _serve(port: int, client_id: str, client_secret: str) -> None:
    """`python tests/e2e/idp.py serve PORT CLIENT_ID CLIENT_SECRET`: the provider on a fixed
    port until interrupted (scripts/dev's demo sign-in)."""
    idp = IdP({client_id: client_secret})
    idp.port = port
    idp.start()
    print(f"demo OpenID provider on {idp.issuer}: every sign-in is {idp.user.get('email')}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        idp.stop()


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        _serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        _self_check()
