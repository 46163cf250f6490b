//! Single sign-on and signed identity in the Worker: carries out what `portcullis::sso` decides.
//!
//! - The login: random state, nonce and PKCE verifier (`crypto.getRandomValues`), the signed
//!   login cookie and the redirect to the provider; the callback: the code exchange (a
//!   subrequest with the client secret), the ID token verified through [`AuthCache`] (the same
//!   keys, JWKS fetching and WebCrypto as bearer tokens), then the session cookie.
//! - Sessions: AES-256-GCM through WebCrypto, the key imported once per isolate.
//! - Discovery documents, kept per isolate for [`DISCOVERY_TTL_S`].
//! - Minted identity tokens: ES256 or EdDSA through WebCrypto, reused per identity and pool
//!   until shortly before they expire; the public key at `/.well-known/jwks.json`.

use std::cell::RefCell;
use std::collections::HashMap;

use portcullis::auth::{AuthError, Identity};
use portcullis::gateway::Gateway;
use portcullis::log::AuthLog;
use portcullis::sso::{
    self, authorize_url, id_token_of, logout_location, mint::Bound, return_path, token_request,
    Endpoints, HostNotServed, LoginError, LoginState, Minting, ReturnAddress, Session, SessionKeys,
    SigningKey, Sso, SsoRequest, DISCOVERY_TTL_S, MAX_COOKIE_BYTES,
};
use portcullis::GatewayError;
use wasm_bindgen::prelude::*;
use web_sys::{Request, RequestInit, Response};
use worker::Env;

use crate::auth::{fetch_timed, response_text, AuthCache};

/// How long a discovery fetch or a code exchange may take.
const PROVIDER_TIMEOUT_MS: u64 = 10_000;
/// Minted tokens kept per isolate.
const MAX_MINTED: usize = 4096;

#[wasm_bindgen(inline_js = "
const keys = new Map();
async function aesKey(name, raw) {
  let k = keys.get(name);
  if (!k) {
    k = await crypto.subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
    keys.set(name, k);
  }
  return k;
}
export async function sso_seal(name, raw, aad, plain) {
  raw = raw.slice(); aad = aad.slice(); plain = plain.slice();
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const k = await aesKey(name, raw);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: aad }, k, plain));
  const out = new Uint8Array(12 + ct.length);
  out.set(iv);
  out.set(ct, 12);
  return out;
}
export async function sso_open(name, raw, aad, sealed) {
  raw = raw.slice(); aad = aad.slice(); sealed = sealed.slice();
  if (sealed.length < 28) return null;
  const k = await aesKey(name, raw);
  try {
    const iv = sealed.subarray(0, 12);
    return new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData: aad }, k, sealed.subarray(12)));
  } catch (e) {
    return null;
  }
}
export async function sso_sign(name, jwk, alg, data) {
  data = data.slice();
  let k = keys.get(name);
  const es = alg === 'ES256';
  if (!k) {
    const params = es ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'Ed25519' };
    k = await crypto.subtle.importKey('jwk', JSON.parse(jwk), params, false, ['sign']);
    keys.set(name, k);
  }
  const p = es ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'Ed25519' };
  return new Uint8Array(await crypto.subtle.sign(p, k, data));
}
export function sso_random(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}
")]
extern "C" {
    /// AES-256-GCM: `iv || ciphertext || tag`; the key imported once per `name`.
    #[wasm_bindgen(catch)]
    fn sso_seal(
        name: &str,
        raw: &[u8],
        aad: &[u8],
        plain: &[u8],
    ) -> Result<js_sys::Promise, JsValue>;
    /// The plaintext, or `null` when the value does not decrypt.
    #[wasm_bindgen(catch)]
    fn sso_open(
        name: &str,
        raw: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<js_sys::Promise, JsValue>;
    /// A JWS signature (`r || s` for ES256).
    #[wasm_bindgen(catch)]
    fn sso_sign(name: &str, jwk: &str, alg: &str, data: &[u8]) -> Result<js_sys::Promise, JsValue>;
    fn sso_random(n: u32) -> js_sys::Uint8Array;
}

async fn bytes_of(promise: Result<js_sys::Promise, JsValue>) -> Result<Option<Vec<u8>>, String> {
    let value = wasm_bindgen_futures::JsFuture::from(promise.map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("{e:?}"))?;
    if value.is_null() || value.is_undefined() {
        return Ok(None);
    }
    Ok(Some(js_sys::Uint8Array::new(&value).to_vec()))
}

/// A Worker secret's (or, under `wrangler dev`, a var's) text.
pub fn secret_text(env: &Env, name: &str) -> Option<String> {
    js_sys::Reflect::get(env, &JsValue::from_str(name))
        .ok()?
        .as_string()
        .filter(|s| !s.is_empty())
}

fn now_s() -> i64 {
    (js_sys::Date::now() / 1000.0).floor() as i64
}

/// What one isolate keeps for SSO and minting.
#[derive(Default)]
pub struct SsoCache {
    discovered: RefCell<HashMap<usize, (Endpoints, i64)>>,
    keys: RefCell<HashMap<usize, Option<SessionKeys>>>,
    signing: RefCell<Option<Result<SigningKey, String>>>,
    /// Reuse key -> (token, reuse until, seconds).
    minted: RefCell<HashMap<String, (String, i64)>>,
}

/// A response the SSO paths make: the core's [`portcullis::lifecycle::Answer`].
pub use portcullis::lifecycle::Answer;

fn log(outcome: &'static str, reason: Option<&'static str>) -> AuthLog {
    AuthLog {
        outcome,
        reason,
        kid: None,
        iss: None,
    }
}

/// A refusal as the client sees it, with the operator detail for the log.
pub struct Refused {
    pub error: GatewayError,
    pub detail: Option<String>,
}

/// The return address of a request to `url`, or 404 `no_route` (the entry does not serve the
/// host: answered as if nothing were there, and nothing goes to the provider).
fn return_address(sso: &Sso, url: &str) -> Result<ReturnAddress, Refused> {
    sso.return_address(url)
        .map_err(|e| host_not_served(sso, &e))
}

fn host_not_served(sso: &Sso, refused: &HostNotServed) -> Refused {
    Refused {
        error: GatewayError::NoRoute,
        detail: Some(refused.detail(&sso.name)),
    }
}

fn config_problem(detail: String) -> Refused {
    Refused {
        error: GatewayError::ConfigInvalid,
        detail: Some(detail),
    }
}

impl SsoCache {
    fn session_keys(&self, index: usize, sso: &Sso, env: &Env) -> Result<SessionKeys, Refused> {
        self.keys
            .borrow_mut()
            .entry(index)
            .or_insert_with(|| {
                secret_text(env, &sso.session_key_env)
                    .and_then(|s| SessionKeys::derive(s.as_bytes()))
            })
            .clone()
            .ok_or_else(|| {
                config_problem(format!(
                    "sso '{}': the Worker secret {} is missing or shorter than {} bytes",
                    sso.name,
                    sso.session_key_env,
                    sso::MIN_SESSION_KEY_BYTES
                ))
            })
    }

    /// The provider's endpoints: configured, or from its discovery document (per isolate).
    async fn endpoints(&self, index: usize, sso: &Sso) -> Result<Endpoints, Refused> {
        if let Some(e) = &sso.endpoints {
            return Ok(e.clone());
        }
        let now = now_s();
        if let Some((e, until)) = self.discovered.borrow().get(&index) {
            if now < *until {
                return Ok(e.clone());
            }
        }
        let url = Endpoints::discovery_url(&sso.issuer);
        let refused = |detail: String| Refused {
            error: GatewayError::Login(LoginError::DiscoveryFailed),
            detail: Some(format!("sso '{}': discovery at {url}: {detail}", sso.name)),
        };
        let init = RequestInit::new();
        init.set_method("GET");
        let request =
            Request::new_with_str_and_init(&url, &init).map_err(|e| refused(format!("{e:?}")))?;
        let response = fetch_timed(&request, PROVIDER_TIMEOUT_MS)
            .await
            .map_err(&refused)?;
        if response.status() != 200 {
            return Err(refused(format!("answered {}", response.status())));
        }
        let text = response_text(&response)
            .await
            .ok_or_else(|| refused("unreadable body".into()))?;
        let endpoints = Endpoints::from_discovery(&text, &sso.issuer).map_err(refused)?;
        self.discovered
            .borrow_mut()
            .insert(index, (endpoints.clone(), now + DISCOVERY_TTL_S as i64));
        Ok(endpoints)
    }

    /// The session of a route of `sso` from the values of its cookie (the first that decrypts
    /// to a valid session): the identity, or why there is none.
    pub async fn session(
        &self,
        gateway: &Gateway,
        index: usize,
        cookies: &[String],
        env: &Env,
    ) -> Result<Identity, (AuthError, Option<String>)> {
        let sso = &gateway.config.sso[index];
        if cookies.is_empty() {
            return Err((AuthError::NoSession("none"), None));
        }
        let keys = self
            .session_keys(index, sso, env)
            .map_err(|r| (AuthError::KeysUnavailable("hmac_secret"), r.detail))?;
        let mut refusal = (AuthError::NoSession("does not decrypt"), None);
        for cookie in cookies {
            let Some(sealed) = sso::b64_decode(cookie) else {
                continue;
            };
            let plain = match bytes_of(sso_open(
                &format!("session:{}", sso.name),
                &keys.enc,
                sso.name.as_bytes(),
                &sealed,
            ))
            .await
            {
                Ok(Some(plain)) => plain,
                Ok(None) => continue,
                Err(e) => {
                    refusal = (AuthError::NoSession("decrypt failed"), Some(e));
                    continue;
                }
            };
            // A session of ours: valid, or the reason it is not (expired, a `require` unmet).
            match gateway.session_identity(index, &plain, now_s()) {
                Ok(identity) => return Ok(identity),
                Err(e) => refusal = (e, None),
            }
        }
        Err(refusal)
    }

    /// The redirect to the provider that starts a login returning to `next`.
    pub async fn start_login(
        &self,
        gateway: &Gateway,
        index: usize,
        url: &str,
        next: Option<String>,
        env: &Env,
    ) -> Result<Answer, Refused> {
        let sso = &gateway.config.sso[index];
        // Before anything else, discovery included: on a host the entry does not serve, the
        // provider hears nothing.
        let address = return_address(sso, url)?;
        let keys = self.session_keys(index, sso, env)?;
        let endpoints = self.endpoints(index, sso).await?;
        let back = return_path(url).ok_or(Refused {
            error: GatewayError::NoRoute,
            detail: None,
        })?;
        let mut random = [0u8; 96];
        sso_random(96).copy_to(&mut random);
        let login = LoginState::new(sso, next.unwrap_or(back), &random, now_s());
        let location = authorize_url(sso, &endpoints, &address.redirect_uri, &login);
        let cookie = sso.login_cookie(Some(&login.seal(&keys)));
        Ok(Answer::redirect(
            location,
            vec![cookie],
            log("login", Some("no_session")),
        ))
    }

    /// `{callback_path}`: checks the login, exchanges the code, verifies the ID token, sets the
    /// session and returns to the page first asked for.
    #[allow(clippy::too_many_arguments)]
    pub async fn callback(
        &self,
        gateway: &Gateway,
        auth: &AuthCache,
        index: usize,
        callback: &sso::Callback,
        url: &str,
        headers: &[(String, String)],
        env: &Env,
    ) -> Result<Answer, Refused> {
        let sso = &gateway.config.sso[index];
        let fail = |e: LoginError, detail: Option<String>| Refused {
            error: GatewayError::Login(e),
            detail,
        };
        let address = return_address(sso, url)?;
        let keys = self.session_keys(index, sso, env)?;
        let now = now_s();
        let login_name = sso.cookie.login_name();
        let login = portcullis::gateway::cookies(headers, &login_name)
            .take(portcullis::gateway::MAX_SAME_NAME_COOKIES)
            .find_map(|v| LoginState::open(v, &keys, &sso.name, now))
            .ok_or(fail(LoginError::NoLoginState, None))?;
        if !callback
            .state
            .as_deref()
            .is_some_and(|s| login.state_matches(s))
        {
            return Err(fail(LoginError::StateMismatch, None));
        }
        if let Some(error) = &callback.error {
            let shown: String = error
                .chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect();
            return Err(fail(
                LoginError::ProviderError,
                Some(format!("the provider answered error={shown}")),
            ));
        }
        let code = callback
            .code
            .as_deref()
            .ok_or(fail(LoginError::MissingCode, None))?;
        let endpoints = self.endpoints(index, sso).await?;
        let secret = secret_text(env, &sso.client_secret_env).ok_or_else(|| {
            config_problem(format!(
                "sso '{}': the Worker secret {} is not set",
                sso.name, sso.client_secret_env
            ))
        })?;
        let (body, request_headers) =
            token_request(sso, code, &address.redirect_uri, &login.verifier, &secret);
        let id_token = exchange(&endpoints.token, &body, &request_headers)
            .await
            .map_err(|d| fail(LoginError::ExchangeFailed, Some(d)))?;

        // The ID token, verified as a bearer token of the entry's ID token policy would be.
        let policy = &gateway.config.policies[sso.id_token_policy];
        let token = policy
            .prepare(&id_token)
            .map_err(|e| fail(LoginError::BadIdToken, Some(format!("id token: {e}"))))?;
        let mut notes = None;
        auth.verify_signature(
            sso.id_token_policy,
            policy,
            &token,
            env,
            js_sys::Date::now(),
            Some(endpoints.jwks.as_str()),
            &mut notes,
        )
        .await
        .map_err(|(e, d)| {
            fail(
                LoginError::BadIdToken,
                Some(format!(
                    "id token: {e}{}",
                    d.map(|d| format!(" ({d})")).unwrap_or_default()
                )),
            )
        })?;
        let identity = policy
            .finish(&token, now)
            .map_err(|e| fail(LoginError::BadIdToken, Some(format!("id token: {e}"))))?;
        login.check_id_token(sso, &identity).map_err(|e| {
            let detail = (e == LoginError::MissingSub)
                .then(|| "id token: no sub, or one that is not a non-empty string".to_string());
            fail(e, detail)
        })?;
        let session = Session::from_identity(sso, &identity, now);
        if let Err(e) = session.identity(sso, now) {
            return Err(Refused {
                error: portcullis::error::session_refusal(e),
                detail: Some(format!(
                    "sso '{}': the signed-in user lacks a required claim",
                    sso.name
                )),
            });
        }
        let sealed = bytes_of(sso_seal(
            &format!("session:{}", sso.name),
            &keys.enc,
            sso.name.as_bytes(),
            &session.to_plaintext(),
        ))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            fail(
                LoginError::SessionTooLarge,
                Some("encryption failed".into()),
            )
        })?;
        let value = sso::b64(&sealed);
        if value.len() > MAX_COOKIE_BYTES {
            return Err(fail(
                LoginError::SessionTooLarge,
                Some(format!(
                    "session cookie of {} bytes: keep fewer claims",
                    value.len()
                )),
            ));
        }
        let cookies = vec![sso.session_cookie(Some(&value)), sso.login_cookie(None)];
        let mut signed_in = log("signed_in", None);
        signed_in.iss = identity.iss.clone();
        Ok(Answer::redirect(login.next, cookies, signed_in))
    }

    /// `{logout_path}`: the session cookie cleared, then the provider's end-session endpoint
    /// (or `post_logout_path`).
    pub async fn logout(
        &self,
        gateway: &Gateway,
        index: usize,
        url: &str,
    ) -> Result<Answer, Refused> {
        let sso = &gateway.config.sso[index];
        let address = return_address(sso, url)?;
        let location = match self.endpoints(index, sso).await {
            Ok(endpoints) => logout_location(sso, &endpoints, &address.origin),
            // The provider is unreachable: the gateway's own session ends all the same.
            Err(_) => sso.post_logout_path.clone(),
        };
        Ok(Answer::redirect(
            location,
            vec![sso.session_cookie(None)],
            log("signed_out", None),
        ))
    }

    fn signing_key(&self, minting: &Minting, env: &Env) -> Result<SigningKey, String> {
        self.signing
            .borrow_mut()
            .get_or_insert_with(|| {
                let text = secret_text(env, &minting.private_key_env).ok_or_else(|| {
                    format!("the Worker secret {} is not set", minting.private_key_env)
                })?;
                minting
                    .signing_key(&text)
                    .map_err(|e| format!("the Worker secret {}: {e}", minting.private_key_env))
            })
            .clone()
    }

    /// `GET /.well-known/jwks.json`: the public key of minted tokens.
    pub fn jwks(&self, gateway: &Gateway, env: &Env, request_id: &str) -> Answer {
        let document = gateway
            .config
            .minting
            .as_ref()
            .ok_or_else(|| "no identity section".to_string())
            .and_then(|m| self.signing_key(m, env))
            .map(|key| Minting::jwks_document(&key));
        match document {
            Ok(body) => Answer {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("cache-control".into(), "public, max-age=300".into()),
                ],
                body: Some(body),
                log: None,
                error: None,
                detail: None,
            },
            Err(detail) => Answer::error(
                &GatewayError::ConfigInvalid,
                request_id,
                None,
                Vec::new(),
                Some(format!("identity: {detail}")),
            ),
        }
    }

    /// Answers one of the SSO paths.
    #[allow(clippy::too_many_arguments)]
    pub async fn answer(
        &self,
        gateway: &Gateway,
        auth: &AuthCache,
        request: SsoRequest,
        url: &str,
        headers: &[(String, String)],
        env: &Env,
        request_id: &str,
    ) -> Answer {
        let accept = portcullis::headers::first(headers, "accept");
        let refused = |r: Refused, cookies: Vec<String>| {
            Answer::error(&r.error, request_id, accept, cookies, r.detail)
        };
        match request {
            SsoRequest::Jwks => self.jwks(gateway, env, request_id),
            SsoRequest::HostNotServed { sso, refused: r } => {
                refused(host_not_served(&gateway.config.sso[sso], &r), Vec::new())
            }
            SsoRequest::Login { next: Err(e), .. } => Answer::error(
                &GatewayError::Login(e),
                request_id,
                accept,
                Vec::new(),
                None,
            ),
            SsoRequest::Login {
                sso,
                next: Ok(next),
            } => self
                .start_login(gateway, sso, url, Some(next), env)
                .await
                .unwrap_or_else(|r| refused(r, Vec::new())),
            SsoRequest::Callback { sso, callback } => {
                match self
                    .callback(gateway, auth, sso, &callback, url, headers, env)
                    .await
                {
                    Ok(answer) => answer,
                    // A failed login starts again from the beginning: its state is spent.
                    Err(r) => refused(r, vec![gateway.config.sso[sso].login_cookie(None)]),
                }
            }
            SsoRequest::Logout { sso } => self
                .logout(gateway, sso, url)
                .await
                .unwrap_or_else(|r| refused(r, Vec::new())),
        }
    }

    /// The identity token for `identity` on pool `aud` when it needs no signing: `Some(None)`
    /// when there is nothing to sign, `Some(token)` for a token minted before and still fresh;
    /// `None` when it must be minted (always for an attestation, `bound`: it names one request).
    pub fn reused(
        &self,
        gateway: &Gateway,
        identity: Option<&Identity>,
        aud: &str,
        bound: Option<&Bound>,
    ) -> Option<Option<String>> {
        let Some(minting) = gateway.config.minting.as_ref() else {
            return Some(None);
        };
        if bound.is_some() {
            return None;
        }
        let now = now_s();
        let Some(claims) = minting.claims_for(identity, aud, None, now) else {
            return Some(None);
        };
        let minted = self.minted.borrow();
        let (token, until) = minted.get(&Minting::reuse_key(&claims))?;
        (now < *until).then(|| Some(token.clone()))
    }

    /// The identity token for `identity` on pool `aud`: reused while fresh, else minted; an
    /// attestation (`bound`) is minted for its request and never kept.
    pub async fn mint(
        &self,
        gateway: &Gateway,
        identity: Option<&Identity>,
        aud: &str,
        bound: Option<&Bound>,
        env: &Env,
    ) -> Result<Option<String>, String> {
        if let Some(reused) = self.reused(gateway, identity, aud, bound) {
            return Ok(reused);
        }
        let Some(minting) = gateway.config.minting.as_ref() else {
            return Ok(None);
        };
        let now = now_s();
        let Some(claims) = minting.claims_for(identity, aud, bound, now) else {
            return Ok(None);
        };
        let reuse = Minting::reuse_key(&claims);
        let key = self.signing_key(minting, env)?;
        let input = minting.signing_input(&key.kid, &claims);
        let signature = bytes_of(sso_sign(
            "mint",
            &key.private_jwk,
            minting.alg.name(),
            input.as_bytes(),
        ))
        .await?
        .ok_or("signing gave nothing")?;
        let token = format!("{input}.{}", sso::b64(&signature));
        if bound.is_some() {
            return Ok(Some(token));
        }
        let mut minted = self.minted.borrow_mut();
        if minted.len() >= MAX_MINTED {
            minted.retain(|_, (_, until)| now < *until);
            if minted.len() >= MAX_MINTED {
                minted.clear();
            }
        }
        minted.insert(reuse, (token.clone(), minting.reuse_until(now)));
        Ok(Some(token))
    }
}

/// The code exchange: POST to the token endpoint; the ID token of a 200 answer.
async fn exchange(
    token_url: &str,
    body: &str,
    headers: &[(String, String)],
) -> Result<String, String> {
    let h = web_sys::Headers::new().map_err(|e| format!("{e:?}"))?;
    for (name, value) in headers {
        h.append(name, value).map_err(|e| format!("{e:?}"))?;
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&h);
    init.set_body(&JsValue::from_str(body));
    init.set_redirect(web_sys::RequestRedirect::Manual);
    let request = Request::new_with_str_and_init(token_url, &init).map_err(|e| format!("{e:?}"))?;
    let response: Response = fetch_timed(&request, PROVIDER_TIMEOUT_MS)
        .await
        .map_err(|e| format!("token endpoint: {e}"))?;
    let status = response.status();
    let text = response_text(&response).await.unwrap_or_default();
    if status != 200 {
        // The provider's error code only (RFC 6749 §5.2), never the body as a whole.
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_default();
        let code: String = code
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        return Err(format!("token endpoint answered {status} {code}"));
    }
    id_token_of(&text).ok_or_else(|| "token endpoint answered without an id_token".to_string())
}
