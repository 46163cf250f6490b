use serde_json::{json, Value};

use super::*;
use crate::gateway::{AuthStep, Gateway, Incoming};
use crate::Config;
use mint::Bound;

fn config(extra: Value) -> Value {
    let mut c = json!({
        "origins": { "app": { "servers": [{ "url": "http://127.0.0.1:9" }] } },
        "sso": {
            "corp": {
                "issuer": "https://id.example.com",
                "client_id": "portcullis",
                "client_secret_env": "SSO_CLIENT_SECRET",
                "session_key_env": "SSO_SESSION_KEY",
                "redirect_uri": "https://a.example.com/_sso/callback",
                "forward_claims": { "email": "x-user-email" },
                "require": { "groups": ["staff"] },
                "cookie": { "domain": ".Apps.Example.com" }
            }
        },
        "identity": {
            "header": "X-Portcullis-Identity",
            "alg": "ES256",
            "private_key_env": "IDENTITY_SIGNING_KEY",
            "issuer": "https://gateway.example.com"
        },
        "routes": [
            { "name": "app", "path": "/app/{*rest}", "origin": "app",
              "auth": { "use": "corp", "login": true },
              "request_headers": { "set": { "x-who": "{claim.email}" } } },
            { "name": "api", "path": "/api/{*rest}", "origin": "app", "auth": "corp" },
            { "name": "public", "path": "/pub", "origin": "app" }
        ]
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut c, extra) {
        for (k, v) in more {
            base.insert(k, v);
        }
    }
    c
}

fn gateway() -> Gateway {
    Gateway::new(Config::from_json(&config(json!({})).to_string()).expect("valid"))
}

fn problems(c: Value) -> Vec<(String, String)> {
    match Config::from_json(&c.to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

fn sso_with(field: &str, value: Value) -> Value {
    let mut c = config(json!({}));
    c["sso"]["corp"][field] = value;
    c
}

fn keys() -> SessionKeys {
    SessionKeys::derive(b"a session key of thirty-two bytes or more!").expect("long enough")
}

#[test]
fn a_valid_sso_entry_gets_its_defaults_and_an_id_token_policy() {
    let g = gateway();
    let s = &g.config.sso[0];
    assert_eq!(s.callback_path, "/_sso/callback");
    assert_eq!(s.login_path, "/_sso/login");
    assert_eq!(s.logout_path, "/_sso/logout");
    assert_eq!(s.scopes, ["openid", "email", "profile"]);
    assert_eq!(s.session_ttl_s, 28_800);
    assert_eq!(s.cookie.name, "portcullis_session");
    assert_eq!(s.cookie.domain.as_deref(), Some("apps.example.com"));
    // `require` and `forward_claims` claims are kept so each request can answer them.
    assert_eq!(s.keep_claims, ["sub", "email", "name", "groups"]);
    assert!(s.endpoints.is_none(), "discovery by default");
    let policy = &g.config.policies[s.id_token_policy];
    assert_eq!(policy.name, "sso:corp");
    assert_eq!(policy.issuers, ["https://id.example.com"]);
    assert_eq!(policy.audiences, ["portcullis"]);
    assert_eq!(policy.algorithms, [crate::auth::Alg::Rs256]);
    // The identity header and the forwarded claim headers are never taken from clients.
    assert!(g
        .config
        .claim_headers
        .contains(&"x-portcullis-identity".to_string()));
    assert!(g.config.claim_headers.contains(&"x-user-email".to_string()));
    assert_eq!(
        g.config.sso_cookies,
        ["portcullis_session", "portcullis_session_login"]
    );
}

#[test]
fn sso_config_problems_name_their_paths() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            sso_with("scopes", json!(["email"])),
            "$.sso.corp.scopes",
            "openid",
        ),
        (
            sso_with("id_token_algorithms", json!(["HS256"])),
            "$.sso.corp.id_token_algorithms[0]",
            "not accepted for ID tokens",
        ),
        (
            sso_with("id_token_algorithms", json!(["none"])),
            "$.sso.corp.id_token_algorithms[0]",
            "not accepted",
        ),
        (
            sso_with("issuer", json!("id.example.com")),
            "$.sso.corp.issuer",
            "http(s)",
        ),
        (
            sso_with("session_key_env", json!("not a name")),
            "$.sso.corp.session_key_env",
            "binding name",
        ),
        (
            sso_with("callback_path", json!("/a/../cb")),
            "$.sso.corp.callback_path",
            "normalized",
        ),
        (
            sso_with("session_ttl_s", json!(10)),
            "$.sso.corp.session_ttl_s",
            "between 60",
        ),
        (
            sso_with("login_ttl_s", json!(7200)),
            "$.sso.corp.login_ttl_s",
            "between 30",
        ),
        (
            sso_with("token_auth", json!("private_key_jwt")),
            "$.sso.corp.token_auth",
            "not a token endpoint",
        ),
        (
            sso_with("cookie", json!({ "same_site": "None" })),
            "$.sso.corp.cookie.same_site",
            "not accepted",
        ),
        (
            sso_with("cookie", json!({ "name": "a b" })),
            "$.sso.corp.cookie.name",
            "not a cookie name",
        ),
        (
            sso_with(
                "cookie",
                json!({ "name": "__Host-s", "domain": "example.com" }),
            ),
            "$.sso.corp.cookie.name",
            "__Host-",
        ),
        (
            sso_with("forward_claims", json!({ "sub": "authorization" })),
            "$.sso.corp.forward_claims.sub",
            "cannot carry",
        ),
        (
            sso_with("discovery", json!(false)),
            "$.sso.corp.endpoints",
            "no endpoints",
        ),
        (
            {
                let mut c = sso_with(
                    "endpoints",
                    json!({ "authorization": "https://a", "token": "ftp://t", "jwks": "https://j" }),
                );
                c["sso"]["corp"]["discovery"] = json!(true);
                c
            },
            "$.sso.corp.discovery",
            "endpoints are given too",
        ),
        (
            sso_with(
                "endpoints",
                json!({ "authorization": "https://a", "token": "ftp://t", "jwks": "https://j" }),
            ),
            "$.sso.corp.endpoints.token",
            "http(s)",
        ),
        (
            sso_with("logout_path", json!("/_sso/login")),
            "$.sso.corp.logout_path",
            "already answered",
        ),
        (
            sso_with("login_path", json!("/.well-known/jwks.json")),
            "$.sso.corp.login_path",
            "already answered",
        ),
        (
            sso_with("surprise", json!(1)),
            "$.sso.corp.surprise",
            "unknown field",
        ),
        (
            {
                let mut c = config(json!({}));
                c["auth"] = json!({ "corp": { "algorithms": ["HS256"], "hmac_secret_env": "S" } });
                c
            },
            "$.sso.corp",
            "names an auth policy too",
        ),
        (
            {
                let mut c = config(json!({}));
                c["auth"] = json!({ "jwt": { "algorithms": ["HS256"], "hmac_secret_env": "S" } });
                c["routes"][2]["auth"] = json!({ "use": "jwt", "login": true });
                c
            },
            "$.routes[2].auth.login",
            "has no login",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["alg"] = json!("RS256");
                c
            },
            "$.identity.alg",
            "not a signing algorithm",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["header"] = json!("cookie");
                c
            },
            "$.identity.header",
            "cannot carry",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["ttl_s"] = json!(5);
                c
            },
            "$.identity.ttl_s",
            "between 10",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["claims"] = json!(["aud"]);
                c
            },
            "$.identity.claims[0]",
            "cannot be listed",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["attest"] = json!(true);
                c["identity"]["claims"] = json!(["email", "jti"]);
                c
            },
            "$.identity.claims[1]",
            "cannot be listed with attest",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["attest"] = json!(true);
                c["identity"]["attest_ttl_s"] = json!(301);
                c
            },
            "$.identity.attest_ttl_s",
            "between 5 and 300",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["attest_ttl_s"] = json!(30);
                c
            },
            "$.identity.attest_ttl_s",
            "only with \"attest\": true",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["attest"] = json!("yes");
                c
            },
            "$.identity.attest",
            "",
        ),
        (
            {
                let mut c = config(json!({}));
                c["identity"]["attest"] = json!(true);
                c["origins"]["app"]["servers"] = json!([
                    { "url": "http://127.0.0.1:9/v1" },
                    { "url": "http://127.0.0.1:10/v1/" },
                    { "url": "http://127.0.0.1:11/v2" }
                ]);
                c
            },
            "$.origins.app.servers[2].url",
            "base path \"/v2\" differs from the first server's \"/v1\"",
        ),
    ];
    for (c, path, message) in cases {
        let found = problems(c);
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(message)),
            "{path} / {message}: got {found:?}"
        );
    }
}

#[test]
fn two_entries_need_their_own_paths_and_cookies() {
    let mut c = config(json!({}));
    c["sso"]["other"] = c["sso"]["corp"].clone();
    let found = problems(c);
    assert!(
        found.iter().any(|(p, _)| p == "$.sso.other.callback_path"),
        "{found:?}"
    );
    assert!(
        found.iter().any(|(p, _)| p == "$.sso.other.cookie.name"),
        "{found:?}"
    );
}

#[test]
fn session_keys_need_32_bytes_and_differ_by_purpose() {
    assert!(SessionKeys::derive(&[7; 31]).is_none());
    let k = keys();
    assert_ne!(k.enc, k.mac);
    // The documented derivation (README, "Single sign-on"): SHA-256 of a label and the secret.
    let mut h = Sha256::new();
    h.update(b"portcullis-session-v1:");
    h.update(b"a session key of thirty-two bytes or more!");
    assert_eq!(k.enc, <[u8; 32]>::from(h.finalize()));
}

#[test]
fn pkce_challenge_is_rfc7636s_example() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn the_login_cookie_is_signed_bound_to_its_entry_and_expires() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let random: [u8; 96] = std::array::from_fn(|i| i as u8);
    let login = LoginState::new(sso, "/app/x?y=1".into(), &random, 1000);
    assert_eq!(login.exp, 1000 + 600);
    assert_ne!(login.state, login.nonce);
    let sealed = login.seal(&keys());
    assert_eq!(
        LoginState::open(&sealed, &keys(), "corp", 1001),
        Some(login.clone())
    );
    assert_eq!(
        LoginState::open(&sealed, &keys(), "corp", 1600),
        None,
        "expired"
    );
    assert_eq!(
        LoginState::open(&sealed, &keys(), "other", 1001),
        None,
        "another entry's"
    );
    let other = SessionKeys::derive(&[1; 32]).unwrap();
    assert_eq!(
        LoginState::open(&sealed, &other, "corp", 1001),
        None,
        "another key"
    );
    // Any change to the payload breaks the signature.
    let (payload, tag) = sealed.split_once('.').unwrap();
    let mut forged = login.clone();
    forged.next = "https://evil.example/".into();
    let forged_payload = b64(&serde_json::to_vec(&forged).unwrap());
    assert_eq!(
        LoginState::open(&format!("{forged_payload}.{tag}"), &keys(), "corp", 1001),
        None
    );
    assert_eq!(LoginState::open(payload, &keys(), "corp", 1001), None);
    assert!(login.state_matches(&login.state.clone()));
    assert!(!login.state_matches("x"));
    assert!(!login.state_matches(""));
    assert!(login.nonce_matches(&login.nonce.clone()));
    assert!(!login.nonce_matches(&login.state.clone()));
}

#[test]
fn only_paths_on_this_host_are_return_addresses() {
    for ok in ["/", "/app/x?y=1&z=%2F", "/a/b#frag"] {
        assert_eq!(safe_next(ok), Some(ok), "{ok}");
    }
    for bad in [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "evil",
        "",
        "/a\r\nSet-Cookie: x=1",
        "/a b",
        "/\\/evil",
    ] {
        assert_eq!(safe_next(bad), None, "{bad:?}");
    }
    assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_NEXT_BYTES))), None);
}

#[test]
fn the_authorization_url_carries_pkce_state_and_nonce() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let random: [u8; 96] = std::array::from_fn(|i| (i * 7) as u8);
    let login = LoginState::new(sso, "/".into(), &random, 0);
    let endpoints = Endpoints {
        authorization: "https://id.example.com/authorize?tenant=a".into(),
        token: "https://id.example.com/token".into(),
        jwks: "https://id.example.com/jwks".into(),
        end_session: None,
    };
    let url = authorize_url(
        sso,
        &endpoints,
        "https://app.example.com/_sso/callback",
        &login,
    );
    let parsed = url::Url::parse(&url).unwrap();
    let q: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["tenant"], "a");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "portcullis");
    assert_eq!(q["redirect_uri"], "https://app.example.com/_sso/callback");
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["state"], login.state);
    assert_eq!(q["nonce"], login.nonce);
    assert_eq!(q["code_challenge"], pkce_challenge(&login.verifier));
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(
        !url.contains(&login.verifier),
        "the verifier never leaves with the redirect"
    );
}

#[test]
fn the_token_request_authenticates_the_client_as_configured() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let (body, headers) = token_request(sso, "c0de", "https://a/cb", "v", "s3cr:t");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "c0de");
    assert_eq!(form["code_verifier"], "v");
    assert!(!form.contains_key("client_secret"));
    let auth = crate::headers::first(&headers, "authorization").unwrap();
    // `:` in the secret is form-encoded before the Basic encoding (RFC 6749 §2.3.1).
    assert_eq!(
        auth,
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("portcullis:s3cr%3At")
        )
    );
    let mut post = sso.clone();
    post.token_auth = TokenAuth::ClientSecretPost;
    let (body, headers) = token_request(&post, "c0de", "https://a/cb", "v", "s3cr:t");
    assert!(body.contains("client_secret=s3cr%3At"));
    assert!(crate::headers::first(&headers, "authorization").is_none());
    assert_eq!(
        id_token_of(r#"{"id_token":"a.b.c","access_token":"x"}"#).as_deref(),
        Some("a.b.c")
    );
    assert_eq!(id_token_of(r#"{"error":"invalid_grant"}"#), None);
}

#[test]
fn a_session_keeps_only_the_kept_claims_and_ends() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let values: BTreeMap<String, Value> = [
        ("sub", json!("u1")),
        ("email", json!("u1@example.com")),
        ("groups", json!(["staff", "dev"])),
        ("phone", json!("+1 555")),
        ("nonce", json!("n")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let identity = Identity::from_claims(values, 2000, &[]);
    let session = Session::from_identity(sso, &identity, 1000);
    assert_eq!(session.exp, 1000 + 28_800);
    assert_eq!(
        session.claims.keys().collect::<Vec<_>>(),
        ["email", "groups", "sub"]
    );
    let plain = session.to_plaintext();
    let back = g.session_identity(0, &plain, 1001).expect("valid");
    assert_eq!(back.claims["sub"], "u1");
    assert_eq!(back.claims["groups"], "staff,dev");
    assert_eq!(
        back.forward,
        [("x-user-email".to_string(), "u1@example.com".to_string())]
    );
    assert_eq!(back.values["groups"], json!(["staff", "dev"]));
    assert_eq!(
        g.session_identity(0, &plain, session.exp),
        Err(AuthError::NoSession("expired"))
    );
    assert_eq!(
        g.session_identity(0, b"{not json", 1001),
        Err(AuthError::NoSession("unreadable"))
    );
    // A session without a usable `sub` (made before sign-in refused such ID tokens) is none.
    for sub in [None, Some(json!("")), Some(json!(7)), Some(Value::Null)] {
        let mut anonymous = session.clone();
        match sub {
            Some(v) => anonymous.claims.insert("sub".into(), v),
            None => anonymous.claims.remove("sub"),
        };
        assert_eq!(
            g.session_identity(0, &anonymous.to_plaintext(), 1001),
            Err(AuthError::NoSession("no sub"))
        );
    }
    let mut outsider = session.clone();
    outsider.claims.insert("groups".into(), json!(["dev"]));
    assert_eq!(
        g.session_identity(0, &outsider.to_plaintext(), 1001),
        Err(AuthError::InsufficientScope)
    );
    assert_eq!(
        crate::error::session_refusal(AuthError::InsufficientScope).status(),
        403,
        "403 without a bearer challenge"
    );
}

#[test]
fn cookies_are_http_only_secure_and_scoped() {
    let g = gateway();
    let c = &g.config.sso[0].cookie;
    assert_eq!(
        set_cookie(c, "portcullis_session", "v", 60),
        "portcullis_session=v; Path=/; Max-Age=60; Domain=apps.example.com; HttpOnly; Secure; SameSite=Lax"
    );
    let strict = CookieSettings {
        same_site: SameSite::Strict,
        domain: None,
        name: "s".into(),
    };
    assert_eq!(
        set_cookie(&strict, "s", "", 0),
        "s=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    );
    assert_eq!(login_cookie_settings(&strict).same_site, SameSite::Lax);
    let mut sso = g.config.sso[0].clone();
    sso.cookie = strict;
    assert_eq!(
        sso.session_cookie(Some("v")),
        "s=v; Path=/; Max-Age=28800; HttpOnly; Secure; SameSite=Strict"
    );
    assert_eq!(
        sso.login_cookie(Some("l")),
        "s_login=l; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax",
        "the provider's redirect back is cross-site: the login cookie must survive it"
    );
    assert_eq!(
        sso.login_cookie(None),
        "s_login=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
    );
}

fn incoming<'a>(method: &'a str, url: &'a str, headers: &'a [(String, String)]) -> Incoming<'a> {
    Incoming {
        method,
        url,
        headers,
    }
}

#[test]
fn every_spelling_of_the_sso_and_jwks_paths_is_the_gateways() {
    let g = gateway();
    let none: Vec<(String, String)> = Vec::new();
    let at =
        |method: &str, url: &str| g.sso_request(&g.read(&incoming(method, url, &none)).unwrap());
    let login = Some(SsoRequest::Login {
        sso: 0,
        next: Ok("/".into()),
    });
    for path in [
        "/_sso/login",
        "//_sso/login",
        "/%5Fsso/login",
        "/%5fsso/%6Cogin",
        "/_SSO/Login",
        "/x/../_sso/./login",
        "/_sso//login",
    ] {
        let url = format!("https://a.example.com{path}");
        assert_eq!(at("GET", &url), login, "{path}");
    }
    for path in [
        "/.well-known/jwks.json",
        "//.well-known//jwks.json",
        "/.WELL-KNOWN/JWKS.JSON",
        "/%2Ewell-known/jwks%2Ejson",
    ] {
        let url = format!("https://a.example.com{path}");
        assert_eq!(at("GET", &url), Some(SsoRequest::Jwks), "{path}");
    }
    assert_eq!(at("GET", "https://a.example.com/_sso/loginx"), None);
}

#[test]
fn the_gateway_answers_its_sso_paths_before_routes() {
    let g = gateway();
    let none: Vec<(String, String)> = Vec::new();
    let at = |method, url| g.sso_request(&g.read(&incoming(method, url, &none)).unwrap());
    assert_eq!(
        at(
            "GET",
            "https://a.example.com/_sso/login?next=%2Fapp%2Fx%3Fy%3D1"
        ),
        Some(SsoRequest::Login {
            sso: 0,
            next: Ok("/app/x?y=1".into())
        })
    );
    assert_eq!(
        at(
            "GET",
            "https://a.example.com/_sso/login?next=https://evil.example"
        ),
        Some(SsoRequest::Login {
            sso: 0,
            next: Err(LoginError::BadNext)
        })
    );
    assert_eq!(
        at(
            "GET",
            "https://a.example.com/_sso/login?next=//evil.example"
        ),
        Some(SsoRequest::Login {
            sso: 0,
            next: Err(LoginError::BadNext)
        })
    );
    assert_eq!(
        at(
            "GET",
            "https://a.example.com/_sso/callback?code=c&state=s&code=d"
        ),
        Some(SsoRequest::Callback {
            sso: 0,
            callback: Callback {
                code: Some("c".into()),
                state: Some("s".into()),
                error: None
            }
        })
    );
    assert_eq!(
        at("POST", "https://a.example.com/_sso/logout"),
        Some(SsoRequest::Logout { sso: 0 })
    );
    assert_eq!(
        at("GET", "https://a.example.com/.well-known/jwks.json"),
        Some(SsoRequest::Jwks)
    );
    assert_eq!(at("POST", "https://a.example.com/_sso/callback"), None);
    // The gateway-wide limits hold here too: route matching then refuses it as usual.
    let long = format!(
        "https://a.example.com/_sso/login?next=/{}",
        "a".repeat(9000)
    );
    assert_eq!(at("GET", &long), None);
    assert!(g.matched(&incoming("GET", &long, &none)).is_err());
    assert_eq!(at("GET", "https://a.example.com/app/x"), None);
}

#[test]
fn a_login_route_sends_browsers_to_sign_in_and_apis_get_401() {
    let g = gateway();
    let html = vec![(
        "accept".to_string(),
        "text/html,application/xhtml+xml".to_string(),
    )];
    let json_accept = vec![("accept".to_string(), "application/json".to_string())];
    let m = g
        .matched(&incoming("GET", "https://a.example.com/app/x", &html))
        .unwrap();
    assert!(matches!(
        &m.auth,
        AuthStep::Session {
            sso: 0,
            cookies,
            optional: false,
            redirect: true
        } if cookies.is_empty()
    ));
    let m = g
        .matched(&incoming(
            "GET",
            "https://a.example.com/app/x",
            &json_accept,
        ))
        .unwrap();
    assert!(matches!(
        m.auth,
        AuthStep::Session {
            redirect: false,
            ..
        }
    ));
    let m = g
        .matched(&incoming("POST", "https://a.example.com/app/x", &html))
        .unwrap();
    assert!(matches!(
        m.auth,
        AuthStep::Session {
            redirect: false,
            ..
        }
    ));
    // A route without `login` never redirects.
    let m = g
        .matched(&incoming("GET", "https://a.example.com/api/x", &html))
        .unwrap();
    assert!(matches!(
        m.auth,
        AuthStep::Session {
            redirect: false,
            ..
        }
    ));
    // Every value of the name, at most four: a cookie planted under a parent domain and sent
    // first does not hide the gateway's own.
    let with_cookie = vec![
        (
            "cookie".to_string(),
            "a=1; portcullis_session=PLANTED; b=2".to_string(),
        ),
        (
            "cookie".to_string(),
            "portcullis_session=SEALED; portcullis_session=3; portcullis_session=4; portcullis_session=5"
                .to_string(),
        ),
    ];
    let m = g
        .matched(&incoming(
            "GET",
            "https://a.example.com/app/x",
            &with_cookie,
        ))
        .unwrap();
    assert!(
        matches!(&m.auth, AuthStep::Session { cookies, .. } if cookies == &["PLANTED", "SEALED", "3", "4"])
    );
}

#[test]
fn origins_get_session_identity_but_never_the_gateways_cookies_or_a_client_identity_header() {
    let g = gateway();
    let headers = vec![
        (
            "cookie".to_string(),
            "a=1; portcullis_session=SEALED; portcullis_session_login=L; b=2".to_string(),
        ),
        ("x-portcullis-identity".to_string(), "forged".to_string()),
        ("x-user-email".to_string(), "forged@example.com".to_string()),
    ];
    let req = incoming("GET", "https://a.example.com/app/x", &headers);
    let m = g.matched(&req).unwrap();
    let session = Session {
        exp: 5000,
        iat: 1000,
        claims: [
            ("sub", json!("u1")),
            ("email", json!("u1@example.com")),
            ("groups", json!("staff")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    let identity = g
        .session_identity(0, &session.to_plaintext(), 1001)
        .unwrap();
    let plan = g.forward_plan(&m, &g.read(&req).unwrap(), "rid", Some(&identity));
    let h = |name: &str| -> Vec<&str> {
        plan.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(h("cookie"), ["a=1; b=2"]);
    assert!(h("x-portcullis-identity").is_empty());
    assert_eq!(h("x-user-email"), ["u1@example.com"]);
    assert_eq!(
        h("x-who"),
        ["u1@example.com"],
        "{{claim.email}} reads the session"
    );
}

fn ec_jwk() -> Value {
    // RFC 7515 Appendix A.3's P-256 key.
    json!({
        "kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",
        "key_ops": ["sign"], "ext": true
    })
}

#[test]
fn the_signing_key_gives_a_thumbprint_kid_and_a_public_jwks() {
    let g = gateway();
    let minting = g.config.minting.as_ref().unwrap();
    let key = minting.signing_key(&ec_jwk().to_string()).expect("valid");
    // RFC 7638: SHA-256 over {"crv","kty","x","y"} in that order, no spaces.
    let canonical = r#"{"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    assert_eq!(key.kid, b64(&Sha256::digest(canonical.as_bytes())));
    let jwks: Value = serde_json::from_str(&Minting::jwks_document(&key)).unwrap();
    let public = &jwks["keys"][0];
    assert!(
        public.get("d").is_none(),
        "the private part is never published"
    );
    assert_eq!(public["kid"], key.kid.as_str());
    assert_eq!(public["alg"], "ES256");
    assert_eq!(public["use"], "sig");
    let private: Value = serde_json::from_str(&key.private_jwk).unwrap();
    assert!(private.get("d").is_some() && private.get("key_ops").is_none());

    let mut public_only = ec_jwk();
    public_only.as_object_mut().unwrap().remove("d");
    assert!(minting
        .signing_key(&public_only.to_string())
        .unwrap_err()
        .contains("\"d\""));
    let ed = json!({ "kty": "OKP", "crv": "Ed25519", "x": "x", "d": "d" });
    assert!(minting
        .signing_key(&ed.to_string())
        .unwrap_err()
        .contains("EC P-256"));
    let err = minting.signing_key("not json").unwrap_err();
    assert!(
        !err.contains("not json"),
        "the message never repeats the secret"
    );
}

#[test]
fn a_minted_token_names_the_gateway_the_pool_and_the_user() {
    let g = gateway();
    let minting = g.config.minting.as_ref().unwrap();
    let values: BTreeMap<String, Value> = [
        ("sub", json!("u1")),
        ("email", json!("u1@example.com")),
        ("groups", json!(["staff"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let identity = Identity::from_claims(values, 9999, &[]);
    let claims = minting
        .claims_for(Some(&identity), "app", None, 1000)
        .unwrap();
    assert_eq!(
        Value::Object(claims.clone()),
        json!({ "iss": "https://gateway.example.com", "aud": "app", "sub": "u1",
                "email": "u1@example.com", "iat": 1000, "exp": 1060 })
    );
    let input = minting.signing_input("kid1", &claims);
    let (header, payload) = input.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&b64_decode(header).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({ "alg": "ES256", "typ": "JWT", "kid": "kid1" })
    );
    let payload: Value = serde_json::from_slice(&b64_decode(payload).unwrap()).unwrap();
    assert_eq!(payload["sub"], "u1");
    // Reused until 15 s (a quarter of 60 s) before expiry; the same user on another pool, or
    // another user, gets a token of its own.
    assert_eq!(minting.reuse_until(1000), 1045);
    let later = minting
        .claims_for(Some(&identity), "app", None, 1030)
        .unwrap();
    assert_eq!(Minting::reuse_key(&claims), Minting::reuse_key(&later));
    let other_pool = minting
        .claims_for(Some(&identity), "billing", None, 1000)
        .unwrap();
    assert_ne!(Minting::reuse_key(&claims), Minting::reuse_key(&other_pool));
    let anonymous = Identity::from_claims(BTreeMap::new(), 0, &[]);
    assert!(
        minting
            .claims_for(Some(&anonymous), "app", None, 1000)
            .is_none(),
        "no sub, no token"
    );
}

#[test]
fn discovery_must_name_the_configured_issuer() {
    let doc = json!({
        "issuer": "https://id.example.com",
        "authorization_endpoint": "https://id.example.com/authorize",
        "token_endpoint": "https://id.example.com/token",
        "jwks_uri": "https://id.example.com/jwks",
    })
    .to_string();
    let e = Endpoints::from_discovery(&doc, "https://id.example.com").unwrap();
    assert_eq!(e.token, "https://id.example.com/token");
    assert_eq!(e.end_session, None);
    assert!(Endpoints::from_discovery(&doc, "https://other.example.com").is_err());
    assert!(Endpoints::from_discovery("{}", "https://id.example.com").is_err());
    assert_eq!(
        Endpoints::discovery_url("https://id.example.com/"),
        "https://id.example.com/.well-known/openid-configuration"
    );
}

#[test]
fn logout_goes_to_the_providers_end_session_and_back() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let mut e = Endpoints {
        authorization: "https://id/authorize".into(),
        token: "https://id/token".into(),
        jwks: "https://id/jwks".into(),
        end_session: Some("https://id/logout".into()),
    };
    assert_eq!(
        logout_location(sso, &e, "https://a.example.com"),
        "https://id/logout?client_id=portcullis&post_logout_redirect_uri=https%3A%2F%2Fa.example.com%2F"
    );
    e.end_session = None;
    assert_eq!(logout_location(sso, &e, "https://a.example.com"), "/");
}

#[test]
fn sso_errors_are_pages_for_browsers_and_json_for_the_rest() {
    let e = crate::GatewayError::Login(LoginError::StateMismatch);
    let json_body = e.response_for("rid", Some("application/json"));
    assert_eq!(json_body.status, 400);
    let v: Value = serde_json::from_str(&json_body.body).unwrap();
    assert_eq!(v["error"], "login_failed");
    let page = e.response_for("rid<", Some("text/html,*/*"));
    assert_eq!(page.status, 400);
    assert!(page.body.starts_with("<!doctype html>"));
    assert!(page.body.contains("rid&lt;"), "escaped");
    assert!(page.headers.contains(&(
        "content-type".to_string(),
        "text/html; charset=utf-8".to_string()
    )));
    assert_eq!(
        crate::GatewayError::Login(LoginError::BadNext).code(),
        "bad_request"
    );
    assert_eq!(
        crate::GatewayError::Login(LoginError::ExchangeFailed).status(),
        502
    );
    assert_eq!(
        crate::GatewayError::Auth(AuthError::NoSession("none")).status(),
        401
    );
    let r = crate::GatewayError::Auth(AuthError::NoSession("none")).response("rid");
    assert!(!r.headers.iter().any(|(n, _)| n == "www-authenticate"));
}

#[test]
fn an_id_token_must_carry_this_logins_nonce_and_name_this_client_among_several_audiences() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let random: [u8; 96] = std::array::from_fn(|i| (i * 3) as u8);
    let login = LoginState::new(sso, "/".into(), &random, 0);
    let id = |extra: Value| {
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        values.insert("sub".into(), json!("u1"));
        values.insert("aud".into(), json!("portcullis"));
        values.insert("nonce".into(), json!(login.nonce));
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                values.remove(k);
            } else {
                values.insert(k.clone(), v.clone());
            }
        }
        Identity::from_claims(values, 100, &[])
    };
    assert_eq!(login.check_id_token(sso, &id(json!({}))), Ok(()));
    assert_eq!(
        login.check_id_token(sso, &id(json!({ "nonce": "other" }))),
        Err(LoginError::WrongNonce)
    );
    assert_eq!(
        login.check_id_token(sso, &id(json!({ "nonce": null }))),
        Err(LoginError::WrongNonce)
    );
    let several = json!({ "aud": ["portcullis", "other"] });
    assert_eq!(
        login.check_id_token(sso, &id(several.clone())),
        Err(LoginError::BadIdToken)
    );
    let mut with_azp = several;
    with_azp["azp"] = json!("portcullis");
    assert_eq!(login.check_id_token(sso, &id(with_azp.clone())), Ok(()));
    with_azp["azp"] = json!("other");
    assert_eq!(
        login.check_id_token(sso, &id(with_azp)),
        Err(LoginError::BadIdToken)
    );
}

#[test]
fn an_id_token_must_name_its_user_in_sub() {
    let g = gateway();
    let sso = &g.config.sso[0];
    let random: [u8; 96] = std::array::from_fn(|i| (i * 5) as u8);
    let login = LoginState::new(sso, "/".into(), &random, 0);
    // `None`: the claim is absent.
    let cases: Vec<(Option<Value>, Result<(), LoginError>)> = vec![
        (Some(json!("u1")), Ok(())),
        (Some(json!(" ")), Ok(())),
        (None, Err(LoginError::MissingSub)),
        (Some(Value::Null), Err(LoginError::MissingSub)),
        (Some(json!(42)), Err(LoginError::MissingSub)),
        (Some(json!("")), Err(LoginError::MissingSub)),
        (Some(json!(true)), Err(LoginError::MissingSub)),
        (Some(json!(["u1"])), Err(LoginError::MissingSub)),
        (Some(json!({ "id": "u1" })), Err(LoginError::MissingSub)),
    ];
    for (sub, want) in cases {
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        values.insert("aud".into(), json!("portcullis"));
        values.insert("nonce".into(), json!(login.nonce));
        if let Some(sub) = &sub {
            values.insert("sub".into(), sub.clone());
        }
        let identity = Identity::from_claims(values, 100, &[]);
        assert_eq!(login.check_id_token(sso, &identity), want, "sub {sub:?}");
    }
    // Refused like the other bad ID tokens: 401 `login_failed`, a page for browsers.
    let e = crate::GatewayError::Login(LoginError::MissingSub);
    assert_eq!((e.status(), e.code()), (401, "login_failed"));
    assert_eq!(LoginError::MissingSub.reason(), "missing_sub");
    let page = e.response_for("rid", Some("text/html"));
    assert_eq!(page.status, 401);
    assert!(page.body.contains("Sign-in failed"));
}

/// A config whose entry builds its redirect URI from the routes' hosts: an exact host, a
/// wildcard, a loopback address, and a route without a host (which adds none).
fn hosted() -> Gateway {
    let mut c = config(json!({}));
    c["sso"]["corp"]
        .as_object_mut()
        .unwrap()
        .remove("redirect_uri");
    c["routes"] = json!([
        { "name": "app", "host": "App.Example.com", "path": "/app/{*rest}", "origin": "app",
          "auth": { "use": "corp", "login": true } },
        { "name": "tenants", "host": "*.apps.example.com", "path": "/{*rest}", "origin": "app",
          "auth": "corp" },
        { "name": "local", "host": "127.0.0.1", "path": "/{*rest}", "origin": "app",
          "auth": { "use": "corp", "login": true } },
        { "name": "anywhere", "path": "/any/{*rest}", "origin": "app",
          "auth": { "use": "corp", "login": true } },
        { "name": "other", "host": "other.example.com", "path": "/{*rest}", "origin": "app" }
    ]);
    Gateway::new(Config::from_json(&c.to_string()).expect("valid"))
}

#[test]
fn without_redirect_uri_only_the_hosts_of_the_entrys_routes_get_one() {
    let g = hosted();
    let sso = &g.config.sso[0];
    assert_eq!(
        sso.redirect,
        RedirectBase::RouteHosts(vec![
            crate::config::HostPattern::Exact("app.example.com".into()),
            crate::config::HostPattern::Suffix(".apps.example.com".into()),
            crate::config::HostPattern::Exact("127.0.0.1".into()),
        ]),
        "the entry's routes' hosts, not other routes'"
    );
    let ok = |origin: &str| {
        Ok(ReturnAddress {
            redirect_uri: format!("{origin}/_sso/callback"),
            origin: origin.to_string(),
        })
    };
    let cases: Vec<(&str, Result<ReturnAddress, ()>)> = vec![
        // an exact host, in any letter case, with its default port or none
        (
            "https://app.example.com/app/x",
            ok("https://app.example.com"),
        ),
        (
            "https://APP.Example.COM/app/x",
            ok("https://app.example.com"),
        ),
        ("HTTPS://app.example.com/", ok("https://app.example.com")),
        (
            "https://app.example.com:443/",
            ok("https://app.example.com"),
        ),
        (
            "https://app.example.com:0443/",
            ok("https://app.example.com"),
        ),
        ("https://app.example.com:/", ok("https://app.example.com")),
        ("http://app.example.com:80/", ok("http://app.example.com")),
        // another port is kept (routing ignores it; the redirect goes back to it)
        (
            "https://app.example.com:8443/",
            ok("https://app.example.com:8443"),
        ),
        (
            "http://app.example.com:443/",
            ok("http://app.example.com:443"),
        ),
        // credentials in the URL are not part of the host
        (
            "https://evil@app.example.com/",
            ok("https://app.example.com"),
        ),
        // a wildcard at any depth, never the bare domain
        (
            "https://t1.apps.example.com/",
            ok("https://t1.apps.example.com"),
        ),
        (
            "https://A.B.Apps.Example.com/",
            ok("https://a.b.apps.example.com"),
        ),
        ("https://apps.example.com/", Err(())),
        // a loopback address named by a route, in that spelling only
        ("http://127.0.0.1:8787/any/x", ok("http://127.0.0.1:8787")),
        ("http://127.1:8787/", Err(())),
        ("http://[::ffff:127.0.0.1]:8787/", Err(())),
        ("http://[::ffff:7f00:1]:8787/", Err(())),
        // IPv6 literals: no route host names one
        ("http://[::1]:8787/", Err(())),
        ("http://[0:0:0:0:0:0:0:1]/", Err(())),
        ("https://[::1]/", Err(())),
        ("https://[::]/", Err(())),
        // a trailing dot: the same host to routing, so the same host here, written without it
        ("https://app.example.com./", ok("https://app.example.com")),
        (
            "https://t1.apps.example.com./",
            ok("https://t1.apps.example.com"),
        ),
        ("https://app.example.com../", Err(())),
        // foreign hosts, look-alikes, the host of a route of no entry, malformed ports
        ("https://evil.example/", Err(())),
        ("https://app.example.com.evil.example/", Err(())),
        ("https://evilapp.example.com/", Err(())),
        ("https://xapps.example.com/", Err(())),
        ("https://other.example.com/", Err(())),
        ("https://app.example.com:99999/", Err(())),
        ("https://app.example.com:65536/", Err(())),
        ("https://app.example.com:0/", Err(())),
        ("https://app.example.com:8443:1/", Err(())),
        ("https://app.example.com:+443/", Err(())),
        ("https://app.example.com:x/", Err(())),
        ("https://app%2eexample.com/", Err(())),
        ("https://a..apps.example.com/", Err(())),
        ("https://-x.apps.example.com/", Err(())),
        ("ftp://app.example.com/", Err(())),
        ("app.example.com/", Err(())),
    ];
    for (url, want) in cases {
        assert_eq!(sso.return_address(url).map_err(|_| ()), want, "{url}");
    }
    let refused = sso
        .return_address("https://Evil.example\u{7f}:1/")
        .unwrap_err();
    assert_eq!(
        refused.host, "Evil.example",
        "the log gets printable ASCII only"
    );
}

#[test]
fn the_host_a_route_is_served_on_is_the_host_a_login_may_return_to() {
    // The same reading of the host as routing: a login redirect is only asked for on a route
    // that matched, and its host is then one the entry serves, except on a route without a host.
    let g = hosted();
    let sso = &g.config.sso[0];
    let html = vec![("accept".to_string(), "text/html".to_string())];
    for (url, route, served) in [
        ("https://APP.example.com:8443/app/x", "app", true),
        ("https://app.example.com./app/x", "app", true),
        ("https://t.apps.example.com/x", "tenants", true),
        ("http://127.0.0.1:1/x", "local", true),
        ("https://evil.example/any/x", "anywhere", false),
        ("https://app.example.com/any/x", "anywhere", true),
    ] {
        let name = g
            .matched(&incoming("GET", url, &html))
            .map(|m| g.config.routes[m.route].name.clone())
            .unwrap_or_default();
        assert_eq!(name, route, "{url}");
        assert_eq!(sso.return_address(url).is_ok(), served, "{url}");
    }
}

#[test]
fn the_sso_paths_on_a_host_the_entry_does_not_serve_are_refused() {
    let g = hosted();
    let none: Vec<(String, String)> = Vec::new();
    let at = |method, url| g.sso_request(&g.read(&incoming(method, url, &none)).unwrap());
    assert!(matches!(
        at("GET", "https://app.example.com/_sso/login?next=/app/x"),
        Some(SsoRequest::Login {
            sso: 0,
            next: Ok(_)
        })
    ));
    for (method, url) in [
        ("GET", "https://evil.example/_sso/login?next=/app/x"),
        ("GET", "https://evil.example/_sso/login?next=//evil.example"),
        ("GET", "https://evil.example/_sso/callback?code=c&state=s"),
        ("GET", "https://evil.example/_sso/logout"),
        ("POST", "https://evil.example/_sso/logout"),
        ("GET", "https://app.example.com../_sso/login"),
        ("GET", "http://[::1]:8787/_sso/login"),
        (
            "GET",
            "http://[::ffff:127.0.0.1]:8787/_sso/callback?code=c&state=s",
        ),
    ] {
        match at(method, url) {
            Some(SsoRequest::HostNotServed { sso: 0, refused }) => {
                assert!(refused.detail("corp").contains("redirect_uri"), "{url}")
            }
            other => panic!("{method} {url}: {other:?}"),
        }
    }
    // The signing key is the gateway's on every host.
    assert_eq!(
        at("GET", "https://evil.example/.well-known/jwks.json"),
        Some(SsoRequest::Jwks)
    );
    // With redirect_uri, every host's login goes back to it.
    let g = gateway();
    let sso = &g.config.sso[0];
    assert!(matches!(
        g.sso_request(
            &g.read(&incoming("GET", "https://evil.example/_sso/login", &none))
                .unwrap()
        ),
        Some(SsoRequest::Login { sso: 0, .. })
    ));
    for url in [
        "https://evil.example/x",
        "http://[::1]/",
        "https://a.example.com:8443/",
    ] {
        assert_eq!(
            sso.return_address(url),
            Ok(ReturnAddress {
                redirect_uri: "https://a.example.com/_sso/callback".into(),
                origin: "https://a.example.com".into(),
            }),
            "{url}"
        );
    }
}

#[test]
fn redirect_uri_is_a_canonical_https_url_whose_path_is_the_callback_path() {
    let with = |uri: Value, callback_path: Option<&str>| {
        let mut c = sso_with("redirect_uri", uri);
        if let Some(p) = callback_path {
            c["sso"]["corp"]["callback_path"] = json!(p);
        }
        c
    };
    let accepted = [
        (
            "https://app.example.com/_sso/callback",
            None,
            "https://app.example.com",
        ),
        (
            "https://app.example.com:8443/cb",
            None,
            "https://app.example.com:8443",
        ),
        (
            "https://app.example.com/cb",
            Some("/cb"),
            "https://app.example.com",
        ),
        (
            "http://localhost:8787/_sso/callback",
            None,
            "http://localhost:8787",
        ),
        ("http://127.0.0.1/_sso/callback", None, "http://127.0.0.1"),
        ("http://[::1]:9/_sso/callback", None, "http://[::1]:9"),
        ("http://[::ffff:7f00:1]/cb", None, "http://[::ffff:7f00:1]"),
    ];
    for (uri, callback_path, origin) in accepted {
        let c = with(json!(uri), callback_path);
        let cfg = Config::from_json(&c.to_string()).unwrap_or_else(|e| panic!("{uri}: {e}"));
        let sso = &cfg.sso[0];
        assert_eq!(
            sso.redirect,
            RedirectBase::Configured {
                redirect_uri: uri.into(),
                origin: origin.into()
            }
        );
        assert_eq!(
            sso.callback_path,
            url::Url::parse(uri).unwrap().path(),
            "redirect_uri's path is the callback path"
        );
    }
    let refused: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!("http://app.example.com/_sso/callback"),
            None,
            "only https",
        ),
        (json!("http://10.0.0.1/_sso/callback"), None, "only https"),
        (json!("http://localhost.example.com/cb"), None, "only https"),
        (json!("ftp://app.example.com/cb"), None, "not https"),
        (json!("/_sso/callback"), None, "not an absolute URL"),
        (json!("https://app.example.com/cb?x=1"), None, "query"),
        (json!("https://app.example.com/cb#f"), None, "fragment"),
        (json!("https://u:p@app.example.com/cb"), None, "credentials"),
        (json!("https://APP.example.com/cb"), None, "canonical"),
        (json!("https://app.example.com:443/cb"), None, "canonical"),
        (json!("https://app.example.com/a/../cb"), None, "canonical"),
        (json!("https://app.example.com"), None, "canonical"),
        (
            json!("https://app.example.com/"),
            None,
            "cannot be a callback path",
        ),
        (
            json!("https://app.example.com//cb"),
            None,
            "cannot be a callback path",
        ),
        (
            json!("https://app.example.com/%7Ecb"),
            None,
            "cannot be a callback path",
        ),
        (
            json!("https://app.example.com/cb"),
            Some("/other"),
            "is not callback_path",
        ),
    ];
    for (uri, callback_path, message) in refused {
        let found = problems(with(uri.clone(), callback_path));
        assert!(
            found
                .iter()
                .any(|(p, m)| p == "$.sso.corp.redirect_uri" && m.contains(message)),
            "{uri} / {message}: got {found:?}"
        );
    }
}

#[test]
fn an_entry_without_redirect_uri_needs_a_route_with_a_host() {
    let mut c = config(json!({}));
    c["sso"]["corp"]
        .as_object_mut()
        .unwrap()
        .remove("redirect_uri");
    let found = problems(c.clone());
    assert!(
        found.iter().any(|(p, m)| p == "$.sso.corp.redirect_uri"
            && m.contains("no route that uses this entry has a host")),
        "{found:?}"
    );
    // A host on a route of another entry, or of no entry, does not count.
    c["routes"][2]["host"] = json!("pub.example.com");
    assert!(problems(c.clone())
        .iter()
        .any(|(p, _)| p == "$.sso.corp.redirect_uri"));
    // One route of the entry with a host is enough.
    c["routes"][1]["host"] = json!("api.example.com");
    assert_eq!(problems(c.clone()), Vec::<(String, String)>::new());
    // Not reported when a route failed on its own (its host may be what was missing).
    c["routes"][1]["origin"] = json!("nowhere");
    let found = problems(c);
    assert!(found.iter().any(|(p, _)| p == "$.routes[1].origin"));
    assert!(
        !found.iter().any(|(p, _)| p == "$.sso.corp.redirect_uri"),
        "{found:?}"
    );
}

#[test]
fn logout_returns_to_the_configured_origin_or_the_served_host() {
    let e = Endpoints {
        authorization: "https://id/authorize".into(),
        token: "https://id/token".into(),
        jwks: "https://id/jwks".into(),
        end_session: Some("https://id/logout".into()),
    };
    let g = gateway();
    let sso = &g.config.sso[0];
    let back = sso
        .return_address("https://evil.example/_sso/logout")
        .unwrap();
    assert_eq!(
        logout_location(sso, &e, &back.origin),
        "https://id/logout?client_id=portcullis&post_logout_redirect_uri=https%3A%2F%2Fa.example.com%2F"
    );
    let g = hosted();
    let sso = &g.config.sso[0];
    let back = sso
        .return_address("https://T.Apps.Example.com:8443/_sso/logout")
        .unwrap();
    assert_eq!(
        logout_location(sso, &e, &back.origin),
        "https://id/logout?client_id=portcullis&post_logout_redirect_uri=https%3A%2F%2Ft.apps.example.com%3A8443%2F"
    );
}

#[test]
fn a_login_returns_to_the_normalized_path_and_query() {
    assert_eq!(
        return_path("https://a.example.com/app/./x/../y?q=1").as_deref(),
        Some("/app/y?q=1")
    );
    assert_eq!(return_path("https://a.example.com").as_deref(), Some("/"));
    assert_eq!(return_path("/relative"), None);
}

/// A config with `identity.attest`: a public route rewritten onto a server with a base path.
fn attesting() -> Gateway {
    let mut c = config(json!({}));
    c["identity"]["attest"] = json!(true);
    c["identity"]["attest_ttl_s"] = json!(30);
    c["origins"]["app"]["servers"] = json!([
        { "url": "http://127.0.0.1:9/base/" },
        { "url": "http://127.0.0.1:10/base" }
    ]);
    c["routes"].as_array_mut().unwrap().push(
        json!({ "name": "open", "path": "/open/{*rest}", "origin": "app",
                      "rewrite": { "strip_prefix": "/open" } }),
    );
    Gateway::new(Config::from_json(&c.to_string()).expect("valid"))
}

/// What the exchange asks to sign for this request: the identity and the binding.
fn mint_step(g: &Gateway, method: &str, url: &str) -> Option<(bool, String, Option<Bound>)> {
    let headers: crate::http::HeaderList = Vec::new();
    let req = Incoming {
        method,
        url,
        headers: &headers,
    };
    let mut ex = crate::lifecycle::Exchange::new(g, &req, "req-1", |_, _| false);
    match ex.poll() {
        crate::lifecycle::Step::Mint {
            identity,
            aud,
            bound,
        } => Some((identity.is_some(), aud.to_string(), bound.cloned())),
        _ => None,
    }
}

#[test]
fn an_attestation_names_the_method_the_path_the_origin_receives_and_the_query() {
    let g = attesting();
    let hash = |q: &str| b64(&Sha256::digest(q.as_bytes()));
    // (method, public URL, htm, htu, the query hashed)
    let cases = [
        ("GET", "https://a.example.com/open/x", "GET", "/base/x", ""),
        (
            "POST",
            "https://a.example.com/open/x?b=2&a=1",
            "POST",
            "/base/x",
            "b=2&a=1",
        ),
        // The path as the gateway forwards it: normalized, the spelling the origin receives.
        (
            "GET",
            "https://a.example.com/open/./y/../x",
            "GET",
            "/base/x",
            "",
        ),
        (
            "DELETE",
            "https://A.EXAMPLE.COM/open/a%20b?",
            "DELETE",
            "/base/a%20b",
            "",
        ),
    ];
    for (method, url, htm, htu, query) in cases {
        let (has_identity, aud, bound) =
            mint_step(&g, method, url).unwrap_or_else(|| panic!("{method} {url}: no mint step"));
        let bound = bound.expect("attest binds the token");
        assert!(!has_identity, "{url}");
        assert_eq!(aud, "app");
        assert_eq!(
            (bound.htm.as_str(), bound.htu.as_str(), bound.htq.clone()),
            (htm, htu, hash(query)),
            "{method} {url}"
        );
        assert_eq!(
            (bound.jti.as_str(), bound.host.as_str()),
            ("req-1", "a.example.com")
        );
    }
    // Without attest, an anonymous request is not signed at all.
    assert!(mint_step(&gateway(), "GET", "https://a.example.com/open/x").is_none());
}

#[test]
fn an_attested_token_is_anonymous_or_the_users_and_lives_attest_ttl_s() {
    let g = attesting();
    let minting = g.config.minting.as_ref().unwrap();
    let bound = Bound::new("rid-7", "PUT", "/base/x", Some("a=1"), "a.example.com");
    let user: BTreeMap<String, Value> = [("sub", json!("u1")), ("email", json!("u1@example.com"))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let user = Identity::from_claims(user, 9999, &[]);
    let no_sub = Identity::from_claims(BTreeMap::new(), 0, &[]);
    let htq = b64(&Sha256::digest(b"a=1"));
    let common = json!({ "iss": "https://gateway.example.com", "aud": "app", "jti": "rid-7",
                         "htm": "PUT", "htu": "/base/x", "htq": htq, "host": "a.example.com",
                         "iat": 1000, "exp": 1030 });
    let with = |extra: Value| {
        let mut c = common.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let cases = [
        (None, with(json!({ "anon": true }))),
        (Some(&no_sub), with(json!({ "anon": true }))),
        (
            Some(&user),
            with(json!({ "sub": "u1", "email": "u1@example.com" })),
        ),
    ];
    for (identity, expected) in cases {
        let claims = minting
            .claims_for(identity, "app", Some(&bound), 1000)
            .expect("an attestation is always signed");
        assert_eq!(Value::Object(claims), expected);
    }
    // The user's token without a binding is the reusable one, of ttl_s.
    let plain = minting.claims_for(Some(&user), "app", None, 1000).unwrap();
    assert_eq!(plain["exp"], 1060);
    assert!(plain.get("jti").is_none());
    // No query and an empty one are one spelling: the origin sees "" for both.
    assert_eq!(
        Bound::new("r", "GET", "/", None, "h").htq,
        Bound::new("r", "GET", "/", Some(""), "h").htq
    );
}
