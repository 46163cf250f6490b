//! HTTP primitives every phase shares: header names and values, header lists, cookies, and
//! the config checks of header names and method lists.
//!
//! Contract: these functions decide nothing about a route or a request; the phases build on them.

use crate::problems::Problems;

/// Headers that belong to one connection, never forwarded in either direction. Any `proxy-*`
/// header counts too.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the gateway sets on the origin request itself; a client's copies are dropped. Any
/// `x-forwarded-*` header counts too.
const GATEWAY_OWNED: &[&str] = &["forwarded", "x-real-ip", "x-request-id"];

/// Whether a lower-case header name is hop-by-hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

pub(crate) fn is_gateway_owned(name: &str) -> bool {
    GATEWAY_OWNED.contains(&name) || name.starts_with("x-forwarded-")
}

/// A header name as origins that fold `_` into `-` read it: lower case, `_` as `-`.
pub fn canonical_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

/// Whether two header names are one to an origin that folds `_` into `-` (letter case ignored).
pub fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(x) == fold(y)
        })
}

/// Request header names (canonical) a client may never send under another spelling: hop-by-hop
/// and gateway-owned ones, the ones the gateway reads for itself (`host`, `content-length`,
/// `authorization`, `cookie`, the `cf-` headers Cloudflare sets), and the identity headers.
pub(crate) fn is_sensitive_request_name(canonical: &str) -> bool {
    is_hop_by_hop(canonical)
        || is_gateway_owned(canonical)
        || canonical.starts_with("cf-")
        || canonical.starts_with("x-portcullis")
        || matches!(
            canonical,
            "host"
                | "content-length"
                | "content-type"
                | "authorization"
                | "cookie"
                | "true-client-ip"
        )
}

/// RFC 9110 token characters.
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// No control characters (tab allowed), so no header injection.
pub fn is_valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The first value of a header in a list with lower-case names; `_` and `-` in names are one
/// (a list can hold a `_` name only under `settings.underscores_in_headers: allow`, which keeps
/// no two spellings of one name).
pub fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name || same_name(n, name))
        .map(|(_, v)| v.as_str())
}

/// The `name=value` pairs of one `Cookie` header value, names and values trimmed, empty names
/// skipped. `,` separates pairs as `;` does: a cookie value never holds either (RFC 6265), and the
/// runtime joins repeated `Cookie` headers (as HTTP/2 clients send them) with `, `.
pub fn cookie_pairs(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split([';', ',']).filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let k = k.trim();
        (!k.is_empty()).then(|| (k, v.trim()))
    })
}

/// `list` without the named cookies (the gateway's own session and login cookies, which origins
/// have no use for); a `Cookie` header left empty is dropped.
pub fn without_cookies(list: HeaderList, names: &[String]) -> HeaderList {
    if names.is_empty() {
        return list;
    }
    list.into_iter()
        .filter_map(|(n, v)| {
            if n != "cookie" {
                return Some((n, v));
            }
            let kept: Vec<&str> = v
                .split([';', ','])
                .map(str::trim)
                .filter(|pair| {
                    let name = pair.split_once('=').map_or(*pair, |(k, _)| k).trim();
                    !pair.is_empty() && !names.iter().any(|x| x == name)
                })
                .collect();
            (!kept.is_empty()).then(|| (n, kept.join("; ")))
        })
        .collect()
}

/// Whether the gateway may put an identity of its own making in header `name` (a verified claim,
/// the minted identity token): a valid name that is not hop-by-hop, not one the gateway already
/// owns, and not `Host`, `Content-Length`, `Authorization` or `Cookie`.
pub fn can_carry_identity(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    is_valid_header_name(name)
        && !is_hop_by_hop(&lower)
        && !is_gateway_owned(&lower)
        && !matches!(
            lower.as_str(),
            "host" | "content-length" | "authorization" | "cookie"
        )
}

/// The header list type of the plans: lower-case names, in order, repeats allowed.
pub type HeaderList = Vec<(String, String)>;

/// Statuses whose responses have no body (RFC 9110 §6.4.1, and 101 Switching Protocols): the
/// client gets none even when the origin sent one.
pub fn is_null_body_status(status: u16) -> bool {
    matches!(status, 101 | 204 | 205 | 304)
}

/// The size of a header list as it travels in HTTP/1.1: `name: value\r\n` each.
pub fn header_bytes(headers: &[(String, String)]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
}

/// Whether `name` is a header name a config may write; `for_value`: one the gateway lets a rule
/// set (not hop-by-hop, `host` or `content-length`). Otherwise reports it.
pub(crate) fn validate_header_name(
    name: &str,
    at: String,
    problems: &mut Problems,
    for_value: bool,
) -> bool {
    if !is_valid_header_name(name) {
        problems.add(at, format!("\"{name}\" is not a valid header name"), None);
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if for_value && (is_hop_by_hop(&lower) || lower == "host" || lower == "content-length") {
        problems.add(
            at,
            format!("the gateway manages \"{name}\" itself; it cannot be set"),
            Some("hop-by-hop headers, host and content-length belong to the connection"),
        );
        return false;
    }
    true
}

/// A list of methods: not empty, upper case, no repeats.
pub(crate) fn method_list(list: &[String], at: &str, problems: &mut Problems) -> Vec<String> {
    if list.is_empty() {
        problems.add(
            at.to_string(),
            "the list of methods must not be empty",
            Some("leave the field out for the default"),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            problems.add(
                format!("{at}[{i}]"),
                format!("\"{m}\" is not an upper-case HTTP method"),
                Some("methods are case-sensitive: write \"GET\", \"POST\", ..."),
            );
        } else if out.contains(m) {
            problems.add(
                format!("{at}[{i}]"),
                format!("\"{m}\" is listed twice"),
                None,
            );
        } else {
            out.push(m.clone());
        }
    }
    out
}

/// The directives of every `Cache-Control` header, lower case, with their values.
pub fn cache_control(headers: &[(String, String)]) -> Vec<(String, Option<String>)> {
    headers
        .iter()
        .filter(|(n, _)| n == "cache-control")
        .flat_map(|(_, v)| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_syntax_checks() {
        assert!(is_valid_header_name("x-a_b.c~"));
        assert!(!is_valid_header_name("x a"));
        assert!(!is_valid_header_name("x:a"));
        assert!(!is_valid_header_name(""));
        assert!(is_valid_header_value("a\tb"));
        assert!(!is_valid_header_value("a\r\nb"));
        assert!(!is_valid_header_value("a\0"));
        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop("accept"));
    }

    #[test]
    fn a_header_list_counts_as_it_travels_in_http_1_1() {
        let h = vec![
            ("a".to_string(), "bc".to_string()),
            ("x-y".to_string(), String::new()),
        ];
        assert_eq!(header_bytes(&h), (1 + 2 + 4) + (3 + 4));
    }
}
