//! The edge-policy part of the config: top-level `settings`, and the route fields `cors`,
//! `limits`, `allow_ips`, `deny_ips`, `rate_limit` and `security_headers`.

use serde::Deserialize;
use serde_json::Value;

use super::{
    AllowedOrigin, Cidr, Cors, IpRules, RateKey, RateLimit, SizeLimits, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_URL_BYTES,
};
use crate::http::is_valid_header_value;
use crate::http::{method_list, validate_header_name};
use crate::problems::{is_identifier, key_path, Problems};
use crate::request::Underscores;

/// Methods the gateway accepts when `settings.methods` is not set: TRACE and CONNECT are not.
pub const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Security headers set on every proxied response that lacks them, unless switched off.
pub const DEFAULT_SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

/// The largest body limit accepted (the platform's own request body limit is 100 MB on most plans).
const MAX_BODY_LIMIT: u64 = 512 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettings {
    max_url_bytes: Option<u64>,
    max_header_bytes: Option<u64>,
    methods: Option<Vec<String>>,
    security_headers: Option<Value>,
    underscores_in_headers: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    origins: Vec<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    credentials: bool,
    max_age_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    binding: String,
    key: String,
    period_s: Option<u64>,
}

/// Gateway-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub limits: SizeLimits,
    /// Upper case; other methods get 405.
    pub methods: Vec<String>,
    /// Lower-case names; empty when switched off.
    pub security_headers: Vec<(String, String)>,
    /// Client header names with `_`: dropped (the default), refused, or kept.
    pub underscores: Underscores,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: SizeLimits {
                max_url_bytes: DEFAULT_MAX_URL_BYTES,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            },
            methods: DEFAULT_METHODS.iter().map(|m| m.to_string()).collect(),
            security_headers: DEFAULT_SECURITY_HEADERS
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            underscores: Underscores::Drop,
        }
    }
}

/// `false`: none; an object: exactly these (name to value).
fn security_headers(value: &Value, at: &str, problems: &mut Problems) -> Vec<(String, String)> {
    match value {
        Value::Bool(false) => Vec::new(),
        Value::Object(map) => {
            let mut out = Vec::new();
            for (name, v) in map {
                let at = key_path(at, name);
                let Some(v) = v.as_str() else {
                    problems.add(at, "a header value must be a string", None);
                    continue;
                };
                if validate_header_name(name, at.clone(), problems, true) {
                    if is_valid_header_value(v) {
                        out.push((name.to_ascii_lowercase(), v.to_string()));
                    } else {
                        problems.add(
                            at,
                            "a header value may not hold control characters or line breaks",
                            None,
                        );
                    }
                }
            }
            out
        }
        _ => {
            problems.add(
                at.to_string(),
                "security_headers is false or an object of header names to values",
                Some("false switches them off; an object replaces the defaults"),
            );
            Vec::new()
        }
    }
}

pub(crate) fn settings(raw: Option<&RawSettings>, problems: &mut Problems) -> Settings {
    let mut s = Settings::default();
    let Some(raw) = raw else { return s };
    let at = "$.settings";
    let mut bounded = |value: Option<u64>, default: usize, field: &str| match value {
        None => default,
        Some(v) if (256..=1024 * 1024).contains(&v) => v as usize,
        Some(_) => {
            problems.add(
                format!("{at}.{field}"),
                "must be between 256 and 1048576",
                None,
            );
            default
        }
    };
    s.limits.max_url_bytes = bounded(raw.max_url_bytes, DEFAULT_MAX_URL_BYTES, "max_url_bytes");
    s.limits.max_header_bytes = bounded(
        raw.max_header_bytes,
        DEFAULT_MAX_HEADER_BYTES,
        "max_header_bytes",
    );
    if let Some(list) = &raw.methods {
        s.methods = method_list(list, &format!("{at}.methods"), problems);
    }
    if let Some(v) = &raw.security_headers {
        s.security_headers = security_headers(v, &format!("{at}.security_headers"), problems);
    }
    match raw.underscores_in_headers.as_deref() {
        None | Some("drop") => {}
        Some("reject") => s.underscores = Underscores::Reject,
        Some("allow") => s.underscores = Underscores::Allow,
        Some(other) => problems.add(
            format!("{at}.underscores_in_headers"),
            format!("\"{other}\" is not one of \"drop\", \"reject\", \"allow\""),
            Some("\"drop\" (the default) removes client headers whose names hold `_`"),
        ),
    }
    s
}

/// A route's edge policy.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    pub cors: Option<Cors>,
    pub max_body_bytes: Option<u64>,
    pub ip_rules: IpRules,
    pub rate_limit: Option<RateLimit>,
    /// `None`: the gateway-wide security headers; `Some`: this route's own (empty: none).
    pub security_headers: Option<Vec<(String, String)>>,
}

pub(crate) struct RawRoutePolicy<'a> {
    pub cors: Option<&'a RawCors>,
    pub limits: Option<&'a RawLimits>,
    pub allow_ips: Option<&'a Vec<String>>,
    pub deny_ips: Option<&'a Vec<String>>,
    pub rate_limit: Option<&'a RawRateLimit>,
    pub security_headers: Option<&'a Value>,
    /// Whether the route has an auth policy (claims exist only there).
    pub has_auth: bool,
}

fn cidr_list(list: &[String], at: &str, problems: &mut Problems) -> Vec<Cidr> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match Cidr::parse(text) {
            Ok(c) => out.push(c),
            Err(e) => problems.add(
                format!("{at}[{i}]"),
                e,
                Some("write an address or a CIDR: 203.0.113.0/24, 2001:db8::/32"),
            ),
        }
    }
    out
}

fn header_names(list: &[String], at: &str, problems: &mut Problems) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter(|(i, n)| validate_header_name(n, format!("{at}[{i}]"), problems, false))
        .map(|(_, n)| n.to_ascii_lowercase())
        .collect()
}

pub(crate) fn route_policy(
    raw: RawRoutePolicy<'_>,
    route_methods: Option<&Vec<String>>,
    at: &str,
    problems: &mut Problems,
) -> RoutePolicy {
    let mut policy = RoutePolicy::default();
    let has_auth = raw.has_auth;
    if let Some(c) = raw.cors {
        let at = format!("{at}.cors");
        if c.origins.is_empty() {
            problems.add(
                format!("{at}.origins"),
                "list at least one origin",
                Some("\"https://app.example.com\""),
            );
        }
        let mut origins = Vec::new();
        for (i, o) in c.origins.iter().enumerate() {
            match AllowedOrigin::parse(o) {
                Ok(AllowedOrigin::Any) if c.credentials => problems.add(
                    format!("{at}.origins[{i}]"),
                    "\"*\" together with credentials would let any site act as the user",
                    Some("list the origins that may send credentials"),
                ),
                Ok(parsed) => origins.push(parsed),
                Err(e) => problems.add(format!("{at}.origins[{i}]"), e, None),
            }
        }
        let default_methods: Vec<String> = match route_methods {
            Some(m) => m.iter().filter(|m| *m != "HEAD").cloned().collect(),
            None => ["GET", "HEAD", "POST"]
                .iter()
                .map(|m| m.to_string())
                .collect(),
        };
        let cors_methods = match &c.methods {
            Some(m) => method_list(m, &format!("{at}.methods"), problems),
            None => default_methods,
        };
        let max_age_s = match c.max_age_s {
            None => 600,
            Some(v) if v <= 86_400 => v as u32,
            Some(_) => {
                problems.add(
                    format!("{at}.max_age_s"),
                    "must be between 0 and 86400",
                    None,
                );
                600
            }
        };
        policy.cors = Some(Cors {
            origins,
            methods: cors_methods,
            headers: header_names(&c.headers, &format!("{at}.headers"), problems),
            expose_headers: header_names(
                &c.expose_headers,
                &format!("{at}.expose_headers"),
                problems,
            ),
            credentials: c.credentials,
            max_age_s,
        });
    }
    if let Some(l) = raw.limits {
        policy.max_body_bytes = match l.max_body_bytes {
            Some(n) if n <= MAX_BODY_LIMIT => Some(n),
            Some(_) => {
                problems.add(
                    format!("{at}.limits.max_body_bytes"),
                    format!("must be at most {MAX_BODY_LIMIT}"),
                    None,
                );
                None
            }
            None => None,
        };
    }
    if let Some(list) = raw.allow_ips {
        if list.is_empty() {
            problems.add(
                format!("{at}.allow_ips"),
                "an empty allow list would refuse everyone",
                Some("remove the field to allow every address"),
            );
        }
        policy.ip_rules.allow = cidr_list(list, &format!("{at}.allow_ips"), problems);
    }
    if let Some(list) = raw.deny_ips {
        policy.ip_rules.deny = cidr_list(list, &format!("{at}.deny_ips"), problems);
    }
    if let Some(r) = raw.rate_limit {
        let at = format!("{at}.rate_limit");
        let binding_ok = is_identifier(&r.binding);
        if !binding_ok {
            problems.add(
                format!("{at}.binding"),
                format!("\"{}\" is not a binding name", r.binding),
                Some("the `name` of a [[ratelimits]] entry in wrangler.toml"),
            );
        }
        let key = match r.key.split_once(':') {
            None if r.key == "client_ip" => Some(RateKey::ClientIp),
            None if r.key == "route" => Some(RateKey::Route),
            Some(("header", name)) if crate::http::is_valid_header_name(name) => {
                Some(RateKey::Header(name.to_ascii_lowercase()))
            }
            Some(("claim", name)) if !name.is_empty() && has_auth => {
                Some(RateKey::Claim(name.to_string()))
            }
            Some(("claim", _)) => {
                problems.add(
                    format!("{at}.key"),
                    "a claim key needs a route with auth",
                    Some("add \"auth\" to the route"),
                );
                None
            }
            _ => {
                problems.add(
                    format!("{at}.key"),
                    format!("\"{}\" is not a rate-limit key", r.key),
                    Some("client_ip, header:NAME, claim:NAME or route"),
                );
                None
            }
        };
        let period_s = match r.period_s {
            None => 60,
            Some(p @ (10 | 60)) => p as u32,
            Some(_) => {
                problems.add(
                    format!("{at}.period_s"),
                    "the binding's period is 10 or 60 seconds",
                    Some("the same as simple.period in wrangler.toml"),
                );
                60
            }
        };
        if let Some(key) = key {
            policy.rate_limit = Some(RateLimit {
                binding: r.binding.clone(),
                key,
                period_s,
            });
        }
    }
    if let Some(v) = raw.security_headers {
        policy.security_headers = Some(security_headers(
            v,
            &format!("{at}.security_headers"),
            problems,
        ));
    }
    policy
}
