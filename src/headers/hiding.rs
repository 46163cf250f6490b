//! Address hiding: no response header the client receives names an origin server's address.
//!
//! URL-bearing headers (`Location`, `Content-Location`, the URL of `Refresh`, every target of
//! `Link`) are read the way a browser reads them, with the WHATWG URL parser resolving them
//! against the public origin; one that names a server is rewritten to the public origin. Then
//! every value, rewritten or not, is scanned for a server's address as text; a hit drops the
//! header.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::{IpAddr, Ipv6Addr};

use url::Url;

use super::{PublicSide, Rewrite};
use crate::addr;
use crate::upstream::Server;

/// What the address hiding does with one response header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hidden {
    /// Sent as it came: it names no server.
    Keep,
    /// Sent with this value, which points at the public origin instead of a server.
    Rewrite(String),
    /// Not sent: it names a server and has no public equivalent, or the URL in it cannot be
    /// read (a browser would not follow it, and an unreadable host may still name a server).
    Drop,
}

/// A host as comparisons read it: an IP address compared as an address (every spelling of it),
/// or a name compared without letter case and without a trailing dot.
#[derive(Debug, Clone, Copy)]
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl<'a> Host<'a> {
    fn of_url(host: url::Host<&'a str>) -> Self {
        match host {
            url::Host::Ipv4(v4) => Host::Ip(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Host::Ip(IpAddr::V6(v6)),
            url::Host::Domain(name) => Host::Name(name.trim_end_matches('.')),
        }
    }

    fn same(self, other: Host<'_>) -> bool {
        match (self, other) {
            (Host::Ip(a), Host::Ip(b)) => addr::same_address(a, b),
            (Host::Name(a), Host::Name(b)) => !a.is_empty() && a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }

    fn is_server(self, server: &Server) -> bool {
        match server.ip {
            Some(ip) => self.same(Host::Ip(ip)),
            None => self.same(Host::Name(&server.host)),
        }
    }
}

/// One response's address hiding: the servers to hide and the public side to point at.
pub(super) struct Hiding<'p, S> {
    servers: S,
    public: &'p PublicSide<'p>,
    /// The public origin as a URL: the base URL-bearing values resolve against. Parsed on first
    /// use; `None` if it cannot be read (then URL-bearing headers naming anything are dropped).
    base: OnceCell<Option<Url>>,
}

impl<'p, 's, S> Hiding<'p, S>
where
    S: IntoIterator<Item = &'s Server> + Clone,
{
    pub(super) fn new(servers: S, public: &'p PublicSide<'p>) -> Self {
        Hiding {
            servers,
            public,
            base: OnceCell::new(),
        }
    }

    /// What to do with response header `name` (lower case) carrying `value`.
    pub(super) fn header(&self, name: &str, value: &str) -> Hidden {
        let planned = match name {
            "location" | "content-location" => self.url(value),
            "refresh" => match refresh_url(value) {
                Some(range) => self.splice(value, std::iter::once(range)),
                None => Hidden::Keep,
            },
            "link" => self.splice(value, link_targets(value)),
            _ => Hidden::Keep,
        };
        let sent = match &planned {
            Hidden::Keep => value,
            Hidden::Rewrite(v) => v.as_str(),
            Hidden::Drop => return Hidden::Drop,
        };
        if self.names_server(sent) {
            Hidden::Drop
        } else {
            planned
        }
    }

    fn base(&self) -> Option<&Url> {
        self.base
            .get_or_init(|| Url::parse(self.public.origin).ok())
            .as_ref()
    }

    /// Whether `host` and `port` are the authority the client used.
    fn is_public(&self, host: Host<'_>, port: Option<u16>) -> bool {
        let Some(base) = self.base() else {
            return false;
        };
        let public_port = base.port_or_known_default();
        // No port written: the scheme's default, as in a URL.
        let port = port.or(match base.scheme() {
            "http" => Some(80),
            "https" => Some(443),
            _ => public_port,
        });
        base.host()
            .is_some_and(|h| Host::of_url(h).same(host) && port == public_port)
    }

    /// A URL-bearing value: kept when it names no server (relative, another host, the public
    /// authority), rewritten to the public origin when it names one over http(s).
    fn url(&self, text: &str) -> Hidden {
        let Some(base) = self.base() else {
            return Hidden::Drop;
        };
        let Ok(url) = Url::options().base_url(Some(base)).parse(text) else {
            return Hidden::Drop;
        };
        // A non-special scheme's host is opaque text; the text scan judges it.
        let Some(host) = url.host().filter(|_| url.is_special()) else {
            return Hidden::Keep;
        };
        let host = Host::of_url(host);
        let port = url.port_or_known_default();
        if self.is_public(host, port) {
            return Hidden::Keep;
        }
        let Some(server) = self.server_for(host, port, url.path()) else {
            return Hidden::Keep;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Hidden::Drop; // ws://, ftp://, file:// to a server: no public equivalent
        }
        Hidden::Rewrite(self.public_url(&url, server))
    }

    /// The server a URL names: host and port matching, with the longest base path the URL's
    /// path is under; failing a port match, the best host match (the URL names the server's
    /// machine all the same). The first server wins a tie.
    fn server_for(&self, host: Host<'_>, port: Option<u16>, path: &str) -> Option<&'s Server> {
        let mut best: Option<(&'s Server, (bool, usize))> = None;
        for server in self.servers.clone() {
            if !host.is_server(server) {
                continue;
            }
            let under =
                under_base(path, &server.base_path).map_or(0, |_| server.base_path.len() + 1);
            let rank = (port == Some(server.port), under);
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((server, rank));
            }
        }
        best.map(|(s, _)| s)
    }

    /// `url` on the public origin: the server's base path removed, the route's stripped prefix
    /// put back, the query and fragment kept.
    fn public_url(&self, url: &Url, server: &Server) -> String {
        let path = under_base(url.path(), &server.base_path).unwrap_or(url.path());
        let mut out = String::from(self.public.origin);
        if let Rewrite::StripPrefix(prefix) = self.public.rewrite {
            out.push_str(prefix);
            if path != "/" {
                out.push_str(path);
            }
        } else {
            out.push_str(path);
        }
        if let Some(q) = url.query() {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = url.fragment() {
            out.push('#');
            out.push_str(f);
        }
        out
    }

    /// `value` with the URL at each byte range hidden: dropped if any URL must be, rewritten if
    /// any is, else kept.
    fn splice(&self, value: &str, ranges: impl IntoIterator<Item = (usize, usize)>) -> Hidden {
        let mut out: Option<String> = None;
        let mut copied = 0;
        for (start, end) in ranges {
            match self.url(&value[start..end]) {
                Hidden::Keep => {}
                Hidden::Drop => return Hidden::Drop,
                Hidden::Rewrite(url) => {
                    let out = out.get_or_insert_with(|| String::with_capacity(value.len()));
                    out.push_str(&value[copied..start]);
                    out.push_str(&url);
                    copied = end;
                }
            }
        }
        match out {
            Some(mut out) => {
                out.push_str(&value[copied..]);
                Hidden::Rewrite(out)
            }
            None => Hidden::Keep,
        }
    }

    /// Whether `text` names a server's address anywhere (see [`Self::token_names_server`]),
    /// as written or percent-decoded (up to three times over).
    fn names_server(&self, text: &str) -> bool {
        if self.scan(text) {
            return true;
        }
        let mut decoded = Cow::Borrowed(text);
        for _ in 0..3 {
            let Some(next) = percent_decoded(&decoded) else {
                return false;
            };
            if self.scan(&next) {
                return true;
            }
            decoded = Cow::Owned(next);
        }
        false
    }

    fn scan(&self, text: &str) -> bool {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !is_token_byte(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_token_byte(b[i]) {
                i += 1;
            }
            let authority = b[..start].ends_with(b"@")
                || (start >= 2 && b[start - 2..start].iter().all(|&c| c == b'/' || c == b'\\'));
            if self.token_names_server(&text[start..i], authority) {
                return true;
            }
        }
        false
    }

    /// Whether one token (a run of host name characters, `:`, `[` and `]`) names a server: a
    /// bracketed IP literal, a bare IPv6 address (with or without a trailing `:port`), or a
    /// `:`-separated piece that is the server's IPv4 address (dotted; in the URL parser's other
    /// spellings only as `host:port` or in authority position, right after `//` or `@`, any
    /// slash a backslash) or its name (a single-label name only as `host:port` or in authority
    /// position, so a word such as `users` in a path or `origin` in `Vary` is not taken for a
    /// host). Not when the occurrence is exactly the public authority.
    fn token_names_server(&self, token: &str, authority: bool) -> bool {
        let mut rest = token;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            let Some(close) = after.find(']') else {
                break;
            };
            if let Some(ip) = addr::parse_ip(&after[..close]) {
                if self.hit(Host::Ip(ip), port_after(&after[close + 1..])) {
                    return true;
                }
            }
            rest = &after[close + 1..];
        }
        if token.bytes().filter(|&c| c == b':').count() >= 2 {
            // A bare IPv6 address is judged whole (its groups are not hosts of their own), and
            // with its last group read as a port too (`::ffff:a00:5:8080`).
            let whole = token.parse::<Ipv6Addr>().ok();
            let with_port = token.rsplit_once(':').and_then(|(head, tail)| {
                Some((head.parse::<Ipv6Addr>().ok()?, port_after_colon(tail)?))
            });
            if whole.is_some() || with_port.is_some() {
                return whole.is_some_and(|v6| self.hit(Host::Ip(IpAddr::V6(v6)), None))
                    || with_port
                        .is_some_and(|(v6, port)| self.hit(Host::Ip(IpAddr::V6(v6)), Some(port)));
            }
        }
        let b = token.as_bytes();
        let mut start = 0;
        while start <= b.len() {
            if b.get(start) == Some(&b'[') {
                // A bracketed literal was judged above; an unclosed bracket only separates.
                start += token[start..].find(']').map_or(1, |close| close + 1);
                continue;
            }
            let end = b[start..]
                .iter()
                .position(|&c| matches!(c, b':' | b'[' | b']'))
                .map_or(b.len(), |p| start + p);
            let port = (end < b.len() && b[end] == b':')
                .then(|| port_after(&token[end..]))
                .flatten();
            let piece = token[start..end].trim_matches('.');
            let url_like = port.is_some() || (start == 0 && authority);
            if !piece.is_empty() && self.piece_names_server(piece, port, url_like) {
                return true;
            }
            start = if b.get(end) == Some(&b'[') {
                end
            } else {
                end + 1
            };
        }
        false
    }

    fn piece_names_server(&self, piece: &str, port: Option<u16>, url_like: bool) -> bool {
        let dots = piece.bytes().filter(|&c| c == b'.').count();
        let ipv4_like = piece
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, b'.' | b'x' | b'X'));
        if ipv4_like && (dots == 3 || url_like) {
            if let Some(v4) = addr::parse_url_ipv4(piece) {
                return self.hit(Host::Ip(IpAddr::V4(v4)), port);
            }
        }
        (dots > 0 || url_like) && self.hit(Host::Name(piece), port)
    }

    /// An occurrence of `host` (with `port`, if written) counts when it is a server's host and
    /// not the public authority.
    fn hit(&self, host: Host<'_>, port: Option<u16>) -> bool {
        self.servers.clone().into_iter().any(|s| host.is_server(s)) && !self.is_public(host, port)
    }
}

/// The rest of `path` under `base` (whole segments; `/` when it is `base` itself), `None` when
/// `path` is not under it. An empty base holds every path.
fn under_base<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    if base.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(base)?;
    match rest {
        "" => Some("/"),
        r if r.starts_with('/') => Some(r),
        _ => None,
    }
}

/// Bytes of a host, a `host:port` or an IP literal in brackets.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
}

/// The port written right after a host: `:DIGITS` at the start of `text`.
fn port_after(text: &str) -> Option<u16> {
    port_after_colon(text.strip_prefix(':')?)
}

/// The leading digits of `text` as a port.
fn port_after_colon(text: &str) -> Option<u16> {
    let digits = text
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .map_or(text, |p| &text[..p]);
    if digits.is_empty() {
        return None;
    }
    digits.parse().ok()
}

/// `text` with every `%XX` decoded (as UTF-8, invalid sequences replaced), or `None` when it
/// has none.
fn percent_decoded(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.extend_from_slice(&b[copied..i]);
                out.push(h << 4 | l);
                i += 3;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&b[copied..]);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// HTML's ASCII whitespace.
fn is_html_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// The byte range of the URL in a `Refresh` value, read as HTML's shared declarative refresh
/// steps read it (`5; url=/x`, `0;URL='/x'`, `0, /x`, any letter case); `None` when there is
/// no URL (or the value is not a refresh a browser would follow).
fn refresh_url(value: &str) -> Option<(usize, usize)> {
    let b = value.as_bytes();
    let skip_space = |mut i: usize| {
        while i < b.len() && is_html_space(b[i]) {
            i += 1;
        }
        i
    };
    let mut i = skip_space(0);
    let digits = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == digits && b.get(i) != Some(&b'.') {
        return None;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i == b.len() || !(matches!(b[i], b';' | b',') || is_html_space(b[i])) {
        return None;
    }
    i = skip_space(i);
    if i < b.len() && matches!(b[i], b';' | b',') {
        i += 1;
    }
    i = skip_space(i);
    if i == b.len() {
        return None;
    }
    let whole = (i, b.len());
    // "url" then "=" (each optional in the way the HTML steps say), then an optional quote.
    if matches!(b[i], b'U' | b'u') {
        i += 1;
        if !matches!(b.get(i), Some(b'R' | b'r')) {
            return Some(whole);
        }
        i += 1;
        if !matches!(b.get(i), Some(b'L' | b'l')) {
            return Some(whole);
        }
        i = skip_space(i + 1);
        if b.get(i) != Some(&b'=') {
            return Some(whole);
        }
        i = skip_space(i + 1);
    }
    match b.get(i) {
        Some(&q @ (b'\'' | b'"')) => {
            let start = i + 1;
            let end = b[start..]
                .iter()
                .position(|&c| c == q)
                .map_or(b.len(), |p| start + p);
            Some((start, end))
        }
        _ => Some((i, b.len())),
    }
}

/// The byte ranges of every `<...>` target of a `Link` value, outside quoted parameters.
fn link_targets(value: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = value.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'<' => {
                    let start = i + 1;
                    let end = b[start..].iter().position(|&c| c == b'>')? + start;
                    i = end + 1;
                    return Some((start, end));
                }
                _ => i += 1,
            }
        }
        None
    })
}
