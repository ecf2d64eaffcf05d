//! Calls from the edge to the controllers' `EdgeAuth` service, for writes made on behalf of a
//! user: sign-out, MFA checks that need agreement across edges, and self-service changes. Any
//! controller accepts them (followers forward to the leader); the client tries each configured
//! controller in turn and keeps the channel that worked.
//!
//! Every call carries one idempotency key in all its attempts; the controller derives a key
//! per write from it, and the catalog applies a keyed write once. A call marked
//! [`Retry::Safe`] therefore moves on to the next controller also when one does not answer in
//! time (a frozen member) or the connection breaks after the request left.

pub mod api;

use std::sync::Mutex;
use std::time::Duration;

use palisade_link::{Expect, IdempotencyKey, KeyHeader, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client for one attempt of a call: its requests carry the call's idempotency key.
pub type EdgeAuthClient =
    pb::edge_auth_client::EdgeAuthClient<InterceptedService<Channel, KeyHeader>>;

/// Whether a call may be repeated at the next controller once its request may have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Also after a deadline or a cut connection: the controller's handler makes the same keyed
    /// writes again on a repeat (or only reads), so a repeat gets the first answers.
    Safe,
    /// Only when no answer came from a reachable controller (`UNAVAILABLE`, `UNKNOWN`): the
    /// handler checks state the first attempt may have changed (a factor still pending, a
    /// challenge not yet used) or draws something new (a TOTP seed), so after a deadline its
    /// answer is final and the user starts again.
    Once,
}

/// Client for the controllers' edge-facing write API.
#[derive(Debug)]
pub struct ControllerClient {
    controllers: Vec<String>,
    tls: Result<LinkTls, String>,
    current: Mutex<Option<(String, Channel)>>,
}

/// Why a write through the controllers failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No controller could be reached.
    #[error("no controller reachable: {0}")]
    Unreachable(String),
    /// A controller answered with an error.
    #[error("{0}")]
    Refused(tonic::Status),
}

impl ControllerClient {
    /// A client using this edge's certificate; it speaks only to servers holding a controller
    /// identity. `_server_name` is not used for trust.
    pub fn new(
        controllers: Vec<String>,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
        _server_name: &str,
    ) -> Self {
        let tls = LinkTls::new(cert_pem, key_pem, ca_pem).map_err(|e| e.to_string());
        Self {
            controllers,
            tls,
            current: Mutex::new(None),
        }
    }

    async fn channels(&self) -> Vec<(String, Channel)> {
        let mut out = Vec::new();
        let Ok(tls) = &self.tls else {
            return out;
        };
        if let Some(c) = self.current.lock().ok().and_then(|c| c.clone()) {
            out.push(c);
        }
        for addr in crate::sync::resolve(&self.controllers).await {
            if out.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            let opts = LinkOptions {
                connect_timeout: Duration::from_secs(2),
                call_timeout: Some(Duration::from_secs(10)),
                ..LinkOptions::default()
            };
            let Ok(ch) = tls.connect_lazy(&addr, Expect::AnyController, &opts) else {
                continue;
            };
            out.push((addr, ch));
        }
        out
    }

    /// Makes one `EdgeAuth` call, trying each controller until one answers. Transport
    /// failures move on to the next controller, and so do deadlines for a [`Retry::Safe`]
    /// call; an answer (also a refusal) is final.
    pub async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, CallError>
    where
        F: Fn(EdgeAuthClient) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let key = KeyHeader::new(&IdempotencyKey::random());
        let mut last = match &self.tls {
            Ok(_) => String::from("no controller configured"),
            Err(e) => format!("the controllers' CA cannot be used: {e}"),
        };
        for (addr, ch) in self.channels().await {
            let client =
                pb::edge_auth_client::EdgeAuthClient::with_interceptor(ch.clone(), key.clone());
            match f(client).await {
                Ok(r) => {
                    if let Ok(mut cur) = self.current.lock() {
                        *cur = Some((addr, ch));
                    }
                    return Ok(r.into_inner());
                }
                Err(s) if moves_on(retry, s.code()) => {
                    last = format!("{addr}: {}", s.message());
                }
                Err(s) => return Err(CallError::Refused(s)),
            }
        }
        Err(CallError::Unreachable(last))
    }
}

/// Whether a failed attempt moves on to the next controller.
fn moves_on(retry: Retry, code: tonic::Code) -> bool {
    use tonic::Code::*;
    match retry {
        // The request may have been applied: only a connection that never got there moves on.
        Retry::Once => matches!(code, Unavailable | Unknown),
        // A definitive answer about the request itself would be the same from every
        // controller; anything else (a deadline, a busy or failing member) is worth another.
        Retry::Safe => !matches!(
            code,
            Ok | InvalidArgument
                | FailedPrecondition
                | PermissionDenied
                | Unauthenticated
                | NotFound
                | AlreadyExists
                | OutOfRange
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_calls_move_on_after_a_deadline() {
        use tonic::Code::*;
        for code in [Unavailable, Unknown] {
            assert!(moves_on(Retry::Once, code) && moves_on(Retry::Safe, code));
        }
        for code in [
            DeadlineExceeded,
            Cancelled,
            ResourceExhausted,
            Aborted,
            Internal,
        ] {
            assert!(!moves_on(Retry::Once, code) && moves_on(Retry::Safe, code));
        }
        for code in [
            InvalidArgument,
            PermissionDenied,
            FailedPrecondition,
            NotFound,
            AlreadyExists,
            Unauthenticated,
            OutOfRange,
        ] {
            assert!(!moves_on(Retry::Once, code) && !moves_on(Retry::Safe, code));
        }
    }
}
