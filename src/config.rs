//! The configuration: `routes.json` (or `GATEWAY_CONFIG`) parsed into raw serde types, then
//! validated into types that cannot hold an invalid state.
//!
//! Contract: [`Config::from_json`] either returns a config every request can be served with, or
//! every problem it found, each with the JSON path of the offending value and a hint. Fields that
//! belong to features not built yet are refused as "not supported yet", never accepted and
//! ignored.
//!
//! This module assembles: each section's raw types, validation and validated types live with the
//! phase that owns them (`origins` in [`crate::upstream`], `auth` in [`crate::auth`], `sso` and
//! `identity` in [`crate::sso`], `settings` and a route's edge policy in [`crate::policy`],
//! `admin` and a route's `cache` in [`crate::cache`], a route's `rewrite` and header rules in
//! [`crate::headers`], its `host` in [`crate::router`]). Here the document is read, each section
//! validated with the JSON path it sits at, the checks that span sections made, and [`Config`]
//! built.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::policy::{validate_policy, validate_route_auth, RawPolicy, RawRouteAuth};
use crate::auth::{AuthUse, Policy, RouteAuth};
use crate::headers::{validate_header_rules, validate_rewrite, RawHeaderRules, RawRewrite};
use crate::http::method_list;
use crate::path;
use crate::problems::{key_path, Problems};
use crate::router::{validate_host, RouteTable, Routed};
use crate::sso::{Minting, Sso};
use crate::upstream::{validate_origin, RawOrigin};
// The sections of the cache and the edge policy, each a module of its phase.
use crate::cache::config as caching;
use crate::policy::config as edge;

// Every section's validated types, also under the config that holds them.
pub use crate::cache::Admin;
pub use crate::headers::{HeaderRules, Rewrite};
pub use crate::policy::{RoutePolicy, Settings, DEFAULT_METHODS, DEFAULT_SECURITY_HEADERS};
pub use crate::problems::{ConfigError, ConfigErrors};
pub use crate::router::HostPattern;
pub use crate::upstream::{
    Balance, EjectPolicy, HashOn, Origin, RetryPolicy, Server, DEFAULT_ATTEMPTS,
    DEFAULT_DEADLINE_MS, DEFAULT_EJECT_AFTER, DEFAULT_EJECT_FOR_MS, DEFAULT_EJECT_MAX_FOR_MS,
    DEFAULT_REPLAY_BODY_BYTES, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};

// ---------------------------------------------------------------------------------------------
// Raw wire types: what the JSON may say. Unknown fields are errors.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "$schema")]
    _schema: Option<String>,
    origins: BTreeMap<String, RawOrigin>,
    #[serde(default)]
    auth: BTreeMap<String, RawPolicy>,
    settings: Option<edge::RawSettings>,
    admin: Option<caching::RawAdmin>,
    #[serde(default)]
    sso: BTreeMap<String, crate::sso::config::RawSso>,
    identity: Option<crate::sso::mint::RawMinting>,
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    host: Option<String>,
    path: String,
    methods: Option<Vec<String>>,
    origin: String,
    rewrite: Option<RawRewrite>,
    auth: Option<RawRouteAuth>,
    cache: Option<caching::RawCache>,
    request_headers: Option<RawHeaderRules>,
    response_headers: Option<RawHeaderRules>,
    cors: Option<edge::RawCors>,
    limits: Option<edge::RawLimits>,
    allow_ips: Option<Vec<String>>,
    deny_ips: Option<Vec<String>>,
    rate_limit: Option<edge::RawRateLimit>,
    security_headers: Option<Value>,
    websocket: Option<bool>,
    compress: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Validated types.

/// A validated configuration. See the module docs.
#[derive(Debug)]
pub struct Config {
    /// The origin pools, in the order of their names.
    pub origins: Vec<Origin>,
    /// The routes, in the order of the file.
    pub routes: Vec<Route>,
    /// Gateway-wide settings.
    pub settings: Settings,
    /// The admin endpoint (cache purge), when configured.
    pub admin: Option<Admin>,
    /// The auth policies, in the order of their names; then one ID token policy per `sso`
    /// entry (named `sso:NAME`).
    pub policies: Vec<Policy>,
    /// The single sign-on entries, in the order of their names.
    pub sso: Vec<Sso>,
    /// Signed identity for origins, when configured.
    pub minting: Option<Minting>,
    /// The session and login cookie names of every `sso` entry: never forwarded to origins.
    /// The Worker secrets that header values name (`{secret.NAME}`), sorted, each once.
    pub secrets: Vec<String>,
    pub sso_cookies: Vec<String>,
    /// The `forward_claims` header names of every policy and `sso` entry, and the identity
    /// header (lower case): a client's copies are dropped on every route.
    pub claim_headers: Vec<String>,
    /// Every header and cookie a policy or `sso` entry reads credentials from: a request
    /// carrying one is not cached on a route keyed without claims.
    pub credentials: crate::cache::Credentials,
    pub(crate) table: RouteTable,
}

/// A route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub host: Option<HostPattern>,
    pub path: String,
    /// `None`: every method. A route that allows GET allows HEAD too.
    pub methods: Option<Vec<String>>,
    /// Index into [`Config::origins`].
    pub origin: usize,
    pub rewrite: Rewrite,
    /// The route's auth policy, when it has one.
    pub auth: Option<RouteAuth>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// CORS, IP rules, body limit, rate limit, security headers.
    pub policy: RoutePolicy,
    /// The edge cache rule, for GET and HEAD.
    pub cache: Option<crate::cache::CacheRule>,
    /// Whether WebSocket upgrades pass through to the origin (elsewhere they are refused).
    pub websocket: bool,
    /// Whether the client's response may be compressed at the edge (`compress`, on by default).
    pub compress: crate::compress::RouteCompression,
}

impl Route {
    /// Whether this route serves `method`.
    pub fn allows(&self, method: &str) -> bool {
        Routed::allows(self, method)
    }
}

impl Routed for Route {
    fn name(&self) -> &str {
        &self.name
    }
    fn host(&self) -> Option<&HostPattern> {
        self.host.as_ref()
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn methods(&self) -> Option<&[String]> {
        self.methods.as_deref()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

// ---------------------------------------------------------------------------------------------
// Parsing and validation.

/// The hint of a problem the JSON types found: not JSON at all, or JSON the config does not
/// accept.
fn read_hint(e: &serde_json::Error) -> &'static str {
    if e.is_syntax() || e.is_eof() {
        "the file is not valid JSON"
    } else {
        "see the config reference in README.md"
    }
}

/// The config's JSON types read from the text; a problem found there has its JSON path.
#[cfg(feature = "json-paths")]
fn read_raw(text: &str) -> Result<RawConfig, ConfigErrors> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = String::from("$");
        for segment in e.path().iter() {
            use serde_path_to_error::Segment;
            match segment {
                Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    path = key_path(&path, key)
                }
                Segment::Unknown => {}
            }
        }
        let inner = e.into_inner();
        ConfigErrors(vec![ConfigError {
            path,
            message: inner.to_string(),
            hint: Some(read_hint(&inner).to_string()),
        }])
    })
}

/// The config's JSON types read from the text, without path tracking (the Worker's build): a
/// problem found there is located by line and column, and `portcullis check` gives its path.
#[cfg(not(feature = "json-paths"))]
fn read_raw(text: &str) -> Result<RawConfig, ConfigErrors> {
    serde_json::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: "$".to_string(),
            message: e.to_string(),
            hint: Some(format!(
                "{}; run `portcullis check` on it for every problem with its JSON path",
                read_hint(&e)
            )),
        }])
    })
}

impl Config {
    /// Parses and validates a config. See the module docs.
    pub fn from_json(text: &str) -> Result<Config, ConfigErrors> {
        Self::validate(read_raw(text)?)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
        let mut problems = Problems::default();
        let policy_names: Vec<&String> = raw.auth.keys().collect();
        let mut policies = Vec::with_capacity(raw.auth.len());
        for (name, policy) in &raw.auth {
            let at = key_path("$.auth", name);
            if let Some(p) = validate_policy(name, policy, &at, &mut problems) {
                policies.push(p);
            }
        }
        let settings = edge::settings(raw.settings.as_ref(), &mut problems);
        let admin = raw
            .admin
            .as_ref()
            .and_then(|a| caching::admin(a, &mut problems));
        let sso_names: Vec<&String> = raw.sso.keys().collect();
        let mut sso = Vec::with_capacity(raw.sso.len());
        for (name, entry) in &raw.sso {
            let at = key_path("$.sso", name);
            if raw.auth.contains_key(name) {
                problems.add(
                    at.clone(),
                    format!("\"{name}\" names an auth policy too"),
                    Some("routes name either in auth.use: give the sso entry its own name"),
                );
            }
            let index = policies.len();
            if let Some((s, policy)) =
                crate::sso::config::validate_sso(name, entry, &at, index, &mut problems)
            {
                policies.push(policy);
                sso.push(s);
            }
        }
        sso_paths(&sso, admin.as_ref(), &mut problems);
        let mut cookie_names = HashSet::new();
        for s in &sso {
            if !cookie_names.insert(s.cookie.name.as_str()) {
                problems.add(
                    format!("{}.cookie.name", key_path("$.sso", &s.name)),
                    format!("another sso entry's cookie is named \"{}\"", s.cookie.name),
                    Some("give each entry its own cookie.name"),
                );
            }
        }
        let minting = raw
            .identity
            .as_ref()
            .and_then(|m| crate::sso::mint::validate_minting(m, &mut problems));
        let mut claim_headers: Vec<String> = policies
            .iter()
            .flat_map(|p| p.forward_claims.iter().map(|(_, h)| h.clone()))
            .chain(
                sso.iter()
                    .flat_map(|s| s.forward_claims.iter().map(|(_, h)| h.clone())),
            )
            .chain(minting.iter().map(|m| m.header.clone()))
            .collect();
        crate::sort::stable_sort(&mut claim_headers);
        claim_headers.dedup();
        let origin_names: Vec<&String> = raw.origins.keys().collect();
        let mut origins = Vec::with_capacity(raw.origins.len());
        for (name, origin) in &raw.origins {
            let at = key_path("$.origins", name);
            let origin = validate_origin(name, origin, &at, &mut problems);
            if minting.as_ref().is_some_and(|m| m.attest) {
                one_base_path(&origin, &at, &mut problems);
            }
            origins.push(origin);
        }

        let mut routes = Vec::with_capacity(raw.routes.len());
        let mut file_index = Vec::with_capacity(raw.routes.len());
        let mut names = HashSet::new();
        for (i, route) in raw.routes.iter().enumerate() {
            let at = format!("$.routes[{i}]");
            if !names.insert(route.name.as_str()) {
                problems.add(
                    format!("{at}.name"),
                    format!("another route is already named \"{}\"", route.name),
                    Some("route names appear in logs and {route}: give each route its own"),
                );
            }
            let names = AuthNames {
                policies: &policy_names,
                sso: &sso_names,
            };
            if let Some(r) = validate_route(route, &at, &origin_names, &names, &mut problems) {
                routes.push(r);
                file_index.push(i);
            }
        }

        let complete = sso.len() == sso_names.len() && routes.len() == raw.routes.len();
        let route_hosts: Vec<(usize, &HostPattern)> = routes
            .iter()
            .filter_map(|route| match (&route.auth, &route.host) {
                (
                    Some(RouteAuth {
                        uses: AuthUse::Session { sso, .. },
                        ..
                    }),
                    Some(host),
                ) => Some((*sso, host)),
                _ => None,
            })
            .collect();
        crate::sso::config::route_hosts(&mut sso, &route_hosts, complete, &mut problems);

        if let Some(admin) = &admin {
            for (i, route) in routes.iter().enumerate() {
                let inside =
                    route.path == admin.path || route.path.starts_with(&format!("{}/", admin.path));
                if inside {
                    problems.add(
                        format!("$.routes[{}].path", file_index[i]),
                        format!(
                            "\"{}\" is inside the admin path \"{}\"",
                            route.path, admin.path
                        ),
                        Some("move the route, or choose another $.admin.path"),
                    );
                }
            }
        }

        // Routing conflicts among the routes that are valid on their own, so that one run reports
        // them together with everything else.
        let table = RouteTable::build(&routes, |i| file_index[i]);
        let credentials = credentials(&policies, &sso);
        let mut secrets: Vec<String> = Vec::new();
        for name in routes.iter().flat_map(|r| r.request_headers.secrets()) {
            if !secrets.iter().any(|s| s == name) {
                secrets.push(name.to_string());
            }
        }
        crate::sort::stable_sort_by(&mut secrets, |a, b| a.cmp(b));
        match table {
            Ok(table) if problems.0.is_empty() => Ok(Config {
                credentials,
                secrets,
                origins,
                routes,
                settings,
                admin,
                policies,
                sso_cookies: sso
                    .iter()
                    .flat_map(|s| [s.cookie.name.clone(), s.cookie.login_name()])
                    .collect(),
                sso,
                minting,
                claim_headers,
                table,
            }),
            Ok(_) => Err(ConfigErrors(problems.0)),
            Err(conflicts) => {
                problems.0.extend(conflicts);
                crate::sort::stable_sort_by(&mut problems.0, |a, b| a.path.cmp(&b.path));
                Err(ConfigErrors(problems.0))
            }
        }
    }
}

/// Where the config's policies and `sso` entries read credentials from (see [`Config::credentials`]).
fn credentials(policies: &[Policy], sso: &[Sso]) -> crate::cache::Credentials {
    use crate::auth::policy::TokenSource;
    let mut out = crate::cache::Credentials {
        headers: vec!["authorization".to_string()],
        cookies: sso.iter().map(|s| s.cookie.name.clone()).collect(),
    };
    for source in policies.iter().flat_map(|p| p.token_from.iter()) {
        match source {
            TokenSource::Authorization => {}
            TokenSource::Header(name) => out.headers.push(name.clone()),
            TokenSource::Cookie(name) => out.cookies.push(name.clone()),
        }
    }
    for list in [&mut out.headers, &mut out.cookies] {
        crate::sort::stable_sort(list);
        list.dedup();
    }
    out
}

/// The parameter names of a matchit route path: `{id}` and `{*rest}` give `id` and `rest`.
pub(crate) fn path_params(path: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        if rest[start + 1..].starts_with('{') {
            rest = &rest[start + 2..];
            continue;
        }
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + end];
        params.push(name.trim_start_matches('*').to_string());
        rest = &rest[start + end + 1..];
    }
    params
}

/// The names a route's `auth.use` may give.
struct AuthNames<'a> {
    policies: &'a [&'a String],
    sso: &'a [&'a String],
}

/// The paths the `sso` entries answer: distinct, and outside the admin path and the JWKS path.
fn sso_paths(sso: &[Sso], admin: Option<&Admin>, problems: &mut Problems) {
    let mut seen: Vec<&str> = vec![crate::sso::JWKS_PATH];
    for s in sso {
        for (field, p) in [
            ("callback_path", &s.callback_path),
            ("login_path", &s.login_path),
            ("logout_path", &s.logout_path),
        ] {
            let at = format!("{}.{field}", key_path("$.sso", &s.name));
            if seen.contains(&p.as_str()) {
                problems.add(
                    at,
                    format!("\"{p}\" is already answered by the gateway"),
                    Some("give each sso entry its own callback, login and logout paths"),
                );
            } else if admin.is_some_and(|a| p == &a.path || p.starts_with(&format!("{}/", a.path)))
            {
                problems.add(at, format!("\"{p}\" is inside the admin path"), None);
            } else {
                seen.push(p);
            }
        }
    }
}

fn validate_route(
    raw: &RawRoute,
    at: &str,
    origin_names: &[&String],
    names: &AuthNames<'_>,
    problems: &mut Problems,
) -> Option<Route> {
    let before = problems.0.len();
    if raw.name.is_empty() {
        problems.add(format!("{at}.name"), "a route name must not be empty", None);
    }

    let host = raw
        .host
        .as_deref()
        .and_then(|h| validate_host(h, format!("{at}.host"), problems));

    // The path as matchit reads it, checked for being in normalized form: requests are normalized
    // before matching, so a path that is not could never match.
    if !raw.path.starts_with('/') {
        problems.add(
            format!("{at}.path"),
            "a route path must start with '/'",
            None,
        );
    } else {
        match path::normalize(&raw.path) {
            Ok(n) if n == raw.path => {}
            Ok(n) => problems.add(
                format!("{at}.path"),
                format!(
                    "\"{}\" is not in normalized form, so no request could match it",
                    raw.path
                ),
                Some(&format!("write it as \"{n}\"")),
            ),
            Err(e) => problems.add(format!("{at}.path"), format!("invalid path: {e}"), None),
        }
    }
    let params = path_params(&raw.path);

    let methods = raw.methods.as_ref().map(|methods| {
        let mut out = method_list(methods, &format!("{at}.methods"), problems);
        if out.iter().any(|m| m == "GET") && !out.iter().any(|m| m == "HEAD") {
            out.push("HEAD".to_string());
        }
        out
    });

    let origin = origin_names.iter().position(|n| **n == raw.origin);
    if origin.is_none() {
        let known: Vec<&str> = origin_names.iter().map(|s| s.as_str()).collect();
        problems.add(
            format!("{at}.origin"),
            format!("no origin is named \"{}\"", raw.origin),
            Some(&format!(
                "define it under $.origins; defined: {}",
                known.join(", ")
            )),
        );
    }

    let auth = raw.auth.as_ref().and_then(|a| {
        validate_route_auth(
            a,
            &format!("{at}.auth"),
            names.policies,
            names.sso,
            problems,
        )
    });

    let rewrite = match &raw.rewrite {
        None => Rewrite::None,
        Some(rw) => validate_rewrite(rw, &raw.path, &params, &format!("{at}.rewrite"), problems),
    };
    let request_headers = raw
        .request_headers
        .as_ref()
        .map_or_else(HeaderRules::default, |r| {
            validate_header_rules(r, &params, true, &format!("{at}.request_headers"), problems)
        });
    let response_headers = raw
        .response_headers
        .as_ref()
        .map_or_else(HeaderRules::default, |r| {
            validate_header_rules(
                r,
                &params,
                false,
                &format!("{at}.response_headers"),
                problems,
            )
        });

    let policy = edge::route_policy(
        edge::RawRoutePolicy {
            cors: raw.cors.as_ref(),
            limits: raw.limits.as_ref(),
            allow_ips: raw.allow_ips.as_ref(),
            deny_ips: raw.deny_ips.as_ref(),
            rate_limit: raw.rate_limit.as_ref(),
            security_headers: raw.security_headers.as_ref(),
            has_auth: raw.auth.is_some(),
        },
        methods.as_ref(),
        at,
        problems,
    );

    let websocket = raw.websocket.unwrap_or(false);
    if websocket
        && methods
            .as_ref()
            .is_some_and(|m| !m.iter().any(|m| m == "GET"))
    {
        problems.add(
            format!("{at}.websocket"),
            "a WebSocket handshake is a GET, and `methods` does not allow GET".to_string(),
            Some("add \"GET\" to `methods`, or leave `methods` out"),
        );
    }
    if problems.0.len() != before {
        return None;
    }
    let cache = raw
        .cache
        .as_ref()
        .and_then(|c| caching::cache_rule(c, raw.auth.is_some(), &format!("{at}.cache"), problems));
    if problems.0.len() != before {
        return None;
    }
    Some(Route {
        cache,
        compress: crate::compress::RouteCompression::from_raw(raw.compress),
        policy,
        websocket,
        name: raw.name.clone(),
        host,
        path: raw.path.clone(),
        methods,
        origin: origin?,
        rewrite,
        auth,
        request_headers,
        response_headers,
    })
}

/// With `attest`, every attempt of a request must reach the same path: the servers of a pool
/// share one base path, so that the attestation's `htu` is what each of them receives.
fn one_base_path(origin: &crate::upstream::Origin, at: &str, problems: &mut Problems) {
    let Some(first) = origin.servers.first() else {
        return;
    };
    for (i, server) in origin.servers.iter().enumerate().skip(1) {
        if server.base_path != first.base_path {
            problems.add(
                format!("{at}.servers[{i}].url"),
                format!(
                    "base path \"{}\" differs from the first server's \"{}\"",
                    server.base_path, first.base_path
                ),
                Some("with identity.attest the servers of a pool share one base path: the attestation names the path they receive"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
