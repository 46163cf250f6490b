//! The adapter: carries out the core's plans in the Workers runtime. The only code that touches
//! `worker`, `web_sys` and `js_sys`.
//!
//! Per request it crosses into JavaScript a fixed number of times, whatever the number of
//! headers: header lists go across as one JSON string each way.

use std::cell::RefCell;
use std::time::Duration;

use futures_util::future::{select, Either};
use portcullis::auth::AuthError;
use portcullis::cache::{self, Freshness, Store};
use portcullis::gateway::{
    bearer_matches, content_length, AdminRequest, AuthStep, CacheStep, ForwardPlan, Gateway,
    Incoming, Refusal,
};
use portcullis::log::{Attempt, LogLine, Outcome};
use portcullis::request_id::RequestIds;
use portcullis::upstream::{Failure, PoolState, SUBREQUEST_LIMIT};
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

/// 204 for an allowed CORS preflight, answered at the edge.
fn preflight_response(cors_headers: Vec<(String, String)>, request_id: &str) -> Response {
    let mut list = cors_headers;
    list.push(("x-request-id".to_string(), request_id.to_string()));
    own_response(204, &list, None)
}

/// How one attempt ended.
enum Attempted {
    Response(Response),
    Failed(Failure, String),
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
        Err(e) => {
            return Attempted::Failed(Failure::Connect, format!("request: {}", js_message(&e)))
        }
    };
    let fetch = JsFuture::from(global_fetch(&request));
    let timer = Delay::from(Duration::from_millis(u64::from(timeout_ms)));
    match select(fetch, timer).await {
        Either::Left((Ok(value), _)) => match value.dyn_into::<Response>() {
            Ok(response) => Attempted::Response(response),
            Err(_) => Attempted::Failed(Failure::Connect, "fetch gave no Response".into()),
        },
        Either::Left((Err(e), _)) => Attempted::Failed(Failure::Connect, js_message(&e)),
        Either::Right(((), _)) => {
            if let Some(c) = controller {
                c.abort();
            }
            Attempted::Failed(
                Failure::Timeout,
                format!("no response headers within {timeout_ms} ms"),
            )
        }
    }
}

fn js_message(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Forwards with the pool's balancing, timeouts, retries and ejection (the core decides, this
/// carries it out). Returns the origin's response, or the error for the client with a detail for
/// the log.
async fn forward(
    isolate: &Isolate,
    gateway: &Gateway,
    plan: &ForwardPlan,
    incoming: &Request,
    attempts_log: &mut Vec<Attempt>,
) -> Result<Response, (GatewayError, String)> {
    let origin = &gateway.config.origins[plan.origin];
    let started = now_ms();
    let random = if origin.balance == portcullis::config::Balance::Random {
        (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64
    } else {
        0
    };
    let order = isolate.pools.borrow_mut()[plan.origin].candidates(
        origin,
        plan.hash_key.as_deref(),
        started,
        random,
    );
    let policy = &origin.retry;

    // Buffer the body only when a retry could happen and it is small enough to replay.
    let mut body_limit: Option<JsValue> = None;
    // The subrequest's AbortController when the body limit may need to cut it (a streamed body
    // gets exactly one attempt, so one controller serves).
    let mut body_abort: Option<AbortController> = None;
    let body = match incoming.body() {
        None => Body::None,
        Some(stream)
            if plan.max_body_bytes.is_some() && content_length(&plan.headers).is_none() =>
        {
            // No declared length on a limited route: count while streaming, cut past the limit.
            let abort = AbortController::new().map_err(|e| {
                (
                    GatewayError::OriginUnavailable,
                    format!("abort: {}", js_message(&e)),
                )
            })?;
            let limited = limit_body(
                &stream,
                plan.max_body_bytes.unwrap_or(u64::MAX) as f64,
                &abort,
            );
            body_abort = Some(abort);
            let stream = js_sys::Reflect::get(&limited, &JsValue::from_str("stream"))
                .ok()
                .and_then(|s| s.dyn_into::<web_sys::ReadableStream>().ok())
                .unwrap_or(stream);
            body_limit = js_sys::Reflect::get(&limited, &JsValue::from_str("state")).ok();
            Body::Stream(stream)
        }
        Some(stream) => {
            let replayable = policy.may_retry_method(&plan.method)
                && order.len() > 1
                && content_length(&plan.headers).is_some_and(|n| n <= policy.replay_body_bytes);
            if replayable {
                match incoming.array_buffer().map(JsFuture::from) {
                    Ok(read) => match read.await {
                        Ok(buffer) => Body::Replayable(buffer),
                        Err(e) => {
                            return Err((
                                GatewayError::UnreadableBody,
                                format!("body: {}", js_message(&e)),
                            ))
                        }
                    },
                    Err(_) => Body::Stream(stream),
                }
            } else {
                Body::Stream(stream)
            }
        }
    };
    let attempts = policy.attempts_for(
        &plan.method,
        order.len(),
        SUBREQUEST_LIMIT,
        !matches!(body, Body::Stream(_)),
    );
    let headers = headers_from(&plan.headers).map_err(|e| {
        (
            GatewayError::OriginUnavailable,
            format!("headers: {}", js_message(&e)),
        )
    })?;
    let deadline = started + u64::from(origin.deadline_ms);

    let mut last = (Failure::Connect, String::from("no server was tried"));
    for (n, &server_index) in order.iter().take(attempts as usize).enumerate() {
        let server = &origin.servers[server_index];
        let now = now_ms();
        if now >= deadline {
            last = (
                Failure::Timeout,
                format!("deadline of {} ms passed", origin.deadline_ms),
            );
            break;
        }
        let timeout_ms = u64::from(origin.timeout_ms).min(deadline - now) as u32;
        let controller = match &body_abort {
            Some(abort) => Some(abort.clone()),
            None => AbortController::new().ok(),
        };
        let result = attempt(
            plan,
            &plan.url_for(server),
            &headers,
            &body,
            timeout_ms,
            controller,
        )
        .await;
        let finished = now_ms();
        // The client's body was over the limit: the cut is the client's doing, not the server's.
        let over_limit = body_limit.as_ref().is_some_and(|state| {
            js_sys::Reflect::get(state, &JsValue::from_str("exceeded")).is_ok_and(|v| v.is_truthy())
        });
        if over_limit {
            return Err((
                GatewayError::PayloadTooLarge,
                "body over the limit while streaming".into(),
            ));
        }
        let is_last = n + 1 == attempts as usize;
        let (failure, outcome, status) = match &result {
            Attempted::Response(r) => {
                let status = r.status();
                let failed = policy.on_statuses.contains(&status);
                (
                    failed.then_some(Failure::Status(status)),
                    Outcome::Response,
                    Some(status),
                )
            }
            Attempted::Failed(f, _) => (
                Some(*f),
                if *f == Failure::Timeout {
                    Outcome::Timeout
                } else {
                    Outcome::ConnectFailed
                },
                None,
            ),
        };
        let ejected_for_ms = {
            let mut pools = isolate.pools.borrow_mut();
            match failure {
                None => {
                    pools[plan.origin].record_success(server_index);
                    None
                }
                Some(_) => pools[plan.origin].record_failure(server_index, &origin.eject, finished),
            }
        };
        attempts_log.push(Attempt {
            server: server_index,
            address: server.base.clone(),
            outcome,
            status,
            duration_ms: finished.saturating_sub(now),
            ejected_for_ms,
        });
        match result {
            Attempted::Response(response) => {
                let retry = failure.is_some_and(|f| policy.retries_on(f)) && !is_last;
                if !retry {
                    // The last attempt's response, even a listed failure status, is the origin's
                    // word: the client sees it (as nginx and Envoy do), headers cleaned.
                    return Ok(response);
                }
                if let Some(b) = response.body() {
                    let _ = b.cancel();
                }
            }
            Attempted::Failed(f, detail) => {
                last = (f, detail);
                if is_last || !policy.retries_on(f) {
                    break;
                }
            }
        }
    }
    let error = match last.0 {
        Failure::Timeout => GatewayError::OriginTimeout,
        _ => GatewayError::OriginUnavailable,
    };
    Err((error, last.1))
}

fn now_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

/// The client's response for an origin's: headers planned by the core; on a cacheable request,
/// the body teed so the cache write (in `waitUntil`) never delays the client. Returns the
/// `x-cache-status` given, if any.
fn client_response(
    gateway: &Gateway,
    plan: &ForwardPlan,
    origin: Response,
    ctx: &Context,
) -> (
    Result<Response, JsValue>,
    Option<&'static str>,
    Option<&'static str>,
) {
    let status = origin.status();
    let mut list = gateway.response_headers(plan, &header_list(&origin.headers()));
    let mut body = if is_null_body_status(status) {
        None
    } else {
        origin.body()
    };
    let (mut cache_status, mut cache_reason) = (None, None);
    if let Some(step) = &plan.cache {
        let label = match (step, gateway.store_decision(plan, status, &list)) {
            (CacheStep::Lookup { key }, Store::For(ttl_s)) => {
                let rule_swr = gateway
                    .route(plan)
                    .cache
                    .as_ref()
                    .map_or(0, |r| r.stale_while_revalidate_s);
                let stored = cache::stored_headers(&list, ttl_s, rule_swr, now_ms());
                let (for_client, for_cache) = match &body {
                    Some(b) => {
                        let (a, c) = cache_io::split(b);
                        (Some(a), Some(c))
                    }
                    None => (None, None),
                };
                body = for_client;
                if let Ok(entry) = build_response(status, &stored, for_cache.as_ref()) {
                    ctx.wait_until(cache_io::put(key.clone(), entry));
                }
                "MISS"
            }
            (CacheStep::Lookup { .. }, _) if plan.method == "HEAD" => "MISS",
            (CacheStep::Lookup { .. }, Store::No(reason)) => {
                cache_reason = Some(reason);
                "BYPASS"
            }
            (CacheStep::Bypass { reason }, _) => {
                cache_reason = Some(*reason);
                "BYPASS"
            }
        };
        list.push((cache::STATUS_HEADER.to_string(), label.to_string()));
        cache_status = Some(label);
    }
    (
        build_response(status, &list, body.as_ref()),
        cache_status,
        cache_reason,
    )
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

/// A stored entry as the client's response: HIT when fresh, STALE within the stale window (and
/// one background refresh per key per isolate), `None` when expired or unreadable (a miss).
fn serve_stored(
    isolate: &'static Isolate,
    gateway: &'static Gateway,
    plan: &ForwardPlan,
    request: &Request,
    stored: &Response,
    key: &str,
    ctx: &Context,
) -> Option<(Response, Option<&'static str>)> {
    let headers = header_list(&stored.headers());
    let (stored_at, ttl_s) = cache::stored_meta(&headers)?;
    let rule = gateway.route(plan).cache.as_ref()?;
    let now = now_ms();
    let label = match cache::freshness(stored_at, ttl_s, rule.stale_while_revalidate_s, now) {
        Freshness::Fresh => "HIT",
        Freshness::Stale => {
            let start = {
                let mut refreshing = isolate.refreshing.borrow_mut();
                refreshing.len() < MAX_REFRESHING && refreshing.insert(key.to_string())
            };
            if start {
                let (plan, request, key) = (plan.clone(), Clone::clone(request), key.to_string());
                ctx.wait_until(async move {
                    let mut attempts = Vec::new();
                    if let Ok(origin) =
                        forward(isolate, gateway, &plan, &request, &mut attempts).await
                    {
                        let status = origin.status();
                        let list = gateway.response_headers(&plan, &header_list(&origin.headers()));
                        if let Store::For(ttl_s) = gateway.store_decision(&plan, status, &list) {
                            let swr = gateway
                                .route(&plan)
                                .cache
                                .as_ref()
                                .map_or(0, |r| r.stale_while_revalidate_s);
                            let stored = cache::stored_headers(&list, ttl_s, swr, now_ms());
                            if let Ok(entry) =
                                build_response(status, &stored, origin.body().as_ref())
                            {
                                cache_io::put(key.clone(), entry).await;
                            }
                        }
                    }
                    isolate.refreshing.borrow_mut().remove(&key);
                });
            }
            "STALE"
        }
        Freshness::Expired => return None,
    };
    let list = gateway.cached_response_headers(plan, &headers, label, cache::age_s(stored_at, now));
    let body = if plan.method == "HEAD" {
        None
    } else {
        stored.body()
    };
    build_response(stored.status(), &list, body.as_ref())
        .ok()
        .map(|r| (r, Some(label)))
}

/// The admin credential: the Worker secret (or, in development, the var) `token_env`; empty
/// when unset, which matches nothing.
fn admin_secret(env: &Env, token_env: &str) -> String {
    env.secret(token_env)
        .map(|s| s.to_string())
        .or_else(|_| env.var(token_env).map(|v| v.to_string()))
        .unwrap_or_default()
}

/// The admin path: a cache purge with the admin credential; anything else 404, as if nothing
/// were there (also without the credential, so the path gives nothing away).
async fn admin_response(
    gateway: &Gateway,
    admin: AdminRequest,
    env: &Env,
    headers: &[(String, String)],
    request_id: &str,
) -> (Response, Option<String>) {
    let not_found = || error_response(&GatewayError::NoRoute, request_id);
    let Some(config) = &gateway.config.admin else {
        return (not_found(), None);
    };
    let expected = admin_secret(env, &config.token_env);
    let authorization = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_str());
    if !bearer_matches(&expected, authorization) {
        let detail = expected
            .is_empty()
            .then(|| format!("admin secret {} is not set", config.token_env));
        return (not_found(), detail);
    }
    let AdminRequest::Purge { target } = admin else {
        return (not_found(), None);
    };
    let key_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n != "authorization")
        .cloned()
        .collect();
    let purged = match gateway.purge_key(&target, &key_headers) {
        Some(key) => cache_io::delete(&key).await,
        None => false,
    };
    let body = serde_json::json!({ "purged": purged, "request_id": request_id }).to_string();
    let list = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-request-id".to_string(), request_id.to_string()),
    ];
    let response = own_response(200, &list, Some(&body));
    (response, None)
}

/// Sends an answer of the SSO paths (or a login redirect), with its log line.
fn finish_answer(answer: crate::sso::Answer, log: &mut LogLine<'_>, elapsed_ms: u64) -> Response {
    let mut headers = answer.headers;
    if !headers.iter().any(|(n, _)| n == "x-request-id") {
        headers.push(("x-request-id".to_string(), log.request_id.to_string()));
    }
    log.status = answer.status;
    log.auth = answer.log;
    log.error = answer.error;
    log.detail = answer.detail;
    log.duration_ms = elapsed_ms;
    worker::console_log!("{}", log.to_json());
    own_response(answer.status, &headers, answer.body.as_deref())
}

/// Statuses whose responses have no body.
fn is_null_body_status(status: u16) -> bool {
    matches!(status, 101 | 204 | 205 | 304)
}

/// Serves one request.
pub async fn handle(request: Request, env: Env, ctx: Context) -> Response {
    let started = js_sys::Date::now();
    let isolate = isolate(&env);
    let request_id = isolate.ids.borrow_mut().next_id();
    let method = request.method();
    let elapsed = || (js_sys::Date::now() - started).max(0.0) as u64;
    let mut log = LogLine {
        request_id: &request_id,
        method: &method,
        path: None,
        route: None,
        status: 0,
        error: None,
        detail: None,
        auth: None,
        attempts: Vec::new(),
        cache: None,
        cache_reason: None,
        duration_ms: 0,
    };

    let gateway = match &isolate.gateway {
        Ok(g) => g,
        Err(problems) => {
            let error = GatewayError::ConfigInvalid;
            log.status = error.status();
            log.error = Some(error.code());
            log.detail = Some(problems.clone());
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
    // Step 2: the one reading of the request that every later step decides on.
    let head = match gateway.read(&incoming) {
        Ok(head) => head,
        Err(refusal) => {
            log.status = refusal.error.status();
            log.error = Some(refusal.error.code());
            log.duration_ms = elapsed();
            worker::console_log!("{}", log.to_json());
            return error_response(&refusal.error, &request_id);
        }
    };
    if let Some(admin) = gateway.admin_request(&head) {
        let (response, detail) =
            admin_response(gateway, admin, &env, &head.headers, &request_id).await;
        log.status = response.status();
        log.route = Some("admin");
        log.detail = detail;
        log.duration_ms = elapsed();
        worker::console_log!("{}", log.to_json());
        return response;
    }
    // The admin credential never reaches an origin, whatever the path: a request carrying it
    // anywhere but the admin path is answered as the admin path answers a stranger.
    if let Some(admin) = &gateway.config.admin {
        if head.header("authorization").is_some() {
            let expected = admin_secret(&env, &admin.token_env);
            if bearer_matches(&expected, head.header("authorization")) {
                log.status = GatewayError::NoRoute.status();
                log.route = Some("admin");
                log.detail =
                    Some("the admin credential on a path outside admin.path: not forwarded".into());
                log.duration_ms = elapsed();
                worker::console_log!("{}", log.to_json());
                return error_response(&GatewayError::NoRoute, &request_id);
            }
        }
    }
    if let Some(sso_request) = gateway.sso_request(&head) {
        let answer = isolate
            .sso
            .answer(
                gateway,
                &isolate.auth,
                sso_request,
                &url,
                &headers,
                &env,
                &request_id,
            )
            .await;
        log.route = Some("sso");
        return finish_answer(answer, &mut log, elapsed());
    }
    // Steps 2-5: a CORS preflight is answered at the edge; otherwise match, then auth (the core
    // checks what needs no key; crate::auth verifies tokens, crate::sso sessions).
    let accept = portcullis::headers::first(&headers, "accept");
    let mut html_errors = false;
    let planned = match gateway.preflight(&head) {
        Some(Ok(cors_headers)) => {
            log.status = 204;
            log.duration_ms = elapsed();
            worker::console_log!("{}", log.to_json());
            return preflight_response(cors_headers, &request_id);
        }
        Some(Err(refusal)) => Err(refusal),
        None => {
            let now = js_sys::Date::now();
            let cached = |policy: usize, token: &str| isolate.auth.is_cached(policy, token, now);
            match gateway.matched_with(&head, cached) {
                Ok(m) => {
                    let outcome = match &m.auth {
                        AuthStep::Session {
                            sso,
                            cookies,
                            optional,
                            redirect,
                        } => {
                            html_errors = true;
                            let session = isolate.sso.session(gateway, *sso, cookies, &env).await;
                            match session {
                                Err((AuthError::NoSession(_), _)) if *redirect && !*optional => {
                                    log.route = Some(gateway.config.routes[m.route].name.as_str());
                                    log.path = Some(&m.path);
                                    let answer = match isolate
                                        .sso
                                        .start_login(gateway, *sso, &url, None, &env)
                                        .await
                                    {
                                        Ok(answer) => answer,
                                        Err(r) => crate::sso::Answer::error(
                                            &r.error,
                                            &request_id,
                                            accept,
                                            Vec::new(),
                                            r.detail,
                                        ),
                                    };
                                    return finish_answer(answer, &mut log, elapsed());
                                }
                                other => crate::auth::Outcome::of_session(other, *optional),
                            }
                        }
                        _ => isolate.auth.authenticate(gateway, &m, &env, now).await,
                    };
                    log.auth = outcome.log;
                    log.detail = outcome.detail;
                    match outcome.error {
                        Some(e) if html_errors => Err(Refusal {
                            error: portcullis::sso::session_refusal(e),
                            route: Some(m.route),
                            path: Some(m.path.clone()),
                        }),
                        Some(e) => Err(gateway.auth_refusal(&m, e)),
                        None => Ok((
                            gateway.forward_plan(&m, &head, &request_id, outcome.identity.as_ref()),
                            outcome.identity,
                        )),
                    }
                }
                Err(refusal) => Err(refusal),
            }
        }
    };
    let (mut plan, identity) = match planned {
        Ok(planned) => planned,
        Err::<_, Refusal>(refusal) => {
            if let (GatewayError::Auth(e), None) = (&refusal.error, &log.auth) {
                // Refused before any key was needed (no token, malformed, alg, headers).
                log.auth = Some(portcullis::log::AuthLog {
                    outcome: "refused",
                    reason: Some(e.reason()),
                    kid: None,
                    iss: None,
                });
            }
            log.path = refusal.path.as_deref();
            log.route = refusal
                .route
                .map(|i| gateway.config.routes[i].name.as_str());
            log.status = refusal.error.status();
            log.error = Some(refusal.error.code());
            log.duration_ms = elapsed();
            worker::console_log!("{}", log.to_json());
            let accept = if html_errors { accept } else { None };
            let plan = refusal.error.response_for(&request_id, accept);
            return own_response(plan.status, &plan.headers, Some(&plan.body));
        }
    };
    // Signed identity for the origin, on every request with a verified identity.
    if let (Some(identity), Some(minting)) = (&identity, &gateway.config.minting) {
        let aud = &gateway.config.origins[plan.origin].name;
        match isolate.sso.mint(gateway, identity, aud, &env).await {
            Ok(Some(token)) => plan.headers.push((minting.header.clone(), token)),
            Ok(None) => {}
            Err(detail) => {
                let error = GatewayError::ConfigInvalid;
                log.status = error.status();
                log.error = Some(error.code());
                log.detail = Some(format!("identity: {detail}"));
                log.duration_ms = elapsed();
                worker::console_log!("{}", log.to_json());
                return error_response(&error, &request_id);
            }
        }
    }
    log.path = Some(&plan.path);
    log.route = Some(gateway.route(&plan).name.as_str());

    if let Some((binding, key)) = &plan.rate_limit {
        let period_s = gateway
            .route(&plan)
            .policy
            .rate_limit
            .as_ref()
            .map_or(60, |r| r.period_s);
        let refused = match env.rate_limiter(binding) {
            Ok(limiter) => match limiter.limit(key.clone()).await {
                Ok(outcome) if outcome.success => None,
                Ok(_) => Some((GatewayError::RateLimited { retry_after_s: period_s }, None)),
                // The binding failed: let the request through rather than refuse everyone.
                Err(e) => {
                    log.detail = Some(format!("rate limit {binding}: {e}"));
                    None
                }
            },
            Err(_) => Some((
                GatewayError::ConfigInvalid,
                Some(format!("rate-limit binding {binding} is not bound: add it to [[ratelimits]] in wrangler.toml")),
            )),
        };
        if let Some((error, detail)) = refused {
            log.status = error.status();
            log.error = Some(error.code());
            log.detail = detail;
            log.duration_ms = elapsed();
            worker::console_log!("{}", log.to_json());
            return error_response(&error, &request_id);
        }
    }

    if let Some(CacheStep::Lookup { key }) = &plan.cache {
        if let Some(stored) = cache_io::lookup(key).await {
            if let Some(response) =
                serve_stored(isolate, gateway, &plan, &request, &stored, key, &ctx)
            {
                log.cache = response.1;
                let response = response.0;
                log.status = response.status();
                log.duration_ms = elapsed();
                worker::console_log!("{}", log.to_json());
                return response;
            }
        }
    }

    let response = match forward(isolate, gateway, &plan, &request, &mut log.attempts).await {
        Err((error, detail)) => {
            log.error = Some(error.code());
            log.detail = Some(detail);
            error_response(&error, &request_id)
        }
        Ok(origin) => {
            let (built, cache_status, cache_reason) = client_response(gateway, &plan, origin, &ctx);
            log.cache = cache_status;
            log.cache_reason = cache_reason;
            match built {
                Ok(r) => r,
                Err(e) => {
                    let error = GatewayError::OriginUnavailable;
                    log.error = Some(error.code());
                    log.detail = Some(format!("response: {}", js_message(&e)));
                    error_response(&error, &request_id)
                }
            }
        }
    };
    log.status = response.status();
    log.duration_ms = elapsed();
    worker::console_log!("{}", log.to_json());
    response
}
