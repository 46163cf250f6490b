use super::*;
use crate::config::Config;

fn origin(servers: serde_json::Value, extra: serde_json::Value) -> Origin {
    let mut o = serde_json::json!({ "servers": servers });
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    let text = serde_json::json!({ "origins": { "o": o }, "routes": [] });
    let mut cfg = Config::from_json(&text.to_string()).unwrap();
    cfg.origins.remove(0)
}

fn urls(n: usize) -> serde_json::Value {
    (0..n)
        .map(|i| serde_json::json!({ "url": format!("http://s{i}.internal.example") }))
        .collect()
}

fn weighted(weights: &[u32]) -> serde_json::Value {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| serde_json::json!({ "url": format!("http://s{i}.internal.example"), "weight": w }))
        .collect()
}

#[test]
fn smooth_weighted_round_robin_honours_weights_without_bursts() {
    let o = origin(weighted(&[3, 1]), serde_json::json!({}));
    let mut state = PoolState::new(&o);
    let first: Vec<usize> = (0..8)
        .map(|_| state.candidates(&o, None, 0, 0)[0])
        .collect();
    assert_eq!(
        first,
        [0, 0, 1, 0, 0, 0, 1, 0],
        "nginx's smooth order, never 0,0,0,1 bursts"
    );

    let o = origin(weighted(&[5, 3, 2]), serde_json::json!({}));
    let mut state = PoolState::new(&o);
    let mut counts = [0u32; 3];
    for _ in 0..10_000 {
        counts[state.candidates(&o, None, 0, 0)[0]] += 1;
    }
    for (count, weight) in counts.iter().zip([5, 3, 2]) {
        let share = f64::from(*count) / 10_000.0;
        assert!(
            (share - f64::from(weight) / 10.0).abs() < 0.01,
            "{counts:?}"
        );
    }
}

#[test]
fn weighted_random_honours_weights() {
    let o = origin(
        weighted(&[3, 1]),
        serde_json::json!({ "balance": "random" }),
    );
    let mut state = PoolState::new(&o);
    let mut counts = [0u32; 2];
    let mut x: u64 = 12345;
    for _ in 0..10_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        counts[state.candidates(&o, None, 0, x >> 11)[0]] += 1;
    }
    let share = f64::from(counts[0]) / 10_000.0;
    assert!((share - 0.75).abs() < 0.02, "{counts:?}");
}

#[test]
fn first_is_an_active_standby_pair() {
    let o = origin(urls(2), serde_json::json!({ "balance": "first" }));
    let mut state = PoolState::new(&o);
    for _ in 0..5 {
        assert_eq!(state.candidates(&o, None, 0, 0), [0, 1]);
    }
}

#[test]
fn consistent_hash_moves_only_the_removed_servers_keys() {
    let five = origin(
        urls(5),
        serde_json::json!({ "balance": "hash", "hash_on": "header:x-tenant" }),
    );
    let four = origin(
        urls(4),
        serde_json::json!({ "balance": "hash", "hash_on": "header:x-tenant" }),
    );
    let (mut s5, mut s4) = (PoolState::new(&five), PoolState::new(&four));
    let keys: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
    let mut moved = 0;
    let mut counts = [0u32; 5];
    for k in &keys {
        let a = s5.candidates(&five, Some(k), 0, 0)[0];
        let b = s4.candidates(&four, Some(k), 0, 0)[0];
        counts[a] += 1;
        if a != 4 {
            assert_eq!(a, b, "a key not on the removed server moved");
        } else {
            moved += 1;
        }
        assert_eq!(
            s5.candidates(&five, Some(k), 0, 0)[0],
            a,
            "the same key, the same server"
        );
    }
    // about 1/5 of keys were on the removed server, and only those moved
    assert!((1700..2300).contains(&moved), "{moved}");
    assert!(
        counts.iter().all(|&c| (1700..2300).contains(&c)),
        "{counts:?}"
    );
    // without the key: round robin
    let firsts: Vec<usize> = (0..5)
        .map(|_| s5.candidates(&five, None, 0, 0)[0])
        .collect();
    assert_eq!(firsts, [0, 1, 2, 3, 4]);
}

#[test]
fn every_server_is_a_candidate_once_with_backups_after_primaries() {
    let mut servers = urls(3);
    servers[1]["backup"] = serde_json::json!(true);
    let o = origin(servers, serde_json::json!({}));
    let mut state = PoolState::new(&o);
    for _ in 0..4 {
        let order = state.candidates(&o, None, 0, 0);
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 1, "the backup comes last: {order:?}");
    }
}

#[test]
fn ejection_skips_a_failing_server_then_lets_traffic_try_it_again() {
    let o = origin(
        urls(3),
        serde_json::json!({ "eject": { "after_failures": 2, "for_ms": 1000, "max_for_ms": 3000 } }),
    );
    let mut state = PoolState::new(&o);
    assert_eq!(state.record_failure(1, &o.eject, 0), None);
    assert_eq!(
        state.record_failure(1, &o.eject, 10),
        Some(1000),
        "the second failure in a row ejects"
    );
    assert!(state.ejected(1, 10) && state.ejected(1, 1009) && !state.ejected(1, 1010));
    for _ in 0..6 {
        let order = state.candidates(&o, None, 500, 0);
        assert_eq!(order[2], 1, "ejected servers come last: {order:?}");
    }
    // ejections in a row double, capped
    state.record_failure(1, &o.eject, 2000);
    assert_eq!(state.record_failure(1, &o.eject, 2000), Some(2000));
    state.record_failure(1, &o.eject, 5000);
    assert_eq!(state.record_failure(1, &o.eject, 5000), Some(3000));
    // a success resets everything
    state.record_success(1);
    assert!(!state.ejected(1, 5001));
    state.record_failure(1, &o.eject, 9000);
    assert_eq!(state.record_failure(1, &o.eject, 9000), Some(1000));
    // a success between failures breaks the run
    state.record_success(2);
    state.record_failure(2, &o.eject, 0);
    state.record_success(2);
    assert_eq!(state.record_failure(2, &o.eject, 0), None);
}

#[test]
fn when_everything_is_ejected_the_least_recently_ejected_is_tried_first() {
    let o = origin(
        urls(3),
        serde_json::json!({ "eject": { "after_failures": 1, "for_ms": 10000 } }),
    );
    let mut state = PoolState::new(&o);
    state.record_failure(2, &o.eject, 100);
    state.record_failure(0, &o.eject, 200);
    state.record_failure(1, &o.eject, 300);
    assert_eq!(state.candidates(&o, None, 400, 0), [2, 0, 1]);
}

#[test]
fn backups_take_over_when_every_primary_is_ejected() {
    let servers = serde_json::json!([
        { "url": "http://a.example" }, { "url": "http://b.example" }, { "url": "http://dr.example", "backup": true }
    ]);
    let o = origin(
        servers,
        serde_json::json!({ "eject": { "after_failures": 1, "for_ms": 1000 } }),
    );
    let mut state = PoolState::new(&o);
    state.record_failure(0, &o.eject, 0);
    state.record_failure(1, &o.eject, 0);
    assert_eq!(state.candidates(&o, None, 10, 0)[0], 2);
    // after the ejection time, the primaries are back in front
    assert_ne!(state.candidates(&o, None, 1000, 0)[0], 2);
}

#[test]
fn never_ejecting_is_a_choice() {
    let o = origin(
        urls(2),
        serde_json::json!({ "eject": { "after_failures": 0 } }),
    );
    let mut state = PoolState::new(&o);
    for t in 0..100 {
        assert_eq!(state.record_failure(0, &o.eject, t), None);
    }
}

#[test]
fn retry_plans_by_method_and_failure() {
    let default = origin(urls(3), serde_json::json!({}));
    let custom = origin(
        urls(3),
        serde_json::json!({ "retry": { "attempts": 3, "on": ["timeout", 503], "non_idempotent": true } }),
    );
    let r = &default.retry;
    for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
        assert!(r.may_retry_method(m), "{m}");
    }
    for m in ["POST", "PATCH"] {
        assert!(!r.may_retry_method(m), "{m}");
        assert!(custom.retry.may_retry_method(m), "{m} with non_idempotent");
    }
    assert!(r.retries_on(Failure::Connect) && r.retries_on(Failure::Timeout));
    assert!(
        !r.retries_on(Failure::Status(503)),
        "statuses only when listed"
    );
    assert!(!custom.retry.retries_on(Failure::Connect));
    assert!(custom.retry.retries_on(Failure::Status(503)));
    assert!(!custom.retry.retries_on(Failure::Status(502)));
    let single = origin(urls(2), serde_json::json!({ "retry": { "attempts": 1 } }));
    assert!(!single.retry.may_retry_method("GET"));
}

#[test]
fn budget_arithmetic() {
    let o = origin(urls(5), serde_json::json!({ "retry": { "attempts": 4 } }));
    let r = &o.retry;
    assert_eq!(r.attempts_for("GET", 5, SUBREQUEST_LIMIT, true), 4);
    assert_eq!(
        r.attempts_for("GET", 2, SUBREQUEST_LIMIT, true),
        2,
        "never more than the servers"
    );
    assert_eq!(
        r.attempts_for("GET", 5, 3, true),
        3,
        "never more than the subrequests left"
    );
    assert_eq!(r.attempts_for("GET", 5, 0, true), 0);
    assert_eq!(
        r.attempts_for("GET", 5, SUBREQUEST_LIMIT, false),
        1,
        "a body that cannot be replayed"
    );
    assert_eq!(
        r.attempts_for("POST", 5, SUBREQUEST_LIMIT, true),
        1,
        "not idempotent"
    );
}

#[test]
fn ejections_and_returns_are_told_and_the_others_word_is_heeded() {
    let o = origin(
        urls(3),
        serde_json::json!({ "eject": { "after_failures": 1, "for_ms": 1000 } }),
    );
    let mut a = PoolState::new(&o);
    let mut b = PoolState::new(&o);
    let key = health_key("o", &o.servers[2]);
    assert!(key.starts_with("https://health.portcullis.invalid/v1/"));
    assert_ne!(key, health_key("o", &o.servers[1]));
    assert_ne!(
        key,
        health_key("other", &o.servers[2]),
        "another pool's server is another key"
    );
    // A failure that ejects is told once, with its end.
    assert_eq!(a.record_failure(2, &o.eject, 10_000), Some(1000));
    assert_eq!(
        a.take_notices(),
        [Notice::Ejected {
            key: key.clone(),
            until_ms: 11_000
        }]
    );
    assert!(a.take_notices().is_empty());
    // The other isolate reads on its first request, then every HEALTH_READ_MS, never between.
    assert_eq!(b.reads_due(10_000).map(<[_]>::len), Some(3));
    assert!(b.reads_due(10_000 + HEALTH_READ_MS - 1).is_none());
    assert!(b.reads_due(10_000 + HEALTH_READ_MS).is_some());
    // What it reads: the server is last in its order until the ejection ends, as if its own.
    assert!(b.learned(&key, 11_000));
    assert!(
        !b.learned("https://health.portcullis.invalid/v1/0", 11_000),
        "not this pool's"
    );
    for _ in 0..6 {
        assert_eq!(b.candidates(&o, None, 10_500, 0).last(), Some(&2));
    }
    assert!(
        !b.ejected(2, 11_000),
        "the peer's ejection ends when it said"
    );
    // A server the isolate knew to be ejected answers: its return is told.
    b.record_success(2);
    assert_eq!(b.take_notices(), [Notice::Returned { key: key.clone() }]);
    // A success of a server never ejected tells nothing.
    b.record_success(1);
    assert!(b.take_notices().is_empty());
    // One server: nothing to skip to, nothing read.
    let single = origin(urls(1), serde_json::json!({}));
    assert!(PoolState::new(&single).reads_due(1).is_none());
}
