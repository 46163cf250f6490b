//! JSON Web Keys: parsing a key set (inline in the config, or fetched from `jwks_url`) into public
//! verification keys, and choosing the keys a token may be checked with.
//!
//! Contract: a [`KeySet`] holds only public keys of the kinds the gateway verifies with: RSA of
//! at least 2048 bits, EC P-256, OKP Ed25519. Symmetric (`oct`) and private keys are never keys
//! here: an HMAC secret comes only from `hmac_secret_env`, so a public key can never become an
//! HMAC secret. [`KeySet::candidates`] applies the key-choice rules of the README (step 5).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::policy::Alg;
use super::AuthError;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Without a `kid`, at most this many fitting keys are tried.
pub const MAX_KIDLESS_CANDIDATES: usize = 3;
/// At most this many keys are kept from one key set.
pub const MAX_KEYS: usize = 32;

/// The public part of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// Modulus and exponent, big-endian, leading zeros stripped.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// P-256 point coordinates, 32 bytes each.
    P256 { x: Vec<u8>, y: Vec<u8> },
    /// An Ed25519 public key, 32 bytes.
    Ed25519 { x: Vec<u8> },
}

/// One verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub material: Material,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<String>,
    /// The JWK's `use`, when given.
    pub use_: Option<String>,
    /// The JWK's `key_ops`, when given.
    pub key_ops: Option<Vec<String>>,
    /// The minimal public JWK as JSON (`kty` and the key's numbers only): what WebCrypto imports,
    /// and the key's identity for caches.
    pub public_json: String,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<Value>,
    k: Option<Value>,
}

fn b64(field: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = field
        .as_deref()
        .ok_or_else(|| format!("the key has no '{name}'"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("'{name}' is not unpadded base64url"))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let lead = v.iter().take_while(|b| **b == 0).count();
    v.drain(..lead.min(v.len().saturating_sub(1)));
    v
}

impl Jwk {
    /// Parses one JWK object; the error says why it is not a usable public verification key.
    pub fn from_value(value: &Value) -> Result<Jwk, String> {
        let raw: RawJwk =
            serde_json::from_value(value.clone()).map_err(|e| format!("not a JWK: {e}"))?;
        if raw.d.is_some() {
            return Err("this is a private key; publish only the public part".into());
        }
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let (material, public_json) = match raw.kty.as_deref() {
            Some("RSA") => {
                let n = strip_zeros(b64(&raw.n, "n")?);
                let e = strip_zeros(b64(&raw.e, "e")?);
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "an RSA key of {bits} bits is too weak; at least {MIN_RSA_BITS} are needed"
                    ));
                }
                if e.is_empty() || e.len() > 8 || e == [1] || e.last().is_some_and(|x| x % 2 == 0) {
                    return Err("the RSA exponent is not acceptable".into());
                }
                let json = serde_json::json!({"kty": "RSA", "n": b(&n), "e": b(&e)}).to_string();
                (Material::Rsa { n, e }, json)
            }
            Some("EC") => {
                if raw.crv.as_deref() != Some("P-256") {
                    return Err("only the EC curve P-256 is supported".into());
                }
                let x = b64(&raw.x, "x")?;
                let y = b64(&raw.y, "y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err("P-256 coordinates must be 32 bytes each".into());
                }
                let json = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b(&x), "y": b(&y)})
                    .to_string();
                (Material::P256 { x, y }, json)
            }
            Some("OKP") => {
                if raw.crv.as_deref() != Some("Ed25519") {
                    return Err("only the OKP curve Ed25519 is supported".into());
                }
                let x = b64(&raw.x, "x")?;
                if x.len() != 32 {
                    return Err("an Ed25519 key must be 32 bytes".into());
                }
                let json =
                    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b(&x)}).to_string();
                (Material::Ed25519 { x }, json)
            }
            Some("oct") => {
                let _ = &raw.k;
                return Err(
                    "symmetric keys are never taken from a key set; use hmac_secret_env".into(),
                );
            }
            Some(other) => return Err(format!("key type '{other}' is not supported")),
            None => return Err("the key has no 'kty'".into()),
        };
        Ok(Jwk {
            kid: raw.kid,
            material,
            alg: raw.alg,
            use_: raw.use_,
            key_ops: raw.key_ops,
            public_json,
        })
    }

    /// Whether this key may verify `alg`: type and curve fit, its `alg` (if any) is the token's,
    /// its `use` (if any) is `sig`, its `key_ops` (if any) include `verify`.
    pub fn fits(&self, alg: Alg) -> bool {
        let kind_fits = match (&self.material, alg) {
            (Material::Rsa { .. }, a) => matches!(
                a,
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512
            ),
            (Material::P256 { .. }, a) => a == Alg::Es256,
            (Material::Ed25519 { .. }, a) => a == Alg::EdDsa,
        };
        kind_fits
            && self.alg.as_deref().is_none_or(|a| a == alg.name())
            && self.use_.as_deref().is_none_or(|u| u == "sig")
            && self
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| o == "verify"))
    }
}

/// A set of verification keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

impl KeySet {
    /// An inline `jwks` of the config: every key must be usable, or the error names it
    /// (`.keys[2]`) and why.
    pub fn from_config(value: &Value) -> Result<KeySet, (String, String)> {
        let keys = value.get("keys").and_then(Value::as_array).ok_or_else(|| {
            (
                String::new(),
                "jwks must be { \"keys\": [...] }".to_string(),
            )
        })?;
        if keys.is_empty() {
            return Err((".keys".into(), "jwks has no keys".into()));
        }
        if keys.len() > MAX_KEYS {
            return Err((".keys".into(), format!("at most {MAX_KEYS} keys")));
        }
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            out.push(Jwk::from_value(k).map_err(|e| (format!(".keys[{i}]"), e))?);
        }
        Ok(KeySet { keys: out })
    }

    /// A key set fetched from a provider: unusable keys (private, weak, unknown types) are
    /// skipped, and their number returned for the log. `Err` when the document is no key set.
    pub fn from_jwks_json(text: &str) -> Result<(KeySet, usize), String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let mut out = Vec::new();
        let mut skipped = 0;
        for k in keys.iter() {
            match Jwk::from_value(k) {
                Ok(jwk) if out.len() < MAX_KEYS => out.push(jwk),
                _ => skipped += 1,
            }
        }
        Ok((KeySet { keys: out }, skipped))
    }

    /// Whether a key with this identity is in the set.
    pub fn contains(&self, public_json: &str) -> bool {
        self.keys.iter().any(|k| k.public_json == public_json)
    }

    /// Whether any key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys a token with `alg` and `kid` may be verified with, in order. With a `kid`: the
    /// keys with that `kid` that fit (`UnknownKid` when none has it, `NoFittingKey` when those
    /// that have it do not fit). Without one: the first [`MAX_KIDLESS_CANDIDATES`] fitting keys.
    pub fn candidates(&self, alg: Alg, kid: Option<&str>) -> Result<Vec<&Jwk>, AuthError> {
        match kid {
            Some(kid) => {
                let named: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(AuthError::UnknownKid);
                }
                let fit: Vec<&Jwk> = named.into_iter().filter(|k| k.fits(alg)).collect();
                if fit.is_empty() {
                    return Err(AuthError::NoFittingKey);
                }
                Ok(fit)
            }
            None => {
                let fit: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| k.fits(alg))
                    .take(MAX_KIDLESS_CANDIDATES)
                    .collect();
                if fit.is_empty() {
                    Err(AuthError::NoFittingKey)
                } else {
                    Ok(fit)
                }
            }
        }
    }
}
