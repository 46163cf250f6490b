// Variant `js-gateway` of scripts/bench: the gateway's public route written by hand in plain
// JavaScript, no framework, no Wasm. It is the floor for this job on this runtime: what the same
// work costs when nothing crosses into Wasm.
//
// It reads the gateway's own config (the GATEWAY_CONFIG text binding bench/bench.py gives the
// gateway too) once per isolate, and takes from it the route named "public" (its path, a
// `{*rest}` catch-all, and its `strip_prefix`), that route's origin pool (servers, weights,
// `timeout_ms`, `deadline_ms`, retry and ejection, with the gateway's defaults) and the header
// names of every policy's `forward_claims`. Per request it does what the gateway does on that
// route (README, "The life of a request"), with the gateway's default settings:
//   * a request id: 32 hex digits, a counter mixed with a per-isolate seed drawn once from
//     crypto.getRandomValues (the gateway's generator, bit for bit);
//   * the one reading of the request: header names with `_` dropped, the URL's and headers'
//     sizes and the method checked, the path normalized (decoding unreserved escapes, refusing
//     encoded slashes, backslashes and NUL, merging slashes, resolving dot segments), the client
//     address from CF-Connecting-IP when it is an IP address (an IPv4-mapped one read as IPv4);
//   * the route matched, `strip_prefix` applied;
//   * the request header plan: hop-by-hop headers (and `proxy-*`), headers named in
//     Connection, `host`, client copies of the gateway-owned headers (`x-forwarded-*`,
//     `forwarded`, `x-real-ip`, `x-request-id`) and of the claim headers dropped; `x-request-id`,
//     `x-forwarded-for` (the client address only), `x-forwarded-proto` and `x-forwarded-host` set;
//   * smooth weighted round robin over the servers, healthy ones first, with the gateway's
//     retries (on connect failures and timeouts, idempotent methods, a replayable body) and
//     ejection; each attempt under an AbortController and a timer until the response headers
//     arrive, redirects not followed;
//   * the response header plan: hop-by-hop headers, headers named in Connection, `server`,
//     `x-powered-by`, `via` and the origin's `x-request-id` dropped; address hiding (Location
//     and Content-Location, the URL of Refresh and the targets of Link naming a server rewritten
//     to the public origin, with the route's stripped prefix put back; every value scanned
//     for a server's address, as written and percent-decoded, and dropped on a hit); the
//     default security headers added where missing; `x-request-id` set;
//   * one console.log JSON line with the gateway's fields.
// Refusals are the gateway's JSON error body with its codes and statuses. Other routes than
// "public" are answered 404, as the gateway answers a path no route has. URL-bearing values are
// read with the runtime's URL parser, which (as a browser does) reads full-width dots in a host
// as dots, where the gateway's refuses such a host and drops the header.

const HOP_BY_HOP = new Set(["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"]);
const GATEWAY_OWNED = new Set(["forwarded", "x-real-ip", "x-request-id"]);
const REVEALING = new Set(["server", "x-powered-by", "via"]);
const SECURITY_HEADERS = [
  ["strict-transport-security", "max-age=31536000; includeSubDomains"],
  ["x-content-type-options", "nosniff"],
  ["referrer-policy", "strict-origin-when-cross-origin"],
];
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
const MAX_URL_BYTES = 8 * 1024;
const MAX_HEADER_BYTES = 32 * 1024;
const SUBREQUEST_LIMIT = 50;
const NULL_BODY = new Set([101, 204, 205, 304]);

const isHopByHop = (n) => HOP_BY_HOP.has(n) || n.startsWith("proxy-");
const isGatewayOwned = (n) => GATEWAY_OWNED.has(n) || n.startsWith("x-forwarded-");
const fold = (n) => (n.includes("_") ? n.replaceAll("_", "-") : n);

// ---------------------------------------------------------------------------------------------
// Request ids: splitmix64 of a counter and a seed, as the gateway makes them.

const MASK64 = (1n << 64n) - 1n;

function splitmix64(z) {
  z = (z + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

class RequestIds {
  constructor() {
    const seed = new Uint8Array(16);
    crypto.getRandomValues(seed);
    const view = new DataView(seed.buffer);
    this.seed = view.getBigUint64(0, true);
    this.counter = view.getBigUint64(8, true);
    this.rotated = ((this.seed << 32n) | (this.seed >> 32n)) & MASK64;
  }

  next() {
    this.counter = (this.counter + 1n) & MASK64;
    const low = splitmix64(this.counter ^ this.seed);
    const high = splitmix64(low ^ this.rotated);
    return high.toString(16).padStart(16, "0") + low.toString(16).padStart(16, "0");
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses: IPv4 as [a, b, c, d] folded into one number, IPv6 as 8 groups.

/** Dotted-decimal IPv4, four parts, no leading zeros: the number, or null. */
function parseIpv4(text) {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

/** An IPv6 address (any compression, a dotted IPv4 tail allowed, no zone): 8 groups, or null. */
function parseIpv6(text) {
  if (text.length < 2 || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  // The groups of one side of "::"; a dotted IPv4 tail only at the very end of the address.
  const groupsOf = (s, mayEndInIpv4) => {
    if (s === "") return [];
    const out = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (mayEndInIpv4 && i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (v4 === null) return null;
        out.push(Math.floor(v4 / 65536), v4 % 65536);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groupsOf(halves[0], halves.length === 1);
  if (head === null) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const tail = groupsOf(halves[1], true);
  if (tail === null || head.length + tail.length > 7) return null;
  return [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
}

/** The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), or null. */
function embeddedIpv4(g) {
  const low = g[6] * 65536 + g[7];
  const zeros5 = g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0;
  if (zeros5 && g[5] === 0xffff) return low;
  if (zeros5 && g[5] === 0) return g[6] === 0 && (g[7] === 0 || g[7] === 1) ? null : low;
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0) return low;
  if (g[0] === 0x2002) return g[1] * 65536 + g[2];
  return null;
}

/** An IP literal, brackets allowed: {v4} or {v6}, or null. */
function parseIp(text) {
  const inner = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = parseIpv4(inner);
  if (v4 !== null) return { v4 };
  const v6 = parseIpv6(inner);
  return v6 === null ? null : { v6 };
}

const asIpv4 = (ip) => (ip.v4 !== undefined ? ip.v4 : embeddedIpv4(ip.v6));

function sameAddress(a, b) {
  if (a.v4 !== undefined && b.v4 !== undefined) return a.v4 === b.v4;
  if (a.v6 !== undefined && b.v6 !== undefined && a.v6.every((x, i) => x === b.v6[i])) return true;
  const x = asIpv4(a);
  return x !== null && x === asIpv4(b);
}

function formatIpv4(n) {
  return `${Math.floor(n / 16777216)}.${Math.floor(n / 65536) % 256}.${Math.floor(n / 256) % 256}.${n % 256}`;
}

/** RFC 5952 text: the longest run (two groups or more) of zero groups compressed. */
function formatIpv6(g) {
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (a) => a.map((x) => x.toString(16)).join(":");
  if (bestLen < 2) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** CF-Connecting-IP as the gateway keys and forwards it: an IPv4-mapped address as IPv4. */
function clientAddress(value) {
  if (value === null) return null;
  const text = value.trim();
  const v4 = parseIpv4(text);
  if (v4 !== null) return formatIpv4(v4);
  const v6 = parseIpv6(text);
  if (v6 === null) return null;
  const mapped = v6.slice(0, 5).every((x) => x === 0) && v6[5] === 0xffff;
  return mapped ? formatIpv4(v6[6] * 65536 + v6[7]) : formatIpv6(v6);
}

/** An IPv4 host as a browser's URL parser reads it (1 to 4 parts, decimal, octal, hex). */
function parseUrlIpv4(text) {
  if (text.endsWith(".")) text = text.slice(0, -1);
  if (text === "") return null;
  const parts = text.split(".");
  if (parts.length > 4) return null;
  const nums = [];
  for (const part of parts) {
    let digits = part, radix = 10;
    if (part.startsWith("0x") || part.startsWith("0X")) { digits = part.slice(2); radix = 16; }
    else if (part.length > 1 && part.startsWith("0")) { digits = part.slice(1); radix = 8; }
    if (digits === "") {
      if (radix !== 16) return null;
      nums.push(0);
      continue;
    }
    const ok = radix === 16 ? /^[0-9a-fA-F]+$/ : radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
    if (digits.length > 32 || !ok.test(digits)) return null;
    const n = parseInt(digits, radix);
    if (n > 0xffffffff) return null;
    nums.push(n);
  }
  const last = nums[nums.length - 1];
  const init = nums.slice(0, -1);
  if (init.some((n) => n > 255) || last >= 2 ** (8 * (5 - nums.length))) return null;
  return init.reduce((acc, n, i) => acc + n * 2 ** (8 * (3 - i)), 0) + last;
}

// ---------------------------------------------------------------------------------------------
// Path normalization, as the gateway's.

const PATH_ERRORS = {
  not_absolute: "the path must start with '/'",
  encoded_slash: "the path contains an encoded slash (%2F)",
  backslash: "the path contains a backslash",
  nul: "the path contains an encoded NUL (%00)",
  invalid: "the path contains invalid percent-encoding",
};
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const NEEDS_WORK = /[%\\\0]|\/\/|\/\.(?:\/|\.|$)|\/\.$/;

/** {path} or {error}. */
function normalizePath(raw) {
  if (!raw.startsWith("/")) return { error: "not_absolute" };
  if (!NEEDS_WORK.test(raw)) return { path: raw };
  let decoded = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === "%") {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) return { error: "invalid" };
      const v = parseInt(hex, 16);
      if (v === 0) return { error: "nul" };
      if (v === 0x2f) return { error: "encoded_slash" };
      if (v === 0x5c) return { error: "backslash" };
      const ch = String.fromCharCode(v);
      decoded += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
      i += 2;
    } else if (c === "\\") {
      return { error: "backslash" };
    } else if (c === "\0") {
      return { error: "nul" };
    } else {
      decoded += c;
    }
  }
  const segments = [];
  let trailing = false;
  const parts = decoded.slice(1).split("/");
  for (let i = 0; i < parts.length; i++) {
    const s = parts[i];
    const last = i === parts.length - 1;
    if (s === "" || s === ".") trailing = last;
    else if (s === "..") { segments.pop(); trailing = last; }
    else { segments.push(s); trailing = false; }
  }
  let out = segments.length ? "/" + segments.join("/") : "";
  if (out === "" || trailing) out += "/";
  return { path: out };
}

// ---------------------------------------------------------------------------------------------
// The config: the public route and its pool, read once per isolate.

function serverOf(entry) {
  const url = new URL(entry.url);
  const basePath = url.pathname.replace(/\/+$/, "");
  const host = url.hostname.toLowerCase().replace(/\.+$/, "");
  const port = url.port ? Number(url.port) : defaultPort(url.protocol);
  return {
    base: `${url.protocol}//${url.host}${basePath}`, host, ip: hostOf(host).ip ?? null, port, basePath,
    weight: entry.weight ?? 1, backup: entry.backup ?? false,
    // What the isolate remembers about the server.
    failures: 0, ejectedUntil: 0, ejectedAt: 0, ejections: 0, current: 0,
  };
}

function loadConfig(text) {
  const cfg = JSON.parse(text);
  const route = cfg.routes.find((r) => r.name === "public");
  const m = /^(.*\/)\{\*[A-Za-z_][A-Za-z0-9_]*\}$/.exec(route.path);
  if (!m) throw new Error(`js-gateway: route "public" must end in a {*name} catch-all: ${route.path}`);
  const origin = cfg.origins[route.origin];
  const timeoutMs = origin.timeout_ms ?? 15000;
  const retry = origin.retry ?? {};
  const eject = origin.eject ?? {};
  const claimHeaders = [];
  for (const policy of Object.values(cfg.auth ?? {})) {
    for (const header of Object.values(policy.forward_claims ?? {})) claimHeaders.push(fold(header.toLowerCase()));
  }
  return {
    routeName: route.name,
    prefix: m[1],
    stripPrefix: route.rewrite?.strip_prefix ?? null,
    servers: origin.servers.map(serverOf),
    timeoutMs,
    deadlineMs: origin.deadline_ms ?? Math.max(30000, timeoutMs),
    attempts: retry.attempts ?? 3,
    retryOnConnect: retry.on === undefined || retry.on.includes("connect"),
    retryOnTimeout: retry.on === undefined || retry.on.includes("timeout"),
    retryStatuses: new Set((retry.on ?? []).filter((x) => typeof x === "number")),
    nonIdempotent: retry.non_idempotent ?? false,
    replayBodyBytes: retry.replay_body_bytes ?? 1024 * 1024,
    ejectAfter: eject.after_failures ?? 3,
    ejectForMs: eject.for_ms ?? 30000,
    ejectMaxForMs: eject.max_for_ms ?? 300000,
    claimHeaders,
  };
}

let isolate = null;

// ---------------------------------------------------------------------------------------------
// Origin selection: healthy primaries (smooth weighted round robin first), healthy backups,
// then the ejected, least recently ejected first.

function candidates(cfg, now) {
  const order = [];
  for (const backup of [false, true]) {
    const group = [];
    for (let i = 0; i < cfg.servers.length; i++) {
      const s = cfg.servers[i];
      if (s.backup === backup && !(now < s.ejectedUntil)) group.push(i);
    }
    if (group.length === 0) continue;
    let total = 0, best = group[0];
    for (const i of group) {
      const s = cfg.servers[i];
      s.current += s.weight;
      total += s.weight;
      if (s.current > cfg.servers[best].current) best = i;
    }
    cfg.servers[best].current -= total;
    const at = group.indexOf(best);
    order.push(...group.slice(at), ...group.slice(0, at));
  }
  const ejected = [];
  for (let i = 0; i < cfg.servers.length; i++) if (now < cfg.servers[i].ejectedUntil) ejected.push(i);
  ejected.sort((a, b) => cfg.servers[a].ejectedAt - cfg.servers[b].ejectedAt);
  order.push(...ejected);
  return order;
}

function recordFailure(cfg, s, now) {
  s.failures++;
  if (cfg.ejectAfter === 0 || s.failures < cfg.ejectAfter) return undefined;
  const duration = Math.min(cfg.ejectForMs * 2 ** Math.min(s.ejections, 16), cfg.ejectMaxForMs);
  s.failures = 0;
  s.ejections++;
  s.ejectedAt = now;
  s.ejectedUntil = now + duration;
  return duration;
}

// ---------------------------------------------------------------------------------------------
// Address hiding: no response header names a server's address.

/** Characters of a host, a host:port or a bracketed IP literal. */
function isTokenChar(c) {
  return (c >= 48 && c <= 58) /* 0-9 : */ || (c >= 65 && c <= 91) /* A-Z [ */ || (c >= 97 && c <= 122)
    || c === 46 || c === 45 || c === 95 || c === 93; // . - _ ]
}

class Hiding {
  constructor(servers, publicOrigin, stripPrefix) {
    this.servers = servers;
    this.publicOrigin = publicOrigin;
    this.stripPrefix = stripPrefix;
    this.base = undefined; // the public origin as a URL, parsed on first use
  }

  publicBase() {
    if (this.base === undefined) {
      try {
        const url = new URL(this.publicOrigin);
        const host = url.hostname.replace(/\.+$/, "");
        this.base = { url, host: hostOf(host), port: url.port ? Number(url.port) : defaultPort(url.protocol) };
      } catch {
        this.base = null;
      }
    }
    return this.base;
  }

  isPublic(host, port) {
    const base = this.publicBase();
    if (!base) return false;
    const p = port ?? defaultPort(base.url.protocol) ?? base.port;
    return sameHost(base.host, host) && p === base.port;
  }

  hit(host, port) {
    return this.servers.some((s) => isServer(host, s)) && !this.isPublic(host, port);
  }

  /** "keep", "drop", or the rewritten value. */
  header(name, value) {
    let planned = "keep";
    if (name === "location" || name === "content-location") planned = this.url(value);
    else if (name === "refresh") {
      const range = refreshUrl(value);
      if (range !== null) planned = this.splice(value, [range]);
    } else if (name === "link") planned = this.splice(value, linkTargets(value));
    if (planned === "drop") return "drop";
    return this.namesServer(planned === "keep" ? value : planned) ? "drop" : planned;
  }

  /** `value` with the URL at each [start, end) hidden: "drop" if one must be, the rewritten
   * value if one is, else "keep". */
  splice(value, ranges) {
    let out = null, copied = 0;
    for (const [start, end] of ranges) {
      const r = this.url(value.slice(start, end));
      if (r === "drop") return "drop";
      if (r === "keep") continue;
      out = (out ?? "") + value.slice(copied, start) + r;
      copied = end;
    }
    return out === null ? "keep" : out + value.slice(copied);
  }

  url(text) {
    const base = this.publicBase();
    if (!base) return "drop";
    let url;
    try {
      url = new URL(text, base.url);
    } catch {
      return "drop";
    }
    if (!SPECIAL.has(url.protocol) || url.hostname === "") return "keep";
    const host = hostOf(url.hostname.replace(/\.+$/, ""));
    const port = url.port ? Number(url.port) : defaultPort(url.protocol);
    if (this.isPublic(host, port)) return "keep";
    let best = null, rank = null;
    for (const s of this.servers) {
      if (!isServer(host, s)) continue;
      const under = underBase(url.pathname, s.basePath) === null ? 0 : s.basePath.length + 1;
      const r = [port === s.port ? 1 : 0, under];
      if (best === null || r[0] > rank[0] || (r[0] === rank[0] && r[1] > rank[1])) { best = s; rank = r; }
    }
    if (best === null) return "keep";
    if (url.protocol !== "http:" && url.protocol !== "https:") return "drop";
    const path = underBase(url.pathname, best.basePath) ?? url.pathname;
    let out = this.publicOrigin;
    if (this.stripPrefix !== null) out += this.stripPrefix + (path === "/" ? "" : path);
    else out += path;
    return out + url.search + url.hash;
  }

  namesServer(text) {
    if (this.scan(text)) return true;
    let decoded = text;
    for (let i = 0; i < 3; i++) {
      const next = percentDecoded(decoded);
      if (next === null) return false;
      if (this.scan(next)) return true;
      decoded = next;
    }
    return false;
  }

  scan(text) {
    let i = 0;
    while (i < text.length) {
      if (!isTokenChar(text.charCodeAt(i))) { i++; continue; }
      const start = i;
      while (i < text.length && isTokenChar(text.charCodeAt(i))) i++;
      const before = text.slice(Math.max(0, start - 2), start);
      const authority = text[start - 1] === "@" || (before.length === 2 && /^[/\\]{2}$/.test(before));
      if (this.tokenNamesServer(text.slice(start, i), authority)) return true;
    }
    return false;
  }

  tokenNamesServer(token, authority) {
    let rest = token;
    for (let open = rest.indexOf("["); open >= 0; open = rest.indexOf("[")) {
      const after = rest.slice(open + 1);
      const close = after.indexOf("]");
      if (close < 0) break;
      const ip = parseIp(after.slice(0, close));
      if (ip && this.hit({ ip }, portAfter(after.slice(close + 1)))) return true;
      rest = after.slice(close + 1);
    }
    const firstColon = token.indexOf(":");
    if (firstColon >= 0 && token.indexOf(":", firstColon + 1) >= 0) {
      const whole = parseIpv6(token);
      const cut = token.lastIndexOf(":");
      const head = parseIpv6(token.slice(0, cut));
      const port = head && portAfterColon(token.slice(cut + 1));
      if (whole || (head && port !== null)) {
        return (whole !== null && this.hit({ ip: { v6: whole } }, null))
          || (head !== null && port !== null && this.hit({ ip: { v6: head } }, port));
      }
    }
    let start = 0;
    while (start <= token.length) {
      if (token[start] === "[") {
        const close = token.indexOf("]", start);
        start = close < 0 ? start + 1 : close + 1;
        continue;
      }
      let end = start;
      while (end < token.length && token[end] !== ":" && token[end] !== "[" && token[end] !== "]") end++;
      const port = end < token.length && token[end] === ":" ? portAfter(token.slice(end)) : null;
      const piece = token.slice(start, end).replace(/^\.+|\.+$/g, "");
      const urlLike = port !== null || (start === 0 && authority);
      if (piece !== "" && this.pieceNamesServer(piece, port, urlLike)) return true;
      start = token[end] === "[" ? end : end + 1;
    }
    return false;
  }

  pieceNamesServer(piece, port, urlLike) {
    const dots = piece.split(".").length - 1;
    if (/^[0-9a-fA-FxX.]+$/.test(piece) && (dots === 3 || urlLike)) {
      const v4 = parseUrlIpv4(piece);
      if (v4 !== null) return this.hit({ ip: { v4 } }, port);
    }
    return (dots > 0 || urlLike) && this.hit({ name: piece }, port);
  }
}

const isHtmlSpace = (c) => c === " " || c === "\t" || c === "\n" || c === "\f" || c === "\r";

/** The [start, end) of the URL in a Refresh value, as HTML's declarative refresh reads it. */
function refreshUrl(v) {
  const skip = (i) => { while (i < v.length && isHtmlSpace(v[i])) i++; return i; };
  const digit = (c) => c >= "0" && c <= "9";
  let i = skip(0);
  const digits = i;
  while (i < v.length && digit(v[i])) i++;
  if (i === digits && v[i] !== ".") return null;
  while (i < v.length && (digit(v[i]) || v[i] === ".")) i++;
  if (i === v.length || !(v[i] === ";" || v[i] === "," || isHtmlSpace(v[i]))) return null;
  i = skip(i);
  if (v[i] === ";" || v[i] === ",") i++;
  i = skip(i);
  if (i === v.length) return null;
  const whole = [i, v.length];
  if (v[i] === "U" || v[i] === "u") {
    if (!/^[uU][rR][lL]/.test(v.slice(i, i + 3))) return whole;
    i = skip(i + 3);
    if (v[i] !== "=") return whole;
    i = skip(i + 1);
  }
  if (v[i] === "'" || v[i] === '"') {
    const close = v.indexOf(v[i], i + 1);
    return [i + 1, close < 0 ? v.length : close];
  }
  return [i, v.length];
}

/** The [start, end) of every <...> target of a Link value, outside quoted parameters. */
function linkTargets(v) {
  const out = [];
  for (let i = 0; i < v.length;) {
    if (v[i] === '"') {
      i++;
      while (i < v.length && v[i] !== '"') i += v[i] === "\\" ? 2 : 1;
      i++;
    } else if (v[i] === "<") {
      const end = v.indexOf(">", i + 1);
      if (end < 0) break;
      out.push([i + 1, end]);
      i = end + 1;
    } else {
      i++;
    }
  }
  return out;
}

const SPECIAL = new Set(["http:", "https:", "ws:", "wss:", "ftp:", "file:"]);
const DEFAULT_PORTS = { "http:": 80, "https:": 443, "ws:": 80, "wss:": 443, "ftp:": 21 };
const defaultPort = (protocol) => DEFAULT_PORTS[protocol] ?? null;

/** A host as the URL parser gives it (which has already read every IPv4 spelling as dotted
 * decimal): an address, or a name. */
function hostOf(hostname) {
  if (hostname.startsWith("[")) {
    const v6 = parseIpv6(hostname.slice(1, -1));
    return v6 ? { ip: { v6 } } : { name: hostname };
  }
  const v4 = parseIpv4(hostname);
  return v4 !== null ? { ip: { v4 } } : { name: hostname };
}

function sameHost(a, b) {
  if (a.ip && b.ip) return sameAddress(a.ip, b.ip);
  if (a.name !== undefined && b.name !== undefined) return a.name !== "" && a.name.toLowerCase() === b.name.toLowerCase();
  return false;
}

const isServer = (host, s) => sameHost(host, s.ip ? { ip: s.ip } : { name: s.host });

function underBase(path, base) {
  if (base === "") return path;
  if (!path.startsWith(base)) return null;
  const rest = path.slice(base.length);
  return rest === "" ? "/" : rest.startsWith("/") ? rest : null;
}

function portAfterColon(text) {
  const m = /^[0-9]+/.exec(text);
  if (!m) return null;
  const n = Number(m[0]);
  return n <= 65535 ? n : null;
}

const portAfter = (text) => (text.startsWith(":") ? portAfterColon(text.slice(1)) : null);

const utf8 = new TextDecoder();

function percentDecoded(text) {
  if (!text.includes("%")) return null;
  const bytes = [];
  let changed = false;
  for (let i = 0; i < text.length; i++) {
    const hex = text.slice(i + 1, i + 3);
    if (text[i] === "%" && i + 2 < text.length && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
      changed = true;
    } else {
      const c = text.charCodeAt(i);
      if (c < 0x80) bytes.push(c);
      else bytes.push(...new TextEncoder().encode(text[i]));
    }
  }
  return changed ? utf8.decode(new Uint8Array(bytes)) : null;
}

// ---------------------------------------------------------------------------------------------
// Errors and the log line.

const ERRORS = {
  bad_request: [400, "malformed request: "],
  no_route: [404, "no route matches this request"],
  uri_too_long: [414, "the request URL is too long"],
  headers_too_large: [431, "the request headers are too large"],
  method_not_allowed: [405, "this path accepts only: "],
  origin_unavailable: [502, "the service behind this route is unavailable"],
  origin_timeout: [504, "the service behind this route did not answer in time"],
};

function errorResponse(code, requestId, detail = "") {
  const [status, message] = ERRORS[code];
  const headers = [["content-type", "application/json"], ["cache-control", "no-store"], ["x-request-id", requestId]];
  if (code === "method_not_allowed") headers.push(["allow", [...METHODS].join(", ")]);
  const body = JSON.stringify({ error: code, message: message + detail, request_id: requestId });
  return new Response(body, { status, headers });
}

/** The gateway's log line: its fields in its order, absent ones left out (`route` is null). */
function logLine(requestId, method, path, route, status, error, detail, attempts, durationMs) {
  const line = { request_id: requestId, method };
  if (path !== null) line.path = path;
  line.route = route;
  line.status = status;
  if (error !== null) line.error = error;
  if (detail !== null) line.detail = detail;
  line.attempts = attempts;
  line.duration_ms = durationMs;
  console.log(JSON.stringify(line));
}

// ---------------------------------------------------------------------------------------------
// One request.

function splitUrl(url) {
  const sep = url.indexOf("://");
  if (sep < 0) return null;
  const scheme = url.slice(0, sep).toLowerCase();
  let rest = url.slice(sep + 3);
  let end = rest.search(/[/?#]/);
  if (end < 0) end = rest.length;
  let authority = rest.slice(0, end);
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = authority.slice(at + 1);
  rest = rest.slice(end);
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? null : rest.slice(q + 1);
  return { scheme, authority, path: path === "" ? "/" : path, query };
}

async function attempt(url, init, timeoutMs) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const response = await fetch(url, { ...init, signal: controller.signal });
    return { response };
  } catch (e) {
    return { failure: timedOut ? "timeout" : "connect", detail: timedOut ? `no response headers within ${timeoutMs} ms` : String(e?.message ?? e) };
  } finally {
    clearTimeout(timer);
  }
}

async function forward(cfg, method, url, headers, request) {
  const started = Date.now();
  const order = candidates(cfg, started);
  let body = request.body;
  const length = headers.find(([n]) => n === "content-length")?.[1];
  const mayRetry = cfg.attempts > 1 && (cfg.nonIdempotent || IDEMPOTENT.has(method));
  let replayable = body === null;
  if (body !== null && mayRetry && order.length > 1 && /^\s*[0-9]+\s*$/.test(length ?? "")
      && Number(length) <= cfg.replayBodyBytes) {
    body = await request.arrayBuffer();
    replayable = true;
  }
  const attempts = !mayRetry || !replayable ? Math.min(1, SUBREQUEST_LIMIT) : Math.min(cfg.attempts, order.length, SUBREQUEST_LIMIT);
  const init = { method, headers: new Headers(headers), body, redirect: "manual" };
  const deadline = started + cfg.deadlineMs;
  const log = [];
  let last = { failure: "connect", detail: "no server was tried" };
  for (let n = 0; n < attempts; n++) {
    const s = cfg.servers[order[n]];
    const now = Date.now();
    if (now >= deadline) {
      last = { failure: "timeout", detail: `deadline of ${cfg.deadlineMs} ms passed` };
      break;
    }
    const result = await attempt(url(s), init, Math.min(cfg.timeoutMs, deadline - now));
    const finished = Date.now();
    const isLast = n + 1 === attempts;
    const statusFailed = result.response !== undefined && cfg.retryStatuses.has(result.response.status);
    const failed = result.response === undefined || statusFailed;
    let ejectedFor;
    if (failed) ejectedFor = recordFailure(cfg, s, finished);
    else { s.failures = 0; s.ejections = 0; s.ejectedUntil = 0; }
    const entry = {
      server: order[n], address: s.base,
      outcome: result.response !== undefined ? "response" : result.failure === "timeout" ? "timeout" : "connect_failed",
    };
    if (result.response !== undefined) entry.status = result.response.status;
    entry.duration_ms = Math.max(0, finished - now);
    if (ejectedFor !== undefined) entry.ejected_for_ms = ejectedFor;
    log.push(entry);
    if (result.response !== undefined) {
      if (!(statusFailed && !isLast)) return { response: result.response, log };
      result.response.body?.cancel();
      continue;
    }
    last = result;
    const retries = result.failure === "timeout" ? cfg.retryOnTimeout : cfg.retryOnConnect;
    if (isLast || !retries) break;
  }
  return { error: last.failure === "timeout" ? "origin_timeout" : "origin_unavailable", detail: last.detail, log };
}

function responseHeaders(cfg, upstream, hiding, requestId) {
  const list = [];
  let named = null;
  for (const [name, value] of upstream.headers) {
    if (name === "connection") {
      named ??= new Set();
      for (const t of value.split(",")) {
        const token = t.trim().toLowerCase();
        if (token) named.add(token);
      }
    }
    list.push([name, value]);
  }
  const out = [];
  for (const [name, value] of list) {
    if (isHopByHop(name) || REVEALING.has(name) || name === "x-request-id" || (named !== null && named.has(name))) continue;
    const hidden = hiding.header(name, value);
    if (hidden === "keep") out.push([name, value]);
    else if (hidden !== "drop") out.push([name, hidden]);
  }
  out.push(["x-request-id", requestId]);
  for (const [name, value] of SECURITY_HEADERS) {
    if (!out.some(([n]) => n === name)) out.push([name, value]);
  }
  return out;
}

async function handle(request, env) {
  const started = Date.now();
  isolate ??= { cfg: loadConfig(env.GATEWAY_CONFIG), ids: new RequestIds() };
  const cfg = isolate.cfg;
  const requestId = isolate.ids.next();
  const method = request.method;
  const refuse = (code, path = null, detail = "") => {
    logLine(requestId, method, path, null, ERRORS[code][0], code, null, [], Date.now() - started);
    return errorResponse(code, requestId, detail);
  };

  // The one reading of the request.
  const url = request.url;
  const parts = splitUrl(url);
  if (parts === null) return refuse("bad_request", null, PATH_ERRORS.not_absolute);
  const incoming = [];
  let headerBytes = 0;
  let connectionNamed = null;
  let clientIp = null;
  for (const [name, value] of request.headers) {
    headerBytes += name.length + value.length + 4;
    if (name.includes("_")) continue; // settings.underscores_in_headers: "drop"
    if (name === "connection") {
      connectionNamed ??= [];
      for (const t of value.split(",")) {
        const token = t.trim().toLowerCase();
        if (token) connectionNamed.push(fold(token));
      }
    } else if (name === "cf-connecting-ip" && clientIp === null) {
      clientIp = clientAddress(value);
    }
    incoming.push([name, value]);
  }
  if (url.length > MAX_URL_BYTES) return refuse("uri_too_long");
  if (headerBytes > MAX_HEADER_BYTES) return refuse("headers_too_large");
  if (!METHODS.has(method)) return refuse("method_not_allowed", null, [...METHODS].join(", "));
  const normalized = normalizePath(parts.path);
  if (normalized.error) return refuse("bad_request", null, PATH_ERRORS[normalized.error]);
  const path = normalized.path;

  // The route and its rewrite.
  if (!(path.startsWith(cfg.prefix) && path.length > cfg.prefix.length)) return refuse("no_route", path);
  let forwardPath = path;
  if (cfg.stripPrefix !== null && path.startsWith(cfg.stripPrefix)) {
    const rest = path.slice(cfg.stripPrefix.length);
    forwardPath = rest === "" ? "/" : rest.startsWith("/") ? rest : path;
  }

  // The request header plan.
  const headers = [];
  for (const pair of incoming) {
    const name = pair[0];
    if (isHopByHop(name) || isGatewayOwned(name) || name === "host") continue;
    if (connectionNamed !== null && connectionNamed.includes(name)) continue;
    if (cfg.claimHeaders.includes(name)) continue;
    headers.push(pair);
  }
  headers.push(["x-request-id", requestId]);
  if (clientIp !== null) headers.push(["x-forwarded-for", clientIp]);
  headers.push(["x-forwarded-proto", parts.scheme]);
  headers.push(["x-forwarded-host", parts.authority]);

  const tail = forwardPath + (parts.query === null ? "" : `?${parts.query}`);
  const upstreamUrl = (s) => s.base + tail;
  const result = await forward(cfg, method, upstreamUrl, headers, request);
  let response;
  if (result.response === undefined) {
    response = errorResponse(result.error, requestId);
  } else {
    const upstream = result.response;
    const hiding = new Hiding(cfg.servers, `${parts.scheme}://${parts.authority}`, cfg.stripPrefix);
    const status = upstream.status;
    response = new Response(NULL_BODY.has(status) ? null : upstream.body, {
      status, headers: responseHeaders(cfg, upstream, hiding, requestId),
    });
  }
  logLine(requestId, method, path, cfg.routeName, response.status, result.error ?? null, result.detail ?? null,
    result.log, Date.now() - started);
  return response;
}

export default { fetch: handle };
