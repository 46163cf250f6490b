use super::*;

fn rule() -> CacheRule {
    CacheRule {
        ttl_s: 60,
        query: vec!["a".into(), "b".into(), "page".into()],
        headers: vec!["accept-language".into()],
        claims: vec!["sub".into()],
        statuses: vec![200, 404],
        stale_while_revalidate_s: 30,
        stale_if_error_s: 0,
        client_no_cache: true,
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

use crate::request::{Head, Underscores};
use serde_json::{json, Value};

fn head(url: &str, headers: &[(&str, &str)]) -> Head {
    Head::read("GET", url, &h(headers), Underscores::Drop).unwrap()
}

fn ident(claims: Value) -> Identity {
    let values = claims.as_object().unwrap().clone().into_iter().collect();
    Identity::from_claims(values, 2_000_000_000, &[])
}

/// The key of a GET of `/items?{query}` with `headers` by `who` (`None`: anonymous).
fn key_of(
    query: Option<&str>,
    headers: &[(&str, &str)],
    who: Option<&Identity>,
) -> Result<String, &'static str> {
    let url = match query {
        Some(q) => format!("https://API.example.com/items?{q}"),
        None => "https://API.example.com/items".to_string(),
    };
    rule().key("r", &head(&url, headers), "/items", who)
}

fn key(query: Option<&str>, headers: &[(&str, &str)], sub: Option<&str>) -> String {
    let who = sub.map(|s| ident(json!({ "sub": s })));
    key_of(query, headers, who.as_ref()).unwrap()
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
    // a parameter named twice keys on both values, in order: an origin that reads the first
    // value sees `2` in one and `1` in the other
    assert_ne!(key(Some("a=1&a=2"), &[], None), key(Some("a=1"), &[], None));
    assert_ne!(
        key(Some("a=2&a=1"), &[], None),
        key(Some("a=1&a=2"), &[], None)
    );
}

/// Every spelling an origin's form decoder reads as the same listed parameters gives the same
/// key; every spelling some origin reads differently gives another key than the plain request.
#[test]
fn the_query_is_keyed_as_origins_decode_it() {
    let plain = key(Some("a=x"), &[], None);
    let absent = key(None, &[], None);
    let same_as_plain = [
        "%61=x",
        "%61=%78",
        "a=%78",
        "a=x&utm=1",
        "utm=%26a%3Dy&a=x", // an encoded `&` is no separator to anyone
        "a=x&&",
    ];
    for q in same_as_plain {
        assert_eq!(key(Some(q), &[], None), plain, "{q}");
    }
    let differs_from_plain_and_absent = [
        "a=y",
        "%61=y",
        "A=x",   // ASP.NET reads `A` as `a`
        "a[]=x", // PHP, Rack and qs read an array of `a`
        "a[0]=x",
        "a=x&a=y",
        "a=x&%61=y",
        "a=x;b=2",   // Rack splits on `;`: the value is not just `x` to everyone
        "utm=1;a=y", // ... and reads `a=y` here
        "a",         // no `=`: absent to some decoders, empty to others
        "a=",
        "a=x+y",
        "a=x%20y",
        "+a=x", // a leading space PHP drops
    ];
    for q in differs_from_plain_and_absent {
        let k = key(Some(q), &[], None);
        assert_ne!(k, plain, "{q}");
        assert_ne!(k, absent, "{q}");
    }
    // `+` and `%20` are both a space to form decoders: one entry.
    assert_eq!(
        key(Some("a=x+y"), &[], None),
        key(Some("a=x%20y"), &[], None)
    );
    assert_eq!(
        key(Some("a=x%2By"), &[], None),
        key(Some("a=x%2by"), &[], None)
    );
    assert_ne!(
        key(Some("a=x%2By"), &[], None),
        key(Some("a=x+y"), &[], None)
    );
    // `a` and `a=` differ (some decoders drop the first).
    assert_ne!(key(Some("a"), &[], None), key(Some("a="), &[], None));
    // PHP reads `a.b` and `a b` as `a_b`.
    let rule_ab = CacheRule {
        query: vec!["a_b".into()],
        ..rule()
    };
    let k = |q: &str| {
        rule_ab
            .key("r", &head(&format!("https://h/i?{q}"), &[]), "/i", None)
            .unwrap()
    };
    let none = k("z=1");
    for q in ["a.b=1", "a+b=1", "a%20b=1", "A_B=1", "a_b[]=1"] {
        assert_ne!(k(q), none, "{q}");
    }
}

#[test]
fn malformed_keyed_parameters_are_not_cached() {
    for q in ["a=%zz", "a=%", "a=x%", "%61=%e", "A=%g0", "utm=1;a=%z"] {
        assert_eq!(
            key_of(Some(q), &[], None),
            Err("a keyed query parameter has malformed percent-encoding"),
            "{q}"
        );
    }
    // an unlisted parameter may be anything
    assert!(key_of(Some("utm=%zz&a=x"), &[], None).is_ok());
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
    assert_eq!(
        en,
        key(
            None,
            &[("accept-language", "en"), ("cookie", "s=1")],
            Some("alice")
        ),
        "unlisted headers ignored"
    );
    assert_eq!(
        en,
        key(None, &[("Accept-Language", " en ")], Some("alice")),
        "names in any case, values trimmed"
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
    let a = r.key("r", &head("https://h/ab", &[]), "/ab", None).unwrap();
    let b = r.key("r", &head("https://h/a?b", &[]), "/a", None).unwrap();
    assert_ne!(a, b);
    // the host is read once: any case, a trailing dot
    assert_eq!(
        r.key("r", &head("https://H.example./x", &[]), "/x", None),
        r.key("r", &head("https://h.example/x", &[]), "/x", None)
    );
}

/// A key claim that is missing or has no header form is never "absent and shared", and an
/// anonymous caller never shares an entry with a verified one.
#[test]
fn key_claims_that_cannot_be_keyed_are_not_cached() {
    let cases: &[(Value, Result<(), &str>)] = &[
        (json!({ "sub": "alice" }), Ok(())),
        (json!({ "sub": 7 }), Ok(())),
        (json!({ "sub": ["a", "b"] }), Ok(())),
        (json!({ "sub": "" }), Ok(())),
        (json!({}), Err("a key claim is missing")),
        (json!({ "other": "x" }), Err("a key claim is missing")),
        (
            json!({ "sub": null }),
            Err("a key claim has no header form"),
        ),
        (
            json!({ "sub": { "id": 1 } }),
            Err("a key claim has no header form"),
        ),
        (
            json!({ "sub": [{ "id": 1 }] }),
            Err("a key claim has no header form"),
        ),
        (
            json!({ "sub": "a\nb" }),
            Err("a key claim has no header form"),
        ),
        (
            json!({ "sub": "a\u{0}b" }),
            Err("a key claim has no header form"),
        ),
    ];
    for (claims, want) in cases {
        let who = ident(claims.clone());
        let got = key_of(None, &[], Some(&who)).map(|_| ());
        assert_eq!(got, *want, "{claims}");
    }
    let anonymous = key_of(None, &[], None).unwrap();
    for claims in [json!({ "sub": "" }), json!({ "sub": "anonymous" })] {
        assert_ne!(key_of(None, &[], Some(&ident(claims))).unwrap(), anonymous);
    }
    // Claims are keyed by their JSON value: an array of two is not one string with a comma.
    assert_ne!(
        key_of(None, &[], Some(&ident(json!({ "sub": ["a", "b"] })))),
        key_of(None, &[], Some(&ident(json!({ "sub": ["a,b"] }))))
    );
    assert_ne!(
        key_of(None, &[], Some(&ident(json!({ "sub": 7 })))),
        key_of(None, &[], Some(&ident(json!({ "sub": "7" }))))
    );
}

#[test]
fn usage_decisions() {
    let r = rule();
    let none = Credentials::default();
    let at = |headers: &[(&str, &str)]| head("https://h/x", headers);
    assert_eq!(r.usage("GET", &at(&[]), &none), Use::Lookup);
    assert_eq!(r.usage("HEAD", &at(&[]), &none), Use::Lookup);
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        assert_eq!(r.usage(m, &at(&[]), &none), Use::Bypass("method"), "{m}");
    }
    let no_cache = Use::Bypass("client no-cache");
    assert_eq!(
        r.usage("GET", &at(&[("cache-control", "no-cache")]), &none),
        no_cache
    );
    assert_eq!(
        r.usage("GET", &at(&[("Cache-Control", "NO-STORE")]), &none),
        no_cache
    );
    assert_eq!(
        r.usage("GET", &at(&[("pragma", "no-cache")]), &none),
        no_cache
    );
    let strict = CacheRule {
        client_no_cache: false,
        ..rule()
    };
    assert_eq!(
        strict.usage("GET", &at(&[("cache-control", "no-cache")]), &none),
        Use::Lookup
    );
}

/// On a rule without claims, a request carrying credentials wherever a policy of the config
/// reads them is not cached.
#[test]
fn credentials_anywhere_a_policy_reads_them_bypass_a_rule_without_claims() {
    let public = CacheRule {
        claims: vec![],
        ..rule()
    };
    let creds = Credentials {
        headers: vec!["authorization".into(), "x-api-key".into()],
        cookies: vec!["__Host-session".into(), "access_token".into()],
    };
    let bypass = Use::Bypass("credentials on a route keyed without claims");
    let carrying: &[&[(&str, &str)]] = &[
        &[("authorization", "Bearer x")],
        &[("Authorization", "Basic eDp5")],
        &[("x-api-key", "k")],
        &[("X-API-KEY", "k")],
        &[("cookie", "access_token=t")],
        &[("cookie", "a=1; access_token=t")],
        &[("cookie", "a=1"), ("cookie", " access_token = t")],
        &[("cookie", "__Host-session=s")],
        &[("cookie", "access_token=")],
    ];
    for headers in carrying {
        let head = head("https://h/x", headers);
        assert_eq!(public.usage("GET", &head, &creds), bypass, "{headers:?}");
    }
    let not_carrying: &[&[(&str, &str)]] = &[
        &[],
        &[("cookie", "xaccess_token=t; session=s")],
        &[("cookie", "__host-session=s")], // cookie names are case-sensitive
        &[("x-api-keys", "k")],
    ];
    for headers in not_carrying {
        let head = head("https://h/x", headers);
        assert_eq!(
            public.usage("GET", &head, &creds),
            Use::Lookup,
            "{headers:?}"
        );
    }
    // A rule keyed by claims caches the verified caller under its claims.
    let keyed = rule();
    let head = head("https://h/x", &[("authorization", "Bearer x")]);
    assert_eq!(keyed.usage("GET", &head, &creds), Use::Lookup);
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
            &[("content-type", "text/event-stream")],
            Store::No("text/event-stream"),
        ),
        (
            200,
            &[("content-type", "Text/Event-Stream; charset=utf-8")],
            Store::No("text/event-stream"),
        ),
        (
            200,
            &[("content-type", " text/event-stream ")],
            Store::No("text/event-stream"),
        ),
        (200, &[("content-type", "text/plain")], Store::For(60)),
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

#[test]
fn the_stale_if_error_window_of_a_stored_entry() {
    let rule = CacheRule {
        stale_if_error_s: 300,
        ..rule()
    };
    // (the origin's cache-control on the stored entry, the window)
    let cases: &[(Option<&str>, u32)] = &[
        (None, 300),
        (Some("max-age=60"), 300),
        (Some("max-age=60, stale-if-error=100"), 100),
        (Some("STALE-IF-ERROR=\"100\""), 100),
        (Some("stale-if-error=9999"), 300),
        (Some("stale-if-error=soon"), 300),
        (Some("must-revalidate"), 0),
        (Some("Proxy-Revalidate, max-age=5"), 0),
        (Some("must-revalidate, stale-if-error=50"), 50),
    ];
    for (cc, window) in cases {
        let mut origin = h(&[("content-type", "text/plain")]);
        if let Some(cc) = cc {
            origin.push(("cache-control".into(), cc.to_string()));
        }
        let stored = stored_headers(&origin, 60, rule.kept_stale_s(), 0);
        assert_eq!(rule.error_window_s(&stored), *window, "{cc:?}");
    }
    assert_eq!(rule.kept_stale_s(), 300, "the longer of the two windows");
    let off = CacheRule {
        stale_if_error_s: 0,
        ..rule
    };
    assert_eq!(off.error_window_s(&stored_headers(&[], 60, 30, 0)), 0);
    assert!(within(0, 60, 300, 359_999) && !within(0, 60, 300, 360_000));
}
