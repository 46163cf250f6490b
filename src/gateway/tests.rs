use super::*;
use crate::config::Config;
use crate::request::Head;

fn gateway() -> Gateway {
    let text = serde_json::json!({
        "origins": {
            "users": { "servers": [{ "url": "https://users.internal.example:8443/internal/" }], "timeout_ms": 1234 },
            "plain": { "servers": [{ "url": "http://127.0.0.1:9000" }] }
        },
        "routes": [
            { "name": "user", "path": "/api/users/{id}", "origin": "users", "rewrite": { "path": "/v2/users/{id}" },
              "request_headers": { "set": { "x-user": "{param.id}", "x-route": "{route}", "x-host": "{host}", "x-rid": "{request_id}" } } },
            { "name": "orders", "path": "/api/orders/{*rest}", "origin": "plain", "rewrite": { "strip_prefix": "/api" } },
            { "name": "root", "path": "/api", "origin": "plain", "rewrite": { "strip_prefix": "/api" } },
            { "name": "as-is", "path": "/static/{*file}", "methods": ["GET"], "origin": "plain" }
        ]
    });
    Gateway::new(Config::from_json(&text.to_string()).unwrap())
}

fn plan(g: &Gateway, method: &str, url: &str) -> Result<ForwardPlan, Refusal> {
    let headers = vec![("cf-connecting-ip".to_string(), "203.0.113.9".to_string())];
    g.plan(
        &Incoming {
            method,
            url,
            headers: &headers,
        },
        "rid",
    )
}

#[test]
fn upstream_urls_join_base_rewritten_path_and_query() {
    let g = gateway();
    let cases = [
        (
            "https://api.example.com/api/users/7?x=1&y=%20",
            "https://users.internal.example:8443/internal/v2/users/7?x=1&y=%20",
        ),
        (
            "https://api.example.com/api/orders/5/items",
            "http://127.0.0.1:9000/orders/5/items",
        ),
        ("https://api.example.com/api", "http://127.0.0.1:9000/"),
        (
            "https://api.example.com/static/a/../b.css?v=2",
            "http://127.0.0.1:9000/static/b.css?v=2",
        ),
        (
            "https://api.example.com//static//%61.css",
            "http://127.0.0.1:9000/static/a.css",
        ),
        (
            "https://api.example.com/api/users/%7Ejo",
            "https://users.internal.example:8443/internal/v2/users/~jo",
        ),
    ];
    for (url, want) in cases {
        let p = plan(&g, "GET", url).unwrap();
        assert_eq!(
            p.url_for(&g.config.origins[p.origin].servers[0]),
            want,
            "{url}"
        );
    }
}

#[test]
fn the_plan_carries_headers_timeout_and_params() {
    let g = gateway();
    let p = plan(&g, "GET", "https://API.example.com:8443/api/users/7").unwrap();
    assert_eq!(g.config.origins[p.origin].timeout_ms, 1234);
    assert_eq!(p.params, [("id".to_string(), "7".to_string())]);
    let get = |n: &str| {
        p.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-user"), Some("7"));
    assert_eq!(get("x-route"), Some("user"));
    assert_eq!(get("x-host"), Some("API.example.com:8443"));
    assert_eq!(get("x-rid"), Some("rid"));
    assert_eq!(get("x-forwarded-for"), Some("203.0.113.9"));
    assert_eq!(get("x-forwarded-proto"), Some("https"));
}

#[test]
fn refusals_are_the_spec_errors() {
    let g = gateway();
    let code = |method: &str, url: &str| plan(&g, method, url).unwrap_err().error.code();
    assert_eq!(code("GET", "https://a.example/nothing"), "no_route");
    assert_eq!(
        code("POST", "https://a.example/static/x"),
        "method_not_allowed"
    );
    assert_eq!(
        code("GET", "https://a.example/api/users/a%2Fb"),
        "bad_request"
    );
    assert_eq!(
        code("GET", "https://a.example/api/users/a%5Cb"),
        "bad_request"
    );
    assert_eq!(
        code("GET", "https://a.example/api/users/%00"),
        "bad_request"
    );
    assert_eq!(
        code("GET", "https://a.example/api/users/%zz"),
        "bad_request"
    );
    assert_eq!(code("GET", "not a url"), "bad_request");
    match plan(&g, "POST", "https://a.example/static/x")
        .unwrap_err()
        .error
    {
        GatewayError::MethodNotAllowed { allow } => assert_eq!(allow, ["GET", "HEAD"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_spoofed_client_address_is_ignored() {
    let g = gateway();
    let headers = vec![(
        "cf-connecting-ip".to_string(),
        "1.2.3.4, 6.6.6.6".to_string(),
    )];
    let p = g
        .plan(
            &Incoming {
                method: "GET",
                url: "https://a.example/api",
                headers: &headers,
            },
            "rid",
        )
        .unwrap();
    assert!(!p.headers.iter().any(|(k, _)| k == "x-forwarded-for"));
}

#[test]
fn urls_split_into_their_parts() {
    let cases = [
        (
            "https://a.example/x?y#z",
            ("https", "a.example", "a.example", "/x", Some("y")),
        ),
        (
            "http://127.0.0.1:8787",
            ("http", "127.0.0.1:8787", "127.0.0.1", "/", None),
        ),
        (
            "http://[::1]:8787/p",
            ("http", "[::1]:8787", "[::1]", "/p", None),
        ),
        ("http://h?q", ("http", "h", "h", "/", Some("q"))),
    ];
    for (url, (scheme, authority, host, path, query)) in cases {
        assert_eq!(
            split_url(url),
            Some(UrlParts {
                scheme,
                authority,
                host,
                path,
                query
            }),
            "{url}"
        );
    }
    assert_eq!(split_url("nope"), None);
}

#[test]
fn response_headers_rewrite_locations_to_the_public_host() {
    let g = gateway();
    let p = plan(&g, "GET", "https://api.example.com/api/orders/1").unwrap();
    let out = g.response_headers(
        &p,
        &[("location".into(), "http://127.0.0.1:9000/orders/2".into())],
    );
    assert_eq!(
        out[0],
        (
            "location".to_string(),
            "https://api.example.com/api/orders/2".to_string()
        )
    );
}

/// A gateway with an admin path, a catch-all route, an IP-limited route and a cached route, for
/// the spelling tests below.
fn hardened(settings: serde_json::Value) -> Gateway {
    let text = serde_json::json!({
        "settings": settings,
        "admin": { "path": "/_portcullis", "token_env": "ADMIN_TOKEN" },
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000" }] } },
        "routes": [
            { "name": "office", "path": "/office", "origin": "o", "allow_ips": ["203.0.113.0/24"] },
            { "name": "cached", "path": "/c", "origin": "o",
              "cache": { "ttl_s": 60, "key": { "query": ["v"], "headers": ["x-tenant"] } } },
            { "name": "all", "path": "/{*rest}", "origin": "o" }
        ]
    });
    Gateway::new(Config::from_json(&text.to_string()).unwrap())
}

fn head_of(g: &Gateway, method: &str, url: &str, headers: &[(&str, &str)]) -> Head {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    g.read(&Incoming {
        method,
        url,
        headers: &headers,
    })
    .unwrap()
}

#[test]
fn every_spelling_of_the_admin_path_is_the_admin_path() {
    let g = hardened(serde_json::json!({}));
    let purge = |url: &str| g.admin_request(&head_of(&g, "DELETE", url, &[]));
    let target = || AdminRequest::Purge {
        target: "https://h/c?v=1".into(),
    };
    for url in [
        "https://h/_portcullis/cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h//_portcullis/cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/%5Fportcullis/cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/%5fportcullis/cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/_PORTCULLIS/Cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/_portcullis//cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/./_portcullis/./cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/x/../_portcullis/cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/%2e%2e/_portcullis/cache?url=https%3A%2F%2Fh%2Fc%3Fv%3D1",
        "https://h/_port%63ullis/cache?%75rl=https%3A%2F%2Fh%2Fc%3Fv%3D1",
    ] {
        let got = purge(url);
        let want = if url.contains("/Cache") {
            // the path under the admin prefix is the admin's: an unknown one is 404 there
            AdminRequest::NotFound
        } else {
            target()
        };
        assert_eq!(got, Some(want), "{url}");
    }
    for url in [
        "https://h/_portcullis",
        "https://h/_portcullis/",
        "https://h/_portcullis/other",
        "https://h/_portcullis/cache",
        "https://h/_portcullis/cache?url=%zz",
    ] {
        assert_eq!(purge(url), Some(AdminRequest::NotFound), "{url}");
    }
    for url in [
        "https://h/_portcullisx/cache",
        "https://h/a/_portcullis/cache",
    ] {
        assert_eq!(purge(url), None, "{url}");
    }
    // GET on the admin path is the admin's too (404 there), never a route's.
    assert_eq!(
        g.admin_request(&head_of(&g, "GET", "https://h//_portcullis/cache", &[])),
        Some(AdminRequest::NotFound)
    );
}

#[test]
fn underscore_header_names_follow_the_setting() {
    let sent: &[(&str, &str)] = &[
        ("x_user_id", "mallory"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("x_request_id", "spoof"),
        ("x_real_ip", "6.6.6.6"),
        ("x_custom", "kept?"),
        ("x-plain", "1"),
    ];
    let names = |g: &Gateway| {
        let head = head_of(g, "GET", "https://h/any", sent);
        let m = g.matched_with(&head, |_, _| false).unwrap();
        let p = g.forward_plan(&m, &head, "rid", None);
        p.headers
            .into_iter()
            .filter(|(n, _)| n.contains('_') || n == "x-plain")
            .collect::<Vec<_>>()
    };
    // The default drops every `_` name before anything reads it.
    let drop = hardened(serde_json::json!({}));
    assert_eq!(names(&drop), [("x-plain".to_string(), "1".to_string())]);
    // "allow" keeps names of the client's own, never a spelling of one the gateway owns.
    let allow = hardened(serde_json::json!({ "underscores_in_headers": "allow" }));
    assert_eq!(
        names(&allow),
        [
            ("x_user_id".to_string(), "mallory".to_string()),
            ("x_custom".to_string(), "kept?".to_string()),
            ("x-plain".to_string(), "1".to_string())
        ]
    );
    // "reject" answers 400 with the gateway's JSON error.
    let reject = hardened(serde_json::json!({ "underscores_in_headers": "reject" }));
    let headers = vec![("x_user_id".to_string(), "1".to_string())];
    let refusal = reject
        .plan(
            &Incoming {
                method: "GET",
                url: "https://h/any",
                headers: &headers,
            },
            "rid",
        )
        .unwrap_err();
    assert_eq!(refusal.error.status(), 400);
    assert_eq!(refusal.error.code(), "bad_request");
    let body = refusal.error.response("rid").body;
    assert!(body.contains("underscores"), "{body}");
    let bad = serde_json::json!({ "underscores_in_headers": "sometimes" });
    let text = serde_json::json!({
        "settings": bad,
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000" }] } },
        "routes": [{ "name": "all", "path": "/{*rest}", "origin": "o" }]
    });
    let problems = Config::from_json(&text.to_string())
        .unwrap_err()
        .to_string();
    assert!(
        problems.contains("$.settings.underscores_in_headers"),
        "{problems}"
    );
}

#[test]
fn gateway_owned_headers_are_dropped_in_every_spelling() {
    let g = hardened(serde_json::json!({ "underscores_in_headers": "allow" }));
    for name in [
        "X-Forwarded-For",
        "x-forwarded-host",
        "X_FORWARDED_PROTO",
        "x_forwarded-for",
        "Forwarded",
        "X-Real-IP",
        "x_real_ip",
        "X-Request-Id",
        "x_request_id",
        "proxy_authorization",
        "Transfer_Encoding",
        "cf_connecting_ip",
        "host",
    ] {
        let head = head_of(&g, "GET", "https://h/any", &[(name, "spoof")]);
        let m = g.matched_with(&head, |_, _| false).unwrap();
        let p = g.forward_plan(&m, &head, "rid", None);
        assert!(
            !p.headers.iter().any(|(_, v)| v == "spoof"),
            "{name}: {:?}",
            p.headers
        );
    }
}

#[test]
fn ip_rules_see_every_form_of_the_client_address() {
    let g = hardened(serde_json::json!({}));
    let status = |ip: &str| {
        let head = head_of(&g, "GET", "https://h/office", &[("cf-connecting-ip", ip)]);
        g.matched_with(&head, |_, _| false)
            .map(|_| 200)
            .unwrap_or_else(|r| r.error.status())
    };
    for ip in [
        "203.0.113.9",
        "::ffff:203.0.113.9",
        "::FFFF:CB00:7109",
        "::203.0.113.9",
        "2002:cb00:7109::1",
        "64:ff9b::203.0.113.9",
    ] {
        assert_eq!(status(ip), 200, "{ip}");
    }
    for ip in [
        "198.51.100.1",
        "::ffff:198.51.100.1",
        "2001:db8::1",
        "nope",
        "",
    ] {
        assert_eq!(status(ip), 403, "{ip}");
    }
    // X-Forwarded-For carries the canonical form.
    let head = head_of(
        &g,
        "GET",
        "https://h/office",
        &[("cf-connecting-ip", "::ffff:203.0.113.9")],
    );
    let m = g.matched_with(&head, |_, _| false).unwrap();
    let p = g.forward_plan(&m, &head, "rid", None);
    assert!(p
        .headers
        .contains(&("x-forwarded-for".into(), "203.0.113.9".into())));
}

#[test]
fn the_cache_key_reads_the_query_the_origin_reads() {
    let g = hardened(serde_json::json!({}));
    let key = |url: &str, headers: &[(&str, &str)]| {
        let head = head_of(&g, "GET", url, headers);
        let m = g.matched_with(&head, |_, _| false).unwrap();
        g.forward_plan(&m, &head, "rid", None).cache.unwrap()
    };
    let plain = key("https://h/c?v=x", &[]);
    assert!(matches!(plain, CacheStep::Lookup { .. }));
    assert_eq!(key("https://h/c?%76=x", &[]), plain);
    assert_eq!(key("https://H./c?v=%78&utm=1", &[]), plain);
    assert_ne!(key("https://h/c?%76=y", &[]), plain);
    assert_ne!(key("https://h/c?v=x&%76=y", &[]), plain);
    assert_ne!(key("https://h/c?V=y", &[]), plain);
    assert_ne!(key("https://h/c", &[]), plain);
    // header values: trimmed, names in any case
    let t = key("https://h/c?v=x", &[("x-tenant", "a")]);
    assert_eq!(key("https://h/c?v=x", &[("X-Tenant", " a ")]), t);
    assert_ne!(key("https://h/c?v=x", &[("x-tenant", "b")]), t);
    assert_ne!(t, plain);
    // malformed keyed parameters: BYPASS with the reason
    assert_eq!(
        key("https://h/c?v=%zz", &[]),
        CacheStep::Bypass {
            reason: "a keyed query parameter has malformed percent-encoding"
        }
    );
    // credentials on a route keyed without claims: BYPASS
    assert_eq!(
        key("https://h/c?v=x", &[("authorization", "Bearer t")]),
        CacheStep::Bypass {
            reason: "credentials on a route keyed without claims"
        }
    );
}

/// The cache's step sequences for one cached route: MISS and store, BYPASS with its reason,
/// HIT while fresh, STALE and refresh within the window, a miss once expired.
#[test]
fn cache_labels_and_stored_entries() {
    let text = serde_json::json!({
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000" }] } },
        "routes": [{ "name": "c", "path": "/c", "origin": "o",
                     "cache": { "ttl_s": 60, "stale_while_revalidate_s": 30 } }]
    });
    let g = Gateway::new(Config::from_json(&text.to_string()).unwrap());
    let planned = |method: &str, headers: &[(&str, &str)]| {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        g.plan(
            &Incoming {
                method,
                url: "https://h/c",
                headers: &h,
            },
            "rid",
        )
        .unwrap()
    };
    let ok = vec![("content-type".to_string(), "text/plain".to_string())];
    let now = 1_000_000;
    // GET, storable: MISS, stored with the gateway's bookkeeping.
    let get = planned("GET", &[]);
    let miss = g.cache_outcome(&get, 200, &ok, now).unwrap();
    assert_eq!((miss.label, miss.reason), ("MISS", None));
    let (key, stored) = miss.store.unwrap();
    assert!(key.starts_with("https://h/.portcullis-cache/"));
    assert_eq!(cache::stored_meta(&stored), Some((now, 60)));
    // Not storable: BYPASS with the reason; HEAD: MISS, nothing stored.
    let cookie = vec![("set-cookie".to_string(), "a=1".to_string())];
    let no = g.cache_outcome(&get, 200, &cookie, now).unwrap();
    assert_eq!(
        (no.label, no.reason, no.store),
        ("BYPASS", Some("set-cookie"), None)
    );
    let no = g.cache_outcome(&get, 500, &ok, now).unwrap();
    assert_eq!(no.reason, Some("status not listed in cache.statuses"));
    let head = planned("HEAD", &[]);
    let h = g.cache_outcome(&head, 200, &ok, now).unwrap();
    assert_eq!((h.label, h.store), ("MISS", None));
    let post = planned("POST", &[]);
    assert_eq!(
        g.cache_outcome(&post, 200, &ok, now).unwrap().reason,
        Some("method")
    );
    let authed = planned("GET", &[("authorization", "Bearer x")]);
    assert_eq!(
        g.cache_outcome(&authed, 200, &ok, now).unwrap().reason,
        Some("credentials on a route keyed without claims")
    );
    // The stored entry over time.
    let at = |t: u64| {
        g.stored_use(&get, 200, &stored, t)
            .map(|u| (u.label, u.refresh))
    };
    assert_eq!(at(now), Some(("HIT", false)));
    assert_eq!(at(now + 59_999), Some(("HIT", false)));
    assert_eq!(at(now + 60_000), Some(("STALE", true)));
    assert_eq!(at(now + 89_999), Some(("STALE", true)));
    assert_eq!(at(now + 90_000), None);
    let served = g
        .stored_use(&get, 200, &stored, now + 5_000)
        .unwrap()
        .headers;
    assert!(served.contains(&("age".to_string(), "5".to_string())));
    assert!(served.contains(&("x-cache-status".to_string(), "HIT".to_string())));
    assert!(served.contains(&("x-request-id".to_string(), "rid".to_string())));
    // Something in the cache that is not the gateway's entry: a miss.
    assert_eq!(g.stored_use(&get, 200, &ok, now), None);
    // A route without cache: no outcome at all.
    let plain = serde_json::json!({
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000" }] } },
        "routes": [{ "name": "p", "path": "/c", "origin": "o" }]
    });
    let g2 = Gateway::new(Config::from_json(&plain.to_string()).unwrap());
    let p = g2
        .plan(
            &Incoming {
                method: "GET",
                url: "https://h/c",
                headers: &[],
            },
            "rid",
        )
        .unwrap();
    assert_eq!(g2.cache_outcome(&p, 200, &ok, now), None);
}

#[test]
fn rate_limit_verdicts_fail_open_only_when_the_binding_fails() {
    use crate::policy::{Limited, RateKey, RateLimit};
    let rule = RateLimit {
        binding: "RL".into(),
        key: RateKey::ClientIp,
        period_s: 10,
    };
    assert_eq!(rule.verdict(Limited::Allowed), Ok(None));
    assert_eq!(
        rule.verdict(Limited::Refused),
        Err((GatewayError::RateLimited { retry_after_s: 10 }, None))
    );
    assert_eq!(
        rule.verdict(Limited::Failed("boom".into())),
        Ok(Some("rate limit RL: boom".into())),
        "a failing binding lets the request through, with a note"
    );
    let (error, detail) = rule.verdict(Limited::Unbound).unwrap_err();
    assert_eq!(error.code(), "config_invalid");
    assert!(detail.unwrap().contains("[[ratelimits]]"));
}

#[test]
fn websocket_handshakes_pass_only_where_the_route_accepts_them() {
    let text = serde_json::json!({
        "origins": { "chat": { "servers": [{ "url": "http://127.0.0.1:9000" }] } },
        "routes": [
            { "name": "live", "path": "/live/{*rest}", "origin": "chat", "websocket": true,
              "cache": { "ttl_s": 60 } },
            { "name": "guarded", "path": "/guarded/{*rest}", "origin": "chat", "websocket": true,
              "cors": { "origins": ["https://app.example"] } },
            { "name": "plain", "path": "/plain/{*rest}", "origin": "chat" }
        ]
    });
    let g = Gateway::new(Config::from_json(&text.to_string()).unwrap());
    let run = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let url = format!("https://api.example.com{path}");
        g.plan(
            &Incoming {
                method,
                url: &url,
                headers: &headers,
            },
            "rid",
        )
    };
    let upgrade =
        |p: &ForwardPlan| crate::headers::first(&p.headers, "upgrade").map(str::to_string);
    // Every spelling of the token is one handshake; other upgrades are not WebSocket.
    for value in ["websocket", "WebSocket", "h2c, websocket", " WEBSOCKET "] {
        let p = run("GET", "/live/a", &[("upgrade", value)]).unwrap();
        assert!(p.websocket, "{value}");
        assert_eq!(upgrade(&p).as_deref(), Some("websocket"), "{value}");
        assert_eq!(
            p.cache,
            Some(CacheStep::Bypass {
                reason: "websocket"
            }),
            "{value}"
        );
        let refused = run("GET", "/plain/a", &[("Upgrade", value)]).unwrap_err();
        assert_eq!(refused.error, GatewayError::UpgradeRefused, "{value}");
        assert_eq!(refused.error.status(), 400);
    }
    // Two Upgrade headers: the token in either counts.
    let p = run(
        "GET",
        "/live/a",
        &[("upgrade", "h2c"), ("upgrade", "websocket")],
    )
    .unwrap();
    assert!(p.websocket);
    for (method, value) in [("GET", "h2c"), ("GET", "websockets"), ("POST", "websocket")] {
        let p = run(method, "/live/a", &[("upgrade", value)]).unwrap();
        assert!(!p.websocket, "{method} {value}");
        assert_eq!(
            upgrade(&p),
            None,
            "a plain request's Upgrade is hop-by-hop: {method} {value}"
        );
        let p = run(method, "/plain/a", &[("upgrade", value)]).unwrap();
        assert!(!p.websocket, "{method} {value}");
    }
    // A route with CORS checks the handshake's Origin.
    let ws = ("upgrade", "websocket");
    assert!(run(
        "GET",
        "/guarded/a",
        &[ws, ("origin", "https://app.example")]
    )
    .is_ok());
    assert!(run(
        "GET",
        "/guarded/a",
        &[ws, ("origin", "https://APP.example")]
    )
    .is_ok());
    assert!(
        run("GET", "/guarded/a", &[ws]).is_ok(),
        "no Origin: not a browser"
    );
    for origin in ["https://evil.example", "null", "https://app.example.evil"] {
        let refused = run("GET", "/guarded/a", &[ws, ("origin", origin)]).unwrap_err();
        assert_eq!(refused.error.status(), 403, "{origin}");
    }
}
