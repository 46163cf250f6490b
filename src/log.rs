//! The one structured log line per request (README, step 11 of "The life of a request").
//!
//! Contract: the line holds the request id, method, normalized path (never the query, which may
//! carry tokens), route, status, error code, every origin attempt and the total duration; it
//! never holds a header value, token, secret or cookie.

use serde::Serialize;

/// How one attempt to reach an origin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The origin answered (with any status).
    Response,
    /// No response headers within the timeout.
    Timeout,
    /// The subrequest failed before any response: refused, reset, DNS, TLS.
    ConnectFailed,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The server's index in the route's origin pool.
    pub server: usize,
    /// The server's address: the log is the operator's, never the client's.
    pub address: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: u64,
    /// Set when this attempt's failure ejected the server, for this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
}

/// The auth outcome of a request on a route with a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthLog {
    /// `verified`, `cached` (a verified token seen again), `anonymous`, `refused`.
    pub outcome: &'static str,
    /// The reason code when refused (`expired`, `bad_signature`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The token's `kid`, cut to 64 characters. Never the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The verified token's `iss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The log line. Serialize it with [`LogLine::to_json`].
#[derive(Debug, Clone, Serialize)]
pub struct LogLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    pub route: Option<&'a str>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// What the operator needs and the client must not see: a runtime error string, the config
    /// problems. Never a header value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthLog>,
    pub attempts: Vec<Attempt>,
    /// The `x-cache-status` given, on routes with `cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// Why the request was not cached, with `cache: "BYPASS"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_reason: Option<&'static str>,
    /// `websocket` for a WebSocket handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<&'static str>,
    pub duration_ms: u64,
}

impl LogLine<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
