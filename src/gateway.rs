//! The life of a request, as decisions (SPEC.md, "The life of a request"). The adapter carries
//! them out.
//!
//! [`Gateway::plan`] turns a request head into either an error to answer with or a
//! [`ForwardPlan`]: the upstream URL, method, headers and timeout. [`Gateway::response_headers`]
//! turns the origin's response headers into the client's. Nothing here does I/O or reads a clock.

use std::collections::BTreeMap;

use crate::auth::{token, AuthError, AuthUse, Identity, Prepared, RouteAuth};
use crate::cache;
use crate::config::{Balance, Config, HashOn, Origin, Rewrite, Route, Server};
use crate::error::GatewayError;
use crate::headers::{self, first as header, Forwarding, HeaderList, PublicSide};
use crate::path;
use crate::policy::{self, Preflight};
use crate::router::Lookup;
use crate::template::Var;

/// The parts of a request the gateway decides on.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a str,
    /// The full URL as the runtime gives it: `https://api.example.com/a/b?x=1`.
    pub url: &'a str,
    /// Lower-case names, as the runtime lists them.
    pub headers: &'a [(String, String)],
}

/// A URL split into the parts the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    /// Host and port as written: `api.example.com`, `127.0.0.1:8787`, `[::1]:8787`.
    pub authority: &'a str,
    /// The host alone, without port or brackets' port.
    pub host: &'a str,
    /// The raw path, `/` when empty.
    pub path: &'a str,
    /// The raw query without `?`, if any.
    pub query: Option<&'a str>,
}

/// Splits an absolute URL; `None` when it is not one.
pub fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let rest = &rest[end..];
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return None;
    }
    Some(UrlParts {
        scheme,
        authority,
        host,
        path: if path.is_empty() { "/" } else { path },
        query,
    })
}

/// A request the gateway will forward, with everything the response needs.
#[derive(Debug, Clone)]
pub struct ForwardPlan {
    /// Index into the config's routes.
    pub route: usize,
    pub method: String,
    /// Index into the config's origins.
    pub origin: usize,
    /// The rewritten path, to be joined to a server's base.
    pub forward_path: String,
    /// The query as the client sent it.
    pub query: Option<String>,
    /// The complete header list for the origin.
    pub headers: HeaderList,
    /// The request's value of the pool's `hash_on`, when the pool hashes and the request has it.
    pub hash_key: Option<String>,
    /// The normalized path.
    pub path: String,
    pub params: Vec<(String, String)>,
    /// The request's `Origin`, on a route with CORS.
    pub cors_origin: Option<String>,
    /// The route's body limit, enforced while streaming when the body has no declared length.
    pub max_body_bytes: Option<u64>,
    /// The rate-limit binding and the key to count this request under, on a limited route.
    pub rate_limit: Option<(String, String)>,
    /// What the edge cache does with this request, on a route with `cache`.
    pub cache: Option<CacheStep>,
    /// The verified claims' header forms, for `{claim.NAME}` in response headers.
    claims: BTreeMap<String, String>,
    client_ip: Option<String>,
    public_origin: String,
    public_host: String,
    request_id: String,
}

/// A matched request before auth (steps 2, 3 and the keyless part of 5).
#[derive(Debug, Clone)]
pub struct Matched {
    /// Index into the config's routes.
    pub route: usize,
    pub path: String,
    pub params: Vec<(String, String)>,
    /// What auth still needs.
    pub auth: AuthStep,
}

/// What step 5 needs from the adapter.
#[derive(Debug, Clone)]
pub enum AuthStep {
    /// A public route.
    Public,
    /// An optional policy and no token: forward without identity.
    Anonymous,
    /// A token that passed every keyless check: verify its signature with the policy's keys,
    /// then call [`Gateway::authenticated`].
    Verify { policy: usize, token: Box<Prepared> },
    /// A token the caller's verified-token cache already holds for this policy (see
    /// [`Gateway::matched_with`]): not parsed again.
    Cached { policy: usize, token: String },
    /// A route of an `sso` entry: decrypt the session cookie (the first of its values that
    /// decrypts, when there is one) and call
    /// [`Gateway::session_identity`]. Without a valid session: anonymous when `optional`, a
    /// login redirect when `redirect` (a browser navigation on a `login` route), else 401.
    Session {
        sso: usize,
        /// Every value of the session cookie's name, at most [`MAX_SAME_NAME_COOKIES`].
        cookies: Vec<String>,
        optional: bool,
        redirect: bool,
    },
}

/// What the edge cache does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStep {
    /// Look up this key (the URL of the entry); store the response under it on a miss.
    Lookup { key: String },
    /// Not cacheable (method, or the client's `no-cache`): forwarded, `x-cache-status: BYPASS`.
    Bypass,
}

/// A request to the admin path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// `DELETE {admin}/cache?url=...`: purge the entry the URL (and the purge request's headers,
    /// for `key.headers`) would use. Only with the admin credential.
    Purge { target: String },
    /// Anything else on the admin path: 404, as if there were nothing there.
    NotFound,
}

/// Whether an `Authorization: Bearer <token>` header carries `expected`, compared in constant
/// time. An empty expected token matches nothing.
pub fn bearer_matches(expected: &str, authorization: Option<&str>) -> bool {
    let Some(given) = authorization.and_then(|a| {
        let (scheme, token) = a.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }) else {
        return false;
    };
    if expected.is_empty() || given.len() != expected.len() {
        return false;
    }
    given
        .bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Percent-decodes a query value (`+` as space); `None` for invalid encodings or UTF-8.
fn decode_query_value(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The refusal of a request: the error, and the route when one had matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: GatewayError,
    pub route: Option<usize>,
    /// The normalized path when it could be normalized, for the log.
    pub path: Option<String>,
}

impl ForwardPlan {
    /// The upstream URL on `server`: its base, the rewritten path, the client's query.
    pub fn url_for(&self, server: &Server) -> String {
        join_upstream(&server.base, &self.forward_path, self.query.as_deref())
    }
}

/// Every value of cookie `name` in the request's `cookie` headers, in order. A browser sends
/// several when cookies of one name were set for different paths or domains: a sibling host can
/// plant one under a parent domain, so the gateway's own cookies try each rather than the first.
pub fn cookies<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// At most this many values of one of the gateway's cookie names are tried.
pub const MAX_SAME_NAME_COOKIES: usize = 4;

/// The value of cookie `name` in the request's `cookie` headers.
pub fn cookie<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request's value of a pool's `hash_on`.
fn hash_key<'a>(
    origin: &Origin,
    headers: &[(String, String)],
    client_ip: Option<&str>,
    claim: impl Fn(&str) -> Option<&'a str>,
) -> Option<String> {
    let Balance::Hash(on) = &origin.balance else {
        return None;
    };
    match on {
        HashOn::ClientIp => client_ip.map(str::to_string),
        HashOn::Header(name) => headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()),
        HashOn::Cookie(name) => cookie(headers, name).map(str::to_string),
        HashOn::Claim(name) => claim(name).map(str::to_string),
    }
}

/// The request's declared body length.
pub fn content_length(headers: &[(String, String)]) -> Option<u64> {
    header(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

/// The client address from `CF-Connecting-IP`, only when it parses as an IP address.
fn client_ip(headers: &[(String, String)]) -> Option<String> {
    let value = headers
        .iter()
        .find(|(n, _)| n == "cf-connecting-ip")?
        .1
        .trim();
    value
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// The forwarded path for a route, from the normalized request path and its parameters.
pub fn rewrite_path(route: &Route, path: &str, params: &[(String, String)]) -> String {
    match &route.rewrite {
        Rewrite::None => path.to_string(),
        Rewrite::StripPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
            Some("") => "/".to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            // Validation makes the prefix a literal leading part of the route path, so a matched
            // path always has it; forward unchanged otherwise rather than guess.
            _ => path.to_string(),
        },
        Rewrite::Path(template) => template
            .render(|v| match v {
                Var::Param(name) => params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str()),
                _ => None,
            })
            .unwrap_or_else(|| path.to_string()),
    }
}

/// Joins a server base (`https://h/base` or `https://h`) and a path with exactly one slash.
pub fn join_upstream(base: &str, path: &str, query: Option<&str>) -> String {
    let mut url = String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(base.trim_end_matches('/'));
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// A validated config, ready to plan requests.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
}

impl Gateway {
    pub fn new(config: Config) -> Self {
        Gateway { config }
    }

    /// Decides what to do with a request that needs no signature verification (public routes,
    /// anonymous requests on optional ones); a token to verify is refused with 401 here, since
    /// only the adapter can verify it (see [`Gateway::matched`]).
    pub fn plan(&self, req: &Incoming<'_>, request_id: &str) -> Result<ForwardPlan, Refusal> {
        let m = self.matched(req)?;
        match m.auth {
            AuthStep::Verify { .. } => {
                return Err(self.auth_refusal(&m, AuthError::KeysUnavailable("no verifier")))
            }
            AuthStep::Session {
                optional: false, ..
            } => return Err(self.auth_refusal(&m, AuthError::NoSession("not read here"))),
            _ => {}
        }
        Ok(self.forward_plan(&m, req, request_id, None))
    }

    /// [`Gateway::plan`] with the signature verified outside the Worker (the CLI, tests): see
    /// [`crate::auth::verify::verify_prepared`]; `now` in seconds since the epoch.
    pub fn plan_at(
        &self,
        req: &Incoming<'_>,
        request_id: &str,
        now: i64,
        secret: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<ForwardPlan, Refusal> {
        let m = self.matched(req)?;
        let identity = match &m.auth {
            AuthStep::Verify { policy, token } => {
                crate::auth::verify::verify_prepared(&self.config.policies[*policy], token, secret)
                    .map_err(|e| self.auth_refusal(&m, e))?;
                Some(self.authenticated(&m, now)?)
            }
            AuthStep::Session {
                optional: false, ..
            } => return Err(self.auth_refusal(&m, AuthError::NoSession("not read here"))),
            _ => None,
        };
        Ok(self.forward_plan(&m, req, request_id, identity.as_ref()))
    }

    /// Steps 2 and 3, and the part of step 5 that needs no key: the route, or the refusal.
    pub fn matched(&self, req: &Incoming<'_>) -> Result<Matched, Refusal> {
        self.matched_with(req, |_, _| false)
    }

    /// [`Gateway::matched`], where `is_cached(policy, token)` says whether the caller holds a
    /// still-valid verification of this exact token for this policy: such a token becomes
    /// [`AuthStep::Cached`] without being parsed again.
    pub fn matched_with(
        &self,
        req: &Incoming<'_>,
        is_cached: impl Fn(usize, &str) -> bool,
    ) -> Result<Matched, Refusal> {
        let refuse = |error, route, path: Option<&str>| Refusal {
            error,
            route,
            path: path.map(str::to_string),
        };
        self.check_request_size_and_method(req)
            .map_err(|e| refuse(e, None, None))?;
        let Some(url) = split_url(req.url) else {
            return Err(refuse(
                GatewayError::BadRequest(path::PathError::NotAbsolute),
                None,
                None,
            ));
        };
        let normalized = path::normalize(url.path)
            .map_err(|e| refuse(GatewayError::BadRequest(e), None, None))?;
        let host = url.host.to_ascii_lowercase();
        let cfg = &self.config;
        let (index, params) = match cfg
            .table
            .lookup(&cfg.routes, &host, &normalized, req.method)
        {
            Lookup::Matched { route, params } => (route, params),
            Lookup::MethodNotAllowed { allow, .. } => {
                return Err(refuse(
                    GatewayError::MethodNotAllowed { allow },
                    None,
                    Some(&normalized),
                ));
            }
            Lookup::NoRoute => return Err(refuse(GatewayError::NoRoute, None, Some(&normalized))),
        };
        let route = &cfg.routes[index];
        // Step 4, edge policy, before auth: IP rules, then the declared body size.
        if !route
            .policy
            .ip_rules
            .allows(client_ip(req.headers).as_deref())
        {
            let error = GatewayError::Forbidden("your address may not use this route");
            return Err(refuse(error, Some(index), Some(&normalized)));
        }
        if policy::body_too_large(content_length(req.headers), route.policy.max_body_bytes) {
            return Err(refuse(
                GatewayError::PayloadTooLarge,
                Some(index),
                Some(&normalized),
            ));
        }
        let auth = match &route.auth {
            None => AuthStep::Public,
            Some(RouteAuth {
                uses: AuthUse::Session { sso, login },
                optional,
            }) => {
                let entry = &cfg.sso[*sso];
                AuthStep::Session {
                    sso: *sso,
                    cookies: cookies(req.headers, &entry.cookie.name)
                        .take(MAX_SAME_NAME_COOKIES)
                        .map(str::to_string)
                        .collect(),
                    optional: *optional,
                    redirect: *login
                        && crate::sso::is_navigation(req.method, header(req.headers, "accept")),
                }
            }
            Some(RouteAuth {
                uses: AuthUse::Policy(index_of_policy),
                optional,
            }) => {
                let index_of_policy = *index_of_policy;
                let policy = &cfg.policies[index_of_policy];
                match token::extract(&policy.token_from, req.headers) {
                    None if *optional => AuthStep::Anonymous,
                    None => {
                        return Err(refuse(
                            GatewayError::Auth(AuthError::MissingToken),
                            Some(index),
                            Some(&normalized),
                        ))
                    }
                    Some(t) if is_cached(index_of_policy, t) => AuthStep::Cached {
                        policy: index_of_policy,
                        token: t.to_string(),
                    },
                    Some(t) => match policy.prepare(t) {
                        Ok(token) => AuthStep::Verify {
                            policy: index_of_policy,
                            token: Box::new(token),
                        },
                        Err(e) => {
                            return Err(refuse(
                                GatewayError::Auth(e),
                                Some(index),
                                Some(&normalized),
                            ))
                        }
                    },
                }
            }
        };
        Ok(Matched {
            route: index,
            path: normalized,
            params,
            auth,
        })
    }

    /// The refusal of a matched request by auth.
    pub fn auth_refusal(&self, m: &Matched, error: AuthError) -> Refusal {
        Refusal {
            error: GatewayError::Auth(error),
            route: Some(m.route),
            path: Some(m.path.clone()),
        }
    }

    /// After the adapter verified the signature of `AuthStep::Verify`'s token: the claims
    /// checks at `now` (seconds since the epoch), giving the identity or the refusal.
    pub fn authenticated(&self, m: &Matched, now: i64) -> Result<Identity, Refusal> {
        match &m.auth {
            AuthStep::Verify { policy, token } => self.config.policies[*policy]
                .finish(token, now)
                .map_err(|e| self.auth_refusal(m, e)),
            _ => Err(self.auth_refusal(m, AuthError::MissingToken)),
        }
    }

    /// Step 7: the origin request for a matched (and, where needed, authenticated) request.
    pub fn forward_plan(
        &self,
        m: &Matched,
        req: &Incoming<'_>,
        request_id: &str,
        identity: Option<&Identity>,
    ) -> ForwardPlan {
        let cfg = &self.config;
        let (index, normalized, params) = (m.route, &m.path, &m.params);
        // `matched` split the same URL.
        let url = split_url(req.url).unwrap_or(UrlParts {
            scheme: "https",
            authority: "",
            host: "",
            path: "/",
            query: None,
        });
        let route = &cfg.routes[index];
        let origin = &cfg.origins[route.origin];
        let forwarded_path = rewrite_path(route, normalized, params);
        let client_ip = client_ip(req.headers);
        let claims = identity.map(|i| &i.claims);
        let claim = |name: &str| claims.and_then(|c| c.get(name)).map(String::as_str);
        let rate_limit = route.policy.rate_limit.as_ref().and_then(|rl| {
            rl.key_for(&route.name, client_ip.as_deref(), req.headers, claim)
                .map(|key| (rl.binding.clone(), key))
        });
        let fwd = Forwarding {
            client_ip: client_ip.as_deref(),
            proto: url.scheme,
            public_host: url.authority,
            request_id,
            claim_headers: &cfg.claim_headers,
            forward_claims: identity.map_or(&[], |i| i.forward.as_slice()),
        };
        let lookup = |v: &Var| {
            lookup_var(
                v,
                request_id,
                client_ip.as_deref(),
                &route.name,
                url.authority,
                params,
                claims,
            )
        };
        let headers = headers::request_plan(req.headers, &fwd, &route.request_headers, lookup);
        let headers = headers::without_cookies(headers, &cfg.sso_cookies);
        ForwardPlan {
            route: index,
            method: req.method.to_string(),
            origin: route.origin,
            query: url.query.map(str::to_string),
            hash_key: hash_key(origin, req.headers, client_ip.as_deref(), claim),
            cors_origin: route
                .policy
                .cors
                .as_ref()
                .and_then(|_| header(req.headers, "origin"))
                .map(str::to_string),
            max_body_bytes: route.policy.max_body_bytes,
            rate_limit,
            cache: route
                .cache
                .as_ref()
                .map(|rule| match rule.usage(req.method, req.headers) {
                    cache::Use::Bypass => CacheStep::Bypass,
                    cache::Use::Lookup => CacheStep::Lookup {
                        key: rule.key(
                            &route.name,
                            url.host,
                            normalized,
                            url.query,
                            req.headers,
                            claim,
                        ),
                    },
                }),
            forward_path: forwarded_path,
            headers,
            path: normalized.clone(),
            params: params.clone(),
            claims: identity.map(|i| i.claims.clone()).unwrap_or_default(),
            client_ip: client_ip.clone(),
            public_origin: format!("{}://{}", url.scheme, url.authority),
            public_host: url.authority.to_string(),
            request_id: request_id.to_string(),
        }
    }

    /// The headers the client receives for an origin's response to `plan`.
    pub fn response_headers(
        &self,
        plan: &ForwardPlan,
        from_origin: &[(String, String)],
    ) -> HeaderList {
        let route = &self.config.routes[plan.route];
        let public = PublicSide {
            origin: &plan.public_origin,
            rewrite: &route.rewrite,
        };
        let servers = self.config.origins.iter().flat_map(|o| o.servers.iter());
        let lookup = |v: &Var| {
            lookup_var(
                v,
                &plan.request_id,
                plan.client_ip.as_deref(),
                &route.name,
                &plan.public_host,
                &plan.params,
                Some(&plan.claims),
            )
        };
        let mut out = headers::response_plan(
            from_origin,
            servers,
            &public,
            &plan.request_id,
            &route.response_headers,
            lookup,
        );
        if let Some(cors) = &route.policy.cors {
            cors.apply(plan.cors_origin.as_deref(), &mut out);
        }
        let security = route
            .policy
            .security_headers
            .as_ref()
            .unwrap_or(&self.config.settings.security_headers);
        for (name, value) in security {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), value.clone()));
            }
        }
        out
    }

    /// Whether to store the response to `plan` (with the client's headers), and for how long.
    pub fn store_decision(
        &self,
        plan: &ForwardPlan,
        status: u16,
        headers: &[(String, String)],
    ) -> cache::Store {
        match (&self.config.routes[plan.route].cache, &plan.cache) {
            (Some(rule), Some(CacheStep::Lookup { .. })) if plan.method == "GET" => {
                rule.store(status, headers)
            }
            _ => cache::Store::No("not a cacheable request"),
        }
    }

    /// The headers a client gets for a stored entry: see [`cache::served_headers`]; CORS is
    /// applied for this request's origin, not the one that filled the cache.
    pub fn cached_response_headers(
        &self,
        plan: &ForwardPlan,
        stored: &[(String, String)],
        status: &str,
        age: u64,
    ) -> HeaderList {
        let mut out = cache::served_headers(stored, status, age, &plan.request_id);
        if let Some(cors) = &self.config.routes[plan.route].policy.cors {
            cors.apply(plan.cors_origin.as_deref(), &mut out);
        }
        out
    }

    /// A request on the admin path, if it is one. The credential is checked by the caller with
    /// [`bearer_matches`] against the secret named by `admin.token_env`.
    pub fn admin_request(&self, req: &Incoming<'_>) -> Option<AdminRequest> {
        let admin = self.config.admin.as_ref()?;
        let url = split_url(req.url)?;
        let rest = url.path.strip_prefix(admin.path.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let target = url
            .query
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("url="))
            .and_then(decode_query_value);
        Some(match (req.method, rest, target) {
            ("DELETE", "/cache", Some(target)) => AdminRequest::Purge { target },
            _ => AdminRequest::NotFound,
        })
    }

    /// The cache key a purge of `target` removes: the key a GET of that URL with the purge
    /// request's other headers would use. `None` when the URL has no cached route.
    pub fn purge_key(&self, target: &str, headers: &[(String, String)]) -> Option<String> {
        let req = Incoming {
            method: "GET",
            url: target,
            headers,
        };
        match self.plan(&req, "purge").ok()?.cache? {
            CacheStep::Lookup { key } => Some(key),
            CacheStep::Bypass => None,
        }
    }

    /// Checks that hold before routing: URL and header sizes, and the gateway-wide methods.
    pub(crate) fn check_request_size_and_method(
        &self,
        req: &Incoming<'_>,
    ) -> Result<(), GatewayError> {
        let settings = &self.config.settings;
        if req.url.len() > settings.limits.max_url_bytes {
            return Err(GatewayError::UriTooLong);
        }
        if policy::header_bytes(req.headers) > settings.limits.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge);
        }
        if !settings.methods.iter().any(|m| m == req.method) {
            return Err(GatewayError::MethodNotAllowed {
                allow: settings.methods.clone(),
            });
        }
        Ok(())
    }

    /// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) for a route
    /// with `cors`: `Some(Ok(headers))` to answer 204 at the edge, `Some(Err(_))` to refuse with
    /// 403 and no CORS headers; `None` when this is not such a request (plan it as usual).
    pub fn preflight(&self, req: &Incoming<'_>) -> Option<Result<HeaderList, Refusal>> {
        if req.method != "OPTIONS" {
            return None;
        }
        let origin = header(req.headers, "origin")?;
        let method = header(req.headers, "access-control-request-method")?;
        let url = split_url(req.url)?;
        let normalized = path::normalize(url.path).ok()?;
        let cfg = &self.config;
        let host = url.host.to_ascii_lowercase();
        let index = match cfg.table.lookup(&cfg.routes, &host, &normalized, method) {
            Lookup::Matched { route, .. } => route,
            // The path has routes, none for the requested method: refuse it on a CORS route.
            Lookup::MethodNotAllowed { routes, .. } => *routes
                .iter()
                .find(|&&i| cfg.routes[i].policy.cors.is_some())?,
            Lookup::NoRoute => return None,
        };
        let route = &cfg.routes[index];
        let cors = route.policy.cors.as_ref()?;
        let refuse = |error| {
            Some(Err(Refusal {
                error,
                route: Some(index),
                path: Some(normalized.clone()),
            }))
        };
        if !route
            .policy
            .ip_rules
            .allows(client_ip(req.headers).as_deref())
        {
            return refuse(GatewayError::Forbidden(
                "your address may not use this route",
            ));
        }
        let requested = header(req.headers, "access-control-request-headers");
        match cors.preflight(origin, method, requested) {
            Preflight::Allow(mut headers) => {
                headers.push(("content-length".to_string(), "0".to_string()));
                Some(Ok(headers))
            }
            Preflight::Refuse(reason) => refuse(GatewayError::Forbidden(reason)),
        }
    }

    /// The matched route of a plan.
    pub fn route(&self, plan: &ForwardPlan) -> &Route {
        &self.config.routes[plan.route]
    }
}

fn lookup_var<'a>(
    v: &Var,
    request_id: &'a str,
    client_ip: Option<&'a str>,
    route: &'a str,
    host: &'a str,
    params: &'a [(String, String)],
    claims: Option<&'a BTreeMap<String, String>>,
) -> Option<&'a str> {
    match v {
        Var::RequestId => Some(request_id),
        Var::ClientIp => client_ip,
        Var::Route => Some(route),
        Var::Host => Some(host),
        Var::Param(name) => params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
        Var::Claim(name) => claims?.get(name).map(String::as_str),
    }
}

#[cfg(test)]
mod tests;
