//! Header plans: what the origin receives and what the client receives (the README's "The life
//! of a request", steps 7 and 9).
//!
//! Both plans take the header list as it arrived and return the complete list to send, so the
//! adapter crosses into the runtime once per direction, whatever the number of headers.

use crate::config::{HeaderRules, Rewrite, Server};
use crate::template::Var;

mod hiding;
pub use hiding::Hidden;
use hiding::Hiding;

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

/// Response headers that would tell a client what runs behind the gateway.
const REVEALING: &[&str] = &["server", "x-powered-by", "via"];

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

/// The lower-case names listed in every `Connection` header of `headers`.
fn connection_tokens(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Applies a route's `remove`, `set` and `add`, in that order.
fn apply_rules<'a>(
    out: &mut HeaderList,
    rules: &HeaderRules,
    lookup: &impl Fn(&Var) -> Option<&'a str>,
) {
    if !rules.remove.is_empty() {
        out.retain(|(n, _)| !rules.remove.iter().any(|r| same_name(r, n)));
    }
    for (name, template) in &rules.set {
        out.retain(|(n, _)| !same_name(n, name));
        if let Some(value) = template.render(lookup) {
            out.push((name.clone(), value));
        }
    }
    for (name, template) in &rules.add {
        if let Some(value) = template.render(lookup) {
            out.push((name.clone(), value));
        }
    }
}

/// What the gateway knows about a request that header plans use.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client address, when known (from `CF-Connecting-IP`).
    pub client_ip: Option<&'a str>,
    /// `http` or `https`, as the client spoke to the gateway.
    pub proto: &'a str,
    /// The host (and port, when not the default) the client asked for.
    pub public_host: &'a str,
    pub request_id: &'a str,
    /// Every policy's `forward_claims` header names: a client's copies are dropped on every
    /// route.
    pub claim_headers: &'a [String],
    /// The verified claims to forward (header, value), set after the route's rules.
    pub forward_claims: &'a [(String, String)],
}

/// The headers the origin receives. Contract (the README's step 7), in this order:
/// hop-by-hop headers, headers named in `Connection`, `host`, and client copies of the headers the
/// gateway owns are dropped; `x-request-id`, `x-forwarded-for` (only the client address, never
/// appended to), `x-forwarded-proto` and `x-forwarded-host` are set; then the route's
/// `request_headers` apply; then the verified claims are set (a client's copies of every
/// policy's claim headers having been dropped with the gateway-owned ones).
pub fn request_plan<'a>(
    incoming: &[(String, String)],
    fwd: &Forwarding<'_>,
    rules: &HeaderRules,
    lookup: impl Fn(&Var) -> Option<&'a str>,
) -> HeaderList {
    let named = connection_tokens(incoming);
    let mut out: HeaderList = incoming
        .iter()
        .filter(|(n, _)| {
            // Every spelling an origin may fold into the same name takes the same decision.
            let n: std::borrow::Cow<'_, str> = if n.contains('_') {
                canonical_name(n).into()
            } else {
                n.as_str().into()
            };
            !is_hop_by_hop(&n)
                && !is_gateway_owned(&n)
                && n != "host"
                && !named.iter().any(|t| same_name(t, &n))
                && !fwd.claim_headers.iter().any(|c| same_name(c, &n))
        })
        .cloned()
        .collect();
    out.push(("x-request-id".into(), fwd.request_id.into()));
    if let Some(ip) = fwd.client_ip {
        out.push(("x-forwarded-for".into(), ip.into()));
    }
    out.push(("x-forwarded-proto".into(), fwd.proto.into()));
    out.push(("x-forwarded-host".into(), fwd.public_host.into()));
    apply_rules(&mut out, rules, &lookup);
    for (name, value) in fwd.forward_claims {
        out.retain(|(n, _)| !same_name(n, name));
        out.push((name.clone(), value.clone()));
    }
    out
}

/// Where a response's URLs should point instead of an origin server.
#[derive(Debug, Clone, Copy)]
pub struct PublicSide<'a> {
    /// `https://api.example.com`: the scheme and authority the client used.
    pub origin: &'a str,
    /// The route's rewrite, undone on the path where it can be (`strip_prefix`).
    pub rewrite: &'a Rewrite,
}

/// What the address hiding does with one `Location` or `Content-Location` value (the same as
/// [`response_plan`] does with it). The value is resolved as a browser resolves it, against
/// `public.origin`; one that names a configured server (by host: a name without letter case or
/// trailing dot, an IP address in any spelling) and is not the public authority itself is
/// rewritten to the public origin. The server taken is the one whose host and port match, with
/// the longest base path the URL is under (failing a port match, the best host match); its base
/// path is removed and a `strip_prefix` put back, as nginx's `proxy_redirect default` does; the
/// query and fragment are kept. A value that still names a server after that (in its query, in
/// a scheme other than http(s)), or that cannot be parsed, is dropped.
pub fn rewrite_location<'s>(
    value: &str,
    servers: impl IntoIterator<Item = &'s Server> + Clone,
    public: &PublicSide<'_>,
) -> Hidden {
    Hiding::new(servers, public).header("location", value)
}

/// The headers the client receives. Contract (the README's step 9), in this order: hop-by-hop
/// headers, headers named in `Connection`, `server`, `x-powered-by` and `via` are dropped;
/// origin addresses are hidden: `location`, `content-location`, the URL of `refresh` and every
/// target of `link` that names an origin server are rewritten to the public origin (see
/// [`rewrite_location`]), and any header whose value still names a server's address (its host,
/// `host:port`, `[v6]:port`, an IPv6 form embedding its IPv4 address, also percent-encoded) is
/// dropped, unless the occurrence is exactly the public authority; then the route's
/// `response_headers` apply (an operator's values are sent as written); `x-request-id` is set
/// last, so it is always the gateway's.
pub fn response_plan<'a, 's>(
    from_origin: &[(String, String)],
    servers: impl IntoIterator<Item = &'s Server> + Clone,
    public: &PublicSide<'_>,
    request_id: &str,
    rules: &HeaderRules,
    lookup: impl Fn(&Var) -> Option<&'a str>,
) -> HeaderList {
    let named = connection_tokens(from_origin);
    let hiding = Hiding::new(servers, public);
    let mut out: HeaderList = Vec::with_capacity(from_origin.len() + 1);
    for (name, value) in from_origin {
        if is_hop_by_hop(name)
            || REVEALING.contains(&name.as_str())
            || named.contains(name)
            || name == "x-request-id"
        {
            continue;
        }
        match hiding.header(name, value) {
            Hidden::Keep => out.push((name.clone(), value.clone())),
            Hidden::Rewrite(v) => out.push((name.clone(), v)),
            Hidden::Drop => {}
        }
    }
    apply_rules(&mut out, rules, &lookup);
    out.retain(|(n, _)| n != "x-request-id");
    out.push(("x-request-id".into(), request_id.into()));
    out
}

#[cfg(test)]
mod tests;
