//! Single sign-on at the edge: OpenID Connect login (authorization code with PKCE, `state` and
//! `nonce`), sessions in encrypted cookies, and the paths the gateway answers for it.
//!
//! Contract: the core decides, the adapter does the I/O and the cryptography that must run in
//! WebCrypto (AES-GCM for sessions, the ID token's signature). Here: the `sso` config section,
//! the login state (an HMAC-signed cookie, made and checked here), the provider URLs, the token
//! request, the discovery document, the session's plaintext and what it means as an
//! [`Identity`], safe return paths, and the `Set-Cookie` values. Nothing here reads a clock,
//! draws random bytes or does I/O: `now` and randomness come in as arguments.

pub mod config;
pub mod mint;

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::claims::satisfies;
use crate::auth::{AuthError, Identity};

pub use config::{CookieSettings, Endpoints, RedirectBase, SameSite, Sso, TokenAuth};
pub use mint::{Minting, SigningKey};

/// The smallest session key secret accepted, in bytes.
pub const MIN_SESSION_KEY_BYTES: usize = 32;
/// The longest `next` path accepted, in bytes.
pub const MAX_NEXT_BYTES: usize = 2048;
/// A session cookie longer than this is not set (browsers drop cookies over 4096 bytes).
pub const MAX_COOKIE_BYTES: usize = 3800;
/// The discovery document's life in an isolate, in seconds.
pub const DISCOVERY_TTL_S: u64 = 3600;

/// The keys derived from the session key secret.
#[derive(Clone)]
pub struct SessionKeys {
    /// AES-256-GCM key of the session cookie.
    pub enc: [u8; 32],
    /// HMAC-SHA256 key of the login cookie.
    pub mac: [u8; 32],
}

impl SessionKeys {
    /// Derives both keys; `None` when the secret is shorter than [`MIN_SESSION_KEY_BYTES`].
    pub fn derive(secret: &[u8]) -> Option<SessionKeys> {
        if secret.len() < MIN_SESSION_KEY_BYTES {
            return None;
        }
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(label);
            h.update(secret);
            h.finalize().into()
        };
        Some(SessionKeys {
            enc: derive(b"portcullis-session-v1:"),
            mac: derive(b"portcullis-login-v1:"),
        })
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// base64url without padding.
pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

/// base64url without padding, decoded.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// The PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

/// What the login cookie carries from the redirect to the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// The `sso` entry's name: a login state of another entry is not accepted.
    pub sso: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The path (and query) to return to.
    pub next: String,
    /// Seconds since the epoch.
    pub exp: i64,
}

impl LoginState {
    /// A fresh login: `random` is 96 random bytes (state, nonce and verifier, 32 each).
    pub fn new(sso: &Sso, next: String, random: &[u8; 96], now: i64) -> LoginState {
        LoginState {
            sso: sso.name.clone(),
            state: b64(&random[..32]),
            nonce: b64(&random[32..64]),
            verifier: b64(&random[64..]),
            next,
            exp: now + sso.login_ttl_s as i64,
        }
    }

    /// The signed cookie value: `base64url(JSON) "." base64url(HMAC-SHA256(mac, first part))`.
    pub fn seal(&self, keys: &SessionKeys) -> String {
        let payload = b64(&serde_json::to_vec(self).unwrap_or_default());
        let tag = b64(&hmac_sha256(&keys.mac, payload.as_bytes()));
        format!("{payload}.{tag}")
    }

    /// The login state in a cookie value, when its signature holds, it belongs to `sso` and it
    /// has not expired at `now`.
    pub fn open(value: &str, keys: &SessionKeys, sso: &str, now: i64) -> Option<LoginState> {
        let (payload, tag) = value.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        let expected = hmac_sha256(&keys.mac, payload.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&tag)) {
            return None;
        }
        // From a `str`, as everything else the Worker parses: one JSON reader in the Wasm.
        let json = String::from_utf8(B64.decode(payload).ok()?).ok()?;
        let state: LoginState = serde_json::from_str(&json).ok()?;
        (state.sso == sso && now < state.exp).then_some(state)
    }

    /// Whether the ID token's `nonce` is this login's, compared in constant time.
    pub fn nonce_matches(&self, given: &str) -> bool {
        bool::from(self.nonce.as_bytes().ct_eq(given.as_bytes()))
    }

    /// The checks of a verified ID token that belong to this login (OpenID Connect Core §3.1.3.7,
    /// after signature, issuer, audience and times): its `nonce` is this login's, it names its
    /// user in `sub` (a non-empty string, §2: the claim is required), and a token for several
    /// audiences names this client as `azp`.
    pub fn check_id_token(&self, sso: &Sso, identity: &Identity) -> Result<(), LoginError> {
        let nonce = identity.values.get("nonce").and_then(Value::as_str);
        if !nonce.is_some_and(|n| self.nonce_matches(n)) {
            return Err(LoginError::WrongNonce);
        }
        match identity.values.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => {}
            _ => return Err(LoginError::MissingSub),
        }
        let audiences = match identity.values.get("aud") {
            Some(Value::Array(list)) => list.len(),
            _ => 1,
        };
        let azp = identity.values.get("azp").and_then(Value::as_str);
        if (audiences > 1 || azp.is_some()) && azp != Some(sso.client_id.as_str()) {
            return Err(LoginError::BadIdToken);
        }
        Ok(())
    }

    /// Whether the callback's `state` is this login's, compared in constant time.
    pub fn state_matches(&self, given: &str) -> bool {
        bool::from(self.state.as_bytes().ct_eq(given.as_bytes()))
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A session's plaintext: the kept claims and its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Seconds since the epoch.
    pub exp: i64,
    pub iat: i64,
    pub claims: BTreeMap<String, Value>,
}

impl Session {
    /// The session for a verified ID token's identity: its `keep_claims`, for `session_ttl_s`.
    pub fn from_identity(sso: &Sso, identity: &Identity, now: i64) -> Session {
        let claims = identity
            .values
            .iter()
            .filter(|(k, _)| sso.keep_claims.iter().any(|c| c == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Session {
            exp: now + sso.session_ttl_s as i64,
            iat: now,
            claims,
        }
    }

    /// The session's JSON, what the adapter encrypts.
    pub fn to_plaintext(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A decrypted session's JSON, when it is one.
    pub fn from_plaintext(bytes: &[u8]) -> Option<Session> {
        serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
    }

    /// The verified identity of a session at `now`: refused when it expired or names no user
    /// (`sub` not a non-empty string: a session made before sign-in checked it), 403 when
    /// `require` is not met.
    pub fn identity(&self, sso: &Sso, now: i64) -> Result<Identity, AuthError> {
        if now >= self.exp {
            return Err(AuthError::NoSession("expired"));
        }
        if !matches!(self.claims.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
            return Err(AuthError::NoSession("no sub"));
        }
        if !satisfies(&self.claims, &sso.require) {
            return Err(AuthError::InsufficientScope);
        }
        let mut identity =
            Identity::from_claims(self.claims.clone(), self.exp, &sso.forward_claims);
        identity.iss = Some(sso.issuer.clone());
        Ok(identity)
    }
}

/// The return path `next`, when it is a path on this host: starts with one `/` (not `//` or
/// `/\`), no control characters or spaces, at most [`MAX_NEXT_BYTES`].
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= MAX_NEXT_BYTES
        && !next
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\');
    ok.then_some(next)
}

/// The provider's authorization URL for a login.
pub fn authorize_url(
    sso: &Sso,
    endpoints: &Endpoints,
    redirect_uri: &str,
    login: &LoginState,
) -> String {
    let scope = sso.scopes.join(" ");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &sso.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scope)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &pkce_challenge(&login.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    with_query(&endpoints.authorization, &query)
}

/// Where logout sends the browser: the provider's end-session endpoint (with the client id and
/// the return address), else the configured path.
pub fn logout_location(sso: &Sso, endpoints: &Endpoints, public_origin: &str) -> String {
    let back = format!("{public_origin}{}", sso.post_logout_path);
    match &endpoints.end_session {
        Some(end) => {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", &sso.client_id)
                .append_pair("post_logout_redirect_uri", &back)
                .finish();
            with_query(end, &query)
        }
        None => sso.post_logout_path.clone(),
    }
}

fn with_query(base: &str, query: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

/// The token endpoint request of the code exchange: form body and headers.
pub fn token_request(
    sso: &Sso,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    client_secret: &str,
) -> (String, Vec<(String, String)>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", verifier)
        .append_pair("client_id", &sso.client_id);
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept".to_string(), "application/json".to_string()),
    ];
    match sso.token_auth {
        TokenAuth::ClientSecretPost => {
            form.append_pair("client_secret", client_secret);
        }
        TokenAuth::ClientSecretBasic => {
            // RFC 6749 §2.3.1: each part form-encoded before the Basic encoding.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&sso.client_id), enc(client_secret));
            headers.push((
                "authorization".to_string(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            ));
        }
    }
    (form.finish(), headers)
}

/// The ID token in a token endpoint's JSON answer.
pub fn id_token_of(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("id_token")?.as_str().map(str::to_string)
}

/// The callback's query: `code`, `state`, and the provider's `error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

impl Callback {
    pub fn parse(query: Option<&str>) -> Callback {
        let mut cb = Callback::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut cb.code,
                "state" => &mut cb.state,
                "error" => &mut cb.error,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        cb
    }
}

/// A query parameter's first value.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    crate::query::first_value(query, name)
}

/// Why a login did not complete: the callback's refusals, each with a stable reason for the log
/// and a public message that names no code, token or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// No login cookie, a bad signature, another entry's, or expired.
    NoLoginState,
    StateMismatch,
    /// The callback has no `code`.
    MissingCode,
    /// The provider answered the authorization request with `error`.
    ProviderError,
    /// The discovery document could not be had.
    DiscoveryFailed,
    /// The token endpoint refused the code (a replayed or expired code) or could not be reached.
    ExchangeFailed,
    /// The ID token did not verify (signature, issuer, audience, expiry).
    BadIdToken,
    WrongNonce,
    /// The ID token has no `sub`, or one that is not a non-empty string.
    MissingSub,
    /// The session would be over the cookie size limit.
    SessionTooLarge,
    /// `next` is not a path on this host.
    BadNext,
}

impl LoginError {
    pub fn reason(self) -> &'static str {
        match self {
            LoginError::NoLoginState => "no_login_state",
            LoginError::StateMismatch => "state_mismatch",
            LoginError::MissingCode => "missing_code",
            LoginError::ProviderError => "provider_error",
            LoginError::DiscoveryFailed => "discovery_failed",
            LoginError::ExchangeFailed => "exchange_failed",
            LoginError::BadIdToken => "bad_id_token",
            LoginError::WrongNonce => "wrong_nonce",
            LoginError::MissingSub => "missing_sub",
            LoginError::SessionTooLarge => "session_too_large",
            LoginError::BadNext => "bad_next",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            LoginError::NoLoginState
            | LoginError::StateMismatch
            | LoginError::MissingCode
            | LoginError::BadNext => 400,
            LoginError::ProviderError
            | LoginError::BadIdToken
            | LoginError::WrongNonce
            | LoginError::MissingSub => 401,
            LoginError::DiscoveryFailed | LoginError::ExchangeFailed => 502,
            LoginError::SessionTooLarge => 500,
        }
    }

    pub fn public_message(self) -> &'static str {
        match self {
            LoginError::NoLoginState => {
                "the sign-in expired or was started in another browser; start again"
            }
            LoginError::StateMismatch => "the sign-in does not match the one this browser started",
            LoginError::MissingCode => "the identity provider sent no authorization code",
            LoginError::ProviderError => "the identity provider did not approve the sign-in",
            LoginError::DiscoveryFailed => "the identity provider cannot be reached right now",
            LoginError::ExchangeFailed => "the identity provider did not complete the sign-in",
            LoginError::BadIdToken => "the identity provider's answer could not be verified",
            LoginError::WrongNonce => "the identity provider's answer is not for this sign-in",
            LoginError::MissingSub => "the identity provider's answer does not say who signed in",
            LoginError::SessionTooLarge => "the session is too large for a cookie",
            LoginError::BadNext => "the return address must be a path on this site",
        }
    }
}

/// Where the provider sends a login back, and where logout returns: one request's answer of
/// [`Sso::return_address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnAddress {
    /// The `redirect_uri` of the authorization request and of the code exchange.
    pub redirect_uri: String,
    /// `scheme://host[:port]`, which `post_logout_path` is joined to.
    pub origin: String,
}

/// A request on a host the entry builds no redirect URI for: it has no `redirect_uri`, and no
/// route that uses it serves the host. `host` is the request's, as the log may show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNotServed {
    pub host: String,
}

impl HostNotServed {
    fn of(host: &str) -> HostNotServed {
        HostNotServed {
            host: host
                .chars()
                .filter(char::is_ascii_graphic)
                .take(100)
                .collect(),
        }
    }

    /// What the log says, for entry `sso`.
    pub fn detail(&self, sso: &str) -> String {
        format!(
            "sso '{sso}': no route of this entry serves the host \"{}\" and the entry has no redirect_uri; nothing was sent to the provider",
            self.host
        )
    }
}

/// A host name as a route's `host` may name one: dot-separated labels of letters, digits and
/// `-` (not at either end), none empty (so no trailing dot), at most 63 bytes each.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Sso {
    /// The return address of a login or logout started by a request to `url` (the runtime's
    /// absolute URL). With `redirect_uri`: that, whatever the request's host. Without: built
    /// from the request's scheme (`http` or `https`), host and port, when the host, read as
    /// routing reads it ([`crate::request::normal_host`]: lower case, without port or a trailing
    /// dot, which is then not written either), is one a route
    /// of this entry serves (an exact `host`, or under a `*.suffix`); the host is written in
    /// lower case, the port only when it is not the scheme's default. Any other host, an IP
    /// literal in brackets or a malformed port: [`HostNotServed`], and nothing may be sent.
    pub fn return_address(&self, url: &str) -> Result<ReturnAddress, HostNotServed> {
        let hosts = match &self.redirect {
            RedirectBase::Configured {
                redirect_uri,
                origin,
            } => {
                return Ok(ReturnAddress {
                    redirect_uri: redirect_uri.clone(),
                    origin: origin.clone(),
                })
            }
            RedirectBase::RouteHosts(hosts) => hosts,
        };
        let parts = crate::request::split_url(url).ok_or_else(|| HostNotServed::of(""))?;
        let refused = || HostNotServed::of(parts.host);
        let scheme = parts.scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => "443",
            "http" => "80",
            _ => return Err(refused()),
        };
        let host = crate::request::normal_host(parts.host);
        if !is_host_name(&host) || !hosts.iter().any(|p| p.matches(&host)) {
            return Err(refused());
        }
        // `split_url`'s host is the start of its authority: what follows is empty or `:port`.
        let port = match &parts.authority[parts.host.len()..] {
            "" | ":" => None,
            rest => {
                let digits = rest
                    .strip_prefix(':')
                    .filter(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(refused)?;
                match digits.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(refused()),
                    Ok(n) => Some(n.to_string()).filter(|n| n != default_port),
                }
            }
        };
        let origin = match port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        };
        Ok(ReturnAddress {
            redirect_uri: format!("{origin}{}", self.callback_path),
            origin,
        })
    }
}

/// A request the gateway answers itself for SSO and signed identity, before route matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoRequest {
    /// `{login_path}?next=`: start a login; `next` already checked (`Err` when it is not a path
    /// on this host).
    Login {
        sso: usize,
        next: Result<String, LoginError>,
    },
    Callback {
        sso: usize,
        callback: Callback,
    },
    Logout {
        sso: usize,
    },
    /// The entry's login, callback or logout path on a host it does not serve (see
    /// [`Sso::return_address`]): refused with 404 `no_route`, as if nothing were there, and
    /// nothing redirected.
    HostNotServed {
        sso: usize,
        refused: HostNotServed,
    },
    /// `GET /.well-known/jwks.json` with `identity` configured.
    Jwks,
}

/// The path the signed identity's public keys are published at.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The `Set-Cookie` value for a cookie of `sso`; `max_age_s` 0 deletes it.
pub fn set_cookie(cookie: &CookieSettings, name: &str, value: &str, max_age_s: u64) -> String {
    let mut out = format!("{name}={value}; Path=/; Max-Age={max_age_s}");
    if let Some(domain) = &cookie.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out.push_str("; HttpOnly; Secure; SameSite=");
    out.push_str(match cookie.same_site {
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
    });
    out
}

/// The login cookie's `SameSite` is always `Lax`: the provider's redirect back is a cross-site
/// navigation, which `Strict` would strip the cookie from.
pub fn login_cookie_settings(cookie: &CookieSettings) -> CookieSettings {
    CookieSettings {
        same_site: SameSite::Lax,
        ..cookie.clone()
    }
}

impl Sso {
    /// The `Set-Cookie` of the session cookie holding `value` for `session_ttl_s`; `None`
    /// clears it.
    pub fn session_cookie(&self, value: Option<&str>) -> String {
        let name = &self.cookie.name;
        match value {
            Some(v) => set_cookie(&self.cookie, name, v, self.session_ttl_s),
            None => set_cookie(&self.cookie, name, "", 0),
        }
    }

    /// The `Set-Cookie` of the login cookie holding `value` for `login_ttl_s` (always
    /// `SameSite=Lax`, see [`login_cookie_settings`]); `None` clears it.
    pub fn login_cookie(&self, value: Option<&str>) -> String {
        let settings = login_cookie_settings(&self.cookie);
        let name = self.cookie.login_name();
        match value {
            Some(v) => set_cookie(&settings, &name, v, self.login_ttl_s),
            None => set_cookie(&settings, &name, "", 0),
        }
    }
}

/// Whether a request is a browser navigation that may be sent to the provider: GET, `Accept`
/// naming `text/html`.
pub fn is_navigation(method: &str, accept: Option<&str>) -> bool {
    method == "GET" && accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

#[cfg(test)]
mod tests;

/// The path and query of a request URL, normalized: where a login it starts returns to.
pub fn return_path(url: &str) -> Option<String> {
    let u = crate::request::split_url(url)?;
    let path = crate::path::normalize(u.path).ok()?;
    Some(match u.query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}
