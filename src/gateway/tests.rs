use super::*;
use crate::config::Config;

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
