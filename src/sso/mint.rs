//! Signed identity for origins: the `identity` section, the signing key (a private JWK from a
//! Worker secret), the minted token's signing input, and the JWKS the gateway publishes.
//!
//! The adapter signs the input with WebCrypto and appends the signature; here is everything
//! else, so that what origins receive is decided (and tested) in the core.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::b64;
use crate::auth::Identity;
use crate::http::can_carry_identity;
use crate::problems::{bounded, is_identifier, Problems};

pub const DEFAULT_MINT_TTL_S: u64 = 60;
pub const DEFAULT_MINT_CLAIMS: [&str; 2] = ["email", "name"];
/// The default life of an attestation (`attest_ttl_s`), and its bounds.
pub const DEFAULT_ATTEST_TTL_S: u64 = 60;
pub const ATTEST_TTL_BOUNDS: std::ops::RangeInclusive<u64> = 5..=300;
/// The claims an attestation sets besides `iss`, `aud`, `sub`, `iat` and `exp`.
pub const ATTEST_CLAIMS: [&str; 6] = ["jti", "htm", "htu", "htq", "host", "anon"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMinting {
    header: String,
    alg: String,
    private_key_env: String,
    issuer: String,
    kid: Option<String>,
    ttl_s: Option<u64>,
    claims: Option<Vec<String>>,
    attest: Option<bool>,
    attest_ttl_s: Option<u64>,
}

/// The algorithm of minted tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintAlg {
    Es256,
    EdDsa,
}

impl MintAlg {
    pub fn name(self) -> &'static str {
        match self {
            MintAlg::Es256 => "ES256",
            MintAlg::EdDsa => "EdDSA",
        }
    }
}

/// The validated `identity` section. See the README's config reference.
#[derive(Debug, Clone)]
pub struct Minting {
    /// Lower case.
    pub header: String,
    pub alg: MintAlg,
    pub private_key_env: String,
    pub issuer: String,
    /// `None`: the key's RFC 7638 thumbprint.
    pub kid: Option<String>,
    pub ttl_s: u64,
    /// Copied from the identity besides `sub`.
    pub claims: Vec<String>,
    /// A token on every forwarded request, bound to it ([`Bound`]), anonymous ones included.
    pub attest: bool,
    /// The life of an attestation, in seconds.
    pub attest_ttl_s: u64,
}

/// What an attestation is bound to: the request as the origin receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The request id.
    pub jti: String,
    /// The method the origin receives.
    pub htm: String,
    /// The path the origin receives (the server's base path and the forwarded path), as sent:
    /// no scheme and host (the origin sees its own), no query.
    pub htu: String,
    /// base64url(SHA-256(the query the origin receives, without `?`)); of "" without a query.
    pub htq: String,
    /// The public host the client asked, lower case (the gateway's, not the server's).
    pub host: String,
}

impl Bound {
    pub fn new(
        request_id: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        public_host: &str,
    ) -> Bound {
        Bound {
            jti: request_id.to_string(),
            htm: method.to_string(),
            htu: path.to_string(),
            htq: b64(&Sha256::digest(query.unwrap_or("").as_bytes())),
            host: public_host.to_ascii_lowercase(),
        }
    }
}

pub(crate) fn validate_minting(raw: &RawMinting, problems: &mut Problems) -> Option<Minting> {
    let before = problems.0.len();
    let at = "$.identity";
    let header = raw.header.to_ascii_lowercase();
    if !can_carry_identity(&raw.header) {
        problems.add(
            format!("{at}.header"),
            format!("\"{}\" cannot carry the identity token", raw.header),
            Some("use a header of your own, such as x-portcullis-identity"),
        );
    }
    let alg = match raw.alg.as_str() {
        "ES256" => MintAlg::Es256,
        "EdDSA" => MintAlg::EdDsa,
        other => {
            problems.add(
                format!("{at}.alg"),
                format!("\"{other}\" is not a signing algorithm for identity tokens"),
                Some("write \"ES256\" or \"EdDSA\""),
            );
            MintAlg::Es256
        }
    };
    if !is_identifier(&raw.private_key_env) {
        problems.add(
            format!("{at}.private_key_env"),
            format!("\"{}\" is not a binding name", raw.private_key_env),
            Some("name the Worker secret holding the private JWK, e.g. \"IDENTITY_SIGNING_KEY\""),
        );
    }
    if raw.issuer.is_empty() {
        problems.add(format!("{at}.issuer"), "issuer must not be empty", None);
    }
    if let Some(kid) = &raw.kid {
        if kid.is_empty() || kid.len() > 128 {
            problems.add(format!("{at}.kid"), "kid must be 1 to 128 characters", None);
        }
    }
    let ttl_s = bounded(
        raw.ttl_s,
        DEFAULT_MINT_TTL_S,
        10..=3600,
        format!("{at}.ttl_s"),
        "the minted token's life in seconds",
        problems,
    );
    let claims = raw
        .claims
        .clone()
        .unwrap_or_else(|| DEFAULT_MINT_CLAIMS.map(str::to_string).to_vec());
    let attest = raw.attest.unwrap_or(false);
    for (i, c) in claims.iter().enumerate() {
        if c.is_empty() || matches!(c.as_str(), "iss" | "aud" | "exp" | "iat" | "sub") {
            problems.add(
                format!("{at}.claims[{i}]"),
                format!("\"{c}\" cannot be listed"),
                Some("iss, aud, sub, iat and exp are always set by the gateway"),
            );
        } else if attest && ATTEST_CLAIMS.contains(&c.as_str()) {
            problems.add(
                format!("{at}.claims[{i}]"),
                format!("\"{c}\" cannot be listed with attest"),
                Some("jti, htm, htu, htq, host and anon are set by the gateway's attestation"),
            );
        }
    }
    if raw.attest_ttl_s.is_some() && !attest {
        problems.add(
            format!("{at}.attest_ttl_s"),
            "attest_ttl_s applies only with \"attest\": true",
            Some("add \"attest\": true, or remove attest_ttl_s"),
        );
    }
    let attest_ttl_s = bounded(
        raw.attest_ttl_s,
        DEFAULT_ATTEST_TTL_S,
        ATTEST_TTL_BOUNDS,
        format!("{at}.attest_ttl_s"),
        "the attestation's life in seconds",
        problems,
    );
    if problems.0.len() != before {
        return None;
    }
    Some(Minting {
        header,
        alg,
        private_key_env: raw.private_key_env.clone(),
        issuer: raw.issuer.clone(),
        kid: raw.kid.clone(),
        ttl_s,
        claims,
        attest,
        attest_ttl_s,
    })
}

/// The signing key read from the secret: the private JWK for WebCrypto, the public one for the
/// JWKS, and the `kid`.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// The private JWK as JSON, for `importKey("jwk", ...)`.
    pub private_jwk: String,
    /// The public JWK with `kid`, `alg` and `use`.
    pub public_jwk: Value,
    pub kid: String,
}

fn string_field<'a>(jwk: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    jwk.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Minting {
    /// Reads the private JWK from the secret's text. The message names what is wrong, never the
    /// key.
    pub fn signing_key(&self, secret: &str) -> Result<SigningKey, String> {
        let jwk: Map<String, Value> = serde_json::from_str(secret)
            .map_err(|_| "the secret is not a JSON object".to_string())?;
        let (kty, crv) = match self.alg {
            MintAlg::Es256 => ("EC", "P-256"),
            MintAlg::EdDsa => ("OKP", "Ed25519"),
        };
        if string_field(&jwk, "kty") != Some(kty) || string_field(&jwk, "crv") != Some(crv) {
            return Err(format!(
                "the key is not a {kty} {crv} JWK, as {} needs",
                self.alg.name()
            ));
        }
        let public_fields: &[&str] = match self.alg {
            MintAlg::Es256 => &["crv", "kty", "x", "y"],
            MintAlg::EdDsa => &["crv", "kty", "x"],
        };
        let mut public = BTreeMap::new();
        for f in public_fields {
            let v = string_field(&jwk, f).ok_or_else(|| format!("the key has no \"{f}\""))?;
            public.insert(f.to_string(), Value::String(v.to_string()));
        }
        if string_field(&jwk, "d").is_none() {
            return Err("the key has no private part \"d\"".into());
        }
        // RFC 7638: the thumbprint is the SHA-256 of the required members in lexicographic
        // order, no whitespace: exactly what serializing the sorted map gives.
        let canonical = serde_json::to_string(&public).unwrap_or_default();
        let kid = self
            .kid
            .clone()
            .unwrap_or_else(|| b64(&Sha256::digest(canonical.as_bytes())));
        let mut public_jwk: Map<String, Value> = public.into_iter().collect();
        public_jwk.insert("kid".into(), Value::String(kid.clone()));
        public_jwk.insert("alg".into(), Value::String(self.alg.name().into()));
        public_jwk.insert("use".into(), Value::String("sig".into()));
        let mut private = jwk.clone();
        // WebCrypto refuses a JWK whose `alg`, `use` or `key_ops` disagree with the import.
        private.remove("alg");
        private.remove("use");
        private.remove("key_ops");
        private.remove("kid");
        Ok(SigningKey {
            private_jwk: Value::Object(private).to_string(),
            public_jwk: Value::Object(public_jwk),
            kid,
        })
    }

    /// The body of `GET /.well-known/jwks.json`.
    pub fn jwks_document(key: &SigningKey) -> String {
        json!({ "keys": [key.public_jwk] }).to_string()
    }

    /// The claims of the token minted for the origin pool `aud` at `now`: for `identity`, and
    /// bound to the request when it is an attestation (`bound`). `None` when there is nothing to
    /// sign: no `sub` and no attestation. An attestation without `sub` says `"anon": true`.
    pub fn claims_for(
        &self,
        identity: Option<&Identity>,
        aud: &str,
        bound: Option<&Bound>,
        now: i64,
    ) -> Option<Map<String, Value>> {
        let sub = identity.and_then(|i| i.values.get("sub").map(|sub| (i, sub)));
        if sub.is_none() && bound.is_none() {
            return None;
        }
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        claims.insert("aud".into(), Value::String(aud.to_string()));
        match sub {
            Some((identity, sub)) => {
                claims.insert("sub".into(), sub.clone());
                for name in &self.claims {
                    if let Some(v) = identity.values.get(name) {
                        claims.insert(name.clone(), v.clone());
                    }
                }
            }
            None => {
                claims.insert("anon".into(), Value::Bool(true));
            }
        }
        let ttl = match bound {
            Some(b) => {
                claims.insert("jti".into(), Value::String(b.jti.clone()));
                claims.insert("htm".into(), Value::String(b.htm.clone()));
                claims.insert("htu".into(), Value::String(b.htu.clone()));
                claims.insert("htq".into(), Value::String(b.htq.clone()));
                claims.insert("host".into(), Value::String(b.host.clone()));
                self.attest_ttl_s
            }
            None => self.ttl_s,
        };
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl as i64));
        Some(claims)
    }

    /// What identifies a minted token for reuse: the same audience and the same claims (without
    /// the times).
    pub fn reuse_key(claims: &Map<String, Value>) -> String {
        let mut c = claims.clone();
        c.remove("iat");
        c.remove("exp");
        Value::Object(c).to_string()
    }

    /// Until when (seconds) a token minted at `iat` is reused: `exp - max(5, ttl_s / 4)`.
    pub fn reuse_until(&self, iat: i64) -> i64 {
        let ttl = self.ttl_s as i64;
        iat + ttl - (ttl / 4).max(5)
    }

    /// The JWS signing input `base64url(header) "." base64url(claims)`.
    pub fn signing_input(&self, kid: &str, claims: &Map<String, Value>) -> String {
        let header = json!({ "alg": self.alg.name(), "typ": "JWT", "kid": kid });
        format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(Value::Object(claims.clone()).to_string().as_bytes())
        )
    }
}
