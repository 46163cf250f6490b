//! The one query decoder: a query string read the way origins' form decoders read it. A leaf: it
//! imports nothing of the crate.
//!
//! Contracts:
//! - [`pairs`] splits on `&` only, and decodes each name and value: `%XX` to its byte and `+` to
//!   a space, as `application/x-www-form-urlencoded` decoders (Python's `parse_qs`, PHP, Go's
//!   `url.ParseQuery`, Node's `URLSearchParams`, Rack) all do. A `%` not followed by two hex
//!   digits is kept as it is and marks the pair [`Pair::malformed`] (origins disagree on such a
//!   pair: some keep it, some drop it). A pair without `=` is marked, since some decoders drop
//!   it and others read an empty value.
//! - [`loose_name`] is the name as the most lenient origin frameworks match it: letter case
//!   ignored (ASP.NET), leading spaces dropped and `.` and space read as `_` (PHP), and any
//!   `[...]` suffix cut (`v[]`, `v[0]`, `v[a]` are arrays or maps of `v` in PHP, Rack and
//!   Node's `qs`). Two names with the same loose name may be the same parameter to some origin.
//! - [`sub_names`] lists the loose names a pair has when `;` also separates pairs, as Rack and
//!   older Python decoders have it.

/// One `name=value` pair of a query, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    /// As it was in the query.
    pub raw: &'a str,
    /// Decoded bytes (not necessarily UTF-8).
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Whether the pair had an `=`.
    pub has_value: bool,
    /// Whether a `%` in it was not followed by two hex digits.
    pub malformed: bool,
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one name or value: `%XX` and `+`. The flag tells a malformed `%`.
pub fn decode(text: &str) -> (Vec<u8>, bool) {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut malformed = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    malformed = true;
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (out, malformed)
}

/// Every pair of a query (without the `?`), in order; empty pieces (`a=1&&b=2`) are skipped.
pub fn pairs(query: &str) -> Vec<Pair<'_>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|raw| {
            let (name, value, has_value) = match raw.split_once('=') {
                Some((n, v)) => (n, v, true),
                None => (raw, "", false),
            };
            let (name, bad_name) = decode(name);
            let (value, bad_value) = decode(value);
            Pair {
                raw,
                name,
                value,
                has_value,
                malformed: bad_name || bad_value,
            }
        })
        .collect()
}

/// The decoded value of the first pair named exactly `name`, as UTF-8; `None` when there is no
/// such pair, or its value is malformed or not UTF-8.
pub fn first_value(query: Option<&str>, name: &str) -> Option<String> {
    let pairs = pairs(query?);
    let pair = pairs.into_iter().find(|p| p.name == name.as_bytes())?;
    if pair.malformed {
        return None;
    }
    String::from_utf8(pair.value).ok()
}

/// See the module docs.
pub fn loose_name(decoded: &[u8]) -> Vec<u8> {
    let start = decoded
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(decoded.len());
    let rest = &decoded[start..];
    let end = rest.iter().position(|&b| b == b'[').unwrap_or(rest.len());
    rest[..end]
        .iter()
        .map(|&b| match b {
            b'.' | b' ' => b'_',
            b => b.to_ascii_lowercase(),
        })
        .collect()
}

/// The loose names of the pieces of `raw` split on `;` (only when it has one).
pub fn sub_names(raw: &str) -> Vec<Vec<u8>> {
    if !raw.contains(';') {
        return Vec::new();
    }
    raw.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| loose_name(&decode(p.split_once('=').map_or(p, |(n, _)| n)).0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_as_form_decoders_do() {
        // (query, name, value, has `=`, malformed)
        type Case<'a> = (&'a str, &'a [u8], &'a [u8], bool, bool);
        let cases: &[Case] = &[
            ("v=x", b"v", b"x", true, false),
            ("%76=x", b"v", b"x", true, false),
            ("%76=%78", b"v", b"x", true, false),
            ("v=a+b", b"v", b"a b", true, false),
            ("v=a%20b", b"v", b"a b", true, false),
            ("v=a%2Bb", b"v", b"a+b", true, false),
            ("v+w=1", b"v w", b"1", true, false),
            ("v", b"v", b"", false, false),
            ("v=", b"v", b"", true, false),
            ("v=%zz", b"v", b"%zz", true, true),
            ("v%=1", b"v%", b"1", true, true),
            ("v=%e9", b"v", b"\xe9", true, false),
            ("v=a=b", b"v", b"a=b", true, false),
            ("=x", b"", b"x", true, false),
        ];
        for (raw, name, value, has_value, malformed) in cases {
            let p = &pairs(raw)[0];
            assert_eq!(
                (
                    p.name.as_slice(),
                    p.value.as_slice(),
                    p.has_value,
                    p.malformed
                ),
                (*name, *value, *has_value, *malformed),
                "{raw}"
            );
        }
        assert_eq!(pairs("a=1&&b=2&").len(), 2);
        assert_eq!(pairs("").len(), 0);
    }

    #[test]
    fn loose_names_are_what_lenient_frameworks_match() {
        for (name, loose) in [
            ("v", "v"),
            ("V", "v"),
            ("v[]", "v"),
            ("v[0]", "v"),
            ("v[a][b]", "v"),
            ("a.b", "a_b"),
            ("a b", "a_b"),
            ("  v", "v"),
            ("A_B", "a_b"),
        ] {
            assert_eq!(loose_name(name.as_bytes()), loose.as_bytes(), "{name}");
        }
        assert_eq!(
            sub_names("x=1;v=2;%56"),
            vec![b"x".to_vec(), b"v".to_vec(), b"v".to_vec()]
        );
        assert!(sub_names("x=1").is_empty());
    }

    #[test]
    fn first_value_decodes_and_refuses_malformed() {
        assert_eq!(
            first_value(Some("url=https%3A%2F%2Fa%2Fb%3Fx%3D1"), "url").as_deref(),
            Some("https://a/b?x=1")
        );
        assert_eq!(first_value(Some("%75rl=x"), "url").as_deref(), Some("x"));
        assert_eq!(first_value(Some("url=%zz"), "url"), None);
        assert_eq!(first_value(Some("url=%ff"), "url"), None);
        assert_eq!(first_value(None, "url"), None);
        assert_eq!(
            first_value(Some("a=1&url=2&url=3"), "url").as_deref(),
            Some("2")
        );
    }
}
