use super::*;
use crate::config::Config;
use crate::template::{Syntax, Template};

fn h(pairs: &[(&str, &str)]) -> HeaderList {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn rules(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderRules {
    let t = |v: &str| Template::parse(v, Syntax::Header, &["id".to_string()]).unwrap();
    HeaderRules {
        set: set.iter().map(|(n, v)| (n.to_string(), t(v))).collect(),
        add: add.iter().map(|(n, v)| (n.to_string(), t(v))).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

fn lookup(v: &Var) -> Option<&'static str> {
    match v {
        Var::RequestId => Some("rid"),
        Var::Param(p) if p == "id" => Some("7"),
        Var::Route => Some("r"),
        _ => None,
    }
}

const FWD: Forwarding<'static> = Forwarding {
    client_ip: Some("203.0.113.9"),
    proto: "https",
    public_host: "api.example.com",
    request_id: "rid",
    claim_headers: &[],
    forward_claims: &[],
};

#[test]
fn the_origin_request_drops_hop_by_hop_named_and_owned_headers() {
    let incoming = h(&[
        ("accept", "application/json"),
        ("connection", "keep-alive, X-Secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-authorization", "Basic x"),
        ("proxy-connection", "keep-alive"),
        ("host", "api.example.com"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-port", "1"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-request-id", "client-chosen"),
        ("authorization", "Bearer t"),
    ]);
    let out = request_plan(&incoming, &FWD, &HeaderRules::default(), lookup);
    assert_eq!(
        out,
        h(&[
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
            ("x-request-id", "rid"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ])
    );
}

#[test]
fn without_a_client_address_no_forwarded_for_is_invented() {
    let fwd = Forwarding {
        client_ip: None,
        ..FWD
    };
    let out = request_plan(
        &h(&[("x-forwarded-for", "6.6.6.6")]),
        &fwd,
        &HeaderRules::default(),
        lookup,
    );
    assert!(!out.iter().any(|(n, _)| n == "x-forwarded-for"), "{out:?}");
}

#[test]
fn route_rules_apply_after_the_gateway_headers() {
    let incoming = h(&[("cookie", "a=1"), ("x-env", "client"), ("accept", "*/*")]);
    let r = rules(
        &[
            ("x-env", "edge"),
            ("x-id", "{param.id}"),
            ("x-ip", "{client_ip}"),
        ],
        &[("x-tag", "{route}"), ("accept", "text/plain")],
        &["cookie"],
    );
    let out = request_plan(&incoming, &FWD, &r, lookup);
    let get = |n: &str| {
        out.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert!(get("cookie").is_empty());
    assert_eq!(get("x-env"), ["edge"]);
    assert_eq!(get("x-id"), ["7"]);
    assert!(
        get("x-ip").is_empty(),
        "a missing placeholder makes the header absent"
    );
    assert_eq!(get("x-tag"), ["r"]);
    assert_eq!(get("accept"), ["*/*", "text/plain"]);
}

fn servers() -> Config {
    let text = serde_json::json!({
        "origins": {
            "a": { "servers": [{ "url": "http://10.0.0.5:8080/internal/v1" }] },
            "b": { "servers": [{ "url": "https://B.internal.example" }] }
        },
        "routes": []
    });
    Config::from_json(&text.to_string()).unwrap()
}

#[test]
fn locations_pointing_at_origins_are_rewritten() {
    let cfg = servers();
    let all = || cfg.origins.iter().flat_map(|o| o.servers.iter());
    let none = Rewrite::None;
    let strip = Rewrite::StripPrefix("/api".into());
    let public = |rewrite| PublicSide {
        origin: "https://api.example.com",
        rewrite,
    };
    let cases: &[(&str, &Rewrite, Option<&str>)] = &[
        (
            "http://10.0.0.5:8080/internal/v1/users/8",
            &none,
            Some("https://api.example.com/users/8"),
        ),
        (
            "http://10.0.0.5:8080/internal/v1/users/8?x=1#f",
            &strip,
            Some("https://api.example.com/api/users/8?x=1#f"),
        ),
        (
            "http://10.0.0.5:8080/internal/v1",
            &strip,
            Some("https://api.example.com/api"),
        ),
        (
            "http://10.0.0.5:9999/elsewhere",
            &none,
            Some("https://api.example.com/elsewhere"),
        ),
        (
            "https://b.internal.example/login",
            &none,
            Some("https://api.example.com/login"),
        ),
        ("https://id.example.org/login", &none, None),
        ("/relative/path", &none, None),
    ];
    for (value, rewrite, want) in cases {
        assert_eq!(
            rewrite_location(value, all(), &public(rewrite)).as_deref(),
            *want,
            "{value}"
        );
    }
}

#[test]
fn the_client_response_hides_the_origin() {
    let cfg = servers();
    let all = cfg.origins.iter().flat_map(|o| o.servers.iter());
    let from_origin = h(&[
        ("content-type", "text/plain"),
        ("server", "nginx/1.2"),
        ("x-powered-by", "PHP"),
        ("via", "1.1 internal"),
        ("connection", "x-internal"),
        ("x-internal", "secret"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("location", "http://10.0.0.5:8080/internal/v1/next"),
        ("content-location", "https://b.internal.example/doc"),
        ("x-request-id", "origin-id"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("x-debug", "1"),
    ]);
    let public = PublicSide {
        origin: "https://api.example.com",
        rewrite: &Rewrite::None,
    };
    let r = rules(&[("x-route", "{route}")], &[], &["x-debug"]);
    let out = response_plan(&from_origin, all, &public, "rid", &r, lookup);
    assert_eq!(
        out,
        h(&[
            ("content-type", "text/plain"),
            ("location", "https://api.example.com/next"),
            ("content-location", "https://api.example.com/doc"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-route", "r"),
            ("x-request-id", "rid"),
        ])
    );
}

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
fn client_copies_of_claim_headers_are_dropped_and_verified_claims_set_last() {
    let claim_headers = vec!["x-user-id".to_string(), "x-user-email".to_string()];
    let forward = vec![("x-user-id".to_string(), "alice".to_string())];
    let incoming = h(&[
        ("x-user-id", "mallory"),
        ("x-user-email", "m@evil.example"),
        ("accept", "*/*"),
    ]);
    // Public route: copies dropped, nothing forwarded.
    let public = Forwarding {
        claim_headers: &claim_headers,
        ..FWD
    };
    let out = request_plan(&incoming, &public, &HeaderRules::default(), lookup);
    assert!(
        !out.iter().any(|(n, _)| n.starts_with("x-user-")),
        "{out:?}"
    );
    // Authenticated: the verified value wins even over a route rule setting the same header.
    let authed = Forwarding {
        claim_headers: &claim_headers,
        forward_claims: &forward,
        ..FWD
    };
    let r = rules(&[("x-user-id", "from-rule")], &[], &[]);
    let out = request_plan(&incoming, &authed, &r, lookup);
    let ids: Vec<&str> = out
        .iter()
        .filter(|(n, _)| n == "x-user-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["alice"]);
    assert!(!out.iter().any(|(n, _)| n == "x-user-email"));
}
