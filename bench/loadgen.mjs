// A constant-rate (open-loop) HTTP load generator for scripts/bench, because wrk has no
// constant-rate mode and wrk2 is not in Debian. Node only, no dependencies.
// Usage: node loadgen.mjs SPEC.json   where SPEC is
//   {"url": "http://127.0.0.1:PORT/path", "rate": 2000, "duration_s": 5, "connections": 16,
//    "headers": {...}, "tokens": [...]?}          (tokens: sent in turn as "authorization: Bearer")
// Sends rate*duration_s requests, on schedule: request i is issued at start + i/rate (checked
// every millisecond), over at most `connections` keep-alive connections; a request that finds
// no free connection waits for one, and that wait counts in its latency (latency runs from the
// moment the request is issued to the end of its response body). Stops by itself: after the
// last response, or duration_s + 3 s at the latest (the rest count as errors). Prints one JSON object with the count,
// errors, non-2xx, and latency percentiles in ms.
import http from "node:http";
import { readFileSync } from "node:fs";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const url = new URL(spec.url);
if (url.hostname !== "127.0.0.1") throw new Error("loadgen: only 127.0.0.1 is allowed");
const total = Math.max(1, Math.round(spec.rate * spec.duration_s));
const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections, maxFreeSockets: spec.connections });
const baseHeaders = spec.headers ?? {};
const tokens = spec.tokens ?? null;
// With "unique": a new `v` query value on every request (never seen before in this run).
const uniquePrefix = `${process.pid}-${Date.now()}`;

const latencies = new Float64Array(total);
let issued = 0, completed = 0, errors = 0, non2xx = 0, bytes = 0;
const start = performance.now();

function finishOne() {
  completed++;
  if (completed === total) report();
}

function issue(i) {
  const headers = tokens ? { ...baseHeaders, authorization: `Bearer ${tokens[i % tokens.length]}` } : baseHeaders;
  const t0 = performance.now();
  const path = spec.unique ? `${url.pathname}?v=${uniquePrefix}-${i}` : url.pathname + url.search;
  const req = http.request({ agent, host: url.hostname, port: url.port, path, headers }, (res) => {
    if (res.statusCode < 200 || res.statusCode > 399) non2xx++;
    res.on("data", (chunk) => { bytes += chunk.length; });
    res.on("end", () => { latencies[i] = performance.now() - t0; finishOne(); });
    res.on("error", () => { latencies[i] = NaN; errors++; finishOne(); });
  });
  req.on("error", () => { latencies[i] = NaN; errors++; finishOne(); });
  req.end();
}

function tick() {
  const due = Math.min(total, Math.floor(((performance.now() - start) * spec.rate) / 1000) + 1);
  while (issued < due) issue(issued++);
  if (issued < total) setTimeout(tick, 1);
}

let reported = false;
function report() {
  if (reported) return;
  reported = true;
  const elapsed = (performance.now() - start) / 1000;
  const ok = Array.from(latencies.subarray(0, issued)).filter((v) => Number.isFinite(v) && v > 0).sort((a, b) => a - b);
  const pct = (p) => (ok.length ? ok[Math.min(ok.length - 1, Math.floor((p / 100) * ok.length))] : null);
  process.stdout.write(JSON.stringify({
    requests: total, issued, completed, errors, non2xx, bytes, elapsed_s: elapsed,
    achieved_rate: completed / elapsed, p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99),
    max_ms: ok.length ? ok[ok.length - 1] : null,
  }) + "\n");
  agent.destroy();
  process.exit(completed === total ? 0 : 1);
}

setTimeout(() => { errors += total - completed; report(); }, (spec.duration_s + 3) * 1000).unref();
tick();
