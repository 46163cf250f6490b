//! `portcullis`: the offline companion of the gateway.
//!
//! - `portcullis check routes.json`: validates a config; prints every problem with its JSON path.
//! - `portcullis explain routes.json METHOD URL [HEADER: VALUE ...]`: shows what the gateway
//!   would do with that request: the route, the path parameters, the upstream URL and headers.
//!
//! Exit codes: 0 valid (and, for explain, routed), 1 invalid config or refused request, 2 usage.

use std::process::ExitCode;

use portcullis::gateway::{Gateway, Incoming};
use portcullis::upstream::{PoolState, SUBREQUEST_LIMIT};
use portcullis::Config;

const USAGE: &str = "usage:
  portcullis check CONFIG.json
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
        [cmd, path] if cmd == "check" => check(path),
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
