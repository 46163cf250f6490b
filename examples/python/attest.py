"""Lock a WSGI origin to the Portcullis gateway: refuse (401) every request that does not carry
the gateway's attestation for its own method, path and query (`identity.attest` in the gateway's
config). Copy this file; it needs PyJWT with cryptography (`pip install 'pyjwt[crypto]'`).

    app = Attested(app, jwks_url="https://gateway.example.com/.well-known/jwks.json",
                   issuer="https://gateway.example.com", audience="reports")

The verified claims are in environ["portcullis.claims"] (`sub`, or `anon: true`).
"""

import base64
import hashlib
import hmac
import threading
import time
from urllib.parse import unquote_to_bytes

import jwt

REQUIRED = ["iss", "aud", "iat", "exp", "jti", "htm", "htu", "htq"]


def query_hash(query: bytes) -> str:
    """base64url(SHA-256(query)), unpadded: the token's `htq`."""
    return base64.urlsafe_b64encode(hashlib.sha256(query).digest()).rstrip(b"=").decode()


class Attested:
    def __init__(self, app, *, jwks_url, issuer, audience, header="x-portcullis-identity",
                 algorithms=("ES256", "EdDSA"), leeway=5, remember_jti=True, max_remembered=100_000):
        self.app, self.issuer, self.audience = app, issuer, audience
        self.algorithms, self.leeway = list(algorithms), leeway
        # Caches the key set for 5 minutes, and fetches it again for an unknown kid.
        self.jwks = jwt.PyJWKClient(jwks_url, lifespan=300, timeout=5)
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")
        self.remember_jti, self.max_remembered = remember_jti, max_remembered
        self.seen, self.lock = {}, threading.Lock()  # jti -> exp

    def __call__(self, environ, start_response):
        claims = self.verify(environ)
        if claims is None:
            start_response("401 Unauthorized", [("content-type", "application/json"),
                                                ("cache-control", "no-store")])
            return [b'{"error":"not_attested"}']
        environ["portcullis.claims"] = claims
        return self.app(environ, start_response)

    def verify(self, environ):
        """The attestation's claims when it is valid for this request, else None."""
        token = environ.get(self.environ_key)
        if not token:
            return None
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=self.algorithms, issuer=self.issuer,
                                audience=self.audience, leeway=self.leeway,
                                options={"require": REQUIRED})
        except jwt.PyJWTError:
            return None
        # WSGI gives the path percent-decoded (as latin-1 text): compare it with htu decoded.
        path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
        query = environ.get("QUERY_STRING", "").encode("latin-1")
        if (claims["htm"] != environ["REQUEST_METHOD"]
                or unquote_to_bytes(claims["htu"]) != path
                or not hmac.compare_digest(claims["htq"], query_hash(query))):
            return None
        if self.remember_jti and not self.first_use(claims["jti"], claims["exp"]):
            return None
        return claims

    def first_use(self, jti, exp):
        """True the first time `jti` is seen until its exp; False for a replay (or when full)."""
        now = time.time()
        with self.lock:
            if len(self.seen) >= self.max_remembered:
                self.seen = {j: e for j, e in self.seen.items() if e + self.leeway > now}
            if jti in self.seen or len(self.seen) >= self.max_remembered:
                return False
            self.seen[jti] = exp
            return True
