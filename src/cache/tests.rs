use super::*;

fn rule() -> CacheRule {
    CacheRule {
        ttl_s: 60,
        query: vec!["a".into(), "b".into(), "page".into()],
        headers: vec!["accept-language".into()],
        claims: vec!["sub".into()],
        statuses: vec![200, 404],
        stale_while_revalidate_s: 30,
        client_no_cache: true,
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn key(query: Option<&str>, headers: &[(&str, &str)], sub: Option<&str>) -> String {
    rule().key(
        "r",
        "API.example.com",
        "/items",
        query,
        &h(headers),
        |name| if name == "sub" { sub } else { None },
    )
}

#[test]
fn keys_ignore_query_order_and_unlisted_parameters() {
    let base = key(Some("a=1&b=2"), &[], None);
    assert_eq!(key(Some("b=2&a=1"), &[], None), base);
    assert_eq!(key(Some("a=1&utm_source=x&b=2"), &[], None), base);
    assert_eq!(key(Some("utm_source=y&b=2&a=1&fbclid=z"), &[], None), base);
    assert_ne!(key(Some("a=1&b=3"), &[], None), base);
    assert_ne!(key(Some("a=1"), &[], None), base);
    assert_eq!(key(None, &[], None), key(Some("utm=1"), &[], None));
    // a parameter named twice keys on both values, in order
    assert_ne!(key(Some("a=1&a=2"), &[], None), key(Some("a=1"), &[], None));
    assert_eq!(
        key(Some("a=2&a=1"), &[], None),
        key(Some("a=1&a=2"), &[], None)
    );
}

#[test]
fn keys_include_listed_headers_and_claims_hashed() {
    let en = key(None, &[("accept-language", "en")], Some("alice"));
    assert_ne!(en, key(None, &[("accept-language", "fr")], Some("alice")));
    assert_ne!(en, key(None, &[("accept-language", "en")], Some("bob")));
    assert_ne!(
        key(None, &[], Some("alice")),
        key(None, &[("accept-language", "")], Some("alice"))
    );
    assert_ne!(
        key(None, &[], None),
        key(None, &[], Some("")),
        "absent and empty differ"
    );
    assert_eq!(
        en,
        key(
            None,
            &[("accept-language", "en"), ("cookie", "s=1")],
            Some("alice")
        ),
        "unlisted headers ignored"
    );
    assert!(
        en.starts_with("https://api.example.com/.portcullis-cache/"),
        "{en}"
    );
    let hash = en.rsplit('/').next().unwrap();
    assert_eq!(hash.len(), 64);
    assert!(!en.contains("alice") && !en.contains("en\0"));
    // parts are length-prefixed: moving a boundary changes the key
    let r = rule();
    let a = r.key("r", "h", "/ab", None, &[], |_| None);
    let b = r.key("r", "h", "/a", Some("b"), &[], |_| None);
    assert_ne!(a, b);
}

#[test]
fn usage_decisions() {
    let r = rule();
    assert_eq!(r.usage("GET", &[]), Use::Lookup);
    assert_eq!(r.usage("HEAD", &[]), Use::Lookup);
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        assert_eq!(r.usage(m, &[]), Use::Bypass, "{m}");
    }
    assert_eq!(
        r.usage("GET", &h(&[("cache-control", "no-cache")])),
        Use::Bypass
    );
    assert_eq!(r.usage("GET", &h(&[("pragma", "no-cache")])), Use::Bypass);
    let strict = CacheRule {
        client_no_cache: false,
        ..rule()
    };
    assert_eq!(
        strict.usage("GET", &h(&[("cache-control", "no-cache")])),
        Use::Lookup
    );
}

#[test]
fn store_decisions_for_each_origin_header_combination() {
    let r = rule();
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], Store);
    let cases: &[Case] = &[
        (200, &[], Store::For(60)),
        (404, &[], Store::For(60)),
        (500, &[], Store::No("status not listed in cache.statuses")),
        (301, &[], Store::No("status not listed in cache.statuses")),
        (200, &[("set-cookie", "a=1")], Store::No("set-cookie")),
        (
            200,
            &[("cache-control", "private")],
            Store::No("cache-control forbids storing"),
        ),
        (
            200,
            &[("cache-control", "public, no-store")],
            Store::No("cache-control forbids storing"),
        ),
        (
            200,
            &[("cache-control", "no-cache")],
            Store::No("cache-control forbids storing"),
        ),
        (
            200,
            &[("cache-control", "Private, max-age=100")],
            Store::No("cache-control forbids storing"),
        ),
        (200, &[("cache-control", "max-age=10")], Store::For(10)),
        (200, &[("cache-control", "max-age=600")], Store::For(60)),
        (
            200,
            &[("cache-control", "max-age=10, s-maxage=20")],
            Store::For(20),
        ),
        (200, &[("cache-control", "s-maxage=5")], Store::For(5)),
        (
            200,
            &[("cache-control", "max-age=0")],
            Store::No("max-age=0"),
        ),
        (200, &[("cache-control", "max-age=\"15\"")], Store::For(15)),
        (200, &[("cache-control", "max-age=abc")], Store::For(60)),
        (200, &[("vary", "*")], Store::No("vary: *")),
        (200, &[("vary", "Accept-Encoding")], Store::For(60)),
    ];
    for (status, headers, want) in cases {
        assert_eq!(r.store(*status, &h(headers)), *want, "{status} {headers:?}");
    }
}

#[test]
fn ttl_and_stale_window_arithmetic() {
    assert_eq!(freshness(1_000, 60, 30, 1_000), Freshness::Fresh);
    assert_eq!(freshness(1_000, 60, 30, 60_999), Freshness::Fresh);
    assert_eq!(freshness(1_000, 60, 30, 61_000), Freshness::Stale);
    assert_eq!(freshness(1_000, 60, 30, 90_999), Freshness::Stale);
    assert_eq!(freshness(1_000, 60, 30, 91_000), Freshness::Expired);
    assert_eq!(freshness(1_000, 60, 0, 61_000), Freshness::Expired);
    assert_eq!(
        freshness(5_000, 60, 0, 1_000),
        Freshness::Fresh,
        "a clock behind the entry is no age"
    );
    assert_eq!(age_s(1_000, 3_999), 2);
}

#[test]
fn stored_entries_round_trip_their_headers() {
    let client = h(&[
        ("content-type", "text/plain"),
        ("cache-control", "max-age=30"),
        ("x-request-id", "first"),
        ("x-cache-status", "MISS"),
    ]);
    let stored = stored_headers(&client, 30, 10, 123_000);
    assert_eq!(stored_meta(&stored), Some((123_000, 30)));
    assert!(stored.contains(&("cache-control".into(), "public, max-age=40".into())));
    assert!(!stored.iter().any(|(n, _)| n == "x-request-id"));
    let served = served_headers(&stored, "HIT", 5, "second");
    assert_eq!(
        served,
        h(&[
            ("content-type", "text/plain"),
            ("cache-control", "max-age=30"),
            ("age", "5"),
            ("x-cache-status", "HIT"),
            ("x-request-id", "second"),
        ])
    );
    assert_eq!(stored_meta(&h(&[("content-type", "x")])), None);
}
