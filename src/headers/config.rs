//! The route fields that shape what is forwarded: `rewrite`, `request_headers` and
//! `response_headers`, raw serde types and their validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::http::{is_valid_header_value, validate_header_name};
use crate::problems::{key_path, Problems};
use crate::template::{Syntax, Template};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRewrite {
    strip_prefix: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// How the forwarded path is made from the normalized request path.
#[derive(Debug, Clone)]
pub enum Rewrite {
    /// Forward the path as it is.
    None,
    /// Remove this prefix (a whole number of segments, no trailing slash).
    StripPrefix(String),
    /// Build the path from this template of path parameters.
    Path(Template),
}

/// Header changes: `remove` first, then `set` (replacing), then `add` (appending).
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    /// Lower-case names.
    pub set: Vec<(String, Template)>,
    pub add: Vec<(String, Template)>,
    pub remove: Vec<String>,
}

impl HeaderRules {
    /// The Worker secrets the rules' values name.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.set
            .iter()
            .chain(&self.add)
            .flat_map(|(_, t)| t.secrets())
    }
}

/// A route's `rewrite`, checked against the route's path and its parameters.
pub(crate) fn validate_rewrite(
    raw: &RawRewrite,
    route_path: &str,
    params: &[String],
    at: &str,
    problems: &mut Problems,
) -> Rewrite {
    match (&raw.strip_prefix, &raw.path) {
        (Some(_), Some(_)) | (None, None) => {
            problems.add(
                at.to_string(),
                "a rewrite needs exactly one of strip_prefix and path",
                Some("{ \"strip_prefix\": \"/api\" } or { \"path\": \"/v2/users/{id}\" }"),
            );
            Rewrite::None
        }
        (Some(prefix), None) => {
            let at = format!("{at}.strip_prefix");
            let whole_segments = route_path == prefix
                || route_path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
                problems.add(
                    at,
                    format!("\"{prefix}\" is not a prefix to strip"),
                    Some("write whole segments with a leading slash and no trailing one: \"/api\""),
                );
            } else if prefix.contains('{') || !whole_segments {
                problems.add(
                    at,
                    format!("the route path \"{route_path}\" does not start with the segments \"{prefix}\""),
                    Some("strip_prefix must be a literal leading part of the route's path, whole segments"),
                );
            }
            Rewrite::StripPrefix(prefix.clone())
        }
        (None, Some(template)) => {
            let at = format!("{at}.path");
            if !template.starts_with('/') {
                problems.add(at.clone(), "a rewrite path must start with '/'", None);
            }
            match Template::parse(template, Syntax::Path, params) {
                Ok(t) => Rewrite::Path(t),
                Err(e) => {
                    problems.add(
                        at,
                        e.to_string(),
                        Some("use the names of the route path's {parameters}"),
                    );
                    Rewrite::None
                }
            }
        }
    }
}

/// A route's `request_headers` or `response_headers`; values are templates of `params`.
/// `secrets`: whether `{secret.NAME}` may appear (request headers: yes; response headers: no,
/// it would send the secret to every client).
pub(crate) fn validate_header_rules(
    raw: &RawHeaderRules,
    params: &[String],
    secrets: bool,
    at: &str,
    problems: &mut Problems,
) -> HeaderRules {
    let mut rules = HeaderRules::default();
    for (kind, map) in [("set", &raw.set), ("add", &raw.add)] {
        for (name, value) in map {
            let at = key_path(&format!("{at}.{kind}"), name);
            if !validate_header_name(name, at.clone(), problems, true) {
                continue;
            }
            if !is_valid_header_value(value) {
                problems.add(
                    at,
                    "a header value may not hold control characters or line breaks",
                    None,
                );
                continue;
            }
            match Template::parse(value, Syntax::Header, params) {
                Ok(t) if !secrets && t.secrets().next().is_some() => problems.add(
                    at,
                    "{secret.NAME} may be used only in request_headers: in a response header it \
                     would reach every client",
                    None,
                ),
                Ok(t) => {
                    let list = if kind == "set" {
                        &mut rules.set
                    } else {
                        &mut rules.add
                    };
                    list.push((name.to_ascii_lowercase(), t));
                }
                Err(e) => problems.add(at, e.to_string(), None),
            }
        }
    }
    for (i, name) in raw.remove.iter().enumerate() {
        if validate_header_name(name, format!("{at}.remove[{i}]"), problems, false) {
            rules.remove.push(name.to_ascii_lowercase());
        }
    }
    rules
}
