//! Auth policies: the top-level `auth` map of the config, parsed into raw serde types and
//! validated into [`Policy`], and a route's `auth` into [`RouteAuth`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::jwk::KeySet;
use crate::http::{can_carry_identity, is_valid_header_name};
use crate::problems::{key_path, Problems};

/// The default cap on a token's length, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// The default least time between two JWKS fetches, in seconds.
pub const DEFAULT_MIN_REFETCH_S: u64 = 30;
/// The default clock leeway, in seconds.
pub const DEFAULT_LEEWAY_S: u64 = 60;

/// A signature algorithm the gateway verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    EdDsa,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 11] = [
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::EdDsa,
    ];

    /// The JOSE name (`RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// Parses a JOSE name, case-sensitively; `none` and unknown names are `None`.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// HS256/384/512: verified with the HMAC secret, never with a JWK.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::Hs256 | Alg::Hs384 | Alg::Hs512)
    }

    /// The hash's name as WebCrypto spells it, and its output size in bytes.
    pub fn hash(self) -> (&'static str, usize) {
        match self {
            Alg::Hs256 | Alg::Rs256 | Alg::Ps256 | Alg::Es256 => ("SHA-256", 32),
            Alg::Hs384 | Alg::Rs384 | Alg::Ps384 => ("SHA-384", 48),
            Alg::Hs512 | Alg::Rs512 | Alg::Ps512 | Alg::EdDsa => ("SHA-512", 64),
        }
    }
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `header:authorization`: `Bearer TOKEN`, the scheme case-insensitive.
    Authorization,
    /// `header:NAME`: the whole value (lower-case name).
    Header(String),
    /// `cookie:NAME`.
    Cookie(String),
}

/// A validated auth policy. See the README's config reference.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub algorithms: Vec<Alg>,
    /// Inline keys (`jwks`), when given.
    pub jwks: Option<KeySet>,
    /// `jwks_url`, when given.
    pub jwks_url: Option<String>,
    /// The Worker secret holding the HMAC key, for HS*.
    pub hmac_secret_env: Option<String>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway_s: u64,
    pub max_age_s: Option<u64>,
    pub token_from: Vec<TokenSource>,
    /// Claim name and the values it must all hold.
    pub require: Vec<(String, Vec<String>)>,
    /// Claim name and the lower-case header it is forwarded in.
    pub forward_claims: Vec<(String, String)>,
    pub max_token_bytes: usize,
    /// With `jwks_url`: the least time between two fetches of the key set (refresh or unknown
    /// `kid`), so a flood of made-up kids cannot hammer the provider.
    pub jwks_min_refetch_s: u64,
}

/// A route's use of a policy or of a single sign-on entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    pub uses: AuthUse,
    /// No token (or session): the request goes on anonymously. A bad token is still 401.
    pub optional: bool,
}

/// What a route's `auth.use` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthUse {
    /// A bearer-token policy: index into the config's policies.
    Policy(usize),
    /// A session of an `sso` entry (index into the config's `sso`); `login`: browser
    /// navigations without one are sent to the provider.
    Session { sso: usize, login: bool },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    algorithms: Vec<String>,
    jwks: Option<Value>,
    jwks_url: Option<String>,
    hmac_secret_env: Option<String>,
    #[serde(default)]
    issuers: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    leeway_s: Option<u64>,
    max_age_s: Option<u64>,
    token_from: Option<Vec<String>>,
    #[serde(default)]
    require: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    forward_claims: BTreeMap<String, String>,
    max_token_bytes: Option<usize>,
    jwks_min_refetch_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawRouteAuth {
    Name(String),
    Full(RawRouteAuthFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteAuthFull {
    #[serde(rename = "use")]
    use_: String,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    login: bool,
}

fn parse_source(text: &str) -> Option<TokenSource> {
    let (kind, name) = text.split_once(':')?;
    if !is_valid_header_name(name) {
        return None;
    }
    match kind {
        "header" if name.eq_ignore_ascii_case("authorization") => Some(TokenSource::Authorization),
        "header" => Some(TokenSource::Header(name.to_ascii_lowercase())),
        "cookie" => Some(TokenSource::Cookie(name.to_string())),
        _ => None,
    }
}

pub(crate) fn validate_policy(
    name: &str,
    raw: &RawPolicy,
    at: &str,
    problems: &mut Problems,
) -> Option<Policy> {
    let before = problems.0.len();
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        problems.add(
            format!("{at}.algorithms"),
            "algorithms must not be empty",
            Some("list the algorithms your identity provider signs with, e.g. [\"RS256\"]"),
        );
    }
    for (i, a) in raw.algorithms.iter().enumerate() {
        match Alg::from_name(a) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => problems.add(format!("{at}.algorithms[{i}]"), format!("\"{a}\" is listed twice"), None),
            None => problems.add(
                format!("{at}.algorithms[{i}]"),
                format!("\"{a}\" is not a supported algorithm"),
                Some("supported: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA (\"none\" never is)"),
            ),
        }
    }
    let has_hmac = algorithms.iter().any(|a| a.is_hmac());
    let has_public = algorithms.iter().any(|a| !a.is_hmac());

    let jwks = raw
        .jwks
        .as_ref()
        .and_then(|v| match KeySet::from_config(v) {
            Ok(set) => Some(set),
            Err((path, message)) => {
                problems.add(
                    format!("{at}.jwks{path}"),
                    message,
                    Some("give public keys only: RSA (2048 bits or more), EC P-256 or OKP Ed25519"),
                );
                None
            }
        });
    if raw.jwks.is_some() && raw.jwks_url.is_some() {
        problems.add(
            format!("{at}.jwks_url"),
            "give jwks or jwks_url, not both",
            None,
        );
    }
    if let Some(url) = &raw.jwks_url {
        let ok = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if ok.is_none() {
            problems.add(
                format!("{at}.jwks_url"),
                format!("\"{url}\" is not an absolute http(s) URL"),
                Some("write the identity provider's JWKS address, e.g. https://id.example.com/.well-known/jwks.json"),
            );
        }
    }
    if has_public && raw.jwks.is_none() && raw.jwks_url.is_none() {
        problems.add(
            at.to_string(),
            "the policy has no way to get keys for its public-key algorithms",
            Some("add \"jwks_url\" (the identity provider's key set) or an inline \"jwks\""),
        );
    }
    match &raw.hmac_secret_env {
        None if has_hmac => problems.add(
            at.to_string(),
            "the policy has no way to get the HMAC secret for its HS* algorithms",
            Some("add \"hmac_secret_env\": the name of a Worker secret of at least 32 bytes"),
        ),
        Some(env)
            if env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            problems.add(
                format!("{at}.hmac_secret_env"),
                format!("\"{env}\" is not a binding name"),
                Some("name the Worker secret, e.g. \"JWT_SECRET\""),
            )
        }
        Some(_) if !has_hmac => problems.add(
            format!("{at}.hmac_secret_env"),
            "hmac_secret_env is set but no HS* algorithm is listed",
            Some("add HS256 (or HS384, HS512) to algorithms, or remove hmac_secret_env"),
        ),
        _ => {}
    }
    let leeway_s = raw.leeway_s.unwrap_or(DEFAULT_LEEWAY_S);
    if leeway_s > 3600 {
        problems.add(
            format!("{at}.leeway_s"),
            "leeway_s must be at most 3600",
            None,
        );
    }
    if raw.max_age_s == Some(0) {
        problems.add(
            format!("{at}.max_age_s"),
            "max_age_s must be positive",
            None,
        );
    }
    let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(256..=65536).contains(&max_token_bytes) {
        problems.add(
            format!("{at}.max_token_bytes"),
            "max_token_bytes must be between 256 and 65536",
            None,
        );
    }
    let jwks_min_refetch_s = raw.jwks_min_refetch_s.unwrap_or(DEFAULT_MIN_REFETCH_S);
    if !(1..=3600).contains(&jwks_min_refetch_s) {
        problems.add(
            format!("{at}.jwks_min_refetch_s"),
            "jwks_min_refetch_s must be between 1 and 3600",
            None,
        );
    }
    let mut token_from = Vec::new();
    match &raw.token_from {
        None => token_from.push(TokenSource::Authorization),
        Some(list) if list.is_empty() => problems.add(
            format!("{at}.token_from"),
            "token_from must not be empty",
            Some("leave it out for [\"header:authorization\"]"),
        ),
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                match parse_source(s) {
                    Some(src) => token_from.push(src),
                    None => problems.add(
                        format!("{at}.token_from[{i}]"),
                        format!("\"{s}\" is not a token source"),
                        Some("write \"header:authorization\", \"header:NAME\" or \"cookie:NAME\""),
                    ),
                }
            }
        }
    }
    let require = validate_require(&raw.require, &format!("{at}.require"), problems);
    let forward_claims = validate_forward_claims(
        &raw.forward_claims,
        &format!("{at}.forward_claims"),
        problems,
    );
    if problems.0.len() != before {
        return None;
    }
    Some(Policy {
        name: name.to_string(),
        algorithms,
        jwks,
        jwks_url: raw.jwks_url.clone(),
        hmac_secret_env: raw.hmac_secret_env.clone(),
        issuers: raw.issuers.clone(),
        audiences: raw.audiences.clone(),
        leeway_s,
        max_age_s: raw.max_age_s,
        token_from,
        require,
        forward_claims,
        max_token_bytes,
        jwks_min_refetch_s,
    })
}

pub(crate) fn validate_route_auth(
    raw: &RawRouteAuth,
    at: &str,
    policy_names: &[&String],
    sso_names: &[&String],
    problems: &mut Problems,
) -> Option<RouteAuth> {
    let (name, optional, login, at) = match raw {
        RawRouteAuth::Name(n) => (n, false, false, at.to_string()),
        RawRouteAuth::Full(f) => (&f.use_, f.optional, f.login, format!("{at}.use")),
    };
    if let Some(sso) = sso_names.iter().position(|p| *p == name) {
        return Some(RouteAuth {
            uses: AuthUse::Session { sso, login },
            optional,
        });
    }
    match policy_names.iter().position(|p| *p == name) {
        Some(_) if login => {
            problems.add(
                at.replace(".use", ".login"),
                format!("\"{name}\" is a bearer-token policy: it has no login"),
                Some("login needs an entry of $.sso; leave login out for a token policy"),
            );
            None
        }
        Some(policy) => Some(RouteAuth {
            uses: AuthUse::Policy(policy),
            optional,
        }),
        None => {
            let known: Vec<&str> = policy_names
                .iter()
                .chain(sso_names)
                .map(|s| s.as_str())
                .collect();
            problems.add(
                at,
                format!("no auth policy or sso entry is named \"{name}\""),
                Some(&format!(
                    "define it under $.auth or $.sso; defined: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )),
            );
            None
        }
    }
}

/// `require`: claim name and the values it must all hold (at `at`, the map's path).
pub(crate) fn validate_require(
    raw: &BTreeMap<String, Vec<String>>,
    at: &str,
    problems: &mut Problems,
) -> Vec<(String, Vec<String>)> {
    let mut require = Vec::new();
    for (claim, values) in raw {
        let p = key_path(at, claim);
        if values.is_empty() || values.iter().any(|v| v.is_empty() || v.contains(' ')) {
            problems.add(
                p,
                "require needs one or more non-empty values without spaces",
                None,
            );
        } else {
            require.push((claim.clone(), values.clone()));
        }
    }
    require
}

/// `forward_claims`: claim name and the lower-case header it is forwarded in.
pub(crate) fn validate_forward_claims(
    raw: &BTreeMap<String, String>,
    at: &str,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let mut forward_claims = Vec::new();
    for (claim, header) in raw {
        let p = key_path(at, claim);
        if !can_carry_identity(header) {
            problems.add(
                p,
                format!("\"{header}\" cannot carry a claim"),
                Some("use a header of your own, such as x-user-id"),
            );
        } else {
            forward_claims.push((claim.clone(), header.to_ascii_lowercase()));
        }
    }
    forward_claims
}
