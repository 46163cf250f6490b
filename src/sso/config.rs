//! The `sso` section of the config: raw serde types and their validation into [`Sso`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::auth::policy::{
    validate_forward_claims, validate_require, DEFAULT_LEEWAY_S, DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_MIN_REFETCH_S,
};
use crate::auth::{Alg, Policy};
use crate::path;
use crate::problems::{bounded, is_identifier, key_path, Problems};
use crate::router::HostPattern;

/// Defaults of the `sso` fields.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];
pub const DEFAULT_KEEP_CLAIMS: [&str; 3] = ["sub", "email", "name"];
pub const DEFAULT_CALLBACK_PATH: &str = "/_sso/callback";
pub const DEFAULT_LOGIN_PATH: &str = "/_sso/login";
pub const DEFAULT_LOGOUT_PATH: &str = "/_sso/logout";
pub const DEFAULT_SESSION_TTL_S: u64 = 28_800;
pub const DEFAULT_LOGIN_TTL_S: u64 = 600;
pub const DEFAULT_COOKIE_NAME: &str = "portcullis_session";
/// At most this many `keep_claims`: the session must fit a cookie.
pub const MAX_KEEP_CLAIMS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSso {
    issuer: String,
    client_id: String,
    client_secret_env: String,
    session_key_env: String,
    discovery: Option<bool>,
    endpoints: Option<RawEndpoints>,
    token_auth: Option<String>,
    scopes: Option<Vec<String>>,
    id_token_algorithms: Option<Vec<String>>,
    leeway_s: Option<u64>,
    redirect_uri: Option<String>,
    callback_path: Option<String>,
    login_path: Option<String>,
    logout_path: Option<String>,
    post_logout_path: Option<String>,
    session_ttl_s: Option<u64>,
    login_ttl_s: Option<u64>,
    keep_claims: Option<Vec<String>>,
    #[serde(default)]
    forward_claims: BTreeMap<String, String>,
    #[serde(default)]
    require: BTreeMap<String, Vec<String>>,
    cookie: Option<RawCookie>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoints {
    authorization: String,
    token: String,
    jwks: String,
    end_session: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCookie {
    name: Option<String>,
    domain: Option<String>,
    same_site: Option<String>,
}

/// The provider's endpoints: from the config, or from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub jwks: String,
    pub end_session: Option<String>,
}

impl Endpoints {
    /// The endpoints of a discovery document, which must name `issuer` as its issuer (OpenID
    /// Connect Discovery §4.3) and give absolute http(s) endpoint URLs.
    pub fn from_discovery(json: &str, issuer: &str) -> Result<Endpoints, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err("its issuer is not the configured issuer".into());
        }
        let field = |name: &str| -> Result<String, String> {
            doc.get(name)
                .and_then(Value::as_str)
                .filter(|u| is_http_url(u))
                .map(str::to_string)
                .ok_or_else(|| format!("no http(s) {name}"))
        };
        Ok(Endpoints {
            authorization: field("authorization_endpoint")?,
            token: field("token_endpoint")?,
            jwks: field("jwks_uri")?,
            end_session: field("end_session_endpoint").ok(),
        })
    }

    /// The discovery document's address for an issuer.
    pub fn discovery_url(issuer: &str) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

/// The session cookie's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    /// Lower case, without a leading dot.
    pub domain: Option<String>,
    pub same_site: SameSite,
}

impl CookieSettings {
    /// The login cookie's name.
    pub fn login_name(&self) -> String {
        format!("{}_login", self.name)
    }
}

/// Where the provider sends the browser back, and the origin logout returns to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectBase {
    /// `redirect_uri` as configured (in its one canonical spelling), and the `scheme://host[:port]`
    /// it names.
    Configured {
        redirect_uri: String,
        origin: String,
    },
    /// Built from the request's scheme, host and port, when the host is one of these: the hosts
    /// of the routes that use the entry. Empty: no host is served.
    RouteHosts(Vec<HostPattern>),
}

/// A validated `sso` entry. See the README's config reference.
#[derive(Debug, Clone)]
pub struct Sso {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: String,
    pub session_key_env: String,
    /// `None`: discovered from the issuer.
    pub endpoints: Option<Endpoints>,
    pub token_auth: TokenAuth,
    pub scopes: Vec<String>,
    /// Where `redirect_uri` and the logout's return address come from.
    pub redirect: RedirectBase,
    /// The path of the redirect URI: `redirect_uri`'s path when that is given.
    pub callback_path: String,
    pub login_path: String,
    pub logout_path: String,
    pub post_logout_path: String,
    pub session_ttl_s: u64,
    pub login_ttl_s: u64,
    /// Always holds `sub`.
    pub keep_claims: Vec<String>,
    pub forward_claims: Vec<(String, String)>,
    pub require: Vec<(String, Vec<String>)>,
    pub cookie: CookieSettings,
    /// The ID token policy (issuer, audience = client id, algorithms, leeway): its index in
    /// [`crate::Config::policies`], where validation appends it as `sso:NAME`.
    pub id_token_policy: usize,
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A path field: absolute and already normalized.
fn checked_path(
    value: &Option<String>,
    default: &str,
    at: String,
    problems: &mut Problems,
) -> String {
    let p = value.clone().unwrap_or_else(|| default.to_string());
    match path::normalize(&p) {
        Ok(n) if n == p && p.starts_with('/') && !p.contains('?') => p,
        _ => {
            problems.add(
                at,
                format!("\"{p}\" is not a normalized absolute path"),
                Some("write a path such as /_sso/callback"),
            );
            p
        }
    }
}

/// Whether `host` is a loopback name or address, for which `http` is accepted: `localhost`,
/// `127.0.0.1`, `::1`, and `::1`/`127.0.0.1` in any IPv6 spelling (`[::ffff:7f00:1]` too).
fn is_loopback(host: &url::Host<&str>) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let loopback = |ip: IpAddr| {
        let ip = crate::addr::canonical(ip);
        ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    match host {
        url::Host::Domain(d) => d.strip_suffix('.').unwrap_or(d) == "localhost",
        url::Host::Ipv4(a) => loopback(IpAddr::V4(*a)),
        url::Host::Ipv6(a) => loopback(IpAddr::V6(*a)),
    }
}

/// `redirect_uri`: an absolute URL in canonical form (what the provider compares byte for byte),
/// `https` or loopback `http`, without credentials, query or fragment, whose path is a normalized
/// callback path. Returns it, its origin and its path.
fn checked_redirect_uri(
    text: &str,
    at: String,
    problems: &mut Problems,
) -> Option<(String, String, String)> {
    let url = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            problems.add(
                at,
                format!("\"{text}\" is not an absolute URL: {e}"),
                Some("write the callback's public address, e.g. https://app.example.com/_sso/callback"),
            );
            return None;
        }
    };
    let problem = match (url.scheme(), url.host()) {
        (_, None) => Some("has no host".to_string()),
        ("https", Some(_)) => None,
        ("http", Some(h)) if is_loopback(&h) => None,
        ("http", Some(_)) => Some(
            "is http: only https is accepted, and http only for localhost, 127.0.0.1 and [::1]"
                .to_string(),
        ),
        (other, _) => Some(format!("has the scheme {other}, not https")),
    }
    .or_else(|| {
        (!url.username().is_empty() || url.password().is_some())
            .then(|| "has credentials".to_string())
    })
    .or_else(|| {
        (url.query().is_some() || url.fragment().is_some())
            .then(|| "has a query or a fragment: the provider adds code and state".to_string())
    })
    .or_else(|| {
        (url.as_str() != text).then(|| format!("is not in canonical form: write it as \"{url}\""))
    })
    .or_else(|| {
        let p = url.path();
        let normalized = path::normalize(p).is_ok_and(|n| n == p);
        (p == "/" || !normalized)
            .then(|| format!("has the path \"{p}\", which cannot be a callback path"))
    });
    if let Some(problem) = problem {
        problems.add(
            at,
            format!("redirect_uri \"{text}\" {problem}"),
            Some("write the callback's public address, e.g. https://app.example.com/_sso/callback"),
        );
        return None;
    }
    Some((
        text.to_string(),
        url.origin().ascii_serialization(),
        url.path().to_string(),
    ))
}

/// Validates one `sso` entry, with its ID token policy, which goes at `id_token_policy` in
/// [`crate::Config::policies`].
pub(crate) fn validate_sso(
    name: &str,
    raw: &RawSso,
    at: &str,
    id_token_policy: usize,
    problems: &mut Problems,
) -> Option<(Sso, Policy)> {
    let before = problems.0.len();
    if !is_http_url(&raw.issuer) {
        problems.add(
            format!("{at}.issuer"),
            format!("\"{}\" is not an absolute http(s) URL", raw.issuer),
            Some("write the provider's issuer, e.g. https://id.example.com"),
        );
    }
    if raw.client_id.is_empty() {
        problems.add(
            format!("{at}.client_id"),
            "client_id must not be empty",
            None,
        );
    }
    for (field, value) in [
        ("client_secret_env", &raw.client_secret_env),
        ("session_key_env", &raw.session_key_env),
    ] {
        if !is_identifier(value) {
            problems.add(
                format!("{at}.{field}"),
                format!("\"{value}\" is not a binding name"),
                Some("name a Worker secret, e.g. \"SSO_SESSION_KEY\""),
            );
        }
    }
    let endpoints = match (&raw.endpoints, raw.discovery) {
        (Some(_), Some(true)) => {
            problems.add(
                format!("{at}.discovery"),
                "discovery is on, but endpoints are given too",
                Some("give endpoints, or set discovery and leave endpoints out"),
            );
            None
        }
        (None, Some(false)) => {
            problems.add(
                format!("{at}.endpoints"),
                "discovery is off and no endpoints are given",
                Some("give endpoints.authorization, endpoints.token and endpoints.jwks"),
            );
            None
        }
        (Some(e), _) => {
            let mut check = |field: &str, value: &str| {
                if !is_http_url(value) {
                    problems.add(
                        format!("{at}.endpoints.{field}"),
                        format!("\"{value}\" is not an absolute http(s) URL"),
                        None,
                    );
                }
            };
            check("authorization", &e.authorization);
            check("token", &e.token);
            check("jwks", &e.jwks);
            if let Some(end) = &e.end_session {
                check("end_session", end);
            }
            Some(Endpoints {
                authorization: e.authorization.clone(),
                token: e.token.clone(),
                jwks: e.jwks.clone(),
                end_session: e.end_session.clone(),
            })
        }
        (None, _) => None,
    };
    let token_auth = match raw.token_auth.as_deref() {
        None | Some("client_secret_basic") => TokenAuth::ClientSecretBasic,
        Some("client_secret_post") => TokenAuth::ClientSecretPost,
        Some(other) => {
            problems.add(
                format!("{at}.token_auth"),
                format!("\"{other}\" is not a token endpoint authentication"),
                Some("write \"client_secret_basic\" or \"client_secret_post\""),
            );
            TokenAuth::ClientSecretBasic
        }
    };
    let scopes = raw
        .scopes
        .clone()
        .unwrap_or_else(|| DEFAULT_SCOPES.map(str::to_string).to_vec());
    if !scopes.iter().any(|s| s == "openid") {
        problems.add(
            format!("{at}.scopes"),
            "scopes must include \"openid\"",
            Some("OpenID Connect needs the openid scope for an ID token"),
        );
    }
    if let Some(i) = scopes
        .iter()
        .position(|s| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\'))
    {
        problems.add(
            format!("{at}.scopes[{i}]"),
            "a scope is a non-empty word without spaces or quotes",
            None,
        );
    }
    let algorithms = raw
        .id_token_algorithms
        .clone()
        .unwrap_or_else(|| vec!["RS256".to_string()]);
    let mut id_algs = Vec::new();
    if algorithms.is_empty() {
        problems.add(
            format!("{at}.id_token_algorithms"),
            "id_token_algorithms must not be empty",
            Some("leave it out for [\"RS256\"]"),
        );
    }
    for (i, a) in algorithms.iter().enumerate() {
        match Alg::from_name(a) {
            Some(alg) if !alg.is_hmac() => {
                if !id_algs.contains(&alg) {
                    id_algs.push(alg)
                }
            }
            _ => problems.add(
                format!("{at}.id_token_algorithms[{i}]"),
                format!("\"{a}\" is not accepted for ID tokens"),
                Some("the gateway verifies ID tokens with the provider's public keys: RS256, RS384, RS512, PS256, PS384, PS512, ES256 or EdDSA"),
            ),
        }
    }
    let leeway_s = bounded(
        raw.leeway_s,
        DEFAULT_LEEWAY_S,
        0..=3600,
        format!("{at}.leeway_s"),
        "the clock leeway for ID tokens, in seconds",
        problems,
    );
    let configured = raw
        .redirect_uri
        .as_deref()
        .and_then(|text| checked_redirect_uri(text, format!("{at}.redirect_uri"), problems));
    // `redirect_uri`'s path is the callback path: it sets `callback_path`, or must equal it.
    if let (Some((uri, _, uri_path)), Some(given)) = (&configured, &raw.callback_path) {
        if uri_path != given {
            problems.add(
                format!("{at}.redirect_uri"),
                format!("the path of \"{uri}\" is not callback_path \"{given}\""),
                Some("leave callback_path out (redirect_uri's path is the callback path), or make them equal"),
            );
        }
    }
    let callback_default = configured
        .as_ref()
        .map_or(DEFAULT_CALLBACK_PATH, |(_, _, p)| p.as_str());
    let [callback_path, login_path, logout_path, post_logout_path] = [
        ("callback_path", &raw.callback_path, callback_default),
        ("login_path", &raw.login_path, DEFAULT_LOGIN_PATH),
        ("logout_path", &raw.logout_path, DEFAULT_LOGOUT_PATH),
        ("post_logout_path", &raw.post_logout_path, "/"),
    ]
    .map(|(field, value, default)| checked_path(value, default, format!("{at}.{field}"), problems));
    let session_ttl_s = bounded(
        raw.session_ttl_s,
        DEFAULT_SESSION_TTL_S,
        60..=2_592_000,
        format!("{at}.session_ttl_s"),
        "a session's life in seconds: 60 s to 30 days",
        problems,
    );
    let login_ttl_s = bounded(
        raw.login_ttl_s,
        DEFAULT_LOGIN_TTL_S,
        30..=3600,
        format!("{at}.login_ttl_s"),
        "the time from the redirect to the callback, in seconds",
        problems,
    );
    let mut keep_claims = vec!["sub".to_string()];
    let listed = raw
        .keep_claims
        .clone()
        .unwrap_or_else(|| DEFAULT_KEEP_CLAIMS.map(str::to_string).to_vec());
    if listed.len() > MAX_KEEP_CLAIMS {
        problems.add(
            format!("{at}.keep_claims"),
            format!("at most {MAX_KEEP_CLAIMS} claims can be kept"),
            Some("a session lives in a cookie of at most 4 KB"),
        );
    }
    for (i, c) in listed.iter().enumerate() {
        if c.is_empty() {
            problems.add(
                format!("{at}.keep_claims[{i}]"),
                "a claim name must not be empty",
                None,
            );
        } else if !keep_claims.contains(c) {
            keep_claims.push(c.clone());
        }
    }
    let forward_claims = validate_forward_claims(
        &raw.forward_claims,
        &format!("{at}.forward_claims"),
        problems,
    );
    let require = validate_require(&raw.require, &format!("{at}.require"), problems);
    // What the session must hold to answer `require` and `forward_claims` on every request.
    for c in require
        .iter()
        .map(|(c, _)| c)
        .chain(forward_claims.iter().map(|(c, _)| c))
    {
        if !keep_claims.contains(c) {
            keep_claims.push(c.clone());
        }
    }
    let cookie = raw.cookie.as_ref();
    let cookie_name = cookie
        .and_then(|c| c.name.clone())
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
    if !is_cookie_name(&cookie_name) {
        problems.add(
            format!("{at}.cookie.name"),
            format!("\"{cookie_name}\" is not a cookie name"),
            Some("use letters, digits, _ and -, at most 64"),
        );
    }
    let domain = cookie.and_then(|c| c.domain.as_ref()).map(|d| {
        let d = d.trim_start_matches('.').to_ascii_lowercase();
        let ok = d.contains('.')
            && d.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            problems.add(
                format!("{at}.cookie.domain"),
                format!("\"{d}\" is not a domain name"),
                Some("write the parent domain of the apps, e.g. example.com"),
            );
        }
        d
    });
    if domain.is_some() && cookie_name.starts_with("__Host-") {
        problems.add(
            format!("{at}.cookie.name"),
            format!("\"{cookie_name}\" is a __Host- cookie, which browsers refuse with a Domain"),
            Some("leave cookie.domain out, or use another name (e.g. __Secure-session)"),
        );
    }
    let same_site = match cookie.and_then(|c| c.same_site.as_deref()) {
        None | Some("Lax") => SameSite::Lax,
        Some("Strict") => SameSite::Strict,
        Some(other) => {
            problems.add(
                format!("{at}.cookie.same_site"),
                format!("\"{other}\" is not accepted"),
                Some("write \"Lax\" or \"Strict\""),
            );
            SameSite::Lax
        }
    };

    if problems.0.len() != before {
        return None;
    }
    // The ID token is checked as a token of this policy: the provider's keys (the JWKS address
    // comes with the discovery document when there are no endpoints), its issuer, and the client
    // id as audience.
    let policy = Policy {
        name: format!("sso:{name}"),
        algorithms: id_algs,
        jwks: None,
        jwks_url: endpoints.as_ref().map(|e| e.jwks.clone()),
        hmac_secret_env: None,
        issuers: vec![raw.issuer.clone()],
        audiences: vec![raw.client_id.clone()],
        leeway_s,
        max_age_s: None,
        token_from: Vec::new(),
        require: Vec::new(),
        forward_claims: Vec::new(),
        max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        jwks_min_refetch_s: DEFAULT_MIN_REFETCH_S,
    };
    Some((
        Sso {
            name: name.to_string(),
            issuer: raw.issuer.clone(),
            client_id: raw.client_id.clone(),
            client_secret_env: raw.client_secret_env.clone(),
            session_key_env: raw.session_key_env.clone(),
            endpoints,
            token_auth,
            scopes,
            redirect: match configured {
                Some((redirect_uri, origin, _)) => RedirectBase::Configured {
                    redirect_uri,
                    origin,
                },
                // Filled by `route_hosts` once the routes are validated.
                None => RedirectBase::RouteHosts(Vec::new()),
            },
            callback_path,
            login_path,
            logout_path,
            post_logout_path,
            session_ttl_s,
            login_ttl_s,
            keep_claims,
            forward_claims,
            require,
            cookie: CookieSettings {
                name: cookie_name,
                domain,
                same_site,
            },
            id_token_policy,
        },
        policy,
    ))
}

/// Gives each entry without `redirect_uri` the host patterns of the routes that use it, the only
/// hosts its redirect URI may be built from: `route_hosts` holds, for each route that uses an
/// entry's session and has a host, the entry's index and the host. With `report` (every entry
/// and route validated, so `sso` holds every entry in the order routes name them), an entry with
/// neither is a problem at `$.sso.NAME.redirect_uri`: it could only follow the `Host` a request
/// carries.
pub(crate) fn route_hosts(
    sso: &mut [Sso],
    route_hosts: &[(usize, &HostPattern)],
    report: bool,
    problems: &mut Problems,
) {
    for (index, entry) in sso.iter_mut().enumerate() {
        let RedirectBase::RouteHosts(hosts) = &mut entry.redirect else {
            continue;
        };
        for &(sso, host) in route_hosts {
            if sso == index && !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        if report && hosts.is_empty() {
            problems.add(
                format!("{}.redirect_uri", key_path("$.sso", &entry.name)),
                "no redirect_uri, and no route that uses this entry has a host: the redirect URI would follow whatever Host a request carries",
                Some("set redirect_uri, or give the routes that use this entry a host"),
            );
        }
    }
}
