//! The one place where what went wrong becomes an HTTP response (README, "Errors").
//!
//! Contract: every error the gateway makes is `{"error", "message", "request_id"}` JSON with a
//! stable code and a public message. Details (origin addresses, runtime error strings) go to the
//! log, never into the response.

use serde::Serialize;

use crate::auth::AuthError;
use crate::path::PathError;
use crate::sso::LoginError;

/// What went wrong with a request, named for what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// The path or request line is malformed.
    BadRequest(PathError),
    /// A request header is refused (a name with `_` under `underscores_in_headers: reject`).
    BadHeader(&'static str),
    /// The client's request body could not be read (the client went away mid-body).
    UnreadableBody,
    /// A WebSocket handshake on a route without `websocket: true`.
    UpgradeRefused,
    /// No route matches host and path.
    NoRoute,
    /// An IP rule or a CORS policy refuses the request; the reason is public.
    Forbidden(&'static str),
    /// The body is over the route's `limits.max_body_bytes`.
    PayloadTooLarge,
    /// The URL is over `settings.max_url_bytes`.
    UriTooLong,
    /// The request headers are over `settings.max_header_bytes`.
    HeadersTooLarge,
    /// Over the route's rate limit; retry after this many seconds.
    RateLimited { retry_after_s: u32 },
    /// The path matches, the method does not; the methods that would.
    MethodNotAllowed { allow: Vec<String> },
    /// Auth refused the request: 401, or 403 for a missing scope or required claim; 500
    /// `config_invalid` when the HMAC secret binding is missing or too short.
    Auth(AuthError),
    /// The loaded config failed validation.
    ConfigInvalid,
    /// Every allowed attempt to reach an origin failed.
    OriginUnavailable,
    /// The origin did not answer in time.
    OriginTimeout,
    /// A single sign-on login did not complete (the callback's refusals, a bad `next`).
    Login(LoginError),
}

/// An error response, ready for the adapter to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    /// Lower-case names; always includes `content-type`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::BadHeader(_)
            | GatewayError::UnreadableBody
            | GatewayError::UpgradeRefused => 400,
            GatewayError::NoRoute => 404,
            GatewayError::Forbidden(_) => 403,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::UriTooLong => 414,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::Auth(e) if e.is_config_problem() => 500,
            GatewayError::Auth(e) if e.is_forbidden() => 403,
            GatewayError::Auth(_) => 401,
            GatewayError::ConfigInvalid => 500,
            GatewayError::OriginUnavailable => 502,
            GatewayError::OriginTimeout => 504,
            GatewayError::Login(e) => e.status(),
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::BadHeader(_)
            | GatewayError::UnreadableBody
            | GatewayError::UpgradeRefused => "bad_request",
            GatewayError::NoRoute => "no_route",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::UriTooLong => "uri_too_long",
            GatewayError::HeadersTooLarge => "headers_too_large",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::Auth(e) if e.is_config_problem() => "config_invalid",
            GatewayError::Auth(e) if e.is_forbidden() => "forbidden",
            GatewayError::Auth(_) => "unauthorized",
            GatewayError::ConfigInvalid => "config_invalid",
            GatewayError::OriginUnavailable => "origin_unavailable",
            GatewayError::OriginTimeout => "origin_timeout",
            GatewayError::Login(LoginError::BadNext) => "bad_request",
            GatewayError::Login(_) => "login_failed",
        }
    }

    /// The message for a human; never names an origin or repeats an internal error.
    pub fn message(&self) -> String {
        match self {
            GatewayError::BadRequest(e) => format!("malformed request: {e}"),
            GatewayError::BadHeader(reason) => format!("malformed request: {reason}"),
            GatewayError::UnreadableBody => "the request body could not be read".into(),
            GatewayError::UpgradeRefused => {
                "this route does not accept WebSocket connections".into()
            }
            GatewayError::NoRoute => "no route matches this request".into(),
            GatewayError::Forbidden(reason) => (*reason).into(),
            GatewayError::PayloadTooLarge => {
                "the request body is larger than this route accepts".into()
            }
            GatewayError::UriTooLong => "the request URL is too long".into(),
            GatewayError::HeadersTooLarge => "the request headers are too large".into(),
            GatewayError::RateLimited { .. } => "too many requests; retry later".into(),
            GatewayError::MethodNotAllowed { allow } => {
                format!("this path accepts only: {}", allow.join(", "))
            }
            GatewayError::Auth(e) if e.is_config_problem() => GatewayError::ConfigInvalid.message(),
            GatewayError::Auth(e) => e.public_message().into(),
            GatewayError::ConfigInvalid => {
                "the gateway's configuration is invalid; its log names each problem".into()
            }
            GatewayError::OriginUnavailable => {
                "the service behind this route is unavailable".into()
            }
            GatewayError::OriginTimeout => {
                "the service behind this route did not answer in time".into()
            }
            GatewayError::Login(e) => e.public_message().into(),
        }
    }

    /// The complete response.
    pub fn response(&self, request_id: &str) -> ErrorResponse {
        let message = self.message();
        let body = serde_json::to_string(&Body {
            error: self.code(),
            message: &message,
            request_id,
        })
        .unwrap_or_default();
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cache-control".to_string(), "no-store".to_string()),
            ("x-request-id".to_string(), request_id.to_string()),
        ];
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                headers.push(("allow".to_string(), allow.join(", ")))
            }
            GatewayError::RateLimited { retry_after_s } => {
                headers.push(("retry-after".to_string(), retry_after_s.to_string()))
            }
            _ => {}
        }
        if let GatewayError::Auth(e) = self {
            let challenge = match e {
                e if e.is_config_problem() => None,
                AuthError::MissingToken => Some("Bearer"),
                AuthError::NoSession(_) => None,
                e if e.is_forbidden() => Some("Bearer error=\"insufficient_scope\""),
                _ => Some("Bearer error=\"invalid_token\""),
            };
            if let Some(c) = challenge {
                headers.push(("www-authenticate".to_string(), c.to_string()));
            }
        }
        ErrorResponse {
            status: self.status(),
            headers,
            body,
        }
    }

    /// The response for a client whose `Accept` is given: an HTML page when it names
    /// `text/html` (a browser on a sign-in path), else the JSON body.
    pub fn response_for(&self, request_id: &str, accept: Option<&str>) -> ErrorResponse {
        let mut response = self.response(request_id);
        if !accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html")) {
            return response;
        }
        let title = match self.status() {
            400 => "Bad request",
            401 => "Sign-in failed",
            403 => "Access denied",
            500 => "Gateway misconfigured",
            502 | 504 => "Sign-in service unavailable",
            _ => "Request refused",
        };
        response.body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{}</p>\n<p>Error <code>{}</code>, request id <code>{}</code>.</p></body></html>\n",
            html_escape(&self.message()),
            self.code(),
            html_escape(request_id),
        );
        for (name, value) in &mut response.headers {
            if name == "content-type" {
                *value = "text/html; charset=utf-8".to_string();
            }
        }
        response
    }
}

/// How a session's refusal reaches the client: a missing `require` value is 403 `forbidden`
/// (without the bearer challenge of a token route), anything else 401.
pub fn session_refusal(e: AuthError) -> GatewayError {
    match e {
        AuthError::InsufficientScope => {
            GatewayError::Forbidden("the signed-in account lacks a claim this route requires")
        }
        e => GatewayError::Auth(e),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_the_spec_json() {
        let cases = [
            (
                GatewayError::BadRequest(PathError::EncodedSlash),
                400,
                "bad_request",
            ),
            (GatewayError::NoRoute, 404, "no_route"),
            (GatewayError::Forbidden("no"), 403, "forbidden"),
            (GatewayError::PayloadTooLarge, 413, "payload_too_large"),
            (GatewayError::UriTooLong, 414, "uri_too_long"),
            (GatewayError::HeadersTooLarge, 431, "headers_too_large"),
            (
                GatewayError::RateLimited { retry_after_s: 60 },
                429,
                "rate_limited",
            ),
            (
                GatewayError::MethodNotAllowed {
                    allow: vec!["GET".into(), "HEAD".into()],
                },
                405,
                "method_not_allowed",
            ),
            (GatewayError::ConfigInvalid, 500, "config_invalid"),
            (
                GatewayError::Auth(AuthError::MissingToken),
                401,
                "unauthorized",
            ),
            (GatewayError::Auth(AuthError::Expired), 401, "unauthorized"),
            (
                GatewayError::Auth(AuthError::InsufficientScope),
                403,
                "forbidden",
            ),
            (
                GatewayError::Auth(AuthError::KeysUnavailable("hmac_secret")),
                500,
                "config_invalid",
            ),
            (GatewayError::OriginUnavailable, 502, "origin_unavailable"),
            (GatewayError::OriginTimeout, 504, "origin_timeout"),
        ];
        for (err, status, code) in cases {
            let r = err.response("rid-1");
            assert_eq!(r.status, status);
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["error"], code);
            assert_eq!(body["request_id"], "rid-1");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(body.as_object().unwrap().len(), 3);
            assert!(r
                .headers
                .contains(&("content-type".into(), "application/json".into())));
        }
        let r = GatewayError::MethodNotAllowed {
            allow: vec!["GET".into(), "HEAD".into()],
        }
        .response("x");
        assert!(r.headers.contains(&("allow".into(), "GET, HEAD".into())));
        let r = GatewayError::RateLimited { retry_after_s: 10 }.response("x");
        assert!(r.headers.contains(&("retry-after".into(), "10".into())));
    }

    #[test]
    fn auth_errors_carry_the_bearer_challenge() {
        let challenge = |e: AuthError| {
            GatewayError::Auth(e)
                .response("r")
                .headers
                .into_iter()
                .find(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v)
        };
        assert_eq!(
            challenge(AuthError::MissingToken).as_deref(),
            Some("Bearer")
        );
        assert_eq!(
            challenge(AuthError::BadSignature).as_deref(),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            challenge(AuthError::InsufficientScope).as_deref(),
            Some("Bearer error=\"insufficient_scope\"")
        );
        assert_eq!(challenge(AuthError::KeysUnavailable("hmac_secret")), None);
        let body = GatewayError::Auth(AuthError::Expired).response("r").body;
        assert!(body.contains("expired"), "{body}");
    }
}
