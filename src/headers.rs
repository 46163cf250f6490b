//! Header plans: what the origin receives and what the client receives (the README's "The life
//! of a request", steps 7 and 9).
//!
//! Both plans take the header list as it arrived and return the complete list to send, so the
//! adapter crosses into the runtime once per direction, whatever the number of headers. The route
//! fields they follow (`rewrite`, `request_headers`, `response_headers`) are validated here too.

use crate::http::{canonical_name, is_gateway_owned, is_hop_by_hop, same_name};
pub use crate::http::{first, HeaderList};
use crate::template::Var;
use crate::upstream::Server;

mod config;
mod hiding;
pub(crate) use config::{validate_header_rules, validate_rewrite, RawHeaderRules, RawRewrite};
pub use config::{HeaderRules, Rewrite};
pub use hiding::Hidden;
use hiding::Hiding;

/// Response headers that would tell a client what runs behind the gateway.
const REVEALING: &[&str] = &["server", "x-powered-by", "via"];

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
