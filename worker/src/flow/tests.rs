//! The text the JavaScript entry and the core exchange, step by step, natively: a driver that
//! plays the entry's part with the same exports it calls.

use super::*;

const CONFIG: &str = r#"{
  "origins": {
    "api": {
      "servers": [{ "url": "http://10.0.0.1:8080/base" }, { "url": "http://10.0.0.2:8080/base" }],
      "timeout_ms": 2000,
      "retry": { "attempts": 2 }
    }
  },
  "routes": [
    { "name": "users", "path": "/api/users/{*rest}", "origin": "api", "rewrite": { "strip_prefix": "/api" } },
    { "name": "cached", "path": "/api/cached/{*rest}", "origin": "api", "cache": { "ttl_s": 60 } }
  ]
}"#;

/// Makes this thread's isolate from `config` (each test runs on its own thread).
fn with_isolate(config: &str) {
    let gateway = Config::from_json(config)
        .map(Gateway::new)
        .map_err(|e| e.to_string());
    install(Isolate::of(gateway, [7; 16]));
}

/// The fields of a step's text.
fn fields(text: &str) -> Vec<&str> {
    text.split('\n').collect()
}

/// The header list at `f[i]` and the index after it, as the entry reads it.
fn headers_at(f: &[&str], i: usize) -> (Vec<(String, String)>, usize) {
    let n: usize = f[i].parse().expect("a header count");
    let list = (0..n)
        .map(|k| (f[i + 1 + 2 * k].to_string(), f[i + 2 + 2 * k].to_string()))
        .collect();
    (list, i + 1 + 2 * n)
}

fn value<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_public_request_forwards_retries_and_answers_in_text() {
    with_isolate(CONFIG);
    let headers = "host\napi.example.com\naccept\n*/*\nx-empty\n\nconnection\nclose\n";
    let flow = start(
        "GET",
        "https://api.example.com/api/users/7?q=1",
        headers,
        false,
        0.0,
        1000.0,
    );
    assert_ne!(flow, 0);

    let step = poll(flow, 1000.0);
    let f = fields(&step);
    assert_eq!(&f[..4], ["F", "N", "0", "GET"], "{step}");
    let (to_origin, end) = headers_at(&f, 4);
    assert_eq!(end, f.len(), "nothing after the header list: {step}");
    assert_eq!(
        value(&to_origin, "x-forwarded-host"),
        Some("api.example.com")
    );
    assert_eq!(
        value(&to_origin, "x-empty"),
        Some(""),
        "an empty value survives packing"
    );
    assert_eq!(value(&to_origin, "connection"), None);
    let request_id = value(&to_origin, "x-request-id")
        .expect("a request id")
        .to_string();

    // The first server refuses the connection: the core asks for the next one.
    let first = next(flow, 1000.0);
    let f = fields(&first);
    let (url, timeout, via) = (f[0], f[1], f[2]);
    assert!(url.ends_with("/base/users/7?q=1"), "{first}");
    assert_eq!((timeout, via), ("2000", ""), "the global fetch: {first}");
    assert_eq!(finished(flow, 1, 0, "connection refused".into(), 1001.0), 2);
    let second = next(flow, 1001.0);
    assert_ne!(fields(&second)[0], url, "another server: {second}");
    assert_eq!(finished(flow, 0, 200, String::new(), 1002.0), 0);
    forwarded(
        flow,
        200,
        "content-type\ntext/plain\nserver\norigin/1\nx-request-id\nfrom-origin\n",
        1003.0,
    );

    let step = poll(flow, 1003.0);
    let f = fields(&step);
    assert_eq!(&f[..3], ["W", "200", "0"], "{step}");
    let (to_client, end) = headers_at(&f, 3);
    assert_eq!(&f[end..], ["0"], "nothing to store: {step}");
    assert_eq!(value(&to_client, "content-type"), Some("text/plain"));
    assert_eq!(value(&to_client, "server"), None);
    assert_eq!(value(&to_client, "x-request-id"), Some(request_id.as_str()));

    let log: serde_json::Value = serde_json::from_str(&finish(flow, 200, 4.0)).unwrap();
    assert_eq!(log["request_id"], request_id.as_str());
    assert_eq!(log["route"], "users");
    assert_eq!(log["status"], 200);
    let attempts = log["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{log}");
    assert_eq!(attempts[0]["outcome"], "connect_failed");
    assert_eq!(attempts[1]["status"], 200);
    // The handle is free again, and a freed handle answers nothing.
    assert_eq!(poll(flow, 1004.0), "");
}

#[test]
fn answers_carry_bodies_with_newlines_and_null_bodies_are_flagged() {
    let answer = Answer {
        status: 403,
        headers: vec![("content-type".into(), "text/html".into())],
        body: Some("<p>a</p>\n<p>b</p>\n".into()),
        log: None,
        error: None,
        detail: None,
    };
    let text = pack_answer(&answer);
    let f = fields(&text);
    assert_eq!(&f[..2], ["A", "403"]);
    let (headers, i) = headers_at(&f, 2);
    assert_eq!(headers, answer.headers);
    assert_eq!(f[i], "1");
    assert_eq!(f[i + 1..].join("\n"), "<p>a</p>\n<p>b</p>\n");
    let none = pack_answer(&Answer {
        body: None,
        ..answer
    });
    let f = fields(&none);
    assert_eq!(f[f.len() - 2], "0", "{none}");

    with_isolate(CONFIG);
    let flow = start(
        "GET",
        "https://api.example.com/api/users/1",
        "",
        false,
        0.0,
        0.0,
    );
    poll(flow, 0.0);
    next(flow, 0.0);
    assert_eq!(finished(flow, 0, 304, String::new(), 1.0), 0);
    forwarded(flow, 304, "etag\n\"x\"\n", 1.0);
    assert!(
        poll(flow, 1.0).starts_with("W\n304\n1\n"),
        "304 has no body"
    );
    finish(flow, 304, 1.0);
}

#[test]
fn a_route_with_a_cache_looks_up_then_stores() {
    with_isolate(CONFIG);
    let flow = start(
        "GET",
        "https://api.example.com/api/cached/a",
        "",
        false,
        0.0,
        0.0,
    );
    let step = poll(flow, 0.0);
    let f = fields(&step);
    assert_eq!(f[0], "L", "{step}");
    let key = f[1].to_string();
    looked_up(flow, None, 0, 0.0);
    assert!(poll(flow, 0.0).starts_with("F\n"));
    next(flow, 0.0);
    assert_eq!(finished(flow, 0, 200, String::new(), 1.0), 0);
    forwarded(flow, 200, "content-type\ntext/plain\n", 1.0);
    let step = poll(flow, 1.0);
    let f = fields(&step);
    let (to_client, end) = headers_at(&f, 3);
    assert_eq!(value(&to_client, "x-cache-status"), Some("MISS"), "{step}");
    assert_eq!(f[end], "1", "stored: {step}");
    assert_eq!(f[end + 1], key, "under the key it looked up");
    let (stored, _) = headers_at(&f, end + 2);
    assert!(!stored.is_empty());
    finish(flow, 200, 1.0);
}

#[test]
fn every_attempt_failing_answers_the_gateway_error() {
    with_isolate(CONFIG);
    let flow = start(
        "GET",
        "https://api.example.com/api/users/1",
        "",
        false,
        0.0,
        0.0,
    );
    poll(flow, 0.0);
    for now in [1.0, 2.0] {
        assert!(!next(flow, now).is_empty());
        assert_eq!(finished(flow, 2, 0, String::new(), now + 2000.0), 2);
    }
    assert_eq!(next(flow, 5000.0), "", "no attempt left");
    let step = poll(flow, 5000.0);
    assert!(step.starts_with("A\n504\n"), "{step}");
    assert!(step.contains("\"error\":\"origin_timeout\""), "{step}");
    let log: serde_json::Value = serde_json::from_str(&finish(flow, 504, 1.0)).unwrap();
    assert_eq!(log["error"], "origin_timeout");
}

#[test]
fn a_config_with_problems_answers_500_and_logs_them() {
    with_isolate(
        r#"{ "origins": { "a": { "servers": [{ "url": "http://10.0.0.1" }] } },
             "routes": [ { "name": "x", "path": "/x", "origin": "missing" } ] }"#,
    );
    let flow = start("GET", "https://api.example.com/x", "", false, 0.0, 0.0);
    let step = poll(flow, 0.0);
    assert!(step.starts_with("A\n500\n"), "{step}");
    assert!(step.contains("config_invalid"));
    let log: serde_json::Value = serde_json::from_str(&finish(flow, 500, 1.0)).unwrap();
    assert_eq!(log["error"], "config_invalid");
    assert!(
        log["detail"].as_str().unwrap().contains("routes[0].origin"),
        "{log}"
    );
}

#[test]
fn a_kept_entry_answers_in_text_when_every_attempt_failed() {
    with_isolate(
        r#"{
      "origins": { "api": { "servers": [{ "url": "http://10.0.0.1:8080" }], "timeout_ms": 2000 } },
      "routes": [{ "name": "sie", "path": "/s", "origin": "api",
                   "cache": { "ttl_s": 60, "stale_if_error_s": 600 } }]
    }"#,
    );
    let stored_at = 1_000_000u64;
    let stored = portcullis::cache::stored_headers(
        &[("content-type".into(), "text/plain".into())],
        60,
        600,
        stored_at,
    );
    let packed: String = stored.iter().map(|(n, v)| format!("{n}\n{v}\n")).collect();
    let now = (stored_at + 120_000) as f64; // past the TTL, within the window
    let flow = start("HEAD", "https://api.example.com/s", "", false, 0.0, now);
    assert!(poll(flow, now).starts_with("L\n"));
    looked_up(flow, Some(packed), 200, now);
    assert!(
        poll(flow, now).starts_with("F\n"),
        "past use: forwarded first"
    );
    assert!(!next(flow, now).is_empty());
    assert_eq!(finished(flow, 1, 0, "refused".into(), now + 1.0), 2);
    assert_eq!(next(flow, now + 1.0), "", "no attempt left");
    let step = poll(flow, now + 1.0);
    let f = fields(&step);
    assert_eq!(
        (f[0], f[1], f[2]),
        ("H", "1", "0"),
        "HEAD, no refresh: {step}"
    );
    let (to_client, _) = headers_at(&f, 3);
    assert_eq!(value(&to_client, "x-cache-status"), Some("STALE"), "{step}");
    assert_eq!(value(&to_client, "age"), Some("120"), "{step}");
    let log: serde_json::Value = serde_json::from_str(&finish(flow, 200, 1.0)).unwrap();
    assert_eq!(log["cache"], "STALE");
    assert_eq!(log["attempts"][0]["outcome"], "connect_failed");
}

#[test]
fn a_compressed_response_carries_its_coding_in_the_header_list_and_the_entry_stays_identity() {
    with_isolate(CONFIG);
    let flow = start(
        "GET",
        "https://api.example.com/api/cached/big",
        "accept-encoding\ngzip, br;q=0.5\n",
        false,
        0.0,
        0.0,
    );
    assert!(poll(flow, 0.0).starts_with("L\n"));
    looked_up(flow, None, 0, 0.0);
    poll(flow, 0.0);
    next(flow, 0.0);
    assert_eq!(finished(flow, 0, 200, String::new(), 1.0), 0);
    forwarded(
        flow,
        200,
        "content-type\ntext/html\ncontent-length\n4096\n",
        1.0,
    );
    let step = poll(flow, 1.0);
    let f = fields(&step);
    assert_eq!(&f[..3], ["W", "200", "0"], "{step}");
    let (to_client, end) = headers_at(&f, 3);
    assert_eq!(
        value(&to_client, "content-encoding"),
        Some("gzip"),
        "{step}"
    );
    assert_eq!(value(&to_client, "content-length"), None, "{step}");
    assert_eq!(value(&to_client, "vary"), Some("Accept-Encoding"), "{step}");
    assert_eq!(f[end], "1", "stored: {step}");
    let (stored, _) = headers_at(&f, end + 2);
    assert_eq!(value(&stored, "content-encoding"), None, "{step}");
    assert_eq!(value(&stored, "content-length"), Some("4096"), "{step}");
    finish(flow, 200, 1.0);

    // The stored entry, served to a client that accepts br: the `H` step's list says br.
    let flow = start(
        "GET",
        "https://api.example.com/api/cached/big",
        "accept-encoding\nbr\n",
        false,
        0.0,
        2.0,
    );
    assert!(poll(flow, 2.0).starts_with("L\n"));
    let packed: String = stored.iter().map(|(n, v)| format!("{n}\n{v}\n")).collect();
    looked_up(flow, Some(packed), 200, 2.0);
    let step = poll(flow, 2.0);
    let f = fields(&step);
    assert_eq!(f[0], "H", "{step}");
    let (to_client, _) = headers_at(&f, 3);
    assert_eq!(value(&to_client, "content-encoding"), Some("br"), "{step}");
    finish(flow, 200, 3.0);
}

#[test]
fn binding_servers_name_their_binding_and_an_unbound_one_is_config_invalid() {
    with_isolate(
        r#"{
      "origins": { "api": { "servers": [
          { "binding": "USERS_API" },
          { "binding": "USERS_VPC", "url": "http://users.internal/v1" },
          { "url": "https://10.0.0.3", "mtls_certificate": "ORIGIN_CERT" } ] } },
      "routes": [{ "name": "r", "path": "/r/{*rest}", "origin": "api" }]
    }"#,
    );
    let flow = start(
        "GET",
        "https://api.example.com/r/a?b=1",
        "",
        false,
        0.0,
        0.0,
    );
    assert!(poll(flow, 0.0).starts_with("F\n"));
    let mut seen = Vec::new();
    for now in [1.0, 2.0, 3.0] {
        let step = next(flow, now);
        let f = fields(&step);
        seen.push((f[0].to_string(), f[2].to_string()));
        assert_eq!(finished(flow, 1, 0, "refused".into(), now), 2);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "http://users.internal/v1/r/a?b=1".to_string(),
                "USERS_VPC".to_string()
            ),
            (
                "https://10.0.0.3/r/a?b=1".to_string(),
                "ORIGIN_CERT".to_string()
            ),
            (
                "https://users-api.binding.invalid/r/a?b=1".to_string(),
                "USERS_API".to_string()
            ),
        ]
    );
    assert_eq!(next(flow, 4.0), "", "every server tried");
    assert!(poll(flow, 4.0).starts_with("A\n502\n"));
    let log: serde_json::Value = serde_json::from_str(&finish(flow, 502, 1.0)).unwrap();
    let addresses: Vec<&str> = log["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert!(addresses.contains(&"binding:USERS_API"), "{log}");
    assert!(
        addresses.contains(&"binding:USERS_VPC"),
        "the log names the binding: {log}"
    );
    assert!(!log.to_string().contains("users.internal"), "{log}");

    // The driver finds no such binding: 500, named in the log, no further attempt.
    let flow = start("GET", "https://api.example.com/r/a", "", false, 0.0, 0.0);
    poll(flow, 0.0);
    next(flow, 0.0);
    unbound(flow, "USERS_API".into(), 0.0);
    assert_eq!(next(flow, 0.0), "");
    let step = poll(flow, 0.0);
    assert!(step.starts_with("A\n500\n"), "{step}");
    let log: serde_json::Value = serde_json::from_str(&finish(flow, 500, 1.0)).unwrap();
    assert_eq!(log["error"], "config_invalid");
    assert!(
        log["detail"].as_str().unwrap().contains("USERS_API"),
        "{log}"
    );
}

#[test]
fn health_is_told_and_read_in_text_after_a_request() {
    with_isolate(&CONFIG.replace(
        r#""retry": { "attempts": 2 }"#,
        r#""retry": { "attempts": 2 }, "eject": { "after_failures": 1 }"#,
    ));
    // The first request of an isolate starts a read of both servers' shared word.
    let text = health(1000.0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines
        .iter()
        .all(|l| l.starts_with("R https://health.portcullis.invalid/v1/")));
    assert_eq!(
        health(1001.0),
        "",
        "nothing more until the next read is due"
    );
    // An ejection is published with its end.
    let flow = start(
        "GET",
        "https://api.example.com/api/users/1",
        "",
        false,
        0.0,
        2000.0,
    );
    poll(flow, 2000.0);
    for now in [2000.0, 2001.0] {
        next(flow, now);
        finished(flow, 1, 0, "refused".into(), now);
    }
    next(flow, 2002.0);
    poll(flow, 2002.0);
    finish(flow, 502, 2.0);
    let text = health(2003.0);
    assert!(
        text.lines()
            .any(|l| l.starts_with("P https://health.portcullis.invalid/v1/")),
        "{text}"
    );
    // A peer's word is taken: a key of this isolate's pools, ejected until then.
    let key = lines[0].strip_prefix("R ").unwrap();
    health_seen(key, 99_999.0);
    health_seen("https://health.portcullis.invalid/v1/none", 99_999.0);
}

#[test]
fn an_attested_request_asks_to_mint_every_time_anonymous_ones_included() {
    let attesting = CONFIG.replacen(
        r#""origins""#,
        r#""identity": { "header": "x-portcullis-identity", "alg": "ES256",
                         "private_key_env": "IDENTITY_SIGNING_KEY",
                         "issuer": "https://gw.example", "attest": true },
           "origins""#,
        1,
    );
    with_isolate(&attesting);
    // No token can be reused: each request, the same one again too, waits for `perform`.
    for _ in 0..2 {
        let flow = start(
            "GET",
            "https://api.example.com/api/users/7",
            "host\napi.example.com\n",
            false,
            0.0,
            1000.0,
        );
        assert_eq!(poll(flow, 1000.0), "M");
    }
    // Without attest, the same anonymous request goes straight to the origin.
    with_isolate(CONFIG);
    let flow = start(
        "GET",
        "https://api.example.com/api/users/7",
        "host\napi.example.com\n",
        false,
        0.0,
        1000.0,
    );
    assert!(poll(flow, 1000.0).starts_with("F\n"));
}

/// The first attempt's URL of a GET through `/api/users/` (the flow is ended).
fn first_attempt(now: f64) -> String {
    let flow = start(
        "GET",
        "https://api.example.com/api/users/7",
        "host\napi.example.com\n",
        false,
        0.0,
        now,
    );
    assert!(poll(flow, now).starts_with("F\n"));
    let url = next(flow, now).split('\n').next().unwrap().to_string();
    end(flow);
    url
}

#[test]
fn a_scheduled_run_plans_records_and_isolates_skip_what_failed() {
    with_isolate(&CONFIG.replace(
        r#""timeout_ms": 2000,"#,
        r#""timeout_ms": 2000, "health": { "path": "/healthz", "timeout_ms": 700 },"#,
    ));
    assert!(configured());
    assert_eq!(
        checks_store(),
        "GATEWAY_HEALTH\nportcullis/health-checks/v1"
    );

    let plan = checks_plan(None, 1_000_000.0);
    let f = fields(&plan);
    assert_eq!(f.len(), 8, "two probes of four fields: {plan:?}");
    assert_eq!(&f[1..4], ["http://10.0.0.1:8080/base/healthz", "700", ""]);
    assert_eq!(&f[5..8], ["http://10.0.0.2:8080/base/healthz", "700", ""]);

    // Server 2 answers 503; the document and the log line come back.
    let results = format!("{}\n0\n200\n\n{}\n0\n503\n", f[0], f[4]);
    let out = checks_record(None, &results, 1_000_000.0, 1_000_050.0);
    let (doc, log) = out.split_once('\n').unwrap();
    let log: serde_json::Value = serde_json::from_str(log).unwrap();
    assert_eq!(log["health_checks"]["probed"], 2);
    assert_eq!(log["health_checks"]["unhealthy"], 1);
    assert_eq!(log["health_checks"]["duration_ms"], 50);
    assert_eq!(
        log["health_checks"]["results"][1]["server"],
        "http://10.0.0.2:8080/base"
    );
    assert_eq!(log["health_checks"]["results"][1]["status"], 503);
    // Within the interval, nothing is due.
    assert_eq!(checks_plan(Some(doc.to_string()), 1_030_000.0), "");

    // An isolate reads after a request, then at most every few seconds.
    assert!(checks_due(1_000_100.0));
    assert!(!checks_due(1_002_000.0));
    checks_seen(Some(doc.to_string()), 1_000_100.0);
    for i in 0..4 {
        let url = first_attempt(1_000_200.0 + f64::from(i));
        assert!(url.starts_with("http://10.0.0.1:8080/"), "{url}");
    }
    // The next run: server 2 passes (a probe error on server 1 is stored with its reason).
    let results = format!("{}\n1\n0\nconnection refused\n{}\n0\n200\n", f[0], f[4]);
    let out = checks_record(Some(doc.to_string()), &results, 1_060_000.0, 1_060_010.0);
    let (doc, log) = out.split_once('\n').unwrap();
    assert!(log.contains("failed: connection refused"), "{log}");
    assert!(checks_due(1_060_100.0));
    checks_seen(Some(doc.to_string()), 1_060_100.0);
    for i in 0..4 {
        let url = first_attempt(1_060_200.0 + f64::from(i));
        assert!(url.starts_with("http://10.0.0.2:8080/"), "{url}");
    }
}
