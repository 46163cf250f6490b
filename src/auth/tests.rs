//! The auth core: Wycheproof vectors through the signature layer, and one case per invariant.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::verify::{verify_hmac, verify_native};
use super::*;
use crate::Config;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
const NOW: i64 = 1_800_000_000;

// ----------------------------------------------------------------------------------------------
// Helpers

/// The Wycheproof vectors in `tests/vectors/wycheproof`. Missing vectors fail the test loudly;
/// they are never skipped.
fn vectors(name: &str) -> Value {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "vectors",
        "wycheproof",
        name,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the Wycheproof vectors must be at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact token signed with HMAC-SHA256 (or an arbitrary `alg` label) over `header`/`claims`.
fn hs_token(header: Value, claims: Value, secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let alg = header["alg"].as_str().unwrap_or("HS256");
    let sig = match alg {
        "HS384" => {
            let mut m = Hmac::<sha2::Sha384>::new_from_slice(secret).unwrap();
            m.update(input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        "HS512" => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(secret).unwrap();
            m.update(input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            m.update(input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    format!("{input}.{}", b64(&sig))
}

fn good_claims() -> Value {
    json!({
        "sub": "alice", "iss": "https://id.example/", "aud": ["api", "other"],
        "exp": NOW + 300, "iat": NOW - 10, "nbf": NOW - 10,
        "scope": "orders:read orders:write", "email": "alice@example.com",
        "roles": ["admin", "dev"], "n": 7, "ok": true, "evil": "a\r\nx-injected: 1"
    })
}

fn config(policy: Value) -> Config {
    let cfg = json!({
        "origins": { "o": { "servers": [{ "url": "https://o.example" }] } },
        "auth": { "main": policy },
        "routes": [
            { "name": "r", "path": "/r", "origin": "o", "auth": "main",
              "request_headers": { "set": { "x-sub-copy": "{claim.sub}" } } },
            { "name": "opt", "path": "/opt", "origin": "o", "auth": { "use": "main", "optional": true } },
            { "name": "pub", "path": "/pub", "origin": "o" }
        ]
    });
    Config::from_json(&cfg.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn hs_policy() -> Value {
    json!({
        "algorithms": ["HS256", "HS512"],
        "hmac_secret_env": "JWT_SECRET",
        "issuers": ["https://id.example/"],
        "audiences": ["api"],
        "max_age_s": 3600,
        "require": { "scope": ["orders:read"] },
        "forward_claims": { "sub": "x-user-id", "email": "x-user-email", "roles": "x-roles", "evil": "x-evil" }
    })
}

/// The whole native pipeline for one token on a policy: prepare, verify (HMAC with SECRET, or
/// the policy's inline keys natively), finish.
fn run(policy: &Policy, token: &str, now: i64) -> Result<Identity, AuthError> {
    let p = policy.prepare(token)?;
    let ok = if p.alg.is_hmac() {
        verify_hmac(p.alg, SECRET, p.signing_input.as_bytes(), &p.signature)
    } else {
        let keys = policy
            .jwks
            .as_ref()
            .ok_or(AuthError::KeysUnavailable("jwks"))?;
        keys.candidates(p.alg, p.kid.as_deref())?
            .iter()
            .any(|k| verify_native(p.alg, k, p.signing_input.as_bytes(), &p.signature))
    };
    if !ok {
        return Err(AuthError::BadSignature);
    }
    policy.finish(&p, now)
}

fn header() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

// ----------------------------------------------------------------------------------------------
// Invariants, one case each

#[test]
fn a_valid_token_gives_the_identity_and_claim_headers() {
    let cfg = config(hs_policy());
    let policy = &cfg.policies[0];
    let id = run(policy, &hs_token(header(), good_claims(), SECRET), NOW).unwrap();
    assert_eq!(id.claims["sub"], "alice");
    assert_eq!(id.claims["n"], "7");
    assert_eq!(id.claims["ok"], "true");
    assert_eq!(id.claims["roles"], "admin,dev");
    assert!(
        !id.claims.contains_key("evil"),
        "control characters are never forwarded"
    );
    let mut fwd = id.forward.clone();
    fwd.sort();
    assert_eq!(
        fwd,
        [
            ("x-roles".to_string(), "admin,dev".to_string()),
            ("x-user-email".into(), "alice@example.com".into()),
            ("x-user-id".into(), "alice".into()),
        ]
    );
    assert_eq!(id.iss.as_deref(), Some("https://id.example/"));
    assert_eq!(id.exp, NOW + 300);
}

#[test]
fn each_invariant_refuses_with_its_reason() {
    let cfg = config(hs_policy());
    let policy = &cfg.policies[0];
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        hs_token(header(), c, SECRET)
    };
    let valid = hs_token(header(), good_claims(), SECRET);
    let (h, p, s) = {
        let v: Vec<&str> = valid.split('.').collect();
        (v[0].to_string(), v[1].to_string(), v[2].to_string())
    };
    let mut flipped = URL_SAFE_NO_PAD.decode(&s).unwrap();
    flipped[0] ^= 1;
    let none_header = b64(json!({"alg": "none"}).to_string().as_bytes());
    let cases: Vec<(&str, String, AuthError)> = vec![
        (
            "alg none",
            format!("{none_header}.{p}."),
            AuthError::AlgorithmNotAllowed,
        ),
        (
            "alg none with a signature",
            format!("{none_header}.{p}.{s}"),
            AuthError::AlgorithmNotAllowed,
        ),
        (
            "alg not listed",
            hs_token(json!({"alg": "HS384"}), good_claims(), SECRET),
            AuthError::AlgorithmNotAllowed,
        ),
        (
            "alg listed in another case",
            hs_token(json!({"alg": "hs256"}), good_claims(), SECRET),
            AuthError::AlgorithmNotAllowed,
        ),
        (
            "jku",
            hs_token(
                json!({"alg": "HS256", "jku": "https://evil.example/k"}),
                good_claims(),
                SECRET,
            ),
            AuthError::ForbiddenHeader("jku"),
        ),
        (
            "x5u",
            hs_token(
                json!({"alg": "HS256", "x5u": "https://evil.example/c"}),
                good_claims(),
                SECRET,
            ),
            AuthError::ForbiddenHeader("x5u"),
        ),
        (
            "embedded jwk",
            hs_token(
                json!({"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}),
                good_claims(),
                SECRET,
            ),
            AuthError::ForbiddenHeader("jwk"),
        ),
        (
            "x5c",
            hs_token(
                json!({"alg": "HS256", "x5c": ["MII"]}),
                good_claims(),
                SECRET,
            ),
            AuthError::ForbiddenHeader("x5c"),
        ),
        (
            "unknown crit",
            hs_token(
                json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
                good_claims(),
                SECRET,
            ),
            AuthError::UnknownCrit,
        ),
        (
            "empty crit",
            hs_token(json!({"alg": "HS256", "crit": []}), good_claims(), SECRET),
            AuthError::UnknownCrit,
        ),
        (
            "two parts",
            format!("{h}.{p}"),
            AuthError::Malformed("not three parts"),
        ),
        (
            "four parts",
            format!("{valid}.{s}"),
            AuthError::Malformed("not three parts"),
        ),
        (
            "padding",
            format!("{h}.{p}.{s}="),
            AuthError::Malformed("not base64url"),
        ),
        (
            "standard base64",
            format!("{h}.{p}+.{s}"),
            AuthError::Malformed("not base64url"),
        ),
        (
            "over the size cap",
            format!("{h}.{}.{s}", "A".repeat(9000)),
            AuthError::TooLarge,
        ),
        (
            "signature bit flip",
            format!("{h}.{p}.{}", b64(&flipped)),
            AuthError::BadSignature,
        ),
        (
            "truncated signature",
            format!("{h}.{p}.{}", &s[..8]),
            AuthError::BadSignature,
        ),
        (
            "wrong secret",
            hs_token(
                header(),
                good_claims(),
                b"another-secret-of-at-least-32-bytes!!",
            ),
            AuthError::BadSignature,
        ),
        (
            "no exp",
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            AuthError::MissingExp,
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(NOW - 61)),
            AuthError::Expired,
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(NOW + 61)),
            AuthError::NotYetValid,
        ),
        (
            "iat in the future",
            with(&|c| c["iat"] = json!(NOW + 61)),
            AuthError::IssuedInFuture,
        ),
        (
            "older than max_age_s",
            with(&|c| c["iat"] = json!(NOW - 3600 - 61)),
            AuthError::TooOld,
        ),
        (
            "no iat with max_age_s",
            with(&|c| drop(c.as_object_mut().unwrap().remove("iat"))),
            AuthError::TooOld,
        ),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.example/")),
            AuthError::WrongIssuer,
        ),
        (
            "no iss",
            with(&|c| drop(c.as_object_mut().unwrap().remove("iss"))),
            AuthError::WrongIssuer,
        ),
        (
            "wrong aud",
            with(&|c| c["aud"] = json!("web")),
            AuthError::WrongAudience,
        ),
        (
            "wrong aud array",
            with(&|c| c["aud"] = json!(["web", "x"])),
            AuthError::WrongAudience,
        ),
        (
            "missing scope",
            with(&|c| c["scope"] = json!("orders:write")),
            AuthError::InsufficientScope,
        ),
        (
            "scope substring",
            with(&|c| c["scope"] = json!("orders:readx")),
            AuthError::InsufficientScope,
        ),
        (
            "no scope",
            with(&|c| drop(c.as_object_mut().unwrap().remove("scope"))),
            AuthError::InsufficientScope,
        ),
        (
            "claims not an object",
            format!("{h}.{}.{s}", b64(b"[1]")),
            AuthError::BadSignature,
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(run(policy, &token, NOW).unwrap_err(), want, "{name}");
    }
    // A claims payload that is not an object, correctly signed, is refused after the signature.
    let input = format!("{h}.{}", b64(b"\"foo\""));
    let sig = {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
        m.update(input.as_bytes());
        b64(&m.finalize().into_bytes())
    };
    assert_eq!(
        run(policy, &format!("{input}.{sig}"), NOW),
        Err(AuthError::BadClaims)
    );
}

#[test]
fn leeway_and_claim_shapes_are_accepted_where_they_should_be() {
    let cfg = config(hs_policy());
    let policy = &cfg.policies[0];
    let ok = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        run(policy, &hs_token(header(), c, SECRET), NOW)
    };
    ok(&|c| c["exp"] = json!(NOW - 59)).expect("exp within leeway");
    ok(&|c| c["nbf"] = json!(NOW + 59)).expect("nbf within leeway");
    ok(&|c| c["aud"] = json!("api")).expect("aud as a string");
    ok(&|c| c["scope"] = json!(["x", "orders:read"])).expect("scope as an array");
    ok(&|c| drop(c.as_object_mut().unwrap().remove("nbf"))).expect("nbf is optional");
    // HS512 is listed too.
    run(
        policy,
        &hs_token(json!({"alg": "HS512"}), good_claims(), SECRET),
        NOW,
    )
    .unwrap();
}

#[test]
fn tokens_are_found_where_the_policy_says() {
    use super::token::extract;
    let sources = [
        TokenSource::Authorization,
        TokenSource::Header("x-token".into()),
        TokenSource::Cookie("access_token".into()),
    ];
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        (&[("authorization", "Bearer abc")], Some("abc")),
        (&[("authorization", "bearer abc")], Some("abc")),
        (&[("authorization", "BEARER  abc ")], Some("abc")),
        (&[("authorization", "Basic abc")], None),
        (&[("authorization", "Bearer")], None),
        (&[("x-token", "def")], Some("def")),
        (&[("cookie", "a=1; access_token=ghi; b=2")], Some("ghi")),
        (&[("cookie", "xaccess_token=ghi")], None),
        (&[("cookie", "a=1"), ("x-token", "def")], Some("def")),
        (&[], None),
    ];
    for (headers, want) in cases {
        let head = crate::request::Head::read(
            "GET",
            "https://a/",
            &h(headers),
            crate::request::Underscores::Drop,
        )
        .unwrap();
        assert_eq!(extract(&sources, &head), *want, "{headers:?}");
    }
}

#[test]
fn optional_routes_and_claim_placeholders_through_the_gateway() {
    use crate::gateway::{AuthStep, Gateway, Incoming};
    let gw = Gateway::new(config(hs_policy()));
    let token = hs_token(header(), good_claims(), SECRET);
    let bearer = format!("Bearer {token}");
    let req = |path: &'static str, headers: Vec<(String, String)>| (path, headers);
    let spoof = ("x-user-id".to_string(), "mallory".to_string());

    // Public route: the spoofed claim header is dropped.
    let (p, h) = req("https://api.example/pub", vec![spoof.clone()]);
    let plan = gw
        .plan(
            &Incoming {
                method: "GET",
                url: p,
                headers: &h,
            },
            "rid",
        )
        .unwrap();
    assert!(!plan.headers.iter().any(|(n, _)| n == "x-user-id"));

    // Required route without a token: 401 missing_token.
    let (p, h) = req("https://api.example/r", vec![]);
    let refusal = gw
        .matched(&Incoming {
            method: "GET",
            url: p,
            headers: &h,
        })
        .unwrap_err();
    assert_eq!(refusal.error.status(), 401);

    // Optional route: no token is anonymous; a bad token is still 401.
    let (p, h) = req("https://api.example/opt", vec![spoof.clone()]);
    let m = gw
        .matched(&Incoming {
            method: "GET",
            url: p,
            headers: &h,
        })
        .unwrap();
    assert!(matches!(m.auth, AuthStep::Anonymous));
    let (p, h) = req(
        "https://api.example/opt",
        vec![("authorization".into(), "Bearer a.b".into())],
    );
    assert_eq!(
        gw.matched(&Incoming {
            method: "GET",
            url: p,
            headers: &h
        })
        .unwrap_err()
        .error
        .status(),
        401
    );

    // Required route with a good token: verify, finish, forward with claims.
    let h = vec![("authorization".to_string(), bearer), spoof];
    let inc = Incoming {
        method: "GET",
        url: "https://api.example/r",
        headers: &h,
    };
    let m = gw.matched(&inc).unwrap();
    let head = gw.read(&inc).unwrap();
    let AuthStep::Verify { token: t, .. } = &m.auth else {
        panic!("expected a token to verify")
    };
    assert!(verify_hmac(
        t.alg,
        SECRET,
        t.signing_input.as_bytes(),
        &t.signature
    ));
    let id = gw.authenticated(&m, NOW).unwrap();
    let plan = gw.forward_plan(&m, &head, "rid", Some(&id));
    let get = |n: &str| {
        plan.headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-user-id"), ["alice"]);
    assert_eq!(get("x-sub-copy"), ["alice"]);
    assert!(get("x-evil").is_empty());
    // A token the caller's cache holds is not parsed again.
    let m2 = gw.matched_with(&head, |p, t| p == 0 && t == token).unwrap();
    assert!(matches!(&m2.auth, AuthStep::Cached { token: t, .. } if *t == token));
    let m3 = gw.matched_with(&head, |_, t| t != token).unwrap();
    assert!(matches!(m3.auth, AuthStep::Verify { .. }));
    // Outside the Worker, plan_at verifies HS* with the secret it is given.
    let secret = |name: &str| (name == "JWT_SECRET").then(|| SECRET.to_vec());
    let plan = gw.plan_at(&inc, "rid", NOW, secret).unwrap();
    assert!(plan.headers.contains(&("x-user-id".into(), "alice".into())));
    let wrong = |_: &str| Some(b"another-secret-of-at-least-32-bytes!!".to_vec());
    assert_eq!(
        gw.plan_at(&inc, "rid", NOW, wrong).unwrap_err().error,
        crate::GatewayError::Auth(AuthError::BadSignature)
    );
    let short = |_: &str| Some(b"short".to_vec());
    assert_eq!(
        gw.plan_at(&inc, "rid", NOW, short)
            .unwrap_err()
            .error
            .status(),
        500
    );
    // The same token, expired by then: 401.
    assert_eq!(
        gw.authenticated(&m, NOW + 3600).unwrap_err().error.status(),
        401
    );
}

#[test]
fn key_choice_rules() {
    let rsa_n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    let keys = KeySet::from_config(&json!({"keys": [
        {"kty": "RSA", "kid": "r1", "n": rsa_n, "e": "AQAB", "alg": "RS256", "use": "sig"},
        {"kty": "RSA", "kid": "r2", "n": rsa_n, "e": "AQAB", "use": "enc"},
        {"kty": "RSA", "kid": "r3", "n": rsa_n, "e": "AQAB", "key_ops": ["encrypt"]},
        {"kty": "RSA", "n": rsa_n, "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "e1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    ]}))
    .unwrap();
    let kids = |r: Result<Vec<&Jwk>, AuthError>| {
        r.map(|v| {
            v.iter()
                .map(|k| k.kid.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        kids(keys.candidates(Alg::Rs256, Some("r1"))),
        Ok(vec!["r1".into()])
    );
    assert_eq!(
        kids(keys.candidates(Alg::Ps256, Some("r1"))),
        Err(AuthError::NoFittingKey),
        "alg pinned"
    );
    assert_eq!(
        kids(keys.candidates(Alg::Rs256, Some("r2"))),
        Err(AuthError::NoFittingKey),
        "use enc"
    );
    assert_eq!(
        kids(keys.candidates(Alg::Rs256, Some("r3"))),
        Err(AuthError::NoFittingKey),
        "key_ops"
    );
    assert_eq!(
        kids(keys.candidates(Alg::Es256, Some("e1"))),
        Err(AuthError::NoFittingKey),
        "kty"
    );
    assert_eq!(
        kids(keys.candidates(Alg::EdDsa, Some("e1"))),
        Ok(vec!["e1".into()])
    );
    assert_eq!(
        kids(keys.candidates(Alg::Rs256, Some("nope"))),
        Err(AuthError::UnknownKid)
    );
    assert_eq!(
        kids(keys.candidates(Alg::Rs256, None)),
        Ok(vec!["r1".into(), String::new()])
    );
    assert_eq!(
        kids(keys.candidates(Alg::Es256, None)),
        Err(AuthError::NoFittingKey)
    );

    // Refused as keys: private, symmetric, weak RSA, other curves.
    for (bad, why) in [
        (json!({"kty": "oct", "k": "AAAA"}), "symmetric"),
        (json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}), "bits"),
        (
            json!({"kty": "RSA", "n": rsa_n, "e": "AQAB", "d": "AQAB"}),
            "private",
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
            "P-256",
        ),
        (json!({"kty": "OKP", "crv": "X25519", "x": "AA"}), "Ed25519"),
    ] {
        let err = Jwk::from_value(&bad).unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn policy_validation_rejections() {
    let base = |policy: Value, route_auth: Value| {
        json!({
            "origins": { "o": { "servers": [{ "url": "https://o.example" }] } },
            "auth": { "main": policy },
            "routes": [{ "name": "r", "path": "/r", "origin": "o", "auth": route_auth }]
        })
        .to_string()
    };
    let cases: Vec<(Value, Value, &str)> = vec![
        (hs_policy(), json!("nope"), "$.routes[0].auth"),
        (hs_policy(), json!({"use": "nope"}), "$.routes[0].auth.use"),
        (
            json!({"algorithms": ["RS256"]}),
            json!("main"),
            "$.auth.main",
        ),
        (
            json!({"algorithms": ["HS256"]}),
            json!("main"),
            "$.auth.main",
        ),
        (
            json!({"algorithms": [], "jwks_url": "https://id.example/k"}),
            json!("main"),
            "$.auth.main.algorithms",
        ),
        (
            json!({"algorithms": ["none"], "jwks_url": "https://id.example/k"}),
            json!("main"),
            "$.auth.main.algorithms[0]",
        ),
        (
            json!({"algorithms": ["ES384"], "jwks_url": "https://id.example/k"}),
            json!("main"),
            "$.auth.main.algorithms[0]",
        ),
        (
            json!({"algorithms": ["RS256"], "jwks_url": "ftp://id.example/k"}),
            json!("main"),
            "$.auth.main.jwks_url",
        ),
        (
            json!({"algorithms": ["RS256"], "jwks": {"keys": [{"kty": "oct", "k": "AAAA"}]}}),
            json!("main"),
            "$.auth.main.jwks.keys[0]",
        ),
        (
            json!({"algorithms": ["RS256"], "jwks_url": "https://id.example/k", "token_from": ["query:t"]}),
            json!("main"),
            "$.auth.main.token_from[0]",
        ),
        (
            json!({"algorithms": ["RS256"], "jwks_url": "https://id.example/k", "forward_claims": {"sub": "x-forwarded-user"}}),
            json!("main"),
            "$.auth.main.forward_claims.sub",
        ),
        (
            json!({"algorithms": ["RS256"], "jwks_url": "https://id.example/k", "hmac_secret_env": "S"}),
            json!("main"),
            "$.auth.main.hmac_secret_env",
        ),
        (
            json!({"algorithms": ["RS256"], "jwks_url": "https://id.example/k", "surprise": 1}),
            json!("main"),
            "$.auth.main.surprise",
        ),
    ];
    for (policy, route_auth, want) in cases {
        let errors = Config::from_json(&base(policy.clone(), route_auth)).unwrap_err();
        assert!(
            errors.0.iter().any(
                |e| e.path == want && (e.hint.is_some() || e.message.contains("unknown field"))
            ),
            "{policy}: expected a problem at {want}, got {errors}"
        );
    }
}

#[test]
fn short_hmac_secrets_never_verify() {
    let input = b"a.b";
    use hmac::{Hmac, Mac};
    let short = b"only-31-bytes-of-secret-here!!!";
    assert_eq!(short.len(), 31);
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(short).unwrap();
    m.update(input);
    let sig = m.finalize().into_bytes();
    assert!(!verify_hmac(Alg::Hs256, short, input, &sig));
    assert!(AuthError::KeysUnavailable("hmac_secret").is_config_problem());
}

// ----------------------------------------------------------------------------------------------
// Wycheproof

/// Valid Wycheproof JWS cases the gateway refuses on purpose, by test id, with the reason.
fn deliberate_refusal(id: u64, key: &Value, token_alg: &str) -> Option<&'static str> {
    if matches!(id, 372 | 373) {
        return Some("a character outside base64url ('?') is refused, never skipped");
    }
    if Alg::from_name(token_alg).is_none() {
        return Some("algorithm not supported (ES512)");
    }
    if key
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| a != token_alg)
    {
        return Some("the JWK's alg differs from the token's (key-choice rule)");
    }
    None
}

#[test]
fn wycheproof_jws_through_the_signature_layer() {
    let doc = vectors("json_web_signature_test.json");
    let (mut checked, mut deliberate) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let key = group.get("public").unwrap_or(&group["private"]);
        // HMAC groups: the secret is the oct key; otherwise a key set of the public key.
        let secret = (key["kty"] == "oct")
            .then(|| URL_SAFE_NO_PAD.decode(key["k"].as_str().unwrap()).unwrap());
        let keys = Jwk::from_value(key).ok().map(|k| KeySet { keys: vec![k] });
        let policy = Policy {
            name: "w".into(),
            algorithms: Alg::ALL.to_vec(),
            jwks: keys.clone(),
            jwks_url: None,
            hmac_secret_env: None,
            issuers: vec![],
            audiences: vec![],
            leeway_s: 0,
            max_age_s: None,
            token_from: vec![TokenSource::Authorization],
            require: vec![],
            forward_claims: vec![],
            max_token_bytes: 65536,
            jwks_min_refetch_s: 30,
        };
        for t in group["tests"].as_array().unwrap() {
            let jws = t["jws"].as_str().unwrap_or("");
            let id = t["tcId"].as_u64().unwrap();
            let accepted = (|| -> Result<(), AuthError> {
                let p = policy.prepare(jws)?;
                let ok = if p.alg.is_hmac() {
                    secret.as_ref().is_some_and(|s| {
                        verify_hmac(p.alg, s, p.signing_input.as_bytes(), &p.signature)
                    })
                } else {
                    let ks = keys.as_ref().ok_or(AuthError::NoFittingKey)?;
                    ks.candidates(p.alg, p.kid.as_deref())?
                        .iter()
                        .any(|k| verify_native(p.alg, k, p.signing_input.as_bytes(), &p.signature))
                };
                if ok {
                    Ok(())
                } else {
                    Err(AuthError::BadSignature)
                }
            })();
            let valid = t["result"] == "valid";
            if valid && accepted.is_err() {
                let alg = jws
                    .split('.')
                    .next()
                    .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
                    .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
                    .and_then(|h| h["alg"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let why = deliberate_refusal(id, key, &alg);
                assert!(
                    why.is_some(),
                    "tcId {id} ({}) is valid but was refused: {accepted:?}",
                    t["comment"]
                );
                deliberate += 1;
            } else if !valid && accepted.is_ok() {
                // tcIds 367 and 370 are byte-identical to the valid tcId 357; both cannot hold.
                assert!(
                    matches!(id, 367 | 370),
                    "tcId {id} ({}) is invalid but was accepted",
                    t["comment"]
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 401, "every JWS case ran");
    assert!(
        deliberate <= 6,
        "{deliberate} valid cases refused on purpose"
    );
}

/// A raw-signature vector file: every case through `verify`, `acceptable` allowing either.
fn raw_vectors(file: &str, key_of: impl Fn(&Value) -> Option<Jwk>, alg: Alg) -> usize {
    let doc = vectors(file);
    let mut n = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key = key_of(group);
        for t in group["tests"].as_array().unwrap() {
            // A group whose public key is refused (not on the curve, ...) verifies nothing.
            let got = key.as_ref().is_some_and(|key| {
                verify_native(
                    alg,
                    key,
                    &hex(t["msg"].as_str().unwrap()),
                    &hex(t["sig"].as_str().unwrap()),
                )
            });
            match t["result"].as_str().unwrap() {
                "valid" => assert!(got, "{file} tcId {} must verify", t["tcId"]),
                "invalid" => assert!(
                    !got,
                    "{file} tcId {} ({}) must not verify",
                    t["tcId"], t["comment"]
                ),
                _ => {}
            }
            n += 1;
        }
    }
    assert_eq!(
        Some(n as u64),
        doc["numberOfTests"].as_u64(),
        "{file}: every case ran"
    );
    n
}

#[test]
fn wycheproof_es256_p1363() {
    let n = raw_vectors(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        |g| {
            // Groups without a JWK give the point in hex.
            let coord = |name: &str| {
                let mut v = hex(g["publicKey"][name].as_str()?);
                while v.len() > 32 && v[0] == 0 {
                    v.remove(0);
                }
                while v.len() < 32 {
                    v.insert(0, 0);
                }
                Some(b64(&v))
            };
            let jwk = match g.get("publicKeyJwk") {
                Some(j) => j.clone(),
                None => json!({"kty": "EC", "crv": "P-256", "x": coord("wx")?, "y": coord("wy")?}),
            };
            Jwk::from_value(&jwk).ok()
        },
        Alg::Es256,
    );
    assert!(n > 250, "{n}");
}

#[test]
fn wycheproof_ed25519() {
    let n = raw_vectors(
        "ed25519_test.json",
        |g| Jwk::from_value(&g["publicKeyJwk"]).ok(),
        Alg::EdDsa,
    );
    assert!(n > 100, "{n}");
}

#[test]
fn wycheproof_rs256() {
    let n = raw_vectors(
        "rsa_signature_2048_sha256_test.json",
        |g| {
            let mut k = g["keyJwk"].clone();
            k.as_object_mut()?.remove("alg");
            Jwk::from_value(&k).ok()
        },
        Alg::Rs256,
    );
    assert!(n > 200, "{n}");
}

#[test]
fn wycheproof_ps256() {
    let n = raw_vectors(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        |g| {
            let mut k = g["publicKeyJwk"].clone();
            k.as_object_mut()?.remove("alg");
            Jwk::from_value(&k).ok()
        },
        Alg::Ps256,
    );
    assert!(n > 50, "{n}");
}

#[test]
fn wycheproof_hs256() {
    let doc = vectors("hmac_sha256_test.json");
    let mut n = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key_bits = group["keySize"].as_u64().unwrap();
        let tag_bits = group["tagSize"].as_u64().unwrap();
        for t in group["tests"].as_array().unwrap() {
            let got = verify_hmac(
                Alg::Hs256,
                &hex(t["key"].as_str().unwrap()),
                &hex(t["msg"].as_str().unwrap()),
                &hex(t["tag"].as_str().unwrap()),
            );
            // A JWT never accepts a truncated tag or a key under 32 bytes: those valid cases are
            // refused on purpose.
            let usable = key_bits >= 256 && tag_bits == 256;
            match t["result"].as_str().unwrap() {
                "valid" if usable => assert!(got, "tcId {} must verify", t["tcId"]),
                _ if !usable => {
                    assert!(!got, "tcId {}: short key or tag must not verify", t["tcId"])
                }
                "invalid" => assert!(!got, "tcId {} must not verify", t["tcId"]),
                _ => {}
            }
            n += 1;
        }
    }
    assert_eq!(Some(n), doc["numberOfTests"].as_u64());
}

/// On an optional route keyed by a claim: an anonymous caller and a verified one never share an
/// entry, and a verified caller without the claim (or with one that has no header form) is not
/// cached at all. On a public cached route, a token in a cookie a policy reads bypasses the cache.
#[test]
fn cache_keys_never_mix_callers() {
    use crate::gateway::{CacheStep, Gateway, Incoming};
    let cfg = json!({
        "origins": { "o": { "servers": [{ "url": "https://o.example" }] } },
        "auth": { "main": {
            "algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET",
            "token_from": ["header:authorization", "cookie:access_token"]
        } },
        "routes": [
            { "name": "opt", "path": "/opt", "origin": "o", "auth": { "use": "main", "optional": true },
              "cache": { "ttl_s": 60, "key": { "claims": ["tenant"] } } },
            { "name": "pub", "path": "/pub", "origin": "o", "cache": { "ttl_s": 60 } }
        ]
    });
    let gw = Gateway::new(Config::from_json(&cfg.to_string()).unwrap());
    let secret = |name: &str| (name == "JWT_SECRET").then(|| SECRET.to_vec());
    let step = |url: &str, headers: Vec<(String, String)>| {
        gw.plan_at(
            &Incoming {
                method: "GET",
                url,
                headers: &headers,
            },
            "rid",
            NOW,
            secret,
        )
        .unwrap()
        .cache
        .unwrap()
    };
    let bearer = |claims: Value| {
        vec![(
            "authorization".to_string(),
            format!("Bearer {}", hs_token(header(), claims, SECRET)),
        )]
    };
    let claims = |extra: Value| {
        let mut c = json!({ "sub": "alice", "exp": NOW + 300 });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let anonymous = step("https://h/opt", vec![]);
    let CacheStep::Lookup { key: anon_key } = &anonymous else {
        panic!("{anonymous:?}")
    };
    let acme = step("https://h/opt", bearer(claims(json!({ "tenant": "acme" }))));
    let CacheStep::Lookup { key: acme_key } = &acme else {
        panic!("{acme:?}")
    };
    assert_ne!(anon_key, acme_key);
    let other = step(
        "https://h/opt",
        bearer(claims(json!({ "tenant": "other" }))),
    );
    assert_ne!(other, acme);
    for (extra, reason) in [
        (json!({}), "a key claim is missing"),
        (
            json!({ "tenant": { "id": 1 } }),
            "a key claim has no header form",
        ),
        (
            json!({ "tenant": "a\u{1}b" }),
            "a key claim has no header form",
        ),
        (json!({ "tenant": null }), "a key claim has no header form"),
    ] {
        assert_eq!(
            step("https://h/opt", bearer(claims(extra.clone()))),
            CacheStep::Bypass { reason },
            "{extra}"
        );
    }
    // The same verified caller through the cookie the policy reads: the same entry.
    let token = hs_token(header(), claims(json!({ "tenant": "acme" })), SECRET);
    let by_cookie = step(
        "https://h/opt",
        vec![("cookie".into(), format!("a=1; access_token={token}"))],
    );
    assert_eq!(by_cookie, acme);
    // A public cached route: credentials anywhere a policy reads them bypass it.
    let public = step("https://h/pub", vec![]);
    assert!(matches!(public, CacheStep::Lookup { .. }));
    let bypass = CacheStep::Bypass {
        reason: "credentials on a route keyed without claims",
    };
    assert_eq!(
        step(
            "https://h/pub",
            vec![("cookie".into(), format!("access_token={token}"))]
        ),
        bypass
    );
    assert_eq!(step("https://h/pub", bearer(claims(json!({})))), bypass);
    assert_eq!(
        step(
            "https://h/pub",
            vec![("cookie".into(), "theme=dark".into())]
        ),
        public
    );
}
