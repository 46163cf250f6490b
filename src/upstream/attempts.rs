//! Step 8 as a sans-IO state machine: the attempts of one request on its pool. Like
//! quinn-proto's `Connection`, it does no I/O and reads no clock: the driver asks
//! [`Attempts::next`] what to send, sends it, tells [`Attempts::finished`] how it ended (with the
//! time), and does what the answer says. Every decision of forwarding lives here: the order of
//! servers, how the body is sent, how many attempts, each attempt's timeout under the deadline,
//! which outcomes are failures and which of those are retried, ejections, and the error the
//! client gets when everything failed.

use super::Origin;
use crate::error::GatewayError;
use crate::log::{Attempt, Outcome};

use super::{Failure, PoolState};

/// How the driver sends the request body on the attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// The request has no body.
    None,
    /// Streamed through once, never buffered: exactly one attempt.
    Stream,
    /// No declared length on a route with a body limit: counted while it streams, the attempt
    /// cut past this many bytes (one attempt); the driver reports the cut as
    /// [`Sent::BodyOverLimit`].
    Counted(u64),
    /// Buffered (outside Wasm) so that a retry can send it again.
    Replay,
}

/// What the request brings to the attempts.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request's value of the pool's `hash_on`.
    pub hash_key: Option<&'a str>,
    /// Whether the request has a body at all.
    pub has_body: bool,
    /// Its declared `Content-Length`.
    pub content_length: Option<u64>,
    /// The route's `limits.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Subrequests the platform still allows this request (after cache and key fetches).
    pub subrequests_left: u32,
}

/// What the driver is to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send the request to this server (index in the pool), with this timeout until the
    /// response headers arrive.
    Send { server: usize, timeout_ms: u32 },
    /// Stop: answer the client with this error (the detail is for the log).
    GiveUp { error: GatewayError, detail: String },
}

/// How one attempt ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Response headers arrived with this status.
    Response(u16),
    /// The subrequest failed before any response (the runtime's message, for the log).
    Failed(String),
    /// No response headers within the attempt's timeout.
    TimedOut,
    /// The client's body went over the route's limit while streaming: the cut is the client's
    /// doing, not the server's.
    BodyOverLimit,
}

/// What to do with the attempt that just ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve this response to the client (the last attempt's response is the origin's word,
    /// even a status listed in `retry.on`, as nginx and Envoy do).
    Serve,
    /// Drop this response (cancel its body) and ask [`Attempts::next`] again.
    Retry,
    /// Ask [`Attempts::next`] again (after a failure without a response).
    Next,
}

/// The attempts of one request. See the module docs.
#[derive(Debug, Clone)]
pub struct Attempts {
    order: Vec<usize>,
    allowed: u32,
    made: u32,
    deadline_ms: u64,
    body: BodyPlan,
    /// The attempt under way: server, when it was sent, its timeout.
    current: Option<(usize, u64, u32)>,
    last: (Failure, String),
    over_limit: bool,
    /// Every attempt made, for the log line.
    pub log: Vec<Attempt>,
}

/// The body plan of a request on `origin`, given the number of servers it may try.
fn body_plan(origin: &Origin, req: &Request<'_>, servers: usize) -> BodyPlan {
    if !req.has_body {
        return BodyPlan::None;
    }
    if let (Some(max), None) = (req.max_body_bytes, req.content_length) {
        return BodyPlan::Counted(max);
    }
    let policy = &origin.retry;
    let replayable = policy.may_retry_method(req.method)
        && servers > 1
        && req
            .content_length
            .is_some_and(|n| n <= policy.replay_body_bytes);
    if replayable {
        BodyPlan::Replay
    } else {
        BodyPlan::Stream
    }
}

impl Attempts {
    /// The attempts of a request on `origin`, started at `now_ms`; `random` is a fresh random
    /// number for `random` balancing. The pool's state orders the servers.
    pub fn start(
        origin: &Origin,
        pool: &mut PoolState,
        req: &Request<'_>,
        now_ms: u64,
        random: u64,
    ) -> Attempts {
        let order = pool.candidates(origin, req.hash_key, now_ms, random);
        let body = body_plan(origin, req, order.len());
        let replayable = matches!(body, BodyPlan::None | BodyPlan::Replay);
        let allowed =
            origin
                .retry
                .attempts_for(req.method, order.len(), req.subrequests_left, replayable);
        Attempts {
            order,
            allowed,
            made: 0,
            deadline_ms: now_ms + u64::from(origin.deadline_ms),
            body,
            current: None,
            last: (
                Failure::Connect,
                String::from(if req.subrequests_left == 0 {
                    "no server was tried: the request's subrequest budget is spent"
                } else {
                    "no server was tried"
                }),
            ),
            over_limit: false,
            log: Vec::new(),
        }
    }

    /// How the driver sends the body (decided once, before the first attempt).
    pub fn body(&self) -> BodyPlan {
        self.body
    }

    /// The attempts this request may make in all.
    pub fn allowed(&self) -> u32 {
        self.allowed
    }

    /// What to do next, at `now_ms`.
    pub fn next(&mut self, origin: &Origin, now_ms: u64) -> Next {
        if self.over_limit {
            return Next::GiveUp {
                error: GatewayError::PayloadTooLarge,
                detail: "body over the limit while streaming".into(),
            };
        }
        let out_of_attempts = self.made >= self.allowed || self.made as usize >= self.order.len();
        let not_retried = self.made > 0 && !origin.retry.retries_on(self.last.0);
        if !out_of_attempts && !not_retried && now_ms >= self.deadline_ms {
            self.last = (
                Failure::Timeout,
                format!("deadline of {} ms passed", origin.deadline_ms),
            );
        }
        if out_of_attempts || not_retried || now_ms >= self.deadline_ms {
            return Next::GiveUp {
                error: match self.last.0 {
                    Failure::Timeout => GatewayError::OriginTimeout,
                    _ => GatewayError::OriginUnavailable,
                },
                detail: self.last.1.clone(),
            };
        }
        let server = self.order[self.made as usize];
        self.made += 1;
        let timeout_ms = u64::from(origin.timeout_ms).min(self.deadline_ms - now_ms) as u32;
        self.current = Some((server, now_ms, timeout_ms));
        Next::Send { server, timeout_ms }
    }

    /// How the attempt [`Attempts::next`] sent ended, at `now_ms`: the failure classes, the
    /// server's health in `pool`, and the verdict.
    pub fn finished(
        &mut self,
        origin: &Origin,
        pool: &mut PoolState,
        sent: Sent,
        now_ms: u64,
    ) -> Verdict {
        let Some((server, started, timeout_ms)) = self.current.take() else {
            return Verdict::Next;
        };
        let (failure, outcome, status) = match &sent {
            Sent::BodyOverLimit => {
                self.over_limit = true;
                return Verdict::Next;
            }
            Sent::Response(status) => (
                origin
                    .retry
                    .on_statuses
                    .contains(status)
                    .then_some(Failure::Status(*status)),
                Outcome::Response,
                Some(*status),
            ),
            Sent::TimedOut => (Some(Failure::Timeout), Outcome::Timeout, None),
            Sent::Failed(_) => (Some(Failure::Connect), Outcome::ConnectFailed, None),
        };
        let ejected_for_ms = match failure {
            None => {
                pool.record_success(server);
                None
            }
            Some(_) => pool.record_failure(server, &origin.eject, now_ms),
        };
        self.log.push(Attempt {
            server,
            address: origin.servers[server].log_name(),
            outcome,
            status,
            duration_ms: now_ms.saturating_sub(started),
            ejected_for_ms,
        });
        let is_last = self.made >= self.allowed;
        match (sent, failure) {
            (Sent::Response(_), None) => Verdict::Serve,
            (Sent::Response(status), Some(f)) => {
                if !is_last && origin.retry.retries_on(f) {
                    self.last = (f, format!("status {status}"));
                    Verdict::Retry
                } else {
                    Verdict::Serve
                }
            }
            (Sent::TimedOut, _) => {
                self.last = (
                    Failure::Timeout,
                    format!("no response headers within {timeout_ms} ms"),
                );
                Verdict::Next
            }
            (Sent::Failed(detail), _) => {
                self.last = (Failure::Connect, detail);
                Verdict::Next
            }
            (Sent::BodyOverLimit, _) => Verdict::Next,
        }
    }
}

#[cfg(test)]
mod tests;
