//! `RevocationService`: revoke sessions, users, devices and factors; list what is in force.

use std::time::Duration;

use palisade_policy::catalog::{self as cat, Command, Outcome};
use palisade_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::authz::caller;
use crate::controller::{IdempotencyKey, now_ms};
use crate::convert;

use super::{Admin, duration, paginate, required};

const MAX_REVOCATION_TTL: Duration = Duration::from_secs(400 * 86_400);

impl Admin {
    /// Writes a revocation kept for `ttl` as `actor`; returns the write and the revocation as
    /// committed (shared by the admin API and the edges' `RevokeOwn`).
    /// Without a `ttl` the catalog keeps the revocation as long as its target needs (every
    /// session a session or user revocation can cover; a revoked factor or device stays
    /// revoked regardless); with one, a session or user revocation still lasts at least that.
    pub(crate) async fn revoke_as(
        &self,
        actor: cat::Actor,
        key: Option<IdempotencyKey>,
        target: cat::RevocationTarget,
        reason: String,
        ttl: Option<Duration>,
    ) -> Result<(pb::WriteResult, Option<pb::Revocation>), Status> {
        let expires_at_ms = ttl.map_or(0, |t| now_ms().saturating_add(t.as_millis() as i64));
        let written = self
            .ctl
            .write_keyed(
                actor,
                key,
                Command::Revoke {
                    target,
                    reason,
                    expires_at_ms,
                },
            )
            .await?;
        let Outcome::Revocation(id) = &written.outcome else {
            return Err(Status::internal("unexpected outcome"));
        };
        let revocation = self
            .ctl
            .state
            .read(|s| s.catalog.revocations.get(id).map(convert::revocation));
        Ok((written.to_pb(), revocation))
    }
}

#[tonic::async_trait]
impl pb::revocation_service_server::RevocationService for Admin {
    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let target = convert::target_from_pb(r.target).map_err(Status::invalid_argument)?;
        required(&r.reason, "reason")?;
        let ttl = duration(r.ttl)?;
        if ttl.is_some_and(|t| t > MAX_REVOCATION_TTL) {
            return Err(Status::invalid_argument("ttl may be at most 400 days"));
        }
        let (write, revocation) = self
            .revoke_as(crate::identity::actor(&who), key, target, r.reason, ttl)
            .await?;
        tracing::info!(actor = %who, revision = write.revision, "revoked");
        Ok(Response::new(pb::RevokeResponse {
            revocation,
            write: Some(write),
        }))
    }

    async fn list_revocations(
        &self,
        req: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let mut all: Vec<pb::Revocation> = self.ctl.state.read(|s| {
            s.catalog
                .revocations
                .values()
                .map(convert::revocation)
                .collect()
        });
        all.sort_by_key(|r| std::cmp::Reverse(r.revision));
        let (revocations, page) = paginate(all, r.page)?;
        Ok(Response::new(pb::ListRevocationsResponse {
            revocations,
            page: Some(page),
            read: Some(read),
        }))
    }
}
