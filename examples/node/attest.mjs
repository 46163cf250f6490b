// Lock a Node origin to the Portcullis gateway: refuse (401) every request that does not carry
// the gateway's attestation for its own method, path and query (`identity.attest` in the
// gateway's config). Copy this file; it needs `jose` (npm install jose).
//
//   import { attested, middleware } from "./attest.mjs";
//   app.use(middleware({ jwksUrl: "https://gateway.example.com/.well-known/jwks.json",
//                        issuer: "https://gateway.example.com", audience: "reports" }));
//
// The verified claims are in req.attestation (`sub`, or `anon: true`).
import { createHash } from "node:crypto";
import { createRemoteJWKSet, jwtVerify } from "jose";

const REQUIRED = ["iss", "aud", "iat", "exp", "jti", "htm", "htu", "htq"];

/** base64url(SHA-256(query)), unpadded: the token's `htq`. */
export const queryHash = (query) => createHash("sha256").update(query, "latin1").digest("base64url");

/** verify(method, target, token): the claims when the token is valid for this request (method
 *  and request target as received, `/path?query`), else null. */
export function attested({ jwksUrl, issuer, audience, algorithms = ["ES256", "EdDSA"],
                           leeway = 5, rememberJti = true, maxRemembered = 100_000 }) {
  // Caches the key set for 5 minutes, and fetches it again for an unknown kid.
  const jwks = createRemoteJWKSet(new URL(jwksUrl), { cacheMaxAge: 300_000, timeoutDuration: 5000 });
  let seen = new Map(); // jti -> exp
  const firstUse = (jti, exp) => {
    const now = Date.now() / 1000;
    if (seen.size >= maxRemembered) seen = new Map([...seen].filter(([, e]) => e + leeway > now));
    if (seen.has(jti) || seen.size >= maxRemembered) return false;
    seen.set(jti, exp);
    return true;
  };
  return async (method, target, token) => {
    if (!token) return null;
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(token, jwks, {
        algorithms, issuer, audience, clockTolerance: leeway, requiredClaims: REQUIRED }));
    } catch {
      return null;
    }
    const at = target.indexOf("?");
    const [path, query] = at < 0 ? [target, ""] : [target.slice(0, at), target.slice(at + 1)];
    if (claims.htm !== method || claims.htu !== path || claims.htq !== queryHash(query)) return null;
    if (rememberJti && !firstUse(claims.jti, claims.exp)) return null;
    return claims;
  };
}

/** An express / node:http middleware `(req, res, next)`. */
export function middleware({ header = "x-portcullis-identity", ...options }) {
  const verify = attested(options);
  return (req, res, next) => {
    verify(req.method, req.url, req.headers[header]).then((claims) => {
      if (!claims) {
        res.writeHead(401, { "content-type": "application/json", "cache-control": "no-store" });
        return res.end('{"error":"not_attested"}');
      }
      req.attestation = claims;
      next();
    }, next);
  };
}
