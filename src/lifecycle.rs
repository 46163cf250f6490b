//! The life of a request as one sans-IO state machine: the only place that sequences the phases.
//!
//! Like quinn-proto's `Connection`, an [`Exchange`] does no I/O and reads no clock. The driver
//! (the Worker's adapter, or a test) starts it with the request, asks [`Exchange::poll`] for the
//! next [`Step`], performs it with the runtime, and feeds back what happened through the method
//! the step names; it repeats until a step answers the client. Then [`Exchange::log_line`] is the
//! request's one log line, whatever the exit.
//!
//! The phases, in order (each a module that owns its decisions):
//! 1. [`crate::request`]: the one reading of the request (400 when it cannot be read);
//! 2. the gateway's own paths: the admin path and the admin credential ([`Gateway::admin_request`]),
//!    the SSO and JWKS paths ([`Gateway::sso_request`]);
//! 3. edge policy before routing, a CORS preflight ([`Gateway::preflight`]), routing and edge
//!    policy on the route, and what auth needs ([`Gateway::matched_with`]);
//! 4. auth ([`Step::Authenticate`]: the driver verifies a token or opens a session);
//! 5. the origin request ([`Gateway::forward_plan`]) and the signed identity ([`Step::Mint`]);
//! 6. the rate limit ([`crate::policy::RateLimit::verdict`]);
//! 7. the cache lookup ([`Gateway::stored_use`]);
//! 8. forwarding ([`crate::upstream::attempts::Attempts`], its own machine, driven inside
//!    [`Step::Forward`]);
//! 9. the client's headers and the cache store ([`Gateway::response_headers`],
//!    [`Gateway::cache_outcome`]).

use crate::auth::{AuthError, Identity};
use crate::error::GatewayError;
use crate::gateway::{
    AdminRequest, AuthStep, CacheStep, ForwardPlan, Gateway, Incoming, Matched, Refusal,
};
use crate::http::HeaderList;
use crate::log::{Attempt, AuthLog, LogLine};
use crate::policy::Limited;
use crate::request::Head;
use crate::sso::mint::Bound;
use crate::sso::SsoRequest;
use crate::upstream::SUBREQUEST_LIMIT;

/// A response the gateway makes itself: status, headers, text body, and what the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderList,
    pub body: Option<String>,
    pub log: Option<AuthLog>,
    /// The error code, for the log.
    pub error: Option<&'static str>,
    pub detail: Option<String>,
}

impl Answer {
    /// A 302 to `location`, never cached, setting `cookies`.
    pub fn redirect(location: String, cookies: Vec<String>, log: AuthLog) -> Answer {
        let mut headers = vec![
            ("location".to_string(), location),
            ("cache-control".to_string(), "no-store".to_string()),
        ];
        headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
        Answer {
            status: 302,
            headers,
            body: None,
            log: Some(log),
            error: None,
            detail: None,
        }
    }

    /// An error as a page or JSON, by `accept` (`None`: JSON), with cookies to set.
    pub fn error(
        error: &GatewayError,
        request_id: &str,
        accept: Option<&str>,
        cookies: Vec<String>,
        detail: Option<String>,
    ) -> Answer {
        let plan = error.response_for(request_id, accept);
        let mut headers = plan.headers;
        headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
        let reason = match error {
            GatewayError::Login(e) => Some(e.reason()),
            GatewayError::Auth(e) => Some(e.reason()),
            _ => None,
        };
        Answer {
            status: plan.status,
            headers,
            body: Some(plan.body),
            log: reason.map(|r| AuthLog {
                outcome: "refused",
                reason: Some(r),
                kid: None,
                iss: None,
            }),
            error: Some(error.code()),
            detail,
        }
    }
}

/// What auth found, as the driver reports it after [`Step::Authenticate`].
#[derive(Debug, Clone, Default)]
pub struct AuthResult {
    pub identity: Option<Identity>,
    pub error: Option<AuthError>,
    pub log: Option<AuthLog>,
    /// Operator detail for the log.
    pub detail: Option<String>,
}

impl AuthResult {
    /// Step 5 on a route of an `sso` entry: the session's identity; no session is anonymous
    /// when the route's auth is optional.
    pub fn of_session(
        session: Result<Identity, (AuthError, Option<String>)>,
        optional: bool,
    ) -> AuthResult {
        let log = |outcome, reason| {
            Some(AuthLog {
                outcome,
                reason,
                kid: None,
                iss: None,
            })
        };
        match session {
            Ok(identity) => AuthResult {
                log: log("session", None),
                identity: Some(identity),
                error: None,
                detail: None,
            },
            Err((AuthError::NoSession(why), _)) if optional => AuthResult {
                log: log("anonymous", Some(why)),
                identity: None,
                error: None,
                detail: None,
            },
            Err((e, detail)) => AuthResult {
                log: log("refused", Some(e.reason())),
                identity: None,
                error: Some(e),
                detail,
            },
        }
    }
}

/// What the driver is to do next. Each step names the method that takes its result.
#[derive(Debug)]
pub enum Step<'a> {
    /// Read the Worker secret with this name (empty when unset) and give it to
    /// [`Exchange::admin_secret`].
    AdminSecret(&'a str),
    /// Delete this cache key (`None`: no entry to delete) and give whether it was there to
    /// [`Exchange::purged`].
    Purge(Option<String>),
    /// Answer this SSO or JWKS path, and give the answer to [`Exchange::answered`].
    Sso {
        request: &'a SsoRequest,
        head: &'a Head,
    },
    /// Find the caller's identity for this matched request ([`AuthStep`] says how) and give it
    /// to [`Exchange::authenticated`]; or, for a session route that redirects to a login, give
    /// the login's answer to [`Exchange::answered`].
    Authenticate {
        matched: &'a Matched,
        head: &'a Head,
    },
    /// Mint the signed identity of this identity for this audience, and give the token (or why
    /// it could not be made) to [`Exchange::minted`].
    Mint {
        identity: Option<&'a Identity>,
        aud: &'a str,
        /// Under `identity.attest`: the request the token is bound to (it cannot be reused).
        bound: Option<&'a Bound>,
    },
    /// Ask this rate-limit binding about this key, and give the answer to [`Exchange::limited`].
    RateLimit { binding: &'a str, key: &'a str },
    /// Look this key up in the cache, and give the stored entry's headers (or `None`) to
    /// [`Exchange::looked_up`] (keep the entry: [`Step::ServeStored`] serves its body, also
    /// after a [`Step::Forward`] whose attempts all failed, on a route with `stale_if_error_s`).
    Lookup { key: &'a str },
    /// Forward the request by this plan (driving [`crate::upstream::attempts::Attempts`]), and
    /// give the origin's response head (or the error) to [`Exchange::forwarded`].
    Forward(&'a ForwardPlan),
    /// Answer the client with the gateway's own response. The exchange is over.
    Answer(&'a Answer),
    /// Serve the stored entry with these headers (HEAD: without its body); when `refresh`,
    /// forward the plan again in the background and store the fresh response. The exchange is
    /// over.
    ServeStored {
        headers: &'a HeaderList,
        refresh: bool,
        plan: &'a ForwardPlan,
    },
    /// Serve the origin's response with this status and these headers; when `store` is set,
    /// tee the body and store a copy with these headers under this key (after answering). The
    /// exchange is over, unless the response cannot be built ([`Exchange::unbuildable`]).
    Respond {
        status: u16,
        headers: &'a HeaderList,
        store: Option<&'a (String, HeaderList)>,
    },
}

#[derive(Debug)]
enum State {
    /// The request was read; nothing decided yet.
    Read(Head),
    /// Waiting for the admin secret for this admin request (`None`: a request outside the
    /// admin path carrying a bearer credential).
    AdminSecret(Head, Option<AdminRequest>),
    Purge(Option<String>),
    Sso(Head, SsoRequest),
    Route(Head),
    Authenticate(Head, Matched),
    /// The identity to sign, and what the attestation is bound to under `identity.attest`.
    Mint(Box<ForwardPlan>, Option<Identity>, Option<Bound>),
    Limit(Box<ForwardPlan>),
    Lookup(Box<ForwardPlan>),
    Forward(Box<ForwardPlan>),
    Answered(Answer),
    ServeStored(Box<ForwardPlan>, crate::gateway::StoredUse),
    Respond {
        plan: Box<ForwardPlan>,
        status: u16,
        headers: HeaderList,
        store: Option<(String, HeaderList)>,
    },
    /// A step's result did not come (a driver's mistake): answer 500.
    Lost,
}

/// One request's life. See the module docs.
pub struct Exchange<'g> {
    gateway: &'g Gateway,
    request_id: String,
    method: String,
    state: State,
    /// The route's index, for the log.
    route: Option<usize>,
    /// A gateway path's name, for the log (`admin`, `sso`).
    own_path: Option<&'static str>,
    path: Option<String>,
    status: u16,
    error: Option<&'static str>,
    detail: Option<String>,
    auth: Option<AuthLog>,
    /// Every attempt to reach an origin.
    pub attempts: Vec<Attempt>,
    cache: Option<&'static str>,
    cache_reason: Option<&'static str>,
    /// `websocket` for a WebSocket handshake.
    upgrade: Option<&'static str>,
    /// Subrequests the request has made before forwarding: the cache lookup, and what the
    /// driver reports for its own steps ([`Exchange::spent`]).
    subrequests: u32,
    /// Whether refusals are pages for browsers (routes of an `sso` entry).
    html_errors: bool,
    accept: Option<String>,
    is_cached: IsCached<'g>,
    /// The stored entry's headers kept through the forward, to answer with when every attempt
    /// fails (stale-if-error; the driver keeps its body).
    fallback: Option<(u16, HeaderList)>,
}

/// How forwarding ended: the origin's status and headers, or the error for the client and the
/// detail for the log.
pub type Forwarded = Result<(u16, HeaderList), (GatewayError, String)>;

/// The driver's verified-token cache, asked whether it holds a token for a policy.
type IsCached<'g> = Box<dyn Fn(usize, &str) -> bool + 'g>;

impl<'g> Exchange<'g> {
    /// Starts the life of a request. `is_cached(policy, token)` says whether the driver holds a
    /// still-valid verification of this exact token for this policy.
    pub fn new(
        gateway: &'g Gateway,
        req: &Incoming<'_>,
        request_id: &str,
        is_cached: impl Fn(usize, &str) -> bool + 'g,
    ) -> Exchange<'g> {
        let mut ex = Exchange {
            gateway,
            request_id: request_id.to_string(),
            method: req.method.to_string(),
            state: State::Lost,
            route: None,
            own_path: None,
            path: None,
            status: 0,
            error: None,
            detail: None,
            auth: None,
            attempts: Vec::new(),
            cache: None,
            cache_reason: None,
            upgrade: None,
            subrequests: 0,
            html_errors: false,
            accept: None,
            is_cached: Box::new(is_cached),
            fallback: None,
        };
        ex.state = match gateway.read(req) {
            Ok(head) => {
                ex.accept = head.header("accept").map(str::to_string);
                State::Read(head)
            }
            Err(refusal) => State::Answered(ex.refusal(refusal)),
        };
        ex
    }

    /// The gateway's answer for a refusal, with its log fields.
    fn refusal(&mut self, refusal: Refusal) -> Answer {
        if let (GatewayError::Auth(e), None) = (&refusal.error, &self.auth) {
            // Refused before any key was needed (no token, malformed, alg, headers).
            self.auth = Some(AuthLog {
                outcome: "refused",
                reason: Some(e.reason()),
                kid: None,
                iss: None,
            });
        }
        if refusal.path.is_some() {
            self.path = refusal.path;
        }
        if refusal.route.is_some() {
            self.route = refusal.route;
        }
        let accept = if self.html_errors {
            self.accept.as_deref()
        } else {
            None
        };
        Answer::error(&refusal.error, &self.request_id, accept, Vec::new(), None)
    }

    fn error_answer(&self, error: &GatewayError, detail: Option<String>) -> Answer {
        Answer::error(error, &self.request_id, None, Vec::new(), detail)
    }

    /// The request's id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The driver's own steps (fetching keys, discovery, tokens; their cache reads) made `n`
    /// subrequests.
    pub fn spent(&mut self, n: u32) {
        self.subrequests = self.subrequests.saturating_add(n);
    }

    /// The subrequests the platform still allows this request for origin attempts
    /// ([`SUBREQUEST_LIMIT`] less what it made, and less one for the cache store a route with a
    /// cache may still make after answering).
    pub fn subrequests_left(&self) -> u32 {
        let store = self
            .plan()
            .is_some_and(|p| matches!(p.cache, Some(CacheStep::Lookup { .. })));
        SUBREQUEST_LIMIT
            .saturating_sub(self.subrequests)
            .saturating_sub(u32::from(store))
    }

    /// The next step. Call it again after giving each step's result.
    pub fn poll(&mut self) -> Step<'_> {
        loop {
            let state = std::mem::replace(&mut self.state, State::Lost);
            self.state = match state {
                State::Read(head) => self.gateway_paths(head),
                State::Route(head) => self.route(head),
                // Phases with nothing to do for this route are passed.
                State::Limit(plan) if plan.rate_limit.is_none() => State::Lookup(plan),
                State::Lookup(plan) if !matches!(plan.cache, Some(CacheStep::Lookup { .. })) => {
                    State::Forward(plan)
                }
                // Waiting for the driver: give the step (the state stays).
                waiting => {
                    self.state = waiting;
                    break;
                }
            };
        }
        if matches!(self.state, State::Lost) {
            self.state = State::Answered(self.error_answer(
                &GatewayError::ConfigInvalid,
                Some("a step's result was not given".into()),
            ));
        }
        match &self.state {
            State::AdminSecret(..) => {
                let token_env = self
                    .gateway
                    .config
                    .admin
                    .as_ref()
                    .map_or("", |a| a.token_env.as_str());
                Step::AdminSecret(token_env)
            }
            State::Purge(key) => Step::Purge(key.clone()),
            State::Sso(head, request) => Step::Sso { request, head },
            State::Authenticate(head, matched) => Step::Authenticate { matched, head },
            State::Mint(plan, identity, bound) => Step::Mint {
                identity: identity.as_ref(),
                aud: &self.gateway.config.origins[plan.origin].name,
                bound: bound.as_ref(),
            },
            State::Limit(plan) => match &plan.rate_limit {
                Some((binding, key)) => Step::RateLimit { binding, key },
                None => unreachable!("passed above"),
            },
            State::Lookup(plan) => match &plan.cache {
                Some(CacheStep::Lookup { key }) => Step::Lookup { key },
                _ => unreachable!("passed above"),
            },
            State::Forward(plan) => Step::Forward(plan),
            State::Answered(answer) => Step::Answer(answer),
            State::ServeStored(plan, use_) => Step::ServeStored {
                headers: &use_.headers,
                refresh: use_.refresh,
                plan,
            },
            State::Respond {
                status,
                headers,
                store,
                ..
            } => Step::Respond {
                status: *status,
                headers,
                store: store.as_ref(),
            },
            State::Lost | State::Read(_) | State::Route(_) => unreachable!("answered above"),
        }
    }

    /// Phase 2: the admin path, the admin credential elsewhere, the SSO and JWKS paths.
    fn gateway_paths(&mut self, head: Head) -> State {
        let g = self.gateway;
        if let Some(admin) = g.admin_request(&head) {
            self.own_path = Some("admin");
            return State::AdminSecret(head, Some(admin));
        }
        if g.config.admin.is_some() && head.header("authorization").is_some() {
            return State::AdminSecret(head, None);
        }
        self.after_admin(head)
    }

    fn after_admin(&mut self, head: Head) -> State {
        if let Some(request) = self.gateway.sso_request(&head) {
            self.own_path = Some("sso");
            return State::Sso(head, request);
        }
        State::Route(head)
    }

    /// Phase 3: a CORS preflight, routing, edge policy, what auth needs.
    fn route(&mut self, head: Head) -> State {
        let g = self.gateway;
        if head.websocket {
            self.upgrade = Some("websocket");
        }
        match g.preflight(&head) {
            Some(Ok(mut headers)) => {
                headers.push(("x-request-id".to_string(), self.request_id.clone()));
                return State::Answered(Answer {
                    status: 204,
                    headers,
                    body: None,
                    log: None,
                    error: None,
                    detail: None,
                });
            }
            Some(Err(refusal)) => return State::Answered(self.refusal(refusal)),
            None => {}
        }
        match g.matched_with(&head, &*self.is_cached) {
            Err(refusal) => State::Answered(self.refusal(refusal)),
            Ok(m) => {
                self.route = Some(m.route);
                self.path = Some(m.path.clone());
                if let Some(name) = g.missing_secret(m.route) {
                    let detail = format!("secret {name} is not set (a request header names it)");
                    return State::Answered(
                        self.error_answer(&GatewayError::ConfigInvalid, Some(detail)),
                    );
                }
                match m.auth {
                    AuthStep::Public | AuthStep::Anonymous => {
                        let log = matches!(m.auth, AuthStep::Anonymous).then_some(AuthLog {
                            outcome: "anonymous",
                            reason: None,
                            kid: None,
                            iss: None,
                        });
                        self.auth = log;
                        self.planned(&m, &head, None)
                    }
                    AuthStep::Session { .. } => {
                        self.html_errors = true;
                        State::Authenticate(head, m)
                    }
                    _ => State::Authenticate(head, m),
                }
            }
        }
    }

    /// Phase 5: the origin request; the signed identity when there is one to sign, and under
    /// `identity.attest` the attestation of every forwarded request, bound to it (the path the
    /// first server receives: the servers of a pool share one base path then).
    fn planned(&mut self, m: &Matched, head: &Head, identity: Option<Identity>) -> State {
        let plan = self
            .gateway
            .forward_plan(m, head, &self.request_id, identity.as_ref());
        match &self.gateway.config.minting {
            Some(m) if m.attest => {
                let origin = &self.gateway.config.origins[plan.origin];
                let bound = origin.servers.first().map(|server| plan.bound(server));
                State::Mint(Box::new(plan), identity, bound)
            }
            Some(_) if identity.is_some() => State::Mint(Box::new(plan), identity, None),
            _ => State::Limit(Box::new(plan)),
        }
    }

    /// The result of [`Step::AdminSecret`].
    pub fn admin_secret(&mut self, secret: &str) {
        let (head, admin) = match std::mem::replace(&mut self.state, State::Lost) {
            State::AdminSecret(head, admin) => (head, admin),
            other => {
                self.state = other;
                return;
            }
        };
        let carries = crate::gateway::bearer_matches(secret, head.header("authorization"));
        let not_found = |ex: &Self, detail| ex.error_answer(&GatewayError::NoRoute, detail);
        self.state = match admin {
            // The admin credential never reaches an origin, whatever the path.
            None if carries => {
                self.own_path = Some("admin");
                State::Answered(not_found(
                    self,
                    Some("the admin credential on a path outside admin.path: not forwarded".into()),
                ))
            }
            None => self.after_admin(head),
            Some(_) if !carries => {
                let detail = secret.is_empty().then(|| {
                    let name = self.gateway.config.admin.as_ref().map(|a| &a.token_env);
                    format!(
                        "admin secret {} is not set",
                        name.map_or("", |n| n.as_str())
                    )
                });
                State::Answered(not_found(self, detail))
            }
            Some(AdminRequest::NotFound) => State::Answered(not_found(self, None)),
            Some(AdminRequest::Purge { target }) => {
                let key_headers: HeaderList = head
                    .headers
                    .iter()
                    .filter(|(n, _)| n != "authorization")
                    .cloned()
                    .collect();
                State::Purge(self.gateway.purge_key(&target, &key_headers))
            }
        };
    }

    /// The result of [`Step::Purge`].
    pub fn purged(&mut self, purged: bool) {
        self.subrequests += 1;
        let body =
            serde_json::json!({ "purged": purged, "request_id": self.request_id }).to_string();
        self.state = State::Answered(Answer {
            status: 200,
            headers: vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-request-id".to_string(), self.request_id.clone()),
            ],
            body: Some(body),
            log: None,
            error: None,
            detail: None,
        });
    }

    /// The answer of [`Step::Sso`], or of a login [`Step::Authenticate`] redirected to.
    pub fn answered(&mut self, mut answer: Answer) {
        if !answer.headers.iter().any(|(n, _)| n == "x-request-id") {
            answer
                .headers
                .push(("x-request-id".to_string(), self.request_id.clone()));
        }
        self.auth = answer.log.clone();
        self.state = State::Answered(answer);
    }

    /// The result of [`Step::Authenticate`].
    pub fn authenticated(&mut self, result: AuthResult) {
        let (head, m) = match std::mem::replace(&mut self.state, State::Lost) {
            State::Authenticate(head, m) => (head, m),
            other => {
                self.state = other;
                return;
            }
        };
        self.auth = result.log;
        self.detail = result.detail;
        self.state = match result.error {
            Some(e) => {
                let error = if self.html_errors {
                    crate::error::session_refusal(e)
                } else {
                    GatewayError::Auth(e)
                };
                let refusal = Refusal {
                    error,
                    route: Some(m.route),
                    path: Some(m.path.clone()),
                };
                State::Answered(self.refusal(refusal))
            }
            None => self.planned(&m, &head, result.identity),
        };
    }

    /// The result of [`Step::Mint`]: the token, none (nothing to sign), or why it failed.
    pub fn minted(&mut self, token: Result<Option<String>, String>) {
        let mut plan = match std::mem::replace(&mut self.state, State::Lost) {
            State::Mint(plan, ..) => plan,
            other => {
                self.state = other;
                return;
            }
        };
        self.state = match (token, &self.gateway.config.minting) {
            (Ok(Some(token)), Some(minting)) => {
                plan.headers.push((minting.header.clone(), token));
                State::Limit(plan)
            }
            (Ok(_), _) => State::Limit(plan),
            (Err(detail), _) => State::Answered(self.error_answer(
                &GatewayError::ConfigInvalid,
                Some(format!("identity: {detail}")),
            )),
        };
    }

    /// The result of [`Step::RateLimit`].
    pub fn limited(&mut self, limited: Limited) {
        let plan = match std::mem::replace(&mut self.state, State::Lost) {
            State::Limit(plan) => plan,
            other => {
                self.state = other;
                return;
            }
        };
        let rule = self.gateway.config.routes[plan.route]
            .policy
            .rate_limit
            .as_ref();
        let verdict = match rule {
            Some(rule) => rule.verdict(limited),
            None => Ok(None),
        };
        self.state = match verdict {
            Ok(note) => {
                if note.is_some() {
                    self.detail = note;
                }
                State::Lookup(plan)
            }
            Err((error, detail)) => State::Answered(self.error_answer(&error, detail)),
        };
    }

    /// The result of [`Step::Lookup`] at `now_ms`: the stored entry's status and headers, if
    /// any.
    pub fn looked_up(&mut self, stored: Option<(u16, &[(String, String)])>, now_ms: u64) {
        let plan = match std::mem::replace(&mut self.state, State::Lost) {
            State::Lookup(plan) => plan,
            other => {
                self.state = other;
                return;
            }
        };
        self.subrequests += 1;
        let used = stored
            .and_then(|(status, headers)| self.gateway.stored_use(&plan, status, headers, now_ms));
        self.state = match used {
            Some(use_) => {
                self.cache = Some(use_.label);
                State::ServeStored(plan, use_)
            }
            None => {
                // Past use, but it may still answer if the origin fails (stale-if-error).
                self.fallback = stored
                    .filter(|&(status, s)| {
                        self.gateway
                            .stale_on_error(&plan, status, s, now_ms)
                            .is_some()
                    })
                    .map(|(status, s)| (status, s.to_vec()));
                State::Forward(plan)
            }
        };
    }

    /// The result of [`Step::Forward`] at `now_ms`: the origin's status and headers, or the
    /// error the attempts ended with (and its detail); `attempts` for the log.
    pub fn forwarded(&mut self, result: Forwarded, attempts: Vec<Attempt>, now_ms: u64) {
        let plan = match std::mem::replace(&mut self.state, State::Lost) {
            State::Forward(plan) => plan,
            other => {
                self.state = other;
                return;
            }
        };
        self.attempts.extend(attempts);
        if let Some(use_) = self.stale_on_error(&plan, &result, now_ms) {
            self.state = State::ServeStored(plan, use_);
            return;
        }
        self.state = match result {
            Err((error, detail)) => {
                let answer = self.error_answer(&error, Some(detail));
                State::Answered(answer)
            }
            Ok((status, from_origin)) => {
                let mut headers = self.gateway.response_headers(&plan, &from_origin);
                let mut store = None;
                if let Some(outcome) = self.gateway.cache_outcome(&plan, status, &headers, now_ms) {
                    headers.push((
                        crate::cache::STATUS_HEADER.to_string(),
                        outcome.label.to_string(),
                    ));
                    self.cache = Some(outcome.label);
                    self.cache_reason = outcome.reason;
                    store = outcome.store;
                }
                // After the cache took its copy of the headers: the entry keeps the identity
                // body, and this client gets its own coding.
                self.gateway.compression(&plan, status, &mut headers);
                State::Respond {
                    plan,
                    status,
                    headers,
                    store,
                }
            }
        };
    }

    /// The kept entry, when the forward failed (the attempts gave up, or the last one answered a
    /// status the pool retries on) and the entry is within its stale-if-error window at
    /// `now_ms`; the log says it was served stale and why the origin failed.
    fn stale_on_error(
        &mut self,
        plan: &ForwardPlan,
        result: &Forwarded,
        now_ms: u64,
    ) -> Option<crate::gateway::StoredUse> {
        self.fallback.as_ref()?;
        let failure = match result {
            Err((error, detail)) => format!("{}: {detail}", error.code()),
            Ok((status, _))
                if self.gateway.config.origins[plan.origin]
                    .retry
                    .on_statuses
                    .contains(status) =>
            {
                format!("the last attempt answered {status}")
            }
            Ok(_) => return None,
        };
        let (stored_status, stored) = self.fallback.take()?;
        let use_ = self
            .gateway
            .stale_on_error(plan, stored_status, &stored, now_ms)?;
        self.cache = Some(use_.label);
        self.cache_reason = Some("stale-if-error: every attempt to the origin failed");
        let note = format!("served stale because the origin failed: {failure}");
        self.detail = Some(match self.detail.take() {
            Some(before) => format!("{before}; {note}"),
            None => note,
        });
        Some(use_)
    }

    /// After [`Step::Respond`], when the runtime could not build the response: 502.
    pub fn unbuildable(&mut self, detail: String) {
        self.state = State::Answered(self.error_answer(
            &GatewayError::OriginUnavailable,
            Some(format!("response: {detail}")),
        ));
    }

    /// The plan of a request being forwarded or served (for the driver's background refresh).
    pub fn plan(&self) -> Option<&ForwardPlan> {
        match &self.state {
            State::Limit(p) | State::Lookup(p) | State::Forward(p) | State::ServeStored(p, _) => {
                Some(p)
            }
            State::Respond { plan, .. } | State::Mint(plan, ..) => Some(plan),
            _ => None,
        }
    }

    /// The request's one log line (call it once the exchange answered), with the status the
    /// client got and the time it took.
    pub fn log_line(&mut self, status: u16, duration_ms: u64) -> String {
        self.status = status;
        if let State::Answered(answer) = &self.state {
            self.error = answer.error;
            if answer.detail.is_some() {
                self.detail = answer.detail.clone();
            }
        }
        let route = match (self.own_path, self.route) {
            (Some(own), _) => Some(own),
            (None, Some(i)) => Some(self.gateway.config.routes[i].name.as_str()),
            (None, None) => None,
        };
        LogLine {
            request_id: &self.request_id,
            method: &self.method,
            path: self.path.as_deref(),
            route,
            status: self.status,
            error: self.error,
            detail: self.detail.clone(),
            auth: self.auth.clone(),
            attempts: self.attempts.clone(),
            cache: self.cache,
            cache_reason: self.cache_reason,
            upgrade: self.upgrade,
            duration_ms,
        }
        .to_json()
    }
}

#[cfg(test)]
mod tests;
