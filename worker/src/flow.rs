//! What the Worker's JavaScript entry (`worker/js/entry.mjs`) calls: the core's [`Exchange`],
//! one synchronous export per step, with compact text in and out.
//!
//! The entry does every runtime call (fetch, timers, the Cache API, rate limiters, logging, and
//! building `Headers`, `Request` and `Response`); this module keeps what lives between steps
//! (the isolate's config and pool health, each request's exchange and attempts) and turns the
//! core's steps into text. Nothing here decides: the exchange and the attempts machine do. The
//! steps whose I/O is long Rust code (verifying a token, an SSO path, minting the identity)
//! run here as one async export, [`perform`].
//!
//! A request is a flow: [`start`] gives its handle, [`poll`] its next step, one export per
//! result feeds the step back, and [`finish`] gives the log line and frees it.
//!
//! # The text of a step
//!
//! Fields are separated by `\n`, which no header name or value, URL or cache key can hold. A
//! header list is its count, then each name and value. The first field names the step:
//!
//! | step | fields | the entry then calls |
//! |---|---|---|
//! | `A` answer | status, headers, has body (`0`/`1`), the body (the rest, newlines and all) | [`finish`] |
//! | `S` admin secret | the secret's name | [`admin_secret`] |
//! | `P` purge | the cache key (empty: none) | [`purged`] |
//! | `O` SSO path, `U` authenticate, `M` mint | — | [`perform`] |
//! | `R` rate limit | binding, key | [`limited`] |
//! | `L` lookup | cache key | [`looked_up`] |
//! | `F` forward | body plan (`N` none, `S` stream, `C` counted, `R` replay), limit, method, headers | [`next`] and [`finished`] per attempt, then [`forwarded`] (or [`unreadable_body`], [`unbound`]) |
//! | `H` serve stored | HEAD (`0`/`1`), refresh (`0`/`1`), headers | [`refresh`] when asked, then [`finish`] |
//! | `W` respond | status, null body (`0`/`1`), headers, store (`0`/`1`), key, stored headers | [`finish`], or [`unbuildable`] |
//! | `C` store (refresh) | status, key, headers | [`end`] |
//! | `X` nothing more (refresh) | — | [`end`] |
//!
//! Compression needs no field of its own: when the core compresses a response (`W` or `H`), its
//! header list carries `content-encoding` and no `content-length`, and the entry builds the
//! `Response` from the unencoded body with those headers; the runtime encodes it as it is sent
//! (`encodeBody: "automatic"`, the default).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write as _;

use portcullis::auth::AuthError;
use portcullis::gateway::{content_length, AuthStep, CacheStep, ForwardPlan, Gateway, Incoming};
use portcullis::headers::HeaderList;
use portcullis::lifecycle::{Answer, Exchange, Step};
use portcullis::log::LogLine;
use portcullis::policy::Limited;
use portcullis::request_id::RequestIds;
use portcullis::upstream::attempts::{self, Attempts, BodyPlan, Next, Sent, Verdict};
use portcullis::upstream::{checks, Notice, PoolState};
use portcullis::{Config, GatewayError};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::Env;

/// The routes compiled into the Worker, used when `GATEWAY_CONFIG` is not set.
const EMBEDDED_CONFIG: &str = include_str!("../../routes.json");

/// At most this many background refreshes at once per isolate.
const MAX_REFRESHING: usize = 256;

/// What an isolate keeps between requests: the config, parsed and validated once.
struct Isolate {
    gateway: Result<Gateway, String>,
    ids: RefCell<RequestIds>,
    /// One per origin pool, in the config's order.
    pools: RefCell<Vec<PoolState>>,
    /// Cache keys being refreshed in the background (stale-while-revalidate), so that concurrent
    /// requests for a stale entry start one refresh, not many. Bounded.
    refreshing: RefCell<HashSet<String>>,
    auth: crate::auth::AuthCache,
    sso: crate::sso::SsoCache,
    /// When this isolate last read the active checks' results (ms; 0: never).
    checks_read_ms: std::cell::Cell<u64>,
}

thread_local! {
    static ISOLATE: RefCell<Option<&'static Isolate>> = const { RefCell::new(None) };
    static FLOWS: RefCell<Flows> = RefCell::new(Flows::default());
    /// A config read, waiting for the values of its secrets ([`secrets`]).
    static PENDING: RefCell<Option<Config>> = const { RefCell::new(None) };
}

fn isolate() -> Option<&'static Isolate> {
    ISOLATE.with(|cell| *cell.borrow())
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

/// Reads the config once per isolate (the entry calls it when [`start`] gives 0): `config` is
/// `GATEWAY_CONFIG`'s text, `None` for the embedded routes.json. A config with problems is kept
/// as its problems: every request then answers 500 `config_invalid` and logs them. Returns the
/// names of the Worker secrets the config's header values name (`{secret.NAME}`), one per line:
/// when there are any, the entry reads them and gives their values to [`secrets`] before the
/// first request.
#[wasm_bindgen]
pub fn configure(config: Option<String>) -> String {
    let text = config.as_deref().unwrap_or(EMBEDDED_CONFIG);
    match Config::from_json(text) {
        Err(problems) => {
            let problems = problems.to_string();
            worker::console_error!("{}", serde_json::json!({ "config_invalid": problems }));
            install(Isolate::of(Err(problems), random_seed()));
            String::new()
        }
        Ok(config) if config.secrets.is_empty() => {
            install(Isolate::of(Ok(Gateway::new(config)), random_seed()));
            String::new()
        }
        Ok(config) => {
            let names = config.secrets.join("\n");
            PENDING.with(|p| *p.borrow_mut() = Some(config));
            names
        }
    }
}

/// The values of the secrets [`configure`] named, packed as header lists are (a secret that
/// is not set is left out: requests that need it answer 500 `config_invalid`).
#[wasm_bindgen]
pub fn secrets(values: &str) {
    if let Some(config) = PENDING.with(|p| p.borrow_mut().take()) {
        let gateway = Gateway::new(config).with_secrets(unpack(values));
        install(Isolate::of(Ok(gateway), random_seed()));
    }
}

impl Isolate {
    fn of(gateway: Result<Gateway, String>, seed: [u8; 16]) -> Isolate {
        let pools = match &gateway {
            Ok(g) => g.config.origins.iter().map(PoolState::new).collect(),
            Err(_) => Vec::new(),
        };
        Isolate {
            gateway,
            ids: RefCell::new(RequestIds::new(seed)),
            pools: RefCell::new(pools),
            refreshing: RefCell::new(HashSet::new()),
            auth: Default::default(),
            sso: Default::default(),
            checks_read_ms: Default::default(),
        }
    }
}

fn install(isolate: Isolate) {
    // Leaked once per isolate: the config lives as long as the isolate does.
    let isolate: &'static Isolate = Box::leak(Box::new(isolate));
    ISOLATE.with(|cell| *cell.borrow_mut() = Some(isolate));
}

/// One request (or one background refresh) between steps.
struct Flow {
    kind: Kind,
    /// The attempts of the forward under way.
    attempts: Option<Attempts>,
    has_body: bool,
    random: u64,
}

enum Kind {
    /// The config has problems: the answer is 500, the log names them.
    Broken {
        request_id: String,
        method: String,
        problems: String,
        answer: Answer,
    },
    Exchange(Box<Exchange<'static>>),
    /// A stale entry's refresh: forward `plan` again and store the response under `key`.
    Refresh {
        plan: Box<ForwardPlan>,
        key: String,
        store: Option<(u16, String, HeaderList)>,
        done: bool,
        /// What is left of the request's subrequest budget (a refresh runs in its `waitUntil`).
        subrequests_left: u32,
    },
}

/// The flows under way in this isolate, by handle (index + 1; 0 is no flow).
#[derive(Default)]
struct Flows {
    slots: Vec<Option<Box<Flow>>>,
    free: Vec<usize>,
}

fn insert(flow: Flow) -> u32 {
    FLOWS.with(|flows| {
        let mut flows = flows.borrow_mut();
        let flow = Some(Box::new(flow));
        let index = match flows.free.pop() {
            Some(i) => {
                flows.slots[i] = flow;
                i
            }
            None => {
                flows.slots.push(flow);
                flows.slots.len() - 1
            }
        };
        index as u32 + 1
    })
}

/// Takes the flow out (for an await, or to free it).
fn take(handle: u32) -> Option<Box<Flow>> {
    let index = (handle as usize).checked_sub(1)?;
    FLOWS.with(|flows| flows.borrow_mut().slots.get_mut(index)?.take())
}

fn put_back(handle: u32, flow: Box<Flow>) {
    FLOWS.with(|flows| flows.borrow_mut().slots[handle as usize - 1] = Some(flow));
}

fn release(handle: u32) {
    FLOWS.with(|flows| flows.borrow_mut().free.push(handle as usize - 1));
}

/// Runs `f` on the flow `handle` (nothing when there is none).
fn with<R: Default>(handle: u32, f: impl FnOnce(&'static Isolate, &mut Flow) -> R) -> R {
    let (Some(isolate), Some(mut flow)) = (isolate(), take(handle)) else {
        return R::default();
    };
    let result = f(isolate, &mut flow);
    put_back(handle, flow);
    result
}

fn exchange(flow: &mut Flow) -> Option<&mut Exchange<'static>> {
    match &mut flow.kind {
        Kind::Exchange(ex) => Some(ex),
        _ => None,
    }
}

/// A header list as the entry packs it: name and value, each followed by `\n`.
fn unpack(text: &str) -> HeaderList {
    let mut list = Vec::new();
    let mut pieces = text.split_terminator('\n');
    while let (Some(name), Some(value)) = (pieces.next(), pieces.next()) {
        list.push((name.to_string(), value.to_string()));
    }
    list
}

fn pack(out: &mut String, list: &[(String, String)]) {
    let _ = write!(out, "\n{}", list.len());
    for (name, value) in list {
        out.push('\n');
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn pack_answer(answer: &Answer) -> String {
    let mut out = format!("A\n{}", answer.status);
    pack(&mut out, &answer.headers);
    match &answer.body {
        Some(body) => {
            out.push_str("\n1\n");
            out.push_str(body);
        }
        None => out.push_str("\n0\n"),
    }
    out
}

/// Starts a request: its handle, or 0 when the isolate has no config yet (call [`configure`],
/// then start again). `headers` is the request's header list packed as [`unpack`] reads it;
/// `random` a fresh random number in [0, 1) for `random` balancing; `now` ms since the epoch.
#[wasm_bindgen]
pub fn start(method: &str, url: &str, headers: &str, has_body: bool, random: f64, now: f64) -> u32 {
    let Some(isolate) = isolate() else {
        return 0;
    };
    let request_id = isolate.ids.borrow_mut().next_id();
    let kind = match &isolate.gateway {
        Err(problems) => Kind::Broken {
            answer: Answer::error(
                &GatewayError::ConfigInvalid,
                &request_id,
                None,
                Vec::new(),
                None,
            ),
            request_id,
            method: method.to_string(),
            problems: problems.clone(),
        },
        Ok(gateway) => {
            let headers = unpack(headers);
            let incoming = Incoming {
                method,
                url,
                headers: &headers,
            };
            let cached =
                move |policy: usize, token: &str| isolate.auth.is_cached(policy, token, now);
            Kind::Exchange(Box::new(Exchange::new(
                gateway,
                &incoming,
                &request_id,
                cached,
            )))
        }
    };
    insert(Flow {
        kind,
        attempts: None,
        has_body,
        random: (random * 9_007_199_254_740_992.0) as u64,
    })
}

fn now_ms(now: f64) -> u64 {
    now.max(0.0) as u64
}

/// The next step of a flow, as text (see the module docs).
#[wasm_bindgen]
pub fn poll(handle: u32, now: f64) -> String {
    with(handle, |isolate, flow| step(isolate, flow, now_ms(now)))
}

fn step(isolate: &'static Isolate, flow: &mut Flow, now: u64) -> String {
    let Flow {
        kind,
        attempts,
        has_body,
        random,
    } = flow;
    let ex = match kind {
        Kind::Broken { answer, .. } => return pack_answer(answer),
        Kind::Refresh {
            plan,
            store,
            done,
            subrequests_left,
            ..
        } => {
            if let Some((status, key, headers)) = store {
                let mut out = format!("C\n{status}\n{key}");
                pack(&mut out, headers);
                return out;
            }
            if *done {
                return "X".to_string();
            }
            return forward_step(
                isolate,
                attempts,
                plan,
                *has_body,
                *random,
                *subrequests_left,
                now,
            );
        }
        Kind::Exchange(ex) => ex,
    };
    // Steps that need no I/O this time (a token verified before, an identity token minted
    // before) are settled here, without a crossing.
    let gateway = isolate
        .gateway
        .as_ref()
        .expect("an exchange runs only with a config");
    loop {
        match ex.poll() {
            Step::Authenticate { matched, .. } => match isolate.auth.settled(matched) {
                Some(outcome) => ex.authenticated(outcome),
                None => return "U".to_string(),
            },
            Step::Mint {
                identity,
                aud,
                bound,
            } => match isolate.sso.reused(gateway, identity, aud, bound) {
                Some(token) => ex.minted(Ok(token)),
                None => return "M".to_string(),
            },
            _ => break,
        }
    }
    let left = ex.subrequests_left();
    match ex.poll() {
        Step::Answer(answer) => pack_answer(answer),
        Step::AdminSecret(name) => format!("S\n{name}"),
        Step::Purge(key) => format!("P\n{}", key.unwrap_or_default()),
        Step::Sso { .. } => "O".to_string(),
        Step::Authenticate { .. } | Step::Mint { .. } => unreachable!("settled above"),
        Step::RateLimit { binding, key } => format!("R\n{binding}\n{key}"),
        Step::Lookup { key } => format!("L\n{key}"),
        Step::Forward(plan) => forward_step(isolate, attempts, plan, *has_body, *random, left, now),
        Step::ServeStored {
            headers,
            refresh,
            plan,
        } => {
            let mut out = format!("H\n{}\n{}", flag(plan.method == "HEAD"), flag(refresh));
            pack(&mut out, headers);
            out
        }
        Step::Respond {
            status,
            headers,
            store,
        } => {
            let mut out = format!(
                "W\n{status}\n{}",
                flag(portcullis::http::is_null_body_status(status))
            );
            pack(&mut out, headers);
            match store {
                Some((key, stored)) => {
                    let _ = write!(out, "\n1\n{key}");
                    pack(&mut out, stored);
                }
                None => out.push_str("\n0"),
            }
            out
        }
    }
}

/// Step `F`: starts the attempts machine for `plan` (once) and says how to send the body.
#[allow(clippy::too_many_arguments)]
fn forward_step(
    isolate: &Isolate,
    attempts: &mut Option<Attempts>,
    plan: &ForwardPlan,
    has_body: bool,
    random: u64,
    subrequests_left: u32,
    now: u64,
) -> String {
    let gateway = isolate
        .gateway
        .as_ref()
        .expect("a flow forwards only with a config");
    let machine = attempts.get_or_insert_with(|| {
        let request = attempts::Request {
            method: &plan.method,
            hash_key: plan.hash_key.as_deref(),
            has_body,
            content_length: content_length(&plan.headers),
            max_body_bytes: plan.max_body_bytes,
            subrequests_left,
        };
        let origin = &gateway.config.origins[plan.origin];
        let pool = &mut isolate.pools.borrow_mut()[plan.origin];
        Attempts::start(origin, pool, &request, now, random)
    });
    let (body, max) = match machine.body() {
        BodyPlan::None => ('N', 0),
        BodyPlan::Stream => ('S', 0),
        BodyPlan::Counted(max) => ('C', max),
        BodyPlan::Replay => ('R', 0),
    };
    let mut out = format!("F\n{body}\n{max}\n{}", plan.method);
    pack(&mut out, &plan.headers);
    out
}

/// The plan being forwarded, and the gateway.
fn forwarding<'f>(
    isolate: &'static Isolate,
    kind: &'f Kind,
) -> Option<(&'static Gateway, &'f ForwardPlan)> {
    let gateway = isolate.gateway.as_ref().ok()?;
    match kind {
        Kind::Exchange(ex) => Some((gateway, ex.plan()?)),
        Kind::Refresh { plan, .. } => Some((gateway, plan)),
        Kind::Broken { .. } => None,
    }
}

/// The next attempt of step `F`: `url\ntimeout_ms\nbinding` (`binding`: the Worker binding
/// whose `fetch` sends it, empty for the global `fetch`), or empty when the attempts are over
/// (the flow's next step says what follows).
#[wasm_bindgen]
pub fn next(handle: u32, now: f64) -> String {
    with(handle, |isolate, flow| {
        let Some((gateway, plan)) = forwarding(isolate, &flow.kind) else {
            return String::new();
        };
        let Some(machine) = flow.attempts.as_mut() else {
            return String::new();
        };
        let origin = &gateway.config.origins[plan.origin];
        match machine.next(origin, now_ms(now)) {
            Next::Send { server, timeout_ms } => {
                let server = &origin.servers[server];
                let via = server.fetcher().unwrap_or("");
                format!("{}\n{timeout_ms}\n{via}", plan.url_for(server))
            }
            Next::GiveUp { error, detail } => {
                let log = std::mem::take(&mut machine.log);
                flow.attempts = None;
                match &mut flow.kind {
                    Kind::Exchange(ex) => ex.forwarded(Err((error, detail)), log, now_ms(now)),
                    Kind::Refresh { done, .. } => *done = true,
                    Kind::Broken { .. } => {}
                }
                String::new()
            }
        }
    })
}

/// How the attempt [`next`] asked for ended: `outcome` 0 response (with `status`), 1 failed
/// (`detail` the runtime's message), 2 timed out, 3 the body went over the route's limit.
/// Answers 0 serve this response, 1 drop it (cancel its body) and ask [`next`], 2 ask [`next`].
#[wasm_bindgen]
pub fn finished(handle: u32, outcome: u8, status: u16, detail: String, now: f64) -> u8 {
    with(handle, |isolate, flow| {
        let Some((gateway, plan)) = forwarding(isolate, &flow.kind) else {
            return 2;
        };
        let Some(machine) = flow.attempts.as_mut() else {
            return 2;
        };
        let sent = match outcome {
            0 => Sent::Response(status),
            1 => Sent::Failed(detail),
            2 => Sent::TimedOut,
            _ => Sent::BodyOverLimit,
        };
        let origin = &gateway.config.origins[plan.origin];
        let mut pools = isolate.pools.borrow_mut();
        match machine.finished(origin, &mut pools[plan.origin], sent, now_ms(now)) {
            Verdict::Serve => 0,
            Verdict::Retry => 1,
            Verdict::Next => 2,
        }
    })
}

/// The response head of the attempt [`finished`] said to serve.
#[wasm_bindgen]
pub fn forwarded(handle: u32, status: u16, headers: &str, now: f64) {
    with(handle, |isolate, flow| {
        let log = flow.attempts.take().map(|m| m.log).unwrap_or_default();
        let from_origin = unpack(headers);
        match &mut flow.kind {
            Kind::Exchange(ex) => ex.forwarded(Ok((status, from_origin)), log, now_ms(now)),
            Kind::Refresh {
                plan, store, done, ..
            } => {
                *done = true;
                if let Ok(gateway) = &isolate.gateway {
                    let list = gateway.response_headers(plan, &from_origin);
                    let outcome = gateway.cache_outcome(plan, status, &list, now_ms(now));
                    *store = outcome
                        .and_then(|o| o.store)
                        .map(|(key, stored)| (status, key, stored));
                }
            }
            Kind::Broken { .. } => {}
        }
    })
}

/// The result of step `S`: the secret's value (empty when unset).
#[wasm_bindgen]
pub fn admin_secret(handle: u32, secret: &str) {
    with(handle, |_, flow| {
        if let Some(ex) = exchange(flow) {
            ex.admin_secret(secret)
        }
    })
}

/// The result of step `P`: whether an entry was deleted.
#[wasm_bindgen]
pub fn purged(handle: u32, purged: bool) {
    with(handle, |_, flow| {
        if let Some(ex) = exchange(flow) {
            ex.purged(purged)
        }
    })
}

/// The result of step `R`: `outcome` 0 allowed, 1 refused, 2 the limiter failed (`detail`),
/// 3 no such binding.
#[wasm_bindgen]
pub fn limited(handle: u32, outcome: u8, detail: String) {
    let limited = match outcome {
        0 => Limited::Allowed,
        1 => Limited::Refused,
        2 => Limited::Failed(detail),
        _ => Limited::Unbound,
    };
    with(handle, |_, flow| {
        if let Some(ex) = exchange(flow) {
            ex.limited(limited)
        }
    })
}

/// The result of step `L`: the stored entry's headers, packed, or `None` when there is none,
/// and its status.
#[wasm_bindgen]
pub fn looked_up(handle: u32, headers: Option<String>, status: u16, now: f64) {
    with(handle, |_, flow| {
        if let Some(ex) = exchange(flow) {
            let list = headers.as_deref().map(unpack);
            ex.looked_up(list.as_deref().map(|l| (status, l)), now_ms(now))
        }
    })
}

/// During step `F`, when the binding [`next`] named is not bound (or has no `fetch`): 500
/// `config_invalid`, the binding named in the log; no further attempt.
#[wasm_bindgen]
pub fn unbound(handle: u32, binding: String, now: f64) {
    with(handle, |_, flow| {
        let log = flow.attempts.take().map(|m| m.log).unwrap_or_default();
        match &mut flow.kind {
            Kind::Exchange(ex) => {
                let detail = format!("binding {binding} is not bound (or has no fetch)");
                ex.forwarded(Err((GatewayError::ConfigInvalid, detail)), log, now_ms(now))
            }
            Kind::Refresh { done, .. } => *done = true,
            Kind::Broken { .. } => {}
        }
    })
}

/// During step `F`, when the request body to buffer for retries could not be read: 400.
#[wasm_bindgen]
pub fn unreadable_body(handle: u32, detail: String, now: f64) {
    with(handle, |_, flow| {
        let log = flow.attempts.take().map(|m| m.log).unwrap_or_default();
        if let Some(ex) = exchange(flow) {
            let detail = format!("body: {detail}");
            ex.forwarded(
                Err((GatewayError::UnreadableBody, detail)),
                log,
                now_ms(now),
            )
        }
    })
}

/// After step `W` or `H`, when the runtime could not build the response.
#[wasm_bindgen]
pub fn unbuildable(handle: u32, detail: String) {
    with(handle, |_, flow| {
        if let Some(ex) = exchange(flow) {
            ex.unbuildable(detail)
        }
    })
}

/// After step `H` with refresh: a flow that forwards the request again and says what to store
/// (its steps are `F`, then `C` or `X`); 0 when this entry is being refreshed already (or too
/// many are).
#[wasm_bindgen]
pub fn refresh(handle: u32) -> u32 {
    let parent = with(handle, |_, flow| {
        let random = flow.random;
        let ex = exchange(flow)?;
        // The stored entry's body still streams to the client: one cache read already spent.
        let left = ex.subrequests_left();
        ex.plan().cloned().map(|p| (Box::new(p), random, left))
    });
    let (Some(isolate), Some((plan, random, subrequests_left))) = (isolate(), parent) else {
        return 0;
    };
    let Some(CacheStep::Lookup { key }) = &plan.cache else {
        return 0;
    };
    let key = key.clone();
    {
        let mut refreshing = isolate.refreshing.borrow_mut();
        if refreshing.len() >= MAX_REFRESHING || !refreshing.insert(key.clone()) {
            return 0;
        }
    }
    insert(Flow {
        kind: Kind::Refresh {
            plan,
            key,
            store: None,
            done: false,
            subrequests_left,
        },
        attempts: None,
        has_body: false,
        // The request's own random number: a refresh is that request's forward again.
        random,
    })
}

/// The location's shared word on servers, after a request: what this isolate publishes (`P key
/// until_ms`: ejected until then; `D key`: back) and the keys it reads now (`R key`), one per
/// line; empty when there is nothing to do (the usual case). The entry does it in `waitUntil`,
/// through the Cache API, and gives each read's result to [`health_seen`].
#[wasm_bindgen]
pub fn health(now: f64) -> String {
    let Some(isolate) = isolate() else {
        return String::new();
    };
    let mut out = String::new();
    for pool in isolate.pools.borrow_mut().iter_mut() {
        for notice in pool.take_notices() {
            match notice {
                Notice::Ejected { key, until_ms } => {
                    let _ = writeln!(out, "P {key} {until_ms}");
                }
                Notice::Returned { key } => {
                    let _ = writeln!(out, "D {key}");
                }
            }
        }
        if let Some(keys) = pool.reads_due(now_ms(now)) {
            for key in keys {
                let _ = writeln!(out, "R {key}");
            }
        }
    }
    out
}

/// A read [`health`] asked for: the server under `key` is ejected until `until_ms` by another
/// isolate (0: no entry).
#[wasm_bindgen]
pub fn health_seen(key: &str, until_ms: f64) {
    if let Some(isolate) = isolate() {
        let until = now_ms(until_ms);
        for pool in isolate.pools.borrow_mut().iter_mut() {
            if pool.learned(key, until) {
                return;
            }
        }
    }
}

/// Whether the isolate has its config (the scheduled handler calls [`configure`] when not).
#[wasm_bindgen]
pub fn configured() -> bool {
    isolate().is_some()
}

/// The KV binding and key of the active checks' results, `BINDING\nKEY`.
#[wasm_bindgen]
pub fn checks_store() -> String {
    format!("{}\n{}", checks::CHECKS_BINDING, checks::CHECKS_KEY)
}

/// A scheduled run's probes, given the stored results (`None`: none yet): four fields each,
/// `key\nurl\ntimeout_ms\nbinding` (`binding` empty for the global `fetch`), all in one text;
/// empty when nothing is due. The entry sends them all at once, each under its timeout, and
/// gives what happened to [`checks_record`].
#[wasm_bindgen]
pub fn checks_plan(previous: Option<String>, now: f64) -> String {
    let Some(Ok(gateway)) = isolate().map(|i| &i.gateway) else {
        return String::new();
    };
    let previous = checks::Checks::from_json(previous.as_deref().unwrap_or(""));
    let plan = checks::plan(&gateway.config.origins, &previous, now_ms(now));
    let mut out = String::new();
    for p in &plan.probes {
        let via = p.via.as_deref().unwrap_or("");
        let _ = write!(out, "{}\n{}\n{}\n{via}\n", p.key, p.url, p.timeout_ms);
    }
    out.pop();
    out
}

/// The results of a run that [`checks_plan`] planned at `started`: four fields per probe,
/// `key\noutcome\nstatus\ndetail` (outcome 0 response, 1 failed, 2 timed out, 3 unbound; the
/// detail has no newline). Returns the document to store, a newline, and the run's log line.
#[wasm_bindgen]
pub fn checks_record(previous: Option<String>, results: &str, started: f64, now: f64) -> String {
    let Some(Ok(gateway)) = isolate().map(|i| &i.gateway) else {
        return String::new();
    };
    let origins = &gateway.config.origins;
    let previous = checks::Checks::from_json(previous.as_deref().unwrap_or(""));
    let plan = checks::plan(origins, &previous, now_ms(started));
    let fields: Vec<&str> = results.split('\n').collect();
    let mut new = Vec::new();
    let mut logged = Vec::new();
    for f in fields.chunks_exact(4) {
        let Some(probe) = plan.probes.iter().find(|p| p.key == f[0]) else {
            continue;
        };
        let origin = &origins[probe.origin];
        let Some(check) = &origin.health else {
            continue;
        };
        let outcome = match f[1] {
            "0" => checks::Outcome::Response(f[2].parse().unwrap_or(0)),
            "2" => checks::Outcome::TimedOut,
            "3" => checks::Outcome::Unbound(probe.via.clone().unwrap_or_default()),
            _ => checks::Outcome::Failed(f[3].to_string()),
        };
        let server = origin.servers[probe.server].log_name();
        let result = checks::judge(check, &outcome, server.clone(), now_ms(started));
        logged.push(serde_json::json!({
            "origin": origin.name,
            "server": server,
            "healthy": result.healthy,
            "status": result.status,
            "reason": result.reason,
        }));
        new.push((f[0].to_string(), result));
    }
    let after = checks::record(origins, &previous, new);
    let log = serde_json::json!({
        "health_checks": {
            "probed": logged.len(),
            "unhealthy": logged.iter().filter(|r| r["healthy"] == false).count(),
            "deferred": plan.deferred,
            "duration_ms": now_ms(now).saturating_sub(now_ms(started)),
            "results": logged,
        }
    });
    format!("{}\n{log}", after.to_json())
}

/// Whether the isolate reads the active checks' results now, after a request: when a pool has
/// a check and the last read is [`portcullis::upstream::HEALTH_READ_MS`] old. The entry reads
/// them in `waitUntil` and gives them to [`checks_seen`].
#[wasm_bindgen]
pub fn checks_due(now: f64) -> bool {
    let Some(isolate) = isolate() else {
        return false;
    };
    let Ok(gateway) = &isolate.gateway else {
        return false;
    };
    if !gateway.config.origins.iter().any(|o| o.health.is_some()) {
        return false;
    }
    let now = now_ms(now);
    let last = isolate.checks_read_ms.get();
    if last != 0 && now.saturating_sub(last) < portcullis::upstream::HEALTH_READ_MS {
        return false;
    }
    isolate.checks_read_ms.set(now.max(1));
    true
}

/// The stored results the entry read (`None`: none): a server whose last check failed is
/// skipped until a check passes.
#[wasm_bindgen]
pub fn checks_seen(text: Option<String>, now: f64) {
    let Some(isolate) = isolate() else {
        return;
    };
    let Ok(gateway) = &isolate.gateway else {
        return;
    };
    let stored = checks::Checks::from_json(text.as_deref().unwrap_or(""));
    let mut pools = isolate.pools.borrow_mut();
    for (o, s, down) in checks::downs(&gateway.config.origins, &stored, now_ms(now)) {
        if let Some(pool) = pools.get_mut(o) {
            pool.checked(s, down, now_ms(now));
        }
    }
}

/// Ends a flow without a log line (a refresh).
#[wasm_bindgen]
pub fn end(handle: u32) {
    let Some(flow) = take(handle) else {
        return;
    };
    release(handle);
    if let (Kind::Refresh { key, .. }, Some(isolate)) = (&flow.kind, isolate()) {
        isolate.refreshing.borrow_mut().remove(key);
    }
}

/// Ends a request: its one log line, with the status the client got and the time it took.
#[wasm_bindgen]
pub fn finish(handle: u32, status: u16, duration_ms: f64) -> String {
    let Some(mut flow) = take(handle) else {
        return String::new();
    };
    release(handle);
    let duration_ms = now_ms(duration_ms);
    match &mut flow.kind {
        Kind::Exchange(ex) => ex.log_line(status, duration_ms),
        Kind::Broken {
            request_id,
            method,
            problems,
            ..
        } => LogLine {
            request_id,
            method,
            path: None,
            route: None,
            status,
            error: Some(GatewayError::ConfigInvalid.code()),
            detail: Some(problems.clone()),
            auth: None,
            attempts: Vec::new(),
            cache: None,
            cache_reason: None,
            upgrade: None,
            duration_ms,
        }
        .to_json(),
        Kind::Refresh { .. } => String::new(),
    }
}

/// Steps `O`, `U` and `M`, whose I/O is Rust code: answers an SSO path, finds the caller's
/// identity, or mints the signed identity. Resolves when the flow has the result.
#[wasm_bindgen]
pub fn perform(handle: u32, env: Env) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move {
        if let (Some(isolate), Some(mut flow)) = (isolate(), take(handle)) {
            if let Kind::Exchange(ex) = &mut flow.kind {
                // Boxed: the code of the paths a public request never takes stays out of the
                // common path (smaller to compile on an isolate's first request).
                Box::pin(perform_step(isolate, ex, &env)).await;
            }
            put_back(handle, flow);
        }
        Ok(JsValue::UNDEFINED)
    })
}

async fn perform_step(isolate: &'static Isolate, exchange: &mut Exchange<'static>, env: &Env) {
    let Ok(gateway) = &isolate.gateway else {
        return;
    };
    let now = js_sys::Date::now();
    let request_id = exchange.request_id().to_string();
    let before = crate::auth::subrequests_made();
    perform_io(isolate, gateway, exchange, env, now, &request_id).await;
    exchange.spent(crate::auth::subrequests_made().wrapping_sub(before));
}

async fn perform_io(
    isolate: &'static Isolate,
    gateway: &'static Gateway,
    exchange: &mut Exchange<'static>,
    env: &Env,
    now: f64,
    request_id: &str,
) {
    match exchange.poll() {
        Step::Sso { request: sso, head } => {
            let answer = isolate
                .sso
                .answer(
                    gateway,
                    &isolate.auth,
                    sso.clone(),
                    &head.url,
                    &head.headers,
                    env,
                    request_id,
                )
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
                let session = isolate.sso.session(gateway, sso, cookies, env).await;
                match session {
                    Err((AuthError::NoSession(_), _)) if redirect && !optional => {
                        let accept = head.header("accept").map(str::to_string);
                        let url = head.url.clone();
                        let answer =
                            match isolate.sso.start_login(gateway, sso, &url, None, env).await {
                                Ok(answer) => answer,
                                Err(r) => Answer::error(
                                    &r.error,
                                    request_id,
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
                let outcome = isolate.auth.authenticate(gateway, matched, env, now).await;
                exchange.authenticated(outcome);
            }
        },
        Step::Mint {
            identity,
            aud,
            bound,
        } => {
            let (identity, aud, bound) = (identity.cloned(), aud.to_string(), bound.cloned());
            let token = isolate
                .sso
                .mint(gateway, identity.as_ref(), &aud, bound.as_ref(), env)
                .await;
            exchange.minted(token);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
