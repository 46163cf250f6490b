use serde_json::{json, Value};

use super::*;

fn base() -> Value {
    json!({
        "origins": {
            "users": { "servers": [{ "url": "https://users.internal.example:8443/internal/v1/" }], "timeout_ms": 2000 },
            "orders": { "servers": [{ "url": "http://127.0.0.1:9000" }] }
        },
        "routes": [
            { "name": "user", "path": "/api/users/{id}", "methods": ["GET", "PUT"], "origin": "users",
              "rewrite": { "path": "/v2/users/{id}" },
              "request_headers": { "set": { "x-gateway": "edge", "x-id": "{param.id}" }, "add": { "x-ip": "{client_ip}" }, "remove": ["cookie"] },
              "response_headers": { "set": { "x-route": "{route}" }, "remove": ["x-internal"] } },
            { "name": "orders", "host": "*.example.com", "path": "/api/orders/{*rest}", "origin": "orders",
              "rewrite": { "strip_prefix": "/api" } }
        ]
    })
}

/// Applies `edit` to the base config and returns the problems, or panics if it validates.
fn problems(edit: impl FnOnce(&mut Value)) -> Vec<ConfigError> {
    let mut v = base();
    edit(&mut v);
    match Config::from_json(&v.to_string()) {
        Ok(_) => panic!("config unexpectedly valid: {v:#}"),
        Err(ConfigErrors(list)) => list,
    }
}

fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match target {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => {
            let i: usize = key.parse().unwrap();
            if i == items.len() {
                items.push(value);
            } else {
                items[i] = value;
            }
        }
        _ => panic!("{parent} is not a container"),
    }
}

#[test]
fn the_base_config_is_valid() {
    let cfg = Config::from_json(&base().to_string()).unwrap();
    assert_eq!(cfg.routes.len(), 2);
    let users = &cfg.origins[cfg.routes[0].origin];
    assert_eq!(users.name, "users");
    assert_eq!(users.timeout_ms, 2000);
    assert_eq!(
        users.servers[0].base,
        "https://users.internal.example:8443/internal/v1"
    );
    assert_eq!(users.servers[0].base_path, "/internal/v1");
    assert_eq!(
        cfg.origins[cfg.routes[1].origin].timeout_ms,
        DEFAULT_TIMEOUT_MS
    );
    assert_eq!(
        cfg.routes[0].methods.as_deref(),
        Some(&["GET".to_string(), "PUT".into(), "HEAD".into()][..])
    );
    assert_eq!(
        cfg.routes[1].host,
        Some(HostPattern::Suffix(".example.com".into()))
    );
}

#[test]
fn the_shipped_routes_json_is_valid() {
    let text = include_str!("../../routes.json");
    if let Err(e) = Config::from_json(text) {
        panic!("routes.json: {e}");
    }
}

#[test]
fn every_rejection_names_its_json_path() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        // (what, edit, expected path, expected text in the message)
        (
            "not JSON",
            Box::new(|v| *v = json!("{")),
            "$",
            "invalid type",
        ),
        (
            "unknown top-level field",
            Box::new(|v| set(v, "/extra", json!(1))),
            "$.extra",
            "unknown field `extra`",
        ),
        (
            "unknown route field",
            Box::new(|v| set(v, "/routes/0/colour", json!("red"))),
            "$.routes[0].colour",
            "unknown field `colour`",
        ),
        (
            "unknown origin field",
            Box::new(|v| set(v, "/origins/users/tls", json!(true))),
            "$.origins.users.tls",
            "unknown field `tls`",
        ),
        (
            "wrong type",
            Box::new(|v| set(v, "/routes/0/methods", json!("GET"))),
            "$.routes[0].methods",
            "invalid type",
        ),
        (
            "missing routes",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("routes");
            }),
            "$",
            "missing field `routes`",
        ),
        (
            "origin with no servers",
            Box::new(|v| set(v, "/origins/users/servers", json!([]))),
            "$.origins.users.servers",
            "at least one server",
        ),
        (
            "relative server URL",
            Box::new(|v| set(v, "/origins/users/servers/0/url", json!("/users"))),
            "$.origins.users.servers[0].url",
            "not an absolute URL",
        ),
        (
            "server URL not http(s)",
            Box::new(|v| {
                set(
                    v,
                    "/origins/users/servers/0/url",
                    json!("ftp://files.example"),
                )
            }),
            "$.origins.users.servers[0].url",
            "not http or https",
        ),
        (
            "server URL with credentials",
            Box::new(|v| {
                set(
                    v,
                    "/origins/users/servers/0/url",
                    json!("https://u:p@users.example"),
                )
            }),
            "$.origins.users.servers[0].url",
            "credentials",
        ),
        (
            "server URL with a query",
            Box::new(|v| {
                set(
                    v,
                    "/origins/users/servers/0/url",
                    json!("https://users.example/?a=1"),
                )
            }),
            "$.origins.users.servers[0].url",
            "query",
        ),
        (
            "timeout of zero",
            Box::new(|v| set(v, "/origins/users/timeout_ms", json!(0))),
            "$.origins.users.timeout_ms",
            "between 1 and",
        ),
        (
            "timeout too long",
            Box::new(|v| set(v, "/origins/users/timeout_ms", json!(600_001))),
            "$.origins.users.timeout_ms",
            "between 1 and",
        ),
        (
            "unknown origin",
            Box::new(|v| set(v, "/routes/0/origin", json!("userz"))),
            "$.routes[0].origin",
            "no origin is named \"userz\"",
        ),
        (
            "duplicate route name",
            Box::new(|v| set(v, "/routes/1/name", json!("user"))),
            "$.routes[1].name",
            "already named",
        ),
        (
            "empty route name",
            Box::new(|v| set(v, "/routes/0/name", json!(""))),
            "$.routes[0].name",
            "must not be empty",
        ),
        (
            "relative path",
            Box::new(|v| set(v, "/routes/0/path", json!("api/users"))),
            "$.routes[0].path",
            "start with '/'",
        ),
        (
            "path not normalized",
            Box::new(|v| set(v, "/routes/0/path", json!("/api/./users/{id}"))),
            "$.routes[0].path",
            "normalized form",
        ),
        (
            "path with %2F",
            Box::new(|v| set(v, "/routes/0/path", json!("/api/a%2Fb"))),
            "$.routes[0].path",
            "encoded slash",
        ),
        (
            "bad matchit param",
            Box::new(|v| set(v, "/routes/1/path", json!("/api/{a}{b}"))),
            "$.routes[1].path",
            "one parameter",
        ),
        (
            "catch-all not last",
            Box::new(|v| set(v, "/routes/1/path", json!("/api/{*rest}/x"))),
            "$.routes[1].path",
            "Catch-all",
        ),
        (
            "conflicting params",
            Box::new(|v| {
                set(
                    v,
                    "/routes/1",
                    json!({"name": "u2", "path": "/api/users/{uid}", "origin": "users"}),
                )
            }),
            "$.routes[1].path",
            "conflicts with the path \"/api/users/{id}\"",
        ),
        (
            "same path, overlapping methods",
            Box::new(|v| {
                set(
                    v,
                    "/routes/1",
                    json!({"name": "u2", "path": "/api/users/{id}", "methods": ["PUT"], "origin": "users"}),
                )
            }),
            "$.routes[1].path",
            "already serves PUT",
        ),
        (
            "same path, all methods",
            Box::new(|v| {
                set(
                    v,
                    "/routes/1",
                    json!({"name": "u2", "path": "/api/users/{id}", "origin": "users"}),
                )
            }),
            "$.routes[1].path",
            "already serves every method",
        ),
        (
            "empty methods",
            Box::new(|v| set(v, "/routes/0/methods", json!([]))),
            "$.routes[0].methods",
            "must not be empty",
        ),
        (
            "lower-case method",
            Box::new(|v| set(v, "/routes/0/methods/0", json!("get"))),
            "$.routes[0].methods[0]",
            "upper-case",
        ),
        (
            "repeated method",
            Box::new(|v| set(v, "/routes/0/methods/1", json!("GET"))),
            "$.routes[0].methods[1]",
            "listed twice",
        ),
        (
            "bad host",
            Box::new(|v| set(v, "/routes/0/host", json!("https://api.example.com"))),
            "$.routes[0].host",
            "not a host name",
        ),
        (
            "host with port",
            Box::new(|v| set(v, "/routes/0/host", json!("api.example.com:443"))),
            "$.routes[0].host",
            "not a host name",
        ),
        (
            "wildcard in the middle",
            Box::new(|v| set(v, "/routes/0/host", json!("api.*.example.com"))),
            "$.routes[0].host",
            "not a host name",
        ),
        (
            "rewrite with both",
            Box::new(|v| {
                set(
                    v,
                    "/routes/0/rewrite",
                    json!({"strip_prefix": "/api", "path": "/x"}),
                )
            }),
            "$.routes[0].rewrite",
            "exactly one",
        ),
        (
            "rewrite with neither",
            Box::new(|v| set(v, "/routes/0/rewrite", json!({}))),
            "$.routes[0].rewrite",
            "exactly one",
        ),
        (
            "strip_prefix not a prefix",
            Box::new(|v| set(v, "/routes/1/rewrite", json!({"strip_prefix": "/v1"}))),
            "$.routes[1].rewrite.strip_prefix",
            "does not start with",
        ),
        (
            "strip_prefix mid-segment",
            Box::new(|v| set(v, "/routes/1/rewrite", json!({"strip_prefix": "/ap"}))),
            "$.routes[1].rewrite.strip_prefix",
            "does not start with",
        ),
        (
            "strip_prefix trailing slash",
            Box::new(|v| set(v, "/routes/1/rewrite", json!({"strip_prefix": "/api/"}))),
            "$.routes[1].rewrite.strip_prefix",
            "not a prefix",
        ),
        (
            "rewrite path unknown param",
            Box::new(|v| set(v, "/routes/0/rewrite", json!({"path": "/v2/{uid}"}))),
            "$.routes[0].rewrite.path",
            "no parameter named 'uid'",
        ),
        (
            "rewrite path relative",
            Box::new(|v| set(v, "/routes/0/rewrite", json!({"path": "v2/{id}"}))),
            "$.routes[0].rewrite.path",
            "start with '/'",
        ),
        (
            "bad header name",
            Box::new(|v| {
                set(
                    v,
                    "/routes/0/request_headers/set",
                    json!({"x gateway": "1"}),
                )
            }),
            "$.routes[0].request_headers.set[\"x gateway\"]",
            "not a valid header name",
        ),
        (
            "hop-by-hop header set",
            Box::new(|v| {
                set(
                    v,
                    "/routes/0/request_headers/set",
                    json!({"Connection": "close"}),
                )
            }),
            "$.routes[0].request_headers.set.Connection",
            "manages",
        ),
        (
            "host header set",
            Box::new(|v| set(v, "/routes/0/request_headers/add", json!({"host": "x"}))),
            "$.routes[0].request_headers.add.host",
            "manages",
        ),
        (
            "header value with CRLF",
            Box::new(|v| {
                set(
                    v,
                    "/routes/0/response_headers/set",
                    json!({"x-a": "1\r\nx-b: 2"}),
                )
            }),
            "$.routes[0].response_headers.set[\"x-a\"]",
            "control characters",
        ),
        (
            "unknown placeholder",
            Box::new(|v| set(v, "/routes/0/request_headers/set", json!({"x-a": "{nope}"}))),
            "$.routes[0].request_headers.set[\"x-a\"]",
            "unknown placeholder",
        ),
        (
            "unknown param placeholder",
            Box::new(|v| {
                set(
                    v,
                    "/routes/0/request_headers/set",
                    json!({"x-a": "{param.nope}"}),
                )
            }),
            "$.routes[0].request_headers.set[\"x-a\"]",
            "no parameter named 'nope'",
        ),
        (
            "empty claim placeholder",
            Box::new(|v| {
                set(
                    v,
                    "/routes/0/request_headers/set",
                    json!({"x-a": "{claim.}"}),
                )
            }),
            "$.routes[0].request_headers.set[\"x-a\"]",
            "unknown placeholder",
        ),
        (
            "bad header to remove",
            Box::new(|v| set(v, "/routes/0/response_headers/remove", json!(["a b"]))),
            "$.routes[0].response_headers.remove[0]",
            "not a valid header name",
        ),
        (
            "auth policy with no keys",
            Box::new(|v| set(v, "/auth", json!({"main": {"algorithms": ["RS256"]}}))),
            "$.auth.main",
            "no way to get keys",
        ),
        (
            "route naming an auth policy that does not exist",
            Box::new(|v| set(v, "/routes/0/auth", json!("main"))),
            "$.routes[0].auth",
            "no auth policy is named",
        ),
        (
            "route cache",
            Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 60}))),
            "$.routes[0].cache",
            "not supported yet",
        ),
        (
            "route cors",
            Box::new(|v| set(v, "/routes/0/cors", json!({}))),
            "$.routes[0].cors",
            "not supported yet",
        ),
        (
            "route limits",
            Box::new(|v| set(v, "/routes/0/limits", json!({}))),
            "$.routes[0].limits",
            "not supported yet",
        ),
        (
            "route allow_ips",
            Box::new(|v| set(v, "/routes/0/allow_ips", json!([]))),
            "$.routes[0].allow_ips",
            "not supported yet",
        ),
        (
            "route deny_ips",
            Box::new(|v| set(v, "/routes/0/deny_ips", json!([]))),
            "$.routes[0].deny_ips",
            "not supported yet",
        ),
        (
            "balance",
            Box::new(|v| set(v, "/origins/users/balance", json!("round_robin"))),
            "$.origins.users.balance",
            "not supported yet",
        ),
        (
            "hash_on",
            Box::new(|v| set(v, "/origins/users/hash_on", json!("client_ip"))),
            "$.origins.users.hash_on",
            "not supported yet",
        ),
        (
            "deadline_ms",
            Box::new(|v| set(v, "/origins/users/deadline_ms", json!(1000))),
            "$.origins.users.deadline_ms",
            "not supported yet",
        ),
        (
            "retry",
            Box::new(|v| set(v, "/origins/users/retry", json!({}))),
            "$.origins.users.retry",
            "not supported yet",
        ),
        (
            "eject",
            Box::new(|v| set(v, "/origins/users/eject", json!({}))),
            "$.origins.users.eject",
            "not supported yet",
        ),
        (
            "weight",
            Box::new(|v| set(v, "/origins/users/servers/0/weight", json!(2))),
            "$.origins.users.servers[0].weight",
            "not supported yet",
        ),
        (
            "backup",
            Box::new(|v| set(v, "/origins/users/servers/0/backup", json!(true))),
            "$.origins.users.servers[0].backup",
            "not supported yet",
        ),
        (
            "second server",
            Box::new(|v| {
                set(
                    v,
                    "/origins/users/servers/1",
                    json!({"url": "https://b.example"}),
                )
            }),
            "$.origins.users.servers[1]",
            "not supported yet",
        ),
    ];
    for (what, edit, path, text) in cases {
        let found = problems(edit);
        assert!(
            found
                .iter()
                .any(|p| p.path == path && p.message.contains(text)),
            "{what}: expected a problem at {path} containing {text:?}, got {found:#?}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let found = problems(|v| {
        set(v, "/routes/0/origin", json!("nope"));
        set(v, "/routes/1/path", json!("relative"));
        set(v, "/origins/orders/servers", json!([]));
    });
    let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "$.origins.orders.servers",
            "$.routes[0].origin",
            "$.routes[1].path",
            "$.routes[1].rewrite.strip_prefix"
        ]
    );
}

#[test]
fn errors_print_path_message_and_hint() {
    let found = problems(|v| set(v, "/routes/0/origin", json!("nope")));
    let text = ConfigErrors(found).to_string();
    assert!(text.contains("$.routes[0].origin: no origin is named \"nope\" (hint: define it under $.origins; defined: orders, users)"), "{text}");
}

#[test]
fn json_paths_quote_keys_that_are_not_identifiers() {
    assert_eq!(key_path("$", "users"), "$.users");
    assert_eq!(key_path("$.origins", "users-eu"), "$.origins[\"users-eu\"]");
    assert_eq!(key_path("$.h", "a\"b"), "$.h[\"a\\\"b\"]");
}

#[test]
fn path_params_are_listed() {
    assert_eq!(path_params("/a/{id}/b/{*rest}"), ["id", "rest"]);
    assert_eq!(path_params("/img-{n}.png"), ["n"]);
    assert_eq!(path_params("/{{literal}}"), Vec::<String>::new());
}
