//! Config problems and the JSON paths they name: what every section's validation reports to.
//!
//! Contract: a [`ConfigError`] names the offending value by its JSON path (`$.routes[2].origin`,
//! `$.sso["corp sso"].issuer`), says what is wrong and, where it can, how to fix it.

use std::fmt;

use serde_json::Value;

/// One problem in a config, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `$.routes[2].origin`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the config has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// JSON path building: `$.a.b[0]`, with `["..."]` for keys that are not plain identifiers.
pub fn key_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("{base}.{key}")
    } else {
        format!("{base}[{}]", Value::String(key.to_string()))
    }
}

/// The problems found so far, in the order they were found.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<ConfigError>);

impl Problems {
    pub(crate) fn add(&mut self, path: String, message: impl Into<String>, hint: Option<&str>) {
        self.0.push(ConfigError {
            path,
            message: message.into(),
            hint: hint.map(str::to_string),
        });
    }
}

/// Reads an optional integer field within `range`, or reports it.
pub(crate) fn bounded(
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    at: String,
    what: &str,
    problems: &mut Problems,
) -> u64 {
    match value {
        None => default,
        Some(v) if range.contains(&v) => v,
        Some(_) => {
            problems.add(
                at,
                format!("must be between {} and {}", range.start(), range.end()),
                Some(what),
            );
            default
        }
    }
}

/// A Worker binding or secret name: a letter or `_`, then letters, digits and `_`.
pub(crate) fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
