//! Finding the token in a request and checking everything about it that needs no key.

use jwt_compact::{Claims, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::policy::{Alg, Policy, TokenSource};
use super::AuthError;
use crate::request::Head;

/// The `crit` header parameters the gateway understands. None: any `crit` entry is refused.
const KNOWN_CRIT: &[&str] = &[];

/// Header fields jwt-compact does not model, kept to refuse them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExtraHeader {
    crit: Option<Value>,
    jwk: Option<Value>,
    x5c: Option<Value>,
}

/// A token that passed every check that needs no key. The adapter verifies `signature` over
/// `signing_input` with `alg`, then hands it to [`Policy::finish`](super::Policy::finish).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`.
    pub signing_input: String,
    pub signature: Vec<u8>,
    /// The claims, not yet checked; `None` when the payload is not a JSON object of claims
    /// (refused by [`Policy::finish`](super::Policy::finish), after the signature layer).
    pub claims: Option<Claims<Map<String, Value>>>,
    /// The token as sent, for the verified-token cache only (never logged).
    pub raw: String,
}

fn is_b64url(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token from the first of the policy's sources that has one, read from the request as
/// [`Head`] read it (one cookie parser, one header lookup for the whole gateway).
pub fn extract<'a>(sources: &[TokenSource], head: &'a Head) -> Option<&'a str> {
    for source in sources {
        let found = match source {
            TokenSource::Authorization => head
                .headers
                .iter()
                .filter(|(n, _)| n == "authorization")
                .find_map(|(_, v)| {
                    let v = v.trim();
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| rest.trim())
                        .filter(|t| !t.is_empty())
                }),
            TokenSource::Header(name) => head.header(name).map(str::trim).filter(|t| !t.is_empty()),
            TokenSource::Cookie(name) => head.cookie(name),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

impl Policy {
    /// Parses `token` and checks what needs no key: the size cap, exactly three base64url
    /// parts, `alg` listed in the policy (never `none`), no `jku`/`x5u`/`jwk`/`x5c`, no
    /// unknown `crit`.
    pub fn prepare(&self, token: &str) -> Result<Prepared, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err(AuthError::Malformed("not three parts"));
        }
        if parts.iter().any(|p| !is_b64url(p)) || parts[0].is_empty() {
            return Err(AuthError::Malformed("not base64url"));
        }
        let untrusted: UntrustedToken<'_, ExtraHeader> =
            UntrustedToken::try_from(token).map_err(|_| AuthError::Malformed("cannot parse"))?;
        let alg = Alg::from_name(untrusted.algorithm())
            .filter(|a| self.algorithms.contains(a))
            .ok_or(AuthError::AlgorithmNotAllowed)?;
        let header = untrusted.header();
        if header.key_set_url.is_some() {
            return Err(AuthError::ForbiddenHeader("jku"));
        }
        if header.certificate_url.is_some() {
            return Err(AuthError::ForbiddenHeader("x5u"));
        }
        if header.other_fields.jwk.is_some() {
            return Err(AuthError::ForbiddenHeader("jwk"));
        }
        if header.other_fields.x5c.is_some() {
            return Err(AuthError::ForbiddenHeader("x5c"));
        }
        if let Some(crit) = &header.other_fields.crit {
            let all_known = crit.as_array().is_some_and(|list| {
                !list.is_empty()
                    && list
                        .iter()
                        .all(|c| c.as_str().is_some_and(|c| KNOWN_CRIT.contains(&c)))
            });
            if !all_known {
                return Err(AuthError::UnknownCrit);
            }
        }
        let claims = untrusted
            .deserialize_claims_unchecked::<Map<String, Value>>()
            .ok();
        let signing_input = match token.rsplit_once('.') {
            Some((input, _)) => input.to_string(),
            None => return Err(AuthError::Malformed("not three parts")),
        };
        Ok(Prepared {
            alg,
            kid: header.key_id.clone(),
            signing_input,
            signature: untrusted.signature_bytes().to_vec(),
            claims,
            raw: token.to_string(),
        })
    }
}
