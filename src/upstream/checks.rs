//! Active health checks (README, "Active health checks"): a pool's `health` field, what one
//! scheduled run probes, how a probe's outcome reads, and what the isolates take from the
//! stored results.
//!
//! The results of every run are one JSON document in the Worker's KV namespace (under
//! [`CHECKS_KEY`]): each server's key ([`super::health_key`]) with its last result. A run reads
//! it, probes the servers that are due ([`plan`]), and writes it back merged ([`record`]).
//! Isolates read it in the background and skip a server whose last check failed ([`downs`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::Origin;
use crate::problems::{bounded, Problems};

/// The KV binding the scheduled run writes the results to and the isolates read them from.
pub const CHECKS_BINDING: &str = "GATEWAY_HEALTH";
/// The KV key of the results document.
pub const CHECKS_KEY: &str = "portcullis/health-checks/v1";
/// At most this many probes in one scheduled run: with the read and the write of the results,
/// under the platform's subrequest limit per invocation.
pub const MAX_PROBES_PER_RUN: usize = 40;
/// A server is due this long before its interval has fully passed, so that a check every
/// minute is not put off to the next run by the trigger's jitter.
pub const DUE_SLACK_MS: u64 = 5_000;
/// A stored result older than this many intervals (plus a minute) is no longer believed: when
/// the scheduled runs stop, servers do not stay out forever.
pub const STALE_INTERVALS: u64 = 3;

pub const DEFAULT_HEALTH_INTERVAL_S: u32 = 60;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u32 = 2_000;
/// The longest probe timeout: every probe of a run runs at once, so this bounds the run too.
pub const MAX_HEALTH_TIMEOUT_MS: u32 = 10_000;

/// A pool's active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Joined to each server's base as a forwarded path is.
    pub path: String,
    pub interval_s: u32,
    pub timeout_ms: u32,
    /// The statuses that mean healthy.
    pub expect: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    path: Option<String>,
    interval_s: Option<u64>,
    timeout_ms: Option<u64>,
    expect: Option<Vec<serde_json::Value>>,
}

/// The `health` field of a pool at `at`, every problem reported.
pub(crate) fn validate_health(raw: &RawHealth, at: &str, problems: &mut Problems) -> HealthCheck {
    let path = match raw.path.as_deref() {
        None => "/healthz".to_string(),
        Some(p)
            if p.starts_with('/')
                && p.len() <= 1024
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') =>
        {
            p.to_string()
        }
        Some(_) => {
            problems.add(
                format!("{at}.path"),
                "must be a path starting with '/', without spaces, query or fragment",
                Some("for example \"/healthz\""),
            );
            "/healthz".to_string()
        }
    };
    let interval_s = bounded(
        raw.interval_s,
        u64::from(DEFAULT_HEALTH_INTERVAL_S),
        60..=86_400,
        format!("{at}.interval_s"),
        "seconds between checks of one server; the platform's Cron Triggers run at most once a minute",
        problems,
    ) as u32;
    let timeout_ms = bounded(
        raw.timeout_ms,
        u64::from(DEFAULT_HEALTH_TIMEOUT_MS),
        1..=u64::from(MAX_HEALTH_TIMEOUT_MS),
        format!("{at}.timeout_ms"),
        "the time one probe may take until response headers, in milliseconds",
        problems,
    ) as u32;
    let mut expect = Vec::new();
    match &raw.expect {
        None => expect.push(200),
        Some(list) if list.is_empty() => problems.add(
            format!("{at}.expect"),
            "must list at least one status",
            Some("for example [200]"),
        ),
        Some(list) => {
            for (i, v) in list.iter().enumerate() {
                match v.as_u64().filter(|s| (100..=599).contains(s)) {
                    Some(s) if !expect.contains(&(s as u16)) => expect.push(s as u16),
                    Some(_) => {}
                    None => problems.add(
                        format!("{at}.expect[{i}]"),
                        "must be an HTTP status, 100 to 599",
                        Some("the statuses that mean healthy, for example [200, 204]"),
                    ),
                }
            }
        }
    }
    HealthCheck {
        path,
        interval_s,
        timeout_ms,
        expect,
    }
}

/// One server's last check, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub healthy: bool,
    /// When the probe started (ms since the epoch).
    pub at_ms: u64,
    /// The status the server answered (0: no response).
    pub status: u16,
    /// Why it is unhealthy (empty when healthy).
    #[serde(default)]
    pub reason: String,
    /// The server as the log names it.
    #[serde(default)]
    pub server: String,
}

/// The stored results: each server's key and its last check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    pub servers: BTreeMap<String, CheckResult>,
}

impl Checks {
    /// The stored document; an absent or unreadable one is no results (every server is due).
    pub fn from_json(text: &str) -> Checks {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One probe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub origin: usize,
    pub server: usize,
    /// The server's key in the results.
    pub key: String,
    pub url: String,
    pub timeout_ms: u32,
    /// The binding whose `fetch` sends it (`None`: the global `fetch`).
    pub via: Option<String>,
}

/// What one run probes: due servers, never checked first, then the longest unchecked, at most
/// [`MAX_PROBES_PER_RUN`]; `deferred` due servers wait for the next run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub probes: Vec<Probe>,
    pub deferred: usize,
}

pub fn plan(origins: &[Origin], previous: &Checks, now_ms: u64) -> Plan {
    let mut due: Vec<(u64, Probe)> = Vec::new();
    for (o, origin) in origins.iter().enumerate() {
        let Some(check) = &origin.health else {
            continue;
        };
        let interval_ms = u64::from(check.interval_s) * 1000;
        for (s, server) in origin.servers.iter().enumerate() {
            let key = super::health_key(&origin.name, server);
            let last = previous.servers.get(&key).map_or(0, |r| r.at_ms);
            if last != 0 && now_ms.saturating_add(DUE_SLACK_MS) < last.saturating_add(interval_ms) {
                continue;
            }
            due.push((
                last,
                Probe {
                    origin: o,
                    server: s,
                    key,
                    // The path starts with '/', the base has no trailing slash: one slash between.
                    url: format!("{}{}", server.base.trim_end_matches('/'), check.path),
                    timeout_ms: check.timeout_ms,
                    via: server.fetcher().map(str::to_string),
                },
            ));
        }
    }
    crate::sort::stable_sort_by(&mut due, |a, b| a.0.cmp(&b.0));
    let deferred = due.len().saturating_sub(MAX_PROBES_PER_RUN);
    due.truncate(MAX_PROBES_PER_RUN);
    Plan {
        probes: due.into_iter().map(|(_, p)| p).collect(),
        deferred,
    }
}

/// How one probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status.
    Response(u16),
    /// The fetch failed before a response (the runtime's message).
    Failed(String),
    /// No response headers within the timeout.
    TimedOut,
    /// The server's binding is not bound in the Worker.
    Unbound(String),
}

/// The result of a probe of `server` (as the log names it) that started at `at_ms`: healthy
/// when the status is one of `expect`.
pub fn judge(check: &HealthCheck, outcome: &Outcome, server: String, at_ms: u64) -> CheckResult {
    let (healthy, status, reason) = match outcome {
        Outcome::Response(s) if check.expect.contains(s) => (true, *s, String::new()),
        Outcome::Response(s) => (
            false,
            *s,
            format!("status {s}, not one of {:?}", check.expect),
        ),
        Outcome::Failed(detail) => (false, 0, format!("failed: {}", bounded_text(detail))),
        Outcome::TimedOut => (
            false,
            0,
            format!("no response within {} ms", check.timeout_ms),
        ),
        Outcome::Unbound(name) => (false, 0, format!("binding {name} is not bound")),
    };
    CheckResult {
        healthy,
        at_ms,
        status,
        reason,
        server,
    }
}

fn bounded_text(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The results after a run: the previous ones, the new ones over them, and only the keys of
/// servers of pools that still have a check (a removed server or check leaves no result).
pub fn record(origins: &[Origin], previous: &Checks, new: Vec<(String, CheckResult)>) -> Checks {
    let mut servers = BTreeMap::new();
    for origin in origins.iter().filter(|o| o.health.is_some()) {
        for server in &origin.servers {
            let key = super::health_key(&origin.name, server);
            if let Some(r) = previous.servers.get(&key) {
                servers.insert(key, r.clone());
            }
        }
    }
    for (key, result) in new {
        if servers.contains_key(&key) || is_checked_key(origins, &key) {
            servers.insert(key, result);
        }
    }
    Checks { servers }
}

fn is_checked_key(origins: &[Origin], key: &str) -> bool {
    origins.iter().filter(|o| o.health.is_some()).any(|o| {
        o.servers
            .iter()
            .any(|s| super::health_key(&o.name, s) == key)
    })
}

/// What the isolates take from the results: for each server of a pool with a check, whether
/// its last check failed (`(pool, server, down)`). A server without a result, or whose result
/// is older than [`STALE_INTERVALS`] intervals and a minute, is not down.
pub fn downs(origins: &[Origin], checks: &Checks, now_ms: u64) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    for (o, origin) in origins.iter().enumerate() {
        let Some(check) = &origin.health else {
            continue;
        };
        let believed_ms = STALE_INTERVALS * u64::from(check.interval_s) * 1000 + 60_000;
        for (s, server) in origin.servers.iter().enumerate() {
            let down = checks
                .servers
                .get(&super::health_key(&origin.name, server))
                .is_some_and(|r| !r.healthy && now_ms < r.at_ms.saturating_add(believed_ms));
            out.push((o, s, down));
        }
    }
    out
}

#[cfg(test)]
mod tests;
