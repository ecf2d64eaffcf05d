//! An admin API client that follows the leader: it tries each configured server and, when a
//! follower answers `UNAVAILABLE` with a `LeaderHint`, retries at the leader. Used by
//! `palisadectl`, the chaos harness and the tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

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
        }
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
        let ep = tls
            .endpoint(
                addr,
                Expect::AnyController,
                &LinkOptions {
                    connect_timeout: Duration::from_secs(3),
                    call_timeout: Some(self.timeout),
                    ..LinkOptions::default()
                },
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ch = ep
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach {addr}: {e}")))?;
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
    /// returns the first answer that is not "unreachable" or "not the leader".
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
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
            match call(ch).await {
                Ok(v) => {
                    let mut sus = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
                    if sus.as_deref() == Some(addr.as_str()) {
                        *sus = None;
                    }
                    return Ok(v);
                }
                Err(s) => {
                    // A timeout says nothing about the outcome of a write, so it is returned
                    // as it is; only the order of later calls changes.
                    if matches!(s.code(), Code::Cancelled | Code::DeadlineExceeded) {
                        *self.suspect.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(addr.clone());
                    }
                    if let Some(h) = leader_hint(&s)
                        && hops < 3
                    {
                        hops += 1;
                        queue.insert(i, h.leader_admin_addr);
                    } else if s.code() != Code::Unavailable {
                        return Err(s);
                    } else {
                        // The connection may be dead (member killed): reconnect next time.
                        self.forget(&addr);
                    }
                    last = s;
                }
            }
        }
        Err(last)
    }
}
