//! The adapter: carries out the core's plans in the Workers runtime. The only code that touches
//! `worker`, `web_sys` and `js_sys`.
//!
//! Per request it crosses into JavaScript a fixed number of times, whatever the number of
//! headers: header lists go across as one JSON string each way.

use std::cell::RefCell;
use std::time::Duration;

use futures_util::future::{select, Either};
use portcullis::gateway::{ForwardPlan, Gateway, Incoming, Refusal};
use portcullis::log::{Attempt, LogLine, Outcome};
use portcullis::request_id::RequestIds;
use portcullis::{Config, GatewayError};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, Headers, Request, RequestInit, RequestRedirect, Response, ResponseInit,
};
use worker::{Delay, Env};

/// The routes compiled into the Worker, used when `GATEWAY_CONFIG` is not set.
const EMBEDDED_CONFIG: &str = include_str!("../../routes.json");

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
    auth: crate::auth::AuthCache,
}

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
        let isolate: &'static Isolate = Box::leak(Box::new(Isolate {
            gateway,
            ids: RefCell::new(RequestIds::new(random_seed())),
            auth: Default::default(),
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

fn error_response(error: &GatewayError, request_id: &str) -> Response {
    let plan = error.response(request_id);
    let init = ResponseInit::new();
    init.set_status(plan.status);
    if let Ok(headers) = headers_from(&plan.headers) {
        init.set_headers(&headers);
    }
    Response::new_with_opt_str_and_init(Some(&plan.body), &init)
        .unwrap_or_else(|_| Response::new().expect("an empty Response can always be made"))
}

/// How forwarding ended, before it becomes a response.
enum Forwarded {
    Response(Response),
    Failed(GatewayError, String),
}

/// One attempt: the subrequest, bounded by the plan's timeout until response headers arrive.
async fn attempt(plan: &ForwardPlan, incoming: &Request) -> (Forwarded, Outcome) {
    let failed = |e: GatewayError, detail: String, outcome| (Forwarded::Failed(e, detail), outcome);
    let headers = match headers_from(&plan.headers) {
        Ok(h) => h,
        Err(e) => {
            return failed(
                GatewayError::OriginUnavailable,
                format!("headers: {e:?}"),
                Outcome::ConnectFailed,
            )
        }
    };
    let controller = AbortController::new().ok();
    let init = RequestInit::new();
    init.set_method(&plan.method);
    init.set_headers(&headers);
    init.set_redirect(RequestRedirect::Manual);
    if let Some(body) = incoming.body() {
        init.set_body(&body);
    }
    if let Some(c) = &controller {
        init.set_signal(Some(&c.signal()));
    }
    let request = match Request::new_with_str_and_init(&plan.url, &init) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                GatewayError::OriginUnavailable,
                format!("request: {e:?}"),
                Outcome::ConnectFailed,
            )
        }
    };
    let fetch = JsFuture::from(global_fetch(&request));
    let timer = Delay::from(Duration::from_millis(u64::from(plan.timeout_ms)));
    match select(fetch, timer).await {
        Either::Left((Ok(value), _)) => match value.dyn_into::<Response>() {
            Ok(response) => (Forwarded::Response(response), Outcome::Response),
            Err(_) => failed(
                GatewayError::OriginUnavailable,
                "fetch gave no Response".into(),
                Outcome::ConnectFailed,
            ),
        },
        Either::Left((Err(e), _)) => {
            let detail = js_sys::Reflect::get(&e, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
                .unwrap_or_else(|| format!("{e:?}"));
            failed(
                GatewayError::OriginUnavailable,
                detail,
                Outcome::ConnectFailed,
            )
        }
        Either::Right(((), _)) => {
            if let Some(c) = controller {
                c.abort();
            }
            failed(
                GatewayError::OriginTimeout,
                format!("no response headers within {} ms", plan.timeout_ms),
                Outcome::Timeout,
            )
        }
    }
}

/// Statuses whose responses have no body.
fn is_null_body_status(status: u16) -> bool {
    matches!(status, 101 | 204 | 205 | 304)
}

/// Serves one request.
pub async fn handle(request: Request, env: Env) -> Response {
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
    // Steps 2-5: match, then auth (the core checks what needs no key; crate::auth verifies).
    let now = js_sys::Date::now();
    let cached = |policy: usize, token: &str| isolate.auth.is_cached(policy, token, now);
    let planned = match gateway.matched_with(&incoming, cached) {
        Ok(m) => {
            let outcome = isolate.auth.authenticate(gateway, &m, &env, now).await;
            log.auth = outcome.log;
            log.detail = outcome.detail;
            match outcome.error {
                Some(e) => Err(gateway.auth_refusal(&m, e)),
                None => {
                    Ok(gateway.forward_plan(&m, &incoming, &request_id, outcome.identity.as_ref()))
                }
            }
        }
        Err(refusal) => Err(refusal),
    };
    let plan = match planned {
        Ok(plan) => plan,
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
            return error_response(&refusal.error, &request_id);
        }
    };
    log.path = Some(&plan.path);
    log.route = Some(gateway.route(&plan).name.as_str());

    let attempt_started = js_sys::Date::now();
    let (forwarded, outcome) = attempt(&plan, &request).await;
    let status = match &forwarded {
        Forwarded::Response(r) => Some(r.status()),
        Forwarded::Failed(..) => None,
    };
    log.attempts.push(Attempt {
        server: plan.server,
        outcome,
        status,
        duration_ms: (js_sys::Date::now() - attempt_started).max(0.0) as u64,
    });

    let response = match forwarded {
        Forwarded::Failed(error, detail) => {
            log.error = Some(error.code());
            log.detail = Some(detail);
            error_response(&error, &request_id)
        }
        Forwarded::Response(origin) => {
            let status = origin.status();
            let list = gateway.response_headers(&plan, &header_list(&origin.headers()));
            let init = ResponseInit::new();
            init.set_status(status);
            let built = headers_from(&list).and_then(|headers| {
                init.set_headers(&headers);
                let body = if is_null_body_status(status) {
                    None
                } else {
                    origin.body()
                };
                Response::new_with_opt_readable_stream_and_init(body.as_ref(), &init)
            });
            match built {
                Ok(r) => r,
                Err(e) => {
                    let error = GatewayError::OriginUnavailable;
                    log.error = Some(error.code());
                    log.detail = Some(format!("response: {e:?}"));
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
