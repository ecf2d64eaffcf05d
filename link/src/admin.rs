//! An admin API client that follows the leader: it tries each configured server and, when a
//! follower answers `UNAVAILABLE` with a `LeaderHint`, retries at the leader. Used by
//! `palisadectl`, the chaos harness and the tests.
//!
//! A member that does not answer in time (frozen, partitioned, overloaded) costs one deadline,
//! then the next member is tried, for writes too: every call carries one idempotency key
//! (`palisade-idempotency-key`) in all its attempts, and the catalog applies a keyed write
//! once, so a write whose answer was lost is retried without being applied twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use crate::{IdempotencyKey, KeyHeader};

/// A channel to one controller whose requests carry the call's idempotency key.
pub type AdminChannel = InterceptedService<Channel, KeyHeader>;

/// Credentials and servers.
#[derive(Debug, Clone)]
pub struct AdminClient {
    servers: Vec<String>,
    /// `None` when the credentials do not parse; every call then fails with the reason.
    tls: Result<LinkTls, String>,
    timeout: Duration,
    /// Open channels by address; a channel multiplexes calls over one HTTP/2 connection.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// A server that timed out, tried last by later calls until it answers again (a paused
    /// member accepts connections but never answers; a long-lived client should not keep
    /// waiting on it first).
    suspect: Arc<Mutex<Option<String>>>,
    /// See `with_election_wait`.
    election_wait: Duration,
}

/// The leader hint in a status, if any.
pub fn leader_hint(s: &Status) -> Option<pb::LeaderHint> {
    if s.code() != Code::Unavailable || s.details().is_empty() {
        return None;
    }
    pb::LeaderHint::decode(s.details())
        .ok()
        .filter(|h| !h.leader_admin_addr.is_empty())
}

/// Whether a status came from this side's transport (a refused or reset connection) rather than
/// from a member that answered: tonic keeps the transport's error as the source.
fn is_transport_error(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// The validation failure in a status, if any.
pub fn validation_failure(s: &Status) -> Option<pb::ValidationFailure> {
    if s.code() != Code::InvalidArgument || s.details().is_empty() {
        return None;
    }
    pb::ValidationFailure::decode(s.details()).ok()
}

impl AdminClient {
    /// A client presenting `cert`/`key` (PEM) and trusting `ca` (PEM); it speaks only to
    /// servers holding a controller identity.
    pub fn new(servers: Vec<String>, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = LinkTls::new(cert_pem, key_pem, ca_pem).map_err(|e| e.to_string());
        Self {
            servers,
            tls,
            timeout: Duration::from_secs(30),
            channels: Arc::default(),
            suspect: Arc::default(),
            election_wait: Duration::ZERO,
        }
    }

    /// How long a call keeps trying while members answer but none knows a leader (an election
    /// under way, a leader that just died): passes over the members repeat with a short backoff
    /// until this much time has gone by. Zero (the default) gives up after one pass; what a
    /// person types (`palisadectl`) rides through an election instead. A cluster nobody answers
    /// for (every connection refused) and members that time out are not retried.
    pub fn with_election_wait(mut self, wait: Duration) -> Self {
        self.election_wait = wait;
        self
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The configured servers.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// A channel to one server, reused across calls.
    pub async fn channel(&self, addr: &str) -> Result<Channel, Status> {
        if let Some(ch) = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(ch.clone());
        }
        let tls = self
            .tls
            .as_ref()
            .map_err(|e| Status::invalid_argument(format!("TLS credentials: {e}")))?;
        let opts = LinkOptions {
            // A frozen member (it accepts TCP, never finishes TLS) costs this much.
            connect_timeout: Duration::from_secs(1),
            call_timeout: Some(self.timeout),
            ..LinkOptions::default()
        };
        let ch = tls
            .connect(addr, Expect::AnyController, &opts)
            .await
            .map_err(|e| match e {
                crate::LinkError::Connect { .. } => Status::unavailable(e.to_string()),
                other => Status::invalid_argument(other.to_string()),
            })?;
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// Runs `call` against the servers in order, following leader hints (at most 3 hops), and
    /// returns the first answer that is not "unreachable", "not the leader" or "no answer in
    /// time". Every attempt carries the same idempotency key, so retrying a write at another
    /// member after a timeout cannot apply it twice.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut(AdminChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_keyed(&IdempotencyKey::random(), call).await
    }

    /// As `call`, with the caller's key: a caller that retries a write itself (after `call`
    /// gave up on every member) passes the same key again, so the write still applies once.
    pub async fn call_keyed<T, F, Fut>(
        &self,
        key: &IdempotencyKey,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(AdminChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let key = KeyHeader::new(key);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let (result, answered) = self.pass(&key, &mut call).await;
            match result {
                Err(s)
                    if s.code() == Code::Unavailable
                        && answered
                        && started.elapsed() + pause < self.election_wait =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// One pass over the members (the suspect one last), following leader hints. Also says
    /// whether any member answered at all (rather than refusing the connection or timing out).
    async fn pass<T, F, Fut>(&self, key: &KeyHeader, call: &mut F) -> (Result<T, Status>, bool)
    where
        F: FnMut(AdminChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut answered = false;
        let mut queue: Vec<String> = self.servers.clone();
        let suspect = self
            .suspect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(s) = suspect
            && let Some(pos) = queue.iter().position(|a| *a == s)
        {
            let s = queue.remove(pos);
            queue.push(s);
        }
        let mut last = Status::unavailable("no server configured");
        let mut hops = 0;
        let mut i = 0;
        while i < queue.len() {
            let addr = queue[i].clone();
            i += 1;
            let ch = match self.channel(&addr).await {
                Ok(ch) => ch,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match call(InterceptedService::new(ch, key.clone())).await {
                Ok(v) => {
                    let mut sus = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
                    if sus.as_deref() == Some(addr.as_str()) {
                        *sus = None;
                    }
                    return (Ok(v), true);
                }
                Err(s) => {
                    let timed_out = matches!(s.code(), Code::Cancelled | Code::DeadlineExceeded);
                    answered |= !timed_out && !is_transport_error(&s);
                    if timed_out {
                        // Tried last by later calls until it answers again.
                        *self.suspect.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(addr.clone());
                    }
                    if let Some(h) = leader_hint(&s)
                        && hops < 3
                    {
                        hops += 1;
                        queue.insert(i, h.leader_admin_addr);
                    } else if s.code() != Code::Unavailable && !timed_out {
                        return (Err(s), true);
                    } else {
                        // The connection may be dead (member killed or frozen): reconnect
                        // next time. A write that timed out is retried at the next member
                        // under the same key.
                        self.forget(&addr);
                    }
                    last = s;
                }
            }
        }
        (Err(last), answered)
    }
}
