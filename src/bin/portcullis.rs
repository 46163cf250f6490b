//! `portcullis`: the offline companion of the gateway.
//!
//! - `portcullis check routes.json`: validates a config; prints every problem with its JSON path.
//! - `portcullis check --wrangler wrangler.toml`: validates the `GATEWAY_CONFIG` of the top-level
//!   `[vars]` and of every `[env.NAME]` (or, where it is not set, the `routes.json` next to the
//!   file, as the Worker falls back to it), prints every problem with its environment and JSON
//!   path, and lists the secrets and bindings each config needs.
//! - `portcullis explain routes.json METHOD URL [HEADER: VALUE ...]`: shows what the gateway
//!   would do with that request: the route, the path parameters, the upstream URL and headers.
//!
//! Exit codes: 0 valid (and, for explain, routed), 1 invalid config or refused request, 2 usage.

use std::process::ExitCode;

use portcullis::gateway::{Gateway, Incoming};
use portcullis::problems::key_path;
use portcullis::upstream::{PoolState, SUBREQUEST_LIMIT};
use portcullis::Config;

const USAGE: &str = "usage:
  portcullis check CONFIG.json
  portcullis check --wrangler wrangler.toml
  portcullis explain CONFIG.json METHOD URL ['header: value' ...]";

fn load(path: &str) -> Result<Config, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("{path}: cannot read: {e}");
        ExitCode::from(2)
    })?;
    Config::from_json(&text).map_err(|errors| {
        eprintln!("{path}: {errors}");
        ExitCode::from(1)
    })
}

fn check(path: &str) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            println!(
                "{path}: valid ({} routes, {} origins)",
                cfg.routes.len(),
                cfg.origins.len()
            );
            if !cfg.secrets.is_empty() {
                println!("secrets its header values name: {}", cfg.secrets.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// One environment of a wrangler.toml: its label, its `[vars]` and its rate-limit bindings.
struct Environment<'a> {
    label: String,
    /// `--env NAME` for wrangler commands, empty at the top level.
    flag: String,
    table: &'a toml::Table,
}

/// `check --wrangler`: every environment's config, its problems and what it needs.
fn check_wrangler(path: &str) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{path}: cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    let doc: toml::Table = match toml::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("{path}: not valid TOML: {e}");
            return ExitCode::from(1);
        }
    };
    let dir = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    let fallback = dir.join("routes.json");
    let mut envs = vec![Environment {
        label: "[top level]".into(),
        flag: String::new(),
        table: &doc,
    }];
    if let Some(toml::Value::Table(named)) = doc.get("env") {
        for (name, value) in named {
            if let toml::Value::Table(table) = value {
                envs.push(Environment {
                    label: format!("[env.{name}]"),
                    flag: format!(" --env {name}"),
                    table,
                });
            }
        }
    }
    let mut failed = false;
    for env in &envs {
        // `vars` are not inherited by environments: an env without its own GATEWAY_CONFIG runs
        // the routes.json compiled into the Worker.
        let var = env
            .table
            .get("vars")
            .and_then(|v| v.as_table())
            .and_then(|vars| vars.get("GATEWAY_CONFIG"));
        let (source, config_text) = match var {
            Some(toml::Value::String(s)) => ("GATEWAY_CONFIG".to_string(), Ok(s.clone())),
            Some(value @ toml::Value::Table(_)) => (
                "GATEWAY_CONFIG".to_string(),
                serde_json::to_string(value).map_err(|e| e.to_string()),
            ),
            Some(other) => (
                "GATEWAY_CONFIG".to_string(),
                Err(format!(
                    "must be a JSON string or a table, not a TOML {}",
                    other.type_str()
                )),
            ),
            None => (
                fallback.display().to_string(),
                std::fs::read_to_string(&fallback)
                    .map_err(|e| format!("cannot read ({e}); GATEWAY_CONFIG is not set")),
            ),
        };
        let label = &env.label;
        let config = match config_text {
            Err(e) => {
                println!("{label}: {source}: {e}");
                failed = true;
                continue;
            }
            Ok(text) => Config::from_json(&text),
        };
        match config {
            Err(errors) => {
                failed = true;
                let n = errors.0.len();
                println!(
                    "{label}: {source}: {n} problem{}",
                    if n == 1 { "" } else { "s" }
                );
                for e in &errors.0 {
                    println!("  {label} {e}");
                }
            }
            Ok(cfg) => {
                println!(
                    "{label}: {source}: valid ({} routes, {} origins)",
                    cfg.routes.len(),
                    cfg.origins.len()
                );
                print_needs(&cfg, env);
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The Worker secrets and bindings a valid config needs, with the field that names each.
fn print_needs(cfg: &Config, env: &Environment<'_>) {
    let mut secrets: Vec<(String, String)> = Vec::new();
    if let Some(admin) = &cfg.admin {
        secrets.push((admin.token_env.clone(), "$.admin.token_env".into()));
    }
    for policy in &cfg.policies {
        if let Some(name) = &policy.hmac_secret_env {
            let at = format!("{}.hmac_secret_env", key_path("$.auth", &policy.name));
            secrets.push((name.clone(), at));
        }
    }
    for sso in &cfg.sso {
        let at = |field: &str| format!("{}.{field}", key_path("$.sso", &sso.name));
        secrets.push((sso.client_secret_env.clone(), at("client_secret_env")));
        secrets.push((sso.session_key_env.clone(), at("session_key_env")));
    }
    if let Some(minting) = &cfg.minting {
        let at = "$.identity.private_key_env".to_string();
        secrets.push((minting.private_key_env.clone(), at));
    }
    for (i, route) in cfg.routes.iter().enumerate() {
        for name in route.request_headers.secrets() {
            let at = format!("$.routes[{i}].request_headers ({{secret.{name}}})");
            if !secrets.iter().any(|(n, a)| n == name && *a == at) {
                secrets.push((name.to_string(), at));
            }
        }
    }
    let declared: Vec<&str> = env
        .table
        .get("ratelimits")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("name")?.as_str())
        .collect();
    let mut bindings: Vec<(String, String)> = Vec::new();
    for (i, route) in cfg.routes.iter().enumerate() {
        if let Some(rule) = &route.policy.rate_limit {
            bindings.push((
                rule.binding.clone(),
                format!("$.routes[{i}].rate_limit.binding"),
            ));
        }
    }
    if secrets.is_empty() {
        println!("  secrets: none");
    }
    for (name, at) in &secrets {
        println!(
            "  secret {name} ({at}): `wrangler secret put {name}{}`",
            env.flag
        );
    }
    if bindings.is_empty() {
        println!("  rate-limit bindings: none");
    }
    for (name, at) in &bindings {
        let state = if declared.contains(&name.as_str()) {
            "declared"
        } else {
            "NOT declared in this environment's [[ratelimits]]: those routes answer 500 config_invalid"
        };
        println!("  rate-limit binding {name} ({at}): {state}");
    }
    print_health_needs(cfg, env);
}

/// What the pools' active health checks need: the KV namespace and a Cron Trigger.
fn print_health_needs(cfg: &Config, env: &Environment<'_>) {
    let checked: Vec<String> = cfg
        .origins
        .iter()
        .filter(|o| o.health.is_some())
        .map(|o| format!("{}.health", key_path("$.origins", &o.name)))
        .collect();
    if checked.is_empty() {
        return;
    }
    let binding = portcullis::upstream::checks::CHECKS_BINDING;
    let at = checked.join(", ");
    let kv = env
        .table
        .get("kv_namespaces")
        .and_then(|k| k.as_array())
        .into_iter()
        .flatten()
        .any(|b| b.get("binding").and_then(|n| n.as_str()) == Some(binding));
    let state = if kv {
        "declared".to_string()
    } else {
        format!(
            "NOT declared in this environment's [[kv_namespaces]]: no active checks \
             (`wrangler kv namespace create {binding}{}`)",
            env.flag
        )
    };
    println!("  KV namespace {binding} ({at}): {state}");
    let crons = env
        .table
        .get("triggers")
        .and_then(|t| t.get("crons"))
        .and_then(|c| c.as_array())
        .map(|c| c.len());
    let state = match crons {
        Some(n) if n > 0 => "declared".to_string(),
        Some(_) => "empty: no scheduled runs, no active checks".to_string(),
        None if !env.flag.is_empty() => {
            "not set here: the top level's [triggers] apply".to_string()
        }
        None => "NOT declared ([triggers] crons = [\"* * * * *\"]): no active checks".to_string(),
    };
    println!("  cron trigger ({at}): {state}");
}

fn explain(path: &str, method: &str, url: &str, header_args: &[String]) -> ExitCode {
    let mut headers = Vec::new();
    for h in header_args {
        let Some((name, value)) = h.split_once(':') else {
            eprintln!("'{h}' is not a 'name: value' header\n{USAGE}");
            return ExitCode::from(2);
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let cfg = match load(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    // Secrets are shown by name, never read.
    let shown: Vec<(String, String)> = cfg
        .secrets
        .iter()
        .map(|name| (name.clone(), format!("{{secret.{name}}}")))
        .collect();
    let gateway = Gateway::new(cfg).with_secrets(shown);
    let request = Incoming {
        method,
        url,
        headers: &headers,
    };
    // The CLI is an adapter: it may read the clock and the environment (HMAC secrets).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secret = |name: &str| std::env::var(name).ok().map(String::into_bytes);
    match gateway.plan_at(&request, "explain", now, secret) {
        Ok(plan) => {
            let route = gateway.route(&plan);
            let origin = &gateway.config.origins[route.origin];
            println!("route:       {}", route.name);
            println!("path:        {}", plan.path);
            if plan.params.is_empty() {
                println!("params:      (none)");
            } else {
                let params: Vec<String> = plan
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("params:      {}", params.join(" "));
            }
            // A fresh isolate's choice: the first request of a pool, no server ejected yet.
            let order = PoolState::new(origin).candidates(origin, plan.hash_key.as_deref(), 0, 0);
            let attempts =
                origin
                    .retry
                    .attempts_for(&plan.method, order.len(), SUBREQUEST_LIMIT, true);
            println!(
                "origin:      {} ({} servers, {:?})",
                origin.name,
                origin.servers.len(),
                origin.balance
            );
            println!(
                "upstream:    {} {}",
                plan.method,
                plan.url_for(&origin.servers[order[0]])
            );
            for &i in order.iter().take(attempts as usize).skip(1) {
                println!(
                    "  then:      {} {}",
                    plan.method,
                    plan.url_for(&origin.servers[i])
                );
            }
            println!(
                "attempts:    up to {attempts}, each {} ms, {} ms in all",
                origin.timeout_ms, origin.deadline_ms
            );
            println!("headers to the origin:");
            for (name, value) in &plan.headers {
                println!("  {name}: {value}");
            }
            ExitCode::SUCCESS
        }
        Err(refusal) => {
            let response = refusal.error.response("explain");
            println!("refused:     {} {}", response.status, refusal.error.code());
            println!("message:     {}", refusal.error.message());
            if let portcullis::GatewayError::Auth(e) = &refusal.error {
                println!("reason:      {e}");
            }
            for (name, value) in response.headers.iter().filter(|(n, _)| n == "allow") {
                println!("{name}:       {value}");
            }
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, flag, path] if cmd == "check" && flag == "--wrangler" => check_wrangler(path),
        [cmd, path] if cmd == "check" && !path.starts_with("--") => check(path),
        [cmd, path, method, url, headers @ ..] if cmd == "explain" => {
            explain(path, method, url, headers)
        }
        [cmd] if cmd == "--help" || cmd == "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
