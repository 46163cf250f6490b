//! The one reading of a request: built once from the method, URL and headers, and read by every
//! phase (gateway-owned paths, routing, edge policy, auth, cache key, origin request), so that no
//! two phases can read the same request two ways.
//!
//! Contracts of [`Head::read`]:
//! - the host is lower case, without port and without a trailing dot (`API.Example.COM.` is
//!   `api.example.com`); the authority (for `X-Forwarded-Host` and the public origin) is as the
//!   client wrote it;
//! - the path is normalized once ([`crate::path::normalize`]); a path that cannot be is kept as
//!   its error, refused with 400 by whatever phase needs it;
//! - the client address is `CF-Connecting-IP` when it parses as an IP address, an IPv4-mapped
//!   IPv6 address read as its IPv4 address;
//! - header names are lower case; client headers whose names contain `_` are dropped, refused
//!   (400) or kept, as `settings.underscores_in_headers` says (see [`Underscores`]);
//! - cookies are every `name=value` pair of every `Cookie` header, names and values trimmed, in
//!   order, `;` and `,` both separating pairs ([`crate::http::cookie_pairs`]).

use std::net::IpAddr;

use crate::addr;
use crate::http::{canonical_name, HeaderList};
use crate::path::{self, PathError};

/// What the gateway does with client header names that contain `_`
/// (`settings.underscores_in_headers`). CGI, WSGI, PHP-FPM and Rack origins read `x_user_id` and
/// `x-user-id` as one variable, so a client could pass a header the gateway drops or sets (an
/// identity header, `X-Forwarded-For`) under another spelling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Underscores {
    /// Drop such headers before anything reads them (nginx's `underscores_in_headers off`).
    #[default]
    Drop,
    /// Answer 400 `bad_request`.
    Reject,
    /// Keep them; names are then compared with `_` and `-` as one wherever the gateway reads a
    /// header by name, and a client header is dropped in every spelling of a name the gateway
    /// owns or that another header of the request already has.
    Allow,
}

/// The parts of a request the gateway decides on, read once.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The absolute URL as the runtime gave it.
    pub url: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Host and port as the client wrote them: `api.example.com`, `127.0.0.1:8787`.
    pub authority: String,
    /// Lower case, without port or trailing dot; an IPv6 literal keeps its brackets.
    pub host: String,
    /// The normalized path, or why it cannot be normalized.
    pub path: Result<String, PathError>,
    /// The raw query without `?`, as the origin receives it.
    pub query: Option<String>,
    /// Lower-case names, in order, as they arrived (less any dropped by the underscore rule).
    pub headers: HeaderList,
    /// From `CF-Connecting-IP`, canonical (IPv4-mapped read as IPv4).
    pub client_ip: Option<IpAddr>,
    /// The same, as text (`X-Forwarded-For`, `{client_ip}`, log and keys).
    pub client_ip_text: Option<String>,
    /// Every cookie pair, trimmed, in order.
    pub cookies: Vec<(String, String)>,
    /// The URL's length as it arrived.
    pub url_bytes: usize,
    /// The header list's size as it arrived, `name: value\r\n` each.
    pub header_bytes: usize,
    /// A WebSocket opening handshake: a GET whose `Upgrade` names `websocket` (any letter case,
    /// anywhere in the list, in any of its `Upgrade` headers). `Connection: upgrade` is not
    /// required: not every front end passes `Connection` on.
    pub websocket: bool,
}

/// Why a request could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The URL is not absolute (`scheme://host/...`).
    NotAbsolute,
    /// A header name with `_`, under [`Underscores::Reject`].
    UnderscoreHeader,
}

/// A URL split into the parts the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    /// Host and port as written: `api.example.com`, `127.0.0.1:8787`, `[::1]:8787`.
    pub authority: &'a str,
    /// The host alone, without port (an IPv6 literal keeps its brackets).
    pub host: &'a str,
    /// The raw path, `/` when empty.
    pub path: &'a str,
    /// The raw query without `?`, if any.
    pub query: Option<&'a str>,
}

/// Splits an absolute URL; `None` when it is not one.
pub fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let rest = &rest[end..];
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return None;
    }
    Some(UrlParts {
        scheme,
        authority,
        host,
        path: if path.is_empty() { "/" } else { path },
        query,
    })
}

/// The host as routes and keys read it: lower case, one trailing dot removed.
pub fn normal_host(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => lower,
    }
}

/// Whether a client header, by its name, is kept under [`Underscores::Allow`]: names the
/// gateway owns or reads for itself are dropped in their `_` spellings, and so is a `_` name
/// that another header of the request has in its `-` spelling (the origin would see one of the
/// two, and which one is up to it).
fn allowed_underscore(name: &str, all: &HeaderList) -> bool {
    let canonical = canonical_name(name);
    !crate::http::is_sensitive_request_name(&canonical)
        && !all
            .iter()
            .any(|(other, _)| other.as_str() != name && canonical_name(other) == canonical)
}

impl Head {
    /// Reads a request. See the module docs.
    pub fn read(
        method: &str,
        url: &str,
        headers: &[(String, String)],
        underscores: Underscores,
    ) -> Result<Head, ReadError> {
        let parts = split_url(url).ok_or(ReadError::NotAbsolute)?;
        let header_bytes = crate::http::header_bytes(headers);
        let lower = |(n, v): &(String, String)| (n.to_ascii_lowercase(), v.clone());
        let headers: HeaderList = match underscores {
            Underscores::Drop => headers
                .iter()
                .filter(|(n, _)| !n.contains('_'))
                .map(lower)
                .collect(),
            Underscores::Reject => {
                if headers.iter().any(|(n, _)| n.contains('_')) {
                    return Err(ReadError::UnderscoreHeader);
                }
                headers.iter().map(lower).collect()
            }
            Underscores::Allow => {
                let all: HeaderList = headers.iter().map(lower).collect();
                all.iter()
                    .filter(|(n, _)| !n.contains('_') || allowed_underscore(n, &all))
                    .cloned()
                    .collect()
            }
        };
        let client_ip = crate::http::first(&headers, "cf-connecting-ip")
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map(addr::canonical);
        let cookies = headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| crate::http::cookie_pairs(v))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let websocket = method == "GET"
            && headers
                .iter()
                .filter(|(n, _)| n == "upgrade")
                .flat_map(|(_, v)| v.split(','))
                .any(|token| token.trim().eq_ignore_ascii_case("websocket"));
        Ok(Head {
            websocket,
            method: method.to_string(),
            url: url.to_string(),
            scheme: parts.scheme.to_ascii_lowercase(),
            authority: parts.authority.to_string(),
            host: normal_host(parts.host),
            path: path::normalize(parts.path),
            query: parts.query.map(str::to_string),
            client_ip_text: client_ip.map(|ip| ip.to_string()),
            client_ip,
            headers,
            cookies,
            url_bytes: url.len(),
            header_bytes,
        })
    }

    /// The first value of a header (names compared as [`crate::http::same_name`] does).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::first(&self.headers, name)
    }

    /// Every value of cookie `name`, in order.
    pub fn cookie_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.cookies
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// `scheme://authority`: where the client sent the request.
    pub fn public_origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(list: &[(&str, &str)]) -> HeaderList {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hosts_read_one_way() {
        for (url, host, authority) in [
            (
                "https://API.Example.COM/x",
                "api.example.com",
                "API.Example.COM",
            ),
            (
                "https://api.example.com./x",
                "api.example.com",
                "api.example.com.",
            ),
            (
                "https://api.example.com.:8443/x",
                "api.example.com",
                "api.example.com.:8443",
            ),
            ("http://127.0.0.1:8787/", "127.0.0.1", "127.0.0.1:8787"),
            ("http://[::1]:8787/", "[::1]", "[::1]:8787"),
            (
                "http://user@api.example.com/",
                "api.example.com",
                "api.example.com",
            ),
        ] {
            let h = Head::read("GET", url, &[], Underscores::Drop).unwrap();
            assert_eq!(
                (h.host.as_str(), h.authority.as_str()),
                (host, authority),
                "{url}"
            );
        }
        assert_eq!(
            Head::read("GET", "/x", &[], Underscores::Drop).unwrap_err(),
            ReadError::NotAbsolute
        );
    }

    #[test]
    fn client_addresses_read_one_way() {
        for (given, want) in [
            ("203.0.113.9", Some("203.0.113.9")),
            (" 203.0.113.9 ", Some("203.0.113.9")),
            ("::ffff:203.0.113.9", Some("203.0.113.9")),
            ("::FFFF:CB00:7109", Some("203.0.113.9")),
            ("2001:DB8::1", Some("2001:db8::1")),
            ("2001:db8:0:0:0:0:0:1", Some("2001:db8::1")),
            ("::203.0.113.9", Some("::cb00:7109")),
            ("203.0.113.9, 10.0.0.1", None),
            ("010.0.0.1", None),
            ("fe80::1%eth0", None),
            ("", None),
        ] {
            let h = Head::read(
                "GET",
                "https://a/",
                &hs(&[("cf-connecting-ip", given)]),
                Underscores::Drop,
            )
            .unwrap();
            assert_eq!(h.client_ip_text.as_deref(), want, "{given:?}");
        }
    }

    #[test]
    fn underscore_names_follow_the_setting() {
        let sent = hs(&[
            ("X_User_Id", "evil"),
            ("x-user-id", "evil2"),
            ("x_forwarded_for", "1.2.3.4"),
            ("X_Custom", "ok"),
            ("x-api_key", "k"),
            ("x-api-key", "k2"),
            ("accept", "*/*"),
        ]);
        let names = |u| {
            Head::read("GET", "https://a/", &sent, u)
                .unwrap()
                .headers
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(Underscores::Drop),
            ["x-user-id", "x-api-key", "accept"]
        );
        assert_eq!(
            names(Underscores::Allow),
            ["x-user-id", "x_custom", "x-api-key", "accept"]
        );
        assert_eq!(
            Head::read("GET", "https://a/", &sent, Underscores::Reject).unwrap_err(),
            ReadError::UnderscoreHeader
        );
        let clean = hs(&[("x-user-id", "1")]);
        assert!(Head::read("GET", "https://a/", &clean, Underscores::Reject).is_ok());
    }

    #[test]
    fn cookies_are_read_once() {
        let h = Head::read(
            "GET",
            "https://a/",
            &hs(&[
                ("cookie", "a=1; b = 2 ;c=3=4"),
                ("cookie", "a=5;;=x; d, e=6"),
            ]),
            Underscores::Drop,
        )
        .unwrap();
        assert_eq!(h.cookie_values("a").collect::<Vec<_>>(), ["1", "5"]);
        assert_eq!(h.cookie("b"), Some("2"));
        assert_eq!(h.cookie("c"), Some("3=4"));
        assert_eq!(h.cookie("d"), None);
        assert_eq!(
            h.cookie("e"),
            Some("6"),
            "repeated headers joined with `, `"
        );
    }
}
