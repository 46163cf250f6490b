//! Choosing origin servers and deciding retries (README, `origins.NAME` and "Origins that fail").
//!
//! Like Pingora's load balancer, [`PoolState::candidates`] returns an ordered list of servers to
//! try, best first, and the caller walks it; like tower's retry `Policy`, [`RetryPolicy`] only
//! decides. Per-isolate state ([`PoolState`]) is small and cheap to update; time and randomness
//! are inputs, so everything here is deterministic under test.
//!
//! The order of candidates for one request:
//! 1. healthy (not ejected) primary servers, the first chosen by the pool's balancing, the rest
//!    after it;
//! 2. healthy backup servers (they take traffic only when every primary is ejected or has failed
//!    for this request);
//! 3. ejected servers, least recently ejected first: when everything is ejected the gateway still
//!    tries rather than failing without trying.
//!
//! The `origins` section of the config is validated here too, into [`Origin`].

pub mod attempts;
pub mod checks;
mod config;

pub(crate) use config::{validate_origin, RawOrigin};
pub use config::{
    Balance, EjectPolicy, HashOn, Origin, RetryPolicy, Server, DEFAULT_ATTEMPTS,
    DEFAULT_DEADLINE_MS, DEFAULT_EJECT_AFTER, DEFAULT_EJECT_FOR_MS, DEFAULT_EJECT_MAX_FOR_MS,
    DEFAULT_REPLAY_BODY_BYTES, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};

/// The Workers platform's limit on subrequests per request (free plan), which caps the attempts
/// of one request together with cache and key fetches.
pub const SUBREQUEST_LIMIT: u32 = 50;

/// Why an attempt did not give a usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The subrequest failed before any response: refused, reset, DNS, TLS.
    Connect,
    /// No response headers within the attempt's timeout.
    Timeout,
    /// The origin answered with this status, listed in `retry.on`.
    Status(u16),
}

/// Whether a method may be sent twice without changing its meaning (RFC 9110 idempotent methods
/// that the gateway retries).
pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE")
}

impl RetryPolicy {
    /// Whether a request with `method` may be attempted more than once at all.
    pub fn may_retry_method(&self, method: &str) -> bool {
        self.attempts > 1 && (self.non_idempotent || is_idempotent(method))
    }

    /// Whether `failure` is worth another attempt (for a method that may be retried).
    pub fn retries_on(&self, failure: Failure) -> bool {
        match failure {
            Failure::Connect => self.on_connect,
            Failure::Timeout => self.on_timeout,
            Failure::Status(s) => self.on_statuses.contains(&s),
        }
    }

    /// The number of attempts for one request: bounded by `retry.attempts`, by the servers there
    /// are, by the subrequests left in the platform's budget, and to one when the body cannot be
    /// replayed or the method may not be retried.
    pub fn attempts_for(
        &self,
        method: &str,
        servers: usize,
        subrequests_left: u32,
        replayable_body: bool,
    ) -> u32 {
        if !self.may_retry_method(method) || !replayable_body {
            return 1.min(subrequests_left);
        }
        self.attempts.min(servers as u32).min(subrequests_left)
    }
}

/// What the isolate remembers about one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServerState {
    /// Failures in a row.
    failures: u32,
    /// Ejected until this time (ms), if ejected.
    ejected_until: Option<u64>,
    /// When the current ejection began, to order the ejected.
    ejected_at: u64,
    /// Ejections in a row without a success in between: each doubles the ejection time.
    ejections: u32,
    /// Smooth weighted round robin's current weight.
    current: i64,
}

/// The per-isolate state of one origin pool. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    servers: Vec<ServerState>,
    /// Each server's key in the location's shared store ([`health_key`]).
    keys: Vec<String>,
    /// Until when (ms) another isolate of this location has the server ejected (0: not).
    peer_until: Vec<u64>,
    /// What this isolate has to tell the others (ejections, returns), oldest first.
    notices: Vec<Notice>,
    /// When this isolate last read the others' word on the pool's servers (ms; 0: never).
    last_read_ms: u64,
    /// Whether the server failed its last active health check ([`checks`]): skipped until a
    /// check passes.
    check_down: Vec<bool>,
}

/// How often (ms) an isolate reads the location's shared word on a pool's servers, off the
/// request path: a new isolate may send a server that another isolate ejected a live attempt for
/// at most this long (and during its first read).
pub const HEALTH_READ_MS: u64 = 5_000;

/// What an isolate publishes to the other isolates of its location about one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The server is ejected until `until_ms`: an entry under `key` that expires then.
    Ejected { key: String, until_ms: u64 },
    /// The server answered again: the entry under `key` is deleted.
    Returned { key: String },
}

/// A server's key in the location's shared store (the Cache API): a URL that names no address
/// (the `.invalid` top-level domain), unique to the pool's name and the server's URL or binding.
pub fn health_key(origin: &str, server: &Server) -> String {
    let id = stable_hash(&[
        origin.as_bytes(),
        server.log_name().as_bytes(),
        server.base.as_bytes(),
    ]);
    format!("https://health.portcullis.invalid/v1/{id:016x}")
}

/// A 64-bit hash that is the same on every platform and every run (FNV-1a, then a finalizer).
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Weighted rendezvous score of a key on a server: the highest score wins, and removing a
/// server moves only the keys it had.
fn rendezvous_score(key: &str, server_id: &str, weight: u32) -> f64 {
    let h = stable_hash(&[key.as_bytes(), server_id.as_bytes()]);
    // A uniform value in (0, 1), never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}

impl PoolState {
    /// The state of a fresh pool.
    pub fn new(origin: &Origin) -> Self {
        PoolState {
            servers: vec![ServerState::default(); origin.servers.len()],
            keys: origin
                .servers
                .iter()
                .map(|s| health_key(&origin.name, s))
                .collect(),
            peer_until: vec![0; origin.servers.len()],
            notices: Vec::new(),
            last_read_ms: 0,
            check_down: vec![false; origin.servers.len()],
        }
    }

    fn is_ejected(&self, i: usize, now_ms: u64) -> bool {
        self.check_down[i]
            || now_ms < self.peer_until[i]
            || self.servers[i]
                .ejected_until
                .is_some_and(|until| now_ms < until)
    }

    /// Queues a notice; bounded, the oldest dropped (a later notice of a server supersedes it).
    fn notify(&mut self, notice: Notice) {
        if self.notices.len() >= 64 {
            self.notices.remove(0);
        }
        self.notices.push(notice);
    }

    /// What this isolate has to publish, taken (the driver writes it in the background).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The keys to read now, when the last read is [`HEALTH_READ_MS`] old (a pool of one
    /// server has nothing to skip to, and reads nothing).
    pub fn reads_due(&mut self, now_ms: u64) -> Option<&[String]> {
        let due = self.keys.len() > 1
            && (self.last_read_ms == 0
                || now_ms.saturating_sub(self.last_read_ms) >= HEALTH_READ_MS);
        if !due {
            return None;
        }
        self.last_read_ms = now_ms.max(1);
        Some(&self.keys)
    }

    /// What another isolate says of the server under `key`: ejected until `until_ms` (0 or a
    /// past time: not ejected). Whether the key is one of this pool's.
    pub fn learned(&mut self, key: &str, until_ms: u64) -> bool {
        let Some(i) = self.keys.iter().position(|k| k == key) else {
            return false;
        };
        self.peer_until[i] = until_ms;
        if until_ms > 0 && self.servers[i].ejected_until.is_none() {
            self.servers[i].ejected_at = until_ms;
        }
        true
    }

    /// What the stored active checks say of server `i`: `down` when its last check failed (it
    /// is then skipped, as an ejected server is, until a check passes).
    pub fn checked(&mut self, i: usize, down: bool, now_ms: u64) {
        let Some(slot) = self.check_down.get_mut(i) else {
            return;
        };
        if down && !*slot && self.servers[i].ejected_until.is_none() {
            self.servers[i].ejected_at = now_ms;
        }
        *slot = down;
    }

    /// The servers to try for one request, best first. `hash_key` is the request's value of the
    /// pool's `hash_on` (`None`: no such value, round robin instead); `random` is a fresh random
    /// number for `random` balancing.
    pub fn candidates(
        &mut self,
        origin: &Origin,
        hash_key: Option<&str>,
        now_ms: u64,
        random: u64,
    ) -> Vec<usize> {
        let healthy = |backup: bool, this: &Self| -> Vec<usize> {
            (0..origin.servers.len())
                .filter(|&i| origin.servers[i].backup == backup && !this.is_ejected(i, now_ms))
                .collect()
        };
        let primaries = healthy(false, self);
        let backups = healthy(true, self);
        let mut order = Vec::with_capacity(origin.servers.len());
        for group in [primaries, backups] {
            if group.is_empty() {
                continue;
            }
            let ordered = match (&origin.balance, hash_key) {
                (Balance::Hash(_), Some(key)) => {
                    let mut scored: Vec<(f64, usize)> = group
                        .iter()
                        .map(|&i| {
                            (
                                rendezvous_score(
                                    key,
                                    &origin.servers[i].base,
                                    origin.servers[i].weight,
                                ),
                                i,
                            )
                        })
                        .collect();
                    crate::sort::stable_sort_by(&mut scored, |a, b| b.0.total_cmp(&a.0));
                    scored.into_iter().map(|(_, i)| i).collect()
                }
                (Balance::First, _) => group,
                (Balance::Random, _) => rotate_to(&group, self.pick_random(origin, &group, random)),
                (Balance::RoundRobin | Balance::Hash(_), _) => {
                    rotate_to(&group, self.pick_smooth(origin, &group))
                }
            };
            order.extend(ordered);
        }
        let mut ejected: Vec<usize> = (0..origin.servers.len())
            .filter(|&i| self.is_ejected(i, now_ms))
            .collect();
        crate::sort::stable_sort_by(&mut ejected, |&a, &b| {
            self.servers[a].ejected_at.cmp(&self.servers[b].ejected_at)
        });
        order.extend(ejected);
        order
    }

    /// Smooth weighted round robin (nginx): every candidate gains its weight, the largest wins
    /// and pays the total back. Weights 3:1 give a, a, b, a rather than bursts.
    fn pick_smooth(&mut self, origin: &Origin, group: &[usize]) -> usize {
        let mut total = 0i64;
        let mut best = group[0];
        for &i in group {
            let w = i64::from(origin.servers[i].weight);
            self.servers[i].current += w;
            total += w;
            if self.servers[i].current > self.servers[best].current {
                best = i;
            }
        }
        self.servers[best].current -= total;
        best
    }

    fn pick_random(&self, origin: &Origin, group: &[usize], random: u64) -> usize {
        let total: u64 = group
            .iter()
            .map(|&i| u64::from(origin.servers[i].weight))
            .sum();
        let mut point = random % total.max(1);
        for &i in group {
            let w = u64::from(origin.servers[i].weight);
            if point < w {
                return i;
            }
            point -= w;
        }
        group[group.len() - 1]
    }

    /// Records a usable response from server `i`: its failure count and ejection backoff reset.
    pub fn record_success(&mut self, i: usize) {
        let s = &mut self.servers[i];
        let was_ejected = s.ejections > 0 || self.peer_until[i] > 0;
        s.failures = 0;
        s.ejections = 0;
        s.ejected_until = None;
        if was_ejected {
            // Back: the other isolates hear it too.
            self.peer_until[i] = 0;
            let key = self.keys[i].clone();
            self.notify(Notice::Returned { key });
        }
    }

    /// Records a failure of server `i`; returns the ejection time when this failure ejects it.
    /// A server that fails `after_failures` times in a row is ejected for `for_ms`, doubled for
    /// each ejection in a row (capped at `max_for_ms`).
    pub fn record_failure(&mut self, i: usize, eject: &EjectPolicy, now_ms: u64) -> Option<u64> {
        let s = &mut self.servers[i];
        s.failures += 1;
        if eject.after_failures == 0 || s.failures < eject.after_failures {
            return None;
        }
        let factor = 1u64 << s.ejections.min(16);
        let duration = u64::from(eject.for_ms)
            .saturating_mul(factor)
            .min(u64::from(eject.max_for_ms));
        s.failures = 0;
        s.ejections += 1;
        s.ejected_at = now_ms;
        s.ejected_until = Some(now_ms + duration);
        let key = self.keys[i].clone();
        self.notify(Notice::Ejected {
            key,
            until_ms: now_ms + duration,
        });
        Some(duration)
    }

    /// Whether server `i` is ejected at `now_ms`.
    pub fn ejected(&self, i: usize, now_ms: u64) -> bool {
        self.is_ejected(i, now_ms)
    }
}

fn rotate_to(group: &[usize], first: usize) -> Vec<usize> {
    let at = group.iter().position(|&i| i == first).unwrap_or(0);
    group[at..].iter().chain(&group[..at]).copied().collect()
}

#[cfg(test)]
mod tests;
