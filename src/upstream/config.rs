//! The `origins` section of the config: raw serde types and their validation into [`Origin`].

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::http::is_valid_header_name;
use crate::problems::{bounded, is_identifier, Problems};

/// The per-attempt timeout when an origin sets none, in milliseconds (Envoy's default route
/// timeout).
pub const DEFAULT_TIMEOUT_MS: u32 = 15_000;
/// The largest `timeout_ms` accepted.
pub const MAX_TIMEOUT_MS: u32 = 600_000;

// Raw wire types.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOrigin {
    servers: Vec<RawServer>,
    balance: Option<String>,
    hash_on: Option<String>,
    timeout_ms: Option<u64>,
    deadline_ms: Option<u64>,
    retry: Option<RawRetry>,
    eject: Option<RawEject>,
    mtls_certificate: Option<String>,
    health: Option<super::checks::RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: Option<String>,
    binding: Option<String>,
    mtls_certificate: Option<String>,
    weight: Option<u64>,
    backup: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u64>,
    on: Option<Vec<Value>>,
    non_idempotent: Option<bool>,
    replay_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEject {
    after_failures: Option<u64>,
    for_ms: Option<u64>,
    max_for_ms: Option<u64>,
}

/// An origin pool.
#[derive(Debug)]
pub struct Origin {
    pub name: String,
    /// At least one server, and at least one that is not a backup.
    pub servers: Vec<Server>,
    pub balance: Balance,
    /// The time one attempt may take until the origin's response headers arrive.
    pub timeout_ms: u32,
    /// The time all attempts of one request may take together; never less than `timeout_ms`.
    pub deadline_ms: u32,
    pub retry: RetryPolicy,
    pub eject: EjectPolicy,
    /// The active health check, when the pool has one.
    pub health: Option<super::checks::HealthCheck>,
}

/// How a pool picks the first server of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Always the first healthy server: an active/standby pair.
    First,
    /// Consistent (rendezvous) hashing on a request value; round robin without one.
    Hash(HashOn),
}

/// The request value a `hash` pool hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    /// A lower-case header name.
    Header(String),
    Cookie(String),
    /// A verified claim: requests without one (public routes, anonymous callers) use round robin.
    Claim(String),
}

/// When a request is attempted again on another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub attempts: u32,
    pub on_connect: bool,
    pub on_timeout: bool,
    /// Origin statuses that count as failures worth another attempt.
    pub on_statuses: Vec<u16>,
    /// Whether POST and PATCH are retried too.
    pub non_idempotent: bool,
    /// The largest request body buffered so that it can be sent again; larger bodies stream and
    /// are not retried.
    pub replay_body_bytes: u64,
}

/// When a failing server is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EjectPolicy {
    /// Failures in a row that eject a server; 0 never ejects.
    pub after_failures: u32,
    /// The first ejection's length; each ejection in a row doubles it.
    pub for_ms: u32,
    /// The longest ejection.
    pub max_for_ms: u32,
}

/// Defaults of the `retry` and `eject` fields.
pub const DEFAULT_ATTEMPTS: u32 = 3;
pub const DEFAULT_DEADLINE_MS: u32 = 30_000;
pub const DEFAULT_REPLAY_BODY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_EJECT_AFTER: u32 = 3;
pub const DEFAULT_EJECT_FOR_MS: u32 = 30_000;
pub const DEFAULT_EJECT_MAX_FOR_MS: u32 = 300_000;

/// One origin server.
#[derive(Debug)]
pub struct Server {
    /// Relative share of traffic, 1 to 1000.
    pub weight: u32,
    /// Takes traffic only when every non-backup server is ejected or has failed.
    pub backup: bool,
    /// `scheme://authority` followed by the base path without a trailing slash (possibly empty).
    pub base: String,
    /// The host, lower case, without port and without a trailing dot (an IPv6 address in
    /// brackets): what a `Location` pointing at this server has.
    pub host: String,
    /// The host's IP address when the host is an IP literal (in any spelling the URL parser
    /// reads: `0x7f.1` is 127.0.0.1), compared as an address rather than as text.
    pub ip: Option<IpAddr>,
    /// The port: the URL's, or its scheme's default (80, 443).
    pub port: u16,
    /// The base path (`/internal/v1`), empty when the server URL has none.
    pub base_path: String,
    /// The Worker binding whose `fetch` carries this server's requests: a fetcher (a service
    /// binding, a Workers VPC service) or an mTLS certificate binding; `None`: the global
    /// `fetch`.
    pub via: Option<Via>,
}

/// How a server is reached other than by the global `fetch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A fetcher binding: the server has no public address (`{ "binding": NAME }`).
    Binding(String),
    /// An mTLS certificate binding: the gateway presents its client certificate.
    Mtls(String),
}

impl Server {
    /// The binding whose `fetch` sends this server's requests, if any.
    pub fn fetcher(&self) -> Option<&str> {
        match &self.via {
            Some(Via::Binding(name) | Via::Mtls(name)) => Some(name),
            None => None,
        }
    }

    /// How the log names the server: a binding server by its binding, never an address.
    pub fn log_name(&self) -> String {
        match &self.via {
            Some(Via::Binding(name)) => format!("binding:{name}"),
            _ => self.base.clone(),
        }
    }
}

/// The origin pool `name` (at `at`), every problem of it reported.
pub(crate) fn validate_origin(
    name: &str,
    raw: &RawOrigin,
    at: &str,
    problems: &mut Problems,
) -> Origin {
    if name.is_empty() {
        problems.add(at.to_string(), "an origin name must not be empty", None);
    }
    let range = 1..=u64::from(MAX_TIMEOUT_MS);
    // An out-of-range deadline is reported here and then read as unset, so that it cannot add
    // a conflict with the timeout on top.
    let explicit_deadline = raw.deadline_ms.and_then(|d| {
        if range.contains(&d) {
            Some(d as u32)
        } else {
            problems.add(
                format!("{at}.deadline_ms"),
                format!("must be between {} and {}", range.start(), range.end()),
                Some("the time all attempts of one request may take together, in milliseconds"),
            );
            None
        }
    });
    // Each default gives way to the other field when only that one is set: a deadline alone
    // shorter than the default timeout cuts the timeout to it, a timeout alone longer than the
    // default deadline stretches the deadline to it. Only two explicit values can conflict.
    let timeout_ms = bounded(
        raw.timeout_ms,
        u64::from(DEFAULT_TIMEOUT_MS.min(explicit_deadline.unwrap_or(DEFAULT_TIMEOUT_MS))),
        range,
        format!("{at}.timeout_ms"),
        "the time one attempt may take until response headers, in milliseconds",
        problems,
    ) as u32;
    let deadline_ms = explicit_deadline.unwrap_or(DEFAULT_DEADLINE_MS.max(timeout_ms));
    if deadline_ms < timeout_ms {
        problems.add(
            format!("{at}.deadline_ms"),
            format!("deadline_ms ({deadline_ms}) is shorter than timeout_ms ({timeout_ms})"),
            Some(
                "the deadline bounds all attempts together: make it at least one attempt's timeout, \
                 or leave timeout_ms out to have it follow the deadline",
            ),
        );
    }

    if raw.servers.is_empty() {
        problems.add(
            format!("{at}.servers"),
            "an origin needs at least one server",
            Some("add { \"url\": \"https://service.internal.example\" }"),
        );
    } else if raw.servers.iter().all(|s| s.backup == Some(true)) {
        problems.add(
            format!("{at}.servers"),
            "every server is a backup",
            Some("backups take traffic only when the others fail: make at least one server a primary"),
        );
    }
    let pool_mtls = raw
        .mtls_certificate
        .as_deref()
        .filter(|m| binding_name(m, format!("{at}.mtls_certificate"), problems).is_some());
    let mut servers = Vec::with_capacity(raw.servers.len());
    for (i, s) in raw.servers.iter().enumerate() {
        let at = format!("{at}.servers[{i}]");
        let weight = bounded(
            s.weight,
            1,
            1..=1000,
            format!("{at}.weight"),
            "a relative share of traffic",
            problems,
        ) as u32;
        if let Some(mut server) = validate_server(s, pool_mtls, &at, problems) {
            server.weight = weight;
            server.backup = s.backup.unwrap_or(false);
            servers.push(server);
        }
    }

    let balance = match (raw.balance.as_deref(), raw.hash_on.as_deref()) {
        (Some("hash"), Some(on)) => match parse_hash_on(on) {
            Ok(h) => Balance::Hash(h),
            Err(message) => {
                problems.add(
                    format!("{at}.hash_on"),
                    message,
                    Some("client_ip, header:NAME or cookie:NAME"),
                );
                Balance::RoundRobin
            }
        },
        (Some("hash"), None) => {
            problems.add(
                format!("{at}.hash_on"),
                "balance \"hash\" needs hash_on",
                Some("hash on client_ip, header:NAME or cookie:NAME"),
            );
            Balance::RoundRobin
        }
        (_, Some(_)) => {
            problems.add(
                format!("{at}.hash_on"),
                "hash_on is used only with balance \"hash\"",
                Some("set \"balance\": \"hash\" or remove hash_on"),
            );
            Balance::RoundRobin
        }
        (None | Some("round_robin"), None) => Balance::RoundRobin,
        (Some("random"), None) => Balance::Random,
        (Some("first"), None) => Balance::First,
        (Some(other), None) => {
            problems.add(
                format!("{at}.balance"),
                format!("unknown balance \"{other}\""),
                Some("round_robin, random, hash or first"),
            );
            Balance::RoundRobin
        }
    };

    let retry = match &raw.retry {
        None => RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            on_connect: true,
            on_timeout: true,
            on_statuses: Vec::new(),
            non_idempotent: false,
            replay_body_bytes: DEFAULT_REPLAY_BODY_BYTES,
        },
        Some(r) => validate_retry(r, &format!("{at}.retry"), problems),
    };
    let eject = match &raw.eject {
        None => EjectPolicy {
            after_failures: DEFAULT_EJECT_AFTER,
            for_ms: DEFAULT_EJECT_FOR_MS,
            max_for_ms: DEFAULT_EJECT_MAX_FOR_MS,
        },
        Some(e) => {
            let at = format!("{at}.eject");
            let after_failures = bounded(
                e.after_failures,
                u64::from(DEFAULT_EJECT_AFTER),
                0..=1000,
                format!("{at}.after_failures"),
                "failures in a row that eject a server; 0 never ejects",
                problems,
            ) as u32;
            let for_ms = bounded(
                e.for_ms,
                u64::from(DEFAULT_EJECT_FOR_MS),
                1..=3_600_000,
                format!("{at}.for_ms"),
                "how long an ejected server is skipped, in milliseconds",
                problems,
            ) as u32;
            let max_for_ms = bounded(
                e.max_for_ms,
                u64::from(DEFAULT_EJECT_MAX_FOR_MS.max(for_ms)),
                u64::from(for_ms)..=3_600_000,
                format!("{at}.max_for_ms"),
                "the cap of the doubling ejection time, at least for_ms",
                problems,
            ) as u32;
            EjectPolicy {
                after_failures,
                for_ms,
                max_for_ms,
            }
        }
    };
    let health = raw
        .health
        .as_ref()
        .map(|h| super::checks::validate_health(h, &format!("{at}.health"), problems));
    Origin {
        name: name.to_string(),
        servers,
        balance,
        timeout_ms,
        deadline_ms,
        retry,
        eject,
        health,
    }
}

fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    match text.split_once(':') {
        None if text == "client_ip" => Ok(HashOn::ClientIp),
        Some(("header", name)) if is_valid_header_name(name) => {
            Ok(HashOn::Header(name.to_ascii_lowercase()))
        }
        Some(("cookie", name)) if !name.is_empty() && is_valid_header_name(name) => {
            Ok(HashOn::Cookie(name.to_string()))
        }
        Some(("claim", name)) if !name.is_empty() => Ok(HashOn::Claim(name.to_string())),
        _ => Err(format!("\"{text}\" is not a value to hash on")),
    }
}

fn validate_retry(raw: &RawRetry, at: &str, problems: &mut Problems) -> RetryPolicy {
    let attempts = bounded(
        raw.attempts,
        u64::from(DEFAULT_ATTEMPTS),
        1..=10,
        format!("{at}.attempts"),
        "attempts in all, the first included; 1 means no retry",
        problems,
    ) as u32;
    let mut policy = RetryPolicy {
        attempts,
        on_connect: false,
        on_timeout: false,
        on_statuses: Vec::new(),
        non_idempotent: raw.non_idempotent.unwrap_or(false),
        replay_body_bytes: bounded(
            raw.replay_body_bytes,
            DEFAULT_REPLAY_BODY_BYTES,
            0..=16 * 1024 * 1024,
            format!("{at}.replay_body_bytes"),
            "the largest request body buffered so it can be sent again",
            problems,
        ),
    };
    match &raw.on {
        None => {
            policy.on_connect = true;
            policy.on_timeout = true;
        }
        Some(list) => {
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(s) if s == "connect" => policy.on_connect = true,
                    Value::String(s) if s == "timeout" => policy.on_timeout = true,
                    Value::Number(n) if n.as_u64().is_some_and(|c| (400..=599).contains(&c)) => {
                        policy
                            .on_statuses
                            .push(n.as_u64().unwrap_or_default() as u16)
                    }
                    other => problems.add(
                        format!("{at}.on[{i}]"),
                        format!("{other} is not a failure to retry on"),
                        Some("\"connect\", \"timeout\", or a status code from 400 to 599"),
                    ),
                }
            }
        }
    }
    policy
}

/// A binding name, checked: a Worker binding is an identifier.
fn binding_name(name: &str, at: String, problems: &mut Problems) -> Option<String> {
    if is_identifier(name) {
        return Some(name.to_string());
    }
    problems.add(
        at,
        format!("\"{name}\" is not a binding name"),
        Some("a binding name is a letter or '_', then letters, digits and '_', as wrangler.toml names it"),
    );
    None
}

/// One server: a URL, a fetcher binding (with an optional URL whose host and path it is sent),
/// and the mTLS certificate binding of the server or of its pool (`pool_mtls`).
fn validate_server(
    raw: &RawServer,
    pool_mtls: Option<&str>,
    at: &str,
    problems: &mut Problems,
) -> Option<Server> {
    let via = match (&raw.binding, raw.mtls_certificate.as_deref().or(pool_mtls)) {
        (Some(_), Some(_)) if raw.mtls_certificate.is_some() => {
            problems.add(
                format!("{at}.mtls_certificate"),
                "a binding server cannot have an mTLS certificate: the binding reaches it",
                None,
            );
            return None;
        }
        (Some(b), _) => Some(Via::Binding(binding_name(
            b,
            format!("{at}.binding"),
            problems,
        )?)),
        (None, Some(m)) if raw.mtls_certificate.is_some() => Some(Via::Mtls(binding_name(
            m,
            format!("{at}.mtls_certificate"),
            problems,
        )?)),
        // The pool's, checked once in `validate_origin`.
        (None, Some(m)) => Some(Via::Mtls(m.to_string())),
        (None, None) => None,
    };
    let url = match (&raw.url, &via) {
        (Some(url), _) => url.clone(),
        // Through a binding without a URL: a host that names the binding and no address (the
        // `.invalid` top-level domain never resolves).
        (None, Some(Via::Binding(name))) => {
            format!(
                "https://{}.binding.invalid",
                name.to_ascii_lowercase().replace('_', "-")
            )
        }
        (None, _) => {
            problems.add(
                format!("{at}.url"),
                "a server needs a url, or a binding",
                Some("{ \"url\": \"https://service.internal.example\" } or { \"binding\": \"USERS_API\" }"),
            );
            return None;
        }
    };
    let mut server = validate_server_url(&url, &format!("{at}.url"), problems)?;
    server.via = via;
    Some(server)
}

fn validate_server_url(text: &str, at: &str, problems: &mut Problems) -> Option<Server> {
    let hint = Some("write an absolute URL such as https://users.internal.example:8443/base (an international host name in its punycode form, xn--...)");
    let url = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            problems.add(at.to_string(), format!("not an absolute URL: {e}"), hint);
            return None;
        }
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        problems.add(
            at.to_string(),
            format!("scheme '{}' is not http or https", url.scheme()),
            hint,
        );
        return None;
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        problems.add(at.to_string(), "the URL has no host", hint);
        return None;
    };
    if !url.username().is_empty() || url.password().is_some() {
        problems.add(
            at.to_string(),
            "credentials in a server URL are not allowed",
            Some("send them with request_headers.set on the route instead"),
        );
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        problems.add(
            at.to_string(),
            "a server URL may not have a query or fragment",
            hint,
        );
        return None;
    }
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let base_path = url.path().trim_end_matches('/').to_string();
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    Some(Server {
        weight: 1,
        backup: false,
        base: format!("{}://{authority}{base_path}", url.scheme()),
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        ip,
        port: url.port_or_known_default().unwrap_or(80),
        base_path,
        via: None,
    })
}
