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
#[rustfmt::skip]
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
            "compress is not a boolean",
            Box::new(|v| set(v, "/routes/0/compress", json!("no"))),
            "$.routes[0].compress",
            "invalid type",
        ),
        (
            "compress as a number",
            Box::new(|v| set(v, "/routes/0/compress", json!(0))),
            "$.routes[0].compress",
            "invalid type",
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
            "a binding that is not a binding name",
            Box::new(|v| set(v, "/origins/users/servers/0", json!({ "binding": "users-api" }))),
            "$.origins.users.servers[0].binding",
            "not a binding name",
        ),
        (
            "a server with neither url nor binding",
            Box::new(|v| set(v, "/origins/users/servers/0", json!({ "weight": 2 }))),
            "$.origins.users.servers[0].url",
            "needs a url, or a binding",
        ),
        (
            "a binding server with an mTLS certificate",
            Box::new(|v| {
                set(v, "/origins/users/servers/0", json!({ "binding": "USERS", "mtls_certificate": "CERT" }))
            }),
            "$.origins.users.servers[0].mtls_certificate",
            "cannot have an mTLS certificate",
        ),
        (
            "a pool's mTLS certificate that is not a binding name",
            Box::new(|v| set(v, "/origins/users/mtls_certificate", json!("my cert"))),
            "$.origins.users.mtls_certificate",
            "not a binding name",
        ),
        (
            "a secret in a response header",
            Box::new(|v| {
                set(v, "/routes/0/response_headers", json!({ "set": { "x-a": "{secret.KEY}" } }))
            }),
            "$.routes[0].response_headers.set[\"x-a\"]",
            "only in request_headers",
        ),
        (
            "websocket without GET",
            Box::new(|v| {
                set(v, "/routes/0/websocket", json!(true));
                set(v, "/routes/0/methods", json!(["POST"]));
            }),
            "$.routes[0].websocket",
            "does not allow GET",
        ),
        (
            "websocket not a boolean",
            Box::new(|v| set(v, "/routes/0/websocket", json!("yes"))),
            "$.routes[0].websocket",
            "boolean",
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
            "no auth policy or sso entry is named",
        ),
        ("unknown balance", Box::new(|v| set(v, "/origins/users/balance", json!("fastest"))), "$.origins.users.balance", "unknown balance"),
        ("hash without hash_on", Box::new(|v| set(v, "/origins/users/balance", json!("hash"))), "$.origins.users.hash_on", "needs hash_on"),
        ("hash_on without hash", Box::new(|v| set(v, "/origins/users/hash_on", json!("client_ip"))), "$.origins.users.hash_on", "only with balance"),
        ("bad hash_on", Box::new(|v| { set(v, "/origins/users/balance", json!("hash")); set(v, "/origins/users/hash_on", json!("body")); }), "$.origins.users.hash_on", "not a value to hash on"),
        ("hash on an empty claim", Box::new(|v| { set(v, "/origins/users/balance", json!("hash")); set(v, "/origins/users/hash_on", json!("claim:")); }), "$.origins.users.hash_on", "not a value to hash on"),
        ("deadline below timeout", Box::new(|v| set(v, "/origins/users/deadline_ms", json!(1000))), "$.origins.users.deadline_ms", "shorter than timeout_ms"),
        ("retry attempts zero", Box::new(|v| set(v, "/origins/users/retry", json!({"attempts": 0}))), "$.origins.users.retry.attempts", "between 1 and 10"),
        ("retry on nonsense", Box::new(|v| set(v, "/origins/users/retry", json!({"on": ["connect", "sometimes"]}))), "$.origins.users.retry.on[1]", "not a failure to retry on"),
        ("retry on a 2xx", Box::new(|v| set(v, "/origins/users/retry", json!({"on": [200]}))), "$.origins.users.retry.on[0]", "not a failure to retry on"),
        ("unknown retry field", Box::new(|v| set(v, "/origins/users/retry", json!({"tries": 2}))), "$.origins.users.retry.tries", "unknown field"),
        ("eject max below for", Box::new(|v| set(v, "/origins/users/eject", json!({"for_ms": 5000, "max_for_ms": 1000}))), "$.origins.users.eject.max_for_ms", "between 5000"),
        ("weight zero", Box::new(|v| set(v, "/origins/users/servers/0/weight", json!(0))), "$.origins.users.servers[0].weight", "between 1 and 1000"),
        ("only backups", Box::new(|v| set(v, "/origins/users/servers/0/backup", json!(true))), "$.origins.users.servers", "every server is a backup"),
        ("cors * with credentials", Box::new(|v| set(v, "/routes/0/cors", json!({"origins": ["*"], "credentials": true}))), "$.routes[0].cors.origins[0]", "credentials"),
        ("cors bad origin", Box::new(|v| set(v, "/routes/0/cors", json!({"origins": ["app.example.com"]}))), "$.routes[0].cors.origins[0]", "not an origin"),
        ("cors no origins", Box::new(|v| set(v, "/routes/0/cors", json!({"origins": []}))), "$.routes[0].cors.origins", "at least one origin"),
        ("cors bad header", Box::new(|v| set(v, "/routes/0/cors", json!({"origins": ["https://a.example"], "headers": ["a b"]}))), "$.routes[0].cors.headers[0]", "not a valid header name"),
        ("cors max_age", Box::new(|v| set(v, "/routes/0/cors", json!({"origins": ["https://a.example"], "max_age_s": 100000}))), "$.routes[0].cors.max_age_s", "between 0 and 86400"),
        ("malformed CIDR", Box::new(|v| set(v, "/routes/0/allow_ips", json!(["10.0.0.0/33"]))), "$.routes[0].allow_ips[0]", "prefix length"),
        ("CIDR host bits", Box::new(|v| set(v, "/routes/0/deny_ips", json!(["10.0.0.1/8"]))), "$.routes[0].deny_ips[0]", "bits set"),
        ("empty allow list", Box::new(|v| set(v, "/routes/0/allow_ips", json!([]))), "$.routes[0].allow_ips", "refuse everyone"),
        ("body limit too large", Box::new(|v| set(v, "/routes/0/limits", json!({"max_body_bytes": 1u64 << 40}))), "$.routes[0].limits.max_body_bytes", "at most"),
        ("rate limit bad key", Box::new(|v| set(v, "/routes/0/rate_limit", json!({"binding": "RL", "key": "ip"}))), "$.routes[0].rate_limit.key", "not a rate-limit key"),
        ("rate limit claim key without auth", Box::new(|v| set(v, "/routes/0/rate_limit", json!({"binding": "RL", "key": "claim:sub"}))), "$.routes[0].rate_limit.key", "needs a route with auth"),
        ("rate limit period", Box::new(|v| set(v, "/routes/0/rate_limit", json!({"binding": "RL", "key": "route", "period_s": 30}))), "$.routes[0].rate_limit.period_s", "10 or 60"),
        ("rate limit binding", Box::new(|v| set(v, "/routes/0/rate_limit", json!({"binding": "my-rl", "key": "route"}))), "$.routes[0].rate_limit.binding", "not a binding name"),
        ("settings lower-case method", Box::new(|v| set(v, "/settings", json!({"methods": ["get"]}))), "$.settings.methods[0]", "upper-case"),
        ("settings url limit", Box::new(|v| set(v, "/settings", json!({"max_url_bytes": 10}))), "$.settings.max_url_bytes", "between 256"),
        ("settings security headers", Box::new(|v| set(v, "/settings", json!({"security_headers": true}))), "$.settings.security_headers", "false or an object"),
        ("route security header name", Box::new(|v| set(v, "/routes/0/security_headers", json!({"connection": "x"}))), "$.routes[0].security_headers.connection", "manages"),
        ("unknown settings field", Box::new(|v| set(v, "/settings", json!({"max_body": 1}))), "$.settings.max_body", "unknown field"),
        ("cache ttl zero", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 0}))), "$.routes[0].cache.ttl_s", "between 1"),
        ("cache without ttl", Box::new(|v| set(v, "/routes/0/cache", json!({}))), "$.routes[0].cache", "missing field `ttl_s`"),
        ("cache bad status", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 5, "statuses": [100]}))), "$.routes[0].cache.statuses[0]", "not a status"),
        ("cache swr too long", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 5, "stale_while_revalidate_s": 100000}))), "$.routes[0].cache.stale_while_revalidate_s", "between 0 and 86400"),
        ("cache stale-if-error too long", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 5, "stale_if_error_s": 604801}))), "$.routes[0].cache.stale_if_error_s", "between 0 and 604800"),
        ("cache key header", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 5, "key": {"headers": ["a b"]}}))), "$.routes[0].cache.key.headers[0]", "not a valid header name"),
        ("cache key query", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 5, "key": {"query": ["a=b"]}}))), "$.routes[0].cache.key.query[0]", "not a query parameter name"),
        ("cache key claims without auth", Box::new(|v| set(v, "/routes/0/cache", json!({"ttl_s": 5, "key": {"claims": ["sub"]}}))), "$.routes[0].cache.key.claims", "needs a route with auth"),
        ("cached auth route without claims", Box::new(|v| {
            set(v, "/auth", json!({"main": {"algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET"}}));
            set(v, "/routes/0/auth", json!("main"));
            set(v, "/routes/0/cache", json!({"ttl_s": 5, "key": {"headers": ["accept"]}}));
        }), "$.routes[0].cache.key.claims", "identify the caller"),
        ("admin path", Box::new(|v| set(v, "/admin", json!({"path": "/admin/", "token_env": "T"}))), "$.admin.path", "not an admin path prefix"),
        ("admin token env", Box::new(|v| set(v, "/admin", json!({"path": "/_admin", "token_env": "my-token"}))), "$.admin.token_env", "not a Worker secret name"),
        ("route inside admin", Box::new(|v| set(v, "/admin", json!({"path": "/api", "token_env": "T"}))), "$.routes[0].path", "inside the admin path"),
        ("backup not a bool", Box::new(|v| set(v, "/origins/users/servers/0/backup", json!("yes"))), "$.origins.users.servers[0].backup", "invalid type"),
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
fn a_full_origin_is_read() {
    let mut v = base();
    set(
        &mut v,
        "/origins/users",
        json!({
            "servers": [
                { "url": "https://a.internal.example", "weight": 3 },
                { "url": "https://b.internal.example" },
                { "url": "https://dr.example", "backup": true }
            ],
            "balance": "hash", "hash_on": "header:X-Tenant",
            "timeout_ms": 1000, "deadline_ms": 2500,
            "retry": { "attempts": 2, "on": ["connect", 503], "non_idempotent": true, "replay_body_bytes": 2048 },
            "eject": { "after_failures": 5, "for_ms": 1000 }
        }),
    );
    let cfg = Config::from_json(&v.to_string()).unwrap();
    let o = cfg.origins.iter().find(|o| o.name == "users").unwrap();
    assert_eq!(o.balance, Balance::Hash(HashOn::Header("x-tenant".into())));
    let servers: Vec<(u32, bool)> = o.servers.iter().map(|s| (s.weight, s.backup)).collect();
    assert_eq!(servers, [(3, false), (1, false), (1, true)]);
    assert_eq!((o.timeout_ms, o.deadline_ms), (1000, 2500));
    let want = RetryPolicy {
        attempts: 2,
        on_connect: true,
        on_timeout: false,
        on_statuses: vec![503],
        non_idempotent: true,
        replay_body_bytes: 2048,
    };
    assert_eq!(o.retry, want);
    assert_eq!(
        o.eject,
        EjectPolicy {
            after_failures: 5,
            for_ms: 1000,
            max_for_ms: 300_000
        }
    );
    for (balance, want) in [
        ("round_robin", Balance::RoundRobin),
        ("random", Balance::Random),
        ("first", Balance::First),
    ] {
        set(&mut v, "/origins/users/balance", json!(balance));
        v.pointer_mut("/origins/users")
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove("hash_on");
        let cfg = Config::from_json(&v.to_string()).unwrap();
        assert_eq!(
            cfg.origins
                .iter()
                .find(|o| o.name == "users")
                .unwrap()
                .balance,
            want
        );
    }
}

/// `timeout_ms` and `deadline_ms`: a field left out follows the other one, so only two explicit
/// values can conflict.
#[test]
fn an_unset_timeout_or_deadline_follows_the_other() {
    let read = |timeout: Option<u64>, deadline: Option<u64>| {
        let mut v = base();
        if let Some(t) = timeout {
            set(&mut v, "/origins/orders/timeout_ms", json!(t));
        }
        if let Some(d) = deadline {
            set(&mut v, "/origins/orders/deadline_ms", json!(d));
        }
        Config::from_json(&v.to_string()).map(|cfg| {
            let o = cfg.origins.iter().find(|o| o.name == "orders").unwrap();
            (o.timeout_ms, o.deadline_ms)
        })
    };
    // (timeout_ms, deadline_ms) as written, and as read
    let accepted = [
        (None, None, (DEFAULT_TIMEOUT_MS, DEFAULT_DEADLINE_MS)),
        (None, Some(5000), (5000, 5000)),
        (None, Some(1), (1, 1)),
        (None, Some(20_000), (DEFAULT_TIMEOUT_MS, 20_000)),
        (Some(2000), None, (2000, DEFAULT_DEADLINE_MS)),
        (Some(40_000), None, (40_000, 40_000)),
        (Some(1000), Some(1000), (1000, 1000)),
    ];
    for (timeout, deadline, want) in accepted {
        match read(timeout, deadline) {
            Ok(got) => assert_eq!(got, want, "timeout {timeout:?}, deadline {deadline:?}"),
            Err(e) => panic!("timeout {timeout:?}, deadline {deadline:?}: {e}"),
        }
    }

    // (timeout, deadline, the one path with a problem, its message)
    let refused: [(u64, u64, &str, &str); 4] = [
        (
            5000,
            1000,
            "deadline_ms",
            "deadline_ms (1000) is shorter than timeout_ms (5000)",
        ),
        (
            15_000,
            5000,
            "deadline_ms",
            "deadline_ms (5000) is shorter than timeout_ms (15000)",
        ),
        // A value out of range is reported alone, not again as a conflict with the other.
        (40_000, 0, "deadline_ms", "must be between 1 and 600000"),
        (0, 1000, "timeout_ms", "must be between 1 and 600000"),
    ];
    for (timeout, deadline, field, message) in refused {
        let found = match read(Some(timeout), Some(deadline)) {
            Ok(got) => panic!("timeout {timeout}, deadline {deadline}: accepted as {got:?}"),
            Err(ConfigErrors(list)) => list,
        };
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        let path = format!("$.origins.orders.{field}");
        assert_eq!(
            got,
            [(path.as_str(), message)],
            "timeout {timeout}, deadline {deadline}"
        );
    }
}

#[test]
fn edge_policy_is_read_with_defaults() {
    let cfg = Config::from_json(&base().to_string()).unwrap();
    assert_eq!(cfg.settings, Settings::default());
    assert!(!cfg
        .settings
        .methods
        .iter()
        .any(|m| m == "TRACE" || m == "CONNECT"));
    assert_eq!(cfg.settings.security_headers.len(), 3);
    let mut v = base();
    set(
        &mut v,
        "/settings",
        json!({"methods": ["GET", "TRACE"], "security_headers": false, "max_header_bytes": 4096}),
    );
    set(
        &mut v,
        "/routes/0/cors",
        json!({"origins": ["https://app.example.com"], "credentials": true}),
    );
    set(&mut v, "/routes/0/limits", json!({"max_body_bytes": 1024}));
    set(&mut v, "/routes/0/allow_ips", json!(["203.0.113.0/24"]));
    set(
        &mut v,
        "/routes/0/rate_limit",
        json!({"binding": "RL", "key": "header:X-Key", "period_s": 10}),
    );
    let cfg = Config::from_json(&v.to_string()).unwrap();
    assert_eq!(cfg.settings.methods, ["GET", "TRACE"]);
    assert!(cfg.settings.security_headers.is_empty());
    assert_eq!(cfg.settings.limits.max_header_bytes, 4096);
    let p = &cfg.routes[0].policy;
    let cors = p.cors.as_ref().unwrap();
    assert_eq!(
        cors.methods,
        ["GET", "PUT"],
        "CORS methods default to the route's, without HEAD"
    );
    assert_eq!(cors.max_age_s, 600);
    assert_eq!(p.max_body_bytes, Some(1024));
    assert!(
        p.ip_rules.allows("203.0.113.1".parse().ok())
            && !p.ip_rules.allows("198.51.100.1".parse().ok())
    );
    let rl = p.rate_limit.as_ref().unwrap();
    assert_eq!((rl.binding.as_str(), rl.period_s), ("RL", 10));
    assert_eq!(rl.key, crate::policy::RateKey::Header("x-key".into()));
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

#[test]
fn compress_is_on_unless_a_route_turns_it_off() {
    let cfg = json!({
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000" }] } },
        "routes": [
            { "name": "a", "path": "/a", "origin": "o" },
            { "name": "b", "path": "/b", "origin": "o", "compress": false },
            { "name": "c", "path": "/c", "origin": "o", "compress": true }
        ]
    });
    let c = Config::from_json(&cfg.to_string()).unwrap();
    let on: Vec<bool> = c.routes.iter().map(|r| r.compress.enabled).collect();
    assert_eq!(on, [true, false, true]);
}
