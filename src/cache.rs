//! The edge cache's decisions (README, steps 6 and 10, and "The edge cache"): the key, whether to look up, whether to
//! store and for how long, and how fresh a stored entry is. The adapter does the Cache API calls.
//!
//! Contracts:
//! - [`CacheRule::key`] is built by the gateway, explicitly, from the request as the origin will
//!   read it: the public host and normalized path; whether the caller is anonymous or verified
//!   (the two never share an entry); the query parameters the rule lists, decoded as form
//!   decoders do (`%76` is `v`, `+` is a space), chosen by the lenient name match of
//!   [`crate::query::loose_name`] (case, `.`/space as `_`, `[...]` suffixes) and also when a
//!   `;`-separated piece of a pair carries a listed name, sorted by name with the values of one
//!   name in their order, a pair without `=` distinct from an empty value; the values of the
//!   listed request headers, each trimmed, in order; the JSON value of each listed verified
//!   claim. Hashed with SHA-256, so no token or cookie is ever in the clear in a key. Two
//!   requests share an entry only when all of those are equal.
//! - A request is not cached (`Err` from [`CacheRule::key`], BYPASS with the reason in the log)
//!   when a keyed query parameter has malformed percent-encoding, or a listed claim is missing
//!   or has no header form (an object, a control character): "absent" never means "shared".
//! - [`CacheRule::usage`]: only GET and HEAD; a rule without claims does not cache a request
//!   carrying credentials anywhere a policy of the config reads them ([`Credentials`]).
//! - [`CacheRule::store`] never stores a response with `Set-Cookie`, `Cache-Control: no-store` or
//!   `private`, or a status the rule does not list; the origin's `s-maxage` (else `max-age`)
//!   shorter than `ttl_s` wins.
//! - [`CacheRule::error_window_s`]: how long past its freshness a stored entry may answer when
//!   the origin failed: the route's `stale_if_error_s`, shortened (never lengthened) by the
//!   origin's own `stale-if-error=N` on the stored response; without one of its own, the
//!   origin's `must-revalidate` or `proxy-revalidate` forbids it (RFC 9111, section 4.2.4).
//! - [`freshness`] tells HIT (younger than the TTL), STALE (within `stale_while_revalidate_s`
//!   after it) or expired.

use sha2::{Digest, Sha256};

use crate::auth::Identity;
use crate::http::{cache_control as directives, first as header, same_name};
use crate::query;
use crate::request::Head;

pub(crate) mod config;
pub use config::Admin;

/// A route's cache rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub ttl_s: u32,
    /// Query parameter names that are part of the key, sorted.
    pub query: Vec<String>,
    /// Lower-case request header names that are part of the key.
    pub headers: Vec<String>,
    /// Claim names that are part of the key (verified identity).
    pub claims: Vec<String>,
    /// Statuses that may be stored.
    pub statuses: Vec<u16>,
    pub stale_while_revalidate_s: u32,
    /// How long past its freshness an entry may still answer when every attempt to the origin
    /// failed (RFC 5861's `stale-if-error`); 0: never. See [`CacheRule::error_window_s`].
    pub stale_if_error_s: u32,
    /// Whether a client's `Cache-Control: no-cache` (or `Pragma: no-cache`) skips the cache.
    pub client_no_cache: bool,
}

/// The response header `x-cache-status`.
pub const STATUS_HEADER: &str = "x-cache-status";
/// Headers the gateway keeps on a stored response for itself; never sent to a client.
pub const STORED_AT_HEADER: &str = "x-portcullis-stored-at";
pub const TTL_HEADER: &str = "x-portcullis-ttl";
pub const ORIGIN_CACHE_CONTROL_HEADER: &str = "x-portcullis-origin-cache-control";

/// Whether and how a request uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Look up (GET, or HEAD answered from a stored GET).
    Lookup,
    /// Not cacheable: forwarded, `x-cache-status: BYPASS`; the reason is for the log.
    Bypass(&'static str),
}

/// Where a request can carry credentials, from every auth policy and `sso` entry of the config:
/// `authorization`, each `token_from` header, each `token_from` cookie and each session cookie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Lower case.
    pub headers: Vec<String>,
    pub cookies: Vec<String>,
}

impl Credentials {
    /// Whether the request carries any of them.
    pub fn carried_by(&self, head: &Head) -> bool {
        self.headers.iter().any(|h| head.header(h).is_some())
            || head
                .cookies
                .iter()
                .any(|(name, _)| self.cookies.iter().any(|c| c == name))
    }
}

/// The store decision for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Store for this many seconds of freshness.
    For(u32),
    /// Do not store; the reason is for the log.
    No(&'static str),
}

/// How fresh a stored entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
    Expired,
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Appends one length-prefixed part, so that no two different key inputs give the same bytes.
fn part(material: &mut Vec<u8>, bytes: &[u8]) {
    material.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    material.extend_from_slice(bytes);
}

impl CacheRule {
    /// Whether a request uses the cache. See the module docs.
    pub fn usage(&self, method: &str, head: &Head, credentials: &Credentials) -> Use {
        if method != "GET" && method != "HEAD" {
            return Use::Bypass("method");
        }
        // A request with credentials is cached only under the claims that identify its caller;
        // a rule without claims does not cache it, wherever the credential is carried.
        if self.claims.is_empty() && credentials.carried_by(head) {
            return Use::Bypass("credentials on a route keyed without claims");
        }
        if self.client_no_cache {
            let no_cache = directives(&head.headers)
                .iter()
                .any(|(d, _)| d == "no-cache" || d == "no-store")
                || head
                    .header("pragma")
                    .is_some_and(|p| p.eq_ignore_ascii_case("no-cache"));
            if no_cache {
                return Use::Bypass("client no-cache");
            }
        }
        Use::Lookup
    }

    /// The cache key: the URL under which the entry is stored, on the public host (a zone's cache
    /// is the zone's own), ending in the SHA-256 of the key material (see the module docs), or
    /// why the request must not be cached (the reason is for the log).
    pub fn key(
        &self,
        route: &str,
        head: &Head,
        path: &str,
        identity: Option<&Identity>,
    ) -> Result<String, &'static str> {
        let mut material = Vec::with_capacity(256);
        part(&mut material, b"portcullis-cache-v2");
        part(&mut material, route.as_bytes());
        part(&mut material, head.host.as_bytes());
        part(&mut material, path.as_bytes());
        // An anonymous caller and a verified one never share an entry.
        part(
            &mut material,
            if identity.is_some() {
                b"verified"
            } else {
                b"anonymous"
            },
        );
        if !self.query.is_empty() {
            self.query_material(head.query.as_deref().unwrap_or(""), &mut material)?;
        }
        for name in &self.headers {
            part(&mut material, name.as_bytes());
            let mut seen = 0u64;
            for (_, v) in head.headers.iter().filter(|(n, _)| same_name(n, name)) {
                part(&mut material, v.trim().as_bytes());
                seen += 1;
            }
            material.extend_from_slice(&seen.to_le_bytes());
        }
        if let Some(identity) = identity {
            for name in &self.claims {
                part(&mut material, name.as_bytes());
                match (identity.values.get(name), identity.claims.get(name)) {
                    (Some(value), Some(_)) => part(&mut material, value.to_string().as_bytes()),
                    (None, Some(text)) => part(&mut material, text.as_bytes()),
                    (Some(_), None) => return Err("a key claim has no header form"),
                    (None, None) => return Err("a key claim is missing"),
                }
            }
        }
        let digest = Sha256::digest(&material);
        Ok(format!(
            "https://{}/.portcullis-cache/{}",
            head.host,
            hex(&digest)
        ))
    }

    /// The key's query part: every pair that some origin may read as a listed parameter, decoded,
    /// in order of appearance within each name (sorted by name otherwise).
    fn query_material(&self, raw: &str, material: &mut Vec<u8>) -> Result<(), &'static str> {
        let listed: Vec<Vec<u8>> = self
            .query
            .iter()
            .map(|q| query::loose_name(&query::decode(q).0))
            .collect();
        let mut chosen: Vec<(Vec<u8>, query::Pair<'_>)> = Vec::new();
        for pair in query::pairs(raw) {
            let loose = query::loose_name(&pair.name);
            let by_semicolon = || {
                query::sub_names(pair.raw)
                    .into_iter()
                    .find(|n| listed.contains(n))
            };
            let key = if listed.contains(&loose) {
                Some(loose)
            } else {
                by_semicolon()
            };
            if let Some(key) = key {
                if pair.malformed {
                    return Err("a keyed query parameter has malformed percent-encoding");
                }
                chosen.push((key, pair));
            }
        }
        // Stable: the values of one name keep their order (`v=1&v=2` is not `v=2&v=1`).
        chosen.sort_by(|a, b| a.0.cmp(&b.0));
        part(material, &(chosen.len() as u64).to_le_bytes());
        for (_, pair) in chosen {
            part(material, &pair.name);
            part(material, if pair.has_value { b"=" } else { b"" });
            part(material, &pair.value);
        }
        Ok(())
    }

    /// How long an entry is kept past its freshness: the longer of the two stale windows.
    pub fn kept_stale_s(&self) -> u32 {
        self.stale_while_revalidate_s.max(self.stale_if_error_s)
    }

    /// How many seconds past its freshness a stored entry (its stored headers) may answer a
    /// request whose every attempt failed. See the module docs.
    pub fn error_window_s(&self, stored: &[(String, String)]) -> u32 {
        if self.stale_if_error_s == 0 {
            return 0;
        }
        let origin: Vec<(String, String)> = stored
            .iter()
            .filter(|(n, _)| n == ORIGIN_CACHE_CONTROL_HEADER)
            .map(|(_, v)| ("cache-control".to_string(), v.clone()))
            .collect();
        let cc = directives(&origin);
        let own = cc
            .iter()
            .find(|(d, _)| d == "stale-if-error")
            .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok());
        match own {
            Some(n) => n.min(u64::from(self.stale_if_error_s)) as u32,
            None if cc
                .iter()
                .any(|(d, _)| d == "must-revalidate" || d == "proxy-revalidate") =>
            {
                0
            }
            None => self.stale_if_error_s,
        }
    }

    /// Whether to store a response, and for how long. See the module docs.
    pub fn store(&self, status: u16, headers: &[(String, String)]) -> Store {
        if !self.statuses.contains(&status) {
            return Store::No("status not listed in cache.statuses");
        }
        if headers.iter().any(|(n, _)| n == "set-cookie") {
            return Store::No("set-cookie");
        }
        if is_event_stream(headers) {
            return Store::No("text/event-stream");
        }
        if header(headers, "vary").is_some_and(|v| v.split(',').any(|t| t.trim() == "*")) {
            return Store::No("vary: *");
        }
        let cc = directives(headers);
        if cc
            .iter()
            .any(|(d, _)| d == "no-store" || d == "private" || d == "no-cache")
        {
            return Store::No("cache-control forbids storing");
        }
        let seconds = |name: &str| {
            cc.iter()
                .find(|(d, _)| d == name)
                .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok())
        };
        let origin_ttl = seconds("s-maxage").or_else(|| seconds("max-age"));
        let ttl = match origin_ttl {
            Some(t) => t.min(u64::from(self.ttl_s)) as u32,
            None => self.ttl_s,
        };
        if ttl == 0 {
            return Store::No("max-age=0");
        }
        Store::For(ttl)
    }
}

/// Whether an entry stored at `stored_at_ms` with `ttl_s` is at `now_ms` within `window_s`
/// past its freshness (a fresh entry is within it too).
pub fn within(stored_at_ms: u64, ttl_s: u32, window_s: u32, now_ms: u64) -> bool {
    now_ms.saturating_sub(stored_at_ms) < (u64::from(ttl_s) + u64::from(window_s)) * 1000
}

/// Whether a response is a stream of server-sent events: never stored, as it does not end (the
/// cache's copy of the body would be held until it does) and each client must get its own.
fn is_event_stream(headers: &[(String, String)]) -> bool {
    header(headers, "content-type").is_some_and(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim_matches([' ', '\t'])
            .eq_ignore_ascii_case("text/event-stream")
    })
}

/// How fresh an entry stored at `stored_at_ms` with `ttl_s` is at `now_ms`.
pub fn freshness(stored_at_ms: u64, ttl_s: u32, stale_s: u32, now_ms: u64) -> Freshness {
    let age_ms = now_ms.saturating_sub(stored_at_ms);
    if age_ms < u64::from(ttl_s) * 1000 {
        Freshness::Fresh
    } else if age_ms < (u64::from(ttl_s) + u64::from(stale_s)) * 1000 {
        Freshness::Stale
    } else {
        Freshness::Expired
    }
}

/// The `age` header value of an entry, in whole seconds.
pub fn age_s(stored_at_ms: u64, now_ms: u64) -> u64 {
    now_ms.saturating_sub(stored_at_ms) / 1000
}

/// The headers to store with a response: the client's headers, plus the gateway's bookkeeping
/// and a `cache-control` that keeps the entry in the Cache API for the TTL and `stale_s` after it
/// ([`CacheRule::kept_stale_s`]; the origin's own `cache-control` is kept aside and given back to clients).
pub fn stored_headers(
    client_headers: &[(String, String)],
    ttl_s: u32,
    stale_s: u32,
    now_ms: u64,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = client_headers
        .iter()
        .filter(|(n, _)| {
            n != "cache-control" && n != STATUS_HEADER && n != "x-request-id" && n != "age"
        })
        .cloned()
        .collect();
    let origin_cc: Vec<&str> = client_headers
        .iter()
        .filter(|(n, _)| n == "cache-control")
        .map(|(_, v)| v.as_str())
        .collect();
    if !origin_cc.is_empty() {
        out.push((ORIGIN_CACHE_CONTROL_HEADER.into(), origin_cc.join(", ")));
    }
    out.push((
        "cache-control".into(),
        format!("public, max-age={}", u64::from(ttl_s) + u64::from(stale_s)),
    ));
    out.push((STORED_AT_HEADER.into(), now_ms.to_string()));
    out.push((TTL_HEADER.into(), ttl_s.to_string()));
    out
}

/// What a stored entry tells about itself: `(stored_at_ms, ttl_s)`.
pub fn stored_meta(headers: &[(String, String)]) -> Option<(u64, u32)> {
    let at = header(headers, STORED_AT_HEADER)?.parse().ok()?;
    let ttl = header(headers, TTL_HEADER)?.parse().ok()?;
    Some((at, ttl))
}

/// The headers a client gets for a stored entry: the bookkeeping removed, the origin's
/// `cache-control` restored, `age`, `x-cache-status` and this request's `x-request-id`.
pub fn served_headers(
    stored: &[(String, String)],
    status: &str,
    age: u64,
    request_id: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(stored.len() + 3);
    for (n, v) in stored {
        match n.as_str() {
            STORED_AT_HEADER | TTL_HEADER | "cache-control" | "age" | "x-request-id"
            | STATUS_HEADER => {}
            ORIGIN_CACHE_CONTROL_HEADER => out.push(("cache-control".into(), v.clone())),
            _ => out.push((n.clone(), v.clone())),
        }
    }
    out.push(("age".into(), age.to_string()));
    out.push((STATUS_HEADER.into(), status.into()));
    out.push(("x-request-id".into(), request_id.into()));
    out
}

#[cfg(test)]
mod tests;
