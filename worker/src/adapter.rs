//! The adapter: carries out the core's plans in the Workers runtime. The only code that touches
//! `worker`, `web_sys` and `js_sys`.
//!
//! Per request it crosses into JavaScript a fixed number of times, whatever the number of
//! headers: header lists go across as one JSON string each way.

use std::cell::RefCell;
use std::time::Duration;

use futures_util::future::{select, Either};
use portcullis::auth::AuthError;
use portcullis::gateway::{content_length, AuthStep, CacheStep, ForwardPlan, Gateway, Incoming};
use portcullis::lifecycle::{Exchange, Step};
use portcullis::log::{Attempt, LogLine};
use portcullis::policy::Limited;
use portcullis::request_id::RequestIds;
use portcullis::upstream::attempts::{self, Attempts, BodyPlan, Next, Sent, Verdict};
use portcullis::upstream::{PoolState, SUBREQUEST_LIMIT};
use portcullis::{Config, GatewayError};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, Headers, Request, RequestInit, RequestRedirect, Response, ResponseInit,
};
use worker::{Context, Delay, Env};

use crate::cache as cache_io;

/// The routes compiled into the Worker, used when `GATEWAY_CONFIG` is not set.
const EMBEDDED_CONFIG: &str = include_str!("../../routes.json");

#[wasm_bindgen(inline_js = "
export function limit_body(stream, max, abort) {
  const state = { exceeded: false };
  let seen = 0;
  const counter = new TransformStream({
    transform(chunk, controller) {
      seen += chunk.byteLength;
      if (seen > max) {
        state.exceeded = true;
        abort.abort();
        controller.error(new Error('request body over the route limit'));
        return;
      }
      controller.enqueue(chunk);
    },
  });
  return { stream: stream.pipeThrough(counter), state };
}
")]
extern "C" {
    /// Passes a body through a byte counter that, past `max` bytes, aborts the subrequest through
    /// `abort` (so the origin never gets a complete request) and errors the stream;
    /// `state.exceeded` tells afterwards. Chunks stay in JavaScript.
    fn limit_body(stream: &web_sys::ReadableStream, max: f64, abort: &AbortController) -> JsValue;
}

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> js_sys::Promise;
}

/// What an isolate keeps between requests: the config, parsed and validated once.
struct Isolate {
    gateway: Result<Gateway, String>,
    ids: RefCell<RequestIds>,
    /// One per origin pool, in the config's order.
    pools: RefCell<Vec<PoolState>>,
    /// Cache keys being refreshed in the background (stale-while-revalidate), so that concurrent
    /// requests for a stale entry start one refresh, not many. Bounded.
    refreshing: RefCell<std::collections::HashSet<String>>,
    auth: crate::auth::AuthCache,
    sso: crate::sso::SsoCache,
}

/// At most this many background refreshes at once per isolate.
const MAX_REFRESHING: usize = 256;

thread_local! {
    static ISOLATE: RefCell<Option<&'static Isolate>> = const { RefCell::new(None) };
}

/// The config text: `GATEWAY_CONFIG` as a string, or as an object (wrangler's `[vars]` with a
/// table), else the embedded routes.json.
fn config_text(env: &Env) -> Result<String, String> {
    let value = js_sys::Reflect::get(env, &JsValue::from_str("GATEWAY_CONFIG"))
        .unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Ok(EMBEDDED_CONFIG.to_string());
    }
    if let Some(text) = value.as_string() {
        return Ok(text);
    }
    js_sys::JSON::stringify(&value)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| "GATEWAY_CONFIG is neither a JSON string nor an object".to_string())
}

fn random_seed() -> [u8; 16] {
    let mut seed = [0u8; 16];
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok();
    if let Some(crypto) = crypto.and_then(|c| c.dyn_into::<web_sys::Crypto>().ok()) {
        if crypto.get_random_values_with_u8_array(&mut seed).is_ok() {
            return seed;
        }
    }
    // No platform randomness: ids stay unique per isolate through the counter.
    let now = js_sys::Date::now().to_bits().to_le_bytes();
    seed[..8].copy_from_slice(&now);
    seed
}

fn isolate(env: &Env) -> &'static Isolate {
    ISOLATE.with(|cell| {
        if let Some(isolate) = *cell.borrow() {
            return isolate;
        }
        let gateway = config_text(env).and_then(|text| {
            Config::from_json(&text)
                .map(Gateway::new)
                .map_err(|e| e.to_string())
        });
        if let Err(problems) = &gateway {
            worker::console_error!("{}", serde_json::json!({ "config_invalid": problems }));
        }
        // Leaked once per isolate: the config lives as long as the isolate does.
        let pools = match &gateway {
            Ok(g) => g.config.origins.iter().map(PoolState::new).collect(),
            Err(_) => Vec::new(),
        };
        let isolate: &'static Isolate = Box::leak(Box::new(Isolate {
            gateway,
            ids: RefCell::new(RequestIds::new(random_seed())),
            pools: RefCell::new(pools),
            refreshing: RefCell::new(std::collections::HashSet::new()),
            auth: Default::default(),
            sso: Default::default(),
        }));
        *cell.borrow_mut() = Some(isolate);
        isolate
    })
}

/// All headers of a `Headers` as a list, in one crossing.
fn header_list(headers: &Headers) -> Vec<(String, String)> {
    let entries = js_sys::Array::from(headers);
    js_sys::JSON::stringify(&entries)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// A `Headers` from a list, in one crossing.
fn headers_from(list: &[(String, String)]) -> Result<Headers, JsValue> {
    let json = serde_json::to_string(list).map_err(|e| JsValue::from_str(&e.to_string()))?;
    let entries = js_sys::JSON::parse(&json)?;
    Headers::new_with_str_sequence_sequence(&entries)
}

/// A response the gateway makes itself: a status, a header list and a text body (or none).
fn own_response(status: u16, list: &[(String, String)], body: Option<&str>) -> Response {
    let init = ResponseInit::new();
    init.set_status(status);
    if let Ok(headers) = headers_from(list) {
        init.set_headers(&headers);
    }
    Response::new_with_opt_str_and_init(body, &init)
        .unwrap_or_else(|_| Response::new().expect("an empty Response can always be made"))
}

fn error_response(error: &GatewayError, request_id: &str) -> Response {
    let plan = error.response(request_id);
    own_response(plan.status, &plan.headers, Some(&plan.body))
}

/// How one attempt ended, as the runtime saw it.
enum Attempted {
    Response(Response),
    /// The subrequest failed before any response (the runtime's message).
    Failed(String),
    /// No response headers within the attempt's timeout (the subrequest was aborted).
    TimedOut,
}

/// The request body as the attempts send it.
enum Body {
    None,
    /// Streamed through once, never buffered: the request is not retried.
    Stream(web_sys::ReadableStream),
    /// Buffered in JavaScript (never copied into Wasm) so that a retry can send it again.
    Replayable(JsValue),
}

impl Body {
    fn as_js(&self) -> Option<&JsValue> {
        match self {
            Body::None => None,
            Body::Stream(s) => Some(s.as_ref()),
            Body::Replayable(b) => Some(b),
        }
    }
}

/// One attempt on one server: the subrequest, bounded by `timeout_ms` until response headers
/// arrive; then the body streams without a timeout.
async fn attempt(
    plan: &ForwardPlan,
    url: &str,
    headers: &Headers,
    body: &Body,
    timeout_ms: u32,
    controller: Option<AbortController>,
) -> Attempted {
    let init = RequestInit::new();
    init.set_method(&plan.method);
    init.set_headers(headers);
    init.set_redirect(RequestRedirect::Manual);
    if let Some(b) = body.as_js() {
        init.set_body(b);
    }
    if let Some(c) = &controller {
        init.set_signal(Some(&c.signal()));
    }
    let request = match Request::new_with_str_and_init(url, &init) {
        Ok(r) => r,
        Err(e) => return Attempted::Failed(format!("request: {}", js_message(&e))),
    };
    let fetch = JsFuture::from(global_fetch(&request));
    let timer = Delay::from(Duration::from_millis(u64::from(timeout_ms)));
    match select(fetch, timer).await {
        Either::Left((Ok(value), _)) => match value.dyn_into::<Response>() {
            Ok(response) => Attempted::Response(response),
            Err(_) => Attempted::Failed("fetch gave no Response".into()),
        },
        Either::Left((Err(e), _)) => Attempted::Failed(js_message(&e)),
        Either::Right(((), _)) => {
            if let Some(c) = controller {
                c.abort();
            }
            Attempted::TimedOut
        }
    }
}

fn js_message(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Forwards with the pool's balancing, timeouts, retries and ejection: drives the core's
/// [`Attempts`] machine, which decides everything; this only sends and reports. Returns the
/// origin's response, or the error for the client with a detail for the log.
async fn forward(
    isolate: &Isolate,
    gateway: &Gateway,
    plan: &ForwardPlan,
    incoming: &Request,
    attempts_log: &mut Vec<Attempt>,
) -> Result<Response, (GatewayError, String)> {
    let origin = &gateway.config.origins[plan.origin];
    let random = if origin.balance == portcullis::config::Balance::Random {
        (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64
    } else {
        0
    };
    let stream = incoming.body();
    let request = attempts::Request {
        method: &plan.method,
        hash_key: plan.hash_key.as_deref(),
        has_body: stream.is_some(),
        content_length: content_length(&plan.headers),
        max_body_bytes: plan.max_body_bytes,
        subrequests_left: SUBREQUEST_LIMIT,
    };
    let mut machine = Attempts::start(
        origin,
        &mut isolate.pools.borrow_mut()[plan.origin],
        &request,
        now_ms(),
        random,
    );
    let result = drive(isolate, plan, incoming, stream, &mut machine, origin).await;
    attempts_log.append(&mut machine.log);
    result
}

/// The driver loop of [`forward`]: the body as the machine planned it, then each attempt.
async fn drive(
    isolate: &Isolate,
    plan: &ForwardPlan,
    incoming: &Request,
    stream: Option<web_sys::ReadableStream>,
    machine: &mut Attempts,
    origin: &portcullis::config::Origin,
) -> Result<Response, (GatewayError, String)> {
    let js_error = |what: &str, e: &JsValue| {
        (
            GatewayError::OriginUnavailable,
            format!("{what}: {}", js_message(e)),
        )
    };
    // The body limit's counter state and the AbortController that cuts the subrequest past it
    // (a counted body gets exactly one attempt, so one controller serves).
    let mut counted: Option<(JsValue, AbortController)> = None;
    let body = match (machine.body(), stream) {
        (BodyPlan::None, _) | (_, None) => Body::None,
        (BodyPlan::Stream, Some(stream)) => Body::Stream(stream),
        (BodyPlan::Counted(max), Some(stream)) => {
            let abort = AbortController::new().map_err(|e| js_error("abort", &e))?;
            let limited = limit_body(&stream, max as f64, &abort);
            let stream = js_sys::Reflect::get(&limited, &JsValue::from_str("stream"))
                .ok()
                .and_then(|s| s.dyn_into::<web_sys::ReadableStream>().ok())
                .unwrap_or(stream);
            if let Ok(state) = js_sys::Reflect::get(&limited, &JsValue::from_str("state")) {
                counted = Some((state, abort));
            }
            Body::Stream(stream)
        }
        (BodyPlan::Replay, Some(stream)) => match incoming.array_buffer().map(JsFuture::from) {
            Ok(read) => Body::Replayable(read.await.map_err(|e| {
                (
                    GatewayError::UnreadableBody,
                    format!("body: {}", js_message(&e)),
                )
            })?),
            Err(_) => Body::Stream(stream),
        },
    };
    let headers = headers_from(&plan.headers).map_err(|e| js_error("headers", &e))?;
    loop {
        let (server, timeout_ms) = match machine.next(origin, now_ms()) {
            Next::Send { server, timeout_ms } => (server, timeout_ms),
            Next::GiveUp { error, detail } => return Err((error, detail)),
        };
        let controller = match &counted {
            Some((_, abort)) => Some(abort.clone()),
            None => AbortController::new().ok(),
        };
        let url = plan.url_for(&origin.servers[server]);
        let result = attempt(plan, &url, &headers, &body, timeout_ms, controller).await;
        let over_limit = counted.as_ref().is_some_and(|(state, _)| {
            js_sys::Reflect::get(state, &JsValue::from_str("exceeded")).is_ok_and(|v| v.is_truthy())
        });
        let (sent, response) = match result {
            _ if over_limit => (Sent::BodyOverLimit, None),
            Attempted::Response(r) => (Sent::Response(r.status()), Some(r)),
            Attempted::TimedOut => (Sent::TimedOut, None),
            Attempted::Failed(detail) => (Sent::Failed(detail), None),
        };
        let verdict = {
            let mut pools = isolate.pools.borrow_mut();
            machine.finished(origin, &mut pools[plan.origin], sent, now_ms())
        };
        match (verdict, response) {
            (Verdict::Serve, Some(response)) => return Ok(response),
            (Verdict::Retry, Some(response)) => {
                if let Some(b) = response.body() {
                    let _ = b.cancel();
                }
            }
            _ => {}
        }
    }
}

fn now_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

fn build_response(
    status: u16,
    list: &[(String, String)],
    body: Option<&web_sys::ReadableStream>,
) -> Result<Response, JsValue> {
    let init = ResponseInit::new();
    init.set_status(status);
    let headers = headers_from(list)?;
    init.set_headers(&headers);
    Response::new_with_opt_readable_stream_and_init(body, &init)
}

/// Forwards `plan` again in the background and stores the fresh response (a STALE entry's
/// refresh); at most one refresh per key per isolate at a time.
fn refresh(
    isolate: &'static Isolate,
    gateway: &'static Gateway,
    plan: &ForwardPlan,
    request: &Request,
    ctx: &Context,
) {
    let Some(CacheStep::Lookup { key }) = &plan.cache else {
        return;
    };
    let start = {
        let mut refreshing = isolate.refreshing.borrow_mut();
        refreshing.len() < MAX_REFRESHING && refreshing.insert(key.clone())
    };
    if !start {
        return;
    }
    let (plan, request, key) = (plan.clone(), Clone::clone(request), key.clone());
    ctx.wait_until(async move {
        let mut attempts = Vec::new();
        if let Ok(origin) = forward(isolate, gateway, &plan, &request, &mut attempts).await {
            let status = origin.status();
            let list = gateway.response_headers(&plan, &header_list(&origin.headers()));
            let outcome = gateway.cache_outcome(&plan, status, &list, now_ms());
            if let Some((key, stored)) = outcome.and_then(|o| o.store) {
                if let Ok(entry) = build_response(status, &stored, origin.body().as_ref()) {
                    cache_io::put(key, entry).await;
                }
            }
        }
        isolate.refreshing.borrow_mut().remove(&key);
    });
}

/// The admin credential: the Worker secret (or, in development, the var) `token_env`; empty
/// when unset, which matches nothing.
fn admin_secret(env: &Env, token_env: &str) -> String {
    env.secret(token_env)
        .map(|s| s.to_string())
        .or_else(|_| env.var(token_env).map(|v| v.to_string()))
        .unwrap_or_default()
}

/// Statuses whose responses have no body.
fn is_null_body_status(status: u16) -> bool {
    matches!(status, 101 | 204 | 205 | 304)
}

/// Serves one request: drives the core's [`Exchange`], which sequences every phase and decides
/// everything; each step here is one piece of I/O. One place writes the log line and answers,
/// for every exit.
pub async fn handle(request: Request, env: Env, ctx: Context) -> Response {
    let started = js_sys::Date::now();
    let isolate = isolate(&env);
    let request_id = isolate.ids.borrow_mut().next_id();
    let method = request.method();
    let elapsed = || (js_sys::Date::now() - started).max(0.0) as u64;

    let gateway = match &isolate.gateway {
        Ok(g) => g,
        Err(problems) => {
            let error = GatewayError::ConfigInvalid;
            let log = LogLine {
                request_id: &request_id,
                method: &method,
                path: None,
                route: None,
                status: error.status(),
                error: Some(error.code()),
                detail: Some(problems.clone()),
                auth: None,
                attempts: Vec::new(),
                cache: None,
                cache_reason: None,
                duration_ms: elapsed(),
            };
            worker::console_log!("{}", log.to_json());
            return error_response(&error, &request_id);
        }
    };

    let url = request.url();
    let headers = header_list(&request.headers());
    let incoming = Incoming {
        method: &method,
        url: &url,
        headers: &headers,
    };
    let now = js_sys::Date::now();
    let cached = |policy: usize, token: &str| isolate.auth.is_cached(policy, token, now);
    let mut exchange = Exchange::new(gateway, &incoming, &request_id, cached);
    // The stored entry a lookup found, kept for its body; the origin's response, for its body.
    let mut stored: Option<Response> = None;
    let mut origin: Option<Response> = None;
    let response = loop {
        match exchange.poll() {
            Step::AdminSecret(token_env) => {
                let secret = admin_secret(&env, token_env);
                exchange.admin_secret(&secret);
            }
            Step::Purge(key) => {
                let purged = match key {
                    Some(key) => cache_io::delete(&key).await,
                    None => false,
                };
                exchange.purged(purged);
            }
            Step::Sso { request: sso, head } => {
                // Boxed: the code of the paths a public request never takes stays out of this
                // function (smaller to compile on an isolate's first request).
                let answer = Box::pin(isolate.sso.answer(
                    gateway,
                    &isolate.auth,
                    sso.clone(),
                    &head.url,
                    &head.headers,
                    &env,
                    &request_id,
                ))
                .await;
                exchange.answered(answer);
            }
            Step::Authenticate { matched, head } => match &matched.auth {
                AuthStep::Session {
                    sso,
                    cookies,
                    optional,
                    redirect,
                } => {
                    let (sso, optional, redirect) = (*sso, *optional, *redirect);
                    let session = Box::pin(isolate.sso.session(gateway, sso, cookies, &env)).await;
                    match session {
                        Err((AuthError::NoSession(_), _)) if redirect && !optional => {
                            let url = head.url.clone();
                            let accept = head.header("accept").map(str::to_string);
                            let answer = match Box::pin(
                                isolate.sso.start_login(gateway, sso, &url, None, &env),
                            )
                            .await
                            {
                                Ok(answer) => answer,
                                Err(r) => crate::sso::Answer::error(
                                    &r.error,
                                    &request_id,
                                    accept.as_deref(),
                                    Vec::new(),
                                    r.detail,
                                ),
                            };
                            exchange.answered(answer);
                        }
                        other => {
                            let outcome = crate::auth::Outcome::of_session(other, optional);
                            exchange.authenticated(outcome);
                        }
                    }
                }
                _ => {
                    let outcome =
                        Box::pin(isolate.auth.authenticate(gateway, matched, &env, now)).await;
                    exchange.authenticated(outcome);
                }
            },
            Step::Mint { identity, aud } => {
                let identity = identity.clone();
                let aud = aud.to_string();
                let token = Box::pin(isolate.sso.mint(gateway, &identity, &aud, &env)).await;
                exchange.minted(token);
            }
            Step::RateLimit { binding, key } => {
                let limited = match env.rate_limiter(binding) {
                    Ok(limiter) => match limiter.limit(key.to_string()).await {
                        Ok(outcome) if outcome.success => Limited::Allowed,
                        Ok(_) => Limited::Refused,
                        Err(e) => Limited::Failed(e.to_string()),
                    },
                    Err(_) => Limited::Unbound,
                };
                exchange.limited(limited);
            }
            Step::Lookup { key } => {
                stored = cache_io::lookup(key).await;
                let list = stored.as_ref().map(|r| header_list(&r.headers()));
                exchange.looked_up(list.as_deref(), now_ms());
            }
            Step::Forward(plan) => {
                let plan = plan.clone();
                let mut attempts = Vec::new();
                let result = forward(isolate, gateway, &plan, &request, &mut attempts).await;
                let head = result.map(|r| {
                    let head = (r.status(), header_list(&r.headers()));
                    origin = Some(r);
                    head
                });
                exchange.forwarded(head, attempts, now_ms());
            }
            Step::Answer(answer) => {
                break own_response(answer.status, &answer.headers, answer.body.as_deref());
            }
            Step::ServeStored {
                headers,
                refresh: stale,
                plan,
            } => {
                let Some(entry) = stored.take() else {
                    break error_response(&GatewayError::OriginUnavailable, &request_id);
                };
                if stale {
                    refresh(isolate, gateway, plan, &request, &ctx);
                }
                let body = if plan.method == "HEAD" {
                    None
                } else {
                    entry.body()
                };
                match build_response(entry.status(), headers, body.as_ref()) {
                    Ok(r) => break r,
                    Err(e) => exchange.unbuildable(js_message(&e)),
                }
            }
            Step::Respond {
                status,
                headers,
                store,
            } => {
                let from = origin.take();
                let mut body = match &from {
                    Some(r) if !is_null_body_status(status) => r.body(),
                    _ => None,
                };
                if let Some((key, stored_headers)) = store {
                    // The client's half streams at once; the cache's is written after answering.
                    let (for_client, for_cache) = match &body {
                        Some(b) => {
                            let (a, c) = cache_io::split(b);
                            (Some(a), Some(c))
                        }
                        None => (None, None),
                    };
                    body = for_client;
                    if let Ok(entry) = build_response(status, stored_headers, for_cache.as_ref()) {
                        ctx.wait_until(cache_io::put(key.clone(), entry));
                    }
                }
                match build_response(status, headers, body.as_ref()) {
                    Ok(r) => break r,
                    Err(e) => exchange.unbuildable(js_message(&e)),
                }
            }
        }
    };
    worker::console_log!("{}", exchange.log_line(response.status(), elapsed()));
    response
}
