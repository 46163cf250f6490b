//! The cache part of the config: the route field `cache` and the top-level `admin` section (the
//! purge endpoint).

use serde::Deserialize;

use super::CacheRule;
use crate::http::validate_header_name;
use crate::path;
use crate::problems::{is_identifier, Problems};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    ttl_s: u64,
    key: Option<RawCacheKey>,
    statuses: Option<Vec<u64>>,
    stale_while_revalidate_s: Option<u64>,
    stale_if_error_s: Option<u64>,
    client_no_cache: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCacheKey {
    #[serde(default)]
    query: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    claims: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    path: String,
    token_env: String,
}

/// The admin endpoint: `DELETE {path}/cache?url=...` with `Authorization: Bearer <token>`,
/// the token being the Worker secret named `token_env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// A normalized path without a trailing slash: `/_portcullis`.
    pub path: String,
    pub token_env: String,
}

/// The longest `stale_if_error_s`: a week, for an outage that lasts a weekend.
const MAX_STALE_IF_ERROR_S: u64 = 604_800;

/// `has_auth`: whether the route has an auth policy. A cached response on such a route is keyed
/// by the claims that identify the caller, or it could reach another caller: validation insists.
pub(crate) fn cache_rule(
    raw: &RawCache,
    has_auth: bool,
    at: &str,
    problems: &mut Problems,
) -> Option<CacheRule> {
    let before = problems.0.len();
    if !(1..=31_536_000).contains(&raw.ttl_s) {
        problems.add(
            format!("{at}.ttl_s"),
            "must be between 1 and 31536000 seconds",
            None,
        );
    }
    let swr = raw.stale_while_revalidate_s.unwrap_or(0);
    if swr > 86_400 {
        problems.add(
            format!("{at}.stale_while_revalidate_s"),
            "must be between 0 and 86400 seconds",
            None,
        );
    }
    let sie = raw.stale_if_error_s.unwrap_or(0);
    if sie > MAX_STALE_IF_ERROR_S {
        problems.add(
            format!("{at}.stale_if_error_s"),
            format!("must be between 0 and {MAX_STALE_IF_ERROR_S} seconds"),
            None,
        );
    }
    let statuses: Vec<u16> = match &raw.statuses {
        None => vec![200],
        Some(list) => {
            if list.is_empty() {
                problems.add(
                    format!("{at}.statuses"),
                    "list at least one status",
                    Some("[200]"),
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    200..=599 => Some(*s as u16),
                    _ => {
                        problems.add(
                            format!("{at}.statuses[{i}]"),
                            format!("{s} is not a status from 200 to 599"),
                            None,
                        );
                        None
                    }
                })
                .collect()
        }
    };
    let (mut query, mut headers, mut claims) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(key) = &raw.key {
        for (i, q) in key.query.iter().enumerate() {
            if q.is_empty() || q.contains(['&', '=', '#']) {
                problems.add(
                    format!("{at}.key.query[{i}]"),
                    format!("\"{q}\" is not a query parameter name"),
                    None,
                );
            } else {
                query.push(q.clone());
            }
        }
        for (i, h) in key.headers.iter().enumerate() {
            if validate_header_name(h, format!("{at}.key.headers[{i}]"), problems, false) {
                headers.push(h.to_ascii_lowercase());
            }
        }
        for (i, c) in key.claims.iter().enumerate() {
            if c.is_empty() {
                problems.add(
                    format!("{at}.key.claims[{i}]"),
                    "a claim name must not be empty",
                    None,
                );
            } else {
                claims.push(c.clone());
            }
        }
        if !key.claims.is_empty() && !has_auth {
            problems.add(
                format!("{at}.key.claims"),
                "key.claims needs a route with auth: there are no verified claims without it",
                Some("add \"auth\" to the route, or remove key.claims"),
            );
        }
    }
    if has_auth && claims.is_empty() {
        problems.add(
            format!("{at}.key.claims"),
            "a cached route with auth must key its entries by the claims that identify the caller",
            Some("\"key\": { \"claims\": [\"sub\"] }: otherwise one caller's response could reach another"),
        );
    }
    crate::sort::stable_sort(&mut query);
    query.dedup();
    if problems.0.len() != before {
        return None;
    }
    Some(CacheRule {
        ttl_s: raw.ttl_s as u32,
        query,
        headers,
        claims,
        statuses,
        stale_while_revalidate_s: swr as u32,
        stale_if_error_s: sie as u32,
        client_no_cache: raw.client_no_cache.unwrap_or(false),
    })
}

pub(crate) fn admin(raw: &RawAdmin, problems: &mut Problems) -> Option<Admin> {
    let at = "$.admin";
    let before = problems.0.len();
    let normal = path::normalize(&raw.path).ok();
    if normal.as_deref() != Some(raw.path.as_str())
        || raw.path == "/"
        || raw.path.ends_with('/')
        || raw.path.contains('{')
    {
        problems.add(
            format!("{at}.path"),
            format!("\"{}\" is not an admin path prefix", raw.path),
            Some("a normalized literal path without a trailing slash: \"/_portcullis\""),
        );
    }
    let env_ok = is_identifier(&raw.token_env);
    if !env_ok {
        problems.add(
            format!("{at}.token_env"),
            format!("\"{}\" is not a Worker secret name", raw.token_env),
            Some("set it with `wrangler secret put ADMIN_TOKEN`"),
        );
    }
    (problems.0.len() == before).then(|| Admin {
        path: raw.path.clone(),
        token_env: raw.token_env.clone(),
    })
}
