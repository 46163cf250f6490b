// Variant 4 of scripts/bench: a Hono Worker doing the gateway's job for the same routes.
// Bundled into one ES module by the esbuild that ships with wrangler (bench/bench.py does it).
//   /api/public/*   forwarded, "/api" stripped, round robin over the origins in ORIGINS
//   /api/private/*  the same behind Hono's `jwt` middleware (RS256, the public key JWT_JWK)
// Like the gateway it gives each request an id (to the origin and the client), sets
// x-forwarded-for/-proto/-host, drops the client's copies of those and the hop-by-hop headers,
// does not follow redirects, and writes one JSON log line per request.
import { Hono } from "hono";
import { jwt } from "hono/jwt";

const HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
  "proxy-connection", "proxy-authorization", "host", "x-forwarded-for", "x-forwarded-proto",
  "x-forwarded-host", "forwarded", "x-real-ip", "x-request-id"];

let origins = null;
let next = 0;

async function forward(c) {
  const started = Date.now();
  const origins_ = origins ?? (origins = c.env.ORIGINS.split(","));
  const origin = origins_[next++ % origins_.length];
  const url = new URL(c.req.url);
  const requestId = crypto.randomUUID().replaceAll("-", "");
  const headers = new Headers(c.req.raw.headers);
  for (const name of HOP_BY_HOP) headers.delete(name);
  headers.set("x-request-id", requestId);
  const ip = c.req.header("cf-connecting-ip");
  if (ip) headers.set("x-forwarded-for", ip);
  headers.set("x-forwarded-proto", url.protocol.slice(0, -1));
  headers.set("x-forwarded-host", url.host);
  const upstream = await fetch(origin + url.pathname.slice(4) + url.search, {
    method: c.req.method,
    headers,
    body: c.req.raw.body,
    redirect: "manual",
  });
  const response = new Response(upstream.body, upstream);
  response.headers.set("x-request-id", requestId);
  console.log(JSON.stringify({
    request_id: requestId, method: c.req.method, path: url.pathname, route: c.req.routePath,
    status: upstream.status, duration_ms: Date.now() - started,
  }));
  return response;
}

let jwtMiddleware = null;

const app = new Hono();
app.use("/api/private/*", (c, next) => {
  jwtMiddleware ??= jwt({ secret: JSON.parse(c.env.JWT_JWK), alg: "RS256" });
  return jwtMiddleware(c, next);
});
app.all("/api/public/*", forward);
app.all("/api/private/*", forward);

export default app;
