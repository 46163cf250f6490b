//! The `portcullis` binary as an operator runs it: `check --wrangler` on the wrangler.toml
//! fixtures under tests/configs/wrangler (its output and exit code), and `scripts/build-worker`
//! refusing to build with an invalid config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/configs/wrangler").join(name)
}

/// Exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    text(out)
}

fn text(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_valid_wrangler_toml_lists_every_environment_and_what_it_needs() {
    let valid = fixture("valid.toml");
    let (code, out, err) = run(&["check", "--wrangler", valid.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // The top level's vars as a table, staging's as a string, bare without vars: routes.json.
    assert!(
        out.contains("[top level]: GATEWAY_CONFIG: valid (1 routes, 1 origins)"),
        "{out}"
    );
    assert!(
        out.contains("[env.staging]: GATEWAY_CONFIG: valid (1 routes, 1 origins)"),
        "{out}"
    );
    let fallback = fixture("routes.json");
    assert!(
        out.contains(&format!("[env.bare]: {}: valid", fallback.display())),
        "{out}"
    );
    for need in [
        "secret ADMIN_TOKEN ($.admin.token_env): `wrangler secret put ADMIN_TOKEN`",
        "secret JWT_SECRET ($.auth.main.hmac_secret_env): `wrangler secret put JWT_SECRET`",
        "rate-limit binding EDGE_LIMIT ($.routes[0].rate_limit.binding): declared",
    ] {
        assert!(out.contains(need), "{need}: {out}");
    }
    // Bindings are declared per environment: `bare` names EDGE_LIMIT but does not declare it.
    let bare = &out[out.find("[env.bare]").unwrap()..out.find("[env.staging]").unwrap()];
    assert!(
        bare.contains("EDGE_LIMIT ($.routes[0].rate_limit.binding): NOT declared"),
        "{bare}"
    );
}

#[test]
fn the_shipped_wrangler_toml_and_its_secrets() {
    let toml = root().join("wrangler.toml");
    let (code, out, err) = run(&["check", "--wrangler", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for need in [
        "secret JWT_SECRET ($.auth.demo.hmac_secret_env)",
        "secret SSO_CLIENT_SECRET ($.sso[\"demo-sso\"].client_secret_env)",
        "secret SSO_SESSION_KEY ($.sso[\"demo-sso\"].session_key_env)",
        "secret IDENTITY_SIGNING_KEY ($.identity.private_key_env)",
        "rate-limit binding GATEWAY_LIMIT",
    ] {
        assert!(out.contains(need), "{need}: {out}");
    }
}

#[test]
fn an_environment_with_an_invalid_config_fails_naming_it_and_the_json_path() {
    let broken = fixture("broken-env.toml");
    let (code, out, _) = run(&["check", "--wrangler", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[top level]: GATEWAY_CONFIG: valid"), "{out}");
    assert!(
        out.contains("[env.production]: GATEWAY_CONFIG: 2 problems"),
        "{out}"
    );
    assert!(
        out.contains("[env.production] $.routes[0].origin: no origin is named \"nowhere\""),
        "{out}"
    );
    assert!(
        out.contains("[env.production] $.routes[1].cache.stale_if_error_s: must be between"),
        "{out}"
    );
    assert!(
        out.contains(
            "[env.canary]: GATEWAY_CONFIG: must be a JSON string or a table, not a TOML integer"
        ),
        "{out}"
    );
}

#[test]
fn vars_as_a_string_that_is_not_json_fail() {
    let path = fixture("string-invalid.toml");
    let (code, out, _) = run(&["check", "--wrangler", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[top level]: GATEWAY_CONFIG: 1 problem"),
        "{out}"
    );
    assert!(out.contains("the file is not valid JSON"), "{out}");
    assert!(out.contains("[env.edge]: GATEWAY_CONFIG: valid"), "{out}");
}

#[test]
fn usage_and_unreadable_files() {
    assert_eq!(run(&["check", "--wrangler"]).0, 2);
    assert_eq!(run(&["check", "--wrangler", "/no/such/wrangler.toml"]).0, 2);
    assert_eq!(run(&["check", "--frobnicate"]).0, 2);
    let dir = temp_dir("toml");
    let bad = dir.join("wrangler.toml");
    std::fs::write(&bad, "name = \"gw\n").unwrap();
    let (code, _, err) = run(&["check", "--wrangler", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not valid TOML"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn build_worker_refuses_an_invalid_config_before_compiling() {
    let dir = temp_dir("build");
    let routes = dir.join("routes.json");
    std::fs::write(
        &routes,
        r#"{ "origins": { "o": { "servers": [{ "url": "https://o.internal.example" }] } },
             "routes": [{ "name": "r", "path": "/r", "origin": "missing" }] }"#,
    )
    .unwrap();
    let built = root().join("worker/build/index.js");
    let before = std::fs::metadata(&built).and_then(|m| m.modified()).ok();
    let out = Command::new("bash")
        .arg(root().join("scripts/build-worker"))
        .env("PORTCULLIS_ROUTES", &routes)
        .env("PORTCULLIS_BIN", BIN)
        .output()
        .unwrap();
    let (code, out, err) = text(out);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("$.routes[0].origin: no origin is named \"missing\""),
        "{err}"
    );
    assert!(err.contains("has problems (above): not building"), "{err}");
    assert!(
        !err.contains("Compiling"),
        "stopped before cargo compiled the Worker: {err}"
    );
    let after = std::fs::metadata(&built).and_then(|m| m.modified()).ok();
    assert_eq!(before, after, "worker/build was not touched");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn active_health_checks_need_their_kv_namespace_and_a_cron_trigger() {
    let toml = fixture("health.toml");
    let (code, out, err) = run(&["check", "--wrangler", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let top = &out[..out.find("[env.bare]").unwrap()];
    let bare = &out[out.find("[env.bare]").unwrap()..];
    assert!(
        top.contains("KV namespace GATEWAY_HEALTH ($.origins.api.health): declared"),
        "{top}"
    );
    assert!(
        top.contains("cron trigger ($.origins.api.health): declared"),
        "{top}"
    );
    assert!(
        bare.contains("KV namespace GATEWAY_HEALTH ($.origins.api.health): NOT declared")
            && bare.contains("`wrangler kv namespace create GATEWAY_HEALTH --env bare`"),
        "{bare}"
    );
    assert!(
        bare.contains("cron trigger ($.origins.api.health): not set here"),
        "{bare}"
    );
    // A config without checks needs neither.
    let (_, shipped, _) = run(&[
        "check",
        "--wrangler",
        root().join("wrangler.toml").to_str().unwrap(),
    ]);
    assert!(!shipped.contains("KV namespace"), "{shipped}");
}

#[test]
fn check_lists_the_secrets_header_values_name_and_explain_never_reads_them() {
    let config = root().join("tests/configs/valid/origin-secrets.json");
    let config = config.to_str().unwrap();
    let (code, out, err) = run(&["check", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("secrets its header values name: ACCESS_CLIENT_ID, ACCESS_CLIENT_SECRET"),
        "{out}"
    );
    // Even with the secret in the environment, explain shows its name, never its value.
    let out = Command::new(BIN)
        .args(["explain", config, "GET", "https://api.example.com/locked/x"])
        .env("ACCESS_CLIENT_SECRET", "the-real-value")
        .output()
        .unwrap();
    let (code, out, err) = text(out);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("cf-access-client-id: {secret.ACCESS_CLIENT_ID}"),
        "{out}"
    );
    assert!(
        out.contains("cf-access-client-secret: {secret.ACCESS_CLIENT_SECRET}"),
        "{out}"
    );
    assert!(!out.contains("the-real-value") && !err.contains("the-real-value"));
}
