//! The step sequences of each kind of request, driven by a test driver that plays the runtime's
//! part (secrets, auth, the rate limiter, the cache, the origin), asserting every step asked for,
//! what the client got and the log line.

use super::*;
use crate::config::Config;
use serde_json::{json, Value};

fn gateway() -> Gateway {
    let cfg = json!({
        "admin": { "path": "/_portcullis", "token_env": "ADMIN_TOKEN" },
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000" }],
                            "retry": { "on": ["connect", "timeout", 503] } } },
        "auth": { "main": { "algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET",
                            "forward_claims": { "sub": "x-user-id" } } },
        "routes": [
            { "name": "public", "path": "/pub", "origin": "o" },
            { "name": "token", "path": "/tok", "origin": "o", "auth": "main" },
            { "name": "cached", "path": "/c", "origin": "o",
              "cache": { "ttl_s": 60, "stale_while_revalidate_s": 30 } },
            { "name": "sie", "path": "/sie", "origin": "o",
              "cache": { "ttl_s": 60, "stale_while_revalidate_s": 30, "stale_if_error_s": 120 } },
            { "name": "limited", "path": "/rl", "origin": "o",
              "rate_limit": { "binding": "RL", "key": "route", "period_s": 10 } },
            { "name": "office", "path": "/office", "origin": "o", "allow_ips": ["203.0.113.0/24"] },
            { "name": "cors", "path": "/cors", "origin": "o",
              "cors": { "origins": ["https://app.example"] } },
            { "name": "live", "path": "/live", "origin": "o", "websocket": true, "auth": "main" }
        ]
    });
    Gateway::new(Config::from_json(&cfg.to_string()).unwrap())
}

/// What the test driver's runtime answers.
struct Runtime {
    admin_secret: &'static str,
    auth: fn() -> AuthResult,
    limit: fn() -> Limited,
    /// The cache's entry for any key: stored at this time (ms), if any.
    stored_at: Option<u64>,
    /// The origin's `cache-control` on the stored entry.
    stored_cc: Option<&'static str>,
    origin: fn() -> Forwarded,
    now_ms: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            admin_secret: "s3cret-admin",
            auth: || AuthResult {
                identity: Some(Identity::from_claims(
                    [("sub".to_string(), json!("alice"))].into_iter().collect(),
                    2_000_000_000,
                    &[("sub".into(), "x-user-id".into())],
                )),
                log: Some(AuthLog {
                    outcome: "verified",
                    reason: None,
                    kid: None,
                    iss: None,
                }),
                ..Default::default()
            },
            limit: || Limited::Allowed,
            stored_at: None,
            stored_cc: None,
            origin: || {
                Ok((
                    200,
                    vec![
                        ("content-type".into(), "text/plain".into()),
                        ("server".into(), "origin/1".into()),
                    ],
                ))
            },
            now_ms: 1_000_000,
        }
    }
}

/// How the exchange ended for the client.
#[derive(Debug, PartialEq, Eq)]
struct End {
    steps: Vec<&'static str>,
    status: u16,
    headers: HeaderList,
    log: Value,
}

fn run(g: &Gateway, method: &str, url: &str, headers: &[(&str, &str)], rt: &Runtime) -> End {
    let headers: HeaderList = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let req = Incoming {
        method,
        url,
        headers: &headers,
    };
    let mut ex = Exchange::new(g, &req, "rid", |_, _| false);
    let mut steps = Vec::new();
    for _ in 0..20 {
        let step = ex.poll();
        let (name, end) = match step {
            Step::AdminSecret(_) => ("admin_secret", None),
            Step::Purge(_) => ("purge", None),
            Step::Sso { .. } => ("sso", None),
            Step::Authenticate { .. } => ("authenticate", None),
            Step::Mint { .. } => ("mint", None),
            Step::RateLimit { .. } => ("rate_limit", None),
            Step::Lookup { .. } => ("lookup", None),
            Step::Forward(_) => ("forward", None),
            Step::Answer(a) => ("answer", Some((a.status, a.headers.clone()))),
            Step::ServeStored { headers, .. } => ("serve_stored", Some((200, headers.clone()))),
            Step::Respond {
                status, headers, ..
            } => ("respond", Some((status, headers.clone()))),
        };
        steps.push(name);
        if let Some((status, headers)) = end {
            let log = serde_json::from_str(&ex.log_line(status, 3)).unwrap();
            return End {
                steps,
                status,
                headers,
                log,
            };
        }
        match name {
            "admin_secret" => ex.admin_secret(rt.admin_secret),
            "purge" => ex.purged(true),
            "sso" => ex.answered(Answer::redirect(
                "https://id.example/authorize".into(),
                Vec::new(),
                AuthLog {
                    outcome: "login",
                    reason: None,
                    kid: None,
                    iss: None,
                },
            )),
            "authenticate" => ex.authenticated((rt.auth)()),
            "mint" => ex.minted(Ok(Some("minted".into()))),
            "rate_limit" => ex.limited((rt.limit)()),
            "lookup" => {
                let mut origin: HeaderList = vec![("content-type".into(), "text/plain".into())];
                if let Some(cc) = rt.stored_cc {
                    origin.push(("cache-control".into(), cc.into()));
                }
                let stored = rt
                    .stored_at
                    .map(|at| crate::cache::stored_headers(&origin, 60, 120, at));
                ex.looked_up(stored.as_deref().map(|s| (200, s)), rt.now_ms)
            }
            "forward" => ex.forwarded((rt.origin)(), Vec::new(), rt.now_ms),
            _ => unreachable!(),
        }
    }
    panic!("no answer after 20 steps: {steps:?}");
}

fn header<'a>(end: &'a End, name: &str) -> Option<&'a str> {
    crate::headers::first(&end.headers, name)
}

#[test]
fn the_steps_of_each_kind_of_request() {
    let g = gateway();
    let rt = Runtime::default();
    let bearer = [("authorization", "Bearer a.b.c")];
    let token = [("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln")];
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        u16,
    );
    let cases: &[Case] = &[
        (
            "public",
            "GET",
            "https://h/pub",
            &[],
            &["forward", "respond"],
            200,
        ),
        (
            "token (with an admin path, any bearer is first compared with the admin's)",
            "GET",
            "https://h/tok",
            &token,
            &["admin_secret", "authenticate", "forward", "respond"],
            200,
        ),
        (
            "no token: refused before any step",
            "GET",
            "https://h/tok",
            &[],
            &["answer"],
            401,
        ),
        (
            "cached, nothing stored: MISS",
            "GET",
            "https://h/c",
            &[],
            &["lookup", "forward", "respond"],
            200,
        ),
        (
            "rate limited route",
            "GET",
            "https://h/rl",
            &[],
            &["rate_limit", "forward", "respond"],
            200,
        ),
        (
            "no route",
            "GET",
            "https://h/nothing",
            &[],
            &["answer"],
            404,
        ),
        (
            "a malformed path",
            "GET",
            "https://h/a%2Fb",
            &[],
            &["answer"],
            400,
        ),
        (
            "a method no route takes",
            "TRACE",
            "https://h/pub",
            &[],
            &["answer"],
            405,
        ),
        (
            "an address the route refuses",
            "GET",
            "https://h/office",
            &[],
            &["answer"],
            403,
        ),
        (
            "the admin path: the secret, then the purge",
            "DELETE",
            "https://h/_portcullis/cache?url=https%3A%2F%2Fh%2Fc",
            &[("authorization", "Bearer s3cret-admin")],
            &["admin_secret", "purge", "answer"],
            200,
        ),
        (
            "the admin path, wrong credential",
            "DELETE",
            "https://h/_portcullis/cache?url=x",
            &bearer,
            &["admin_secret", "answer"],
            404,
        ),
        (
            "the admin credential elsewhere",
            "GET",
            "https://h/pub",
            &[("authorization", "Bearer s3cret-admin")],
            &["admin_secret", "answer"],
            404,
        ),
        (
            "another bearer elsewhere: forwarded",
            "GET",
            "https://h/pub",
            &bearer,
            &["admin_secret", "forward", "respond"],
            200,
        ),
        (
            "a CORS preflight answered at the edge",
            "OPTIONS",
            "https://h/cors",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
            &["answer"],
            204,
        ),
    ];
    for (name, method, url, headers, steps, status) in cases {
        let end = run(&g, method, url, headers, &rt);
        assert_eq!(
            (end.steps.as_slice(), end.status),
            (*steps, *status),
            "{name}: {:?}",
            end.log
        );
        assert_eq!(end.log["status"], *status, "{name}");
        assert_eq!(end.log["request_id"], "rid", "{name}");
    }
}

#[test]
fn what_the_client_and_the_log_get() {
    let g = gateway();
    // Public: the origin's revealing headers dropped, the request id set; the log names the
    // route and path.
    let end = run(&g, "GET", "https://h//pub", &[], &Runtime::default());
    assert_eq!(header(&end, "server"), None);
    assert_eq!(header(&end, "x-request-id"), Some("rid"));
    assert_eq!(
        (&end.log["route"], &end.log["path"]),
        (&json!("public"), &json!("/pub"))
    );
    // Token: the verified identity's log.
    let end = run(
        &g,
        "GET",
        "https://h/tok",
        &[("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln")],
        &Runtime::default(),
    );
    assert_eq!(end.log["auth"]["outcome"], "verified");
    // Refused by auth: the refusal's log and the JSON error.
    let rt = Runtime {
        auth: || AuthResult {
            error: Some(AuthError::BadSignature),
            ..Default::default()
        },
        ..Default::default()
    };
    let end = run(
        &g,
        "GET",
        "https://h/tok",
        &[("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln")],
        &rt,
    );
    assert_eq!(
        (end.status, &end.log["error"]),
        (401, &json!("unauthorized"))
    );
    assert_eq!(end.log["route"], "token");
    // No token: refused before a key was needed, and the log says so.
    let end = run(&g, "GET", "https://h/tok", &[], &Runtime::default());
    assert_eq!(end.log["auth"]["outcome"], "refused");
    assert_eq!(end.log["auth"]["reason"], "missing_token");
    // The admin credential on another path: 404, logged as the admin's, not forwarded.
    let end = run(
        &g,
        "GET",
        "https://h/pub",
        &[("authorization", "Bearer s3cret-admin")],
        &Runtime::default(),
    );
    assert_eq!(end.log["route"], "admin");
    assert!(end.log["detail"]
        .as_str()
        .unwrap()
        .contains("not forwarded"));
    // The admin secret not set: 404, and the log says which secret.
    let rt = Runtime {
        admin_secret: "",
        ..Default::default()
    };
    let end = run(&g, "DELETE", "https://h/_portcullis/cache?url=x", &[], &rt);
    assert_eq!(end.status, 404);
    assert!(end.log["detail"].as_str().unwrap().contains("ADMIN_TOKEN"));
}

#[test]
fn cache_hit_stale_and_expired() {
    let g = gateway();
    let now = 1_000_000;
    let at = |stored_at| Runtime {
        stored_at: Some(stored_at),
        now_ms: now,
        ..Default::default()
    };
    let hit = run(&g, "GET", "https://h/c", &[], &at(now - 1_000));
    assert_eq!(hit.steps, ["lookup", "serve_stored"]);
    assert_eq!(header(&hit, "x-cache-status"), Some("HIT"));
    assert_eq!(hit.log["cache"], "HIT");
    let stale = run(&g, "GET", "https://h/c", &[], &at(now - 70_000));
    assert_eq!(stale.steps, ["lookup", "serve_stored"]);
    assert_eq!(header(&stale, "x-cache-status"), Some("STALE"));
    let expired = run(&g, "GET", "https://h/c", &[], &at(now - 100_000));
    assert_eq!(expired.steps, ["lookup", "forward", "respond"]);
    assert_eq!(header(&expired, "x-cache-status"), Some("MISS"));
    assert_eq!(expired.log["cache"], "MISS");
    // Credentials on a route keyed without claims: no lookup at all, BYPASS with the reason.
    let bypass = run(
        &g,
        "GET",
        "https://h/c",
        &[("cookie", "a=1"), ("authorization", "Basic eDp5")],
        &at(now - 1_000),
    );
    assert_eq!(bypass.steps, ["admin_secret", "forward", "respond"]);
    assert_eq!(bypass.log["cache"], "BYPASS");
    assert_eq!(
        bypass.log["cache_reason"],
        "credentials on a route keyed without claims"
    );
}

#[test]
fn origins_that_fail_and_rate_limits() {
    let g = gateway();
    let down = Runtime {
        origin: || Err((GatewayError::OriginUnavailable, "connection refused".into())),
        ..Default::default()
    };
    let end = run(&g, "GET", "https://h/pub", &[], &down);
    assert_eq!(
        (end.steps.as_slice(), end.status),
        (&["forward", "answer"][..], 502)
    );
    assert_eq!(end.log["error"], "origin_unavailable");
    assert_eq!(end.log["detail"], "connection refused");
    let slow = Runtime {
        origin: || {
            Err((
                GatewayError::OriginTimeout,
                "no response headers within 300 ms".into(),
            ))
        },
        ..Default::default()
    };
    assert_eq!(run(&g, "GET", "https://h/pub", &[], &slow).status, 504);
    let refused = Runtime {
        limit: || Limited::Refused,
        ..Default::default()
    };
    let end = run(&g, "GET", "https://h/rl", &[], &refused);
    assert_eq!(
        (end.steps.as_slice(), end.status),
        (&["rate_limit", "answer"][..], 429)
    );
    assert_eq!(header(&end, "retry-after"), Some("10"));
    let failing = Runtime {
        limit: || Limited::Failed("boom".into()),
        ..Default::default()
    };
    let end = run(&g, "GET", "https://h/rl", &[], &failing);
    assert_eq!(
        end.status, 200,
        "a failing binding lets the request through"
    );
    assert_eq!(end.log["detail"], "rate limit RL: boom");
    let unbound = Runtime {
        limit: || Limited::Unbound,
        ..Default::default()
    };
    let end = run(&g, "GET", "https://h/rl", &[], &unbound);
    assert_eq!(
        (end.status, &end.log["error"]),
        (500, &json!("config_invalid"))
    );
}

#[test]
fn a_step_without_its_result_is_a_500_not_a_hang() {
    let g = gateway();
    let headers: HeaderList = Vec::new();
    let req = Incoming {
        method: "GET",
        url: "https://h/pub",
        headers: &headers,
    };
    let mut ex = Exchange::new(&g, &req, "rid", |_, _| false);
    assert!(matches!(ex.poll(), Step::Forward(_)));
    // The driver answers another step's method: ignored; the exchange still waits for it.
    ex.limited(Limited::Allowed);
    assert!(matches!(ex.poll(), Step::Forward(_)));
}

#[test]
fn sessions_become_identities_anonymous_callers_or_refusals() {
    let id = Identity::from_claims(
        [("sub".to_string(), json!("u1"))].into_iter().collect(),
        2_000_000_000,
        &[],
    );
    let ok = AuthResult::of_session(Ok(id.clone()), false);
    assert_eq!(
        (ok.identity.is_some(), ok.log.unwrap().outcome),
        (true, "session")
    );
    let none = || Err((AuthError::NoSession("no cookie"), None));
    let anon = AuthResult::of_session(none(), true);
    assert!(anon.identity.is_none() && anon.error.is_none());
    assert_eq!(anon.log.unwrap().outcome, "anonymous");
    let refused = AuthResult::of_session(none(), false);
    assert_eq!(refused.error, Some(AuthError::NoSession("no cookie")));
    assert_eq!(refused.log.unwrap().outcome, "refused");
}

#[test]
fn websocket_handshakes_are_guarded_forwarded_and_logged() {
    let g = gateway();
    let ws = [
        ("upgrade", "websocket"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
    ];
    let switching = Runtime {
        origin: || Ok((101, vec![("sec-websocket-protocol".into(), "chat".into())])),
        ..Default::default()
    };
    let end = run(&g, "GET", "https://api.example.com/live", &ws, &switching);
    assert_eq!(
        end.steps,
        ["admin_secret", "authenticate", "forward", "respond"]
    );
    assert_eq!(end.status, 101);
    assert_eq!(header(&end, "sec-websocket-protocol"), Some("chat"));
    assert_eq!(end.log["upgrade"], "websocket");
    // Auth refuses before any origin is asked.
    let end = run(
        &g,
        "GET",
        "https://api.example.com/live",
        &[("upgrade", "websocket")],
        &switching,
    );
    assert_eq!(
        (end.steps.as_slice(), end.status),
        (["answer"].as_slice(), 401)
    );
    assert_eq!(end.log["upgrade"], "websocket");
    // A route without `websocket`: 400, logged as the refused upgrade it was.
    let end = run(
        &g,
        "GET",
        "https://api.example.com/pub",
        &[("upgrade", "websocket")],
        &switching,
    );
    assert_eq!(
        (end.steps.as_slice(), end.status),
        (["answer"].as_slice(), 400)
    );
    assert_eq!(end.log["error"], "bad_request");
    assert_eq!(end.log["upgrade"], "websocket");
    // A plain request logs no upgrade.
    let end = run(
        &g,
        "GET",
        "https://api.example.com/pub",
        &[],
        &Runtime::default(),
    );
    assert!(end.log.get("upgrade").is_none(), "{}", end.log);
}

#[test]
fn stale_if_error_answers_with_the_kept_entry_when_every_attempt_failed() {
    let g = gateway();
    let now = 1_000_000;
    let down: fn() -> Forwarded =
        || Err((GatewayError::OriginUnavailable, "connection refused".into()));
    let slow: fn() -> Forwarded = || Err((GatewayError::OriginTimeout, "no headers".into()));
    let busy: fn() -> Forwarded = || Ok((503, vec![("retry-after".into(), "5".into())]));
    let teapot: fn() -> Forwarded = || Ok((418, Vec::new()));
    let up = Runtime::default().origin;
    // (case, path, stored this long ago (s), the origin's cache-control on it, the origin,
    //  the steps, status, x-cache-status)
    type Case = (
        &'static str,
        &'static str,
        u64,
        Option<&'static str>,
        fn() -> Forwarded,
        &'static [&'static str],
        u16,
        Option<&'static str>,
    );
    let cases: &[Case] = &[
        (
            "all down, within the window",
            "/sie",
            100,
            None,
            down,
            &["lookup", "forward", "serve_stored"],
            200,
            Some("STALE"),
        ),
        (
            "timed out, within the window",
            "/sie",
            179,
            None,
            slow,
            &["lookup", "forward", "serve_stored"],
            200,
            Some("STALE"),
        ),
        (
            "a retry status on the last attempt",
            "/sie",
            100,
            None,
            busy,
            &["lookup", "forward", "serve_stored"],
            200,
            Some("STALE"),
        ),
        (
            "a status not retried on is the origin's answer",
            "/sie",
            100,
            None,
            teapot,
            &["lookup", "forward", "respond"],
            418,
            Some("BYPASS"),
        ),
        (
            "the origin up: its fresh response",
            "/sie",
            100,
            None,
            up,
            &["lookup", "forward", "respond"],
            200,
            Some("MISS"),
        ),
        (
            "all down, past the window",
            "/sie",
            181,
            None,
            down,
            &["lookup", "forward", "answer"],
            502,
            None,
        ),
        (
            "all down, without stale_if_error_s",
            "/c",
            100,
            None,
            down,
            &["lookup", "forward", "answer"],
            502,
            None,
        ),
        (
            "a retry status, without stale_if_error_s",
            "/c",
            100,
            None,
            busy,
            &["lookup", "forward", "respond"],
            503,
            Some("BYPASS"),
        ),
        (
            "the origin's stale-if-error shortens the window",
            "/sie",
            100,
            Some("max-age=60, stale-if-error=30"),
            down,
            &["lookup", "forward", "answer"],
            502,
            None,
        ),
        (
            "... and within it",
            "/sie",
            95,
            Some("max-age=60, Stale-If-Error=40"),
            down,
            &["lookup", "forward", "serve_stored"],
            200,
            Some("STALE"),
        ),
        (
            "the origin's longer one does not lengthen it",
            "/sie",
            181,
            Some("stale-if-error=600"),
            down,
            &["lookup", "forward", "answer"],
            502,
            None,
        ),
        (
            "must-revalidate forbids it",
            "/sie",
            100,
            Some("max-age=60, must-revalidate"),
            down,
            &["lookup", "forward", "answer"],
            502,
            None,
        ),
        (
            "proxy-revalidate forbids it",
            "/sie",
            100,
            Some("PROXY-REVALIDATE"),
            down,
            &["lookup", "forward", "answer"],
            502,
            None,
        ),
        (
            "unless the origin allows it itself",
            "/sie",
            100,
            Some("must-revalidate, stale-if-error=90"),
            down,
            &["lookup", "forward", "serve_stored"],
            200,
            Some("STALE"),
        ),
        (
            "within stale_while_revalidate_s: served at once",
            "/sie",
            70,
            None,
            down,
            &["lookup", "serve_stored"],
            200,
            Some("STALE"),
        ),
        (
            "fresh: a hit",
            "/sie",
            10,
            None,
            down,
            &["lookup", "serve_stored"],
            200,
            Some("HIT"),
        ),
    ];
    for (name, path, age_s, cc, origin, steps, status, label) in cases {
        let rt = Runtime {
            stored_at: Some(now - age_s * 1000),
            stored_cc: *cc,
            origin: *origin,
            now_ms: now,
            ..Default::default()
        };
        let end = run(&g, "GET", &format!("https://h{path}"), &[], &rt);
        assert_eq!(
            (
                end.steps.as_slice(),
                end.status,
                header(&end, "x-cache-status")
            ),
            (*steps, *status, *label),
            "{name}: {:?}",
            end.log
        );
        assert_eq!(end.log["status"], *status, "{name}");
        if end.steps.last() == Some(&"serve_stored") && end.steps.contains(&"forward") {
            assert_eq!(
                header(&end, "age"),
                Some(age_s.to_string().as_str()),
                "{name}"
            );
            assert_eq!(end.log["cache"], "STALE", "{name}");
            assert_eq!(
                end.log["cache_reason"], "stale-if-error: every attempt to the origin failed",
                "{name}"
            );
            let detail = end.log["detail"].as_str().unwrap();
            assert!(
                detail.starts_with("served stale because the origin failed: "),
                "{name}: {detail}"
            );
            assert_eq!(end.log["error"], Value::Null, "{name}");
        }
    }
    // The log names the origin's failure.
    let rt = Runtime {
        stored_at: Some(now - 100_000),
        origin: down,
        now_ms: now,
        ..Default::default()
    };
    let end = run(&g, "GET", "https://h/sie", &[], &rt);
    assert_eq!(
        end.log["detail"],
        "served stale because the origin failed: origin_unavailable: connection refused"
    );
    let rt = Runtime { origin: busy, ..rt };
    let end = run(&g, "HEAD", "https://h/sie", &[], &rt);
    assert_eq!(
        (end.status, header(&end, "x-cache-status")),
        (200, Some("STALE"))
    );
    assert_eq!(
        end.log["detail"],
        "served stale because the origin failed: the last attempt answered 503"
    );
}

#[test]
fn a_cached_route_stores_the_identity_body_and_compresses_per_client() {
    let g = gateway();
    let origin: HeaderList = vec![
        ("content-type".into(), "text/plain".into()),
        ("content-length".into(), "5000".into()),
    ];
    let exchange = |accept: &'static [(&'static str, &'static str)]| {
        let headers: HeaderList = accept
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let req = Incoming {
            method: "GET",
            url: "https://api.example/c",
            headers: &headers,
        };
        Exchange::new(&g, &req, "rid", |_, _| false)
    };
    let has = |list: &HeaderList, name: &str, value: &str| {
        list.iter().any(|(n, v)| n == name && v == value)
    };

    // A miss: the client gets gzip; the entry keeps the origin's identity headers.
    let mut ex = exchange(&[("accept-encoding", "gzip")]);
    assert!(matches!(ex.poll(), Step::Lookup { .. }));
    ex.looked_up(None, 1_000_000);
    assert!(matches!(ex.poll(), Step::Forward(_)));
    ex.forwarded(Ok((200, origin.clone())), Vec::new(), 1_000_000);
    let Step::Respond {
        headers,
        store: Some((_, stored)),
        ..
    } = ex.poll()
    else {
        panic!("not a stored response");
    };
    assert!(has(headers, "content-encoding", "gzip"), "{headers:?}");
    assert!(has(headers, "vary", "Accept-Encoding"), "{headers:?}");
    assert!(!headers.iter().any(|(n, _)| n == "content-length"));
    assert!(!stored
        .iter()
        .any(|(n, _)| n == "content-encoding" || n == "vary"));
    assert!(has(stored, "content-length", "5000"), "{stored:?}");
    let stored = stored.clone();

    // Hits: each client gets its own coding from the one entry.
    for (accept, coding) in [
        (&[("accept-encoding", "gzip, br")][..], Some("br")),
        (&[("accept-encoding", "gzip")][..], Some("gzip")),
        (&[("accept-encoding", "gzip;q=0")][..], None),
        (&[][..], None),
    ] {
        let mut ex = exchange(accept);
        assert!(matches!(ex.poll(), Step::Lookup { .. }));
        ex.looked_up(Some((200, &stored)), 1_001_000);
        let Step::ServeStored { headers, .. } = ex.poll() else {
            panic!("not a hit");
        };
        let got = headers
            .iter()
            .find(|(n, _)| n == "content-encoding")
            .map(|(_, v)| v.as_str());
        assert_eq!(got, coding, "{accept:?}: {headers:?}");
        assert!(has(headers, "vary", "Accept-Encoding"), "{headers:?}");
        assert_eq!(
            headers.iter().any(|(n, _)| n == "content-length"),
            coding.is_none(),
            "{headers:?}"
        );
    }
}

#[test]
fn the_subrequest_budget_counts_the_cache_and_the_drivers_own_steps() {
    let g = gateway();
    let headers: HeaderList = Vec::new();
    let incoming = |url| Incoming {
        method: "GET",
        url,
        headers: &headers,
    };
    // A public route: the whole budget.
    let mut ex = Exchange::new(
        &g,
        &incoming("https://api.example.com/pub"),
        "rid",
        |_, _| false,
    );
    assert!(matches!(ex.poll(), Step::Forward(_)));
    assert_eq!(ex.subrequests_left(), SUBREQUEST_LIMIT);
    // A cached route: the lookup, and one kept for the store after answering.
    let mut ex = Exchange::new(&g, &incoming("https://api.example.com/c"), "rid", |_, _| {
        false
    });
    assert!(matches!(ex.poll(), Step::Lookup { .. }));
    ex.looked_up(None, 1_000);
    assert!(matches!(ex.poll(), Step::Forward(_)));
    assert_eq!(ex.subrequests_left(), SUBREQUEST_LIMIT - 2);
    // What the driver's own steps made (keys, discovery) is subtracted too, never below 0.
    ex.spent(5);
    assert_eq!(ex.subrequests_left(), SUBREQUEST_LIMIT - 7);
    ex.spent(u32::MAX);
    assert_eq!(ex.subrequests_left(), 0);
}
