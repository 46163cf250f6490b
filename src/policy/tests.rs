use super::*;

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
}

#[test]
fn cidr_matching_edge_cases() {
    let cases: &[(&str, &str, bool)] = &[
        ("0.0.0.0/0", "203.0.113.9", true),
        ("0.0.0.0/0", "2001:db8::1", false),
        ("::/0", "2001:db8::1", true),
        ("::/0", "203.0.113.9", true), // every address, v4 included (as mapped)
        ("203.0.113.9/32", "203.0.113.9", true),
        ("203.0.113.9/32", "203.0.113.10", false),
        ("203.0.113.9", "203.0.113.9", true),
        ("203.0.113.0/24", "203.0.113.255", true),
        ("203.0.113.0/24", "203.0.114.0", false),
        ("10.0.0.0/8", "::ffff:10.1.2.3", true), // IPv4-mapped IPv6 matches IPv4 rules
        ("::ffff:10.0.0.0/104", "10.9.9.9", true),
        ("2001:db8::1/128", "2001:db8::1", true),
        ("2001:db8::1/128", "2001:db8::2", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true),
        ("2001:db8::/32", "2001:db9::1", false),
    ];
    for (cidr, ip, want) in cases {
        let c = Cidr::parse(cidr).unwrap();
        assert_eq!(
            c.contains(ip.parse().unwrap()),
            *want,
            "{cidr} contains {ip}"
        );
    }
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "10.0.0.1/8",
        "10.0.0/8",
        "nope",
        "10.0.0.0/-1",
        "2001:db8::1/32",
    ] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn deny_wins_and_an_allow_list_is_closed() {
    let rules = IpRules {
        allow: cidrs(&["203.0.113.0/24"]),
        deny: cidrs(&["203.0.113.66"]),
    };
    assert!(rules.allows(ip("203.0.113.9")));
    assert!(!rules.allows(ip("203.0.113.66")));
    assert!(!rules.allows(ip("198.51.100.1")));
    assert!(
        !rules.allows(None),
        "no address: refused when there are rules"
    );
    let deny_only = IpRules {
        allow: vec![],
        deny: cidrs(&["198.51.100.0/24", "2001:db8::/32"]),
    };
    assert!(deny_only.allows(ip("203.0.113.9")));
    assert!(!deny_only.allows(ip("198.51.100.7")));
    assert!(!deny_only.allows(ip("2001:db8::5")));
    assert!(IpRules::default().allows(None));
}

#[test]
fn every_ipv6_form_of_an_ipv4_address_meets_the_ipv4_rules() {
    let deny = IpRules {
        allow: vec![],
        deny: cidrs(&["203.0.113.0/24"]),
    };
    let allow = IpRules {
        allow: cidrs(&["203.0.113.0/24"]),
        deny: vec![],
    };
    let v6_deny = IpRules {
        allow: vec![],
        deny: cidrs(&["2002::/16"]),
    };
    // (client, is it 203.0.113.x?)
    let cases: &[(&str, bool)] = &[
        ("203.0.113.9", true),
        ("::ffff:203.0.113.9", true),
        ("::FFFF:CB00:7109", true),
        ("0:0:0:0:0:ffff:cb00:7109", true),
        ("::203.0.113.9", true),
        ("::cb00:7109", true),
        ("2002:cb00:7109::1", true),
        ("2002:CB00:7109:ffff::", true),
        ("64:ff9b::203.0.113.9", true),
        ("64:ff9b::cb00:7109", true),
        ("203.0.114.9", false),
        ("::ffff:203.0.114.9", false),
        ("2002:cb00:7209::", false),
        ("2001:db8::cb00:7109", false),
        ("::1", false),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false),
    ];
    for (client, inside) in cases {
        assert_eq!(
            deny.allows(ip(client)),
            !inside,
            "deny 203.0.113.0/24, {client}"
        );
        assert_eq!(
            allow.allows(ip(client)),
            *inside,
            "allow 203.0.113.0/24, {client}"
        );
    }
    // An IPv6 rule still sees the address as written.
    assert!(!v6_deny.allows(ip("2002:cb00:7109::1")));
    assert!(v6_deny.allows(ip("203.0.113.9")));
}

fn cors(origins: &[&str], credentials: bool) -> Cors {
    Cors {
        origins: origins
            .iter()
            .map(|o| AllowedOrigin::parse(o).unwrap())
            .collect(),
        methods: vec!["GET".into(), "PUT".into()],
        headers: vec!["authorization".into(), "x-trace".into()],
        expose_headers: vec!["x-request-id".into()],
        credentials,
        max_age_s: 600,
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn preflight_decisions() {
    let c = cors(&["https://app.example.com", "https://*.example.org"], true);
    let Preflight::Allow(h) = c.preflight(
        "https://app.example.com",
        "PUT",
        Some("Authorization, Content-Type"),
    ) else {
        panic!("refused")
    };
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&h, "access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        header(&h, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&h, "access-control-max-age"), Some("600"));
    assert!(header(&h, "vary").unwrap().contains("Origin"));

    let refused: &[(&str, &str, Option<&str>)] = &[
        ("https://evil.example.com", "GET", None),
        ("https://evil-example.com", "GET", None),
        ("https://app.example.com.evil.net", "GET", None),
        ("http://app.example.com", "GET", None),
        ("null", "GET", None),
        ("https://app.example.com", "DELETE", None),
        ("https://app.example.com", "GET", Some("x-secret")),
        ("https://example.org", "GET", None),
        ("http://a.example.org", "GET", None),
        ("https://a.example.org.evil.net", "GET", None),
    ];
    for (origin, method, hdrs) in refused {
        assert!(
            matches!(c.preflight(origin, method, *hdrs), Preflight::Refuse(_)),
            "{origin} {method} {hdrs:?}"
        );
    }
    assert!(matches!(
        c.preflight("https://a.b.example.org", "GET", None),
        Preflight::Allow(_)
    ));
}

#[test]
fn actual_responses_get_cors_headers_replacing_the_origins() {
    let c = cors(&["https://app.example.com"], true);
    let mut h = vec![
        ("access-control-allow-origin".to_string(), "*".to_string()),
        ("content-type".to_string(), "text/plain".to_string()),
    ];
    c.apply(Some("https://APP.example.com"), &mut h);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&h, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(header(&h, "vary"), Some("Origin"));
    assert_eq!(
        h.iter()
            .filter(|(n, _)| n == "access-control-allow-origin")
            .count(),
        1
    );

    let mut h = vec![
        ("vary".to_string(), "Accept-Encoding".to_string()),
        ("access-control-allow-origin".to_string(), "*".to_string()),
    ];
    c.apply(Some("https://other.example"), &mut h);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        None,
        "the origin's own CORS header is removed"
    );
    assert_eq!(header(&h, "vary"), Some("Accept-Encoding, Origin"));

    // `*` without credentials answers `*`; with credentials it is refused by validation, and
    // `null` is never echoed
    let any = cors(&["*"], false);
    let mut h = Vec::new();
    any.apply(Some("https://x.example"), &mut h);
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    let mut h = Vec::new();
    any.apply(Some("null"), &mut h);
    assert_eq!(header(&h, "access-control-allow-origin"), None);
}

#[test]
fn origin_patterns_are_checked() {
    for bad in [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://x.example",
        "https://a.*.example.com",
        "https://*.",
    ] {
        assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn rate_limit_keys() {
    let headers = vec![("x-api-key".to_string(), "k1".to_string())];
    let rl = |key| RateLimit {
        binding: "RL".into(),
        key,
        period_s: 60,
    };
    let none = |_: &str| None;
    let key =
        |k: RateKey, ip: Option<&str>, h: &[(String, String)]| rl(k).key_for("r", ip, h, none);
    assert_eq!(
        key(RateKey::ClientIp, Some("203.0.113.9"), &headers).as_deref(),
        Some("r\u{1f}203.0.113.9")
    );
    assert_eq!(key(RateKey::ClientIp, None, &headers), None);
    assert_eq!(
        key(RateKey::Header("x-api-key".into()), None, &headers).as_deref(),
        Some("r\u{1f}k1")
    );
    assert_eq!(key(RateKey::Header("x-other".into()), None, &headers), None);
    assert_eq!(key(RateKey::Route, None, &[]).as_deref(), Some("r\u{1f}"));
    let sub = |name: &str| (name == "sub").then_some("alice");
    let claim = |name: &str| rl(RateKey::Claim(name.into())).key_for("r", None, &[], sub);
    assert_eq!(claim("sub").as_deref(), Some("r\u{1f}alice"));
    assert_eq!(claim("tenant"), None);
}

#[test]
fn limit_arithmetic() {
    assert!(!body_too_large(Some(1024), Some(1024)));
    assert!(body_too_large(Some(1025), Some(1024)));
    assert!(
        !body_too_large(None, Some(1024)),
        "no length: enforced while streaming"
    );
    assert!(!body_too_large(Some(u64::MAX), None));
}
