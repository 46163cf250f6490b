// In-memory backend for the Workers Cache API (caches.default, caches.open(name)) under a bare
// `workerd serve`. workerd has no cache of its own: without a `cacheApiOutbound` service, every
// cache call throws "No Cache was configured". With one, workerd turns each cache call into an
// HTTP request to that service:
//
//   cache.match(key)  -> GET   <key url>  (cache-control: only-if-cached)
//                        answer: the stored response with `cf-cache-status: HIT`, or any
//                        response with `cf-cache-status: MISS`
//   cache.put(key, r) -> PUT   <key url>, headers of the key request, body = r serialised as an
//                        HTTP/1.1 message (status line, headers, blank line, raw body bytes:
//                        never chunk-encoded, even when it names `Transfer-Encoding: chunked`)
//                        answer: 204 stored, 413 not stored (workerd ignores the difference)
//   cache.delete(key) -> PURGE <key url>  answer: 200 deleted, 404 not found
//
// Named caches add a `cf-cache-namespace` header. Entries live in this isolate's memory for the
// life of the workerd process (one isolate per service under `workerd serve`).
//
// What is stored, and for how long, follows the shared-cache rules the local simulator of
// `wrangler dev` applies: no `no-store`, `private` (except `private=set-cookie`, which drops
// Set-Cookie), `no-cache`, `Set-Cookie` or `Vary: *`; lifetime from s-maxage, then max-age, then
// Expires, then 10% of the Last-Modified age, less any Age. A zero lifetime is not stored.
// Matching honours If-None-Match, If-Modified-Since (304) and a single byte Range (206/416).
// Not modelled: Vary, `cf.cacheKey`, multi-part ranges, size limits.

const entries = new Map(); // key -> { status, statusText, headers: [[k, v]], body: Uint8Array, storedAt, ttlMs, age }

const CACHEABLE_BY_DEFAULT = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]);
const UNDERSTOOD = new Set([200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501]);
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

function keyOf(req) {
  return (req.headers.get("cf-cache-namespace") ?? "") + "\n" + req.url;
}

function parseCacheControl(value) {
  const cc = {};
  if (!value) return cc;
  for (const part of value.split(",")) {
    const [rawName, ...rest] = part.split("=");
    const name = rawName.trim().toLowerCase();
    if (!name) continue;
    cc[name] = rest.length ? rest.join("=").trim().replace(/^"|"$/g, "") : true;
  }
  return cc;
}

function seconds(v) {
  const n = parseInt(v, 10);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

function httpDate(v) {
  const t = v ? Date.parse(v) : NaN;
  return Number.isFinite(t) ? t : NaN;
}

// Lifetime in seconds of a response in a shared cache; 0 means "do not store".
function lifetime(status, headers, keyHeaders) {
  if (!UNDERSTOOD.has(status)) return 0;
  const cc = parseCacheControl(headers.get("cache-control"));
  if (cc["no-store"] || cc["no-cache"] || cc.private) return 0;
  if (headers.has("set-cookie")) return 0;
  if ((headers.get("vary") ?? "").trim() === "*") return 0;
  if (keyHeaders.has("authorization") && !(cc.public || cc["s-maxage"] || cc["must-revalidate"])) return 0;
  const age = seconds(headers.get("age"));
  let fresh;
  if (cc["s-maxage"] !== undefined) fresh = seconds(cc["s-maxage"]);
  else if (cc["max-age"] !== undefined) fresh = seconds(cc["max-age"]);
  else if (headers.has("expires")) {
    const expires = httpDate(headers.get("expires"));
    const date = httpDate(headers.get("date"));
    fresh = Number.isFinite(expires) ? Math.max(0, Math.floor((expires - (Number.isFinite(date) ? date : Date.now())) / 1000)) : 0;
  } else if (cc.public || CACHEABLE_BY_DEFAULT.has(status)) {
    const lastModified = httpDate(headers.get("last-modified"));
    const date = httpDate(headers.get("date"));
    const now = Number.isFinite(date) ? date : Date.now();
    fresh = Number.isFinite(lastModified) && lastModified < now ? Math.floor((now - lastModified) / 10000) : 0;
  } else {
    fresh = 0;
  }
  return Math.max(0, fresh - age);
}

function parseSerialisedResponse(bytes) {
  let end = -1;
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) { end = i; break; }
  }
  if (end < 0) throw new Error("serialised response has no blank line");
  const [statusLine, ...headerLines] = new TextDecoder().decode(bytes.subarray(0, end)).split("\r\n");
  const m = /^HTTP\/\d(?:\.\d)? (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
  const headers = new Headers();
  for (const line of headerLines) {
    const i = line.indexOf(":");
    if (i > 0) headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return { status: parseInt(m[1], 10), statusText: m[2] ?? "", headers, body: bytes.slice(end + 4) };
}

function etagValue(v) {
  const m = /^(?:W\/)?"(.*)"$/.exec(v.trim());
  return m ? m[1] : undefined;
}

function notModified(reqHeaders, headers) {
  const inm = reqHeaders.get("if-none-match");
  const etag = headers.get("etag");
  if (inm !== null && etag !== null) {
    const want = etagValue(etag);
    if (want !== undefined && (inm.trim() === "*" || inm.split(",").some((t) => etagValue(t) === want))) return true;
  }
  const ims = httpDate(reqHeaders.get("if-modified-since"));
  const lastModified = httpDate(headers.get("last-modified"));
  return Number.isFinite(ims) && Number.isFinite(lastModified) && lastModified <= ims;
}

function miss() {
  return new Response(null, { status: 504, headers: { "cf-cache-status": "MISS" } });
}

function match(req) {
  const key = keyOf(req);
  const entry = entries.get(key);
  if (!entry) return miss();
  const ageMs = Date.now() - entry.storedAt;
  if (ageMs >= entry.ttlMs) {
    entries.delete(key);
    return miss();
  }
  const headers = new Headers(entry.headers);
  headers.set("cf-cache-status", "HIT");
  headers.set("age", String(entry.age + Math.floor(ageMs / 1000)));
  if (notModified(req.headers, headers)) return new Response(null, { status: 304, headers });
  const size = entry.body.length;
  const range = /^bytes=(\d*)-(\d*)$/.exec((req.headers.get("range") ?? "").trim());
  if (range && entry.status === 200 && (range[1] !== "" || range[2] !== "")) {
    let start, last;
    if (range[1] === "") {
      start = Math.max(0, size - parseInt(range[2], 10));
      last = size - 1;
    } else {
      start = parseInt(range[1], 10);
      last = range[2] === "" ? size - 1 : Math.min(parseInt(range[2], 10), size - 1);
    }
    if (start >= size || start > last) {
      return new Response(null, { status: 416, headers: { "content-range": `bytes */${size}`, "cf-cache-status": "HIT" } });
    }
    headers.set("content-range", `bytes ${start}-${last}/${size}`);
    headers.set("content-length", String(last - start + 1));
    return new Response(entry.body.slice(start, last + 1), { status: 206, headers });
  }
  const nullBody = [101, 204, 205, 304].includes(entry.status);
  return new Response(nullBody ? null : entry.body, { status: entry.status, statusText: entry.statusText, headers });
}

async function put(req) {
  const parsed = parseSerialisedResponse(new Uint8Array(await req.arrayBuffer()));
  const headers = parsed.headers;
  const cc = parseCacheControl(headers.get("cache-control"));
  if (typeof cc.private === "string" && cc.private.toLowerCase() === "set-cookie") {
    headers.delete("set-cookie");
    const rest = (headers.get("cache-control") ?? "").split(",").filter((d) => !/^\s*private\s*=/i.test(d));
    headers.set("cache-control", rest.join(",").trim());
  }
  const ttl = lifetime(parsed.status, headers, req.headers);
  if (ttl <= 0) return new Response(null, { status: 413 });
  for (const name of HOP_BY_HOP) headers.delete(name);
  headers.set("content-length", String(parsed.body.length));
  entries.set(keyOf(req), {
    status: parsed.status,
    statusText: parsed.statusText,
    headers: [...headers],
    body: parsed.body,
    storedAt: Date.now(),
    ttlMs: ttl * 1000,
    age: seconds(headers.get("age")),
  });
  return new Response(null, { status: 204 });
}

export default {
  async fetch(req) {
    switch (req.method) {
      case "GET":
        return match(req);
      case "PUT":
        return put(req);
      case "PURGE":
        return new Response(null, { status: entries.delete(keyOf(req)) ? 200 : 404 });
      default:
        return new Response(null, { status: 405 });
    }
  },
};
