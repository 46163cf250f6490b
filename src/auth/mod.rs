//! Step 5 of a request: who is calling (README, step 5 of "The life of a request").
//!
//! Contract: the core decides, the adapter verifies. For a route with a policy,
//! [`Policy::prepare`] finds the token, parses it and checks everything that needs no key (shape,
//! size, algorithm from the config, forbidden headers, `crit`); the adapter then obtains keys (the
//! policy's inline JWKS, a fetched JWKS parsed with [`KeySet::from_jwks_json`], or the HMAC secret),
//! picks candidates with [`KeySet::candidates`], verifies the signature (WebCrypto in the Worker,
//! [`verify::verify_native`] natively, [`verify::verify_hmac`] for HS* everywhere) and hands the
//! verified token to [`Policy::finish`], which checks the claims against `now` and returns the
//! [`Identity`] the origin request is built with. Nothing here reads a clock or does I/O.

pub mod claims;
pub mod jwk;
pub mod policy;
pub mod token;
pub mod verify;

pub use claims::Identity;
pub use jwk::{Jwk, KeySet};
pub use policy::{Alg, AuthUse, Policy, RouteAuth, TokenSource};
pub use token::Prepared;

use std::fmt;

/// Why a request was refused by auth. Each has a stable reason code for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in any of the policy's `token_from` places.
    MissingToken,
    /// Not three base64url parts, bad JSON, over the size cap.
    Malformed(&'static str),
    /// The token is bigger than the cap.
    TooLarge,
    /// `alg` is `none` or not listed in the policy's `algorithms`.
    AlgorithmNotAllowed,
    /// The header names a key location or carries a key (`jku`, `x5u`, `jwk`, `x5c`).
    ForbiddenHeader(&'static str),
    /// A `crit` entry the gateway does not understand.
    UnknownCrit,
    /// No key with the token's `kid` (after a refresh, when the keys come from a URL).
    UnknownKid,
    /// No key fits the algorithm.
    NoFittingKey,
    /// No key could be had at all: the JWKS was never fetched successfully, or the HMAC secret
    /// is missing or too short (a configuration problem, see [`AuthError::is_config_problem`]).
    KeysUnavailable(&'static str),
    /// The signature does not verify with any candidate key.
    BadSignature,
    /// The signature verified but the payload is not a JSON object of claims.
    BadClaims,
    /// `exp` is missing.
    MissingExp,
    Expired,
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `iat` is older than `max_age_s`, or missing while `max_age_s` is set.
    TooOld,
    WrongIssuer,
    WrongAudience,
    /// A `require` claim lacks a value: 403, not 401.
    InsufficientScope,
    /// A route of an `sso` entry without a valid session (none, undecryptable, expired: the
    /// detail is for the log).
    NoSession(&'static str),
}

impl AuthError {
    /// The stable reason code, for the log line.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) => "malformed",
            AuthError::TooLarge => "too_large",
            AuthError::AlgorithmNotAllowed => "alg_not_allowed",
            AuthError::ForbiddenHeader(_) => "forbidden_header",
            AuthError::UnknownCrit => "unknown_crit",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::NoFittingKey => "no_fitting_key",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
            AuthError::BadSignature => "bad_signature",
            AuthError::BadClaims => "bad_claims",
            AuthError::MissingExp => "missing_exp",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::TooOld => "too_old",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::InsufficientScope => "insufficient_scope",
            AuthError::NoSession(_) => "no_session",
        }
    }

    /// The public message: what is wrong in general terms, never the token.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "a bearer token is required",
            AuthError::Malformed(_) | AuthError::TooLarge | AuthError::BadClaims => {
                "the token is malformed"
            }
            AuthError::AlgorithmNotAllowed
            | AuthError::ForbiddenHeader(_)
            | AuthError::UnknownCrit => "the token's header is not acceptable",
            AuthError::UnknownKid | AuthError::NoFittingKey => "the token's signing key is unknown",
            AuthError::KeysUnavailable(_) => "the token cannot be verified right now",
            AuthError::BadSignature => "the token's signature is invalid",
            AuthError::MissingExp => "the token has no expiry",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet",
            AuthError::IssuedInFuture | AuthError::TooOld => {
                "the token's issue time is not acceptable"
            }
            AuthError::WrongIssuer => "the token's issuer is not accepted",
            AuthError::WrongAudience => "the token is not meant for this audience",
            AuthError::InsufficientScope => "the token lacks a required scope or claim",
            AuthError::NoSession(_) => "sign-in is required",
        }
    }

    /// 403 for a missing scope, 401 for everything else.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::InsufficientScope)
    }

    /// A problem of the deployment rather than of the token (HMAC secret missing or short):
    /// answered with 500 `config_invalid`, the log naming the secret.
    pub fn is_config_problem(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable("hmac_secret"))
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed(why) => write!(f, "malformed token: {why}"),
            AuthError::ForbiddenHeader(h) => write!(f, "token header '{h}' is not accepted"),
            AuthError::KeysUnavailable(why) => write!(f, "no keys: {why}"),
            other => f.write_str(other.reason()),
        }
    }
}

/// The smallest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

#[cfg(test)]
mod tests;
