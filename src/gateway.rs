//! The life of a request, as decisions (README, "The life of a request"). The adapter carries
//! them out.
//!
//! [`Gateway::plan`] turns a request head into either an error to answer with or a
//! [`ForwardPlan`]: the upstream URL, method, headers and timeout. [`Gateway::response_headers`]
//! turns the origin's response headers into the client's. Nothing here does I/O or reads a clock.

use std::collections::BTreeMap;

use crate::auth::{token, AuthError, AuthUse, Identity, Prepared, RouteAuth};
use crate::cache;
use crate::compress;
use crate::config::{Config, Route};
use crate::error::GatewayError;
use crate::headers::{self, Forwarding, PublicSide, Rewrite};
use crate::http::{self, first as header, HeaderList};
use crate::path;
use crate::policy::{self, Preflight};
use crate::request::{Head, ReadError};
use crate::router::Lookup;
use crate::sso;
use crate::template::Var;
use crate::upstream::{Balance, HashOn, Origin, Server};

/// The parts of a request the gateway decides on.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a str,
    /// The full URL as the runtime gives it: `https://api.example.com/a/b?x=1`.
    pub url: &'a str,
    /// Lower-case names, as the runtime lists them.
    pub headers: &'a [(String, String)],
}

pub use crate::request::{split_url, UrlParts};

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
    /// A WebSocket handshake: the origin's answer is a 101 with the connection.
    pub websocket: bool,
    /// The client's `Accept-Encoding` (every value, joined), for the response's compression.
    pub accept_encoding: Option<String>,
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
    /// Not cached (the method, the client's `no-cache`, credentials on a route keyed without
    /// claims, a key claim missing or without a header form): forwarded,
    /// `x-cache-status: BYPASS`; the reason goes to the log.
    Bypass { reason: &'static str },
}

/// What the cache does with an origin's response. See [`Gateway::cache_outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOutcome {
    /// `x-cache-status`: `MISS` or `BYPASS`.
    pub label: &'static str,
    /// Why not cached, for the log.
    pub reason: Option<&'static str>,
    /// Store under this key, with these headers (the body is the response's).
    pub store: Option<(String, HeaderList)>,
}

impl CacheOutcome {
    fn bypass(reason: &'static str) -> Self {
        CacheOutcome {
            label: "BYPASS",
            reason: Some(reason),
            store: None,
        }
    }
}

/// How a stored entry serves a request. See [`Gateway::stored_use`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUse {
    /// `HIT` or `STALE`.
    pub label: &'static str,
    /// Refresh the entry in the background (one refresh per key at a time).
    pub refresh: bool,
    /// The headers the client gets.
    pub headers: HeaderList,
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

    /// What an attestation of this request names: the method, the path `server` receives (the
    /// servers of a pool share one base path under `attest`), the query, the public host.
    pub fn bound(&self, server: &Server) -> crate::sso::mint::Bound {
        let path = join_upstream(&server.base_path, &self.forward_path, None);
        crate::sso::mint::Bound::new(
            &self.request_id,
            &self.method,
            &path,
            self.query.as_deref(),
            &self.public_host,
        )
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
        .flat_map(|(_, v)| http::cookie_pairs(v))
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
        .flat_map(|(_, v)| http::cookie_pairs(v))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request's value of a pool's `hash_on`.
fn hash_key<'a>(
    origin: &Origin,
    head: &Head,
    claim: impl Fn(&str) -> Option<&'a str>,
) -> Option<String> {
    let Balance::Hash(on) = &origin.balance else {
        return None;
    };
    match on {
        HashOn::ClientIp => head.client_ip_text.clone(),
        HashOn::Header(name) => head.header(name).map(str::to_string),
        HashOn::Cookie(name) => head.cookie(name).map(str::to_string),
        HashOn::Claim(name) => claim(name).map(str::to_string),
    }
}

/// The request's declared body length.
pub fn content_length(headers: &[(String, String)]) -> Option<u64> {
    header(headers, "content-length").and_then(|v| v.trim().parse().ok())
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
    /// The values of [`Config::secrets`] the driver read (a missing one is absent).
    secrets: BTreeMap<String, String>,
}

impl Gateway {
    pub fn new(config: Config) -> Self {
        Gateway {
            config,
            secrets: BTreeMap::new(),
        }
    }

    /// The gateway with the values of the secrets its config names (`{secret.NAME}`), read by
    /// the driver once per isolate; names the config does not use are ignored.
    pub fn with_secrets(mut self, values: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, value) in values {
            if self.config.secrets.contains(&name) {
                self.secrets.insert(name, value);
            }
        }
        self
    }

    /// The first secret route `route`'s request headers name that the driver did not find.
    pub fn missing_secret(&self, route: usize) -> Option<&str> {
        self.config.routes[route]
            .request_headers
            .secrets()
            .find(|name| !self.secrets.contains_key(*name))
    }

    /// Reads a request once into the form every phase decides on (see [`crate::request`]).
    pub fn read(&self, req: &Incoming<'_>) -> Result<Head, Refusal> {
        let refuse = |error| Refusal {
            error,
            route: None,
            path: None,
        };
        Head::read(
            req.method,
            req.url,
            req.headers,
            self.config.settings.underscores,
        )
        .map_err(|e| {
            refuse(match e {
                ReadError::NotAbsolute => GatewayError::BadRequest(path::PathError::NotAbsolute),
                ReadError::UnderscoreHeader => {
                    GatewayError::BadHeader("header names with underscores are not accepted")
                }
            })
        })
    }

    /// Decides what to do with a request that needs no signature verification (public routes,
    /// anonymous requests on optional ones); a token to verify is refused with 401 here, since
    /// only the adapter can verify it (see [`Gateway::matched`]).
    pub fn plan(&self, req: &Incoming<'_>, request_id: &str) -> Result<ForwardPlan, Refusal> {
        let head = self.read(req)?;
        let m = self.matched_with(&head, |_, _| false)?;
        match m.auth {
            AuthStep::Verify { .. } => {
                return Err(self.auth_refusal(&m, AuthError::KeysUnavailable("no verifier")))
            }
            AuthStep::Session {
                optional: false, ..
            } => return Err(self.auth_refusal(&m, AuthError::NoSession("not read here"))),
            _ => {}
        }
        Ok(self.forward_plan(&m, &head, request_id, None))
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
        let head = self.read(req)?;
        let m = self.matched_with(&head, |_, _| false)?;
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
        Ok(self.forward_plan(&m, &head, request_id, identity.as_ref()))
    }

    /// Steps 2 and 3, and the part of step 5 that needs no key: the route, or the refusal.
    pub fn matched(&self, req: &Incoming<'_>) -> Result<Matched, Refusal> {
        self.matched_with(&self.read(req)?, |_, _| false)
    }

    /// [`Gateway::matched`] on a request already read, where `is_cached(policy, token)` says
    /// whether the caller holds a still-valid verification of this exact token for this policy:
    /// such a token becomes [`AuthStep::Cached`] without being parsed again.
    pub fn matched_with(
        &self,
        head: &Head,
        is_cached: impl Fn(usize, &str) -> bool,
    ) -> Result<Matched, Refusal> {
        let refuse = |error, route, path: Option<&str>| Refusal {
            error,
            route,
            path: path.map(str::to_string),
        };
        self.check_request_size_and_method(head)
            .map_err(|e| refuse(e, None, None))?;
        let normalized = head
            .path
            .clone()
            .map_err(|e| refuse(GatewayError::BadRequest(e), None, None))?;
        let cfg = &self.config;
        let (index, params) =
            match cfg
                .table
                .lookup(&cfg.routes, &head.host, &normalized, &head.method)
            {
                Lookup::Matched { route, params } => (route, params),
                Lookup::MethodNotAllowed { allow, .. } => {
                    return Err(refuse(
                        GatewayError::MethodNotAllowed { allow },
                        None,
                        Some(&normalized),
                    ));
                }
                Lookup::NoRoute => {
                    return Err(refuse(GatewayError::NoRoute, None, Some(&normalized)))
                }
            };
        let route = &cfg.routes[index];
        // Step 4, edge policy, before auth: IP rules, then the declared body size.
        if !route.policy.ip_rules.allows(head.client_ip) {
            let error = GatewayError::Forbidden("your address may not use this route");
            return Err(refuse(error, Some(index), Some(&normalized)));
        }
        if policy::body_too_large(content_length(&head.headers), route.policy.max_body_bytes) {
            return Err(refuse(
                GatewayError::PayloadTooLarge,
                Some(index),
                Some(&normalized),
            ));
        }
        // A WebSocket handshake only where the route accepts one, and from an allowed origin.
        if head.websocket {
            let error = if !route.websocket {
                Some(GatewayError::UpgradeRefused)
            } else if !route
                .policy
                .cors
                .as_ref()
                .is_none_or(|c| c.allows_handshake(head.header("origin")))
            {
                Some(GatewayError::Forbidden(
                    "this origin may not open a WebSocket on this route",
                ))
            } else {
                None
            };
            if let Some(error) = error {
                return Err(refuse(error, Some(index), Some(&normalized)));
            }
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
                    cookies: head
                        .cookie_values(&entry.cookie.name)
                        .take(MAX_SAME_NAME_COOKIES)
                        .map(str::to_string)
                        .collect(),
                    optional: *optional,
                    redirect: *login
                        && crate::sso::is_navigation(&head.method, head.header("accept")),
                }
            }
            Some(RouteAuth {
                uses: AuthUse::Policy(index_of_policy),
                optional,
            }) => {
                let index_of_policy = *index_of_policy;
                let policy = &cfg.policies[index_of_policy];
                match token::extract(&policy.token_from, head) {
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
        head: &Head,
        request_id: &str,
        identity: Option<&Identity>,
    ) -> ForwardPlan {
        let cfg = &self.config;
        let (index, normalized, params) = (m.route, &m.path, &m.params);
        let route = &cfg.routes[index];
        let origin = &cfg.origins[route.origin];
        let forwarded_path = rewrite_path(route, normalized, params);
        let client_ip = head.client_ip_text.as_deref();
        let claims = identity.map(|i| &i.claims);
        let claim = |name: &str| claims.and_then(|c| c.get(name)).map(String::as_str);
        let rate_limit = route.policy.rate_limit.as_ref().and_then(|rl| {
            rl.key_for(&route.name, client_ip, &head.headers, claim)
                .map(|key| (rl.binding.clone(), key))
        });
        let fwd = Forwarding {
            client_ip,
            proto: &head.scheme,
            public_host: &head.authority,
            request_id,
            claim_headers: &cfg.claim_headers,
            forward_claims: identity.map_or(&[], |i| i.forward.as_slice()),
        };
        let lookup = |v: &Var| {
            lookup_var(
                v,
                &self.secrets,
                request_id,
                client_ip,
                &route.name,
                &head.authority,
                params,
                claims,
            )
        };
        let headers = headers::request_plan(&head.headers, &fwd, &route.request_headers, lookup);
        let mut headers = http::without_cookies(headers, &cfg.sso_cookies);
        // The one hop-by-hop header that crosses: the runtime opens the origin's WebSocket for
        // a subrequest that asks for it.
        if head.websocket {
            headers.push(("upgrade".to_string(), "websocket".to_string()));
        }
        ForwardPlan {
            route: index,
            method: head.method.clone(),
            origin: route.origin,
            query: head.query.clone(),
            hash_key: hash_key(origin, head, claim),
            cors_origin: route
                .policy
                .cors
                .as_ref()
                .and_then(|_| head.header("origin"))
                .map(str::to_string),
            max_body_bytes: route.policy.max_body_bytes,
            rate_limit,
            websocket: head.websocket,
            cache: route.cache.as_ref().map(|rule| {
                if head.websocket {
                    return CacheStep::Bypass {
                        reason: "websocket",
                    };
                }
                match rule.usage(&head.method, head, &cfg.credentials) {
                    cache::Use::Bypass(reason) => CacheStep::Bypass { reason },
                    cache::Use::Lookup => match rule.key(&route.name, head, normalized, identity) {
                        Ok(key) => CacheStep::Lookup { key },
                        Err(reason) => CacheStep::Bypass { reason },
                    },
                }
            }),
            forward_path: forwarded_path,
            headers,
            accept_encoding: crate::compress::accept_encoding(&head.headers),
            path: normalized.clone(),
            params: params.clone(),
            claims: identity.map(|i| i.claims.clone()).unwrap_or_default(),
            client_ip: head.client_ip_text.clone(),
            public_origin: head.public_origin(),
            public_host: head.authority.clone(),
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
                // Response headers never name a secret (validation refuses it).
                &NO_SECRETS,
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

    /// Plans the compression of the client's copy of a response to `plan` (its status and the
    /// client's headers, from [`Gateway::response_headers`] or [`Gateway::stored_use`]): see
    /// [`compress::plan`]. Applied after the cache's decision, so that what is stored is the
    /// origin's identity body and its headers, and every client is served its own coding.
    pub fn compression(
        &self,
        plan: &ForwardPlan,
        status: u16,
        headers: &mut HeaderList,
    ) -> Option<compress::Coding> {
        compress::plan(
            self.config.routes[plan.route].compress,
            plan.accept_encoding.as_deref(),
            &plan.method,
            status,
            headers,
        )
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

    /// What the cache does with the origin's response to `plan` (its status and the client's
    /// headers): `None` on a route without `cache`. The label is the `x-cache-status` the
    /// client gets; `store` the seconds of freshness to store it for, with the stored headers.
    pub fn cache_outcome(
        &self,
        plan: &ForwardPlan,
        status: u16,
        headers: &[(String, String)],
        now_ms: u64,
    ) -> Option<CacheOutcome> {
        let step = plan.cache.as_ref()?;
        let rule = self.config.routes[plan.route].cache.as_ref()?;
        Some(match (step, self.store_decision(plan, status, headers)) {
            (CacheStep::Lookup { key }, cache::Store::For(ttl_s)) => CacheOutcome {
                label: "MISS",
                reason: None,
                store: Some((
                    key.clone(),
                    cache::stored_headers(headers, ttl_s, rule.kept_stale_s(), now_ms),
                )),
            },
            // A HEAD found nothing: it is a miss, and stores nothing (it has no body).
            (CacheStep::Lookup { .. }, _) if plan.method == "HEAD" => CacheOutcome {
                label: "MISS",
                reason: None,
                store: None,
            },
            (CacheStep::Lookup { .. }, cache::Store::No(reason)) => CacheOutcome::bypass(reason),
            (CacheStep::Bypass { reason }, _) => CacheOutcome::bypass(reason),
        })
    }

    /// How a stored entry (its headers) serves `plan` at `now_ms`: HIT while fresh, STALE
    /// (and refresh it in the background) within the stale window; `None` when it is expired
    /// or not one of the gateway's entries (look it up as a miss).
    pub fn stored_use(
        &self,
        plan: &ForwardPlan,
        status: u16,
        stored: &[(String, String)],
        now_ms: u64,
    ) -> Option<StoredUse> {
        let (stored_at, ttl_s) = cache::stored_meta(stored)?;
        let rule = self.config.routes[plan.route].cache.as_ref()?;
        let (label, refresh) =
            match cache::freshness(stored_at, ttl_s, rule.stale_while_revalidate_s, now_ms) {
                cache::Freshness::Fresh => ("HIT", false),
                cache::Freshness::Stale => ("STALE", true),
                cache::Freshness::Expired => return None,
            };
        Some(StoredUse {
            label,
            refresh,
            headers: self.stored_headers(plan, status, stored, label, stored_at, now_ms),
        })
    }

    /// The stored entry (its headers) that answers `plan` at `now_ms` when every attempt failed
    /// (stale-if-error): `STALE`, no refresh (the origin was just tried); `None` when the route
    /// has no `stale_if_error_s` or the entry is past its window ([`cache::CacheRule::error_window_s`]).
    pub fn stale_on_error(
        &self,
        plan: &ForwardPlan,
        status: u16,
        stored: &[(String, String)],
        now_ms: u64,
    ) -> Option<StoredUse> {
        let (stored_at, ttl_s) = cache::stored_meta(stored)?;
        let rule = self.config.routes[plan.route].cache.as_ref()?;
        let window_s = rule.error_window_s(stored);
        if window_s == 0 || !cache::within(stored_at, ttl_s, window_s, now_ms) {
            return None;
        }
        Some(StoredUse {
            label: "STALE",
            refresh: false,
            headers: self.stored_headers(plan, status, stored, "STALE", stored_at, now_ms),
        })
    }

    /// The client's headers for a stored entry served with `label`, compressed as the client
    /// accepts.
    fn stored_headers(
        &self,
        plan: &ForwardPlan,
        status: u16,
        stored: &[(String, String)],
        label: &str,
        stored_at: u64,
        now_ms: u64,
    ) -> HeaderList {
        let mut headers =
            self.cached_response_headers(plan, stored, label, cache::age_s(stored_at, now_ms));
        self.compression(plan, status, &mut headers);
        headers
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

    /// A request on the admin path, if it is one: matched on the normalized path (the one form
    /// routes are matched on), letter case ignored, so that no spelling of it reaches an origin.
    /// The credential is checked by the caller with [`bearer_matches`] against the secret named
    /// by `admin.token_env`.
    pub fn admin_request(&self, head: &Head) -> Option<AdminRequest> {
        let admin = self.config.admin.as_ref()?;
        let path = head.path.as_deref().ok()?;
        let inside = path
            .get(..admin.path.len())
            .filter(|p| p.eq_ignore_ascii_case(&admin.path))?;
        let rest = &path[inside.len()..];
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let target = crate::query::first_value(head.query.as_deref(), "url");
        Some(match (head.method.as_str(), rest, target) {
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
            CacheStep::Bypass { .. } => None,
        }
    }

    /// Checks that hold before routing: URL and header sizes, and the gateway-wide methods.
    pub(crate) fn check_request_size_and_method(&self, head: &Head) -> Result<(), GatewayError> {
        let settings = &self.config.settings;
        if head.url_bytes > settings.limits.max_url_bytes {
            return Err(GatewayError::UriTooLong);
        }
        if head.header_bytes > settings.limits.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge);
        }
        if !settings.methods.contains(&head.method) {
            return Err(GatewayError::MethodNotAllowed {
                allow: settings.methods.clone(),
            });
        }
        Ok(())
    }

    /// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) for a route
    /// with `cors`: `Some(Ok(headers))` to answer 204 at the edge, `Some(Err(_))` to refuse with
    /// 403 and no CORS headers; `None` when this is not such a request (plan it as usual).
    pub fn preflight(&self, head: &Head) -> Option<Result<HeaderList, Refusal>> {
        if head.method != "OPTIONS" {
            return None;
        }
        let origin = head.header("origin")?;
        let method = head.header("access-control-request-method")?;
        let normalized = head.path.clone().ok()?;
        let cfg = &self.config;
        let index = match cfg
            .table
            .lookup(&cfg.routes, &head.host, &normalized, method)
        {
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
        if !route.policy.ip_rules.allows(head.client_ip) {
            return refuse(GatewayError::Forbidden(
                "your address may not use this route",
            ));
        }
        let requested = head.header("access-control-request-headers");
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

static NO_SECRETS: BTreeMap<String, String> = BTreeMap::new();

#[allow(clippy::too_many_arguments)]
fn lookup_var<'a>(
    v: &Var,
    secrets: &'a BTreeMap<String, String>,
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
        Var::Secret(name) => secrets.get(name).map(String::as_str),
    }
}

// Single sign-on: the paths `sso` entries answer, and the identity of a session.
impl Gateway {
    /// The SSO and signed-identity paths, answered before route matching: `{login_path}`,
    /// `{callback_path}` (GET), `{logout_path}` (GET, POST), and `/.well-known/jwks.json` (GET,
    /// HEAD) when `identity` is configured. `None`: not one of them.
    pub fn sso_request(&self, head: &Head) -> Option<sso::SsoRequest> {
        if self.config.sso.is_empty() && self.config.minting.is_none() {
            return None;
        }
        // Too large or a refused method: route matching refuses it as for any other path.
        self.check_request_size_and_method(head).ok()?;
        // The one normalized path, letter case ignored: no spelling of these paths reaches an
        // origin.
        let path = head.path.as_deref().ok()?;
        let is = |p: &str| path.eq_ignore_ascii_case(p);
        let query = head.query.as_deref();
        let get = head.method == "GET";
        if is(sso::JWKS_PATH) && self.config.minting.is_some() && (get || head.method == "HEAD") {
            return Some(sso::SsoRequest::Jwks);
        }
        let found = self.config.sso.iter().enumerate().find_map(|(i, s)| {
            if get && is(&s.login_path) {
                let next = sso::query_param(query, "next").unwrap_or_else(|| "/".to_string());
                let next = sso::safe_next(&next)
                    .map(str::to_string)
                    .ok_or(sso::LoginError::BadNext);
                Some(sso::SsoRequest::Login { sso: i, next })
            } else if get && is(&s.callback_path) {
                Some(sso::SsoRequest::Callback {
                    sso: i,
                    callback: sso::Callback::parse(query),
                })
            } else if (get || head.method == "POST") && is(&s.logout_path) {
                Some(sso::SsoRequest::Logout { sso: i })
            } else {
                None
            }
        })?;
        // The host first: on a host the entry does not serve, none of its paths does anything.
        let sso = match &found {
            sso::SsoRequest::Login { sso, .. }
            | sso::SsoRequest::Callback { sso, .. }
            | sso::SsoRequest::Logout { sso } => *sso,
            sso::SsoRequest::HostNotServed { .. } | sso::SsoRequest::Jwks => return Some(found),
        };
        match self.config.sso[sso].return_address(&head.url) {
            Ok(_) => Some(found),
            Err(refused) => Some(sso::SsoRequest::HostNotServed { sso, refused }),
        }
    }

    /// The identity of a decrypted session of entry `sso` at `now`.
    pub fn session_identity(
        &self,
        sso: usize,
        plaintext: &[u8],
        now: i64,
    ) -> Result<Identity, AuthError> {
        let session =
            sso::Session::from_plaintext(plaintext).ok_or(AuthError::NoSession("unreadable"))?;
        session.identity(&self.config.sso[sso], now)
    }
}

#[cfg(test)]
mod tests;
