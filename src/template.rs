//! Templates: header values with placeholders (`{request_id}`, `{param.id}`, ...) and rewrite paths
//! with route parameters (`/v2/users/{id}`). Parsed once, at config load; rendered per request.
//!
//! Contract: a template renders to `None` when any placeholder it holds has no value for the
//! request, so a header whose value is missing is absent, never the literal placeholder text.
//! `{{` and `}}` stand for literal braces.

use std::fmt;

/// A value known per request that a header template may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `{request_id}`: the id the gateway gave the request.
    RequestId,
    /// `{client_ip}`: the client address from `CF-Connecting-IP`.
    ClientIp,
    /// `{route}`: the matched route's name.
    Route,
    /// `{host}`: the public host the client asked for.
    Host,
    /// `{param.NAME}` in a header, or `{NAME}` in a rewrite path: a captured path parameter.
    Param(String),
    /// `{claim.NAME}`: a claim of the verified token (absent on public and anonymous requests).
    Claim(String),
    /// `{secret.NAME}`: the Worker secret `NAME` (request headers only).
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A parsed template. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Which placeholder syntax a template uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Header values: `{request_id}`, `{client_ip}`, `{route}`, `{host}`, `{param.NAME}`.
    Header,
    /// Rewrite paths: `{NAME}` names a path parameter.
    Path,
}

/// Why a template was refused; the config module turns it into an error with a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    Unclosed,
    StrayClosingBrace,
    Unknown(String),
    UnknownParam(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Unclosed => write!(f, "a '{{' is never closed (write '{{{{' for a literal brace)"),
            TemplateError::StrayClosingBrace => write!(f, "a '}}' closes nothing (write '}}}}' for a literal brace)"),
            TemplateError::Unknown(p) => write!(
                f,
                "unknown placeholder {{{p}}}; known: {{request_id}}, {{client_ip}}, {{route}}, {{host}}, {{param.NAME}}, {{claim.NAME}}, {{secret.NAME}}"
            ),
            TemplateError::UnknownParam(p) => {
                write!(f, "the route's path has no parameter named '{p}'")
            }
        }
    }
}

impl Template {
    /// Parses `text`; `params` are the parameter names the route's path captures.
    pub fn parse(text: &str, syntax: Syntax, params: &[String]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::StrayClosingBrace),
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest.find('}').ok_or(TemplateError::Unclosed)?;
                    let name = &rest[..end];
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(Self::var(name, syntax, params)?));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    fn var(name: &str, syntax: Syntax, params: &[String]) -> Result<Var, TemplateError> {
        let param = |p: &str| {
            let p = p.strip_prefix('*').unwrap_or(p);
            if params.iter().any(|known| known == p) {
                Ok(Var::Param(p.to_string()))
            } else {
                Err(TemplateError::UnknownParam(p.to_string()))
            }
        };
        match syntax {
            Syntax::Path => param(name),
            Syntax::Header => match name {
                "request_id" => Ok(Var::RequestId),
                "client_ip" => Ok(Var::ClientIp),
                "route" => Ok(Var::Route),
                "host" => Ok(Var::Host),
                n if n.starts_with("param.") => param(&n["param.".len()..]),
                n if n.starts_with("claim.") && n.len() > "claim.".len() => {
                    Ok(Var::Claim(n["claim.".len()..].to_string()))
                }
                n if n.starts_with("secret.") && is_binding_name(&n["secret.".len()..]) => {
                    Ok(Var::Secret(n["secret.".len()..].to_string()))
                }
                n => Err(TemplateError::Unknown(n.to_string())),
            },
        }
    }

    /// The Worker secrets the template names, in order.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(Var::Secret(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// A template with no placeholder renders to this text every time.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Renders with `lookup`; `None` when any placeholder has no value.
    pub fn render<'a>(&self, lookup: impl Fn(&Var) -> Option<&'a str>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(v) => out.push_str(lookup(v)?),
            }
        }
        Some(out)
    }
}

/// A name a Worker binding or secret can have: a letter or `_`, then letters, digits and `_`.
fn is_binding_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<String> {
        vec!["id".to_string(), "rest".to_string()]
    }

    fn lookup(v: &Var) -> Option<&'static str> {
        match v {
            Var::RequestId => Some("rid"),
            Var::Route => Some("users"),
            Var::Param(p) if p == "id" => Some("7"),
            Var::Param(p) if p == "rest" => Some("a/b"),
            _ => None,
        }
    }

    #[test]
    fn header_templates_render_or_vanish() {
        let cases: &[(&str, Option<&str>)] = &[
            ("edge", Some("edge")),
            ("", Some("")),
            ("{request_id}", Some("rid")),
            ("r={route};id={param.id}", Some("r=users;id=7")),
            ("{{literal}}", Some("{literal}")),
            ("ip {client_ip}", None),
        ];
        for (text, want) in cases {
            let t = Template::parse(text, Syntax::Header, &params()).unwrap();
            assert_eq!(t.render(lookup).as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn secrets_are_named_and_listed() {
        let t = Template::parse(
            "Bearer {secret.ORIGIN_TOKEN} {secret._x1}",
            Syntax::Header,
            &[],
        )
        .unwrap();
        assert_eq!(t.secrets().collect::<Vec<_>>(), ["ORIGIN_TOKEN", "_x1"]);
        let shown = t.render(|v| match v {
            Var::Secret(n) if n == "ORIGIN_TOKEN" => Some("s3cret"),
            Var::Secret(_) => Some("other"),
            _ => None,
        });
        assert_eq!(shown.as_deref(), Some("Bearer s3cret other"));
    }

    #[test]
    fn path_templates_use_bare_parameter_names() {
        let t = Template::parse("/v2/users/{id}/files/{rest}", Syntax::Path, &params()).unwrap();
        assert_eq!(t.render(lookup).as_deref(), Some("/v2/users/7/files/a/b"));
        let t = Template::parse("/all/{*rest}", Syntax::Path, &params()).unwrap();
        assert_eq!(t.render(lookup).as_deref(), Some("/all/a/b"));
    }

    #[test]
    fn bad_templates_are_refused() {
        let cases: &[(&str, Syntax, TemplateError)] = &[
            ("{request_id", Syntax::Header, TemplateError::Unclosed),
            ("a}b", Syntax::Header, TemplateError::StrayClosingBrace),
            (
                "{nope}",
                Syntax::Header,
                TemplateError::Unknown("nope".into()),
            ),
            (
                "{claim.}",
                Syntax::Header,
                TemplateError::Unknown("claim.".into()),
            ),
            (
                "{param.nope}",
                Syntax::Header,
                TemplateError::UnknownParam("nope".into()),
            ),
            (
                "{secret.}",
                Syntax::Header,
                TemplateError::Unknown("secret.".into()),
            ),
            (
                "{secret.9LIVES}",
                Syntax::Header,
                TemplateError::Unknown("secret.9LIVES".into()),
            ),
            (
                "{secret.A-B}",
                Syntax::Header,
                TemplateError::Unknown("secret.A-B".into()),
            ),
            (
                "/v2/{secret.A}",
                Syntax::Path,
                TemplateError::UnknownParam("secret.A".into()),
            ),
            (
                "/v2/{nope}",
                Syntax::Path,
                TemplateError::UnknownParam("nope".into()),
            ),
        ];
        for (text, syntax, want) in cases {
            assert_eq!(
                Template::parse(text, *syntax, &params()).unwrap_err(),
                *want,
                "{text}"
            );
        }
    }
}
