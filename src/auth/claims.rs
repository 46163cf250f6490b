//! Claims checks after the signature verified, and the verified identity they produce.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use jwt_compact::{TimeOptions, ValidationError};
use serde_json::Value;

use super::policy::Policy;
use super::token::Prepared;
use super::AuthError;
use crate::http::is_valid_header_value;

/// Who is calling, as the verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// Every top-level claim that has a header form (strings as-is, numbers and booleans as
    /// text, arrays of those comma-joined) without control characters; `exp`, `nbf`, `iat`
    /// included as numbers. What `{claim.NAME}` and `forward_claims` read.
    pub claims: BTreeMap<String, String>,
    /// The headers to add for the policy's `forward_claims`, lower-case names.
    pub forward: Vec<(String, String)>,
    pub kid: Option<String>,
    pub iss: Option<String>,
    /// `exp`, seconds since the epoch: how long a verified-token cache may keep it.
    pub exp: i64,
    /// The top-level claims as the token (or session) had them, JSON values and all: what a
    /// session keeps and what a minted identity token copies.
    pub values: BTreeMap<String, Value>,
}

impl Identity {
    /// The identity of verified claims: their header forms (plus `exp`), and the headers of
    /// `forward_claims` (claim name, lower-case header).
    pub fn from_claims(
        values: BTreeMap<String, Value>,
        exp: i64,
        forward_claims: &[(String, String)],
    ) -> Identity {
        let mut texts: BTreeMap<String, String> = values
            .iter()
            .filter_map(|(k, v)| header_text(v).map(|t| (k.clone(), t)))
            .collect();
        texts.insert("exp".into(), exp.to_string());
        let forward = forward_claims
            .iter()
            .filter_map(|(claim, header)| texts.get(claim).map(|v| (header.clone(), v.clone())))
            .collect();
        Identity {
            claims: texts,
            forward,
            kid: None,
            iss: values
                .get("iss")
                .and_then(Value::as_str)
                .map(str::to_string),
            exp,
            values,
        }
    }
}

/// Whether `claims` hold every value `require` asks for (claim name, values).
pub fn satisfies(claims: &BTreeMap<String, Value>, require: &[(String, Vec<String>)]) -> bool {
    require.iter().all(|(claim, values)| {
        let have = claims.get(claim);
        values.iter().all(|v| have.is_some_and(|c| holds(c, v)))
    })
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The header form of a claim value; `None` when it has none or holds a control character.
pub fn header_text(v: &Value) -> Option<String> {
    let text = match v {
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
            parts?.join(",")
        }
        v => scalar_text(v)?,
    };
    is_valid_header_value(&text).then_some(text)
}

/// Whether `claim` holds `value`: as an array element, or as a word of a space-separated string.
fn holds(claim: &Value, value: &str) -> bool {
    match claim {
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(value)),
        Value::String(s) => s.split(' ').any(|w| w == value),
        _ => false,
    }
}

fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Policy {
    /// Checks the claims of a token whose signature verified, at `now` (seconds since the
    /// epoch): `exp` required, `nbf` and `iat` with `leeway_s`, `max_age_s`, `iss`, `aud`, then
    /// `require` (403). Returns the identity to forward.
    pub fn finish(&self, token: &Prepared, now: i64) -> Result<Identity, AuthError> {
        let claims = token.claims.as_ref().ok_or(AuthError::BadClaims)?;
        let options = TimeOptions::new(Duration::seconds(self.leeway_s as i64), || time(now));
        claims.validate_expiration(&options).map_err(|e| match e {
            ValidationError::NoClaim(_) => AuthError::MissingExp,
            _ => AuthError::Expired,
        })?;
        if claims.not_before.is_some() {
            claims
                .validate_maturity(&options)
                .map_err(|_| AuthError::NotYetValid)?;
        }
        let leeway = self.leeway_s as i64;
        match claims.issued_at.map(|t| t.timestamp()) {
            Some(iat) if iat > now.saturating_add(leeway) => return Err(AuthError::IssuedInFuture),
            Some(iat) => {
                if let Some(max) = self.max_age_s {
                    if now.saturating_sub(iat) > (max as i64).saturating_add(leeway) {
                        return Err(AuthError::TooOld);
                    }
                }
            }
            None if self.max_age_s.is_some() => return Err(AuthError::TooOld),
            None => {}
        }
        let custom = &claims.custom;
        let iss = custom.get("iss").and_then(Value::as_str);
        if !self.issuers.is_empty() && !iss.is_some_and(|i| self.issuers.iter().any(|x| x == i)) {
            return Err(AuthError::WrongIssuer);
        }
        if !self.audiences.is_empty() {
            let ok = match custom.get("aud") {
                Some(Value::String(a)) => self.audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        let values: BTreeMap<String, Value> =
            custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if !satisfies(&values, &self.require) {
            return Err(AuthError::InsufficientScope);
        }
        let exp = claims.expiration.map_or(0, |t| t.timestamp());
        let mut identity = Identity::from_claims(values, exp, &[]);
        if let Some(t) = claims.not_before {
            identity
                .claims
                .insert("nbf".into(), t.timestamp().to_string());
        }
        if let Some(t) = claims.issued_at {
            identity
                .claims
                .insert("iat".into(), t.timestamp().to_string());
        }
        identity.forward = self
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                identity
                    .claims
                    .get(claim)
                    .map(|v| (header.clone(), v.clone()))
            })
            .collect();
        identity.kid = token.kid.clone();
        Ok(identity)
    }
}
