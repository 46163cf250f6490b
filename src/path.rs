//! Path normalization: the one form of a request path that the gateway matches, authorizes, keys
//! and forwards (README, "The life of a request", step 2).
//!
//! The contract of [`normalize`]:
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
//!   percent-encoding is kept with upper-case hex digits;
//! - an encoded slash (`%2F`), an encoded backslash (`%5C`), an encoded NUL (`%00`), a literal
//!   backslash and any invalid percent-encoding are refused;
//! - runs of slashes collapse into one (`//a` is `/a`), as nginx's `merge_slashes` does;
//! - dot segments (`.` and `..`, including their encoded forms) are resolved as RFC 3986
//!   section 5.2.4 says, never climbing above the root;
//! - a trailing slash is kept, so `/a/` and `/a` stay distinct routes.

use std::fmt;

/// Why a path was refused. Each is answered with 400 `bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%2F`: an encoded slash could make one segment look like two to an origin.
    EncodedSlash,
    /// `%5C` or a literal `\`: some origins treat a backslash as a separator.
    Backslash,
    /// `%00`.
    Nul,
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with '/'",
            PathError::EncodedSlash => "the path contains an encoded slash (%2F)",
            PathError::Backslash => "the path contains a backslash",
            PathError::Nul => "the path contains an encoded NUL (%00)",
            PathError::InvalidPercentEncoding => "the path contains invalid percent-encoding",
        })
    }
}

impl std::error::Error for PathError {}

use crate::query::hex as hex_value;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes what may be decoded and checks what must be refused; slashes are left as they are.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (h, l),
                    _ => return Err(PathError::InvalidPercentEncoding),
                };
                let value = match (hex_value(hi), hex_value(lo)) {
                    (Some(h), Some(l)) => h << 4 | l,
                    _ => return Err(PathError::InvalidPercentEncoding),
                };
                match value {
                    0 => return Err(PathError::Nul),
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(v >> 4)]));
                        out.push(char::from(HEX[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            _ => {
                // Copy the run up to the next byte of interest in one go (keeps UTF-8 intact).
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b'%' | b'\\' | 0) {
                    i += 1;
                }
                out.push_str(&raw[start..i]);
            }
        }
    }
    Ok(out)
}

/// Normalizes an absolute request path (without its query string). See the module docs.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let mut parts = decoded[1..].split('/').peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "" | "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_as_the_spec_says() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/./b", Ok("/a/b")),
            ("/a/../b", Ok("/b")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/../../etc/passwd", Ok("/etc/passwd")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/a/%2E%2e/%2e/b", Ok("/b")),
            ("/a/.%2e/b", Ok("/b")),
            ("/%41%7a%30%2D%5f%7E", Ok("/Az0-_~")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%20b", Ok("/a%20b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("//a//b", Ok("/a/b")),
            ("//", Ok("/")),
            ("/a/", Ok("/a/")),
            ("/a//", Ok("/a/")),
            ("/caf\u{e9}", Ok("/caf\u{e9}")),
            ("/a%2Fb", Err(PathError::EncodedSlash)),
            ("/a%2fb", Err(PathError::EncodedSlash)),
            ("/a%5Cb", Err(PathError::Backslash)),
            ("/a%5cb", Err(PathError::Backslash)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/a%00b", Err(PathError::Nul)),
            ("/a%zzb", Err(PathError::InvalidPercentEncoding)),
            ("/a%2", Err(PathError::InvalidPercentEncoding)),
            ("/a%", Err(PathError::InvalidPercentEncoding)),
            ("/a%g1", Err(PathError::InvalidPercentEncoding)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
        ];
        for (input, expected) in cases {
            let got = normalize(input);
            assert_eq!(
                got.as_deref(),
                expected.as_ref().map(|s| *s),
                "normalize({input:?})"
            );
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for input in ["/a/./b/../c//d/", "/%41/%2e%2e/x", "/caf%c3%a9/%7e"] {
            let once = normalize(input).unwrap();
            assert_eq!(normalize(&once).unwrap(), once, "{input}");
        }
    }
}
