//! The step sequences of forwarding, driven by a test driver that plays the runtime's part:
//! each server answers as the table says, time passes as the table says, and the test asserts
//! every step the machine asked for and what the client ends with.

use super::*;
use crate::config::Config;

fn origin(extra: serde_json::Value, servers: usize) -> Origin {
    let list: Vec<serde_json::Value> = (0..servers)
        .map(|i| serde_json::json!({ "url": format!("http://s{i}.internal.example") }))
        .collect();
    let mut o = serde_json::json!({ "servers": list, "balance": "first" });
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    let text = serde_json::json!({ "origins": { "o": o }, "routes": [] });
    Config::from_json(&text.to_string())
        .unwrap()
        .origins
        .remove(0)
}

/// How a server answers one attempt in the driver, and how long it takes (ms).
#[derive(Debug, Clone, Copy)]
enum Plays {
    Status(u16, u64),
    Refuses,
    Hangs,
    CutsTheBody,
}

const GET: Request<'static> = Request {
    method: "GET",
    hash_key: None,
    has_body: false,
    content_length: None,
    max_body_bytes: None,
    subrequests_left: 50,
};

/// What the client ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Served { server: usize, status: u16 },
    Error(&'static str, String),
}

/// Drives one request: `plays[server]` is what each server does (the same on every attempt).
/// Returns the sends `(server, timeout_ms)` in order and the end.
fn drive(
    o: &Origin,
    pool: &mut PoolState,
    req: &Request<'_>,
    plays: &[Plays],
    start_ms: u64,
) -> (Vec<(usize, u32)>, End, Attempts) {
    let mut now = start_ms;
    let mut a = Attempts::start(o, pool, req, now, 0);
    let mut sends = Vec::new();
    loop {
        match a.next(o, now) {
            Next::GiveUp { error, detail } => return (sends, End::Error(error.code(), detail), a),
            Next::Send { server, timeout_ms } => {
                sends.push((server, timeout_ms));
                let sent = match plays[server] {
                    Plays::Status(s, took) if took < u64::from(timeout_ms) => {
                        now += took;
                        Sent::Response(s)
                    }
                    Plays::Status(..) | Plays::Hangs => {
                        now += u64::from(timeout_ms);
                        Sent::TimedOut
                    }
                    Plays::Refuses => {
                        now += 1;
                        Sent::Failed("connection refused".into())
                    }
                    Plays::CutsTheBody => Sent::BodyOverLimit,
                };
                let status = match &sent {
                    Sent::Response(s) => Some(*s),
                    _ => None,
                };
                match a.finished(o, pool, sent, now) {
                    Verdict::Serve => {
                        let status = status.expect("only a response is served");
                        return (sends, End::Served { server, status }, a);
                    }
                    Verdict::Retry | Verdict::Next => {}
                }
            }
        }
    }
}

fn served(server: usize, status: u16) -> End {
    End::Served { server, status }
}

fn error(code: &'static str, detail: &str) -> End {
    End::Error(code, detail.to_string())
}

#[test]
fn forwarding_step_sequences() {
    use Plays::*;
    let retry = serde_json::json!({ "timeout_ms": 1000, "retry": { "attempts": 3, "on": ["connect", "timeout", 503] } });
    let no_retry = serde_json::json!({ "timeout_ms": 1000, "retry": { "attempts": 1 } });
    type Case = (
        &'static str,
        serde_json::Value,
        usize,
        Vec<Plays>,
        Vec<(usize, u32)>,
        End,
    );
    let cases: Vec<Case> = vec![
        (
            "healthy: one attempt",
            retry.clone(),
            3,
            vec![Status(200, 5), Status(200, 5), Status(200, 5)],
            vec![(0, 1000)],
            served(0, 200),
        ),
        (
            "refused, then the next server",
            retry.clone(),
            3,
            vec![Refuses, Status(200, 5), Status(200, 5)],
            vec![(0, 1000), (1, 1000)],
            served(1, 200),
        ),
        (
            "a listed status is retried on the next server",
            retry.clone(),
            3,
            vec![Status(503, 5), Status(200, 5), Status(200, 5)],
            vec![(0, 1000), (1, 1000)],
            served(1, 200),
        ),
        (
            "a listed status on the last attempt is the origin's word",
            retry.clone(),
            2,
            vec![Status(503, 5), Status(503, 5)],
            vec![(0, 1000), (1, 1000)],
            served(1, 503),
        ),
        (
            "an unlisted 5xx is served, not retried",
            retry.clone(),
            3,
            vec![Status(500, 5), Status(200, 5), Status(200, 5)],
            vec![(0, 1000)],
            served(0, 500),
        ),
        (
            "timeouts, then a response",
            retry.clone(),
            3,
            vec![Hangs, Hangs, Status(200, 5)],
            vec![(0, 1000), (1, 1000), (2, 1000)],
            served(2, 200),
        ),
        (
            "all down: 502 with the last failure",
            retry.clone(),
            3,
            vec![Refuses, Refuses, Refuses],
            vec![(0, 1000), (1, 1000), (2, 1000)],
            error("origin_unavailable", "connection refused"),
        ),
        (
            "all timing out: 504",
            retry.clone(),
            2,
            vec![Hangs, Hangs],
            vec![(0, 1000), (1, 1000)],
            error("origin_timeout", "no response headers within 1000 ms"),
        ),
        (
            "attempts bounded by retry.attempts",
            retry.clone(),
            5,
            vec![Refuses; 5],
            vec![(0, 1000), (1, 1000), (2, 1000)],
            error("origin_unavailable", "connection refused"),
        ),
        (
            "no retry: one attempt, its failure",
            no_retry.clone(),
            3,
            vec![Refuses, Status(200, 5), Status(200, 5)],
            vec![(0, 1000)],
            error("origin_unavailable", "connection refused"),
        ),
        (
            "timeouts not retried when retry.on_timeout is off",
            serde_json::json!({ "timeout_ms": 1000, "retry": { "attempts": 3, "on": ["connect"] } }),
            3,
            vec![Hangs, Status(200, 5), Status(200, 5)],
            vec![(0, 1000)],
            error("origin_timeout", "no response headers within 1000 ms"),
        ),
        (
            "the deadline shortens the last attempt, then ends the request",
            serde_json::json!({ "timeout_ms": 1000, "deadline_ms": 2500, "retry": { "attempts": 3 } }),
            3,
            vec![Hangs, Hangs, Hangs],
            vec![(0, 1000), (1, 1000), (2, 500)],
            error("origin_timeout", "no response headers within 500 ms"),
        ),
        (
            "the deadline passed before another attempt",
            serde_json::json!({ "timeout_ms": 1000, "deadline_ms": 1000, "retry": { "attempts": 3 } }),
            3,
            vec![Hangs, Status(200, 5), Status(200, 5)],
            vec![(0, 1000)],
            error("origin_timeout", "deadline of 1000 ms passed"),
        ),
        (
            "a body cut at the limit is the client's 413, not a server failure",
            retry.clone(),
            3,
            vec![CutsTheBody, Status(200, 5), Status(200, 5)],
            vec![(0, 1000)],
            error("payload_too_large", "body over the limit while streaming"),
        ),
    ];
    for (name, extra, servers, plays, want_sends, want_end) in cases {
        let o = origin(extra, servers);
        let mut pool = PoolState::new(&o);
        let (sends, end, _) = drive(&o, &mut pool, &GET, &plays, 10_000);
        assert_eq!((sends, end), (want_sends, want_end), "{name}");
    }
}

#[test]
fn the_log_has_every_attempt_and_ejections_carry_over() {
    use Plays::*;
    let o = origin(
        serde_json::json!({ "timeout_ms": 1000, "retry": { "attempts": 2 },
                            "eject": { "after_failures": 1, "for_ms": 30000 } }),
        2,
    );
    let mut pool = PoolState::new(&o);
    let (_, end, a) = drive(&o, &mut pool, &GET, &[Refuses, Status(200, 7)], 0);
    assert_eq!(end, served(1, 200));
    let log: Vec<_> = a
        .log
        .iter()
        .map(|x| {
            (
                x.server,
                x.outcome,
                x.status,
                x.duration_ms,
                x.ejected_for_ms,
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            (0, Outcome::ConnectFailed, None, 1, Some(30000)),
            (1, Outcome::Response, Some(200), 7, None)
        ]
    );
    assert_eq!(a.log[0].address, "http://s0.internal.example");
    // The next request does not pay for the dead server: it is tried last.
    let (sends, end, _) = drive(&o, &mut pool, &GET, &[Refuses, Status(200, 7)], 100);
    assert_eq!((sends, end), (vec![(1, 1000)], served(1, 200)));
    // Once the ejection is over, it is tried again.
    let (sends, _, _) = drive(
        &o,
        &mut pool,
        &GET,
        &[Status(200, 1), Status(200, 7)],
        40_000,
    );
    assert_eq!(sends, vec![(0, 1000)]);
}

#[test]
fn body_plans_and_the_attempts_they_allow() {
    let o = origin(
        serde_json::json!({ "retry": { "attempts": 3, "replay_body_bytes": 1000 } }),
        3,
    );
    let one = origin(serde_json::json!({ "retry": { "attempts": 3 } }), 1);
    let req = |method, has_body, len, max| Request {
        method,
        hash_key: None,
        has_body,
        content_length: len,
        max_body_bytes: max,
        subrequests_left: 50,
    };
    let cases = [
        (
            "GET without a body",
            &o,
            req("GET", false, None, None),
            BodyPlan::None,
            3,
        ),
        (
            "PUT, small body: replayed",
            &o,
            req("PUT", true, Some(10), None),
            BodyPlan::Replay,
            3,
        ),
        (
            "PUT, body over replay_body_bytes",
            &o,
            req("PUT", true, Some(5000), None),
            BodyPlan::Stream,
            1,
        ),
        (
            "PUT, no length",
            &o,
            req("PUT", true, None, None),
            BodyPlan::Stream,
            1,
        ),
        (
            "PUT, no length, a body limit: counted",
            &o,
            req("PUT", true, None, Some(64)),
            BodyPlan::Counted(64),
            1,
        ),
        (
            "PUT, a length, a body limit",
            &o,
            req("PUT", true, Some(10), Some(64)),
            BodyPlan::Replay,
            3,
        ),
        (
            "POST is not retried",
            &o,
            req("POST", true, Some(10), None),
            BodyPlan::Stream,
            1,
        ),
        (
            "one server: nothing to retry on",
            &one,
            req("PUT", true, Some(10), None),
            BodyPlan::Stream,
            1,
        ),
    ];
    for (name, origin, r, plan, allowed) in cases {
        let mut pool = PoolState::new(origin);
        let a = Attempts::start(origin, &mut pool, &r, 0, 0);
        assert_eq!((a.body(), a.allowed()), (plan, allowed), "{name}");
    }
    // The subrequest budget bounds the attempts.
    let mut pool = PoolState::new(&o);
    let tight = Request {
        subrequests_left: 2,
        ..GET
    };
    assert_eq!(Attempts::start(&o, &mut pool, &tight, 0, 0).allowed(), 2);
    // A spent budget: no attempt, and the log says why.
    let spent = Request {
        subrequests_left: 0,
        ..GET
    };
    let mut a = Attempts::start(&o, &mut pool, &spent, 0, 0);
    match a.next(&o, 0) {
        Next::GiveUp { error, detail } => {
            assert_eq!(error, GatewayError::OriginUnavailable);
            assert!(detail.contains("subrequest budget"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}
