//! Step 5 in the Worker: carries out what the core's [`AuthStep::Verify`] asks for.
//!
//! - Keys: a policy's inline `jwks`; or its `jwks_url`, fetched and kept per isolate and in the
//!   Cache API (`caches.default`, so a new isolate does not go to the provider), for the
//!   provider's `Cache-Control: max-age` clamped to [`MIN_TTL_MS`, `MAX_TTL_MS`]; refetched when
//!   stale or when a token names an unknown `kid`, at most once per `jwks_min_refetch_s`; the
//!   last good keys are served while the provider is down. HS*: the secret named by
//!   `hmac_secret_env`, at least 32 bytes, read once per isolate.
//! - Signatures: HS* in Rust (the core's `verify_hmac`); RS*, PS*, ES256 and EdDSA with
//!   WebCrypto (`crypto.subtle`), each imported `CryptoKey` kept per isolate.
//! - A verified-token cache per isolate, bounded: a token seen again skips signature work until
//!   it expires (or `max_age_s` runs out), and is dropped when its key leaves the key set.
//!   Failures are never cached.

// The comparison build leaves the WebCrypto path unused.
#![cfg_attr(feature = "pure-rust-verify", allow(dead_code))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{select, Either};
use portcullis::auth::verify::verify_hmac;
use portcullis::auth::{Alg, AuthError, Identity, KeySet, Policy, Prepared, MIN_HMAC_SECRET_BYTES};
use portcullis::gateway::{AuthStep, Gateway, Matched};
use portcullis::log::AuthLog;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, Request, RequestInit, Response, SubtleCrypto};
use worker::{Delay, Env};

/// Bounds on how long fetched keys are fresh, whatever the provider's `Cache-Control` says.
pub const MIN_TTL_MS: f64 = 60_000.0;
pub const MAX_TTL_MS: f64 = 86_400_000.0;
/// Freshness when the provider sends no `max-age`.
pub const DEFAULT_TTL_MS: f64 = 600_000.0;
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT_MS: u64 = 5_000;
/// Entries in the verified-token cache, and imported keys, per isolate.
const MAX_VERIFIED: usize = 4096;
const MAX_CRYPTO_KEYS: usize = 64;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> js_sys::Promise;
}

/// Keys fetched for one policy.
#[derive(Default)]
struct Fetched {
    keys: Option<KeySet>,
    /// When the keys stop being fresh (ms since the epoch).
    fresh_until: f64,
    /// The last fetch attempt (ms), successful or not: refetches are spaced by the policy's
    /// `jwks_min_refetch_s`.
    last_attempt: Option<f64>,
    /// A fetch is under way: requests that find no keys at all wait for it.
    in_flight: bool,
}

struct Verified {
    policy: usize,
    identity: Identity,
    /// Until when (ms) the identity may be reused: `exp`, or `iat + max_age_s`, plus leeway.
    until_ms: f64,
    /// The key that verified it (`None` for HMAC): the entry dies when the key leaves the set.
    key: Option<String>,
}

/// What one isolate keeps for auth.
#[derive(Default)]
pub struct AuthCache {
    fetched: RefCell<HashMap<usize, Fetched>>,
    crypto_keys: RefCell<HashMap<(String, &'static str), CryptoKey>>,
    verified: RefCell<HashMap<String, Verified>>,
    secrets: RefCell<HashMap<usize, Option<Vec<u8>>>>,
    /// WebCrypto verify parameters per algorithm, made once.
    verify_params: RefCell<HashMap<&'static str, js_sys::Object>>,
    /// Number of JWKS fetches made by this isolate (for the log).
    pub fetches: RefCell<u64>,
}

/// The result of step 5 for the adapter: the core's [`portcullis::lifecycle::AuthResult`].
pub use portcullis::lifecycle::AuthResult as Outcome;

fn short_kid(kid: Option<&String>) -> Option<String> {
    kid.map(|k| k.chars().take(64).collect())
}

fn subtle() -> Option<SubtleCrypto> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok()?;
    Some(crypto.dyn_into::<web_sys::Crypto>().ok()?.subtle())
}

fn js_object(json: &str) -> Option<js_sys::Object> {
    js_sys::JSON::parse(json).ok()?.dyn_into().ok()
}

/// WebCrypto's import and verify parameters for an algorithm.
fn webcrypto_params(alg: Alg) -> Option<(String, String)> {
    let (hash, len) = alg.hash();
    Some(match alg {
        Alg::Rs256 | Alg::Rs384 | Alg::Rs512 => (
            format!(r#"{{"name":"RSASSA-PKCS1-v1_5","hash":"{hash}"}}"#),
            r#"{"name":"RSASSA-PKCS1-v1_5"}"#.to_string(),
        ),
        Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => (
            format!(r#"{{"name":"RSA-PSS","hash":"{hash}"}}"#),
            format!(r#"{{"name":"RSA-PSS","saltLength":{len}}}"#),
        ),
        Alg::Es256 => (
            r#"{"name":"ECDSA","namedCurve":"P-256"}"#.to_string(),
            r#"{"name":"ECDSA","hash":"SHA-256"}"#.to_string(),
        ),
        Alg::EdDsa => (
            r#"{"name":"Ed25519"}"#.to_string(),
            r#"{"name":"Ed25519"}"#.to_string(),
        ),
        _ => return None,
    })
}

impl AuthCache {
    async fn crypto_key(&self, public_json: &str, alg: Alg) -> Result<CryptoKey, String> {
        let id = (public_json.to_string(), alg.name());
        if let Some(k) = self.crypto_keys.borrow().get(&id) {
            return Ok(k.clone());
        }
        let subtle = subtle().ok_or("no crypto.subtle")?;
        let (import, _) = webcrypto_params(alg).ok_or("not a WebCrypto algorithm")?;
        let jwk = js_object(public_json).ok_or("bad JWK")?;
        let params = js_object(&import).ok_or("bad params")?;
        let usages = js_sys::Array::of1(&JsValue::from_str("verify"));
        let promise = subtle
            .import_key_with_object("jwk", &jwk, &params, false, &usages)
            .map_err(|e| format!("importKey: {e:?}"))?;
        let key: CryptoKey = JsFuture::from(promise)
            .await
            .map_err(|e| format!("importKey: {e:?}"))?
            .dyn_into()
            .map_err(|_| "importKey gave no CryptoKey")?;
        let mut keys = self.crypto_keys.borrow_mut();
        if keys.len() >= MAX_CRYPTO_KEYS {
            keys.clear();
        }
        keys.insert(id, key.clone());
        Ok(key)
    }

    async fn webcrypto_verify(&self, public_json: &str, token: &Prepared) -> Result<bool, String> {
        let key = self.crypto_key(public_json, token.alg).await?;
        let cached = self.verify_params.borrow().get(token.alg.name()).cloned();
        let params = match cached {
            Some(p) => p,
            None => {
                let (_, verify) = webcrypto_params(token.alg).ok_or("not a WebCrypto algorithm")?;
                let p = js_object(&verify).ok_or("bad params")?;
                self.verify_params
                    .borrow_mut()
                    .insert(token.alg.name(), p.clone());
                p
            }
        };
        let subtle = subtle().ok_or("no crypto.subtle")?;
        let promise = subtle
            .verify_with_object_and_u8_array_and_u8_array(
                &params,
                &key,
                &token.signature,
                token.signing_input.as_bytes(),
            )
            .map_err(|e| format!("verify: {e:?}"))?;
        Ok(JsFuture::from(promise)
            .await
            .map_err(|e| format!("verify: {e:?}"))?
            .as_bool()
            .unwrap_or(false))
    }

    fn secret(&self, index: usize, policy: &Policy, env: &Env) -> Option<Vec<u8>> {
        self.secrets
            .borrow_mut()
            .entry(index)
            .or_insert_with(|| {
                let name = policy.hmac_secret_env.as_deref()?;
                let value = js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
                value
                    .as_string()
                    .map(String::into_bytes)
                    .filter(|s| s.len() >= MIN_HMAC_SECRET_BYTES)
            })
            .clone()
    }

    /// Fetches the key set at `url`: from the Cache API when a fresh copy is there, else from
    /// the provider (then stored in the Cache API). `bypass_cache` skips the Cache API copy. Returns the keys and their freshness (ms).
    async fn fetch_jwks(
        &self,
        url: &str,
        now: f64,
        bypass_cache: bool,
    ) -> Result<(KeySet, f64), String> {
        let cache = default_cache();
        if let Some(cache) = cache.as_ref().filter(|_| !bypass_cache) {
            count_subrequest();
            if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
                if let Ok(resp) = hit.dyn_into::<Response>() {
                    let until = resp
                        .headers()
                        .get("x-portcullis-fresh-until")
                        .ok()
                        .flatten()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    if until > now {
                        if let Some(text) = response_text(&resp).await {
                            if let Ok((keys, _)) = KeySet::from_jwks_json(&text) {
                                return Ok((keys, until));
                            }
                        }
                    }
                }
            }
        }
        *self.fetches.borrow_mut() += 1;
        let init = RequestInit::new();
        init.set_method("GET");
        let request =
            Request::new_with_str_and_init(url, &init).map_err(|e| format!("request: {e:?}"))?;
        let resp = fetch_timed(&request, FETCH_TIMEOUT_MS)
            .await
            .map_err(|e| format!("JWKS {e}"))?;
        if resp.status() != 200 {
            return Err(format!("JWKS answered {}", resp.status()));
        }
        let ttl = ttl_ms(
            resp.headers()
                .get("cache-control")
                .ok()
                .flatten()
                .as_deref(),
        );
        let text = response_text(&resp).await.ok_or("JWKS body unreadable")?;
        let (keys, _skipped) = KeySet::from_jwks_json(&text)?;
        let until = now + ttl;
        if let Some(cache) = &cache {
            store_in_cache(cache, url, &text, ttl, until).await;
        }
        Ok((keys, until))
    }

    /// The keys of a `jwks_url` policy, refreshed when stale or (`unknown_kid`) when the token
    /// names a key not in the set, never more often than the policy's refetch interval.
    async fn url_keys(
        &self,
        index: usize,
        policy: &Policy,
        url: &str,
        now: f64,
        unknown_kid: bool,
        notes: &mut Option<String>,
    ) -> Result<KeySet, String> {
        let (stale, may_fetch) = {
            let fetched = self.fetched.borrow();
            let entry = fetched.get(&index);
            let stale = entry.is_none_or(|e| e.keys.is_none() || now >= e.fresh_until);
            let spacing = policy.jwks_min_refetch_s as f64 * 1000.0;
            let may = entry
                .and_then(|e| e.last_attempt)
                .is_none_or(|t| now - t >= spacing);
            (stale, may)
        };
        if (stale || unknown_kid) && may_fetch {
            {
                let mut fetched = self.fetched.borrow_mut();
                let entry = fetched.entry(index).or_default();
                entry.last_attempt = Some(now);
                entry.in_flight = true;
            }
            // An unknown kid goes to the provider itself: the shared copy may be the old set.
            let result = self.fetch_jwks(url, now, unknown_kid).await;
            self.fetched
                .borrow_mut()
                .entry(index)
                .or_default()
                .in_flight = false;
            match result {
                Ok((keys, until)) => {
                    let mut fetched = self.fetched.borrow_mut();
                    let entry = fetched.entry(index).or_default();
                    entry.keys = Some(keys);
                    entry.fresh_until = until;
                    // Verified tokens whose key left the set are dropped.
                    let current = entry.keys.clone().unwrap_or_default();
                    self.verified.borrow_mut().retain(|_, v| {
                        v.policy != index || v.key.as_ref().is_none_or(|k| current.contains(k))
                    });
                }
                Err(e) => {
                    // Serve the last good keys, if any.
                    if self
                        .fetched
                        .borrow()
                        .get(&index)
                        .and_then(|e| e.keys.as_ref())
                        .is_none()
                    {
                        return Err(e);
                    }
                    *notes = Some(format!(
                        "jwks_fetch_failed for policy '{}': {e}; serving the last good keys",
                        policy.name
                    ));
                }
            }
        }
        // A cold isolate under concurrent requests: one fetches, the others wait for it
        // (bounded by the fetch timeout) rather than fail.
        let waited_since = js_sys::Date::now();
        loop {
            let (keys, in_flight) = {
                let fetched = self.fetched.borrow();
                let entry = fetched.get(&index);
                (
                    entry.and_then(|e| e.keys.clone()),
                    entry.is_some_and(|e| e.in_flight),
                )
            };
            match keys {
                Some(keys) => return Ok(keys),
                None if in_flight
                    && js_sys::Date::now() - waited_since < FETCH_TIMEOUT_MS as f64 + 1000.0 =>
                {
                    Delay::from(Duration::from_millis(10)).await
                }
                None => return Err("no JWKS fetched yet".to_string()),
            }
        }
    }

    /// The signature step of verification: the policy's keys (inline, or fetched from
    /// `jwks_url`), or its HMAC secret, against the token. Returns the verifying key (`None` for
    /// HMAC), or the refusal with an operator detail.
    #[allow(clippy::too_many_arguments)]
    pub async fn verify_signature(
        &self,
        index: usize,
        policy: &Policy,
        token: &Prepared,
        env: &Env,
        now: f64,
        jwks_url: Option<&str>,
        notes: &mut Option<String>,
    ) -> Result<Option<String>, (AuthError, Option<String>)> {
        if token.alg.is_hmac() {
            let Some(secret) = self.secret(index, policy, env) else {
                return Err((
                    AuthError::KeysUnavailable("hmac_secret"),
                    Some(format!(
                        "auth policy '{}': the Worker secret {} is missing or shorter than {} bytes",
                        policy.name,
                        policy.hmac_secret_env.as_deref().unwrap_or("?"),
                        MIN_HMAC_SECRET_BYTES
                    )),
                ));
            };
            if !verify_hmac(
                token.alg,
                &secret,
                token.signing_input.as_bytes(),
                &token.signature,
            ) {
                return Err((AuthError::BadSignature, None));
            }
            Ok(None)
        } else {
            let keys = match (&policy.jwks, jwks_url) {
                (Some(keys), _) => keys.clone(),
                (None, Some(url)) => {
                    let mut keys = match self.url_keys(index, policy, url, now, false, notes).await
                    {
                        Ok(k) => k,
                        Err(e) => return Err((AuthError::KeysUnavailable("jwks"), Some(e))),
                    };
                    if let Some(kid) = &token.kid {
                        if !keys.has_kid(kid) {
                            keys = match self.url_keys(index, policy, url, now, true, notes).await {
                                Ok(k) => k,
                                Err(e) => {
                                    return Err((AuthError::KeysUnavailable("jwks"), Some(e)))
                                }
                            };
                        }
                    }
                    keys
                }
                (None, None) => return Err((AuthError::KeysUnavailable("no key source"), None)),
            };
            let candidates = match keys.candidates(token.alg, token.kid.as_deref()) {
                Ok(c) => c,
                Err(e) => return Err((e, notes.clone())),
            };
            let mut ok = None;
            for key in candidates {
                // `pure-rust-verify` (for size and CPU comparisons only): jwt-compact's own
                // RSA/ECDSA/Ed25519 compiled to Wasm instead of WebCrypto.
                #[cfg(feature = "pure-rust-verify")]
                let result: Result<bool, String> = Ok(portcullis::auth::verify::verify_native(
                    token.alg,
                    key,
                    token.signing_input.as_bytes(),
                    &token.signature,
                ));
                #[cfg(not(feature = "pure-rust-verify"))]
                let result = self.webcrypto_verify(&key.public_json, token).await;
                match result {
                    Ok(true) => {
                        ok = Some(key.public_json.clone());
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        worker::console_warn!("{}", serde_json::json!({ "webcrypto": e }));
                    }
                }
            }
            let Some(key) = ok else {
                return Err((AuthError::BadSignature, notes.clone()));
            };
            Ok(Some(key))
        }
    }

    /// Whether a still-valid verification of `token` for `policy` is cached (at `now`, ms).
    pub fn is_cached(&self, policy: usize, token: &str, now: f64) -> bool {
        self.verified
            .borrow()
            .get(token)
            .is_some_and(|v| v.policy == policy && now < v.until_ms)
    }

    /// Step 5 when it needs no I/O (a public route, an anonymous caller, a token verified
    /// before): the outcome, or `None` when the token must be verified.
    pub fn settled(&self, matched: &Matched) -> Option<Outcome> {
        match &matched.auth {
            AuthStep::Public => Some(Outcome {
                identity: None,
                log: None,
                error: None,
                detail: None,
            }),
            AuthStep::Anonymous => Some(Outcome {
                identity: None,
                log: Some(AuthLog {
                    outcome: "anonymous",
                    reason: None,
                    kid: None,
                    iss: None,
                }),
                error: None,
                detail: None,
            }),
            AuthStep::Cached { token, .. } => {
                // `is_cached` checked it in this same synchronous run: it is still there.
                let verified = self.verified.borrow();
                let Some(v) = verified.get(token) else {
                    return Some(Outcome {
                        identity: None,
                        log: None,
                        error: Some(AuthError::KeysUnavailable("cache")),
                        detail: Some("verified token vanished from the cache".into()),
                    });
                };
                Some(Outcome {
                    log: Some(AuthLog {
                        outcome: "cached",
                        reason: None,
                        kid: short_kid(v.identity.kid.as_ref()),
                        iss: v.identity.iss.clone(),
                    }),
                    identity: Some(v.identity.clone()),
                    error: None,
                    detail: None,
                })
            }
            AuthStep::Verify { .. } | AuthStep::Session { .. } => None,
        }
    }

    /// Step 5 for a matched request. `now` is ms since the epoch.
    pub async fn authenticate(
        &self,
        gateway: &Gateway,
        matched: &Matched,
        env: &Env,
        now: f64,
    ) -> Outcome {
        if let Some(outcome) = self.settled(matched) {
            return outcome;
        }
        let (index, token) = match &matched.auth {
            AuthStep::Verify { policy, token } => (*policy, token),
            // Sessions are the `sso` module's (and the rest settled above); reaching here would
            // be an adapter bug.
            _ => {
                return Outcome {
                    identity: None,
                    log: None,
                    error: Some(AuthError::NoSession("not a token route")),
                    detail: None,
                }
            }
        };
        let policy = &gateway.config.policies[index];
        let kid = short_kid(token.kid.as_ref());
        let refuse = |error: AuthError, detail: Option<String>| Outcome {
            identity: None,
            log: Some(AuthLog {
                outcome: "refused",
                reason: Some(error.reason()),
                kid: kid.clone(),
                iss: None,
            }),
            error: Some(error),
            detail,
        };

        // A token verified before, still within its time and with its key still in the set.
        let cached = {
            let mut verified = self.verified.borrow_mut();
            match verified.get(&token.raw) {
                Some(v) if v.policy == index && now < v.until_ms => Some(v.identity.clone()),
                Some(_) => {
                    verified.remove(&token.raw);
                    None
                }
                None => None,
            }
        };
        if let Some(identity) = cached {
            return Outcome {
                log: Some(AuthLog {
                    outcome: "cached",
                    reason: None,
                    kid: kid.clone(),
                    iss: identity.iss.clone(),
                }),
                identity: Some(identity),
                error: None,
                detail: None,
            };
        }

        let mut notes: Option<String> = None;
        let verified_with = match self
            .verify_signature(
                index,
                policy,
                token,
                env,
                now,
                policy.jwks_url.as_deref(),
                &mut notes,
            )
            .await
        {
            Ok(key) => key,
            Err((error, detail)) => return refuse(error, detail),
        };

        let now_s = (now / 1000.0).floor() as i64;
        match gateway.authenticated(matched, now_s) {
            Ok(identity) => {
                let leeway_ms = policy.leeway_s as f64 * 1000.0;
                let mut until = identity.exp as f64 * 1000.0 + leeway_ms;
                if let (Some(max), Some(iat)) = (policy.max_age_s, identity.claims.get("iat")) {
                    if let Ok(iat) = iat.parse::<f64>() {
                        until = until.min((iat + max as f64) * 1000.0 + leeway_ms);
                    }
                }
                let mut verified = self.verified.borrow_mut();
                if verified.len() >= MAX_VERIFIED {
                    verified.retain(|_, v| v.until_ms > now);
                    if verified.len() >= MAX_VERIFIED {
                        verified.clear();
                    }
                }
                verified.insert(
                    token.raw.clone(),
                    Verified {
                        policy: index,
                        identity: identity.clone(),
                        until_ms: until,
                        key: verified_with,
                    },
                );
                Outcome {
                    log: Some(AuthLog {
                        outcome: "verified",
                        reason: None,
                        kid,
                        iss: identity.iss.clone(),
                    }),
                    identity: Some(identity),
                    error: None,
                    detail: notes,
                }
            }
            Err(refusal) => match refusal.error {
                portcullis::GatewayError::Auth(e) => refuse(e, notes.clone()),
                _ => refuse(AuthError::BadSignature, None),
            },
        }
    }
}

/// How long fetched keys stay fresh, from the provider's Cache-Control: its `max-age`, clamped to
/// [`MIN_TTL_MS`, `MAX_TTL_MS`]; [`DEFAULT_TTL_MS`] without one.
fn ttl_ms(cache_control: Option<&str>) -> f64 {
    cache_control
        .and_then(max_age_ms)
        .unwrap_or(DEFAULT_TTL_MS)
        .clamp(MIN_TTL_MS, MAX_TTL_MS)
}

/// `max-age=N` of a Cache-Control value, in ms; `no-store`/`no-cache` count as 0.
fn max_age_ms(cc: &str) -> Option<f64> {
    let mut out = None;
    for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if d == "no-store" || d == "no-cache" {
            return Some(0.0);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            out = v.trim_matches('"').parse::<f64>().ok().map(|s| s * 1000.0);
        }
    }
    out
}

thread_local! {
    /// Subrequests (fetches and cache operations) the Rust steps of this isolate have made.
    static SUBREQUESTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn count_subrequest() {
    SUBREQUESTS.with(|n| n.set(n.get().wrapping_add(1)));
}

/// Subrequests the Rust steps of this isolate have made so far: the difference over a step is
/// at least what that step made (with requests interleaved, it may include another's: an
/// overcount, which leaves the budget safe).
pub(crate) fn subrequests_made() -> u32 {
    SUBREQUESTS.with(|n| n.get())
}

/// A subrequest bounded by `timeout_ms` until its response headers arrive.
pub(crate) async fn fetch_timed(request: &Request, timeout_ms: u64) -> Result<Response, String> {
    count_subrequest();
    let fetch = JsFuture::from(fetch_request(request));
    let timer = Delay::from(Duration::from_millis(timeout_ms));
    match select(fetch, timer).await {
        Either::Left((Ok(v), _)) => v.dyn_into().map_err(|_| "fetch gave no Response".into()),
        Either::Left((Err(e), _)) => Err(format!("fetch failed: {e:?}")),
        Either::Right(_) => Err(format!("fetch timed out after {timeout_ms} ms")),
    }
}

fn default_cache() -> Option<web_sys::Cache> {
    let caches = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("caches")).ok()?;
    js_sys::Reflect::get(&caches, &JsValue::from_str("default"))
        .ok()?
        .dyn_into()
        .ok()
}

pub(crate) async fn response_text(resp: &Response) -> Option<String> {
    JsFuture::from(resp.text().ok()?).await.ok()?.as_string()
}

async fn store_in_cache(cache: &web_sys::Cache, url: &str, text: &str, ttl: f64, until: f64) {
    let headers = web_sys::Headers::new().ok();
    if let Some(h) = &headers {
        let _ = h.set("content-type", "application/json");
        let _ = h.set(
            "cache-control",
            &format!("max-age={}", (ttl / 1000.0).floor() as u64),
        );
        let _ = h.set("x-portcullis-fresh-until", &format!("{until}"));
    }
    let init = web_sys::ResponseInit::new();
    if let Some(h) = &headers {
        init.set_headers(h);
    }
    if let Ok(resp) = Response::new_with_opt_str_and_init(Some(text), &init) {
        count_subrequest();
        let _ = JsFuture::from(cache.put_with_str(url, &resp)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_freshness_follows_cache_control_within_bounds() {
        let cases: &[(Option<&str>, f64)] = &[
            (None, DEFAULT_TTL_MS),
            (Some("public, max-age=300"), 300_000.0),
            (Some("max-age=\"900\", must-revalidate"), 900_000.0),
            (Some("max-age=5"), MIN_TTL_MS),
            (Some("no-store"), MIN_TTL_MS),
            (Some("no-cache, max-age=600"), MIN_TTL_MS),
            (Some("max-age=31536000"), MAX_TTL_MS),
            (Some("max-age=nonsense"), DEFAULT_TTL_MS),
            (Some("s-maxage=10"), DEFAULT_TTL_MS),
        ];
        for (cc, want) in cases {
            assert_eq!(ttl_ms(*cc), *want, "{cc:?}");
        }
    }
}
