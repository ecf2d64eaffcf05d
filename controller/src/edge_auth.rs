//! `EdgeAuth`: writes an edge makes on behalf of a signed-in user. Only edges (by client
//! certificate) may call it; the edge vouches for the user, whose identity is recorded as the
//! actor of the write.
//!
//! Today: `RevokeOwn` for sign-out (a revocation of the user's own session, enforced at every edge
//! like any other). The MFA and self-service calls arrive with the MFA issue and answer
//! `UNIMPLEMENTED` until then.

use palisade_policy::catalog::{Actor, RevocationTarget};
use palisade_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::admin::Admin;
use crate::controller::Controller;
use crate::convert;
use crate::identity::require_edge;

/// The `EdgeAuth` service of one controller.
#[derive(Debug, Clone)]
pub struct EdgeAuthService {
    ctl: Controller,
}

impl EdgeAuthService {
    /// The service for `ctl`.
    pub fn new(ctl: Controller) -> Self {
        Self { ctl }
    }
}

/// The actor for a user acting through an edge.
fn user_actor(edge: &str, user: Option<&pb::UserRef>) -> Result<(Actor, pb::UserRef), Status> {
    let u = user
        .filter(|u| !u.identity_provider.trim().is_empty() && !u.subject.trim().is_empty())
        .ok_or_else(|| {
            Status::invalid_argument("user (identity provider and subject) is required")
        })?;
    Ok((
        Actor {
            subject: format!("{}/{} via {edge}", u.identity_provider, u.subject),
            kind: "user".into(),
        },
        u.clone(),
    ))
}

fn later(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not available yet"))
}

#[tonic::async_trait]
impl pb::edge_auth_server::EdgeAuth for EdgeAuthService {
    async fn revoke_own(
        &self,
        req: Request<pb::RevokeOwnRequest>,
    ) -> Result<Response<pb::RevokeOwnResponse>, Status> {
        let edge = require_edge(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let target = convert::target_from_pb(r.target).map_err(Status::invalid_argument)?;
        let RevocationTarget::Session(sid) = &target else {
            return Err(Status::invalid_argument(
                "an edge may only revoke a user's own session",
            ));
        };
        if sid != &user.session_id {
            return Err(Status::permission_denied(
                "the session to revoke is not the caller's session",
            ));
        }
        let reason = if r.reason.trim().is_empty() {
            "signed out".to_string()
        } else {
            r.reason.chars().take(200).collect()
        };
        let admin = Admin::new(self.ctl.clone());
        let ttl = admin.default_revocation_ttl();
        let (write, revocation) = admin.revoke_as(actor.clone(), target, reason, ttl).await?;
        tracing::info!(actor = %actor.subject, revision = write.revision, "session revoked by its user");
        Ok(Response::new(pb::RevokeOwnResponse {
            revocation,
            write: Some(write),
        }))
    }

    async fn verify_totp(
        &self,
        _: Request<pb::VerifyTotpRequest>,
    ) -> Result<Response<pb::VerifyTotpResponse>, Status> {
        Err(later("TOTP"))
    }

    async fn begin_totp_enrollment(
        &self,
        _: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTotpEnrollmentResponse>, Status> {
        Err(later("TOTP enrollment"))
    }

    async fn confirm_totp_enrollment(
        &self,
        _: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        Err(later("TOTP enrollment"))
    }

    async fn register_webauthn(
        &self,
        _: Request<pb::RegisterWebauthnRequest>,
    ) -> Result<Response<pb::FactorWriteResponse>, Status> {
        Err(later("WebAuthn"))
    }

    async fn record_webauthn_use(
        &self,
        _: Request<pb::RecordWebauthnUseRequest>,
    ) -> Result<Response<pb::RecordWebauthnUseResponse>, Status> {
        Err(later("WebAuthn"))
    }

    async fn record_mfa_failure(
        &self,
        _: Request<pb::RecordMfaFailureRequest>,
    ) -> Result<Response<pb::RecordMfaFailureResponse>, Status> {
        Err(later("MFA"))
    }

    async fn rename_factor(
        &self,
        _: Request<pb::RenameFactorRequest>,
    ) -> Result<Response<pb::FactorWriteResponse>, Status> {
        Err(later("the enrollment portal"))
    }

    async fn remove_own_factor(
        &self,
        _: Request<pb::RemoveOwnFactorRequest>,
    ) -> Result<Response<pb::FactorWriteResponse>, Status> {
        Err(later("the enrollment portal"))
    }

    async fn record_auth_events(
        &self,
        _: Request<pb::RecordAuthEventsRequest>,
    ) -> Result<Response<pb::RecordAuthEventsResponse>, Status> {
        Err(later("sign-in history"))
    }

    async fn list_auth_events(
        &self,
        _: Request<pb::ListAuthEventsRequest>,
    ) -> Result<Response<pb::ListAuthEventsResponse>, Status> {
        Err(later("sign-in history"))
    }

    async fn open_tunnel_session(
        &self,
        _: Request<pb::OpenTunnelSessionRequest>,
    ) -> Result<Response<pb::OpenTunnelSessionResponse>, Status> {
        Err(later("the device tunnel"))
    }

    async fn close_tunnel_session(
        &self,
        _: Request<pb::CloseTunnelSessionRequest>,
    ) -> Result<Response<pb::CloseTunnelSessionResponse>, Status> {
        Err(later("the device tunnel"))
    }
}
