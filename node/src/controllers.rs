//! Calls from the edge to the controllers' `EdgeAuth` service, for writes made on behalf of a
//! user: sign-out, MFA checks that need agreement across edges, and self-service changes. Any controller accepts them (followers
//! forward to the leader); the client tries each configured controller in turn and keeps the
//! channel that worked.

use std::sync::Mutex;
use std::time::Duration;

use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use tonic::transport::Channel;

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

    /// Makes one `EdgeAuth` call, trying each controller until one answers. Only transport
    /// failures move on to the next controller; an answer (also a refusal) is final.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: Fn(pb::edge_auth_client::EdgeAuthClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = match &self.tls {
            Ok(_) => String::from("no controller configured"),
            Err(e) => format!("the controllers' CA cannot be used: {e}"),
        };
        for (addr, ch) in self.channels().await {
            match f(pb::edge_auth_client::EdgeAuthClient::new(ch.clone())).await {
                Ok(r) => {
                    if let Ok(mut cur) = self.current.lock() {
                        *cur = Some((addr, ch));
                    }
                    return Ok(r.into_inner());
                }
                Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                    last = format!("{addr}: {}", s.message());
                }
                Err(s) => return Err(CallError::Refused(s)),
            }
        }
        Err(CallError::Unreachable(last))
    }

    /// Revokes one of the user's own sessions or devices (sign-out revokes the current
    /// session). Returns the revision of the revocation.
    pub async fn revoke_own(
        &self,
        user: pb::UserRef,
        target: pb::revocation_target::Target,
        reason: &str,
    ) -> Result<u64, CallError> {
        let req = pb::RevokeOwnRequest {
            user: Some(user),
            target: Some(pb::RevocationTarget {
                target: Some(target),
            }),
            reason: reason.into(),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.revoke_own(req).await }
            })
            .await?;
        Ok(r.write.map(|w| w.revision).unwrap_or(0))
    }
}
