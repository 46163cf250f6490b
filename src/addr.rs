//! IP address spellings: one reading of every form of an address, shared by the IP rules (which
//! client is calling) and the address hiding of response headers (which origin a header names).
//! A leaf: it imports nothing of the crate.
//!
//! Contracts:
//! - [`embedded_ipv4`] finds the IPv4 address inside the IPv6 forms that carry one:
//!   IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, except `::` and `::1`),
//!   6to4 (`2002:AABB:CCDD::/48`) and the NAT64 well-known prefix (`64:ff9b::a.b.c.d`).
//!   Teredo addresses, which carry two obfuscated IPv4 addresses, are not read as IPv4.
//! - [`parse_ip`] reads an IP literal as a URL host or a header gives it: brackets around IPv6
//!   allowed, any letter case, any IPv6 compression; IPv4 only in dotted decimal.
//! - [`parse_url_ipv4`] reads an IPv4 host the way a browser's URL parser does: one to four
//!   parts, each decimal, octal (leading `0`) or hexadecimal (`0x`), so `0x7f.1`, `0177.0.0.1`
//!   and `2130706433` are all 127.0.0.1.
//! - [`same_address`] says whether two addresses name the same host: equal, or one is an IPv6
//!   form that embeds the other IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 address an IPv6 address carries, in the forms listed in the module docs.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped: ::ffff:0:0/96.
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // IPv4-compatible (deprecated): ::/96, but not the unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        // NAT64 well-known prefix: 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4: 2002:V4ADDR::/48.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// An IP literal as a URL host or a header value gives it (`127.0.0.1`, `[::1]`, `::FFFF:7f00:1`).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner.parse().ok()
}

/// An IPv4 host as the WHATWG URL parser reads it (see the module docs); `None` when `text` is
/// not one (a name, or numbers out of range).
pub fn parse_url_ipv4(text: &str) -> Option<Ipv4Addr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in text.split('.') {
        if count == 4 {
            return None;
        }
        parts[count] = url_ipv4_number(part)?;
        count += 1;
    }
    let (last, init) = (parts[count - 1], &parts[..count - 1]);
    if init.iter().any(|&n| n > 255) || last >= 1u64 << (8 * (5 - count)) {
        return None;
    }
    let high = init
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &n)| acc + (n << (8 * (3 - i))));
    u32::try_from(high + last).ok().map(Ipv4Addr::from)
}

/// One part of a URL's IPv4 host: decimal, `0`-prefixed octal or `0x`-prefixed hexadecimal
/// (`0x` alone is 0). Values past 2^32 are refused rather than wrapped.
fn url_ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return (radix == 16).then_some(0);
    }
    if digits.len() > 32 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|&n| n <= u64::from(u32::MAX))
}

/// The address as the gateway keys and logs it: an IPv4-mapped IPv6 address is its IPv4
/// address (it is that address, spoken over IPv6); every other address is itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The IPv4 address `ip` stands for, when it is one or embeds one.
pub fn as_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => embedded_ipv4(v6),
    }
}

/// Whether `a` and `b` name the same host: equal, or one embeds the other's IPv4 address.
pub fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a == b || matches!((as_ipv4(a), as_ipv4(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_ipv4_reads_every_form_that_carries_one() {
        let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        let cases: &[(&str, Option<Ipv4Addr>)] = &[
            ("::ffff:203.0.113.9", v4("203.0.113.9")),
            ("::FFFF:CB00:7109", v4("203.0.113.9")),
            ("0:0:0:0:0:ffff:cb00:7109", v4("203.0.113.9")),
            ("::203.0.113.9", v4("203.0.113.9")),
            ("::cb00:7109", v4("203.0.113.9")),
            ("2002:cb00:7109::", v4("203.0.113.9")),
            ("2002:CB00:7109:1:2:3:4:5", v4("203.0.113.9")),
            ("64:ff9b::203.0.113.9", v4("203.0.113.9")),
            ("::ffff:127.0.0.1", v4("127.0.0.1")),
            ("::", None),
            ("::1", None),
            ("2001:db8::1", None),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", None), // Teredo: not read
            ("fe80::1", None),
            ("::ffff:0:cb00:7109", None), // IPv4-translated (::ffff:0:0:0/96) is not mapped
        ];
        for (text, expected) in cases {
            let v6: Ipv6Addr = text.parse().unwrap();
            assert_eq!(embedded_ipv4(v6), *expected, "{text}");
        }
    }

    #[test]
    fn parse_url_ipv4_reads_what_a_browser_reads() {
        let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        let cases: &[(&str, Option<Ipv4Addr>)] = &[
            ("127.0.0.1", v4("127.0.0.1")),
            ("127.0.0.1.", v4("127.0.0.1")),
            ("0x7f.1", v4("127.0.0.1")),
            ("0X7F.0.0.1", v4("127.0.0.1")),
            ("0177.0.0.1", v4("127.0.0.1")),
            ("127.000.000.001", v4("127.0.0.1")),
            ("2130706433", v4("127.0.0.1")),
            ("0x7f000001", v4("127.0.0.1")),
            ("017700000001", v4("127.0.0.1")),
            ("127.1", v4("127.0.0.1")),
            ("127.0.1", v4("127.0.0.1")),
            ("10.5", v4("10.0.0.5")),
            ("0x", v4("0.0.0.0")),
            ("4294967295", v4("255.255.255.255")),
            ("4294967296", None),
            ("256.0.0.1", None),
            ("127.0.0.1.1", None),
            ("1.2.3.4.", v4("1.2.3.4")),
            ("08.0.0.1", None), // 8 is not an octal digit
            ("0x7g.1", None),
            ("", None),
            (".", None),
            ("1..2", None),
            ("localhost", None),
            ("example.com", None),
            ("99999999999999999999999999", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_url_ipv4(text), *expected, "{text}");
        }
    }

    #[test]
    fn parse_ip_and_same_address() {
        let ip = |s: &str| parse_ip(s).unwrap();
        assert_eq!(ip("[::1]"), ip("0:0:0:0:0:0:0:1"));
        assert_eq!(ip("[::FFFF:127.0.0.1]"), ip("::ffff:7f00:1"));
        assert_eq!(parse_ip("[127.0.0.1]"), Some(ip("127.0.0.1")));
        assert_eq!(parse_ip("0x7f.0.0.1"), None);
        assert_eq!(parse_ip("127.1"), None);
        assert_eq!(parse_ip("localhost"), None);
        assert_eq!(parse_ip("[::1"), None);
        assert!(same_address(ip("127.0.0.1"), ip("::ffff:127.0.0.1")));
        assert!(same_address(ip("[::ffff:7f00:1]"), ip("127.0.0.1")));
        assert!(same_address(ip("2002:7f00:1::"), ip("127.0.0.1")));
        assert!(!same_address(ip("127.0.0.2"), ip("::ffff:127.0.0.1")));
        assert!(!same_address(ip("::1"), ip("127.0.0.1")));
        assert_eq!(canonical(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(canonical(ip("::10.0.0.1")), ip("::10.0.0.1"));
    }
}
