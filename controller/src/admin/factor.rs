//! `FactorService`: users' MFA factors, lockouts and enrollment codes (admin side).

use std::time::Duration;

use palisade_policy::catalog::{self as cat, Command, Outcome};
use palisade_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::authz::caller;
use crate::controller::{IdempotencyKey, now_ms, ts};
use crate::convert;

use super::{Admin, duration, random_token, required, sha256_hex};

#[tonic::async_trait]
impl pb::factor_service_server::FactorService for Admin {
    async fn list_factors(
        &self,
        req: Request<pb::ListFactorsRequest>,
    ) -> Result<Response<pb::ListFactorsResponse>, Status> {
        let r = req.into_inner();
        required(&r.subject, "subject")?;
        required(&r.identity_provider, "identity_provider")?;
        let read = self.ctl.read_info(r.consistency).await?;
        let user = cat::UserKey {
            provider: r.identity_provider,
            subject: r.subject,
        };
        let (factors, counters) = self.ctl.state.read(|s| {
            (
                s.catalog
                    .factors
                    .values()
                    .filter(|f| f.user == user)
                    .map(convert::factor)
                    .collect(),
                convert::counters(&user, &s.catalog.counters(&user)),
            )
        });
        Ok(Response::new(pb::ListFactorsResponse {
            factors,
            counters: Some(counters),
            read: Some(read),
        }))
    }

    async fn remove_factor(
        &self,
        req: Request<pb::RemoveFactorRequest>,
    ) -> Result<Response<pb::RemoveFactorResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.factor_id, "factor_id")?;
        required(&r.reason, "reason")?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::RemoveFactor { id: r.factor_id },
            )
            .await?;
        Ok(Response::new(pb::RemoveFactorResponse {
            write: Some(written.to_pb()),
        }))
    }

    async fn unlock_user(
        &self,
        req: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.subject, "subject")?;
        required(&r.identity_provider, "identity_provider")?;
        let user = cat::UserKey {
            provider: r.identity_provider,
            subject: r.subject,
        };
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::UnlockUser { user: user.clone() },
            )
            .await?;
        let counters = match &written.outcome {
            Outcome::Counters(c) => Some(convert::counters(&user, c)),
            _ => None,
        };
        Ok(Response::new(pb::UnlockUserResponse {
            counters,
            write: Some(written.to_pb()),
        }))
    }

    async fn issue_factor_enrollment_code(
        &self,
        req: Request<pb::IssueFactorEnrollmentCodeRequest>,
    ) -> Result<Response<pb::IssueFactorEnrollmentCodeResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.subject, "subject")?;
        required(&r.identity_provider, "identity_provider")?;
        let ttl = duration(r.ttl)?.unwrap_or(Duration::from_secs(86_400));
        let code = random_token();
        let expires = now_ms() + ttl.as_millis() as i64;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::IssueEnrollmentCode {
                    user: cat::UserKey {
                        provider: r.identity_provider,
                        subject: r.subject,
                    },
                    code_sha256: sha256_hex(&code),
                    expires_at_ms: expires,
                },
            )
            .await?;
        Ok(Response::new(pb::IssueFactorEnrollmentCodeResponse {
            code,
            expires_at: Some(ts(expires)),
            write: Some(written.to_pb()),
        }))
    }
}
