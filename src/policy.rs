//! Edge policy, decided before anything reaches an origin (README, step 4, "Edge policy"): IP rules, request
//! limits, CORS, rate-limit keys and security headers.
//!
//! Contracts:
//! - [`IpRules::allows`]: deny wins over allow; with an allow list, an address not on it (or no
//!   address at all) is refused. An IPv6 address that embeds an IPv4 address (IPv4-mapped
//!   `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, 6to4 `2002:AABB:CCDD::/48`, NAT64
//!   `64:ff9b::a.b.c.d`) matches IPv4 rules as that IPv4 address, and IPv6 rules as written: a
//!   deny of either form refuses it, an allow of either form admits it.
//! - [`Cors`]: a preflight is answered at the edge (204 with the CORS headers) when origin, method
//!   and every requested header are allowed, refused (403, no CORS headers) otherwise; actual
//!   requests get `Access-Control-Allow-Origin` echoing an allowed origin (`*` only for a `*`
//!   rule without credentials, never `null`), `Vary: Origin`, and the configured expose and
//!   credentials headers; whatever CORS headers the origin sent are replaced.

use std::net::IpAddr;

use crate::error::GatewayError;

pub(crate) mod config;
pub use config::{RoutePolicy, Settings, DEFAULT_METHODS, DEFAULT_SECURITY_HEADERS};

/// An IPv4 or IPv6 network, kept as an IPv6 one (IPv4 as `::ffff:a.b.c.d/96+n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: u128,
    prefix: u8,
}

fn to_v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Cidr {
    /// Parses `203.0.113.0/24`, `2001:db8::/32`, or a single address (`/32` or `/128`).
    /// Refuses host bits set beyond the prefix, so a typo does not silently widen a rule.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{addr}\" is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix {
            None => max,
            Some(p) => p
                .parse()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("\"/{p}\" is not a prefix length from 0 to {max}"))?,
        };
        let (network, prefix) = match ip {
            IpAddr::V4(_) => (to_v6_bits(ip), prefix + 96),
            IpAddr::V6(_) => (to_v6_bits(ip), prefix),
        };
        if network & !mask(prefix) != 0 {
            return Err(format!("\"{text}\" has bits set past its prefix length"));
        }
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is in this network. An IPv6 address that embeds an IPv4 address
    /// ([`crate::addr::embedded_ipv4`]: mapped, compatible, 6to4, NAT64) is in an IPv4 network
    /// when its IPv4 address is; it is still in the IPv6 networks that hold it as written.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let in_net = |bits: u128| bits & mask(self.prefix) == self.network;
        match ip {
            IpAddr::V4(v4) => in_net(to_v6_bits(IpAddr::V4(v4))),
            IpAddr::V6(v6) => {
                in_net(u128::from(v6))
                    || crate::addr::embedded_ipv4(v6)
                        .is_some_and(|v4| in_net(to_v6_bits(IpAddr::V4(v4))))
            }
        }
    }
}

/// A route's IP rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl IpRules {
    /// Whether a client address may use the route. See the module docs.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        if self.allow.is_empty() && self.deny.is_empty() {
            return true;
        }
        // With rules but no address to check them against: refuse (fail closed).
        let Some(ip) = client else {
            return false;
        };
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// One allowed CORS origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `*`: any origin (never with credentials).
    Any,
    /// `https://app.example.com`, lower case.
    Exact(String),
    /// `https://*.example.com`: the scheme, and the host suffix `.example.com`.
    Subdomains { scheme: String, suffix: String },
}

impl AllowedOrigin {
    /// Parses one configured origin.
    pub fn parse(text: &str) -> Result<AllowedOrigin, String> {
        if text == "*" {
            return Ok(AllowedOrigin::Any);
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, host) = lower
            .split_once("://")
            .ok_or_else(|| format!("\"{text}\" is not an origin (scheme://host[:port])"))?;
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(format!(
                "\"{text}\" is not an origin: write scheme://host[:port], no path"
            ));
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("\"{text}\" is not an origin pattern"));
            }
            return Ok(AllowedOrigin::Subdomains {
                scheme: scheme.to_string(),
                suffix: format!(".{suffix}"),
            });
        }
        if host.contains('*') {
            return Err(format!("\"{text}\": a wildcard may only stand for the leading subdomains (https://*.example.com)"));
        }
        Ok(AllowedOrigin::Exact(lower))
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            AllowedOrigin::Any => true,
            AllowedOrigin::Exact(o) => *o == origin,
            AllowedOrigin::Subdomains { scheme, suffix } => {
                origin.split_once("://").is_some_and(|(s, host)| {
                    s == scheme && host.len() > suffix.len() && host.ends_with(suffix.as_str())
                })
            }
        }
    }
}

/// A route's CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Vec<AllowedOrigin>,
    /// Upper case.
    pub methods: Vec<String>,
    /// Lower case: request headers a preflight may ask for.
    pub headers: Vec<String>,
    /// Lower case: response headers scripts may read.
    pub expose_headers: Vec<String>,
    pub credentials: bool,
    pub max_age_s: u32,
}

/// Request headers a browser sends without asking (CORS-safelisted).
const SAFELISTED: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
];

/// What to do with a CORS preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// Answer 204 with these headers, never forwarding.
    Allow(Vec<(String, String)>),
    /// Answer 403 without CORS headers.
    Refuse(&'static str),
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    fn allow_origin(&self, origin: &str) -> Option<String> {
        if origin == "null" {
            return None;
        }
        let origin = origin.to_ascii_lowercase();
        let rule = self.origins.iter().find(|o| o.matches(&origin))?;
        Some(if *rule == AllowedOrigin::Any && !self.credentials {
            "*".to_string()
        } else {
            origin
        })
    }

    /// Whether a WebSocket handshake with this `Origin` may open: browsers send `Origin` on
    /// every handshake and apply no CORS to WebSockets, so the gateway checks it (a handshake
    /// without `Origin` is not a browser's, and there is no page to protect).
    pub fn allows_handshake(&self, origin: Option<&str>) -> bool {
        origin.is_none_or(|o| self.allow_origin(o).is_some())
    }

    /// Decides a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
    pub fn preflight(
        &self,
        origin: &str,
        method: &str,
        request_headers: Option<&str>,
    ) -> Preflight {
        let Some(allow_origin) = self.allow_origin(origin) else {
            return Preflight::Refuse("this origin may not call this route");
        };
        if !self.methods.iter().any(|m| m == method) {
            return Preflight::Refuse("this method is not allowed for cross-origin calls");
        }
        let requested: Vec<String> = request_headers
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if requested
            .iter()
            .any(|h| !SAFELISTED.contains(&h.as_str()) && !self.headers.contains(h))
        {
            return Preflight::Refuse("a requested header is not allowed for cross-origin calls");
        }
        let mut out = vec![
            ("access-control-allow-origin".to_string(), allow_origin),
            (
                "access-control-allow-methods".to_string(),
                self.methods.join(", "),
            ),
        ];
        if !requested.is_empty() {
            out.push((
                "access-control-allow-headers".to_string(),
                requested.join(", "),
            ));
        }
        if self.credentials {
            out.push((
                "access-control-allow-credentials".to_string(),
                "true".to_string(),
            ));
        }
        out.push((
            "access-control-max-age".to_string(),
            self.max_age_s.to_string(),
        ));
        out.push((
            "vary".to_string(),
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_string(),
        ));
        Preflight::Allow(out)
    }

    /// Applies the policy to an actual response's headers: the origin's CORS headers are
    /// replaced, `Vary: Origin` is added, and the allow headers are set when `origin` is allowed.
    pub fn apply(&self, origin: Option<&str>, headers: &mut Vec<(String, String)>) {
        headers.retain(|(n, _)| !n.starts_with("access-control-"));
        match headers.iter_mut().find(|(n, _)| n == "vary") {
            Some((_, v))
                if !v
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("origin")) =>
            {
                v.push_str(", Origin")
            }
            Some(_) => {}
            None => headers.push(("vary".to_string(), "Origin".to_string())),
        }
        let Some(allow) = origin.and_then(|o| self.allow_origin(o)) else {
            return;
        };
        headers.push(("access-control-allow-origin".to_string(), allow));
        if self.credentials {
            headers.push((
                "access-control-allow-credentials".to_string(),
                "true".to_string(),
            ));
        }
        if !self.expose_headers.is_empty() {
            headers.push((
                "access-control-expose-headers".to_string(),
                self.expose_headers.join(", "),
            ));
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    /// Lower case.
    Header(String),
    /// One counter for the whole route.
    Route,
    /// A verified claim (routes with auth).
    Claim(String),
}

/// A route's rate limit: a Workers Rate Limiting binding and what it counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub binding: String,
    pub key: RateKey,
    /// The binding's period, for `Retry-After`.
    pub period_s: u32,
}

impl RateLimit {
    /// The key to count this request under, prefixed with the route so that routes sharing a
    /// binding do not share counters; `None` when the request lacks the value (not limited by
    /// this rule, as with a missing hash key).
    pub fn key_for<'a>(
        &self,
        route: &str,
        client_ip: Option<&str>,
        headers: &[(String, String)],
        claim: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<String> {
        let value = match &self.key {
            RateKey::ClientIp => client_ip?.to_string(),
            RateKey::Header(name) => crate::http::first(headers, name)?.to_string(),
            RateKey::Route => String::new(),
            RateKey::Claim(name) => claim(name)?.to_string(),
        };
        Some(format!("{route}\u{1f}{value}"))
    }
}

/// What the rate-limit binding answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limited {
    Allowed,
    Refused,
    /// The binding threw (the runtime's message).
    Failed(String),
    /// No binding of that name is bound.
    Unbound,
}

impl RateLimit {
    /// The gateway's answer to the binding's: `Ok` to go on (with a note for the log when the
    /// binding failed: the request is let through rather than refusing everyone), or the error
    /// for the client (429 with `Retry-After`; 500 `config_invalid` when the binding is not
    /// bound) and the detail for the log.
    pub fn verdict(
        &self,
        limited: Limited,
    ) -> Result<Option<String>, (GatewayError, Option<String>)> {
        match limited {
            Limited::Allowed => Ok(None),
            Limited::Refused => Err((
                GatewayError::RateLimited {
                    retry_after_s: self.period_s,
                },
                None,
            )),
            Limited::Failed(e) => Ok(Some(format!("rate limit {}: {e}", self.binding))),
            Limited::Unbound => Err((
                GatewayError::ConfigInvalid,
                Some(format!(
                    "rate-limit binding {} is not bound: add it to [[ratelimits]] in wrangler.toml",
                    self.binding
                )),
            )),
        }
    }
}

/// Request size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    pub max_url_bytes: usize,
    pub max_header_bytes: usize,
}

/// Defaults: the URL and header limits of common proxies (nginx: 8 KiB lines; Cloudflare: 32 KiB
/// of headers).
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

/// Whether a declared body length is over a limit.
pub fn body_too_large(content_length: Option<u64>, max: Option<u64>) -> bool {
    matches!((content_length, max), (Some(n), Some(m)) if n > m)
}

#[cfg(test)]
mod tests;
