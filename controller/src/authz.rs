//! Who may call what: one tower layer in front of every gRPC service of a controller.
//!
//! The layer reads the caller's Palisade identity from its client certificate, looks the method
//! up in `TABLE` and refuses the call unless the identity satisfies the entry. A method missing
//! from the table is refused (fail closed), and a test walks the descriptor set so that a new
//! RPC cannot be served without an entry. On success the caller's `Principal` is put into the
//! request's extensions, where handlers read it (`caller`) for the actor of their writes and
//! for checks that depend on the request's content (an edge subscribing under its own id).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::identity::{Principal, Role};

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Another controller (Raft transport, forwarded writes).
    Controller,
    /// An edge (edge sync, writes on behalf of users).
    Edge,
    /// An admin holding at least this role.
    Role(Role),
    /// Any Palisade identity (health checks).
    AnyIdentity,
    /// Nobody: not served on this listener (device calls, served on the device listener).
    Nobody,
}

impl Need {
    /// Whether `p` satisfies this need.
    pub fn admits(self, p: &Principal) -> bool {
        match (self, p) {
            (Need::Controller, Principal::Controller(_)) => true,
            (Need::Edge, Principal::Edge(_)) => true,
            (Need::Role(min), Principal::Admin { role, .. }) => *role >= min,
            (Need::AnyIdentity, _) => true,
            _ => false,
        }
    }
}

use Need::{AnyIdentity, Controller, Edge, Nobody};
const VIEWER: Need = Need::Role(Role::Viewer);
const OPERATOR: Need = Need::Role(Role::Operator);
const ADMIN: Need = Need::Role(Role::Admin);

/// Every method a controller serves, and who may call it.
pub const TABLE: &[(&str, Need)] = &[
    // Policy: reading and simulating is for everyone with an admin role; changing it is not.
    ("/palisade.v1.PolicyService/ApplyPolicy", OPERATOR),
    ("/palisade.v1.PolicyService/DiffPolicy", VIEWER),
    ("/palisade.v1.PolicyService/SimulatePolicy", VIEWER),
    ("/palisade.v1.PolicyService/GetPolicy", VIEWER),
    ("/palisade.v1.PolicyService/ListPolicyHistory", VIEWER),
    ("/palisade.v1.PolicyService/RollbackPolicy", OPERATOR),
    ("/palisade.v1.RevocationService/Revoke", OPERATOR),
    ("/palisade.v1.RevocationService/ListRevocations", VIEWER),
    ("/palisade.v1.DeviceService/EnrollDevice", OPERATOR),
    ("/palisade.v1.DeviceService/GetDevice", VIEWER),
    ("/palisade.v1.DeviceService/ListDevices", VIEWER),
    ("/palisade.v1.DeviceService/ListTunnelSessions", VIEWER),
    ("/palisade.v1.DeviceService/MarkDeviceWiped", OPERATOR),
    ("/palisade.v1.DeviceService/RevokeDevice", OPERATOR),
    ("/palisade.v1.DeviceService/RecordPosture", OPERATOR),
    ("/palisade.v1.FactorService/ListFactors", VIEWER),
    ("/palisade.v1.FactorService/RemoveFactor", OPERATOR),
    ("/palisade.v1.FactorService/UnlockUser", OPERATOR),
    (
        "/palisade.v1.FactorService/IssueFactorEnrollmentCode",
        OPERATOR,
    ),
    // Keys and secrets decide who can mint sessions: admins only.
    ("/palisade.v1.KeyService/RotateSigningKey", ADMIN),
    ("/palisade.v1.KeyService/ListSigningKeys", VIEWER),
    ("/palisade.v1.KeyService/PutSecret", ADMIN),
    ("/palisade.v1.KeyService/ListSecrets", VIEWER),
    ("/palisade.v1.ClusterService/GetClusterStatus", VIEWER),
    ("/palisade.v1.ClusterService/AddLearner", ADMIN),
    ("/palisade.v1.ClusterService/ChangeMembership", ADMIN),
    ("/palisade.v1.ClusterService/RemoveMember", ADMIN),
    ("/palisade.v1.ClusterService/GetPropagationStatus", VIEWER),
    ("/palisade.v1.ClusterService/WaitForRevision", VIEWER),
    ("/palisade.v1.AuditService/ListAuditEvents", VIEWER),
    // Edges: their subscription, and writes on behalf of signed-in users.
    ("/palisade.v1.EdgeSync/Subscribe", Edge),
    ("/palisade.v1.EdgeSync/Report", Edge),
    ("/palisade.v1.EdgeAuth/VerifyTotp", Edge),
    ("/palisade.v1.EdgeAuth/BeginTotpEnrollment", Edge),
    ("/palisade.v1.EdgeAuth/ConfirmTotpEnrollment", Edge),
    ("/palisade.v1.EdgeAuth/RegisterWebauthn", Edge),
    ("/palisade.v1.EdgeAuth/RecordWebauthnUse", Edge),
    ("/palisade.v1.EdgeAuth/RecordMfaFailure", Edge),
    ("/palisade.v1.EdgeAuth/RenameFactor", Edge),
    ("/palisade.v1.EdgeAuth/RemoveOwnFactor", Edge),
    ("/palisade.v1.EdgeAuth/RevokeOwn", Edge),
    ("/palisade.v1.EdgeAuth/RecordAuthEvents", Edge),
    ("/palisade.v1.EdgeAuth/ListAuthEvents", Edge),
    ("/palisade.v1.EdgeAuth/OpenTunnelSession", Edge),
    ("/palisade.v1.EdgeAuth/CloseTunnelSession", Edge),
    // Devices call these on the device listener (`devices/listener.rs`), never here: no
    // identity on the cluster listener may.
    ("/palisade.v1.DeviceEnrollment/Enroll", Nobody),
    ("/palisade.v1.DeviceEnrollment/Renew", Nobody),
    ("/palisade.v1.DeviceEnrollment/PostureNonce", Nobody),
    ("/palisade.v1.DeviceEnrollment/ReportPosture", Nobody),
    // Controllers among themselves.
    ("/palisade.v1.RaftTransport/Vote", Controller),
    ("/palisade.v1.RaftTransport/AppendEntries", Controller),
    ("/palisade.v1.RaftTransport/InstallSnapshot", Controller),
    ("/palisade.v1.RaftTransport/ForwardWrite", Controller),
    ("/palisade.v1.RaftTransport/ListLocalEdges", Controller),
    // Operations: health for any identity, reflection for admins.
    ("/grpc.health.v1.Health/Check", AnyIdentity),
    ("/grpc.health.v1.Health/Watch", AnyIdentity),
    ("/grpc.health.v1.Health/List", AnyIdentity),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        VIEWER,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        VIEWER,
    ),
];

/// What `path` needs; `None` for a method not in the table.
pub fn need(path: &str) -> Option<Need> {
    TABLE.iter().find(|(m, _)| *m == path).map(|(_, n)| *n)
}

/// The decision for one call: the principal to put in the request, or the refusal.
pub fn authorize(path: &str, principal: Result<Principal, Status>) -> Result<Principal, Status> {
    let Some(need) = need(path) else {
        return Err(Status::unimplemented("no such method"));
    };
    if need == Nobody {
        return Err(Status::unimplemented("this method is not served yet"));
    }
    let p = principal?;
    if need.admits(&p) {
        return Ok(p);
    }
    Err(Status::permission_denied(match (need, &p) {
        (Need::Role(min), Principal::Admin { role, .. }) => format!(
            "this call needs the {} role; the certificate has {}",
            min.as_str(),
            role.as_str()
        ),
        _ => format!("{p} may not call {path}"),
    }))
}

fn principal_of<B>(req: &http::Request<B>) -> Result<Principal, Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    Principal::from_der(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The caller of a request that passed the layer.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("the call was not authorized"))
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthzLayer;

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authz { inner }
    }
}

/// The service wrapper.
#[derive(Debug, Clone)]
pub struct Authz<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for Authz<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        match authorize(&path, principal_of(&req)) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                tracing::info!(method = %path, code = ?status.code(), reason = %status.message(), "call refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_an_entry_and_unknown_ones_are_refused() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(palisade_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in &set.file {
            for svc in &file.service {
                for m in &svc.method {
                    methods.push(format!("/{}.{}/{}", file.package(), svc.name(), m.name()));
                }
            }
        }
        assert!(methods.len() > 40, "{methods:?}");
        for m in &methods {
            assert!(
                need(m).is_some(),
                "{m} has no entry in the authorization table"
            );
        }
        assert!(matches!(
            authorize("/palisade.v1.Nope/Nope", Ok(Principal::Controller(1))),
            Err(s) if s.code() == tonic::Code::Unimplemented
        ));
    }

    #[test]
    fn roles_edges_and_controllers_are_kept_apart() {
        let admin = |role| Principal::Admin {
            name: "ops".into(),
            role,
        };
        let ok = |path: &str, p: Principal| authorize(path, Ok(p)).is_ok();
        assert!(ok(
            "/palisade.v1.PolicyService/GetPolicy",
            admin(Role::Viewer)
        ));
        assert!(!ok(
            "/palisade.v1.PolicyService/ApplyPolicy",
            admin(Role::Viewer)
        ));
        assert!(ok(
            "/palisade.v1.PolicyService/ApplyPolicy",
            admin(Role::Operator)
        ));
        assert!(!ok(
            "/palisade.v1.KeyService/PutSecret",
            admin(Role::Operator)
        ));
        assert!(ok("/palisade.v1.KeyService/PutSecret", admin(Role::Admin)));
        for p in [admin(Role::Admin), Principal::Controller(1)] {
            assert!(!ok("/palisade.v1.EdgeAuth/VerifyTotp", p.clone()));
            assert!(!ok("/palisade.v1.EdgeSync/Subscribe", p));
        }
        for p in [admin(Role::Admin), Principal::Edge("e".into())] {
            assert!(!ok("/palisade.v1.RaftTransport/AppendEntries", p.clone()));
            assert!(!ok("/palisade.v1.RaftTransport/ForwardWrite", p));
        }
        assert!(!ok(
            "/palisade.v1.PolicyService/GetPolicy",
            Principal::Edge("e".into())
        ));
        assert!(!ok(
            "/palisade.v1.DeviceEnrollment/Enroll",
            admin(Role::Admin)
        ));
        assert!(matches!(
            authorize(
                "/palisade.v1.PolicyService/GetPolicy",
                Err(Status::unauthenticated("no certificate"))
            ),
            Err(s) if s.code() == tonic::Code::Unauthenticated
        ));
    }
}
