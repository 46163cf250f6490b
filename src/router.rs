//! Matching a request to a route: host, then path (matchit), then method.
//!
//! Contract of [`RouteTable::lookup`]:
//! - Routes with a host win over routes without one: the exact host's routes are tried first,
//!   then the `*.suffix` patterns from the longest suffix to the shortest, then the routes with
//!   no host. The first of these groups whose paths match the request path decides.
//! - Within a group, matchit's priority holds: static segments, then parameters, then catch-alls.
//! - Several routes may share a host and path when their methods do not overlap. A path that
//!   matches with a method no route of it serves is [`Lookup::MethodNotAllowed`] with the
//!   methods that are allowed.
//!
//! The table is built during validation, so a routing conflict is a config error.

use std::collections::HashMap;
use std::fmt;

use crate::problems::{ConfigError, Problems};

/// A host pattern of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`, lower case.
    Exact(String),
    /// `*.example.com`, kept as the suffix `.example.com`: any host ending with it, at any depth.
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (lower case, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// What the table reads of a route: the config's routes are read through it.
pub trait Routed {
    /// The name, for conflict messages.
    fn name(&self) -> &str;
    fn host(&self) -> Option<&HostPattern>;
    /// A matchit path in normalized form.
    fn path(&self) -> &str;
    /// `None`: every method.
    fn methods(&self) -> Option<&[String]>;

    /// Whether the route serves `method`.
    fn allows(&self, method: &str) -> bool {
        self.methods().is_none_or(|m| m.iter().any(|x| x == method))
    }
}

/// A route's `host`: `api.example.com` or `*.example.com`, any letter case.
pub(crate) fn validate_host(
    text: &str,
    at: String,
    problems: &mut Problems,
) -> Option<HostPattern> {
    let host = text.to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        problems.add(
            at,
            format!("\"{text}\" is not a host name or a \"*.suffix\" pattern"),
            Some("write \"api.example.com\" or \"*.example.com\", without scheme or port"),
        );
        return None;
    }
    Some(if wildcard {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

/// The routes that share one host group and one path, and so one matchit entry.
#[derive(Debug, Default)]
struct Entry {
    routes: Vec<usize>,
}

#[derive(Debug, Default)]
struct PathTable {
    router: matchit::Router<Entry>,
}

/// The routing table. See the module docs.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    suffix: Vec<(String, PathTable)>,
    any: PathTable,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The route (an index into the config's routes) and the path parameters it captured.
    Matched {
        route: usize,
        params: Vec<(String, String)>,
    },
    /// The path matched, the method did not; `allow` lists the methods that would match, and
    /// `routes` the routes of that path.
    MethodNotAllowed {
        allow: Vec<String>,
        routes: Vec<usize>,
    },
    /// Nothing matched.
    NoRoute,
}

impl PathTable {
    fn insert<R: Routed>(
        &mut self,
        routes: &[R],
        index: usize,
        at: String,
    ) -> Result<(), ConfigError> {
        let route = &routes[index];
        match self.router.at_mut(route.path()) {
            // `at_mut` matches the route path literally: only an identical path lands here, so
            // check that the methods do not overlap.
            Ok(found) if routes[found.value.routes[0]].path() == route.path() => {
                for &other in &found.value.routes {
                    let overlap = match (routes[other].methods(), route.methods()) {
                        (Some(a), Some(b)) => a.iter().find(|m| b.contains(m)).cloned(),
                        _ => Some("every method".to_string()),
                    };
                    if let Some(method) = overlap {
                        return Err(ConfigError {
                            path: at,
                            message: format!(
                                "route \"{}\" already serves {method} on this host and path",
                                routes[other].name()
                            ),
                            hint: Some(
                                "give the routes disjoint methods, or different hosts or paths"
                                    .into(),
                            ),
                        });
                    }
                }
                found.value.routes.push(index);
                return Ok(());
            }
            _ => {}
        }
        self.router.insert(route.path().to_string(), Entry { routes: vec![index] }).map_err(|e| {
            let message = match e {
                matchit::InsertError::Conflict { with } => {
                    let other = routes.iter().find(|r| r.path() == with).map_or(String::new(), |r| {
                        format!(" of route \"{}\"", r.name())
                    });
                    format!("conflicts with the path \"{with}\"{other} on the same host")
                }
                other => other.to_string(),
            };
            ConfigError {
                path: at,
                message,
                hint: Some("matchit cannot tell these paths apart; rename a parameter or move a route to another host".into()),
            }
        })
    }

    fn lookup<R: Routed>(&self, routes: &[R], path: &str, method: &str) -> Option<Lookup> {
        let found = self.router.at(path).ok()?;
        let params = || {
            found
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        if let Some(&route) = found
            .value
            .routes
            .iter()
            .find(|&&i| routes[i].allows(method))
        {
            return Some(Lookup::Matched {
                route,
                params: params(),
            });
        }
        let mut allow: Vec<String> = Vec::new();
        for &i in &found.value.routes {
            for m in routes[i].methods().into_iter().flatten() {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
        }
        Some(Lookup::MethodNotAllowed {
            allow,
            routes: found.value.routes.clone(),
        })
    }
}

impl RouteTable {
    /// Builds the table; every conflict is reported with the JSON path of the later route, where
    /// `file_index` maps an index of `routes` to the route's index in the config file.
    pub fn build<R: Routed>(
        routes: &[R],
        file_index: impl Fn(usize) -> usize,
    ) -> Result<RouteTable, Vec<ConfigError>> {
        let mut table = RouteTable::default();
        let mut errors = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let group = match route.host() {
                None => &mut table.any,
                Some(HostPattern::Exact(h)) => table.exact.entry(h.clone()).or_default(),
                Some(HostPattern::Suffix(s)) => {
                    let i = match table.suffix.iter().position(|(x, _)| x == s) {
                        Some(i) => i,
                        None => {
                            table.suffix.push((s.clone(), PathTable::default()));
                            table.suffix.len() - 1
                        }
                    };
                    &mut table.suffix[i].1
                }
            };
            let at = format!("$.routes[{}].path", file_index(index));
            if let Err(e) = group.insert(routes, index, at) {
                errors.push(e);
            }
        }
        crate::sort::stable_sort_by(&mut table.suffix, |a, b| b.0.len().cmp(&a.0.len()));
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a host (lower case, no port), a normalized path and a method.
    pub fn lookup<R: Routed>(&self, routes: &[R], host: &str, path: &str, method: &str) -> Lookup {
        let exact = self.exact.get(host);
        let suffixes = self
            .suffix
            .iter()
            .filter(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()));
        exact
            .into_iter()
            .chain(suffixes.map(|(_, t)| t))
            .chain(std::iter::once(&self.any))
            .find_map(|t| t.lookup(routes, path, method))
            .unwrap_or(Lookup::NoRoute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        let text = serde_json::json!({
            "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:1" }] } },
            "routes": [
                { "name": "user-get", "path": "/users/{id}", "methods": ["GET"], "origin": "o" },
                { "name": "user-put", "path": "/users/{id}", "methods": ["PUT", "DELETE"], "origin": "o" },
                { "name": "me", "path": "/users/me", "origin": "o" },
                { "name": "files", "path": "/files/{*rest}", "origin": "o" },
                { "name": "catch-all", "path": "/{*rest}", "origin": "o" },
                { "name": "api-host", "host": "api.example.com", "path": "/users/{id}", "origin": "o" },
                { "name": "wild", "host": "*.example.com", "path": "/users/{id}", "methods": ["POST"], "origin": "o" },
                { "name": "deep-wild", "host": "*.eu.example.com", "path": "/users/{id}", "methods": ["PATCH"], "origin": "o" },
                { "name": "only-on-api", "host": "api.example.com", "path": "/admin", "methods": ["GET"], "origin": "o" }
            ]
        });
        Config::from_json(&text.to_string()).unwrap()
    }

    fn lookup(
        cfg: &Config,
        host: &str,
        path: &str,
        method: &str,
    ) -> Result<(String, Vec<(String, String)>), Lookup> {
        match cfg.table.lookup(&cfg.routes, host, path, method) {
            Lookup::Matched { route, params } => Ok((cfg.routes[route].name.clone(), params)),
            other => Err(other),
        }
    }

    fn name(cfg: &Config, host: &str, path: &str, method: &str) -> String {
        match lookup(cfg, host, path, method) {
            Ok((n, _)) => n,
            Err(Lookup::MethodNotAllowed { allow, .. }) => format!("405 {}", allow.join(",")),
            Err(_) => "404".into(),
        }
    }

    #[test]
    fn host_then_path_then_method() {
        let cfg = config();
        let cases = [
            ("other.test", "/users/7", "GET", "user-get"),
            ("other.test", "/users/7", "HEAD", "user-get"),
            ("other.test", "/users/7", "PUT", "user-put"),
            ("other.test", "/users/7", "DELETE", "user-put"),
            ("other.test", "/users/7", "POST", "405 GET,HEAD,PUT,DELETE"),
            // static beats parameter beats catch-all
            ("other.test", "/users/me", "POST", "me"),
            ("other.test", "/files/a/b.txt", "GET", "files"),
            ("other.test", "/anything/else", "GET", "catch-all"),
            // a route with a host wins over one without
            ("api.example.com", "/users/7", "POST", "api-host"),
            ("api.example.com", "/admin", "GET", "only-on-api"),
            ("api.example.com", "/admin", "POST", "405 GET,HEAD"),
            // wildcard hosts, any depth, longest suffix first; never the bare domain
            ("x.example.com", "/users/7", "POST", "wild"),
            ("a.b.example.com", "/users/7", "POST", "wild"),
            ("x.eu.example.com", "/users/7", "PATCH", "deep-wild"),
            ("x.eu.example.com", "/users/7", "POST", "405 PATCH"),
            ("example.com", "/users/7", "POST", "405 GET,HEAD,PUT,DELETE"),
            (
                "evil-example.com",
                "/users/7",
                "POST",
                "405 GET,HEAD,PUT,DELETE",
            ),
            // paths no group matches fall through to the host-less routes
            ("x.example.com", "/files/z", "GET", "files"),
        ];
        for (host, path, method, want) in cases {
            assert_eq!(
                name(&cfg, host, path, method),
                want,
                "{method} {host}{path}"
            );
        }
    }

    #[test]
    fn parameters_are_captured() {
        let cfg = config();
        let (_, params) = lookup(&cfg, "h", "/files/a/b.txt", "GET").unwrap();
        assert_eq!(params, [("rest".to_string(), "a/b.txt".to_string())]);
        let (_, params) = lookup(&cfg, "h", "/users/42", "GET").unwrap();
        assert_eq!(params, [("id".to_string(), "42".to_string())]);
    }

    #[test]
    fn no_route_is_404() {
        let text = serde_json::json!({
            "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:1" }] } },
            "routes": [{ "name": "a", "path": "/a", "origin": "o" }]
        });
        let cfg = Config::from_json(&text.to_string()).unwrap();
        assert_eq!(
            cfg.table.lookup(&cfg.routes, "h", "/b", "GET"),
            Lookup::NoRoute
        );
        assert_eq!(
            cfg.table.lookup(&cfg.routes, "h", "/a/", "GET"),
            Lookup::NoRoute
        );
    }
}
