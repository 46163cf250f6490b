// The Worker's entry: the driver of the gateway's core. It performs each step the core asks for
// with the runtime (fetch, timers, the Cache API, the rate limiter, the log) and hands back what
// happened, calling the core's synchronous exports once per step with compact text (the step
// format is documented in worker/src/flow.rs). It decides nothing: which step comes next, every
// header, the retries, the cache's use and the log line are the core's. Bodies stay here, in
// JavaScript; they never enter Wasm.

import * as core from "./glue/index.js";

/// `GATEWAY_CONFIG` as text (wrangler's `[vars]` may give a table as an object); undefined for
/// the routes compiled into the Worker.
function configText(env) {
  const value = env.GATEWAY_CONFIG;
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/// A header list packed for the core: each name and value followed by a newline (neither can
/// hold one).
function pack(headers) {
  let text = "";
  for (const [name, value] of headers) text += name + "\n" + value + "\n";
  return text;
}

/// The header list at `f[i]` (its count, then names and values) and the index after it.
function headersAt(f, i) {
  const headers = new Headers();
  const end = i + 1 + 2 * Number(f[i]);
  for (let j = i + 1; j < end; j += 2) headers.append(f[j], f[j + 1]);
  return [headers, end];
}

function message(e) {
  return String(e?.message ?? e);
}

/// A Worker secret (or, in development, a var) by name; empty when unset.
function secret(env, name) {
  const value = env[name];
  return typeof value === "string" ? value : "";
}

/// The rate limiter's answer for the core: [outcome, detail] (see `limited` in flow.rs).
async function rateLimit(env, binding, key) {
  const limiter = env[binding];
  if (limiter === undefined || limiter === null || typeof limiter.limit !== "function") return [3, ""];
  try {
    const { success } = await limiter.limit({ key });
    return [success ? 0 : 1, ""];
  } catch (e) {
    return [2, message(e)];
  }
}

function cacheMatch(key) {
  return caches.default.match(key).then((r) => r ?? null, () => null);
}

function cachePut(key, response) {
  return caches.default.put(key, response).catch((e) => {
    console.error(JSON.stringify({ cache_put_failed: message(e) }));
  });
}

/// Passes a body through a byte counter that, past `max` bytes, aborts the subrequest through
/// `abort` (so the origin never gets a complete request) and errors the stream.
function countedBody(stream, max, abort) {
  const state = { exceeded: false };
  let seen = 0;
  const counter = new TransformStream({
    transform(chunk, controller) {
      seen += chunk.byteLength;
      if (seen > max) {
        state.exceeded = true;
        abort.abort();
        controller.error(new Error("request body over the route limit"));
        return;
      }
      controller.enqueue(chunk);
    },
  });
  return { body: stream.pipeThrough(counter), state };
}

/// Step `F`: the attempts the core plans, each under its timeout until the response headers
/// arrive (then the body streams without one). Returns the response the core said to serve,
/// after handing its head to the core; null when the attempts gave up (the core knows why).
async function forward(flow, f, request, env) {
  const plan = f[1];
  const method = f[3];
  const [headers] = headersAt(f, 4);
  let body = null;
  let counted = null;
  if (plan === "S") body = request.body;
  else if (plan === "C") {
    const abort = new AbortController();
    const limited = countedBody(request.body, Number(f[2]), abort);
    body = limited.body;
    counted = { state: limited.state, abort };
  } else if (plan === "R") {
    try {
      body = await request.arrayBuffer();
    } catch (e) {
      core.unreadable_body(flow, message(e), Date.now());
      return null;
    }
  }
  for (;;) {
    const next = core.next(flow, Date.now());
    if (next === "") return null;
    const [url, timeout, via] = next.split("\n");
    const timeoutMs = Number(timeout);
    // A server behind a binding (a service, a VPC service, an mTLS certificate) is fetched
    // through it.
    const fetcher = via === "" ? globalThis : env[via];
    if (typeof fetcher?.fetch !== "function") {
      core.unbound(flow, via, Date.now());
      return null;
    }
    const controller = counted?.abort ?? new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    let response = null;
    let outcome = 0;
    let detail = "";
    try {
      response = await fetcher.fetch(url, { method, headers, body, redirect: "manual", signal: controller.signal });
    } catch (e) {
      outcome = timedOut ? 2 : 1;
      detail = message(e);
    } finally {
      clearTimeout(timer);
    }
    if (counted?.state.exceeded) {
      outcome = 3;
      response = null;
    }
    const verdict = core.finished(flow, outcome, response?.status ?? 0, detail, Date.now());
    if (verdict === 0 && response !== null) {
      core.forwarded(flow, response.status, pack(response.headers), Date.now());
      return response;
    }
    if (verdict === 1) response?.body?.cancel();
  }
}

/// A stale entry's refresh, in the background: forward again, store what the core says to.
async function refresh(flow, request, env) {
  try {
    let origin = null;
    for (;;) {
      const f = core.poll(flow, Date.now()).split("\n");
      if (f[0] === "F") origin = await forward(flow, f, request, env);
      else if (f[0] === "C" && origin !== null) {
        const [headers] = headersAt(f, 3);
        await cachePut(f[2], new Response(origin.body, { status: Number(f[1]), headers }));
        return;
      } else {
        origin?.body?.cancel();
        return;
      }
    }
  } finally {
    core.end(flow);
  }
}

/// The response when the core itself failed (a Wasm trap; the next request runs on a fresh
/// instance): the gateway's JSON error body, with a request id made here.
function internalError(e) {
  const id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  console.error(JSON.stringify({ request_id: id, status: 500, error: "internal_error", detail: message(e) }));
  const body = { error: "internal_error", message: "the gateway failed on this request; its log has the detail", request_id: id };
  return new Response(JSON.stringify(body), {
    status: 500,
    headers: { "content-type": "application/json", "cache-control": "no-store", "x-request-id": id },
  });
}

async function handle(request, env, ctx) {
  const started = Date.now();
  const args = [request.method, request.url, pack(request.headers), request.body !== null, Math.random(), started];
  let flow = core.start(...args);
  if (flow === 0) {
    const names = core.configure(configText(env));
    if (names !== "") {
      // The secrets the config's header values name, read once per isolate (unset ones left out).
      const set = names.split("\n").filter((name) => typeof env[name] === "string");
      core.secrets(pack(set.map((name) => [name, env[name]])));
    }
    flow = core.start(...args);
  }
  let response;
  let stored = null; // the entry a lookup found, kept for its body (also through a forward: stale-if-error)
  let origin = null; // the origin's response, for its body
  try {
    while (response === undefined) {
      const f = core.poll(flow, Date.now()).split("\n");
      switch (f[0]) {
        case "A": {
          const [headers, i] = headersAt(f, 2);
          const body = f[i] === "1" ? f.slice(i + 1).join("\n") : null;
          response = new Response(body, { status: Number(f[1]), headers });
          break;
        }
        case "S":
          core.admin_secret(flow, secret(env, f[1]));
          break;
        case "P":
          core.purged(flow, f[1] !== "" && (await caches.default.delete(f[1]).catch(() => false)));
          break;
        case "O":
        case "U":
        case "M":
          await core.perform(flow, env);
          break;
        case "R": {
          const [outcome, detail] = await rateLimit(env, f[1], f[2]);
          core.limited(flow, outcome, detail);
          break;
        }
        case "L":
          stored = await cacheMatch(f[1]);
          core.looked_up(flow, stored === null ? undefined : pack(stored.headers), stored?.status ?? 0, Date.now());
          break;
        case "F":
          origin = await forward(flow, f, request, env);
          break;
        case "H": {
          const [headers] = headersAt(f, 3);
          origin?.body?.cancel(); // after a failed forward (stale-if-error): the origin's 5xx is not served
          if (f[2] === "1") {
            const again = core.refresh(flow);
            if (again !== 0) ctx.waitUntil(refresh(again, request, env));
          }
          try {
            response = new Response(f[1] === "1" ? null : stored.body, { status: stored.status, headers });
          } catch (e) {
            core.unbuildable(flow, message(e));
          }
          break;
        }
        case "W": {
          const [headers, i] = headersAt(f, 3);
          let body = f[2] === "1" ? null : origin?.body ?? null;
          try {
            if (f[i] === "1") {
              // The client's half streams at once; the cache's is written after answering.
              const [stored] = headersAt(f, i + 2);
              let copy = null;
              if (body !== null) [body, copy] = body.tee();
              ctx.waitUntil(cachePut(f[i + 1], new Response(copy, { status: Number(f[1]), headers: stored })));
            }
            // A 101 hands the origin's WebSocket to the client as it is: frames never pass
            // through this code or the core.
            const webSocket = f[1] === "101" ? origin?.webSocket : undefined;
            response = new Response(body, { status: Number(f[1]), headers, webSocket });
          } catch (e) {
            core.unbuildable(flow, message(e));
          }
          break;
        }
        default:
          throw new Error(`unknown step ${f[0]}`);
      }
    }
  } catch (e) {
    core.end(flow);
    return internalError(e);
  }
  console.log(core.finish(flow, response.status, Date.now() - started));
  const health = core.health(Date.now());
  if (health !== "") ctx.waitUntil(shareHealth(health));
  if (core.checks_due(Date.now())) ctx.waitUntil(readChecks(env));
  return response;
}

/// Tells and reads the other isolates of this location which servers are ejected, through the
/// Cache API, after answering (what to do is the core's: see `health` in flow.rs).
async function shareHealth(lines) {
  const cache = caches.default;
  const reads = [];
  for (const line of lines.split("\n")) {
    const [op, key, until] = line.split(" ");
    if (op === "P") {
      const seconds = Math.max(1, Math.ceil((Number(until) - Date.now()) / 1000));
      const entry = new Response("", {
        headers: { "cache-control": `max-age=${seconds}`, "x-portcullis-ejected-until": until },
      });
      reads.push(cache.put(key, entry).catch(() => {}));
    } else if (op === "D") {
      reads.push(cache.delete(key).catch(() => false));
    } else if (op === "R") {
      reads.push(cache.match(key).then(
        (r) => core.health_seen(key, Number(r?.headers.get("x-portcullis-ejected-until") ?? 0)),
        () => {},
      ));
    }
  }
  await Promise.all(reads);
}

/// The KV namespace of the active checks' results and its key (see `checks_store` in flow.rs).
function checksStore(env) {
  const [binding, key] = core.checks_store().split("\n");
  const kv = env[binding];
  return { binding, key, kv: typeof kv?.get === "function" ? kv : null };
}

/// Reads the active checks' results, after answering (at most every few seconds: the core
/// says when); a missing namespace or a failed read leaves what the isolate knew.
async function readChecks(env) {
  const { kv, key } = checksStore(env);
  if (kv === null) return;
  try {
    core.checks_seen((await kv.get(key)) ?? undefined, Date.now());
  } catch (e) {
    console.error(JSON.stringify({ health_checks_read_failed: message(e) }));
  }
}

/// One probe, under its timeout until the response headers: [outcome, status, detail] as
/// `checks_record` in flow.rs reads them.
async function probe(env, url, timeoutMs, via) {
  const fetcher = via === "" ? globalThis : env[via];
  if (typeof fetcher?.fetch !== "function") return [3, 0, ""];
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const response = await fetcher.fetch(url, { method: "GET", redirect: "manual", signal: controller.signal });
    response.body?.cancel().catch(() => {});
    return [0, response.status, ""];
  } catch (e) {
    return [timedOut ? 2 : 1, 0, message(e).replace(/[\r\n]+/g, " ")];
  } finally {
    clearTimeout(timer);
  }
}

/// The Cron Trigger: probes what the core says is due, all at once, and writes the results to
/// the KV namespace; one log line per run.
async function scheduled(controller, env, ctx) {
  if (!core.configured()) {
    const names = core.configure(configText(env));
    if (names !== "") {
      const set = names.split("\n").filter((name) => typeof env[name] === "string");
      core.secrets(pack(set.map((name) => [name, env[name]])));
    }
  }
  const { kv, key, binding } = checksStore(env);
  if (kv === null) {
    console.error(JSON.stringify({ health_checks: { error: `KV namespace ${binding} is not bound` } }));
    return;
  }
  let previous;
  try {
    previous = (await kv.get(key)) ?? undefined;
  } catch (e) {
    console.error(JSON.stringify({ health_checks: { error: `reading ${binding}: ${message(e)}` } }));
    return;
  }
  const started = Date.now();
  const plan = core.checks_plan(previous, started);
  if (plan === "") {
    console.log(JSON.stringify({ health_checks: { probed: 0 } }));
    return;
  }
  const f = plan.split("\n");
  const probes = [];
  for (let i = 0; i + 3 < f.length; i += 4) {
    probes.push(probe(env, f[i + 1], Number(f[i + 2]), f[i + 3]).then((r) => [f[i], ...r]));
  }
  const results = (await Promise.all(probes)).map((r) => r.join("\n")).join("\n");
  const out = core.checks_record(previous, results, started, Date.now());
  const cut = out.indexOf("\n");
  if (cut < 0) return;
  try {
    await kv.put(key, out.slice(0, cut));
    console.log(out.slice(cut + 1));
  } catch (e) {
    console.error(JSON.stringify({ health_checks: { error: `writing ${binding}: ${message(e)}` }, run: JSON.parse(out.slice(cut + 1)) }));
  }
}

export default { fetch: handle, scheduled };
