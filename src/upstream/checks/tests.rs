use super::*;
use crate::config::Config;
use crate::upstream::{health_key, PoolState};

fn config(origins: serde_json::Value) -> Config {
    let text = serde_json::json!({ "origins": origins, "routes": [] });
    Config::from_json(&text.to_string()).unwrap()
}

fn problems(origins: serde_json::Value) -> String {
    let text = serde_json::json!({ "origins": origins, "routes": [] });
    Config::from_json(&text.to_string())
        .unwrap_err()
        .to_string()
}

fn servers(n: usize) -> serde_json::Value {
    (0..n)
        .map(|i| serde_json::json!({ "url": format!("http://s{i}.internal.example/base") }))
        .collect()
}

fn result(healthy: bool, at_ms: u64) -> CheckResult {
    CheckResult {
        healthy,
        at_ms,
        status: if healthy { 200 } else { 503 },
        reason: String::new(),
        server: String::new(),
    }
}

#[test]
fn defaults_and_problems_name_their_json_path() {
    let cfg = config(serde_json::json!({ "p": { "servers": servers(1), "health": {} } }));
    assert_eq!(
        cfg.origins[0].health,
        Some(HealthCheck {
            path: "/healthz".into(),
            interval_s: 60,
            timeout_ms: 2000,
            expect: vec![200],
        })
    );
    let cases = [
        (
            serde_json::json!({ "path": "healthz" }),
            "origins.p.health.path",
        ),
        (
            serde_json::json!({ "path": "/h?x=1" }),
            "origins.p.health.path",
        ),
        (
            serde_json::json!({ "path": "/h z" }),
            "origins.p.health.path",
        ),
        (
            serde_json::json!({ "interval_s": 10 }),
            "origins.p.health.interval_s",
        ),
        (
            serde_json::json!({ "timeout_ms": 0 }),
            "origins.p.health.timeout_ms",
        ),
        (
            serde_json::json!({ "timeout_ms": 10_001 }),
            "origins.p.health.timeout_ms",
        ),
        (
            serde_json::json!({ "expect": [] }),
            "origins.p.health.expect",
        ),
        (
            serde_json::json!({ "expect": [200, 99] }),
            "origins.p.health.expect[1]",
        ),
        (
            serde_json::json!({ "expect": ["200"] }),
            "origins.p.health.expect[0]",
        ),
        (serde_json::json!({ "every": 5 }), "origins.p"),
    ];
    for (health, path) in cases {
        let text =
            problems(serde_json::json!({ "p": { "servers": servers(1), "health": health } }));
        assert!(text.contains(path), "{health}: {text}");
    }
}

#[test]
fn plan_probes_due_servers_never_checked_first_and_bounded() {
    let cfg = config(serde_json::json!({
        "checked": { "servers": servers(3), "health": { "interval_s": 120, "timeout_ms": 500 } },
        "unchecked": { "servers": servers(2) },
        "bound": { "servers": [{ "binding": "USERS" }], "health": { "path": "/up" } },
    }));
    let o = &cfg.origins;
    let at = |name: &str| o.iter().position(|x| x.name == name).unwrap();
    let (checked, bound) = (at("checked"), at("bound"));
    let key = |p: usize, s: usize| health_key(&o[p].name, &o[p].servers[s]);
    let now = 1_000_000;
    let mut previous = Checks::default();
    previous
        .servers
        .insert(key(checked, 0), result(true, now - 119_000)); // due within the slack
    previous
        .servers
        .insert(key(checked, 1), result(false, now - 60_000)); // not due
    let plan = plan(o, &previous, now);
    let got: Vec<(usize, usize)> = plan.probes.iter().map(|p| (p.origin, p.server)).collect();
    let mut never = vec![(checked, 2), (bound, 0)];
    never.sort();
    never.push((checked, 0));
    assert_eq!(
        got, never,
        "never checked first, in config order, then the oldest"
    );
    assert_eq!(plan.deferred, 0);
    let probe = |o: usize, s: usize| {
        plan.probes
            .iter()
            .find(|p| (p.origin, p.server) == (o, s))
            .unwrap()
    };
    assert_eq!(
        probe(checked, 2).url,
        "http://s2.internal.example/base/healthz"
    );
    assert_eq!(probe(checked, 2).timeout_ms, 500);
    assert_eq!(probe(checked, 2).via, None);
    assert_eq!(probe(bound, 0).via.as_deref(), Some("USERS"));
    assert!(
        probe(bound, 0).url.ends_with("/up"),
        "{}",
        probe(bound, 0).url
    );

    let many = config(serde_json::json!({ "p": { "servers": servers(45), "health": {} } }));
    let plan = super::plan(&many.origins, &Checks::default(), now);
    assert_eq!(plan.probes.len(), MAX_PROBES_PER_RUN);
    assert_eq!(plan.deferred, 5);
    // The next run takes the five left first.
    let new = plan
        .probes
        .iter()
        .map(|p| (p.key.clone(), result(true, now)))
        .collect();
    let after = record(&many.origins, &Checks::default(), new);
    let next = super::plan(&many.origins, &after, now + 60_000);
    let first: Vec<usize> = next.probes.iter().take(5).map(|p| p.server).collect();
    assert_eq!(first, [40, 41, 42, 43, 44]);
}

#[test]
fn judge_reads_each_outcome() {
    let check = HealthCheck {
        path: "/healthz".into(),
        interval_s: 60,
        timeout_ms: 2000,
        expect: vec![200, 204],
    };
    let cases = [
        (Outcome::Response(200), true, 200, ""),
        (Outcome::Response(204), true, 204, ""),
        (Outcome::Response(503), false, 503, "status 503"),
        (Outcome::Response(301), false, 301, "status 301"),
        (
            Outcome::Failed("refused".into()),
            false,
            0,
            "failed: refused",
        ),
        (Outcome::TimedOut, false, 0, "within 2000 ms"),
        (
            Outcome::Unbound("USERS".into()),
            false,
            0,
            "binding USERS is not bound",
        ),
    ];
    for (outcome, healthy, status, reason) in cases {
        let r = judge(&check, &outcome, "s".into(), 7);
        assert_eq!(
            (r.healthy, r.status, r.at_ms),
            (healthy, status, 7),
            "{outcome:?}"
        );
        assert!(r.reason.contains(reason), "{outcome:?}: {}", r.reason);
        assert_eq!(r.reason.is_empty(), healthy, "{outcome:?}");
    }
}

#[test]
fn record_merges_and_drops_servers_without_a_check() {
    let cfg = config(serde_json::json!({
        "p": { "servers": servers(2), "health": {} },
        "q": { "servers": servers(1) },
    }));
    let o = &cfg.origins;
    let (p, q) = if o[0].name == "p" { (0, 1) } else { (1, 0) };
    let k0 = health_key(&o[p].name, &o[p].servers[0]);
    let k1 = health_key(&o[p].name, &o[p].servers[1]);
    let kq = health_key(&o[q].name, &o[q].servers[0]);
    let mut previous = Checks::default();
    previous.servers.insert(k0.clone(), result(false, 1));
    previous.servers.insert(k1.clone(), result(false, 1));
    previous.servers.insert("gone".into(), result(false, 1));
    let after = record(
        o,
        &previous,
        vec![
            (k1.clone(), result(true, 2)),
            (kq.clone(), result(false, 2)),
        ],
    );
    let keys: Vec<&String> = after.servers.keys().collect();
    let mut want = vec![&k0, &k1];
    want.sort();
    assert_eq!(keys, want);
    assert!(after.servers[&k1].healthy);
    assert_eq!(Checks::from_json(&after.to_json()), after);
    assert_eq!(Checks::from_json("not json"), Checks::default());
    assert_eq!(Checks::from_json(""), Checks::default());
}

#[test]
fn reading_results_takes_failed_servers_out_until_a_check_passes() {
    let cfg = config(serde_json::json!({
        "p": { "servers": servers(3), "health": { "interval_s": 60 } },
        "q": { "servers": servers(2) },
    }));
    let o = &cfg.origins;
    let p = o.iter().position(|x| x.name == "p").unwrap();
    let key = |s: usize| health_key(&o[p].name, &o[p].servers[s]);
    let now = 10_000_000;
    let cases = [
        // (result of server 1, down)
        (None, false),
        (Some(result(true, now - 1000)), false),
        (Some(result(false, now - 1000)), true),
        (Some(result(false, now - 239_000)), true),
        // Older than three intervals and a minute: the runs stopped, no longer believed.
        (Some(result(false, now - 241_000)), false),
    ];
    for (r, down) in cases {
        let mut checks = Checks::default();
        if let Some(r) = r.clone() {
            checks.servers.insert(key(1), r);
        }
        let downs = downs(o, &checks, now);
        assert_eq!(downs, [(p, 0, false), (p, 1, down), (p, 2, false)], "{r:?}");

        let mut pool = PoolState::new(&o[p]);
        for &(_, s, d) in &downs {
            pool.checked(s, d, now);
        }
        let traffic: Vec<usize> = (0..6)
            .map(|_| pool.candidates(&o[p], None, now, 0)[0])
            .collect();
        assert_eq!(traffic.contains(&1), !down, "{r:?}: {traffic:?}");
        if down {
            // Tried last, and only when the others failed.
            assert_eq!(pool.candidates(&o[p], None, now, 0).last(), Some(&1));
            // A passive success does not bring it back; a passing check does.
            pool.record_success(1);
            assert!(pool.ejected(1, now));
            pool.checked(1, false, now);
            assert!(!pool.ejected(1, now));
        }
    }
}

#[test]
fn passive_and_active_combine() {
    let cfg = config(serde_json::json!({
        "p": { "servers": servers(3), "health": {}, "eject": { "after_failures": 1 } },
    }));
    let o = &cfg.origins[0];
    let mut pool = PoolState::new(o);
    pool.checked(0, true, 0);
    pool.record_failure(1, &o.eject, 0);
    assert_eq!(
        pool.candidates(o, None, 1, 0)[0],
        2,
        "one down by check, one ejected"
    );
    pool.checked(0, false, 2);
    assert!(
        pool.ejected(1, 2),
        "a passing check of another server leaves the ejection"
    );
    assert!(!pool.ejected(0, 2));
}
