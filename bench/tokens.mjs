// Makes an RSA 2048 key pair for one bench run and RS256 tokens signed with it.
// Usage: node tokens.mjs COUNT > out.json
// Prints {"jwk": <public JWK>, "tokens": [COUNT tokens], "identity_jwk": <an EC P-256 private JWK,
// the gateway's identity signing key for the minted-identity variant>}: each token has its own jti, iss
// "https://bench.invalid/", aud "api", sub, iat now, exp in an hour. The private key is never
// written anywhere; the identity key lives only in this run's workerd binding.
import { generateKeyPairSync, sign, randomUUID } from "node:crypto";

const count = Number(process.argv[2] ?? 1);
const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...publicKey.export({ format: "jwk" }), alg: "RS256", use: "sig", kid: "bench-1" };
const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const header = b64({ alg: "RS256", typ: "JWT", kid: "bench-1" });
const now = Math.floor(Date.now() / 1000);
const tokens = [];
for (let i = 0; i < count; i++) {
  const payload = b64({ iss: "https://bench.invalid/", aud: "api", sub: `user-${i}`, scope: "orders:read",
    iat: now, exp: now + 3600, jti: randomUUID() });
  const signature = sign("sha256", Buffer.from(`${header}.${payload}`), privateKey).toString("base64url");
  tokens.push(`${header}.${payload}.${signature}`);
}
const identity = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
const { kty, crv, x, y, d } = identity;
process.stdout.write(JSON.stringify({ jwk, tokens, identity_jwk: { kty, crv, x, y, d } }));
