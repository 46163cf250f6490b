//! The signature layer in Rust: HMAC for HS* (used by the Worker too), and, behind the
//! `native-verify` feature, jwt-compact's own RSA, ECDSA and Ed25519 (tests and the CLI; the
//! Worker verifies those with WebCrypto instead, so this code stays out of the Wasm).
//!
//! Contract: `true` only when `signature` is a valid signature of `input` under the key with
//! exactly `alg`; any malformed input (wrong length, bad key) is `false`, never a panic.

use jwt_compact::{Algorithm, AlgorithmSignature};

use super::policy::Alg;
use super::MIN_HMAC_SECRET_BYTES;

fn check<A: Algorithm>(alg: &A, key: &A::VerifyingKey, input: &[u8], signature: &[u8]) -> bool {
    if let Some(len) = <A::Signature as AlgorithmSignature>::LENGTH {
        if signature.len() != len.get() {
            return false;
        }
    }
    match <A::Signature as AlgorithmSignature>::try_from_slice(signature) {
        Ok(sig) => alg.verify_signature(&sig, key, input),
        Err(_) => false,
    }
}

/// HS256/384/512 with `secret` (at least [`MIN_HMAC_SECRET_BYTES`]; a shorter one never
/// verifies). Constant-time comparison (jwt-compact compares `CtOutput`s).
pub fn verify_hmac(alg: Alg, secret: &[u8], input: &[u8], signature: &[u8]) -> bool {
    use jwt_compact::alg::{Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key};
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return false;
    }
    match alg {
        Alg::Hs256 => check(&Hs256, &Hs256Key::new(secret), input, signature),
        Alg::Hs384 => check(&Hs384, &Hs384Key::new(secret), input, signature),
        Alg::Hs512 => check(&Hs512, &Hs512Key::new(secret), input, signature),
        _ => false,
    }
}

/// RS*, PS*, ES256 and EdDSA with a JWK, in pure Rust. `false` when the key does not fit `alg`.
#[cfg(feature = "native-verify")]
pub fn verify_native(alg: Alg, key: &super::Jwk, input: &[u8], signature: &[u8]) -> bool {
    use std::borrow::Cow;

    use jwt_compact::alg::{Ed25519, Es256, Rsa, RsaPublicKey};
    use jwt_compact::jwk::JsonWebKey;

    use super::jwk::Material;

    if alg.is_hmac() || !key.fits(alg) {
        return false;
    }
    match &key.material {
        Material::Rsa { n, e } => {
            let jwk = JsonWebKey::Rsa {
                modulus: Cow::Borrowed(n),
                public_exponent: Cow::Borrowed(e),
                private_parts: None,
            };
            let Ok(public) = RsaPublicKey::try_from(&jwk) else {
                return false;
            };
            let rsa = match alg {
                Alg::Rs256 => Rsa::rs256(),
                Alg::Rs384 => Rsa::rs384(),
                Alg::Rs512 => Rsa::rs512(),
                Alg::Ps256 => Rsa::ps256(),
                Alg::Ps384 => Rsa::ps384(),
                Alg::Ps512 => Rsa::ps512(),
                _ => return false,
            };
            check(&rsa, &public, input, signature)
        }
        Material::P256 { x, y } => {
            let jwk = JsonWebKey::EllipticCurve {
                curve: Cow::Borrowed("P-256"),
                x: Cow::Borrowed(x),
                y: Cow::Borrowed(y),
                secret: None,
            };
            match <Es256 as Algorithm>::VerifyingKey::try_from(&jwk) {
                Ok(public) => check(&Es256, &public, input, signature),
                Err(_) => false,
            }
        }
        Material::Ed25519 { x } => {
            let jwk = JsonWebKey::KeyPair {
                curve: Cow::Borrowed("Ed25519"),
                x: Cow::Borrowed(x),
                secret: None,
            };
            match <Ed25519 as Algorithm>::VerifyingKey::try_from(&jwk) {
                Ok(public) => check(&Ed25519, &public, input, signature),
                Err(_) => false,
            }
        }
    }
}

/// The signature check of a prepared token outside the Worker (tests, the CLI): HS* with the
/// secret `secret(hmac_secret_env)` returns; RS*/PS*/ES256/EdDSA with the policy's inline keys,
/// in pure Rust when built with `native-verify` (otherwise refused as `keys_unavailable`).
/// Keys from `jwks_url` are never fetched here: such tokens are refused as `keys_unavailable`.
pub fn verify_prepared(
    policy: &super::Policy,
    token: &super::Prepared,
    secret: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), super::AuthError> {
    use super::AuthError;
    let input = token.signing_input.as_bytes();
    if token.alg.is_hmac() {
        let secret = policy
            .hmac_secret_env
            .as_deref()
            .and_then(secret)
            .filter(|s| s.len() >= MIN_HMAC_SECRET_BYTES)
            .ok_or(AuthError::KeysUnavailable("hmac_secret"))?;
        return if verify_hmac(token.alg, &secret, input, &token.signature) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        };
    }
    let keys = policy.jwks.as_ref().ok_or(AuthError::KeysUnavailable(
        "jwks_url is not fetched natively",
    ))?;
    let candidates = keys.candidates(token.alg, token.kid.as_deref())?;
    #[cfg(feature = "native-verify")]
    {
        if candidates
            .iter()
            .any(|k| verify_native(token.alg, k, input, &token.signature))
        {
            return Ok(());
        }
        Err(AuthError::BadSignature)
    }
    #[cfg(not(feature = "native-verify"))]
    {
        let _ = candidates;
        Err(AuthError::KeysUnavailable("built without native-verify"))
    }
}
