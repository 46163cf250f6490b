//! Compression at the edge (the README's "Compression"): whether the client's copy of a response
//! is encoded, and in which coding. This module only decides. The driver builds the client's
//! `Response` with the headers planned here, and the runtime's own encoder does the work: a
//! Workers `Response` whose `Content-Encoding` names a coding and whose body is not encoded is
//! encoded by the runtime as it is sent (`encodeBody: "automatic"`, the default). No compressor
//! is compiled into the Wasm, and no body enters it.
//!
//! Contract ([`plan`]): a response is *eligible* when the route has `compress` on (the default),
//! the method is not HEAD, the status carries a body that is the whole representation (200..599
//! but 204, 205, 206 and 304), it has no `Content-Encoding` (an encoded body is never encoded
//! again) and no `Content-Range`, its `Cache-Control` has no `no-transform`, its `Content-Type` is
//! compressible ([`compressible_type`]: text, JSON, JavaScript, XML, SVG and the `+json`/`+xml`
//! forms; never `text/event-stream`, whose events must leave as they arrive; every
//! `Content-Type` header, when the origin sent several), and its
//! `Content-Length`, when known, is at least [`MIN_BYTES`]. An eligible response gets
//! `Accept-Encoding` in `Vary` (whatever the client accepts, so that a cache downstream keeps the
//! two forms apart). It is encoded when the client's `Accept-Encoding` accepts br or gzip
//! ([`choose`]): `Content-Encoding` is set, `Content-Length` and `Accept-Ranges` are dropped (the
//! runtime sends the encoded body without a length), and a strong `ETag` is made weak (the
//! encoded bytes are another representation).

use crate::http::{cache_control, same_name, HeaderList};

/// Bodies whose known length is below this many bytes are sent as they are: encoding them saves
/// little and can make them longer.
pub const MIN_BYTES: u64 = 1024;

/// A coding the gateway has the runtime encode with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The codings offered, in the gateway's order of preference when the client weighs them the
/// same. zstd is not offered: the runtime's response encoder has no zstd (see the README's
/// "Compression").
const OFFERED: [Coding; 2] = [Coding::Br, Coding::Gzip];

/// A route's `compress` setting: on unless the route says `"compress": false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCompression {
    pub enabled: bool,
}

impl RouteCompression {
    /// The validated setting from the route's raw `compress` (a JSON boolean; anything else is
    /// refused by the config reader at `$.routes[i].compress`).
    pub(crate) fn from_raw(raw: Option<bool>) -> Self {
        RouteCompression {
            enabled: raw.unwrap_or(true),
        }
    }
}

/// The client's `Accept-Encoding`: every value of the header (any letter case of its name, `_`
/// as `-`), joined with `,`, as one list; `None` when the request has none.
pub fn accept_encoding(request_headers: &[(String, String)]) -> Option<String> {
    let values: Vec<&str> = request_headers
        .iter()
        .filter(|(n, _)| same_name(n, "accept-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A q-value (RFC 9110 section 12.4.2) in thousandths: `0`, `0.5`, `0.125`, `1`, `1.000`.
/// Anything else (`1.5`, `-1`, `.5`, `0.1234`, `abc`, empty) is not a q-value.
fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What `Accept-Encoding` says of each coding the gateway offers: its weight in thousandths
/// (0: refused), or `None` when the header does not name it (then `*` decides).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Weights {
    br: Option<u16>,
    gzip: Option<u16>,
    any: Option<u16>,
}

impl Weights {
    /// Reads the list. Names in any letter case, spaces and tabs around elements, parameters and
    /// `=` ignored; `x-gzip` is gzip (RFC 9110 section 8.4.1.3). A coding listed twice takes its
    /// lowest weight, so a `gzip;q=0` anywhere refuses gzip. An element whose coding is not a
    /// token is skipped; one with a malformed or repeated `q` counts as `q=0`, so that no odd
    /// spelling turns a coding on. Parameters other than `q` are ignored.
    fn of(header: &str) -> Weights {
        let mut w = Weights::default();
        for element in header.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim_matches([' ', '\t']);
            if !is_token(coding) {
                continue;
            }
            let mut q = None;
            let mut malformed = false;
            for param in parts {
                let param = param.trim_matches([' ', '\t']);
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("q") {
                    match (q, qvalue(value.trim_matches([' ', '\t']))) {
                        (None, Some(v)) => q = Some(v),
                        _ => malformed = true,
                    }
                }
            }
            let weight = if malformed { 0 } else { q.unwrap_or(1000) };
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut w.br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut w.gzip
            } else if coding == "*" {
                &mut w.any
            } else {
                continue;
            };
            *slot = Some(slot.map_or(weight, |old| old.min(weight)));
        }
        w
    }

    fn of_coding(&self, coding: Coding) -> u16 {
        let named = match coding {
            Coding::Br => self.br,
            Coding::Gzip => self.gzip,
        };
        named.or(self.any).unwrap_or(0)
    }
}

/// The coding to encode with for a client whose `Accept-Encoding` is `header` (every value
/// joined, see [`accept_encoding`]): the offered coding with the highest weight above 0, br
/// before gzip on equal weights; `None` without the header or when it accepts neither.
pub fn choose(header: Option<&str>) -> Option<Coding> {
    let weights = Weights::of(header?);
    let mut best: Option<(Coding, u16)> = None;
    for coding in OFFERED {
        let w = weights.of_coding(coding);
        if w > 0 && best.is_none_or(|(_, b)| w > b) {
            best = Some((coding, w));
        }
    }
    best.map(|(c, _)| c)
}

/// Whether a `Content-Type` is worth encoding: `text/*` but `text/event-stream`; JSON,
/// JavaScript, XML and their `+json`/`+xml` forms under `application/` (`application/ld+json`,
/// `application/rss+xml`); `image/svg+xml`. Compared without letter case or parameters. Images,
/// audio, video, fonts and archives are not: most are compressed already.
pub fn compressible_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim_matches([' ', '\t'])
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    if !is_token(kind) || !is_token(sub) {
        return false;
    }
    match kind {
        "text" => sub != "event-stream",
        "application" => {
            matches!(
                sub,
                "json" | "javascript" | "x-javascript" | "ecmascript" | "xml"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        "image" => sub == "svg+xml",
        _ => false,
    }
}

/// The body's length from `Content-Length`, when every value is the same decimal number.
fn known_length(headers: &[(String, String)]) -> Option<u64> {
    let mut length = None;
    for (_, v) in headers.iter().filter(|(n, _)| n == "content-length") {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = v.parse::<u64>().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// Whether a response (its status and the client's headers, lower-case names) may be encoded at
/// all, whatever the client accepts. See the module docs.
pub fn eligible(method: &str, status: u16, headers: &[(String, String)]) -> bool {
    let has = |name: &str| headers.iter().any(|(n, _)| n == name);
    !method.eq_ignore_ascii_case("HEAD")
        && (200..=599).contains(&status)
        && !matches!(status, 204 | 205 | 206 | 304)
        && !has("content-encoding")
        && !has("content-range")
        && !cache_control(headers)
            .iter()
            .any(|(d, _)| d == "no-transform")
        && has("content-type")
        && headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .all(|(_, v)| compressible_type(v))
        && known_length(headers).is_none_or(|l| l >= MIN_BYTES)
}

/// Plans the client's headers for compression: nothing when `route` is off or the response is
/// not [`eligible`]; else `Vary: Accept-Encoding` (unless `Vary` names it already, or is `*`),
/// and, when the client's `accept` chooses a coding, `Content-Encoding` set to it with
/// `Content-Length` and `Accept-Ranges` dropped and a strong `ETag` made weak. Returns the
/// coding the runtime is to encode with.
pub fn plan(
    route: RouteCompression,
    accept: Option<&str>,
    method: &str,
    status: u16,
    headers: &mut HeaderList,
) -> Option<Coding> {
    if !route.enabled || !eligible(method, status, headers) {
        return None;
    }
    let varied = headers
        .iter()
        .filter(|(n, _)| n == "vary")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim_matches([' ', '\t']))
        .any(|t| t == "*" || t.eq_ignore_ascii_case("accept-encoding"));
    if !varied {
        headers.push(("vary".into(), "Accept-Encoding".into()));
    }
    let coding = choose(accept)?;
    headers.retain(|(n, _)| n != "content-length" && n != "accept-ranges");
    for (n, v) in headers.iter_mut() {
        if n == "etag" && v.trim_start().starts_with('"') {
            *v = format!("W/{}", v.trim_start());
        }
    }
    headers.push(("content-encoding".into(), coding.token().into()));
    Some(coding)
}

#[cfg(test)]
mod tests;
